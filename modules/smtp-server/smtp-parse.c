/* SPDX-License-Identifier: MIT */
/* SMTP command and parameter parsing: pure functions over one command line, unit-tested byte by byte. */
#include "config.h"
#include "smtp-private.h"

#include <string.h>

gboolean
smtp_line_chomp (char *line, gsize *len, SmtpEol *eol)
{
  gsize n = *len;

  *eol = SMTP_EOL_NONE;
  if (n > 0 && line[n - 1] == '\n')
    {
      n--;
      if (n > 0 && line[n - 1] == '\r')
        {
          n--;
          *eol = SMTP_EOL_CRLF;
        }
      else
        *eol = SMTP_EOL_LF;
    }
  line[n] = '\0';
  *len = n;
  /* RFC 5321 §2.3.8: CR and LF only ever appear together, as the line
   * end; a NUL has no place in a command either. */
  return memchr (line, '\0', n) == NULL && memchr (line, '\r', n) == NULL;
}

#define JUNK SMTP_VERB_JUNK

static const struct {
  const char *verb;
  SmtpCommandKind kind;
  guint flags;
} smtp_verbs[] = {
  { "HELO", SMTP_CMD_HELO, 0 }, { "EHLO", SMTP_CMD_EHLO, 0 }, { "MAIL", SMTP_CMD_MAIL, 0 },
  { "RCPT", SMTP_CMD_RCPT, 0 }, { "DATA", SMTP_CMD_DATA, 0 }, { "BDAT", SMTP_CMD_BDAT, 0 },
  { "RSET", SMTP_CMD_RSET, JUNK }, { "NOOP", SMTP_CMD_NOOP, JUNK }, { "QUIT", SMTP_CMD_QUIT, 0 },
  { "HELP", SMTP_CMD_HELP, JUNK }, { "VRFY", SMTP_CMD_VRFY, JUNK }, { "EXPN", SMTP_CMD_EXPN, JUNK },
  { "STARTTLS", SMTP_CMD_STARTTLS, 0 }, { "AUTH", SMTP_CMD_AUTH, 0 },
};

void
smtp_parse_command (char *line, SmtpCommand *cmd)
{
  char *sp = strchr (line, ' ');

  cmd->kind = SMTP_CMD_UNKNOWN;
  cmd->flags = 0;
  cmd->verb = line;
  if (sp != NULL)
    {
      *sp = '\0';
      cmd->args = sp + 1;
    }
  else
    cmd->args = line + strlen (line);
  for (gsize i = 0; i < G_N_ELEMENTS (smtp_verbs); i++)
    if (g_ascii_strcasecmp (line, smtp_verbs[i].verb) == 0)
      {
        cmd->kind = smtp_verbs[i].kind;
        cmd->flags = smtp_verbs[i].flags;
        break;
      }
  /* Trailing blanks are forgiven (many clients send "DATA "); inner ones
   * are the argument's business. */
  g_strchomp (cmd->args);
}

/* ---- addresses ------------------------------------------------------- */

/* RFC 5322 §3.2.3 atext. */
static gboolean
is_atext (guchar c)
{
  return g_ascii_isalnum (c) || strchr ("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* A byte that may appear in a UTF-8 label or local part (RFC 6531 §3.3):
 * validity of the sequence is checked on the whole address. */
static gboolean
is_utf8_byte (guchar c)
{
  return c >= 0x80;
}

gboolean
smtp_is_domain (const char *s, gsize len, gboolean utf8)
{
  gsize label = 0;

  if (len == 0 || len > 255)
    return FALSE;
  for (gsize i = 0; i < len; i++)
    {
      guchar c = (guchar) s[i];
      if (c == '.')
        {
          /* RFC 5321 §4.1.2 sub-domain: Let-dig [Ldh-str]. */
          if (label == 0 || s[i - 1] == '-')
            return FALSE;
          label = 0;
          continue;
        }
      if (g_ascii_isalnum (c) || (utf8 && is_utf8_byte (c)))
        label++;
      else if (c == '-' && label > 0)
        label++;
      else
        return FALSE;
      if (label > 63)
        return FALSE;
    }
  return label > 0 && s[len - 1] != '-';
}

static gboolean
is_address_literal (const char *s, gsize len)
{
  g_autofree char *inner = NULL;
  g_autoptr (GInetAddress) addr = NULL;

  /* RFC 5321 §4.1.3: "[" IPv4 "]" or "[IPv6:" IPv6 "]". */
  if (len < 3 || s[0] != '[' || s[len - 1] != ']')
    return FALSE;
  inner = g_strndup (s + 1, len - 2);
  if (g_ascii_strncasecmp (inner, "IPv6:", 5) == 0)
    {
      addr = g_inet_address_new_from_string (inner + 5);
      return addr != NULL && g_inet_address_get_family (addr) == G_SOCKET_FAMILY_IPV6;
    }
  for (const char *p = inner; *p != '\0'; p++)
    if (!g_ascii_isdigit (*p) && *p != '.')
      return FALSE;
  addr = g_inet_address_new_from_string (inner);
  return addr != NULL && g_inet_address_get_family (addr) == G_SOCKET_FAMILY_IPV4;
}

/* Dot-string (RFC 5321 §4.1.2): atoms separated by single dots. */
static gboolean
is_dot_string (const char *s, gsize len)
{
  if (len == 0 || s[0] == '.' || s[len - 1] == '.')
    return FALSE;
  for (gsize i = 0; i < len; i++)
    {
      guchar c = (guchar) s[i];
      if (c == '.' && s[i + 1] == '.')
        return FALSE;
      if (c != '.' && !is_atext (c) && !is_utf8_byte (c))
        return FALSE;
    }
  return TRUE;
}

/* Parses a Path at *P ("<" [A-d-l ":"] Mailbox ">"), or "<>" when
 * ALLOW_NULL, or "<postmaster>" when ALLOW_POSTMASTER. Sets *OUT to the
 * mailbox (g_free) and advances *P past ">". */
static gboolean
parse_path (const char **pp, gboolean allow_null, gboolean allow_postmaster, char **out)
{
  const char *p = *pp;
  const char *local, *local_end, *domain, *end;

  if (*p != '<')
    return FALSE;
  p++;
  if (*p == '>' && allow_null)
    {
      *out = g_strdup ("");
      *pp = p + 1;
      return TRUE;
    }
  /* RFC 5321 §4.1.1.3 and appendix C: a source route is accepted and ignored. */
  if (*p == '@')
    {
      const char *colon = p;
      while (*colon != '\0' && *colon != ':' && *colon != '>' && *colon != ' ')
        colon++;
      if (*colon != ':')
        return FALSE;
      p = colon + 1;
    }
  local = p;
  if (*p == '"')
    {
      /* Quoted-string: qtextSMTP or quoted-pairSMTP. */
      for (p++; *p != '"'; p++)
        {
          guchar c = (guchar) *p;
          if (c == '\\')
            {
              p++;
              if ((guchar) *p < 32 || (guchar) *p > 126)
                return FALSE;
            }
          else if (c == '\0' || (c < 32 && c != 0) || c == 127)
            return FALSE;
        }
      p++;
      local_end = p;
    }
  else
    {
      while (*p != '\0' && *p != '@' && *p != '>')
        p++;
      local_end = p;
      if (!is_dot_string (local, local_end - local))
        return FALSE;
    }
  /* "<postmaster>" without a domain (RFC 5321 §4.1.1.3), case-insensitive. */
  if (*p == '>' && allow_postmaster && local_end - local == 10 && g_ascii_strncasecmp (local, "postmaster", 10) == 0)
    {
      *out = g_strdup ("postmaster");
      *pp = p + 1;
      return TRUE;
    }
  if (*p != '@')
    return FALSE;
  domain = ++p;
  if (*p == '[')
    {
      while (*p != '\0' && *p != ']' && *p != '>')
        p++;
      if (*p != ']')
        return FALSE;
      p++;
      if (!is_address_literal (domain, p - domain))
        return FALSE;
    }
  else
    {
      while (*p != '\0' && *p != '>')
        p++;
      if (!smtp_is_domain (domain, p - domain, TRUE))
        return FALSE;
    }
  end = p;
  if (*p != '>')
    return FALSE;
  /* RFC 5321 §4.5.3.1.1-3: local part 64, domain 255, path 256 octets. */
  if (local_end - local > 64 || end - domain > 255 || end - local + 2 > 256)
    return FALSE;
  *out = g_strndup (local, end - local);
  *pp = p + 1;
  return TRUE;
}

static gboolean
has_non_ascii (const char *s)
{
  for (; *s != '\0'; s++)
    if ((guchar) *s >= 0x80)
      return TRUE;
  return FALSE;
}

/* ---- parameters ------------------------------------------------------ */

gboolean
smtp_xtext_ok (const char *text, gsize max)
{
  gsize n = 0;

  /* RFC 3461 §4: xchar is 33-126 except "+" and "="; hexchar is "+XX". */
  for (const char *p = text; *p != '\0'; p++, n++)
    {
      guchar c = (guchar) *p;
      if (c == '+')
        {
          if (!g_ascii_isxdigit (p[1]) || !g_ascii_isxdigit (p[2]) || g_ascii_islower (p[1])
              || g_ascii_islower (p[2]))
            return FALSE;
          p += 2;
        }
      else if (c < 33 || c > 126 || c == '=')
        return FALSE;
    }
  return n > 0 && n <= max;
}

/* Splits the parameter list; calls FUNC for each keyword/value (value NULL
 * when absent). Returns FALSE with *ERROR set by FUNC or for bad syntax. */
typedef gboolean (*ParamFunc) (const char *keyword, const char *value, gpointer data, SmtpReply *error);

static const SmtpReply reply_param_syntax = { 501, "5.5.4", "Syntax error in parameters" };
static const SmtpReply reply_param_no_ehlo = { 555, "5.5.4", "Parameters are only accepted after EHLO" };

static gboolean
parse_params (const char *p, const SmtpParseContext *ctx, ParamFunc func, gpointer data, SmtpReply *error)
{
  g_autoptr (GHashTable) seen = NULL;

  while (*p == ' ')
    p++;
  if (*p == '\0')
    return TRUE;
  if (!ctx->esmtp)
    {
      *error = reply_param_no_ehlo;
      return FALSE;
    }
  seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  while (*p != '\0')
    {
      const char *start = p;
      const char *eq = NULL;
      g_autofree char *word = NULL;
      char *value;

      while (*p != '\0' && *p != ' ')
        {
          if (*p == '=' && eq == NULL)
            eq = p;
          p++;
        }
      word = g_strndup (start, p - start);
      value = eq != NULL ? word + (eq - start) : NULL;
      if (value != NULL)
        *value++ = '\0';
      /* esmtp-keyword: (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
      if (!g_ascii_isalnum (word[0]))
        goto bad;
      for (const char *k = word; *k != '\0'; k++)
        if (!g_ascii_isalnum (*k) && *k != '-')
          goto bad;
      /* esmtp-value: 1*(%d33-60 / %d62-126); UTF-8 is left to each parameter. */
      if (value != NULL)
        {
          if (*value == '\0')
            goto bad;
          for (const char *v = value; *v != '\0'; v++)
            if ((guchar) *v < 33 || *v == '=' || *v == 127)
              goto bad;
        }
      {
        char *upper = g_ascii_strup (word, -1);
        if (!g_hash_table_add (seen, upper))
          goto bad;  /* the same parameter twice */
      }
      if (!func (word, value, data, error))
        return FALSE;
      while (*p == ' ')
        p++;
    }
  return TRUE;

bad:
  *error = reply_param_syntax;
  return FALSE;
}

static gboolean
mail_param (const char *keyword, const char *value, gpointer data, SmtpReply *error)
{
  SmtpMailArgs *m = data;

  if (g_ascii_strcasecmp (keyword, "SIZE") == 0)
    {
      guint64 n;
      /* RFC 1870 §3: size-value ::= 1*20DIGIT */
      if (value == NULL || strlen (value) > 20 || !g_ascii_string_to_unsigned (value, 10, 0, G_MAXINT64, &n, NULL))
        {
          *error = (SmtpReply) { 501, "5.5.4", "Bad SIZE parameter" };
          return FALSE;
        }
      m->size = (gint64) n;
      return TRUE;
    }
  if (g_ascii_strcasecmp (keyword, "BODY") == 0)
    {
      /* RFC 6152: 7BIT or 8BITMIME; BINARYMIME (RFC 3030) is not offered. */
      if (value != NULL && g_ascii_strcasecmp (value, "7BIT") == 0)
        m->body = SMTP_BODY_7BIT;
      else if (value != NULL && g_ascii_strcasecmp (value, "8BITMIME") == 0)
        m->body = SMTP_BODY_8BITMIME;
      else
        {
          *error = (SmtpReply) { 555, "5.5.4", "Unsupported BODY type" };
          return FALSE;
        }
      return TRUE;
    }
  if (g_ascii_strcasecmp (keyword, "SMTPUTF8") == 0)
    {
      if (value != NULL)
        {
          *error = (SmtpReply) { 501, "5.5.4", "SMTPUTF8 takes no value" };
          return FALSE;
        }
      m->smtputf8 = TRUE;
      return TRUE;
    }
  if (g_ascii_strcasecmp (keyword, "RET") == 0)
    {
      /* RFC 3461 §4.3 */
      if (value == NULL || (g_ascii_strcasecmp (value, "FULL") != 0 && g_ascii_strcasecmp (value, "HDRS") != 0))
        {
          *error = (SmtpReply) { 501, "5.5.4", "RET must be FULL or HDRS" };
          return FALSE;
        }
      m->ret = g_ascii_strup (value, -1);
      return TRUE;
    }
  if (g_ascii_strcasecmp (keyword, "ENVID") == 0)
    {
      /* RFC 3461 §4.4: xtext, at most 100 characters. */
      if (value == NULL || !smtp_xtext_ok (value, 100))
        {
          *error = (SmtpReply) { 501, "5.5.4", "Bad ENVID parameter" };
          return FALSE;
        }
      m->envid = g_strdup (value);
      return TRUE;
    }
  if (g_ascii_strcasecmp (keyword, "AUTH") == 0)
    {
      /* RFC 4954 §5: AUTH=<> or an xtext mailbox; accepted and not trusted. */
      if (value == NULL || (strcmp (value, "<>") != 0 && !smtp_xtext_ok (value, 500)))
        {
          *error = (SmtpReply) { 501, "5.5.4", "Bad AUTH parameter" };
          return FALSE;
        }
      m->auth = g_strdup (value);
      return TRUE;
    }
  *error = (SmtpReply) { 555, "5.5.4", "Unsupported MAIL parameter" };
  return FALSE;
}

static gboolean
rcpt_param (const char *keyword, const char *value, gpointer data, SmtpReply *error)
{
  SmtpRcptArgs *r = data;

  if (g_ascii_strcasecmp (keyword, "NOTIFY") == 0)
    {
      /* RFC 3461 §4.1: "NEVER" alone, or a list of SUCCESS, FAILURE, DELAY. */
      g_auto (GStrv) items = NULL;
      gboolean never = FALSE, other = FALSE;
      guint mask = 0;

      if (value == NULL)
        goto bad_notify;
      items = g_strsplit (value, ",", -1);
      for (guint i = 0; items[i] != NULL; i++)
        {
          guint bit;
          if (g_ascii_strcasecmp (items[i], "NEVER") == 0)
            bit = 1, never = TRUE;
          else if (g_ascii_strcasecmp (items[i], "SUCCESS") == 0)
            bit = 2, other = TRUE;
          else if (g_ascii_strcasecmp (items[i], "FAILURE") == 0)
            bit = 4, other = TRUE;
          else if (g_ascii_strcasecmp (items[i], "DELAY") == 0)
            bit = 8, other = TRUE;
          else
            goto bad_notify;
          if (mask & bit)
            goto bad_notify;
          mask |= bit;
        }
      if (never && other)
        goto bad_notify;
      r->notify = g_ascii_strup (value, -1);
      return TRUE;
    bad_notify:
      *error = (SmtpReply) { 501, "5.5.4", "Bad NOTIFY parameter" };
      return FALSE;
    }
  if (g_ascii_strcasecmp (keyword, "ORCPT") == 0)
    {
      /* RFC 3461 §4.2: addr-type ";" xtext, at most 500 characters. */
      const char *semi = value != NULL ? strchr (value, ';') : NULL;
      gboolean ok = semi != NULL && semi > value && strlen (value) <= 500;

      for (const char *t = value; ok && t < semi; t++)
        ok = is_atext ((guchar) *t);
      if (ok)
        ok = smtp_xtext_ok (semi + 1, 500);
      if (!ok)
        {
          *error = (SmtpReply) { 501, "5.5.4", "Bad ORCPT parameter" };
          return FALSE;
        }
      r->orcpt = g_strdup (value);
      return TRUE;
    }
  *error = (SmtpReply) { 555, "5.5.4", "Unsupported RCPT parameter" };
  return FALSE;
}

void
smtp_mail_args_clear (SmtpMailArgs *args)
{
  g_free (args->address);
  g_free (args->ret);
  g_free (args->envid);
  g_free (args->auth);
  memset (args, 0, sizeof *args);
  args->size = -1;
}

void
smtp_rcpt_args_clear (SmtpRcptArgs *args)
{
  g_free (args->address);
  g_free (args->notify);
  g_free (args->orcpt);
  memset (args, 0, sizeof *args);
}

/* "FROM:" / "TO:" then optional blanks (RFC 5321 has none; clients send one). */
static const char *
skip_keyword (const char *args, const char *keyword)
{
  gsize n = strlen (keyword);

  if (g_ascii_strncasecmp (args, keyword, n) != 0)
    return NULL;
  args += n;
  while (*args == ' ')
    args++;
  return args;
}

/* Non-ASCII addresses need SMTPUTF8 (RFC 6531 §3.4) and must be UTF-8. */
static gboolean
check_utf8 (const char *address, gboolean smtputf8, SmtpReply *error, const SmtpReply *syntax)
{
  if (!has_non_ascii (address))
    return TRUE;
  if (!smtputf8)
    {
      *error = (SmtpReply) { 553, "5.6.7", "Non-ASCII address needs SMTPUTF8" };
      return FALSE;
    }
  if (!g_utf8_validate (address, -1, NULL))
    {
      *error = *syntax;
      return FALSE;
    }
  return TRUE;
}

gboolean
smtp_parse_mail (const char *args, const SmtpParseContext *ctx, SmtpMailArgs *out, SmtpReply *error)
{
  static const SmtpReply syntax = { 501, "5.1.7", "Bad sender address syntax" };
  const char *p = skip_keyword (args, "FROM:");

  memset (out, 0, sizeof *out);
  out->size = -1;
  if (p == NULL)
    {
      *error = (SmtpReply) { 501, "5.5.4", "Syntax: MAIL FROM:<address>" };
      return FALSE;
    }
  if (!parse_path (&p, TRUE, FALSE, &out->address) || (*p != '\0' && *p != ' '))
    {
      *error = syntax;
      goto fail;
    }
  if (!parse_params (p, ctx, mail_param, out, error))
    goto fail;
  if (!check_utf8 (out->address, out->smtputf8, error, &syntax))
    goto fail;
  return TRUE;

fail:
  smtp_mail_args_clear (out);
  return FALSE;
}

gboolean
smtp_parse_rcpt (const char *args, const SmtpParseContext *ctx, SmtpRcptArgs *out, SmtpReply *error)
{
  static const SmtpReply syntax = { 501, "5.1.3", "Bad recipient address syntax" };
  const char *p = skip_keyword (args, "TO:");

  memset (out, 0, sizeof *out);
  if (p == NULL)
    {
      *error = (SmtpReply) { 501, "5.5.4", "Syntax: RCPT TO:<address>" };
      return FALSE;
    }
  if (!parse_path (&p, FALSE, TRUE, &out->address) || (*p != '\0' && *p != ' '))
    {
      *error = syntax;
      goto fail;
    }
  if (!parse_params (p, ctx, rcpt_param, out, error))
    goto fail;
  if (!check_utf8 (out->address, ctx->smtputf8, error, &syntax))
    goto fail;
  return TRUE;

fail:
  smtp_rcpt_args_clear (out);
  return FALSE;
}

gboolean
smtp_parse_bdat (const char *args, gint64 *size, gboolean *last)
{
  const char *p = args;
  guint64 n;
  g_autofree char *digits = NULL;

  /* RFC 3030 §2: "BDAT" SP chunk-size [ SP end-marker ]; chunk-size = 1*DIGIT */
  while (g_ascii_isdigit (*p))
    p++;
  if (p == args || p - args > 18)
    return FALSE;
  digits = g_strndup (args, p - args);
  if (!g_ascii_string_to_unsigned (digits, 10, 0, G_MAXINT64, &n, NULL))
    return FALSE;
  *size = (gint64) n;
  *last = FALSE;
  if (*p == '\0')
    return TRUE;
  if (*p != ' ')
    return FALSE;
  while (*p == ' ')
    p++;
  if (g_ascii_strcasecmp (p, "LAST") != 0)
    return FALSE;
  *last = TRUE;
  return TRUE;
}

gboolean
smtp_helo_chars_ok (const char *name)
{
  if (*name == '\0')
    return FALSE;
  for (; *name != '\0'; name++)
    if ((guchar) *name < 33 || (guchar) *name > 126)
      return FALSE;
  return TRUE;
}

gboolean
smtp_helo_syntax_ok (const char *name)
{
  gsize len = strlen (name);

  /* RFC 5321 §4.1.1.1: Domain or address-literal. */
  if (len > 0 && name[0] == '[')
    return is_address_literal (name, len);
  return smtp_is_domain (name, len, FALSE);
}

/* ---- AUTH ------------------------------------------------------------ */

guint8 *
smtp_base64_decode (const char *text, gsize *len)
{
  gsize n = strlen (text);
  gsize pad = 0;
  guint8 *out;

  /* RFC 4648 §4 as RFC 4954 §4 requires: groups of four, padding only at the end. */
  if (n % 4 != 0)
    return NULL;
  for (gsize i = 0; i < n; i++)
    {
      guchar c = (guchar) text[i];
      if (c == '=')
        {
          if (i < n - 2)
            return NULL;
          pad++;
        }
      else if (pad > 0 || !(g_ascii_isalnum (c) || c == '+' || c == '/'))
        return NULL;
    }
  if (n == 0)
    {
      *len = 0;
      return g_malloc0 (1);
    }
  out = g_malloc (n / 4 * 3 + 1);
  {
    gint state = 0;
    guint save = 0;
    *len = g_base64_decode_step (text, n, out, &state, &save);
  }
  out[*len] = '\0';
  return out;
}

gboolean
smtp_auth_plain_split (const guint8 *data, gsize len, const char **authzid, const char **authcid,
                       const char **passwd)
{
  const guint8 *nul1 = memchr (data, '\0', len);
  const guint8 *nul2;

  /* RFC 4616 §2: [authzid] UTF8NUL authcid UTF8NUL passwd */
  if (nul1 == NULL)
    return FALSE;
  nul2 = memchr (nul1 + 1, '\0', len - (nul1 + 1 - data));
  if (nul2 == NULL || memchr (nul2 + 1, '\0', len - (nul2 + 1 - data)) != NULL)
    return FALSE;
  *authzid = (const char *) data;
  *authcid = (const char *) nul1 + 1;
  *passwd = (const char *) nul2 + 1;
  return **authcid != '\0' && **passwd != '\0';
}
