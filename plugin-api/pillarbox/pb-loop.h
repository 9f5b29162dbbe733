/* SPDX-License-Identifier: MIT */
/* Sources on the daemon's main loop: attached, counted and released through one door. */
#ifndef PILLARBOX_PB_LOOP_H
#define PILLARBOX_PB_LOOP_H

#include <pillarbox/pb-abi.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-loop
 * @title: Main-loop sources
 *
 * A daemon runs for weeks, so every GSource it attaches must leave its
 * context again. GLib removes a source from its context's list only when
 * the last reference goes: a source that is g_source_destroy()ed but never
 * g_source_unref()ed stays in the list for the life of the process, and
 * every later loop iteration walks past it (issue 27: 85 % of the loop's
 * time after 60 000 messages).
 *
 * The rule: a source is created, attached, destroyed and released, each
 * exactly once. Attach through these functions instead of g_source_attach(),
 * g_timeout_add() or g_idle_add(): they behave the same, and count the
 * source among the daemon's live sources from attach until its memory is
 * freed, so `pillarbox status` and the metrics page show a leak as a number
 * that grows. A source you keep a pointer to is let go with
 * pb_source_clear(), which both destroys and releases it. Ids that these
 * functions return are GLib source ids (g_source_remove() and
 * g_clear_handle_id() work on them as always).
 */

/**
 * pb_source_attach:
 * @source: a source that is not attached yet
 * @context: (nullable): the context, %NULL for the global default one
 *
 * Attaches @source to @context as g_source_attach() does and counts it until
 * it is freed. The caller's reference stays the caller's: release it now
 * with g_source_unref() if the context alone is to own the source, or later
 * with pb_source_clear(). Safe from any thread. @source must not have a
 * dispose function of its own (g_source_set_dispose_function()): the count
 * is kept by one.
 *
 * Returns: the source's id in @context
 *
 * Since: ABI 1.2
 */
PB_API guint pb_source_attach (GSource *source, GMainContext *context);

/**
 * pb_source_clear:
 * @source: (inout) (nullable): where a source pointer is kept; may hold %NULL
 *
 * Destroys the source @source points at (it never runs again), drops the
 * reference the caller kept, and sets *@source to %NULL. Does nothing when
 * *@source is %NULL, so it may be called more than once. The one way to let
 * go of a kept source: g_source_destroy() alone leaves the source in its
 * context for ever.
 *
 * Since: ABI 1.2
 */
PB_API void pb_source_clear (GSource **source);

/**
 * pb_timeout_add:
 * @interval_ms: the interval, in milliseconds
 * @func: called every @interval_ms until it returns %G_SOURCE_REMOVE
 * @data: passed to @func
 *
 * g_timeout_add(), counted: a timeout on the global default context at
 * %G_PRIORITY_DEFAULT, owned by the context.
 *
 * Returns: the source id, for g_source_remove()
 *
 * Since: ABI 1.2
 */
PB_API guint pb_timeout_add (guint interval_ms, GSourceFunc func, gpointer data);

/**
 * pb_timeout_add_full:
 * @priority: the source's priority
 * @interval_ms: the interval, in milliseconds
 * @func: called every @interval_ms until it returns %G_SOURCE_REMOVE
 * @data: passed to @func
 * @notify: (nullable): called with @data once the source is gone
 *
 * g_timeout_add_full(), counted.
 *
 * Returns: the source id, for g_source_remove()
 *
 * Since: ABI 1.2
 */
PB_API guint pb_timeout_add_full (gint priority, guint interval_ms, GSourceFunc func, gpointer data,
                                  GDestroyNotify notify);

/**
 * pb_timeout_add_seconds:
 * @interval_s: the interval, in seconds
 * @func: called every @interval_s until it returns %G_SOURCE_REMOVE
 * @data: passed to @func
 *
 * g_timeout_add_seconds(), counted: second-granularity timers are grouped
 * by GLib so that idle daemons wake up less often.
 *
 * Returns: the source id, for g_source_remove()
 *
 * Since: ABI 1.2
 */
PB_API guint pb_timeout_add_seconds (guint interval_s, GSourceFunc func, gpointer data);

/**
 * pb_idle_add:
 * @func: called when the loop has nothing of higher priority to do, until
 *   it returns %G_SOURCE_REMOVE
 * @data: passed to @func
 *
 * g_idle_add(), counted.
 *
 * Returns: the source id, for g_source_remove()
 *
 * Since: ABI 1.2
 */
PB_API guint pb_idle_add (GSourceFunc func, gpointer data);

/**
 * pb_idle_add_full:
 * @priority: the source's priority
 * @func: called until it returns %G_SOURCE_REMOVE
 * @data: passed to @func
 * @notify: (nullable): called with @data once the source is gone
 *
 * g_idle_add_full(), counted.
 *
 * Returns: the source id, for g_source_remove()
 *
 * Since: ABI 1.2
 */
PB_API guint pb_idle_add_full (gint priority, GSourceFunc func, gpointer data, GDestroyNotify notify);

/**
 * pb_sources_live:
 *
 * How many sources attached through this API exist now: attached and not
 * yet freed, whether destroyed or not. A daemon at rest comes back to the
 * same number after any load; a number that grows with the mail handled is
 * a leak.
 *
 * Returns: the number of live sources
 *
 * Since: ABI 1.2
 */
PB_API guint pb_sources_live (void);

PB_END_DECLS

#endif /* PILLARBOX_PB_LOOP_H */
