/* SPDX-License-Identifier: MIT */
/* Unit tests of the conf.d reader and the typed settings parser: values, FILE:LINE errors, -o. */
#include "config.h"
#include "test-help.h"
#include "core-private.h"

#include <string.h>

/* Every diagnostic must contain each of the expected substrings, in order of lines. */
static void
assert_diag (PbDiag *diag, guint idx, const char *const *expect)
{
  guint n = 0;

  while (expect[n] != NULL)
    n++;
  if (diag->lines->len != n)
    {
      g_autofree char *all = pb_diag_join (diag);
      fail_msg ("case %u: expected %u diagnostics, got %u:\n%s", idx, n, diag->lines->len, all ? all : "(none)");
    }
  for (guint i = 0; i < n; i++)
    if (strstr (g_ptr_array_index (diag->lines, i), expect[i]) == NULL)
      fail_msg ("case %u: diagnostic %u is '%s', expected it to contain '%s'", idx, i,
                (const char *) g_ptr_array_index (diag->lines, i), expect[i]);
}

static void
test_parse_syntax (void **state)
{
  static const struct {
    const char *text;
    guint groups;
    const char *expect[3];
  } cases[] = {
    { "# comment\n\n[core]\nhostname = mail.example.org\n", 1, { NULL } },
    { "[core]\n  hostname=x  \n[module a]\nk = v\n", 2, { NULL } },
    { "[core]\nhostname = a\nhostname = b\n", 1, { "t.conf:3: key 'hostname' is set twice in [core] (first at t.conf:2)", NULL } },
    { "key = value\n", 0, { "t.conf:1: key 'key' appears before any [group]", NULL } },
    { "[core]\nthis line is wrong\n", 1, { "t.conf:2: 'this line is wrong' is not a group", NULL } },
    { "[core\n", 0, { "t.conf:1: malformed group header", NULL } },
    { "[core]\n[core]\n", 1, { "t.conf:2: duplicate group [core] (first at t.conf:1)", NULL } },
    { "[core]\nbad key! = 1\n", 1, { "t.conf:2: invalid key 'bad key!'", NULL } },
    { "[core]\n= 1\n", 1, { "t.conf:2: missing key before '='", NULL } },
    { "[]\n", 0, { "t.conf:1: malformed group header", NULL } },
    { "[module   spf  ]\n", 1, { NULL } },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      PbConfSource *src = pb_conf_source_new ("/etc/pillarbox/conf.d");
      PbDiag *diag = pb_diag_new ();

      pb_conf_source_parse (src, "t.conf", cases[i].text, strlen (cases[i].text), diag);
      assert_diag (diag, i, cases[i].expect);
      if (src->groups->len != cases[i].groups)
        fail_msg ("case %u: %u groups, expected %u", i, src->groups->len, cases[i].groups);
      pb_diag_free (diag);
      pb_conf_source_free (src);
    }
}

static void
test_parse_values_and_lines (void **state)
{
  const char *text = "[module smtp-server]\n"
                     "greeting = hello\\sworld\\n  \n"
                     "# a comment\n"
                     "empty =\n"
                     "hostname = mail.example.org   # the public name\n"
                     "fragment = https://example.org/a#b\n"
                     "hash = a\\s\\# b \\#c\t# two comments # in one\n"
                     "none = # nothing but a comment\n";
  PbConfSource *src = pb_conf_source_new ("/c");
  PbDiag *diag = pb_diag_new ();
  PbConfGroup *g;
  PbConfEntry *e;
  g_autofree char *kind = NULL, *name = NULL;

  pb_conf_source_parse (src, "x.conf", text, strlen (text), diag);
  assert_true (pb_diag_is_empty (diag));
  g = pb_conf_source_find_group (src, "module smtp-server");
  assert_non_null (g);
  assert_int_equal (g->line, 1);
  pb_conf_group_split_name (g, &kind, &name);
  assert_string_equal (kind, "module");
  assert_string_equal (name, "smtp-server");
  e = pb_conf_group_find (g, "greeting");
  assert_string_equal (e->value, "hello world\n");
  assert_int_equal (e->line, 2);
  e = pb_conf_group_find (g, "empty");
  assert_string_equal (e->value, "");
  assert_int_equal (e->line, 4);
  /* A '#' after a blank starts a comment; one inside a word, or written \#, does not. */
  e = pb_conf_group_find (g, "hostname");
  assert_string_equal (e->value, "mail.example.org");
  e = pb_conf_group_find (g, "fragment");
  assert_string_equal (e->value, "https://example.org/a#b");
  e = pb_conf_group_find (g, "hash");
  assert_string_equal (e->value, "a # b #c");
  e = pb_conf_group_find (g, "none");
  assert_string_equal (e->value, "");
  pb_diag_free (diag);
  pb_conf_source_free (src);
}

static void
test_parse_binary (void **state)
{
  static const char nul[] = "[core]\nhostname = a\0b\n";
  static const char bad_utf8[] = "[core]\nhostname = \xff\xfe\n";
  PbConfSource *src = pb_conf_source_new ("/c");
  PbDiag *diag = pb_diag_new ();

  pb_conf_source_parse (src, "n.conf", nul, sizeof nul - 1, diag);
  pb_conf_source_parse (src, "u.conf", bad_utf8, sizeof bad_utf8 - 1, diag);
  assert_diag (diag, 0, (const char *const[]) { "n.conf: contains a NUL byte", "u.conf: is not valid UTF-8", NULL });
  pb_diag_free (diag);
  pb_conf_source_free (src);
}

typedef struct {
  gboolean b;
  gint64 i;
  char *s;
  char **list;
  gint e;
  gint64 dur;
  gint64 size;
  char **ends;
  char **addrs;
  char *path;
} AllTypes;

static const char *const colours[] = { "red", "green", NULL };

static const PbSetting all_settings[] = {
  PB_SETTING_BOOL (AllTypes, b, "b", "false", "b"),
  PB_SETTING_INT (AllTypes, i, "i", "5", -10, 100, "i"),
  PB_SETTING_STRING (AllTypes, s, "s", "", "s"),
  PB_SETTING_STRING_LIST (AllTypes, list, "list", "", "list"),
  PB_SETTING_ENUM (AllTypes, e, "e", "red", colours, "e"),
  PB_SETTING_DURATION (AllTypes, dur, "dur", "30s", 1, 86400000, "dur"),
  PB_SETTING_SIZE (AllTypes, size, "size", "1K", 0, G_GINT64_CONSTANT (1) << 40, "size"),
  PB_SETTING_ENDPOINTS (AllTypes, ends, "ends", "", "ends"),
  PB_SETTING_ADDRESS_LIST (AllTypes, addrs, "addrs", "", "addrs"),
  PB_SETTING_PATH (AllTypes, path, "path", "", "path"),
  PB_SETTINGS_END
};

static void
test_typed_values (void **state)
{
  static const struct {
    const char *key;
    const char *text;
    gboolean ok;
    const char *canonical;   /* pb_setting_format() of the result, or the error's substring */
  } cases[] = {
    { "b", "true", TRUE, "true" }, { "b", "Yes", TRUE, "true" }, { "b", "off", TRUE, "false" },
    { "b", "0", TRUE, "false" }, { "b", "maybe", FALSE, "'maybe' is not a boolean" },
    { "i", "42", TRUE, "42" }, { "i", "-10", TRUE, "-10" }, { "i", "101", FALSE, "out of range (from -10 to 100)" },
    { "i", "12x", FALSE, "'12x' is not an integer" }, { "i", "", FALSE, "not an integer" },
    { "i", "99999999999999999999", FALSE, "not an integer" },
    { "s", "any text at all", TRUE, "any text at all" },
    { "list", " a, b ,,c ", TRUE, "a, b, c" }, { "list", "", TRUE, "" },
    { "e", "GREEN", TRUE, "green" }, { "e", "blue", FALSE, "'blue' is not one of: red, green" },
    { "dur", "5m", TRUE, "5m" }, { "dur", "90", TRUE, "90s" }, { "dur", "1500ms", TRUE, "1500ms" },
    { "dur", "2h", TRUE, "2h" }, { "dur", "1d", TRUE, "1d" }, { "dur", "2d", FALSE, "out of range (from 1ms to 1d)" },
    { "dur", "5 parsecs", FALSE, "not a duration" }, { "dur", "-5s", FALSE, "not a duration" },
    { "size", "10M", TRUE, "10M" }, { "size", "512", TRUE, "512" }, { "size", "2GiB", TRUE, "2G" },
    { "size", "3KB", TRUE, "3K" }, { "size", "10Q", FALSE, "not a size" },
    { "ends", "127.0.0.1:25, [::1]:587, *:465, mail.example.org:2525", TRUE,
      "127.0.0.1:25, [::1]:587, *:465, mail.example.org:2525" },
    { "ends", "127.0.0.1", FALSE, "is not HOST:PORT" }, { "ends", "127.0.0.1:0", FALSE, "port must be a number" },
    { "ends", "127.0.0.1:70000", FALSE, "port must be" }, { "ends", "[127.0.0.1]:25", FALSE, "not an IPv6 address" },
    { "ends", "::1:25", FALSE, "is not HOST:PORT" }, { "ends", "bad_host:25", FALSE, "not a host name" },
    { "addrs", "192.168.1.*, 10.*, 172.16.0.0/12, 2001:db8::/32, 127.0.0.1, ::1", TRUE,
      "192.168.1.0/24, 10.0.0.0/8, 172.16.0.0/12, 2001:db8::/32, 127.0.0.1/32, ::1/128" },
    { "addrs", "192.168.*.1", FALSE, "is not an IP address" }, { "addrs", "300.1.1.1", FALSE, "is not an IP" },
    { "addrs", "10.0.0.0/33", FALSE, "is not an IP" }, { "addrs", "*", TRUE, "0.0.0.0/0" },
    { "path", "relative/file.pem", TRUE, "/etc/pillarbox/conf.d/relative/file.pem" },
    { "path", "/abs/file.pem", TRUE, "/abs/file.pem" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      const PbSetting *s = NULL;
      AllTypes config = { 0 };
      char *message = NULL;
      gboolean ok;

      for (guint k = 0; all_settings[k].key != NULL; k++)
        if (strcmp (all_settings[k].key, cases[i].key) == 0)
          s = &all_settings[k];
      assert_non_null (s);
      ok = pb_setting_parse (s, cases[i].text, "/etc/pillarbox/conf.d", (char *) &config + s->offset, &message);
      if (ok != cases[i].ok)
        fail_msg ("case %u (%s = %s): parse %s (%s)", i, cases[i].key, cases[i].text, ok ? "succeeded" : "failed",
                  message ? message : "");
      if (ok)
        {
          g_autofree char *text = pb_setting_format (s, (char *) &config + s->offset);
          if (strcmp (text, cases[i].canonical) != 0)
            fail_msg ("case %u (%s = %s): got '%s', expected '%s'", i, cases[i].key, cases[i].text, text,
                      cases[i].canonical);
          pb_setting_clear (s, (char *) &config + s->offset);
        }
      else if (strstr (message, cases[i].canonical) == NULL)
        fail_msg ("case %u (%s = %s): message '%s' lacks '%s'", i, cases[i].key, cases[i].text, message,
                  cases[i].canonical);
      g_free (message);
    }
}

static gboolean
all_check (const void *config, GError **error)
{
  const AllTypes *c = config;
  if (c->i == 7 && !c->b)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_FAILED, "i must not be 7 when b is false");
      return FALSE;
    }
  return TRUE;
}

static void
test_group_to_struct (void **state)
{
  static const struct {
    const char *text;
    const char *expect[3];
  } cases[] = {
    { "[module t]\ni = 7\nb = true\n", { NULL } },
    { "[module t]\nhostnme = x\n", { "c.conf:2: unknown key 'hostnme' in [module t]", NULL } },
    { "[module t]\nsise = 10M\n", { "c.conf:2: unknown key 'sise' in [module t] (did you mean 'size'?)", NULL } },
    { "[module t]\ni = lots\ndur = forever\n", { "c.conf:2: i: 'lots' is not an integer", "c.conf:3: dur: 'forever' is not a duration", NULL } },
    { "[module t]\ni = 7\n", { "c.conf:1: [module t]: i must not be 7", NULL } },
  };
  PbSettingsTable table = { all_settings, sizeof (PbSetting), sizeof (AllTypes), all_check };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      PbConfSource *src = pb_conf_source_new ("/c");
      PbDiag *diag = pb_diag_new ();
      AllTypes *config;

      pb_conf_source_parse (src, "c.conf", cases[i].text, strlen (cases[i].text), diag);
      config = pb_settings_parse_group (&table, g_ptr_array_index (src->groups, 0), "/c", "[module t]", diag);
      assert_diag (diag, i, cases[i].expect);
      if ((config != NULL) != (cases[i].expect[0] == NULL))
        fail_msg ("case %u: config %s", i, config ? "returned despite errors" : "missing");
      if (config != NULL)
        {
          /* Defaults fill what the file leaves out. */
          assert_int_equal (config->dur, 30000);
          assert_int_equal (config->size, 1024);
          assert_int_equal (config->e, 0);
          assert_non_null (config->list);
          assert_null (config->list[0]);
          assert_string_equal (config->s, "");
          pb_settings_free (&table, config);
        }
      pb_diag_free (diag);
      pb_conf_source_free (src);
    }
}

static void
test_required_key (void **state)
{
  static const PbSetting req_settings[] = {
    PB_SETTING_STRING (AllTypes, s, "server", NULL, "required"),
    PB_SETTINGS_END
  };
  PbSettingsTable table = { req_settings, sizeof (PbSetting), sizeof (AllTypes), NULL };
  PbConfSource *src = pb_conf_source_new ("/c");
  PbDiag *diag = pb_diag_new ();
  const char *text = "\n[collector isp]\n";

  pb_conf_source_parse (src, "r.conf", text, strlen (text), diag);
  assert_null (pb_settings_parse_group (&table, g_ptr_array_index (src->groups, 0), "/c", "[collector isp]", diag));
  assert_diag (diag, 0, (const char *const[]) { "r.conf:2: [collector isp]: required key 'server' is missing", NULL });
  pb_diag_free (diag);
  pb_conf_source_free (src);
}

static void
test_overrides (void **state)
{
  const char *text = "[core]\nhostname = a\n[module spf]\nmode = x\n";
  PbConfSource *src = pb_conf_source_new ("/c");
  PbDiag *diag = pb_diag_new ();
  PbConfEntry *e;

  pb_conf_source_parse (src, "o.conf", text, strlen (text), diag);
  assert_true (pb_conf_source_apply_override (src, "core.hostname=b", diag));
  assert_true (pb_conf_source_apply_override (src, "spf.mode=y=z", diag));
  assert_true (pb_conf_source_apply_override (src, "core.user=mail", diag));
  assert_false (pb_conf_source_apply_override (src, "dkim.key=1", diag));
  assert_false (pb_conf_source_apply_override (src, "nonsense", diag));
  assert_false (pb_conf_source_apply_override (src, "core=1", diag));
  assert_diag (diag, 0, (const char *const[]) {
    "command line (-o dkim.key=1): no [module dkim] group is configured",
    "command line (-o nonsense): expected GROUP.KEY=VALUE", "command line (-o core=1): expected GROUP.KEY=VALUE",
    NULL });
  e = pb_conf_group_find (pb_conf_source_find_group (src, "core"), "hostname");
  assert_string_equal (e->value, "b");
  assert_string_equal (e->file, "command line (-o core.hostname=b)");
  e = pb_conf_group_find (pb_conf_source_find_group (src, "module spf"), "mode");
  assert_string_equal (e->value, "y=z");
  assert_non_null (pb_conf_group_find (pb_conf_source_find_group (src, "core"), "user"));
  pb_diag_free (diag);
  pb_conf_source_free (src);
}

static void
test_load_dir_order (void **state)
{
  g_autofree char *dir = pbt_mkdtemp ();
  PbDiag *diag = pb_diag_new ();
  PbConfSource *src;

  pbt_write_file (dir, "20-b.conf", "[module b]\n");
  pbt_write_file (dir, "10-a.conf", "[module a]\n");
  pbt_write_file (dir, "30-c.conf.dpkg-old", "[module ignored]\n");
  pbt_write_file (dir, ".hidden.conf", "[module hidden]\n");
  pbt_write_file (dir, "README", "not a config\n");
  src = pb_conf_source_load_dir (dir, diag);
  assert_true (pb_diag_is_empty (diag));
  assert_int_equal (src->groups->len, 2);
  assert_string_equal (((PbConfGroup *) g_ptr_array_index (src->groups, 0))->name, "module a");
  assert_string_equal (((PbConfGroup *) g_ptr_array_index (src->groups, 1))->name, "module b");
  pb_conf_source_free (src);

  assert_null (pb_conf_source_load_dir ("/nonexistent/pillarbox", diag));
  assert_diag (diag, 0, (const char *const[]) { "/nonexistent/pillarbox: cannot read configuration directory", NULL });
  pb_diag_free (diag);
  pbt_rmtree (dir);
}

static void
test_shipped_core_defaults (void **state)
{
  /* The [core] table's own defaults must parse: the daemon relies on it. */
  PbSettingsTable table = { pb_core_settings, sizeof (PbSetting), sizeof (PbCoreConfig), NULL };
  PbDiag *diag = pb_diag_new ();
  PbCoreConfig *core = pb_settings_parse_group (&table, NULL, "/c", "[core]", diag);

  assert_non_null (core);
  assert_int_equal (core->shutdown_timeout, 30000);
  assert_int_equal (core->hook_timeout, 30000);
  assert_string_equal (core->user, "pillarbox");
  pb_settings_free (&table, core);
  pb_diag_free (diag);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_parse_syntax),
    cmocka_unit_test (test_parse_values_and_lines),
    cmocka_unit_test (test_parse_binary),
    cmocka_unit_test (test_typed_values),
    cmocka_unit_test (test_group_to_struct),
    cmocka_unit_test (test_required_key),
    cmocka_unit_test (test_overrides),
    cmocka_unit_test (test_load_dir_order),
    cmocka_unit_test (test_shipped_core_defaults),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
