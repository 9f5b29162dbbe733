/* SPDX-License-Identifier: MIT */
/* Unit tests of batv: prvs tags against independent vectors, expiry and the day wrap (fake clock), tampering, keys. */
#include "config.h"
#include "test-help.h"
#include "batv-private.h"

#include <string.h>

/*
 * The vectors were computed independently of this code, with Python's
 * standard library:
 *
 *   import hmac, hashlib
 *   key = b"pillarbox-batv-test-key-0123456789ab"
 *   src = ("%d%03d" % (K, DDD) + "bob@example.org").encode()
 *   hmac.new(key, src, hashlib.sha1).hexdigest()[:6]
 *
 * K = 3; at 1718236800 (2024-06-13, day 19887) with 7 days of validity
 * DDD = 894 and the tag is 996d08; at 1814227200 (day 20998, where the
 * count modulo 1000 wraps a week later) DDD = 005, and for
 * alice@example.net the tag is a1dea5. With the local part "Bob" instead
 * of "bob" (DDD 894) it is 6df2f5.
 */
#define SECRET "pillarbox-batv-test-key-0123456789ab"
#define T_JUNE G_GINT64_CONSTANT (1718236800)
#define T_WRAP G_GINT64_CONSTANT (1814227200)
#define DAY BATV_DAY_SECONDS

static BatvRing *
test_ring (void)
{
  BatvRing *ring = batv_ring_new ();
  batv_ring_set (ring, 3, T_JUNE - 30 * DAY, (const guint8 *) SECRET, strlen (SECRET));
  return ring;
}

static void
test_sign_vectors (void **state)
{
  BatvRing *ring = test_ring ();
  g_autofree char *a = batv_sign (batv_ring_active (ring), "bob@example.org", T_JUNE, 7);
  g_autofree char *b = batv_sign (batv_ring_active (ring), "alice@example.net", T_WRAP, 7);
  g_autofree char *c = batv_sign (batv_ring_active (ring), "Bob@example.org", T_JUNE + DAY - 1, 7);
  /* The domain's case changes nothing in the signature. */
  g_autofree char *d = batv_sign (batv_ring_active (ring), "bob@Example.ORG", T_JUNE, 7);

  assert_string_equal (a, "prvs=3894996d08=bob@example.org");
  assert_string_equal (b, "prvs=3005a1dea5=alice@example.net");
  assert_string_equal (c, "prvs=38946df2f5=Bob@example.org");
  assert_string_equal (d, "prvs=3894996d08=bob@Example.ORG");
  batv_ring_free (ring);
}

static void
test_verify_cases (void **state)
{
  static const struct {
    const char *address;
    gint64 now;
    BatvResult result;
    const char *untagged;
  } cases[] = {
    { "prvs=3894996d08=bob@example.org", T_JUNE, BATV_VALID, "bob@example.org" },
    /* the last valid day, and the day after */
    { "prvs=3894996d08=bob@example.org", T_JUNE + 7 * DAY + DAY - 1, BATV_VALID, "bob@example.org" },
    { "prvs=3894996d08=bob@example.org", T_JUNE + 8 * DAY, BATV_EXPIRED, "bob@example.org" },
    /* a day in the "future" beyond the validity: not one we made recently */
    { "prvs=3894996d08=bob@example.org", T_JUNE - 2 * DAY, BATV_EXPIRED, "bob@example.org" },
    /* domain case (RFC 5321 §2.4), hex case, tag-type case */
    { "prvs=3894996d08=bob@EXAMPLE.org", T_JUNE, BATV_VALID, "bob@EXAMPLE.org" },
    { "PRVS=3894996D08=bob@example.org", T_JUNE + DAY, BATV_VALID, "bob@example.org" },
    /* tampered: signature, local part, domain, day, key number */
    { "prvs=3894996d09=bob@example.org", T_JUNE, BATV_BAD, "bob@example.org" },
    { "prvs=3894996d08=Bob@example.org", T_JUNE, BATV_BAD, "Bob@example.org" },
    { "prvs=3894996d08=bob@example.com", T_JUNE, BATV_BAD, "bob@example.com" },
    { "prvs=3895996d08=bob@example.org", T_JUNE, BATV_BAD, "bob@example.org" },
    { "prvs=5894996d08=bob@example.org", T_JUNE, BATV_BAD, "bob@example.org" },
    /* malformed tags are bad, not unsigned */
    { "prvs=389499=bob@example.org", T_JUNE, BATV_BAD, "bob@example.org" },
    { "prvs=3894996dzz=bob@example.org", T_JUNE, BATV_BAD, "bob@example.org" },
    { "prvs==bob@example.org", T_JUNE, BATV_BAD, "bob@example.org" },
    /* not tags at all */
    { "bob@example.org", T_JUNE, BATV_UNSIGNED, "bob@example.org" },
    { "prvs@example.org", T_JUNE, BATV_UNSIGNED, "prvs@example.org" },
    { "prvs=3894996d08@example.org", T_JUNE, BATV_UNSIGNED, "prvs=3894996d08@example.org" },
    { "prvs=3894996d08=@example.org", T_JUNE, BATV_UNSIGNED, "prvs=3894996d08=@example.org" },
    /* across the wrap of the day count: signed on day 20998 (998), expires on 21005 (005) */
    { "prvs=3005a1dea5=alice@example.net", T_WRAP, BATV_VALID, "alice@example.net" },
    { "prvs=3005a1dea5=alice@example.net", T_WRAP + 2 * DAY, BATV_VALID, "alice@example.net" },
    { "prvs=3005a1dea5=alice@example.net", T_WRAP + 7 * DAY, BATV_VALID, "alice@example.net" },
    { "prvs=3005a1dea5=alice@example.net", T_WRAP + 8 * DAY, BATV_EXPIRED, "alice@example.net" },
    { "prvs=3005a1dea5=alice@example.net", T_WRAP - 1000 * DAY + 8 * DAY, BATV_EXPIRED, "alice@example.net" },
  };
  BatvRing *ring = test_ring ();

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *untagged = NULL;
      BatvResult r = batv_verify (ring, cases[i].address, cases[i].now, 7, &untagged, NULL);
      if (r != cases[i].result || g_strcmp0 (untagged, cases[i].untagged) != 0)
        fail_msg ("case %u (%s): got %s %s, expected %s %s", i, cases[i].address, batv_result_to_string (r),
                  untagged, batv_result_to_string (cases[i].result), cases[i].untagged);
    }
  batv_ring_free (ring);
}

static void
test_round_trip_and_wrap (void **state)
{
  BatvRing *ring = test_ring ();

  /* Every start day of a whole cycle of the day count, every age of the tag. */
  for (gint64 d = 0; d < 1000; d += 7)
    {
      gint64 t = T_WRAP + d * DAY + 3600;
      g_autofree char *s = batv_sign (batv_ring_active (ring), "carol@example.org", t, 5);
      for (gint64 age = 0; age <= 6; age++)
        {
          BatvResult r = batv_verify (ring, s, t + age * DAY, 5, NULL, NULL);
          BatvResult want = age <= 5 ? BATV_VALID : BATV_EXPIRED;
          if (r != want)
            fail_msg ("day +%" G_GINT64_FORMAT " age %" G_GINT64_FORMAT ": %s", d, age, batv_result_to_string (r));
        }
    }
  batv_ring_free (ring);
}

static void
test_signable (void **state)
{
  static const struct {
    const char *address;
    gboolean ok;
  } cases[] = {
    { "bob@example.org", TRUE },
    { "", FALSE },
    { "bob", FALSE },
    { "@example.org", FALSE },
    { "bob@", FALSE },
    { "prvs=3894996d08=bob@example.org", FALSE },
    { "PRVS=x=bob@example.org", FALSE },
    { "\"bob smith\"@example.org", FALSE },
    /* 48 + 16 = 64 octets fit; 49 do not (RFC 5321 §4.5.3.1.1) */
    { "abcdefghijabcdefghijabcdefghijabcdefghijabcdefgh@example.org", TRUE },
    { "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghi@example.org", FALSE },
  };
  BatvRing *ring = test_ring ();

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *s = batv_sign (batv_ring_active (ring), cases[i].address, T_JUNE, 7);
      if (batv_address_signable (cases[i].address) != cases[i].ok || (s != NULL) != cases[i].ok)
        fail_msg ("case %u (%s)", i, cases[i].address);
    }
  batv_ring_free (ring);
}

static void
test_rotation (void **state)
{
  BatvRing *ring = test_ring ();   /* key 3, created 30 days before T_JUNE */
  guint8 other[BATV_SECRET_LEN];
  g_autofree char *old_tag = batv_sign (batv_ring_active (ring), "bob@example.org", T_JUNE, 7);
  g_autofree char *new_tag = NULL;
  guint number;
  gint64 until = 0;

  memset (other, 0x5a, sizeof other);
  assert_true (batv_ring_next_number (ring, T_JUNE, 7, &number, NULL));
  assert_int_equal (number, 4);
  batv_ring_set (ring, 4, T_JUNE + 3600, other, sizeof other);
  assert_int_equal (batv_ring_active (ring)->number, 4);
  assert_int_equal (batv_ring_superseded_at (ring, ring->keys[3]), T_JUNE + 3600);
  assert_int_equal (batv_ring_superseded_at (ring, ring->keys[4]), 0);

  /* The new key signs; the old one still verifies its tags until they expire. */
  new_tag = batv_sign (batv_ring_active (ring), "bob@example.org", T_JUNE + 7200, 7);
  assert_true (g_str_has_prefix (new_tag, "prvs=4894"));
  assert_int_equal (batv_verify (ring, new_tag, T_JUNE + DAY, 7, NULL, NULL), BATV_VALID);
  assert_int_equal (batv_verify (ring, old_tag, T_JUNE + 7 * DAY, 7, NULL, NULL), BATV_VALID);
  /* 1000 days on, the day count has come round again: the retired key no longer verifies. */
  assert_int_equal (batv_verify (ring, old_tag, T_JUNE + 1000 * DAY, 7, NULL, NULL), BATV_EXPIRED);
  assert_int_equal (batv_key_last_day (ring, ring->keys[3], 7), batv_day (T_JUNE) + 7);

  /* Ten rotations within a week would reuse a number whose tags are still out there. */
  for (guint n = 5; n < 10; n++)
    batv_ring_set (ring, n, T_JUNE + 3600 * (n - 3), other, sizeof other);
  batv_ring_set (ring, 0, T_JUNE + 3600 * 7, other, sizeof other);
  batv_ring_set (ring, 1, T_JUNE + 3600 * 8, other, sizeof other);
  batv_ring_set (ring, 2, T_JUNE + 3600 * 9, other, sizeof other);
  assert_int_equal (batv_ring_active (ring)->number, 2);
  assert_false (batv_ring_next_number (ring, T_JUNE + DAY, 7, &number, &until));
  assert_int_equal (number, 3);
  assert_int_equal (until, batv_day (T_JUNE) + 7);
  assert_true (batv_ring_next_number (ring, T_JUNE + 8 * DAY, 7, &number, &until));
  batv_ring_free (ring);
}

static void
test_key_file (void **state)
{
  BatvRing *ring = test_ring ();
  BatvRing *back = batv_ring_new ();
  g_autofree char *text = batv_ring_serialize (ring);
  g_autofree char *again = NULL;
  g_autofree char *merged = NULL;
  g_autofree char *file = NULL;
  g_autofree char *own = NULL;
  BatvRing *m;
  guint8 s1[BATV_SECRET_LEN], s2[BATV_SECRET_LEN];

  /* The secret is written in hexadecimal and read back exactly. */
  assert_non_null (strstr (text, "\n3 1715644800 70696c6c6172626f782d626174762d746573742d6b65792d303132333435363738396162\n"));
  assert_int_equal (batv_ring_parse (back, text), 0);
  again = batv_ring_serialize (back);
  assert_string_equal (text, again);
  batv_ring_free (back);

  /* Unreadable lines are counted and skipped. */
  back = batv_ring_new ();
  assert_int_equal (batv_ring_parse (back, "# comment\n\n12 5 00\nx 1 00\n1 -5 "
                                           "000102030405060708090a0b0c0d0e0f\n2 100 0001\n"
                                           "4 100 000102030405060708090a0b0c0d0e0g\n"
                                           "5 100 000102030405060708090a0b0c0d0e0f extra\n"
                                           "6 100 000102030405060708090a0b0c0d0e0f\n"),
                    6);
  assert_int_equal (batv_ring_count (back), 1);
  assert_non_null (back->keys[6]);
  assert_int_equal (back->keys[6]->secret_len, 16);
  batv_ring_free (back);

  /* Merge: the union, and per number the newer key. */
  memset (s1, 1, sizeof s1);
  memset (s2, 2, sizeof s2);
  m = batv_ring_new ();
  batv_ring_set (m, 0, 1000, s1, sizeof s1);
  batv_ring_set (m, 1, 2000, s1, sizeof s1);
  file = batv_ring_serialize (m);
  batv_ring_set (m, 1, 3000, s2, sizeof s2);   /* own rotated key 1 later */
  batv_ring_set (m, 2, 1500, s2, sizeof s2);
  batv_ring_set (m, 0, 500, s2, sizeof s2);    /* older than the file's: loses */
  own = batv_ring_serialize (m);
  batv_ring_free (m);
  merged = batv_ring_merge_texts (file, own, 0);
  m = batv_ring_new ();
  batv_ring_parse (m, merged);
  assert_int_equal (batv_ring_count (m), 3);
  assert_int_equal (m->keys[0]->created, 1000);
  assert_memory_equal (m->keys[0]->secret, s1, sizeof s1);
  assert_int_equal (m->keys[1]->created, 3000);
  assert_memory_equal (m->keys[1]->secret, s2, sizeof s2);
  assert_int_equal (m->keys[2]->created, 1500);
  assert_int_equal (batv_ring_active (m)->number, 1);
  batv_ring_free (m);
  batv_ring_free (ring);
}

static void
test_patterns (void **state)
{
  const char *const senders[] = { "boss@example.org", "lists.example.org", "*.corp.example", NULL };

  assert_true (batv_pattern_valid ("example.org", FALSE));
  assert_true (batv_pattern_valid ("*.example.org", FALSE));
  assert_true (batv_pattern_valid ("bob@example.org", TRUE));
  assert_false (batv_pattern_valid ("bob@example.org", FALSE));
  assert_false (batv_pattern_valid ("exa mple.org", FALSE));
  assert_false (batv_pattern_valid ("example..org", FALSE));
  assert_false (batv_pattern_valid ("*", FALSE));
  assert_false (batv_pattern_valid ("@example.org", TRUE));
  assert_false (batv_pattern_valid ("a@b@example.org", TRUE));

  assert_true (batv_address_matches (senders, "Boss@Example.org"));
  assert_false (batv_address_matches (senders, "bob@example.org"));
  assert_true (batv_address_matches (senders, "anyone@LISTS.example.org"));
  assert_true (batv_address_matches (senders, "x@a.corp.example"));
  assert_false (batv_address_matches (senders, "x@corp.example"));
  assert_true (batv_domain_matches (senders, "lists.example.org"));
  assert_false (batv_domain_matches (senders, "example.org"));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_sign_vectors),
    cmocka_unit_test (test_verify_cases),
    cmocka_unit_test (test_round_trip_and_wrap),
    cmocka_unit_test (test_signable),
    cmocka_unit_test (test_rotation),
    cmocka_unit_test (test_key_file),
    cmocka_unit_test (test_patterns),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
