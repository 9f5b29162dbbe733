/* SPDX-License-Identifier: MIT */
/* The core's side of deliveries and collector runs (built by the queue manager and scheduler). */
#ifndef PILLARBOX_TRANSPORT_H
#define PILLARBOX_TRANSPORT_H

#include "pb-private.h"

G_BEGIN_DECLS

typedef struct {
  guint code;                 /* 0: no result, retry later */
  char *enhanced;
  char *text;
  gint64 retry_at;            /* unix s: a 4xx that was no attempt (pb_delivery_set_retry_at) */
} PbDeliveryResult;

typedef void (*PbDeliveryDoneFunc) (PbDelivery *delivery, gpointer user_data);
typedef void (*PbCollectorRunDoneFunc) (PbCollectorRun *run, const GError *error, gpointer user_data);

struct _PbDelivery {
  PbModule *module;           /* the transport's instance */
  char *queue_id;
  char *mail_from;
  char *destination;
  gint64 size;
  char *dsn_ret;
  char *dsn_envid;
  char **notify;              /* per recipient, "" when none */
  char **orcpt;
  char **recipients;
  PbDeliveryResult *results;
  guint n_recipients;
  PbDeliveryDoneFunc done;    /* reads results before the delivery is freed */
  gpointer user_data;
};

struct _PbCollectorRun {
  char *name;
  PbCollectorRunDoneFunc done;
  gpointer user_data;
};

PB_PRIVATE PbDelivery *pb_delivery_new (PbModule *transport, const char *queue_id, const char *mail_from,
                                        const char *destination, gint64 size, const char *const *recipients,
                                        PbDeliveryDoneFunc done, gpointer user_data);
/* DSN parameters: message-wide (RET, ENVID), and per recipient (NOTIFY, ORCPT; NULL entries allowed). */
PB_PRIVATE void pb_delivery_set_dsn (PbDelivery *delivery, const char *ret, const char *envid,
                                     const char *const *notify, const char *const *orcpt);
PB_PRIVATE void pb_delivery_free (PbDelivery *delivery);
PB_PRIVATE PbCollectorRun *pb_collector_run_new (const char *name, PbCollectorRunDoneFunc done, gpointer user_data);

G_END_DECLS

#endif /* PILLARBOX_TRANSPORT_H */
