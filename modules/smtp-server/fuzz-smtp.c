/* SPDX-License-Identifier: MIT */
/* libFuzzer target: a client's whole transcript through the command parsers and the DATA/BDAT decoder. */
#include "config.h"
#include "smtp-private.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/*
 * The input is what a client sends. Lines go through the parsers; after a
 * DATA line the decoder reads content up to its end mark, after "BDAT n"
 * it reads n octets raw, and the transcript goes on after them, as the
 * server would. Every piece of content is decoded twice, in one piece and
 * one octet at a time: both must give the same octets and stop at the same
 * place, the property the session relies on whatever TCP does to segments.
 */

static void
check (gboolean ok)
{
  if (!ok)
    abort ();
}

static gsize
decode_both (gboolean raw, gboolean reject, gboolean bol, const guint8 *in, gsize len, SmtpDecResult *result)
{
  SmtpDecoder a, b;
  g_autoptr (GByteArray) out_a = g_byte_array_new ();
  g_autoptr (GByteArray) out_b = g_byte_array_new ();
  gsize used_a = 0, used_b = 0;
  SmtpDecResult ra, rb = SMTP_DEC_MORE;

  smtp_decoder_init (&a, raw, reject, bol);
  smtp_decoder_init (&b, raw, reject, bol);
  ra = smtp_decoder_feed (&a, in, len, out_a, &used_a);
  while (used_b < len && rb == SMTP_DEC_MORE)
    {
      gsize u = 0;
      rb = smtp_decoder_feed (&b, in + used_b, 1, out_b, &u);
      used_b += u;
    }
  check (ra == rb);
  check (used_a == used_b);
  check (out_a->len == out_b->len && (out_a->len == 0 || memcmp (out_a->data, out_b->data, out_a->len) == 0));
  /* What is stored never holds a lone CR or LF. */
  for (guint i = 0; i < out_a->len; i++)
    {
      if (out_a->data[i] == '\n')
        check (i > 0 && out_a->data[i - 1] == '\r');
      if (out_a->data[i] == '\r')
        check (i + 1 < out_a->len && out_a->data[i + 1] == '\n');
    }
  if (raw && ra == SMTP_DEC_MORE)
    {
      /* Stored content always ends in CRLF (or a bare CR is refused). */
      if (smtp_decoder_finish_raw (&a, out_a) == SMTP_DEC_END)
        check (out_a->len == 0 || (out_a->len >= 2 && out_a->data[out_a->len - 1] == '\n'));
      else
        check (reject);
    }
  *result = ra;
  return used_a;
}

static void
parse_line (char *line, gsize len, gboolean *esmtp, gboolean *utf8)
{
  SmtpCommand cmd;
  SmtpReply error;
  SmtpEol eol;

  if (!smtp_line_chomp (line, &len, &eol))
    return;
  smtp_parse_command (line, &cmd);
  switch (cmd.kind)
    {
    case SMTP_CMD_EHLO:
    case SMTP_CMD_HELO:
      *esmtp = cmd.kind == SMTP_CMD_EHLO;
      (void) smtp_helo_chars_ok (cmd.args);
      (void) smtp_helo_syntax_ok (cmd.args);
      break;
    case SMTP_CMD_MAIL:
      {
        SmtpParseContext ctx = { .esmtp = *esmtp };
        SmtpMailArgs m;
        if (smtp_parse_mail (cmd.args, &ctx, &m, &error))
          {
            check (m.address != NULL && strlen (m.address) <= 256);
            check (strpbrk (m.address, "\r\n<> ") == NULL || m.address[0] == '"');
            *utf8 = m.smtputf8;
            smtp_mail_args_clear (&m);
          }
        else
          check (error.code >= 500 && error.enhanced != NULL && error.enhanced[0] == '5');
        break;
      }
    case SMTP_CMD_RCPT:
      {
        SmtpParseContext ctx = { .esmtp = *esmtp, .smtputf8 = *utf8 };
        SmtpRcptArgs r;
        if (smtp_parse_rcpt (cmd.args, &ctx, &r, &error))
          smtp_rcpt_args_clear (&r);
        else
          check (error.code >= 500 && error.enhanced != NULL);
        break;
      }
    case SMTP_CMD_AUTH:
      {
        char *sp = strchr (cmd.args, ' ');
        gsize n = 0;
        guint8 *raw = smtp_base64_decode (sp != NULL ? sp + 1 : cmd.args, &n);
        if (raw != NULL)
          {
            const char *z, *c, *p;
            if (smtp_auth_plain_split (raw, n, &z, &c, &p))
              check (*c != '\0' && *p != '\0');
            g_free (raw);
          }
        break;
      }
    default:
      break;
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  gsize pos = 0;
  gboolean esmtp = FALSE, utf8 = FALSE;
  /* The first octet picks the bare-LF policy, so both are explored. */
  gboolean reject = size > 0 && (data[0] & 1);

  while (pos < size)
    {
      const guint8 *lf = memchr (data + pos, '\n', size - pos);
      gsize len = lf != NULL ? (gsize) (lf - (data + pos)) + 1 : size - pos;
      g_autofree char *line = g_malloc (len + 1);
      gboolean crlf = len >= 2 && data[pos + len - 2] == '\r' && lf != NULL;
      SmtpCommand cmd;
      SmtpEol eol;
      gsize clen = len;

      memcpy (line, data + pos, len);
      line[len] = '\0';
      pos += len;
      if (!smtp_line_chomp (line, &clen, &eol))
        continue;
      {
        g_autofree char *copy = g_strdup (line);
        smtp_parse_command (copy, &cmd);
        if (cmd.kind == SMTP_CMD_DATA && *cmd.args == '\0')
          {
            SmtpDecResult r;
            pos += decode_both (FALSE, reject, crlf, data + pos, size - pos, &r);
            continue;
          }
        if (cmd.kind == SMTP_CMD_BDAT)
          {
            gint64 n;
            gboolean last;
            if (smtp_parse_bdat (cmd.args, &n, &last))
              {
                SmtpDecResult r;
                gsize take = (gsize) MIN ((guint64) n, (guint64) (size - pos));
                decode_both (TRUE, reject, FALSE, data + pos, take, &r);
                pos += take;
              }
            continue;
          }
      }
      memcpy (line, data + pos - len, len);
      parse_line (line, len, &esmtp, &utf8);
    }
  return 0;
}
