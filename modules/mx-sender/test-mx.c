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

  *kind = mx_plan_from_records ((const char *const *) recs, selves, max, NULL, &hosts);
  for (guint i = 0; i < hosts->len; i++)
    {
      MxHost *h = g_ptr_array_index (hosts, i);
      g_string_append_printf (out, "%s%u %s", i > 0 ? "|" : "", h->preference, h->host);
    }
  return g_string_free (out, FALSE);
}

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
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      MxPlanKind kind;
      g_autofree char *got = plan (cases[i].records, cases[i].self, cases[i].max, &kind);
      if (kind != cases[i].kind || strcmp (got, cases[i].hosts) != 0)
        fail_msg ("case %u: kind %d hosts '%s', expected %d '%s'", i, kind, got, cases[i].kind, cases[i].hosts);
    }
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
      assert_int_equal (mx_plan_from_records (recs, NULL, 10, rand, &hosts), MX_PLAN_HOSTS);
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
    cmocka_unit_test (test_plan_random_ties),
    cmocka_unit_test (test_literals),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
