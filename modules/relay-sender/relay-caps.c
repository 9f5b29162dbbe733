/* SPDX-License-Identifier: MIT */
/* relay-sender: periodic caps ("50 messages per 60m") as sliding windows, and their log across restarts. */
#include "config.h"
#include "relay-private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib/gstdio.h>

/*
 * A limit "N messages per P" means: in any window of length P, at most N
 * messages the relay accepted. At the moment a transaction is about to
 * start, the module counts what the relay accepted within (now - P, now]
 * plus what transactions under way hold, and lets the new one start only
 * if one more message still fits. Messages count when the relay answers
 * the final "." with 2xx (each split part of a message is a message to the
 * relay); recipients count with the message they were accepted in.
 * Holding a place from the start of a transaction keeps parallel sessions
 * from overshooting together; counting at the acceptance (not the start)
 * keeps the windows seen by the relay, which counts what it received, no
 * fuller than ours.
 */

#define RELAY_MAX_PERIOD_MS (G_GINT64_CONSTANT (31) * 24 * 3600 * 1000)
#define RELAY_LOG_COMPACT_SIZE (1024 * 1024)

/* ---- limits ----------------------------------------------------------- */

static gint64
unit_ms (const char *u)
{
  static const struct { const char *word; gint64 ms; } units[] = {
    { "s", 1000 }, { "sec", 1000 }, { "secs", 1000 }, { "second", 1000 }, { "seconds", 1000 },
    { "m", 60000 }, { "min", 60000 }, { "mins", 60000 }, { "minute", 60000 }, { "minutes", 60000 },
    { "h", 3600000 }, { "hr", 3600000 }, { "hrs", 3600000 }, { "hour", 3600000 }, { "hours", 3600000 },
    { "d", 86400000 }, { "day", 86400000 }, { "days", 86400000 },
    { "w", 604800000 }, { "week", 604800000 }, { "weeks", 604800000 },
  };

  for (guint i = 0; i < G_N_ELEMENTS (units); i++)
    if (g_ascii_strcasecmp (u, units[i].word) == 0)
      return units[i].ms;
  return 0;
}

gboolean
relay_limit_parse (const char *text, RelayLimit *out, GError **error)
{
  g_auto (GStrv) words = g_strsplit_set (text, " \t", -1);
  g_autoptr (GPtrArray) w = g_ptr_array_new ();
  char *end = NULL;
  gint64 n, count = 1, unit;
  const char *dur;

  for (guint i = 0; words[i] != NULL; i++)
    if (words[i][0] != '\0')
      g_ptr_array_add (w, words[i]);
  if (w->len < 4 || g_ascii_strcasecmp (g_ptr_array_index (w, 2), "per") != 0)
    goto syntax;

  n = g_ascii_strtoll (g_ptr_array_index (w, 0), &end, 10);
  if (end == NULL || *end != '\0' || n < 1 || n > 1000000000)
    {
      g_set_error (error, RELAY_ERROR, 0, "'%s': the count must be a whole number from 1 to 1000000000", text);
      return FALSE;
    }
  {
    const char *k = g_ptr_array_index (w, 1);
    if (g_ascii_strcasecmp (k, "message") == 0 || g_ascii_strcasecmp (k, "messages") == 0)
      out->kind = RELAY_COUNT_MESSAGES;
    else if (g_ascii_strcasecmp (k, "recipient") == 0 || g_ascii_strcasecmp (k, "recipients") == 0)
      out->kind = RELAY_COUNT_RECIPIENTS;
    else
      {
        g_set_error (error, RELAY_ERROR, 0, "'%s': count \"messages\" or \"recipients\", not \"%s\"", text, k);
        return FALSE;
      }
  }

  /* "per hour", "per 60 minutes", "per 60m", "per day". */
  dur = g_ptr_array_index (w, 3);
  if (w->len == 5)
    {
      count = g_ascii_strtoll (dur, &end, 10);
      if (end == NULL || *end != '\0' || count < 1)
        goto syntax;
      unit = unit_ms (g_ptr_array_index (w, 4));
    }
  else if (w->len == 4)
    {
      if (g_ascii_isdigit (dur[0]))
        {
          count = g_ascii_strtoll (dur, &end, 10);
          if (count < 1)
            goto syntax;
          unit = unit_ms (end);
        }
      else
        unit = unit_ms (dur);
    }
  else
    goto syntax;
  if (unit == 0)
    goto syntax;
  if (count > RELAY_MAX_PERIOD_MS / unit)
    {
      g_set_error (error, RELAY_ERROR, 0, "'%s': the period may be 31 days at most", text);
      return FALSE;
    }
  out->limit = n;
  out->period_ms = count * unit;
  return TRUE;

syntax:
  g_set_error (error, RELAY_ERROR, 0,
               "'%s': write a limit as \"N messages per PERIOD\" or \"N recipients per PERIOD\", "
               "with PERIOD such as 60m, 1h, 90 minutes, hour or day", text);
  return FALSE;
}

static char *
period_describe (gint64 ms)
{
  if (ms % 86400000 == 0)
    return g_strdup_printf ("%" G_GINT64_FORMAT "d", ms / 86400000);
  if (ms % 3600000 == 0)
    return g_strdup_printf ("%" G_GINT64_FORMAT "h", ms / 3600000);
  if (ms % 60000 == 0)
    return g_strdup_printf ("%" G_GINT64_FORMAT "m", ms / 60000);
  return g_strdup_printf ("%" G_GINT64_FORMAT "s", ms / 1000);
}

char *
relay_limit_describe (const RelayLimit *limit)
{
  g_autofree char *p = period_describe (limit->period_ms);
  const char *what = limit->kind == RELAY_COUNT_MESSAGES ? (limit->limit == 1 ? "message" : "messages")
                                                          : (limit->limit == 1 ? "recipient" : "recipients");
  return g_strdup_printf ("%" G_GINT64_FORMAT " %s per %s", limit->limit, what, p);
}

/* ---- the windows ------------------------------------------------------ */

RelayCapState *
relay_cap_state_new (const char *name)
{
  RelayCapState *st = g_new0 (RelayCapState, 1);
  st->name = g_strdup (name);
  st->limits = g_array_new (FALSE, FALSE, sizeof (RelayLimit));
  st->events = g_array_new (FALSE, FALSE, sizeof (RelayEvent));
  return st;
}

void
relay_cap_state_free (RelayCapState *st)
{
  if (st == NULL)
    return;
  g_array_unref (st->limits);
  g_array_unref (st->events);
  g_free (st->name);
  g_free (st);
}

void
relay_caps_count (RelayCapState *st, gint64 period_ms, gint64 now_ms, guint64 *messages, guint64 *recipients)
{
  guint64 m = 0, r = 0;

  for (guint i = st->events->len; i > 0; i--)
    {
      const RelayEvent *ev = &g_array_index (st->events, RelayEvent, i - 1);
      if (ev->time_ms <= now_ms - period_ms)
        break;
      m += ev->messages;
      r += ev->recipients;
    }
  *messages = m;
  *recipients = r;
}

/* When enough of the window's counts will have left it that @excess of
 * them are gone; -1 when even an empty window would not do (what
 * transactions under way hold is in the way). */
static gint64
limit_frees_at (RelayCapState *st, const RelayLimit *l, guint64 excess, gint64 now_ms)
{
  guint64 acc = 0;
  guint first = st->events->len;

  for (guint i = st->events->len; i > 0; i--)
    {
      if (g_array_index (st->events, RelayEvent, i - 1).time_ms <= now_ms - l->period_ms)
        break;
      first = i - 1;
    }
  for (guint i = first; i < st->events->len; i++)
    {
      const RelayEvent *ev = &g_array_index (st->events, RelayEvent, i);
      acc += l->kind == RELAY_COUNT_MESSAGES ? ev->messages : ev->recipients;
      if (acc >= excess)
        return ev->time_ms + l->period_ms;
    }
  return -1;
}

guint
relay_caps_reserve (RelayCapState *st, guint wanted, gint64 now_ms, char **why)
{
  guint granted = MAX (wanted, 1);

  for (guint i = 0; i < st->limits->len; i++)
    {
      const RelayLimit *l = &g_array_index (st->limits, RelayLimit, i);
      guint64 m, r, used, excess;
      gint64 at;

      relay_caps_count (st, l->period_ms, now_ms, &m, &r);
      used = l->kind == RELAY_COUNT_MESSAGES ? m + st->held_messages : r + st->held_recipients;
      if (used + 1 <= (guint64) l->limit)
        {
          if (l->kind == RELAY_COUNT_RECIPIENTS)
            granted = (guint) MIN ((guint64) granted, (guint64) l->limit - used);
          continue;
        }
      if (why != NULL)
        {
          g_autofree char *desc = relay_limit_describe (l);
          excess = used + 1 - (guint64) l->limit;
          at = limit_frees_at (st, l, excess, now_ms);
          g_free (*why);
          if (at < 0)
            *why = g_strdup_printf ("relay %s: limit of %s reached (with messages under way); "
                                    "retry when they end", st->name, desc);
          else
            {
              g_autoptr (GDateTime) t = g_date_time_new_from_unix_utc (at / 1000);
              g_autofree char *iso = g_date_time_format (t, "%Y-%m-%dT%H:%M:%SZ");
              *why = g_strdup_printf ("relay %s: limit of %s reached; next one allowed at %s (in %" G_GINT64_FORMAT
                                      " s) [retry-at=%" G_GINT64_FORMAT "]", st->name, desc, iso,
                                      (at - now_ms + 999) / 1000, (at + 999) / 1000);
            }
        }
      return 0;
    }
  st->held_messages += 1;
  st->held_recipients += granted;
  return granted;
}

const RelayEvent *
relay_caps_settle (RelayCapState *st, guint granted, gboolean delivered, guint accepted, gint64 now_ms)
{
  RelayEvent ev;

  st->held_messages -= MIN (st->held_messages, 1u);
  st->held_recipients -= MIN (st->held_recipients, granted);
  if (!delivered)
    return NULL;
  /* Never older than the last one, even if the clock stepped back. */
  if (st->events->len > 0)
    now_ms = MAX (now_ms, g_array_index (st->events, RelayEvent, st->events->len - 1).time_ms);
  ev.time_ms = now_ms;
  ev.messages = 1;
  ev.recipients = accepted;
  g_array_append_val (st->events, ev);
  relay_caps_prune (st, now_ms);
  return &g_array_index (st->events, RelayEvent, st->events->len - 1);
}

gint64
relay_caps_next_allowed (RelayCapState *st, gint64 now_ms)
{
  gint64 when = now_ms;

  for (guint i = 0; i < st->limits->len; i++)
    {
      const RelayLimit *l = &g_array_index (st->limits, RelayLimit, i);
      guint64 m, r, used;
      gint64 at;

      relay_caps_count (st, l->period_ms, now_ms, &m, &r);
      used = l->kind == RELAY_COUNT_MESSAGES ? m + st->held_messages : r + st->held_recipients;
      if (used + 1 <= (guint64) l->limit)
        continue;
      at = limit_frees_at (st, l, used + 1 - (guint64) l->limit, now_ms);
      when = MAX (when, at < 0 ? now_ms + 1000 : at);
    }
  return when;
}

static gint64
longest_period (RelayCapState *st)
{
  gint64 p = 0;
  for (guint i = 0; i < st->limits->len; i++)
    p = MAX (p, g_array_index (st->limits, RelayLimit, i).period_ms);
  return p;
}

void
relay_caps_prune (RelayCapState *st, gint64 now_ms)
{
  gint64 keep_after = now_ms - longest_period (st);
  guint drop = 0;

  while (drop < st->events->len && g_array_index (st->events, RelayEvent, drop).time_ms <= keep_after)
    drop++;
  /* Dropping one at a time would move the array every message. */
  if (drop > 0 && (drop >= 64 || drop == st->events->len))
    g_array_remove_range (st->events, 0, drop);
}

/* ---- the log ---------------------------------------------------------- */

void
relay_cap_log_init (RelayCapLog *log, const char *path, GHashTable *states)
{
  log->path = g_strdup (path);
  log->known_size = -1;
  log->states = states;
}

void
relay_cap_log_clear (RelayCapLog *log)
{
  g_clear_pointer (&log->path, g_free);
}

static gint
compare_events (gconstpointer a, gconstpointer b)
{
  gint64 x = ((const RelayEvent *) a)->time_ms, y = ((const RelayEvent *) b)->time_ms;
  return x < y ? -1 : x > y ? 1 : 0;
}

gboolean
relay_cap_log_load (RelayCapLog *log, gint64 now_ms, gboolean compact, GError **error)
{
  g_autofree char *text = NULL;
  gsize len = 0;
  g_autoptr (GError) local = NULL;
  g_autoptr (GString) kept = g_string_new (NULL);
  GHashTableIter it;
  gpointer value;
  char *line, *next;

  if (!g_file_get_contents (log->path, &text, &len, &local))
    {
      if (!g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        {
          g_propagate_prefixed_error (error, g_steal_pointer (&local), "cannot read %s: ", log->path);
          return FALSE;
        }
      text = g_strdup ("");
      len = 0;
    }

  g_hash_table_iter_init (&it, log->states);
  while (g_hash_table_iter_next (&it, NULL, &value))
    g_array_set_size (((RelayCapState *) value)->events, 0);

  for (line = text; line != NULL && *line != '\0'; line = next)
    {
      char name[256];
      gint64 t;
      guint m, r;
      RelayCapState *st;

      next = strchr (line, '\n');
      if (next != NULL)
        *next++ = '\0';
      if (sscanf (line, "%" G_GINT64_FORMAT " %255s %u %u", &t, name, &m, &r) != 4)
        continue;  /* a line cut short by a crash */
      st = g_hash_table_lookup (log->states, name);
      if (st == NULL || t <= now_ms - longest_period (st))
        continue;
      {
        RelayEvent ev = { t, m, r };
        g_array_append_val (st->events, ev);
      }
      g_string_append_printf (kept, "%" G_GINT64_FORMAT " %s %u %u\n", t, name, m, r);
    }
  g_hash_table_iter_init (&it, log->states);
  while (g_hash_table_iter_next (&it, NULL, &value))
    g_array_sort (((RelayCapState *) value)->events, compare_events);

  if (compact)
    {
      if (!g_file_set_contents_full (log->path, kept->str, (gssize) kept->len, G_FILE_SET_CONTENTS_CONSISTENT, 0600,
                                     error))
        return FALSE;
      log->known_size = (gint64) kept->len;
    }
  else
    log->known_size = (gint64) len;
  return TRUE;
}

void
relay_cap_log_sync (RelayCapLog *log, gint64 now_ms)
{
  GStatBuf st;
  g_autoptr (GError) error = NULL;

  if (log->path == NULL)
    return;
  if (g_stat (log->path, &st) != 0)
    {
      if (log->known_size > 0)
        log->known_size = -1;
      return;
    }
  if ((gint64) st.st_size == log->known_size)
    return;
  if (!relay_cap_log_load (log, now_ms, st.st_size > RELAY_LOG_COMPACT_SIZE, &error))
    g_warning ("relay-sender: %s", error->message);
}

void
relay_cap_log_append (RelayCapLog *log, const char *name, const RelayEvent *ev)
{
  g_autofree char *line = NULL;
  int fd;
  gssize n, len;
  struct stat st;

  if (log->path == NULL)
    return;
  line = g_strdup_printf ("%" G_GINT64_FORMAT " %s %u %u\n", ev->time_ms, name, ev->messages, ev->recipients);
  len = (gssize) strlen (line);
  fd = g_open (log->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    {
      g_warning ("relay-sender: cannot append to %s: %s (periodic caps will not survive a restart)", log->path,
                 g_strerror (errno));
      return;
    }
  n = write (fd, line, (size_t) len);
  if (n != len)
    g_warning ("relay-sender: cannot append to %s: %s", log->path, n < 0 ? g_strerror (errno) : "short write");
  /* If only our line was added since we last looked, we are in step;
   * otherwise another instance wrote too, and the next sync reads it all. */
  if (fstat (fd, &st) == 0 && log->known_size >= 0 && (gint64) st.st_size == log->known_size + len)
    log->known_size = (gint64) st.st_size;
  else
    log->known_size = -1;
  close (fd);
}
