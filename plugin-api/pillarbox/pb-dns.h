/* SPDX-License-Identifier: MIT */
/* The core's asynchronous DNS resolver (libunbound on the main loop). */
#ifndef PILLARBOX_PB_DNS_H
#define PILLARBOX_PB_DNS_H

#include <gio/gio.h>
#include <pillarbox/pb-abi.h>
#include <pillarbox/pb-module.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-dns
 * @title: DNS
 *
 * Every DNS question a module asks (MX lookups, SPF, DNSBLs) goes through
 * a #PbResolver: libunbound driven by the main loop, so a lookup never
 * blocks it. pb_module_get_resolver() gives the core's resolver, which
 * asks the servers of `core.dns-servers` (VPOP3's "DNS Servers to Use") or,
 * when that is empty, the system's (resolv.conf). A module that must ask
 * one particular server (`pillarbox spf-check --dns HOST:PORT`) makes its
 * own with pb_resolver_new().
 *
 * Answers come as text, one string per record: A and AAAA as addresses,
 * MX as "PREFERENCE HOST", TXT as the record's character strings
 * concatenated (RFC 7208 §3.3), PTR, CNAME and NS as names (without the
 * final dot). Names are in lower case.
 */

/**
 * PbResolver:
 *
 * A reference-counted DNS resolver.
 *
 * Since: ABI 1.0
 */
typedef struct _PbResolver PbResolver;

/**
 * PB_DNS_A:
 *
 * Record type A (RFC 1035).
 *
 * Since: ABI 1.0
 */
#define PB_DNS_A 1
/**
 * PB_DNS_NS:
 *
 * Record type NS.
 *
 * Since: ABI 1.0
 */
#define PB_DNS_NS 2
/**
 * PB_DNS_CNAME:
 *
 * Record type CNAME.
 *
 * Since: ABI 1.0
 */
#define PB_DNS_CNAME 5
/**
 * PB_DNS_PTR:
 *
 * Record type PTR.
 *
 * Since: ABI 1.0
 */
#define PB_DNS_PTR 12
/**
 * PB_DNS_MX:
 *
 * Record type MX.
 *
 * Since: ABI 1.0
 */
#define PB_DNS_MX 15
/**
 * PB_DNS_TXT:
 *
 * Record type TXT.
 *
 * Since: ABI 1.0
 */
#define PB_DNS_TXT 16
/**
 * PB_DNS_AAAA:
 *
 * Record type AAAA (RFC 3596).
 *
 * Since: ABI 1.0
 */
#define PB_DNS_AAAA 28

/**
 * PbDnsStatus:
 * @PB_DNS_OK: records found
 * @PB_DNS_NXDOMAIN: the name does not exist
 * @PB_DNS_NODATA: the name exists but has no record of that type
 * @PB_DNS_TEMPFAIL: no answer (timeout, SERVFAIL, network); try again later
 * @PB_DNS_PERMFAIL: the question itself is wrong (a malformed name), or REFUSED
 *
 * The outcome of a lookup.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_DNS_OK = 0,
  PB_DNS_NXDOMAIN,
  PB_DNS_NODATA,
  PB_DNS_TEMPFAIL,
  PB_DNS_PERMFAIL
} PbDnsStatus;

/**
 * PbDnsAnswer:
 * @struct_size: sizeof (PbDnsAnswer)
 * @status: the outcome
 * @name: the name asked
 * @rrtype: the type asked
 * @records: %NULL-terminated records as text (see the section description)
 * @ttl: the smallest TTL of the answer, in seconds
 * @secure: %TRUE when DNSSEC validated the answer
 * @error: (nullable): for TEMPFAIL and PERMFAIL, why
 *
 * An answer (read only; valid during the callback).
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  PbDnsStatus status;
  const char *name;
  guint rrtype;
  const char *const *records;
  guint ttl;
  gboolean secure;
  const char *error;
} PbDnsAnswer;

/**
 * PbDnsFunc:
 * @answer: the answer
 * @user_data: as given
 *
 * The end of a lookup, on the loop thread, never from inside
 * pb_resolver_lookup(). Not called when the lookup is cancelled while it
 * runs; called once, with %PB_DNS_TEMPFAIL, when the cancellable was
 * already cancelled at the call (since ABI 1.2; before, that case
 * corrupted memory).
 *
 * Since: ABI 1.0
 */
typedef void (*PbDnsFunc) (const PbDnsAnswer *answer, gpointer user_data);

/**
 * pb_module_get_resolver:
 * @module: a module instance (not while checking a configuration)
 *
 * Returns: (transfer none): the core's resolver
 *
 * Since: ABI 1.0
 */
PB_API PbResolver *pb_module_get_resolver (PbModule *module);

/**
 * pb_resolver_new:
 * @servers: (nullable): comma-separated servers ("192.0.2.53", "127.0.0.1:5353",
 *   "[::1]:53"); %NULL or "" for the system's
 * @error: where to report a malformed server
 *
 * Makes a resolver of one's own.
 *
 * Returns: (transfer full) (nullable): the resolver
 *
 * Since: ABI 1.0
 */
PB_API PbResolver *pb_resolver_new (const char *servers, GError **error);

/**
 * pb_resolver_ref:
 * @resolver: a resolver
 *
 * Returns: (transfer full): @resolver
 *
 * Since: ABI 1.0
 */
PB_API PbResolver *pb_resolver_ref (PbResolver *resolver);

/**
 * pb_resolver_unref:
 * @resolver: (transfer full): a resolver; lookups still running are cancelled
 *   when the last reference goes
 *
 * Since: ABI 1.0
 */
PB_API void pb_resolver_unref (PbResolver *resolver);

/**
 * pb_resolver_lookup:
 * @resolver: a resolver
 * @name: the name to look up
 * @rrtype: %PB_DNS_A, %PB_DNS_MX, ...
 * @cancellable: (nullable): cancelling it drops the lookup; @done is then not
 *   called. A cancellable cancelled already starts nothing, and @done gets
 *   %PB_DNS_TEMPFAIL later, on the loop
 * @done: called once with the answer
 * @user_data: passed to @done
 *
 * Starts a lookup.
 *
 * Since: ABI 1.0
 */
PB_API void pb_resolver_lookup (PbResolver *resolver, const char *name, guint rrtype, GCancellable *cancellable,
                                PbDnsFunc done, gpointer user_data);

/**
 * pb_dns_reverse_name:
 * @address: an IPv4 or IPv6 address
 *
 * The name to look up for @address's PTR record ("4.3.2.1.in-addr.arpa",
 * nibbles under "ip6.arpa").
 *
 * Returns: (transfer full): the name
 *
 * Since: ABI 1.0
 */
PB_API char *pb_dns_reverse_name (GInetAddress *address);

PB_END_DECLS

#endif /* PILLARBOX_PB_DNS_H */
