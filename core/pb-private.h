/* SPDX-License-Identifier: MIT */
/* Core-internal declarations shared by the pieces of libpillarbox, pillarboxd and the tests. */
#ifndef PILLARBOX_PB_PRIVATE_H
#define PILLARBOX_PB_PRIVATE_H

#include <pillarbox/pillarbox.h>

/* Functions the daemon binary and the unit tests call but modules must not:
 * exported from libpillarbox (so one copy of core state exists even when
 * test fixtures are modules), declared only in uninstalled headers. */
#if defined(__GNUC__)
#define PB_PRIVATE __attribute__ ((visibility ("default")))
#else
#define PB_PRIVATE
#endif

G_BEGIN_DECLS

#define PB_CORE_ERROR (pb_core_error_quark ())

typedef enum {
  PB_CORE_ERROR_CONFIG,     /* a configuration file or value is wrong */
  PB_CORE_ERROR_MODULE,     /* a module could not be loaded or refused to start */
  PB_CORE_ERROR_REGISTER,   /* a registration was refused */
  PB_CORE_ERROR_RUNTIME     /* anything at run time */
} PbCoreError;

PB_PRIVATE GQuark pb_core_error_quark (void);

/* ---- TLS credentials (core/tls.c) ---------------------------------- */

typedef struct _PbTlsCreds PbTlsCreds;

/* Loads a PEM certificate chain and key. */
PB_PRIVATE PbTlsCreds *pb_tls_creds_load (const char *cert_file, const char *key_file, GError **error);
/* Loads DIR/tls/selfsigned.crt and .key, creating them first (key mode 0600)
 * when missing, for HOSTNAME. */
PB_PRIVATE PbTlsCreds *pb_tls_creds_ensure_self_signed (const char *state_dir, const char *hostname, GError **error);
PB_PRIVATE PbTlsCreds *pb_tls_creds_ref (PbTlsCreds *creds);
PB_PRIVATE void pb_tls_creds_unref (PbTlsCreds *creds);
/* "CN=..., expires 2027-11-22" for status output. */
PB_PRIVATE char *pb_tls_creds_describe (PbTlsCreds *creds);

/* ---- connections (core/conn.c) -------------------------------------- */

/* Wraps an accepted, connected socket fd (the conn takes ownership and
 * makes it non-blocking). With IMPLICIT, the TLS handshake runs first and
 * `readable` fires only once it is done. CREDS may be NULL (no TLS). */
PB_PRIVATE PbConn *pb_conn_new_server (int fd, PbTlsCreds *creds, PbTlsMode mode);
/* Wraps a connected client-side socket (transports, collectors, tests). */
PB_PRIVATE PbConn *pb_conn_new_client (int fd);
/* Ends the connection at once: no flush; `closed` fires with ERROR. */
PB_PRIVATE void pb_conn_abort (PbConn *conn, PbConnError code, const char *message);
/* Replaces the credentials used by later STARTTLS (SIGHUP reload). */
PB_PRIVATE void pb_conn_set_tls_creds (PbConn *conn, PbTlsCreds *creds);
/* Approximate heap bytes held by this connection (buffers, TLS state), for status. */
PB_PRIVATE gsize pb_conn_get_memory_use (PbConn *conn);

/* ---- control socket (core/control.c) -------------------------------- */

typedef struct _PbControlServer PbControlServer;

/* A command as the control server sees it: the spec plus who provides it. */
typedef struct {
  PbControlCommandSpec spec;   /* copied; strings owned by the provider */
  const char *provider;        /* "core" or the module's name */
} PbCommandEntry;

/* Finds a command by name in the running configuration; NULL if unknown. */
typedef const PbCommandEntry *(*PbCommandLookupFunc) (const char *name, gpointer user_data);
/* Lists every command (element type: const PbCommandEntry *), sorted by name; caller frees the array. */
typedef GPtrArray *(*PbCommandListFunc) (gpointer user_data);

/* Listens on PATH (mode 0600, replacing a stale socket, refusing a live one). */
PB_PRIVATE PbControlServer *pb_control_server_new (const char *path,
                                                   PbCommandLookupFunc lookup,
                                                   PbCommandListFunc list,
                                                   gpointer user_data,
                                                   GError **error);
/* Stops listening, unlinks the socket; requests in flight are answered and dropped. */
PB_PRIVATE void pb_control_server_free (PbControlServer *server);

/* Creates a request outside the socket (tests, built-ins). */
PB_PRIVATE PbControlRequest *pb_control_request_new (const char *const *args, const char *input,
                                                     void (*done) (PbControlRequest *req, gpointer ud),
                                                     gpointer user_data);
/* After the reply: ok, text, data (JSON node, transfer none) or error message. */
PB_PRIVATE gboolean pb_control_request_is_ok (PbControlRequest *request);
PB_PRIVATE const char *pb_control_request_get_text (PbControlRequest *request);
PB_PRIVATE const char *pb_control_request_get_error (PbControlRequest *request);
PB_PRIVATE GVariant *pb_control_request_get_data (PbControlRequest *request);

/* Whether an invocation of ENTRY with ARGS receives standard input. */
PB_PRIVATE gboolean pb_command_entry_reads_input (const PbCommandEntry *entry, const char *const *args);

/* The default socket path under a state directory. */
#define PB_CONTROL_SOCKET_NAME "control.sock"

/* ---- the daemon (core/daemon.c) -------------------------------------- */

PB_PRIVATE int pb_daemon_main (int argc, char **argv);

/* ---- logging (core/log.c) --------------------------------------------- */

/* Installs the structured-log writer: journald when stderr is the journal,
 * else one line per message on stderr; DEBUG only when VERBOSE. */
PB_PRIVATE void pb_log_init (gboolean verbose);
/* Before running in the background: log to the journal when it runs, else syslog (LOG_MAIL). */
PB_PRIVATE void pb_log_detach (void);

G_END_DECLS

#endif /* PILLARBOX_PB_PRIVATE_H */
