/* SPDX-License-Identifier: MIT */
/* Sessions: one per accepted connection, with per-module data, state for status, and logging. */
#include "config.h"
#include "core-private.h"

#include <string.h>

typedef struct {
  gpointer data;
  GDestroyNotify destroy;
} PbSessionData;

static guint session_counter;
static GHashTable *live_sessions;   /* every session of every generation */

static void
session_data_free (gpointer p)
{
  PbSessionData *sd = p;
  if (sd->destroy != NULL && sd->data != NULL)
    sd->destroy (sd->data);
  g_free (sd);
}

PbSession *
pb_session_new (PbGeneration *gen, PbListener *listener, PbConn *conn)
{
  PbSession *s = g_new0 (PbSession, 1);

  s->ref = 1;
  /* Short, unique for the life of the process, and sortable by age. */
  g_snprintf (s->id, sizeof s->id, "s%x", ++session_counter);
  s->gen = pb_generation_ref (gen);
  s->listener = listener;
  s->conn = pb_conn_ref (conn);
  s->state = pb_intern ("CONNECT");
  s->started = g_get_monotonic_time ();
  s->cancellable = g_cancellable_new ();
  g_hash_table_add (gen->sessions, s);
  if (live_sessions == NULL)
    live_sessions = g_hash_table_new (NULL, NULL);
  g_hash_table_add (live_sessions, s);
  return s;
}

PbSession *
pb_session_ref (PbSession *session)
{
  g_return_val_if_fail (session != NULL, NULL);
  session->ref++;
  return session;
}

void
pb_session_unref (PbSession *session)
{
  if (session == NULL || --session->ref > 0)
    return;
  g_clear_pointer (&session->data, g_hash_table_unref);
  g_object_unref (session->cancellable);
  pb_conn_unref (session->conn);
  g_free (session->user);
  pb_generation_unref (session->gen);
  g_free (session);
}

PbGeneration *
pb_session_get_generation (PbSession *session)
{
  return session->gen;
}

GPtrArray *
pb_sessions_list (void)
{
  GPtrArray *out = g_ptr_array_new ();
  GHashTableIter it;
  gpointer key;

  if (live_sessions != NULL)
    {
      g_hash_table_iter_init (&it, live_sessions);
      while (g_hash_table_iter_next (&it, &key, NULL))
        g_ptr_array_add (out, key);
    }
  return out;
}

guint
pb_sessions_count (void)
{
  return live_sessions != NULL ? g_hash_table_size (live_sessions) : 0;
}

void
pb_session_end (PbSession *session)
{
  if (session->ended)
    return;
  session->ended = TRUE;
  g_cancellable_cancel (session->cancellable);
  /* Every session ends with this event, admitted or refused at connect, so a
   * module that counted it at connect can always count it out. */
  pb_session_report_event (session, PB_EVENT_DISCONNECT, session->accepted ? "admitted" : "refused");
  g_hash_table_remove (session->gen->sessions, session);
  g_hash_table_remove (live_sessions, session);
  /* Module data goes while the modules are certainly still initialised. */
  g_clear_pointer (&session->data, g_hash_table_unref);
  pb_session_unref (session);
}

void
pb_sessions_shutdown (gboolean force)
{
  g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func ((GDestroyNotify) pb_session_unref);
  GHashTableIter it;
  gpointer key;

  if (live_sessions == NULL)
    return;
  g_hash_table_iter_init (&it, live_sessions);
  while (g_hash_table_iter_next (&it, &key, NULL))
    g_ptr_array_add (list, pb_session_ref (key));
  for (guint i = 0; i < list->len; i++)
    {
      PbSession *s = g_ptr_array_index (list, i);
      if (s->ended)
        continue;
      if (!force && s->accepted && s->listener->spec.shutdown != NULL)
        s->listener->spec.shutdown (s, s->listener->spec.user_data);
      else if (force)
        pb_conn_abort (s->conn, PB_CONN_ERROR_SHUTDOWN, "the server is shutting down");
      else
        pb_conn_close (s->conn);
    }
}

const char *
pb_session_get_id (PbSession *session)
{
  g_return_val_if_fail (session != NULL, NULL);
  return session->id;
}

PbConn *
pb_session_get_conn (PbSession *session)
{
  g_return_val_if_fail (session != NULL, NULL);
  return session->conn;
}

const char *
pb_session_get_listener (PbSession *session)
{
  g_return_val_if_fail (session != NULL, NULL);
  return session->listener->name;
}

const char *
pb_session_get_service (PbSession *session)
{
  g_return_val_if_fail (session != NULL, NULL);
  return session->listener->service;
}

const char *
pb_session_get_peer_ip (PbSession *session)
{
  g_return_val_if_fail (session != NULL, NULL);
  return pb_conn_get_peer_ip (session->conn);
}

gint64
pb_session_get_start_time (PbSession *session)
{
  g_return_val_if_fail (session != NULL, 0);
  return session->started;
}

void
pb_session_set_user (PbSession *session, const char *user)
{
  g_return_if_fail (session != NULL);
  g_free (session->user);
  session->user = g_strdup (user);
}

const char *
pb_session_get_user (PbSession *session)
{
  g_return_val_if_fail (session != NULL, NULL);
  return session->user;
}

void
pb_session_set_state (PbSession *session, const char *state)
{
  g_return_if_fail (session != NULL && state != NULL);
  session->state = pb_intern (state);
}

const char *
pb_session_get_state (PbSession *session)
{
  g_return_val_if_fail (session != NULL, NULL);
  return session->state;
}

void
pb_session_set_data (PbSession *session, PbModule *module, gpointer data, GDestroyNotify destroy)
{
  PbSessionData *sd;

  g_return_if_fail (session != NULL && module != NULL);
  if (session->data == NULL)
    {
      if (data == NULL)
        return;
      session->data = g_hash_table_new_full (NULL, NULL, NULL, session_data_free);
    }
  if (data == NULL)
    {
      g_hash_table_remove (session->data, module);
      return;
    }
  sd = g_new0 (PbSessionData, 1);
  sd->data = data;
  sd->destroy = destroy;
  g_hash_table_replace (session->data, module, sd);
}

gpointer
pb_session_get_data (PbSession *session, PbModule *module)
{
  PbSessionData *sd;

  g_return_val_if_fail (session != NULL && module != NULL, NULL);
  if (session->data == NULL)
    return NULL;
  sd = g_hash_table_lookup (session->data, module);
  return sd != NULL ? sd->data : NULL;
}

void
pb_log_session (const char *domain, GLogLevelFlags level, PbSession *session, const char *queue_id,
                const char *format, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  g_autofree char *text = NULL;
  GLogField fields[6];
  gsize n = 0;

  va_start (ap, format);
  msg = g_strdup_vprintf (format, ap);
  va_end (ap);

  if (session != NULL && queue_id != NULL)
    text = g_strdup_printf ("%s: %s: %s", session->id, queue_id, msg);
  else if (session != NULL)
    text = g_strdup_printf ("%s: %s", session->id, msg);
  else if (queue_id != NULL)
    text = g_strdup_printf ("%s: %s", queue_id, msg);

  fields[n++] = (GLogField) { "PRIORITY", pb_log_priority (level), -1 };
  fields[n++] = (GLogField) { "GLIB_DOMAIN", domain != NULL ? domain : "pillarbox", -1 };
  fields[n++] = (GLogField) { "MESSAGE", text != NULL ? text : msg, -1 };
  if (session != NULL)
    fields[n++] = (GLogField) { "PB_SESSION", session->id, -1 };
  if (queue_id != NULL)
    fields[n++] = (GLogField) { "PB_QUEUE_ID", queue_id, -1 };
  /* Routes the line to its service's log file (log.c) and lets the journal filter by it. */
  if (session != NULL && session->listener != NULL)
    fields[n++] = (GLogField) { "PB_SERVICE", session->listener->service, -1 };
  g_log_structured_array (level, fields, n);
}
