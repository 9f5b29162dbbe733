/* SPDX-License-Identifier: MIT */
/* Durable commits per second of storage-sqlite with N concurrent writers, beside this disk's write+fsync rate. */
#include "config.h"
#include "core-private.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Usage: store-commit-bench [--seconds S] [--writers 1,10,100] [--size 4096]
 *                           [--set "KEY = VALUE"]... --module-dir DIR WORKDIR
 *
 * --set adds a line to [module storage-sqlite] (e.g. "background-checkpoint = false").
 *
 * A writer is one message in flight on the loop thread: begin, write SIZE
 * octets, commit; when the commit completes (the message is durable) the
 * writer starts its next message. Each phase runs S seconds with a fresh
 * database under WORKDIR. The reference is the plain rate of creating a
 * file, writing SIZE octets to it and fsync()ing it, one at a time, in
 * WORKDIR, measured before and after the store phases (their mean is
 * used). The last line is the machine-readable summary:
 *   BENCH store-commit ratio=R commits_s=C fsync_s=F
 * where C is the rate of the last phase (100 writers by default) and R = C / F.
 */

typedef struct Bench Bench;

typedef struct {
  Bench *bench;
  PbStoreMessage *msg;
  gint64 started;
} Writer;

struct Bench {
  PbModule *mod;
  guint8 *body;
  gsize size;
  gint64 deadline;
  guint64 commits;
  guint64 failures;
  guint active;
  gint64 latency_sum;
  gint64 latency_max;
  gint64 last_done;
  gboolean finished;
};

static void writer_start (Writer *w);

static void
writer_done (const char *queue_id, const GError *error, gpointer data)
{
  Writer *w = data;
  Bench *b = w->bench;
  gint64 now = g_get_monotonic_time ();
  gint64 latency = now - w->started;

  w->msg = NULL;
  if (queue_id != NULL)
    {
      b->commits++;
      b->latency_sum += latency;
      b->latency_max = MAX (b->latency_max, latency);
      b->last_done = now;
    }
  else if (b->failures++ == 0)
    g_printerr ("store-commit-bench: a commit failed: %s\n", error->message);
  if (now < b->deadline && b->failures == 0)
    writer_start (w);
  else if (--b->active == 0)
    b->finished = TRUE;
}

static void
writer_start (Writer *w)
{
  Bench *b = w->bench;
  PbRecipient r = { sizeof (PbRecipient), "bench@example.org", "bench@example.org", NULL, NULL };
  const PbRecipient *rcpts[] = { &r, NULL };
  PbEnvelope env = { sizeof (PbEnvelope), "sender@remote.example", rcpts, NULL, "127.0.0.1", NULL, NULL, NULL, 0 };
  g_autoptr (GError) error = NULL;

  w->started = g_get_monotonic_time ();
  w->msg = pb_store_message_begin (b->mod, &env, &error);
  if (w->msg == NULL || !pb_store_message_write (w->msg, b->body, b->size, &error))
    {
      g_printerr ("store-commit-bench: %s\n", error->message);
      exit (1);
    }
  pb_store_message_commit (w->msg, writer_done, w);
}

typedef struct {
  gboolean done;
  GError *error;
} Wait;

static void
request_done (GVariant *result, const GError *error, gpointer data)
{
  Wait *w = data;
  w->done = TRUE;
  w->error = error != NULL ? g_error_copy (error) : NULL;
}

static void
request (PbModule *mod, const char *op, GVariant *args)
{
  Wait w = { 0 };

  pb_store_request (mod, op, args, request_done, &w);
  while (!w.done)
    g_main_context_iteration (NULL, TRUE);
  if (w.error != NULL)
    {
      g_printerr ("store-commit-bench: %s: %s\n", op, w.error->message);
      exit (1);
    }
}

static char **module_settings;

static PbGeneration *
open_store (const char *work, const char *module_dir, guint phase, PbModule **mod)
{
  g_autofree char *conf = g_strdup_printf ("%s/conf", work);
  g_autofree char *state = g_strdup_printf ("%s/state-%u", work, phase);
  g_autofree char *core = g_strdup_printf ("[core]\nmodule-dir = %s\n", module_dir);
  g_autofree char *core_file = g_build_filename (conf, "00-core.conf", NULL);
  g_autofree char *mod_file = g_build_filename (conf, "10-storage-sqlite.conf", NULL);
  g_autofree char *settings = module_settings != NULL ? g_strjoinv ("\n", module_settings) : g_strdup ("");
  g_autofree char *mod_text = g_strdup_printf ("[module storage-sqlite]\n%s\n", settings);
  g_autoptr (GError) error = NULL;
  PbDiag *diag = pb_diag_new ();
  PbGeneration *gen;

  g_mkdir_with_parents (conf, 0700);
  g_mkdir_with_parents (state, 0700);
  if (!g_file_set_contents (core_file, core, -1, &error)
      || !g_file_set_contents (mod_file, mod_text, -1, &error))
    {
      g_printerr ("store-commit-bench: %s\n", error->message);
      exit (1);
    }
  gen = pb_generation_build (conf, state, NULL, FALSE, diag);
  if (gen == NULL)
    {
      g_autofree char *all = pb_diag_join (diag);
      g_printerr ("store-commit-bench: %s\n", all);
      exit (1);
    }
  pb_diag_free (diag);
  if (!pb_generation_start (gen, &error))
    {
      g_printerr ("store-commit-bench: %s\n", error->message);
      exit (1);
    }
  *mod = pb_generation_find_module (gen, "storage-sqlite");
  request (*mod, "domain.add", g_variant_new ("(ssb)", "example.org", "", FALSE));
  request (*mod, "user.add", g_variant_new ("(sssx)", "bench@example.org", "$y$bench", "pop3", (gint64) 0));
  return gen;
}

/* Only warnings and errors: per-commit debug lines would cost the loop thread time. */
static GLogWriterOutput
bench_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer user_data)
{
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING))
    return g_log_writer_standard_streams (level, fields, n_fields, user_data);
  return G_LOG_WRITER_HANDLED;
}

static void
remove_tree (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = g_build_filename (dir, name, NULL);
      if (g_file_test (path, G_FILE_TEST_IS_DIR))
        remove_tree (path);
      else
        g_unlink (path);
    }
  g_rmdir (dir);
}

typedef struct {
  guint64 commits;
  double rate;
  double latency_avg_ms;
  double latency_max_ms;
  guint64 fsync_batches;
} Result;

typedef struct {
  gboolean done;
  GVariant *result;
} StatsWait;

static void
stats_done (GVariant *result, const GError *error, gpointer data)
{
  StatsWait *w = data;
  w->done = TRUE;
  w->result = result != NULL ? g_variant_ref (result) : NULL;
}

static guint64
stats_get (PbModule *mod, const char *key)
{
  StatsWait w = { 0 };
  guint64 v = 0;

  pb_store_request (mod, "storage.stats", NULL, stats_done, &w);
  while (!w.done)
    g_main_context_iteration (NULL, TRUE);
  if (w.result != NULL)
    {
      g_variant_lookup (w.result, key, "t", &v);
      g_variant_unref (w.result);
    }
  return v;
}

static Result
run_store (const char *work, const char *module_dir, guint phase, guint writers, gsize size, double seconds)
{
  Bench b = { 0 };
  PbModule *mod;
  PbGeneration *gen = open_store (work, module_dir, phase, &mod);
  Writer *w = g_new0 (Writer, writers);
  guint64 batches_before = stats_get (mod, "fsync-batches");
  gint64 start;
  Result r = { 0 };

  b.mod = mod;
  b.size = size;
  b.body = g_malloc (size);
  for (gsize i = 0; i < size; i++)
    b.body[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : (guint8) ('a' + i % 26);
  start = g_get_monotonic_time ();
  b.deadline = start + (gint64) (seconds * G_USEC_PER_SEC);
  b.active = writers;
  for (guint i = 0; i < writers; i++)
    {
      w[i].bench = &b;
      writer_start (&w[i]);
    }
  while (!b.finished)
    g_main_context_iteration (NULL, TRUE);
  if (b.failures > 0)
    exit (1);
  r.commits = b.commits;
  r.rate = b.commits / ((b.last_done - start) / 1e6);
  r.latency_avg_ms = b.commits > 0 ? b.latency_sum / 1e3 / b.commits : 0;
  r.latency_max_ms = b.latency_max / 1e3;
  r.fsync_batches = stats_get (mod, "fsync-batches") - batches_before;
  pb_generation_unref (gen);
  g_free (b.body);
  g_free (w);
  {
    g_autofree char *state = g_strdup_printf ("%s/state-%u", work, phase);
    remove_tree (state);
  }
  sync ();
  return r;
}

/* create + write SIZE + fsync + close, one file at a time, for SECONDS (or
 * REF_MAX_FILES files), in a directory of its own. The files stay until the
 * end of the run: for a minute or more after many files were deleted, ext4
 * creates files more slowly (it skips recently freed inodes), which would
 * lower the reference; the cap keeps the next run from paying for this one. */
#define REF_MAX_FILES 5000

static double
run_fsync (const char *work, const char *name, gsize size, double seconds)
{
  g_autofree char *dir = g_strdup_printf ("%s/%s", work, name);
  g_autofree guint8 *body = g_malloc0 (size);
  gint64 start, end;
  guint n = 0;

  g_mkdir_with_parents (dir, 0700);
  /* Start from a quiet disk: no writeback of earlier phases competing. */
  sync ();
  start = g_get_monotonic_time ();
  end = start + (gint64) (seconds * G_USEC_PER_SEC);
  while (g_get_monotonic_time () < end && n < REF_MAX_FILES)
    {
      g_autofree char *path = g_strdup_printf ("%s/f%u", dir, n);
      int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

      if (fd < 0 || write (fd, body, size) != (gssize) size || fsync (fd) != 0)
        {
          g_printerr ("store-commit-bench: %s: %s\n", path, g_strerror (errno));
          exit (1);
        }
      close (fd);
      n++;
    }
  end = g_get_monotonic_time ();
  return n / ((end - start) / 1e6);
}

int
main (int argc, char **argv)
{
  double seconds = 3;
  char *writers_arg = NULL;
  char *module_dir = NULL;
  gint64 size = 4096;
  GOptionEntry entries[] = {
    { "seconds", 's', 0, G_OPTION_ARG_DOUBLE, &seconds, "Length of each phase", "S" },
    { "writers", 'w', 0, G_OPTION_ARG_STRING, &writers_arg, "Concurrent writers of each phase (1,10,100)", "N,N" },
    { "size", 0, 0, G_OPTION_ARG_INT64, &size, "Message size in octets (4096)", "OCTETS" },
    { "module-dir", 'm', 0, G_OPTION_ARG_FILENAME, &module_dir, "Where storage-sqlite.so is", "DIR" },
    { "set", 0, 0, G_OPTION_ARG_STRING_ARRAY, &module_settings, "A line for [module storage-sqlite]", "\"KEY = VALUE\"" },
    { NULL }
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("WORKDIR");
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) counts = NULL;
  double fsync_before, fsync_after, fsync_rate, best = 0;
  Result *results;
  guint n;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || argc != 2 || module_dir == NULL || size < 1
      || seconds <= 0)
    {
      g_printerr ("usage: store-commit-bench [--seconds S] [--writers 1,10,100] [--size N] --module-dir DIR WORKDIR%s%s\n",
                  error != NULL ? ": " : "", error != NULL ? error->message : "");
      return 2;
    }
  counts = g_strsplit (writers_arg != NULL ? writers_arg : "1,10,100", ",", -1);
  n = g_strv_length (counts);
  results = g_new0 (Result, n);
  lt_dlinit ();
  g_log_set_writer_func (bench_log_writer, NULL, NULL);

  fsync_before = run_fsync (argv[1], "fsync-before", (gsize) size, seconds);
  for (guint i = 0; i < n; i++)
    results[i] = run_store (argv[1], module_dir, i, (guint) g_ascii_strtoull (counts[i], NULL, 10), (gsize) size,
                            seconds);
  fsync_after = run_fsync (argv[1], "fsync-after", (gsize) size, seconds);
  fsync_rate = (fsync_before + fsync_after) / 2;

  printf ("storage-sqlite durable commits, %" G_GINT64_FORMAT "-octet messages, %.1f s per phase, in %s\n\n", size,
          seconds, argv[1]);
  printf ("%-34s %12s %9s %12s %12s %14s\n", "what", "per second", "x fsync", "latency avg", "latency max",
          "commits/fsync");
  printf ("%-34s %12.0f %9.2f %12s %12s %14s\n", "file create+write+fsync (before)", fsync_before,
          fsync_before / fsync_rate, "", "", "");
  for (guint i = 0; i < n; i++)
    {
      g_autofree char *what = g_strdup_printf ("storage-sqlite, %s writer%s", counts[i],
                                               strcmp (counts[i], "1") == 0 ? "" : "s");
      printf ("%-34s %12.0f %9.2f %9.2f ms %9.2f ms %14.1f\n", what, results[i].rate, results[i].rate / fsync_rate,
              results[i].latency_avg_ms, results[i].latency_max_ms,
              results[i].fsync_batches > 0 ? (double) results[i].commits / results[i].fsync_batches : 0.0);
      best = results[i].rate;  /* the last phase's */
    }
  printf ("%-34s %12.0f %9.2f\n\n", "file create+write+fsync (after)", fsync_after, fsync_after / fsync_rate);
  printf ("BENCH store-commit ratio=%.2f commits_s=%.0f fsync_s=%.0f\n", best / fsync_rate, best, fsync_rate);
  g_free (results);
  g_free (writers_arg);
  g_free (module_dir);
  g_strfreev (module_settings);
  return 0;
}
