/* SPDX-License-Identifier: MIT */
/* rate-cap: inbound message and recipient rates per client, user or sender, refused at MAIL and RCPT. */

/*
 * Rules are [rate-cap-rule NAME] sections: per WHAT (client-address, user,
 * sender), count WHAT (messages, recipients), limit N, period P, action
 * (defer = 450 4.7.1, reject = 550 5.7.1). What counts, exactly:
 *
 *   - a message counts once it is queued (the queued stage: accepted and
 *     on disk), with the recipients the rcpt-to stage let through in its
 *     transaction;
 *   - mail-from is refused when a rule's count, plus what open
 *     transactions already hold, has reached its limit; rcpt-to is refused
 *     the same way for recipient rules. MAIL and RCPT reserve what they
 *     let through until the transaction ends, so parallel sessions cannot
 *     overshoot the limit together;
 *   - bounces (the null sender) are not counted or refused unless the
 *     rule says include-bounces.
 *
 * Counters survive reloads and restarts through STATE_DIR/rate-cap/counters
 * (modules/state-store/state-store.c, rc-counters.c). docs/rate-cap.md is the reference.
 */
#include "config.h"
#include "rc-private.h"

#include <pillarbox/pillarbox.h>

#include <string.h>

enum { RC_PER_CLIENT, RC_PER_USER, RC_PER_SENDER };
enum { RC_COUNT_MESSAGES, RC_COUNT_RECIPIENTS };
enum { RC_ACTION_DEFER, RC_ACTION_REJECT };
enum { RC_AUTH_ANY, RC_AUTH_YES, RC_AUTH_NO };

static const char *const rc_per_words[] = { "client-address", "user", "sender", NULL };
static const char *const rc_count_words[] = { "messages", "recipients", NULL };
static const char *const rc_action_words[] = { "defer", "reject", NULL };
static const char *const rc_auth_words[] = { "any", "yes", "no", NULL };

typedef struct {
  gint64 max_tracked;
} RcConfig;

typedef struct {
  gint per;
  gint count;
  gint64 limit;
  gint64 period;
  gint action;
  char *text;
  char **listeners;
  char **clients;
  char **exempt_clients;
  gint authenticated;
  gboolean include_bounces;
  gint64 ipv6_prefix;
} RcRuleConfig;

#define RC_DAY_MS G_GINT64_CONSTANT (86400000)

static const PbSetting rc_settings[] = {
  PB_SETTING_INT (RcConfig, max_tracked, "max-tracked", "100000", 100, 10000000,
                  "At most this many counters (rule and client, user or sender) are kept; beyond, new "
                  "ones are not counted until old ones expire (a warning says so)."),
  PB_SETTINGS_END
};

static const PbSetting rc_rule_settings[] = {
  PB_SETTING_ENUM (RcRuleConfig, per, "per", "client-address", rc_per_words,
                   "What is counted apart: the client's IP address (IPv6: its prefix of ipv6-prefix bits), "
                   "the authenticated user, or the envelope sender (MAIL FROM)."),
  PB_SETTING_ENUM (RcRuleConfig, count, "count", "messages", rc_count_words,
                   "What is counted: messages queued, or their accepted recipients."),
  PB_SETTING_INT (RcRuleConfig, limit, "limit", NULL, 1, 1000000000,
                  "How many messages or recipients are allowed per period (required)."),
  PB_SETTING_DURATION (RcRuleConfig, period, "period", "1h", 1000, 31 * RC_DAY_MS,
                       "The sliding window the limit applies to: \"at most LIMIT in any PERIOD\"."),
  PB_SETTING_ENUM (RcRuleConfig, action, "action", "defer", rc_action_words,
                   "defer answers 450 4.7.1 (the client tries again later); reject answers 550 5.7.1."),
  PB_SETTING_STRING (RcRuleConfig, text, "text", "",
                     "The reply text; empty for one that says which limit was reached."),
  PB_SETTING_STRING_LIST (RcRuleConfig, listeners, "listeners", "",
                          "The listeners the rule applies to (smtp, submission, ...); empty for all."),
  PB_SETTING_ADDRESS_LIST (RcRuleConfig, clients, "clients", "",
                           "The client addresses the rule applies to; empty for all."),
  PB_SETTING_ADDRESS_LIST (RcRuleConfig, exempt_clients, "exempt-clients", "",
                           "Client addresses the rule never applies to."),
  PB_SETTING_ENUM (RcRuleConfig, authenticated, "authenticated", "any", rc_auth_words,
                   "yes: only sessions that authenticated; no: only those that did not; any: both."),
  PB_SETTING_BOOL (RcRuleConfig, include_bounces, "include-bounces", "false",
                   "Count and limit bounces (the null sender <>) too; by default they are exempt."),
  PB_SETTING_INT (RcRuleConfig, ipv6_prefix, "ipv6-prefix", "64", 1, 128,
                  "With per = client-address, IPv6 clients are counted per prefix of this many bits."),
  PB_SETTINGS_END
};

static gboolean
rc_rule_check (const void *config, GError **error)
{
  const RcRuleConfig *c = config;

  if (c->per == RC_PER_USER && c->authenticated == RC_AUTH_NO)
    {
      g_set_error_literal (error, RC_ERROR, 0, "per = user counts authenticated users: authenticated = no "
                                               "leaves nothing to count");
      return FALSE;
    }
  return TRUE;
}

static const PbSectionInfo rc_rule_section = {
  .struct_size = sizeof (PbSectionInfo),
  .kind = "rate-cap-rule",
  .summary = "One rate limit: per client address, user or sender, on messages or recipients per period",
  .settings = rc_rule_settings,
  .config_size = sizeof (RcRuleConfig),
  .check = rc_rule_check,
};

static const PbSectionInfo *const rc_sections[] = { &rc_rule_section, NULL };

/* How often the state file is checked for another instance's counts, and
 * the least time between two saves of this instance's (a save rewrites the
 * whole file: at most one a second, however busy the server). */
#define RC_SYNC_INTERVAL_MS 1000
#define RC_PRUNE_TICKS 60

typedef struct {
  char *name;
  const RcRuleConfig *config;
  char *id_prefix;          /* "NAME|PER|COUNT|PERIOD_MS|" */
  GPtrArray *clients;       /* GInetAddressMask * */
  GPtrArray *exempt;
  char *text;               /* the reply text */
} RcRule;

typedef struct {
  PbModule *module;
  const RcConfig *config;
  gint64 (*now) (void);     /* the clock: g_get_real_time() */
  GPtrArray *rules;         /* RcRule * */
  RcCounters *counters;
  GHashTable *held;         /* counter id -> GUINT_TO_POINTER (held by open transactions) */
  SStore *store;
  guint timer;
  guint ticks;
  gboolean dirty;           /* counted since the last save */
  gint64 last_sync;         /* g_get_monotonic_time() of the last save */
  gint64 sync_interval;     /* microseconds between saves; grows with the file */
  gint64 full_warned;
} RateCap;

/* What one open transaction holds of one rule. */
typedef struct {
  RcRule *rule;
  char *id;
  guint held;
} RcHold;

typedef struct {
  RateCap *rc;
  GPtrArray *holds;         /* RcHold *, the current transaction; NULL outside one */
} RcSession;

/* ---- rules ----------------------------------------------------------------- */

static GPtrArray *
rc_masks_new (char **prefixes)
{
  GPtrArray *masks = g_ptr_array_new_with_free_func (g_object_unref);

  /* The core checked every prefix. */
  for (guint i = 0; prefixes[i] != NULL; i++)
    {
      GInetAddressMask *m = g_inet_address_mask_new_from_string (prefixes[i], NULL);
      if (m != NULL)
        g_ptr_array_add (masks, m);
    }
  return masks;
}

static gboolean
rc_masks_match (GPtrArray *masks, GInetAddress *address)
{
  for (guint i = 0; address != NULL && i < masks->len; i++)
    if (g_inet_address_mask_matches (g_ptr_array_index (masks, i), address))
      return TRUE;
  return FALSE;
}

static char *
rc_period_text (gint64 ms)
{
  gint64 s = ms / 1000;

  if (s % 86400 == 0)
    return g_strdup_printf ("%" G_GINT64_FORMAT " day%s", s / 86400, s == 86400 ? "" : "s");
  if (s % 3600 == 0)
    return g_strdup_printf ("%" G_GINT64_FORMAT " hour%s", s / 3600, s == 3600 ? "" : "s");
  if (s % 60 == 0)
    return g_strdup_printf ("%" G_GINT64_FORMAT " minutes", s / 60);
  return g_strdup_printf ("%" G_GINT64_FORMAT " seconds", s);
}

static RcRule *
rc_rule_new (const char *name, const RcRuleConfig *c)
{
  static const char *const whose[] = { "from your IP address", "from your account", "from this sender" };
  RcRule *r = g_new0 (RcRule, 1);
  g_autofree char *period = rc_period_text (c->period);

  r->name = g_strdup (name);
  r->config = c;
  r->id_prefix = g_strdup_printf ("%s|%s|%s|%" G_GINT64_FORMAT "|", name, rc_per_words[c->per],
                                  rc_count_words[c->count], c->period);
  r->clients = rc_masks_new (c->clients);
  r->exempt = rc_masks_new (c->exempt_clients);
  if (c->text[0] != '\0')
    r->text = g_strdup (c->text);
  else
    r->text = g_strdup_printf ("Too many %s %s: at most %" G_GINT64_FORMAT " per %s%s", rc_count_words[c->count],
                               whose[c->per], c->limit, period,
                               c->action == RC_ACTION_DEFER ? " - try again later" : "");
  g_strdelimit (r->text, "\r\n", ' ');  /* one reply line */
  return r;
}

static void
rc_rule_free (gpointer p)
{
  RcRule *r = p;
  g_free (r->name);
  g_free (r->id_prefix);
  g_ptr_array_unref (r->clients);
  g_ptr_array_unref (r->exempt);
  g_free (r->text);
  g_free (r);
}

/* The counter id for this transaction under RULE, or NULL when the rule
 * does not apply. */
static char *
rc_rule_id (RcRule *rule, PbSession *session, GInetAddress *client, const char *user, const char *sender)
{
  const RcRuleConfig *c = rule->config;
  g_autofree char *value = NULL;
  gboolean authenticated = user != NULL && *user != '\0';

  if (c->listeners[0] != NULL && !g_strv_contains ((const char *const *) c->listeners,
                                                   pb_session_get_listener (session)))
    return NULL;
  if (rule->clients->len > 0 && !rc_masks_match (rule->clients, client))
    return NULL;
  if (rc_masks_match (rule->exempt, client))
    return NULL;
  if ((c->authenticated == RC_AUTH_YES && !authenticated) || (c->authenticated == RC_AUTH_NO && authenticated))
    return NULL;
  if (sender != NULL && *sender == '\0' && !c->include_bounces)
    return NULL;

  switch (c->per)
    {
    case RC_PER_CLIENT:
      if (client == NULL)
        return NULL;
      if (g_inet_address_get_family (client) == G_SOCKET_FAMILY_IPV6 && c->ipv6_prefix < 128)
        {
          guint8 bytes[16];
          g_autoptr (GInetAddress) masked = NULL;
          g_autofree char *text = NULL;

          memcpy (bytes, g_inet_address_to_bytes (client), 16);
          for (guint bit = (guint) c->ipv6_prefix; bit < 128; bit++)
            bytes[bit / 8] &= (guint8) ~(0x80u >> (bit % 8));
          masked = g_inet_address_new_from_bytes (bytes, G_SOCKET_FAMILY_IPV6);
          text = g_inet_address_to_string (masked);
          value = g_strdup_printf ("%s/%" G_GINT64_FORMAT, text, c->ipv6_prefix);
        }
      else
        value = g_inet_address_to_string (client);
      break;
    case RC_PER_USER:
      if (!authenticated)
        return NULL;
      value = g_utf8_strdown (user, -1);
      break;
    case RC_PER_SENDER:
      if (sender == NULL)
        return NULL;
      value = *sender == '\0' ? g_strdup ("<>") : g_utf8_strdown (sender, -1);
      break;
    }
  return g_strconcat (rule->id_prefix, value, NULL);
}

/* ---- holds ------------------------------------------------------------------ */

static guint
rc_held (RateCap *rc, const char *id)
{
  return GPOINTER_TO_UINT (g_hash_table_lookup (rc->held, id));
}

static void
rc_hold_change (RateCap *rc, RcHold *hold, gint delta)
{
  guint now_held = rc_held (rc, hold->id);

  if (delta < 0 && (guint) -delta > now_held)
    delta = -(gint) now_held;  /* cannot happen; never wrap */
  now_held = (guint) ((gint) now_held + delta);
  hold->held = (guint) ((gint) hold->held + delta);
  if (now_held == 0)
    g_hash_table_remove (rc->held, hold->id);
  else
    g_hash_table_replace (rc->held, g_strdup (hold->id), GUINT_TO_POINTER (now_held));
}

static void
rc_hold_free (gpointer p)
{
  RcHold *h = p;
  g_free (h->id);
  g_free (h);
}

/* Ends the transaction: gives back what it held. */
static void
rc_session_release (RcSession *s)
{
  if (s->holds == NULL)
    return;
  for (guint i = 0; i < s->holds->len; i++)
    {
      RcHold *h = g_ptr_array_index (s->holds, i);
      rc_hold_change (s->rc, h, -(gint) h->held);
    }
  g_clear_pointer (&s->holds, g_ptr_array_unref);
}

static void
rc_session_free (gpointer p)
{
  RcSession *s = p;
  rc_session_release (s);
  g_free (s);
}

static RcSession *
rc_session_get (RateCap *rc, PbSession *session)
{
  RcSession *s = pb_session_get_data (session, rc->module);

  if (s == NULL)
    {
      s = g_new0 (RcSession, 1);
      s->rc = rc;
      pb_session_set_data (session, rc->module, s, rc_session_free);
    }
  return s;
}

/* Count plus what open transactions hold. */
static guint64
rc_used (RateCap *rc, RcHold *h)
{
  return rc_counters_get (rc->counters, h->id, h->rule->config->period, rc->now ()) + rc_held (rc, h->id);
}

static void
rc_refuse (PbPolicyRequest *req, RcHold *h, guint64 used, const char *what)
{
  RcRule *rule = h->rule;
  const char *value = h->id + strlen (rule->id_prefix);
  g_autofree char *period = rc_period_text (rule->config->period);

  pb_session_info (pb_policy_request_get_session (req),
                   "rate-cap: rule %s: %s %s has %" G_GUINT64_FORMAT " %s in the last %s (limit %" G_GINT64_FORMAT
                   "): %s %s",
                   rule->name, rc_per_words[rule->config->per], value, used, rc_count_words[rule->config->count],
                   period, rule->config->limit,
                   rule->config->action == RC_ACTION_DEFER ? "deferring" : "rejecting", what);
  if (rule->config->action == RC_ACTION_DEFER)
    pb_policy_complete (req, PB_VERDICT_TEMPFAIL, 450, "4.7.1", rule->text);
  else
    pb_policy_complete (req, PB_VERDICT_REJECT, 550, "5.7.1", rule->text);
}

static void rc_maybe_sync (RateCap *rc);

/* ---- stages ------------------------------------------------------------------- */

static const char *
rc_user (PbPolicyRequest *req, PbSession *session)
{
  const char *user = pb_policy_request_get_field (req, "auth-user");
  return user != NULL ? user : pb_session_get_user (session);
}

static void
rc_mail_from (RateCap *rc, PbPolicyRequest *req, PbSession *session)
{
  RcSession *s = rc_session_get (rc, session);
  const char *sender = pb_policy_request_get_field (req, "mail-from");
  g_autoptr (GInetAddress) client = g_inet_address_new_from_string (pb_session_get_peer_ip (session));
  const char *user = rc_user (req, session);
  GPtrArray *holds = g_ptr_array_new_with_free_func (rc_hold_free);

  /* A new MAIL FROM ends whatever transaction came before (RSET, a refused DATA). */
  rc_session_release (s);
  if (sender == NULL)
    sender = "";
  for (guint i = 0; i < rc->rules->len; i++)
    {
      RcRule *rule = g_ptr_array_index (rc->rules, i);
      char *id = rc_rule_id (rule, session, client, user, sender);
      RcHold *h;
      guint64 used;

      if (id == NULL)
        continue;
      h = g_new0 (RcHold, 1);
      h->rule = rule;
      h->id = id;
      g_ptr_array_add (holds, h);
      used = rc_used (rc, h);
      if (used >= (guint64) rule->config->limit)
        {
          rc_refuse (req, h, used, "MAIL FROM");
          /* Nothing reserved yet: the holds go away with the array. */
          for (guint k = 0; k < holds->len; k++)
            {
              RcHold *x = g_ptr_array_index (holds, k);
              rc_hold_change (rc, x, -(gint) x->held);
            }
          g_ptr_array_unref (holds);
          return;
        }
      /* A message rule reserves the message now; a recipient rule at each RCPT. */
      if (rule->config->count == RC_COUNT_MESSAGES)
        rc_hold_change (rc, h, 1);
    }
  s->holds = holds;
  pb_policy_continue (req);
}

static void
rc_rcpt_to (RateCap *rc, PbPolicyRequest *req, PbSession *session)
{
  RcSession *s = pb_session_get_data (session, rc->module);

  if (s == NULL || s->holds == NULL)
    {
      pb_policy_continue (req);
      return;
    }
  for (guint i = 0; i < s->holds->len; i++)
    {
      RcHold *h = g_ptr_array_index (s->holds, i);
      guint64 used;

      if (h->rule->config->count != RC_COUNT_RECIPIENTS)
        continue;
      used = rc_used (rc, h);
      if (used >= (guint64) h->rule->config->limit)
        {
          rc_refuse (req, h, used, "RCPT TO");
          return;
        }
    }
  for (guint i = 0; i < s->holds->len; i++)
    {
      RcHold *h = g_ptr_array_index (s->holds, i);
      if (h->rule->config->count == RC_COUNT_RECIPIENTS)
        rc_hold_change (rc, h, 1);
    }
  pb_policy_continue (req);
}

static void
rc_queued (RateCap *rc, PbPolicyRequest *req, PbSession *session)
{
  RcSession *s = pb_session_get_data (session, rc->module);
  gint64 now = rc->now ();

  if (s == NULL || s->holds == NULL)
    {
      pb_policy_continue (req);
      return;
    }
  for (guint i = 0; i < s->holds->len; i++)
    {
      RcHold *h = g_ptr_array_index (s->holds, i);
      guint64 n = h->rule->config->count == RC_COUNT_MESSAGES ? 1 : h->held;

      if (n == 0)
        continue;
      if (rc_counters_size (rc->counters) >= (guint64) rc->config->max_tracked
          && rc_counters_get (rc->counters, h->id, h->rule->config->period, now) == 0)
        {
          rc_counters_prune (rc->counters, now);
          if (rc_counters_size (rc->counters) >= (guint64) rc->config->max_tracked)
            {
              if (now - rc->full_warned > G_GINT64_CONSTANT (60) * G_USEC_PER_SEC)
                {
                  g_warning ("rate-cap: %u counters exist already (max-tracked); new ones are not counted for now",
                             rc_counters_size (rc->counters));
                  rc->full_warned = now;
                }
              continue;
            }
        }
      rc_counters_add (rc->counters, h->id, h->rule->config->period, now, n);
      rc->dirty = TRUE;
    }
  /* Counted: the transaction's holds become counts. */
  rc_session_release (s);
  rc_maybe_sync (rc);
  pb_policy_continue (req);
}

static void
rc_hook (PbPolicyRequest *req, gpointer user_data)
{
  RateCap *rc = user_data;
  PbSession *session = pb_policy_request_get_session (req);

  if (session == NULL || rc->rules->len == 0)
    {
      pb_policy_continue (req);
      return;
    }
  switch (pb_policy_request_get_stage (req))
    {
    case PB_STAGE_MAIL_FROM: rc_mail_from (rc, req, session); return;
    case PB_STAGE_RCPT_TO: rc_rcpt_to (rc, req, session); return;
    case PB_STAGE_QUEUED: rc_queued (rc, req, session); return;
    default: pb_policy_continue (req); return;
    }
}

/* ---- the state file ------------------------------------------------------------- */

static void rc_sync (RateCap *rc);

static void
rc_sync_done (const char *merged, const GError *error, gpointer user_data)
{
  RateCap *rc = user_data;

  if (error != NULL)
    {
      g_warning ("rate-cap: cannot save counters in %s: %s", sstore_get_path (rc->store), error->message);
      rc->dirty = TRUE;
      return;
    }
  rc_counters_merge_text (rc->counters, merged, rc->now (), NULL, NULL);
}

static void
rc_sync (RateCap *rc)
{
  gint64 start = g_get_monotonic_time ();
  char *own;

  if (rc->store == NULL || sstore_is_busy (rc->store))
    return;
  rc->dirty = FALSE;
  rc->last_sync = start;
  own = rc_counters_serialize (rc->counters, rc->now ());
  /* Writing and merging happen on the worker, but the text is made here:
   * with very many counters, save less often, so the loop spends at most
   * about 2% of its time on it. */
  rc->sync_interval = MAX (RC_SYNC_INTERVAL_MS * 1000, 50 * (g_get_monotonic_time () - start));
  sstore_sync_async (rc->store, own, rc->now (), rc_sync_done, rc);
}

/* Saves now, unless the last save was less than sync_interval ago: then
 * the tick saves. So the first message after a quiet spell is on disk at
 * once, and a busy server rewrites the file once a second. */
static void
rc_maybe_sync (RateCap *rc)
{
  if (rc->dirty && g_get_monotonic_time () - rc->last_sync >= rc->sync_interval)
    rc_sync (rc);
}

static gboolean
rc_tick (gpointer data)
{
  RateCap *rc = data;

  if (++rc->ticks % RC_PRUNE_TICKS == 0)
    rc_counters_prune (rc->counters, rc->now ());
  if ((rc->dirty || sstore_changed (rc->store)) && g_get_monotonic_time () - rc->last_sync >= rc->sync_interval)
    rc_sync (rc);
  return G_SOURCE_CONTINUE;
}

/* ---- pillarbox rate-cap ---------------------------------------------------------- */

static void
rc_command (PbControlRequest *req, gpointer user_data)
{
  RateCap *rc = user_data;
  const char *const *args = pb_control_request_get_args (req);
  g_autoptr (GHashTable) counts = rc_counters_snapshot (rc->counters, rc->now ());
  g_autoptr (GString) text = g_string_new (NULL);
  GVariantBuilder list;

  if (args[0] != NULL && strcmp (args[0], "show") != 0)
    {
      pb_control_request_fail (req, "unknown subcommand '%s' (usage: rate-cap [show])", args[0]);
      return;
    }
  g_variant_builder_init (&list, G_VARIANT_TYPE ("aa{sv}"));
  if (rc->rules->len == 0)
    g_string_append (text, "no rules are configured");
  for (guint i = 0; i < rc->rules->len; i++)
    {
      RcRule *rule = g_ptr_array_index (rc->rules, i);
      g_autofree char *period = rc_period_text (rule->config->period);
      g_autoptr (GList) ids = g_list_sort (g_hash_table_get_keys (counts), (GCompareFunc) strcmp);
      GVariantBuilder values;

      g_string_append_printf (text, "%srule %s: at most %" G_GINT64_FORMAT " %s per %s per %s, then %s",
                              i > 0 ? "\n" : "", rule->name, rule->config->limit,
                              rc_count_words[rule->config->count], period, rc_per_words[rule->config->per],
                              rc_action_words[rule->config->action]);
      g_variant_builder_init (&values, G_VARIANT_TYPE ("a{st}"));
      for (GList *l = ids; l != NULL; l = l->next)
        {
          const char *id = l->data;
          guint64 n;
          if (!g_str_has_prefix (id, rule->id_prefix))
            continue;
          n = *(guint64 *) g_hash_table_lookup (counts, id);
          g_string_append_printf (text, "\n  %s: %" G_GUINT64_FORMAT, id + strlen (rule->id_prefix), n);
          g_variant_builder_add (&values, "{st}", id + strlen (rule->id_prefix), n);
        }
      g_variant_builder_add_parsed (&list,
                                    "{'rule': <%s>, 'per': <%s>, 'count': <%s>, 'limit': <%x>, "
                                    "'period-seconds': <%x>, 'action': <%s>, 'counters': <%v>}",
                                    rule->name, rc_per_words[rule->config->per],
                                    rc_count_words[rule->config->count], rule->config->limit,
                                    rule->config->period / 1000, rc_action_words[rule->config->action],
                                    g_variant_builder_end (&values));
    }
  pb_control_request_reply (req, g_variant_builder_end (&list), text->str);
}

/* ---- life cycle -------------------------------------------------------------------- */

static void
rc_free (gpointer data)
{
  RateCap *rc = data;

  g_ptr_array_unref (rc->rules);
  rc_counters_free (rc->counters);
  g_hash_table_unref (rc->held);
  g_free (rc);
}

static gboolean
rc_start (PbModule *module, GError **error)
{
  RateCap *rc = pb_module_get_data (module);
  g_autofree char *dir = g_build_filename (pb_module_get_state_dir (module), "rate-cap", NULL);
  g_autofree char *text = NULL;
  guint bad = 0;

  rc->store = sstore_new (dir, "counters", rc_merge_texts);
  if (!sstore_read (rc->store, &text, error))
    {
      g_prefix_error (error, "cannot read %s: ", sstore_get_path (rc->store));
      return FALSE;
    }
  rc_counters_merge_text (rc->counters, text, rc->now (), NULL, &bad);
  if (bad > 0)
    g_warning ("rate-cap: %s: %u unreadable lines skipped", sstore_get_path (rc->store), bad);
  rc->timer = pb_timeout_add (RC_SYNC_INTERVAL_MS, rc_tick, rc);
  return TRUE;
}

static void
rc_fini (PbModule *module)
{
  RateCap *rc = pb_module_get_data (module);
  g_autoptr (GError) error = NULL;

  g_clear_handle_id (&rc->timer, g_source_remove);
  if (rc->store == NULL)
    return;
  if (rc->dirty)
    {
      g_autofree char *own = rc_counters_serialize (rc->counters, rc->now ());
      g_autofree char *merged = NULL;
      if (!sstore_sync (rc->store, own, rc->now (), &merged, &error))
        g_warning ("rate-cap: cannot save counters in %s: %s", sstore_get_path (rc->store), error->message);
    }
  sstore_close (rc->store);
  rc->store = NULL;
}

static gboolean
rc_init (PbModule *module, const void *config, GError **error)
{
  RateCap *rc = g_new0 (RateCap, 1);
  const char *const *names = NULL;
  const void *const *rules = pb_module_get_sections (module, "rate-cap-rule", &names);
  PbHookSpec hook = {
    .struct_size = sizeof hook,
    .func = rc_hook,
    .user_data = rc,
  };
  PbControlCommandSpec command = {
    .struct_size = sizeof command,
    .name = "rate-cap",
    .summary = "Show the rate-cap rules and their counters",
    .usage = "rate-cap [show]",
    .func = rc_command,
    .user_data = rc,
  };

  rc->module = module;
  rc->config = config;
  rc->now = g_get_real_time;
  rc->sync_interval = RC_SYNC_INTERVAL_MS * 1000;
  rc->rules = g_ptr_array_new_with_free_func (rc_rule_free);
  rc->held = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  /* Each instance counts in its own cells; see rc-private.h. */
  rc->counters = rc_counters_new (((guint64) g_random_int () << 32) | g_random_int ());
  pb_module_set_data (module, rc, rc_free);
  for (guint i = 0; rules[i] != NULL; i++)
    g_ptr_array_add (rc->rules, rc_rule_new (names[i], rules[i]));

  /* Without rules there is nothing to ask: the protocol modules skip
   * stages nobody hooks. */
  if (rc->rules->len == 0)
    return pb_module_add_command (module, &command, error);
  /* Late at mail-from and last at rcpt-to: what rate-cap lets through at
   * RCPT is what it counts, so no later hook should refuse it. */
  hook.stage = PB_STAGE_MAIL_FROM;
  hook.priority = 500;
  if (!pb_module_add_hook (module, &hook, error))
    return FALSE;
  hook.stage = PB_STAGE_RCPT_TO;
  hook.priority = 1000;
  if (!pb_module_add_hook (module, &hook, error))
    return FALSE;
  hook.stage = PB_STAGE_QUEUED;
  hook.priority = 0;
  return pb_module_add_hook (module, &hook, error) && pb_module_add_command (module, &command, error);
}

PB_MODULE_DEFINE (
  .name = "rate-cap",
  .version = PACKAGE_VERSION,
  .summary = "Caps inbound messages and recipients per client address, user or sender and period",
  .init = rc_init,
  .start = rc_start,
  .fini = rc_fini,
  .settings = rc_settings,
  .config_size = sizeof (RcConfig),
  .sections = rc_sections);
