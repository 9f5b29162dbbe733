/* SPDX-License-Identifier: MIT */
/* metrics: counts what the core and modules report, and serves it over HTTP in Prometheus text format. */

/*
 * Counters come from events (sessions admitted, refusals, IDS blocks) and
 * from the two notification stages (queued, delivery-result); gauges come
 * from the `status` and `sessions` commands, asked at each scrape, so
 * they are exactly what `pillarbox status` says. A scrape is answered
 * when both commands have answered: the loop never waits.
 *
 * Counters live in the instance, so a reload starts them from zero (the
 * pillarbox_config_generation gauge tells a scraper why); Prometheus'
 * rate() and increase() treat that as a counter reset.
 *
 * HTTP (RFC 9112): one request per connection (every answer says
 * "Connection: close"), GET and HEAD of /metrics; the head is bounded by
 * max-request-size and must arrive within read-timeout; a body is never
 * read.
 */
#include "config.h"
#include "metrics-private.h"

#include <pillarbox/pillarbox.h>

#include <string.h>

typedef struct {
  char **listen;
  gboolean allow_remote;
  gint64 max_domains;
  gint64 read_timeout;
  gint64 max_request_size;
  gint64 max_clients;
} MetricsConfig;

static const PbSetting metrics_settings[] = {
  PB_SETTING_ENDPOINTS (MetricsConfig, listen, "listen", "127.0.0.1:9109",
                        "Where the HTTP endpoint (GET /metrics) listens. Loopback only unless allow-remote "
                        "is true."),
  PB_SETTING_BOOL (MetricsConfig, allow_remote, "allow-remote", "false",
                   "Allow listen addresses other than loopback (127.0.0.0/8, ::1). The page tells "
                   "anyone who can reach it how busy the server is: firewall it."),
  PB_SETTING_INT (MetricsConfig, max_domains, "max-domains", "100", 0, 100000,
                  "Distinct recipient domains that get their own domain label in "
                  "pillarbox_deliveries_total; deliveries to further domains count as domain=\"other\"."),
  PB_SETTING_DURATION (MetricsConfig, read_timeout, "read-timeout", "10s", 100, 300000,
                       "A client must send its whole request head within this time (and never pause "
                       "longer), or the connection is closed."),
  PB_SETTING_SIZE (MetricsConfig, max_request_size, "max-request-size", "8K", 1024, 65536,
                   "The longest request head accepted (request line and header fields); a longer "
                   "one is answered 414 or 431."),
  PB_SETTING_INT (MetricsConfig, max_clients, "max-clients", "16", 1, 10000,
                  "HTTP connections served at once; more are answered 503 at once."),
  PB_SETTINGS_END
};

static GQuark metrics_error_quark (void);
G_DEFINE_QUARK (pillarbox-metrics-error-quark, metrics_error)
#define METRICS_ERROR (metrics_error_quark ())

typedef struct {
  PbModule *module;
  const MetricsConfig *config;
  MetricsState *state;
  guint clients;
} Metrics;

/* ---- the configuration check ----------------------------------------------------- */

static gboolean
endpoint_is_loopback (const char *endpoint)
{
  g_autofree char *host = NULL;
  g_autoptr (GInetAddress) address = NULL;
  const char *colon = strrchr (endpoint, ':');

  if (colon == NULL)
    return FALSE;
  if (endpoint[0] == '[')
    host = g_strndup (endpoint + 1, (gsize) (colon - endpoint - 2));
  else
    host = g_strndup (endpoint, (gsize) (colon - endpoint));
  if (g_ascii_strcasecmp (host, "localhost") == 0)
    return TRUE;
  address = g_inet_address_new_from_string (host);
  return address != NULL && g_inet_address_get_is_loopback (address);
}

static gboolean
metrics_check (const void *config, GError **error)
{
  const MetricsConfig *c = config;

  if (c->allow_remote)
    return TRUE;
  for (guint i = 0; c->listen[i] != NULL; i++)
    if (!endpoint_is_loopback (c->listen[i]))
      {
        g_set_error (error, METRICS_ERROR, 0,
                     "listen = %s is not a loopback address; set allow-remote = true to serve metrics "
                     "to other hosts",
                     c->listen[i]);
        return FALSE;
      }
  return TRUE;
}

/* ---- counting ------------------------------------------------------------------------ */

static void
count_rejected (Metrics *m, const char *reason)
{
  const char *v[] = { reason };
  metrics_counter_add (m->state->rejected, v, 1);
}

/* A connect-time refusal whose reason a module reported (too many
 * connections, a blocked client) is counted under that reason only, not
 * again as the policy refusal that follows it. */
static void
mark_refusal_counted (Metrics *m, PbSession *session)
{
  pb_session_set_data (session, m->module, GINT_TO_POINTER (1), NULL);
}

static void
metrics_event (PbSession *session, PbEventKind kind, const char *detail, gpointer user_data)
{
  Metrics *m = user_data;

  switch (kind)
    {
    case PB_EVENT_SESSION_START:
      {
        const char *v[] = { pb_session_get_service (session), pb_session_get_listener (session) };
        metrics_counter_add (m->state->sessions, v, 1);
      }
      break;
    case PB_EVENT_AUTH_FAILED: count_rejected (m, "auth_failed"); break;
    case PB_EVENT_UNKNOWN_RECIPIENT: count_rejected (m, "unknown_recipient"); break;
    case PB_EVENT_RELAY_DENIED: count_rejected (m, "relay_denied"); break;
    case PB_EVENT_PROTOCOL_ERROR: count_rejected (m, "protocol_error"); break;
    case PB_EVENT_TOO_MANY_CONNECTIONS:
      count_rejected (m, "too_many_connections");
      mark_refusal_counted (m, session);
      break;
    case PB_EVENT_BLOCKED:
      count_rejected (m, "blocked");
      mark_refusal_counted (m, session);
      break;
    case PB_EVENT_MESSAGE_REFUSED: count_rejected (m, metrics_message_reason (detail)); break;
    case PB_EVENT_POLICY_REFUSED:
      {
        g_autofree char *reason = metrics_policy_reason (detail);
        if (reason == NULL)
          break;
        if (strcmp (reason, "policy_connect") == 0 && pb_session_get_data (session, m->module) != NULL)
          break;
        count_rejected (m, reason);
      }
      break;
    case PB_EVENT_BLOCK_STARTED: m->state->ids_blocks++; break;
    case PB_EVENT_AUTH_SUCCEEDED:
    case PB_EVENT_DISCONNECT:
      break;
    }
}

/* queued: one accepted message, from a session or (NULL session) a collector. */
static void
metrics_queued_hook (PbPolicyRequest *req, gpointer user_data)
{
  Metrics *m = user_data;
  PbSession *session = pb_policy_request_get_session (req);
  const char *service = session != NULL ? pb_session_get_service (session) : "pop3-collector";
  const char *rcpts = pb_policy_request_get_field (req, "recipients");
  guint64 n = 1;   /* a message has at least one; older protocol modules do not say */
  const char *v[] = { service };

  if (rcpts != NULL && !g_ascii_string_to_unsigned (rcpts, 10, 1, G_MAXUINT32, &n, NULL))
    n = 1;
  metrics_counter_add (m->state->accepted, v, 1);
  metrics_counter_add (m->state->recipients, v, n);
  pb_policy_continue (req);
}

static void
metrics_result_hook (PbPolicyRequest *req, gpointer user_data)
{
  Metrics *m = user_data;
  const char *result = pb_policy_request_get_field (req, "result");
  const char *domain = pb_policy_request_get_field (req, "destination");
  const char *rcpt = pb_policy_request_get_field (req, "rcpt");

  if (domain == NULL && rcpt != NULL && strrchr (rcpt, '@') != NULL)
    domain = strrchr (rcpt, '@') + 1;
  if (result != NULL)
    {
      const char *v[] = { result, metrics_state_domain_label (m->state, domain) };
      metrics_counter_add (m->state->deliveries, v, 1);
    }
  pb_policy_continue (req);
}

/* ---- HTTP ------------------------------------------------------------------------------ */

typedef struct {
  gint ref;
  Metrics *m;
  PbSession *session;
  PbConn *conn;
  MetricsHttpParser parser;
  gboolean request_done;      /* stop reading: the head is complete or refused */
  gboolean closed;
  gboolean head_only;
  guint pending;              /* commands not yet answered */
  GVariant *status;
  GVariant *sessions;
} Client;

static Client *
client_ref (Client *c)
{
  c->ref++;
  return c;
}

static void
client_unref (Client *c)
{
  if (--c->ref > 0)
    return;
  metrics_http_parser_clear (&c->parser);
  g_clear_pointer (&c->status, g_variant_unref);
  g_clear_pointer (&c->sessions, g_variant_unref);
  pb_conn_unref (c->conn);
  pb_session_unref (c->session);
  g_free (c);
}

/* RFC 9110 §5.6.7: IMF-fixdate, in English whatever the locale. */
static void
append_date (GString *out)
{
  static const char *const days[] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
  static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
  g_autoptr (GDateTime) now = g_date_time_new_now_utc ();

  g_string_append_printf (out, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
                          days[g_date_time_get_day_of_week (now) - 1], g_date_time_get_day_of_month (now),
                          months[g_date_time_get_month (now) - 1], g_date_time_get_year (now),
                          g_date_time_get_hour (now), g_date_time_get_minute (now), g_date_time_get_second (now));
}

static void
client_respond (Client *c, guint status, const char *content_type, const char *extra, const char *body)
{
  g_autoptr (GString) out = g_string_new (NULL);
  gsize body_len = strlen (body);

  if (c->closed)
    return;
  g_string_append_printf (out, "HTTP/1.1 %u %s\r\n", status, metrics_http_reason (status));
  append_date (out);
  g_string_append_printf (out, "Server: pillarbox/%s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                               "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                          pb_version (), content_type, body_len, extra != NULL ? extra : "");
  if (!c->head_only)
    g_string_append_len (out, body, (gssize) body_len);
  pb_conn_write (c->conn, out->str, out->len);
  pb_conn_close (c->conn);
  pb_session_debug (c->session, "metrics: %s %s -> %u (%zu octets)", c->parser.method != NULL ? c->parser.method : "-",
                    c->parser.target != NULL ? c->parser.target : "-", status, body_len);
}

static void
client_error (Client *c, guint status, const char *extra)
{
  g_autofree char *body = g_strdup_printf ("%u %s\n", status, metrics_http_reason (status));
  client_respond (c, status, "text/plain; charset=utf-8", extra, body);
}

static void
client_scrape_answered (Client *c)
{
  g_autoptr (GString) page = NULL;

  if (--c->pending > 0)
    return;
  page = g_string_sized_new (8192);
  metrics_render (c->m->state, c->status, c->sessions, page);
  /* The format's media type (Prometheus text format 0.0.4); UTF-8 as its label values are. */
  client_respond (c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, page->str);
}

static void
status_answered (gboolean ok, GVariant *data, const char *text, gpointer user_data)
{
  Client *c = user_data;

  if (ok && data != NULL && g_variant_is_of_type (data, G_VARIANT_TYPE_VARDICT))
    c->status = g_variant_ref (data);
  else
    pb_session_warning (c->session, "metrics: the status command failed: %s", text != NULL ? text : "no data");
  client_scrape_answered (c);
  client_unref (c);
}

static void
sessions_answered (gboolean ok, GVariant *data, const char *text, gpointer user_data)
{
  Client *c = user_data;

  if (ok && data != NULL)
    c->sessions = g_variant_ref (data);
  else
    pb_session_warning (c->session, "metrics: the sessions command failed: %s", text != NULL ? text : "no data");
  client_scrape_answered (c);
  client_unref (c);
}

static void
client_request (Client *c)
{
  const char *method = c->parser.method;
  gboolean get = strcmp (method, "GET") == 0;

  c->head_only = strcmp (method, "HEAD") == 0;
  if (strcmp (c->parser.target, "/metrics") != 0)
    {
      client_error (c, 404, NULL);
      return;
    }
  if (!get && !c->head_only)
    {
      client_error (c, 405, "Allow: GET, HEAD\r\n");   /* RFC 9110 §15.5.6 */
      return;
    }
  /* Answering may take a moment: the deadline now covers that, not the reading. */
  pb_conn_set_idle_timeout (c->conn, 0);
  pb_conn_set_total_timeout (c->conn, (guint) c->m->config->read_timeout);
  c->pending = 2;
  pb_module_call_command (c->m->module, "status", NULL, status_answered, client_ref (c));
  pb_module_call_command (c->m->module, "sessions", NULL, sessions_answered, client_ref (c));
}

static void
client_readable (PbConn *conn, gpointer user_data)
{
  Client *c = client_ref (user_data);   /* answering may close, and closing may release */

  while (!c->request_done)
    {
      const guint8 *data;
      gsize n = pb_conn_peek (conn, &data);
      gsize used = 0;
      MetricsHttpResult r;

      if (n == 0)
        {
          if (pb_conn_read_status (conn) != PB_CONN_AGAIN)
            {
              c->request_done = TRUE;   /* the client left before the end of its request */
              pb_conn_close (conn);
            }
          break;
        }
      r = metrics_http_parser_feed (&c->parser, data, n, &used);
      pb_conn_consume (conn, used);
      if (r == METRICS_HTTP_DONE)
        {
          c->request_done = TRUE;
          client_request (c);
        }
      else if (r == METRICS_HTTP_ERROR)
        {
          c->request_done = TRUE;
          pb_session_info (c->session, "metrics: bad request from %s: %s", pb_session_get_peer_ip (c->session),
                           c->parser.error);
          client_error (c, c->parser.status, NULL);
        }
    }
  client_unref (c);
}

static void
client_closed (PbConn *conn, const GError *error, gpointer user_data)
{
  Client *c = user_data;

  if (error != NULL && !g_error_matches (error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_CLOSED))
    pb_session_debug (c->session, "metrics: connection ended: %s", error->message);
  c->closed = TRUE;
  c->m->clients--;
  client_unref (c);
}

static void
metrics_accept (PbSession *session, PbConn *conn, gpointer user_data)
{
  Metrics *m = user_data;
  Client *c = g_new0 (Client, 1);
  static const PbConnHandlers handlers = {
    .struct_size = sizeof (PbConnHandlers),
    .readable = client_readable,
    .closed = client_closed,
  };

  c->ref = 1;   /* released when the connection closes */
  c->m = m;
  c->session = pb_session_ref (session);
  c->conn = pb_conn_ref (conn);
  metrics_http_parser_init (&c->parser, (gsize) m->config->max_request_size);
  m->clients++;
  pb_session_set_state (session, "REQUEST");
  pb_conn_set_handlers (conn, &handlers, c);
  pb_conn_set_idle_timeout (conn, (guint) m->config->read_timeout);
  pb_conn_set_total_timeout (conn, (guint) m->config->read_timeout);
  if (m->clients > (guint) m->config->max_clients)
    {
      c->request_done = TRUE;
      client_error (c, 503, "Retry-After: 1\r\n");
      return;
    }
  client_readable (conn, c);   /* pulling arms the readable handler */
}

static char *
metrics_format_refusal (const PbVerdict *verdict, gpointer user_data)
{
  return g_strdup ("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

static void
metrics_shutdown (PbSession *session, gpointer user_data)
{
  pb_conn_close (pb_session_get_conn (session));
}

/* ---- registration ------------------------------------------------------------------- */

static void
metrics_free (gpointer data)
{
  Metrics *m = data;
  metrics_state_free (m->state);
  g_free (m);
}

static gboolean
metrics_init (PbModule *module, const void *config, GError **error)
{
  const MetricsConfig *c = config;
  Metrics *m = g_new0 (Metrics, 1);
  PbListenerSpec listener = {
    .struct_size = sizeof listener,
    .name = "metrics",
    .service = "http",
    .endpoints = (const char *const *) c->listen,
    .tls = PB_TLS_NONE,
    .accept = metrics_accept,
    .format_refusal = metrics_format_refusal,
    .shutdown = metrics_shutdown,
    .user_data = m,
  };
  PbHookSpec queued = {
    .struct_size = sizeof queued,
    .stage = PB_STAGE_QUEUED,
    .func = metrics_queued_hook,
    .user_data = m,
  };
  PbHookSpec result = {
    .struct_size = sizeof result,
    .stage = PB_STAGE_DELIVERY_RESULT,
    .func = metrics_result_hook,
    .user_data = m,
  };

  m->module = module;
  m->config = c;
  m->state = metrics_state_new ((guint) c->max_domains);
  pb_module_set_data (module, m, metrics_free);
  pb_module_add_event_handler (module, metrics_event, m);
  return pb_module_add_hook (module, &queued, error) && pb_module_add_hook (module, &result, error)
         && pb_module_add_listener (module, &listener, error);
}

PB_MODULE_DEFINE (
  .name = "metrics",
  .version = PACKAGE_VERSION,
  .summary = "Prometheus metrics over HTTP (GET /metrics, text format 0.0.4)",
  .init = metrics_init,
  .settings = metrics_settings,
  .config_size = sizeof (MetricsConfig),
  .check = metrics_check);
