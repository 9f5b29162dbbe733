/* SPDX-License-Identifier: MIT */
/* The queue manager: due remote recipients go to their connection's transport; retries, expiry, bounces. */
#include "config.h"
#include "core-private.h"
#include "transport.h"

#include <string.h>

/* Recipients one delivery carries at most; a transport may split further. */
#define QUEUE_MAX_RCPTS 100
/* Due entries read per scan. */
#define QUEUE_SCAN_LIMIT 2000

/* ---- connections: [connection NAME] ---- */

const PbSetting pb_connection_settings[] = {
  PB_SETTING_STRING (PbConnectionConfig, sender, "sender", "",
                     "The transport that sends this connection's mail (relay-sender or mx-sender); empty for a "
                     "connection that only collects."),
  PB_SETTING_STRING_LIST (PbConnectionConfig, collectors, "collectors", "",
                          "The collectors (remote POP3 mailboxes) run when the connection fires."),
  PB_SETTING_BOOL (PbConnectionConfig, send_immediately, "send-immediately", "true",
                   "Send new mail at once and retry deferred mail when due, outside deny windows "
                   "(VPOP3's \"send immediately when mail arrives\"). When false, mail waits for the schedule."),
  PB_SETTING_STRING (PbConnectionConfig, schedule, "schedule", "",
                     "When the connection fires (VPOP3's Connector Schedule): entries separated by ';', each "
                     "one of \"every 15m [from 08:00 to 18:00] [on mon-fri]\", \"at 07:30,12:00 [on DAYS]\" or "
                     "\"deny [from 12:00 to 13:00] [on DAYS]\" (a deny window holds mail back)."),
  PB_SETTING_BOOL (PbConnectionConfig, is_default, "default", "false",
                   "A default connection: `pillarbox connect-now` without a name fires the default ones."),
  PB_SETTINGS_END
};

static gboolean
connection_check (const void *config, GError **error)
{
  const PbConnectionConfig *c = config;
  g_autofree char *why = NULL;
  PbSchedule *s = pb_schedule_parse (c->schedule, &why);

  if (s == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG, "schedule: %s", why);
      return FALSE;
    }
  pb_schedule_free (s);
  if (*c->sender == '\0' && c->collectors[0] == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG, "a connection needs a sender or collectors");
      return FALSE;
    }
  return TRUE;
}

const PbSectionInfo pb_connection_section = {
  sizeof (PbSectionInfo), "connection", "A connection: one sender, collectors, and when they run.",
  pb_connection_settings, sizeof (PbConnectionConfig), connection_check
};

/* ---- the manager ---- */

typedef struct {
  struct _PbQueue *queue;
  char *name;
  const PbConnectionConfig *config;
  PbSchedule *schedule;
  PbTransport *transport;     /* NULL for collect-only connections */
  guint timer;                /* the next scheduled firing */
  gboolean firing;            /* a scheduled or manual run is delivering everything due */
  gint64 last_fired;
  guint sending;              /* deliveries in flight */
  guint unfire_timer;
} Connection;

typedef struct {
  Connection *connection;
  GPtrArray *entries;         /* Entry * */
} Group;

static void
group_free (gpointer p)
{
  Group *g = p;
  if (g == NULL)
    return;
  g_ptr_array_unref (g->entries);
  g_free (g);
}

static void
ready_free (gpointer p)
{
  g_queue_free_full (p, group_free);
}

/* A full scan reads every due entry and replaces the waiting lists; a scan
 * of new entries reads only those added since the greatest id read so far
 * (what a commit announced) and adds to them, so a busy queue is not read
 * whole for every burst of new mail. */
typedef enum { SCAN_NONE, SCAN_NEW, SCAN_FULL } ScanKind;

struct _PbQueue {
  PbGeneration *gen;          /* not a reference: the generation owns the manager */
  GPtrArray *connections;     /* Connection * */
  guint scan_timer;
  guint kick_idle;
  gboolean scanning;
  ScanKind scan_kind;         /* of the scan in progress */
  ScanKind rescan_kind;       /* asked for while it ran */
  ScanKind kick_kind;         /* asked for by the pending kick */
  guint64 last_id;            /* the greatest entry id any scan read */
  gboolean stopped;
  gboolean warned_no_transport;
  guint64 scan_number;        /* of the scan in progress (see in_flight) */
  guint wake_timer;           /* rescans at the first of wakeups */
  GArray *wakeups;            /* gint64 real µs, sorted: a transport takes mail again, a retry is due */
  GHashTable *ready;          /* busy key -> GQueue of Group *: read by the last scan, over the
                               * destination's concurrency; started as deliveries finish */
};

/* Entries being delivered, across generations: a reload must never send one
 * twice. The value is 0 while the delivery runs; once its result is durably
 * recorded it becomes scans_issued + 1 at that moment: a scan whose number is
 * lower was issued before the record and may still list the entry as due, so
 * the entry stays out of it. Scans issued later see the result and release it. */
static GHashTable *in_flight;
static guint64 scans_issued;
/* Collector runs under way per connection name, across generations ("collecting" in status). */
static GHashTable *collecting;
/* Deliveries in flight per "transport destination", across generations. */
static GHashTable *busy;

typedef struct {
  guint64 id;
  char *queue_id;
  char *sender;
  char *recipient;
  gint64 size;
  guint attempts;
  gint64 queued_at;
  char *notify;
  char *orcpt;
  char *ret;
  char *envid;
} Entry;

static void
entry_free (gpointer p)
{
  Entry *e = p;
  g_free (e->queue_id);
  g_free (e->sender);
  g_free (e->recipient);
  g_free (e->notify);
  g_free (e->orcpt);
  g_free (e->ret);
  g_free (e->envid);
  g_free (e);
}

static void
entry_free_nullable (gpointer p)
{
  if (p != NULL)
    entry_free (p);
}

static void
connection_free (gpointer p)
{
  Connection *c = p;
  if (c->timer != 0)
    g_source_remove (c->timer);
  if (c->unfire_timer != 0)
    g_source_remove (c->unfire_timer);
  pb_schedule_free (c->schedule);
  g_free (c->name);
  g_free (c);
}

static gint64
now_unix (void)
{
  return g_get_real_time () / G_USEC_PER_SEC;
}

static const char *
domain_of (const char *address)
{
  const char *at = strrchr (address, '@');
  return at != NULL ? at + 1 : address;
}

static PbTransport *
find_transport (PbGeneration *gen, const char *name)
{
  for (guint i = 0; i < gen->transports->len; i++)
    {
      PbTransport *t = g_ptr_array_index (gen->transports, i);
      if (strcmp (t->name, name) == 0)
        return t;
    }
  return NULL;
}

/* The connection whose transport carries this recipient: first in configuration order. */
static Connection *
route_entry (PbQueue *q, const Entry *e)
{
  for (guint i = 0; i < q->connections->len; i++)
    {
      Connection *c = g_ptr_array_index (q->connections, i);
      if (c->transport == NULL)
        continue;
      if (c->transport->spec.accepts == NULL
          || c->transport->spec.accepts (e->sender, e->recipient, c->transport->spec.user_data))
        return c;
    }
  return NULL;
}

static gboolean
connection_may_send (const Connection *c, gint64 now)
{
  if (pb_schedule_is_denied (c->schedule, now))
    return FALSE;
  return c->config->send_immediately || c->firing;
}

/* ---- delivery ---- */

typedef struct {
  PbGeneration *gen;          /* a reference */
  PbQueue *queue;             /* alive as long as gen */
  Connection *connection;
  GPtrArray *entries;         /* Entry * */
  char *busy_key;
  PbTransport *transport;
  char *mail_from;
} Attempt;

static void queue_start_attempt (PbQueue *q, Connection *c, GPtrArray *group);
static void queue_scan (PbQueue *q);
static void queue_kick (PbQueue *q, ScanKind kind);

/* When C's transport can next take mail for DOMAIN (real µs), or 0 for now. */
static gint64
transport_ready_at (const Connection *c, const char *domain)
{
  gint64 at;

  if (c->transport->spec.ready == NULL)
    return 0;
  at = c->transport->spec.ready (domain, c->transport->spec.user_data);
  return at > g_get_real_time () ? at : 0;
}

#define QUEUE_MAX_WAKEUPS 64
#define QUEUE_WAKEUP_SLACK_US (500 * 1000)

static void queue_wake_arm (PbQueue *q);

static gboolean
queue_wake_done (gpointer data)
{
  PbQueue *q = data;
  gint64 now = g_get_real_time ();

  q->wake_timer = 0;
  while (q->wakeups->len > 0 && g_array_index (q->wakeups, gint64, 0) <= now + 1000)
    g_array_remove_index (q->wakeups, 0);
  queue_scan (q);
  queue_wake_arm (q);
  return G_SOURCE_REMOVE;
}

static void
queue_wake_arm (PbQueue *q)
{
  gint64 delay_ms;

  if (q->wake_timer != 0)
    g_source_remove (q->wake_timer);
  q->wake_timer = 0;
  if (q->wakeups->len == 0 || q->stopped)
    return;
  delay_ms = (g_array_index (q->wakeups, gint64, 0) - g_get_real_time () + 999) / 1000;
  q->wake_timer = pb_timeout_add ((guint) CLAMP (delay_ms, 1, G_MAXINT), queue_wake_done, q);
}

/* Rescans at AT (real µs): mail a transport cannot take yet, or a retry that
 * falls due, goes then rather than at the next periodic scan. Close moments
 * share one scan; past QUEUE_MAX_WAKEUPS the periodic scan covers the latest. */
static void
queue_hold_until (PbQueue *q, gint64 at)
{
  guint i = 0, n = q->wakeups->len;

  if (q->stopped)
    return;
  while (i < n && g_array_index (q->wakeups, gint64, i) < at - QUEUE_WAKEUP_SLACK_US)
    i++;
  if (i < n && g_array_index (q->wakeups, gint64, i) <= at + QUEUE_WAKEUP_SLACK_US)
    return;
  if (n >= QUEUE_MAX_WAKEUPS)
    {
      if (i >= n)
        return;
      g_array_set_size (q->wakeups, n - 1);
    }
  g_array_insert_val (q->wakeups, i, at);
  if (i == 0)
    queue_wake_arm (q);
}

static void
attempt_free (Attempt *a)
{
  PbQueue *q = a->queue;

  a->connection->sending--;
  g_ptr_array_unref (a->entries);
  if (a->busy_key != NULL)
    {
      guint n = GPOINTER_TO_UINT (g_hash_table_lookup (busy, a->busy_key));
      GQueue *ready;

      if (n <= 1)
        g_hash_table_remove (busy, a->busy_key);
      else
        g_hash_table_insert (busy, g_strdup (a->busy_key), GUINT_TO_POINTER (n - 1));
      /* The destination has room again: the next group the last scan read
       * for it goes now, without waiting for another scan. */
      if (q != NULL && !q->stopped && a->gen == pb_generation_get_current ()
          && (ready = g_hash_table_lookup (q->ready, a->busy_key)) != NULL)
        {
          gint64 now = now_unix ();
          Group *group;

          while ((group = g_queue_pop_head (ready)) != NULL)
            {
              Entry *first = g_ptr_array_index (group->entries, 0);
              gint64 at = transport_ready_at (group->connection, domain_of (first->recipient));
              gboolean go = at == 0 && connection_may_send (group->connection, now);

              if (go)
                queue_start_attempt (q, group->connection, group->entries);
              group_free (group);
              if (at != 0)
                {
                  /* The rest waits with it; the hold timer's scan reads it afresh. */
                  queue_hold_until (q, at);
                  g_queue_clear_full (ready, group_free);
                }
              if (go)
                break;
            }
          if (g_queue_is_empty (ready))
            g_hash_table_remove (q->ready, a->busy_key);
        }
      g_free (a->busy_key);
    }
  g_free (a->mail_from);
  pb_generation_unref (a->gen);
  g_free (a);
}

static void
result_recorded (GVariant *result, const GError *error, gpointer data)
{
  guint64 *id = data;

  if (error != NULL)
    g_warning ("queue: cannot record a delivery result (entry %" G_GUINT64_FORMAT "): %s", *id, error->message);
  if (g_hash_table_contains (in_flight, id))
    g_hash_table_insert (in_flight, id, GSIZE_TO_POINTER ((gsize) (scans_issued + 1)));
  else
    g_free (id);
}

static gint64
retry_delay (PbGeneration *gen, guint attempts)
{
  /* VPOP3's "Sender Retry": the Nth retry waits the Nth interval; past the
   * end of the list, the last one repeats. */
  const GArray *schedule = gen->core_retry;
  guint n = schedule->len;
  gint64 ms = n > 0 ? g_array_index (schedule, gint64, MIN (attempts, n) - 1) : 300000;
  return MAX (ms / 1000, 1);
}

static void
record (PbGeneration *gen, const char *op, GVariant *args)
{
  pb_store_request_gen (gen, op, args, NULL, NULL);
}

static void result_recorded (GVariant *result, const GError *error, gpointer data);

/* The entry leaves in_flight only once its result is durable (result_recorded). */
static void
record_result (PbGeneration *gen, const Entry *e, GVariant *args)
{
  pb_store_request_gen (gen, "queue.result", args, result_recorded, g_memdup2 (&e->id, sizeof e->id));
}

/* Tells delivery-result hooks (metrics, logs of other modules) how one
 * recipient's attempt ended: "delivered", "bounced", "expired" or "deferred". */
static void
notify_result (PbGeneration *gen, const Entry *e, const char *transport, const char *result, const char *reply)
{
  PbPolicyRequest *req;
  g_autofree char *code = NULL;

  if (gen->hooks[PB_STAGE_DELIVERY_RESULT]->len == 0)
    return;
  req = pb_policy_request_new (NULL, PB_STAGE_DELIVERY_RESULT);
  pb_policy_request_set_field (req, "queue-id", e->queue_id);
  pb_policy_request_set_field (req, "mail-from", e->sender);
  pb_policy_request_set_field (req, "rcpt", e->recipient);
  pb_policy_request_set_field (req, "destination", domain_of (e->recipient));
  pb_policy_request_set_field (req, "transport", transport);
  pb_policy_request_set_field (req, "result", result);
  code = g_strndup (reply, strspn (reply, "0123456789"));
  pb_policy_request_set_field (req, "result-code", code);
  pb_policy_request_set_field (req, "result-text", reply);
  pb_policy_request_run (req, NULL, NULL);
  pb_policy_request_unref (req);
}

typedef struct {
  PbGeneration *gen;          /* a reference */
  char *queue_id, *sender, *recipient, *orcpt, *notify, *reply, *remote;
  gint64 until;
} DelayNotice;

static void
delay_marked (GVariant *result, const GError *error, gpointer data)
{
  DelayNotice *n = data;

  /* Only the request that set the mark sends: at most one notice per recipient. */
  if (error == NULL && g_variant_get_boolean (result))
    pb_bounce_send_delay (n->gen, n->queue_id, n->sender, n->recipient, n->orcpt, n->notify, n->reply, n->remote,
                          n->until);
  else if (error != NULL && !g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_SUPPORTED))
    g_warning ("queue: %s: cannot mark the delay notice to <%s>: %s", n->queue_id, n->sender, error->message);
  pb_generation_unref (n->gen);
  g_free (n->queue_id);
  g_free (n->sender);
  g_free (n->recipient);
  g_free (n->orcpt);
  g_free (n->notify);
  g_free (n->reply);
  g_free (n->remote);
  g_free (n);
}

/* core.delay-warning-time: a recipient still waiting that long gets its sender one notice. */
static void
maybe_warn_delay (PbGeneration *gen, const Entry *e, const char *reply, const char *remote, gint64 now)
{
  gint64 after = gen->core->delay_warning_time / 1000;
  DelayNotice *n;

  if (after <= 0 || now - e->queued_at < after || *e->sender == '\0')
    return;
  n = g_new0 (DelayNotice, 1);
  n->gen = pb_generation_ref (gen);
  n->queue_id = g_strdup (e->queue_id);
  n->sender = g_strdup (e->sender);
  n->recipient = g_strdup (e->recipient);
  n->orcpt = g_strdup (e->orcpt);
  n->notify = g_strdup (e->notify);
  n->reply = g_strdup (reply);
  n->remote = g_strdup (remote);
  n->until = e->queued_at + gen->core->max_queue_lifetime / 1000;
  pb_store_request_gen (gen, "queue.warn", g_variant_new ("(t)", e->id), delay_marked, n);
}

static void
delivery_done (PbDelivery *d, gpointer data)
{
  Attempt *a = data;
  PbGeneration *gen = a->gen;
  gint64 now = now_unix ();

  for (guint i = 0; i < d->n_recipients; i++)
    {
      Entry *e = g_ptr_array_index (a->entries, i);
      PbDeliveryResult *r = &d->results[i];
      g_autofree char *reply = NULL;
      guint attempts = e->attempts + 1;

      if (r->code == 0)
        reply = g_strdup ("451 4.4.0 no result from the transport");
      else
        reply = g_strdup_printf ("%u%s%s%s%s", r->code, r->enhanced != NULL ? " " : "",
                                 r->enhanced != NULL ? r->enhanced : "", r->text != NULL ? " " : "",
                                 r->text != NULL ? r->text : "");
      /* History is for mail still in the queue: a delivered entry keeps its
       * reply as the last one, and its message usually leaves the queue with
       * it; a cap's hold was no attempt. */
      if (r->code >= 300 && !(r->code < 500 && r->retry_at > 0))
        record (gen, "queue.attempt", g_variant_new ("(txss)", e->id, now, a->transport->name, reply));

      if (r->code >= 200 && r->code < 300)
        {
          record_result (gen, e, g_variant_new ("(tsusx)", e->id, "delivered", attempts, reply, (gint64) 0));
          pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, NULL, e->queue_id, "to=<%s> via %s: delivered: %s",
                          e->recipient, a->transport->name, reply);
          notify_result (gen, e, a->transport->name, "delivered", reply);
        }
      else if (r->code >= 500)
        {
          /* The bounce reads the message first: the result may release it. */
          pb_bounce_send (gen, e->queue_id, e->sender, e->recipient, e->orcpt, e->notify, reply, a->transport->name);
          record_result (gen, e, g_variant_new ("(tsusx)", e->id, "bounced", attempts, reply, (gint64) 0));
          pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, NULL, e->queue_id, "to=<%s> via %s: bounced: %s",
                          e->recipient, a->transport->name, reply);
          notify_result (gen, e, a->transport->name, "bounced", reply);
        }
      else if (r->retry_at > 0 && now - e->queued_at < gen->core->max_queue_lifetime / 1000)
        {
          /* Not an attempt: the transport held it back (a periodic cap). */
          gint64 next = MAX (r->retry_at, now + 1);
          record_result (gen, e, g_variant_new ("(tsusx)", e->id, "deferred", e->attempts, reply, next));
          if (a->queue != NULL && gen == pb_generation_get_current ())
            queue_hold_until (a->queue, next * G_USEC_PER_SEC);
          maybe_warn_delay (gen, e, reply, a->transport->name, now);
          pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, NULL, e->queue_id,
                          "to=<%s> via %s: held until %" G_GINT64_FORMAT " s from now: %s", e->recipient,
                          a->transport->name, next - now, reply);
          notify_result (gen, e, a->transport->name, "deferred", reply);
        }
      else if (now - e->queued_at >= gen->core->max_queue_lifetime / 1000)
        {
          g_autofree char *why = g_strdup_printf ("%s (gave up after %u attempts: the message was queued too long)",
                                                  reply, attempts);
          pb_bounce_send (gen, e->queue_id, e->sender, e->recipient, e->orcpt, e->notify, why, a->transport->name);
          record_result (gen, e, g_variant_new ("(tsusx)", e->id, "bounced", attempts, why, (gint64) 0));
          pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, NULL, e->queue_id, "to=<%s>: expired: %s", e->recipient,
                          reply);
          notify_result (gen, e, a->transport->name, "expired", why);
        }
      else
        {
          gint64 next = now + retry_delay (gen, attempts);
          if (a->queue != NULL && gen == pb_generation_get_current ())
            queue_hold_until (a->queue, next * G_USEC_PER_SEC);
          maybe_warn_delay (gen, e, reply, a->transport->name, now);
          record_result (gen, e, g_variant_new ("(tsusx)", e->id, "deferred", attempts, reply, next));
          pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, NULL, e->queue_id,
                          "to=<%s> via %s: deferred (attempt %u, next in %" G_GINT64_FORMAT " s): %s", e->recipient,
                          a->transport->name, attempts, next - now, reply);
          notify_result (gen, e, a->transport->name, "deferred", reply);
        }
    }
  /* When nothing read so far waits for this destination, a scan of new
   * entries (soon) picks what arrived meanwhile; otherwise attempt_free starts
   * the next. Retries come back through the wake-ups' full scans. */
  if (a->queue != NULL && !a->queue->stopped && gen == pb_generation_get_current ()
      && !g_hash_table_contains (a->queue->ready, a->busy_key))
    queue_kick (a->queue, SCAN_NEW);
  attempt_free (a);
}

static void
attempt_hooks_done (PbPolicyRequest *req, const PbVerdict *verdict, gpointer data)
{
  Attempt *a = data;
  const char *from = pb_policy_request_get_field (req, "mail-from");
  g_autoptr (GPtrArray) rcpts = g_ptr_array_new ();
  g_autoptr (GPtrArray) notify = g_ptr_array_new ();
  g_autoptr (GPtrArray) orcpt = g_ptr_array_new ();
  Entry *first = g_ptr_array_index (a->entries, 0);
  PbDelivery *d;

  for (guint i = 0; i < a->entries->len; i++)
    {
      Entry *e = g_ptr_array_index (a->entries, i);
      g_ptr_array_add (rcpts, e->recipient);
      g_ptr_array_add (notify, e->notify);
      g_ptr_array_add (orcpt, e->orcpt);
    }
  g_ptr_array_add (rcpts, NULL);
  g_ptr_array_add (notify, NULL);
  g_ptr_array_add (orcpt, NULL);
  d = pb_delivery_new (a->transport->module, first->queue_id, from != NULL ? from : first->sender,
                       domain_of (first->recipient), first->size, (const char *const *) rcpts->pdata,
                       delivery_done, a);
  pb_delivery_set_dsn (d, *first->ret != '\0' ? first->ret : NULL, *first->envid != '\0' ? first->envid : NULL,
                       (const char *const *) notify->pdata, (const char *const *) orcpt->pdata);
  if (verdict->kind == PB_VERDICT_REJECT || verdict->kind == PB_VERDICT_TEMPFAIL)
    {
      /* A delivery-attempt hook refused: record its answer as the result. */
      for (guint i = 0; i < d->n_recipients; i++)
        pb_delivery_set_result (d, i, verdict->code != 0 ? verdict->code : (verdict->kind == PB_VERDICT_REJECT ? 550 : 451),
                                verdict->enhanced, verdict->text != NULL ? verdict->text : "refused by policy");
      pb_delivery_complete (d);
      return;
    }
  a->transport->spec.deliver (d, a->transport->spec.user_data);
}

static void
queue_start_attempt (PbQueue *q, Connection *c, GPtrArray *group)
{
  Attempt *a = g_new0 (Attempt, 1);
  Entry *first;
  PbPolicyRequest *req;
  guint n;

  a->gen = pb_generation_ref (q->gen);
  a->queue = q;
  a->connection = c;
  c->sending++;
  a->transport = c->transport;
  a->entries = g_ptr_array_new_with_free_func (entry_free);
  while (group->len > 0)
    {
      Entry *e = g_ptr_array_steal_index (group, 0);
      g_ptr_array_add (a->entries, e);
      g_hash_table_insert (in_flight, g_memdup2 (&e->id, sizeof e->id), GSIZE_TO_POINTER (0));
    }
  first = g_ptr_array_index (a->entries, 0);
  a->busy_key = g_strdup_printf ("%s %s", c->transport->name, domain_of (first->recipient));
  n = GPOINTER_TO_UINT (g_hash_table_lookup (busy, a->busy_key));
  g_hash_table_insert (busy, g_strdup (a->busy_key), GUINT_TO_POINTER (n + 1));

  req = pb_policy_request_new (NULL, PB_STAGE_DELIVERY_ATTEMPT);
  pb_policy_request_set_field (req, "mail-from", first->sender);
  pb_policy_request_set_field (req, "queue-id", first->queue_id);
  pb_policy_request_set_field (req, "transport", c->transport->name);
  pb_policy_request_set_field (req, "destination", domain_of (first->recipient));
  pb_policy_request_run (req, attempt_hooks_done, a);
  pb_policy_request_unref (req);
}

static gint
compare_order (gconstpointer pa, gconstpointer pb, gpointer data)
{
  const Entry *a = *(Entry *const *) pa;
  const Entry *b = *(Entry *const *) pb;
  gint order = GPOINTER_TO_INT (data);

  if (order == 1 && a->size != b->size)   /* smallest first */
    return a->size < b->size ? -1 : 1;
  if (a->queued_at != b->queued_at)
    return (order == 2 ? -1 : 1) * (a->queued_at < b->queued_at ? -1 : 1);
  return a->id < b->id ? -1 : a->id > b->id;
}

/* Releases the entries whose results were recorded before scan SCAN was issued. */
static void
release_recorded (guint64 scan)
{
  GHashTableIter it;
  gpointer value;

  g_hash_table_iter_init (&it, in_flight);
  while (g_hash_table_iter_next (&it, NULL, &value))
    {
      guint64 tag = GPOINTER_TO_SIZE (value);
      if (tag != 0 && tag <= scan)
        g_hash_table_iter_remove (&it);
    }
}

static void
queue_due_done (GVariant *result, const GError *error, gpointer data)
{
  PbQueue *q = data;
  g_autoptr (GPtrArray) entries = g_ptr_array_new_with_free_func (entry_free_nullable);
  g_autoptr (GHashTable) groups = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_autoptr (GPtrArray) order = g_ptr_array_new_with_free_func (group_free);
  gint64 now = now_unix ();
  GVariantIter it;

  gboolean full = q->scan_kind == SCAN_FULL;

  q->scanning = FALSE;
  if (q->stopped)
    return;
  if (q->rescan_kind != SCAN_NONE)
    {
      /* A kick came while this scan ran: what it announced may be missing here. */
      queue_kick (q, q->rescan_kind);
      q->rescan_kind = SCAN_NONE;
    }
  release_recorded (q->scan_number);
  if (error != NULL)
    {
      if (!g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NO_BACKEND))
        g_warning ("queue: cannot read the queue: %s", error->message);
      return;
    }
  g_variant_iter_init (&it, result);
  {
    guint64 id;
    const char *qid, *sender, *rcpt, *notify, *orcpt, *ret, *envid;
    gint64 size, queued;
    guint32 attempts;
    while (g_variant_iter_next (&it, "(t&s&s&sxux&s&s&s&s)", &id, &qid, &sender, &rcpt, &size, &attempts, &queued,
                                &notify, &orcpt, &ret, &envid))
      {
        Entry *e;
        q->last_id = MAX (q->last_id, id);
        if (g_hash_table_contains (in_flight, &id))
          continue;   /* being delivered, or recorded after this scan was issued */
        e = g_new0 (Entry, 1);
        e->id = id;
        e->queue_id = g_strdup (qid);
        e->sender = g_strdup (sender);
        e->recipient = g_strdup (rcpt);
        e->size = size;
        e->attempts = attempts;
        e->queued_at = queued;
        e->notify = g_strdup (notify);
        e->orcpt = g_strdup (orcpt);
        e->ret = g_strdup (ret);
        e->envid = g_strdup (envid);
        g_ptr_array_add (entries, e);
      }
  }
  g_ptr_array_sort_with_data (entries, compare_order, GINT_TO_POINTER (q->gen->core->queue_order));

  /* Group by connection, message and destination domain, keeping the order. */
  for (guint i = 0; i < entries->len; i++)
    {
      Entry *e = g_ptr_array_index (entries, i);
      Connection *c = route_entry (q, e);
      g_autofree char *key = NULL;
      Group *group;

      if (c == NULL)
        {
          if (!q->warned_no_transport)
            g_warning ("queue: no connection's transport takes mail for <%s>; it stays queued "
                       "(enable relay-sender or mx-sender, and see [connection] in pillarbox.conf(5))", e->recipient);
          q->warned_no_transport = TRUE;
          continue;
        }
      if (!connection_may_send (c, now))
        continue;
      key = g_strdup_printf ("%s %s %s", c->name, e->queue_id, domain_of (e->recipient));
      group = g_hash_table_lookup (groups, key);
      if (group == NULL)
        {
          group = g_new0 (Group, 1);
          group->connection = c;
          group->entries = g_ptr_array_new_with_free_func (entry_free);
          g_hash_table_insert (groups, g_steal_pointer (&key), group);
          g_ptr_array_add (order, group);
        }
      if (group->entries->len < QUEUE_MAX_RCPTS)
        {
          g_ptr_array_index (entries, i) = NULL;
          g_ptr_array_add (group->entries, e);
        }
    }

  /* A full scan's view replaces the last one's: what waits is read afresh.
   * New entries join the end of what already waits. */
  if (full)
    g_hash_table_remove_all (q->ready);
  for (guint i = 0; i < order->len; i++)
    {
      Group *group = g_ptr_array_index (order, i);
      Entry *first = g_ptr_array_index (group->entries, 0);
      g_autofree char *busy_key = g_strdup_printf ("%s %s", group->connection->transport->name,
                                                   domain_of (first->recipient));
      gint64 at = transport_ready_at (group->connection, domain_of (first->recipient));

      if (at != 0)
        {
          queue_hold_until (q, at);
          continue;
        }
      /* Per-destination concurrency: the rest waits in order, and each
       * finished delivery to the destination starts the next. */
      if (GPOINTER_TO_UINT (g_hash_table_lookup (busy, busy_key)) >= (guint) q->gen->core->destination_concurrency)
        {
          GQueue *ready = g_hash_table_lookup (q->ready, busy_key);
          if (ready == NULL)
            {
              ready = g_queue_new ();
              g_hash_table_insert (q->ready, g_strdup (busy_key), ready);
            }
          g_queue_push_tail (ready, g_steal_pointer (&order->pdata[i]));
          continue;
        }
      queue_start_attempt (q, group->connection, group->entries);
    }
}

static void
queue_scan_kind (PbQueue *q, ScanKind kind)
{
  if (q->scanning || q->stopped)
    {
      q->rescan_kind = MAX (q->rescan_kind, kind);
      return;
    }
  q->scanning = TRUE;
  q->scan_kind = kind;
  q->scan_number = ++scans_issued;
  if (kind == SCAN_NEW && q->last_id > 0)
    pb_store_request_gen (q->gen, "queue.due-after",
                          g_variant_new ("(xut)", now_unix (), (guint32) QUEUE_SCAN_LIMIT, q->last_id), queue_due_done, q);
  else
    {
      q->scan_kind = SCAN_FULL;
      pb_store_request_gen (q->gen, "queue.due", g_variant_new ("(xu)", now_unix (), (guint32) QUEUE_SCAN_LIMIT),
                            queue_due_done, q);
    }
}

static void
queue_scan (PbQueue *q)
{
  queue_scan_kind (q, SCAN_FULL);
}

static gboolean
queue_kick_idle (gpointer data)
{
  PbQueue *q = data;
  ScanKind kind = q->kick_kind;

  q->kick_idle = 0;
  q->kick_kind = SCAN_NONE;
  queue_scan_kind (q, kind);
  return G_SOURCE_REMOVE;
}

static void
queue_kick (PbQueue *q, ScanKind kind)
{
  if (q == NULL || q->stopped)
    return;
  q->kick_kind = MAX (q->kick_kind, kind);
  /* A short timer coalesces the kicks of a burst of commits into one scan. */
  if (q->kick_idle == 0)
    q->kick_idle = pb_timeout_add (50, queue_kick_idle, q);
}

void
pb_queue_kick (PbQueue *q)
{
  queue_kick (q, SCAN_FULL);
}

void
pb_queue_kick_new (PbQueue *q)
{
  queue_kick (q, SCAN_NEW);
}

static gboolean
queue_periodic (gpointer data)
{
  queue_scan (data);
  return G_SOURCE_CONTINUE;
}

/* ---- connections firing ---- */

static void connection_arm (PbQueue *q, Connection *c);

static void
collector_done (PbCollectorRun *run, const GError *error, gpointer data)
{
  char *name = data;
  guint n = GPOINTER_TO_UINT (g_hash_table_lookup (collecting, name));

  if (n <= 1)
    g_hash_table_remove (collecting, name);
  else
    g_hash_table_insert (collecting, g_strdup (name), GUINT_TO_POINTER (n - 1));
  g_free (name);
  if (error != NULL)
    g_warning ("collector %s: %s", pb_collector_run_get_name (run), error->message);
  else
    g_info ("collector %s: done", pb_collector_run_get_name (run));
}

static gboolean
connection_unfire (gpointer data)
{
  Connection *c = data;
  c->firing = FALSE;
  c->unfire_timer = 0;
  return G_SOURCE_REMOVE;
}

void
pb_queue_fire (PbQueue *q, const char *name)
{
  for (guint i = 0; i < q->connections->len; i++)
    {
      Connection *c = g_ptr_array_index (q->connections, i);

      if (name != NULL ? strcmp (c->name, name) != 0 : !c->config->is_default)
        continue;
      g_info ("connection %s fires", c->name);
      c->last_fired = now_unix ();
      if (c->transport != NULL)
        {
          /* Everything due goes now, even if send-immediately is off; deny windows still hold. */
          c->firing = TRUE;
          if (c->unfire_timer != 0)
            g_source_remove (c->unfire_timer);
          c->unfire_timer = pb_timeout_add_seconds (60, connection_unfire, c);
          queue_scan (q);
        }
      for (guint k = 0; c->config->collectors[k] != NULL; k++)
        {
          PbCollector *col = NULL;
          for (guint j = 0; j < q->gen->collectors->len; j++)
            if (strcmp (((PbCollector *) g_ptr_array_index (q->gen->collectors, j))->name,
                        c->config->collectors[k]) == 0)
              col = g_ptr_array_index (q->gen->collectors, j);
          if (col == NULL)
            {
              g_warning ("connection %s: no collector named %s", c->name, c->config->collectors[k]);
              continue;
            }
          g_hash_table_insert (collecting, g_strdup (c->name),
                               GUINT_TO_POINTER (GPOINTER_TO_UINT (g_hash_table_lookup (collecting, c->name)) + 1));
          col->spec.run (pb_collector_run_new (col->name, collector_done, g_strdup (c->name)), col->spec.user_data);
        }
    }
}

static gboolean
connection_timer (gpointer data)
{
  Connection *c = data;

  c->timer = 0;
  if (!c->queue->stopped)
    {
      pb_queue_fire (c->queue, c->name);
      connection_arm (c->queue, c);
    }
  return G_SOURCE_REMOVE;
}

static void
connection_arm (PbQueue *q, Connection *c)
{
  gint64 now = now_unix ();
  gint64 next = pb_schedule_next (c->schedule, now);

  if (c->timer != 0)
    g_source_remove (c->timer);
  c->timer = next > 0 ? pb_timeout_add_seconds ((guint) MAX (next - now, 1), connection_timer, c) : 0;
}

gint64
pb_queue_connection_next (PbQueue *q, const char *name)
{
  for (guint i = 0; i < q->connections->len; i++)
    {
      Connection *c = g_ptr_array_index (q->connections, i);
      if (strcmp (c->name, name) == 0)
        return pb_schedule_next (c->schedule, now_unix ());
    }
  return 0;
}

/* ---- life cycle ---- */

PbQueue *
pb_queue_new (PbGeneration *gen, GError **error)
{
  PbQueue *q = g_new0 (PbQueue, 1);
  const char *const *names = NULL;
  const void *const *configs = gen->connections != NULL ? (const void *const *) gen->connections->configs->pdata : NULL;

  if (in_flight == NULL)
    {
      in_flight = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
      busy = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
      collecting = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    }
  q->gen = gen;
  q->connections = g_ptr_array_new_with_free_func (connection_free);
  q->ready = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, ready_free);
  q->wakeups = g_array_new (FALSE, FALSE, sizeof (gint64));
  if (gen->connections != NULL)
    names = (const char *const *) gen->connections->names->pdata;
  for (guint i = 0; configs != NULL && configs[i] != NULL; i++)
    {
      const PbConnectionConfig *cfg = configs[i];
      Connection *c = g_new0 (Connection, 1);
      g_autofree char *why = NULL;

      c->queue = q;
      c->name = g_strdup (names[i]);
      c->config = cfg;
      c->schedule = pb_schedule_parse (cfg->schedule, &why);
      g_ptr_array_add (q->connections, c);
      if (*cfg->sender != '\0')
        {
          c->transport = find_transport (gen, cfg->sender);
          if (c->transport == NULL)
            {
              g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG,
                           "connection %s: no transport named '%s' (is its module enabled?)", c->name, cfg->sender);
              pb_queue_free (q);
              return NULL;
            }
        }
    }
  /* Without [connection] groups: one implicit connection, always on, through
   * the only transport (or the first one registered). */
  if (q->connections->len == 0 && gen->transports->len > 0)
    {
      static char *none[] = { NULL };
      static const PbConnectionConfig implicit = { (char *) "", none, TRUE, (char *) "", TRUE };
      Connection *c = g_new0 (Connection, 1);
      c->queue = q;
      c->name = g_strdup ("default");
      c->config = &implicit;
      c->transport = g_ptr_array_index (gen->transports, 0);
      g_ptr_array_add (q->connections, c);
      if (gen->transports->len > 1)
        g_message ("queue: several transports and no [connection]: mail goes through %s", c->transport->name);
    }
  return q;
}

void
pb_queue_start (PbQueue *q)
{
  for (guint i = 0; i < q->connections->len; i++)
    connection_arm (q, g_ptr_array_index (q->connections, i));
  q->scan_timer = pb_timeout_add_seconds ((guint) MAX (q->gen->core->queue_scan_interval / 1000, 1), queue_periodic, q);
  pb_queue_kick (q);
}

void
pb_queue_stop (PbQueue *q)
{
  if (q == NULL || q->stopped)
    return;
  /* Deliveries in flight finish and record their results; nothing new starts. */
  q->stopped = TRUE;
  g_hash_table_remove_all (q->ready);
  if (q->wake_timer != 0)
    g_source_remove (q->wake_timer);
  q->wake_timer = 0;
  if (q->scan_timer != 0)
    g_source_remove (q->scan_timer);
  if (q->kick_idle != 0)
    g_source_remove (q->kick_idle);
  q->scan_timer = q->kick_idle = 0;
  for (guint i = 0; i < q->connections->len; i++)
    {
      Connection *c = g_ptr_array_index (q->connections, i);
      if (c->timer != 0)
        g_source_remove (c->timer);
      c->timer = 0;
    }
}

void
pb_queue_free (PbQueue *q)
{
  if (q == NULL)
    return;
  pb_queue_stop (q);
  g_hash_table_unref (q->ready);
  g_array_unref (q->wakeups);
  g_ptr_array_unref (q->connections);
  g_free (q);
}

GVariant *
pb_queue_describe (PbQueue *q, GString *text)
{
  GVariantBuilder b;
  gint64 now = now_unix ();

  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; q != NULL && i < q->connections->len; i++)
    {
      Connection *c = g_ptr_array_index (q->connections, i);
      gint64 next = pb_schedule_next (c->schedule, now);
      gint64 held = c->transport != NULL ? transport_ready_at (c, "") : 0;
      const char *state = c->sending > 0                                            ? "sending"
                          : g_hash_table_contains (collecting, c->name)             ? "collecting"
                          : pb_schedule_is_denied (c->schedule, now)               ? "held (deny window)"
                          : held != 0                                               ? "held (sender's cap)"
                                                                                    : "idle";
      GVariantBuilder cb;
      g_autoptr (GDateTime) t = next > 0 ? g_date_time_new_from_unix_local (next) : NULL;
      g_autofree char *next_text = t != NULL ? g_date_time_format (t, "%Y-%m-%d %H:%M") : NULL;

      g_variant_builder_init (&cb, G_VARIANT_TYPE ("a{sv}"));
      g_variant_builder_add (&cb, "{sv}", "name", g_variant_new_string (c->name));
      g_variant_builder_add (&cb, "{sv}", "sender", g_variant_new_string (c->transport != NULL ? c->transport->name : ""));
      g_variant_builder_add (&cb, "{sv}", "state", g_variant_new_string (state));
      g_variant_builder_add (&cb, "{sv}", "deliveries", g_variant_new_uint32 (c->sending));
      g_variant_builder_add (&cb, "{sv}", "send_immediately", g_variant_new_boolean (c->config->send_immediately));
      g_variant_builder_add (&cb, "{sv}", "next_run", g_variant_new_int64 (next));
      g_variant_builder_add (&cb, "{sv}", "held_until", g_variant_new_int64 (held / G_USEC_PER_SEC));
      g_variant_builder_add (&b, "a{sv}", &cb);
      if (text != NULL)
        g_string_append_printf (text, "  %-16s %-8s %-20s %s%s%s\n", c->name,
                                c->transport != NULL ? c->transport->name : "-", state,
                                c->config->send_immediately ? "sends at once" : "sends on schedule",
                                next_text != NULL ? "; next run " : "", next_text != NULL ? next_text : "");
      if (text != NULL && held != 0)
        {
          g_autoptr (GDateTime) h = g_date_time_new_from_unix_local (held / G_USEC_PER_SEC);
          g_autofree char *h_text = h != NULL ? g_date_time_format (h, "%H:%M:%S") : NULL;
          g_string_append_printf (text, "  %-16s its sender takes no more mail until %s (a periodic cap)\n", "",
                                  h_text != NULL ? h_text : "?");
        }
    }
  return g_variant_builder_end (&b);
}
