/* SPDX-License-Identifier: MIT */
/* Unit tests of the SMTP client's pure parts: replies one octet at a time, EHLO, dot-stuffing across chunks. */
#include "config.h"
#include "test-help.h"
#include "smtpc.h"

#include <string.h>

/* ---- replies ------------------------------------------------------------ */

/* Feeds INPUT in pieces of STEP octets (0: all at once) and returns the
 * replies as "CODE|ENH|line1/line2" joined by "\n", or "ERROR: why". */
static char *
parse_all (const char *input, gsize step)
{
  SmtpcReplyParser p;
  GString *out = g_string_new (NULL);
  gsize len = strlen (input), off = 0;

  smtpc_reply_parser_init (&p);
  while (off < len)
    {
      gsize n = step == 0 ? len - off : MIN (step, len - off);
      gsize pos = 0;
      while (pos < n)
        {
          gsize used = 0, given = n - pos;
          SmtpcParseStatus st = smtpc_reply_parser_feed (&p, (const guint8 *) input + off + pos, given, &used);
          pos += used;
          if (st == SMTPC_PARSE_ERROR)
            {
              g_string_printf (out, "ERROR: %s", smtpc_reply_parser_get_error (&p));
              smtpc_reply_parser_clear (&p);
              return g_string_free (out, FALSE);
            }
          if (st == SMTPC_PARSE_DONE)
            {
              g_autoptr (SmtpcReply) r = smtpc_reply_parser_take (&p);
              g_autofree char *lines = g_strjoinv ("/", r->lines);
              if (out->len > 0)
                g_string_append_c (out, '\n');
              g_string_append_printf (out, "%u|%s|%s", r->code, r->enhanced != NULL ? r->enhanced : "", lines);
            }
          else
            assert_int_equal (used, given);  /* MORE uses everything given */
        }
      off += n;
    }
  smtpc_reply_parser_clear (&p);
  return g_string_free (out, FALSE);
}

static void
test_replies (void **state)
{
  static const struct {
    const char *in;
    const char *out;
  } cases[] = {
    { "220 mx.example.org ESMTP\r\n", "220||mx.example.org ESMTP" },
    { "250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", "250||mx.example.org/PIPELINING/SIZE 1000" },
    { "550 5.1.1 No such user\r\n", "550|5.1.1|No such user" },
    { "550-5.1.1 The user does not exist\r\n550 5.1.1 Try again never\r\n",
      "550|5.1.1|The user does not exist/Try again never" },
    { "451 4.7.1\r\n", "451|4.7.1|" },
    { "250\r\n", "250||" },
    { "250 ok\n", "250||ok" },                                     /* LF alone ends a line */
    { "250 2.0.0 Ok: queued\r\n354 go\r\n", "250|2.0.0|Ok: queued\n354||go" },
    { "550 4.1.1 class differs\r\n", "550||4.1.1 class differs" },   /* not an enhanced code of class 5 */
    { "250 2.0 short\r\n", "250||2.0 short" },
    { "250-a\r\n251 b\r\n", "ERROR: the lines of a multi-line reply carry different codes" },
    { "hello\r\n", "ERROR: a reply line does not start with a reply code" },
    { "650 no\r\n", "ERROR: a reply line does not start with a reply code" },
    { "250x\r\n", "ERROR: a reply code is not followed by a space or a hyphen" },
    { "25\r\n", "ERROR: a reply line does not start with a reply code" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    for (gsize step = 0; step <= 3; step++)
      {
        g_autofree char *got = parse_all (cases[i].in, step);
        if (strcmp (got, cases[i].out) != 0)
          fail_msg ("case %u, step %zu: '%s', expected '%s'", i, step, got, cases[i].out);
      }
}

/* Remote text reaches bounces, `queue show` and terminals: every octet
 * outside printable ASCII (RFC 5321 §4.2's textstring) is escaped as \xHH
 * where the text enters; HT, which the RFC allows, becomes a space. */
static void
test_reply_text_escaped (void **state)
{
  static const struct {
    const char *in;
    const char *out;
  } cases[] = {
    { "550 5.1.1 evil\x1b[2J\rX done\r\n", "550|5.1.1|evil\\x1b[2J\\x0dX done" },
    { "550-5.1.1 one\x07\r\n550 5.1.1 \x1b]0;title\x07two\r\n", "550|5.1.1|one\\x07/\\x1b]0;title\\x07two" },
    { "451 del\x7f and \x01\x1f\r\n", "451||del\\x7f and \\x01\\x1f" },
    { "250 a\tb\r\n", "250||a b" },
    { "550 c1 \xc2\x9b" "2J\r\n", "550||c1 \\xc2\\x9b2J" },                      /* U+009B, CSI */
    { "550 bidi \xe2\x80\xae" "evil\r\n", "550||bidi \\xe2\\x80\\xae" "evil" },     /* U+202E */
    { "550 latin1 \xfc\xff\r\n", "550||latin1 \\xfc\\xff" },
    { "550 5.1.1 Gr\xc3\xbc\xc3\x9f" "e\r\n", "550|5.1.1|Gr\\xc3\\xbc\\xc3\\x9f" "e" },   /* RFC 5321 text is ASCII */
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    for (gsize step = 0; step <= 3; step++)
      {
        g_autofree char *got = parse_all (cases[i].in, step);
        if (strcmp (got, cases[i].out) != 0)
          fail_msg ("case %u, step %zu: '%s', expected '%s'", i, step, got, cases[i].out);
      }
}

/* The text kept of one reply (for results, bounces, `queue show`) is capped. */
static void
test_reply_text_capped (void **state)
{
  GString *in = g_string_new (NULL);
  SmtpcReplyParser p;
  gsize used = 0;
  g_autofree char *text = NULL;

  for (int i = 0; i < 100; i++)
    g_string_append_printf (in, "550-5.7.1 line %03d \x1b[31m%s\r\n", i, "................................");
  g_string_append (in, "550 5.7.1 last\r\n");
  smtpc_reply_parser_init (&p);
  assert_int_equal (smtpc_reply_parser_feed (&p, (const guint8 *) in->str, in->len, &used), SMTPC_PARSE_DONE);
  {
    g_autoptr (SmtpcReply) r = smtpc_reply_parser_take (&p);
    text = smtpc_reply_to_string (r);
  }
  smtpc_reply_parser_clear (&p);
  g_string_free (in, TRUE);
  if (strlen (text) > SMTPC_MAX_REPLY_TEXT)
    fail_msg ("%zu octets kept, at most %d expected", strlen (text), SMTPC_MAX_REPLY_TEXT);
  assert_true (g_str_has_prefix (text, "550 5.7.1 line 000 \\x1b[31m"));
  assert_true (g_str_has_suffix (text, "..."));
  assert_true (g_utf8_validate (text, -1, NULL));
  assert_null (strchr (text, '\x1b'));
}

static void
test_reply_limits (void **state)
{
  GString *in = g_string_new (NULL);
  g_autofree char *got = NULL;
  g_autofree char *got2 = NULL;

  g_string_append (in, "250 ");
  for (int i = 0; i < SMTPC_MAX_REPLY_LINE; i++)
    g_string_append_c (in, 'x');
  g_string_append (in, "\r\n");
  got = parse_all (in->str, 1);
  assert_string_equal (got, "ERROR: a reply line is too long");

  g_string_truncate (in, 0);
  for (int i = 0; i < SMTPC_MAX_REPLY_LINES + 1; i++)
    g_string_append (in, "250-x\r\n");
  g_string_append (in, "250 x\r\n");
  got2 = parse_all (in->str, 0);
  assert_string_equal (got2, "ERROR: a reply has too many lines");
  g_string_free (in, TRUE);
}

/* The parser stops after one reply: what follows stays with the caller. */
static void
test_reply_stops (void **state)
{
  SmtpcReplyParser p;
  const char *in = "250 one\r\n250 two\r\n";
  gsize used = 0;

  smtpc_reply_parser_init (&p);
  assert_int_equal (smtpc_reply_parser_feed (&p, (const guint8 *) in, strlen (in), &used), SMTPC_PARSE_DONE);
  assert_int_equal (used, 9);
  {
    g_autoptr (SmtpcReply) r = smtpc_reply_parser_take (&p);
    g_autofree char *s = smtpc_reply_to_string (r);
    assert_string_equal (s, "250 one");
  }
  assert_int_equal (smtpc_reply_parser_feed (&p, (const guint8 *) in + 9, strlen (in) - 9, &used), SMTPC_PARSE_DONE);
  {
    g_autoptr (SmtpcReply) r = smtpc_reply_parser_take (&p);
    assert_string_equal (r->lines[0], "two");
  }
  smtpc_reply_parser_clear (&p);
}

static void
test_caps (void **state)
{
  SmtpcReply r = { 0 };
  SmtpcCaps caps;
  char *lines[] = { "mx.example.org hello", "PIPELINING", "SIZE 10240000", "8BITMIME", "auth=LOGIN",
                    "AUTH PLAIN CRAM-MD5", "DSN", "STARTTLS", "ENHANCEDSTATUSCODES", "SMTPUTF8", NULL };
  char *bare[] = { "mx.example.org", "SIZE", NULL };

  r.code = 250;
  r.lines = lines;
  smtpc_caps_parse (&caps, &r);
  assert_true (caps.esmtp && caps.pipelining && caps.size && caps.eightbitmime && caps.dsn && caps.starttls);
  assert_true (caps.enhancedstatuscodes && caps.smtputf8 && caps.auth && caps.auth_plain && caps.auth_login);
  assert_int_equal (caps.size_limit, 10240000);

  r.lines = bare;
  smtpc_caps_parse (&caps, &r);
  assert_true (caps.size);
  assert_int_equal (caps.size_limit, 0);
  assert_false (caps.pipelining || caps.auth || caps.starttls);

  r.code = 502;
  smtpc_caps_parse (&caps, &r);
  assert_false (caps.esmtp || caps.size);
}

/* ---- dot-stuffing -------------------------------------------------------- */

static char *
stuff_in_pieces (const char *in, gsize len, const gsize *cuts, guint n_cuts)
{
  SmtpcStuffer st;
  GString *out = g_string_new (NULL);
  gsize prev = 0;

  smtpc_stuffer_init (&st);
  for (guint i = 0; i <= n_cuts; i++)
    {
      gsize end = i < n_cuts ? cuts[i] : len;
      smtpc_stuff (&st, (const guint8 *) in + prev, end - prev, out);
      prev = end;
    }
  smtpc_stuff_finish (&st, out);
  return g_string_free (out, FALSE);
}

static void
check_wire (const char *wire, guint i)
{
  gsize len = strlen (wire);

  /* Only CRLF line ends: no bare CR, no bare LF. */
  for (gsize k = 0; k < len; k++)
    {
      if (wire[k] == '\r' && (k + 1 >= len || wire[k + 1] != '\n'))
        fail_msg ("case %u: bare CR at %zu", i, k);
      if (wire[k] == '\n' && (k == 0 || wire[k - 1] != '\r'))
        fail_msg ("case %u: bare LF at %zu", i, k);
    }
  /* Ends with exactly one terminator, which appears nowhere before. */
  assert_true (g_str_has_suffix (wire, "\r\n.\r\n") || strcmp (wire, ".\r\n") == 0);
  {
    const char *first = strstr (wire, "\r\n.\r\n");
    if (first != NULL && first + 5 != wire + len)
      fail_msg ("case %u: the terminator appears early", i);
  }
}

static void
test_stuffing (void **state)
{
  static const struct {
    const char *in;
    const char *out;
  } cases[] = {
    { "", ".\r\n" },
    { "a\r\n", "a\r\n.\r\n" },
    { "a", "a\r\n.\r\n" },
    { ".\r\n", "..\r\n.\r\n" },
    { "Subject: x\r\n\r\n.\r\n..\r\n.a\r\nb.\r\n", "Subject: x\r\n\r\n..\r\n...\r\n..a\r\nb.\r\n.\r\n" },
    { "a\nb\n", "a\r\nb\r\n.\r\n" },                 /* bare LF: CRLF on the wire */
    { "a\rb\r", "a\r\nb\r\n.\r\n" },                 /* bare CR: CRLF on the wire */
    { "a\r\r\nb", "a\r\n\r\nb\r\n.\r\n" },
    { "\n.\n", "\r\n..\r\n.\r\n" },
    { ".", "..\r\n.\r\n" },
    { "x\r\n.", "x\r\n..\r\n.\r\n" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      gsize len = strlen (cases[i].in);
      g_autofree char *whole = stuff_in_pieces (cases[i].in, len, NULL, 0);

      if (strcmp (whole, cases[i].out) != 0)
        fail_msg ("case %u: '%s'", i, g_strescape (whole, NULL));
      check_wire (whole, i);
      /* Every single cut, every pair of cuts, and one octet at a time. */
      for (gsize a = 0; a <= len; a++)
        for (gsize b = a; b <= len; b++)
          {
            gsize cuts[2] = { a, b };
            g_autofree char *got = stuff_in_pieces (cases[i].in, len, cuts, 2);
            if (strcmp (got, cases[i].out) != 0)
              fail_msg ("case %u, cuts at %zu and %zu: '%s'", i, a, b, g_strescape (got, NULL));
          }
      {
        gsize *cuts = g_new (gsize, len + 1);
        g_autofree char *got = NULL;
        for (gsize k = 0; k < len; k++)
          cuts[k] = k;
        got = stuff_in_pieces (cases[i].in, len, cuts, (guint) len);
        g_free (cuts);
        if (strcmp (got, cases[i].out) != 0)
          fail_msg ("case %u, one octet at a time: '%s'", i, g_strescape (got, NULL));
      }
    }
}

/* Random bodies: the stuffed form un-stuffs to the input with line ends made CRLF. */
static void
test_stuffing_random (void **state)
{
  GRand *rand = g_rand_new_with_seed (7);
  static const char alphabet[] = ".\r\nab";

  for (guint round = 0; round < 2000; round++)
    {
      gsize len = (gsize) g_rand_int_range (rand, 0, 40);
      g_autofree char *in = g_malloc (len + 1);
      g_autoptr (GString) expect = g_string_new (NULL);
      g_autoptr (GString) unstuffed = g_string_new (NULL);
      gsize cuts[3];
      g_autofree char *wire = NULL;
      gboolean bol = TRUE;

      for (gsize k = 0; k < len; k++)
        in[k] = alphabet[g_rand_int_range (rand, 0, 5)];
      in[len] = '\0';
      /* The expected message: every CRLF, bare CR or bare LF becomes CRLF. */
      for (gsize k = 0; k < len; k++)
        {
          if (in[k] == '\r')
            {
              g_string_append (expect, "\r\n");
              if (k + 1 < len && in[k + 1] == '\n')
                k++;
            }
          else if (in[k] == '\n')
            g_string_append (expect, "\r\n");
          else
            g_string_append_c (expect, in[k]);
        }
      if (expect->len > 0 && !g_str_has_suffix (expect->str, "\r\n"))
        g_string_append (expect, "\r\n");
      for (guint c = 0; c < 3; c++)
        cuts[c] = (gsize) g_rand_int_range (rand, 0, (gint32) len + 1);
      if (cuts[0] > cuts[1])
        {
          gsize t = cuts[0];
          cuts[0] = cuts[1];
          cuts[1] = t;
        }
      if (cuts[1] > cuts[2])
        cuts[2] = cuts[1];
      wire = stuff_in_pieces (in, len, cuts, 3);
      check_wire (wire, round);
      /* Un-stuff (RFC 5321 §4.5.2, the receiver's side) up to the terminator. */
      for (const char *p = wire; *p != '\0';)
        {
          const char *eol = strstr (p, "\r\n");
          if (bol && strcmp (p, ".\r\n") == 0)
            break;
          if (bol && *p == '.')
            p++;
          g_string_append_len (unstuffed, p, eol + 2 - p);
          p = eol + 2;
        }
      if (strcmp (unstuffed->str, expect->str) != 0)
        fail_msg ("round %u: '%s' came out as '%s'", round, g_strescape (in, NULL), g_strescape (unstuffed->str, NULL));
    }
  g_rand_free (rand);
}

static void
test_endpoints (void **state)
{
  static const struct { const char *in; const char *host; guint port; } good[] = {
    { "smtp.example.org:587", "smtp.example.org", 587 },
    { "[2001:db8::1]:25", "2001:db8::1", 25 },
    { "127.0.0.2:2525", "127.0.0.2", 2525 },
  };
  static const char *const bad[] = { "*:25", "host", ":25", "host:0", "host:x", NULL };

  for (guint i = 0; i < G_N_ELEMENTS (good); i++)
    {
      g_autofree char *host = NULL;
      guint16 port = 0;
      assert_true (smtpc_split_endpoint (good[i].in, &host, &port));
      assert_string_equal (host, good[i].host);
      assert_int_equal (port, good[i].port);
    }
  for (guint i = 0; bad[i] != NULL; i++)
    {
      char *host = NULL;
      guint16 port = 0;
      if (smtpc_split_endpoint (bad[i], &host, &port))
        fail_msg ("'%s' accepted", bad[i]);
      assert_null (host);
    }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_replies),
    cmocka_unit_test (test_reply_limits),
    cmocka_unit_test (test_reply_text_escaped),
    cmocka_unit_test (test_reply_text_capped),
    cmocka_unit_test (test_reply_stops),
    cmocka_unit_test (test_caps),
    cmocka_unit_test (test_stuffing),
    cmocka_unit_test (test_stuffing_random),
    cmocka_unit_test (test_endpoints),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
