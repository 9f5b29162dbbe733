/* SPDX-License-Identifier: MIT */
/* Unit tests of policy stages: ordering, first answer wins, deferred answers, deadlines, misuse. */
#include "config.h"
#include "test-help.h"
#include "core-private.h"

#include <string.h>

typedef struct {
  char *conf;
  char *state;
  PbGeneration *gen;
} Fixture;

typedef struct {
  gboolean done;
  gboolean done_inside_run;
  gboolean running;
  PbVerdictKind kind;
  guint code;
  char *enhanced;
  char *module;
  char *trace;
} Outcome;

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
  if (f->gen != NULL)
    {
      pb_generation_unref (pb_generation_activate (NULL));
      pb_generation_unref (f->gen);
    }
  /* Let late timers of deferring fixtures fire and be ignored. */
  pbt_loop_run_for (30);
  pbt_log_check_empty ();
  pbt_rmtree (f->conf);
  pbt_rmtree (f->state);
  g_free (f->conf);
  g_free (f->state);
  g_free (f);
  return 0;
}

static void
start (Fixture *f, const char *modules, const char *hook_timeout)
{
  g_autofree char *core = g_strdup_printf ("[core]\nmodule-dir = %s\nhook-timeout = %s\n", pbt_fixture_dir (),
                                           hook_timeout);
  PbDiag *diag = pb_diag_new ();

  pbt_write_file (f->conf, "00-core.conf", core);
  pbt_write_file (f->conf, "10-policy.conf", modules);
  f->gen = pb_generation_build (f->conf, f->state, NULL, FALSE, diag);
  if (f->gen == NULL)
    {
      g_autofree char *all = pb_diag_join (diag);
      fail_msg ("configuration refused: %s", all);
    }
  pb_diag_free (diag);
  assert_null (pb_generation_activate (f->gen));
}

static void
on_done (PbPolicyRequest *req, const PbVerdict *verdict, gpointer data)
{
  Outcome *o = data;

  assert_false (o->done);
  o->done = TRUE;
  o->done_inside_run = o->running;
  o->kind = verdict->kind;
  o->code = verdict->code;
  o->enhanced = g_strdup (verdict->enhanced);
  o->module = g_strdup (verdict->module);
  o->trace = g_strdup (pb_policy_request_get_field (req, "mail-from"));
}

static void
outcome_clear (Outcome *o)
{
  g_free (o->enhanced);
  g_free (o->module);
  g_free (o->trace);
  memset (o, 0, sizeof *o);
}

/* Runs a delivery-attempt request: each fx-policy module appends its tag to mail-from. */
static void
run_stage (Outcome *o, guint wait_ms)
{
  PbPolicyRequest *req = pb_policy_request_new (NULL, PB_STAGE_DELIVERY_ATTEMPT);

  pb_policy_request_set_field (req, "mail-from", "");
  o->running = TRUE;
  pb_policy_request_run (req, on_done, o);
  o->running = FALSE;
  pb_policy_request_unref (req);
  if (!pbt_loop_until (&o->done, wait_ms))
    fail_msg ("the stage did not finish within %u ms", wait_ms);
}

static void
test_order (void **state)
{
  static const struct {
    const char *conf;
    const char *trace;
  } cases[] = {
    /* Registration (configuration) order when nothing else decides. */
    { "[module fx-policy-a]\n[module fx-policy-b]\n[module fx-policy-c]\n", "a,b,c" },
    /* Lower priority first. */
    { "[module fx-policy-a]\npriority = 10\n[module fx-policy-b]\npriority = -5\n[module fx-policy-c]\n", "b,c,a" },
    /* before/after beat priority. */
    { "[module fx-policy-a]\npriority = -100\nafter = fx-policy-c\n[module fx-policy-b]\n[module fx-policy-c]\n", "b,c,a" },
    { "[module fx-policy-a]\n[module fx-policy-b]\n[module fx-policy-c]\nbefore = fx-policy-a\n", "b,c,a" },
    /* Names of modules that are not loaded are ignored. */
    { "[module fx-policy-a]\nafter = spf, fx-policy-b\n[module fx-policy-b]\n", "b,a" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      Fixture *f = *state;
      Outcome o = { 0 };
      g_autofree char *expected = NULL;
      g_auto (GStrv) tags = g_strsplit (cases[i].trace, ",", -1);
      GString *full = g_string_new (NULL);

      for (guint t = 0; tags[t] != NULL; t++)
        g_string_append_printf (full, "%sfx-policy-%s", t > 0 ? "," : "", tags[t]);
      expected = g_string_free (full, FALSE);
      start (f, cases[i].conf, "5s");
      run_stage (&o, 2000);
      if (strcmp (o.trace, expected) != 0)
        fail_msg ("case %u: order %s, expected %s", i, o.trace, expected);
      assert_int_equal (o.kind, PB_VERDICT_CONTINUE);
      assert_true (o.done_inside_run);
      outcome_clear (&o);
      pb_generation_unref (pb_generation_activate (NULL));
      g_clear_pointer (&f->gen, pb_generation_unref);
    }
}

static void
test_first_answer_wins (void **state)
{
  Fixture *f = *state;
  Outcome o = { 0 };

  start (f, "[module fx-policy-a]\n[module fx-policy-b]\nanswer = reject\n[module fx-policy-c]\n", "5s");
  run_stage (&o, 2000);
  assert_int_equal (o.kind, PB_VERDICT_REJECT);
  assert_int_equal (o.code, 550);
  assert_string_equal (o.enhanced, "5.7.1");
  assert_string_equal (o.module, "fx-policy-b");
  assert_string_equal (o.trace, "fx-policy-a,fx-policy-b");  /* c never ran */
  outcome_clear (&o);
}

static void
test_deferred_answers (void **state)
{
  Fixture *f = *state;
  Outcome o = { 0 };

  start (f,
         "[module fx-policy-a]\ndelay = 20ms\n"
         "[module fx-policy-b]\ndelay = 10ms\nanswer = tempfail\n"
         "[module fx-policy-c]\n",
         "5s");
  run_stage (&o, 2000);
  assert_false (o.done_inside_run);  /* deferred: never answered from inside run() */
  assert_int_equal (o.kind, PB_VERDICT_TEMPFAIL);
  assert_int_equal (o.code, 450);
  assert_string_equal (o.module, "fx-policy-b");
  assert_string_equal (o.trace, "fx-policy-a,fx-policy-b");
  outcome_clear (&o);
}

static void
test_timeout (void **state)
{
  Fixture *f = *state;
  Outcome o = { 0 };
  gint64 t0;

  start (f, "[module fx-policy-a]\n[module fx-policy-b]\nanswer = never\n[module fx-policy-c]\n", "200ms");
  t0 = g_get_monotonic_time ();
  run_stage (&o, 3000);
  assert_int_equal (o.kind, PB_VERDICT_TEMPFAIL);
  assert_int_equal (o.code, 451);
  assert_string_equal (o.enhanced, "4.3.0");
  assert_true (g_get_monotonic_time () - t0 >= 190 * 1000);
  assert_true (pbt_log_expect ("fx-policy-b did not answer in time"));
  outcome_clear (&o);
}

static void
test_late_answer_after_timeout_ignored (void **state)
{
  Fixture *f = *state;
  Outcome o = { 0 };

  start (f, "[module fx-policy-a]\ndelay = 300ms\nanswer = reject\n", "100ms");
  run_stage (&o, 3000);
  assert_int_equal (o.kind, PB_VERDICT_TEMPFAIL);
  assert_true (pbt_log_expect ("did not answer in time"));
  /* The fixture answers at 300 ms: dropped, and on_done is not called twice. */
  pbt_loop_run_for (350);
  outcome_clear (&o);
}

static void
test_double_completion_is_critical (void **state)
{
  Fixture *f = *state;
  Outcome o = { 0 };

  start (f, "[module fx-policy-a]\nanswer = twice\n", "5s");
  run_stage (&o, 2000);
  assert_int_equal (o.kind, PB_VERDICT_CONTINUE);
  assert_true (pbt_log_expect ("completed twice"));
  outcome_clear (&o);
}

static void
test_no_hooks (void **state)
{
  Fixture *f = *state;
  Outcome o = { 0 };
  PbPolicyRequest *req;

  start (f, "[module fx-good]\n", "5s");
  assert_false (pb_stage_has_hooks (pb_generation_find_module (f->gen, "fx-good"), PB_STAGE_HELO));
  req = pb_policy_request_new (NULL, PB_STAGE_HELO);
  o.running = TRUE;
  pb_policy_request_run (req, on_done, &o);
  o.running = FALSE;
  assert_true (o.done);
  assert_true (o.done_inside_run);
  assert_int_equal (o.kind, PB_VERDICT_CONTINUE);
  pb_policy_request_unref (req);
  outcome_clear (&o);
}

static void
test_stage_names (void **state)
{
  assert_string_equal (pb_stage_to_string (PB_STAGE_CONNECT), "connect");
  assert_string_equal (pb_stage_to_string (PB_STAGE_RCPT_TO), "rcpt-to");
  assert_string_equal (pb_stage_to_string (PB_STAGE_DELIVERY_RESULT), "delivery-result");
  assert_string_equal (pb_stage_to_string (PB_STAGE_RCPT_ADDRESS), "rcpt-address");
  assert_string_equal (pb_stage_to_string (PB_STAGE_LAST), "unknown");
  assert_string_equal (pb_event_to_string (PB_EVENT_AUTH_FAILED), "auth-failed");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_order, setup, teardown),
    cmocka_unit_test_setup_teardown (test_first_answer_wins, setup, teardown),
    cmocka_unit_test_setup_teardown (test_deferred_answers, setup, teardown),
    cmocka_unit_test_setup_teardown (test_timeout, setup, teardown),
    cmocka_unit_test_setup_teardown (test_late_answer_after_timeout_ignored, setup, teardown),
    cmocka_unit_test_setup_teardown (test_double_completion_is_critical, setup, teardown),
    cmocka_unit_test_setup_teardown (test_no_hooks, setup, teardown),
    cmocka_unit_test (test_stage_names),
  };
  lt_dlinit ();
  return cmocka_run_group_tests (tests, NULL, NULL);
}
