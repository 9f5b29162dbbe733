/* SPDX-License-Identifier: MIT */
/* spf: formatting of Received-SPF, Authentication-Results and SMTP reply text (no core calls). */
#ifndef PILLARBOX_SPF_HEADERS_H
#define PILLARBOX_SPF_HEADERS_H

#include "spf-private.h"

G_BEGIN_DECLS

/* One identity's check, as the headers report it. */
typedef struct {
  SpfResult result;
  const char *receiver;        /* this host (core.hostname): receiver= and the authserv-id */
  const char *client_ip;
  const char *envelope_from;   /* the MAIL FROM address, "" for the null sender */
  const char *helo;            /* (nullable) */
  const char *identity;        /* "mailfrom" or "helo" */
  const char *sender;          /* the identity checked: the address, or postmaster@HELO */
  const char *mechanism;       /* (nullable) */
  const char *problem;         /* (nullable) for temperror and permerror */
} SpfHeaderInfo;

/* The value of Received-SPF (RFC 7208 §9.1), unfolded. */
char *spf_received_spf_value (const SpfHeaderInfo *info);
/* The value of Authentication-Results (RFC 8601 §2.2): "HOST; spf=RESULT
 * smtp.mailfrom=ADDR", with HELO_INFO's result first when HELO was checked
 * on its own. */
char *spf_authentication_results_value (const SpfHeaderInfo *info, const SpfHeaderInfo *helo_info);
/* The text of a refusal: the explanation for fail, the problem for errors. */
char *spf_reply_text (const SpfHeaderInfo *info, const char *explanation);

G_END_DECLS

#endif /* PILLARBOX_SPF_HEADERS_H */
