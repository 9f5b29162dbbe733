/* SPDX-License-Identifier: MIT */
/* status-monitor: the hub that turns events, hooks and the status command into lines for every monitor client. */
#include "config.h"
#include "sm-private.h"

#include <stdarg.h>
#include <string.h>

/* Events of a burst (a message queued, ten deliveries ending) cost one status
 * call, not one each. */
#define SM_KICK_DELAY_MS 250

/*
 * The hub is the one piece of this module that is shared by instances. A
 * monitor client stays connected for hours, across reloads; the core reports
 * a session's events only to the instances of the session's own generation.
 * After a reload, SMTP sessions of the new generation reach the new instance
 * while the admin's monitor is still a session of the old one, so each
 * instance hands what it hears to one hub that every instance shares, and the
 * hub sends it to every client. The hub is found through the weak pointer
 * below and lives while an instance or a client holds it; loop thread only.
 */
struct _SmHub {
  gint ref;
  GPtrArray *monitors;    /* SmMonitor *, started instances, oldest first (not owned) */
  GPtrArray *clients;     /* SmClient *, every monitor connection (owned refs) */
  GQueue history;         /* char *: the last activity lines, oldest first */
  SmSnapshot *last;       /* what live clients were last told */
  gboolean refreshing;
  gboolean again;
  gboolean summary_due;
  guint kick_timer;
  guint poll_timer;
  guint summary_timer;
  gint64 poll_ms;         /* the intervals the timers were armed with */
  gint64 summary_ms;
};

static SmHub *sm_shared_hub;

static void hub_refresh (SmHub *hub);

SmHub *
sm_hub_get (void)
{
  if (sm_shared_hub != NULL)
    {
      sm_shared_hub->ref++;
      return sm_shared_hub;
    }
  sm_shared_hub = g_new0 (SmHub, 1);
  sm_shared_hub->ref = 1;
  sm_shared_hub->monitors = g_ptr_array_new ();
  sm_shared_hub->clients = g_ptr_array_new_with_free_func ((GDestroyNotify) sm_client_unref);
  g_queue_init (&sm_shared_hub->history);
  return sm_shared_hub;
}

static SmHub *
hub_ref (SmHub *hub)
{
  hub->ref++;
  return hub;
}

static void
hub_clear_timers (SmHub *hub)
{
  g_clear_handle_id (&hub->kick_timer, g_source_remove);
  g_clear_handle_id (&hub->poll_timer, g_source_remove);
  g_clear_handle_id (&hub->summary_timer, g_source_remove);
}

void
sm_hub_unref (SmHub *hub)
{
  if (hub == NULL || --hub->ref > 0)
    return;
  if (sm_shared_hub == hub)
    sm_shared_hub = NULL;
  hub_clear_timers (hub);
  g_ptr_array_unref (hub->monitors);
  g_ptr_array_unref (hub->clients);
  g_queue_clear_full (&hub->history, g_free);
  sm_snapshot_free (hub->last);
  g_free (hub);
}

/* The newest running instance: its configuration sets the timers and its
 * module runs the commands. */
static SmMonitor *
hub_current (SmHub *hub)
{
  return hub->monitors->len > 0 ? g_ptr_array_index (hub->monitors, hub->monitors->len - 1) : NULL;
}

void
sm_hub_add_monitor (SmHub *hub, SmMonitor *mon)
{
  if (!g_ptr_array_find (hub->monitors, mon, NULL))
    g_ptr_array_add (hub->monitors, mon);
  sm_hub_update_timers (hub);
}

void
sm_hub_remove_monitor (SmHub *hub, SmMonitor *mon)
{
  g_ptr_array_remove (hub->monitors, mon);
  sm_hub_update_timers (hub);
}

void
sm_hub_add_client (SmHub *hub, SmClient *client)
{
  g_ptr_array_add (hub->clients, sm_client_ref (client));
}

void
sm_hub_remove_client (SmHub *hub, SmClient *client)
{
  g_ptr_array_remove (hub->clients, client);
  sm_hub_update_timers (hub);
}

guint
sm_hub_count_clients (SmHub *hub)
{
  return hub->clients->len;
}

static guint
hub_count_live (SmHub *hub)
{
  guint n = 0;

  for (guint i = 0; i < hub->clients->len; i++)
    if (sm_client_is_live (g_ptr_array_index (hub->clients, i)))
      n++;
  return n;
}

/* Logged-in clients: live, or waiting for their first burst. */
static guint
hub_count_monitors (SmHub *hub)
{
  guint n = 0;

  for (guint i = 0; i < hub->clients->len; i++)
    {
      SmClient *client = g_ptr_array_index (hub->clients, i);
      if (sm_client_is_live (client) || sm_client_wants_burst (client, NULL))
        n++;
    }
  return n;
}

static gboolean
hub_has_waiting (SmHub *hub)
{
  for (guint i = 0; i < hub->clients->len; i++)
    if (sm_client_wants_burst (g_ptr_array_index (hub->clients, i), NULL))
      return TRUE;
  return FALSE;
}

/* A copy of the client list: sending may end a client, and its removal must
 * not disturb the walk. */
static GPtrArray *
hub_clients_copy (SmHub *hub)
{
  GPtrArray *copy = g_ptr_array_new_full (hub->clients->len, (GDestroyNotify) sm_client_unref);

  for (guint i = 0; i < hub->clients->len; i++)
    g_ptr_array_add (copy, sm_client_ref (g_ptr_array_index (hub->clients, i)));
  return copy;
}

gboolean
sm_hub_is_watched (SmHub *hub)
{
  return hub_count_live (hub) > 0;
}

void
sm_hub_broadcast (SmHub *hub, const char *line)
{
  g_autoptr (GPtrArray) clients = NULL;

  if (hub->clients->len == 0)
    return;
  clients = hub_clients_copy (hub);
  for (guint i = 0; i < clients->len; i++)
    if (sm_client_is_live (g_ptr_array_index (clients, i)))
      sm_client_send (g_ptr_array_index (clients, i), line);
}

void
sm_hub_activity (SmHub *hub, const char *format, ...)
{
  SmMonitor *mon = hub_current (hub);
  guint max = mon != NULL ? (guint) mon->config->history_lines : 0;
  g_autofree char *text = NULL;
  char *line;
  va_list ap;

  va_start (ap, format);
  text = g_strdup_vprintf (format, ap);
  va_end (ap);
  line = sm_activity_line (g_get_real_time (), text);
  sm_hub_broadcast (hub, line);
  g_queue_push_tail (&hub->history, line);
  while (hub->history.length > max)
    g_free (g_queue_pop_head (&hub->history));
}

/* ---- refreshing from the status command ------------------------------------------ */

static gboolean
hub_kick_fired (gpointer data)
{
  SmHub *hub = data;

  hub->kick_timer = 0;
  hub_refresh (hub);
  return G_SOURCE_REMOVE;
}

void
sm_hub_kick (SmHub *hub)
{
  /* Nobody watching: nothing to compute. */
  if (hub->kick_timer != 0 || hub_count_live (hub) == 0)
    return;
  hub->kick_timer = pb_timeout_add (SM_KICK_DELAY_MS, hub_kick_fired, hub);
}

void
sm_hub_request_burst (SmHub *hub, SmClient *client, gboolean with_history)
{
  /* The client has marked itself as waiting (sm_client_wants_burst()); the
   * refresh serves every waiting client at once. */
  hub_refresh (hub);
}

static gboolean
line_in (GPtrArray *lines, const char *line)
{
  for (guint i = 0; lines != NULL && i < lines->len; i++)
    if (strcmp (g_ptr_array_index (lines, i), line) == 0)
      return TRUE;
  return FALSE;
}

/* Tells live clients what changed since the last refresh. */
static void
hub_broadcast_changes (SmHub *hub, const SmSnapshot *snap)
{
  const SmSnapshot *old = hub->last;

  if (old == NULL || strcmp (old->connection_status, snap->connection_status) != 0)
    sm_hub_broadcast (hub, snap->connection_status);
  for (guint i = 0; i < snap->connections->len; i++)
    if (old == NULL || !line_in (old->connections, g_ptr_array_index (snap->connections, i)))
      sm_hub_broadcast (hub, g_ptr_array_index (snap->connections, i));
  if (snap->queue != NULL && (old == NULL || g_strcmp0 (old->queue, snap->queue) != 0))
    sm_hub_broadcast (hub, snap->queue);
}

typedef struct {
  SmHub *hub;
  GPtrArray *lines;     /* the burst without sessions, history and summary */
  SmSnapshot *snap;
} BurstCall;

static void
burst_call_free (BurstCall *call)
{
  g_ptr_array_unref (call->lines);
  sm_snapshot_free (call->snap);
  sm_hub_unref (call->hub);
  g_free (call);
}

static void
hub_sessions_done (gboolean ok, GVariant *data, const char *text, gpointer user_data)
{
  BurstCall *call = user_data;
  SmHub *hub = call->hub;
  g_autoptr (GPtrArray) sessions = sm_session_lines (ok ? data : NULL);
  g_autoptr (GPtrArray) clients = hub_clients_copy (hub);
  g_autofree char *summary = NULL;

  if (!ok)
    g_warning ("status monitor: the sessions command failed: %s", text != NULL ? text : "?");
  for (guint i = 0; i < clients->len; i++)
    {
      SmClient *client = g_ptr_array_index (clients, i);
      gboolean with_history = FALSE;
      g_autoptr (GPtrArray) burst = NULL;

      if (!sm_client_wants_burst (client, &with_history))
        continue;
      burst = g_ptr_array_new ();
      for (guint k = 0; k < call->lines->len; k++)
        g_ptr_array_add (burst, g_ptr_array_index (call->lines, k));
      for (guint k = 0; k < sessions->len; k++)
        g_ptr_array_add (burst, g_ptr_array_index (sessions, k));
      if (with_history)
        for (GList *l = hub->history.head; l != NULL; l = l->next)
          g_ptr_array_add (burst, l->data);
      if (summary == NULL)
        summary = sm_summary_line (g_get_real_time (), call->snap, hub_count_monitors (hub));
      g_ptr_array_add (burst, summary);
      g_ptr_array_add (burst, NULL);
      sm_client_burst_done (client, (char **) burst->pdata, NULL);
    }
  burst_call_free (call);
}

static void
hub_status_done (gboolean ok, GVariant *data, const char *text, gpointer user_data)
{
  SmHub *hub = user_data;
  SmMonitor *mon;

  hub->refreshing = FALSE;
  if (!ok)
    {
      g_autoptr (GPtrArray) clients = hub_clients_copy (hub);

      g_warning ("status monitor: the status command failed: %s", text != NULL ? text : "?");
      for (guint i = 0; i < clients->len; i++)
        if (sm_client_wants_burst (g_ptr_array_index (clients, i), NULL))
          sm_client_burst_done (g_ptr_array_index (clients, i), NULL, text != NULL ? text : "status failed");
    }
  else
    {
      SmSnapshot *snap = sm_snapshot_from_status (data);

      hub_broadcast_changes (hub, snap);
      if (hub->summary_due)
        {
          g_autofree char *summary = sm_summary_line (g_get_real_time (), snap, hub_count_monitors (hub));
          sm_hub_broadcast (hub, summary);
          hub->summary_due = FALSE;
        }
      mon = hub_current (hub);
      if (hub_has_waiting (hub) && mon != NULL)
        {
          BurstCall *call = g_new0 (BurstCall, 1);

          call->hub = hub_ref (hub);
          call->lines = g_ptr_array_new_with_free_func (g_free);
          g_ptr_array_add (call->lines, g_strdup (snap->connection_status));
          for (guint i = 0; i < snap->connections->len; i++)
            g_ptr_array_add (call->lines, g_strdup (g_ptr_array_index (snap->connections, i)));
          if (snap->queue != NULL)
            g_ptr_array_add (call->lines, g_strdup (snap->queue));
          call->snap = sm_snapshot_from_status (data);
          pb_module_call_command (mon->module, "sessions", NULL, hub_sessions_done, call);
        }
      sm_snapshot_free (hub->last);
      hub->last = snap;
    }
  if (hub->again)
    {
      hub->again = FALSE;
      hub_refresh (hub);
    }
  sm_hub_unref (hub);
}

static void
hub_refresh (SmHub *hub)
{
  SmMonitor *mon = hub_current (hub);

  if (hub->refreshing)
    {
      /* The answer in flight may predate what made us ask again. */
      hub->again = TRUE;
      return;
    }
  if (mon == NULL)
    return;
  if (hub_count_live (hub) == 0 && !hub_has_waiting (hub))
    return;
  hub->refreshing = TRUE;
  pb_module_call_command (mon->module, "status", NULL, hub_status_done, hub_ref (hub));
}

/* ---- timers ---------------------------------------------------------------------- */

static gboolean
hub_poll_fired (gpointer data)
{
  hub_refresh (data);
  return G_SOURCE_CONTINUE;
}

static gboolean
hub_summary_fired (gpointer data)
{
  SmHub *hub = data;

  hub->summary_due = TRUE;
  hub_refresh (hub);
  return G_SOURCE_CONTINUE;
}

void
sm_hub_update_timers (SmHub *hub)
{
  SmMonitor *mon = hub_current (hub);
  gint64 poll_ms = mon != NULL ? mon->config->poll_interval : 0;
  gint64 summary_ms = mon != NULL ? mon->config->summary_interval : 0;

  if (mon == NULL || hub_count_live (hub) == 0)
    {
      hub_clear_timers (hub);
      /* The next client starts from a full burst; nothing to diff against. */
      g_clear_pointer (&hub->last, sm_snapshot_free);
      return;
    }
  if (hub->poll_timer != 0 && hub->poll_ms != poll_ms)
    g_clear_handle_id (&hub->poll_timer, g_source_remove);
  if (hub->poll_timer == 0 && poll_ms > 0)
    hub->poll_timer = pb_timeout_add ((guint) poll_ms, hub_poll_fired, hub);
  hub->poll_ms = poll_ms;
  if (hub->summary_timer != 0 && hub->summary_ms != summary_ms)
    g_clear_handle_id (&hub->summary_timer, g_source_remove);
  if (hub->summary_timer == 0 && summary_ms > 0)
    hub->summary_timer = pb_timeout_add ((guint) summary_ms, hub_summary_fired, hub);
  hub->summary_ms = summary_ms;
}
