/* SPDX-License-Identifier: MIT */
/* Message content: the DATA/BDAT decoder (dot-unstuffing, end of data, bare CR/LF) and the Received field. */
#include "config.h"
#include "smtp-private.h"

#include <string.h>

/*
 * The decoder turns what the client sends after DATA (or inside BDAT
 * chunks) into the octets stored. Its rules:
 *
 * - The content ends only at <CRLF>.<CRLF> (RFC 5321 §4.1.1.4), where the
 *   first CRLF is a real CR LF pair (or the end of the DATA command line):
 *   a bare LF or bare CR can never take part in it, whatever the policy,
 *   so "<LF>.<LF>", "<LF>.<CR><LF>" or "<CR>.<CR>" never end a message
 *   (SMTP smuggling).
 * - A line that starts after a real CRLF and begins with "." loses that
 *   dot (RFC 5321 §4.5.2). After a bare line end nothing is unstuffed.
 * - A bare CR or LF (RFC 5321 §2.3.8) is either stored as CRLF
 *   ("normalise") or makes the decoder stop ("reject"). Stored messages
 *   therefore never hold a lone CR or LF, which keeps them safe to relay.
 * - BDAT chunks (RFC 3030) are "raw": no dots, no end mark, the same
 *   bare CR/LF policy.
 */

void
smtp_decoder_init (SmtpDecoder *dec, gboolean raw, gboolean reject_bare, gboolean at_line_start)
{
  memset (dec, 0, sizeof *dec);
  dec->raw = raw;
  dec->reject_bare = reject_bare;
  dec->state = at_line_start && !raw ? SMTP_DEC_BOL : SMTP_DEC_MID;
}

SmtpDecResult
smtp_decoder_feed (SmtpDecoder *dec, const guint8 *in, gsize len, GByteArray *out, gsize *used)
{
  guint start = out->len;
  SmtpDecResult result = SMTP_DEC_MORE;
  guint8 *o, *o0;
  gsize i = 0;

  /* Each input octet yields at most two output octets, plus a CR pending
   * from the previous call. */
  g_byte_array_set_size (out, start + 2 * len + 2);
  o0 = o = out->data + start;

  while (i < len)
    {
      switch ((SmtpDecState) dec->state)
        {
        case SMTP_DEC_MID:
          {
            const guint8 *run = in + i;
            gsize n = 0;
            while (i + n < len && run[n] != '\r' && run[n] != '\n')
              n++;
            memcpy (o, run, n);
            o += n;
            i += n;
            if (i == len)
              break;
            if (in[i] == '\r')
              {
                dec->state = SMTP_DEC_CR;
                i++;
                break;
              }
            /* A bare LF. */
            if (dec->reject_bare)
              {
                result = SMTP_DEC_BARE;
                goto out;
              }
            dec->saw_bare = TRUE;
            *o++ = '\r';
            *o++ = '\n';
            i++;
            break;
          }
        case SMTP_DEC_BOL:
          if (in[i] == '.')
            {
              dec->state = SMTP_DEC_DOT;
              i++;
            }
          else
            dec->state = SMTP_DEC_MID;
          break;
        case SMTP_DEC_DOT:
          if (in[i] == '\r')
            {
              dec->state = SMTP_DEC_DOT_CR;
              i++;
            }
          else
            dec->state = SMTP_DEC_MID;   /* the stuffed dot is dropped */
          break;
        case SMTP_DEC_DOT_CR:
          if (in[i] == '\n')
            {
              i++;
              result = SMTP_DEC_END;
              goto out;
            }
          /* ".<CR>" then something else: a bare CR. */
          if (dec->reject_bare)
            {
              result = SMTP_DEC_BARE;
              goto out;
            }
          dec->saw_bare = TRUE;
          *o++ = '\r';
          *o++ = '\n';
          dec->state = SMTP_DEC_MID;
          break;
        case SMTP_DEC_CR:
          if (in[i] == '\n')
            {
              *o++ = '\r';
              *o++ = '\n';
              i++;
              dec->state = dec->raw ? SMTP_DEC_MID : SMTP_DEC_BOL;
              break;
            }
          if (dec->reject_bare)
            {
              result = SMTP_DEC_BARE;
              goto out;
            }
          dec->saw_bare = TRUE;
          *o++ = '\r';
          *o++ = '\n';
          dec->state = SMTP_DEC_MID;
          break;
        }
    }

out:
  if (o > o0)
    {
      dec->has_output = TRUE;
      dec->last = o[-1];
    }
  g_byte_array_set_size (out, start + (guint) (o - o0));
  *used = i;
  return result;
}

SmtpDecResult
smtp_decoder_finish_raw (SmtpDecoder *dec, GByteArray *out)
{
  static const guint8 crlf[] = { '\r', '\n' };

  if (dec->state == SMTP_DEC_CR)
    {
      if (dec->reject_bare)
        return SMTP_DEC_BARE;
      dec->saw_bare = TRUE;
      g_byte_array_append (out, crlf, 2);
      dec->has_output = TRUE;
      dec->last = '\n';
    }
  else if (dec->has_output && dec->last != '\n')
    {
      g_byte_array_append (out, crlf, 2);
      dec->last = '\n';
    }
  dec->state = SMTP_DEC_MID;
  return SMTP_DEC_END;
}

/* ---- the Received field --------------------------------------------- */

const char *
smtp_with_protocol (gboolean esmtp, gboolean tls, gboolean auth, gboolean utf8)
{
  /* RFC 3848 §1 and RFC 6531 §3.7.3 (UTF8SMTP...). */
  static const char *const names[2][4] = {
    { "ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA" },
    { "UTF8SMTP", "UTF8SMTPA", "UTF8SMTPS", "UTF8SMTPSA" },
  };
  if (!esmtp)
    return "SMTP";
  return names[utf8 ? 1 : 0][(tls ? 2 : 0) + (auth ? 1 : 0)];
}

char *
smtp_rfc5322_date (gint64 unix_time)
{
  static const char *const days[] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
  static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
  g_autoptr (GDateTime) dt = g_date_time_new_from_unix_local (unix_time);
  gint64 offset;
  gint64 minutes;

  if (dt == NULL)
    dt = g_date_time_new_from_unix_utc (0);
  offset = g_date_time_get_utc_offset (dt) / G_TIME_SPAN_MINUTE;
  minutes = offset < 0 ? -offset : offset;
  /* RFC 5322 §3.3, with English names whatever the locale. */
  return g_strdup_printf ("%s, %d %s %d %02d:%02d:%02d %c%02d%02d", days[g_date_time_get_day_of_week (dt) - 1],
                          g_date_time_get_day_of_month (dt), months[g_date_time_get_month (dt) - 1],
                          g_date_time_get_year (dt), g_date_time_get_hour (dt), g_date_time_get_minute (dt),
                          g_date_time_get_second (dt), offset < 0 ? '-' : '+', (int) (minutes / 60),
                          (int) (minutes % 60));
}

/* Text for a comment: no parentheses, backslashes or controls. */
static void
append_comment_text (GString *s, const char *text)
{
  for (; *text != '\0'; text++)
    {
      guchar c = (guchar) *text;
      g_string_append_c (s, (c < 32 || c == 127 || c == '(' || c == ')' || c == '\\') ? '?' : (char) c);
    }
}

char *
smtp_received_header (const SmtpReceivedInfo *info)
{
  GString *s = g_string_sized_new (256);
  g_autofree char *date = smtp_rfc5322_date (info->unix_time);
  g_autofree char *literal = strchr (info->client_ip, ':') != NULL
                                 ? g_strdup_printf ("[IPv6:%s]", info->client_ip)
                                 : g_strdup_printf ("[%s]", info->client_ip);

  /* RFC 5321 §4.4: From-domain with TCP-info, By-domain, With, ID, For. */
  g_string_append (s, "Received: from ");
  if (info->helo != NULL && smtp_helo_syntax_ok (info->helo))
    g_string_append_printf (s, "%s (%s)", info->helo, literal);
  else
    {
      g_string_append (s, literal);
      if (info->helo != NULL)
        {
          g_string_append (s, " (helo ");
          append_comment_text (s, info->helo);
          g_string_append_c (s, ')');
        }
    }
  if (info->tls != NULL)
    {
      g_string_append (s, "\r\n\t(using ");
      append_comment_text (s, info->tls);
      g_string_append_c (s, ')');
    }
  if (info->auth_user != NULL)
    {
      g_string_append (s, "\r\n\t(authenticated user ");
      append_comment_text (s, info->auth_user);
      g_string_append_c (s, ')');
    }
  g_string_append_printf (s, "\r\n\tby %s (Pillarbox) with %s id %s", info->hostname, info->protocol, info->id);
  if (info->for_rcpt != NULL)
    g_string_append_printf (s, "\r\n\tfor <%s>", info->for_rcpt);
  g_string_append_printf (s, ";\r\n\t%s\r\n", date);
  return g_string_free (s, FALSE);
}
