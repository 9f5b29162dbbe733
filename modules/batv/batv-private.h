/* SPDX-License-Identifier: MIT */
/* batv: prvs tags (draft-levine-smtp-batv-01 §4.1) and the key ring, free of the core so tests can drive them. */
#ifndef PILLARBOX_BATV_PRIVATE_H
#define PILLARBOX_BATV_PRIVATE_H

#include <glib.h>

G_BEGIN_DECLS

/* The tag's key number is one decimal digit. */
#define BATV_MAX_KEYS 10
/* Fresh secrets; a file may hold any length from 16 to 64 octets. */
#define BATV_SECRET_LEN 32
#define BATV_SECRET_MIN 16
#define BATV_SECRET_MAX 64
#define BATV_DAY_SECONDS G_GINT64_CONSTANT (86400)

typedef struct {
  guint number;
  gint64 created;                 /* Unix seconds */
  guint8 secret[BATV_SECRET_MAX];
  gsize secret_len;
} BatvKey;

/* At most one key per number; the newest (largest `created`) signs. */
typedef struct {
  BatvKey *keys[BATV_MAX_KEYS];
} BatvRing;

BatvRing *batv_ring_new (void);
void batv_ring_free (BatvRing *ring);
BatvRing *batv_ring_copy (const BatvRing *ring);
guint batv_ring_count (const BatvRing *ring);
/* Adds or replaces the key with NUMBER. */
void batv_ring_set (BatvRing *ring, guint number, gint64 created, const guint8 *secret, gsize len);
/* Reads the state file's text into an empty ring; returns how many lines were unreadable. */
guint batv_ring_parse (BatvRing *ring, const char *text);
/* The state file's text: canonical (sorted by number), so an unchanged ring writes nothing. */
char *batv_ring_serialize (const BatvRing *ring);
/* The merge of the state store: per number, the newer key wins; on a tie the file's. */
char *batv_ring_merge_texts (const char *file_text, const char *own_text, gint64 now);
/* The signing key, or NULL for an empty ring. */
const BatvKey *batv_ring_active (const BatvRing *ring);
/* When KEY stopped signing (the creation of the next newer key), 0 while it signs. */
gint64 batv_ring_superseded_at (const BatvRing *ring, const BatvKey *key);
/* The last Unix day on which tags of KEY can still be valid, or G_MAXINT64 for the signing key. */
gint64 batv_key_last_day (const BatvRing *ring, const BatvKey *key, gint64 validity_days);
/* The number a rotation gives the new key: the one after the signing key's,
 * unless that number's key may still have valid tags out there (then FALSE,
 * with the last day it verifies in *busy_until). */
gboolean batv_ring_next_number (const BatvRing *ring, gint64 now, gint64 validity_days, guint *number,
                                gint64 *busy_until);

/* Days since the epoch (UTC), the draft's day count. */
gint64 batv_day (gint64 now);

typedef enum {
  BATV_UNSIGNED = 0,   /* no prvs= tag */
  BATV_VALID,
  BATV_EXPIRED,        /* a genuine tag past its day, or of a key retired since */
  BATV_BAD             /* malformed, unknown key number, or a wrong signature */
} BatvResult;

const char *batv_result_to_string (BatvResult result);

typedef struct {
  char *untagged;       /* the address without the tag */
  gboolean well_formed; /* the tag has the K DDD SSSSSS shape */
  guint key;            /* when well_formed */
  guint day;            /* DDD, when well_formed */
  guint8 mac[3];        /* SSSSSS, when well_formed */
} BatvTag;

/* Whether ADDRESS looks like "prvs=ANYTHING=local@domain"; fills TAG (clear it after). */
gboolean batv_tag_parse (const char *address, BatvTag *tag);
void batv_tag_clear (BatvTag *tag);

/* Whether ADDRESS can carry a tag: local@domain, a dot-atom local part short
 * enough to stay within RFC 5321's 64 octets with the tag, not tagged yet. */
gboolean batv_address_signable (const char *address);
/* "prvs=KDDDSSSSSS=local@domain" with KEY, expiring VALIDITY_DAYS after NOW's day. */
char *batv_sign (const BatvKey *key, const char *address, gint64 now, gint64 validity_days);
/* Checks ADDRESS against the ring; *UNTAGGED (optional) receives the address
 * without its tag (a copy of ADDRESS when unsigned). */
BatvResult batv_verify (const BatvRing *ring, const char *address, gint64 now, gint64 validity_days,
                        char **untagged, BatvTag *tag_out);
/* The Unix day a valid tag with DDD expires on, seen from NOW (the next such day). */
gint64 batv_expiry_day (guint ddd, gint64 now);

/* exclude-senders and exclude-destinations: "user@domain", "domain" or "*.domain". */
gboolean batv_pattern_valid (const char *pattern, gboolean allow_address);
gboolean batv_address_matches (const char *const *patterns, const char *address);
gboolean batv_domain_matches (const char *const *patterns, const char *domain);

G_END_DECLS

#endif /* PILLARBOX_BATV_PRIVATE_H */
