/* SPDX-License-Identifier: MIT */
/* Connections: a non-blocking socket on the loop with a bounded line reader, a write queue, deadlines and TLS. */
#ifndef G_LOG_DOMAIN
#define G_LOG_DOMAIN "pillarbox"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <glib-unix.h>
#include <gnutls/gnutls.h>

#include "pb-private.h"
#include "core-private.h"
#include "tls-private.h"

/*
 * One connection is one GSource of our own (ConnSource) with the socket
 * as its only unix fd and its ready time as its only timer. The ready
 * time serves three purposes: "run at the next iteration" (0: a flush,
 * a handler to deliver, TLS data already decrypted), the earliest
 * deadline, or nothing (-1). Deadlines are stored in the PbConn; the
 * ready time may lag behind a deadline that moved later (the idle
 * deadline moves on every line) and the dispatch then reschedules, so
 * re-arming the idle timer per line costs a store, not a syscall.
 *
 * Handlers are only ever called from the source's dispatch, never from
 * inside a pb_conn_*() call, so a module never sees itself re-entered.
 *
 * Input: octets are read only into the free tail of the input buffer;
 * the buffer is compacted, grown, shrunk or freed only inside a pulling
 * call that returned AGAIN (or peek 0), when no pointer handed to the
 * module can still be live. An idle connection has no buffer at all.
 *
 * Output: a list of chunks. Replies are sent when the module goes back
 * to waiting for input (pulling returned AGAIN), or at the end of the
 * current dispatch, or at the next iteration: replies to pipelined
 * commands leave in one sendmsg().
 */

/* The first input buffer; doubled while the peer fills it. */
#define IN_INITIAL 4096
/* Input buffered beyond this waits in the kernel (back-pressure). */
#define IN_MAX (64 * 1024)
/* The smallest output chunk, header included. */
#define OUT_CHUNK 2048
/* `drained` fires when the queue falls below this after being above it. */
#define OUT_LOW_WATER (32 * 1024)
/* Plaintext handed to gnutls_record_send() at once: one record. */
#define TLS_SEND_MAX 16384
/* iovecs per sendmsg(). */
#define OUT_IOV_MAX 16
/* pb_conn_close() gives the peer this long to take the queued output. */
#define CLOSE_FLUSH_US (10 * G_USEC_PER_SEC)
/* After our FIN, how long unread input is drained so that close() does
 * not answer with a reset that could destroy the last reply in flight. */
#define CLOSE_LINGER_US (2 * G_USEC_PER_SEC)
/* Octets discarded per dispatch while lingering. */
#define LINGER_DRAIN_MAX (64 * 1024)
/* RFC 5321 §4.5.3.1.4: 512 for a command line; 1000 is the text-line
 * limit and what everyone accepts. */
#define DEFAULT_MAX_LINE 1000
/* Rough heap cost of the GSource, its poll record and fd tag. */
#define SOURCE_OVERHEAD 256
/* Heap of a GnuTLS 3.7 session, idle after a TLS 1.3 handshake (measured
 * with mallinfo2: about 8 KiB after gnutls_init, 10 KiB after). */
#define TLS_SESSION_ESTIMATE (10 * 1024)

typedef struct _OutChunk OutChunk;
struct _OutChunk {
  OutChunk *next;
  guint32 start;   /* first octet not yet sent */
  guint32 end;     /* end of the queued octets */
  guint32 size;    /* capacity of data[] */
  guint8 data[];
};

/* An address as getpeername()/getsockname() gave it, kept small; the
 * GObjects are built on first use. */
typedef struct {
  guint16 family;   /* AF_INET, AF_INET6, AF_UNIX, or 0 if unknown */
  guint16 port;
  guint8 addr[16];
} ConnAddr;

typedef struct {
  GSource source;
  PbConn *conn;
} ConnSource;

typedef enum {
  TLS_NONE,          /* plain text */
  TLS_FLUSH_PLAIN,   /* STARTTLS: sending the plaintext queued before it */
  TLS_HANDSHAKE,
  TLS_ON
} ConnTlsState;

typedef enum {
  CLOSE_NONE,
  CLOSE_FLUSH,       /* sending what is queued */
  CLOSE_BYE,         /* TLS close_notify, then our FIN */
  CLOSE_LINGER       /* draining input until the peer's FIN */
} ConnClosePhase;

struct _PbConn {
  int ref_count;
  int fd;                      /* -1 once closed */
  ConnSource *source;          /* holds a reference on the conn; NULL after `closed` */
  gpointer fd_tag;             /* NULL while nothing is polled */
  GIOCondition events;         /* what fd_tag polls for */

  void (*on_readable) (PbConn *conn, gpointer user_data);
  void (*on_drained) (PbConn *conn, gpointer user_data);
  void (*on_closed) (PbConn *conn, const GError *error, gpointer user_data);
  gpointer user_data;
  void (*close_notify) (PbConn *conn, gpointer data);
  gpointer close_notify_data;

  guint8 *in_buf;              /* NULL when nothing is buffered */
  guint32 in_start;            /* first unconsumed octet */
  guint32 in_end;              /* end of the octets read */
  guint32 in_size;
  guint32 in_scanned;          /* octets after in_start known to hold no LF */
  guint32 in_next_size;        /* size of the next buffer to allocate */
  guint32 max_line;

  OutChunk *out_head;
  OutChunk *out_tail;
  gsize out_pending;
  gsize plain_left;            /* TLS_FLUSH_PLAIN: octets queued before STARTTLS */
  guint32 tls_retry_len;       /* a gnutls_record_send() to repeat with this length */

  guint idle_ms;
  gint64 idle_deadline;        /* meaningful while conn_idle_counts() */
  gint64 stall_deadline;       /* 0, or when output the client takes none of counts as idle */
  gint64 total_deadline;       /* 0: none */
  gint64 close_deadline;

  gnutls_session_t tls;
  PbTlsCreds *creds;
  PbConnTlsDoneFunc tls_done;
  gpointer tls_done_data;

  GError *error;               /* why it failed; NULL after a clean close */

  ConnAddr peer;
  ConnAddr local;
  GInetSocketAddress *peer_address;
  GInetSocketAddress *local_address;
  char *peer_ip;

  guint8 tls_state;            /* ConnTlsState */
  guint8 close_phase;          /* ConnClosePhase */
  guint is_server : 1;
  guint dead : 1;              /* socket closed; `closed` pending or sent */
  guint closed_sent : 1;
  guint eof : 1;               /* the peer's FIN (or close_notify) was read */
  guint armed : 1;             /* the module pulled AGAIN: fire `readable` on new input */
  guint in_event : 1;          /* input or EOF arrived since the module last pulled AGAIN */
  guint in_full : 1;           /* the last read stopped because the buffer was full */
  guint discarding : 1;        /* skipping the rest of an overlong line */
  guint out_blocked : 1;       /* the kernel took no more: wait for POLLOUT */
  guint out_high : 1;          /* above the low-water mark: `drained` owed */
  guint drained_due : 1;
  guint tls_done_due : 1;
  guint tls_want_out : 1;      /* the interrupted handshake or bye waits to write */
  guint tls_recv_want_out : 1; /* the interrupted record_recv waits to write */
  guint kick : 1;              /* work to do at the next iteration */
  guint dispatching : 1;
};

G_DEFINE_QUARK (pb-conn-error-quark, pb_conn_error)

static void conn_update (PbConn *conn);

/* ---- small helpers ---------------------------------------------------- */

static gint64
conn_now (PbConn *conn)
{
  return conn->source != NULL ? g_source_get_time ((GSource *) conn->source) : g_get_monotonic_time ();
}

/* Applies poll events and ready time now, unless the dispatch will. */
static void
conn_schedule (PbConn *conn)
{
  if (!conn->dispatching)
    conn_update (conn);
}

static gboolean
conn_idle_counts (PbConn *conn)
{
  return conn->idle_ms > 0 && !conn->dead && conn->close_phase == CLOSE_NONE
         && (conn->armed || conn->tls_state == TLS_FLUSH_PLAIN || conn->tls_state == TLS_HANDSHAKE);
}

static void
conn_arm_idle (PbConn *conn)
{
  if (conn->idle_ms > 0)
    conn->idle_deadline = conn_now (conn) + (gint64) conn->idle_ms * 1000;
}

static gboolean
conn_can_read (PbConn *conn)
{
  return !conn->dead && !conn->eof && conn->close_phase == CLOSE_NONE
         && (conn->tls_state == TLS_NONE || conn->tls_state == TLS_ON)
         && (conn->in_buf == NULL || conn->in_end < conn->in_size);
}

static gboolean
conn_tls_has_pending (PbConn *conn)
{
  return conn->tls_state == TLS_ON && conn_can_read (conn) && gnutls_record_check_pending (conn->tls) > 0;
}

static void
conn_drop_output (PbConn *conn)
{
  while (conn->out_head != NULL)
    {
      OutChunk *next = conn->out_head->next;
      g_free (conn->out_head);
      conn->out_head = next;
    }
  conn->out_tail = NULL;
  conn->out_pending = 0;
  conn->plain_left = 0;
  conn->tls_retry_len = 0;
  conn->out_blocked = FALSE;
  conn->stall_deadline = 0;
}

static void
conn_free_input (PbConn *conn)
{
  g_clear_pointer (&conn->in_buf, g_free);
  conn->in_start = conn->in_end = conn->in_size = conn->in_scanned = 0;
  conn->in_full = FALSE;
}

/* ---- ending --------------------------------------------------------- */

/* Closes the socket at once; `closed` (with ERROR, NULL after a clean
 * close) is delivered by the dispatch. Takes ERROR. */
static void
conn_finish (PbConn *conn, GError *error)
{
  if (conn->dead)
    {
      if (error != NULL)
        g_error_free (error);
      return;
    }
  conn->dead = TRUE;
  conn->error = error;
  conn->armed = FALSE;
  conn->drained_due = FALSE;
  if (conn->tls_done != NULL)
    conn->tls_done_due = TRUE;
  if (conn->fd_tag != NULL)
    {
      g_source_remove_unix_fd ((GSource *) conn->source, conn->fd_tag);
      conn->fd_tag = NULL;
      conn->events = 0;
    }
  if (conn->fd >= 0)
    {
      close (conn->fd);
      conn->fd = -1;
    }
  /* Input stays until `closed`: the module may still hold a line. */
  conn_drop_output (conn);
  conn->kick = TRUE;
  conn_schedule (conn);
}

static void
conn_fail (PbConn *conn, PbConnError code, const char *format, ...) G_GNUC_PRINTF (3, 4);

static void
conn_fail (PbConn *conn, PbConnError code, const char *format, ...)
{
  va_list ap;
  GError *error;

  va_start (ap, format);
  error = g_error_new_valist (PB_CONN_ERROR_DOMAIN, code, format, ap);
  va_end (ap);
  g_debug ("connection with %s failed: %s", pb_conn_get_peer_ip (conn), error->message);
  conn_finish (conn, error);
}

static void
conn_fail_errno (PbConn *conn, int err, const char *what)
{
  if (err == ECONNRESET || err == EPIPE || err == ENOTCONN)
    conn_fail (conn, PB_CONN_ERROR_CLOSED, "connection %s by the peer",
               err == ECONNRESET ? "reset" : "closed");
  else
    conn_fail (conn, PB_CONN_ERROR_IO, "%s failed: %s", what, g_strerror (err));
}

static void
conn_fail_tls (PbConn *conn, int r, const char *what)
{
  if (r == GNUTLS_E_FATAL_ALERT_RECEIVED)
    conn_fail (conn, PB_CONN_ERROR_TLS, "%s: the peer sent the alert \"%s\"", what,
               gnutls_alert_get_name (gnutls_alert_get (conn->tls)));
  else if (conn->tls_state == TLS_ON && (r == GNUTLS_E_PUSH_ERROR || r == GNUTLS_E_PULL_ERROR))
    conn_fail (conn, PB_CONN_ERROR_CLOSED, "connection lost: %s", gnutls_strerror (r));
  else
    conn_fail (conn, PB_CONN_ERROR_TLS, "%s: %s", what, gnutls_strerror (r));
}

/* ---- output ----------------------------------------------------------- */

static void
conn_queue (PbConn *conn, const guint8 *data, gsize len)
{
  OutChunk *tail = conn->out_tail;

  conn->out_pending += len;
  if (tail != NULL && tail->end < tail->size)
    {
      gsize n = MIN (len, (gsize) (tail->size - tail->end));
      memcpy (tail->data + tail->end, data, n);
      tail->end += (guint32) n;
      data += n;
      len -= n;
    }
  while (len > 0)
    {
      gsize size = CLAMP (len, OUT_CHUNK - sizeof (OutChunk), (gsize) G_MAXINT32);
      OutChunk *chunk = g_malloc (sizeof (OutChunk) + size);
      gsize n = MIN (len, size);

      chunk->next = NULL;
      chunk->start = 0;
      chunk->end = (guint32) n;
      chunk->size = (guint32) size;
      memcpy (chunk->data, data, n);
      if (conn->out_tail != NULL)
        conn->out_tail->next = chunk;
      else
        conn->out_head = chunk;
      conn->out_tail = chunk;
      data += n;
      len -= n;
    }
}

static void
conn_advance_output (PbConn *conn, gsize n)
{
  if (n > 0)
    conn->stall_deadline = 0;   /* the client takes its output: re-armed from now */
  conn->out_pending -= n;
  if (conn->tls_state == TLS_FLUSH_PLAIN)
    conn->plain_left -= MIN (n, conn->plain_left);
  while (n > 0 && conn->out_head != NULL)
    {
      OutChunk *head = conn->out_head;
      gsize avail = head->end - head->start;

      if (n < avail)
        {
          head->start += (guint32) n;
          return;
        }
      n -= avail;
      conn->out_head = head->next;
      if (conn->out_head == NULL)
        conn->out_tail = NULL;
      g_free (head);
    }
}

/* Sends queued output until the kernel refuses more. Returns FALSE when
 * the connection failed. Only in TLS_NONE, TLS_FLUSH_PLAIN and TLS_ON. */
static gboolean
conn_flush (PbConn *conn)
{
  conn->out_blocked = FALSE;
  while (conn->out_head != NULL)
    {
      gsize limit = conn->tls_state == TLS_FLUSH_PLAIN ? conn->plain_left : G_MAXSIZE;
      gssize n;

      if (limit == 0)
        break;
      if (conn->tls_state == TLS_ON)
        {
          OutChunk *head = conn->out_head;
          gsize len = conn->tls_retry_len != 0 ? conn->tls_retry_len
                                               : MIN ((gsize) (head->end - head->start), (gsize) TLS_SEND_MAX);

          n = gnutls_record_send (conn->tls, head->data + head->start, len);
          if (n == GNUTLS_E_INTERRUPTED)
            {
              conn->tls_retry_len = (guint32) len;
              continue;
            }
          if (n == GNUTLS_E_AGAIN)
            {
              /* GnuTLS holds the record; it must be offered again as is. */
              conn->tls_retry_len = (guint32) len;
              conn->out_blocked = TRUE;
              break;
            }
          if (n < 0)
            {
              conn_fail_tls (conn, (int) n, "TLS send failed");
              return FALSE;
            }
          conn->tls_retry_len = 0;
          conn_advance_output (conn, (gsize) n);
        }
      else
        {
          struct iovec iov[OUT_IOV_MAX];
          struct msghdr msg = { 0 };
          gsize total = 0;
          int count = 0;

          for (OutChunk *c = conn->out_head; c != NULL && count < OUT_IOV_MAX && total < limit; c = c->next)
            {
              gsize len = MIN ((gsize) (c->end - c->start), limit - total);
              iov[count].iov_base = c->data + c->start;
              iov[count].iov_len = len;
              total += len;
              count++;
            }
          msg.msg_iov = iov;
          msg.msg_iovlen = count;
          n = sendmsg (conn->fd, &msg, MSG_NOSIGNAL);
          if (n < 0)
            {
              if (errno == EINTR)
                continue;
              if (errno == EAGAIN || errno == EWOULDBLOCK)
                {
                  conn->out_blocked = TRUE;
                  break;
                }
              conn_fail_errno (conn, errno, "send");
              return FALSE;
            }
          conn_advance_output (conn, (gsize) n);
          /* A short write means the socket buffer is full: spare the
           * sendmsg() that would only say EAGAIN. */
          if ((gsize) n < total)
            {
              conn->out_blocked = TRUE;
              break;
            }
        }
    }
  /* A client that takes none of its output for the idle timeout is as idle
   * as one that sends nothing: a module that stops reading input while its
   * replies wait (back-pressure) must not wait for it for ever. */
  if (conn->out_pending == 0)
    conn->stall_deadline = 0;
  else if (conn->stall_deadline == 0 && conn->idle_ms > 0)
    conn->stall_deadline = conn_now (conn) + (gint64) conn->idle_ms * 1000;
  if (conn->out_high && conn->out_pending < OUT_LOW_WATER && conn->close_phase == CLOSE_NONE)
    {
      conn->out_high = FALSE;
      conn->drained_due = TRUE;
      conn->kick = TRUE;
    }
  return TRUE;
}

static gboolean
conn_may_send (PbConn *conn)
{
  return conn->tls_state == TLS_NONE || conn->tls_state == TLS_ON;
}

/* ---- input ------------------------------------------------------------ */

/* Reads into the free tail of the input buffer. */
static void
conn_fill_into (PbConn *conn)
{
  int retries = 0;

  conn->tls_recv_want_out = FALSE;
  while (conn->in_end < conn->in_size)
    {
      gsize room = conn->in_size - conn->in_end;
      gssize n;

      if (conn->tls != NULL)
        {
          n = gnutls_record_recv (conn->tls, conn->in_buf + conn->in_end, room);
          if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            {
              conn->tls_recv_want_out = gnutls_record_get_direction (conn->tls) == 1;
              return;
            }
          /* Most mail clients just close the socket, without close_notify. */
          if (n == GNUTLS_E_PREMATURE_TERMINATION)
            n = 0;
          if (n < 0 && !gnutls_error_is_fatal ((int) n) && ++retries < 8)
            continue;   /* a warning alert, a refused renegotiation */
          if (n < 0)
            {
              conn_fail_tls (conn, (int) n, "TLS receive failed");
              return;
            }
        }
      else
        {
          n = recv (conn->fd, conn->in_buf + conn->in_end, room, 0);
          if (n < 0)
            {
              if (errno == EINTR)
                continue;
              if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_fail_errno (conn, errno, "receive");
              return;
            }
        }
      if (n == 0)
        {
          conn->eof = TRUE;
          conn->in_event = TRUE;
          return;
        }
      conn->in_end += (guint32) n;
      conn->in_event = TRUE;
      /* The kernel had less than we asked for: it is empty now. */
      if (conn->tls == NULL && (gsize) n < room)
        return;
    }
  conn->in_full = TRUE;
}

static void
conn_fill (PbConn *conn)
{
  gboolean fresh = conn->in_buf == NULL;

  if (fresh)
    {
      conn->in_size = MAX (conn->in_next_size, (guint32) IN_INITIAL);
      conn->in_buf = g_malloc (conn->in_size);
      conn->in_start = conn->in_end = conn->in_scanned = 0;
    }
  conn_fill_into (conn);
  /* Nothing came (a TLS record without data, a spurious wakeup): an idle
   * connection keeps no buffer. No pointer into a fresh one exists. */
  if (fresh && conn->in_end == 0)
    conn_free_input (conn);
}

static guint32
conn_in_limit (PbConn *conn)
{
  return MAX ((guint32) IN_MAX, conn->max_line);
}

/* Called when the module has seen all it can use (pulling returned AGAIN):
 * no pointer into the buffer is live, so it may move. Frees an empty
 * buffer, grows one the peer filled, shrinks one left mostly empty. */
static void
conn_tidy_input (PbConn *conn)
{
  guint32 used = conn->in_end - conn->in_start;
  guint32 size = conn->in_size;

  if (conn->in_buf == NULL)
    return;
  if (conn->in_full)
    size = MIN (size * 2, conn_in_limit (conn));
  else if (size > IN_INITIAL && used <= IN_INITIAL / 2)
    size = IN_INITIAL;
  conn->in_next_size = conn->in_full ? size : IN_INITIAL;
  conn->in_full = FALSE;

  if (used == 0)
    {
      conn_free_input (conn);
      return;
    }
  if (size != conn->in_size)
    {
      guint8 *buf = g_malloc (size);
      memcpy (buf, conn->in_buf + conn->in_start, used);
      g_free (conn->in_buf);
      conn->in_buf = buf;
      conn->in_size = size;
    }
  else if (conn->in_start > 0)
    memmove (conn->in_buf, conn->in_buf + conn->in_start, used);
  conn->in_start = 0;
  conn->in_end = used;
}

static void
conn_consume (PbConn *conn, guint32 n)
{
  conn->in_start += n;
  conn->in_scanned = n < conn->in_scanned ? conn->in_scanned - n : 0;
}

/* Drops the rest of an overlong line, up to and including its LF. */
static void
conn_skip_discard (PbConn *conn)
{
  guint32 avail = conn->in_end - conn->in_start;
  const guint8 *lf;

  if (!conn->discarding || avail == 0)
    return;
  lf = memchr (conn->in_buf + conn->in_start, '\n', avail);
  if (lf == NULL)
    {
      conn_consume (conn, avail);
      return;
    }
  conn_consume (conn, (guint32) (lf - (conn->in_buf + conn->in_start)) + 1);
  conn->discarding = FALSE;
}

/* The module found nothing it can use: it waits for input from now on. */
static PbConnStatus
conn_wait_input (PbConn *conn)
{
  if (conn->eof)
    return PB_CONN_EOF;
  conn_tidy_input (conn);
  if (!conn->armed)
    {
      conn->armed = TRUE;
      conn->in_event = FALSE;
    }
  conn_arm_idle (conn);
  /* The replies to everything the module read leave now, together. */
  if (conn->out_pending > 0 && !conn->out_blocked && conn_may_send (conn) && conn->close_phase == CLOSE_NONE)
    conn_flush (conn);
  conn_schedule (conn);
  return conn->dead ? PB_CONN_ERROR : PB_CONN_AGAIN;
}

/* ---- TLS -------------------------------------------------------------- */

static void
conn_tls_handshake (PbConn *conn)
{
  for (int retries = 0;; retries++)
    {
      int r = gnutls_handshake (conn->tls);

      if (r == GNUTLS_E_SUCCESS)
        {
          conn->tls_state = TLS_ON;
          conn->tls_want_out = FALSE;
          if (conn->tls_done != NULL)
            {
              conn->tls_done_due = TRUE;
              conn->kick = TRUE;
            }
          return;
        }
      if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
        {
          conn->tls_want_out = gnutls_record_get_direction (conn->tls) == 1;
          return;
        }
      if (gnutls_error_is_fatal (r) || retries >= 8)
        {
          conn_fail_tls (conn, r, "TLS handshake failed");
          return;
        }
    }
}

/* STARTTLS on either side: buffered input is dropped, the plaintext
 * queued so far is sent, then the handshake runs. */
static void
conn_begin_tls (PbConn *conn, gboolean server, gnutls_certificate_credentials_t cred, const char *server_name,
                gboolean verify, PbConnTlsDoneFunc done, gpointer user_data)
{
  GError *error = NULL;

  conn->tls_done = done;
  conn->tls_done_data = user_data;
  if (conn->dead || conn->close_phase != CLOSE_NONE)
    {
      /* `done` learns of the failure before `closed`, if that is still to come. */
      if (!conn->closed_sent)
        {
          conn->tls_done_due = TRUE;
          conn->kick = TRUE;
          conn_schedule (conn);
        }
      else
        conn->tls_done = NULL;
      return;
    }

  /* RFC 3207 §4.2, RFC 2595 §3.1: anything the peer pipelined after the
   * STARTTLS command was sent in plain text and is never acted upon. */
  conn_free_input (conn);
  conn->in_next_size = IN_INITIAL;
  conn->discarding = FALSE;
  conn->in_event = FALSE;

  if (!pb_tls_session_new (&conn->tls, server, cred, conn->fd, &error))
    {
      conn_finish (conn, error);
      return;
    }
  if (!server)
    {
      if (server_name != NULL && !g_hostname_is_ip_address (server_name))
        gnutls_server_name_set (conn->tls, GNUTLS_NAME_DNS, server_name, strlen (server_name));
      if (verify)
        gnutls_session_set_verify_cert (conn->tls, server_name, 0);
    }
  conn->plain_left = conn->out_pending;
  conn->tls_state = TLS_FLUSH_PLAIN;
  conn_arm_idle (conn);
  conn->kick = TRUE;
  conn_schedule (conn);
}

/* ---- the loop side ---------------------------------------------------- */

static gboolean
conn_check_deadlines (PbConn *conn)
{
  gint64 now = conn_now (conn);

  if (conn->close_phase != CLOSE_NONE)
    {
      if (now < conn->close_deadline)
        return FALSE;
      if (conn->close_phase == CLOSE_FLUSH && conn->out_pending > 0)
        conn_fail (conn, PB_CONN_ERROR_IO, "gave up sending the last %" G_GSIZE_FORMAT " octets", conn->out_pending);
      else
        conn_finish (conn, NULL);
      return TRUE;
    }
  if (conn->total_deadline != 0 && now >= conn->total_deadline)
    {
      conn_fail (conn, PB_CONN_ERROR_TOTAL_TIMEOUT, "session time limit reached");
      return TRUE;
    }
  if (conn_idle_counts (conn) && now >= conn->idle_deadline)
    {
      conn_fail (conn, PB_CONN_ERROR_IDLE_TIMEOUT, "no input for %u ms", conn->idle_ms);
      return TRUE;
    }
  if (conn->stall_deadline != 0 && now >= conn->stall_deadline)
    {
      conn_fail (conn, PB_CONN_ERROR_IDLE_TIMEOUT, "the client took none of %" G_GSIZE_FORMAT " octets of output for %u ms",
                 conn->out_pending, conn->idle_ms);
      return TRUE;
    }
  return FALSE;
}

static void
conn_run_close (PbConn *conn, GIOCondition revents)
{
  if (conn->close_phase == CLOSE_FLUSH)
    {
      /* Output queued for a handshake that never finished cannot go. */
      if (conn->tls_state == TLS_HANDSHAKE)
        conn_drop_output (conn);
      if (conn->out_pending > 0 && (!conn->out_blocked || (revents & (G_IO_OUT | G_IO_IN))))
        {
          if (!conn_flush (conn))
            return;
          if (conn->tls_state == TLS_FLUSH_PLAIN && conn->plain_left == 0)
            conn_drop_output (conn);
        }
      if (conn->out_pending > 0)
        return;
      conn->close_phase = CLOSE_BYE;
      conn->tls_want_out = FALSE;
    }
  if (conn->close_phase == CLOSE_BYE)
    {
      if (conn->tls_state == TLS_ON)
        {
          int r = gnutls_bye (conn->tls, GNUTLS_SHUT_WR);
          if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            {
              conn->tls_want_out = gnutls_record_get_direction (conn->tls) == 1;
              return;
            }
        }
      shutdown (conn->fd, SHUT_WR);
      if (conn->eof)
        {
          conn_finish (conn, NULL);
          return;
        }
      conn->close_phase = CLOSE_LINGER;
      conn->close_deadline = MIN (conn->close_deadline, conn_now (conn) + CLOSE_LINGER_US);
      revents |= G_IO_IN;
    }
  if (conn->close_phase == CLOSE_LINGER && (revents & G_IO_IN))
    {
      guint8 sink[2048];
      gsize drained = 0;

      while (drained < LINGER_DRAIN_MAX)
        {
          ssize_t n = recv (conn->fd, sink, sizeof sink, 0);
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
          if (n <= 0)
            {
              conn_finish (conn, NULL);
              return;
            }
          drained += (gsize) n;
        }
    }
}

/* Does whatever socket work the state and REVENTS allow. */
static void
conn_run (PbConn *conn, GIOCondition revents)
{
  if (conn->dead)
    return;
  /* Errors and hang-ups surface from the next recv() or send(). */
  if (revents & (G_IO_ERR | G_IO_HUP | G_IO_NVAL))
    revents |= G_IO_IN | G_IO_OUT;
  if (conn_check_deadlines (conn))
    return;
  if (conn->close_phase != CLOSE_NONE)
    {
      conn_run_close (conn, revents);
      return;
    }

  if (conn->tls_state == TLS_FLUSH_PLAIN)
    {
      if (conn->plain_left > 0 && !conn_flush (conn))
        return;
      if (conn->plain_left > 0)
        return;
      conn->tls_state = TLS_HANDSHAKE;
    }
  if (conn->tls_state == TLS_HANDSHAKE)
    {
      conn_tls_handshake (conn);
      if (conn->tls_state != TLS_ON)
        return;
      /* Application data may have come with the handshake's last flight. */
      revents |= G_IO_IN | G_IO_OUT;
    }

  if (conn->out_pending > 0 && (!conn->out_blocked || (revents & (conn->tls != NULL ? G_IO_OUT | G_IO_IN : G_IO_OUT))))
    {
      if (!conn_flush (conn))
        return;
    }
  if (conn_can_read (conn)
      && ((revents & G_IO_IN) || (conn->tls_recv_want_out && (revents & G_IO_OUT)) || conn_tls_has_pending (conn)))
    conn_fill (conn);
}

static void
conn_send_closed (PbConn *conn)
{
  void (*closed) (PbConn *, const GError *, gpointer) = conn->on_closed;
  void (*notify) (PbConn *, gpointer) = conn->close_notify;
  gpointer user_data = conn->user_data;
  gpointer notify_data = conn->close_notify_data;
  ConnSource *source = conn->source;

  conn->closed_sent = TRUE;
  conn->on_readable = NULL;
  conn->on_drained = NULL;
  conn->on_closed = NULL;
  conn->close_notify = NULL;
  if (closed != NULL)
    closed (conn, conn->error, user_data);
  if (notify != NULL)
    notify (conn, notify_data);

  conn_free_input (conn);
  conn->source = NULL;
  source->conn = NULL;
  g_source_destroy ((GSource *) source);
  g_source_unref ((GSource *) source);
  pb_conn_unref (conn);   /* the loop's reference */
}

/* Calls the handlers that are due, in order; each may change anything. */
static void
conn_deliver (PbConn *conn)
{
  if (conn->tls_done_due)
    {
      PbConnTlsDoneFunc done = conn->tls_done;
      gpointer data = conn->tls_done_data;
      GError *error = NULL;

      conn->tls_done_due = FALSE;
      conn->tls_done = NULL;
      conn->tls_done_data = NULL;
      if (conn->tls_state != TLS_ON)
        error = conn->error != NULL ? g_error_copy (conn->error)
                                    : g_error_new_literal (PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_CLOSED,
                                                           "connection closed before the TLS handshake ended");
      if (done != NULL)
        done (conn, error, data);
      g_clear_error (&error);
    }
  if (!conn->dead && conn->close_phase == CLOSE_NONE && conn->armed && conn->in_event)
    {
      conn->armed = FALSE;
      conn->in_event = FALSE;
      if (conn->on_readable != NULL)
        conn->on_readable (conn, conn->user_data);
    }
  if (!conn->dead && conn->close_phase == CLOSE_NONE && conn->drained_due)
    {
      conn->drained_due = FALSE;
      if (conn->on_drained != NULL)
        conn->on_drained (conn, conn->user_data);
    }
  if (conn->dead && !conn->closed_sent && !conn->tls_done_due)
    conn_send_closed (conn);
}

static gboolean
conn_source_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  PbConn *conn = ((ConnSource *) source)->conn;
  GIOCondition revents;

  if (conn == NULL)
    return G_SOURCE_REMOVE;
  revents = conn->fd_tag != NULL ? g_source_query_unix_fd (source, conn->fd_tag) : 0;
  pb_conn_ref (conn);
  conn->dispatching = TRUE;
  /* Handlers may queue output or close: a few rounds within one dispatch
   * let replies written by `readable` leave in this iteration. */
  for (int round = 0; round < 4; round++)
    {
      conn->kick = FALSE;
      conn_run (conn, revents);
      revents = 0;
      conn_deliver (conn);
      if (!conn->kick || conn->closed_sent)
        break;
    }
  conn->dispatching = FALSE;
  conn_update (conn);
  pb_conn_unref (conn);
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs conn_source_funcs = {
  .dispatch = conn_source_dispatch,
};

static GIOCondition
conn_wanted_events (PbConn *conn)
{
  GIOCondition events = 0;

  if (conn->dead)
    return 0;
  switch (conn->close_phase)
    {
    case CLOSE_LINGER:
      return G_IO_IN;
    case CLOSE_BYE:
      return conn->tls_want_out ? G_IO_OUT : G_IO_IN;
    case CLOSE_FLUSH:
      return conn->out_blocked ? G_IO_OUT : 0;
    default:
      break;
    }
  if (conn->tls_state == TLS_HANDSHAKE)
    return conn->tls_want_out ? G_IO_OUT : G_IO_IN;
  if (conn->out_blocked)
    events |= G_IO_OUT;
  if (conn_can_read (conn))
    events |= G_IO_IN;
  if (conn->tls_recv_want_out && conn_can_read (conn))
    events |= G_IO_OUT;
  return events;
}

static gint64
conn_wakeup_time (PbConn *conn)
{
  gint64 t = -1;

  if (conn->kick || (conn->dead && !conn->closed_sent))
    return 0;
  if (conn->dead)
    return -1;
  if (conn_tls_has_pending (conn))
    return 0;
  if (conn->close_phase != CLOSE_NONE)
    return conn->close_deadline;
  if (conn->total_deadline != 0)
    t = conn->total_deadline;
  if (conn_idle_counts (conn) && (t < 0 || conn->idle_deadline < t))
    t = conn->idle_deadline;
  if (conn->stall_deadline != 0 && (t < 0 || conn->stall_deadline < t))
    t = conn->stall_deadline;
  return t;
}

/* Brings the poll events and the ready time in line with the state. */
static void
conn_update (PbConn *conn)
{
  GSource *source = (GSource *) conn->source;
  GIOCondition want;
  gint64 wake;
  gint64 current;

  if (source == NULL)
    return;

  want = conn_wanted_events (conn);
  if (want != conn->events || (want != 0) != (conn->fd_tag != NULL))
    {
      /* Nothing wanted: stop polling altogether, or a hang-up would be
       * reported again and again. */
      if (want == 0)
        {
          if (conn->fd_tag != NULL)
            g_source_remove_unix_fd (source, conn->fd_tag);
          conn->fd_tag = NULL;
        }
      else if (conn->fd_tag == NULL)
        conn->fd_tag = g_source_add_unix_fd (source, conn->fd, want);
      else
        g_source_modify_unix_fd (source, conn->fd_tag, want);
      conn->events = want;
    }

  wake = conn_wakeup_time (conn);
  current = g_source_get_ready_time (source);
  if (wake == current)
    return;
  /* A timer still ahead of us and no later than needed may stay: it
   * fires early and the dispatch sets the right time. */
  if (wake != 0 && current > conn_now (conn) && (wake < 0 || wake > current))
    return;
  g_source_set_ready_time (source, wake);
}

/* ---- construction ----------------------------------------------------- */

static void
conn_addr_load (ConnAddr *a, int fd, gboolean peer)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int r = peer ? getpeername (fd, (struct sockaddr *) &ss, &len) : getsockname (fd, (struct sockaddr *) &ss, &len);

  memset (a, 0, sizeof *a);
  if (r < 0)
    return;
  a->family = ss.ss_family;
  if (ss.ss_family == AF_INET)
    {
      const struct sockaddr_in *sin = (const struct sockaddr_in *) &ss;
      memcpy (a->addr, &sin->sin_addr, 4);
      a->port = ntohs (sin->sin_port);
    }
  else if (ss.ss_family == AF_INET6)
    {
      static const guint8 v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
      const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) &ss;

      a->port = ntohs (sin6->sin6_port);
      /* An IPv4 client of a dual-stack ("*:PORT") listener is an IPv4 client:
       * address lists, limits and logs must see 192.0.2.7, not ::ffff:192.0.2.7. */
      if (memcmp (&sin6->sin6_addr, v4_mapped, sizeof v4_mapped) == 0)
        {
          a->family = AF_INET;
          memcpy (a->addr, (const guint8 *) &sin6->sin6_addr + 12, 4);
        }
      else
        memcpy (a->addr, &sin6->sin6_addr, 16);
    }
}

static PbConn *
conn_new (int fd, gboolean server)
{
  PbConn *conn = g_new0 (PbConn, 1);
  GSource *source;
  int one = 1;

  g_unix_set_fd_nonblocking (fd, TRUE, NULL);
  (void) fcntl (fd, F_SETFD, FD_CLOEXEC);
  /* Replies are coalesced here; Nagle would only delay them. Fails
   * harmlessly on non-TCP sockets. */
  (void) setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  conn->ref_count = 2;   /* the caller's and the loop's */
  conn->fd = fd;
  conn->is_server = server;
  conn->max_line = DEFAULT_MAX_LINE;
  conn->in_next_size = IN_INITIAL;
  conn_addr_load (&conn->peer, fd, TRUE);
  conn_addr_load (&conn->local, fd, FALSE);

  source = g_source_new (&conn_source_funcs, sizeof (ConnSource));
  g_source_set_static_name (source, "PbConn");
  ((ConnSource *) source)->conn = conn;
  conn->source = (ConnSource *) source;
  conn->fd_tag = g_source_add_unix_fd (source, fd, G_IO_IN);
  conn->events = G_IO_IN;
  pb_source_attach (source, g_main_context_get_thread_default ());
  return conn;
}

PbConn *
pb_conn_new_server (int fd, PbTlsCreds *creds, PbTlsMode mode)
{
  PbConn *conn;
  GError *error = NULL;

  g_return_val_if_fail (fd >= 0, NULL);

  conn = conn_new (fd, TRUE);
  if (creds != NULL)
    conn->creds = pb_tls_creds_ref (creds);
  if (mode != PB_TLS_IMPLICIT)
    return conn;

  if (creds == NULL)
    {
      conn_finish (conn, g_error_new_literal (PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_TLS, "no TLS certificate loaded"));
      return conn;
    }
  if (!pb_tls_session_new (&conn->tls, TRUE, pb_tls_creds_get_gnutls (creds), fd, &error))
    {
      conn_finish (conn, error);
      return conn;
    }
  conn->tls_state = TLS_HANDSHAKE;
  conn_arm_idle (conn);
  conn->kick = TRUE;
  conn_update (conn);
  return conn;
}

PbConn *
pb_conn_new_client (int fd)
{
  g_return_val_if_fail (fd >= 0, NULL);
  return conn_new (fd, FALSE);
}

PbConn *
pb_conn_ref (PbConn *conn)
{
  g_return_val_if_fail (conn != NULL, NULL);
  g_atomic_int_inc (&conn->ref_count);
  return conn;
}

void
pb_conn_unref (PbConn *conn)
{
  g_return_if_fail (conn != NULL);
  if (!g_atomic_int_dec_and_test (&conn->ref_count))
    return;
  /* The loop holds a reference until `closed`, so the source is gone. */
  g_assert (conn->source == NULL);
  if (conn->fd >= 0)
    close (conn->fd);
  conn_free_input (conn);
  conn_drop_output (conn);
  if (conn->tls != NULL)
    gnutls_deinit (conn->tls);
  g_clear_pointer (&conn->creds, pb_tls_creds_unref);
  g_clear_error (&conn->error);
  g_clear_object (&conn->peer_address);
  g_clear_object (&conn->local_address);
  g_free (conn->peer_ip);
  g_free (conn);
}

void
pb_conn_set_handlers (PbConn *conn, const PbConnHandlers *handlers, gpointer user_data)
{
  g_return_if_fail (conn != NULL);
  g_return_if_fail (handlers == NULL || handlers->struct_size >= sizeof (gsize));

  if (conn->closed_sent)
    return;
  conn->on_readable = NULL;
  conn->on_drained = NULL;
  conn->on_closed = NULL;
  conn->user_data = user_data;
  if (handlers == NULL)
    return;
  if (PB_FIELD_PRESENT (handlers, PbConnHandlers, readable))
    conn->on_readable = handlers->readable;
  if (PB_FIELD_PRESENT (handlers, PbConnHandlers, drained))
    conn->on_drained = handlers->drained;
  if (PB_FIELD_PRESENT (handlers, PbConnHandlers, closed))
    conn->on_closed = handlers->closed;
}

void
pb_conn_set_close_notify (PbConn *conn, void (*notify) (PbConn *conn, gpointer data), gpointer data)
{
  g_return_if_fail (conn != NULL);
  if (conn->closed_sent)
    return;
  conn->close_notify = notify;
  conn->close_notify_data = data;
}

void
pb_conn_set_max_line (PbConn *conn, gsize max_len)
{
  g_return_if_fail (conn != NULL);
  g_return_if_fail (max_len >= 64);
  g_return_if_fail (max_len <= G_MAXINT32 / 2);
  conn->max_line = (guint32) max_len;
}

/* ---- pulling input ---------------------------------------------------- */

PbConnStatus
pb_conn_read_line (PbConn *conn, const char **line, gsize *len)
{
  g_return_val_if_fail (line != NULL, PB_CONN_ERROR);
  g_return_val_if_fail (len != NULL, PB_CONN_ERROR);
  *line = NULL;
  *len = 0;
  g_return_val_if_fail (conn != NULL, PB_CONN_ERROR);

  if (conn->dead)
    return conn->error != NULL ? PB_CONN_ERROR : PB_CONN_EOF;
  if (conn->close_phase != CLOSE_NONE)
    return PB_CONN_EOF;

  conn_skip_discard (conn);
  if (!conn->discarding && conn->in_buf != NULL)
    {
      guint8 *start = conn->in_buf + conn->in_start;
      guint32 avail = conn->in_end - conn->in_start;
      guint8 *lf = avail > conn->in_scanned ? memchr (start + conn->in_scanned, '\n', avail - conn->in_scanned) : NULL;

      if (lf != NULL)
        {
          guint32 n = (guint32) (lf - start) + 1;
          conn_consume (conn, n);
          conn->in_scanned = 0;
          if (n > conn->max_line)
            return PB_CONN_TOO_LONG;
          *line = (const char *) start;
          *len = n;
          return PB_CONN_LINE;
        }
      conn->in_scanned = avail;
      if (avail >= conn->max_line)
        {
          /* Already too long without its LF: report it now, once, and
           * drop the rest as it comes. */
          conn_consume (conn, avail);
          conn->discarding = TRUE;
          return PB_CONN_TOO_LONG;
        }
    }
  /* At end of file an unterminated last line is dropped: it is not a command. */
  return conn_wait_input (conn);
}

gsize
pb_conn_peek (PbConn *conn, const guint8 **data)
{
  guint32 avail;

  g_return_val_if_fail (data != NULL, 0);
  *data = NULL;
  g_return_val_if_fail (conn != NULL, 0);

  if (conn->dead || conn->close_phase != CLOSE_NONE)
    return 0;
  conn_skip_discard (conn);
  avail = conn->in_end - conn->in_start;
  if (avail > 0 && !conn->discarding)
    {
      *data = conn->in_buf + conn->in_start;
      return avail;
    }
  conn_wait_input (conn);
  return 0;
}

void
pb_conn_consume (PbConn *conn, gsize n)
{
  g_return_if_fail (conn != NULL);
  /* Input is ignored once closing: what was peeked is gone already. */
  if (conn->dead || conn->close_phase != CLOSE_NONE)
    return;
  g_return_if_fail (n <= conn->in_end - conn->in_start);
  conn_consume (conn, (guint32) n);
}

PbConnStatus
pb_conn_read_status (PbConn *conn)
{
  g_return_val_if_fail (conn != NULL, PB_CONN_ERROR);
  if (conn->dead)
    return conn->error != NULL ? PB_CONN_ERROR : PB_CONN_EOF;
  if (conn->eof || conn->close_phase != CLOSE_NONE)
    return PB_CONN_EOF;
  return PB_CONN_AGAIN;
}

/* ---- output ----------------------------------------------------------- */

void
pb_conn_write (PbConn *conn, const void *data, gsize len)
{
  g_return_if_fail (conn != NULL);
  g_return_if_fail (data != NULL || len == 0);

  if (len == 0 || conn->dead || conn->close_phase != CLOSE_NONE)
    return;
  conn_queue (conn, data, len);
  if (conn->out_pending >= OUT_LOW_WATER)
    conn->out_high = TRUE;
  if (!conn->out_blocked && !conn->kick)
    {
      conn->kick = TRUE;
      conn_schedule (conn);
    }
}

void
pb_conn_printf (PbConn *conn, const char *format, ...)
{
  char buf[512];
  va_list ap;
  int n;

  g_return_if_fail (conn != NULL);
  g_return_if_fail (format != NULL);

  va_start (ap, format);
  n = g_vsnprintf (buf, sizeof buf, format, ap);
  va_end (ap);
  if (n < 0)
    return;
  if ((gsize) n < sizeof buf)
    {
      pb_conn_write (conn, buf, (gsize) n);
      return;
    }
  {
    g_autofree char *text = NULL;
    va_start (ap, format);
    text = g_strdup_vprintf (format, ap);
    va_end (ap);
    pb_conn_write (conn, text, strlen (text));
  }
}

gsize
pb_conn_get_output_pending (PbConn *conn)
{
  g_return_val_if_fail (conn != NULL, 0);
  return conn->out_pending;
}

/* ---- ending ----------------------------------------------------------- */

void
pb_conn_close (PbConn *conn)
{
  g_return_if_fail (conn != NULL);

  if (conn->dead || conn->close_phase != CLOSE_NONE)
    return;
  conn->close_phase = CLOSE_FLUSH;
  conn->armed = FALSE;
  conn->in_event = FALSE;
  conn->drained_due = FALSE;
  conn->discarding = FALSE;
  conn_free_input (conn);   /* input is ignored from now on */
  conn->close_deadline = conn_now (conn) + CLOSE_FLUSH_US;
  conn->kick = TRUE;
  conn_schedule (conn);
}

/* The socket closes now; `closed` follows from the loop, never from
 * inside this call (the caller may be inside a handler of this conn). */
void
pb_conn_abort (PbConn *conn, PbConnError code, const char *message)
{
  g_return_if_fail (conn != NULL);

  if (conn->dead)
    return;
  conn_finish (conn, g_error_new_literal (PB_CONN_ERROR_DOMAIN, code,
                                          message != NULL ? message : "connection aborted"));
}

/* ---- TLS -------------------------------------------------------------- */

void
pb_conn_start_tls (PbConn *conn, PbConnTlsDoneFunc done, gpointer user_data)
{
  g_return_if_fail (conn != NULL);
  g_return_if_fail (conn->is_server);
  g_return_if_fail (conn->creds != NULL);
  g_return_if_fail (conn->tls_state == TLS_NONE);

  conn_begin_tls (conn, TRUE, pb_tls_creds_get_gnutls (conn->creds), NULL, FALSE, done, user_data);
}

void
pb_conn_start_tls_client (PbConn *conn, const char *server_name, gboolean verify, PbConnTlsDoneFunc done,
                          gpointer user_data)
{
  g_return_if_fail (conn != NULL);
  g_return_if_fail (!conn->is_server);
  g_return_if_fail (conn->tls_state == TLS_NONE);

  conn_begin_tls (conn, FALSE, pb_tls_client_creds (verify), server_name, verify, done, user_data);
}

gboolean
pb_conn_can_start_tls (PbConn *conn)
{
  g_return_val_if_fail (conn != NULL, FALSE);
  return conn->creds != NULL && conn->is_server && conn->tls_state == TLS_NONE && !conn->dead
         && conn->close_phase == CLOSE_NONE;
}

gboolean
pb_conn_is_tls (PbConn *conn)
{
  g_return_val_if_fail (conn != NULL, FALSE);
  return conn->tls_state == TLS_ON;
}

char *
pb_conn_get_tls_description (PbConn *conn)
{
  const char *protocol;
  const char *suite = NULL;
  char *desc;
  char *copy;

  g_return_val_if_fail (conn != NULL, NULL);
  if (conn->tls_state != TLS_ON)
    return NULL;

  protocol = gnutls_protocol_get_name (gnutls_protocol_get_version (conn->tls));
#if GNUTLS_VERSION_NUMBER >= 0x030704
  suite = gnutls_ciphersuite_get (conn->tls);
#endif
  if (protocol != NULL && suite != NULL)
    return g_strdup_printf ("%s %s", protocol, suite);
  desc = gnutls_session_get_desc (conn->tls);
  copy = g_strdup (desc != NULL ? desc : "TLS");
  gnutls_free (desc);
  return copy;
}

void
pb_conn_set_tls_creds (PbConn *conn, PbTlsCreds *creds)
{
  g_return_if_fail (conn != NULL);
  if (creds != NULL)
    pb_tls_creds_ref (creds);
  g_clear_pointer (&conn->creds, pb_tls_creds_unref);
  conn->creds = creds;
}

/* ---- addresses and deadlines ------------------------------------------ */

static GInetSocketAddress *
conn_addr_object (const ConnAddr *a)
{
  GInetAddress *ip;
  GSocketAddress *sa;

  if (a->family != AF_INET && a->family != AF_INET6)
    return NULL;
  ip = g_inet_address_new_from_bytes (a->addr, a->family == AF_INET ? G_SOCKET_FAMILY_IPV4 : G_SOCKET_FAMILY_IPV6);
  sa = g_inet_socket_address_new (ip, a->port);
  g_object_unref (ip);
  return G_INET_SOCKET_ADDRESS (sa);
}

GInetSocketAddress *
pb_conn_get_peer_address (PbConn *conn)
{
  g_return_val_if_fail (conn != NULL, NULL);
  if (conn->peer_address == NULL)
    conn->peer_address = conn_addr_object (&conn->peer);
  return conn->peer_address;
}

GInetSocketAddress *
pb_conn_get_local_address (PbConn *conn)
{
  g_return_val_if_fail (conn != NULL, NULL);
  if (conn->local_address == NULL)
    conn->local_address = conn_addr_object (&conn->local);
  return conn->local_address;
}

const char *
pb_conn_get_peer_ip (PbConn *conn)
{
  char text[INET6_ADDRSTRLEN];

  g_return_val_if_fail (conn != NULL, NULL);
  if (conn->peer_ip != NULL)
    return conn->peer_ip;

  /* IPv4-mapped addresses were unmapped by conn_addr_load(). */
  if (conn->peer.family == AF_INET || conn->peer.family == AF_INET6)
    {
      inet_ntop (conn->peer.family, conn->peer.addr, text, sizeof text);
      conn->peer_ip = g_strdup (text);
    }
  else
    conn->peer_ip = g_strdup (conn->peer.family == AF_UNIX ? "unix" : "unknown");
  return conn->peer_ip;
}

void
pb_conn_set_idle_timeout (PbConn *conn, guint ms)
{
  g_return_if_fail (conn != NULL);
  conn->idle_ms = ms;
  conn_arm_idle (conn);
  conn_schedule (conn);
}

void
pb_conn_set_total_timeout (PbConn *conn, guint ms)
{
  g_return_if_fail (conn != NULL);
  conn->total_deadline = ms > 0 ? conn_now (conn) + (gint64) ms * 1000 : 0;
  conn_schedule (conn);
}

gsize
pb_conn_get_memory_use (PbConn *conn)
{
  gsize total;

  g_return_val_if_fail (conn != NULL, 0);
  total = sizeof (PbConn) + conn->in_size;
  if (conn->source != NULL)
    total += sizeof (ConnSource) + SOURCE_OVERHEAD;
  for (OutChunk *c = conn->out_head; c != NULL; c = c->next)
    total += sizeof (OutChunk) + c->size;
  if (conn->tls != NULL)
    total += TLS_SESSION_ESTIMATE;
  if (conn->peer_ip != NULL)
    total += strlen (conn->peer_ip) + 1;
  if (conn->peer_address != NULL)
    total += 2 * 64;
  if (conn->local_address != NULL)
    total += 2 * 64;
  return total;
}
