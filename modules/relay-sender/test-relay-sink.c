/* SPDX-License-Identifier: MIT */
/* Integration tests of relay-sender: the module in a real generation, delivering to smtp-sink and a scripted server. */
#include "config.h"
#include "test-transport.h"

#include <string.h>
#include <sys/stat.h>
#include <glib/gstdio.h>

static const char body[] = "From: a@example.org\r\nSubject: test\r\n\r\nhello\r\n.dot line\r\n..two\r\n.\r\nend\r\n";
static const char body_wire[] =
  "From: a@example.org\r\nSubject: test\r\n\r\nhello\r\n..dot line\r\n...two\r\n..\r\nend\r\n.\r\n";

/* A fixture with the base configuration and message q1 written. */
static TtFixture *
setup_base (const char *store_extra)
{
  TtFixture *f = tt_new ();
  tt_write_base (f, NULL, store_extra);
  tt_write_message (f, "q1", body, -1);
  return f;
}

static void
write_relay (TtFixture *f, const char *module_extra, const char *servers)
{
  g_autofree char *conf = g_strdup_printf ("[module relay-sender]\nreuse-time = 200ms\n%s\n%s", module_extra, servers);
  tt_write_conf (f, "50-relay.conf", conf);
}

static void
expect_codes (TtDelivery *d, const guint *codes)
{
  for (guint i = 0; i < d->n; i++)
    if (d->results[i].code != codes[i])
      fail_msg ("recipient %u: %u %s %s, expected %u", i, d->results[i].code,
                d->results[i].enhanced != NULL ? d->results[i].enhanced : "",
                d->results[i].text != NULL ? d->results[i].text : "", codes[i]);
}

static void
expect_text (TtDelivery *d, guint i, const char *needle)
{
  if (d->results[i].text == NULL || strstr (d->results[i].text, needle) == NULL)
    fail_msg ("recipient %u: '%s' does not contain '%s'", i, d->results[i].text != NULL ? d->results[i].text : "",
              needle);
}

static JsonObject *
only_message (GPtrArray *messages)
{
  if (messages->len != 1)
    fail_msg ("%u messages at the server, expected 1", messages->len);
  return g_ptr_array_index (messages, 0);
}

static void
expect_raw (JsonObject *m, const char *wire)
{
  g_autoptr (GBytes) raw = tt_message_raw (m);
  gsize len = 0;
  const char *data = g_bytes_get_data (raw, &len);
  if (len != strlen (wire) || memcmp (data, wire, len) != 0)
    fail_msg ("the server received '%s'", g_strescape (g_strndup (data, len), NULL));
}

/* Runs `pillarbox relay-sender ARGS...` inside the generation; returns its text. */
static char *
run_command (TtFixture *f, const char *const *args)
{
  const PbCommandEntry *e = g_hash_table_lookup (f->gen->commands, "relay-sender");
  PbControlRequest *r;
  char *text;

  assert_non_null (e);
  r = pb_control_request_new (args, NULL, NULL, NULL);
  e->spec.func (r, e->spec.user_data);
  if (!pb_control_request_is_ok (r))
    fail_msg ("relay-sender %s: %s", args[0], pb_control_request_get_error (r));
  text = g_strdup (pb_control_request_get_text (r));
  pb_control_request_unref (r);
  return text;
}

/* Two recipients through smtp-sink, PIPELINING offered. */
static void
test_sink_basic (void **state)
{
  TtFixture *f = setup_base (NULL);
  g_autofree char *log = NULL;
  guint port = tt_start_sink (f, "127.0.0.1", 0, NULL, &log);
  g_autofree char *servers = g_strdup_printf ("[relay-server isp]\naddress = 127.0.0.1:%u\nsecurity = none\n", port);
  const char *rcpts[] = { "a@dest.example", "b@dest.example", NULL };
  const guint ok[] = { 250, 250 };
  TtDelivery *d;

  write_relay (f, "", servers);
  tt_build (f, NULL);
  d = tt_deliver (f, "relay-sender", "q1", "sender@example.org", rcpts);
  expect_codes (d, ok);
  expect_text (d, 0, "said: 250 2.0.0 Ok (in reply to end of data)");
  assert_string_equal (d->results[0].enhanced, "2.0.0");
  assert_true (tt_sink_wait_messages (log, 1, 5000));
  tt_delivery_free (d);
  tt_free (f);
}

/* Per-recipient results, PIPELINING in one write, DSN and SIZE parameters,
 * and the body dot-stuffed with CRLF only, read from storage 7 octets at a time. */
static void
test_per_recipient (void **state)
{
  TtFixture *f = setup_base ("chunk = 7");
  g_autofree char *log = NULL;
  const char *extra[] = { "--ext", "PIPELINING", "--ext", "DSN", "--ext", "SIZE 100000", "--ext",
                          "ENHANCEDSTATUSCODES", "--rcpt", "bad=550 5.1.1 no such user", "--rcpt",
                          "later=451 4.2.0 try later", NULL };
  guint port = tt_start_server (f, "127.0.0.1", extra, &log);
  g_autofree char *servers = g_strdup_printf ("[relay-server isp]\naddress = 127.0.0.1:%u\nsecurity = none\n", port);
  const char *rcpts[] = { "good1@dest.example", "bad@dest.example", "later@dest.example", "good2@dest.example", NULL };
  const char *notify[] = { "SUCCESS,FAILURE", NULL, NULL, "NEVER", NULL };
  const char *orcpt[] = { "rfc822;good1@dest.example", NULL, NULL, NULL, NULL };
  const guint codes[] = { 250, 550, 451, 250 };
  g_autoptr (GPtrArray) messages = NULL;
  JsonObject *m;
  JsonArray *r;
  TtDelivery *d;

  write_relay (f, "", servers);
  tt_build (f, NULL);
  d = tt_deliver_start (f, "relay-sender", "q1", "sender@example.org", rcpts, -1, notify, orcpt, "HDRS", "env-1");
  tt_delivery_wait (d, 30000);
  expect_codes (d, codes);
  expect_text (d, 1, "127.0.0.1[127.0.0.1] said: 550 5.1.1 no such user (in reply to RCPT TO)");
  assert_string_equal (d->results[1].enhanced, "5.1.1");
  assert_string_equal (d->results[2].enhanced, "4.2.0");

  messages = tt_server_log (log, "message");
  m = only_message (messages);
  assert_true (json_object_get_boolean_member (m, "pipelined"));
  {
    g_autofree char *expect = g_strdup_printf ("<sender@example.org> SIZE=%zu RET=HDRS ENVID=env-1", strlen (body));
    assert_string_equal (json_object_get_string_member (m, "mail"), expect);
  }
  r = json_object_get_array_member (m, "rcpts");
  assert_int_equal (json_array_get_length (r), 4);
  assert_string_equal (json_array_get_string_element (r, 0),
                       "<good1@dest.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;good1@dest.example");
  assert_string_equal (json_array_get_string_element (r, 1), "<bad@dest.example>");
  assert_string_equal (json_array_get_string_element (r, 3), "<good2@dest.example> NOTIFY=NEVER");
  expect_raw (m, body_wire);
  tt_delivery_free (d);
  tt_free (f);
}

/* A server without ESMTP: HELO, one command at a time, no parameters; bare
 * LF and bare CR in the stored message go out as CRLF. Also the null sender. */
static void
test_plain_smtp (void **state)
{
  TtFixture *f = setup_base ("chunk = 3");
  g_autofree char *log = NULL;
  const char *extra[] = { "--no-ehlo", "--rcpt", "bad=550 5.1.1 no", "--multiline", NULL };
  guint port = tt_start_server (f, "127.0.0.1", extra, &log);
  g_autofree char *servers = g_strdup_printf ("[relay-server isp]\naddress = 127.0.0.1:%u\nsecurity = none\n", port);
  const char *rcpts[] = { "bad@dest.example", "good@dest.example", NULL };
  const guint codes[] = { 550, 250 };
  g_autoptr (GPtrArray) messages = NULL;
  JsonObject *m;
  TtDelivery *d;

  tt_write_message (f, "q2", "a\nb\r.c\r\n", -1);
  write_relay (f, "", servers);
  tt_build (f, NULL);
  d = tt_deliver (f, "relay-sender", "q2", "", rcpts);
  expect_codes (d, codes);
  messages = tt_server_log (log, "message");
  m = only_message (messages);
  assert_false (json_object_get_boolean_member (m, "pipelined"));
  assert_string_equal (json_object_get_string_member (m, "mail"), "<>");
  assert_string_equal (json_object_get_string_member (m, "helo"), "pillarbox.test.example");
  expect_raw (m, "a\r\nb\r\n..c\r\n.\r\n");
  tt_delivery_free (d);
  tt_free (f);
}

/* A big message through the core's output queue (drained), read in odd chunks. */
static void
test_big_message (void **state)
{
  TtFixture *f = setup_base ("chunk = 65519");
  g_autofree char *log = NULL;
  const char *extra[] = { "--ext", "PIPELINING", NULL };
  guint port = tt_start_server (f, "127.0.0.1", extra, &log);
  g_autofree char *servers = g_strdup_printf ("[relay-server isp]\naddress = 127.0.0.1:%u\nsecurity = none\n", port);
  const char *rcpts[] = { "a@dest.example", NULL };
  const guint codes[] = { 250 };
  g_autoptr (GString) msg = g_string_new ("Subject: big\r\n\r\n");
  g_autoptr (GString) wire = NULL;
  g_autoptr (GPtrArray) messages = NULL;
  TtDelivery *d;

  for (guint i = 0; i < 40000; i++)
    g_string_append_printf (msg, "%s line %u of the big message\r\n", i % 3 == 0 ? "." : "", i);
  wire = g_string_new (NULL);
  for (const char *p = msg->str; *p != '\0';)
    {
      const char *eol = strstr (p, "\r\n");
      if (*p == '.')
        g_string_append_c (wire, '.');
      g_string_append_len (wire, p, eol + 2 - p);
      p = eol + 2;
    }
  g_string_append (wire, ".\r\n");
  tt_write_message (f, "big", msg->str, (gssize) msg->len);
  write_relay (f, "", servers);
  tt_build (f, NULL);
  d = tt_deliver (f, "relay-sender", "big", "s@example.org", rcpts);
  expect_codes (d, codes);
  messages = tt_server_log (log, "message");
  expect_raw (only_message (messages), wire->str);
  tt_delivery_free (d);
  tt_free (f);
}

/* STARTTLS required: works with a certificate we do not verify; fails (4xx)
 * when the certificate must be trusted, or when STARTTLS is not offered. */
static void
test_starttls (void **state)
{
  TtFixture *f = setup_base (NULL);
  g_autofree char *log = NULL, *log2 = NULL;
  g_autofree char *cert = tt_cert_file (f), *key = tt_key_file (f);
  guint port, port2;
  g_autofree char *servers = NULL;
  const char *rcpts[] = { "a@dest.example", NULL };
  const guint ok[] = { 250 }, temp[] = { 451 };
  g_autoptr (GPtrArray) messages = NULL;
  TtDelivery *d;

  tt_make_cert (f);
  {
    const char *extra[] = { "--cert", cert, "--key", key, "--ext", "PIPELINING", NULL };
    port = tt_start_server (f, "127.0.0.1", extra, &log);
  }
  {
    const char *extra[] = { "--ext", "PIPELINING", NULL };
    port2 = tt_start_server (f, "127.0.0.1", extra, &log2);
  }
  servers = g_strdup_printf ("[relay-server tls]\naddress = 127.0.0.1:%u\nsecurity = starttls\nverify-certificate = false\n"
                             "[relay-server verified]\naddress = 127.0.0.1:%u\nsecurity = starttls\n"
                             "[relay-server plain]\naddress = 127.0.0.1:%u\nsecurity = starttls\n"
                             "[relay-route a]\nrecipients = a@dest.example\nservers = tls\n"
                             "[relay-route b]\nrecipients = b@dest.example\nservers = verified\n"
                             "[relay-route c]\nrecipients = c@dest.example\nservers = plain\n",
                             port, port, port2);
  write_relay (f, "", servers);
  tt_build (f, NULL);

  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, ok);
  tt_delivery_free (d);
  messages = tt_server_log (log, "message");
  assert_true (json_object_get_boolean_member (only_message (messages), "tls"));

  rcpts[0] = "b@dest.example";
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, temp);
  expect_text (d, 0, "TLS handshake with 127.0.0.1[127.0.0.1] failed");
  tt_delivery_free (d);

  rcpts[0] = "c@dest.example";
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, temp);
  assert_string_equal (d->results[0].enhanced, "4.7.4");
  expect_text (d, 0, "TLS is required, but 127.0.0.1[127.0.0.1] does not offer STARTTLS");
  tt_delivery_free (d);
  tt_free (f);
}

/* Implicit TLS (port 465 style), and STARTTLS-if-offered against a server
 * whose TLS is broken: the retry goes in plain text. */
static void
test_implicit_and_broken_tls (void **state)
{
  TtFixture *f = setup_base (NULL);
  g_autofree char *log = NULL, *log2 = NULL;
  g_autofree char *cert = tt_cert_file (f), *key = tt_key_file (f);
  guint port, port2;
  g_autofree char *servers = NULL;
  const char *rcpts[] = { "a@dest.example", NULL };
  const guint ok[] = { 250 };
  g_autoptr (GPtrArray) m1 = NULL;
  g_autoptr (GPtrArray) m2 = NULL;
  TtDelivery *d;

  tt_make_cert (f);
  {
    const char *extra[] = { "--cert", cert, "--key", key, "--implicit-tls", NULL };
    port = tt_start_server (f, "127.0.0.1", extra, &log);
  }
  {
    const char *extra[] = { "--cert", cert, "--key", key, "--bad-tls", NULL };
    port2 = tt_start_server (f, "127.0.0.1", extra, &log2);
  }
  servers = g_strdup_printf ("[relay-server implicit]\naddress = 127.0.0.1:%u\nsecurity = tls\nverify-certificate = false\n"
                             "[relay-server broken]\naddress = 127.0.0.1:%u\nsecurity = starttls-if-offered\n"
                             "[relay-route b]\nrecipients = b@dest.example\nservers = broken\n",
                             port, port2);
  write_relay (f, "", servers);
  tt_build (f, NULL);
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, ok);
  tt_delivery_free (d);
  m1 = tt_server_log (log, "message");
  assert_true (json_object_get_boolean_member (only_message (m1), "tls"));

  rcpts[0] = "b@dest.example";
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, ok);
  tt_delivery_free (d);
  m2 = tt_server_log (log2, "message");
  assert_false (json_object_get_boolean_member (only_message (m2), "tls"));
  tt_free (f);
}

static void
write_credentials (TtFixture *f, const char *text, int mode)
{
  g_autofree char *path = g_build_filename (f->conf, "..", "relay-credentials", NULL);
  g_file_set_contents (path, text, -1, NULL);
  g_chmod (path, mode);
}

/* AUTH PLAIN and LOGIN with credentials from the file (a password with a
 * space); a wrong password defers (4.7.8); no credentials over plain text;
 * a credentials file others could read stops the module from starting. */
static void
test_auth (void **state)
{
  TtFixture *f = setup_base (NULL);
  g_autofree char *log = NULL, *log2 = NULL;
  g_autofree char *cert = tt_cert_file (f), *key = tt_key_file (f);
  guint port, port2;
  g_autofree char *servers = NULL;
  g_autofree char *module = NULL;
  g_autofree char *why = NULL;
  const char *rcpts[] = { "a@dest.example", NULL };
  const guint ok[] = { 250 }, temp[] = { 451 };
  g_autoptr (GPtrArray) m = NULL;
  TtDelivery *d;

  tt_make_cert (f);
  {
    const char *extra[] = { "--cert", cert, "--key", key, "--user", "alice", "--password", "open sesame", NULL };
    port = tt_start_server (f, "127.0.0.1", extra, &log);
  }
  {
    const char *extra[] = { "--user", "alice", "--password", "open sesame", NULL };
    port2 = tt_start_server (f, "127.0.0.1", extra, &log2);
  }
  servers = g_strdup_printf ("[relay-server plain]\naddress = 127.0.0.1:%u\nverify-certificate = false\nauth = plain\n"
                             "[relay-server login]\naddress = 127.0.0.1:%u\nverify-certificate = false\nauth = login\n"
                             "[relay-server wrong]\naddress = 127.0.0.1:%u\nverify-certificate = false\n"
                             "[relay-server cleartext]\naddress = 127.0.0.1:%u\nsecurity = starttls-if-offered\n"
                             "[relay-route b]\nrecipients = b@dest.example\nservers = login\n"
                             "[relay-route c]\nrecipients = c@dest.example\nservers = wrong\n"
                             "[relay-route d]\nrecipients = d@dest.example\nservers = cleartext\n"
                             "[relay-route a]\nservers = plain\n",
                             port, port, port, port2);
  module = g_strdup_printf ("credentials-file = ../relay-credentials\n");
  write_credentials (f, "# test\nplain alice open sesame\nlogin  alice   open sesame\nwrong alice guess\n* alice open sesame\n",
                     0600);
  write_relay (f, module, servers);
  tt_build (f, NULL);

  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, ok);
  tt_delivery_free (d);
  rcpts[0] = "b@dest.example";
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, ok);
  tt_delivery_free (d);
  m = tt_server_log (log, "message");
  assert_int_equal (m->len, 2);
  for (guint i = 0; i < 2; i++)
    {
      JsonObject *o = g_ptr_array_index (m, i);
      assert_string_equal (json_object_get_string_member (o, "auth"), "alice");
      assert_true (json_object_get_boolean_member (o, "tls"));
    }

  rcpts[0] = "c@dest.example";
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, temp);
  assert_string_equal (d->results[0].enhanced, "4.7.8");
  expect_text (d, 0, "authentication as alice failed");
  assert_null (strstr (d->results[0].text, "guess"));
  tt_delivery_free (d);

  rcpts[0] = "d@dest.example";
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, temp);
  expect_text (d, 0, "not sending credentials to 127.0.0.1[127.0.0.1] without TLS");
  tt_delivery_free (d);
  g_clear_pointer (&f->gen, pb_generation_unref);

  /* Readable by others: refused, with the way to fix it. */
  write_credentials (f, "plain alice open sesame\n", 0644);
  assert_null (tt_build (f, &why));
  assert_non_null (strstr (why, "is readable or writable by group or others (mode 0644)"));
  assert_non_null (strstr (why, "chmod 600"));
  assert_null (strstr (why, "sesame"));
  tt_free (f);
}

/* "max-messages-per-session = 2": smtp-sink sees sessions of at most 2 messages. */
static void
test_session_cap (void **state)
{
  TtFixture *f = setup_base (NULL);
  g_autofree char *log = NULL;
  guint port = tt_start_sink (f, "127.0.0.1", 0, NULL, &log);
  g_autofree char *servers = g_strdup_printf ("[relay-server isp]\naddress = 127.0.0.1:%u\nsecurity = none\n"
                                              "max-messages-per-session = 2\nmax-connections = 1\n", port);
  const char *rcpts[] = { "a@dest.example", NULL };
  const guint ok[] = { 250 };
  TtDelivery *d[5];
  g_autoptr (GArray) sessions = NULL;

  write_relay (f, "", servers);
  tt_build (f, NULL);
  for (guint i = 0; i < 5; i++)
    d[i] = tt_deliver_start (f, "relay-sender", "q1", "s@example.org", rcpts, -1, NULL, NULL, NULL, NULL);
  for (guint i = 0; i < 5; i++)
    {
      tt_delivery_wait (d[i], 30000);
      expect_codes (d[i], ok);
      tt_delivery_free (d[i]);
    }
  g_clear_pointer (&f->gen, pb_generation_unref);
  /* The last session ends (and the sink logs it) once the cached connection
   * says QUIT: wait for it, bounded, as a loaded machine can be slow. */
  for (guint i = 0; i < 100; i++)
    {
      pbt_loop_run_for (100);
      g_clear_pointer (&sessions, g_array_unref);
      sessions = tt_sink_sessions (log);
      if (sessions->len >= 3)
        break;
    }
  assert_int_equal (sessions->len, 3);
  assert_int_equal (g_array_index (sessions, guint, 0), 2);
  assert_int_equal (g_array_index (sessions, guint, 1), 2);
  assert_int_equal (g_array_index (sessions, guint, 2), 1);
  tt_free (f);
}

/* Recipients split by max-recipients-per-message and max-recipients-per-session. */
static void
test_split (void **state)
{
  TtFixture *f = setup_base (NULL);
  g_autofree char *log = NULL;
  const char *extra[] = { "--ext", "PIPELINING", NULL };
  guint port = tt_start_server (f, "127.0.0.1", extra, &log);
  g_autofree char *servers = g_strdup_printf ("[relay-server isp]\naddress = 127.0.0.1:%u\nsecurity = none\n"
                                              "max-recipients-per-message = 2\nmax-recipients-per-session = 3\n"
                                              "max-connections = 1\n", port);
  const char *rcpts[] = { "r1@dest.example", "r2@dest.example", "r3@dest.example", "r4@dest.example",
                          "r5@dest.example", NULL };
  const guint ok[] = { 250, 250, 250, 250, 250 };
  g_autoptr (GPtrArray) m = NULL;
  static const guint expect_rcpts[] = { 2, 1, 2 };
  static const guint expect_session[] = { 1, 1, 2 };
  TtDelivery *d;

  write_relay (f, "", servers);
  tt_build (f, NULL);
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, ok);
  tt_delivery_free (d);
  m = tt_server_log (log, "message");
  assert_int_equal (m->len, 3);
  for (guint i = 0; i < 3; i++)
    {
      JsonObject *o = g_ptr_array_index (m, i);
      assert_int_equal (json_array_get_length (json_object_get_array_member (o, "rcpts")), expect_rcpts[i]);
      assert_int_equal (json_object_get_int_member (o, "session"), expect_session[i]);
    }
  tt_free (f);
}

/* "3 messages per 2s": the fourth and fifth are deferred with a 4xx saying
 * when; they go once the window moved; the count survives a restart. */
static void
test_periodic_cap (void **state)
{
  TtFixture *f = setup_base (NULL);
  g_autofree char *log = NULL;
  guint port = tt_start_sink (f, "127.0.0.1", 0, NULL, &log);
  g_autofree char *servers = g_strdup_printf ("[relay-server isp]\naddress = 127.0.0.1:%u\nsecurity = none\n"
                                              "limits = 3 messages per 2s, 100 recipients per day\n", port);
  const char *rcpts[] = { "a@dest.example", NULL };
  const guint ok[] = { 250 }, held[] = { 451 };
  gint64 first = 0, retried;
  g_autofree char *caps = g_build_filename (f->state, "relay-sender", "caps", NULL);
  g_autofree char *text = NULL;

  write_relay (f, "", servers);
  tt_build (f, NULL);
  for (guint i = 0; i < 5; i++)
    {
      TtDelivery *d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
      if (i == 0)
        first = g_get_monotonic_time ();
      if (i < 3)
        expect_codes (d, ok);
      else
        {
          expect_codes (d, held);
          assert_string_equal (d->results[0].enhanced, "4.4.5");
          expect_text (d, 0, "relay isp: limit of 3 messages per 2s reached; next one allowed at");
        }
      tt_delivery_free (d);
    }
  assert_true (tt_sink_wait_messages (log, 3, 5000));
  {
    const char *args[] = { "limits", NULL };
    g_autofree char *out = run_command (f, args);
    assert_non_null (strstr (out, "isp: 3 used of 3 messages per 2s\nisp: 3 used of 100 recipients per 1d\n"
                                  "isp: full; next message allowed in"));
    assert_non_null (strstr (out, "\nevery relay server is full: the next message may go in"));
  }
  g_file_get_contents (caps, &text, NULL, NULL);
  {
    g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
    assert_int_equal (g_strv_length (lines), 4);  /* three lines and the empty rest */
  }

  /* A restart within the window: still full. */
  tt_build (f, NULL);
  {
    TtDelivery *d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
    expect_codes (d, held);
    tt_delivery_free (d);
  }
  /* Retry until it goes, as the queue manager would. */
  for (;;)
    {
      TtDelivery *d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
      gboolean sent = d->results[0].code == 250;
      tt_delivery_free (d);
      if (sent)
        break;
      assert_true (g_get_monotonic_time () - first < 10 * G_USEC_PER_SEC);
      pbt_loop_run_for (100);
    }
  retried = g_get_monotonic_time ();
  assert_true (retried - first >= 1900 * 1000);
  assert_true (tt_sink_wait_messages (log, 4, 5000));
  tt_free (f);
}

/* Servers are tried in order: the first is down, the second takes the mail;
 * with all of them down, a 4xx names the failure. */
static void
test_fallback (void **state)
{
  TtFixture *f = setup_base (NULL);
  g_autofree char *log = NULL;
  guint port = tt_start_sink (f, "127.0.0.1", 0, NULL, &log);
  guint dead = tt_dead_port ("127.0.0.1");
  g_autofree char *servers = g_strdup_printf ("[relay-server down]\naddress = 127.0.0.1:%u\nsecurity = none\n"
                                              "[relay-server up]\naddress = localhost:%u\nsecurity = none\n"
                                              "[relay-route only-down]\nrecipients = x@dead.example\nservers = down\n",
                                              dead, port);
  const char *rcpts[] = { "a@dest.example", NULL };
  const guint ok[] = { 250 }, temp[] = { 451 };
  TtDelivery *d;

  write_relay (f, "", servers);
  tt_build (f, NULL);
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, ok);
  expect_text (d, 0, "localhost[127.0.0.1] said: 250");
  tt_delivery_free (d);

  rcpts[0] = "x@dead.example";
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, temp);
  assert_string_equal (d->results[0].enhanced, "4.4.1");
  {
    g_autofree char *needle = g_strdup_printf ("connection to 127.0.0.1:%u failed: Connection refused", dead);
    expect_text (d, 0, needle);
  }
  tt_delivery_free (d);
  tt_free (f);
}

/* Routing rules decide what the relay carries (accepts) and through which server. */
static void
test_routes (void **state)
{
  TtFixture *f = setup_base (NULL);
  g_autofree char *log1 = NULL, *log2 = NULL;
  guint p1 = tt_start_server (f, "127.0.0.1", NULL, &log1);
  guint p2 = tt_start_server (f, "127.0.0.1", NULL, &log2);
  g_autofree char *servers = g_strdup_printf ("[relay-server main]\naddress = 127.0.0.1:%u\nsecurity = none\n"
                                              "[relay-server partner]\naddress = 127.0.0.1:%u\nsecurity = none\n"
                                              "[relay-route partner]\nrecipients = partner.example\nservers = partner\n"
                                              "[relay-route internal]\nrecipients = *.internal.example\naction = pass\n"
                                              "[relay-route sales]\nsenders = sales@example.org\nrecipients = !*.gov\n",
                                              p1, p2);
  const char *rcpts[] = { "x@partner.example", "y@partner.example", NULL };
  const guint ok[] = { 250, 250 };
  g_autoptr (GPtrArray) m1 = NULL;
  g_autoptr (GPtrArray) m2 = NULL;
  TtDelivery *d;

  write_relay (f, "accept-unmatched = false\n", servers);
  tt_build (f, NULL);
  assert_true (tt_accepts (f, "relay-sender", "bob@example.org", "x@partner.example"));
  assert_false (tt_accepts (f, "relay-sender", "bob@example.org", "x@a.internal.example"));
  assert_true (tt_accepts (f, "relay-sender", "sales@example.org", "x@elsewhere.example"));
  assert_true (tt_accepts (f, "relay-sender", "prvs=1234567890=sales@example.org", "x@elsewhere.example"));
  assert_false (tt_accepts (f, "relay-sender", "sales@example.org", "x@agency.gov"));
  assert_false (tt_accepts (f, "relay-sender", "bob@example.org", "x@elsewhere.example"));

  {
    const char *a1[] = { "route", "bob@example.org", "x@partner.example", NULL };
    const char *a2[] = { "route", "<>", "x@elsewhere.example", NULL };
    const char *a3[] = { "route", "sales@example.org", "x@elsewhere.example", NULL };
    g_autofree char *o1 = run_command (f, a1);
    g_autofree char *o2 = run_command (f, a2);
    g_autofree char *o3 = run_command (f, a3);
    assert_string_equal (o1, "route partner: relay-sender carries it through partner");
    assert_string_equal (o2, "no route matches: passed to the next sender");
    assert_string_equal (o3, "route sales: relay-sender carries it through main, partner");
  }
  d = tt_deliver (f, "relay-sender", "q1", "bob@example.org", rcpts);
  expect_codes (d, ok);
  tt_delivery_free (d);
  rcpts[0] = "z@elsewhere.example";
  rcpts[1] = NULL;
  d = tt_deliver (f, "relay-sender", "q1", "sales@example.org", rcpts);
  expect_codes (d, ok);
  tt_delivery_free (d);
  m1 = tt_server_log (log1, "message");
  m2 = tt_server_log (log2, "message");
  assert_int_equal (m1->len, 1);
  assert_int_equal (m2->len, 1);
  assert_int_equal (json_array_get_length (json_object_get_array_member (g_ptr_array_index (m2, 0), "rcpts")), 2);
  tt_free (f);
}

/* Unpleasant peers: a SIZE limit (552 without sending), a greeting refusal
 * (temporary), a server that never answers the final "." (timeout), a 421
 * at MAIL, a message missing from storage. */
static void
test_refusals (void **state)
{
  TtFixture *f = setup_base (NULL);
  g_autofree char *l1 = NULL, *l2 = NULL, *l3 = NULL, *l4 = NULL;
  const char *e1[] = { "--ext", "SIZE 40", NULL };
  const char *e2[] = { "--greeting", "554 5.7.1 go away", NULL };
  const char *e3[] = { "--stall", "dot", NULL };
  const char *e4[] = { "--mail-reply", "421 4.3.2 shutting down", NULL };
  guint p1 = tt_start_server (f, "127.0.0.1", e1, &l1);
  guint p2 = tt_start_server (f, "127.0.0.1", e2, &l2);
  guint p3 = tt_start_server (f, "127.0.0.1", e3, &l3);
  guint p4 = tt_start_server (f, "127.0.0.1", e4, &l4);
  g_autofree char *servers = g_strdup_printf (
    "[relay-server size]\naddress = 127.0.0.1:%u\nsecurity = none\n"
    "[relay-server greet]\naddress = 127.0.0.1:%u\nsecurity = none\n"
    "[relay-server stall]\naddress = 127.0.0.1:%u\nsecurity = none\n"
    "[relay-server closing]\naddress = 127.0.0.1:%u\nsecurity = none\n"
    "[relay-route size]\nrecipients = size@dest.example\nservers = size\n"
    "[relay-route greet]\nrecipients = greet@dest.example\nservers = greet\n"
    "[relay-route stall]\nrecipients = stall@dest.example\nservers = stall\n"
    "[relay-route closing]\nrecipients = closing@dest.example\nservers = closing\n",
    p1, p2, p3, p4);
  const char *rcpts[] = { "size@dest.example", NULL };
  const guint perm[] = { 552 }, temp[] = { 451 }, closing[] = { 421 };
  g_autoptr (GPtrArray) m = NULL;
  TtDelivery *d;

  write_relay (f, "data-done-timeout = 500ms\n", servers);
  tt_build (f, NULL);
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, perm);
  assert_string_equal (d->results[0].enhanced, "5.3.4");
  expect_text (d, 0, "exceeds 127.0.0.1[127.0.0.1]'s size limit of 40");
  tt_delivery_free (d);
  m = tt_server_log (l1, "message");
  assert_int_equal (m->len, 0);

  rcpts[0] = "greet@dest.example";
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, temp);
  assert_string_equal (d->results[0].enhanced, "4.7.1");
  expect_text (d, 0, "said: 554 5.7.1 go away (in reply to greeting)");
  tt_delivery_free (d);

  rcpts[0] = "stall@dest.example";
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, temp);
  expect_text (d, 0, "timeout after 1 s waiting for 127.0.0.1[127.0.0.1]'s reply to end of data");
  tt_delivery_free (d);

  rcpts[0] = "closing@dest.example";
  d = tt_deliver (f, "relay-sender", "q1", "s@example.org", rcpts);
  expect_codes (d, closing);
  expect_text (d, 0, "said: 421 4.3.2 shutting down (in reply to MAIL FROM)");
  tt_delivery_free (d);

  rcpts[0] = "size@dest.example";
  d = tt_deliver_start (f, "relay-sender", "missing", "s@example.org", rcpts, 10, NULL, NULL, NULL, NULL);
  tt_delivery_wait (d, 30000);
  expect_codes (d, temp);
  expect_text (d, 0, "cannot read message missing");
  tt_delivery_free (d);
  tt_free (f);
}

typedef struct {
  gboolean done;
  char *queue_id;
} Committed;

static void
on_committed (const char *queue_id, const GError *error, gpointer data)
{
  Committed *c = data;
  if (error != NULL)
    fail_msg ("commit failed: %s", error->message);
  c->queue_id = g_strdup (queue_id);
  c->done = TRUE;
}

/* The body as the embedded storage (storage-sqlite) gives it back: a message
 * stored through the storage ABI goes out byte for byte, dot-stuffed. */
static void
test_sqlite_body (void **state)
{
  g_autofree char *so = g_build_filename (TOP_BUILDDIR, "modules", ".libs", "storage-sqlite.so", NULL);
  TtFixture *f;
  g_autofree char *log = NULL;
  guint port;
  g_autofree char *servers = NULL;
  g_autoptr (GString) msg = g_string_new ("From: a@example.org\r\nSubject: sqlite\r\n\r\n");
  g_autoptr (GString) wire = g_string_new (NULL);
  PbRecipient r = { sizeof r, "a@dest.example", NULL, NULL, NULL, NULL };
  const PbRecipient *rl[] = { &r, NULL };
  PbEnvelope env = { sizeof env, "s@example.org", rl, NULL, "127.0.0.1", NULL, NULL, NULL, 0 };
  const char *rcpts[] = { "a@dest.example", NULL };
  Committed c = { 0 };
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) m = NULL;
  PbStoreMessage *sm;
  TtDelivery *d;

  if (!g_file_test (so, G_FILE_TEST_EXISTS))
    skip ();
  f = tt_new ();
  port = tt_start_server (f, "127.0.0.1", NULL, &log);
  servers = g_strdup_printf ("[relay-server isp]\naddress = 127.0.0.1:%u\nsecurity = none\n", port);
  for (guint i = 0; i < 20000; i++)
    g_string_append_printf (msg, "%sline %u\r\n", i % 7 == 0 ? "." : "", i);
  for (const char *p = msg->str; *p != '\0';)
    {
      const char *eol = strstr (p, "\r\n");
      if (*p == '.')
        g_string_append_c (wire, '.');
      g_string_append_len (wire, p, eol + 2 - p);
      p = eol + 2;
    }
  g_string_append (wire, ".\r\n");
  tt_write_base (f, NULL, NULL);
  tt_write_conf (f, "10-store.conf", "[module storage-sqlite]\n");
  write_relay (f, "", servers);
  tt_build (f, NULL);

  sm = pb_store_message_begin (pb_generation_find_module (f->gen, "relay-sender"), &env, &error);
  if (sm == NULL)
    fail_msg ("begin: %s", error->message);
  for (gsize off = 0; off < msg->len; off += 1000)
    assert_true (pb_store_message_write (sm, msg->str + off, MIN (1000, msg->len - off), NULL));
  pb_store_message_commit (sm, on_committed, &c);
  assert_true (pbt_loop_until (&c.done, 15000));

  d = tt_deliver_start (f, "relay-sender", c.queue_id, "s@example.org", rcpts, (gint64) msg->len, NULL, NULL, NULL,
                        NULL);
  tt_delivery_wait (d, 30000);
  assert_int_equal (d->results[0].code, 250);
  tt_delivery_free (d);
  m = tt_server_log (log, "message");
  expect_raw (only_message (m), wire->str);
  g_free (c.queue_id);
  tt_free (f);
}

/* Configuration mistakes are refused with the section and the reason. */
static void
test_config_errors (void **state)
{
  static const struct { const char *conf; const char *why; } cases[] = {
    { "[module relay-sender]\n", "no relay server" },
    { "[module relay-sender]\n[relay-server a]\naddress = *:25\n", "does not name a host" },
    { "[module relay-sender]\n[relay-server a]\naddress = h.example:25\nlimits = 50 per hour\n",
      "limits: '50 per hour'" },
    { "[module relay-sender]\n[relay-server a]\naddress = h.example:25\nauth = plain\n",
      "auth = plain needs an entry for a" },
    { "[module relay-sender]\n[relay-server a]\naddress = h.example:25\n[relay-route r]\nservers = b\n",
      "[relay-route r] servers: no [relay-server b]" },
    { "[module relay-sender]\n[relay-server a]\naddress = h.example:25\n[relay-route r]\naction = pass\nservers = a\n",
      "a route with action = pass" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      TtFixture *f = setup_base (NULL);
      g_autofree char *why = NULL;
      tt_write_conf (f, "50-relay.conf", cases[i].conf);
      if (tt_build (f, &why) != NULL)
        fail_msg ("case %u accepted", i);
      if (strstr (why, cases[i].why) == NULL)
        fail_msg ("case %u: '%s'", i, why);
      tt_free (f);
    }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_sink_basic),
    cmocka_unit_test (test_per_recipient),
    cmocka_unit_test (test_plain_smtp),
    cmocka_unit_test (test_big_message),
    cmocka_unit_test (test_starttls),
    cmocka_unit_test (test_implicit_and_broken_tls),
    cmocka_unit_test (test_auth),
    cmocka_unit_test (test_session_cap),
    cmocka_unit_test (test_split),
    cmocka_unit_test (test_periodic_cap),
    cmocka_unit_test (test_fallback),
    cmocka_unit_test (test_routes),
    cmocka_unit_test (test_refusals),
    cmocka_unit_test (test_config_errors),
    cmocka_unit_test (test_sqlite_body),
  };
  lt_dlinit ();
  return cmocka_run_group_tests (tests, NULL, NULL);
}
