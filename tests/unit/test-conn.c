/* SPDX-License-Identifier: MIT */
/* Unit tests for connections over real sockets: lines, back-pressure, output, deadlines, TLS and STARTTLS. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <glib-unix.h>

#include <pillarbox/pillarbox.h>
#include "pb-private.h"

/* Every wait gives up (and fails the test) after this long. */
#define WAIT_MS 10000

/* ---- waiting on the loop ---------------------------------------------- */

static gboolean
set_flag (gpointer data)
{
  *(gboolean *) data = TRUE;
  return G_SOURCE_REMOVE;
}

/* Runs the loop until EXPR holds; fails after WAIT_MS. */
#define WAIT_FOR_MSG(expr, ...)                                               \
  do                                                                          \
    {                                                                         \
      gboolean expired_ = FALSE;                                              \
      guint guard_ = g_timeout_add (WAIT_MS, set_flag, &expired_);            \
      while (!(expr) && !expired_)                                            \
        g_main_context_iteration (NULL, TRUE);                                \
      if (!expired_)                                                          \
        g_source_remove (guard_);                                             \
      if (!(expr))                                                            \
        {                                                                     \
          g_autofree char *what_ = g_strdup_printf (__VA_ARGS__);             \
          fail_msg ("%s:%d: %s: timed out waiting for %s", __FILE__, __LINE__, \
                    what_, #expr);                                            \
        }                                                                     \
    }                                                                         \
  while (0)
#define WAIT_FOR(expr) WAIT_FOR_MSG (expr, "%s", "")

/* Runs the loop for MS milliseconds. */
static void
spin (guint ms)
{
  gboolean done = FALSE;

  g_timeout_add (ms, set_flag, &done);
  while (!done)
    g_main_context_iteration (NULL, TRUE);
}

/* ---- sockets ---------------------------------------------------------- */

static void
make_unix_pair (int *conn_fd, int *peer_fd)
{
  int sv[2];

  assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  *conn_fd = sv[0];
  *peer_fd = sv[1];
}

/* A connected loopback TCP pair: ACCEPTED is the server side. */
static void
make_tcp_pair (int *accepted, int *connected)
{
  struct sockaddr_in sin = { 0 };
  socklen_t len = sizeof sin;
  int lfd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  assert_true (lfd >= 0);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  assert_int_equal (bind (lfd, (struct sockaddr *) &sin, sizeof sin), 0);
  assert_int_equal (listen (lfd, 4), 0);
  assert_int_equal (getsockname (lfd, (struct sockaddr *) &sin, &len), 0);
  *connected = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true (*connected >= 0);
  assert_int_equal (connect (*connected, (struct sockaddr *) &sin, sizeof sin), 0);
  *accepted = accept (lfd, NULL, NULL);
  assert_true (*accepted >= 0);
  close (lfd);
}

static void
write_all (int fd, const void *data, gsize len)
{
  const char *p = data;

  while (len > 0)
    {
      ssize_t n = send (fd, p, len, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      assert_true (n > 0);
      p += n;
      len -= (gsize) n;
    }
}

/* Octets waiting in FD's receive queue. */
static int
unread (int fd)
{
  int n = 0;

  assert_int_equal (ioctl (fd, FIONREAD, &n), 0);
  return n;
}

/* Appends whatever FD has now, without blocking; FALSE at end of file. */
static gboolean
read_some (int fd, GString *into)
{
  char buf[16384];

  for (;;)
    {
      ssize_t n = recv (fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0)
        {
          g_string_append_len (into, buf, n);
          continue;
        }
      if (n == 0)
        return FALSE;
      if (errno == EINTR)
        continue;
      return TRUE;
    }
}

/* Writes a buffer to a non-blocking socket from the loop, as a peer would. */
typedef struct {
  const char *data;
  gsize len;
  gsize offset;
} Feeder;

static gboolean
feeder_ready (gint fd, GIOCondition condition, gpointer user_data)
{
  Feeder *f = user_data;

  while (f->offset < f->len)
    {
      ssize_t n = send (fd, f->data + f->offset, f->len - f->offset, MSG_NOSIGNAL);
      if (n <= 0)
        return n < 0 && errno == EAGAIN ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
      f->offset += (gsize) n;
    }
  return G_SOURCE_REMOVE;
}

static void
feed (int fd, Feeder *f, const char *data, gsize len)
{
  f->data = data;
  f->len = len;
  f->offset = 0;
  g_unix_set_fd_nonblocking (fd, TRUE, NULL);
  g_unix_fd_add (fd, G_IO_OUT, feeder_ready, f);
}

/* ---- a small protocol module ------------------------------------------ */

typedef struct _Module Module;
struct _Module {
  PbConn *conn;
  GPtrArray *lines;       /* char *: every line, "<too long>" for TOO_LONG */
  guint too_long;
  guint readable;
  guint drained;
  guint closed;
  gboolean eof;
  gboolean failed;        /* pulling returned PB_CONN_ERROR */
  gboolean paused;        /* busy elsewhere: does not pull */
  GError *error;          /* `closed`'s error */
  const char *reply;      /* when set, answers each line with "REPLY <line>" */
  void (*on_line) (Module *m, const char *line, gsize len);
  void (*on_drained) (Module *m);
  gpointer data;
};

static void module_pull (Module *m);

static void
module_readable (PbConn *conn, gpointer user_data)
{
  Module *m = user_data;

  assert_ptr_equal (conn, m->conn);
  assert_int_equal (m->closed, 0);
  m->readable++;
  module_pull (m);
}

static void
module_drained (PbConn *conn, gpointer user_data)
{
  Module *m = user_data;

  assert_int_equal (m->closed, 0);
  m->drained++;
  if (m->on_drained != NULL)
    m->on_drained (m);
}

static void
module_closed (PbConn *conn, const GError *error, gpointer user_data)
{
  Module *m = user_data;

  m->closed++;
  if (error != NULL && m->error == NULL)
    m->error = g_error_copy (error);
}

static const PbConnHandlers module_handlers = {
  .struct_size = sizeof (PbConnHandlers),
  .readable = module_readable,
  .drained = module_drained,
  .closed = module_closed,
};

static void
module_pull (Module *m)
{
  while (!m->paused && m->closed == 0)
    {
      const char *line;
      gsize len;

      switch (pb_conn_read_line (m->conn, &line, &len))
        {
        case PB_CONN_LINE:
          assert_true (len > 0 && line[len - 1] == '\n');
          g_ptr_array_add (m->lines, g_strndup (line, len));
          if (m->reply != NULL)
            pb_conn_printf (m->conn, "%s %.*s", m->reply, (int) len, line);
          if (m->on_line != NULL)
            m->on_line (m, line, len);
          break;
        case PB_CONN_TOO_LONG:
          m->too_long++;
          g_ptr_array_add (m->lines, g_strdup ("<too long>"));
          break;
        case PB_CONN_AGAIN:
          return;
        case PB_CONN_EOF:
          m->eof = TRUE;
          return;
        case PB_CONN_ERROR:
          m->failed = TRUE;
          return;
        }
    }
}

/* Takes CONN; installs the handlers and pulls once, as a module does on accept. */
static Module *
module_new (PbConn *conn)
{
  Module *m = g_new0 (Module, 1);

  assert_non_null (conn);
  m->conn = conn;
  m->lines = g_ptr_array_new_with_free_func (g_free);
  pb_conn_set_handlers (conn, &module_handlers, m);
  module_pull (m);
  return m;
}

static void
module_free (Module *m)
{
  assert_int_equal (m->closed, 1);
  pb_conn_unref (m->conn);
  g_ptr_array_unref (m->lines);
  g_clear_error (&m->error);
  g_free (m);
}

/* Closes the peer's socket, then the conn, and waits for `closed`. */
static void
module_close_with_peer (Module *m, int peer_fd)
{
  if (peer_fd >= 0)
    close (peer_fd);
  pb_conn_close (m->conn);
  WAIT_FOR (m->closed == 1);
  module_free (m);
}

static char *
escaped (const char *s)
{
  return g_strescape (s, NULL);
}

static void
assert_lines (Module *m, const char *const *expected, guint n_expected, const char *what, guint index)
{
  for (guint i = 0; i < MAX (n_expected, m->lines->len); i++)
    {
      const char *got = i < m->lines->len ? g_ptr_array_index (m->lines, i) : "(none)";
      const char *want = i < n_expected ? expected[i] : "(none)";
      if (strcmp (got, want) != 0)
        {
          g_autofree char *g = escaped (got);
          g_autofree char *w = escaped (want);
          fail_msg ("case %u (%s): line %u is \"%s\", expected \"%s\"", index, what, i, g, w);
        }
    }
}

/* ---- 1. lines --------------------------------------------------------- */

static const struct {
  const char *input;
  const char *lines[6];
} line_cases[] = {
  { "HELO a\r\n", { "HELO a\r\n" } },
  { "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", { "MAIL FROM:<a@b>\r\n", "RCPT TO:<c@d>\r\n", "DATA\r\n" } },
  { "bare\nlf\n", { "bare\n", "lf\n" } },
  { "mixed\r\nbare\n\r\n\n", { "mixed\r\n", "bare\n", "\r\n", "\n" } },
  { "cr\rinside\r\n", { "cr\rinside\r\n" } },
  { "done\r\nno end yet", { "done\r\n" } },
};

static guint
count_lines (const char *const *lines)
{
  guint n = 0;

  while (n < 6 && lines[n] != NULL)
    n++;
  return n;
}

static void
test_lines (void **state)
{
  for (guint i = 0; i < G_N_ELEMENTS (line_cases); i++)
    for (int bytewise = 0; bytewise < 2; bytewise++)
      {
        const char *input = line_cases[i].input;
        guint expected = count_lines (line_cases[i].lines);
        const char *mode = bytewise ? "one byte at a time" : "one write";
        int fd, peer;
        Module *m;

        make_unix_pair (&fd, &peer);
        m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
        if (bytewise)
          for (gsize k = 0; input[k] != '\0'; k++)
            {
              write_all (peer, input + k, 1);
              /* The next octet goes only once the conn has read this one. */
              WAIT_FOR_MSG (unread (fd) == 0, "case %u (%s), octet %zu", i, mode, k);
            }
        else
          write_all (peer, input, strlen (input));
        WAIT_FOR_MSG (m->lines->len >= expected && unread (fd) == 0, "case %u (%s)", i, mode);
        spin (5);
        assert_lines (m, line_cases[i].lines, expected, mode, i);
        assert_false (m->eof);

        /* End of file comes through pulling; an unterminated tail is dropped. */
        shutdown (peer, SHUT_WR);
        WAIT_FOR_MSG (m->eof, "case %u (%s)", i, mode);
        assert_lines (m, line_cases[i].lines, expected, mode, i);
        assert_int_equal (m->closed, 0);
        module_close_with_peer (m, peer);
      }
}

static void
test_pipelined_batch (void **state)
{
  g_autoptr (GString) batch = g_string_new (NULL);
  g_autoptr (GString) expected = g_string_new (NULL);
  g_autoptr (GString) replies = g_string_new (NULL);
  int fd, peer;
  Module *m;

  for (int i = 0; i < 100; i++)
    {
      g_string_append_printf (batch, "NOOP %d\r\n", i);
      g_string_append_printf (expected, "250 NOOP %d\r\n", i);
    }
  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
  m->reply = "250";
  write_all (peer, batch->str, batch->len);
  WAIT_FOR (m->lines->len == 100);
  /* All of it arrived in one read, so one `readable`, and the replies were
   * sent before pulling returned AGAIN: they are all waiting already. */
  assert_int_equal (m->readable, 1);
  assert_int_equal (unread (peer), (int) expected->len);
  for (guint i = 0; i < 100; i++)
    {
      g_autofree char *want = g_strdup_printf ("NOOP %u\r\n", i);
      if (strcmp (g_ptr_array_index (m->lines, i), want) != 0)
        fail_msg ("pipelined line %u is wrong", i);
    }
  read_some (peer, replies);
  assert_string_equal (replies->str, expected->str);
  module_close_with_peer (m, peer);
}

/* ---- 2. overlong lines ------------------------------------------------ */

static const gsize oversize_chunks[] = { 1, 3, 100, 700, 1001, 4096, 70000 };

static void
test_too_long (void **state)
{
  for (guint i = 0; i < G_N_ELEMENTS (oversize_chunks); i++)
    {
      static const char *const expected[] = { "FIRST\r\n", "<too long>", "NEXT\r\n" };
      g_autoptr (GString) input = g_string_new ("FIRST\r\n");
      gsize chunk = oversize_chunks[i];
      int fd, peer;
      Module *m;

      for (int k = 0; k < 1500; k++)
        g_string_append_c (input, 'A' + k % 26);
      g_string_append (input, "\r\nNEXT\r\n");

      make_unix_pair (&fd, &peer);
      m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
      for (gsize off = 0; off < input->len; off += chunk)
        {
          write_all (peer, input->str + off, MIN (chunk, input->len - off));
          WAIT_FOR_MSG (unread (fd) == 0, "chunk size %zu (case %u), offset %zu", chunk, i, off);
        }
      WAIT_FOR_MSG (m->lines->len >= 3, "chunk size %zu (case %u)", chunk, i);
      spin (5);
      assert_lines (m, expected, 3, "oversize", i);
      if (m->too_long != 1)
        fail_msg ("case %u (chunk %zu): TOO_LONG %u times", i, chunk, m->too_long);
      module_close_with_peer (m, peer);
    }
}

static const struct {
  gsize max_line;    /* 0: the default */
  gsize length;      /* including CRLF */
  gboolean fits;
} boundary_cases[] = {
  { 0, 1000, TRUE },
  { 0, 1001, FALSE },
  { 64, 64, TRUE },
  { 64, 65, FALSE },
  { 0, 200000, FALSE },      /* the remainder spans several buffer fills */
  { 100000, 99999, TRUE },   /* longer than the default input buffer limit's start */
};

static void
test_line_limits (void **state)
{
  for (guint i = 0; i < G_N_ELEMENTS (boundary_cases); i++)
    {
      g_autoptr (GString) input = g_string_new (NULL);
      Feeder feeder;
      int fd, peer;
      Module *m;
      const char *first;

      for (gsize k = 0; k + 2 < boundary_cases[i].length; k++)
        g_string_append_c (input, 'x');
      g_string_append (input, "\r\nQUIT\r\n");

      make_unix_pair (&fd, &peer);
      m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
      if (boundary_cases[i].max_line != 0)
        pb_conn_set_max_line (m->conn, boundary_cases[i].max_line);
      feed (peer, &feeder, input->str, input->len);
      WAIT_FOR_MSG (m->lines->len >= 2 && feeder.offset == input->len, "case %u", i);
      first = g_ptr_array_index (m->lines, 0);
      if (boundary_cases[i].fits ? strlen (first) != boundary_cases[i].length : strcmp (first, "<too long>") != 0)
        fail_msg ("case %u: a %zu-octet line with limit %zu: got %.20s", i, boundary_cases[i].length,
                  boundary_cases[i].max_line, first);
      if (strcmp (g_ptr_array_index (m->lines, 1), "QUIT\r\n") != 0)
        fail_msg ("case %u: the line after is wrong", i);
      module_close_with_peer (m, peer);
    }
}

/* ---- back-pressure, peek and consume ---------------------------------- */

static void
test_back_pressure (void **state)
{
  gsize total = 1024 * 1024;
  g_autofree guint8 *data = g_malloc (total);
  gsize offset = 0;
  gsize received = 0;
  gsize idle_use;
  gboolean expired = FALSE;
  guint guard;
  int fd, peer;
  Module *m;

  for (gsize k = 0; k < total; k++)
    data[k] = (guint8) (k * 7 + k / 4096);
  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
  idle_use = pb_conn_get_memory_use (m->conn);
  print_message ("memory of an idle plain connection: %zu octets\n", idle_use);
  assert_true (idle_use < 1024);

  /* The module is busy: the conn reads ahead up to its limit, then the
   * rest stays in the kernel. */
  m->paused = TRUE;
  g_unix_set_fd_nonblocking (peer, TRUE, NULL);
  while (offset < total)
    {
      ssize_t n = send (peer, data + offset, total - offset, MSG_NOSIGNAL);
      if (n > 0)
        offset += (gsize) n;
      else if (errno == EAGAIN)
        break;
    }
  spin (50);
  assert_true (offset < total);
  assert_true (pb_conn_get_memory_use (m->conn) <= idle_use + 64 * 1024 + 1024);
  assert_true (unread (fd) > 0);

  /* Raw consumption through peek/consume until everything arrived. */
  guard = g_timeout_add (WAIT_MS, set_flag, &expired);
  while (received < total)
    {
      if (expired)
        fail_msg ("timed out with %zu of %zu octets consumed", received, total);
      const guint8 *p;
      gsize n = pb_conn_peek (m->conn, &p);

      if (n == 0)
        {
          assert_int_equal (pb_conn_read_status (m->conn), PB_CONN_AGAIN);
          while (offset < total)
            {
              ssize_t w = send (peer, data + offset, total - offset, MSG_NOSIGNAL);
              if (w <= 0)
                break;
              offset += (gsize) w;
            }
          g_main_context_iteration (NULL, TRUE);
          continue;
        }
      if (memcmp (p, data + received, n) != 0)
        fail_msg ("raw data differs near offset %zu", received);
      pb_conn_consume (m->conn, n);
      received += n;
    }
  g_source_remove (guard);
  assert_int_equal (pb_conn_peek (m->conn, &(const guint8 *) { NULL }), 0);
  /* Pulling AGAIN released the buffer. */
  assert_true (pb_conn_get_memory_use (m->conn) <= idle_use);
  m->paused = FALSE;
  module_close_with_peer (m, peer);
}

/* ---- 3. end of file, close, reset -------------------------------------- */

static void
test_eof_and_close (void **state)
{
  g_autoptr (GString) got = g_string_new (NULL);
  int fd, peer;
  Module *m;

  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
  write_all (peer, "QUIT\r\n", 6);
  shutdown (peer, SHUT_WR);
  WAIT_FOR (m->eof);
  assert_int_equal (m->lines->len, 1);
  assert_int_equal (pb_conn_read_status (m->conn), PB_CONN_EOF);
  assert_int_equal (m->closed, 0);

  /* The module answers and closes: the reply arrives, then our FIN. */
  pb_conn_write (m->conn, "221 bye\r\n", 9);
  pb_conn_close (m->conn);
  pb_conn_close (m->conn);
  WAIT_FOR (m->closed == 1);
  assert_null (m->error);
  WAIT_FOR (!read_some (peer, got));
  assert_string_equal (got->str, "221 bye\r\n");

  spin (20);
  assert_int_equal (m->closed, 1);
  pb_conn_write (m->conn, "late\r\n", 6);
  assert_int_equal (pb_conn_get_output_pending (m->conn), 0);
  close (peer);
  module_free (m);
}

static void
test_close_flushes_and_waits_for_peer (void **state)
{
  g_autoptr (GString) got = g_string_new (NULL);
  int fd, peer;
  Module *m;

  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
  for (int i = 0; i < 1000; i++)
    pb_conn_printf (m->conn, "line %d of the farewell\r\n", i);
  pb_conn_close (m->conn);
  /* Still lingering for the peer's FIN: `closed` is not due yet. */
  WAIT_FOR (!read_some (peer, got));
  assert_true (g_str_has_suffix (got->str, "line 999 of the farewell\r\n"));
  close (peer);
  WAIT_FOR (m->closed == 1);
  assert_null (m->error);
  module_free (m);
}

static void
test_peer_reset (void **state)
{
  for (int paused = 0; paused < 2; paused++)
    {
      struct linger lg = { 1, 0 };
      int fd, peer;
      Module *m;

      make_tcp_pair (&fd, &peer);
      m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
      assert_string_equal (pb_conn_get_peer_ip (m->conn), "127.0.0.1");
      assert_non_null (pb_conn_get_peer_address (m->conn));
      assert_non_null (pb_conn_get_local_address (m->conn));
      assert_true (g_inet_socket_address_get_port (pb_conn_get_local_address (m->conn)) != 0);
      assert_true (g_inet_socket_address_get_port (pb_conn_get_peer_address (m->conn)) != 0);
      m->paused = paused;
      /* SO_LINGER 0: close() sends a reset. */
      assert_int_equal (setsockopt (peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
      close (peer);
      WAIT_FOR_MSG (m->closed == 1, "paused %d", paused);
      assert_non_null (m->error);
      assert_true (g_error_matches (m->error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_CLOSED));
      spin (20);
      assert_int_equal (m->closed, 1);
      assert_int_equal (m->readable, 0);
      assert_int_equal (pb_conn_read_status (m->conn), PB_CONN_ERROR);
      module_free (m);
    }
}

static void
test_peer_ip_v4_mapped (void **state)
{
  struct sockaddr_in6 sin6 = { 0 };
  struct sockaddr_in sin = { 0 };
  socklen_t len = sizeof sin6;
  int off = 0;
  int lfd = socket (AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int cfd;
  int fd;
  PbConn *conn;
  GInetSocketAddress *peer;

  sin6.sin6_family = AF_INET6;
  sin6.sin6_addr = in6addr_any;
  if (lfd < 0 || setsockopt (lfd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) < 0
      || bind (lfd, (struct sockaddr *) &sin6, sizeof sin6) < 0)
    {
      if (lfd >= 0)
        close (lfd);
      skip ();
    }
  assert_int_equal (listen (lfd, 1), 0);
  assert_int_equal (getsockname (lfd, (struct sockaddr *) &sin6, &len), 0);
  sin.sin_family = AF_INET;
  sin.sin_port = sin6.sin6_port;
  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  cfd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_int_equal (connect (cfd, (struct sockaddr *) &sin, sizeof sin), 0);
  fd = accept (lfd, NULL, NULL);
  assert_true (fd >= 0);
  close (lfd);

  /* A dual-stack listener sees ::ffff:127.0.0.1; the conn reports IPv4. */
  conn = pb_conn_new_server (fd, NULL, PB_TLS_NONE);
  assert_string_equal (pb_conn_get_peer_ip (conn), "127.0.0.1");
  peer = pb_conn_get_peer_address (conn);
  assert_non_null (peer);
  assert_int_equal (g_inet_address_get_family (g_inet_socket_address_get_address (peer)), G_SOCKET_FAMILY_IPV4);
  assert_ptr_equal (peer, pb_conn_get_peer_address (conn));
  pb_conn_abort (conn, PB_CONN_ERROR_SHUTDOWN, "done");
  pb_conn_unref (conn);
  /* `closed` (with no handlers) still runs from the loop and frees it. */
  spin (10);
  close (cfd);
}

static void
test_write_to_closed_peer (void **state)
{
  g_autofree char *block = g_malloc0 (256 * 1024);
  int fd, peer;
  Module *m;

  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
  close (peer);
  pb_conn_write (m->conn, block, 256 * 1024);
  WAIT_FOR (m->closed == 1);
  assert_true (g_error_matches (m->error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_CLOSED));
  module_free (m);
}

static void
test_abort (void **state)
{
  g_autoptr (GString) got = g_string_new (NULL);
  int fd, peer;
  Module *m;

  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
  pb_conn_write (m->conn, "never sent\r\n", 12);
  pb_conn_abort (m->conn, PB_CONN_ERROR_SHUTDOWN, "stopping");
  /* Never from inside the call. */
  assert_int_equal (m->closed, 0);
  pb_conn_abort (m->conn, PB_CONN_ERROR_IO, "again");
  pb_conn_close (m->conn);
  WAIT_FOR (m->closed == 1);
  assert_true (g_error_matches (m->error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_SHUTDOWN));
  assert_string_equal (m->error->message, "stopping");
  /* Nothing queued was sent: the peer sees only the end. */
  WAIT_FOR (!read_some (peer, got));
  assert_int_equal (got->len, 0);
  spin (20);
  assert_int_equal (m->closed, 1);
  close (peer);
  module_free (m);
}

/* ---- 4. deadlines ----------------------------------------------------- */

static void
test_idle_timeout (void **state)
{
  gint64 start;
  int fd, peer;
  Module *m;

  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
  start = g_get_monotonic_time ();
  pb_conn_set_idle_timeout (m->conn, 50);
  WAIT_FOR (m->closed == 1);
  assert_true (g_error_matches (m->error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_IDLE_TIMEOUT));
  assert_true (g_get_monotonic_time () - start >= 45 * 1000);
  close (peer);
  module_free (m);
}

static gboolean
resume_module (gpointer data)
{
  Module *m = data;

  m->paused = FALSE;
  m->data = GINT_TO_POINTER (1);
  module_pull (m);
  return G_SOURCE_REMOVE;
}

static void
pause_on_work (Module *m, const char *line, gsize len)
{
  /* A 200 ms policy check: the client is not idle meanwhile. */
  if (strncmp (line, "WORK", 4) == 0)
    {
      m->paused = TRUE;
      g_timeout_add (200, resume_module, m);
    }
}

static void
test_idle_not_counted_while_busy (void **state)
{
  gint64 resumed;
  int fd, peer;
  Module *m;

  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
  m->on_line = pause_on_work;
  pb_conn_set_idle_timeout (m->conn, 50);
  write_all (peer, "WORK\r\n", 6);
  WAIT_FOR (m->data != NULL);
  resumed = g_get_monotonic_time ();
  assert_int_equal (m->closed, 0);
  WAIT_FOR (m->closed == 1);
  assert_true (g_error_matches (m->error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_IDLE_TIMEOUT));
  assert_true (g_get_monotonic_time () - resumed >= 45 * 1000);
  close (peer);
  module_free (m);
}

typedef struct {
  int fd;
  guint sent;
  guint limit;
} Ticker;

static gboolean
tick_line (gpointer data)
{
  Ticker *t = data;

  if (t->sent >= t->limit)
    return G_SOURCE_REMOVE;
  /* May tick once more after the conn has gone: no SIGPIPE, no assert. */
  if (send (t->fd, "NOOP\r\n", 6, MSG_NOSIGNAL) == 6)
    t->sent++;
  return G_SOURCE_CONTINUE;
}

static void
test_idle_rearmed_per_line (void **state)
{
  Ticker t = { .limit = 10 };
  gint64 last;
  int fd, peer;
  Module *m;

  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
  pb_conn_set_idle_timeout (m->conn, 100);
  t.fd = peer;
  g_timeout_add (30, tick_line, &t);
  /* 10 lines 30 ms apart outlast the 100 ms idle timeout. */
  WAIT_FOR (m->lines->len == 10 || m->closed);
  last = g_get_monotonic_time ();
  assert_int_equal (m->closed, 0);
  WAIT_FOR (m->closed == 1);
  assert_true (g_error_matches (m->error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_IDLE_TIMEOUT));
  assert_true (g_get_monotonic_time () - last >= 90 * 1000);
  close (peer);
  module_free (m);
}

static void
test_total_timeout (void **state)
{
  Ticker t = { .limit = 1000 };
  gint64 start = g_get_monotonic_time ();
  gint64 elapsed;
  guint tick;
  int fd, peer;
  Module *m;

  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
  pb_conn_set_idle_timeout (m->conn, 1000);
  pb_conn_set_total_timeout (m->conn, 150);
  t.fd = peer;
  tick = g_timeout_add (20, tick_line, &t);
  WAIT_FOR (m->closed == 1);
  elapsed = g_get_monotonic_time () - start;
  g_source_remove (tick);
  assert_true (g_error_matches (m->error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_TOTAL_TIMEOUT));
  assert_true (elapsed >= 145 * 1000 && elapsed < 1000 * 1000);
  assert_true (m->lines->len >= 3);
  close (peer);
  module_free (m);
}

/* ---- 5. large output to a slow reader -------------------------------- */

#define BIG_TOTAL (4 * 1024 * 1024)

typedef struct {
  guint8 *data;
  gsize written;
  GString *received;
  int peer;
  gboolean eof;
} BigTransfer;

static void
big_feed (Module *m)
{
  BigTransfer *bt = m->data;

  /* What a module sending a large body does: write while the queue is
   * short, then wait for `drained`. */
  while (bt->written < BIG_TOTAL && pb_conn_get_output_pending (m->conn) < 64 * 1024)
    {
      gsize n = MIN ((gsize) 16 * 1024, BIG_TOTAL - bt->written);
      pb_conn_write (m->conn, bt->data + bt->written, n);
      bt->written += n;
    }
}

static gboolean
slow_reader (gpointer data)
{
  BigTransfer *bt = data;
  char buf[4096];

  /* At most 32 KiB a millisecond: slower than the conn can write. */
  for (int i = 0; i < 8 && !bt->eof; i++)
    {
      ssize_t n = recv (bt->peer, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0)
        g_string_append_len (bt->received, buf, n);
      else if (n == 0)
        bt->eof = TRUE;
      else
        break;
    }
  return G_SOURCE_CONTINUE;
}

static void
test_large_output (void **state)
{
  for (int whole = 0; whole < 2; whole++)
    {
      BigTransfer bt = { 0 };
      int small = 16 * 1024;
      guint reader;
      int fd;
      Module *m;

      bt.data = g_malloc (BIG_TOTAL);
      for (gsize k = 0; k < BIG_TOTAL; k++)
        bt.data[k] = (guint8) ((k * 31 + 7) % 251);
      bt.received = g_string_sized_new (BIG_TOTAL);
      make_unix_pair (&fd, &bt.peer);
      setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
      setsockopt (bt.peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
      m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_NONE));
      m->data = &bt;
      if (whole)
        {
          pb_conn_write (m->conn, bt.data, BIG_TOTAL);
          bt.written = BIG_TOTAL;
          assert_int_equal (pb_conn_get_output_pending (m->conn), BIG_TOTAL);
        }
      else
        {
          m->on_drained = big_feed;
          big_feed (m);
        }
      reader = g_timeout_add (1, slow_reader, &bt);
      WAIT_FOR_MSG (bt.received->len == BIG_TOTAL, "whole %d: %zu of %d octets", whole, bt.received->len, BIG_TOTAL);
      assert_int_equal (bt.written, BIG_TOTAL);
      if (memcmp (bt.received->str, bt.data, BIG_TOTAL) != 0)
        fail_msg ("whole %d: the output arrived damaged", whole);
      WAIT_FOR (pb_conn_get_output_pending (m->conn) == 0 && m->drained >= 1);
      print_message ("whole %d: `drained` fired %u times\n", whole, m->drained);
      if (!whole)
        assert_true (m->drained >= 10);
      pb_conn_close (m->conn);
      WAIT_FOR (bt.eof);
      /* A client closes once it has read our FIN; until then the conn
       * lingers (at most 2 s) so that no reset can overtake the output. */
      g_source_remove (reader);
      close (bt.peer);
      WAIT_FOR (m->closed == 1);
      assert_null (m->error);
      module_free (m);
      g_string_free (bt.received, TRUE);
      g_free (bt.data);
    }
}

/* ---- 6. TLS ----------------------------------------------------------- */

static char *
make_state_dir (void)
{
  GError *error = NULL;
  char *dir = g_dir_make_tmp ("test-conn-XXXXXX", &error);

  assert_null (error);
  return dir;
}

static void
remove_state_dir (const char *dir)
{
  const char *names[] = { "tls/selfsigned.crt", "tls/selfsigned.key", "tls", "" };

  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    {
      g_autofree char *path = g_build_filename (dir, names[i], NULL);
      g_remove (path);
    }
}

static PbTlsCreds *
make_creds (char **dir_out)
{
  g_autoptr (GError) error = NULL;
  char *dir = make_state_dir ();
  PbTlsCreds *creds = pb_tls_creds_ensure_self_signed (dir, "mail.example.test", &error);

  assert_null (error);
  assert_non_null (creds);
  *dir_out = dir;
  return creds;
}

static void
test_self_signed (void **state)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = make_state_dir ();
  g_autofree char *tls_dir = g_build_filename (dir, "tls", NULL);
  g_autofree char *crt = g_build_filename (tls_dir, "selfsigned.crt", NULL);
  g_autofree char *key = g_build_filename (tls_dir, "selfsigned.key", NULL);
  g_autofree char *pem1 = NULL;
  g_autofree char *pem2 = NULL;
  g_autofree char *desc1 = NULL;
  g_autofree char *desc2 = NULL;
  g_autofree char *year = NULL;
  g_autoptr (GDateTime) now = g_date_time_new_now_utc ();
  PbTlsCreds *creds;
  struct stat st;

  creds = pb_tls_creds_ensure_self_signed (dir, "mail.example.test", &error);
  assert_null (error);
  assert_non_null (creds);
  assert_int_equal (stat (tls_dir, &st), 0);
  assert_int_equal (st.st_mode & 0777, 0700);
  assert_int_equal (stat (key, &st), 0);
  assert_int_equal (st.st_mode & 0777, 0600);
  desc1 = pb_tls_creds_describe (creds);
  year = g_strdup_printf ("CN=mail.example.test, expires %d-", g_date_time_get_year (now) + 10);
  if (!g_str_has_prefix (desc1, year))
    fail_msg ("description \"%s\" does not start with \"%s\"", desc1, year);
  assert_true (g_file_get_contents (crt, &pem1, NULL, NULL));
  assert_non_null (strstr (pem1, "BEGIN CERTIFICATE"));

  /* The second start loads the same pair. */
  pb_tls_creds_unref (creds);
  creds = pb_tls_creds_ensure_self_signed (dir, "mail.example.test", &error);
  assert_null (error);
  assert_true (g_file_get_contents (crt, &pem2, NULL, NULL));
  assert_string_equal (pem1, pem2);
  desc2 = pb_tls_creds_describe (creds);
  assert_string_equal (desc1, desc2);
  pb_tls_creds_unref (creds);
  remove_state_dir (dir);
}

static void
test_creds_errors (void **state)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir_a = NULL;
  g_autofree char *dir_b = NULL;
  g_autofree char *crt_a = NULL;
  g_autofree char *key_b = NULL;
  PbTlsCreds *a;
  PbTlsCreds *b;

  assert_null (pb_tls_creds_load ("/nonexistent/x.pem", "/nonexistent/x.key", &error));
  assert_non_null (error);
  if (!g_str_has_prefix (error->message, "cannot load TLS certificate /nonexistent/x.pem: "))
    fail_msg ("unexpected message: %s", error->message);
  g_clear_error (&error);

  a = make_creds (&dir_a);
  b = make_creds (&dir_b);
  crt_a = g_build_filename (dir_a, "tls", "selfsigned.crt", NULL);
  key_b = g_build_filename (dir_b, "tls", "selfsigned.key", NULL);
  assert_null (pb_tls_creds_load (crt_a, key_b, &error));
  assert_non_null (strstr (error->message, "does not match"));
  g_clear_error (&error);
  assert_null (pb_tls_creds_load (key_b, key_b, &error));
  assert_non_null (strstr (error->message, "cannot load TLS certificate"));
  g_clear_error (&error);
  assert_null (pb_tls_creds_load (crt_a, crt_a, &error));
  assert_non_null (strstr (error->message, "cannot load TLS key"));

  pb_tls_creds_unref (a);
  pb_tls_creds_unref (b);
  remove_state_dir (dir_a);
  remove_state_dir (dir_b);
}

typedef struct {
  guint calls;
  GError *error;
} TlsDone;

static void
tls_done (PbConn *conn, const GError *error, gpointer user_data)
{
  TlsDone *d = user_data;

  d->calls++;
  if (error != NULL)
    d->error = g_error_copy (error);
}

static void
test_implicit_tls (void **state)
{
  g_autofree char *dir = NULL;
  g_autofree char *desc_s = NULL;
  g_autofree char *desc_c = NULL;
  PbTlsCreds *creds = make_creds (&dir);
  TlsDone done = { 0 };
  gsize use;
  int sfd, cfd;
  Module *server;
  Module *client;

  make_tcp_pair (&sfd, &cfd);
  server = module_new (pb_conn_new_server (sfd, creds, PB_TLS_IMPLICIT));
  server->reply = "250";
  /* The greeting waits for the handshake. */
  pb_conn_write (server->conn, "220 hello\r\n", 11);
  client = module_new (pb_conn_new_client (cfd));
  assert_false (pb_conn_can_start_tls (client->conn));
  pb_conn_start_tls_client (client->conn, "mail.example.test", FALSE, tls_done, &done);
  WAIT_FOR (done.calls == 1);
  assert_null (done.error);
  assert_true (pb_conn_is_tls (client->conn));
  WAIT_FOR (client->lines->len == 1);
  assert_string_equal (g_ptr_array_index (client->lines, 0), "220 hello\r\n");
  assert_true (pb_conn_is_tls (server->conn));
  assert_false (pb_conn_can_start_tls (server->conn));

  pb_conn_write (client->conn, "PING\r\n", 6);
  WAIT_FOR (client->lines->len == 2);
  assert_string_equal (g_ptr_array_index (server->lines, 0), "PING\r\n");
  assert_string_equal (g_ptr_array_index (client->lines, 1), "250 PING\r\n");

  desc_s = pb_conn_get_tls_description (server->conn);
  desc_c = pb_conn_get_tls_description (client->conn);
  assert_non_null (desc_s);
  assert_non_null (desc_c);
  assert_string_equal (desc_s, desc_c);
  assert_true (g_str_has_prefix (desc_s, "TLS1."));
  print_message ("TLS: %s\n", desc_s);
  assert_string_equal (pb_conn_get_peer_ip (server->conn), "127.0.0.1");
  use = pb_conn_get_memory_use (server->conn);
  print_message ("memory of an idle TLS connection (estimate): %zu octets\n", use);

  /* The client closes (close_notify, FIN); the server sees EOF and closes too. */
  pb_conn_close (client->conn);
  WAIT_FOR (server->eof);
  pb_conn_close (server->conn);
  WAIT_FOR (server->closed == 1 && client->closed == 1);
  assert_null (server->error);
  assert_null (client->error);
  module_free (server);
  module_free (client);
  pb_tls_creds_unref (creds);
  remove_state_dir (dir);
}

typedef struct {
  TlsDone done;
  gboolean buffered_injection;   /* the injected line really was in the buffer */
} StartTls;

static void
server_tls_done (PbConn *conn, const GError *error, gpointer user_data)
{
  Module *m = user_data;
  StartTls *st = m->data;

  tls_done (conn, error, &st->done);
  m->paused = FALSE;
  module_pull (m);
}

static void
server_on_line (Module *m, const char *line, gsize len)
{
  StartTls *st = m->data;
  const guint8 *data;
  gsize n;

  if (strcmp (g_ptr_array_index (m->lines, m->lines->len - 1), "STARTTLS\r\n") != 0)
    return;
  n = pb_conn_peek (m->conn, &data);
  st->buffered_injection = n > 0 && g_strstr_len ((const char *) data, n, "INJECTED") != NULL;
  assert_true (pb_conn_can_start_tls (m->conn));
  pb_conn_write (m->conn, "220 go ahead\r\n", 14);
  m->paused = TRUE;
  pb_conn_start_tls (m->conn, server_tls_done, m);
}

static void
client_on_line (Module *m, const char *line, gsize len)
{
  if (strncmp (line, "220 ", 4) == 0)
    {
      m->paused = TRUE;
      pb_conn_start_tls_client (m->conn, "mail.example.test", FALSE, tls_done, m->data);
    }
}

static void
test_starttls_injection (void **state)
{
  g_autofree char *dir = NULL;
  g_autofree char *desc = NULL;
  PbTlsCreds *creds = make_creds (&dir);
  StartTls st = { { 0 }, FALSE };
  TlsDone client_done = { 0 };
  int sfd, cfd;
  Module *server;
  Module *client;

  make_tcp_pair (&sfd, &cfd);
  server = module_new (pb_conn_new_server (sfd, creds, PB_TLS_NONE));
  server->data = &st;
  server->on_line = server_on_line;
  assert_true (pb_conn_can_start_tls (server->conn));
  assert_false (pb_conn_is_tls (server->conn));
  assert_null (pb_conn_get_tls_description (server->conn));
  client = module_new (pb_conn_new_client (cfd));
  client->data = &client_done;
  client->on_line = client_on_line;

  /* RFC 3207 §4.2's attack: a command pipelined after STARTTLS in clear. */
  pb_conn_write (client->conn, "STARTTLS\r\nINJECTED\r\n", 20);
  WAIT_FOR (st.done.calls == 1 && client_done.calls == 1);
  assert_null (st.done.error);
  assert_null (client_done.error);
  assert_true (st.buffered_injection);
  assert_true (pb_conn_is_tls (server->conn));
  assert_false (pb_conn_can_start_tls (server->conn));

  client->paused = FALSE;
  pb_conn_write (client->conn, "AFTER\r\n", 7);
  WAIT_FOR (server->lines->len >= 2);
  spin (20);
  assert_int_equal (server->lines->len, 2);
  assert_string_equal (g_ptr_array_index (server->lines, 0), "STARTTLS\r\n");
  assert_string_equal (g_ptr_array_index (server->lines, 1), "AFTER\r\n");
  desc = pb_conn_get_tls_description (server->conn);
  assert_non_null (desc);

  pb_conn_close (server->conn);
  module_pull (client);
  WAIT_FOR (client->eof);
  pb_conn_close (client->conn);
  WAIT_FOR (server->closed == 1 && client->closed == 1);
  assert_null (server->error);
  assert_null (client->error);
  module_free (server);
  module_free (client);
  pb_tls_creds_unref (creds);
  remove_state_dir (dir);
}

/* ---- 7. TLS failures -------------------------------------------------- */

static void
test_tls_garbage (void **state)
{
  g_autofree char *dir = NULL;
  PbTlsCreds *creds = make_creds (&dir);

  for (int hang_up = 0; hang_up < 2; hang_up++)
    {
      int sfd, cfd;
      Module *server;

      make_tcp_pair (&sfd, &cfd);
      server = module_new (pb_conn_new_server (sfd, creds, PB_TLS_IMPLICIT));
      write_all (cfd, "EHLO not-tls.example\r\nMAIL FROM:<x@y>\r\n", 39);
      if (hang_up)
        shutdown (cfd, SHUT_WR);
      WAIT_FOR_MSG (server->closed == 1, "hang_up %d", hang_up);
      if (!g_error_matches (server->error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_TLS))
        fail_msg ("hang_up %d: closed with %s", hang_up, server->error ? server->error->message : "no error");
      assert_int_equal (server->lines->len, 0);
      assert_int_equal (server->readable, 0);
      assert_false (pb_conn_is_tls (server->conn));
      close (cfd);
      module_free (server);
    }
  pb_tls_creds_unref (creds);
  remove_state_dir (dir);
}

static void
test_tls_verify_rejects_self_signed (void **state)
{
  g_autofree char *dir = NULL;
  PbTlsCreds *creds = make_creds (&dir);
  TlsDone done = { 0 };
  int sfd, cfd;
  Module *server;
  Module *client;

  make_tcp_pair (&sfd, &cfd);
  server = module_new (pb_conn_new_server (sfd, creds, PB_TLS_IMPLICIT));
  client = module_new (pb_conn_new_client (cfd));
  pb_conn_start_tls_client (client->conn, "mail.example.test", TRUE, tls_done, &done);
  WAIT_FOR (client->closed == 1);
  assert_int_equal (done.calls, 1);
  assert_true (g_error_matches (done.error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_TLS));
  assert_true (g_error_matches (client->error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_TLS));
  WAIT_FOR (server->closed == 1);
  assert_non_null (server->error);
  g_clear_error (&done.error);
  module_free (server);
  module_free (client);
  pb_tls_creds_unref (creds);
  remove_state_dir (dir);
}

static void
test_starttls_after_close (void **state)
{
  g_autofree char *dir = NULL;
  PbTlsCreds *creds = make_creds (&dir);
  TlsDone done = { 0 };
  int fd, peer;
  Module *m;

  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, creds, PB_TLS_NONE));
  pb_conn_close (m->conn);
  assert_false (pb_conn_can_start_tls (m->conn));
  pb_conn_start_tls (m->conn, tls_done, &done);
  close (peer);
  WAIT_FOR (m->closed == 1);
  /* `done` came first, and did not claim a handshake that never ran. */
  assert_int_equal (done.calls, 1);
  assert_true (g_error_matches (done.error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_CLOSED));
  assert_false (pb_conn_is_tls (m->conn));
  g_clear_error (&done.error);
  module_free (m);
  pb_tls_creds_unref (creds);
  remove_state_dir (dir);
}

static void
test_implicit_without_creds (void **state)
{
  int fd, peer;
  Module *m;

  make_unix_pair (&fd, &peer);
  m = module_new (pb_conn_new_server (fd, NULL, PB_TLS_IMPLICIT));
  WAIT_FOR (m->closed == 1);
  assert_true (g_error_matches (m->error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_TLS));
  close (peer);
  module_free (m);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_lines),
    cmocka_unit_test (test_pipelined_batch),
    cmocka_unit_test (test_too_long),
    cmocka_unit_test (test_line_limits),
    cmocka_unit_test (test_back_pressure),
    cmocka_unit_test (test_eof_and_close),
    cmocka_unit_test (test_close_flushes_and_waits_for_peer),
    cmocka_unit_test (test_peer_reset),
    cmocka_unit_test (test_peer_ip_v4_mapped),
    cmocka_unit_test (test_write_to_closed_peer),
    cmocka_unit_test (test_abort),
    cmocka_unit_test (test_idle_timeout),
    cmocka_unit_test (test_idle_not_counted_while_busy),
    cmocka_unit_test (test_idle_rearmed_per_line),
    cmocka_unit_test (test_total_timeout),
    cmocka_unit_test (test_large_output),
    cmocka_unit_test (test_self_signed),
    cmocka_unit_test (test_creds_errors),
    cmocka_unit_test (test_implicit_tls),
    cmocka_unit_test (test_starttls_injection),
    cmocka_unit_test (test_tls_garbage),
    cmocka_unit_test (test_tls_verify_rejects_self_signed),
    cmocka_unit_test (test_starttls_after_close),
    cmocka_unit_test (test_implicit_without_creds),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
