/* SPDX-License-Identifier: MIT */
/* batv: signing and checking prvs tags, the key ring and its state-file text, address patterns. */

/*
 * The tag (draft-levine-smtp-batv-01 §4.1, "prvs", simple private signature):
 *
 *   prvs=KDDDSSSSSS=local@domain
 *
 *   K       the key number, one digit, so a site can rotate keys;
 *   DDD     the day the tag expires, as days since 1970-01-01 (UTC) modulo 1000;
 *   SSSSSS  the first three octets of HMAC-SHA1 (RFC 2104) over the text
 *           "K DDD local@domain" (no spaces: the four digits, then the
 *           original address), in hexadecimal.
 *
 * A day count modulo 1000 is ambiguous: a tag is taken as current when its
 * day lies between today and today + validity (counting across the wrap
 * from 999 to 000), and expired otherwise. Domains are case-insensitive
 * (RFC 5321 §2.4), so the domain goes into the HMAC in lower case and a
 * bounce to Bob@EXAMPLE.org verifies a tag made for Bob@example.org; the
 * local part is hashed as written, since only its owner may fold its case.
 */
#include "config.h"
#include "batv-private.h"

#include <stdlib.h>
#include <string.h>

/* ---- days ------------------------------------------------------------------ */

gint64
batv_day (gint64 now)
{
  /* Floor division: the clock is never before 1970 in practice, but a
   * negative remainder would make a wrong day out of it. */
  return now >= 0 ? now / BATV_DAY_SECONDS : -((-now + BATV_DAY_SECONDS - 1) / BATV_DAY_SECONDS);
}

/* Days from TODAY to the next day whose number modulo 1000 is DDD (0 to 999). */
static gint64
days_until (guint ddd, gint64 today)
{
  return (((gint64) ddd - today % 1000) % 1000 + 1000) % 1000;
}

gint64
batv_expiry_day (guint ddd, gint64 now)
{
  gint64 today = batv_day (now);
  return today + days_until (ddd, today);
}

/* ---- the key ring ------------------------------------------------------------ */

BatvRing *
batv_ring_new (void)
{
  return g_new0 (BatvRing, 1);
}

void
batv_ring_free (BatvRing *ring)
{
  if (ring == NULL)
    return;
  for (guint i = 0; i < BATV_MAX_KEYS; i++)
    if (ring->keys[i] != NULL)
      {
        /* Secrets do not linger in freed memory. */
        memset (ring->keys[i], 0, sizeof *ring->keys[i]);
        g_free (ring->keys[i]);
      }
  g_free (ring);
}

BatvRing *
batv_ring_copy (const BatvRing *ring)
{
  BatvRing *copy = batv_ring_new ();

  for (guint i = 0; i < BATV_MAX_KEYS; i++)
    if (ring->keys[i] != NULL)
      copy->keys[i] = g_memdup2 (ring->keys[i], sizeof *ring->keys[i]);
  return copy;
}

guint
batv_ring_count (const BatvRing *ring)
{
  guint n = 0;

  for (guint i = 0; i < BATV_MAX_KEYS; i++)
    n += ring->keys[i] != NULL;
  return n;
}

void
batv_ring_set (BatvRing *ring, guint number, gint64 created, const guint8 *secret, gsize len)
{
  BatvKey *key;

  g_return_if_fail (number < BATV_MAX_KEYS && len >= BATV_SECRET_MIN && len <= BATV_SECRET_MAX);
  key = ring->keys[number];
  if (key == NULL)
    key = ring->keys[number] = g_new0 (BatvKey, 1);
  memset (key, 0, sizeof *key);
  key->number = number;
  key->created = created;
  memcpy (key->secret, secret, len);
  key->secret_len = len;
}

/* Keys are ordered by creation, then number, so that "newest" never ties. */
static gboolean
key_newer (const BatvKey *a, const BatvKey *b)
{
  return a->created != b->created ? a->created > b->created : a->number > b->number;
}

const BatvKey *
batv_ring_active (const BatvRing *ring)
{
  const BatvKey *best = NULL;

  for (guint i = 0; i < BATV_MAX_KEYS; i++)
    if (ring->keys[i] != NULL && (best == NULL || key_newer (ring->keys[i], best)))
      best = ring->keys[i];
  return best;
}

gint64
batv_ring_superseded_at (const BatvRing *ring, const BatvKey *key)
{
  const BatvKey *next = NULL;

  for (guint i = 0; i < BATV_MAX_KEYS; i++)
    {
      const BatvKey *k = ring->keys[i];
      if (k != NULL && k != key && key_newer (k, key) && (next == NULL || key_newer (next, k)))
        next = k;
    }
  return next != NULL ? next->created : 0;
}

gint64
batv_key_last_day (const BatvRing *ring, const BatvKey *key, gint64 validity_days)
{
  gint64 superseded = batv_ring_superseded_at (ring, key);

  /* The last tag this key made was made before the next key existed, and
   * expires at most validity days after that day. */
  return superseded == 0 ? G_MAXINT64 : batv_day (superseded) + validity_days;
}

gboolean
batv_ring_next_number (const BatvRing *ring, gint64 now, gint64 validity_days, guint *number, gint64 *busy_until)
{
  const BatvKey *active = batv_ring_active (ring);
  guint n = active != NULL ? (active->number + 1) % BATV_MAX_KEYS : 0;
  const BatvKey *old = ring->keys[n];

  *number = n;
  if (old != NULL && old != active)
    {
      gint64 last = batv_key_last_day (ring, old, validity_days);
      if (batv_day (now) <= last)
        {
          /* Replacing it now would turn genuine bounces into "bad" ones. */
          if (busy_until != NULL)
            *busy_until = last;
          return FALSE;
        }
    }
  return TRUE;
}

static gboolean
parse_hex (const char *hex, gsize len, guint8 *out)
{
  for (gsize i = 0; i < len; i++)
    {
      int hi = g_ascii_xdigit_value (hex[2 * i]);
      int lo = hi >= 0 ? g_ascii_xdigit_value (hex[2 * i + 1]) : -1;
      if (lo < 0)
        return FALSE;
      out[i] = (guint8) (hi << 4 | lo);
    }
  return TRUE;
}

guint
batv_ring_parse (BatvRing *ring, const char *text)
{
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
  guint bad = 0;

  for (guint i = 0; lines[i] != NULL; i++)
    {
      g_auto (GStrv) words = NULL;
      const char *w[3];
      guint n = 0;
      guint8 secret[BATV_SECRET_MAX];
      gsize hexlen;
      guint64 number;
      gint64 created;
      char *end;

      g_strstrip (lines[i]);
      if (lines[i][0] == '\0' || lines[i][0] == '#')
        continue;
      words = g_strsplit_set (lines[i], " \t", -1);
      for (guint j = 0; words[j] != NULL; j++)
        if (words[j][0] != '\0')
          {
            if (n == G_N_ELEMENTS (w))
              {
                n++;
                break;
              }
            w[n++] = words[j];
          }
      if (n != 3 || strlen (w[0]) != 1 || !g_ascii_isdigit (w[0][0]))
        {
          bad++;
          continue;
        }
      number = (guint64) (w[0][0] - '0');
      created = g_ascii_strtoll (w[1], &end, 10);
      hexlen = strlen (w[2]);
      if (*end != '\0' || created <= 0 || hexlen % 2 != 0 || hexlen / 2 < BATV_SECRET_MIN
          || hexlen / 2 > BATV_SECRET_MAX || !parse_hex (w[2], hexlen / 2, secret))
        {
          bad++;
          continue;
        }
      batv_ring_set (ring, (guint) number, created, secret, hexlen / 2);
      memset (secret, 0, sizeof secret);
    }
  return bad;
}

char *
batv_ring_serialize (const BatvRing *ring)
{
  GString *out = g_string_new ("# Pillarbox BATV keys, written by the batv module: NUMBER CREATED SECRET\n"
                               "# (CREATED in Unix seconds, SECRET in hexadecimal). The newest key signs.\n"
                               "# Keep this file private; `pillarbox batv rotate` adds a key.\n");

  for (guint i = 0; i < BATV_MAX_KEYS; i++)
    {
      const BatvKey *k = ring->keys[i];
      if (k == NULL)
        continue;
      g_string_append_printf (out, "%u %" G_GINT64_FORMAT " ", k->number, k->created);
      for (gsize j = 0; j < k->secret_len; j++)
        g_string_append_printf (out, "%02x", k->secret[j]);
      g_string_append_c (out, '\n');
    }
  return g_string_free (out, FALSE);
}

char *
batv_ring_merge_texts (const char *file_text, const char *own_text, gint64 now)
{
  BatvRing *file = batv_ring_new ();
  BatvRing *own = batv_ring_new ();
  char *text;

  batv_ring_parse (file, file_text);
  batv_ring_parse (own, own_text);
  for (guint i = 0; i < BATV_MAX_KEYS; i++)
    {
      const BatvKey *k = own->keys[i];
      /* A rotation replaces an old key of the same number with a newer one;
       * two instances that both made a key at once keep the file's. */
      if (k != NULL && (file->keys[i] == NULL || k->created > file->keys[i]->created))
        batv_ring_set (file, i, k->created, k->secret, k->secret_len);
    }
  text = batv_ring_serialize (file);
  batv_ring_free (file);
  batv_ring_free (own);
  return text;
}

/* ---- tags ------------------------------------------------------------------------ */

const char *
batv_result_to_string (BatvResult result)
{
  switch (result)
    {
    case BATV_UNSIGNED: return "unsigned";
    case BATV_VALID: return "valid";
    case BATV_EXPIRED: return "expired";
    case BATV_BAD: return "bad";
    }
  return "bad";
}

void
batv_tag_clear (BatvTag *tag)
{
  g_clear_pointer (&tag->untagged, g_free);
}

gboolean
batv_tag_parse (const char *address, BatvTag *tag)
{
  const char *val, *eq, *at;

  memset (tag, 0, sizeof *tag);
  if (g_ascii_strncasecmp (address, "prvs=", 5) != 0)
    return FALSE;
  val = address + 5;
  eq = strchr (val, '=');
  at = strrchr (address, '@');
  /* The original address follows the second '=' and keeps its local part. */
  if (eq == NULL || at == NULL || at < eq || at == eq + 1 || at[1] == '\0')
    return FALSE;
  tag->untagged = g_strdup (eq + 1);
  if (eq - val == 10 && g_ascii_isdigit (val[0]) && g_ascii_isdigit (val[1]) && g_ascii_isdigit (val[2])
      && g_ascii_isdigit (val[3]) && parse_hex (val + 4, 3, tag->mac))
    {
      tag->well_formed = TRUE;
      tag->key = (guint) (val[0] - '0');
      tag->day = (guint) ((val[1] - '0') * 100 + (val[2] - '0') * 10 + (val[3] - '0'));
    }
  return TRUE;
}

/* HMAC-SHA1 over "KDDD" and the address with its domain in lower case. */
static void
tag_mac (const BatvKey *key, guint day, const char *address, guint8 mac[3])
{
  const char *at = strrchr (address, '@');
  g_autofree char *domain = g_ascii_strdown (at + 1, -1);
  char kddd[8];
  guint8 digest[20];
  gsize len = sizeof digest;
  GHmac *hmac = g_hmac_new (G_CHECKSUM_SHA1, key->secret, key->secret_len);

  g_snprintf (kddd, sizeof kddd, "%u%03u", key->number, day % 1000);
  g_hmac_update (hmac, (const guchar *) kddd, 4);
  g_hmac_update (hmac, (const guchar *) address, at - address + 1);
  g_hmac_update (hmac, (const guchar *) domain, -1);
  g_hmac_get_digest (hmac, digest, &len);
  g_hmac_unref (hmac);
  memcpy (mac, digest, 3);
}

gboolean
batv_address_signable (const char *address)
{
  const char *at = strrchr (address, '@');

  if (at == NULL || at == address || at[1] == '\0' || address[0] == '"')
    return FALSE;
  /* RFC 5321 §4.5.3.1.1: the tag's 16 octets must fit in a 64-octet local part. */
  if (at - address + 16 > 64 || strlen (address) + 16 > 254)
    return FALSE;
  for (const char *p = address; *p != '\0'; p++)
    if ((guchar) *p <= ' ' || *p == 0x7f)
      return FALSE;
  return g_ascii_strncasecmp (address, "prvs=", 5) != 0;
}

char *
batv_sign (const BatvKey *key, const char *address, gint64 now, gint64 validity_days)
{
  guint day;
  guint8 mac[3];

  if (key == NULL || !batv_address_signable (address))
    return NULL;
  day = (guint) ((batv_day (now) + validity_days) % 1000);
  tag_mac (key, day, address, mac);
  return g_strdup_printf ("prvs=%u%03u%02x%02x%02x=%s", key->number, day, mac[0], mac[1], mac[2], address);
}

BatvResult
batv_verify (const BatvRing *ring, const char *address, gint64 now, gint64 validity_days, char **untagged,
             BatvTag *tag_out)
{
  BatvTag tag;
  BatvResult result;
  const BatvKey *key;
  guint8 mac[3];
  gint64 today = batv_day (now);

  if (!batv_tag_parse (address, &tag))
    {
      if (untagged != NULL)
        *untagged = g_strdup (address);
      if (tag_out != NULL)
        memset (tag_out, 0, sizeof *tag_out);
      return BATV_UNSIGNED;
    }
  key = tag.well_formed ? ring->keys[tag.key] : NULL;
  if (key == NULL)
    result = BATV_BAD;
  else
    {
      tag_mac (key, tag.day, tag.untagged, mac);
      /* Compared in full whatever differs first: no timing hint at the octets. */
      if (((mac[0] ^ tag.mac[0]) | (mac[1] ^ tag.mac[1]) | (mac[2] ^ tag.mac[2])) != 0)
        result = BATV_BAD;
      else if (days_until (tag.day, today) > validity_days || today > batv_key_last_day (ring, key, validity_days))
        result = BATV_EXPIRED;
      else
        result = BATV_VALID;
    }
  if (untagged != NULL)
    *untagged = g_strdup (tag.untagged);
  if (tag_out != NULL)
    *tag_out = tag;
  else
    batv_tag_clear (&tag);
  return result;
}

/* ---- patterns ---------------------------------------------------------------------- */

static gboolean
domain_valid (const char *d)
{
  if (g_str_has_prefix (d, "*."))
    d += 2;
  if (*d == '\0' || *d == '.' || g_str_has_suffix (d, ".") || strstr (d, "..") != NULL)
    return FALSE;
  for (const char *p = d; *p != '\0'; p++)
    if (!(g_ascii_isalnum (*p) || *p == '-' || *p == '.' || (guchar) *p >= 0x80))
      return FALSE;
  return TRUE;
}

gboolean
batv_pattern_valid (const char *pattern, gboolean allow_address)
{
  const char *at = strchr (pattern, '@');

  if (at == NULL)
    return domain_valid (pattern);
  if (!allow_address || at == pattern || strchr (at + 1, '@') != NULL || g_str_has_prefix (at + 1, "*."))
    return FALSE;
  for (const char *p = pattern; p < at; p++)
    if ((guchar) *p <= ' ' || *p == 0x7f)
      return FALSE;
  return domain_valid (at + 1);
}

gboolean
batv_domain_matches (const char *const *patterns, const char *domain)
{
  gsize dlen = strlen (domain);

  for (guint i = 0; patterns != NULL && patterns[i] != NULL; i++)
    {
      const char *p = patterns[i];
      if (strchr (p, '@') != NULL)
        continue;
      if (g_str_has_prefix (p, "*."))
        {
          /* "*.example.com": the subdomains, not example.com itself. */
          gsize plen = strlen (p + 1);
          if (dlen > plen && g_ascii_strcasecmp (domain + dlen - plen, p + 1) == 0)
            return TRUE;
        }
      else if (g_ascii_strcasecmp (domain, p) == 0)
        return TRUE;
    }
  return FALSE;
}

gboolean
batv_address_matches (const char *const *patterns, const char *address)
{
  const char *at = strrchr (address, '@');

  for (guint i = 0; patterns != NULL && patterns[i] != NULL; i++)
    if (strchr (patterns[i], '@') != NULL && g_ascii_strcasecmp (patterns[i], address) == 0)
      return TRUE;
  return at != NULL && batv_domain_matches (patterns, at + 1);
}
