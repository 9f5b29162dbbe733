/* SPDX-License-Identifier: MIT */
/* Module state files written atomically and merged under a lock (used by ids and rate-cap). */
#ifndef PILLARBOX_STATE_STORE_H
#define PILLARBOX_STATE_STORE_H

#include <glib.h>

G_BEGIN_DECLS

/* ---- the state file ------------------------------------------------------ */

/* STATE_DIR/MODULE/NAME, written atomically (temporary file, fsync, rename,
 * fsync of the directory) under an flock on NAME.lock, so the two
 * instances alive during a reload never lose each other's records: every
 * write reads the file and merges first. Writes run on a worker thread. */
typedef struct _SStore SStore;
typedef char *(*SStoreMergeFunc) (const char *file_text, const char *own_text, gint64 now);
typedef void (*SStoreDone) (const char *merged, const GError *error, gpointer user_data);

SStore *sstore_new (const char *dir, const char *name, SStoreMergeFunc merge);
/* Stops the worker (waiting for a write under way) and drops the caller's
 * reference; a result still on its way to the loop is then discarded. */
void sstore_close (SStore *store);
const char *sstore_get_path (SStore *store);
/* Reads the file now (at start; missing is empty). */
gboolean sstore_read (SStore *store, char **text, GError **error);
/* Whether the file changed since this store last read or wrote it. */
gboolean sstore_changed (SStore *store);
gboolean sstore_is_busy (SStore *store);
/* Read, merge with OWN (transfer full), write if different, on the
 * worker; DONE runs on the loop with the merged text. */
void sstore_sync_async (SStore *store, char *own, gint64 now, SStoreDone done, gpointer user_data);
/* The same, now, on the calling thread (at fini). */
gboolean sstore_sync (SStore *store, const char *own, gint64 now, char **merged, GError **error);

G_END_DECLS

#endif /* PILLARBOX_STATE_STORE_H */
