/* SPDX-License-Identifier: MIT */
/* status-monitor: the line format (VPOP3's update lines 0 and 1, Pillarbox's key=value lines), commands, snapshots. */
#include "config.h"
#include "sm-private.h"

#include <string.h>

G_DEFINE_QUARK (pillarbox-status-monitor-error-quark, sm_error)

/* FILETIME counts 100 ns ticks from 1601-01-01 UTC; this many lie before 1970-01-01. */
#define SM_FILETIME_UNIX_EPOCH G_GINT64_CONSTANT (116444736000000000)

char *
sm_filetime_hex (gint64 real_usec)
{
  guint64 ticks = (guint64) (real_usec * 10 + SM_FILETIME_UNIX_EPOCH);

  return g_strdup_printf ("%016" G_GINT64_MODIFIER "X", ticks);
}

gboolean
sm_filetime_parse (const char *text, gint64 *real_usec)
{
  guint64 ticks = 0;

  for (guint i = 0; i < 16; i++)
    {
      int d = g_ascii_xdigit_value (text[i]);
      if (d < 0)
        return FALSE;
      ticks = ticks << 4 | (guint64) d;
    }
  if (ticks > (guint64) G_MAXINT64)
    return FALSE;
  *real_usec = ((gint64) ticks - SM_FILETIME_UNIX_EPOCH) / 10;
  return TRUE;
}

/* ---- escaping ---------------------------------------------------------------- */

static gboolean
sm_needs_escape (guchar c)
{
  return c <= 0x20 || c == 0x7f || c == '%';
}

char *
sm_escape_value (const char *value)
{
  GString *out;

  if (value == NULL || *value == '\0')
    return g_strdup ("-");
  if (strcmp (value, "-") == 0)
    return g_strdup ("%2D");
  out = g_string_sized_new (strlen (value));
  for (const guchar *p = (const guchar *) value; *p != '\0'; p++)
    if (sm_needs_escape (*p))
      g_string_append_printf (out, "%%%02X", *p);
    else
      g_string_append_c (out, (char) *p);
  return g_string_free (out, FALSE);
}

char *
sm_unescape_value (const char *token)
{
  GString *out;

  if (strcmp (token, "-") == 0)
    return g_strdup ("");
  out = g_string_sized_new (strlen (token));
  for (const char *p = token; *p != '\0'; p++)
    {
      if (*p != '%')
        {
          g_string_append_c (out, *p);
          continue;
        }
      int hi = g_ascii_xdigit_value (p[1]);
      int lo = hi >= 0 ? g_ascii_xdigit_value (p[2]) : -1;
      if (lo < 0 || (hi == 0 && lo == 0))
        {
          g_string_free (out, TRUE);
          return NULL;
        }
      g_string_append_c (out, (char) (hi << 4 | lo));
      p += 2;
    }
  return g_string_free (out, FALSE);
}

char *
sm_clean_text (const char *text)
{
  const char *p = text != NULL ? text : "";
  const char *end = p + strlen (p);
  GString *out = g_string_sized_new ((gsize) (end - p));

  /* A failed login's user name arrives here as the peer sent it: a monitor
   * reads lines of UTF-8 text, so an octet that is not part of a valid
   * sequence becomes '?', as a control character becomes a space. */
  while (p < end)
    {
      gunichar c = g_utf8_get_char_validated (p, end - p);

      if (c == (gunichar) -1 || c == (gunichar) -2)
        {
          g_string_append_c (out, '?');
          p++;
          continue;
        }
      if (c < 0x20 || (c >= 0x7f && c <= 0x9f))
        g_string_append_c (out, ' ');
      else
        g_string_append_len (out, p, g_utf8_skip[(guchar) *p]);
      p = g_utf8_next_char (p);
    }
  return g_string_free (out, FALSE);
}

/* ---- building lines ------------------------------------------------------------ */

GString *
sm_line_begin (char type)
{
  GString *line = g_string_sized_new (128);

  g_string_append_c (line, type);
  return line;
}

void
sm_line_add (GString *line, const char *key, const char *value)
{
  g_autofree char *v = sm_escape_value (value);

  g_string_append_printf (line, " %s=%s", key, v);
}

void
sm_line_add_int (GString *line, const char *key, gint64 value)
{
  g_string_append_printf (line, " %s=%" G_GINT64_FORMAT, key, value);
}

char *
sm_line_end (GString *line)
{
  g_string_append (line, "\r\n");
  return g_string_free (line, FALSE);
}

char *
sm_activity_line (gint64 real_usec, const char *text)
{
  g_autofree char *ft = sm_filetime_hex (real_usec);
  g_autofree char *clean = sm_clean_text (text);

  return g_strdup_printf ("0%s%s\r\n", ft, clean);
}

char *
sm_connection_status_line (const char *text)
{
  g_autofree char *clean = sm_clean_text (text);

  return g_strdup_printf ("1%s\r\n", clean);
}

char *
sm_iso_time (gint64 unix_seconds)
{
  g_autoptr (GDateTime) t = unix_seconds > 0 ? g_date_time_new_from_unix_utc (unix_seconds) : NULL;

  return t != NULL ? g_date_time_format (t, "%Y-%m-%dT%H:%M:%SZ") : g_strdup ("");
}

/* ---- reading update lines ------------------------------------------------------- */

void
sm_update_free (SmUpdate *update)
{
  if (update == NULL)
    return;
  g_free (update->text);
  if (update->fields != NULL)
    g_hash_table_unref (update->fields);
  g_free (update);
}

SmUpdate *
sm_update_parse (const char *line, GError **error)
{
  g_autoptr (SmUpdate) u = g_new0 (SmUpdate, 1);
  g_autofree char *copy = g_strdup (line);
  g_auto (GStrv) tokens = NULL;
  gsize n = strlen (copy);

  if (n >= 2 && copy[n - 2] == '\r' && copy[n - 1] == '\n')
    copy[n - 2] = '\0';
  else if (n >= 1 && copy[n - 1] == '\n')
    copy[n - 1] = '\0';
  if (copy[0] == '\0' || copy[0] == '+' || copy[0] == '-')
    {
      g_set_error (error, SM_ERROR, 0, "not an update line");
      return NULL;
    }
  u->type = copy[0];
  if (u->type == '0')
    {
      if (strlen (copy) < 17 || !sm_filetime_parse (copy + 1, &u->time))
        {
          g_set_error (error, SM_ERROR, 0, "activity line without a 16-digit time");
          return NULL;
        }
      u->text = g_strdup (copy + 17);
      return g_steal_pointer (&u);
    }
  if (u->type == '1')
    {
      u->text = g_strdup (copy + 1);
      return g_steal_pointer (&u);
    }
  if (copy[1] != ' ' && copy[1] != '\0')
    {
      g_set_error (error, SM_ERROR, 0, "type '%c' is not followed by a space", u->type);
      return NULL;
    }
  u->fields = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  tokens = g_strsplit (copy[1] != '\0' ? copy + 2 : "", " ", -1);
  for (guint i = 0; tokens[i] != NULL; i++)
    {
      char *eq = strchr (tokens[i], '=');
      char *value;

      if (eq == NULL || eq == tokens[i])
        {
          g_set_error (error, SM_ERROR, 0, "field %u is not key=value", i + 1);
          return NULL;
        }
      *eq = '\0';
      value = sm_unescape_value (eq + 1);
      if (value == NULL)
        {
          g_set_error (error, SM_ERROR, 0, "field %s has a bad escape", tokens[i]);
          return NULL;
        }
      g_hash_table_replace (u->fields, g_strdup (tokens[i]), value);
    }
  return g_steal_pointer (&u);
}

/* ---- commands ------------------------------------------------------------------------- */

static const struct {
  const char *verb;
  SmCommandKind kind;
  guint min_args, max_args;   /* max 2 means "the rest of the line is the second argument" */
} sm_commands[] = {
  { "LOGIN", SM_CMD_LOGIN, 2, 2 },
  { "ALOGIN", SM_CMD_ALOGIN, 2, 2 },
  { "CONNECT", SM_CMD_CONNECT, 0, 1 },
  { "CONNECT-NOW", SM_CMD_CONNECT, 0, 1 },
  { "STATUS", SM_CMD_STATUS, 0, 0 },
  { "NOOP", SM_CMD_NOOP, 0, 0 },
  { "QUIT", SM_CMD_QUIT, 0, 0 },
};

void
sm_command_clear (SmCommand *cmd)
{
  g_free (cmd->verb);
  g_free (cmd->arg1);
  if (cmd->arg2 != NULL)
    {
      /* It may be a password. */
      memset (cmd->arg2, 0, strlen (cmd->arg2));
      g_free (cmd->arg2);
    }
  memset (cmd, 0, sizeof *cmd);
}

void
sm_command_parse (const char *line, gsize len, SmCommand *cmd)
{
  const char *p, *end = line + len;
  gsize vlen;
  guint nargs = 0;

  memset (cmd, 0, sizeof *cmd);
  if (len > 0 && end[-1] == '\n')
    end--;
  if (end > line && end[-1] == '\r')
    end--;
  if (memchr (line, '\0', (gsize) (end - line)) != NULL || memchr (line, '\r', (gsize) (end - line)) != NULL)
    {
      cmd->kind = SM_CMD_UNKNOWN;
      cmd->verb = g_strdup ("?");
      return;
    }
  p = line;
  while (p < end && *p == ' ')
    p++;
  if (p == end)
    {
      cmd->kind = SM_CMD_EMPTY;
      return;
    }
  vlen = 0;
  while (p + vlen < end && p[vlen] != ' ')
    vlen++;
  cmd->verb = g_ascii_strup (p, (gssize) MIN (vlen, 32));
  cmd->kind = SM_CMD_UNKNOWN;
  for (guint i = 0; i < G_N_ELEMENTS (sm_commands); i++)
    {
      if (strlen (sm_commands[i].verb) != vlen || g_ascii_strncasecmp (p, sm_commands[i].verb, vlen) != 0)
        continue;
      cmd->kind = sm_commands[i].kind;
      p += vlen;
      while (p < end && *p == ' ')
        p++;
      if (p < end)
        {
          gsize alen = 0;
          while (p + alen < end && p[alen] != ' ')
            alen++;
          cmd->arg1 = g_strndup (p, alen);
          nargs = 1;
          p += alen;
          while (p < end && *p == ' ')
            p++;
          if (p < end)
            {
              /* VPOP3's LOGIN takes the password as the rest of the line, so a
               * password may contain spaces; trailing spaces are kept too. */
              cmd->arg2 = g_strndup (p, (gsize) (end - p));
              nargs = 2;
            }
        }
      cmd->bad_args = nargs < sm_commands[i].min_args || nargs > sm_commands[i].max_args;
      return;
    }
}

/* ---- snapshots of `status` and `sessions` ------------------------------------------------ */

static const char *
dict_string (GVariant *dict, const char *key)
{
  const char *s = NULL;

  if (!g_variant_lookup (dict, key, "&s", &s))
    return "";
  return s;
}

static gint64
dict_int (GVariant *dict, const char *key)
{
  g_autoptr (GVariant) v = g_variant_lookup_value (dict, key, NULL);

  if (v == NULL)
    return 0;
  if (g_variant_is_of_type (v, G_VARIANT_TYPE_INT64))
    return g_variant_get_int64 (v);
  if (g_variant_is_of_type (v, G_VARIANT_TYPE_UINT64))
    return (gint64) MIN (g_variant_get_uint64 (v), (guint64) G_MAXINT64);
  if (g_variant_is_of_type (v, G_VARIANT_TYPE_INT32))
    return g_variant_get_int32 (v);
  if (g_variant_is_of_type (v, G_VARIANT_TYPE_UINT32))
    return g_variant_get_uint32 (v);
  if (g_variant_is_of_type (v, G_VARIANT_TYPE_BOOLEAN))
    return g_variant_get_boolean (v);
  return 0;
}

/* The core says "held (deny window)"; a token needs one word. */
static char *
first_word (const char *s)
{
  return g_strndup (s, strcspn (s, " "));
}

static char *
local_minute (gint64 unix_seconds)
{
  g_autoptr (GDateTime) t = g_date_time_new_from_unix_local (unix_seconds);

  return t != NULL ? g_date_time_format (t, "%Y-%m-%d %H:%M") : g_strdup ("?");
}

char *
sm_connection_status_text (GVariant *connections)
{
  g_autoptr (GString) sending = g_string_new (NULL);
  g_autoptr (GString) held = g_string_new (NULL);
  const char *next_name = NULL;
  gint64 next = 0;
  gsize n = connections != NULL ? g_variant_n_children (connections) : 0;
  g_autoptr (GString) text = g_string_new (NULL);

  /* VPOP3 shows one status for the server: Sending while any connection
   * sends, else Idle with the connection that fires next. */
  for (gsize i = 0; i < n; i++)
    {
      g_autoptr (GVariant) c = g_variant_get_child_value (connections, i);
      const char *name = dict_string (c, "name");
      const char *state = dict_string (c, "state");
      gint64 run = dict_int (c, "next_run");

      if (g_str_has_prefix (state, "sending"))
        g_string_append_printf (sending, "%s%s", sending->len > 0 ? ", " : "", name);
      else if (g_str_has_prefix (state, "held"))
        g_string_append_printf (held, "%s%s", held->len > 0 ? ", " : "", name);
      if (run > 0 && (next == 0 || run < next))
        {
          next = run;
          next_name = name;
        }
    }
  if (sending->len > 0)
    g_string_append_printf (text, "Sending (%s)", sending->str);
  else
    g_string_append (text, "Idle");
  if (held->len > 0)
    g_string_append_printf (text, " - held by a deny window: %s", held->str);
  if (sending->len == 0 && next_name != NULL)
    {
      g_autofree char *when = local_minute (next);
      g_string_append_printf (text, " - next connection %s at %s", next_name, when);
    }
  return g_strdup (text->str);
}

void
sm_snapshot_free (SmSnapshot *snap)
{
  if (snap == NULL)
    return;
  g_free (snap->connection_status);
  g_ptr_array_unref (snap->connections);
  g_free (snap->queue);
  g_free (snap);
}

SmSnapshot *
sm_snapshot_from_status (GVariant *status)
{
  SmSnapshot *snap = g_new0 (SmSnapshot, 1);
  g_autoptr (GVariant) conns = NULL;
  g_autoptr (GVariant) queue = NULL;
  g_autofree char *status_text = NULL;

  snap->connections = g_ptr_array_new_with_free_func (g_free);
  if (status != NULL && g_variant_is_of_type (status, G_VARIANT_TYPE_VARDICT))
    {
      conns = g_variant_lookup_value (status, "connections", G_VARIANT_TYPE ("aa{sv}"));
      queue = g_variant_lookup_value (status, "queue", G_VARIANT_TYPE ("a{su}"));
      snap->sessions = (guint) dict_int (status, "sessions");
      snap->uptime = dict_int (status, "uptime_seconds");
    }
  status_text = sm_connection_status_text (conns);
  snap->connection_status = sm_connection_status_line (status_text);
  for (gsize i = 0; conns != NULL && i < g_variant_n_children (conns); i++)
    {
      g_autoptr (GVariant) c = g_variant_get_child_value (conns, i);
      g_autofree char *state = first_word (dict_string (c, "state"));
      g_autofree char *next = sm_iso_time (dict_int (c, "next_run"));
      GString *line = sm_line_begin ('C');

      sm_line_add (line, "name", dict_string (c, "name"));
      sm_line_add (line, "sender", dict_string (c, "sender"));
      sm_line_add (line, "state", state);
      sm_line_add_int (line, "deliveries", dict_int (c, "deliveries"));
      sm_line_add (line, "send-immediately", dict_int (c, "send_immediately") ? "yes" : "no");
      sm_line_add (line, "next", next);
      g_ptr_array_add (snap->connections, sm_line_end (line));
    }
  snap->n_connections = snap->connections->len;
  if (queue != NULL)
    {
      GString *line = sm_line_begin ('Q');
      guint32 v;

      /* A fixed order, whatever order the core's dictionary has. */
      static const char *const keys[] = { "pending", "deferred", "delivered", "bounced" };
      for (guint i = 0; i < G_N_ELEMENTS (keys); i++)
        {
          v = 0;
          g_variant_lookup (queue, keys[i], "u", &v);
          sm_line_add_int (line, keys[i], v);
          if (i == 0)
            snap->pending = v;
          else if (i == 1)
            snap->deferred = v;
        }
      snap->queue = sm_line_end (line);
    }
  return snap;
}

GPtrArray *
sm_session_lines (GVariant *sessions)
{
  GPtrArray *lines = g_ptr_array_new_with_free_func (g_free);

  if (sessions == NULL || !g_variant_is_of_type (sessions, G_VARIANT_TYPE ("aa{sv}")))
    return lines;
  for (gsize i = 0; i < g_variant_n_children (sessions); i++)
    {
      g_autoptr (GVariant) s = g_variant_get_child_value (sessions, i);
      GString *line = sm_line_begin ('S');

      sm_line_add (line, "event", "present");
      sm_line_add (line, "id", dict_string (s, "id"));
      sm_line_add (line, "service", dict_string (s, "service"));
      sm_line_add (line, "listener", dict_string (s, "listener"));
      sm_line_add (line, "client", dict_string (s, "client"));
      sm_line_add (line, "user", dict_string (s, "user"));
      sm_line_add (line, "state", dict_string (s, "state"));
      sm_line_add (line, "tls", dict_int (s, "tls") ? "yes" : "no");
      sm_line_add_int (line, "seconds", dict_int (s, "age_seconds"));
      g_ptr_array_add (lines, sm_line_end (line));
    }
  return lines;
}

char *
sm_summary_line (gint64 real_usec, const SmSnapshot *snap, guint monitors)
{
  g_autofree char *now = sm_iso_time (real_usec / G_USEC_PER_SEC);
  GString *line = sm_line_begin ('Y');

  sm_line_add (line, "time", now);
  sm_line_add_int (line, "uptime", snap->uptime);
  sm_line_add_int (line, "sessions", snap->sessions);
  sm_line_add_int (line, "monitors", monitors);
  if (snap->queue != NULL)
    {
      sm_line_add_int (line, "pending", snap->pending);
      sm_line_add_int (line, "deferred", snap->deferred);
    }
  sm_line_add_int (line, "connections", snap->n_connections);
  return sm_line_end (line);
}
