/* SPDX-License-Identifier: MIT */
/* The directory operations on the storage thread: domains, users, aliases, lists and directory.lookup. */
#include "config.h"
#include "sqlite-private.h"

#include <string.h>

/*
 * Names of domains, users, aliases and lists are compared without regard
 * to case: they are stored lower-case. Errors: NOT_FOUND for the object an
 * operation names, EXISTS for a duplicate of the same kind, INVALID for bad
 * arguments, for references to things that are not there (a user in a
 * domain that is not local) and for clashes between kinds (an alias with
 * the address of a user).
 */

gboolean
sq_arg_name (const char *in, const char *what, char **out, GError **error)
{
  if (!g_utf8_validate (in, -1, NULL))
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "the %s is not valid UTF-8", what);
      return FALSE;
    }
  if (*in == '\0' || strlen (in) > 320)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "the %s must have 1 to 320 octets", what);
      return FALSE;
    }
  for (const char *p = in; *p != '\0'; p++)
    if ((guchar) *p <= ' ' || *p == 0x7f)
      {
        g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID,
                     "the %s must not contain blanks or control characters", what);
        return FALSE;
      }
  *out = g_utf8_strdown (in, -1);
  return TRUE;
}

static gboolean
sq_row_exists (SqStore *store, const char *sql, const char *key, const char *key2, gboolean *exists, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db, sql, error);

  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, key, -1, SQLITE_STATIC);
  if (key2 != NULL)
    sqlite3_bind_text (stmt, 2, key2, -1, SQLITE_STATIC);
  if (!sq_db_step (store->db, stmt, exists, error))
    return FALSE;
  sqlite3_reset (stmt);
  return TRUE;
}

gboolean
sq_user_exists (SqStore *store, const char *name, gboolean *exists, GError **error)
{
  return sq_row_exists (store, "SELECT 1 FROM users WHERE name = ?1", name, NULL, exists, error);
}

static gboolean
sq_alias_target (SqStore *store, const char *address, char **target, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db, "SELECT target FROM aliases WHERE address = ?1", error);
  gboolean row;

  *target = NULL;
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, address, -1, SQLITE_STATIC);
  if (!sq_db_step (store->db, stmt, &row, error))
    return FALSE;
  if (row)
    *target = g_strdup ((const char *) sqlite3_column_text (stmt, 0));
  sqlite3_reset (stmt);
  return TRUE;
}

static gboolean
sq_list_exists (SqStore *store, const char *address, gboolean *exists, GError **error)
{
  return sq_row_exists (store, "SELECT 1 FROM lists WHERE address = ?1", address, NULL, exists, error);
}

/* A domain's row: @exists FALSE when there is none. */
static gboolean
sq_domain_get (SqStore *store, const char *name, gboolean *exists, char **alias_of, gboolean *shared, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db, "SELECT alias_of, shared FROM domains WHERE name = ?1", error);

  *alias_of = NULL;
  *shared = FALSE;
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, name, -1, SQLITE_STATIC);
  if (!sq_db_step (store->db, stmt, exists, error))
    return FALSE;
  if (*exists)
    {
      *alias_of = g_strdup ((const char *) sqlite3_column_text (stmt, 0));
      *shared = sqlite3_column_int (stmt, 1) != 0;
    }
  sqlite3_reset (stmt);
  return TRUE;
}

/* Checks that @domain is a local domain of its own (not an alias of one). */
static gboolean
sq_check_real_domain (SqStore *store, const char *domain, GError **error)
{
  g_autofree char *alias_of = NULL;
  gboolean exists, shared;

  if (!sq_domain_get (store, domain, &exists, &alias_of, &shared, error))
    return FALSE;
  if (!exists)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "%s is not a local domain", domain);
      return FALSE;
    }
  if (alias_of != NULL)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "%s is an alias of %s: use %s", domain,
                   alias_of, alias_of);
      return FALSE;
    }
  return TRUE;
}

/* Checks an alias or list address: local@domain in a local domain of its own. */
static gboolean
sq_arg_address (SqStore *store, const char *in, char **out, GError **error)
{
  g_autofree char *address = NULL;
  const char *at;

  if (!sq_arg_name (in, "address", &address, error))
    return FALSE;
  at = strrchr (address, '@');
  if (at == NULL || at == address || at[1] == '\0' || strchr (address, '@') != at)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "%s is not of the form local@domain",
                   address);
      return FALSE;
    }
  if (!sq_check_real_domain (store, at + 1, error))
    return FALSE;
  *out = g_steal_pointer (&address);
  return TRUE;
}

/* Refuses an address already taken by a user, an alias or a list. */
static gboolean
sq_check_address_free (SqStore *store, const char *address, const char *kind, GError **error)
{
  g_autofree char *target = NULL;
  gboolean user = FALSE, list = FALSE;

  if (!sq_user_exists (store, address, &user, error) || !sq_alias_target (store, address, &target, error)
      || !sq_list_exists (store, address, &list, error))
    return FALSE;
  if ((target != NULL && strcmp (kind, "alias") == 0) || (list && strcmp (kind, "list") == 0)
      || (user && strcmp (kind, "user") == 0))
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_EXISTS, "%s %s exists already", kind, address);
      return FALSE;
    }
  if (user || target != NULL || list)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "%s is already %s", address,
                   user ? "a user" : target != NULL ? "an alias" : "a list");
      return FALSE;
    }
  return TRUE;
}

static gboolean
sq_run_text (SqStore *store, const char *sql, const char *a, const char *b, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db, sql, error);

  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, a, -1, SQLITE_STATIC);
  if (b != NULL)
    sqlite3_bind_text (stmt, 2, b, -1, SQLITE_STATIC);
  return sq_db_run (store->db, stmt, error);
}

static gboolean
sq_not_found (GError **error, const char *kind, const char *name)
{
  g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND, "there is no %s %s", kind, name);
  return FALSE;
}

/* Runs a statement with one or two text parameters; NOT_FOUND when it changed no row. */
static gboolean
sq_run_changing (SqStore *store, const char *sql, const char *a, const char *b, const char *kind,
                 const char *name, GError **error)
{
  if (!sq_run_text (store, sql, a, b, error))
    return FALSE;
  if (sqlite3_changes (store->db->db) == 0)
    return sq_not_found (error, kind, name);
  return TRUE;
}

/* Builds an array of the first text column of @stmt's rows (bound by the caller). */
static gboolean
sq_collect_strings (SqStore *store, SqStmt *stmt, GVariant **result, GError **error)
{
  GVariantBuilder b;
  gboolean row, ok;

  g_variant_builder_init (&b, G_VARIANT_TYPE ("as"));
  while ((ok = sq_db_step (store->db, stmt, &row, error)) && row)
    g_variant_builder_add (&b, "s", (const char *) sqlite3_column_text (stmt, 0));
  sqlite3_reset (stmt);
  if (!ok)
    {
      g_variant_builder_clear (&b);
      return FALSE;
    }
  *result = g_variant_builder_end (&b);
  return TRUE;
}

/* ---- domains ---- */

static gboolean
sq_op_domain_add (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *name = NULL;
  g_autofree char *target = NULL;
  g_autofree char *existing_alias = NULL;
  const char *arg_name, *arg_target;
  gboolean shared, exists, existing_shared;
  SqStmt *stmt;

  g_variant_get (args, "(&s&sb)", &arg_name, &arg_target, &shared);
  if (!sq_arg_name (arg_name, "domain name", &name, error))
    return FALSE;
  if (strchr (name, '@') != NULL)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "a domain name has no @: %s", name);
      return FALSE;
    }
  if (*arg_target != '\0')
    {
      if (!sq_arg_name (arg_target, "domain name", &target, error))
        return FALSE;
      if (strcmp (target, name) == 0)
        {
          g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "%s cannot be an alias of itself", name);
          return FALSE;
        }
    }
  if (!sq_domain_get (store, name, &exists, &existing_alias, &existing_shared, error))
    return FALSE;
  if (exists)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_EXISTS, "domain %s exists already", name);
      return FALSE;
    }
  if (target != NULL && !sq_check_real_domain (store, target, error))
    return FALSE;
  stmt = sq_db_prepare (store->db, "INSERT INTO domains (name, alias_of, shared) VALUES (?1, ?2, ?3)", error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, name, -1, SQLITE_STATIC);
  if (target != NULL)
    sqlite3_bind_text (stmt, 2, target, -1, SQLITE_STATIC);
  sqlite3_bind_int (stmt, 3, shared ? 1 : 0);
  return sq_db_run (store->db, stmt, error);
}

static gint64
sq_count (SqStore *store, const char *sql, const char *key, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db, sql, error);
  gboolean row;
  gint64 n;

  if (stmt == NULL)
    return -1;
  sqlite3_bind_text (stmt, 1, key, -1, SQLITE_STATIC);
  if (!sq_db_step (store->db, stmt, &row, error))
    return -1;
  n = row ? sqlite3_column_int64 (stmt, 0) : 0;
  sqlite3_reset (stmt);
  return n;
}

static gboolean
sq_op_domain_del (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  static const struct {
    const char *what;
    const char *sql;
  } deps[] = {
    { "user", "SELECT count(*) FROM users WHERE substr(name, -(length(?1) + 1)) = '@' || ?1" },
    { "alias", "SELECT count(*) FROM aliases WHERE substr(address, -(length(?1) + 1)) = '@' || ?1" },
    { "list", "SELECT count(*) FROM lists WHERE substr(address, -(length(?1) + 1)) = '@' || ?1" },
    { "domain alias", "SELECT count(*) FROM domains WHERE alias_of = ?1" },
  };
  g_autofree char *name = NULL;
  g_autofree char *alias_of = NULL;
  const char *arg;
  gboolean exists, shared;

  g_variant_get (args, "(&s)", &arg);
  if (!sq_arg_name (arg, "domain name", &name, error) || !sq_domain_get (store, name, &exists, &alias_of, &shared, error))
    return FALSE;
  if (!exists)
    return sq_not_found (error, "domain", name);
  for (guint i = 0; i < G_N_ELEMENTS (deps); i++)
    {
      gint64 n = sq_count (store, deps[i].sql, name, error);
      if (n < 0)
        return FALSE;
      if (n > 0)
        {
          g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID,
                       "%s still has %" G_GINT64_FORMAT " %s%s: delete them first", name, n, deps[i].what,
                       n == 1 ? "" : "s");
          return FALSE;
        }
    }
  return sq_run_text (store, "DELETE FROM domains WHERE name = ?1", name, NULL, error);
}

static gboolean
sq_op_domain_list (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db, "SELECT name, coalesce(alias_of, ''), shared FROM domains ORDER BY name",
                                error);
  GVariantBuilder b;
  gboolean row, ok;

  if (stmt == NULL)
    return FALSE;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a(ssb)"));
  while ((ok = sq_db_step (store->db, stmt, &row, error)) && row)
    g_variant_builder_add (&b, "(ssb)", (const char *) sqlite3_column_text (stmt, 0),
                           (const char *) sqlite3_column_text (stmt, 1), sqlite3_column_int (stmt, 2) != 0);
  sqlite3_reset (stmt);
  if (!ok)
    {
      g_variant_builder_clear (&b);
      return FALSE;
    }
  *result = g_variant_builder_end (&b);
  return TRUE;
}

/* ---- users ---- */

static gboolean
sq_check_hash (const char *hash, GError **error)
{
  /* The backend never sees a password: only crypt(3) strings ("$y$...")
   * or a locked account ("!" or "*"...) are stored. */
  if ((hash[0] != '$' && hash[0] != '!' && hash[0] != '*') || strpbrk (hash, " \t\r\n") != NULL)
    {
      g_set_error_literal (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID,
                           "the password hash is not a crypt(3) string");
      return FALSE;
    }
  return TRUE;
}

/* "SMTP, pop3" -> "smtp,pop3". */
static gboolean
sq_arg_protocols (const char *in, char **out, GError **error)
{
  g_auto (GStrv) items = g_strsplit (in, ",", -1);
  g_autoptr (GString) res = g_string_new (NULL);

  for (guint i = 0; items[i] != NULL; i++)
    {
      char *word = g_strstrip (items[i]);
      if (*word == '\0')
        continue;
      for (const char *p = word; *p != '\0'; p++)
        if (!g_ascii_isalnum (*p) && *p != '-')
          {
            g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "bad protocol list '%s'", in);
            return FALSE;
          }
      if (res->len > 0)
        g_string_append_c (res, ',');
      g_string_append (res, word);
    }
  *out = g_ascii_strdown (res->str, -1);
  return TRUE;
}

static gboolean
sq_check_max_size (gint64 max_size, GError **error)
{
  if (max_size < 0)
    {
      g_set_error_literal (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "max-size must not be negative");
      return FALSE;
    }
  return TRUE;
}

static gboolean
sq_op_user_add (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *name = NULL;
  g_autofree char *protocols = NULL;
  const char *arg_name, *hash, *arg_protocols, *at;
  gint64 max_size;
  SqStmt *stmt;

  g_variant_get (args, "(&s&s&sx)", &arg_name, &hash, &arg_protocols, &max_size);
  if (!sq_arg_name (arg_name, "user name", &name, error) || !sq_check_hash (hash, error)
      || !sq_arg_protocols (arg_protocols, &protocols, error) || !sq_check_max_size (max_size, error))
    return FALSE;
  at = strchr (name, '@');
  if (at != NULL)
    {
      if (at == name || strchr (at + 1, '@') != NULL)
        {
          g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "bad user name %s", name);
          return FALSE;
        }
      if (!sq_check_real_domain (store, at + 1, error))
        return FALSE;
    }
  if (!sq_check_address_free (store, name, "user", error))
    return FALSE;
  stmt = sq_db_prepare (store->db, "INSERT INTO users (name, hash, protocols, max_size) VALUES (?1, ?2, ?3, ?4)", error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_text (stmt, 2, hash, -1, SQLITE_STATIC);
  sqlite3_bind_text (stmt, 3, protocols, -1, SQLITE_STATIC);
  sqlite3_bind_int64 (stmt, 4, max_size);
  return sq_db_run (store->db, stmt, error);
}

static gboolean
sq_op_user_del (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *name = NULL;
  g_autoptr (GArray) messages = g_array_new (FALSE, FALSE, sizeof (gint64));
  const char *arg;
  gboolean exists, row, ok;
  SqStmt *stmt;

  g_variant_get (args, "(&s)", &arg);
  if (!sq_arg_name (arg, "user name", &name, error) || !sq_user_exists (store, name, &exists, error))
    return FALSE;
  if (!exists)
    return sq_not_found (error, "user", name);
  /* The mailbox goes with the user; then its messages, unless something else refers to them. */
  stmt = sq_db_prepare (store->db, "SELECT DISTINCT message_id FROM mailbox WHERE user = ?1", error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, name, -1, SQLITE_STATIC);
  while ((ok = sq_db_step (store->db, stmt, &row, error)) && row)
    {
      gint64 id = sqlite3_column_int64 (stmt, 0);
      g_array_append_val (messages, id);
    }
  sqlite3_reset (stmt);
  if (!ok || !sq_run_text (store, "DELETE FROM mailbox WHERE user = ?1", name, NULL, error)
      || !sq_run_text (store, "DELETE FROM users WHERE name = ?1", name, NULL, error))
    return FALSE;
  for (guint i = 0; i < messages->len; i++)
    if (!sq_message_release (store, g_array_index (messages, gint64, i), error))
      return FALSE;
  return TRUE;
}

static gboolean
sq_op_user_set (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *name = NULL;
  g_autoptr (GVariant) changes = NULL;
  const char *arg, *key;
  GVariantIter iter;
  GVariant *value;
  gboolean exists;

  g_variant_get (args, "(&s@a{sv})", &arg, &changes);
  if (!sq_arg_name (arg, "user name", &name, error) || !sq_user_exists (store, name, &exists, error))
    return FALSE;
  if (!exists)
    return sq_not_found (error, "user", name);

  g_variant_iter_init (&iter, changes);
  while (g_variant_iter_loop (&iter, "{&sv}", &key, &value))
    {
      gboolean ok;

      if (strcmp (key, "hash") == 0 && g_variant_is_of_type (value, G_VARIANT_TYPE_STRING))
        ok = sq_check_hash (g_variant_get_string (value, NULL), error)
             && sq_run_text (store, "UPDATE users SET hash = ?2 WHERE name = ?1", name,
                             g_variant_get_string (value, NULL), error);
      else if (strcmp (key, "protocols") == 0 && g_variant_is_of_type (value, G_VARIANT_TYPE_STRING))
        {
          g_autofree char *protocols = NULL;
          ok = sq_arg_protocols (g_variant_get_string (value, NULL), &protocols, error)
               && sq_run_text (store, "UPDATE users SET protocols = ?2 WHERE name = ?1", name, protocols, error);
        }
      else if (strcmp (key, "max-size") == 0 && g_variant_is_of_type (value, G_VARIANT_TYPE_INT64))
        {
          SqStmt *stmt = sq_db_prepare (store->db, "UPDATE users SET max_size = ?2 WHERE name = ?1", error);
          ok = stmt != NULL && sq_check_max_size (g_variant_get_int64 (value), error);
          if (ok)
            {
              sqlite3_bind_text (stmt, 1, name, -1, SQLITE_STATIC);
              sqlite3_bind_int64 (stmt, 2, g_variant_get_int64 (value));
              ok = sq_db_run (store->db, stmt, error);
            }
        }
      else
        {
          g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID,
                       "user.set: unknown change '%s' of type %s (known: hash s, protocols s, max-size x)", key,
                       g_variant_get_type_string (value));
          ok = FALSE;
        }
      if (!ok)
        {
          g_variant_unref (value);
          return FALSE;
        }
    }
  return TRUE;
}

static gboolean
sq_op_user_get (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *name = NULL;
  const char *arg;
  gboolean row;
  SqStmt *stmt;

  g_variant_get (args, "(&s)", &arg);
  if (!sq_arg_name (arg, "user name", &name, error))
    return FALSE;
  stmt = sq_db_prepare (store->db, "SELECT name, hash, protocols, max_size FROM users WHERE name = ?1", error);
  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, name, -1, SQLITE_STATIC);
  if (!sq_db_step (store->db, stmt, &row, error))
    return FALSE;
  if (!row)
    {
      sqlite3_reset (stmt);
      return sq_not_found (error, "user", name);
    }
  *result = g_variant_new ("(sssx)", (const char *) sqlite3_column_text (stmt, 0),
                           (const char *) sqlite3_column_text (stmt, 1), (const char *) sqlite3_column_text (stmt, 2),
                           sqlite3_column_int64 (stmt, 3));
  sqlite3_reset (stmt);
  return TRUE;
}

static gboolean
sq_op_user_list (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db,
                                "SELECT u.name, u.protocols, u.max_size, count(b.uid), coalesce(sum(b.size), 0)"
                                " FROM users u LEFT JOIN mailbox b ON b.user = u.name GROUP BY u.name ORDER BY u.name",
                                error);
  GVariantBuilder b;
  gboolean row, ok;

  if (stmt == NULL)
    return FALSE;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a(ssxxx)"));
  while ((ok = sq_db_step (store->db, stmt, &row, error)) && row)
    g_variant_builder_add (&b, "(ssxxx)", (const char *) sqlite3_column_text (stmt, 0),
                           (const char *) sqlite3_column_text (stmt, 1), sqlite3_column_int64 (stmt, 2),
                           sqlite3_column_int64 (stmt, 3), sqlite3_column_int64 (stmt, 4));
  sqlite3_reset (stmt);
  if (!ok)
    {
      g_variant_builder_clear (&b);
      return FALSE;
    }
  *result = g_variant_builder_end (&b);
  return TRUE;
}

/* ---- aliases and lists ---- */

static gboolean
sq_op_alias_add (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *address = NULL;
  g_autofree char *target = NULL;
  const char *arg_address, *arg_target;

  g_variant_get (args, "(&s&s)", &arg_address, &arg_target);
  if (!sq_arg_address (store, arg_address, &address, error) || !sq_arg_name (arg_target, "target", &target, error))
    return FALSE;
  if (strcmp (address, target) == 0)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_INVALID, "%s cannot be an alias of itself", address);
      return FALSE;
    }
  return sq_check_address_free (store, address, "alias", error)
         && sq_run_text (store, "INSERT INTO aliases (address, target) VALUES (?1, ?2)", address, target, error);
}

static gboolean
sq_op_alias_del (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *address = NULL;
  const char *arg;

  g_variant_get (args, "(&s)", &arg);
  return sq_arg_name (arg, "address", &address, error)
         && sq_run_changing (store, "DELETE FROM aliases WHERE address = ?1", address, NULL, "alias", address, error);
}

static gboolean
sq_op_alias_list (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db, "SELECT address, target FROM aliases ORDER BY address", error);
  GVariantBuilder b;
  gboolean row, ok;

  if (stmt == NULL)
    return FALSE;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a(ss)"));
  while ((ok = sq_db_step (store->db, stmt, &row, error)) && row)
    g_variant_builder_add (&b, "(ss)", (const char *) sqlite3_column_text (stmt, 0),
                           (const char *) sqlite3_column_text (stmt, 1));
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
sq_op_list_add (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *address = NULL;
  const char *arg;

  g_variant_get (args, "(&s)", &arg);
  return sq_arg_address (store, arg, &address, error) && sq_check_address_free (store, address, "list", error)
         && sq_run_text (store, "INSERT INTO lists (address) VALUES (?1)", address, NULL, error);
}

static gboolean
sq_op_list_del (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *address = NULL;
  const char *arg;

  g_variant_get (args, "(&s)", &arg);
  return sq_arg_name (arg, "address", &address, error)
         && sq_run_changing (store, "DELETE FROM lists WHERE address = ?1", address, NULL, "list", address, error);
}

static gboolean
sq_op_list_list (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db, "SELECT address FROM lists ORDER BY address", error);
  return stmt != NULL && sq_collect_strings (store, stmt, result, error);
}

/* The list named by the first argument, which must exist. */
static gboolean
sq_arg_list (SqStore *store, const char *arg, char **out, GError **error)
{
  gboolean exists;

  if (!sq_arg_name (arg, "address", out, error) || !sq_list_exists (store, *out, &exists, error))
    return FALSE;
  return exists || sq_not_found (error, "list", *out);
}

static gboolean
sq_op_list_add_member (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *list = NULL;
  g_autofree char *member = NULL;
  const char *arg_list, *arg_member;
  gboolean exists;

  g_variant_get (args, "(&s&s)", &arg_list, &arg_member);
  if (!sq_arg_list (store, arg_list, &list, error) || !sq_arg_name (arg_member, "member", &member, error)
      || !sq_row_exists (store, "SELECT 1 FROM list_members WHERE list = ?1 AND member = ?2", list, member,
                         &exists, error))
    return FALSE;
  if (exists || strcmp (member, list) == 0)
    {
      g_set_error (error, PB_STORE_ERROR_DOMAIN, exists ? PB_STORE_ERROR_EXISTS : PB_STORE_ERROR_INVALID,
                   exists ? "%s is a member of %s already" : "%s cannot be a member of %s", member, list);
      return FALSE;
    }
  return sq_run_text (store, "INSERT INTO list_members (list, member) VALUES (?1, ?2)", list, member, error);
}

static gboolean
sq_op_list_del_member (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *list = NULL;
  g_autofree char *member = NULL;
  const char *arg_list, *arg_member;

  g_variant_get (args, "(&s&s)", &arg_list, &arg_member);
  return sq_arg_list (store, arg_list, &list, error) && sq_arg_name (arg_member, "member", &member, error)
         && sq_run_changing (store, "DELETE FROM list_members WHERE list = ?1 AND member = ?2", list, member,
                             "member", member, error);
}

static gboolean
sq_list_members (SqStore *store, const char *list, GVariant **result, GError **error)
{
  SqStmt *stmt = sq_db_prepare (store->db, "SELECT member FROM list_members WHERE list = ?1 ORDER BY member", error);

  if (stmt == NULL)
    return FALSE;
  sqlite3_bind_text (stmt, 1, list, -1, SQLITE_STATIC);
  return sq_collect_strings (store, stmt, result, error);
}

static gboolean
sq_op_list_members (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *list = NULL;
  const char *arg;

  g_variant_get (args, "(&s)", &arg);
  return sq_arg_list (store, arg, &list, error) && sq_list_members (store, list, result, error);
}

/* ---- directory.lookup: one step of routing ---- */

static GVariant *
sq_lookup_answer (gboolean local, const char *kind, const char *name, GVariant *targets)
{
  if (targets == NULL)
    targets = g_variant_new_strv (NULL, 0);
  return g_variant_new ("(bss@as)", local, kind, name, targets);
}

static gboolean
sq_op_directory_lookup (SqStore *store, GVariant *args, GVariant **result, GError **error)
{
  g_autofree char *address = NULL;
  g_autofree char *real = NULL;
  g_autofree char *canonical = NULL;
  g_autofree char *target = NULL;
  const char *arg, *at;
  gboolean exists, shared = FALSE;

  g_variant_get (args, "(&s)", &arg);
  if (!sq_arg_name (arg, "address", &address, error))
    return FALSE;
  at = strrchr (address, '@');
  if (at == NULL)
    {
      /* A bare name ("postmaster"): a user of that name or nothing. */
      if (!sq_user_exists (store, address, &exists, error))
        return FALSE;
      *result = sq_lookup_answer (TRUE, exists ? "user" : "", address, NULL);
      return TRUE;
    }

  /* Follow alias-of to the domain of its own (a few steps at most: an
   * alias is only ever made of a domain of its own). */
  real = g_strdup (at + 1);
  for (guint hops = 0;; hops++)
    {
      g_autofree char *alias_of = NULL;

      if (!sq_domain_get (store, real, &exists, &alias_of, &shared, error))
        return FALSE;
      if (!exists)
        {
          *result = sq_lookup_answer (hops > 0, "", address, NULL);
          return TRUE;
        }
      if (alias_of == NULL || hops >= 8)
        break;
      g_free (real);
      real = g_steal_pointer (&alias_of);
    }
  canonical = g_strdup_printf ("%.*s@%s", (int) (at - address), address, real);

  if (!sq_user_exists (store, canonical, &exists, error))
    return FALSE;
  if (exists)
    {
      *result = sq_lookup_answer (TRUE, "user", canonical, NULL);
      return TRUE;
    }
  if (shared && at > address)
    {
      g_autofree char *local = g_strndup (address, (gsize) (at - address));
      if (!sq_user_exists (store, local, &exists, error))
        return FALSE;
      if (exists)
        {
          *result = sq_lookup_answer (TRUE, "user", local, NULL);
          return TRUE;
        }
    }
  if (!sq_alias_target (store, canonical, &target, error))
    return FALSE;
  if (target != NULL)
    {
      const char *one[] = { target };
      *result = sq_lookup_answer (TRUE, "alias", canonical, g_variant_new_strv (one, 1));
      return TRUE;
    }
  if (!sq_list_exists (store, canonical, &exists, error))
    return FALSE;
  if (exists)
    {
      GVariant *members = NULL;
      if (!sq_list_members (store, canonical, &members, error))
        return FALSE;
      *result = sq_lookup_answer (TRUE, "list", canonical, members);
      return TRUE;
    }
  *result = sq_lookup_answer (TRUE, "", canonical, NULL);
  return TRUE;
}

const SqOp sq_directory_ops[] = {
  { "domain.add", "(ssb)", TRUE, sq_op_domain_add },
  { "domain.del", "(s)", TRUE, sq_op_domain_del },
  { "domain.list", "()", FALSE, sq_op_domain_list },
  { "user.add", "(sssx)", TRUE, sq_op_user_add },
  { "user.del", "(s)", TRUE, sq_op_user_del },
  { "user.set", "(sa{sv})", TRUE, sq_op_user_set },
  { "user.get", "(s)", FALSE, sq_op_user_get },
  { "user.list", "()", FALSE, sq_op_user_list },
  { "alias.add", "(ss)", TRUE, sq_op_alias_add },
  { "alias.del", "(s)", TRUE, sq_op_alias_del },
  { "alias.list", "()", FALSE, sq_op_alias_list },
  { "list.add", "(s)", TRUE, sq_op_list_add },
  { "list.del", "(s)", TRUE, sq_op_list_del },
  { "list.list", "()", FALSE, sq_op_list_list },
  { "list.add-member", "(ss)", TRUE, sq_op_list_add_member },
  { "list.del-member", "(ss)", TRUE, sq_op_list_del_member },
  { "list.members", "(s)", FALSE, sq_op_list_members },
  { "directory.lookup", "(s)", FALSE, sq_op_directory_lookup },
  { NULL, NULL, FALSE, NULL }
};

const SqOp *
sq_op_find (const char *name)
{
  static const SqOp *const tables[] = { sq_directory_ops, sq_mailbox_ops, sq_queue_ops, sq_origin_ops };

  for (guint t = 0; t < G_N_ELEMENTS (tables); t++)
    for (const SqOp *op = tables[t]; op->name != NULL; op++)
      if (strcmp (op->name, name) == 0)
        return op;
  return NULL;
}
