/* SPDX-License-Identifier: MIT */
/* mx-sender internals: settings, the MX plan (RFC 5321 §5.1, RFC 7505), deliveries. */
#ifndef PILLARBOX_MX_PRIVATE_H
#define PILLARBOX_MX_PRIVATE_H

#include <pillarbox/pillarbox.h>

#include "smtpc.h"

G_BEGIN_DECLS

#define MX_ERROR (g_quark_from_static_string ("mx-sender-error"))

enum { MX_TLS_NONE, MX_TLS_OPPORTUNISTIC, MX_TLS_REQUIRED };
enum { MX_PREFER_IPV4, MX_PREFER_IPV6 };

typedef struct {
  char *helo_name;
  gint64 port;
  gint tls;
  gboolean verify_certificate;
  gint address_preference;
  gint64 max_mx_hosts;
  gint64 max_addresses;
  gint64 max_connections;
  gint64 max_messages_per_session;
  gint64 max_recipients_per_message;
  gint64 reuse_time;
  gint64 connect_timeout;
  gint64 command_timeout;
  gint64 data_init_timeout;
  gint64 data_block_timeout;
  gint64 data_done_timeout;
} MxConfig;

/* [mx-override DOMAIN] */
typedef struct {
  char **hosts;
  gint tls;
  gboolean verify_certificate;
} MxOverrideConfig;

/* ---- the MX plan (mx-plan.c, pure) ------------------------------------ */

typedef struct {
  guint preference;
  char *host;
} MxHost;

void mx_host_free (gpointer host);

typedef enum {
  MX_PLAN_HOSTS,     /* try these hosts in order */
  MX_PLAN_NULL_MX,   /* RFC 7505: the domain accepts no mail */
  MX_PLAN_LOOP,      /* every usable MX is this server or less preferred than it */
  MX_PLAN_INVALID    /* no record could be read */
} MxPlanKind;

/* From MX answers ("PREF HOST"): the hosts by preference, equal ones in
 * random order (RFC 5321 §5.1), at most @max_hosts, without this server
 * (@self_names) and every host not preferred over it. A record whose host
 * is not a host name (mx_is_host_name()) is dropped as unreadable; when
 * @refused is not NULL, its host, made printable (smtpc_text_escape()),
 * is added to it for the log. */
MxPlanKind mx_plan_from_records (const char *const *records, const char *const *self_names, guint max_hosts,
                                 GRand *rand, GPtrArray *refused, GPtrArray **hosts);
/* RFC 1123 §2.1 (RFC 1035 §2.3.1, RFC 5321 §4.1.2 "Domain"): labels of 1
 * to 63 letters, digits and hyphens, not starting or ending with a hyphen,
 * 253 octets at most; or an IP address, which an MX should not name but
 * which is honoured. */
gboolean mx_is_host_name (const char *name);
/* "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3): the address, or NULL. */
char *mx_domain_literal (const char *domain);

/* ---- the module (mx-module.c, mx-deliver.c) --------------------------- */

typedef struct {
  PbModule *module;
  const MxConfig *config;
  GHashTable *overrides;   /* lower-case domain -> const MxOverrideConfig * */
  SmtpcClient *client;
  GHashTable *deliveries;  /* MxDelivery * under way */
  GRand *rand;
} Mx;

void mx_deliver (PbDelivery *delivery, gpointer user_data);
void mx_deliveries_cancel (Mx *mx);

G_END_DECLS

#endif /* PILLARBOX_MX_PRIVATE_H */
