/* SPDX-License-Identifier: MIT */
/* spf: the Received-SPF (RFC 7208 §9.1) and Authentication-Results (RFC 8601) header values, and reply text. */
#include "config.h"
#include "spf-headers.h"

#include <string.h>

/* Header text comes partly from the network (addresses, HELO names, DNS
 * records): control characters would fold or end the header, so every
 * byte below 0x20 (and DEL) becomes '?'. */
static void
append_safe (GString *out, const char *text, const char *escape)
{
  for (const char *p = text; p != NULL && *p != '\0'; p++)
    {
      guchar c = (guchar) *p;
      if (c < 0x20 || c == 0x7f)
        g_string_append_c (out, '?');
      else
        {
          if (escape != NULL && strchr (escape, c) != NULL)
            g_string_append_c (out, '\\');
          g_string_append_c (out, (char) c);
        }
    }
}

/* atext of RFC 5322 §3.2.3 */
static gboolean
is_atext (guchar c)
{
  return g_ascii_isalnum (c) || (c != '\0' && strchr ("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static gboolean
is_dot_atom (const char *s)
{
  gboolean last_dot = TRUE;

  if (*s == '\0')
    return FALSE;
  for (const char *p = s; *p != '\0'; p++)
    {
      if (*p == '.')
        {
          if (last_dot)
            return FALSE;
          last_dot = TRUE;
        }
      else if (is_atext ((guchar) *p))
        last_dot = FALSE;
      else
        return FALSE;
    }
  return !last_dot;
}

/* dot-atom when it is one, quoted-string otherwise. */
static void
append_value (GString *out, const char *value)
{
  if (is_dot_atom (value))
    g_string_append (out, value);
  else
    {
      g_string_append_c (out, '"');
      append_safe (out, value, "\"\\");
      g_string_append_c (out, '"');
    }
}

static void
append_pair (GString *out, const char *key, const char *value)
{
  if (value == NULL)
    return;
  g_string_append_printf (out, " %s=", key);
  append_value (out, value);
  g_string_append_c (out, ';');
}

char *
spf_received_spf_value (const SpfHeaderInfo *info)
{
  GString *out = g_string_new (spf_result_to_string (info->result));
  GString *comment = g_string_new (NULL);

  /* The comment wording follows the examples of RFC 7208 §9.1. */
  switch (info->result)
    {
    case SPF_RESULT_PASS:
      g_string_printf (comment, "domain of %s designates %s as permitted sender", info->sender, info->client_ip);
      break;
    case SPF_RESULT_FAIL:
      g_string_printf (comment, "domain of %s does not designate %s as permitted sender", info->sender,
                       info->client_ip);
      break;
    case SPF_RESULT_SOFTFAIL:
      g_string_printf (comment, "domain of transitioning %s does not designate %s as permitted sender",
                       info->sender, info->client_ip);
      break;
    case SPF_RESULT_NEUTRAL:
      g_string_printf (comment, "%s is neither permitted nor denied by domain of %s", info->client_ip,
                       info->sender);
      break;
    case SPF_RESULT_NONE:
      g_string_printf (comment, "domain of %s does not designate permitted sender hosts", info->sender);
      break;
    case SPF_RESULT_TEMPERROR:
      g_string_printf (comment, "temporary error in processing during lookup of %s", info->sender);
      break;
    default:
      g_string_printf (comment, "permanent error in processing domain of %s", info->sender);
      break;
    }
  g_string_append (out, " (");
  append_safe (out, info->receiver, NULL);
  g_string_append (out, ": ");
  append_safe (out, comment->str, "()\\");
  g_string_append_c (out, ')');
  g_string_free (comment, TRUE);

  append_pair (out, "client-ip", info->client_ip);
  append_pair (out, "envelope-from", info->envelope_from);
  append_pair (out, "helo", info->helo);
  append_pair (out, "receiver", info->receiver);
  append_pair (out, "identity", info->identity);
  if (info->result == SPF_RESULT_TEMPERROR || info->result == SPF_RESULT_PERMERROR)
    append_pair (out, "problem", info->problem);
  else
    append_pair (out, "mechanism", info->mechanism);
  /* The trailing ';' of the last pair is allowed (key-value-list), but tidier without. */
  if (out->str[out->len - 1] == ';')
    g_string_truncate (out, out->len - 1);
  return g_string_free (out, FALSE);
}

/* RFC 8601 pvalue: an address or name as is when it has no specials. */
static void
append_pvalue (GString *out, const char *value)
{
  gboolean plain = *value != '\0';

  for (const char *p = value; *p != '\0' && plain; p++)
    if ((guchar) *p <= 0x20 || (guchar) *p == 0x7f || strchr ("()<>,;:\\\"[]", *p) != NULL)
      plain = FALSE;
  if (plain)
    g_string_append (out, value);
  else
    {
      g_string_append_c (out, '"');
      append_safe (out, value, "\"\\");
      g_string_append_c (out, '"');
    }
}

static void
append_resinfo (GString *out, SpfResult result, const char *problem, const char *property, const char *value)
{
  g_string_append_printf (out, "; spf=%s", spf_result_to_string (result));
  if (problem != NULL && (result == SPF_RESULT_TEMPERROR || result == SPF_RESULT_PERMERROR))
    {
      g_string_append (out, " reason=\"");
      append_safe (out, problem, "\"\\");
      g_string_append_c (out, '"');
    }
  g_string_append_printf (out, " %s=", property);
  append_pvalue (out, value);
}

char *
spf_authentication_results_value (const SpfHeaderInfo *info, const SpfHeaderInfo *helo_info)
{
  GString *out = g_string_new (NULL);

  append_pvalue (out, info->receiver);
  if (helo_info != NULL)
    append_resinfo (out, helo_info->result, helo_info->problem, "smtp.helo", helo_info->helo);
  if (g_strcmp0 (info->identity, "helo") == 0)
    {
      if (helo_info == NULL)
        append_resinfo (out, info->result, info->problem, "smtp.helo", info->helo != NULL ? info->helo : "");
    }
  else
    append_resinfo (out, info->result, info->problem, "smtp.mailfrom", info->sender);
  return g_string_free (out, FALSE);
}

char *
spf_reply_text (const SpfHeaderInfo *info, const char *explanation)
{
  GString *out = g_string_new (NULL);
  const char *domain = spf_sender_domain (info->sender);

  switch (info->result)
    {
    case SPF_RESULT_TEMPERROR:
      g_string_printf (out, "SPF temporary error for %s: %s; try again later", domain,
                       info->problem != NULL ? info->problem : "DNS failure");
      break;
    case SPF_RESULT_PERMERROR:
      g_string_printf (out, "SPF permanent error for %s: %s", domain,
                       info->problem != NULL ? info->problem : "bad record");
      break;
    default:
      if (explanation != NULL && *explanation != '\0')
        g_string_assign (out, explanation);
      else
        g_string_printf (out, "SPF check of %s for %s gave %s", domain, info->client_ip,
                         spf_result_to_string (info->result));
      break;
    }
  {
    /* An SMTP reply line: printable US-ASCII, bounded (RFC 5321 §4.5.3.1.5). */
    GString *safe = g_string_new (NULL);
    for (gsize i = 0; i < out->len && safe->len < 400; i++)
      g_string_append_c (safe, (guchar) out->str[i] >= 0x20 && (guchar) out->str[i] < 0x7f ? out->str[i] : '?');
    g_string_free (out, TRUE);
    return g_string_free (safe, FALSE);
  }
}
