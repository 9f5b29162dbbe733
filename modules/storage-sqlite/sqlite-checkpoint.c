/* SPDX-License-Identifier: MIT */
/* Checkpoints of the write-ahead log: inline on the storage thread, or on a thread and connection of their own. */
#include "config.h"
#include "sqlite-private.h"

/*
 * A checkpoint copies the pages of the write-ahead log into the database
 * file so the log can start over. Under load it is a third of the storage
 * thread's time (measured: docs/storage-sqlite.md), and while the storage
 * thread checkpoints no commit is written. With background-checkpoint (the
 * default) a second thread, with a second connection used for nothing but
 * sqlite3_wal_checkpoint_v2(), does it while commits go on: SQLite lets a
 * checkpoint run beside a writer in WAL mode. That connection runs with
 * synchronous=FULL, so the log is synced before pages are copied and the
 * database is synced before the log may be reused: a checkpoint never puts
 * a committed page at risk. Every query and every write of data stays on
 * the storage thread.
 */

struct _SqCheckpointer {
  GThread *thread;
  GMutex lock;
  GCond cond;
  gboolean requested;         /* under lock */
  gboolean stopping;          /* under lock */
  char *path;
  const SqConfig *config;
  gint done;                  /* atomic: checkpoints completed */
};

static gpointer
sq_checkpointer_main (gpointer data)
{
  SqCheckpointer *c = data;
  g_autoptr (GError) error = NULL;
  SqDb *db = sq_db_open (c->path, c->config, &error);

  if (db == NULL)
    g_warning ("background checkpoints of %s: %s", c->path, error->message);
  for (;;)
    {
      int rc;

      g_mutex_lock (&c->lock);
      while (!c->requested && !c->stopping)
        g_cond_wait (&c->cond, &c->lock);
      if (c->stopping)
        {
          g_mutex_unlock (&c->lock);
          break;
        }
      c->requested = FALSE;
      g_mutex_unlock (&c->lock);
      if (db == NULL)
        continue;
      rc = sqlite3_wal_checkpoint_v2 (db->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
      if (rc == SQLITE_OK)
        g_atomic_int_inc (&c->done);
      else if (rc != SQLITE_BUSY)
        g_warning ("checkpoint of %s: %s", c->path, sqlite3_errmsg (db->db));
    }
  sq_db_close (db);
  return NULL;
}

SqCheckpointer *
sq_checkpointer_start (const char *path, const SqConfig *config, GError **error)
{
  SqCheckpointer *c = g_new0 (SqCheckpointer, 1);

  g_mutex_init (&c->lock);
  g_cond_init (&c->cond);
  c->path = g_strdup (path);
  c->config = config;
  c->thread = g_thread_try_new ("pb-checkpoint", sq_checkpointer_main, c, error);
  if (c->thread == NULL)
    {
      sq_checkpointer_stop (c);
      return NULL;
    }
  return c;
}

void
sq_checkpointer_request (SqCheckpointer *c)
{
  g_mutex_lock (&c->lock);
  c->requested = TRUE;
  g_cond_signal (&c->cond);
  g_mutex_unlock (&c->lock);
}

guint64
sq_checkpointer_count (SqCheckpointer *c)
{
  return (guint64) g_atomic_int_get (&c->done);
}

void
sq_checkpointer_stop (SqCheckpointer *c)
{
  if (c == NULL)
    return;
  if (c->thread != NULL)
    {
      g_mutex_lock (&c->lock);
      c->stopping = TRUE;
      g_cond_signal (&c->cond);
      g_mutex_unlock (&c->lock);
      g_thread_join (c->thread);
    }
  g_mutex_clear (&c->lock);
  g_cond_clear (&c->cond);
  g_free (c->path);
  g_free (c);
}

/* Called by the storage thread after each batch. */
void
sq_checkpoint (SqStore *store)
{
  SqDb *db = store->db;
  int pages = db->wal_pages;
  int rc;

  if (pages < db->checkpoint_pages)
    return;
  db->wal_pages = 0;
  /* The log starts over only when a checkpoint has copied all of it by the
   * time the next transaction begins. A background checkpoint copies what
   * was there when it started, while commits go on; should the log keep
   * growing anyway, the storage thread copies the rest itself (little, as
   * the background did the bulk), between two transactions. */
  if (store->checkpointer != NULL && pages < db->checkpoint_pages * 4)
    {
      sq_checkpointer_request (store->checkpointer);
      return;
    }
  /* This connection runs with synchronous=NORMAL or FULL: the log is synced
   * before the copy and the database after, as on the other connection. */
  rc = sqlite3_wal_checkpoint_v2 (db->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
  if (rc == SQLITE_OK)
    store->stats.checkpoints++;
  else if (rc != SQLITE_BUSY)
    g_warning ("checkpoint of %s: %s", store->path, sqlite3_errmsg (db->db));
}
