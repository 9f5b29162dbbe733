/* SPDX-License-Identifier: MIT */
/* SMTP client: delivery jobs over an ordered list of targets, and the per-key connection cache. */
#include "config.h"
#include "smtpc.h"

#include <string.h>

/*
 * A job carries some recipients of one PbDelivery. It walks its targets in
 * order. At each target it sends transactions until every recipient it
 * still holds has a result: a transaction takes as many recipients as the
 * per-message and per-session caps (and the module's reserve hook) allow,
 * on a cached idle session of the target's key or a new one (at most
 * max_connections per key; beyond that the job waits for a session to come
 * free). Recipients answered 4xx in a way another server might not repeat
 * (SmtpcResult.try_next) go on to the next target, as do all of them when
 * a target cannot be reached, refuses the session, or its caps are full.
 * 2xx and 5xx are final. When the targets run out, every recipient keeps
 * the last result it got.
 *
 * After a transaction the session goes back to its key: to a job waiting
 * for one, or into the cache for reuse_time, or it says QUIT when a
 * per-session cap is reached (VPOP3's "Max Messages Per Session").
 */

/* A host whose TLS handshake failed is spoken to in plain text for this
 * long (opportunistic TLS only: RFC 7435 §6.1 prefers delivery). */
#define SMTPC_NO_TLS_TIME_MS (60 * 60 * 1000)

typedef struct _Dest Dest;
typedef struct _Job Job;

typedef struct {
  Dest *dest;
  SmtpcSession *s;
  guint timer;
} IdleEntry;

struct _Dest {
  SmtpcClient *client;
  char *key;
  guint max;
  guint active;        /* sessions open or opening, idle ones included */
  GQueue idle;         /* IdleEntry * */
  GQueue waiters;      /* Job * */
};

struct _SmtpcClient {
  PbModule *module;
  const char *log_domain;
  SmtpcCapHooks hooks;
  gboolean has_hooks;
  GHashTable *dests;   /* key -> Dest * */
  GHashTable *down;    /* key -> gint64 * (monotonic µs until) */
  GHashTable *no_tls;  /* key -> gint64 * */
  GHashTable *jobs;    /* Job * set */
};

struct _Job {
  SmtpcClient *client;
  PbDelivery *delivery;
  guint n;
  guint *indexes;      /* per position: the recipient's index in the delivery */
  SmtpcResult *results;
  gboolean *final;
  GPtrArray *targets;
  guint target;
  GArray *to_send;     /* positions still to send to the current target */
  GArray *next_round;  /* positions for the next target */
  SmtpcResult last;    /* the last failure not tied to one recipient */
  gboolean plain_retry;
  guint start_idle;
  SmtpcSession *session;
  gboolean opening;
  Dest *waiting;
  guint granted;
  SmtpcTransaction txn;
  GArray *txn_pos;
  GPtrArray *txn_rcpts;
  GPtrArray *txn_notify;
  GPtrArray *txn_orcpt;
  SmtpcJobDoneFunc done;
  gpointer done_data;
};

static void job_try (Job *job);
static void job_next_target (Job *job);
static void job_use_session (Job *job, SmtpcSession *s);
static void job_open_session (Job *job);

/* ---- targets ------------------------------------------------------------ */

SmtpcTarget *
smtpc_target_new (void)
{
  return g_new0 (SmtpcTarget, 1);
}

void
smtpc_target_free (SmtpcTarget *t)
{
  if (t == NULL)
    return;
  smtpc_endpoint_clear (&t->ep);
  g_free (t->key);
  g_free (t->label);
  g_free (t);
}

static SmtpcTarget *
job_target (Job *job)
{
  return g_ptr_array_index (job->targets, job->target);
}

/* ---- marks (down hosts, hosts without working TLS) ---------------------- */

static gboolean
key_marked (GHashTable *marks, const char *key)
{
  gint64 *until = g_hash_table_lookup (marks, key);

  if (until == NULL)
    return FALSE;
  if (*until > g_get_monotonic_time ())
    return TRUE;
  g_hash_table_remove (marks, key);
  return FALSE;
}

static void
key_mark (GHashTable *marks, const char *key, gint64 ms)
{
  gint64 *until = g_new (gint64, 1);

  *until = g_get_monotonic_time () + ms * 1000;
  g_hash_table_replace (marks, g_strdup (key), until);
}

/* ---- the connection cache ------------------------------------------------ */

static Dest *
dest_get (SmtpcClient *c, const char *key)
{
  Dest *d = g_hash_table_lookup (c->dests, key);

  if (d == NULL)
    {
      d = g_new0 (Dest, 1);
      d->client = c;
      d->key = g_strdup (key);
      g_queue_init (&d->idle);
      g_queue_init (&d->waiters);
      g_hash_table_insert (c->dests, d->key, d);
    }
  return d;
}

static gboolean
session_has_room (SmtpcSession *s, const SmtpcTarget *t)
{
  return (t->max_messages_per_session == 0 || smtpc_session_get_messages (s) < t->max_messages_per_session)
         && (t->max_recipients_per_session == 0
             || smtpc_session_get_recipients (s) < t->max_recipients_per_session);
}

/* A slot came free: a waiting job opens a new session. */
static void
dest_wake (Dest *d)
{
  while (!g_queue_is_empty (&d->waiters) && (d->max == 0 || d->active < d->max))
    {
      Job *job = g_queue_pop_head (&d->waiters);
      job->waiting = NULL;
      d->active++;
      job_open_session (job);
    }
}

static void
idle_entry_remove (IdleEntry *e)
{
  g_queue_remove (&e->dest->idle, e);
  if (e->timer != 0)
    g_source_remove (e->timer);
  g_free (e);
}

static gboolean
idle_expired (gpointer data)
{
  IdleEntry *e = data;
  Dest *d = e->dest;
  SmtpcSession *s = e->s;

  e->timer = 0;
  idle_entry_remove (e);
  smtpc_session_quit (s);
  smtpc_session_unref (s);
  d->active--;
  dest_wake (d);
  return G_SOURCE_REMOVE;
}

static void
idle_lost (SmtpcSession *s, gpointer data)
{
  IdleEntry *e = data;
  Dest *d = e->dest;

  idle_entry_remove (e);
  smtpc_session_unref (s);
  d->active--;
  dest_wake (d);
}

/* A session is done with a transaction (@s NULL: it died). */
static void
dest_release (Dest *d, SmtpcSession *s, const SmtpcTarget *t)
{
  if (s != NULL && smtpc_session_is_usable (s) && session_has_room (s, t))
    {
      if (!g_queue_is_empty (&d->waiters))
        {
          Job *job = g_queue_pop_head (&d->waiters);
          job->waiting = NULL;
          job_use_session (job, s);
          return;
        }
      if (t->reuse_time > 0)
        {
          IdleEntry *e = g_new0 (IdleEntry, 1);
          e->dest = d;
          e->s = s;
          e->timer = pb_timeout_add ((guint) MIN (t->reuse_time, (gint64) G_MAXUINT), idle_expired, e);
          g_queue_push_tail (&d->idle, e);
          /* May report the session lost at once (and free the entry). */
          smtpc_session_watch_idle (s, idle_lost, e);
          return;
        }
    }
  if (s != NULL)
    {
      smtpc_session_quit (s);
      smtpc_session_unref (s);
    }
  d->active--;
  dest_wake (d);
}

/* ---- jobs ------------------------------------------------------------------ */

static gboolean
job_has_later_target (Job *job)
{
  return job->target + 1 < job->targets->len;
}

static void
job_clear_txn (Job *job)
{
  for (guint i = 0; i < job->txn.n_rcpts; i++)
    smtpc_result_clear (&job->txn.results[i]);
  g_clear_pointer (&job->txn.results, g_free);
  job->txn.n_rcpts = 0;
  g_array_set_size (job->txn_pos, 0);
  g_ptr_array_set_size (job->txn_rcpts, 0);
  g_ptr_array_set_size (job->txn_notify, 0);
  g_ptr_array_set_size (job->txn_orcpt, 0);
}

static void
job_free (Job *job)
{
  job_clear_txn (job);
  for (guint i = 0; i < job->n; i++)
    smtpc_result_clear (&job->results[i]);
  smtpc_result_clear (&job->last);
  g_free (job->results);
  g_free (job->final);
  g_free (job->indexes);
  g_ptr_array_unref (job->targets);
  g_array_unref (job->to_send);
  g_array_unref (job->next_round);
  g_array_unref (job->txn_pos);
  g_ptr_array_unref (job->txn_rcpts);
  g_ptr_array_unref (job->txn_notify);
  g_ptr_array_unref (job->txn_orcpt);
  g_free (job);
}

static const char *
status_word (guint code)
{
  return code / 100 == 2 ? "sent" : code / 100 == 5 ? "bounced" : "deferred";
}

static void
job_finish (Job *job)
{
  SmtpcClient *c = job->client;
  const char *queue_id = pb_delivery_get_queue_id (job->delivery);
  const char *const *rcpts = pb_delivery_get_recipients (job->delivery);

  for (guint pos = 0; pos < job->n; pos++)
    {
      const SmtpcResult *r = &job->results[pos];

      if (r->code == 0)
        r = &job->last;
      if (r->code == 0)
        {
          smtpc_result_set (&job->last, 451, "4.4.0", "no server could be tried", FALSE);
          r = &job->last;
        }
      pb_delivery_set_result (job->delivery, job->indexes[pos], r->code, r->enhanced, r->text);
      if (r->retry_at > 0 && r->code / 100 == 4)
        pb_delivery_set_retry_at (job->delivery, job->indexes[pos], r->retry_at);
      pb_log_session (c->log_domain, G_LOG_LEVEL_INFO, NULL, queue_id, "to=<%s>, status=%s (%s)",
                      rcpts[job->indexes[pos]], status_word (r->code), r->text != NULL ? r->text : "");
    }
  g_hash_table_remove (c->jobs, job);
  if (job->done != NULL)
    job->done (job->done_data);
  job_free (job);
}

/* The recipients still held go on to the next target (or stay with their results). */
static void
job_advance (Job *job)
{
  if (job->next_round->len > 0 && job_has_later_target (job))
    {
      GArray *tmp = job->to_send;
      job->target++;
      job->plain_retry = FALSE;
      job->to_send = job->next_round;
      job->next_round = tmp;
      g_array_set_size (job->next_round, 0);
      job_next_target (job);
      return;
    }
  job_finish (job);
}

/* The current target cannot take the recipients held for it: each gets @r. */
static void
job_target_failed (Job *job, const SmtpcResult *r)
{
  for (guint k = 0; k < job->to_send->len; k++)
    {
      guint pos = g_array_index (job->to_send, guint, k);
      smtpc_result_set (&job->results[pos], r->code, r->enhanced, r->text, TRUE);
      job->results[pos].retry_at = r->retry_at;
      g_array_append_val (job->next_round, pos);
    }
  g_array_set_size (job->to_send, 0);
  smtpc_result_set (&job->last, r->code, r->enhanced, r->text, TRUE);
  job->last.retry_at = r->retry_at;
  job_advance (job);
}

static void
job_settle (Job *job, gboolean delivered, guint accepted)
{
  SmtpcClient *c = job->client;

  if (c->has_hooks && job->granted > 0)
    c->hooks.settle (c->hooks.data, job_target (job), job->granted, delivered, accepted);
  job->granted = 0;
}

static void
job_read_body (gpointer source, gint64 offset, gsize max, PbStoreReadFunc done, gpointer user_data)
{
  Job *job = source;
  pb_store_message_read (pb_delivery_get_module (job->delivery), pb_delivery_get_queue_id (job->delivery), offset,
                         max, done, user_data);
}

static void
job_sent (SmtpcSession *s, SmtpcTransaction *t, gpointer data)
{
  Job *job = data;
  SmtpcTarget *target = job_target (job);
  Dest *d = dest_get (job->client, target->key);

  job_settle (job, t->delivered, t->accepted);
  for (guint k = 0; k < t->n_rcpts; k++)
    {
      guint pos = g_array_index (job->txn_pos, guint, k);
      SmtpcResult *r = &t->results[k];

      smtpc_result_clear (&job->results[pos]);
      job->results[pos] = *r;
      memset (r, 0, sizeof *r);
      if (job->results[pos].code / 100 == 4 && job->results[pos].try_next && job_has_later_target (job))
        g_array_append_val (job->next_round, pos);
      else
        job->final[pos] = TRUE;
    }
  job_clear_txn (job);
  job->session = NULL;
  dest_release (d, s, target);

  if (job->to_send->len > 0)
    job_try (job);
  else
    job_advance (job);
}

static void
job_use_session (Job *job, SmtpcSession *s)
{
  SmtpcTarget *t = job_target (job);
  guint chunk = job->to_send->len;

  job->session = s;
  if (t->max_recipients_per_message > 0)
    chunk = MIN (chunk, t->max_recipients_per_message);
  if (t->max_recipients_per_session > 0)
    chunk = MIN (chunk, t->max_recipients_per_session - MIN (smtpc_session_get_recipients (s),
                                                              t->max_recipients_per_session));
  if (job->client->has_hooks && job->granted > 0)
    chunk = MIN (chunk, job->granted);
  chunk = MAX (chunk, 1);

  job_clear_txn (job);
  for (guint k = 0; k < chunk; k++)
    {
      guint pos = g_array_index (job->to_send, guint, k);
      guint idx = job->indexes[pos];
      g_array_append_val (job->txn_pos, pos);
      g_ptr_array_add (job->txn_rcpts, (gpointer) pb_delivery_get_recipients (job->delivery)[idx]);
      g_ptr_array_add (job->txn_notify, (gpointer) pb_delivery_get_dsn (job->delivery, (gint) idx, "notify"));
      g_ptr_array_add (job->txn_orcpt, (gpointer) pb_delivery_get_dsn (job->delivery, (gint) idx, "orcpt"));
    }
  g_array_remove_range (job->to_send, 0, chunk);

  job->txn.queue_id = pb_delivery_get_queue_id (job->delivery);
  job->txn.mail_from = pb_delivery_get_mail_from (job->delivery);
  job->txn.n_rcpts = chunk;
  job->txn.rcpts = (const char *const *) job->txn_rcpts->pdata;
  job->txn.notify = (const char *const *) job->txn_notify->pdata;
  job->txn.orcpt = (const char *const *) job->txn_orcpt->pdata;
  job->txn.ret = pb_delivery_get_dsn (job->delivery, -1, "ret");
  job->txn.envid = pb_delivery_get_dsn (job->delivery, -1, "envid");
  job->txn.size = pb_delivery_get_size (job->delivery);
  job->txn.read = job_read_body;
  job->txn.read_source = job;
  job->txn.results = g_new0 (SmtpcResult, chunk);
  smtpc_session_send (s, &job->txn, job_sent, job);
}

/* A failure to open, as it is recorded for recipients: always temporary
 * (a server that refuses the session may accept later; RFC 5321 §3.1
 * says to try elsewhere). */
static void
temp_result (SmtpcResult *out, const SmtpcResult *failure)
{
  g_autofree char *enh = NULL;

  if (failure->enhanced != NULL && failure->enhanced[0] != '\0')
    enh = g_strdup_printf ("4%s", failure->enhanced + 1);
  else
    enh = g_strdup ("4.4.0");
  smtpc_result_set (out, failure->code / 100 == 4 ? failure->code : 451, enh, failure->text, TRUE);
}

static void
job_opened (SmtpcSession *s, const SmtpcResult *failure, gboolean tls_failed, gboolean unreachable, gpointer data)
{
  Job *job = data;
  SmtpcClient *c = job->client;
  SmtpcTarget *t = job_target (job);
  Dest *d = dest_get (c, t->key);
  SmtpcResult r = { 0 };

  job->opening = FALSE;
  if (failure == NULL)
    {
      job_use_session (job, s);
      return;
    }
  job->session = NULL;
  smtpc_session_unref (s);
  pb_log_session (c->log_domain, G_LOG_LEVEL_INFO, NULL, pb_delivery_get_queue_id (job->delivery), "%s: %s",
                  t->label != NULL ? t->label : t->key, failure->text);
  if (tls_failed && t->ep.tls == SMTPC_TLS_OPPORTUNISTIC && !job->plain_retry)
    {
      /* RFC 7435: opportunistic TLS must not stop delivery; the slot is kept. */
      key_mark (c->no_tls, t->key, SMTPC_NO_TLS_TIME_MS);
      job->plain_retry = TRUE;
      job_open_session (job);
      return;
    }
  if (unreachable)
    key_mark (c->down, t->key, SMTPC_DOWN_TIME_MS);
  d->active--;
  dest_wake (d);
  job_settle (job, FALSE, 0);
  temp_result (&r, failure);
  job_target_failed (job, &r);
  smtpc_result_clear (&r);
}

static void
job_open_session (Job *job)
{
  SmtpcClient *c = job->client;
  SmtpcTarget *t = job_target (job);
  SmtpcEndpoint ep = t->ep;

  if (ep.tls == SMTPC_TLS_OPPORTUNISTIC && (job->plain_retry || key_marked (c->no_tls, t->key)))
    ep.tls = SMTPC_TLS_NONE;
  job->opening = TRUE;
  job->session = smtpc_session_open (c->module, &ep, c->log_domain, job_opened, job);
}

static void
job_acquire (Job *job)
{
  SmtpcTarget *t = job_target (job);
  Dest *d = dest_get (job->client, t->key);
  IdleEntry *e;

  d->max = t->max_connections;
  while ((e = g_queue_peek_head (&d->idle)) != NULL)
    {
      SmtpcSession *s = e->s;
      idle_entry_remove (e);
      if (smtpc_session_is_usable (s) && session_has_room (s, t))
        {
          job_use_session (job, s);
          return;
        }
      smtpc_session_quit (s);
      smtpc_session_unref (s);
      d->active--;
    }
  if (d->max == 0 || d->active < d->max)
    {
      d->active++;
      job_open_session (job);
      return;
    }
  job->waiting = d;
  g_queue_push_tail (&d->waiters, job);
}

/* One more transaction at the current target. */
static void
job_try (Job *job)
{
  SmtpcClient *c = job->client;
  SmtpcTarget *t = job_target (job);

  if (c->has_hooks && job->granted == 0)
    {
      guint wanted = job->to_send->len;
      char *why = NULL;
      gint64 retry_at = 0;

      if (t->max_recipients_per_message > 0)
        wanted = MIN (wanted, t->max_recipients_per_message);
      job->granted = c->hooks.reserve (c->hooks.data, t, wanted, &why, &retry_at);
      if (job->granted == 0)
        {
          SmtpcResult r = { 0 };
          smtpc_result_set (&r, 451, "4.4.5", why != NULL ? why : "the server's limits are reached", TRUE);
          r.retry_at = retry_at;
          g_free (why);
          job_target_failed (job, &r);
          smtpc_result_clear (&r);
          return;
        }
      g_free (why);
    }
  job_acquire (job);
}

static gboolean
job_later_target_up (Job *job)
{
  for (guint i = job->target + 1; i < job->targets->len; i++)
    if (!key_marked (job->client->down, ((SmtpcTarget *) g_ptr_array_index (job->targets, i))->key))
      return TRUE;
  return FALSE;
}

static void
job_next_target (Job *job)
{
  while (job->target < job->targets->len && job->to_send->len > 0)
    {
      SmtpcTarget *t = job_target (job);

      /* A target that could not be reached a moment ago is skipped while
       * another one may work; with none left, it is tried anyway. */
      if (key_marked (job->client->down, t->key) && job_later_target_up (job))
        {
          job->target++;
          job->plain_retry = FALSE;
          continue;
        }
      job_try (job);
      return;
    }
  job_finish (job);
}

static gboolean
job_start (gpointer data)
{
  Job *job = data;

  job->start_idle = 0;
  if (job->targets->len == 0)
    {
      job_finish (job);
      return G_SOURCE_REMOVE;
    }
  job_next_target (job);
  return G_SOURCE_REMOVE;
}

void
smtpc_client_deliver (SmtpcClient *client, PbDelivery *delivery, const guint *indexes, guint n, GPtrArray *targets,
                      SmtpcJobDoneFunc done, gpointer user_data)
{
  Job *job = g_new0 (Job, 1);

  job->client = client;
  job->delivery = delivery;
  job->n = n;
  job->indexes = g_memdup2 (indexes, sizeof (guint) * n);
  job->results = g_new0 (SmtpcResult, n);
  job->final = g_new0 (gboolean, n);
  job->targets = targets;
  job->to_send = g_array_sized_new (FALSE, FALSE, sizeof (guint), n);
  job->next_round = g_array_new (FALSE, FALSE, sizeof (guint));
  job->txn_pos = g_array_new (FALSE, FALSE, sizeof (guint));
  job->txn_rcpts = g_ptr_array_new ();
  job->txn_notify = g_ptr_array_new ();
  job->txn_orcpt = g_ptr_array_new ();
  for (guint pos = 0; pos < n; pos++)
    g_array_append_val (job->to_send, pos);
  job->done = done;
  job->done_data = user_data;
  g_hash_table_add (client->jobs, job);
  job->start_idle = pb_idle_add (job_start, job);
}

/* ---- the client ------------------------------------------------------------ */

SmtpcClient *
smtpc_client_new (PbModule *module, const char *log_domain, const SmtpcCapHooks *hooks)
{
  SmtpcClient *c = g_new0 (SmtpcClient, 1);

  c->module = module;
  c->log_domain = log_domain;
  if (hooks != NULL)
    {
      c->hooks = *hooks;
      c->has_hooks = hooks->reserve != NULL && hooks->settle != NULL;
    }
  c->dests = g_hash_table_new (g_str_hash, g_str_equal);
  c->down = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  c->no_tls = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  c->jobs = g_hash_table_new (NULL, NULL);
  return c;
}

/* Ends a job now: results already final are reported, the rest are left
 * without a result (the core retries them). */
static void
job_cancel (Job *job)
{
  SmtpcClient *c = job->client;

  if (job->start_idle != 0)
    g_source_remove (job->start_idle);
  if (job->waiting != NULL)
    g_queue_remove (&job->waiting->waiters, job);
  if (job->session != NULL)
    {
      smtpc_session_abort (job->session);
      smtpc_session_unref (job->session);
      job->session = NULL;
    }
  job_settle (job, FALSE, 0);
  for (guint pos = 0; pos < job->n; pos++)
    if (job->final[pos] && job->results[pos].code != 0)
      pb_delivery_set_result (job->delivery, job->indexes[pos], job->results[pos].code, job->results[pos].enhanced,
                              job->results[pos].text);
  g_hash_table_remove (c->jobs, job);
  if (job->done != NULL)
    job->done (job->done_data);
  job_free (job);
}

void
smtpc_client_free (SmtpcClient *c)
{
  GHashTableIter it;
  gpointer value;

  if (c == NULL)
    return;
  while (g_hash_table_size (c->jobs) > 0)
    {
      g_hash_table_iter_init (&it, c->jobs);
      g_hash_table_iter_next (&it, &value, NULL);
      job_cancel (value);
    }
  g_hash_table_iter_init (&it, c->dests);
  while (g_hash_table_iter_next (&it, NULL, &value))
    {
      Dest *d = value;
      IdleEntry *e;
      while ((e = g_queue_peek_head (&d->idle)) != NULL)
        {
          SmtpcSession *s = e->s;
          idle_entry_remove (e);
          smtpc_session_quit (s);
          smtpc_session_unref (s);
        }
      g_queue_clear (&d->waiters);
      g_free (d->key);
      g_free (d);
    }
  g_hash_table_unref (c->dests);
  g_hash_table_unref (c->down);
  g_hash_table_unref (c->no_tls);
  g_hash_table_unref (c->jobs);
  g_free (c);
}
