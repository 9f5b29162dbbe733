/* SPDX-License-Identifier: MIT */
/* metrics: the Prometheus text exposition format 0.0.4, and counters keyed by label values. */
#include "config.h"
#include "metrics-private.h"

#include <math.h>
#include <string.h>

/*
 * The format (Prometheus "Exposition formats", text format 0.0.4): one
 * "# HELP" and one "# TYPE" line per family, then one line per sample,
 * NAME{label="value",...} VALUE, every line ended by a line feed. In HELP
 * text, backslash and line feed are escaped as \\ and \n; in label
 * values, double quote as \" as well. Values are Go-style floats: "+Inf",
 * "-Inf", "NaN" or a decimal number.
 */

static const char *const type_names[] = { "counter", "gauge", "histogram" };

void
metrics_expo_family (GString *out, const char *name, MetricsType type, const char *help)
{
  g_string_append_printf (out, "# HELP %s ", name);
  for (const char *p = help; *p != '\0'; p++)
    {
      if (*p == '\\')
        g_string_append (out, "\\\\");
      else if (*p == '\n')
        g_string_append (out, "\\n");
      else
        g_string_append_c (out, *p);
    }
  g_string_append_printf (out, "\n# TYPE %s %s\n", name, type_names[type]);
}

void
metrics_expo_escape_label (GString *out, const char *text)
{
  for (const char *p = text; *p != '\0'; p++)
    {
      if (*p == '\\')
        g_string_append (out, "\\\\");
      else if (*p == '"')
        g_string_append (out, "\\\"");
      else if (*p == '\n')
        g_string_append (out, "\\n");
      else
        g_string_append_c (out, *p);
    }
}

void
metrics_expo_number (GString *out, double value)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (isnan (value))
    g_string_append (out, "NaN");
  else if (isinf (value))
    g_string_append (out, value > 0 ? "+Inf" : "-Inf");
  else if (value == floor (value) && fabs (value) < 9007199254740992.0)   /* 2^53: exact */
    g_string_append_printf (out, "%" G_GINT64_FORMAT, (gint64) value);
  else
    {
      /* The shortest of %.15g .. %.17g that reads back as the same double. */
      for (int digits = 15; digits <= 17; digits++)
        {
          g_ascii_formatd (buf, sizeof buf, digits == 15 ? "%.15g" : digits == 16 ? "%.16g" : "%.17g", value);
          if (g_ascii_strtod (buf, NULL) == value)
            break;
        }
      g_string_append (out, buf);
    }
}

void
metrics_expo_sample (GString *out, const char *name, const char *const *labels, double value)
{
  g_string_append (out, name);
  if (labels != NULL && labels[0] != NULL)
    {
      g_string_append_c (out, '{');
      for (guint i = 0; labels[i] != NULL && labels[i + 1] != NULL; i += 2)
        {
          g_string_append_printf (out, "%s%s=\"", i > 0 ? "," : "", labels[i]);
          metrics_expo_escape_label (out, labels[i + 1]);
          g_string_append_c (out, '"');
        }
      g_string_append_c (out, '}');
    }
  g_string_append_c (out, ' ');
  metrics_expo_number (out, value);
  g_string_append_c (out, '\n');
}

/* ---- counters --------------------------------------------------------------- */

typedef struct {
  char **values;
  guint64 n;
} Series;

struct _MetricsCounter {
  guint n_labels;
  GHashTable *series;         /* key (see counter_key) -> Series */
};

static void
series_free (gpointer p)
{
  Series *s = p;
  g_strfreev (s->values);
  g_free (s);
}

/* Length-prefixed, so no label value can make two series collide. */
static char *
counter_key (guint n_labels, const char *const *values)
{
  GString *key = g_string_new (NULL);
  for (guint i = 0; i < n_labels; i++)
    g_string_append_printf (key, "%zu:%s", strlen (values[i]), values[i]);
  return g_string_free (key, FALSE);
}

MetricsCounter *
metrics_counter_new (guint n_labels)
{
  MetricsCounter *c = g_new0 (MetricsCounter, 1);
  c->n_labels = n_labels;
  c->series = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, series_free);
  return c;
}

void
metrics_counter_free (MetricsCounter *counter)
{
  if (counter == NULL)
    return;
  g_hash_table_unref (counter->series);
  g_free (counter);
}

void
metrics_counter_add (MetricsCounter *counter, const char *const *values, guint64 n)
{
  char *key = counter_key (counter->n_labels, values);
  Series *s = g_hash_table_lookup (counter->series, key);

  if (s == NULL)
    {
      s = g_new0 (Series, 1);
      s->values = g_new0 (char *, counter->n_labels + 1);
      for (guint i = 0; i < counter->n_labels; i++)
        s->values[i] = g_strdup (values[i]);
      g_hash_table_insert (counter->series, key, s);
    }
  else
    g_free (key);
  s->n += n;
}

guint64
metrics_counter_get (MetricsCounter *counter, const char *const *values)
{
  g_autofree char *key = counter_key (counter->n_labels, values);
  Series *s = g_hash_table_lookup (counter->series, key);
  return s != NULL ? s->n : 0;
}

guint
metrics_counter_size (MetricsCounter *counter)
{
  return g_hash_table_size (counter->series);
}

static gint
series_compare (gconstpointer a, gconstpointer b, gpointer data)
{
  const Series *sa = *(Series *const *) a;
  const Series *sb = *(Series *const *) b;
  guint n = GPOINTER_TO_UINT (data);

  for (guint i = 0; i < n; i++)
    {
      int c = strcmp (sa->values[i], sb->values[i]);
      if (c != 0)
        return c;
    }
  return 0;
}

void
metrics_counter_write (MetricsCounter *counter, GString *out, const char *name, const char *const *label_names)
{
  g_autoptr (GPtrArray) list = g_ptr_array_new ();
  GHashTableIter it;
  gpointer value;
  g_autofree const char **labels = g_new0 (const char *, 2 * counter->n_labels + 1);

  g_hash_table_iter_init (&it, counter->series);
  while (g_hash_table_iter_next (&it, NULL, &value))
    g_ptr_array_add (list, value);
  /* Stable order: scrapes diff cleanly and tests can compare pages. */
  g_ptr_array_sort_with_data (list, series_compare, GUINT_TO_POINTER (counter->n_labels));
  for (guint i = 0; i < list->len; i++)
    {
      Series *s = g_ptr_array_index (list, i);
      for (guint k = 0; k < counter->n_labels; k++)
        {
          labels[2 * k] = label_names[k];
          labels[2 * k + 1] = s->values[k];
        }
      metrics_expo_sample (out, name, labels, (double) s->n);
    }
}
