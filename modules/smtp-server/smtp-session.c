/* SPDX-License-Identifier: MIT */
/* The SMTP session state machine: reading commands in order, replies, timeouts, HELO/EHLO, STARTTLS, policy. */
#include "config.h"
#include "smtp-private.h"

#include <string.h>

/*
 * One SmtpSession per client, small while idle (the struct, nothing else:
 * the transaction is allocated at MAIL). Commands are pulled one at a
 * time from the core's buffered connection. A command that needs an
 * answer from elsewhere (a policy stage, the router, a password check, a
 * commit, a TLS handshake) sets `busy`, and nothing more is pulled until
 * the answer has been replied to: pipelined commands (RFC 2920) are
 * executed strictly in order and their replies leave together when the
 * session next waits for input.
 *
 * Output is bounded too: once SMTP_OUTPUT_HIGH octets of replies wait for
 * a client that does not read them (it pipelines cheap commands and never
 * reads), nothing more is pulled until the core says `drained`, and the
 * kernel's buffers push back on the client. That wait is timed like a
 * wait for input (command-timeout, then 421 and close), so a client that
 * never reads cannot hold its session. NOOP, RSET, HELP, VRFY and EXPN
 * are also counted (junk-command-limit).
 *
 * References: the connection holds one until `closed`; every pending
 * asynchronous call holds one, so its completion can find out that the
 * client has gone (`closed`) and only clean up.
 */

static const char *const state_names[] = {
  "NEW", "CONNECTED", "TLS", "HELO", "AUTH_PLAIN", "AUTH_USERNAME", "AUTH_PASSWORD", "BODY", "BDAT", "QUIT",
};

/* What `pillarbox sessions` shows. */
static const char *
state_word (SmtpSession *s)
{
  switch ((SmtpState) s->state)
    {
    case SMTP_STATE_NEW:
    case SMTP_STATE_CONNECTED:
      return "GREETING";
    case SMTP_STATE_TLS:
      return "STARTTLS";
    case SMTP_STATE_HELO:
      return s->txn != NULL ? "TRANSACTION" : "READY";
    case SMTP_STATE_AUTH_PLAIN:
    case SMTP_STATE_AUTH_USERNAME:
    case SMTP_STATE_AUTH_PASSWORD:
      return "AUTH";
    case SMTP_STATE_BODY:
    case SMTP_STATE_BDAT:
      return "DATA";
    case SMTP_STATE_QUIT:
      return "QUIT";
    }
  return "?";
}

void
smtp_session_enter_state (SmtpSession *s, SmtpState state)
{
  if (s->state == state)
    return;
  if (s->session != NULL)
    {
      pb_session_debug (s->session, "smtp: %s -> %s", state_names[s->state], state_names[state]);
      s->state = state;
      pb_session_set_state (s->session, state_word (s));
    }
  else
    s->state = state;
}

SmtpSession *
smtp_session_ref (SmtpSession *s)
{
  s->ref++;
  return s;
}

void
smtp_session_unref (SmtpSession *s)
{
  if (--s->ref > 0)
    return;
  g_assert (s->txn == NULL || s->closed);
  if (s->txn != NULL)
    smtp_txn_free (s->txn);
  g_free (s->helo);
  g_free (s->auth_user);
  if (s->auth_login_user != NULL)
    {
      explicit_bzero (s->auth_login_user, strlen (s->auth_login_user));
      g_free (s->auth_login_user);
    }
  g_free (s->saved_id);
  g_free (s);
}

/* ---- waiting for the client: one timer for all sessions ---------------- */

enum { WAIT_COMMAND = 0, WAIT_DATA = 1 };

static gboolean
smtp_timer_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  return callback (user_data);
}

static GSourceFuncs smtp_timer_funcs = { .dispatch = smtp_timer_dispatch };

static void
wait_remove (SmtpSession *s)
{
  SmtpWaitList *list;

  if (s->wait_list < 0)
    return;
  list = &s->smtp->waits[s->wait_list];
  if (s->wait_prev != NULL)
    s->wait_prev->wait_next = s->wait_next;
  else
    list->head = s->wait_next;
  if (s->wait_next != NULL)
    s->wait_next->wait_prev = s->wait_prev;
  else
    list->tail = s->wait_prev;
  s->wait_prev = s->wait_next = NULL;
  s->wait_list = -1;
}

static void session_timed_out (SmtpSession *s);

static gboolean
smtp_timer_fire (gpointer data)
{
  Smtp *smtp = data;
  gint64 now = g_get_monotonic_time ();
  gint64 next = -1;

  for (int i = 0; i < 2; i++)
    {
      SmtpWaitList *list = &smtp->waits[i];
      while (list->head != NULL && list->head->deadline <= now)
        session_timed_out (list->head);  /* removes it from the list */
      if (list->head != NULL && (next < 0 || list->head->deadline < next))
        next = list->head->deadline;
    }
  g_source_set_ready_time (smtp->timer, next);
  return G_SOURCE_CONTINUE;
}

/* Appends: every session of a list has the same timeout, so the list
 * stays sorted by deadline and the timer only looks at the heads. The
 * timer is moved only when it must fire earlier, so this costs no system
 * call in the common case. */
static void
wait_add (SmtpSession *s, int which)
{
  Smtp *smtp = s->smtp;
  SmtpWaitList *list = &smtp->waits[which];
  gint64 timeout = which == WAIT_COMMAND ? smtp->config->command_timeout : smtp->config->data_timeout;
  gint64 current;

  wait_remove (s);
  s->deadline = g_get_monotonic_time () + timeout * 1000;
  s->wait_list = (gint8) which;
  s->wait_prev = list->tail;
  s->wait_next = NULL;
  if (list->tail != NULL)
    list->tail->wait_next = s;
  else
    list->head = s;
  list->tail = s;

  if (smtp->timer == NULL)
    {
      smtp->timer = g_source_new (&smtp_timer_funcs, sizeof (GSource));
      g_source_set_static_name (smtp->timer, "smtp-server timeouts");
      g_source_set_callback (smtp->timer, smtp_timer_fire, smtp, NULL);
      g_source_set_ready_time (smtp->timer, -1);
      pb_source_attach (smtp->timer, NULL);
    }
  current = g_source_get_ready_time (smtp->timer);
  if (current < 0 || s->deadline < current)
    g_source_set_ready_time (smtp->timer, s->deadline);
}

/* The module's own loop sources go with it; so do the references the
 * resume queue holds. */
void
smtp_sources_stop (Smtp *smtp)
{
  pb_source_clear (&smtp->timer);
  pb_source_clear (&smtp->resume);
  g_queue_clear_full (&smtp->resumes, (GDestroyNotify) smtp_session_unref);
}

/* ---- resuming sessions whose client took its replies ------------------- */

static void smtp_pump (SmtpSession *s);

/* Sessions that stopped for output resume from one source at idle
 * priority, after everything else that is ready: a client that does not
 * keep up with its replies is served last, and floods of them cannot
 * starve other sessions. */
static gboolean
smtp_resume_fire (gpointer data)
{
  Smtp *smtp = data;
  SmtpSession *s;

  g_source_set_ready_time (smtp->resume, -1);
  while ((s = g_queue_pop_head (&smtp->resumes)) != NULL)
    {
      s->resume_queued = FALSE;
      if (!s->closed && s->output_wait)
        smtp_pump (s);
      smtp_session_unref (s);
    }
  return G_SOURCE_CONTINUE;
}

static void
resume_later (SmtpSession *s)
{
  Smtp *smtp = s->smtp;

  if (s->resume_queued)
    return;
  s->resume_queued = TRUE;
  g_queue_push_tail (&smtp->resumes, smtp_session_ref (s));
  if (smtp->resume == NULL)
    {
      smtp->resume = g_source_new (&smtp_timer_funcs, sizeof (GSource));
      g_source_set_static_name (smtp->resume, "smtp-server resumes");
      g_source_set_priority (smtp->resume, G_PRIORITY_DEFAULT_IDLE);
      g_source_set_callback (smtp->resume, smtp_resume_fire, smtp, NULL);
      pb_source_attach (smtp->resume, NULL);
    }
  g_source_set_ready_time (smtp->resume, 0);
}

/* ---- replies --------------------------------------------------------- */

static void
smtp_close (SmtpSession *s)
{
  smtp_session_enter_state (s, SMTP_STATE_QUIT);
  wait_remove (s);
  if (!s->closed)
    pb_conn_close (s->conn);
}

void
smtp_reply (SmtpSession *s, guint code, const char *enhanced, const char *format, ...)
{
  char text[512];
  va_list ap;

  if (s->closed || s->state == SMTP_STATE_QUIT)
    return;
  va_start (ap, format);
  g_vsnprintf (text, sizeof text, format, ap);
  va_end (ap);
  /* Text that came from elsewhere (a policy verdict) stays on one line. */
  for (char *p = text; *p != '\0'; p++)
    if (*p == '\r' || *p == '\n')
      *p = ' ';
  if (enhanced != NULL)
    pb_conn_printf (s->conn, "%u %s %s\r\n", code, enhanced, text);
  else
    pb_conn_printf (s->conn, "%u %s\r\n", code, text);

  if (code >= 400 && code != 421 && code != 521)
    {
      s->errors++;
      if (s->errors >= s->smtp->config->max_errors)
        {
          pb_session_info (s->session, "too many errors (%u), closing", s->errors);
          pb_conn_printf (s->conn, "421 4.7.0 %s Too many errors, closing connection\r\n",
                          pb_module_get_hostname (s->smtp->module));
          smtp_close (s);
        }
    }
  else if (code == 421 || code == 521)
    smtp_close (s);
}

void
smtp_reply_error (SmtpSession *s, const SmtpReply *r)
{
  smtp_reply (s, r->code, r->enhanced, "%s", r->text);
}

/* A malformed or out-of-sequence command: the reply, and an event for IDS. */
static void
smtp_protocol_error (SmtpSession *s, guint code, const char *enhanced, const char *text)
{
  pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, text);
  smtp_reply (s, code, enhanced, "%s", text);
}

static void
session_timed_out (SmtpSession *s)
{
  wait_remove (s);
  if (s->output_wait)
    pb_session_info (s->session, "timeout in state %s: %" G_GSIZE_FORMAT " octets of replies left unread, closing",
                     state_names[s->state], pb_conn_get_output_pending (s->conn));
  else
    pb_session_info (s->session, "timeout in state %s, closing", state_names[s->state]);
  smtp_reply (s, 421, "4.4.2", "%s Timeout exceeded, closing connection", pb_module_get_hostname (s->smtp->module));
}

/* ---- policy stages ------------------------------------------------------ */

PbPolicyRequest *
smtp_filter_new (SmtpSession *s, PbStage stage)
{
  PbPolicyRequest *req;

  /* No handler for the stage: no request at all (the common case, and
   * the fast one). */
  if (!pb_stage_has_hooks (s->smtp->module, stage))
    return NULL;
  req = pb_policy_request_new (s->session, stage);
  pb_policy_request_set_field (req, "listener", pb_session_get_listener (s->session));
  if (s->helo != NULL)
    pb_policy_request_set_field (req, "helo", s->helo);
  if (s->auth_user != NULL)
    pb_policy_request_set_field (req, "auth-user", s->auth_user);
  if (s->txn != NULL)
    pb_policy_request_set_field (req, "mail-from", s->txn->mail.address);
  return req;
}

typedef struct {
  SmtpSession *s;
  SmtpFilterDone done;
  gpointer data;
} FilterCall;

static void
smtp_filter_done (PbPolicyRequest *req, const PbVerdict *verdict, gpointer user_data)
{
  FilterCall *call = user_data;
  SmtpSession *s = call->s;

  s->busy = FALSE;
  call->done (s, verdict, req, call->data);
  smtp_session_resume (s);
  smtp_session_unref (s);
  g_free (call);
}

void
smtp_filter (SmtpSession *s, PbPolicyRequest *req, SmtpFilterDone done, gpointer data)
{
  FilterCall *call;

  if (req == NULL)
    {
      PbVerdict verdict = { .struct_size = sizeof verdict, .kind = PB_VERDICT_CONTINUE };
      done (s, &verdict, NULL, data);
      return;
    }
  call = g_new0 (FilterCall, 1);
  call->s = smtp_session_ref (s);
  call->done = done;
  call->data = data;
  s->busy = TRUE;
  pb_policy_request_run (req, smtp_filter_done, call);
  pb_policy_request_unref (req);
}

static gboolean
enhanced_ok (const char *e, char cls)
{
  /* RFC 3463 §2: class "." subject "." detail, 1-3 digits each. */
  int parts = 0, digits = 0;

  if (e == NULL || e[0] != cls || e[1] != '.')
    return FALSE;
  for (const char *p = e; ; p++)
    {
      if (g_ascii_isdigit (*p) && digits < 3)
        digits++;
      else if ((*p == '.' || *p == '\0') && digits > 0)
        {
          parts++;
          digits = 0;
          if (*p == '\0')
            break;
        }
      else
        return FALSE;
    }
  return parts == 3;
}

gboolean
smtp_verdict_proceeds (SmtpSession *s, const PbVerdict *v)
{
  const char *text = v->text != NULL && *v->text != '\0' ? v->text : NULL;

  switch (v->kind)
    {
    case PB_VERDICT_CONTINUE:
    case PB_VERDICT_ACCEPT:
      return TRUE;
    case PB_VERDICT_REJECT:
      smtp_reply (s, v->code >= 500 && v->code <= 559 ? v->code : 550,
                  enhanced_ok (v->enhanced, '5') ? v->enhanced : "5.7.1", "%s",
                  text != NULL ? text : "Rejected by policy");
      return FALSE;
    case PB_VERDICT_TEMPFAIL:
      smtp_reply (s, v->code >= 400 && v->code <= 459 && v->code != 421 ? v->code : 451,
                  enhanced_ok (v->enhanced, '4') ? v->enhanced : "4.7.1", "%s",
                  text != NULL ? text : "Temporarily refused by policy, try again later");
      return FALSE;
    case PB_VERDICT_DISCONNECT:
    default:
      smtp_reply (s, 421, enhanced_ok (v->enhanced, '4') ? v->enhanced : "4.7.0", "%s",
                  text != NULL ? text : "Closing connection");
      return FALSE;
    }
}

/* ---- transactions ------------------------------------------------------- */

void
smtp_session_reset_txn (SmtpSession *s)
{
  if (s->txn == NULL)
    return;
  smtp_txn_free (s->txn);
  s->txn = NULL;
  if (s->session != NULL)
    pb_session_set_state (s->session, state_word (s));
}

gboolean
smtp_session_use_tls_or_plaintext_auth (SmtpSession *s)
{
  return pb_conn_is_tls (s->conn) || s->smtp->config->auth_plaintext;
}

/* ---- HELO, EHLO -------------------------------------------------------- */

typedef struct {
  char *name;
  gboolean esmtp;
} HeloCall;

static void
helo_filtered (SmtpSession *s, const PbVerdict *verdict, PbPolicyRequest *req, gpointer data)
{
  HeloCall *call = data;
  Smtp *smtp = s->smtp;
  const char *host = pb_module_get_hostname (smtp->module);

  if (s->closed || !smtp_verdict_proceeds (s, verdict))
    goto out;

  /* RFC 5321 §4.1.4: HELO/EHLO also resets any transaction. */
  smtp_session_reset_txn (s);
  g_free (s->helo);
  s->helo = g_steal_pointer (&call->name);
  s->esmtp = call->esmtp;
  smtp_session_enter_state (s, SMTP_STATE_HELO);
  if (!call->esmtp)
    {
      /* RFC 2034 §3 / RFC 5321 §4.1.1.1: the reply starts with the domain. */
      pb_conn_printf (s->conn, "250 %s\r\n", host);
      goto out;
    }
  {
    GString *r = g_string_sized_new (256);
    gboolean auth = s->auth_user == NULL && smtp_session_use_tls_or_plaintext_auth (s);

    g_string_append_printf (r, "250-%s Hello %s [%s]\r\n", host, s->helo, pb_session_get_peer_ip (s->session));
    g_string_append (r, "250-PIPELINING\r\n");                                   /* RFC 2920 */
    g_string_append_printf (r, "250-SIZE %" G_GINT64_FORMAT "\r\n", smtp->config->max_message_size); /* RFC 1870 */
    g_string_append (r, "250-8BITMIME\r\n");                                     /* RFC 6152 */
    g_string_append (r, "250-ENHANCEDSTATUSCODES\r\n");                          /* RFC 2034 */
    if (pb_conn_can_start_tls (s->conn))
      g_string_append (r, "250-STARTTLS\r\n");                                   /* RFC 3207 */
    if (auth)
      g_string_append (r, "250-AUTH PLAIN LOGIN\r\n");                           /* RFC 4954 */
    g_string_append (r, "250-SMTPUTF8\r\n");                                     /* RFC 6531 */
    g_string_append (r, "250-DSN\r\n");                                          /* RFC 3461 */
    g_string_append (r, "250 CHUNKING\r\n");                                     /* RFC 3030 */
    pb_conn_write (s->conn, r->str, r->len);
    g_string_free (r, TRUE);
  }

out:
  g_free (call->name);
  g_free (call);
}

static void
smtp_cmd_helo (SmtpSession *s, char *args, gboolean esmtp)
{
  const SmtpConfig *c = s->smtp->config;
  PbPolicyRequest *req;
  HeloCall *call;

  /* Check. */
  if (*args == '\0')
    {
      smtp_protocol_error (s, 501, "5.5.4", esmtp ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
      return;
    }
  if (!smtp_helo_chars_ok (args) || (c->check_helo_syntax && !smtp_helo_syntax_ok (args)))
    {
      smtp_protocol_error (s, 501, "5.5.2", "Invalid HELO name (RFC 5321 §4.1.1.1)");
      return;
    }
  for (guint i = 0; c->refuse_helo[i] != NULL; i++)
    {
      g_autofree char *hay = g_ascii_strdown (args, -1);
      g_autofree char *needle = g_ascii_strdown (c->refuse_helo[i], -1);
      if (strstr (hay, needle) != NULL)
        {
          pb_session_info (s->session, "HELO %s refused (refuse-helo)", args);
          smtp_reply (s, 550, "5.7.1", "HELO name refused");
          return;
        }
    }

  /* Filter, then proceed. */
  call = g_new0 (HeloCall, 1);
  call->name = g_strdup (args);
  call->esmtp = esmtp;
  req = smtp_filter_new (s, PB_STAGE_HELO);
  if (req != NULL)
    pb_policy_request_set_field (req, "helo", args);
  smtp_filter (s, req, helo_filtered, call);
}

/* ---- STARTTLS ---------------------------------------------------------- */

static void
starttls_done (PbConn *conn, const GError *error, gpointer user_data)
{
  SmtpSession *s = user_data;

  s->busy = FALSE;
  if (s->closed || error != NULL)
    {
      if (error != NULL && !s->closed)
        pb_session_info (s->session, "STARTTLS handshake failed: %s", error->message);
      smtp_session_unref (s);
      return;   /* the core closes the connection */
    }
  /* RFC 3207 §4.2: forget everything learnt before the handshake. */
  smtp_session_reset_txn (s);
  g_clear_pointer (&s->helo, g_free);
  s->esmtp = FALSE;
  if (s->auth_user != NULL)
    {
      g_clear_pointer (&s->auth_user, g_free);
      pb_session_set_user (s->session, NULL);
    }
  smtp_session_enter_state (s, SMTP_STATE_CONNECTED);
  smtp_session_resume (s);
  smtp_session_unref (s);
}

static void
smtp_cmd_starttls (SmtpSession *s, char *args)
{
  if (*args != '\0')
    {
      smtp_protocol_error (s, 501, "5.5.4", "Syntax: STARTTLS");
      return;
    }
  if (pb_conn_is_tls (s->conn))
    {
      smtp_protocol_error (s, 503, "5.5.1", "TLS already active");
      return;
    }
  if (!pb_conn_can_start_tls (s->conn))
    {
      smtp_reply (s, 454, "4.7.0", "TLS not available");
      return;
    }
  smtp_reply (s, 220, "2.0.0", "Ready to start TLS");
  smtp_session_enter_state (s, SMTP_STATE_TLS);
  s->busy = TRUE;
  /* The core discards whatever was pipelined after STARTTLS (RFC 3207 §4.2). */
  pb_conn_start_tls (s->conn, starttls_done, smtp_session_ref (s));
}

/* ---- the command loop ----------------------------------------------------- */

static gboolean
needs_helo (SmtpSession *s)
{
  if (s->state == SMTP_STATE_HELO)
    return FALSE;
  smtp_protocol_error (s, 503, "5.5.1", "Send HELO/EHLO first");
  return TRUE;
}

static gboolean
no_args (SmtpSession *s, const char *args, const char *verb)
{
  if (*args == '\0')
    return TRUE;
  {
    char text[64];
    g_snprintf (text, sizeof text, "Syntax: %s (no parameters)", verb);
    smtp_protocol_error (s, 501, "5.5.4", text);
  }
  return FALSE;
}

/* Postfix's smtpd_junk_command_limit: commands that cost the client
 * nothing and move no mail. Past the limit the session ends. */
static gboolean
too_much_junk (SmtpSession *s)
{
  if ((gint64) ++s->junk <= s->smtp->config->junk_command_limit)
    return FALSE;
  pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, "too many junk commands");
  pb_session_info (s->session, "too many junk commands (%u), closing", s->junk);
  smtp_reply (s, 421, "4.7.0", "%s Too many junk commands, closing connection",
              pb_module_get_hostname (s->smtp->module));
  return TRUE;
}

static void
smtp_command (SmtpSession *s, char *line)
{
  SmtpCommand cmd;

  smtp_parse_command (line, &cmd);
  if ((cmd.flags & SMTP_VERB_JUNK) && too_much_junk (s))
    return;
  switch (cmd.kind)
    {
    case SMTP_CMD_HELO:
    case SMTP_CMD_EHLO:
      smtp_cmd_helo (s, cmd.args, cmd.kind == SMTP_CMD_EHLO);
      break;
    case SMTP_CMD_MAIL:
      if (!needs_helo (s))
        smtp_cmd_mail (s, cmd.args);
      break;
    case SMTP_CMD_RCPT:
      if (!needs_helo (s))
        smtp_cmd_rcpt (s, cmd.args);
      break;
    case SMTP_CMD_DATA:
      if (!needs_helo (s) && no_args (s, cmd.args, "DATA"))
        smtp_cmd_data (s, cmd.args);
      break;
    case SMTP_CMD_BDAT:
      /* Even out of sequence, the chunk must be read (RFC 3030 §2). */
      smtp_cmd_bdat (s, cmd.args);
      break;
    case SMTP_CMD_RSET:
      if (no_args (s, cmd.args, "RSET"))
        {
          smtp_session_reset_txn (s);
          smtp_reply (s, 250, "2.0.0", "Ok");
        }
      break;
    case SMTP_CMD_NOOP:
      smtp_reply (s, 250, "2.0.0", "Ok");
      break;
    case SMTP_CMD_QUIT:
      if (no_args (s, cmd.args, "QUIT"))
        {
          smtp_reply (s, 221, "2.0.0", "Bye");
          smtp_close (s);
        }
      break;
    case SMTP_CMD_HELP:
      smtp_reply (s, 214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY EXPN "
                                   "STARTTLS AUTH; see RFC 5321");
      break;
    case SMTP_CMD_VRFY:
    case SMTP_CMD_EXPN:
      smtp_cmd_vrfy (s, cmd.args, cmd.kind == SMTP_CMD_EXPN);
      break;
    case SMTP_CMD_STARTTLS:
      smtp_cmd_starttls (s, cmd.args);
      break;
    case SMTP_CMD_AUTH:
      if (!needs_helo (s))
        smtp_cmd_auth (s, cmd.args);
      break;
    case SMTP_CMD_UNKNOWN:
    default:
      smtp_protocol_error (s, 500, "5.5.2", "Command not recognized");
      break;
    }
}

/* One line from the client: a command, or a step of an AUTH exchange. */
static void
smtp_line (SmtpSession *s, const char *data, gsize len)
{
  char stack[1024];
  char *line = len < sizeof stack ? stack : g_malloc (len + 1);
  SmtpEol eol;
  gboolean ok;

  memcpy (line, data, len);
  ok = smtp_line_chomp (line, &len, &eol);
  s->eol_crlf = eol == SMTP_EOL_CRLF;
  if (eol == SMTP_EOL_LF && s->smtp->config->bare_lf == SMTP_BARE_LF_REJECT)
    {
      pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, "bare LF");
      smtp_reply (s, 521, "5.5.2", "Bare <LF> received (RFC 5321 §2.3.8), closing connection");
    }
  else if (!ok)
    smtp_protocol_error (s, 500, "5.5.2", "Invalid character in command");
  else if (s->state == SMTP_STATE_AUTH_PLAIN || s->state == SMTP_STATE_AUTH_USERNAME
           || s->state == SMTP_STATE_AUTH_PASSWORD)
    smtp_auth_line (s, line);
  else
    smtp_command (s, line);
  if (line != stack)
    {
      explicit_bzero (line, len);
      g_free (line);
    }
  else
    explicit_bzero (stack, len);
}

static gboolean
smtp_shutdown_now_possible (SmtpSession *s)
{
  return !s->busy && (s->state == SMTP_STATE_CONNECTED || s->state == SMTP_STATE_HELO
                      || s->state == SMTP_STATE_AUTH_PLAIN || s->state == SMTP_STATE_AUTH_USERNAME
                      || s->state == SMTP_STATE_AUTH_PASSWORD);
}

static void
smtp_pump (SmtpSession *s)
{
  if (s->pumping)
    return;   /* the loop below continues when the caller returns */
  s->pumping = TRUE;
  smtp_session_ref (s);
  wait_remove (s);
  s->output_wait = FALSE;

  while (!s->closed && !s->busy)
    {
      const char *line;
      gsize len;
      PbConnStatus status;

      if (s->state == SMTP_STATE_QUIT || s->state == SMTP_STATE_TLS || s->state == SMTP_STATE_NEW)
        break;
      if (s->shutdown && smtp_shutdown_now_possible (s))
        {
          smtp_reply (s, 421, "4.3.2", "%s Server shutting down", pb_module_get_hostname (s->smtp->module));
          break;
        }
      /* The client does not take its replies: read nothing more until it
       * has (`drained` resumes), with the command timeout running. RFC 2920
       * §3.1 leaves it to the client to avoid this deadlock. */
      if (pb_conn_get_output_pending (s->conn) >= SMTP_OUTPUT_HIGH)
        {
          s->output_wait = TRUE;
          wait_add (s, WAIT_COMMAND);
          break;
        }
      if (s->state == SMTP_STATE_BODY || s->state == SMTP_STATE_BDAT)
        {
          smtp_data_pump (s);
          if (s->state == SMTP_STATE_BODY || s->state == SMTP_STATE_BDAT)
            {
              if (!s->busy && !s->closed && s->state != SMTP_STATE_QUIT)
                wait_add (s, WAIT_DATA);
              break;
            }
          continue;
        }

      status = pb_conn_read_line (s->conn, &line, &len);
      switch (status)
        {
        case PB_CONN_LINE:
          smtp_line (s, line, len);
          break;
        case PB_CONN_TOO_LONG:
          if (s->state == SMTP_STATE_AUTH_PLAIN || s->state == SMTP_STATE_AUTH_USERNAME
              || s->state == SMTP_STATE_AUTH_PASSWORD)
            {
              smtp_session_enter_state (s, SMTP_STATE_HELO);
              smtp_reply (s, 500, "5.5.6", "Authentication exchange line is too long");  /* RFC 4954 §4 */
            }
          else
            smtp_protocol_error (s, 500, "5.5.2", "Line too long");
          break;
        case PB_CONN_AGAIN:
          wait_add (s, WAIT_COMMAND);
          goto out;
        case PB_CONN_EOF:
        case PB_CONN_ERROR:
        default:
          /* The client left without QUIT: whatever was under way is dropped. */
          smtp_close (s);
          goto out;
        }
    }
out:
  s->pumping = FALSE;
  smtp_session_unref (s);
}

void
smtp_session_resume (SmtpSession *s)
{
  if (!s->closed && !s->busy)
    smtp_pump (s);
}

/* ---- connection handlers ---------------------------------------------- */

static void
smtp_readable (PbConn *conn, gpointer user_data)
{
  smtp_pump (user_data);
}

/* The client took enough of the replies queued above SMTP_OUTPUT_HIGH. */
static void
smtp_drained (PbConn *conn, gpointer user_data)
{
  SmtpSession *s = user_data;

  if (s->output_wait)
    resume_later (s);
}

static void
smtp_closed (PbConn *conn, const GError *error, gpointer user_data)
{
  SmtpSession *s = user_data;

  if (error != NULL)
    pb_session_debug (s->session, "smtp: connection ended: %s", error->message);
  wait_remove (s);
  g_hash_table_remove (s->smtp->sessions, s->session);
  if (s->txn != NULL && s->txn->committing)
    s->saved_id = g_strdup (pb_session_get_id (s->session));
  else
    smtp_session_reset_txn (s);
  s->closed = TRUE;
  s->session = NULL;
  s->conn = NULL;
  smtp_session_unref (s);
}

void
smtp_session_accept (PbSession *session, PbConn *conn, gpointer user_data)
{
  static const PbConnHandlers handlers = { sizeof (PbConnHandlers), smtp_readable, smtp_drained, smtp_closed };
  SmtpListener *listener = user_data;
  Smtp *smtp = listener->smtp;
  SmtpSession *s = g_new0 (SmtpSession, 1);
  const SmtpConfig *c = smtp->config;
  GInetAddress *peer;

  s->ref = 1;   /* the connection's */
  s->smtp = smtp;
  s->session = session;
  s->conn = conn;
  s->listener = listener->kind;
  s->wait_list = -1;
  peer = g_inet_socket_address_get_address (pb_conn_get_peer_address (conn));
  for (guint i = 0; peer != NULL && i < smtp->trusted->len; i++)
    if (g_inet_address_mask_matches (g_ptr_array_index (smtp->trusted, i), peer))
      s->trusted = TRUE;
  g_hash_table_insert (smtp->sessions, session, s);

  pb_conn_set_max_line (conn, (gsize) c->max_line_length);
  /* A backstop for the TLS handshake; waiting for commands and data is
   * timed by smtp-server itself, so that the client hears 421. */
  pb_conn_set_idle_timeout (conn, (guint) MIN (MAX (c->command_timeout, c->data_timeout) + 30000, G_MAXUINT));
  pb_conn_set_handlers (conn, &handlers, s);

  /* RFC 5321 §4.2: the greeting starts with the domain, no enhanced code (RFC 2034 §3). */
  pb_conn_printf (conn, "220 %s %s\r\n", pb_module_get_hostname (smtp->module), c->banner);
  smtp_session_enter_state (s, SMTP_STATE_CONNECTED);
  smtp_pump (s);
}

void
smtp_session_shutdown (PbSession *session, gpointer user_data)
{
  SmtpListener *listener = user_data;
  SmtpSession *s = g_hash_table_lookup (listener->smtp->sessions, session);

  if (s == NULL)
    {
      pb_conn_close (pb_session_get_conn (session));
      return;
    }
  s->shutdown = TRUE;
  /* Idle: say so and close now. Otherwise the current command (a message
   * being received or committed) finishes first; the loop closes then. */
  if (smtp_shutdown_now_possible (s) && !s->pumping)
    smtp_reply (s, 421, "4.3.2", "%s Server shutting down", pb_module_get_hostname (s->smtp->module));
}
