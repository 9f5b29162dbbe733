/* SPDX-License-Identifier: MIT */
/* Unit tests of status-monitor's line format: FILETIME, escaping, update lines read back, commands, status snapshots. */
#include "config.h"
#include "test-help.h"
#include "sm-private.h"

#include <string.h>
#include <time.h>

static void
test_filetime (void **state)
{
  static const struct {
    gint64 usec;
    const char *hex;
  } cases[] = {
    { 0, "019DB1DED53E8000" },                                     /* 1970-01-01 */
    { G_GINT64_CONSTANT (1000000), "019DB1DED5D71680" },           /* one second later */
    { G_GINT64_CONSTANT (1700000000) * 1000000, "01DA1747C66D0000" },  /* 2023-11-14 22:13:20 */
    { G_GINT64_CONSTANT (1700000000123456), "01DA1747C67FD680" },      /* microseconds kept as 100 ns ticks */
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *hex = sm_filetime_hex (cases[i].usec);
      gint64 back = -1;

      if (strcmp (hex, cases[i].hex) != 0)
        fail_msg ("case %u: %s, expected %s", i, hex, cases[i].hex);
      if (!sm_filetime_parse (hex, &back) || back != cases[i].usec)
        fail_msg ("case %u: read back as %" G_GINT64_FORMAT, i, back);
    }
  {
    gint64 t;
    assert_false (sm_filetime_parse ("019DB1DED53E800", &t));   /* 15 digits and a NUL */
    assert_false (sm_filetime_parse ("019DB1DED53E800G", &t));
  }
}

static void
test_escape (void **state)
{
  static const struct {
    const char *value;
    const char *token;
  } cases[] = {
    { "bob@example.org", "bob@example.org" },
    { "", "-" },
    { "-", "%2D" },
    { "a b", "a%20b" },
    { "100%", "100%25" },
    { "tab\there", "tab%09here" },
    { "cr\r\nlf", "cr%0D%0Alf" },
    { "del\x7f", "del%7F" },
    { "key=value", "key=value" },        /* only the first '=' of a field separates */
    { "caf\xc3\xa9", "caf\xc3\xa9" },    /* UTF-8 is passed as it is */
    { "--", "--" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *token = sm_escape_value (cases[i].value);
      g_autofree char *back = sm_unescape_value (token);

      if (strcmp (token, cases[i].token) != 0)
        fail_msg ("case %u: escaped to '%s', expected '%s'", i, token, cases[i].token);
      if (back == NULL || strcmp (back, cases[i].value) != 0)
        fail_msg ("case %u: read back as '%s'", i, back != NULL ? back : "(null)");
    }
  {
    g_autofree char *none = sm_escape_value (NULL);
    assert_string_equal (none, "-");
  }
  {
    static const char *const bad[] = { "%", "%2", "%G0", "a%0", "%00" };
    for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
      {
        g_autofree char *v = sm_unescape_value (bad[i]);
        if (v != NULL)
          fail_msg ("bad escape %u ('%s') accepted as '%s'", i, bad[i], v);
      }
  }
  {
    g_autofree char *clean = sm_clean_text ("a\r\nb\tc\x01");
    assert_string_equal (clean, "a  b c ");
  }
  {
    /* A user name as a peer may send it: invalid UTF-8, a C1 control, a cut-off sequence. */
    g_autofree char *clean = sm_clean_text ("bob\xff\xfe caf\xc3\xa9 \xc2\x85 \xc0\xaf \xe2\x82");
    assert_string_equal (clean, "bob?? caf\xc3\xa9   ?? ??");
    assert_true (g_utf8_validate (clean, -1, NULL));
  }
}

static void
test_lines (void **state)
{
  g_autofree char *activity = sm_activity_line (0, "MX Send Warning - x\r\ninjected");
  g_autofree char *status = sm_connection_status_line ("Idle");
  GString *b = sm_line_begin ('S');
  g_autofree char *session = NULL;
  g_autoptr (SmUpdate) u = NULL;
  g_autoptr (GError) error = NULL;

  /* A CRLF in the text must not end the line early (no injected second line). */
  assert_string_equal (activity, "0019DB1DED53E8000MX Send Warning - x  injected\r\n");
  assert_string_equal (status, "1Idle\r\n");

  sm_line_add (b, "event", "start");
  sm_line_add (b, "id", "s1f");
  sm_line_add (b, "user", "");
  sm_line_add (b, "client", "::1");
  sm_line_add (b, "note", "two words");
  sm_line_add_int (b, "seconds", 42);
  session = sm_line_end (b);
  assert_string_equal (session, "S event=start id=s1f user=- client=::1 note=two%20words seconds=42\r\n");

  u = sm_update_parse (session, &error);
  assert_non_null (u);
  assert_int_equal (u->type, 'S');
  assert_string_equal (g_hash_table_lookup (u->fields, "event"), "start");
  assert_string_equal (g_hash_table_lookup (u->fields, "user"), "");
  assert_string_equal (g_hash_table_lookup (u->fields, "note"), "two words");
  assert_string_equal (g_hash_table_lookup (u->fields, "seconds"), "42");
  g_clear_pointer (&u, sm_update_free);

  u = sm_update_parse (activity, &error);
  assert_non_null (u);
  assert_int_equal (u->type, '0');
  assert_int_equal (u->time, 0);
  assert_string_equal (u->text, "MX Send Warning - x  injected");
  g_clear_pointer (&u, sm_update_free);

  u = sm_update_parse ("1Sending (isp)\n", &error);
  assert_non_null (u);
  assert_string_equal (u->text, "Sending (isp)");
  g_clear_pointer (&u, sm_update_free);

  {
    static const char *const bad[] = {
      "+OK Logged in", "-ERR no", "", "0123", "0019DB1DED53E800Xtext", "Sx=1", "S event", "S =v", "S a=%zz",
    };
    for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
      {
        g_autoptr (GError) e = NULL;
        SmUpdate *v = sm_update_parse (bad[i], &e);
        if (v != NULL || e == NULL)
          fail_msg ("bad line %u ('%s') accepted", i, bad[i]);
      }
  }
}

static void
test_commands (void **state)
{
  static const struct {
    const char *line;
    SmCommandKind kind;
    const char *arg1, *arg2;
    gboolean bad_args;
  } cases[] = {
    { "LOGIN postmaster admin\r\n", SM_CMD_LOGIN, "postmaster", "admin", FALSE },
    { "login bob pass word with spaces\r\n", SM_CMD_LOGIN, "bob", "pass word with spaces", FALSE },
    { "LOGIN  bob   trailing  \n", SM_CMD_LOGIN, "bob", "trailing  ", FALSE },
    { "LOGIN bob\r\n", SM_CMD_LOGIN, "bob", NULL, TRUE },
    { "LOGIN\r\n", SM_CMD_LOGIN, NULL, NULL, TRUE },
    { "ALOGIN postmaster 9077A0BE9A986C3AE3B32D25C417A98D\r\n", SM_CMD_ALOGIN, "postmaster",
      "9077A0BE9A986C3AE3B32D25C417A98D", FALSE },
    { "CONNECT isp\r\n", SM_CMD_CONNECT, "isp", NULL, FALSE },
    { "connect-now isp\r\n", SM_CMD_CONNECT, "isp", NULL, FALSE },
    { "CONNECT\r\n", SM_CMD_CONNECT, NULL, NULL, FALSE },
    { "CONNECT a b\r\n", SM_CMD_CONNECT, "a", "b", TRUE },
    { "STATUS\r\n", SM_CMD_STATUS, NULL, NULL, FALSE },
    { "status now\r\n", SM_CMD_STATUS, "now", NULL, TRUE },
    { "NOOP", SM_CMD_NOOP, NULL, NULL, FALSE },
    { "QUIT\r\n", SM_CMD_QUIT, NULL, NULL, FALSE },
    { "\r\n", SM_CMD_EMPTY, NULL, NULL, FALSE },
    { "   \r\n", SM_CMD_EMPTY, NULL, NULL, FALSE },
    { "HELO x\r\n", SM_CMD_UNKNOWN, NULL, NULL, FALSE },
    { "QUITX\r\n", SM_CMD_UNKNOWN, NULL, NULL, FALSE },
    { "LOG\rIN a b\r\n", SM_CMD_UNKNOWN, NULL, NULL, FALSE },    /* a bare CR never hides a command */
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      SmCommand cmd;

      sm_command_parse (cases[i].line, strlen (cases[i].line), &cmd);
      if (cmd.kind != cases[i].kind || g_strcmp0 (cmd.arg1, cases[i].arg1) != 0
          || g_strcmp0 (cmd.arg2, cases[i].arg2) != 0 || (cmd.kind != SM_CMD_UNKNOWN && cmd.bad_args != cases[i].bad_args))
        fail_msg ("case %u ('%s'): kind %d arg1 '%s' arg2 '%s' bad %d", i, cases[i].line, cmd.kind,
                  cmd.arg1 != NULL ? cmd.arg1 : "(null)", cmd.arg2 != NULL ? cmd.arg2 : "(null)", cmd.bad_args);
      sm_command_clear (&cmd);
    }
  {
    /* A NUL inside the line (the length says where it ends) is refused. */
    static const char nul[] = "LOGIN a\0b c\r\n";
    SmCommand cmd;
    sm_command_parse (nul, sizeof nul - 1, &cmd);
    assert_int_equal (cmd.kind, SM_CMD_UNKNOWN);
    sm_command_clear (&cmd);
  }
}

static GVariant *
connection (const char *name, const char *state, gint64 next_run, guint32 deliveries)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "name", g_variant_new_string (name));
  g_variant_builder_add (&b, "{sv}", "sender", g_variant_new_string ("relay-sender"));
  g_variant_builder_add (&b, "{sv}", "state", g_variant_new_string (state));
  g_variant_builder_add (&b, "{sv}", "deliveries", g_variant_new_uint32 (deliveries));
  g_variant_builder_add (&b, "{sv}", "send_immediately", g_variant_new_boolean (FALSE));
  g_variant_builder_add (&b, "{sv}", "next_run", g_variant_new_int64 (next_run));
  return g_variant_builder_end (&b);
}

static GVariant *
status_with (GVariant **conns, guint n, gboolean with_queue)
{
  GVariantBuilder b, cb, qb;

  g_variant_builder_init (&cb, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < n; i++)
    g_variant_builder_add_value (&cb, conns[i]);
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "sessions", g_variant_new_uint32 (3));
  g_variant_builder_add (&b, "{sv}", "uptime_seconds", g_variant_new_int64 (3600));
  g_variant_builder_add (&b, "{sv}", "connections", g_variant_builder_end (&cb));
  if (with_queue)
    {
      /* Keys in another order than the line's. */
      g_variant_builder_init (&qb, G_VARIANT_TYPE ("a{su}"));
      g_variant_builder_add (&qb, "{su}", "bounced", 1);
      g_variant_builder_add (&qb, "{su}", "deferred", 2);
      g_variant_builder_add (&qb, "{su}", "pending", 5);
      g_variant_builder_add (&qb, "{su}", "delivered", 0);
      g_variant_builder_add (&b, "{sv}", "queue", g_variant_builder_end (&qb));
    }
  return g_variant_ref_sink (g_variant_builder_end (&b));
}

static void
test_snapshot (void **state)
{
  /* 2026-11-22 14:15 UTC; the tests run with TZ=UTC. */
  const gint64 t1 = G_GINT64_CONSTANT (1795356900), t2 = t1 + 600;

  {
    GVariant *conns[] = { connection ("backup", "idle", t2, 0), connection ("isp", "idle", t1, 0) };
    g_autoptr (GVariant) status = status_with (conns, 2, TRUE);
    g_autoptr (SmSnapshot) snap = sm_snapshot_from_status (status);
    g_autofree char *summary = sm_summary_line (t1 * G_USEC_PER_SEC, snap, 2);

    assert_string_equal (snap->connection_status, "1Idle - next connection isp at 2026-11-22 14:15\r\n");
    assert_int_equal (snap->connections->len, 2);
    assert_string_equal (g_ptr_array_index (snap->connections, 1),
                         "C name=isp sender=relay-sender state=idle deliveries=0 send-immediately=no "
                         "next=2026-11-22T14:15:00Z\r\n");
    assert_string_equal (snap->queue, "Q pending=5 deferred=2 delivered=0 bounced=1\r\n");
    assert_string_equal (summary, "Y time=2026-11-22T14:15:00Z uptime=3600 sessions=3 monitors=2 pending=5 "
                                  "deferred=2 connections=2\r\n");
  }
  {
    GVariant *conns[] = { connection ("isp", "sending", t1, 2), connection ("lan", "held (deny window)", 0, 0),
                          connection ("dsl", "sending", 0, 1) };
    g_autoptr (GVariant) status = status_with (conns, 3, FALSE);
    g_autoptr (SmSnapshot) snap = sm_snapshot_from_status (status);

    assert_string_equal (snap->connection_status, "1Sending (isp, dsl) - held by a deny window: lan\r\n");
    assert_string_equal (g_ptr_array_index (snap->connections, 1),
                         "C name=lan sender=relay-sender state=held deliveries=0 send-immediately=no next=-\r\n");
    assert_null (snap->queue);
  }
  {
    /* Without a status at all (a failed command): still one valid '1' line. */
    g_autoptr (SmSnapshot) snap = sm_snapshot_from_status (NULL);
    assert_string_equal (snap->connection_status, "1Idle\r\n");
    assert_int_equal (snap->connections->len, 0);
  }
}

static void
test_session_lines (void **state)
{
  GVariantBuilder b, sb;
  g_autoptr (GVariant) sessions = NULL;
  g_autoptr (GPtrArray) lines = NULL;

  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  g_variant_builder_init (&sb, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&sb, "{sv}", "id", g_variant_new_string ("s2a"));
  g_variant_builder_add (&sb, "{sv}", "service", g_variant_new_string ("smtp"));
  g_variant_builder_add (&sb, "{sv}", "listener", g_variant_new_string ("submission"));
  g_variant_builder_add (&sb, "{sv}", "client", g_variant_new_string ("192.0.2.7"));
  g_variant_builder_add (&sb, "{sv}", "user", g_variant_new_string (""));
  g_variant_builder_add (&sb, "{sv}", "state", g_variant_new_string ("MAIL"));
  g_variant_builder_add (&sb, "{sv}", "tls", g_variant_new_boolean (TRUE));
  g_variant_builder_add (&sb, "{sv}", "age_seconds", g_variant_new_int64 (7));
  g_variant_builder_add (&b, "a{sv}", &sb);
  sessions = g_variant_ref_sink (g_variant_builder_end (&b));
  lines = sm_session_lines (sessions);
  assert_int_equal (lines->len, 1);
  assert_string_equal (g_ptr_array_index (lines, 0), "S event=present id=s2a service=smtp listener=submission "
                                                     "client=192.0.2.7 user=- state=MAIL tls=yes seconds=7\r\n");
  g_ptr_array_unref (g_steal_pointer (&lines));
  lines = sm_session_lines (NULL);
  assert_int_equal (lines->len, 0);
}

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
    cmocka_unit_test (test_filetime),
    cmocka_unit_test (test_escape),
    cmocka_unit_test (test_lines),
    cmocka_unit_test (test_commands),
    cmocka_unit_test (test_snapshot),
    cmocka_unit_test (test_session_lines),
  };
  g_setenv ("TZ", "UTC", TRUE);
  tzset ();
  pbt_log_capture ();
  return cmocka_run_group_tests (tests, NULL, check_log);
}
