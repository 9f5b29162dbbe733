/* SPDX-License-Identifier: MIT */
/* Deliveries handed to transports and runs handed to collectors, with their accessors. */
#include "config.h"
#include "core-private.h"

#include "transport.h"

PbDelivery *
pb_delivery_new (PbModule *transport, const char *queue_id, const char *mail_from, const char *destination,
                 gint64 size, const char *const *recipients, PbDeliveryDoneFunc done, gpointer user_data)
{
  PbDelivery *d = g_new0 (PbDelivery, 1);
  guint n = g_strv_length ((char **) recipients);

  d->module = transport;
  d->size = size;
  d->queue_id = g_strdup (queue_id);
  d->mail_from = g_strdup (mail_from);
  d->destination = g_strdup (destination);
  d->recipients = g_strdupv ((char **) recipients);
  d->results = g_new0 (PbDeliveryResult, n);
  d->n_recipients = n;
  d->done = done;
  d->user_data = user_data;
  return d;
}

void
pb_delivery_free (PbDelivery *d)
{
  for (guint i = 0; i < d->n_recipients; i++)
    {
      g_free (d->results[i].enhanced);
      g_free (d->results[i].text);
    }
  g_free (d->results);
  g_strfreev (d->recipients);
  g_strfreev (d->notify);
  g_strfreev (d->orcpt);
  g_free (d->dsn_ret);
  g_free (d->dsn_envid);
  g_free (d->queue_id);
  g_free (d->mail_from);
  g_free (d->destination);
  g_free (d);
}

static char **
copy_per_recipient (const char *const *values, guint n)
{
  char **out = g_new0 (char *, n + 1);
  for (guint i = 0; i < n; i++)
    out[i] = g_strdup (values != NULL && values[i] != NULL ? values[i] : "");
  return out;
}

void
pb_delivery_set_dsn (PbDelivery *delivery, const char *ret, const char *envid, const char *const *notify,
                     const char *const *orcpt)
{
  g_free (delivery->dsn_ret);
  g_free (delivery->dsn_envid);
  g_strfreev (delivery->notify);
  g_strfreev (delivery->orcpt);
  delivery->dsn_ret = g_strdup (ret);
  delivery->dsn_envid = g_strdup (envid);
  delivery->notify = copy_per_recipient (notify, delivery->n_recipients);
  delivery->orcpt = copy_per_recipient (orcpt, delivery->n_recipients);
}

gint64
pb_delivery_get_size (PbDelivery *delivery)
{
  g_return_val_if_fail (delivery != NULL, 0);
  return delivery->size;
}

const char *
pb_delivery_get_dsn (PbDelivery *delivery, gint index, const char *name)
{
  const char *v = NULL;

  g_return_val_if_fail (delivery != NULL && name != NULL, NULL);
  g_return_val_if_fail (index >= -1 && index < (gint) delivery->n_recipients, NULL);
  if (index < 0)
    v = g_str_equal (name, "ret") ? delivery->dsn_ret : g_str_equal (name, "envid") ? delivery->dsn_envid : NULL;
  else if (g_str_equal (name, "notify") && delivery->notify != NULL)
    v = delivery->notify[index];
  else if (g_str_equal (name, "orcpt") && delivery->orcpt != NULL)
    v = delivery->orcpt[index];
  return v != NULL && *v != '\0' ? v : NULL;
}

PbModule *
pb_delivery_get_module (PbDelivery *delivery)
{
  g_return_val_if_fail (delivery != NULL, NULL);
  return delivery->module;
}

const char *
pb_delivery_get_queue_id (PbDelivery *delivery)
{
  g_return_val_if_fail (delivery != NULL, NULL);
  return delivery->queue_id;
}

const char *
pb_delivery_get_mail_from (PbDelivery *delivery)
{
  g_return_val_if_fail (delivery != NULL, NULL);
  return delivery->mail_from;
}

const char *
pb_delivery_get_destination (PbDelivery *delivery)
{
  g_return_val_if_fail (delivery != NULL, NULL);
  return delivery->destination;
}

const char *const *
pb_delivery_get_recipients (PbDelivery *delivery)
{
  g_return_val_if_fail (delivery != NULL, NULL);
  return (const char *const *) delivery->recipients;
}

void
pb_delivery_set_result (PbDelivery *delivery, guint index, guint code, const char *enhanced, const char *text)
{
  PbDeliveryResult *r;

  g_return_if_fail (delivery != NULL && index < delivery->n_recipients);
  g_return_if_fail (code >= 200 && code <= 599);
  r = &delivery->results[index];
  r->code = code;
  g_free (r->enhanced);
  r->enhanced = g_strdup (enhanced);
  g_free (r->text);
  r->text = g_strdup (text);
  r->retry_at = 0;
}

void
pb_delivery_set_retry_at (PbDelivery *delivery, guint index, gint64 unix_time)
{
  g_return_if_fail (delivery != NULL && index < delivery->n_recipients);
  g_return_if_fail (delivery->results[index].code >= 400 && delivery->results[index].code < 500);
  delivery->results[index].retry_at = unix_time;
}

void
pb_delivery_complete (PbDelivery *delivery)
{
  g_return_if_fail (delivery != NULL);
  if (delivery->done != NULL)
    delivery->done (delivery, delivery->user_data);
  pb_delivery_free (delivery);
}

PbCollectorRun *
pb_collector_run_new (const char *name, PbCollectorRunDoneFunc done, gpointer user_data)
{
  PbCollectorRun *run = g_new0 (PbCollectorRun, 1);
  run->name = g_strdup (name);
  run->done = done;
  run->user_data = user_data;
  return run;
}

const char *
pb_collector_run_get_name (PbCollectorRun *run)
{
  g_return_val_if_fail (run != NULL, NULL);
  return run->name;
}

void
pb_collector_run_complete (PbCollectorRun *run, const GError *error)
{
  g_return_if_fail (run != NULL);
  if (run->done != NULL)
    run->done (run, error, run->user_data);
  g_free (run->name);
  g_free (run);
}
