/* SPDX-License-Identifier: MIT */
/* Pure helpers of pop3-collector: settings values, POP3 replies, APOP and PLAIN, headers and addresses. */
#include "config.h"
#include "collector-private.h"

#include <stdlib.h>
#include <string.h>

G_DEFINE_QUARK (pop3-collector-error-quark, collector_error)

/* "forever", "no", or "N days" (also "N day", "Nd"), N from 1 to 36500. */
gboolean
collector_parse_leave (const char *text, gint64 *days, GError **error)
{
  g_autofree char *t = g_ascii_strdown (text, -1);
  char *end = NULL;
  gint64 n;

  g_strstrip (t);
  if (strcmp (t, "forever") == 0)
    {
      *days = COLLECTOR_LEAVE_FOREVER;
      return TRUE;
    }
  if (strcmp (t, "no") == 0)
    {
      *days = COLLECTOR_LEAVE_NO;
      return TRUE;
    }
  n = g_ascii_strtoll (t, &end, 10);
  if (end != t && g_ascii_isdigit (*t))
    {
      while (*end == ' ' || *end == '\t')
        end++;
      if ((strcmp (end, "days") == 0 || strcmp (end, "day") == 0 || strcmp (end, "d") == 0) && n >= 1 && n <= 36500)
        {
          *days = n;
          return TRUE;
        }
    }
  g_set_error (error, COLLECTOR_ERROR, 0,
               "leave-on-server: '%s' is not \"forever\", \"no\" or \"N days\" (1 to 36500)", text);
  return FALSE;
}

/* The core's ENDPOINTS setting gives "host:port" or "[v6]:port". */
gboolean
collector_split_endpoint (const char *endpoint, char **host, guint16 *port)
{
  const char *colon = strrchr (endpoint, ':');
  guint64 p;

  if (colon == NULL || colon == endpoint || !g_ascii_string_to_unsigned (colon + 1, 10, 1, 65535, &p, NULL))
    return FALSE;
  if (endpoint[0] == '[' && colon[-1] == ']')
    *host = g_strndup (endpoint + 1, (gsize) (colon - endpoint - 2));
  else
    *host = g_strndup (endpoint, (gsize) (colon - endpoint));
  *port = (guint16) p;
  return **host != '\0';
}

gboolean
collector_parse_status (const char *line, gboolean *ok, const char **text)
{
  const char *rest;

  if (g_str_has_prefix (line, "+OK"))
    {
      *ok = TRUE;
      rest = line + 3;
    }
  else if (g_str_has_prefix (line, "-ERR"))
    {
      *ok = FALSE;
      rest = line + 4;
    }
  else
    return FALSE;
  if (*rest != '\0' && *rest != ' ')
    return FALSE;
  while (*rest == ' ')
    rest++;
  if (text != NULL)
    *text = rest;
  return TRUE;
}

char *
collector_apop_timestamp (const char *greeting)
{
  const char *open = strchr (greeting, '<');
  const char *close = open != NULL ? strchr (open, '>') : NULL;

  /* RFC 1939 §7: a msg-id, "<process-ID.clock@hostname>". */
  if (close == NULL || memchr (open, '@', (gsize) (close - open)) == NULL)
    return NULL;
  return g_strndup (open, (gsize) (close - open + 1));
}

char *
collector_apop_digest (const char *timestamp, const char *password)
{
  g_autofree char *both = g_strconcat (timestamp, password, NULL);
  char *digest = g_compute_checksum_for_string (G_CHECKSUM_MD5, both, -1);

  memset (both, 0, strlen (both));
  return digest;
}

char *
collector_sasl_plain (const char *user, const char *password)
{
  gsize ulen = strlen (user), plen = strlen (password);
  gsize len = 1 + ulen + 1 + plen;
  guint8 *raw = g_malloc (len);
  char *b64;

  /* authzid empty, authcid, password (RFC 4616 §2). */
  raw[0] = '\0';
  memcpy (raw + 1, user, ulen);
  raw[1 + ulen] = '\0';
  memcpy (raw + 2 + ulen, password, plen);
  b64 = g_base64_encode (raw, len);
  memset (raw, 0, len);
  g_free (raw);
  return b64;
}

/* RFC 1939 §7: a unique-id is 1 to 70 characters 0x21 to 0x7E. */
gboolean
collector_parse_uidl_line (const char *line, guint *number, char **uidl)
{
  char *end = NULL;
  guint64 n = g_ascii_strtoull (line, &end, 10);
  const char *u;
  gsize len;

  if (end == line || n == 0 || n > G_MAXUINT || *end != ' ')
    return FALSE;
  u = end;
  while (*u == ' ')
    u++;
  len = strcspn (u, " ");
  if (len == 0 || len > 70 || u[len] != '\0')
    return FALSE;
  for (gsize i = 0; i < len; i++)
    if ((guchar) u[i] < 0x21 || (guchar) u[i] > 0x7e)
      return FALSE;
  *number = (guint) n;
  *uidl = g_strndup (u, len);
  return TRUE;
}

gboolean
collector_parse_list_line (const char *line, guint *number, gint64 *size)
{
  char *end = NULL;
  guint64 n = g_ascii_strtoull (line, &end, 10);
  guint64 s;
  const char *p;

  if (end == line || n == 0 || n > G_MAXUINT || *end != ' ')
    return FALSE;
  p = end;
  while (*p == ' ')
    p++;
  s = g_ascii_strtoull (p, &end, 10);
  if (end == p || s > (guint64) G_MAXINT64)
    return FALSE;
  /* Some servers add more after the size (RFC 1939 §5 allows it). */
  *number = (guint) n;
  *size = (gint64) s;
  return TRUE;
}

/* Splits a header section into fields, unfolding continuation lines
 * (RFC 5322 §2.2.3). Lines without a colon are not fields and are skipped. */
GPtrArray *
collector_parse_headers (const guint8 *data, gsize len)
{
  GPtrArray *out = g_ptr_array_new ();
  GString *cur = NULL;
  gsize pos = 0;

  while (pos < len)
    {
      const guint8 *lf = memchr (data + pos, '\n', len - pos);
      gsize end = lf != NULL ? (gsize) (lf - data) : len;
      gsize line_end = end;

      if (line_end > pos && data[line_end - 1] == '\r')
        line_end--;
      if (line_end == pos)
        break;  /* the empty line ends the header section */
      if ((data[pos] == ' ' || data[pos] == '\t') && cur != NULL)
        g_string_append_len (cur, (const char *) data + pos, (gssize) (line_end - pos));
      else
        {
          if (cur != NULL)
            g_ptr_array_add (out, g_string_free (cur, FALSE));
          cur = g_string_new_len ((const char *) data + pos, (gssize) (line_end - pos));
        }
      pos = end + 1;
    }
  if (cur != NULL)
    g_ptr_array_add (out, g_string_free (cur, FALSE));

  /* Raw lines -> (name, value). */
  {
    GPtrArray *fields = g_ptr_array_new ();
    for (guint i = 0; i < out->len; i++)
      {
        char *raw = g_ptr_array_index (out, i);
        char *colon = strchr (raw, ':');
        if (colon != NULL && colon != raw)
          {
            CollectorHeader *h = g_new0 (CollectorHeader, 1);
            h->name = g_strstrip (g_strndup (raw, (gsize) (colon - raw)));
            h->value = g_strstrip (g_strdup (colon + 1));
            g_ptr_array_add (fields, h);
          }
        g_free (raw);
      }
    g_ptr_array_unref (out);
    return fields;
  }
}

static gboolean
is_atext_local (char c)
{
  return g_ascii_isalnum (c) || (c != '\0' && strchr ("!#$%&'*+-/=?^_`{|}~.", c) != NULL);
}

/* Adds ADDR (local@domain) to @out unless it is malformed or there already. */
static void
add_address (GPtrArray *out, const char *addr, gsize len)
{
  g_autofree char *a = g_strndup (addr, len);
  char *at;

  g_strstrip (a);
  at = strrchr (a, '@');
  if (at == NULL || at == a || at[1] == '\0' || strchr (at + 1, ' ') != NULL)
    return;
  for (char *p = a; p < at; p++)
    if (!is_atext_local (*p) && *p != '"')
      return;
  for (char *p = at + 1; *p != '\0'; p++)
    {
      if (!g_ascii_isalnum (*p) && *p != '-' && *p != '.' && *p != '[' && *p != ']' && *p != ':')
        return;
      *p = g_ascii_tolower (*p);
    }
  for (guint i = 0; i < out->len; i++)
    if (g_ascii_strcasecmp (g_ptr_array_index (out, i), a) == 0)
      return;
  g_ptr_array_add (out, g_steal_pointer (&a));
}

/*
 * An address list (RFC 5322 §3.4) without a full parser: comments and
 * display-name quotes are dropped, then each comma-separated item gives the
 * address in angle brackets if it has one, else the item itself. Group
 * syntax ("team: a@x, b@y;") is handled by dropping "name:" and ";".
 */
void
collector_extract_addresses (const char *value, GPtrArray *out)
{
  g_autoptr (GString) clean = g_string_new (NULL);
  int depth = 0;
  gboolean quoted = FALSE;
  g_auto (GStrv) items = NULL;

  for (const char *p = value; *p != '\0'; p++)
    {
      if (quoted)
        {
          if (*p == '\\' && p[1] != '\0')
            p++;
          else if (*p == '"')
            quoted = FALSE;
          continue;
        }
      if (depth > 0)
        {
          if (*p == '\\' && p[1] != '\0')
            p++;
          else if (*p == '(')
            depth++;
          else if (*p == ')')
            depth--;
          continue;
        }
      if (*p == '(')
        depth = 1;
      else if (*p == '"')
        quoted = TRUE;
      else if (*p == ';')
        g_string_append_c (clean, ',');
      else
        g_string_append_c (clean, *p);
    }
  items = g_strsplit (clean->str, ",", -1);
  for (guint i = 0; items[i] != NULL && out->len < COLLECTOR_MAX_HEADER_RCPTS; i++)
    {
      char *item = items[i];
      char *lt = strchr (item, '<');
      char *colon = strchr (item, ':');

      if (lt != NULL)
        {
          char *gt = strchr (lt, '>');
          if (gt != NULL)
            add_address (out, lt + 1, (gsize) (gt - lt - 1));
          continue;
        }
      if (colon != NULL && strchr (colon, '@') != NULL && memchr (item, '@', (gsize) (colon - item)) == NULL)
        item = colon + 1;  /* "group: first@member" */
      add_address (out, item, strlen (item));
    }
}

char *
collector_return_path (const char *value)
{
  const char *lt = strchr (value, '<');
  const char *gt = lt != NULL ? strchr (lt, '>') : NULL;
  g_autoptr (GPtrArray) one = NULL;

  if (gt == NULL)
    return NULL;
  if (gt == lt + 1)
    return g_strdup ("");
  one = g_ptr_array_new_with_free_func (g_free);
  add_address (one, lt + 1, (gsize) (gt - lt - 1));
  return one->len == 1 ? g_strdup (g_ptr_array_index (one, 0)) : NULL;
}

char *
collector_rfc5322_date (gint64 unix_time)
{
  static const char *const days[] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
  static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
  g_autoptr (GDateTime) utc = g_date_time_new_from_unix_utc (unix_time);
  g_autoptr (GDateTime) dt = utc != NULL ? g_date_time_to_local (utc) : NULL;
  gint64 off;

  if (dt == NULL)
    return g_strdup ("Thu, 01 Jan 1970 00:00:00 +0000");
  off = g_date_time_get_utc_offset (dt) / G_TIME_SPAN_MINUTE;
  return g_strdup_printf ("%s, %02d %s %04d %02d:%02d:%02d %c%02d%02d", days[g_date_time_get_day_of_week (dt) - 1],
                          g_date_time_get_day_of_month (dt), months[g_date_time_get_month (dt) - 1],
                          g_date_time_get_year (dt), g_date_time_get_hour (dt), g_date_time_get_minute (dt),
                          g_date_time_get_second (dt), off < 0 ? '-' : '+', (int) (ABS (off) / 60),
                          (int) (ABS (off) % 60));
}
