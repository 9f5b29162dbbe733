/* SPDX-License-Identifier: MIT */
/* ids internals: prefixes, event scores over a sliding period, blocks that merge, the state file. */
#ifndef PILLARBOX_IDS_PRIVATE_H
#define PILLARBOX_IDS_PRIVATE_H

#include <gio/gio.h>

G_BEGIN_DECLS

#define IDS_ERROR (g_quark_from_static_string ("ids-error"))

/* Times are microseconds since 1970 (g_get_real_time()): blocks outlive the
 * process, so they are kept in wall-clock time. */
#define IDS_NEVER G_MAXINT64

/* The numbers in "IDS event N (...)" log lines; see docs/ids.md. The first
 * ones are the ABI's PbEventKind values, which never change. */
typedef enum {
  IDS_EVENT_AUTH_FAILED = 1,
  IDS_EVENT_UNKNOWN_RECIPIENT = 3,
  IDS_EVENT_RELAY_DENIED = 4,
  IDS_EVENT_PROTOCOL_ERROR = 5,
  IDS_EVENT_TOO_MANY_CONNECTIONS = 6,
  IDS_EVENT_BLOCKED = 20,
  IDS_EVENT_REFUSED = 21,
  IDS_EVENT_REFUSED_BLOCK_LIST = 22,
  IDS_EVENT_MANUAL_BLOCK = 23,
  IDS_EVENT_UNBLOCKED = 24
} IdsEventNumber;

const char *ids_event_name (IdsEventNumber number);

/* ---- addresses and prefixes -------------------------------------------- */

/* A prefix in canonical form "ADDRESS/LENGTH" with the host bits cleared
 * ("192.0.2.7/32", "2001:db8:1:2::/64"). */
char *ids_prefix_of (GInetAddress *address, guint length);
/* An administrator's text: an address, a prefix (CIDR) or an IPv4 wildcard
 * (192.168.1.*) into canonical form. */
char *ids_prefix_canonical (const char *text, GError **error);
/* "192.0.2.7/32" -> "192.0.2.7"; other prefixes unchanged. */
char *ids_prefix_display (const char *prefix);

/* A list of masks for the never-block and block settings. */
typedef struct _IdsAddrList IdsAddrList;
IdsAddrList *ids_addr_list_new (const char *const *prefixes, GError **error);
void ids_addr_list_free (IdsAddrList *list);
gboolean ids_addr_list_match (const IdsAddrList *list, GInetAddress *address);
guint ids_addr_list_length (const IdsAddrList *list);

/* "90s", "30m", "2h", "1d", a bare number of seconds, or "forever" (IDS_NEVER). */
gboolean ids_parse_duration (const char *text, gint64 *usec, GError **error);
char *ids_format_duration (gint64 usec);

/* ---- the table: scores and blocks -------------------------------------- */

typedef struct {
  char *prefix;        /* canonical */
  gint64 created;
  gint64 expires;      /* IDS_NEVER for a block without end */
  gboolean active;     /* FALSE: an unblock, kept so it wins over older copies of the block */
  char *reason;
} IdsBlock;

typedef struct _IdsTable IdsTable;

IdsTable *ids_table_new (void);
void ids_table_free (IdsTable *table);

/* Adds WEIGHT for KEY at NOW and returns the sum of the weights of KEY's
 * events in (NOW - PERIOD, NOW]. */
gint64 ids_table_add_event (IdsTable *table, const char *key, gint64 weight, gint64 now, gint64 period);
gint64 ids_table_score (IdsTable *table, const char *key, gint64 now, gint64 period);
void ids_table_clear_score (IdsTable *table, const char *key);
guint ids_table_n_scores (IdsTable *table);
/* KEY -> score, for `ids scores`. */
GHashTable *ids_table_scores (IdsTable *table, gint64 now, gint64 period);

/* Blocks PREFIX from NOW until EXPIRES (replacing what was there). */
const IdsBlock *ids_table_block (IdsTable *table, const char *prefix, gint64 now, gint64 expires, const char *reason);
/* Lifts a block; FALSE when PREFIX had no active block. The unblock is
 * remembered until KEEP_UNTIL (at least as long as the block it lifts would
 * have lasted) so that older copies of the block do not come back. */
gboolean ids_table_unblock (IdsTable *table, const char *prefix, gint64 now, gint64 keep_until);
/* The active block covering ADDRESS at NOW (the longest prefix), or NULL. */
const IdsBlock *ids_table_lookup (IdsTable *table, GInetAddress *address, gint64 now);
/* Active blocks, sorted by prefix; the array owns nothing. */
GPtrArray *ids_table_list (IdsTable *table, gint64 now);
/* Drops expired blocks and unblocks and events older than PERIOD. */
void ids_table_prune (IdsTable *table, gint64 now, gint64 period);

/* Blocks as text (the state file's format), without expired records. */
char *ids_table_serialize (IdsTable *table, gint64 now);
/* Merges the records of TEXT: for each prefix, the record created last wins
 * (so a block and a later unblock meet in the same state whatever order two
 * writers save in). Sets *CHANGED when the table changed; bad lines are
 * skipped and counted in *BAD. */
void ids_table_merge_text (IdsTable *table, const char *text, gint64 now, gboolean *changed, guint *bad);
/* The merge of two state files' texts, as a new text (used by the store). */
char *ids_merge_texts (const char *a, const char *b, gint64 now);

/* The state file: modules/state-store/state-store.h. */
#include "../state-store/state-store.h"

G_END_DECLS

#endif /* PILLARBOX_IDS_PRIVATE_H */
