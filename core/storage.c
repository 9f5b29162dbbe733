/* SPDX-License-Identifier: MIT */
/* Forwards the pb_store_* message API to the registered storage backend. */
#include "config.h"
#include "core-private.h"

G_DEFINE_QUARK (pb-store-error-quark, pb_store_error)

struct _PbStoreMessage {
  PbGeneration *gen;          /* a reference: the backend must outlive the message */
  gpointer handle;            /* the backend's */
  gint64 started;
};

PbStoreMessage *
pb_store_message_begin (PbModule *module, const PbEnvelope *envelope, GError **error)
{
  PbGeneration *gen;
  PbStoreMessage *msg;
  gpointer handle;

  g_return_val_if_fail (module != NULL && envelope != NULL, NULL);
  g_return_val_if_fail (envelope->struct_size >= sizeof (PbEnvelope), NULL);
  gen = module->gen;
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
