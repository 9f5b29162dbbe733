/* SPDX-License-Identifier: MIT */
/* Messages on the storage thread (pieces, commit, read, release), and the mailbox, queue and stats operations. */
#include "config.h"
#include "sqlite-private.h"

#include <string.h>

/* Crockford's base32, without I, L, O and U: easy to read aloud and to copy. */
static const char sq_base32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/*
 * A queue id is 7 base32 digits of the Unix time the message's row was
 * made, then at least 6 of its row id. Row ids come from AUTOINCREMENT, so
 * ids are unique in a database and never reused; the time keeps them
 * unique across a database that was recreated. "1KA4V6Z000A4F".
 */
void
sq_queue_id_format (char out[32], gint64 received, gint64 rowid)
{
  char digits[16];
  guint n = 0;
  guint64 v = (guint64) rowid;
  guint64 t = (guint64) MAX (received, 0);
  guint pos = 0;

  for (int i = 6; i >= 0; i--)
    out[pos++] = sq_base32[(t >> (5 * i)) & 31];
  do
    {
      digits[n++] = sq_base32[v & 31];
      v >>= 5;
    }
  while (v != 0 && n < sizeof digits);
  while (n < 6)
    digits[n++] = '0';
  while (n > 0)
    out[pos++] = digits[--n];
  out[pos] = '\0';
}

static void
sq_bind_text (SqStmt *stmt, int idx, const char *text)
{
  if (text != NULL)
    sqlite3_bind_text (stmt, idx, text, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null (stmt, idx);
}

/*
 * Message row ids are never reused (nor, so, queue ids): the highest id
 * handed out is kept in counters('message-id'), written once per
 * transaction by sq_message_ids_save(). The next id is read once per
 * transaction: while it holds the write lock nobody else inserts, so ids
 * are counted here and the queue id (made from the row id) is written with
 * the row, in one statement. A row rolled back leaves a gap, harmless.
 */
static gboolean
sq_next_message_id (SqStore *store, gint64 *id, GError **error)
{
  SqDb *db = store->db;
  SqStmt *stmt;
  gboolean row;

  if (db->next_message_id == 0)
    {
      stmt = sq_db_prepare (db,
                            "SELECT max (coalesce ((SELECT value FROM counters WHERE name = 'message-id'), 0),"
                            " coalesce ((SELECT max (id) FROM messages), 0))",
                            error);
      if (stmt == NULL || !sq_db_step (db, stmt, &row, error))
        return FALSE;
      db->next_message_id = sqlite3_column_int64 (stmt, 0) + 1;
      sqlite3_reset (stmt);
    }
  *id = db->next_message_id;
  return TRUE;
}

/* Inserts the message's row in @state; sets rowid and queue id. */
static gboolean
sq_message_insert (SqStore *store, SqMessage *m, const char *state, gint64 size, GError **error)
{
  SqDb *db = store->db;
  SqStmt *stmt;
  gint64 id;

  if (!sq_next_message_id (store, &id, error))
    return FALSE;
  stmt = sq_db_prepare (db,
                        "INSERT INTO messages (state, owner, sender, size, received, client_ip, auth_user,"
                        " session_id, dsn_ret, dsn_envid, id, queue_id)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                        error);
  if (stmt == NULL)
    return FALSE;
  sq_queue_id_format (m->queue_id, m->received, id);
  sqlite3_bind_text (stmt, 1, state, -1, SQLITE_STATIC);
  sqlite3_bind_int64 (stmt, 2, (gint64) store->owner);
  sq_bind_text (stmt, 3, m->mail_from);
  sqlite3_bind_int64 (stmt, 4, size);
  sqlite3_bind_int64 (stmt, 5, m->received);
  sq_bind_text (stmt, 6, m->client_ip);
  sq_bind_text (stmt, 7, m->auth_user);
  sq_bind_text (stmt, 8, m->session_id);
  sq_bind_text (stmt, 9, m->dsn_ret);
  sq_bind_text (stmt, 10, m->dsn_envid);
  sqlite3_bind_int64 (stmt, 11, id);
  sqlite3_bind_text (stmt, 12, m->queue_id, -1, SQLITE_STATIC);
  if (!sq_db_run (db, stmt, error))
    return FALSE;
  db->next_message_id = id + 1;
  db->message_ids_used = TRUE;
  m->rowid = id;
  m->rowid_fresh = TRUE;
  return TRUE;
}

gboolean
sq_message_ids_save (SqStore *store, GError **error)
{
  SqDb *db = store->db;
  SqStmt *stmt;

  if (!db->message_ids_used)
    return TRUE;
  stmt = sq_db_prepare (db, "UPDATE counters SET value = max (value, ?1) WHERE name = 'message-id'", error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_int64 (stmt, 1, db->next_message_id - 1);
  if (!sq_db_run (db, stmt, error))
    return FALSE;
  db->message_ids_used = FALSE;
  return TRUE;
}

static gboolean
sq_chunk_insert (SqStore *store, SqMessage *m, GBytes *data, GError **error)
{
  SqDb *db = store->db;
  gsize len;
  const guint8 *bytes = g_bytes_get_data (data, &len);
  SqStmt *stmt = sq_db_prepare (db, "INSERT INTO chunks (message_id, pos, data) VALUES (?1, ?2, ?3)", error);

  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_int64 (stmt, 1, m->rowid);
  sqlite3_bind_int64 (stmt, 2, m->stored);
  sqlite3_bind_blob64 (stmt, 3, bytes != NULL ? bytes : (const guint8 *) "", len, SQLITE_STATIC);
  if (!sq_db_run (db, stmt, error))
    return FALSE;
  m->stored += (gint64) len;
  return TRUE;
}

gboolean
sq_message_store_chunk (SqStore *store, SqMessage *m, GBytes *data, GError **error)
{
  if (m->rowid == 0 && !sq_message_insert (store, m, "receiving", 0, error))
    return FALSE;
  return sq_chunk_insert (store, m, data, error);
}

gboolean
sq_message_commit (SqStore *store, SqMessage *m, GBytes *data, GError **error)
{
  SqDb *db = store->db;
  gsize len = data != NULL ? g_bytes_get_size (data) : 0;
  gint64 size = m->stored + (gint64) len;
  SqStmt *stmt;

  if (m->rowid == 0)
    {
      if (!sq_message_insert (store, m, "committed", size, error))
        return FALSE;
    }
  else
    {
      stmt = sq_db_prepare (db, "UPDATE messages SET state = 'committed', size = ?2 WHERE id = ?1 AND state = 'receiving'",
                            error);
      if (stmt == NULL)
        return FALSE;
      sqlite3_bind_int64 (stmt, 1, m->rowid);
      sqlite3_bind_int64 (stmt, 2, size);
      if (!sq_db_run (db, stmt, error))
        return FALSE;
      if (sqlite3_changes (db->db) != 1)
        {
          g_set_error_literal (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED,
                               "the message's unfinished row disappeared");
          return FALSE;
        }
    }
  if (len > 0 && !sq_chunk_insert (store, m, data, error))
    return FALSE;
  if (m->origin != NULL && !sq_origin_record (store, m, error))
    return FALSE;

  for (guint i = 0; i < m->n_rcpts; i++)
    {
      const SqRecipient *r = &m->rcpts[i];
      int rc;

      if (r->mailbox != NULL)
        {
          /* The entry's content is its delivery headers, then the message. */
          stmt = sq_db_prepare (db,
                                "INSERT INTO mailbox (user, message_id, size, received, headers)"
                                " VALUES (?1, ?2, ?3, ?4, ?5)",
                                error);
          if (stmt == NULL)
            return FALSE;
          sqlite3_bind_text (stmt, 1, r->mailbox, -1, SQLITE_STATIC);
          sqlite3_bind_int64 (stmt, 2, m->rowid);
          sqlite3_bind_int64 (stmt, 3, size + (gint64) (r->headers != NULL ? strlen (r->headers) : 0));
          sqlite3_bind_int64 (stmt, 4, m->received);
          sqlite3_bind_text (stmt, 5, r->headers != NULL ? r->headers : "", -1, SQLITE_STATIC);
        }
      else
        {
          stmt = sq_db_prepare (db,
                                "INSERT INTO queue (message_id, recipient, next_attempt, dsn_notify, dsn_orcpt)"
                                " VALUES (?1, ?2, ?3, ?4, ?5)",
                                error);
          if (stmt == NULL)
            return FALSE;
          sqlite3_bind_int64 (stmt, 1, m->rowid);
          sqlite3_bind_text (stmt, 2, r->address, -1, SQLITE_STATIC);
          sqlite3_bind_int64 (stmt, 3, m->received);
          sq_bind_text (stmt, 4, r->notify);
          sq_bind_text (stmt, 5, r->orcpt);
        }
      rc = sqlite3_step (stmt);
      sqlite3_reset (stmt);
      if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        {
          g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND, "there is no mailbox %s", r->mailbox);
          return FALSE;
        }
      if (rc != SQLITE_DONE)
        {
          sq_db_set_error (db, rc, error, "storing a recipient");
          return FALSE;
        }
    }
  return TRUE;
}

gboolean
sq_message_read (SqStore *store, const char *message_id, gint64 offset, gsize max, GBytes **data,
                 gboolean *eof, GError **error)
{
  SqDb *db = store->db;
  g_autoptr (GByteArray) out = NULL;
  gint64 id, size, end;
  gboolean row;
  gboolean ok;
  SqStmt *stmt;

  if (!sq_db_begin (db, FALSE, error))
    return FALSE;
  stmt = sq_db_prepare (db, "SELECT id, size FROM messages WHERE queue_id = ?1 AND state = 'committed'", error);
  if (stmt == NULL)
    goto fail;
  sqlite3_bind_text (stmt, 1, message_id, -1, SQLITE_STATIC);
  if (!sq_db_step (db, stmt, &row, error))
    goto fail;
  if (!row)
    {
      sqlite3_reset (stmt);
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND, "there is no message %s", message_id);
      goto fail;
    }
  id = sqlite3_column_int64 (stmt, 0);
  size = sqlite3_column_int64 (stmt, 1);
  sqlite3_reset (stmt);

  max = MIN (max, (gsize) SQ_READ_MAX);
  end = offset >= size ? size : MIN (size, offset + (gint64) max);
  out = g_byte_array_sized_new ((guint) MAX (end - offset, 0));
  if (offset < end)
    {
      stmt = sq_db_prepare (db,
                            "SELECT pos, data FROM chunks WHERE message_id = ?1 AND pos < ?3"
                            " AND pos + length (data) > ?2 ORDER BY pos",
                            error);
      if (stmt == NULL)
        goto fail;
      sqlite3_bind_int64 (stmt, 1, id);
      sqlite3_bind_int64 (stmt, 2, offset);
      sqlite3_bind_int64 (stmt, 3, end);
      while ((ok = sq_db_step (db, stmt, &row, error)) && row)
        {
          gint64 pos = sqlite3_column_int64 (stmt, 0);
          const guint8 *bytes = sqlite3_column_blob (stmt, 1);
          gint64 len = sqlite3_column_bytes (stmt, 1);
          gint64 from = MAX (offset, pos);
          gint64 to = MIN (end, pos + len);

          /* Pieces follow each other without gaps: the next one must start where we are. */
          if (from != offset + (gint64) out->len || to <= from)
            break;
          g_byte_array_append (out, bytes + (from - pos), (guint) (to - from));
        }
      sqlite3_reset (stmt);
      if (!ok)
        goto fail;
      if ((gint64) out->len != end - offset)
        {
          g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_FAILED,
                       "message %s: the stored body is incomplete", message_id);
          goto fail;
        }
    }
  if (!sq_db_commit (db, error))
    goto fail;
  *eof = end >= size;
  *data = g_byte_array_free_to_bytes (g_steal_pointer (&out));
  return TRUE;

fail:
  sq_db_rollback (db);
  return FALSE;
}

gboolean
sq_message_release (SqStore *store, gint64 id, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db,
                                "DELETE FROM messages WHERE id = ?1 AND state = 'committed'"
                                " AND NOT EXISTS (SELECT 1 FROM mailbox WHERE message_id = ?1)"
                                " AND NOT EXISTS (SELECT 1 FROM queue WHERE message_id = ?1"
                                "                 AND state IN ('pending', 'deferred'))",
                                error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_int64 (stmt, 1, id);
  return sq_db_run (store->db, stmt, error);
}

/* ---- operations: mailboxes, the queue, statistics ---- */

/* Normalises the user name argument and checks that the user exists. */
static gboolean
sq_mailbox_user (SqStore *store, const char *arg, char **name, GError **error)
{
  gboolean exists = FALSE;

  if (!sq_arg_name (arg, "user name", name, error) || !sq_user_exists (store, *name, &exists, error))
    return FALSE;
  if (!exists)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND, "there is no user %s", *name);
      return FALSE;
    }
  return TRUE;
}

static gboolean
sq_op_mailbox_list (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  SqDb *db = store->db;
  g_autofree char *user = NULL;
  const char *arg;
  GVariantBuilder b;
  gboolean row, ok;
  SqStmt *stmt;

  g_variant_get (args, "(&s)", &arg);
  if (!sq_mailbox_user (store, arg, &user, error))
    return FALSE;
  stmt = sq_db_prepare (db,
                        "SELECT b.uid, m.queue_id, b.size, b.received, b.headers FROM mailbox b"
                        " JOIN messages m ON m.id = b.message_id WHERE b.user = ?1 ORDER BY b.uid",
                        error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, user, -1, SQLITE_STATIC);
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a(tsxxs)"));
  /* Built with the typed constructors, not a format string per row: a POP3
   * login lists the whole mailbox, and 20 000 rows is a normal maildrop. */
  while ((ok = sq_db_step (db, stmt, &row, error)) && row)
    {
      GVariant *fields[5];
      const char *headers = (const char *) sqlite3_column_text (stmt, 4);

      fields[0] = g_variant_new_uint64 ((guint64) sqlite3_column_int64 (stmt, 0));
      fields[1] = g_variant_new_string ((const char *) sqlite3_column_text (stmt, 1));
      fields[2] = g_variant_new_int64 (sqlite3_column_int64 (stmt, 2));
      fields[3] = g_variant_new_int64 (sqlite3_column_int64 (stmt, 3));
      fields[4] = g_variant_new_string (headers != NULL ? headers : "");
      g_variant_builder_add_value (&b, g_variant_new_tuple (fields, 5));
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
sq_op_mailbox_delete (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  SqDb *db = store->db;
  g_autofree char *user = NULL;
  g_autoptr (GVariant) uids = NULL;
  g_autoptr (GArray) messages = g_array_new (FALSE, FALSE, sizeof (gint64));
  const guint64 *list;
  gsize n;
  guint64 deleted = 0;
  const char *arg;

  g_variant_get (args, "(&s@at)", &arg, &uids);
  if (!sq_mailbox_user (store, arg, &user, error))
    return FALSE;
  list = g_variant_get_fixed_array (uids, &n, sizeof (guint64));
  for (gsize i = 0; i < n; i++)
    {
      SqStmt *stmt = sq_db_prepare (db, "SELECT message_id FROM mailbox WHERE uid = ?1 AND user = ?2", error);
      gboolean row;
      gint64 message;

      if (stmt == NULL)
        return FALSE;
      sqlite3_bind_int64 (stmt, 1, (gint64) list[i]);
      sqlite3_bind_text (stmt, 2, user, -1, SQLITE_STATIC);
      if (!sq_db_step (db, stmt, &row, error))
        return FALSE;
      if (!row)
        {
          sqlite3_reset (stmt);
          continue;  /* not this user's, or deleted already */
        }
      message = sqlite3_column_int64 (stmt, 0);
      sqlite3_reset (stmt);
      stmt = sq_db_prepare (db, "DELETE FROM mailbox WHERE uid = ?1", error);
      if (stmt == NULL)
        return FALSE;
      sqlite3_bind_int64 (stmt, 1, (gint64) list[i]);
      if (!sq_db_run (db, stmt, error))
        return FALSE;
      g_array_append_val (messages, message);
      deleted++;
    }
  for (guint i = 0; i < messages->len; i++)
    if (!sq_message_release (store, g_array_index (messages, gint64, i), error))
      return FALSE;
  *result = g_variant_new_uint64 (deleted);
  return TRUE;
}

static gboolean
sq_op_mailbox_stat (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  SqDb *db = store->db;
  g_autofree char *user = NULL;
  const char *arg;
  gboolean row;
  SqStmt *stmt;

  g_variant_get (args, "(&s)", &arg);
  if (!sq_mailbox_user (store, arg, &user, error))
    return FALSE;
  stmt = sq_db_prepare (db, "SELECT count(*), coalesce(sum(size), 0) FROM mailbox WHERE user = ?1", error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, user, -1, SQLITE_STATIC);
  if (!sq_db_step (db, stmt, &row, error))
    return FALSE;
  *result = g_variant_new ("(tx)", (guint64) sqlite3_column_int64 (stmt, 0), sqlite3_column_int64 (stmt, 1));
  sqlite3_reset (stmt);
  return TRUE;
}

static gboolean
sq_op_queue_list (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  SqDb *db = store->db;
  GVariantBuilder b;
  gboolean row, ok;
  SqStmt *stmt = sq_db_prepare (db,
                                "SELECT m.queue_id, m.sender, q.recipient, m.size, q.state, q.attempts,"
                                " q.next_attempt, q.last_reply FROM queue q JOIN messages m ON m.id = q.message_id"
                                " ORDER BY q.id",
                                error);
  if (stmt == NULL)
    return FALSE;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a(sssxsxxs)"));
  while ((ok = sq_db_step (db, stmt, &row, error)) && row)
    g_variant_builder_add (&b, "(sssxsxxs)", (const char *) sqlite3_column_text (stmt, 0),
                           (const char *) sqlite3_column_text (stmt, 1), (const char *) sqlite3_column_text (stmt, 2),
                           sqlite3_column_int64 (stmt, 3), (const char *) sqlite3_column_text (stmt, 4),
                           sqlite3_column_int64 (stmt, 5), sqlite3_column_int64 (stmt, 6),
                           (const char *) sqlite3_column_text (stmt, 7));
  sqlite3_reset (stmt);
  if (!ok)
    {
      g_variant_builder_clear (&b);
      return FALSE;
    }
  *result = g_variant_builder_end (&b);
  return TRUE;
}

/* storage.stats (an extension of this backend): the thread's counters. */
static gboolean
sq_op_storage_stats (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  const SqStats *s = &store->stats;
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "backend", g_variant_new_string ("sqlite"));
  g_variant_builder_add (&b, "{sv}", "database", g_variant_new_string (store->path));
  g_variant_builder_add (&b, "{sv}", "schema-version", g_variant_new_uint32 (store->schema_version));
  g_variant_builder_add (&b, "{sv}", "transactions", g_variant_new_uint64 (s->transactions));
  g_variant_builder_add (&b, "{sv}", "commits", g_variant_new_uint64 (s->commits));
  g_variant_builder_add (&b, "{sv}", "fsync-batches", g_variant_new_uint64 (s->fsync_batches));
  g_variant_builder_add (&b, "{sv}", "largest-batch", g_variant_new_uint64 (s->largest_batch));
  g_variant_builder_add (&b, "{sv}", "chunk-transactions", g_variant_new_uint64 (s->chunk_transactions));
  g_variant_builder_add (&b, "{sv}", "checkpoints",
                         g_variant_new_uint64 (s->checkpoints + (store->checkpointer != NULL
                                                                 ? sq_checkpointer_count (store->checkpointer) : 0)));
  g_variant_builder_add (&b, "{sv}", "recovered", g_variant_new_uint64 (s->recovered));
  g_variant_builder_add (&b, "{sv}", "released", g_variant_new_uint64 (s->released));
  *result = g_variant_builder_end (&b);
  return TRUE;
}

const SqOp sq_mailbox_ops[] = {
  { "mailbox.list", "(s)", FALSE, sq_op_mailbox_list },
  { "mailbox.delete", "(sat)", TRUE, sq_op_mailbox_delete },
  { "mailbox.stat", "(s)", FALSE, sq_op_mailbox_stat },
  { "queue.list", "()", FALSE, sq_op_queue_list },
  { "storage.stats", "()", FALSE, sq_op_storage_stats },
  { NULL, NULL, FALSE, NULL }
};
