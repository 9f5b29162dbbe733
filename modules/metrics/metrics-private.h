/* SPDX-License-Identifier: MIT */
/* metrics: the exposition writer, the HTTP request parser and the counters, shared with the unit tests. */
#ifndef PILLARBOX_METRICS_PRIVATE_H
#define PILLARBOX_METRICS_PRIVATE_H

#include <glib.h>

G_BEGIN_DECLS

/* ---- the text exposition format 0.0.4 (metrics-expo.c) ---- */

typedef enum {
  METRICS_COUNTER,
  METRICS_GAUGE,
  METRICS_HISTOGRAM
} MetricsType;

/* Appends "# HELP NAME TEXT" and "# TYPE NAME TYPE"; HELP text is escaped
 * (backslash, line feed). */
void metrics_expo_family (GString *out, const char *name, MetricsType type, const char *help);
/* Appends one sample: NAME{l1="v1",...} VALUE. LABELS is a NULL-terminated
 * list of name, value pairs (NULL for none); values are escaped
 * (backslash, double quote, line feed). */
void metrics_expo_sample (GString *out, const char *name, const char *const *labels, double value);
/* Appends VALUE as the format writes numbers: integers without a decimal
 * point, "+Inf", "-Inf", "NaN", otherwise the shortest exact decimal. */
void metrics_expo_number (GString *out, double value);
/* Appends TEXT with the label-value escapes. */
void metrics_expo_escape_label (GString *out, const char *text);

/* ---- counters with labels (metrics-expo.c) ---- */

/* A counter family's values, keyed by their label values. */
typedef struct _MetricsCounter MetricsCounter;

MetricsCounter *metrics_counter_new (guint n_labels);
void metrics_counter_free (MetricsCounter *counter);
/* Adds N to the series with these label values (n_labels of them). */
void metrics_counter_add (MetricsCounter *counter, const char *const *values, guint64 n);
guint64 metrics_counter_get (MetricsCounter *counter, const char *const *values);
guint metrics_counter_size (MetricsCounter *counter);
/* Appends every series, sorted by label values, as NAME{LABEL_NAMES...}. */
void metrics_counter_write (MetricsCounter *counter, GString *out, const char *name,
                            const char *const *label_names);

/* ---- HTTP/1.x requests (metrics-http.c) ---- */

typedef enum {
  METRICS_HTTP_MORE,          /* give more input */
  METRICS_HTTP_DONE,          /* the head is complete: method and target are set */
  METRICS_HTTP_ERROR          /* malformed or too big: answer status, then close */
} MetricsHttpResult;

typedef struct {
  gsize max_head;             /* the most octets of request line and fields together */
  gsize used;                 /* octets of the head taken so far */
  GString *line;              /* the line being collected */
  guint lines;                /* lines completed, the request line included */
  gboolean has_host;
  gboolean http11;
  char *method;
  char *target;               /* the path, without query */
  guint status;               /* with METRICS_HTTP_ERROR: 400, 414, 431 or 505 */
  const char *error;          /* with METRICS_HTTP_ERROR: why, for the log */
} MetricsHttpParser;

void metrics_http_parser_init (MetricsHttpParser *p, gsize max_head);
void metrics_http_parser_clear (MetricsHttpParser *p);
/* Takes octets of the request head. *CONSUMED says how many were used;
 * what follows the head (a body) is not consumed. */
MetricsHttpResult metrics_http_parser_feed (MetricsHttpParser *p, const guint8 *data, gsize len, gsize *consumed);
/* The reason phrase of a status code this module sends. */
const char *metrics_http_reason (guint status);

/* ---- the module's counters and the whole page (metrics-render.c) ---- */

typedef struct {
  MetricsCounter *sessions;           /* service, listener */
  MetricsCounter *accepted;           /* service */
  MetricsCounter *recipients;         /* service */
  MetricsCounter *rejected;           /* reason */
  MetricsCounter *deliveries;         /* result, domain */
  guint64 ids_blocks;
  GHashTable *domains;                /* domain labels in use (bounded by max_domains) */
  guint max_domains;
} MetricsState;

MetricsState *metrics_state_new (guint max_domains);
void metrics_state_free (MetricsState *state);
/* The domain label for a delivery to DOMAIN: itself (lower case) while
 * fewer than max_domains are in use, else "other". */
const char *metrics_state_domain_label (MetricsState *state, const char *domain);
/* The rejection reason for a policy refusal (event detail "STAGE CODE
 * MODULE"): "policy_STAGE" with '-' made '_'; NULL when unparseable. */
char *metrics_policy_reason (const char *detail);
/* The rejection reason for a message refusal detail ("too-big" ...). */
const char *metrics_message_reason (const char *detail);

/* Writes the whole exposition: the module's counters, then what STATUS
 * (the `status` command's data, nullable) and SESSIONS (the `sessions`
 * command's data, nullable) say. */
void metrics_render (MetricsState *state, GVariant *status, GVariant *sessions, GString *out);

G_END_DECLS

#endif /* PILLARBOX_METRICS_PRIVATE_H */
