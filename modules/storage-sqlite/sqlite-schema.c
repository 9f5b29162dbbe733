/* SPDX-License-Identifier: MIT */
/* The versioned schema and its migrations, the per-instance lock file, and recovery at start. */
#include "config.h"
#include "sqlite-private.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Migrations run in order, each once, inside one transaction at start;
 * PRAGMA user_version holds the newest applied and schema_migrations keeps
 * the history. A migration is only ever appended: never edit one that
 * shipped.
 */
typedef struct {
  guint version;
  const char *sql;
} SqMigration;

static const SqMigration sq_migrations[] = {
  { 1,
    "CREATE TABLE schema_migrations ("
    "  version INTEGER PRIMARY KEY,"
    "  applied INTEGER NOT NULL);"
    /* Ids handed out, so that none is ever given twice (see
     * sq_next_message_id(): cheaper than AUTOINCREMENT, which reads and
     * writes sqlite_sequence for every row). */
    "CREATE TABLE counters ("
    "  name TEXT PRIMARY KEY,"
    "  value INTEGER NOT NULL);"
    "INSERT INTO counters (name, value) VALUES ('message-id', 0);"
    /* A message is 'receiving' while its body arrives (owner: the instance
     * writing it), then 'committed'. Its body is in chunks. */
    "CREATE TABLE messages ("
    "  id INTEGER PRIMARY KEY,"
    "  queue_id TEXT UNIQUE,"
    "  state TEXT NOT NULL CHECK (state IN ('receiving', 'committed')),"
    "  owner INTEGER NOT NULL DEFAULT 0,"
    "  sender TEXT NOT NULL,"
    "  size INTEGER NOT NULL DEFAULT 0,"
    "  received INTEGER NOT NULL,"
    "  client_ip TEXT,"
    "  auth_user TEXT,"
    "  session_id TEXT,"
    "  dsn_ret TEXT,"
    "  dsn_envid TEXT);"
    "CREATE INDEX messages_receiving ON messages (owner) WHERE state = 'receiving';"
    "CREATE TABLE chunks ("
    "  message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,"
    "  pos INTEGER NOT NULL,"
    "  data BLOB NOT NULL,"
    "  PRIMARY KEY (message_id, pos));"
    "CREATE TABLE domains ("
    "  name TEXT PRIMARY KEY,"
    "  alias_of TEXT REFERENCES domains (name),"
    "  shared INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE users ("
    "  name TEXT PRIMARY KEY,"
    "  hash TEXT NOT NULL,"
    "  protocols TEXT NOT NULL DEFAULT '',"
    "  max_size INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE aliases ("
    "  address TEXT PRIMARY KEY,"
    "  target TEXT NOT NULL);"
    "CREATE TABLE lists ("
    "  address TEXT PRIMARY KEY);"
    "CREATE TABLE list_members ("
    "  list TEXT NOT NULL REFERENCES lists (address) ON DELETE CASCADE,"
    "  member TEXT NOT NULL,"
    "  PRIMARY KEY (list, member));"
    /* AUTOINCREMENT: a UID is never handed out twice, even after deletes. */
    "CREATE TABLE mailbox ("
    "  uid INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,"
    "  message_id INTEGER NOT NULL REFERENCES messages (id),"
    "  size INTEGER NOT NULL,"
    "  received INTEGER NOT NULL);"
    "CREATE INDEX mailbox_user ON mailbox (user, uid);"
    "CREATE INDEX mailbox_message ON mailbox (message_id);"
    "CREATE TABLE queue ("
    "  id INTEGER PRIMARY KEY,"
    "  message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,"
    "  recipient TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending'"
    "    CHECK (state IN ('pending', 'deferred', 'delivered', 'bounced')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt INTEGER NOT NULL DEFAULT 0,"
    "  last_reply TEXT NOT NULL DEFAULT '',"
    "  dsn_notify TEXT,"
    "  dsn_orcpt TEXT);"
    "CREATE INDEX queue_message ON queue (message_id);"
    "CREATE INDEX queue_due ON queue (state, next_attempt);" },
  /* 2: delivery headers per mailbox entry (Return-Path, Delivered-To), and
   * every delivery attempt of a queue entry for `pillarbox queue show`. */
  { 2,
    "ALTER TABLE mailbox ADD COLUMN headers TEXT NOT NULL DEFAULT '';"
    "CREATE TABLE queue_history ("
    "  entry_id INTEGER NOT NULL REFERENCES queue (id) ON DELETE CASCADE,"
    "  time INTEGER NOT NULL,"
    "  server TEXT NOT NULL,"
    "  reply TEXT NOT NULL);"
    "CREATE INDEX queue_history_entry ON queue_history (entry_id);" },
  /* 3: where messages came from (PbEnvelope.origin), written in the
   * message's own transaction so that a fetcher never stores one twice.
   * No foreign key: the record must outlive the message (a collected
   * message the user deleted must not be collected again). */
  { 3,
    "CREATE TABLE origin ("
    "  key TEXT PRIMARY KEY,"
    "  first_seen INTEGER NOT NULL,"
    "  message_id INTEGER NOT NULL) WITHOUT ROWID;" },
  /* 4: whether a delay warning (RFC 3464 Action: delayed) went to the
   * sender of a queue entry, so it goes at most once (queue.warn). */
  { 4,
    "ALTER TABLE queue ADD COLUMN warned INTEGER NOT NULL DEFAULT 0;" },
};

static gboolean
sq_schema_read_version (SqDb *db, guint *version, GError **error)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2 (db->db, "PRAGMA user_version", -1, &stmt, NULL);

  if (rc == SQLITE_OK && (rc = sqlite3_step (stmt)) == SQLITE_ROW)
    {
      *version = (guint) sqlite3_column_int (stmt, 0);
      sqlite3_finalize (stmt);
      return TRUE;
    }
  sq_db_set_error (db, rc, error, "reading the schema version");
  sqlite3_finalize (stmt);
  return FALSE;
}

gboolean
sq_schema_migrate (SqDb *db, guint *version, GError **error)
{
  guint current;

  if (!sq_db_begin (db, TRUE, error))
    return FALSE;
  if (!sq_schema_read_version (db, &current, error))
    goto fail;
  if (current > SQ_SCHEMA_VERSION)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED,
                   "the database has schema version %u, newer than this module's %u: "
                   "run a newer storage-sqlite", current, SQ_SCHEMA_VERSION);
      goto fail;
    }
  for (guint i = 0; i < G_N_ELEMENTS (sq_migrations); i++)
    {
      const SqMigration *m = &sq_migrations[i];
      g_autofree char *record = NULL;

      if (m->version <= current)
        continue;
      record = g_strdup_printf ("INSERT INTO schema_migrations (version, applied) VALUES (%u, %" G_GINT64_FORMAT ");"
                                "PRAGMA user_version = %u;",
                                m->version, g_get_real_time () / G_USEC_PER_SEC, m->version);
      if (!sq_db_exec (db, m->sql, error) || !sq_db_exec (db, record, error))
        {
          g_prefix_error (error, "migrating the schema to version %u: ", m->version);
          goto fail;
        }
      current = m->version;
    }
  if (!sq_db_commit (db, error))
    goto fail;
  *version = current;
  return TRUE;

fail:
  sq_db_rollback (db);
  return FALSE;
}

/*
 * Every running instance holds an flock() on a file of its own beside the
 * database, named after its owner id. A message still 'receiving' belongs
 * to a live instance exactly when its owner's file is locked: during a
 * reload the new instance must not delete what the old one is receiving.
 * flock() locks belong to an open file, so two instances in one process
 * see each other's locks. Files are unlinked only under their lock, and a
 * locker checks that the file it locked is still the one at the path.
 */
static char *
sq_lock_path (SqStore *store, guint64 owner)
{
  g_autofree char *base = g_path_get_basename (store->path);
  return g_strdup_printf ("%s/%s-live-%016" G_GINT64_MODIFIER "x", store->dir, base, owner);
}

gboolean
sq_instance_lock (SqStore *store, GError **error)
{
  for (guint attempt = 0; attempt < 8; attempt++)
    {
      guint64 owner;
      struct stat a, b;
      int fd;

      do
        owner = ((guint64) g_random_int () << 32 | g_random_int ()) & G_GINT64_CONSTANT (0x7fffffffffffffff);
      while (owner == 0);
      g_free (store->lock_path);
      store->lock_path = sq_lock_path (store, owner);
      fd = open (store->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0)
        {
          int saved = errno;
          g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED, "cannot create %s: %s",
                       store->lock_path, g_strerror (saved));
          return FALSE;
        }
      if (flock (fd, LOCK_EX | LOCK_NB) == 0 && fstat (fd, &a) == 0 && stat (store->lock_path, &b) == 0
          && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
        {
          store->owner = owner;
          store->lock_fd = fd;
          return TRUE;
        }
      close (fd);
    }
  g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED, "cannot lock an instance file in %s",
               store->dir);
  return FALSE;
}

void
sq_instance_unlock (SqStore *store)
{
  if (store->lock_fd < 0)
    return;
  g_unlink (store->lock_path);
  close (store->lock_fd);
  store->lock_fd = -1;
}

/* Whether the instance @owner is alive; if it is not, its file is removed. */
static gboolean
sq_owner_is_alive (SqStore *store, const char *path)
{
  int fd = open (path, O_RDWR | O_CLOEXEC);

  if (fd < 0)
    return FALSE;
  if (flock (fd, LOCK_EX | LOCK_NB) != 0)
    {
      /* EWOULDBLOCK: alive. Anything else: assume alive, deleting nothing. */
      close (fd);
      return TRUE;
    }
  g_unlink (path);
  close (fd);
  return FALSE;
}

/* Removes the lock files of instances that died without removing theirs. */
static void
sq_remove_stale_locks (SqStore *store)
{
  g_autofree char *base = g_path_get_basename (store->path);
  g_autofree char *prefix = g_strconcat (base, "-live-", NULL);
  g_autoptr (GDir) dir = g_dir_open (store->dir, 0, NULL);
  const char *name;

  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    if (g_str_has_prefix (name, prefix))
      {
        g_autofree char *path = g_build_filename (store->dir, name, NULL);
        if (strcmp (path, store->lock_path) != 0)
          sq_owner_is_alive (store, path);
      }
}

/*
 * Recovery: everything committed stays as it is (mailbox entries and queue
 * entries were written in the same transaction as the message); messages
 * left 'receiving' by dead instances are deleted with their chunks, and,
 * as a safety net, so are committed messages nothing refers to.
 */
gboolean
sq_recover (SqStore *store, GError **error)
{
  SqDb *db = store->db;
  g_autoptr (GArray) owners = g_array_new (FALSE, FALSE, sizeof (gint64));
  gboolean row;
  gboolean ok;
  SqStmt *stmt;

  if (!sq_db_begin (db, TRUE, error))
    return FALSE;
  stmt = sq_db_prepare (db, "SELECT DISTINCT owner FROM messages WHERE state = 'receiving'", error);
  if (stmt == NULL)
    goto fail;
  while ((ok = sq_db_step (db, stmt, &row, error)) && row)
    {
      gint64 owner = sqlite3_column_int64 (stmt, 0);
      g_array_append_val (owners, owner);
    }
  sqlite3_reset (stmt);
  if (!ok)
    goto fail;

  for (guint i = 0; i < owners->len; i++)
    {
      gint64 owner = g_array_index (owners, gint64, i);
      g_autofree char *path = sq_lock_path (store, (guint64) owner);

      if ((guint64) owner != store->owner && sq_owner_is_alive (store, path))
        continue;
      stmt = sq_db_prepare (db, "DELETE FROM messages WHERE state = 'receiving' AND owner = ?1", error);
      if (stmt == NULL)
        goto fail;
      sqlite3_bind_int64 (stmt, 1, owner);
      if (!sq_db_run (db, stmt, error))
        goto fail;
      store->stats.recovered += (guint64) sqlite3_changes (db->db);
    }

  stmt = sq_db_prepare (db,
                        "DELETE FROM messages WHERE state = 'committed'"
                        " AND NOT EXISTS (SELECT 1 FROM mailbox WHERE mailbox.message_id = messages.id)"
                        " AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.message_id = messages.id"
                        "                 AND queue.state IN ('pending', 'deferred'))",
                        error);
  if (stmt == NULL || !sq_db_run (db, stmt, error))
    goto fail;
  store->stats.released += (guint64) sqlite3_changes (db->db);
  if (!sq_db_commit (db, error))
    goto fail;
  if (store->stats.recovered + store->stats.released > 0)
    store->stats.transactions++;
  sq_remove_stale_locks (store);
  return TRUE;

fail:
  g_prefix_error (error, "recovery: ");
  sq_db_rollback (db);
  return FALSE;
}
