/* SPDX-License-Identifier: MIT */
/* status-monitor: shared declarations of the line format, the hub that feeds monitor clients, and the sessions. */
#ifndef PILLARBOX_SM_PRIVATE_H
#define PILLARBOX_SM_PRIVATE_H

#include <pillarbox/pillarbox.h>

G_BEGIN_DECLS

typedef struct {
  char **listen;
  char **allow;
  char **administrators;
  gint64 max_clients;
  gint64 max_line_length;
  gint64 login_timeout;
  gint64 idle_timeout;
  gint64 max_output;
  gint64 poll_interval;
  gint64 summary_interval;
  gint64 history_lines;
} SmConfig;

#define SM_ERROR (sm_error_quark ())
GQuark sm_error_quark (void);

/* ---- sm-line.c: the wire format (pure, unit-tested) ------------------------ */

/* Microsoft FILETIME (100 ns since 1601-01-01 UTC) of a g_get_real_time() value,
 * as the 16 upper-case hex digits of VPOP3's activity lines. */
char *sm_filetime_hex (gint64 real_usec);
/* The reverse; FALSE unless TEXT starts with 16 hex digits. */
gboolean sm_filetime_parse (const char *text, gint64 *real_usec);

/* Builds "T key=value key=value" lines; values are escaped with sm_escape_value(). */
GString *sm_line_begin (char type);
void sm_line_add (GString *line, const char *key, const char *value);
void sm_line_add_int (GString *line, const char *key, gint64 value);
/* Adds CRLF and returns the line (transfer full). */
char *sm_line_end (GString *line);

/* Percent-encodes space, '%', control octets and DEL (so a value is one token);
 * NULL or "" become "-", and a literal "-" becomes "%2D". */
char *sm_escape_value (const char *value);
/* The reverse; NULL on a malformed escape. "-" gives "". */
char *sm_unescape_value (const char *token);
/* Replaces CR, LF and other control characters (C0, DEL, C1) in free text by spaces,
 * and each octet of an invalid UTF-8 sequence by '?'. */
char *sm_clean_text (const char *text);

/* "0<FILETIME><text>\r\n" */
char *sm_activity_line (gint64 real_usec, const char *text);
/* "1<text>\r\n" */
char *sm_connection_status_line (const char *text);

/* A received update line, split: type and either free text (types 0 and 1)
 * or key=value fields (Pillarbox's types). */
typedef struct {
  char type;
  gint64 time;           /* type 0 */
  char *text;            /* types 0 and 1 */
  GHashTable *fields;    /* other types: key -> unescaped value */
} SmUpdate;

SmUpdate *sm_update_parse (const char *line, GError **error);
void sm_update_free (SmUpdate *update);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SmUpdate, sm_update_free)

typedef enum {
  SM_CMD_EMPTY,
  SM_CMD_UNKNOWN,
  SM_CMD_LOGIN,      /* LOGIN user password */
  SM_CMD_ALOGIN,     /* ALOGIN user digest (refused: see docs) */
  SM_CMD_CONNECT,    /* CONNECT [name], CONNECT-NOW [name] */
  SM_CMD_STATUS,
  SM_CMD_NOOP,
  SM_CMD_QUIT
} SmCommandKind;

typedef struct {
  SmCommandKind kind;
  char *verb;      /* as sent, upper-cased */
  char *arg1;      /* user name, connection name */
  char *arg2;      /* the rest of the line: password, digest */
  gboolean bad_args;
} SmCommand;

/* Parses one command line (terminator included or not). */
void sm_command_parse (const char *line, gsize len, SmCommand *cmd);
void sm_command_clear (SmCommand *cmd);

/* What the `status` command's data says, turned into lines. */
typedef struct {
  char *connection_status;   /* the '1' line */
  GPtrArray *connections;    /* 'C' lines */
  char *queue;               /* the 'Q' line, or NULL without storage */
  guint sessions;
  gint64 uptime;
  guint pending, deferred;
  guint n_connections;
} SmSnapshot;

SmSnapshot *sm_snapshot_from_status (GVariant *status);
void sm_snapshot_free (SmSnapshot *snap);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SmSnapshot, sm_snapshot_free)
/* The text of the '1' line for the `connections` array of `status`, at time NOW (unix seconds). */
char *sm_connection_status_text (GVariant *connections);
/* 'S' lines: one for each entry of the `sessions` command's data (event=present). */
GPtrArray *sm_session_lines (GVariant *sessions);
/* The 'Y' line. */
char *sm_summary_line (gint64 real_usec, const SmSnapshot *snap, guint monitors);
/* An ISO 8601 UTC time for unix seconds ("2026-11-22T14:15:00Z"); "" for 0 (a field shows "-"). */
char *sm_iso_time (gint64 unix_seconds);

/* ---- sm-hub.c: one per process, shared by every generation's instance ------ */

typedef struct _SmHub SmHub;
typedef struct _SmMonitor SmMonitor;
typedef struct _SmClient SmClient;

struct _SmMonitor {
  PbModule *module;
  const SmConfig *config;
  SmHub *hub;
  GPtrArray *allow;       /* GInetAddressMask * */
  gboolean started;
};

SmHub *sm_hub_get (void);
void sm_hub_unref (SmHub *hub);
void sm_hub_add_monitor (SmHub *hub, SmMonitor *mon);
void sm_hub_remove_monitor (SmHub *hub, SmMonitor *mon);
void sm_hub_add_client (SmHub *hub, SmClient *client);
void sm_hub_remove_client (SmHub *hub, SmClient *client);
guint sm_hub_count_clients (SmHub *hub);
/* TRUE when a logged-in client receives updates (lines are worth making). */
gboolean sm_hub_is_watched (SmHub *hub);
/* Sends LINE (with CRLF) to every client that receives updates. */
void sm_hub_broadcast (SmHub *hub, const char *line);
/* An activity line, broadcast and kept in the history. */
void sm_hub_activity (SmHub *hub, const char *format, ...) G_GNUC_PRINTF (2, 3);
/* Asks for a status refresh soon (coalesced): something changed. */
void sm_hub_kick (SmHub *hub);
/* Asks for a full status burst to CLIENT (after login, or STATUS). */
void sm_hub_request_burst (SmHub *hub, SmClient *client, gboolean with_history);
/* Arms or disarms the poll and summary timers after a client came or went. */
void sm_hub_update_timers (SmHub *hub);

/* ---- sm-session.c: one monitor client ---------------------------------------- */

void sm_client_accept (PbSession *session, PbConn *conn, gpointer user_data);
char *sm_client_format_refusal (const PbVerdict *verdict, gpointer user_data);
void sm_client_shutdown (PbSession *session, gpointer user_data);

SmClient *sm_client_ref (SmClient *client);
void sm_client_unref (SmClient *client);
/* TRUE when the client is logged in and has had its first burst. */
gboolean sm_client_is_live (SmClient *client);
gboolean sm_client_wants_burst (SmClient *client, gboolean *with_history);
/* Queues LINE, or disconnects a client whose unsent output would pass max-output. */
void sm_client_send (SmClient *client, const char *line);
/* The burst is ready: LINES (NULL-terminated), or ERROR when status failed. */
void sm_client_burst_done (SmClient *client, char **lines, const char *error);

G_END_DECLS

#endif /* PILLARBOX_SM_PRIVATE_H */
