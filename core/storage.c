/* SPDX-License-Identifier: MIT */
/* Forwards the pb_store_* API to the registered storage backend, keeping the backend alive meanwhile. */
#include "config.h"
#include "core-private.h"

#include <string.h>

G_DEFINE_QUARK (pb-store-error-quark, pb_store_error)

struct _PbStoreMessage {
  PbGeneration *gen;          /* a reference: the backend must outlive the message */
  gpointer handle;            /* the backend's */
  gint64 started;
  gint64 committed;           /* when pb_store_message_commit() was called */
  gboolean has_remote;        /* the queue manager is told once it is committed */
};

PbStoreMessage *
pb_store_message_begin (PbModule *module, const PbEnvelope *envelope, GError **error)
{
  g_return_val_if_fail (module != NULL && envelope != NULL, NULL);
  return pb_store_message_begin_gen (module->gen, envelope, error);
}

PbStoreMessage *
pb_store_message_begin_gen (PbGeneration *gen, const PbEnvelope *envelope, GError **error)
{
  PbStoreMessage *msg;
  PbEnvelope full;
  gpointer handle;

  /* A module built against ABI 1.0 passes the envelope without `origin`:
   * the backend is always given the whole struct, with the fields the
   * caller did not know about left empty. */
  g_return_val_if_fail (envelope->struct_size >= G_STRUCT_OFFSET (PbEnvelope, origin), NULL);
  if (envelope->struct_size < sizeof (PbEnvelope))
    {
      memset (&full, 0, sizeof full);
      memcpy (&full, envelope, envelope->struct_size);
      full.struct_size = sizeof full;
      envelope = &full;
    }
  if (gen->storage_module == NULL)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NO_BACKEND,
                   "no storage module is configured");
      return NULL;
    }
  handle = gen->storage.message_begin (gen->storage.backend, envelope, error);
  if (handle == NULL)
    return NULL;
  msg = g_new0 (PbStoreMessage, 1);
  msg->gen = pb_generation_ref (gen);
  msg->handle = handle;
  msg->started = g_get_monotonic_time ();
  for (guint i = 0; envelope->recipients != NULL && envelope->recipients[i] != NULL; i++)
    if (envelope->recipients[i]->mailbox == NULL)
      msg->has_remote = TRUE;
  return msg;
}

gboolean
pb_store_message_write (PbStoreMessage *message, const void *data, gsize len, GError **error)
{
  g_return_val_if_fail (message != NULL, FALSE);
  return message->gen->storage.message_write (message->gen->storage.backend, message->handle, data, len, error);
}

typedef struct {
  PbStoreMessage *msg;
  PbStoreCommitFunc done;
  gpointer user_data;
} CommitCall;

/* Commit latency, from pb_store_message_commit() to its callback, for
 * `status` (and so for metrics). Process-wide so that a reload does not
 * reset it. No lock: backends call `done` on the loop thread (the ABI's
 * contract), the only thread that reads these. Upper bounds in
 * microseconds, Prometheus-style "le" buckets; the last is +Inf. */
static const gint64 commit_bounds_us[] = {
  1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
static guint64 commit_counts[G_N_ELEMENTS (commit_bounds_us) + 1];  /* not cumulative */
static guint64 commit_sum_us;

static void
commit_latency_record (gint64 us)
{
  guint i = 0;

  us = MAX (us, 0);
  while (i < G_N_ELEMENTS (commit_bounds_us) && us > commit_bounds_us[i])
    i++;
  commit_counts[i]++;
  commit_sum_us += (guint64) us;
}

GVariant *
pb_store_commit_latency_variant (void)
{
  GVariantBuilder dict, bounds, counts;
  guint64 cumulative = 0;

  g_variant_builder_init (&bounds, G_VARIANT_TYPE ("ad"));
  g_variant_builder_init (&counts, G_VARIANT_TYPE ("at"));
  for (guint i = 0; i < G_N_ELEMENTS (commit_counts); i++)
    {
      cumulative += commit_counts[i];
      if (i < G_N_ELEMENTS (commit_bounds_us))
        {
          g_variant_builder_add (&bounds, "d", (double) commit_bounds_us[i] / G_USEC_PER_SEC);
          g_variant_builder_add (&counts, "t", cumulative);
        }
    }
  g_variant_builder_init (&dict, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&dict, "{sv}", "bounds", g_variant_builder_end (&bounds));
  g_variant_builder_add (&dict, "{sv}", "counts", g_variant_builder_end (&counts));
  g_variant_builder_add (&dict, "{sv}", "sum", g_variant_new_double ((double) commit_sum_us / G_USEC_PER_SEC));
  g_variant_builder_add (&dict, "{sv}", "count", g_variant_new_uint64 (cumulative));
  return g_variant_builder_end (&dict);
}

static void
store_message_free (PbStoreMessage *msg)
{
  pb_generation_unref (msg->gen);
  g_free (msg);
}

static void
store_commit_done (const char *queue_id, const GError *error, gpointer data)
{
  CommitCall *call = data;
  gint64 took = g_get_monotonic_time () - call->msg->committed;

  commit_latency_record (took);
  g_debug ("commit %s in %" G_GINT64_FORMAT " us", queue_id != NULL ? queue_id : "(failed)", took);
  call->done (queue_id, error, call->user_data);
  if (queue_id != NULL && call->msg->has_remote)
    {
      PbGeneration *current = pb_generation_get_current ();
      if (current != NULL && current->queue != NULL)
        pb_queue_kick_new (current->queue);
    }
  store_message_free (call->msg);
  g_free (call);
}

void
pb_store_message_commit (PbStoreMessage *message, PbStoreCommitFunc done, gpointer user_data)
{
  CommitCall *call;

  g_return_if_fail (message != NULL && done != NULL);
  call = g_new0 (CommitCall, 1);
  call->msg = message;
  call->done = done;
  call->user_data = user_data;
  message->committed = g_get_monotonic_time ();
  message->gen->storage.message_commit (message->gen->storage.backend, message->handle, store_commit_done, call);
}

void
pb_store_message_abort (PbStoreMessage *message)
{
  g_return_if_fail (message != NULL);
  message->gen->storage.message_abort (message->gen->storage.backend, message->handle);
  store_message_free (message);
}

/* Keeps the generation (and so the backend) alive until the backend answers. */
typedef struct {
  PbGeneration *gen;
  union {
    PbStoreReadFunc read;
    PbStoreResultFunc result;
  } done;
  gpointer user_data;
} StoreCall;

static StoreCall *
store_call_new (PbGeneration *gen, gpointer done, gpointer user_data)
{
  StoreCall *call = g_new0 (StoreCall, 1);
  call->gen = pb_generation_ref (gen);
  call->done.result = (PbStoreResultFunc) done;
  call->user_data = user_data;
  return call;
}

static void
store_call_free (StoreCall *call)
{
  pb_generation_unref (call->gen);
  g_free (call);
}

static void
store_read_done (const guint8 *data, gsize len, gboolean eof, const GError *error, gpointer user_data)
{
  StoreCall *call = user_data;
  call->done.read (data, len, eof, error, call->user_data);
  store_call_free (call);
}

void
pb_store_message_read (PbModule *module, const char *message_id, gint64 offset, gsize max,
                       PbStoreReadFunc done, gpointer user_data)
{
  PbGeneration *gen;

  g_return_if_fail (module != NULL && message_id != NULL && done != NULL && offset >= 0);
  gen = module->gen;
  if (gen->storage_module == NULL)
    {
      g_autoptr (GError) error = g_error_new (PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NO_BACKEND,
                                              "no storage module is configured");
      done (NULL, 0, TRUE, error, user_data);
      return;
    }
  gen->storage.message_read (gen->storage.backend, message_id, offset, max, store_read_done,
                             store_call_new (gen, (gpointer) done, user_data));
}

static void
store_request_done (GVariant *result, const GError *error, gpointer user_data)
{
  StoreCall *call = user_data;
  if (call->done.result != NULL)
    call->done.result (result, error, call->user_data);
  store_call_free (call);
}

void
pb_store_request (PbModule *module, const char *operation, GVariant *args, PbStoreResultFunc done,
                  gpointer user_data)
{
  g_return_if_fail (module != NULL && operation != NULL);
  pb_store_request_gen (module->gen, operation, args, done, user_data);
}

void
pb_store_request_gen (PbGeneration *gen, const char *operation, GVariant *args, PbStoreResultFunc done,
                      gpointer user_data)
{
  g_autoptr (GVariant) owned = NULL;

  if (args != NULL)
    owned = g_variant_ref_sink (args);
  if (gen->storage_module == NULL)
    {
      g_autoptr (GError) error = g_error_new (PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NO_BACKEND,
                                              "no storage module is configured");
      if (done != NULL)
        done (NULL, error, user_data);
      return;
    }
  gen->storage.request (gen->storage.backend, operation, owned, store_request_done,
                        store_call_new (gen, (gpointer) done, user_data));
}
