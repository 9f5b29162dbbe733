/* SPDX-License-Identifier: MIT */
/* Password hashing and verification (yescrypt via libxcrypt) on worker threads, in constant time. */
#include "config.h"
#include "core-private.h"

#include <crypt.h>
#include <string.h>

/* Hashing is slow on purpose (tens of milliseconds): it runs on this pool,
 * never on the loop. Two threads: enough for a small server's logins, and
 * a flood of them queues instead of eating every core. */
#define AUTH_THREADS 2

typedef enum { JOB_VERIFY, JOB_HASH } JobKind;

typedef struct {
  JobKind kind;
  PbGeneration *gen;          /* VERIFY: a reference */
  char *user;                 /* as given */
  char *canonical;            /* the user's name in the directory, once known */
  char *password;             /* wiped before being freed */
  char *protocol;
  char *hash;                 /* stored hash, or NULL for an unknown user */
  char *protocols;
  PbAuthFunc done;
  PbHashFunc hash_done;
  gpointer user_data;
  PbAuthResult result;
  const char *reason;
  char *new_hash;             /* HASH: the result */
  char *error;
} AuthJob;

static GThreadPool *auth_pool;
static GMutex dummy_lock;
static char *dummy_hash;      /* hashed on first use, so an unknown user costs a real hash */

static void
wipe_free (char *s)
{
  if (s == NULL)
    return;
  explicit_bzero (s, strlen (s));
  g_free (s);
}

static void
auth_job_free (AuthJob *job)
{
  wipe_free (job->password);
  g_free (job->user);
  g_free (job->canonical);
  g_free (job->protocol);
  g_free (job->hash);
  g_free (job->protocols);
  g_free (job->new_hash);
  g_free (job->error);
  if (job->gen != NULL)
    pb_generation_unref (job->gen);
  g_free (job);
}

static gboolean
auth_deliver (gpointer data)
{
  AuthJob *job = data;

  if (job->kind == JOB_HASH)
    job->hash_done (job->new_hash, job->error, job->user_data);
  else
    job->done (job->result, job->result == PB_AUTH_OK ? job->canonical : NULL, job->reason, job->user_data);
  auth_job_free (job);
  return G_SOURCE_REMOVE;
}

/* Compares without an early exit, so the time taken says nothing about where they differ. */
static gboolean
equal_in_constant_time (const char *a, const char *b)
{
  gsize la = strlen (a), lb = strlen (b);
  guchar diff = la != lb;

  for (gsize i = 0; i < la; i++)
    diff |= (guchar) a[i] ^ (guchar) b[i % (lb > 0 ? lb : 1)];
  return diff == 0;
}

static char *
hash_new (const char *password, char **error)
{
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  struct crypt_data *data = g_new0 (struct crypt_data, 1);
  char *out = NULL;

  /* "$y$": yescrypt with libxcrypt's default cost. */
  if (crypt_gensalt_rn ("$y$", 0, NULL, 0, salt, sizeof salt) == NULL || salt[0] == '*')
    *error = g_strdup ("cannot make a yescrypt salt (libxcrypt without yescrypt?)");
  else if (crypt_rn (password, salt, data, sizeof *data) == NULL || data->output[0] == '*')
    *error = g_strdup ("yescrypt hashing failed");
  else
    out = g_strdup (data->output);
  explicit_bzero (data, sizeof *data);
  g_free (data);
  return out;
}

static const char *
dummy_hash_get (void)
{
  g_mutex_lock (&dummy_lock);
  if (dummy_hash == NULL)
    {
      char *error = NULL;
      dummy_hash = hash_new ("pillarbox-no-such-user", &error);
      g_free (error);
    }
  g_mutex_unlock (&dummy_lock);
  return dummy_hash;
}

static void
auth_work (gpointer data, gpointer pool_data)
{
  AuthJob *job = data;

  if (job->kind == JOB_HASH)
    job->new_hash = hash_new (job->password, &job->error);
  else
    {
      /* An unknown user costs one full hash too: no timing difference. */
      const char *stored = job->hash != NULL ? job->hash : dummy_hash_get ();
      struct crypt_data *cd = g_new0 (struct crypt_data, 1);
      gboolean match = FALSE;

      if (stored != NULL && crypt_rn (job->password, stored, cd, sizeof *cd) != NULL && cd->output[0] != '*')
        match = equal_in_constant_time (cd->output, stored);
      explicit_bzero (cd, sizeof *cd);
      g_free (cd);

      g_auto (GStrv) permitted = g_strsplit (job->protocols != NULL ? job->protocols : "", ",", -1);

      if (job->hash == NULL)
        job->reason = job->reason != NULL ? job->reason : "unknown user";
      else if (!match)
        job->reason = "wrong password";
      else if (job->protocol != NULL && !g_strv_contains ((const char *const *) permitted, job->protocol))
        job->reason = "protocol not permitted for this user";
      else
        job->result = PB_AUTH_OK;
    }
  pb_idle_add_full (G_PRIORITY_DEFAULT, auth_deliver, job, NULL);
}

static void
auth_prepare_work (gpointer data, gpointer pool_data)
{
  dummy_hash_get ();
}

static void
auth_submit (AuthJob *job)
{
  if (auth_pool == NULL)
    pb_auth_prepare ();
  g_thread_pool_push (auth_pool, job, NULL);
}

void
pb_auth_prepare (void)
{
  GThreadPool *first;

  if (auth_pool != NULL)
    return;
  /* The dummy hash for unknown users is made now, before any client asks,
   * so not even the first unknown user takes longer than a wrong password. */
  first = g_thread_pool_new (auth_prepare_work, NULL, 1, FALSE, NULL);
  g_thread_pool_push (first, GINT_TO_POINTER (1), NULL);
  g_thread_pool_free (first, FALSE, FALSE);
  auth_pool = g_thread_pool_new (auth_work, NULL, AUTH_THREADS, FALSE, NULL);
}

static void
auth_user_got (GVariant *result, const GError *error, gpointer user_data)
{
  AuthJob *job = user_data;

  if (error != NULL && !g_error_matches (error, PB_STORE_ERROR_DOMAIN, PB_STORE_ERROR_NOT_FOUND))
    {
      job->result = PB_AUTH_TEMPFAIL;
      job->reason = "directory unavailable";
      g_warning ("authentication of %s: %s", job->user, error->message);
      pb_idle_add_full (G_PRIORITY_DEFAULT, auth_deliver, job, NULL);
      return;
    }
  if (result != NULL && g_variant_is_of_type (result, G_VARIANT_TYPE ("(sssx)")))
    {
      g_free (job->canonical);
      g_variant_get (result, "(sssx)", &job->canonical, &job->hash, &job->protocols, NULL);
    }
  auth_submit (job);
}

static void
auth_lookup_done (GVariant *result, const GError *error, gpointer user_data)
{
  AuthJob *job = user_data;
  const char *kind = "";
  const char *name = NULL;

  if (error != NULL)
    {
      auth_user_got (NULL, error, job);
      return;
    }
  g_variant_get (result, "(b&s&s^a&s)", NULL, &kind, &name, NULL);
  if (strcmp (kind, "user") != 0)
    {
      auth_submit (job);  /* unknown: still costs a hash */
      return;
    }
  job->canonical = g_strdup (name);
  pb_store_request_gen (job->gen, "user.get", g_variant_new ("(s)", name), auth_user_got, job);
}

void
pb_auth_verify_gen (PbGeneration *gen, const char *user, const char *password, const char *protocol,
                    PbAuthFunc done, gpointer user_data)
{
  AuthJob *job = g_new0 (AuthJob, 1);
  const char *problem = pb_auth_name_problem (user);

  job->kind = JOB_VERIFY;
  job->gen = pb_generation_ref (gen);
  job->user = g_ascii_strdown (user, -1);
  job->password = g_strdup (password);
  job->protocol = g_strdup (protocol);
  job->done = done;
  job->user_data = user_data;
  job->result = PB_AUTH_FAILED;
  if (problem != NULL || *password == '\0')
    {
      /* Not a name the directory would look up (it would refuse it as an
       * invalid argument: a temporary failure nobody counts). A failed
       * login, after the hash an unknown user costs. */
      job->reason = problem != NULL ? problem : "empty password";
      auth_submit (job);
      return;
    }
  /* "bob@example.org" may name user "bob" in a shared domain: ask the directory. */
  if (strchr (job->user, '@') != NULL)
    pb_store_request_gen (gen, "directory.lookup", g_variant_new ("(s)", job->user), auth_lookup_done, job);
  else
    pb_store_request_gen (gen, "user.get", g_variant_new ("(s)", job->user), auth_user_got, job);
}

void
pb_auth_verify (PbModule *module, const char *user, const char *password, const char *protocol,
                PbAuthFunc done, gpointer user_data)
{
  g_return_if_fail (module != NULL && user != NULL && password != NULL && done != NULL);
  pb_auth_verify_gen (module->gen, user, password, protocol, done, user_data);
}

void
pb_password_hash (const char *password, PbHashFunc done, gpointer user_data)
{
  AuthJob *job = g_new0 (AuthJob, 1);

  job->kind = JOB_HASH;
  job->password = g_strdup (password);
  job->hash_done = done;
  job->user_data = user_data;
  auth_submit (job);
}
