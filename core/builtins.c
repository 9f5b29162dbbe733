/* SPDX-License-Identifier: MIT */
/* The core's own control commands: status, modules, reload. */
#include "config.h"
#include "core-private.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static gboolean (*reload_func) (char **errors);
static gint64 start_time;

void
pb_builtins_set_reload_func (gboolean (*reload) (char **errors))
{
  reload_func = reload;
}

void
pb_builtins_set_start_time (gint64 real_time)
{
  start_time = real_time;
}

static char *
format_uptime (gint64 seconds)
{
  if (seconds >= 86400)
    return g_strdup_printf ("%" G_GINT64_FORMAT "d %02" G_GINT64_FORMAT "h %02" G_GINT64_FORMAT "m",
                            seconds / 86400, seconds % 86400 / 3600, seconds % 3600 / 60);
  if (seconds >= 3600)
    return g_strdup_printf ("%" G_GINT64_FORMAT "h %02" G_GINT64_FORMAT "m", seconds / 3600, seconds % 3600 / 60);
  if (seconds >= 60)
    return g_strdup_printf ("%" G_GINT64_FORMAT "m %02" G_GINT64_FORMAT "s", seconds / 60, seconds % 60);
  return g_strdup_printf ("%" G_GINT64_FORMAT "s", seconds);
}

static GVariant *
modules_variant (PbGeneration *gen, GString *text)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < gen->modules->len; i++)
    {
      PbModule *m = g_ptr_array_index (gen->modules, i);
      GVariantBuilder mb;
      g_autofree char *abi = g_strdup_printf ("%u.%u", m->info->abi_major, m->info->abi_minor);

      g_variant_builder_init (&mb, G_VARIANT_TYPE ("a{sv}"));
      g_variant_builder_add (&mb, "{sv}", "name", g_variant_new_string (m->name));
      g_variant_builder_add (&mb, "{sv}", "version", g_variant_new_string (m->info->version != NULL ? m->info->version : ""));
      g_variant_builder_add (&mb, "{sv}", "summary", g_variant_new_string (m->info->summary != NULL ? m->info->summary : ""));
      g_variant_builder_add (&mb, "{sv}", "abi", g_variant_new_string (abi));
      g_variant_builder_add (&mb, "{sv}", "file", g_variant_new_string (m->file->path));
      g_variant_builder_add (&mb, "{sv}", "config", g_variant_new_string (m->conf_file));
      g_variant_builder_add (&b, "a{sv}", &mb);
      if (text != NULL)
        g_string_append_printf (text, "  %-16s %-10s ABI %-5s %s\n", m->name,
                                m->info->version != NULL ? m->info->version : "", abi,
                                m->info->summary != NULL ? m->info->summary : "");
    }
  return g_variant_builder_end (&b);
}

static GVariant *
listeners_variant (PbGeneration *gen, GString *text)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < gen->listeners->len; i++)
    {
      PbListener *l = g_ptr_array_index (gen->listeners, i);
      GVariantBuilder mb, eb;
      g_autoptr (GString) where = g_string_new (NULL);

      g_variant_builder_init (&eb, G_VARIANT_TYPE ("as"));
      for (guint k = 0; k < l->sockets->len; k++)
        {
          PbBoundSocket *s = g_ptr_array_index (l->sockets, k);
          g_variant_builder_add (&eb, "s", s->bound);
          g_string_append_printf (where, "%s%s", k > 0 ? ", " : "", s->bound);
        }
      g_variant_builder_init (&mb, G_VARIANT_TYPE ("a{sv}"));
      g_variant_builder_add (&mb, "{sv}", "name", g_variant_new_string (l->name));
      g_variant_builder_add (&mb, "{sv}", "service", g_variant_new_string (l->service));
      g_variant_builder_add (&mb, "{sv}", "module", g_variant_new_string (l->module->name));
      g_variant_builder_add (&mb, "{sv}", "tls", g_variant_new_string (l->spec.tls == PB_TLS_IMPLICIT ? "implicit" : "none"));
      g_variant_builder_add (&mb, "{sv}", "addresses", g_variant_builder_end (&eb));
      g_variant_builder_add (&mb, "{sv}", "accepted", g_variant_new_uint64 (l->accepted));
      g_variant_builder_add (&b, "a{sv}", &mb);
      if (text != NULL)
        g_string_append_printf (text, "  %-16s %-6s %-22s%s (%s; %" G_GUINT64_FORMAT " accepted)\n", l->name,
                                l->service, where->str, l->spec.tls == PB_TLS_IMPLICIT ? " TLS" : "",
                                l->module->name, l->accepted);
    }
  return g_variant_builder_end (&b);
}

/* The daemon's resident set, from /proc/self/statm (pages); 0 where there
 * is no procfs. Read per status request: one small read from the kernel. */
static guint64
resident_bytes (void)
{
  g_autofree char *statm = NULL;
  unsigned long long size = 0, resident = 0;

  if (!g_file_get_contents ("/proc/self/statm", &statm, NULL, NULL)
      || sscanf (statm, "%llu %llu", &size, &resident) != 2)
    return 0;
  return (guint64) resident * (guint64) sysconf (_SC_PAGESIZE);
}

static void
status_reply (PbControlRequest *req, PbGeneration *gen, GVariant *queue_list)
{
  g_autoptr (GString) text = g_string_new (NULL);
  g_autoptr (GString) mods = g_string_new (NULL);
  g_autoptr (GString) lis = g_string_new (NULL);
  GVariantBuilder b;
  gint64 uptime = (g_get_real_time () - start_time) / G_USEC_PER_SEC;
  g_autofree char *up = format_uptime (uptime);
  g_autofree char *abi = g_strdup_printf ("%u.%u", PB_ABI_MAJOR, PB_ABI_MINOR);
  g_autofree char *tls = gen->tls != NULL ? pb_tls_creds_describe (gen->tls) : g_strdup ("none");
  GVariant *modules = modules_variant (gen, mods);
  GVariant *listeners = listeners_variant (gen, lis);
  g_autoptr (GDateTime) loaded_at = g_date_time_new_from_unix_local (gen->loaded_at / G_USEC_PER_SEC);
  g_autofree char *loaded = loaded_at != NULL ? g_date_time_format (loaded_at, "%Y-%m-%d %H:%M:%S") : NULL;
  guint64 rss = resident_bytes ();

  g_variant_builder_init (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "version", g_variant_new_string (PACKAGE_VERSION));
  g_variant_builder_add (&b, "{sv}", "abi", g_variant_new_string (abi));
  g_variant_builder_add (&b, "{sv}", "pid", g_variant_new_int32 ((gint32) getpid ()));
  g_variant_builder_add (&b, "{sv}", "uptime_seconds", g_variant_new_int64 (uptime));
  g_variant_builder_add (&b, "{sv}", "start_time", g_variant_new_int64 (start_time / G_USEC_PER_SEC));
  g_variant_builder_add (&b, "{sv}", "hostname", g_variant_new_string (gen->core->hostname));
  g_variant_builder_add (&b, "{sv}", "config_dir", g_variant_new_string (gen->conf_dir));
  g_variant_builder_add (&b, "{sv}", "state_dir", g_variant_new_string (gen->state_dir));
  g_variant_builder_add (&b, "{sv}", "generation", g_variant_new_uint32 (gen->serial));
  g_variant_builder_add (&b, "{sv}", "config_loaded", g_variant_new_int64 (gen->loaded_at / G_USEC_PER_SEC));
  g_variant_builder_add (&b, "{sv}", "sessions", g_variant_new_uint32 (pb_sessions_count ()));
  g_variant_builder_add (&b, "{sv}", "tls_certificate", g_variant_new_string (tls));
  g_variant_builder_add (&b, "{sv}", "storage",
                         g_variant_new_string (gen->storage_module != NULL ? gen->storage.name : ""));
  g_variant_builder_add (&b, "{sv}", "modules", modules);
  g_variant_builder_add (&b, "{sv}", "listeners", listeners);
  g_variant_builder_add (&b, "{sv}", "storage_commit_latency", pb_store_commit_latency_variant ());
  g_variant_builder_add (&b, "{sv}", "loop_sources", g_variant_new_uint32 (pb_sources_live ()));
  g_variant_builder_add (&b, "{sv}", "rss_bytes", g_variant_new_uint64 (rss));

  g_string_append_printf (text, "pillarboxd %s (plugin ABI %s), pid %d, up %s\n", PACKAGE_VERSION, abi,
                          (int) getpid (), up);
  g_string_append_printf (text, "host name:   %s\n", gen->core->hostname);
  g_string_append_printf (text, "config:      %s (generation %u, loaded %s)\n", gen->conf_dir, gen->serial,
                          loaded != NULL ? loaded : "?");
  g_string_append_printf (text, "state:       %s\n", gen->state_dir);
  g_string_append_printf (text, "sessions:    %u\n", pb_sessions_count ());
  g_string_append_printf (text, "process:     %u loop sources, %.1f MiB resident\n", pb_sources_live (),
                          rss / (1024.0 * 1024.0));
  g_string_append_printf (text, "storage:     %s\n", gen->storage_module != NULL ? gen->storage.name : "none configured");
  g_string_append_printf (text, "TLS:         %s\n", tls);
  g_string_append_printf (text, "modules (%u):\n%s", gen->modules->len, gen->modules->len > 0 ? mods->str : "  none\n");
  g_string_append_printf (text, "listeners (%u):\n%s", gen->listeners->len,
                          gen->listeners->len > 0 ? lis->str : "  none\n");
  {
    g_autoptr (GString) conns = g_string_new (NULL);
    GVariant *connections = pb_queue_describe (gen->queue, conns);
    GVariantBuilder qb;
    guint pending = 0, deferred = 0, delivered = 0, bounced = 0;
    /* Entries are per recipient; a message counts once in each state one of its recipients is in. */
    g_autoptr (GHashTable) seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    guint messages[4] = { 0 };
    static const char *const states[4] = { "pending", "deferred", "delivered", "bounced" };

    g_variant_builder_add (&b, "{sv}", "connections", connections);
    if (queue_list != NULL)
      {
        GVariantIter it;
        const char *state, *queue_id;
        GVariantBuilder mb;
        g_variant_iter_init (&it, queue_list);
        while (g_variant_iter_next (&it, "(&s&s&sx&sxx&s)", &queue_id, NULL, NULL, NULL, &state, NULL, NULL, NULL))
          {
            if (strcmp (state, "pending") == 0) pending++;
            else if (strcmp (state, "deferred") == 0) deferred++;
            else if (strcmp (state, "delivered") == 0) delivered++;
            else if (strcmp (state, "bounced") == 0) bounced++;
            for (guint k = 0; k < G_N_ELEMENTS (states); k++)
              if (strcmp (state, states[k]) == 0
                  && g_hash_table_add (seen, g_strconcat (states[k], " ", queue_id, NULL)))
                messages[k]++;
          }
        g_variant_builder_init (&mb, G_VARIANT_TYPE ("a{su}"));
        for (guint k = 0; k < G_N_ELEMENTS (states); k++)
          g_variant_builder_add (&mb, "{su}", states[k], messages[k]);
        g_variant_builder_add (&b, "{sv}", "queue_messages", g_variant_builder_end (&mb));
        g_variant_builder_init (&qb, G_VARIANT_TYPE ("a{su}"));
        g_variant_builder_add (&qb, "{su}", "pending", pending);
        g_variant_builder_add (&qb, "{su}", "deferred", deferred);
        g_variant_builder_add (&qb, "{su}", "delivered", delivered);
        g_variant_builder_add (&qb, "{su}", "bounced", bounced);
        g_variant_builder_add (&b, "{sv}", "queue", g_variant_builder_end (&qb));
        g_string_append_printf (text, "queue:       %u pending, %u deferred (%u delivered, %u bounced kept)\n",
                                pending, deferred, delivered, bounced);
      }
    g_string_append_printf (text, "connections:\n%s", conns->len > 0 ? conns->str : "  none\n");
  }
  pb_control_request_reply (req, g_variant_builder_end (&b), text->str);
}

typedef struct {
  PbControlRequest *req;
  PbGeneration *gen;
} StatusCall;

static void
status_queue_done (GVariant *result, const GError *error, gpointer data)
{
  StatusCall *call = data;

  status_reply (call->req, call->gen, error == NULL ? result : NULL);
  pb_control_request_unref (call->req);
  pb_generation_unref (call->gen);
  g_free (call);
}

static void
cmd_status (PbControlRequest *req, gpointer user_data)
{
  PbGeneration *gen = pb_generation_get_current ();
  StatusCall *call;

  if (gen->storage_module == NULL)
    {
      status_reply (req, gen, NULL);
      return;
    }
  call = g_new0 (StatusCall, 1);
  call->req = pb_control_request_ref (req);
  call->gen = pb_generation_ref (gen);
  pb_store_request_gen (gen, "queue.list", NULL, status_queue_done, call);
}

static void
cmd_modules (PbControlRequest *req, gpointer user_data)
{
  PbGeneration *gen = pb_generation_get_current ();
  g_autoptr (GString) text = g_string_new (NULL);
  GVariant *modules = modules_variant (gen, text);

  if (gen->modules->len == 0)
    g_string_append (text, "no modules are configured\n");
  pb_control_request_reply (req, modules, text->str);
}

static gint
compare_sessions (gconstpointer a, gconstpointer b)
{
  const PbSession *sa = *(PbSession *const *) a;
  const PbSession *sb = *(PbSession *const *) b;
  return sa->started < sb->started ? -1 : sa->started > sb->started;
}

static void
cmd_sessions (PbControlRequest *req, gpointer user_data)
{
  g_autoptr (GPtrArray) list = pb_sessions_list ();
  g_autoptr (GString) text = g_string_new (NULL);
  GVariantBuilder b;
  gint64 now = g_get_monotonic_time ();

  g_ptr_array_sort (list, compare_sessions);
  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < list->len; i++)
    {
      PbSession *s = g_ptr_array_index (list, i);
      GVariantBuilder sb;
      gint64 age = (now - s->started) / G_USEC_PER_SEC;
      g_autofree char *age_text = format_uptime (age);

      g_variant_builder_init (&sb, G_VARIANT_TYPE ("a{sv}"));
      g_variant_builder_add (&sb, "{sv}", "id", g_variant_new_string (s->id));
      g_variant_builder_add (&sb, "{sv}", "service", g_variant_new_string (s->listener->service));
      g_variant_builder_add (&sb, "{sv}", "listener", g_variant_new_string (s->listener->name));
      g_variant_builder_add (&sb, "{sv}", "client", g_variant_new_string (pb_conn_get_peer_ip (s->conn)));
      g_variant_builder_add (&sb, "{sv}", "user", g_variant_new_string (s->user != NULL ? s->user : ""));
      g_variant_builder_add (&sb, "{sv}", "state", g_variant_new_string (s->state));
      g_variant_builder_add (&sb, "{sv}", "tls", g_variant_new_boolean (pb_conn_is_tls (s->conn)));
      g_variant_builder_add (&sb, "{sv}", "age_seconds", g_variant_new_int64 (age));
      g_variant_builder_add (&sb, "{sv}", "generation", g_variant_new_uint32 (s->gen->serial));
      g_variant_builder_add (&b, "a{sv}", &sb);
      if (i == 0)
        g_string_append_printf (text, "%-10s %-8s %-12s %-39s %-24s %-12s %s\n", "ID", "SERVICE", "LISTENER",
                                "CLIENT", "USER", "STATE", "AGE");
      g_string_append_printf (text, "%-10s %-8s %-12s %-39s %-24s %-12s %s%s\n", s->id, s->listener->service,
                              s->listener->name, pb_conn_get_peer_ip (s->conn), s->user != NULL ? s->user : "-",
                              s->state, age_text, pb_conn_is_tls (s->conn) ? " (TLS)" : "");
    }
  if (list->len == 0)
    g_string_append (text, "no sessions\n");
  pb_control_request_reply (req, g_variant_builder_end (&b), text->str);
}

static void
cmd_reload (PbControlRequest *req, gpointer user_data)
{
  g_autofree char *errors = NULL;

  if (reload_func == NULL)
    {
      pb_control_request_fail (req, "reloading is not available");
      return;
    }
  /* The reply goes out through the generation that was current when the
   * request arrived; the request holds what it needs. */
  if (reload_func (&errors))
    pb_control_request_reply (req, NULL, "configuration reloaded");
  else
    pb_control_request_fail (req, "configuration not reloaded, the running one is kept: %s",
                             errors != NULL ? errors : "unknown error");
}

void
pb_builtins_register (PbGeneration *gen)
{
  static const PbControlCommandSpec builtins[] = {
    { sizeof (PbControlCommandSpec), "status", "Show version, uptime, modules and listeners", "status",
      cmd_status, NULL, FALSE, NULL },
    { sizeof (PbControlCommandSpec), "modules", "List loaded modules with their versions", "modules",
      cmd_modules, NULL, FALSE, NULL },
    { sizeof (PbControlCommandSpec), "sessions", "List active sessions: service, client, user, state and age",
      "sessions", cmd_sessions, NULL, FALSE, NULL },
    { sizeof (PbControlCommandSpec), "reload", "Re-read the configuration (like SIGHUP)", "reload",
      cmd_reload, NULL, FALSE, NULL },
  };

  for (guint i = 0; i < G_N_ELEMENTS (builtins); i++)
    pb_generation_add_builtin_command (gen, &builtins[i]);
  pb_dircmds_register (gen);
  pb_queuecmds_register (gen);
}
