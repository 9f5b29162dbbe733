/* SPDX-License-Identifier: MIT */
/* The structured-log writer: the journal when stderr is connected to it, else one line on stderr. */
#include "config.h"
#include "core-private.h"

#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static gboolean log_verbose;
static gboolean log_to_journal;
static gboolean log_to_syslog;

static const char *
level_word (GLogLevelFlags level)
{
  if (level & G_LOG_LEVEL_ERROR)
    return "error";
  if (level & G_LOG_LEVEL_CRITICAL)
    return "critical";
  if (level & G_LOG_LEVEL_WARNING)
    return "warning";
  if (level & G_LOG_LEVEL_MESSAGE)
    return "notice";
  if (level & G_LOG_LEVEL_INFO)
    return "info";
  return "debug";
}

static GLogWriterOutput
pb_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer user_data)
{
  const char *domain = NULL;
  const char *message = NULL;
  g_autoptr (GDateTime) now = NULL;
  g_autofree char *stamp = NULL;

  if ((level & G_LOG_LEVEL_DEBUG) && !log_verbose)
    {
      /* G_MESSAGES_DEBUG still works for one domain at a time. */
      for (gsize i = 0; i < n_fields; i++)
        if (strcmp (fields[i].key, "GLIB_DOMAIN") == 0)
          domain = fields[i].value;
      if (g_log_writer_default_would_drop (level, domain))
        return G_LOG_WRITER_HANDLED;
    }

  if (log_to_journal && g_log_writer_journald (level, fields, n_fields, user_data) == G_LOG_WRITER_HANDLED)
    return G_LOG_WRITER_HANDLED;

  for (gsize i = 0; i < n_fields; i++)
    {
      if (strcmp (fields[i].key, "GLIB_DOMAIN") == 0)
        domain = fields[i].value;
      else if (strcmp (fields[i].key, "MESSAGE") == 0)
        message = fields[i].value;
    }
  if (log_to_syslog)
    {
      syslog (LOG_MAIL | (int) g_ascii_strtoll (pb_log_priority (level), NULL, 10), "%s: %s",
              domain != NULL ? domain : "pillarbox", message != NULL ? message : "");
      return G_LOG_WRITER_HANDLED;
    }
  now = g_date_time_new_now_utc ();
  stamp = g_date_time_format (now, "%Y-%m-%dT%H:%M:%S.%fZ");
  /* %f gives microseconds; milliseconds are enough for a log. */
  if (stamp != NULL && strlen (stamp) > 23)
    {
      stamp[23] = 'Z';
      stamp[24] = '\0';
    }
  fprintf (stderr, "%s pillarboxd[%d]: %s: %s: %s\n", stamp != NULL ? stamp : "", (int) getpid (),
           domain != NULL ? domain : "pillarbox", level_word (level), message != NULL ? message : "");
  fflush (stderr);
  return G_LOG_WRITER_HANDLED;
}

void
pb_log_init (gboolean verbose)
{
  log_verbose = verbose;
  log_to_journal = g_log_writer_is_journald (fileno (stderr));
  g_log_set_writer_func (pb_log_writer, NULL, NULL);
}

void
pb_log_detach (void)
{
  /* stderr is about to become /dev/null: the journal if it runs, else syslog. */
  if (g_file_test ("/run/systemd/journal/socket", G_FILE_TEST_EXISTS))
    log_to_journal = TRUE;
  else
    {
      openlog ("pillarboxd", LOG_PID | LOG_NDELAY, LOG_MAIL);
      log_to_syslog = TRUE;
    }
}
