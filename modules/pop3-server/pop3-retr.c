/* SPDX-License-Identifier: MIT */
/* Multi-line responses that may be long: RETR and TOP streamed from storage with byte-stuffing, LIST and UIDL; all under flow control. */
#include "config.h"
#include "pop3-private.h"

#include <string.h>

/*
 * A job produces one multi-line response (RFC 1939 §3) while the session
 * stops reading commands. It writes while the connection's output queue
 * is below POP3_OUTPUT_HIGH and resumes on `drained`, so a client that
 * reads slowly holds at most that much of our memory, whatever the size
 * of the message. Storage is read POP3_READ_CHUNK octets at a time, one
 * read of the message being sent at once (and the read-ahead below).
 */

typedef enum {
  POP3_JOB_RETR,
  POP3_JOB_LISTING
} Pop3JobKind;

struct _Pop3Job {
  Pop3JobKind kind;

  /* RETR and TOP */
  guint index;
  gboolean top;
  Pop3TopFilter top_filter;
  Pop3Stuffer stuffer;
  gboolean started;           /* the +OK line is out */
  gboolean reading;           /* a storage read is in flight */
  gint64 offset;              /* of the next read, in the stored message */
  gint64 content;             /* octets of content sent, before stuffing */

  /* LIST and UIDL */
  gboolean uidl;
  guint next;
};

void
pop3_job_free (Pop3Job *job)
{
  g_free (job);
}

static void
pop3_job_finish (Pop3Session *ps)
{
  g_clear_pointer (&ps->job, pop3_job_free);
  pop3_session_resume (ps);
}

/* ---- RETR and TOP ------------------------------------------------------- */

static void
pop3_emit (const void *data, gsize len, gpointer user_data)
{
  pb_conn_write (user_data, data, len);
}

/* Sends DATA, a piece of the message's content, through TOP's filter and the stuffer. */
static void
pop3_retr_send (Pop3Session *ps, const guint8 *data, gsize len)
{
  Pop3Job *job = ps->job;

  if (job->top)
    len = pop3_top_filter_feed (&job->top_filter, data, len);
  job->content += (gint64) len;
  pop3_stuffer_feed (&job->stuffer, data, len, pop3_emit, ps->conn);
}

static void pop3_retr_read (Pop3Session *ps);

/* One chunk of the message of the current RETR or TOP job. */
static void
pop3_retr_deliver (Pop3Session *ps, const guint8 *data, gsize len, gboolean eof, const GError *error)
{
  Pop3Job *job = ps->job;
  Pop3Msg *m;

  if (ps->conn == NULL || ps->closing || job == NULL)
    return;
  job->reading = FALSE;
  m = &ps->msgs[job->index];

  /* An empty chunk before the end would make us read forever. */
  if (error != NULL || (len == 0 && !eof))
    {
      const char *why = error != NULL ? error->message : "storage returned no data before the end";

      pb_session_warning (ps->session, "reading message %u (uid %" G_GUINT64_FORMAT ", %s) of %s failed at "
                          "offset %" G_GINT64_FORMAT ": %s", job->index + 1, m->uid, m->message_id, ps->mailbox,
                          job->offset, why);
      if (!job->started)
        {
          pop3_reply (ps, FALSE, "[SYS/TEMP] Cannot read message %u now, try again later", job->index + 1);
          pop3_job_finish (ps);
        }
      else
        {
          /* Half a response is out: only the missing terminator can tell
           * the client, so hang up rather than end it with ".". */
          g_clear_pointer (&ps->job, pop3_job_free);
          pb_conn_close (ps->conn);
          ps->closing = TRUE;
        }
      return;
    }

  if (!job->started)
    {
      job->started = TRUE;
      if (job->top)
        pop3_reply (ps, TRUE, "Top of message %u follows", job->index + 1);
      else
        pop3_reply (ps, TRUE, "%" G_GINT64_FORMAT " octets", m->size);
      /* An entry's content is its delivery headers, then the message. */
      pop3_retr_send (ps, (const guint8 *) m->headers, m->headers_len);
    }
  if (len > 0 && !(job->top && job->top_filter.done))
    pop3_retr_send (ps, data, len);
  job->offset += (gint64) len;

  if (eof || (job->top && job->top_filter.done))
    {
      /* RFC 1939 §3: the response ends with CRLF "." CRLF. Content always
       * ends in CRLF (storage keeps CRLF line ends); if it did not, a CRLF
       * is added so the terminator stays on a line of its own. */
      if (!job->stuffer.at_line_start)
        pb_conn_write (ps->conn, "\r\n", 2);
      pb_conn_write (ps->conn, ".\r\n", 3);
      if (!job->top)
        {
          ps->retrieved++;
          if (job->content != m->size)
            pb_session_warning (ps->session, "message %u (uid %" G_GUINT64_FORMAT ") of %s: listed as %"
                                G_GINT64_FORMAT " octets, sent %" G_GINT64_FORMAT, job->index + 1, m->uid,
                                ps->mailbox, m->size, job->content);
        }
      pop3_job_finish (ps);
    }
  else if (pb_conn_get_output_pending (ps->conn) < POP3_OUTPUT_HIGH)
    pop3_retr_read (ps);
  /* else: `drained` continues */
}

static void
pop3_retr_got (const guint8 *data, gsize len, gboolean eof, const GError *error, gpointer user_data)
{
  Pop3Session *ps = user_data;

  pop3_retr_deliver (ps, data, len, eof, error);
  pop3_session_unref (ps);
}

static void
pop3_retr_read (Pop3Session *ps)
{
  Pop3Job *job = ps->job;

  job->reading = TRUE;
  pb_store_message_read (ps->srv->module, ps->msgs[job->index].message_id, job->offset, POP3_READ_CHUNK,
                         pop3_retr_got, pop3_session_ref (ps));
}

/* ---- read-ahead ------------------------------------------------------------ */

/*
 * Clients download in order (RETR 1, RETR 2, ...), most of them pipelined.
 * When a RETR starts, the first chunks of the next few messages are read
 * too (a window of POP3_PREFETCH_MESSAGES messages and about
 * POP3_PREFETCH_OCTETS), so storage works on them while this one is sent:
 * its thread takes several reads per wake-up and the storage round trip is
 * overlapped instead of waited for. A read-ahead that is not used is
 * dropped. While its read is in flight a read-ahead owns itself and a
 * session reference; once it has arrived the session owns it.
 */
struct _Pop3Prefetch {
  Pop3Session *ps;            /* a reference while the read is in flight */
  guint index;
  gsize expect;               /* octets it will hold, for the window */
  gboolean done;              /* the read has arrived */
  gboolean abandoned;         /* nobody wants it: free on arrival */
  gboolean claimed;           /* the current job waits for it */
  GBytes *data;
  gboolean eof;
  GError *error;
};

static void
pop3_prefetch_free (Pop3Prefetch *pf)
{
  g_clear_pointer (&pf->data, g_bytes_unref);
  g_clear_error (&pf->error);
  g_free (pf);
}

static void
pop3_prefetch_forget (Pop3Prefetch *pf)
{
  if (pf->done)
    pop3_prefetch_free (pf);
  else
    pf->abandoned = TRUE;
}

void
pop3_prefetch_drop (Pop3Session *ps)
{
  Pop3Prefetch *pf;

  while ((pf = g_queue_pop_head (&ps->prefetch)) != NULL)
    pop3_prefetch_forget (pf);
}

static void
pop3_prefetch_got (const guint8 *data, gsize len, gboolean eof, const GError *error, gpointer user_data)
{
  Pop3Prefetch *pf = user_data;
  Pop3Session *ps = pf->ps;

  pf->ps = NULL;
  if (pf->claimed && !pf->abandoned)
    pop3_retr_deliver (ps, data, len, eof, error);
  if (pf->claimed || pf->abandoned || ps->conn == NULL)
    {
      g_queue_remove (&ps->prefetch, pf);
      pop3_prefetch_free (pf);
    }
  else
    {
      pf->done = TRUE;
      pf->data = g_bytes_new (data, len);
      pf->eof = eof;
      pf->error = error != NULL ? g_error_copy (error) : NULL;
    }
  pop3_session_unref (ps);
}

/* Tops the window up with the messages after INDEX. */
static void
pop3_prefetch_fill (Pop3Session *ps, guint index)
{
  Pop3Prefetch *last = g_queue_peek_tail (&ps->prefetch);
  gsize octets = 0;
  guint next = last != NULL ? last->index + 1 : index + 1;

  for (GList *l = ps->prefetch.head; l != NULL; l = l->next)
    octets += ((Pop3Prefetch *) l->data)->expect;
  for (; next < ps->n_msgs && ps->prefetch.length < POP3_PREFETCH_MESSAGES && octets < POP3_PREFETCH_OCTETS; next++)
    {
      const Pop3Msg *m = &ps->msgs[next];
      Pop3Prefetch *pf;

      if (m->deleted)
        continue;
      pf = g_new0 (Pop3Prefetch, 1);
      pf->ps = pop3_session_ref (ps);
      pf->index = next;
      pf->expect = (gsize) CLAMP (m->size - (gint64) m->headers_len, 0, POP3_READ_CHUNK);
      octets += pf->expect;
      g_queue_push_tail (&ps->prefetch, pf);
      pb_store_message_read (ps->srv->module, m->message_id, 0, POP3_READ_CHUNK, pop3_prefetch_got, pf);
    }
}

void
pop3_job_start_retr (Pop3Session *ps, guint index, gint64 lines)
{
  Pop3Job *job = g_new0 (Pop3Job, 1);
  Pop3Prefetch *ready = NULL;
  Pop3Prefetch *pf;

  job->kind = POP3_JOB_RETR;
  job->index = index;
  job->top = lines >= 0;
  if (job->top)
    pop3_top_filter_init (&job->top_filter, (guint64) lines);
  pop3_stuffer_init (&job->stuffer);
  ps->job = job;

  /* Read-aheads of earlier messages are of no use any more (a client
   * going backwards starts a new window). */
  while ((pf = g_queue_peek_head (&ps->prefetch)) != NULL && pf->index <= index)
    {
      g_queue_pop_head (&ps->prefetch);
      if (pf->index < index)
        pop3_prefetch_forget (pf);
      else if (pf->done)
        ready = pf;
      else
        {
          pf->claimed = TRUE;   /* its arrival continues this job */
          job->reading = TRUE;
        }
    }
  if (pf != NULL && pf->index > index + POP3_PREFETCH_MESSAGES)
    pop3_prefetch_drop (ps);
  if (!job->top)
    pop3_prefetch_fill (ps, index);

  if (ready != NULL)
    {
      pop3_session_ref (ps);
      pop3_retr_deliver (ps, g_bytes_get_data (ready->data, NULL), g_bytes_get_size (ready->data), ready->eof,
                         ready->error);
      pop3_prefetch_free (ready);
      pop3_session_unref (ps);
    }
  else if (!job->reading)
    pop3_retr_read (ps);
}

/* ---- LIST and UIDL ------------------------------------------------------ */

/* Lines per write: a few KiB, so a big maildrop is sent in pieces. */
#define POP3_LISTING_BATCH 256

static void
pop3_listing_continue (Pop3Session *ps)
{
  Pop3Job *job = ps->job;
  GString *buf = g_string_sized_new (POP3_LISTING_BATCH * 24);

  while (job->next < ps->n_msgs && pb_conn_get_output_pending (ps->conn) < POP3_OUTPUT_HIGH)
    {
      guint end = MIN (job->next + POP3_LISTING_BATCH, ps->n_msgs);

      g_string_truncate (buf, 0);
      for (; job->next < end; job->next++)
        {
          const Pop3Msg *m = &ps->msgs[job->next];
          if (m->deleted)
            continue;  /* RFC 1939 §5: deleted messages are not listed */
          if (job->uidl)
            g_string_append_printf (buf, "%u %" G_GUINT64_FORMAT "\r\n", job->next + 1, m->uid);
          else
            g_string_append_printf (buf, "%u %" G_GINT64_FORMAT "\r\n", job->next + 1, m->size);
        }
      pb_conn_write (ps->conn, buf->str, buf->len);
    }
  g_string_free (buf, TRUE);
  if (job->next == ps->n_msgs)
    {
      pb_conn_write (ps->conn, ".\r\n", 3);
      pop3_job_finish (ps);
    }
}

void
pop3_job_start_listing (Pop3Session *ps, gboolean uidl)
{
  Pop3Job *job = g_new0 (Pop3Job, 1);

  job->kind = POP3_JOB_LISTING;
  job->uidl = uidl;
  ps->job = job;
  if (uidl)
    pop3_reply (ps, TRUE, "Unique-ID listing follows");
  else
    pop3_reply (ps, TRUE, "%u messages (%" G_GINT64_FORMAT " octets)", ps->n_msgs - ps->n_deleted, ps->octets);
  pop3_listing_continue (ps);
}

void
pop3_job_continue (Pop3Session *ps)
{
  Pop3Job *job = ps->job;

  if (job == NULL || ps->conn == NULL || ps->closing)
    return;
  if (job->kind == POP3_JOB_LISTING)
    pop3_listing_continue (ps);
  else if (!job->reading)
    pop3_retr_read (ps);
}
