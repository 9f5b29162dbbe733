/* SPDX-License-Identifier: MIT */
/* Unit tests of pop3-server's parser: command lines (byte at a time and pipelined through a real PbConn), numbers, SASL PLAIN, CAPA, byte-stuffing, TOP. */
#include "config.h"
#include "test-help.h"
#include "pop3-private.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- command lines ---------------------------------------------------------- */

typedef struct {
  const char *line;
  Pop3ParseResult result;
  Pop3CmdKind kind;
  guint argc;
  const char *arg0;
  const char *arg1;
} ParseCase;

static const ParseCase parse_cases[] = {
  { "", POP3_PARSE_EMPTY, POP3_CMD_UNKNOWN, 0, NULL, NULL },
  { "USER bob", POP3_PARSE_OK, POP3_CMD_USER, 1, "bob", NULL },
  { "user bob@example.org", POP3_PARSE_OK, POP3_CMD_USER, 1, "bob@example.org", NULL },
  { "USER", POP3_PARSE_BAD_ARGS, POP3_CMD_USER, 0, NULL, NULL },
  { "USER a b", POP3_PARSE_BAD_ARGS, POP3_CMD_USER, 1, "a", NULL },
  { "PASS secret", POP3_PARSE_OK, POP3_CMD_PASS, 1, "secret", NULL },
  { "PASS two words ", POP3_PARSE_OK, POP3_CMD_PASS, 1, "two words ", NULL },
  { "PASS  lead", POP3_PARSE_OK, POP3_CMD_PASS, 1, " lead", NULL },
  { "PASS", POP3_PARSE_BAD_ARGS, POP3_CMD_PASS, 0, NULL, NULL },
  { "PASS ", POP3_PARSE_BAD_ARGS, POP3_CMD_PASS, 0, NULL, NULL },
  { "STAT", POP3_PARSE_OK, POP3_CMD_STAT, 0, NULL, NULL },
  { "stat ", POP3_PARSE_OK, POP3_CMD_STAT, 0, NULL, NULL },
  { "STAT 1", POP3_PARSE_BAD_ARGS, POP3_CMD_STAT, 1, "1", NULL },
  { "LIST", POP3_PARSE_OK, POP3_CMD_LIST, 0, NULL, NULL },
  { "LIST 12", POP3_PARSE_OK, POP3_CMD_LIST, 1, "12", NULL },
  { "LIST  12  ", POP3_PARSE_OK, POP3_CMD_LIST, 1, "12", NULL },
  { "LIST 1 2", POP3_PARSE_BAD_ARGS, POP3_CMD_LIST, 1, "1", NULL },
  { "RETR 1", POP3_PARSE_OK, POP3_CMD_RETR, 1, "1", NULL },
  { "RETR", POP3_PARSE_BAD_ARGS, POP3_CMD_RETR, 0, NULL, NULL },
  { "TOP 1 10", POP3_PARSE_OK, POP3_CMD_TOP, 2, "1", "10" },
  { "TOP 1", POP3_PARSE_BAD_ARGS, POP3_CMD_TOP, 1, "1", NULL },
  { "DELE 3", POP3_PARSE_OK, POP3_CMD_DELE, 1, "3", NULL },
  { "UIDL", POP3_PARSE_OK, POP3_CMD_UIDL, 0, NULL, NULL },
  { "UIDL 7", POP3_PARSE_OK, POP3_CMD_UIDL, 1, "7", NULL },
  { "NOOP", POP3_PARSE_OK, POP3_CMD_NOOP, 0, NULL, NULL },
  { "RSET", POP3_PARSE_OK, POP3_CMD_RSET, 0, NULL, NULL },
  { "QUIT", POP3_PARSE_OK, POP3_CMD_QUIT, 0, NULL, NULL },
  { "CAPA", POP3_PARSE_OK, POP3_CMD_CAPA, 0, NULL, NULL },
  { "STLS", POP3_PARSE_OK, POP3_CMD_STLS, 0, NULL, NULL },
  { "AUTH", POP3_PARSE_OK, POP3_CMD_AUTH, 0, NULL, NULL },
  { "AUTH PLAIN", POP3_PARSE_OK, POP3_CMD_AUTH, 1, "PLAIN", NULL },
  { "AUTH PLAIN AGJvYgBzZWNyZXQ=", POP3_PARSE_OK, POP3_CMD_AUTH, 2, "PLAIN", "AGJvYgBzZWNyZXQ=" },
  { "APOP bob 0123456789abcdef", POP3_PARSE_OK, POP3_CMD_APOP, 2, "bob", "0123456789abcdef" },
  { "RETRX 1", POP3_PARSE_UNKNOWN, POP3_CMD_UNKNOWN, 0, NULL, NULL },
  { "RET 1", POP3_PARSE_UNKNOWN, POP3_CMD_UNKNOWN, 0, NULL, NULL },
  { "GET / HTTP/1.1", POP3_PARSE_UNKNOWN, POP3_CMD_UNKNOWN, 0, NULL, NULL },
  { " USER bob", POP3_PARSE_UNKNOWN, POP3_CMD_UNKNOWN, 0, NULL, NULL },
  { "USER bob\rPASS x", POP3_PARSE_BAD_CHAR, POP3_CMD_UNKNOWN, 0, NULL, NULL },
  { "\tSTAT", POP3_PARSE_UNKNOWN, POP3_CMD_UNKNOWN, 0, NULL, NULL },
};

static void
test_parse_table (void **state)
{
  for (guint i = 0; i < G_N_ELEMENTS (parse_cases); i++)
    {
      const ParseCase *c = &parse_cases[i];
      g_autofree char *line = g_strdup (c->line);
      Pop3Command cmd;
      Pop3ParseResult r = pop3_command_parse (line, &cmd);

      if (r != c->result)
        fail_msg ("case %u (%s): result %d, expected %d", i, c->line, r, c->result);
      if (r == POP3_PARSE_OK || r == POP3_PARSE_BAD_ARGS)
        if (cmd.kind != c->kind)
          fail_msg ("case %u (%s): kind %d, expected %d", i, c->line, cmd.kind, c->kind);
      if (r != POP3_PARSE_OK)
        continue;
      if (cmd.argc != c->argc)
        fail_msg ("case %u (%s): argc %u, expected %u", i, c->line, cmd.argc, c->argc);
      if (c->arg0 != NULL && g_strcmp0 (cmd.argv[0], c->arg0) != 0)
        fail_msg ("case %u (%s): arg0 '%s', expected '%s'", i, c->line, cmd.argv[0], c->arg0);
      if (c->arg1 != NULL && g_strcmp0 (cmd.argv[1], c->arg1) != 0)
        fail_msg ("case %u (%s): arg1 '%s', expected '%s'", i, c->line, cmd.argv[1], c->arg1);
    }
}

static void
test_parse_states (void **state)
{
  struct { const char *line; guint states; } cases[] = {
    { "USER x", POP3_IN_AUTHORIZATION },
    { "STLS", POP3_IN_AUTHORIZATION },
    { "CAPA", POP3_IN_AUTHORIZATION | POP3_IN_TRANSACTION },
    { "QUIT", POP3_IN_AUTHORIZATION | POP3_IN_TRANSACTION },
    { "RETR 1", POP3_IN_TRANSACTION },
    { "NOOP", POP3_IN_TRANSACTION },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *line = g_strdup (cases[i].line);
      Pop3Command cmd;
      assert_int_equal (pop3_command_parse (line, &cmd), POP3_PARSE_OK);
      if (cmd.states != cases[i].states)
        fail_msg ("case %u (%s): states %x, expected %x", i, cases[i].line, cmd.states, cases[i].states);
    }
}

static void
test_chomp (void **state)
{
  struct { const char *in; const char *out; } cases[] = {
    { "STAT\r\n", "STAT" }, { "STAT\n", "STAT" }, { "STAT", "STAT" }, { "\r\n", "" }, { "A\r\r\n", "A\r" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *s = g_strdup (cases[i].in);
      gsize n = pop3_line_chomp (s, strlen (s));
      if (strcmp (s, cases[i].out) != 0 || n != strlen (cases[i].out))
        fail_msg ("case %u: '%s' -> '%s'", i, cases[i].in, s);
    }
}

static void
test_numbers (void **state)
{
  struct { const char *s; guint64 max; gboolean ok; guint64 v; } cases[] = {
    { "1", 10, TRUE, 1 },
    { "0", 10, TRUE, 0 },
    { "10", 10, TRUE, 10 },
    { "11", 10, FALSE, 0 },
    { "007", 10, TRUE, 7 },
    { "", 10, FALSE, 0 },
    { "-1", 10, FALSE, 0 },
    { "+1", 10, FALSE, 0 },
    { "1a", 10, FALSE, 0 },
    { " 1", 10, FALSE, 0 },
    { "4294967295", G_MAXUINT, TRUE, 4294967295u },
    { "4294967296", G_MAXUINT, FALSE, 0 },
    { "18446744073709551615", G_MAXUINT64, TRUE, G_MAXUINT64 },
    { "18446744073709551616", G_MAXUINT64, FALSE, 0 },
    { "99999999999999999999999", G_MAXUINT64, FALSE, 0 },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      guint64 v = 12345;
      gboolean ok = pop3_parse_number (cases[i].s, cases[i].max, &v);
      if (ok != cases[i].ok || (ok && v != cases[i].v))
        fail_msg ("case %u (%s): ok %d v %" G_GUINT64_FORMAT, i, cases[i].s, ok, v);
    }
  assert_false (pop3_parse_number (NULL, 10, NULL));
}

/* ---- SASL PLAIN ---------------------------------------------------------- */

static char *
b64 (const char *data, gsize len)
{
  return g_base64_encode ((const guchar *) data, len);
}

static void
test_sasl_plain (void **state)
{
  struct { const char *raw; gsize len; gboolean ok; const char *z, *c, *p; } cases[] = {
    { "\0bob\0secret", 11, TRUE, "", "bob", "secret" },
    { "bob\0bob\0secret", 14, TRUE, "bob", "bob", "secret" },
    { "\0bob\0pass word", 14, TRUE, "", "bob", "pass word" },
    { "\0bob\0", 5, FALSE },                  /* empty password */
    { "\0\0secret", 8, FALSE },               /* empty authcid */
    { "bobsecret", 9, FALSE },                /* no NUL */
    { "\0bob", 4, FALSE },                    /* one NUL */
    { "\0bob\0sec\0ret", 12, FALSE },         /* a third NUL */
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *enc = b64 (cases[i].raw, cases[i].len);
      char *z, *c, *p;
      gboolean ok = pop3_sasl_plain_decode (enc, &z, &c, &p);

      if (ok != cases[i].ok)
        fail_msg ("case %u: ok %d", i, ok);
      if (ok && (strcmp (z, cases[i].z) != 0 || strcmp (c, cases[i].c) != 0 || strcmp (p, cases[i].p) != 0))
        fail_msg ("case %u: '%s' '%s' '%s'", i, z, c, p);
      if (!ok)
        assert_true (z == NULL && c == NULL && p == NULL);
      g_free (z);
      g_free (c);
      g_free (p);
    }

  /* Not base64: refused, never guessed at. */
  {
    const char *bad[] = { "", "=", "AGJvYgBzZWNyZXQ", "AGJvYgBzZWNyZXQ=x", "AGJv*gBzZWNyZXQ=", "A=Jv", "AGJvYgBzZWNyZXQ==" };
    for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
      {
        char *z, *c, *p;
        if (pop3_sasl_plain_decode (bad[i], &z, &c, &p))
          fail_msg ("bad base64 %u (%s) accepted", i, bad[i]);
      }
  }
  /* 255 octets is the most RFC 4616 allows for each part. */
  {
    g_autofree char *long_pw = g_strnfill (256, 'x');
    g_autofree char *raw = g_strdup_printf ("%c%s%c%s", 0, "bob", 0, long_pw);
    g_autofree char *enc = b64 (raw, 1 + 3 + 1 + 256);
    char *z, *c, *p;
    assert_false (pop3_sasl_plain_decode (enc, &z, &c, &p));
  }
}

static void
test_expire (void **state)
{
  assert_true (pop3_expire_is_valid ("NEVER"));
  assert_true (pop3_expire_is_valid ("never"));
  assert_true (pop3_expire_is_valid ("0"));
  assert_true (pop3_expire_is_valid ("30"));
  assert_false (pop3_expire_is_valid (""));
  assert_false (pop3_expire_is_valid ("30 USER"));
  assert_false (pop3_expire_is_valid ("-1"));
  assert_false (pop3_expire_is_valid ("soon"));
}

/* ---- CAPA ------------------------------------------------------------------ */

static void
test_capa (void **state)
{
  Pop3CapaInfo plain = { FALSE, FALSE, FALSE, TRUE, "NEVER", "Pillarbox" };
  Pop3CapaInfo tls = { FALSE, TRUE, TRUE, FALSE, "NEVER", "Pillarbox" };
  Pop3CapaInfo trans = { TRUE, TRUE, TRUE, FALSE, "30", "" };
  g_autofree char *a = pop3_capa_format (&plain);
  g_autofree char *b = pop3_capa_format (&tls);
  g_autofree char *c = pop3_capa_format (&trans);

  assert_string_equal (a, "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
                          "PIPELINING\r\nSTLS\r\nEXPIRE NEVER\r\nIMPLEMENTATION Pillarbox\r\n.\r\n");
  assert_string_equal (b, "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
                          "PIPELINING\r\nUSER\r\nSASL PLAIN\r\nEXPIRE NEVER\r\nIMPLEMENTATION Pillarbox\r\n.\r\n");
  assert_string_equal (c, "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
                          "PIPELINING\r\nEXPIRE 30\r\n.\r\n");
}

/* ---- byte-stuffing --------------------------------------------------------- */

static void
emit_append (const void *data, gsize len, gpointer user_data)
{
  g_string_append_len (user_data, data, (gssize) len);
}

/* What RFC 1939 §3 says, written the slow way. */
static GString *
stuff_reference (const char *in, gsize len)
{
  GString *out = g_string_new (NULL);
  gboolean bol = TRUE;

  for (gsize i = 0; i < len; i++)
    {
      if (bol && in[i] == '.')
        g_string_append_c (out, '.');
      g_string_append_c (out, in[i]);
      bol = in[i] == '\n';
    }
  return out;
}

static GString *
stuff_in_chunks (const char *in, gsize len, GRand *rand, gsize fixed)
{
  GString *out = g_string_new (NULL);
  Pop3Stuffer st;
  gsize off = 0;

  pop3_stuffer_init (&st);
  while (off < len)
    {
      gsize n = fixed != 0 ? fixed : (gsize) g_rand_int_range (rand, 0, 9);
      n = MIN (n, len - off);
      pop3_stuffer_feed (&st, (const guint8 *) in + off, n, emit_append, out);
      off += n;
    }
  return out;
}

static void
test_stuffing (void **state)
{
  const char *cases[] = {
    "",
    ".",
    "..\r\n",
    ".\r\n",
    "a\r\n.\r\nb\r\n",
    "a.b\r\n.c\r\n..d\r\n",
    "\r\n.\r\n.\r\n",
    "no newline at end.",
    "x\n.bare-lf\n",
    "Subject: hi\r\n\r\n.\r\n..\r\n...\r\n.x.\r\nend\r\n",
  };
  GRand *rand = g_rand_new_with_seed (1939);

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      gsize len = strlen (cases[i]);
      g_autoptr (GString) want = stuff_reference (cases[i], len);
      g_autoptr (GString) whole = stuff_in_chunks (cases[i], len, NULL, len > 0 ? len : 1);
      g_autoptr (GString) bytes = stuff_in_chunks (cases[i], len, NULL, 1);

      if (!g_string_equal (whole, want))
        fail_msg ("case %u: whole: '%s', expected '%s'", i, whole->str, want->str);
      if (!g_string_equal (bytes, want))
        fail_msg ("case %u: byte at a time: '%s', expected '%s'", i, bytes->str, want->str);
      for (int k = 0; k < 50; k++)
        {
          g_autoptr (GString) random = stuff_in_chunks (cases[i], len, rand, 0);
          if (!g_string_equal (random, want))
            fail_msg ("case %u, random split %d: '%s'", i, k, random->str);
        }
    }

  /* A dot right at a 64 KiB chunk boundary, as storage reads deliver it. */
  {
    GString *msg = g_string_new (NULL);
    while (msg->len < POP3_READ_CHUNK - 2)
      g_string_append (msg, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n");
    g_string_truncate (msg, POP3_READ_CHUNK - 2);
    g_string_append (msg, "\r\n.dot at the boundary\r\n.\r\n");
    g_assert (msg->str[POP3_READ_CHUNK] == '.');
    {
      g_autoptr (GString) want = stuff_reference (msg->str, msg->len);
      g_autoptr (GString) got = stuff_in_chunks (msg->str, msg->len, NULL, POP3_READ_CHUNK);
      assert_true (g_string_equal (got, want));
    }
    g_string_free (msg, TRUE);
  }
  g_rand_free (rand);
}

/* ---- TOP ----------------------------------------------------------------- */

static GString *
top_in_chunks (const char *in, guint64 lines, gsize chunk)
{
  GString *out = g_string_new (NULL);
  Pop3TopFilter tf;
  gsize len = strlen (in);

  pop3_top_filter_init (&tf, lines);
  for (gsize off = 0; off < len && !tf.done; off += chunk)
    {
      gsize n = MIN (chunk, len - off);
      gsize keep = pop3_top_filter_feed (&tf, (const guint8 *) in + off, n);
      assert_true (keep <= n);
      g_string_append_len (out, in + off, (gssize) keep);
    }
  return out;
}

static void
test_top (void **state)
{
  const char *msg = "Return-Path: <a@b>\r\nSubject: x\r\n continued\r\n\r\nline 1\r\n\r\nline 3\r\nline 4\r\n";
  struct { const char *in; guint64 lines; const char *want; } cases[] = {
    { msg, 0, "Return-Path: <a@b>\r\nSubject: x\r\n continued\r\n\r\n" },
    { msg, 1, "Return-Path: <a@b>\r\nSubject: x\r\n continued\r\n\r\nline 1\r\n" },
    { msg, 2, "Return-Path: <a@b>\r\nSubject: x\r\n continued\r\n\r\nline 1\r\n\r\n" },
    { msg, 4, msg },
    { msg, 100, msg },
    { "Subject: no body\r\n", 5, "Subject: no body\r\n" },
    { "Subject: no body, no end", 0, "Subject: no body, no end" },
    { "A: b\n\nbody\nmore\n", 1, "A: b\n\nbody\n" },
    { "\r\nbody first\r\n", 0, "\r\n" },
    { "A: b\r\n\r\nbody without end", 1, "A: b\r\n\r\nbody without end" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    for (gsize chunk = 1; chunk <= 8; chunk++)
      {
        g_autoptr (GString) got = top_in_chunks (cases[i].in, cases[i].lines, chunk);
        if (strcmp (got->str, cases[i].want) != 0)
          fail_msg ("case %u, chunks of %zu: '%s', expected '%s'", i, chunk, got->str, cases[i].want);
      }
}

/* ---- command lines through a real connection ------------------------------- */

typedef struct {
  PbConn *conn;
  GPtrArray *seen;    /* "KIND argc arg0 arg1" or "RESULT n" per line */
  gboolean eof;
} LineSink;

static void
sink_readable (PbConn *conn, gpointer user_data)
{
  LineSink *sink = user_data;
  const char *line;
  gsize len;

  for (;;)
    switch (pb_conn_read_line (conn, &line, &len))
      {
      case PB_CONN_LINE:
        {
          g_autofree char *copy = g_strndup (line, len);
          Pop3Command cmd;
          Pop3ParseResult r;

          pop3_line_chomp (copy, len);
          r = pop3_command_parse (copy, &cmd);
          if (r == POP3_PARSE_OK)
            g_ptr_array_add (sink->seen, g_strdup_printf ("%s %u %s %s", cmd.name, cmd.argc,
                                                          cmd.argc > 0 ? cmd.argv[0] : "-",
                                                          cmd.argc > 1 ? cmd.argv[1] : "-"));
          else
            g_ptr_array_add (sink->seen, g_strdup_printf ("error %d", r));
          break;
        }
      case PB_CONN_TOO_LONG:
        g_ptr_array_add (sink->seen, g_strdup ("too long"));
        break;
      case PB_CONN_AGAIN:
        return;
      default:
        sink->eof = TRUE;
        return;
      }
}

static void
sink_closed (PbConn *conn, const GError *error, gpointer user_data)
{
  ((LineSink *) user_data)->eof = TRUE;
}

static const char pipelined_script[] =
  "CAPA\r\n"
  "USER bob\r\n"
  "PASS pass word\r\n"
  "STAT\r\n"
  "LIST\r\n"
  "list 2\n"
  "UIDL 1\r\n"
  "TOP 1 0\r\n"
  "RETR 1\r\n"
  "DELE 1\r\n"
  "\r\n"
  "FOO bar\r\n"
  "RSET\r\n"
  "NOOP\r\n"
  "QUIT\r\n";

static const char *const pipelined_expected[] = {
  "CAPA 0 - -", "USER 1 bob -", "PASS 1 pass word -", "STAT 0 - -", "LIST 0 - -", "LIST 1 2 -",
  "UIDL 1 1 -", "TOP 2 1 0", "RETR 1 1 -", "DELE 1 1 -", "error 1", "error 3", "RSET 0 - -",
  "NOOP 0 - -", "QUIT 0 - -",
};

static void
run_script (gboolean bytewise, gsize max_line, const char *script, const char *const *expected, guint n_expected)
{
  static const PbConnHandlers handlers = { sizeof (PbConnHandlers), sink_readable, NULL, sink_closed };
  int sv[2];
  LineSink sink = { 0 };
  gsize len = strlen (script);

  assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  sink.conn = pb_conn_new_server (sv[0], NULL, PB_TLS_NONE);
  sink.seen = g_ptr_array_new_with_free_func (g_free);
  if (max_line != 0)
    pb_conn_set_max_line (sink.conn, max_line);
  pb_conn_set_handlers (sink.conn, &handlers, &sink);
  sink_readable (sink.conn, &sink);

  if (bytewise)
    for (gsize i = 0; i < len; i++)
      {
        assert_int_equal (write (sv[1], script + i, 1), 1);
        /* let the loop see each byte on its own */
        for (int k = 0; k < 3; k++)
          g_main_context_iteration (NULL, FALSE);
      }
  else
    assert_int_equal (write (sv[1], script, len), (ssize_t) len);
  shutdown (sv[1], SHUT_WR);
  {
    gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
    while (!sink.eof && g_get_monotonic_time () < deadline)
      g_main_context_iteration (NULL, TRUE);
  }
  assert_true (sink.eof);

  if (sink.seen->len != n_expected)
    fail_msg ("%s: %u lines seen, expected %u", bytewise ? "bytewise" : "pipelined", sink.seen->len, n_expected);
  for (guint i = 0; i < n_expected; i++)
    if (strcmp (g_ptr_array_index (sink.seen, i), expected[i]) != 0)
      fail_msg ("%s: line %u: '%s', expected '%s'", bytewise ? "bytewise" : "pipelined", i,
                (char *) g_ptr_array_index (sink.seen, i), expected[i]);

  pb_conn_set_handlers (sink.conn, NULL, NULL);
  pb_conn_close (sink.conn);
  pb_conn_unref (sink.conn);
  close (sv[1]);
  g_ptr_array_unref (sink.seen);
  /* let the connection finish closing */
  for (int k = 0; k < 10; k++)
    g_main_context_iteration (NULL, FALSE);
}

static void
test_pipelined (void **state)
{
  run_script (FALSE, 0, pipelined_script, pipelined_expected, G_N_ELEMENTS (pipelined_expected));
}

static void
test_byte_at_a_time (void **state)
{
  run_script (TRUE, 0, pipelined_script, pipelined_expected, G_N_ELEMENTS (pipelined_expected));
}

/* An oversized line is reported once and the commands after it still parse. */
static void
test_too_long_then_more (void **state)
{
  g_autofree char *junk = g_strnfill (300, 'x');
  g_autofree char *script = g_strdup_printf ("NOOP\r\nUSER %s\r\nSTAT\r\n", junk);
  const char *const expected[] = { "NOOP 0 - -", "too long", "STAT 0 - -" };

  run_script (FALSE, 256, script, expected, G_N_ELEMENTS (expected));
  run_script (TRUE, 256, script, expected, G_N_ELEMENTS (expected));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_parse_table),
    cmocka_unit_test (test_parse_states),
    cmocka_unit_test (test_chomp),
    cmocka_unit_test (test_numbers),
    cmocka_unit_test (test_sasl_plain),
    cmocka_unit_test (test_expire),
    cmocka_unit_test (test_capa),
    cmocka_unit_test (test_stuffing),
    cmocka_unit_test (test_top),
    cmocka_unit_test (test_pipelined),
    cmocka_unit_test (test_byte_at_a_time),
    cmocka_unit_test (test_too_long_then_more),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
