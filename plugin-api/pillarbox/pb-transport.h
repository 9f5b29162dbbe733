/* SPDX-License-Identifier: MIT */
/* Transports (outbound senders) and collectors (remote mailbox fetchers). */
#ifndef PILLARBOX_PB_TRANSPORT_H
#define PILLARBOX_PB_TRANSPORT_H

#include <pillarbox/pb-abi.h>
#include <pillarbox/pb-module.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-transport
 * @title: Transports and collectors
 *
 * A transport carries queued messages away (`relay-sender`, `mx-sender`).
 * The core's queue manager groups due recipients by transport and
 * destination and hands the transport one #PbDelivery at a time: one
 * message, one or more recipients for one destination. The transport
 * records a result per recipient and completes the delivery; the queue
 * manager retries, bounces or marks delivered.
 *
 * A collector fetches mail from elsewhere (`pop3-collector`). Its runs are
 * started by the scheduler or by `pillarbox collect NAME`; it completes
 * each run once every message it fetched was committed.
 *
 * Message bodies, client connections and the asynchronous resolver that
 * transports use join the ABI in later minors.
 */

/**
 * PbDelivery:
 *
 * One message to one destination, for some of its recipients.
 *
 * Since: ABI 1.0
 */
typedef struct _PbDelivery PbDelivery;

/**
 * PbTransportSpec:
 * @struct_size: sizeof (PbTransportSpec)
 * @name: the transport's name, as routing rules and connections name it
 * @deliver: starts a delivery; must return at once
 * @user_data: passed to @deliver and @accepts
 * @accepts: (nullable): whether this transport carries mail from @mail_from to
 *   @recipient (routing rules such as VPOP3's Domain Filtering); %NULL: all of it
 * @ready: (nullable): 0 when the transport can take mail for @destination now;
 *   otherwise the real time (as g_get_real_time(), microseconds) when it can
 *   next, e.g. when an ISP's periodic cap ("50 messages per hour") frees a
 *   place. The queue manager holds that destination's mail back until then
 *   without counting an attempt. Since ABI 1.1; %NULL: always ready.
 *
 * A transport registration. The queue manager gives a recipient to the
 * sender of the first connection (in configuration order) whose transport
 * accepts it.
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  const char *name;
  void (*deliver) (PbDelivery *delivery, gpointer user_data);
  gpointer user_data;
  gboolean (*accepts) (const char *mail_from, const char *recipient, gpointer user_data);
  gint64 (*ready) (const char *destination, gpointer user_data);
} PbTransportSpec;

/**
 * pb_module_add_transport:
 * @module: the registering module (only during `init`)
 * @spec: the transport (copied)
 * @error: where to report a duplicate name
 *
 * Returns: %TRUE on success
 *
 * Since: ABI 1.0
 */
PB_API gboolean pb_module_add_transport (PbModule *module, const PbTransportSpec *spec, GError **error);

/**
 * pb_delivery_get_queue_id:
 * @delivery: a delivery
 *
 * Returns: (transfer none): the message's queue id
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_delivery_get_queue_id (PbDelivery *delivery);

/**
 * pb_delivery_get_mail_from:
 * @delivery: a delivery
 *
 * Returns: (transfer none): the reverse path to send, after delivery-attempt
 *   hooks ("" for the null sender)
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_delivery_get_mail_from (PbDelivery *delivery);

/**
 * pb_delivery_get_destination:
 * @delivery: a delivery
 *
 * Returns: (transfer none): the destination domain (or relay name)
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_delivery_get_destination (PbDelivery *delivery);

/**
 * pb_delivery_get_recipients:
 * @delivery: a delivery
 *
 * Returns: (transfer none): %NULL-terminated recipient addresses
 *
 * Since: ABI 1.0
 */
PB_API const char *const *pb_delivery_get_recipients (PbDelivery *delivery);

/**
 * pb_delivery_get_size:
 * @delivery: a delivery
 *
 * Returns: the message's size in octets (for SIZE=)
 *
 * Since: ABI 1.0
 */
PB_API gint64 pb_delivery_get_size (PbDelivery *delivery);

/**
 * pb_delivery_get_dsn:
 * @delivery: a delivery
 * @index: a recipient's index, or -1 for the message's parameters
 * @name: "ret" or "envid" (message), "notify" or "orcpt" (recipient)
 *
 * The DSN parameters (RFC 3461) received with the message, to pass on to
 * a server that offers DSN.
 *
 * Returns: (transfer none) (nullable): the parameter's value
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_delivery_get_dsn (PbDelivery *delivery, gint index, const char *name);

/**
 * pb_delivery_get_module:
 * @delivery: a delivery
 *
 * Returns: (transfer none): the transport module's own instance, for
 *   pb_store_message_read() of the body (queue id: pb_delivery_get_queue_id())
 *
 * Since: ABI 1.0
 */
PB_API PbModule *pb_delivery_get_module (PbDelivery *delivery);

/**
 * pb_delivery_set_result:
 * @delivery: a delivery
 * @index: the recipient's index in pb_delivery_get_recipients()
 * @code: the reply code (250 delivered, 4xx retry, 5xx bounce)
 * @enhanced: (nullable): RFC 3463 code
 * @text: (nullable): the remote server's text, kept for `queue show` and DSNs
 *
 * Since: ABI 1.0
 */
PB_API void pb_delivery_set_result (PbDelivery *delivery, guint index, guint code,
                                    const char *enhanced, const char *text);

/**
 * pb_delivery_set_retry_at:
 * @delivery: a delivery
 * @index: the recipient's index, whose result was set to a 4xx
 * @unix_time: when the transport expects to take it
 *
 * Says that the 4xx was no attempt: the transport did not try the
 * recipient (its own periodic cap was full) and knows when it can. The
 * queue manager retries at @unix_time without counting an attempt, so
 * the retry schedule does not grow and no history line is written.
 *
 * Since: ABI 1.1
 */
PB_API void pb_delivery_set_retry_at (PbDelivery *delivery, guint index, gint64 unix_time);

/**
 * pb_delivery_complete:
 * @delivery: (transfer full): a delivery
 *
 * Ends the delivery. Recipients without a result are retried later.
 *
 * Since: ABI 1.0
 */
PB_API void pb_delivery_complete (PbDelivery *delivery);

/**
 * PbCollectorRun:
 *
 * One run of a collector.
 *
 * Since: ABI 1.0
 */
typedef struct _PbCollectorRun PbCollectorRun;

/**
 * PbCollectorSpec:
 * @struct_size: sizeof (PbCollectorSpec)
 * @name: the collector's name (`pillarbox collect NAME`)
 * @run: starts a run; must return at once
 * @user_data: passed to @run
 *
 * A collector registration.
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  const char *name;
  void (*run) (PbCollectorRun *run, gpointer user_data);
  gpointer user_data;
} PbCollectorSpec;

/**
 * pb_module_add_collector:
 * @module: the registering module (only during `init`)
 * @spec: the collector (copied)
 * @error: where to report a duplicate name
 *
 * Returns: %TRUE on success
 *
 * Since: ABI 1.0
 */
PB_API gboolean pb_module_add_collector (PbModule *module, const PbCollectorSpec *spec, GError **error);

/**
 * pb_collector_run_get_name:
 * @run: a run
 *
 * Returns: (transfer none): the collector's name
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_collector_run_get_name (PbCollectorRun *run);

/**
 * pb_collector_run_complete:
 * @run: (transfer full): a run
 * @error: (nullable): why it failed, or %NULL
 *
 * Since: ABI 1.0
 */
PB_API void pb_collector_run_complete (PbCollectorRun *run, const GError *error);

PB_END_DECLS

#endif /* PILLARBOX_PB_TRANSPORT_H */
