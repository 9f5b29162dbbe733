/* SPDX-License-Identifier: MIT */
/* ids: weighted client errors per address, temporary blocks at connect, `pillarbox ids`. */

/*
 * VPOP3's IDS/IPS as a module. At connect, in this order: an address in
 * never-block is let through; one in the block list is refused; one with a
 * temporary block is refused with "Your connection has been blocked
 * temporarily - Try again later". Events the protocol modules report
 * (failed logins, unknown local recipients, relay attempts, protocol
 * errors, too many connections) add their weight to the client's score;
 * when the score of the last monitor-period reaches the threshold, the
 * client's address (IPv6: its prefix) is blocked for block-time. Every
 * event is one log line "IDS event N (name) from ADDRESS ...", for
 * fail2ban and the like (docs/ids.md lists the numbers).
 *
 * Blocks are kept in STATE_DIR/ids/blocks, so they survive a restart and
 * reach the other instance during a reload (modules/state-store/state-store.c).
 */
#include "config.h"
#include "ids-private.h"

#include <pillarbox/pillarbox.h>

#include <string.h>

typedef struct {
  char **never_block;
  char **block;
  gint64 threshold;
  gint64 monitor_period;
  gint64 block_time;
  gint64 weight_auth_failed;
  gint64 weight_unknown_recipient;
  gint64 weight_relay_denied;
  gint64 weight_protocol_error;
  gint64 weight_too_many_connections;
  gint64 ipv6_prefix;
  gint64 max_tracked;
} IdsConfig;

#define IDS_DAY_MS G_GINT64_CONSTANT (86400000)

static const PbSetting ids_settings[] = {
  PB_SETTING_ADDRESS_LIST (IdsConfig, never_block, "never-block", "127.0.0.0/8, ::1",
                           "Addresses never blocked and never scored (VPOP3's \"Never Block List\"): "
                           "addresses, prefixes or wildcards such as 192.168.1.*."),
  PB_SETTING_ADDRESS_LIST (IdsConfig, block, "block", "",
                           "Addresses always refused at connect (VPOP3's \"Block List\")."),
  PB_SETTING_INT (IdsConfig, threshold, "threshold", "10", 1, 1000000,
                  "A client whose events weigh this much within monitor-period is blocked (VPOP3's "
                  "\"Client Error Block Threshold\")."),
  PB_SETTING_DURATION (IdsConfig, monitor_period, "monitor-period", "10m", 1000, 7 * IDS_DAY_MS,
                       "How far back events count: the score is the sum of the weights of the "
                       "client's events in the last monitor-period."),
  PB_SETTING_DURATION (IdsConfig, block_time, "block-time", "1h", 1000, 365 * IDS_DAY_MS,
                       "How long a block lasts."),
  PB_SETTING_INT (IdsConfig, weight_auth_failed, "weight-auth-failed", "2", 0, 1000000,
                  "Weight of a failed login (event 1); with the defaults, five failures block."),
  PB_SETTING_INT (IdsConfig, weight_unknown_recipient, "weight-unknown-recipient", "1", 0, 1000000,
                  "Weight of a recipient that does not exist in a local domain (event 3)."),
  PB_SETTING_INT (IdsConfig, weight_relay_denied, "weight-relay-denied", "2", 0, 1000000,
                  "Weight of a refused relay attempt (event 4)."),
  PB_SETTING_INT (IdsConfig, weight_protocol_error, "weight-protocol-error", "1", 0, 1000000,
                  "Weight of a malformed or out-of-sequence command (event 5)."),
  PB_SETTING_INT (IdsConfig, weight_too_many_connections, "weight-too-many-connections", "1", 0, 1000000,
                  "Weight of a connection refused because the client has too many already (event 6)."),
  PB_SETTING_INT (IdsConfig, ipv6_prefix, "ipv6-prefix", "64", 1, 128,
                  "IPv6 clients are scored and blocked per prefix of this many bits."),
  PB_SETTING_INT (IdsConfig, max_tracked, "max-tracked", "100000", 100, 10000000,
                  "At most this many addresses are scored at once; beyond, new addresses are not scored "
                  "until old scores expire (a warning says so)."),
  PB_SETTINGS_END
};

/* How often the state file is checked for changes and written when needed. */
#define IDS_SYNC_INTERVAL_MS 1000
/* Expired scores and blocks are dropped every this many sync ticks. */
#define IDS_PRUNE_TICKS 60

typedef struct {
  PbModule *module;
  const IdsConfig *config;
  gint64 (*now) (void);          /* the clock: g_get_real_time() */
  IdsAddrList *never_block;
  IdsAddrList *block_list;
  IdsTable *table;
  SStore *store;               /* NULL until start, and with --check-config */
  guint timer;
  guint ticks;
  gboolean dirty;                /* blocks changed since the last write */
  gint64 full_warned;            /* when max-tracked was last reported */
} Ids;

/* ---- logging --------------------------------------------------------------- */

/* One line per event, with the event number and client address also as
 * structured fields (PB_IDS_EVENT, PB_CLIENT_IP) for journal matches. */
static void G_GNUC_PRINTF (5, 6)
ids_log (GLogLevelFlags level, PbSession *session, IdsEventNumber event, const char *client, const char *format,
         ...)
{
  g_autofree char *rest = NULL;
  g_autofree char *text = NULL;
  char number[16];
  GLogField fields[7];
  gsize n = 0;
  va_list ap;

  va_start (ap, format);
  rest = g_strdup_vprintf (format, ap);
  va_end (ap);
  text = g_strdup_printf ("%s%sIDS event %d (%s) from %s%s%s", session != NULL ? pb_session_get_id (session) : "",
                          session != NULL ? ": " : "", (int) event, ids_event_name (event), client,
                          *rest != '\0' ? " " : "", rest);
  g_snprintf (number, sizeof number, "%d", (int) event);
  fields[n++] = (GLogField) { "PRIORITY", level == G_LOG_LEVEL_MESSAGE ? "5" : "6", -1 };
  fields[n++] = (GLogField) { "GLIB_DOMAIN", G_LOG_DOMAIN, -1 };
  fields[n++] = (GLogField) { "MESSAGE", text, -1 };
  fields[n++] = (GLogField) { "PB_IDS_EVENT", number, -1 };
  fields[n++] = (GLogField) { "PB_CLIENT_IP", client, -1 };
  if (session != NULL)
    fields[n++] = (GLogField) { "PB_SESSION", pb_session_get_id (session), -1 };
  g_log_structured_array (level, fields, n);
}

/* ---- the state file ---------------------------------------------------------- */

static void ids_sync (Ids *ids);

static void
ids_sync_done (const char *merged, const GError *error, gpointer user_data)
{
  Ids *ids = user_data;
  gboolean changed = FALSE;
  guint bad = 0;

  if (error != NULL)
    {
      g_warning ("ids: cannot save blocks in %s: %s", sstore_get_path (ids->store), error->message);
      ids->dirty = TRUE;  /* the next tick tries again */
      return;
    }
  ids_table_merge_text (ids->table, merged, ids->now (), &changed, &bad);
  if (ids->dirty)
    ids_sync (ids);  /* changed again while the worker wrote */
}

static void
ids_sync (Ids *ids)
{
  if (ids->store == NULL || sstore_is_busy (ids->store))
    return;
  ids->dirty = FALSE;
  sstore_sync_async (ids->store, ids_table_serialize (ids->table, ids->now ()), ids->now (), ids_sync_done, ids);
}

static gboolean
ids_tick (gpointer data)
{
  Ids *ids = data;

  if (++ids->ticks % IDS_PRUNE_TICKS == 0)
    ids_table_prune (ids->table, ids->now (), ids->config->monitor_period * 1000);
  if (ids->dirty || sstore_changed (ids->store))
    ids_sync (ids);
  return G_SOURCE_CONTINUE;
}

/* ---- connect ----------------------------------------------------------------- */

static void
ids_connect_hook (PbPolicyRequest *req, gpointer user_data)
{
  Ids *ids = user_data;
  PbSession *session = pb_policy_request_get_session (req);
  const char *ip = pb_session_get_peer_ip (session);
  g_autoptr (GInetAddress) address = g_inet_address_new_from_string (ip);
  const IdsBlock *block;

  if (address == NULL || ids_addr_list_match (ids->never_block, address))
    {
      pb_policy_continue (req);
      return;
    }
  if (ids_addr_list_match (ids->block_list, address))
    {
      ids_log (G_LOG_LEVEL_INFO, session, IDS_EVENT_REFUSED_BLOCK_LIST, ip, "on %s",
               pb_session_get_listener (session));
      pb_session_report_event (session, PB_EVENT_BLOCKED, ip);
      pb_policy_complete (req, PB_VERDICT_REJECT, 554, "5.7.1", "Access denied - your address is blocked");
      return;
    }
  block = ids_table_lookup (ids->table, address, ids->now ());
  if (block != NULL)
    {
      g_autofree char *left = block->expires == IDS_NEVER ? g_strdup ("forever")
                                                          : ids_format_duration (block->expires - ids->now ());
      ids_log (G_LOG_LEVEL_INFO, session, IDS_EVENT_REFUSED, ip, "on %s blocked for %s more",
               pb_session_get_listener (session), left);
      pb_session_report_event (session, PB_EVENT_BLOCKED, ip);
      /* VPOP3's wording; SMTP shows it as "421 4.7.0 ...", POP3 as "-ERR [SYS/TEMP] ...". */
      pb_policy_complete (req, PB_VERDICT_DISCONNECT, 421, "4.7.0",
                          "Your connection has been blocked temporarily - Try again later");
      return;
    }
  pb_policy_continue (req);
}

/* ---- events ------------------------------------------------------------------- */

static gint64
ids_weight (Ids *ids, PbEventKind kind, IdsEventNumber *number)
{
  const IdsConfig *c = ids->config;

  switch (kind)
    {
    case PB_EVENT_AUTH_FAILED: *number = IDS_EVENT_AUTH_FAILED; return c->weight_auth_failed;
    case PB_EVENT_UNKNOWN_RECIPIENT: *number = IDS_EVENT_UNKNOWN_RECIPIENT; return c->weight_unknown_recipient;
    case PB_EVENT_RELAY_DENIED: *number = IDS_EVENT_RELAY_DENIED; return c->weight_relay_denied;
    case PB_EVENT_PROTOCOL_ERROR: *number = IDS_EVENT_PROTOCOL_ERROR; return c->weight_protocol_error;
    case PB_EVENT_TOO_MANY_CONNECTIONS:
      *number = IDS_EVENT_TOO_MANY_CONNECTIONS;
      return c->weight_too_many_connections;
    case PB_EVENT_AUTH_SUCCEEDED:
    case PB_EVENT_DISCONNECT:
    case PB_EVENT_SESSION_START:
    case PB_EVENT_POLICY_REFUSED:   /* the refusing module scores its own reasons */
    case PB_EVENT_MESSAGE_REFUSED:  /* too big or a full disk: not the client's misconduct */
    case PB_EVENT_BLOCKED:
    case PB_EVENT_BLOCK_STARTED:
      break;
    }
  return -1;
}

static void
ids_event (PbSession *session, PbEventKind kind, const char *detail, gpointer user_data)
{
  Ids *ids = user_data;
  const IdsConfig *c = ids->config;
  const char *ip = pb_session_get_peer_ip (session);
  const char *listener = pb_session_get_listener (session);
  g_autoptr (GInetAddress) address = NULL;
  g_autofree char *key = NULL;
  IdsEventNumber number;
  gint64 weight = ids_weight (ids, kind, &number);
  gint64 now = ids->now ();
  gint64 score;

  if (weight < 0 || (address = g_inet_address_new_from_string (ip)) == NULL)
    return;
  if (ids_addr_list_match (ids->never_block, address))
    {
      ids_log (G_LOG_LEVEL_INFO, session, number, ip, "on %s weight %" G_GINT64_FORMAT " (never-block)", listener,
               weight);
      return;
    }
  if (ids_table_lookup (ids->table, address, now) != NULL)
    {
      ids_log (G_LOG_LEVEL_INFO, session, number, ip, "on %s weight %" G_GINT64_FORMAT " (already blocked)",
               listener, weight);
      return;
    }
  key = ids_prefix_of (address, g_inet_address_get_family (address) == G_SOCKET_FAMILY_IPV6
                                    ? (guint) c->ipv6_prefix : 32);
  if (weight == 0)
    {
      ids_log (G_LOG_LEVEL_INFO, session, number, ip, "on %s weight 0", listener);
      return;
    }
  if (ids_table_n_scores (ids->table) >= (guint64) c->max_tracked
      && ids_table_score (ids->table, key, now, c->monitor_period * 1000) == 0)
    {
      ids_table_prune (ids->table, now, c->monitor_period * 1000);
      if (ids_table_n_scores (ids->table) >= (guint64) c->max_tracked)
        {
          if (now - ids->full_warned > G_GINT64_CONSTANT (60) * G_USEC_PER_SEC)
            {
              g_warning ("ids: %" G_GINT64_FORMAT " addresses are scored already (max-tracked); new ones are "
                         "not scored for now",
                         c->max_tracked);
              ids->full_warned = now;
            }
          return;
        }
    }

  score = ids_table_add_event (ids->table, key, weight, now, c->monitor_period * 1000);
  ids_log (G_LOG_LEVEL_INFO, session, number, ip, "on %s weight %" G_GINT64_FORMAT " score %" G_GINT64_FORMAT
           "/%" G_GINT64_FORMAT,
           listener, weight, score, c->threshold);
  if (score >= c->threshold)
    {
      g_autofree char *reason = g_strdup_printf ("score %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT ", last event %s",
                                                 score, c->threshold, ids_event_name (number));
      g_autofree char *period = ids_format_duration (c->block_time * 1000);
      g_autofree char *shown = ids_prefix_display (key);

      ids_table_block (ids->table, key, now, now + c->block_time * 1000, reason);
      ids_table_clear_score (ids->table, key);
      ids_log (G_LOG_LEVEL_MESSAGE, session, IDS_EVENT_BLOCKED, ip, "blocked %s for %s (%s)", shown, period,
               reason);
      ids->dirty = TRUE;
      ids_sync (ids);
      /* For counters (metrics); our own handler ignores it. */
      pb_session_report_event (session, PB_EVENT_BLOCK_STARTED, shown);
    }
}

/* ---- pillarbox ids ------------------------------------------------------------- */

static char *
ids_format_time (gint64 usec, gboolean utc)
{
  g_autoptr (GDateTime) t = NULL;

  if (usec == IDS_NEVER)
    return g_strdup ("never");
  t = utc ? g_date_time_new_from_unix_utc (usec / G_USEC_PER_SEC)
          : g_date_time_new_from_unix_local (usec / G_USEC_PER_SEC);
  return t != NULL ? g_date_time_format (t, utc ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S") : g_strdup ("?");
}

static void
ids_command_list (Ids *ids, PbControlRequest *req)
{
  gint64 now = ids->now ();
  g_autoptr (GPtrArray) blocks = ids_table_list (ids->table, now);
  g_autoptr (GString) text = g_string_new (NULL);
  GVariantBuilder list;

  g_variant_builder_init (&list, G_VARIANT_TYPE ("aa{sv}"));
  if (blocks->len == 0)
    g_string_append (text, "no address is blocked");
  for (guint i = 0; i < blocks->len; i++)
    {
      const IdsBlock *b = g_ptr_array_index (blocks, i);
      g_autofree char *shown = ids_prefix_display (b->prefix);
      g_autofree char *until = ids_format_time (b->expires, FALSE);
      g_autofree char *until_utc = ids_format_time (b->expires, TRUE);
      g_autofree char *since_utc = ids_format_time (b->created, TRUE);
      g_autofree char *left = ids_format_duration (b->expires == IDS_NEVER ? IDS_NEVER : b->expires - now);

      g_string_append_printf (text, "%s%s until %s (%s left): %s", i > 0 ? "\n" : "", shown, until, left, b->reason);
      g_variant_builder_add_parsed (&list,
                                    "{'address': <%s>, 'blocked-at': <%s>, 'expires': <%s>, "
                                    "'remaining-seconds': <%x>, 'reason': <%s>}",
                                    shown, since_utc, until_utc,
                                    b->expires == IDS_NEVER ? (gint64) -1
                                                            : (b->expires - now) / G_USEC_PER_SEC,
                                    b->reason);
    }
  if (ids_addr_list_length (ids->block_list) > 0)
    g_string_append_printf (text, "\nand the %u entries of the block list in the configuration",
                            ids_addr_list_length (ids->block_list));
  pb_control_request_reply (req, g_variant_builder_end (&list), text->str);
}

static void
ids_command_scores (Ids *ids, PbControlRequest *req)
{
  g_autoptr (GHashTable) scores = ids_table_scores (ids->table, ids->now (), ids->config->monitor_period * 1000);
  g_autoptr (GList) keys = g_list_sort (g_hash_table_get_keys (scores), (GCompareFunc) strcmp);
  g_autoptr (GString) text = g_string_new (NULL);
  GVariantBuilder dict;

  g_variant_builder_init (&dict, G_VARIANT_TYPE ("a{sx}"));
  if (keys == NULL)
    g_string_append (text, "no address has a score");
  for (GList *l = keys; l != NULL; l = l->next)
    {
      g_autofree char *shown = ids_prefix_display (l->data);
      gint score = GPOINTER_TO_INT (g_hash_table_lookup (scores, l->data));
      g_string_append_printf (text, "%s%s: %d/%" G_GINT64_FORMAT, l != keys ? "\n" : "", shown, score,
                              ids->config->threshold);
      g_variant_builder_add (&dict, "{sx}", shown, (gint64) score);
    }
  pb_control_request_reply (req, g_variant_builder_end (&dict), text->str);
}

static void
ids_command (PbControlRequest *req, gpointer user_data)
{
  Ids *ids = user_data;
  const char *const *args = pb_control_request_get_args (req);
  guint n = args != NULL ? g_strv_length ((char **) args) : 0;
  g_autoptr (GError) error = NULL;
  g_autofree char *prefix = NULL;
  g_autofree char *shown = NULL;
  gint64 now = ids->now ();

  if (n == 0 || (strcmp (args[0], "list") == 0 && n == 1))
    {
      ids_command_list (ids, req);
      return;
    }
  if (strcmp (args[0], "scores") == 0 && n == 1)
    {
      ids_command_scores (ids, req);
      return;
    }
  if (!((strcmp (args[0], "block") == 0 && (n == 2 || n == 3)) || (strcmp (args[0], "unblock") == 0 && n == 2)))
    {
      pb_control_request_fail (req, "usage: ids list | ids scores | ids block ADDRESS [DURATION] | "
                                    "ids unblock ADDRESS");
      return;
    }
  prefix = ids_prefix_canonical (args[1], &error);
  if (prefix == NULL)
    {
      pb_control_request_fail (req, "%s", error->message);
      return;
    }
  shown = ids_prefix_display (prefix);
  if (strcmp (args[0], "block") == 0)
    {
      gint64 duration = ids->config->block_time * 1000;
      g_autofree char *text = NULL;
      g_autofree char *period = NULL;

      if (n == 3 && !ids_parse_duration (args[2], &duration, &error))
        {
          pb_control_request_fail (req, "%s", error->message);
          return;
        }
      period = ids_format_duration (duration);
      ids_table_block (ids->table, prefix, now, duration == IDS_NEVER ? IDS_NEVER : now + duration,
                       "blocked by the administrator");
      ids_table_clear_score (ids->table, prefix);
      ids_log (G_LOG_LEVEL_MESSAGE, NULL, IDS_EVENT_MANUAL_BLOCK, shown, "for %s", period);
      text = g_strdup_printf ("%s blocked for %s", shown, period);
      pb_control_request_reply (req, g_variant_new_parsed ("{'address': <%s>, 'duration': <%s>}", shown, period),
                                text);
    }
  else
    {
      gint64 keep = now + MAX (ids->config->block_time * 1000, G_GINT64_CONSTANT (86400) * G_USEC_PER_SEC);
      gboolean was = ids_table_unblock (ids->table, prefix, now, keep);
      g_autofree char *text = g_strdup_printf (was ? "%s unblocked" : "%s was not blocked", shown);

      ids_table_clear_score (ids->table, prefix);
      if (was)
        ids_log (G_LOG_LEVEL_MESSAGE, NULL, IDS_EVENT_UNBLOCKED, shown, "by the administrator");
      pb_control_request_reply (req, g_variant_new_parsed ("{'address': <%s>, 'was-blocked': <%b>}", shown, was),
                                text);
    }
  ids->dirty = TRUE;
  ids_sync (ids);
}

/* ---- life cycle ------------------------------------------------------------------ */

static void
ids_free (gpointer data)
{
  Ids *ids = data;

  ids_addr_list_free (ids->never_block);
  ids_addr_list_free (ids->block_list);
  ids_table_free (ids->table);
  g_free (ids);
}

static gboolean
ids_start (PbModule *module, GError **error)
{
  Ids *ids = pb_module_get_data (module);
  g_autofree char *dir = g_build_filename (pb_module_get_state_dir (module), "ids", NULL);
  g_autofree char *text = NULL;
  guint bad = 0;

  ids->store = sstore_new (dir, "blocks", ids_merge_texts);
  if (!sstore_read (ids->store, &text, error))
    {
      g_prefix_error (error, "cannot read %s: ", sstore_get_path (ids->store));
      return FALSE;
    }
  ids_table_merge_text (ids->table, text, ids->now (), NULL, &bad);
  if (bad > 0)
    g_warning ("ids: %s: %u unreadable lines skipped", sstore_get_path (ids->store), bad);
  {
    g_autoptr (GPtrArray) blocks = ids_table_list (ids->table, ids->now ());
    if (blocks->len > 0)
      g_message ("ids: %u blocks loaded from %s", blocks->len, sstore_get_path (ids->store));
  }
  ids->timer = pb_timeout_add (IDS_SYNC_INTERVAL_MS, ids_tick, ids);
  return TRUE;
}

static void
ids_fini (PbModule *module)
{
  Ids *ids = pb_module_get_data (module);
  g_autoptr (GError) error = NULL;

  g_clear_handle_id (&ids->timer, g_source_remove);
  if (ids->store == NULL)
    return;
  if (ids->dirty)
    {
      g_autofree char *own = ids_table_serialize (ids->table, ids->now ());
      g_autofree char *merged = NULL;
      if (!sstore_sync (ids->store, own, ids->now (), &merged, &error))
        g_warning ("ids: cannot save blocks in %s: %s", sstore_get_path (ids->store), error->message);
    }
  sstore_close (ids->store);
  ids->store = NULL;
}

static gboolean
ids_init (PbModule *module, const void *config, GError **error)
{
  static const char *const before[] = { "load-limit", NULL };
  const IdsConfig *c = config;
  Ids *ids = g_new0 (Ids, 1);
  PbHookSpec hook = {
    .struct_size = sizeof hook,
    .stage = PB_STAGE_CONNECT,
    /* The cheapest check of all, and before load-limit: a blocked client takes no slot. */
    .priority = -100,
    .before = before,
    .func = ids_connect_hook,
    .user_data = ids,
  };
  PbControlCommandSpec command = {
    .struct_size = sizeof command,
    .name = "ids",
    .summary = "List, add and lift intrusion-detection blocks",
    .usage = "ids list | ids scores | ids block ADDRESS [DURATION] | ids unblock ADDRESS",
    .func = ids_command,
    .user_data = ids,
  };

  ids->module = module;
  ids->config = c;
  ids->now = g_get_real_time;
  ids->table = ids_table_new ();
  pb_module_set_data (module, ids, ids_free);
  ids->never_block = ids_addr_list_new ((const char *const *) c->never_block, error);
  if (ids->never_block == NULL)
    return FALSE;
  ids->block_list = ids_addr_list_new ((const char *const *) c->block, error);
  if (ids->block_list == NULL)
    return FALSE;
  pb_module_add_event_handler (module, ids_event, ids);
  return pb_module_add_hook (module, &hook, error) && pb_module_add_command (module, &command, error);
}

PB_MODULE_DEFINE (
  .name = "ids",
  .version = PACKAGE_VERSION,
  .summary = "Blocks clients whose failed logins and errors reach a threshold (VPOP3 IDS/IPS)",
  .init = ids_init,
  .start = ids_start,
  .fini = ids_fini,
  .settings = ids_settings,
  .config_size = sizeof (IdsConfig));
