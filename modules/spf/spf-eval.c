/* SPDX-License-Identifier: MIT */
/* spf: check_host() (RFC 7208 §4-§6) as a state machine over the core's asynchronous resolver. */

/*
 * One evaluation asks one DNS question at a time: each answer arrives on
 * the loop and moves the machine on, so nothing here blocks and at most one
 * lookup is ever outstanding (which keeps cancellation simple: cancel the
 * current lookup and nothing else can call back). include and redirect
 * push a frame with its own <domain> and record; the DNS-term and void
 * counters are global to the whole evaluation, as §4.6.4 requires, and
 * also bound the frame depth.
 *
 * Every end goes through ev_finish(), which delivers the outcome from an
 * idle callback: never from inside spf_check_host_start(), and not from
 * inside a GCancellable's signal handler.
 */
#include "config.h"
#include "spf-private.h"

#include <string.h>

typedef enum {
  FRAME_TOP,
  FRAME_INCLUDE,
  FRAME_REDIRECT
} FrameKind;

typedef struct Frame {
  FrameKind kind;
  char *domain;
  SpfRecord *record;           /* NULL until its TXT answer came */
  guint next;                  /* the term being evaluated; mechs->len means redirect */
  struct Frame *parent;
} Frame;

typedef enum {
  NAME_UNKNOWN = 0,
  NAME_VALID,
  NAME_INVALID
} NameState;

typedef struct _SpfEval SpfEval;
typedef void (*EvAnswerFunc) (SpfEval *ev, const PbDnsAnswer *answer);
typedef void (*EvNameFunc) (SpfEval *ev, const char *validated);

struct _SpfEval {
  PbResolver *resolver;
  GInetAddress *ip;
  gboolean v4;
  char *sender;
  char *helo;
  char *receiver;
  char *default_explanation;
  guint max_void;
  gint64 lookup_timeout_ms;
  gint64 timeout_ms;
  gint64 timestamp;

  GCancellable *outer;
  gulong outer_id;
  guint overall_timer;

  /* The one outstanding lookup. */
  EvAnswerFunc pending;
  GCancellable *lookup_cancel;
  guint lookup_timer;
  char *lookup_name;
  guint lookup_type;

  Frame *frame;
  guint dns_terms;
  guint void_lookups;
  gboolean term_counted;       /* the current term has been counted against the 10 */
  char *target;                /* the current term's expanded domain */

  /* a and mx: the MX hosts and how far the address lookups got */
  GPtrArray *mx_hosts;
  guint mx_index;
  gboolean mx_tempfail;
  char *mx_problem;

  /* PTR names of <ip> (first 10) and which of them were validated (§5.5) */
  gboolean ptr_fetched;
  gboolean ptr_void;           /* the fetch was the ptr mechanism's own and may be void */
  GPtrArray *ptr_names;
  NameState ptr_state[SPF_MAX_NAMES];
  /* a search for a validated name under ps_domain */
  char *ps_domain;
  gboolean ps_any;             /* also names outside ps_domain (the p macro) */
  guint ps_pass;
  guint ps_index;
  EvNameFunc ps_cont;
  /* the p macro's value and the <domain> it was chosen for */
  char *p_domain;
  char *p_value;

  /* the outcome */
  SpfResult result;
  char *decided_domain;
  char *mechanism;
  char *exp_spec;
  char *exp_domain;
  char *explanation;
  char *problem;
  gboolean finished;
  SpfDoneFunc done;
  gpointer user_data;
};

static void ev_run (SpfEval *ev);
static void ev_enter (SpfEval *ev, FrameKind kind, const char *domain);
static void ev_conclude (SpfEval *ev);

/* ---- the end ------------------------------------------------------------------ */

static void
frame_free (Frame *f)
{
  spf_record_free (f->record);
  g_free (f->domain);
  g_free (f);
}

static void
ev_free (SpfEval *ev)
{
  while (ev->frame != NULL)
    {
      Frame *f = ev->frame;
      ev->frame = f->parent;
      frame_free (f);
    }
  if (ev->outer_id != 0)
    g_cancellable_disconnect (ev->outer, ev->outer_id);
  g_clear_object (&ev->outer);
  g_clear_object (&ev->lookup_cancel);
  g_clear_object (&ev->ip);
  g_clear_pointer (&ev->mx_hosts, g_ptr_array_unref);
  g_clear_pointer (&ev->ptr_names, g_ptr_array_unref);
  pb_resolver_unref (ev->resolver);
  g_free (ev->sender);
  g_free (ev->helo);
  g_free (ev->receiver);
  g_free (ev->default_explanation);
  g_free (ev->lookup_name);
  g_free (ev->target);
  g_free (ev->mx_problem);
  g_free (ev->ps_domain);
  g_free (ev->p_domain);
  g_free (ev->p_value);
  g_free (ev->decided_domain);
  g_free (ev->mechanism);
  g_free (ev->exp_spec);
  g_free (ev->exp_domain);
  g_free (ev->explanation);
  g_free (ev->problem);
  g_free (ev);
}

static gboolean
ev_deliver (gpointer data)
{
  SpfEval *ev = data;
  SpfOutcome outcome = {
    .result = ev->result,
    .domain = ev->decided_domain != NULL ? ev->decided_domain : spf_sender_domain (ev->sender),
    .mechanism = ev->mechanism,
    .explanation = ev->result == SPF_RESULT_FAIL ? ev->explanation : NULL,
    .problem = ev->problem,
    .dns_terms = MIN (ev->dns_terms, SPF_MAX_DNS_TERMS),
    .void_lookups = ev->void_lookups,
  };

  ev->done (&outcome, ev->user_data);
  ev_free (ev);
  return G_SOURCE_REMOVE;
}

static void
ev_stop_lookup (SpfEval *ev)
{
  if (ev->lookup_cancel != NULL)
    g_cancellable_cancel (ev->lookup_cancel);  /* the resolver drops it and never calls back */
  g_clear_object (&ev->lookup_cancel);
  g_clear_handle_id (&ev->lookup_timer, g_source_remove);
  ev->pending = NULL;
}

static void
ev_finish (SpfEval *ev)
{
  if (ev->finished)
    return;
  ev->finished = TRUE;
  ev_stop_lookup (ev);
  g_clear_handle_id (&ev->overall_timer, g_source_remove);
  pb_idle_add_full (G_PRIORITY_DEFAULT, ev_deliver, ev, NULL);
}

/* temperror and permerror end the whole evaluation, whatever the depth (§4.4, §5.2). */
static void G_GNUC_PRINTF (3, 4)
ev_error (SpfEval *ev, SpfResult result, const char *format, ...)
{
  va_list ap;

  if (ev->finished)
    return;
  g_free (ev->problem);
  va_start (ap, format);
  ev->problem = g_strdup_vprintf (format, ap);
  va_end (ap);
  ev->result = result;
  g_clear_pointer (&ev->mechanism, g_free);
  ev_finish (ev);
}

static void
ev_outer_cancelled (GCancellable *cancellable, gpointer data)
{
  SpfEval *ev = data;

  /* Runs inside g_cancellable_cancel(): ev_finish() only marks and schedules. */
  ev_error (ev, SPF_RESULT_TEMPERROR, "check cancelled");
}

static gboolean
ev_timed_out (gpointer data)
{
  SpfEval *ev = data;

  ev->overall_timer = 0;
  ev_error (ev, SPF_RESULT_TEMPERROR, "no result within %" G_GINT64_FORMAT " ms", ev->timeout_ms);
  return G_SOURCE_REMOVE;
}

/* ---- DNS --------------------------------------------------------------------- */

static const char *
rrtype_name (guint rrtype)
{
  switch (rrtype)
    {
    case PB_DNS_A: return "A";
    case PB_DNS_AAAA: return "AAAA";
    case PB_DNS_MX: return "MX";
    case PB_DNS_TXT: return "TXT";
    case PB_DNS_PTR: return "PTR";
    default: return "?";
    }
}

static void
ev_answered (const PbDnsAnswer *answer, gpointer data)
{
  SpfEval *ev = data;
  EvAnswerFunc cont = ev->pending;

  ev->pending = NULL;
  g_clear_object (&ev->lookup_cancel);
  g_clear_handle_id (&ev->lookup_timer, g_source_remove);
  if (ev->finished || cont == NULL)
    return;
  cont (ev, answer);
}

static gboolean
ev_lookup_timed_out (gpointer data)
{
  SpfEval *ev = data;
  EvAnswerFunc cont = ev->pending;
  g_autofree char *why = g_strdup_printf ("no answer within %" G_GINT64_FORMAT " ms", ev->lookup_timeout_ms);
  const char *const none[] = { NULL };
  PbDnsAnswer answer = { sizeof answer, PB_DNS_TEMPFAIL, ev->lookup_name, ev->lookup_type, none, 0, FALSE, why };

  ev->lookup_timer = 0;
  ev_stop_lookup (ev);
  if (cont != NULL)
    cont (ev, &answer);
  return G_SOURCE_REMOVE;
}

/* NAME must satisfy spf_domain_is_valid(): the resolver reports a malformed
 * name from an idle callback that cancelling does not stop. */
static void
ev_lookup (SpfEval *ev, const char *name, guint rrtype, EvAnswerFunc cont)
{
  g_return_if_fail (ev->pending == NULL);
  ev->pending = cont;
  g_free (ev->lookup_name);
  ev->lookup_name = spf_domain_truncate (name);
  ev->lookup_type = rrtype;
  ev->lookup_cancel = g_cancellable_new ();
  ev->lookup_timer = pb_timeout_add ((guint) ev->lookup_timeout_ms, ev_lookup_timed_out, ev);
  pb_resolver_lookup (ev->resolver, ev->lookup_name, rrtype, ev->lookup_cancel, ev_answered, ev);
}

/* RCODE 2 and other errors, and timeouts, are temperror (§4.4, §5). */
static gboolean
ev_answer_failed (SpfEval *ev, const PbDnsAnswer *answer)
{
  if (answer->status != PB_DNS_TEMPFAIL && answer->status != PB_DNS_PERMFAIL)
    return FALSE;
  ev_error (ev, SPF_RESULT_TEMPERROR, "DNS lookup of %s %s failed: %s", rrtype_name (answer->rrtype),
            answer->name, answer->error != NULL ? answer->error : "no answer");
  return TRUE;
}

/* A term's own lookup that found nothing; §4.6.4's void limit. */
static gboolean
ev_void (SpfEval *ev, const PbDnsAnswer *answer)
{
  if (answer->status != PB_DNS_NXDOMAIN && answer->status != PB_DNS_NODATA)
    return TRUE;
  if (++ev->void_lookups > ev->max_void)
    {
      ev_error (ev, SPF_RESULT_PERMERROR, "more than %u void DNS lookups (the last: %s %s)", ev->max_void,
                rrtype_name (answer->rrtype), answer->name);
      return FALSE;
    }
  return TRUE;
}

static GInetAddress *
address_of (const char *text)
{
  GInetAddress *a = g_inet_address_new_from_string (text);
  GInetAddress *n;

  if (a == NULL)
    return NULL;
  n = spf_address_normalize (a);
  g_object_unref (a);
  return n;
}

static gboolean
answer_has_address (SpfEval *ev, const PbDnsAnswer *answer, guint cidr4, guint cidr6)
{
  for (guint i = 0; answer->status == PB_DNS_OK && answer->records[i] != NULL; i++)
    {
      g_autoptr (GInetAddress) a = address_of (answer->records[i]);
      if (a != NULL && spf_address_match (ev->ip, a, cidr4, cidr6))
        return TRUE;
    }
  return FALSE;
}

/* ---- frames and results -------------------------------------------------------- */

static SpfMech *
current_mech (SpfEval *ev)
{
  return g_ptr_array_index (ev->frame->record->mechs, ev->frame->next);
}

static void
ev_next_term (SpfEval *ev)
{
  ev->frame->next++;
  ev->term_counted = FALSE;
  ev_run (ev);
}

static void ev_mech_done (SpfEval *ev, gboolean matched);

/* The current frame has its result. DECIDED_HERE records the frame as the
 * one whose record decided (for the explanation and mechanism=); a
 * redirect's result is passed up unchanged, with the target's exp (§6.2). */
static void
ev_frame_return (SpfEval *ev, SpfResult result, const char *mechanism, gboolean decided_here)
{
  Frame *f = ev->frame;

  if (decided_here)
    {
      ev->result = result;
      g_free (ev->mechanism);
      ev->mechanism = g_strdup (mechanism);
      g_free (ev->decided_domain);
      ev->decided_domain = g_strdup (f->domain);
      g_free (ev->exp_spec);
      ev->exp_spec = f->record != NULL ? g_strdup (f->record->exp) : NULL;
      g_free (ev->exp_domain);
      ev->exp_domain = g_strdup (f->domain);
    }
  ev->frame = f->parent;
  switch (f->kind)
    {
    case FRAME_TOP:
      frame_free (f);
      ev_conclude (ev);
      return;
    case FRAME_INCLUDE:
      /* §5.2: only pass matches; none means the include is broken. */
      if (result == SPF_RESULT_NONE)
        ev_error (ev, SPF_RESULT_PERMERROR, "include:%s: the domain has no SPF record", f->domain);
      else
        ev_mech_done (ev, result == SPF_RESULT_PASS);
      frame_free (f);
      return;
    case FRAME_REDIRECT:
      if (result == SPF_RESULT_NONE)
        {
          ev_error (ev, SPF_RESULT_PERMERROR, "redirect=%s: the domain has no SPF record", f->domain);
          frame_free (f);
          return;
        }
      frame_free (f);
      ev_frame_return (ev, result, NULL, FALSE);
      return;
    }
}

static void
ev_mech_done (SpfEval *ev, gboolean matched)
{
  SpfMech *m;

  if (ev->finished)
    return;
  m = current_mech (ev);
  if (matched)
    ev_frame_return (ev, m->result, m->text, TRUE);
  else
    ev_next_term (ev);
}

/* ---- PTR names (ptr mechanism and the p macro) ------------------------------------ */

static gboolean
name_in_domain (const char *name, const char *domain)
{
  gsize n = strlen (name), d = strlen (domain);

  if (d > 0 && domain[d - 1] == '.')
    d--;
  if (n == d)
    return g_ascii_strncasecmp (name, domain, d) == 0;
  return n > d && name[n - d - 1] == '.' && g_ascii_strncasecmp (name + n - d, domain, d) == 0;
}

static void ptr_search_next (SpfEval *ev);

static void
ptr_validated (SpfEval *ev, const PbDnsAnswer *answer)
{
  /* §5.5: an error on a name's address lookup just skips that name. */
  ev->ptr_state[ev->ps_index] = answer_has_address (ev, answer, 32, 128) ? NAME_VALID : NAME_INVALID;
  ptr_search_next (ev);
}

static void
ptr_search_next (SpfEval *ev)
{
  guint n = ev->ptr_names != NULL ? ev->ptr_names->len : 0;

  for (; ev->ps_pass < (ev->ps_any ? 2u : 1u); ev->ps_pass++, ev->ps_index = 0)
    for (; ev->ps_index < n; ev->ps_index++)
      {
        const char *name = g_ptr_array_index (ev->ptr_names, ev->ps_index);
        /* Pass 0: names in the domain; pass 1 (the p macro): any other. */
        if (name_in_domain (name, ev->ps_domain) != (ev->ps_pass == 0))
          continue;
        if (ev->ptr_state[ev->ps_index] == NAME_VALID)
          {
            ev->ps_cont (ev, name);
            return;
          }
        if (ev->ptr_state[ev->ps_index] == NAME_UNKNOWN)
          {
            if (!spf_domain_is_valid (name, FALSE))
              {
                ev->ptr_state[ev->ps_index] = NAME_INVALID;
                continue;
              }
            ev_lookup (ev, name, ev->v4 ? PB_DNS_A : PB_DNS_AAAA, ptr_validated);
            return;
          }
      }
  ev->ps_cont (ev, NULL);
}

static void
ptr_fetched (SpfEval *ev, const PbDnsAnswer *answer)
{
  ev->ptr_fetched = TRUE;
  ev->ptr_names = g_ptr_array_new_with_free_func (g_free);
  /* §5.5: a DNS error on the PTR lookup makes the mechanism not match. */
  if (ev->ptr_void && !ev_void (ev, answer))
    return;
  for (guint i = 0; answer->status == PB_DNS_OK && answer->records[i] != NULL; i++)
    {
      /* §4.6.4: names beyond the first 10 are ignored. */
      if (ev->ptr_names->len >= SPF_MAX_NAMES)
        break;
      g_ptr_array_add (ev->ptr_names, g_strdup (answer->records[i]));
    }
  ptr_search_next (ev);
}

/* Finds a validated name of <ip> in DOMAIN (or, with ANY, any validated
 * name, preferring DOMAIN's) and gives it, or NULL, to CONT. */
static void
ptr_search (SpfEval *ev, const char *domain, gboolean any, gboolean counts_void, EvNameFunc cont)
{
  g_free (ev->ps_domain);
  ev->ps_domain = g_strdup (domain);
  ev->ps_any = any;
  ev->ps_pass = 0;
  ev->ps_index = 0;
  ev->ps_cont = cont;
  if (!ev->ptr_fetched)
    {
      g_autofree char *rev = pb_dns_reverse_name (ev->ip);
      ev->ptr_void = counts_void;
      ev_lookup (ev, rev, PB_DNS_PTR, ptr_fetched);
      return;
    }
  ptr_search_next (ev);
}

/* ---- macro expansion with p ------------------------------------------------------- */

static void
ev_context (SpfEval *ev, const char *domain, SpfMacroContext *ctx)
{
  ctx->sender = ev->sender;
  ctx->domain = domain;
  ctx->ip = ev->ip;
  ctx->helo = ev->helo;
  ctx->receiver = ev->receiver;
  ctx->validated = ev->p_domain != NULL && g_strcmp0 (ev->p_domain, domain) == 0 ? ev->p_value : NULL;
  ctx->timestamp = ev->timestamp;
}

static gboolean
p_ready (SpfEval *ev, const char *spec, const char *domain)
{
  return spec == NULL || !spf_macro_uses_p (spec) || g_strcmp0 (ev->p_domain, domain) == 0;
}

static void
p_found_then_run (SpfEval *ev, const char *validated)
{
  g_free (ev->p_value);
  ev->p_value = g_strdup (validated);
  g_free (ev->p_domain);
  ev->p_domain = g_strdup (ev->ps_domain);
  ev_run (ev);
}

static void
p_found_then_conclude (SpfEval *ev, const char *validated)
{
  g_free (ev->p_value);
  ev->p_value = g_strdup (validated);
  g_free (ev->p_domain);
  ev->p_domain = g_strdup (ev->ps_domain);
  ev_conclude (ev);
}

/* Expands a domain-spec for the current frame into ev->target. */
static gboolean
ev_expand_target (SpfEval *ev, const char *spec, const char *term)
{
  SpfMacroContext ctx;
  g_autoptr (GError) error = NULL;
  g_autofree char *expanded = NULL;

  ev_context (ev, ev->frame->domain, &ctx);
  expanded = spec != NULL ? spf_macro_expand (spec, &ctx, SPF_MACRO_DOMAIN, &error) : g_strdup (ev->frame->domain);
  if (expanded == NULL)
    {
      ev_error (ev, SPF_RESULT_PERMERROR, "%s: %s", term, error->message);
      return FALSE;
    }
  g_free (ev->target);
  ev->target = spf_domain_truncate (expanded);
  if (!spf_domain_is_valid (ev->target, FALSE))
    {
      ev_error (ev, SPF_RESULT_PERMERROR, "%s: '%s' is not a valid domain name", term, ev->target);
      return FALSE;
    }
  return TRUE;
}

/* ---- mechanisms ------------------------------------------------------------------ */

static void
a_answered (SpfEval *ev, const PbDnsAnswer *answer)
{
  SpfMech *m = current_mech (ev);

  if (ev_answer_failed (ev, answer) || !ev_void (ev, answer))
    return;
  ev_mech_done (ev, answer_has_address (ev, answer, m->cidr4, m->cidr6));
}

static void
exists_answered (SpfEval *ev, const PbDnsAnswer *answer)
{
  if (ev_answer_failed (ev, answer) || !ev_void (ev, answer))
    return;
  ev_mech_done (ev, answer->status == PB_DNS_OK);
}

static void mx_next_host (SpfEval *ev);

static void
mx_host_answered (SpfEval *ev, const PbDnsAnswer *answer)
{
  SpfMech *m = current_mech (ev);

  if (answer->status == PB_DNS_TEMPFAIL || answer->status == PB_DNS_PERMFAIL)
    {
      /* Another host may still match; the error counts only if none does. */
      ev->mx_tempfail = TRUE;
      g_free (ev->mx_problem);
      ev->mx_problem = g_strdup_printf ("DNS lookup of %s %s failed: %s", rrtype_name (answer->rrtype),
                                        answer->name, answer->error != NULL ? answer->error : "no answer");
    }
  if (answer_has_address (ev, answer, m->cidr4, m->cidr6))
    {
      ev_mech_done (ev, TRUE);
      return;
    }
  ev->mx_index++;
  mx_next_host (ev);
}

static void
mx_next_host (SpfEval *ev)
{
  while (ev->mx_index < ev->mx_hosts->len)
    {
      const char *host = g_ptr_array_index (ev->mx_hosts, ev->mx_index);
      if (spf_domain_is_valid (host, FALSE))
        {
          ev_lookup (ev, host, ev->v4 ? PB_DNS_A : PB_DNS_AAAA, mx_host_answered);
          return;
        }
      ev->mx_index++;
    }
  if (ev->mx_tempfail)
    ev_error (ev, SPF_RESULT_TEMPERROR, "%s", ev->mx_problem);
  else
    ev_mech_done (ev, FALSE);
}

static void
mx_answered (SpfEval *ev, const PbDnsAnswer *answer)
{
  guint n = 0;

  if (ev_answer_failed (ev, answer) || !ev_void (ev, answer))
    return;
  g_clear_pointer (&ev->mx_hosts, g_ptr_array_unref);
  ev->mx_hosts = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; answer->status == PB_DNS_OK && answer->records[i] != NULL; i++)
    {
      const char *space = strchr (answer->records[i], ' ');
      n++;
      /* A null MX ("0 .", RFC 7505) names no host. */
      if (space != NULL && space[1] != '\0')
        g_ptr_array_add (ev->mx_hosts, g_strdup (space + 1));
    }
  if (n > SPF_MAX_NAMES)
    {
      ev_error (ev, SPF_RESULT_PERMERROR, "%s has %u MX records, more than %d", answer->name, n, SPF_MAX_NAMES);
      return;
    }
  ev->mx_index = 0;
  ev->mx_tempfail = FALSE;
  mx_next_host (ev);
}

static void
ptr_mech_found (SpfEval *ev, const char *validated)
{
  ev_mech_done (ev, validated != NULL);
}

/* ---- the record --------------------------------------------------------------------- */

/* Counts the current term against the limit of 10 (§4.6.4), once. */
static gboolean
ev_count_term (SpfEval *ev, const char *term)
{
  if (ev->term_counted)
    return TRUE;
  ev->term_counted = TRUE;
  if (++ev->dns_terms > SPF_MAX_DNS_TERMS)
    {
      ev_error (ev, SPF_RESULT_PERMERROR, "more than %d DNS-querying terms (the 11th: %s in %s)", SPF_MAX_DNS_TERMS,
                term, ev->frame->domain);
      return FALSE;
    }
  return TRUE;
}

static void
ev_run (SpfEval *ev)
{
  Frame *f = ev->frame;
  SpfRecord *r = f->record;

  if (ev->finished)
    return;
  while (f->next < r->mechs->len)
    {
      SpfMech *m = g_ptr_array_index (r->mechs, f->next);

      switch (m->kind)
        {
        case SPF_MECH_ALL:
          ev_frame_return (ev, m->result, m->text, TRUE);
          return;
        case SPF_MECH_IP4:
        case SPF_MECH_IP6:
          {
            gboolean v4 = m->kind == SPF_MECH_IP4;
            /* An IPv4 client never matches ip6 and the other way round (§5.6). */
            if (v4 == ev->v4
                && spf_prefix_match (g_inet_address_to_bytes (ev->ip), m->network, v4 ? 4 : 16,
                                     v4 ? m->cidr4 : m->cidr6))
              {
                ev_frame_return (ev, m->result, m->text, TRUE);
                return;
              }
            f->next++;
            ev->term_counted = FALSE;
            continue;
          }
        default:
          break;
        }

      if (!ev_count_term (ev, m->text))
        return;
      if (!p_ready (ev, m->domain_spec, f->domain))
        {
          ptr_search (ev, f->domain, TRUE, FALSE, p_found_then_run);
          return;
        }
      if (!ev_expand_target (ev, m->domain_spec, m->text))
        return;
      switch (m->kind)
        {
        case SPF_MECH_INCLUDE:
          ev_enter (ev, FRAME_INCLUDE, ev->target);
          return;
        case SPF_MECH_A:
          ev_lookup (ev, ev->target, ev->v4 ? PB_DNS_A : PB_DNS_AAAA, a_answered);
          return;
        case SPF_MECH_MX:
          ev_lookup (ev, ev->target, PB_DNS_MX, mx_answered);
          return;
        case SPF_MECH_PTR:
          ptr_search (ev, ev->target, FALSE, TRUE, ptr_mech_found);
          return;
        case SPF_MECH_EXISTS:
          /* §5.7: always an A lookup, whatever the client's family. */
          ev_lookup (ev, ev->target, PB_DNS_A, exists_answered);
          return;
        default:
          g_return_if_reached ();
        }
    }

  /* §6.1: no mechanism matched; redirect applies unless the record has "all". */
  if (r->redirect != NULL && !r->has_all)
    {
      g_autofree char *term = g_strconcat ("redirect=", r->redirect, NULL);
      if (!ev_count_term (ev, term))
        return;
      if (!p_ready (ev, r->redirect, f->domain))
        {
          ptr_search (ev, f->domain, TRUE, FALSE, p_found_then_run);
          return;
        }
      if (!ev_expand_target (ev, r->redirect, term))
        return;
      ev_enter (ev, FRAME_REDIRECT, ev->target);
      return;
    }
  /* §4.7: the default result is neutral. */
  ev_frame_return (ev, SPF_RESULT_NEUTRAL, "default", TRUE);
}

static void
txt_answered (SpfEval *ev, const PbDnsAnswer *answer)
{
  Frame *f = ev->frame;
  const char *text = NULL;
  g_autoptr (GError) error = NULL;

  if (ev_answer_failed (ev, answer))
    return;
  /* §4.5: no record, or no v=spf1 record, is none. */
  switch (answer->status == PB_DNS_OK ? spf_record_select (answer->records, &text) : SPF_SELECT_NONE)
    {
    case SPF_SELECT_NONE:
      ev_frame_return (ev, SPF_RESULT_NONE, NULL, TRUE);
      return;
    case SPF_SELECT_MANY:
      ev_error (ev, SPF_RESULT_PERMERROR, "%s has more than one v=spf1 record", f->domain);
      return;
    case SPF_SELECT_ONE:
      break;
    }
  f->record = spf_record_parse (text, &error);
  if (f->record == NULL)
    {
      ev_error (ev, SPF_RESULT_PERMERROR, "syntax error in the record of %s: %s", f->domain, error->message);
      return;
    }
  ev_run (ev);
}

static void
ev_enter (SpfEval *ev, FrameKind kind, const char *domain)
{
  Frame *f = g_new0 (Frame, 1);

  f->kind = kind;
  f->domain = spf_domain_truncate (domain);
  f->parent = ev->frame;
  ev->frame = f;
  ev->term_counted = FALSE;
  /* §4.3: a malformed or single-label domain has no policy. */
  if (!spf_domain_is_valid (f->domain, TRUE))
    {
      ev_frame_return (ev, SPF_RESULT_NONE, NULL, TRUE);
      return;
    }
  ev_lookup (ev, f->domain, PB_DNS_TXT, txt_answered);
}

/* ---- explanation (§6.2) ------------------------------------------------------------- */

static char *
sanitize_explanation (const char *text)
{
  GString *s = g_string_new (NULL);

  /* It goes into an SMTP reply: printable US-ASCII only, and bounded. */
  for (const char *p = text; *p != '\0' && s->len < 400; p++)
    g_string_append_c (s, (guchar) *p >= 0x20 && (guchar) *p < 0x7f ? *p : '?');
  return g_string_free (s, FALSE);
}

static void
ev_default_explanation (SpfEval *ev)
{
  SpfMacroContext ctx;
  g_autofree char *text = NULL;

  if (ev->default_explanation != NULL && *ev->default_explanation != '\0')
    {
      ev_context (ev, ev->exp_domain, &ctx);
      text = spf_macro_expand (ev->default_explanation, &ctx, SPF_MACRO_EXPLAIN, NULL);
      if (text != NULL)
        ev->explanation = sanitize_explanation (text);
    }
  ev_finish (ev);
}

static void
exp_answered (SpfEval *ev, const PbDnsAnswer *answer)
{
  SpfMacroContext ctx;
  g_autofree char *text = NULL;

  /* Anything but exactly one TXT string means no explanation (§6.2). */
  if (answer->status != PB_DNS_OK || answer->records[0] == NULL || answer->records[1] != NULL)
    {
      ev_default_explanation (ev);
      return;
    }
  ev_context (ev, ev->exp_domain, &ctx);
  text = spf_macro_expand (answer->records[0], &ctx, SPF_MACRO_EXPLAIN, NULL);
  if (text == NULL)
    {
      ev_default_explanation (ev);
      return;
    }
  ev->explanation = sanitize_explanation (text);
  ev_finish (ev);
}

static void
ev_conclude (SpfEval *ev)
{
  SpfMacroContext ctx;
  g_autofree char *name = NULL;
  g_autofree char *target = NULL;

  if (ev->result != SPF_RESULT_FAIL)
    {
      ev_finish (ev);
      return;
    }
  if (ev->exp_spec == NULL)
    {
      ev_default_explanation (ev);
      return;
    }
  if (!p_ready (ev, ev->exp_spec, ev->exp_domain))
    {
      ptr_search (ev, ev->exp_domain, TRUE, FALSE, p_found_then_conclude);
      return;
    }
  /* The exp lookup does not count against the DNS term limit (§6.2). */
  ev_context (ev, ev->exp_domain, &ctx);
  name = spf_macro_expand (ev->exp_spec, &ctx, SPF_MACRO_DOMAIN, NULL);
  target = name != NULL ? spf_domain_truncate (name) : NULL;
  if (target == NULL || !spf_domain_is_valid (target, FALSE))
    {
      ev_default_explanation (ev);
      return;
    }
  ev_lookup (ev, target, PB_DNS_TXT, exp_answered);
}

/* ---- entry ------------------------------------------------------------------------- */

void
spf_check_host_start (PbResolver *resolver, const SpfCheckParams *params, GCancellable *cancellable,
                      SpfDoneFunc done, gpointer user_data)
{
  SpfEval *ev = g_new0 (SpfEval, 1);

  ev->resolver = pb_resolver_ref (resolver);
  ev->ip = spf_address_normalize (params->ip);
  ev->v4 = g_inet_address_get_family (ev->ip) == G_SOCKET_FAMILY_IPV4;
  ev->sender = spf_sender_for (params->sender, NULL);
  ev->helo = g_strdup (params->helo);
  ev->receiver = g_strdup (params->receiver);
  ev->default_explanation = g_strdup (params->default_explanation);
  ev->max_void = params->max_void_lookups;
  ev->lookup_timeout_ms = MAX (params->lookup_timeout_ms, 1);
  ev->timeout_ms = MAX (params->timeout_ms, 1);
  ev->timestamp = g_get_real_time () / G_USEC_PER_SEC;
  ev->done = done;
  ev->user_data = user_data;
  ev->result = SPF_RESULT_NONE;

  ev->overall_timer = pb_timeout_add ((guint) ev->timeout_ms, ev_timed_out, ev);
  if (cancellable != NULL)
    {
      ev->outer = g_object_ref (cancellable);
      /* Called at once when already cancelled; ev_finish() defers the delivery. */
      ev->outer_id = g_cancellable_connect (cancellable, G_CALLBACK (ev_outer_cancelled), ev, NULL);
    }
  if (!ev->finished)
    ev_enter (ev, FRAME_TOP, spf_sender_domain (ev->sender));
}
