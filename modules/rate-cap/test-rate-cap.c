/* SPDX-License-Identifier: MIT */
/* Unit tests of rate-cap: the sliding window (fake clock), merging instances' counters, the state file. */
#include "config.h"
#include "test-help.h"
#include "rc-private.h"

#include <string.h>

#define SEC G_GINT64_CONSTANT (1000000)
#define MINUTE (60 * SEC)
#define HOUR_MS G_GINT64_CONSTANT (3600000)
/* Not a multiple of any step: events fall in the middle of steps. */
#define T0 (G_GINT64_CONSTANT (1700000017) * SEC + 123456)

static void
test_steps (void **state)
{
  static const struct {
    gint64 period_ms;
    gint64 step_usec;
  } cases[] = {
    { 3600000, 60 * SEC },      /* 1 h: one-minute steps */
    { 60000, SEC },             /* 1 min: one-second steps */
    { 1000, 16667 },            /* rounded up: 60 steps are never shorter than the period */
    { 86400000, 1440 * SEC },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    if (rc_step_usec (cases[i].period_ms) != cases[i].step_usec)
      fail_msg ("case %u: step of %" G_GINT64_FORMAT " ms is %" G_GINT64_FORMAT, i, cases[i].period_ms,
                rc_step_usec (cases[i].period_ms));
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    assert_true (rc_step_usec (cases[i].period_ms) * RC_STEPS >= cases[i].period_ms * 1000);
}

/* An event counts for at least one period and at most 61 steps (one period plus one
 * step, give or take the microseconds of rounding the step up). */
static void
test_window (void **state)
{
  static const gint64 periods[] = { 3600000, 60000, 1000, 7 * G_GINT64_CONSTANT (86400000), 90000 };

  for (guint i = 0; i < G_N_ELEMENTS (periods); i++)
    for (gint64 offset = 0; offset < 3 * SEC; offset += 777777)
      {
        RcCounters *c = rc_counters_new (1);
        gint64 p = periods[i] * 1000;
        gint64 step = rc_step_usec (periods[i]);
        gint64 t = T0 + offset;

        rc_counters_add (c, "id", periods[i], t, 1);
        if (rc_counters_get (c, "id", periods[i], t) != 1 || rc_counters_get (c, "id", periods[i], t + p - 1) != 1
            || rc_counters_get (c, "id", periods[i], t + p) != 1)
          fail_msg ("period %u, offset %" G_GINT64_FORMAT ": forgotten before one period", i, offset);
        if (rc_counters_get (c, "id", periods[i], t + RC_STEPS * step + step) != 0)
          fail_msg ("period %u, offset %" G_GINT64_FORMAT ": still counted after a period and a step", i, offset);
        rc_counters_free (c);
      }
}

/* "100 recipients per 60 minutes" with a fake clock. */
static void
test_limit_over_time (void **state)
{
  RcCounters *c = rc_counters_new (1);
  const char *id = "r|sender|recipients|3600000|bob@example.org";
  gint64 t = T0;

  for (guint i = 0; i < 10; i++, t += 5 * MINUTE)
    rc_counters_add (c, id, HOUR_MS, t, 10);
  assert_int_equal (rc_counters_get (c, id, HOUR_MS, t), 100);
  /* An hour after the first batch, it no longer counts (within a step). */
  assert_int_equal (rc_counters_get (c, id, HOUR_MS, T0 + 61 * MINUTE + SEC), 90);
  assert_int_equal (rc_counters_get (c, id, HOUR_MS, T0 + 200 * MINUTE), 0);
  assert_int_equal (rc_counters_get (c, "other", HOUR_MS, t), 0);
  assert_int_equal (rc_counters_size (c), 1);
  rc_counters_prune (c, T0 + 61 * MINUTE + SEC);
  assert_int_equal (rc_counters_get (c, id, HOUR_MS, T0 + 61 * MINUTE + SEC), 90);
  rc_counters_prune (c, T0 + 200 * MINUTE);
  assert_int_equal (rc_counters_size (c), 0);
  rc_counters_free (c);
}

static void
test_escape (void **state)
{
  static const char *const cases[] = {
    "plain|id@example.org", "with space", "per%cent", "new\nline\ttab", "caf\xc3\xa9", "",
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *e = rc_escape (cases[i]);
      g_autofree char *u = rc_unescape (e);
      if (strpbrk (e, " \n\t") != NULL || strcmp (u, cases[i]) != 0)
        fail_msg ("case %u: escaped '%s', back '%s'", i, e, u);
    }
  assert_null (rc_unescape ("bad%2"));
  assert_null (rc_unescape ("nul%00"));
}

/* Two instances (a reload) or one after another (a restart) add up without
 * counting anything twice, in whatever order they merge. */
static void
test_merge_instances (void **state)
{
  const char *id = "r|client-address|messages|3600000|192.0.2.7";
  RcCounters *a = rc_counters_new (0xa);
  RcCounters *b = rc_counters_new (0xb);
  g_autofree char *ta = NULL;
  g_autofree char *tb = NULL;
  g_autofree char *ab = NULL;
  g_autofree char *ba = NULL;
  gboolean changed;
  guint bad;

  rc_counters_add (a, id, HOUR_MS, T0, 5);
  /* B starts (a reload): it reads A's counts. */
  ta = rc_counters_serialize (a, T0);
  rc_counters_merge_text (b, ta, T0, &changed, &bad);
  assert_true (changed);
  assert_int_equal (bad, 0);
  assert_int_equal (rc_counters_get (b, id, HOUR_MS, T0), 5);
  /* Both go on counting, each its own sessions. */
  rc_counters_add (b, id, HOUR_MS, T0 + MINUTE, 3);
  rc_counters_add (a, id, HOUR_MS, T0 + MINUTE, 2);
  assert_int_equal (rc_counters_get (a, id, HOUR_MS, T0 + MINUTE), 7);
  assert_int_equal (rc_counters_get (b, id, HOUR_MS, T0 + MINUTE), 8);

  g_clear_pointer (&ta, g_free);
  ta = rc_counters_serialize (a, T0 + MINUTE);
  tb = rc_counters_serialize (b, T0 + MINUTE);
  ab = rc_merge_texts (ta, tb, T0 + MINUTE);
  ba = rc_merge_texts (tb, ta, T0 + MINUTE);
  assert_string_equal (ab, ba);
  /* Merging again changes nothing: no double counting. */
  rc_counters_merge_text (b, ta, T0 + MINUTE, &changed, NULL);
  assert_true (changed);
  rc_counters_merge_text (b, ta, T0 + MINUTE, &changed, NULL);
  assert_false (changed);
  rc_counters_merge_text (b, ab, T0 + MINUTE, &changed, NULL);
  assert_false (changed);
  assert_int_equal (rc_counters_get (b, id, HOUR_MS, T0 + MINUTE), 10);
  rc_counters_merge_text (a, tb, T0 + MINUTE, NULL, NULL);
  assert_int_equal (rc_counters_get (a, id, HOUR_MS, T0 + MINUTE), 10);

  /* A restart: a third instance reads the file and goes on. */
  {
    RcCounters *c = rc_counters_new (0xc);
    rc_counters_merge_text (c, ab, T0 + 2 * MINUTE, NULL, NULL);
    rc_counters_add (c, id, HOUR_MS, T0 + 2 * MINUTE, 1);
    assert_int_equal (rc_counters_get (c, id, HOUR_MS, T0 + 2 * MINUTE), 11);
    rc_counters_free (c);
  }
  rc_counters_free (a);
  rc_counters_free (b);
}

static void
test_text_format (void **state)
{
  RcCounters *c = rc_counters_new (G_GUINT64_CONSTANT (0x0123456789abcdef));
  RcCounters *d = rc_counters_new (2);
  g_autofree char *text = NULL;
  g_autofree char *again = NULL;
  gboolean changed;
  guint bad;

  rc_counters_add (c, "r|sender|messages|60000|odd sender\n@example.org", 60000, T0, 2);
  rc_counters_add (c, "r|sender|messages|60000|old@example.org", 60000, T0 - 10 * MINUTE, 2);
  text = rc_counters_serialize (c, T0);
  assert_non_null (strstr (text, " 0123456789abcdef 2 r|sender|messages|60000|odd%20sender%0A@example.org\n"));
  assert_null (strstr (text, "old@example.org"));   /* out of its window */

  rc_counters_merge_text (d, text, T0, &changed, &bad);
  assert_true (changed);
  assert_int_equal (bad, 0);
  again = rc_counters_serialize (d, T0);
  assert_string_equal (text, again);

  rc_counters_merge_text (d,
                          "junk\n60000 x 1 1 id\n60000 1 zz 1 id\n0 1 1 1 id\n60000 1 1 1 bad%2\n"
                          "3600000 28333333 1 1 r|sender|messages|60000|odd%20sender%0A@example.org\n",
                          T0, &changed, &bad);
  /* The last line names a counter with another period: refused too. */
  assert_int_equal (bad, 6);
  assert_false (changed);
  {
    g_autoptr (GHashTable) snap = rc_counters_snapshot (d, T0);
    guint64 *n = g_hash_table_lookup (snap, "r|sender|messages|60000|odd sender\n@example.org");
    assert_non_null (n);
    assert_int_equal (*n, 2);
  }
  /* One identity, one period: a mismatch is the caller's bug, reported and ignored. */
  rc_counters_add (d, "r|sender|messages|60000|odd sender\n@example.org", 120000, T0, 1);
  assert_true (pbt_log_expect ("should not be reached"));
  rc_counters_free (c);
  rc_counters_free (d);
}

typedef struct {
  gboolean done;
  char *merged;
} SyncResult;

static void
on_synced (const char *merged, const GError *error, gpointer data)
{
  SyncResult *r = data;
  assert_null (error);
  r->merged = g_strdup (merged);
  r->done = TRUE;
}

/* Two instances saving into one file keep each other's counts. */
static void
test_store (void **state)
{
  g_autofree char *tmp = pbt_mkdtemp ();
  g_autofree char *dir = g_build_filename (tmp, "rate-cap", NULL);
  SStore *one = sstore_new (dir, "counters", rc_merge_texts);
  SStore *two = sstore_new (dir, "counters", rc_merge_texts);
  RcCounters *a = rc_counters_new (1);
  RcCounters *b = rc_counters_new (2);
  RcCounters *back = rc_counters_new (3);
  g_autofree char *own = NULL;
  g_autofree char *merged = NULL;
  g_autofree char *text = NULL;
  g_autoptr (GError) error = NULL;
  SyncResult r = { 0 };

  rc_counters_add (a, "x", HOUR_MS, T0, 4);
  rc_counters_add (b, "x", HOUR_MS, T0, 6);
  own = rc_counters_serialize (a, T0);
  assert_true (sstore_sync (one, own, T0, &merged, &error));
  sstore_sync_async (two, rc_counters_serialize (b, T0), T0, on_synced, &r);
  assert_true (pbt_loop_until (&r.done, 5000));
  assert_true (sstore_changed (one));
  assert_true (sstore_read (one, &text, &error));
  rc_counters_merge_text (back, text, T0, NULL, NULL);
  assert_int_equal (rc_counters_get (back, "x", HOUR_MS, T0), 10);
  assert_string_equal (text, r.merged);
  g_free (r.merged);
  rc_counters_free (a);
  rc_counters_free (b);
  rc_counters_free (back);
  sstore_close (one);
  sstore_close (two);
  pbt_rmtree (tmp);
}

/* No warning or critical may have been logged by the code under test. */
static int
check_log (void **state)
{
  pbt_log_check_empty ();
  return 0;
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_steps),
    cmocka_unit_test (test_window),
    cmocka_unit_test (test_limit_over_time),
    cmocka_unit_test (test_escape),
    cmocka_unit_test (test_merge_instances),
    cmocka_unit_test (test_text_format),
    cmocka_unit_test (test_store),
  };
  pbt_log_capture ();
  return cmocka_run_group_tests (tests, NULL, check_log);
}
