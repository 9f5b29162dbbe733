/* SPDX-License-Identifier: MIT */
/* storage-sqlite: the embedded default storage backend (descriptor, settings, init/start/fini). */
#include "config.h"
#include "sqlite-private.h"

/*
 * The design is in docs/storage-sqlite.md. In short: one storage thread
 * per instance owns the SQLite connection (WAL, synchronous=FULL for
 * commits); the loop thread buffers message pieces and queues jobs; the
 * thread writes every commit queued at the moment in one transaction
 * (group commit) and posts the replies back to the loop. A second thread
 * with a connection of its own only runs checkpoints.
 */

static const PbSetting sq_settings[] = {
  PB_SETTING_PATH (SqConfig, database, "database", "",
                   "The SQLite database file. Empty means STATE_DIR/storage-sqlite/pillarbox.db; a relative "
                   "name is taken from the configuration directory. Its directory is created (mode 0700) if "
                   "missing; the write-ahead log and lock files live beside it."),
  PB_SETTING_SIZE (SqConfig, free_space_reserve, "free-space-reserve", "100M", 0, G_MAXINT64,
                   "New messages are refused with a temporary failure (SMTP 452 4.3.1) while the file system "
                   "of the database has less than this much free space; messages already stored are not "
                   "touched. 0 turns the check off."),
  PB_SETTING_INT (SqConfig, max_batch, "max-batch", "512", 1, 100000,
                  "The most message commits written in one transaction (and so made durable by one fsync)."),
  PB_SETTING_DURATION (SqConfig, busy_timeout, "busy-timeout", "10s", 0, 600000,
                       "How long to wait for the database when another connection holds its write lock "
                       "(during a reload the old and the new instance share the file)."),
  PB_SETTING_SIZE (SqConfig, max_database_size, "max-database-size", "0", 0, G_MAXINT64,
                   "A hard cap on the database file; beyond it messages fail as if the disk were full. "
                   "0 means no cap."),
  PB_SETTING_BOOL (SqConfig, background_checkpoint, "background-checkpoint", "true",
                   "Copy the write-ahead log into the database from a second thread with a connection of its "
                   "own, so commits never wait for it. With false the storage thread does it between "
                   "batches (then every SQLite call happens on that one thread), at about a third of the "
                   "commit rate under load."),
  PB_SETTING_SIZE (SqConfig, checkpoint_size, "checkpoint-size", "16M", 16 * 1024, 1024 * 1024 * 1024,
                   "A checkpoint starts once the write-ahead log holds this much. Larger means fewer, longer "
                   "checkpoints and a longer log to replay after a crash."),
  PB_SETTINGS_END
};

static gboolean
sqlite_init (PbModule *module, const void *config, GError **error)
{
  SqStore *store = sq_store_new (module, config);
  PbStorageSpec spec;

  /* No files and no threads here: init also runs for --check-config, and
   * before privileges are dropped. */
  pb_module_set_data (module, store, sq_store_unref);
  sq_api_fill_spec (store, &spec);
  return pb_module_set_storage (module, &spec, error);
}

static gboolean
sqlite_start (PbModule *module, GError **error)
{
  return sq_store_start (pb_module_get_data (module), error);
}

static void
sqlite_fini (PbModule *module)
{
  sq_store_stop (pb_module_get_data (module));
}

PB_MODULE_DEFINE (
  .name = "storage-sqlite",
  .version = PACKAGE_VERSION,
  .summary = "Embedded storage in SQLite: messages, mailboxes, queue and directory, with group commit",
  .init = sqlite_init,
  .fini = sqlite_fini,
  .start = sqlite_start,
  .settings = sq_settings,
  .config_size = sizeof (SqConfig));
