/* SPDX-License-Identifier: MIT */
/* The storage backend registration and the durable message-writing API built on it. */
#ifndef PILLARBOX_PB_STORAGE_H
#define PILLARBOX_PB_STORAGE_H

#include <pillarbox/pb-abi.h>
#include <pillarbox/pb-module.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-storage
 * @title: Storage
 *
 * Exactly one module provides storage (`storage-sqlite` in the embedded
 * default). It registers a #PbStorageSpec in `init`. Every other module
 * reaches storage only through the `pb_store_*` functions, which the core
 * forwards to the backend and times (commit latency is a core metric).
 *
 * Writing a message is asynchronous and streamed: begin with the
 * envelope, write chunks as they arrive from the network (the backend
 * buffers or spools them; a whole message is never held in memory), then
 * commit. The commit's completion runs on the loop thread **only once the
 * message is on stable storage**; a protocol module answers "250" only
 * then. Backends are expected to batch commits that arrive together into
 * one sync (group commit). Abort discards everything written.
 *
 * Queue, mailbox and directory operations join this table in later
 * minors; fields are only appended.
 */

/**
 * PbEnvelope:
 * @struct_size: sizeof (PbEnvelope)
 * @mail_from: the reverse path, "" for the null sender
 * @recipients: %NULL-terminated forward paths
 * @session_id: (nullable): the session that received it, for logs
 * @client_ip: (nullable): the client's address
 * @auth_user: (nullable): who authenticated
 *
 * The envelope of a message being stored.
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  const char *mail_from;
  const char *const *recipients;
  const char *session_id;
  const char *client_ip;
  const char *auth_user;
} PbEnvelope;

/**
 * PB_STORE_ERROR_DOMAIN:
 *
 * The #GError domain of storage errors.
 *
 * Since: ABI 1.0
 */
#define PB_STORE_ERROR_DOMAIN (pb_store_error_quark ())

/**
 * PbStoreError:
 * @PB_STORE_ERROR_NO_BACKEND: no module provides storage
 * @PB_STORE_ERROR_NO_SPACE: the free-space reserve is reached (SMTP 452 4.3.1)
 * @PB_STORE_ERROR_TOO_BIG: a size limit was exceeded
 * @PB_STORE_ERROR_FAILED: anything else; temporary for the client (451 4.3.0)
 *
 * Storage failures a protocol module turns into replies.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_STORE_ERROR_NO_BACKEND,
  PB_STORE_ERROR_NO_SPACE,
  PB_STORE_ERROR_TOO_BIG,
  PB_STORE_ERROR_FAILED
} PbStoreError;

/**
 * pb_store_error_quark:
 *
 * Returns: the #GQuark of %PB_STORE_ERROR_DOMAIN
 *
 * Since: ABI 1.0
 */
PB_API GQuark pb_store_error_quark (void);

/**
 * PbStoreCommitFunc:
 * @queue_id: (nullable): the new message's queue id, or %NULL on failure
 * @error: (nullable): why the commit failed
 * @user_data: as given
 *
 * The end of a commit, on the loop thread.
 *
 * Since: ABI 1.0
 */
typedef void (*PbStoreCommitFunc) (const char *queue_id, const GError *error, gpointer user_data);

/**
 * PbStorageSpec:
 * @struct_size: sizeof (PbStorageSpec)
 * @name: the backend's name ("sqlite")
 * @backend: the backend's own state, passed to every function
 * @message_begin: starts a message; returns the backend's handle or %NULL with @error
 * @message_write: appends octets; may fail (disk full); must not block the loop
 *   for disk work (queue it to the storage thread)
 * @message_commit: makes the message durable and calls @done on the loop thread;
 *   the handle is the backend's until @done has run
 * @message_abort: discards a message that was not committed
 *
 * What a storage backend registers.
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  const char *name;
  gpointer backend;
  gpointer (*message_begin) (gpointer backend, const PbEnvelope *envelope, GError **error);
  gboolean (*message_write) (gpointer backend, gpointer message, const guint8 *data, gsize len, GError **error);
  void (*message_commit) (gpointer backend, gpointer message, PbStoreCommitFunc done, gpointer user_data);
  void (*message_abort) (gpointer backend, gpointer message);
} PbStorageSpec;

/**
 * pb_module_set_storage:
 * @module: the registering module (only during `init`)
 * @spec: the backend (copied)
 * @error: where to report that another module already provides storage
 *
 * Returns: %TRUE on success
 *
 * Since: ABI 1.0
 */
PB_API gboolean pb_module_set_storage (PbModule *module, const PbStorageSpec *spec, GError **error);

/**
 * PbStoreMessage:
 *
 * A message being written, from begin until commit completes or abort.
 *
 * Since: ABI 1.0
 */
typedef struct _PbStoreMessage PbStoreMessage;

/**
 * pb_store_message_begin:
 * @module: the calling module
 * @envelope: the envelope
 * @error: %PB_STORE_ERROR_NO_BACKEND, %PB_STORE_ERROR_NO_SPACE, ...
 *
 * Returns: (transfer full) (nullable): the message, or %NULL with @error
 *
 * Since: ABI 1.0
 */
PB_API PbStoreMessage *pb_store_message_begin (PbModule *module, const PbEnvelope *envelope, GError **error);

/**
 * pb_store_message_write:
 * @message: a message
 * @data: octets of the message as it will be stored (headers and body, CRLF line ends)
 * @len: how many
 * @error: where to report failure; the message must then be aborted
 *
 * Returns: %TRUE on success
 *
 * Since: ABI 1.0
 */
PB_API gboolean pb_store_message_write (PbStoreMessage *message, const void *data, gsize len, GError **error);

/**
 * pb_store_message_commit:
 * @message: (transfer full): a message
 * @done: called on the loop thread once the message is on stable storage, or failed
 * @user_data: passed to @done
 *
 * Since: ABI 1.0
 */
PB_API void pb_store_message_commit (PbStoreMessage *message, PbStoreCommitFunc done, gpointer user_data);

/**
 * pb_store_message_abort:
 * @message: (transfer full): a message not committed
 *
 * Since: ABI 1.0
 */
PB_API void pb_store_message_abort (PbStoreMessage *message);

PB_END_DECLS

#endif /* PILLARBOX_PB_STORAGE_H */
