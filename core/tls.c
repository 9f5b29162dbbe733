/* SPDX-License-Identifier: MIT */
/* TLS credentials (loaded from PEM files, or a self-signed pair made on first start) and the GnuTLS settings connections share. */
#ifndef G_LOG_DOMAIN
#define G_LOG_DOMAIN "pillarbox"
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <gnutls/crypto.h>

#include "pb-private.h"
#include "tls-private.h"

/* PEM files larger than this are not certificates or keys. */
#define TLS_FILE_MAX (1024 * 1024)
/* X.520 ub-common-name: longer host names go only into subjectAltName. */
#define TLS_CN_MAX 64
#define TLS_SELF_SIGNED_YEARS 10

struct _PbTlsCreds {
  int ref_count;
  gnutls_certificate_credentials_t cred;
  char *description;   /* "CN=mail.example.org, expires 2036-11-20" */
};

/* ---- reading and writing PEM files ---------------------------------- */

/* Reads a whole small file; on failure returns FALSE with errno set. */
static gboolean
tls_read_file (const char *path, gnutls_datum_t *out)
{
  struct stat st;
  guint8 *data;
  gsize done = 0;
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return FALSE;
  if (fstat (fd, &st) < 0)
    goto fail;
  if (!S_ISREG (st.st_mode))
    {
      errno = S_ISDIR (st.st_mode) ? EISDIR : EINVAL;
      goto fail;
    }
  if (st.st_size > TLS_FILE_MAX)
    {
      errno = EFBIG;
      goto fail;
    }
  data = g_malloc ((gsize) st.st_size + 1);
  while (done < (gsize) st.st_size)
    {
      ssize_t n = read (fd, data + done, (gsize) st.st_size - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        {
          int saved = n < 0 ? errno : EIO;
          g_free (data);
          errno = saved;
          goto fail;
        }
      done += (gsize) n;
    }
  data[done] = '\0';
  close (fd);
  out->data = data;
  out->size = (unsigned int) done;
  return TRUE;

fail:
  {
    int saved = errno;
    close (fd);
    errno = saved;
  }
  return FALSE;
}

static void
tls_datum_wipe (gnutls_datum_t *datum)
{
  if (datum->data != NULL)
    {
      explicit_bzero (datum->data, datum->size);
      g_free (datum->data);
    }
  datum->data = NULL;
  datum->size = 0;
}

/* Replaces PATH atomically: a temporary file in the same directory with
 * MODE from the start, written, fsync'd, then renamed over PATH. */
static gboolean
tls_write_file_atomic (const char *path, const void *data, gsize len, int mode, GError **error)
{
  g_autofree char *tmp = g_strdup_printf ("%s.XXXXXX", path);
  g_autofree char *dir = g_path_get_dirname (path);
  const guint8 *p = data;
  gsize done = 0;
  int dir_fd;
  int fd;

  fd = g_mkstemp_full (tmp, O_WRONLY | O_CLOEXEC, mode);
  if (fd < 0)
    {
      int saved = errno;
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot create %s: %s", tmp, g_strerror (saved));
      return FALSE;
    }
  /* The umask may have taken bits away; never let it add any. */
  if (fchmod (fd, mode) < 0)
    goto fail;
  while (done < len)
    {
      ssize_t n = write (fd, p + done, len - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        goto fail;
      done += (gsize) n;
    }
  if (fsync (fd) < 0)
    goto fail;
  if (close (fd) < 0)
    {
      fd = -1;
      goto fail;
    }
  fd = -1;
  if (rename (tmp, path) < 0)
    goto fail;

  /* Make the rename itself durable; failing here loses nothing now. */
  dir_fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0)
    {
      (void) fsync (dir_fd);
      close (dir_fd);
    }
  return TRUE;

fail:
  {
    int saved = errno;
    if (fd >= 0)
      close (fd);
    unlink (tmp);
    g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot write %s: %s", path, g_strerror (saved));
  }
  return FALSE;
}

/* ---- credentials ------------------------------------------------------ */

/* "CN=host, expires 2036-11-20" from the leaf certificate. */
static char *
tls_describe_crt (gnutls_x509_crt_t crt)
{
  char name[256];
  size_t size = sizeof name;
  time_t expires = gnutls_x509_crt_get_expiration_time (crt);
  g_autoptr (GDateTime) when = g_date_time_new_from_unix_utc (expires);
  g_autofree char *date = when != NULL ? g_date_time_format (when, "%Y-%m-%d") : g_strdup ("(unknown)");
  gboolean expired = expires != (time_t) -1 && expires < time (NULL);

  if (gnutls_x509_crt_get_dn_by_oid (crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, name, &size) < 0)
    {
      unsigned int critical;
      size = sizeof name;
      if (gnutls_x509_crt_get_subject_alt_name (crt, 0, name, &size, &critical) != GNUTLS_SAN_DNSNAME)
        g_strlcpy (name, "(no name)", sizeof name);
    }
  return g_strdup_printf ("CN=%s, %s %s", name, expired ? "expired" : "expires", date);
}

PbTlsCreds *
pb_tls_creds_load (const char *cert_file, const char *key_file, GError **error)
{
  gnutls_datum_t cert_pem = { NULL, 0 };
  gnutls_datum_t key_pem = { NULL, 0 };
  gnutls_x509_crt_t *crts = NULL;
  unsigned int n_crts = 0;
  gnutls_x509_privkey_t key = NULL;
  gnutls_certificate_credentials_t cred = NULL;
  PbTlsCreds *creds = NULL;
  int r;

  g_return_val_if_fail (cert_file != NULL, NULL);
  g_return_val_if_fail (key_file != NULL, NULL);

  if (!tls_read_file (cert_file, &cert_pem))
    {
      int saved = errno;
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG, "cannot load TLS certificate %s: %s", cert_file,
                   g_strerror (saved));
      goto out;
    }
  r = gnutls_x509_crt_list_import2 (&crts, &n_crts, &cert_pem, GNUTLS_X509_FMT_PEM, GNUTLS_X509_CRT_LIST_SORT);
  if (r < 0 || n_crts == 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG, "cannot load TLS certificate %s: %s", cert_file,
                   r < 0 ? gnutls_strerror (r) : "no certificate in the file");
      goto out;
    }

  if (!tls_read_file (key_file, &key_pem))
    {
      int saved = errno;
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG, "cannot load TLS key %s: %s", key_file,
                   g_strerror (saved));
      goto out;
    }
  if ((r = gnutls_x509_privkey_init (&key)) < 0
      || (r = gnutls_x509_privkey_import2 (key, &key_pem, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG, "cannot load TLS key %s: %s", key_file,
                   gnutls_strerror (r));
      goto out;
    }

  if ((r = gnutls_certificate_allocate_credentials (&cred)) < 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot load TLS certificate %s: %s", cert_file,
                   gnutls_strerror (r));
      goto out;
    }
  /* Copies the chain and the key. */
  r = gnutls_certificate_set_x509_key (cred, crts, n_crts, key);
  if (r == GNUTLS_E_CERTIFICATE_KEY_MISMATCH)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG, "TLS key %s does not match certificate %s",
                   key_file, cert_file);
      goto out;
    }
  if (r < 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG, "cannot use TLS certificate %s with key %s: %s",
                   cert_file, key_file, gnutls_strerror (r));
      goto out;
    }

  creds = g_new0 (PbTlsCreds, 1);
  creds->ref_count = 1;
  creds->cred = cred;
  creds->description = tls_describe_crt (crts[0]);
  cred = NULL;

out:
  if (cred != NULL)
    gnutls_certificate_free_credentials (cred);
  if (key != NULL)
    gnutls_x509_privkey_deinit (key);
  for (unsigned int i = 0; i < n_crts; i++)
    gnutls_x509_crt_deinit (crts[i]);
  gnutls_free (crts);
  tls_datum_wipe (&key_pem);
  tls_datum_wipe (&cert_pem);
  return creds;
}

/* Makes a P-256 key and a self-signed server certificate for HOSTNAME;
 * returns both as PEM. */
static gboolean
tls_make_self_signed (const char *hostname, gnutls_datum_t *key_pem, gnutls_datum_t *crt_pem, GError **error)
{
  gnutls_x509_privkey_t key = NULL;
  gnutls_x509_crt_t crt = NULL;
  guint8 serial[16];
  guint8 key_id[64];
  size_t key_id_size = sizeof key_id;
  time_t now = time (NULL);
  const char *step = "generate the key";
  int r;

  if ((r = gnutls_x509_privkey_init (&key)) < 0)
    goto fail;
  /* ECDSA P-256: small, fast, and accepted by every client that matters. */
  if ((r = gnutls_x509_privkey_generate2 (key, GNUTLS_PK_ECDSA,
                                          GNUTLS_CURVE_TO_BITS (GNUTLS_ECC_CURVE_SECP256R1), 0, NULL, 0)) < 0)
    goto fail;

  step = "build the certificate";
  if ((r = gnutls_x509_crt_init (&crt)) < 0)
    goto fail;
  if ((r = gnutls_x509_crt_set_version (crt, 3)) < 0)
    goto fail;
  /* A positive 128-bit random serial (RFC 5280 §4.1.2.2). */
  if ((r = gnutls_rnd (GNUTLS_RND_NONCE, serial, sizeof serial)) < 0)
    goto fail;
  serial[0] = (serial[0] & 0x7f) | 0x01;
  if ((r = gnutls_x509_crt_set_serial (crt, serial, sizeof serial)) < 0)
    goto fail;
  /* Back-dated an hour for clients whose clocks run a little slow. */
  if ((r = gnutls_x509_crt_set_activation_time (crt, now - 3600)) < 0)
    goto fail;
  if ((r = gnutls_x509_crt_set_expiration_time (crt, now + (time_t) TLS_SELF_SIGNED_YEARS * 365 * 24 * 3600)) < 0)
    goto fail;
  if (strlen (hostname) <= TLS_CN_MAX
      && (r = gnutls_x509_crt_set_dn_by_oid (crt, GNUTLS_OID_X520_COMMON_NAME, 0, hostname,
                                             (unsigned int) strlen (hostname))) < 0)
    goto fail;
  if ((r = gnutls_x509_crt_set_subject_alt_name (crt, GNUTLS_SAN_DNSNAME, hostname,
                                                 (unsigned int) strlen (hostname), GNUTLS_FSAN_SET)) < 0)
    goto fail;
  if ((r = gnutls_x509_crt_set_key (crt, key)) < 0)
    goto fail;
  if ((r = gnutls_x509_crt_set_basic_constraints (crt, 0, -1)) < 0)
    goto fail;
  /* An ECDSA key only signs: keyEncipherment is for RSA key transport. */
  if ((r = gnutls_x509_crt_set_key_usage (crt, GNUTLS_KEY_DIGITAL_SIGNATURE)) < 0)
    goto fail;
  if ((r = gnutls_x509_crt_set_key_purpose_oid (crt, GNUTLS_KP_TLS_WWW_SERVER, 0)) < 0)
    goto fail;
  if ((r = gnutls_x509_crt_get_key_id (crt, 0, key_id, &key_id_size)) < 0
      || (r = gnutls_x509_crt_set_subject_key_id (crt, key_id, key_id_size)) < 0)
    goto fail;

  step = "sign the certificate";
  if ((r = gnutls_x509_crt_sign2 (crt, crt, key, GNUTLS_DIG_SHA256, 0)) < 0)
    goto fail;

  step = "export the key";
  if ((r = gnutls_x509_privkey_export2 (key, GNUTLS_X509_FMT_PEM, key_pem)) < 0)
    goto fail;
  step = "export the certificate";
  if ((r = gnutls_x509_crt_export2 (crt, GNUTLS_X509_FMT_PEM, crt_pem)) < 0)
    {
      gnutls_memset (key_pem->data, 0, key_pem->size);
      gnutls_free (key_pem->data);
      key_pem->data = NULL;
      goto fail;
    }
  gnutls_x509_crt_deinit (crt);
  gnutls_x509_privkey_deinit (key);
  return TRUE;

fail:
  g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot %s for a self-signed TLS certificate: %s",
               step, gnutls_strerror (r));
  if (crt != NULL)
    gnutls_x509_crt_deinit (crt);
  if (key != NULL)
    gnutls_x509_privkey_deinit (key);
  return FALSE;
}

PbTlsCreds *
pb_tls_creds_ensure_self_signed (const char *state_dir, const char *hostname, GError **error)
{
  g_autofree char *dir = NULL;
  g_autofree char *crt_file = NULL;
  g_autofree char *key_file = NULL;
  gnutls_datum_t key_pem = { NULL, 0 };
  gnutls_datum_t crt_pem = { NULL, 0 };
  gboolean ok;

  g_return_val_if_fail (state_dir != NULL, NULL);
  g_return_val_if_fail (hostname != NULL && *hostname != '\0', NULL);

  dir = g_build_filename (state_dir, "tls", NULL);
  crt_file = g_build_filename (dir, "selfsigned.crt", NULL);
  key_file = g_build_filename (dir, "selfsigned.key", NULL);

  if (g_file_test (crt_file, G_FILE_TEST_EXISTS) && g_file_test (key_file, G_FILE_TEST_EXISTS))
    return pb_tls_creds_load (crt_file, key_file, error);

  if (g_mkdir_with_parents (dir, 0700) < 0)
    {
      int saved = errno;
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot create %s: %s", dir, g_strerror (saved));
      return NULL;
    }
  if (!tls_make_self_signed (hostname, &key_pem, &crt_pem, error))
    return NULL;

  /* The key first: a certificate on disk always has its key beside it. */
  ok = tls_write_file_atomic (key_file, key_pem.data, key_pem.size, 0600, error)
       && tls_write_file_atomic (crt_file, crt_pem.data, crt_pem.size, 0644, error);
  gnutls_memset (key_pem.data, 0, key_pem.size);
  gnutls_free (key_pem.data);
  gnutls_free (crt_pem.data);
  if (!ok)
    return NULL;

  g_info ("created a self-signed TLS certificate for %s in %s", hostname, dir);
  return pb_tls_creds_load (crt_file, key_file, error);
}

PbTlsCreds *
pb_tls_creds_ref (PbTlsCreds *creds)
{
  g_return_val_if_fail (creds != NULL, NULL);
  g_atomic_int_inc (&creds->ref_count);
  return creds;
}

void
pb_tls_creds_unref (PbTlsCreds *creds)
{
  g_return_if_fail (creds != NULL);
  if (!g_atomic_int_dec_and_test (&creds->ref_count))
    return;
  gnutls_certificate_free_credentials (creds->cred);
  g_free (creds->description);
  g_free (creds);
}

char *
pb_tls_creds_describe (PbTlsCreds *creds)
{
  g_return_val_if_fail (creds != NULL, NULL);
  return g_strdup (creds->description);
}

gnutls_certificate_credentials_t
pb_tls_creds_get_gnutls (PbTlsCreds *creds)
{
  return creds->cred;
}

/* ---- sessions --------------------------------------------------------- */

gnutls_certificate_credentials_t
pb_tls_client_creds (gboolean verify)
{
  static gsize once[2];
  static gnutls_certificate_credentials_t cred[2];
  int i = verify ? 1 : 0;

  if (g_once_init_enter (&once[i]))
    {
      int r = gnutls_certificate_allocate_credentials (&cred[i]);
      if (r < 0)
        g_warning ("cannot allocate TLS client credentials: %s", gnutls_strerror (r));
      else if (verify && (r = gnutls_certificate_set_x509_system_trust (cred[i])) < 0)
        g_warning ("cannot load the system's trusted TLS certificates: %s", gnutls_strerror (r));
      g_once_init_leave (&once[i], 1);
    }
  return cred[i];
}

/* Priorities: the system's default (GnuTLS's NORMAL unless an
 * administrator tightened /etc/gnutls/config) minus SSL 3.0, TLS 1.0 and
 * TLS 1.1, which RFC 8996 deprecates. Mail still falls back to plain text
 * when TLS fails, so nothing stricter than that is imposed here. */
static gnutls_priority_t
tls_priority (void)
{
  static gsize once;
  static gnutls_priority_t priority;

  if (g_once_init_enter (&once))
    {
      const char *err_pos = NULL;
      int r = gnutls_priority_init2 (&priority, "-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1", &err_pos,
                                     GNUTLS_PRIORITY_INIT_DEF_APPEND);
      if (r < 0)
        {
          g_warning ("TLS priority string refused at \"%s\" (%s); using the GnuTLS default",
                     err_pos != NULL ? err_pos : "", gnutls_strerror (r));
          r = gnutls_priority_init (&priority, NULL, NULL);
          if (r < 0)
            priority = NULL;
        }
      g_once_init_leave (&once, 1);
    }
  return priority;
}

gboolean
pb_tls_session_new (gnutls_session_t *session, gboolean server, gnutls_certificate_credentials_t creds, int fd,
                    GError **error)
{
  gnutls_priority_t priority = tls_priority ();
  int r;

  *session = NULL;
  r = gnutls_init (session, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
  if (r >= 0)
    r = priority != NULL ? gnutls_priority_set (*session, priority) : gnutls_set_default_priority (*session);
  if (r >= 0 && creds == NULL)
    r = GNUTLS_E_INSUFFICIENT_CREDENTIALS;
  if (r >= 0)
    r = gnutls_credentials_set (*session, GNUTLS_CRD_CERTIFICATE, creds);
  if (r < 0)
    {
      g_set_error (error, PB_CONN_ERROR_DOMAIN, PB_CONN_ERROR_TLS, "cannot start a TLS session: %s",
                   gnutls_strerror (r));
      if (*session != NULL)
        gnutls_deinit (*session);
      *session = NULL;
      return FALSE;
    }
  if (server)
    gnutls_certificate_server_set_request (*session, GNUTLS_CERT_IGNORE);
  gnutls_transport_set_int (*session, fd);
  return TRUE;
}
