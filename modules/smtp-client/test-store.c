/* SPDX-License-Identifier: MIT */
/* Test fixture for the transports: a storage backend that serves message bodies from files, in small chunks. */

/*
 * `[module smtpc-test-store]` with `dir = DIR` serves message QUEUE_ID as
 * the file DIR/QUEUE_ID, at most `chunk` octets per read, every read
 * answered from the loop (as a real backend's thread would). A missing
 * file is a read error. Nothing else is supported: the transports' tests
 * only read bodies. Never installed.
 */
#include <pillarbox/pillarbox.h>

#include <string.h>

typedef struct {
  char *dir;
  gint64 chunk;
} StoreConfig;

static const PbSetting store_settings[] = {
  PB_SETTING_PATH (StoreConfig, dir, "dir", NULL, "Where the message files are."),
  PB_SETTING_INT (StoreConfig, chunk, "chunk", "65536", 1, 1 << 24, "The most octets one read returns."),
  PB_SETTINGS_END
};

typedef struct {
  PbStoreReadFunc done;
  gpointer user_data;
  GBytes *data;
  gboolean eof;
  GError *error;
} Read;

static gboolean
read_answer (gpointer p)
{
  Read *r = p;
  gsize len = 0;
  const guint8 *data = r->data != NULL ? g_bytes_get_data (r->data, &len) : NULL;

  r->done (data, len, r->eof, r->error, r->user_data);
  if (r->data != NULL)
    g_bytes_unref (r->data);
  g_clear_error (&r->error);
  g_free (r);
  return G_SOURCE_REMOVE;
}

static void
store_read (gpointer backend, const char *id, gint64 offset, gsize max, PbStoreReadFunc done, gpointer user_data)
{
  const StoreConfig *c = backend;
  g_autofree char *path = g_build_filename (c->dir, id, NULL);
  g_autofree char *text = NULL;
  gsize len = 0;
  Read *r = g_new0 (Read, 1);

  r->done = done;
  r->user_data = user_data;
  if (!g_file_get_contents (path, &text, &len, &r->error))
    r->eof = TRUE;
  else
    {
      gsize n = (gsize) offset < len ? MIN (len - (gsize) offset, MIN (max, (gsize) c->chunk)) : 0;
      r->data = g_bytes_new (text + MIN ((gsize) offset, len), n);
      r->eof = (gsize) offset + n >= len;
    }
  g_idle_add (read_answer, r);
}

static gpointer
store_begin (gpointer backend, const PbEnvelope *envelope, GError **error)
{
  g_set_error_literal (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_SUPPORTED, "the test store only reads");
  return NULL;
}

static gboolean
store_write (gpointer backend, gpointer message, const guint8 *data, gsize len, GError **error)
{
  g_set_error_literal (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_SUPPORTED, "the test store only reads");
  return FALSE;
}

static void
store_commit (gpointer backend, gpointer message, PbStoreCommitFunc done, gpointer user_data)
{
  g_autoptr (GError) error = g_error_new_literal (PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_SUPPORTED, "read only");
  done (NULL, error, user_data);
}

static void
store_abort (gpointer backend, gpointer message)
{
}

static void
store_request (gpointer backend, const char *operation, GVariant *args, PbStoreResultFunc done, gpointer user_data)
{
  g_autoptr (GError) error = g_error_new (PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_SUPPORTED,
                                          "the test store does not do %s", operation);
  if (done != NULL)
    done (NULL, error, user_data);
}

static gboolean
store_init (PbModule *module, const void *config, GError **error)
{
  PbStorageSpec spec = {
    .struct_size = sizeof spec,
    .name = "smtpc-test-store",
    .backend = (gpointer) config,
    .message_begin = store_begin,
    .message_write = store_write,
    .message_commit = store_commit,
    .message_abort = store_abort,
    .message_read = store_read,
    .request = store_request,
  };
  return pb_module_set_storage (module, &spec, error);
}

PB_MODULE_DEFINE (
  .name = "smtpc-test-store",
  .version = "1",
  .summary = "Test fixture: message bodies from files, for the transports' tests",
  .init = store_init,
  .settings = store_settings,
  .config_size = sizeof (StoreConfig));
