/* SPDX-License-Identifier: MIT */
/* The escaping every log line goes through, and the per-service log files (core.service-logs): routing,
   the writer thread, reopening for logrotate. */
#ifndef PILLARBOX_LOG_H
#define PILLARBOX_LOG_H

#include "core-private.h"

G_BEGIN_DECLS

/* TEXT (LEN octets, or up to its NUL when LEN < 0; NULL is "") made safe
 * for a log: each octet of a C0 control, DEL, a C1 control, a line or
 * paragraph separator (U+2028, U+2029), a bidirectional control (U+202A to
 * U+202E, U+2066 to U+2069) or an invalid UTF-8 sequence becomes \xHH
 * (lower-case hex), everything else is kept. A newline becomes NEWLINE
 * when that is not NULL (the sink's continuation line), else \x0a. The
 * result is valid UTF-8; with NEWLINE NULL, escaping it again changes
 * nothing. Every line the core writes has been through it. */
PB_PRIVATE char *pb_log_escape (const char *text, gssize len, const char *newline);

/* The name of the service that gathers the queue manager's, the senders'
 * and the collectors' lines. */
#define PB_LOG_CONNECTIONS "connections"

/* Every name in GEN's core.service-logs is "connections" or the service of
 * one of GEN's listeners. */
PB_PRIVATE gboolean pb_log_files_check (PbGeneration *gen, GError **error);
/* The directory GEN's files go to (core.log-dir, or STATE_DIR/log). */
PB_PRIVATE char *pb_log_files_dir (PbGeneration *gen);
/* Makes GEN's settings the running ones: starts the writer thread on first
 * use, creates the directory and reopens the files. Call after privileges
 * are dropped. */
PB_PRIVATE gboolean pb_log_files_configure (PbGeneration *gen, GError **error);
/* Closes the files; the next line for each service opens it again by name. */
PB_PRIVATE void pb_log_files_reopen (void);
/* Lines dropped because the writer fell behind or a file could not be written. */
PB_PRIVATE guint64 pb_log_files_dropped (void);
/* Writes what is queued (waiting at most TIMEOUT_MS for a stuck disk) and stops the thread. */
PB_PRIVATE void pb_log_files_shutdown (guint timeout_ms);
/* Registers `log-reopen` in GEN. */
PB_PRIVATE void pb_log_files_register (PbGeneration *gen);

G_END_DECLS

#endif /* PILLARBOX_LOG_H */
