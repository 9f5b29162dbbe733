/* SPDX-License-Identifier: MIT */
/* Example Pillarbox module: a line echo service with STARTTLS, an address deny list and a command. */

/*
 * This file is the worked example of docs/plugin-guide.md. It uses every
 * part of the ABI a typical module needs:
 *
 *   - a typed settings table (the core parses [module example] for us);
 *   - a listener with a connection handler on the core's buffered PbConn;
 *   - a connect-stage policy hook (refuses addresses in `deny`);
 *   - a control command (`pillarbox example`);
 *   - per-instance state, never globals (two instances live side by side
 *     while a reload drains the old one).
 *
 * The protocol, one command per line:
 *   ECHO text   ->  +OK text
 *   STARTTLS    ->  +OK begin TLS, then the TLS handshake
 *   QUIT        ->  +OK bye, then close
 */
#define G_LOG_DOMAIN "pillarbox-example"
#include <pillarbox/pillarbox.h>

#include <string.h>

typedef struct {
  char **listen;
  char **tls_listen;
  char *greeting;
  gint64 max_line;
  gint64 idle_timeout;
  char **deny;
} ExampleConfig;

static const PbSetting example_settings[] = {
  PB_SETTING_ENDPOINTS (ExampleConfig, listen, "listen", "127.0.0.1:2600",
                        "Where the echo service listens (plain text; STARTTLS is offered)."),
  PB_SETTING_ENDPOINTS (ExampleConfig, tls_listen, "tls-listen", "",
                        "Where the echo service listens with implicit TLS; empty for none."),
  PB_SETTING_STRING (ExampleConfig, greeting, "greeting", "Pillarbox example echo service ready",
                     "The text of the greeting line."),
  PB_SETTING_INT (ExampleConfig, max_line, "max-line", "1000", 64, 65536,
                  "The longest command line accepted, in octets including CRLF."),
  PB_SETTING_DURATION (ExampleConfig, idle_timeout, "idle-timeout", "5m", 1000, 86400000,
                       "A client silent for this long is disconnected."),
  PB_SETTING_ADDRESS_LIST (ExampleConfig, deny, "deny", "",
                           "Client addresses refused at connect (addresses, prefixes or wildcards)."),
  PB_SETTINGS_END
};

/* One instance's state. */
typedef struct {
  PbModule *module;
  const ExampleConfig *config;
  GPtrArray *deny;            /* GInetAddressMask * */
  guint64 sessions;
  guint64 lines;
} Example;

/* One client's state. */
typedef struct {
  Example *ex;
  PbSession *session;
  PbConn *conn;
  gboolean tls_pending;
} EchoSession;

static void
echo_reply (EchoSession *es, const char *status, const char *text)
{
  pb_conn_printf (es->conn, "%s %s\r\n", status, text);
}

static void echo_readable (PbConn *conn, gpointer user_data);

static void
echo_tls_done (PbConn *conn, const GError *error, gpointer user_data)
{
  EchoSession *es = user_data;

  es->tls_pending = FALSE;
  if (error != NULL)
    return;  /* the core closes the connection; `closed` follows */
  /* Like SMTP after STARTTLS, the session starts over: greet again. */
  echo_reply (es, "+OK", es->ex->config->greeting);
  echo_readable (conn, es);
}

static void
echo_command (EchoSession *es, char *line)
{
  if (g_ascii_strncasecmp (line, "ECHO", 4) == 0 && (line[4] == ' ' || line[4] == '\0'))
    {
      es->ex->lines++;
      echo_reply (es, "+OK", line[4] == ' ' ? line + 5 : "");
    }
  else if (g_ascii_strcasecmp (line, "STARTTLS") == 0)
    {
      if (!pb_conn_can_start_tls (es->conn))
        {
          echo_reply (es, "-ERR", "TLS is not available");
          return;
        }
      echo_reply (es, "+OK", "begin TLS");
      es->tls_pending = TRUE;
      /* Whatever the client sent after STARTTLS is discarded by the core. */
      pb_conn_start_tls (es->conn, echo_tls_done, es);
    }
  else if (g_ascii_strcasecmp (line, "QUIT") == 0)
    {
      echo_reply (es, "+OK", "bye");
      pb_conn_close (es->conn);
    }
  else
    echo_reply (es, "-ERR", "unknown command (ECHO, STARTTLS, QUIT)");
}

static void
echo_readable (PbConn *conn, gpointer user_data)
{
  EchoSession *es = user_data;
  const char *line;
  gsize len;

  while (!es->tls_pending)
    {
      switch (pb_conn_read_line (conn, &line, &len))
        {
        case PB_CONN_LINE:
          {
            g_autofree char *cmd = g_strndup (line, len);
            g_strchomp (cmd);  /* drops CRLF or LF */
            echo_command (es, cmd);
            if (es->tls_pending)
              return;
            break;
          }
        case PB_CONN_TOO_LONG:
          echo_reply (es, "-ERR", "line too long");
          break;
        case PB_CONN_AGAIN:
          return;
        case PB_CONN_EOF:
        case PB_CONN_ERROR:
          pb_conn_close (conn);
          return;
        }
    }
}

static void
echo_closed (PbConn *conn, const GError *error, gpointer user_data)
{
  EchoSession *es = user_data;

  if (error != NULL)
    pb_session_debug (es->session, "echo session ended: %s", error->message);
  g_free (es);
}

static void
example_accept (PbSession *session, PbConn *conn, gpointer user_data)
{
  static const PbConnHandlers handlers = { sizeof (PbConnHandlers), echo_readable, NULL, echo_closed };
  Example *ex = user_data;
  EchoSession *es = g_new0 (EchoSession, 1);

  es->ex = ex;
  es->session = session;
  es->conn = conn;
  ex->sessions++;
  pb_conn_set_max_line (conn, (gsize) ex->config->max_line);
  pb_conn_set_idle_timeout (conn, (guint) ex->config->idle_timeout);
  pb_conn_set_handlers (conn, &handlers, es);
  pb_session_set_state (session, "READY");
  echo_reply (es, "+OK", ex->config->greeting);
  echo_readable (conn, es);
}

static char *
example_format_refusal (const PbVerdict *verdict, gpointer user_data)
{
  return g_strdup_printf ("-ERR %s\r\n", verdict->text != NULL ? verdict->text : "connection refused");
}

static void
example_shutdown (PbSession *session, gpointer user_data)
{
  PbConn *conn = pb_session_get_conn (session);

  pb_conn_printf (conn, "-ERR server shutting down\r\n");
  pb_conn_close (conn);
}

static void
example_connect_hook (PbPolicyRequest *req, gpointer user_data)
{
  Example *ex = user_data;
  PbSession *session = pb_policy_request_get_session (req);
  GInetAddress *peer = g_inet_socket_address_get_address (pb_conn_get_peer_address (pb_session_get_conn (session)));

  for (guint i = 0; i < ex->deny->len; i++)
    if (g_inet_address_mask_matches (g_ptr_array_index (ex->deny, i), peer))
      {
        pb_policy_complete (req, PB_VERDICT_REJECT, 554, "5.7.1", "access denied");
        return;
      }
  pb_policy_continue (req);
}

static void
example_command (PbControlRequest *req, gpointer user_data)
{
  Example *ex = user_data;
  g_autofree char *text = g_strdup_printf ("sessions: %" G_GUINT64_FORMAT "\nlines echoed: %" G_GUINT64_FORMAT,
                                           ex->sessions, ex->lines);

  pb_control_request_reply (req,
                            g_variant_new_parsed ("{'sessions': <%t>, 'lines': <%t>}", ex->sessions, ex->lines),
                            text);
}

static void
example_free (gpointer data)
{
  Example *ex = data;
  g_ptr_array_unref (ex->deny);
  g_free (ex);
}

static gboolean
example_init (PbModule *module, const void *config, GError **error)
{
  const ExampleConfig *c = config;
  Example *ex = g_new0 (Example, 1);
  PbListenerSpec listener = {
    .struct_size = sizeof listener,
    .name = "example",
    .service = "echo",
    .endpoints = (const char *const *) c->listen,
    .tls = PB_TLS_NONE,
    .accept = example_accept,
    .format_refusal = example_format_refusal,
    .shutdown = example_shutdown,
    .user_data = ex,
  };
  PbListenerSpec tls_listener = listener;
  PbHookSpec hook = {
    .struct_size = sizeof hook,
    .stage = PB_STAGE_CONNECT,
    .priority = -10,  /* a cheap check: run early */
    .func = example_connect_hook,
    .user_data = ex,
  };
  PbControlCommandSpec command = {
    .struct_size = sizeof command,
    .name = "example",
    .summary = "Show the example module's counters",
    .usage = "example",
    .func = example_command,
    .user_data = ex,
  };

  ex->module = module;
  ex->config = c;
  ex->deny = g_ptr_array_new_with_free_func (g_object_unref);
  /* The core checked every prefix already; this cannot fail. */
  for (guint i = 0; c->deny[i] != NULL; i++)
    g_ptr_array_add (ex->deny, g_inet_address_mask_new_from_string (c->deny[i], NULL));
  pb_module_set_data (module, ex, example_free);

  tls_listener.name = "example-tls";
  tls_listener.endpoints = (const char *const *) c->tls_listen;
  tls_listener.tls = PB_TLS_IMPLICIT;

  return pb_module_add_listener (module, &listener, error)
         && (c->tls_listen[0] == NULL || pb_module_add_listener (module, &tls_listener, error))
         && (ex->deny->len == 0 || pb_module_add_hook (module, &hook, error))
         && pb_module_add_command (module, &command, error);
}

PB_MODULE_DEFINE (
  .name = "example",
  .version = "1.0",
  .summary = "Example line echo service (see docs/plugin-guide.md)",
  .init = example_init,
  .settings = example_settings,
  .config_size = sizeof (ExampleConfig));
