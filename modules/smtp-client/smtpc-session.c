/* SPDX-License-Identifier: MIT */
/* SMTP client: one session with one server over a PbConn, from connect to QUIT. */
#include "config.h"
#include "smtpc.h"

#include <string.h>

/*
 * Every command that waits for a reply pushes an expectation; replies are
 * matched to expectations in order. That one mechanism serves both the
 * step-by-step dialogue and PIPELINING (RFC 2920 §3.1: the client may send
 * MAIL, every RCPT and DATA in one write and read the replies in order).
 *
 * Input is pulled from the PbConn with pb_conn_peek() and fed to the reply
 * parser; octets after a complete reply stay in the connection's buffer for
 * the next one.
 *
 * Deadlines (RFC 5321 §4.5.3.2): one timer, re-armed at each step with the
 * wait that step allows.
 */

typedef enum {
  EXPECT_GREETING = 1,
  EXPECT_EHLO,
  EXPECT_HELO,
  EXPECT_STARTTLS,
  EXPECT_AUTH,
  EXPECT_AUTH_USER,
  EXPECT_AUTH_PASS,
  EXPECT_RSET,
  EXPECT_MAIL,
  EXPECT_RCPT,
  EXPECT_DATA,
  EXPECT_DOT,
  EXPECT_QUIT
} Expect;

static const char *const expect_names[] = {
  [EXPECT_GREETING] = "greeting",
  [EXPECT_EHLO] = "EHLO",
  [EXPECT_HELO] = "HELO",
  [EXPECT_STARTTLS] = "STARTTLS",
  [EXPECT_AUTH] = "AUTH",
  [EXPECT_AUTH_USER] = "AUTH",
  [EXPECT_AUTH_PASS] = "AUTH",
  [EXPECT_RSET] = "RSET",
  [EXPECT_MAIL] = "MAIL FROM",
  [EXPECT_RCPT] = "RCPT TO",
  [EXPECT_DATA] = "DATA",
  [EXPECT_DOT] = "end of data",
  [EXPECT_QUIT] = "QUIT",
};

typedef enum {
  PHASE_CONNECTING,
  PHASE_OPENING,     /* greeting, EHLO, TLS, AUTH */
  PHASE_IDLE,
  PHASE_TXN,         /* MAIL .. DATA, and the wait for the final reply */
  PHASE_BODY,        /* streaming the message */
  PHASE_QUITTING,
  PHASE_DEAD
} Phase;

/* Octets of body queued before waiting for `drained` (the core's low-water mark). */
#define BODY_HIGH_WATER (32 * 1024)
#define BODY_CHUNK (64 * 1024)
#define QUIT_TIMEOUT_MS 10000

struct _SmtpcSession {
  gint ref;
  PbModule *module;
  const char *log_domain;
  SmtpcEndpoint ep;
  char *peer;                /* "host[address]:port" */
  char *said_by;             /* "host[address]" */
  PbConn *conn;
  GCancellable *cancel;
  Phase phase;
  SmtpcReplyParser parser;
  GQueue expect;
  SmtpcCaps caps;
  gboolean tls;
  gboolean need_rset;
  guint timer;
  Expect timer_for;          /* 0 while sending the body */
  gint64 timer_ms;
  guint messages;
  guint recipients;

  SmtpcOpenFunc open_done;
  gpointer open_data;

  /* The transaction. */
  SmtpcTransaction *txn;
  SmtpcSentFunc sent_done;
  gpointer sent_data;
  gboolean pipelined;
  gboolean need_utf8;
  GArray *send_list;         /* guint: recipient indexes to send */
  guint rcpt_written;
  guint rcpt_replied;
  GArray *accepted;          /* guint: indexes the server accepted */
  gboolean mail_replied;
  gboolean mail_ok;
  gboolean empty_data;       /* DATA accepted without recipients: "." sent, reply ignored */
  gboolean dot_sent;
  gboolean body_reading;
  gboolean body_wait_drain;
  gint64 body_offset;
  SmtpcStuffer stuffer;
  GString *out;
  guint complete_idle;

  SmtpcLostFunc lost;
  gpointer lost_data;
};

static void session_pull (SmtpcSession *s);
static void session_fail (SmtpcSession *s, guint code, const char *enhanced, gboolean try_next,
                          gboolean tls_failed, gboolean unreachable, const char *format, ...) G_GNUC_PRINTF (7, 8);

/* ---- endpoints and results -------------------------------------------- */

void
smtpc_endpoint_copy (SmtpcEndpoint *dst, const SmtpcEndpoint *src)
{
  *dst = *src;
  dst->host = g_strdup (src->host);
  dst->address = g_strdup (src->address);
  dst->user = g_strdup (src->user);
  dst->password = g_strdup (src->password);
  dst->helo_name = g_strdup (src->helo_name);
}

void
smtpc_endpoint_clear (SmtpcEndpoint *ep)
{
  g_free (ep->host);
  g_free (ep->address);
  g_free (ep->user);
  if (ep->password != NULL)
    {
      memset (ep->password, 0, strlen (ep->password));
      g_free (ep->password);
    }
  g_free (ep->helo_name);
  memset (ep, 0, sizeof *ep);
}

void
smtpc_result_set (SmtpcResult *r, guint code, const char *enhanced, const char *text, gboolean try_next)
{
  char *e = g_strdup (enhanced);
  char *t = g_strdup (text);

  smtpc_result_clear (r);
  r->code = code;
  r->enhanced = e;
  r->text = t;
  r->try_next = try_next;
}

void
smtpc_result_clear (SmtpcResult *r)
{
  g_free (r->enhanced);
  g_free (r->text);
  memset (r, 0, sizeof *r);
}

/* ---- life ------------------------------------------------------------- */

SmtpcSession *
smtpc_session_ref (SmtpcSession *s)
{
  g_atomic_int_inc (&s->ref);
  return s;
}

static void
session_stop_timer (SmtpcSession *s)
{
  if (s->timer != 0)
    g_source_remove (s->timer);
  s->timer = 0;
}

/* Lets go of the connection: no handler of ours fires after this. */
static void
session_drop_conn (SmtpcSession *s)
{
  if (s->conn == NULL)
    return;
  pb_conn_set_handlers (s->conn, NULL, NULL);
  pb_conn_close (s->conn);
  pb_conn_unref (s->conn);
  s->conn = NULL;
}

void
smtpc_session_abort (SmtpcSession *s)
{
  s->phase = PHASE_DEAD;
  session_stop_timer (s);
  g_cancellable_cancel (s->cancel);
  session_drop_conn (s);
  g_queue_clear (&s->expect);
  s->open_done = NULL;
  s->sent_done = NULL;
  s->lost = NULL;
  if (s->complete_idle != 0)
    {
      g_source_remove (s->complete_idle);
      s->complete_idle = 0;
      smtpc_session_unref (s);  /* the idle's reference */
    }
}

void
smtpc_session_unref (SmtpcSession *s)
{
  if (!g_atomic_int_dec_and_test (&s->ref))
    return;
  if (s->phase != PHASE_DEAD)
    smtpc_session_abort (s);
  smtpc_reply_parser_clear (&s->parser);
  g_queue_clear (&s->expect);
  g_clear_object (&s->cancel);
  if (s->send_list != NULL)
    g_array_unref (s->send_list);
  if (s->accepted != NULL)
    g_array_unref (s->accepted);
  if (s->out != NULL)
    g_string_free (s->out, TRUE);
  smtpc_endpoint_clear (&s->ep);
  g_free (s->peer);
  g_free (s->said_by);
  g_free (s);
}

gboolean
smtpc_session_is_usable (SmtpcSession *s)
{
  return s->phase == PHASE_IDLE && s->conn != NULL;
}

guint
smtpc_session_get_messages (SmtpcSession *s)
{
  return s->messages;
}

guint
smtpc_session_get_recipients (SmtpcSession *s)
{
  return s->recipients;
}

const SmtpcCaps *
smtpc_session_get_caps (SmtpcSession *s)
{
  return &s->caps;
}

gboolean
smtpc_session_is_tls (SmtpcSession *s)
{
  return s->tls;
}

const char *
smtpc_session_get_peer (SmtpcSession *s)
{
  return s->peer;
}

/* ---- helpers ---------------------------------------------------------- */

static gboolean
session_timed_out (gpointer data)
{
  SmtpcSession *s = data;
  guint secs = (guint) ((s->timer_ms + 999) / 1000);

  s->timer = 0;
  if (s->phase == PHASE_QUITTING)
    {
      smtpc_session_ref (s);
      smtpc_session_abort (s);
      smtpc_session_unref (s);  /* the quit's reference */
      smtpc_session_unref (s);
      return G_SOURCE_REMOVE;
    }
  if (s->phase == PHASE_CONNECTING || s->phase == PHASE_DEAD)
    return G_SOURCE_REMOVE;
  if (s->timer_for == 0)
    session_fail (s, 451, "4.4.2", TRUE, FALSE, FALSE, "timeout after %u s sending the message to %s", secs,
                  s->said_by);
  else
    session_fail (s, 451, "4.4.2", s->timer_for != EXPECT_DOT, FALSE, s->timer_for == EXPECT_GREETING,
                  "timeout after %u s waiting for %s's reply to %s", secs, s->said_by,
                  s->timer_for == EXPECT_GREETING ? "the connection (greeting)" : expect_names[s->timer_for]);
  return G_SOURCE_REMOVE;
}

static void
session_arm_timer (SmtpcSession *s, Expect what, gint64 ms)
{
  session_stop_timer (s);
  s->timer_for = what;
  s->timer_ms = ms > 0 ? ms : 300000;
  s->timer = pb_timeout_add ((guint) MIN (s->timer_ms, (gint64) G_MAXUINT), session_timed_out, s);
}

static gint64
timeout_for (SmtpcSession *s, Expect e)
{
  switch (e)
    {
    case EXPECT_DATA:
      return s->ep.timeouts.data_init;
    case EXPECT_DOT:
      return s->ep.timeouts.data_done;
    case EXPECT_QUIT:
      return MIN (s->ep.timeouts.command, QUIT_TIMEOUT_MS);
    default:
      return s->ep.timeouts.command;
    }
}

static Expect
expect_head (SmtpcSession *s)
{
  return (Expect) GPOINTER_TO_UINT (g_queue_peek_head (&s->expect));
}

/* After a reply: the timer now covers the next awaited reply, if any. */
static void
session_rearm (SmtpcSession *s)
{
  if (g_queue_is_empty (&s->expect))
    {
      /* While the body streams or a TLS handshake runs, their own deadline stands. */
      if (s->phase != PHASE_BODY && s->phase != PHASE_OPENING)
        session_stop_timer (s);
      return;
    }
  session_arm_timer (s, expect_head (s), timeout_for (s, expect_head (s)));
}

static void
session_send_line (SmtpcSession *s, Expect e, const char *line)
{
  g_log_structured (s->log_domain, G_LOG_LEVEL_DEBUG, "MESSAGE", "%s > %s", s->peer, line);
  pb_conn_write (s->conn, line, strlen (line));
  pb_conn_write (s->conn, "\r\n", 2);
  if (e != 0)
    {
      gboolean was_empty = g_queue_is_empty (&s->expect);
      g_queue_push_tail (&s->expect, GUINT_TO_POINTER (e));
      if (was_empty)
        session_arm_timer (s, e, timeout_for (s, e));
    }
}

/* Sends a line that must not appear in logs (AUTH payloads). */
static void
session_send_secret (SmtpcSession *s, Expect e, const char *line)
{
  gboolean was_empty = g_queue_is_empty (&s->expect);

  g_log_structured (s->log_domain, G_LOG_LEVEL_DEBUG, "MESSAGE", "%s > (credentials)", s->peer);
  pb_conn_write (s->conn, line, strlen (line));
  pb_conn_write (s->conn, "\r\n", 2);
  g_queue_push_tail (&s->expect, GUINT_TO_POINTER (e));
  if (was_empty)
    session_arm_timer (s, e, timeout_for (s, e));
}

/* "mx.example.org[192.0.2.1] said: 550 5.1.1 No such user (in reply to RCPT TO)" */
static char *
reply_text (SmtpcSession *s, const SmtpcReply *r, Expect e)
{
  g_autofree char *said = smtpc_reply_to_string (r);
  return g_strdup_printf ("%s said: %s (in reply to %s)", s->said_by, said, expect_names[e]);
}

static char *
reply_enhanced (const SmtpcReply *r)
{
  if (r->enhanced != NULL)
    return g_strdup (r->enhanced);
  return g_strdup_printf ("%u.0.0", r->code / 100);
}

/* A result from a reply; replies of a class that makes no sense here
 * (2xx or 3xx where a refusal was expected) are already sorted out. */
static void
result_from_reply (SmtpcSession *s, SmtpcResult *res, const SmtpcReply *r, Expect e)
{
  g_autofree char *text = reply_text (s, r, e);
  g_autofree char *enh = reply_enhanced (r);
  smtpc_result_set (res, r->code, enh, text, r->code / 100 == 4);
}

/* ---- ending ------------------------------------------------------------ */

static void
txn_complete (SmtpcSession *s)
{
  SmtpcTransaction *t = s->txn;
  SmtpcSentFunc done = s->sent_done;
  gpointer data = s->sent_data;

  s->txn = NULL;
  s->sent_done = NULL;
  if (s->phase == PHASE_TXN || s->phase == PHASE_BODY)
    s->phase = PHASE_IDLE;
  if (s->phase == PHASE_IDLE)
    session_stop_timer (s);
  for (guint i = 0; i < s->accepted->len; i++)
    {
      guint idx = g_array_index (s->accepted, guint, i);
      if (t->results[idx].code / 100 == 2)
        t->accepted++;
    }
  if (done != NULL)
    done (s, t, data);
}

/* Ends the session (the connection closes) and tells whoever waits: the
 * opener, the transaction (every recipient still without a result gets
 * this one), or the idle watcher. */
static void
session_fail (SmtpcSession *s, guint code, const char *enhanced, gboolean try_next, gboolean tls_failed,
              gboolean unreachable, const char *format, ...)
{
  Phase was = s->phase;
  g_autofree char *text = NULL;
  va_list ap;

  if (was == PHASE_DEAD)
    return;
  va_start (ap, format);
  text = g_strdup_vprintf (format, ap);
  va_end (ap);

  smtpc_session_ref (s);
  s->phase = PHASE_DEAD;
  session_stop_timer (s);
  g_cancellable_cancel (s->cancel);
  session_drop_conn (s);
  g_queue_clear (&s->expect);
  g_log_structured (s->log_domain, G_LOG_LEVEL_DEBUG, "MESSAGE", "%s: %s", s->peer, text);

  switch (was)
    {
    case PHASE_CONNECTING:
    case PHASE_OPENING:
      if (s->open_done != NULL)
        {
          SmtpcOpenFunc done = s->open_done;
          SmtpcResult r = { 0 };
          s->open_done = NULL;
          smtpc_result_set (&r, code, enhanced, text, try_next);
          done (s, &r, tls_failed, unreachable, s->open_data);
          smtpc_result_clear (&r);
        }
      break;
    case PHASE_TXN:
    case PHASE_BODY:
      if (s->txn != NULL)
        {
          for (guint i = 0; i < s->txn->n_rcpts; i++)
            if (s->txn->results[i].code == 0)
              smtpc_result_set (&s->txn->results[i], code, enhanced, text, try_next);
          txn_complete (s);
        }
      break;
    case PHASE_IDLE:
      if (s->lost != NULL)
        {
          SmtpcLostFunc lost = s->lost;
          s->lost = NULL;
          lost (s, s->lost_data);
        }
      break;
    case PHASE_QUITTING:
      smtpc_session_unref (s);  /* the quit's reference */
      break;
    case PHASE_DEAD:
      break;
    }
  smtpc_session_unref (s);
}

/* The connection ended under us. */
static void
session_lost (SmtpcSession *s, const char *why)
{
  Expect e = expect_head (s);

  if (s->phase == PHASE_QUITTING)
    {
      session_fail (s, 421, "4.4.2", FALSE, FALSE, FALSE, "closed");
      return;
    }
  if (s->phase == PHASE_IDLE)
    {
      session_fail (s, 421, "4.4.2", TRUE, FALSE, FALSE, "%s closed the idle connection", s->said_by);
      return;
    }
  if (s->phase == PHASE_OPENING && e == EXPECT_GREETING)
    {
      session_fail (s, 421, "4.4.2", TRUE, FALSE, TRUE, "connection to %s failed: closed before the greeting%s%s",
                    s->peer, why != NULL ? ": " : "", why != NULL ? why : "");
      return;
    }
  session_fail (s, 451, "4.4.2", !s->dot_sent, FALSE, FALSE, "lost connection with %s %s %s%s%s", s->said_by,
                s->phase == PHASE_BODY ? "while sending" : "while waiting for the reply to",
                s->phase == PHASE_BODY || e == 0 ? "the message" : expect_names[e], why != NULL ? ": " : "",
                why != NULL ? why : "");
}

/* ---- connection handlers ---------------------------------------------- */

static void
on_readable (PbConn *conn, gpointer data)
{
  session_pull (data);
}

static void body_read_next (SmtpcSession *s);

static void
on_drained (PbConn *conn, gpointer data)
{
  SmtpcSession *s = data;

  if (s->phase == PHASE_BODY && s->body_wait_drain)
    {
      s->body_wait_drain = FALSE;
      session_arm_timer (s, 0, s->ep.timeouts.data_block);
      body_read_next (s);
    }
}

static void
on_closed (PbConn *conn, const GError *error, gpointer data)
{
  SmtpcSession *s = data;

  /* The core lets go of the connection after this: so do we. */
  if (s->conn == conn)
    {
      s->conn = NULL;
      pb_conn_unref (conn);
    }
  session_lost (s, error != NULL ? error->message : NULL);
}

static const PbConnHandlers session_handlers = {
  .struct_size = sizeof (PbConnHandlers),
  .readable = on_readable,
  .drained = on_drained,
  .closed = on_closed,
};

/* ---- opening ---------------------------------------------------------- */

static void
session_ready (SmtpcSession *s)
{
  SmtpcOpenFunc done = s->open_done;

  s->phase = PHASE_IDLE;
  session_stop_timer (s);
  s->open_done = NULL;
  g_log_structured (s->log_domain, G_LOG_LEVEL_DEBUG, "MESSAGE", "%s: ready (%s%s%s)", s->peer,
                    s->caps.esmtp ? "ESMTP" : "SMTP", s->tls ? ", TLS" : "", s->caps.pipelining ? ", PIPELINING" : "");
  if (done != NULL)
    done (s, NULL, FALSE, FALSE, s->open_data);
}

static void
send_ehlo (SmtpcSession *s)
{
  g_autofree char *line = g_strdup_printf ("EHLO %s", s->ep.helo_name);
  session_send_line (s, EXPECT_EHLO, line);
}

static void
start_auth (SmtpcSession *s)
{
  gboolean plain, login;

  if (s->ep.auth == SMTPC_AUTH_NONE || s->ep.user == NULL)
    {
      session_ready (s);
      return;
    }
  if (!s->tls && !s->ep.auth_without_tls)
    {
      session_fail (s, 451, "4.7.0", TRUE, FALSE, FALSE,
                    "not sending credentials to %s without TLS (the server does not offer STARTTLS, "
                    "or security is none; auth-without-tls allows it)", s->said_by);
      return;
    }
  plain = s->ep.auth == SMTPC_AUTH_PLAIN || (s->ep.auth == SMTPC_AUTH_AUTO && s->caps.auth_plain);
  login = !plain && (s->ep.auth == SMTPC_AUTH_LOGIN || (s->ep.auth == SMTPC_AUTH_AUTO && s->caps.auth_login));
  if (!plain && !login)
    {
      if (s->caps.auth)
        {
          session_fail (s, 451, "4.7.0", TRUE, FALSE, FALSE,
                        "%s offers no authentication mechanism Pillarbox supports (PLAIN, LOGIN)", s->said_by);
          return;
        }
      /* AUTH not offered at all: the relay may not need it (RFC 4954 §4). */
      g_log_structured (s->log_domain, G_LOG_LEVEL_DEBUG, "MESSAGE", "%s: no AUTH offered; sending unauthenticated",
                        s->peer);
      session_ready (s);
      return;
    }
  if (plain)
    {
      /* RFC 4616: authzid NUL authcid NUL passwd, with the initial response (RFC 4954 §4). */
      gsize ul = strlen (s->ep.user), pl = strlen (s->ep.password != NULL ? s->ep.password : "");
      guint8 *raw = g_malloc (ul + pl + 2);
      char *b64;
      char *line;

      raw[0] = '\0';
      memcpy (raw + 1, s->ep.user, ul);
      raw[1 + ul] = '\0';
      memcpy (raw + 2 + ul, s->ep.password != NULL ? s->ep.password : "", pl);
      b64 = g_base64_encode (raw, ul + pl + 2);
      line = g_strdup_printf ("AUTH PLAIN %s", b64);
      session_send_secret (s, EXPECT_AUTH, line);
      memset (raw, 0, ul + pl + 2);
      memset (b64, 0, strlen (b64));
      memset (line, 0, strlen (line));
      g_free (raw);
      g_free (b64);
      g_free (line);
    }
  else
    session_send_line (s, EXPECT_AUTH_USER, "AUTH LOGIN");
}

static void
after_hello (SmtpcSession *s)
{
  if (!s->tls && (s->ep.tls == SMTPC_TLS_STARTTLS || s->ep.tls == SMTPC_TLS_OPPORTUNISTIC))
    {
      if (s->caps.starttls)
        {
          session_send_line (s, EXPECT_STARTTLS, "STARTTLS");
          return;
        }
      if (s->ep.tls == SMTPC_TLS_STARTTLS)
        {
          session_fail (s, 451, "4.7.4", TRUE, FALSE, FALSE, "TLS is required, but %s does not offer STARTTLS",
                        s->said_by);
          return;
        }
    }
  start_auth (s);
}

static void
on_tls_done (PbConn *conn, const GError *error, gpointer data)
{
  SmtpcSession *s = data;

  if (s->phase == PHASE_DEAD)
    {
      smtpc_session_unref (s);
      return;
    }
  if (error != NULL)
    session_fail (s, 451, "4.7.5", TRUE, TRUE, FALSE, "TLS handshake with %s failed: %s", s->said_by,
                  error->message);
  else
    {
      g_autofree char *desc = pb_conn_get_tls_description (conn);
      s->tls = TRUE;
      g_log_structured (s->log_domain, G_LOG_LEVEL_DEBUG, "MESSAGE", "%s: TLS established (%s)", s->peer,
                        desc != NULL ? desc : "TLS");
      smtpc_reply_parser_reset (&s->parser);
      if (s->ep.tls == SMTPC_TLS_IMPLICIT)
        {
          /* The greeting comes over TLS. */
          g_queue_push_tail (&s->expect, GUINT_TO_POINTER (EXPECT_GREETING));
          session_arm_timer (s, EXPECT_GREETING, s->ep.timeouts.command);
        }
      else
        {
          /* RFC 3207 §4.2: forget what was learnt before, say EHLO again. */
          memset (&s->caps, 0, sizeof s->caps);
          send_ehlo (s);
        }
      session_pull (s);
    }
  smtpc_session_unref (s);
}

static void
start_tls (SmtpcSession *s)
{
  /* The handshake is bounded by the command timeout. */
  session_arm_timer (s, EXPECT_STARTTLS, s->ep.timeouts.command);
  pb_conn_start_tls_client (s->conn, s->ep.host, s->ep.tls_verify, on_tls_done, smtpc_session_ref (s));
}

static void
on_opening_reply (SmtpcSession *s, Expect e, const SmtpcReply *r)
{
  guint cls = r->code / 100;
  g_autofree char *said = reply_text (s, r, e);

  switch (e)
    {
    case EXPECT_GREETING:
      if (cls != 2)
        {
          /* RFC 5321 §3.1: a 554 greeting means no service here; try elsewhere. */
          session_fail (s, r->code, r->enhanced, TRUE, FALSE, FALSE, "%s", said);
          return;
        }
      send_ehlo (s);
      return;
    case EXPECT_EHLO:
      if (cls == 2)
        {
          smtpc_caps_parse (&s->caps, r);
          after_hello (s);
        }
      else if (cls == 5 && r->code != 554 && !s->tls)
        {
          /* Not an ESMTP server: fall back to HELO (RFC 5321 §3.2). */
          g_autofree char *line = g_strdup_printf ("HELO %s", s->ep.helo_name);
          session_send_line (s, EXPECT_HELO, line);
        }
      else
        session_fail (s, r->code, r->enhanced, TRUE, FALSE, FALSE, "%s", said);
      return;
    case EXPECT_HELO:
      if (cls != 2)
        {
          session_fail (s, r->code, r->enhanced, TRUE, FALSE, FALSE, "%s", said);
          return;
        }
      memset (&s->caps, 0, sizeof s->caps);
      after_hello (s);
      return;
    case EXPECT_STARTTLS:
      if (cls == 2)
        start_tls (s);
      else if (s->ep.tls == SMTPC_TLS_STARTTLS)
        session_fail (s, 451, "4.7.4", TRUE, FALSE, FALSE, "TLS is required, but STARTTLS was refused: %s", said);
      else
        start_auth (s);  /* opportunistic: carry on in plain text (RFC 3207 §4.1) */
      return;
    case EXPECT_AUTH_USER:
    case EXPECT_AUTH_PASS:
      if (r->code == 334)
        {
          const char *v = e == EXPECT_AUTH_USER ? s->ep.user : (s->ep.password != NULL ? s->ep.password : "");
          char *b64 = g_base64_encode ((const guint8 *) v, strlen (v));
          session_send_secret (s, e == EXPECT_AUTH_USER ? EXPECT_AUTH_PASS : EXPECT_AUTH, b64);
          memset (b64, 0, strlen (b64));
          g_free (b64);
          return;
        }
      G_GNUC_FALLTHROUGH;
    case EXPECT_AUTH:
      if (cls == 2)
        {
          g_log_structured (s->log_domain, G_LOG_LEVEL_DEBUG, "MESSAGE", "%s: authenticated as %s", s->peer,
                            s->ep.user);
          session_ready (s);
          return;
        }
      /* A refusal of our credentials is ours to fix, not the message's:
       * always temporary (the mail waits until an administrator acts). */
      session_fail (s, 451, "4.7.8", TRUE, FALSE, FALSE, "authentication as %s failed: %s", s->ep.user, said);
      return;
    default:
      session_fail (s, 451, "4.5.0", TRUE, FALSE, FALSE, "unexpected reply from %s: %s", s->said_by, said);
      return;
    }
}

/* ---- transactions ----------------------------------------------------- */

static gboolean
address_is_sendable (const char *a)
{
  for (const guchar *p = (const guchar *) a; *p != '\0'; p++)
    if (*p <= ' ' || *p == '<' || *p == '>' || *p == 0x7f)
      return FALSE;
  return TRUE;
}

static gboolean
is_ascii (const char *a)
{
  for (const guchar *p = (const guchar *) a; *p != '\0'; p++)
    if (*p >= 0x80)
      return FALSE;
  return TRUE;
}

/* A parameter value from the queue (xtext, RFC 3461 §4): printable ASCII without spaces. */
static gboolean
param_is_sendable (const char *v)
{
  if (v == NULL || *v == '\0')
    return FALSE;
  for (const guchar *p = (const guchar *) v; *p != '\0'; p++)
    if (*p <= ' ' || *p >= 0x7f || *p == '=')
      return FALSE;
  return TRUE;
}

static void
send_mail (SmtpcSession *s)
{
  SmtpcTransaction *t = s->txn;
  GString *line = g_string_new (NULL);

  g_string_printf (line, "MAIL FROM:<%s>", t->mail_from);
  if (s->caps.size && t->size > 0)
    g_string_append_printf (line, " SIZE=%" G_GINT64_FORMAT, t->size);
  if (s->caps.dsn && t->ret != NULL && (g_ascii_strcasecmp (t->ret, "FULL") == 0 || g_ascii_strcasecmp (t->ret, "HDRS") == 0))
    g_string_append_printf (line, " RET=%s", t->ret);
  if (s->caps.dsn && param_is_sendable (t->envid))
    g_string_append_printf (line, " ENVID=%s", t->envid);
  if (s->need_utf8)
    g_string_append (line, " SMTPUTF8");
  session_send_line (s, EXPECT_MAIL, line->str);
  g_string_free (line, TRUE);
  s->messages++;
}

static void
send_rcpt (SmtpcSession *s)
{
  SmtpcTransaction *t = s->txn;
  guint i = g_array_index (s->send_list, guint, s->rcpt_written++);
  GString *line = g_string_new (NULL);
  const char *notify = t->notify != NULL ? t->notify[i] : NULL;
  const char *orcpt = t->orcpt != NULL ? t->orcpt[i] : NULL;

  g_string_printf (line, "RCPT TO:<%s>", t->rcpts[i]);
  if (s->caps.dsn && notify != NULL && param_is_sendable (notify))
    g_string_append_printf (line, " NOTIFY=%s", notify);
  if (s->caps.dsn && orcpt != NULL && *orcpt != '\0')
    {
      /* ORCPT is "addr-type;xtext"; the '=' test above does not apply to it. */
      gboolean ok = TRUE;
      for (const guchar *p = (const guchar *) orcpt; *p != '\0'; p++)
        ok = ok && *p > ' ' && *p < 0x7f;
      if (ok && strchr (orcpt, ';') != NULL)
        g_string_append_printf (line, " ORCPT=%s", orcpt);
    }
  session_send_line (s, EXPECT_RCPT, line->str);
  g_string_free (line, TRUE);
  s->recipients++;
}

static gboolean
complete_from_idle (gpointer data)
{
  SmtpcSession *s = data;

  s->complete_idle = 0;
  txn_complete (s);
  smtpc_session_unref (s);
  return G_SOURCE_REMOVE;
}

/* Every recipient got a result without a word sent: report from the loop. */
static void
txn_complete_later (SmtpcSession *s)
{
  s->complete_idle = pb_idle_add (complete_from_idle, smtpc_session_ref (s));
}

void
smtpc_session_send (SmtpcSession *s, SmtpcTransaction *t, SmtpcSentFunc done, gpointer user_data)
{
  gboolean utf8 = !is_ascii (t->mail_from);

  g_return_if_fail (s->phase == PHASE_IDLE && s->txn == NULL);

  s->txn = t;
  s->sent_done = done;
  s->sent_data = user_data;
  s->lost = NULL;
  s->phase = PHASE_TXN;
  t->accepted = 0;
  t->delivered = FALSE;
  for (guint i = 0; i < t->n_rcpts; i++)
    smtpc_result_clear (&t->results[i]);
  if (s->send_list == NULL)
    {
      s->send_list = g_array_new (FALSE, FALSE, sizeof (guint));
      s->accepted = g_array_new (FALSE, FALSE, sizeof (guint));
    }
  g_array_set_size (s->send_list, 0);
  g_array_set_size (s->accepted, 0);
  s->rcpt_written = s->rcpt_replied = 0;
  s->mail_replied = s->mail_ok = s->empty_data = s->dot_sent = FALSE;
  s->body_reading = s->body_wait_drain = FALSE;

  if (!address_is_sendable (t->mail_from) && *t->mail_from != '\0')
    {
      for (guint i = 0; i < t->n_rcpts; i++)
        smtpc_result_set (&t->results[i], 553, "5.1.7", "the sender address cannot be sent over SMTP", FALSE);
      txn_complete_later (s);
      return;
    }
  for (guint i = 0; i < t->n_rcpts; i++)
    {
      if (!address_is_sendable (t->rcpts[i]) || *t->rcpts[i] == '\0')
        {
          smtpc_result_set (&t->results[i], 553, "5.1.3", "the recipient address cannot be sent over SMTP", FALSE);
          continue;
        }
      utf8 = utf8 || !is_ascii (t->rcpts[i]);
      g_array_append_val (s->send_list, i);
    }
  s->need_utf8 = utf8;
  if (utf8 && !s->caps.smtputf8)
    {
      /* RFC 6531 §3.2: such a message cannot go to a server without SMTPUTF8. */
      g_autofree char *text = g_strdup_printf ("the message has non-ASCII addresses and %s does not support SMTPUTF8",
                                               s->said_by);
      for (guint k = 0; k < s->send_list->len; k++)
        smtpc_result_set (&t->results[g_array_index (s->send_list, guint, k)], 553, "5.6.7", text, TRUE);
      g_array_set_size (s->send_list, 0);
    }
  if (s->caps.size_limit > 0 && t->size > s->caps.size_limit)
    {
      /* RFC 1870 §6.2: do not send what the server said it would refuse. */
      g_autofree char *text = g_strdup_printf ("message of %" G_GINT64_FORMAT " octets exceeds %s's size limit of %"
                                               G_GINT64_FORMAT, t->size, s->said_by, s->caps.size_limit);
      for (guint k = 0; k < s->send_list->len; k++)
        smtpc_result_set (&t->results[g_array_index (s->send_list, guint, k)], 552, "5.3.4", text, TRUE);
      g_array_set_size (s->send_list, 0);
    }
  if (s->send_list->len == 0)
    {
      txn_complete_later (s);
      return;
    }

  s->pipelined = s->caps.pipelining;
  if (s->need_rset)
    {
      session_send_line (s, EXPECT_RSET, "RSET");
      s->need_rset = FALSE;
      if (!s->pipelined)
        {
          session_pull (s);
          return;
        }
    }
  send_mail (s);
  if (s->pipelined)
    {
      /* RFC 2920 §3.1: MAIL, the RCPTs and DATA in one write; the replies come in order. */
      while (s->rcpt_written < s->send_list->len)
        send_rcpt (s);
      session_send_line (s, EXPECT_DATA, "DATA");
    }
  session_pull (s);
}

static void
body_finish_write (SmtpcSession *s, gboolean eof)
{
  if (eof)
    smtpc_stuff_finish (&s->stuffer, s->out);
  if (s->out->len > 0)
    pb_conn_write (s->conn, s->out->str, s->out->len);
  g_string_truncate (s->out, 0);
}

static void
on_body_chunk (const guint8 *data, gsize len, gboolean eof, const GError *error, gpointer user_data)
{
  SmtpcSession *s = user_data;

  s->body_reading = FALSE;
  if (s->phase != PHASE_BODY || s->conn == NULL)
    {
      smtpc_session_unref (s);
      return;
    }
  if (error != NULL)
    {
      /* Closing without the final "." makes the server drop what it got. */
      session_fail (s, 451, "4.3.0", FALSE, FALSE, FALSE, "cannot read message %s: %s", s->txn->queue_id,
                    error->message);
      smtpc_session_unref (s);
      return;
    }
  if (len > 0)
    smtpc_stuff (&s->stuffer, data, len, s->out);
  s->body_offset += (gint64) len;
  body_finish_write (s, eof);
  if (eof)
    {
      s->phase = PHASE_TXN;
      s->dot_sent = TRUE;
      g_queue_push_tail (&s->expect, GUINT_TO_POINTER (EXPECT_DOT));
      session_arm_timer (s, EXPECT_DOT, s->ep.timeouts.data_done);
      session_pull (s);
    }
  else if (len == 0 && !eof)
    {
      /* A backend that returns nothing without the end: the message is shorter than promised. */
      session_fail (s, 451, "4.3.0", FALSE, FALSE, FALSE, "message %s ended early", s->txn->queue_id);
    }
  else
    {
      session_arm_timer (s, 0, s->ep.timeouts.data_block);
      if (pb_conn_get_output_pending (s->conn) >= BODY_HIGH_WATER)
        s->body_wait_drain = TRUE;
      else
        body_read_next (s);
    }
  smtpc_session_unref (s);
}

static void
body_read_next (SmtpcSession *s)
{
  s->body_reading = TRUE;
  s->txn->read (s->txn->read_source, s->body_offset, BODY_CHUNK, on_body_chunk, smtpc_session_ref (s));
}

static void
start_body (SmtpcSession *s)
{
  s->phase = PHASE_BODY;
  s->body_offset = 0;
  smtpc_stuffer_init (&s->stuffer);
  if (s->out == NULL)
    s->out = g_string_sized_new (BODY_CHUNK + BODY_CHUNK / 8);
  g_string_truncate (s->out, 0);
  session_arm_timer (s, 0, s->ep.timeouts.data_block);
  body_read_next (s);
}

/* The accepted recipients all share the reply to DATA or to the final ".". */
static void
results_for_accepted (SmtpcSession *s, const SmtpcReply *r, Expect e)
{
  for (guint i = 0; i < s->accepted->len; i++)
    result_from_reply (s, &s->txn->results[g_array_index (s->accepted, guint, i)], r, e);
}

static void
on_txn_reply (SmtpcSession *s, Expect e, const SmtpcReply *r)
{
  SmtpcTransaction *t = s->txn;
  guint cls = r->code / 100;

  switch (e)
    {
    case EXPECT_RSET:
      if (!s->pipelined && s->phase == PHASE_TXN)
        send_mail (s);
      return;
    case EXPECT_MAIL:
      s->mail_replied = TRUE;
      s->mail_ok = cls == 2;
      if (!s->mail_ok)
        {
          SmtpcReply copy = *r;
          /* A 3xx here is nonsense: treat it as a temporary failure. */
          if (cls != 4 && cls != 5)
            copy.code = 451;
          for (guint k = 0; k < s->send_list->len; k++)
            result_from_reply (s, &t->results[g_array_index (s->send_list, guint, k)], &copy, e);
          s->need_rset = TRUE;
          return;
        }
      if (!s->pipelined)
        send_rcpt (s);
      return;
    case EXPECT_RCPT:
      {
        guint i = g_array_index (s->send_list, guint, s->rcpt_replied++);
        if (s->mail_ok)
          {
            if (cls == 2)
              g_array_append_val (s->accepted, i);
            else
              {
                SmtpcReply copy = *r;
                if (cls != 4 && cls != 5)
                  copy.code = 451;
                result_from_reply (s, &t->results[i], &copy, e);
              }
          }
        if (!s->pipelined && s->mail_ok)
          {
            if (s->rcpt_written < s->send_list->len)
              send_rcpt (s);
            else if (s->accepted->len > 0)
              session_send_line (s, EXPECT_DATA, "DATA");
            else
              s->need_rset = TRUE;
          }
        return;
      }
    case EXPECT_DATA:
      if (r->code == 354)
        {
          if (!s->mail_ok || s->accepted->len == 0)
            {
              /* RFC 2920 §3.1: DATA accepted with no valid recipient: end the empty message. */
              s->empty_data = TRUE;
              s->need_rset = TRUE;
              pb_conn_write (s->conn, ".\r\n", 3);
              g_queue_push_tail (&s->expect, GUINT_TO_POINTER (EXPECT_DOT));
              return;
            }
          start_body (s);
          return;
        }
      if (s->mail_ok && s->accepted->len > 0)
        {
          SmtpcReply copy = *r;
          if (cls != 4 && cls != 5)
            copy.code = 451;
          results_for_accepted (s, &copy, e);
        }
      s->need_rset = TRUE;
      return;
    case EXPECT_DOT:
      if (s->empty_data)
        return;
      {
        SmtpcReply copy = *r;
        if (cls != 2 && cls != 4 && cls != 5)
          copy.code = 451;
        results_for_accepted (s, &copy, e);
        t->delivered = cls == 2;
      }
      return;
    default:
      return;
    }
}

/* ---- replies ---------------------------------------------------------- */

static void
session_reply (SmtpcSession *s, SmtpcReply *r)
{
  Expect e = (Expect) GPOINTER_TO_UINT (g_queue_pop_head (&s->expect));

  {
    /* The core decides whether debug lines are shown (pillarboxd -v). */
    g_autofree char *str = smtpc_reply_to_string (r);
    g_log_structured (s->log_domain, G_LOG_LEVEL_DEBUG, "MESSAGE", "%s < %s", s->peer, str);
  }

  if (e == 0)
    {
      g_autofree char *said = smtpc_reply_to_string (r);
      if (s->phase == PHASE_BODY && s->txn != NULL)
        {
          /* A reply before the end of the data: the server gave up on it. */
          g_autofree char *text = reply_text (s, r, EXPECT_DOT);
          g_autofree char *enh = reply_enhanced (r);
          guint code = r->code / 100 == 5 ? r->code : 451;
          session_fail (s, code, enh, code / 100 == 4, FALSE, FALSE, "%s", text);
          return;
        }
      session_fail (s, 421, "4.4.2", TRUE, FALSE, FALSE, "%s sent an unexpected reply: %s", s->said_by, said);
      return;
    }

  if (e == EXPECT_QUIT)
    {
      session_fail (s, 221, NULL, FALSE, FALSE, FALSE, "closed");
      return;
    }

  if (r->code == 421 && e != EXPECT_DOT)
    {
      /* RFC 5321 §3.8: the server is closing the channel. */
      g_autofree char *text = reply_text (s, r, e);
      g_autofree char *enh = reply_enhanced (r);
      session_fail (s, 421, enh, TRUE, FALSE, s->phase == PHASE_OPENING, "%s", text);
      return;
    }

  if (s->phase == PHASE_OPENING)
    on_opening_reply (s, e, r);
  else if (s->phase == PHASE_TXN || s->phase == PHASE_BODY)
    {
      on_txn_reply (s, e, r);
      if (s->phase == PHASE_TXN && g_queue_is_empty (&s->expect))
        {
          if (r->code == 421)
            {
              /* 421 to the final ".": the results stand, the session does not. */
              session_drop_conn (s);
              s->phase = PHASE_DEAD;
              session_stop_timer (s);
              txn_complete (s);
              return;
            }
          txn_complete (s);
          return;
        }
    }
  if (s->phase != PHASE_DEAD)
    session_rearm (s);
}

static void
session_pull (SmtpcSession *s)
{
  smtpc_session_ref (s);
  while (s->conn != NULL && s->phase != PHASE_DEAD && s->phase != PHASE_CONNECTING)
    {
      const guint8 *data = NULL;
      gsize n = pb_conn_peek (s->conn, &data);
      gsize used = 0;
      SmtpcParseStatus st;

      if (n == 0)
        {
          if (pb_conn_read_status (s->conn) != PB_CONN_AGAIN)
            session_lost (s, NULL);
          break;
        }
      st = smtpc_reply_parser_feed (&s->parser, data, n, &used);
      pb_conn_consume (s->conn, used);
      if (st == SMTPC_PARSE_ERROR)
        {
          session_fail (s, 451, "4.5.0", !s->dot_sent, FALSE, FALSE, "%s does not speak SMTP: %s", s->said_by,
                        smtpc_reply_parser_get_error (&s->parser));
          break;
        }
      if (st == SMTPC_PARSE_DONE)
        {
          g_autoptr (SmtpcReply) r = smtpc_reply_parser_take (&s->parser);
          session_reply (s, r);
        }
    }
  smtpc_session_unref (s);
}

/* ---- connecting ------------------------------------------------------- */

/* "cannot connect to HOST port N: WHY" -> "WHY" */
static const char *
connect_reason (const char *message)
{
  const char *p = g_str_has_prefix (message, "cannot connect to ") ? strstr (message, ": ") : NULL;
  return p != NULL ? p + 2 : message;
}

static void
on_connected (PbConn *conn, const GError *error, gpointer data)
{
  SmtpcSession *s = data;

  if (s->phase == PHASE_DEAD)
    {
      if (conn != NULL)
        {
          pb_conn_close (conn);
          pb_conn_unref (conn);
        }
      smtpc_session_unref (s);
      return;
    }
  if (conn == NULL)
    {
      gboolean is_ip = g_hostname_is_ip_address (s->ep.address);
      g_autofree char *where = is_ip && g_strcmp0 (s->ep.host, s->ep.address) != 0
                                 ? g_strdup_printf ("%s[%s]:%u", s->ep.host, s->ep.address, s->ep.port)
                                 : g_strdup_printf ("%s:%u", s->ep.host, s->ep.port);
      session_fail (s, 451, "4.4.1", TRUE, FALSE, TRUE, "connection to %s failed: %s", where,
                    error != NULL ? connect_reason (error->message) : "unknown error");
      smtpc_session_unref (s);
      return;
    }
  s->conn = conn;
  g_free (s->peer);
  g_free (s->said_by);
  s->said_by = g_strdup_printf ("%s[%s]", s->ep.host, pb_conn_get_peer_ip (conn));
  s->peer = g_strdup_printf ("%s:%u", s->said_by, s->ep.port);
  s->phase = PHASE_OPENING;
  pb_conn_set_handlers (conn, &session_handlers, s);
  if (s->ep.tls == SMTPC_TLS_IMPLICIT)
    start_tls (s);
  else
    {
      g_queue_push_tail (&s->expect, GUINT_TO_POINTER (EXPECT_GREETING));
      /* RFC 5321 §4.5.3.2.1: 5 minutes for the greeting. */
      session_arm_timer (s, EXPECT_GREETING, s->ep.timeouts.command);
      session_pull (s);
    }
  smtpc_session_unref (s);
}

SmtpcSession *
smtpc_session_open (PbModule *module, const SmtpcEndpoint *ep, const char *log_domain, SmtpcOpenFunc done,
                    gpointer user_data)
{
  SmtpcSession *s = g_new0 (SmtpcSession, 1);

  s->ref = 1;
  s->module = module;
  s->log_domain = log_domain;
  smtpc_endpoint_copy (&s->ep, ep);
  if (s->ep.helo_name == NULL || *s->ep.helo_name == '\0')
    {
      g_free (s->ep.helo_name);
      s->ep.helo_name = g_strdup (pb_module_get_hostname (module));
    }
  s->said_by = g_strdup_printf ("%s", ep->host);
  s->peer = g_strdup_printf ("%s:%u", ep->host, ep->port);
  s->cancel = g_cancellable_new ();
  s->phase = PHASE_CONNECTING;
  s->open_done = done;
  s->open_data = user_data;
  smtpc_reply_parser_init (&s->parser);
  g_queue_init (&s->expect);
  pb_conn_connect (module, ep->address, ep->port, (guint) CLAMP (ep->timeouts.connect, 1, G_MAXUINT), s->cancel,
                   on_connected, smtpc_session_ref (s));
  return s;
}

/* ---- idle, QUIT ------------------------------------------------------- */

void
smtpc_session_watch_idle (SmtpcSession *s, SmtpcLostFunc lost, gpointer user_data)
{
  g_return_if_fail (s->phase == PHASE_IDLE);
  s->lost = lost;
  s->lost_data = user_data;
  /* Arms `readable`: a close or a 421 from the server is noticed at once. */
  session_pull (s);
}

void
smtpc_session_quit (SmtpcSession *s)
{
  if (s->phase != PHASE_IDLE || s->conn == NULL)
    {
      smtpc_session_abort (s);
      return;
    }
  s->lost = NULL;
  s->phase = PHASE_QUITTING;
  smtpc_session_ref (s);  /* held until the connection is closed */
  session_send_line (s, EXPECT_QUIT, "QUIT");
  session_pull (s);
}
