/* SPDX-License-Identifier: MIT */
/* ids state file: read at start, merged and written atomically on a worker thread under a lock. */

/*
 * Two instances of the module are alive during a reload (the old one until
 * its last session ends) and both may block or unblock addresses. Neither
 * may overwrite the other's records, so a write is read-merge-write under
 * an flock() on a lock file (flock locks are per open file, so they order
 * two instances of one process as well as two processes), and the merge
 * keeps, per prefix, the record created last. Each instance also re-reads
 * the file when it changes, so a block made by one applies in the other
 * within a couple of seconds.
 *
 * rate-cap keeps a store of the same design (rc-store.c): each module
 * stays loadable on its own.
 */
#include "config.h"
#include "ids-private.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib/gstdio.h>

typedef struct {
  dev_t dev;
  ino_t ino;
  off_t size;
  gint64 mtime_ns;
  gboolean exists;
} IdsFileId;

struct _IdsStore {
  gint ref;
  char *dir;
  char *path;
  char *lock_path;
  IdsMergeFunc merge;
  GThreadPool *pool;
  GMutex lock;           /* guards `seen`, written by the worker */
  IdsFileId seen;        /* the file as this store last read or wrote it */
  gboolean busy;         /* a job is queued or running (loop thread only) */
  gboolean closed;
};

typedef struct {
  IdsStore *store;
  char *own;
  gint64 now;
  IdsStoreDone done;
  gpointer user_data;
  char *merged;
  GError *error;
} IdsJob;

static IdsStore *
ids_store_ref (IdsStore *store)
{
  g_atomic_int_inc (&store->ref);
  return store;
}

static void
ids_store_unref (IdsStore *store)
{
  if (!g_atomic_int_dec_and_test (&store->ref))
    return;
  g_mutex_clear (&store->lock);
  g_free (store->dir);
  g_free (store->path);
  g_free (store->lock_path);
  g_free (store);
}

static void
ids_file_id (const char *path, IdsFileId *id)
{
  struct stat st;

  memset (id, 0, sizeof *id);
  if (stat (path, &st) != 0)
    return;
  id->exists = TRUE;
  id->dev = st.st_dev;
  id->ino = st.st_ino;
  id->size = st.st_size;
  id->mtime_ns = (gint64) st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

static gboolean
ids_file_id_equal (const IdsFileId *a, const IdsFileId *b)
{
  return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->size == b->size
         && a->mtime_ns == b->mtime_ns;
}

/* Reads the file; a missing file is empty. */
static gboolean
ids_read_file (const char *path, char **text, GError **error)
{
  g_autoptr (GError) local = NULL;

  if (g_file_get_contents (path, text, NULL, &local))
    return TRUE;
  if (g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
    {
      *text = g_strdup ("");
      return TRUE;
    }
  g_propagate_error (error, g_steal_pointer (&local));
  return FALSE;
}

static gboolean
ids_write_all (int fd, const char *data, gsize len)
{
  while (len > 0)
    {
      ssize_t n = write (fd, data, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return FALSE;
      data += n;
      len -= (gsize) n;
    }
  return TRUE;
}

/* Temporary file in the same directory, fsync, rename over PATH, fsync
 * the directory: after a crash the file is the old one or the new one. */
static gboolean
ids_write_atomically (const char *dir, const char *path, const char *text, GError **error)
{
  g_autofree char *tmp = g_strconcat (path, ".tmp-XXXXXX", NULL);
  int fd, dfd, saved;

  fd = g_mkstemp_full (tmp, O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0)
    {
      saved = errno;
      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved), "cannot create %s: %s", tmp,
                   g_strerror (saved));
      return FALSE;
    }
  if (!ids_write_all (fd, text, strlen (text)) || fsync (fd) != 0)
    {
      saved = errno;
      close (fd);
      g_unlink (tmp);
      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved), "cannot write %s: %s", tmp,
                   g_strerror (saved));
      return FALSE;
    }
  close (fd);
  if (g_rename (tmp, path) != 0)
    {
      saved = errno;
      g_unlink (tmp);
      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved), "cannot rename %s to %s: %s", tmp, path,
                   g_strerror (saved));
      return FALSE;
    }
  dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0)
    {
      fsync (dfd);
      close (dfd);
    }
  return TRUE;
}

/* The whole read-merge-write, under the lock. Runs on the worker or, at
 * fini, on the loop. */
static gboolean
ids_store_sync_locked (IdsStore *store, const char *own, gint64 now, char **merged, GError **error)
{
  g_autofree char *file_text = NULL;
  g_autofree char *result = NULL;
  IdsFileId id;
  int lock_fd;
  gboolean ok = FALSE;

  if (g_mkdir_with_parents (store->dir, 0700) != 0)
    {
      int saved = errno;
      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved), "cannot create %s: %s", store->dir,
                   g_strerror (saved));
      return FALSE;
    }
  lock_fd = open (store->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0)
    {
      int saved = errno;
      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved), "cannot open %s: %s", store->lock_path,
                   g_strerror (saved));
      return FALSE;
    }
  while (flock (lock_fd, LOCK_EX) != 0 && errno == EINTR)
    ;
  if (!ids_read_file (store->path, &file_text, error))
    goto out;
  result = store->merge (file_text, own, now);
  if (strcmp (result, file_text) != 0 && !ids_write_atomically (store->dir, store->path, result, error))
    goto out;
  ids_file_id (store->path, &id);
  g_mutex_lock (&store->lock);
  store->seen = id;
  g_mutex_unlock (&store->lock);
  *merged = g_steal_pointer (&result);
  ok = TRUE;
out:
  close (lock_fd);  /* releases the lock */
  return ok;
}

static gboolean
ids_job_deliver (gpointer data)
{
  IdsJob *job = data;
  IdsStore *store = job->store;

  store->busy = FALSE;
  if (!store->closed)
    job->done (job->merged, job->error, job->user_data);
  return G_SOURCE_REMOVE;
}

static void
ids_job_free (gpointer data)
{
  IdsJob *job = data;

  ids_store_unref (job->store);
  g_free (job->own);
  g_free (job->merged);
  g_clear_error (&job->error);
  g_free (job);
}

static void
ids_store_worker (gpointer data, gpointer pool_data)
{
  IdsJob *job = data;

  ids_store_sync_locked (job->store, job->own, job->now, &job->merged, &job->error);
  /* Back to the loop; the store's reference keeps it valid, `closed` says
   * whether anyone still wants the answer. */
  g_idle_add_full (G_PRIORITY_DEFAULT, ids_job_deliver, job, ids_job_free);
}

IdsStore *
ids_store_new (const char *dir, const char *name, IdsMergeFunc merge)
{
  IdsStore *store = g_new0 (IdsStore, 1);

  store->ref = 1;
  store->dir = g_strdup (dir);
  store->path = g_build_filename (dir, name, NULL);
  store->lock_path = g_strconcat (store->path, ".lock", NULL);
  store->merge = merge;
  g_mutex_init (&store->lock);
  /* One worker per store: writes of one instance never overlap. */
  store->pool = g_thread_pool_new (ids_store_worker, NULL, 1, FALSE, NULL);
  return store;
}

void
ids_store_close (IdsStore *store)
{
  if (store == NULL)
    return;
  store->closed = TRUE;
  /* Waits for a write under way: at shutdown the file must be complete. */
  g_thread_pool_free (store->pool, FALSE, TRUE);
  store->pool = NULL;
  ids_store_unref (store);
}

const char *
ids_store_get_path (IdsStore *store)
{
  return store->path;
}

gboolean
ids_store_read (IdsStore *store, char **text, GError **error)
{
  IdsFileId id;

  ids_file_id (store->path, &id);
  if (!ids_read_file (store->path, text, error))
    return FALSE;
  g_mutex_lock (&store->lock);
  store->seen = id;
  g_mutex_unlock (&store->lock);
  return TRUE;
}

gboolean
ids_store_changed (IdsStore *store)
{
  IdsFileId id;
  gboolean changed;

  ids_file_id (store->path, &id);
  g_mutex_lock (&store->lock);
  changed = !ids_file_id_equal (&id, &store->seen);
  g_mutex_unlock (&store->lock);
  return changed;
}

gboolean
ids_store_is_busy (IdsStore *store)
{
  return store->busy;
}

void
ids_store_sync_async (IdsStore *store, char *own, gint64 now, IdsStoreDone done, gpointer user_data)
{
  IdsJob *job = g_new0 (IdsJob, 1);

  g_return_if_fail (!store->closed);
  job->store = ids_store_ref (store);
  job->own = own;
  job->now = now;
  job->done = done;
  job->user_data = user_data;
  store->busy = TRUE;
  g_thread_pool_push (store->pool, job, NULL);
}

gboolean
ids_store_sync (IdsStore *store, const char *own, gint64 now, char **merged, GError **error)
{
  return ids_store_sync_locked (store, own, now, merged, error);
}
