/* SPDX-License-Identifier: MIT */
/* The storage thread: owns the connection, runs queued jobs, batches commits into one fsync, replies on the loop. */
#include "config.h"
#include "sqlite-private.h"

#include <errno.h>
#include <string.h>

/*
 * Threading. The loop thread only queues jobs (under store->lock) and never
 * touches the database. The storage thread takes *everything* queued at
 * once and works through it in order:
 *
 * - body pieces, aborts and commits are gathered into one transaction (a
 *   "unit"), closed early only when it carries max-batch commits or
 *   SQ_UNIT_MAX_BYTES of body; a unit that carries a commit runs with
 *   synchronous=FULL (one fsync of the log for all its commits: group
 *   commit), a unit of body pieces only with synchronous=NORMAL (no fsync:
 *   the next FULL commit's fsync of the same log covers those pages too);
 * - a request first closes the unit, so requests and commits keep the
 *   order they were issued in; reads run at once (they only see committed
 *   messages, which nothing queued can change).
 *
 * While one transaction syncs, the next commits pile up in the queue: the
 * more sessions commit at once, the more commits share each fsync.
 * Replies are posted to the loop's main context in one batch per pass, and
 * only after COMMIT returned: nothing is acknowledged before it is durable.
 * Jobs queued by the reply callbacks are handed over together once the
 * batch is delivered (see sq_post_dispatch()).
 */

SqJob *
sq_job_new (SqJobKind kind)
{
  SqJob *job = g_new0 (SqJob, 1);
  job->kind = kind;
  return job;
}

static void
sq_job_free (SqJob *job)
{
  g_clear_pointer (&job->data, g_bytes_unref);
  g_clear_pointer (&job->args, g_variant_unref);
  g_clear_error (&job->error);
  g_free (job->message_id);
  g_free (job);
}

SqReply *
sq_reply_new (SqJobKind kind)
{
  SqReply *reply = g_new0 (SqReply, 1);
  reply->kind = kind;
  return reply;
}

static void
sq_reply_free (SqReply *reply)
{
  g_clear_pointer (&reply->message, sq_message_free);
  g_clear_pointer (&reply->data, g_bytes_unref);
  g_clear_pointer (&reply->result, g_variant_unref);
  g_clear_error (&reply->error);
  g_free (reply->queue_id);
  g_free (reply);
}

void
sq_message_free (SqMessage *m)
{
  for (guint i = 0; i < m->n_rcpts; i++)
    {
      g_free (m->rcpts[i].address);
      g_free (m->rcpts[i].mailbox);
      g_free (m->rcpts[i].notify);
      g_free (m->rcpts[i].orcpt);
      g_free (m->rcpts[i].headers);
    }
  g_free (m->rcpts);
  g_free (m->mail_from);
  g_free (m->session_id);
  g_free (m->client_ip);
  g_free (m->auth_user);
  g_free (m->dsn_ret);
  g_free (m->dsn_envid);
  g_free (m->origin);
  if (m->buf != NULL)
    g_byte_array_unref (m->buf);
  g_free (m);
}

/* ---- the instance ---- */

SqStore *
sq_store_new (PbModule *module, const SqConfig *config)
{
  SqStore *store = g_new0 (SqStore, 1);

  store->ref = 1;
  store->module = module;
  store->config = config;
  store->lock_fd = -1;
  g_mutex_init (&store->lock);
  g_cond_init (&store->cond);
  g_queue_init (&store->jobs);
  store->discard = g_array_new (FALSE, FALSE, sizeof (gint64));
  g_queue_init (&store->outbox);
  return store;
}

SqStore *
sq_store_ref (SqStore *store)
{
  g_atomic_int_inc (&store->ref);
  return store;
}

void
sq_store_unref (gpointer data)
{
  SqStore *store = data;

  if (store == NULL || !g_atomic_int_dec_and_test (&store->ref))
    return;
  g_warn_if_fail (store->thread == NULL && g_queue_is_empty (&store->jobs) && g_queue_is_empty (&store->outbox));
  g_warn_if_fail (store->flush_source == NULL);
  g_clear_error (&store->start_error);
  g_clear_pointer (&store->context, g_main_context_unref);
  g_array_unref (store->discard);
  g_mutex_clear (&store->lock);
  g_cond_clear (&store->cond);
  g_free (store->lock_path);
  g_free (store->path);
  g_free (store->dir);
  g_free (store);
}

/* Hands @jobs (emptied) to the storage thread at once. */
static void
sq_store_hand_over (SqStore *store, GQueue *jobs)
{
  gint64 bytes = 0;

  for (GList *l = jobs->head; l != NULL; l = l->next)
    {
      SqJob *job = l->data;
      if (job->data != NULL)
        bytes += (gint64) g_bytes_get_size (job->data);
    }
  g_mutex_lock (&store->lock);
  if (g_queue_is_empty (&store->jobs))
    store->jobs = *jobs;
  else
    {
      store->jobs.tail->next = jobs->head;
      jobs->head->prev = store->jobs.tail;
      store->jobs.tail = jobs->tail;
      store->jobs.length += jobs->length;
    }
  store->queued_bytes += bytes;
  g_cond_signal (&store->cond);
  g_mutex_unlock (&store->lock);
  g_queue_init (jobs);
}

static void
sq_store_flush (SqStore *store)
{
  pb_source_clear (&store->flush_source);
  if (!g_queue_is_empty (&store->outbox))
    sq_store_hand_over (store, &store->outbox);
}

static gboolean
sq_store_flush_cb (gpointer data)
{
  SqStore *store = data;

  g_clear_pointer (&store->flush_source, g_source_unref);
  sq_store_flush (store);
  return G_SOURCE_REMOVE;
}

void
sq_store_push (SqStore *store, SqJob *job)
{
  GQueue one = G_QUEUE_INIT;

  if (store->holding)
    {
      g_queue_push_tail (&store->outbox, job);
      if (store->flush_source == NULL)
        {
          store->flush_source = g_idle_source_new ();
          g_source_set_priority (store->flush_source, G_PRIORITY_HIGH);
          g_source_set_static_name (store->flush_source, "storage-sqlite flush");
          g_source_set_callback (store->flush_source, sq_store_flush_cb, store, NULL);
          pb_source_attach (store->flush_source, store->context);
        }
      return;
    }
  g_queue_push_tail (&one, job);
  sq_store_hand_over (store, &one);
}

gint64
sq_store_queued_bytes (SqStore *store)
{
  gint64 n;

  g_mutex_lock (&store->lock);
  n = store->queued_bytes;
  g_mutex_unlock (&store->lock);
  return n;
}

/* ---- replies, on the loop thread ---- */

typedef struct {
  SqStore *store;
  GPtrArray *replies;
} SqPost;

static void
sq_reply_deliver (SqReply *reply)
{
  switch (reply->kind)
    {
    case SQ_JOB_COMMIT:
      reply->done.commit (reply->error == NULL ? reply->queue_id : NULL, reply->error, reply->user_data);
      break;
    case SQ_JOB_READ:
      {
        gsize len = 0;
        const guint8 *data = reply->data != NULL ? g_bytes_get_data (reply->data, &len) : NULL;
        reply->done.read (data, len, reply->eof, reply->error, reply->user_data);
        break;
      }
    case SQ_JOB_REQUEST:
      if (reply->done.result != NULL)
        reply->done.result (reply->result, reply->error, reply->user_data);
      break;
    default:
      g_return_if_reached ();
    }
}

/*
 * While a batch of replies is delivered, the jobs the callbacks queue (a
 * writer that starts its next message as soon as the last one is durable)
 * are held back and handed over together at the end: the storage thread
 * then finds them all at once and writes them in one transaction, instead
 * of waking on the first and leaving the rest for the next fsync.
 */
static gboolean
sq_post_dispatch (gpointer data)
{
  SqPost *post = data;
  SqStore *store = post->store;
  gboolean was_holding = store->holding;

  store->holding = TRUE;
  for (guint i = 0; i < post->replies->len; i++)
    sq_reply_deliver (g_ptr_array_index (post->replies, i));
  store->holding = was_holding;
  if (!was_holding)
    sq_store_flush (store);
  return G_SOURCE_REMOVE;
}

static void
sq_post_free (gpointer data)
{
  SqPost *post = data;
  g_ptr_array_unref (post->replies);
  sq_store_unref (post->store);
  g_free (post);
}

/* Hands @replies (taken) to the loop thread. */
static void
sq_post (SqStore *store, GPtrArray *replies)
{
  SqPost *post;
  GSource *source;

  if (replies->len == 0)
    {
      g_ptr_array_unref (replies);
      return;
    }
  post = g_new0 (SqPost, 1);
  post->store = sq_store_ref (store);
  post->replies = replies;
  source = g_idle_source_new ();
  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_set_static_name (source, "storage-sqlite replies");
  g_source_set_callback (source, sq_post_dispatch, post, sq_post_free);
  pb_source_attach (source, store->context);
  g_source_unref (source);
}

void
sq_store_reply_later (SqStore *store, SqReply *reply)
{
  GPtrArray *replies = g_ptr_array_new_with_free_func ((GDestroyNotify) sq_reply_free);
  g_ptr_array_add (replies, reply);
  sq_post (store, replies);
}

/* ---- units: body pieces, aborts and commits in one transaction ---- */

/*
 * Errors inside a unit. A failed statement is backed out by SQLite by
 * itself, but a job is several statements: when one fails, the statements
 * of the same job before it must go too. Savepoints per job would do it,
 * but cost about a third of the SQL time (every page a savepoint touches is
 * copied to a statement journal). Failures are rare, so instead the whole
 * transaction is rolled back and run again without the failed job, which
 * keeps its error. When SQLite itself rolled the transaction back (a full
 * disk, an I/O error), every job in it fails.
 */

static void
sq_message_fail (SqMessage *m, int code)
{
  g_atomic_int_compare_and_exchange (&m->failed, 0, code + 1);
}

/* Runs one job inside the open transaction; FALSE when it failed (its
 * error is recorded: for good in job->error or the message's failed flag). */
static gboolean
sq_job_run (SqStore *store, SqJob *job)
{
  SqMessage *m = job->message;
  int failed;

  switch (job->kind)
    {
    case SQ_JOB_CHUNK:
      if (g_atomic_int_get (&m->failed) != 0)
        return TRUE;
      g_clear_error (&job->error);
      if (sq_message_store_chunk (store, m, job->data, &job->error))
        return TRUE;
      sq_message_fail (m, job->error->code);
      return FALSE;
    case SQ_JOB_COMMIT:
      failed = g_atomic_int_get (&m->failed);
      if (job->error == NULL && failed != 0)
        g_set_error (&job->error, PB_STORE_ERROR_DOMAIN, failed - 1,
                     failed - 1 == PB_STORE_ERROR_NO_SPACE ? "the disk is full"
                                                           : "part of the message could not be stored");
      if (job->error != NULL)
        {
          /* What is left of it goes at the end of this transaction. */
          if (m->rowid != 0)
            g_array_append_val (store->discard, m->rowid);
          return TRUE;
        }
      return sq_message_commit (store, m, job->data, &job->error);
    case SQ_JOB_ABORT:
      if (m->rowid != 0)
        g_array_append_val (store->discard, m->rowid);
      return TRUE;
    default:
      g_return_val_if_reached (TRUE);
    }
}

/* Deletes the rows of aborted and failed messages. */
static gboolean
sq_discard_run (SqStore *store)
{
  for (guint i = 0; i < store->discard->len; i++)
    {
      SqStmt *stmt = sq_db_prepare (store->db, "DELETE FROM messages WHERE id = ?1 AND state = 'receiving'", NULL);
      if (stmt == NULL)
        return FALSE;
      sqlite3_bind_int64 (stmt, 1, g_array_index (store->discard, gint64, i));
      if (!sq_db_run (store->db, stmt, NULL))
        return FALSE;
    }
  return TRUE;
}

/* After a rollback: the messages of jobs [@from, @to) are as the last
 * committed transaction left them. Rows inserted meanwhile are gone, and
 * their ids may be handed out again. */
static void
sq_unit_undo (SqStore *store, GPtrArray *unit, guint from, guint to, guint discard_mark)
{
  g_array_set_size (store->discard, discard_mark);
  for (guint i = from; i < to; i++)
    {
      SqMessage *m = ((SqJob *) g_ptr_array_index (unit, i))->message;
      if (m->rowid_fresh)
        {
          m->rowid = 0;
          m->rowid_fresh = FALSE;
        }
      m->stored = m->stored_committed;
    }
}

/* The end of a job once its transaction committed (@txn_error NULL) or was lost. */
static void
sq_job_finish (SqStore *store, SqJob *job, const GError *txn_error, GPtrArray *replies)
{
  SqMessage *m = job->message;
  SqReply *reply;

  switch (job->kind)
    {
    case SQ_JOB_CHUNK:
      if (txn_error != NULL)
        sq_message_fail (m, txn_error->code);
      break;
    case SQ_JOB_COMMIT:
      reply = g_steal_pointer (&job->reply);
      reply->message = m;
      if (txn_error != NULL || job->error != NULL)
        {
          reply->error = g_error_copy (txn_error != NULL ? txn_error : job->error);
          if (txn_error != NULL && m->rowid != 0)
            g_array_append_val (store->discard, m->rowid);
        }
      else
        {
          reply->queue_id = g_strdup (m->queue_id);
          store->stats.commits++;
        }
      g_ptr_array_add (replies, reply);
      break;
    case SQ_JOB_ABORT:
      if (txn_error != NULL && m->rowid != 0)
        g_array_append_val (store->discard, m->rowid);
      sq_message_free (m);
      break;
    default:
      g_return_if_reached ();
    }
  sq_job_free (job);
}

static void
sq_unit_run (SqStore *store, GPtrArray *unit, gboolean full, GPtrArray *replies)
{
  SqDb *db = store->db;
  guint first = 0;

  while (first < unit->len)
    {
      g_autoptr (GError) txn_error = NULL;
      guint discard_mark = store->discard->len;
      guint end = first;
      guint commits = 0;
      gboolean discarded = FALSE;
      gboolean retry = FALSE;

      if (sq_db_set_sync (db, full ? 2 : 1, &txn_error) && sq_db_begin (db, TRUE, &txn_error))
        {
          for (; end < unit->len; end++)
            {
              SqJob *job = g_ptr_array_index (unit, end);

              if (sq_job_run (store, job))
                continue;
              if (sq_db_in_transaction (db))
                {
                  /* This job alone failed: again without it. */
                  sq_db_rollback (db);
                  sq_unit_undo (store, unit, first, end + 1, discard_mark);
                  retry = TRUE;
                }
              else
                txn_error = g_error_copy (job->error);
              end++;
              break;
            }
          if (retry)
            continue;
          if (txn_error == NULL && !sq_message_ids_save (store, &txn_error))
            sq_db_rollback (db);
          if (txn_error == NULL)
            {
              discarded = sq_discard_run (store);
              if (!sq_db_in_transaction (db))
                txn_error = g_error_new_literal (PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED,
                                                 "the transaction was rolled back");
              else if (!sq_db_commit (db, &txn_error))
                sq_db_rollback (db);
            }
        }
      else
        end = unit->len;

      if (txn_error != NULL)
        {
          sq_unit_undo (store, unit, first, end, discard_mark);
          g_warning ("a storage transaction failed: %s", txn_error->message);
        }
      else
        {
          if (discarded)
            g_array_set_size (store->discard, 0);
          for (guint i = first; i < end; i++)
            {
              SqJob *job = g_ptr_array_index (unit, i);
              job->message->rowid_fresh = FALSE;
              job->message->stored_committed = job->message->stored;
              commits += job->kind == SQ_JOB_COMMIT && job->error == NULL;
            }
          store->stats.transactions++;
          if (full && commits > 0)
            {
              store->stats.fsync_batches++;
              store->stats.largest_batch = MAX (store->stats.largest_batch, commits);
            }
          else if (!full)
            store->stats.chunk_transactions++;
        }
      for (guint i = first; i < end; i++)
        sq_job_finish (store, g_ptr_array_index (unit, i), txn_error, replies);
      first = end;
    }
  g_ptr_array_set_size (unit, 0);
}

/* ---- requests and reads ---- */

static void
sq_request_run (SqStore *store, SqJob *job, GPtrArray *replies)
{
  SqDb *db = store->db;
  const SqOp *op = job->op;
  SqReply *reply = g_steal_pointer (&job->reply);
  GVariant *result = NULL;
  GError *error = NULL;
  gboolean ok;

  ok = (!op->writes || sq_db_set_sync (db, 2, &error)) && sq_db_begin (db, op->writes, &error);
  if (ok)
    {
      ok = op->func (store, job->args, &result, &error);
      if (ok && !sq_db_commit (db, &error))
        ok = FALSE;
      if (!ok)
        sq_db_rollback (db);
      else if (op->writes)
        store->stats.transactions++;
    }
  if (ok)
    reply->result = result != NULL ? g_variant_ref_sink (result) : NULL;
  else
    {
      g_clear_pointer (&result, g_variant_unref);
      reply->error = error;
    }
  g_ptr_array_add (replies, reply);
  sq_job_free (job);
}

static void
sq_read_run (SqStore *store, SqJob *job, GPtrArray *replies)
{
  SqReply *reply = g_steal_pointer (&job->reply);

  sq_message_read (store, job->message_id, job->offset, job->max, &reply->data, &reply->eof, &reply->error);
  g_ptr_array_add (replies, reply);
  sq_job_free (job);
}

/* Works through one batch of jobs; TRUE when told to stop. */
static gboolean
sq_process (SqStore *store, GQueue *jobs)
{
  GPtrArray *replies = g_ptr_array_new_with_free_func ((GDestroyNotify) sq_reply_free);
  g_autoptr (GPtrArray) unit = g_ptr_array_new ();
  gboolean stop = FALSE;
  gboolean full = FALSE;
  guint commits = 0;
  gsize bytes = 0;
  SqJob *job;

  while ((job = g_queue_pop_head (jobs)) != NULL)
    switch (job->kind)
      {
      case SQ_JOB_CHUNK:
      case SQ_JOB_ABORT:
      case SQ_JOB_COMMIT:
        g_ptr_array_add (unit, job);
        if (job->data != NULL)
          bytes += g_bytes_get_size (job->data);
        if (job->kind == SQ_JOB_COMMIT)
          {
            full = TRUE;
            commits++;
          }
        if (commits >= (guint) store->config->max_batch || bytes >= SQ_UNIT_MAX_BYTES)
          {
            sq_unit_run (store, unit, full, replies);
            full = FALSE;
            commits = 0;
            bytes = 0;
          }
        break;
      case SQ_JOB_READ:
        sq_read_run (store, job, replies);
        break;
      case SQ_JOB_REQUEST:
        sq_unit_run (store, unit, full, replies);
        full = FALSE;
        commits = 0;
        bytes = 0;
        sq_request_run (store, job, replies);
        break;
      case SQ_JOB_STOP:
        stop = TRUE;
        sq_job_free (job);
        break;
      }
  sq_unit_run (store, unit, full, replies);
  sq_post (store, replies);
  sq_checkpoint (store);
  return stop;
}

/* ---- the thread ---- */

static gboolean
sq_thread_open (SqStore *store, GError **error)
{
  store->db = sq_db_open (store->path, store->config, error);
  if (store->db == NULL || !sq_schema_migrate (store->db, &store->schema_version, error)
      || !sq_instance_lock (store, error) || !sq_recover (store, error))
    return FALSE;
  if (store->config->background_checkpoint)
    store->checkpointer = sq_checkpointer_start (store->path, store->config, error);
  return !store->config->background_checkpoint || store->checkpointer != NULL;
}

static gpointer
sq_thread_main (gpointer data)
{
  SqStore *store = data;
  GError *error = NULL;
  gboolean ok = sq_thread_open (store, &error);

  g_mutex_lock (&store->lock);
  store->ready = TRUE;
  store->start_error = error;
  g_cond_broadcast (&store->cond);
  g_mutex_unlock (&store->lock);

  while (ok)
    {
      GQueue batch;

      g_mutex_lock (&store->lock);
      while (g_queue_is_empty (&store->jobs))
        g_cond_wait (&store->cond, &store->lock);
      batch = store->jobs;
      g_queue_init (&store->jobs);
      store->queued_bytes = 0;
      g_mutex_unlock (&store->lock);
      if (sq_process (store, &batch))
        break;
    }
  if (ok && store->discard->len > 0 && sq_db_begin (store->db, TRUE, NULL))
    {
      if (sq_discard_run (store) && sq_db_commit (store->db, NULL))
        g_array_set_size (store->discard, 0);
      else
        sq_db_rollback (store->db);
    }
  g_clear_pointer (&store->checkpointer, sq_checkpointer_stop);
  g_clear_pointer (&store->db, sq_db_close);
  sq_instance_unlock (store);
  sq_store_unref (store);
  return NULL;
}

gboolean
sq_store_start (SqStore *store, GError **error)
{
  const SqConfig *c = store->config;
  GError *start_error;

  g_return_val_if_fail (store->thread == NULL, FALSE);
  if (c->database[0] != '\0')
    store->path = g_strdup (c->database);
  else
    store->path = g_build_filename (pb_module_get_state_dir (store->module), "storage-sqlite", "pillarbox.db", NULL);
  store->dir = g_path_get_dirname (store->path);
  if (g_mkdir_with_parents (store->dir, 0700) != 0)
    {
      int saved = errno;
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED, "cannot create %s: %s", store->dir,
                   g_strerror (saved));
      return FALSE;
    }
  store->context = g_main_context_ref_thread_default ();
  store->thread = g_thread_try_new ("pb-storage", sq_thread_main, sq_store_ref (store), error);
  if (store->thread == NULL)
    {
      sq_store_unref (store);
      return FALSE;
    }

  /* Opening, migrating and recovering happen on the storage thread; start
   * may wait for them (the loop serves nobody yet). */
  g_mutex_lock (&store->lock);
  while (!store->ready)
    g_cond_wait (&store->cond, &store->lock);
  start_error = g_steal_pointer (&store->start_error);
  g_mutex_unlock (&store->lock);
  if (start_error != NULL)
    {
      g_thread_join (g_steal_pointer (&store->thread));
      g_propagate_error (error, start_error);
      return FALSE;
    }
  store->running = TRUE;
  g_info ("storage-sqlite: database %s, schema version %u, recovered %" G_GUINT64_FORMAT
          " unfinished message%s, released %" G_GUINT64_FORMAT " unreferenced",
          store->path, store->schema_version, store->stats.recovered, store->stats.recovered == 1 ? "" : "s",
          store->stats.released);
  return TRUE;
}

void
sq_store_stop (SqStore *store)
{
  GQueue stop = G_QUEUE_INIT;

  store->running = FALSE;
  if (store->thread == NULL)
    return;
  /* Everything queued before the stop is done first: commits in flight complete. */
  sq_store_flush (store);
  g_queue_push_tail (&stop, sq_job_new (SQ_JOB_STOP));
  sq_store_hand_over (store, &stop);
  g_thread_join (g_steal_pointer (&store->thread));
}
