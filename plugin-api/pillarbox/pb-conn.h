/* SPDX-License-Identifier: MIT */
/* The core's buffered, non-blocking connection for line protocols, with TLS. */
#ifndef PILLARBOX_PB_CONN_H
#define PILLARBOX_PB_CONN_H

#include <gio/gio.h>
#include <pillarbox/pb-abi.h>
#include <pillarbox/pb-module.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-conn
 * @title: Connections
 *
 * A #PbConn is a TCP connection owned by the core and driven by the loop:
 * non-blocking reads into a bounded input buffer, buffered writes flushed
 * when the socket is writable, optional TLS (implicit, or upgraded with
 * pb_conn_start_tls()), and idle and total deadlines.
 *
 * Input is *pulled*: the protocol module calls pb_conn_read_line() (or
 * pb_conn_peek()/pb_conn_consume() for raw data) in a loop until it
 * returns %PB_CONN_AGAIN; then the `readable` handler fires once more
 * input, end of file or an error arrives. A module that is waiting for
 * something else (a policy verdict, a storage commit) simply stops
 * pulling; the core stops reading from the socket once the input buffer
 * is full, which pushes back on the client.
 *
 * Replies are queued with pb_conn_write() and sent when the loop next
 * runs, so replies to pipelined commands leave in one segment.
 *
 * All functions must be called on the loop thread.
 */

/**
 * PbConn:
 *
 * An opaque, reference-counted connection.
 *
 * Since: ABI 1.0
 */
typedef struct _PbConn PbConn;

/**
 * PbConnStatus:
 * @PB_CONN_LINE: a complete line was returned
 * @PB_CONN_AGAIN: no complete line is buffered; `readable` will fire
 * @PB_CONN_TOO_LONG: a line exceeded the limit; it was discarded up to and
 *   including its line feed (the client is told by the module)
 * @PB_CONN_EOF: the peer closed its side; no more input will come
 * @PB_CONN_ERROR: the connection failed (reset, TLS error, deadline);
 *   `closed` follows
 *
 * What pb_conn_read_line() found.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_CONN_LINE = 0,
  PB_CONN_AGAIN,
  PB_CONN_TOO_LONG,
  PB_CONN_EOF,
  PB_CONN_ERROR
} PbConnStatus;

/**
 * PbTlsMode:
 * @PB_TLS_NONE: plain text; the protocol may still offer STARTTLS
 * @PB_TLS_IMPLICIT: TLS from the first byte (SMTPS 465, POP3S 995)
 *
 * How a listener starts its connections.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_TLS_NONE = 0,
  PB_TLS_IMPLICIT
} PbTlsMode;

/**
 * PB_CONN_ERROR_DOMAIN:
 *
 * The #GError domain of connection errors.
 *
 * Since: ABI 1.0
 */
#define PB_CONN_ERROR_DOMAIN (pb_conn_error_quark ())

/**
 * PbConnError:
 * @PB_CONN_ERROR_CLOSED: the peer went away
 * @PB_CONN_ERROR_IDLE_TIMEOUT: no input within the idle timeout
 * @PB_CONN_ERROR_TOTAL_TIMEOUT: the session outlived its total timeout
 * @PB_CONN_ERROR_TLS: the TLS layer failed
 * @PB_CONN_ERROR_IO: a socket error
 * @PB_CONN_ERROR_SHUTDOWN: the server is stopping
 *
 * Why a connection ended.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_CONN_ERROR_CLOSED,
  PB_CONN_ERROR_IDLE_TIMEOUT,
  PB_CONN_ERROR_TOTAL_TIMEOUT,
  PB_CONN_ERROR_TLS,
  PB_CONN_ERROR_IO,
  PB_CONN_ERROR_SHUTDOWN
} PbConnError;

/**
 * pb_conn_error_quark:
 *
 * Returns: the #GQuark of %PB_CONN_ERROR_DOMAIN
 *
 * Since: ABI 1.0
 */
PB_API GQuark pb_conn_error_quark (void);

/**
 * PbConnHandlers:
 * @struct_size: sizeof (PbConnHandlers)
 * @readable: more input, end of file or an error is waiting: pull again
 * @drained: (nullable): the output queue fell below the low-water mark
 *   (32 KiB): a module sending a large body writes more now
 * @closed: the connection is finished (after pb_conn_close() completes, or
 *   on error with @error set); no handler fires after this one. The
 *   module releases its state here.
 *
 * The callbacks a protocol module installs with pb_conn_set_handlers().
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  void (*readable) (PbConn *conn, gpointer user_data);
  void (*drained) (PbConn *conn, gpointer user_data);
  void (*closed) (PbConn *conn, const GError *error, gpointer user_data);
} PbConnHandlers;

/**
 * pb_conn_ref:
 * @conn: a connection
 *
 * Returns: (transfer full): @conn
 *
 * Since: ABI 1.0
 */
PB_API PbConn *pb_conn_ref (PbConn *conn);

/**
 * pb_conn_unref:
 * @conn: (transfer full): a connection
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_unref (PbConn *conn);

/**
 * pb_conn_set_handlers:
 * @conn: a connection
 * @handlers: (nullable): the callbacks (copied), or %NULL to remove them
 * @user_data: passed to each
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_set_handlers (PbConn *conn, const PbConnHandlers *handlers, gpointer user_data);

/**
 * pb_conn_set_max_line:
 * @conn: a connection
 * @max_len: the longest line accepted, in octets including CRLF (>= 64)
 *
 * Lines longer than this are reported as %PB_CONN_TOO_LONG. The default
 * is 1000, RFC 5321 §4.5.3.1.4's limit for a command line.
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_set_max_line (PbConn *conn, gsize max_len);

/**
 * pb_conn_read_line:
 * @conn: a connection
 * @line: (out) (transfer none): the line, including its terminator (LF,
 *   usually preceded by CR); valid until the next call on @conn
 * @len: (out): its length in octets
 *
 * Takes the next complete line from the input buffer. A line ends at LF;
 * the module decides what a bare LF or a CR without LF means.
 *
 * Returns: what was found
 *
 * Since: ABI 1.0
 */
PB_API PbConnStatus pb_conn_read_line (PbConn *conn, const char **line, gsize *len);

/**
 * pb_conn_peek:
 * @conn: a connection
 * @data: (out) (transfer none): the buffered input
 *
 * Looks at the buffered input without consuming it (message bodies, BDAT
 * chunks). When it returns 0, call pb_conn_read_status() to tell waiting
 * from end of file.
 *
 * Returns: the number of octets at @data; 0 arms the `readable` handler
 *
 * Since: ABI 1.0
 */
PB_API gsize pb_conn_peek (PbConn *conn, const guint8 **data);

/**
 * pb_conn_consume:
 * @conn: a connection
 * @n: octets to drop from the front of the input buffer (at most what
 *   pb_conn_peek() reported)
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_consume (PbConn *conn, gsize n);

/**
 * pb_conn_read_status:
 * @conn: a connection
 *
 * Returns: %PB_CONN_AGAIN while the connection is open, else
 *   %PB_CONN_EOF or %PB_CONN_ERROR
 *
 * Since: ABI 1.0
 */
PB_API PbConnStatus pb_conn_read_status (PbConn *conn);

/**
 * pb_conn_write:
 * @conn: a connection
 * @data: octets to send
 * @len: how many
 *
 * Queues @data. Never blocks; the module watches
 * pb_conn_get_output_pending() and `drained` when it sends a lot.
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_write (PbConn *conn, const void *data, gsize len);

/**
 * pb_conn_printf:
 * @conn: a connection
 * @format: printf() format
 * @...: its arguments
 *
 * Queues formatted text.
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_printf (PbConn *conn, const char *format, ...) G_GNUC_PRINTF (2, 3);

/**
 * pb_conn_get_output_pending:
 * @conn: a connection
 *
 * Returns: octets queued but not yet accepted by the kernel
 *
 * Since: ABI 1.0
 */
PB_API gsize pb_conn_get_output_pending (PbConn *conn);

/**
 * pb_conn_close:
 * @conn: a connection
 *
 * Sends what is queued (for at most 10 seconds), ends TLS politely and
 * closes; then `closed` fires with no error. Input is ignored from now on.
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_close (PbConn *conn);

/**
 * PbConnTlsDoneFunc:
 * @conn: the connection
 * @error: (nullable): why the handshake failed, or %NULL
 * @user_data: as given
 *
 * The end of a TLS handshake started by pb_conn_start_tls(). On failure
 * the connection is closed and `closed` follows.
 *
 * Since: ABI 1.0
 */
typedef void (*PbConnTlsDoneFunc) (PbConn *conn, const GError *error, gpointer user_data);

/**
 * pb_conn_start_tls:
 * @conn: a server-side connection not yet under TLS
 * @done: called when the handshake ends
 * @user_data: passed to @done
 *
 * Upgrades the connection to TLS as a server (STARTTLS, STLS). Any input
 * already buffered is discarded first, so commands a client pipelined
 * after STARTTLS are never executed (RFC 3207 §4.2, RFC 2595 §3.1).
 * Queued output (the "220 Ready to start TLS" reply) is sent before the
 * handshake begins.
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_start_tls (PbConn *conn, PbConnTlsDoneFunc done, gpointer user_data);

/**
 * pb_conn_start_tls_client:
 * @conn: a client-side connection not yet under TLS (from pb_conn_connect())
 * @server_name: (nullable): the name to send as SNI and, with @verify, to check
 *   the certificate against
 * @verify: %TRUE to require a certificate that the system trusts for
 *   @server_name; %FALSE accepts any (opportunistic TLS, RFC 7435)
 * @done: called when the handshake ends
 * @user_data: passed to @done
 *
 * Upgrades a client connection to TLS (after STARTTLS or STLS was
 * accepted, or at once for implicit TLS). Input buffered before the
 * upgrade is discarded.
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_start_tls_client (PbConn *conn, const char *server_name, gboolean verify,
                                      PbConnTlsDoneFunc done, gpointer user_data);

/**
 * PbConnConnectFunc:
 * @conn: (transfer full) (nullable): the connected connection, or %NULL
 * @error: (nullable): why no address could be reached
 * @user_data: as given
 *
 * The end of pb_conn_connect(), on the loop thread, never from inside the call.
 *
 * Since: ABI 1.0
 */
typedef void (*PbConnConnectFunc) (PbConn *conn, const GError *error, gpointer user_data);

/**
 * pb_conn_connect:
 * @module: the calling module (its generation's resolver is used)
 * @host: a host name, an IPv4 address or an IPv6 address (without brackets)
 * @port: the TCP port
 * @timeout_ms: the most time one address may take to connect
 * @cancellable: (nullable): cancelling it stops the attempt; @done is then
 *   called with %G_IO_ERROR_CANCELLED
 * @done: called once
 * @user_data: passed to @done
 *
 * Opens a client connection for transports and collectors: resolves @host
 * through the core's resolver (A, then AAAA records) and tries each address
 * in turn until one accepts. The result is a plain connection; call
 * pb_conn_start_tls_client() for TLS.
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_connect (PbModule *module, const char *host, guint16 port, guint timeout_ms,
                             GCancellable *cancellable, PbConnConnectFunc done, gpointer user_data);

/**
 * pb_conn_can_start_tls:
 * @conn: a connection
 *
 * Returns: %TRUE when a certificate is loaded and the connection is not
 *   yet under TLS, so STARTTLS may be offered
 *
 * Since: ABI 1.0
 */
PB_API gboolean pb_conn_can_start_tls (PbConn *conn);

/**
 * pb_conn_is_tls:
 * @conn: a connection
 *
 * Returns: %TRUE once a TLS handshake has completed
 *
 * Since: ABI 1.0
 */
PB_API gboolean pb_conn_is_tls (PbConn *conn);

/**
 * pb_conn_get_tls_description:
 * @conn: a connection
 *
 * Returns: (transfer full) (nullable): e.g. "TLS1.3 TLS_AES_256_GCM_SHA384",
 *   for Received headers and logs; %NULL without TLS
 *
 * Since: ABI 1.0
 */
PB_API char *pb_conn_get_tls_description (PbConn *conn);

/**
 * pb_conn_get_peer_address:
 * @conn: a connection
 *
 * Returns: (transfer none): the client's address
 *
 * Since: ABI 1.0
 */
PB_API GInetSocketAddress *pb_conn_get_peer_address (PbConn *conn);

/**
 * pb_conn_get_local_address:
 * @conn: a connection
 *
 * Returns: (transfer none): the address the client connected to
 *
 * Since: ABI 1.0
 */
PB_API GInetSocketAddress *pb_conn_get_local_address (PbConn *conn);

/**
 * pb_conn_get_peer_ip:
 * @conn: a connection
 *
 * Returns: (transfer none): the client's IP address as text ("192.0.2.1", "2001:db8::1");
 *   IPv4-mapped IPv6 addresses are shown as IPv4
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_conn_get_peer_ip (PbConn *conn);

/**
 * pb_conn_set_idle_timeout:
 * @conn: a connection
 * @ms: milliseconds without input before the connection is ended with
 *   %PB_CONN_ERROR_IDLE_TIMEOUT; 0 disables
 *
 * Only counts while the module waits for input (pulling returned
 * %PB_CONN_AGAIN): time the module spends on a policy check or a commit
 * is not the client's idleness. Since ABI 1.2 it also counts while output
 * waits that the client takes none of, from the last octet it took: a
 * module that stops reading while its replies pile up (back-pressure) does
 * not wait for such a client for ever.
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_set_idle_timeout (PbConn *conn, guint ms);

/**
 * pb_conn_set_total_timeout:
 * @conn: a connection
 * @ms: milliseconds from now after which the connection is ended with
 *   %PB_CONN_ERROR_TOTAL_TIMEOUT; 0 disables
 *
 * Since: ABI 1.0
 */
PB_API void pb_conn_set_total_timeout (PbConn *conn, guint ms);

PB_END_DECLS

#endif /* PILLARBOX_PB_CONN_H */
