/* SPDX-License-Identifier: MIT */
/* GnuTLS glue shared by the TLS credentials (tls.c) and connections (conn.c), not exported. */
#ifndef PILLARBOX_TLS_PRIVATE_H
#define PILLARBOX_TLS_PRIVATE_H

#include <gnutls/gnutls.h>

#include "pb-private.h"

G_BEGIN_DECLS

/* The GnuTLS credentials inside CREDS (transfer none). */
G_GNUC_INTERNAL gnutls_certificate_credentials_t pb_tls_creds_get_gnutls (PbTlsCreds *creds);

/* Process-wide client credentials (transfer none): with the system trust
 * store when VERIFY, with no trust anchors otherwise. */
G_GNUC_INTERNAL gnutls_certificate_credentials_t pb_tls_client_creds (gboolean verify);

/* A non-blocking session over FD with the shared priorities and CREDS;
 * FALSE with a PB_CONN_ERROR_TLS error when GnuTLS refuses. */
G_GNUC_INTERNAL gboolean pb_tls_session_new (gnutls_session_t *session, gboolean server,
                                             gnutls_certificate_credentials_t creds, int fd,
                                             GError **error);

G_END_DECLS

#endif /* PILLARBOX_TLS_PRIVATE_H */
