/* SPDX-License-Identifier: MIT */
/* Unit tests of log hygiene: pb_log_escape on hostile input, the writer's lines, and login names the core refuses. */
#include "config.h"
#include "test-help.h"
#include "core-private.h"
#include "log.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The result of escaping: valid UTF-8, no control octet but the newlines NEWLINE put there. */
static void
check_safe (guint i, const char *out, gboolean newlines_allowed)
{
  if (!g_utf8_validate (out, -1, NULL))
    fail_msg ("case %u: '%s' is not valid UTF-8", i, out);
  for (const char *p = out; *p != '\0'; p++)
    if (((guchar) *p < 0x20 && !(newlines_allowed && *p == '\n')) || *p == 0x7f)
      fail_msg ("case %u: control octet 0x%02x left in '%s'", i, (guchar) *p, out);
}

static void
test_escape_table (void **state)
{
  static const struct {
    const char *in;
    gssize len;
    const char *newline;
    const char *out;
  } cases[] = {
    { "bob@example.org", -1, NULL, "bob@example.org" },
    { "", -1, NULL, "" },
    { "bob\n2031-01-01 forged", -1, NULL, "bob\\x0a2031-01-01 forged" },
    { "bob\r\nforged", -1, NULL, "bob\\x0d\\x0aforged" },
    { "line one\nline two", -1, "\n    ", "line one\n    line two" },
    { "cr\r\nlf", -1, "\n    ", "cr\\x0d\n    lf" },           /* only the newline continues */
    { "tab\there", -1, NULL, "tab\\x09here" },
    { "esc\x1b[31mred", -1, NULL, "esc\\x1b[31mred" },
    { "del\x7f", -1, NULL, "del\\x7f" },
    { "nul\0inside", 10, NULL, "nul\\x00inside" },             /* a MESSAGE field with a length */
    { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xae", -1, NULL, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xae" },
    { "c1 \xc2\x85 \xc2\x9b", -1, NULL, "c1 \\xc2\\x85 \\xc2\\x9b" },
    { "nbsp\xc2\xa0ok", -1, NULL, "nbsp\xc2\xa0ok" },
    { "ls \xe2\x80\xa8 ps \xe2\x80\xa9", -1, NULL, "ls \\xe2\\x80\\xa8 ps \\xe2\\x80\\xa9" },
    { "rlo \xe2\x80\xae gnp.exe", -1, NULL, "rlo \\xe2\\x80\\xae gnp.exe" },
    { "isolate \xe2\x81\xa6x\xe2\x81\xa9", -1, NULL, "isolate \\xe2\\x81\\xa6x\\xe2\\x81\\xa9" },
    { "bob\xff\xfe", -1, NULL, "bob\\xff\\xfe" },
    { "overlong \xc0\xaf", -1, NULL, "overlong \\xc0\\xaf" },
    { "overlong nul \xc0\x80", -1, NULL, "overlong nul \\xc0\\x80" },
    { "surrogate \xed\xa0\x80", -1, NULL, "surrogate \\xed\\xa0\\x80" },
    { "too big \xf4\x90\x80\x80", -1, NULL, "too big \\xf4\\x90\\x80\\x80" },
    { "cut \xe2\x82", -1, NULL, "cut \\xe2\\x82" },
    { "cut by len \xe2\x82\xac", 13, NULL, "cut by len \\xe2\\x82" },
    { "lone continuation \x80\xbf", -1, NULL, "lone continuation \\x80\\xbf" },
    { "lead then ascii \xe2(x", -1, NULL, "lead then ascii \\xe2(x" },
    { "backslash \\x0a stays", -1, NULL, "backslash \\x0a stays" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *out = pb_log_escape (cases[i].in, cases[i].len, cases[i].newline);
      g_autofree char *again = pb_log_escape (out, -1, NULL);

      if (strcmp (out, cases[i].out) != 0)
        fail_msg ("case %u: escaped to '%s', expected '%s'", i, out, cases[i].out);
      check_safe (i, out, cases[i].newline != NULL);
      if (cases[i].newline == NULL && strcmp (again, out) != 0)
        fail_msg ("case %u: escaping twice gave '%s'", i, again);
    }
  {
    g_autofree char *none = pb_log_escape (NULL, -1, NULL);
    assert_string_equal (none, "");
  }
}

/* Every octet alone: printable ASCII stays, the rest (controls, DEL, and every octet above
 * 0x7f, none of which is a character alone) becomes \xHH. */
static void
test_escape_every_octet (void **state)
{
  for (guint b = 0; b < 256; b++)
    {
      char in[2] = { (char) b, '\0' };
      g_autofree char *out = pb_log_escape (in, 1, NULL);
      g_autofree char *cont = pb_log_escape (in, 1, "\n  ");
      g_autofree char *expect = b >= 0x20 && b < 0x7f ? g_strdup (in) : g_strdup_printf ("\\x%02x", b);

      if (strcmp (out, expect) != 0)
        fail_msg ("octet 0x%02x: '%s', expected '%s'", b, out, expect);
      if (strcmp (cont, b == '\n' ? "\n  " : expect) != 0)
        fail_msg ("octet 0x%02x with a continuation: '%s'", b, cont);
    }
  /* All of them at once, in one string. */
  {
    char all[256];
    g_autofree char *out = NULL;

    for (guint b = 0; b < 256; b++)
      all[b] = (char) b;
    out = pb_log_escape (all, 256, NULL);
    check_safe (0, out, FALSE);
    assert_int_equal (strlen (out), 95 + 161 * 4);
  }
}

/* Random octets, seeded so a failure repeats: always safe, always idempotent. */
static void
test_escape_random (void **state)
{
  g_autoptr (GRand) rand = g_rand_new_with_seed (15);

  for (guint i = 0; i < 2000; i++)
    {
      guint len = (guint) g_rand_int_range (rand, 0, 64);
      g_autofree char *in = g_malloc (len + 1);
      g_autofree char *out = NULL;
      g_autofree char *again = NULL;

      for (guint k = 0; k < len; k++)
        {
          /* Mostly UTF-8 lead and continuation octets, so valid sequences turn up too. */
          guint r = (guint) g_rand_int_range (rand, 0, 4);
          in[k] = (char) (r == 0 ? g_rand_int_range (rand, 0, 256)
                          : r == 1 ? g_rand_int_range (rand, 0x80, 0xc0)
                          : r == 2 ? g_rand_int_range (rand, 0xc2, 0xf5) : g_rand_int_range (rand, 0x20, 0x7f));
        }
      in[len] = '\0';
      out = pb_log_escape (in, len, NULL);
      check_safe (i, out, FALSE);
      again = pb_log_escape (out, -1, NULL);
      if (strcmp (again, out) != 0)
        fail_msg ("case %u: escaping twice changed '%s'", i, out);
    }
}

/* A long line: a megabyte of newlines and invalid octets comes out whole, four times as long. */
static void
test_escape_long (void **state)
{
  gsize n = 1 << 20;
  g_autofree char *in = g_malloc (n + 1);
  g_autofree char *out = NULL;

  for (gsize i = 0; i < n; i++)
    in[i] = i % 2 == 0 ? '\n' : (char) 0xff;
  in[n] = '\0';
  out = pb_log_escape (in, -1, NULL);
  assert_int_equal (strlen (out), n * 4);
  assert_memory_equal (out, "\\x0a\\xff", 8);
  assert_memory_equal (out + n * 4 - 8, "\\x0a\\xff", 8);
  check_safe (0, out, FALSE);
}

static char *
read_all (const char *path)
{
  char *text = NULL;

  assert_true (g_file_get_contents (path, &text, NULL, NULL));
  return text;
}

/* The writer itself, with stderr on a file: a module's g_message cannot forge a line, a
 * session's line keeps its newline escaped, and neither lets a control octet through. */
static void
test_writer (void **state)
{
  g_autofree char *dir = pbt_mkdtemp ();
  g_autofree char *path = g_build_filename (dir, "stderr", NULL);
  g_autofree char *text = NULL;
  g_auto (GStrv) lines = NULL;
  int saved = dup (STDERR_FILENO);
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

  assert_true (saved >= 0 && fd >= 0);
  fflush (stderr);
  assert_true (dup2 (fd, STDERR_FILENO) >= 0);
  close (fd);
  pb_log_init (FALSE);   /* once per process: GLib takes one writer */

  g_message ("config report:\nfirst problem\nsecond problem\n");
  g_message ("a module's line about bob\n2031-01-01T00:00:00.000Z pillarboxd[1]: x: info: FORGED \x1b[2J\xff");
  g_log_structured ("pillarbox-test", G_LOG_LEVEL_MESSAGE, "PB_SESSION", "s1", "MESSAGE",
                    "s1: AUTH PLAIN for bob\n2031-01-01T00:00:00.000Z pillarboxd[1]: x: info: FORGED %s", "\r\x01");
  g_log_structured ("pillarbox-test", G_LOG_LEVEL_MESSAGE, "PB_QUEUE_ID", "Q1", "MESSAGE",
                    "Q1: to=<x> deferred: 451-first\r\n451 second");

  fflush (stderr);
  assert_true (dup2 (saved, STDERR_FILENO) >= 0);
  close (saved);
  text = read_all (path);
  check_safe (0, text, TRUE);
  lines = g_strsplit (text, "\n", -1);
  assert_int_equal (g_strv_length (lines), 3 + 2 + 1 + 1 + 1);
  assert_non_null (strstr (lines[0], ": notice: config report:"));
  assert_string_equal (lines[1], "    first problem");
  assert_string_equal (lines[2], "    second problem");   /* the trailing newline is dropped */
  assert_non_null (strstr (lines[3], ": notice: a module's line about bob"));
  assert_string_equal (lines[4], "    2031-01-01T00:00:00.000Z pillarboxd[1]: x: info: FORGED \\x1b[2J\\xff");
  assert_non_null (strstr (lines[5], ": pillarbox-test: notice: s1: AUTH PLAIN for bob\\x0a2031-01-01T00:00:00.000Z "
                                     "pillarboxd[1]: x: info: FORGED \\x0d\\x01"));
  assert_non_null (strstr (lines[6], ": Q1: to=<x> deferred: 451-first\\x0d\\x0a451 second"));
  assert_string_equal (lines[7], "");
  for (guint i = 0; lines[i] != NULL; i++)
    if (g_str_has_prefix (lines[i], "2031"))
      fail_msg ("line %u is forged: %s", i, lines[i]);
  pbt_rmtree (dir);
}

static void
test_auth_name_problem (void **state)
{
  g_autofree char *longest = g_strnfill (PB_AUTH_NAME_MAX, 'b');
  g_autofree char *too_long = g_strnfill (PB_AUTH_NAME_MAX + 1, 'b');
  static const struct {
    const char *name;
    gboolean ok;
  } cases[] = {
    { "bob", TRUE },
    { "bob@example.org", TRUE },
    { "Bob.Smith+tag@example.org", TRUE },
    { "j\xc3\xb6rg@example.org", TRUE },             /* UTF-8 names are names */
    { "\xe5\xb1\xb1\xe7\x94\xb0@example.jp", TRUE },
    { "", FALSE },
    { "bob smith", FALSE },
    { " bob", FALSE },
    { "bob\t", FALSE },
    { "bob\n2031-01-01 forged", FALSE },
    { "bob\r", FALSE },
    { "bob\x01", FALSE },
    { "bob\x7f", FALSE },
    { "bob\xc2\x85", FALSE },                          /* C1 NEL */
    { "bob\xc2\xa0smith", FALSE },                     /* no-break space */
    { "bob\xe3\x80\x80", FALSE },                      /* ideographic space */
    { "bob\xe2\x80\xa8", FALSE },                      /* line separator */
    { "bob\xe2\x80\xae", FALSE },                      /* right-to-left override */
    { "bob\xe2\x80\x8b", FALSE },                      /* zero-width space */
    { "bob\xff", FALSE },
    { "bob\xc0\xaf", FALSE },
    { "bob\xed\xa0\x80", FALSE },
    { "bob\xe2\x82", FALSE },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      const char *problem = pb_auth_name_problem (cases[i].name);
      if ((problem == NULL) != cases[i].ok)
        fail_msg ("case %u: %s", i, problem != NULL ? problem : "accepted");
    }
  assert_null (pb_auth_name_problem (longest));
  assert_non_null (strstr (pb_auth_name_problem (too_long), "longer than 254 octets"));
  assert_non_null (strstr (pb_auth_name_problem ("bob\xff"), "UTF-8"));
  assert_non_null (strstr (pb_auth_name_problem (""), "empty"));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_escape_table),
    cmocka_unit_test (test_escape_every_octet),
    cmocka_unit_test (test_escape_random),
    cmocka_unit_test (test_escape_long),
    cmocka_unit_test (test_writer),
    cmocka_unit_test (test_auth_name_problem),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
