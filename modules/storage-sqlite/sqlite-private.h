/* SPDX-License-Identifier: MIT */
/* storage-sqlite internals: the instance, its storage thread, jobs, replies and the database helpers. */
#ifndef PILLARBOX_SQLITE_PRIVATE_H
#define PILLARBOX_SQLITE_PRIVATE_H

#include <pillarbox/pillarbox.h>
#include <sqlite3.h>

G_BEGIN_DECLS

/* A message body travels to the storage thread in pieces of this size: the
 * loop thread buffers at most one piece per message. */
#define SQ_CHUNK_SIZE (64 * 1024)
/* A read returns at most this much, whatever the caller asks for. */
#define SQ_READ_MAX (256 * 1024)
/* A transaction of body pieces is closed once it holds this many octets. */
#define SQ_UNIT_MAX_BYTES (8 * 1024 * 1024)
/* Past this many octets of body waiting for the storage thread (a disk
 * much slower than the network), writes fail instead of using more memory. */
#define SQ_QUEUE_MAX_BYTES (256 * 1024 * 1024)
/* The newest schema this module knows. */
#define SQ_SCHEMA_VERSION 4

/* The [module storage-sqlite] settings. */
typedef struct {
  char *database;
  gint64 free_space_reserve;
  gint64 max_batch;
  gint64 busy_timeout;
  gint64 max_database_size;
  gboolean background_checkpoint;
  gint64 checkpoint_size;
} SqConfig;

/* Counters kept by the storage thread (read only there: storage.stats runs on it). */
typedef struct {
  guint64 transactions;       /* write transactions committed */
  guint64 commits;            /* messages made durable and acknowledged */
  guint64 fsync_batches;      /* synchronous=FULL transactions that carried message commits */
  guint64 largest_batch;      /* the most messages one such transaction carried */
  guint64 chunk_transactions; /* synchronous=NORMAL transactions of body pieces only */
  guint64 checkpoints;
  guint64 recovered;          /* unfinished messages deleted at start */
  guint64 released;           /* unreferenced messages deleted at start */
} SqStats;

/* The database connection and its prepared statements: storage thread only. */
typedef struct {
  sqlite3 *db;
  GHashTable *stmts;          /* SQL text (a literal, by address) -> sqlite3_stmt * */
  int sync;                   /* the synchronous level in effect, -1 unknown */
  int wal_pages;              /* pages in the write-ahead log after the last commit */
  int checkpoint_pages;       /* checkpoint from this many */
  gint64 next_message_id;     /* within a write transaction, 0 when not known yet */
  gboolean message_ids_used;  /* ... and handed out: save before COMMIT */
} SqDb;

typedef struct _SqStore SqStore;
typedef struct _SqCheckpointer SqCheckpointer;

/* One recipient, copied from the envelope (lower-case mailbox). */
typedef struct {
  char *address;
  char *mailbox;              /* NULL: remote, goes to the queue */
  char *notify;
  char *orcpt;
  char *headers;              /* delivery headers of a local recipient's copy, or NULL */
} SqRecipient;

/* A message from message_begin until its commit completes or its abort is done. */
typedef struct {
  SqStore *store;
  /* The envelope: written at begin on the loop thread, read-only afterwards. */
  char *mail_from;
  char *session_id;
  char *client_ip;
  char *auth_user;
  char *dsn_ret;
  char *dsn_envid;
  char *origin;               /* PbEnvelope.origin, or NULL */
  SqRecipient *rcpts;
  guint n_rcpts;
  gint64 received;            /* unix seconds */
  /* Loop thread only. */
  GByteArray *buf;            /* at most SQ_CHUNK_SIZE octets not yet handed over */
  gint64 written;
  gboolean handed_over;       /* a job for it was queued */
  /* Set by the storage thread when it lost a piece: 0, or a PbStoreError + 1. */
  gint failed;
  /* Storage thread only. */
  gint64 rowid;               /* 0 until its row exists */
  gboolean rowid_fresh;       /* the row was inserted in the open transaction */
  gint64 stored;              /* octets of body in the database */
  gint64 stored_committed;    /* ... as of the last committed transaction */
  char queue_id[32];
} SqMessage;

typedef enum {
  SQ_JOB_CHUNK,
  SQ_JOB_COMMIT,
  SQ_JOB_ABORT,
  SQ_JOB_READ,
  SQ_JOB_REQUEST,
  SQ_JOB_STOP
} SqJobKind;

/* What goes back to the loop thread. */
typedef struct {
  SqJobKind kind;             /* SQ_JOB_COMMIT, SQ_JOB_READ or SQ_JOB_REQUEST */
  union {
    PbStoreCommitFunc commit;
    PbStoreReadFunc read;
    PbStoreResultFunc result;
  } done;
  gpointer user_data;
  SqMessage *message;         /* a commit's message, freed once @done has run */
  char *queue_id;
  GBytes *data;
  gboolean eof;
  GVariant *result;
  GError *error;
} SqReply;

typedef struct _SqOp SqOp;

/* One unit of work for the storage thread. */
typedef struct {
  SqJobKind kind;
  SqMessage *message;         /* CHUNK, COMMIT, ABORT */
  GBytes *data;               /* CHUNK, COMMIT (the last piece, maybe empty) */
  char *message_id;           /* READ */
  gint64 offset;
  gsize max;
  const SqOp *op;             /* REQUEST */
  GVariant *args;
  SqReply *reply;             /* COMMIT, READ, REQUEST */
  GError *error;              /* a job's own failure inside a transaction */
} SqJob;

/* A request operation: runs on the storage thread inside a transaction. */
typedef gboolean (*SqOpFunc) (SqStore *store, GVariant *args, GVariant **result, GError **error);

struct _SqOp {
  const char *name;
  const char *args_type;
  gboolean writes;
  SqOpFunc func;
};

struct _SqStore {
  gint ref;
  PbModule *module;
  const SqConfig *config;
  char *path;                 /* the database file */
  char *dir;                  /* its directory */
  GMainContext *context;      /* the loop's, where replies run */
  GThread *thread;

  GMutex lock;
  GCond cond;
  GQueue jobs;                /* SqJob *, under lock */
  gint64 queued_bytes;        /* under lock: body octets in jobs */
  gboolean ready;             /* under lock: the thread finished opening */
  GError *start_error;        /* under lock */

  /* Loop thread only. */
  gboolean running;
  gboolean holding;           /* replies are being delivered: queue jobs in outbox */
  GQueue outbox;              /* SqJob * held back until the replies are delivered */
  GSource *flush_source;      /* flushes outbox if a reply callback runs a nested loop */
  gint64 space_checked;       /* g_get_monotonic_time() of the last statvfs */
  gint64 space_free;          /* octets available then */

  /* Storage thread only. */
  SqDb *db;
  guint64 owner;              /* this instance's id in messages.owner */
  int lock_fd;
  char *lock_path;
  guint schema_version;
  SqCheckpointer *checkpointer; /* NULL: checkpoints inline */
  GArray *discard;            /* gint64 row ids of messages to delete */
  SqStats stats;
};

/* sqlite-store.c: the instance, the storage thread and its queue. */
SqStore *sq_store_new (PbModule *module, const SqConfig *config);
SqStore *sq_store_ref (SqStore *store);
void sq_store_unref (gpointer store);
gboolean sq_store_start (SqStore *store, GError **error);
void sq_store_stop (SqStore *store);
/* Queues a job (loop thread); see sq_post_dispatch() for when it is held back. */
void sq_store_push (SqStore *store, SqJob *job);
/* Body octets queued for the storage thread and not yet taken. */
gint64 sq_store_queued_bytes (SqStore *store);
/* Posts a reply to the loop thread (for answers that need no disk). */
void sq_store_reply_later (SqStore *store, SqReply *reply);
SqJob *sq_job_new (SqJobKind kind);
SqReply *sq_reply_new (SqJobKind kind);
void sq_message_free (SqMessage *m);

/* sqlite-db.c: the connection, cached statements, errors. */
typedef sqlite3_stmt SqStmt;
SqDb *sq_db_open (const char *path, const SqConfig *config, GError **error);
void sq_db_close (SqDb *db);
/* A cached statement, reset and cleared; NULL with @error. @sql must be a
 * string literal (the cache is keyed by its address). */
SqStmt *sq_db_prepare (SqDb *db, const char *sql, GError **error);
/* Steps a statement that returns no rows, then resets it. */
gboolean sq_db_run (SqDb *db, SqStmt *stmt, GError **error);
/* Steps: TRUE with *row for a row, TRUE without one at the end, FALSE on error. */
gboolean sq_db_step (SqDb *db, SqStmt *stmt, gboolean *row, GError **error);
gboolean sq_db_exec (SqDb *db, const char *sql, GError **error);
gboolean sq_db_set_sync (SqDb *db, int level, GError **error);
gboolean sq_db_begin (SqDb *db, gboolean immediate, GError **error);
gboolean sq_db_commit (SqDb *db, GError **error);
void sq_db_rollback (SqDb *db);
gboolean sq_db_in_transaction (SqDb *db);
/* Sets @error from the connection's last error (rc), mapping SQLITE_FULL to NO_SPACE. */
void sq_db_set_error (SqDb *db, int rc, GError **error, const char *context);

/* sqlite-checkpoint.c: checkpoints, inline or on a thread of their own. */
SqCheckpointer *sq_checkpointer_start (const char *path, const SqConfig *config, GError **error);
void sq_checkpointer_request (SqCheckpointer *c);
guint64 sq_checkpointer_count (SqCheckpointer *c);
void sq_checkpointer_stop (SqCheckpointer *c);
/* On the storage thread after each batch: checkpoint if the log is long. */
void sq_checkpoint (SqStore *store);

/* sqlite-schema.c: migrations, the instance lock, recovery. */
gboolean sq_schema_migrate (SqDb *db, guint *version, GError **error);
gboolean sq_instance_lock (SqStore *store, GError **error);
void sq_instance_unlock (SqStore *store);
gboolean sq_recover (SqStore *store, GError **error);

/* sqlite-mailbox.c: messages on the storage thread, mailboxes, the queue. */
gboolean sq_message_store_chunk (SqStore *store, SqMessage *m, GBytes *data, GError **error);
gboolean sq_message_commit (SqStore *store, SqMessage *m, GBytes *data, GError **error);
gboolean sq_message_read (SqStore *store, const char *message_id, gint64 offset, gsize max,
                          GBytes **data, gboolean *eof, GError **error);
/* Records the message ids handed out in this transaction (before COMMIT). */
gboolean sq_message_ids_save (SqStore *store, GError **error);
/* sqlite-origin.c: records the message's origin in the open transaction
 * (PB_STORE_ERROR_EXISTS when it is recorded already). */
gboolean sq_origin_record (SqStore *store, SqMessage *m, GError **error);
/* Deletes message @id if no mailbox entry and no unfinished queue entry refers to it. */
gboolean sq_message_release (SqStore *store, gint64 id, GError **error);
void sq_queue_id_format (char out[32], gint64 received, gint64 rowid);

/* The request operations: sqlite-directory.c and sqlite-mailbox.c. */
extern const SqOp sq_directory_ops[];
extern const SqOp sq_mailbox_ops[];
extern const SqOp sq_queue_ops[];
extern const SqOp sq_origin_ops[];
const SqOp *sq_op_find (const char *name);
/* Checks @in (valid UTF-8, no blanks or controls) and returns it lower-case. */
gboolean sq_arg_name (const char *in, const char *what, char **out, GError **error);
gboolean sq_user_exists (SqStore *store, const char *name, gboolean *exists, GError **error);

/* sqlite-api.c: the PbStorageSpec functions, on the loop thread. */
void sq_api_fill_spec (SqStore *store, PbStorageSpec *spec);

G_END_DECLS

#endif /* PILLARBOX_SQLITE_PRIVATE_H */
