/* SPDX-License-Identifier: MIT */
/* The storage backend registration and the durable message, mailbox, queue and directory API built on it. */
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
 * Every function is called on the loop thread and every completion runs on
 * the loop thread; a backend does its disk work on a thread of its own.
 *
 * **Writing a message** is asynchronous and streamed: begin with the
 * envelope (whose recipients the router has already resolved), write
 * chunks as they arrive from the network (the backend buffers or spools
 * them; a whole message is never held in memory), then commit. The
 * commit's completion runs **only once the message is on stable storage**:
 * the message itself, a mailbox entry for every local recipient (local
 * delivery is part of the same transaction) and a queue entry for every
 * remote one. A protocol module answers "250" only then. Backends batch
 * commits that arrive together into one sync (group commit). Abort
 * discards everything written.
 *
 * **Everything else** (mailboxes, the queue, the directory) goes through
 * one generic call, pb_store_request(), naming an operation and passing a
 * #GVariant, so operations can be added without changing this table. The
 * operations, their argument and result types, are listed with
 * pb_store_request().
 */

/**
 * PbRecipient:
 * @struct_size: sizeof (PbRecipient)
 * @address: the recipient as given in RCPT TO (after any tag stripping)
 * @mailbox: (nullable): the local mailbox (user name) it is delivered to,
 *   or %NULL for a remote recipient that goes to the outbound queue
 * @notify: (nullable): the DSN NOTIFY parameter (RFC 3461 §4.1), e.g. "FAILURE,DELAY"
 * @orcpt: (nullable): the DSN ORCPT parameter (RFC 3461 §4.2), as received
 * @delivery_headers: (nullable): for a local recipient, header lines (each
 *   ending in CRLF) that begin this mailbox's copy only: "Return-Path:" and
 *   "Delivered-To:" are added at delivery (RFC 5321 §4.4), not to the
 *   message that may also travel on to remote recipients
 *
 * One recipient of a message being stored. An address that expanded to
 * several mailboxes (a list) is given once per mailbox.
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  const char *address;
  const char *mailbox;
  const char *notify;
  const char *orcpt;
  const char *delivery_headers;
} PbRecipient;

/**
 * PbEnvelope:
 * @struct_size: sizeof (PbEnvelope)
 * @mail_from: the reverse path, "" for the null sender
 * @recipients: %NULL-terminated recipients
 * @session_id: (nullable): the session that received it, for logs
 * @client_ip: (nullable): the client's address
 * @auth_user: (nullable): who authenticated
 * @dsn_ret: (nullable): DSN RET parameter ("FULL" or "HDRS")
 * @dsn_envid: (nullable): DSN ENVID parameter
 * @size_hint: the size the client announced (SIZE=), or 0
 * @origin: (nullable): a key naming where the message came from, e.g.
 *   "pop3-collector/NAME/UIDL" (Since: ABI 1.1). The backend records it in
 *   the same transaction as the message, and a commit whose origin is
 *   already recorded fails with %PB_STORE_ERROR_EXISTS and stores nothing:
 *   a fetcher that crashes between commit and "seen" cannot store a message
 *   twice. Read only when @struct_size covers it (a module built against
 *   ABI 1.0 passes the smaller struct); the records are listed and dropped
 *   with the `origin.list` and `origin.forget` operations.
 *
 * The envelope of a message being stored.
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  const char *mail_from;
  const PbRecipient *const *recipients;
  const char *session_id;
  const char *client_ip;
  const char *auth_user;
  const char *dsn_ret;
  const char *dsn_envid;
  gint64 size_hint;
  const char *origin;
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
 * @PB_STORE_ERROR_TOO_BIG: a size limit was exceeded (552 5.2.3)
 * @PB_STORE_ERROR_FAILED: anything else; temporary for the client (451 4.3.0)
 * @PB_STORE_ERROR_NOT_FOUND: the named object does not exist
 * @PB_STORE_ERROR_EXISTS: the object to create exists already
 * @PB_STORE_ERROR_INVALID: the request's arguments are wrong (bad type, bad name)
 * @PB_STORE_ERROR_NOT_SUPPORTED: the backend does not implement the operation
 *
 * Storage failures; protocol modules turn them into replies, the control
 * commands into messages.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_STORE_ERROR_NO_BACKEND,
  PB_STORE_ERROR_NO_SPACE,
  PB_STORE_ERROR_TOO_BIG,
  PB_STORE_ERROR_FAILED,
  PB_STORE_ERROR_NOT_FOUND,
  PB_STORE_ERROR_EXISTS,
  PB_STORE_ERROR_INVALID,
  PB_STORE_ERROR_NOT_SUPPORTED
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
 * PbStoreReadFunc:
 * @data: (nullable): the octets read (valid only during the call)
 * @len: how many; 0 with @eof at the end of the message
 * @eof: %TRUE when no octets follow these
 * @error: (nullable): why the read failed
 * @user_data: as given
 *
 * One chunk of a message, on the loop thread.
 *
 * Since: ABI 1.0
 */
typedef void (*PbStoreReadFunc) (const guint8 *data, gsize len, gboolean eof, const GError *error,
                                 gpointer user_data);

/**
 * PbStoreResultFunc:
 * @result: (nullable): the operation's result (see pb_store_request()), or
 *   %NULL on error or for operations without a result
 * @error: (nullable): why it failed
 * @user_data: as given
 *
 * The end of a pb_store_request(), on the loop thread. @result is owned by
 * the caller of the function (take a reference to keep it).
 *
 * Since: ABI 1.0
 */
typedef void (*PbStoreResultFunc) (GVariant *result, const GError *error, gpointer user_data);

/**
 * PbStorageSpec:
 * @struct_size: sizeof (PbStorageSpec)
 * @name: the backend's name ("sqlite")
 * @backend: the backend's own state, passed to every function
 * @message_begin: starts a message; returns the backend's handle or %NULL with @error
 *   (%PB_STORE_ERROR_NO_SPACE below the free-space reserve)
 * @message_write: appends octets; may fail (disk full, too big); must not block the loop
 * @message_commit: makes the message, its mailbox entries and queue entries durable in one
 *   transaction and calls @done on the loop thread; the handle is the backend's until then
 * @message_abort: discards a message that was not committed
 * @message_read: reads up to @max octets of message @message_id (a queue id or a mailbox
 *   entry's message id) from @offset and calls @done once
 * @request: runs a named operation (see pb_store_request()) and calls @done once; @args
 *   (nullable) is borrowed: take a reference to keep it beyond the call
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
  void (*message_read) (gpointer backend, const char *message_id, gint64 offset, gsize max,
                        PbStoreReadFunc done, gpointer user_data);
  void (*request) (gpointer backend, const char *operation, GVariant *args,
                   PbStoreResultFunc done, gpointer user_data);
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

/**
 * pb_store_message_read:
 * @module: the calling module
 * @message_id: a queue id, or the message id of a mailbox entry
 * @offset: where to start, in octets
 * @max: the most octets wanted (the backend may return fewer)
 * @done: called once with the octets, on the loop thread
 * @user_data: passed to @done
 *
 * Reads part of a stored message. A reader of a whole message calls again
 * from @done with the offset advanced until @eof.
 *
 * Since: ABI 1.0
 */
PB_API void pb_store_message_read (PbModule *module, const char *message_id, gint64 offset, gsize max,
                                   PbStoreReadFunc done, gpointer user_data);

/**
 * pb_store_request:
 * @module: the calling module
 * @operation: the operation's name
 * @args: (transfer floating) (nullable): its arguments
 * @done: (nullable): called once with the result, on the loop thread
 * @user_data: passed to @done
 *
 * Runs a storage operation. The operations of ABI 1.0, with the GVariant
 * type of their arguments → result:
 *
 * Directory — domains. A local domain is either a domain of its own, or an
 * alias of another local domain (`alias-of`). In a domain with `shared`
 * users (VPOP3's "all domains are aliases") a user `bob` receives mail for
 * bob at every shared domain; otherwise users are named `bob@domain`.
 * - `domain.add` `(ssb)` name, alias-of ("" for none), shared → nothing
 * - `domain.del` `(s)` → nothing (%PB_STORE_ERROR_NOT_FOUND; refused while users remain)
 * - `domain.list` `()` → `a(ssb)` name, alias-of, shared
 *
 * Directory — users. `hash` is a crypt(3) string (yescrypt); the backend
 * never sees a password. `protocols` is a comma list ("smtp,pop3").
 * - `user.add` `(sssx)` name, hash, protocols, max-message-size (0: none) → nothing
 * - `user.del` `(s)` → nothing; the mailbox goes with the user
 * - `user.set` `(sa{sv})` name, changes: "hash" s, "protocols" s, "max-size" x → nothing
 * - `user.get` `(s)` → `(sssx)` name, hash, protocols, max-size (NOT_FOUND if none)
 * - `user.list` `()` → `a(ssxxx)` name, protocols, max-size, messages, octets
 *
 * Directory — aliases and distribution lists (addresses are `local@domain`).
 * - `alias.add` `(ss)` address, target (a user name or any address) → nothing
 * - `alias.del` `(s)` → nothing
 * - `alias.list` `()` → `a(ss)`
 * - `list.add` `(s)`, `list.del` `(s)` → nothing; `list.list` `()` → `as`
 * - `list.add-member` `(ss)`, `list.del-member` `(ss)` list, member → nothing
 * - `list.members` `(s)` → `as`
 * - `directory.lookup` `(s)` address → `(bss as)`: is the domain local, the kind
 *   ("user", "alias", "list" or "" for none), the canonical name (user name,
 *   or the address), and the targets (alias target, list members). One
 *   step only: the core's router expands aliases and lists.
 *
 * Mailboxes. Every entry has a UID that never changes and is never reused.
 * An entry's content is its delivery headers followed by the message.
 * - `mailbox.list` `(s)` user → `a(tsxxs)` uid, message id, size in octets (delivery
 *   headers included), time received (unix), delivery headers
 * - `mailbox.delete` `(sat)` user, uids → `t` how many were deleted, all in one transaction
 * - `mailbox.stat` `(s)` user → `(tx)` messages, octets
 *
 * Queue (remote recipients). Each remote recipient is a queue entry with a
 * numeric id, a state ("pending", "deferred", "delivered", "bounced"), an
 * attempt count, the time of its next attempt and the last remote reply.
 * The queue manager (core) is the only writer of queue state.
 * - `queue.list` `()` → `a(sssxsxxs)` queue id, sender, recipient, size, state,
 *   attempts, next attempt (unix), last reply
 * - `queue.due` `(xu)` now (unix), limit → `a(tsssxuxssss)` entry id, queue id, sender,
 *   recipient, size, attempts, queued at (unix), DSN notify, DSN orcpt, DSN ret,
 *   DSN envid: pending and deferred entries whose next attempt is due, oldest
 *   message first
 * - `queue.due-after` `(xut)` now, limit, entry id → as `queue.due`, only entries
 *   with a greater id (added since), in id order: the queue manager reads what
 *   new mail brought without reading the whole queue again (ABI 1.1)
 * - `queue.result` `(tsusx)` entry id, new state, attempts, last reply, next attempt
 *   (unix, for "deferred") → nothing; a message whose entries are all final and
 *   that no mailbox entry references is deleted
 * - `queue.attempt` `(txss)` entry id, time (unix), server, reply → nothing: one
 *   line of the entry's history, for `pillarbox queue show`
 * - `queue.get` `(s)` queue id → `(sxxssa(tssuxsa(xss)))` sender, size, queued at,
 *   DSN ret, DSN envid, entries: id, recipient, state, attempts, next attempt, last
 *   reply, history (time, server, reply)
 * - `queue.delete` `(s)` queue id, or "" for every message in the queue (ABI 1.1)
 *   → `u` entries removed
 * - `queue.retry` `(s)` queue id, or "" for every deferred entry → `u` entries made
 *   due now
 * - `queue.warn` `(t)` entry id → `b`: marks that the sender was warned of the
 *   delay; %TRUE only for the call that marked it (ABI 1.1)
 *
 * Origins (ABI 1.1): the keys recorded with messages through
 * #PbEnvelope's `origin`, each with the unix time it was first recorded.
 * Records outlive their message (a message deleted from its mailbox must
 * not be fetched again); the fetcher drops them when the source forgets
 * the message.
 * - `origin.list` `(s)` prefix ("" for all) → `a(sx)` key, first seen (unix),
 *   in key order
 * - `origin.forget` `(sb)` key, whether it is a prefix (%TRUE: every key
 *   starting with it) → `t` records dropped
 * - `origin.forget-keys` `(as)` keys → `t` records dropped, in one transaction
 *
 * Unknown operations fail with %PB_STORE_ERROR_NOT_SUPPORTED.
 *
 * Since: ABI 1.0
 */
PB_API void pb_store_request (PbModule *module, const char *operation, GVariant *args,
                              PbStoreResultFunc done, gpointer user_data);

PB_END_DECLS

#endif /* PILLARBOX_PB_STORAGE_H */
