/* SPDX-License-Identifier: MIT */
/* Writes the settings reference from the settings tables themselves, so the manual cannot drift from the code. */
#include "config.h"
#include "core-private.h"
#include "settings-doc.h"

#include <string.h>
#include <json-glib/json-glib.h>

/* One configuration group as the reference presents it. */
typedef struct {
  char *title;          /* "[core]", "[module ids]", "[collector NAME]" */
  char *module;         /* NULL for the core's own groups */
  const char *kind;     /* "core", "module", "connection", or a module's section kind */
  const char *summary;
  const char *version;
  PbSettingsTable table;
} DocGroup;

static void
doc_group_free (gpointer p)
{
  DocGroup *g = p;
  g_free (g->title);
  g_free (g->module);
  g_free (g);
}

static DocGroup *
doc_group_new (const char *title, const char *module, const char *kind, const char *summary,
               const PbSetting *entries, gsize entry_size)
{
  DocGroup *g = g_new0 (DocGroup, 1);
  g->title = g_strdup (title);
  g->module = g_strdup (module);
  g->kind = kind;
  g->summary = summary;
  g->table.entries = entries;
  g->table.entry_size = entry_size;
  return g;
}

gboolean
pb_settings_doc_parse_format (const char *word, PbSettingsDocFormat *format)
{
  if (word == NULL || strcmp (word, "text") == 0)
    *format = PB_SETTINGS_DOC_TEXT;
  else if (strcmp (word, "man") == 0)
    *format = PB_SETTINGS_DOC_MAN;
  else if (strcmp (word, "json") == 0)
    *format = PB_SETTINGS_DOC_JSON;
  else
    return FALSE;
  return TRUE;
}

/* The words of pillarbox.conf(5)'s VALUE TYPES section. */
static const char *
type_word (PbSettingType type)
{
  switch (type)
    {
    case PB_SETTING_TYPE_BOOL: return "boolean";
    case PB_SETTING_TYPE_INT: return "integer";
    case PB_SETTING_TYPE_STRING: return "text";
    case PB_SETTING_TYPE_STRING_LIST: return "list";
    case PB_SETTING_TYPE_ENUM: return "choice";
    case PB_SETTING_TYPE_DURATION: return "duration";
    case PB_SETTING_TYPE_SIZE: return "size";
    case PB_SETTING_TYPE_ENDPOINTS: return "endpoints";
    case PB_SETTING_TYPE_ADDRESS_LIST: return "addresses";
    case PB_SETTING_TYPE_PATH: return "path";
    }
  return "unknown";
}

static gboolean
has_range (const PbSetting *s)
{
  return (s->type == PB_SETTING_TYPE_INT || s->type == PB_SETTING_TYPE_DURATION || s->type == PB_SETTING_TYPE_SIZE)
         && (s->min != 0 || s->max != 0);
}

/* The bounds in the units an administrator writes ("100ms", "1G"), by the
 * same formatter the parser's range errors and `status` use. */
static void
format_range (const PbSetting *s, char **lo, char **hi)
{
  *lo = pb_setting_format (s, &s->min);
  *hi = pb_setting_format (s, &s->max);
}

/* ---- modules ---- */

static void
add_names_in (GPtrArray *names, const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *entry;

  if (d == NULL)
    return;
  while ((entry = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *name = NULL;

      if (!g_str_has_suffix (entry, ".so"))
        continue;
      name = g_strndup (entry, strlen (entry) - 3);
      /* Anything not named like a module is not one the loader could load by name. */
      if (!pb_module_name_is_valid (name))
        continue;
      if (!g_ptr_array_find_with_equal_func (names, name, g_str_equal, NULL))
        g_ptr_array_add (names, g_steal_pointer (&name));
    }
}

static gint
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static gboolean
collect_groups (const char *module_dir, const char *const *modules, GPtrArray *groups, GError **error)
{
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GString) failures = g_string_new (NULL);

  g_ptr_array_add (groups, doc_group_new ("[core]", NULL, "core",
                                          "The core's own settings. Every key has a default, so the group may be "
                                          "left out.",
                                          pb_core_settings, sizeof (PbSetting)));
  g_ptr_array_add (groups, doc_group_new ("[connection NAME]", NULL, pb_connection_section.kind,
                                          pb_connection_section.summary, pb_connection_section.settings,
                                          sizeof (PbSetting)));

  if (modules != NULL && modules[0] != NULL)
    for (guint i = 0; modules[i] != NULL; i++)
      {
        if (!g_ptr_array_find_with_equal_func (names, modules[i], g_str_equal, NULL))
          g_ptr_array_add (names, g_strdup (modules[i]));
      }
  else
    {
      g_autofree char *libs = g_build_filename (module_dir, ".libs", NULL);
      if (!g_file_test (module_dir, G_FILE_TEST_IS_DIR))
        {
          g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                       "module directory %s does not exist (set core.module-dir)", module_dir);
          return FALSE;
        }
      add_names_in (names, module_dir);
      add_names_in (names, libs);
    }
  g_ptr_array_sort (names, compare_strings);

  for (guint i = 0; i < names->len; i++)
    {
      const char *name = g_ptr_array_index (names, i);
      g_autoptr (GError) local = NULL;
      PbModuleFile *mf = pb_module_file_open (module_dir, name, &local);
      const PbModuleInfo *info;
      g_autofree char *title = NULL;
      DocGroup *g;

      if (mf == NULL)
        {
          g_string_append_printf (failures, "%s%s", failures->len > 0 ? "\n" : "", local->message);
          continue;
        }
      info = mf->info;
      title = g_strdup_printf ("[module %s]", name);
      g = doc_group_new (title, name, "module", info->summary, info->settings, info->setting_entry_size);
      g->version = info->version;
      g_ptr_array_add (groups, g);
      for (guint k = 0; info->sections != NULL && info->sections[k] != NULL; k++)
        {
          const PbSectionInfo *si = info->sections[k];
          g_autofree char *stitle = NULL;

          if (si->kind == NULL || si->settings == NULL)
            continue;
          stitle = g_strdup_printf ("[%s NAME]", si->kind);
          g_ptr_array_add (groups, doc_group_new (stitle, name, si->kind, si->summary, si->settings,
                                                  info->setting_entry_size));
        }
    }
  if (failures->len > 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE, "%s", failures->str);
      return FALSE;
    }
  return TRUE;
}

#define FOR_EACH_SETTING(table, i, s) \
  for (guint i = 0; (table)->entries != NULL && ((s) = pb_settings_table_get ((table), i))->key != NULL; i++)

/* ---- text ---- */

static void
text_wrap (GString *out, const char *text, guint indent, guint width)
{
  g_auto (GStrv) words = g_strsplit_set (text != NULL ? text : "", " \n\t", -1);
  guint col = 0;

  for (guint i = 0; words[i] != NULL; i++)
    {
      gsize len = strlen (words[i]);
      if (len == 0)
        continue;
      if (col > 0 && col + 1 + len > width)
        {
          g_string_append_c (out, '\n');
          col = 0;
        }
      if (col == 0)
        {
          g_string_append_printf (out, "%*s", indent, "");
          col = indent;
        }
      else
        {
          g_string_append_c (out, ' ');
          col++;
        }
      g_string_append (out, words[i]);
      col += (guint) len;
    }
  if (col > 0)
    g_string_append_c (out, '\n');
}

static void
write_text (GPtrArray *groups, GString *out)
{
  for (guint gi = 0; gi < groups->len; gi++)
    {
      DocGroup *g = g_ptr_array_index (groups, gi);
      const PbSetting *s;

      if (g->module != NULL && strcmp (g->kind, "module") != 0)
        g_string_append_printf (out, "%s%s  (module %s)\n", gi > 0 ? "\n" : "", g->title, g->module);
      else if (g->version != NULL)
        g_string_append_printf (out, "%s%s  (version %s)\n", gi > 0 ? "\n" : "", g->title, g->version);
      else
        g_string_append_printf (out, "%s%s\n", gi > 0 ? "\n" : "", g->title);
      text_wrap (out, g->summary, 2, 78);
      if (g->table.entries == NULL || pb_settings_table_get (&g->table, 0)->key == NULL)
        g_string_append (out, "  (no keys: an empty group enables the module)\n");
      FOR_EACH_SETTING (&g->table, i, s)
        {
          g_autoptr (GString) head = g_string_new (NULL);

          g_string_append_printf (head, "%s = %s", s->key, type_word (s->type));
          if (s->type == PB_SETTING_TYPE_ENUM && s->choices != NULL)
            {
              g_autofree char *words = g_strjoinv (" | ", (char **) s->choices);
              g_string_append_printf (head, " (%s)", words);
            }
          if (has_range (s))
            {
              g_autofree char *lo = NULL;
              g_autofree char *hi = NULL;
              format_range (s, &lo, &hi);
              g_string_append_printf (head, " from %s to %s", lo, hi);
            }
          if (s->default_value == NULL)
            g_string_append (head, "; required");
          else if (*s->default_value == '\0')
            g_string_append (head, "; default empty");
          else
            g_string_append_printf (head, "; default %s", s->default_value);
          g_string_append_printf (out, "\n  %s\n", head->str);
          text_wrap (out, s->doc, 6, 78);
        }
    }
}

/* ---- man ---- */

/* Text for roff: backslashes kept literal, a line never starting with a
 * control character; in CODE (keys, values) '-' is the ASCII hyphen-minus
 * a reader must type, which roff writes as \-. */
static void
roff_append (GString *out, const char *text, gboolean code)
{
  gboolean line_start = out->len == 0 || out->str[out->len - 1] == '\n';

  for (const char *p = text != NULL ? text : ""; *p != '\0'; p++)
    {
      if (line_start && (*p == '.' || *p == '\''))
        g_string_append (out, "\\&");
      line_start = FALSE;
      if (*p == '\\')
        g_string_append (out, "\\e");
      else if (*p == '-' && code)
        g_string_append (out, "\\-");
      else if (*p == '\n')
        {
          g_string_append_c (out, '\n');
          line_start = TRUE;
        }
      else if (!code && (*p == '.' || *p == '?' || *p == '!') && p[1] == ' ' && g_ascii_isupper (p[2]))
        {
          /* roff knows a sentence ends only at the end of a line. */
          g_string_append_c (out, *p);
          g_string_append_c (out, '\n');
          p++;
          line_start = TRUE;
        }
      else
        g_string_append_c (out, *p);
    }
}

static void
roff_bold (GString *out, const char *text)
{
  g_string_append (out, "\\fB");
  roff_append (out, text, TRUE);
  g_string_append (out, "\\fR");
}

static void
write_man (GPtrArray *groups, GString *out)
{
  for (guint gi = 0; gi < groups->len; gi++)
    {
      DocGroup *g = g_ptr_array_index (groups, gi);
      const PbSetting *s;

      g_string_append (out, ".SS \"");
      roff_append (out, g->title, TRUE);
      g_string_append (out, "\"\n");
      if (g->summary != NULL && *g->summary != '\0')
        {
          roff_append (out, g->summary, FALSE);
          g_string_append_c (out, '\n');
        }
      if (g->module != NULL && strcmp (g->kind, "module") == 0)
        {
          g_string_append (out, ".br\nModule ");
          roff_bold (out, g->module);
          if (g->version != NULL)
            g_string_append_printf (out, ", version %s", g->version);
          g_string_append (out, ".\n");
        }
      else if (g->module != NULL)
        {
          g_string_append (out, ".br\nA section kind of the module ");
          roff_bold (out, g->module);
          g_string_append (out, "; NAME is chosen by the administrator.\n");
        }
      if (g->table.entries == NULL || pb_settings_table_get (&g->table, 0)->key == NULL)
        g_string_append (out, ".PP\nThe module has no keys: an empty group enables it.\n");
      FOR_EACH_SETTING (&g->table, i, s)
        {
          g_string_append (out, ".TP\n.B ");
          roff_append (out, s->key, TRUE);
          g_string_append_printf (out, "\nType: %s", type_word (s->type));
          if (s->type == PB_SETTING_TYPE_ENUM && s->choices != NULL)
            {
              g_string_append (out, ", one of ");
              for (guint c = 0; s->choices[c] != NULL; c++)
                {
                  if (c > 0)
                    g_string_append (out, s->choices[c + 1] == NULL ? " or " : ", ");
                  roff_bold (out, s->choices[c]);
                }
            }
          if (has_range (s))
            {
              g_autofree char *lo = NULL;
              g_autofree char *hi = NULL;
              format_range (s, &lo, &hi);
              g_string_append (out, ", from ");
              roff_bold (out, lo);
              g_string_append (out, " to ");
              roff_bold (out, hi);
            }
          g_string_append (out, ".\n");
          if (s->default_value == NULL)
            g_string_append (out, "Required: there is no default.\n");
          else if (*s->default_value == '\0')
            g_string_append (out, "Default: empty.\n");
          else
            {
              g_string_append (out, "Default: ");
              roff_bold (out, s->default_value);
              g_string_append (out, ".\n");
            }
          g_string_append (out, ".br\n");
          roff_append (out, s->doc, FALSE);
          g_string_append_c (out, '\n');
        }
    }
}

/* ---- json ---- */

static void
json_string_or_null (JsonBuilder *b, const char *member, const char *value)
{
  json_builder_set_member_name (b, member);
  if (value != NULL)
    json_builder_add_string_value (b, value);
  else
    json_builder_add_null_value (b);
}

static void
write_json (GPtrArray *groups, GString *out)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;
  g_autofree char *text = NULL;

  json_builder_begin_array (b);
  for (guint gi = 0; gi < groups->len; gi++)
    {
      DocGroup *g = g_ptr_array_index (groups, gi);
      const PbSetting *s;

      json_builder_begin_object (b);
      json_string_or_null (b, "group", g->title);
      json_string_or_null (b, "module", g->module);
      json_string_or_null (b, "kind", g->kind);
      json_string_or_null (b, "summary", g->summary);
      json_string_or_null (b, "version", g->version);
      json_builder_set_member_name (b, "keys");
      json_builder_begin_array (b);
      FOR_EACH_SETTING (&g->table, i, s)
        {
          json_builder_begin_object (b);
          json_string_or_null (b, "key", s->key);
          json_string_or_null (b, "type", type_word (s->type));
          json_string_or_null (b, "default", s->default_value);
          if (has_range (s))
            {
              g_autofree char *lo = NULL;
              g_autofree char *hi = NULL;
              format_range (s, &lo, &hi);
              json_string_or_null (b, "min", lo);
              json_string_or_null (b, "max", hi);
            }
          if (s->type == PB_SETTING_TYPE_ENUM && s->choices != NULL)
            {
              json_builder_set_member_name (b, "choices");
              json_builder_begin_array (b);
              for (guint c = 0; s->choices[c] != NULL; c++)
                json_builder_add_string_value (b, s->choices[c]);
              json_builder_end_array (b);
            }
          json_string_or_null (b, "doc", s->doc);
          json_builder_end_object (b);
        }
      json_builder_end_array (b);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  json_generator_set_pretty (gen, TRUE);
  text = json_generator_to_data (gen, NULL);
  g_string_append (out, text);
  g_string_append_c (out, '\n');
}

gboolean
pb_settings_doc_write (const char *module_dir, const char *const *modules, PbSettingsDocFormat format,
                       GString *out, GError **error)
{
  g_autoptr (GPtrArray) groups = g_ptr_array_new_with_free_func (doc_group_free);

  if (!collect_groups (module_dir, modules, groups, error))
    return FALSE;
  switch (format)
    {
    case PB_SETTINGS_DOC_TEXT:
      write_text (groups, out);
      break;
    case PB_SETTINGS_DOC_MAN:
      write_man (groups, out);
      break;
    case PB_SETTINGS_DOC_JSON:
      write_json (groups, out);
      break;
    }
  return TRUE;
}
