/* SPDX-License-Identifier: MIT */
/* Crash test: SIGKILL a committing writer at random moments, reopen, and check every acknowledged commit. */
#include "config.h"
#include "test-help.h"
#include "core-private.h"

#include <errno.h>
#include <glib-unix.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Each round starts sq-crash-writer on the same database, lets it run for
 * a random time (sometimes killing it while it starts, opens and recovers
 * the database), kills it with SIGKILL, and reads what it acknowledged on
 * its stdout. Then this process opens the store (running recovery) and
 * checks:
 *   - every acknowledged message is there, with the acknowledged size and
 *     MD5, in both mailboxes it was delivered to;
 *   - every message in the mailboxes is intact (its content follows from
 *     its first line), so nothing half-written is visible;
 *   - no 'receiving' message and no orphan body piece is left.
 * Every tenth round it empties the mailboxes (which deletes the bodies) to
 * keep the database small. PB_CRASH_ROUNDS (default 500) sets the number of kill
 * points, PB_CRASH_SEED the random seed.
 */

#define WAIT_MS 30000

typedef struct {
  char *conf;
  char *state;
  char *writer;
  guint rounds;
  guint32 seed;
  /* totals */
  guint kills;
  guint kills_at_start;
  guint64 acked;
  guint64 lost;
  guint64 corrupt;
  guint64 unacked_present;
  guint64 recovered;
  GHashTable *verified;       /* queue ids already read back whole */
} Crash;

/* ---- talking to the store ---- */

typedef struct {
  gboolean done;
  GVariant *result;
  GError *error;
} Wait;

static void
request_done (GVariant *result, const GError *error, gpointer data)
{
  Wait *w = data;
  w->done = TRUE;
  w->result = result != NULL ? g_variant_ref (result) : NULL;
  w->error = error != NULL ? g_error_copy (error) : NULL;
}

static GVariant *
request_ok (PbModule *mod, const char *op, GVariant *args)
{
  Wait w = { 0 };

  pb_store_request (mod, op, args, request_done, &w);
  if (!pbt_loop_until (&w.done, WAIT_MS))
    fail_msg ("%s: no answer", op);
  if (w.error != NULL)
    fail_msg ("%s failed: %s", op, w.error->message);
  return w.result;
}

typedef struct {
  gboolean done;
  GByteArray *data;
  gboolean eof;
  GError *error;
} ReadWait;

static void
read_done (const guint8 *data, gsize len, gboolean eof, const GError *error, gpointer user_data)
{
  ReadWait *w = user_data;
  w->done = TRUE;
  w->eof = eof;
  if (len > 0)
    g_byte_array_append (w->data, data, (guint) len);
  w->error = error != NULL ? g_error_copy (error) : NULL;
}

/* The whole message, or NULL when it is not there. */
static GByteArray *
read_all (PbModule *mod, const char *qid)
{
  GByteArray *all = g_byte_array_new ();

  for (;;)
    {
      ReadWait w = { 0 };

      w.data = all;
      pb_store_message_read (mod, qid, all->len, 256 * 1024, read_done, &w);
      if (!pbt_loop_until (&w.done, WAIT_MS))
        fail_msg ("read: no answer");
      if (w.error != NULL)
        {
          if (!g_error_matches (w.error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND))
            fail_msg ("reading %s: %s", qid, w.error->message);
          g_error_free (w.error);
          g_byte_array_unref (all);
          return NULL;
        }
      if (w.eof)
        return all;
    }
}

/* The same as sq-crash-writer's. */
static guint8 *
crash_body (guint64 seed, gsize size)
{
  guint8 *body = g_malloc (MAX (size, 1));
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

/* Whether BODY is a complete, intact crash-writer message. */
static gboolean
body_is_intact (const GByteArray *body)
{
  guint64 seed;
  gsize size;
  g_autofree guint8 *expect = NULL;
  char head[64];

  memset (head, 0, sizeof head);
  memcpy (head, body->data, MIN (body->len, sizeof head - 1));
  if (sscanf (head, "X-Crash: %" G_GUINT64_FORMAT " %" G_GSIZE_FORMAT, &seed, &size) != 2)
    return body->len < 40;  /* too short to hold its own header: compare nothing */
  if (size != body->len)
    return FALSE;
  expect = crash_body (seed, size);
  return memcmp (expect, body->data, size) == 0;
}

static PbGeneration *
open_gen (Crash *c, PbModule **mod)
{
  PbDiag *diag = pb_diag_new ();
  g_autoptr (GError) error = NULL;
  PbGeneration *gen = pb_generation_build (c->conf, c->state, NULL, FALSE, diag);

  if (gen == NULL)
    {
      g_autofree char *all = pb_diag_join (diag);
      fail_msg ("build failed: %s", all);
    }
  pb_diag_free (diag);
  if (!pb_generation_start (gen, &error))
    fail_msg ("start failed: %s", error->message);
  *mod = pb_generation_find_module (gen, "storage-sqlite");
  return gen;
}

static gint64
db_int (Crash *c, const char *sql)
{
  g_autofree char *path = g_build_filename (c->state, "storage-sqlite", "pillarbox.db", NULL);
  sqlite3 *db = NULL;
  sqlite3_stmt *stmt = NULL;
  gint64 v = -1;

  assert_int_equal (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  if (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL) != SQLITE_OK)
    fail_msg ("%s: %s", sql, sqlite3_errmsg (db));
  if (sqlite3_step (stmt) == SQLITE_ROW)
    v = sqlite3_column_int64 (stmt, 0);
  sqlite3_finalize (stmt);
  sqlite3_close (db);
  return v;
}

/* ---- one round ---- */

typedef struct {
  char *qid;
  gsize size;
  char *md5;
} Ack;

static void
ack_free (gpointer data)
{
  Ack *a = data;
  g_free (a->qid);
  g_free (a->md5);
  g_free (a);
}

/* Reads what is there (without blocking); FALSE at end of file. */
static gboolean
drain (int fd, GString *out)
{
  char buf[8192];

  for (;;)
    {
      gssize n = read (fd, buf, sizeof buf);
      if (n > 0)
        g_string_append_len (out, buf, n);
      else if (n == 0)
        return FALSE;
      else
        return errno == EAGAIN || errno == EINTR;
    }
}

/* Reads from FD until DEADLINE (monotonic µs) or until NEEDLE appears. */
static void
read_until (int fd, GString *out, gint64 deadline, const char *needle)
{
  for (;;)
    {
      gint64 now = g_get_monotonic_time ();
      struct pollfd p = { fd, POLLIN, 0 };

      if (needle != NULL && strstr (out->str, needle) != NULL)
        return;
      if (now >= deadline)
        return;
      if (deadline - now < 1000)
        {
          g_usleep ((gulong) (deadline - now));
          continue;
        }
      if (poll (&p, 1, (int) ((deadline - now) / 1000)) > 0 && !drain (fd, out))
        return;
    }
}

static void
crash_round (Crash *c, guint round, GRand *rand)
{
  g_autofree char *seed = g_strdup_printf ("%" G_GUINT64_FORMAT, ((guint64) round + 1) << 24);
  g_autofree char *conc = g_strdup_printf ("%d", g_rand_int_range (rand, 1, 17));
  char *argv[] = { c->writer, c->conf, c->state, seed, conc, NULL };
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) out = g_string_new (NULL);
  g_autoptr (GPtrArray) acks = g_ptr_array_new_with_free_func (ack_free);
  g_autoptr (GHashTable) acked = g_hash_table_new (g_str_hash, g_str_equal);  /* qid -> Ack */
  g_auto (GStrv) lines = NULL;
  GPid pid;
  int fd, status;
  gint64 start;
  PbGeneration *gen;
  PbModule *mod;

  if (!g_spawn_async_with_pipes (NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &pid, NULL, &fd, NULL,
                                 &error))
    fail_msg ("cannot start %s: %s", c->writer, error->message);
  g_unix_set_fd_nonblocking (fd, TRUE, NULL);
  start = g_get_monotonic_time ();
  if (g_rand_int_range (rand, 0, 10) == 0)
    {
      /* While it loads, opens, migrates and recovers. */
      read_until (fd, out, start + g_rand_int_range (rand, 0, 40000), NULL);
      if (strstr (out->str, "READY\n") == NULL)
        c->kills_at_start++;
    }
  else
    {
      read_until (fd, out, start + 30 * G_USEC_PER_SEC, "READY\n");
      if (strstr (out->str, "READY\n") == NULL)
        fail_msg ("round %u: the writer did not start", round);
      read_until (fd, out, g_get_monotonic_time () + g_rand_int_range (rand, 0, 30000), NULL);
    }
  kill (pid, SIGKILL);
  waitpid (pid, &status, 0);
  g_spawn_close_pid (pid);
  if (!WIFSIGNALED (status))
    fail_msg ("round %u: the writer exited by itself (status %d): see its stderr", round, status);
  c->kills++;
  g_unix_set_fd_nonblocking (fd, FALSE, NULL);
  while (drain (fd, out))
    ;
  close (fd);

  /* Only whole lines count: a line is written with one write(2). */
  lines = g_strsplit (out->str, "\n", -1);
  for (guint i = 0; lines[i] != NULL && lines[i + 1] != NULL; i++)
    {
      g_auto (GStrv) w = g_strsplit (lines[i], " ", -1);
      Ack *a;

      if (strcmp (lines[i], "READY") == 0)
        continue;
      if (g_strv_length (w) != 4 || strcmp (w[0], "ACK") != 0)
        fail_msg ("round %u: unexpected line from the writer: %s", round, lines[i]);
      a = g_new0 (Ack, 1);
      a->qid = g_strdup (w[1]);
      a->size = (gsize) g_ascii_strtoull (w[2], NULL, 10);
      a->md5 = g_strdup (w[3]);
      g_ptr_array_add (acks, a);
      g_hash_table_insert (acked, a->qid, a);
    }

  gen = open_gen (c, &mod);
  {
    g_autoptr (GVariant) stats = request_ok (mod, "storage.stats", NULL);
    guint64 recovered = 0;
    g_variant_lookup (stats, "recovered", "t", &recovered);
    c->recovered += recovered;
  }
  /* Both mailboxes got every message in the same transaction: they list
   * the same messages, each of them whole, among them every acknowledged one. */
  {
    g_autoptr (GVariant) list_a = request_ok (mod, "mailbox.list", g_variant_new ("(s)", "crash-a"));
    g_autoptr (GVariant) list_b = request_ok (mod, "mailbox.list", g_variant_new ("(s)", "crash-b"));
    g_autoptr (GHashTable) in_b = g_hash_table_new (g_str_hash, g_str_equal);
    g_autoptr (GHashTable) in_a = g_hash_table_new (g_str_hash, g_str_equal);
    g_autoptr (GArray) uids_a = g_array_new (FALSE, FALSE, sizeof (guint64));
    g_autoptr (GArray) uids_b = g_array_new (FALSE, FALSE, sizeof (guint64));
    g_autoptr (GVariant) deleted_a = NULL;
    g_autoptr (GVariant) deleted_b = NULL;

    for (gsize i = 0; i < g_variant_n_children (list_b); i++)
      {
        guint64 uid;
        const char *qid;
        g_variant_get_child (list_b, i, "(t&sxx&s)", &uid, &qid, NULL, NULL, NULL);
        g_array_append_val (uids_b, uid);
        g_hash_table_add (in_b, (gpointer) qid);
      }
    for (gsize i = 0; i < g_variant_n_children (list_a); i++)
      {
        guint64 uid;
        const char *qid;
        g_autoptr (GByteArray) body = NULL;
        Ack *a;

        g_variant_get_child (list_a, i, "(t&sxx&s)", &uid, &qid, NULL, NULL, NULL);
        g_array_append_val (uids_a, uid);
        g_hash_table_add (in_a, (gpointer) qid);
        if (!g_hash_table_contains (in_b, qid))
          {
            c->corrupt++;
            print_error ("round %u: %s is in crash-a only\n", round, qid);
          }
        if (g_hash_table_contains (c->verified, qid))
          continue;
        g_hash_table_add (c->verified, g_strdup (qid));
        body = read_all (mod, qid);
        if (body == NULL || !body_is_intact (body))
          {
            c->corrupt++;
            print_error ("round %u: %s is %s\n", round, qid, body == NULL ? "unreadable" : "damaged");
            continue;
          }
        a = g_hash_table_lookup (acked, qid);
        if (a == NULL)
          {
            c->unacked_present++;
            continue;
          }
        {
          g_autofree char *md5 = g_compute_checksum_for_data (G_CHECKSUM_MD5, body->data, body->len);
          if (body->len != a->size || strcmp (md5, a->md5) != 0)
            {
              c->corrupt++;
              print_error ("round %u: acknowledged message %s differs (%u octets, %" G_GSIZE_FORMAT
                           " acknowledged)\n", round, qid, body->len, a->size);
            }
        }
      }
    if (uids_a->len != uids_b->len)
      {
        c->corrupt++;
        print_error ("round %u: crash-a has %u messages, crash-b %u\n", round, uids_a->len, uids_b->len);
      }
    for (guint i = 0; i < acks->len; i++)
      {
        Ack *a = g_ptr_array_index (acks, i);
        c->acked++;
        if (!g_hash_table_contains (in_a, a->qid) || !g_hash_table_contains (in_b, a->qid))
          {
            g_autoptr (GByteArray) body = read_all (mod, a->qid);
            c->lost++;
            print_error ("round %u: acknowledged message %s is %s\n", round, a->qid,
                         body == NULL ? "lost" : "missing from a mailbox");
          }
      }
    /* Every tenth round, empty the mailboxes (which deletes the bodies) to
     * keep the database small. */
    if (round % 10 == 9 || round + 1 == c->rounds)
      {
        GVariant *ua = g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, uids_a->data, uids_a->len, sizeof (guint64));
        GVariant *ub = g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, uids_b->data, uids_b->len, sizeof (guint64));

        deleted_a = request_ok (mod, "mailbox.delete", g_variant_new ("(s@at)", "crash-a", ua));
        deleted_b = request_ok (mod, "mailbox.delete", g_variant_new ("(s@at)", "crash-b", ub));
        assert_int_equal (g_variant_get_uint64 (deleted_a), uids_a->len);
        assert_int_equal (g_variant_get_uint64 (deleted_b), uids_b->len);
        g_hash_table_remove_all (c->verified);
      }
  }

  pb_generation_unref (gen);

  if (db_int (c, "SELECT count(*) FROM messages WHERE state = 'receiving'") != 0)
    fail_msg ("round %u: unfinished messages survived recovery", round);
  if (db_int (c, "SELECT count(*) FROM chunks WHERE message_id NOT IN (SELECT id FROM messages)") != 0)
    fail_msg ("round %u: body pieces without a message", round);
  /* Emptied mailboxes leave only messages still queued for the remote recipient. */
  if (g_hash_table_size (c->verified) == 0 && db_int (c, "SELECT count(*) FROM messages WHERE id NOT IN (SELECT message_id FROM queue)") != 0)
    fail_msg ("round %u: bodies outlived their last reference", round);
}

static void
test_crash (void **state)
{
  Crash *c = *state;
  GRand *rand = g_rand_new_with_seed (c->seed);
  gint64 start = g_get_monotonic_time ();
  PbGeneration *gen;
  PbModule *mod;

  gen = open_gen (c, &mod);
  g_assert_null (request_ok (mod, "user.add", g_variant_new ("(sssx)", "crash-a", "$y$x", "pop3", (gint64) 0)));
  g_assert_null (request_ok (mod, "user.add", g_variant_new ("(sssx)", "crash-b", "$y$x", "pop3", (gint64) 0)));
  pb_generation_unref (gen);

  for (guint round = 0; round < c->rounds; round++)
    crash_round (c, round, rand);
  g_rand_free (rand);

  print_message ("crash test (seed %u): %u kill points (%u during start-up) in %.1f s; %" G_GUINT64_FORMAT
                 " acknowledged commits checked, %" G_GUINT64_FORMAT " lost, %" G_GUINT64_FORMAT
                 " damaged; %" G_GUINT64_FORMAT " committed but not yet acknowledged at the kill (kept, intact); %"
                 G_GUINT64_FORMAT " unfinished messages removed by recovery\n",
                 c->seed, c->kills, c->kills_at_start, (g_get_monotonic_time () - start) / 1e6, c->acked, c->lost,
                 c->corrupt, c->unacked_present, c->recovered);
  assert_true (c->kills >= c->rounds);
  assert_true (c->acked > 0);
  assert_int_equal (c->lost, 0);
  assert_int_equal (c->corrupt, 0);
}

static int
setup (void **state)
{
  Crash *c = g_new0 (Crash, 1);
  const char *rounds = g_getenv ("PB_CRASH_ROUNDS");
  const char *seed = g_getenv ("PB_CRASH_SEED");
  g_autofree char *core = g_strdup_printf ("[core]\nmodule-dir = %s/modules\n", TOP_BUILDDIR);

  c->conf = pbt_mkdtemp ();
  c->state = pbt_mkdtemp ();
  c->writer = g_build_filename (TOP_BUILDDIR, "modules", "storage-sqlite", "sq-crash-writer", NULL);
  c->verified = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  c->rounds = rounds != NULL ? (guint) g_ascii_strtoull (rounds, NULL, 10) : 500;
  c->seed = seed != NULL ? (guint32) g_ascii_strtoull (seed, NULL, 10) : (guint32) g_get_real_time ();
  pbt_write_file (c->conf, "00-core.conf", core);
  /* Small checkpoints, so that kills also land in the middle of them. */
  pbt_write_file (c->conf, "10-storage-sqlite.conf", "[module storage-sqlite]\ncheckpoint-size = 1M\n");
  pbt_log_capture ();
  *state = c;
  return 0;
}

static int
teardown (void **state)
{
  Crash *c = *state;

  pbt_log_check_empty ();
  pbt_rmtree (c->conf);
  pbt_rmtree (c->state);
  g_free (c->conf);
  g_free (c->state);
  g_free (c->writer);
  g_hash_table_unref (c->verified);
  g_free (c);
  return 0;
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_crash, setup, teardown),
  };

  lt_dlinit ();
  return cmocka_run_group_tests (tests, NULL, NULL);
}
