/* SPDX-License-Identifier: MIT */
/* Reads conf.d files (GKeyFile syntax) keeping FILE:LINE for every group and key. */
#include "conf.h"

#include <string.h>

/* A configuration file larger than this is a mistake, not a configuration. */
#define PB_CONF_MAX_FILE (1024 * 1024)

PbDiag *
pb_diag_new (void)
{
  PbDiag *diag = g_new0 (PbDiag, 1);
  diag->lines = g_ptr_array_new_with_free_func (g_free);
  return diag;
}

void
pb_diag_free (PbDiag *diag)
{
  if (diag == NULL)
    return;
  g_ptr_array_unref (diag->lines);
  g_free (diag);
}

void
pb_diag_add (PbDiag *diag, const char *file, guint line, const char *format, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;

  va_start (ap, format);
  msg = g_strdup_vprintf (format, ap);
  va_end (ap);

  if (file != NULL && line > 0)
    g_ptr_array_add (diag->lines, g_strdup_printf ("%s:%u: %s", file, line, msg));
  else if (file != NULL)
    g_ptr_array_add (diag->lines, g_strdup_printf ("%s: %s", file, msg));
  else
    g_ptr_array_add (diag->lines, g_steal_pointer (&msg));
}

gboolean
pb_diag_is_empty (const PbDiag *diag)
{
  return diag->lines->len == 0;
}

char *
pb_diag_join (const PbDiag *diag)
{
  GString *s;

  if (diag->lines->len == 0)
    return NULL;
  s = g_string_new (NULL);
  for (guint i = 0; i < diag->lines->len; i++)
    {
      if (i > 0)
        g_string_append_c (s, '\n');
      g_string_append (s, g_ptr_array_index (diag->lines, i));
    }
  return g_string_free (s, FALSE);
}

static void
conf_entry_free (gpointer p)
{
  PbConfEntry *e = p;
  g_free (e->key);
  g_free (e->value);
  g_free (e);
}

static void
conf_group_free (gpointer p)
{
  PbConfGroup *g = p;
  g_free (g->name);
  g_ptr_array_unref (g->entries);
  g_free (g);
}

PbConfSource *
pb_conf_source_new (const char *dir)
{
  PbConfSource *src = g_new0 (PbConfSource, 1);
  src->dir = g_strdup (dir);
  src->files = g_ptr_array_new_with_free_func (g_free);
  src->groups = g_ptr_array_new_with_free_func (conf_group_free);
  return src;
}

void
pb_conf_source_free (PbConfSource *source)
{
  if (source == NULL)
    return;
  g_free (source->dir);
  g_ptr_array_unref (source->groups);
  g_ptr_array_unref (source->files);
  g_free (source);
}

PbConfGroup *
pb_conf_source_find_group (PbConfSource *source, const char *name)
{
  for (guint i = 0; i < source->groups->len; i++)
    {
      PbConfGroup *g = g_ptr_array_index (source->groups, i);
      if (strcmp (g->name, name) == 0)
        return g;
    }
  return NULL;
}

PbConfEntry *
pb_conf_group_find (PbConfGroup *group, const char *key)
{
  for (guint i = 0; i < group->entries->len; i++)
    {
      PbConfEntry *e = g_ptr_array_index (group->entries, i);
      if (strcmp (e->key, key) == 0)
        return e;
    }
  return NULL;
}

void
pb_conf_group_split_name (const PbConfGroup *group, char **kind, char **name)
{
  const char *sp = strchr (group->name, ' ');

  if (sp == NULL)
    {
      *kind = g_strdup (group->name);
      *name = NULL;
      return;
    }
  *kind = g_strndup (group->name, sp - group->name);
  while (*sp == ' ')
    sp++;
  *name = g_strdup (sp);
}

/* GKeyFile's escapes: \s \n \t \r \\ ; anything else is kept as written. */
static char *
conf_unescape (const char *s, gsize len)
{
  GString *out = g_string_sized_new (len);

  for (gsize i = 0; i < len; i++)
    {
      if (s[i] == '\\' && i + 1 < len)
        {
          char c = s[++i];
          switch (c)
            {
            case 's': g_string_append_c (out, ' '); break;
            case 'n': g_string_append_c (out, '\n'); break;
            case 't': g_string_append_c (out, '\t'); break;
            case 'r': g_string_append_c (out, '\r'); break;
            case '\\': g_string_append_c (out, '\\'); break;
            case '#': g_string_append_c (out, '#'); break;
            default:
              g_string_append_c (out, '\\');
              g_string_append_c (out, c);
              break;
            }
        }
      else
        g_string_append_c (out, s[i]);
    }
  return g_string_free (out, FALSE);
}

/* Cuts VALUE (blanks already stripped at both ends) at a comment: a '#'
 * at its start or after a blank, not escaped as \#. The comment and the
 * blanks before it go. Without this, `hostname = mail.example.org   # public
 * name` would make the comment part of the name, silently. */
static void
conf_cut_comment (char *value)
{
  for (char *v = value; *v != '\0'; v++)
    {
      if (*v == '\\' && v[1] != '\0')
        v++;
      else if (*v == '#' && (v == value || v[-1] == ' ' || v[-1] == '\t'))
        {
          *v = '\0';
          g_strchomp (value);
          return;
        }
    }
}

static gboolean
conf_is_key_char (char c)
{
  return g_ascii_isalnum (c) || c == '-' || c == '_' || c == '.';
}

static const char *
conf_intern_file (PbConfSource *source, const char *file)
{
  for (guint i = 0; i < source->files->len; i++)
    if (strcmp (g_ptr_array_index (source->files, i), file) == 0)
      return g_ptr_array_index (source->files, i);
  g_ptr_array_add (source->files, g_strdup (file));
  return g_ptr_array_index (source->files, source->files->len - 1);
}

static char *
conf_normalise_group_name (const char *s, gsize len)
{
  /* "[module   smtp-server ]" and "[module smtp-server]" are the same group. */
  g_autofree char *raw = g_strndup (s, len);
  g_auto (GStrv) words = g_strsplit_set (g_strstrip (raw), " \t", -1);
  GString *out = g_string_new (NULL);

  for (guint i = 0; words[i] != NULL; i++)
    {
      if (words[i][0] == '\0')
        continue;
      if (out->len > 0)
        g_string_append_c (out, ' ');
      g_string_append (out, words[i]);
    }
  return g_string_free (out, FALSE);
}

void
pb_conf_source_parse (PbConfSource *source, const char *file, const char *data, gsize len, PbDiag *diag)
{
  const char *fname = conf_intern_file (source, file);
  PbConfGroup *group = NULL;
  const char *p = data;
  const char *end = data + len;
  guint lineno = 0;

  if (memchr (data, '\0', len) != NULL)
    {
      pb_diag_add (diag, fname, 0, "contains a NUL byte; not a text file");
      return;
    }
  if (!g_utf8_validate (data, len, NULL))
    {
      pb_diag_add (diag, fname, 0, "is not valid UTF-8");
      return;
    }

  while (p < end)
    {
      const char *nl = memchr (p, '\n', end - p);
      const char *lend = nl != NULL ? nl : end;
      g_autofree char *line = NULL;
      char *s;

      lineno++;
      line = g_strndup (p, lend - p);
      p = nl != NULL ? nl + 1 : end;

      s = g_strstrip (line);
      if (*s == '\0' || *s == '#')
        continue;

      if (*s == '[')
        {
          char *close = strrchr (s, ']');
          g_autofree char *name = NULL;

          if (close == NULL || close[1] != '\0')
            {
              pb_diag_add (diag, fname, lineno, "malformed group header '%s' (expected [NAME])", s);
              group = NULL;
              continue;
            }
          name = conf_normalise_group_name (s + 1, close - s - 1);
          if (*name == '\0' || strpbrk (name, "[]") != NULL)
            {
              pb_diag_add (diag, fname, lineno, "malformed group header '%s'", s);
              group = NULL;
              continue;
            }
          group = pb_conf_source_find_group (source, name);
          if (group != NULL)
            {
              pb_diag_add (diag, fname, lineno, "duplicate group [%s] (first at %s:%u)",
                           name, group->file, group->line);
              /* Keep reading its keys into the first group so they are still checked. */
              continue;
            }
          group = g_new0 (PbConfGroup, 1);
          group->name = g_steal_pointer (&name);
          group->file = fname;
          group->line = lineno;
          group->entries = g_ptr_array_new_with_free_func (conf_entry_free);
          g_ptr_array_add (source->groups, group);
          continue;
        }

      {
        char *eq = strchr (s, '=');
        g_autofree char *key = NULL;
        PbConfEntry *entry, *prev;
        char *value;

        if (eq == NULL)
          {
            pb_diag_add (diag, fname, lineno, "'%s' is not a group, a KEY = VALUE line or a comment", s);
            continue;
          }
        key = g_strndup (s, eq - s);
        g_strstrip (key);
        if (*key == '\0')
          {
            pb_diag_add (diag, fname, lineno, "missing key before '='");
            continue;
          }
        for (const char *k = key; *k != '\0'; k++)
          if (!conf_is_key_char (*k))
            {
              pb_diag_add (diag, fname, lineno, "invalid key '%s' (keys are letters, digits and '-')", key);
              goto next_line;
            }
        if (group == NULL)
          {
            pb_diag_add (diag, fname, lineno, "key '%s' appears before any [group]", key);
            continue;
          }
        prev = pb_conf_group_find (group, key);
        if (prev != NULL)
          {
            pb_diag_add (diag, fname, lineno, "key '%s' is set twice in [%s] (first at %s:%u)",
                         key, group->name, prev->file, prev->line);
            continue;
          }
        value = g_strstrip (eq + 1);
        conf_cut_comment (value);
        entry = g_new0 (PbConfEntry, 1);
        entry->key = g_steal_pointer (&key);
        entry->value = conf_unescape (value, strlen (value));
        entry->file = fname;
        entry->line = lineno;
        g_ptr_array_add (group->entries, entry);
      }
    next_line:
      ;
    }
}

static gint
conf_compare_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

PbConfSource *
pb_conf_source_load_dir (const char *dir, PbDiag *diag)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GDir) d = NULL;
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *absdir = g_canonicalize_filename (dir, NULL);
  PbConfSource *src;
  const char *name;

  d = g_dir_open (absdir, 0, &error);
  if (d == NULL)
    {
      pb_diag_add (diag, dir, 0, "cannot read configuration directory: %s", error->message);
      return NULL;
    }
  while ((name = g_dir_read_name (d)) != NULL)
    {
      if (name[0] == '.' || !g_str_has_suffix (name, ".conf"))
        continue;
      g_ptr_array_add (names, g_strdup (name));
    }
  g_ptr_array_sort (names, conf_compare_names);

  src = pb_conf_source_new (absdir);
  for (guint i = 0; i < names->len; i++)
    {
      g_autofree char *path = g_build_filename (dir, g_ptr_array_index (names, i), NULL);
      g_autofree char *data = NULL;
      gsize len = 0;

      g_clear_error (&error);
      if (!g_file_get_contents (path, &data, &len, &error))
        {
          pb_diag_add (diag, path, 0, "cannot read: %s", error->message);
          continue;
        }
      if (len > PB_CONF_MAX_FILE)
        {
          pb_diag_add (diag, path, 0, "is larger than %d bytes", PB_CONF_MAX_FILE);
          continue;
        }
      pb_conf_source_parse (src, path, data, len, diag);
    }
  return src;
}

gboolean
pb_conf_source_apply_override (PbConfSource *source, const char *spec, PbDiag *diag)
{
  g_autofree char *where = g_strdup_printf ("command line (-o %s)", spec);
  const char *eq = strchr (spec, '=');
  const char *dot;
  g_autofree char *target = NULL;
  g_autofree char *group_name = NULL;
  g_autofree char *key = NULL;
  PbConfGroup *group;
  PbConfEntry *entry;

  if (eq == NULL)
    {
      pb_diag_add (diag, where, 0, "expected GROUP.KEY=VALUE");
      return FALSE;
    }
  target = g_strndup (spec, eq - spec);
  dot = strrchr (target, '.');
  if (dot == NULL || dot == target || dot[1] == '\0')
    {
      pb_diag_add (diag, where, 0, "expected GROUP.KEY=VALUE (GROUP is 'core' or a module name)");
      return FALSE;
    }
  key = g_strdup (dot + 1);
  if (strncmp (target, "core.", 5) == 0 && dot == target + 4)
    group_name = g_strdup ("core");
  else
    group_name = g_strdup_printf ("module %.*s", (int) (dot - target), target);

  group = pb_conf_source_find_group (source, group_name);
  if (group == NULL)
    {
      if (strcmp (group_name, "core") != 0)
        {
          pb_diag_add (diag, where, 0, "no [%s] group is configured", group_name);
          return FALSE;
        }
      group = g_new0 (PbConfGroup, 1);
      group->name = g_strdup ("core");
      group->file = conf_intern_file (source, "command line");
      group->line = 0;
      group->entries = g_ptr_array_new_with_free_func (conf_entry_free);
      g_ptr_array_insert (source->groups, 0, group);
    }

  entry = pb_conf_group_find (group, key);
  if (entry == NULL)
    {
      entry = g_new0 (PbConfEntry, 1);
      entry->key = g_strdup (key);
      g_ptr_array_add (group->entries, entry);
    }
  g_free (entry->value);
  entry->value = g_strdup (eq + 1);
  entry->file = conf_intern_file (source, where);
  entry->line = 0;
  return TRUE;
}
