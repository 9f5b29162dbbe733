/* SPDX-License-Identifier: MIT */
/* smtp-server internals shared by its files: settings, session and transaction state, parser API. */
#ifndef PILLARBOX_SMTP_PRIVATE_H
#define PILLARBOX_SMTP_PRIVATE_H

#include <pillarbox/pillarbox.h>

G_BEGIN_DECLS

/* ---- settings (smtp-module.c) ---------------------------------------- */

typedef enum {
  SMTP_BARE_LF_NORMALISE = 0,
  SMTP_BARE_LF_REJECT
} SmtpBareLfPolicy;

typedef struct {
  char **smtp_listen;
  char **submission_listen;
  char **smtps_listen;
  gboolean require_auth;
  char **trusted_networks;
  gboolean auth_plaintext;
  gboolean own_addresses_only;
  gint64 max_message_size;
  gint64 max_recipients;
  gint64 max_line_length;
  gint64 command_timeout;
  gint64 data_timeout;
  gint64 max_errors;
  gint64 junk_command_limit;
  char **refuse_helo;
  gboolean check_helo_syntax;
  char **vrfy_expn_from;
  gint bare_lf;
  char *banner;
} SmtpConfig;

/* ---- replies --------------------------------------------------------- */

/* A reply as data (STYLE.md): code, RFC 3463 enhanced code, text. */
typedef struct {
  guint code;
  const char *enhanced;
  const char *text;
} SmtpReply;

/* ---- command parsing (smtp-parse.c, pure) ---------------------------- */

typedef enum {
  SMTP_CMD_UNKNOWN = 0,
  SMTP_CMD_HELO,
  SMTP_CMD_EHLO,
  SMTP_CMD_MAIL,
  SMTP_CMD_RCPT,
  SMTP_CMD_DATA,
  SMTP_CMD_BDAT,
  SMTP_CMD_RSET,
  SMTP_CMD_NOOP,
  SMTP_CMD_QUIT,
  SMTP_CMD_HELP,
  SMTP_CMD_VRFY,
  SMTP_CMD_EXPN,
  SMTP_CMD_STARTTLS,
  SMTP_CMD_AUTH
} SmtpCommandKind;

/* What the command table says about a verb. */
typedef enum {
  /* Cheap and transaction-free: counts towards junk-command-limit (as
   * Postfix's smtpd_junk_command_limit counts NOOP, RSET, VRFY, ETRN). */
  SMTP_VERB_JUNK = 1 << 0
} SmtpVerbFlags;

/* What a command line said, pointing into the caller's (NUL-terminated) copy. */
typedef struct {
  SmtpCommandKind kind;
  guint flags;          /* SmtpVerbFlags */
  const char *verb;     /* as typed, NUL-terminated in place */
  char *args;           /* after the verb and its space, "" when none */
} SmtpCommand;

/* Strips the line ending; tells how the line ended. LINE must be
 * writable and LEN long (the terminator included). Returns FALSE for a
 * line the session must refuse (NUL or CR inside). */
typedef enum {
  SMTP_EOL_CRLF,
  SMTP_EOL_LF,          /* bare LF: RFC 5321 §2.3.8 says CRLF */
  SMTP_EOL_NONE
} SmtpEol;

gboolean smtp_line_chomp (char *line, gsize *len, SmtpEol *eol);
void smtp_parse_command (char *line, SmtpCommand *cmd);

/* MAIL FROM / RCPT TO with their ESMTP parameters (RFC 5321 §4.1.2, §4.1.1.11). */
typedef enum {
  SMTP_BODY_NONE = 0,
  SMTP_BODY_7BIT,
  SMTP_BODY_8BITMIME
} SmtpBody;

typedef struct {
  char *address;        /* without brackets or source route; "" for <> (g_free) */
  gint64 size;          /* SIZE=, -1 when absent */
  SmtpBody body;
  gboolean smtputf8;
  char *ret;            /* "FULL" / "HDRS" or NULL */
  char *envid;          /* xtext as received, or NULL */
  char *auth;           /* AUTH= as received (RFC 4954 §5), or NULL */
} SmtpMailArgs;

typedef struct {
  char *address;
  char *notify;         /* normalised upper case, or NULL */
  char *orcpt;          /* as received, or NULL */
} SmtpRcptArgs;

/* Flags that shape parsing: what the session allows. */
typedef struct {
  gboolean esmtp;       /* EHLO was used: parameters allowed */
  gboolean smtputf8;    /* the transaction is SMTPUTF8 (RCPT) */
} SmtpParseContext;

gboolean smtp_parse_mail (const char *args, const SmtpParseContext *ctx, SmtpMailArgs *out, SmtpReply *error);
gboolean smtp_parse_rcpt (const char *args, const SmtpParseContext *ctx, SmtpRcptArgs *out, SmtpReply *error);
void smtp_mail_args_clear (SmtpMailArgs *args);
void smtp_rcpt_args_clear (SmtpRcptArgs *args);
gboolean smtp_parse_bdat (const char *args, gint64 *size, gboolean *last);
gboolean smtp_helo_syntax_ok (const char *name);
gboolean smtp_helo_chars_ok (const char *name);
gboolean smtp_xtext_ok (const char *text, gsize max);
gboolean smtp_is_domain (const char *s, gsize len, gboolean utf8);
/* Decodes strict base64 (RFC 4648 §4, no whitespace); NULL when malformed.
 * The result is NUL-terminated beyond *LEN. */
guint8 *smtp_base64_decode (const char *text, gsize *len);
/* Splits an RFC 4616 PLAIN response: authzid NUL authcid NUL passwd. */
gboolean smtp_auth_plain_split (const guint8 *data, gsize len, const char **authzid, const char **authcid,
                                const char **passwd);

/* ---- message content (smtp-content.c, pure) -------------------------- */

typedef enum {
  SMTP_DEC_BOL = 0,     /* at the start of a line (after a real CRLF) */
  SMTP_DEC_MID,         /* inside a line, or after a bare line end */
  SMTP_DEC_CR,          /* a CR whose LF has not come yet */
  SMTP_DEC_DOT,         /* "." at the start of a line */
  SMTP_DEC_DOT_CR       /* ".<CR>" at the start of a line */
} SmtpDecState;

typedef struct {
  guint8 state;         /* SmtpDecState */
  guint8 raw;           /* BDAT: no dot-stuffing, no end mark */
  guint8 reject_bare;   /* bare-lf = reject */
  guint8 saw_bare;      /* a bare CR or LF was seen (normalised) */
  guint8 has_output;    /* at least one octet was produced */
  guint8 last;          /* the last octet produced */
} SmtpDecoder;

typedef enum {
  SMTP_DEC_MORE,        /* all input used; more is needed */
  SMTP_DEC_END,         /* <CRLF>.<CRLF> seen; *used says where it ended */
  SMTP_DEC_BARE         /* a bare CR or LF with bare-lf = reject */
} SmtpDecResult;

void smtp_decoder_init (SmtpDecoder *dec, gboolean raw, gboolean reject_bare, gboolean at_line_start);
/* Decodes IN into OUT (appended; at most 2 * LEN octets are added).
 * Sets *USED to the octets of IN consumed. */
SmtpDecResult smtp_decoder_feed (SmtpDecoder *dec, const guint8 *in, gsize len, GByteArray *out, gsize *used);
/* Ends raw (BDAT) content: a trailing CR is a bare CR, and content that
 * does not end in CRLF gets one, so stored messages always do. */
SmtpDecResult smtp_decoder_finish_raw (SmtpDecoder *dec, GByteArray *out);

typedef struct {
  const char *helo;        /* may be NULL */
  const char *client_ip;
  const char *hostname;
  const char *protocol;    /* "ESMTPSA", ... */
  const char *tls;         /* may be NULL */
  const char *auth_user;   /* may be NULL */
  const char *id;
  const char *for_rcpt;    /* may be NULL */
  gint64 unix_time;
} SmtpReceivedInfo;

/* The Received: field (RFC 5321 §4.4), folded, ending in CRLF. */
char *smtp_received_header (const SmtpReceivedInfo *info);
/* "ESMTP", "ESMTPS", "ESMTPSA", "UTF8SMTPA"... (RFC 3848, RFC 6531 §3.7.3) */
const char *smtp_with_protocol (gboolean esmtp, gboolean tls, gboolean auth, gboolean utf8);
/* RFC 5322 §3.3 date-time, always in English. */
char *smtp_rfc5322_date (gint64 unix_time);

/* ---- the module instance and sessions -------------------------------- */

typedef enum {
  SMTP_LISTENER_SMTP = 0,
  SMTP_LISTENER_SUBMISSION,
  SMTP_LISTENER_SMTPS,
  SMTP_LISTENER_COUNT
} SmtpListenerKind;

typedef struct _Smtp Smtp;
typedef struct _SmtpSession SmtpSession;

typedef struct {
  Smtp *smtp;
  SmtpListenerKind kind;
} SmtpListener;

/* Replies queued beyond this stop the reading of commands until the
 * client has taken them (`drained`): a client that pipelines and never
 * reads cannot make the queue grow. It must stay above the core's 32 KiB
 * low-water mark (pb-conn.h), below which `drained` fires. */
#define SMTP_OUTPUT_HIGH (64 * 1024)

/* Sessions waiting for the client (for input, or to read our replies),
 * ordered by deadline: one list per timeout value, so appending keeps
 * each list sorted. */
typedef struct {
  SmtpSession *head;
  SmtpSession *tail;
} SmtpWaitList;

struct _Smtp {
  PbModule *module;
  const SmtpConfig *config;
  SmtpListener listeners[SMTP_LISTENER_COUNT];
  GPtrArray *trusted;        /* GInetAddressMask * */
  GPtrArray *vrfy_from;      /* GInetAddressMask * */
  GHashTable *sessions;      /* PbSession * -> SmtpSession * */
  SmtpWaitList waits[2];     /* command, data */
  GSource *timer;
  GQueue resumes;            /* SmtpSession * (a reference each) whose client took its replies */
  GSource *resume;           /* runs them, at idle priority */
  gboolean has_tls;
};

typedef enum {
  SMTP_STATE_NEW = 0,
  SMTP_STATE_CONNECTED,      /* greeted, no HELO yet */
  SMTP_STATE_TLS,            /* STARTTLS handshake */
  SMTP_STATE_HELO,           /* ready for MAIL (txn says how far a transaction got) */
  SMTP_STATE_AUTH_PLAIN,     /* waiting for the PLAIN response */
  SMTP_STATE_AUTH_USERNAME,  /* LOGIN: waiting for the user name */
  SMTP_STATE_AUTH_PASSWORD,  /* LOGIN: waiting for the password */
  SMTP_STATE_BODY,           /* DATA: reading the content */
  SMTP_STATE_BDAT,           /* reading a BDAT chunk */
  SMTP_STATE_QUIT            /* closing */
} SmtpState;

typedef struct _SmtpTxn SmtpTxn;

struct _SmtpSession {
  Smtp *smtp;
  PbSession *session;
  PbConn *conn;
  SmtpSession *wait_prev, *wait_next;
  gint64 deadline;
  char *helo;
  char *auth_user;           /* canonical user name once authenticated */
  SmtpTxn *txn;              /* allocated at MAIL */
  char *auth_login_user;     /* AUTH LOGIN between its two steps */
  char *saved_id;            /* the session id, kept when the client left mid-commit */
  gint64 chunk_left;         /* BDAT: octets of the current chunk still to read */
  const SmtpReply *chunk_reply; /* BDAT: the chunk is discarded, then this is the reply */
  guint ref;
  guint junk;                /* junk commands since the start or the last message */
  guint16 errors;
  guint16 messages;
  guint8 state;              /* SmtpState */
  guint8 chunk_return;       /* BDAT: the state the chunk ends in (SmtpState) */
  guint8 listener;           /* SmtpListenerKind */
  gint8 wait_list;           /* index into Smtp.waits, or -1 */
  guint esmtp : 1;
  guint busy : 1;            /* an answer from elsewhere is awaited: pull nothing */
  guint pumping : 1;
  guint closed : 1;          /* the connection is gone */
  guint trusted : 1;
  guint shutdown : 1;        /* 421 and close once the current command is done */
  guint eol_crlf : 1;        /* the last command line ended in CRLF */
  guint chunk_last : 1;      /* BDAT: the current chunk is the LAST */
  guint output_wait : 1;     /* reading stopped until the client takes our replies */
  guint resume_queued : 1;   /* in Smtp.resumes */
};

/* smtp-session.c */
void smtp_session_accept (PbSession *session, PbConn *conn, gpointer user_data);
void smtp_session_shutdown (PbSession *session, gpointer user_data);
void smtp_session_enter_state (SmtpSession *s, SmtpState state);
void smtp_reply (SmtpSession *s, guint code, const char *enhanced, const char *format, ...) G_GNUC_PRINTF (4, 5);
void smtp_reply_error (SmtpSession *s, const SmtpReply *r);
void smtp_session_resume (SmtpSession *s);
SmtpSession *smtp_session_ref (SmtpSession *s);
void smtp_session_unref (SmtpSession *s);
gboolean smtp_session_use_tls_or_plaintext_auth (SmtpSession *s);
void smtp_session_reset_txn (SmtpSession *s);
void smtp_sources_stop (Smtp *smtp);

typedef void (*SmtpFilterDone) (SmtpSession *s, const PbVerdict *verdict, PbPolicyRequest *req, gpointer data);
/* Runs a policy stage, or answers CONTINUE at once when nobody hooks it. */
void smtp_filter (SmtpSession *s, PbPolicyRequest *req, SmtpFilterDone done, gpointer data);
PbPolicyRequest *smtp_filter_new (SmtpSession *s, PbStage stage);
/* Whether a verdict lets the command proceed; if not, replies (with
 * defaults for what the verdict left out) and returns FALSE. */
gboolean smtp_verdict_proceeds (SmtpSession *s, const PbVerdict *v);

/* smtp-auth.c */
void smtp_cmd_auth (SmtpSession *s, char *args);
void smtp_auth_line (SmtpSession *s, char *line);

/* smtp-data.c (the session side of DATA and BDAT) */
void smtp_cmd_data (SmtpSession *s, char *args);
void smtp_cmd_bdat (SmtpSession *s, char *args);
void smtp_data_pump (SmtpSession *s);
void smtp_txn_free (SmtpTxn *txn);

/* smtp-mail.c */
void smtp_cmd_mail (SmtpSession *s, char *args);
void smtp_cmd_rcpt (SmtpSession *s, char *args);
void smtp_cmd_vrfy (SmtpSession *s, char *args, gboolean expn);

/* One accepted RCPT becomes one or more recipients (one per mailbox). */
typedef struct {
  PbRecipient r;             /* points at the strings below */
  char *address;
  char *mailbox;
  char *notify;
  char *orcpt;
  char *delivery_headers;
} SmtpRcpt;

struct _SmtpTxn {
  SmtpMailArgs mail;
  GPtrArray *rcpts;          /* SmtpRcpt * */
  guint accepted;            /* RCPT commands answered 250 */
  char *first_rcpt;          /* for "for <...>" in Received */
  PbStoreMessage *msg;
  SmtpDecoder dec;
  GByteArray *hold;          /* content not yet written (see smtp-data.c) */
  char *received;            /* the Received field, written before the content */
  gint64 size;               /* content octets received */
  guint16 reply_code;        /* a failure to report at the end of the data */
  const char *reply_enhanced;
  char *reply_text;
  guint bdat : 1;            /* BDAT was used */
  guint bdat_failed : 1;     /* chunks are consumed and refused until LAST */
  guint flushed : 1;         /* content has gone to storage */
  guint data_started : 1;    /* data-start passed and storage begun */
  guint committing : 1;
};

G_END_DECLS

#endif /* PILLARBOX_SMTP_PRIVATE_H */
