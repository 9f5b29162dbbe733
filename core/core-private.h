/* SPDX-License-Identifier: MIT */
/* The core's own structures: module instances, generations, listeners, sessions, hooks. */
#ifndef PILLARBOX_CORE_PRIVATE_H
#define PILLARBOX_CORE_PRIVATE_H

#include <glib-unix.h>
#include <ltdl.h>

#include "pb-private.h"
#include "conf.h"
#include "settings.h"

G_BEGIN_DECLS

typedef struct _PbGeneration PbGeneration;

/* A module file opened once per process; never unloaded (code of a retired
 * generation may still be referenced by sources until they are gone). */
typedef struct {
  char *name;
  char *path;
  lt_dlhandle handle;
  const PbModuleInfo *info;
} PbModuleFile;

typedef struct {
  const PbSectionInfo *info;
  GPtrArray *configs;   /* void *, NULL-terminated */
  GPtrArray *names;     /* char *, NULL-terminated */
  PbSettingsTable table;
} PbSectionList;

struct _PbModule {
  PbGeneration *gen;          /* not a reference: the generation owns its modules */
  PbModuleFile *file;
  const PbModuleInfo *info;
  char *name;
  PbSettingsTable table;
  void *config;
  GHashTable *sections;       /* kind -> PbSectionList */
  const char *conf_file;      /* where its [module NAME] group is */
  guint conf_line;
  gpointer data;
  GDestroyNotify destroy;
  gboolean registration_open;
  gboolean inited;
  gboolean started;
};

/* A listening socket, shared between generations so a reload never
 * refuses a connection. */
typedef struct {
  gint ref;
  char *endpoint;             /* canonical "HOST:PORT" as configured */
  char *bound;                /* the address actually bound, for status */
  int fd;
  GSource *source;
  struct _PbListener *owner;  /* the current generation's listener, or NULL */
} PbBoundSocket;

typedef struct _PbListener {
  PbListenerSpec spec;        /* strings below are owned copies */
  char *name;
  char *service;
  char **endpoints;
  PbModule *module;
  GPtrArray *sockets;         /* PbBoundSocket * (refs) */
  guint64 accepted;
} PbListener;

typedef struct {
  PbHookSpec spec;
  char **before;
  char **after;
  PbModule *module;
  guint order;                /* registration order, the last tie-breaker */
} PbHook;

typedef struct {
  PbEventFunc func;
  gpointer user_data;
  PbModule *module;
} PbEventHandler;

typedef struct {
  PbTransportSpec spec;
  char *name;
  PbModule *module;
} PbTransport;

typedef struct {
  PbCollectorSpec spec;
  char *name;
  PbModule *module;
} PbCollector;

/* The core's own settings, the [core] group. */
typedef struct {
  char *hostname;
  char *user;
  char *module_dir;
  char *pidfile;
  gint64 shutdown_timeout;
  gint64 hook_timeout;
  char *tls_certificate;
  char *tls_key;
  char *postmaster;
  char **dns_servers;
  char **retry_schedule;
  gint64 max_queue_lifetime;
  gint queue_order;           /* 0 oldest first, 1 smallest first, 2 newest first */
  gint64 destination_concurrency;
  gint64 queue_scan_interval;
  gboolean bounce_remote_senders;
  gint64 delay_warning_time;
  char *log_dir;              /* per-service log files (log.c) */
  char **service_logs;
  gint64 service_log_buffer;
} PbCoreConfig;

/* [connection NAME]: one sender, collectors, and when they run. */
typedef struct {
  char *sender;
  char **collectors;
  gboolean send_immediately;
  char *schedule;
  gboolean is_default;
} PbConnectionConfig;

typedef struct _PbQueue PbQueue;
typedef struct _PbSchedule PbSchedule;

struct _PbGeneration {
  gint ref;
  guint serial;
  gboolean checking;
  gboolean retired;
  char *conf_dir;
  char *state_dir;
  PbSettingsTable core_table;
  PbCoreConfig *core;
  GPtrArray *modules;         /* PbModule *, in configuration order */
  GPtrArray *listeners;       /* PbListener * */
  GPtrArray *hooks[PB_STAGE_LAST]; /* PbHook *, in run order once sorted */
  GPtrArray *events;          /* PbEventHandler * */
  GHashTable *commands;       /* name -> PbCommandEntry * */
  PbStorageSpec storage;
  PbModule *storage_module;
  GPtrArray *transports;      /* PbTransport * */
  GPtrArray *collectors;      /* PbCollector * */
  PbTlsCreds *tls;
  PbResolver *resolver;       /* created on first use */
  GArray *core_retry;         /* gint64 ms: core.retry-schedule parsed */
  PbSectionList *connections; /* [connection NAME] groups, the core's own section kind */
  PbQueue *queue;             /* the outbound queue manager, once started */
  GHashTable *sessions;       /* PbSession * set */
  gint64 loaded_at;           /* g_get_real_time() */
};

struct _PbSession {
  gint ref;
  char id[16];
  PbGeneration *gen;          /* a reference */
  PbListener *listener;
  PbConn *conn;
  char *user;
  const char *state;          /* interned */
  gint64 started;
  GHashTable *data;           /* PbModule * -> PbSessionData * */
  gboolean accepted;
  gboolean ended;
  GCancellable *cancellable;  /* cancelled when the session ends */
};

/* ---- module files and instances (loader.c) ---- */

PB_PRIVATE PbModuleFile *pb_module_file_open (const char *module_dir, const char *name, GError **error);
PB_PRIVATE gboolean pb_module_name_is_valid (const char *name);

/* ---- generations (generation.c) ---- */

PB_PRIVATE extern const PbSetting pb_core_settings[];

/* Reads CONF_DIR, applies OVERRIDES, loads and checks every module and
 * runs their init. Problems go to DIAG (all of them); NULL on failure. */
PB_PRIVATE PbGeneration *pb_generation_build (const char *conf_dir, const char *state_dir,
                                              const char *const *overrides, gboolean checking,
                                              PbDiag *diag);
PB_PRIVATE PbGeneration *pb_generation_ref (PbGeneration *gen);
PB_PRIVATE void pb_generation_unref (PbGeneration *gen);
/* Binds listeners, reusing the sockets of PREVIOUS (nullable) for equal endpoints. */
PB_PRIVATE gboolean pb_generation_bind (PbGeneration *gen, PbGeneration *previous, GError **error);
/* Loads the configured certificate (or, with SELF_SIGNED, makes or loads the
 * state directory's self-signed one) unless already loaded. */
PB_PRIVATE gboolean pb_generation_load_tls (PbGeneration *gen, gboolean self_signed, GError **error);
/* Loads TLS credentials and runs the modules' start functions. */
PB_PRIVATE gboolean pb_generation_start (PbGeneration *gen, GError **error);
/* Makes GEN the one new connections go to; returns the previous current (a ref) or NULL. */
PB_PRIVATE PbGeneration *pb_generation_activate (PbGeneration *gen);
PB_PRIVATE PbGeneration *pb_generation_get_current (void);
/* Stops accepting on GEN's sockets (shutdown). */
PB_PRIVATE void pb_generation_close_listeners (PbGeneration *gen);
PB_PRIVATE PbModule *pb_generation_find_module (PbGeneration *gen, const char *name);
PB_PRIVATE void pb_generation_add_builtin_command (PbGeneration *gen, const PbControlCommandSpec *spec);
PB_PRIVATE const PbCommandEntry *pb_generation_lookup_command (const char *name, gpointer user_data);
PB_PRIVATE GPtrArray *pb_generation_list_commands (gpointer user_data);

/* ---- hooks (hooks.c) ---- */

/* Orders each stage's hooks; a cycle of before/after constraints is an error. */
PB_PRIVATE gboolean pb_hooks_sort (PbGeneration *gen, GError **error);
PB_PRIVATE void pb_hook_free (gpointer hook);

/* ---- sessions and listeners (session.c, listener.c) ---- */

PB_PRIVATE PbSession *pb_session_new (PbGeneration *gen, PbListener *listener, PbConn *conn);
PB_PRIVATE PbGeneration *pb_session_get_generation (PbSession *session);
/* Ends every session: asks politely (listener shutdown), or aborts when FORCE. */
PB_PRIVATE void pb_sessions_shutdown (gboolean force);
/* Called once when a session's connection has closed. */
PB_PRIVATE void pb_session_end (PbSession *session);
PB_PRIVATE guint pb_sessions_count (void);
/* Every live session (transfer container: the sessions are not referenced). */
PB_PRIVATE GPtrArray *pb_sessions_list (void);

PB_PRIVATE void pb_listener_free (gpointer listener);
PB_PRIVATE PbBoundSocket *pb_bound_socket_open (const char *endpoint, GError **error);
PB_PRIVATE PbBoundSocket *pb_bound_socket_ref (PbBoundSocket *sock);
PB_PRIVATE void pb_bound_socket_unref (PbBoundSocket *sock);
PB_PRIVATE void pb_bound_socket_set_owner (PbBoundSocket *sock, PbListener *owner);

/* Conn notification the core uses to learn that a session's connection ended. */
PB_PRIVATE void pb_conn_set_close_notify (PbConn *conn, void (*notify) (PbConn *conn, gpointer data), gpointer data);

/* ---- storage, router, authentication (storage.c, router.c, auth.c) ---- */

/* The commit latency histogram: a{sv} with "bounds" (ad, seconds), "counts"
 * (at, cumulative, one per bound), "sum" (d, seconds) and "count" (t, all
 * commits, the +Inf bucket). */
PB_PRIVATE GVariant *pb_store_commit_latency_variant (void);
PB_PRIVATE void pb_store_request_gen (PbGeneration *gen, const char *operation, GVariant *args,
                                      PbStoreResultFunc done, gpointer user_data);
PB_PRIVATE void pb_router_resolve_gen (PbGeneration *gen, const char *address, PbRouteFunc done, gpointer user_data);
PB_PRIVATE void pb_auth_verify_gen (PbGeneration *gen, const char *user, const char *password,
                                    const char *protocol, PbAuthFunc done, gpointer user_data);
/* Hashes PASSWORD with yescrypt on a worker thread; DONE gets the crypt(3)
 * string or an error message. */
typedef void (*PbHashFunc) (const char *hash, const char *error, gpointer user_data);
PB_PRIVATE void pb_password_hash (const char *password, PbHashFunc done, gpointer user_data);
/* Starts the hashing threads and makes the unknown-user hash (at start, after privileges are dropped). */
PB_PRIVATE void pb_auth_prepare (void);
/* Registers the directory commands (domain, user, alias, list, mailbox). */
PB_PRIVATE void pb_dircmds_register (PbGeneration *gen);
/* Registers queue and connect-now. */
PB_PRIVATE void pb_queuecmds_register (PbGeneration *gen);

/* ---- outbound queue (queue.c, schedule.c, bounce.c) ---- */

PB_PRIVATE extern const PbSectionInfo pb_connection_section;
PB_PRIVATE PbQueue *pb_queue_new (PbGeneration *gen, GError **error);
PB_PRIVATE void pb_queue_start (PbQueue *queue);
/* Stops scanning and firing; deliveries in flight still record their results. */
PB_PRIVATE void pb_queue_stop (PbQueue *queue);
PB_PRIVATE void pb_queue_free (PbQueue *queue);
/* New remote mail or a retry request: scan soon. */
PB_PRIVATE void pb_queue_kick (PbQueue *queue);
/* New mail was committed: reads only the entries added since the last scan. */
PB_PRIVATE void pb_queue_kick_new (PbQueue *queue);
/* Fires the connection NAME, or the default connections when NAME is NULL. */
PB_PRIVATE void pb_queue_fire (PbQueue *queue, const char *name);
PB_PRIVATE gint64 pb_queue_connection_next (PbQueue *queue, const char *name);
/* Every connection: name, sender, state (idle, sending, held), next run; a text table into TEXT. */
PB_PRIVATE GVariant *pb_queue_describe (PbQueue *queue, GString *text);
/* Entries separated by ';'. */
PB_PRIVATE PbSchedule *pb_schedule_parse (const char *text, char **error);
PB_PRIVATE void pb_schedule_free (PbSchedule *schedule);
PB_PRIVATE gboolean pb_schedule_is_denied (const PbSchedule *schedule, gint64 now);
/* The next firing after AFTER (unix seconds), or 0 for none within eight days. */
PB_PRIVATE gint64 pb_schedule_next (const PbSchedule *schedule, gint64 after);
PB_PRIVATE void pb_bounce_send (PbGeneration *gen, const char *queue_id, const char *sender, const char *recipient,
                                const char *orcpt, const char *notify, const char *reply, const char *remote);
/* A delay notice (Action: delayed) for a recipient still being retried until RETRY_UNTIL (unix s). */
PB_PRIVATE void pb_bounce_send_delay (PbGeneration *gen, const char *queue_id, const char *sender,
                                      const char *recipient, const char *orcpt, const char *notify, const char *reply,
                                      const char *remote, gint64 retry_until);
PB_PRIVATE PbStoreMessage *pb_store_message_begin_gen (PbGeneration *gen, const PbEnvelope *envelope, GError **error);

/* ---- DNS (dns.c) ---- */

/* "192.0.2.53", "127.0.0.1:5353", "[::1]:53" -> libunbound's "ADDR@PORT". */
PB_PRIVATE gboolean pb_dns_server_to_unbound (const char *server, char **out);

/* ---- control built-ins (builtins.c) ---- */

PB_PRIVATE void pb_builtins_register (PbGeneration *gen);
/* Set by the daemon: a reload requested over the control socket. */
PB_PRIVATE void pb_builtins_set_reload_func (gboolean (*reload) (char **errors));
PB_PRIVATE void pb_builtins_set_start_time (gint64 real_time);

/* ---- util.c ---- */

PB_PRIVATE const char *pb_intern (const char *s);
/* The syslog priority digit for a GLib level, for the PRIORITY field. */
PB_PRIVATE const char *pb_log_priority (GLogLevelFlags level);
/* The longest login name, in octets: the longest address (RFC 5321
 * §4.5.3.1.3: a path of 256 octets with its angle brackets). */
#define PB_AUTH_NAME_MAX 254
/* NULL when NAME may be a login name (valid UTF-8, 1 to PB_AUTH_NAME_MAX
 * octets, no blank, control or format character), else why not, for the
 * log. Any other name fails as a wrong password does: counted. */
PB_PRIVATE const char *pb_auth_name_problem (const char *name);

/* ---- loop.c: the core's own kinds of source, counted like pb-loop.h's ---- */

PB_PRIVATE guint pb_unix_fd_add (int fd, GIOCondition condition, GUnixFDSourceFunc func, gpointer data);
PB_PRIVATE guint pb_unix_signal_add (int signum, GSourceFunc func, gpointer data);

G_END_DECLS

#endif /* PILLARBOX_CORE_PRIVATE_H */
