/* SPDX-License-Identifier: MIT */
/* Helpers for the transports' integration tests: start real peers, build a generation, run deliveries. */
#include "config.h"
#include "test-transport.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <glib/gstdio.h>

TtFixture *
tt_new (void)
{
  TtFixture *f = g_new0 (TtFixture, 1);

  /* Warnings and criticals fail the test unless it expects them. */
  pbt_log_capture ();
  f->dir = pbt_mkdtemp ();
  f->conf = g_build_filename (f->dir, "conf.d", NULL);
  f->state = g_build_filename (f->dir, "state", NULL);
  f->msgs = g_build_filename (f->dir, "msgs", NULL);
  g_mkdir (f->conf, 0755);
  g_mkdir (f->state, 0755);
  g_mkdir (f->msgs, 0755);
  /* smtp-sink runs as nobody and must be able to reach nothing here but its own log. */
  g_chmod (f->dir, 0755);
  f->pids = g_array_new (FALSE, FALSE, sizeof (GPid));
  f->stdin_fds = g_array_new (FALSE, FALSE, sizeof (int));
  return f;
}

void
tt_free (TtFixture *f)
{
  g_clear_pointer (&f->gen, pb_generation_unref);
  /* Let closing connections finish (QUIT, the core's lingering close). */
  pbt_loop_run_for (50);
  for (guint i = 0; i < f->stdin_fds->len; i++)
    close (g_array_index (f->stdin_fds, int, i));
  for (guint i = 0; i < f->pids->len; i++)
    {
      GPid pid = g_array_index (f->pids, GPid, i);
      int status;
      kill (pid, SIGTERM);
      waitpid (pid, &status, 0);
      g_spawn_close_pid (pid);
    }
  g_array_unref (f->pids);
  g_array_unref (f->stdin_fds);
  pbt_rmtree (f->dir);
  pbt_log_check_empty ();
  g_free (f->dir);
  g_free (f->conf);
  g_free (f->state);
  g_free (f->msgs);
  g_free (f);
}

guint
tt_dead_port (const char *address)
{
  /* Below the kernel's ephemeral range (32768 and up): a port picked there can
   * be taken meanwhile by any client socket of a test running beside this one. */
  for (int attempt = 0; attempt < 500; attempt++)
    {
      int fd = socket (AF_INET, SOCK_STREAM, 0);
      struct sockaddr_in sa = { 0 };
      guint port = 20000 + g_random_int_range (0, 12000);
      int rc;

      sa.sin_family = AF_INET;
      sa.sin_port = htons ((guint16) port);
      inet_pton (AF_INET, address, &sa.sin_addr);
      rc = bind (fd, (struct sockaddr *) &sa, sizeof sa);
      close (fd);
      if (rc == 0)
        return port;
    }
  fail_msg ("no free port on %s", address);
  return 0;
}

static gboolean
port_accepts (const char *address, guint port)
{
  int fd = socket (AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = { 0 };
  gboolean ok;

  sa.sin_family = AF_INET;
  sa.sin_port = htons ((guint16) port);
  inet_pton (AF_INET, address, &sa.sin_addr);
  ok = connect (fd, (struct sockaddr *) &sa, sizeof sa) == 0;
  close (fd);
  return ok;
}

/* A peer must not outlive a test that failed half-way (cmocka leaves by longjmp). */
static void
die_with_parent (gpointer data)
{
  prctl (PR_SET_PDEATHSIG, SIGTERM);
}

guint
tt_start_sink (TtFixture *f, const char *address, guint port, const char *const *extra, char **log)
{
  g_autofree char *listen = NULL;
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autoptr (GError) error = NULL;
  char *path = NULL;
  int fd;
  GPid pid;

  if (port == 0)
    port = tt_dead_port (address);
  listen = g_strdup_printf ("%s:%u", address, port);
  path = g_strdup_printf ("%s/sink-%s-%u.log", f->dir, address, port);
  fd = g_open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

  assert_true (fd >= 0);
  if (!g_file_test ("/usr/sbin/smtp-sink", G_FILE_TEST_IS_EXECUTABLE))
    fail_msg ("/usr/sbin/smtp-sink is missing (Debian package postfix)");
  /* smtp-sink changes user, which clears the parent-death signal: timeout(1)
   * keeps it, and passes the SIGTERM on. */
  g_ptr_array_add (argv, "/usr/bin/timeout");
  g_ptr_array_add (argv, "600");
  g_ptr_array_add (argv, "/usr/sbin/smtp-sink");
  if (geteuid () == 0)
    {
      /* Required as root: it drops to this user after binding. */
      g_ptr_array_add (argv, "-u");
      g_ptr_array_add (argv, "nobody");
    }
  g_ptr_array_add (argv, "-v");
  for (guint i = 0; extra != NULL && extra[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) extra[i]);
  g_ptr_array_add (argv, listen);
  g_ptr_array_add (argv, "64");
  g_ptr_array_add (argv, NULL);
  if (!g_spawn_async_with_fds (NULL, (char **) argv->pdata, NULL, G_SPAWN_DO_NOT_REAP_CHILD, die_with_parent, NULL,
                               &pid, -1, fd, fd, &error))
    fail_msg ("cannot start smtp-sink: %s", error->message);
  close (fd);
  g_array_append_val (f->pids, pid);
  for (int i = 0; i < 500 && !port_accepts (address, port); i++)
    g_usleep (10000);
  if (!port_accepts (address, port))
    fail_msg ("smtp-sink did not start on %s", listen);
  *log = path;
  return port;
}

static guint
start_python (TtFixture *f, const char *const *argv_in)
{
  g_autoptr (GError) error = NULL;
  char buf[64] = { 0 };
  gsize n = 0;
  int in_fd, out_fd;
  GPid pid;
  guint port = 0;

  if (!g_spawn_async_with_pipes (NULL, (char **) argv_in, NULL, G_SPAWN_DO_NOT_REAP_CHILD, die_with_parent, NULL, &pid,
                                 &in_fd, &out_fd, NULL, &error))
    fail_msg ("cannot start %s: %s", argv_in[1], error->message);
  g_array_append_val (f->pids, pid);
  g_array_append_val (f->stdin_fds, in_fd);
  while (n < sizeof buf - 1 && strchr (buf, '\n') == NULL)
    {
      ssize_t r = read (out_fd, buf + n, sizeof buf - 1 - n);
      if (r <= 0)
        fail_msg ("%s did not start", argv_in[1]);
      n += (gsize) r;
    }
  close (out_fd);
  assert_int_equal (sscanf (buf, "PORT %u", &port), 1);
  return port;
}

guint
tt_start_server (TtFixture *f, const char *address, const char *const *extra, char **log)
{
  g_autofree char *script = g_build_filename (TOP_SRCDIR, "modules", "smtp-client", "test-smtp-server.py", NULL);
  static guint counter;
  char *path = g_strdup_printf ("%s/server-%u.log", f->dir, ++counter);
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();

  g_ptr_array_add (argv, "/usr/bin/python3");
  g_ptr_array_add (argv, script);
  g_ptr_array_add (argv, "--log");
  g_ptr_array_add (argv, path);
  g_ptr_array_add (argv, "--address");
  g_ptr_array_add (argv, (gpointer) address);
  for (guint i = 0; extra != NULL && extra[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) extra[i]);
  g_ptr_array_add (argv, NULL);
  g_file_set_contents (path, "", 0, NULL);
  *log = path;
  return start_python (f, (const char *const *) argv->pdata);
}

guint
tt_start_dns (TtFixture *f, const char *zone)
{
  g_autofree char *script = g_build_filename (TOP_SRCDIR, "tests", "dns-server.py", NULL);
  g_autofree char *zonefile = g_build_filename (f->dir, "zone", NULL);
  const char *argv[] = { "/usr/bin/python3", script, zonefile, NULL };

  g_file_set_contents (zonefile, zone, -1, NULL);
  return start_python (f, argv);
}

void
tt_write_conf (TtFixture *f, const char *name, const char *text)
{
  pbt_write_file (f->conf, name, text);
}

void
tt_write_message (TtFixture *f, const char *queue_id, const char *text, gssize len)
{
  g_autofree char *path = g_build_filename (f->msgs, queue_id, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_file_set_contents (path, text, len, &error))
    fail_msg ("cannot write %s: %s", path, error->message);
}

void
tt_write_base (TtFixture *f, const char *core_extra, const char *store_extra)
{
  g_autofree char *modules = g_build_filename (TOP_BUILDDIR, "modules", NULL);
  g_autofree char *libs = g_build_filename (modules, ".libs", NULL);
  g_autofree char *core = g_strdup_printf ("[core]\nmodule-dir = %s\nhostname = pillarbox.test.example\n%s\n", modules,
                                           core_extra != NULL ? core_extra : "");
  g_autofree char *store = g_strdup_printf ("[module smtpc-test-store]\ndir = %s\n%s\n", f->msgs,
                                            store_extra != NULL ? store_extra : "");
  g_autoptr (GDir) d = g_dir_open (libs, 0, NULL);
  const char *name;

  /* The loader refuses modules writable by group or others. */
  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    if (g_str_has_suffix (name, ".so"))
      {
        g_autofree char *path = g_build_filename (libs, name, NULL);
        g_chmod (path, 0755);
      }
  tt_write_conf (f, "00-core.conf", core);
  tt_write_conf (f, "10-store.conf", store);
}

PbGeneration *
tt_build (TtFixture *f, char **error_text)
{
  PbDiag *diag = pb_diag_new ();
  g_autoptr (GError) error = NULL;

  g_clear_pointer (&f->gen, pb_generation_unref);
  f->gen = pb_generation_build (f->conf, f->state, NULL, FALSE, diag);
  if (f->gen == NULL)
    {
      char *text = pb_diag_join (diag);
      pb_diag_free (diag);
      if (error_text != NULL)
        *error_text = text;
      else
        {
          fail_msg ("the configuration was refused: %s", text);
          g_free (text);
        }
      return NULL;
    }
  pb_diag_free (diag);
  if (!pb_generation_start (f->gen, &error))
    {
      g_clear_pointer (&f->gen, pb_generation_unref);
      if (error_text != NULL)
        {
          *error_text = g_strdup (error->message);
          return NULL;
        }
      fail_msg ("the generation did not start: %s", error->message);
    }
  return f->gen;
}

void
tt_make_cert (TtFixture *f)
{
  g_autoptr (GError) error = NULL;
  PbTlsCreds *creds = pb_tls_creds_ensure_self_signed (f->state, "pillarbox.test.example", &error);

  if (creds == NULL)
    fail_msg ("cannot make a certificate: %s", error->message);
  pb_tls_creds_unref (creds);
}

char *
tt_cert_file (TtFixture *f)
{
  return g_build_filename (f->state, "tls", "selfsigned.crt", NULL);
}

char *
tt_key_file (TtFixture *f)
{
  return g_build_filename (f->state, "tls", "selfsigned.key", NULL);
}

static PbTransport *
find_transport (TtFixture *f, const char *module)
{
  PbModule *m = pb_generation_find_module (f->gen, module);

  assert_non_null (m);
  for (guint i = 0; i < f->gen->transports->len; i++)
    {
      PbTransport *t = g_ptr_array_index (f->gen->transports, i);
      if (t->module == m)
        return t;
    }
  fail_msg ("module %s registered no transport", module);
  return NULL;
}

static void
delivery_done (PbDelivery *d, gpointer data)
{
  TtDelivery *td = data;

  td->n = d->n_recipients;
  td->results = g_new0 (TtResult, td->n);
  for (guint i = 0; i < td->n; i++)
    {
      td->results[i].code = d->results[i].code;
      td->results[i].enhanced = g_strdup (d->results[i].enhanced);
      td->results[i].text = g_strdup (d->results[i].text);
    }
  g_assert_false (td->done);
  td->done = TRUE;
}

TtDelivery *
tt_deliver_start (TtFixture *f, const char *module, const char *queue_id, const char *from, const char *const *rcpts,
                  gint64 size, const char *const *notify, const char *const *orcpt, const char *ret, const char *envid)
{
  PbTransport *t = find_transport (f, module);
  TtDelivery *td = g_new0 (TtDelivery, 1);
  const char *at = strrchr (rcpts[0], '@');
  PbDelivery *d;

  if (size < 0)
    {
      g_autofree char *path = g_build_filename (f->msgs, queue_id, NULL);
      GStatBuf st;
      size = g_stat (path, &st) == 0 ? (gint64) st.st_size : 0;
    }
  d = pb_delivery_new (t->module, queue_id, from, at != NULL ? at + 1 : rcpts[0], size, rcpts, delivery_done, td);
  if (notify != NULL || orcpt != NULL || ret != NULL || envid != NULL)
    pb_delivery_set_dsn (d, ret, envid, notify, orcpt);
  t->spec.deliver (d, t->spec.user_data);
  assert_false (td->done);  /* never from inside deliver() */
  return td;
}

void
tt_delivery_wait (TtDelivery *d, guint ms)
{
  if (!pbt_loop_until (&d->done, ms))
    fail_msg ("the delivery did not complete within %u ms", ms);
}

void
tt_delivery_free (TtDelivery *d)
{
  if (d == NULL)
    return;
  for (guint i = 0; i < d->n; i++)
    {
      g_free (d->results[i].enhanced);
      g_free (d->results[i].text);
    }
  g_free (d->results);
  g_free (d);
}

TtDelivery *
tt_deliver (TtFixture *f, const char *module, const char *queue_id, const char *from, const char *const *rcpts)
{
  TtDelivery *d = tt_deliver_start (f, module, queue_id, from, rcpts, -1, NULL, NULL, NULL, NULL);
  tt_delivery_wait (d, 30000);
  return d;
}

gboolean
tt_accepts (TtFixture *f, const char *module, const char *from, const char *rcpt)
{
  PbTransport *t = find_transport (f, module);
  return t->spec.accepts == NULL || t->spec.accepts (from, rcpt, t->spec.user_data);
}

GPtrArray *
tt_server_log (const char *log, const char *event)
{
  g_autofree char *text = NULL;
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) json_object_unref);
  g_auto (GStrv) lines = NULL;

  if (!g_file_get_contents (log, &text, NULL, NULL))
    return out;
  lines = g_strsplit (text, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      g_autoptr (JsonParser) p = json_parser_new ();
      JsonNode *root;
      if (lines[i][0] == '\0' || !json_parser_load_from_data (p, lines[i], -1, NULL))
        continue;
      root = json_parser_get_root (p);
      if (!JSON_NODE_HOLDS_OBJECT (root))
        continue;
      if (event != NULL && g_strcmp0 (json_object_get_string_member (json_node_get_object (root), "event"), event) != 0)
        continue;
      g_ptr_array_add (out, json_object_ref (json_node_get_object (root)));
    }
  return out;
}

GArray *
tt_sink_sessions (const char *log)
{
  g_autofree char *text = NULL;
  g_auto (GStrv) lines = NULL;
  GArray *out = g_array_new (FALSE, FALSE, sizeof (guint));
  gboolean in_session = FALSE, spoke = FALSE;
  guint messages = 0;

  if (!g_file_get_contents (log, &text, NULL, NULL))
    return out;
  lines = g_strsplit (text, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      const char *l = strstr (lines[i], "smtp-sink: ");
      if (l == NULL)
        continue;
      l += strlen ("smtp-sink: ");
      if (g_str_has_prefix (l, "connect "))
        {
          in_session = TRUE;
          spoke = FALSE;
          messages = 0;
        }
      else if (in_session && (g_ascii_strncasecmp (l, "ehlo ", 5) == 0 || g_ascii_strncasecmp (l, "helo ", 5) == 0))
        spoke = TRUE;
      else if (in_session && strcmp (l, ".") == 0)
        messages++;
      else if (in_session && strcmp (l, "disconnect") == 0)
        {
          /* Sessions that never said EHLO are the start-up probe. */
          if (spoke)
            g_array_append_val (out, messages);
          in_session = FALSE;
        }
    }
  return out;
}

static guint
sink_message_count (const char *log)
{
  g_autofree char *text = NULL;
  guint n = 0;

  if (!g_file_get_contents (log, &text, NULL, NULL))
    return 0;
  for (const char *p = text; (p = strstr (p, "smtp-sink: .\n")) != NULL; p++)
    n++;
  return n;
}

gboolean
tt_sink_wait_messages (const char *log, guint n, guint ms)
{
  gint64 end = g_get_monotonic_time () + (gint64) ms * 1000;

  while (sink_message_count (log) < n && g_get_monotonic_time () < end)
    pbt_loop_run_for (20);
  return sink_message_count (log) >= n;
}

GBytes *
tt_message_raw (JsonObject *message)
{
  gsize len = 0;
  guchar *data = g_base64_decode (json_object_get_string_member (message, "raw"), &len);
  return g_bytes_new_take (data, len);
}
