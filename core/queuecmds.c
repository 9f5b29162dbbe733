/* SPDX-License-Identifier: MIT */
/* pillarbox queue list|show|delete|retry and pillarbox connect-now. */
#include "config.h"
#include "core-private.h"

#include <string.h>

typedef struct {
  PbControlRequest *req;
  PbGeneration *gen;
  char *id;
} QueueCall;

static QueueCall *
queue_call_new (PbControlRequest *req, const char *id)
{
  QueueCall *c = g_new0 (QueueCall, 1);
  c->req = pb_control_request_ref (req);
  c->gen = pb_generation_ref (pb_generation_get_current ());
  c->id = g_strdup (id);
  return c;
}

static void
queue_call_free (QueueCall *c)
{
  pb_control_request_unref (c->req);
  pb_generation_unref (c->gen);
  g_free (c->id);
  g_free (c);
}

static char *
when (gint64 unix_time)
{
  g_autoptr (GDateTime) t = unix_time > 0 ? g_date_time_new_from_unix_local (unix_time) : NULL;
  return t != NULL ? g_date_time_format (t, "%Y-%m-%d %H:%M:%S") : g_strdup ("-");
}

static gboolean
queue_failed (QueueCall *c, const GError *error)
{
  if (error == NULL)
    return FALSE;
  if (g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND))
    pb_control_request_fail (c->req, "no message %s in the queue", c->id != NULL ? c->id : "");
  else
    pb_control_request_fail (c->req, "%s", error->message);
  queue_call_free (c);
  return TRUE;
}

static void
list_done (GVariant *result, const GError *error, gpointer data)
{
  QueueCall *c = data;
  g_autoptr (GString) text = g_string_new (NULL);
  GVariantIter it;
  const char *qid, *sender, *rcpt, *state, *reply;
  gint64 size, next;
  gint64 attempts;
  guint n = 0;

  if (queue_failed (c, error))
    return;
  g_variant_iter_init (&it, result);
  while (g_variant_iter_next (&it, "(&s&s&sx&sxx&s)", &qid, &sender, &rcpt, &size, &state, &attempts, &next, &reply))
    {
      g_autofree char *t = when (next);
      if (n++ == 0)
        g_string_append_printf (text, "%-16s %-9s %8s %4s %-19s %-28s %s\n", "QUEUE ID", "STATE", "SIZE", "TRY",
                                "NEXT ATTEMPT", "SENDER", "RECIPIENT");
      g_string_append_printf (text, "%-16s %-9s %8" G_GINT64_FORMAT " %4" G_GINT64_FORMAT " %-19s %-28s %s\n", qid,
                              state, size, attempts, strcmp (state, "deferred") == 0 ? t : "-",
                              *sender != '\0' ? sender : "<>", rcpt);
      if (*reply != '\0' && strcmp (state, "delivered") != 0)
        g_string_append_printf (text, "%16s last reply: %s\n", "", reply);
    }
  if (n == 0)
    g_string_append (text, "the queue is empty\n");
  pb_control_request_reply (c->req, g_variant_ref (result), text->str);
  queue_call_free (c);
}

static void
show_done (GVariant *result, const GError *error, gpointer data)
{
  QueueCall *c = data;
  g_autoptr (GString) text = g_string_new (NULL);
  const char *sender, *ret, *envid;
  gint64 size, queued;
  GVariantIter *entries;
  guint64 id;
  const char *rcpt, *state, *reply;
  guint32 attempts;
  gint64 next;
  GVariantIter *history;
  g_autofree char *queued_text = NULL;
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;

  if (queue_failed (c, error))
    return;
  g_variant_get (result, "(&sxx&s&sa(tssuxsa(xss)))", &sender, &size, &queued, &ret, &envid, &entries);
  queued_text = when (queued);
  g_string_append_printf (text, "message %s\n  from <%s>, %" G_GINT64_FORMAT " octets, queued %s\n", c->id, sender, size,
                          queued_text);
  while (g_variant_iter_next (entries, "(t&s&sux&sa(xss))", &id, &rcpt, &state, &attempts, &next, &reply, &history))
    {
      gint64 t;
      const char *server, *hreply;

      g_string_append_printf (text, "  to <%s>: %s after %u attempt%s\n", rcpt, state, attempts, attempts == 1 ? "" : "s");
      while (g_variant_iter_next (history, "(x&s&s)", &t, &server, &hreply))
        {
          g_autofree char *at = when (t);
          g_string_append_printf (text, "    %s via %s: %s\n", at, server, hreply);
        }
      g_variant_iter_free (history);
      if (strcmp (state, "deferred") == 0 || strcmp (state, "pending") == 0)
        {
          g_autofree char *at = when (next);
          if (next <= now)
            g_string_append (text, "    next attempt: now (due)\n");
          else
            g_string_append_printf (text, "    next attempt: %s (in %" G_GINT64_FORMAT " s)%s\n", at, next - now,
                                    strcmp (state, "deferred") == 0 ? ", waiting after a temporary failure" : "");
        }
    }
  g_variant_iter_free (entries);
  pb_control_request_reply (c->req, g_variant_ref (result), text->str);
  queue_call_free (c);
}

static void
count_done (GVariant *result, const GError *error, gpointer data)
{
  QueueCall *c = data;
  g_autofree char *text = NULL;
  guint32 n = 0;
  gboolean retry = g_str_has_prefix (c->id, "retry:");
  const char *id = strchr (c->id, ':') + 1;

  if (queue_failed (c, error))
    return;
  g_variant_get (result, "u", &n);
  text = g_strdup_printf ("%s: %u recipient%s %s", *id != '\0' ? id : "all", n, n == 1 ? "" : "s",
                          retry ? "due now" : "removed from the queue");
  /* A rescan also drops deleted entries from the manager's waiting lists. */
  if (c->gen->queue != NULL)
    pb_queue_kick (c->gen->queue);
  pb_control_request_reply (c->req, g_variant_new_uint32 (n), text);
  queue_call_free (c);
}

static void
cmd_queue (PbControlRequest *req, gpointer user_data)
{
  static const char usage[] = "usage: pillarbox queue list | queue show ID | queue delete ID|--all | queue retry ID|--all";
  const char *const *args = pb_control_request_get_args (req);
  guint n = g_strv_length ((char **) args);
  PbGeneration *gen = pb_generation_get_current ();

  if (n == 1 && strcmp (args[0], "list") == 0)
    pb_store_request_gen (gen, "queue.list", NULL, list_done, queue_call_new (req, NULL));
  else if (n == 2 && strcmp (args[0], "show") == 0)
    pb_store_request_gen (gen, "queue.get", g_variant_new ("(s)", args[1]), show_done, queue_call_new (req, args[1]));
  else if (n == 2 && (strcmp (args[0], "delete") == 0 || strcmp (args[0], "retry") == 0))
    {
      gboolean all = strcmp (args[1], "--all") == 0;
      g_autofree char *tag = g_strdup_printf ("%s:%s", args[0], all ? "" : args[1]);
      pb_store_request_gen (gen, strcmp (args[0], "delete") == 0 ? "queue.delete" : "queue.retry",
                            g_variant_new ("(s)", all ? "" : args[1]), count_done, queue_call_new (req, tag));
    }
  else
    pb_control_request_fail (req, "%s", usage);
}

static void
cmd_connect_now (PbControlRequest *req, gpointer user_data)
{
  const char *const *args = pb_control_request_get_args (req);
  PbGeneration *gen = pb_generation_get_current ();
  g_autofree char *text = NULL;

  if (g_strv_length ((char **) args) > 1)
    {
      pb_control_request_fail (req, "usage: pillarbox connect-now [NAME]");
      return;
    }
  if (args[0] != NULL)
    {
      gboolean found = FALSE;
      for (guint i = 0; gen->connections != NULL && i + 1 < gen->connections->names->len; i++)
        if (strcmp (g_ptr_array_index (gen->connections->names, i), args[0]) == 0)
          found = TRUE;
      if (!found && strcmp (args[0], "default") != 0)
        {
          pb_control_request_fail (req, "no connection named %s", args[0]);
          return;
        }
    }
  if (gen->queue == NULL)
    {
      pb_control_request_fail (req, "the queue manager is not running");
      return;
    }
  pb_queue_fire (gen->queue, args[0]);
  text = g_strdup_printf ("connection %s fired", args[0] != NULL ? args[0] : "(defaults)");
  pb_control_request_reply (req, NULL, text);
}

void
pb_queuecmds_register (PbGeneration *gen)
{
  const PbControlCommandSpec commands[] = {
    { sizeof (PbControlCommandSpec), "queue", "Show and manage the outbound queue",
      "queue list | queue show ID | queue delete ID | queue retry ID|--all", cmd_queue, NULL, FALSE, NULL },
    { sizeof (PbControlCommandSpec), "connect-now", "Fire a connection now: send its due mail and run its collectors",
      "connect-now [NAME]", cmd_connect_now, NULL, FALSE, NULL },
  };

  for (guint i = 0; i < G_N_ELEMENTS (commands); i++)
    pb_generation_add_builtin_command (gen, &commands[i]);
}
