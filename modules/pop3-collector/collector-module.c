/* SPDX-License-Identifier: MIT */
/* pop3-collector: [collector NAME] sections, their passwords, collector registration and `pillarbox collect`. */
#include "config.h"
#include "collector-private.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>

static const char *const security_words[] = { "none", "stls", "tls", NULL };
static const char *const auth_words[] = { "user", "apop", "plain", NULL };

static const PbSetting collector_settings[] = {
  PB_SETTING_ENDPOINTS (CollectorConfig, server, "server", NULL,
                        "The POP3 server as HOST:PORT (110 for none and stls, 995 for tls)."),
  PB_SETTING_ENUM (CollectorConfig, security, "security", "stls", security_words,
                   "none: plain text (only on a trusted network); stls: upgrade with STLS (RFC 2595) and fail if "
                   "the server refuses; tls: implicit TLS from the first byte (port 995)."),
  PB_SETTING_BOOL (CollectorConfig, verify_certificate, "verify-certificate", "true",
                   "Require a certificate the system trusts for the server's name. Off only for a server "
                   "you reach over a network you trust."),
  PB_SETTING_ENUM (CollectorConfig, auth, "auth", "user", auth_words,
                   "How to log in: user (USER and PASS), apop (APOP digest, RFC 1939 §7; needs a timestamp in "
                   "the greeting) or plain (AUTH PLAIN, RFC 5034)."),
  PB_SETTING_STRING (CollectorConfig, user, "user", NULL, "The user name at the POP3 server."),
  PB_SETTING_PATH (CollectorConfig, password_file, "password-file", NULL,
                   "A file whose first line is the password. Refused when group or others may read or change "
                   "it (chmod 600)."),
  PB_SETTING_STRING (CollectorConfig, leave_on_server, "leave-on-server", "no",
                     "no: delete each message from the server once it is stored here; forever: never delete; "
                     "\"N days\": delete N days after it was first collected."),
  PB_SETTING_SIZE (CollectorConfig, max_size, "max-size", "0", 0, G_GINT64_CONSTANT (1) << 40,
                   "Messages larger than this (the size LIST reports) are not downloaded; they stay on the "
                   "server and a warning names each once. 0: no limit."),
  PB_SETTING_STRING (CollectorConfig, mailbox, "mailbox", "",
                     "Deliver every message to this local user or address (aliases and lists are expanded). "
                     "Required unless route-by-headers is on."),
  PB_SETTING_BOOL (CollectorConfig, route_by_headers, "route-by-headers", "false",
                   "A catch-all mailbox: every address in the headers named by `headers` that the router "
                   "accepts as local becomes a recipient; messages with none go to default-mailbox."),
  PB_SETTING_STRING_LIST (CollectorConfig, headers, "headers", "To, Cc, Delivered-To, X-Envelope-To",
                          "With route-by-headers: the header fields whose addresses are routed."),
  PB_SETTING_STRING (CollectorConfig, default_mailbox, "default-mailbox", "",
                     "With route-by-headers: where messages without a local address in their headers go. "
                     "Empty: such messages stay on the server, with a warning."),
  PB_SETTING_DURATION (CollectorConfig, connect_timeout, "connect-timeout", "30s", 1000, 600000,
                       "How long connecting to one address of the server may take."),
  PB_SETTING_DURATION (CollectorConfig, command_timeout, "command-timeout", "2m", 1000, 3600000,
                       "How long the server may stay silent while a reply or message is awaited."),
  PB_SETTING_DURATION (CollectorConfig, run_timeout, "run-timeout", "1h", 10000, 86400000,
                       "The longest one run (one POP3 session) may last."),
  PB_SETTINGS_END
};

static gboolean
collector_check (const void *config, GError **error)
{
  const CollectorConfig *c = config;
  g_autofree char *host = NULL;
  guint16 port;
  gint64 days;

  if (c->server[0] == NULL || c->server[1] != NULL || !collector_split_endpoint (c->server[0], &host, &port))
    {
      g_set_error (error, COLLECTOR_ERROR, 0, "server: give exactly one HOST:PORT");
      return FALSE;
    }
  if (*c->user == '\0')
    {
      g_set_error (error, COLLECTOR_ERROR, 0, "user: must not be empty");
      return FALSE;
    }
  if (!collector_parse_leave (c->leave_on_server, &days, error))
    return FALSE;
  if (c->route_by_headers && *c->mailbox != '\0')
    {
      g_set_error (error, COLLECTOR_ERROR, 0, "mailbox: not with route-by-headers = true (use default-mailbox)");
      return FALSE;
    }
  if (!c->route_by_headers && *c->mailbox == '\0')
    {
      g_set_error (error, COLLECTOR_ERROR, 0, "mailbox: required (or route-by-headers = true)");
      return FALSE;
    }
  if (!c->route_by_headers && *c->default_mailbox != '\0')
    {
      g_set_error (error, COLLECTOR_ERROR, 0, "default-mailbox: only with route-by-headers = true");
      return FALSE;
    }
  if (c->route_by_headers && c->headers[0] == NULL)
    {
      g_set_error (error, COLLECTOR_ERROR, 0, "headers: route-by-headers needs at least one header name");
      return FALSE;
    }
  return TRUE;
}

static const PbSectionInfo collector_section = {
  .struct_size = sizeof (PbSectionInfo),
  .kind = "collector",
  .summary = "One remote POP3 mailbox that pop3-collector fetches into local mailboxes",
  .settings = collector_settings,
  .config_size = sizeof (CollectorConfig),
  .check = collector_check,
};

static const PbSectionInfo *const collector_sections[] = { &collector_section, NULL };

/* ---- the password ------------------------------------------------------- */

static char *
collector_read_password (const char *name, const char *path, GError **error)
{
  GStatBuf st;
  g_autofree char *text = NULL;
  gsize len = 0;
  char *nl;
  char *password;

  if (g_stat (path, &st) != 0)
    {
      int saved = errno;
      g_set_error (error, COLLECTOR_ERROR, 0, "collector %s: password-file %s: %s", name, path, g_strerror (saved));
      return NULL;
    }
  if (!S_ISREG (st.st_mode))
    {
      g_set_error (error, COLLECTOR_ERROR, 0, "collector %s: password-file %s is not a regular file", name, path);
      return NULL;
    }
  if ((st.st_mode & 077) != 0)
    {
      g_set_error (error, COLLECTOR_ERROR, 0,
                   "collector %s: password-file %s is readable or writable by group or others (mode %04o): "
                   "refusing to use it; fix with chmod 600",
                   name, path, (unsigned) (st.st_mode & 07777));
      return NULL;
    }
  if (!g_file_get_contents (path, &text, &len, error))
    {
      g_prefix_error (error, "collector %s: password-file: ", name);
      return NULL;
    }
  nl = strpbrk (text, "\r\n");
  password = g_strndup (text, nl != NULL ? (gsize) (nl - text) : len);
  memset (text, 0, len);
  if (*password == '\0' || strlen (password) != (nl != NULL ? (gsize) (nl - text) : len))
    {
      g_free (password);
      g_set_error (error, COLLECTOR_ERROR, 0, "collector %s: password-file %s: the first line must hold the password",
                   name, path);
      return NULL;
    }
  return password;
}

/* ---- the instance ------------------------------------------------------- */

typedef struct {
  PbModule *module;
  GPtrArray *collectors;      /* Collector * */
} CollectorModule;

static void
collector_free (gpointer p)
{
  Collector *c = p;

  g_free (c->name);
  g_free (c->host);
  if (c->password != NULL)
    memset (c->password, 0, strlen (c->password));
  g_free (c->password);
  g_free (c->origin_prefix);
  g_hash_table_unref (c->warned);
  g_free (c);
}

static void
collector_module_free (gpointer p)
{
  CollectorModule *m = p;
  g_ptr_array_unref (m->collectors);
  g_free (m);
}

static Collector *
collector_find (CollectorModule *m, const char *name)
{
  for (guint i = 0; i < m->collectors->len; i++)
    {
      Collector *c = g_ptr_array_index (m->collectors, i);
      if (strcmp (c->name, name) == 0)
        return c;
    }
  return NULL;
}

/* A scheduled run (a [connection] fired, or `pillarbox connect-now`). */
static void
scheduled_done (const CollectorCounts *counts, const GError *error, gpointer user_data)
{
  pb_collector_run_complete (user_data, error);
}

static void
collector_scheduled (PbCollectorRun *run, gpointer user_data)
{
  collector_run_start (user_data, scheduled_done, run);
}

/* `pillarbox collect NAME`: answers once the run is over. */
static void
command_done (const CollectorCounts *counts, const GError *error, gpointer user_data)
{
  PbControlRequest *req = user_data;

  if (error != NULL)
    pb_control_request_fail (req, "%s", error->message);
  else
    {
      g_autofree char *text = g_strdup_printf ("%u new, %u skipped, %u deleted", counts->new_messages,
                                               counts->skipped, counts->deleted);
      GVariantDict d;

      g_variant_dict_init (&d, NULL);
      g_variant_dict_insert (&d, "new", "u", counts->new_messages);
      g_variant_dict_insert (&d, "skipped", "u", counts->skipped);
      g_variant_dict_insert (&d, "deleted", "u", counts->deleted);
      pb_control_request_reply (req, g_variant_dict_end (&d), text);
    }
  pb_control_request_unref (req);
}

static void
collect_command (PbControlRequest *req, gpointer user_data)
{
  CollectorModule *m = user_data;
  const char *const *args = pb_control_request_get_args (req);
  Collector *c;

  if (args[0] == NULL || args[1] != NULL)
    {
      pb_control_request_fail (req, "usage: collect NAME");
      return;
    }
  c = collector_find (m, args[0]);
  if (c == NULL)
    {
      pb_control_request_fail (req, "no collector named %s", args[0]);
      return;
    }
  collector_run_start (c, command_done, pb_control_request_ref (req));
}

static gboolean
collector_init (PbModule *module, const void *config, GError **error)
{
  CollectorModule *m = g_new0 (CollectorModule, 1);
  const char *const *names = NULL;
  const void *const *sections = pb_module_get_sections (module, "collector", &names);
  PbControlCommandSpec command = {
    .struct_size = sizeof command,
    .name = "collect",
    .summary = "Fetch a remote POP3 mailbox now and report what was collected",
    .usage = "collect NAME",
    .func = collect_command,
    .user_data = m,
  };

  m->module = module;
  m->collectors = g_ptr_array_new_with_free_func (collector_free);
  pb_module_set_data (module, m, collector_module_free);
  for (guint i = 0; sections[i] != NULL; i++)
    {
      const CollectorConfig *cfg = sections[i];
      Collector *c = g_new0 (Collector, 1);
      PbCollectorSpec spec = { sizeof spec, names[i], collector_scheduled, c };

      c->module = module;
      c->name = g_strdup (names[i]);
      c->config = cfg;
      c->warned = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
      c->origin_prefix = g_strdup_printf ("pop3-collector/%s/", names[i]);
      g_ptr_array_add (m->collectors, c);
      if (!collector_split_endpoint (cfg->server[0], &c->host, &c->port)
          || !collector_parse_leave (cfg->leave_on_server, &c->leave_days, error))
        return FALSE;
      c->password = collector_read_password (c->name, cfg->password_file, error);
      if (c->password == NULL || !pb_module_add_collector (module, &spec, error))
        return FALSE;
    }
  return pb_module_add_command (module, &command, error);
}

static void
collector_fini (PbModule *module)
{
  CollectorModule *m = pb_module_get_data (module);

  for (guint i = 0; m != NULL && i < m->collectors->len; i++)
    collector_run_cancel (g_ptr_array_index (m->collectors, i));
}

PB_MODULE_DEFINE (
  .name = "pop3-collector",
  .version = PACKAGE_VERSION,
  .summary = "Collects mail from remote POP3 mailboxes into local ones, each message exactly once",
  .init = collector_init,
  .fini = collector_fini,
  .sections = collector_sections);
