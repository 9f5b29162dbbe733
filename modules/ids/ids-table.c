/* SPDX-License-Identifier: MIT */
/* ids bookkeeping: prefixes, weighted events over a sliding period, blocks and their merge. */
#include "config.h"
#include "ids-private.h"

#include <stdlib.h>
#include <string.h>

const char *
ids_event_name (IdsEventNumber number)
{
  switch (number)
    {
    case IDS_EVENT_AUTH_FAILED: return "auth-failed";
    case IDS_EVENT_UNKNOWN_RECIPIENT: return "unknown-recipient";
    case IDS_EVENT_RELAY_DENIED: return "relay-denied";
    case IDS_EVENT_PROTOCOL_ERROR: return "protocol-error";
    case IDS_EVENT_TOO_MANY_CONNECTIONS: return "too-many-connections";
    case IDS_EVENT_BLOCKED: return "blocked";
    case IDS_EVENT_REFUSED: return "refused";
    case IDS_EVENT_REFUSED_BLOCK_LIST: return "refused-block-list";
    case IDS_EVENT_MANUAL_BLOCK: return "manual-block";
    case IDS_EVENT_UNBLOCKED: return "unblocked";
    }
  return "unknown";
}

/* ---- prefixes ------------------------------------------------------------ */

char *
ids_prefix_of (GInetAddress *address, guint length)
{
  gsize size = g_inet_address_get_native_size (address);
  guint8 bytes[16];
  g_autoptr (GInetAddress) masked = NULL;
  g_autofree char *text = NULL;

  if (length > size * 8)
    length = (guint) size * 8;
  memcpy (bytes, g_inet_address_to_bytes (address), size);
  for (guint bit = length; bit < size * 8; bit++)
    bytes[bit / 8] &= (guint8) ~(0x80u >> (bit % 8));
  masked = g_inet_address_new_from_bytes (bytes, g_inet_address_get_family (address));
  text = g_inet_address_to_string (masked);
  return g_strdup_printf ("%s/%u", text, length);
}

/* Splits a canonical prefix; FALSE when it is not one. */
static gboolean
ids_prefix_parse (const char *prefix, GInetAddress **address, guint *length)
{
  const char *slash = strrchr (prefix, '/');
  g_autofree char *addr = NULL;
  char *end = NULL;
  guint64 len;

  if (slash == NULL || slash[1] == '\0')
    return FALSE;
  addr = g_strndup (prefix, slash - prefix);
  len = g_ascii_strtoull (slash + 1, &end, 10);
  if (*end != '\0' || !g_ascii_isdigit (slash[1]))
    return FALSE;
  *address = g_inet_address_new_from_string (addr);
  if (*address == NULL)
    return FALSE;
  if (len > g_inet_address_get_native_size (*address) * 8)
    {
      g_clear_object (address);
      return FALSE;
    }
  *length = (guint) len;
  return TRUE;
}

char *
ids_prefix_canonical (const char *text, GError **error)
{
  g_autoptr (GInetAddress) address = NULL;
  guint length;

  if (text == NULL || *text == '\0')
    goto bad;
  if (strchr (text, '*') != NULL)
    {
      /* IPv4 wildcards as in the configuration: leading octets, then '*'. */
      g_auto (GStrv) octets = g_strsplit (text, ".", -1);
      guint n = g_strv_length (octets);
      guint8 bytes[4] = { 0 };
      guint fixed = 0;

      if (n < 2 || n > 4 || strcmp (octets[n - 1], "*") != 0)
        goto bad;
      for (; fixed < n - 1; fixed++)
        {
          char *end = NULL;
          guint64 v = g_ascii_strtoull (octets[fixed], &end, 10);
          if (!g_ascii_isdigit (octets[fixed][0]) || *end != '\0' || v > 255)
            goto bad;
          bytes[fixed] = (guint8) v;
        }
      address = g_inet_address_new_from_bytes (bytes, G_SOCKET_FAMILY_IPV4);
      return ids_prefix_of (address, fixed * 8);
    }
  if (strchr (text, '/') != NULL)
    {
      if (!ids_prefix_parse (text, &address, &length))
        goto bad;
      return ids_prefix_of (address, length);
    }
  address = g_inet_address_new_from_string (text);
  if (address == NULL)
    goto bad;
  return ids_prefix_of (address, (guint) g_inet_address_get_native_size (address) * 8);
bad:
  g_set_error (error, IDS_ERROR, 0, "'%s' is not an IP address, prefix (192.0.2.0/24) or wildcard (192.168.1.*)",
               text != NULL ? text : "");
  return NULL;
}

char *
ids_prefix_display (const char *prefix)
{
  g_autoptr (GInetAddress) address = NULL;
  guint length;

  if (ids_prefix_parse (prefix, &address, &length) && length == g_inet_address_get_native_size (address) * 8)
    return g_inet_address_to_string (address);
  return g_strdup (prefix);
}

/* ---- address lists -------------------------------------------------------- */

struct _IdsAddrList {
  GPtrArray *masks;
};

IdsAddrList *
ids_addr_list_new (const char *const *prefixes, GError **error)
{
  IdsAddrList *list = g_new0 (IdsAddrList, 1);

  list->masks = g_ptr_array_new_with_free_func (g_object_unref);
  for (guint i = 0; prefixes != NULL && prefixes[i] != NULL; i++)
    {
      GInetAddressMask *mask = g_inet_address_mask_new_from_string (prefixes[i], error);
      if (mask == NULL)
        {
          ids_addr_list_free (list);
          return NULL;
        }
      g_ptr_array_add (list->masks, mask);
    }
  return list;
}

void
ids_addr_list_free (IdsAddrList *list)
{
  if (list == NULL)
    return;
  g_ptr_array_unref (list->masks);
  g_free (list);
}

gboolean
ids_addr_list_match (const IdsAddrList *list, GInetAddress *address)
{
  for (guint i = 0; list != NULL && address != NULL && i < list->masks->len; i++)
    if (g_inet_address_mask_matches (g_ptr_array_index (list->masks, i), address))
      return TRUE;
  return FALSE;
}

guint
ids_addr_list_length (const IdsAddrList *list)
{
  return list != NULL ? list->masks->len : 0;
}

/* ---- durations ------------------------------------------------------------ */

gboolean
ids_parse_duration (const char *text, gint64 *usec, GError **error)
{
  char *end = NULL;
  guint64 n;
  gint64 unit = 1;
  const gint64 second = G_USEC_PER_SEC;

  if (text != NULL && (g_ascii_strcasecmp (text, "forever") == 0 || g_ascii_strcasecmp (text, "permanent") == 0))
    {
      *usec = IDS_NEVER;
      return TRUE;
    }
  if (text == NULL || !g_ascii_isdigit (text[0]))
    goto bad;
  n = g_ascii_strtoull (text, &end, 10);
  if (end[0] != '\0' && end[1] != '\0')
    goto bad;
  switch (end[0])
    {
    case '\0':
    case 's': unit = second; break;
    case 'm': unit = 60 * second; break;
    case 'h': unit = 3600 * second; break;
    case 'd': unit = 86400 * second; break;
    default: goto bad;
    }
  /* At most ten years; beyond that, say "forever". */
  if (n == 0 || n > (guint64) (G_GINT64_CONSTANT (3650) * 86400 * G_USEC_PER_SEC) / (guint64) unit)
    goto bad;
  *usec = (gint64) n * unit;
  return TRUE;
bad:
  g_set_error (error, IDS_ERROR, 0, "'%s' is not a duration (90s, 30m, 2h, 1d or forever)", text != NULL ? text : "");
  return FALSE;
}

char *
ids_format_duration (gint64 usec)
{
  static const struct {
    char unit;
    gint64 seconds;
  } units[] = { { 'd', 86400 }, { 'h', 3600 }, { 'm', 60 }, { 's', 1 } };
  gint64 s = usec / G_USEC_PER_SEC;
  GString *out;

  if (usec == IDS_NEVER)
    return g_strdup ("forever");
  if (s <= 0)
    return g_strdup ("0s");
  /* Exact and short: "1h", "59m41s", "1d2h". */
  out = g_string_new (NULL);
  for (guint i = 0; i < G_N_ELEMENTS (units); i++)
    if (s >= units[i].seconds)
      {
        g_string_append_printf (out, "%" G_GINT64_FORMAT "%c", s / units[i].seconds, units[i].unit);
        s %= units[i].seconds;
      }
  return g_string_free (out, FALSE);
}

/* ---- the table ------------------------------------------------------------ */

typedef struct {
  gint64 time;
  gint64 weight;
} IdsHit;

struct _IdsTable {
  GHashTable *scores;    /* key -> GArray of IdsHit, oldest first */
  GHashTable *blocks;    /* canonical prefix -> IdsBlock * */
  /* How many records have each prefix length, per family, so a lookup
   * tries only the lengths present (an exact match per length). */
  guint v4_lengths[33];
  guint v6_lengths[129];
};

static void
ids_block_free (gpointer p)
{
  IdsBlock *b = p;
  g_free (b->prefix);
  g_free (b->reason);
  g_free (b);
}

IdsTable *
ids_table_new (void)
{
  IdsTable *t = g_new0 (IdsTable, 1);

  t->scores = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_array_unref);
  t->blocks = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, ids_block_free);
  return t;
}

void
ids_table_free (IdsTable *table)
{
  if (table == NULL)
    return;
  g_hash_table_unref (table->scores);
  g_hash_table_unref (table->blocks);
  g_free (table);
}

static void
ids_hits_prune (GArray *hits, gint64 now, gint64 period)
{
  guint old = 0;

  while (old < hits->len && g_array_index (hits, IdsHit, old).time <= now - period)
    old++;
  if (old > 0)
    g_array_remove_range (hits, 0, old);
}

static gint64
ids_hits_sum (GArray *hits)
{
  gint64 sum = 0;
  for (guint i = 0; i < hits->len; i++)
    sum += g_array_index (hits, IdsHit, i).weight;
  return sum;
}

gint64
ids_table_add_event (IdsTable *table, const char *key, gint64 weight, gint64 now, gint64 period)
{
  GArray *hits = g_hash_table_lookup (table->scores, key);
  IdsHit hit = { now, weight };

  if (hits == NULL)
    {
      hits = g_array_new (FALSE, FALSE, sizeof (IdsHit));
      g_hash_table_insert (table->scores, g_strdup (key), hits);
    }
  ids_hits_prune (hits, now, period);
  g_array_append_val (hits, hit);
  return ids_hits_sum (hits);
}

gint64
ids_table_score (IdsTable *table, const char *key, gint64 now, gint64 period)
{
  GArray *hits = g_hash_table_lookup (table->scores, key);

  if (hits == NULL)
    return 0;
  ids_hits_prune (hits, now, period);
  return ids_hits_sum (hits);
}

void
ids_table_clear_score (IdsTable *table, const char *key)
{
  g_hash_table_remove (table->scores, key);
}

guint
ids_table_n_scores (IdsTable *table)
{
  return g_hash_table_size (table->scores);
}

GHashTable *
ids_table_scores (IdsTable *table, gint64 now, gint64 period)
{
  GHashTable *out = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  GHashTableIter it;
  gpointer k, v;

  g_hash_table_iter_init (&it, table->scores);
  while (g_hash_table_iter_next (&it, &k, &v))
    {
      ids_hits_prune (v, now, period);
      if (((GArray *) v)->len > 0)
        g_hash_table_insert (out, g_strdup (k), GINT_TO_POINTER ((gint) MIN (ids_hits_sum (v), G_MAXINT)));
    }
  return out;
}

/* Keeps the per-length counts in step with the blocks table. */
static void
ids_table_count_prefix (IdsTable *table, const char *prefix, gint delta)
{
  g_autoptr (GInetAddress) address = NULL;
  guint length;

  if (!ids_prefix_parse (prefix, &address, &length))
    return;
  if (g_inet_address_get_family (address) == G_SOCKET_FAMILY_IPV4)
    table->v4_lengths[length] += (guint) delta;
  else
    table->v6_lengths[length] += (guint) delta;
}

static void
ids_table_put (IdsTable *table, IdsBlock *block)
{
  if (!g_hash_table_contains (table->blocks, block->prefix))
    ids_table_count_prefix (table, block->prefix, 1);
  g_hash_table_replace (table->blocks, block->prefix, block);
}

static void
ids_table_drop (IdsTable *table, const char *prefix)
{
  g_autofree char *p = g_strdup (prefix);
  if (g_hash_table_remove (table->blocks, p))
    ids_table_count_prefix (table, p, -1);
}

static IdsBlock *
ids_block_new (const char *prefix, gint64 created, gint64 expires, gboolean active, const char *reason)
{
  IdsBlock *b = g_new0 (IdsBlock, 1);

  b->prefix = g_strdup (prefix);
  b->created = created;
  b->expires = expires;
  b->active = active;
  /* The reason is the last field of a line in the state file. */
  b->reason = g_strdup (reason != NULL && *reason != '\0' ? reason : "-");
  g_strdelimit (b->reason, "\r\n\t", ' ');
  return b;
}

const IdsBlock *
ids_table_block (IdsTable *table, const char *prefix, gint64 now, gint64 expires, const char *reason)
{
  IdsBlock *b = ids_block_new (prefix, now, expires, TRUE, reason);
  IdsBlock *old = g_hash_table_lookup (table->blocks, prefix);

  /* The clock may not move between two calls: a new record must still win. */
  if (old != NULL && old->created >= now)
    b->created = old->created + 1;
  ids_table_put (table, b);
  return b;
}

gboolean
ids_table_unblock (IdsTable *table, const char *prefix, gint64 now, gint64 keep_until)
{
  IdsBlock *old = g_hash_table_lookup (table->blocks, prefix);
  gboolean was = old != NULL && old->active && old->expires > now;
  IdsBlock *b;

  if (old != NULL && old->expires > keep_until)
    keep_until = old->expires;
  b = ids_block_new (prefix, now, keep_until, FALSE, "unblocked");
  if (old != NULL && old->created >= now)
    b->created = old->created + 1;
  ids_table_put (table, b);
  return was;
}

const IdsBlock *
ids_table_lookup (IdsTable *table, GInetAddress *address, gint64 now)
{
  gboolean v4 = g_inet_address_get_family (address) == G_SOCKET_FAMILY_IPV4;
  const guint *lengths = v4 ? table->v4_lengths : table->v6_lengths;
  gint max = v4 ? 32 : 128;

  for (gint len = max; len >= 0; len--)
    {
      g_autofree char *key = NULL;
      IdsBlock *b;

      if (lengths[len] == 0)
        continue;
      key = ids_prefix_of (address, (guint) len);
      b = g_hash_table_lookup (table->blocks, key);
      if (b != NULL && b->active && b->expires > now)
        return b;
    }
  return NULL;
}

static gint
ids_block_compare (gconstpointer a, gconstpointer b)
{
  return strcmp ((*(IdsBlock *const *) a)->prefix, (*(IdsBlock *const *) b)->prefix);
}

GPtrArray *
ids_table_list (IdsTable *table, gint64 now)
{
  GPtrArray *out = g_ptr_array_new ();
  GHashTableIter it;
  gpointer v;

  g_hash_table_iter_init (&it, table->blocks);
  while (g_hash_table_iter_next (&it, NULL, &v))
    {
      IdsBlock *b = v;
      if (b->active && b->expires > now)
        g_ptr_array_add (out, b);
    }
  g_ptr_array_sort (out, ids_block_compare);
  return out;
}

void
ids_table_prune (IdsTable *table, gint64 now, gint64 period)
{
  g_autoptr (GPtrArray) expired = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter it;
  gpointer k, v;

  g_hash_table_iter_init (&it, table->blocks);
  while (g_hash_table_iter_next (&it, &k, &v))
    if (((IdsBlock *) v)->expires <= now)
      g_ptr_array_add (expired, g_strdup (k));
  for (guint i = 0; i < expired->len; i++)
    ids_table_drop (table, g_ptr_array_index (expired, i));

  g_hash_table_iter_init (&it, table->scores);
  while (g_hash_table_iter_next (&it, &k, &v))
    {
      ids_hits_prune (v, now, period);
      if (((GArray *) v)->len == 0)
        g_hash_table_iter_remove (&it);
    }
}

/* ---- the state file's text ------------------------------------------------ */

#define IDS_FILE_HEADER "# pillarbox ids blocks v1: PREFIX CREATED EXPIRES block|unblock REASON " \
                        "(times in microseconds since 1970)\n"

char *
ids_table_serialize (IdsTable *table, gint64 now)
{
  g_autoptr (GPtrArray) all = g_ptr_array_new ();
  GString *out = g_string_new (IDS_FILE_HEADER);
  GHashTableIter it;
  gpointer v;

  g_hash_table_iter_init (&it, table->blocks);
  while (g_hash_table_iter_next (&it, NULL, &v))
    if (((IdsBlock *) v)->expires > now)
      g_ptr_array_add (all, v);
  /* Sorted, so equal tables give equal texts and the store can skip a write. */
  g_ptr_array_sort (all, ids_block_compare);
  for (guint i = 0; i < all->len; i++)
    {
      IdsBlock *b = g_ptr_array_index (all, i);
      g_string_append_printf (out, "%s %" G_GINT64_FORMAT " ", b->prefix, b->created);
      if (b->expires == IDS_NEVER)
        g_string_append (out, "never");
      else
        g_string_append_printf (out, "%" G_GINT64_FORMAT, b->expires);
      g_string_append_printf (out, " %s %s\n", b->active ? "block" : "unblock", b->reason);
    }
  return g_string_free (out, FALSE);
}

/* Whether record A supersedes record B: created later wins; ties are
 * broken the same way by every writer. */
static gboolean
ids_block_newer (const IdsBlock *a, const IdsBlock *b)
{
  if (a->created != b->created)
    return a->created > b->created;
  if (a->expires != b->expires)
    return a->expires > b->expires;
  if (a->active != b->active)
    return !a->active;
  return strcmp (a->reason, b->reason) > 0;
}

static gboolean
ids_parse_time (const char *text, gint64 *value)
{
  char *end = NULL;
  gint64 v;

  if (strcmp (text, "never") == 0)
    {
      *value = IDS_NEVER;
      return TRUE;
    }
  if (!g_ascii_isdigit (text[0]))
    return FALSE;
  v = g_ascii_strtoll (text, &end, 10);
  if (*end != '\0' || v <= 0)
    return FALSE;
  *value = v;
  return TRUE;
}

void
ids_table_merge_text (IdsTable *table, const char *text, gint64 now, gboolean *changed, guint *bad)
{
  g_auto (GStrv) lines = g_strsplit (text != NULL ? text : "", "\n", -1);

  if (changed != NULL)
    *changed = FALSE;
  if (bad != NULL)
    *bad = 0;
  for (guint i = 0; lines[i] != NULL; i++)
    {
      g_auto (GStrv) f = NULL;
      g_autofree char *prefix = NULL;
      gint64 created, expires;
      gboolean active;
      IdsBlock *old, *rec;

      if (lines[i][0] == '\0' || lines[i][0] == '#')
        continue;
      f = g_strsplit (lines[i], " ", 5);
      if (g_strv_length (f) != 5 || (prefix = ids_prefix_canonical (f[0], NULL)) == NULL
          || !ids_parse_time (f[1], &created) || created == IDS_NEVER || !ids_parse_time (f[2], &expires)
          || (strcmp (f[3], "block") != 0 && strcmp (f[3], "unblock") != 0))
        {
          if (bad != NULL)
            (*bad)++;
          continue;
        }
      if (expires <= now)
        continue;
      active = strcmp (f[3], "block") == 0;
      rec = ids_block_new (prefix, created, expires, active, f[4]);
      old = g_hash_table_lookup (table->blocks, prefix);
      if (old != NULL && !ids_block_newer (rec, old))
        {
          ids_block_free (rec);
          continue;
        }
      ids_table_put (table, rec);
      if (changed != NULL)
        *changed = TRUE;
    }
}

char *
ids_merge_texts (const char *a, const char *b, gint64 now)
{
  IdsTable *t = ids_table_new ();
  char *out;

  ids_table_merge_text (t, a, now, NULL, NULL);
  ids_table_merge_text (t, b, now, NULL, NULL);
  out = ids_table_serialize (t, now);
  ids_table_free (t);
  return out;
}
