/* SPDX-License-Identifier: MIT */
/* Unit tests of load-limit: address lists (wildcards, CIDR, IPv6 prefixes), keys and admission. */
#include "config.h"
#include "test-help.h"
#include "settings.h"
#include "ll-private.h"

#include <string.h>

typedef struct {
  char **dummy;
} LlListHolder;

/* An address list as the module gets it: through the core's own parser of
 * PB_SETTING_TYPE_ADDRESS_LIST, so wildcards are converted exactly as in a
 * running daemon. */
static LlAddrList *
list_from_setting (const char *text)
{
  static const PbSetting setting = PB_SETTING_ADDRESS_LIST (LlListHolder, dummy, "x", "", "test");
  char **prefixes = NULL;
  g_autofree char *message = NULL;
  g_autoptr (GError) error = NULL;
  LlAddrList *list;

  if (!pb_setting_parse (&setting, text, "/", &prefixes, &message))
    fail_msg ("'%s' refused: %s", text, message);
  list = ll_addr_list_new ((const char *const *) prefixes, &error);
  assert_non_null (list);
  g_strfreev (prefixes);
  return list;
}

static gboolean
list_matches (LlAddrList *list, const char *ip)
{
  g_autoptr (GInetAddress) a = ll_address_parse (ip);
  assert_non_null (a);
  return ll_addr_list_match (list, a);
}

static void
test_address_lists (void **state)
{
  static const struct {
    const char *list;
    const char *ip;
    gboolean match;
  } cases[] = {
    { "192.168.1.*", "192.168.1.77", TRUE },
    { "192.168.1.*", "192.168.2.1", FALSE },
    { "192.168.*", "192.168.200.1", TRUE },
    { "10.*", "10.255.0.3", TRUE },
    { "10.*", "11.0.0.1", FALSE },
    { "10.0.0.0/8", "10.1.2.3", TRUE },
    { "172.16.0.0/12", "172.31.255.255", TRUE },
    { "172.16.0.0/12", "172.32.0.0", FALSE },
    { "127.0.0.5", "127.0.0.5", TRUE },
    { "127.0.0.5", "127.0.0.6", FALSE },
    { "2001:db8::/32", "2001:db8:ffff::1", TRUE },
    { "2001:db8::/32", "2001:db9::1", FALSE },
    { "2001:db8:1:2::/64", "2001:db8:1:2:aaaa:bbbb:cccc:dddd", TRUE },
    { "2001:db8:1:2::/64", "2001:db8:1:3::1", FALSE },
    { "::1", "::1", TRUE },
    /* Families never cross: ::ffff:0:0/96 is not 10.0.0.0/8 and the other way round. */
    { "10.0.0.0/8", "::ffff:10.0.0.1", FALSE },
    { "::/0", "192.0.2.1", FALSE },
    { "0.0.0.0/0", "2001:db8::1", FALSE },
    { "0.0.0.0/0", "203.0.113.9", TRUE },
    { "127.0.0.0/8, ::1, 192.168.1.*", "192.168.1.4", TRUE },
    { "127.0.0.0/8, ::1, 192.168.1.*", "::2", FALSE },
    { "", "127.0.0.1", FALSE },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      LlAddrList *list = list_from_setting (cases[i].list);
      if (list_matches (list, cases[i].ip) != cases[i].match)
        fail_msg ("case %u: '%s' %s '%s'", i, cases[i].ip, cases[i].match ? "should match" : "should not match",
                  cases[i].list);
      ll_addr_list_free (list);
    }
  assert_null (ll_address_parse ("not-an-address"));
  assert_true (ll_addr_list_is_empty (NULL));
}

static void
test_address_keys (void **state)
{
  static const struct {
    const char *ip;
    guint prefix;
    const char *key;
  } cases[] = {
    { "192.0.2.7", 64, "192.0.2.7" },
    { "2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64" },
    { "2001:db8:1:2:ffff::1", 64, "2001:db8:1:2::/64" },
    { "2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48" },
    { "2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6" },
    { "2001:db8:1:2:3:4:5:6", 1, "::/1" },
    { "2001:db8:1:2:3:4:5:6", 61, "2001:db8:1::/61" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GInetAddress) a = ll_address_parse (cases[i].ip);
      g_autofree char *key = ll_address_key (a, cases[i].prefix);
      if (strcmp (key, cases[i].key) != 0)
        fail_msg ("case %u: key of %s/%u is %s, expected %s", i, cases[i].ip, cases[i].prefix, key, cases[i].key);
    }
}

static LlScope *
scope_new (gint64 max, gint64 per_address, gint64 local, gint64 reserved, const char *reserved_for)
{
  LlLimits limits = { max, per_address, local, reserved };
  return ll_scope_new ("test", &limits, list_from_setting (reserved_for));
}

/* The scenario: 10 sessions, 4 reserved for 127.0.0.5. */
static void
test_reservation (void **state)
{
  LlScope *s = scope_new (10, 0, 0, 4, "127.0.0.5");
  LlClient other = { "127.0.0.2", FALSE, FALSE };
  LlClient gateway = { "127.0.0.5", FALSE, TRUE };

  for (guint i = 0; i < 6; i++)
    {
      if (ll_scope_check (s, &other) != LL_ADMIT)
        fail_msg ("other session %u refused", i);
      ll_scope_add (s, &other);
    }
  /* The seventh from an unreserved address does not fit... */
  assert_int_equal (ll_scope_check (s, &other), LL_REFUSE_UNRESERVED);
  /* ...but the reserved address has its four. */
  for (guint i = 0; i < 4; i++)
    {
      if (ll_scope_check (s, &gateway) != LL_ADMIT)
        fail_msg ("reserved session %u refused", i);
      ll_scope_add (s, &gateway);
    }
  assert_int_equal (ll_scope_check (s, &gateway), LL_REFUSE_TOTAL);
  assert_int_equal (ll_scope_check (s, &other), LL_REFUSE_TOTAL);
  assert_int_equal (s->incoming, 10);
  assert_int_equal (s->others, 6);

  /* A reserved address may use the shared slots too; then others have fewer. */
  for (guint i = 0; i < 4; i++)
    ll_scope_remove (s, &gateway);
  for (guint i = 0; i < 6; i++)
    ll_scope_remove (s, &other);
  assert_int_equal (s->incoming, 0);
  for (guint i = 0; i < 8; i++)
    ll_scope_add (s, &gateway);
  assert_int_equal (ll_scope_check (s, &other), LL_ADMIT);
  ll_scope_add (s, &other);
  ll_scope_add (s, &other);
  assert_int_equal (ll_scope_check (s, &other), LL_REFUSE_TOTAL);
  assert_int_equal (g_hash_table_size (s->per_address), 2);
  ll_scope_free (s);
}

static void
test_per_address_and_local (void **state)
{
  LlScope *s = scope_new (100, 2, 3, 0, "");
  LlClient a = { "192.0.2.1", FALSE, FALSE };
  LlClient b = { "192.0.2.2", FALSE, FALSE };
  LlClient local = { "127.0.0.1", TRUE, FALSE };

  ll_scope_add (s, &a);
  ll_scope_add (s, &a);
  assert_int_equal (ll_scope_check (s, &a), LL_REFUSE_PER_ADDRESS);
  assert_int_equal (ll_scope_check (s, &b), LL_ADMIT);
  assert_int_equal (ll_scope_count_address (s, "192.0.2.1"), 2);

  /* Local sessions are counted apart: not incoming, not per address. */
  for (guint i = 0; i < 3; i++)
    {
      assert_int_equal (ll_scope_check (s, &local), LL_ADMIT);
      ll_scope_add (s, &local);
    }
  assert_int_equal (ll_scope_check (s, &local), LL_REFUSE_LOCAL);
  assert_int_equal (s->incoming, 2);
  assert_int_equal (s->local, 3);
  assert_int_equal (ll_scope_count_address (s, "127.0.0.1"), 0);

  ll_scope_remove (s, &a);
  assert_int_equal (ll_scope_check (s, &a), LL_ADMIT);
  ll_scope_remove (s, &a);
  assert_int_equal (g_hash_table_size (s->per_address), 0);
  ll_scope_remove (s, &local);
  assert_int_equal (ll_scope_check (s, &local), LL_ADMIT);
  ll_scope_free (s);
}

static void
test_no_limits (void **state)
{
  LlScope *s = scope_new (0, 0, 0, 0, "");
  LlClient a = { "192.0.2.1", FALSE, FALSE };
  LlClient local = { "::1", TRUE, FALSE };

  for (guint i = 0; i < 1000; i++)
    {
      assert_int_equal (ll_scope_check (s, &a), LL_ADMIT);
      ll_scope_add (s, &a);
      ll_scope_add (s, &local);
    }
  assert_int_equal (ll_scope_count_address (s, "192.0.2.1"), 1000);
  for (guint i = 0; i < 1000; i++)
    {
      ll_scope_remove (s, &a);
      ll_scope_remove (s, &local);
    }
  assert_int_equal (s->incoming + s->local + s->others, 0);
  /* Counting out more than was counted in is a bug: reported, and the counts stay sane. */
  ll_scope_remove (s, &a);
  assert_true (pbt_log_expect ("incoming > 0"));
  assert_int_equal (s->incoming, 0);
  ll_scope_free (s);
}

static void
test_decision_names (void **state)
{
  assert_string_equal (ll_decision_to_string (LL_REFUSE_PER_ADDRESS), "max-per-address");
  assert_string_equal (ll_decision_to_string (LL_REFUSE_UNRESERVED), "reserved");
  assert_string_equal (ll_decision_to_string (LL_REFUSE_TOTAL), "max-sessions");
  assert_string_equal (ll_decision_to_string (LL_REFUSE_LOCAL), "max-local-sessions");
  assert_string_equal (ll_decision_to_string (LL_ADMIT), "admit");
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
    cmocka_unit_test (test_address_lists),
    cmocka_unit_test (test_address_keys),
    cmocka_unit_test (test_reservation),
    cmocka_unit_test (test_per_address_and_local),
    cmocka_unit_test (test_no_limits),
    cmocka_unit_test (test_decision_names),
  };
  pbt_log_capture ();
  return cmocka_run_group_tests (tests, NULL, check_log);
}
