/* SPDX-License-Identifier: MIT */
/* The pure half of pop3-server: command lines, numbers, SASL PLAIN, CAPA text, byte-stuffing and TOP. */
#include "pop3-private.h"

#include <string.h>

typedef struct {
  const char *name;
  Pop3CmdKind kind;
  guint states;
  guint min_args;
  guint max_args;
} Pop3CommandInfo;

#define AUTHZ POP3_IN_AUTHORIZATION
#define TRANS POP3_IN_TRANSACTION

/* RFC 1939 §4-§7, RFC 2449 §5 (CAPA), RFC 2595 §4 (STLS), RFC 5034 §4 (AUTH). */
static const Pop3CommandInfo pop3_commands[] = {
  { "USER", POP3_CMD_USER, AUTHZ, 1, 1 },
  { "PASS", POP3_CMD_PASS, AUTHZ, 1, 1 },   /* the argument is the rest of the line */
  { "APOP", POP3_CMD_APOP, AUTHZ, 2, 2 },
  { "AUTH", POP3_CMD_AUTH, AUTHZ, 0, 2 },
  { "STLS", POP3_CMD_STLS, AUTHZ, 0, 0 },
  { "CAPA", POP3_CMD_CAPA, AUTHZ | TRANS, 0, 0 },
  { "QUIT", POP3_CMD_QUIT, AUTHZ | TRANS, 0, 0 },
  { "STAT", POP3_CMD_STAT, TRANS, 0, 0 },
  { "LIST", POP3_CMD_LIST, TRANS, 0, 1 },
  { "RETR", POP3_CMD_RETR, TRANS, 1, 1 },
  { "DELE", POP3_CMD_DELE, TRANS, 1, 1 },
  { "NOOP", POP3_CMD_NOOP, TRANS, 0, 0 },
  { "RSET", POP3_CMD_RSET, TRANS, 0, 0 },
  { "TOP", POP3_CMD_TOP, TRANS, 2, 2 },
  { "UIDL", POP3_CMD_UIDL, TRANS, 0, 1 },
};

gsize
pop3_line_chomp (char *line, gsize len)
{
  if (len > 0 && line[len - 1] == '\n')
    len--;
  if (len > 0 && line[len - 1] == '\r')
    len--;
  line[len] = '\0';
  return len;
}

Pop3ParseResult
pop3_command_parse (char *line, Pop3Command *cmd)
{
  const Pop3CommandInfo *info = NULL;
  gsize kwlen;
  char *p;

  memset (cmd, 0, sizeof *cmd);
  if (*line == '\0')
    return POP3_PARSE_EMPTY;
  /* A CR inside a line is never part of a command: refuse it rather than
   * guess (line smuggling); NUL cannot be passed on either. */
  if (strchr (line, '\r') != NULL)
    return POP3_PARSE_BAD_CHAR;

  kwlen = strcspn (line, " ");
  for (guint i = 0; i < G_N_ELEMENTS (pop3_commands); i++)
    if (strlen (pop3_commands[i].name) == kwlen && g_ascii_strncasecmp (line, pop3_commands[i].name, kwlen) == 0)
      {
        info = &pop3_commands[i];
        break;
      }
  if (info == NULL)
    return POP3_PARSE_UNKNOWN;
  cmd->kind = info->kind;
  cmd->name = info->name;
  cmd->states = info->states;

  p = line + kwlen;
  if (*p == ' ')
    *p++ = '\0';

  if (info->kind == POP3_CMD_PASS)
    {
      /* RFC 1939 §7: PASS has exactly one argument, so spaces are part of
       * the password. */
      if (*p == '\0')
        return POP3_PARSE_BAD_ARGS;
      cmd->rest = p;
      cmd->argv[0] = p;
      cmd->argc = 1;
      return POP3_PARSE_OK;
    }

  /* Arguments are separated by a space (RFC 1939 §3); runs of spaces and
   * trailing spaces, which some clients send, are tolerated. */
  while (*p != '\0')
    {
      while (*p == ' ')
        p++;
      if (*p == '\0')
        break;
      if (cmd->argc == info->max_args)
        return POP3_PARSE_BAD_ARGS;
      cmd->argv[cmd->argc++] = p;
      p += strcspn (p, " ");
      if (*p == ' ')
        *p++ = '\0';
    }
  if (cmd->argc < info->min_args)
    return POP3_PARSE_BAD_ARGS;
  /* RFC 2449 §4: an argument is at most 40 octets; keep a margin for
   * long user names, but no more. */
  for (guint i = 0; i < cmd->argc; i++)
    if (info->kind != POP3_CMD_AUTH && strlen (cmd->argv[i]) > 255)
      return POP3_PARSE_BAD_ARGS;
  return POP3_PARSE_OK;
}

gboolean
pop3_parse_number (const char *s, guint64 max, guint64 *out)
{
  guint64 v = 0;

  if (s == NULL || *s == '\0')
    return FALSE;
  for (; *s != '\0'; s++)
    {
      if (!g_ascii_isdigit (*s))
        return FALSE;
      guint d = (guint) (*s - '0');
      if (v > (G_MAXUINT64 - d) / 10)
        return FALSE;
      v = v * 10 + d;
    }
  if (v > max)
    return FALSE;
  *out = v;
  return TRUE;
}

static gboolean
base64_is_valid (const char *s)
{
  gsize len = strlen (s);
  gsize pad = 0;

  if (len == 0 || len % 4 != 0)
    return FALSE;
  for (gsize i = 0; i < len; i++)
    {
      char c = s[i];
      if (c == '=')
        {
          /* padding only at the end, at most two */
          if (i < len - 2)
            return FALSE;
          pad++;
        }
      else if (pad > 0 || !(g_ascii_isalnum (c) || c == '+' || c == '/'))
        return FALSE;
    }
  return TRUE;
}

static void
wipe (guchar *p, gsize len)
{
  volatile guchar *v = p;
  while (len-- > 0)
    *v++ = 0;
}

gboolean
pop3_sasl_plain_decode (const char *b64, char **authzid, char **authcid, char **passwd)
{
  guchar *raw;
  gsize len;
  const guchar *nul1, *nul2;
  gboolean ok = FALSE;

  *authzid = *authcid = *passwd = NULL;
  if (!base64_is_valid (b64))
    return FALSE;
  raw = g_base64_decode (b64, &len);
  /* RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd,
   * authcid and passwd of 1 to 255 octets, no further NUL. */
  nul1 = memchr (raw, '\0', len);
  nul2 = nul1 != NULL ? memchr (nul1 + 1, '\0', len - (gsize) (nul1 + 1 - raw)) : NULL;
  if (nul2 != NULL && memchr (nul2 + 1, '\0', len - (gsize) (nul2 + 1 - raw)) == NULL)
    {
      gsize zlen = (gsize) (nul1 - raw);
      gsize clen = (gsize) (nul2 - nul1 - 1);
      gsize plen = len - (gsize) (nul2 + 1 - raw);

      if (zlen <= 255 && clen >= 1 && clen <= 255 && plen >= 1 && plen <= 255)
        {
          *authzid = g_strndup ((const char *) raw, zlen);
          *authcid = g_strndup ((const char *) nul1 + 1, clen);
          *passwd = g_strndup ((const char *) nul2 + 1, plen);
          ok = TRUE;
        }
    }
  wipe (raw, len);
  g_free (raw);
  return ok;
}

gboolean
pop3_expire_is_valid (const char *value)
{
  guint64 days;

  if (value == NULL)
    return FALSE;
  return g_ascii_strcasecmp (value, "NEVER") == 0 || pop3_parse_number (value, 1000000, &days);
}

char *
pop3_capa_format (const Pop3CapaInfo *info)
{
  GString *s = g_string_new ("+OK Capability list follows\r\n");

  /* RFC 2449 §6 */
  g_string_append (s, "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
  if (!info->transaction)
    {
      if (info->user)
        g_string_append (s, "USER\r\n");
      if (info->sasl)
        g_string_append (s, "SASL PLAIN\r\n");
      if (info->stls)
        g_string_append (s, "STLS\r\n");   /* RFC 2595 §4 */
    }
  if (info->expire != NULL && *info->expire != '\0')
    g_string_append_printf (s, "EXPIRE %s\r\n", info->expire);
  if (info->implementation != NULL && *info->implementation != '\0')
    g_string_append_printf (s, "IMPLEMENTATION %s\r\n", info->implementation);
  g_string_append (s, ".\r\n");
  return g_string_free (s, FALSE);
}

void
pop3_stuffer_init (Pop3Stuffer *st)
{
  st->at_line_start = TRUE;
}

void
pop3_stuffer_feed (Pop3Stuffer *st, const guint8 *data, gsize len, Pop3EmitFunc emit, gpointer user_data)
{
  const guint8 *p = data;
  const guint8 *end = data + len;
  const guint8 *span = data;

  while (p < end)
    {
      const guint8 *lf;

      /* RFC 1939 §3: "If any line begins with the termination octet, the
       * line is byte-stuffed by pre-pending the termination octet". The
       * original dot goes out with the next span. */
      if (st->at_line_start && *p == '.')
        {
          if (p > span)
            emit (span, (gsize) (p - span), user_data);
          emit (".", 1, user_data);
          span = p;
        }
      lf = memchr (p, '\n', (gsize) (end - p));
      if (lf == NULL)
        {
          st->at_line_start = FALSE;
          break;
        }
      p = lf + 1;
      st->at_line_start = TRUE;
    }
  if (end > span)
    emit (span, (gsize) (end - span), user_data);
}

void
pop3_top_filter_init (Pop3TopFilter *tf, guint64 lines)
{
  memset (tf, 0, sizeof *tf);
  tf->lines_left = lines;
  tf->in_headers = TRUE;
  tf->at_line_start = TRUE;
}

gsize
pop3_top_filter_feed (Pop3TopFilter *tf, const guint8 *data, gsize len)
{
  gsize i = 0;

  if (tf->done)
    return 0;
  while (i < len && tf->in_headers)
    {
      guint8 c = data[i++];

      if (c == '\n')
        {
          if (tf->at_line_start || tf->line_is_cr)
            {
              /* The blank line that ends the header section (RFC 5322 §2.1)
               * is part of the response. */
              tf->in_headers = FALSE;
              if (tf->lines_left == 0)
                {
                  tf->done = TRUE;
                  return i;
                }
            }
          tf->at_line_start = TRUE;
          tf->line_is_cr = FALSE;
        }
      else
        {
          tf->line_is_cr = tf->at_line_start && c == '\r';
          tf->at_line_start = FALSE;
        }
    }
  while (i < len)
    {
      const guint8 *lf = memchr (data + i, '\n', len - i);

      if (lf == NULL)
        return len;
      i = (gsize) (lf - data) + 1;
      if (--tf->lines_left == 0)
        {
          tf->done = TRUE;
          return i;
        }
    }
  return len;
}
