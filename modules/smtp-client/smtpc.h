/* SPDX-License-Identifier: MIT */
/* The SMTP client shared by relay-sender and mx-sender: replies, dot-stuffing, sessions, delivery jobs. */
#ifndef PILLARBOX_SMTPC_H
#define PILLARBOX_SMTPC_H

/*
 * This code is compiled into each transport module (it is not a library of
 * its own): every module gets its own copy, its own log domain, and talks
 * to the core only through <pillarbox/pillarbox.h>.
 *
 * Layers, bottom up:
 *
 *  - pure parts (smtpc-reply.c, smtpc-body.c): the reply parser, fed any
 *    number of octets at a time; EHLO capabilities; the dot-stuffer that
 *    turns a stored body into DATA octets (RFC 5321 §4.5.2) with CRLF line
 *    ends only, across chunk boundaries.
 *  - SmtpcSession (smtpc-session.c): one connection to one server over a
 *    PbConn: greeting, EHLO (HELO fallback), STARTTLS or implicit TLS, AUTH
 *    PLAIN/LOGIN, then transactions (PIPELINING, SIZE, DSN, per-recipient
 *    results, body streaming), RSET, QUIT; a deadline per wait (RFC 5321
 *    §4.5.3.2).
 *  - SmtpcClient (smtpc-job.c): a module's connection cache (idle sessions
 *    per key, at most N connections per key, waiters) and delivery jobs:
 *    one PbDelivery (or some of its recipients) tried against an ordered
 *    list of targets (relay servers, or MX hosts' addresses), split into
 *    transactions by the per-session caps, with a hook that lets the
 *    module refuse or shrink a transaction (relay-sender's periodic caps).
 *
 * Results handed to pb_delivery_set_result(): the code and enhanced code of
 * the remote reply (an enhanced code "X.0.0" is supplied when the server
 * gave none), and a text in the style administrators know from Postfix:
 *   "mx.example.org[192.0.2.1] said: 550 5.1.1 No such user (in reply to RCPT TO)"
 * Local failures are 4xx with a text saying what happened:
 *   "connection to mx.example.org[192.0.2.1]:25 failed: Connection refused"
 */

#include <pillarbox/pillarbox.h>

G_BEGIN_DECLS

#define SMTPC_ERROR (g_quark_from_static_string ("smtpc-error"))

/* ---- replies (smtpc-reply.c, pure) ----------------------------------- */

/* One reply: code, enhanced code (RFC 3463; NULL when the server gave
 * none), the text of each line without code, separator and enhanced code. */
typedef struct {
  guint code;
  char *enhanced;
  char **lines;
} SmtpcReply;

void smtpc_reply_free (SmtpcReply *reply);
/* "550 5.1.1 text of line one text of line two" (lines joined by a space),
 * at most SMTPC_MAX_REPLY_TEXT octets: longer text ends in "...". This is
 * the text results, bounces, `queue show` and logs get. */
char *smtpc_reply_to_string (const SmtpcReply *reply);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SmtpcReply, smtpc_reply_free)

/* Remote text made safe to store and show (a terminal, a bounce, a log):
 * printable ASCII (RFC 5321 §4.2's textstring) is kept, HT becomes a
 * space, and every other octet (controls, DEL, anything above 0x7e)
 * becomes \xHH. Appended to OUT; LEN < 0 means up to the NUL. The reply
 * parser applies it to every reply line. */
void smtpc_text_escape (GString *out, const char *text, gssize len);

/* The longest reply line accepted (RFC 5321 §4.5.3.1.5 says 512; servers
 * exceed it in texts), and the most lines and octets of one reply. */
#define SMTPC_MAX_REPLY_LINE 4096
#define SMTPC_MAX_REPLY_LINES 200
#define SMTPC_MAX_REPLY_SIZE (64 * 1024)
/* The most text of one reply kept for people (smtpc_reply_to_string()). */
#define SMTPC_MAX_REPLY_TEXT 1024

typedef enum {
  SMTPC_PARSE_MORE,   /* every octet given was used; the reply is not complete */
  SMTPC_PARSE_DONE,   /* a reply is complete: take it; octets after it were not used */
  SMTPC_PARSE_ERROR   /* not SMTP: the session must end */
} SmtpcParseStatus;

typedef struct {
  GString *line;       /* the line being assembled */
  GPtrArray *lines;    /* char *: text of the lines so far */
  guint code;
  char *enhanced;
  gsize size;
  SmtpcReply *done;    /* a complete reply, until taken */
  char *error;         /* why the input is not SMTP */
} SmtpcReplyParser;

void smtpc_reply_parser_init (SmtpcReplyParser *p);
void smtpc_reply_parser_clear (SmtpcReplyParser *p);
/* Drops any partial reply (after STARTTLS). */
void smtpc_reply_parser_reset (SmtpcReplyParser *p);
/* Consumes octets up to the end of one reply at most; *used says how many.
 * A line ends at LF; a CR before it is dropped. */
SmtpcParseStatus smtpc_reply_parser_feed (SmtpcReplyParser *p, const guint8 *data, gsize len, gsize *used);
/* (transfer full): the reply after SMTPC_PARSE_DONE. */
SmtpcReply *smtpc_reply_parser_take (SmtpcReplyParser *p);
/* The reason after SMTPC_PARSE_ERROR. */
const char *smtpc_reply_parser_get_error (SmtpcReplyParser *p);

/* ---- EHLO capabilities (smtpc-reply.c, pure) ------------------------- */

typedef struct {
  gboolean esmtp;            /* EHLO was answered 250 */
  gboolean pipelining;       /* RFC 2920 */
  gboolean starttls;         /* RFC 3207 */
  gboolean dsn;              /* RFC 3461 */
  gboolean size;             /* RFC 1870 */
  gint64 size_limit;         /* 0: none stated */
  gboolean eightbitmime;     /* RFC 6152 */
  gboolean smtputf8;         /* RFC 6531 */
  gboolean enhancedstatuscodes;
  gboolean auth_plain;       /* RFC 4954 mechanisms */
  gboolean auth_login;
  gboolean auth;             /* any AUTH keyword */
} SmtpcCaps;

void smtpc_caps_parse (SmtpcCaps *caps, const SmtpcReply *ehlo);

/* ---- the body (smtpc-body.c, pure) ----------------------------------- */

/* Turns message octets into DATA octets: every line end becomes CRLF (a
 * bare LF or bare CR included: they never reach the wire, RFC 5321 §2.3.8),
 * a line starting with "." gets another (§4.5.2). State carries across
 * chunks, so a CR at the end of one chunk and its LF at the start of the
 * next are one line end, and a "." after a chunk-final CRLF is stuffed. */
typedef struct {
  guint state;         /* SMTPC_STUFF_* in smtpc-body.c */
} SmtpcStuffer;

void smtpc_stuffer_init (SmtpcStuffer *st);
void smtpc_stuff (SmtpcStuffer *st, const guint8 *data, gsize len, GString *out);
/* Ends the last line if it has no line end, then appends ".\r\n". */
void smtpc_stuff_finish (SmtpcStuffer *st, GString *out);

/* ---- settings shared by both transports ------------------------------ */

/* The timeouts of RFC 5321 §4.5.3.2 as settings: a config struct @st with
 * gint64 members connect_timeout, command_timeout, data_init_timeout,
 * data_block_timeout and data_done_timeout. */
#define SMTPC_TIMEOUT_SETTINGS(st)                                                                         \
  PB_SETTING_DURATION (st, connect_timeout, "connect-timeout", "30s", 100, 600000,                         \
                       "How long one address may take to accept the TCP connection."),                   \
  PB_SETTING_DURATION (st, command_timeout, "command-timeout", "5m", 100, 3600000,                         \
                       "How long to wait for the greeting and for the reply to EHLO, STARTTLS, AUTH, "    \
                       "MAIL, RCPT, RSET and QUIT (RFC 5321 §4.5.3.2: 5 minutes)."),                     \
  PB_SETTING_DURATION (st, data_init_timeout, "data-init-timeout", "2m", 100, 3600000,                     \
                       "How long to wait for the 354 reply to DATA (RFC 5321 §4.5.3.2.3: 2 minutes)."),  \
  PB_SETTING_DURATION (st, data_block_timeout, "data-block-timeout", "3m", 100, 3600000,                   \
                       "How long sending the message may make no progress (RFC 5321 §4.5.3.2.4: "       \
                       "3 minutes)."),                                                                    \
  PB_SETTING_DURATION (st, data_done_timeout, "data-done-timeout", "10m", 100, 3600000,                    \
                       "How long to wait for the reply to the final \".\" (RFC 5321 §4.5.3.2.6: "         \
                       "10 minutes).")

/* "HOST:PORT" or "[V6]:PORT" (the settings' canonical endpoint) into its parts. */
gboolean smtpc_split_endpoint (const char *endpoint, char **host, guint16 *port);

/* ---- sessions (smtpc-session.c) -------------------------------------- */

typedef enum {
  SMTPC_TLS_NONE = 0,        /* plain text; STARTTLS never sent */
  SMTPC_TLS_OPPORTUNISTIC,   /* STARTTLS when offered; plain text otherwise (RFC 7435) */
  SMTPC_TLS_STARTTLS,        /* STARTTLS required */
  SMTPC_TLS_IMPLICIT         /* TLS from the first octet (RFC 8314) */
} SmtpcTlsMode;

typedef enum {
  SMTPC_AUTH_NONE = 0,
  SMTPC_AUTH_AUTO,           /* PLAIN if offered, else LOGIN; none when the server offers neither */
  SMTPC_AUTH_PLAIN,
  SMTPC_AUTH_LOGIN
} SmtpcAuthMode;

/* Timeouts in milliseconds (RFC 5321 §4.5.3.2). */
typedef struct {
  gint64 connect;
  gint64 command;            /* greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, RSET, QUIT (5 min) */
  gint64 data_init;          /* the 354 to DATA (2 min) */
  gint64 data_block;         /* progress while sending the body (3 min) */
  gint64 data_done;          /* the reply to the final "." (10 min) */
} SmtpcTimeouts;

/* Where and how to connect. Strings are copied by whoever keeps one. */
typedef struct {
  char *host;                /* the server's name: SNI, certificate check, logs */
  char *address;             /* what to connect to: an IP address, or a name resolved by the core */
  guint16 port;
  SmtpcTlsMode tls;
  gboolean tls_verify;       /* check the certificate against the system's trust and host */
  SmtpcAuthMode auth;
  char *user;                /* NULL: no authentication */
  char *password;
  gboolean auth_without_tls; /* send credentials over plain text too */
  char *helo_name;
  SmtpcTimeouts timeouts;
} SmtpcEndpoint;

void smtpc_endpoint_copy (SmtpcEndpoint *dst, const SmtpcEndpoint *src);
void smtpc_endpoint_clear (SmtpcEndpoint *ep);

typedef struct _SmtpcSession SmtpcSession;

/* The outcome for one recipient. */
typedef struct {
  guint code;                /* 0: none yet */
  char *enhanced;
  char *text;
  /* A 4xx that another server might not give (a refusal, a lost
   * connection before the final "."): the job tries the next target. */
  gboolean try_next;
  /* A 4xx from a cap of our own (no server was asked): when it may go (unix s). */
  gint64 retry_at;
} SmtpcResult;

void smtpc_result_set (SmtpcResult *r, guint code, const char *enhanced, const char *text, gboolean try_next);
void smtpc_result_clear (SmtpcResult *r);

/* Reads the stored message like pb_store_message_read(). */
typedef void (*SmtpcBodyReadFunc) (gpointer source, gint64 offset, gsize max, PbStoreReadFunc done,
                                   gpointer user_data);

/* One mail transaction: borrowed strings, valid until the sent callback. */
typedef struct {
  const char *queue_id;
  const char *mail_from;     /* "" for the null sender */
  guint n_rcpts;
  const char *const *rcpts;
  const char *const *notify; /* (nullable) per recipient; NULL entries: none */
  const char *const *orcpt;
  const char *ret;           /* (nullable) */
  const char *envid;         /* (nullable) */
  gint64 size;
  SmtpcBodyReadFunc read;
  gpointer read_source;
  SmtpcResult *results;      /* n_rcpts, filled by the session */
  guint accepted;            /* recipients the server took with the message */
  gboolean delivered;        /* the final "." was answered 2xx */
} SmtpcTransaction;

/* On failure, @failure says why (a 4xx or 5xx result) and the session is
 * dead: unref it. @tls_failed tells a failed TLS handshake (an
 * opportunistic retry without TLS may help); @unreachable a failure to
 * connect at all. */
typedef void (*SmtpcOpenFunc) (SmtpcSession *s, const SmtpcResult *failure, gboolean tls_failed,
                               gboolean unreachable, gpointer user_data);
typedef void (*SmtpcSentFunc) (SmtpcSession *s, SmtpcTransaction *t, gpointer user_data);
typedef void (*SmtpcLostFunc) (SmtpcSession *s, gpointer user_data);

/* Connects, reads the greeting, says EHLO, starts TLS and authenticates as
 * @ep says; @done is called once, from the loop. */
SmtpcSession *smtpc_session_open (PbModule *module, const SmtpcEndpoint *ep, const char *log_domain,
                                  SmtpcOpenFunc done, gpointer user_data);
SmtpcSession *smtpc_session_ref (SmtpcSession *s);
void smtpc_session_unref (SmtpcSession *s);
/* Runs one transaction on an open, idle session; @done is called once,
 * from the loop, with every recipient's result set. */
void smtpc_session_send (SmtpcSession *s, SmtpcTransaction *t, SmtpcSentFunc done, gpointer user_data);
/* While idle: @lost is called if the server closes or speaks unasked. */
void smtpc_session_watch_idle (SmtpcSession *s, SmtpcLostFunc lost, gpointer user_data);
/* Says QUIT and closes (politely, in the background). No callback follows. */
void smtpc_session_quit (SmtpcSession *s);
/* Closes at once. No callback follows. */
void smtpc_session_abort (SmtpcSession *s);
gboolean smtpc_session_is_usable (SmtpcSession *s);
guint smtpc_session_get_messages (SmtpcSession *s);
guint smtpc_session_get_recipients (SmtpcSession *s);
const SmtpcCaps *smtpc_session_get_caps (SmtpcSession *s);
gboolean smtpc_session_is_tls (SmtpcSession *s);
/* "host[address]:port" */
const char *smtpc_session_get_peer (SmtpcSession *s);

/* ---- delivery jobs and the connection cache (smtpc-job.c) ------------ */

/* One place to try, in order. */
typedef struct {
  SmtpcEndpoint ep;
  char *key;                   /* connection cache key: sessions are shared between equal keys */
  char *label;                 /* for logs and cap texts ("relay isp1", "mx1.example.org") */
  guint max_connections;       /* per key; 0: unlimited */
  guint max_messages_per_session;     /* 0: unlimited */
  guint max_recipients_per_message;   /* 0: unlimited */
  guint max_recipients_per_session;   /* 0: unlimited */
  gint64 reuse_time;           /* ms an idle session is kept for the next message; 0: QUIT at once */
  gpointer cap_data;           /* for the cap hooks */
} SmtpcTarget;

SmtpcTarget *smtpc_target_new (void);
void smtpc_target_free (SmtpcTarget *t);

/* A module's veto over transactions (relay-sender's periodic caps).
 * reserve: how many of @wanted recipients may go in one more message now
 * (0: none, with *why set to the reason, a 4xx text, and *retry_at to the
 * unix time a place frees, or 0 when unknown); what it grants is
 * held until settle, so parallel sessions cannot overshoot together.
 * settle: the transaction ended; @delivered says whether the server took
 * the message, @accepted with how many recipients. */
typedef struct {
  guint (*reserve) (gpointer data, SmtpcTarget *t, guint wanted, char **why, gint64 *retry_at);
  void (*settle) (gpointer data, SmtpcTarget *t, guint granted, gboolean delivered, guint accepted);
  gpointer data;
} SmtpcCapHooks;

typedef struct _SmtpcClient SmtpcClient;

SmtpcClient *smtpc_client_new (PbModule *module, const char *log_domain, const SmtpcCapHooks *hooks);
/* Ends every job (recipients without a result are retried later: the core
 * completes them as such) and closes every connection. */
void smtpc_client_free (SmtpcClient *client);

typedef void (*SmtpcJobDoneFunc) (gpointer user_data);

/* Delivers recipients @indexes (n of them) of @delivery through @targets
 * (transfer full, SmtpcTarget *, tried in order), setting each one's result
 * with pb_delivery_set_result(); @done follows from the loop, never from
 * inside this call. Recipients get 4xx when every target failed, with the
 * last failure's text. The caller completes the delivery. */
void smtpc_client_deliver (SmtpcClient *client, PbDelivery *delivery, const guint *indexes, guint n,
                           GPtrArray *targets, SmtpcJobDoneFunc done, gpointer user_data);
/* How long a target that could not be reached is skipped while others
 * remain (a dead host costs every message a connect timeout otherwise). */
#define SMTPC_DOWN_TIME_MS (60 * 1000)

G_END_DECLS

#endif /* PILLARBOX_SMTPC_H */
