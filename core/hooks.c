/* SPDX-License-Identifier: MIT */
/* Policy stages: ordering hooks, running them with asynchronous completion and a deadline; events. */
#include "config.h"
#include "core-private.h"

#include <string.h>

static const char *const stage_names[PB_STAGE_LAST] = {
  "connect", "helo", "auth", "mail-from", "rcpt-to", "data-start", "data-end", "queued",
  "delivery-attempt", "delivery-result", "rcpt-address",
};

const char *
pb_stage_to_string (PbStage stage)
{
  if ((guint) stage >= PB_STAGE_LAST)
    return "unknown";
  return stage_names[stage];
}

const char *
pb_event_to_string (PbEventKind kind)
{
  switch (kind)
    {
    case PB_EVENT_AUTH_FAILED: return "auth-failed";
    case PB_EVENT_AUTH_SUCCEEDED: return "auth-succeeded";
    case PB_EVENT_UNKNOWN_RECIPIENT: return "unknown-recipient";
    case PB_EVENT_RELAY_DENIED: return "relay-denied";
    case PB_EVENT_PROTOCOL_ERROR: return "protocol-error";
    case PB_EVENT_TOO_MANY_CONNECTIONS: return "too-many-connections";
    case PB_EVENT_DISCONNECT: return "disconnect";
    case PB_EVENT_SESSION_START: return "session-start";
    case PB_EVENT_POLICY_REFUSED: return "policy-refused";
    case PB_EVENT_MESSAGE_REFUSED: return "message-refused";
    case PB_EVENT_BLOCKED: return "blocked";
    case PB_EVENT_BLOCK_STARTED: return "block-started";
    }
  return "unknown";
}

void
pb_hook_free (gpointer p)
{
  PbHook *h = p;
  g_strfreev (h->before);
  g_strfreev (h->after);
  g_free (h);
}

/* ---- ordering ---- */

/* Whether hook A must run before hook B because of a before/after name. */
static gboolean
hook_must_precede (const PbHook *a, const PbHook *b)
{
  if (a->module == b->module)
    return FALSE;
  if (a->before != NULL && g_strv_contains ((const char *const *) a->before, b->module->name))
    return TRUE;
  if (b->after != NULL && g_strv_contains ((const char *const *) b->after, a->module->name))
    return TRUE;
  return FALSE;
}

static gboolean
hook_sorts_earlier (const PbHook *a, const PbHook *b)
{
  if (a->spec.priority != b->spec.priority)
    return a->spec.priority < b->spec.priority;
  return a->order < b->order;
}

/* Kahn's algorithm; among the hooks that are free to run, priority then
 * registration order decides. O(n^2) per stage: a handful of hooks. */
static gboolean
hooks_sort_stage (GPtrArray *hooks, PbStage stage, GError **error)
{
  guint n = hooks->len;
  g_autofree guint *indegree = g_new0 (guint, n);
  g_autofree gboolean *done = g_new0 (gboolean, n);
  g_autoptr (GPtrArray) sorted = g_ptr_array_new ();

  for (guint i = 0; i < n; i++)
    for (guint j = 0; j < n; j++)
      if (i != j && hook_must_precede (g_ptr_array_index (hooks, i), g_ptr_array_index (hooks, j)))
        indegree[j]++;

  for (guint round = 0; round < n; round++)
    {
      gint pick = -1;
      for (guint i = 0; i < n; i++)
        if (!done[i] && indegree[i] == 0
            && (pick < 0 || hook_sorts_earlier (g_ptr_array_index (hooks, i), g_ptr_array_index (hooks, pick))))
          pick = (gint) i;
      if (pick < 0)
        {
          GString *names = g_string_new (NULL);
          for (guint i = 0; i < n; i++)
            if (!done[i])
              g_string_append_printf (names, "%s%s", names->len > 0 ? ", " : "",
                                      ((PbHook *) g_ptr_array_index (hooks, i))->module->name);
          g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG,
                       "the before/after constraints of the %s hooks of modules %s form a cycle",
                       pb_stage_to_string (stage), names->str);
          g_string_free (names, TRUE);
          return FALSE;
        }
      done[pick] = TRUE;
      g_ptr_array_add (sorted, g_ptr_array_index (hooks, pick));
      for (guint j = 0; j < n; j++)
        if (!done[j] && hook_must_precede (g_ptr_array_index (hooks, pick), g_ptr_array_index (hooks, j)))
          indegree[j]--;
    }
  for (guint i = 0; i < n; i++)
    hooks->pdata[i] = g_ptr_array_index (sorted, i);
  return TRUE;
}

gboolean
pb_hooks_sort (PbGeneration *gen, GError **error)
{
  for (guint s = 0; s < PB_STAGE_LAST; s++)
    if (!hooks_sort_stage (gen->hooks[s], (PbStage) s, error))
      return FALSE;
  return TRUE;
}

gboolean
pb_stage_has_hooks (PbModule *module, PbStage stage)
{
  g_return_val_if_fail (module != NULL && (guint) stage < PB_STAGE_LAST, FALSE);
  return module->gen->hooks[stage]->len > 0;
}

/* ---- requests ---- */

struct _PbPolicyRequest {
  gint ref;
  PbStage stage;
  PbSession *session;         /* a reference, or NULL */
  PbGeneration *gen;          /* a reference */
  GHashTable *fields;         /* char * -> char * */
  GPtrArray *headers;         /* char *, NULL-terminated */
  GCancellable *cancellable;
  gulong session_cancel_id;
  PbPolicyDoneFunc done;
  gpointer done_data;
  guint next;                 /* index of the next hook to call */
  PbHook *current;            /* the hook whose answer is awaited */
  gboolean awaiting;
  gboolean in_call;
  gboolean running;
  gboolean finished;
  gboolean session_ended;     /* finished because the client left, not by a verdict */
  GSource *timeout;
  PbVerdictKind kind;
  guint code;
  char *enhanced;
  char *text;
  const char *answered_by;
};

PbPolicyRequest *
pb_policy_request_new (PbSession *session, PbStage stage)
{
  PbPolicyRequest *req;
  PbGeneration *gen;

  g_return_val_if_fail ((guint) stage < PB_STAGE_LAST, NULL);
  gen = session != NULL ? pb_session_get_generation (session) : pb_generation_get_current ();
  g_return_val_if_fail (gen != NULL, NULL);

  req = g_new0 (PbPolicyRequest, 1);
  req->ref = 1;
  req->stage = stage;
  req->session = session != NULL ? pb_session_ref (session) : NULL;
  req->gen = pb_generation_ref (gen);
  req->fields = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  req->headers = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (req->headers, NULL);
  req->cancellable = g_cancellable_new ();
  return req;
}

PbPolicyRequest *
pb_policy_request_ref (PbPolicyRequest *request)
{
  g_return_val_if_fail (request != NULL, NULL);
  request->ref++;
  return request;
}

void
pb_policy_request_unref (PbPolicyRequest *request)
{
  if (request == NULL || --request->ref > 0)
    return;
  pb_source_clear (&request->timeout);
  if (request->session_cancel_id != 0)
    g_cancellable_disconnect (request->session->cancellable, request->session_cancel_id);
  g_object_unref (request->cancellable);
  g_hash_table_unref (request->fields);
  g_ptr_array_unref (request->headers);
  g_free (request->enhanced);
  g_free (request->text);
  if (request->session != NULL)
    pb_session_unref (request->session);
  pb_generation_unref (request->gen);
  g_free (request);
}

PbStage
pb_policy_request_get_stage (PbPolicyRequest *request)
{
  g_return_val_if_fail (request != NULL, PB_STAGE_LAST);
  return request->stage;
}

PbSession *
pb_policy_request_get_session (PbPolicyRequest *request)
{
  g_return_val_if_fail (request != NULL, NULL);
  return request->session;
}

const char *
pb_policy_request_get_field (PbPolicyRequest *request, const char *name)
{
  g_return_val_if_fail (request != NULL && name != NULL, NULL);
  return g_hash_table_lookup (request->fields, name);
}

/* The fields a handler may change while its stage runs (pb-hooks.h): the
 * envelope address that stage exists to rewrite, and nothing else. */
static gboolean
field_is_writable (PbStage stage, const char *name)
{
  switch (stage)
    {
    case PB_STAGE_DELIVERY_ATTEMPT: return strcmp (name, "mail-from") == 0;
    case PB_STAGE_RCPT_ADDRESS: return strcmp (name, "rcpt") == 0;
    default: return FALSE;
    }
}

void
pb_policy_request_set_field (PbPolicyRequest *request, const char *name, const char *value)
{
  g_return_if_fail (request != NULL && name != NULL);
  if (request->running && !field_is_writable (request->stage, name))
    {
      g_critical ("module %s may not change field '%s' at stage %s",
                  request->current != NULL ? request->current->module->name : "?", name,
                  pb_stage_to_string (request->stage));
      return;
    }
  if (value == NULL)
    g_hash_table_remove (request->fields, name);
  else
    g_hash_table_replace (request->fields, g_strdup (name), g_strdup (value));
}

void
pb_policy_request_add_header (PbPolicyRequest *request, const char *name, const char *value)
{
  g_return_if_fail (request != NULL && name != NULL && value != NULL);
  g_return_if_fail (request->stage == PB_STAGE_DATA_END);
  /* Header values reach the message verbatim: no line breaks smuggled in. */
  g_return_if_fail (strpbrk (name, "\r\n: ") == NULL && strpbrk (value, "\r\n") == NULL);
  request->headers->pdata[request->headers->len - 1] = g_strdup_printf ("%s: %s", name, value);
  g_ptr_array_add (request->headers, NULL);
}

const char *const *
pb_policy_request_get_headers (PbPolicyRequest *request)
{
  g_return_val_if_fail (request != NULL, NULL);
  return (const char *const *) request->headers->pdata;
}

GCancellable *
pb_policy_request_get_cancellable (PbPolicyRequest *request)
{
  g_return_val_if_fail (request != NULL, NULL);
  return request->cancellable;
}

/* Counting modules (metrics, IDS) learn of every policy refusal here, once,
 * whichever module answered; before the asker's callback, so the event
 * precedes whatever the protocol does next (a 421 closes the session). A
 * session already ended (its client left mid-stage) is past its
 * disconnect event and reports nothing more. */
static void
request_report_refusal (PbPolicyRequest *req)
{
  char detail[128];
  char code[8];

  if (req->session->ended)
    return;
  if (req->code != 0)
    g_snprintf (code, sizeof code, "%u", req->code);
  else
    g_strlcpy (code, req->kind == PB_VERDICT_REJECT ? "5xx" : "4xx", sizeof code);
  g_snprintf (detail, sizeof detail, "%s %s %s", pb_stage_to_string (req->stage), code,
              req->answered_by != NULL ? req->answered_by : "core");
  pb_session_report_event (req->session, PB_EVENT_POLICY_REFUSED, detail);
}

static void
request_finish (PbPolicyRequest *req)
{
  PbVerdict verdict = { 0 };

  if (req->finished)
    return;
  req->finished = TRUE;
  req->running = FALSE;
  req->current = NULL;
  pb_source_clear (&req->timeout);

  verdict.struct_size = sizeof verdict;
  verdict.kind = req->kind;
  verdict.code = req->code;
  verdict.enhanced = req->enhanced;
  verdict.text = req->text;
  verdict.module = req->answered_by;
  /* A stage cut short because the client left is no policy decision: the
   * mail it was about may well be stored and acknowledged already. */
  if (req->session_ended)
    pb_log_session ("pillarbox", G_LOG_LEVEL_DEBUG, req->session, NULL, "%s: not finished, the session ended",
                    pb_stage_to_string (req->stage));
  else if (req->kind != PB_VERDICT_CONTINUE && req->kind != PB_VERDICT_ACCEPT && req->session != NULL)
    pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, req->session, NULL, "%s: %s by %s: %u %s %s",
                    pb_stage_to_string (req->stage),
                    req->kind == PB_VERDICT_REJECT ? "rejected" : "deferred",
                    req->answered_by != NULL ? req->answered_by : "core", req->code,
                    req->enhanced != NULL ? req->enhanced : "", req->text != NULL ? req->text : "");
  if (req->kind != PB_VERDICT_CONTINUE && req->kind != PB_VERDICT_ACCEPT && req->session != NULL)
    request_report_refusal (req);
  if (req->done != NULL)
    req->done (req, &verdict, req->done_data);
  pb_policy_request_unref (req);  /* the reference taken by run() */
}

static void
request_set_verdict (PbPolicyRequest *req, PbVerdictKind kind, guint code, const char *enhanced,
                     const char *text, const char *who)
{
  req->kind = kind;
  req->code = code;
  g_free (req->enhanced);
  req->enhanced = g_strdup (enhanced);
  g_free (req->text);
  req->text = g_strdup (text);
  req->answered_by = who;
}

/* Calls hooks in order until one answers something other than CONTINUE or
 * one defers. Iterative, so synchronous answers never deepen the stack. */
static void
request_advance (PbPolicyRequest *req)
{
  GPtrArray *hooks = req->gen->hooks[req->stage];

  while (req->next < hooks->len)
    {
      PbHook *hook = g_ptr_array_index (hooks, req->next++);

      req->current = hook;
      req->awaiting = TRUE;
      req->in_call = TRUE;
      hook->spec.func (req, hook->spec.user_data);
      req->in_call = FALSE;
      if (req->finished)
        return;  /* timed out or cancelled while the handler ran */
      if (req->awaiting)
        return;  /* deferred: pb_policy_complete() resumes */
      if (req->kind != PB_VERDICT_CONTINUE)
        break;
    }
  /* QUEUED and DELIVERY_RESULT are notifications: verdicts do not change anything. */
  if (req->stage == PB_STAGE_QUEUED || req->stage == PB_STAGE_DELIVERY_RESULT)
    request_set_verdict (req, PB_VERDICT_CONTINUE, 0, NULL, NULL, NULL);
  request_finish (req);
}

void
pb_policy_complete (PbPolicyRequest *request, PbVerdictKind kind, guint code, const char *enhanced,
                    const char *text)
{
  g_return_if_fail (request != NULL);

  if (request->finished && !request->awaiting)
    return;  /* the stage timed out or the session ended: a late answer is dropped */
  if (!request->awaiting)
    {
      g_critical ("policy request at stage %s completed twice", pb_stage_to_string (request->stage));
      return;
    }
  request->awaiting = FALSE;
  if (request->finished)
    return;
  if ((guint) kind > PB_VERDICT_DISCONNECT)
    {
      g_critical ("module %s answered an unknown verdict %d", request->current->module->name, (int) kind);
      kind = PB_VERDICT_TEMPFAIL;
      code = 451;
      enhanced = "4.3.0";
      text = "Temporary policy failure";
    }
  request_set_verdict (request, kind, code, enhanced, text,
                       request->current != NULL ? request->current->module->name : NULL);
  if (request->in_call)
    return;  /* request_advance() continues when the handler returns */
  if (kind == PB_VERDICT_CONTINUE)
    request_advance (request);
  else
    request_finish (request);
}

void
pb_policy_continue (PbPolicyRequest *request)
{
  pb_policy_complete (request, PB_VERDICT_CONTINUE, 0, NULL, NULL);
}

static void
request_fail_temporarily (PbPolicyRequest *req, const char *why)
{
  if (req->finished)
    return;
  if (req->current != NULL)
    g_warning ("policy stage %s: module %s %s", pb_stage_to_string (req->stage),
               req->current->module->name, why);
  g_cancellable_cancel (req->cancellable);
  request_set_verdict (req, PB_VERDICT_TEMPFAIL, 451, "4.3.0",
                       "Temporary policy failure, please try again later", "core");
  request_finish (req);
}

static gboolean
request_timed_out (gpointer data)
{
  PbPolicyRequest *req = data;

  /* Returning G_SOURCE_REMOVE destroys it; the kept reference goes here. */
  g_clear_pointer (&req->timeout, g_source_unref);
  request_fail_temporarily (req, "did not answer in time (core.hook-timeout)");
  return G_SOURCE_REMOVE;
}

static gboolean
request_end_for_session (gpointer data)
{
  PbPolicyRequest *req = data;

  if (!req->finished)
    {
      req->session_ended = TRUE;
      request_set_verdict (req, PB_VERDICT_TEMPFAIL, 451, "4.3.0", "Session ended", "core");
      request_finish (req);
    }
  return G_SOURCE_REMOVE;
}

static void
request_session_ended (GCancellable *session_cancellable, gpointer data)
{
  PbPolicyRequest *req = data;

  /* Runs inside g_cancellable_cancel() while the session is torn down: tell
   * the handler now, answer the asker from an idle so nobody is re-entered. */
  if (req->finished)
    return;
  g_cancellable_cancel (req->cancellable);
  pb_idle_add_full (G_PRIORITY_DEFAULT, request_end_for_session, pb_policy_request_ref (req),
                   (GDestroyNotify) pb_policy_request_unref);
}

void
pb_policy_request_run (PbPolicyRequest *request, PbPolicyDoneFunc done, gpointer user_data)
{
  g_return_if_fail (request != NULL && !request->running && !request->finished);

  request->done = done;
  request->done_data = user_data;
  request->running = TRUE;
  request->kind = PB_VERDICT_CONTINUE;
  pb_policy_request_ref (request);  /* released by request_finish() */

  if (request->gen->hooks[request->stage]->len > 0)
    {
      request->timeout = g_timeout_source_new (request->gen->core->hook_timeout);
      g_source_set_callback (request->timeout, request_timed_out, request, NULL);
      pb_source_attach (request->timeout, NULL);
      if (request->session != NULL)
        request->session_cancel_id = g_cancellable_connect (request->session->cancellable,
                                                            G_CALLBACK (request_session_ended), request, NULL);
    }
  request_advance (request);
}

/* ---- events ---- */

void
pb_session_report_event (PbSession *session, PbEventKind kind, const char *detail)
{
  GPtrArray *events;

  g_return_if_fail (session != NULL);
  events = session->gen->events;
  for (guint i = 0; i < events->len; i++)
    {
      PbEventHandler *eh = g_ptr_array_index (events, i);
      eh->func (session, kind, detail, eh->user_data);
    }
}
