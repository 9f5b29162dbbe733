/* SPDX-License-Identifier: MIT */
/* Sources on the main loop: attached through one door and counted until freed (pb-loop.h). */
#include "config.h"
#include "core-private.h"

#include <glib-unix.h>

/* Sources attached through pb_source_attach() whose memory is not freed
 * yet. Written from the loop and from worker threads (storage replies are
 * attached from the storage thread), so atomic. */
static gint live_sources;

static void
source_disposed (GSource *source)
{
  g_atomic_int_add (&live_sources, -1);
}

guint
pb_source_attach (GSource *source, GMainContext *context)
{
  g_return_val_if_fail (source != NULL, 0);

  /* GLib runs the dispose function when the last reference goes, just
   * before the source leaves its context's list and is freed: the moment a
   * source stops costing the loop anything. */
  g_source_set_dispose_function (source, source_disposed);
  g_atomic_int_inc (&live_sources);
  return g_source_attach (source, context);
}

void
pb_source_clear (GSource **source)
{
  GSource *s;

  g_return_if_fail (source != NULL);
  s = g_steal_pointer (source);
  if (s == NULL)
    return;
  g_source_destroy (s);
  g_source_unref (s);
}

/* Attaches @source with @func and hands it to the context, as the
 * g_*_add() conveniences do. */
static guint
source_add (GSource *source, gint priority, GSourceFunc func, gpointer data, GDestroyNotify notify)
{
  guint id;

  g_source_set_priority (source, priority);
  g_source_set_callback (source, func, data, notify);
  id = pb_source_attach (source, NULL);
  g_source_unref (source);
  return id;
}

guint
pb_timeout_add (guint interval_ms, GSourceFunc func, gpointer data)
{
  return pb_timeout_add_full (G_PRIORITY_DEFAULT, interval_ms, func, data, NULL);
}

guint
pb_timeout_add_full (gint priority, guint interval_ms, GSourceFunc func, gpointer data, GDestroyNotify notify)
{
  g_return_val_if_fail (func != NULL, 0);
  return source_add (g_timeout_source_new (interval_ms), priority, func, data, notify);
}

guint
pb_timeout_add_seconds (guint interval_s, GSourceFunc func, gpointer data)
{
  g_return_val_if_fail (func != NULL, 0);
  return source_add (g_timeout_source_new_seconds (interval_s), G_PRIORITY_DEFAULT, func, data, NULL);
}

guint
pb_idle_add (GSourceFunc func, gpointer data)
{
  return pb_idle_add_full (G_PRIORITY_DEFAULT_IDLE, func, data, NULL);
}

guint
pb_idle_add_full (gint priority, GSourceFunc func, gpointer data, GDestroyNotify notify)
{
  g_return_val_if_fail (func != NULL, 0);
  return source_add (g_idle_source_new (), priority, func, data, notify);
}

guint
pb_unix_fd_add (int fd, GIOCondition condition, GUnixFDSourceFunc func, gpointer data)
{
  g_return_val_if_fail (func != NULL, 0);
  return source_add (g_unix_fd_source_new (fd, condition), G_PRIORITY_DEFAULT, G_SOURCE_FUNC (func), data, NULL);
}

guint
pb_unix_signal_add (int signum, GSourceFunc func, gpointer data)
{
  g_return_val_if_fail (func != NULL, 0);
  return source_add (g_unix_signal_source_new (signum), G_PRIORITY_DEFAULT, func, data, NULL);
}

guint
pb_sources_live (void)
{
  return (guint) g_atomic_int_get (&live_sources);
}
