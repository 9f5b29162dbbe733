/* SPDX-License-Identifier: MIT */
/* status-monitor: one monitor client: greeting, LOGIN, the commands, and output bounded by max-output. */
#include "config.h"
#include "sm-private.h"

#include <string.h>
#include <unistd.h>

/* Wrong logins on one connection before we hang up; the client may come
 * back, through the connect hooks (ids) again. */
#define SM_MAX_AUTH_FAILURES 3
/* Unknown or out-of-sequence commands before we hang up. */
#define SM_MAX_BAD_COMMANDS 10
/* Longest user name or connection name we pass on. */
#define SM_MAX_NAME 255

typedef enum {
  SM_BURST_NONE = 0,
  SM_BURST_STATUS,
  SM_BURST_LOGIN      /* STATUS plus the activity history */
} SmBurst;

struct _SmClient {
  gint ref;
  SmMonitor *mon;       /* the instance it came through; only used while conn != NULL */
  SmHub *hub;
  PbSession *session;   /* NULL once closed */
  PbConn *conn;         /* NULL once closed */
  char *user;           /* canonical name once logged in */
  char *login_user;     /* the name being tried */
  gboolean live;        /* logged in and had its first burst: receives updates */
  gboolean busy;        /* waiting for a login check, a burst or a command: not pulling */
  gboolean closing;
  SmBurst burst;
  guint auth_failures;
  guint bad_commands;
};

static void sm_client_readable (PbConn *conn, gpointer user_data);

SmClient *
sm_client_ref (SmClient *client)
{
  client->ref++;
  return client;
}

void
sm_client_unref (SmClient *client)
{
  if (client == NULL || --client->ref > 0)
    return;
  g_free (client->user);
  g_free (client->login_user);
  sm_hub_unref (client->hub);
  g_free (client);
}

gboolean
sm_client_is_live (SmClient *client)
{
  return client->live && client->conn != NULL && !client->closing;
}

gboolean
sm_client_wants_burst (SmClient *client, gboolean *with_history)
{
  if (with_history != NULL)
    *with_history = client->burst == SM_BURST_LOGIN;
  return client->burst != SM_BURST_NONE && client->conn != NULL && !client->closing;
}

static void
sm_client_close (SmClient *client)
{
  if (client->conn == NULL || client->closing)
    return;
  client->closing = TRUE;
  pb_conn_close (client->conn);
}

void
sm_client_send (SmClient *client, const char *line)
{
  gsize len = strlen (line);
  gsize pending;

  if (client->conn == NULL || client->closing)
    return;
  pending = pb_conn_get_output_pending (client->conn);
  /* A monitor that does not read must cost a bounded amount of memory, and
   * must never hold up the loop or the other clients: past the bound it is
   * disconnected (it reconnects and gets a fresh burst). */
  if (pending + len > (gsize) client->mon->config->max_output)
    {
      pb_session_info (client->session, "status monitor client does not keep up (%" G_GSIZE_FORMAT
                       " octets unsent); disconnecting", pending);
      sm_client_close (client);
      return;
    }
  pb_conn_write (client->conn, line, len);
}

static void
sm_reply (SmClient *client, gboolean ok, const char *format, ...) G_GNUC_PRINTF (3, 4);

static void
sm_reply (SmClient *client, gboolean ok, const char *format, ...)
{
  g_autofree char *text = NULL;
  g_autofree char *clean = NULL;
  g_autofree char *line = NULL;
  va_list ap;

  va_start (ap, format);
  text = g_strdup_vprintf (format, ap);
  va_end (ap);
  clean = sm_clean_text (text);
  line = g_strdup_printf ("%s%s%s\r\n", ok ? "+OK" : "-ERR", *clean != '\0' ? " " : "", clean);
  sm_client_send (client, line);
}

static void
sm_pump (SmClient *client)
{
  if (client->conn != NULL && !client->busy && !client->closing)
    sm_client_readable (client->conn, client);
}

static void
sm_bad_command (SmClient *client, const char *text)
{
  client->bad_commands++;
  pb_session_report_event (client->session, PB_EVENT_PROTOCOL_ERROR, NULL);
  if (client->bad_commands >= SM_MAX_BAD_COMMANDS)
    {
      pb_session_info (client->session, "too many bad commands; disconnecting");
      sm_reply (client, FALSE, "Too many bad commands, closing the connection");
      sm_client_close (client);
      return;
    }
  sm_reply (client, FALSE, "%s", text);
}

/* ---- bursts ------------------------------------------------------------------------- */

static void
sm_request_burst (SmClient *client, SmBurst kind)
{
  client->busy = TRUE;
  client->burst = kind;
  sm_hub_request_burst (client->hub, client, kind == SM_BURST_LOGIN);
}

void
sm_client_burst_done (SmClient *client, char **lines, const char *error)
{
  gboolean first = !client->live;

  if (client->conn == NULL)
    return;
  client->burst = SM_BURST_NONE;
  client->busy = FALSE;
  if (error != NULL)
    sm_reply (client, FALSE, "Status is unavailable: %s", error);
  for (guint i = 0; lines != NULL && lines[i] != NULL; i++)
    sm_client_send (client, lines[i]);
  client->live = TRUE;
  if (first)
    sm_hub_update_timers (client->hub);
  sm_pump (client);
}

/* ---- LOGIN ---------------------------------------------------------------------------- */

static gboolean
sm_is_administrator (SmClient *client, const char *user)
{
  char **admins = client->mon->config->administrators;

  for (guint i = 0; admins[i] != NULL; i++)
    if (g_ascii_strcasecmp (admins[i], user) == 0)
      return TRUE;
  return FALSE;
}

static void
sm_login_failed (SmClient *client, const char *why)
{
  pb_session_info (client->session, "status monitor login failed for %s: %s", client->login_user, why);
  pb_session_report_event (client->session, PB_EVENT_AUTH_FAILED, client->login_user);
  client->auth_failures++;
  /* The same reply whatever the reason, so nothing can be learnt from it. */
  sm_reply (client, FALSE, "Login failed");
  if (client->auth_failures >= SM_MAX_AUTH_FAILURES)
    sm_client_close (client);
}

static void
sm_auth_stage_done (PbPolicyRequest *request, const PbVerdict *verdict, gpointer user_data)
{
  SmClient *client = user_data;
  gboolean success = g_strcmp0 (pb_policy_request_get_field (request, "auth-result"), "success") == 0;

  client->busy = FALSE;
  if (client->conn == NULL)
    {
      sm_client_unref (client);
      return;
    }
  if (!success)
    sm_login_failed (client, "wrong password, unknown user or not an administrator");
  else if (verdict->kind != PB_VERDICT_CONTINUE && verdict->kind != PB_VERDICT_ACCEPT)
    {
      /* A policy module refused a correct login (a block, a rate limit). */
      pb_session_info (client->session, "status monitor login of %s refused by %s", client->login_user,
                       verdict->module != NULL ? verdict->module : "policy");
      sm_reply (client, FALSE, "%s", verdict->text != NULL ? verdict->text : "Login refused");
      if (verdict->kind == PB_VERDICT_DISCONNECT)
        sm_client_close (client);
    }
  else
    {
      client->user = g_strdup (pb_policy_request_get_field (request, "auth-user"));
      pb_session_set_user (client->session, client->user);
      pb_session_set_state (client->session, "MONITOR");
      pb_session_report_event (client->session, PB_EVENT_AUTH_SUCCEEDED, client->user);
      pb_session_info (client->session, "status monitor login by %s", client->user);
      pb_conn_set_idle_timeout (client->conn, (guint) client->mon->config->idle_timeout);
      sm_reply (client, TRUE, "Logged in OK (Pillarbox %s)", pb_version ());
      sm_request_burst (client, SM_BURST_LOGIN);
    }
  sm_pump (client);
  sm_client_unref (client);
}

static void
sm_run_auth_stage (SmClient *client, const char *canonical)
{
  PbPolicyRequest *req = pb_policy_request_new (client->session, PB_STAGE_AUTH);

  /* Every attempt goes through the auth stage, so a policy module sees
   * failures too and may refuse a success. */
  pb_policy_request_set_field (req, "auth-user", canonical != NULL ? canonical : client->login_user);
  pb_policy_request_set_field (req, "auth-result", canonical != NULL ? "success" : "failure");
  pb_policy_request_set_field (req, "auth-mechanism", "LOGIN");
  client->busy = TRUE;
  pb_policy_request_run (req, sm_auth_stage_done, sm_client_ref (client));
  pb_policy_request_unref (req);
}

static void
sm_auth_done (PbAuthResult result, const char *user, const char *reason, gpointer user_data)
{
  SmClient *client = user_data;

  client->busy = FALSE;
  if (client->conn == NULL)
    {
      sm_client_unref (client);
      return;
    }
  switch (result)
    {
    case PB_AUTH_OK:
      if (sm_is_administrator (client, user))
        sm_run_auth_stage (client, user);
      else
        {
          pb_session_info (client->session, "%s is not listed in administrators", user);
          sm_run_auth_stage (client, NULL);
        }
      break;
    case PB_AUTH_FAILED:
      pb_session_debug (client->session, "login of %s: %s", client->login_user, reason != NULL ? reason : "failed");
      sm_run_auth_stage (client, NULL);
      break;
    case PB_AUTH_TEMPFAIL:
    default:
      pb_session_warning (client->session, "login of %s could not be checked: %s", client->login_user,
                          reason != NULL ? reason : "temporary failure");
      sm_reply (client, FALSE, "Login is temporarily unavailable, try again later");
      break;
    }
  sm_pump (client);
  sm_client_unref (client);
}

static void
sm_cmd_login (SmClient *client, SmCommand *cmd)
{
  if (client->user != NULL)
    {
      sm_bad_command (client, "Already logged in");
      return;
    }
  if (strlen (cmd->arg1) > SM_MAX_NAME)
    {
      sm_bad_command (client, "User name too long");
      return;
    }
  g_free (client->login_user);
  client->login_user = g_strdup (cmd->arg1);
  client->busy = TRUE;
  /* Users are checked as for SMTP AUTH: the core's password check also asks
   * whether the user may use a protocol, and it knows smtp and pop3 only. */
  /* The administrators list decides who may use the monitor, not the
   * user's permitted protocols (which name smtp and pop3 only). */
  pb_auth_verify (client->mon->module, cmd->arg1, cmd->arg2, NULL, sm_auth_done, sm_client_ref (client));
}

/* ---- commands after login -------------------------------------------------------------- */

typedef struct {
  SmClient *client;
  char *name;
} ConnectCall;

static void
sm_connect_done (gboolean ok, GVariant *data, const char *text, gpointer user_data)
{
  ConnectCall *call = user_data;
  SmClient *client = call->client;

  if (client->conn != NULL)
    {
      client->busy = FALSE;
      if (ok)
        {
          sm_reply (client, TRUE, "%s", text != NULL ? text : "connection fired");
          sm_hub_activity (client->hub, "Connect Now (%s) requested by %s",
                           call->name != NULL ? call->name : "default connections", client->user);
          sm_hub_kick (client->hub);
        }
      else
        sm_reply (client, FALSE, "%s", text != NULL ? text : "connect-now failed");
      sm_pump (client);
    }
  g_free (call->name);
  sm_client_unref (client);
  g_free (call);
}

static void
sm_cmd_connect (SmClient *client, SmCommand *cmd)
{
  const char *args[] = { cmd->arg1, NULL };
  ConnectCall *call;

  if (cmd->arg1 != NULL && strlen (cmd->arg1) > SM_MAX_NAME)
    {
      sm_bad_command (client, "Connection name too long");
      return;
    }
  pb_session_info (client->session, "%s asks to connect %s now", client->user,
                   cmd->arg1 != NULL ? cmd->arg1 : "the default connections");
  call = g_new0 (ConnectCall, 1);
  call->client = sm_client_ref (client);
  call->name = g_strdup (cmd->arg1);
  client->busy = TRUE;
  pb_module_call_command (client->mon->module, "connect-now", args, sm_connect_done, call);
}

static void
sm_command (SmClient *client, const char *line, gsize len)
{
  SmCommand cmd;

  sm_command_parse (line, len, &cmd);
  switch (cmd.kind)
    {
    case SM_CMD_EMPTY:
      /* Some monitors send a bare CRLF to keep the connection open. */
      break;
    case SM_CMD_UNKNOWN:
      sm_bad_command (client, "Unknown command");
      break;
    case SM_CMD_QUIT:
      sm_reply (client, TRUE, "Goodbye");
      sm_client_close (client);
      break;
    case SM_CMD_NOOP:
      sm_reply (client, TRUE, "%s", "");
      break;
    case SM_CMD_LOGIN:
      if (cmd.bad_args)
        sm_bad_command (client, "Syntax: LOGIN user password");
      else
        sm_cmd_login (client, &cmd);
      break;
    case SM_CMD_ALOGIN:
      /* ALOGIN's response is MD5(challenge + password): it needs the
       * password in clear on the server, and Pillarbox keeps only hashes. */
      sm_reply (client, FALSE, "ALOGIN is not available (passwords are stored hashed); use LOGIN");
      break;
    case SM_CMD_STATUS:
    case SM_CMD_CONNECT:
      if (client->user == NULL)
        sm_bad_command (client, "Log in first");
      else if (cmd.bad_args)
        sm_bad_command (client, cmd.kind == SM_CMD_STATUS ? "Syntax: STATUS" : "Syntax: CONNECT [name]");
      else if (cmd.kind == SM_CMD_STATUS)
        {
          sm_reply (client, TRUE, "Status follows");
          sm_request_burst (client, SM_BURST_STATUS);
        }
      else
        sm_cmd_connect (client, &cmd);
      break;
    }
  sm_command_clear (&cmd);
}

/* ---- the connection ---------------------------------------------------------------------- */

static void
sm_client_readable (PbConn *conn, gpointer user_data)
{
  SmClient *client = user_data;
  const char *line;
  gsize len;

  while (!client->busy && !client->closing)
    switch (pb_conn_read_line (conn, &line, &len))
      {
      case PB_CONN_LINE:
        sm_command (client, line, len);
        break;
      case PB_CONN_TOO_LONG:
        sm_bad_command (client, "Line too long");
        break;
      case PB_CONN_AGAIN:
        return;
      case PB_CONN_EOF:
      case PB_CONN_ERROR:
      default:
        sm_client_close (client);
        return;
      }
}

static void
sm_client_closed (PbConn *conn, const GError *error, gpointer user_data)
{
  SmClient *client = user_data;

  if (error != NULL)
    pb_session_debug (client->session, "status monitor session ended: %s", error->message);
  client->conn = NULL;
  client->session = NULL;
  client->live = FALSE;
  sm_hub_remove_client (client->hub, client);
  sm_client_unref (client);
}

static gboolean
sm_peer_allowed (SmMonitor *mon, PbConn *conn)
{
  GInetAddress *peer = g_inet_socket_address_get_address (pb_conn_get_peer_address (conn));

  for (guint i = 0; i < mon->allow->len; i++)
    if (g_inet_address_mask_matches (g_ptr_array_index (mon->allow, i), peer))
      return TRUE;
  return FALSE;
}

void
sm_client_accept (PbSession *session, PbConn *conn, gpointer user_data)
{
  static const PbConnHandlers handlers = { sizeof (PbConnHandlers), sm_client_readable, NULL, sm_client_closed };
  SmMonitor *mon = user_data;
  SmClient *client;

  if (!sm_peer_allowed (mon, conn))
    {
      pb_session_info (session, "status monitor refused: %s is not in allow", pb_session_get_peer_ip (session));
      pb_conn_printf (conn, "-ERR Access denied\r\n");
      pb_conn_close (conn);
      return;
    }
  if (sm_hub_count_clients (mon->hub) >= (guint) mon->config->max_clients)
    {
      pb_session_info (session, "status monitor refused: max-clients (%" G_GINT64_FORMAT ") reached",
                       mon->config->max_clients);
      pb_session_report_event (session, PB_EVENT_TOO_MANY_CONNECTIONS, NULL);
      pb_conn_printf (conn, "-ERR Too many status monitor connections, try later\r\n");
      pb_conn_close (conn);
      return;
    }
  client = g_new0 (SmClient, 1);
  client->ref = 1;  /* the connection's, dropped in sm_client_closed */
  client->mon = mon;
  client->hub = sm_hub_get ();
  client->session = session;
  client->conn = conn;
  sm_hub_add_client (client->hub, client);
  pb_session_set_data (session, mon->module, client, NULL);
  pb_conn_set_max_line (conn, (gsize) mon->config->max_line_length);
  pb_conn_set_idle_timeout (conn, (guint) mon->config->login_timeout);
  pb_conn_set_handlers (conn, &handlers, client);
  pb_session_set_state (session, "LOGIN");
  /* VPOP3 greets with an APOP-style challenge for ALOGIN; monitors parse it,
   * so it is there although ALOGIN is refused. */
  pb_conn_printf (conn, "+OK Pillarbox Status Server Ready <%s.%" G_GINT64_FORMAT "@%s>\r\n",
                  pb_session_get_id (session), g_get_real_time (), pb_module_get_hostname (mon->module));
  sm_client_readable (conn, client);
}

char *
sm_client_format_refusal (const PbVerdict *verdict, gpointer user_data)
{
  g_autofree char *text = sm_clean_text (verdict->text != NULL ? verdict->text : "Connection refused");

  return g_strdup_printf ("-ERR %s\r\n", text);
}

void
sm_client_shutdown (PbSession *session, gpointer user_data)
{
  SmMonitor *mon = user_data;
  SmClient *client = pb_session_get_data (session, mon->module);

  if (client == NULL)
    {
      pb_conn_close (pb_session_get_conn (session));
      return;
    }
  sm_reply (client, FALSE, "Server shutting down");
  sm_client_close (client);
}
