/* SPDX-License-Identifier: MIT */
/* smtp-server module: descriptor, settings table and registration of the smtp, submission and smtps listeners. */
#include "config.h"
#include "smtp-private.h"

#include <string.h>

static const char *const bare_lf_words[] = { "normalise", "reject", NULL };

static const PbSetting smtp_settings[] = {
  PB_SETTING_ENDPOINTS (SmtpConfig, smtp_listen, "smtp-listen", "127.0.0.1:2525",
                        "Where inbound SMTP (port 25 in production) listens; empty disables it. "
                        "STARTTLS is offered; mail for local domains is accepted from anyone."),
  PB_SETTING_ENDPOINTS (SmtpConfig, submission_listen, "submission-listen", "127.0.0.1:2587",
                        "Where message submission (RFC 6409, port 587 in production) listens; empty disables it. "
                        "Authentication is always required there."),
  PB_SETTING_ENDPOINTS (SmtpConfig, smtps_listen, "smtps-listen", "127.0.0.1:2465",
                        "Where submission over implicit TLS (RFC 8314, port 465 in production) listens; "
                        "empty disables it. Authentication is always required there."),
  PB_SETTING_BOOL (SmtpConfig, require_auth, "require-auth", "false",
                   "Require authentication on the inbound listener too (VPOP3's \"Require SMTP "
                   "Authentication\"): MAIL is refused with 530 5.7.0 until the client has "
                   "authenticated, unless it is in trusted-networks."),
  PB_SETTING_ADDRESS_LIST (SmtpConfig, trusted_networks, "trusted-networks", "",
                           "Clients that may relay (send to non-local domains) without authenticating. "
                           "Empty: relaying always needs authentication."),
  PB_SETTING_BOOL (SmtpConfig, auth_plaintext, "auth-plaintext", "false",
                   "Offer AUTH on connections without TLS. Off: AUTH is offered and accepted only "
                   "after STARTTLS or on the implicit-TLS listener (538 5.7.11 otherwise)."),
  PB_SETTING_BOOL (SmtpConfig, own_addresses_only, "own-addresses-only", "false",
                   "Authenticated users may only use sender addresses that are delivered to their own "
                   "mailbox (553 5.7.1 otherwise)."),
  PB_SETTING_SIZE (SmtpConfig, max_message_size, "max-message-size", "25M", 1024, G_GINT64_CONSTANT (1) << 40,
                   "The largest message accepted, advertised as SIZE (RFC 1870): larger ones get "
                   "552 5.2.3, at MAIL when the client announces the size, else while it arrives."),
  PB_SETTING_INT (SmtpConfig, max_recipients, "max-recipients", "100", 1, 100000,
                  "Recipients accepted per message; more get 452 4.5.3 (RFC 5321 §4.5.3.1.10)."),
  PB_SETTING_INT (SmtpConfig, max_line_length, "max-line-length", "1000", 512, 65536,
                  "The longest command line, in octets including CRLF (RFC 5321 §4.5.3.1.4: at least 512). "
                  "Lines of message content are not limited (RFC 5321 §4.5.3.1: no limits where "
                  "possible); max-message-size bounds them."),
  PB_SETTING_DURATION (SmtpConfig, command_timeout, "command-timeout", "5m", 1000, 86400000,
                       "How long to wait for the next command (RFC 5321 §4.5.3.2.7: at least 5 minutes); "
                       "then 421 4.4.2 and close."),
  PB_SETTING_DURATION (SmtpConfig, data_timeout, "data-timeout", "3m", 1000, 86400000,
                       "How long to wait for more message content (RFC 5321 §4.5.3.2.6: 3 minutes); "
                       "then 421 4.4.2 and close."),
  PB_SETTING_INT (SmtpConfig, max_errors, "max-errors", "10", 1, 1000,
                  "Error replies (4xx and 5xx) a session may receive; then 421 4.7.0 and close."),
  PB_SETTING_INT (SmtpConfig, junk_command_limit, "junk-command-limit", "100", 1, 1000000,
                  "NOOP, RSET, HELP, VRFY and EXPN commands a session may send (Postfix's "
                  "smtpd_junk_command_limit); one more gets 421 4.7.0 and a close. A message "
                  "accepted for delivery starts the count again."),
  PB_SETTING_STRING_LIST (SmtpConfig, refuse_helo, "refuse-helo", "",
                          "Refuse HELO/EHLO names containing any of these texts (case-insensitive; VPOP3's "
                          "\"Refuse SMTP connections from\"): 550 5.7.1."),
  PB_SETTING_BOOL (SmtpConfig, check_helo_syntax, "check-helo-syntax", "false",
                   "Refuse HELO/EHLO names that are neither a domain nor an address literal "
                   "(RFC 5321 §4.1.1.1): 501 5.5.2."),
  PB_SETTING_ADDRESS_LIST (SmtpConfig, vrfy_expn_from, "vrfy-expn-from", "",
                           "Clients allowed to use VRFY and EXPN (VPOP3's VRFY/EXPN tab). Others get "
                           "252 2.5.0 for VRFY and 502 5.5.1 for EXPN."),
  PB_SETTING_ENUM (SmtpConfig, bare_lf, "bare-lf", "normalise", bare_lf_words,
                   "What a bare LF or bare CR (RFC 5321 §2.3.8) means: \"normalise\" reads it as a line "
                   "end and stores CRLF; \"reject\" answers 521 5.5.2 and closes. Either way it never "
                   "ends or splits a message: only <CR><LF>.<CR><LF> ends DATA."),
  PB_SETTING_STRING (SmtpConfig, banner, "banner", "ESMTP Pillarbox",
                     "Text after the host name in the 220 greeting."),
  PB_SETTINGS_END
};

static gboolean
smtp_config_check (const void *config, GError **error)
{
  const SmtpConfig *c = config;

  if (strpbrk (c->banner, "\r\n") != NULL)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "banner: must be one line");
      return FALSE;
    }
  if (c->smtp_listen[0] == NULL && c->submission_listen[0] == NULL && c->smtps_listen[0] == NULL)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                           "smtp-listen, submission-listen and smtps-listen are all empty: nothing to serve");
      return FALSE;
    }
  return TRUE;
}

static char *
smtp_format_refusal (const PbVerdict *verdict, gpointer user_data)
{
  const char *enhanced = verdict->enhanced != NULL && verdict->enhanced[0] == '4' ? verdict->enhanced : "4.3.2";
  const char *text = verdict->text != NULL && strpbrk (verdict->text, "\r\n") == NULL ? verdict->text
                                                                                      : "Service not available";

  /* A connect-time refusal is always 421 (RFC 5321 §3.8: the only reply
   * after which the server may close). */
  return g_strdup_printf ("421 %s %s\r\n", enhanced, text);
}

static GPtrArray *
masks_new (char **prefixes)
{
  GPtrArray *masks = g_ptr_array_new_with_free_func (g_object_unref);

  /* The core checked every prefix: this cannot fail. */
  for (guint i = 0; prefixes[i] != NULL; i++)
    {
      GInetAddressMask *m = g_inet_address_mask_new_from_string (prefixes[i], NULL);
      if (m != NULL)
        g_ptr_array_add (masks, m);
    }
  return masks;
}

static void
smtp_free (gpointer data)
{
  Smtp *smtp = data;

  smtp_sources_stop (smtp);
  g_ptr_array_unref (smtp->trusted);
  g_ptr_array_unref (smtp->vrfy_from);
  g_hash_table_unref (smtp->sessions);
  g_free (smtp);
}

static gboolean
smtp_init (PbModule *module, const void *config, GError **error)
{
  const SmtpConfig *c = config;
  Smtp *smtp = g_new0 (Smtp, 1);
  static const char *const names[SMTP_LISTENER_COUNT] = { "smtp", "submission", "smtps" };
  char **endpoints[SMTP_LISTENER_COUNT] = { c->smtp_listen, c->submission_listen, c->smtps_listen };

  smtp->module = module;
  smtp->config = c;
  smtp->trusted = masks_new (c->trusted_networks);
  smtp->vrfy_from = masks_new (c->vrfy_expn_from);
  smtp->sessions = g_hash_table_new (NULL, NULL);
  pb_module_set_data (module, smtp, smtp_free);

  for (guint i = 0; i < SMTP_LISTENER_COUNT; i++)
    {
      PbListenerSpec spec = {
        .struct_size = sizeof spec,
        .name = names[i],
        .service = "smtp",
        .endpoints = (const char *const *) endpoints[i],
        .tls = i == SMTP_LISTENER_SMTPS ? PB_TLS_IMPLICIT : PB_TLS_NONE,
        .accept = smtp_session_accept,
        .format_refusal = smtp_format_refusal,
        .shutdown = smtp_session_shutdown,
        .user_data = &smtp->listeners[i],
      };

      smtp->listeners[i].smtp = smtp;
      smtp->listeners[i].kind = (SmtpListenerKind) i;
      if (endpoints[i][0] != NULL && !pb_module_add_listener (module, &spec, error))
        return FALSE;
    }
  return TRUE;
}

PB_MODULE_DEFINE (
  .name = "smtp-server",
  .version = PACKAGE_VERSION,
  .summary = "SMTP server: inbound mail, submission and implicit-TLS submission (RFC 5321, 6409, 8314)",
  .init = smtp_init,
  .settings = smtp_settings,
  .config_size = sizeof (SmtpConfig),
  .check = smtp_config_check);
