/* SPDX-License-Identifier: MIT */
/* Unit tests of storage-sqlite through the real core: a generation from a temporary conf dir, a real SQLite file. */
#include "config.h"
#include "test-help.h"
#include "core-private.h"

#include <glib/gstdio.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>

#define WAIT_MS 20000

typedef struct {
  char *conf;
  char *state;
  PbGeneration *gen;
  PbModule *mod;
} Fixture;

static int
setup (void **state)
{
  Fixture *f = g_new0 (Fixture, 1);
  f->conf = pbt_mkdtemp ();
  f->state = pbt_mkdtemp ();
  pbt_log_capture ();
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  Fixture *f = *state;
  g_clear_pointer (&f->gen, pb_generation_unref);
  pbt_log_check_empty ();
  pbt_rmtree (f->conf);
  pbt_rmtree (f->state);
  g_free (f->conf);
  g_free (f->state);
  g_free (f);
  return 0;
}

/* Builds and starts a generation with storage-sqlite and EXTRA settings; NULL with @error. */
static PbGeneration *
open_gen (Fixture *f, const char *extra, GError **error)
{
  g_autofree char *core = g_strdup_printf ("[core]\nmodule-dir = %s/modules\n", TOP_BUILDDIR);
  g_autofree char *mod = g_strdup_printf ("[module storage-sqlite]\n%s", extra != NULL ? extra : "");
  PbDiag *diag = pb_diag_new ();
  PbGeneration *gen;

  pbt_write_file (f->conf, "00-core.conf", core);
  pbt_write_file (f->conf, "10-storage-sqlite.conf", mod);
  gen = pb_generation_build (f->conf, f->state, NULL, FALSE, diag);
  if (gen == NULL)
    {
      g_autofree char *all = pb_diag_join (diag);
      pb_diag_free (diag);
      fail_msg ("build failed: %s", all);
    }
  pb_diag_free (diag);
  if (!pb_generation_start (gen, error))
    {
      pb_generation_unref (gen);
      return NULL;
    }
  return gen;
}

static void
open_store (Fixture *f, const char *extra)
{
  g_autoptr (GError) error = NULL;

  f->gen = open_gen (f, extra, &error);
  if (f->gen == NULL)
    fail_msg ("start failed: %s", error->message);
  f->mod = pb_generation_find_module (f->gen, "storage-sqlite");
  assert_non_null (f->mod);
}

static void
close_store (Fixture *f)
{
  g_clear_pointer (&f->gen, pb_generation_unref);
  f->mod = NULL;
}

static char *
db_path (Fixture *f)
{
  return g_build_filename (f->state, "storage-sqlite", "pillarbox.db", NULL);
}

/* ---- direct looks at the database file, through a connection of our own ---- */

static gint64
db_int (Fixture *f, const char *sql)
{
  g_autofree char *path = db_path (f);
  sqlite3 *db = NULL;
  sqlite3_stmt *stmt = NULL;
  gint64 v = -1;

  assert_int_equal (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  if (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL) != SQLITE_OK)
    fail_msg ("%s: %s", sql, sqlite3_errmsg (db));
  if (sqlite3_step (stmt) == SQLITE_ROW)
    v = sqlite3_column_int64 (stmt, 0);
  sqlite3_finalize (stmt);
  sqlite3_close (db);
  return v;
}

static void
db_exec (Fixture *f, const char *sql)
{
  g_autofree char *path = db_path (f);
  sqlite3 *db = NULL;
  char *msg = NULL;

  assert_int_equal (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
  if (sqlite3_exec (db, sql, NULL, NULL, &msg) != SQLITE_OK)
    fail_msg ("%s: %s", sql, msg);
  sqlite3_close (db);
}

/* ---- requests ---- */

typedef struct {
  gboolean done;
  GVariant *result;
  GError *error;
} Wait;

static void
request_done (GVariant *result, const GError *error, gpointer data)
{
  Wait *w = data;
  w->done = TRUE;
  w->result = result != NULL ? g_variant_ref (result) : NULL;
  w->error = error != NULL ? g_error_copy (error) : NULL;
}

static GVariant *
request (PbModule *mod, const char *op, GVariant *args, GError **error)
{
  Wait w = { 0 };

  pb_store_request (mod, op, args, request_done, &w);
  if (!pbt_loop_until (&w.done, WAIT_MS))
    fail_msg ("%s: no answer", op);
  if (w.error != NULL)
    {
      g_propagate_error (error, w.error);
      g_clear_pointer (&w.result, g_variant_unref);
    }
  return w.result;
}

static GVariant *
request_ok (PbModule *mod, const char *op, GVariant *args)
{
  g_autoptr (GError) error = NULL;
  GVariant *result = request (mod, op, args, &error);

  if (error != NULL)
    fail_msg ("%s failed: %s", op, error->message);
  return result;
}

static guint64
stat_u64 (PbModule *mod, const char *key)
{
  g_autoptr (GVariant) stats = request_ok (mod, "storage.stats", NULL);
  g_autoptr (GVariant) v = g_variant_lookup_value (stats, key, NULL);

  assert_non_null (v);
  if (g_variant_is_of_type (v, G_VARIANT_TYPE_UINT32))
    return g_variant_get_uint32 (v);
  return g_variant_get_uint64 (v);
}

/* ---- messages ---- */

/* Recipients as "address" (remote) or "address>mailbox" (local). */
typedef struct {
  PbRecipient r[8];
  const PbRecipient *rp[9];
  char *text[8];
  PbEnvelope env;
} Env;

static void
env_init (Env *e, const char *const *rcpts)
{
  guint i;

  memset (e, 0, sizeof *e);
  for (i = 0; rcpts[i] != NULL && i < 8; i++)
    {
      char *gt;
      e->text[i] = g_strdup (rcpts[i]);
      gt = strchr (e->text[i], '>');
      if (gt != NULL)
        *gt++ = '\0';
      e->r[i].struct_size = sizeof (PbRecipient);
      e->r[i].address = e->text[i];
      e->r[i].mailbox = gt;
      e->r[i].notify = gt == NULL ? "FAILURE" : NULL;
      e->rp[i] = &e->r[i];
    }
  e->rp[i] = NULL;
  e->env.struct_size = sizeof (PbEnvelope);
  e->env.mail_from = "sender@remote.example";
  e->env.recipients = e->rp;
  e->env.session_id = "s0001";
  e->env.client_ip = "192.0.2.1";
}

static void
env_clear (Env *e)
{
  for (guint i = 0; i < 8; i++)
    g_free (e->text[i]);
}

typedef struct {
  gboolean done;
  char *queue_id;
  GError *error;
} CommitWait;

static void
commit_done (const char *queue_id, const GError *error, gpointer data)
{
  CommitWait *w = data;
  w->done = TRUE;
  w->queue_id = g_strdup (queue_id);
  w->error = error != NULL ? g_error_copy (error) : NULL;
}

static guint8 *
pattern (gsize len, guint seed)
{
  guint8 *p = g_malloc (MAX (len, 1));
  guint32 x = seed * 2654435761u + 1;

  for (gsize i = 0; i < len; i++)
    {
      x = x * 1103515245u + 12345u;
      p[i] = (guint8) (x >> 16);
    }
  return p;
}

/* Stores a message written STEP octets at a time (0: all at once); returns its queue id. */
static char *
store_message (PbModule *mod, const char *const *rcpts, const guint8 *data, gsize len, gsize step, GError **error)
{
  Env e;
  PbStoreMessage *msg;
  CommitWait w = { 0 };

  env_init (&e, rcpts);
  msg = pb_store_message_begin (mod, &e.env, error);
  env_clear (&e);
  if (msg == NULL)
    return NULL;
  for (gsize off = 0; off < len;)
    {
      gsize n = step == 0 ? len - off : MIN (step, len - off);
      if (!pb_store_message_write (msg, data + off, n, error))
        {
          pb_store_message_abort (msg);
          return NULL;
        }
      off += n;
    }
  pb_store_message_commit (msg, commit_done, &w);
  if (!pbt_loop_until (&w.done, WAIT_MS))
    fail_msg ("commit: no answer");
  if (w.error != NULL)
    {
      g_propagate_error (error, w.error);
      return NULL;
    }
  assert_non_null (w.queue_id);
  return w.queue_id;
}

static char *
store_ok (PbModule *mod, const char *const *rcpts, const guint8 *data, gsize len, gsize step)
{
  g_autoptr (GError) error = NULL;
  char *qid = store_message (mod, rcpts, data, len, step, &error);

  if (qid == NULL)
    fail_msg ("storing a message of %" G_GSIZE_FORMAT " octets failed: %s", len, error->message);
  return qid;
}

typedef struct {
  gboolean done;
  GByteArray *data;
  gboolean eof;
  GError *error;
} ReadWait;

static void
read_done (const guint8 *data, gsize len, gboolean eof, const GError *error, gpointer user_data)
{
  ReadWait *w = user_data;
  w->done = TRUE;
  w->eof = eof;
  if (len > 0)
    g_byte_array_append (w->data, data, (guint) len);
  w->error = error != NULL ? g_error_copy (error) : NULL;
}

/* Reads a whole message MAX octets at a time; NULL with @error. */
static GByteArray *
read_all (PbModule *mod, const char *qid, gsize max, GError **error)
{
  g_autoptr (GByteArray) all = g_byte_array_new ();

  for (guint rounds = 0; rounds < 100000; rounds++)
    {
      ReadWait w = { 0 };
      guint before = all->len;

      w.data = all;
      pb_store_message_read (mod, qid, all->len, max, read_done, &w);
      if (!pbt_loop_until (&w.done, WAIT_MS))
        fail_msg ("read: no answer");
      if (w.error != NULL)
        {
          g_propagate_error (error, w.error);
          return NULL;
        }
      if (w.eof)
        return g_steal_pointer (&all);
      if (all->len == before)
        fail_msg ("read of %s made no progress at %u", qid, before);
    }
  fail_msg ("read of %s never ended", qid);
  return NULL;
}

static void
assert_body (PbModule *mod, const char *qid, const guint8 *data, gsize len, gsize max)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GByteArray) got = read_all (mod, qid, max, &error);

  if (got == NULL)
    fail_msg ("reading %s: %s", qid, error->message);
  if (got->len != len)
    fail_msg ("%s: read %u octets, stored %" G_GSIZE_FORMAT, qid, got->len, len);
  if (len > 0 && memcmp (got->data, data, len) != 0)
    fail_msg ("%s: the body read differs from the one stored", qid);
}

static void
add_user (PbModule *mod, const char *name)
{
  g_autoptr (GVariant) r = request_ok (mod, "user.add", g_variant_new ("(sssx)", name, "$y$j9T$test$hash", "smtp,pop3",
                                                                      (gint64) 0));
}

static void
setup_example (PbModule *mod)
{
  g_autoptr (GVariant) r = request_ok (mod, "domain.add", g_variant_new ("(ssb)", "example.org", "", FALSE));
  add_user (mod, "bob@example.org");
  add_user (mod, "carol@example.org");
}

/* ---- tests ---- */

static void
test_start_schema_and_files (void **state)
{
  Fixture *f = *state;
  g_autofree char *dir = g_build_filename (f->state, "storage-sqlite", NULL);
  g_autofree char *path = db_path (f);
  g_autoptr (GVariant) stats = NULL;
  g_autoptr (GDir) d = NULL;
  const char *name;
  guint locks = 0;
  struct stat st;

  open_store (f, NULL);
  assert_int_equal (stat (dir, &st), 0);
  assert_int_equal (st.st_mode & 0777, 0700);
  assert_true (g_file_test (path, G_FILE_TEST_IS_REGULAR));

  stats = request_ok (f->mod, "storage.stats", NULL);
  assert_true (g_variant_is_of_type (stats, G_VARIANT_TYPE ("a{sv}")));
  assert_int_equal (stat_u64 (f->mod, "schema-version"), 4);
  assert_int_equal (stat_u64 (f->mod, "recovered"), 0);
  assert_int_equal (db_int (f, "PRAGMA user_version"), 4);
  assert_int_equal (db_int (f, "SELECT count(*) FROM schema_migrations WHERE version = 1"), 1);
  assert_int_equal (db_int (f, "SELECT count(*) FROM schema_migrations WHERE version = 2"), 1);
  assert_int_equal (db_int (f, "SELECT count(*) FROM schema_migrations WHERE version = 3"), 1);
  assert_int_equal (db_int (f, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);

  d = g_dir_open (dir, 0, NULL);
  while ((name = g_dir_read_name (d)) != NULL)
    locks += strstr (name, "-live-") != NULL;
  assert_int_equal (locks, 1);
  g_clear_pointer (&d, g_dir_close);

  /* A second start finds the schema in place; fini removes the instance file. */
  close_store (f);
  open_store (f, NULL);
  assert_int_equal (stat_u64 (f->mod, "schema-version"), 4);
  assert_int_equal (db_int (f, "SELECT count(*) FROM schema_migrations"), 4);
  close_store (f);
  d = g_dir_open (dir, 0, NULL);
  while ((name = g_dir_read_name (d)) != NULL)
    assert_null (strstr (name, "-live-"));
}

static void
test_database_setting (void **state)
{
  Fixture *f = *state;
  g_autofree char *path = g_build_filename (f->conf, "data", "mail.db", NULL);

  open_store (f, "database = data/mail.db\nmax-batch = 4\nbusy-timeout = 2s\n");
  assert_true (g_file_test (path, G_FILE_TEST_IS_REGULAR));
  setup_example (f->mod);
}

static void
test_check_config_opens_nothing (void **state)
{
  Fixture *f = *state;
  g_autofree char *core = g_strdup_printf ("[core]\nmodule-dir = %s/modules\n", TOP_BUILDDIR);
  g_autofree char *dir = g_build_filename (f->state, "storage-sqlite", NULL);
  PbDiag *diag = pb_diag_new ();
  PbGeneration *gen;

  pbt_write_file (f->conf, "00-core.conf", core);
  pbt_write_file (f->conf, "10-storage-sqlite.conf", "[module storage-sqlite]\n");
  gen = pb_generation_build (f->conf, f->state, NULL, TRUE, diag);
  assert_non_null (gen);
  pb_generation_unref (gen);
  pb_diag_free (diag);
  assert_false (g_file_test (dir, G_FILE_TEST_EXISTS));
}

/* The shipped conf.d file parses, and its commented values are the defaults. */
static void
test_shipped_conf (void **state)
{
  Fixture *f = *state;
  g_autofree char *core = g_strdup_printf ("[core]\nmodule-dir = %s/modules\n", TOP_BUILDDIR);
  g_autofree char *shipped = NULL;
  typedef struct {
    char *database;
    gint64 free_space_reserve;
    gint64 max_batch;
    gint64 busy_timeout;
    gint64 max_database_size;
    gboolean background_checkpoint;
    gint64 checkpoint_size;
  } Config;
  const Config *c;
  PbDiag *diag = pb_diag_new ();
  PbGeneration *gen;

  assert_true (g_file_get_contents (TOP_SRCDIR "/conf.d/10-storage-sqlite.conf", &shipped, NULL, NULL));
  pbt_write_file (f->conf, "00-core.conf", core);
  pbt_write_file (f->conf, "10-storage-sqlite.conf", shipped);
  gen = pb_generation_build (f->conf, f->state, NULL, TRUE, diag);
  if (gen == NULL)
    {
      g_autofree char *all = pb_diag_join (diag);
      fail_msg ("the shipped conf.d file is refused: %s", all);
    }
  c = pb_module_get_config (pb_generation_find_module (gen, "storage-sqlite"));
  assert_string_equal (c->database, "");
  assert_int_equal (c->free_space_reserve, 100 * 1024 * 1024);
  assert_int_equal (c->max_batch, 512);
  assert_int_equal (c->busy_timeout, 10000);
  assert_int_equal (c->max_database_size, 0);
  assert_true (c->background_checkpoint);
  assert_int_equal (c->checkpoint_size, 16 * 1024 * 1024);
  /* Uncommenting the shown values changes nothing. */
  {
    g_autoptr (GRegex) re = g_regex_new ("^#([a-z-]+ =)", G_REGEX_MULTILINE, 0, NULL);
    g_autofree char *uncommented = g_regex_replace (re, shipped, -1, 0, "\\1", 0, NULL);
    PbGeneration *gen2;
    pbt_write_file (f->conf, "10-storage-sqlite.conf", uncommented);
    gen2 = pb_generation_build (f->conf, f->state, NULL, TRUE, diag);
    if (gen2 == NULL)
      {
        g_autofree char *all = pb_diag_join (diag);
        fail_msg ("the shipped values are refused: %s", all);
      }
    c = pb_module_get_config (pb_generation_find_module (gen2, "storage-sqlite"));
    assert_int_equal (c->max_batch, 512);
    assert_int_equal (c->free_space_reserve, 100 * 1024 * 1024);
    pb_generation_unref (gen2);
  }
  pb_generation_unref (gen);
  pb_diag_free (diag);
}

static void
test_bad_settings (void **state)
{
  Fixture *f = *state;
  static const char *const bad[] = {
    "max-batch = 0\n",
    "free-space-reserve = lots\n",
    "busy-timeout = 1y\n",
    "colour = blue\n",
  };
  g_autofree char *core = g_strdup_printf ("[core]\nmodule-dir = %s/modules\n", TOP_BUILDDIR);

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autofree char *text = g_strconcat ("[module storage-sqlite]\n", bad[i], NULL);
      PbDiag *diag = pb_diag_new ();

      pbt_write_file (f->conf, "00-core.conf", core);
      pbt_write_file (f->conf, "10-storage-sqlite.conf", text);
      if (pb_generation_build (f->conf, f->state, NULL, TRUE, diag) != NULL)
        fail_msg ("case %u: '%s' accepted", i, bad[i]);
      if (diag->lines->len == 0)
        fail_msg ("case %u: no diagnostic", i);
      pb_diag_free (diag);
    }
}

#define OK (-1)

/* One request and what it must answer: an error code, or OK and maybe a result (GVariant text). */
typedef struct {
  const char *op;
  const char *args;
  int code;
  const char *expect;
} Case;

static void
run_cases (PbModule *mod, const char *table, const Case *cases, guint n)
{
  for (guint i = 0; i < n; i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GError) parse_error = NULL;
      GVariant *args = NULL;
      g_autoptr (GVariant) result = NULL;

      if (cases[i].args != NULL)
        {
          args = g_variant_parse (NULL, cases[i].args, NULL, NULL, &parse_error);
          if (args == NULL)
            fail_msg ("%s case %u: bad test arguments: %s", table, i, parse_error->message);
        }
      result = request (mod, cases[i].op, args, &error);
      if (cases[i].code == OK && error != NULL)
        fail_msg ("%s case %u (%s %s): failed: %s", table, i, cases[i].op, cases[i].args, error->message);
      if (cases[i].code != OK)
        {
          if (error == NULL)
            fail_msg ("%s case %u (%s %s): succeeded, expected error %d", table, i, cases[i].op, cases[i].args,
                      cases[i].code);
          if (!g_error_matches (error, PB_STORE_ERROR_DOMAIN, cases[i].code))
            fail_msg ("%s case %u (%s %s): error %d (%s), expected %d", table, i, cases[i].op, cases[i].args,
                      error->code, error->message, cases[i].code);
        }
      if (cases[i].expect != NULL)
        {
          g_autoptr (GVariant) expect = g_variant_parse (result != NULL ? g_variant_get_type (result) : NULL,
                                                         cases[i].expect, NULL, NULL, &parse_error);
          g_autofree char *got = result != NULL ? g_variant_print (result, TRUE) : g_strdup ("(nothing)");
          if (expect == NULL)
            fail_msg ("%s case %u: bad expectation: %s", table, i, parse_error->message);
          if (result == NULL || !g_variant_equal (result, expect))
            fail_msg ("%s case %u (%s %s): got %s, expected %s", table, i, cases[i].op, cases[i].args, got,
                      cases[i].expect);
        }
    }
}

static const Case directory_cases[] = {
  { "domain.add", "('Example.ORG', '', false)", OK, NULL },
  { "domain.add", "('example.org', '', true)", PB_STORE_ERROR_EXISTS, NULL },
  { "domain.add", "('alias.example', 'EXAMPLE.org', false)", OK, NULL },
  { "domain.add", "('shared.example', '', true)", OK, NULL },
  { "domain.add", "('shared-alias.example', 'shared.example', false)", OK, NULL },
  { "domain.add", "('alias2.example', 'alias.example', false)", PB_STORE_ERROR_INVALID, NULL },
  { "domain.add", "('x.example', 'nowhere.example', false)", PB_STORE_ERROR_INVALID, NULL },
  { "domain.add", "('self.example', 'self.example', false)", PB_STORE_ERROR_INVALID, NULL },
  { "domain.add", "('bad domain', '', false)", PB_STORE_ERROR_INVALID, NULL },
  { "domain.add", "('a@b.example', '', false)", PB_STORE_ERROR_INVALID, NULL },
  { "domain.add", "('', '', false)", PB_STORE_ERROR_INVALID, NULL },
  { "domain.list", NULL, OK,
    "[('alias.example', 'example.org', false), ('example.org', '', false), "
    "('shared-alias.example', 'shared.example', false), ('shared.example', '', true)]" },

  { "user.add", "('Bob@Example.org', '$y$j9T$salt$hash', 'SMTP, pop3', int64 0)", OK, NULL },
  { "user.add", "('bob@example.org', '$y$x', 'smtp', int64 0)", PB_STORE_ERROR_EXISTS, NULL },
  { "user.add", "('carol@alias.example', '$y$x', 'smtp', int64 0)", PB_STORE_ERROR_INVALID, NULL },
  { "user.add", "('carol@nowhere.example', '$y$x', 'smtp', int64 0)", PB_STORE_ERROR_INVALID, NULL },
  { "user.add", "('carol@example.org', 'secret', 'smtp', int64 0)", PB_STORE_ERROR_INVALID, NULL },
  { "user.add", "('carol@example.org', '$y$x', 'smtp', int64 -1)", PB_STORE_ERROR_INVALID, NULL },
  { "user.add", "('carol@example.org', '$y$x', 'smtp;pop3', int64 0)", PB_STORE_ERROR_INVALID, NULL },
  { "user.add", "('a@b@example.org', '$y$x', 'smtp', int64 0)", PB_STORE_ERROR_INVALID, NULL },
  { "user.add", "('carol@example.org', '$y$c', 'pop3', int64 1048576)", OK, NULL },
  { "user.add", "('dave', '$y$d', 'smtp,pop3', int64 0)", OK, NULL },
  { "user.add", "('postmaster', '!', '', int64 0)", OK, NULL },
  { "user.get", "('BOB@example.org',)", OK, "('bob@example.org', '$y$j9T$salt$hash', 'smtp,pop3', int64 0)" },
  { "user.get", "('nobody@example.org',)", PB_STORE_ERROR_NOT_FOUND, NULL },
  { "user.set", "('Carol@example.org', {'max-size': <int64 5>, 'protocols': <'SMTP'>})", OK, NULL },
  { "user.set", "('carol@example.org', {'colour': <'red'>})", PB_STORE_ERROR_INVALID, NULL },
  { "user.set", "('carol@example.org', {'max-size': <'5'>})", PB_STORE_ERROR_INVALID, NULL },
  { "user.set", "('carol@example.org', {'hash': <'plain text'>})", PB_STORE_ERROR_INVALID, NULL },
  { "user.set", "('nobody@example.org', @a{sv} {})", PB_STORE_ERROR_NOT_FOUND, NULL },
  { "user.set", "('carol@example.org', {'hash': <'$y$new'>})", OK, NULL },
  { "user.get", "('carol@example.org',)", OK, "('carol@example.org', '$y$new', 'smtp', int64 5)" },
  { "user.list", NULL, OK,
    "[('bob@example.org', 'smtp,pop3', int64 0, int64 0, int64 0), ('carol@example.org', 'smtp', 5, 0, 0),"
    " ('dave', 'smtp,pop3', 0, 0, 0), ('postmaster', '', 0, 0, 0)]" },

  { "alias.add", "('Info@example.org', 'Bob@example.org')", OK, NULL },
  { "alias.add", "('info@example.org', 'carol@example.org')", PB_STORE_ERROR_EXISTS, NULL },
  { "alias.add", "('bob@example.org', 'carol@example.org')", PB_STORE_ERROR_INVALID, NULL },
  { "alias.add", "('x@alias.example', 'bob@example.org')", PB_STORE_ERROR_INVALID, NULL },
  { "alias.add", "('x@nowhere.example', 'bob')", PB_STORE_ERROR_INVALID, NULL },
  { "alias.add", "('nodomain', 'bob')", PB_STORE_ERROR_INVALID, NULL },
  { "alias.add", "('loop@example.org', 'LOOP@example.org')", PB_STORE_ERROR_INVALID, NULL },
  { "alias.add", "('ext@example.org', 'someone@remote.example')", OK, NULL },
  { "alias.add", "('abuse@example.org', 'postmaster')", OK, NULL },
  { "alias.list", NULL, OK,
    "[('abuse@example.org', 'postmaster'), ('ext@example.org', 'someone@remote.example'),"
    " ('info@example.org', 'bob@example.org')]" },
  { "alias.del", "('ext@example.org',)", OK, NULL },
  { "alias.del", "('ext@example.org',)", PB_STORE_ERROR_NOT_FOUND, NULL },

  { "list.add", "('Team@example.org',)", OK, NULL },
  { "list.add", "('team@example.org',)", PB_STORE_ERROR_EXISTS, NULL },
  { "list.add", "('info@example.org',)", PB_STORE_ERROR_INVALID, NULL },
  { "list.add", "('bob@example.org',)", PB_STORE_ERROR_INVALID, NULL },
  { "list.add", "('all@nowhere.example',)", PB_STORE_ERROR_INVALID, NULL },
  { "alias.add", "('team@example.org', 'bob')", PB_STORE_ERROR_INVALID, NULL },
  { "user.add", "('team@example.org', '$y$t', '', int64 0)", PB_STORE_ERROR_INVALID, NULL },
  { "list.add-member", "('team@example.org', 'Bob@example.org')", OK, NULL },
  { "list.add-member", "('team@example.org', 'carol@example.org')", OK, NULL },
  { "list.add-member", "('team@example.org', 'friend@remote.example')", OK, NULL },
  { "list.add-member", "('team@example.org', 'bob@example.org')", PB_STORE_ERROR_EXISTS, NULL },
  { "list.add-member", "('team@example.org', 'team@example.org')", PB_STORE_ERROR_INVALID, NULL },
  { "list.add-member", "('none@example.org', 'bob@example.org')", PB_STORE_ERROR_NOT_FOUND, NULL },
  { "list.members", "('TEAM@example.org',)", OK, "['bob@example.org', 'carol@example.org', 'friend@remote.example']" },
  { "list.members", "('none@example.org',)", PB_STORE_ERROR_NOT_FOUND, NULL },
  { "list.del-member", "('team@example.org', 'friend@remote.example')", OK, NULL },
  { "list.del-member", "('team@example.org', 'friend@remote.example')", PB_STORE_ERROR_NOT_FOUND, NULL },
  { "list.del-member", "('none@example.org', 'bob@example.org')", PB_STORE_ERROR_NOT_FOUND, NULL },
  { "list.add", "('empty@example.org',)", OK, NULL },
  { "list.list", NULL, OK, "['empty@example.org', 'team@example.org']" },
  { "list.del", "('empty@example.org',)", OK, NULL },
  { "list.del", "('empty@example.org',)", PB_STORE_ERROR_NOT_FOUND, NULL },

  { "domain.del", "('example.org',)", PB_STORE_ERROR_INVALID, NULL },
  { "domain.del", "('shared.example',)", PB_STORE_ERROR_INVALID, NULL },
  { "domain.del", "('nowhere.example',)", PB_STORE_ERROR_NOT_FOUND, NULL },

  { "no.such-op", NULL, PB_STORE_ERROR_NOT_SUPPORTED, NULL },
  { "USER.GET", "('bob@example.org',)", PB_STORE_ERROR_NOT_SUPPORTED, NULL },
  { "user.get", "('a', 'b')", PB_STORE_ERROR_INVALID, NULL },
  { "user.get", NULL, PB_STORE_ERROR_INVALID, NULL },
  { "domain.list", "('x',)", PB_STORE_ERROR_INVALID, NULL },
  { "user.get", "('',)", PB_STORE_ERROR_INVALID, NULL },
};

static const Case lookup_cases[] = {
  { "directory.lookup", "('bob@example.org',)", OK, "(true, 'user', 'bob@example.org', @as [])" },
  { "directory.lookup", "('BOB@Alias.Example',)", OK, "(true, 'user', 'bob@example.org', @as [])" },
  { "directory.lookup", "('dave@shared.example',)", OK, "(true, 'user', 'dave', @as [])" },
  { "directory.lookup", "('Dave@Shared-Alias.example',)", OK, "(true, 'user', 'dave', @as [])" },
  { "directory.lookup", "('dave@example.org',)", OK, "(true, '', 'dave@example.org', @as [])" },
  { "directory.lookup", "('info@example.org',)", OK, "(true, 'alias', 'info@example.org', ['bob@example.org'])" },
  { "directory.lookup", "('info@alias.example',)", OK, "(true, 'alias', 'info@example.org', ['bob@example.org'])" },
  { "directory.lookup", "('abuse@example.org',)", OK, "(true, 'alias', 'abuse@example.org', ['postmaster'])" },
  { "directory.lookup", "('team@example.org',)", OK,
    "(true, 'list', 'team@example.org', ['bob@example.org', 'carol@example.org'])" },
  { "directory.lookup", "('nobody@example.org',)", OK, "(true, '', 'nobody@example.org', @as [])" },
  { "directory.lookup", "('nobody@alias.example',)", OK, "(true, '', 'nobody@example.org', @as [])" },
  { "directory.lookup", "('someone@remote.example',)", OK, "(false, '', 'someone@remote.example', @as [])" },
  { "directory.lookup", "('postmaster',)", OK, "(true, 'user', 'postmaster', @as [])" },
  { "directory.lookup", "('Postmaster',)", OK, "(true, 'user', 'postmaster', @as [])" },
  { "directory.lookup", "('nobody',)", OK, "(true, '', 'nobody', @as [])" },
  { "directory.lookup", "('a b@example.org',)", PB_STORE_ERROR_INVALID, NULL },
};

static const Case teardown_cases[] = {
  { "domain.del", "('alias.example',)", OK, NULL },
  { "directory.lookup", "('bob@alias.example',)", OK, "(false, '', 'bob@alias.example', @as [])" },
  { "list.del", "('team@example.org',)", OK, NULL },
  { "alias.del", "('info@example.org',)", OK, NULL },
  { "alias.del", "('abuse@example.org',)", OK, NULL },
  { "user.del", "('Carol@example.org',)", OK, NULL },
  { "user.del", "('carol@example.org',)", PB_STORE_ERROR_NOT_FOUND, NULL },
  { "user.del", "('bob@example.org',)", OK, NULL },
  { "domain.del", "('example.org',)", OK, NULL },
  { "domain.del", "('shared.example',)", PB_STORE_ERROR_INVALID, NULL },
  { "domain.del", "('shared-alias.example',)", OK, NULL },
  { "domain.del", "('shared.example',)", OK, NULL },
  { "domain.list", NULL, OK, "@a(ssb) []" },
  { "user.list", NULL, OK, "[('dave', 'smtp,pop3', int64 0, int64 0, int64 0), ('postmaster', '', 0, 0, 0)]" },
};

static void
test_directory (void **state)
{
  Fixture *f = *state;

  open_store (f, NULL);
  run_cases (f->mod, "directory", directory_cases, G_N_ELEMENTS (directory_cases));
  run_cases (f->mod, "lookup", lookup_cases, G_N_ELEMENTS (lookup_cases));
  /* The directory survives a restart. */
  close_store (f);
  open_store (f, NULL);
  run_cases (f->mod, "lookup after restart", lookup_cases, G_N_ELEMENTS (lookup_cases));
  run_cases (f->mod, "teardown", teardown_cases, G_N_ELEMENTS (teardown_cases));
  /* No password in clear: only the hash strings given are stored. */
  assert_int_equal (db_int (f, "SELECT count(*) FROM users WHERE hash NOT LIKE '$%' AND hash <> '!'"), 0);
}

static void
test_commit_local_and_remote (void **state)
{
  Fixture *f = *state;
  static const char text[] = "Subject: hello\r\n\r\nHello, world.\r\n";
  const char *rcpts[] = { "Bob@Example.org>Bob@Example.org", "friend@remote.example", "carol@example.org>carol@example.org", NULL };
  g_autofree char *qid = NULL;
  g_autoptr (GVariant) list = NULL;
  g_autoptr (GVariant) queue = NULL;
  g_autoptr (GVariant) stat = NULL;
  guint64 uid;
  const char *mid;
  gint64 size, received;

  open_store (f, NULL);
  setup_example (f->mod);
  qid = store_ok (f->mod, rcpts, (const guint8 *) text, strlen (text), 0);
  assert_true (strlen (qid) >= 12);
  for (const char *p = qid; *p != '\0'; p++)
    assert_true (g_ascii_isdigit (*p) || g_ascii_isupper (*p));
  assert_body (f->mod, qid, (const guint8 *) text, strlen (text), 65536);

  list = request_ok (f->mod, "mailbox.list", g_variant_new ("(s)", "BOB@example.org"));
  assert_int_equal (g_variant_n_children (list), 1);
  g_variant_get_child (list, 0, "(t&sxx&s)", &uid, &mid, &size, &received, NULL);
  assert_string_equal (mid, qid);
  assert_int_equal (size, strlen (text));
  assert_true (uid > 0);
  assert_true (received > 1600000000 && received <= g_get_real_time () / G_USEC_PER_SEC);

  stat = request_ok (f->mod, "mailbox.stat", g_variant_new ("(s)", "carol@example.org"));
  assert_true (g_variant_equal (stat, g_variant_new ("(tx)", (guint64) 1, (gint64) strlen (text))));

  queue = request_ok (f->mod, "queue.list", NULL);
  assert_int_equal (g_variant_n_children (queue), 1);
  {
    const char *q, *from, *to, *st, *reply;
    gint64 qsize, attempts, next;
    g_variant_get_child (queue, 0, "(&s&s&sx&sxx&s)", &q, &from, &to, &qsize, &st, &attempts, &next, &reply);
    assert_string_equal (q, qid);
    assert_string_equal (from, "sender@remote.example");
    assert_string_equal (to, "friend@remote.example");
    assert_int_equal (qsize, strlen (text));
    assert_string_equal (st, "pending");
    assert_int_equal (attempts, 0);
    assert_string_equal (reply, "");
  }
  assert_int_equal (db_int (f, "SELECT count(*) FROM queue WHERE dsn_notify = 'FAILURE'"), 1);
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages WHERE client_ip = '192.0.2.1' AND session_id = 's0001'"), 1);

  /* A mailbox that does not exist fails the commit, and nothing of it stays. */
  {
    const char *bad[] = { "nobody@example.org>nobody@example.org", NULL };
    g_autoptr (GError) error = NULL;
    g_autofree char *none = store_message (f->mod, bad, (const guint8 *) text, strlen (text), 0, &error);
    assert_null (none);
    assert_true (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND));
    assert_int_equal (db_int (f, "SELECT count(*) FROM messages"), 1);
  }
  /* An empty message is a message too. */
  {
    const char *one[] = { "bob@example.org>bob@example.org", NULL };
    g_autofree char *empty = store_ok (f->mod, one, NULL, 0, 0);
    assert_body (f->mod, empty, NULL, 0, 100);
  }
  /* Reading an unknown message. */
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (GByteArray) none = read_all (f->mod, "NOSUCHMESSAGE", 100, &error);
    assert_null (none);
    assert_true (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND));
  }
}

static void
test_write_patterns (void **state)
{
  Fixture *f = *state;
  const char *rcpts[] = { "bob@example.org>bob@example.org", NULL };
  static const struct {
    gsize len;
    gsize step;
    gsize read_max;
  } cases[] = {
    { 150 * 1024 + 7, 1, 65536 },         /* one octet at a time, across pieces */
    { 64 * 1024, 0, 1000 },               /* exactly one piece */
    { 64 * 1024 + 1, 4096, 65536 },
    { 1024 * 1024 + 3, 999, 7777 },       /* odd steps and odd reads */
    { 5 * 1024 * 1024, 0, 262144 },       /* a 5 MiB message in one write */
    { 5 * 1024 * 1024 + 11, 65536, 1 << 30 },
    { 3, 0, 1 },
  };
  g_autoptr (GPtrArray) qids = g_ptr_array_new_with_free_func (g_free);

  /* Small checkpoints: many run (on their own thread) while messages are written. */
  open_store (f, "checkpoint-size = 64K\n");
  setup_example (f->mod);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree guint8 *data = pattern (cases[i].len, i);
      char *qid = store_ok (f->mod, rcpts, data, cases[i].len, cases[i].step);
      g_ptr_array_add (qids, qid);
      assert_body (f->mod, qid, data, cases[i].len, cases[i].read_max);
    }
  assert_true (stat_u64 (f->mod, "checkpoints") > 0);
  /* Still intact after a restart, and reads from the middle work. */
  close_store (f);
  open_store (f, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree guint8 *data = pattern (cases[i].len, i);
      assert_body (f->mod, g_ptr_array_index (qids, i), data, cases[i].len, 65536);
    }
  {
    g_autofree guint8 *data = pattern (cases[4].len, 4);
    ReadWait w = { 0 };
    w.data = g_byte_array_new ();
    pb_store_message_read (f->mod, g_ptr_array_index (qids, 4), 3 * 1024 * 1024 + 5, 100000, read_done, &w);
    assert_true (pbt_loop_until (&w.done, WAIT_MS));
    assert_null (w.error);
    assert_false (w.eof);
    assert_int_equal (w.data->len, 100000);
    assert_memory_equal (w.data->data, data + 3 * 1024 * 1024 + 5, 100000);
    g_byte_array_unref (w.data);

    memset (&w, 0, sizeof w);
    w.data = g_byte_array_new ();
    pb_store_message_read (f->mod, g_ptr_array_index (qids, 4), cases[4].len + 10, 100, read_done, &w);
    assert_true (pbt_loop_until (&w.done, WAIT_MS));
    assert_null (w.error);
    assert_true (w.eof);
    assert_int_equal (w.data->len, 0);
    g_byte_array_unref (w.data);
  }
}

typedef struct {
  guint pending;
  gboolean finished;
  GPtrArray *qids;
  guint failed;
} Many;

static void
many_done (const char *queue_id, const GError *error, gpointer data)
{
  Many *m = data;

  if (queue_id != NULL)
    g_ptr_array_add (m->qids, g_strdup (queue_id));
  else
    m->failed++;
  m->finished = --m->pending == 0;
}

static void
test_group_commit (void **state)
{
  Fixture *f = *state;
  const char *rcpts[] = { "bob@example.org>bob@example.org", "carol@example.org>carol@example.org", NULL };
  enum { N = 100 };
  PbStoreMessage *msgs[N];
  Many many = { 0 };
  guint64 batches, commits;
  g_autoptr (GVariant) list = NULL;
  g_autoptr (GHashTable) order = g_hash_table_new (g_str_hash, g_str_equal);
  Env e;

  /* Checkpoints inline, between batches. */
  open_store (f, "background-checkpoint = false\ncheckpoint-size = 64K\n");
  setup_example (f->mod);
  batches = stat_u64 (f->mod, "fsync-batches");
  commits = stat_u64 (f->mod, "commits");

  many.qids = g_ptr_array_new_with_free_func (g_free);
  env_init (&e, rcpts);
  for (guint i = 0; i < N; i++)
    {
      g_autofree guint8 *data = pattern (4096, i);
      g_autoptr (GError) error = NULL;

      msgs[i] = pb_store_message_begin (f->mod, &e.env, &error);
      assert_non_null (msgs[i]);
      assert_true (pb_store_message_write (msgs[i], data, 4096, &error));
    }
  env_clear (&e);
  /* Issued together, as many sessions finishing DATA at once. */
  many.pending = N;
  for (guint i = 0; i < N; i++)
    pb_store_message_commit (msgs[i], many_done, &many);
  assert_true (pbt_loop_until (&many.finished, WAIT_MS));
  assert_int_equal (many.pending, 0);
  assert_int_equal (many.failed, 0);
  assert_int_equal (many.qids->len, N);

  assert_int_equal (stat_u64 (f->mod, "commits") - commits, N);
  batches = stat_u64 (f->mod, "fsync-batches") - batches;
  print_message ("%d commits issued together took %" G_GUINT64_FORMAT " fsync batches (largest %" G_GUINT64_FORMAT ")\n",
                 N, batches, stat_u64 (f->mod, "largest-batch"));
  assert_true (batches >= 1 && batches < N / 4);

  /* Every message is intact, UIDs increase in commit order, ids are unique. */
  for (guint i = 0; i < N; i++)
    {
      g_autofree guint8 *data = pattern (4096, i);
      const char *qid = g_ptr_array_index (many.qids, i);
      assert_false (g_hash_table_contains (order, qid));
      g_hash_table_insert (order, (gpointer) qid, GUINT_TO_POINTER (i + 1));
      assert_body (f->mod, qid, data, 4096, 65536);
    }
  assert_true (stat_u64 (f->mod, "checkpoints") > 0);
  list = request_ok (f->mod, "mailbox.list", g_variant_new ("(s)", "carol@example.org"));
  assert_int_equal (g_variant_n_children (list), N);
  for (guint i = 0; i < N; i++)
    {
      guint64 uid;
      const char *mid;
      gint64 size, received;
      g_variant_get_child (list, i, "(t&sxx&s)", &uid, &mid, &size, &received, NULL);
      assert_int_equal (GPOINTER_TO_UINT (g_hash_table_lookup (order, mid)), i + 1);
      assert_int_equal (size, 4096);
    }
  g_ptr_array_unref (many.qids);
}

typedef struct {
  guint pending;
  gboolean finished;
  char *qid[32];
  GError *error[32];
} Batch;

typedef struct {
  Batch *batch;
  guint index;
} BatchItem;

static void
batch_done (const char *queue_id, const GError *error, gpointer data)
{
  BatchItem *item = data;

  item->batch->qid[item->index] = g_strdup (queue_id);
  item->batch->error[item->index] = error != NULL ? g_error_copy (error) : NULL;
  item->batch->finished = --item->batch->pending == 0;
}

/* A message that fails inside a batch (its mailbox was deleted after
 * routing) fails alone: the others of the same transaction are stored. */
static void
test_batch_with_failures (void **state)
{
  Fixture *f = *state;
  const char *good[] = { "bob@example.org>bob@example.org", "x@remote.example", NULL };
  const char *gone[] = { "bob@example.org>bob@example.org", "carol@example.org>carol@example.org", NULL };
  enum { N = 20 };
  PbStoreMessage *msgs[N];
  BatchItem items[N];
  Batch batch = { 0 };
  gsize sizes[N];

  open_store (f, NULL);
  setup_example (f->mod);
  for (guint i = 0; i < N; i++)
    {
      g_autoptr (GError) error = NULL;
      g_autofree guint8 *data = NULL;
      Env e;

      /* Some span several pieces, written before the commit. */
      sizes[i] = i % 3 == 0 ? 150000 + i : 3000 + i;
      data = pattern (sizes[i], 100 + i);
      env_init (&e, i == 4 || i == 9 || i == 15 ? gone : good);
      msgs[i] = pb_store_message_begin (f->mod, &e.env, &error);
      env_clear (&e);
      assert_non_null (msgs[i]);
      assert_true (pb_store_message_write (msgs[i], data, sizes[i], &error));
    }
  g_variant_unref (request_ok (f->mod, "storage.stats", NULL));  /* the pieces reach the database */
  g_assert_null (request_ok (f->mod, "user.del", g_variant_new ("(s)", "carol@example.org")));
  batch.pending = N;
  for (guint i = 0; i < N; i++)
    {
      items[i].batch = &batch;
      items[i].index = i;
      pb_store_message_commit (msgs[i], batch_done, &items[i]);
    }
  assert_true (pbt_loop_until (&batch.finished, WAIT_MS));
  for (guint i = 0; i < N; i++)
    {
      if (i == 4 || i == 9 || i == 15)
        {
          if (batch.error[i] == NULL || !g_error_matches (batch.error[i], PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND))
            fail_msg ("message %u: expected NOT_FOUND, got %s", i, batch.error[i] ? batch.error[i]->message : "success");
          assert_null (batch.qid[i]);
        }
      else
        {
          g_autofree guint8 *data = pattern (sizes[i], 100 + i);
          if (batch.error[i] != NULL)
            fail_msg ("message %u failed: %s", i, batch.error[i]->message);
          assert_body (f->mod, batch.qid[i], data, sizes[i], 65536);
        }
      g_free (batch.qid[i]);
      g_clear_error (&batch.error[i]);
    }
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages"), N - 3);
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages WHERE state = 'receiving'"), 0);
  assert_int_equal (db_int (f, "SELECT count(*) FROM mailbox"), N - 3);
  assert_int_equal (db_int (f, "SELECT count(*) FROM queue"), N - 3);
  assert_int_equal (db_int (f, "SELECT count(*) FROM chunks WHERE message_id NOT IN (SELECT id FROM messages)"), 0);
  assert_int_equal (db_int (f, "SELECT sum(length(data)) FROM chunks"),
                    db_int (f, "SELECT sum(size) FROM messages"));
}

static guint64
last_uid (PbModule *mod, const char *user)
{
  g_autoptr (GVariant) list = request_ok (mod, "mailbox.list", g_variant_new ("(s)", user));
  guint64 uid = 0;
  gsize n = g_variant_n_children (list);

  if (n > 0)
    g_variant_get_child (list, n - 1, "(t&sxx&s)", &uid, NULL, NULL, NULL, NULL);
  return uid;
}

static guint64
uid_of (PbModule *mod, const char *user, const char *qid)
{
  g_autoptr (GVariant) list = request_ok (mod, "mailbox.list", g_variant_new ("(s)", user));

  for (gsize i = 0; i < g_variant_n_children (list); i++)
    {
      guint64 uid;
      const char *mid;
      g_variant_get_child (list, i, "(t&sxx&s)", &uid, &mid, NULL, NULL, NULL);
      if (strcmp (mid, qid) == 0)
        return uid;
    }
  return 0;
}

static guint64
mailbox_delete (PbModule *mod, const char *user, guint64 uid)
{
  g_autoptr (GVariant) r = request_ok (mod, "mailbox.delete",
                                       g_variant_new ("(s@at)", user, g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, &uid, 1, sizeof uid)));
  return g_variant_get_uint64 (r);
}

static void
assert_gone (PbModule *mod, const char *qid)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GByteArray) got = read_all (mod, qid, 1000, &error);

  assert_null (got);
  assert_true (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND));
}

static void
test_mailbox_delete_refcount (void **state)
{
  Fixture *f = *state;
  const char *both[] = { "list@example.org>bob@example.org", "list@example.org>carol@example.org", NULL };
  const char *bob_only[] = { "bob@example.org>bob@example.org", NULL };
  const char *bob_and_remote[] = { "bob@example.org>bob@example.org", "x@remote.example", NULL };
  g_autofree guint8 *data = pattern (200 * 1024, 7);
  g_autofree char *shared = NULL;
  g_autofree char *mine = NULL;
  g_autofree char *queued = NULL;
  g_autofree char *later = NULL;
  guint64 uid_shared_bob, uid_shared_carol, uid_mine, top;

  open_store (f, NULL);
  setup_example (f->mod);
  shared = store_ok (f->mod, both, data, 200 * 1024, 0);
  mine = store_ok (f->mod, bob_only, data, 1000, 0);
  queued = store_ok (f->mod, bob_and_remote, data, 70000, 0);
  uid_shared_bob = uid_of (f->mod, "bob@example.org", shared);
  uid_shared_carol = uid_of (f->mod, "carol@example.org", shared);
  uid_mine = uid_of (f->mod, "bob@example.org", mine);
  assert_true (uid_shared_bob != 0 && uid_shared_carol != 0 && uid_shared_bob != uid_shared_carol);
  assert_true (uid_mine > uid_shared_bob && uid_mine > uid_shared_carol);

  /* Another user's UID is not bob's to delete. */
  assert_int_equal (mailbox_delete (f->mod, "bob@example.org", uid_shared_carol), 0);
  /* The body stays while carol still has it. */
  assert_int_equal (mailbox_delete (f->mod, "bob@example.org", uid_shared_bob), 1);
  assert_int_equal (mailbox_delete (f->mod, "bob@example.org", uid_shared_bob), 0);
  assert_body (f->mod, shared, data, 200 * 1024, 65536);
  assert_int_equal (mailbox_delete (f->mod, "carol@example.org", uid_shared_carol), 1);
  assert_gone (f->mod, shared);
  assert_int_equal (db_int (f, "SELECT count(*) FROM chunks WHERE message_id NOT IN (SELECT id FROM messages)"), 0);

  /* A pending queue entry keeps a body alive after its mailbox entry goes. */
  assert_int_equal (mailbox_delete (f->mod, "bob@example.org", uid_of (f->mod, "bob@example.org", queued)), 1);
  assert_body (f->mod, queued, data, 70000, 65536);

  /* Delete the newest entry: the next message still gets a larger UID. */
  top = last_uid (f->mod, "bob@example.org");
  assert_int_equal (top, uid_mine);
  assert_int_equal (mailbox_delete (f->mod, "bob@example.org", uid_mine), 1);
  assert_gone (f->mod, mine);
  close_store (f);
  open_store (f, NULL);
  later = store_ok (f->mod, bob_only, data, 10, 0);
  assert_true (uid_of (f->mod, "bob@example.org", later) > top);

  /* Deleting a user deletes its mailbox and frees what only it held. */
  {
    g_autoptr (GVariant) r = request_ok (f->mod, "user.del", g_variant_new ("(s)", "bob@example.org"));
    g_autoptr (GError) error = NULL;
    g_autoptr (GVariant) none = request (f->mod, "mailbox.list", g_variant_new ("(s)", "bob@example.org"), &error);
    assert_true (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND));
  }
  assert_gone (f->mod, later);
  assert_body (f->mod, queued, data, 70000, 65536);
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages"), 1);
  assert_int_equal (db_int (f, "SELECT count(*) FROM mailbox"), 0);
}

static void
test_abort (void **state)
{
  Fixture *f = *state;
  const char *rcpts[] = { "bob@example.org>bob@example.org", NULL };
  g_autofree guint8 *data = pattern (300 * 1024, 3);
  g_autoptr (GError) error = NULL;
  PbStoreMessage *msg;
  Env e;

  open_store (f, NULL);
  setup_example (f->mod);
  env_init (&e, rcpts);

  /* Aborted after pieces reached the database. */
  msg = pb_store_message_begin (f->mod, &e.env, &error);
  assert_non_null (msg);
  assert_true (pb_store_message_write (msg, data, 300 * 1024, &error));
  assert_int_equal (stat_u64 (f->mod, "commits"), 0);  /* a request: the pieces before it are written */
  assert_true (db_int (f, "SELECT count(*) FROM chunks") > 0);
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages WHERE state = 'receiving'"), 1);
  pb_store_message_abort (msg);

  /* Aborted before anything reached the storage thread. */
  msg = pb_store_message_begin (f->mod, &e.env, &error);
  assert_non_null (msg);
  assert_true (pb_store_message_write (msg, data, 100, &error));
  pb_store_message_abort (msg);
  env_clear (&e);

  assert_int_equal (stat_u64 (f->mod, "commits"), 0);
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages"), 0);
  assert_int_equal (db_int (f, "SELECT count(*) FROM chunks"), 0);
  assert_int_equal (db_int (f, "SELECT count(*) FROM mailbox"), 0);
}

static void
test_recovery (void **state)
{
  Fixture *f = *state;
  const char *rcpts[] = { "bob@example.org>bob@example.org", NULL };
  g_autofree guint8 *data = pattern (200 * 1024, 9);
  g_autofree char *kept = NULL;

  open_store (f, NULL);
  setup_example (f->mod);
  kept = store_ok (f->mod, rcpts, data, 100, 0);
  close_store (f);

  /* What a killed instance leaves: a 'receiving' message whose owner holds no lock. */
  db_exec (f, "INSERT INTO messages (id, state, owner, sender, received) VALUES (1000, 'receiving', 12345, 'x', 0);"
              "INSERT INTO chunks (message_id, pos, data) VALUES (1000, 0, x'00112233');"
              "INSERT INTO messages (id, state, owner, sender, received) VALUES (1001, 'receiving', 0, 'y', 0);"
              "UPDATE counters SET value = 1001 WHERE name = 'message-id';");
  open_store (f, NULL);
  assert_int_equal (stat_u64 (f->mod, "recovered"), 2);
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages WHERE state = 'receiving'"), 0);
  assert_int_equal (db_int (f, "SELECT count(*) FROM chunks WHERE message_id = 1000"), 0);
  assert_body (f->mod, kept, data, 100, 1000);
  /* Row ids are never reused, so neither are queue ids. */
  {
    g_autofree char *next = store_ok (f->mod, rcpts, data, 10, 0);
    assert_true (db_int (f, "SELECT max(id) FROM messages") > 1001);
  }
}

/* During a reload two instances share the database: the new one must not
 * take the old one's half-received message for debris. */
static void
test_two_instances (void **state)
{
  Fixture *f = *state;
  const char *rcpts[] = { "bob@example.org>bob@example.org", NULL };
  g_autofree guint8 *data = pattern (300 * 1024, 11);
  g_autoptr (GError) error = NULL;
  PbGeneration *old_gen;
  PbModule *old_mod;
  PbStoreMessage *msg;
  CommitWait w = { 0 };
  Env e;

  open_store (f, NULL);
  setup_example (f->mod);
  old_gen = g_steal_pointer (&f->gen);
  old_mod = f->mod;

  env_init (&e, rcpts);
  msg = pb_store_message_begin (old_mod, &e.env, &error);
  env_clear (&e);
  assert_non_null (msg);
  assert_true (pb_store_message_write (msg, data, 200 * 1024, &error));
  assert_int_equal (stat_u64 (old_mod, "commits"), 0);
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages WHERE state = 'receiving'"), 1);

  open_store (f, NULL);
  assert_int_equal (stat_u64 (f->mod, "recovered"), 0);
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages WHERE state = 'receiving'"), 1);

  /* Both write: the old one finishes its message, the new one takes another. */
  assert_true (pb_store_message_write (msg, data + 200 * 1024, 100 * 1024, &error));
  pb_store_message_commit (msg, commit_done, &w);
  {
    g_autofree char *other = store_ok (f->mod, rcpts, data, 5000, 0);
    assert_body (old_mod, other, data, 5000, 65536);
  }
  assert_true (pbt_loop_until (&w.done, WAIT_MS));
  assert_null (w.error);
  assert_body (f->mod, w.queue_id, data, 300 * 1024, 65536);
  g_free (w.queue_id);
  pb_generation_unref (old_gen);
}

static void
test_free_space_reserve (void **state)
{
  Fixture *f = *state;
  const char *rcpts[] = { "bob@example.org>bob@example.org", NULL };
  g_autoptr (GError) error = NULL;
  PbStoreMessage *msg;
  Env e;

  open_store (f, "free-space-reserve = 4000000000G\n");
  setup_example (f->mod);
  env_init (&e, rcpts);
  msg = pb_store_message_begin (f->mod, &e.env, &error);
  env_clear (&e);
  assert_null (msg);
  assert_true (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NO_SPACE));
  assert_non_null (strstr (error->message, "free-space reserve"));
  /* The directory still works. */
  assert_int_equal (last_uid (f->mod, "bob@example.org"), 0);
}

static void
test_disk_full (void **state)
{
  Fixture *f = *state;
  const char *rcpts[] = { "bob@example.org>bob@example.org", NULL };
  g_autofree guint8 *data = pattern (5 * 1024 * 1024, 5);
  g_autofree char *before = NULL;
  g_autofree char *after = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *none = NULL;

  /* max-database-size stands in for a full disk: SQLite answers SQLITE_FULL. */
  open_store (f, "max-database-size = 1M\n");
  setup_example (f->mod);
  before = store_ok (f->mod, rcpts, data, 20000, 0);
  none = store_message (f->mod, rcpts, data, 5 * 1024 * 1024, 65536, &error);
  assert_null (none);
  if (!g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NO_SPACE))
    fail_msg ("expected NO_SPACE, got %s", error->message);
  while (pbt_log_expect ("storage transaction failed"))
    ;
  /* What was stored is intact, and once space is back (the failed message's
   * pieces are deleted) small messages go in again. */
  assert_body (f->mod, before, data, 20000, 65536);
  after = store_ok (f->mod, rcpts, data, 1000, 0);
  assert_body (f->mod, after, data, 1000, 65536);
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages WHERE state = 'receiving'"), 0);
  assert_int_equal (last_uid (f->mod, "bob@example.org"), uid_of (f->mod, "bob@example.org", after));
}

/* Stores a message with ORIGIN (NULL: none), written through an envelope of
 * STRUCT_SIZE octets (a module built against ABI 1.0 passes less). */
static char *
store_with_origin (PbModule *mod, const char *origin, gsize struct_size, GError **error)
{
  static const char text[] = "Subject: collected\r\n\r\nbody\r\n";
  const char *rcpts[] = { "bob@example.org>bob@example.org", NULL };
  Env e;
  PbStoreMessage *msg;
  CommitWait w = { 0 };

  env_init (&e, rcpts);
  e.env.origin = origin;
  e.env.struct_size = struct_size;
  msg = pb_store_message_begin (mod, &e.env, error);
  env_clear (&e);
  if (msg == NULL)
    return NULL;
  if (!pb_store_message_write (msg, text, strlen (text), error))
    {
      pb_store_message_abort (msg);
      return NULL;
    }
  pb_store_message_commit (msg, commit_done, &w);
  if (!pbt_loop_until (&w.done, WAIT_MS))
    fail_msg ("commit: no answer");
  if (w.error != NULL)
    {
      g_propagate_error (error, w.error);
      return NULL;
    }
  return w.queue_id;
}

/* The same origin twice: the second commit fails with EXISTS and leaves
 * nothing behind, also when both commits share one transaction. */
static void
test_origin (void **state)
{
  Fixture *f = *state;
  g_autoptr (GError) error = NULL;
  g_autofree char *first = NULL;
  g_autofree char *second = NULL;
  g_autofree char *plain = NULL;
  g_autofree char *old_abi = NULL;
  g_autoptr (GVariant) list = NULL;
  g_autoptr (GVariant) n = NULL;
  gint64 before = g_get_real_time () / G_USEC_PER_SEC;
  const char *key;
  gint64 seen;

  open_store (f, NULL);
  setup_example (f->mod);
  first = store_with_origin (f->mod, "pop3-collector/isp/UID1", sizeof (PbEnvelope), &error);
  assert_non_null (first);
  second = store_with_origin (f->mod, "pop3-collector/isp/UID1", sizeof (PbEnvelope), &error);
  assert_null (second);
  assert_true (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_EXISTS));
  g_clear_error (&error);
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages"), 1);
  assert_int_equal (db_int (f, "SELECT count(*) FROM mailbox"), 1);
  assert_int_equal (db_int (f, "SELECT count(*) FROM chunks WHERE message_id NOT IN (SELECT id FROM messages)"), 0);

  /* No origin, or an envelope from ABI 1.0 (no origin field): stored every time. */
  plain = store_with_origin (f->mod, NULL, sizeof (PbEnvelope), &error);
  assert_non_null (plain);
  old_abi = store_with_origin (f->mod, "ignored", G_STRUCT_OFFSET (PbEnvelope, origin), &error);
  assert_non_null (old_abi);
  assert_int_equal (db_int (f, "SELECT count(*) FROM origin"), 1);

  /* Two commits of one origin in one transaction (group commit). */
  {
    const char *rcpts[] = { "bob@example.org>bob@example.org", NULL };
    CommitWait w[2] = { { 0 }, { 0 } };
    PbStoreMessage *msg[2];
    Env e;

    env_init (&e, rcpts);
    e.env.origin = "pop3-collector/isp/UID2";
    for (guint i = 0; i < 2; i++)
      {
        msg[i] = pb_store_message_begin (f->mod, &e.env, &error);
        assert_non_null (msg[i]);
        assert_true (pb_store_message_write (msg[i], "x\r\n", 3, &error));
      }
    env_clear (&e);
    for (guint i = 0; i < 2; i++)
      pb_store_message_commit (msg[i], commit_done, &w[i]);
    assert_true (pbt_loop_until (&w[0].done, WAIT_MS) && pbt_loop_until (&w[1].done, WAIT_MS));
    assert_non_null (w[0].queue_id);
    assert_null (w[1].queue_id);
    assert_true (g_error_matches (w[1].error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_EXISTS));
    g_free (w[0].queue_id);
    g_clear_error (&w[1].error);
  }
  assert_int_equal (db_int (f, "SELECT count(*) FROM messages"), 4);

  /* The record outlives its message: deleted from the mailbox, still known. */
  {
    g_autoptr (GVariant) mb = request_ok (f->mod, "mailbox.list", g_variant_new ("(s)", "bob@example.org"));
    guint64 uid;
    g_autoptr (GVariant) del = NULL;

    g_variant_get_child (mb, 0, "(tsxxs)", &uid, NULL, NULL, NULL, NULL);
    del = request_ok (f->mod, "mailbox.delete", g_variant_new_parsed ("(%s, [%t])", "bob@example.org", uid));
  }
  second = store_with_origin (f->mod, "pop3-collector/isp/UID1", sizeof (PbEnvelope), &error);
  assert_null (second);
  assert_true (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_EXISTS));
  g_clear_error (&error);

  /* origin.list by prefix, in key order, with the time first seen. */
  g_free (store_with_origin (f->mod, "pop3-collector/other/A", sizeof (PbEnvelope), &error));
  list = request_ok (f->mod, "origin.list", g_variant_new ("(s)", "pop3-collector/isp/"));
  assert_true (g_variant_is_of_type (list, G_VARIANT_TYPE ("a(sx)")));
  assert_int_equal (g_variant_n_children (list), 2);
  g_variant_get_child (list, 0, "(&sx)", &key, &seen);
  assert_string_equal (key, "pop3-collector/isp/UID1");
  assert_true (seen >= before && seen <= g_get_real_time () / G_USEC_PER_SEC);
  g_variant_get_child (list, 1, "(&sx)", &key, &seen);
  assert_string_equal (key, "pop3-collector/isp/UID2");
  g_clear_pointer (&list, g_variant_unref);
  list = request_ok (f->mod, "origin.list", g_variant_new ("(s)", ""));
  assert_int_equal (g_variant_n_children (list), 3);

  /* origin.forget: one key, a prefix, a batch; an empty key is refused. */
  n = request_ok (f->mod, "origin.forget", g_variant_new ("(sb)", "pop3-collector/isp/UID1", FALSE));
  assert_int_equal (g_variant_get_uint64 (n), 1);
  g_clear_pointer (&n, g_variant_unref);
  n = request_ok (f->mod, "origin.forget-keys", g_variant_new_parsed ("(['pop3-collector/isp/UID2', 'nope'],)"));
  assert_int_equal (g_variant_get_uint64 (n), 1);
  g_clear_pointer (&n, g_variant_unref);
  g_clear_pointer (&list, g_variant_unref);
  list = request (f->mod, "origin.forget", g_variant_new ("(sb)", "", TRUE), &error);
  assert_true (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID));
  g_clear_error (&error);
  n = request_ok (f->mod, "origin.forget", g_variant_new ("(sb)", "pop3-collector/", TRUE));
  assert_int_equal (g_variant_get_uint64 (n), 1);
  assert_int_equal (db_int (f, "SELECT count(*) FROM origin"), 0);
  /* Forgotten: the same origin may be stored again. */
  g_clear_pointer (&first, g_free);
  first = store_with_origin (f->mod, "pop3-collector/isp/UID1", sizeof (PbEnvelope), &error);
  assert_non_null (first);
}

/* A database of schema version 2 (before origins) is migrated in place:
 * its messages stay, the origin table appears. */
static void
test_migration_from_v2 (void **state)
{
  Fixture *f = *state;
  g_autofree char *qid = NULL;
  g_autoptr (GError) error = NULL;
  const char *rcpts[] = { "bob@example.org>bob@example.org", NULL };
  static const char text[] = "Subject: old\r\n\r\nfrom version 2\r\n";

  open_store (f, NULL);
  setup_example (f->mod);
  qid = store_ok (f->mod, rcpts, (const guint8 *) text, strlen (text), 0);
  close_store (f);
  /* Back to what version 2 left: no origin table, no queue.warned, version 2 recorded. */
  db_exec (f, "DROP TABLE origin; ALTER TABLE queue DROP COLUMN warned;"
              " DELETE FROM schema_migrations WHERE version >= 3; PRAGMA user_version = 2;");
  assert_int_equal (db_int (f, "SELECT count(*) FROM sqlite_master WHERE name = 'origin'"), 0);

  open_store (f, NULL);
  assert_int_equal (stat_u64 (f->mod, "schema-version"), 4);
  assert_int_equal (db_int (f, "PRAGMA user_version"), 4);
  assert_int_equal (db_int (f, "SELECT count(*) FROM schema_migrations WHERE version IN (3, 4)"), 2);
  assert_int_equal (db_int (f, "SELECT count(*) FROM pragma_table_info('queue') WHERE name = 'warned'"), 1);
  assert_body (f->mod, qid, (const guint8 *) text, strlen (text), 1000);
  g_free (store_with_origin (f->mod, "pop3-collector/x/1", sizeof (PbEnvelope), &error));
  g_assert_no_error (error);
  assert_int_equal (db_int (f, "SELECT count(*) FROM origin"), 1);
}

static void
test_newer_schema_refused (void **state)
{
  Fixture *f = *state;
  g_autofree char *dir = g_build_filename (f->state, "storage-sqlite", NULL);
  g_autoptr (GError) error = NULL;
  PbGeneration *gen;

  g_mkdir (dir, 0700);
  db_exec (f, "PRAGMA user_version = 99");
  gen = open_gen (f, NULL, &error);
  assert_null (gen);
  assert_non_null (strstr (error->message, "schema version 99"));
  assert_int_equal (db_int (f, "PRAGMA user_version"), 99);
}

static void
test_not_started (void **state)
{
  Fixture *f = *state;
  g_autofree char *core = g_strdup_printf ("[core]\nmodule-dir = %s/modules\n", TOP_BUILDDIR);
  const char *rcpts[] = { "bob@example.org>bob@example.org", NULL };
  PbDiag *diag = pb_diag_new ();
  PbGeneration *gen;
  PbModule *mod;
  g_autoptr (GError) error = NULL;
  g_autoptr (GError) rerror = NULL;
  g_autoptr (GVariant) r = NULL;
  Env e;

  /* Built (as for --check-config) but never started: calls fail cleanly. */
  pbt_write_file (f->conf, "00-core.conf", core);
  pbt_write_file (f->conf, "10-storage-sqlite.conf", "[module storage-sqlite]\n");
  gen = pb_generation_build (f->conf, f->state, NULL, FALSE, diag);
  pb_diag_free (diag);
  assert_non_null (gen);
  mod = pb_generation_find_module (gen, "storage-sqlite");
  env_init (&e, rcpts);
  assert_null (pb_store_message_begin (mod, &e.env, &error));
  env_clear (&e);
  assert_true (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED));
  r = request (mod, "domain.list", NULL, &rerror);
  assert_null (r);
  assert_true (g_error_matches (rerror, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED));
  pb_generation_unref (gen);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_start_schema_and_files, setup, teardown),
    cmocka_unit_test_setup_teardown (test_database_setting, setup, teardown),
    cmocka_unit_test_setup_teardown (test_check_config_opens_nothing, setup, teardown),
    cmocka_unit_test_setup_teardown (test_shipped_conf, setup, teardown),
    cmocka_unit_test_setup_teardown (test_bad_settings, setup, teardown),
    cmocka_unit_test_setup_teardown (test_directory, setup, teardown),
    cmocka_unit_test_setup_teardown (test_commit_local_and_remote, setup, teardown),
    cmocka_unit_test_setup_teardown (test_write_patterns, setup, teardown),
    cmocka_unit_test_setup_teardown (test_group_commit, setup, teardown),
    cmocka_unit_test_setup_teardown (test_batch_with_failures, setup, teardown),
    cmocka_unit_test_setup_teardown (test_mailbox_delete_refcount, setup, teardown),
    cmocka_unit_test_setup_teardown (test_abort, setup, teardown),
    cmocka_unit_test_setup_teardown (test_recovery, setup, teardown),
    cmocka_unit_test_setup_teardown (test_two_instances, setup, teardown),
    cmocka_unit_test_setup_teardown (test_free_space_reserve, setup, teardown),
    cmocka_unit_test_setup_teardown (test_disk_full, setup, teardown),
    cmocka_unit_test_setup_teardown (test_origin, setup, teardown),
    cmocka_unit_test_setup_teardown (test_migration_from_v2, setup, teardown),
    cmocka_unit_test_setup_teardown (test_newer_schema_refused, setup, teardown),
    cmocka_unit_test_setup_teardown (test_not_started, setup, teardown),
  };

  lt_dlinit ();
  return cmocka_run_group_tests (tests, NULL, NULL);
}
