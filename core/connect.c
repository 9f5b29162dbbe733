/* SPDX-License-Identifier: MIT */
/* Outbound connections: resolve a host through the core's resolver and try its addresses in turn. */
#include "config.h"
#include "core-private.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib-unix.h>

typedef struct {
  PbGeneration *gen;
  char *host;
  guint16 port;
  guint timeout_ms;
  GCancellable *cancellable;
  gulong cancel_id;
  GCancellable *dns_cancel;   /* our own, to drop the lookups when cancelled */
  guint idle;
  PbConnConnectFunc done;
  gpointer user_data;
  GPtrArray *addresses;       /* GInetAddress *, in the order to try */
  guint next;
  guint lookups_pending;
  int fd;
  guint watch;
  guint timer;
  GError *last_error;
  gboolean finished;
} Connect;

static void
connect_free (Connect *c)
{
  if (c->cancel_id != 0)
    g_cancellable_disconnect (c->cancellable, c->cancel_id);
  g_clear_object (&c->cancellable);
  g_clear_object (&c->dns_cancel);
  if (c->idle != 0)
    g_source_remove (c->idle);
  if (c->fd >= 0)
    close (c->fd);
  g_ptr_array_unref (c->addresses);
  g_clear_error (&c->last_error);
  g_free (c->host);
  pb_generation_unref (c->gen);
  g_free (c);
}

static void
connect_stop_waiting (Connect *c)
{
  if (c->watch != 0)
    g_source_remove (c->watch);
  if (c->timer != 0)
    g_source_remove (c->timer);
  c->watch = c->timer = 0;
}

static void
connect_finish (Connect *c, PbConn *conn, const GError *error)
{
  c->finished = TRUE;
  connect_stop_waiting (c);
  c->done (conn, error, c->user_data);
  connect_free (c);
}

static void connect_try_next (Connect *c);

static gboolean
connect_ready (gint fd, GIOCondition cond, gpointer data)
{
  Connect *c = data;
  int err = 0;
  socklen_t len = sizeof err;

  c->watch = 0;
  connect_stop_waiting (c);
  if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    err = errno;
  if (err == 0)
    {
      PbConn *conn = pb_conn_new_client (c->fd);
      c->fd = -1;  /* the connection owns it */
      connect_finish (c, conn, NULL);
      return G_SOURCE_REMOVE;
    }
  g_clear_error (&c->last_error);
  c->last_error = g_error_new (G_IO_ERROR, g_io_error_from_errno (err), "%s", g_strerror (err));
  close (c->fd);
  c->fd = -1;
  connect_try_next (c);
  return G_SOURCE_REMOVE;
}

static gboolean
connect_timed_out (gpointer data)
{
  Connect *c = data;

  c->timer = 0;
  connect_stop_waiting (c);
  g_clear_error (&c->last_error);
  c->last_error = g_error_new (G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "timed out after %u ms", c->timeout_ms);
  close (c->fd);
  c->fd = -1;
  connect_try_next (c);
  return G_SOURCE_REMOVE;
}

static void
connect_try_next (Connect *c)
{
  if (c->cancellable != NULL && g_cancellable_is_cancelled (c->cancellable))
    {
      g_autoptr (GError) error = g_error_new (G_IO_ERROR, G_IO_ERROR_CANCELLED, "connection to %s cancelled", c->host);
      connect_finish (c, NULL, error);
      return;
    }
  while (c->next < c->addresses->len)
    {
      GInetAddress *addr = g_ptr_array_index (c->addresses, c->next++);
      g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (addr, c->port);
      struct sockaddr_storage ss;
      gssize len = g_socket_address_get_native_size (sa);

      if (len <= 0 || !g_socket_address_to_native (sa, &ss, sizeof ss, NULL))
        continue;
      c->fd = socket (ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (c->fd < 0)
        {
          g_clear_error (&c->last_error);
          c->last_error = g_error_new (G_IO_ERROR, g_io_error_from_errno (errno), "%s", g_strerror (errno));
          continue;
        }
      if (connect (c->fd, (struct sockaddr *) &ss, (socklen_t) len) == 0 || errno == EINPROGRESS)
        {
          /* Even an immediate success is reported from the loop. */
          c->watch = pb_unix_fd_add (c->fd, G_IO_OUT, connect_ready, c);
          c->timer = pb_timeout_add (c->timeout_ms, connect_timed_out, c);
          return;
        }
      g_clear_error (&c->last_error);
      c->last_error = g_error_new (G_IO_ERROR, g_io_error_from_errno (errno), "%s", g_strerror (errno));
      close (c->fd);
      c->fd = -1;
    }
  {
    g_autoptr (GError) error = NULL;
    if (c->addresses->len == 0)
      error = g_error_new (G_IO_ERROR, G_IO_ERROR_HOST_NOT_FOUND, "cannot connect to %s port %u: %s", c->host,
                           c->port, c->last_error != NULL ? c->last_error->message : "the host has no address");
    else
      error = g_error_new (G_IO_ERROR, c->last_error != NULL ? c->last_error->code : G_IO_ERROR_FAILED,
                           "cannot connect to %s port %u: %s", c->host, c->port,
                           c->last_error != NULL ? c->last_error->message : "no usable address");
    connect_finish (c, NULL, error);
  }
}

static gboolean
connect_start_idle (gpointer data)
{
  Connect *c = data;
  c->idle = 0;
  connect_try_next (c);
  return G_SOURCE_REMOVE;
}

static void
connect_answer (const PbDnsAnswer *answer, gpointer data)
{
  Connect *c = data;

  /* A records go first, then AAAA: the order the addresses are tried. */
  if (answer->status == PB_DNS_OK)
    for (guint i = 0; answer->records[i] != NULL; i++)
      {
        GInetAddress *a = g_inet_address_new_from_string (answer->records[i]);
        if (a == NULL)
          continue;
        if (answer->rrtype == PB_DNS_A)
          g_ptr_array_insert (c->addresses, (gint) c->next++, a);
        else
          g_ptr_array_add (c->addresses, a);
      }
  else if (answer->status == PB_DNS_TEMPFAIL && c->last_error == NULL)
    c->last_error = g_error_new (G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "DNS lookup failed: %s",
                                 answer->error != NULL ? answer->error : "no answer");
  if (--c->lookups_pending > 0)
    return;
  c->next = 0;
  connect_try_next (c);
}

static void
connect_cancelled (GCancellable *cancellable, gpointer data)
{
  Connect *c = data;

  /* Disconnecting from inside the handler would deadlock: forget the id. While
   * a lookup or the first idle is pending, those paths notice the cancellation. */
  c->cancel_id = 0;
  if (c->finished)
    return;
  /* Stop whatever is under way; report from an idle, not from inside the
   * caller's g_cancellable_cancel(). */
  g_cancellable_cancel (c->dns_cancel);
  c->lookups_pending = 0;
  connect_stop_waiting (c);
  if (c->fd >= 0)
    close (c->fd);
  c->fd = -1;
  if (c->idle != 0)
    g_source_remove (c->idle);
  c->idle = pb_idle_add (connect_start_idle, c);
}

static void
connect_watch_cancellable (Connect *c)
{
  if (c->cancellable != NULL)
    c->cancel_id = g_cancellable_connect (c->cancellable, G_CALLBACK (connect_cancelled), c, NULL);
}

void
pb_conn_connect (PbModule *module, const char *host, guint16 port, guint timeout_ms, GCancellable *cancellable,
                 PbConnConnectFunc done, gpointer user_data)
{
  Connect *c;
  GInetAddress *literal;

  g_return_if_fail (module != NULL && host != NULL && done != NULL && port > 0);
  c = g_new0 (Connect, 1);
  c->gen = pb_generation_ref (module->gen);
  c->host = g_strdup (host);
  c->port = port;
  c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
  c->done = done;
  c->user_data = user_data;
  c->addresses = g_ptr_array_new_with_free_func (g_object_unref);
  c->fd = -1;
  if (cancellable != NULL)
    c->cancellable = g_object_ref (cancellable);

  literal = g_inet_address_new_from_string (host);
  if (literal != NULL)
    {
      g_ptr_array_add (c->addresses, literal);
      c->idle = pb_idle_add (connect_start_idle, c);
      connect_watch_cancellable (c);
      return;
    }
  c->dns_cancel = g_cancellable_new ();
  c->lookups_pending = 2;
  pb_resolver_lookup (pb_module_get_resolver (module), host, PB_DNS_A, c->dns_cancel, connect_answer, c);
  pb_resolver_lookup (pb_module_get_resolver (module), host, PB_DNS_AAAA, c->dns_cancel, connect_answer, c);
  connect_watch_cancellable (c);
}
