/* SPDX-License-Identifier: MIT */
/* Unit tests of pop3-collector's pure helpers, table-driven, with the case index in every failure. */
#include "config.h"
#include "test-help.h"
#include "collector-private.h"

#include <string.h>

static void
test_leave (void **state)
{
  static const struct {
    const char *text;
    gboolean ok;
    gint64 days;
  } cases[] = {
    { "no", TRUE, COLLECTOR_LEAVE_NO },
    { "forever", TRUE, COLLECTOR_LEAVE_FOREVER },
    { " Forever ", TRUE, COLLECTOR_LEAVE_FOREVER },
    { "7 days", TRUE, 7 },
    { "1 day", TRUE, 1 },
    { "30d", TRUE, 30 },
    { "0 days", FALSE, 0 },
    { "days", FALSE, 0 },
    { "7", FALSE, 0 },
    { "7 weeks", FALSE, 0 },
    { "-3 days", FALSE, 0 },
    { "36501 days", FALSE, 0 },
    { "", FALSE, 0 },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      gint64 days = 12345;
      gboolean ok = collector_parse_leave (cases[i].text, &days, &error);

      if (ok != cases[i].ok || (ok && days != cases[i].days))
        fail_msg ("case %u (%s): ok %d days %" G_GINT64_FORMAT, i, cases[i].text, ok, days);
      if (!ok && strstr (error->message, "leave-on-server") == NULL)
        fail_msg ("case %u: error does not name the key: %s", i, error->message);
    }
}

static void
test_status_and_lines (void **state)
{
  static const struct {
    const char *line;
    gboolean valid, ok;
    const char *text;
  } status[] = {
    { "+OK ready", TRUE, TRUE, "ready" },
    { "+OK", TRUE, TRUE, "" },
    { "-ERR no such message", TRUE, FALSE, "no such message" },
    { "+OKAY", FALSE, FALSE, NULL },
    { "250 ok", FALSE, FALSE, NULL },
    { "", FALSE, FALSE, NULL },
  };
  static const struct {
    const char *line;
    gboolean ok;
    guint n;
    const char *uidl;
  } uidl[] = {
    { "1 whqtswO00WBw418f9t5JxYwZ", TRUE, 1, "whqtswO00WBw418f9t5JxYwZ" },
    { "12  abc", TRUE, 12, "abc" },
    { "0 abc", FALSE, 0, NULL },
    { "x abc", FALSE, 0, NULL },
    { "1", FALSE, 0, NULL },
    { "1 a b", FALSE, 0, NULL },
    { "1 0123456789012345678901234567890123456789012345678901234567890123456789X", FALSE, 0, NULL },
  };

  for (guint i = 0; i < G_N_ELEMENTS (status); i++)
    {
      gboolean ok = FALSE;
      const char *text = NULL;
      gboolean valid = collector_parse_status (status[i].line, &ok, &text);
      if (valid != status[i].valid || (valid && (ok != status[i].ok || strcmp (text, status[i].text) != 0)))
        fail_msg ("status case %u (%s)", i, status[i].line);
    }
  for (guint i = 0; i < G_N_ELEMENTS (uidl); i++)
    {
      guint n = 0;
      g_autofree char *u = NULL;
      gboolean ok = collector_parse_uidl_line (uidl[i].line, &n, &u);
      if (ok != uidl[i].ok || (ok && (n != uidl[i].n || strcmp (u, uidl[i].uidl) != 0)))
        fail_msg ("uidl case %u (%s)", i, uidl[i].line);
    }
  {
    guint n;
    gint64 size;
    assert_true (collector_parse_list_line ("3 1205", &n, &size) && n == 3 && size == 1205);
    assert_true (collector_parse_list_line ("4 99 extra", &n, &size) && n == 4 && size == 99);
    assert_false (collector_parse_list_line ("4", &n, &size));
    assert_false (collector_parse_list_line ("a 4", &n, &size));
  }
}

static void
test_auth_helpers (void **state)
{
  g_autofree char *stamp = collector_apop_timestamp ("POP3 server ready <1896.697170952@dbc.mtview.ca.us>");
  g_autofree char *digest = NULL;
  g_autofree char *plain = collector_sasl_plain ("tim", "tanstaaftanstaaf");
  g_autofree char *none = collector_apop_timestamp ("POP3 server ready");
  g_autofree char *noat = collector_apop_timestamp ("ready <abc>");

  /* The example of RFC 1939 §7. */
  assert_string_equal (stamp, "<1896.697170952@dbc.mtview.ca.us>");
  digest = collector_apop_digest (stamp, "tanstaaf");
  assert_string_equal (digest, "c4c9334bac560ecc979e58001b3e22fb");
  assert_null (none);
  assert_null (noat);
  /* RFC 4616 §4's example, without authzid: "\0tim\0tanstaaftanstaaf". */
  assert_string_equal (plain, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
}

static void
test_headers (void **state)
{
  static const char text[] =
    "Return-Path: <Alice@Example.ORG>\r\n"
    "To: Bob <bob@example.org>, \"Smith, Carol\" <carol@EXAMPLE.org>\r\n"
    "Cc: dave@example.org (Dave),\r\n"
    "\teve@example.org\r\n"
    "Subject: hi\r\n"
    "X-Envelope-To: team: frank@example.org, bob@example.org;\r\n"
    "not a header line\r\n"
    "\r\n"
    "To: body@example.org\r\n";
  g_autoptr (GPtrArray) fields = collector_parse_headers ((const guint8 *) text, strlen (text));
  g_autoptr (GPtrArray) addrs = g_ptr_array_new_with_free_func (g_free);
  static const char *const want[] = { "bob@example.org", "carol@example.org", "dave@example.org", "eve@example.org",
                                      "frank@example.org" };
  g_autofree char *rp = NULL;

  assert_int_equal (fields->len, 5);
  for (guint i = 0; i < fields->len; i++)
    {
      CollectorHeader *h = g_ptr_array_index (fields, i);
      if (g_ascii_strcasecmp (h->name, "Return-Path") == 0)
        rp = collector_return_path (h->value);
      else if (strcmp (h->name, "Subject") != 0)
        collector_extract_addresses (h->value, addrs);
    }
  assert_string_equal (rp, "Alice@example.org");
  assert_int_equal (addrs->len, G_N_ELEMENTS (want));
  for (guint i = 0; i < G_N_ELEMENTS (want); i++)
    if (strcmp (g_ptr_array_index (addrs, i), want[i]) != 0)
      fail_msg ("address %u: %s, wanted %s", i, (char *) g_ptr_array_index (addrs, i), want[i]);
  for (guint i = 0; i < fields->len; i++)
    {
      CollectorHeader *h = g_ptr_array_index (fields, i);
      g_free (h->name);
      g_free (h->value);
      g_free (h);
    }
  {
    g_autofree char *null_sender = collector_return_path ("<>");
    g_autofree char *bad = collector_return_path ("nobody");
    assert_string_equal (null_sender, "");
    assert_null (bad);
  }
  /* Garbage is never an address. */
  {
    g_autoptr (GPtrArray) none = g_ptr_array_new_with_free_func (g_free);
    collector_extract_addresses ("undisclosed-recipients:;", none);
    collector_extract_addresses ("<@>, a@, @b, (x@y), \"q@r\"", none);
    assert_int_equal (none->len, 0);
  }
}

static void
test_endpoint_and_date (void **state)
{
  g_autofree char *host = NULL;
  g_autofree char *v6 = NULL;
  g_autofree char *date = collector_rfc5322_date (0);
  guint16 port;

  assert_true (collector_split_endpoint ("pop.example.org:995", &host, &port));
  assert_string_equal (host, "pop.example.org");
  assert_int_equal (port, 995);
  assert_true (collector_split_endpoint ("[::1]:110", &v6, &port));
  assert_string_equal (v6, "::1");
  assert_int_equal (port, 110);
  /* English names whatever the locale, RFC 5322 §3.3. */
  assert_true (g_regex_match_simple ("^(Wed|Thu), 0?[0-9]+ (Dec|Jan) 19(69|70) [0-9:]{8} [+-][0-9]{4}$", date, 0, 0));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_leave),
    cmocka_unit_test (test_status_and_lines),
    cmocka_unit_test (test_auth_helpers),
    cmocka_unit_test (test_headers),
    cmocka_unit_test (test_endpoint_and_date),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
