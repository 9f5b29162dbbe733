/* SPDX-License-Identifier: MIT */
/* Connector schedules: "every 15m from 08:00 to 18:00 on mon-fri", "at 07:30, 12:00", "deny from 12:00 to 13:00". */
#include "config.h"
#include "core-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { SCHED_EVERY, SCHED_AT, SCHED_DENY } SchedKind;

typedef struct {
  SchedKind kind;
  gint64 every_min;           /* EVERY: period in minutes */
  int from_min;               /* minutes after midnight, inclusive */
  int to_min;                 /* exclusive; to < from wraps past midnight */
  GArray *at;                 /* AT: int minutes after midnight */
  guint8 days;                /* bit 0 = Monday ... bit 6 = Sunday */
} SchedEntry;

struct _PbSchedule {
  GPtrArray *entries;
};

static void
sched_entry_free (gpointer p)
{
  SchedEntry *e = p;
  if (e->at != NULL)
    g_array_unref (e->at);
  g_free (e);
}

void
pb_schedule_free (PbSchedule *schedule)
{
  if (schedule == NULL)
    return;
  g_ptr_array_unref (schedule->entries);
  g_free (schedule);
}

static gboolean
parse_time (const char *s, int *minutes)
{
  int h, m;
  char extra;

  if (sscanf (s, "%d:%d%c", &h, &m, &extra) != 2 || h < 0 || h > 24 || m < 0 || m > 59 || (h == 24 && m != 0))
    return FALSE;
  *minutes = h * 60 + m;
  return TRUE;
}

static int
day_index (const char *s)
{
  static const char *const names[] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };
  for (int i = 0; i < 7; i++)
    if (g_ascii_strncasecmp (s, names[i], 3) == 0 && strlen (s) == 3)
      return i;
  return -1;
}

/* "mon-fri", "sat,sun", "mon,wed-fri" */
static gboolean
parse_days (const char *s, guint8 *days)
{
  g_auto (GStrv) parts = g_strsplit (s, ",", -1);

  *days = 0;
  for (guint i = 0; parts[i] != NULL; i++)
    {
      char *dash = strchr (parts[i], '-');
      int a, b;
      if (dash != NULL)
        {
          *dash = '\0';
          a = day_index (parts[i]);
          b = day_index (dash + 1);
        }
      else
        a = b = day_index (parts[i]);
      if (a < 0 || b < 0)
        return FALSE;
      for (int d = a;; d = (d + 1) % 7)
        {
          *days |= (guint8) (1u << d);
          if (d == b)
            break;
        }
    }
  return *days != 0;
}

static gboolean
parse_entry (const char *text, SchedEntry *e, char **error)
{
  g_auto (GStrv) words = g_strsplit_set (text, " \t", -1);
  GPtrArray *w = g_ptr_array_new ();
  guint i = 0;
  gboolean ok = FALSE;

  for (guint k = 0; words[k] != NULL; k++)
    if (*words[k] != '\0')
      g_ptr_array_add (w, words[k]);
  g_ptr_array_add (w, NULL);
  e->from_min = 0;
  e->to_min = 24 * 60;
  e->days = 0x7f;

#define WORD(n) ((const char *) g_ptr_array_index (w, (n)))
  if (WORD (0) == NULL)
    goto bad;
  if (g_ascii_strcasecmp (WORD (0), "every") == 0 && WORD (1) != NULL)
    {
      char *unit = NULL;
      gint64 n = g_ascii_strtoll (WORD (1), &unit, 10);
      e->kind = SCHED_EVERY;
      if (n <= 0 || (strcmp (unit, "m") != 0 && strcmp (unit, "min") != 0 && strcmp (unit, "h") != 0))
        goto bad;
      e->every_min = unit[0] == 'h' ? n * 60 : n;
      i = 2;
    }
  else if (g_ascii_strcasecmp (WORD (0), "at") == 0 && WORD (1) != NULL)
    {
      e->kind = SCHED_AT;
      e->at = g_array_new (FALSE, FALSE, sizeof (int));
      for (i = 1; WORD (i) != NULL && WORD (i)[0] != 'o'; i++)
        {
          g_auto (GStrv) times = g_strsplit (WORD (i), ",", -1);
          for (guint t = 0; times[t] != NULL; t++)
            {
              int m;
              if (*times[t] == '\0')
                continue;
              if (!parse_time (times[t], &m))
                goto bad;
              g_array_append_val (e->at, m);
            }
        }
      if (e->at->len == 0)
        goto bad;
    }
  else if (g_ascii_strcasecmp (WORD (0), "deny") == 0)
    {
      e->kind = SCHED_DENY;
      i = 1;
    }
  else
    goto bad;

  while (WORD (i) != NULL)
    {
      if (g_ascii_strcasecmp (WORD (i), "from") == 0 && WORD (i + 1) != NULL && WORD (i + 2) != NULL
          && g_ascii_strcasecmp (WORD (i + 2), "to") == 0 && WORD (i + 3) != NULL && e->kind != SCHED_AT)
        {
          if (!parse_time (WORD (i + 1), &e->from_min) || !parse_time (WORD (i + 3), &e->to_min))
            goto bad;
          i += 4;
        }
      else if (g_ascii_strcasecmp (WORD (i), "on") == 0 && WORD (i + 1) != NULL)
        {
          if (!parse_days (WORD (i + 1), &e->days))
            goto bad;
          i += 2;
        }
      else
        goto bad;
    }
  ok = TRUE;
bad:
#undef WORD
  g_ptr_array_unref (w);
  if (!ok)
    *error = g_strdup_printf ("'%s' is not a schedule entry (every N[m|h] [from HH:MM to HH:MM] [on DAYS] | "
                              "at HH:MM[,HH:MM...] [on DAYS] | deny [from HH:MM to HH:MM] [on DAYS])", text);
  return ok;
}

PbSchedule *
pb_schedule_parse (const char *text, char **error)
{
  PbSchedule *s = g_new0 (PbSchedule, 1);
  g_auto (GStrv) entries = g_strsplit (text != NULL ? text : "", ";", -1);

  s->entries = g_ptr_array_new_with_free_func (sched_entry_free);
  for (guint i = 0; entries[i] != NULL; i++)
    {
      SchedEntry *e;
      if (*g_strstrip (entries[i]) == '\0')
        continue;
      e = g_new0 (SchedEntry, 1);
      if (!parse_entry (entries[i], e, error))
        {
          sched_entry_free (e);
          pb_schedule_free (s);
          return NULL;
        }
      g_ptr_array_add (s->entries, e);
    }
  return s;
}

static gboolean
in_window (const SchedEntry *e, int minute, int weekday)
{
  if ((e->days & (1u << weekday)) == 0)
    return FALSE;
  if (e->from_min <= e->to_min)
    return minute >= e->from_min && minute < e->to_min;
  return minute >= e->from_min || minute < e->to_min;  /* past midnight */
}

/* Local time broken down: minute of day and weekday (0 = Monday). */
static void
local_minute (gint64 unix_time, int *minute, int *weekday)
{
  g_autoptr (GDateTime) t = g_date_time_new_from_unix_local (unix_time);
  *minute = g_date_time_get_hour (t) * 60 + g_date_time_get_minute (t);
  *weekday = g_date_time_get_day_of_week (t) - 1;
}

gboolean
pb_schedule_is_denied (const PbSchedule *schedule, gint64 now)
{
  int minute, weekday;

  if (schedule == NULL)
    return FALSE;
  local_minute (now, &minute, &weekday);
  for (guint i = 0; i < schedule->entries->len; i++)
    {
      const SchedEntry *e = g_ptr_array_index (schedule->entries, i);
      if (e->kind == SCHED_DENY && in_window (e, minute, weekday))
        return TRUE;
    }
  return FALSE;
}

static gboolean
fires_at (const SchedEntry *e, int minute, int weekday)
{
  if (e->kind == SCHED_AT)
    {
      if ((e->days & (1u << weekday)) == 0)
        return FALSE;
      for (guint k = 0; k < e->at->len; k++)
        if (g_array_index (e->at, int, k) == minute)
          return TRUE;
      return FALSE;
    }
  if (e->kind == SCHED_EVERY && in_window (e, minute, weekday))
    {
      int since = minute - e->from_min;
      if (since < 0)
        since += 24 * 60;
      return since % e->every_min == 0;
    }
  return FALSE;
}

gint64
pb_schedule_next (const PbSchedule *schedule, gint64 after)
{
  gint64 t;

  if (schedule == NULL || schedule->entries->len == 0)
    return 0;
  /* Minute by minute over the next eight days: simple, and at most 11 520 steps. */
  t = (after / 60 + 1) * 60;
  for (guint step = 0; step < 8 * 24 * 60; step++, t += 60)
    {
      int minute, weekday;
      local_minute (t, &minute, &weekday);
      for (guint i = 0; i < schedule->entries->len; i++)
        {
          const SchedEntry *e = g_ptr_array_index (schedule->entries, i);
          if (fires_at (e, minute, weekday) && !pb_schedule_is_denied (schedule, t))
            return t;
        }
    }
  return 0;
}
