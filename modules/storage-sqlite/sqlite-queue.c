/* SPDX-License-Identifier: MIT */
/* The outbound queue's operations on the storage thread: due entries, results, history, delete, retry. */
#include "config.h"
#include "sqlite-private.h"

#include <string.h>

static const char *
col_text (SqStmt *stmt, int i)
{
  const char *t = (const char *) sqlite3_column_text (stmt, i);
  return t != NULL ? t : "";
}

/* queue.due (xu) -> a(tsssxuxssss): pending and deferred entries due by NOW, oldest message first. */
/* Due entries (of id > AFTER, when AFTER is not 0): the oldest first. */
static gboolean
sq_queue_due (SqStore *store, gint64 now, guint32 limit, guint64 after, GVariant **result, GError **error)
{
  SqDb *db = store->db;
  GVariantBuilder b;
  gboolean row, ok;
  SqStmt *stmt = sq_db_prepare (db,
                                after == 0
                                  ? "SELECT q.id, m.queue_id, m.sender, q.recipient, m.size, q.attempts, m.received,"
                                    " q.dsn_notify, q.dsn_orcpt, m.dsn_ret, m.dsn_envid"
                                    " FROM queue q JOIN messages m ON m.id = q.message_id"
                                    " WHERE q.state IN ('pending', 'deferred') AND q.next_attempt <= ?1"
                                    " AND m.state = 'committed' ORDER BY m.received, q.id LIMIT ?2"
                                  : "SELECT q.id, m.queue_id, m.sender, q.recipient, m.size, q.attempts, m.received,"
                                    " q.dsn_notify, q.dsn_orcpt, m.dsn_ret, m.dsn_envid"
                                    " FROM queue q JOIN messages m ON m.id = q.message_id"
                                    " WHERE q.id > ?3 AND q.state IN ('pending', 'deferred') AND q.next_attempt <= ?1"
                                    " AND m.state = 'committed' ORDER BY q.id LIMIT ?2",
                                error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_int64 (stmt, 1, now);
  sqlite3_bind_int64 (stmt, 2, limit);
  if (after != 0)
    sqlite3_bind_int64 (stmt, 3, (gint64) after);
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a(tsssxuxssss)"));
  while ((ok = sq_db_step (db, stmt, &row, error)) && row)
    g_variant_builder_add (&b, "(tsssxuxssss)", (guint64) sqlite3_column_int64 (stmt, 0), col_text (stmt, 1),
                           col_text (stmt, 2), col_text (stmt, 3), sqlite3_column_int64 (stmt, 4),
                           (guint32) sqlite3_column_int (stmt, 5), sqlite3_column_int64 (stmt, 6), col_text (stmt, 7),
                           col_text (stmt, 8), col_text (stmt, 9), col_text (stmt, 10));
  sqlite3_reset (stmt);
  if (!ok)
    {
      g_variant_builder_clear (&b);
      return FALSE;
    }
  *result = g_variant_builder_end (&b);
  return TRUE;
}

/* queue.due (xu): now, limit. */
static gboolean
sq_op_queue_due (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  gint64 now;
  guint32 limit;

  g_variant_get (args, "(xu)", &now, &limit);
  return sq_queue_due (store, now, limit, 0, result, error);
}

/* queue.due-after (xut): now, limit, and only entries added after entry AFTER. */
static gboolean
sq_op_queue_due_after (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  gint64 now;
  guint32 limit;
  guint64 after;

  g_variant_get (args, "(xut)", &now, &limit, &after);
  return sq_queue_due (store, now, limit, MAX (after, 1), result, error);
}

/* The message an entry belongs to, or -1. */
static gboolean
sq_queue_message_of (SqStore *store, guint64 entry, gint64 *message, GError **error)
{
  gboolean row;
  SqStmt *stmt = sq_db_prepare (store->db, "SELECT message_id FROM queue WHERE id = ?1", error);

  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_int64 (stmt, 1, (gint64) entry);
  *message = -1;
  if (!sq_db_step (store->db, stmt, &row, error))
    return FALSE;
  if (row)
    *message = sqlite3_column_int64 (stmt, 0);
  sqlite3_reset (stmt);
  return TRUE;
}

/* queue.result (tsusx): the queue manager's verdict on one entry. */
static gboolean
sq_op_queue_result (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  guint64 entry;
  const char *state, *reply;
  guint32 attempts;
  gint64 next, message;
  SqStmt *stmt;

  g_variant_get (args, "(t&su&sx)", &entry, &state, &attempts, &reply, &next);
  if (strcmp (state, "deferred") != 0 && strcmp (state, "delivered") != 0 && strcmp (state, "bounced") != 0
      && strcmp (state, "pending") != 0)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "unknown queue state '%s'", state);
      return FALSE;
    }
  if (!sq_queue_message_of (store, entry, &message, error))
    return FALSE;
  if (message < 0)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND, "no queue entry %" G_GUINT64_FORMAT, entry);
      return FALSE;
    }
  stmt = sq_db_prepare (store->db,
                        "UPDATE queue SET state = ?2, attempts = ?3, last_reply = ?4, next_attempt = ?5 WHERE id = ?1",
                        error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_int64 (stmt, 1, (gint64) entry);
  sqlite3_bind_text (stmt, 2, state, -1, SQLITE_STATIC);
  sqlite3_bind_int (stmt, 3, (int) attempts);
  sqlite3_bind_text (stmt, 4, reply, -1, SQLITE_STATIC);
  sqlite3_bind_int64 (stmt, 5, next);
  if (!sq_db_run (store->db, stmt, error))
    return FALSE;
  /* A final state may be the last reference to the message: release it then. */
  return sq_message_release (store, message, error);
}

/* queue.attempt (txss): one line of an entry's history. */
static gboolean
sq_op_queue_attempt (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  guint64 entry;
  gint64 when;
  const char *server, *reply;
  SqStmt *stmt = sq_db_prepare (store->db,
                                "INSERT INTO queue_history (entry_id, time, server, reply)"
                                " SELECT id, ?2, ?3, ?4 FROM queue WHERE id = ?1",
                                error);

  if (stmt == NULL)
    return FALSE;
  g_variant_get (args, "(tx&s&s)", &entry, &when, &server, &reply);
  sqlite3_bind_int64 (stmt, 1, (gint64) entry);
  sqlite3_bind_int64 (stmt, 2, when);
  sqlite3_bind_text (stmt, 3, server, -1, SQLITE_STATIC);
  sqlite3_bind_text (stmt, 4, reply, -1, SQLITE_STATIC);
  return sq_db_run (store->db, stmt, error);
}

/* queue.get (s) -> (sxxssa(tssuxsa(xss))) */
static gboolean
sq_op_queue_get (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  SqDb *db = store->db;
  const char *qid;
  gboolean row, ok;
  gint64 message;
  g_autofree char *sender = NULL, *ret = NULL, *envid = NULL;
  gint64 size, received;
  GVariantBuilder entries;
  SqStmt *stmt = sq_db_prepare (db,
                                "SELECT id, sender, size, received, dsn_ret, dsn_envid FROM messages"
                                " WHERE queue_id = ?1 AND state = 'committed'",
                                error);

  if (stmt == NULL)
    return FALSE;
  g_variant_get (args, "(&s)", &qid);
  sqlite3_bind_text (stmt, 1, qid, -1, SQLITE_STATIC);
  if (!sq_db_step (db, stmt, &row, error))
    return FALSE;
  if (!row)
    {
      sqlite3_reset (stmt);
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND, "no message %s", qid);
      return FALSE;
    }
  message = sqlite3_column_int64 (stmt, 0);
  sender = g_strdup (col_text (stmt, 1));
  size = sqlite3_column_int64 (stmt, 2);
  received = sqlite3_column_int64 (stmt, 3);
  ret = g_strdup (col_text (stmt, 4));
  envid = g_strdup (col_text (stmt, 5));
  sqlite3_reset (stmt);

  stmt = sq_db_prepare (db,
                        "SELECT id, recipient, state, attempts, next_attempt, last_reply FROM queue"
                        " WHERE message_id = ?1 ORDER BY id",
                        error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_int64 (stmt, 1, message);
  g_variant_builder_init (&entries, G_VARIANT_TYPE ("a(tssuxsa(xss))"));
  {
    g_autoptr (GArray) ids = g_array_new (FALSE, FALSE, sizeof (gint64));
    g_autoptr (GPtrArray) rows = g_ptr_array_new_with_free_func ((GDestroyNotify) g_variant_unref);

    while ((ok = sq_db_step (db, stmt, &row, error)) && row)
      {
        gint64 id = sqlite3_column_int64 (stmt, 0);
        g_array_append_val (ids, id);
        g_ptr_array_add (rows, g_variant_ref_sink (g_variant_new ("(tssuxs)", (guint64) id, col_text (stmt, 1),
                                                                  col_text (stmt, 2), (guint32) sqlite3_column_int (stmt, 3),
                                                                  sqlite3_column_int64 (stmt, 4), col_text (stmt, 5))));
      }
    sqlite3_reset (stmt);
    if (!ok)
      {
        g_variant_builder_clear (&entries);
        return FALSE;
      }
    stmt = sq_db_prepare (db, "SELECT time, server, reply FROM queue_history WHERE entry_id = ?1 ORDER BY rowid",
                          error);
    if (stmt == NULL)
      {
        g_variant_builder_clear (&entries);
        return FALSE;
      }
    for (guint i = 0; i < rows->len; i++)
      {
        GVariant *r = g_ptr_array_index (rows, i);
        guint64 id;
        const char *rcpt, *state, *reply;
        guint32 attempts;
        gint64 next;
        GVariantBuilder history;

        g_variant_get (r, "(t&s&sux&s)", &id, &rcpt, &state, &attempts, &next, &reply);
        g_variant_builder_init (&history, G_VARIANT_TYPE ("a(xss)"));
        sqlite3_bind_int64 (stmt, 1, g_array_index (ids, gint64, i));
        while ((ok = sq_db_step (db, stmt, &row, error)) && row)
          g_variant_builder_add (&history, "(xss)", sqlite3_column_int64 (stmt, 0), col_text (stmt, 1),
                                 col_text (stmt, 2));
        sqlite3_reset (stmt);
        if (!ok)
          {
            g_variant_builder_clear (&history);
            g_variant_builder_clear (&entries);
            return FALSE;
          }
        g_variant_builder_add (&entries, "(tssuxsa(xss))", id, rcpt, state, attempts, next, reply, &history);
      }
  }
  *result = g_variant_new ("(sxxssa(tssuxsa(xss)))", sender, size, received, ret, envid, &entries);
  return TRUE;
}

/* Removes every queue entry of MESSAGE, adding their number to *COUNT, and
 * the message itself unless a mailbox holds it. */
static gboolean
sq_queue_delete_message (SqStore *store, gint64 message, guint32 *count, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db, "DELETE FROM queue WHERE message_id = ?1", error);

  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_int64 (stmt, 1, message);
  if (!sq_db_run (store->db, stmt, error))
    return FALSE;
  *count += (guint32) sqlite3_changes (store->db->db);
  return sq_message_release (store, message, error);
}

/* queue.delete (s) -> u: every entry of the message (of every message, for ""). */
static gboolean
sq_op_queue_delete (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autoptr (GArray) messages = g_array_new (FALSE, FALSE, sizeof (gint64));
  const char *qid;
  gboolean row;
  guint32 count = 0;
  SqStmt *stmt;

  g_variant_get (args, "(&s)", &qid);
  stmt = sq_db_prepare (store->db,
                        *qid != '\0' ? "SELECT id FROM messages WHERE queue_id = ?1 AND state = 'committed'"
                                     : "SELECT DISTINCT message_id FROM queue",
                        error);
  if (stmt == NULL)
    return FALSE;
  if (*qid != '\0')
    sqlite3_bind_text (stmt, 1, qid, -1, SQLITE_STATIC);
  /* Collect first: releasing a message changes the tables being read. */
  for (;;)
    {
      gint64 id;
      if (!sq_db_step (store->db, stmt, &row, error))
        return FALSE;
      if (!row)
        break;
      id = sqlite3_column_int64 (stmt, 0);
      g_array_append_val (messages, id);
    }
  sqlite3_reset (stmt);
  if (*qid != '\0' && messages->len == 0)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND, "no message %s", qid);
      return FALSE;
    }
  for (guint i = 0; i < messages->len; i++)
    if (!sq_queue_delete_message (store, g_array_index (messages, gint64, i), &count, error))
      return FALSE;
  *result = g_variant_new_uint32 (count);
  return TRUE;
}

/* queue.retry (s) -> u: deferred entries of one message (or of all, for "") are due now. */
static gboolean
sq_op_queue_retry (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  const char *qid;
  SqStmt *stmt;

  g_variant_get (args, "(&s)", &qid);
  stmt = sq_db_prepare (store->db,
                        *qid != '\0'
                          ? "UPDATE queue SET next_attempt = 0 WHERE state IN ('pending', 'deferred')"
                            " AND message_id = (SELECT id FROM messages WHERE queue_id = ?1)"
                          : "UPDATE queue SET next_attempt = 0 WHERE state IN ('pending', 'deferred')",
                        error);
  if (stmt == NULL)
    return FALSE;
  if (*qid != '\0')
    sqlite3_bind_text (stmt, 1, qid, -1, SQLITE_STATIC);
  if (!sq_db_run (store->db, stmt, error))
    return FALSE;
  *result = g_variant_new_uint32 ((guint32) sqlite3_changes (store->db->db));
  return TRUE;
}

/* queue.warn (t) -> b: marks the entry warned; TRUE only for the call that did. */
static gboolean
sq_op_queue_warn (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  guint64 id;
  SqStmt *stmt = sq_db_prepare (store->db, "UPDATE queue SET warned = 1 WHERE id = ?1 AND warned = 0", error);

  if (stmt == NULL)
    return FALSE;
  g_variant_get (args, "(t)", &id);
  sqlite3_bind_int64 (stmt, 1, (gint64) id);
  if (!sq_db_run (store->db, stmt, error))
    return FALSE;
  *result = g_variant_new_boolean (sqlite3_changes (store->db->db) == 1);
  return TRUE;
}

const SqOp sq_queue_ops[] = {
  { "queue.due", "(xu)", FALSE, sq_op_queue_due },
  { "queue.due-after", "(xut)", FALSE, sq_op_queue_due_after },
  { "queue.result", "(tsusx)", TRUE, sq_op_queue_result },
  { "queue.attempt", "(txss)", TRUE, sq_op_queue_attempt },
  { "queue.get", "(s)", FALSE, sq_op_queue_get },
  { "queue.delete", "(s)", TRUE, sq_op_queue_delete },
  { "queue.retry", "(s)", TRUE, sq_op_queue_retry },
  { "queue.warn", "(t)", TRUE, sq_op_queue_warn },
  { NULL, NULL, FALSE, NULL }
};
