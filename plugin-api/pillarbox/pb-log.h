/* SPDX-License-Identifier: MIT */
/* Structured logging with session and queue ids, through GLib's structured log. */
#ifndef PILLARBOX_PB_LOG_H
#define PILLARBOX_PB_LOG_H

#include <pillarbox/pb-abi.h>
#include <pillarbox/pb-session.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-log
 * @title: Logging
 *
 * Modules log with GLib's structured logging (define `G_LOG_DOMAIN` as
 * "pillarbox-NAME" and `G_LOG_USE_STRUCTURED`). The core writes to the
 * journal when stderr is connected to it, otherwise one line per message
 * to stderr. These helpers add the fields that tie lines together:
 * `PB_SESSION` (the session id) and `PB_QUEUE_ID`. Never log passwords or
 * AUTH payloads.
 */

/**
 * pb_log_session:
 * @domain: the module's log domain (G_LOG_DOMAIN)
 * @level: G_LOG_LEVEL_INFO, G_LOG_LEVEL_WARNING, ...
 * @session: (nullable): the session the line is about
 * @queue_id: (nullable): the message the line is about
 * @format: printf() format
 * @...: arguments
 *
 * Logs one line with the session's and message's ids as fields and as a
 * prefix of the text ("s1a2b3c: ...").
 *
 * Since: ABI 1.0
 */
PB_API void pb_log_session (const char *domain, GLogLevelFlags level, PbSession *session,
                            const char *queue_id, const char *format, ...) G_GNUC_PRINTF (5, 6);

/**
 * pb_session_info:
 * @session: a session
 * @...: format and arguments
 *
 * Logs an INFO line about @session in the caller's log domain.
 *
 * Since: ABI 1.0
 */
#define pb_session_info(session, ...) \
  pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_INFO, (session), NULL, __VA_ARGS__)

/**
 * pb_session_warning:
 * @session: a session
 * @...: format and arguments
 *
 * Logs a WARNING line about @session.
 *
 * Since: ABI 1.0
 */
#define pb_session_warning(session, ...) \
  pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, (session), NULL, __VA_ARGS__)

/**
 * pb_session_debug:
 * @session: a session
 * @...: format and arguments
 *
 * Logs a DEBUG line about @session (shown with `pillarboxd -v`).
 *
 * Since: ABI 1.0
 */
#define pb_session_debug(session, ...) \
  pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_DEBUG, (session), NULL, __VA_ARGS__)

PB_END_DECLS

#endif /* PILLARBOX_PB_LOG_H */
