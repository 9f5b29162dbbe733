/* SPDX-License-Identifier: MIT */
/* spf internals: results, record parsing, macro expansion (pure) and the asynchronous check_host(). */
#ifndef PILLARBOX_SPF_PRIVATE_H
#define PILLARBOX_SPF_PRIVATE_H

#include <gio/gio.h>
#include <pillarbox/pb-dns.h>
#include <pillarbox/pb-loop.h>

G_BEGIN_DECLS

#define SPF_ERROR (spf_error_quark ())
GQuark spf_error_quark (void);

typedef enum {
  SPF_ERROR_SYNTAX,            /* a record or macro that does not parse: permerror */
  SPF_ERROR_USAGE              /* a bad argument of the spf-check command */
} SpfErrorCode;

/* The seven results of RFC 7208 §2.6, in the order of its table. */
typedef enum {
  SPF_RESULT_NONE = 0,
  SPF_RESULT_NEUTRAL,
  SPF_RESULT_PASS,
  SPF_RESULT_FAIL,
  SPF_RESULT_SOFTFAIL,
  SPF_RESULT_TEMPERROR,
  SPF_RESULT_PERMERROR,
  SPF_RESULT_COUNT
} SpfResult;

/* "pass", "fail", ... as in Received-SPF and Authentication-Results. */
const char *spf_result_to_string (SpfResult result);

/* §4.6.4: at most 10 terms that query DNS, 10 MX or PTR names looked at. */
#define SPF_MAX_DNS_TERMS 10
#define SPF_MAX_NAMES 10
/* §4.6.4's recommended void lookup limit. */
#define SPF_DEFAULT_MAX_VOID 2
/* §7.3: an expanded name longer than this loses labels on the left. */
#define SPF_MAX_NAME_LENGTH 253

/* ---- records (§4.6, §5, §6, grammar in §12) -------------------------------- */

typedef enum {
  SPF_MECH_ALL,
  SPF_MECH_INCLUDE,
  SPF_MECH_A,
  SPF_MECH_MX,
  SPF_MECH_PTR,
  SPF_MECH_IP4,
  SPF_MECH_IP6,
  SPF_MECH_EXISTS
} SpfMechKind;

typedef struct {
  SpfMechKind kind;
  SpfResult result;            /* what a match yields: the qualifier (§4.6.2) */
  char *domain_spec;           /* NULL: the current <domain> */
  guint8 network[16];          /* ip4 (4 bytes) and ip6 */
  guint cidr4;                 /* 0-32; 32 when not written */
  guint cidr6;                 /* 0-128; 128 when not written */
  char *text;                  /* the term as written, for mechanism= */
} SpfMech;

typedef struct {
  GPtrArray *mechs;            /* SpfMech *, in record order */
  char *redirect;              /* domain-spec, or NULL */
  char *exp;                   /* domain-spec, or NULL */
  gboolean has_all;            /* an "all" anywhere makes redirect ignored (§6.1) */
} SpfRecord;

/* Parses the text of one record that starts with "v=spf1". Any syntax error
 * (§4.6: permerror) returns NULL and says which term is wrong. */
SpfRecord *spf_record_parse (const char *text, GError **error);
void spf_record_free (SpfRecord *record);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpfRecord, spf_record_free)

/* Whether TEXT is an SPF version 1 record: "v=spf1" then a space or nothing (§4.5). */
gboolean spf_is_spf1 (const char *text);

typedef enum {
  SPF_SELECT_NONE,             /* no v=spf1 record: result none */
  SPF_SELECT_ONE,
  SPF_SELECT_MANY              /* more than one: permerror */
} SpfSelect;

/* §4.5 record selection among the TXT strings of a name; *CHOSEN is set for ONE. */
SpfSelect spf_record_select (const char *const *txt, const char **chosen);

/* Whether the first PREFIX bits of A and B (LEN bytes each) are equal. */
gboolean spf_prefix_match (const guint8 *a, const guint8 *b, gsize len, guint prefix);
/* Whether ADDRESS (text as DNS answers give it, or an address) lies in the
 * mechanism's network, with the family's CIDR length. */
gboolean spf_address_match (GInetAddress *client, GInetAddress *address, guint cidr4, guint cidr6);
/* IPv4-mapped IPv6 addresses become IPv4 (§5: an IPv4 client is an IPv4 client). */
GInetAddress *spf_address_normalize (GInetAddress *address);

/* ---- macros (§7) ------------------------------------------------------------- */

typedef enum {
  SPF_MACRO_DOMAIN,            /* a domain-spec: no spaces; c, r and t refused */
  SPF_MACRO_EXPLAIN,           /* explain-string (exp= TXT): spaces, c, r and t allowed */
  SPF_MACRO_ANY                /* unknown-modifier values: syntax only */
} SpfMacroMode;

typedef struct {
  const char *sender;          /* <sender>: local-part@domain */
  const char *domain;          /* <domain>, the current one */
  GInetAddress *ip;            /* <ip>, normalized */
  const char *helo;            /* HELO/EHLO name, or NULL ("unknown") */
  const char *receiver;        /* r: this host */
  const char *validated;       /* p: a validated PTR name, or NULL ("unknown") */
  gint64 timestamp;            /* t: seconds since the epoch */
} SpfMacroContext;

/* Expands TEXT. With CTX == NULL it only checks the syntax (and returns "").
 * Errors are syntax errors: the caller's permerror. */
char *spf_macro_expand (const char *text, const SpfMacroContext *ctx, SpfMacroMode mode, GError **error);
/* Whether TEXT uses the p macro, which needs DNS before expansion. */
gboolean spf_macro_uses_p (const char *text);
/* Whether TEXT is a domain-spec: a macro-string ending in "." toplabel ["."] or in a macro. */
gboolean spf_domain_spec_check (const char *text, GError **error);
/* §7.3: drops labels on the left until NAME fits 253 characters, and the
 * final dot. Returns a new string. */
char *spf_domain_truncate (const char *name);
/* Whether NAME can be asked: labels of 1-63 octets, no spaces or control
 * characters, at least two labels when MULTI_LABEL (§4.3). */
gboolean spf_domain_is_valid (const char *name, gboolean multi_label);
/* The nibble ("i" for IPv6, §7.3) or dotted form of an address. */
char *spf_ip_dotted (GInetAddress *ip);

/* ---- check_host() (§4) ------------------------------------------------------- */

typedef struct {
  GInetAddress *ip;            /* the client; any family, IPv4-mapped is unmapped */
  const char *sender;          /* local-part@domain; "postmaster@" is added when there is no local-part */
  const char *helo;            /* (nullable) */
  const char *receiver;        /* this host, for the r macro */
  const char *default_explanation;  /* macro string for a fail without exp=; NULL for none */
  guint max_void_lookups;      /* §4.6.4; 2 recommended */
  gint64 lookup_timeout_ms;    /* one DNS question that takes longer is a temperror */
  gint64 timeout_ms;           /* the whole check */
} SpfCheckParams;

typedef struct {
  SpfResult result;
  const char *domain;          /* the domain whose record decided, or the initial one */
  const char *mechanism;       /* (nullable) the directive that matched, "default" for none */
  const char *explanation;     /* (nullable) fail only: exp= text or the default */
  const char *problem;         /* (nullable) temperror/permerror: why */
  guint dns_terms;             /* terms that queried DNS, of the 10 allowed */
  guint void_lookups;
} SpfOutcome;

/* Receives the outcome on the loop thread, exactly once, never from inside
 * spf_check_host_start(); also after CANCELLABLE fired (temperror "cancelled"). */
typedef void (*SpfDoneFunc) (const SpfOutcome *outcome, gpointer user_data);

/* Starts check_host() for the domain of PARAMS->sender. */
void spf_check_host_start (PbResolver *resolver, const SpfCheckParams *params, GCancellable *cancellable,
                           SpfDoneFunc done, gpointer user_data);

/* The sender to check for a MAIL FROM address (or HELO name when the
 * reverse path is null): "postmaster@" added when there is no local-part
 * (§4.3). Returns a new string. */
char *spf_sender_for (const char *mail_from, const char *helo);
/* The domain part of SENDER (after the last '@'). */
const char *spf_sender_domain (const char *sender);

G_END_DECLS

#endif /* PILLARBOX_SPF_PRIVATE_H */
