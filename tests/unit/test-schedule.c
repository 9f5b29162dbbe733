/* SPDX-License-Identifier: MIT */
/* Unit tests of connector schedules: parsing, deny windows and the next firing, on a fixed clock. */
#include "config.h"
#include "test-help.h"
#include "core-private.h"

#include <stdlib.h>
#include <string.h>

/* Local time, so the schedule's "08:00" is 08:00 on this machine's clock. */
static gint64
local (int year, int month, int day, int hour, int minute)
{
  g_autoptr (GDateTime) t = g_date_time_new_local (year, month, day, hour, minute, 0);
  return g_date_time_to_unix (t);
}

static void
test_parse_errors (void **state)
{
  static const char *const bad[] = {
    "sometimes", "every", "every 0m", "every 5x", "at", "at 25:00", "at 7", "every 15m from 08:00",
    "every 15m on funday", "deny from 12:00 to", "every 15m to 18:00 from 08:00", NULL
  };
  static const char *const good[] = {
    "", "every 15m", "every 2h from 08:00 to 18:00 on mon-fri", "at 07:30,12:00,17:45", "at 09:00 on sat,sun",
    "deny from 12:00 to 13:00", "deny on sun", "every 30m; deny from 22:00 to 06:00", "every 10min on fri-mon", NULL
  };

  for (guint i = 0; bad[i] != NULL; i++)
    {
      g_autofree char *why = NULL;
      PbSchedule *s = pb_schedule_parse (bad[i], &why);
      if (s != NULL)
        fail_msg ("case %u: '%s' accepted", i, bad[i]);
      assert_non_null (strstr (why, "is not a schedule entry"));
    }
  for (guint i = 0; good[i] != NULL; i++)
    {
      g_autofree char *why = NULL;
      PbSchedule *s = pb_schedule_parse (good[i], &why);
      if (s == NULL)
        fail_msg ("case %u: '%s' refused: %s", i, good[i], why);
      pb_schedule_free (s);
    }
}

static void
test_next_and_deny (void **state)
{
  /* 2026-11-23 is a Monday. */
  static const struct {
    const char *schedule;
    int at[5];       /* y m d h min of "now" */
    int next[5];     /* expected next firing, or all zero for none */
  } cases[] = {
    { "every 15m from 08:00 to 18:00 on mon-fri", { 2026, 11, 23, 8, 7 }, { 2026, 11, 23, 8, 15 } },
    { "every 15m from 08:00 to 18:00 on mon-fri", { 2026, 11, 23, 17, 50 }, { 2026, 11, 24, 8, 0 } },
    { "every 15m from 08:00 to 18:00 on mon-fri", { 2026, 11, 27, 18, 0 }, { 2026, 11, 30, 8, 0 } },
    { "at 07:30,12:00", { 2026, 11, 23, 7, 30 }, { 2026, 11, 23, 12, 0 } },
    { "at 09:00 on sun", { 2026, 11, 23, 10, 0 }, { 2026, 11, 29, 9, 0 } },
    { "every 30m; deny from 12:00 to 13:00", { 2026, 11, 23, 11, 45 }, { 2026, 11, 23, 13, 0 } },
    { "every 1h from 22:00 to 02:00", { 2026, 11, 23, 23, 10 }, { 2026, 11, 24, 0, 0 } },
    { "deny from 12:00 to 13:00", { 2026, 11, 23, 11, 0 }, { 0, 0, 0, 0, 0 } },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *why = NULL;
      PbSchedule *s = pb_schedule_parse (cases[i].schedule, &why);
      gint64 now = local (cases[i].at[0], cases[i].at[1], cases[i].at[2], cases[i].at[3], cases[i].at[4]);
      gint64 want = cases[i].next[0] == 0 ? 0
                                           : local (cases[i].next[0], cases[i].next[1], cases[i].next[2],
                                                    cases[i].next[3], cases[i].next[4]);
      gint64 got = pb_schedule_next (s, now);

      if (got != want)
        fail_msg ("case %u (%s): next %" G_GINT64_FORMAT ", expected %" G_GINT64_FORMAT " (%+" G_GINT64_FORMAT " min)",
                  i, cases[i].schedule, got, want, (got - want) / 60);
      pb_schedule_free (s);
    }

  {
    PbSchedule *s = pb_schedule_parse ("deny from 12:00 to 13:00 on mon-fri; deny from 22:00 to 06:00", NULL);
    assert_true (pb_schedule_is_denied (s, local (2026, 11, 23, 12, 30)));
    assert_false (pb_schedule_is_denied (s, local (2026, 11, 23, 13, 0)));
    assert_false (pb_schedule_is_denied (s, local (2026, 11, 28, 12, 30)));  /* Saturday */
    assert_true (pb_schedule_is_denied (s, local (2026, 11, 28, 23, 30)));   /* past midnight window */
    assert_true (pb_schedule_is_denied (s, local (2026, 11, 29, 5, 59)));
    assert_false (pb_schedule_is_denied (s, local (2026, 11, 29, 6, 0)));
    pb_schedule_free (s);
  }
  assert_false (pb_schedule_is_denied (NULL, 0));
  assert_int_equal (pb_schedule_next (NULL, 0), 0);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_parse_errors),
    cmocka_unit_test (test_next_and_deny),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
