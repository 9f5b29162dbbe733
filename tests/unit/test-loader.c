/* SPDX-License-Identifier: MIT */
/* Unit tests of module loading: every refusal names the file (and both ABI versions), settings reach modules typed. */
#include "config.h"
#include "test-help.h"
#include "core-private.h"

#include <glib/gstdio.h>
#include <string.h>

typedef struct {
  char *conf;
  char *state;
} Fixture;

static int
setup (void **state)
{
  Fixture *f = g_new0 (Fixture, 1);
  f->conf = pbt_mkdtemp ();
  f->state = pbt_mkdtemp ();
  pbt_log_capture ();
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  Fixture *f = *state;
  pbt_log_check_empty ();
  pbt_rmtree (f->conf);
  pbt_rmtree (f->state);
  g_free (f->conf);
  g_free (f->state);
  g_free (f);
  return 0;
}

/* Writes 00-core.conf pointing at MODULE_DIR and 10-test.conf with TEXT, then builds. */
static PbGeneration *
build (Fixture *f, const char *module_dir, const char *text, gboolean checking, PbDiag *diag)
{
  g_autofree char *core = g_strdup_printf ("[core]\nmodule-dir = %s\n", module_dir);
  pbt_write_file (f->conf, "00-core.conf", core);
  pbt_write_file (f->conf, "10-test.conf", text);
  return pb_generation_build (f->conf, f->state, NULL, checking, diag);
}

static void
assert_one_error (PbDiag *diag, guint idx, const char *const *needles)
{
  g_autofree char *all = pb_diag_join (diag);

  if (diag->lines->len != 1)
    fail_msg ("case %u: expected exactly one error, got %u:\n%s", idx, diag->lines->len, all ? all : "(none)");
  for (guint i = 0; needles[i] != NULL; i++)
    if (strstr (all, needles[i]) == NULL)
      fail_msg ("case %u: error '%s' lacks '%s'", idx, all, needles[i]);
  if (strchr (all, '\n') != NULL)
    fail_msg ("case %u: error spans several lines: %s", idx, all);
}

static void
test_refusals (void **state)
{
  Fixture *f = *state;
  const char *dir = pbt_fixture_dir ();
  static const struct {
    const char *text;
    const char *needles[5];
  } cases[] = {
    { "[module nonexistent]\n", { "10-test.conf:1:", "unknown module 'nonexistent'", "nonexistent.so", NULL } },
    { "\n[module fx-badmagic]\n", { "10-test.conf:2:", "fx-badmagic.so", "not a Pillarbox module (bad magic", NULL } },
    { "[module fx-nosymbol]\n", { "10-test.conf:1:", "fx-nosymbol.so", "not a Pillarbox module (no pillarbox_module_info", NULL } },
    { "[module fx-major]\n", { "10-test.conf:1:", "fx-major.so", "ABI 2." G_STRINGIFY (PB_ABI_MINOR), "ABI 1." G_STRINGIFY (PB_ABI_MINOR), NULL } },
    { "[module fx-newminor]\n", { "10-test.conf:1:", "fx-newminor.so", "ABI 1.99", "newer than this pillarboxd's ABI 1." G_STRINGIFY (PB_ABI_MINOR), NULL } },
    { "[module fx-initfail]\n", { "10-test.conf:1:", "module 'fx-initfail'", "init failed: deliberately failing", NULL } },
    { "[module Bad_Name!]\n", { "10-test.conf:1:", "invalid module name 'Bad_Name!'", NULL } },
    { "[module]\n", { "10-test.conf:1:", "[module] needs a module name", NULL } },
    { "[mystery thing]\n", { "10-test.conf:1:", "unknown group [mystery thing]", NULL } },
    { "[module fx-good]\ncount = many\n", { "10-test.conf:2:", "count: 'many' is not an integer", NULL } },
    { "[module fx-good]\ncuont = 3\n", { "10-test.conf:2:", "unknown key 'cuont'", "did you mean 'count'", NULL } },
    { "[module fx-good]\ncount = 13\n", { "10-test.conf:1:", "count must not be 13", NULL } },
    { "[module fx-good]\n[widget w1]\nport = 995\n", { "10-test.conf:2:", "[widget w1]: required key 'server' is missing", NULL } },
    { "[widget w1]\nserver = x\n", { "10-test.conf:1:", "unknown group [widget w1]", NULL } },
    { "[module fx-policy-a]\nbefore = fx-policy-b\n[module fx-policy-b]\nbefore = fx-policy-a\n",
      { "form a cycle", "fx-policy-a", "fx-policy-b", NULL } },
    { "[module example]\nlisten = 127.0.0.1:2600, 127.0.0.1:2600\n", { "init failed", "listed twice", NULL } },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      PbDiag *diag = pb_diag_new ();
      PbGeneration *gen = build (f, dir, cases[i].text, FALSE, diag);
      if (gen != NULL)
        fail_msg ("case %u: configuration accepted", i);
      assert_one_error (diag, i, cases[i].needles);
      pb_diag_free (diag);
    }
}

static void
test_module_dir_missing (void **state)
{
  Fixture *f = *state;
  PbDiag *diag = pb_diag_new ();

  assert_null (build (f, "/nonexistent/modules", "[module fx-good]\n", FALSE, diag));
  assert_one_error (diag, 0, (const char *const[]) { "10-test.conf:1:", "module directory /nonexistent/modules does not exist", NULL });
  pb_diag_free (diag);
}

static char *
copy_fixture (const char *to_dir, const char *from_name, const char *to_name, int mode)
{
  g_autofree char *src = g_strdup_printf ("%s/.libs/%s.so", pbt_fixture_dir (), from_name);
  g_autofree char *data = NULL;
  gsize len;
  char *dst = g_strdup_printf ("%s/%s.so", to_dir, to_name);

  assert_true (g_file_get_contents (src, &data, &len, NULL));
  assert_true (g_file_set_contents (dst, data, len, NULL));
  assert_int_equal (g_chmod (dst, mode), 0);
  return dst;
}

static void
test_writable_module_refused (void **state)
{
  Fixture *f = *state;
  g_autofree char *mods = pbt_mkdtemp ();
  g_autofree char *path = copy_fixture (mods, "fx-good", "fx-good", 0664);
  PbDiag *diag = pb_diag_new ();

  assert_null (build (f, mods, "[module fx-good]\n", FALSE, diag));
  assert_one_error (diag, 0, (const char *const[]) { "10-test.conf:1:", path, "writable by group or others", "0664", NULL });
  pb_diag_free (diag);
  pbt_rmtree (mods);
}

static void
test_renamed_module_refused (void **state)
{
  Fixture *f = *state;
  g_autofree char *mods = pbt_mkdtemp ();
  g_autofree char *path = copy_fixture (mods, "fx-good", "fx-other", 0755);
  PbDiag *diag = pb_diag_new ();

  assert_null (build (f, mods, "[module fx-other]\n", FALSE, diag));
  assert_one_error (diag, 0, (const char *const[]) { path, "calls itself 'fx-good', not 'fx-other'", NULL });
  pb_diag_free (diag);
  pbt_rmtree (mods);
}

static void
test_not_a_shared_object (void **state)
{
  Fixture *f = *state;
  g_autofree char *mods = pbt_mkdtemp ();
  PbDiag *diag = pb_diag_new ();

  g_autofree char *junk = g_build_filename (mods, "junk.so", NULL);

  pbt_write_file (mods, "junk.so", "this is not an ELF file\n");
  assert_int_equal (g_chmod (junk, 0644), 0);
  assert_null (build (f, mods, "[module junk]\n", FALSE, diag));
  assert_one_error (diag, 0, (const char *const[]) { "junk.so", "not a loadable module", NULL });
  pb_diag_free (diag);
  pbt_rmtree (mods);
}

static void
test_good_module (void **state)
{
  Fixture *f = *state;
  PbDiag *diag = pb_diag_new ();
  PbGeneration *gen = build (f, pbt_fixture_dir (),
                             "[module fx-good]\n"
                             "greeting = good day\n"
                             "count = 42\n"
                             "timeout = 90s\n"
                             "max-size = 20M\n"
                             "mode = fast\n"
                             "peers = [::1]:2525, 127.0.0.1:25\n"
                             "nets = 192.168.1.*\n"
                             "file = certs/x.pem\n"
                             "[widget first]\nserver = pop.example.org\n"
                             "[widget second]\nserver = pop2.example.org\nport = 995\n",
                             FALSE, diag);
  PbModule *m;
  typedef struct {
    char *greeting; gint64 count; gboolean enabled; gint64 timeout; gint64 max_size; gint mode;
    char **peers; char **nets; char **words; char *file;
  } FxConfig;
  typedef struct { char *server; gint64 port; } FxWidget;
  const FxConfig *c;
  const char *const *names = NULL;
  const void *const *widgets;

  if (gen == NULL)
    {
      g_autofree char *all = pb_diag_join (diag);
      fail_msg ("build failed: %s", all);
    }
  m = pb_generation_find_module (gen, "fx-good");
  assert_non_null (m);
  assert_string_equal (pb_module_get_name (m), "fx-good");
  c = pb_module_get_config (m);
  assert_string_equal (c->greeting, "good day");
  assert_int_equal (c->count, 42);
  assert_true (c->enabled);
  assert_int_equal (c->timeout, 90000);
  assert_int_equal (c->max_size, 20 * 1024 * 1024);
  assert_int_equal (c->mode, 0);
  assert_string_equal (c->peers[0], "[::1]:2525");
  assert_string_equal (c->peers[1], "127.0.0.1:25");
  assert_string_equal (c->nets[0], "192.168.1.0/24");
  assert_string_equal (c->words[1], "b");
  assert_true (g_str_has_suffix (c->file, "/certs/x.pem"));
  assert_true (g_path_is_absolute (c->file));

  widgets = pb_module_get_sections (m, "widget", &names);
  assert_string_equal (names[0], "first");
  assert_string_equal (names[1], "second");
  assert_null (names[2]);
  assert_string_equal (((const FxWidget *) widgets[0])->server, "pop.example.org");
  assert_int_equal (((const FxWidget *) widgets[0])->port, 110);
  assert_int_equal (((const FxWidget *) widgets[1])->port, 995);
  assert_null (widgets[2]);
  assert_null (pb_module_get_sections (m, "nothing", NULL)[0]);

  /* Registrations: its command and the core's built-ins. */
  assert_non_null (g_hash_table_lookup (gen->commands, "fx-good"));
  assert_non_null (g_hash_table_lookup (gen->commands, "status"));
  assert_false (pb_module_is_checking (m));
  assert_string_equal (pb_module_get_state_dir (m), f->state);

  pb_generation_unref (gen);
  pb_diag_free (diag);
}

static void
late_command (PbControlRequest *req, gpointer user_data)
{
  pb_control_request_reply (req, NULL, NULL);
}

static void
test_registration_closed_after_init (void **state)
{
  Fixture *f = *state;
  PbDiag *diag = pb_diag_new ();
  PbGeneration *gen = build (f, pbt_fixture_dir (), "[module fx-good]\n", TRUE, diag);
  PbControlCommandSpec cmd = { sizeof cmd, "late", "", "", late_command, NULL, FALSE };
  g_autoptr (GError) error = NULL;
  PbModule *m;

  assert_non_null (gen);
  m = pb_generation_find_module (gen, "fx-good");
  assert_true (pb_module_is_checking (m));
  assert_false (pb_module_add_command (m, &cmd, &error));
  assert_non_null (strstr (error->message, "only be registered during init"));
  pb_generation_unref (gen);
  pb_diag_free (diag);
}

static void
test_all_errors_reported (void **state)
{
  Fixture *f = *state;
  PbDiag *diag = pb_diag_new ();

  /* --check-config shows every problem, not only the first. */
  assert_null (build (f, pbt_fixture_dir (),
                      "[module fx-good]\ncuont = 1\n[module nonexistent]\n[module fx-major]\n", TRUE, diag));
  assert_int_equal (diag->lines->len, 3);
  pb_diag_free (diag);
}

static void
test_core_group_errors (void **state)
{
  Fixture *f = *state;
  PbDiag *diag = pb_diag_new ();
  const char *over[] = { "core.hook-timeout=1h", NULL };

  pbt_write_file (f->conf, "00-core.conf", "[core]\nhostnme = x\n");
  pbt_write_file (f->conf, "10-test.conf", "");
  assert_null (pb_generation_build (f->conf, f->state, NULL, TRUE, diag));
  assert_one_error (diag, 0, (const char *const[]) { "00-core.conf:2:", "unknown key 'hostnme' in [core]", "did you mean 'hostname'", NULL });
  pb_diag_free (diag);

  diag = pb_diag_new ();
  pbt_write_file (f->conf, "00-core.conf", "[core]\n");
  assert_null (pb_generation_build (f->conf, f->state, over, TRUE, diag));
  assert_one_error (diag, 1, (const char *const[]) { "command line (-o core.hook-timeout=1h)", "out of range", NULL });
  pb_diag_free (diag);

  diag = pb_diag_new ();
  pbt_write_file (f->conf, "00-core.conf", "[core]\ntls-certificate = /x.pem\n");
  assert_null (pb_generation_build (f->conf, f->state, NULL, TRUE, diag));
  assert_one_error (diag, 2, (const char *const[]) { "00-core.conf:1:", "tls-certificate and tls-key must be set together", NULL });
  pb_diag_free (diag);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_refusals, setup, teardown),
    cmocka_unit_test_setup_teardown (test_module_dir_missing, setup, teardown),
    cmocka_unit_test_setup_teardown (test_writable_module_refused, setup, teardown),
    cmocka_unit_test_setup_teardown (test_renamed_module_refused, setup, teardown),
    cmocka_unit_test_setup_teardown (test_not_a_shared_object, setup, teardown),
    cmocka_unit_test_setup_teardown (test_good_module, setup, teardown),
    cmocka_unit_test_setup_teardown (test_registration_closed_after_init, setup, teardown),
    cmocka_unit_test_setup_teardown (test_all_errors_reported, setup, teardown),
    cmocka_unit_test_setup_teardown (test_core_group_errors, setup, teardown),
  };
  lt_dlinit ();
  return cmocka_run_group_tests (tests, NULL, NULL);
}
