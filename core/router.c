/* SPDX-License-Identifier: MIT */
/* The router: a recipient becomes local mailboxes, remote addresses, or an exact rejection. */
#include "config.h"
#include "core-private.h"

#include <string.h>

/* An alias chain or nested lists deeper than this are a configuration error. */
#define ROUTE_MAX_DEPTH 10
/* Directory lookups one recipient may cost before expansion is refused. */
#define ROUTE_MAX_LOOKUPS 1000

typedef struct {
  char *address;
  guint depth;
} RouteItem;

typedef struct {
  PbGeneration *gen;
  char *address;              /* as asked, canonicalised */
  PbRouteFunc done;
  gpointer user_data;
  GQueue pending;             /* RouteItem * */
  GHashTable *seen;           /* addresses expanded (lower case) */
  GPtrArray *mailboxes;       /* char *, NULL-terminated at the end */
  GPtrArray *remote;
  GHashTable *mailbox_set;
  guint lookups;
  gboolean looped;
  gboolean postmaster_fallback;
  PbRouteKind kind;
  guint code;
  const char *enhanced;
  char *text;
} RouteJob;

static void
route_item_free (gpointer p)
{
  RouteItem *item = p;
  g_free (item->address);
  g_free (item);
}

static void
route_job_free (RouteJob *job)
{
  g_queue_clear_full (&job->pending, route_item_free);
  g_hash_table_unref (job->seen);
  g_hash_table_unref (job->mailbox_set);
  g_ptr_array_unref (job->mailboxes);
  g_ptr_array_unref (job->remote);
  g_free (job->address);
  g_free (job->text);
  pb_generation_unref (job->gen);
  g_free (job);
}

static gboolean
route_deliver (gpointer data)
{
  RouteJob *job = data;
  PbRoute route = { 0 };

  g_ptr_array_add (job->mailboxes, NULL);
  g_ptr_array_add (job->remote, NULL);
  route.struct_size = sizeof route;
  route.kind = job->kind;
  route.address = job->address;
  route.mailboxes = (const char *const *) job->mailboxes->pdata;
  route.remote = (const char *const *) job->remote->pdata;
  route.code = job->code;
  route.enhanced = job->enhanced;
  route.text = job->text;
  job->done (&route, job->user_data);
  route_job_free (job);
  return G_SOURCE_REMOVE;
}

/* Answers from an idle: the caller is never re-entered from inside
 * pb_router_resolve(). At the default priority, not idle's: a client is
 * waiting for this answer, and a loop kept busy by other sessions (a
 * flood draining) must not starve it. */
static void
route_finish (RouteJob *job, PbRouteKind kind, guint code, const char *enhanced, char *text)
{
  job->kind = kind;
  job->code = code;
  job->enhanced = enhanced;
  job->text = text;
  pb_idle_add_full (G_PRIORITY_DEFAULT, route_deliver, job, NULL);
}

/* Lower-cases the domain (RFC 5321 §2.4: local parts are case-sensitive in
 * principle, but the directory stores names in lower case, as every
 * mail server administrators know does). Returns NULL if not an address. */
static char *
route_canonical (const char *address)
{
  const char *at = strrchr (address, '@');
  g_autofree char *lower = NULL;

  if (*address == '\0' || strlen (address) > 254 || strpbrk (address, " \t\r\n<>") != NULL)
    return NULL;
  if (at == NULL)
    return g_ascii_strcasecmp (address, "postmaster") == 0 ? g_strdup ("postmaster") : NULL;
  if (at == address || at[1] == '\0' || at - address > 64)
    return NULL;
  lower = g_ascii_strdown (address, -1);
  return g_steal_pointer (&lower);
}

static gboolean
route_is_postmaster (const char *address)
{
  return g_ascii_strncasecmp (address, "postmaster@", 11) == 0 || g_ascii_strcasecmp (address, "postmaster") == 0;
}

static void route_next (RouteJob *job);

static void
route_add_mailbox (RouteJob *job, const char *name)
{
  if (g_hash_table_contains (job->mailbox_set, name))
    return;
  g_hash_table_add (job->mailbox_set, g_strdup (name));
  g_ptr_array_add (job->mailboxes, g_strdup (name));
}

static void
route_lookup_done (GVariant *result, const GError *error, gpointer user_data)
{
  RouteJob *job = user_data;
  RouteItem *item = g_queue_pop_head (&job->pending);
  gboolean local_domain = FALSE;
  const char *kind = "";
  const char *name = NULL;
  g_autofree const char **targets = NULL;
  gboolean top = item->depth == 0;

  if (error != NULL || result == NULL || !g_variant_is_of_type (result, G_VARIANT_TYPE ("(bssas)")))
    {
      g_warning ("router: directory lookup of %s failed: %s", item->address,
                 error != NULL ? error->message : "malformed answer from the storage backend");
      route_item_free (item);
      route_finish (job, PB_ROUTE_TEMPFAIL, 451, "4.3.0",
                    g_strdup ("Temporary failure reading the directory, please try again later"));
      return;
    }
  g_variant_get (result, "(b&s&s^a&s)", &local_domain, &kind, &name, &targets);

  if (!local_domain && strchr (item->address, '@') != NULL)
    {
      if (top)
        {
          route_item_free (item);
          route_finish (job, PB_ROUTE_REMOTE, 0, NULL, NULL);
          return;
        }
      g_ptr_array_add (job->remote, g_strdup (item->address));
    }
  else if (strcmp (kind, "user") == 0)
    route_add_mailbox (job, name);
  else if (strcmp (kind, "alias") == 0 || strcmp (kind, "list") == 0)
    {
      if (item->depth + 1 > ROUTE_MAX_DEPTH)
        {
          g_warning ("router: %s expands deeper than %d levels", job->address, ROUTE_MAX_DEPTH);
          job->looped = TRUE;
        }
      else
        for (guint i = 0; targets != NULL && targets[i] != NULL; i++)
          {
            RouteItem *next = g_new0 (RouteItem, 1);
            next->address = g_strdup (targets[i]);
            next->depth = item->depth + 1;
            g_queue_push_tail (&job->pending, next);
          }
    }
  else if (route_is_postmaster (item->address) && !job->postmaster_fallback)
    {
      /* RFC 5321 §4.5.1: postmaster is always deliverable. */
      RouteItem *next = g_new0 (RouteItem, 1);
      job->postmaster_fallback = TRUE;
      next->address = g_strdup (job->gen->core->postmaster);
      next->depth = item->depth + 1;
      g_queue_push_tail (&job->pending, next);
    }
  else if (!top)
    g_warning ("router: %s reaches %s, which does not exist; skipped", job->address, item->address);

  route_item_free (item);
  route_next (job);
}

static void
route_next (RouteJob *job)
{
  while (!g_queue_is_empty (&job->pending))
    {
      RouteItem *item = g_queue_peek_head (&job->pending);
      g_autofree char *key = g_ascii_strdown (item->address, -1);

      if (g_hash_table_contains (job->seen, key))
        {
          /* Already expanded: a list member twice, or an alias loop. */
          if (item->depth > 0 && g_strcmp0 (key, job->address) == 0)
            job->looped = TRUE;
          route_item_free (g_queue_pop_head (&job->pending));
          continue;
        }
      if (++job->lookups > ROUTE_MAX_LOOKUPS)
        {
          g_warning ("router: %s expands to more than %d addresses", job->address, ROUTE_MAX_LOOKUPS);
          route_finish (job, PB_ROUTE_LOOP, 550, "5.4.6",
                        g_strdup_printf ("%s expands to too many addresses", job->address));
          return;
        }
      g_hash_table_add (job->seen, g_steal_pointer (&key));
      pb_store_request_gen (job->gen, "directory.lookup", g_variant_new ("(s)", item->address),
                            route_lookup_done, job);
      return;
    }

  if (job->mailboxes->len > 0 || job->remote->len > 0)
    route_finish (job, PB_ROUTE_LOCAL, 0, NULL, NULL);
  else if (job->looped)
    route_finish (job, PB_ROUTE_LOOP, 550, "5.4.6", g_strdup_printf ("Routing loop detected for %s", job->address));
  else if (job->postmaster_fallback)
    {
      g_warning ("router: mail for %s: core.postmaster names '%s', which is not a user; create it or change "
                 "core.postmaster", job->address, job->gen->core->postmaster);
      route_finish (job, PB_ROUTE_TEMPFAIL, 451, "4.3.0",
                    g_strdup ("Postmaster mailbox not configured, please try again later"));
    }
  else
    route_finish (job, PB_ROUTE_UNKNOWN, 550, "5.1.1", g_strdup_printf ("<%s>: User unknown", job->address));
}

void
pb_router_resolve_gen (PbGeneration *gen, const char *address, PbRouteFunc done, gpointer user_data)
{
  RouteJob *job = g_new0 (RouteJob, 1);
  RouteItem *first;

  job->gen = pb_generation_ref (gen);
  job->done = done;
  job->user_data = user_data;
  g_queue_init (&job->pending);
  job->seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  job->mailbox_set = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  job->mailboxes = g_ptr_array_new_with_free_func (g_free);
  job->remote = g_ptr_array_new_with_free_func (g_free);
  job->address = route_canonical (address);
  if (job->address == NULL)
    {
      job->address = g_strdup (address);
      route_finish (job, PB_ROUTE_INVALID, 501, "5.1.3", g_strdup ("Bad recipient address syntax"));
      return;
    }
  first = g_new0 (RouteItem, 1);
  first->address = g_strdup (job->address);
  g_queue_push_tail (&job->pending, first);
  route_next (job);
}

void
pb_router_resolve (PbModule *module, const char *address, PbRouteFunc done, gpointer user_data)
{
  g_return_if_fail (module != NULL && address != NULL && done != NULL);
  pb_router_resolve_gen (module->gen, address, done, user_data);
}
