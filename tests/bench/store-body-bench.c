/* SPDX-License-Identifier: MIT */
/* Measures the two ways to keep message bodies durable: blobs in the SQLite database or one spool file each. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Usage: store-body-bench [--seconds S] [--sizes 4096,262144] [--batches 1,100] WORKDIR
 *
 * Each design stores messages in batches of B (B concurrent sessions
 * committing together) and makes each batch durable before counting it,
 * as storage-sqlite's group commit does. Every message also gets its
 * mailbox row. The designs:
 *
 *   blob     the body in 64 KiB rows of a chunks table, in the same WAL
 *            transaction (synchronous=FULL): one fsync of the log per batch;
 *   spool    one file per body, written and fsync()ed one after another,
 *            then the directory fsync()ed, then the rows committed (FULL);
 *   spool-4  the same with the files written and fsync()ed by 4 threads.
 *
 * Every design starts from an empty directory under WORKDIR, removed after.
 */

#define PIECE (64 * 1024)

typedef struct {
  const char *name;
  gboolean spool;
  guint threads;
} Design;

static void
die (const char *what, const char *why)
{
  g_printerr ("store-body-bench: %s: %s\n", what, why);
  exit (1);
}

static void
db_exec (sqlite3 *db, const char *sql)
{
  char *msg = NULL;
  if (sqlite3_exec (db, sql, NULL, NULL, &msg) != SQLITE_OK)
    die (sql, msg);
}

static sqlite3 *
db_open (const char *dir)
{
  g_autofree char *path = g_build_filename (dir, "bench.db", NULL);
  sqlite3 *db = NULL;

  if (sqlite3_open (path, &db) != SQLITE_OK)
    die (path, sqlite3_errmsg (db));
  db_exec (db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
               "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT, size INTEGER);"
               "CREATE TABLE chunks (message_id INTEGER, pos INTEGER, data BLOB, PRIMARY KEY (message_id, pos));"
               "CREATE TABLE mailbox (uid INTEGER PRIMARY KEY AUTOINCREMENT, message_id INTEGER, size INTEGER)");
  return db;
}

static void
step (sqlite3 *db, sqlite3_stmt *st)
{
  if (sqlite3_step (st) != SQLITE_DONE)
    die ("step", sqlite3_errmsg (db));
  sqlite3_reset (st);
}

typedef struct {
  const char *dir;
  const guint8 *body;
  gsize size;
  guint64 first;
  guint count;
} FileJob;

static void
write_file (const char *dir, guint64 n, const guint8 *body, gsize size)
{
  g_autofree char *path = g_strdup_printf ("%s/m%" G_GUINT64_FORMAT, dir, n);
  int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

  if (fd < 0 || write (fd, body, size) != (gssize) size || fsync (fd) != 0)
    die (path, g_strerror (errno));
  close (fd);
}

static gpointer
file_worker (gpointer data)
{
  FileJob *job = data;
  for (guint i = 0; i < job->count; i++)
    write_file (job->dir, job->first + i, job->body, job->size);
  return NULL;
}

static void
fsync_dir (const char *dir)
{
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync (fd) != 0)
    die (dir, g_strerror (errno));
  close (fd);
}

/* Messages per second for one design, size and batch. */
static double
run (const Design *d, const char *work, gsize size, guint batch, double seconds)
{
  g_autofree char *dir = g_strdup_printf ("%s/%s-%" G_GSIZE_FORMAT "-%u", work, d->name, size, batch);
  g_autofree char *spool = g_build_filename (dir, "spool", NULL);
  g_autofree guint8 *body = g_malloc (size);
  sqlite3 *db;
  sqlite3_stmt *ins_msg, *ins_chunk, *ins_box;
  guint64 messages = 0;
  gint64 start, end;

  for (gsize i = 0; i < size; i++)
    body[i] = (guint8) g_random_int ();
  g_mkdir_with_parents (spool, 0700);
  db = db_open (dir);
  sqlite3_prepare_v2 (db, "INSERT INTO messages (path, size) VALUES (?1, ?2)", -1, &ins_msg, NULL);
  sqlite3_prepare_v2 (db, "INSERT INTO chunks (message_id, pos, data) VALUES (?1, ?2, ?3)", -1, &ins_chunk, NULL);
  sqlite3_prepare_v2 (db, "INSERT INTO mailbox (message_id, size) VALUES (?1, ?2)", -1, &ins_box, NULL);

  start = g_get_monotonic_time ();
  end = start + (gint64) (seconds * G_USEC_PER_SEC);
  while (g_get_monotonic_time () < end)
    {
      if (d->spool && d->threads <= 1)
        for (guint i = 0; i < batch; i++)
          write_file (spool, messages + i, body, size);
      else if (d->spool)
        {
          GThread *threads[16];
          FileJob jobs[16];
          guint nt = MIN (d->threads, batch);

          for (guint t = 0; t < nt; t++)
            {
              guint from = batch * t / nt, to = batch * (t + 1) / nt;
              jobs[t] = (FileJob) { spool, body, size, messages + from, to - from };
              threads[t] = g_thread_new ("spool", file_worker, &jobs[t]);
            }
          for (guint t = 0; t < nt; t++)
            g_thread_join (threads[t]);
        }
      if (d->spool)
        fsync_dir (spool);

      db_exec (db, "BEGIN IMMEDIATE");
      for (guint i = 0; i < batch; i++)
        {
          g_autofree char *path = d->spool ? g_strdup_printf ("m%" G_GUINT64_FORMAT, messages + i) : NULL;
          gint64 id;

          sqlite3_bind_text (ins_msg, 1, path, -1, SQLITE_TRANSIENT);
          sqlite3_bind_int64 (ins_msg, 2, (gint64) size);
          step (db, ins_msg);
          id = sqlite3_last_insert_rowid (db);
          for (gsize pos = 0; !d->spool && pos < size; pos += PIECE)
            {
              sqlite3_bind_int64 (ins_chunk, 1, id);
              sqlite3_bind_int64 (ins_chunk, 2, (gint64) pos);
              sqlite3_bind_blob (ins_chunk, 3, body + pos, (int) MIN (PIECE, size - pos), SQLITE_STATIC);
              step (db, ins_chunk);
            }
          sqlite3_bind_int64 (ins_box, 1, id);
          sqlite3_bind_int64 (ins_box, 2, (gint64) size);
          step (db, ins_box);
        }
      db_exec (db, "COMMIT");
      messages += batch;
    }
  end = g_get_monotonic_time ();

  sqlite3_finalize (ins_msg);
  sqlite3_finalize (ins_chunk);
  sqlite3_finalize (ins_box);
  sqlite3_close (db);
  {
    g_autoptr (GDir) sd = g_dir_open (spool, 0, NULL);
    const char *name;
    while (sd != NULL && (name = g_dir_read_name (sd)) != NULL)
      {
        g_autofree char *p = g_build_filename (spool, name, NULL);
        g_unlink (p);
      }
  }
  g_rmdir (spool);
  {
    g_autoptr (GDir) dd = g_dir_open (dir, 0, NULL);
    const char *name;
    while (dd != NULL && (name = g_dir_read_name (dd)) != NULL)
      {
        g_autofree char *p = g_build_filename (dir, name, NULL);
        g_unlink (p);
      }
  }
  g_rmdir (dir);
  return messages / ((end - start) / 1e6);
}

int
main (int argc, char **argv)
{
  static const Design designs[] = {
    { "blob", FALSE, 0 },
    { "spool", TRUE, 1 },
    { "spool-4", TRUE, 4 },
  };
  double seconds = 2;
  char *sizes_arg = NULL;
  char *batches_arg = NULL;
  GOptionEntry entries[] = {
    { "seconds", 's', 0, G_OPTION_ARG_DOUBLE, &seconds, "Length of each measurement", "S" },
    { "sizes", 0, 0, G_OPTION_ARG_STRING, &sizes_arg, "Message sizes (4096,262144)", "N,N" },
    { "batches", 0, 0, G_OPTION_ARG_STRING, &batches_arg, "Commits per batch (1,100)", "N,N" },
    { NULL }
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("WORKDIR");
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) sizes = NULL;
  g_auto (GStrv) batches = NULL;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || argc != 2 || seconds <= 0)
    {
      g_printerr ("usage: store-body-bench [--seconds S] [--sizes N,N] [--batches N,N] WORKDIR\n");
      return 2;
    }
  sizes = g_strsplit (sizes_arg != NULL ? sizes_arg : "4096,262144", ",", -1);
  batches = g_strsplit (batches_arg != NULL ? batches_arg : "1,100", ",", -1);

  printf ("%-8s %9s %6s %12s %10s\n", "design", "size", "batch", "messages/s", "MiB/s");
  for (guint s = 0; sizes[s] != NULL; s++)
    for (guint b = 0; batches[b] != NULL; b++)
      for (guint d = 0; d < G_N_ELEMENTS (designs); d++)
        {
          gsize size = (gsize) g_ascii_strtoull (sizes[s], NULL, 10);
          guint batch = (guint) CLAMP (g_ascii_strtoull (batches[b], NULL, 10), 1, 100000);
          double rate = run (&designs[d], argv[1], size, batch, seconds);
          printf ("%-8s %9" G_GSIZE_FORMAT " %6u %12.0f %10.1f\n", designs[d].name, size, batch, rate,
                  rate * size / (1024.0 * 1024.0));
          fflush (stdout);
        }
  g_free (sizes_arg);
  g_free (batches_arg);
  return 0;
}
