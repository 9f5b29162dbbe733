/* SPDX-License-Identifier: MIT */
/* load-limit internals: address lists, limit scopes and the admission arithmetic (no core calls). */
#ifndef PILLARBOX_LL_PRIVATE_H
#define PILLARBOX_LL_PRIVATE_H

#include <gio/gio.h>

G_BEGIN_DECLS

/* ---- address lists ------------------------------------------------------ */

/* A list of CIDR prefixes as the core hands over a PB_SETTING_TYPE_ADDRESS_LIST
 * (wildcards such as 192.168.1.* are already converted to 192.168.1.0/24). */
typedef struct _LlAddrList LlAddrList;

LlAddrList *ll_addr_list_new (const char *const *prefixes, GError **error);
void ll_addr_list_free (LlAddrList *list);
gboolean ll_addr_list_is_empty (const LlAddrList *list);
/* Whether ADDRESS is in LIST. An IPv4 address never matches an IPv6 prefix
 * and the other way round. */
gboolean ll_addr_list_match (const LlAddrList *list, GInetAddress *address);
/* Text as pb_session_get_peer_ip() gives it to an address; NULL when unparsable. */
GInetAddress *ll_address_parse (const char *text);

/* The per-address key: the address itself for IPv4, its first V6_PREFIX
 * bits for IPv6 ("2001:db8:1:2::/64"), since one IPv6 client owns a whole
 * prefix. Returns a new string. */
char *ll_address_key (GInetAddress *address, guint v6_prefix);

/* ---- scopes ------------------------------------------------------------- */

/* One set of limits and its live counts: the module's own group (all
 * listeners), one service, or one listener. Zero means "no limit". */
typedef struct {
  gint64 max_sessions;        /* incoming sessions, all addresses */
  gint64 max_per_address;     /* incoming sessions from one address */
  gint64 max_local_sessions;  /* sessions from local-networks */
  gint64 reserved;            /* of max_sessions, kept for reserved_for */
} LlLimits;

typedef struct {
  char *name;                 /* "global", "service smtp", "listener submission" */
  LlLimits limits;
  LlAddrList *reserved_for;
  guint incoming;             /* incoming sessions admitted and not yet ended */
  guint others;               /* of those, from addresses not in reserved_for */
  guint local;                /* local sessions */
  GHashTable *per_address;    /* address key -> GUINT_TO_POINTER (incoming sessions) */
} LlScope;

typedef enum {
  LL_ADMIT = 0,
  LL_REFUSE_PER_ADDRESS,      /* max-per-address */
  LL_REFUSE_UNRESERVED,       /* max-sessions - reserved, for addresses not reserved */
  LL_REFUSE_TOTAL,            /* max-sessions */
  LL_REFUSE_LOCAL             /* max-local-sessions */
} LlDecision;

/* How one client looks to one scope. */
typedef struct {
  const char *key;            /* ll_address_key() */
  gboolean local;
  gboolean reserved;          /* in this scope's reserved_for */
} LlClient;

LlScope *ll_scope_new (const char *name, const LlLimits *limits, LlAddrList *reserved_for);
void ll_scope_free (LlScope *scope);
/* Would CLIENT fit? Pure: changes nothing. */
LlDecision ll_scope_check (const LlScope *scope, const LlClient *client);
void ll_scope_add (LlScope *scope, const LlClient *client);
void ll_scope_remove (LlScope *scope, const LlClient *client);
guint ll_scope_count_address (const LlScope *scope, const char *key);
const char *ll_decision_to_string (LlDecision decision);

G_END_DECLS

#endif /* PILLARBOX_LL_PRIVATE_H */
