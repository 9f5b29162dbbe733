/* SPDX-License-Identifier: MIT */
/* pop3-server: the module descriptor, its settings, the mailbox locks and the listeners. */
#include "config.h"
#include "pop3-private.h"

#include <string.h>

G_DEFINE_QUARK (pillarbox-pop3-error-quark, pop3_error)

static const PbSetting pop3_settings[] = {
  PB_SETTING_ENDPOINTS (Pop3Config, pop3_listen, "pop3-listen", "127.0.0.1:2110",
                        "Where POP3 listens (plain text, STLS offered). Empty for none. "
                        "Production: *:110."),
  PB_SETTING_ENDPOINTS (Pop3Config, pop3s_listen, "pop3s-listen", "127.0.0.1:2995",
                        "Where POP3 over implicit TLS listens. Empty for none. Production: *:995."),
  PB_SETTING_BOOL (Pop3Config, auth_plaintext, "auth-plaintext", "false",
                   "Allow USER/PASS and AUTH PLAIN on connections without TLS. When false, they are "
                   "refused with -ERR [AUTH] until the client has used STLS (RFC 2595) or connected "
                   "to pop3s-listen."),
  PB_SETTING_BOOL (Pop3Config, apop, "apop", "false",
                   "APOP (RFC 1939 section 7) needs every user's password in a reversible form; "
                   "Pillarbox stores only yescrypt hashes, so true is refused."),
  PB_SETTING_DURATION (Pop3Config, idle_timeout, "idle-timeout", "10m", 1000, 86400000,
                       "A client that sends nothing for this long is disconnected. RFC 1939 section 3 "
                       "asks for at least 10 minutes."),
  PB_SETTING_INT (Pop3Config, max_line_length, "max-line-length", "1024", 256, 65536,
                  "The longest command line accepted, in octets including CRLF (RFC 2449 section 4: "
                  "at least 255)."),
  PB_SETTING_STRING (Pop3Config, expire, "expire", "NEVER",
                     "Advertised in CAPA EXPIRE (RFC 2449 section 6.7): NEVER, or the number of days "
                     "after which the server may delete retrieved messages. Pillarbox itself never "
                     "deletes them; this tells clients the site's policy."),
  PB_SETTING_STRING (Pop3Config, implementation, "implementation", "Pillarbox",
                     "Advertised in CAPA IMPLEMENTATION (RFC 2449 section 6.9); empty to advertise nothing."),
  PB_SETTINGS_END
};

static gboolean
pop3_config_check (const void *config, GError **error)
{
  const Pop3Config *c = config;

  if (c->apop)
    {
      g_set_error_literal (error, POP3_ERROR, 0,
                           "apop = true is not supported: APOP needs each user's password in a reversible "
                           "form, and Pillarbox stores only yescrypt hashes (see docs/pop3-server.md)");
      return FALSE;
    }
  if (!pop3_expire_is_valid (c->expire))
    {
      g_set_error (error, POP3_ERROR, 0, "expire = %s: must be NEVER or a number of days", c->expire);
      return FALSE;
    }
  for (const char *p = c->implementation; *p != '\0'; p++)
    if ((guchar) *p < 0x20 || *p == 0x7f)
      {
        g_set_error_literal (error, POP3_ERROR, 0, "implementation: control characters are not allowed");
        return FALSE;
      }
  return TRUE;
}

/* ---- mailbox locks ----------------------------------------------------- */

/*
 * RFC 1939 §4: the server acquires an exclusive-access lock on the maildrop
 * when a session enters TRANSACTION state. The locks are a set of mailbox
 * names held on the loop thread.
 *
 * They are the one piece of state that does not belong to a module
 * instance: during a reload the draining instance keeps serving its
 * sessions while the new one accepts clients, and a client of the new
 * instance must find the mailbox that a client of the old one holds
 * locked. So every instance holds a reference on one shared set, found
 * through the weak pointer below; the set goes when the last instance
 * and the last session that held a lock are gone. Everything else of
 * this module lives in its instance.
 */
struct _Pop3Locks {
  gint ref;
  GHashTable *held;   /* mailbox name -> itself */
};

static Pop3Locks *pop3_shared_locks;  /* weak; loop thread only */

Pop3Locks *
pop3_locks_get (void)
{
  if (pop3_shared_locks != NULL)
    return pop3_locks_ref (pop3_shared_locks);
  pop3_shared_locks = g_new0 (Pop3Locks, 1);
  pop3_shared_locks->ref = 1;
  pop3_shared_locks->held = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  return pop3_shared_locks;
}

Pop3Locks *
pop3_locks_ref (Pop3Locks *locks)
{
  locks->ref++;
  return locks;
}

void
pop3_locks_unref (Pop3Locks *locks)
{
  if (locks == NULL || --locks->ref > 0)
    return;
  if (pop3_shared_locks == locks)
    pop3_shared_locks = NULL;
  g_hash_table_unref (locks->held);
  g_free (locks);
}

gboolean
pop3_locks_acquire (Pop3Locks *locks, const char *mailbox)
{
  if (g_hash_table_contains (locks->held, mailbox))
    return FALSE;
  g_hash_table_add (locks->held, g_strdup (mailbox));
  return TRUE;
}

void
pop3_locks_release (Pop3Locks *locks, const char *mailbox)
{
  g_hash_table_remove (locks->held, mailbox);
}

/* ---- the instance -------------------------------------------------------- */

static void
pop3_server_free (gpointer data)
{
  Pop3Server *srv = data;

  pop3_locks_unref (srv->locks);
  g_free (srv);
}

static gboolean
pop3_init (PbModule *module, const void *config, GError **error)
{
  const Pop3Config *c = config;
  Pop3Server *srv = g_new0 (Pop3Server, 1);
  PbListenerSpec plain = {
    .struct_size = sizeof plain,
    .name = "pop3",
    .service = "pop3",
    .endpoints = (const char *const *) c->pop3_listen,
    .tls = PB_TLS_NONE,
    .accept = pop3_session_accept,
    .format_refusal = pop3_format_refusal,
    .shutdown = pop3_session_shutdown,
    .user_data = srv,
  };
  PbListenerSpec implicit = plain;

  srv->module = module;
  srv->config = c;
  srv->locks = pop3_locks_get ();
  pb_module_set_data (module, srv, pop3_server_free);

  implicit.name = "pop3s";
  implicit.endpoints = (const char *const *) c->pop3s_listen;
  implicit.tls = PB_TLS_IMPLICIT;

  return (c->pop3_listen[0] == NULL || pb_module_add_listener (module, &plain, error))
         && (c->pop3s_listen[0] == NULL || pb_module_add_listener (module, &implicit, error));
}

PB_MODULE_DEFINE (
  .name = "pop3-server",
  .version = PACKAGE_VERSION,
  .summary = "Mailboxes served over POP3 and POP3S (RFC 1939, 2449, 2595, 5034)",
  .init = pop3_init,
  .settings = pop3_settings,
  .config_size = sizeof (Pop3Config),
  .check = pop3_config_check);
