/* SPDX-License-Identifier: MIT */
/* status-monitor: the descriptor, settings, listener, and the events and hooks that feed VPOP3-style monitors. */
#include "config.h"
#include "sm-private.h"

#include <string.h>


static const PbSetting sm_settings[] = {
  PB_SETTING_ENDPOINTS (SmConfig, listen, "listen", "127.0.0.1:5109",
                        "Where the status service listens (VPOP3's port is 5109). The protocol has no "
                        "TLS and LOGIN sends the password in clear: keep it on loopback or a trusted LAN."),
  PB_SETTING_ADDRESS_LIST (SmConfig, allow, "allow", "127.0.0.0/8, ::1",
                           "Client addresses that may connect (addresses, prefixes or wildcards); others "
                           "get \"-ERR Access denied\". Widen it together with listen."),
  PB_SETTING_STRING_LIST (SmConfig, administrators, "administrators", "postmaster",
                          "The users who may log in to the monitor, as `pillarbox user list` shows them "
                          "(compared without regard to case). Empty means nobody: the service then only "
                          "greets and refuses every login."),
  PB_SETTING_INT (SmConfig, max_clients, "max-clients", "10", 1, 1000,
                  "Monitor connections at once (logged in or not); more are refused with -ERR and "
                  "reported as too-many-connections."),
  PB_SETTING_INT (SmConfig, max_line_length, "max-line-length", "512", 64, 8192,
                  "The longest command line accepted, in octets including CRLF."),
  PB_SETTING_DURATION (SmConfig, login_timeout, "login-timeout", "1m", 1000, 3600000,
                       "A client that has not logged in and sends nothing for this long is disconnected."),
  PB_SETTING_DURATION (SmConfig, idle_timeout, "idle-timeout", "0", 0, 604800000,
                       "A logged-in client that sends nothing for this long is disconnected; 0 never does "
                       "(a monitor mostly listens). A client that stops reading is disconnected by "
                       "max-output instead."),
  PB_SETTING_SIZE (SmConfig, max_output, "max-output", "256K", 4096, 67108864,
                   "Output a client may leave unread (beyond what the kernel buffers) before it is "
                   "disconnected, so a stalled monitor never holds up the server or other monitors. "
                   "Must hold a full status burst (about 150 octets per open session)."),
  PB_SETTING_DURATION (SmConfig, poll_interval, "poll-interval", "10s", 1000, 3600000,
                       "While a monitor is logged in, the server status (connections, queue counts) is "
                       "re-read this often; changes are sent at once. Queued and delivered messages also "
                       "trigger a re-read."),
  PB_SETTING_DURATION (SmConfig, summary_interval, "summary-interval", "1m", 0, 86400000,
                       "How often a summary line (type Y) is sent to logged-in monitors; 0 for never."),
  PB_SETTING_INT (SmConfig, history_lines, "history-lines", "50", 0, 1000,
                  "Activity lines (type 0) kept and sent to a monitor when it logs in, as VPOP3 sends "
                  "its recent activity log."),
  PB_SETTINGS_END
};

static gboolean
sm_config_check (const void *config, GError **error)
{
  const SmConfig *c = config;

  if (c->listen[0] == NULL)
    {
      g_set_error_literal (error, SM_ERROR, 0, "listen is empty; to turn the status monitor off, "
                           "comment out its [module status-monitor] line instead");
      return FALSE;
    }
  for (guint i = 0; c->administrators[i] != NULL; i++)
    for (const char *p = c->administrators[i]; *p != '\0'; p++)
      if ((guchar) *p <= 0x20 || *p == 0x7f)
        {
          g_set_error (error, SM_ERROR, 0, "administrators: '%s' is not a user name (spaces or control characters)",
                       c->administrators[i]);
          return FALSE;
        }
  return TRUE;
}

/* ---- what the monitors hear ------------------------------------------------------------- */

static char *
sm_session_line (PbSession *session, const char *event, const char *user, gboolean with_age)
{
  GString *line = sm_line_begin ('S');

  sm_line_add (line, "event", event);
  sm_line_add (line, "id", pb_session_get_id (session));
  sm_line_add (line, "service", pb_session_get_service (session));
  sm_line_add (line, "listener", pb_session_get_listener (session));
  sm_line_add (line, "client", pb_session_get_peer_ip (session));
  if (user != NULL)
    sm_line_add (line, "user", user);
  if (with_age)
    sm_line_add_int (line, "seconds", (g_get_monotonic_time () - pb_session_get_start_time (session)) / G_USEC_PER_SEC);
  return sm_line_end (line);
}

static void
sm_event (PbSession *session, PbEventKind kind, const char *detail, gpointer user_data)
{
  SmMonitor *mon = user_data;
  g_autofree char *line = NULL;
  g_autofree char *who = NULL;

  if ((kind == PB_EVENT_AUTH_SUCCEEDED || kind == PB_EVENT_DISCONNECT) && !sm_hub_is_watched (mon->hub))
    return;
  who = sm_clean_text (detail);
  switch (kind)
    {
    case PB_EVENT_AUTH_SUCCEEDED:
      line = sm_session_line (session, "login", detail, FALSE);
      break;
    case PB_EVENT_DISCONNECT:
      /* A session refused at connect never got a start line. */
      if (g_strcmp0 (detail, "admitted") == 0)
        line = sm_session_line (session, "end", pb_session_get_user (session), TRUE);
      break;
    case PB_EVENT_AUTH_FAILED:
      sm_hub_activity (mon->hub, "%s login failed for %s from %s", pb_session_get_service (session),
                       *who != '\0' ? who : "(no user)", pb_session_get_peer_ip (session));
      break;
    case PB_EVENT_RELAY_DENIED:
      sm_hub_activity (mon->hub, "Relaying to %s refused for %s", *who != '\0' ? who : "?",
                       pb_session_get_peer_ip (session));
      break;
    case PB_EVENT_TOO_MANY_CONNECTIONS:
      sm_hub_activity (mon->hub, "%s connection from %s refused: too many connections",
                       pb_session_get_service (session), pb_session_get_peer_ip (session));
      break;
    case PB_EVENT_UNKNOWN_RECIPIENT:
    case PB_EVENT_PROTOCOL_ERROR:
    default:
      break;
    }
  if (line != NULL)
    sm_hub_broadcast (mon->hub, line);
}

static void
sm_connect_hook (PbPolicyRequest *req, gpointer user_data)
{
  SmMonitor *mon = user_data;

  if (sm_hub_is_watched (mon->hub))
    {
      g_autofree char *line = sm_session_line (pb_policy_request_get_session (req), "start", NULL, FALSE);
      sm_hub_broadcast (mon->hub, line);
    }
  pb_policy_continue (req);
}

static const char *
field (PbPolicyRequest *req, const char *name)
{
  const char *v = pb_policy_request_get_field (req, name);
  return v != NULL ? v : "";
}

static void
sm_queued_hook (PbPolicyRequest *req, gpointer user_data)
{
  SmMonitor *mon = user_data;
  const char *from = field (req, "mail-from");

  sm_hub_activity (mon->hub, "Message %s queued from <%s> (%s octets)", field (req, "queue-id"), from,
                   *field (req, "size") != '\0' ? field (req, "size") : "?");
  sm_hub_kick (mon->hub);
  pb_policy_continue (req);
}

static void
sm_delivery_attempt_hook (PbPolicyRequest *req, gpointer user_data)
{
  SmMonitor *mon = user_data;

  /* A connection starts sending: the connection status changes. */
  sm_hub_kick (mon->hub);
  pb_policy_continue (req);
}

static void
sm_delivery_result_hook (PbPolicyRequest *req, gpointer user_data)
{
  SmMonitor *mon = user_data;
  const char *result = field (req, "result");
  const char *transport = field (req, "transport");
  /* VPOP3 says "MX Send Warning - ..." for trouble sending direct to MX. */
  const char *method = strcmp (transport, "mx-sender") == 0 ? "MX Send" : "Send";

  if (strcmp (result, "delivered") == 0)
    sm_hub_activity (mon->hub, "Sent message %s to <%s> via %s (%s)", field (req, "queue-id"), field (req, "rcpt"),
                     transport, field (req, "destination"));
  else if (strcmp (result, "deferred") == 0)
    sm_hub_activity (mon->hub, "%s Warning - message %s to <%s> deferred: %s", method, field (req, "queue-id"),
                     field (req, "rcpt"), field (req, "result-text"));
  else
    sm_hub_activity (mon->hub, "%s Failure - message %s to <%s> %s: %s", method, field (req, "queue-id"),
                     field (req, "rcpt"), result, field (req, "result-text"));
  sm_hub_kick (mon->hub);
  pb_policy_continue (req);
}

/* ---- the instance ------------------------------------------------------------------------ */

static void
sm_monitor_free (gpointer data)
{
  SmMonitor *mon = data;

  sm_hub_remove_monitor (mon->hub, mon);
  sm_hub_unref (mon->hub);
  g_ptr_array_unref (mon->allow);
  g_free (mon);
}

static gboolean
sm_init (PbModule *module, const void *config, GError **error)
{
  const SmConfig *c = config;
  SmMonitor *mon = g_new0 (SmMonitor, 1);
  PbListenerSpec listener = {
    .struct_size = sizeof listener,
    .name = "status-monitor",
    .service = "status-monitor",
    .endpoints = (const char *const *) c->listen,
    .tls = PB_TLS_NONE,
    .accept = sm_client_accept,
    .format_refusal = sm_client_format_refusal,
    .shutdown = sm_client_shutdown,
    .user_data = mon,
  };
  PbHookSpec hook = { .struct_size = sizeof hook, .user_data = mon };
  static const struct {
    PbStage stage;
    PbHookFunc func;
  } hooks[] = {
    { PB_STAGE_CONNECT, sm_connect_hook },
    { PB_STAGE_QUEUED, sm_queued_hook },
    { PB_STAGE_DELIVERY_ATTEMPT, sm_delivery_attempt_hook },
    { PB_STAGE_DELIVERY_RESULT, sm_delivery_result_hook },
  };

  mon->module = module;
  mon->config = c;
  mon->hub = sm_hub_get ();
  mon->allow = g_ptr_array_new_with_free_func (g_object_unref);
  /* The core has checked every item, so parsing cannot fail. */
  for (guint i = 0; c->allow[i] != NULL; i++)
    g_ptr_array_add (mon->allow, g_inet_address_mask_new_from_string (c->allow[i], NULL));
  pb_module_set_data (module, mon, sm_monitor_free);

  pb_module_add_event_handler (module, sm_event, mon);
  for (guint i = 0; i < G_N_ELEMENTS (hooks); i++)
    {
      hook.stage = hooks[i].stage;
      hook.func = hooks[i].func;
      /* Last: at connect only sessions every other hook admitted get a start
       * line; the others only observe and answer at once. */
      hook.priority = G_MAXINT / 2;
      if (!pb_module_add_hook (module, &hook, error))
        return FALSE;
    }
  return pb_module_add_listener (module, &listener, error);
}

static gboolean
sm_start (PbModule *module, GError **error)
{
  SmMonitor *mon = pb_module_get_data (module);

  mon->started = TRUE;
  sm_hub_add_monitor (mon->hub, mon);
  return TRUE;
}

static void
sm_fini (PbModule *module)
{
  SmMonitor *mon = pb_module_get_data (module);

  if (mon != NULL)
    sm_hub_remove_monitor (mon->hub, mon);
}

PB_MODULE_DEFINE (
  .name = "status-monitor",
  .version = PACKAGE_VERSION,
  .summary = "VPOP3-style status monitor service (port 5109): connection status, sessions, queue, Connect Now",
  .init = sm_init,
  .start = sm_start,
  .fini = sm_fini,
  .settings = sm_settings,
  .config_size = sizeof (SmConfig),
  .check = sm_config_check);
