/* SPDX-License-Identifier: MIT */
/* spf without DNS: record selection and parsing, CIDR matching and macro expansion (RFC 7208 §4.5-§7, §12). */
#include "config.h"
#include "spf-private.h"

#include <string.h>

G_DEFINE_QUARK (pillarbox-spf-error-quark, spf_error)

static const char *const result_names[SPF_RESULT_COUNT] = {
  "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror",
};

const char *
spf_result_to_string (SpfResult result)
{
  return result < SPF_RESULT_COUNT ? result_names[result] : "permerror";
}

/* ---- macros (§7.1) ----------------------------------------------------------- */

static gboolean
is_delimiter (char c)
{
  return c != '\0' && strchr (".-+,/_=", c) != NULL;
}

/* Appends VALUE transformed by DIGITS (0: all parts), REVERSE and DELIMS (§7.3). */
static void
append_transformed (GString *out, const char *value, guint digits, gboolean reverse, const char *delims,
                    gboolean escape)
{
  g_autoptr (GPtrArray) parts = g_ptr_array_new_with_free_func (g_free);
  const char *start = value;
  GString *joined = g_string_new (NULL);
  guint first;

  for (const char *p = value;; p++)
    if (*p == '\0' || strchr (delims, *p) != NULL)
      {
        g_ptr_array_add (parts, g_strndup (start, p - start));
        if (*p == '\0')
          break;
        start = p + 1;
      }
  if (reverse)
    for (guint i = 0; i < parts->len / 2; i++)
      {
        gpointer t = parts->pdata[i];
        parts->pdata[i] = parts->pdata[parts->len - 1 - i];
        parts->pdata[parts->len - 1 - i] = t;
      }
  /* The DIGIT keeps that many parts from the right (after the reversal). */
  first = digits > 0 && digits < parts->len ? parts->len - digits : 0;
  for (guint i = first; i < parts->len; i++)
    {
      if (i > first)
        g_string_append_c (joined, '.');
      g_string_append (joined, parts->pdata[i]);
    }
  if (!escape)
    g_string_append_len (out, joined->str, joined->len);
  else
    {
      /* An upper-case macro letter asks for URL escaping (§7.3): every
       * character outside RFC 3986's unreserved set becomes %XX. */
      for (gsize i = 0; i < joined->len; i++)
        {
          guchar c = (guchar) joined->str[i];
          if (g_ascii_isalnum (c) || c == '-' || c == '.' || c == '_' || c == '~')
            g_string_append_c (out, (char) c);
          else
            g_string_append_printf (out, "%%%02X", c);
        }
    }
  g_string_free (joined, TRUE);
}

char *
spf_ip_dotted (GInetAddress *ip)
{
  const guint8 *b = g_inet_address_to_bytes (ip);
  GString *s;

  if (g_inet_address_get_family (ip) == G_SOCKET_FAMILY_IPV4)
    return g_strdup_printf ("%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
  /* §7.3: IPv6 "i" is 32 dot-separated nibbles, most significant first. */
  s = g_string_new (NULL);
  for (guint i = 0; i < 16; i++)
    g_string_append_printf (s, "%s%x.%x", i > 0 ? "." : "", b[i] >> 4, b[i] & 0xf);
  return g_string_free (s, FALSE);
}

/* The value of a macro letter (lower case), or NULL with an error. */
static char *
macro_value (char letter, const SpfMacroContext *ctx)
{
  const char *at;

  switch (letter)
    {
    case 's':
      return g_strdup (ctx->sender);
    case 'l':
      at = strrchr (ctx->sender, '@');
      return at != NULL ? g_strndup (ctx->sender, at - ctx->sender) : g_strdup ("postmaster");
    case 'o':
      return g_strdup (spf_sender_domain (ctx->sender));
    case 'd':
      return g_strdup (ctx->domain);
    case 'i':
      return spf_ip_dotted (ctx->ip);
    case 'p':
      return g_strdup (ctx->validated != NULL ? ctx->validated : "unknown");
    case 'v':
      return g_strdup (g_inet_address_get_family (ctx->ip) == G_SOCKET_FAMILY_IPV4 ? "in-addr" : "ip6");
    case 'h':
      return g_strdup (ctx->helo != NULL && *ctx->helo != '\0' ? ctx->helo : "unknown");
    case 'c':
      return g_inet_address_to_string (ctx->ip);
    case 'r':
      return g_strdup (ctx->receiver != NULL && *ctx->receiver != '\0' ? ctx->receiver : "unknown");
    case 't':
      return g_strdup_printf ("%" G_GINT64_FORMAT, ctx->timestamp);
    default:
      return NULL;
    }
}

char *
spf_macro_expand (const char *text, const SpfMacroContext *ctx, SpfMacroMode mode, GError **error)
{
  GString *out = g_string_new (NULL);
  const char *p = text;

  while (*p != '\0')
    {
      guchar c = (guchar) *p;

      if (c == ' ' && mode == SPF_MACRO_EXPLAIN)
        {
          g_string_append_c (out, ' ');
          p++;
          continue;
        }
      /* macro-literal = %x21-24 / %x26-7E */
      if (c != '%')
        {
          if (c < 0x21 || c > 0x7e)
            {
              g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "character 0x%02x not allowed in '%s'", c, text);
              goto fail;
            }
          g_string_append_c (out, (char) c);
          p++;
          continue;
        }
      switch (p[1])
        {
        case '%':
          g_string_append_c (out, '%');
          p += 2;
          continue;
        case '_':
          g_string_append_c (out, ' ');
          p += 2;
          continue;
        case '-':
          g_string_append (out, "%20");
          p += 2;
          continue;
        case '{':
          break;
        default:
          /* §7.1: a '%' not followed by '{', '%', '-' or '_' is a syntax error. */
          g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "'%%' not followed by '{', '%%', '-' or '_' in '%s'",
                       text);
          goto fail;
        }
      {
        const char *q = p + 2;
        char letter = g_ascii_tolower (*q);
        gboolean upper = g_ascii_isupper (*q);
        guint digits = 0;
        gboolean have_digits = FALSE;
        gboolean reverse = FALSE;
        char delims[8] = { 0 };
        guint n_delims = 0;

        if (*q == '\0' || strchr ("slodiphcrtv", letter) == NULL)
          {
            g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "unknown macro letter '%c' in '%s'", *q ? *q : '?',
                         text);
            goto fail;
          }
        if (mode == SPF_MACRO_DOMAIN && strchr ("crt", letter) != NULL)
          {
            g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "macro letter '%c' is only allowed in exp text: '%s'",
                         *q, text);
            goto fail;
          }
        q++;
        while (g_ascii_isdigit (*q))
          {
            have_digits = TRUE;
            /* Beyond 128 parts nothing changes; saturate instead of overflowing. */
            digits = MIN (digits * 10 + (guint) (*q - '0'), 1000u);
            q++;
          }
        if (have_digits && digits == 0)
          {
            g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "a macro's digit transformer must not be zero: '%s'",
                         text);
            goto fail;
          }
        if (*q == 'r' || *q == 'R')
          {
            reverse = TRUE;
            q++;
          }
        while (is_delimiter (*q))
          {
            if (strchr (delims, *q) == NULL && n_delims < sizeof delims - 1)
              delims[n_delims++] = *q;
            q++;
          }
        if (*q != '}')
          {
            g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "malformed macro in '%s'", text);
            goto fail;
          }
        if (ctx != NULL)
          {
            g_autofree char *value = macro_value (letter, ctx);
            append_transformed (out, value, digits, reverse, n_delims > 0 ? delims : ".", upper);
          }
        p = q + 1;
      }
    }
  return g_string_free (out, FALSE);

fail:
  g_string_free (out, TRUE);
  return NULL;
}

gboolean
spf_macro_uses_p (const char *text)
{
  for (const char *p = text; p != NULL && *p != '\0'; p++)
    if (p[0] == '%')
      {
        if (p[1] == '{' && (p[2] == 'p' || p[2] == 'P'))
          return TRUE;
        if (p[1] != '\0')
          p++;  /* skip the character after '%', so "%%{p}" is literal text */
      }
  return FALSE;
}

/* toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static gboolean
is_toplabel (const char *s, gsize len)
{
  gboolean alpha = FALSE, hyphen = FALSE;

  if (len == 0 || !g_ascii_isalnum (s[0]) || !g_ascii_isalnum (s[len - 1]))
    return FALSE;
  for (gsize i = 0; i < len; i++)
    {
      if (g_ascii_isalpha (s[i]))
        alpha = TRUE;
      else if (s[i] == '-')
        hyphen = TRUE;
      else if (!g_ascii_isdigit (s[i]))
        return FALSE;
    }
  return alpha || hyphen;
}

gboolean
spf_domain_spec_check (const char *text, GError **error)
{
  g_autofree char *checked = NULL;
  gsize len = strlen (text);
  const char *dot;

  if (len == 0)
    {
      g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "empty domain");
      return FALSE;
    }
  checked = spf_macro_expand (text, NULL, SPF_MACRO_DOMAIN, error);
  if (checked == NULL)
    return FALSE;
  /* domain-end = ( "." toplabel [ "." ] ) / macro-expand */
  if (text[len - 1] == '}')
    {
      /* Ends in a macro when the '}' closes the last "%{": no '%' may come
       * between them, since a macro body has none. */
      const char *open = g_strrstr (text, "%{");
      if (open != NULL && strchr (open + 2, '%') == NULL && strchr (open, '}') == text + len - 1)
        return TRUE;
    }
  if (len >= 2 && text[len - 2] == '%' && strchr ("%_-", text[len - 1]) != NULL)
    {
      /* "%%", "%_" and "%-" are macro-expands too, unless the '%' is itself escaped. */
      gsize run = 0;
      for (gsize i = len - 1; i > 0 && text[i - 1] == '%'; i--)
        run++;
      if (run % 2 == 1)
        return TRUE;
    }
  if (text[len - 1] == '.')
    len--;
  dot = g_strrstr_len (text, len, ".");
  if (dot != NULL && is_toplabel (dot + 1, text + len - dot - 1))
    return TRUE;
  g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "'%s' does not end in a top-level domain label or a macro", text);
  return FALSE;
}

char *
spf_domain_truncate (const char *name)
{
  gsize len = strlen (name);

  if (len > 0 && name[len - 1] == '.')
    len--;
  while (len > SPF_MAX_NAME_LENGTH)
    {
      const char *dot = memchr (name, '.', len);
      if (dot == NULL)
        break;
      len -= (gsize) (dot + 1 - name);
      name = dot + 1;
    }
  return g_strndup (name, len);
}

gboolean
spf_domain_is_valid (const char *name, gboolean multi_label)
{
  gsize len = strlen (name);
  guint labels = 0;
  const char *start = name;

  if (len > 0 && name[len - 1] == '.')
    len--;
  if (len == 0 || len > SPF_MAX_NAME_LENGTH)
    return FALSE;
  for (gsize i = 0; i <= len; i++)
    {
      if (i == len || name[i] == '.')
        {
          gsize n = (gsize) (name + i - start);
          if (n == 0 || n > 63)
            return FALSE;
          labels++;
          start = name + i + 1;
        }
      else if ((guchar) name[i] <= 0x20 || (guchar) name[i] == 0x7f || name[i] == '\\')
        return FALSE;  /* '\\' would be an escape to the resolver's name parser */
    }
  return !multi_label || labels >= 2;
}

/* ---- record selection and parsing --------------------------------------------- */

gboolean
spf_is_spf1 (const char *text)
{
  /* ABNF literals are case-insensitive (RFC 5234 §2.3). */
  return g_ascii_strncasecmp (text, "v=spf1", 6) == 0 && (text[6] == '\0' || text[6] == ' ');
}

SpfSelect
spf_record_select (const char *const *txt, const char **chosen)
{
  guint n = 0;

  *chosen = NULL;
  for (guint i = 0; txt != NULL && txt[i] != NULL; i++)
    if (spf_is_spf1 (txt[i]))
      {
        n++;
        *chosen = txt[i];
      }
  if (n > 1)
    *chosen = NULL;
  return n == 0 ? SPF_SELECT_NONE : n == 1 ? SPF_SELECT_ONE : SPF_SELECT_MANY;
}

static void
mech_free (gpointer p)
{
  SpfMech *m = p;

  g_free (m->domain_spec);
  g_free (m->text);
  g_free (m);
}

void
spf_record_free (SpfRecord *record)
{
  if (record == NULL)
    return;
  g_ptr_array_unref (record->mechs);
  g_free (record->redirect);
  g_free (record->exp);
  g_free (record);
}

/* "/N" with N in [0, MAX], no leading zero (ip4-cidr-length, ip6-cidr-length). */
static gboolean
parse_cidr (const char *s, gsize len, guint max, guint *out)
{
  guint v = 0;

  if (len < 2 || s[0] != '/' || len > 4 || (s[1] == '0' && len > 2))
    return FALSE;
  for (gsize i = 1; i < len; i++)
    {
      if (!g_ascii_isdigit (s[i]))
        return FALSE;
      v = v * 10 + (guint) (s[i] - '0');
    }
  if (v > max)
    return FALSE;
  *out = v;
  return TRUE;
}

/* Splits a trailing dual-cidr-length ("/24", "//64", "/24//64") off ARG,
 * which is "" or ":domain-spec" followed by it. Returns the length left. */
static gboolean
split_dual_cidr (const char *arg, gsize *keep, guint *cidr4, guint *cidr6)
{
  gsize len = strlen (arg);
  const char *dslash = NULL;

  /* The last "//" starts the IPv6 length when only digits follow it. */
  for (gsize i = len; i >= 2; i--)
    if (arg[i - 1] == '/' && arg[i - 2] == '/')
      {
        dslash = arg + i - 2;
        break;
      }
  if (dslash != NULL && strspn (dslash + 2, "0123456789") == strlen (dslash + 2))
    {
      if (!parse_cidr (dslash + 1, strlen (dslash + 1), 128, cidr6))
        return FALSE;
      len = (gsize) (dslash - arg);
    }
  /* Then a final "/digits" is the IPv4 length. */
  {
    gsize d = len;
    while (d > 0 && g_ascii_isdigit (arg[d - 1]))
      d--;
    if (d > 0 && d < len && arg[d - 1] == '/')
      {
        if (!parse_cidr (arg + d - 1, len - d + 1, 32, cidr4))
          return FALSE;
        len = d - 1;
      }
    else if (len > 0 && arg[len - 1] == '/')
      return FALSE;
  }
  *keep = len;
  return TRUE;
}

/* Strict dotted quad (ip4-network): four decimal octets without leading zeros. */
static gboolean
parse_ip4 (const char *s, gsize len, guint8 out[4])
{
  guint part = 0;
  gsize i = 0;

  while (part < 4)
    {
      guint v = 0;
      gsize start = i;
      while (i < len && g_ascii_isdigit (s[i]) && i - start < 3)
        v = v * 10 + (guint) (s[i++] - '0');
      if (i == start || v > 255 || (s[start] == '0' && i - start > 1))
        return FALSE;
      out[part++] = (guint8) v;
      if (part < 4)
        {
          if (i >= len || s[i] != '.')
            return FALSE;
          i++;
        }
    }
  return i == len;
}

static gboolean
parse_directive (SpfRecord *record, const char *term, GError **error)
{
  SpfMech *m = g_new0 (SpfMech, 1);
  const char *p = term;
  const char *name;
  gsize name_len;
  const char *arg;
  gboolean ok = FALSE;

  m->text = g_strdup (term);
  m->cidr4 = 32;
  m->cidr6 = 128;
  m->result = SPF_RESULT_PASS;
  switch (*p)
    {
    case '+': m->result = SPF_RESULT_PASS; p++; break;
    case '-': m->result = SPF_RESULT_FAIL; p++; break;
    case '~': m->result = SPF_RESULT_SOFTFAIL; p++; break;
    case '?': m->result = SPF_RESULT_NEUTRAL; p++; break;
    default: break;
    }
  name = p;
  while (g_ascii_isalnum (*p))
    p++;
  name_len = (gsize) (p - name);
  arg = p;

#define IS(word) (name_len == strlen (word) && g_ascii_strncasecmp (name, word, name_len) == 0)
  if (IS ("all"))
    {
      m->kind = SPF_MECH_ALL;
      ok = *arg == '\0';
      record->has_all = TRUE;
    }
  else if (IS ("include") || IS ("exists"))
    {
      m->kind = IS ("include") ? SPF_MECH_INCLUDE : SPF_MECH_EXISTS;
      ok = *arg == ':' && spf_domain_spec_check (arg + 1, error);
      if (ok)
        m->domain_spec = g_strdup (arg + 1);
    }
  else if (IS ("a") || IS ("mx"))
    {
      gsize keep = 0;
      m->kind = IS ("a") ? SPF_MECH_A : SPF_MECH_MX;
      ok = split_dual_cidr (arg, &keep, &m->cidr4, &m->cidr6);
      if (ok && keep > 0)
        {
          g_autofree char *spec = g_strndup (arg + 1, keep - 1);
          ok = arg[0] == ':' && spf_domain_spec_check (spec, error);
          if (ok)
            m->domain_spec = g_steal_pointer (&spec);
        }
    }
  else if (IS ("ptr"))
    {
      m->kind = SPF_MECH_PTR;
      ok = *arg == '\0' || (*arg == ':' && spf_domain_spec_check (arg + 1, error));
      if (ok && *arg == ':')
        m->domain_spec = g_strdup (arg + 1);
    }
  else if (IS ("ip4"))
    {
      const char *slash = strchr (arg, '/');
      gsize len = slash != NULL ? (gsize) (slash - arg) : strlen (arg);
      m->kind = SPF_MECH_IP4;
      ok = *arg == ':' && parse_ip4 (arg + 1, len - 1, m->network)
           && (slash == NULL || parse_cidr (slash, strlen (slash), 32, &m->cidr4));
    }
  else if (IS ("ip6"))
    {
      const char *slash = strchr (arg, '/');
      gsize len = slash != NULL ? (gsize) (slash - arg) : strlen (arg);
      m->kind = SPF_MECH_IP6;
      if (*arg == ':' && len > 1)
        {
          g_autofree char *text = g_strndup (arg + 1, len - 1);
          g_autoptr (GInetAddress) a = strchr (text, ':') != NULL ? g_inet_address_new_from_string (text) : NULL;
          ok = a != NULL && g_inet_address_get_family (a) == G_SOCKET_FAMILY_IPV6
               && (slash == NULL || parse_cidr (slash, strlen (slash), 128, &m->cidr6));
          if (ok)
            memcpy (m->network, g_inet_address_to_bytes (a), 16);
        }
    }
  else
    {
      g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "unknown mechanism '%s'", term);
      mech_free (m);
      return FALSE;
    }
#undef IS

  if (!ok)
    {
      if (error != NULL && *error != NULL)
        g_prefix_error (error, "'%s': ", term);
      else
        g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "malformed mechanism '%s'", term);
      mech_free (m);
      return FALSE;
    }
  g_ptr_array_add (record->mechs, m);
  return TRUE;
}

/* name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ): the length of a
 * modifier name followed by '=', or 0 when TERM is not a modifier. */
static gsize
modifier_name_length (const char *term)
{
  gsize i = 0;

  if (!g_ascii_isalpha (term[0]))
    return 0;
  while (g_ascii_isalnum (term[i]) || term[i] == '-' || term[i] == '_' || term[i] == '.')
    i++;
  return term[i] == '=' ? i : 0;
}

static gboolean
parse_modifier (SpfRecord *record, const char *term, gsize name_len, GError **error)
{
  const char *value = term + name_len + 1;
  char **slot = NULL;

  if (name_len == 8 && g_ascii_strncasecmp (term, "redirect", 8) == 0)
    slot = &record->redirect;
  else if (name_len == 3 && g_ascii_strncasecmp (term, "exp", 3) == 0)
    slot = &record->exp;

  if (slot == NULL)
    {
      /* §6: unknown modifiers are ignored, but must still be well formed. */
      g_autofree char *checked = spf_macro_expand (value, NULL, SPF_MACRO_ANY, error);
      if (checked == NULL)
        g_prefix_error (error, "'%s': ", term);
      return checked != NULL;
    }
  if (*slot != NULL)
    {
      /* §6: redirect and exp each appear at most once. */
      g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "'%.*s' appears more than once", (int) name_len, term);
      return FALSE;
    }
  if (!spf_domain_spec_check (value, error))
    {
      g_prefix_error (error, "'%s': ", term);
      return FALSE;
    }
  *slot = g_strdup (value);
  return TRUE;
}

SpfRecord *
spf_record_parse (const char *text, GError **error)
{
  g_autoptr (SpfRecord) record = g_new0 (SpfRecord, 1);
  g_auto (GStrv) terms = NULL;

  record->mechs = g_ptr_array_new_with_free_func (mech_free);
  if (!spf_is_spf1 (text))
    {
      g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "not an SPF version 1 record");
      return NULL;
    }
  for (const char *p = text; *p != '\0'; p++)
    if ((guchar) *p < 0x20 || (guchar) *p > 0x7e)
      {
        g_set_error (error, SPF_ERROR, SPF_ERROR_SYNTAX, "character 0x%02x not allowed in a record",
                     (guchar) *p);
        return NULL;
      }
  /* terms = *( 1*SP ( directive / modifier ) ): empty items are extra spaces. */
  terms = g_strsplit (text + 6, " ", -1);
  for (guint i = 0; terms[i] != NULL; i++)
    {
      gsize name_len;
      if (terms[i][0] == '\0')
        continue;
      name_len = modifier_name_length (terms[i]);
      if (name_len > 0 ? !parse_modifier (record, terms[i], name_len, error)
                       : !parse_directive (record, terms[i], error))
        return NULL;
    }
  return g_steal_pointer (&record);
}

/* ---- addresses ------------------------------------------------------------------ */

gboolean
spf_prefix_match (const guint8 *a, const guint8 *b, gsize len, guint prefix)
{
  guint whole = prefix / 8, rest = prefix % 8;

  if (prefix > len * 8)
    return FALSE;
  if (memcmp (a, b, whole) != 0)
    return FALSE;
  if (rest == 0)
    return TRUE;
  return ((a[whole] ^ b[whole]) & (guint8) (0xff00u >> rest)) == 0;
}

GInetAddress *
spf_address_normalize (GInetAddress *address)
{
  const guint8 *b = g_inet_address_to_bytes (address);
  static const guint8 mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

  if (g_inet_address_get_family (address) == G_SOCKET_FAMILY_IPV6 && memcmp (b, mapped, 12) == 0)
    return g_inet_address_new_from_bytes (b + 12, G_SOCKET_FAMILY_IPV4);
  return g_object_ref (address);
}

gboolean
spf_address_match (GInetAddress *client, GInetAddress *address, guint cidr4, guint cidr6)
{
  gboolean v4 = g_inet_address_get_family (client) == G_SOCKET_FAMILY_IPV4;

  if (g_inet_address_get_family (address) != g_inet_address_get_family (client))
    return FALSE;
  return spf_prefix_match (g_inet_address_to_bytes (client), g_inet_address_to_bytes (address), v4 ? 4 : 16,
                           v4 ? cidr4 : cidr6);
}

/* ---- identities -------------------------------------------------------------- */

const char *
spf_sender_domain (const char *sender)
{
  const char *at = strrchr (sender, '@');
  return at != NULL ? at + 1 : sender;
}

char *
spf_sender_for (const char *mail_from, const char *helo)
{
  const char *at;

  /* §2.4: a null reverse path is checked as postmaster@HELO (§2.3). */
  if (mail_from == NULL || *mail_from == '\0')
    return g_strconcat ("postmaster@", helo != NULL ? helo : "", NULL);
  at = strrchr (mail_from, '@');
  if (at == NULL)
    return g_strconcat ("postmaster@", mail_from, NULL);
  if (at == mail_from)
    return g_strconcat ("postmaster", mail_from, NULL);
  return g_strdup (mail_from);
}
