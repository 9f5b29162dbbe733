/* SPDX-License-Identifier: MIT */
/* The directory commands: pillarbox domain|user|alias|list|mailbox, on top of pb_store_request. */
#include "config.h"
#include "core-private.h"

#include <string.h>

/* One command invocation waiting for storage (and perhaps for a hash). */
typedef struct {
  PbControlRequest *req;
  PbGeneration *gen;
  char *what;                 /* "user bob", for messages */
  char *op;                   /* storage operation, for the hash step */
  GVariant *pending_args;     /* built once the hash is known */
  void (*format) (GVariant *result, GString *text);
} DirCall;

static void
dir_call_free (DirCall *call)
{
  pb_control_request_unref (call->req);
  pb_generation_unref (call->gen);
  g_free (call->what);
  g_free (call->op);
  g_clear_pointer (&call->pending_args, g_variant_unref);
  g_free (call);
}

static DirCall *
dir_call_new (PbControlRequest *req, const char *what)
{
  DirCall *call = g_new0 (DirCall, 1);
  call->req = pb_control_request_ref (req);
  call->gen = pb_generation_ref (pb_generation_get_current ());
  call->what = g_strdup (what);
  return call;
}

static const char *
store_error_text (const GError *error)
{
  if (error->domain == PB_STORE_ERROR_DOMAIN)
    switch ((PbStoreError) error->code)
      {
      case PB_STORE_ERROR_NOT_FOUND: return "does not exist";
      case PB_STORE_ERROR_EXISTS: return "exists already";
      case PB_STORE_ERROR_NO_BACKEND: return "cannot be changed: no storage module is configured";
      default: break;
      }
  return NULL;
}

static void
dir_done (GVariant *result, const GError *error, gpointer user_data)
{
  DirCall *call = user_data;

  if (error != NULL)
    {
      const char *short_text = store_error_text (error);
      if (short_text != NULL)
        pb_control_request_fail (call->req, "%s %s", call->what, short_text);
      else
        pb_control_request_fail (call->req, "%s: %s", call->what, error->message);
    }
  else if (call->format != NULL)
    {
      g_autoptr (GString) text = g_string_new (NULL);
      call->format (result, text);
      pb_control_request_reply (call->req, result != NULL ? g_variant_ref (result) : NULL, text->str);
    }
  else
    {
      g_autofree char *text = g_strdup_printf ("%s: done", call->what);
      pb_control_request_reply (call->req, NULL, text);
    }
  dir_call_free (call);
}

static void
dir_run (DirCall *call, const char *op, GVariant *args)
{
  pb_store_request_gen (call->gen, op, args, dir_done, call);
}

/* ---- argument checks ---- */

static gboolean
is_domain_name (const char *s)
{
  if (*s == '\0' || strlen (s) > 253 || *s == '.' || *s == '-')
    return FALSE;
  for (const char *p = s; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p) && *p != '-' && *p != '.')
      return FALSE;
  return strstr (s, "..") == NULL;
}

static gboolean
is_local_part (const char *s, gsize len)
{
  if (len == 0 || len > 64)
    return FALSE;
  for (gsize i = 0; i < len; i++)
    if (!g_ascii_isalnum (s[i]) && strchr (".-_+=!#$%&'*/?^`{|}~", s[i]) == NULL)
      return FALSE;
  return TRUE;
}

static gboolean
is_address (const char *s)
{
  const char *at = strrchr (s, '@');
  return at != NULL && is_local_part (s, at - s) && is_domain_name (at + 1);
}

/* A user is "bob" (every shared domain) or "bob@example.org". */
static gboolean
is_user_name (const char *s)
{
  return strchr (s, '@') != NULL ? is_address (s) : is_local_part (s, strlen (s));
}

/* Splits ARGS after the subcommand into positional words and --options. */
typedef struct {
  GPtrArray *words;
  GHashTable *options;        /* name -> value ("" for flags) */
} Args;

static void
args_clear (Args *a)
{
  g_clear_pointer (&a->words, g_ptr_array_unref);
  g_clear_pointer (&a->options, g_hash_table_unref);
}

static gboolean
args_parse (const char *const *argv, const char *const *with_value, const char *const *flags, Args *out,
            char **error)
{
  out->words = g_ptr_array_new ();
  out->options = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; argv[i] != NULL; i++)
    {
      const char *a = argv[i];
      if (strncmp (a, "--", 2) != 0)
        g_ptr_array_add (out->words, (gpointer) a);
      else if (with_value != NULL && g_strv_contains (with_value, a + 2))
        {
          if (argv[i + 1] == NULL)
            {
              *error = g_strdup_printf ("%s needs a value", a);
              return FALSE;
            }
          g_hash_table_insert (out->options, (gpointer) (a + 2), (gpointer) argv[++i]);
        }
      else if (flags != NULL && g_strv_contains (flags, a + 2))
        g_hash_table_insert (out->options, (gpointer) (a + 2), (gpointer) "");
      else
        {
          *error = g_strdup_printf ("unknown option %s", a);
          return FALSE;
        }
    }
  return TRUE;
}

static gboolean
check_protocols (const char *list, char **normalised, char **error)
{
  static const char *const known[] = { "smtp", "pop3", NULL };
  g_auto (GStrv) parts = g_strsplit (list, ",", -1);
  GPtrArray *out = g_ptr_array_new ();

  for (guint i = 0; parts[i] != NULL; i++)
    {
      char *p = g_strstrip (parts[i]);
      if (*p == '\0')
        continue;
      if (!g_strv_contains (known, p))
        {
          *error = g_strdup_printf ("unknown protocol '%s' (known: smtp, pop3)", p);
          g_ptr_array_unref (out);
          return FALSE;
        }
      g_ptr_array_add (out, p);
    }
  g_ptr_array_add (out, NULL);
  *normalised = g_strjoinv (",", (char **) out->pdata);
  g_ptr_array_unref (out);
  return TRUE;
}

static gboolean
check_size (const char *text, gint64 *bytes, char **error)
{
  static const PbSetting size_setting = {
    "max-size", PB_SETTING_TYPE_SIZE, 0, "0", 0, G_GINT64_CONSTANT (1) << 40, NULL, ""
  };
  return pb_setting_parse (&size_setting, text, NULL, bytes, error);
}

/* ---- formatting ---- */

static char *
human_size (gint64 bytes)
{
  return bytes == 0 ? g_strdup ("-") : g_format_size_full ((guint64) bytes, G_FORMAT_SIZE_IEC_UNITS);
}

static void
format_domains (GVariant *result, GString *text)
{
  GVariantIter it;
  const char *name, *alias_of;
  gboolean shared;

  g_variant_iter_init (&it, result);
  while (g_variant_iter_next (&it, "(&s&sb)", &name, &alias_of, &shared))
    {
      if (*alias_of != '\0')
        g_string_append_printf (text, "%-32s alias of %s\n", name, alias_of);
      else
        g_string_append_printf (text, "%-32s %s\n", name, shared ? "shared users" : "own users");
    }
  if (text->len == 0)
    g_string_append (text, "no local domains\n");
}

static void
format_users (GVariant *result, GString *text)
{
  GVariantIter it;
  const char *name, *protocols;
  gint64 max_size, messages, octets;

  g_variant_iter_init (&it, result);
  while (g_variant_iter_next (&it, "(&s&sxxx)", &name, &protocols, &max_size, &messages, &octets))
    {
      g_autofree char *limit = human_size (max_size);
      g_autofree char *used = human_size (octets);
      if (text->len == 0)
        g_string_append_printf (text, "%-32s %-10s %-10s %8s %10s\n", "USER", "PROTOCOLS", "MAX SIZE", "MESSAGES",
                                "SIZE");
      g_string_append_printf (text, "%-32s %-10s %-10s %8" G_GINT64_FORMAT " %10s\n", name, protocols, limit,
                              messages, used);
    }
  if (text->len == 0)
    g_string_append (text, "no users\n");
}

static void
format_pairs (GVariant *result, GString *text)
{
  GVariantIter it;
  const char *a, *b;

  g_variant_iter_init (&it, result);
  while (g_variant_iter_next (&it, "(&s&s)", &a, &b))
    g_string_append_printf (text, "%-32s -> %s\n", a, b);
  if (text->len == 0)
    g_string_append (text, "none\n");
}

static void
format_strings (GVariant *result, GString *text)
{
  GVariantIter it;
  const char *s;

  g_variant_iter_init (&it, result);
  while (g_variant_iter_next (&it, "&s", &s))
    g_string_append_printf (text, "%s\n", s);
  if (text->len == 0)
    g_string_append (text, "none\n");
}

static void
format_mailbox (GVariant *result, GString *text)
{
  GVariantIter it;
  guint64 uid;
  const char *id;
  gint64 size, received;

  g_variant_iter_init (&it, result);
  while (g_variant_iter_next (&it, "(t&sxx&s)", &uid, &id, &size, &received, NULL))
    {
      g_autoptr (GDateTime) t = g_date_time_new_from_unix_local (received);
      g_autofree char *when = t != NULL ? g_date_time_format (t, "%Y-%m-%d %H:%M:%S") : g_strdup ("?");
      if (text->len == 0)
        g_string_append_printf (text, "%10s  %-20s %10s  %s\n", "UID", "MESSAGE", "SIZE", "RECEIVED");
      g_string_append_printf (text, "%10" G_GUINT64_FORMAT "  %-20s %10" G_GINT64_FORMAT "  %s\n", uid, id, size,
                              when);
    }
  if (text->len == 0)
    g_string_append (text, "the mailbox is empty\n");
}

/* ---- the commands ---- */

static const char *const *
req_args (PbControlRequest *req, guint *n)
{
  const char *const *args = pb_control_request_get_args (req);
  *n = g_strv_length ((char **) args);
  return args;
}

#define FAIL_USAGE(req, usage) \
  do { pb_control_request_fail ((req), "usage: pillarbox %s", (usage)); return; } while (0)

static void
cmd_domain (PbControlRequest *req, gpointer user_data)
{
  static const char *const with_value[] = { "alias-of", NULL };
  static const char *const flags[] = { "shared", NULL };
  static const char usage[] = "domain add NAME [--shared | --alias-of DOMAIN] | domain del NAME | domain list";
  guint n;
  const char *const *args = req_args (req, &n);
  g_autofree char *error = NULL;
  g_autofree char *what = NULL;
  Args a = { 0 };
  DirCall *call;

  if (n == 0)
    FAIL_USAGE (req, usage);
  if (strcmp (args[0], "list") == 0 && n == 1)
    {
      call = dir_call_new (req, "domains");
      call->format = format_domains;
      dir_run (call, "domain.list", NULL);
      return;
    }
  if (!args_parse (args + 1, with_value, flags, &a, &error))
    {
      pb_control_request_fail (req, "%s; usage: pillarbox %s", error, usage);
      args_clear (&a);
      return;
    }
  if (a.words->len != 1 || (strcmp (args[0], "add") != 0 && strcmp (args[0], "del") != 0))
    {
      args_clear (&a);
      FAIL_USAGE (req, usage);
    }
  {
    g_autofree char *name = g_ascii_strdown (g_ptr_array_index (a.words, 0), -1);
    const char *alias_of = g_hash_table_lookup (a.options, "alias-of");
    gboolean shared = g_hash_table_contains (a.options, "shared");

    if (!is_domain_name (name) || (alias_of != NULL && !is_domain_name (alias_of)))
      {
        pb_control_request_fail (req, "'%s' is not a domain name", is_domain_name (name) ? alias_of : name);
        args_clear (&a);
        return;
      }
    what = g_strdup_printf ("domain %s", name);
    call = dir_call_new (req, what);
    if (strcmp (args[0], "add") == 0)
      {
        g_autofree char *target = g_ascii_strdown (alias_of != NULL ? alias_of : "", -1);
        if (alias_of != NULL && shared)
          {
            pb_control_request_fail (req, "--shared and --alias-of exclude each other");
            dir_call_free (call);
            args_clear (&a);
            return;
          }
        dir_run (call, "domain.add", g_variant_new ("(ssb)", name, target, shared));
      }
    else
      {
        if (g_hash_table_size (a.options) > 0)
          {
            pb_control_request_fail (req, "domain del takes no options");
            dir_call_free (call);
            args_clear (&a);
            return;
          }
        dir_run (call, "domain.del", g_variant_new ("(s)", name));
      }
  }
  args_clear (&a);
}

static void
user_store_with_hash (const char *hash, const char *error, gpointer user_data)
{
  DirCall *call = user_data;

  if (hash == NULL)
    {
      pb_control_request_fail (call->req, "%s: %s", call->what, error != NULL ? error : "hashing failed");
      dir_call_free (call);
      return;
    }
  if (strcmp (call->op, "user.add") == 0)
    {
      const char *name, *protocols;
      gint64 max_size;
      g_variant_get (call->pending_args, "(&s&sx)", &name, &protocols, &max_size);
      dir_run (call, "user.add", g_variant_new ("(sssx)", name, hash, protocols, max_size));
    }
  else
    {
      GVariantDict changes;
      const char *name;
      g_variant_get (call->pending_args, "(&s)", &name);
      g_variant_dict_init (&changes, NULL);
      g_variant_dict_insert (&changes, "hash", "s", hash);
      dir_run (call, "user.set", g_variant_new ("(s@a{sv})", name, g_variant_dict_end (&changes)));
    }
}

static gboolean
check_password (PbControlRequest *req)
{
  const char *pw = pb_control_request_get_input (req);

  if (pw == NULL || *pw == '\0')
    {
      pb_control_request_fail (req, "no password given (type it at the prompt, or pipe it to standard input)");
      return FALSE;
    }
  if (strlen (pw) > 1024)
    {
      pb_control_request_fail (req, "the password is longer than 1024 characters");
      return FALSE;
    }
  return TRUE;
}

static void
cmd_user (PbControlRequest *req, gpointer user_data)
{
  static const char *const with_value[] = { "protocols", "max-size", NULL };
  static const char usage[] =
    "user add NAME [--protocols smtp,pop3] [--max-size SIZE] | user passwd NAME | "
    "user set NAME [--protocols LIST] [--max-size SIZE] | user del NAME | user list";
  guint n;
  const char *const *args = req_args (req, &n);
  g_autofree char *error = NULL;
  g_autofree char *name = NULL;
  g_autofree char *what = NULL;
  g_autofree char *protocols = NULL;
  gint64 max_size = 0;
  gboolean have_max_size;
  Args a = { 0 };
  DirCall *call;

  if (n == 0)
    FAIL_USAGE (req, usage);
  if (strcmp (args[0], "list") == 0 && n == 1)
    {
      call = dir_call_new (req, "users");
      call->format = format_users;
      dir_run (call, "user.list", NULL);
      return;
    }
  if (!args_parse (args + 1, with_value, NULL, &a, &error))
    {
      pb_control_request_fail (req, "%s; usage: pillarbox %s", error, usage);
      args_clear (&a);
      return;
    }
  if (a.words->len != 1 || !g_strv_contains ((const char *const[]) { "add", "passwd", "set", "del", NULL }, args[0]))
    {
      args_clear (&a);
      FAIL_USAGE (req, usage);
    }
  name = g_ascii_strdown (g_ptr_array_index (a.words, 0), -1);
  if (!is_user_name (name))
    {
      pb_control_request_fail (req, "'%s' is not a user name (NAME or NAME@DOMAIN)", name);
      args_clear (&a);
      return;
    }
  if (g_hash_table_contains (a.options, "protocols")
      && !check_protocols (g_hash_table_lookup (a.options, "protocols"), &protocols, &error))
    {
      pb_control_request_fail (req, "%s", error);
      args_clear (&a);
      return;
    }
  if (g_hash_table_contains (a.options, "max-size")
      && !check_size (g_hash_table_lookup (a.options, "max-size"), &max_size, &error))
    {
      pb_control_request_fail (req, "--max-size: %s", error);
      args_clear (&a);
      return;
    }
  if ((strcmp (args[0], "passwd") == 0 || strcmp (args[0], "del") == 0) && g_hash_table_size (a.options) > 0)
    {
      pb_control_request_fail (req, "user %s takes no options", args[0]);
      args_clear (&a);
      return;
    }
  if (strcmp (args[0], "set") == 0 && g_hash_table_size (a.options) == 0)
    {
      pb_control_request_fail (req, "user set: nothing to change (--protocols or --max-size)");
      args_clear (&a);
      return;
    }
  have_max_size = g_hash_table_contains (a.options, "max-size");
  args_clear (&a);

  what = g_strdup_printf ("user %s", name);
  if (strcmp (args[0], "del") == 0)
    {
      dir_run (dir_call_new (req, what), "user.del", g_variant_new ("(s)", name));
      return;
    }
  if (strcmp (args[0], "set") == 0)
    {
      GVariantDict changes;
      g_variant_dict_init (&changes, NULL);
      if (protocols != NULL)
        g_variant_dict_insert (&changes, "protocols", "s", protocols);
      if (have_max_size)
        g_variant_dict_insert (&changes, "max-size", "x", max_size);
      dir_run (dir_call_new (req, what), "user.set", g_variant_new ("(s@a{sv})", name, g_variant_dict_end (&changes)));
      return;
    }
  /* add and passwd: hash on a worker thread first; the password never reaches storage. */
  if (!check_password (req))
    return;
  call = dir_call_new (req, what);
  call->op = g_strdup (strcmp (args[0], "add") == 0 ? "user.add" : "user.set");
  call->pending_args = g_variant_ref_sink (strcmp (args[0], "add") == 0
                                           ? g_variant_new ("(ssx)", name, protocols != NULL ? protocols : "smtp,pop3", max_size)
                                           : g_variant_new ("(s)", name));
  pb_password_hash (pb_control_request_get_input (req), user_store_with_hash, call);
}

static void
cmd_alias (PbControlRequest *req, gpointer user_data)
{
  static const char usage[] = "alias add ADDRESS TARGET | alias del ADDRESS | alias list";
  guint n;
  const char *const *args = req_args (req, &n);
  g_autofree char *address = NULL;
  g_autofree char *what = NULL;

  if (n == 1 && strcmp (args[0], "list") == 0)
    {
      DirCall *call = dir_call_new (req, "aliases");
      call->format = format_pairs;
      dir_run (call, "alias.list", NULL);
      return;
    }
  if (!((n == 3 && strcmp (args[0], "add") == 0) || (n == 2 && strcmp (args[0], "del") == 0)))
    FAIL_USAGE (req, usage);
  address = g_ascii_strdown (args[1], -1);
  if (!is_address (address))
    {
      pb_control_request_fail (req, "'%s' is not an address (local@domain)", args[1]);
      return;
    }
  what = g_strdup_printf ("alias %s", address);
  if (n == 3)
    {
      g_autofree char *target = g_ascii_strdown (args[2], -1);
      if (!is_user_name (target))
        {
          pb_control_request_fail (req, "'%s' is not a user name or an address", args[2]);
          return;
        }
      if (strcmp (target, address) == 0)
        {
          pb_control_request_fail (req, "an alias cannot point at itself");
          return;
        }
      dir_run (dir_call_new (req, what), "alias.add", g_variant_new ("(ss)", address, target));
    }
  else
    dir_run (dir_call_new (req, what), "alias.del", g_variant_new ("(s)", address));
}

static void
cmd_list (PbControlRequest *req, gpointer user_data)
{
  static const char usage[] = "list | list add ADDRESS | list del ADDRESS | list members ADDRESS | "
                              "list add-member LIST ADDRESS | list del-member LIST ADDRESS";
  guint n;
  const char *const *args = req_args (req, &n);
  g_autofree char *list = NULL;
  g_autofree char *what = NULL;
  DirCall *call;

  if (n == 0)
    {
      call = dir_call_new (req, "lists");
      call->format = format_strings;
      dir_run (call, "list.list", NULL);
      return;
    }
  if (n < 2)
    FAIL_USAGE (req, usage);
  list = g_ascii_strdown (args[1], -1);
  if (!is_address (list))
    {
      pb_control_request_fail (req, "'%s' is not an address (local@domain)", args[1]);
      return;
    }
  what = g_strdup_printf ("list %s", list);
  if (n == 2 && strcmp (args[0], "add") == 0)
    dir_run (dir_call_new (req, what), "list.add", g_variant_new ("(s)", list));
  else if (n == 2 && strcmp (args[0], "del") == 0)
    dir_run (dir_call_new (req, what), "list.del", g_variant_new ("(s)", list));
  else if (n == 2 && strcmp (args[0], "members") == 0)
    {
      call = dir_call_new (req, what);
      call->format = format_strings;
      dir_run (call, "list.members", g_variant_new ("(s)", list));
    }
  else if (n == 3 && (strcmp (args[0], "add-member") == 0 || strcmp (args[0], "del-member") == 0))
    {
      g_autofree char *member = g_ascii_strdown (args[2], -1);
      if (!is_user_name (member))
        {
          pb_control_request_fail (req, "'%s' is not a user name or an address", args[2]);
          return;
        }
      dir_run (dir_call_new (req, what), strcmp (args[0], "add-member") == 0 ? "list.add-member" : "list.del-member",
               g_variant_new ("(ss)", list, member));
    }
  else
    FAIL_USAGE (req, usage);
}

static void
cmd_mailbox (PbControlRequest *req, gpointer user_data)
{
  guint n;
  const char *const *args = req_args (req, &n);
  g_autofree char *name = NULL;
  g_autofree char *what = NULL;
  DirCall *call;

  if (n != 2 || strcmp (args[0], "list") != 0)
    FAIL_USAGE (req, "mailbox list USER");
  name = g_ascii_strdown (args[1], -1);
  what = g_strdup_printf ("user %s", name);
  call = dir_call_new (req, what);
  call->format = format_mailbox;
  dir_run (call, "mailbox.list", g_variant_new ("(s)", name));
}

void
pb_dircmds_register (PbGeneration *gen)
{
  static const char *const user_input[] = { "add", "passwd", NULL };
  const PbControlCommandSpec commands[] = {
    { sizeof (PbControlCommandSpec), "domain", "Manage local domains",
      "domain add NAME [--shared | --alias-of DOMAIN] | domain del NAME | domain list", cmd_domain, NULL, FALSE, NULL },
    { sizeof (PbControlCommandSpec), "user", "Manage users (passwords are read from a prompt or standard input)",
      "user add NAME [--protocols smtp,pop3] [--max-size SIZE] | user passwd NAME | "
      "user set NAME [--protocols LIST] [--max-size SIZE] | user del NAME | user list",
      cmd_user, NULL, TRUE, user_input },
    { sizeof (PbControlCommandSpec), "alias", "Manage aliases", "alias add ADDRESS TARGET | alias del ADDRESS | alias list",
      cmd_alias, NULL, FALSE, NULL },
    { sizeof (PbControlCommandSpec), "list", "Manage distribution lists",
      "list | list add ADDRESS | list del ADDRESS | list members ADDRESS | list add-member LIST ADDRESS | "
      "list del-member LIST ADDRESS", cmd_list, NULL, FALSE, NULL },
    { sizeof (PbControlCommandSpec), "mailbox", "Show a user's mailbox", "mailbox list USER", cmd_mailbox, NULL,
      FALSE, NULL },
  };

  for (guint i = 0; i < G_N_ELEMENTS (commands); i++)
    pb_generation_add_builtin_command (gen, &commands[i]);
}
