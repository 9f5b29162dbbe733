/* SPDX-License-Identifier: MIT */
/* The crash test's victim: commits messages through storage-sqlite until killed, acknowledging each on stdout. */
#include "config.h"
#include "core-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <signal.h>
#endif

/*
 * Usage: sq-crash-writer CONF_DIR STATE_DIR SEED CONCURRENCY
 *
 * Builds and starts a generation from CONF_DIR (which enables
 * storage-sqlite), prints "READY", then keeps CONCURRENCY messages in
 * flight, each written in random pieces across loop iterations. After each
 * commit completes it writes "ACK QUEUE-ID SIZE MD5" to stdout with one
 * write(2) (atomic on a pipe), so a line the test reads is a commit this
 * process saw completed. A message's content follows from its first line
 * ("X-Crash: SEED SIZE"), so any message found later can be checked.
 */

typedef struct Writer Writer;

typedef struct {
  PbModule *mod;
  GRand *rand;
  guint64 seed;
  guint64 counter;
  gboolean failed;
} Crash;

struct Writer {
  Crash *crash;
  PbStoreMessage *msg;
  guint8 *body;
  gsize size;
  gsize written;
};

/* The body of message SEED of SIZE octets (the test has the same function). */
static guint8 *
crash_body (guint64 seed, gsize size)
{
  guint8 *body = g_malloc (size);
  g_autofree char *head = g_strdup_printf ("X-Crash: %" G_GUINT64_FORMAT " %" G_GSIZE_FORMAT "\r\n\r\n", seed, size);
  gsize hlen = MIN (strlen (head), size);
  guint64 x = seed * 0x9E3779B97F4A7C15ull + 1;

  memcpy (body, head, hlen);
  for (gsize i = hlen; i < size; i++)
    {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      body[i] = (guint8) x;
    }
  return body;
}

static void writer_next (Writer *w);

static void
writer_committed (const char *queue_id, const GError *error, gpointer data)
{
  Writer *w = data;
  g_autofree char *md5 = NULL;
  g_autofree char *line = NULL;

  w->msg = NULL;
  if (error != NULL)
    {
      fprintf (stderr, "sq-crash-writer: commit failed: %s\n", error->message);
      w->crash->failed = TRUE;
      return;
    }
  md5 = g_compute_checksum_for_data (G_CHECKSUM_MD5, w->body, w->size);
  line = g_strdup_printf ("ACK %s %" G_GSIZE_FORMAT " %s\n", queue_id, w->size, md5);
  if (write (STDOUT_FILENO, line, strlen (line)) != (gssize) strlen (line))
    _exit (3);
  g_clear_pointer (&w->body, g_free);
  writer_next (w);
}

static gboolean
writer_step (gpointer data)
{
  Writer *w = data;
  Crash *c = w->crash;
  g_autoptr (GError) error = NULL;
  gsize n = (gsize) g_rand_int_range (c->rand, 1, 40000);

  if (w->written == w->size)
    {
      pb_store_message_commit (w->msg, writer_committed, w);
      return G_SOURCE_REMOVE;
    }
  n = MIN (w->size - w->written, n);
  if (!pb_store_message_write (w->msg, w->body + w->written, n, &error))
    {
      fprintf (stderr, "sq-crash-writer: write failed: %s\n", error->message);
      c->failed = TRUE;
      return G_SOURCE_REMOVE;
    }
  w->written += n;
  return G_SOURCE_CONTINUE;
}

static void
writer_next (Writer *w)
{
  Crash *c = w->crash;
  PbRecipient a = { sizeof (PbRecipient), "crash-a@localhost", "crash-a", NULL, NULL };
  PbRecipient b = { sizeof (PbRecipient), "crash-b@localhost", "crash-b", NULL, NULL };
  PbRecipient far = { sizeof (PbRecipient), "far@remote.example", NULL, "FAILURE", NULL };
  const PbRecipient *rcpts[] = { &a, &b, NULL, NULL };
  PbEnvelope env = { sizeof (PbEnvelope), "crash@localhost", rcpts, NULL, "127.0.0.1", NULL, NULL, NULL, 0 };
  g_autoptr (GError) error = NULL;
  guint64 seed = c->seed + c->counter++;

  if (seed % 16 == 0)
    rcpts[2] = &far;
  /* Mostly small messages; one in eight spans several 64 KiB pieces. */
  w->size = g_rand_int_range (c->rand, 0, 8) == 0 ? (gsize) g_rand_int_range (c->rand, 66000, 260000)
                                                  : (gsize) g_rand_int_range (c->rand, 40, 9000);
  w->body = crash_body (seed, w->size);
  w->written = 0;
  w->msg = pb_store_message_begin (c->mod, &env, &error);
  if (w->msg == NULL)
    {
      fprintf (stderr, "sq-crash-writer: begin failed: %s\n", error->message);
      c->failed = TRUE;
      return;
    }
  pb_idle_add (writer_step, w);
}

static gboolean
crash_give_up (gpointer data)
{
  /* A test that forgot us: leave without cleaning up (as a kill would). */
  _exit (0);
  return G_SOURCE_REMOVE;
}

int
main (int argc, char **argv)
{
  Crash crash = { 0 };
  PbDiag *diag;
  PbGeneration *gen;
  g_autoptr (GError) error = NULL;
  Writer *writers;
  guint concurrency;

  if (argc != 5)
    {
      fprintf (stderr, "usage: %s CONF_DIR STATE_DIR SEED CONCURRENCY\n", argv[0]);
      return 2;
    }
#ifdef __linux__
  prctl (PR_SET_PDEATHSIG, SIGKILL);
#endif
  lt_dlinit ();
  diag = pb_diag_new ();
  gen = pb_generation_build (argv[1], argv[2], NULL, FALSE, diag);
  if (gen == NULL)
    {
      g_autofree char *all = pb_diag_join (diag);
      fprintf (stderr, "sq-crash-writer: %s\n", all);
      return 1;
    }
  if (!pb_generation_start (gen, &error))
    {
      fprintf (stderr, "sq-crash-writer: %s\n", error->message);
      return 1;
    }
  crash.mod = pb_generation_find_module (gen, "storage-sqlite");
  crash.seed = g_ascii_strtoull (argv[3], NULL, 10);
  crash.rand = g_rand_new_with_seed ((guint32) crash.seed);
  concurrency = (guint) CLAMP (g_ascii_strtoull (argv[4], NULL, 10), 1, 256);
  if (write (STDOUT_FILENO, "READY\n", 6) != 6)
    return 3;

  writers = g_new0 (Writer, concurrency);
  for (guint i = 0; i < concurrency; i++)
    {
      writers[i].crash = &crash;
      writer_next (&writers[i]);
    }
  pb_timeout_add_seconds (60, crash_give_up, NULL);
  while (!crash.failed)
    g_main_context_iteration (NULL, TRUE);
  _exit (4);
}
