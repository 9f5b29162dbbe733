/* SPDX-License-Identifier: MIT */
/* Policy hooks at fixed stages with asynchronous verdicts, and notify-only events. */
#ifndef PILLARBOX_PB_HOOKS_H
#define PILLARBOX_PB_HOOKS_H

#include <pillarbox/pb-abi.h>
#include <pillarbox/pb-module.h>
#include <pillarbox/pb-session.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-hooks
 * @title: Policy hooks
 *
 * A protocol or transport module asks policy questions at fixed stages; it
 * never knows which modules answer. For each stage the core calls the
 * registered handlers in order (priority, then `before`/`after`
 * constraints, then registration order). Each handler completes the
 * request exactly once with pb_policy_complete(), either before it returns
 * or later from a callback (a DNS answer, a storage lookup). The first
 * answer other than %PB_VERDICT_CONTINUE ends the stage.
 *
 * The core enforces `core.hook-timeout` per stage: a handler that has not
 * answered in time yields %PB_VERDICT_TEMPFAIL "451 4.3.0", the request's
 * cancellable is cancelled, and the late completion is ignored. The same
 * happens when the session ends while a handler is still thinking.
 *
 * Fields carry the stage's data as text, so stages can grow without ABI
 * changes. Documented fields (absent ones are %NULL):
 *
 * - every stage with a session: the session itself via
 *   pb_policy_request_get_session()
 * - `helo`: HELO/EHLO argument (stages helo and later)
 * - `auth-user`: the user name tried (auth) or authenticated (later stages)
 * - `auth-result`: "success" or "failure" (auth)
 * - `auth-mechanism`: "PLAIN", "LOGIN", "USER" (auth)
 * - `mail-from`: the reverse path without angle brackets, "" for the null sender
 * - `rcpt`: the recipient address (rcpt-address: as the client gave it; rcpt-to;
 *   delivery-attempt and delivery-result: one recipient)
 * - `size`: message size in octets, decimal (data-end, queued, delivery stages)
 * - `queue-id`: the message's queue id (queued and delivery stages)
 * - `transport`, `destination`: delivery stages
 * - `recipients`: how many recipients the message was accepted for, decimal
 *   (queued; since ABI 1.1, absent from older protocol modules)
 * - `result-code`, `result-text`: delivery-result (the reply's code, e.g. "451", and
 *   the whole reply); `result`: "delivered", "deferred", "bounced" or "expired"
 *
 * A handler may change a field only where a stage documents it:
 * delivery-attempt allows `mail-from` (BATV signing, SRS); rcpt-address
 * allows `rcpt` (removing a BATV tag or a sub-address before routing).
 */

/**
 * PbStage:
 * @PB_STAGE_CONNECT: a client connected; before the protocol module sees a byte
 * @PB_STAGE_HELO: HELO/EHLO
 * @PB_STAGE_AUTH: an authentication attempt, after the credentials were checked
 *   (`auth-result` says how it went; a handler may still refuse a success)
 * @PB_STAGE_MAIL_FROM: MAIL FROM
 * @PB_STAGE_RCPT_TO: each RCPT TO, after the router accepted the address
 * @PB_STAGE_DATA_START: DATA or the first BDAT
 * @PB_STAGE_DATA_END: the message is received (headers and size known), not yet acknowledged
 * @PB_STAGE_QUEUED: the message is durably stored (notification; verdicts are ignored)
 * @PB_STAGE_DELIVERY_ATTEMPT: a transport is about to send a message (may rewrite `mail-from`)
 * @PB_STAGE_DELIVERY_RESULT: a recipient's delivery ended (notification)
 * @PB_STAGE_RCPT_ADDRESS: each RCPT TO, before the router sees the address
 *   (may rewrite `rcpt`; the router, the rcpt-to stage and delivery then use
 *   the rewritten address). Since: ABI 1.1
 * @PB_STAGE_LAST: the number of stages
 *
 * The fixed points where policy is asked. Values are appended, never
 * renumbered, so the order of the enum is not the order of a transaction:
 * smtp-server asks rcpt-address before rcpt-to.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_STAGE_CONNECT = 0,
  PB_STAGE_HELO,
  PB_STAGE_AUTH,
  PB_STAGE_MAIL_FROM,
  PB_STAGE_RCPT_TO,
  PB_STAGE_DATA_START,
  PB_STAGE_DATA_END,
  PB_STAGE_QUEUED,
  PB_STAGE_DELIVERY_ATTEMPT,
  PB_STAGE_DELIVERY_RESULT,
  PB_STAGE_RCPT_ADDRESS,
  PB_STAGE_LAST
} PbStage;

/**
 * PbPolicyRequest:
 *
 * One question at one stage, reference-counted. A handler that answers
 * later takes a reference with pb_policy_request_ref().
 *
 * Since: ABI 1.0
 */
typedef struct _PbPolicyRequest PbPolicyRequest;

/**
 * PbHookFunc:
 * @request: the question
 * @user_data: the hook's user data
 *
 * A policy handler. It must complete @request exactly once, now or later,
 * and must not block.
 *
 * Since: ABI 1.0
 */
typedef void (*PbHookFunc) (PbPolicyRequest *request, gpointer user_data);

/**
 * PbHookSpec:
 * @struct_size: sizeof (PbHookSpec)
 * @stage: where to run
 * @priority: lower runs earlier; 0 is the default, negative values for
 *   cheap checks that should run first (blocks), positive for costly ones (DNS)
 * @before: (nullable): %NULL-terminated module names this handler runs before
 * @after: (nullable): %NULL-terminated module names this handler runs after
 * @func: the handler
 * @user_data: passed to @func
 *
 * A hook registration. Constraints naming modules that are not loaded are
 * ignored; a cycle is a configuration error.
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  PbStage stage;
  gint priority;
  const char *const *before;
  const char *const *after;
  PbHookFunc func;
  gpointer user_data;
} PbHookSpec;

/**
 * pb_module_add_hook:
 * @module: the registering module (only during `init`)
 * @spec: the hook (copied, with its name lists)
 * @error: where to report a bad stage
 *
 * Returns: %TRUE on success
 *
 * Since: ABI 1.0
 */
PB_API gboolean pb_module_add_hook (PbModule *module, const PbHookSpec *spec, GError **error);

/**
 * pb_stage_to_string:
 * @stage: a stage
 *
 * Returns: (transfer none): its name as in logs and docs ("rcpt-to")
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_stage_to_string (PbStage stage);

/* For handlers. */

/**
 * pb_policy_request_ref:
 * @request: a request
 *
 * Returns: (transfer full): @request
 *
 * Since: ABI 1.0
 */
PB_API PbPolicyRequest *pb_policy_request_ref (PbPolicyRequest *request);

/**
 * pb_policy_request_unref:
 * @request: (transfer full): a request
 *
 * Since: ABI 1.0
 */
PB_API void pb_policy_request_unref (PbPolicyRequest *request);

/**
 * pb_policy_request_get_stage:
 * @request: a request
 *
 * Returns: its stage
 *
 * Since: ABI 1.0
 */
PB_API PbStage pb_policy_request_get_stage (PbPolicyRequest *request);

/**
 * pb_policy_request_get_session:
 * @request: a request
 *
 * Returns: (transfer none) (nullable): the session asking, or %NULL for
 *   delivery stages
 *
 * Since: ABI 1.0
 */
PB_API PbSession *pb_policy_request_get_session (PbPolicyRequest *request);

/**
 * pb_policy_request_get_field:
 * @request: a request
 * @name: a field name (see the section description)
 *
 * Returns: (transfer none) (nullable): its value, or %NULL when absent
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_policy_request_get_field (PbPolicyRequest *request, const char *name);

/**
 * pb_policy_request_set_field:
 * @request: a request
 * @name: a field name
 * @value: (nullable): the new value
 *
 * Sets a field. Protocol modules set fields before running the request;
 * handlers may change only the fields their stage allows.
 *
 * Since: ABI 1.0
 */
PB_API void pb_policy_request_set_field (PbPolicyRequest *request, const char *name, const char *value);

/**
 * pb_policy_request_add_header:
 * @request: a data-end request
 * @name: header name ("Received-SPF")
 * @value: unfolded header value
 *
 * Asks for a header to be prepended to the message (data-end only).
 * The protocol module collects them with pb_policy_request_get_headers().
 *
 * Since: ABI 1.0
 */
PB_API void pb_policy_request_add_header (PbPolicyRequest *request, const char *name, const char *value);

/**
 * pb_policy_request_get_cancellable:
 * @request: a request
 *
 * Returns: (transfer none): cancelled when the answer is no longer wanted
 *   (stage timeout, session ended): stop work and still complete
 *
 * Since: ABI 1.0
 */
PB_API GCancellable *pb_policy_request_get_cancellable (PbPolicyRequest *request);

/**
 * pb_policy_complete:
 * @request: a request
 * @kind: the answer
 * @code: SMTP reply code, or 0 for the protocol's default
 * @enhanced: (nullable): RFC 3463 code, e.g. "5.7.1"
 * @text: (nullable): text for the client
 *
 * Answers the request. Exactly once per handler call; a second completion
 * is a programming error and is ignored with a critical warning.
 *
 * Since: ABI 1.0
 */
PB_API void pb_policy_complete (PbPolicyRequest *request,
                                PbVerdictKind kind,
                                guint code,
                                const char *enhanced,
                                const char *text);

/**
 * pb_policy_continue:
 * @request: a request
 *
 * Answers "no opinion".
 *
 * Since: ABI 1.0
 */
PB_API void pb_policy_continue (PbPolicyRequest *request);

/* For the modules that ask (protocols, transports). */

/**
 * PbPolicyDoneFunc:
 * @request: the request, with any fields handlers changed
 * @verdict: the outcome; %PB_VERDICT_CONTINUE when no handler objected
 * @user_data: as given
 *
 * The end of a stage.
 *
 * Since: ABI 1.0
 */
typedef void (*PbPolicyDoneFunc) (PbPolicyRequest *request, const PbVerdict *verdict, gpointer user_data);

/**
 * pb_policy_request_new:
 * @session: (nullable): the session asking (%NULL for delivery stages)
 * @stage: the stage
 *
 * Returns: (transfer full): a request to fill with fields and run
 *
 * Since: ABI 1.0
 */
PB_API PbPolicyRequest *pb_policy_request_new (PbSession *session, PbStage stage);

/**
 * pb_policy_request_run:
 * @request: a request
 * @done: (nullable): called once with the outcome, never from inside this call
 *   when a handler defers, possibly from inside it otherwise; %NULL (since
 *   ABI 1.1) for a notification nobody waits for
 * @user_data: passed to @done
 *
 * Runs the stage's handlers. Cheap when no module hooks the stage.
 *
 * Since: ABI 1.0
 */
PB_API void pb_policy_request_run (PbPolicyRequest *request, PbPolicyDoneFunc done, gpointer user_data);

/**
 * pb_policy_request_get_headers:
 * @request: a data-end request that has run
 *
 * Returns: (transfer none): the headers handlers added, as
 *   %NULL-terminated "Name: value" strings in the order to prepend
 *
 * Since: ABI 1.0
 */
PB_API const char *const *pb_policy_request_get_headers (PbPolicyRequest *request);

/**
 * pb_stage_has_hooks:
 * @module: any module instance of the running generation
 * @stage: a stage
 *
 * Returns: %TRUE when at least one handler is registered for @stage
 *
 * Since: ABI 1.0
 */
PB_API gboolean pb_stage_has_hooks (PbModule *module, PbStage stage);

/**
 * PbEventKind:
 * @PB_EVENT_AUTH_FAILED: a login failed
 * @PB_EVENT_AUTH_SUCCEEDED: a login succeeded
 * @PB_EVENT_UNKNOWN_RECIPIENT: a local recipient does not exist
 * @PB_EVENT_RELAY_DENIED: relaying was refused
 * @PB_EVENT_PROTOCOL_ERROR: a malformed or out-of-sequence command
 * @PB_EVENT_TOO_MANY_CONNECTIONS: a connection was refused for load
 * @PB_EVENT_DISCONNECT: a session ended, whether it was admitted ("admitted")
 *   or refused at connect ("refused"); every session that reached the connect
 *   stage ends with exactly one
 * @PB_EVENT_SESSION_START: the connect stage admitted the session and the
 *   core is handing it to its protocol module; detail: the listener's name.
 *   Reported by the core, exactly once per admitted session, so it pairs
 *   with the "admitted" %PB_EVENT_DISCONNECT. Since: ABI 1.1
 * @PB_EVENT_POLICY_REFUSED: a policy stage run for a session ended with a
 *   refusal (%PB_VERDICT_REJECT, %PB_VERDICT_TEMPFAIL or
 *   %PB_VERDICT_DISCONNECT, including the core's own 451 on a hook
 *   timeout); detail: "STAGE CODE MODULE", e.g. "rcpt-to 550 rate-cap"
 *   (CODE is "5xx" or "4xx" when the handler left the code to the
 *   protocol). Reported by the core. Since: ABI 1.1
 * @PB_EVENT_MESSAGE_REFUSED: a protocol module refused a message for a
 *   reason that is not policy; detail: "too-big" (SMTP 552), "storage-full"
 *   (452) or "storage-error" (451). Since: ABI 1.1
 * @PB_EVENT_BLOCKED: a connection was refused at connect because its
 *   client is blocked (a block list, an IDS block); reported by the refusing
 *   module before it answers; detail: the client's address. Since: ABI 1.1
 * @PB_EVENT_BLOCK_STARTED: a policy module started blocking the session's
 *   client (IDS); detail: the address or prefix now blocked. Since: ABI 1.1
 *
 * Things that happened, reported for modules that count them (IDS,
 * metrics, load limits). Events never change what happens. Values are
 * only ever appended: a handler ignores kinds it does not know.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_EVENT_AUTH_FAILED = 1,
  PB_EVENT_AUTH_SUCCEEDED,
  PB_EVENT_UNKNOWN_RECIPIENT,
  PB_EVENT_RELAY_DENIED,
  PB_EVENT_PROTOCOL_ERROR,
  PB_EVENT_TOO_MANY_CONNECTIONS,
  PB_EVENT_DISCONNECT,
  PB_EVENT_SESSION_START,
  PB_EVENT_POLICY_REFUSED,
  PB_EVENT_MESSAGE_REFUSED,
  PB_EVENT_BLOCKED,
  PB_EVENT_BLOCK_STARTED
} PbEventKind;

/**
 * PbEventFunc:
 * @session: the session it happened in
 * @kind: what happened
 * @detail: (nullable): a word or address (the user name tried, the recipient)
 * @user_data: as registered
 *
 * Receives events. Must not block.
 *
 * Since: ABI 1.0
 */
typedef void (*PbEventFunc) (PbSession *session, PbEventKind kind, const char *detail, gpointer user_data);

/**
 * pb_module_add_event_handler:
 * @module: the registering module (only during `init`)
 * @func: the handler
 * @user_data: passed to @func
 *
 * Since: ABI 1.0
 */
PB_API void pb_module_add_event_handler (PbModule *module, PbEventFunc func, gpointer user_data);

/**
 * pb_session_report_event:
 * @session: the session
 * @kind: what happened
 * @detail: (nullable): a word or address
 *
 * Tells every event handler, in registration order, before returning.
 *
 * Since: ABI 1.0
 */
PB_API void pb_session_report_event (PbSession *session, PbEventKind kind, const char *detail);

/**
 * pb_event_to_string:
 * @kind: an event
 *
 * Returns: (transfer none): its name ("auth-failed"); "unknown" for a
 *   value this core does not know
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_event_to_string (PbEventKind kind);

PB_END_DECLS

#endif /* PILLARBOX_PB_HOOKS_H */
