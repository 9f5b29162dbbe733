/* SPDX-License-Identifier: MIT */
/* Asynchronous DNS: libunbound's worker answers through a pipe the main loop watches. */
#include "config.h"
#include "core-private.h"

#include <string.h>
#include <unbound.h>
#include <glib-unix.h>

struct _PbResolver {
  gint ref;
  struct ub_ctx *ctx;
  guint watch;                /* the loop's watch on ub_fd() */
  GHashTable *lookups;        /* async id -> Lookup * */
};

typedef struct {
  PbResolver *resolver;       /* not a reference: the resolver cancels its lookups when it goes */
  int id;
  char *name;
  guint rrtype;
  PbDnsFunc done;
  gpointer user_data;
  GCancellable *cancellable;
  gulong cancel_id;
  gboolean started;           /* in libunbound's hands and in resolver->lookups */
  gboolean cancelled_early;   /* cancelled before it started */
} Lookup;

static void
lookup_free (Lookup *l)
{
  if (l->cancel_id != 0)
    g_cancellable_disconnect (l->cancellable, l->cancel_id);
  g_clear_object (&l->cancellable);
  g_free (l->name);
  g_free (l);
}

/* "192.0.2.53", "127.0.0.1:5353", "[::1]:53", "::1" -> libunbound's "ADDR@PORT". */
gboolean
pb_dns_server_to_unbound (const char *server, char **out)
{
  g_autofree char *host = NULL;
  const char *port = NULL;
  g_autoptr (GInetAddress) addr = NULL;

  if (server[0] == '[')
    {
      const char *close = strchr (server, ']');
      if (close == NULL || (close[1] != '\0' && close[1] != ':'))
        return FALSE;
      host = g_strndup (server + 1, close - server - 1);
      port = close[1] == ':' ? close + 2 : NULL;
    }
  else if (strchr (server, ':') != NULL && strchr (server, ':') == strrchr (server, ':'))
    {
      const char *colon = strchr (server, ':');
      host = g_strndup (server, colon - server);
      port = colon + 1;
    }
  else
    host = g_strdup (server);
  addr = g_inet_address_new_from_string (host);
  if (addr == NULL)
    return FALSE;
  if (port != NULL)
    {
      char *end = NULL;
      gint64 p = g_ascii_strtoll (port, &end, 10);
      if (*port == '\0' || *end != '\0' || p < 1 || p > 65535)
        return FALSE;
      *out = g_strdup_printf ("%s@%d", host, (int) p);
    }
  else
    *out = g_strdup (host);
  return TRUE;
}

/* ---- rdata as text ---- */

/* Reads an uncompressed wire-format name at DATA[*off], as text in the
 * master-file form of RFC 1035 §5.1: a label may hold any octet, so a dot
 * or a backslash in it is escaped with a backslash, and a blank, a control
 * octet or one above 0x7e as \DDD (decimal). The text of a name never
 * holds a control character, and a caller checking host-name syntax
 * (RFC 1123 §2.1) sees the backslash. */
static char *
rdata_name (const guint8 *data, gsize len, gsize *off)
{
  GString *s = g_string_new (NULL);

  while (*off < len)
    {
      guint8 n = data[(*off)++];
      if (n == 0)
        break;
      if (n > 63 || *off + n > len)
        {
          g_string_free (s, TRUE);
          return NULL;
        }
      if (s->len > 0)
        g_string_append_c (s, '.');
      for (guint i = 0; i < n; i++)
        {
          guint8 c = (guint8) g_ascii_tolower ((char) data[*off + i]);
          if (c == '.' || c == '\\')
            g_string_append_printf (s, "\\%c", c);
          else if (c <= 0x20 || c >= 0x7f)
            g_string_append_printf (s, "\\%03u", c);
          else
            g_string_append_c (s, (char) c);
        }
      *off += n;
    }
  return g_string_free (s, FALSE);
}

static char *
rdata_to_text (guint rrtype, const guint8 *data, gsize len)
{
  gsize off = 0;

  switch (rrtype)
    {
    case PB_DNS_A:
    case PB_DNS_AAAA:
      {
        gsize want = rrtype == PB_DNS_A ? 4 : 16;
        g_autoptr (GInetAddress) a = NULL;
        if (len != want)
          return NULL;
        a = g_inet_address_new_from_bytes (data, want == 4 ? G_SOCKET_FAMILY_IPV4 : G_SOCKET_FAMILY_IPV6);
        return g_inet_address_to_string (a);
      }
    case PB_DNS_MX:
      {
        guint pref;
        g_autofree char *host = NULL;
        if (len < 3)
          return NULL;
        pref = (guint) data[0] << 8 | data[1];
        off = 2;
        host = rdata_name (data, len, &off);
        return host != NULL ? g_strdup_printf ("%u %s", pref, host) : NULL;
      }
    case PB_DNS_TXT:
      {
        /* RFC 7208 §3.3: the character strings of one record are joined without spaces. */
        GString *s = g_string_new (NULL);
        while (off < len)
          {
            guint8 n = data[off++];
            if (off + n > len)
              {
                g_string_free (s, TRUE);
                return NULL;
              }
            g_string_append_len (s, (const char *) data + off, n);
            off += n;
          }
        return g_string_free (s, FALSE);
      }
    case PB_DNS_PTR:
    case PB_DNS_CNAME:
    case PB_DNS_NS:
      return rdata_name (data, len, &off);
    default:
      return g_base64_encode (data, len);
    }
}

/* ---- lookups ---- */

#define LOOKUP_CANCELLED "the lookup was cancelled before it started"

static void
lookup_answered (void *data, int err, struct ub_result *result)
{
  Lookup *l = data;
  PbResolver *r = l->resolver;
  PbDnsAnswer answer = { 0 };
  g_autoptr (GPtrArray) records = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *why = NULL;

  g_hash_table_steal (r->lookups, GINT_TO_POINTER (l->id));
  answer.struct_size = sizeof answer;
  answer.name = l->name;
  answer.rrtype = l->rrtype;

  if (err != 0)
    {
      answer.status = PB_DNS_TEMPFAIL;
      why = g_strdup (ub_strerror (err));
    }
  else if (result->bogus)
    {
      answer.status = PB_DNS_TEMPFAIL;
      why = g_strdup_printf ("DNSSEC validation failed: %s", result->why_bogus != NULL ? result->why_bogus : "bogus");
    }
  else if (result->rcode == 3 /* NXDOMAIN */)
    answer.status = PB_DNS_NXDOMAIN;
  else if (result->rcode == 5 /* REFUSED */)
    {
      answer.status = PB_DNS_PERMFAIL;
      why = g_strdup ("the server refused the query");
    }
  else if (result->rcode != 0)
    {
      answer.status = PB_DNS_TEMPFAIL;
      why = g_strdup_printf ("DNS error (rcode %d)", result->rcode);
    }
  else
    {
      for (guint i = 0; result->havedata && result->data[i] != NULL; i++)
        {
          char *text = rdata_to_text (l->rrtype, (const guint8 *) result->data[i], (gsize) result->len[i]);
          if (text != NULL)
            g_ptr_array_add (records, text);
        }
      answer.status = records->len > 0 ? PB_DNS_OK : PB_DNS_NODATA;
      answer.ttl = (guint) MAX (result->ttl, 0);
      answer.secure = result->secure != 0;
    }
  g_ptr_array_add (records, NULL);
  answer.records = (const char *const *) records->pdata;
  answer.error = why;
  if (result != NULL)
    ub_resolve_free (result);

  if (l->cancel_id != 0)
    {
      g_cancellable_disconnect (l->cancellable, l->cancel_id);
      l->cancel_id = 0;
    }
  l->done (&answer, l->user_data);
  lookup_free (l);
}

static gboolean
resolver_readable (gint fd, GIOCondition cond, gpointer data)
{
  PbResolver *r = pb_resolver_ref (data);
  int rc = ub_process (r->ctx);

  if (rc != 0)
    g_warning ("DNS: %s", ub_strerror (rc));
  pb_resolver_unref (r);
  return G_SOURCE_CONTINUE;
}

static void
lookup_cancelled (GCancellable *cancellable, gpointer data)
{
  Lookup *l = data;

  /* Disconnecting from inside the handler would deadlock: the id is simply forgotten. */
  l->cancel_id = 0;
  if (!l->started)
    {
      /* Inside g_cancellable_connect(), from pb_resolver_lookup(): the
       * lookup is still the caller's, which frees it. */
      l->cancelled_early = TRUE;
      return;
    }
  ub_cancel (l->resolver->ctx, l->id);
  g_hash_table_remove (l->resolver->lookups, GINT_TO_POINTER (l->id));
}

typedef struct {
  PbDnsFunc done;
  gpointer user_data;
  PbDnsStatus status;
  char *name;
  guint rrtype;
  char *error;
  GCancellable *cancellable;  /* NULL when the answer is given whatever happens */
} FailLater;

static gboolean
lookup_fail_later (gpointer data)
{
  FailLater *f = data;
  PbDnsAnswer answer = { sizeof answer, f->status, f->name, f->rrtype, (const char *const[]) { NULL }, 0,
                         FALSE, f->error };

  /* As for a lookup under way: cancelled after the call, the caller hears nothing. */
  if (f->cancellable == NULL || !g_cancellable_is_cancelled (f->cancellable))
    f->done (&answer, f->user_data);
  g_clear_object (&f->cancellable);
  g_free (f->name);
  g_free (f->error);
  g_free (f);
  return G_SOURCE_REMOVE;
}

/* A lookup that cannot start fails from the loop, never inside the call. */
static void
lookup_fail (const char *name, guint rrtype, PbDnsStatus status, GCancellable *cancellable, const char *error,
             PbDnsFunc done, gpointer user_data)
{
  FailLater *f = g_new0 (FailLater, 1);

  f->done = done;
  f->user_data = user_data;
  f->status = status;
  f->name = g_strdup (name);
  f->rrtype = rrtype;
  f->error = g_strdup (error);
  f->cancellable = cancellable != NULL ? g_object_ref (cancellable) : NULL;
  pb_idle_add_full (G_PRIORITY_DEFAULT, lookup_fail_later, f, NULL);
}

/*
 * Cancellation, as pb-dns.h states it and the callers (spf, mx-sender,
 * pb_conn_connect()) rely on: cancelling after the call drops the lookup
 * and @done is not called. A cancellable that is already cancelled when the
 * call is made (a policy request's, after the client left) starts nothing:
 * @done runs once, from the loop, with PB_DNS_TEMPFAIL, so a caller that
 * finishes its work in @done still finishes it.
 */
void
pb_resolver_lookup (PbResolver *resolver, const char *name, guint rrtype, GCancellable *cancellable,
                    PbDnsFunc done, gpointer user_data)
{
  Lookup *l;
  int rc;

  g_return_if_fail (resolver != NULL && name != NULL && done != NULL);
  if (cancellable != NULL && g_cancellable_is_cancelled (cancellable))
    {
      lookup_fail (name, rrtype, PB_DNS_TEMPFAIL, NULL, LOOKUP_CANCELLED, done, user_data);
      return;
    }
  if (*name == '\0' || strlen (name) > 253 || strpbrk (name, " \t\r\n") != NULL)
    {
      lookup_fail (name, rrtype, PB_DNS_PERMFAIL, cancellable, "not a valid domain name", done, user_data);
      return;
    }
  l = g_new0 (Lookup, 1);
  l->resolver = resolver;
  l->name = g_ascii_strdown (name, -1);
  l->rrtype = rrtype;
  l->done = done;
  l->user_data = user_data;
  /* Connected before the lookup starts, so that a handler run inside
   * g_cancellable_connect() (the cancellable was cancelled since the check
   * above) finds L not started and only marks it: L is freed here, once. */
  if (cancellable != NULL)
    {
      l->cancellable = g_object_ref (cancellable);
      l->cancel_id = g_cancellable_connect (cancellable, G_CALLBACK (lookup_cancelled), l, NULL);
      if (l->cancelled_early)
        {
          lookup_fail (name, rrtype, PB_DNS_TEMPFAIL, NULL, LOOKUP_CANCELLED, done, user_data);
          lookup_free (l);
          return;
        }
    }
  rc = ub_resolve_async (resolver->ctx, l->name, (int) rrtype, 1 /* IN */, l, lookup_answered, &l->id);
  if (rc != 0)
    {
      lookup_fail (name, rrtype, PB_DNS_PERMFAIL, cancellable, ub_strerror (rc), done, user_data);
      lookup_free (l);
      return;
    }
  l->started = TRUE;
  g_hash_table_insert (resolver->lookups, GINT_TO_POINTER (l->id), l);
  if (resolver->watch == 0)
    resolver->watch = pb_unix_fd_add (ub_fd (resolver->ctx), G_IO_IN, resolver_readable, resolver);
}

PbResolver *
pb_resolver_new (const char *servers, GError **error)
{
  PbResolver *r;
  struct ub_ctx *ctx = ub_ctx_create ();
  int rc;

  if (ctx == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot create a DNS resolver");
      return NULL;
    }
  if (servers != NULL && *servers != '\0')
    {
      g_auto (GStrv) list = g_strsplit (servers, ",", -1);
      for (guint i = 0; list[i] != NULL; i++)
        {
          char *item = g_strstrip (list[i]);
          g_autofree char *fwd = NULL;
          if (*item == '\0')
            continue;
          if (!pb_dns_server_to_unbound (item, &fwd) || (rc = ub_ctx_set_fwd (ctx, fwd)) != 0)
            {
              g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG,
                           "'%s' is not a DNS server address (IP or IP:PORT)", item);
              ub_ctx_delete (ctx);
              return NULL;
            }
        }
    }
  else if ((rc = ub_ctx_resolvconf (ctx, NULL)) != 0)
    g_warning ("DNS: cannot read the system resolver configuration: %s", ub_strerror (rc));
  ub_ctx_hosts (ctx, NULL);
  /* A worker thread, not a forked process: the daemon's privileges and signals stay its own. */
  ub_ctx_async (ctx, 1);
  /* Servers named explicitly are asked everything: unbound's built-in empty
   * answers for private and documentation reverse zones (RFC 6303, 5737,
   * 3849) would hide an organisation's own PTR records, and the test
   * servers'. Last: adding a zone finalises the context. */
  if (servers != NULL && *servers != '\0')
    {
      static const char *const asked_zones[] = {
        "10.in-addr.arpa", "168.192.in-addr.arpa", "2.0.192.in-addr.arpa", "100.51.198.in-addr.arpa",
        "113.0.203.in-addr.arpa", "d.f.ip6.arpa", "8.b.d.0.1.0.0.2.ip6.arpa",
      };
      for (guint i = 0; i < G_N_ELEMENTS (asked_zones); i++)
        ub_ctx_zone_add (ctx, asked_zones[i], "transparent");
      for (guint i = 16; i < 32; i++)
        {
          char zone[32];
          g_snprintf (zone, sizeof zone, "%u.172.in-addr.arpa", i);
          ub_ctx_zone_add (ctx, zone, "transparent");
        }
    }

  r = g_new0 (PbResolver, 1);
  r->ref = 1;
  r->ctx = ctx;
  r->lookups = g_hash_table_new_full (NULL, NULL, NULL, (GDestroyNotify) lookup_free);
  return r;
}

PbResolver *
pb_resolver_ref (PbResolver *resolver)
{
  g_return_val_if_fail (resolver != NULL, NULL);
  resolver->ref++;
  return resolver;
}

void
pb_resolver_unref (PbResolver *resolver)
{
  GHashTableIter it;
  gpointer key;

  if (resolver == NULL || --resolver->ref > 0)
    return;
  g_hash_table_iter_init (&it, resolver->lookups);
  while (g_hash_table_iter_next (&it, &key, NULL))
    ub_cancel (resolver->ctx, GPOINTER_TO_INT (key));
  g_hash_table_unref (resolver->lookups);
  if (resolver->watch != 0)
    g_source_remove (resolver->watch);
  ub_ctx_delete (resolver->ctx);
  g_free (resolver);
}

PbResolver *
pb_module_get_resolver (PbModule *module)
{
  PbGeneration *gen;
  g_autoptr (GError) error = NULL;

  g_return_val_if_fail (module != NULL && !module->gen->checking, NULL);
  gen = module->gen;
  if (gen->resolver == NULL)
    {
      g_autofree char *servers = g_strjoinv (",", gen->core->dns_servers);
      gen->resolver = pb_resolver_new (servers, &error);
      if (gen->resolver == NULL)
        {
          /* core.dns-servers was checked when the configuration was read. */
          g_warning ("DNS: %s; using the system's servers", error->message);
          gen->resolver = pb_resolver_new (NULL, NULL);
        }
    }
  return gen->resolver;
}

char *
pb_dns_reverse_name (GInetAddress *address)
{
  const guint8 *b;
  GString *s;

  g_return_val_if_fail (G_IS_INET_ADDRESS (address), NULL);
  b = g_inet_address_to_bytes (address);
  s = g_string_new (NULL);
  if (g_inet_address_get_family (address) == G_SOCKET_FAMILY_IPV4)
    g_string_printf (s, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
  else
    {
      for (int i = 15; i >= 0; i--)
        g_string_append_printf (s, "%x.%x.", b[i] & 0xf, b[i] >> 4);
      g_string_append (s, "ip6.arpa");
    }
  return g_string_free (s, FALSE);
}
