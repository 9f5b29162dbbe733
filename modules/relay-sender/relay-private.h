/* SPDX-License-Identifier: MIT */
/* relay-sender internals: settings, relay servers, periodic caps, routing rules. */
#ifndef PILLARBOX_RELAY_PRIVATE_H
#define PILLARBOX_RELAY_PRIVATE_H

#include <pillarbox/pillarbox.h>

#include "smtpc.h"

G_BEGIN_DECLS

#define RELAY_ERROR (g_quark_from_static_string ("relay-sender-error"))

/* ---- settings (relay-module.c) ---------------------------------------- */

typedef struct {
  char *helo_name;
  char *credentials_file;
  gboolean accept_unmatched;
  gint64 reuse_time;
  gint64 connect_timeout;
  gint64 command_timeout;
  gint64 data_init_timeout;
  gint64 data_block_timeout;
  gint64 data_done_timeout;
} RelayConfig;

enum { RELAY_SECURITY_NONE, RELAY_SECURITY_STARTTLS, RELAY_SECURITY_STARTTLS_IF_OFFERED, RELAY_SECURITY_TLS };
enum { RELAY_AUTH_AUTO, RELAY_AUTH_NONE, RELAY_AUTH_PLAIN, RELAY_AUTH_LOGIN };
enum { RELAY_ACTION_RELAY, RELAY_ACTION_PASS };

/* [relay-server NAME] */
typedef struct {
  char **address;
  gint security;
  gboolean verify_certificate;
  gint auth;
  gboolean auth_without_tls;
  gint64 max_messages_per_session;
  gint64 max_recipients_per_message;
  gint64 max_recipients_per_session;
  char **limits;
  gint64 max_connections;
} RelayServerConfig;

/* [relay-route NAME] */
typedef struct {
  char **senders;
  char **recipients;
  gint action;
  char **servers;
} RelayRouteConfig;

/* ---- periodic caps (relay-caps.c, pure but for the log file) ---------- */

typedef enum { RELAY_COUNT_MESSAGES, RELAY_COUNT_RECIPIENTS } RelayCountKind;

/* "50 messages per 60m": at most LIMIT in any window of PERIOD. */
typedef struct {
  RelayCountKind kind;
  gint64 limit;
  gint64 period_ms;
} RelayLimit;

gboolean relay_limit_parse (const char *text, RelayLimit *out, GError **error);
/* "50 messages per 1h" */
char *relay_limit_describe (const RelayLimit *limit);

/* What was sent, when (real time, ms), as counted against the limits. */
typedef struct {
  gint64 time_ms;
  guint messages;
  guint recipients;
} RelayEvent;

typedef struct {
  char *name;              /* the relay server's name */
  GArray *limits;          /* RelayLimit */
  GArray *events;          /* RelayEvent, oldest first */
  guint held_messages;     /* reserved by transactions under way */
  guint held_recipients;
} RelayCapState;

RelayCapState *relay_cap_state_new (const char *name);
void relay_cap_state_free (RelayCapState *st);
/* How many of @wanted recipients may go in one more message now; 0 with
 * *why set when a limit is reached. What is granted is held until settle. */
guint relay_caps_reserve (RelayCapState *st, guint wanted, gint64 now_ms, char **why);
/* A transaction ended: the hold is released; a message the server took
 * counts from @now_ms with @accepted recipients. Returns the event added,
 * or NULL. */
const RelayEvent *relay_caps_settle (RelayCapState *st, guint granted, gboolean delivered, guint accepted,
                                     gint64 now_ms);
/* When one more message (of one recipient) will be allowed: @now_ms if now. */
gint64 relay_caps_next_allowed (RelayCapState *st, gint64 now_ms);
/* Drops events older than the longest period. */
void relay_caps_prune (RelayCapState *st, gint64 now_ms);
/* Counts within (now - period, now]. */
void relay_caps_count (RelayCapState *st, gint64 period_ms, gint64 now_ms, guint64 *messages, guint64 *recipients);

/* The caps log, STATE_DIR/relay-sender/caps: one line per counted message,
 * "TIME_MS SERVER MESSAGES RECIPIENTS", appended; read at start and
 * whenever another instance (a reload) appended to it. */
typedef struct {
  char *path;
  gint64 known_size;       /* the size after our last read or write; -1: unknown */
  GHashTable *states;      /* name -> RelayCapState * (not owned) */
} RelayCapLog;

void relay_cap_log_init (RelayCapLog *log, const char *path, GHashTable *states);
void relay_cap_log_clear (RelayCapLog *log);
/* Reads the log into the states' events (replacing them), keeping only
 * what is younger than each state's longest period; rewrites it compacted
 * when @compact. */
gboolean relay_cap_log_load (RelayCapLog *log, gint64 now_ms, gboolean compact, GError **error);
/* Re-reads the log if its size is not what we left it at. */
void relay_cap_log_sync (RelayCapLog *log, gint64 now_ms);
void relay_cap_log_append (RelayCapLog *log, const char *name, const RelayEvent *ev);

/* ---- routing rules (relay-route.c, pure) ------------------------------ */

/* Whether @address matches a list of patterns:
 *   "*@example.org", "bob@*", "*" -- a glob against the whole address;
 *   "example.org", "*.example.org", "@example.org" -- a glob against its domain;
 *   "<>" -- the null sender;
 *   "!PATTERN" -- excludes what PATTERN matches.
 * Case-insensitive. An empty list matches everything; a list of exclusions
 * only matches everything else. */
gboolean relay_patterns_match (const char *const *patterns, const char *address);
/* A sender as routing rules see it: lower case, without a BATV tag
 * ("prvs=TAG=bob@example.org" -> "bob@example.org"). */
char *relay_normalise_sender (const char *sender);

typedef struct {
  char *name;
  const RelayRouteConfig *config;
  GPtrArray *servers;      /* RelayServer *, in the order to try; all of them when unset */
} RelayRoute;

/* The first route whose senders and recipients both match, or NULL. */
const RelayRoute *relay_route_find (GPtrArray *routes, const char *sender, const char *recipient);

/* ---- the module's state (relay-module.c, relay-deliver.c) ------------- */

typedef struct {
  char *name;
  const RelayServerConfig *config;
  char *host;
  guint16 port;
  char *user;              /* from the credentials file; NULL: none */
  char *password;
  RelayCapState *caps;     /* NULL without limits */
} RelayServer;

typedef struct {
  PbModule *module;
  const RelayConfig *config;
  GPtrArray *servers;      /* RelayServer * in file order */
  GPtrArray *routes;       /* RelayRoute * in file order */
  GHashTable *cap_states;  /* name -> RelayCapState * (owned by the servers) */
  RelayCapLog cap_log;
  gboolean cap_log_ready;
  SmtpcClient *client;
  GHashTable *deliveries;  /* RelayDelivery * under way */
  gint64 (*now_ms) (void); /* real time; tests substitute a fake clock */
} Relay;

void relay_deliver (PbDelivery *delivery, gpointer user_data);
/* The proposed PbTransportSpec.ready (ABI 1.1, docs/relay-sender.md): 0 when
 * some relay server's periodic caps let a message go now, else the Unix
 * time in microseconds when the first one will. */
gint64 relay_ready (const char *destination, gpointer user_data);
gboolean relay_accepts (const char *mail_from, const char *recipient, gpointer user_data);
void relay_deliveries_cancel (Relay *relay);
extern const SmtpcCapHooks relay_cap_hooks;

G_END_DECLS

#endif /* PILLARBOX_RELAY_PRIVATE_H */
