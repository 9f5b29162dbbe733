/* SPDX-License-Identifier: MIT */
/* Forwards the pb_store_* API to the registered storage backend, keeping the backend alive meanwhile. */
#include "config.h"
#include "core-private.h"

G_DEFINE_QUARK (pb-store-error-quark, pb_store_error)

struct _PbStoreMessage {
  PbGeneration *gen;          /* a reference: the backend must outlive the message */
  gpointer handle;            /* the backend's */
  gint64 started;
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
  gpointer handle;

  g_return_val_if_fail (envelope->struct_size >= sizeof (PbEnvelope), NULL);
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

  g_debug ("commit %s in %" G_GINT64_FORMAT " us", queue_id != NULL ? queue_id : "(failed)",
           g_get_monotonic_time () - call->msg->started);
  call->done (queue_id, error, call->user_data);
  if (queue_id != NULL && call->msg->has_remote)
    {
      PbGeneration *current = pb_generation_get_current ();
      if (current != NULL && current->queue != NULL)
        pb_queue_kick (current->queue);
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
