/* SPDX-License-Identifier: MIT */
/* rate-cap counters: a sliding window of 60 steps per counter, one grow-only cell per step and origin. */
#include "config.h"
#include "rc-private.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  gint64 step;        /* time / step length */
  guint64 origin;
  guint64 count;
} RcCell;

typedef struct {
  char *id;
  gint64 period_ms;
  GArray *cells;      /* RcCell */
} RcCounter;

struct _RcCounters {
  guint64 origin;
  GHashTable *counters;   /* id -> RcCounter * */
};

static void
rc_counter_free (gpointer p)
{
  RcCounter *c = p;
  g_free (c->id);
  g_array_unref (c->cells);
  g_free (c);
}

RcCounters *
rc_counters_new (guint64 origin)
{
  RcCounters *t = g_new0 (RcCounters, 1);

  t->origin = origin;
  t->counters = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, rc_counter_free);
  return t;
}

void
rc_counters_free (RcCounters *counters)
{
  if (counters == NULL)
    return;
  g_hash_table_unref (counters->counters);
  g_free (counters);
}

guint64
rc_counters_get_origin (RcCounters *counters)
{
  return counters->origin;
}

gint64
rc_step_usec (gint64 period_ms)
{
  gint64 period = MAX (period_ms, 1) * 1000;
  /* Rounded up, so 60 steps are never shorter than the period. */
  return (period + RC_STEPS - 1) / RC_STEPS;
}

static gint64
rc_step_of (gint64 period_ms, gint64 now)
{
  return now / rc_step_usec (period_ms);
}

/* The oldest step still counted at NOW: 60 whole steps before the current one. */
static gint64
rc_first_step (gint64 period_ms, gint64 now)
{
  return rc_step_of (period_ms, now) - RC_STEPS;
}

static RcCounter *
rc_counter_lookup (RcCounters *t, const char *id, gint64 period_ms, gboolean create)
{
  RcCounter *c = g_hash_table_lookup (t->counters, id);

  if (c != NULL && c->period_ms != period_ms)
    {
      /* Identities carry the period; a mismatch is a caller's mistake. */
      g_warn_if_reached ();
      return NULL;
    }
  if (c == NULL && create)
    {
      c = g_new0 (RcCounter, 1);
      c->id = g_strdup (id);
      c->period_ms = period_ms;
      c->cells = g_array_new (FALSE, FALSE, sizeof (RcCell));
      g_hash_table_insert (t->counters, c->id, c);
    }
  return c;
}

static RcCell *
rc_counter_cell (RcCounter *c, gint64 step, guint64 origin, gboolean create)
{
  RcCell cell = { step, origin, 0 };

  for (guint i = 0; i < c->cells->len; i++)
    {
      RcCell *x = &g_array_index (c->cells, RcCell, i);
      if (x->step == step && x->origin == origin)
        return x;
    }
  if (!create)
    return NULL;
  g_array_append_val (c->cells, cell);
  return &g_array_index (c->cells, RcCell, c->cells->len - 1);
}

void
rc_counters_add (RcCounters *counters, const char *id, gint64 period_ms, gint64 now, guint64 n)
{
  RcCounter *c;

  if (n == 0)
    return;
  c = rc_counter_lookup (counters, id, period_ms, TRUE);
  if (c != NULL)
    rc_counter_cell (c, rc_step_of (period_ms, now), counters->origin, TRUE)->count += n;
}

static guint64
rc_counter_sum (RcCounter *c, gint64 now)
{
  gint64 first = rc_first_step (c->period_ms, now);
  guint64 sum = 0;

  for (guint i = 0; i < c->cells->len; i++)
    {
      RcCell *x = &g_array_index (c->cells, RcCell, i);
      if (x->step >= first)
        sum += x->count;
    }
  return sum;
}

guint64
rc_counters_get (RcCounters *counters, const char *id, gint64 period_ms, gint64 now)
{
  RcCounter *c = rc_counter_lookup (counters, id, period_ms, FALSE);
  return c != NULL ? rc_counter_sum (c, now) : 0;
}

void
rc_counters_prune (RcCounters *counters, gint64 now)
{
  GHashTableIter it;
  gpointer v;

  g_hash_table_iter_init (&it, counters->counters);
  while (g_hash_table_iter_next (&it, NULL, &v))
    {
      RcCounter *c = v;
      gint64 first = rc_first_step (c->period_ms, now);
      for (guint i = c->cells->len; i > 0; i--)
        if (g_array_index (c->cells, RcCell, i - 1).step < first)
          g_array_remove_index_fast (c->cells, i - 1);
      if (c->cells->len == 0)
        g_hash_table_iter_remove (&it);
    }
}

guint
rc_counters_size (RcCounters *counters)
{
  return g_hash_table_size (counters->counters);
}

GHashTable *
rc_counters_snapshot (RcCounters *counters, gint64 now)
{
  GHashTable *out = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  GHashTableIter it;
  gpointer v;

  g_hash_table_iter_init (&it, counters->counters);
  while (g_hash_table_iter_next (&it, NULL, &v))
    {
      guint64 sum = rc_counter_sum (v, now);
      if (sum > 0)
        g_hash_table_insert (out, g_strdup (((RcCounter *) v)->id), g_memdup2 (&sum, sizeof sum));
    }
  return out;
}

/* ---- text ------------------------------------------------------------------ */

char *
rc_escape (const char *text)
{
  GString *out = g_string_new (NULL);

  for (const guchar *p = (const guchar *) text; *p != '\0'; p++)
    if (*p <= ' ' || *p == '%' || *p >= 0x7f)
      g_string_append_printf (out, "%%%02X", *p);
    else
      g_string_append_c (out, (char) *p);
  return g_string_free (out, FALSE);
}

char *
rc_unescape (const char *text)
{
  GString *out = g_string_new (NULL);

  for (const char *p = text; *p != '\0'; p++)
    {
      if (*p == '%' && g_ascii_isxdigit (p[1]) && g_ascii_isxdigit (p[2]))
        {
          guchar c = (guchar) (g_ascii_xdigit_value (p[1]) * 16 + g_ascii_xdigit_value (p[2]));
          if (c == '\0')
            {
              g_string_free (out, TRUE);
              return NULL;
            }
          g_string_append_c (out, (char) c);
          p += 2;
        }
      else if (*p == '%')
        {
          g_string_free (out, TRUE);
          return NULL;
        }
      else
        g_string_append_c (out, *p);
    }
  return g_string_free (out, FALSE);
}

#define RC_FILE_HEADER "# pillarbox rate-cap counters v1: PERIOD_MS STEP ORIGIN COUNT ID " \
                       "(step = microseconds since 1970 / ceil(period / 60))\n"

static gint
rc_counter_compare (gconstpointer a, gconstpointer b)
{
  return strcmp ((*(RcCounter *const *) a)->id, (*(RcCounter *const *) b)->id);
}

static gint
rc_cell_compare (gconstpointer a, gconstpointer b)
{
  const RcCell *x = a, *y = b;
  if (x->step != y->step)
    return x->step < y->step ? -1 : 1;
  if (x->origin != y->origin)
    return x->origin < y->origin ? -1 : 1;
  return 0;
}

char *
rc_counters_serialize (RcCounters *counters, gint64 now)
{
  g_autoptr (GPtrArray) all = g_ptr_array_new ();
  GString *out = g_string_new (RC_FILE_HEADER);
  GHashTableIter it;
  gpointer v;

  g_hash_table_iter_init (&it, counters->counters);
  while (g_hash_table_iter_next (&it, NULL, &v))
    g_ptr_array_add (all, v);
  /* Sorted, so equal contents give equal texts and the store can skip a write. */
  g_ptr_array_sort (all, rc_counter_compare);
  for (guint i = 0; i < all->len; i++)
    {
      RcCounter *c = g_ptr_array_index (all, i);
      gint64 first = rc_first_step (c->period_ms, now);
      g_autofree char *id = rc_escape (c->id);

      g_array_sort (c->cells, rc_cell_compare);
      for (guint k = 0; k < c->cells->len; k++)
        {
          RcCell *x = &g_array_index (c->cells, RcCell, k);
          if (x->step >= first && x->count > 0)
            g_string_append_printf (out, "%" G_GINT64_FORMAT " %" G_GINT64_FORMAT " %016" G_GINT64_MODIFIER "x %"
                                    G_GUINT64_FORMAT " %s\n",
                                    c->period_ms, x->step, x->origin, x->count, id);
        }
    }
  return g_string_free (out, FALSE);
}

static gboolean
rc_parse_u64 (const char *text, int base, guint64 *value)
{
  char *end = NULL;

  if (!g_ascii_isxdigit (text[0]))
    return FALSE;
  *value = g_ascii_strtoull (text, &end, base);
  return *end == '\0';
}

void
rc_counters_merge_text (RcCounters *counters, const char *text, gint64 now, gboolean *changed, guint *bad)
{
  g_auto (GStrv) lines = g_strsplit (text != NULL ? text : "", "\n", -1);

  if (changed != NULL)
    *changed = FALSE;
  if (bad != NULL)
    *bad = 0;
  for (guint i = 0; lines[i] != NULL; i++)
    {
      g_auto (GStrv) f = NULL;
      g_autofree char *id = NULL;
      guint64 period, step, origin, count;
      RcCounter *c;
      RcCell *cell;

      if (lines[i][0] == '\0' || lines[i][0] == '#')
        continue;
      f = g_strsplit (lines[i], " ", 5);
      if (g_strv_length (f) != 5 || !rc_parse_u64 (f[0], 10, &period) || period == 0 || period > G_MAXINT32
          || !rc_parse_u64 (f[1], 10, &step) || step > G_MAXINT64 || !rc_parse_u64 (f[2], 16, &origin)
          || !rc_parse_u64 (f[3], 10, &count) || (id = rc_unescape (f[4])) == NULL || *id == '\0')
        {
          if (bad != NULL)
            (*bad)++;
          continue;
        }
      if ((gint64) step < rc_first_step ((gint64) period, now) || count == 0)
        continue;
      c = g_hash_table_lookup (counters->counters, id);
      if (c != NULL && c->period_ms != (gint64) period)
        {
          if (bad != NULL)
            (*bad)++;
          continue;
        }
      c = rc_counter_lookup (counters, id, (gint64) period, TRUE);
      cell = rc_counter_cell (c, (gint64) step, origin, TRUE);
      if (count > cell->count)
        {
          cell->count = count;
          if (changed != NULL)
            *changed = TRUE;
        }
    }
}

char *
rc_merge_texts (const char *a, const char *b, gint64 now)
{
  RcCounters *t = rc_counters_new (0);
  char *out;

  rc_counters_merge_text (t, a, now, NULL, NULL);
  rc_counters_merge_text (t, b, now, NULL, NULL);
  out = rc_counters_serialize (t, now);
  rc_counters_free (t);
  return out;
}
