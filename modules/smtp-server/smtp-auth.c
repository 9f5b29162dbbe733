/* SPDX-License-Identifier: MIT */
/* AUTH PLAIN and LOGIN (RFC 4954, RFC 4616): the exchange, pb_auth_verify, the auth stage and events. */
#include "config.h"
#include "smtp-private.h"

#include <string.h>

/* Nothing here logs a password or an AUTH payload: only user names and outcomes. */

typedef struct {
  SmtpSession *s;
  char *user;
  const char *mechanism;
  PbAuthResult result;
  char *canonical;
} AuthCall;

static void
auth_call_free (AuthCall *call)
{
  g_free (call->user);
  g_free (call->canonical);
  g_free (call);
}

static void
wipe_free (guint8 *data, gsize len)
{
  if (data == NULL)
    return;
  explicit_bzero (data, len);
  g_free (data);
}

static void
auth_filtered (SmtpSession *s, const PbVerdict *verdict, PbPolicyRequest *req, gpointer data)
{
  AuthCall *call = data;

  if (s->closed)
    goto out;
  if (verdict->kind == PB_VERDICT_DISCONNECT)
    {
      if (call->result != PB_AUTH_TEMPFAIL)
        pb_session_report_event (s->session, PB_EVENT_AUTH_FAILED, call->user);
      smtp_verdict_proceeds (s, verdict);
      goto out;
    }
  switch (call->result)
    {
    case PB_AUTH_OK:
      if (!smtp_verdict_proceeds (s, verdict))
        {
          pb_session_info (s->session, "AUTH %s for %s refused by policy", call->mechanism, call->user);
          pb_session_report_event (s->session, PB_EVENT_AUTH_FAILED, call->user);
          break;
        }
      s->auth_user = g_steal_pointer (&call->canonical);
      pb_session_set_user (s->session, s->auth_user);
      pb_session_info (s->session, "AUTH %s: authenticated as %s", call->mechanism, s->auth_user);
      pb_session_report_event (s->session, PB_EVENT_AUTH_SUCCEEDED, s->auth_user);
      smtp_reply (s, 235, "2.7.0", "Authentication successful");
      break;
    case PB_AUTH_TEMPFAIL:
      smtp_reply (s, 454, "4.7.0", "Temporary authentication failure");
      break;
    case PB_AUTH_FAILED:
    default:
      pb_session_report_event (s->session, PB_EVENT_AUTH_FAILED, call->user);
      smtp_reply (s, 535, "5.7.8", "Authentication credentials invalid");
      break;
    }
out:
  auth_call_free (call);
}

static void
auth_verified (PbAuthResult result, const char *user, const char *reason, gpointer user_data)
{
  AuthCall *call = user_data;
  SmtpSession *s = call->s;
  PbPolicyRequest *req;

  call->s = NULL;
  s->busy = FALSE;
  if (s->closed)
    {
      auth_call_free (call);
      smtp_session_unref (s);
      return;
    }
  call->result = result;
  call->canonical = g_strdup (user);
  if (result != PB_AUTH_OK)
    pb_session_info (s->session, "AUTH %s for %s failed: %s", call->mechanism, call->user,
                     reason != NULL ? reason : "?");
  req = smtp_filter_new (s, PB_STAGE_AUTH);
  if (req != NULL)
    {
      pb_policy_request_set_field (req, "auth-user", call->user);
      pb_policy_request_set_field (req, "auth-result", result == PB_AUTH_OK ? "success" : "failure");
      pb_policy_request_set_field (req, "auth-mechanism", call->mechanism);
    }
  smtp_filter (s, req, auth_filtered, call);
  smtp_session_resume (s);
  smtp_session_unref (s);
}

static void
auth_verify (SmtpSession *s, const char *mechanism, const char *user, const char *password)
{
  AuthCall *call = g_new0 (AuthCall, 1);

  smtp_session_enter_state (s, SMTP_STATE_HELO);
  call->s = smtp_session_ref (s);
  call->user = g_strdup (user);
  call->mechanism = mechanism;
  s->busy = TRUE;
  pb_auth_verify (s->smtp->module, user, password, "smtp", auth_verified, call);
}

static void
auth_failed_syntax (SmtpSession *s, const char *text)
{
  smtp_session_enter_state (s, SMTP_STATE_HELO);
  pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, text);
  smtp_reply (s, 501, "5.5.2", "%s", text);
}

/* RFC 4616: one response, "authzid NUL authcid NUL passwd". */
static void
auth_plain_response (SmtpSession *s, const char *b64)
{
  gsize len = 0;
  guint8 *data = smtp_base64_decode (b64, &len);
  const char *authzid, *authcid, *passwd;

  if (data == NULL)
    {
      auth_failed_syntax (s, "Invalid base64 data");
      return;
    }
  if (!smtp_auth_plain_split (data, len, &authzid, &authcid, &passwd))
    {
      auth_failed_syntax (s, "Invalid PLAIN response");
      wipe_free (data, len);
      return;
    }
  /* Acting for somebody else is not supported: authzid empty or the same. */
  if (*authzid != '\0' && strcmp (authzid, authcid) != 0)
    {
      smtp_session_enter_state (s, SMTP_STATE_HELO);
      pb_session_report_event (s->session, PB_EVENT_AUTH_FAILED, authcid);
      smtp_reply (s, 535, "5.7.8", "Authentication credentials invalid");
      wipe_free (data, len);
      return;
    }
  auth_verify (s, "PLAIN", authcid, passwd);
  wipe_free (data, len);
}

void
smtp_auth_line (SmtpSession *s, char *line)
{
  gsize len = 0;
  guint8 *data;

  /* RFC 4954 §4: "*" cancels the exchange. */
  if (strcmp (line, "*") == 0)
    {
      smtp_session_enter_state (s, SMTP_STATE_HELO);
      g_clear_pointer (&s->auth_login_user, g_free);
      smtp_reply (s, 501, "5.7.0", "Authentication cancelled");
      return;
    }
  switch ((SmtpState) s->state)
    {
    case SMTP_STATE_AUTH_PLAIN:
      auth_plain_response (s, line);
      return;
    case SMTP_STATE_AUTH_USERNAME:
      data = smtp_base64_decode (line, &len);
      if (data == NULL || len == 0 || memchr (data, '\0', len) != NULL)
        {
          wipe_free (data, len);
          auth_failed_syntax (s, "Invalid base64 data");
          return;
        }
      s->auth_login_user = (char *) data;
      smtp_session_enter_state (s, SMTP_STATE_AUTH_PASSWORD);
      pb_conn_printf (s->conn, "334 UGFzc3dvcmQ6\r\n");   /* "Password:" */
      return;
    case SMTP_STATE_AUTH_PASSWORD:
      {
        g_autofree char *user = g_steal_pointer (&s->auth_login_user);
        data = smtp_base64_decode (line, &len);
        if (data == NULL || memchr (data, '\0', len) != NULL)
          {
            wipe_free (data, len);
            auth_failed_syntax (s, "Invalid base64 data");
            return;
          }
        auth_verify (s, "LOGIN", user, (const char *) data);
        wipe_free (data, len);
        return;
      }
    default:
      return;
    }
}

void
smtp_cmd_auth (SmtpSession *s, char *args)
{
  char *mechanism = args;
  char *initial = strchr (args, ' ');

  if (initial != NULL)
    {
      *initial++ = '\0';
      while (*initial == ' ')
        initial++;
    }
  /* Check (RFC 4954 §4). */
  if (*mechanism == '\0')
    {
      pb_session_report_event (s->session, PB_EVENT_PROTOCOL_ERROR, "AUTH without mechanism");
      smtp_reply (s, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
      return;
    }
  if (s->auth_user != NULL)
    {
      smtp_reply (s, 503, "5.5.1", "Already authenticated");
      return;
    }
  if (s->txn != NULL)
    {
      smtp_reply (s, 503, "5.5.1", "AUTH not allowed during a mail transaction");
      return;
    }
  if (g_ascii_strcasecmp (mechanism, "PLAIN") != 0 && g_ascii_strcasecmp (mechanism, "LOGIN") != 0)
    {
      smtp_reply (s, 504, "5.5.4", "Unrecognized authentication type");
      return;
    }
  if (!smtp_session_use_tls_or_plaintext_auth (s))
    {
      smtp_reply (s, 538, "5.7.11", "Encryption required for requested authentication mechanism");
      return;
    }

  if (g_ascii_strcasecmp (mechanism, "PLAIN") == 0)
    {
      if (initial == NULL || *initial == '\0')
        {
          smtp_session_enter_state (s, SMTP_STATE_AUTH_PLAIN);
          pb_conn_printf (s->conn, "334 \r\n");
          return;
        }
      /* "=" is an empty initial response (RFC 4954 §4). */
      auth_plain_response (s, strcmp (initial, "=") == 0 ? "" : initial);
      return;
    }

  /* LOGIN: user name and password, each in answer to its prompt; an
   * initial response is the user name. */
  if (initial == NULL || *initial == '\0')
    {
      smtp_session_enter_state (s, SMTP_STATE_AUTH_USERNAME);
      pb_conn_printf (s->conn, "334 VXNlcm5hbWU6\r\n");   /* "Username:" */
      return;
    }
  smtp_session_enter_state (s, SMTP_STATE_AUTH_USERNAME);
  smtp_auth_line (s, initial);
}
