/* SPDX-License-Identifier: MIT */
/* pop3-server internals: configuration, instance, session, the pure parser and the streaming jobs. */
#ifndef PILLARBOX_POP3_PRIVATE_H
#define PILLARBOX_POP3_PRIVATE_H

#include <pillarbox/pillarbox.h>

G_BEGIN_DECLS

/* ---- configuration and instance (pop3-module.c) ------------------------ */

typedef struct {
  char **pop3_listen;
  char **pop3s_listen;
  gboolean auth_plaintext;
  gboolean apop;
  gint64 idle_timeout;        /* milliseconds */
  gint64 max_line_length;     /* octets including CRLF */
  char *expire;               /* CAPA EXPIRE argument: "NEVER" or days */
  char *implementation;       /* CAPA IMPLEMENTATION text; empty: not advertised */
} Pop3Config;

#define POP3_ERROR (pop3_error_quark ())
GQuark pop3_error_quark (void);

/* The set of mailboxes that have a session in TRANSACTION or UPDATE state.
 * Shared by every instance of the module alive in the process (see
 * pop3-module.c: during a reload the old and the new instance serve
 * clients side by side, and both must see the same locks). */
typedef struct _Pop3Locks Pop3Locks;

Pop3Locks *pop3_locks_get (void);
Pop3Locks *pop3_locks_ref (Pop3Locks *locks);
void pop3_locks_unref (Pop3Locks *locks);
/* TRUE when MAILBOX was free and is now held by the caller. */
gboolean pop3_locks_acquire (Pop3Locks *locks, const char *mailbox);
void pop3_locks_release (Pop3Locks *locks, const char *mailbox);

/* One instance of the module. */
typedef struct {
  PbModule *module;
  const Pop3Config *config;
  Pop3Locks *locks;
  /* counters, for logs */
  guint64 sessions;
  guint64 logins;
  guint64 login_failures;
} Pop3Server;

/* ---- sessions (pop3-session.c) ------------------------------------------ */

typedef enum {
  POP3_STATE_AUTHORIZATION,   /* RFC 1939 §4 */
  POP3_STATE_TRANSACTION,     /* RFC 1939 §5 */
  POP3_STATE_UPDATE           /* RFC 1939 §6 */
} Pop3State;

/* One message of the maildrop as it was when the session opened it.
 * Strings point into the session's string chunk. */
typedef struct {
  guint64 uid;
  const char *message_id;
  gint64 size;                /* delivery headers + message, CRLF line ends, before stuffing */
  const char *headers;        /* delivery headers */
  gsize headers_len;
  gboolean deleted;
} Pop3Msg;

typedef struct _Pop3Job Pop3Job;
typedef struct _Pop3Prefetch Pop3Prefetch;
typedef struct _Pop3Session Pop3Session;

struct _Pop3Session {
  gint ref;
  Pop3Server *srv;
  Pop3Locks *locks;           /* a reference: a lock may outlive the connection */
  PbSession *session;         /* NULL once the connection has closed */
  PbConn *conn;               /* NULL once the connection has closed */
  char id[24];                /* the session id, for logs after close */
  Pop3State state;

  gboolean busy;              /* an asynchronous step is under way: input waits */
  gboolean tls_pending;       /* STLS handshake under way */
  gboolean sasl_pending;      /* AUTH PLAIN: the next line is the client's response */
  gboolean shutting_down;     /* the server stops: end at the next command boundary */
  gboolean closing;           /* pb_conn_close() was called */
  gboolean pumping;           /* inside the command loop */

  char *user_arg;             /* USER argument, for PASS */
  char *login_user;           /* the name being tried */
  const char *login_mech;     /* "USER" or "PLAIN" */
  char *login_canonical;      /* set when the password was right */
  guint auth_failures;
  guint bad_commands;

  /* TRANSACTION */
  char *mailbox;              /* locked mailbox (canonical user name) */
  GStringChunk *strings;      /* the messages' ids and delivery headers */
  Pop3Msg *msgs;
  guint n_msgs;
  guint n_deleted;
  gint64 octets;              /* of the messages not marked deleted */
  guint retrieved;
  guint deleted;              /* removed at QUIT */

  Pop3Job *job;               /* the multi-line response being sent, or NULL */
  GQueue prefetch;            /* Pop3Prefetch: first chunks of the messages after the last RETR */
};

Pop3Session *pop3_session_ref (Pop3Session *ps);
/* Orders messages by UID, for qsort(). */
int pop3_msg_compare (const void *a, const void *b);
void pop3_session_unref (Pop3Session *ps);
/* Listener callbacks. */
void pop3_session_accept (PbSession *session, PbConn *conn, gpointer user_data);
char *pop3_format_refusal (const PbVerdict *verdict, gpointer user_data);
void pop3_session_shutdown (PbSession *session, gpointer user_data);
/* Resumes reading commands once an asynchronous step has finished. */
void pop3_session_resume (Pop3Session *ps);
/* Replies "+OK TEXT" / "-ERR TEXT". */
void pop3_reply (Pop3Session *ps, gboolean ok, const char *format, ...) G_GNUC_PRINTF (3, 4);

/* ---- multi-line responses with flow control (pop3-retr.c) -------------- */

/* Output queued beyond this stops producing until `drained`. */
#define POP3_OUTPUT_HIGH (256 * 1024)
/* Octets asked of storage per read. */
#define POP3_READ_CHUNK (64 * 1024)
/* Read-ahead after a RETR: at most this many messages ... */
#define POP3_PREFETCH_MESSAGES 8
/* ... and about this many octets per session. */
#define POP3_PREFETCH_OCTETS (256 * 1024)

/* Starts RETR (TOP with LINES >= 0) of message INDEX (0-based): the +OK
 * line is sent once the first chunk has been read, so a storage failure
 * can still be answered with -ERR. */
void pop3_job_start_retr (Pop3Session *ps, guint index, gint64 lines);
/* Starts LIST or UIDL without an argument. */
void pop3_job_start_listing (Pop3Session *ps, gboolean uidl);
/* Continues the current job after `drained`. */
void pop3_job_continue (Pop3Session *ps);
void pop3_job_free (Pop3Job *job);
/* Forgets every read-ahead (QUIT, close). */
void pop3_prefetch_drop (Pop3Session *ps);

/* ---- the pure parser (pop3-parse.c) ------------------------------------- */

typedef enum {
  POP3_CMD_UNKNOWN = 0,
  POP3_CMD_USER,
  POP3_CMD_PASS,
  POP3_CMD_APOP,
  POP3_CMD_AUTH,
  POP3_CMD_STLS,
  POP3_CMD_CAPA,
  POP3_CMD_QUIT,
  POP3_CMD_STAT,
  POP3_CMD_LIST,
  POP3_CMD_RETR,
  POP3_CMD_DELE,
  POP3_CMD_NOOP,
  POP3_CMD_RSET,
  POP3_CMD_TOP,
  POP3_CMD_UIDL
} Pop3CmdKind;

/* Which states a command is valid in. */
#define POP3_IN_AUTHORIZATION (1u << POP3_STATE_AUTHORIZATION)
#define POP3_IN_TRANSACTION (1u << POP3_STATE_TRANSACTION)

typedef enum {
  POP3_PARSE_OK = 0,
  POP3_PARSE_EMPTY,           /* an empty line */
  POP3_PARSE_BAD_CHAR,        /* NUL, CR or another control character */
  POP3_PARSE_UNKNOWN,         /* not a POP3 command */
  POP3_PARSE_BAD_ARGS         /* the wrong number of arguments */
} Pop3ParseResult;

#define POP3_MAX_ARGS 2

typedef struct {
  Pop3CmdKind kind;
  const char *name;           /* canonical upper-case keyword, or NULL */
  guint states;               /* POP3_IN_* where it is valid */
  guint argc;
  const char *argv[POP3_MAX_ARGS];  /* point into the parsed line */
  const char *rest;           /* PASS: everything after "PASS " verbatim */
} Pop3Command;

/* Strips the line terminator (CRLF or LF) in place: returns the new length. */
gsize pop3_line_chomp (char *line, gsize len);
/* Parses one command line (NUL-terminated, without its terminator),
 * splitting it in place. */
Pop3ParseResult pop3_command_parse (char *line, Pop3Command *cmd);
/* A message number or line count: digits only, at most MAX. */
gboolean pop3_parse_number (const char *s, guint64 max, guint64 *out);

/* RFC 4616 PLAIN: decodes base64 "authzid NUL authcid NUL passwd".
 * Returns FALSE for bad base64 or a malformed message. Outputs are
 * NUL-terminated; *passwd is wiped and freed by the caller. */
gboolean pop3_sasl_plain_decode (const char *b64, char **authzid, char **authcid, char **passwd);

/* Checks an EXPIRE setting: "NEVER" or a number of days (RFC 2449 §6.7). */
gboolean pop3_expire_is_valid (const char *value);

typedef struct {
  gboolean transaction;       /* in TRANSACTION state */
  gboolean user;              /* USER/PASS may be used now */
  gboolean sasl;              /* AUTH PLAIN may be used now */
  gboolean stls;              /* STLS may be used now */
  const char *expire;
  const char *implementation; /* NULL or empty: not advertised */
} Pop3CapaInfo;

/* The whole CAPA response, "+OK ...\r\n" to ".\r\n" (RFC 2449 §5). */
char *pop3_capa_format (const Pop3CapaInfo *info);

/* Byte-stuffing of a multi-line response (RFC 1939 §3): a line that
 * begins with '.' is sent with one more '.'; line starts carry over
 * between chunks. */
typedef struct {
  gboolean at_line_start;
} Pop3Stuffer;

typedef void (*Pop3EmitFunc) (const void *data, gsize len, gpointer user_data);

void pop3_stuffer_init (Pop3Stuffer *st);
/* Passes DATA to EMIT in spans, with the extra dots inserted. */
void pop3_stuffer_feed (Pop3Stuffer *st, const guint8 *data, gsize len, Pop3EmitFunc emit, gpointer user_data);

/* TOP (RFC 1939 §7): the header section, the blank line, then LINES
 * lines of the body. */
typedef struct {
  guint64 lines_left;
  gboolean in_headers;
  gboolean at_line_start;
  gboolean line_is_cr;        /* the current line so far is just "\r" */
  gboolean done;
} Pop3TopFilter;

void pop3_top_filter_init (Pop3TopFilter *tf, guint64 lines);
/* Returns how many octets of DATA belong to the response; sets done
 * when nothing after them does. */
gsize pop3_top_filter_feed (Pop3TopFilter *tf, const guint8 *data, gsize len);

G_END_DECLS

#endif /* PILLARBOX_POP3_PRIVATE_H */
