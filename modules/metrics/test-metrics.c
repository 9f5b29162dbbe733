/* SPDX-License-Identifier: MIT */
/* Unit tests of metrics: exposition format and escaping, counters, the HTTP request parser, the page. */
#include "config.h"
#include "test-help.h"
#include "metrics-private.h"

#include <pillarbox/pillarbox.h>

#include <math.h>
#include <string.h>

static void
test_escape_label (void **state)
{
  static const struct {
    const char *in;
    const char *out;
  } cases[] = {
    { "plain", "plain" },
    { "", "" },
    { "a\"b", "a\\\"b" },
    { "back\\slash", "back\\\\slash" },
    { "two\nlines", "two\\nlines" },
    { "\\\"\n", "\\\\\\\"\\n" },
    { "tab\there", "tab\there" },
    { "caf\xc3\xa9.example", "caf\xc3\xa9.example" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GString) out = g_string_new (NULL);
      metrics_expo_escape_label (out, cases[i].in);
      if (strcmp (out->str, cases[i].out) != 0)
        fail_msg ("case %u: escaped '%s' as '%s', expected '%s'", i, cases[i].in, out->str, cases[i].out);
    }
}

static void
test_family_help (void **state)
{
  g_autoptr (GString) out = g_string_new (NULL);

  /* HELP escapes backslash and line feed only; quotes stay. */
  metrics_expo_family (out, "x_total", METRICS_COUNTER, "say \"hi\"\\now\nnext");
  assert_string_equal (out->str, "# HELP x_total say \"hi\"\\\\now\\nnext\n# TYPE x_total counter\n");
  g_string_truncate (out, 0);
  metrics_expo_family (out, "g", METRICS_GAUGE, "");
  metrics_expo_family (out, "h", METRICS_HISTOGRAM, "x");
  assert_string_equal (out->str, "# HELP g \n# TYPE g gauge\n# HELP h x\n# TYPE h histogram\n");
}

static void
test_numbers (void **state)
{
  static const struct {
    double in;
    const char *out;
  } cases[] = {
    { 0, "0" },
    { 1, "1" },
    { -3, "-3" },
    { 123456789012.0, "123456789012" },
    { 0.001, "0.001" },
    { 2.5, "2.5" },
    { 1e-7, "1e-07" },
    { 0.1 + 0.2, "0.30000000000000004" },
    { 1e300, "1e+300" },
    { 1.0 / 3, "0.3333333333333333" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GString) out = g_string_new (NULL);
      metrics_expo_number (out, cases[i].in);
      if (strcmp (out->str, cases[i].out) != 0)
        fail_msg ("case %u: wrote %s, expected %s", i, out->str, cases[i].out);
      if (g_ascii_strtod (out->str, NULL) != cases[i].in)
        fail_msg ("case %u: %s does not read back exactly", i, out->str);
    }
  {
    g_autoptr (GString) out = g_string_new (NULL);
    metrics_expo_number (out, INFINITY);
    g_string_append_c (out, ' ');
    metrics_expo_number (out, -INFINITY);
    g_string_append_c (out, ' ');
    metrics_expo_number (out, NAN);
    assert_string_equal (out->str, "+Inf -Inf NaN");
  }
}

static void
test_samples (void **state)
{
  g_autoptr (GString) out = g_string_new (NULL);
  const char *labels[] = { "reason", "a\"b", "stage", "rcpt-to", NULL };
  const char *one[] = { "le", "+Inf", NULL };

  metrics_expo_sample (out, "m_total", NULL, 7);
  metrics_expo_sample (out, "m_total", labels, 0);
  metrics_expo_sample (out, "h_bucket", one, 3);
  assert_string_equal (out->str, "m_total 7\n"
                                 "m_total{reason=\"a\\\"b\",stage=\"rcpt-to\"} 0\n"
                                 "h_bucket{le=\"+Inf\"} 3\n");
}

static void
test_counter (void **state)
{
  MetricsCounter *c = metrics_counter_new (2);
  static const char *const names[] = { "x", "y" };
  const char *k1[] = { "a:b", "c" };
  const char *k2[] = { "a", "b:c" };
  const char *k3[] = { "", "z" };
  g_autoptr (GString) out = g_string_new (NULL);

  metrics_counter_add (c, k1, 1);
  metrics_counter_add (c, k2, 5);
  metrics_counter_add (c, k1, 2);
  metrics_counter_add (c, k3, 0);
  /* Values that would run together if joined must stay two series. */
  assert_int_equal (metrics_counter_size (c), 3);
  assert_int_equal (metrics_counter_get (c, k1), 3);
  assert_int_equal (metrics_counter_get (c, k2), 5);
  assert_int_equal (metrics_counter_get (c, k3), 0);
  metrics_counter_write (c, out, "f_total", names);
  assert_string_equal (out->str, "f_total{x=\"\",y=\"z\"} 0\n"
                                 "f_total{x=\"a\",y=\"b:c\"} 5\n"
                                 "f_total{x=\"a:b\",y=\"c\"} 3\n");
  metrics_counter_free (c);
}

/* ---- HTTP ---- */

typedef struct {
  const char *in;
  MetricsHttpResult result;
  guint status;               /* for errors */
  const char *method;         /* for DONE */
  const char *target;
  gsize consumed;             /* for DONE: 0 means all of the input */
} HttpCase;

static MetricsHttpResult
feed_in_pieces (const char *in, gsize len, gsize piece, gsize max_head, MetricsHttpParser *p, gsize *total)
{
  MetricsHttpResult r = METRICS_HTTP_MORE;

  metrics_http_parser_init (p, max_head);
  *total = 0;
  while (*total < len && r == METRICS_HTTP_MORE)
    {
      gsize n = MIN (piece, len - *total);
      gsize used = 0;
      r = metrics_http_parser_feed (p, (const guint8 *) in + *total, n, &used);
      g_assert_cmpuint (used, <=, n);
      *total += used;
      if (r == METRICS_HTTP_MORE)
        g_assert_cmpuint (used, ==, n);
    }
  return r;
}

static void
test_http_parser (void **state)
{
  static const HttpCase cases[] = {
    { "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", METRICS_HTTP_DONE, 0, "GET", "/metrics", 0 },
    { "HEAD /metrics?name[]=up HTTP/1.0\r\n\r\n", METRICS_HTTP_DONE, 0, "HEAD", "/metrics", 0 },
    { "GET http://h:9109/metrics HTTP/1.1\r\nHost: h:9109\r\n\r\n", METRICS_HTTP_DONE, 0, "GET", "/metrics", 0 },
    { "GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", METRICS_HTTP_DONE, 0, "GET", "/", 0 },
    { "\r\nGET / HTTP/1.1\nhost:x\n\n", METRICS_HTTP_DONE, 0, "GET", "/", 0 },
    { "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody", METRICS_HTTP_DONE, 0, "POST",
      "/metrics", 54 },
    { "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", METRICS_HTTP_DONE, 0, "OPTIONS", "*", 0 },
    { "GET /metrics HTTP/1.1\r\nHost: x\r\n", METRICS_HTTP_MORE, 0, NULL, NULL, 0 },
    { "GET /metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "GET /metrics HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "GET /metrics HTTP/2.0\r\n", METRICS_HTTP_ERROR, 505, NULL, NULL, 0 },
    { "GET /metrics HTTP/1.1 x\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "GET  /metrics HTTP/1.1\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "GET metrics HTTP/1.1\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "G(T /metrics HTTP/1.1\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "GET /metrics http/1.1\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "GET /metrics\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "hello\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "GET /m\rx HTTP/1.1\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "GET /m\x01 HTTP/1.1\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "GET /metrics HTTP/1.1\r\nHost : x\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "GET /metrics HTTP/1.1\r\nno colon\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
    { "\r\n\r\n\r\n\r\n\r\n", METRICS_HTTP_ERROR, 400, NULL, NULL, 0 },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      const HttpCase *tc = &cases[i];
      gsize len = strlen (tc->in);
      /* Whole, one octet at a time, and in pieces of 7: the same answer. */
      static const gsize pieces[] = { G_MAXSIZE, 1, 7 };

      for (guint k = 0; k < G_N_ELEMENTS (pieces); k++)
        {
          MetricsHttpParser p;
          gsize total;
          MetricsHttpResult r = feed_in_pieces (tc->in, len, pieces[k], 8192, &p, &total);

          if (r != tc->result)
            fail_msg ("case %u (pieces of %zu): result %d, expected %d (%s)", i, pieces[k], r, tc->result,
                      p.error != NULL ? p.error : "no error");
          if (r == METRICS_HTTP_ERROR && p.status != tc->status)
            fail_msg ("case %u (pieces of %zu): status %u, expected %u", i, pieces[k], p.status, tc->status);
          if (r == METRICS_HTTP_DONE)
            {
              if (strcmp (p.method, tc->method) != 0 || strcmp (p.target, tc->target) != 0)
                fail_msg ("case %u: parsed %s %s", i, p.method, p.target);
              if (total != (tc->consumed != 0 ? tc->consumed : len))
                fail_msg ("case %u (pieces of %zu): consumed %zu of %zu", i, pieces[k], total, len);
            }
          metrics_http_parser_clear (&p);
        }
    }
}

static void
test_http_limits (void **state)
{
  MetricsHttpParser p;
  gsize total;
  g_autoptr (GString) in = g_string_new ("GET /");
  MetricsHttpResult r;

  /* A request line longer than the head may be: 414. */
  for (guint i = 0; i < 2000; i++)
    g_string_append_c (in, 'a');
  g_string_append (in, " HTTP/1.1\r\nHost: x\r\n\r\n");
  r = feed_in_pieces (in->str, in->len, 100, 1024, &p, &total);
  assert_int_equal (r, METRICS_HTTP_ERROR);
  assert_int_equal (p.status, 414);
  assert_int_equal (total, 1025);   /* stopped at the first octet too many */
  metrics_http_parser_clear (&p);

  /* Fields beyond the bound: 431. */
  g_string_assign (in, "GET /metrics HTTP/1.1\r\nHost: x\r\n");
  while (in->len < 3000)
    g_string_append (in, "X-Padding: 0123456789012345678901234567890123456789\r\n");
  g_string_append (in, "\r\n");
  r = feed_in_pieces (in->str, in->len, in->len, 1024, &p, &total);
  assert_int_equal (r, METRICS_HTTP_ERROR);
  assert_int_equal (p.status, 431);
  metrics_http_parser_clear (&p);

  /* Many small fields within the size: the field count bounds them. */
  g_string_assign (in, "GET /metrics HTTP/1.1\r\nHost: x\r\n");
  for (guint i = 0; i < 150; i++)
    g_string_append (in, "A: b\r\n");
  g_string_append (in, "\r\n");
  r = feed_in_pieces (in->str, in->len, 1, 65536, &p, &total);
  assert_int_equal (r, METRICS_HTTP_ERROR);
  assert_int_equal (p.status, 431);
  metrics_http_parser_clear (&p);

  assert_string_equal (metrics_http_reason (405), "Method Not Allowed");
  assert_string_equal (metrics_http_reason (431), "Request Header Fields Too Large");
}

/* ---- counters and the page ---- */

static void
test_reasons (void **state)
{
  static const struct {
    const char *detail;
    const char *reason;
  } cases[] = {
    { "rcpt-to 550 rate-cap", "policy_rcpt_to" },
    { "connect 421 ids", "policy_connect" },
    { "data-end 4xx spf", "policy_data_end" },
    { "mail-from", "policy_mail_from" },
    { "", NULL },
    { " 550 x", NULL },
    { "bad\"stage 550 x", NULL },
    { NULL, NULL },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *r = metrics_policy_reason (cases[i].detail);
      if (g_strcmp0 (r, cases[i].reason) != 0)
        fail_msg ("case %u: reason %s, expected %s", i, r, cases[i].reason);
    }
  assert_string_equal (metrics_message_reason ("too-big"), "message_too_big");
  assert_string_equal (metrics_message_reason ("storage-full"), "storage_full");
  assert_string_equal (metrics_message_reason ("storage-error"), "storage_error");
  assert_string_equal (metrics_message_reason ("other"), "message_refused");
  assert_string_equal (pb_event_to_string (PB_EVENT_SESSION_START), "session-start");
  assert_string_equal (pb_event_to_string (PB_EVENT_POLICY_REFUSED), "policy-refused");
  assert_string_equal (pb_event_to_string (PB_EVENT_MESSAGE_REFUSED), "message-refused");
  assert_string_equal (pb_event_to_string (PB_EVENT_BLOCKED), "blocked");
  assert_string_equal (pb_event_to_string (PB_EVENT_BLOCK_STARTED), "block-started");
  assert_string_equal (pb_event_to_string ((PbEventKind) 999), "unknown");
}

static void
test_domains_bounded (void **state)
{
  MetricsState *st = metrics_state_new (2);
  MetricsState *none = metrics_state_new (0);

  assert_string_equal (metrics_state_domain_label (st, "A.example"), "a.example");
  assert_string_equal (metrics_state_domain_label (st, "b.example"), "b.example");
  assert_string_equal (metrics_state_domain_label (st, "c.example"), "other");
  assert_string_equal (metrics_state_domain_label (st, "a.EXAMPLE"), "a.example");
  assert_string_equal (metrics_state_domain_label (st, NULL), "unknown");
  assert_string_equal (metrics_state_domain_label (none, "a.example"), "other");
  metrics_state_free (st);
  metrics_state_free (none);
}

/* Checks the page the way a scraper reads it: every sample belongs to a
 * family declared before it by exactly one HELP and one TYPE line, and
 * every line ends with a line feed. */
static void
check_exposition (const char *page)
{
  g_auto (GStrv) lines = NULL;
  g_autoptr (GHashTable) families = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  gsize len = strlen (page);

  assert_true (len > 0 && page[len - 1] == '\n');
  lines = g_strsplit (page, "\n", -1);
  for (guint i = 0; lines[i] != NULL && lines[i][0] != '\0'; i++)
    {
      const char *l = lines[i];
      if (g_str_has_prefix (l, "# HELP ") || g_str_has_prefix (l, "# TYPE "))
        {
          g_autofree char *name = g_strndup (l + 7, strcspn (l + 7, " "));
          char *seen = g_hash_table_lookup (families, name);
          if (g_str_has_prefix (l, "# HELP "))
            {
              if (seen != NULL)
                fail_msg ("line %u: a second HELP for %s", i, name);
              g_hash_table_insert (families, g_strdup (name), g_strdup ("help"));
            }
          else if (g_strcmp0 (seen, "help") != 0)
            fail_msg ("line %u: TYPE of %s without HELP just before, or twice", i, name);
          else
            g_hash_table_insert (families, g_strdup (name), g_strdup (strrchr (l, ' ') + 1));
          continue;
        }
      {
        g_autofree char *name = g_strndup (l, strcspn (l, "{ "));
        const char *type = g_hash_table_lookup (families, name);
        if (type == NULL)
          {
            /* histogram samples: NAME_bucket, NAME_sum, NAME_count */
            for (const char *const *suffix = (const char *const[]) { "_bucket", "_sum", "_count", NULL };
                 *suffix != NULL && type == NULL; suffix++)
              if (g_str_has_suffix (name, *suffix))
                {
                  g_autofree char *base = g_strndup (name, strlen (name) - strlen (*suffix));
                  type = g_hash_table_lookup (families, base);
                  if (g_strcmp0 (type, "histogram") != 0)
                    type = NULL;
                }
          }
        if (type == NULL)
          fail_msg ("line %u: sample '%s' of no declared family", i, l);
      }
    }
}

static gboolean
has_line (const char *page, const char *line)
{
  g_autofree char *needle = g_strconcat ("\n", line, "\n", NULL);
  return strstr (page, needle) != NULL;
}

#define assert_line(page, line) \
  do { if (!has_line ((page), (line))) fail_msg ("no line '%s' in:\n%s", (line), (page)); } while (0)

static void
test_render (void **state)
{
  MetricsState *st = metrics_state_new (100);
  g_autoptr (GString) page = g_string_new (NULL);
  g_autoptr (GVariant) status = g_variant_ref_sink (g_variant_new_parsed (
      "{'version': <'0.1.0'>, 'start_time': <int64 1700000000>, 'uptime_seconds': <int64 42>,"
      " 'generation': <uint32 3>, 'loop_sources': <uint32 17>, 'rss_bytes': <uint64 12582912>,"
      " 'queue': <{'pending': uint32 2, 'deferred': 1, 'delivered': 0, 'bounced': 4}>,"
      " 'queue_messages': <{'pending': uint32 1, 'deferred': 1, 'delivered': 0, 'bounced': 2}>,"
      " 'listeners': <[{'name': <'smtp'>, 'service': <'smtp'>}, {'name': <'pop3'>, 'service': <'pop3'>}]>,"
      " 'storage_commit_latency': <{'bounds': <[0.001, 0.5, 10.0]>, 'counts': <[uint64 1, 3, 4]>,"
      "                             'sum': <1.25>, 'count': <uint64 5>}>}"));
  g_autoptr (GVariant) sessions = g_variant_ref_sink (g_variant_new_parsed (
      "[{'service': <'smtp'>, 'listener': <'submission'>}, {'service': <'smtp'>, 'listener': <'submission'>},"
      " {'service': <'http'>, 'listener': <'metrics'>}]"));
  const char *s1[] = { "smtp", "submission" };
  const char *svc[] = { "smtp" };
  const char *r1[] = { "policy_rcpt_to" };
  const char *d1[] = { "delivered", "b\"ad.example" };

  metrics_counter_add (st->sessions, s1, 3);
  metrics_counter_add (st->accepted, svc, 2);
  metrics_counter_add (st->recipients, svc, 5);
  metrics_counter_add (st->rejected, r1, 1);
  metrics_counter_add (st->deliveries, d1, 1);
  st->ids_blocks = 1;
  metrics_render (st, status, sessions, page);
  g_string_prepend_c (page, '\n');   /* so has_line() finds the first line too */
  check_exposition (page->str + 1);

  assert_line (page->str, "pillarbox_sessions_total{service=\"smtp\",listener=\"submission\"} 3");
  assert_line (page->str, "pillarbox_sessions_active{service=\"smtp\",listener=\"submission\"} 2");
  assert_line (page->str, "pillarbox_sessions_active{service=\"smtp\",listener=\"smtp\"} 0");
  assert_line (page->str, "pillarbox_sessions_active{service=\"http\",listener=\"metrics\"} 1");
  assert_line (page->str, "pillarbox_messages_accepted_total{service=\"smtp\"} 2");
  assert_line (page->str, "pillarbox_recipients_accepted_total{service=\"smtp\"} 5");
  assert_line (page->str, "pillarbox_messages_rejected_total{reason=\"policy_rcpt_to\"} 1");
  assert_line (page->str, "pillarbox_messages_rejected_total{reason=\"unknown_recipient\"} 0");
  assert_line (page->str, "pillarbox_deliveries_total{result=\"delivered\",domain=\"b\\\"ad.example\"} 1");
  assert_line (page->str, "pillarbox_ids_blocks_total 1");
  assert_line (page->str, "pillarbox_queue_recipients{state=\"bounced\"} 4");
  assert_line (page->str, "pillarbox_queue_messages{state=\"bounced\"} 2");
  assert_line (page->str, "pillarbox_storage_commit_seconds_bucket{le=\"0.001\"} 1");
  assert_line (page->str, "pillarbox_storage_commit_seconds_bucket{le=\"10\"} 4");
  assert_line (page->str, "pillarbox_storage_commit_seconds_bucket{le=\"+Inf\"} 5");
  assert_line (page->str, "pillarbox_storage_commit_seconds_sum 1.25");
  assert_line (page->str, "pillarbox_storage_commit_seconds_count 5");
  assert_line (page->str, "pillarbox_start_time_seconds 1700000000");
  assert_line (page->str, "pillarbox_uptime_seconds 42");
  assert_line (page->str, "pillarbox_config_generation 3");
  assert_line (page->str, "pillarbox_build_info{version=\"0.1.0\"} 1");
  assert_line (page->str, "pillarbox_loop_sources 17");
  assert_line (page->str, "process_resident_memory_bytes 12582912");

  /* Without the commands' answers the counters are still served, and the
   * page is still well formed. */
  g_string_truncate (page, 0);
  metrics_render (st, NULL, NULL, page);
  check_exposition (page->str);
  assert_null (strstr (page->str, "pillarbox_queue_messages{"));
  assert_non_null (strstr (page->str, "pillarbox_ids_blocks_total 1\n"));
  metrics_state_free (st);
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
    cmocka_unit_test (test_escape_label),
    cmocka_unit_test (test_family_help),
    cmocka_unit_test (test_numbers),
    cmocka_unit_test (test_samples),
    cmocka_unit_test (test_counter),
    cmocka_unit_test (test_http_parser),
    cmocka_unit_test (test_http_limits),
    cmocka_unit_test (test_reasons),
    cmocka_unit_test (test_domains_bounded),
    cmocka_unit_test (test_render),
  };
  pbt_log_capture ();
  return cmocka_run_group_tests (tests, NULL, check_log);
}
