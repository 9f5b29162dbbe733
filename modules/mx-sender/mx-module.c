/* SPDX-License-Identifier: MIT */
/* mx-sender module: descriptor, settings, per-domain overrides and registration. */
#include "config.h"
#include "mx-private.h"

#include <string.h>

static const char *const mx_tls_words[] = { "none", "opportunistic", "required", NULL };
static const char *const mx_prefer_words[] = { "ipv4", "ipv6", NULL };

static const PbSetting mx_settings[] = {
  PB_SETTING_STRING (MxConfig, helo_name, "helo-name", "",
                     "The name sent with EHLO/HELO; empty for core.hostname. Receiving servers check that it "
                     "resolves, and often that it matches the sending address's reverse DNS."),
  PB_SETTING_INT (MxConfig, port, "port", "25", 1, 65535,
                  "The port of MX hosts. Anything but 25 is for tests."),
  PB_SETTING_ENUM (MxConfig, tls, "tls", "opportunistic", mx_tls_words,
                   "STARTTLS to MX hosts: opportunistic uses it when offered and falls back to plain text "
                   "when it is not offered or the handshake fails (RFC 7435); required makes the mail wait "
                   "instead; none never uses it."),
  PB_SETTING_BOOL (MxConfig, verify_certificate, "verify-certificate", "false",
                   "With tls = required, also require a certificate the system trusts for the MX host's name. "
                   "Opportunistic TLS never verifies."),
  PB_SETTING_ENUM (MxConfig, address_preference, "address-preference", "ipv4", mx_prefer_words,
                   "Which addresses of an MX host are tried first: its IPv4 (A) or IPv6 (AAAA) ones."),
  PB_SETTING_INT (MxConfig, max_mx_hosts, "max-mx-hosts", "5", 1, 100,
                  "MX hosts of one domain tried per delivery, in preference order."),
  PB_SETTING_INT (MxConfig, max_addresses, "max-addresses", "10", 1, 1000,
                  "Addresses (of all MX hosts together) tried per delivery."),
  PB_SETTING_INT (MxConfig, max_connections, "max-connections", "10", 1, 1000,
                  "Simultaneous connections to one MX host address; deliveries beyond wait for one."),
  PB_SETTING_INT (MxConfig, max_messages_per_session, "max-messages-per-session", "100", 0, 1000000,
                  "Messages sent over one connection before QUIT; 0: no limit."),
  PB_SETTING_INT (MxConfig, max_recipients_per_message, "max-recipients-per-message", "100", 0, 100000,
                  "Recipients per transaction (RFC 5321 §4.5.3.1.8 guarantees 100); a message with more is "
                  "sent as several."),
  PB_SETTING_DURATION (MxConfig, reuse_time, "reuse-time", "5s", 0, 3600000,
                       "How long an idle connection to an MX host is kept for the next message to the same "
                       "host; 0 says QUIT after every delivery."),
  SMTPC_TIMEOUT_SETTINGS (MxConfig),
  PB_SETTINGS_END
};

static const PbSetting mx_override_settings[] = {
  PB_SETTING_ENDPOINTS (MxOverrideConfig, hosts, "hosts", NULL,
                        "Where mail for the domain goes instead of its MX hosts: HOST:PORT items tried in "
                        "order (VPOP3's MX DNS overrides). Required."),
  PB_SETTING_ENUM (MxOverrideConfig, tls, "tls", "opportunistic", mx_tls_words,
                   "STARTTLS for these hosts, as the module's tls."),
  PB_SETTING_BOOL (MxOverrideConfig, verify_certificate, "verify-certificate", "false",
                   "With tls = required, require a certificate the system trusts for the host's name."),
  PB_SETTINGS_END
};

static gboolean
mx_override_check (const void *config, GError **error)
{
  const MxOverrideConfig *c = config;

  for (guint i = 0; c->hosts[i] != NULL; i++)
    {
      g_autofree char *host = NULL;
      guint16 port;
      if (!smtpc_split_endpoint (c->hosts[i], &host, &port))
        {
          g_set_error (error, MX_ERROR, 0, "hosts: '%s' does not name a host", c->hosts[i]);
          return FALSE;
        }
    }
  if (c->hosts[0] == NULL)
    {
      g_set_error_literal (error, MX_ERROR, 0, "hosts: give at least one HOST:PORT");
      return FALSE;
    }
  return TRUE;
}

static const PbSectionInfo mx_override_section = {
  .struct_size = sizeof (PbSectionInfo),
  .kind = "mx-override",
  .summary = "Mail for one domain goes to the given hosts instead of the domain's MX hosts",
  .settings = mx_override_settings,
  .config_size = sizeof (MxOverrideConfig),
  .check = mx_override_check,
};

static const PbSectionInfo *const mx_sections[] = { &mx_override_section, NULL };

static void
mx_free (gpointer data)
{
  Mx *mx = data;

  mx_deliveries_cancel (mx);
  g_hash_table_unref (mx->overrides);
  g_hash_table_unref (mx->deliveries);
  g_rand_free (mx->rand);
  g_free (mx);
}

static gboolean
mx_init (PbModule *module, const void *config, GError **error)
{
  Mx *mx = g_new0 (Mx, 1);
  const char *const *names = NULL;
  const void *const *overrides;

  mx->module = module;
  mx->config = config;
  mx->overrides = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  mx->deliveries = g_hash_table_new (NULL, NULL);
  mx->rand = g_rand_new ();
  pb_module_set_data (module, mx, mx_free);

  overrides = pb_module_get_sections (module, "mx-override", &names);
  for (guint i = 0; overrides[i] != NULL; i++)
    {
      char *domain = g_ascii_strdown (names[i], -1);
      if (g_hash_table_contains (mx->overrides, domain))
        {
          g_set_error (error, MX_ERROR, 0, "[mx-override %s] is given twice", names[i]);
          g_free (domain);
          return FALSE;
        }
      g_hash_table_insert (mx->overrides, domain, (gpointer) overrides[i]);
    }

  {
    PbTransportSpec spec = {
      .struct_size = sizeof spec,
      .name = "mx-sender",
      .deliver = mx_deliver,
      .user_data = mx,
    };
    if (!pb_module_add_transport (module, &spec, error))
      return FALSE;
  }
  mx->client = smtpc_client_new (module, G_LOG_DOMAIN, NULL);
  return TRUE;
}

static void
mx_fini (PbModule *module)
{
  Mx *mx = pb_module_get_data (module);

  if (mx != NULL)
    mx_deliveries_cancel (mx);
}

PB_MODULE_DEFINE (
  .name = "mx-sender",
  .version = PACKAGE_VERSION,
  .summary = "Sends outgoing mail directly to the recipients' MX hosts (RFC 5321 §5), with opportunistic TLS",
  .init = mx_init,
  .fini = mx_fini,
  .settings = mx_settings,
  .config_size = sizeof (MxConfig),
  .sections = mx_sections);
