/* SPDX-License-Identifier: MIT */
/* Parses typed settings (bool, int, duration, size, endpoints, addresses...) into module structs. */
#include "settings.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const PbSetting *
pb_settings_table_get (const PbSettingsTable *table, guint i)
{
  return (const PbSetting *) ((const char *) table->entries + (gsize) i * table->entry_size);
}

#define FIELD(type, p) (*(type *) (p))

static gboolean
parse_bool (const char *text, gboolean *out)
{
  static const char *const yes[] = { "true", "yes", "on", "1", NULL };
  static const char *const no[] = { "false", "no", "off", "0", NULL };

  for (guint i = 0; yes[i] != NULL; i++)
    {
      if (g_ascii_strcasecmp (text, yes[i]) == 0)
        {
          *out = TRUE;
          return TRUE;
        }
      if (g_ascii_strcasecmp (text, no[i]) == 0)
        {
          *out = FALSE;
          return TRUE;
        }
    }
  return FALSE;
}

/* A decimal number followed by an optional unit; NUM and UNIT point into TEXT. */
static gboolean
split_number_unit (const char *text, guint64 *number, const char **unit)
{
  const char *p = text;
  char *endp = NULL;

  if (!g_ascii_isdigit (*p))
    return FALSE;
  errno = 0;
  *number = g_ascii_strtoull (p, &endp, 10);
  if (errno != 0)
    return FALSE;
  while (*endp == ' ')
    endp++;
  *unit = endp;
  return TRUE;
}

char *
pb_format_duration (gint64 ms)
{
  static const struct { gint64 ms; const char *unit; } units[] = {
    { 86400000, "d" }, { 3600000, "h" }, { 60000, "m" }, { 1000, "s" },
  };

  if (ms == 0)
    return g_strdup ("0s");
  for (guint i = 0; i < G_N_ELEMENTS (units); i++)
    if (ms % units[i].ms == 0)
      return g_strdup_printf ("%" G_GINT64_FORMAT "%s", ms / units[i].ms, units[i].unit);
  return g_strdup_printf ("%" G_GINT64_FORMAT "ms", ms);
}

static char *
format_size (gint64 bytes)
{
  static const struct { gint64 factor; const char *unit; } units[] = {
    { 1024LL * 1024 * 1024, "G" }, { 1024 * 1024, "M" }, { 1024, "K" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (units); i++)
    if (bytes != 0 && bytes % units[i].factor == 0)
      return g_strdup_printf ("%" G_GINT64_FORMAT "%s", bytes / units[i].factor, units[i].unit);
  return g_strdup_printf ("%" G_GINT64_FORMAT, bytes);
}

static gboolean
parse_duration (const char *text, gint64 *ms, char **message)
{
  static const struct { const char *unit; gint64 ms; } units[] = {
    { "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "sec", 1000 }, { "m", 60000 }, { "min", 60000 },
    { "h", 3600000 }, { "d", 86400000 },
  };
  guint64 n;
  const char *unit;

  if (!split_number_unit (text, &n, &unit))
    goto bad;
  for (guint i = 0; i < G_N_ELEMENTS (units); i++)
    if (g_ascii_strcasecmp (unit, units[i].unit) == 0)
      {
        if (n > (guint64) G_MAXINT64 / (guint64) units[i].ms)
          goto bad;
        *ms = (gint64) n * units[i].ms;
        return TRUE;
      }
bad:
  *message = g_strdup_printf ("'%s' is not a duration (a number with ms, s, m, h or d)", text);
  return FALSE;
}

static gboolean
parse_size (const char *text, gint64 *bytes, char **message)
{
  static const struct { const char *unit; gint64 factor; } units[] = {
    { "", 1 }, { "B", 1 },
    { "K", 1024 }, { "KB", 1024 }, { "KiB", 1024 },
    { "M", 1024 * 1024 }, { "MB", 1024 * 1024 }, { "MiB", 1024 * 1024 },
    { "G", 1024LL * 1024 * 1024 }, { "GB", 1024LL * 1024 * 1024 }, { "GiB", 1024LL * 1024 * 1024 },
  };
  guint64 n;
  const char *unit;

  if (!split_number_unit (text, &n, &unit))
    goto bad;
  for (guint i = 0; i < G_N_ELEMENTS (units); i++)
    if (g_ascii_strcasecmp (unit, units[i].unit) == 0)
      {
        if (n > (guint64) G_MAXINT64 / (guint64) units[i].factor)
          goto bad;
        *bytes = (gint64) n * units[i].factor;
        return TRUE;
      }
bad:
  *message = g_strdup_printf ("'%s' is not a size (a number of bytes, or with K, M or G)", text);
  return FALSE;
}

static char **
split_list (const char *text)
{
  g_auto (GStrv) parts = g_strsplit (text, ",", -1);
  GPtrArray *out = g_ptr_array_new ();

  for (guint i = 0; parts[i] != NULL; i++)
    {
      char *item = g_strstrip (parts[i]);
      if (*item != '\0')
        g_ptr_array_add (out, g_strdup (item));
    }
  g_ptr_array_add (out, NULL);
  return (char **) g_ptr_array_free (out, FALSE);
}

static gboolean
is_hostname (const char *s)
{
  if (*s == '\0' || strlen (s) > 253)
    return FALSE;
  for (const char *p = s; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p) && *p != '-' && *p != '.')
      return FALSE;
  return TRUE;
}

/* "HOST:PORT", "[V6]:PORT" or "*:PORT" into canonical text. */
static gboolean
parse_endpoint (const char *item, char **canonical, char **message)
{
  g_autofree char *host = NULL;
  const char *port_text;
  gint64 port;
  char *endp = NULL;

  if (item[0] == '[')
    {
      const char *close = strchr (item, ']');
      g_autoptr (GInetAddress) a = NULL;

      if (close == NULL || close[1] != ':')
        goto bad;
      host = g_strndup (item + 1, close - item - 1);
      a = g_inet_address_new_from_string (host);
      if (a == NULL || g_inet_address_get_family (a) != G_SOCKET_FAMILY_IPV6)
        {
          *message = g_strdup_printf ("'%s': '%s' is not an IPv6 address", item, host);
          return FALSE;
        }
      port_text = close + 2;
    }
  else
    {
      const char *colon = strrchr (item, ':');
      if (colon == NULL || strchr (item, ':') != colon)
        goto bad;
      host = g_strndup (item, colon - item);
      if (strcmp (host, "*") != 0 && !is_hostname (host))
        {
          *message = g_strdup_printf ("'%s': '%s' is not a host name or address", item, host);
          return FALSE;
        }
      port_text = colon + 1;
    }
  port = g_ascii_strtoll (port_text, &endp, 10);
  if (*port_text == '\0' || *endp != '\0' || port < 1 || port > 65535)
    {
      *message = g_strdup_printf ("'%s': the port must be a number from 1 to 65535", item);
      return FALSE;
    }
  if (strchr (host, ':') != NULL)
    *canonical = g_strdup_printf ("[%s]:%d", host, (int) port);
  else
    *canonical = g_strdup_printf ("%s:%d", host, (int) port);
  return TRUE;
bad:
  *message = g_strdup_printf ("'%s' is not HOST:PORT (IPv6 as [ADDRESS]:PORT)", item);
  return FALSE;
}

/* An address, a CIDR prefix or a wildcard like 192.168.1.* into "ADDR/LEN". */
static gboolean
parse_address (const char *item, char **canonical, char **message)
{
  g_autoptr (GInetAddressMask) mask = NULL;
  g_autofree char *text = NULL;

  if (strchr (item, '*') != NULL)
    {
      /* IPv4 wildcards: leading octets, then '*' for the rest ("10.*", "192.168.1.*"). */
      g_auto (GStrv) octets = g_strsplit (item, ".", -1);
      guint n = g_strv_length (octets);
      GString *addr = g_string_new (NULL);
      guint fixed = 0;

      for (guint i = 0; i < n; i++)
        {
          if (strcmp (octets[i], "*") == 0 && i == n - 1)
            break;
          if (!g_ascii_isdigit (octets[i][0]) || atoi (octets[i]) > 255 || strlen (octets[i]) > 3)
            {
              g_string_free (addr, TRUE);
              goto bad;
            }
          g_string_append_printf (addr, "%s%d", fixed > 0 ? "." : "", atoi (octets[i]));
          fixed++;
        }
      if (fixed >= 4 || strcmp (octets[n - 1], "*") != 0)
        {
          g_string_free (addr, TRUE);
          goto bad;
        }
      for (guint i = fixed; i < 4; i++)
        g_string_append (addr, i > 0 ? ".0" : "0");
      text = g_strdup_printf ("%s/%u", addr->str, fixed * 8);
      g_string_free (addr, TRUE);
    }
  else
    text = g_strdup (item);

  mask = g_inet_address_mask_new_from_string (text, NULL);
  if (mask == NULL)
    goto bad;
  {
    g_autofree char *m = g_inet_address_mask_to_string (mask);
    if (strchr (m, '/') == NULL)
      *canonical = g_strdup_printf ("%s/%u", m, g_inet_address_mask_get_length (mask));
    else
      *canonical = g_steal_pointer (&m);
  }
  return TRUE;
bad:
  *message = g_strdup_printf ("'%s' is not an IP address, prefix (10.0.0.0/8) or wildcard (192.168.1.*)", item);
  return FALSE;
}

static gboolean
parse_list_with (const char *text, gboolean (*parse_item) (const char *, char **, char **),
                 char ***out, char **message)
{
  g_auto (GStrv) items = split_list (text);
  GPtrArray *res = g_ptr_array_new_with_free_func (g_free);

  for (guint i = 0; items[i] != NULL; i++)
    {
      char *canon = NULL;
      if (!parse_item (items[i], &canon, message))
        {
          g_ptr_array_unref (res);
          return FALSE;
        }
      g_ptr_array_add (res, canon);
    }
  g_ptr_array_set_free_func (res, NULL);
  g_ptr_array_add (res, NULL);
  *out = (char **) g_ptr_array_free (res, FALSE);
  return TRUE;
}

static gboolean
check_range (const PbSetting *s, gint64 v, const char *text, char **message)
{
  if (s->min == 0 && s->max == 0)
    return TRUE;
  if (v >= s->min && v <= s->max)
    return TRUE;
  if (s->type == PB_SETTING_TYPE_DURATION)
    {
      g_autofree char *lo = pb_format_duration (s->min);
      g_autofree char *hi = pb_format_duration (s->max);
      *message = g_strdup_printf ("'%s' is out of range (from %s to %s)", text, lo, hi);
    }
  else if (s->type == PB_SETTING_TYPE_SIZE)
    {
      g_autofree char *lo = format_size (s->min);
      g_autofree char *hi = format_size (s->max);
      *message = g_strdup_printf ("'%s' is out of range (from %s to %s)", text, lo, hi);
    }
  else
    *message = g_strdup_printf ("'%s' is out of range (from %" G_GINT64_FORMAT " to %" G_GINT64_FORMAT ")",
                                text, s->min, s->max);
  return FALSE;
}

void
pb_setting_clear (const PbSetting *s, void *field)
{
  switch (s->type)
    {
    case PB_SETTING_TYPE_STRING:
    case PB_SETTING_TYPE_PATH:
      g_clear_pointer ((char **) field, g_free);
      break;
    case PB_SETTING_TYPE_STRING_LIST:
    case PB_SETTING_TYPE_ENDPOINTS:
    case PB_SETTING_TYPE_ADDRESS_LIST:
      g_clear_pointer ((char ***) field, g_strfreev);
      break;
    default:
      break;
    }
}

gboolean
pb_setting_parse (const PbSetting *s, const char *text, const char *conf_dir, void *field, char **message)
{
  switch (s->type)
    {
    case PB_SETTING_TYPE_BOOL:
      {
        gboolean b;
        if (!parse_bool (text, &b))
          {
            *message = g_strdup_printf ("'%s' is not a boolean (true or false)", text);
            return FALSE;
          }
        FIELD (gboolean, field) = b;
        return TRUE;
      }
    case PB_SETTING_TYPE_INT:
      {
        gint64 v;
        char *endp = NULL;
        errno = 0;
        v = g_ascii_strtoll (text, &endp, 10);
        if (*text == '\0' || *endp != '\0' || errno != 0)
          {
            *message = g_strdup_printf ("'%s' is not an integer", text);
            return FALSE;
          }
        if (!check_range (s, v, text, message))
          return FALSE;
        FIELD (gint64, field) = v;
        return TRUE;
      }
    case PB_SETTING_TYPE_DURATION:
    case PB_SETTING_TYPE_SIZE:
      {
        gint64 v;
        gboolean ok = s->type == PB_SETTING_TYPE_DURATION ? parse_duration (text, &v, message)
                                                          : parse_size (text, &v, message);
        if (!ok || !check_range (s, v, text, message))
          return FALSE;
        FIELD (gint64, field) = v;
        return TRUE;
      }
    case PB_SETTING_TYPE_STRING:
      pb_setting_clear (s, field);
      FIELD (char *, field) = g_strdup (text);
      return TRUE;
    case PB_SETTING_TYPE_PATH:
      pb_setting_clear (s, field);
      if (*text == '\0' || g_path_is_absolute (text) || conf_dir == NULL)
        FIELD (char *, field) = g_strdup (text);
      else
        FIELD (char *, field) = g_canonicalize_filename (text, conf_dir);
      return TRUE;
    case PB_SETTING_TYPE_STRING_LIST:
      pb_setting_clear (s, field);
      FIELD (char **, field) = split_list (text);
      return TRUE;
    case PB_SETTING_TYPE_ENUM:
      for (guint i = 0; s->choices != NULL && s->choices[i] != NULL; i++)
        if (g_ascii_strcasecmp (text, s->choices[i]) == 0)
          {
            FIELD (gint, field) = (gint) i;
            return TRUE;
          }
      {
        g_autofree char *words = s->choices != NULL ? g_strjoinv (", ", (char **) s->choices) : g_strdup ("");
        *message = g_strdup_printf ("'%s' is not one of: %s", text, words);
      }
      return FALSE;
    case PB_SETTING_TYPE_ENDPOINTS:
    case PB_SETTING_TYPE_ADDRESS_LIST:
      {
        char **list = NULL;
        if (!parse_list_with (text, s->type == PB_SETTING_TYPE_ENDPOINTS ? parse_endpoint : parse_address,
                              &list, message))
          return FALSE;
        pb_setting_clear (s, field);
        FIELD (char **, field) = list;
        return TRUE;
      }
    }
  *message = g_strdup_printf ("unsupported setting type %d", (int) s->type);
  return FALSE;
}

char *
pb_setting_format (const PbSetting *s, const void *field)
{
  switch (s->type)
    {
    case PB_SETTING_TYPE_BOOL:
      return g_strdup (FIELD (const gboolean, field) ? "true" : "false");
    case PB_SETTING_TYPE_INT:
      return g_strdup_printf ("%" G_GINT64_FORMAT, FIELD (const gint64, field));
    case PB_SETTING_TYPE_DURATION:
      return pb_format_duration (FIELD (const gint64, field));
    case PB_SETTING_TYPE_SIZE:
      return format_size (FIELD (const gint64, field));
    case PB_SETTING_TYPE_STRING:
    case PB_SETTING_TYPE_PATH:
      return g_strdup (FIELD (char *const, field) ? FIELD (char *const, field) : "");
    case PB_SETTING_TYPE_ENUM:
      return g_strdup (s->choices[FIELD (const gint, field)]);
    case PB_SETTING_TYPE_STRING_LIST:
    case PB_SETTING_TYPE_ENDPOINTS:
    case PB_SETTING_TYPE_ADDRESS_LIST:
      return g_strjoinv (", ", FIELD (char **const, field));
    }
  return g_strdup ("");
}

/* Levenshtein distance, to suggest the key a misspelling meant. */
static guint
edit_distance (const char *a, const char *b)
{
  gsize la = strlen (a), lb = strlen (b);
  g_autofree guint *row = g_new (guint, lb + 1);

  for (gsize j = 0; j <= lb; j++)
    row[j] = (guint) j;
  for (gsize i = 1; i <= la; i++)
    {
      guint diag = row[0];
      row[0] = (guint) i;
      for (gsize j = 1; j <= lb; j++)
        {
          guint up = row[j];
          guint cost = a[i - 1] == b[j - 1] ? 0 : 1;
          row[j] = MIN (MIN (row[j] + 1, row[j - 1] + 1), diag + cost);
          diag = up;
        }
    }
  return row[lb];
}

static const char *
closest_key (const PbSettingsTable *table, const char *key)
{
  const char *best = NULL;
  guint best_d = 3;

  for (guint i = 0; table->entries != NULL && pb_settings_table_get (table, i)->key != NULL; i++)
    {
      const char *k = pb_settings_table_get (table, i)->key;
      guint d = edit_distance (key, k);
      if (d < best_d)
        {
          best = k;
          best_d = d;
        }
    }
  return best;
}

static gsize
setting_field_size (const PbSetting *s)
{
  switch (s->type)
    {
    case PB_SETTING_TYPE_BOOL: return sizeof (gboolean);
    case PB_SETTING_TYPE_ENUM: return sizeof (gint);
    case PB_SETTING_TYPE_INT:
    case PB_SETTING_TYPE_DURATION:
    case PB_SETTING_TYPE_SIZE: return sizeof (gint64);
    default: return sizeof (gpointer);
    }
}

void *
pb_settings_parse_group (const PbSettingsTable *table, PbConfGroup *group,
                         const char *conf_dir, const char *where, PbDiag *diag)
{
  guint before = diag->lines->len;
  char *config = g_malloc0 (MAX (table->config_size, 1));

  for (guint i = 0; table->entries != NULL && pb_settings_table_get (table, i)->key != NULL; i++)
    {
      const PbSetting *s = pb_settings_table_get (table, i);
      PbConfEntry *entry = group != NULL ? pb_conf_group_find (group, s->key) : NULL;
      g_autofree char *message = NULL;

      if (s->offset + setting_field_size (s) > table->config_size)
        {
          pb_diag_add (diag, NULL, 0, "%s: setting '%s' lies outside the config struct (module bug)", where, s->key);
          continue;
        }
      if (entry != NULL)
        {
          entry->used = TRUE;
          if (!pb_setting_parse (s, entry->value, conf_dir, config + s->offset, &message))
            pb_diag_add (diag, entry->file, entry->line, "%s: %s", entry->key, message);
        }
      else if (s->default_value != NULL)
        {
          if (!pb_setting_parse (s, s->default_value, conf_dir, config + s->offset, &message))
            pb_diag_add (diag, NULL, 0, "%s: the default of '%s' is invalid (module bug): %s", where, s->key, message);
        }
      else
        pb_diag_add (diag, group != NULL ? group->file : NULL, group != NULL ? group->line : 0,
                     "%s: required key '%s' is missing", where, s->key);
    }

  if (group != NULL)
    for (guint i = 0; i < group->entries->len; i++)
      {
        PbConfEntry *e = g_ptr_array_index (group->entries, i);
        const char *hint;

        if (e->used)
          continue;
        hint = closest_key (table, e->key);
        if (hint != NULL)
          pb_diag_add (diag, e->file, e->line, "unknown key '%s' in %s (did you mean '%s'?)", e->key, where, hint);
        else
          pb_diag_add (diag, e->file, e->line, "unknown key '%s' in %s", e->key, where);
      }

  if (diag->lines->len == before && table->check != NULL)
    {
      g_autoptr (GError) error = NULL;
      if (!table->check (config, &error))
        pb_diag_add (diag, group != NULL ? group->file : NULL, group != NULL ? group->line : 0,
                     "%s: %s", where, error != NULL ? error->message : "rejected by the module's check");
    }

  if (diag->lines->len != before)
    {
      pb_settings_free (table, config);
      return NULL;
    }
  return config;
}

void
pb_settings_free (const PbSettingsTable *table, void *config)
{
  if (config == NULL)
    return;
  for (guint i = 0; table->entries != NULL && pb_settings_table_get (table, i)->key != NULL; i++)
    {
      const PbSetting *s = pb_settings_table_get (table, i);
      if (s->offset + setting_field_size (s) <= table->config_size)
        pb_setting_clear (s, (char *) config + s->offset);
    }
  g_free (config);
}
