/* SPDX-License-Identifier: MIT */
/* One run of a collector: the POP3 client (RFC 1939, 2449, 2595, 5034), routing, policy and the exactly-once commit. */
#include "config.h"
#include "collector-private.h"

#include <string.h>

/*
 * A run, in order:
 *
 * 1. origin.list: the UIDLs this collector has stored, with when (the
 *    backend records them in each message's own commit transaction);
 * 2. connect, TLS (implicit or STLS), CAPA, login (USER/PASS, APOP or AUTH
 *    PLAIN), STAT, UIDL, LIST;
 * 3. for each message on the server, in order: known and due for deletion
 *    (leave-on-server) -> DELE; unknown and too big -> skipped, left
 *    there; unknown -> RETR: the header section is held (at most
 *    COLLECTOR_HOLD_MAX octets), routed and shown to data-end hooks, then
 *    the message streams into storage with its origin
 *    "pop3-collector/NAME/UIDL" and is committed. A commit refused with
 *    PB_STORE_ERROR_EXISTS means a run before us stored it already;
 * 4. QUIT (DELE takes effect only then, RFC 1939 §6), then origin.forget
 *    for the UIDLs the server no longer has.
 *
 * DELE is only ever sent for a message whose commit reported durable
 * success (in this run or an earlier one), so a crash at any point loses
 * nothing and stores nothing twice. The client never pipelines: one
 * command, one reply.
 */

/* Body lines longer than this reach storage in pieces of this size. */
#define LINE_PIECE 16384
/* A status line longer than this is not POP3 (RFC 2449 §4: 512; greetings
 * and error texts of some servers are longer). */
#define LINE_MAX_REPLY 8192
/* A line of the CAPA, UIDL or LIST answer: RFC 2449 §4 says 512 octets;
 * a UIDL line is at most 82 (RFC 1939 §7). */
#define LINE_MAX_LISTING 1024

typedef enum {
  ST_START,         /* listing the known origins */
  ST_CONNECTING,
  ST_TLS,           /* a handshake runs: implicit TLS, or after STLS */
  ST_GREETING,
  ST_CAPA,
  ST_CAPA_LIST,
  ST_STLS,
  ST_USER,
  ST_PASS,
  ST_APOP,
  ST_AUTH,
  ST_STAT,
  ST_UIDL,
  ST_UIDL_LIST,
  ST_LIST,
  ST_LIST_LIST,
  ST_DELE,
  ST_RETR,
  ST_RETR_DATA,
  ST_WAIT,          /* routing, policy or a commit: input waits in the connection */
  ST_QUIT,
  ST_FORGET,
  ST_DONE
} RunState;

static const char *const state_names[] = {
  "start", "connecting", "TLS handshake", "greeting", "CAPA", "CAPA", "STLS", "USER", "PASS", "APOP", "AUTH",
  "STAT", "UIDL", "UIDL", "LIST", "LIST", "DELE", "RETR", "RETR", "a commit", "QUIT", "forget", "done"
};

typedef struct {
  guint number;
  char *uidl;
  gint64 size;                /* -1 until LIST told */
} Msg;

typedef struct {
  CollectorDoneFunc done;
  gpointer user_data;
} Waiter;

typedef struct {
  PbRecipient r;
  char *address;
  char *mailbox;
  char *headers;
} Rcpt;

struct _CollectorRun {
  gint ref;
  Collector *c;               /* NULL once the run is finished */
  GArray *waiters;            /* Waiter */
  RunState state;
  PbConn *conn;
  GCancellable *cancel;
  char *peer;                 /* "host[ip]:port" for logs */
  char *peer_ip;
  gboolean tls;
  gboolean tls_pending;       /* STLS accepted: start the handshake after consuming the reply */
  gboolean cap_stls;
  gboolean cap_sasl_plain;
  char *apop_stamp;
  GString *line;              /* the line being assembled */
  gint64 stat_count;          /* -1 before STAT */
  GArray *msgs;               /* Msg, in server order; at most COLLECTOR_MAX_LISTED */
  GHashTable *by_number;      /* message number -> index in msgs + 1, for LIST */
  guint listing_lines;        /* lines of the CAPA or LIST answer so far */
  gboolean listed;            /* UIDL and LIST completed: the server's whole list is known */
  GHashTable *known;          /* UIDL -> gint64 * first seen (unix) */
  guint next;
  CollectorCounts counts;
  GError *error;              /* set: QUIT after the message in hand, then fail */

  /* The message being fetched. */
  Msg *cur;
  GByteArray *hold;           /* its header section, until routed */
  gboolean in_headers;
  gboolean bol;
  gboolean prev_cr;
  gboolean ended;             /* its terminating "." was read */
  gboolean draining;          /* read to the end and drop it */
  gboolean default_tried;
  PbStoreMessage *smsg;
  char *mail_from;
  GPtrArray *addresses;       /* char *: what is routed */
  guint route_index;
  GPtrArray *rcpts;           /* Rcpt * */
  gint64 size;                /* octets of it read */
};

static void run_pull (CollectorRun *r);
static void run_process_next (CollectorRun *r);
static void run_begin_quit (CollectorRun *r);

static CollectorRun *
run_ref (CollectorRun *r)
{
  r->ref++;
  return r;
}

static void
rcpt_free (gpointer p)
{
  Rcpt *rc = p;
  g_free (rc->address);
  g_free (rc->mailbox);
  g_free (rc->headers);
  g_free (rc);
}

static void
run_clear_message (CollectorRun *r)
{
  if (r->smsg != NULL)
    pb_store_message_abort (g_steal_pointer (&r->smsg));
  g_clear_pointer (&r->hold, g_byte_array_unref);
  g_clear_pointer (&r->mail_from, g_free);
  g_clear_pointer (&r->addresses, g_ptr_array_unref);
  g_clear_pointer (&r->rcpts, g_ptr_array_unref);
  r->cur = NULL;
  r->in_headers = r->ended = r->draining = r->default_tried = r->prev_cr = FALSE;
  r->route_index = 0;
  r->size = 0;
}

static void
run_unref (CollectorRun *r)
{
  if (--r->ref > 0)
    return;
  run_clear_message (r);
  for (guint i = 0; i < r->msgs->len; i++)
    g_free (g_array_index (r->msgs, Msg, i).uidl);
  g_array_unref (r->msgs);
  g_hash_table_unref (r->by_number);
  g_array_unref (r->waiters);
  g_hash_table_unref (r->known);
  g_string_free (r->line, TRUE);
  g_clear_object (&r->cancel);
  g_clear_error (&r->error);
  g_free (r->peer);
  g_free (r->peer_ip);
  g_free (r->apop_stamp);
  g_free (r);
}

static const char *
run_name (CollectorRun *r)
{
  return r->c != NULL ? r->c->name : "?";
}

static void
run_drop_conn (CollectorRun *r)
{
  if (r->conn == NULL)
    return;
  pb_conn_set_handlers (r->conn, NULL, NULL);
  pb_conn_close (r->conn);
  g_clear_pointer (&r->conn, pb_conn_unref);
}

/* The end: every waiter hears the outcome once; the collector may run again. */
static void
run_complete (CollectorRun *r, const GError *error)
{
  Collector *c = r->c;
  g_autoptr (GArray) waiters = NULL;

  if (c == NULL)
    return;
  r->state = ST_DONE;
  g_cancellable_cancel (r->cancel);
  run_drop_conn (r);
  run_clear_message (r);
  if (error != NULL)
    g_warning ("collector %s: run failed (%u new, %u skipped, %u deleted): %s", c->name, r->counts.new_messages,
               r->counts.skipped, r->counts.deleted, error->message);
  else
    g_info ("collector %s: %u new, %u skipped, %u deleted", c->name, r->counts.new_messages, r->counts.skipped,
            r->counts.deleted);
  c->run = NULL;
  r->c = NULL;
  waiters = g_steal_pointer (&r->waiters);
  r->waiters = g_array_new (FALSE, FALSE, sizeof (Waiter));
  for (guint i = 0; i < waiters->len; i++)
    {
      Waiter *w = &g_array_index (waiters, Waiter, i);
      w->done (&r->counts, error, w->user_data);
    }
  run_unref (r);  /* the collector's reference */
}

static void G_GNUC_PRINTF (2, 3)
run_fail (CollectorRun *r, const char *format, ...)
{
  g_autoptr (GError) error = NULL;
  va_list ap;

  va_start (ap, format);
  error = g_error_new_valist (COLLECTOR_ERROR, 0, format, ap);
  va_end (ap);
  run_complete (r, error);
}

/* A failure that still lets the session end with QUIT, so that the DELEs
 * of messages stored before it take effect. */
static void G_GNUC_PRINTF (2, 3)
run_set_error (CollectorRun *r, const char *format, ...)
{
  va_list ap;

  if (r->error != NULL)
    return;
  va_start (ap, format);
  r->error = g_error_new_valist (COLLECTOR_ERROR, 0, format, ap);
  va_end (ap);
}

static void G_GNUC_PRINTF (3, 4)
run_send (CollectorRun *r, RunState next, const char *format, ...)
{
  g_autofree char *line = NULL;
  va_list ap;

  va_start (ap, format);
  line = g_strdup_vprintf (format, ap);
  va_end (ap);
  /* Never log credentials: PASS, APOP and AUTH lines are named only. */
  if (next == ST_PASS || next == ST_APOP || next == ST_AUTH)
    g_debug ("collector %s: > %s ...", run_name (r), state_names[next]);
  else
    g_debug ("collector %s: > %s", run_name (r), line);
  pb_conn_write (r->conn, line, strlen (line));
  pb_conn_write (r->conn, "\r\n", 2);
  memset (line, 0, strlen (line));
  r->state = next;
}

static gboolean
run_is_reading (CollectorRun *r)
{
  return r->c != NULL && r->conn != NULL && r->state >= ST_GREETING && r->state <= ST_QUIT && r->state != ST_WAIT;
}

/* ---- the end of the session ----------------------------------------------- */

static void
forget_done (GVariant *result, const GError *error, gpointer data)
{
  CollectorRun *r = data;

  if (r->c != NULL)
    {
      if (error != NULL)
        g_warning ("collector %s: cannot drop the records of messages gone from the server: %s", r->c->name,
                   error->message);
      else if (result != NULL && g_variant_get_uint64 (result) > 0)
        g_debug ("collector %s: %" G_GUINT64_FORMAT " UIDs gone from the server forgotten", r->c->name,
                 g_variant_get_uint64 (result));
      run_complete (r, r->error);
    }
  run_unref (r);
}

/* After a complete listing: the records of UIDLs the server no longer has
 * are dropped (their messages were deleted there), and so are the
 * warnings remembered for them. */
static void
run_finish (CollectorRun *r)
{
  g_autoptr (GHashTable) present = g_hash_table_new (g_str_hash, g_str_equal);
  GVariantBuilder b;
  GHashTableIter it;
  gpointer key;
  guint stale = 0;

  run_drop_conn (r);
  if (!r->listed)
    {
      run_complete (r, r->error);
      return;
    }
  for (guint i = 0; i < r->msgs->len; i++)
    g_hash_table_add (present, g_array_index (r->msgs, Msg, i).uidl);
  g_hash_table_iter_init (&it, r->c->warned);
  while (g_hash_table_iter_next (&it, &key, NULL))
    if (!g_hash_table_contains (present, key))
      g_hash_table_iter_remove (&it);
  g_variant_builder_init (&b, G_VARIANT_TYPE ("as"));
  g_hash_table_iter_init (&it, r->known);
  while (g_hash_table_iter_next (&it, &key, NULL))
    if (!g_hash_table_contains (present, key))
      {
        g_autofree char *full = g_strconcat (r->c->origin_prefix, (const char *) key, NULL);
        g_variant_builder_add (&b, "s", full);
        stale++;
      }
  if (stale == 0)
    {
      g_variant_builder_clear (&b);
      run_complete (r, r->error);
      return;
    }
  r->state = ST_FORGET;
  pb_store_request (r->c->module, "origin.forget-keys", g_variant_new ("(as)", &b), forget_done, run_ref (r));
}

static void
run_begin_quit (CollectorRun *r)
{
  run_send (r, ST_QUIT, "QUIT");
}

/* The connection ended without QUIT. */
static void
run_lost (CollectorRun *r, const GError *error)
{
  const char *why = error != NULL ? error->message : "the server closed the connection";

  run_drop_conn (r);
  switch (r->state)
    {
    case ST_QUIT:
      run_finish (r);  /* it closed instead of answering QUIT: the session is over all the same */
      return;
    case ST_UIDL:
    case ST_UIDL_LIST:
    case ST_LIST:
    case ST_LIST_LIST:
      if (r->stat_count == 0)
        {
          /* Some servers (VPOP3 documents this old behaviour as socket error
           * 10503) close the connection on UIDL or LIST of an empty maildrop:
           * STAT said empty, so it is. */
          g_debug ("collector %s: %s closed on %s of an empty mailbox", run_name (r), r->peer, state_names[r->state]);
          for (guint i = 0; i < r->msgs->len; i++)
            g_free (g_array_index (r->msgs, Msg, i).uidl);
          g_array_set_size (r->msgs, 0);
          g_hash_table_remove_all (r->by_number);
          r->listed = TRUE;
          run_finish (r);
          return;
        }
      break;
    case ST_RETR:
    case ST_RETR_DATA:
    case ST_WAIT:
      if (r->cur != NULL && r->ended && r->smsg == NULL && !r->draining)
        {
          /* Its commit is under way and completes on its own; the next
           * run finds the record and fetches it no more. */
          run_fail (r, "connection to %s lost while message %u (UID %s) was being committed: %s", r->peer,
                    r->cur->number, r->cur->uidl, why);
          return;
        }
      if (r->cur != NULL)
        {
          /* Nothing of it is stored: the next run fetches it again. */
          run_fail (r, "connection to %s lost while fetching message %u (UID %s): %s; nothing of it was stored",
                    r->peer, r->cur->number, r->cur->uidl, why);
          return;
        }
      break;
    default:
      break;
    }
  run_fail (r, "connection to %s lost during %s: %s", r->peer != NULL ? r->peer : "the server",
            state_names[r->state], why);
}

/* ---- storing one message -------------------------------------------------- */

static gboolean
run_should_delete (CollectorRun *r, gint64 first_seen)
{
  gint64 days = r->c->leave_days;

  if (days == COLLECTOR_LEAVE_FOREVER)
    return FALSE;
  if (days == COLLECTOR_LEAVE_NO)
    return TRUE;
  return g_get_real_time () / G_USEC_PER_SEC - first_seen >= days * 86400;
}

static void
run_known_add (CollectorRun *r, const char *uidl, gint64 when)
{
  gint64 *v = g_new (gint64, 1);
  *v = when;
  g_hash_table_replace (r->known, g_strdup (uidl), v);
}

/* Skips the message in hand: the server keeps it. A reason is logged as a
 * warning the first time only (per UIDL, while the daemon runs). */
static void G_GNUC_PRINTF (2, 3)
run_skip (CollectorRun *r, const char *format, ...)
{
  g_autofree char *why = NULL;
  va_list ap;

  va_start (ap, format);
  why = g_strdup_vprintf (format, ap);
  va_end (ap);
  r->counts.skipped++;
  if (r->cur != NULL && !g_hash_table_contains (r->c->warned, r->cur->uidl))
    {
      g_hash_table_add (r->c->warned, g_strdup (r->cur->uidl));
      g_warning ("collector %s: message UID %s (%" G_GINT64_FORMAT " octets): %s; left on the server", r->c->name,
                 r->cur->uidl, MAX (r->cur->size, 0), why);
    }
  else if (r->cur != NULL)
    g_debug ("collector %s: message UID %s: %s; left on the server", r->c->name, r->cur->uidl, why);
}

static void
commit_done (const char *queue_id, const GError *error, gpointer data)
{
  CollectorRun *r = data;
  Msg *m = r->cur;

  if (r->c == NULL)
    {
      run_unref (r);
      return;
    }
  r->state = ST_RETR_DATA;
  if (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_EXISTS))
    {
      /* Stored by an earlier run whose record we had not seen: not twice. */
      g_info ("collector %s: message UID %s is stored already", r->c->name, m->uidl);
      run_known_add (r, m->uidl, g_get_real_time () / G_USEC_PER_SEC);
    }
  else if (error != NULL)
    run_set_error (r, "storing message UID %s failed: %s", m->uidl, error->message);
  else
    {
      GString *to = g_string_new (NULL);
      char size[32], n[16];

      for (guint i = 0; i < r->rcpts->len; i++)
        {
          Rcpt *rc = g_ptr_array_index (r->rcpts, i);
          g_string_append_printf (to, "%s%s", i > 0 ? "," : "", rc->mailbox != NULL ? rc->mailbox : rc->address);
        }
      pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_INFO, NULL, queue_id,
                      "collector %s: message UID %s from %s stored: from=<%s> size=%" G_GINT64_FORMAT " to=%s",
                      r->c->name, m->uidl, r->peer, r->mail_from, r->size, to->str);
      g_string_free (to, TRUE);
      r->counts.new_messages++;
      run_known_add (r, m->uidl, g_get_real_time () / G_USEC_PER_SEC);
      if (pb_stage_has_hooks (r->c->module, PB_STAGE_QUEUED))
        {
          PbPolicyRequest *req = pb_policy_request_new (NULL, PB_STAGE_QUEUED);
          g_snprintf (size, sizeof size, "%" G_GINT64_FORMAT, r->size);
          g_snprintf (n, sizeof n, "%u", r->rcpts->len);
          pb_policy_request_set_field (req, "queue-id", queue_id);
          pb_policy_request_set_field (req, "size", size);
          pb_policy_request_set_field (req, "mail-from", r->mail_from);
          pb_policy_request_set_field (req, "recipients", n);
          pb_policy_request_set_field (req, "service", "pop3-collector");
          pb_policy_request_run (req, NULL, NULL);
          pb_policy_request_unref (req);
        }
    }
  run_clear_message (r);
  /* DELE only now that the message is durable (or was already). */
  if (r->error == NULL && (error == NULL || g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_EXISTS))
      && run_should_delete (r, g_get_real_time () / G_USEC_PER_SEC))
    {
      r->cur = m;
      run_send (r, ST_DELE, "DELE %u", m->number);
    }
  else
    run_process_next (r);
  run_pull (r);
  run_unref (r);
}

static void
run_commit (CollectorRun *r)
{
  r->state = ST_WAIT;
  pb_store_message_commit (g_steal_pointer (&r->smsg), commit_done, run_ref (r));
}

/* The end of the message in hand (its "." was read). */
static void
run_message_end (CollectorRun *r)
{
  if (r->draining)
    {
      run_clear_message (r);
      run_process_next (r);
      return;
    }
  run_commit (r);
}

static void
run_store_write (CollectorRun *r, const void *data, gsize len)
{
  g_autoptr (GError) error = NULL;

  if (r->draining || len == 0)
    return;
  if (pb_store_message_write (r->smsg, data, len, &error))
    return;
  run_set_error (r, "storing message UID %s failed: %s", r->cur->uidl, error->message);
  pb_store_message_abort (g_steal_pointer (&r->smsg));
  r->draining = TRUE;
}

/* Writes a piece of content with CRLF line ends (storage keeps messages
 * as they travel, RFC 5322 §2.1); a bare LF from a sloppy server becomes CRLF. */
static void
run_store_piece (CollectorRun *r, const guint8 *data, gsize len, gboolean complete)
{
  if (complete && len > 0 && data[len - 1] == '\n' && !(len >= 2 ? data[len - 2] == '\r' : r->prev_cr))
    {
      run_store_write (r, data, len - 1);
      run_store_write (r, "\r\n", 2);
    }
  else
    run_store_write (r, data, len);
  r->prev_cr = len > 0 && data[len - 1] == '\r';
}

static char *
run_received (CollectorRun *r)
{
  g_autofree char *date = collector_rfc5322_date (g_get_real_time () / G_USEC_PER_SEC);

  /* RFC 5321 §4.4 trace field; the server is named as we reached it. */
  return g_strdup_printf ("Received: from %s ([%s])\r\n\tby %s with POP3 (pop3-collector %s, UID %s%s);\r\n\t%s\r\n",
                          r->c->host, r->peer_ip != NULL ? r->peer_ip : "unknown",
                          pb_module_get_hostname (r->c->module), r->c->name, r->cur->uidl,
                          r->tls ? ", TLS" : "", date);
}

static void
run_begin_store (CollectorRun *r, PbPolicyRequest *req)
{
  g_autoptr (GPtrArray) rp = g_ptr_array_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *origin = g_strconcat (r->c->origin_prefix, r->cur->uidl, NULL);
  g_autofree char *received = NULL;
  PbEnvelope env = { 0 };

  for (guint i = 0; i < r->rcpts->len; i++)
    g_ptr_array_add (rp, &((Rcpt *) g_ptr_array_index (r->rcpts, i))->r);
  g_ptr_array_add (rp, NULL);
  env.struct_size = sizeof env;
  env.mail_from = r->mail_from;
  env.recipients = (const PbRecipient *const *) rp->pdata;
  env.client_ip = r->peer_ip;
  env.auth_user = NULL;
  env.size_hint = MAX (r->cur->size, 0);
  env.origin = origin;
  r->smsg = pb_store_message_begin (r->c->module, &env, &error);
  r->state = ST_RETR_DATA;
  if (r->smsg == NULL)
    {
      run_set_error (r, "cannot store message UID %s: %s", r->cur->uidl, error->message);
      r->draining = TRUE;
    }
  else
    {
      const char *const *headers = req != NULL ? pb_policy_request_get_headers (req) : NULL;
      for (guint i = 0; headers != NULL && headers[i] != NULL; i++)
        {
          run_store_write (r, headers[i], strlen (headers[i]));
          run_store_write (r, "\r\n", 2);
        }
      received = run_received (r);
      run_store_write (r, received, strlen (received));
      run_store_write (r, r->hold->data, r->hold->len);
    }
  g_clear_pointer (&r->hold, g_byte_array_unref);
  if (r->ended)
    run_message_end (r);
}

static void
policy_done (PbPolicyRequest *req, const PbVerdict *verdict, gpointer data)
{
  CollectorRun *r = data;

  if (r->c == NULL || r->cur == NULL)
    {
      run_unref (r);
      return;
    }
  if (verdict->kind == PB_VERDICT_REJECT || verdict->kind == PB_VERDICT_TEMPFAIL)
    {
      run_skip (r, "refused by policy (%u %s %s)", verdict->code, verdict->enhanced != NULL ? verdict->enhanced : "",
                verdict->text != NULL ? verdict->text : "");
      r->state = ST_RETR_DATA;
      r->draining = TRUE;
      if (r->ended)
        run_message_end (r);
    }
  else
    run_begin_store (r, req);
  run_pull (r);
  run_unref (r);
}

static void
run_policy (CollectorRun *r)
{
  PbPolicyRequest *req;
  char size[32], n[16];

  if (!pb_stage_has_hooks (r->c->module, PB_STAGE_DATA_END))
    {
      run_begin_store (r, NULL);
      run_pull (r);
      return;
    }
  req = pb_policy_request_new (NULL, PB_STAGE_DATA_END);
  g_snprintf (size, sizeof size, "%" G_GINT64_FORMAT, MAX (r->cur->size, 0));
  g_snprintf (n, sizeof n, "%u", r->rcpts->len);
  pb_policy_request_set_field (req, "mail-from", r->mail_from);
  pb_policy_request_set_field (req, "size", size);
  pb_policy_request_set_field (req, "service", "pop3-collector");
  pb_policy_request_set_field (req, "recipients", n);
  pb_policy_request_run (req, policy_done, run_ref (r));
  pb_policy_request_unref (req);
}

static void
run_add_rcpt (CollectorRun *r, const char *address, const char *mailbox)
{
  Rcpt *rc;

  for (guint i = 0; i < r->rcpts->len; i++)
    {
      Rcpt *other = g_ptr_array_index (r->rcpts, i);
      if (mailbox != NULL ? g_strcmp0 (other->mailbox, mailbox) == 0
                          : other->mailbox == NULL && g_ascii_strcasecmp (other->address, address) == 0)
        return;
    }
  rc = g_new0 (Rcpt, 1);
  rc->address = g_strdup (address);
  rc->mailbox = g_strdup (mailbox);
  if (mailbox != NULL)
    /* RFC 5321 §4.4: Return-Path at final delivery; Delivered-To for loops. */
    rc->headers = g_strdup_printf ("Return-Path: <%s>\r\nDelivered-To: %s\r\n", r->mail_from, address);
  rc->r.struct_size = sizeof rc->r;
  rc->r.address = rc->address;
  rc->r.mailbox = rc->mailbox;
  rc->r.delivery_headers = rc->headers;
  g_ptr_array_add (r->rcpts, rc);
}

static void run_route_next (CollectorRun *r);

static void
routed (const PbRoute *route, gpointer data)
{
  CollectorRun *r = data;
  const char *address;

  if (r->c == NULL || r->cur == NULL)
    {
      run_unref (r);
      return;
    }
  address = g_ptr_array_index (r->addresses, r->route_index);
  r->route_index++;
  switch (route->kind)
    {
    case PB_ROUTE_LOCAL:
      for (guint i = 0; route->mailboxes[i] != NULL; i++)
        run_add_rcpt (r, route->address, route->mailboxes[i]);
      for (guint i = 0; route->remote[i] != NULL; i++)
        run_add_rcpt (r, route->remote[i], NULL);
      break;
    case PB_ROUTE_TEMPFAIL:
      run_set_error (r, "the directory could not be read for %s", address);
      break;
    default:
      /* A mailbox named as a user (no domain) is a user name. */
      if (!r->c->config->route_by_headers || r->default_tried)
        {
          if (strchr (address, '@') == NULL)
            run_add_rcpt (r, address, address);
          else
            g_debug ("collector %s: %s is not a local mailbox (%s)", r->c->name, address,
                     route->text != NULL ? route->text : "not local");
        }
      break;
    }
  run_route_next (r);
  run_unref (r);
}

static void
run_route_next (CollectorRun *r)
{
  const CollectorConfig *cfg = r->c->config;

  if (r->error != NULL)
    {
      run_skip (r, "%s", r->error->message);
      r->state = ST_RETR_DATA;
      r->draining = TRUE;
      if (r->ended)
        run_message_end (r);
      run_pull (r);
      return;
    }
  if (r->route_index < r->addresses->len)
    {
      pb_router_resolve (r->c->module, g_ptr_array_index (r->addresses, r->route_index), routed, run_ref (r));
      return;
    }
  if (r->rcpts->len == 0 && cfg->route_by_headers && !r->default_tried && *cfg->default_mailbox != '\0')
    {
      r->default_tried = TRUE;
      g_ptr_array_set_size (r->addresses, 0);
      g_ptr_array_add (r->addresses, g_strdup (cfg->default_mailbox));
      r->route_index = 0;
      pb_router_resolve (r->c->module, cfg->default_mailbox, routed, run_ref (r));
      return;
    }
  if (r->rcpts->len == 0)
    {
      run_skip (r, "no local recipient (%s)", cfg->route_by_headers ? "none in its headers and no default-mailbox"
                                                                     : "the mailbox does not exist");
      r->state = ST_RETR_DATA;
      r->draining = TRUE;
      if (r->ended)
        run_message_end (r);
      run_pull (r);
      return;
    }
  run_policy (r);
}

/* The header section is in hand: who sent it, whom it goes to. */
static void
run_headers_done (CollectorRun *r)
{
  const CollectorConfig *cfg = r->c->config;
  g_autoptr (GPtrArray) fields = collector_parse_headers (r->hold->data, r->hold->len);

  r->in_headers = FALSE;
  r->state = ST_WAIT;
  r->addresses = g_ptr_array_new_with_free_func (g_free);
  r->rcpts = g_ptr_array_new_with_free_func (rcpt_free);
  for (guint i = 0; i < fields->len; i++)
    {
      CollectorHeader *h = g_ptr_array_index (fields, i);

      if (r->mail_from == NULL && g_ascii_strcasecmp (h->name, "Return-Path") == 0)
        r->mail_from = collector_return_path (h->value);
      if (cfg->route_by_headers)
        for (guint k = 0; cfg->headers[k] != NULL; k++)
          if (g_ascii_strcasecmp (h->name, cfg->headers[k]) == 0)
            collector_extract_addresses (h->value, r->addresses);
    }
  for (guint i = 0; i < fields->len; i++)
    {
      CollectorHeader *h = g_ptr_array_index (fields, i);
      g_free (h->name);
      g_free (h->value);
      g_free (h);
    }
  /* No Return-Path: the sender is unknown, and a bounce must go nowhere. */
  if (r->mail_from == NULL)
    r->mail_from = g_strdup ("");
  if (!cfg->route_by_headers)
    g_ptr_array_add (r->addresses, g_strdup (cfg->mailbox));
  run_route_next (r);
}

/* One line of the message (or a piece of a long one), still dot-stuffed. */
static void
run_body_piece (CollectorRun *r, const guint8 *data, gsize len, gboolean complete)
{
  gboolean at_start = r->bol;

  r->bol = complete;
  if (at_start && len > 0 && data[0] == '.')
    {
      /* RFC 1939 §3: "." alone ends the message; a leading "." is doubled. */
      if (complete && ((len == 3 && data[1] == '\r') || len == 2))
        {
          r->ended = TRUE;
          if (r->in_headers)
            run_headers_done (r);
          else
            run_message_end (r);
          return;
        }
      data++;
      len--;
    }
  r->size += (gint64) len;
  if (r->draining)
    return;
  if (r->in_headers)
    {
      gboolean blank = at_start && complete && ((len == 2 && data[0] == '\r') || len == 1);

      if (complete && len > 0 && data[len - 1] == '\n' && !(len >= 2 && data[len - 2] == '\r'))
        {
          g_byte_array_append (r->hold, data, (guint) len - 1);
          g_byte_array_append (r->hold, (const guint8 *) "\r\n", 2);
        }
      else
        g_byte_array_append (r->hold, data, (guint) len);
      if (blank || r->hold->len >= COLLECTOR_HOLD_MAX)
        run_headers_done (r);
      return;
    }
  run_store_piece (r, data, len, complete);
}

/* ---- the protocol ------------------------------------------------------- */

static void
run_start_auth (CollectorRun *r)
{
  const Collector *c = r->c;

  switch ((CollectorAuth) c->config->auth)
    {
    case COLLECTOR_AUTH_USER:
      run_send (r, ST_USER, "USER %s", c->config->user);
      break;
    case COLLECTOR_AUTH_APOP:
      {
        g_autofree char *digest = NULL;
        if (r->apop_stamp == NULL)
          {
            run_fail (r, "%s offers no APOP timestamp in its greeting (auth = apop)", r->peer);
            return;
          }
        digest = collector_apop_digest (r->apop_stamp, c->password);
        run_send (r, ST_APOP, "APOP %s %s", c->config->user, digest);
        break;
      }
    case COLLECTOR_AUTH_PLAIN:
      {
        g_autofree char *b64 = collector_sasl_plain (c->config->user, c->password);
        /* RFC 5034 §4: the initial response may follow the mechanism. */
        run_send (r, ST_AUTH, "AUTH PLAIN %s", b64);
        memset (b64, 0, strlen (b64));
        break;
      }
    }
}

static void
tls_done (PbConn *conn, const GError *error, gpointer data)
{
  CollectorRun *r = data;

  if (r->c == NULL)
    {
      run_unref (r);
      return;
    }
  if (error != NULL)
    run_fail (r, "TLS handshake with %s failed: %s", r->peer, error->message);
  else
    {
      g_autofree char *desc = pb_conn_get_tls_description (conn);
      g_debug ("collector %s: TLS with %s (%s)", r->c->name, r->peer, desc != NULL ? desc : "TLS");
      r->tls = TRUE;
      g_string_truncate (r->line, 0);
      if (r->c->config->security == COLLECTOR_SECURITY_TLS)
        r->state = ST_GREETING;
      else
        /* RFC 2595 §4: capabilities may differ under TLS; ask again. */
        run_send (r, ST_CAPA, "CAPA");
      run_pull (r);
    }
  run_unref (r);
}

static void
run_start_tls (CollectorRun *r)
{
  r->state = ST_TLS;
  pb_conn_start_tls_client (r->conn, r->c->host, r->c->config->verify_certificate, tls_done, run_ref (r));
}

static void
run_after_capa (CollectorRun *r)
{
  if (r->c->config->security == COLLECTOR_SECURITY_STLS && !r->tls)
    {
      run_send (r, ST_STLS, "STLS");
      return;
    }
  if (r->c->config->auth == COLLECTOR_AUTH_PLAIN && !r->cap_sasl_plain)
    g_debug ("collector %s: %s does not list SASL PLAIN in CAPA; trying it anyway", r->c->name, r->peer);
  run_start_auth (r);
}

static Msg *
run_find_msg (CollectorRun *r, guint number)
{
  guint index;

  /* UIDL lists in order, so the index is usually number - 1; otherwise
   * the table (a scan per LIST line would be quadratic). */
  if (number >= 1 && number <= r->msgs->len && g_array_index (r->msgs, Msg, number - 1).number == number)
    return &g_array_index (r->msgs, Msg, number - 1);
  index = GPOINTER_TO_UINT (g_hash_table_lookup (r->by_number, GUINT_TO_POINTER (number)));
  return index > 0 ? &g_array_index (r->msgs, Msg, index - 1) : NULL;
}

static void
run_process_next (CollectorRun *r)
{
  Collector *c = r->c;

  if (r->error != NULL)
    {
      run_begin_quit (r);
      return;
    }
  while (r->next < r->msgs->len)
    {
      Msg *m = &g_array_index (r->msgs, Msg, r->next++);
      gint64 *seen = g_hash_table_lookup (r->known, m->uidl);

      if (seen != NULL)
        {
          if (run_should_delete (r, *seen))
            {
              run_send (r, ST_DELE, "DELE %u", m->number);
              r->cur = m;
              return;
            }
          continue;
        }
      r->cur = m;
      if (c->config->max_size > 0 && m->size > c->config->max_size)
        {
          run_skip (r, "larger than max-size (%" G_GINT64_FORMAT " octets)", c->config->max_size);
          r->cur = NULL;
          continue;
        }
      r->in_headers = TRUE;
      r->bol = TRUE;
      r->hold = g_byte_array_sized_new (4096);
      run_send (r, ST_RETR, "RETR %u", m->number);
      return;
    }
  r->cur = NULL;
  run_begin_quit (r);
}

/* One reply or listing line, without its CRLF. */
static void
run_line (CollectorRun *r, const char *line)
{
  gboolean ok = FALSE;
  const char *text = "";
  gboolean is_status = r->state != ST_CAPA_LIST && r->state != ST_UIDL_LIST && r->state != ST_LIST_LIST;

  g_debug ("collector %s: < %s", run_name (r), r->state == ST_AUTH ? "(AUTH reply)" : line);
  if (is_status && r->state == ST_AUTH && line[0] == '+' && (line[1] == ' ' || line[1] == '\0'))
    {
      /* A server that wants the response after an empty challenge. */
      g_autofree char *b64 = collector_sasl_plain (r->c->config->user, r->c->password);
      run_send (r, ST_AUTH, "%s", b64);
      memset (b64, 0, strlen (b64));
      return;
    }
  if (is_status && !collector_parse_status (line, &ok, &text))
    {
      run_fail (r, "%s does not speak POP3 (%s): \"%.80s\"", r->peer, state_names[r->state], line);
      return;
    }
  switch (r->state)
    {
    case ST_GREETING:
      if (!ok)
        {
          run_fail (r, "%s refused the session: %s", r->peer, text);
          return;
        }
      r->apop_stamp = collector_apop_timestamp (text);
      run_send (r, ST_CAPA, "CAPA");
      return;
    case ST_CAPA:
      if (ok)
        {
          r->state = ST_CAPA_LIST;
          r->listing_lines = 0;
        }
      else
        run_after_capa (r);  /* RFC 2449 is optional for servers */
      return;
    case ST_CAPA_LIST:
      if (strcmp (line, ".") == 0)
        run_after_capa (r);
      else if (++r->listing_lines > COLLECTOR_MAX_CAPA_LINES)
        run_fail (r, "%s sent more than %d CAPA lines; nothing was fetched or deleted", r->peer,
                  COLLECTOR_MAX_CAPA_LINES);
      else if (g_ascii_strcasecmp (line, "STLS") == 0)
        r->cap_stls = TRUE;
      else if (g_ascii_strncasecmp (line, "SASL ", 5) == 0)
        {
          g_auto (GStrv) mechs = g_strsplit (line + 5, " ", -1);
          for (guint i = 0; mechs[i] != NULL; i++)
            if (g_ascii_strcasecmp (mechs[i], "PLAIN") == 0)
              r->cap_sasl_plain = TRUE;
        }
      return;
    case ST_STLS:
      if (!ok)
        {
          run_fail (r, "%s refused STLS (security = stls requires it): %s", r->peer, text);
          return;
        }
      /* The handshake starts once this reply is consumed (run_pull()):
       * starting it discards the input buffer, RFC 2595 §4. */
      r->state = ST_TLS;
      r->tls_pending = TRUE;
      return;
    case ST_USER:
      if (!ok)
        {
          run_fail (r, "%s refused user %s: %s", r->peer, r->c->config->user, text);
          return;
        }
      run_send (r, ST_PASS, "PASS %s", r->c->password);
      return;
    case ST_PASS:
    case ST_APOP:
    case ST_AUTH:
      if (!ok)
        {
          run_fail (r, "login as %s at %s failed (%s): %s", r->c->config->user, r->peer, state_names[r->state], text);
          return;
        }
      run_send (r, ST_STAT, "STAT");
      return;
    case ST_STAT:
      {
        guint64 n = 0;
        char *end = NULL;
        if (!ok)
          {
            run_fail (r, "STAT failed at %s: %s", r->peer, text);
            return;
          }
        n = g_ascii_strtoull (text, &end, 10);
        r->stat_count = end != text ? (gint64) MIN (n, (guint64) G_MAXINT64) : -1;
        run_send (r, ST_UIDL, "UIDL");
        return;
      }
    case ST_UIDL:
      if (!ok)
        {
          run_fail (r, "%s does not support UIDL (%s); the collector needs it (RFC 1939 §7) to fetch each "
                    "message exactly once", r->peer, text);
          return;
        }
      r->state = ST_UIDL_LIST;
      return;
    case ST_UIDL_LIST:
      if (strcmp (line, ".") == 0)
        run_send (r, ST_LIST, "LIST");
      else
        {
          Msg m = { 0, NULL, -1 };
          if (r->msgs->len >= COLLECTOR_MAX_LISTED)
            {
              run_fail (r, "%s lists more than %d messages in its UIDL answer, more than one session may take; "
                        "nothing was fetched or deleted", r->peer, COLLECTOR_MAX_LISTED);
              return;
            }
          if (!collector_parse_uidl_line (line, &m.number, &m.uidl))
            {
              run_fail (r, "%s sent a malformed UIDL line: \"%.80s\"", r->peer, line);
              return;
            }
          g_array_append_val (r->msgs, m);
          if (!g_hash_table_contains (r->by_number, GUINT_TO_POINTER (m.number)))
            g_hash_table_insert (r->by_number, GUINT_TO_POINTER (m.number), GUINT_TO_POINTER (r->msgs->len));
        }
      return;
    case ST_LIST:
      if (!ok)
        {
          run_fail (r, "LIST failed at %s: %s", r->peer, text);
          return;
        }
      r->state = ST_LIST_LIST;
      r->listing_lines = 0;
      return;
    case ST_LIST_LIST:
      if (strcmp (line, ".") == 0)
        {
          r->listed = TRUE;
          g_debug ("collector %s: %u messages on %s", r->c->name, r->msgs->len, r->peer);
          run_process_next (r);
        }
      else
        {
          guint number;
          gint64 size;
          Msg *m;
          if (++r->listing_lines > COLLECTOR_MAX_LISTED)
            {
              run_fail (r, "%s lists more than %d messages in its LIST answer, more than one session may take; "
                        "nothing was fetched or deleted", r->peer, COLLECTOR_MAX_LISTED);
              return;
            }
          if (!collector_parse_list_line (line, &number, &size))
            {
              run_fail (r, "%s sent a malformed LIST line: \"%.80s\"", r->peer, line);
              return;
            }
          if ((m = run_find_msg (r, number)) != NULL)
            m->size = size;
        }
      return;
    case ST_DELE:
      if (ok)
        r->counts.deleted++;
      else
        g_warning ("collector %s: DELE of message UID %s refused: %s", r->c->name, r->cur->uidl, text);
      r->cur = NULL;
      run_process_next (r);
      return;
    case ST_RETR:
      if (!ok)
        {
          run_skip (r, "RETR refused: %s", text);
          run_clear_message (r);
          run_process_next (r);
          return;
        }
      r->state = ST_RETR_DATA;
      return;
    case ST_QUIT:
      if (!ok)
        g_warning ("collector %s: QUIT refused by %s (%s); deletions may not have taken effect", r->c->name, r->peer,
                   text);
      run_finish (r);
      return;
    default:
      g_return_if_reached ();
    }
}

/* Cuts input into lines (and long body lines into pieces) and hands them
 * on; returns how much of @data was used. Stops where the run stops reading. */
static gsize
run_feed (CollectorRun *r, const guint8 *data, gsize n)
{
  gsize used = 0;

  while (used < n && run_is_reading (r))
    {
      gboolean body = r->state == ST_RETR_DATA;
      gboolean listing = r->state == ST_CAPA_LIST || r->state == ST_UIDL_LIST || r->state == ST_LIST_LIST;
      gsize cap = body ? LINE_PIECE : listing ? LINE_MAX_LISTING : LINE_MAX_REPLY;
      const guint8 *p = data + used;
      const guint8 *lf = memchr (p, '\n', n - used);
      gsize take = lf != NULL ? (gsize) (lf - p) + 1 : n - used;
      gboolean complete = lf != NULL;

      if (r->line->len + take > cap)
        {
          if (!body)
            {
              run_fail (r, "%s sent a line longer than %zu octets (%s)", r->peer, cap, state_names[r->state]);
              return n;
            }
          take = cap - r->line->len;
          complete = FALSE;
        }
      g_string_append_len (r->line, (const char *) p, (gssize) take);
      used += take;
      if (!complete && r->line->len < cap)
        break;  /* the rest of the line is still on its way */
      if (body)
        run_body_piece (r, (const guint8 *) r->line->str, r->line->len, complete);
      else
        {
          gsize len = r->line->len;
          while (len > 0 && (r->line->str[len - 1] == '\n' || r->line->str[len - 1] == '\r'))
            len--;
          g_string_truncate (r->line, len);
          if (memchr (r->line->str, '\0', len) != NULL)
            {
              run_fail (r, "%s sent a NUL octet in a reply", r->peer);
              return n;
            }
          run_line (r, r->line->str);
        }
      if (r->c != NULL)
        g_string_truncate (r->line, 0);
    }
  return used;
}

static void
run_pull (CollectorRun *r)
{
  run_ref (r);
  while (run_is_reading (r))
    {
      const guint8 *data = NULL;
      gsize n = pb_conn_peek (r->conn, &data);
      gsize used;

      if (n == 0)
        {
          if (pb_conn_read_status (r->conn) != PB_CONN_AGAIN)
            run_lost (r, NULL);
          break;
        }
      used = run_feed (r, data, n);
      if (r->conn != NULL)
        pb_conn_consume (r->conn, used);
      if (r->tls_pending && r->conn != NULL && r->c != NULL)
        {
          r->tls_pending = FALSE;
          run_start_tls (r);
        }
    }
  run_unref (r);
}

static void
on_readable (PbConn *conn, gpointer data)
{
  run_pull (data);
}

static void
on_closed (PbConn *conn, const GError *error, gpointer data)
{
  CollectorRun *r = data;

  if (r->conn != conn)
    return;
  run_ref (r);
  pb_conn_set_handlers (conn, NULL, NULL);
  g_clear_pointer (&r->conn, pb_conn_unref);
  run_lost (r, error);
  run_unref (r);
}

static const PbConnHandlers run_handlers = {
  .struct_size = sizeof (PbConnHandlers),
  .readable = on_readable,
  .closed = on_closed,
};

static void
connected (PbConn *conn, const GError *error, gpointer data)
{
  CollectorRun *r = data;
  const CollectorConfig *cfg;

  if (r->c == NULL)
    {
      if (conn != NULL)
        {
          pb_conn_close (conn);
          pb_conn_unref (conn);
        }
      run_unref (r);
      return;
    }
  cfg = r->c->config;
  if (conn == NULL)
    {
      run_fail (r, "cannot connect to %s:%u: %s", r->c->host, r->c->port,
                error != NULL ? error->message : "unknown error");
      run_unref (r);
      return;
    }
  r->conn = conn;
  r->peer_ip = g_strdup (pb_conn_get_peer_ip (conn));
  g_free (r->peer);
  r->peer = g_strdup_printf ("%s[%s]:%u", r->c->host, r->peer_ip, r->c->port);
  pb_conn_set_handlers (conn, &run_handlers, r);
  pb_conn_set_idle_timeout (conn, (guint) MIN (cfg->command_timeout, G_MAXUINT));
  pb_conn_set_total_timeout (conn, (guint) MIN (cfg->run_timeout, G_MAXUINT));
  g_debug ("collector %s: connected to %s", r->c->name, r->peer);
  if (cfg->security == COLLECTOR_SECURITY_TLS)
    run_start_tls (r);
  else
    {
      r->state = ST_GREETING;
      run_pull (r);
    }
  run_unref (r);
}

static void
known_listed (GVariant *result, const GError *error, gpointer data)
{
  CollectorRun *r = data;
  Collector *c = r->c;

  if (c == NULL)
    {
      run_unref (r);
      return;
    }
  if (error != NULL)
    {
      if (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_SUPPORTED))
        run_fail (r, "the storage backend does not record message origins (origin.list), which exactly-once "
                  "collection needs: %s", error->message);
      else
        run_fail (r, "cannot read the UIDs collected before: %s", error->message);
      run_unref (r);
      return;
    }
  {
    GVariantIter it;
    const char *key;
    gint64 seen;
    gsize plen = strlen (c->origin_prefix);

    g_variant_iter_init (&it, result);
    while (g_variant_iter_next (&it, "(&sx)", &key, &seen))
      if (g_str_has_prefix (key, c->origin_prefix))
        run_known_add (r, key + plen, seen);
  }
  r->state = ST_CONNECTING;
  pb_conn_connect (c->module, c->host, c->port, (guint) MIN (c->config->connect_timeout, G_MAXUINT), r->cancel,
                   connected, run_ref (r));
  run_unref (r);
}

void
collector_run_join (Collector *c, CollectorDoneFunc done, gpointer user_data)
{
  Waiter w = { done, user_data };

  g_return_if_fail (c->run != NULL);
  g_array_append_val (c->run->waiters, w);
}

void
collector_run_start (Collector *c, CollectorDoneFunc done, gpointer user_data)
{
  CollectorRun *r;

  if (c->run != NULL)
    {
      /* Never two runs of one collector at once: a second request gets the
       * outcome of the run already under way. */
      g_debug ("collector %s: a run is in progress; waiting for it", c->name);
      collector_run_join (c, done, user_data);
      return;
    }
  r = g_new0 (CollectorRun, 1);
  r->ref = 1;   /* the collector's, dropped by run_complete() */
  r->c = c;
  r->waiters = g_array_new (FALSE, FALSE, sizeof (Waiter));
  r->line = g_string_sized_new (512);
  r->msgs = g_array_new (FALSE, FALSE, sizeof (Msg));
  r->by_number = g_hash_table_new (NULL, NULL);
  r->known = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  r->cancel = g_cancellable_new ();
  r->stat_count = -1;
  r->peer = g_strdup_printf ("%s:%u", c->host, c->port);
  r->state = ST_START;
  c->run = r;
  collector_run_join (c, done, user_data);
  g_debug ("collector %s: run starts", c->name);
  pb_store_request (c->module, "origin.list", g_variant_new ("(s)", c->origin_prefix), known_listed, run_ref (r));
}

void
collector_run_cancel (Collector *c)
{
  if (c->run == NULL)
    return;
  run_fail (c->run, "the server is stopping");
}
