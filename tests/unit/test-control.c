/* SPDX-License-Identifier: MIT */
/* Tests of the control socket server, control requests and the `pillarbox` command against it. */

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include <pillarbox/pillarbox.h>
#include "pb-private.h"

#ifndef TOP_BUILDDIR
#define TOP_BUILDDIR "."
#endif

/* Every case is killed (SIGALRM) if it runs longer than this. */
#define CASE_TIMEOUT_S 60
/* How long one wait on the loop may take before the case fails. */
#define WAIT_MS 10000

/* ---- log capture: warnings and criticals fail the case unless expected - */

static const char *expected_log;
static guint expected_log_hits;
static guint unexpected_logs;

static GLogWriterOutput
capture_log (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer user_data)
{
  const char *message = "";

  for (gsize i = 0; i < n_fields; i++)
    if (g_strcmp0 (fields[i].key, "MESSAGE") == 0 && fields[i].length < 0)
      message = fields[i].value;

  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING))
    {
      if (expected_log != NULL && strstr (message, expected_log) != NULL)
        expected_log_hits++;
      else
        {
          fprintf (stderr, "unexpected log message: %s\n", message);
          unexpected_logs++;
        }
    }
  else if (g_getenv ("TEST_VERBOSE") != NULL)
    fprintf (stderr, "log: %s\n", message);
  return G_LOG_WRITER_HANDLED;
}

/* ---- the commands the test server offers -------------------------------- */

typedef struct {
  char *dir;
  char *path;
  PbControlServer *server;
  GPtrArray *entries;       /* PbCommandEntry *, sorted by name */
  char *login_input;        /* what "login" received */
  guint login_calls;
  gboolean echo_saw_input;
  GPtrArray *held;          /* requests "hang" keeps */
} Fixture;

/* How many "later" answers have been sent (the timer outlives its client). */
static guint later_replies;

static char *
join_args (PbControlRequest *request)
{
  return g_strjoinv (" ", (char **) pb_control_request_get_args (request));
}

static GVariant *
args_data (PbControlRequest *request)
{
  const char *const *args = pb_control_request_get_args (request);
  GVariantDict dict;

  g_variant_dict_init (&dict, NULL);
  g_variant_dict_insert_value (&dict, "args", g_variant_new_strv (args, -1));
  g_variant_dict_insert (&dict, "count", "i", (int) g_strv_length ((char **) args));
  return g_variant_dict_end (&dict);
}

static void
cmd_echo (PbControlRequest *request, gpointer user_data)
{
  Fixture *f = user_data;
  char *text = join_args (request);

  if (pb_control_request_get_input (request) != NULL)
    f->echo_saw_input = TRUE;
  pb_control_request_reply (request, args_data (request), text);
  g_free (text);
}

static gboolean
later_cb (gpointer user_data)
{
  PbControlRequest *request = user_data;
  char *joined = join_args (request);
  char *text = g_strdup_printf ("later: %s", joined);

  later_replies++;
  pb_control_request_reply (request, args_data (request), text);
  g_free (text);
  g_free (joined);
  pb_control_request_unref (request);
  return G_SOURCE_REMOVE;
}

static void
cmd_later (PbControlRequest *request, gpointer user_data)
{
  g_timeout_add (20, later_cb, pb_control_request_ref (request));
}

static void
cmd_login (PbControlRequest *request, gpointer user_data)
{
  Fixture *f = user_data;

  f->login_calls++;
  g_free (f->login_input);
  f->login_input = g_strdup (pb_control_request_get_input (request));
  pb_control_request_reply (request, NULL, "logged in");
}

static void
cmd_hang (PbControlRequest *request, gpointer user_data)
{
  Fixture *f = user_data;

  g_ptr_array_add (f->held, pb_control_request_ref (request));
}

static void
cmd_fail (PbControlRequest *request, gpointer user_data)
{
  const char *const *args = pb_control_request_get_args (request);

  pb_control_request_fail (request, "no such user: %s", args[0] != NULL ? args[0] : "(none)");
}

/* Stops the server from inside a handler, as a shutdown command might. */
static void
cmd_stop (PbControlRequest *request, gpointer user_data)
{
  Fixture *f = user_data;

  pb_control_server_free (f->server);
  f->server = NULL;
  pb_control_request_reply (request, NULL, "stopped");
}

static PbCommandEntry *
entry_new (Fixture *f, const char *name, const char *usage, PbControlFunc func,
           gboolean reads_input, const char *provider)
{
  PbCommandEntry *entry = g_new0 (PbCommandEntry, 1);

  entry->spec.struct_size = sizeof entry->spec;
  entry->spec.name = name;
  entry->spec.summary = "a test command";
  entry->spec.usage = usage;
  entry->spec.func = func;
  entry->spec.user_data = f;
  entry->spec.reads_input = reads_input;
  entry->provider = provider;
  return entry;
}

static const PbCommandEntry *
fixture_lookup (const char *name, gpointer user_data)
{
  Fixture *f = user_data;

  for (guint i = 0; i < f->entries->len; i++)
    {
      const PbCommandEntry *entry = g_ptr_array_index (f->entries, i);

      if (g_str_equal (entry->spec.name, name))
        return entry;
    }
  return NULL;
}

static GPtrArray *
fixture_list (gpointer user_data)
{
  Fixture *f = user_data;
  GPtrArray *list = g_ptr_array_new ();

  for (guint i = 0; i < f->entries->len; i++)
    g_ptr_array_add (list, g_ptr_array_index (f->entries, i));
  return list;
}

static void
remove_tree (const char *dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    {
      char *p = g_build_filename (dir, name, NULL);

      if (g_file_test (p, G_FILE_TEST_IS_DIR) && !g_file_test (p, G_FILE_TEST_IS_SYMLINK))
        remove_tree (p);
      else
        g_unlink (p);
      g_free (p);
    }
  if (d != NULL)
    g_dir_close (d);
  g_rmdir (dir);
}

static int
setup (void **state)
{
  Fixture *f = g_new0 (Fixture, 1);
  GError *error = NULL;

  alarm (CASE_TIMEOUT_S);
  expected_log = NULL;
  expected_log_hits = 0;
  unexpected_logs = 0;

  f->dir = g_dir_make_tmp ("test-control-XXXXXX", &error);
  assert_non_null (f->dir);
  f->path = g_build_filename (f->dir, PB_CONTROL_SOCKET_NAME, NULL);
  f->held = g_ptr_array_new ();
  f->entries = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (f->entries, entry_new (f, "echo", "echo [WORD...]", cmd_echo, FALSE, "test"));
  g_ptr_array_add (f->entries, entry_new (f, "fail", "fail NAME", cmd_fail, FALSE, "test"));
  g_ptr_array_add (f->entries, entry_new (f, "hang", "hang", cmd_hang, FALSE, "test"));
  g_ptr_array_add (f->entries, entry_new (f, "later", "later [WORD...]", cmd_later, FALSE, "test"));
  g_ptr_array_add (f->entries, entry_new (f, "login", "login NAME", cmd_login, TRUE, "fixture"));
  g_ptr_array_add (f->entries, entry_new (f, "stop", "stop", cmd_stop, FALSE, "test"));
  g_ptr_array_add (f->entries, entry_new (f, "passwd", "passwd NAME", cmd_login, TRUE, "fixture"));
  *state = f;
  return 0;
}

static void
start_server (Fixture *f)
{
  GError *error = NULL;

  f->server = pb_control_server_new (f->path, fixture_lookup, fixture_list, f, &error);
  if (error != NULL)
    fail_msg ("pb_control_server_new: %s", error->message);
  assert_non_null (f->server);
}

/* Lets pending main-loop work (timers, late replies) run for MS milliseconds. */
static void
spin (guint ms)
{
  gint64 end = g_get_monotonic_time () + (gint64) ms * 1000;

  while (g_get_monotonic_time () < end)
    {
      g_main_context_iteration (NULL, FALSE);
      g_usleep (1000);
    }
}

static int
teardown (void **state)
{
  Fixture *f = *state;

  pb_control_server_free (f->server);
  spin (50);
  for (guint i = 0; i < f->held->len; i++)
    {
      PbControlRequest *request = g_ptr_array_index (f->held, i);

      pb_control_request_reply (request, NULL, "released");
      pb_control_request_unref (request);
    }
  g_ptr_array_unref (f->held);
  g_ptr_array_unref (f->entries);
  remove_tree (f->dir);
  g_free (f->dir);
  g_free (f->path);
  g_free (f->login_input);
  g_free (f);
  alarm (0);
  assert_int_equal (unexpected_logs, 0);
  return 0;
}

/* ---- waiting on the loop ------------------------------------------------ */

typedef gboolean (*Condition) (gpointer data);

static gboolean
deadline_cb (gpointer user_data)
{
  *(gboolean *) user_data = TRUE;
  return G_SOURCE_REMOVE;
}

/* Runs the default main context until COND holds; FALSE on timeout. */
static gboolean
wait_until (Condition cond, gpointer data)
{
  gboolean expired = FALSE;
  guint id = g_timeout_add (WAIT_MS, deadline_cb, &expired);

  while (!cond (data) && !expired)
    g_main_context_iteration (NULL, TRUE);
  if (!expired)
    g_source_remove (id);
  return cond (data);
}

/* ---- a blocking client in a thread, so the server's loop runs meanwhile -- */

typedef struct {
  char *path;
  GString *send;
  guint expect_lines;       /* stop reading after this many */
  gboolean shutdown_write;  /* half-close after sending */
  gboolean close_at_once;   /* close after sending, without reading */
  gboolean byte_at_a_time;  /* send one byte per write, with pauses */
  GPtrArray *lines;         /* received, without newlines */
  gboolean eof;             /* the server closed */
  int connect_errno;
  gint done;
} Client;

static int
connect_unix (const char *path)
{
  struct sockaddr_un sa;
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  memset (&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  g_strlcpy (sa.sun_path, path, sizeof sa.sun_path);
  if (connect (fd, (struct sockaddr *) &sa, sizeof sa) < 0)
    {
      int saved = errno;

      close (fd);
      errno = saved;
      return -1;
    }
  return fd;
}

static void
set_timeouts (int fd, int seconds)
{
  struct timeval tv = { .tv_sec = seconds, .tv_usec = 0 };

  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Reads lines from FD until N lines, EOF, an error or the receive timeout. */
static void
read_lines (int fd, guint n, GPtrArray *lines, gboolean *eof)
{
  GString *buf = g_string_new (NULL);
  char chunk[4096];

  while (lines->len < n)
    {
      char *nl;
      ssize_t got;

      while (lines->len < n && (nl = memchr (buf->str, '\n', buf->len)) != NULL)
        {
          g_ptr_array_add (lines, g_strndup (buf->str, (gsize) (nl - buf->str)));
          g_string_erase (buf, 0, nl - buf->str + 1);
        }
      if (lines->len >= n)
        break;
      got = recv (fd, chunk, sizeof chunk, 0);
      if (got < 0 && errno == EINTR)
        continue;
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        break; /* nothing within the receive timeout */
      if (got <= 0)
        {
          *eof = TRUE;
          break;
        }
      g_string_append_len (buf, chunk, got);
    }
  g_string_free (buf, TRUE);
}

static gpointer
client_thread (gpointer data)
{
  Client *c = data;
  int fd = connect_unix (c->path);

  if (fd < 0)
    c->connect_errno = errno;
  else
    {
      gsize off = 0;

      set_timeouts (fd, 5);
      while (off < c->send->len)
        {
          gsize len = c->byte_at_a_time ? 1 : c->send->len - off;
          ssize_t n = send (fd, c->send->str + off, len, MSG_NOSIGNAL);

          if (c->byte_at_a_time)
            g_usleep (200);

          if (n < 0 && errno == EINTR)
            continue;
          if (n <= 0)
            break; /* the server may close on us (oversize line) */
          off += (gsize) n;
        }
      if (c->shutdown_write)
        shutdown (fd, SHUT_WR);
      if (!c->close_at_once)
        {
          read_lines (fd, c->expect_lines, c->lines, &c->eof);
          if (!c->eof)
            {
              /* See whether anything else arrives, briefly. */
              GPtrArray *extra = g_ptr_array_new_with_free_func (g_free);
              struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };

              setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
              read_lines (fd, 1, extra, &c->eof);
              for (guint i = 0; i < extra->len; i++)
                g_ptr_array_add (c->lines, g_strdup (g_ptr_array_index (extra, i)));
              g_ptr_array_unref (extra);
            }
        }
      close (fd);
    }
  g_atomic_int_set (&c->done, 1);
  g_main_context_wakeup (NULL);
  return NULL;
}

static gboolean
client_is_done (gpointer data)
{
  return g_atomic_int_get (&((Client *) data)->done) != 0;
}

static Client *
client_new (Fixture *f, const char *send, guint expect_lines)
{
  Client *c = g_new0 (Client, 1);

  c->path = g_strdup (f->path);
  c->send = g_string_new (send);
  c->expect_lines = expect_lines;
  c->lines = g_ptr_array_new_with_free_func (g_free);
  return c;
}

static void
client_run (Client *c)
{
  GThread *thread = g_thread_new ("test-client", client_thread, c);

  if (!wait_until (client_is_done, c))
    fail_msg ("client did not finish in time");
  g_thread_join (thread);
}

static void
client_free (Client *c)
{
  g_free (c->path);
  g_string_free (c->send, TRUE);
  g_ptr_array_unref (c->lines);
  g_free (c);
}

/* Sends RAW on a new connection and returns the EXPECT response lines. */
static Client *
round_trip (Fixture *f, const char *raw, guint expect)
{
  Client *c = client_new (f, raw, expect);

  client_run (c);
  assert_int_equal (c->connect_errno, 0);
  if (c->lines->len != expect)
    fail_msg ("expected %u response lines, got %u", expect, c->lines->len);
  return c;
}

/* ---- checking responses ------------------------------------------------- */

static JsonNode *
parse_line (const char *line, guint index)
{
  GError *error = NULL;
  JsonNode *node = json_from_string (line, &error);

  if (node == NULL || !JSON_NODE_HOLDS_OBJECT (node))
    fail_msg ("response %u is not a JSON object: %s (%s)", index, line,
              error != NULL ? error->message : "wrong type");
  return node;
}

static void
check_ok (const char *line, guint index, const char *text)
{
  JsonNode *node = parse_line (line, index);
  JsonObject *o = json_node_get_object (node);

  if (!json_object_get_boolean_member (o, "ok"))
    fail_msg ("response %u: expected ok, got %s", index, line);
  if (text != NULL && g_strcmp0 (json_object_get_string_member (o, "text"), text) != 0)
    fail_msg ("response %u: expected text '%s', got %s", index, text, line);
  assert_true (json_object_has_member (o, "data"));
  json_node_unref (node);
}

static void
check_error (const char *line, guint index, const char *prefix)
{
  JsonNode *node = parse_line (line, index);
  JsonObject *o = json_node_get_object (node);
  const char *error;

  if (json_object_get_boolean_member (o, "ok"))
    fail_msg ("response %u: expected an error, got %s", index, line);
  error = json_object_get_string_member (o, "error");
  if (error == NULL || !g_str_has_prefix (error, prefix))
    fail_msg ("response %u: expected error '%s...', got %s", index, prefix, line);
  json_node_unref (node);
}

/* Checks that DATA is {"args": [ARGS...], "count": N} as echo and later make it. */
static void
check_args_object (JsonNode *data, const char *const *args)
{
  JsonObject *o;
  JsonArray *a;
  guint n = g_strv_length ((char **) args);

  assert_non_null (data);
  assert_true (JSON_NODE_HOLDS_OBJECT (data));
  o = json_node_get_object (data);
  assert_int_equal (json_object_get_size (o), 2);
  assert_int_equal (json_object_get_int_member (o, "count"), n);
  a = json_object_get_array_member (o, "args");
  assert_non_null (a);
  assert_int_equal (json_array_get_length (a), n);
  for (guint i = 0; i < n; i++)
    assert_string_equal (json_array_get_string_element (a, i), args[i]);
}

/* The same for the "data" member of a response line. */
static void
check_args_data (const char *line, const char *const *args)
{
  JsonNode *node = json_from_string (line, NULL);

  assert_non_null (node);
  check_args_object (json_object_get_member (json_node_get_object (node), "data"), args);
  json_node_unref (node);
}

/* ---- the socket file ---------------------------------------------------- */

static void
test_socket_mode_and_live_refusal (void **state)
{
  Fixture *f = *state;
  struct stat st;
  GError *error = NULL;
  PbControlServer *second;
  char *expected;
  GDir *dir;
  Client *c;

  start_server (f);
  assert_int_equal (lstat (f->path, &st), 0);
  assert_true (S_ISSOCK (st.st_mode));
  assert_int_equal (st.st_mode & 07777, 0600);

  /* No temporary name left behind. */
  dir = g_dir_open (f->dir, 0, NULL);
  assert_string_equal (g_dir_read_name (dir), PB_CONTROL_SOCKET_NAME);
  assert_null (g_dir_read_name (dir));
  g_dir_close (dir);

  second = pb_control_server_new (f->path, fixture_lookup, fixture_list, f, &error);
  assert_null (second);
  assert_non_null (error);
  expected = g_strdup_printf ("another pillarboxd is already running (control socket %s is live)", f->path);
  assert_string_equal (error->message, expected);
  g_free (expected);
  g_clear_error (&error);

  /* The first one is unharmed. */
  c = round_trip (f, "{\"command\":\"echo\",\"args\":[\"still\",\"here\"]}\n", 1);
  check_ok (g_ptr_array_index (c->lines, 0), 0, "still here");
  client_free (c);

  pb_control_server_free (f->server);
  f->server = NULL;
  assert_int_equal (lstat (f->path, &st), -1);
  assert_int_equal (errno, ENOENT);
}

static void
test_stale_socket_replaced (void **state)
{
  Fixture *f = *state;
  struct sockaddr_un sa;
  struct stat st;
  int fd;
  Client *c;

  /* A socket file nobody listens on, as a crashed daemon leaves it. */
  fd = socket (AF_UNIX, SOCK_STREAM, 0);
  memset (&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  g_strlcpy (sa.sun_path, f->path, sizeof sa.sun_path);
  assert_int_equal (bind (fd, (struct sockaddr *) &sa, sizeof sa), 0);
  close (fd);
  assert_int_equal (lstat (f->path, &st), 0);

  start_server (f);
  assert_int_equal (lstat (f->path, &st), 0);
  assert_int_equal (st.st_mode & 07777, 0600);
  c = round_trip (f, "{\"command\":\"echo\",\"args\":[\"fresh\"]}\n", 1);
  check_ok (g_ptr_array_index (c->lines, 0), 0, "fresh");
  client_free (c);
}

static void
test_not_a_socket_refused (void **state)
{
  Fixture *f = *state;
  GError *error = NULL;
  char *contents = NULL;

  assert_true (g_file_set_contents (f->path, "keep me", -1, NULL));
  assert_null (pb_control_server_new (f->path, fixture_lookup, fixture_list, f, &error));
  assert_non_null (error);
  assert_non_null (strstr (error->message, "is not a socket"));
  g_clear_error (&error);
  assert_true (g_file_get_contents (f->path, &contents, NULL, NULL));
  assert_string_equal (contents, "keep me");
  g_free (contents);
}

/* ---- the protocol ------------------------------------------------------- */

static void
test_round_trip (void **state)
{
  Fixture *f = *state;
  const char *requests =
    "{\"command\":\"echo\",\"args\":[\"a\",\"b c\"]}\n"                  /* 0 */
    "{\"command\":\"later\",\"args\":[\"x\"]}\n"                         /* 1 */
    "\n"                                                                 /* (ignored) */
    "{\"command\":\"help\"}\n"                                           /* 2 */
    "{\"command\":\"help\",\"args\":[\"login\"]}\n"                      /* 3 */
    "{\"command\":\"frob\"}\n"                                           /* 4 */
    "{not json\n"                                                        /* 5 */
    "{\"args\":[\"x\"]}\n"                                               /* 6 */
    "{\"command\":\"echo\",\"args\":[\"a\",1]}\n"                        /* 7 */
    "[1,2]\n"                                                            /* 8 */
    "{\"command\":\"login\",\"args\":[\"bob\"],\"input\":\"hunter2\"}\r\n" /* 9 */
    "{\"command\":\"echo\",\"input\":\"not for echo\"}\n"                /* 10 */
    "{\"command\":\"fail\",\"args\":[\"bob\"]}\n"                        /* 11 */
    "{\"command\":\"help\",\"args\":[\"nope\"]}\n"                       /* 12 */
    "{\"command\":\"echo\",\"args\":[\"after\",\"errors\"]}\n";          /* 13 */
  Client *c;
  JsonNode *node;
  JsonArray *commands;
  gboolean seen_echo = FALSE, seen_later = FALSE, seen_login = FALSE, seen_help = FALSE;

  start_server (f);
  c = round_trip (f, requests, 14);

  check_ok (g_ptr_array_index (c->lines, 0), 0, "a b c");
  check_args_data (g_ptr_array_index (c->lines, 0), (const char *const[]) { "a", "b c", NULL });

  check_ok (g_ptr_array_index (c->lines, 1), 1, "later: x");
  check_args_data (g_ptr_array_index (c->lines, 1), (const char *const[]) { "x", NULL });

  check_ok (g_ptr_array_index (c->lines, 2), 2, NULL);
  node = json_from_string (g_ptr_array_index (c->lines, 2), NULL);
  assert_non_null (strstr (json_object_get_string_member (json_node_get_object (node), "text"), "echo"));
  assert_non_null (strstr (json_object_get_string_member (json_node_get_object (node), "text"), "[fixture]"));
  commands = json_object_get_array_member (json_node_get_object (node), "data");
  assert_non_null (commands);
  for (guint i = 0; i < json_array_get_length (commands); i++)
    {
      JsonObject *cmd = json_array_get_object_element (commands, i);
      const char *name = json_object_get_string_member (cmd, "name");

      assert_non_null (json_object_get_string_member (cmd, "summary"));
      assert_non_null (json_object_get_string_member (cmd, "usage"));
      if (g_str_equal (name, "echo"))
        {
          seen_echo = TRUE;
          assert_string_equal (json_object_get_string_member (cmd, "provider"), "test");
          assert_false (json_object_get_boolean_member (cmd, "reads_input"));
        }
      else if (g_str_equal (name, "later"))
        {
          seen_later = TRUE;
          assert_string_equal (json_object_get_string_member (cmd, "provider"), "test");
        }
      else if (g_str_equal (name, "login"))
        {
          seen_login = TRUE;
          assert_string_equal (json_object_get_string_member (cmd, "provider"), "fixture");
          assert_true (json_object_get_boolean_member (cmd, "reads_input"));
          assert_string_equal (json_object_get_string_member (cmd, "usage"), "login NAME");
        }
      else if (g_str_equal (name, "help"))
        {
          seen_help = TRUE;
          assert_string_equal (json_object_get_string_member (cmd, "provider"), "core");
        }
    }
  assert_true (seen_echo && seen_later && seen_login && seen_help);
  json_node_unref (node);

  check_ok (g_ptr_array_index (c->lines, 3), 3, NULL);
  assert_non_null (strstr (g_ptr_array_index (c->lines, 3), "usage: pillarbox login NAME"));

  check_error (g_ptr_array_index (c->lines, 4), 4, "unknown command 'frob' (try 'pillarbox help')");
  check_error (g_ptr_array_index (c->lines, 5), 5, "malformed request: ");
  check_error (g_ptr_array_index (c->lines, 6), 6, "malformed request: missing \"command\"");
  check_error (g_ptr_array_index (c->lines, 7), 7, "malformed request: \"args\" must be an array of strings");
  check_error (g_ptr_array_index (c->lines, 8), 8, "malformed request: expected a JSON object");

  check_ok (g_ptr_array_index (c->lines, 9), 9, "logged in");
  assert_string_equal (f->login_input, "hunter2");

  check_ok (g_ptr_array_index (c->lines, 10), 10, "");
  assert_false (f->echo_saw_input);

  check_error (g_ptr_array_index (c->lines, 11), 11, "no such user: bob");
  check_error (g_ptr_array_index (c->lines, 12), 12, "unknown command 'nope'");
  check_ok (g_ptr_array_index (c->lines, 13), 13, "after errors");
  assert_false (c->eof);
  client_free (c);
}

/* Requests that are wrong in every way get an error each; the connection
 * goes on serving. */
static void
test_malformed_requests (void **state)
{
  static const struct {
    const char *line;
    const char *error;
  } cases[] = {
    { "{not json", "malformed request: " },
    { "{\"command\":\"echo\"", "malformed request: " },
    { "[1,2]", "malformed request: expected a JSON object" },
    { "\"echo\"", "malformed request: expected a JSON object" },
    { "{}", "malformed request: missing \"command\"" },
    { "{\"args\":[\"x\"]}", "malformed request: missing \"command\"" },
    { "{\"command\":null}", "malformed request: missing \"command\"" },
    { "{\"command\":42}", "malformed request: \"command\" must be a non-empty string" },
    { "{\"command\":\"\"}", "malformed request: \"command\" must be a non-empty string" },
    { "{\"command\":[\"echo\"]}", "malformed request: \"command\" must be a non-empty string" },
    { "{\"command\":\"echo\",\"args\":\"a b\"}", "malformed request: \"args\" must be an array of strings" },
    { "{\"command\":\"echo\",\"args\":[\"a\",1]}", "malformed request: \"args\" must be an array of strings" },
    { "{\"command\":\"echo\",\"args\":[null]}", "malformed request: \"args\" must be an array of strings" },
    { "{\"command\":\"echo\",\"args\":[[\"a\"]]}", "malformed request: \"args\" must be an array of strings" },
    { "{\"command\":\"login\",\"input\":7}", "malformed request: \"input\" must be a string" },
    { "{\"command\":\"ech\xff\"}", "malformed request: not valid UTF-8" },
    { "{\"command\":\"fr\\nob\"}", "unknown command 'fr ob' (try 'pillarbox help')" },
  };
  Fixture *f = *state;
  GString *raw = g_string_new (NULL);
  Client *c;

  start_server (f);
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    g_string_append_printf (raw, "%s\n", cases[i].line);
  g_string_append (raw, "{\"command\":\"echo\",\"args\":[\"still\",\"usable\"]}\n");

  c = round_trip (f, raw->str, G_N_ELEMENTS (cases) + 1);
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    check_error (g_ptr_array_index (c->lines, i), (guint) i, cases[i].error);
  check_ok (g_ptr_array_index (c->lines, G_N_ELEMENTS (cases)), G_N_ELEMENTS (cases), "still usable");
  assert_int_equal (f->login_calls, 0);
  client_free (c);
  g_string_free (raw, TRUE);
}

/* Requests split anywhere (here: one byte per write) are reassembled. */
static void
test_byte_at_a_time (void **state)
{
  Fixture *f = *state;
  Client *c = client_new (f,
                          "{\"command\":\"echo\",\"args\":[\"one\"]}\r\n"
                          "{\"command\":\"later\",\"args\":[\"two\"]}\n",
                          2);

  start_server (f);
  c->byte_at_a_time = TRUE;
  client_run (c);
  assert_int_equal (c->lines->len, 2);
  check_ok (g_ptr_array_index (c->lines, 0), 0, "one");
  check_ok (g_ptr_array_index (c->lines, 1), 1, "later: two");
  client_free (c);
}

/* Past the connection limit a client is told so, and the others carry on. */
static void
test_connection_limit (void **state)
{
  Fixture *f = *state;
  int fds[64];
  Client *c;

  start_server (f);
  for (gsize i = 0; i < G_N_ELEMENTS (fds); i++)
    {
      fds[i] = connect_unix (f->path);
      assert_true (fds[i] >= 0);
    }
  spin (100);

  expected_log = "refusing another";
  c = round_trip (f, "{\"command\":\"echo\"}\n", 1);
  check_error (g_ptr_array_index (c->lines, 0), 0, "too many control connections");
  assert_int_equal (expected_log_hits, 1);
  client_free (c);

  close (fds[0]);
  spin (100);
  c = round_trip (f, "{\"command\":\"echo\",\"args\":[\"room\"]}\n", 1);
  check_ok (g_ptr_array_index (c->lines, 0), 0, "room");
  client_free (c);

  for (gsize i = 1; i < G_N_ELEMENTS (fds); i++)
    close (fds[i]);
  expected_log = NULL;
}

/* A final request without a newline, then a half-close: still answered. */
static void
test_half_close (void **state)
{
  Fixture *f = *state;
  Client *c = client_new (f, "{\"command\":\"later\",\"args\":[\"end\"]}", 2);

  start_server (f);
  c->shutdown_write = TRUE;
  client_run (c);
  assert_int_equal (c->lines->len, 1);
  check_ok (g_ptr_array_index (c->lines, 0), 0, "later: end");
  assert_true (c->eof);
  client_free (c);
}

static void
test_oversize_line (void **state)
{
  Fixture *f = *state;
  GString *big = g_string_new ("{\"command\":\"echo\",\"args\":[\"");
  Client *c;

  start_server (f);
  while (big->len <= 1024 * 1024 + 100)
    g_string_append (big, "xxxxxxxxxxxxxxxx");
  g_string_append (big, "\"]}\n{\"command\":\"echo\"}\n");

  c = client_new (f, big->str, 2);
  client_run (c);
  assert_int_equal (c->lines->len, 1);
  check_error (g_ptr_array_index (c->lines, 0), 0, "request line too long");
  assert_true (c->eof);
  client_free (c);
  g_string_free (big, TRUE);

  /* The server goes on serving others. */
  c = round_trip (f, "{\"command\":\"echo\",\"args\":[\"ok\"]}\n", 1);
  check_ok (g_ptr_array_index (c->lines, 0), 0, "ok");
  client_free (c);
}

static gboolean
held_one (gpointer data)
{
  return ((Fixture *) data)->held->len >= 1;
}

static gboolean
later_done (gpointer data)
{
  return later_replies > 0;
}

/* A client that goes away before its answer: nothing crashes or leaks. */
static void
test_disconnect_before_reply (void **state)
{
  Fixture *f = *state;
  Client *c;

  start_server (f);

  /* The asynchronous command answers 20 ms after its client left. */
  c = client_new (f, "{\"command\":\"later\",\"args\":[\"gone\"]}\n", 0);
  c->close_at_once = TRUE;
  later_replies = 0;
  client_run (c);
  client_free (c);
  assert_true (wait_until (later_done, NULL));
  spin (20);

  /* A command that holds its request: the server notices the hang-up
   * while it waits, and the late answer goes nowhere. */
  c = client_new (f, "{\"command\":\"hang\"}\n", 0);
  c->close_at_once = TRUE;
  client_run (c);
  client_free (c);
  assert_true (wait_until (held_one, f));
  spin (50);
  pb_control_request_reply (g_ptr_array_index (f->held, 0), g_variant_new_string ("late"), "late");
  pb_control_request_unref (g_ptr_array_index (f->held, 0));
  g_ptr_array_set_size (f->held, 0);

  c = round_trip (f, "{\"command\":\"echo\",\"args\":[\"alive\"]}\n", 1);
  check_ok (g_ptr_array_index (c->lines, 0), 0, "alive");
  client_free (c);
}

/* A client stuck mid-line, or waiting on a slow command, holds up nobody. */
static void
test_slow_clients_do_not_block (void **state)
{
  Fixture *f = *state;
  int slow, waiting;
  Client *c;
  const char *partial = "{\"command\":\"ec";
  const char *hang = "{\"command\":\"hang\"}\n";

  start_server (f);
  slow = connect_unix (f->path);
  assert_true (slow >= 0);
  assert_int_equal (send (slow, partial, strlen (partial), 0), (ssize_t) strlen (partial));
  waiting = connect_unix (f->path);
  assert_true (waiting >= 0);
  assert_int_equal (send (waiting, hang, strlen (hang), 0), (ssize_t) strlen (hang));
  assert_true (wait_until (held_one, f));

  c = round_trip (f, "{\"command\":\"echo\",\"args\":[\"not\",\"blocked\"]}\n", 1);
  check_ok (g_ptr_array_index (c->lines, 0), 0, "not blocked");
  client_free (c);

  close (slow);
  close (waiting);
  spin (50);
}

/* Freeing the server with a command in flight tells its client and drops the late answer. */
static void
test_free_with_request_in_flight (void **state)
{
  Fixture *f = *state;
  const char *hang = "{\"command\":\"hang\"}\n";
  GPtrArray *lines = g_ptr_array_new_with_free_func (g_free);
  gboolean eof = FALSE;
  struct stat st;
  int fd;

  start_server (f);
  fd = connect_unix (f->path);
  assert_true (fd >= 0);
  set_timeouts (fd, 5);
  assert_int_equal (send (fd, hang, strlen (hang), 0), (ssize_t) strlen (hang));
  assert_true (wait_until (held_one, f));

  pb_control_server_free (f->server);
  f->server = NULL;
  assert_int_equal (lstat (f->path, &st), -1);

  read_lines (fd, 2, lines, &eof);
  assert_int_equal (lines->len, 1);
  check_error (g_ptr_array_index (lines, 0), 0, "pillarboxd is shutting down");
  assert_true (eof);
  close (fd);
  g_ptr_array_unref (lines);
  /* teardown answers the held request: it must go nowhere. */
}

/* A handler may free the server it runs under. */
static void
test_free_from_handler (void **state)
{
  Fixture *f = *state;
  Client *c;

  start_server (f);
  c = round_trip (f, "{\"command\":\"stop\"}\n{\"command\":\"echo\"}\n", 1);
  check_error (g_ptr_array_index (c->lines, 0), 0, "pillarboxd is shutting down");
  assert_true (c->eof);
  assert_null (f->server);
  client_free (c);
}

/* ---- requests outside the socket ---------------------------------------- */

static void
count_done (PbControlRequest *request, gpointer user_data)
{
  (*(guint *) user_data)++;
}

static void
test_request_new (void **state)
{
  const char *args[] = { "add", "bob", NULL };
  guint done = 0;
  PbControlRequest *request;
  GVariantDict dict;
  GVariant *data;
  gint32 n = 0;

  request = pb_control_request_new (args, "s3cret", count_done, &done);
  assert_string_equal (pb_control_request_get_args (request)[0], "add");
  assert_string_equal (pb_control_request_get_args (request)[1], "bob");
  assert_null (pb_control_request_get_args (request)[2]);
  assert_string_equal (pb_control_request_get_input (request), "s3cret");
  assert_false (pb_control_request_is_ok (request));

  /* Answer later, from a handler's own ref. */
  pb_control_request_ref (request);
  g_variant_dict_init (&dict, NULL);
  g_variant_dict_insert (&dict, "n", "i", 42);
  pb_control_request_reply (request, g_variant_dict_end (&dict), "done\nover two lines");
  pb_control_request_unref (request);
  assert_int_equal (done, 1);
  assert_true (pb_control_request_is_ok (request));
  assert_string_equal (pb_control_request_get_text (request), "done\nover two lines");
  assert_null (pb_control_request_get_error (request));
  data = pb_control_request_get_data (request);
  assert_non_null (data);
  assert_true (g_variant_is_of_type (data, G_VARIANT_TYPE_VARDICT));
  assert_true (g_variant_lookup (data, "n", "i", &n));
  assert_int_equal (n, 42);

  /* A second answer is a programmer error: reported, ignored. */
  expected_log = "already answered";
  pb_control_request_reply (request, g_variant_new_string ("again"), "again");
  pb_control_request_fail (request, "again %d", 2);
  assert_int_equal (expected_log_hits, 2);
  expected_log = NULL;
  assert_int_equal (done, 1);
  assert_string_equal (pb_control_request_get_text (request), "done\nover two lines");
  pb_control_request_unref (request);

  /* Errors are formatted and kept on one line; no args means an empty vector. */
  done = 0;
  request = pb_control_request_new (NULL, NULL, count_done, &done);
  assert_non_null (pb_control_request_get_args (request));
  assert_null (pb_control_request_get_args (request)[0]);
  assert_null (pb_control_request_get_input (request));
  pb_control_request_fail (request, "no such user: %s (%d)\nsecond line", "bob", 7);
  assert_int_equal (done, 1);
  assert_false (pb_control_request_is_ok (request));
  assert_string_equal (pb_control_request_get_error (request), "no such user: bob (7) second line");
  assert_null (pb_control_request_get_data (request));
  pb_control_request_unref (request);

  /* No done callback at all is fine too. */
  request = pb_control_request_new (args, NULL, NULL, NULL);
  pb_control_request_reply (request, NULL, NULL);
  assert_true (pb_control_request_is_ok (request));
  assert_null (pb_control_request_get_text (request));
  pb_control_request_unref (request);
}

/* ---- the pillarbox command ---------------------------------------------- */

typedef struct {
  gboolean done;
  char *out;
  char *err;
  int status;               /* exit status, or -1 if it did not exit */
} CliRun;

static void
cli_communicated (GObject *source, GAsyncResult *result, gpointer user_data)
{
  CliRun *run = user_data;
  GSubprocess *proc = G_SUBPROCESS (source);
  GError *error = NULL;

  if (!g_subprocess_communicate_utf8_finish (proc, result, &run->out, &run->err, &error))
    {
      fprintf (stderr, "communicate: %s\n", error->message);
      g_error_free (error);
    }
  g_subprocess_wait (proc, NULL, NULL);
  run->status = g_subprocess_get_if_exited (proc) ? g_subprocess_get_exit_status (proc) : -1;
  run->done = TRUE;
}

static gboolean
cli_is_done (gpointer data)
{
  return ((CliRun *) data)->done;
}

/* Runs the built `pillarbox` with ARGV (NULL-terminated, without argv[0]). */
static void
cli_run (CliRun *run, const char *state_dir_env, const char *input, ...)
{
  GSubprocessLauncher *launcher;
  GSubprocess *proc;
  GPtrArray *argv = g_ptr_array_new ();
  GError *error = NULL;
  const char *arg;
  va_list ap;

  memset (run, 0, sizeof *run);
  run->status = -1;
  g_ptr_array_add (argv, (gpointer) TOP_BUILDDIR "/core/pillarbox");
  va_start (ap, input);
  while ((arg = va_arg (ap, const char *)) != NULL)
    g_ptr_array_add (argv, (gpointer) arg);
  va_end (ap);
  g_ptr_array_add (argv, NULL);

  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDIN_PIPE
                                        | G_SUBPROCESS_FLAGS_STDOUT_PIPE
                                        | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  if (state_dir_env != NULL)
    g_subprocess_launcher_setenv (launcher, "PILLARBOX_STATE_DIR", state_dir_env, TRUE);
  else
    g_subprocess_launcher_unsetenv (launcher, "PILLARBOX_STATE_DIR");
  proc = g_subprocess_launcher_spawnv (launcher, (const char *const *) argv->pdata, &error);
  if (proc == NULL)
    fail_msg ("spawning pillarbox: %s", error->message);
  g_subprocess_communicate_utf8_async (proc, input != NULL ? input : "", NULL, cli_communicated, run);
  if (!wait_until (cli_is_done, run))
    {
      g_subprocess_force_exit (proc);
      fail_msg ("pillarbox did not finish in time");
    }
  g_object_unref (proc);
  g_object_unref (launcher);
  g_ptr_array_unref (argv);
}

static void
cli_clear (CliRun *run)
{
  g_free (run->out);
  g_free (run->err);
}

static void
test_cli (void **state)
{
  Fixture *f = *state;
  const char *cli = TOP_BUILDDIR "/core/pillarbox";
  char *empty_dir, *expected;
  CliRun run;
  JsonNode *node;
  char *json;

  if (!g_file_test (cli, G_FILE_TEST_IS_EXECUTABLE))
    {
      fprintf (stderr, "%s is not built; skipping\n", cli);
      skip ();
    }
  start_server (f);

  /* Text output; options after COMMAND belong to the command. */
  cli_run (&run, NULL, NULL, "--state-dir", f->dir, "echo", "hello", "--all", NULL);
  assert_int_equal (run.status, 0);
  assert_string_equal (run.out, "hello --all\n");
  assert_string_equal (run.err, "");
  cli_clear (&run);

  /* --json prints the data; the state directory from the environment. */
  cli_run (&run, f->dir, NULL, "--json", "later", "a", "b", NULL);
  assert_int_equal (run.status, 0);
  node = json_from_string (run.out, NULL);
  check_args_object (node, (const char *const[]) { "a", "b", NULL });
  json_node_unref (node);
  cli_clear (&run);

  cli_run (&run, NULL, NULL, "--state-dir", f->dir, "--json", "login", "bob", NULL);
  assert_int_equal (run.status, 0);
  assert_string_equal (run.out, "null\n");
  cli_clear (&run);

  /* Errors: stderr and status 1, or a JSON object on stdout with --json. */
  cli_run (&run, NULL, NULL, "--state-dir", f->dir, "fail", "bob", NULL);
  assert_int_equal (run.status, 1);
  assert_string_equal (run.out, "");
  assert_string_equal (run.err, "pillarbox: no such user: bob\n");
  cli_clear (&run);

  cli_run (&run, NULL, NULL, "--state-dir", f->dir, "--json", "fail", "bob", NULL);
  assert_int_equal (run.status, 1);
  node = json_from_string (run.out, NULL);
  assert_non_null (node);
  json = json_to_string (node, FALSE);
  assert_string_equal (json, "{\"ok\":false,\"error\":\"no such user: bob\"}");
  g_free (json);
  json_node_unref (node);
  cli_clear (&run);

  cli_run (&run, NULL, NULL, "--state-dir", f->dir, "frob", NULL);
  assert_int_equal (run.status, 1);
  assert_string_equal (run.err, "pillarbox: unknown command 'frob' (try 'pillarbox help')\n");
  cli_clear (&run);

  /* Input from a pipe, one final newline stripped; never echoed. */
  f->login_calls = 0;
  cli_run (&run, NULL, "secret\n", "--state-dir", f->dir, "login", "bob", NULL);
  assert_int_equal (run.status, 0);
  assert_int_equal (f->login_calls, 1);
  assert_string_equal (f->login_input, "secret");
  assert_string_equal (run.out, "logged in\n");
  assert_null (strstr (run.err, "secret"));
  cli_clear (&run);

  /* A command that does not read input leaves standard input alone. */
  cli_run (&run, NULL, "ignored\n", "--state-dir", f->dir, "echo", NULL);
  assert_int_equal (run.status, 0);
  assert_false (f->echo_saw_input);
  cli_clear (&run);

  /* "help" goes to the daemon. */
  cli_run (&run, NULL, NULL, "--state-dir", f->dir, "help", NULL);
  assert_int_equal (run.status, 0);
  assert_non_null (strstr (run.out, "login"));
  cli_clear (&run);

  /* No answer in time. */
  cli_run (&run, NULL, NULL, "--state-dir", f->dir, "--timeout", "0.3", "hang", NULL);
  assert_int_equal (run.status, 2);
  assert_non_null (strstr (run.err, "timed out"));
  cli_clear (&run);

  /* The daemon is not running. */
  empty_dir = g_build_filename (f->dir, "empty", NULL);
  assert_int_equal (g_mkdir (empty_dir, 0700), 0);
  cli_run (&run, NULL, NULL, "--state-dir", empty_dir, "status", NULL);
  assert_int_equal (run.status, 2);
  expected = g_strdup_printf ("pillarbox: cannot reach pillarboxd at %s/control.sock: ", empty_dir);
  assert_true (g_str_has_prefix (run.err, expected));
  assert_non_null (strstr (run.err, "is the daemon running?"));
  g_free (expected);
  cli_clear (&run);

  /* --help works without a daemon; --version too. */
  cli_run (&run, NULL, NULL, "--state-dir", empty_dir, "--help", NULL);
  assert_int_equal (run.status, 0);
  assert_non_null (strstr (run.out, "Usage: pillarbox"));
  cli_clear (&run);
  cli_run (&run, NULL, NULL, "--version", NULL);
  assert_int_equal (run.status, 0);
  assert_true (g_str_has_prefix (run.out, "pillarbox "));
  cli_clear (&run);
  g_free (empty_dir);

  /* Usage errors. */
  cli_run (&run, NULL, NULL, "--state-dir", f->dir, NULL);
  assert_int_equal (run.status, 64);
  cli_clear (&run);
  cli_run (&run, NULL, NULL, "--bogus", "echo", NULL);
  assert_int_equal (run.status, 64);
  assert_non_null (strstr (run.err, "--bogus"));
  cli_clear (&run);
  cli_run (&run, NULL, NULL, "--timeout", "soon", "echo", NULL);
  assert_int_equal (run.status, 64);
  cli_clear (&run);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_socket_mode_and_live_refusal, setup, teardown),
    cmocka_unit_test_setup_teardown (test_stale_socket_replaced, setup, teardown),
    cmocka_unit_test_setup_teardown (test_not_a_socket_refused, setup, teardown),
    cmocka_unit_test_setup_teardown (test_round_trip, setup, teardown),
    cmocka_unit_test_setup_teardown (test_malformed_requests, setup, teardown),
    cmocka_unit_test_setup_teardown (test_byte_at_a_time, setup, teardown),
    cmocka_unit_test_setup_teardown (test_connection_limit, setup, teardown),
    cmocka_unit_test_setup_teardown (test_half_close, setup, teardown),
    cmocka_unit_test_setup_teardown (test_oversize_line, setup, teardown),
    cmocka_unit_test_setup_teardown (test_disconnect_before_reply, setup, teardown),
    cmocka_unit_test_setup_teardown (test_slow_clients_do_not_block, setup, teardown),
    cmocka_unit_test_setup_teardown (test_free_with_request_in_flight, setup, teardown),
    cmocka_unit_test_setup_teardown (test_free_from_handler, setup, teardown),
    cmocka_unit_test_setup_teardown (test_request_new, setup, teardown),
    cmocka_unit_test_setup_teardown (test_cli, setup, teardown),
  };

  g_log_set_writer_func (capture_log, NULL, NULL);
  /* The writer decides what fails a case; criticals are captured, not fatal. */
  g_log_set_always_fatal (G_LOG_FATAL_MASK);
  signal (SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests_name ("control", tests, NULL, NULL);
}
