/* SPDX-License-Identifier: MIT */
/* mx-sender: from MX records to the ordered hosts to try (RFC 5321 §5.1), null MX (RFC 7505), domain literals. */
#include "config.h"
#include "mx-private.h"

#include <stdlib.h>
#include <string.h>

void
mx_host_free (gpointer p)
{
  MxHost *h = p;
  g_free (h->host);
  g_free (h);
}

typedef struct {
  MxHost *host;
  guint32 tiebreak;
} Ranked;

static gint
compare_ranked (gconstpointer a, gconstpointer b)
{
  const Ranked *x = a, *y = b;
  if (x->host->preference != y->host->preference)
    return x->host->preference < y->host->preference ? -1 : 1;
  return x->tiebreak < y->tiebreak ? -1 : x->tiebreak > y->tiebreak ? 1 : 0;
}

static gboolean
is_self (const char *host, const char *const *self_names)
{
  for (guint i = 0; self_names != NULL && self_names[i] != NULL; i++)
    if (self_names[i][0] != '\0' && g_ascii_strcasecmp (host, self_names[i]) == 0)
      return TRUE;
  return FALSE;
}

gboolean
mx_is_host_name (const char *name)
{
  gsize len = strlen (name);
  gsize label = 0;
  g_autoptr (GInetAddress) literal = NULL;

  if (len == 0 || len > 253)
    return FALSE;
  for (gsize i = 0; i <= len; i++)
    {
      char c = name[i];
      if (c == '.' || c == '\0')
        {
          /* A label: 1 to 63 octets, a letter or digit at either end. */
          if (label == 0 || label > 63 || name[i - 1] == '-' || name[i - label] == '-')
            break;
          if (c == '\0')
            return TRUE;
          label = 0;
        }
      else if (g_ascii_isalnum (c) || c == '-')
        label++;
      else
        break;
    }
  literal = g_inet_address_new_from_string (name);
  return literal != NULL;
}

MxPlanKind
mx_plan_from_records (const char *const *records, const char *const *self_names, guint max_hosts, GRand *rand,
                      GPtrArray *refused, GPtrArray **hosts_out)
{
  g_autoptr (GArray) ranked = g_array_new (FALSE, FALSE, sizeof (Ranked));
  GPtrArray *hosts = g_ptr_array_new_with_free_func (mx_host_free);
  gboolean null_mx = FALSE;
  guint self_pref = G_MAXUINT;
  guint n = 0;

  *hosts_out = hosts;
  for (guint i = 0; records != NULL && records[i] != NULL; i++)
    {
      char *end = NULL;
      guint64 pref = g_ascii_strtoull (records[i], &end, 10);
      const char *name;
      Ranked r;

      n++;
      if (end == records[i] || pref > 65535)
        continue;
      name = end;
      while (*name == ' ')
        name++;
      /* RFC 7505 §3: "0 ." (the core shows the root as an empty name). */
      if (*name == '\0' || strcmp (name, ".") == 0)
        {
          null_mx = TRUE;
          continue;
        }
      r.host = g_new0 (MxHost, 1);
      r.host->preference = (guint) pref;
      r.host->host = g_ascii_strdown (name, -1);
      if (r.host->host[strlen (r.host->host) - 1] == '.')
        r.host->host[strlen (r.host->host) - 1] = '\0';
      /* A host name from DNS reaches connections, logs, `queue show` and
       * bounces: anything else is no MX at all. */
      if (!mx_is_host_name (r.host->host))
        {
          if (refused != NULL)
            {
              GString *shown = g_string_new (NULL);
              smtpc_text_escape (shown, name, -1);
              g_ptr_array_add (refused, g_string_free (shown, FALSE));
            }
          mx_host_free (r.host);
          continue;
        }
      r.tiebreak = rand != NULL ? g_rand_int (rand) : 0;
      g_array_append_val (ranked, r);
    }
  /* RFC 7505 §3: a null MX must be the only MX; one among others is ignored. */
  if (null_mx && ranked->len == 0)
    return MX_PLAN_NULL_MX;
  if (ranked->len == 0)
    return n > 0 ? MX_PLAN_INVALID : MX_PLAN_HOSTS;

  g_array_sort (ranked, compare_ranked);
  /* RFC 5321 §5.1: if this server is among the MX hosts, only hosts
   * preferred over it may be used. */
  for (guint i = 0; i < ranked->len; i++)
    {
      Ranked *r = &g_array_index (ranked, Ranked, i);
      if (is_self (r->host->host, self_names))
        self_pref = MIN (self_pref, r->host->preference);
    }
  for (guint i = 0; i < ranked->len; i++)
    {
      Ranked *r = &g_array_index (ranked, Ranked, i);
      if (r->host->preference >= self_pref || hosts->len >= max_hosts)
        mx_host_free (r->host);
      else
        g_ptr_array_add (hosts, r->host);
    }
  if (hosts->len == 0)
    return MX_PLAN_LOOP;
  return MX_PLAN_HOSTS;
}

char *
mx_domain_literal (const char *domain)
{
  gsize len = strlen (domain);
  g_autofree char *inner = NULL;
  const char *addr;
  g_autoptr (GInetAddress) a = NULL;

  if (len < 3 || domain[0] != '[' || domain[len - 1] != ']')
    return NULL;
  inner = g_strndup (domain + 1, len - 2);
  addr = inner;
  if (g_ascii_strncasecmp (addr, "IPv6:", 5) == 0)
    addr += 5;
  a = g_inet_address_new_from_string (addr);
  if (a == NULL)
    return NULL;
  /* "IPv6:" is required before an IPv6 address and wrong before IPv4. */
  if ((g_inet_address_get_family (a) == G_SOCKET_FAMILY_IPV6) != (addr != inner))
    return NULL;
  return g_inet_address_to_string (a);
}
