/* SPDX-License-Identifier: MIT */
/* Helpers for the cmocka unit tests: temporary config dirs, fixtures, log capture, loop waits. */
#include "config.h"
#include "test-help.h"

#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>

char *
pbt_mkdtemp (void)
{
  g_autoptr (GError) error = NULL;
  char *dir = g_dir_make_tmp ("pillarbox-test-XXXXXX", &error);
  assert_non_null (dir);
  return dir;
}

void
pbt_rmtree (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  if (d == NULL)
    return;
  while ((name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = g_build_filename (dir, name, NULL);
      if (g_file_test (path, G_FILE_TEST_IS_DIR) && !g_file_test (path, G_FILE_TEST_IS_SYMLINK))
        pbt_rmtree (path);
      else
        g_unlink (path);
    }
  g_rmdir (dir);
}

void
pbt_write_file (const char *dir, const char *name, const char *text)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_file_set_contents (path, text, -1, &error))
    fail_msg ("cannot write %s: %s", path, error->message);
}

const char *
pbt_fixture_dir (void)
{
  static char *dir;
  g_autofree char *libs = NULL;
  g_autoptr (GDir) d = NULL;
  const char *name;

  if (dir != NULL)
    return dir;
  dir = g_build_filename (TOP_BUILDDIR, "tests", "fixtures", NULL);
  libs = g_build_filename (dir, ".libs", NULL);
  d = g_dir_open (libs, 0, NULL);
  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    if (g_str_has_suffix (name, ".so"))
      {
        g_autofree char *path = g_build_filename (libs, name, NULL);
        g_chmod (path, 0755);
      }
  return dir;
}

static GPtrArray *captured;

static GLogWriterOutput
capture_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer user_data)
{
  const char *message = NULL;

  for (gsize i = 0; i < n_fields; i++)
    if (strcmp (fields[i].key, "MESSAGE") == 0)
      message = fields[i].value;
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING))
    {
      g_ptr_array_add (captured, g_strdup (message != NULL ? message : ""));
      return G_LOG_WRITER_HANDLED;
    }
  if (g_test_verbose () || g_getenv ("PBT_VERBOSE") != NULL)
    return g_log_writer_standard_streams (level, fields, n_fields, user_data);
  return G_LOG_WRITER_HANDLED;
}

void
pbt_log_capture (void)
{
  if (captured == NULL)
    {
      captured = g_ptr_array_new_with_free_func (g_free);
      g_log_set_writer_func (capture_writer, NULL, NULL);
      /* Criticals are collected, not fatal, so tests can assert on them. */
      g_log_set_always_fatal (G_LOG_FATAL_MASK);
    }
}

gboolean
pbt_log_expect (const char *needle)
{
  for (guint i = 0; captured != NULL && i < captured->len; i++)
    if (strstr (g_ptr_array_index (captured, i), needle) != NULL)
      {
        g_ptr_array_remove_index (captured, i);
        return TRUE;
      }
  return FALSE;
}

void
pbt_log_clear (void)
{
  if (captured != NULL)
    g_ptr_array_set_size (captured, 0);
}

void
pbt_log_check_empty (void)
{
  if (captured != NULL && captured->len > 0)
    fail_msg ("unexpected log message: %s", (const char *) g_ptr_array_index (captured, 0));
}

static gboolean
loop_timeout (gpointer data)
{
  *(gboolean *) data = TRUE;
  return G_SOURCE_REMOVE;
}

gboolean
pbt_loop_until (const gboolean *flag, guint ms)
{
  gboolean expired = FALSE;
  guint id = g_timeout_add (ms, loop_timeout, &expired);

  while (!*flag && !expired)
    g_main_context_iteration (NULL, TRUE);
  if (!expired)
    g_source_remove (id);
  return *flag;
}

void
pbt_loop_run_for (guint ms)
{
  gboolean expired = FALSE;
  g_timeout_add (ms, loop_timeout, &expired);
  while (!expired)
    g_main_context_iteration (NULL, TRUE);
}
