/* SPDX-License-Identifier: MIT */
/* load-limit arithmetic: address lists, per-address keys and who fits in a scope. */
#include "config.h"
#include "ll-private.h"

#include <string.h>

struct _LlAddrList {
  GPtrArray *masks;   /* GInetAddressMask * */
};

LlAddrList *
ll_addr_list_new (const char *const *prefixes, GError **error)
{
  LlAddrList *list = g_new0 (LlAddrList, 1);

  list->masks = g_ptr_array_new_with_free_func (g_object_unref);
  for (guint i = 0; prefixes != NULL && prefixes[i] != NULL; i++)
    {
      GInetAddressMask *mask = g_inet_address_mask_new_from_string (prefixes[i], error);
      if (mask == NULL)
        {
          ll_addr_list_free (list);
          return NULL;
        }
      g_ptr_array_add (list->masks, mask);
    }
  return list;
}

void
ll_addr_list_free (LlAddrList *list)
{
  if (list == NULL)
    return;
  g_ptr_array_unref (list->masks);
  g_free (list);
}

gboolean
ll_addr_list_is_empty (const LlAddrList *list)
{
  return list == NULL || list->masks->len == 0;
}

gboolean
ll_addr_list_match (const LlAddrList *list, GInetAddress *address)
{
  if (list == NULL || address == NULL)
    return FALSE;
  for (guint i = 0; i < list->masks->len; i++)
    {
      GInetAddressMask *mask = g_ptr_array_index (list->masks, i);
      /* g_inet_address_mask_matches() is FALSE across families. */
      if (g_inet_address_mask_matches (mask, address))
        return TRUE;
    }
  return FALSE;
}

GInetAddress *
ll_address_parse (const char *text)
{
  return text != NULL ? g_inet_address_new_from_string (text) : NULL;
}

char *
ll_address_key (GInetAddress *address, guint v6_prefix)
{
  guint8 bytes[16];
  g_autoptr (GInetAddress) masked = NULL;
  g_autofree char *text = NULL;

  if (g_inet_address_get_family (address) != G_SOCKET_FAMILY_IPV6 || v6_prefix >= 128)
    return g_inet_address_to_string (address);
  memcpy (bytes, g_inet_address_to_bytes (address), 16);
  for (guint bit = v6_prefix; bit < 128; bit++)
    bytes[bit / 8] &= (guint8) ~(0x80u >> (bit % 8));
  masked = g_inet_address_new_from_bytes (bytes, G_SOCKET_FAMILY_IPV6);
  text = g_inet_address_to_string (masked);
  return g_strdup_printf ("%s/%u", text, v6_prefix);
}

/* ---- scopes ------------------------------------------------------------- */

LlScope *
ll_scope_new (const char *name, const LlLimits *limits, LlAddrList *reserved_for)
{
  LlScope *scope = g_new0 (LlScope, 1);

  scope->name = g_strdup (name);
  scope->limits = *limits;
  scope->reserved_for = reserved_for;
  scope->per_address = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  return scope;
}

void
ll_scope_free (LlScope *scope)
{
  if (scope == NULL)
    return;
  g_hash_table_unref (scope->per_address);
  ll_addr_list_free (scope->reserved_for);
  g_free (scope->name);
  g_free (scope);
}

guint
ll_scope_count_address (const LlScope *scope, const char *key)
{
  return GPOINTER_TO_UINT (g_hash_table_lookup (scope->per_address, key));
}

/*
 * Local sessions (VPOP3's "No Auth" addresses) are counted apart and only
 * against max-local-sessions. Incoming sessions meet three limits:
 *
 *   - max-per-address: sessions from this client's address (key);
 *   - max-sessions: all incoming sessions;
 *   - reserved: clients not in reserved-for may hold at most
 *     max-sessions - reserved of them, so reserved-for clients always find
 *     at least `reserved` slots, and may use every free slot besides.
 */
LlDecision
ll_scope_check (const LlScope *scope, const LlClient *client)
{
  const LlLimits *l = &scope->limits;

  if (client->local)
    {
      if (l->max_local_sessions > 0 && scope->local >= (guint64) l->max_local_sessions)
        return LL_REFUSE_LOCAL;
      return LL_ADMIT;
    }
  if (l->max_per_address > 0 && ll_scope_count_address (scope, client->key) >= (guint64) l->max_per_address)
    return LL_REFUSE_PER_ADDRESS;
  if (l->max_sessions > 0)
    {
      if (scope->incoming >= (guint64) l->max_sessions)
        return LL_REFUSE_TOTAL;
      if (!client->reserved && l->reserved > 0 && (gint64) scope->others + l->reserved >= l->max_sessions)
        return LL_REFUSE_UNRESERVED;
    }
  return LL_ADMIT;
}

void
ll_scope_add (LlScope *scope, const LlClient *client)
{
  if (client->local)
    {
      scope->local++;
      return;
    }
  scope->incoming++;
  if (!client->reserved)
    scope->others++;
  g_hash_table_replace (scope->per_address, g_strdup (client->key),
                        GUINT_TO_POINTER (ll_scope_count_address (scope, client->key) + 1));
}

void
ll_scope_remove (LlScope *scope, const LlClient *client)
{
  guint n;

  if (client->local)
    {
      g_return_if_fail (scope->local > 0);
      scope->local--;
      return;
    }
  g_return_if_fail (scope->incoming > 0);
  scope->incoming--;
  if (!client->reserved)
    {
      g_return_if_fail (scope->others > 0);
      scope->others--;
    }
  n = ll_scope_count_address (scope, client->key);
  g_return_if_fail (n > 0);
  if (n == 1)
    g_hash_table_remove (scope->per_address, client->key);
  else
    g_hash_table_replace (scope->per_address, g_strdup (client->key), GUINT_TO_POINTER (n - 1));
}

const char *
ll_decision_to_string (LlDecision decision)
{
  switch (decision)
    {
    case LL_ADMIT: return "admit";
    case LL_REFUSE_PER_ADDRESS: return "max-per-address";
    case LL_REFUSE_UNRESERVED: return "reserved";
    case LL_REFUSE_TOTAL: return "max-sessions";
    case LL_REFUSE_LOCAL: return "max-local-sessions";
    }
  return "unknown";
}
