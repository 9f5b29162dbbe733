/* SPDX-License-Identifier: MIT */
/* Listeners and sessions: how a protocol module receives its clients. */
#ifndef PILLARBOX_PB_SESSION_H
#define PILLARBOX_PB_SESSION_H

#include <pillarbox/pb-abi.h>
#include <pillarbox/pb-module.h>
#include <pillarbox/pb-conn.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-session
 * @title: Listeners and sessions
 *
 * A protocol module registers listeners in `init`. The core binds them,
 * accepts connections, creates a #PbSession for each, runs the `connect`
 * hooks (load limits, blocks) and only then hands the session to the
 * module's `accept` function. A refusal at connect is one line, formatted
 * by the listener's `format_refusal`, and a close: the module never sees
 * the client.
 *
 * A session lives as long as its connection: when the connection's
 * `closed` handler has run, the core runs the `disconnect` event and
 * forgets the session.
 */

/**
 * PbSession:
 *
 * One client's session: its connection, the listener it came through and
 * what the protocol module has said about it (user, state). Owned by the
 * core.
 *
 * Since: ABI 1.0
 */
typedef struct _PbSession PbSession;

/**
 * PbVerdictKind:
 * @PB_VERDICT_CONTINUE: no opinion; the next handler decides (Postfix's DUNNO)
 * @PB_VERDICT_ACCEPT: accept now; later handlers of this stage are skipped
 * @PB_VERDICT_REJECT: permanent refusal (5xx, POP3 -ERR)
 * @PB_VERDICT_TEMPFAIL: temporary refusal (4xx, POP3 -ERR [SYS/TEMP])
 * @PB_VERDICT_DISCONNECT: temporary refusal and end the session (SMTP 421)
 *
 * What a policy handler answers.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_VERDICT_CONTINUE = 0,
  PB_VERDICT_ACCEPT,
  PB_VERDICT_REJECT,
  PB_VERDICT_TEMPFAIL,
  PB_VERDICT_DISCONNECT
} PbVerdictKind;

/**
 * PbVerdict:
 * @struct_size: sizeof (PbVerdict)
 * @kind: the answer
 * @code: the SMTP reply code to use (e.g. 550), or 0 for the protocol's default
 * @enhanced: (nullable): the RFC 3463 enhanced status code ("5.7.1"), or %NULL
 * @text: (nullable): human-readable text for the client, or %NULL
 * @module: (nullable): the module that answered, for logs
 *
 * A verdict as the core hands it to a protocol module (read only).
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  PbVerdictKind kind;
  guint code;
  const char *enhanced;
  const char *text;
  const char *module;
} PbVerdict;

/**
 * PbAcceptFunc:
 * @session: the new session (owned by the core)
 * @conn: its connection; the module installs its handlers and greets
 * @user_data: the listener's user data
 *
 * Takes over a connection that passed the connect hooks. Must return at
 * once; all work happens in the connection's handlers.
 *
 * Since: ABI 1.0
 */
typedef void (*PbAcceptFunc) (PbSession *session, PbConn *conn, gpointer user_data);

/**
 * PbFormatRefusalFunc:
 * @verdict: the refusal
 * @user_data: the listener's user data
 *
 * Turns a connect-time refusal into the one line the protocol sends, e.g.
 * "421 4.3.2 Too many connections\r\n" or "-ERR [SYS/TEMP] ...\r\n".
 *
 * Returns: (transfer full): the line, with CRLF
 *
 * Since: ABI 1.0
 */
typedef char *(*PbFormatRefusalFunc) (const PbVerdict *verdict, gpointer user_data);

/**
 * PbShutdownFunc:
 * @session: a session of this listener
 * @user_data: the listener's user data
 *
 * The server is stopping: finish what is under way (a message being
 * committed), tell the client (SMTP 421) and close. The core closes
 * whatever is still open when `core.shutdown-timeout` runs out.
 *
 * Since: ABI 1.0
 */
typedef void (*PbShutdownFunc) (PbSession *session, gpointer user_data);

/**
 * PbListenerSpec:
 * @struct_size: sizeof (PbListenerSpec)
 * @name: unique name shown in status and used by policy ("smtp", "submission")
 * @service: the protocol family policy modules key on ("smtp", "pop3")
 * @endpoints: %NULL-terminated `HOST:PORT` list (as a %PB_SETTING_TYPE_ENDPOINTS value)
 * @tls: %PB_TLS_IMPLICIT for SMTPS/POP3S
 * @accept: takes over admitted connections
 * @format_refusal: formats connect-time refusals
 * @shutdown: (nullable): asks a session to finish; without it sessions are
 *   closed when the shutdown timeout runs out
 * @user_data: passed to the callbacks
 *
 * A listening service. Registered with pb_module_add_listener().
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  const char *name;
  const char *service;
  const char *const *endpoints;
  PbTlsMode tls;
  PbAcceptFunc accept;
  PbFormatRefusalFunc format_refusal;
  PbShutdownFunc shutdown;
  gpointer user_data;
} PbListenerSpec;

/**
 * pb_module_add_listener:
 * @module: the registering module (only during `init`)
 * @spec: the listener (copied)
 * @error: where to report a duplicate name or an endpoint taken by another listener
 *
 * Registers a listener. The core binds it after every module's `init`
 * succeeded; on reload, a listener whose endpoint already exists keeps its
 * socket, so no connection is refused during a reload.
 *
 * Returns: %TRUE on success
 *
 * Since: ABI 1.0
 */
PB_API gboolean pb_module_add_listener (PbModule *module, const PbListenerSpec *spec, GError **error);

/**
 * pb_session_ref:
 * @session: a session
 *
 * Keeps the session object (not the connection) alive, e.g. while a
 * commit started by the session is in flight after its client left.
 *
 * Returns: (transfer full): @session
 *
 * Since: ABI 1.0
 */
PB_API PbSession *pb_session_ref (PbSession *session);

/**
 * pb_session_unref:
 * @session: (transfer full): a session
 *
 * Since: ABI 1.0
 */
PB_API void pb_session_unref (PbSession *session);

/**
 * pb_session_get_id:
 * @session: a session
 *
 * Returns: (transfer none): a short unique id for logs ("s1a2b3c")
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_session_get_id (PbSession *session);

/**
 * pb_session_get_conn:
 * @session: a session
 *
 * Returns: (transfer none): its connection
 *
 * Since: ABI 1.0
 */
PB_API PbConn *pb_session_get_conn (PbSession *session);

/**
 * pb_session_get_listener:
 * @session: a session
 *
 * Returns: (transfer none): the name of the listener it came through
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_session_get_listener (PbSession *session);

/**
 * pb_session_get_service:
 * @session: a session
 *
 * Returns: (transfer none): the listener's service ("smtp", "pop3")
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_session_get_service (PbSession *session);

/**
 * pb_session_get_peer_ip:
 * @session: a session
 *
 * Returns: (transfer none): the client's IP address as text
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_session_get_peer_ip (PbSession *session);

/**
 * pb_session_get_start_time:
 * @session: a session
 *
 * Returns: g_get_monotonic_time() when the connection was accepted
 *
 * Since: ABI 1.0
 */
PB_API gint64 pb_session_get_start_time (PbSession *session);

/**
 * pb_session_set_user:
 * @session: a session
 * @user: (nullable): the authenticated user, or %NULL after a reset
 *
 * Records who authenticated, for `pillarbox sessions`, logs and policy.
 *
 * Since: ABI 1.0
 */
PB_API void pb_session_set_user (PbSession *session, const char *user);

/**
 * pb_session_get_user:
 * @session: a session
 *
 * Returns: (transfer none) (nullable): the authenticated user
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_session_get_user (PbSession *session);

/**
 * pb_session_set_state:
 * @session: a session
 * @state: a short word for `pillarbox sessions` ("GREETING", "DATA", "TRANSACTION")
 *
 * Since: ABI 1.0
 */
PB_API void pb_session_set_state (PbSession *session, const char *state);

/**
 * pb_session_get_state:
 * @session: a session
 *
 * Returns: (transfer none): the state last set
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_session_get_state (PbSession *session);

/**
 * pb_session_set_data:
 * @session: a session
 * @module: the module whose data this is (each module has its own slot)
 * @data: (nullable): the data
 * @destroy: (nullable): called when replaced or when the session ends
 *
 * Lets a policy module keep per-session state (an SPF result to add as a
 * header later, a counter to release at disconnect).
 *
 * Since: ABI 1.0
 */
PB_API void pb_session_set_data (PbSession *session, PbModule *module, gpointer data, GDestroyNotify destroy);

/**
 * pb_session_get_data:
 * @session: a session
 * @module: the module whose data to fetch
 *
 * Returns: (transfer none) (nullable): what @module attached
 *
 * Since: ABI 1.0
 */
PB_API gpointer pb_session_get_data (PbSession *session, PbModule *module);

PB_END_DECLS

#endif /* PILLARBOX_PB_SESSION_H */
