/* SPDX-License-Identifier: MIT */
/* SMTP client: dot-stuffing of a message body with CRLF line ends only, across chunk boundaries. */
#include "config.h"
#include "smtpc.h"

#include <string.h>

enum {
  SMTPC_STUFF_LINE_START = 0,  /* nothing of the current line written yet */
  SMTPC_STUFF_MID_LINE,        /* inside a line */
  SMTPC_STUFF_AFTER_CR         /* a CR was seen; an LF may follow in the next chunk */
};

void
smtpc_stuffer_init (SmtpcStuffer *st)
{
  st->state = SMTPC_STUFF_LINE_START;
}

void
smtpc_stuff (SmtpcStuffer *st, const guint8 *data, gsize len, GString *out)
{
  gsize i = 0;

  while (i < len)
    {
      if (st->state == SMTPC_STUFF_AFTER_CR)
        {
          /* CR LF, or a bare CR: either way one line end, written as CRLF. */
          g_string_append_len (out, "\r\n", 2);
          st->state = SMTPC_STUFF_LINE_START;
          if (data[i] == '\n')
            {
              i++;
              continue;
            }
        }
      if (st->state == SMTPC_STUFF_LINE_START && data[i] == '.')
        {
          /* RFC 5321 §4.5.2: a line starting with "." gets one more. */
          g_string_append_c (out, '.');
        }
      {
        /* Copy the run up to the next CR or LF. */
        gsize j = i;
        while (j < len && data[j] != '\r' && data[j] != '\n')
          j++;
        if (j > i)
          {
            g_string_append_len (out, (const char *) data + i, (gssize) (j - i));
            st->state = SMTPC_STUFF_MID_LINE;
          }
        i = j;
      }
      if (i >= len)
        break;
      if (data[i] == '\n')
        {
          /* A bare LF: a line end, written as CRLF (never passed on bare). */
          g_string_append_len (out, "\r\n", 2);
          st->state = SMTPC_STUFF_LINE_START;
        }
      else
        st->state = SMTPC_STUFF_AFTER_CR;
      i++;
    }
}

void
smtpc_stuff_finish (SmtpcStuffer *st, GString *out)
{
  if (st->state != SMTPC_STUFF_LINE_START)
    g_string_append_len (out, "\r\n", 2);
  g_string_append_len (out, ".\r\n", 3);
  st->state = SMTPC_STUFF_LINE_START;
}
