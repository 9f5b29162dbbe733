/* SPDX-License-Identifier: MIT */
/* Integration tests of mx-sender: a real DNS server, smtp-sink on 127.0.0.2 and 127.0.0.3, a scripted server. */
#include "config.h"
#include "test-transport.h"

#include <string.h>

static const char body[] = "From: a@example.org\r\nSubject: mx\r\n\r\nhello\r\n";

/* Names under example.com: libunbound answers .test itself (RFC 6761). */
static const char zone[] =
  "$ORIGIN example.com.\n"
  "$TTL 300\n"
  "fb       IN MX 10 mx1.example.com.\n"
  "fb       IN MX 20 mx2.example.com.\n"
  "mx1      IN A 127.0.0.2\n"
  "mx2      IN A 127.0.0.3\n"
  "mx4      IN A 127.0.0.4\n"
  "nullmx   IN MX 0 .\n"
  "amx      IN A 127.0.0.2\n"
  "txtonly  IN TXT \"no mail here\"\n"
  "reuse    IN MX 10 mx2.example.com.\n"
  "tls      IN MX 10 mx4.example.com.\n"
  "loop     IN MX 10 pillarbox.test.example.\n"
  "loop     IN MX 20 mx2.example.com.\n"
  "noaddr   IN MX 10 nothing.example.com.\n"
  "v6only   IN AAAA ::1\n";

typedef struct {
  TtFixture *f;
  guint port;     /* the MX port on every address */
} Mx;

/* The fixture: DNS up, the base configuration, mx-sender on PORT (0: pick one free on .2 and .3). */
static Mx *
mx_setup (const char *module_extra)
{
  Mx *mx = g_new0 (Mx, 1);
  guint dns;
  g_autofree char *core = NULL;
  g_autofree char *conf = NULL;

  mx->f = tt_new ();
  dns = tt_start_dns (mx->f, zone);
  mx->port = tt_dead_port ("127.0.0.3");
  core = g_strdup_printf ("dns-servers = 127.0.0.1:%u\n", dns);
  tt_write_base (mx->f, core, NULL);
  tt_write_message (mx->f, "q1", body, -1);
  conf = g_strdup_printf ("[module mx-sender]\nport = %u\nconnect-timeout = 2s\n%s%s\n", mx->port,
                          module_extra != NULL && strstr (module_extra, "reuse-time") != NULL ? "" : "reuse-time = 300ms\n",
                          module_extra != NULL ? module_extra : "");
  tt_write_conf (mx->f, "51-mx.conf", conf);
  return mx;
}

static void
mx_free (Mx *mx)
{
  tt_free (mx->f);
  g_free (mx);
}

static TtDelivery *
deliver_to (Mx *mx, const char *rcpt)
{
  const char *rcpts[] = { rcpt, NULL };
  return tt_deliver (mx->f, "mx-sender", "q1", "sender@example.org", rcpts);
}

static void
expect (TtDelivery *d, guint code, const char *enhanced, const char *needle)
{
  if (d->results[0].code != code || g_strcmp0 (d->results[0].enhanced, enhanced) != 0
      || (needle != NULL && (d->results[0].text == NULL || strstr (d->results[0].text, needle) == NULL)))
    fail_msg ("got %u %s %s; expected %u %s ...%s...", d->results[0].code,
              d->results[0].enhanced != NULL ? d->results[0].enhanced : "",
              d->results[0].text != NULL ? d->results[0].text : "", code, enhanced, needle != NULL ? needle : "");
}

/* The first MX refuses the connection: the second takes the mail; the
 * next message skips the dead host at once. */
static void
test_fallback_refused (void **state)
{
  Mx *mx = mx_setup (NULL);
  g_autofree char *log = NULL;
  TtDelivery *d;

  tt_start_sink (mx->f, "127.0.0.3", mx->port, NULL, &log);
  tt_build (mx->f, NULL);
  d = deliver_to (mx, "a@fb.example.com");
  expect (d, 250, "2.0.0", "mx2.example.com[127.0.0.3] said: 250");
  tt_delivery_free (d);
  d = deliver_to (mx, "b@fb.example.com");
  expect (d, 250, "2.0.0", "mx2.example.com[127.0.0.3]");
  tt_delivery_free (d);
  /* Recipients of several domains in one delivery: each domain on its own. */
  {
    const char *rcpts[] = { "c@fb.example.com", "d@nullmx.example.com", "e@FB.example.com.", NULL };
    d = tt_deliver (mx->f, "mx-sender", "q1", "sender@example.org", rcpts);
    assert_int_equal (d->results[0].code, 250);
    assert_int_equal (d->results[1].code, 556);
    assert_int_equal (d->results[2].code, 250);
    tt_delivery_free (d);
  }
  assert_true (tt_sink_wait_messages (log, 3, 5000));
  mx_free (mx);
}

/* The first MX greets 421, then one answers 5xx at connect: the second takes the mail. */
static void
test_fallback_greeting (void **state)
{
  static const char *const refusals[] = { "-Q", "-f" };

  for (guint i = 0; i < G_N_ELEMENTS (refusals); i++)
    {
      Mx *mx = mx_setup (NULL);
      g_autofree char *log1 = NULL, *log2 = NULL;
      const char *extra[] = { refusals[i], "CONNECT", NULL };
      TtDelivery *d;

      tt_start_sink (mx->f, "127.0.0.2", mx->port, extra, &log1);
      tt_start_sink (mx->f, "127.0.0.3", mx->port, NULL, &log2);
      tt_build (mx->f, NULL);
      d = deliver_to (mx, "a@fb.example.com");
      expect (d, 250, "2.0.0", "mx2.example.com[127.0.0.3] said: 250");
      tt_delivery_free (d);
      mx_free (mx);
    }
}

/* A 4xx to RCPT from the first MX: the recipient is tried at the second. */
static void
test_fallback_rcpt (void **state)
{
  Mx *mx = mx_setup (NULL);
  g_autofree char *log1 = NULL, *log2 = NULL;
  g_autofree char *port = NULL;
  const char *extra[] = { "--port", NULL, "--rcpt", "@=450 4.2.1 mailbox busy", NULL };
  g_autoptr (GPtrArray) m = NULL;
  TtDelivery *d;

  port = g_strdup_printf ("%u", mx->port);
  extra[1] = port;
  tt_start_server (mx->f, "127.0.0.2", extra, &log1);
  tt_start_sink (mx->f, "127.0.0.3", mx->port, NULL, &log2);
  tt_build (mx->f, NULL);
  d = deliver_to (mx, "a@fb.example.com");
  expect (d, 250, "2.0.0", "mx2.example.com[127.0.0.3]");
  tt_delivery_free (d);
  /* With the second MX down too, the 4xx of the first is what remains. */
  mx_free (mx);

  mx = mx_setup (NULL);
  port = (g_free (port), g_strdup_printf ("%u", mx->port));
  extra[1] = port;
  g_clear_pointer (&log1, g_free);
  tt_start_server (mx->f, "127.0.0.2", extra, &log1);
  tt_build (mx->f, NULL);
  d = deliver_to (mx, "a@fb.example.com");
  expect (d, 451, "4.4.1", "connection to mx2.example.com[127.0.0.3]");
  tt_delivery_free (d);
  m = tt_server_log (log1, "connect");
  assert_int_equal (m->len, 1);
  mx_free (mx);
}

/* RFC 7505: a null MX bounces at once; NXDOMAIN bounces; SERVFAIL defers;
 * no MX and no address bounces; MX hosts without address defer; this
 * server as best MX bounces. */
static void
test_dns_outcomes (void **state)
{
  static const struct { const char *rcpt; guint code; const char *enhanced; const char *needle; } cases[] = {
    { "a@nullmx.example.com", 556, "5.1.10", "accepts no mail (null MX, RFC 7505)" },
    { "a@nothing.example.com", 550, "5.1.2", "the domain nothing.example.com does not exist" },
    { "a@x.servfail.example.com", 451, "4.4.3", "DNS lookup of the MX of x.servfail.example.com failed" },
    { "a@txtonly.example.com", 550, "5.4.4", "has no MX record and no address" },
    { "a@noaddr.example.com", 451, "4.4.4", "no MX host of noaddr.example.com has an address" },
    { "a@loop.example.com", 554, "5.4.6", "loops back to myself" },
  };
  Mx *mx = mx_setup (NULL);

  tt_build (mx->f, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      TtDelivery *d = deliver_to (mx, cases[i].rcpt);
      if (d->results[0].code != cases[i].code || g_strcmp0 (d->results[0].enhanced, cases[i].enhanced) != 0
          || strstr (d->results[0].text, cases[i].needle) == NULL)
        fail_msg ("case %u (%s): %u %s %s", i, cases[i].rcpt, d->results[0].code, d->results[0].enhanced,
                  d->results[0].text);
      tt_delivery_free (d);
    }
  mx_free (mx);
}

/* No MX: the domain's A record (RFC 5321 §5.1); and an address literal. */
static void
test_implicit_mx_and_literal (void **state)
{
  Mx *mx = mx_setup (NULL);
  g_autofree char *log = NULL;
  TtDelivery *d;

  tt_start_sink (mx->f, "127.0.0.2", mx->port, NULL, &log);
  tt_build (mx->f, NULL);
  d = deliver_to (mx, "a@amx.example.com");
  expect (d, 250, "2.0.0", "amx.example.com[127.0.0.2] said: 250");
  tt_delivery_free (d);
  d = deliver_to (mx, "a@[127.0.0.2]");
  /* The session opened for amx.example.com serves the literal too: same address. */
  expect (d, 250, "2.0.0", "[127.0.0.2] said: 250");
  tt_delivery_free (d);
  assert_true (tt_sink_wait_messages (log, 2, 5000));
  mx_free (mx);
}

/* No MX and only an AAAA record: delivered over IPv6. */
static void
test_implicit_mx_aaaa (void **state)
{
  Mx *mx = mx_setup (NULL);
  g_autofree char *log = NULL;
  g_autofree char *port = g_strdup_printf ("%u", mx->port);
  const char *extra[] = { "--port", port, NULL };
  g_autoptr (GPtrArray) m = NULL;
  TtDelivery *d;

  tt_start_server (mx->f, "::1", extra, &log);
  tt_build (mx->f, NULL);
  d = deliver_to (mx, "a@v6only.example.com");
  expect (d, 250, "2.0.0", "v6only.example.com[::1] said: 250");
  tt_delivery_free (d);
  m = tt_server_log (log, "message");
  assert_int_equal (m->len, 1);
  mx_free (mx);
}

/* Several messages to one destination go over one connection. */
static void
test_reuse (void **state)
{
  Mx *mx = mx_setup ("reuse-time = 5s\n");
  g_autofree char *log = NULL;
  g_autoptr (GArray) sessions = NULL;

  tt_start_sink (mx->f, "127.0.0.3", mx->port, NULL, &log);
  tt_build (mx->f, NULL);
  for (guint i = 0; i < 3; i++)
    {
      TtDelivery *d = deliver_to (mx, i == 2 ? "c@fb.example.com" : "a@reuse.example.com");
      expect (d, 250, "2.0.0", NULL);
      tt_delivery_free (d);
    }
  g_clear_pointer (&mx->f->gen, pb_generation_unref);
  pbt_loop_run_for (300);
  sessions = tt_sink_sessions (log);
  /* reuse.example.com and fb.example.com share mx2's address: one session. */
  assert_int_equal (sessions->len, 1);
  assert_int_equal (g_array_index (sessions, guint, 0), 3);
  mx_free (mx);
}

/* [mx-override DOMAIN] sends a domain elsewhere without asking DNS. */
static void
test_override (void **state)
{
  Mx *mx;
  g_autofree char *log = NULL;
  g_autofree char *extra = NULL;
  guint port = tt_dead_port ("127.0.0.3");
  TtDelivery *d;

  extra = g_strdup_printf ("[mx-override Over.Example.COM]\nhosts = 127.0.0.2:%u, 127.0.0.3:%u\n",
                           tt_dead_port ("127.0.0.2"), port);
  mx = mx_setup (extra);
  tt_start_sink (mx->f, "127.0.0.3", port, NULL, &log);
  tt_build (mx->f, NULL);
  d = deliver_to (mx, "a@over.example.com");
  expect (d, 250, "2.0.0", "127.0.0.3[127.0.0.3] said: 250");
  tt_delivery_free (d);
  mx_free (mx);
}

/* Opportunistic STARTTLS: used when offered; a broken TLS falls back to plain text. */
static void
test_opportunistic_tls (void **state)
{
  for (guint broken = 0; broken < 2; broken++)
    {
      Mx *mx = mx_setup (NULL);
      g_autofree char *log = NULL;
      g_autofree char *cert = tt_cert_file (mx->f), *key = tt_key_file (mx->f);
      g_autofree char *port = g_strdup_printf ("%u", mx->port);
      const char *extra[] = { "--port", port, "--cert", cert, "--key", key, "--ext", "PIPELINING",
                              broken ? "--bad-tls" : NULL, NULL };
      g_autoptr (GPtrArray) m = NULL;
      TtDelivery *d;

      tt_make_cert (mx->f);
      tt_start_server (mx->f, "127.0.0.4", extra, &log);
      tt_build (mx->f, NULL);
      d = deliver_to (mx, "a@tls.example.com");
      expect (d, 250, "2.0.0", "mx4.example.com[127.0.0.4] said: 250");
      tt_delivery_free (d);
      m = tt_server_log (log, "message");
      assert_int_equal (m->len, 1);
      assert_true (json_object_get_boolean_member (g_ptr_array_index (m, 0), "tls") == !broken);
      mx_free (mx);
    }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_fallback_refused),
    cmocka_unit_test (test_fallback_greeting),
    cmocka_unit_test (test_fallback_rcpt),
    cmocka_unit_test (test_dns_outcomes),
    cmocka_unit_test (test_implicit_mx_and_literal),
    cmocka_unit_test (test_implicit_mx_aaaa),
    cmocka_unit_test (test_reuse),
    cmocka_unit_test (test_override),
    cmocka_unit_test (test_opportunistic_tls),
  };
  lt_dlinit ();
  return cmocka_run_group_tests (tests, NULL, NULL);
}
