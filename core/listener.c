/* SPDX-License-Identifier: MIT */
/* Listening sockets shared across generations; accepting clients and running the connect stage. */
#include "config.h"
#include "core-private.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib-unix.h>

/* Connections accepted per wakeup before yielding to the loop. */
#define ACCEPT_BATCH 64
/* How long to stop accepting when out of descriptors, instead of spinning. */
#define ACCEPT_PAUSE_MS 200

void
pb_listener_free (gpointer p)
{
  PbListener *l = p;

  g_ptr_array_unref (l->sockets);
  g_free (l->name);
  g_free (l->service);
  g_strfreev (l->endpoints);
  g_free (l);
}

static char *
sockaddr_to_string (const struct sockaddr *sa, socklen_t len)
{
  g_autoptr (GSocketAddress) ga = g_socket_address_new_from_native ((gpointer) sa, len);
  GInetSocketAddress *isa;
  g_autofree char *ip = NULL;

  if (ga == NULL || !G_IS_INET_SOCKET_ADDRESS (ga))
    return g_strdup ("?");
  isa = G_INET_SOCKET_ADDRESS (ga);
  ip = g_inet_address_to_string (g_inet_socket_address_get_address (isa));
  if (g_inet_address_get_family (g_inet_socket_address_get_address (isa)) == G_SOCKET_FAMILY_IPV6)
    return g_strdup_printf ("[%s]:%u", ip, g_inet_socket_address_get_port (isa));
  return g_strdup_printf ("%s:%u", ip, g_inet_socket_address_get_port (isa));
}

static int
bind_one (const struct addrinfo *ai, gboolean dual_stack, GError **error)
{
  int fd, one = 1;

  fd = socket (ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0)
    {
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "socket: %s", g_strerror (errno));
      return -1;
    }
  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ai->ai_family == AF_INET6)
    {
      int v6only = dual_stack ? 0 : 1;
      setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    }
  if (bind (fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen (fd, SOMAXCONN) != 0)
    {
      int saved = errno;
      close (fd);
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "%s", g_strerror (saved));
      return -1;
    }
  return fd;
}

static gboolean bound_socket_ready (gint fd, GIOCondition cond, gpointer data);

PbBoundSocket *
pb_bound_socket_open (const char *endpoint, GError **error)
{
  g_autofree char *host = NULL;
  const char *port;
  struct addrinfo hints = { 0 }, *res = NULL, *ai;
  g_autoptr (GError) last = NULL;
  PbBoundSocket *sock;
  int rc, fd = -1;
  gboolean wildcard;

  /* Endpoints were canonicalised by the settings parser: HOST:PORT or [V6]:PORT. */
  if (endpoint[0] == '[')
    {
      const char *close = strchr (endpoint, ']');
      host = g_strndup (endpoint + 1, close - endpoint - 1);
      port = close + 2;
    }
  else
    {
      const char *colon = strrchr (endpoint, ':');
      host = g_strndup (endpoint, colon - endpoint);
      port = colon + 1;
    }
  wildcard = strcmp (host, "*") == 0;

  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  hints.ai_family = wildcard ? AF_INET6 : AF_UNSPEC;
  rc = getaddrinfo (wildcard ? NULL : host, port, &hints, &res);
  if (rc != 0 && wildcard)
    {
      hints.ai_family = AF_INET;
      rc = getaddrinfo (NULL, port, &hints, &res);
    }
  if (rc != 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot resolve %s: %s", endpoint, gai_strerror (rc));
      return NULL;
    }
  /* One socket per endpoint: the first address that binds ("*" is dual-stack). */
  for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
    {
      g_clear_error (&last);
      fd = bind_one (ai, wildcard, &last);
    }
  if (fd < 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot listen on %s: %s", endpoint,
                   last != NULL ? last->message : "no usable address");
      freeaddrinfo (res);
      return NULL;
    }
  freeaddrinfo (res);

  sock = g_new0 (PbBoundSocket, 1);
  sock->ref = 1;
  sock->endpoint = g_strdup (endpoint);
  sock->fd = fd;
  {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname (fd, (struct sockaddr *) &ss, &len) == 0)
      sock->bound = sockaddr_to_string ((struct sockaddr *) &ss, len);
    else
      sock->bound = g_strdup (endpoint);
  }
  return sock;
}

PbBoundSocket *
pb_bound_socket_ref (PbBoundSocket *sock)
{
  sock->ref++;
  return sock;
}

static void
bound_socket_stop (PbBoundSocket *sock)
{
  pb_source_clear (&sock->source);
}

void
pb_bound_socket_unref (PbBoundSocket *sock)
{
  if (sock == NULL || --sock->ref > 0)
    return;
  bound_socket_stop (sock);
  if (sock->fd >= 0)
    close (sock->fd);
  g_free (sock->endpoint);
  g_free (sock->bound);
  g_free (sock);
}

static void
bound_socket_watch (PbBoundSocket *sock)
{
  sock->source = g_unix_fd_source_new (sock->fd, G_IO_IN);
  g_source_set_callback (sock->source, (GSourceFunc) (void (*) (void)) bound_socket_ready, sock, NULL);
  pb_source_attach (sock->source, NULL);
}

void
pb_bound_socket_set_owner (PbBoundSocket *sock, PbListener *owner)
{
  sock->owner = owner;
  if (owner != NULL && sock->source == NULL && sock->fd >= 0)
    bound_socket_watch (sock);
  else if (owner == NULL)
    {
      /* No generation wants it: stop accepting and free the port now. */
      bound_socket_stop (sock);
      if (sock->fd >= 0)
        close (sock->fd);
      sock->fd = -1;
    }
}

static gboolean
bound_socket_resume (gpointer data)
{
  PbBoundSocket *sock = data;

  if (sock->owner != NULL && sock->fd >= 0 && sock->source == NULL)
    bound_socket_watch (sock);
  pb_bound_socket_unref (sock);
  return G_SOURCE_REMOVE;
}

/* ---- admitting a client ---- */

static void
session_conn_closed (PbConn *conn, gpointer data)
{
  pb_session_end (data);
}

static void
session_admit (PbSession *s)
{
  s->accepted = TRUE;
  s->state = pb_intern ("GREETING");
  /* Before accept: the module may greet and even close at once. */
  pb_session_report_event (s, PB_EVENT_SESSION_START, s->listener->name);
  s->listener->spec.accept (s, s->conn, s->listener->spec.user_data);
}

static void
session_refuse (PbSession *s, const PbVerdict *verdict)
{
  g_autofree char *line = s->listener->spec.format_refusal (verdict, s->listener->spec.user_data);

  pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, s, NULL, "refused %s on %s: %s", pb_session_get_peer_ip (s),
                  s->listener->name, verdict->text != NULL ? verdict->text : "(no text)");
  if (line != NULL)
    pb_conn_write (s->conn, line, strlen (line));
  pb_conn_close (s->conn);
}

static void
connect_stage_done (PbPolicyRequest *req, const PbVerdict *verdict, gpointer data)
{
  PbSession *s = data;

  if (!s->ended)
    {
      if (verdict->kind == PB_VERDICT_CONTINUE || verdict->kind == PB_VERDICT_ACCEPT)
        session_admit (s);
      else
        session_refuse (s, verdict);
    }
  pb_session_unref (s);
}

static void
listener_accept (PbListener *l, int fd)
{
  PbGeneration *gen = l->module->gen;
  PbConn *conn;
  PbSession *s;

  conn = pb_conn_new_server (fd, gen->tls, l->spec.tls);
  s = pb_session_new (gen, l, conn);
  pb_conn_unref (conn);  /* the session holds it */
  pb_conn_set_close_notify (conn, session_conn_closed, s);
  l->accepted++;
  pb_log_session ("pillarbox", G_LOG_LEVEL_DEBUG, s, NULL, "connect from %s to %s",
                  pb_conn_get_peer_ip (conn), l->name);

  if (gen->hooks[PB_STAGE_CONNECT]->len == 0)
    {
      session_admit (s);
      return;
    }
  {
    PbPolicyRequest *req = pb_policy_request_new (s, PB_STAGE_CONNECT);
    pb_policy_request_set_field (req, "listener", l->name);
    pb_policy_request_run (req, connect_stage_done, pb_session_ref (s));
    pb_policy_request_unref (req);
  }
}

static gboolean
bound_socket_ready (gint fd, GIOCondition cond, gpointer data)
{
  PbBoundSocket *sock = data;

  for (guint i = 0; i < ACCEPT_BATCH && sock->owner != NULL; i++)
    {
      int cfd = accept4 (fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (cfd < 0)
        {
          if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
            break;
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            {
              g_warning ("listener %s: cannot accept: %s; pausing %d ms", sock->endpoint, g_strerror (errno),
                         ACCEPT_PAUSE_MS);
              g_source_unref (sock->source);
              sock->source = NULL;
              pb_timeout_add (ACCEPT_PAUSE_MS, bound_socket_resume, pb_bound_socket_ref (sock));
              return G_SOURCE_REMOVE;
            }
          g_warning ("listener %s: accept failed: %s", sock->endpoint, g_strerror (errno));
          break;
        }
      listener_accept (sock->owner, cfd);
    }
  return G_SOURCE_CONTINUE;
}
