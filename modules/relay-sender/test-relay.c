/* SPDX-License-Identifier: MIT */
/* Unit tests of relay-sender: limits, their sliding windows with a fake clock, the caps log, routing rules. */
#include "config.h"
#include "test-help.h"
#include "relay-private.h"

#include <string.h>

#define MIN_MS (60 * 1000)
#define HOUR_MS (60 * MIN_MS)

static void
test_limit_parse (void **state)
{
  static const struct {
    const char *in;
    RelayCountKind kind;
    gint64 limit;
    gint64 period;
    const char *described;
  } good[] = {
    { "50 messages per 60m", RELAY_COUNT_MESSAGES, 50, HOUR_MS, "50 messages per 1h" },
    { "50 messages per 60 minutes", RELAY_COUNT_MESSAGES, 50, HOUR_MS, "50 messages per 1h" },
    { "50 Messages per hour", RELAY_COUNT_MESSAGES, 50, HOUR_MS, "50 messages per 1h" },
    { "200 recipients per day", RELAY_COUNT_RECIPIENTS, 200, 24 * HOUR_MS, "200 recipients per 1d" },
    { "1 message per 90s", RELAY_COUNT_MESSAGES, 1, 90000, "1 message per 90s" },
    { "  10   recipient  per 1 h ", RELAY_COUNT_RECIPIENTS, 10, HOUR_MS, "10 recipients per 1h" },
    { "3 messages per 2 seconds", RELAY_COUNT_MESSAGES, 3, 2000, "3 messages per 2s" },
    { "5 messages per 1w", RELAY_COUNT_MESSAGES, 5, 7 * 24 * HOUR_MS, "5 messages per 7d" },
  };
  static const struct { const char *in; const char *why; } bad[] = {
    { "50 messages", "write a limit as" },
    { "50 mails per hour", "count \"messages\" or \"recipients\"" },
    { "0 messages per hour", "the count must be" },
    { "-5 messages per hour", "the count must be" },
    { "50 messages per fortnight", "write a limit as" },
    { "50 messages per 0m", "write a limit as" },
    { "50 messages per 32 days", "31 days at most" },
    { "50 messages each hour", "write a limit as" },
    { "50 messages per 60 minutes extra", "write a limit as" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (good); i++)
    {
      RelayLimit l;
      g_autoptr (GError) error = NULL;
      g_autofree char *d = NULL;
      if (!relay_limit_parse (good[i].in, &l, &error))
        fail_msg ("case %u ('%s'): %s", i, good[i].in, error->message);
      assert_int_equal (l.kind, good[i].kind);
      assert_int_equal (l.limit, good[i].limit);
      assert_int_equal (l.period_ms, good[i].period);
      d = relay_limit_describe (&l);
      if (strcmp (d, good[i].described) != 0)
        fail_msg ("case %u: described as '%s'", i, d);
    }
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      RelayLimit l;
      g_autoptr (GError) error = NULL;
      if (relay_limit_parse (bad[i].in, &l, &error))
        fail_msg ("bad case %u ('%s') accepted", i, bad[i].in);
      if (strstr (error->message, bad[i].why) == NULL)
        fail_msg ("bad case %u: '%s'", i, error->message);
    }
}

static RelayCapState *
state_with (const char *const *limits)
{
  RelayCapState *st = relay_cap_state_new ("isp1");
  for (guint i = 0; limits[i] != NULL; i++)
    {
      RelayLimit l;
      assert_true (relay_limit_parse (limits[i], &l, NULL));
      g_array_append_val (st->limits, l);
    }
  return st;
}

/* One message of N recipients, started and accepted at NOW. */
static guint
send_one (RelayCapState *st, guint rcpts, gint64 now)
{
  g_autofree char *why = NULL;
  guint granted = relay_caps_reserve (st, rcpts, now, &why);
  if (granted > 0)
    relay_caps_settle (st, granted, TRUE, granted, now);
  return granted;
}

/* "50 messages per 60 minutes": never more than 50 in any 60-minute window,
 * checked with a fake clock over a long, bursty day. */
static void
test_messages_window (void **state)
{
  const char *const limits[] = { "50 messages per 60m", NULL };
  RelayCapState *st = state_with (limits);
  gint64 t0 = G_GINT64_CONSTANT (1700000000000);
  g_autoptr (GArray) sent = g_array_new (FALSE, FALSE, sizeof (gint64));
  GRand *rand = g_rand_new_with_seed (42);
  char *why = NULL;

  /* A burst: 50 go at once, the 51st waits and is told until when. */
  for (guint i = 0; i < 50; i++)
    assert_int_equal (send_one (st, 1, t0 + i), 1);
  assert_int_equal (relay_caps_reserve (st, 1, t0 + 100, &why), 0);
  assert_non_null (strstr (why, "relay isp1: limit of 50 messages per 1h reached; next one allowed at"));
  assert_non_null (strstr (why, "(in 3600 s)"));
  assert_non_null (strstr (why, "[retry-at="));
  g_clear_pointer (&why, g_free);
  assert_int_equal (relay_caps_next_allowed (st, t0 + 100), t0 + HOUR_MS);
  /* Just before the first leaves the window: still full; at that moment: one more. */
  assert_int_equal (relay_caps_reserve (st, 1, t0 + HOUR_MS - 1, NULL), 0);
  assert_int_equal (send_one (st, 1, t0 + HOUR_MS), 1);
  assert_int_equal (relay_caps_reserve (st, 1, t0 + HOUR_MS, NULL), 0);

  /* A day of random attempts: record what went and check every window. */
  g_array_set_size (st->events, 0);
  for (gint64 t = t0; t < t0 + 24 * HOUR_MS; t += g_rand_int_range (rand, 1, 120000))
    if (send_one (st, 1, t) > 0)
      g_array_append_val (sent, t);
  assert_true (sent->len >= 1000);  /* the cap is used, not just obeyed */
  for (guint i = 0; i < sent->len; i++)
    {
      gint64 start = g_array_index (sent, gint64, i);
      guint in_window = 0;
      for (guint k = i; k < sent->len && g_array_index (sent, gint64, k) < start + HOUR_MS; k++)
        in_window++;
      if (in_window > 50)
        fail_msg ("%u messages within an hour from message %u", in_window, i);
    }
  g_rand_free (rand);
  relay_cap_state_free (st);
}

/* Transactions under way hold their place: parallel sessions cannot overshoot. */
static void
test_holds (void **state)
{
  const char *const limits[] = { "3 messages per 1h", "10 recipients per 1h", NULL };
  RelayCapState *st = state_with (limits);
  gint64 t = 1000000;
  char *why = NULL;

  assert_int_equal (relay_caps_reserve (st, 4, t, NULL), 4);
  assert_int_equal (relay_caps_reserve (st, 4, t, NULL), 4);
  /* 8 recipients held: 2 left for the third message. */
  assert_int_equal (relay_caps_reserve (st, 5, t, NULL), 2);
  /* Three messages held: a fourth must wait, and nothing in the window says until when. */
  assert_int_equal (relay_caps_reserve (st, 1, t, &why), 0);
  assert_non_null (strstr (why, "with messages under way"));
  g_clear_pointer (&why, g_free);
  /* The first one fails: its place is free again, and it did not count. */
  assert_null (relay_caps_settle (st, 4, FALSE, 0, t + 10));
  assert_int_equal (relay_caps_reserve (st, 1, t + 20, NULL), 1);
  /* The others are accepted, with fewer recipients than granted. */
  assert_non_null (relay_caps_settle (st, 4, TRUE, 3, t + 30));
  assert_non_null (relay_caps_settle (st, 2, TRUE, 2, t + 30));
  assert_non_null (relay_caps_settle (st, 1, TRUE, 1, t + 30));
  assert_int_equal (st->held_messages, 0);
  assert_int_equal (st->held_recipients, 0);
  {
    guint64 m, r;
    relay_caps_count (st, HOUR_MS, t + 40, &m, &r);
    assert_int_equal (m, 3);
    assert_int_equal (r, 6);
  }
  assert_int_equal (relay_caps_next_allowed (st, t + 40), t + 30 + HOUR_MS);
  relay_cap_state_free (st);
}

/* "200 recipients per day": a big message is given what is left. */
static void
test_recipients_window (void **state)
{
  const char *const limits[] = { "200 recipients per day", NULL };
  RelayCapState *st = state_with (limits);
  gint64 t = 5000000;

  assert_int_equal (send_one (st, 150, t), 150);
  assert_int_equal (send_one (st, 100, t + 1), 50);
  assert_int_equal (send_one (st, 1, t + 2), 0);
  assert_int_equal (send_one (st, 200, t + 24 * HOUR_MS), 150);
  relay_cap_state_free (st);
}

/* The log: what one instance counted, another reads (a reload or a restart). */
static void
test_cap_log (void **state)
{
  const char *const limits[] = { "5 messages per 1h", NULL };
  g_autofree char *dir = pbt_mkdtemp ();
  g_autofree char *path = g_build_filename (dir, "caps", NULL);
  RelayCapState *a = state_with (limits), *b = state_with (limits);
  g_autoptr (GHashTable) sa = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr (GHashTable) sb = g_hash_table_new (g_str_hash, g_str_equal);
  RelayCapLog la, lb;
  gint64 t = G_GINT64_CONSTANT (1700000000000);
  g_autofree char *text = NULL;

  g_hash_table_insert (sa, a->name, a);
  g_hash_table_insert (sb, b->name, b);
  relay_cap_log_init (&la, path, sa);
  relay_cap_log_init (&lb, path, sb);
  /* An old line and a line for a server no longer configured are dropped at start. */
  pbt_write_file (dir, "caps", "1000 isp1 1 1\n1699999999000 gone 1 1\ngarbage\n");
  assert_true (relay_cap_log_load (&la, t, TRUE, NULL));
  assert_int_equal (a->events->len, 0);
  g_file_get_contents (path, &text, NULL, NULL);
  assert_string_equal (text, "");

  for (guint i = 0; i < 3; i++)
    {
      const RelayEvent *ev;
      relay_cap_log_sync (&la, t + i);
      assert_int_equal (relay_caps_reserve (a, 1, t + i, NULL), 1);
      ev = relay_caps_settle (a, 1, TRUE, 1, t + i);
      relay_cap_log_append (&la, a->name, ev);
    }
  /* The other instance sees the three and may send only two more. */
  assert_true (relay_cap_log_load (&lb, t + 10, FALSE, NULL));
  assert_int_equal (b->events->len, 3);
  for (guint i = 0; i < 2; i++)
    {
      const RelayEvent *ev;
      assert_int_equal (relay_caps_reserve (b, 1, t + 20, NULL), 1);
      ev = relay_caps_settle (b, 1, TRUE, 1, t + 20);
      relay_cap_log_append (&lb, b->name, ev);
    }
  assert_int_equal (relay_caps_reserve (b, 1, t + 20, NULL), 0);
  /* And the first notices the other's two before its next message. */
  relay_cap_log_sync (&la, t + 30);
  assert_int_equal (a->events->len, 5);
  assert_int_equal (relay_caps_reserve (a, 1, t + 30, NULL), 0);

  relay_cap_log_clear (&la);
  relay_cap_log_clear (&lb);
  relay_cap_state_free (a);
  relay_cap_state_free (b);
  pbt_rmtree (dir);
}

static void
test_patterns (void **state)
{
  static const struct {
    const char *patterns;   /* comma-separated */
    const char *address;
    gboolean match;
  } cases[] = {
    { "", "bob@example.org", TRUE },
    { "*", "bob@example.org", TRUE },
    { "*", "", TRUE },
    { "<>", "", TRUE },
    { "<>", "bob@example.org", FALSE },
    { "example.org", "bob@example.org", TRUE },
    { "example.org", "bob@sub.example.org", FALSE },
    { "*.example.org", "bob@sub.example.org", TRUE },
    { "*.example.org", "bob@example.org", FALSE },
    { "@example.org", "Bob@Example.ORG", TRUE },
    { "*@example.org", "bob@example.org", TRUE },
    { "bob@*", "bob@anywhere.net", TRUE },
    { "bob@*", "alice@anywhere.net", FALSE },
    { "!*@example.org", "bob@example.org", FALSE },
    { "!*@example.org", "bob@example.net", TRUE },
    { "example.org,!boss@example.org", "boss@example.org", FALSE },
    { "example.org,!boss@example.org", "staff@example.org", TRUE },
    { "example.org,example.net", "x@example.net", TRUE },
    { "example.org,example.net", "x@example.com", FALSE },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_auto (GStrv) list = cases[i].patterns[0] != '\0' ? g_strsplit (cases[i].patterns, ",", -1) : g_new0 (char *, 1);
      if (relay_patterns_match ((const char *const *) list, cases[i].address) != cases[i].match)
        fail_msg ("case %u: '%s' against '%s'", i, cases[i].address, cases[i].patterns);
    }
}

static void
test_routes (void **state)
{
  char *partner_rcpts[] = { "partner.example", NULL };
  char *empty[] = { NULL };
  char *sales[] = { "sales@example.org", NULL };
  char *internal[] = { "*.internal.example", NULL };
  RelayRouteConfig c1 = { empty, partner_rcpts, RELAY_ACTION_RELAY, empty };
  RelayRouteConfig c2 = { sales, empty, RELAY_ACTION_RELAY, empty };
  RelayRouteConfig c3 = { empty, internal, RELAY_ACTION_PASS, empty };
  RelayRoute r1 = { "partner", &c1, NULL }, r2 = { "sales", &c2, NULL }, r3 = { "internal", &c3, NULL };
  g_autoptr (GPtrArray) routes = g_ptr_array_new ();
  static const struct { const char *sender; const char *rcpt; const char *route; } cases[] = {
    { "bob@example.org", "x@partner.example", "partner" },
    { "sales@example.org", "x@partner.example", "partner" },   /* first match wins */
    { "sales@example.org", "x@elsewhere.example", "sales" },
    { "prvs=0123abcdef=sales@example.org", "x@elsewhere.example", "sales" },   /* BATV-signed */
    { "bob@example.org", "y@a.internal.example", "internal" },
    { "bob@example.org", "y@elsewhere.example", NULL },
    { "", "y@elsewhere.example", NULL },
  };

  g_ptr_array_add (routes, &r1);
  g_ptr_array_add (routes, &r2);
  g_ptr_array_add (routes, &r3);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      const RelayRoute *r = relay_route_find (routes, cases[i].sender, cases[i].rcpt);
      if (g_strcmp0 (r != NULL ? r->name : NULL, cases[i].route) != 0)
        fail_msg ("case %u: route %s, expected %s", i, r != NULL ? r->name : "(none)",
                  cases[i].route != NULL ? cases[i].route : "(none)");
    }
  {
    g_autofree char *a = relay_normalise_sender ("PRVS=1234=Bob@Example.org");
    g_autofree char *b = relay_normalise_sender ("prvs@example.org");
    assert_string_equal (a, "bob@example.org");
    assert_string_equal (b, "prvs@example.org");
  }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_limit_parse),
    cmocka_unit_test (test_messages_window),
    cmocka_unit_test (test_holds),
    cmocka_unit_test (test_recipients_window),
    cmocka_unit_test (test_cap_log),
    cmocka_unit_test (test_patterns),
    cmocka_unit_test (test_routes),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
