/* SPDX-License-Identifier: MIT */
/* The PbStorageSpec functions: on the loop thread, they buffer and queue, never touching the disk. */
#include "config.h"
#include "sqlite-private.h"

#include <string.h>
#include <sys/statvfs.h>

/* The free-space reserve: statvfs() at most once a second. */
static gboolean
sq_check_space (SqStore *store, gint64 need, GError **error)
{
  gint64 now = g_get_monotonic_time ();
  gint64 reserve = store->config->free_space_reserve;

  if (reserve <= 0)
    return TRUE;
  if (store->space_checked == 0 || now - store->space_checked >= G_USEC_PER_SEC)
    {
      struct statvfs st;

      store->space_checked = now;
      if (statvfs (store->dir, &st) == 0)
        store->space_free = (gint64) MIN ((guint64) st.f_bavail * (guint64) st.f_frsize, (guint64) G_MAXINT64);
      else
        store->space_free = G_MAXINT64;  /* unknown: let SQLITE_FULL decide */
    }
  if (store->space_free - need < reserve)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NO_SPACE,
                   "%" G_GINT64_FORMAT " MiB free where the database is, below the free-space reserve of %"
                   G_GINT64_FORMAT " MiB", store->space_free / (1024 * 1024), reserve / (1024 * 1024));
      return FALSE;
    }
  return TRUE;
}

static gboolean
sq_not_running (SqStore *store, GError **error)
{
  if (store->running)
    return FALSE;
  g_set_error_literal (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED, "storage-sqlite is not running");
  return TRUE;
}

static char *
sq_strdup_lower (const char *s)
{
  return s != NULL ? g_utf8_strdown (s, -1) : NULL;
}

static gpointer
sq_api_message_begin (gpointer backend, const PbEnvelope *envelope, GError **error)
{
  SqStore *store = backend;
  SqMessage *m;
  guint n = 0;

  if (sq_not_running (store, error))
    return NULL;
  while (envelope->recipients != NULL && envelope->recipients[n] != NULL)
    {
      const PbRecipient *r = envelope->recipients[n];
      g_return_val_if_fail (r->struct_size >= sizeof (PbRecipient) && r->address != NULL, NULL);
      if (!g_utf8_validate (r->address, -1, NULL) || (r->mailbox != NULL && !g_utf8_validate (r->mailbox, -1, NULL)))
        {
          g_set_error_literal (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID,
                               "a recipient is not valid UTF-8");
          return NULL;
        }
      n++;
    }
  if (n == 0)
    {
      g_set_error_literal (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "a message needs a recipient");
      return NULL;
    }
  if (!sq_check_space (store, MAX (envelope->size_hint, 0), error))
    return NULL;

  m = g_new0 (SqMessage, 1);
  m->store = store;
  m->mail_from = g_strdup (envelope->mail_from != NULL ? envelope->mail_from : "");
  m->session_id = g_strdup (envelope->session_id);
  m->client_ip = g_strdup (envelope->client_ip);
  m->auth_user = g_strdup (envelope->auth_user);
  m->dsn_ret = g_strdup (envelope->dsn_ret);
  m->dsn_envid = g_strdup (envelope->dsn_envid);
  if (PB_FIELD_PRESENT (envelope, PbEnvelope, origin) && envelope->origin != NULL)
    {
      if (*envelope->origin == '\0' || !g_utf8_validate (envelope->origin, -1, NULL))
        {
          g_set_error_literal (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID,
                               "a message's origin must be non-empty UTF-8");
          sq_message_free (m);
          return NULL;
        }
      m->origin = g_strdup (envelope->origin);
    }
  m->n_rcpts = n;
  m->rcpts = g_new0 (SqRecipient, n);
  for (guint i = 0; i < n; i++)
    {
      const PbRecipient *r = envelope->recipients[i];
      m->rcpts[i].address = g_strdup (r->address);
      m->rcpts[i].mailbox = sq_strdup_lower (r->mailbox);
      m->rcpts[i].notify = g_strdup (r->notify);
      m->rcpts[i].orcpt = g_strdup (r->orcpt);
      if (PB_FIELD_PRESENT (r, PbRecipient, delivery_headers) && r->mailbox != NULL)
        m->rcpts[i].headers = g_strdup (r->delivery_headers);
    }
  m->received = g_get_real_time () / G_USEC_PER_SEC;
  m->buf = g_byte_array_sized_new ((guint) CLAMP (envelope->size_hint, 4096, SQ_CHUNK_SIZE));
  return m;
}

/* Queues a full piece (CHUNK) or the end of the message (ABORT). */
static void
sq_hand_over (SqStore *store, SqMessage *m, SqJobKind kind)
{
  SqJob *job = sq_job_new (kind);

  job->message = m;
  if (kind == SQ_JOB_CHUNK)
    {
      job->data = g_byte_array_free_to_bytes (m->buf);
      m->buf = g_byte_array_sized_new (SQ_CHUNK_SIZE);
    }
  else
    g_clear_pointer (&m->buf, g_byte_array_unref);
  m->handed_over = TRUE;
  sq_store_push (store, job);
}

static gboolean
sq_api_message_write (gpointer backend, gpointer message, const guint8 *data, gsize len, GError **error)
{
  SqStore *store = backend;
  SqMessage *m = message;
  int failed = g_atomic_int_get (&m->failed);

  if (failed != 0)
    {
      g_set_error_literal (error, PB_STORE_ERROR_DOMAIN, failed - 1,
                           failed - 1 == PB_STORE_ERROR_NO_SPACE ? "the disk is full"
                                                                 : "part of the message could not be stored");
      return FALSE;
    }
  /* Full pieces go to the storage thread; the rest waits here. */
  while (len > 0)
    {
      gsize n = MIN (len, SQ_CHUNK_SIZE - m->buf->len);

      g_byte_array_append (m->buf, data, (guint) n);
      data += n;
      len -= n;
      m->written += (gint64) n;
      if (m->buf->len < SQ_CHUNK_SIZE)
        continue;
      if (sq_store_queued_bytes (store) > SQ_QUEUE_MAX_BYTES)
        {
          g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED,
                       "the storage thread is behind (%d MiB waiting for the disk)", SQ_QUEUE_MAX_BYTES / (1024 * 1024));
          return FALSE;
        }
      sq_hand_over (store, m, SQ_JOB_CHUNK);
    }
  return TRUE;
}

static void
sq_api_message_commit (gpointer backend, gpointer message, PbStoreCommitFunc done, gpointer user_data)
{
  SqStore *store = backend;
  SqMessage *m = message;
  SqJob *job = sq_job_new (SQ_JOB_COMMIT);

  job->message = m;
  job->data = g_byte_array_free_to_bytes (g_steal_pointer (&m->buf));
  job->reply = sq_reply_new (SQ_JOB_COMMIT);
  job->reply->done.commit = done;
  job->reply->user_data = user_data;
  m->handed_over = TRUE;
  sq_store_push (store, job);
}

static void
sq_api_message_abort (gpointer backend, gpointer message)
{
  SqStore *store = backend;
  SqMessage *m = message;

  if (!m->handed_over)
    {
      sq_message_free (m);  /* the storage thread never saw it */
      return;
    }
  sq_hand_over (store, m, SQ_JOB_ABORT);
}

static void
sq_api_message_read (gpointer backend, const char *message_id, gint64 offset, gsize max, PbStoreReadFunc done,
                     gpointer user_data)
{
  SqStore *store = backend;
  SqReply *reply = sq_reply_new (SQ_JOB_READ);
  SqJob *job;

  reply->done.read = done;
  reply->user_data = user_data;
  reply->eof = TRUE;
  if (sq_not_running (store, &reply->error))
    {
      sq_store_reply_later (store, reply);
      return;
    }
  job = sq_job_new (SQ_JOB_READ);
  job->message_id = g_strdup (message_id);
  job->offset = MAX (offset, 0);
  job->max = max;
  job->reply = reply;
  sq_store_push (store, job);
}

static void
sq_api_request (gpointer backend, const char *operation, GVariant *args, PbStoreResultFunc done, gpointer user_data)
{
  SqStore *store = backend;
  const SqOp *op = sq_op_find (operation);
  SqReply *reply = sq_reply_new (SQ_JOB_REQUEST);
  g_autoptr (GVariant) owned = args != NULL ? g_variant_ref_sink (args) : g_variant_ref_sink (g_variant_new ("()"));
  SqJob *job;

  reply->done.result = done;
  reply->user_data = user_data;
  if (op == NULL)
    g_set_error (&reply->error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_SUPPORTED,
                 "storage-sqlite does not implement '%s'", operation);
  else if (!g_variant_is_of_type (owned, G_VARIANT_TYPE (op->args_type)))
    g_set_error (&reply->error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "%s takes %s, not %s", op->name,
                 op->args_type, g_variant_get_type_string (owned));
  else
    sq_not_running (store, &reply->error);
  if (reply->error != NULL)
    {
      sq_store_reply_later (store, reply);
      return;
    }
  job = sq_job_new (SQ_JOB_REQUEST);
  job->op = op;
  job->args = g_steal_pointer (&owned);
  job->reply = reply;
  sq_store_push (store, job);
}

void
sq_api_fill_spec (SqStore *store, PbStorageSpec *spec)
{
  memset (spec, 0, sizeof *spec);
  spec->struct_size = sizeof *spec;
  spec->name = "sqlite";
  spec->backend = store;
  spec->message_begin = sq_api_message_begin;
  spec->message_write = sq_api_message_write;
  spec->message_commit = sq_api_message_commit;
  spec->message_abort = sq_api_message_abort;
  spec->message_read = sq_api_message_read;
  spec->request = sq_api_request;
}
