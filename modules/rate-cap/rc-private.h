/* SPDX-License-Identifier: MIT */
/* rate-cap internals: sliding-window counters that merge across instances, and their state file. */
#ifndef PILLARBOX_RC_PRIVATE_H
#define PILLARBOX_RC_PRIVATE_H

#include <gio/gio.h>

G_BEGIN_DECLS

#define RC_ERROR (g_quark_from_static_string ("rate-cap-error"))

/*
 * Counters. A counter is named by an identity string (the module builds
 * "RULE|PER|COUNT|PERIOD_MS|VALUE", so a rule whose meaning changes starts
 * from zero) and has a period. Time is cut into steps of
 * ceil(period / 60); an event counts from its step until 60 whole steps
 * after it, so for at least one period and at most one period and one
 * step (a sliding window: "at most N in any PERIOD" holds).
 *
 * Each instance of the module has an origin (a random 64-bit number) and
 * only ever increases its own cells (step, origin). Merging two copies
 * takes the larger count of each cell, so copies written by the two
 * instances alive during a reload, or read back from the state file after
 * a restart, add up without counting anything twice or losing anything (a
 * grow-only counter, G-Counter, per step).
 *
 * Times are microseconds since 1970 (g_get_real_time()): counts outlive
 * the process.
 */
#define RC_STEPS 60

typedef struct _RcCounters RcCounters;

RcCounters *rc_counters_new (guint64 origin);
void rc_counters_free (RcCounters *counters);
guint64 rc_counters_get_origin (RcCounters *counters);
/* The step length of a period, in microseconds. */
gint64 rc_step_usec (gint64 period_ms);
/* Adds N at NOW to ID's own cell. */
void rc_counters_add (RcCounters *counters, const char *id, gint64 period_ms, gint64 now, guint64 n);
/* What counts for ID at NOW: the sum of every origin's cells in the window. */
guint64 rc_counters_get (RcCounters *counters, const char *id, gint64 period_ms, gint64 now);
/* Drops cells that left their window and counters left empty. */
void rc_counters_prune (RcCounters *counters, gint64 now);
guint rc_counters_size (RcCounters *counters);
/* Identity -> count at NOW, for `pillarbox rate-cap`; values are guint64 *. */
GHashTable *rc_counters_snapshot (RcCounters *counters, gint64 now);

/* The state file's text: one line per cell, sorted, without expired cells. */
char *rc_counters_serialize (RcCounters *counters, gint64 now);
/* Merges TEXT's cells (the larger count of each cell wins). Sets *CHANGED
 * when anything grew; bad lines are skipped and counted in *BAD. */
void rc_counters_merge_text (RcCounters *counters, const char *text, gint64 now, gboolean *changed, guint *bad);
char *rc_merge_texts (const char *a, const char *b, gint64 now);

/* Text that cannot contain a blank or a line break ("%20", "%0A", "%25"). */
char *rc_escape (const char *text);
char *rc_unescape (const char *text);

/* The state file: modules/state-store/state-store.h. */
#include "../state-store/state-store.h"

G_END_DECLS

#endif /* PILLARBOX_RC_PRIVATE_H */
