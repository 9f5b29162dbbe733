/* SPDX-License-Identifier: MIT */
/* metrics: an incremental parser of HTTP/1.x request heads (RFC 9112), bounded in size. */
#include "config.h"
#include "metrics-private.h"

#include <string.h>

/* Empty lines tolerated before the request line (RFC 9112 §2.2). */
#define MAX_LEADING_EMPTY 4
/* Header fields beyond this many are refused with 431. */
#define MAX_FIELDS 100

void
metrics_http_parser_init (MetricsHttpParser *p, gsize max_head)
{
  memset (p, 0, sizeof *p);
  p->max_head = max_head;
  p->line = g_string_new (NULL);
}

void
metrics_http_parser_clear (MetricsHttpParser *p)
{
  if (p->line != NULL)
    g_string_free (p->line, TRUE);
  p->line = NULL;
  g_clear_pointer (&p->method, g_free);
  g_clear_pointer (&p->target, g_free);
}

const char *
metrics_http_reason (guint status)
{
  switch (status)
    {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

static MetricsHttpResult
parser_fail (MetricsHttpParser *p, guint status, const char *why)
{
  p->status = status;
  p->error = why;
  return METRICS_HTTP_ERROR;
}

/* tchar of RFC 9110 §5.6.2. */
static gboolean
is_tchar (char c)
{
  return g_ascii_isalnum (c) || (c != '\0' && strchr ("!#$%&'*+-.^_`|~", c) != NULL);
}

static gboolean
is_token (const char *s, gsize len)
{
  if (len == 0)
    return FALSE;
  for (gsize i = 0; i < len; i++)
    if (!is_tchar (s[i]))
      return FALSE;
  return TRUE;
}

/* The path of an origin-form ("/a?b") or absolute-form ("http://h/a")
 * target (RFC 9112 §3.2), without query; NULL when it is neither. */
static char *
target_path (const char *target)
{
  const char *path = target;

  if (g_ascii_strncasecmp (target, "http://", 7) == 0 || g_ascii_strncasecmp (target, "https://", 8) == 0)
    {
      const char *authority = strstr (target, "//") + 2;
      path = strchr (authority, '/');
      if (path == NULL)
        return g_strndup ("/", 1);
    }
  else if (strcmp (target, "*") == 0)
    return g_strdup ("*");   /* asterisk-form: OPTIONS only, answered 405 */
  if (path[0] != '/')
    return NULL;
  return g_strndup (path, strcspn (path, "?#"));
}

static MetricsHttpResult
parse_request_line (MetricsHttpParser *p, const char *line)
{
  const char *sp1 = strchr (line, ' ');
  const char *sp2 = sp1 != NULL ? strchr (sp1 + 1, ' ') : NULL;
  const char *version;
  g_autofree char *target = NULL;

  /* method SP request-target SP HTTP-version, single spaces (RFC 9112 §3). */
  if (sp1 == NULL || sp2 == NULL || strchr (sp2 + 1, ' ') != NULL || !is_token (line, (gsize) (sp1 - line))
      || sp2 == sp1 + 1)
    return parser_fail (p, 400, "malformed request line");
  version = sp2 + 1;
  if (strlen (version) != 8 || strncmp (version, "HTTP/", 5) != 0 || !g_ascii_isdigit (version[5])
      || version[6] != '.' || !g_ascii_isdigit (version[7]))
    return parser_fail (p, 400, "malformed HTTP version");
  if (version[5] != '1')
    return parser_fail (p, 505, "unsupported HTTP version");
  p->http11 = version[7] != '0';
  target = g_strndup (sp1 + 1, (gsize) (sp2 - sp1 - 1));
  for (const char *c = target; *c != '\0'; c++)
    if ((guchar) *c <= 0x20 || (guchar) *c >= 0x7f)
      return parser_fail (p, 400, "bad character in the request target");
  p->target = target_path (target);
  if (p->target == NULL)
    return parser_fail (p, 400, "malformed request target");
  p->method = g_strndup (line, (gsize) (sp1 - line));
  return METRICS_HTTP_MORE;
}

static MetricsHttpResult
parse_field (MetricsHttpParser *p, const char *line)
{
  const char *colon = strchr (line, ':');

  if (line[0] == ' ' || line[0] == '\t')
    return parser_fail (p, 400, "obsolete line folding");   /* RFC 9112 §5.2 */
  /* No whitespace between name and colon (RFC 9112 §5.1). */
  if (colon == NULL || !is_token (line, (gsize) (colon - line)))
    return parser_fail (p, 400, "malformed header field");
  if (p->lines > MAX_FIELDS + 1)
    return parser_fail (p, 431, "too many header fields");
  if (colon - line == 4 && g_ascii_strncasecmp (line, "host", 4) == 0)
    {
      if (p->has_host)
        return parser_fail (p, 400, "more than one Host field");   /* RFC 9112 §3.2 */
      p->has_host = TRUE;
    }
  return METRICS_HTTP_MORE;
}

static MetricsHttpResult
parser_line (MetricsHttpParser *p)
{
  char *line = p->line->str;
  gsize len = p->line->len;

  if (len > 0 && line[len - 1] == '\r')
    line[--len] = '\0';
  if (memchr (line, '\r', len) != NULL || memchr (line, '\0', len) != NULL)
    return parser_fail (p, 400, "bare CR or NUL in the request head");
  if (p->method == NULL)
    {
      if (len == 0)
        return ++p->lines <= MAX_LEADING_EMPTY ? METRICS_HTTP_MORE : parser_fail (p, 400, "no request line");
      p->lines++;
      return parse_request_line (p, line);
    }
  p->lines++;
  if (len == 0)
    {
      if (p->http11 && !p->has_host)
        return parser_fail (p, 400, "HTTP/1.1 request without Host");
      return METRICS_HTTP_DONE;
    }
  return parse_field (p, line);
}

MetricsHttpResult
metrics_http_parser_feed (MetricsHttpParser *p, const guint8 *data, gsize len, gsize *consumed)
{
  gsize i = 0;
  MetricsHttpResult r = METRICS_HTTP_MORE;

  while (i < len && r == METRICS_HTTP_MORE)
    {
      guint8 c = data[i++];

      if (++p->used > p->max_head)
        {
          r = p->method == NULL ? parser_fail (p, 414, "request line too long")
                                : parser_fail (p, 431, "request head too large");
          break;
        }
      if (c != '\n')
        {
          g_string_append_c (p->line, (char) c);
          continue;
        }
      r = parser_line (p);
      g_string_truncate (p->line, 0);
    }
  *consumed = i;
  return r;
}
