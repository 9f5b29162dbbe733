/* SPDX-License-Identifier: MIT */
/* The SQLite connection of the storage thread: pragmas, cached statements, transactions, errors. */
#include "config.h"
#include "sqlite-private.h"

/* Called by SQLite after every commit with the log's size: we checkpoint
 * ourselves (see sq_store's checkpoint) instead of inside a commit. */
static int
sq_db_wal_hook (void *data, sqlite3 *handle, const char *name, int pages)
{
  SqDb *db = data;
  db->wal_pages = pages;
  return SQLITE_OK;
}

void
sq_db_set_error (SqDb *db, int rc, GError **error, const char *context)
{
  int code = PB_STORE_ERROR_FAILED;
  const char *msg = db != NULL && db->db != NULL ? sqlite3_errmsg (db->db) : sqlite3_errstr (rc);

  switch (rc & 0xff)
    {
    case SQLITE_FULL:
      code = PB_STORE_ERROR_NO_SPACE;
      break;
    case SQLITE_CONSTRAINT:
      code = (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) ? PB_STORE_ERROR_EXISTS
                                                                                      : PB_STORE_ERROR_INVALID;
      break;
    default:
      break;
    }
  g_set_error (error, PB_STORE_ERROR_DOMAIN, code, "%s: %s", context, msg);
}

gboolean
sq_db_exec (SqDb *db, const char *sql, GError **error)
{
  int rc = sqlite3_exec (db->db, sql, NULL, NULL, NULL);

  if (rc != SQLITE_OK)
    {
      sq_db_set_error (db, rc, error, "database");
      return FALSE;
    }
  return TRUE;
}

static gboolean
sq_db_pragma_text (SqDb *db, const char *sql, const char *expect, GError **error)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2 (db->db, sql, -1, &stmt, NULL);
  gboolean ok = FALSE;

  if (rc == SQLITE_OK && (rc = sqlite3_step (stmt)) == SQLITE_ROW)
    {
      const char *got = (const char *) sqlite3_column_text (stmt, 0);
      ok = got != NULL && g_ascii_strcasecmp (got, expect) == 0;
      if (!ok)
        g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED, "%s answered '%s', not '%s'", sql,
                     got != NULL ? got : "", expect);
    }
  else
    sq_db_set_error (db, rc, error, sql);
  sqlite3_finalize (stmt);
  return ok;
}

static void
sq_db_finalize (gpointer stmt)
{
  sqlite3_finalize (stmt);
}

SqDb *
sq_db_open (const char *path, const SqConfig *config, GError **error)
{
  SqDb *db = g_new0 (SqDb, 1);
  int page_size = 4096;
  int rc;

  db->sync = -1;
  /* Keyed by the address of the SQL text: callers pass string literals. */
  db->stmts = g_hash_table_new_full (g_direct_hash, g_direct_equal, NULL, sq_db_finalize);
  /* NOMUTEX: the connection never leaves the storage thread. */
  rc = sqlite3_open_v2 (path, &db->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED, "cannot open %s: %s", path,
                   db->db != NULL ? sqlite3_errmsg (db->db) : sqlite3_errstr (rc));
      sq_db_close (db);
      return NULL;
    }
  sqlite3_extended_result_codes (db->db, 1);
  sqlite3_busy_timeout (db->db, (int) MIN (config->busy_timeout, G_MAXINT));
  if (!sq_db_pragma_text (db, "PRAGMA journal_mode=WAL", "wal", error)
      || !sq_db_exec (db, "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY; "
                          "PRAGMA journal_size_limit=67108864", error)
      || !sq_db_set_sync (db, 2, error))
    {
      g_prefix_error (error, "%s: ", path);
      sq_db_close (db);
      return NULL;
    }
  {
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2 (db->db, "PRAGMA page_size", -1, &stmt, NULL) == SQLITE_OK
        && sqlite3_step (stmt) == SQLITE_ROW)
      page_size = MAX (sqlite3_column_int (stmt, 0), 512);
    sqlite3_finalize (stmt);
  }
  db->checkpoint_pages = (int) CLAMP (config->checkpoint_size / page_size, 1, G_MAXINT);
  if (config->max_database_size > 0)
    {
      g_autofree char *sql = NULL;

      sql = g_strdup_printf ("PRAGMA max_page_count=%" G_GINT64_FORMAT,
                             MAX (config->max_database_size / page_size, 1));
      if (!sq_db_exec (db, sql, error))
        {
          sq_db_close (db);
          return NULL;
        }
    }
  /* Replaces SQLite's automatic checkpoint, which would run inside commits. */
  sqlite3_wal_hook (db->db, sq_db_wal_hook, db);
  return db;
}

void
sq_db_close (SqDb *db)
{
  if (db == NULL)
    return;
  g_hash_table_unref (db->stmts);
  if (db->db != NULL)
    {
      int rc = sqlite3_close (db->db);
      if (rc != SQLITE_OK)
        g_warning ("closing the database: %s", sqlite3_errstr (rc));
    }
  g_free (db);
}

SqStmt *
sq_db_prepare (SqDb *db, const char *sql, GError **error)
{
  sqlite3_stmt *stmt = g_hash_table_lookup (db->stmts, sql);

  if (stmt == NULL)
    {
      int rc = sqlite3_prepare_v3 (db->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL);
      if (rc != SQLITE_OK)
        {
          sq_db_set_error (db, rc, error, "preparing a statement");
          return NULL;
        }
      g_hash_table_insert (db->stmts, (gpointer) sql, stmt);
    }
  sqlite3_reset (stmt);
  sqlite3_clear_bindings (stmt);
  return stmt;
}

gboolean
sq_db_step (SqDb *db, SqStmt *stmt, gboolean *row, GError **error)
{
  int rc = sqlite3_step (stmt);

  *row = rc == SQLITE_ROW;
  if (rc == SQLITE_ROW || rc == SQLITE_DONE)
    return TRUE;
  rc = sqlite3_reset (stmt);
  sq_db_set_error (db, rc, error, "database");
  return FALSE;
}

gboolean
sq_db_run (SqDb *db, SqStmt *stmt, GError **error)
{
  gboolean row;
  gboolean ok;

  do
    ok = sq_db_step (db, stmt, &row, error);
  while (ok && row);
  sqlite3_reset (stmt);
  return ok;
}

gboolean
sq_db_set_sync (SqDb *db, int level, GError **error)
{
  static const char *const sql[] = { "PRAGMA synchronous=OFF", "PRAGMA synchronous=NORMAL",
                                     "PRAGMA synchronous=FULL" };

  g_return_val_if_fail (level >= 0 && level <= 2, FALSE);
  if (db->sync == level)
    return TRUE;
  if (!sq_db_exec (db, sql[level], error))
    return FALSE;
  db->sync = level;
  return TRUE;
}

gboolean
sq_db_begin (SqDb *db, gboolean immediate, GError **error)
{
  SqStmt *stmt = sq_db_prepare (db, immediate ? "BEGIN IMMEDIATE" : "BEGIN", error);

  db->next_message_id = 0;  /* another connection may have written since */
  db->message_ids_used = FALSE;
  return stmt != NULL && sq_db_run (db, stmt, error);
}

gboolean
sq_db_commit (SqDb *db, GError **error)
{
  SqStmt *stmt = sq_db_prepare (db, "COMMIT", error);
  return stmt != NULL && sq_db_run (db, stmt, error);
}

void
sq_db_rollback (SqDb *db)
{
  /* After SQLITE_FULL or an I/O error SQLite may have rolled back already. */
  if (!sqlite3_get_autocommit (db->db))
    sqlite3_exec (db->db, "ROLLBACK", NULL, NULL, NULL);
}

gboolean
sq_db_in_transaction (SqDb *db)
{
  return !sqlite3_get_autocommit (db->db);
}
