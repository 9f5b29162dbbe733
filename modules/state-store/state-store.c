/* SPDX-License-Identifier: MIT */
/* Module state files shared by ids and rate-cap: read at start, merged and written atomically on a worker thread under a lock. */

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
 * Compiled into each module that uses it (ids, rate-cap), as the SMTP
 * client is into both senders: one implementation, no shared library.
 */
#include "config.h"
#include "state-store.h"

#include <pillarbox/pb-loop.h>

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
} SStoreFileId;

struct _SStore {
  gint ref;
  char *dir;
  char *path;
  char *lock_path;
  SStoreMergeFunc merge;
  GThreadPool *pool;
  GMutex lock;           /* guards `seen`, written by the worker */
  SStoreFileId seen;        /* the file as this store last read or wrote it */
  gboolean busy;         /* a job is queued or running (loop thread only) */
  gboolean closed;
};

typedef struct {
  SStore *store;
  char *own;
  gint64 now;
  SStoreDone done;
  gpointer user_data;
  char *merged;
  GError *error;
} SStoreJob;

static SStore *
sstore_ref (SStore *store)
{
  g_atomic_int_inc (&store->ref);
  return store;
}

static void
sstore_unref (SStore *store)
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
sstore_file_id (const char *path, SStoreFileId *id)
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
sstore_file_id_equal (const SStoreFileId *a, const SStoreFileId *b)
{
  return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->size == b->size
         && a->mtime_ns == b->mtime_ns;
}

/* Reads the file; a missing file is empty. */
static gboolean
sstore_read_file (const char *path, char **text, GError **error)
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
sstore_write_all (int fd, const char *data, gsize len)
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
sstore_write_atomically (const char *dir, const char *path, const char *text, GError **error)
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
  if (!sstore_write_all (fd, text, strlen (text)) || fsync (fd) != 0)
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
sstore_sync_locked (SStore *store, const char *own, gint64 now, char **merged, GError **error)
{
  g_autofree char *file_text = NULL;
  g_autofree char *result = NULL;
  SStoreFileId id;
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
  if (!sstore_read_file (store->path, &file_text, error))
    goto out;
  result = store->merge (file_text, own, now);
  if (strcmp (result, file_text) != 0 && !sstore_write_atomically (store->dir, store->path, result, error))
    goto out;
  sstore_file_id (store->path, &id);
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
sstore_job_deliver (gpointer data)
{
  SStoreJob *job = data;
  SStore *store = job->store;

  store->busy = FALSE;
  if (!store->closed)
    job->done (job->merged, job->error, job->user_data);
  return G_SOURCE_REMOVE;
}

static void
sstore_job_free (gpointer data)
{
  SStoreJob *job = data;

  sstore_unref (job->store);
  g_free (job->own);
  g_free (job->merged);
  g_clear_error (&job->error);
  g_free (job);
}

static void
sstore_worker (gpointer data, gpointer pool_data)
{
  SStoreJob *job = data;

  sstore_sync_locked (job->store, job->own, job->now, &job->merged, &job->error);
  /* Back to the loop; the store's reference keeps it valid, `closed` says
   * whether anyone still wants the answer. */
  pb_idle_add_full (G_PRIORITY_DEFAULT, sstore_job_deliver, job, sstore_job_free);
}

SStore *
sstore_new (const char *dir, const char *name, SStoreMergeFunc merge)
{
  SStore *store = g_new0 (SStore, 1);

  store->ref = 1;
  store->dir = g_strdup (dir);
  store->path = g_build_filename (dir, name, NULL);
  store->lock_path = g_strconcat (store->path, ".lock", NULL);
  store->merge = merge;
  g_mutex_init (&store->lock);
  /* One worker per store: writes of one instance never overlap. */
  store->pool = g_thread_pool_new (sstore_worker, NULL, 1, FALSE, NULL);
  return store;
}

void
sstore_close (SStore *store)
{
  if (store == NULL)
    return;
  store->closed = TRUE;
  /* Waits for a write under way: at shutdown the file must be complete. */
  g_thread_pool_free (store->pool, FALSE, TRUE);
  store->pool = NULL;
  sstore_unref (store);
}

const char *
sstore_get_path (SStore *store)
{
  return store->path;
}

gboolean
sstore_read (SStore *store, char **text, GError **error)
{
  SStoreFileId id;

  sstore_file_id (store->path, &id);
  if (!sstore_read_file (store->path, text, error))
    return FALSE;
  g_mutex_lock (&store->lock);
  store->seen = id;
  g_mutex_unlock (&store->lock);
  return TRUE;
}

gboolean
sstore_changed (SStore *store)
{
  SStoreFileId id;
  gboolean changed;

  sstore_file_id (store->path, &id);
  g_mutex_lock (&store->lock);
  changed = !sstore_file_id_equal (&id, &store->seen);
  g_mutex_unlock (&store->lock);
  return changed;
}

gboolean
sstore_is_busy (SStore *store)
{
  return store->busy;
}

void
sstore_sync_async (SStore *store, char *own, gint64 now, SStoreDone done, gpointer user_data)
{
  SStoreJob *job = g_new0 (SStoreJob, 1);

  g_return_if_fail (!store->closed);
  job->store = sstore_ref (store);
  job->own = own;
  job->now = now;
  job->done = done;
  job->user_data = user_data;
  store->busy = TRUE;
  g_thread_pool_push (store->pool, job, NULL);
}

gboolean
sstore_sync (SStore *store, const char *own, gint64 now, char **merged, GError **error)
{
  return sstore_sync_locked (store, own, now, merged, error);
}
