/* SPDX-License-Identifier: MIT */
/* One POP3 session: the AUTHORIZATION / TRANSACTION / UPDATE state machine of RFC 1939 and its commands. */
#include "config.h"
#include "pop3-private.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* A client that fails this many logins on one connection is disconnected;
 * it may come back, through the connect hooks (IDS) again. */
#define POP3_MAX_AUTH_FAILURES 3
/* Unknown, malformed or out-of-sequence commands before we hang up: a
 * client speaking another protocol (or pipelining garbage) is cut short. */
#define POP3_MAX_BAD_COMMANDS 10

static const char *const pop3_state_names[] = { "AUTHORIZATION", "TRANSACTION", "UPDATE" };

static void pop3_pump (Pop3Session *ps);

/* ---- life cycle ------------------------------------------------------------ */

Pop3Session *
pop3_session_ref (Pop3Session *ps)
{
  ps->ref++;
  return ps;
}

static void
pop3_release_mailbox (Pop3Session *ps)
{
  if (ps->mailbox == NULL)
    return;
  pop3_locks_release (ps->locks, ps->mailbox);
  g_clear_pointer (&ps->mailbox, g_free);
}

static void
wipe_free (char *s)
{
  if (s == NULL)
    return;
  for (volatile char *p = s; *p != '\0'; p++)
    *p = '\0';
  g_free (s);
}

void
pop3_session_unref (Pop3Session *ps)
{
  if (ps == NULL || --ps->ref > 0)
    return;
  g_clear_pointer (&ps->job, pop3_job_free);
  pop3_prefetch_drop (ps);
  pop3_release_mailbox (ps);
  pop3_locks_unref (ps->locks);
  g_clear_pointer (&ps->strings, g_string_chunk_free);
  g_free (ps->msgs);
  g_free (ps->user_arg);
  g_free (ps->login_user);
  g_free (ps->login_canonical);
  g_free (ps);
}

/* Every state change goes through here, and is logged (OpenSMTPD's enter_state()). */
static void
pop3_enter_state (Pop3Session *ps, Pop3State state)
{
  if (ps->session != NULL)
    {
      pb_session_debug (ps->session, "%s -> %s", pop3_state_names[ps->state], pop3_state_names[state]);
      pb_session_set_state (ps->session, pop3_state_names[state]);
    }
  ps->state = state;
}

static void
pop3_close (Pop3Session *ps)
{
  if (ps->conn == NULL || ps->closing)
    return;
  ps->closing = TRUE;
  pb_conn_close (ps->conn);
}

/* ---- replies ------------------------------------------------------------- */

void
pop3_reply (Pop3Session *ps, gboolean ok, const char *format, ...)
{
  char buf[512];
  va_list ap;
  int n;

  if (ps->conn == NULL || ps->closing)
    return;
  memcpy (buf, ok ? "+OK " : "-ERR ", ok ? 4 : 5);
  va_start (ap, format);
  n = g_vsnprintf (buf + (ok ? 4 : 5), sizeof buf - 7, format, ap);
  va_end (ap);
  n = MIN (n, (int) sizeof buf - 8) + (ok ? 4 : 5);
  if (n == (ok ? 4 : 5))
    n--;  /* no text: no space either */
  buf[n++] = '\r';
  buf[n++] = '\n';
  pb_conn_write (ps->conn, buf, (gsize) n);
}

static void
pop3_bad_command (Pop3Session *ps, const char *text)
{
  ps->bad_commands++;
  if (ps->session != NULL)
    pb_session_report_event (ps->session, PB_EVENT_PROTOCOL_ERROR, NULL);
  if (ps->bad_commands >= POP3_MAX_BAD_COMMANDS)
    {
      pb_session_info (ps->session, "too many bad commands; disconnecting");
      pop3_reply (ps, FALSE, "Too many bad commands, closing the connection");
      pop3_close (ps);
      return;
    }
  pop3_reply (ps, FALSE, "%s", text);
}

/* ---- AUTHORIZATION ------------------------------------------------------- */

static gboolean
pop3_plaintext_allowed (Pop3Session *ps)
{
  return ps->srv->config->auth_plaintext || pb_conn_is_tls (ps->conn);
}

static void
pop3_refuse_plaintext (Pop3Session *ps)
{
  /* RFC 3206: [AUTH] says the credentials are the problem, not the server. */
  pop3_reply (ps, FALSE, "[AUTH] Plaintext authentication is disallowed on connections without TLS; use STLS first");
}

static void
pop3_listing_done (GVariant *result, const GError *error, gpointer user_data)
{
  Pop3Session *ps = user_data;

  ps->busy = FALSE;
  if (ps->conn == NULL)
    {
      pop3_session_unref (ps);  /* the lock goes with the session */
      return;
    }
  if (error != NULL || result == NULL
      || !(g_variant_is_of_type (result, G_VARIANT_TYPE ("a(tsxxs)"))
           || g_variant_is_of_type (result, G_VARIANT_TYPE ("a(tsxx)"))))
    {
      pb_session_warning (ps->session, "cannot list mailbox %s: %s", ps->mailbox,
                          error != NULL ? error->message : "unexpected result type");
      pop3_release_mailbox (ps);
      pb_session_set_user (ps->session, NULL);
      pop3_reply (ps, FALSE, "[SYS/TEMP] Cannot open the mailbox now, try again later");
    }
  else
    {
      gboolean sorted = TRUE;
      guint i;

      /* A backend that keeps no delivery headers may list a(tsxx): its
       * entries have none. Children are taken one by one rather than with
       * g_variant_iter_next(), which parses a format string per entry
       * (a maildrop of 20 000 is read in about 15 ms instead of 25). The
       * strings are copied into one chunk, so the listing is not kept. */
      gboolean with_headers = g_variant_is_of_type (result, G_VARIANT_TYPE ("a(tsxxs)"));

      ps->n_msgs = (guint) g_variant_n_children (result);
      ps->msgs = g_new0 (Pop3Msg, MAX (ps->n_msgs, 1));
      ps->strings = g_string_chunk_new (64 * 1024);
      for (i = 0; i < ps->n_msgs; i++)
        {
          Pop3Msg *m = &ps->msgs[i];
          g_autoptr (GVariant) entry = g_variant_get_child_value (result, i);
          g_autoptr (GVariant) uid = g_variant_get_child_value (entry, 0);
          g_autoptr (GVariant) id = g_variant_get_child_value (entry, 1);
          g_autoptr (GVariant) size = g_variant_get_child_value (entry, 2);
          g_autoptr (GVariant) headers = with_headers ? g_variant_get_child_value (entry, 4) : NULL;
          gsize len = 0;
          const char *text = headers != NULL ? g_variant_get_string (headers, &len) : "";

          m->uid = g_variant_get_uint64 (uid);
          m->message_id = g_string_chunk_insert (ps->strings, g_variant_get_string (id, NULL));
          m->size = g_variant_get_int64 (size);
          m->headers_len = len;
          m->headers = g_string_chunk_insert_len (ps->strings, text, (gssize) len);
        }
      ps->octets = 0;
      for (i = 0; i < ps->n_msgs; i++)
        {
          ps->octets += ps->msgs[i].size;
          if (i > 0 && ps->msgs[i - 1].uid >= ps->msgs[i].uid)
            sorted = FALSE;
        }
      /* Message numbers follow arrival order, the UIDs' order. */
      if (!sorted)
        qsort (ps->msgs, ps->n_msgs, sizeof (Pop3Msg), pop3_msg_compare);
      ps->srv->logins++;
      pop3_enter_state (ps, POP3_STATE_TRANSACTION);
      pb_session_info (ps->session, "login %s (%s): %u messages, %" G_GINT64_FORMAT " octets", ps->mailbox,
                       ps->login_mech, ps->n_msgs, ps->octets);
      pop3_reply (ps, TRUE, "Logged in, %u messages (%" G_GINT64_FORMAT " octets)", ps->n_msgs, ps->octets);
    }
  pop3_pump (ps);
  pop3_session_unref (ps);
}

/* RFC 1939 §4: the maildrop is locked for the whole TRANSACTION state. */
static void
pop3_open_mailbox (Pop3Session *ps)
{
  char *mailbox = g_steal_pointer (&ps->login_canonical);

  if (!pop3_locks_acquire (ps->locks, mailbox))
    {
      pb_session_info (ps->session, "mailbox %s is in use by another session", mailbox);
      g_free (mailbox);
      /* RFC 2449 §8.1.2 */
      pop3_reply (ps, FALSE, "[IN-USE] Mailbox is locked by another POP3 session");
      ps->busy = FALSE;
      return;
    }
  ps->mailbox = mailbox;
  pb_session_set_user (ps->session, mailbox);
  pb_store_request (ps->srv->module, "mailbox.list", g_variant_new ("(s)", mailbox), pop3_listing_done,
                    pop3_session_ref (ps));
}

static void
pop3_auth_stage_done (PbPolicyRequest *request, const PbVerdict *verdict, gpointer user_data)
{
  Pop3Session *ps = user_data;
  const char *text = verdict->text != NULL ? verdict->text : NULL;

  if (ps->conn == NULL)
    {
      ps->busy = FALSE;
      pop3_session_unref (ps);
      return;
    }
  if (ps->login_canonical == NULL)
    {
      /* Failed: the same reply whatever the reason (unknown user, wrong
       * password, protocol not permitted), so nothing can be learnt. */
      ps->auth_failures++;
      ps->srv->login_failures++;
      pop3_reply (ps, FALSE, "[AUTH] Authentication failed");
      if (verdict->kind == PB_VERDICT_DISCONNECT || ps->auth_failures >= POP3_MAX_AUTH_FAILURES)
        pop3_close (ps);
      ps->busy = FALSE;
    }
  else if (verdict->kind == PB_VERDICT_CONTINUE || verdict->kind == PB_VERDICT_ACCEPT)
    {
      pb_session_report_event (ps->session, PB_EVENT_AUTH_SUCCEEDED, ps->login_canonical);
      pop3_open_mailbox (ps);  /* busy until the maildrop is listed */
    }
  else
    {
      /* A policy module refused a correct login (a block, a rate limit). */
      g_clear_pointer (&ps->login_canonical, g_free);
      if (verdict->kind == PB_VERDICT_REJECT)
        pop3_reply (ps, FALSE, "[AUTH] %s", text != NULL ? text : "Authentication refused");
      else
        pop3_reply (ps, FALSE, "[SYS/TEMP] %s", text != NULL ? text : "Try again later");
      if (verdict->kind == PB_VERDICT_DISCONNECT)
        pop3_close (ps);
      ps->busy = FALSE;
    }
  pop3_pump (ps);
  pop3_session_unref (ps);
}

/* Asks the auth stage of the policy hooks, for both
 * outcomes, so an IDS module sees every attempt and may refuse a success. */
static void
pop3_run_auth_stage (Pop3Session *ps, gboolean success)
{
  PbPolicyRequest *req = pb_policy_request_new (ps->session, PB_STAGE_AUTH);

  pb_policy_request_set_field (req, "auth-user", ps->login_user);
  pb_policy_request_set_field (req, "auth-result", success ? "success" : "failure");
  pb_policy_request_set_field (req, "auth-mechanism", ps->login_mech);
  pb_policy_request_run (req, pop3_auth_stage_done, pop3_session_ref (ps));
  pb_policy_request_unref (req);
}

static void
pop3_auth_done (PbAuthResult result, const char *user, const char *reason, gpointer user_data)
{
  Pop3Session *ps = user_data;

  if (ps->conn == NULL)
    {
      ps->busy = FALSE;
      pop3_session_unref (ps);
      return;
    }
  switch (result)
    {
    case PB_AUTH_OK:
      ps->login_canonical = g_strdup (user);
      pop3_run_auth_stage (ps, TRUE);
      break;
    case PB_AUTH_FAILED:
      pb_session_info (ps->session, "login failed for %s (%s): %s", ps->login_user, ps->login_mech,
                       reason != NULL ? reason : "failed");
      pb_session_report_event (ps->session, PB_EVENT_AUTH_FAILED, ps->login_user);
      pop3_run_auth_stage (ps, FALSE);
      break;
    case PB_AUTH_TEMPFAIL:
    default:
      pb_session_warning (ps->session, "login of %s could not be checked: %s", ps->login_user,
                          reason != NULL ? reason : "temporary failure");
      pop3_reply (ps, FALSE, "[SYS/TEMP] Authentication is temporarily unavailable, try again later");
      ps->busy = FALSE;
      pop3_pump (ps);
      break;
    }
  pop3_session_unref (ps);
}

static void
pop3_login_start (Pop3Session *ps, const char *user, const char *password, const char *mechanism)
{
  ps->busy = TRUE;
  g_free (ps->login_user);
  ps->login_user = g_strdup (user);
  ps->login_mech = mechanism;
  g_clear_pointer (&ps->login_canonical, g_free);
  pb_auth_verify (ps->srv->module, user, password, "pop3", pop3_auth_done, pop3_session_ref (ps));
}

/* RFC 5034 §4 with RFC 4616 PLAIN. */
static void
pop3_sasl_plain (Pop3Session *ps, const char *response)
{
  char *authzid, *authcid, *passwd;

  if (strcmp (response, "*") == 0)
    {
      pop3_reply (ps, FALSE, "Authentication cancelled");
      return;
    }
  if (!pop3_sasl_plain_decode (response, &authzid, &authcid, &passwd))
    {
      pop3_bad_command (ps, "Invalid SASL PLAIN response");
      return;
    }
  if (*authzid != '\0' && strcmp (authzid, authcid) != 0)
    {
      /* Logging in as someone else (proxy authorisation) is not offered. */
      pop3_reply (ps, FALSE, "[AUTH] Authorization identity not permitted");
      ps->auth_failures++;
      if (ps->auth_failures >= POP3_MAX_AUTH_FAILURES)
        pop3_close (ps);
    }
  else
    pop3_login_start (ps, authcid, passwd, "PLAIN");
  g_free (authzid);
  g_free (authcid);
  wipe_free (passwd);
}

static void
pop3_tls_done (PbConn *conn, const GError *error, gpointer user_data)
{
  Pop3Session *ps = user_data;

  ps->tls_pending = FALSE;
  if (error == NULL && ps->session != NULL)
    {
      pb_session_debug (ps->session, "TLS started");
      /* RFC 2595 §4: still AUTHORIZATION, no new greeting. */
      pop3_pump (ps);
    }
  pop3_session_unref (ps);
}

static void
pop3_cmd_auth (Pop3Session *ps, const Pop3Command *cmd)
{
  if (cmd->argc == 0)
    {
      /* The RFC 1734 listing form, which some clients still probe. */
      if (ps->conn != NULL && !ps->closing)
        {
          const char *list = pop3_plaintext_allowed (ps) ? "+OK\r\nPLAIN\r\n.\r\n" : "+OK\r\n.\r\n";
          pb_conn_write (ps->conn, list, strlen (list));
        }
      return;
    }
  if (g_ascii_strcasecmp (cmd->argv[0], "PLAIN") != 0)
    {
      pop3_reply (ps, FALSE, "Unsupported authentication mechanism");
      return;
    }
  if (!pop3_plaintext_allowed (ps))
    {
      pop3_refuse_plaintext (ps);
      return;
    }
  if (cmd->argc == 2)
    {
      /* RFC 5034 §4: "=" is an empty initial response. */
      pop3_sasl_plain (ps, strcmp (cmd->argv[1], "=") == 0 ? "" : cmd->argv[1]);
      return;
    }
  ps->sasl_pending = TRUE;
  pb_conn_write (ps->conn, "+ \r\n", 4);
}

static void
pop3_cmd_stls (Pop3Session *ps)
{
  if (pb_conn_is_tls (ps->conn))
    {
      pop3_reply (ps, FALSE, "Command not permitted when TLS is active");
      return;
    }
  if (!pb_conn_can_start_tls (ps->conn))
    {
      pop3_reply (ps, FALSE, "TLS is not available");
      return;
    }
  pop3_reply (ps, TRUE, "Begin TLS negotiation");
  /* RFC 2595 §4: forget what was said before; the core discards any
   * input the client pipelined after STLS, so none of it is run. */
  g_clear_pointer (&ps->user_arg, g_free);
  ps->tls_pending = TRUE;
  pb_conn_start_tls (ps->conn, pop3_tls_done, pop3_session_ref (ps));
}

static void
pop3_cmd_capa (Pop3Session *ps)
{
  Pop3CapaInfo info = {
    .transaction = ps->state == POP3_STATE_TRANSACTION,
    .user = pop3_plaintext_allowed (ps),
    .sasl = pop3_plaintext_allowed (ps),
    .stls = !pb_conn_is_tls (ps->conn) && pb_conn_can_start_tls (ps->conn),
    .expire = ps->srv->config->expire,
    .implementation = ps->srv->config->implementation,
  };
  g_autofree char *text = pop3_capa_format (&info);

  pb_conn_write (ps->conn, text, strlen (text));
}

/* ---- TRANSACTION ------------------------------------------------------- */

int
pop3_msg_compare (const void *a, const void *b)
{
  guint64 ua = ((const Pop3Msg *) a)->uid, ub = ((const Pop3Msg *) b)->uid;
  return ua < ub ? -1 : ua > ub;
}

/* A message-number argument (RFC 1939 §5): a number of a message not
 * marked as deleted. */
static Pop3Msg *
pop3_msg_arg (Pop3Session *ps, const char *arg, guint *index)
{
  guint64 n;
  Pop3Msg *m;

  if (!pop3_parse_number (arg, G_MAXUINT, &n) || n == 0 || n > ps->n_msgs)
    {
      pop3_reply (ps, FALSE, "No such message");
      return NULL;
    }
  m = &ps->msgs[n - 1];
  if (m->deleted)
    {
      pop3_reply (ps, FALSE, "Message %u is deleted", (guint) n);
      return NULL;
    }
  *index = (guint) (n - 1);
  return m;
}

static void
pop3_delete_done (GVariant *result, const GError *error, gpointer user_data)
{
  Pop3Session *ps = user_data;

  ps->busy = FALSE;
  if (error != NULL)
    {
      /* The client may have gone already: log with the id we kept. */
      pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, NULL, NULL, "%s: deleting %u messages of %s failed: %s",
                      ps->id, ps->n_deleted, ps->mailbox, error->message);
      /* RFC 1939 §6: "-ERR some deleted messages not removed"; here none
       * were, the deletion is one transaction. */
      pop3_reply (ps, FALSE, "[SYS/TEMP] Deleting messages failed; none were removed, try again later");
    }
  else
    {
      guint64 n = result != NULL && g_variant_is_of_type (result, G_VARIANT_TYPE_UINT64)
                    ? g_variant_get_uint64 (result) : ps->n_deleted;
      ps->deleted = (guint) n;
      pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_INFO, NULL, NULL, "%s: deleted %u messages of %s", ps->id,
                      (guint) n, ps->mailbox);
      pop3_reply (ps, TRUE, "Pillarbox POP3 server signing off (%u messages deleted)", (guint) n);
    }
  /* The deletion is durable (or failed): the next session may open the mailbox. */
  pop3_release_mailbox (ps);
  pop3_close (ps);
  pop3_session_unref (ps);
}

/* RFC 1939 §6: QUIT in TRANSACTION enters UPDATE; the messages marked
 * deleted are removed, all in one storage transaction, and +OK is sent
 * only once that is on disk. */
static void
pop3_update (Pop3Session *ps)
{
  g_autofree guint64 *uids = NULL;
  guint n = 0;

  pop3_enter_state (ps, POP3_STATE_UPDATE);
  pop3_prefetch_drop (ps);
  if (ps->n_deleted == 0)
    {
      pop3_reply (ps, TRUE, "Pillarbox POP3 server signing off");
      pop3_release_mailbox (ps);
      pop3_close (ps);
      return;
    }
  uids = g_new (guint64, ps->n_deleted);
  for (guint i = 0; i < ps->n_msgs; i++)
    if (ps->msgs[i].deleted)
      uids[n++] = ps->msgs[i].uid;
  ps->busy = TRUE;
  pb_store_request (ps->srv->module, "mailbox.delete",
                    g_variant_new ("(s@at)", ps->mailbox,
                                   g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, uids, n, sizeof (guint64))),
                    pop3_delete_done, pop3_session_ref (ps));
}

static void
pop3_transaction_command (Pop3Session *ps, const Pop3Command *cmd)
{
  Pop3Msg *m;
  guint index;
  guint64 lines;

  switch (cmd->kind)
    {
    case POP3_CMD_STAT:
      pop3_reply (ps, TRUE, "%u %" G_GINT64_FORMAT, ps->n_msgs - ps->n_deleted, ps->octets);
      break;
    case POP3_CMD_LIST:
      if (cmd->argc == 0)
        pop3_job_start_listing (ps, FALSE);
      else if ((m = pop3_msg_arg (ps, cmd->argv[0], &index)) != NULL)
        pop3_reply (ps, TRUE, "%u %" G_GINT64_FORMAT, index + 1, m->size);
      break;
    case POP3_CMD_UIDL:
      if (cmd->argc == 0)
        pop3_job_start_listing (ps, TRUE);
      else if ((m = pop3_msg_arg (ps, cmd->argv[0], &index)) != NULL)
        pop3_reply (ps, TRUE, "%u %" G_GUINT64_FORMAT, index + 1, m->uid);
      break;
    case POP3_CMD_RETR:
      if (pop3_msg_arg (ps, cmd->argv[0], &index) != NULL)
        pop3_job_start_retr (ps, index, -1);
      break;
    case POP3_CMD_TOP:
      if (pop3_msg_arg (ps, cmd->argv[0], &index) == NULL)
        break;
      if (!pop3_parse_number (cmd->argv[1], G_MAXINT64, &lines))
        pop3_reply (ps, FALSE, "Invalid number of lines");
      else
        pop3_job_start_retr (ps, index, (gint64) lines);
      break;
    case POP3_CMD_DELE:
      if ((m = pop3_msg_arg (ps, cmd->argv[0], &index)) != NULL)
        {
          m->deleted = TRUE;
          ps->n_deleted++;
          ps->octets -= m->size;
          pop3_reply (ps, TRUE, "Message %u deleted", index + 1);
        }
      break;
    case POP3_CMD_NOOP:
      pop3_reply (ps, TRUE, "%s", "");
      break;
    case POP3_CMD_RSET:
      for (guint i = 0; i < ps->n_msgs; i++)
        if (ps->msgs[i].deleted)
          {
            ps->msgs[i].deleted = FALSE;
            ps->octets += ps->msgs[i].size;
          }
      ps->n_deleted = 0;
      pop3_reply (ps, TRUE, "Maildrop has %u messages (%" G_GINT64_FORMAT " octets)", ps->n_msgs, ps->octets);
      break;
    case POP3_CMD_QUIT:
      pop3_update (ps);
      break;
    default:
      g_assert_not_reached ();
    }
}

/* ---- command dispatch ---------------------------------------------------- */

static void
pop3_command (Pop3Session *ps, char *line)
{
  Pop3Command cmd;

  switch (pop3_command_parse (line, &cmd))
    {
    case POP3_PARSE_OK:
      break;
    case POP3_PARSE_EMPTY:
      pop3_bad_command (ps, "Empty command");
      return;
    case POP3_PARSE_BAD_CHAR:
      pop3_bad_command (ps, "Invalid characters in command");
      return;
    case POP3_PARSE_UNKNOWN:
      pop3_bad_command (ps, "Unknown command");
      return;
    case POP3_PARSE_BAD_ARGS:
    default:
      pop3_bad_command (ps, "Wrong arguments");
      return;
    }
  if ((cmd.states & (1u << ps->state)) == 0)
    {
      pop3_bad_command (ps, ps->state == POP3_STATE_AUTHORIZATION ? "Log in first"
                                                                  : "Command not valid in TRANSACTION state");
      return;
    }
  if (ps->state == POP3_STATE_TRANSACTION)
    {
      if (cmd.kind == POP3_CMD_CAPA)
        pop3_cmd_capa (ps);
      else
        pop3_transaction_command (ps, &cmd);
      return;
    }

  switch (cmd.kind)
    {
    case POP3_CMD_USER:
      if (!pop3_plaintext_allowed (ps))
        {
          pop3_refuse_plaintext (ps);
          return;
        }
      g_free (ps->user_arg);
      ps->user_arg = g_strdup (cmd.argv[0]);
      /* The same answer for every name: existence is not revealed here. */
      pop3_reply (ps, TRUE, "Send your password");
      break;
    case POP3_CMD_PASS:
      if (!pop3_plaintext_allowed (ps))
        pop3_refuse_plaintext (ps);
      else if (ps->user_arg == NULL)
        pop3_bad_command (ps, "Send USER first");
      else
        {
          g_autofree char *user = g_steal_pointer (&ps->user_arg);
          pop3_login_start (ps, user, cmd.rest, "USER");
        }
      break;
    case POP3_CMD_APOP:
      /* RFC 1939 §7 APOP needs the shared secret in clear; see docs/pop3-server.md. */
      pop3_reply (ps, FALSE, "APOP is not supported; use USER/PASS or AUTH PLAIN over TLS");
      break;
    case POP3_CMD_AUTH:
      pop3_cmd_auth (ps, &cmd);
      break;
    case POP3_CMD_STLS:
      pop3_cmd_stls (ps);
      break;
    case POP3_CMD_CAPA:
      pop3_cmd_capa (ps);
      break;
    case POP3_CMD_QUIT:
      pop3_reply (ps, TRUE, "Pillarbox POP3 server signing off");
      pop3_close (ps);
      break;
    default:
      g_assert_not_reached ();
    }
}

static gboolean
pop3_can_read (Pop3Session *ps)
{
  return ps->conn != NULL && !ps->closing && !ps->busy && !ps->tls_pending && ps->job == NULL
         && ps->state != POP3_STATE_UPDATE;
}

/* Pulls and runs commands until input runs out or a command has to wait
 * (authentication, storage, a long response, STLS). Pipelined commands
 * (RFC 2449 §6.6) are answered in order; while the client does not read
 * our output, we stop reading its input. */
static void
pop3_pump (Pop3Session *ps)
{
  /* A command that finishes at once (a RETR whose data was read ahead)
   * resumes reading from inside this loop: let the loop go on instead of
   * nesting another. */
  if (ps->pumping)
    return;
  ps->pumping = TRUE;
  pop3_session_ref (ps);
  while (pop3_can_read (ps))
    {
      const char *line;
      gsize len;

      if (ps->shutting_down)
        {
          pop3_reply (ps, FALSE, "[SYS/TEMP] The server is shutting down, try again later");
          pop3_close (ps);
          break;
        }
      if (pb_conn_get_output_pending (ps->conn) >= POP3_OUTPUT_HIGH)
        break;  /* `drained` resumes */

      switch (pb_conn_read_line (ps->conn, &line, &len))
        {
        case PB_CONN_LINE:
          {
            char *copy = g_strndup (line, len);

            pop3_line_chomp (copy, len);
            if (ps->sasl_pending)
              {
                ps->sasl_pending = FALSE;
                pop3_sasl_plain (ps, copy);
              }
            else
              pop3_command (ps, copy);
            /* Either may hold a password. */
            wipe_free (copy);
            break;
          }
        case PB_CONN_TOO_LONG:
          ps->sasl_pending = FALSE;
          pop3_bad_command (ps, "Line too long");
          break;
        case PB_CONN_AGAIN:
          goto out;
        case PB_CONN_EOF:
        case PB_CONN_ERROR:
        default:
          /* A client that goes away in TRANSACTION state has not quit:
           * nothing it marked is deleted (RFC 1939 §6). */
          pop3_close (ps);
          goto out;
        }
    }
out:
  ps->pumping = FALSE;
  pop3_session_unref (ps);
}

void
pop3_session_resume (Pop3Session *ps)
{
  pop3_pump (ps);
}

/* ---- connection handlers ------------------------------------------------ */

static void
pop3_readable (PbConn *conn, gpointer user_data)
{
  pop3_pump (user_data);
}

static void
pop3_drained (PbConn *conn, gpointer user_data)
{
  Pop3Session *ps = user_data;

  if (ps->job != NULL)
    pop3_job_continue (ps);
  else
    pop3_pump (ps);
}

static void
pop3_closed (PbConn *conn, const GError *error, gpointer user_data)
{
  Pop3Session *ps = user_data;

  if (error != NULL)
    pb_session_debug (ps->session, "connection ended: %s", error->message);
  if (ps->state != POP3_STATE_AUTHORIZATION)
    pb_session_info (ps->session, "logout %s: %u retrieved, %u deleted%s", pb_session_get_user (ps->session),
                     ps->retrieved, ps->deleted,
                     ps->state == POP3_STATE_TRANSACTION ? " (no QUIT: nothing deleted)" : "");
  pb_session_set_data (ps->session, ps->srv->module, NULL, NULL);
  pop3_prefetch_drop (ps);
  ps->conn = NULL;
  ps->session = NULL;
  /* Nothing is deleted when a client goes away without QUIT, so its lock
   * can go now; a deletion under way keeps it until it is durable. */
  if (!(ps->state == POP3_STATE_UPDATE && ps->busy))
    pop3_release_mailbox (ps);
  pop3_session_unref (ps);
}

void
pop3_session_accept (PbSession *session, PbConn *conn, gpointer user_data)
{
  static const PbConnHandlers handlers = {
    sizeof (PbConnHandlers), pop3_readable, pop3_drained, pop3_closed
  };
  Pop3Server *srv = user_data;
  Pop3Session *ps = g_new0 (Pop3Session, 1);

  ps->ref = 1;   /* the connection's, dropped in `closed` */
  ps->srv = srv;
  ps->locks = pop3_locks_ref (srv->locks);
  g_queue_init (&ps->prefetch);
  ps->session = session;
  ps->conn = conn;
  g_strlcpy (ps->id, pb_session_get_id (session), sizeof ps->id);
  srv->sessions++;

  pb_conn_set_max_line (conn, (gsize) srv->config->max_line_length);
  pb_conn_set_idle_timeout (conn, (guint) srv->config->idle_timeout);
  pb_conn_set_handlers (conn, &handlers, ps);
  pb_session_set_data (session, srv->module, ps, NULL);

  ps->state = POP3_STATE_AUTHORIZATION;
  pb_session_debug (session, "%s -> %s", pb_session_get_state (session), pop3_state_names[ps->state]);
  pb_session_set_state (session, pop3_state_names[ps->state]);
  /* RFC 1939 §4; no APOP timestamp, APOP is not offered. */
  pop3_reply (ps, TRUE, "Pillarbox POP3 server ready");
  pop3_pump (ps);
}

char *
pop3_format_refusal (const PbVerdict *verdict, gpointer user_data)
{
  return g_strdup_printf ("-ERR [SYS/TEMP] %s\r\n",
                          verdict->text != NULL ? verdict->text : "Service not available, try again later");
}

void
pop3_session_shutdown (PbSession *session, gpointer user_data)
{
  Pop3Server *srv = user_data;
  Pop3Session *ps = pb_session_get_data (session, srv->module);

  if (ps == NULL)
    {
      pb_conn_close (pb_session_get_conn (session));
      return;
    }
  /* A command under way (a RETR, a deletion at QUIT) finishes first; a
   * client in TRANSACTION state is not in UPDATE: nothing is deleted. */
  ps->shutting_down = TRUE;
  pop3_pump (ps);
}
