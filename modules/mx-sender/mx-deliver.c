/* SPDX-License-Identifier: MIT */
/* mx-sender: a delivery: overrides, MX lookup, host addresses, then the shared SMTP client. */
#include "config.h"
#include "mx-private.h"

#include <string.h>

/*
 * RFC 5321 §5.1, in order:
 *   - an [mx-override DOMAIN] sends the domain to its hosts, no DNS asked;
 *   - a domain literal ("[192.0.2.1]") is its own address;
 *   - MX records: a null MX (RFC 7505) bounces at once with 556 5.1.10;
 *     hosts are tried by preference (equal ones in random order), without
 *     this server and anything it is preferred over;
 *   - no MX record (NODATA): the domain itself is the one host (the
 *     "implicit MX"), through its A and AAAA records;
 *   - NXDOMAIN bounces (550 5.1.2); a DNS failure is temporary (451 4.4.3).
 * Every address of every host becomes one target of the job; the job moves
 * to the next when one cannot be reached, refuses the session, or answers
 * a recipient with 4xx.
 */

typedef struct {
  MxHost *host;
  GPtrArray *v4;      /* char * */
  GPtrArray *v6;
} HostAddrs;

/* One PbDelivery: its recipients are grouped by domain (the queue manager
 * sends one domain per delivery, but nothing here relies on it). */
typedef struct {
  PbDelivery *delivery;
  guint pending;
} MxParent;

/* The recipients of one domain. */
typedef struct {
  Mx *mx;
  MxParent *parent;
  PbDelivery *delivery;
  GArray *indexes;    /* guint: recipient indexes in the delivery */
  char *domain;       /* as written, lower case */
  char *lookup;       /* its ASCII form for DNS (IDNA) */
  GCancellable *cancel;
  GPtrArray *hosts;   /* HostAddrs * */
  gboolean implicit;
  guint lookups;
  gboolean tempfail;
  char *tempfail_text;
  guint idle;
  gboolean in_job;
  GPtrArray *lookup_data;  /* Lookup *: a cancelled lookup never calls back */
} MxDelivery;

typedef struct {
  MxDelivery *md;
  HostAddrs *ha;
} Lookup;

static void
host_addrs_free (gpointer p)
{
  HostAddrs *ha = p;
  mx_host_free (ha->host);
  g_ptr_array_unref (ha->v4);
  g_ptr_array_unref (ha->v6);
  g_free (ha);
}

static void
mx_delivery_free (MxDelivery *md)
{
  g_clear_object (&md->cancel);
  if (md->hosts != NULL)
    g_ptr_array_unref (md->hosts);
  g_free (md->tempfail_text);
  g_free (md->domain);
  g_free (md->lookup);
  g_array_unref (md->indexes);
  g_ptr_array_unref (md->lookup_data);
  g_free (md);
}

static void
mx_delivery_finish (MxDelivery *md)
{
  MxParent *parent = md->parent;

  g_hash_table_remove (md->mx->deliveries, md);
  mx_delivery_free (md);
  if (--parent->pending == 0)
    {
      pb_delivery_complete (parent->delivery);
      g_free (parent);
    }
}

static void
mx_job_done (gpointer data)
{
  mx_delivery_finish (data);
}

/* Every recipient gets the same result, and the delivery ends. */
static void
mx_fail_all (MxDelivery *md, guint code, const char *enhanced, const char *format, ...) G_GNUC_PRINTF (4, 5);

static void
mx_fail_all (MxDelivery *md, guint code, const char *enhanced, const char *format, ...)
{
  const char *const *rcpts = pb_delivery_get_recipients (md->delivery);
  g_autofree char *text = NULL;
  va_list ap;

  va_start (ap, format);
  text = g_strdup_vprintf (format, ap);
  va_end (ap);
  for (guint k = 0; k < md->indexes->len; k++)
    {
      guint i = g_array_index (md->indexes, guint, k);
      pb_delivery_set_result (md->delivery, i, code, enhanced, text);
      pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_INFO, NULL, pb_delivery_get_queue_id (md->delivery),
                      "to=<%s>, status=%s (%s)", rcpts[i], code / 100 == 5 ? "bounced" : "deferred", text);
    }
  mx_delivery_finish (md);
}

static SmtpcTarget *
mx_target_new (Mx *mx, const char *host, const char *address, guint16 port, gint tls, gboolean verify)
{
  const MxConfig *c = mx->config;
  SmtpcTarget *t = smtpc_target_new ();
  gboolean v6 = strchr (address, ':') != NULL;

  t->ep.host = g_strdup (host);
  t->ep.address = g_strdup (address);
  t->ep.port = port;
  t->ep.tls = tls == MX_TLS_NONE ? SMTPC_TLS_NONE : tls == MX_TLS_REQUIRED ? SMTPC_TLS_STARTTLS
                                                                           : SMTPC_TLS_OPPORTUNISTIC;
  t->ep.tls_verify = verify && tls == MX_TLS_REQUIRED;
  t->ep.auth = SMTPC_AUTH_NONE;
  t->ep.helo_name = g_strdup (c->helo_name);
  t->ep.timeouts.connect = c->connect_timeout;
  t->ep.timeouts.command = c->command_timeout;
  t->ep.timeouts.data_init = c->data_init_timeout;
  t->ep.timeouts.data_block = c->data_block_timeout;
  t->ep.timeouts.data_done = c->data_done_timeout;
  /* Sessions are shared per server address: another domain with the same
   * MX host reuses them (the host name only feeds SNI and logs). */
  t->key = v6 ? g_strdup_printf ("mx:[%s]:%u", address, port) : g_strdup_printf ("mx:%s:%u", address, port);
  t->label = g_strcmp0 (host, address) == 0 ? g_strdup_printf ("%s:%u", host, port)
                                            : g_strdup_printf ("%s[%s]:%u", host, address, port);
  t->max_connections = (guint) c->max_connections;
  t->max_messages_per_session = (guint) c->max_messages_per_session;
  t->max_recipients_per_message = (guint) c->max_recipients_per_message;
  t->reuse_time = c->reuse_time;
  return t;
}

static void
mx_start_job (MxDelivery *md, GPtrArray *targets)
{
  md->in_job = TRUE;
  smtpc_client_deliver (md->mx->client, md->delivery, (const guint *) md->indexes->data, md->indexes->len, targets,
                        mx_job_done, md);
}

static void
mx_addresses_known (MxDelivery *md)
{
  Mx *mx = md->mx;
  const MxConfig *c = mx->config;
  GPtrArray *targets = g_ptr_array_new_with_free_func ((GDestroyNotify) smtpc_target_free);

  for (guint i = 0; i < md->hosts->len && targets->len < (guint) c->max_addresses; i++)
    {
      HostAddrs *ha = g_ptr_array_index (md->hosts, i);
      GPtrArray *first = c->address_preference == MX_PREFER_IPV6 ? ha->v6 : ha->v4;
      GPtrArray *second = c->address_preference == MX_PREFER_IPV6 ? ha->v4 : ha->v6;

      for (guint k = 0; k < first->len && targets->len < (guint) c->max_addresses; k++)
        g_ptr_array_add (targets, mx_target_new (mx, ha->host->host, g_ptr_array_index (first, k), (guint16) c->port,
                                                 c->tls, c->verify_certificate));
      for (guint k = 0; k < second->len && targets->len < (guint) c->max_addresses; k++)
        g_ptr_array_add (targets, mx_target_new (mx, ha->host->host, g_ptr_array_index (second, k), (guint16) c->port,
                                                 c->tls, c->verify_certificate));
    }
  if (targets->len > 0)
    {
      mx_start_job (md, targets);
      return;
    }
  g_ptr_array_unref (targets);
  if (md->tempfail)
    mx_fail_all (md, 451, "4.4.3", "DNS lookup of %s's mail hosts failed: %s", md->domain,
                 md->tempfail_text != NULL ? md->tempfail_text : "no answer");
  else if (md->implicit)
    /* RFC 5321 §5.1: no MX and no address: the domain takes no mail. */
    mx_fail_all (md, 550, "5.4.4", "%s has no MX record and no address (A or AAAA) record", md->domain);
  else
    mx_fail_all (md, 451, "4.4.4", "no MX host of %s has an address (A or AAAA) record", md->domain);
}

static void
on_address (const PbDnsAnswer *answer, gpointer data)
{
  Lookup *l = data;
  MxDelivery *md = l->md;

  if (answer->status == PB_DNS_OK)
    for (guint i = 0; answer->records[i] != NULL; i++)
      g_ptr_array_add (answer->rrtype == PB_DNS_A ? l->ha->v4 : l->ha->v6, g_strdup (answer->records[i]));
  else if (answer->status == PB_DNS_TEMPFAIL || answer->status == PB_DNS_PERMFAIL)
    {
      md->tempfail = TRUE;
      if (md->tempfail_text == NULL)
        md->tempfail_text = g_strdup_printf ("%s: %s", answer->name, answer->error != NULL ? answer->error : "no answer");
    }
  if (--md->lookups == 0)
    mx_addresses_known (md);
}

/* Looks up the addresses of every host at once (a few small queries). */
static void
mx_resolve_hosts (MxDelivery *md)
{
  PbResolver *resolver = pb_module_get_resolver (md->mx->module);

  for (guint i = 0; i < md->hosts->len; i++)
    {
      HostAddrs *ha = g_ptr_array_index (md->hosts, i);
      g_autoptr (GInetAddress) literal = g_inet_address_new_from_string (ha->host->host);

      if (literal != NULL)
        {
          /* An MX naming an address is wrong (RFC 5321 §5.1) but common enough to honour. */
          g_ptr_array_add (g_inet_address_get_family (literal) == G_SOCKET_FAMILY_IPV4 ? ha->v4 : ha->v6,
                           g_inet_address_to_string (literal));
          continue;
        }
      for (guint k = 0; k < 2; k++)
        {
          Lookup *l = g_new0 (Lookup, 1);
          l->md = md;
          l->ha = ha;
          g_ptr_array_add (md->lookup_data, l);
          md->lookups++;
          pb_resolver_lookup (resolver, ha->host->host, k == 0 ? PB_DNS_A : PB_DNS_AAAA, md->cancel, on_address, l);
        }
    }
  if (md->lookups == 0)
    {
      /* Only literals: still report from the loop, not from inside a DNS callback's caller. */
      mx_addresses_known (md);
    }
}

static void
mx_set_hosts (MxDelivery *md, GPtrArray *hosts)
{
  md->hosts = g_ptr_array_new_with_free_func (host_addrs_free);
  for (guint i = 0; i < hosts->len; i++)
    {
      HostAddrs *ha = g_new0 (HostAddrs, 1);
      ha->host = g_ptr_array_index (hosts, i);
      ha->v4 = g_ptr_array_new_with_free_func (g_free);
      ha->v6 = g_ptr_array_new_with_free_func (g_free);
      g_ptr_array_add (md->hosts, ha);
    }
  g_ptr_array_set_free_func (hosts, NULL);
}

static void
on_mx (const PbDnsAnswer *answer, gpointer data)
{
  MxDelivery *md = data;
  Mx *mx = md->mx;
  g_autoptr (GPtrArray) hosts = NULL;
  const char *self[] = { pb_module_get_hostname (mx->module), mx->config->helo_name, NULL };
  MxPlanKind kind;

  switch (answer->status)
    {
    case PB_DNS_NXDOMAIN:
      mx_fail_all (md, 550, "5.1.2", "the domain %s does not exist (DNS: NXDOMAIN)", md->domain);
      return;
    case PB_DNS_TEMPFAIL:
    case PB_DNS_PERMFAIL:
      mx_fail_all (md, 451, "4.4.3", "DNS lookup of the MX of %s failed: %s", md->domain,
                   answer->error != NULL ? answer->error : "no answer");
      return;
    case PB_DNS_NODATA:
      kind = MX_PLAN_HOSTS;
      hosts = g_ptr_array_new_with_free_func (mx_host_free);
      break;
    case PB_DNS_OK:
    default:
      {
        g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func (g_free);
        kind = mx_plan_from_records (answer->records, self, (guint) mx->config->max_mx_hosts, mx->rand, refused,
                                     &hosts);
        for (guint i = 0; i < refused->len; i++)
          pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, NULL, pb_delivery_get_queue_id (md->delivery),
                          "an MX record of %s names '%s', which is not a host name: not used",
                          md->domain, (const char *) g_ptr_array_index (refused, i));
      }
      break;
    }
  switch (kind)
    {
    case MX_PLAN_NULL_MX:
      mx_fail_all (md, 556, "5.1.10", "the domain %s accepts no mail (null MX, RFC 7505)", md->domain);
      return;
    case MX_PLAN_LOOP:
      mx_fail_all (md, 554, "5.4.6", "mail for %s loops back to myself (this server is its best MX host)", md->domain);
      return;
    case MX_PLAN_INVALID:
      mx_fail_all (md, 451, "4.4.3", "the MX records of %s cannot be read", md->domain);
      return;
    case MX_PLAN_HOSTS:
      break;
    }
  if (hosts->len == 0)
    {
      /* RFC 5321 §5.1: no MX: the domain is its own mail host. */
      MxHost *h = g_new0 (MxHost, 1);
      h->host = g_strdup (md->lookup);
      g_ptr_array_add (hosts, h);
      md->implicit = TRUE;
    }
  mx_set_hosts (md, hosts);
  mx_resolve_hosts (md);
}

static gboolean
mx_later (gpointer data)
{
  MxDelivery *md = data;
  const MxOverrideConfig *o;
  g_autofree char *literal = NULL;

  md->idle = 0;
  o = g_hash_table_lookup (md->mx->overrides, md->domain);
  if (o != NULL)
    {
      GPtrArray *targets = g_ptr_array_new_with_free_func ((GDestroyNotify) smtpc_target_free);
      for (guint i = 0; o->hosts[i] != NULL; i++)
        {
          g_autofree char *host = NULL;
          guint16 port;
          SmtpcTarget *t;
          if (!smtpc_split_endpoint (o->hosts[i], &host, &port))
            continue;
          /* A name is resolved by the core when connecting (A, then AAAA). */
          t = mx_target_new (md->mx, host, host, port, o->tls, o->verify_certificate);
          g_free (t->key);
          t->key = g_strdup_printf ("override:%s", o->hosts[i]);
          g_ptr_array_add (targets, t);
        }
      mx_start_job (md, targets);
      return G_SOURCE_REMOVE;
    }
  literal = mx_domain_literal (md->domain);
  if (literal != NULL)
    {
      GPtrArray *targets = g_ptr_array_new_with_free_func ((GDestroyNotify) smtpc_target_free);
      g_ptr_array_add (targets, mx_target_new (md->mx, literal, literal, (guint16) md->mx->config->port,
                                               md->mx->config->tls, FALSE));
      mx_start_job (md, targets);
      return G_SOURCE_REMOVE;
    }
  if (md->domain[0] == '[' || md->domain[0] == '\0')
    {
      mx_fail_all (md, 553, "5.1.2", "'%s' is not a domain or address literal", md->domain);
      return G_SOURCE_REMOVE;
    }
  if (md->lookup == NULL)
    {
      mx_fail_all (md, 553, "5.1.2", "'%s' is not a valid domain name", md->domain);
      return G_SOURCE_REMOVE;
    }
  pb_resolver_lookup (pb_module_get_resolver (md->mx->module), md->lookup, PB_DNS_MX, md->cancel, on_mx, md);
  return G_SOURCE_REMOVE;
}

static char *
domain_of (const char *address)
{
  const char *at = strrchr (address, '@');
  char *d = g_utf8_strdown (at != NULL ? at + 1 : "", -1);
  gsize len = strlen (d);

  if (len > 0 && d[len - 1] == '.')
    d[len - 1] = '\0';
  return d;
}

void
mx_deliver (PbDelivery *delivery, gpointer user_data)
{
  Mx *mx = user_data;
  const char *const *rcpts = pb_delivery_get_recipients (delivery);
  MxParent *parent = g_new0 (MxParent, 1);
  g_autoptr (GPtrArray) groups = g_ptr_array_new ();

  parent->delivery = delivery;
  for (guint i = 0; rcpts[i] != NULL; i++)
    {
      g_autofree char *domain = domain_of (rcpts[i]);
      MxDelivery *md = NULL;

      for (guint g = 0; g < groups->len && md == NULL; g++)
        if (strcmp (((MxDelivery *) g_ptr_array_index (groups, g))->domain, domain) == 0)
          md = g_ptr_array_index (groups, g);
      if (md == NULL)
        {
          md = g_new0 (MxDelivery, 1);
          md->mx = mx;
          md->parent = parent;
          md->delivery = delivery;
          md->indexes = g_array_new (FALSE, FALSE, sizeof (guint));
          md->cancel = g_cancellable_new ();
          md->lookup_data = g_ptr_array_new_with_free_func (g_free);
          md->domain = g_steal_pointer (&domain);
          /* IDNA (RFC 5890): DNS is asked in the ASCII form. */
          md->lookup = md->domain[0] == '[' ? g_strdup (md->domain) : g_hostname_to_ascii (md->domain);
          g_ptr_array_add (groups, md);
        }
      g_array_append_val (md->indexes, i);
    }
  if (groups->len == 0)
    {
      /* No recipient at all: a group of none, so the delivery completes from the loop. */
      MxDelivery *md = g_new0 (MxDelivery, 1);
      md->mx = mx;
      md->parent = parent;
      md->delivery = delivery;
      md->indexes = g_array_new (FALSE, FALSE, sizeof (guint));
      md->cancel = g_cancellable_new ();
      md->lookup_data = g_ptr_array_new_with_free_func (g_free);
      md->domain = g_strdup ("");
      g_ptr_array_add (groups, md);
    }
  parent->pending = groups->len;
  for (guint g = 0; g < groups->len; g++)
    {
      MxDelivery *md = g_ptr_array_index (groups, g);
      g_hash_table_add (mx->deliveries, md);
      /* deliver() returns at once; the work starts from the loop. */
      md->idle = pb_idle_add (mx_later, md);
    }
}

void
mx_deliveries_cancel (Mx *mx)
{
  GHashTableIter it;
  gpointer value;

  /* Jobs first: ending them completes their deliveries. */
  g_clear_pointer (&mx->client, smtpc_client_free);
  while (g_hash_table_size (mx->deliveries) > 0)
    {
      MxDelivery *md;
      g_hash_table_iter_init (&it, mx->deliveries);
      g_hash_table_iter_next (&it, &value, NULL);
      md = value;
      /* Waiting for DNS: no result, so the queue manager retries. */
      g_cancellable_cancel (md->cancel);
      if (md->idle != 0)
        g_source_remove (md->idle);
      mx_delivery_finish (md);
    }
}
