/* SPDX-License-Identifier: MIT */
/* pop3-collector internals: the [collector NAME] settings, a collector, one run, and the pure helpers. */
#ifndef PILLARBOX_COLLECTOR_PRIVATE_H
#define PILLARBOX_COLLECTOR_PRIVATE_H

#include <pillarbox/pillarbox.h>

G_BEGIN_DECLS

#define COLLECTOR_ERROR (collector_error_quark ())
GQuark collector_error_quark (void);

/* Header octets held back before a message starts streaming to storage:
 * routing by headers and data-end hooks need the whole header section,
 * and hooks' headers can only be put in front of what is not yet written. */
#define COLLECTOR_HOLD_MAX (64 * 1024)
/* Header addresses routed per message at most (route-by-headers). */
#define COLLECTOR_MAX_HEADER_RCPTS 100
/* What one POP3 session may make the collector hold (docs/pop3-collector.md,
 * "Limits"): messages in the UIDL and LIST answers (each kept costs about
 * 150 octets), and capability lines in the CAPA answer. A server that
 * sends more gets the run aborted before anything is fetched or deleted. */
#define COLLECTOR_MAX_LISTED 100000
#define COLLECTOR_MAX_CAPA_LINES 100

typedef enum {
  COLLECTOR_SECURITY_NONE,
  COLLECTOR_SECURITY_STLS,
  COLLECTOR_SECURITY_TLS
} CollectorSecurity;

typedef enum {
  COLLECTOR_AUTH_USER,
  COLLECTOR_AUTH_APOP,
  COLLECTOR_AUTH_PLAIN
} CollectorAuth;

/* leave-on-server as parsed: forever, no (delete after download), or N days. */
#define COLLECTOR_LEAVE_FOREVER (-1)
#define COLLECTOR_LEAVE_NO 0

/* One [collector NAME] section. */
typedef struct {
  char **server;
  gint security;
  gboolean verify_certificate;
  gint auth;
  char *user;
  char *password_file;
  char *leave_on_server;
  gint64 max_size;
  char *mailbox;
  gboolean route_by_headers;
  char **headers;
  char *default_mailbox;
  gint64 connect_timeout;
  gint64 command_timeout;
  gint64 run_timeout;
} CollectorConfig;

typedef struct _Collector Collector;
typedef struct _CollectorRun CollectorRun;

/* What a finished run reports. */
typedef struct {
  guint new_messages;
  guint skipped;
  guint deleted;
} CollectorCounts;

/* Someone waiting for a run: the scheduler's PbCollectorRun or a command. */
typedef void (*CollectorDoneFunc) (const CollectorCounts *counts, const GError *error, gpointer user_data);

struct _Collector {
  PbModule *module;
  char *name;
  const CollectorConfig *config;
  char *host;
  guint16 port;
  gint64 leave_days;          /* COLLECTOR_LEAVE_FOREVER, _NO or days */
  char *password;             /* from password-file; wiped when freed */
  char *origin_prefix;        /* "pop3-collector/NAME/" */
  CollectorRun *run;          /* the run in progress, or NULL: never two at once */
  GHashTable *warned;         /* UIDL -> GINT_TO_POINTER (1): skips already logged as warnings */
};

/* collector-run.c */
void collector_run_start (Collector *c, CollectorDoneFunc done, gpointer user_data);
/* Joins the run in progress: @done is called with its outcome. */
void collector_run_join (Collector *c, CollectorDoneFunc done, gpointer user_data);
/* Stops the run in progress at once (the module is going away). */
void collector_run_cancel (Collector *c);

/* collector-util.c: pure helpers, unit-tested. */
gboolean collector_parse_leave (const char *text, gint64 *days, GError **error);
gboolean collector_split_endpoint (const char *endpoint, char **host, guint16 *port);
/* "+OK ..." -> TRUE, "-ERR ..." -> FALSE; *ok tells which; anything else is not POP3. */
gboolean collector_parse_status (const char *line, gboolean *ok, const char **text);
/* The "<...>" timestamp of an APOP greeting (RFC 1939 §7), or NULL. */
char *collector_apop_timestamp (const char *greeting);
char *collector_apop_digest (const char *timestamp, const char *password);
/* The base64 initial response of SASL PLAIN (RFC 4616 §2) for AUTH (RFC 5034). */
char *collector_sasl_plain (const char *user, const char *password);
/* "N UIDL" and "N SIZE" lines of UIDL and LIST (RFC 1939 §7, §5). */
gboolean collector_parse_uidl_line (const char *line, guint *number, char **uidl);
gboolean collector_parse_list_line (const char *line, guint *number, gint64 *size);

/* A header section: (name, unfolded value) pairs in order. */
typedef struct {
  char *name;
  char *value;
} CollectorHeader;
GPtrArray *collector_parse_headers (const guint8 *data, gsize len);
/* The addresses of an address-list header value (RFC 5322 §3.4), lower-cased domain. */
void collector_extract_addresses (const char *value, GPtrArray *out);
/* The reverse path of a Return-Path value: "<a@b>" -> "a@b", "<>" -> "". NULL if not one. */
char *collector_return_path (const char *value);
/* An RFC 5322 date in English whatever the locale. */
char *collector_rfc5322_date (gint64 unix_time);

G_END_DECLS

#endif /* PILLARBOX_COLLECTOR_PRIVATE_H */
