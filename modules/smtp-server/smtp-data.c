/* SPDX-License-Identifier: MIT */
/* DATA and BDAT: data-start, streaming into storage, size limits, data-end, the durable commit and its 250. */
#include "config.h"
#include "smtp-private.h"

#include <string.h>

/*
 * Content is decoded (smtp-content.c) into txn->hold. Up to HOLD_MAX
 * octets are held back, so that headers added by data-end hooks can still
 * be put in front of the Received field; beyond that the Received field
 * and the content stream to storage as they arrive and the message is
 * never whole in memory. (Headers from data-end hooks cannot be added to
 * a message already streaming: the storage ABI only appends.)
 *
 * The 250 is sent only from the commit's completion, once the backend has
 * the message on stable storage (RFC 5321 §6.1). A client that leaves
 * while the commit runs does not stop it: the message is kept, and a
 * retry may deliver it twice, which §6.1 prefers to losing it.
 */
#define HOLD_MAX (64 * 1024)

static const SmtpReply reply_need_mail = { 503, "5.5.1", "Need MAIL command" };
static const SmtpReply reply_need_helo = { 503, "5.5.1", "Send HELO/EHLO first" };
static const SmtpReply reply_no_rcpt = { 554, "5.5.1", "No valid recipients" };
static const SmtpReply reply_txn_failed = { 503, "5.5.1", "Transaction failed earlier, send RSET" };

static void
txn_fail (SmtpTxn *txn, guint code, const char *enhanced, const char *text)
{
  if (txn->reply_code != 0)
    return;   /* the first failure is the one reported */
  txn->reply_code = (guint16) code;
  txn->reply_enhanced = enhanced;
  txn->reply_text = g_strdup (text);
  if (txn->msg != NULL)
    {
      pb_store_message_abort (txn->msg);
      txn->msg = NULL;
    }
  if (txn->hold != NULL)
    g_byte_array_set_size (txn->hold, 0);
}

/* SESSION is NULL when the client left during a commit: nobody to report for. */
static void
txn_fail_store (SmtpTxn *txn, PbSession *session, const GError *error)
{
  const char *reason;

  if (txn->reply_code != 0)
    return;   /* already failed and reported */
  if (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NO_SPACE))
    {
      reason = "storage-full";
      txn_fail (txn, 452, "4.3.1", "Insufficient system storage");
    }
  else if (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_TOO_BIG))
    {
      reason = "too-big";
      txn_fail (txn, 552, "5.2.3", "Message exceeds fixed maximum message size");
    }
  else
    {
      reason = "storage-error";
      txn_fail (txn, 451, "4.3.0", "Temporary failure storing the message, try again later");
    }
  if (session != NULL)
    pb_session_report_event (session, PB_EVENT_MESSAGE_REFUSED, reason);
}

static void
txn_reply_failure (SmtpSession *s)
{
  SmtpTxn *txn = s->txn;
  smtp_reply (s, txn->reply_code, txn->reply_enhanced, "%s", txn->reply_text);
}

/* Storage begins once data-start has passed: a full disk is known before
 * the 354 (RFC 5321 §4.2.5 allows 452 there). */
static gboolean
txn_begin (SmtpSession *s)
{
  SmtpTxn *txn = s->txn;
  g_autoptr (GPtrArray) rcpts = g_ptr_array_sized_new (txn->rcpts->len + 1);
  g_autoptr (GError) error = NULL;
  g_autofree char *tls = pb_conn_get_tls_description (s->conn);
  g_autofree char *id = NULL;
  PbEnvelope env = { 0 };
  SmtpReceivedInfo info = { 0 };

  for (guint i = 0; i < txn->rcpts->len; i++)
    g_ptr_array_add (rcpts, &((SmtpRcpt *) g_ptr_array_index (txn->rcpts, i))->r);
  g_ptr_array_add (rcpts, NULL);
  env.struct_size = sizeof env;
  env.mail_from = txn->mail.address;
  env.recipients = (const PbRecipient *const *) rcpts->pdata;
  env.session_id = pb_session_get_id (s->session);
  env.client_ip = pb_session_get_peer_ip (s->session);
  env.auth_user = s->auth_user;
  env.dsn_ret = txn->mail.ret;
  env.dsn_envid = txn->mail.envid;
  env.size_hint = MAX (txn->mail.size, 0);
  txn->msg = pb_store_message_begin (s->smtp->module, &env, &error);
  if (txn->msg == NULL)
    {
      pb_session_warning (s->session, "cannot store a message: %s", error->message);
      txn_fail_store (txn, s->session, error);
      return FALSE;
    }

  s->messages++;
  id = g_strdup_printf ("%s-%u", pb_session_get_id (s->session), s->messages);
  info.helo = s->helo;
  info.client_ip = pb_session_get_peer_ip (s->session);
  info.hostname = pb_module_get_hostname (s->smtp->module);
  info.protocol = smtp_with_protocol (s->esmtp, pb_conn_is_tls (s->conn), s->auth_user != NULL,
                                      txn->mail.smtputf8);
  info.tls = tls;
  info.auth_user = s->auth_user;
  info.id = id;
  info.for_rcpt = txn->accepted == 1 ? txn->first_rcpt : NULL;
  info.unix_time = g_get_real_time () / G_USEC_PER_SEC;
  txn->received = smtp_received_header (&info);
  txn->hold = g_byte_array_sized_new ((guint) CLAMP (txn->mail.size, 4096, HOLD_MAX));
  txn->data_started = TRUE;
  return TRUE;
}

static gboolean
txn_write (SmtpSession *s, const void *data, gsize len)
{
  SmtpTxn *txn = s->txn;
  g_autoptr (GError) error = NULL;

  if (len == 0 || txn->msg == NULL)
    return TRUE;
  if (pb_store_message_write (txn->msg, data, len, &error))
    return TRUE;
  txn_fail_store (txn, s->session, error);
  return FALSE;
}

/* Sends the held content to storage, the Received field first. */
static void
txn_flush (SmtpSession *s)
{
  SmtpTxn *txn = s->txn;

  if (txn->reply_code != 0)
    return;
  if (!txn->flushed)
    {
      txn->flushed = TRUE;
      if (!txn_write (s, txn->received, strlen (txn->received)))
        return;
    }
  if (txn_write (s, txn->hold->data, txn->hold->len))
    g_byte_array_set_size (txn->hold, 0);
}

/* Accounts for NEW octets just decoded at the end of txn->hold. */
static void
txn_content (SmtpSession *s, gsize added)
{
  SmtpTxn *txn = s->txn;

  txn->size += (gint64) added;
  if (txn->reply_code != 0)
    {
      g_byte_array_set_size (txn->hold, 0);   /* failed: read to the end, keep nothing */
      return;
    }
  if (txn->size > s->smtp->config->max_message_size)
    {
      pb_session_info (s->session, "message over max-message-size (%" G_GINT64_FORMAT " octets)",
                       s->smtp->config->max_message_size);
      txn_fail (txn, 552, "5.2.3", "Message exceeds fixed maximum message size");
      pb_session_report_event (s->session, PB_EVENT_MESSAGE_REFUSED, "too-big");
      return;
    }
  if (txn->hold->len >= HOLD_MAX)
    txn_flush (s);
}

/* ---- the end: data-end, commit, 250 ----------------------------------- */

static void
commit_done (const char *queue_id, const GError *error, gpointer user_data)
{
  SmtpSession *s = user_data;
  SmtpTxn *txn = s->txn;
  PbSession *session = s->session;   /* NULL when the client has gone */

  txn->committing = FALSE;
  if (error != NULL)
    {
      pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, session, NULL, "%scommit failed: %s",
                      s->saved_id != NULL ? s->saved_id : "", error->message);
      txn_fail_store (txn, session, error);
      txn_reply_failure (s);
    }
  else
    {
      PbPolicyRequest *req;
      char size[32];

      pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_INFO, session, queue_id,
                      "%s%squeued: from=<%s> rcpts=%u size=%" G_GINT64_FORMAT "%s",
                      s->saved_id != NULL ? s->saved_id : "", s->saved_id != NULL ? ": " : "",
                      txn->mail.address, txn->accepted, txn->size,
                      session == NULL ? " (the client left before the reply)" : "");
      smtp_reply (s, 250, "2.0.0", "Ok: queued as %s", queue_id);
      /* A notification: nobody's answer changes anything, so nothing waits. */
      if (pb_stage_has_hooks (s->smtp->module, PB_STAGE_QUEUED))
        {
          req = pb_policy_request_new (session, PB_STAGE_QUEUED);
          g_snprintf (size, sizeof size, "%" G_GINT64_FORMAT, txn->size);
          pb_policy_request_set_field (req, "queue-id", queue_id);
          pb_policy_request_set_field (req, "size", size);
          pb_policy_request_set_field (req, "mail-from", txn->mail.address);
          g_snprintf (size, sizeof size, "%u", txn->accepted);
          pb_policy_request_set_field (req, "recipients", size);
          if (s->auth_user != NULL)
            pb_policy_request_set_field (req, "auth-user", s->auth_user);
          pb_policy_request_run (req, NULL, NULL);
          pb_policy_request_unref (req);
        }
    }
  smtp_session_reset_txn (s);
  if (error == NULL)
    s->junk = 0;   /* as Postfix does: a client that delivers mail is not idling */
  s->busy = FALSE;
  smtp_session_resume (s);
  smtp_session_unref (s);
}

static void
data_end_filtered (SmtpSession *s, const PbVerdict *verdict, PbPolicyRequest *req, gpointer data)
{
  SmtpTxn *txn = s->txn;
  PbStoreMessage *msg;

  if (s->closed || txn == NULL)
    return;
  if (!smtp_verdict_proceeds (s, verdict))
    {
      smtp_session_reset_txn (s);
      return;
    }
  if (req != NULL)
    {
      const char *const *headers = pb_policy_request_get_headers (req);
      if (headers[0] != NULL && txn->flushed)
        pb_session_warning (s->session, "a message over %d KiB cannot take headers from data-end hooks; "
                            "%s and others dropped", HOLD_MAX / 1024, headers[0]);
      for (guint i = 0; headers[i] != NULL && !txn->flushed; i++)
        {
          txn_write (s, headers[i], strlen (headers[i]));
          txn_write (s, "\r\n", 2);
        }
    }
  txn_flush (s);
  if (txn->reply_code != 0)
    {
      txn_reply_failure (s);
      smtp_session_reset_txn (s);
      return;
    }
  msg = g_steal_pointer (&txn->msg);
  txn->committing = TRUE;
  s->busy = TRUE;
  pb_store_message_commit (msg, commit_done, smtp_session_ref (s));
}

/* The content is complete (DATA's end mark, or BDAT LAST). */
static void
data_end (SmtpSession *s)
{
  SmtpTxn *txn = s->txn;
  PbPolicyRequest *req;

  smtp_session_enter_state (s, SMTP_STATE_HELO);
  if (txn->reply_code != 0)
    {
      txn_reply_failure (s);
      smtp_session_reset_txn (s);
      return;
    }
  req = smtp_filter_new (s, PB_STAGE_DATA_END);
  if (req != NULL)
    {
      char size[32];
      g_snprintf (size, sizeof size, "%" G_GINT64_FORMAT, txn->size);
      pb_policy_request_set_field (req, "size", size);
    }
  smtp_filter (s, req, data_end_filtered, NULL);
}

/* ---- DATA ----------------------------------------------------------------- */

static void
data_start_filtered (SmtpSession *s, const PbVerdict *verdict, PbPolicyRequest *req, gpointer data)
{
  gboolean at_line_start = GPOINTER_TO_INT (data);

  if (s->closed || s->txn == NULL || !smtp_verdict_proceeds (s, verdict))
    return;
  if (!txn_begin (s))
    {
      txn_reply_failure (s);
      smtp_session_reset_txn (s);
      return;
    }
  smtp_decoder_init (&s->txn->dec, FALSE, s->smtp->config->bare_lf == SMTP_BARE_LF_REJECT, at_line_start);
  /* 3xx replies have no enhanced code (RFC 3463 classes are 2, 4 and 5). */
  pb_conn_printf (s->conn, "354 End data with <CR><LF>.<CR><LF>\r\n");
  smtp_session_enter_state (s, SMTP_STATE_BODY);
}

void
smtp_cmd_data (SmtpSession *s, char *args)
{
  SmtpTxn *txn = s->txn;

  /* Check. */
  if (txn == NULL || txn->bdat)
    {
      pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, "DATA out of sequence");
      smtp_reply (s, 503, "5.5.1", txn == NULL ? "Need MAIL command" : "DATA not allowed after BDAT");
      return;
    }
  if (txn->accepted == 0)
    {
      smtp_reply_error (s, &reply_no_rcpt);   /* RFC 5321 §3.3 */
      return;
    }
  /* Filter, then proceed. The end mark's first CRLF may be the DATA
   * line's own (an empty message), but not a bare LF. */
  smtp_filter (s, smtp_filter_new (s, PB_STAGE_DATA_START), data_start_filtered, GINT_TO_POINTER (s->eol_crlf));
}

/* ---- BDAT (RFC 3030) ----------------------------------------------------------- */

static void
bdat_start_filtered (SmtpSession *s, const PbVerdict *verdict, PbPolicyRequest *req, gpointer data)
{
  SmtpTxn *txn = s->txn;

  if (s->closed || txn == NULL)
    return;
  switch (verdict->kind)
    {
    case PB_VERDICT_CONTINUE:
    case PB_VERDICT_ACCEPT:
      if (txn_begin (s))
        smtp_decoder_init (&txn->dec, TRUE, s->smtp->config->bare_lf == SMTP_BARE_LF_REJECT, FALSE);
      break;
    case PB_VERDICT_DISCONNECT:
      smtp_verdict_proceeds (s, verdict);   /* 421 and close */
      return;
    default:
      txn_fail (txn, verdict->kind == PB_VERDICT_REJECT ? 550 : 451,
                verdict->kind == PB_VERDICT_REJECT ? "5.7.1" : "4.7.1",
                verdict->text != NULL ? verdict->text : "Refused by policy");
      if (verdict->code != 0 && verdict->code / 100 == txn->reply_code / 100)
        txn->reply_code = (guint16) verdict->code;
      break;
    }
  smtp_session_enter_state (s, SMTP_STATE_BDAT);
}

void
smtp_cmd_bdat (SmtpSession *s, char *args)
{
  SmtpTxn *txn = s->txn;
  gint64 size;
  gboolean last;

  if (!smtp_parse_bdat (args, &size, &last))
    {
      /* The chunk's length is unknown: what follows is read as commands. */
      pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, "bad BDAT");
      smtp_reply (s, 501, "5.5.4", "Syntax: BDAT size [LAST]");
      return;
    }
  s->chunk_left = size;
  s->chunk_last = last;
  s->chunk_reply = NULL;
  /* However the chunk ends, the session returns to where it was: a BDAT
   * before HELO/EHLO (or before the EHLO due after STARTTLS) must never
   * stand in for it. */
  s->chunk_return = s->state;

  /* Check; a refused chunk is still read, then answered (RFC 3030 §2). */
  if (s->state != SMTP_STATE_HELO)
    s->chunk_reply = &reply_need_helo;
  else if (txn == NULL)
    s->chunk_reply = &reply_need_mail;
  else if (txn->accepted == 0)
    s->chunk_reply = &reply_no_rcpt;
  else if (txn->bdat_failed)
    s->chunk_reply = &reply_txn_failed;
  if (s->chunk_reply != NULL)
    {
      pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, s->chunk_reply->text);
      smtp_session_enter_state (s, SMTP_STATE_BDAT);
      return;
    }
  if (txn->data_started)
    {
      smtp_session_enter_state (s, SMTP_STATE_BDAT);
      return;
    }
  /* The first chunk: filter, then proceed. */
  txn->bdat = TRUE;
  smtp_filter (s, smtp_filter_new (s, PB_STAGE_DATA_START), bdat_start_filtered, NULL);
}

static void
bdat_chunk_end (SmtpSession *s)
{
  SmtpTxn *txn = s->txn;

  smtp_session_enter_state (s, (SmtpState) s->chunk_return);
  if (s->chunk_reply != NULL)
    {
      smtp_reply_error (s, s->chunk_reply);
      if (s->chunk_last && txn != NULL && txn->bdat_failed)
        smtp_session_reset_txn (s);
      s->chunk_reply = NULL;
      return;
    }
  if (txn->reply_code != 0)
    {
      txn_reply_failure (s);
      txn->bdat_failed = TRUE;
      if (s->chunk_last)
        smtp_session_reset_txn (s);
      return;
    }
  if (!s->chunk_last)
    {
      smtp_reply (s, 250, "2.0.0", "Ok: %" G_GINT64_FORMAT " octets received", txn->size);
      return;
    }
  {
    guint before = txn->hold->len;
    if (smtp_decoder_finish_raw (&txn->dec, txn->hold) == SMTP_DEC_BARE)
      {
        pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, "bare CR");
        smtp_reply (s, 521, "5.5.2", "Bare <CR> received (RFC 5321 §2.3.8), closing connection");
        return;
      }
    txn_content (s, txn->hold->len - before);
  }
  data_end (s);
}

/* ---- reading content ------------------------------------------------------------ */

static void
bare_refused (SmtpSession *s)
{
  pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, "bare LF or CR");
  pb_session_info (s->session, "bare LF or CR in message content (bare-lf = reject), closing");
  smtp_reply (s, 521, "5.5.2", "Bare <LF> or <CR> received (RFC 5321 §2.3.8), closing connection");
}

/* Reads what content is buffered. Returns with the state changed (the
 * content or chunk ended), with busy set, or when input ran out. */
void
smtp_data_pump (SmtpSession *s)
{
  PbConn *conn = s->conn;

  for (;;)
    {
      const guint8 *data;
      gsize n = pb_conn_peek (conn, &data);
      gsize used = 0;

      if (n == 0)
        {
          if (s->state == SMTP_STATE_BDAT && s->chunk_left == 0)
            {
              bdat_chunk_end (s);
              return;
            }
          if (pb_conn_read_status (conn) != PB_CONN_AGAIN)
            {
              pb_session_info (s->session, "connection lost while receiving a message");
              smtp_session_enter_state (s, SMTP_STATE_QUIT);
              pb_conn_close (conn);
            }
          return;
        }

      if (s->state == SMTP_STATE_BODY)
        {
          SmtpTxn *txn = s->txn;
          guint before = txn->hold->len;
          SmtpDecResult r = smtp_decoder_feed (&txn->dec, data, n, txn->hold, &used);

          pb_conn_consume (conn, used);
          txn_content (s, txn->hold->len - before);
          if (r == SMTP_DEC_BARE)
            {
              bare_refused (s);
              return;
            }
          if (r == SMTP_DEC_END)
            {
              data_end (s);
              return;
            }
          continue;
        }

      /* BDAT */
      if (s->chunk_left == 0)
        {
          bdat_chunk_end (s);
          return;
        }
      n = (gsize) MIN ((gint64) n, s->chunk_left);
      if (s->chunk_reply != NULL || s->txn->msg == NULL || s->txn->reply_code != 0)
        {
          used = n;
          if (s->chunk_reply == NULL)
            s->txn->size += (gint64) n;
        }
      else
        {
          SmtpTxn *txn = s->txn;
          guint before = txn->hold->len;

          if (smtp_decoder_feed (&txn->dec, data, n, txn->hold, &used) == SMTP_DEC_BARE)
            {
              pb_conn_consume (conn, used);
              bare_refused (s);
              return;
            }
          txn_content (s, txn->hold->len - before);
        }
      pb_conn_consume (conn, used);
      s->chunk_left -= (gint64) used;
    }
}
