/* SPDX-License-Identifier: MIT */
/* batv: signs local senders' outgoing mail with prvs tags and refuses bounces to forged ones; `pillarbox batv`. */

/*
 * Bounce Address Tag Validation (draft-levine-smtp-batv-01), as VPOP3 does
 * it. Two hooks:
 *
 *   delivery-attempt  a message of a local sender leaves through a transport:
 *                     MAIL FROM becomes prvs=KDDDSSSSSS=user@domain, unless
 *                     the sender or the destination domain is excluded;
 *   rcpt-address      before the router sees a recipient: a tagged local
 *                     address is checked (bounces, i.e. MAIL FROM:<>) or
 *                     simply untagged (any other sender: an auto-responder
 *                     answering the envelope sender is legitimate, §5.1),
 *                     and with reject-unsigned-bounces a bounce to an
 *                     untagged address of a signing local user is refused.
 *
 * Keys live in STATE_DIR/batv/keys (mode 0600), written atomically on the
 * state store's worker thread (modules/state-store/state-store.c), so a
 * reload's second instance and a restart find the same keys, and a
 * rotation made in one instance reaches the other. A key signs only once
 * it is on disk: a tag made with a key lost in a crash could never verify.
 */
#include "config.h"
#include "batv-private.h"
#include "../state-store/state-store.h"

#include <pillarbox/pillarbox.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
  gint64 tag_validity;
  char **exclude_senders;
  char **exclude_destinations;
  gboolean reject_unsigned_bounces;
} BatvConfig;

static const PbSetting batv_settings[] = {
  PB_SETTING_INT (BatvConfig, tag_validity, "tag-validity", "7", 1, 365,
                  "Days a signed return address stays valid: bounces arriving later are refused as "
                  "\"expired BATV tag\". Keep it above the longest time a remote server may retry "
                  "before bouncing (often 5 days)."),
  PB_SETTING_STRING_LIST (BatvConfig, exclude_senders, "exclude-senders", "",
                          "Local senders whose mail is never signed: addresses (bob@example.org), domains "
                          "(example.org) or subdomains (*.example.org). reject-unsigned-bounces spares them."),
  PB_SETTING_STRING_LIST (BatvConfig, exclude_destinations, "exclude-destinations", "",
                          "Recipient domains that get unsigned mail (domains or *.subdomains): mailing lists "
                          "and servers that refuse or mishandle prvs= senders."),
  PB_SETTING_BOOL (BatvConfig, reject_unsigned_bounces, "reject-unsigned-bounces", "false",
                   "Refuse (550 5.7.1) a bounce (MAIL FROM:<>) to an untagged address of a local user "
                   "whose mail is signed: backscatter protection. postmaster is always accepted."),
  PB_SETTINGS_END
};

/* How often the key file is checked for another instance's changes, and a failed write retried. */
#define BATV_TICK_MS 2000

typedef struct {
  PbModule *module;
  const BatvConfig *config;
  gint64 (*now) (void);           /* Unix seconds */
  BatvRing *ring;                 /* the keys as the file holds them (or will, see saved) */
  gboolean saved;                 /* ring is on disk: signing may use it */
  SStore *store;                  /* NULL until start, and with --check-config */
  char *pending;                  /* ring text to write (first key, a rotation) */
  gboolean writing_pending;       /* the write under way carries pending */
  GPtrArray *waiting;             /* PbControlRequest * answered once pending is saved */
  guint timer;
} Batv;

static gint64
batv_clock (void)
{
  return g_get_real_time () / G_USEC_PER_SEC;
}

static char *
format_day (gint64 day)
{
  g_autoptr (GDateTime) t = g_date_time_new_from_unix_utc (day * BATV_DAY_SECONDS);
  return t != NULL ? g_date_time_format (t, "%Y-%m-%d") : g_strdup ("?");
}

static char *
format_time (gint64 unix_seconds)
{
  g_autoptr (GDateTime) t = g_date_time_new_from_unix_utc (unix_seconds);
  return t != NULL ? g_date_time_format (t, "%Y-%m-%d %H:%M:%S UTC") : g_strdup ("?");
}

/* A fresh key from GnuTLS's key-grade generator. */
static gboolean
batv_new_key (BatvRing *ring, guint number, gint64 created, GError **error)
{
  guint8 secret[BATV_SECRET_LEN];
  int rc = gnutls_rnd (GNUTLS_RND_KEY, secret, sizeof secret);

  if (rc < 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot make a random key: %s", gnutls_strerror (rc));
      return FALSE;
    }
  batv_ring_set (ring, number, created, secret, sizeof secret);
  memset (secret, 0, sizeof secret);
  return TRUE;
}

/* ---- the key file ---------------------------------------------------------------- */

static void batv_save (Batv *b);

static void
batv_answer_waiting (Batv *b, const GError *error)
{
  const BatvKey *active = batv_ring_active (b->ring);

  while (b->waiting->len > 0)
    {
      PbControlRequest *req = g_ptr_array_steal_index (b->waiting, 0);
      if (error != NULL)
        pb_control_request_fail (req, "cannot save the keys: %s", error->message);
      else
        {
          g_autofree char *created = format_time (active->created);
          g_autofree char *text = g_strdup_printf ("key %u signs from now on (created %s)", active->number, created);
          pb_control_request_reply (req, g_variant_new_parsed ("{'active': <%u>, 'created': <%s>}",
                                                               (guint32) active->number, created),
                                    text);
        }
      pb_control_request_unref (req);
    }
}

static void
batv_saved (const char *merged, const GError *error, gpointer user_data)
{
  Batv *b = user_data;
  gboolean carried = b->writing_pending;
  BatvRing *ring;
  const BatvKey *active;

  b->writing_pending = FALSE;
  if (error != NULL)
    {
      g_warning ("batv: cannot save keys in %s: %s", sstore_get_path (b->store), error->message);
      /* A rotation is the administrator's to retry; the first key is retried by the tick. */
      if (carried && b->waiting->len > 0)
        {
          g_clear_pointer (&b->pending, g_free);
          batv_answer_waiting (b, error);
        }
      return;
    }
  ring = batv_ring_new ();
  batv_ring_parse (ring, merged);
  active = batv_ring_active (ring);
  if (active == NULL)
    {
      batv_ring_free (ring);   /* the file emptied under us; the next tick writes ours back */
      return;
    }
  if (!carried && b->pending != NULL)
    {
      /* A merge-read finished after a rotation was asked for: the rotation
       * still has to be written, and answered only then. */
      batv_ring_free (b->ring);
      b->ring = ring;
      b->saved = TRUE;
      batv_save (b);
      return;
    }
  if (!b->saved || batv_ring_active (b->ring) == NULL || batv_ring_active (b->ring)->created != active->created)
    g_message ("batv: key %u signs (%u keys in %s)", active->number, batv_ring_count (ring),
               sstore_get_path (b->store));
  batv_ring_free (b->ring);
  b->ring = ring;
  b->saved = TRUE;
  g_clear_pointer (&b->pending, g_free);
  batv_answer_waiting (b, NULL);
}

static void
batv_save (Batv *b)
{
  if (b->store == NULL || sstore_is_busy (b->store))
    return;
  /* Without anything of our own to add, a sync is a read-merge of the other
   * instance's changes. */
  b->writing_pending = b->pending != NULL;
  sstore_sync_async (b->store, b->pending != NULL ? g_strdup (b->pending) : batv_ring_serialize (b->ring), b->now (),
                     batv_saved, b);
}

static gboolean
batv_tick (gpointer data)
{
  Batv *b = data;

  if (b->pending != NULL || sstore_changed (b->store))
    batv_save (b);
  return G_SOURCE_CONTINUE;
}

/* ---- signing: delivery-attempt ------------------------------------------------------ */

typedef struct {
  Batv *b;
  PbPolicyRequest *req;
} SignCall;

static void
batv_sign_routed (const PbRoute *route, gpointer user_data)
{
  SignCall *call = user_data;
  Batv *b = call->b;
  PbPolicyRequest *req = call->req;
  const char *from = pb_policy_request_get_field (req, "mail-from");
  const BatvKey *key = batv_ring_active (b->ring);

  /* Only addresses the router delivers here are ours to sign: a relayed
   * message of a foreign sender must keep its return path. */
  if (route->kind == PB_ROUTE_LOCAL && from != NULL && key != NULL && b->saved
      && !g_cancellable_is_cancelled (pb_policy_request_get_cancellable (req)))
    {
      g_autofree char *signed_from = batv_sign (key, from, b->now (), b->config->tag_validity);
      if (signed_from != NULL)
        {
          pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_INFO, NULL, pb_policy_request_get_field (req, "queue-id"),
                          "batv: sender <%s> signed with key %u for %s", from, key->number,
                          pb_policy_request_get_field (req, "destination"));
          pb_policy_request_set_field (req, "mail-from", signed_from);
        }
    }
  pb_policy_continue (req);
  pb_policy_request_unref (req);
  g_free (call);
}

static void
batv_delivery_hook (PbPolicyRequest *req, gpointer user_data)
{
  Batv *b = user_data;
  const char *from = pb_policy_request_get_field (req, "mail-from");
  const char *destination = pb_policy_request_get_field (req, "destination");
  const char *qid = pb_policy_request_get_field (req, "queue-id");
  SignCall *call;

  /* Never the null sender (a bounce has no return path to protect) and
   * never twice: a retry, or a message already signed upstream. */
  if (from == NULL || *from == '\0' || !batv_address_signable (from))
    {
      pb_policy_continue (req);
      return;
    }
  if (batv_address_matches ((const char *const *) b->config->exclude_senders, from)
      || (destination != NULL && batv_domain_matches ((const char *const *) b->config->exclude_destinations, destination)))
    {
      pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_DEBUG, NULL, qid, "batv: <%s> to %s left unsigned (excluded)", from,
                      destination != NULL ? destination : "?");
      pb_policy_continue (req);
      return;
    }
  if (!b->saved)
    {
      pb_log_session (G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, NULL, qid,
                      "batv: <%s> left unsigned: the signing key is not saved yet", from);
      pb_policy_continue (req);
      return;
    }
  call = g_new0 (SignCall, 1);
  call->b = b;
  call->req = pb_policy_request_ref (req);
  pb_router_resolve (b->module, from, batv_sign_routed, call);
}

/* ---- checking: rcpt-address ---------------------------------------------------------- */

typedef struct {
  Batv *b;
  PbPolicyRequest *req;
  char *untagged;        /* NULL for an untagged recipient (reject-unsigned-bounces) */
  BatvResult result;
  gboolean bounce;
} CheckCall;

static void
check_call_free (CheckCall *call)
{
  pb_policy_request_unref (call->req);
  g_free (call->untagged);
  g_free (call);
}

static void
batv_rcpt_routed (const PbRoute *route, gpointer user_data)
{
  CheckCall *call = user_data;
  PbPolicyRequest *req = call->req;
  PbSession *session = pb_policy_request_get_session (req);
  const char *rcpt = pb_policy_request_get_field (req, "rcpt");

  if (route->kind == PB_ROUTE_TEMPFAIL)
    {
      /* Refusing or passing a bounce on a guess would be wrong either way. */
      pb_policy_complete (req, PB_VERDICT_TEMPFAIL, 451, "4.3.0",
                          "Temporary failure checking the recipient, try again later");
      goto out;
    }
  if (route->kind != PB_ROUTE_LOCAL)
    {
      /* Not ours (relaying, unknown users): the router answers for the address as given. */
      pb_policy_continue (req);
      goto out;
    }
  if (call->untagged == NULL)
    {
      pb_session_info (session, "batv: unsigned bounce to <%s> refused", rcpt);
      pb_policy_complete (req, PB_VERDICT_REJECT, 550, "5.7.1",
                          "Unsigned bounce refused: this address signs its mail with BATV");
      goto out;
    }
  if (call->bounce && call->result != BATV_VALID)
    {
      gboolean expired = call->result == BATV_EXPIRED;
      pb_session_info (session, "batv: bounce to <%s> refused: %s tag", rcpt, expired ? "expired" : "invalid");
      pb_policy_complete (req, PB_VERDICT_REJECT, 550, "5.7.1",
                          expired ? "Expired BATV tag: this address is no longer valid for bounces"
                                  : "Invalid BATV tag: this message was not sent from here");
      goto out;
    }
  if (call->bounce)
    pb_session_info (session, "batv: bounce to <%s> has a valid tag, delivered to <%s>", rcpt, call->untagged);
  else
    pb_session_debug (session, "batv: <%s> untagged to <%s> (sender is not null, tag %s)", rcpt, call->untagged,
                      batv_result_to_string (call->result));
  pb_policy_request_set_field (req, "rcpt", call->untagged);
  pb_policy_continue (req);
out:
  check_call_free (call);
}

static void
batv_rcpt_hook (PbPolicyRequest *req, gpointer user_data)
{
  Batv *b = user_data;
  const char *rcpt = pb_policy_request_get_field (req, "rcpt");
  const char *from = pb_policy_request_get_field (req, "mail-from");
  gboolean bounce = from != NULL && *from == '\0';
  CheckCall *call;
  char *untagged = NULL;
  BatvResult result;

  if (rcpt == NULL)
    {
      pb_policy_continue (req);
      return;
    }
  result = batv_verify (b->ring, rcpt, b->now (), b->config->tag_validity, &untagged, NULL);
  if (result == BATV_UNSIGNED)
    {
      const char *at = strrchr (rcpt, '@');
      g_free (untagged);
      /* RFC 5321 §4.5.1: postmaster takes every report; excluded senders
       * were never signed; and before the first key is saved nothing is. */
      if (!bounce || !b->config->reject_unsigned_bounces || !b->saved || at == NULL
          || (at - rcpt == 10 && g_ascii_strncasecmp (rcpt, "postmaster", 10) == 0)
          || batv_address_matches ((const char *const *) b->config->exclude_senders, rcpt))
        {
          pb_policy_continue (req);
          return;
        }
      untagged = NULL;
    }
  call = g_new0 (CheckCall, 1);
  call->b = b;
  call->req = pb_policy_request_ref (req);
  call->untagged = untagged;
  call->result = result;
  call->bounce = bounce;
  pb_router_resolve (b->module, untagged != NULL ? untagged : rcpt, batv_rcpt_routed, call);
}

/* ---- pillarbox batv ------------------------------------------------------------------ */

static gboolean
address_well_formed (const char *address)
{
  const char *at = strrchr (address, '@');

  if (at == NULL || at == address || at[1] == '\0')
    return FALSE;
  for (const char *p = address; *p != '\0'; p++)
    if ((guchar) *p <= ' ' || *p == 0x7f || *p == '<' || *p == '>')
      return FALSE;
  return TRUE;
}

static void
batv_command_keys (Batv *b, PbControlRequest *req)
{
  g_autoptr (GString) text = g_string_new (NULL);
  const BatvKey *active = batv_ring_active (b->ring);
  GVariantBuilder list;

  g_variant_builder_init (&list, G_VARIANT_TYPE ("aa{sv}"));
  if (active == NULL)
    g_string_append (text, "no keys yet");
  for (guint i = 0; i < BATV_MAX_KEYS; i++)
    {
      const BatvKey *k = b->ring->keys[i];
      g_autofree char *created = NULL;
      g_autofree char *until = NULL;
      const char *state;
      gint64 last;

      if (k == NULL)
        continue;
      created = format_time (k->created);
      last = batv_key_last_day (b->ring, k, b->config->tag_validity);
      if (k == active)
        state = b->saved ? "active" : "active (not saved yet)";
      else if (batv_day (b->now ()) <= last)
        state = "verifies";
      else
        state = "retired";
      if (k != active)
        until = format_day (last);
      g_string_append_printf (text, "%skey %u  created %s  %s%s%s", text->len > 0 ? "\n" : "", k->number, created,
                              state, until != NULL ? (batv_day (b->now ()) <= last ? " until " : " since ") : "",
                              until != NULL ? until : "");
      g_variant_builder_add_parsed (&list, "{'number': <%u>, 'created': <%s>, 'active': <%b>, 'verifies-until': <%s>}",
                                    (guint32) k->number, created, k == active, until != NULL ? until : "");
    }
  pb_control_request_reply (req, g_variant_builder_end (&list), text->str);
}

static void
batv_command_rotate (Batv *b, PbControlRequest *req)
{
  g_autoptr (GError) error = NULL;
  BatvRing *next;
  const BatvKey *active = batv_ring_active (b->ring);
  gint64 now = b->now ();
  gint64 busy_until = 0;
  guint number;

  if (b->pending != NULL || b->store == NULL)
    {
      pb_control_request_fail (req, "the keys are being saved; try again in a moment");
      return;
    }
  if (!batv_ring_next_number (b->ring, now, b->config->tag_validity, &number, &busy_until))
    {
      g_autofree char *until = format_day (busy_until);
      pb_control_request_fail (req, "key %u may still have valid tags out there until %s; rotate after that", number,
                               until);
      return;
    }
  next = batv_ring_copy (b->ring);
  /* Strictly newer than the signing key, even within the same second. */
  if (!batv_new_key (next, number, active != NULL ? MAX (now, active->created + 1) : now, &error))
    {
      batv_ring_free (next);
      pb_control_request_fail (req, "%s", error->message);
      return;
    }
  b->pending = batv_ring_serialize (next);
  batv_ring_free (next);
  g_ptr_array_add (b->waiting, pb_control_request_ref (req));
  batv_save (b);   /* busy with a merge-read: the next tick writes it */
}

static void
batv_command_sign (Batv *b, PbControlRequest *req, const char *address)
{
  const BatvKey *key = batv_ring_active (b->ring);
  g_autofree char *signed_address = NULL;
  g_autofree char *expires = NULL;
  guint day;

  if (!address_well_formed (address))
    {
      pb_control_request_fail (req, "not an address: %s", address);
      return;
    }
  if (key == NULL || !b->saved)
    {
      pb_control_request_fail (req, "there is no saved signing key yet");
      return;
    }
  signed_address = batv_sign (key, address, b->now (), b->config->tag_validity);
  if (signed_address == NULL)
    {
      pb_control_request_fail (req, "%s cannot be signed (already tagged, quoted, or its local part is too long)",
                               address);
      return;
    }
  day = (guint) ((batv_day (b->now ()) + b->config->tag_validity) % 1000);
  expires = format_day (batv_expiry_day (day, b->now ()));
  pb_control_request_reply (req,
                            g_variant_new_parsed ("{'address': <%s>, 'key': <%u>, 'expires': <%s>}", signed_address,
                                                  (guint32) key->number, expires),
                            signed_address);
}

static void
batv_command_verify (Batv *b, PbControlRequest *req, const char *address)
{
  g_autofree char *untagged = NULL;
  g_autofree char *text = NULL;
  g_autofree char *expires = NULL;
  BatvTag tag;
  BatvResult result;
  const char *word;

  if (!address_well_formed (address))
    {
      pb_control_request_fail (req, "not an address: %s", address);
      return;
    }
  result = batv_verify (b->ring, address, b->now (), b->config->tag_validity, &untagged, &tag);
  word = batv_result_to_string (result);
  if (result == BATV_VALID)
    {
      expires = format_day (batv_expiry_day (tag.day, b->now ()));
      text = g_strdup_printf ("%s %s\nkey %u, expires at the end of %s", word, untagged, tag.key, expires);
    }
  else if (result == BATV_UNSIGNED)
    text = g_strdup_printf ("%s %s\nno prvs= tag", word, untagged);
  else if (!tag.well_formed)
    text = g_strdup_printf ("%s %s\nthe tag is not KDDDSSSSSS", word, untagged);
  else if (b->ring->keys[tag.key] == NULL)
    text = g_strdup_printf ("%s %s\nno key %u", word, untagged, tag.key);
  else
    text = g_strdup_printf ("%s %s\nkey %u, day %03u", word, untagged, tag.key, tag.day);
  pb_control_request_reply (req,
                            g_variant_new_parsed ("{'result': <%s>, 'address': <%s>, 'expires': <%s>}", word,
                                                  untagged, expires != NULL ? expires : ""),
                            text);
  batv_tag_clear (&tag);
}

static void
batv_command (PbControlRequest *req, gpointer user_data)
{
  Batv *b = user_data;
  const char *const *args = pb_control_request_get_args (req);
  guint n = args != NULL ? g_strv_length ((char **) args) : 0;

  if (n == 0 || (n == 1 && strcmp (args[0], "keys") == 0))
    batv_command_keys (b, req);
  else if (n == 1 && strcmp (args[0], "rotate") == 0)
    batv_command_rotate (b, req);
  else if (n == 2 && strcmp (args[0], "sign") == 0)
    batv_command_sign (b, req, args[1]);
  else if (n == 2 && strcmp (args[0], "verify") == 0)
    batv_command_verify (b, req, args[1]);
  else
    pb_control_request_fail (req, "usage: batv keys | batv rotate | batv sign ADDRESS | batv verify ADDRESS");
}

/* ---- life cycle ----------------------------------------------------------------------- */

static gboolean
batv_check (const void *config, GError **error)
{
  const BatvConfig *c = config;

  for (guint i = 0; c->exclude_senders[i] != NULL; i++)
    if (!batv_pattern_valid (c->exclude_senders[i], TRUE))
      {
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                     "exclude-senders: '%s' is not an address, a domain or *.domain", c->exclude_senders[i]);
        return FALSE;
      }
  for (guint i = 0; c->exclude_destinations[i] != NULL; i++)
    if (!batv_pattern_valid (c->exclude_destinations[i], FALSE))
      {
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                     "exclude-destinations: '%s' is not a domain or *.domain", c->exclude_destinations[i]);
        return FALSE;
      }
  return TRUE;
}

static void
batv_free (gpointer data)
{
  Batv *b = data;

  batv_ring_free (b->ring);
  g_free (b->pending);
  g_ptr_array_unref (b->waiting);
  g_free (b);
}

static gboolean
batv_start (PbModule *module, GError **error)
{
  Batv *b = pb_module_get_data (module);
  g_autofree char *dir = g_build_filename (pb_module_get_state_dir (module), "batv", NULL);
  g_autofree char *text = NULL;
  struct stat st;
  guint bad;

  b->store = sstore_new (dir, "keys", batv_ring_merge_texts);
  /* A few hundred octets, read once before the first client. */
  if (!sstore_read (b->store, &text, error))
    {
      g_prefix_error (error, "cannot read %s: ", sstore_get_path (b->store));
      return FALSE;
    }
  bad = batv_ring_parse (b->ring, text);
  if (bad > 0)
    g_warning ("batv: %s: %u unreadable lines skipped", sstore_get_path (b->store), bad);
  if (stat (sstore_get_path (b->store), &st) == 0 && (st.st_mode & 077) != 0)
    g_warning ("batv: %s can be read by others than its owner: anyone who can read it can forge bounces "
               "(chmod 600 it)", sstore_get_path (b->store));
  if (batv_ring_count (b->ring) == 0)
    {
      BatvRing *first = batv_ring_new ();
      if (!batv_new_key (first, 0, b->now (), error))
        {
          batv_ring_free (first);
          return FALSE;
        }
      b->pending = batv_ring_serialize (first);
      batv_ring_free (first);
      g_message ("batv: no keys in %s; making the first one", sstore_get_path (b->store));
      batv_save (b);
    }
  else
    b->saved = TRUE;
  b->timer = pb_timeout_add (BATV_TICK_MS, batv_tick, b);
  return TRUE;
}

static void
batv_fini (PbModule *module)
{
  Batv *b = pb_module_get_data (module);

  g_clear_handle_id (&b->timer, g_source_remove);
  if (b->store == NULL)
    return;
  /* Waits for a write under way; a result still on its way is dropped. */
  sstore_close (b->store);
  b->store = NULL;
  while (b->waiting->len > 0)
    {
      PbControlRequest *req = g_ptr_array_steal_index (b->waiting, 0);
      pb_control_request_fail (req, "the server is shutting down");
      pb_control_request_unref (req);
    }
}

static gboolean
batv_init (PbModule *module, const void *config, GError **error)
{
  Batv *b = g_new0 (Batv, 1);
  PbHookSpec sign = {
    .struct_size = sizeof sign,
    .stage = PB_STAGE_DELIVERY_ATTEMPT,
    .func = batv_delivery_hook,
    .user_data = b,
  };
  PbHookSpec check = {
    .struct_size = sizeof check,
    .stage = PB_STAGE_RCPT_ADDRESS,
    .func = batv_rcpt_hook,
    .user_data = b,
  };
  PbControlCommandSpec command = {
    .struct_size = sizeof command,
    .name = "batv",
    .summary = "List and rotate BATV keys, sign or check an address",
    .usage = "batv keys | batv rotate | batv sign ADDRESS | batv verify ADDRESS",
    .func = batv_command,
    .user_data = b,
  };

  b->module = module;
  b->config = config;
  b->now = batv_clock;
  b->ring = batv_ring_new ();
  b->waiting = g_ptr_array_new ();
  pb_module_set_data (module, b, batv_free);
  return pb_module_add_hook (module, &sign, error) && pb_module_add_hook (module, &check, error)
         && pb_module_add_command (module, &command, error);
}

PB_MODULE_DEFINE (
  .name = "batv",
  .version = PACKAGE_VERSION,
  .summary = "Bounce Address Tag Validation: signs local senders, refuses forged bounces",
  .init = batv_init,
  .start = batv_start,
  .fini = batv_fini,
  .settings = batv_settings,
  .config_size = sizeof (BatvConfig),
  .check = batv_check);
