/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the core: interned strings and log priorities. */
#include "config.h"
#include "core-private.h"

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
