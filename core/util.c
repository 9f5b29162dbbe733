/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the core: interned strings, log priorities, the shape of a login name. */
#include "config.h"
#include "core-private.h"

#include <string.h>

const char *
pb_intern (const char *s)
{
  return g_intern_string (s);
}

const char *
pb_log_priority (GLogLevelFlags level)
{
  /* syslog(3) priorities, as journald expects them in PRIORITY. */
  if (level & G_LOG_LEVEL_ERROR)
    return "3";
  if (level & G_LOG_LEVEL_CRITICAL)
    return "4";
  if (level & G_LOG_LEVEL_WARNING)
    return "4";
  if (level & G_LOG_LEVEL_MESSAGE)
    return "5";
  if (level & G_LOG_LEVEL_INFO)
    return "6";
  return "7";
}

/* Every login (SMTP AUTH, POP3 USER and AUTH, the status monitor's LOGIN)
 * comes through pb_auth_verify_gen, which asks this before the directory:
 * the directory refuses such a name as an invalid argument, which would be
 * a temporary failure, never counted and repeatable without end. */
const char *
pb_auth_name_problem (const char *name)
{
  gsize len = strlen (name);

  if (len == 0)
    return "empty user name";
  if (len > PB_AUTH_NAME_MAX)
    return "user name longer than " G_STRINGIFY (PB_AUTH_NAME_MAX) " octets";
  if (!g_utf8_validate_len (name, len, NULL))
    return "user name not valid UTF-8";
  for (const char *p = name; *p != '\0'; p = g_utf8_next_char (p))
    {
      gunichar c = g_utf8_get_char (p);
      GUnicodeType type = g_unichar_type (c);

      /* Cc is C0, DEL and C1; the others are every kind of Unicode blank and
       * the invisible format characters (bidirectional controls, zero-width
       * joiners) that make a name look like another in a log. */
      if (c == ' ' || type == G_UNICODE_CONTROL || type == G_UNICODE_FORMAT || type == G_UNICODE_SPACE_SEPARATOR
          || type == G_UNICODE_LINE_SEPARATOR || type == G_UNICODE_PARAGRAPH_SEPARATOR)
        return "user name with a blank or a control character";
    }
  return NULL;
}
