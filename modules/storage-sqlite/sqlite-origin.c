/* SPDX-License-Identifier: MIT */
/* Message origins (PbEnvelope.origin): recorded with the message, listed and forgotten by name. */
#include "config.h"
#include "sqlite-private.h"

#include <string.h>

/*
 * A fetcher (pop3-collector) names each message by where it came from.
 * The record is inserted in the transaction that commits the message, so
 * "stored" and "seen" cannot disagree after a crash: either both are on
 * disk or neither is. The primary key refuses a second message with the
 * same origin; the unit then runs again without that commit, which fails
 * alone with PB_STORE_ERROR_EXISTS (see sq_unit_run()).
 */
gboolean
sq_origin_record (SqStore *store, SqMessage *m, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db,
                                "INSERT INTO origin (key, first_seen, message_id) VALUES (?1, ?2, ?3)", error);
  int rc;

  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, m->origin, -1, SQLITE_STATIC);
  sqlite3_bind_int64 (stmt, 2, m->received);
  sqlite3_bind_int64 (stmt, 3, m->rowid);
  rc = sqlite3_step (stmt);
  sqlite3_reset (stmt);
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_EXISTS, "a message from %s is stored already",
                   m->origin);
      return FALSE;
    }
  if (rc != SQLITE_DONE)
    {
      sq_db_set_error (store->db, rc, error, "recording the message's origin");
      return FALSE;
    }
  return TRUE;
}

/* origin.list (s) prefix -> a(sx): walks the key index from the prefix on. */
static gboolean
sq_op_origin_list (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  SqDb *db = store->db;
  const char *prefix;
  GVariantBuilder b;
  gboolean row, ok;
  SqStmt *stmt;

  g_variant_get (args, "(&s)", &prefix);
  stmt = sq_db_prepare (db, "SELECT key, first_seen FROM origin WHERE key >= ?1 ORDER BY key", error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, prefix, -1, SQLITE_STATIC);
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a(sx)"));
  while ((ok = sq_db_step (db, stmt, &row, error)) && row)
    {
      const char *key = (const char *) sqlite3_column_text (stmt, 0);

      if (key == NULL || !g_str_has_prefix (key, prefix))
        break;
      g_variant_builder_add_value (&b, g_variant_new ("(sx)", key, sqlite3_column_int64 (stmt, 1)));
    }
  sqlite3_reset (stmt);
  if (!ok)
    {
      g_variant_builder_clear (&b);
      return FALSE;
    }
  *result = g_variant_builder_end (&b);
  return TRUE;
}

static gboolean
sq_origin_delete (SqStore *store, const char *key, gboolean prefix, guint64 *count, GError **error)
{
  SqStmt *stmt;

  if (prefix)
    stmt = sq_db_prepare (store->db,
                          "DELETE FROM origin WHERE key >= ?1 AND substr (key, 1, length (?1)) = ?1", error);
  else
    stmt = sq_db_prepare (store->db, "DELETE FROM origin WHERE key = ?1", error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, key, -1, SQLITE_STATIC);
  if (!sq_db_run (store->db, stmt, error))
    return FALSE;
  *count += (guint64) sqlite3_changes (store->db->db);
  return TRUE;
}

/* origin.forget (sb) key or prefix -> t. An empty prefix would drop every
 * record of every fetcher: refused, it is never what a caller means. */
static gboolean
sq_op_origin_forget (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  const char *key;
  gboolean prefix;
  guint64 count = 0;

  g_variant_get (args, "(&sb)", &key, &prefix);
  if (*key == '\0')
    {
      g_set_error_literal (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "origin.forget needs a key");
      return FALSE;
    }
  if (!sq_origin_delete (store, key, prefix, &count, error))
    return FALSE;
  *result = g_variant_new_uint64 (count);
  return TRUE;
}

/* origin.forget-keys (as) -> t: many exact keys in one transaction. */
static gboolean
sq_op_origin_forget_keys (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autoptr (GVariant) keys = g_variant_get_child_value (args, 0);
  guint64 count = 0;
  gsize n = g_variant_n_children (keys);

  for (gsize i = 0; i < n; i++)
    {
      const char *key;

      g_variant_get_child (keys, i, "&s", &key);
      if (!sq_origin_delete (store, key, FALSE, &count, error))
        return FALSE;
    }
  *result = g_variant_new_uint64 (count);
  return TRUE;
}

const SqOp sq_origin_ops[] = {
  { "origin.list", "(s)", FALSE, sq_op_origin_list },
  { "origin.forget", "(sb)", TRUE, sq_op_origin_forget },
  { "origin.forget-keys", "(as)", TRUE, sq_op_origin_forget_keys },
  { NULL, NULL, FALSE, NULL }
};
