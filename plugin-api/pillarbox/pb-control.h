/* SPDX-License-Identifier: MIT */
/* Control commands: what `pillarbox COMMAND ...` runs inside the daemon. */
#ifndef PILLARBOX_PB_CONTROL_H
#define PILLARBOX_PB_CONTROL_H

#include <pillarbox/pb-abi.h>
#include <pillarbox/pb-module.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-control
 * @title: Control commands
 *
 * The `pillarbox` command talks to the daemon over a UNIX socket in the
 * state directory (JSON lines). A module adds top-level commands
 * (`pillarbox ids block 192.0.2.7`): the core passes the words after the
 * command name as arguments, plus any text the command read from standard
 * input (passwords are never put on a command line), and sends back the
 * reply: human-readable text, structured data for `--json`, or an error.
 *
 * Structured data is a #GVariant; the core turns it into JSON
 * (dictionaries `a{sv}` become objects, arrays become arrays).
 */

/**
 * PbControlRequest:
 *
 * One invocation of a control command.
 *
 * Since: ABI 1.0
 */
typedef struct _PbControlRequest PbControlRequest;

/**
 * PbControlFunc:
 * @request: the invocation
 * @user_data: as registered
 *
 * Runs a command. It must answer exactly once with
 * pb_control_request_reply() or pb_control_request_fail(), now or later.
 *
 * Since: ABI 1.0
 */
typedef void (*PbControlFunc) (PbControlRequest *request, gpointer user_data);

/**
 * PbControlCommandSpec:
 * @struct_size: sizeof (PbControlCommandSpec)
 * @name: the command word ("ids"); must not clash with another module's
 * @summary: one line for `pillarbox help`
 * @usage: the synopsis, e.g. "ids list | ids block ADDR [DURATION] | ids unblock ADDR"
 * @func: the handler
 * @user_data: passed to @func
 * @reads_input: %TRUE when the client must read standard input (or prompt
 *   without echo on a terminal) and send it with the request
 * @input_for: (nullable): with @reads_input, the subcommands (first
 *   argument) that read input, %NULL-terminated; %NULL means every
 *   invocation. `user` sets it to {"add", "passwd"} so `pillarbox user list`
 *   never prompts.
 *
 * A control command registration.
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  const char *name;
  const char *summary;
  const char *usage;
  PbControlFunc func;
  gpointer user_data;
  gboolean reads_input;
  const char *const *input_for;
} PbControlCommandSpec;

/**
 * pb_module_add_command:
 * @module: the registering module (only during `init`)
 * @spec: the command (copied)
 * @error: where to report a clash
 *
 * Returns: %TRUE on success
 *
 * Since: ABI 1.0
 */
PB_API gboolean pb_module_add_command (PbModule *module, const PbControlCommandSpec *spec, GError **error);

/**
 * pb_control_request_get_args:
 * @request: a request
 *
 * Returns: (transfer none): the words after the command name, %NULL-terminated
 *
 * Since: ABI 1.0
 */
PB_API const char *const *pb_control_request_get_args (PbControlRequest *request);

/**
 * pb_control_request_get_input:
 * @request: a request
 *
 * Returns: (transfer none) (nullable): what the client read from standard
 *   input for a `reads_input` command, without the final newline
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_control_request_get_input (PbControlRequest *request);

/**
 * pb_control_request_ref:
 * @request: a request
 *
 * Returns: (transfer full): @request, for handlers that answer later
 *
 * Since: ABI 1.0
 */
PB_API PbControlRequest *pb_control_request_ref (PbControlRequest *request);

/**
 * pb_control_request_unref:
 * @request: (transfer full): a request
 *
 * Since: ABI 1.0
 */
PB_API void pb_control_request_unref (PbControlRequest *request);

/**
 * pb_control_request_reply:
 * @request: a request
 * @data: (nullable) (transfer floating): structured result for `--json`
 * @text: (nullable): the result as people read it (may span lines)
 *
 * Answers with success.
 *
 * Since: ABI 1.0
 */
PB_API void pb_control_request_reply (PbControlRequest *request, GVariant *data, const char *text);

/**
 * pb_control_request_fail:
 * @request: a request
 * @format: printf() format of a one-line message ("no such user: bob")
 * @...: arguments
 *
 * Answers with an error; `pillarbox` prints it and exits with status 1.
 *
 * Since: ABI 1.0
 */
PB_API void pb_control_request_fail (PbControlRequest *request, const char *format, ...) G_GNUC_PRINTF (2, 3);

/**
 * PbCommandResultFunc:
 * @ok: whether the command succeeded
 * @data: (nullable) (transfer none): its structured result (what `--json` prints)
 * @text: (nullable): its result as people read it, or on failure the one-line error
 * @user_data: as given to pb_module_call_command()
 *
 * Receives the answer of a command called from inside the daemon.
 *
 * Since: ABI 1.1
 */
typedef void (*PbCommandResultFunc) (gboolean ok, GVariant *data, const char *text, gpointer user_data);

/**
 * pb_module_call_command:
 * @module: the calling module
 * @command: a command's name ("status", "sessions", "queue")
 * @args: (nullable): %NULL-terminated arguments after the name
 * @done: receives the answer, exactly once; it may run before this returns
 * @user_data: for @done
 *
 * Runs a control command of the module's own configuration as if
 * `pillarbox` had sent it, without standard input. Modules that report on
 * the server (metrics, the status monitor) read what the commands already
 * know instead of reaching into the core. An unknown command fails with
 * the same message the client would print.
 *
 * Since: ABI 1.1
 */
PB_API void pb_module_call_command (PbModule *module, const char *command, const char *const *args,
                                    PbCommandResultFunc done, gpointer user_data);

PB_END_DECLS

#endif /* PILLARBOX_PB_CONTROL_H */
