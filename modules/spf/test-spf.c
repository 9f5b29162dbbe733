/* SPDX-License-Identifier: MIT */
/* Unit tests of spf without DNS: macros (RFC 7208 §7.4), record syntax and selection, CIDR matching, headers. */
#include "config.h"
#include "test-help.h"
#include "spf-private.h"
#include "spf-headers.h"

#include <string.h>

#define T0 G_GINT64_CONSTANT (1700000000)

static void
context (SpfMacroContext *ctx, GInetAddress **ip, const char *address, const char *sender)
{
  *ip = g_inet_address_new_from_string (address);
  memset (ctx, 0, sizeof *ctx);
  ctx->sender = sender;
  ctx->domain = spf_sender_domain (sender);
  ctx->ip = *ip;
  ctx->helo = "mx.example.org";
  ctx->receiver = "receiver.example.net";
  ctx->validated = "mx.example.org";
  ctx->timestamp = T0;
}

/* RFC 7208 §7.4: <sender> strong-bad@email.example.com, IPv4 192.0.2.3,
 * IPv6 2001:db8::cb01, PTR name mx.example.org. */
static void
test_macro_rfc_examples (void **state)
{
  static const struct {
    const char *ip;
    const char *sender;
    SpfMacroMode mode;
    const char *in;
    const char *out;
  } cases[] = {
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{s}", "strong-bad@email.example.com" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{o}", "email.example.com" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{d}", "email.example.com" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{d4}", "email.example.com" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{d3}", "email.example.com" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{d2}", "example.com" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{d1}", "com" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{dr}", "com.example.email" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{d2r}", "example.email" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{l}", "strong-bad" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{l-}", "strong.bad" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{lr}", "strong-bad" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{lr-}", "bad.strong" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{l1r-}", "strong" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{ir}.%{v}._spf.%{d2}",
      "3.2.0.192.in-addr._spf.example.com" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{lr-}.lp._spf.%{d2}",
      "bad.strong.lp._spf.example.com" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
      "bad.strong.lp.3.2.0.192.in-addr._spf.example.com" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
      "3.2.0.192.in-addr.strong.lp._spf.example.com" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{d2}.trusted-domains.example.net",
      "example.com.trusted-domains.example.net" },
    { "2001:db8::cb01", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{ir}.%{v}._spf.%{d2}",
      "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com" },
    /* The other letters, and those allowed only in exp text (§7.3). */
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{i}", "192.0.2.3" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{p}", "mx.example.org" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{h}", "mx.example.org" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{v}", "in-addr" },
    { "2001:db8::cb01", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{v}", "ip6" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_EXPLAIN, "%{c}", "192.0.2.3" },
    { "2001:db8::cb01", "strong-bad@email.example.com", SPF_MACRO_EXPLAIN, "%{c}", "2001:db8::cb01" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_EXPLAIN, "%{r}", "receiver.example.net" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_EXPLAIN, "%{t}", "1700000000" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_EXPLAIN,
      "%{i} is not one of %{d}'s designated mail servers.",
      "192.0.2.3 is not one of email.example.com's designated mail servers." },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_EXPLAIN, "See http://%{d}/why.html?s=%{S}&i=%{C}",
      "See http://email.example.com/why.html?s=strong-bad%40email.example.com&i=192.0.2.3" },
    /* The escapes, and upper case (URL-escaped). */
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%%%_%-", "% %20" },
    { "192.0.2.3", "a+b c@email.example.com", SPF_MACRO_EXPLAIN, "%{L}", "a%2Bb%20c" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{D2R}", "example.email" },
    /* Several delimiters at once; digits beyond the number of parts. */
    { "192.0.2.3", "a.b-c+d@email.example.com", SPF_MACRO_DOMAIN, "%{l.-+}", "a.b.c.d" },
    { "192.0.2.3", "a.b-c+d@email.example.com", SPF_MACRO_DOMAIN, "%{l2r.-+}", "b.a" },
    { "192.0.2.3", "strong-bad@email.example.com", SPF_MACRO_DOMAIN, "%{d100}", "email.example.com" },
    /* The brief's sender: strjoe@example.com. */
    { "192.0.2.3", "strjoe@example.com", SPF_MACRO_DOMAIN, "%{l}.%{o}", "strjoe.example.com" },
    { "192.0.2.3", "strjoe@example.com", SPF_MACRO_DOMAIN, "%{ir}.%{v}._spf.%{d}",
      "3.2.0.192.in-addr._spf.example.com" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      SpfMacroContext ctx;
      g_autoptr (GInetAddress) ip = NULL;
      g_autoptr (GError) error = NULL;
      g_autofree char *out = NULL;

      context (&ctx, &ip, cases[i].ip, cases[i].sender);
      out = spf_macro_expand (cases[i].in, &ctx, cases[i].mode, &error);
      if (out == NULL || strcmp (out, cases[i].out) != 0)
        fail_msg ("case %u: '%s' gave '%s' (%s), expected '%s'", i, cases[i].in, out ? out : "(null)",
                  error ? error->message : "no error", cases[i].out);
    }
}

static void
test_macro_p_unknown (void **state)
{
  SpfMacroContext ctx;
  g_autoptr (GInetAddress) ip = NULL;
  g_autofree char *out = NULL;

  context (&ctx, &ip, "10.0.0.4", "a@example.com");
  ctx.validated = NULL;
  ctx.helo = NULL;
  out = spf_macro_expand ("%{p}.%{h}", &ctx, SPF_MACRO_DOMAIN, NULL);
  assert_string_equal (out, "unknown.unknown");
  assert_true (spf_macro_uses_p ("%{p}.x"));
  assert_true (spf_macro_uses_p ("a.%{P2}"));
  assert_false (spf_macro_uses_p ("%%{p}"));
  assert_false (spf_macro_uses_p ("%{d}.p"));
}

static void
test_macro_errors (void **state)
{
  static const struct {
    SpfMacroMode mode;
    const char *in;
    const char *why;
  } cases[] = {
    { SPF_MACRO_DOMAIN, "%{c}", "only allowed in exp" },
    { SPF_MACRO_DOMAIN, "%{r}.x", "only allowed in exp" },
    { SPF_MACRO_DOMAIN, "%{t}", "only allowed in exp" },
    { SPF_MACRO_EXPLAIN, "%{x}", "unknown macro letter" },
    { SPF_MACRO_DOMAIN, "%{d0}", "must not be zero" },
    { SPF_MACRO_DOMAIN, "%{d", "malformed macro" },
    { SPF_MACRO_DOMAIN, "%{d2x}", "malformed macro" },
    { SPF_MACRO_DOMAIN, "%{}", "unknown macro letter" },
    { SPF_MACRO_DOMAIN, "a%b", "not followed by" },
    { SPF_MACRO_DOMAIN, "abc%", "not followed by" },
    { SPF_MACRO_DOMAIN, "%(ir).sbl.example.org", "not followed by" },
    { SPF_MACRO_DOMAIN, "a b", "not allowed" },
    { SPF_MACRO_EXPLAIN, "tab\there", "not allowed" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autofree char *out = spf_macro_expand (cases[i].in, NULL, cases[i].mode, &error);
      if (out != NULL || error == NULL || strstr (error->message, cases[i].why) == NULL)
        fail_msg ("case %u: '%s' gave '%s' (%s), expected an error with '%s'", i, cases[i].in,
                  out ? out : "(null)", error ? error->message : "no error", cases[i].why);
    }
}

static void
test_domain_spec (void **state)
{
  static const struct {
    const char *spec;
    gboolean ok;
  } cases[] = {
    { "example.com", TRUE }, { "example.com.", TRUE }, { "%{d}", TRUE }, { "foo.%{d}", TRUE },
    { "%{ir}.%{v}._spf.%{d2}", TRUE }, { "_spf.example.com", TRUE }, { "a.1-2", TRUE }, { "a.b%%", TRUE },
    { "com", FALSE }, { "1.2.3.4", FALSE }, { "example.-com", FALSE }, { "example.com-", FALSE },
    { "", FALSE }, { "%{d}.", FALSE }, { "foo.%{c}", FALSE }, { "example.com/24", FALSE }, { "a.b%%_", FALSE },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    if (spf_domain_spec_check (cases[i].spec, NULL) != cases[i].ok)
      fail_msg ("case %u: '%s' should be %s", i, cases[i].spec, cases[i].ok ? "valid" : "refused");
}

static void
test_domain_names (void **state)
{
  GString *long_name = g_string_new (NULL);
  g_autofree char *cut = NULL;

  assert_true (spf_domain_is_valid ("example.com", TRUE));
  assert_true (spf_domain_is_valid ("example.com.", TRUE));
  assert_false (spf_domain_is_valid ("com", TRUE));
  assert_true (spf_domain_is_valid ("com", FALSE));
  assert_false (spf_domain_is_valid ("a..com", TRUE));
  assert_false (spf_domain_is_valid (".a.com", TRUE));
  assert_false (spf_domain_is_valid ("a b.com", TRUE));
  assert_false (spf_domain_is_valid ("a\\b.com", TRUE));
  assert_false (spf_domain_is_valid ("", FALSE));
  /* §7.3: a name over 253 characters loses labels on the left. */
  for (guint i = 0; i < 30; i++)
    g_string_append (long_name, "label1234.");
  g_string_append (long_name, "example.com");
  assert_false (spf_domain_is_valid (long_name->str, TRUE));
  cut = spf_domain_truncate (long_name->str);
  assert_true (strlen (cut) <= 253);
  assert_true (strlen (cut) > 243);
  assert_true (g_str_has_prefix (cut, "label1234."));
  assert_true (g_str_has_suffix (cut, ".example.com"));
  assert_true (spf_domain_is_valid (cut, TRUE));
  g_string_free (long_name, TRUE);
  g_free (g_steal_pointer (&cut));
  cut = spf_domain_truncate ("example.com.");
  assert_string_equal (cut, "example.com");
}

static void
test_record_parse (void **state)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SpfRecord) r = spf_record_parse (
      "v=spf1 a mx/30 -a:example.org/24//64 ~mx:%{d}//48 ?ptr +ptr:example.net ip4:192.0.2.0/24 "
      "ip6:2001:db8::/32 ip4:10.1.2.3 exists:%{ir}.bl.example include:_spf.example.com -all "
      "redirect=other.example exp=exp.%{d} unknown-mod=%{l}.x",
      &error);
  SpfMech *m;

  if (r == NULL)
    fail_msg ("parse failed: %s", error->message);
  assert_int_equal (r->mechs->len, 12);
  assert_true (r->has_all);
  assert_string_equal (r->redirect, "other.example");
  assert_string_equal (r->exp, "exp.%{d}");
  m = g_ptr_array_index (r->mechs, 0);
  assert_int_equal (m->kind, SPF_MECH_A);
  assert_null (m->domain_spec);
  assert_int_equal (m->result, SPF_RESULT_PASS);
  assert_int_equal (m->cidr4, 32);
  assert_int_equal (m->cidr6, 128);
  m = g_ptr_array_index (r->mechs, 1);
  assert_int_equal (m->kind, SPF_MECH_MX);
  assert_int_equal (m->cidr4, 30);
  assert_int_equal (m->cidr6, 128);
  m = g_ptr_array_index (r->mechs, 2);
  assert_int_equal (m->result, SPF_RESULT_FAIL);
  assert_string_equal (m->domain_spec, "example.org");
  assert_int_equal (m->cidr4, 24);
  assert_int_equal (m->cidr6, 64);
  m = g_ptr_array_index (r->mechs, 3);
  assert_int_equal (m->result, SPF_RESULT_SOFTFAIL);
  assert_string_equal (m->domain_spec, "%{d}");
  assert_int_equal (m->cidr4, 32);
  assert_int_equal (m->cidr6, 48);
  m = g_ptr_array_index (r->mechs, 4);
  assert_int_equal (m->kind, SPF_MECH_PTR);
  assert_int_equal (m->result, SPF_RESULT_NEUTRAL);
  m = g_ptr_array_index (r->mechs, 6);
  assert_int_equal (m->kind, SPF_MECH_IP4);
  assert_int_equal (m->cidr4, 24);
  assert_int_equal (m->network[0], 192);
  assert_int_equal (m->network[2], 2);
  m = g_ptr_array_index (r->mechs, 7);
  assert_int_equal (m->kind, SPF_MECH_IP6);
  assert_int_equal (m->cidr6, 32);
  assert_int_equal (m->network[1], 0x01);
  m = g_ptr_array_index (r->mechs, 10);
  assert_int_equal (m->kind, SPF_MECH_INCLUDE);
  assert_string_equal (m->text, "include:_spf.example.com");
  m = g_ptr_array_index (r->mechs, 11);
  assert_int_equal (m->kind, SPF_MECH_ALL);
  assert_int_equal (m->result, SPF_RESULT_FAIL);

  /* Case does not matter in names; extra spaces do not either. */
  g_clear_pointer (&r, spf_record_free);
  r = spf_record_parse ("V=SPF1  IP4:192.0.2.1  MX  Redirect=example.com ", &error);
  assert_non_null (r);
  assert_int_equal (r->mechs->len, 2);
  assert_false (r->has_all);
  assert_string_equal (r->redirect, "example.com");
}

/* Every one of these is a syntax error, so check_host() gives permerror (§4.6). */
static void
test_record_syntax_errors (void **state)
{
  static const char *const cases[] = {
    "v=spf1 foo",                         /* unknown mechanism */
    "v=spf1 -foo:example.com",
    "v=spf1 include",                     /* include needs a domain */
    "v=spf1 include:",
    "v=spf1 exists",
    "v=spf1 include:com",                 /* domain-end needs a dot and a top label */
    "v=spf1 a:1.2.3.4",                   /* numeric top label */
    "v=spf1 a:example.com/33",            /* ip4-cidr-length over 32 */
    "v=spf1 a//129",                      /* ip6-cidr-length over 128 */
    "v=spf1 a/024",                       /* leading zero */
    "v=spf1 mx:example.com/",
    "v=spf1 mx//",
    "v=spf1 a:",
    "v=spf1 ptr/24",                      /* ptr has no CIDR */
    "v=spf1 ip4:192.0.2.1/33",
    "v=spf1 ip4:192.0.2",
    "v=spf1 ip4:192.0.2.256",
    "v=spf1 ip4:192.0.02.1",
    "v=spf1 ip4:2001:db8::1",
    "v=spf1 ip4",
    "v=spf1 ip6:192.0.2.1",
    "v=spf1 ip6:2001:db8::/129",
    "v=spf1 ip6:zz::1",
    "v=spf1 all:example.com",
    "v=spf1 -all.",
    "v=spf1 redirect=a.example redirect=b.example",   /* at most once */
    "v=spf1 exp=a.example exp=b.example",
    "v=spf1 redirect=",
    "v=spf1 exp=%{c}.example.com",        /* c only in the exp text, not its domain */
    "v=spf1 exists:%{d",
    "v=spf1 a:%{x}.example.com",
    "v=spf1 unknown=%(bad)",
    "v=spf1 -all\tip4:192.0.2.1",         /* only SP separates terms */
    "v=spf1 a:ex\xc3\xa4mple.com",
    "v=spf1 +",
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (SpfRecord) r = spf_record_parse (cases[i], &error);
      if (r != NULL || error == NULL || !g_error_matches (error, SPF_ERROR, SPF_ERROR_SYNTAX))
        fail_msg ("case %u: '%s' was accepted", i, cases[i]);
    }
}

static void
test_record_select (void **state)
{
  static const struct {
    const char *txt[4];
    SpfSelect want;
    int chosen;
  } cases[] = {
    { { NULL }, SPF_SELECT_NONE, -1 },
    { { "some other text", NULL }, SPF_SELECT_NONE, -1 },
    { { "v=spf10 -all", "v=spf1x", "v=spf2.0/pra ip4:1.2.3.4", NULL }, SPF_SELECT_NONE, -1 },
    { { "google-site-verification=x", "v=spf1 -all", NULL }, SPF_SELECT_ONE, 1 },
    { { "v=spf1", NULL }, SPF_SELECT_ONE, 0 },
    { { "V=SPF1 a", NULL }, SPF_SELECT_ONE, 0 },
    { { "v=spf1 a", "v=spf1 mx", NULL }, SPF_SELECT_MANY, -1 },
    { { " v=spf1 a", NULL }, SPF_SELECT_NONE, -1 },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      const char *chosen = NULL;
      SpfSelect got = spf_record_select (cases[i].txt, &chosen);
      if (got != cases[i].want || (cases[i].chosen >= 0 ? chosen != cases[i].txt[cases[i].chosen] : chosen != NULL))
        fail_msg ("case %u: selection %d, expected %d", i, got, cases[i].want);
    }
}

static void
test_cidr (void **state)
{
  static const struct {
    const char *client;
    const char *network;
    guint cidr4, cidr6;
    gboolean match;
  } cases[] = {
    { "192.0.2.129", "192.0.2.128", 30, 128, TRUE },
    { "192.0.2.131", "192.0.2.128", 30, 128, TRUE },
    { "192.0.2.132", "192.0.2.128", 30, 128, FALSE },
    { "192.0.2.65", "192.0.2.128", 28, 128, FALSE },
    { "192.0.2.1", "10.0.0.0", 0, 128, TRUE },
    { "192.0.2.1", "192.0.2.1", 32, 128, TRUE },
    { "192.0.2.2", "192.0.2.1", 32, 128, FALSE },
    { "192.0.2.1", "192.0.3.1", 23, 128, TRUE },
    { "192.0.2.1", "192.0.4.1", 23, 128, FALSE },
    { "2001:db8::cb01", "2001:db8::", 32, 64, TRUE },
    { "2001:db8:1::cb01", "2001:db8::", 32, 64, FALSE },
    { "2001:db8::cb01", "2001:db8::cb01", 32, 128, TRUE },
    { "2001:db8::cb02", "2001:db8::cb01", 32, 127, FALSE },
    { "2001:db8::cb00", "2001:db8::cb01", 32, 127, TRUE },
    /* Families never match each other; a mapped address is IPv4. */
    { "192.0.2.1", "::ffff:192.0.2.2", 0, 0, FALSE },
    { "::ffff:192.0.2.1", "192.0.2.0", 24, 128, TRUE },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GInetAddress) c0 = g_inet_address_new_from_string (cases[i].client);
      g_autoptr (GInetAddress) n0 = g_inet_address_new_from_string (cases[i].network);
      g_autoptr (GInetAddress) c = spf_address_normalize (c0);
      g_autoptr (GInetAddress) n = g_object_ref (n0);
      if (spf_address_match (c, n, cases[i].cidr4, cases[i].cidr6) != cases[i].match)
        fail_msg ("case %u: %s in %s/%u//%u should %s", i, cases[i].client, cases[i].network, cases[i].cidr4,
                  cases[i].cidr6, cases[i].match ? "match" : "not match");
    }
}

static void
test_ip_dotted (void **state)
{
  g_autoptr (GInetAddress) v4 = g_inet_address_new_from_string ("192.0.2.3");
  g_autoptr (GInetAddress) v6 = g_inet_address_new_from_string ("2001:db8::cb01");
  g_autofree char *a = spf_ip_dotted (v4);
  g_autofree char *b = spf_ip_dotted (v6);

  assert_string_equal (a, "192.0.2.3");
  assert_string_equal (b, "2.0.0.1.0.d.b.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.c.b.0.1");
}

static void
test_sender (void **state)
{
  static const struct {
    const char *mail_from, *helo, *sender;
  } cases[] = {
    { "user@example.com", "mx.example.org", "user@example.com" },
    { "", "mx.example.org", "postmaster@mx.example.org" },
    { NULL, "mx.example.org", "postmaster@mx.example.org" },
    { "@example.com", NULL, "postmaster@example.com" },
    { "example.com", NULL, "postmaster@example.com" },
    { "a@b@example.com", NULL, "a@b@example.com" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *s = spf_sender_for (cases[i].mail_from, cases[i].helo);
      if (strcmp (s, cases[i].sender) != 0)
        fail_msg ("case %u: %s, expected %s", i, s, cases[i].sender);
    }
  assert_string_equal (spf_sender_domain ("a@b@example.com"), "example.com");
}

static void
test_headers (void **state)
{
  SpfHeaderInfo info = {
    .result = SPF_RESULT_PASS,
    .receiver = "mx.test.example",
    .client_ip = "192.0.2.10",
    .envelope_from = "user@example.com",
    .helo = "mail.example.com",
    .identity = "mailfrom",
    .sender = "user@example.com",
    .mechanism = "ip4:192.0.2.0/24",
  };
  g_autofree char *rs = spf_received_spf_value (&info);
  g_autofree char *ar = spf_authentication_results_value (&info, NULL);
  g_autofree char *rs2 = NULL;
  g_autofree char *ar2 = NULL;
  g_autofree char *reply = NULL;
  SpfHeaderInfo helo = info;

  assert_string_equal (rs, "pass (mx.test.example: domain of user@example.com designates 192.0.2.10 as permitted "
                           "sender) client-ip=192.0.2.10; envelope-from=\"user@example.com\"; helo=mail.example.com; "
                           "receiver=mx.test.example; identity=mailfrom; mechanism=\"ip4:192.0.2.0/24\"");
  assert_string_equal (ar, "mx.test.example; spf=pass smtp.mailfrom=user@example.com");

  /* Null sender, IPv6, a problem with quotes and a CR from a hostile record. */
  info.result = SPF_RESULT_PERMERROR;
  info.client_ip = "2001:db8::1";
  info.envelope_from = "";
  info.identity = "helo";
  info.sender = "postmaster@mail.example.com";
  info.problem = "unknown mechanism 'x\"y\r\nz'";
  rs2 = spf_received_spf_value (&info);
  assert_string_equal (rs2, "permerror (mx.test.example: permanent error in processing domain of "
                            "postmaster@mail.example.com) client-ip=\"2001:db8::1\"; envelope-from=\"\"; "
                            "helo=mail.example.com; receiver=mx.test.example; identity=helo; "
                            "problem=\"unknown mechanism 'x\\\"y??z'\"");
  ar2 = spf_authentication_results_value (&info, NULL);
  assert_string_equal (ar2, "mx.test.example; spf=permerror reason=\"unknown mechanism 'x\\\"y??z'\" "
                            "smtp.helo=mail.example.com");
  reply = spf_reply_text (&info, NULL);
  assert_string_equal (reply, "SPF permanent error for mail.example.com: unknown mechanism 'x\"y??z'");
  g_free (g_steal_pointer (&ar2));

  /* HELO checked on its own before MAIL FROM. */
  info.result = SPF_RESULT_FAIL;
  info.identity = "mailfrom";
  info.sender = "a@example.com";
  info.problem = NULL;
  helo.result = SPF_RESULT_NONE;
  helo.identity = "helo";
  ar2 = spf_authentication_results_value (&info, &helo);
  assert_string_equal (ar2, "mx.test.example; spf=none smtp.helo=mail.example.com; spf=fail smtp.mailfrom=a@example.com");
  g_free (g_steal_pointer (&reply));
  reply = spf_reply_text (&info, "Not allowed (see http://example.com/spf)");
  assert_string_equal (reply, "Not allowed (see http://example.com/spf)");
  g_free (g_steal_pointer (&reply));
  reply = spf_reply_text (&info, NULL);
  assert_string_equal (reply, "SPF check of example.com for 2001:db8::1 gave fail");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_macro_rfc_examples),
    cmocka_unit_test (test_macro_p_unknown),
    cmocka_unit_test (test_macro_errors),
    cmocka_unit_test (test_domain_spec),
    cmocka_unit_test (test_domain_names),
    cmocka_unit_test (test_record_parse),
    cmocka_unit_test (test_record_syntax_errors),
    cmocka_unit_test (test_record_select),
    cmocka_unit_test (test_cidr),
    cmocka_unit_test (test_ip_dotted),
    cmocka_unit_test (test_sender),
    cmocka_unit_test (test_headers),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
