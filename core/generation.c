/* SPDX-License-Identifier: MIT */
/* A configuration generation: the parsed config, its module instances and everything they registered. */
#include "config.h"
#include "core-private.h"

#include <string.h>
#include <unistd.h>

static PbGeneration *current_generation;
static const char *const pb_queue_orders[] = { "oldest", "smallest", "newest", NULL };
static guint generation_serial;

const PbSetting pb_core_settings[] = {
  PB_SETTING_STRING (PbCoreConfig, hostname, "hostname", "",
                     "The server's name in greetings, Received headers and the self-signed certificate. "
                     "Empty means the system's host name."),
  PB_SETTING_STRING (PbCoreConfig, user, "user", "pillarbox",
                     "When started as root, pillarboxd binds its listeners and then runs as this user "
                     "(and its primary group). Ignored when not started as root."),
  PB_SETTING_PATH (PbCoreConfig, module_dir, "module-dir", PB_MODULE_DIR,
                   "Where modules are loaded from: NAME.so, or .libs/NAME.so in a build tree."),
  PB_SETTING_PATH (PbCoreConfig, pidfile, "pidfile", "",
                   "The pid file, also locked so that a second pillarboxd cannot use the same state "
                   "directory. Empty means pillarboxd.pid in the state directory."),
  PB_SETTING_DURATION (PbCoreConfig, shutdown_timeout, "shutdown-timeout", "30s", 0, 3600000,
                       "How long SIGTERM waits for sessions to finish before closing them."),
  PB_SETTING_DURATION (PbCoreConfig, hook_timeout, "hook-timeout", "30s", 100, 600000,
                       "How long one policy stage may take before the client gets a temporary failure (451 4.3.0)."),
  PB_SETTING_PATH (PbCoreConfig, tls_certificate, "tls-certificate", "",
                   "PEM certificate chain for TLS. Empty means a self-signed certificate made on first "
                   "start and kept in the state directory (tls/selfsigned.crt)."),
  PB_SETTING_PATH (PbCoreConfig, tls_key, "tls-key", "",
                   "PEM private key for tls-certificate. Read as root at start; SIGHUP re-reads it as "
                   "core.user, so a key only root can read is kept until the next restart."),
  PB_SETTING_STRING (PbCoreConfig, postmaster, "postmaster", "postmaster",
                     "The user who receives mail for postmaster at every local domain when no user, "
                     "alias or list of that name exists (RFC 5321 section 4.5.1 requires the address)."),
  PB_SETTING_STRING_LIST (PbCoreConfig, dns_servers, "dns-servers", "",
                          "The DNS servers every lookup goes to (VPOP3's \"DNS Servers to Use\"): "
                          "addresses, with :PORT when not 53 ([IPv6]:PORT). Empty means the system's "
                          "(/etc/resolv.conf)."),
  PB_SETTING_STRING_LIST (PbCoreConfig, retry_schedule, "retry-schedule", "5m, 15m, 30m, 1h, 2h, 4h",
                          "How long a deferred recipient waits before each retry (VPOP3's \"Sender Retry\"); "
                          "after the last interval, the last one repeats."),
  PB_SETTING_DURATION (PbCoreConfig, max_queue_lifetime, "max-queue-lifetime", "5d", 60000,
                       G_GINT64_CONSTANT (90) * 86400000,
                       "A recipient still undelivered this long after the message arrived is bounced."),
  PB_SETTING_ENUM (PbCoreConfig, queue_order, "queue-order", "oldest", pb_queue_orders,
                   "Which due mail goes first: oldest (default), smallest (VPOP3's \"send smaller messages "
                   "first\") or newest (\"reverse send order\")."),
  PB_SETTING_INT (PbCoreConfig, destination_concurrency, "destination-concurrency", "5", 1, 100,
                  "Deliveries in flight at once to one destination (domain or relay) per transport."),
  PB_SETTING_DURATION (PbCoreConfig, queue_scan_interval, "queue-scan-interval", "30s", 1000, 3600000,
                       "How often the queue is searched for deferred mail that is due again."),
  PB_SETTING_BOOL (PbCoreConfig, bounce_remote_senders, "bounce-remote-senders", "true",
                   "Send bounces (DSNs) to senders outside your own domains. false protects others from "
                   "backscatter: mail that came in from outside and failed later (forwarded by an alias to "
                   "a server that refused it, or expired in the queue) is dropped with a log line instead "
                   "of bounced to a sender address that is likely forged. Local senders always get bounces."),
  PB_SETTING_DURATION (PbCoreConfig, delay_warning_time, "delay-warning-time", "0", 0,
                       G_GINT64_CONSTANT (30) * 86400000,
                       "When a recipient is still undelivered this long after the message arrived, its "
                       "sender gets one delay notice (an RFC 3464 report with Action: delayed) saying the "
                       "message is still being retried and until when. 0 sends none. A sender who asked "
                       "for NOTIFY without DELAY gets none either."),
  PB_SETTING_PATH (PbCoreConfig, log_dir, "log-dir", "",
                   "Where the per-service log files of service-logs are written. Empty means log/ in the state "
                   "directory. Created at start (mode 0750, owned by core.user when started as root)."),
  PB_SETTING_STRING_LIST (PbCoreConfig, service_logs, "service-logs", "",
                          "Services whose log lines are also written, each with a timestamp, to SERVICE.log in "
                          "log-dir (VPOP3's SMTP Server, POP3 Server and Connection logs): a listener's service "
                          "(smtp for the SMTP, submission and SMTPS listeners; pop3 for POP3 and POP3S; ...), or "
                          "connections for the queue manager, the senders' delivery attempts and the collectors. "
                          "Empty writes none. The files are reopened on SIGHUP and by `pillarbox log-reopen`."),
  PB_SETTING_SIZE (PbCoreConfig, service_log_buffer, "service-log-buffer", "1M", 16384,
                   G_GINT64_CONSTANT (256) * 1024 * 1024,
                   "How much log text may wait for the service log files when the disk is slow. Beyond it "
                   "lines are dropped, counted and reported with one warning, so a stuck disk never delays "
                   "mail."),
  PB_SETTINGS_END
};

static gboolean
core_config_check (const void *config, GError **error)
{
  const PbCoreConfig *c = config;

  for (guint i = 0; c->dns_servers[i] != NULL; i++)
    {
      g_autofree char *fwd = NULL;
      if (!pb_dns_server_to_unbound (c->dns_servers[i], &fwd))
        {
          g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG,
                       "dns-servers: '%s' is not an IP address, IP:PORT or [IPv6]:PORT", c->dns_servers[i]);
          return FALSE;
        }
    }
  for (guint i = 0; c->retry_schedule[i] != NULL; i++)
    {
      static const PbSetting dur = { "retry-schedule", PB_SETTING_TYPE_DURATION, 0, "5m", 1000,
                                     G_GINT64_CONSTANT (7) * 86400000, NULL, "" };
      gint64 ms;
      g_autofree char *why = NULL;
      if (!pb_setting_parse (&dur, c->retry_schedule[i], NULL, &ms, &why))
        {
          g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG, "retry-schedule: %s", why);
          return FALSE;
        }
    }
  if ((*c->tls_certificate == '\0') != (*c->tls_key == '\0'))
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG,
                   "tls-certificate and tls-key must be set together");
      return FALSE;
    }
  return TRUE;
}

G_DEFINE_QUARK (pb-core-error-quark, pb_core_error)

/* ---- module instance accessors (the ABI) ---- */

const char *
pb_module_get_name (PbModule *module)
{
  g_return_val_if_fail (module != NULL, NULL);
  return module->name;
}

const void *
pb_module_get_config (PbModule *module)
{
  g_return_val_if_fail (module != NULL, NULL);
  return module->config;
}

const void *const *
pb_module_get_sections (PbModule *module, const char *kind, const char *const **names)
{
  static const void *const empty[] = { NULL };
  static const char *const empty_names[] = { NULL };
  PbSectionList *list;

  g_return_val_if_fail (module != NULL && kind != NULL, empty);
  list = module->sections != NULL ? g_hash_table_lookup (module->sections, kind) : NULL;
  if (list == NULL)
    {
      if (names != NULL)
        *names = empty_names;
      return empty;
    }
  if (names != NULL)
    *names = (const char *const *) list->names->pdata;
  return (const void *const *) list->configs->pdata;
}

void
pb_module_set_data (PbModule *module, gpointer data, GDestroyNotify destroy)
{
  g_return_if_fail (module != NULL);
  if (module->destroy != NULL && module->data != NULL)
    module->destroy (module->data);
  module->data = data;
  module->destroy = destroy;
}

gpointer
pb_module_get_data (PbModule *module)
{
  g_return_val_if_fail (module != NULL, NULL);
  return module->data;
}

const char *
pb_module_get_hostname (PbModule *module)
{
  g_return_val_if_fail (module != NULL, NULL);
  return module->gen->core->hostname;
}

const char *
pb_module_get_state_dir (PbModule *module)
{
  g_return_val_if_fail (module != NULL, NULL);
  return module->gen->state_dir;
}

gboolean
pb_module_is_checking (PbModule *module)
{
  g_return_val_if_fail (module != NULL, FALSE);
  return module->gen->checking;
}

const char *
pb_version (void)
{
  return PACKAGE_VERSION;
}

void
pb_abi_version (guint *major, guint *minor)
{
  if (major != NULL)
    *major = PB_ABI_MAJOR;
  if (minor != NULL)
    *minor = PB_ABI_MINOR;
}

/* ---- registration (the ABI) ---- */

static gboolean
registration_allowed (PbModule *module, const char *what, GError **error)
{
  if (module->registration_open)
    return TRUE;
  g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
               "module %s: %s can only be registered during init", module->name, what);
  return FALSE;
}

static char **
strv_copy_or_null (const char *const *v)
{
  return v != NULL ? g_strdupv ((char **) v) : NULL;
}

gboolean
pb_module_add_listener (PbModule *module, const PbListenerSpec *spec, GError **error)
{
  PbGeneration *gen;
  PbListener *l;

  g_return_val_if_fail (module != NULL && spec != NULL, FALSE);
  g_return_val_if_fail (spec->struct_size >= sizeof (PbListenerSpec), FALSE);
  if (!registration_allowed (module, "listeners", error))
    return FALSE;
  if (spec->name == NULL || spec->service == NULL || spec->accept == NULL || spec->format_refusal == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                   "module %s: a listener needs a name, a service, accept and format_refusal", module->name);
      return FALSE;
    }
  if (spec->endpoints == NULL || spec->endpoints[0] == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                   "listener '%s': no endpoint to listen on", spec->name);
      return FALSE;
    }
  for (guint j = 0; spec->endpoints[j] != NULL; j++)
    for (guint k = 0; k < j; k++)
      if (strcmp (spec->endpoints[j], spec->endpoints[k]) == 0)
        {
          g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                       "listener '%s': endpoint %s is listed twice", spec->name, spec->endpoints[j]);
          return FALSE;
        }
  gen = module->gen;
  for (guint i = 0; i < gen->listeners->len; i++)
    {
      PbListener *other = g_ptr_array_index (gen->listeners, i);
      if (strcmp (other->name, spec->name) == 0)
        {
          g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                       "listener name '%s' is already used by module %s", spec->name, other->module->name);
          return FALSE;
        }
      for (guint j = 0; spec->endpoints[j] != NULL; j++)
        if (g_strv_contains ((const char *const *) other->endpoints, spec->endpoints[j]))
          {
            g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                         "listener '%s': endpoint %s is already used by listener '%s'",
                         spec->name, spec->endpoints[j], other->name);
            return FALSE;
          }
    }

  l = g_new0 (PbListener, 1);
  l->spec = *spec;
  l->spec.struct_size = sizeof (PbListenerSpec);
  l->name = g_strdup (spec->name);
  l->service = g_strdup (spec->service);
  l->endpoints = g_strdupv ((char **) spec->endpoints);
  l->spec.name = l->name;
  l->spec.service = l->service;
  l->spec.endpoints = (const char *const *) l->endpoints;
  l->module = module;
  l->sockets = g_ptr_array_new_with_free_func ((GDestroyNotify) pb_bound_socket_unref);
  g_ptr_array_add (gen->listeners, l);
  return TRUE;
}

gboolean
pb_module_add_hook (PbModule *module, const PbHookSpec *spec, GError **error)
{
  PbHook *h;
  GPtrArray *stage_hooks;

  g_return_val_if_fail (module != NULL && spec != NULL, FALSE);
  g_return_val_if_fail (spec->struct_size >= sizeof (PbHookSpec), FALSE);
  if (!registration_allowed (module, "hooks", error))
    return FALSE;
  if ((guint) spec->stage >= PB_STAGE_LAST || spec->func == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                   "module %s: hook with an unknown stage (%d) or no function", module->name, (int) spec->stage);
      return FALSE;
    }
  stage_hooks = module->gen->hooks[spec->stage];
  h = g_new0 (PbHook, 1);
  h->spec = *spec;
  h->spec.struct_size = sizeof (PbHookSpec);
  h->before = strv_copy_or_null (spec->before);
  h->after = strv_copy_or_null (spec->after);
  h->spec.before = (const char *const *) h->before;
  h->spec.after = (const char *const *) h->after;
  h->module = module;
  h->order = stage_hooks->len;
  g_ptr_array_add (stage_hooks, h);
  return TRUE;
}

void
pb_module_add_event_handler (PbModule *module, PbEventFunc func, gpointer user_data)
{
  PbEventHandler *eh;

  g_return_if_fail (module != NULL && func != NULL);
  g_return_if_fail (module->registration_open);
  eh = g_new0 (PbEventHandler, 1);
  eh->func = func;
  eh->user_data = user_data;
  eh->module = module;
  g_ptr_array_add (module->gen->events, eh);
}

static void
command_entry_free (gpointer p)
{
  PbCommandEntry *e = p;
  g_free ((char *) e->spec.name);
  g_free ((char *) e->spec.summary);
  g_free ((char *) e->spec.usage);
  g_strfreev ((char **) e->spec.input_for);
  g_free ((char *) e->provider);
  g_free (e);
}

static PbCommandEntry *
command_entry_new (const PbControlCommandSpec *spec, const char *provider)
{
  PbCommandEntry *e = g_new0 (PbCommandEntry, 1);
  e->spec = *spec;
  e->spec.struct_size = sizeof (PbControlCommandSpec);
  e->spec.name = g_strdup (spec->name);
  e->spec.summary = g_strdup (spec->summary != NULL ? spec->summary : "");
  e->spec.usage = g_strdup (spec->usage != NULL ? spec->usage : spec->name);
  e->spec.input_for = spec->input_for != NULL ? (const char *const *) g_strdupv ((char **) spec->input_for) : NULL;
  e->provider = g_strdup (provider);
  return e;
}

gboolean
pb_module_add_command (PbModule *module, const PbControlCommandSpec *spec, GError **error)
{
  const PbCommandEntry *other;

  g_return_val_if_fail (module != NULL && spec != NULL, FALSE);
  g_return_val_if_fail (spec->struct_size >= G_STRUCT_OFFSET (PbControlCommandSpec, reads_input), FALSE);
  if (!registration_allowed (module, "commands", error))
    return FALSE;
  if (!pb_module_name_is_valid (spec->name) || spec->func == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                   "module %s: invalid command name '%s' or no function", module->name,
                   spec->name != NULL ? spec->name : "(null)");
      return FALSE;
    }
  other = g_hash_table_lookup (module->gen->commands, spec->name);
  if (other != NULL || strcmp (spec->name, "help") == 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                   "module %s: command '%s' is already provided by %s", module->name, spec->name,
                   other != NULL ? other->provider : "core");
      return FALSE;
    }
  {
    PbControlCommandSpec copy = { 0 };
    memcpy (&copy, spec, MIN (spec->struct_size, sizeof copy));
    PbCommandEntry *e = command_entry_new (&copy, module->name);
    g_hash_table_insert (module->gen->commands, (char *) e->spec.name, e);
  }
  return TRUE;
}

void
pb_generation_add_builtin_command (PbGeneration *gen, const PbControlCommandSpec *spec)
{
  PbCommandEntry *e = command_entry_new (spec, "core");
  g_hash_table_replace (gen->commands, (char *) e->spec.name, e);
}

gboolean
pb_module_set_storage (PbModule *module, const PbStorageSpec *spec, GError **error)
{
  g_return_val_if_fail (module != NULL && spec != NULL, FALSE);
  g_return_val_if_fail (spec->struct_size >= sizeof (PbStorageSpec), FALSE);
  if (!registration_allowed (module, "storage", error))
    return FALSE;
  if (module->gen->storage_module != NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                   "module %s: storage is already provided by module %s (enable only one storage module)",
                   module->name, module->gen->storage_module->name);
      return FALSE;
    }
  if (spec->message_begin == NULL || spec->message_write == NULL || spec->message_commit == NULL
      || spec->message_abort == NULL || spec->message_read == NULL || spec->request == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                   "module %s: a storage backend must implement every function of PbStorageSpec", module->name);
      return FALSE;
    }
  module->gen->storage = *spec;
  module->gen->storage.struct_size = sizeof (PbStorageSpec);
  module->gen->storage.name = pb_intern (spec->name != NULL ? spec->name : module->name);
  module->gen->storage_module = module;
  return TRUE;
}

static gboolean
named_unique (GPtrArray *items, gsize name_offset, const char *name)
{
  for (guint i = 0; i < items->len; i++)
    if (strcmp (G_STRUCT_MEMBER (char *, g_ptr_array_index (items, i), name_offset), name) == 0)
      return FALSE;
  return TRUE;
}

gboolean
pb_module_add_transport (PbModule *module, const PbTransportSpec *spec, GError **error)
{
  PbTransport *t;

  g_return_val_if_fail (module != NULL && spec != NULL, FALSE);
  g_return_val_if_fail (spec->struct_size >= G_STRUCT_OFFSET (PbTransportSpec, accepts), FALSE);
  if (!registration_allowed (module, "transports", error))
    return FALSE;
  if (spec->name == NULL || spec->deliver == NULL
      || !named_unique (module->gen->transports, G_STRUCT_OFFSET (PbTransport, name), spec->name))
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                   "module %s: transport '%s' has no deliver function or its name is taken",
                   module->name, spec->name != NULL ? spec->name : "(null)");
      return FALSE;
    }
  t = g_new0 (PbTransport, 1);
  memcpy (&t->spec, spec, MIN (spec->struct_size, sizeof t->spec));
  t->spec.struct_size = sizeof t->spec;
  t->name = g_strdup (spec->name);
  t->spec.name = t->name;
  t->module = module;
  g_ptr_array_add (module->gen->transports, t);
  return TRUE;
}

gboolean
pb_module_add_collector (PbModule *module, const PbCollectorSpec *spec, GError **error)
{
  PbCollector *c;

  g_return_val_if_fail (module != NULL && spec != NULL, FALSE);
  g_return_val_if_fail (spec->struct_size >= sizeof (PbCollectorSpec), FALSE);
  if (!registration_allowed (module, "collectors", error))
    return FALSE;
  if (spec->name == NULL || spec->run == NULL
      || !named_unique (module->gen->collectors, G_STRUCT_OFFSET (PbCollector, name), spec->name))
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_REGISTER,
                   "module %s: collector '%s' has no run function or its name is taken",
                   module->name, spec->name != NULL ? spec->name : "(null)");
      return FALSE;
    }
  c = g_new0 (PbCollector, 1);
  c->spec = *spec;
  c->name = g_strdup (spec->name);
  c->spec.name = c->name;
  c->module = module;
  g_ptr_array_add (module->gen->collectors, c);
  return TRUE;
}

/* ---- building a generation ---- */

static void
section_list_free (gpointer p)
{
  PbSectionList *list = p;
  for (guint i = 0; i + 1 < list->configs->len; i++)
    pb_settings_free (&list->table, g_ptr_array_index (list->configs, i));
  g_ptr_array_unref (list->configs);
  g_ptr_array_unref (list->names);
  g_free (list);
}

static void
module_free (gpointer p)
{
  PbModule *m = p;

  if (m->destroy != NULL && m->data != NULL)
    m->destroy (m->data);
  pb_settings_free (&m->table, m->config);
  g_clear_pointer (&m->sections, g_hash_table_unref);
  g_free (m->name);
  g_free (m);
}

static void
transport_free (gpointer p)
{
  PbTransport *t = p;
  g_free (t->name);
  g_free (t);
}

static void
collector_free (gpointer p)
{
  PbCollector *c = p;
  g_free (c->name);
  g_free (c);
}

static PbGeneration *
generation_new (const char *conf_dir, const char *state_dir, gboolean checking)
{
  PbGeneration *gen = g_new0 (PbGeneration, 1);

  gen->ref = 1;
  gen->checking = checking;
  gen->conf_dir = g_canonicalize_filename (conf_dir, NULL);
  gen->state_dir = g_strdup (state_dir);
  gen->core_table.entries = pb_core_settings;
  gen->core_table.entry_size = sizeof (PbSetting);
  gen->core_table.config_size = sizeof (PbCoreConfig);
  gen->core_table.check = core_config_check;
  gen->modules = g_ptr_array_new_with_free_func (module_free);
  gen->listeners = g_ptr_array_new_with_free_func (pb_listener_free);
  for (guint i = 0; i < PB_STAGE_LAST; i++)
    gen->hooks[i] = g_ptr_array_new_with_free_func (pb_hook_free);
  gen->events = g_ptr_array_new_with_free_func (g_free);
  gen->commands = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, command_entry_free);
  gen->transports = g_ptr_array_new_with_free_func (transport_free);
  gen->collectors = g_ptr_array_new_with_free_func (collector_free);
  gen->sessions = g_hash_table_new (NULL, NULL);
  gen->loaded_at = g_get_real_time ();
  return gen;
}

PbGeneration *
pb_generation_ref (PbGeneration *gen)
{
  g_atomic_int_inc (&gen->ref);
  return gen;
}

void
pb_generation_unref (PbGeneration *gen)
{
  if (gen == NULL || !g_atomic_int_dec_and_test (&gen->ref))
    return;

  g_assert (gen != current_generation);
  /* The queue manager refers to transports: it goes before the modules. */
  g_clear_pointer (&gen->queue, pb_queue_free);
  /* Modules wind down in reverse order of initialisation. */
  for (guint i = gen->modules->len; i > 0; i--)
    {
      PbModule *m = g_ptr_array_index (gen->modules, i - 1);
      if (m->inited && m->info->fini != NULL)
        m->info->fini (m);
      m->inited = FALSE;
    }
  g_ptr_array_unref (gen->listeners);
  for (guint i = 0; i < PB_STAGE_LAST; i++)
    g_ptr_array_unref (gen->hooks[i]);
  g_ptr_array_unref (gen->events);
  g_hash_table_unref (gen->commands);
  g_ptr_array_unref (gen->transports);
  g_ptr_array_unref (gen->collectors);
  g_ptr_array_unref (gen->modules);
  g_hash_table_unref (gen->sessions);
  g_clear_pointer (&gen->tls, pb_tls_creds_unref);
  g_clear_pointer (&gen->resolver, pb_resolver_unref);
  g_clear_pointer (&gen->queue, pb_queue_free);
  g_clear_pointer (&gen->core_retry, g_array_unref);
  g_clear_pointer (&gen->connections, section_list_free);
  pb_settings_free (&gen->core_table, gen->core);
  g_free (gen->conf_dir);
  g_free (gen->state_dir);
  g_free (gen);
}

PbModule *
pb_generation_find_module (PbGeneration *gen, const char *name)
{
  for (guint i = 0; i < gen->modules->len; i++)
    {
      PbModule *m = g_ptr_array_index (gen->modules, i);
      if (strcmp (m->name, name) == 0)
        return m;
    }
  return NULL;
}

static void
generation_fill_hostname (PbCoreConfig *core)
{
  if (*core->hostname == '\0')
    {
      g_free (core->hostname);
      core->hostname = g_strdup (g_get_host_name ());
    }
}

/* [KIND NAME] groups owned by a module's PbSectionInfo. */
static void
generation_parse_sections (PbGeneration *gen, PbConfSource *src, GPtrArray *other_groups, PbDiag *diag)
{
  g_autoptr (GHashTable) kinds = g_hash_table_new (g_str_hash, g_str_equal);

  for (guint i = 0; i < gen->modules->len; i++)
    {
      PbModule *m = g_ptr_array_index (gen->modules, i);
      for (guint k = 0; m->info->sections != NULL && m->info->sections[k] != NULL; k++)
        {
          const PbSectionInfo *si = m->info->sections[k];
          PbModule *other;
          PbSectionList *list;

          if (si->kind == NULL || si->settings == NULL || strcmp (si->kind, "core") == 0
              || strcmp (si->kind, "module") == 0 || strcmp (si->kind, "connection") == 0)
            {
              pb_diag_add (diag, m->conf_file, m->conf_line, "module '%s': invalid section kind", m->name);
              continue;
            }
          other = g_hash_table_lookup (kinds, si->kind);
          if (other != NULL)
            {
              pb_diag_add (diag, m->conf_file, m->conf_line,
                           "module '%s': section kind [%s ...] is already owned by module '%s'",
                           m->name, si->kind, other->name);
              continue;
            }
          g_hash_table_insert (kinds, (char *) si->kind, m);
          list = g_new0 (PbSectionList, 1);
          list->info = si;
          list->table.entries = si->settings;
          list->table.entry_size = m->info->setting_entry_size;
          list->table.config_size = si->config_size;
          list->table.check = si->check;
          list->configs = g_ptr_array_new ();
          list->names = g_ptr_array_new_with_free_func (g_free);
          if (m->sections == NULL)
            m->sections = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, section_list_free);
          g_hash_table_insert (m->sections, (char *) si->kind, list);
        }
    }

  /* The core's own section kind. */
  gen->connections = g_new0 (PbSectionList, 1);
  gen->connections->info = &pb_connection_section;
  gen->connections->table.entries = pb_connection_section.settings;
  gen->connections->table.entry_size = sizeof (PbSetting);
  gen->connections->table.config_size = pb_connection_section.config_size;
  gen->connections->table.check = pb_connection_section.check;
  gen->connections->configs = g_ptr_array_new ();
  gen->connections->names = g_ptr_array_new_with_free_func (g_free);

  for (guint i = 0; i < other_groups->len; i++)
    {
      PbConfGroup *g = g_ptr_array_index (other_groups, i);
      g_autofree char *kind = NULL;
      g_autofree char *name = NULL;
      g_autofree char *where = NULL;
      PbModule *m;
      PbSectionList *list;
      void *config;

      pb_conf_group_split_name (g, &kind, &name);
      if (strcmp (kind, "connection") == 0 && name != NULL)
        {
          where = g_strdup_printf ("[%s]", g->name);
          config = pb_settings_parse_group (&gen->connections->table, g, src->dir, where, diag);
          if (config != NULL)
            {
              g_ptr_array_add (gen->connections->configs, config);
              g_ptr_array_add (gen->connections->names, g_strdup (name));
            }
          continue;
        }
      m = g_hash_table_lookup (kinds, kind);
      if (m == NULL || name == NULL)
        {
          pb_diag_add (diag, g->file, g->line,
                       "unknown group [%s] (expected [core], [module NAME], or a section a loaded module defines)",
                       g->name);
          continue;
        }
      list = g_hash_table_lookup (m->sections, kind);
      where = g_strdup_printf ("[%s]", g->name);
      config = pb_settings_parse_group (&list->table, g, src->dir, where, diag);
      if (config != NULL)
        {
          g_ptr_array_add (list->configs, config);
          g_ptr_array_add (list->names, g_strdup (name));
        }
    }

  g_ptr_array_add (gen->connections->configs, NULL);
  g_ptr_array_add (gen->connections->names, NULL);

  /* NULL-terminate every list for pb_module_get_sections(). */
  for (guint i = 0; i < gen->modules->len; i++)
    {
      PbModule *m = g_ptr_array_index (gen->modules, i);
      GHashTableIter it;
      gpointer v;

      if (m->sections == NULL)
        continue;
      g_hash_table_iter_init (&it, m->sections);
      while (g_hash_table_iter_next (&it, NULL, &v))
        {
          PbSectionList *list = v;
          g_ptr_array_add (list->configs, NULL);
          g_ptr_array_add (list->names, NULL);
        }
    }
}

PbGeneration *
pb_generation_build (const char *conf_dir, const char *state_dir, const char *const *overrides,
                     gboolean checking, PbDiag *diag)
{
  PbConfSource *src;
  PbGeneration *gen;
  g_autoptr (GPtrArray) other_groups = g_ptr_array_new ();
  PbConfGroup *core_group = NULL;
  guint before = diag->lines->len;

  src = pb_conf_source_load_dir (conf_dir, diag);
  if (src == NULL)
    return NULL;
  for (guint i = 0; overrides != NULL && overrides[i] != NULL; i++)
    pb_conf_source_apply_override (src, overrides[i], diag);

  gen = generation_new (src->dir, state_dir, checking);

  for (guint i = 0; i < src->groups->len; i++)
    {
      PbConfGroup *g = g_ptr_array_index (src->groups, i);
      g_autofree char *kind = NULL;
      g_autofree char *name = NULL;

      pb_conf_group_split_name (g, &kind, &name);
      if (strcmp (g->name, "core") == 0)
        core_group = g;
      else if (strcmp (kind, "module") != 0)
        g_ptr_array_add (other_groups, g);
    }

  gen->core = pb_settings_parse_group (&gen->core_table, core_group, src->dir, "[core]", diag);
  if (gen->core == NULL)
    {
      /* Keep checking modules against the default module directory. */
      PbDiag *scratch = pb_diag_new ();
      gen->core = pb_settings_parse_group (&gen->core_table, NULL, src->dir, "[core]", scratch);
      pb_diag_free (scratch);
    }
  generation_fill_hostname (gen->core);
  gen->core_retry = g_array_new (FALSE, FALSE, sizeof (gint64));
  for (guint i = 0; gen->core->retry_schedule[i] != NULL; i++)
    {
      static const PbSetting dur = { "retry-schedule", PB_SETTING_TYPE_DURATION, 0, "5m", 0, 0, NULL, "" };
      gint64 ms = 0;
      g_autofree char *why = NULL;
      if (pb_setting_parse (&dur, gen->core->retry_schedule[i], NULL, &ms, &why))
        g_array_append_val (gen->core_retry, ms);
    }

  for (guint i = 0; i < src->groups->len; i++)
    {
      PbConfGroup *g = g_ptr_array_index (src->groups, i);
      g_autofree char *kind = NULL;
      g_autofree char *name = NULL;
      g_autoptr (GError) error = NULL;
      g_autofree char *where = NULL;
      PbModuleFile *mf;
      PbModule *m;

      pb_conf_group_split_name (g, &kind, &name);
      if (strcmp (kind, "module") != 0)
        continue;
      if (name == NULL)
        {
          pb_diag_add (diag, g->file, g->line, "[module] needs a module name: [module NAME]");
          continue;
        }
      mf = pb_module_file_open (gen->core->module_dir, name, &error);
      if (mf == NULL)
        {
          pb_diag_add (diag, g->file, g->line, "%s", error->message);
          continue;
        }
      m = g_new0 (PbModule, 1);
      m->gen = gen;
      m->file = mf;
      m->info = mf->info;
      m->name = g_strdup (name);
      m->conf_file = pb_intern (g->file);
      m->conf_line = g->line;
      m->table.entries = mf->info->settings;
      m->table.entry_size = mf->info->setting_entry_size;
      m->table.config_size = mf->info->config_size;
      m->table.check = mf->info->check;
      where = g_strdup_printf ("[%s]", g->name);
      if (mf->info->settings != NULL || g->entries->len > 0)
        {
          m->config = pb_settings_parse_group (&m->table, g, src->dir, where, diag);
          if (m->config == NULL)
            {
              module_free (m);
              continue;
            }
        }
      g_ptr_array_add (gen->modules, m);
    }

  generation_parse_sections (gen, src, other_groups, diag);
  pb_conf_source_free (src);

  if (diag->lines->len != before)
    {
      pb_generation_unref (gen);
      return NULL;
    }

  pb_builtins_register (gen);
  for (guint i = 0; i < gen->modules->len; i++)
    {
      PbModule *m = g_ptr_array_index (gen->modules, i);
      g_autoptr (GError) error = NULL;
      gboolean ok;

      m->registration_open = TRUE;
      ok = m->info->init (m, m->config, &error);
      m->registration_open = FALSE;
      m->inited = ok;
      if (!ok)
        {
          pb_diag_add (diag, m->conf_file, m->conf_line, "module '%s' (%s): init failed: %s",
                       m->name, m->file->path, error != NULL ? error->message : "no reason given");
          break;
        }
    }
  if (diag->lines->len == before)
    {
      g_autoptr (GError) error = NULL;
      if (!pb_hooks_sort (gen, &error))
        pb_diag_add (diag, NULL, 0, "%s", error->message);
    }
  if (diag->lines->len == before)
    {
      g_autoptr (GError) error = NULL;
      gen->queue = pb_queue_new (gen, &error);
      if (gen->queue == NULL)
        pb_diag_add (diag, NULL, 0, "%s", error->message);
    }
  if (diag->lines->len != before)
    {
      pb_generation_unref (gen);
      return NULL;
    }
  return gen;
}

gboolean
pb_generation_bind (PbGeneration *gen, PbGeneration *previous, GError **error)
{
  for (guint i = 0; i < gen->listeners->len; i++)
    {
      PbListener *l = g_ptr_array_index (gen->listeners, i);

      for (guint e = 0; l->endpoints[e] != NULL; e++)
        {
          PbBoundSocket *sock = NULL;
          g_autoptr (GError) local = NULL;

          for (guint j = 0; previous != NULL && sock == NULL && j < previous->listeners->len; j++)
            {
              PbListener *old = g_ptr_array_index (previous->listeners, j);
              for (guint k = 0; k < old->sockets->len; k++)
                {
                  PbBoundSocket *s = g_ptr_array_index (old->sockets, k);
                  if (strcmp (s->endpoint, l->endpoints[e]) == 0 && s->fd >= 0)
                    {
                      sock = pb_bound_socket_ref (s);
                      break;
                    }
                }
            }
          if (sock == NULL)
            sock = pb_bound_socket_open (l->endpoints[e], &local);
          if (sock == NULL)
            {
              g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                           "listener '%s' (module %s): %s", l->name, l->module->name, local->message);
              return FALSE;
            }
          g_ptr_array_add (l->sockets, sock);
        }
    }
  return TRUE;
}

gboolean
pb_generation_load_tls (PbGeneration *gen, gboolean self_signed, GError **error)
{
  const PbCoreConfig *core = gen->core;

  if (gen->tls != NULL)
    return TRUE;
  if (*core->tls_certificate != '\0')
    gen->tls = pb_tls_creds_load (core->tls_certificate, core->tls_key, error);
  else if (self_signed)
    gen->tls = pb_tls_creds_ensure_self_signed (gen->state_dir, core->hostname, error);
  else
    return TRUE;
  return gen->tls != NULL;
}

gboolean
pb_generation_start (PbGeneration *gen, GError **error)
{
  if (!pb_generation_load_tls (gen, TRUE, error))
    return FALSE;
  if (gen->storage_module != NULL)
    pb_auth_prepare ();

  for (guint i = 0; i < gen->modules->len; i++)
    {
      PbModule *m = g_ptr_array_index (gen->modules, i);
      g_autoptr (GError) local = NULL;

      if (m->info->start == NULL)
        continue;
      if (!m->info->start (m, &local))
        {
          g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE, "module '%s': start failed: %s",
                       m->name, local != NULL ? local->message : "no reason given");
          return FALSE;
        }
      m->started = TRUE;
    }
  return TRUE;
}

PbGeneration *
pb_generation_activate (PbGeneration *gen)
{
  PbGeneration *previous = current_generation;

  current_generation = gen != NULL ? pb_generation_ref (gen) : NULL;
  if (gen != NULL)
    gen->serial = ++generation_serial;  /* counted when it runs: a refused one uses no number */
  if (gen != NULL)
    for (guint i = 0; i < gen->listeners->len; i++)
      {
        PbListener *l = g_ptr_array_index (gen->listeners, i);
        for (guint k = 0; k < l->sockets->len; k++)
          pb_bound_socket_set_owner (g_ptr_array_index (l->sockets, k), l);
      }
  if (gen != NULL && gen->queue != NULL && !gen->checking)
    pb_queue_start (gen->queue);
  if (previous != NULL)
    {
      pb_queue_stop (previous->queue);
      /* Sockets the new configuration no longer lists stop accepting now. */
      for (guint i = 0; i < previous->listeners->len; i++)
        {
          PbListener *l = g_ptr_array_index (previous->listeners, i);
          for (guint k = 0; k < l->sockets->len; k++)
            {
              PbBoundSocket *s = g_ptr_array_index (l->sockets, k);
              if (s->owner == l)
                pb_bound_socket_set_owner (s, NULL);
            }
        }
      previous->retired = TRUE;
    }
  return previous;
}

PbGeneration *
pb_generation_get_current (void)
{
  return current_generation;
}

void
pb_generation_close_listeners (PbGeneration *gen)
{
  for (guint i = 0; i < gen->listeners->len; i++)
    {
      PbListener *l = g_ptr_array_index (gen->listeners, i);
      for (guint k = 0; k < l->sockets->len; k++)
        pb_bound_socket_set_owner (g_ptr_array_index (l->sockets, k), NULL);
    }
}

typedef struct {
  PbCommandResultFunc done;
  gpointer user_data;
} CommandCall;

static void
command_call_done (PbControlRequest *request, gpointer user_data)
{
  CommandCall *call = user_data;
  gboolean ok = pb_control_request_is_ok (request);

  call->done (ok, ok ? pb_control_request_get_data (request) : NULL,
              ok ? pb_control_request_get_text (request) : pb_control_request_get_error (request), call->user_data);
  g_free (call);
}

void
pb_module_call_command (PbModule *module, const char *command, const char *const *args,
                        PbCommandResultFunc done, gpointer user_data)
{
  static const char *const no_args[] = { NULL };
  const PbCommandEntry *entry;
  PbControlRequest *request;
  CommandCall *call;

  g_return_if_fail (module != NULL && command != NULL && done != NULL);
  call = g_new (CommandCall, 1);
  call->done = done;
  call->user_data = user_data;
  request = pb_control_request_new (args != NULL ? args : no_args, NULL, command_call_done, call);
  entry = g_hash_table_lookup (module->gen->commands, command);
  if (entry == NULL || entry->spec.func == NULL)
    pb_control_request_fail (request, "unknown command '%s' (try 'pillarbox help')", command);
  else
    entry->spec.func (request, entry->spec.user_data);
  pb_control_request_unref (request);
}

const PbCommandEntry *
pb_generation_lookup_command (const char *name, gpointer user_data)
{
  if (current_generation == NULL)
    return NULL;
  return g_hash_table_lookup (current_generation->commands, name);
}

static gint
compare_entries (gconstpointer a, gconstpointer b)
{
  const PbCommandEntry *ea = *(const PbCommandEntry *const *) a;
  const PbCommandEntry *eb = *(const PbCommandEntry *const *) b;
  return strcmp (ea->spec.name, eb->spec.name);
}

GPtrArray *
pb_generation_list_commands (gpointer user_data)
{
  GPtrArray *out = g_ptr_array_new ();

  if (current_generation != NULL)
    {
      GHashTableIter it;
      gpointer v;
      g_hash_table_iter_init (&it, current_generation->commands);
      while (g_hash_table_iter_next (&it, NULL, &v))
        g_ptr_array_add (out, v);
      g_ptr_array_sort (out, compare_entries);
    }
  return out;
}
