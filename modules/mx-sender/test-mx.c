/* SPDX-License-Identifier: MIT */
/* Unit tests of mx-sender's MX plan: preference order, null MX, this server among the MX hosts, literals. */
#include "config.h"
#include "test-help.h"
#include "mx-private.h"

#include <string.h>

static char *
plan (const char *records, const char *self, guint max, MxPlanKind *kind)
{
  g_auto (GStrv) recs = records[0] != '\0' ? g_strsplit (records, "|", -1) : g_new0 (char *, 1);
  const char *selves[] = { self, NULL };
  g_autoptr (GPtrArray) hosts = NULL;
  GString *out = g_string_new (NULL);

  *kind = mx_plan_from_records ((const char *const *) recs, selves, max, NULL, NULL, &hosts);
  for (guint i = 0; i < hosts->len; i++)
    {
      MxHost *h = g_ptr_array_index (hosts, i);
      g_string_append_printf (out, "%s%u %s", i > 0 ? "|" : "", h->preference, h->host);
    }
  return g_string_free (out, FALSE);
}

#define LABEL63 "abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abc"
/* 253 octets: 3 labels of 63, one of 61. */
#define NAME253 LABEL63 "." LABEL63 "." LABEL63 ".abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789a"

static void
test_plan (void **state)
{
  static const struct {
    const char *records;
    const char *self;
    guint max;
    MxPlanKind kind;
    const char *hosts;
  } cases[] = {
    { "20 mx2.example.org|10 mx1.example.org", "", 5, MX_PLAN_HOSTS, "10 mx1.example.org|20 mx2.example.org" },
    { "10 MX1.Example.org.", "", 5, MX_PLAN_HOSTS, "10 mx1.example.org" },
    { "0 ", "", 5, MX_PLAN_NULL_MX, "" },                   /* how the core shows "0 ." */
    { "0 .", "", 5, MX_PLAN_NULL_MX, "" },
    { "0 |10 mx1.example.org", "", 5, MX_PLAN_HOSTS, "10 mx1.example.org" },   /* a null MX among others: ignored */
    { "10 mx1.example.org|20 me.example.org|30 mx3.example.org", "me.example.org", 5, MX_PLAN_HOSTS,
      "10 mx1.example.org" },
    { "10 me.example.org|20 mx2.example.org", "ME.example.org", 5, MX_PLAN_LOOP, "" },
    { "10 a.example.org|20 b.example.org|30 c.example.org", "", 2, MX_PLAN_HOSTS, "10 a.example.org|20 b.example.org" },
    { "x y", "", 5, MX_PLAN_INVALID, "" },
    { "", "", 5, MX_PLAN_HOSTS, "" },
    /* Host names from DNS (RFC 1035 §2.3.1, RFC 5321 §4.1.2): anything else is
     * as good as no record; the others are still used. */
    { "10 mx\r\nbcc.example.org", "", 5, MX_PLAN_INVALID, "" },
    { "10 mx\\013\\010bcc.example.org|20 mx2.example.org", "", 5, MX_PLAN_HOSTS, "20 mx2.example.org" },
    { "10 a\x1b[2J.example.org|20 mx2.example.org", "", 5, MX_PLAN_HOSTS, "20 mx2.example.org" },
    { "10 -a.example.org|10 a-.example.org|10 a_b.example.org|10 a..b.example.org|10 a b.example.org", "", 5,
      MX_PLAN_INVALID, "" },
    { "10 .example.org|10 a.example.org..|10 caf\xc3\xa9.example.org", "", 5, MX_PLAN_INVALID, "" },
    { "10 " LABEL63 "x.example.org", "", 5, MX_PLAN_INVALID, "" },
    { "10 " LABEL63 ".example.org", "", 5, MX_PLAN_HOSTS, "10 " LABEL63 ".example.org" },
    { "10 " NAME253 "x", "", 5, MX_PLAN_INVALID, "" },
    { "10 " NAME253, "", 5, MX_PLAN_HOSTS, "10 " NAME253 },
    { "10 xn--bcher-kva.example|20 3com.example|30 a-b--c.example", "", 5, MX_PLAN_HOSTS,
      "10 xn--bcher-kva.example|20 3com.example|30 a-b--c.example" },
    { "10 192.0.2.25|20 2001:db8::25|30 2001:db8::25:x", "", 5, MX_PLAN_HOSTS, "10 192.0.2.25|20 2001:db8::25" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      MxPlanKind kind;
      g_autofree char *got = plan (cases[i].records, cases[i].self, cases[i].max, &kind);
      if (kind != cases[i].kind || strcmp (got, cases[i].hosts) != 0)
        fail_msg ("case %u: kind %d hosts '%s', expected %d '%s'", i, kind, got, cases[i].kind, cases[i].hosts);
    }
}

/* What was refused is kept, printable, for the log. */
static void
test_plan_refused (void **state)
{
  const char *recs[] = { "10 mx\r\nbcc.example.org", "20 mx\\013\\010bcc.example.org", "30 \x1b[2J.example.org",
                         "40 mx.example.org", NULL };
  g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) hosts = NULL;

  assert_int_equal (mx_plan_from_records (recs, NULL, 10, NULL, refused, &hosts), MX_PLAN_HOSTS);
  assert_int_equal (hosts->len, 1);
  assert_int_equal (refused->len, 3);
  assert_string_equal (g_ptr_array_index (refused, 0), "mx\\x0d\\x0abcc.example.org");
  assert_string_equal (g_ptr_array_index (refused, 1), "mx\\013\\010bcc.example.org");
  assert_string_equal (g_ptr_array_index (refused, 2), "\\x1b[2J.example.org");
}

/* RFC 5321 §5.1: hosts of equal preference are tried in random order. */
static void
test_plan_random_ties (void **state)
{
  const char *recs[] = { "10 a.example.org", "10 b.example.org", "10 c.example.org", "5 first.example.org", NULL };
  GRand *rand = g_rand_new_with_seed (1);
  g_autoptr (GHashTable) seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);

  for (guint round = 0; round < 200; round++)
    {
      g_autoptr (GPtrArray) hosts = NULL;
      assert_int_equal (mx_plan_from_records (recs, NULL, 10, rand, NULL, &hosts), MX_PLAN_HOSTS);
      assert_int_equal (hosts->len, 4);
      assert_string_equal (((MxHost *) g_ptr_array_index (hosts, 0))->host, "first.example.org");
      g_hash_table_add (seen, g_strdup (((MxHost *) g_ptr_array_index (hosts, 1))->host));
    }
  assert_int_equal (g_hash_table_size (seen), 3);
  g_rand_free (rand);
}

static void
test_literals (void **state)
{
  static const struct { const char *in; const char *out; } cases[] = {
    { "[192.0.2.1]", "192.0.2.1" },
    { "[IPv6:2001:db8::1]", "2001:db8::1" },
    { "[ipv6:2001:DB8::1]", "2001:db8::1" },
    { "[2001:db8::1]", NULL },
    { "[IPv6:192.0.2.1]", NULL },
    { "[nonsense]", NULL },
    { "example.org", NULL },
    { "[]", NULL },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *got = mx_domain_literal (cases[i].in);
      if (g_strcmp0 (got, cases[i].out) != 0)
        fail_msg ("case %u (%s): '%s'", i, cases[i].in, got != NULL ? got : "(null)");
    }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_plan),
    cmocka_unit_test (test_plan_refused),
    cmocka_unit_test (test_plan_random_ties),
    cmocka_unit_test (test_literals),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
