/* SPDX-License-Identifier: MIT */
/* relay-sender: routing rules (VPOP3's Domain Filtering) matching senders and recipients to relay servers. */
#include "config.h"
#include "relay-private.h"

#include <string.h>

char *
relay_normalise_sender (const char *sender)
{
  char *s = g_ascii_strdown (sender != NULL ? sender : "", -1);

  /* BATV (draft-levine-smtp-batv): "prvs=TAG=local@domain". Rules are
   * written for the real address, not for the signed one the
   * delivery-attempt hook made. */
  if (g_str_has_prefix (s, "prvs="))
    {
      char *eq = strchr (s + 5, '=');
      char *at = strchr (s, '@');
      if (eq != NULL && (at == NULL || eq < at))
        {
          char *plain = g_strdup (eq + 1);
          g_free (s);
          s = plain;
        }
    }
  return s;
}

static gboolean
pattern_match (const char *pattern, const char *address)
{
  g_autofree char *p = g_ascii_strdown (pattern, -1);
  const char *at = strrchr (address, '@');

  if (strcmp (p, "<>") == 0)
    return *address == '\0';
  if (*p == '@')
    return at != NULL && g_pattern_match_simple (p + 1, at + 1);
  if (strchr (p, '@') != NULL || strcmp (p, "*") == 0)
    return g_pattern_match_simple (p, address);
  /* A domain: "example.org" or "*.example.org". */
  return at != NULL && g_pattern_match_simple (p, at + 1);
}

gboolean
relay_patterns_match (const char *const *patterns, const char *address)
{
  g_autofree char *a = g_ascii_strdown (address != NULL ? address : "", -1);
  gboolean any_positive = FALSE;
  gboolean positive_hit = FALSE;

  if (patterns == NULL || patterns[0] == NULL)
    return TRUE;
  for (guint i = 0; patterns[i] != NULL; i++)
    {
      const char *p = patterns[i];
      if (*p == '!')
        {
          if (pattern_match (p + 1, a))
            return FALSE;
          continue;
        }
      any_positive = TRUE;
      if (!positive_hit && pattern_match (p, a))
        positive_hit = TRUE;
    }
  return positive_hit || !any_positive;
}

const RelayRoute *
relay_route_find (GPtrArray *routes, const char *sender, const char *recipient)
{
  g_autofree char *s = relay_normalise_sender (sender);

  for (guint i = 0; routes != NULL && i < routes->len; i++)
    {
      const RelayRoute *r = g_ptr_array_index (routes, i);
      if (relay_patterns_match ((const char *const *) r->config->senders, s)
          && relay_patterns_match ((const char *const *) r->config->recipients, recipient))
        return r;
    }
  return NULL;
}
