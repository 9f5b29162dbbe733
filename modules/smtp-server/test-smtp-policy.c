/* SPDX-License-Identifier: MIT */
/* Test fixture module: a policy that answers every smtp-server stage later, steered by words in the fields. */
#include <pillarbox/pillarbox.h>

#include <string.h>

/*
 * Hooks helo, auth, mail-from, rcpt-to, data-start, data-end and queued,
 * and always answers from a timeout (asynchronous completion). What it
 * answers depends on the stage's main field (helo, auth-user, mail-from,
 * rcpt): a value containing "reject-STAGE" is refused (550 5.7.1),
 * "tempfail-STAGE" deferred (450 4.7.1), "disconnect-STAGE" ends the
 * session, "hang-STAGE" never answered (the core's hook-timeout must
 * answer 451). data-start and data-end look at mail-from. At data-end it
 * adds "X-Policy-Stages:" listing the stages seen in the session, in order.
 */

typedef struct {
  gint64 delay;
} FxConfig;

static const PbSetting fx_settings[] = {
  PB_SETTING_DURATION (FxConfig, delay, "delay", "5ms", 0, 60000, "Answer after this long."),
  PB_SETTINGS_END
};

typedef struct {
  PbModule *module;
  const FxConfig *config;
} Fx;

typedef struct {
  PbPolicyRequest *req;
  PbVerdictKind kind;
  char *text;
} Pending;

static gboolean
fx_later (gpointer data)
{
  Pending *p = data;

  switch (p->kind)
    {
    case PB_VERDICT_REJECT:
      pb_policy_complete (p->req, p->kind, 550, "5.7.1", p->text);
      break;
    case PB_VERDICT_TEMPFAIL:
      pb_policy_complete (p->req, p->kind, 450, "4.7.1", p->text);
      break;
    case PB_VERDICT_DISCONNECT:
      pb_policy_complete (p->req, p->kind, 421, "4.7.0", p->text);
      break;
    default:
      pb_policy_continue (p->req);
      break;
    }
  pb_policy_request_unref (p->req);
  g_free (p->text);
  g_free (p);
  return G_SOURCE_REMOVE;
}

static void
seen_free (gpointer data)
{
  g_string_free (data, TRUE);
}

static void
fx_hook (PbPolicyRequest *req, gpointer user_data)
{
  Fx *fx = user_data;
  PbStage stage = pb_policy_request_get_stage (req);
  const char *name = pb_stage_to_string (stage);
  PbSession *session = pb_policy_request_get_session (req);
  const char *field;
  g_autofree char *reject = g_strdup_printf ("reject-%s", name);
  g_autofree char *tempfail = g_strdup_printf ("tempfail-%s", name);
  g_autofree char *disconnect = g_strdup_printf ("disconnect-%s", name);
  g_autofree char *hang = g_strdup_printf ("hang-%s", name);
  Pending *p;

  switch (stage)
    {
    case PB_STAGE_HELO: field = pb_policy_request_get_field (req, "helo"); break;
    case PB_STAGE_AUTH: field = pb_policy_request_get_field (req, "auth-user"); break;
    case PB_STAGE_RCPT_TO: field = pb_policy_request_get_field (req, "rcpt"); break;
    default: field = pb_policy_request_get_field (req, "mail-from"); break;
    }
  if (field == NULL)
    field = "";

  if (session != NULL)
    {
      GString *seen = pb_session_get_data (session, fx->module);
      if (seen == NULL)
        {
          seen = g_string_new (NULL);
          pb_session_set_data (session, fx->module, seen, seen_free);
        }
      if (stage == PB_STAGE_DATA_END)
        pb_policy_request_add_header (req, "X-Policy-Stages", seen->len > 0 ? seen->str : "(none)");
      g_string_append_printf (seen, "%s%s", seen->len > 0 ? "," : "", name);
    }

  if (strstr (field, hang) != NULL)
    return;   /* never answered: the core's hook-timeout answers */
  p = g_new0 (Pending, 1);
  p->req = pb_policy_request_ref (req);
  p->kind = strstr (field, reject) != NULL       ? PB_VERDICT_REJECT
            : strstr (field, tempfail) != NULL   ? PB_VERDICT_TEMPFAIL
            : strstr (field, disconnect) != NULL ? PB_VERDICT_DISCONNECT
                                                 : PB_VERDICT_CONTINUE;
  p->text = g_strdup_printf ("policy fixture says no at %s", name);
  g_timeout_add ((guint) fx->config->delay, fx_later, p);
}

static void
fx_free (gpointer data)
{
  g_free (data);
}

static gboolean
fx_init (PbModule *module, const void *config, GError **error)
{
  static const PbStage stages[] = { PB_STAGE_HELO, PB_STAGE_AUTH, PB_STAGE_MAIL_FROM, PB_STAGE_RCPT_TO,
                                    PB_STAGE_DATA_START, PB_STAGE_DATA_END, PB_STAGE_QUEUED };
  Fx *fx = g_new0 (Fx, 1);

  fx->module = module;
  fx->config = config;
  pb_module_set_data (module, fx, fx_free);
  for (guint i = 0; i < G_N_ELEMENTS (stages); i++)
    {
      PbHookSpec spec = { sizeof spec, stages[i], 0, NULL, NULL, fx_hook, fx };
      if (!pb_module_add_hook (module, &spec, error))
        return FALSE;
    }
  return TRUE;
}

PB_MODULE_DEFINE (
  .name = "smtp-test-policy",
  .version = "1",
  .summary = "smtp-server test fixture: asynchronous policy answers at every stage",
  .init = fx_init,
  .settings = fx_settings,
  .config_size = sizeof (FxConfig));
