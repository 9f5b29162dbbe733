/* SPDX-License-Identifier: MIT */
/* relay-sender: deliveries (recipients grouped by route, servers tried in order) and the cap hooks. */
#include "config.h"
#include "relay-private.h"

#include <string.h>

/*
 * How the queue manager asks this transport:
 *
 *  - which mail it carries: PbTransportSpec.accepts (relay_accepts): the
 *    first [relay-route] whose senders and recipients match decides
 *    (action relay: yes; pass: no); when none matches, accept-unmatched.
 *
 *  - whether it can take more now: PbTransportSpec.ready (relay_ready, ABI
 *    1.1): the queue manager holds the mail back until a cap has room. A
 *    delivery that still finds every cap full (parallel sessions took the
 *    last places) is answered at once, for every recipient, "451 4.4.5 relay
 *    NAME: limit of 50 messages per 1h reached; next one allowed at
 *    2024-05-01T10:12:00Z (in 734 s) [retry-at=UNIX]" without a connection.
 */

typedef struct {
  Relay *relay;
  PbDelivery *delivery;
  guint pending;
  guint idle;
} RelayDelivery;

static void
relay_delivery_finish (RelayDelivery *rd)
{
  g_hash_table_remove (rd->relay->deliveries, rd);
  pb_delivery_complete (rd->delivery);
  g_free (rd);
}

static void
relay_job_done (gpointer data)
{
  RelayDelivery *rd = data;

  if (--rd->pending == 0)
    relay_delivery_finish (rd);
}

static gboolean
relay_empty_done (gpointer data)
{
  RelayDelivery *rd = data;
  rd->idle = 0;
  relay_delivery_finish (rd);
  return G_SOURCE_REMOVE;
}

static SmtpcTarget *
relay_target_new (Relay *relay, RelayServer *s)
{
  const RelayConfig *c = relay->config;
  const RelayServerConfig *sc = s->config;
  SmtpcTarget *t = smtpc_target_new ();
  static const SmtpcTlsMode tls_modes[] = {
    [RELAY_SECURITY_NONE] = SMTPC_TLS_NONE,
    [RELAY_SECURITY_STARTTLS] = SMTPC_TLS_STARTTLS,
    [RELAY_SECURITY_STARTTLS_IF_OFFERED] = SMTPC_TLS_OPPORTUNISTIC,
    [RELAY_SECURITY_TLS] = SMTPC_TLS_IMPLICIT,
  };
  static const SmtpcAuthMode auth_modes[] = {
    [RELAY_AUTH_AUTO] = SMTPC_AUTH_AUTO,
    [RELAY_AUTH_NONE] = SMTPC_AUTH_NONE,
    [RELAY_AUTH_PLAIN] = SMTPC_AUTH_PLAIN,
    [RELAY_AUTH_LOGIN] = SMTPC_AUTH_LOGIN,
  };

  t->ep.host = g_strdup (s->host);
  t->ep.address = g_strdup (s->host);
  t->ep.port = s->port;
  t->ep.tls = tls_modes[sc->security];
  t->ep.tls_verify = sc->verify_certificate
                     && (sc->security == RELAY_SECURITY_STARTTLS || sc->security == RELAY_SECURITY_TLS);
  t->ep.auth = s->user != NULL ? auth_modes[sc->auth] : SMTPC_AUTH_NONE;
  t->ep.user = g_strdup (s->user);
  t->ep.password = g_strdup (s->password);
  t->ep.auth_without_tls = sc->auth_without_tls;
  t->ep.helo_name = g_strdup (c->helo_name);
  t->ep.timeouts.connect = c->connect_timeout;
  t->ep.timeouts.command = c->command_timeout;
  t->ep.timeouts.data_init = c->data_init_timeout;
  t->ep.timeouts.data_block = c->data_block_timeout;
  t->ep.timeouts.data_done = c->data_done_timeout;
  t->key = g_strdup_printf ("relay:%s", s->name);
  t->label = g_strdup_printf ("relay %s", s->name);
  t->max_connections = (guint) sc->max_connections;
  t->max_messages_per_session = (guint) sc->max_messages_per_session;
  t->max_recipients_per_message = (guint) sc->max_recipients_per_message;
  t->max_recipients_per_session = (guint) sc->max_recipients_per_session;
  t->reuse_time = c->reuse_time;
  t->cap_data = s;
  return t;
}

gboolean
relay_accepts (const char *mail_from, const char *recipient, gpointer user_data)
{
  Relay *relay = user_data;
  const RelayRoute *r = relay_route_find (relay->routes, mail_from, recipient);

  if (r != NULL)
    return r->config->action == RELAY_ACTION_RELAY;
  return relay->config->accept_unmatched;
}

void
relay_deliver (PbDelivery *delivery, gpointer user_data)
{
  Relay *relay = user_data;
  const char *const *rcpts = pb_delivery_get_recipients (delivery);
  const char *sender = pb_delivery_get_mail_from (delivery);
  RelayDelivery *rd = g_new0 (RelayDelivery, 1);
  g_autoptr (GPtrArray) lists = g_ptr_array_new ();                                   /* GPtrArray * of servers */
  g_autoptr (GPtrArray) groups = g_ptr_array_new_with_free_func ((GDestroyNotify) g_array_unref); /* GArray * */

  rd->relay = relay;
  rd->delivery = delivery;
  g_hash_table_add (relay->deliveries, rd);

  /* Recipients of one delivery may match different routes (a route may
   * name single addresses): each group goes through its own servers. A
   * route that says pass still gets its mail delivered when the queue
   * manager sends it here (a rewritten sender may no longer match). */
  for (guint i = 0; rcpts[i] != NULL; i++)
    {
      const RelayRoute *r = relay_route_find (relay->routes, sender, rcpts[i]);
      GPtrArray *servers = r != NULL && r->config->action == RELAY_ACTION_RELAY ? r->servers : relay->servers;
      guint g;

      for (g = 0; g < lists->len && g_ptr_array_index (lists, g) != servers; g++)
        ;
      if (g == lists->len)
        {
          g_ptr_array_add (lists, servers);
          g_ptr_array_add (groups, g_array_new (FALSE, FALSE, sizeof (guint)));
        }
      g_array_append_val ((GArray *) g_ptr_array_index (groups, g), i);
    }

  if (groups->len == 0 || relay->client == NULL)
    {
      rd->idle = pb_idle_add (relay_empty_done, rd);
      return;
    }
  rd->pending = groups->len;
  for (guint g = 0; g < groups->len; g++)
    {
      GPtrArray *servers = g_ptr_array_index (lists, g);
      GArray *idx = g_ptr_array_index (groups, g);
      GPtrArray *targets = g_ptr_array_new_with_free_func ((GDestroyNotify) smtpc_target_free);

      for (guint k = 0; k < servers->len; k++)
        g_ptr_array_add (targets, relay_target_new (relay, g_ptr_array_index (servers, k)));
      smtpc_client_deliver (relay->client, delivery, (const guint *) idx->data, idx->len, targets, relay_job_done, rd);
    }
}

void
relay_deliveries_cancel (Relay *relay)
{
  GHashTableIter it;
  gpointer value;

  /* Ending the client ends its jobs, which completes their deliveries. */
  g_clear_pointer (&relay->client, smtpc_client_free);
  while (relay->deliveries != NULL && g_hash_table_size (relay->deliveries) > 0)
    {
      RelayDelivery *rd;
      g_hash_table_iter_init (&it, relay->deliveries);
      g_hash_table_iter_next (&it, &value, NULL);
      rd = value;
      if (rd->idle != 0)
        g_source_remove (rd->idle);
      relay_delivery_finish (rd);
    }
}

/* ---- periodic caps ------------------------------------------------------- */

gint64
relay_ready (const char *destination, gpointer user_data)
{
  Relay *relay = user_data;
  gint64 now = relay->now_ms ();
  gint64 best = G_MAXINT64;

  relay_cap_log_sync (&relay->cap_log, now);
  for (guint i = 0; i < relay->servers->len; i++)
    {
      RelayServer *s = g_ptr_array_index (relay->servers, i);
      gint64 next = s->caps != NULL ? relay_caps_next_allowed (s->caps, now) : now;
      if (next <= now)
        return 0;
      best = MIN (best, next);
    }
  return best * 1000;
}

static guint
relay_cap_reserve (gpointer data, SmtpcTarget *t, guint wanted, char **why, gint64 *retry_at)
{
  Relay *relay = data;
  RelayServer *s = t->cap_data;
  gint64 now;
  guint granted;

  if (s == NULL || s->caps == NULL)
    return MAX (wanted, 1);
  now = relay->now_ms ();
  relay_cap_log_sync (&relay->cap_log, now);
  granted = relay_caps_reserve (s->caps, wanted, now, why);
  if (granted == 0)
    {
      /* Full only with messages under way: a place frees when they end, soon. */
      gint64 next = relay_caps_next_allowed (s->caps, now);
      *retry_at = (MAX (next, now + 2000) + 999) / 1000;
    }
  return granted;
}

static void
relay_cap_settle (gpointer data, SmtpcTarget *t, guint granted, gboolean delivered, guint accepted)
{
  Relay *relay = data;
  RelayServer *s = t->cap_data;
  const RelayEvent *ev;

  if (s == NULL || s->caps == NULL)
    return;
  ev = relay_caps_settle (s->caps, granted, delivered, accepted, relay->now_ms ());
  if (ev != NULL && relay->cap_log_ready)
    relay_cap_log_append (&relay->cap_log, s->name, ev);
}

const SmtpcCapHooks relay_cap_hooks = {
  .reserve = relay_cap_reserve,
  .settle = relay_cap_settle,
};
