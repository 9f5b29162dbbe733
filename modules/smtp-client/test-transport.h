/* SPDX-License-Identifier: MIT */
/* Helpers for the transports' integration tests: real peers (smtp-sink, a scripted server, a DNS server) and a generation. */
#ifndef PILLARBOX_TEST_TRANSPORT_H
#define PILLARBOX_TEST_TRANSPORT_H

#include "test-help.h"
#include "core-private.h"
#include "transport.h"

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef struct {
  char *dir;
  char *conf;
  char *state;
  char *msgs;
  GArray *pids;        /* GPid of the peers started */
  GArray *stdin_fds;   /* their stdin pipes (closing one ends a Python peer) */
  PbGeneration *gen;
} TtFixture;

TtFixture *tt_new (void);
/* Ends the generation, stops every peer, removes the files. */
void tt_free (TtFixture *f);

/* Postfix's smtp-sink on ADDRESS and PORT (0: a free one), with EXTRA options; its -v
 * conversation goes to *LOG. Returns the port. */
guint tt_start_sink (TtFixture *f, const char *address, guint port, const char *const *extra, char **log);
/* modules/smtp-client/test-smtp-server.py on ADDRESS; its JSON log is *LOG. */
guint tt_start_server (TtFixture *f, const char *address, const char *const *extra, char **log);
/* tests/dns-server.py serving ZONE; returns its port on 127.0.0.1. */
guint tt_start_dns (TtFixture *f, const char *zone);
/* A port on ADDRESS where nothing listens. */
guint tt_dead_port (const char *address);

void tt_write_conf (TtFixture *f, const char *name, const char *text);
void tt_write_message (TtFixture *f, const char *queue_id, const char *text, gssize len);
/* The 00-core.conf and the test store, with CORE_EXTRA in [core] and STORE_EXTRA in its group. */
void tt_write_base (TtFixture *f, const char *core_extra, const char *store_extra);
/* Builds and starts the generation from the conf dir; NULL with *error_text set on failure. */
PbGeneration *tt_build (TtFixture *f, char **error_text);
/* Makes the self-signed certificate and key (as a started generation would). */
void tt_make_cert (TtFixture *f);
/* The self-signed certificate and key. */
char *tt_cert_file (TtFixture *f);
char *tt_key_file (TtFixture *f);

typedef struct {
  guint code;
  char *enhanced;
  char *text;
} TtResult;

typedef struct {
  gboolean done;
  guint n;
  TtResult *results;
} TtDelivery;

/* Hands a delivery to MODULE's transport; the results land in the TtDelivery. */
TtDelivery *tt_deliver_start (TtFixture *f, const char *module, const char *queue_id, const char *from,
                              const char *const *rcpts, gint64 size, const char *const *notify,
                              const char *const *orcpt, const char *ret, const char *envid);
/* Runs the loop until it is done (fails the test after MS). */
void tt_delivery_wait (TtDelivery *d, guint ms);
void tt_delivery_free (TtDelivery *d);
/* Start + wait with defaults. */
TtDelivery *tt_deliver (TtFixture *f, const char *module, const char *queue_id, const char *from,
                        const char *const *rcpts);
/* The transport's accepts() (TRUE when it has none). */
gboolean tt_accepts (TtFixture *f, const char *module, const char *from, const char *rcpt);

/* The scripted server's log: JSON objects; only those with "event" EVENT when non-NULL. */
GPtrArray *tt_server_log (const char *log, const char *event);
/* smtp-sink's -v log: messages per session that said EHLO/HELO, in order. */
GArray *tt_sink_sessions (const char *log);
/* Waits until LOG has at least N messages in total (the sink writes asynchronously). */
gboolean tt_sink_wait_messages (const char *log, guint n, guint ms);
/* Decodes a message's "raw" octets. */
GBytes *tt_message_raw (JsonObject *message);

G_END_DECLS

#endif /* PILLARBOX_TEST_TRANSPORT_H */
