/* SPDX-License-Identifier: MIT */
/* Delivery status notifications (RFC 3464): recipients that failed for good, and delay notices. */
#include "config.h"
#include "core-private.h"

#include <string.h>

/* Original headers returned in a DSN at most (RFC 3462 text/rfc822-headers). */
#define BOUNCE_MAX_HEADERS (64 * 1024)

typedef struct {
  PbGeneration *gen;          /* a reference */
  char *queue_id;
  char *sender;
  char *recipient;
  char *orcpt;
  char *reply;
  char *remote;
  GString *headers;
  gint64 retry_until;         /* a delay notice: retried until then (unix s); 0 for a failure */
} Bounce;

static void
bounce_free (Bounce *b)
{
  pb_generation_unref (b->gen);
  g_free (b->queue_id);
  g_free (b->sender);
  g_free (b->recipient);
  g_free (b->orcpt);
  g_free (b->reply);
  g_free (b->remote);
  g_string_free (b->headers, TRUE);
  g_free (b);
}

/* "550 5.1.1 text" -> "5.1.1"; a reply without one gets the class's generic code. */
static char *
status_of (const char *reply)
{
  const char *p = strchr (reply, ' ');

  if (p != NULL && g_ascii_isdigit (p[1]) && p[2] == '.')
    {
      const char *end = strchr (p + 1, ' ');
      return end != NULL ? g_strndup (p + 1, end - p - 1) : g_strdup (p + 1);
    }
  return g_strdup (reply[0] == '4' ? "4.0.0" : "5.0.0");
}

static char *
rfc5322_date (void)
{
  g_autoptr (GDateTime) now = g_date_time_new_now_local ();
  return g_date_time_format (now, "%a, %d %b %Y %H:%M:%S %z");
}

static char *
bounce_compose (Bounce *b)
{
  const char *host = b->gen->core->hostname;
  gboolean delayed = b->retry_until > 0;
  g_autofree char *date = rfc5322_date ();
  g_autofree char *status = status_of (b->reply);
  g_autofree char *boundary = g_strdup_printf ("%s.%u/%s", b->queue_id, g_random_int (), host);
  g_autofree char *msgid = g_strdup_printf ("<%s.%u.%s@%s>", b->queue_id, g_random_int (), delayed ? "delay" : "bounce",
                                            host);
  g_autoptr (GDateTime) until = delayed ? g_date_time_new_from_unix_local (b->retry_until) : NULL;
  g_autofree char *until_text = until != NULL ? g_date_time_format (until, "%a, %d %b %Y %H:%M:%S %z") : NULL;
  GString *m = g_string_new (NULL);

  /* A delay's status stays transient (RFC 3464 §2.3.4): 4.x.x even if the reply had none. */
  if (delayed && status[0] != '4')
    {
      g_free (status);
      status = g_strdup ("4.0.0");
    }
  g_string_append_printf (m, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host);
  g_string_append_printf (m, "To: <%s>\r\n", b->sender);
  g_string_append (m, delayed ? "Subject: Delayed Mail (still being retried)\r\n"
                              : "Subject: Undelivered Mail Returned to Sender\r\n");
  g_string_append_printf (m, "Date: %s\r\nMessage-ID: %s\r\n", date, msgid);
  g_string_append (m, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
  g_string_append_printf (m, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n",
                          boundary);
  g_string_append (m, "This is a MIME-encapsulated message.\r\n\r\n");

  g_string_append_printf (m, "--%s\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
                          boundary);
  g_string_append_printf (m, "This is the mail system at host %s.\r\n\r\n", host);
  if (delayed)
    g_string_append_printf (m, "Your message could not be delivered to one or more recipients yet.\r\n"
                               "It will be retried until %s; you do not need\r\n"
                               "to send it again. Its headers are attached below.\r\n\r\n", until_text);
  else
    g_string_append (m, "I'm sorry to have to inform you that your message could not\r\n"
                        "be delivered to one or more recipients. It's attached below.\r\n\r\n");
  g_string_append_printf (m, "<%s>: %s%s%s\r\n\r\n", b->recipient, b->remote != NULL ? "delivery via " : "",
                          b->remote != NULL ? b->remote : "", b->remote != NULL ? ": " : "");
  g_string_append_printf (m, "    %s\r\n\r\n", b->reply);

  g_string_append_printf (m, "--%s\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n",
                          boundary);
  g_string_append_printf (m, "Reporting-MTA: dns; %s\r\nX-Pillarbox-Queue-ID: %s\r\n\r\n", host, b->queue_id);
  g_string_append_printf (m, "Final-Recipient: rfc822; %s\r\n", b->recipient);
  if (b->orcpt != NULL && *b->orcpt != '\0')
    g_string_append_printf (m, "Original-Recipient: %s\r\n", b->orcpt);
  g_string_append_printf (m, "Action: %s\r\nStatus: %s\r\n", delayed ? "delayed" : "failed", status);
  if (b->remote != NULL)
    g_string_append_printf (m, "Remote-MTA: dns; %s\r\n", b->remote);
  g_string_append_printf (m, "Diagnostic-Code: smtp; %s\r\n", b->reply);
  if (delayed)
    g_string_append_printf (m, "Will-Retry-Until: %s\r\n", until_text);   /* RFC 3464 §2.3.8 */
  g_string_append (m, "\r\n");

  g_string_append_printf (m, "--%s\r\nContent-Description: %s Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n",
                          boundary, delayed ? "Delayed" : "Undelivered");
  g_string_append_len (m, b->headers->str, b->headers->len);
  if (b->headers->len > 0 && !g_str_has_suffix (b->headers->str, "\r\n"))
    g_string_append (m, "\r\n");
  g_string_append_printf (m, "\r\n--%s--\r\n", boundary);
  return g_string_free (m, FALSE);
}

typedef struct {
  Bounce *b;
  gboolean remote;
} BounceCommit;

static void
bounce_committed (const char *queue_id, const GError *error, gpointer data)
{
  BounceCommit *bc = data;

  if (error != NULL)
    g_warning ("bounce for %s to <%s> could not be stored: %s", bc->b->queue_id, bc->b->sender, error->message);
  else
    {
      pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, NULL, bc->b->queue_id, "bounce to <%s> queued as %s",
                      bc->b->sender, queue_id);
      if (bc->remote && bc->b->gen->queue != NULL)
        pb_queue_kick_new (bc->b->gen->queue);
    }
  bounce_free (bc->b);
  g_free (bc);
}

static void
bounce_routed (const PbRoute *route, gpointer data)
{
  Bounce *b = data;
  g_autoptr (GPtrArray) rcpts = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *text = NULL;
  g_autoptr (GError) error = NULL;
  PbEnvelope env = { 0 };
  PbStoreMessage *msg;
  BounceCommit *bc;
  gboolean remote = FALSE;

  if (route->kind == PB_ROUTE_REMOTE && !b->gen->core->bounce_remote_senders)
    {
      pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, NULL, b->queue_id,
                      "to=<%s>: no bounce to the outside sender <%s> (core.bounce-remote-senders = false): %s",
                      b->recipient, b->sender, b->reply);
      bounce_free (b);
      return;
    }
  if (route->kind == PB_ROUTE_REMOTE)
    {
      PbRecipient *r = g_new0 (PbRecipient, 1);
      r->struct_size = sizeof *r;
      r->address = b->sender;
      g_ptr_array_add (rcpts, r);
      remote = TRUE;
    }
  else if (route->kind == PB_ROUTE_LOCAL)
    {
      for (guint i = 0; route->mailboxes[i] != NULL; i++)
        {
          PbRecipient *r = g_new0 (PbRecipient, 1);
          r->struct_size = sizeof *r;
          r->address = b->sender;
          r->mailbox = route->mailboxes[i];
          r->delivery_headers = "Return-Path: <>\r\n";
          g_ptr_array_add (rcpts, r);
        }
      for (guint i = 0; route->remote[i] != NULL; i++)
        {
          PbRecipient *r = g_new0 (PbRecipient, 1);
          r->struct_size = sizeof *r;
          r->address = route->remote[i];
          g_ptr_array_add (rcpts, r);
          remote = TRUE;
        }
    }
  if (rcpts->len == 0)
    {
      g_warning ("bounce for %s: the sender <%s> cannot receive it: %s", b->queue_id, b->sender,
                 route->text != NULL ? route->text : "unknown recipient");
      bounce_free (b);
      return;
    }
  g_ptr_array_add (rcpts, NULL);

  text = bounce_compose (b);
  env.struct_size = sizeof env;
  env.mail_from = "";           /* RFC 5321 §4.5.5: a bounce has the null reverse path */
  env.recipients = (const PbRecipient *const *) rcpts->pdata;
  env.size_hint = (gint64) strlen (text);
  msg = pb_store_message_begin_gen (b->gen, &env, &error);
  if (msg == NULL || !pb_store_message_write (msg, text, strlen (text), &error))
    {
      g_warning ("bounce for %s to <%s> could not be stored: %s", b->queue_id, b->sender, error->message);
      if (msg != NULL)
        pb_store_message_abort (msg);
      bounce_free (b);
      return;
    }
  bc = g_new0 (BounceCommit, 1);
  bc->b = b;
  bc->remote = remote;
  pb_store_message_commit (msg, bounce_committed, bc);
}

static void
bounce_headers_read (const guint8 *data, gsize len, gboolean eof, const GError *error, gpointer user_data)
{
  Bounce *b = user_data;
  const char *end;

  if (error == NULL && data != NULL)
    g_string_append_len (b->headers, (const char *) data, len);
  end = strstr (b->headers->str, "\r\n\r\n");
  if (end != NULL)
    g_string_truncate (b->headers, (gsize) (end - b->headers->str) + 2);
  if (error != NULL)
    g_warning ("bounce for %s: cannot read the original headers: %s", b->queue_id, error->message);
  pb_router_resolve_gen (b->gen, b->sender, bounce_routed, b);
}

static void
bounce_start (PbGeneration *gen, const char *queue_id, const char *sender, const char *recipient, const char *orcpt,
              const char *reply, const char *remote, gint64 retry_until)
{
  Bounce *b;

  if (gen->storage_module == NULL)
    return;
  b = g_new0 (Bounce, 1);
  b->gen = pb_generation_ref (gen);
  b->queue_id = g_strdup (queue_id);
  b->sender = g_strdup (sender);
  b->recipient = g_strdup (recipient);
  b->orcpt = g_strdup (orcpt);
  b->reply = g_strdup (reply);
  b->remote = g_strdup (remote);
  b->retry_until = retry_until;
  b->headers = g_string_new (NULL);
  /* One read: the queue manager records the final result right after this
   * call, and that may release the message. */
  gen->storage.message_read (gen->storage.backend, queue_id, 0, BOUNCE_MAX_HEADERS, bounce_headers_read, b);
}

void
pb_bounce_send (PbGeneration *gen, const char *queue_id, const char *sender, const char *recipient,
                const char *orcpt, const char *notify, const char *reply, const char *remote)
{
  /* RFC 5321 §4.5.5 and §6.1: never a bounce to the null sender, so never a bounce of a bounce. */
  if (sender == NULL || *sender == '\0')
    {
      pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, NULL, queue_id, "to=<%s>: not bouncing a bounce", recipient);
      return;
    }
  /* RFC 3461 §4.1: NOTIFY=NEVER, or a NOTIFY list without FAILURE, asks for no failure report. */
  if (notify != NULL && *notify != '\0'
      && (g_strstr_len (notify, -1, "NEVER") != NULL || g_strstr_len (notify, -1, "FAILURE") == NULL))
    {
      pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, NULL, queue_id, "to=<%s>: no bounce (NOTIFY=%s)", recipient,
                      notify);
      return;
    }
  bounce_start (gen, queue_id, sender, recipient, orcpt, reply, remote, 0);
}

void
pb_bounce_send_delay (PbGeneration *gen, const char *queue_id, const char *sender, const char *recipient,
                      const char *orcpt, const char *notify, const char *reply, const char *remote, gint64 retry_until)
{
  /* Never to the null sender; with NOTIFY, only when it lists DELAY (RFC 3461 §4.1). */
  if (sender == NULL || *sender == '\0')
    return;
  if (notify != NULL && *notify != '\0' && g_strstr_len (notify, -1, "DELAY") == NULL)
    return;
  pb_log_session ("pillarbox", G_LOG_LEVEL_INFO, NULL, queue_id, "to=<%s>: delay notice to <%s>", recipient, sender);
  bounce_start (gen, queue_id, sender, recipient, orcpt, reply, remote, MAX (retry_until, 1));
}
