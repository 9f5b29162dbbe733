/* SPDX-License-Identifier: MIT */
/* Unit tests of the asynchronous resolver against a real DNS server on a loopback port. */
#include "config.h"
#include "test-help.h"
#include "core-private.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char zone[] =
  "$ORIGIN example.org.\n"
  "$TTL 300\n"
  "@        IN MX 20 mx2.example.org.\n"
  "@        IN MX 10 MX1.example.org.\n"
  "@        IN TXT \"v=spf1 \" \"ip4:192.0.2.0/24 -all\"\n"
  "@        IN TXT \"other\"\n"
  "mx1      IN A 192.0.2.10\n"
  "mx1      IN AAAA 2001:db8::10\n"
  "alias    IN CNAME mx1.example.org.\n"
  "loop     IN A 127.0.0.1\n"
  "loop     IN AAAA ::1\n"
  /* Not under 192.0.2.0/24: libunbound answers reverse lookups of reserved
   * ranges itself (RFC 6303 local zones). */
  "4.3.2.1.in-addr.arpa. IN PTR mx1.example.org.\n"
  /* Names are any octets on the wire: CR LF, ESC, DEL, a space, a backslash. */
  "evil     IN MX 10 mx\\013\\010bcc.example.org.\n"
  "evil     IN MX 20 a\\027[2J.b\\092c.example.org.\n"
  "5.3.2.1.in-addr.arpa. IN PTR x\\127\\032y.example.org.\n";

typedef struct {
  char *dir;
  GPid pid;
  int stdin_fd;
  guint port;
  PbResolver *resolver;
} Fixture;

static int
setup (void **state)
{
  Fixture *f = g_new0 (Fixture, 1);
  g_autofree char *zonefile = NULL;
  g_autofree char *script = g_build_filename (TOP_SRCDIR, "tests", "dns-server.py", NULL);
  g_autoptr (GError) error = NULL;
  int out_fd;
  char buf[64] = { 0 };
  gsize n = 0;

  pbt_log_capture ();
  f->dir = pbt_mkdtemp ();
  pbt_write_file (f->dir, "zone", zone);
  zonefile = g_build_filename (f->dir, "zone", NULL);
  {
    const char *argv[] = { "/usr/bin/python3", script, zonefile, NULL };
    if (!g_spawn_async_with_pipes (NULL, (char **) argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &f->pid,
                                   &f->stdin_fd, &out_fd, NULL, &error))
      fail_msg ("cannot start the DNS server: %s", error->message);
  }
  /* "PORT n\n", bounded by the server's own start-up. */
  while (n < sizeof buf - 1 && strchr (buf, '\n') == NULL)
    {
      ssize_t r = read (out_fd, buf + n, sizeof buf - 1 - n);
      if (r <= 0)
        fail_msg ("the DNS server did not start (is python3-dnslib installed?)");
      n += (gsize) r;
    }
  close (out_fd);
  assert_int_equal (sscanf (buf, "PORT %u", &f->port), 1);
  {
    g_autofree char *servers = g_strdup_printf ("127.0.0.1:%u", f->port);
    f->resolver = pb_resolver_new (servers, &error);
    assert_non_null (f->resolver);
  }
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  Fixture *f = *state;
  pb_resolver_unref (f->resolver);
  close (f->stdin_fd);  /* the server exits when its stdin closes */
  g_spawn_close_pid (f->pid);
  pbt_rmtree (f->dir);
  g_free (f->dir);
  pbt_log_check_empty ();
  g_free (f);
  return 0;
}

typedef struct {
  gboolean done;
  gboolean inside;
  PbDnsStatus status;
  char **records;
} Result;

static void
on_answer (const PbDnsAnswer *answer, gpointer data)
{
  Result *r = data;
  assert_false (r->done);
  r->done = TRUE;
  r->status = answer->status;
  r->records = g_strdupv ((char **) answer->records);
}

static gint
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static void
test_lookups (void **state)
{
  Fixture *f = *state;
  static const struct {
    const char *name;
    guint type;
    PbDnsStatus status;
    const char *records;   /* sorted, joined by '|' */
  } cases[] = {
    { "example.org", PB_DNS_MX, PB_DNS_OK, "10 mx1.example.org|20 mx2.example.org" },
    { "Example.ORG", PB_DNS_TXT, PB_DNS_OK, "other|v=spf1 ip4:192.0.2.0/24 -all" },
    { "mx1.example.org", PB_DNS_A, PB_DNS_OK, "192.0.2.10" },
    { "mx1.example.org", PB_DNS_AAAA, PB_DNS_OK, "2001:db8::10" },
    { "4.3.2.1.in-addr.arpa", PB_DNS_PTR, PB_DNS_OK, "mx1.example.org" },
    { "alias.example.org", PB_DNS_A, PB_DNS_OK, "192.0.2.10" },
    { "nothing.example.org", PB_DNS_A, PB_DNS_NXDOMAIN, "" },
    { "mx1.example.org", PB_DNS_MX, PB_DNS_NODATA, "" },
    { "x.servfail.example.org", PB_DNS_A, PB_DNS_TEMPFAIL, "" },
    { "bad name", PB_DNS_A, PB_DNS_PERMFAIL, "" },
    /* RFC 1035 §5.1's escapes: a name's text never holds a control octet
     * or a blank, and a backslash in it starts an escape. */
    { "evil.example.org", PB_DNS_MX, PB_DNS_OK, "10 mx\\013\\010bcc.example.org|20 a\\027[2j.b\\\\c.example.org" },
    { "5.3.2.1.in-addr.arpa", PB_DNS_PTR, PB_DNS_OK, "x\\127\\032y.example.org" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      Result r = { 0 };
      g_autofree char *joined = NULL;

      pb_resolver_lookup (f->resolver, cases[i].name, cases[i].type, NULL, on_answer, &r);
      assert_false (r.done);  /* never answered from inside the call */
      if (!pbt_loop_until (&r.done, 15000))
        fail_msg ("case %u (%s): no answer", i, cases[i].name);
      if (r.status != cases[i].status)
        fail_msg ("case %u (%s): status %d, expected %d", i, cases[i].name, r.status, cases[i].status);
      qsort (r.records, g_strv_length (r.records), sizeof (char *), compare_strings);
      joined = g_strjoinv ("|", r.records);
      if (strcmp (joined, cases[i].records) != 0)
        fail_msg ("case %u (%s): records '%s', expected '%s'", i, cases[i].name, joined, cases[i].records);
      g_strfreev (r.records);
    }
}

static void
test_cancel (void **state)
{
  Fixture *f = *state;
  Result r = { 0 }, other = { 0 };
  g_autoptr (GCancellable) c = g_cancellable_new ();

  /* A lookup the server never answers, cancelled: done is not called, nothing leaks. */
  pb_resolver_lookup (f->resolver, "a.timeout.example.org", PB_DNS_A, c, on_answer, &r);
  pb_resolver_lookup (f->resolver, "mx1.example.org", PB_DNS_A, NULL, on_answer, &other);
  g_cancellable_cancel (c);
  assert_true (pbt_loop_until (&other.done, 15000));
  pbt_loop_run_for (100);
  assert_false (r.done);
  g_strfreev (other.records);
}

/* A plugin may pass a policy request's cancellable after the client left:
 * cancelled before the call. The lookup is not started; done still runs
 * once, later, from the loop, with a temporary failure that says why. */
static void
test_already_cancelled (void **state)
{
  Fixture *f = *state;
  static const char *const names[] = { "mx1.example.org", "bad name" };

  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    {
      Result r = { 0 };
      g_autoptr (GCancellable) c = g_cancellable_new ();

      g_cancellable_cancel (c);
      pb_resolver_lookup (f->resolver, names[i], PB_DNS_A, c, on_answer, &r);
      if (r.done)
        fail_msg ("case %u (%s): answered from inside the call", i, names[i]);
      if (!pbt_loop_until (&r.done, 1000))
        fail_msg ("case %u (%s): no answer", i, names[i]);
      if (r.status != PB_DNS_TEMPFAIL)
        fail_msg ("case %u (%s): status %d, expected TEMPFAIL", i, names[i], r.status);
      assert_null (r.records[0]);
      g_strfreev (r.records);
      /* on_answer() fails on a second call. */
      pbt_loop_run_for (100);
    }
}

static void
test_unref_with_lookup_pending (void **state)
{
  Fixture *f = *state;
  Result r = { 0 };
  PbResolver *own;
  g_autofree char *servers = g_strdup_printf ("127.0.0.1:%u", f->port);

  own = pb_resolver_new (servers, NULL);
  pb_resolver_lookup (own, "b.timeout.example.org", PB_DNS_A, NULL, on_answer, &r);
  pb_resolver_unref (own);
  pbt_loop_run_for (100);
  assert_false (r.done);
}

static void
test_servers_and_reverse (void **state)
{
  static const struct { const char *in; const char *out; } good[] = {
    { "192.0.2.53", "192.0.2.53" }, { "127.0.0.1:5353", "127.0.0.1@5353" }, { "[::1]:53", "::1@53" }, { "::1", "::1" },
  };
  static const char *const bad[] = { "dns.example.org", "127.0.0.1:0", "[::1", "1.2.3.4:x", NULL };
  g_autoptr (GInetAddress) v4 = g_inet_address_new_from_string ("192.0.2.7");
  g_autoptr (GInetAddress) v6 = g_inet_address_new_from_string ("2001:db8::1");
  g_autofree char *r4 = pb_dns_reverse_name (v4);
  g_autofree char *r6 = pb_dns_reverse_name (v6);
  g_autoptr (GError) error = NULL;

  for (guint i = 0; i < G_N_ELEMENTS (good); i++)
    {
      g_autofree char *out = NULL;
      assert_true (pb_dns_server_to_unbound (good[i].in, &out));
      assert_string_equal (out, good[i].out);
    }
  for (guint i = 0; bad[i] != NULL; i++)
    {
      char *out = NULL;
      if (pb_dns_server_to_unbound (bad[i], &out))
        fail_msg ("'%s' accepted as a DNS server (%s)", bad[i], out);
    }
  assert_null (pb_resolver_new ("127.0.0.1, nonsense", &error));
  assert_non_null (strstr (error->message, "'nonsense' is not a DNS server address"));
  assert_string_equal (r4, "7.2.0.192.in-addr.arpa");
  assert_string_equal (r6, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
}

typedef struct {
  gboolean done;
  PbConn *conn;
  GError *error;
} Connected;

static void
on_connected (PbConn *conn, const GError *error, gpointer data)
{
  Connected *c = data;
  c->done = TRUE;
  c->conn = conn;
  c->error = error != NULL ? g_error_copy (error) : NULL;
}

static void
test_connect (void **state)
{
  Fixture *f = *state;
  g_autofree char *conf = pbt_mkdtemp ();
  g_autofree char *st = pbt_mkdtemp ();
  g_autofree char *core = g_strdup_printf ("[core]\nmodule-dir = %s\ndns-servers = 127.0.0.1:%u\n",
                                           pbt_fixture_dir (), f->port);
  g_autoptr (GSocket) listener = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, 0, NULL);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) any = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) bound = NULL;
  guint16 port;
  PbDiag *diag = pb_diag_new ();
  PbGeneration *gen;
  PbModule *m;
  Connected c = { 0 };

  pbt_write_file (conf, "00-core.conf", core);
  pbt_write_file (conf, "10-fx.conf", "[module fx-good]\n");
  gen = pb_generation_build (conf, st, NULL, FALSE, diag);
  assert_non_null (gen);
  m = pb_generation_find_module (gen, "fx-good");
  assert_true (g_socket_bind (listener, any, TRUE, NULL));
  assert_true (g_socket_listen (listener, NULL));
  bound = g_socket_get_local_address (listener, NULL);
  port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));

  /* By name, through the configured DNS server: A first, so 127.0.0.1 answers. */
  pb_conn_connect (m, "loop.example.org", port, 5000, NULL, on_connected, &c);
  assert_false (c.done);
  assert_true (pbt_loop_until (&c.done, 15000));
  assert_null (c.error);
  assert_non_null (c.conn);
  assert_string_equal (pb_conn_get_peer_ip (c.conn), "127.0.0.1");
  pb_conn_close (c.conn);
  pb_conn_unref (c.conn);
  memset (&c, 0, sizeof c);

  /* A literal address, nobody listening. */
  g_socket_close (listener, NULL);
  pb_conn_connect (m, "127.0.0.1", port, 5000, NULL, on_connected, &c);
  assert_true (pbt_loop_until (&c.done, 15000));
  assert_null (c.conn);
  assert_non_null (strstr (c.error->message, "cannot connect to 127.0.0.1 port"));
  g_clear_error (&c.error);
  memset (&c, 0, sizeof c);

  /* A name that does not exist. */
  pb_conn_connect (m, "nothing.example.org", 25, 5000, NULL, on_connected, &c);
  assert_true (pbt_loop_until (&c.done, 15000));
  assert_true (g_error_matches (c.error, G_IO_ERROR, G_IO_ERROR_HOST_NOT_FOUND));
  g_clear_error (&c.error);
  memset (&c, 0, sizeof c);

  /* Cancelled while the DNS server keeps silent: reported at once, from the loop. */
  {
    g_autoptr (GCancellable) cancel = g_cancellable_new ();
    pb_conn_connect (m, "x.timeout.example.org", 25, 5000, cancel, on_connected, &c);
    pbt_loop_run_for (50);
    g_cancellable_cancel (cancel);
    assert_false (c.done);
    assert_true (pbt_loop_until (&c.done, 1000));
    assert_true (g_error_matches (c.error, G_IO_ERROR, G_IO_ERROR_CANCELLED));
    g_clear_error (&c.error);
  }
  pb_generation_unref (gen);
  pb_diag_free (diag);
  pbt_rmtree (conf);
  pbt_rmtree (st);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_lookups, setup, teardown),
    cmocka_unit_test_setup_teardown (test_cancel, setup, teardown),
    cmocka_unit_test_setup_teardown (test_already_cancelled, setup, teardown),
    cmocka_unit_test_setup_teardown (test_unref_with_lookup_pending, setup, teardown),
    cmocka_unit_test (test_servers_and_reverse),
    cmocka_unit_test_setup_teardown (test_connect, setup, teardown),
  };
  lt_dlinit ();
  return cmocka_run_group_tests (tests, NULL, NULL);
}
