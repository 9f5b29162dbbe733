/* SPDX-License-Identifier: MIT */
/* Unit tests of smtp-server's parsers and content decoder, fed whole, one octet at a time and split everywhere. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "smtp-private.h"

/* ---- command lines ---------------------------------------------------- */

static void
test_chomp (void **state)
{
  static const struct {
    const char *in;
    gsize len;
    gboolean ok;
    SmtpEol eol;
    const char *out;
  } cases[] = {
    { "NOOP\r\n", 6, TRUE, SMTP_EOL_CRLF, "NOOP" },
    { "NOOP\n", 5, TRUE, SMTP_EOL_LF, "NOOP" },
    { "NOOP", 4, TRUE, SMTP_EOL_NONE, "NOOP" },
    { "NO\rOP\r\n", 7, FALSE, SMTP_EOL_CRLF, NULL },
    { "NO\0OP\r\n", 7, FALSE, SMTP_EOL_CRLF, NULL },
    { "\r\n", 2, TRUE, SMTP_EOL_CRLF, "" },
    { "\r\r\n", 3, FALSE, SMTP_EOL_CRLF, NULL },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      char buf[64];
      gsize len = cases[i].len;
      SmtpEol eol;
      gboolean ok;

      memcpy (buf, cases[i].in, len);
      ok = smtp_line_chomp (buf, &len, &eol);
      if (ok != cases[i].ok || eol != cases[i].eol || (ok && strcmp (buf, cases[i].out) != 0))
        fail_msg ("case %zu: ok=%d eol=%d '%s'", i, ok, eol, buf);
    }
}

static void
test_command_verbs (void **state)
{
  static const struct {
    const char *line;
    SmtpCommandKind kind;
    const char *args;
  } cases[] = {
    { "EHLO client.example", SMTP_CMD_EHLO, "client.example" },
    { "ehlo client.example", SMTP_CMD_EHLO, "client.example" },
    { "HELO x", SMTP_CMD_HELO, "x" },
    { "MAIL FROM:<a@b.c>", SMTP_CMD_MAIL, "FROM:<a@b.c>" },
    { "rcpt TO:<a@b.c> NOTIFY=NEVER", SMTP_CMD_RCPT, "TO:<a@b.c> NOTIFY=NEVER" },
    { "DATA", SMTP_CMD_DATA, "" },
    { "DATA ", SMTP_CMD_DATA, "" },
    { "BDAT 10 LAST", SMTP_CMD_BDAT, "10 LAST" },
    { "RSET", SMTP_CMD_RSET, "" },
    { "NOOP anything", SMTP_CMD_NOOP, "anything" },
    { "QUIT", SMTP_CMD_QUIT, "" },
    { "HELP", SMTP_CMD_HELP, "" },
    { "VRFY bob", SMTP_CMD_VRFY, "bob" },
    { "EXPN staff", SMTP_CMD_EXPN, "staff" },
    { "STARTTLS", SMTP_CMD_STARTTLS, "" },
    { "AUTH PLAIN AGJvYgBzZWNyZXQ=", SMTP_CMD_AUTH, "PLAIN AGJvYgBzZWNyZXQ=" },
    { "MAILFROM:<a@b>", SMTP_CMD_UNKNOWN, "" },
    { "", SMTP_CMD_UNKNOWN, "" },
    { "GET / HTTP/1.0", SMTP_CMD_UNKNOWN, "/ HTTP/1.0" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *line = g_strdup (cases[i].line);
      SmtpCommand cmd;

      gboolean junk;

      smtp_parse_command (line, &cmd);
      /* junk-command-limit counts what Postfix's smtpd_junk_command_limit does, and HELP and EXPN. */
      junk = cmd.kind == SMTP_CMD_NOOP || cmd.kind == SMTP_CMD_RSET || cmd.kind == SMTP_CMD_HELP
             || cmd.kind == SMTP_CMD_VRFY || cmd.kind == SMTP_CMD_EXPN;
      if (cmd.kind != cases[i].kind || strcmp (cmd.args, cases[i].args) != 0
          || ((cmd.flags & SMTP_VERB_JUNK) != 0) != junk)
        fail_msg ("case %zu (%s): kind %d flags %#x args '%s'", i, cases[i].line, cmd.kind, cmd.flags, cmd.args);
    }
}

/* ---- MAIL and RCPT ------------------------------------------------------ */

static void
test_mail (void **state)
{
  static const struct {
    const char *args;
    gboolean esmtp;
    guint code;           /* 0: accepted */
    const char *address;
    gint64 size;
  } cases[] = {
    { "FROM:<bob@example.org>", TRUE, 0, "bob@example.org", -1 },
    { "from:<bob@example.org>", TRUE, 0, "bob@example.org", -1 },
    { "FROM: <bob@example.org>", TRUE, 0, "bob@example.org", -1 },
    { "FROM:<>", TRUE, 0, "", -1 },
    { "FROM:<> SIZE=1000", TRUE, 0, "", 1000 },
    { "FROM:<a@b.example> SIZE=12345 BODY=8BITMIME", TRUE, 0, "a@b.example", 12345 },
    { "FROM:<a@b.example> BODY=7BIT RET=HDRS ENVID=QQ+2Bx", TRUE, 0, "a@b.example", -1 },
    { "FROM:<a@b.example> AUTH=<>", TRUE, 0, "a@b.example", -1 },
    { "FROM:<a@b.example> AUTH=bob+40example.org", TRUE, 0, "a@b.example", -1 },
    { "FROM:<@relay.example,@two.example:a@b.example>", TRUE, 0, "a@b.example", -1 },
    { "FROM:<\"john smith\"@example.org>", TRUE, 0, "\"john smith\"@example.org", -1 },
    { "FROM:<a@[192.0.2.1]>", TRUE, 0, "a@[192.0.2.1]", -1 },
    { "FROM:<a@[IPv6:2001:db8::1]>", TRUE, 0, "a@[IPv6:2001:db8::1]", -1 },
    { "FROM:<j\xc3\xb6" "rg@b\xc3\xbc" "cher.example> SMTPUTF8", TRUE, 0, "j\xc3\xb6rg@b\xc3\xbc" "cher.example", -1 },
    /* refusals */
    { "FROM:<j\xc3\xb6rg@example.org>", TRUE, 553, NULL, -1 },
    { "FROM:<\xff\xfe@example.org> SMTPUTF8", TRUE, 501, NULL, -1 },
    { "FROM:bob@example.org", TRUE, 501, NULL, -1 },
    { "FROM:<bob@example.org", TRUE, 501, NULL, -1 },
    { "FROM:<bob>", TRUE, 501, NULL, -1 },
    { "FROM:<bob@>", TRUE, 501, NULL, -1 },
    { "FROM:<@example.org>", TRUE, 501, NULL, -1 },
    { "FROM:<a..b@example.org>", TRUE, 501, NULL, -1 },
    { "FROM:<.a@example.org>", TRUE, 501, NULL, -1 },
    { "FROM:<a@-example.org>", TRUE, 501, NULL, -1 },
    { "FROM:<a@example..org>", TRUE, 501, NULL, -1 },
    { "FROM:<a@[300.1.1.1]>", TRUE, 501, NULL, -1 },
    { "FROM:<a b@example.org>", TRUE, 501, NULL, -1 },
    { "FROM:<a@example.org>x", TRUE, 501, NULL, -1 },
    { "TO:<a@example.org>", TRUE, 501, NULL, -1 },
    { "FROM:<a@example.org> SIZE=abc", TRUE, 501, NULL, -1 },
    { "FROM:<a@example.org> SIZE=", TRUE, 501, NULL, -1 },
    { "FROM:<a@example.org> SIZE=123456789012345678901", TRUE, 501, NULL, -1 },
    { "FROM:<a@example.org> SIZE=1 SIZE=2", TRUE, 501, NULL, -1 },
    { "FROM:<a@example.org> BODY=BINARYMIME", TRUE, 555, NULL, -1 },
    { "FROM:<a@example.org> SMTPUTF8=yes", TRUE, 501, NULL, -1 },
    { "FROM:<a@example.org> RET=ALL", TRUE, 501, NULL, -1 },
    { "FROM:<a@example.org> ENVID=a=b", TRUE, 501, NULL, -1 },
    { "FROM:<a@example.org> ENVID=a+2b", TRUE, 501, NULL, -1 },
    { "FROM:<a@example.org> XFOO=1", TRUE, 555, NULL, -1 },
    { "FROM:<a@example.org> SIZE=10", FALSE, 555, NULL, -1 },
    { "FROM:<a@example.org> -X", TRUE, 501, NULL, -1 },
    { "FROM:<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.org>", TRUE, 501, NULL, -1 },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      SmtpParseContext ctx = { .esmtp = cases[i].esmtp };
      SmtpMailArgs m;
      SmtpReply error = { 0 };
      gboolean ok = smtp_parse_mail (cases[i].args, &ctx, &m, &error);

      if (cases[i].code == 0)
        {
          if (!ok)
            fail_msg ("case %zu (%s): refused %u %s", i, cases[i].args, error.code, error.text);
          if (strcmp (m.address, cases[i].address) != 0 || m.size != cases[i].size)
            fail_msg ("case %zu: address '%s' size %" G_GINT64_FORMAT, i, m.address, m.size);
          smtp_mail_args_clear (&m);
        }
      else if (ok || error.code != cases[i].code || error.enhanced == NULL || error.enhanced[0] != '5')
        fail_msg ("case %zu (%s): ok=%d code %u", i, cases[i].args, ok, error.code);
    }
}

static void
test_mail_params_kept (void **state)
{
  SmtpParseContext ctx = { .esmtp = TRUE };
  SmtpMailArgs m;
  SmtpReply error;

  assert_true (smtp_parse_mail ("FROM:<a@b.example> RET=hdrs ENVID=QQ+2Bx SMTPUTF8 BODY=8bitmime", &ctx, &m, &error));
  assert_string_equal (m.ret, "HDRS");
  assert_string_equal (m.envid, "QQ+2Bx");
  assert_true (m.smtputf8);
  assert_int_equal (m.body, SMTP_BODY_8BITMIME);
  smtp_mail_args_clear (&m);
}

static void
test_rcpt (void **state)
{
  static const struct {
    const char *args;
    gboolean utf8;
    guint code;
    const char *address;
    const char *notify;
    const char *orcpt;
  } cases[] = {
    { "TO:<bob@example.org>", FALSE, 0, "bob@example.org", NULL, NULL },
    { "To: <bob@example.org>", FALSE, 0, "bob@example.org", NULL, NULL },
    { "TO:<postmaster>", FALSE, 0, "postmaster", NULL, NULL },
    { "TO:<PostMaster>", FALSE, 0, "postmaster", NULL, NULL },
    { "TO:<bob@example.org> NOTIFY=NEVER", FALSE, 0, "bob@example.org", "NEVER", NULL },
    { "TO:<bob@example.org> NOTIFY=success,Failure,DELAY", FALSE, 0, "bob@example.org", "SUCCESS,FAILURE,DELAY", NULL },
    { "TO:<bob@example.org> ORCPT=rfc822;bob+40example.org", FALSE, 0, "bob@example.org", NULL,
      "rfc822;bob+40example.org" },
    { "TO:<b\xc3\xb6" "b@example.org>", TRUE, 0, "b\xc3\xb6" "b@example.org", NULL, NULL },
    { "TO:<b\xc3\xb6" "b@example.org>", FALSE, 553, NULL, NULL, NULL },
    { "TO:<>", FALSE, 501, NULL, NULL, NULL },
    { "TO:<bob>", FALSE, 501, NULL, NULL, NULL },
    { "TO:bob@example.org", FALSE, 501, NULL, NULL, NULL },
    { "FROM:<bob@example.org>", FALSE, 501, NULL, NULL, NULL },
    { "TO:<bob@example.org> NOTIFY=NEVER,SUCCESS", FALSE, 501, NULL, NULL, NULL },
    { "TO:<bob@example.org> NOTIFY=SOMETIMES", FALSE, 501, NULL, NULL, NULL },
    { "TO:<bob@example.org> NOTIFY=DELAY,DELAY", FALSE, 501, NULL, NULL, NULL },
    { "TO:<bob@example.org> ORCPT=bob@example.org", FALSE, 501, NULL, NULL, NULL },
    { "TO:<bob@example.org> ORCPT=;x", FALSE, 501, NULL, NULL, NULL },
    { "TO:<bob@example.org> SIZE=1", FALSE, 555, NULL, NULL, NULL },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      SmtpParseContext ctx = { .esmtp = TRUE, .smtputf8 = cases[i].utf8 };
      SmtpRcptArgs r;
      SmtpReply error = { 0 };
      gboolean ok = smtp_parse_rcpt (cases[i].args, &ctx, &r, &error);

      if (cases[i].code == 0)
        {
          if (!ok)
            fail_msg ("case %zu (%s): refused %u %s", i, cases[i].args, error.code, error.text);
          if (strcmp (r.address, cases[i].address) != 0 || g_strcmp0 (r.notify, cases[i].notify) != 0
              || g_strcmp0 (r.orcpt, cases[i].orcpt) != 0)
            fail_msg ("case %zu: '%s' '%s' '%s'", i, r.address, r.notify, r.orcpt);
          smtp_rcpt_args_clear (&r);
        }
      else if (ok || error.code != cases[i].code)
        fail_msg ("case %zu (%s): ok=%d code %u", i, cases[i].args, ok, error.code);
    }
}

/* Oversize input: the connection refuses lines over max-line-length before
 * they get here, but the parsers must hold whatever reaches them. */
static void
test_oversize (void **state)
{
  g_autoptr (GString) line = g_string_new ("MAIL FROM:<");
  g_autoptr (GString) domain = g_string_new (NULL);
  SmtpParseContext ctx = { .esmtp = TRUE };
  SmtpMailArgs m;
  SmtpRcptArgs r;
  SmtpReply error;
  SmtpCommand cmd;
  g_autofree char *huge = NULL;
  g_autofree char *args = NULL;

  /* A 64 KiB address: refused as syntax, not truncated. */
  for (int i = 0; i < 65536; i++)
    g_string_append_c (line, 'a');
  g_string_append (line, "@example.org>");
  smtp_parse_command (line->str, &cmd);
  assert_int_equal (cmd.kind, SMTP_CMD_MAIL);
  assert_false (smtp_parse_mail (cmd.args, &ctx, &m, &error));
  assert_int_equal (error.code, 501);

  /* A domain of 63-octet labels: 255 octets pass, 256 and a path over 256 do not. */
  while (domain->len < 300)
    g_string_append (domain, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij.");
  g_string_truncate (domain, 255);
  if (domain->str[254] == '.')
    domain->str[254] = 'x';
  assert_true (smtp_is_domain (domain->str, domain->len, FALSE));
  g_string_append_c (domain, 'x');
  assert_false (smtp_is_domain (domain->str, domain->len, FALSE));
  args = g_strdup_printf ("TO:<a@%.*s>", 250, domain->str);
  assert_true (smtp_parse_rcpt (args, &ctx, &r, &error));    /* a path of 254 octets */
  smtp_rcpt_args_clear (&r);
  g_free (args);
  args = g_strdup_printf ("TO:<aaaaaaaaaa@%.*s>", 250, domain->str);
  assert_false (smtp_parse_rcpt (args, &ctx, &r, &error));   /* 263: over 256 (RFC 5321 §4.5.3.1.3) */

  /* A megabyte of parameters. */
  huge = g_strnfill (1024 * 1024, 'X');
  g_free (args);
  args = g_strdup_printf ("FROM:<a@b.example> %s=1", huge);
  assert_false (smtp_parse_mail (args, &ctx, &m, &error));
  assert_int_equal (error.code, 555);
}

static void
test_bdat_args (void **state)
{
  static const struct {
    const char *args;
    gboolean ok;
    gint64 size;
    gboolean last;
  } cases[] = {
    { "100", TRUE, 100, FALSE },
    { "0 LAST", TRUE, 0, TRUE },
    { "4096 last", TRUE, 4096, TRUE },
    { "", FALSE, 0, FALSE },
    { "-1", FALSE, 0, FALSE },
    { "10 FIRST", FALSE, 0, FALSE },
    { "10LAST", FALSE, 0, FALSE },
    { "1234567890123456789", FALSE, 0, FALSE },
    { "x", FALSE, 0, FALSE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      gint64 size = -1;
      gboolean last = FALSE;
      gboolean ok = smtp_parse_bdat (cases[i].args, &size, &last);
      if (ok != cases[i].ok || (ok && (size != cases[i].size || last != cases[i].last)))
        fail_msg ("case %zu (%s): ok=%d size=%" G_GINT64_FORMAT " last=%d", i, cases[i].args, ok, size, last);
    }
}

static void
test_helo (void **state)
{
  assert_true (smtp_helo_syntax_ok ("mail.example.org"));
  assert_true (smtp_helo_syntax_ok ("localhost"));
  assert_true (smtp_helo_syntax_ok ("[192.0.2.1]"));
  assert_true (smtp_helo_syntax_ok ("[IPv6:::1]"));
  assert_false (smtp_helo_syntax_ok ("192.0.2.1x_"));
  assert_false (smtp_helo_syntax_ok ("under_score.example"));
  assert_false (smtp_helo_syntax_ok ("[192.0.2.1"));
  assert_false (smtp_helo_syntax_ok ("-x.example"));
  assert_false (smtp_helo_syntax_ok (""));
  assert_true (smtp_helo_chars_ok ("under_score.example"));
  assert_false (smtp_helo_chars_ok ("a\x01" "b"));
  assert_false (smtp_helo_chars_ok ("caf\xc3\xa9"));
}

/* ---- AUTH helpers --------------------------------------------------------- */

static void
test_base64_and_plain (void **state)
{
  gsize len = 0;
  g_autofree guint8 *d = smtp_base64_decode ("AGJvYgBzZWNyZXQ=", &len);
  const char *z, *c, *p;

  assert_non_null (d);
  assert_int_equal (len, 11);
  assert_true (smtp_auth_plain_split (d, len, &z, &c, &p));
  assert_string_equal (z, "");
  assert_string_equal (c, "bob");
  assert_string_equal (p, "secret");

  assert_null (smtp_base64_decode ("AGJvYgBzZWNyZXQ", &len));       /* not a multiple of 4 */
  assert_null (smtp_base64_decode ("AGJv YgBz", &len));              /* whitespace */
  assert_null (smtp_base64_decode ("A=Jv", &len));                   /* padding inside */
  assert_null (smtp_base64_decode ("AGJ*", &len));
  {
    g_autofree guint8 *e = smtp_base64_decode ("", &len);
    assert_non_null (e);
    assert_int_equal (len, 0);
  }
  {
    /* bob\0secret: one NUL only */
    g_autofree guint8 *e = smtp_base64_decode ("Ym9iAHNlY3JldA==", &len);
    assert_false (smtp_auth_plain_split (e, len, &z, &c, &p));
  }
  {
    /* \0bob\0: empty password */
    g_autofree guint8 *e = smtp_base64_decode ("AGJvYgA=", &len);
    assert_false (smtp_auth_plain_split (e, len, &z, &c, &p));
  }
}

/* ---- the content decoder ---------------------------------------------------- */

typedef struct {
  const char *in;
  gboolean raw;
  gboolean reject;
  gboolean bol;
  SmtpDecResult result;
  const char *out;          /* what is stored */
  gssize used;              /* octets consumed; -1: all */
  gsize in_len;             /* for input holding NULs; 0: strlen */
  gsize out_n;              /* likewise for the output */
} DecCase;

static const DecCase dec_cases[] = {
  /* ordinary content, the end mark, and what follows it left alone (pipelining) */
  { "Subject: x\r\n\r\nbody\r\n.\r\n", FALSE, FALSE, TRUE, SMTP_DEC_END, "Subject: x\r\n\r\nbody\r\n", -1 },
  { "a\r\n.\r\nQUIT\r\n", FALSE, FALSE, TRUE, SMTP_DEC_END, "a\r\n", 6 },
  { ".\r\n", FALSE, FALSE, TRUE, SMTP_DEC_END, "", -1 },
  { ".\r\n", FALSE, FALSE, FALSE, SMTP_DEC_MORE, ".\r\n", -1 },
  /* dot-unstuffing (RFC 5321 §4.5.2) */
  { "..\r\n.\r\n", FALSE, FALSE, TRUE, SMTP_DEC_END, ".\r\n", -1 },
  { "a\r\n..b\r\n...\r\n.\r\n", FALSE, FALSE, TRUE, SMTP_DEC_END, "a\r\n.b\r\n..\r\n", -1 },
  { "a.\r\n.b\r\n.\r\n", FALSE, FALSE, TRUE, SMTP_DEC_END, "a.\r\nb\r\n", -1 },
  /* end-of-data look-alikes never end the message */
  { "a\n.\nb\r\n", FALSE, FALSE, TRUE, SMTP_DEC_MORE, "a\r\n.\r\nb\r\n", -1 },
  { "a\n.\r\nb\r\n", FALSE, FALSE, TRUE, SMTP_DEC_MORE, "a\r\n.\r\nb\r\n", -1 },
  { "a\r\n.\nb\r\n", FALSE, FALSE, TRUE, SMTP_DEC_MORE, "a\r\n\r\nb\r\n", -1 },
  { "a\r.\rb\r\n", FALSE, FALSE, TRUE, SMTP_DEC_MORE, "a\r\n.\r\nb\r\n", -1 },
  { "a\r\n.\rb\r\n", FALSE, FALSE, TRUE, SMTP_DEC_MORE, "a\r\n\r\nb\r\n", -1 },
  { "a\r\n. \r\nb\r\n", FALSE, FALSE, TRUE, SMTP_DEC_MORE, "a\r\n \r\nb\r\n", -1 },
  { "a\r\n\r.\r\n", FALSE, FALSE, TRUE, SMTP_DEC_MORE, "a\r\n\r\n.\r\n", -1 },
  /* ...but CR CR LF . CR LF holds a real CRLF.CRLF */
  { "a\r\r\n.\r\n", FALSE, FALSE, TRUE, SMTP_DEC_END, "a\r\n\r\n", -1 },
  /* bare LF / CR with bare-lf = reject */
  { "a\nb\r\n.\r\n", FALSE, TRUE, TRUE, SMTP_DEC_BARE, "a", 1 },
  { "a\rb\r\n.\r\n", FALSE, TRUE, TRUE, SMTP_DEC_BARE, "a", 2 },
  { "a\r\n.\rb", FALSE, TRUE, TRUE, SMTP_DEC_BARE, "a\r\n", 5 },
  { "a\r\nb\r\n.\r\n", FALSE, TRUE, TRUE, SMTP_DEC_END, "a\r\nb\r\n", -1 },
  /* BDAT content: no dots, no end mark, the same CR/LF rules */
  { "a\r\n.\r\nb", TRUE, FALSE, FALSE, SMTP_DEC_MORE, "a\r\n.\r\nb", -1 },
  { "a\nb\rc", TRUE, FALSE, FALSE, SMTP_DEC_MORE, "a\r\nb\r\nc", -1 },
  { "a\nb", TRUE, TRUE, FALSE, SMTP_DEC_BARE, "a", 1 },
  { "", FALSE, FALSE, TRUE, SMTP_DEC_MORE, "", -1 },
  { "\0\x80\xff\r\n.\r\n", FALSE, FALSE, TRUE, SMTP_DEC_END, "\0\x80\xff\r\n", -1, 8, 5 },
};

static gsize
case_len (const DecCase *c)
{
  return c->in_len != 0 ? c->in_len : strlen (c->in);
}

static gsize
out_len (const DecCase *c)
{
  return c->in_len != 0 ? c->out_n : strlen (c->out);
}

/* Feeds IN split at the given points (sorted), as TCP might deliver it. */
static void
run_dec_case (gsize index, const DecCase *c, const gsize *cuts, gsize n_cuts)
{
  gsize len = case_len (c);
  SmtpDecoder dec;
  g_autoptr (GByteArray) out = g_byte_array_new ();
  SmtpDecResult r = SMTP_DEC_MORE;
  gsize pos = 0;
  gsize want_used = c->used < 0 ? len : (gsize) c->used;

  smtp_decoder_init (&dec, c->raw, c->reject, c->bol);
  for (gsize k = 0; k <= n_cuts && r == SMTP_DEC_MORE; k++)
    {
      gsize end = k < n_cuts ? cuts[k] : len;
      gsize used = 0;
      if (end < pos)
        continue;
      r = smtp_decoder_feed (&dec, (const guint8 *) c->in + pos, end - pos, out, &used);
      if (r == SMTP_DEC_MORE && used != end - pos)
        fail_msg ("case %zu: MORE but used %zu of %zu", index, used, end - pos);
      pos += used;
    }
  if (r != c->result || pos != want_used || out->len != out_len (c) || memcmp (out->data, c->out, out->len) != 0)
    fail_msg ("case %zu (%zu cuts, first %zu): result %d (want %d), used %zu (want %zu), out %u octets '%.*s'",
              index, n_cuts, n_cuts > 0 ? cuts[0] : 0, r, c->result, pos, want_used, out->len, (int) out->len,
              (const char *) out->data);
}

static void
test_decoder_whole (void **state)
{
  for (gsize i = 0; i < G_N_ELEMENTS (dec_cases); i++)
    run_dec_case (i, &dec_cases[i], NULL, 0);
}

static void
test_decoder_one_octet_at_a_time (void **state)
{
  for (gsize i = 0; i < G_N_ELEMENTS (dec_cases); i++)
    {
      gsize len = case_len (&dec_cases[i]);
      g_autofree gsize *cuts = g_new (gsize, len + 1);
      for (gsize k = 0; k < len; k++)
        cuts[k] = k + 1;
      run_dec_case (i, &dec_cases[i], cuts, len);
    }
}

static void
test_decoder_every_split (void **state)
{
  for (gsize i = 0; i < G_N_ELEMENTS (dec_cases); i++)
    for (gsize a = 0; a <= case_len (&dec_cases[i]); a++)
      for (gsize b = a; b <= case_len (&dec_cases[i]); b++)
        {
          gsize cuts[2] = { a, b };
          run_dec_case (i, &dec_cases[i], cuts, 2);
        }
}

static void
test_decoder_large_pipelined (void **state)
{
  /* A 1 MiB message with long lines and dot-stuffed lines, followed by the
   * next commands, fed in odd-sized pieces. */
  g_autoptr (GString) in = g_string_new (NULL);
  g_autoptr (GString) want = g_string_new (NULL);
  g_autoptr (GByteArray) out = g_byte_array_new ();
  SmtpDecoder dec;
  gsize pos = 0, piece = 1;
  SmtpDecResult r = SMTP_DEC_MORE;

  for (int i = 0; in->len < 1024 * 1024; i++)
    {
      GString *line = g_string_new (NULL);
      for (int k = 0; k < i % 3000; k++)
        g_string_append_c (line, (char) ('a' + k % 26));
      if (i % 7 == 0)
        {
          g_string_append_printf (in, "..%s\r\n", line->str);
          g_string_append_printf (want, ".%s\r\n", line->str);
        }
      else
        {
          g_string_append_printf (in, "%s\r\n", line->str);
          g_string_append_printf (want, "%s\r\n", line->str);
        }
      g_string_free (line, TRUE);
    }
  g_string_append (in, ".\r\nMAIL FROM:<>\r\n");
  smtp_decoder_init (&dec, FALSE, TRUE, TRUE);
  while (pos < in->len && r == SMTP_DEC_MORE)
    {
      gsize used = 0;
      gsize n = MIN (piece, in->len - pos);
      r = smtp_decoder_feed (&dec, (const guint8 *) in->str + pos, n, out, &used);
      pos += used;
      piece = piece * 3 % 65521 + 1;
    }
  assert_int_equal (r, SMTP_DEC_END);
  assert_int_equal (in->len - pos, strlen ("MAIL FROM:<>\r\n"));
  assert_int_equal (out->len, want->len);
  assert_memory_equal (out->data, want->str, want->len);
}

static void
test_decoder_finish_raw (void **state)
{
  SmtpDecoder dec;
  g_autoptr (GByteArray) out = g_byte_array_new ();
  gsize used;

  smtp_decoder_init (&dec, TRUE, FALSE, FALSE);
  smtp_decoder_feed (&dec, (const guint8 *) "abc", 3, out, &used);
  assert_int_equal (smtp_decoder_finish_raw (&dec, out), SMTP_DEC_END);
  assert_int_equal (out->len, 5);
  assert_memory_equal (out->data, "abc\r\n", 5);

  g_byte_array_set_size (out, 0);
  smtp_decoder_init (&dec, TRUE, FALSE, FALSE);
  smtp_decoder_feed (&dec, (const guint8 *) "abc\r", 4, out, &used);
  assert_int_equal (smtp_decoder_finish_raw (&dec, out), SMTP_DEC_END);
  assert_int_equal (out->len, 5);

  g_byte_array_set_size (out, 0);
  smtp_decoder_init (&dec, TRUE, TRUE, FALSE);
  smtp_decoder_feed (&dec, (const guint8 *) "abc\r", 4, out, &used);
  assert_int_equal (smtp_decoder_finish_raw (&dec, out), SMTP_DEC_BARE);

  g_byte_array_set_size (out, 0);
  smtp_decoder_init (&dec, TRUE, FALSE, FALSE);
  assert_int_equal (smtp_decoder_finish_raw (&dec, out), SMTP_DEC_END);
  assert_int_equal (out->len, 0);
}

/* ---- the Received field ------------------------------------------------------- */

static void
test_received (void **state)
{
  SmtpReceivedInfo info = {
    .helo = "client.example",
    .client_ip = "192.0.2.7",
    .hostname = "mx.example.org",
    .protocol = smtp_with_protocol (TRUE, TRUE, TRUE, FALSE),
    .tls = "TLS1.3 TLS_AES_256_GCM_SHA384",
    .auth_user = "bob@example.org",
    .id = "s1-1",
    .for_rcpt = "alice@example.org",
    .unix_time = 1700000000,
  };
  g_autofree char *h = smtp_received_header (&info);

  assert_non_null (strstr (h, "Received: from client.example ([192.0.2.7])\r\n"));
  assert_non_null (strstr (h, "\t(using TLS1.3 TLS_AES_256_GCM_SHA384)\r\n"));
  assert_non_null (strstr (h, "\t(authenticated user bob@example.org)\r\n"));
  assert_non_null (strstr (h, "\tby mx.example.org (Pillarbox) with ESMTPSA id s1-1\r\n"));
  assert_non_null (strstr (h, "\tfor <alice@example.org>;\r\n"));
  assert_true (g_str_has_suffix (h, "2023\r\n") || strstr (h, " 2023 ") != NULL);
  assert_true (g_str_has_suffix (h, "\r\n"));
  /* Every line ends in CRLF and no line is empty. */
  assert_null (strstr (h, "\r\n\r\n"));
  for (const char *p = h; *p != '\0'; p++)
    if (*p == '\n')
      assert_true (p > h && p[-1] == '\r');

  info.helo = "bad(helo)\\";
  info.client_ip = "2001:db8::1";
  info.tls = NULL;
  info.auth_user = NULL;
  info.for_rcpt = NULL;
  info.protocol = smtp_with_protocol (TRUE, FALSE, FALSE, TRUE);
  g_free (h);
  h = smtp_received_header (&info);
  assert_non_null (strstr (h, "Received: from [IPv6:2001:db8::1] (helo bad?helo?\?)\r\n"));
  assert_non_null (strstr (h, "with UTF8SMTP id"));
  assert_null (strstr (h, "for <"));

  assert_string_equal (smtp_with_protocol (FALSE, FALSE, FALSE, FALSE), "SMTP");
  assert_string_equal (smtp_with_protocol (TRUE, FALSE, FALSE, FALSE), "ESMTP");
  assert_string_equal (smtp_with_protocol (TRUE, TRUE, FALSE, FALSE), "ESMTPS");
  assert_string_equal (smtp_with_protocol (TRUE, FALSE, TRUE, FALSE), "ESMTPA");
  assert_string_equal (smtp_with_protocol (TRUE, TRUE, TRUE, TRUE), "UTF8SMTPSA");
}

static void
test_date (void **state)
{
  g_autofree char *d = NULL;
  GRegex *re;

  g_setenv ("TZ", "UTC", TRUE);
  d = smtp_rfc5322_date (1700000000);
  assert_string_equal (d, "Tue, 14 Nov 2023 22:13:20 +0000");
  g_free (d);
  g_setenv ("TZ", "America/New_York", TRUE);
  d = smtp_rfc5322_date (1700000000);
  re = g_regex_new ("^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                    "\\d{4} \\d\\d:\\d\\d:\\d\\d [+-]\\d{4}$", 0, 0, NULL);
  assert_true (g_regex_match (re, d, 0, NULL));
  g_regex_unref (re);
  g_unsetenv ("TZ");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_chomp),
    cmocka_unit_test (test_command_verbs),
    cmocka_unit_test (test_mail),
    cmocka_unit_test (test_mail_params_kept),
    cmocka_unit_test (test_rcpt),
    cmocka_unit_test (test_oversize),
    cmocka_unit_test (test_bdat_args),
    cmocka_unit_test (test_helo),
    cmocka_unit_test (test_base64_and_plain),
    cmocka_unit_test (test_decoder_whole),
    cmocka_unit_test (test_decoder_one_octet_at_a_time),
    cmocka_unit_test (test_decoder_every_split),
    cmocka_unit_test (test_decoder_large_pipelined),
    cmocka_unit_test (test_decoder_finish_raw),
    cmocka_unit_test (test_received),
    cmocka_unit_test (test_date),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
