/* SPDX-License-Identifier: MIT */
/* Unit tests of ids: prefixes, durations, scores over the monitor period (fake clock), blocks, merge, store. */
#include "config.h"
#include "test-help.h"
#include "ids-private.h"

#include <string.h>
#include <sys/stat.h>

#define SEC G_GINT64_CONSTANT (1000000)
#define MINUTE (60 * SEC)
/* A fixed "now", so every time in these tests is exact. */
#define T0 (G_GINT64_CONSTANT (1700000000) * SEC)

static void
test_prefixes (void **state)
{
  static const struct {
    const char *in;
    const char *canonical;   /* NULL: refused */
    const char *shown;
  } cases[] = {
    { "192.0.2.7", "192.0.2.7/32", "192.0.2.7" },
    { "192.168.1.*", "192.168.1.0/24", "192.168.1.0/24" },
    { "192.168.*", "192.168.0.0/16", "192.168.0.0/16" },
    { "10.*", "10.0.0.0/8", "10.0.0.0/8" },
    { "192.0.2.7/24", "192.0.2.0/24", "192.0.2.0/24" },
    { "192.0.2.0/32", "192.0.2.0/32", "192.0.2.0" },
    { "2001:db8::1", "2001:db8::1/128", "2001:db8::1" },
    { "2001:DB8:1:2:3::/64", "2001:db8:1:2::/64", "2001:db8:1:2::/64" },
    { "::1", "::1/128", "::1" },
    { "0.0.0.0/0", "0.0.0.0/0", "0.0.0.0/0" },
    { "1.2.3", NULL, NULL },
    { "300.1.1.1", NULL, NULL },
    { "*", NULL, NULL },
    { "1.*.3.*", NULL, NULL },
    { "1.2.3.4.*", NULL, NULL },
    { "256.*", NULL, NULL },
    { "2001:db8::/129", NULL, NULL },
    { "192.0.2.1/33", NULL, NULL },
    { "192.0.2.1/", NULL, NULL },
    { "192.0.2.1/x", NULL, NULL },
    { "example.org", NULL, NULL },
    { "", NULL, NULL },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autofree char *c = ids_prefix_canonical (cases[i].in, &error);
      g_autofree char *shown = NULL;

      if (cases[i].canonical == NULL)
        {
          if (c != NULL)
            fail_msg ("case %u: '%s' accepted as %s", i, cases[i].in, c);
          assert_non_null (strstr (error->message, "is not an IP address"));
          continue;
        }
      if (c == NULL || strcmp (c, cases[i].canonical) != 0)
        fail_msg ("case %u: '%s' gave %s, expected %s", i, cases[i].in, c != NULL ? c : error->message,
                  cases[i].canonical);
      shown = ids_prefix_display (c);
      if (strcmp (shown, cases[i].shown) != 0)
        fail_msg ("case %u: %s shown as %s, expected %s", i, c, shown, cases[i].shown);
    }
}

static void
test_durations (void **state)
{
  static const struct {
    const char *in;
    gint64 usec;   /* 0: refused */
    const char *out;
  } cases[] = {
    { "90", 90 * SEC, "1m30s" },
    { "90s", 90 * SEC, "1m30s" },
    { "30m", 30 * MINUTE, "30m" },
    { "2h", 120 * MINUTE, "2h" },
    { "1d", 1440 * MINUTE, "1d" },
    { "forever", IDS_NEVER, "forever" },
    { "0", 0, NULL },
    { "1w", 0, NULL },
    { "m", 0, NULL },
    { "-5m", 0, NULL },
    { "5mm", 0, NULL },
    { "99999999d", 0, NULL },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      gint64 v = 0;
      gboolean ok = ids_parse_duration (cases[i].in, &v, &error);

      if (ok != (cases[i].usec != 0) || (ok && v != cases[i].usec))
        fail_msg ("case %u: '%s' -> %s %" G_GINT64_FORMAT, i, cases[i].in, ok ? "ok" : "refused", v);
      if (ok)
        {
          g_autofree char *text = ids_format_duration (v);
          if (strcmp (text, cases[i].out) != 0)
            fail_msg ("case %u: formatted as %s, expected %s", i, text, cases[i].out);
        }
    }
  {
    g_autofree char *a = ids_format_duration (3581 * SEC + 999);
    g_autofree char *b = ids_format_duration (93784 * SEC);
    assert_string_equal (a, "59m41s");
    assert_string_equal (b, "1d2h3m4s");
  }
}

/* The score is the sum of the weights in (now - period, now]. */
static void
test_scores_window (void **state)
{
  IdsTable *t = ids_table_new ();
  const gint64 period = 10 * MINUTE;
  const char *k = "192.0.2.7/32";

  assert_int_equal (ids_table_add_event (t, k, 2, T0, period), 2);
  assert_int_equal (ids_table_add_event (t, k, 2, T0 + 1 * MINUTE, period), 4);
  assert_int_equal (ids_table_add_event (t, k, 1, T0 + 9 * MINUTE, period), 5);
  /* One microsecond before the first event leaves the window. */
  assert_int_equal (ids_table_score (t, k, T0 + period - 1, period), 5);
  /* Exactly one period later, it has left. */
  assert_int_equal (ids_table_score (t, k, T0 + period, period), 3);
  assert_int_equal (ids_table_score (t, k, T0 + 11 * MINUTE, period), 1);
  assert_int_equal (ids_table_add_event (t, k, 2, T0 + 12 * MINUTE, period), 3);
  assert_int_equal (ids_table_score (t, k, T0 + 30 * MINUTE, period), 0);
  assert_int_equal (ids_table_score (t, "192.0.2.8/32", T0, period), 0);

  /* Other keys are separate; prune forgets what is old. */
  ids_table_add_event (t, "192.0.2.8/32", 1, T0 + 29 * MINUTE, period);
  assert_int_equal (ids_table_n_scores (t), 2);
  ids_table_prune (t, T0 + 30 * MINUTE, period);
  assert_int_equal (ids_table_n_scores (t), 1);
  {
    g_autoptr (GHashTable) all = ids_table_scores (t, T0 + 30 * MINUTE, period);
    assert_int_equal (GPOINTER_TO_INT (g_hash_table_lookup (all, "192.0.2.8/32")), 1);
  }
  ids_table_clear_score (t, "192.0.2.8/32");
  assert_int_equal (ids_table_n_scores (t), 0);
  ids_table_free (t);
}

/* Five failed logins of weight 2 reach a threshold of 10; spread over more
 * than the monitor period, they never do. */
static void
test_scores_threshold (void **state)
{
  IdsTable *t = ids_table_new ();
  const gint64 period = 10 * MINUTE;
  gint64 score = 0;

  for (guint i = 0; i < 5; i++)
    score = ids_table_add_event (t, "a", 2, T0 + i * SEC, period);
  assert_int_equal (score, 10);
  for (guint i = 0; i < 20; i++)
    score = ids_table_add_event (t, "b", 2, T0 + i * 3 * MINUTE, period);
  assert_true (score < 10);
  assert_int_equal (score, 8);  /* events at -9, -6, -3 and 0 minutes */
  ids_table_free (t);
}

static GInetAddress *
addr (const char *text)
{
  GInetAddress *a = g_inet_address_new_from_string (text);
  assert_non_null (a);
  return a;
}

static gboolean
is_blocked (IdsTable *t, const char *ip, gint64 now)
{
  g_autoptr (GInetAddress) a = addr (ip);
  return ids_table_lookup (t, a, now) != NULL;
}

static void
test_blocks (void **state)
{
  IdsTable *t = ids_table_new ();
  static const struct {
    const char *ip;
    gint64 at;
    gboolean blocked;
  } cases[] = {
    { "192.0.2.7", T0, TRUE },
    { "192.0.2.7", T0 + 59 * MINUTE, TRUE },
    { "192.0.2.7", T0 + 60 * MINUTE, FALSE },   /* the block has expired */
    { "192.0.2.8", T0, FALSE },
    { "198.51.100.200", T0, TRUE },          /* in 198.51.100.0/24 */
    { "198.51.101.1", T0, FALSE },
    { "2001:db8:1:2:ffff::9", T0, TRUE },    /* in the /64 */
    { "2001:db8:1:3::9", T0, FALSE },
    { "::ffff:192.0.2.7", T0, FALSE },       /* another family */
    { "203.0.113.5", T0 + 400 * 86400 * SEC, TRUE },  /* forever */
  };

  ids_table_block (t, "192.0.2.7/32", T0, T0 + 60 * MINUTE, "test");
  ids_table_block (t, "198.51.100.0/24", T0, T0 + 60 * MINUTE, "test");
  ids_table_block (t, "2001:db8:1:2::/64", T0, T0 + 60 * MINUTE, "test");
  ids_table_block (t, "203.0.113.5/32", T0, IDS_NEVER, "test");
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    if (is_blocked (t, cases[i].ip, cases[i].at) != cases[i].blocked)
      fail_msg ("case %u: %s %s", i, cases[i].ip, cases[i].blocked ? "not blocked" : "blocked");

  {
    g_autoptr (GPtrArray) list = ids_table_list (t, T0);
    assert_int_equal (list->len, 4);
    assert_string_equal (((IdsBlock *) g_ptr_array_index (list, 0))->prefix, "192.0.2.7/32");
  }
  /* Unblock: the address is free at once; a second unblock says it was not blocked. */
  assert_true (ids_table_unblock (t, "192.0.2.7/32", T0 + MINUTE, T0 + 86400 * SEC));
  assert_false (is_blocked (t, "192.0.2.7", T0 + MINUTE));
  assert_false (ids_table_unblock (t, "192.0.2.7/32", T0 + MINUTE, T0 + 86400 * SEC));
  {
    g_autoptr (GPtrArray) list = ids_table_list (t, T0 + MINUTE);
    assert_int_equal (list->len, 3);
  }
  /* Blocking again at the same microsecond still wins over the unblock. */
  ids_table_block (t, "192.0.2.7/32", T0 + MINUTE, T0 + 60 * MINUTE, "again");
  assert_true (is_blocked (t, "192.0.2.7", T0 + MINUTE));
  ids_table_prune (t, T0 + 61 * MINUTE, 10 * MINUTE);
  {
    g_autoptr (GPtrArray) list = ids_table_list (t, T0 + 61 * MINUTE);
    assert_int_equal (list->len, 1);
  }
  ids_table_free (t);
}

static void
test_serialize_round_trip (void **state)
{
  IdsTable *a = ids_table_new ();
  IdsTable *b = ids_table_new ();
  g_autofree char *text = NULL;
  g_autofree char *again = NULL;
  gboolean changed;
  guint bad;

  ids_table_block (a, "192.0.2.7/32", T0, T0 + 60 * MINUTE, "score 10/10, last event auth-failed");
  ids_table_block (a, "2001:db8::/64", T0, IDS_NEVER, "reason\nwith a line break");
  ids_table_block (a, "198.51.100.1/32", T0 - 120 * MINUTE, T0 - 60 * MINUTE, "expired");
  ids_table_unblock (a, "203.0.113.1/32", T0, T0 + 86400 * SEC);
  text = ids_table_serialize (a, T0);
  assert_non_null (strstr (text, "192.0.2.7/32 1700000000000000 1700003600000000 block score 10/10, last event"));
  assert_non_null (strstr (text, "2001:db8::/64 1700000000000000 never block reason with a line break\n"));
  assert_non_null (strstr (text, "203.0.113.1/32 1700000000000000 1700086400000000 unblock unblocked\n"));
  assert_null (strstr (text, "expired"));

  ids_table_merge_text (b, text, T0, &changed, &bad);
  assert_true (changed);
  assert_int_equal (bad, 0);
  again = ids_table_serialize (b, T0);
  assert_string_equal (text, again);
  ids_table_merge_text (b, text, T0, &changed, &bad);
  assert_false (changed);

  /* Damaged lines are skipped and counted; the good ones survive. */
  ids_table_merge_text (b,
                        "garbage\n192.0.2.9/32 x 5 block r\n192.0.2.9/32 5 5 maybe r\n"
                        "192.0.2.10/32 1700000000000000 never block ok\n300.1.1.1/32 1 never block r\n",
                        T0, &changed, &bad);
  assert_true (changed);
  assert_int_equal (bad, 4);
  assert_true (is_blocked (b, "192.0.2.10", T0));
  ids_table_free (a);
  ids_table_free (b);
}

/* Two instances during a reload: whatever order they save in, the record
 * created last wins, and neither loses the other's blocks. */
static void
test_merge_two_writers (void **state)
{
  IdsTable *old_gen = ids_table_new ();
  IdsTable *new_gen = ids_table_new ();
  g_autofree char *o = NULL;
  g_autofree char *n = NULL;
  g_autofree char *on = NULL;
  g_autofree char *no = NULL;
  IdsTable *result = ids_table_new ();

  ids_table_block (old_gen, "192.0.2.1/32", T0, T0 + 60 * MINUTE, "old");
  ids_table_block (new_gen, "192.0.2.1/32", T0, T0 + 60 * MINUTE, "old");   /* loaded at start */
  ids_table_unblock (new_gen, "192.0.2.1/32", T0 + MINUTE, T0 + 86400 * SEC);  /* an admin lifted it */
  ids_table_block (old_gen, "192.0.2.2/32", T0 + 2 * MINUTE, T0 + 62 * MINUTE, "old only");
  ids_table_block (new_gen, "192.0.2.3/32", T0 + 2 * MINUTE, T0 + 62 * MINUTE, "new only");

  o = ids_table_serialize (old_gen, T0 + 3 * MINUTE);
  n = ids_table_serialize (new_gen, T0 + 3 * MINUTE);
  on = ids_merge_texts (o, n, T0 + 3 * MINUTE);
  no = ids_merge_texts (n, o, T0 + 3 * MINUTE);
  assert_string_equal (on, no);
  ids_table_merge_text (result, on, T0 + 3 * MINUTE, NULL, NULL);
  assert_false (is_blocked (result, "192.0.2.1", T0 + 3 * MINUTE));
  assert_true (is_blocked (result, "192.0.2.2", T0 + 3 * MINUTE));
  assert_true (is_blocked (result, "192.0.2.3", T0 + 3 * MINUTE));

  /* The old instance takes the merged file in: the unblock reaches it too. */
  ids_table_merge_text (old_gen, on, T0 + 3 * MINUTE, NULL, NULL);
  assert_false (is_blocked (old_gen, "192.0.2.1", T0 + 3 * MINUTE));
  assert_true (is_blocked (old_gen, "192.0.2.3", T0 + 3 * MINUTE));
  ids_table_free (old_gen);
  ids_table_free (new_gen);
  ids_table_free (result);
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

static void
test_store (void **state)
{
  g_autofree char *tmp = pbt_mkdtemp ();
  g_autofree char *dir = g_build_filename (tmp, "ids", NULL);
  SStore *one = sstore_new (dir, "blocks", ids_merge_texts);
  SStore *two = sstore_new (dir, "blocks", ids_merge_texts);
  IdsTable *t = ids_table_new ();
  g_autofree char *text = NULL;
  g_autofree char *merged = NULL;
  g_autofree char *own = NULL;
  g_autofree char *path = g_build_filename (dir, "blocks", NULL);
  g_autoptr (GError) error = NULL;
  SyncResult r = { 0 };
  struct stat st;

  /* A missing file reads as empty. */
  assert_true (sstore_read (one, &text, &error));
  assert_string_equal (text, "");
  assert_false (sstore_changed (one));

  ids_table_block (t, "192.0.2.1/32", T0, T0 + 60 * MINUTE, "one");
  own = ids_table_serialize (t, T0);
  assert_true (sstore_sync (one, own, T0, &merged, &error));
  assert_non_null (strstr (merged, "192.0.2.1/32"));
  assert_int_equal (stat (path, &st), 0);
  assert_int_equal (st.st_mode & 0777, 0600);
  assert_false (sstore_changed (one));
  assert_true (sstore_changed (two));

  /* The other writer, on its worker thread: the file keeps both. */
  ids_table_free (t);
  t = ids_table_new ();
  ids_table_block (t, "192.0.2.2/32", T0, T0 + 60 * MINUTE, "two");
  sstore_sync_async (two, ids_table_serialize (t, T0), T0, on_synced, &r);
  assert_true (sstore_is_busy (two));
  assert_true (pbt_loop_until (&r.done, 5000));
  assert_false (sstore_is_busy (two));
  assert_non_null (strstr (r.merged, "192.0.2.1/32"));
  assert_non_null (strstr (r.merged, "192.0.2.2/32"));
  assert_false (sstore_changed (two));
  assert_true (sstore_changed (one));
  g_clear_pointer (&text, g_free);
  assert_true (sstore_read (one, &text, &error));
  assert_string_equal (text, r.merged);
  assert_false (sstore_changed (one));

  /* No temporary files are left behind. */
  {
    g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
    const char *name;
    while ((name = g_dir_read_name (d)) != NULL)
      if (strcmp (name, "blocks") != 0 && strcmp (name, "blocks.lock") != 0)
        fail_msg ("left behind: %s", name);
  }
  g_free (r.merged);
  ids_table_free (t);
  sstore_close (one);
  sstore_close (two);
  pbt_rmtree (tmp);
}

/* A result that arrives after the store was closed is dropped, not delivered. */
static void
test_store_close_while_busy (void **state)
{
  g_autofree char *tmp = pbt_mkdtemp ();
  SStore *store = sstore_new (tmp, "blocks", ids_merge_texts);
  SyncResult r = { 0 };

  sstore_sync_async (store, g_strdup (""), T0, on_synced, &r);
  sstore_close (store);
  pbt_loop_run_for (50);
  assert_false (r.done);
  pbt_rmtree (tmp);
}

static void
test_event_names (void **state)
{
  assert_string_equal (ids_event_name (IDS_EVENT_AUTH_FAILED), "auth-failed");
  assert_int_equal (IDS_EVENT_AUTH_FAILED, 1);
  assert_int_equal (IDS_EVENT_UNKNOWN_RECIPIENT, 3);
  assert_int_equal (IDS_EVENT_TOO_MANY_CONNECTIONS, 6);
  assert_string_equal (ids_event_name (IDS_EVENT_BLOCKED), "blocked");
  assert_string_equal (ids_event_name (IDS_EVENT_REFUSED), "refused");
  assert_string_equal (ids_event_name ((IdsEventNumber) 99), "unknown");
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
    cmocka_unit_test (test_prefixes),
    cmocka_unit_test (test_durations),
    cmocka_unit_test (test_scores_window),
    cmocka_unit_test (test_scores_threshold),
    cmocka_unit_test (test_blocks),
    cmocka_unit_test (test_serialize_round_trip),
    cmocka_unit_test (test_merge_two_writers),
    cmocka_unit_test (test_store),
    cmocka_unit_test (test_store_close_while_busy),
    cmocka_unit_test (test_event_names),
  };
  pbt_log_capture ();
  return cmocka_run_group_tests (tests, NULL, check_log);
}
