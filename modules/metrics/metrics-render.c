/* SPDX-License-Identifier: MIT */
/* metrics: the counters the module keeps, and the page: counters plus what `status` and `sessions` say. */
#include "config.h"
#include "metrics-private.h"

#include <string.h>

/* Reasons shown at 0 before anything happened: a series that appears only
 * on its first increment makes rate() miss that first one. */
static const char *const known_reasons[] = {
  "unknown_recipient", "relay_denied", "too_many_connections", "auth_failed", "protocol_error",
  "message_too_big", "storage_full", "storage_error", "blocked",
};

MetricsState *
metrics_state_new (guint max_domains)
{
  MetricsState *st = g_new0 (MetricsState, 1);

  st->sessions = metrics_counter_new (2);
  st->accepted = metrics_counter_new (1);
  st->recipients = metrics_counter_new (1);
  st->rejected = metrics_counter_new (1);
  st->deliveries = metrics_counter_new (2);
  st->domains = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  st->max_domains = max_domains;
  for (guint i = 0; i < G_N_ELEMENTS (known_reasons); i++)
    metrics_counter_add (st->rejected, &known_reasons[i], 0);
  return st;
}

void
metrics_state_free (MetricsState *st)
{
  if (st == NULL)
    return;
  metrics_counter_free (st->sessions);
  metrics_counter_free (st->accepted);
  metrics_counter_free (st->recipients);
  metrics_counter_free (st->rejected);
  metrics_counter_free (st->deliveries);
  g_hash_table_unref (st->domains);
  g_free (st);
}

const char *
metrics_state_domain_label (MetricsState *st, const char *domain)
{
  g_autofree char *lower = NULL;
  const char *known;

  if (domain == NULL || *domain == '\0')
    return "unknown";
  lower = g_ascii_strdown (domain, -1);
  known = g_hash_table_lookup (st->domains, lower);
  if (known != NULL)
    return known;
  /* Recipients' domains are chosen by whoever sends mail through us:
   * without a bound, each new one would be a new time series forever. */
  if (g_hash_table_size (st->domains) >= st->max_domains || strcmp (lower, "other") == 0)
    return "other";
  known = lower;
  g_hash_table_insert (st->domains, g_steal_pointer (&lower), (gpointer) known);
  return known;
}

char *
metrics_policy_reason (const char *detail)
{
  g_autofree char *stage = NULL;
  gsize len;

  if (detail == NULL)
    return NULL;
  len = strcspn (detail, " ");
  if (len == 0 || len > 32)
    return NULL;
  stage = g_strndup (detail, len);
  for (char *c = stage; *c != '\0'; c++)
    {
      if (*c == '-')
        *c = '_';
      else if (!g_ascii_isalnum (*c) && *c != '_')
        return NULL;
    }
  return g_strconcat ("policy_", stage, NULL);
}

const char *
metrics_message_reason (const char *detail)
{
  if (detail == NULL)
    return "message_refused";
  if (strcmp (detail, "too-big") == 0)
    return "message_too_big";
  if (strcmp (detail, "storage-full") == 0)
    return "storage_full";
  if (strcmp (detail, "storage-error") == 0)
    return "storage_error";
  return "message_refused";
}

/* ---- the page ------------------------------------------------------------------ */

static const char *const state_names[] = { "pending", "deferred", "delivered", "bounced" };

static void
write_queue (GString *out, GVariant *status, const char *key, const char *name, const char *help)
{
  g_autoptr (GVariant) dict = status != NULL ? g_variant_lookup_value (status, key, G_VARIANT_TYPE ("a{su}")) : NULL;

  metrics_expo_family (out, name, METRICS_GAUGE, help);
  if (dict == NULL)
    return;   /* no storage: no queue to describe */
  for (guint i = 0; i < G_N_ELEMENTS (state_names); i++)
    {
      guint32 n = 0;
      const char *labels[] = { "state", state_names[i], NULL };
      g_variant_lookup (dict, state_names[i], "u", &n);
      metrics_expo_sample (out, name, labels, n);
    }
}

static void
write_histogram (GString *out, GVariant *status)
{
  static const char name[] = "pillarbox_storage_commit_seconds";
  g_autoptr (GVariant) h = status != NULL
                               ? g_variant_lookup_value (status, "storage_commit_latency", G_VARIANT_TYPE ("a{sv}"))
                               : NULL;
  g_autoptr (GVariant) bounds = NULL;
  g_autoptr (GVariant) counts = NULL;
  double sum = 0;
  guint64 count = 0;
  gsize n_bounds = 0, n_counts = 0;
  const double *b;
  const guint64 *c;

  metrics_expo_family (out, name, METRICS_HISTOGRAM,
                       "Time from a message's commit request to the storage backend's answer "
                       "(the data is on stable storage, or the commit failed).");
  if (h == NULL)
    return;
  bounds = g_variant_lookup_value (h, "bounds", G_VARIANT_TYPE ("ad"));
  counts = g_variant_lookup_value (h, "counts", G_VARIANT_TYPE ("at"));
  if (bounds == NULL || counts == NULL || !g_variant_lookup (h, "sum", "d", &sum)
      || !g_variant_lookup (h, "count", "t", &count))
    return;
  b = g_variant_get_fixed_array (bounds, &n_bounds, sizeof (double));
  c = g_variant_get_fixed_array (counts, &n_counts, sizeof (guint64));
  for (gsize i = 0; i < n_bounds && i < n_counts; i++)
    {
      GString *le = g_string_new (NULL);
      const char *labels[] = { "le", NULL, NULL };
      metrics_expo_number (le, b[i]);
      labels[1] = le->str;
      metrics_expo_sample (out, "pillarbox_storage_commit_seconds_bucket", labels, (double) c[i]);
      g_string_free (le, TRUE);
    }
  {
    const char *labels[] = { "le", "+Inf", NULL };
    metrics_expo_sample (out, "pillarbox_storage_commit_seconds_bucket", labels, (double) count);
  }
  metrics_expo_sample (out, "pillarbox_storage_commit_seconds_sum", NULL, sum);
  metrics_expo_sample (out, "pillarbox_storage_commit_seconds_count", NULL, (double) count);
}

/* Active sessions per listener: every listener of the configuration at 0,
 * then the `sessions` list counted in. */
static void
write_active (GString *out, GVariant *status, GVariant *sessions)
{
  static const char *const label_names[] = { "service", "listener" };
  MetricsCounter *counter = metrics_counter_new (2);
  GVariantIter it;
  GVariant *item;
  g_autoptr (GVariant) listeners = status != NULL
                                       ? g_variant_lookup_value (status, "listeners", G_VARIANT_TYPE ("aa{sv}"))
                                       : NULL;

  metrics_expo_family (out, "pillarbox_sessions_active", METRICS_GAUGE,
                       "Sessions open now, by the service and name of the listener they came through "
                       "(a scrape counts itself).");
  if (listeners != NULL)
    {
      g_variant_iter_init (&it, listeners);
      while ((item = g_variant_iter_next_value (&it)) != NULL)
        {
          const char *v[2] = { "", "" };
          if (g_variant_lookup (item, "service", "&s", &v[0]) && g_variant_lookup (item, "name", "&s", &v[1]))
            metrics_counter_add (counter, v, 0);
          g_variant_unref (item);
        }
    }
  if (sessions != NULL && g_variant_is_of_type (sessions, G_VARIANT_TYPE ("aa{sv}")))
    {
      g_variant_iter_init (&it, sessions);
      while ((item = g_variant_iter_next_value (&it)) != NULL)
        {
          const char *v[2] = { "", "" };
          if (g_variant_lookup (item, "service", "&s", &v[0]) && g_variant_lookup (item, "listener", "&s", &v[1]))
            metrics_counter_add (counter, v, 1);
          g_variant_unref (item);
        }
    }
  if (sessions != NULL)
    metrics_counter_write (counter, out, "pillarbox_sessions_active", label_names);
  metrics_counter_free (counter);
}

void
metrics_render (MetricsState *st, GVariant *status, GVariant *sessions, GString *out)
{
  static const char *const service_listener[] = { "service", "listener" };
  static const char *const service[] = { "service" };
  static const char *const reason[] = { "reason" };
  static const char *const result_domain[] = { "result", "domain" };
  const char *version = NULL;
  gint64 start = 0, uptime = 0;
  guint32 generation = 0, sources = 0;
  guint64 rss = 0;

  metrics_expo_family (out, "pillarbox_sessions_total", METRICS_COUNTER,
                       "Sessions admitted (past the connect checks), by the service and name of the "
                       "listener they came through.");
  metrics_counter_write (st->sessions, out, "pillarbox_sessions_total", service_listener);
  write_active (out, status, sessions);

  metrics_expo_family (out, "pillarbox_messages_accepted_total", METRICS_COUNTER,
                       "Messages accepted and stored durably, by the service that received them "
                       "(pop3-collector for collected mail).");
  metrics_counter_write (st->accepted, out, "pillarbox_messages_accepted_total", service);
  metrics_expo_family (out, "pillarbox_recipients_accepted_total", METRICS_COUNTER,
                       "Recipients of the accepted messages, by service.");
  metrics_counter_write (st->recipients, out, "pillarbox_recipients_accepted_total", service);
  metrics_expo_family (out, "pillarbox_messages_rejected_total", METRICS_COUNTER,
                       "Refusals by reason: connections, logins, commands, recipients and messages "
                       "refused (policy_STAGE: a policy module refused at that stage).");
  metrics_counter_write (st->rejected, out, "pillarbox_messages_rejected_total", reason);
  metrics_expo_family (out, "pillarbox_deliveries_total", METRICS_COUNTER,
                       "Outbound delivery attempts' outcomes per recipient (delivered, deferred, bounced, "
                       "expired), by recipient domain (beyond max-domains: \"other\").");
  metrics_counter_write (st->deliveries, out, "pillarbox_deliveries_total", result_domain);
  metrics_expo_family (out, "pillarbox_ids_blocks_total", METRICS_COUNTER,
                       "Addresses the intrusion detection module started blocking.");
  metrics_expo_sample (out, "pillarbox_ids_blocks_total", NULL, (double) st->ids_blocks);

  write_queue (out, status, "queue_messages", "pillarbox_queue_messages",
               "Queued messages with at least one remote recipient in this state.");
  write_queue (out, status, "queue", "pillarbox_queue_recipients",
               "Queue entries (one per remote recipient) by state.");
  write_histogram (out, status);

  if (status != NULL)
    {
      g_variant_lookup (status, "version", "&s", &version);
      g_variant_lookup (status, "start_time", "x", &start);
      g_variant_lookup (status, "uptime_seconds", "x", &uptime);
      g_variant_lookup (status, "generation", "u", &generation);
    }
  metrics_expo_family (out, "pillarbox_start_time_seconds", METRICS_GAUGE,
                       "When pillarboxd started, in seconds since the Unix epoch.");
  if (start > 0)
    metrics_expo_sample (out, "pillarbox_start_time_seconds", NULL, (double) start);
  metrics_expo_family (out, "pillarbox_uptime_seconds", METRICS_GAUGE, "Seconds since pillarboxd started.");
  if (status != NULL)
    metrics_expo_sample (out, "pillarbox_uptime_seconds", NULL, (double) uptime);
  metrics_expo_family (out, "pillarbox_config_generation", METRICS_GAUGE,
                       "The configuration generation serving; it grows at each reload, when this module's "
                       "counters start again from zero.");
  if (generation > 0)
    metrics_expo_sample (out, "pillarbox_config_generation", NULL, generation);
  metrics_expo_family (out, "pillarbox_loop_sources", METRICS_GAUGE,
                       "Sources (timers, idles, watches) attached to the daemon's loops and not yet freed; "
                       "at rest it returns to the same value after any load, a number that grows is a leak.");
  if (status != NULL && g_variant_lookup (status, "loop_sources", "u", &sources))
    metrics_expo_sample (out, "pillarbox_loop_sources", NULL, sources);
  metrics_expo_family (out, "process_resident_memory_bytes", METRICS_GAUGE,
                       "pillarboxd's resident memory, in bytes.");
  if (status != NULL && g_variant_lookup (status, "rss_bytes", "t", &rss) && rss > 0)
    metrics_expo_sample (out, "process_resident_memory_bytes", NULL, (double) rss);
  metrics_expo_family (out, "pillarbox_build_info", METRICS_GAUGE, "Always 1; the version as a label.");
  if (version != NULL)
    {
      const char *labels[] = { "version", version, NULL };
      metrics_expo_sample (out, "pillarbox_build_info", labels, 1);
    }
}
