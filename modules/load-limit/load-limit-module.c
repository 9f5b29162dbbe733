/* SPDX-License-Identifier: MIT */
/* load-limit: caps on simultaneous sessions, total, per address, reserved and local, at connect. */

/*
 * VPOP3's Load Limiting tab as a module. The connect hook runs before the
 * protocol module sees a byte; a client that does not fit gets the
 * listener's one-line refusal ("421 4.3.2 Too many connections from your
 * IP address - try later") and is closed. An admitted session is counted
 * in every scope that applies to it (the module's own group, its service's
 * [load-limit-service NAME] and its listener's [load-limit-listener NAME])
 * and counted out by the destroy notify of its session data, which the
 * core runs when the session ends, whatever later hooks decided.
 *
 * Counts live in the instance. After a reload the new instance counts only
 * the sessions it admitted itself; see docs/load-limit.md.
 */
#include "config.h"
#include "ll-private.h"

#include <pillarbox/pillarbox.h>

#include <string.h>

#define LL_ERROR (g_quark_from_static_string ("load-limit-error"))

typedef struct {
  gint64 max_sessions;
  gint64 max_per_address;
  gint64 max_local_sessions;
  gint64 reserved;
  char **reserved_for;
  char **local_networks;
  gint64 ipv6_prefix;
} LlConfig;

/* [load-limit-service NAME] and [load-limit-listener NAME]. */
typedef struct {
  gint64 max_sessions;
  gint64 max_per_address;
  gint64 max_local_sessions;
  gint64 reserved;
  char **reserved_for;
} LlSectionConfig;

#define LL_MAX_COUNT G_GINT64_CONSTANT (1000000)

static const PbSetting ll_settings[] = {
  PB_SETTING_INT (LlConfig, max_sessions, "max-sessions", "500", 0, LL_MAX_COUNT,
                  "Maximum incoming sessions at once, over all listeners (VPOP3's \"Maximum Incoming "
                  "Sessions\"); 0 means no limit. Sessions from local-networks are not incoming."),
  PB_SETTING_INT (LlConfig, max_per_address, "max-per-address", "50", 0, LL_MAX_COUNT,
                  "Maximum incoming sessions at once from one client address (IPv6: one prefix of "
                  "ipv6-prefix bits); 0 means no limit. Refused with \"421 4.3.2 Too many connections "
                  "from your IP address - try later\"."),
  PB_SETTING_INT (LlConfig, max_local_sessions, "max-local-sessions", "0", 0, LL_MAX_COUNT,
                  "Maximum sessions at once from local-networks, counted apart from incoming ones; "
                  "0 means no limit."),
  PB_SETTING_INT (LlConfig, reserved, "reserved", "0", 0, LL_MAX_COUNT,
                  "Of max-sessions, this many are kept for the addresses in reserved-for: other "
                  "addresses may hold at most max-sessions minus reserved (VPOP3's \"Number of "
                  "Sessions to Reserve\")."),
  PB_SETTING_ADDRESS_LIST (LlConfig, reserved_for, "reserved-for", "",
                           "The addresses the reserved sessions are for: addresses, prefixes "
                           "(10.0.0.0/8, 2001:db8::/32) or wildcards (192.168.1.*)."),
  PB_SETTING_ADDRESS_LIST (LlConfig, local_networks, "local-networks", "127.0.0.0/8, ::1",
                           "Client addresses whose sessions are local (VPOP3's \"No Auth\" access "
                           "entries): counted apart, only against max-local-sessions."),
  PB_SETTING_INT (LlConfig, ipv6_prefix, "ipv6-prefix", "64", 1, 128,
                  "IPv6 clients are counted per prefix of this many bits for max-per-address "
                  "(one site usually owns a /64); 128 counts single addresses."),
  PB_SETTINGS_END
};

static const PbSetting ll_section_settings[] = {
  PB_SETTING_INT (LlSectionConfig, max_sessions, "max-sessions", "0", 0, LL_MAX_COUNT,
                  "Maximum incoming sessions at once in this scope; 0 means no limit."),
  PB_SETTING_INT (LlSectionConfig, max_per_address, "max-per-address", "0", 0, LL_MAX_COUNT,
                  "Maximum incoming sessions at once from one address in this scope; 0 means no limit."),
  PB_SETTING_INT (LlSectionConfig, max_local_sessions, "max-local-sessions", "0", 0, LL_MAX_COUNT,
                  "Maximum local sessions at once in this scope; 0 means no limit."),
  PB_SETTING_INT (LlSectionConfig, reserved, "reserved", "0", 0, LL_MAX_COUNT,
                  "Of this scope's max-sessions, this many are kept for reserved-for."),
  PB_SETTING_ADDRESS_LIST (LlSectionConfig, reserved_for, "reserved-for", "",
                           "The addresses this scope's reserved sessions are for."),
  PB_SETTINGS_END
};

static gboolean
ll_check_limits (const char *where, gint64 max_sessions, gint64 reserved, char **reserved_for, GError **error)
{
  if (reserved > 0 && max_sessions == 0)
    {
      g_set_error (error, LL_ERROR, 0, "%sreserved = %" G_GINT64_FORMAT " needs max-sessions", where, reserved);
      return FALSE;
    }
  if (reserved > 0 && reserved >= max_sessions)
    {
      g_set_error (error, LL_ERROR, 0,
                   "%sreserved (%" G_GINT64_FORMAT ") must be smaller than max-sessions (%" G_GINT64_FORMAT ")",
                   where, reserved, max_sessions);
      return FALSE;
    }
  if (reserved > 0 && (reserved_for == NULL || reserved_for[0] == NULL))
    {
      g_set_error (error, LL_ERROR, 0, "%sreserved = %" G_GINT64_FORMAT " but reserved-for is empty", where,
                   reserved);
      return FALSE;
    }
  return TRUE;
}

static gboolean
ll_check (const void *config, GError **error)
{
  const LlConfig *c = config;
  return ll_check_limits ("", c->max_sessions, c->reserved, c->reserved_for, error);
}

static gboolean
ll_section_check (const void *config, GError **error)
{
  const LlSectionConfig *c = config;
  return ll_check_limits ("", c->max_sessions, c->reserved, c->reserved_for, error);
}

static const PbSectionInfo ll_service_section = {
  .struct_size = sizeof (PbSectionInfo),
  .kind = "load-limit-service",
  .summary = "Session limits for the listeners of one service ([load-limit-service smtp], pop3, ...)",
  .settings = ll_section_settings,
  .config_size = sizeof (LlSectionConfig),
  .check = ll_section_check,
};

static const PbSectionInfo ll_listener_section = {
  .struct_size = sizeof (PbSectionInfo),
  .kind = "load-limit-listener",
  .summary = "Session limits for one listener ([load-limit-listener submission], ...)",
  .settings = ll_section_settings,
  .config_size = sizeof (LlSectionConfig),
  .check = ll_section_check,
};

static const PbSectionInfo *const ll_sections[] = { &ll_service_section, &ll_listener_section, NULL };

/* One instance. */
typedef struct {
  PbModule *module;
  const LlConfig *config;
  LlAddrList *local_networks;
  LlScope *global;
  GHashTable *services;     /* service name -> LlScope * */
  GHashTable *listeners;    /* listener name -> LlScope * */
  guint64 admitted;
  guint64 refused;
} LoadLimit;

#define LL_MAX_SCOPES 3

/* What an admitted session took, handed back when it ends. */
typedef struct {
  LoadLimit *ll;
  char *key;
  gboolean local;
  guint n;
  LlScope *scopes[LL_MAX_SCOPES];
  gboolean reserved[LL_MAX_SCOPES];
} LlTicket;

static void
ll_ticket_free (gpointer data)
{
  LlTicket *t = data;

  for (guint i = 0; i < t->n; i++)
    {
      LlClient client = { t->key, t->local, t->reserved[i] };
      ll_scope_remove (t->scopes[i], &client);
    }
  g_free (t->key);
  g_free (t);
}

static const char *
ll_refusal_text (LlDecision d)
{
  /* VPOP3's wording, which its users know (421 4.3.2 ... - try later). */
  if (d == LL_REFUSE_PER_ADDRESS)
    return "Too many connections from your IP address - try later";
  return "Too many connections to this server - try later";
}

static gint64
ll_decision_limit (const LlScope *scope, LlDecision d)
{
  switch (d)
    {
    case LL_REFUSE_PER_ADDRESS: return scope->limits.max_per_address;
    case LL_REFUSE_UNRESERVED: return scope->limits.max_sessions - scope->limits.reserved;
    case LL_REFUSE_TOTAL: return scope->limits.max_sessions;
    case LL_REFUSE_LOCAL: return scope->limits.max_local_sessions;
    case LL_ADMIT: break;
    }
  return 0;
}

static guint
ll_decision_count (const LlScope *scope, LlDecision d, const char *key)
{
  switch (d)
    {
    case LL_REFUSE_PER_ADDRESS: return ll_scope_count_address (scope, key);
    case LL_REFUSE_UNRESERVED: return scope->others;
    case LL_REFUSE_TOTAL: return scope->incoming;
    case LL_REFUSE_LOCAL: return scope->local;
    case LL_ADMIT: break;
    }
  return 0;
}

static void
ll_connect_hook (PbPolicyRequest *req, gpointer user_data)
{
  LoadLimit *ll = user_data;
  PbSession *session = pb_policy_request_get_session (req);
  g_autoptr (GInetAddress) address = ll_address_parse (pb_session_get_peer_ip (session));
  LlScope *scopes[LL_MAX_SCOPES];
  gboolean reserved[LL_MAX_SCOPES];
  guint n = 0;
  g_autofree char *key = NULL;
  gboolean local;
  LlTicket *ticket;
  LlScope *s;

  if (address == NULL)
    {
      pb_policy_continue (req);
      return;
    }
  key = ll_address_key (address, (guint) ll->config->ipv6_prefix);
  local = ll_addr_list_match (ll->local_networks, address);

  scopes[n++] = ll->global;
  if ((s = g_hash_table_lookup (ll->services, pb_session_get_service (session))) != NULL)
    scopes[n++] = s;
  if ((s = g_hash_table_lookup (ll->listeners, pb_session_get_listener (session))) != NULL)
    scopes[n++] = s;

  for (guint i = 0; i < n; i++)
    {
      LlClient client = { key, local, FALSE };
      LlDecision d;

      reserved[i] = client.reserved = !local && ll_addr_list_match (scopes[i]->reserved_for, address);
      d = ll_scope_check (scopes[i], &client);
      if (d == LL_ADMIT)
        continue;
      ll->refused++;
      pb_session_info (session, "load-limit: refusing %s on %s: %s %u of %" G_GINT64_FORMAT " (%s)",
                       pb_session_get_peer_ip (session), pb_session_get_listener (session), scopes[i]->name,
                       ll_decision_count (scopes[i], d, key), ll_decision_limit (scopes[i], d),
                       ll_decision_to_string (d));
      /* Only the per-address limit says something about this client. */
      if (d == LL_REFUSE_PER_ADDRESS)
        pb_session_report_event (session, PB_EVENT_TOO_MANY_CONNECTIONS, "load-limit");
      pb_policy_complete (req, PB_VERDICT_DISCONNECT, 421, "4.3.2", ll_refusal_text (d));
      return;
    }

  ticket = g_new0 (LlTicket, 1);
  ticket->ll = ll;
  ticket->key = g_steal_pointer (&key);
  ticket->local = local;
  ticket->n = n;
  for (guint i = 0; i < n; i++)
    {
      LlClient client = { ticket->key, local, reserved[i] };
      ticket->scopes[i] = scopes[i];
      ticket->reserved[i] = reserved[i];
      ll_scope_add (scopes[i], &client);
    }
  ll->admitted++;
  /* The core runs ll_ticket_free when the session ends, admitted or not by later hooks. */
  pb_session_set_data (session, ll->module, ticket, ll_ticket_free);
  pb_policy_continue (req);
}

/* ---- pillarbox load-limit ---------------------------------------------- */

static gint
ll_compare_counts (gconstpointer a, gconstpointer b, gpointer table)
{
  guint na = GPOINTER_TO_UINT (g_hash_table_lookup (table, *(const char *const *) a));
  guint nb = GPOINTER_TO_UINT (g_hash_table_lookup (table, *(const char *const *) b));

  if (na != nb)
    return na > nb ? -1 : 1;
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* The text shows this many addresses per scope, busiest first; --json all. */
#define LL_SHOW_ADDRESSES 20

static void
ll_scope_describe (const LlScope *scope, GString *text, GVariantBuilder *list)
{
  const LlLimits *l = &scope->limits;
  g_autoptr (GPtrArray) keys = g_ptr_array_new ();
  GVariantBuilder addresses;
  GHashTableIter it;
  gpointer k;

  g_string_append_printf (text, "%s: incoming %u", scope->name, scope->incoming);
  if (l->max_sessions > 0)
    g_string_append_printf (text, " of %" G_GINT64_FORMAT, l->max_sessions);
  if (l->reserved > 0)
    g_string_append_printf (text, " (%" G_GINT64_FORMAT " reserved; %u from other addresses)", l->reserved,
                            scope->others);
  g_string_append_printf (text, ", local %u", scope->local);
  if (l->max_local_sessions > 0)
    g_string_append_printf (text, " of %" G_GINT64_FORMAT, l->max_local_sessions);
  if (l->max_per_address > 0)
    g_string_append_printf (text, ", at most %" G_GINT64_FORMAT " per address", l->max_per_address);
  g_string_append_c (text, '\n');

  g_hash_table_iter_init (&it, scope->per_address);
  while (g_hash_table_iter_next (&it, &k, NULL))
    g_ptr_array_add (keys, k);
  g_ptr_array_sort_with_data (keys, ll_compare_counts, scope->per_address);
  g_variant_builder_init (&addresses, G_VARIANT_TYPE ("a{su}"));
  for (guint i = 0; i < keys->len; i++)
    {
      const char *key = g_ptr_array_index (keys, i);
      guint n = ll_scope_count_address (scope, key);
      g_variant_builder_add (&addresses, "{su}", key, n);
      if (i < LL_SHOW_ADDRESSES)
        g_string_append_printf (text, "  %s: %u\n", key, n);
    }
  if (keys->len > LL_SHOW_ADDRESSES)
    g_string_append_printf (text, "  and %u more addresses\n", keys->len - LL_SHOW_ADDRESSES);
  g_variant_builder_add_parsed (list,
                                "{'scope': <%s>, 'incoming': <%u>, 'others': <%u>, 'local': <%u>, "
                                "'max-sessions': <%x>, 'max-per-address': <%x>, 'max-local-sessions': <%x>, "
                                "'reserved': <%x>, 'addresses': <%v>}",
                                scope->name, scope->incoming, scope->others, scope->local, l->max_sessions,
                                l->max_per_address, l->max_local_sessions, l->reserved,
                                g_variant_builder_end (&addresses));
}

static void
ll_command (PbControlRequest *req, gpointer user_data)
{
  LoadLimit *ll = user_data;
  const char *const *args = pb_control_request_get_args (req);
  g_autoptr (GString) text = g_string_new (NULL);
  GVariantBuilder list;
  GHashTableIter it;
  gpointer v;

  if (args[0] != NULL && strcmp (args[0], "show") != 0)
    {
      pb_control_request_fail (req, "unknown subcommand '%s' (usage: load-limit [show])", args[0]);
      return;
    }
  g_variant_builder_init (&list, G_VARIANT_TYPE ("aa{sv}"));
  ll_scope_describe (ll->global, text, &list);
  g_hash_table_iter_init (&it, ll->services);
  while (g_hash_table_iter_next (&it, NULL, &v))
    ll_scope_describe (v, text, &list);
  g_hash_table_iter_init (&it, ll->listeners);
  while (g_hash_table_iter_next (&it, NULL, &v))
    ll_scope_describe (v, text, &list);
  g_string_append_printf (text, "admitted %" G_GUINT64_FORMAT ", refused %" G_GUINT64_FORMAT
                          " since this configuration was loaded",
                          ll->admitted, ll->refused);
  pb_control_request_reply (req, g_variant_builder_end (&list), text->str);
}

/* ---- life cycle ---------------------------------------------------------- */

static void
ll_free (gpointer data)
{
  LoadLimit *ll = data;

  g_hash_table_unref (ll->services);
  g_hash_table_unref (ll->listeners);
  ll_scope_free (ll->global);
  ll_addr_list_free (ll->local_networks);
  g_free (ll);
}

static gboolean
ll_add_sections (LoadLimit *ll, const char *kind, const char *label, GHashTable *into, GError **error)
{
  const char *const *names = NULL;
  const void *const *sections = pb_module_get_sections (ll->module, kind, &names);

  for (guint i = 0; sections[i] != NULL; i++)
    {
      const LlSectionConfig *c = sections[i];
      LlLimits limits = { c->max_sessions, c->max_per_address, c->max_local_sessions, c->reserved };
      g_autofree char *name = g_strdup_printf ("%s %s", label, names[i]);
      LlAddrList *reserved_for = ll_addr_list_new ((const char *const *) c->reserved_for, error);

      if (reserved_for == NULL)
        return FALSE;
      g_hash_table_replace (into, g_strdup (names[i]), ll_scope_new (name, &limits, reserved_for));
    }
  return TRUE;
}

static gboolean
ll_init (PbModule *module, const void *config, GError **error)
{
  static const char *const after[] = { "ids", NULL };
  const LlConfig *c = config;
  LoadLimit *ll = g_new0 (LoadLimit, 1);
  LlLimits limits = { c->max_sessions, c->max_per_address, c->max_local_sessions, c->reserved };
  LlAddrList *reserved_for;
  PbHookSpec hook = {
    .struct_size = sizeof hook,
    .stage = PB_STAGE_CONNECT,
    /* Cheap, and after ids: a blocked client is not counted. */
    .priority = -50,
    .after = after,
    .func = ll_connect_hook,
    .user_data = ll,
  };
  PbControlCommandSpec command = {
    .struct_size = sizeof command,
    .name = "load-limit",
    .summary = "Show the sessions load-limit counts against its limits",
    .usage = "load-limit [show]",
    .func = ll_command,
    .user_data = ll,
  };

  ll->module = module;
  ll->config = c;
  ll->services = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) ll_scope_free);
  ll->listeners = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) ll_scope_free);
  pb_module_set_data (module, ll, ll_free);

  /* The core checked every prefix; these fail only on a core bug. */
  ll->local_networks = ll_addr_list_new ((const char *const *) c->local_networks, error);
  if (ll->local_networks == NULL)
    return FALSE;
  reserved_for = ll_addr_list_new ((const char *const *) c->reserved_for, error);
  if (reserved_for == NULL)
    return FALSE;
  ll->global = ll_scope_new ("all listeners", &limits, reserved_for);
  if (!ll_add_sections (ll, "load-limit-service", "service", ll->services, error)
      || !ll_add_sections (ll, "load-limit-listener", "listener", ll->listeners, error))
    return FALSE;

  return pb_module_add_hook (module, &hook, error) && pb_module_add_command (module, &command, error);
}

PB_MODULE_DEFINE (
  .name = "load-limit",
  .version = PACKAGE_VERSION,
  .summary = "Limits simultaneous sessions: in total, per address, reserved and local (VPOP3 Load Limiting)",
  .init = ll_init,
  .settings = ll_settings,
  .config_size = sizeof (LlConfig),
  .check = ll_check,
  .sections = ll_sections);
