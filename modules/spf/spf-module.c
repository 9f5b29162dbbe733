/* SPDX-License-Identifier: MIT */
/* spf: SPF checks of MAIL FROM and HELO (RFC 7208), result headers at data-end, `pillarbox spf-check`. */

/*
 * At mail-from the module checks the MAIL FROM identity (RFC 7208 §2.4), or
 * postmaster@HELO for the null reverse path (§2.3); with check-helo the
 * HELO identity is checked first. What a result does is configurable per
 * result (reject, defer or tag). The result is kept on the session for the
 * transaction, and at data-end turned into Received-SPF (§9.1) and
 * Authentication-Results (RFC 8601) headers. Authenticated sessions and
 * trusted-networks are not checked: SPF is about mail coming in from other
 * domains' servers, not about our own users.
 */
#include "config.h"
#include "spf-private.h"
#include "spf-headers.h"

#include <pillarbox/pillarbox.h>

#include <string.h>

typedef enum {
  SPF_ACTION_REJECT = 0,
  SPF_ACTION_DEFER,
  SPF_ACTION_TAG
} SpfAction;

static const char *const spf_action_words[] = { "reject", "defer", "tag", NULL };

typedef struct {
  char **trusted_networks;
  gboolean check_helo;
  gint on_fail;
  gint on_softfail;
  gint on_neutral;
  gint on_none;
  gint on_temperror;
  gint on_permerror;
  gint64 max_void_lookups;
  gint64 lookup_timeout;
  gint64 timeout;
  char *default_explanation;
} SpfConfig;

#define SPF_ACTION_HELP " reject refuses MAIL FROM (5xx), defer answers 4xx so the sender retries, tag " \
                        "accepts and records the result in the Received-SPF header."

static const PbSetting spf_settings[] = {
  PB_SETTING_ADDRESS_LIST (SpfConfig, trusted_networks, "trusted-networks", "",
                           "Clients never checked (your own networks, backup MX, webmail): addresses, "
                           "prefixes or wildcards. Empty checks every client that has not authenticated."),
  PB_SETTING_BOOL (SpfConfig, check_helo, "check-helo", "false",
                   "Also check the HELO/EHLO name first (RFC 7208 §2.3); when its result's action is reject or "
                   "defer, that answers MAIL FROM, otherwise the MAIL FROM check decides."),
  PB_SETTING_ENUM (SpfConfig, on_fail, "on-fail", "reject", spf_action_words,
                   "What a fail result does (550 5.7.23 with the domain's explanation, RFC 7372)." SPF_ACTION_HELP),
  PB_SETTING_ENUM (SpfConfig, on_softfail, "on-softfail", "tag", spf_action_words,
                   "What a softfail result does." SPF_ACTION_HELP),
  PB_SETTING_ENUM (SpfConfig, on_neutral, "on-neutral", "tag", spf_action_words,
                   "What a neutral result does." SPF_ACTION_HELP),
  PB_SETTING_ENUM (SpfConfig, on_none, "on-none", "tag", spf_action_words,
                   "What a none result (no SPF record) does." SPF_ACTION_HELP),
  PB_SETTING_ENUM (SpfConfig, on_temperror, "on-temperror", "defer", spf_action_words,
                   "What a temperror result (DNS failure or timeout) does; defer answers 451 4.7.24."
                   SPF_ACTION_HELP),
  PB_SETTING_ENUM (SpfConfig, on_permerror, "on-permerror", "tag", spf_action_words,
                   "What a permerror result (a broken record, too many lookups) does; reject answers "
                   "550 5.7.24." SPF_ACTION_HELP),
  PB_SETTING_INT (SpfConfig, max_void_lookups, "max-void-lookups", "2", 0, 10,
                  "DNS lookups of a check that may find nothing (NXDOMAIN or no records) before the result is "
                  "permerror (RFC 7208 §4.6.4 recommends 2)."),
  PB_SETTING_DURATION (SpfConfig, lookup_timeout, "lookup-timeout", "5s", 100, 60000,
                       "One DNS question unanswered for this long makes the result temperror."),
  PB_SETTING_DURATION (SpfConfig, timeout, "timeout", "20s", 1000, 300000,
                       "A whole check taking longer is temperror. Keep it below core.hook-timeout."),
  PB_SETTING_STRING (SpfConfig, default_explanation, "default-explanation",
                     "%{d} does not designate %{c} as a permitted sender of %{s}",
                     "The explanation of a fail when the domain's record has no exp= (a macro string, "
                     "RFC 7208 §7; %{c}, %{r} and %{t} allowed). Empty: none."),
  PB_SETTINGS_END
};

static gboolean
spf_config_check (const void *config, GError **error)
{
  const SpfConfig *c = config;
  g_autofree char *checked = spf_macro_expand (c->default_explanation, NULL, SPF_MACRO_EXPLAIN, error);

  if (checked == NULL)
    {
      g_prefix_error (error, "default-explanation: ");
      return FALSE;
    }
  return TRUE;
}

typedef struct {
  PbModule *module;
  const SpfConfig *config;
  GPtrArray *trusted;          /* GInetAddressMask * */
} Spf;

/* One identity's result, kept on the session from mail-from to data-end. */
typedef struct {
  SpfResult result;
  char *identity;              /* "mailfrom" or "helo" */
  char *sender;
  char *mechanism;
  char *problem;
  char *explanation;
} SpfIdentityResult;

typedef struct {
  char *mail_from;             /* the transaction it belongs to */
  char *helo;
  char *client_ip;
  SpfIdentityResult main;
  gboolean helo_checked;       /* check-helo, and HELO is not already the main identity */
  SpfIdentityResult helo_result;
} SpfTxnResult;

static void
identity_result_clear (SpfIdentityResult *r)
{
  g_free (r->identity);
  g_free (r->sender);
  g_free (r->mechanism);
  g_free (r->problem);
  g_free (r->explanation);
  memset (r, 0, sizeof *r);
}

static void
identity_result_set (SpfIdentityResult *r, const char *identity, const char *sender, const SpfOutcome *o)
{
  identity_result_clear (r);
  r->result = o->result;
  r->identity = g_strdup (identity);
  r->sender = g_strdup (sender);
  r->mechanism = g_strdup (o->mechanism);
  r->problem = g_strdup (o->problem);
  r->explanation = g_strdup (o->explanation);
}

static void
txn_result_free (gpointer p)
{
  SpfTxnResult *t = p;

  identity_result_clear (&t->main);
  identity_result_clear (&t->helo_result);
  g_free (t->mail_from);
  g_free (t->helo);
  g_free (t->client_ip);
  g_free (t);
}

static void
header_info (const SpfTxnResult *t, const SpfIdentityResult *r, const char *receiver, SpfHeaderInfo *info)
{
  info->result = r->result;
  info->receiver = receiver;
  info->client_ip = t->client_ip;
  info->envelope_from = t->mail_from;
  info->helo = t->helo;
  info->identity = r->identity;
  info->sender = r->sender;
  info->mechanism = r->mechanism;
  info->problem = r->problem;
}

static SpfAction
action_for (const SpfConfig *c, SpfResult result)
{
  switch (result)
    {
    case SPF_RESULT_FAIL: return c->on_fail;
    case SPF_RESULT_SOFTFAIL: return c->on_softfail;
    case SPF_RESULT_NEUTRAL: return c->on_neutral;
    case SPF_RESULT_NONE: return c->on_none;
    case SPF_RESULT_TEMPERROR: return c->on_temperror;
    case SPF_RESULT_PERMERROR: return c->on_permerror;
    default: return SPF_ACTION_TAG;
    }
}

static void
spf_params (Spf *spf, GInetAddress *ip, const char *sender, const char *helo, SpfCheckParams *p)
{
  memset (p, 0, sizeof *p);
  p->ip = ip;
  p->sender = sender;
  p->helo = helo;
  p->receiver = pb_module_get_hostname (spf->module);
  p->default_explanation = spf->config->default_explanation;
  p->max_void_lookups = (guint) spf->config->max_void_lookups;
  p->lookup_timeout_ms = spf->config->lookup_timeout;
  p->timeout_ms = spf->config->timeout;
}

/* ---- mail-from -------------------------------------------------------------------- */

typedef struct {
  Spf *spf;
  PbPolicyRequest *req;
  PbSession *session;
  GInetAddress *ip;
  SpfTxnResult *txn;
  char *mail_sender;           /* the MAIL FROM identity, or postmaster@HELO */
  gboolean helo_phase;
} SpfCheck;

static void
check_free (SpfCheck *check)
{
  pb_policy_request_unref (check->req);
  pb_session_unref (check->session);
  g_object_unref (check->ip);
  if (check->txn != NULL)
    txn_result_free (check->txn);
  g_free (check->mail_sender);
  g_free (check);
}

static void check_done (const SpfOutcome *outcome, gpointer user_data);

/* Answers MAIL FROM for a result whose action is reject or defer; FALSE for tag. */
static gboolean
check_refuse (SpfCheck *check, const SpfIdentityResult *r)
{
  SpfAction action = action_for (check->spf->config, r->result);
  gboolean error = r->result == SPF_RESULT_TEMPERROR || r->result == SPF_RESULT_PERMERROR;
  SpfHeaderInfo info;
  g_autofree char *text = NULL;

  if (action == SPF_ACTION_TAG)
    return FALSE;
  header_info (check->txn, r, pb_module_get_hostname (check->spf->module), &info);
  text = spf_reply_text (&info, r->explanation);
  /* RFC 7372 §3.2: X.7.23 "SPF validation failed", X.7.24 "SPF validation error". */
  if (action == SPF_ACTION_REJECT)
    pb_policy_complete (check->req, PB_VERDICT_REJECT, 550, error ? "5.7.24" : "5.7.23", text);
  else
    pb_policy_complete (check->req, PB_VERDICT_TEMPFAIL, 451, error ? "4.7.24" : "4.7.23", text);
  return TRUE;
}

static void
check_start_mail (SpfCheck *check)
{
  SpfCheckParams params;

  check->helo_phase = FALSE;
  spf_params (check->spf, check->ip, check->mail_sender, check->txn->helo, &params);
  spf_check_host_start (pb_module_get_resolver (check->spf->module), &params,
                        pb_policy_request_get_cancellable (check->req), check_done, check);
}

static void
check_done (const SpfOutcome *outcome, gpointer user_data)
{
  SpfCheck *check = user_data;
  SpfTxnResult *txn = check->txn;
  SpfIdentityResult *r = check->helo_phase ? &txn->helo_result : &txn->main;
  const char *identity = check->helo_phase || txn->mail_from[0] == '\0' ? "helo" : "mailfrom";
  g_autofree char *helo_sender = check->helo_phase ? g_strconcat ("postmaster@", txn->helo, NULL) : NULL;

  if (g_cancellable_is_cancelled (pb_policy_request_get_cancellable (check->req)))
    {
      /* The client left or the stage timed out: the answer is ignored, but owed. */
      pb_session_debug (check->session, "SPF check of %s abandoned: %s", check->mail_sender,
                        outcome->problem != NULL ? outcome->problem : "cancelled");
      pb_policy_continue (check->req);
      check_free (check);
      return;
    }
  identity_result_set (r, identity, check->helo_phase ? helo_sender : check->mail_sender, outcome);
  pb_session_info (check->session, "SPF %s for %s identity %s from %s%s%s%s%s (%u DNS terms)",
                   spf_result_to_string (outcome->result), identity, r->sender, txn->client_ip,
                   outcome->mechanism != NULL ? ", matched " : "", outcome->mechanism != NULL ? outcome->mechanism : "",
                   outcome->problem != NULL ? ": " : "", outcome->problem != NULL ? outcome->problem : "",
                   outcome->dns_terms);
  if (check_refuse (check, r))
    {
      check_free (check);
      return;
    }
  if (check->helo_phase)
    {
      txn->helo_checked = TRUE;
      check_start_mail (check);
      return;
    }
  pb_session_set_data (check->session, check->spf->module, g_steal_pointer (&check->txn), txn_result_free);
  pb_policy_continue (check->req);
  check_free (check);
}

static gboolean
spf_is_trusted (Spf *spf, GInetAddress *ip)
{
  for (guint i = 0; i < spf->trusted->len; i++)
    if (g_inet_address_mask_matches (g_ptr_array_index (spf->trusted, i), ip))
      return TRUE;
  return FALSE;
}

static void
spf_mail_from_hook (PbPolicyRequest *req, gpointer user_data)
{
  Spf *spf = user_data;
  PbSession *session = pb_policy_request_get_session (req);
  const char *mail_from = pb_policy_request_get_field (req, "mail-from");
  const char *helo = pb_policy_request_get_field (req, "helo");
  g_autoptr (GInetAddress) parsed = NULL;
  SpfCheck *check;

  if (session == NULL)
    {
      pb_policy_continue (req);
      return;
    }
  /* Whatever happens next, an earlier transaction's result must not be reported for this one. */
  pb_session_set_data (session, spf->module, NULL, NULL);
  parsed = g_inet_address_new_from_string (pb_session_get_peer_ip (session));
  if (pb_policy_request_get_field (req, "auth-user") != NULL || parsed == NULL)
    {
      pb_policy_continue (req);
      return;
    }
  check = g_new0 (SpfCheck, 1);
  check->ip = spf_address_normalize (parsed);
  if (spf_is_trusted (spf, check->ip))
    {
      pb_session_debug (session, "SPF not checked: %s is in trusted-networks", pb_session_get_peer_ip (session));
      g_object_unref (check->ip);
      g_free (check);
      pb_policy_continue (req);
      return;
    }
  check->spf = spf;
  check->req = pb_policy_request_ref (req);
  check->session = pb_session_ref (session);
  check->txn = g_new0 (SpfTxnResult, 1);
  check->txn->mail_from = g_strdup (mail_from != NULL ? mail_from : "");
  check->txn->helo = g_strdup (helo);
  check->txn->client_ip = g_inet_address_to_string (check->ip);
  check->mail_sender = spf_sender_for (check->txn->mail_from, helo);

  /* With a null sender the MAIL FROM check already is the HELO check. */
  if (spf->config->check_helo && helo != NULL && check->txn->mail_from[0] != '\0')
    {
      g_autofree char *helo_sender = g_strconcat ("postmaster@", helo, NULL);
      SpfCheckParams params;
      check->helo_phase = TRUE;
      spf_params (spf, check->ip, helo_sender, helo, &params);
      spf_check_host_start (pb_module_get_resolver (spf->module), &params, pb_policy_request_get_cancellable (req),
                            check_done, check);
      return;
    }
  check_start_mail (check);
}

/* ---- data-end ----------------------------------------------------------------------- */

static void
spf_data_end_hook (PbPolicyRequest *req, gpointer user_data)
{
  Spf *spf = user_data;
  PbSession *session = pb_policy_request_get_session (req);
  SpfTxnResult *t;
  const char *receiver = pb_module_get_hostname (spf->module);

  /* Mail collected from a remote mailbox has no session, and no SMTP client to judge. */
  if (session == NULL || (t = pb_session_get_data (session, spf->module)) == NULL)
    {
      pb_policy_continue (req);
      return;
    }
  if (g_strcmp0 (t->mail_from, pb_policy_request_get_field (req, "mail-from")) == 0)
    {
      SpfHeaderInfo info, helo_info;
      g_autofree char *received = NULL;
      g_autofree char *results = NULL;

      header_info (t, &t->main, receiver, &info);
      if (t->helo_checked)
        header_info (t, &t->helo_result, receiver, &helo_info);
      received = spf_received_spf_value (&info);
      results = spf_authentication_results_value (&info, t->helo_checked ? &helo_info : NULL);
      pb_policy_request_add_header (req, "Received-SPF", received);
      pb_policy_request_add_header (req, "Authentication-Results", results);
    }
  pb_session_set_data (session, spf->module, NULL, NULL);
  pb_policy_continue (req);
}

/* ---- spf-check ------------------------------------------------------------------------ */

#define SPF_CHECK_USAGE "spf-check --ip ADDRESS (--mail-from ADDRESS | --helo NAME) [--helo NAME] " \
                        "[--dns HOST:PORT] [--timeout SECONDS]"

typedef struct {
  PbControlRequest *req;
  PbResolver *resolver;
  char *sender;
  char *identity;
} SpfCommand;

static void
command_done (const SpfOutcome *o, gpointer user_data)
{
  SpfCommand *cmd = user_data;
  GVariantDict dict;
  GString *text = g_string_new (spf_result_to_string (o->result));
  const char *second = o->explanation != NULL ? o->explanation : o->problem;

  g_variant_dict_init (&dict, NULL);
  g_variant_dict_insert (&dict, "result", "s", spf_result_to_string (o->result));
  g_variant_dict_insert (&dict, "identity", "s", cmd->identity);
  g_variant_dict_insert (&dict, "sender", "s", cmd->sender);
  g_variant_dict_insert (&dict, "domain", "s", o->domain);
  if (o->explanation != NULL)
    g_variant_dict_insert (&dict, "explanation", "s", o->explanation);
  if (o->mechanism != NULL)
    g_variant_dict_insert (&dict, "mechanism", "s", o->mechanism);
  if (o->problem != NULL)
    g_variant_dict_insert (&dict, "problem", "s", o->problem);
  g_variant_dict_insert (&dict, "lookups", "u", o->dns_terms);
  g_variant_dict_insert (&dict, "void-lookups", "u", o->void_lookups);
  /* Line 1 the result, line 2 the explanation (fail) or the problem (errors). */
  if (second != NULL)
    g_string_append_printf (text, "\n%s", second);
  pb_control_request_reply (cmd->req, g_variant_dict_end (&dict), text->str);
  g_string_free (text, TRUE);
  pb_control_request_unref (cmd->req);
  pb_resolver_unref (cmd->resolver);
  g_free (cmd->sender);
  g_free (cmd->identity);
  g_free (cmd);
}

static void
spf_command (PbControlRequest *req, gpointer user_data)
{
  Spf *spf = user_data;
  const char *const *args = pb_control_request_get_args (req);
  const char *ip_text = NULL, *mail_from = NULL, *helo = NULL, *dns = NULL, *timeout = NULL;
  g_autoptr (GInetAddress) parsed = NULL;
  g_autoptr (GInetAddress) ip = NULL;
  g_autoptr (GError) error = NULL;
  SpfCheckParams params;
  SpfCommand *cmd;
  PbResolver *resolver;
  gint64 timeout_ms = 0;

  for (guint i = 0; args[i] != NULL; i++)
    {
      static const char *const options[] = { "--ip", "--mail-from", "--helo", "--dns", "--timeout" };
      const char **slots[] = { &ip_text, &mail_from, &helo, &dns, &timeout };
      const char *arg = args[i];
      const char *value = NULL;
      guint k;

      for (k = 0; k < G_N_ELEMENTS (options); k++)
        {
          gsize n = strlen (options[k]);
          if (strcmp (arg, options[k]) == 0)
            {
              if (args[i + 1] == NULL)
                {
                  pb_control_request_fail (req, "spf-check: %s needs a value; usage: %s", arg, SPF_CHECK_USAGE);
                  return;
                }
              value = args[++i];
              break;
            }
          if (strncmp (arg, options[k], n) == 0 && arg[n] == '=')
            {
              value = arg + n + 1;
              break;
            }
        }
      if (k == G_N_ELEMENTS (options))
        {
          pb_control_request_fail (req, "spf-check: unknown argument '%s'; usage: %s", arg, SPF_CHECK_USAGE);
          return;
        }
      *slots[k] = value;
    }
  if (ip_text == NULL || (mail_from == NULL && helo == NULL))
    {
      pb_control_request_fail (req, "spf-check: %s; usage: %s",
                               ip_text == NULL ? "--ip is required" : "--mail-from or --helo is required",
                               SPF_CHECK_USAGE);
      return;
    }
  parsed = g_inet_address_new_from_string (ip_text);
  if (parsed == NULL)
    {
      pb_control_request_fail (req, "spf-check: --ip: '%s' is not an IPv4 or IPv6 address", ip_text);
      return;
    }
  ip = spf_address_normalize (parsed);
  if (timeout != NULL)
    {
      char *end = NULL;
      gint64 s = g_ascii_strtoll (timeout, &end, 10);
      if (*timeout == '\0' || *end != '\0' || s < 1 || s > 300)
        {
          pb_control_request_fail (req, "spf-check: --timeout: '%s' is not a number of seconds from 1 to 300",
                                   timeout);
          return;
        }
      timeout_ms = s * 1000;
    }
  if (dns != NULL)
    {
      resolver = pb_resolver_new (dns, &error);
      if (resolver == NULL)
        {
          pb_control_request_fail (req, "spf-check: --dns: %s", error->message);
          return;
        }
    }
  else
    resolver = pb_resolver_ref (pb_module_get_resolver (spf->module));

  cmd = g_new0 (SpfCommand, 1);
  cmd->req = pb_control_request_ref (req);
  cmd->resolver = resolver;
  cmd->sender = spf_sender_for (mail_from, helo);
  cmd->identity = g_strdup (mail_from != NULL && *mail_from != '\0' ? "mailfrom" : "helo");
  spf_params (spf, ip, cmd->sender, helo, &params);
  if (timeout_ms > 0)
    {
      params.timeout_ms = timeout_ms;
      params.lookup_timeout_ms = MIN (params.lookup_timeout_ms, timeout_ms);
    }
  spf_check_host_start (resolver, &params, NULL, command_done, cmd);
}

/* ---- life cycle ----------------------------------------------------------------------- */

static void
spf_free (gpointer p)
{
  Spf *spf = p;

  g_ptr_array_unref (spf->trusted);
  g_free (spf);
}

static gboolean
spf_init (PbModule *module, const void *config, GError **error)
{
  const SpfConfig *c = config;
  Spf *spf = g_new0 (Spf, 1);
  PbHookSpec mail_hook = {
    .struct_size = sizeof mail_hook,
    .stage = PB_STAGE_MAIL_FROM,
    /* DNS is costly: after the cheap checks (blocks, rate caps). */
    .priority = 50,
    .func = spf_mail_from_hook,
    .user_data = spf,
  };
  PbHookSpec data_hook = {
    .struct_size = sizeof data_hook,
    .stage = PB_STAGE_DATA_END,
    .func = spf_data_end_hook,
    .user_data = spf,
  };
  PbControlCommandSpec command = {
    .struct_size = sizeof command,
    .name = "spf-check",
    .summary = "Evaluate SPF (RFC 7208) for a client address and sender, as the mail-from check would",
    .usage = SPF_CHECK_USAGE,
    .func = spf_command,
    .user_data = spf,
  };

  spf->module = module;
  spf->config = c;
  spf->trusted = g_ptr_array_new_with_free_func (g_object_unref);
  pb_module_set_data (module, spf, spf_free);
  for (guint i = 0; c->trusted_networks[i] != NULL; i++)
    {
      GInetAddressMask *mask = g_inet_address_mask_new_from_string (c->trusted_networks[i], error);
      if (mask == NULL)
        {
          g_prefix_error (error, "trusted-networks: ");
          return FALSE;
        }
      g_ptr_array_add (spf->trusted, mask);
    }
  return pb_module_add_hook (module, &mail_hook, error) && pb_module_add_hook (module, &data_hook, error)
         && pb_module_add_command (module, &command, error);
}

PB_MODULE_DEFINE (
  .name = "spf",
  .version = PACKAGE_VERSION,
  .summary = "Sender Policy Framework checks of MAIL FROM and HELO (RFC 7208)",
  .init = spf_init,
  .settings = spf_settings,
  .config_size = sizeof (SpfConfig),
  .check = spf_config_check);
