/* SPDX-License-Identifier: MIT */
/* MAIL FROM, RCPT TO (router, relay rules, recipients) and VRFY/EXPN. */
#include "config.h"
#include "smtp-private.h"

#include <string.h>

static void
rcpt_free (gpointer p)
{
  SmtpRcpt *r = p;

  g_free (r->address);
  g_free (r->mailbox);
  g_free (r->notify);
  g_free (r->orcpt);
  g_free (r->delivery_headers);
  g_free (r);
}

void
smtp_txn_free (SmtpTxn *txn)
{
  if (txn->msg != NULL)
    pb_store_message_abort (txn->msg);
  smtp_mail_args_clear (&txn->mail);
  g_clear_pointer (&txn->rcpts, g_ptr_array_unref);
  g_free (txn->first_rcpt);
  if (txn->hold != NULL)
    g_byte_array_unref (txn->hold);
  g_free (txn->received);
  g_free (txn->reply_text);
  g_free (txn);
}

/* Whether the session must authenticate before MAIL: always on submission
 * and smtps (RFC 6409 §4.3, RFC 8314 §3.3), on the inbound listener with
 * require-auth unless the client is in trusted-networks. */
static gboolean
auth_required (SmtpSession *s)
{
  if (s->auth_user != NULL)
    return FALSE;
  if (s->listener != SMTP_LISTENER_SMTP)
    return TRUE;
  return s->smtp->config->require_auth && !s->trusted;
}

/* ---- MAIL ---------------------------------------------------------------- */

typedef struct {
  SmtpSession *s;             /* while the router is asked */
  SmtpMailArgs mail;
} MailCall;

static void
mail_call_free (MailCall *call)
{
  smtp_mail_args_clear (&call->mail);
  g_free (call);
}

static void
mail_filtered (SmtpSession *s, const PbVerdict *verdict, PbPolicyRequest *req, gpointer data)
{
  MailCall *call = data;

  if (!s->closed && smtp_verdict_proceeds (s, verdict))
    {
      /* Proceed: the transaction exists from here on. */
      s->txn = g_new0 (SmtpTxn, 1);
      s->txn->mail = call->mail;
      memset (&call->mail, 0, sizeof call->mail);
      s->txn->rcpts = g_ptr_array_new_with_free_func (rcpt_free);
      pb_session_set_state (s->session, "TRANSACTION");
      smtp_reply (s, 250, "2.1.0", "Sender <%s> ok", s->txn->mail.address);
    }
  mail_call_free (call);
}

static void
mail_filter (SmtpSession *s, MailCall *call)
{
  PbPolicyRequest *req = smtp_filter_new (s, PB_STAGE_MAIL_FROM);

  if (req != NULL)
    {
      pb_policy_request_set_field (req, "mail-from", call->mail.address);
      if (call->mail.size >= 0)
        {
          char size[32];
          g_snprintf (size, sizeof size, "%" G_GINT64_FORMAT, call->mail.size);
          pb_policy_request_set_field (req, "size", size);
        }
    }
  smtp_filter (s, req, mail_filtered, call);
}

static void
mail_owner_routed (const PbRoute *route, gpointer user_data)
{
  MailCall *call = user_data;
  SmtpSession *s = call->s;

  call->s = NULL;
  s->busy = FALSE;
  if (s->closed)
    goto out;
  if (route->kind == PB_ROUTE_TEMPFAIL)
    smtp_reply (s, 451, "4.3.0", "Temporary failure checking the sender, try again later");
  else if (route->kind != PB_ROUTE_LOCAL || !g_strv_contains (route->mailboxes, s->auth_user))
    {
      pb_session_info (s->session, "sender <%s> refused: not an address of %s", call->mail.address, s->auth_user);
      smtp_reply (s, 553, "5.7.1", "Sender address <%s> is not owned by user %s", call->mail.address, s->auth_user);
    }
  else
    {
      mail_filter (s, call);
      call = NULL;
    }
out:
  if (call != NULL)
    mail_call_free (call);
  smtp_session_resume (s);
  smtp_session_unref (s);
}

void
smtp_cmd_mail (SmtpSession *s, char *args)
{
  const SmtpConfig *c = s->smtp->config;
  SmtpParseContext ctx = { .esmtp = s->esmtp };
  SmtpReply error;
  MailCall *call;

  /* Check. */
  if (s->txn != NULL)
    {
      pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, "nested MAIL");
      smtp_reply (s, 503, "5.5.1", "Sender already specified");
      return;
    }
  if (auth_required (s))
    {
      smtp_reply (s, 530, "5.7.0", "Authentication required");  /* RFC 4954 §6 */
      return;
    }
  call = g_new0 (MailCall, 1);
  if (!smtp_parse_mail (args, &ctx, &call->mail, &error))
    {
      pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, error.text);
      smtp_reply_error (s, &error);
      g_free (call);
      return;
    }
  /* RFC 1870 §6.1: a declared size over the limit is refused now. */
  if (call->mail.size > c->max_message_size)
    {
      pb_session_report_event (s->session, PB_EVENT_MESSAGE_REFUSED, "too-big");
      smtp_reply (s, 552, "5.2.3", "Message exceeds fixed maximum message size");
      mail_call_free (call);
      return;
    }
  g_clear_pointer (&call->mail.auth, g_free);   /* RFC 4954 §5: not trusted, not kept */

  if (c->own_addresses_only && s->auth_user != NULL)
    {
      if (call->mail.address[0] == '\0')
        {
          smtp_reply (s, 553, "5.7.1", "The null sender is not allowed for authenticated users");
          mail_call_free (call);
          return;
        }
      call->s = smtp_session_ref (s);
      s->busy = TRUE;
      pb_router_resolve (s->smtp->module, call->mail.address, mail_owner_routed, call);
      return;
    }
  mail_filter (s, call);
}

/* ---- RCPT ---------------------------------------------------------------- */

typedef struct {
  SmtpSession *s;
  SmtpRcptArgs rcpt;          /* .address as rewritten by rcpt-address hooks */
  char *given;                /* the address the client gave, when a hook rewrote it */
  char **mailboxes;
  char **remote;
} RcptCall;

static void
rcpt_call_free (RcptCall *call)
{
  smtp_rcpt_args_clear (&call->rcpt);
  g_free (call->given);
  g_strfreev (call->mailboxes);
  g_strfreev (call->remote);
  g_free (call);
}

static void
txn_add_recipient (SmtpTxn *txn, const SmtpRcptArgs *rcpt, const char *mailbox, const char *remote)
{
  SmtpRcpt *r;

  /* One entry per mailbox (or remote address) per message. */
  for (guint i = 0; i < txn->rcpts->len; i++)
    {
      SmtpRcpt *other = g_ptr_array_index (txn->rcpts, i);
      if (mailbox != NULL ? g_strcmp0 (other->mailbox, mailbox) == 0
                          : other->mailbox == NULL && g_ascii_strcasecmp (other->address, remote) == 0)
        return;
    }
  r = g_new0 (SmtpRcpt, 1);
  r->address = g_strdup (mailbox != NULL ? rcpt->address : remote);
  r->mailbox = g_strdup (mailbox);
  r->notify = g_strdup (rcpt->notify);
  r->orcpt = g_strdup (rcpt->orcpt);
  if (mailbox != NULL)
    /* RFC 5321 §4.4: Return-Path at final delivery; Delivered-To for loops. */
    r->delivery_headers = g_strdup_printf ("Return-Path: <%s>\r\nDelivered-To: %s\r\n", txn->mail.address,
                                           rcpt->address);
  r->r.struct_size = sizeof r->r;
  r->r.address = r->address;
  r->r.mailbox = r->mailbox;
  r->r.notify = r->notify;
  r->r.orcpt = r->orcpt;
  r->r.delivery_headers = r->delivery_headers;
  g_ptr_array_add (txn->rcpts, r);
}

static void
rcpt_filtered (SmtpSession *s, const PbVerdict *verdict, PbPolicyRequest *req, gpointer data)
{
  RcptCall *call = data;

  if (!s->closed && s->txn != NULL && smtp_verdict_proceeds (s, verdict))
    {
      SmtpTxn *txn = s->txn;

      for (guint i = 0; call->mailboxes[i] != NULL; i++)
        txn_add_recipient (txn, &call->rcpt, call->mailboxes[i], NULL);
      for (guint i = 0; call->remote[i] != NULL; i++)
        txn_add_recipient (txn, &call->rcpt, NULL, call->remote[i]);
      if (txn->accepted++ == 0)
        txn->first_rcpt = g_strdup (call->rcpt.address);
      smtp_reply (s, 250, "2.1.5", "Recipient <%s> ok", call->given != NULL ? call->given : call->rcpt.address);
    }
  rcpt_call_free (call);
}

static void
rcpt_routed (const PbRoute *route, gpointer user_data)
{
  RcptCall *call = user_data;
  SmtpSession *s = call->s;
  const char *addr = call->rcpt.address;

  call->s = NULL;
  s->busy = FALSE;
  if (s->closed || s->txn == NULL)
    goto done;

  switch (route->kind)
    {
    case PB_ROUTE_LOCAL:
      call->mailboxes = g_strdupv ((char **) route->mailboxes);
      call->remote = g_strdupv ((char **) route->remote);
      break;
    case PB_ROUTE_REMOTE:
      /* Relaying: only for authenticated users and trusted networks. */
      if (s->auth_user == NULL && !s->trusted)
        {
          pb_session_info (s->session, "relay to <%s> from %s denied", addr, pb_session_get_peer_ip (s->session));
          pb_session_report_event (s->session, PB_EVENT_RELAY_DENIED, addr);
          smtp_reply (s, 550, "5.7.1", "Relaying not allowed");
          goto done;
        }
      call->mailboxes = g_new0 (char *, 1);
      call->remote = g_new0 (char *, 2);
      call->remote[0] = g_strdup (addr);
      break;
    case PB_ROUTE_UNKNOWN:
      pb_session_info (s->session, "unknown recipient <%s>", addr);
      pb_session_report_event (s->session, PB_EVENT_UNKNOWN_RECIPIENT, addr);
      smtp_reply (s, route->code != 0 ? route->code : 550, route->enhanced != NULL ? route->enhanced : "5.1.1",
                  "%s", route->text != NULL ? route->text : "User unknown");
      goto done;
    case PB_ROUTE_LOOP:
      smtp_reply (s, route->code != 0 ? route->code : 550, route->enhanced != NULL ? route->enhanced : "5.4.6",
                  "%s", route->text != NULL ? route->text : "Routing loop detected");
      goto done;
    case PB_ROUTE_INVALID:
      smtp_reply (s, 501, "5.1.3", "%s", route->text != NULL ? route->text : "Bad recipient address syntax");
      goto done;
    case PB_ROUTE_TEMPFAIL:
    default:
      smtp_reply (s, 451, "4.3.0", "%s",
                  route->text != NULL ? route->text : "Temporary failure resolving the recipient, try again later");
      goto done;
    }

  {
    PbPolicyRequest *req = smtp_filter_new (s, PB_STAGE_RCPT_TO);
    if (req != NULL)
      pb_policy_request_set_field (req, "rcpt", addr);
    smtp_filter (s, req, rcpt_filtered, call);
    call = NULL;
  }

done:
  if (call != NULL)
    rcpt_call_free (call);
  smtp_session_resume (s);
  smtp_session_unref (s);
}

/* A rewritten forward path must still be one: it reaches the router, the
 * queue and a Delivered-To header verbatim, so no spaces, controls or
 * brackets, and at most the 256 octets of RFC 5321 §4.5.3.1.3 with its
 * angle brackets. */
static gboolean
rcpt_rewrite_ok (const char *address)
{
  gsize len = strlen (address);

  if (len == 0 || len > 254)
    return FALSE;
  for (const char *p = address; *p != '\0'; p++)
    if ((guchar) *p <= ' ' || *p == 0x7f || *p == '<' || *p == '>')
      return FALSE;
  return strchr (address, '@') != NULL || g_ascii_strcasecmp (address, "postmaster") == 0;
}

static void
rcpt_address_filtered (SmtpSession *s, const PbVerdict *verdict, PbPolicyRequest *req, gpointer data)
{
  RcptCall *call = data;
  const char *rewritten = req != NULL ? pb_policy_request_get_field (req, "rcpt") : NULL;

  if (s->closed || s->txn == NULL || !smtp_verdict_proceeds (s, verdict))
    {
      rcpt_call_free (call);
      return;
    }
  if (rewritten != NULL && strcmp (rewritten, call->rcpt.address) != 0)
    {
      if (!rcpt_rewrite_ok (rewritten))
        {
          /* A module's bug, not the client's fault: a temporary answer, so no mail is lost. */
          pb_session_warning (s->session, "rcpt-address: a hook rewrote <%s> to an invalid address",
                              call->rcpt.address);
          smtp_reply (s, 451, "4.3.0", "Temporary failure resolving the recipient, try again later");
          rcpt_call_free (call);
          return;
        }
      pb_session_debug (s->session, "recipient <%s> rewritten to <%s>", call->rcpt.address, rewritten);
      call->given = call->rcpt.address;
      call->rcpt.address = g_strdup (rewritten);
    }
  /* smtp_filter_done() resumes the session only when nobody is busy again. */
  call->s = smtp_session_ref (s);
  s->busy = TRUE;
  pb_router_resolve (s->smtp->module, call->rcpt.address, rcpt_routed, call);
}

void
smtp_cmd_rcpt (SmtpSession *s, char *args)
{
  SmtpTxn *txn = s->txn;
  SmtpParseContext ctx = { .esmtp = s->esmtp };
  SmtpReply error;
  RcptCall *call;
  PbPolicyRequest *req;

  /* Check. */
  if (txn == NULL || txn->bdat)
    {
      pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, "RCPT out of sequence");
      smtp_reply (s, 503, "5.5.1", txn == NULL ? "Need MAIL before RCPT" : "RCPT not allowed after BDAT");
      return;
    }
  ctx.smtputf8 = txn->mail.smtputf8;
  if (txn->accepted >= (guint) s->smtp->config->max_recipients)
    {
      smtp_reply (s, 452, "4.5.3", "Too many recipients");  /* RFC 5321 §4.5.3.1.10 */
      return;
    }
  call = g_new0 (RcptCall, 1);
  if (!smtp_parse_rcpt (args, &ctx, &call->rcpt, &error))
    {
      pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, error.text);
      smtp_reply_error (s, &error);
      g_free (call);
      return;
    }
  /* Rewrite, route, filter, proceed. */
  req = smtp_filter_new (s, PB_STAGE_RCPT_ADDRESS);
  if (req != NULL)
    pb_policy_request_set_field (req, "rcpt", call->rcpt.address);
  smtp_filter (s, req, rcpt_address_filtered, call);
}

/* ---- VRFY, EXPN -------------------------------------------------------- */

typedef struct {
  SmtpSession *s;
  char *address;
  gboolean expn;
} VrfyCall;

static void
vrfy_routed (const PbRoute *route, gpointer user_data)
{
  VrfyCall *call = user_data;
  SmtpSession *s = call->s;

  s->busy = FALSE;
  if (s->closed)
    goto out;
  if (route->kind == PB_ROUTE_LOCAL)
    {
      if (!call->expn)
        smtp_reply (s, 250, "2.1.5", "<%s>", route->address);
      else
        {
          /* RFC 5321 §3.5.2: one mailbox per line of a multi-line reply. */
          GString *r = g_string_new (NULL);
          GPtrArray *all = g_ptr_array_new ();
          for (guint i = 0; route->mailboxes[i] != NULL; i++)
            g_ptr_array_add (all, (gpointer) route->mailboxes[i]);
          for (guint i = 0; route->remote[i] != NULL; i++)
            g_ptr_array_add (all, (gpointer) route->remote[i]);
          for (guint i = 0; i < all->len; i++)
            g_string_append_printf (r, "250%c2.1.5 <%s>\r\n", i + 1 < all->len ? '-' : ' ',
                                    (const char *) g_ptr_array_index (all, i));
          pb_conn_write (s->conn, r->str, r->len);
          g_string_free (r, TRUE);
          g_ptr_array_unref (all);
        }
    }
  else if (route->kind == PB_ROUTE_REMOTE)
    {
      if (call->expn)
        smtp_reply (s, 550, "5.1.1", "<%s> is not a local address", call->address);
      else
        smtp_reply (s, 252, "2.1.5", "<%s> is not local; send and delivery will be attempted", call->address);
    }
  else
    smtp_reply (s, route->code != 0 ? route->code : 550, route->enhanced != NULL ? route->enhanced : "5.1.1",
                "%s", route->text != NULL ? route->text : "User unknown");
out:
  smtp_session_resume (s);
  smtp_session_unref (s);
  g_free (call->address);
  g_free (call);
}

void
smtp_cmd_vrfy (SmtpSession *s, char *args, gboolean expn)
{
  GInetAddress *peer = g_inet_socket_address_get_address (pb_conn_get_peer_address (s->conn));
  gboolean allowed = FALSE;
  char *address;
  char *lt;
  VrfyCall *call;

  for (guint i = 0; peer != NULL && i < s->smtp->vrfy_from->len; i++)
    if (g_inet_address_mask_matches (g_ptr_array_index (s->smtp->vrfy_from, i), peer))
      allowed = TRUE;
  if (*args == '\0')
    {
      smtp_reply (s, 501, "5.5.4", expn ? "Syntax: EXPN list" : "Syntax: VRFY address");
      return;
    }
  if (!allowed)
    {
      /* RFC 5321 §3.5.3 and §7.3: VRFY answers 252, EXPN may be disabled. */
      if (expn)
        smtp_reply (s, 502, "5.5.1", "EXPN not available");
      else
        smtp_reply (s, 252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
      return;
    }
  /* "Name <address>", "<address>" or "address". */
  lt = strchr (args, '<');
  if (lt != NULL)
    {
      char *gt = strchr (lt, '>');
      address = g_strndup (lt + 1, gt != NULL ? (gsize) (gt - lt - 1) : strlen (lt + 1));
    }
  else
    address = g_strdup (args);
  call = g_new0 (VrfyCall, 1);
  call->s = smtp_session_ref (s);
  call->address = address;
  call->expn = expn;
  s->busy = TRUE;
  pb_router_resolve (s->smtp->module, address, vrfy_routed, call);
}
