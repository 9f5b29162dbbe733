/* SPDX-License-Identifier: MIT */
/* SMTP client: the reply parser (fed any number of octets at a time) and EHLO capabilities. */
#include "config.h"
#include "smtpc.h"

#include <stdlib.h>
#include <string.h>

void
smtpc_reply_free (SmtpcReply *reply)
{
  if (reply == NULL)
    return;
  g_free (reply->enhanced);
  g_strfreev (reply->lines);
  g_free (reply);
}

void
smtpc_text_escape (GString *out, const char *text, gssize len)
{
  gsize n = len < 0 ? strlen (text) : (gsize) len;

  for (gsize i = 0; i < n; i++)
    {
      guint8 c = (guint8) text[i];
      if (c == '\t')
        g_string_append_c (out, ' ');
      else if (c < 0x20 || c > 0x7e)
        g_string_append_printf (out, "\\x%02x", c);
      else
        g_string_append_c (out, (char) c);
    }
}

char *
smtpc_reply_to_string (const SmtpcReply *reply)
{
  GString *s = g_string_new (NULL);

  g_string_printf (s, "%03u", reply->code);
  if (reply->enhanced != NULL)
    g_string_append_printf (s, " %s", reply->enhanced);
  for (guint i = 0; reply->lines != NULL && reply->lines[i] != NULL && s->len <= SMTPC_MAX_REPLY_TEXT; i++)
    if (reply->lines[i][0] != '\0')
      g_string_append_printf (s, " %s", reply->lines[i]);
  if (s->len > SMTPC_MAX_REPLY_TEXT)
    {
      /* The text is ASCII (smtpc_text_escape()); do not cut an escape in two. */
      gsize cut = SMTPC_MAX_REPLY_TEXT - 3;
      for (gsize back = 1; back <= 3; back++)
        if (s->str[cut - back] == '\\' && s->str[cut - back + 1] == 'x')
          {
            cut -= back;
            break;
          }
      g_string_truncate (s, cut);
      g_string_append (s, "...");
    }
  return g_string_free (s, FALSE);
}

void
smtpc_reply_parser_init (SmtpcReplyParser *p)
{
  memset (p, 0, sizeof *p);
  p->line = g_string_sized_new (128);
  p->lines = g_ptr_array_new_with_free_func (g_free);
}

void
smtpc_reply_parser_reset (SmtpcReplyParser *p)
{
  g_string_truncate (p->line, 0);
  g_ptr_array_set_size (p->lines, 0);
  p->code = 0;
  g_clear_pointer (&p->enhanced, g_free);
  p->size = 0;
  g_clear_pointer (&p->done, smtpc_reply_free);
  g_clear_pointer (&p->error, g_free);
}

void
smtpc_reply_parser_clear (SmtpcReplyParser *p)
{
  smtpc_reply_parser_reset (p);
  g_string_free (p->line, TRUE);
  g_ptr_array_unref (p->lines);
  p->line = NULL;
  p->lines = NULL;
}

/* An RFC 3463 code of class @cls at the start of @text ("5.1.1"): its length, or 0. */
static gsize
enhanced_length (const char *text, char cls)
{
  const char *p = text;

  if (p[0] != cls || p[1] != '.')
    return 0;
  p += 2;
  for (int part = 0; part < 2; part++)
    {
      int digits = 0;
      while (g_ascii_isdigit (*p) && digits < 4)
        {
          p++;
          digits++;
        }
      if (digits == 0 || digits > 3)
        return 0;
      if (part == 0)
        {
          if (*p != '.')
            return 0;
          p++;
        }
    }
  if (*p != '\0' && *p != ' ')
    return 0;
  return (gsize) (p - text);
}

static SmtpcParseStatus
parser_fail (SmtpcReplyParser *p, const char *why)
{
  g_free (p->error);
  p->error = g_strdup (why);
  return SMTPC_PARSE_ERROR;
}

/* A complete line (without its line end) in p->line. */
static SmtpcParseStatus
parser_line (SmtpcReplyParser *p)
{
  const char *l = p->line->str;
  gsize len = p->line->len;
  guint code;
  gboolean last;
  const char *text;
  gsize elen;

  /* RFC 5321 §4.2: three digits, then SP (last line), "-" (more follow) or
   * nothing. The first digit is 2 to 5; §4.2.1 allows 1xx nowhere in SMTP. */
  if (len < 3 || !g_ascii_isdigit (l[0]) || !g_ascii_isdigit (l[1]) || !g_ascii_isdigit (l[2]) || l[0] < '2'
      || l[0] > '5')
    return parser_fail (p, "a reply line does not start with a reply code");
  if (len > 3 && l[3] != ' ' && l[3] != '-')
    return parser_fail (p, "a reply code is not followed by a space or a hyphen");
  code = (guint) ((l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0'));
  if (p->lines->len > 0 && code != p->code)
    return parser_fail (p, "the lines of a multi-line reply carry different codes");
  p->code = code;
  last = len == 3 || l[3] == ' ';
  text = len > 4 ? l + 4 : "";
  /* The enhanced code (RFC 2034 §4) starts every line's text; it is kept
   * once, from the first line. */
  elen = enhanced_length (text, l[0]);
  if (elen > 0)
    {
      if (p->lines->len == 0)
        p->enhanced = g_strndup (text, elen);
      text += elen;
      while (*text == ' ')
        text++;
    }
  if (p->lines->len >= SMTPC_MAX_REPLY_LINES)
    return parser_fail (p, "a reply has too many lines");
  /* Where remote text enters: nothing after this sees a control octet. */
  {
    GString *safe = g_string_sized_new (len + 1);
    smtpc_text_escape (safe, text, -1);  /* a line with a NUL octet was refused */
    g_ptr_array_add (p->lines, g_string_free (safe, FALSE));
  }
  g_string_truncate (p->line, 0);
  if (!last)
    return SMTPC_PARSE_MORE;

  g_ptr_array_add (p->lines, NULL);
  p->done = g_new0 (SmtpcReply, 1);
  p->done->code = p->code;
  p->done->enhanced = g_steal_pointer (&p->enhanced);
  p->done->lines = (char **) g_ptr_array_steal (p->lines, NULL);
  g_ptr_array_unref (p->lines);
  p->lines = g_ptr_array_new_with_free_func (g_free);
  p->code = 0;
  p->size = 0;
  return SMTPC_PARSE_DONE;
}

SmtpcParseStatus
smtpc_reply_parser_feed (SmtpcReplyParser *p, const guint8 *data, gsize len, gsize *used)
{
  gsize i = 0;

  g_return_val_if_fail (p->done == NULL, SMTPC_PARSE_ERROR);
  *used = 0;
  if (p->error != NULL)
    return SMTPC_PARSE_ERROR;
  while (i < len)
    {
      const guint8 *lf = memchr (data + i, '\n', len - i);
      gsize n = lf != NULL ? (gsize) (lf - (data + i)) : len - i;
      SmtpcParseStatus st;

      if (p->line->len + n > SMTPC_MAX_REPLY_LINE)
        return parser_fail (p, "a reply line is too long");
      p->size += n + (lf != NULL ? 1 : 0);
      if (p->size > SMTPC_MAX_REPLY_SIZE)
        return parser_fail (p, "a reply is too long");
      g_string_append_len (p->line, (const char *) data + i, (gssize) n);
      i += n;
      if (lf == NULL)
        break;
      i++;  /* the LF */
      *used = i;
      if (p->line->len > 0 && p->line->str[p->line->len - 1] == '\r')
        g_string_truncate (p->line, p->line->len - 1);
      if (memchr (p->line->str, '\0', p->line->len) != NULL)
        return parser_fail (p, "a reply line contains a NUL octet");
      st = parser_line (p);
      if (st != SMTPC_PARSE_MORE)
        return st;
    }
  *used = i;
  return SMTPC_PARSE_MORE;
}

SmtpcReply *
smtpc_reply_parser_take (SmtpcReplyParser *p)
{
  return g_steal_pointer (&p->done);
}

const char *
smtpc_reply_parser_get_error (SmtpcReplyParser *p)
{
  return p->error != NULL ? p->error : "no error";
}

/* ---- EHLO ------------------------------------------------------------- */

void
smtpc_caps_parse (SmtpcCaps *caps, const SmtpcReply *ehlo)
{
  memset (caps, 0, sizeof *caps);
  if (ehlo == NULL || ehlo->code / 100 != 2)
    return;
  caps->esmtp = TRUE;
  /* The first line is the server's name and greeting (RFC 5321 §4.1.1.1). */
  for (guint i = 1; ehlo->lines[i] != NULL; i++)
    {
      g_auto (GStrv) words = g_strsplit_set (ehlo->lines[i], " =", -1);
      const char *kw = words[0];

      if (kw == NULL)
        continue;
      if (g_ascii_strcasecmp (kw, "PIPELINING") == 0)
        caps->pipelining = TRUE;
      else if (g_ascii_strcasecmp (kw, "STARTTLS") == 0)
        caps->starttls = TRUE;
      else if (g_ascii_strcasecmp (kw, "DSN") == 0)
        caps->dsn = TRUE;
      else if (g_ascii_strcasecmp (kw, "8BITMIME") == 0)
        caps->eightbitmime = TRUE;
      else if (g_ascii_strcasecmp (kw, "SMTPUTF8") == 0)
        caps->smtputf8 = TRUE;
      else if (g_ascii_strcasecmp (kw, "ENHANCEDSTATUSCODES") == 0)
        caps->enhancedstatuscodes = TRUE;
      else if (g_ascii_strcasecmp (kw, "SIZE") == 0)
        {
          caps->size = TRUE;
          if (words[1] != NULL && words[1][0] != '\0')
            {
              char *end = NULL;
              gint64 v = g_ascii_strtoll (words[1], &end, 10);
              if (end != NULL && *end == '\0' && v > 0)
                caps->size_limit = v;
            }
        }
      else if (g_ascii_strcasecmp (kw, "AUTH") == 0)
        {
          /* "AUTH PLAIN LOGIN", and the pre-standard "AUTH=PLAIN LOGIN". */
          caps->auth = TRUE;
          for (guint w = 1; words[w] != NULL; w++)
            {
              if (g_ascii_strcasecmp (words[w], "PLAIN") == 0)
                caps->auth_plain = TRUE;
              else if (g_ascii_strcasecmp (words[w], "LOGIN") == 0)
                caps->auth_login = TRUE;
            }
        }
    }
}

/* ---- endpoints ----------------------------------------------------------- */

gboolean
smtpc_split_endpoint (const char *endpoint, char **host, guint16 *port)
{
  const char *colon = strrchr (endpoint, ':');
  char *end = NULL;
  gint64 p;

  if (colon == NULL || colon == endpoint)
    return FALSE;
  p = g_ascii_strtoll (colon + 1, &end, 10);
  if (end == NULL || *end != '\0' || p < 1 || p > 65535)
    return FALSE;
  if (endpoint[0] == '[' && colon[-1] == ']')
    *host = g_strndup (endpoint + 1, (gsize) (colon - endpoint - 2));
  else
    *host = g_strndup (endpoint, (gsize) (colon - endpoint));
  *port = (guint16) p;
  if (**host == '\0' || strcmp (*host, "*") == 0)
    {
      g_clear_pointer (host, g_free);
      return FALSE;
    }
  return TRUE;
}
