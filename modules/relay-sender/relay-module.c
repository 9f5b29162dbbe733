/* SPDX-License-Identifier: MIT */
/* relay-sender module: descriptor, settings, relay servers, credentials, routes and registration. */
#include "config.h"
#include "relay-private.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <glib/gstdio.h>

static const char *const relay_security_words[] = { "none", "starttls", "starttls-if-offered", "tls", NULL };
static const char *const relay_auth_words[] = { "auto", "none", "plain", "login", NULL };
static const char *const relay_action_words[] = { "relay", "pass", NULL };

static const PbSetting relay_settings[] = {
  PB_SETTING_STRING (RelayConfig, helo_name, "helo-name", "",
                     "The name sent with EHLO/HELO; empty for core.hostname (VPOP3's \"HELO name\"). "
                     "ISPs often refuse names that do not resolve."),
  PB_SETTING_PATH (RelayConfig, credentials_file, "credentials-file", "",
                   "The file with the relay servers' user names and passwords, one \"SERVER USER PASSWORD\" "
                   "line each (SERVER \"*\" for any server without a line of its own). It must not be "
                   "readable or writable by group or others: the module refuses to start otherwise."),
  PB_SETTING_BOOL (RelayConfig, accept_unmatched, "accept-unmatched", "true",
                   "Carry mail that no [relay-route] matches. false: only mail a route with action = relay "
                   "matches goes through the relay; the rest is left to the next connection's sender."),
  PB_SETTING_DURATION (RelayConfig, reuse_time, "reuse-time", "5s", 0, 3600000,
                       "How long an idle connection to a relay server is kept open for the next message; "
                       "0 says QUIT after every delivery."),
  SMTPC_TIMEOUT_SETTINGS (RelayConfig),
  PB_SETTINGS_END
};

static const PbSetting relay_server_settings[] = {
  PB_SETTING_ENDPOINTS (RelayServerConfig, address, "address", NULL,
                        "The relay server as HOST:PORT (required): 587 for submission with STARTTLS, "
                        "465 for implicit TLS, 25 for plain SMTP."),
  PB_SETTING_ENUM (RelayServerConfig, security, "security", "starttls", relay_security_words,
                   "none: plain text; starttls: STARTTLS is required (the mail waits if the server does not "
                   "offer it or the handshake fails); starttls-if-offered: STARTTLS when offered, plain text "
                   "otherwise; tls: implicit TLS from the first octet (port 465)."),
  PB_SETTING_BOOL (RelayServerConfig, verify_certificate, "verify-certificate", "true",
                   "With security starttls or tls, require a certificate the system trusts for the host "
                   "name in address. starttls-if-offered never verifies."),
  PB_SETTING_ENUM (RelayServerConfig, auth, "auth", "auto", relay_auth_words,
                   "SMTP authentication (RFC 4954): auto uses the credentials-file entry for this server, "
                   "if there is one, with PLAIN when offered, else LOGIN; plain or login force the "
                   "mechanism (an entry is then required); none never authenticates."),
  PB_SETTING_BOOL (RelayServerConfig, auth_without_tls, "auth-without-tls", "false",
                   "Send the password over a connection without TLS. Off: a session that did not reach "
                   "TLS never sends credentials (the mail waits)."),
  PB_SETTING_INT (RelayServerConfig, max_messages_per_session, "max-messages-per-session", "0", 0, 1000000,
                  "Messages sent over one connection before QUIT (VPOP3's \"Max Messages Per Session\"); "
                  "0: no limit. Each part of a split message counts as a message."),
  PB_SETTING_INT (RelayServerConfig, max_recipients_per_message, "max-recipients-per-message", "0", 0, 100000,
                  "Recipients per message; a message with more is sent as several, each with at most "
                  "this many. 0: no limit."),
  PB_SETTING_INT (RelayServerConfig, max_recipients_per_session, "max-recipients-per-session", "0", 0, 10000000,
                  "Recipients over one connection before QUIT; 0: no limit."),
  PB_SETTING_STRING_LIST (RelayServerConfig, limits, "limits", "",
                          "Periodic caps, stated directly: \"50 messages per 60m\", \"200 recipients per day\" "
                          "(comma-separated). In any window of that length the server is given at most that "
                          "many; mail beyond waits (a 4xx result that says when the next one may go)."),
  PB_SETTING_INT (RelayServerConfig, max_connections, "max-connections", "4", 1, 1000,
                  "Simultaneous connections to this server; deliveries beyond wait for one to come free."),
  PB_SETTINGS_END
};

static const PbSetting relay_route_settings[] = {
  PB_SETTING_STRING_LIST (RelayRouteConfig, senders, "senders", "",
                          "Envelope senders the route applies to: \"*@example.org\", \"example.org\", "
                          "\"*.example.org\", \"bob@*\", \"<>\" (the null sender), \"!PATTERN\" to exclude; "
                          "empty: any sender."),
  PB_SETTING_STRING_LIST (RelayRouteConfig, recipients, "recipients", "",
                          "Recipients the route applies to, with the same patterns; empty: any recipient."),
  PB_SETTING_ENUM (RelayRouteConfig, action, "action", "relay", relay_action_words,
                   "relay: the relay-sender carries the mail, through servers; pass: it does not, and the "
                   "queue manager offers the mail to the next connection's sender (mx-sender)."),
  PB_SETTING_STRING_LIST (RelayRouteConfig, servers, "servers", "",
                          "The [relay-server] names to use, in order; empty: every relay server in file order."),
  PB_SETTINGS_END
};

static gboolean
relay_server_check (const void *config, GError **error)
{
  const RelayServerConfig *c = config;
  g_autofree char *host = NULL;
  guint16 port;

  if (c->address[0] == NULL || c->address[1] != NULL)
    {
      g_set_error (error, RELAY_ERROR, 0, "address: give exactly one HOST:PORT (list servers as separate sections)");
      return FALSE;
    }
  if (!smtpc_split_endpoint (c->address[0], &host, &port))
    {
      g_set_error (error, RELAY_ERROR, 0, "address: '%s' does not name a host", c->address[0]);
      return FALSE;
    }
  for (guint i = 0; c->limits[i] != NULL; i++)
    {
      RelayLimit l;
      if (!relay_limit_parse (c->limits[i], &l, error))
        {
          g_prefix_error (error, "limits: ");
          return FALSE;
        }
    }
  return TRUE;
}

static gboolean
relay_route_check (const void *config, GError **error)
{
  const RelayRouteConfig *c = config;

  if (c->action == RELAY_ACTION_PASS && c->servers[0] != NULL)
    {
      g_set_error (error, RELAY_ERROR, 0, "servers: a route with action = pass sends nothing through a server");
      return FALSE;
    }
  return TRUE;
}

static const PbSectionInfo relay_server_section = {
  .struct_size = sizeof (PbSectionInfo),
  .kind = "relay-server",
  .summary = "One relay server (smarthost) of the relay-sender, tried in file order",
  .settings = relay_server_settings,
  .config_size = sizeof (RelayServerConfig),
  .check = relay_server_check,
};

static const PbSectionInfo relay_route_section = {
  .struct_size = sizeof (PbSectionInfo),
  .kind = "relay-route",
  .summary = "A routing rule of the relay-sender: which mail it carries, through which servers",
  .settings = relay_route_settings,
  .config_size = sizeof (RelayRouteConfig),
  .check = relay_route_check,
};

static const PbSectionInfo *const relay_sections[] = { &relay_server_section, &relay_route_section, NULL };

/* ---- credentials ----------------------------------------------------------- */

typedef struct {
  char *user;
  char *password;
} RelayCredential;

static void
credential_free (gpointer p)
{
  RelayCredential *c = p;
  g_free (c->user);
  if (c->password != NULL)
    memset (c->password, 0, strlen (c->password));
  g_free (c->password);
  g_free (c);
}

/* Reads "SERVER USER PASSWORD" lines (the password is the rest of the
 * line, spaces included; '#' starts a comment line). Refuses a file that
 * group or others could read or change. */
static GHashTable *
relay_read_credentials (const char *path, GError **error)
{
  GStatBuf st;
  g_autofree char *text = NULL;
  gsize len = 0;
  GHashTable *creds;
  char **lines;

  if (g_stat (path, &st) != 0)
    {
      g_set_error (error, RELAY_ERROR, 0, "credentials-file %s: %s", path, g_strerror (errno));
      return NULL;
    }
  if (!S_ISREG (st.st_mode))
    {
      g_set_error (error, RELAY_ERROR, 0, "credentials-file %s is not a regular file", path);
      return NULL;
    }
  if ((st.st_mode & 077) != 0)
    {
      g_set_error (error, RELAY_ERROR, 0,
                   "credentials-file %s is readable or writable by group or others (mode %04o): "
                   "refusing to use it; fix with chmod 600",
                   path, (unsigned) (st.st_mode & 07777));
      return NULL;
    }
  if (!g_file_get_contents (path, &text, &len, error))
    {
      g_prefix_error (error, "credentials-file: ");
      return NULL;
    }
  creds = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, credential_free);
  lines = g_strsplit (text, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      char *l = g_strstrip (lines[i]);
      char *server, *user, *pass;
      RelayCredential *c;

      if (*l == '\0' || *l == '#')
        continue;
      server = l;
      user = strpbrk (server, " \t");
      if (user != NULL)
        {
          *user++ = '\0';
          user += strspn (user, " \t");
        }
      pass = user != NULL ? strpbrk (user, " \t") : NULL;
      if (pass != NULL)
        {
          *pass++ = '\0';
          pass += strspn (pass, " \t");
        }
      if (user == NULL || *user == '\0' || pass == NULL || *pass == '\0')
        {
          /* Never quote the line: it may hold a password. */
          g_set_error (error, RELAY_ERROR, 0, "credentials-file %s, line %u: expected \"SERVER USER PASSWORD\"", path,
                       i + 1);
          g_hash_table_unref (creds);
          memset (text, 0, len);
          for (guint k = 0; lines[k] != NULL; k++)
            memset (lines[k], 0, strlen (lines[k]));
          g_strfreev (lines);
          return NULL;
        }
      c = g_new0 (RelayCredential, 1);
      c->user = g_strdup (user);
      c->password = g_strdup (pass);
      g_hash_table_replace (creds, g_strdup (server), c);
    }
  memset (text, 0, len);
  for (guint k = 0; lines[k] != NULL; k++)
    memset (lines[k], 0, strlen (lines[k]));
  g_strfreev (lines);
  return creds;
}

/* ---- the instance ---------------------------------------------------------- */

static gint64
relay_real_now_ms (void)
{
  return g_get_real_time () / 1000;
}

static void
relay_server_free (gpointer p)
{
  RelayServer *s = p;
  g_free (s->name);
  g_free (s->host);
  g_free (s->user);
  if (s->password != NULL)
    memset (s->password, 0, strlen (s->password));
  g_free (s->password);
  relay_cap_state_free (s->caps);
  g_free (s);
}

static void
relay_route_free (gpointer p)
{
  RelayRoute *r = p;
  g_free (r->name);
  g_ptr_array_unref (r->servers);
  g_free (r);
}

static void
relay_free (gpointer data)
{
  Relay *relay = data;

  relay_deliveries_cancel (relay);
  g_clear_pointer (&relay->client, smtpc_client_free);
  relay_cap_log_clear (&relay->cap_log);
  g_ptr_array_unref (relay->routes);
  g_hash_table_unref (relay->cap_states);
  g_ptr_array_unref (relay->servers);
  if (relay->deliveries != NULL)
    g_hash_table_unref (relay->deliveries);
  g_free (relay);
}

static RelayServer *
relay_find_server (Relay *relay, const char *name)
{
  for (guint i = 0; i < relay->servers->len; i++)
    {
      RelayServer *s = g_ptr_array_index (relay->servers, i);
      if (strcmp (s->name, name) == 0)
        return s;
    }
  return NULL;
}

static gboolean
relay_load_servers (Relay *relay, GHashTable *creds, GError **error)
{
  const char *const *names = NULL;
  const void *const *configs = pb_module_get_sections (relay->module, "relay-server", &names);

  for (guint i = 0; configs[i] != NULL; i++)
    {
      const RelayServerConfig *c = configs[i];
      RelayServer *s = g_new0 (RelayServer, 1);
      RelayCredential *cred = NULL;

      s->name = g_strdup (names[i]);
      s->config = c;
      g_ptr_array_add (relay->servers, s);
      if (!smtpc_split_endpoint (c->address[0], &s->host, &s->port))
        {
          g_set_error (error, RELAY_ERROR, 0, "[relay-server %s] address: '%s' does not name a host", s->name,
                       c->address[0]);
          return FALSE;
        }
      if (c->limits[0] != NULL)
        {
          s->caps = relay_cap_state_new (s->name);
          for (guint k = 0; c->limits[k] != NULL; k++)
            {
              RelayLimit l;
              if (!relay_limit_parse (c->limits[k], &l, error))
                {
                  g_prefix_error (error, "[relay-server %s] limits: ", s->name);
                  return FALSE;
                }
              g_array_append_val (s->caps->limits, l);
            }
          g_hash_table_insert (relay->cap_states, s->name, s->caps);
        }
      if (creds != NULL && c->auth != RELAY_AUTH_NONE)
        {
          cred = g_hash_table_lookup (creds, s->name);
          if (cred == NULL)
            cred = g_hash_table_lookup (creds, "*");
        }
      if (cred != NULL)
        {
          s->user = g_strdup (cred->user);
          s->password = g_strdup (cred->password);
        }
      else if (c->auth == RELAY_AUTH_PLAIN || c->auth == RELAY_AUTH_LOGIN)
        {
          g_set_error (error, RELAY_ERROR, 0, "[relay-server %s] auth = %s needs an entry for %s in credentials-file",
                       s->name, relay_auth_words[c->auth], s->name);
          return FALSE;
        }
    }
  if (relay->servers->len == 0)
    {
      g_set_error_literal (error, RELAY_ERROR, 0,
                           "no relay server: add a [relay-server NAME] section with address = HOST:PORT");
      return FALSE;
    }
  return TRUE;
}

static gboolean
relay_load_routes (Relay *relay, GError **error)
{
  const char *const *names = NULL;
  const void *const *configs = pb_module_get_sections (relay->module, "relay-route", &names);

  for (guint i = 0; configs[i] != NULL; i++)
    {
      const RelayRouteConfig *c = configs[i];
      RelayRoute *r = g_new0 (RelayRoute, 1);

      r->name = g_strdup (names[i]);
      r->config = c;
      r->servers = g_ptr_array_new ();
      g_ptr_array_add (relay->routes, r);
      for (guint k = 0; c->servers[k] != NULL; k++)
        {
          RelayServer *s = relay_find_server (relay, c->servers[k]);
          if (s == NULL)
            {
              g_set_error (error, RELAY_ERROR, 0, "[relay-route %s] servers: no [relay-server %s]", r->name,
                           c->servers[k]);
              return FALSE;
            }
          g_ptr_array_add (r->servers, s);
        }
      if (c->servers[0] == NULL)
        for (guint k = 0; k < relay->servers->len; k++)
          g_ptr_array_add (r->servers, g_ptr_array_index (relay->servers, k));
    }
  return TRUE;
}

/* ---- the control command ---------------------------------------------------- */

static void
relay_command (PbControlRequest *request, gpointer user_data)
{
  Relay *relay = user_data;
  const char *const *args = pb_control_request_get_args (request);
  g_autoptr (GString) out = g_string_new (NULL);

  if (args[0] != NULL && strcmp (args[0], "route") == 0 && args[1] != NULL && args[2] != NULL && args[3] == NULL)
    {
      const char *sender = strcmp (args[1], "<>") == 0 ? "" : args[1];
      const RelayRoute *r = relay_route_find (relay->routes, sender, args[2]);
      gboolean carried = r != NULL ? r->config->action == RELAY_ACTION_RELAY : relay->config->accept_unmatched;
      GPtrArray *servers = r != NULL ? r->servers : relay->servers;
      g_autoptr (GString) list = g_string_new (NULL);

      for (guint i = 0; i < servers->len; i++)
        g_string_append_printf (list, "%s%s", i > 0 ? ", " : "", ((RelayServer *) g_ptr_array_index (servers, i))->name);
      g_string_printf (out, "%s%s: %s", r != NULL ? "route " : "no route matches",
                       r != NULL ? r->name : "", carried ? "relay-sender carries it" : "passed to the next sender");
      if (carried)
        g_string_append_printf (out, " through %s", list->str);
      pb_control_request_reply (request,
                                g_variant_new_parsed ("{'route': <%s>, 'carried': <%b>, 'servers': <%s>}",
                                                      r != NULL ? r->name : "", carried, carried ? list->str : ""),
                                out->str);
      return;
    }
  if (args[0] != NULL && strcmp (args[0], "limits") == 0 && args[1] == NULL)
    {
      gint64 now = relay->now_ms ();
      GVariantBuilder b;

      g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
      relay_cap_log_sync (&relay->cap_log, now);
      for (guint i = 0; i < relay->servers->len; i++)
        {
          RelayServer *s = g_ptr_array_index (relay->servers, i);
          if (s->caps == NULL)
            {
              g_string_append_printf (out, "%s: no limits\n", s->name);
              continue;
            }
          for (guint k = 0; k < s->caps->limits->len; k++)
            {
              const RelayLimit *l = &g_array_index (s->caps->limits, RelayLimit, k);
              g_autofree char *desc = relay_limit_describe (l);
              guint64 m, r, used;
              relay_caps_count (s->caps, l->period_ms, now, &m, &r);
              used = l->kind == RELAY_COUNT_MESSAGES ? m : r;
              g_string_append_printf (out, "%s: %" G_GUINT64_FORMAT " used of %s\n", s->name, used, desc);
              g_variant_builder_add_parsed (&b, "{'server': <%s>, 'limit': <%s>, 'used': <%t>}", s->name, desc,
                                            used);
            }
          {
            gint64 next = relay_caps_next_allowed (s->caps, now);
            if (next > now)
              g_string_append_printf (out, "%s: full; next message allowed in %" G_GINT64_FORMAT " s\n", s->name,
                                      (next - now + 999) / 1000);
          }
        }
      {
        gint64 ready = relay_ready (NULL, relay);
        if (ready > 0)
          g_string_append_printf (out, "every relay server is full: the next message may go in %" G_GINT64_FORMAT " s\n",
                                  (ready / 1000 - now + 999) / 1000);
      }
      if (out->len > 0)
        g_string_truncate (out, out->len - 1);
      pb_control_request_reply (request, g_variant_builder_end (&b), out->str);
      return;
    }
  pb_control_request_fail (request, "usage: relay-sender route SENDER RECIPIENT | relay-sender limits");
}

/* ---- life ------------------------------------------------------------------ */

static gboolean
relay_init (PbModule *module, const void *config, GError **error)
{
  const RelayConfig *c = config;
  Relay *relay = g_new0 (Relay, 1);
  g_autoptr (GHashTable) creds = NULL;
  SmtpcCapHooks hooks = relay_cap_hooks;

  relay->module = module;
  relay->config = c;
  relay->now_ms = relay_real_now_ms;
  relay->servers = g_ptr_array_new_with_free_func (relay_server_free);
  relay->routes = g_ptr_array_new_with_free_func (relay_route_free);
  relay->cap_states = g_hash_table_new (g_str_hash, g_str_equal);
  relay->deliveries = g_hash_table_new (NULL, NULL);
  pb_module_set_data (module, relay, relay_free);

  if (*c->credentials_file != '\0')
    {
      creds = relay_read_credentials (c->credentials_file, error);
      if (creds == NULL)
        return FALSE;
    }
  if (!relay_load_servers (relay, creds, error) || !relay_load_routes (relay, error))
    return FALSE;

  {
    PbTransportSpec spec = {
      .struct_size = sizeof spec,
      .name = "relay-sender",
      .deliver = relay_deliver,
      .user_data = relay,
      .accepts = relay_accepts,
      .ready = relay_ready,
    };
    if (!pb_module_add_transport (module, &spec, error))
      return FALSE;
  }
  {
    PbControlCommandSpec cmd = {
      .struct_size = sizeof cmd,
      .name = "relay-sender",
      .summary = "Show which route and relay servers carry a message, and the periodic caps' use",
      .usage = "relay-sender route SENDER RECIPIENT | relay-sender limits",
      .func = relay_command,
      .user_data = relay,
    };
    if (!pb_module_add_command (module, &cmd, error))
      return FALSE;
  }
  hooks.data = relay;
  relay->client = smtpc_client_new (module, G_LOG_DOMAIN, &hooks);
  return TRUE;
}

static gboolean
relay_start (PbModule *module, GError **error)
{
  Relay *relay = pb_module_get_data (module);
  g_autofree char *dir = NULL;
  g_autofree char *path = NULL;

  if (g_hash_table_size (relay->cap_states) == 0)
    return TRUE;
  /* The caps log keeps the windows across restarts and reloads. */
  dir = g_build_filename (pb_module_get_state_dir (module), "relay-sender", NULL);
  if (g_mkdir_with_parents (dir, 0700) != 0)
    {
      g_set_error (error, RELAY_ERROR, 0, "cannot create %s: %s", dir, g_strerror (errno));
      return FALSE;
    }
  path = g_build_filename (dir, "caps", NULL);
  relay_cap_log_init (&relay->cap_log, path, relay->cap_states);
  if (!relay_cap_log_load (&relay->cap_log, relay->now_ms (), TRUE, error))
    return FALSE;
  relay->cap_log_ready = TRUE;
  return TRUE;
}

static void
relay_fini (PbModule *module)
{
  Relay *relay = pb_module_get_data (module);

  if (relay == NULL)
    return;
  /* Deliveries under way end now; their recipients without a result are retried. */
  relay_deliveries_cancel (relay);
  g_clear_pointer (&relay->client, smtpc_client_free);
}

PB_MODULE_DEFINE (
  .name = "relay-sender",
  .version = PACKAGE_VERSION,
  .summary = "Sends outgoing mail through relay servers (smarthosts) with TLS, AUTH and periodic caps",
  .init = relay_init,
  .fini = relay_fini,
  .start = relay_start,
  .settings = relay_settings,
  .config_size = sizeof (RelayConfig),
  .sections = relay_sections);
