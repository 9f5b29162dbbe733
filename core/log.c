/* SPDX-License-Identifier: MIT */
/* The structured-log writer (journal, syslog or stderr), which escapes every line; per-service log files. */
#include "config.h"
#include "core-private.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
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

static char *
log_timestamp (void)
{
  g_autoptr (GDateTime) now = g_date_time_new_now_utc ();
  char *stamp = g_date_time_format (now, "%Y-%m-%dT%H:%M:%S.%fZ");

  /* %f gives microseconds; milliseconds are enough for a log. */
  if (stamp != NULL && strlen (stamp) > 23)
    {
      stamp[23] = 'Z';
      stamp[24] = '\0';
    }
  return stamp != NULL ? stamp : g_strdup ("");
}

static const char *
field_value (const GLogField *fields, gsize n_fields, const char *key)
{
  for (gsize i = 0; i < n_fields; i++)
    if (strcmp (fields[i].key, key) == 0 && fields[i].length < 0)
      return fields[i].value;
  return NULL;
}

/* ---- escaping ----
 *
 * Lines are escaped at the sink, whoever logged them (pb_log_session, a
 * module's g_message, GLib itself): a user name, a HELO argument or a
 * remote reply inside a message can neither start a record of its own nor
 * put a terminal escape, an invalid UTF-8 sequence or a bidirectional
 * override in front of whoever reads the log. The form is Postfix's idea
 * made lossless: each offending byte becomes \xHH. A backslash is left as
 * it is, so escaping twice changes nothing; the price is that a peer that
 * sends the four characters "\x0a" looks like one that sent a newline,
 * which forges nothing. See docs/design-decisions.md, "Log lines are
 * escaped at the sink". */

/* Continuation lines of the daemon's own multi-line reports. */
#define LOG_CONTINUATION "\n    "

static gboolean
is_escaped_char (gunichar c)
{
  return c < 0x20 || (c >= 0x7f && c <= 0x9f)          /* C0, DEL, C1 */
         || c == 0x2028 || c == 0x2029                   /* line and paragraph separators */
         || (c >= 0x202a && c <= 0x202e)                 /* bidirectional embeddings and overrides */
         || (c >= 0x2066 && c <= 0x2069);                /* bidirectional isolates */
}

static void
append_escaped_bytes (GString *out, const char *p, gsize n)
{
  for (gsize i = 0; i < n; i++)
    g_string_append_printf (out, "\\x%02x", (guchar) p[i]);
}

char *
pb_log_escape (const char *text, gssize len, const char *newline)
{
  const char *p, *end;
  GString *out;

  if (text == NULL)
    return g_strdup ("");
  end = text + (len < 0 ? strlen (text) : (gsize) len);
  out = g_string_sized_new ((gsize) (end - text) + 1);
  for (p = text; p < end;)
    {
      guchar c = (guchar) *p;
      gunichar u;
      gsize n;

      if (c >= 0x20 && c < 0x7f)
        {
          g_string_append_c (out, (char) c);
          p++;
          continue;
        }
      if (c == '\n' && newline != NULL)
        {
          g_string_append (out, newline);
          p++;
          continue;
        }
      if (c < 0x80)
        {
          append_escaped_bytes (out, p, 1);
          p++;
          continue;
        }
      /* Rejects overlong forms, surrogates, values above U+10FFFF and a
       * sequence cut off by END: each of their bytes is escaped alone. */
      u = g_utf8_get_char_validated (p, end - p);
      if (u == (gunichar) -1 || u == (gunichar) -2)
        {
          append_escaped_bytes (out, p, 1);
          p++;
          continue;
        }
      n = (gsize) g_utf8_skip[c];
      if (is_escaped_char (u))
        append_escaped_bytes (out, p, n);
      else
        g_string_append_len (out, p, (gssize) n);
      p += n;
    }
  return g_string_free (out, FALSE);
}

/* The text of MESSAGE as every sink writes it. A line about a session or a
 * message (PB_SESSION or PB_QUEUE_ID: pb_log_session, ids) is one record
 * by contract and carries the peer's data, so a newline in it is escaped
 * too. The daemon's own lines may be multi-line reports: a newline there
 * starts an indented continuation line, which no reader takes for a
 * record of its own (records start with a time stamp). */
static char *
log_text (const GLogField *fields, gsize n_fields)
{
  gboolean one_record = field_value (fields, n_fields, "PB_SESSION") != NULL
                        || field_value (fields, n_fields, "PB_QUEUE_ID") != NULL;
  const char *message = NULL;
  gsize len = 0;

  /* GLib allows a MESSAGE with a length (and NULs in it): take it too. */
  for (gsize i = 0; i < n_fields && message == NULL; i++)
    if (strcmp (fields[i].key, "MESSAGE") == 0 && fields[i].value != NULL)
      {
        message = fields[i].value;
        len = fields[i].length < 0 ? strlen (message) : (gsize) fields[i].length;
      }
  if (!one_record)
    while (len > 0 && message[len - 1] == '\n')
      len--;
  return pb_log_escape (message, (gssize) len, one_record ? NULL : LOG_CONTINUATION);
}

/* ---- per-service files ----
 *
 * Any thread that logs formats its line and appends it to a bounded queue;
 * one writer thread owns the files and does every open() and write(), so a
 * slow or stuck disk costs the loop nothing. A full queue drops lines (and
 * counts them) rather than wait. Reopening is a marker in the same queue:
 * lines logged before `log-reopen` go to the old file, later ones to the new. */

typedef struct {
  char *service;              /* NULL: a marker that closes every file */
  char *text;                 /* a whole line; for a marker, the new directory or NULL to keep it */
} LogLine;

static struct {
  GMutex lock;
  GCond cond;                 /* the writer waits for lines; shutdown waits for the writer */
  gint enabled;               /* atomic: any service configured (the fast path reads only this) */
  char **services;            /* routed services */
  char **connection_domains;  /* log domains of the modules that send or collect */
  char *dir;                  /* for log-reopen's reply */
  GQueue queue;               /* LogLine * */
  gsize queued_bytes;
  gsize limit;
  GThread *thread;
  gboolean stopping;
  gboolean stopped;
  guint64 dropped;            /* since start */
  guint64 dropped_unreported; /* for want of queue space, since the last report */
  gboolean drop_warned;
} files;

static void
log_line_free (LogLine *line)
{
  g_free (line->service);
  g_free (line->text);
  g_free (line);
}

typedef struct {
  int fd;
  gboolean failing;           /* warned about; quiet until it works again */
} OpenFile;

static void
open_file_free (gpointer p)
{
  OpenFile *f = p;
  if (f->fd >= 0)
    close (f->fd);
  g_free (f);
}

static gboolean
write_all (int fd, const char *data, gsize len, int *err)
{
  while (len > 0)
    {
      ssize_t n = write (fd, data, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        {
          *err = n < 0 ? errno : EIO;
          return FALSE;
        }
      data += n;
      len -= (gsize) n;
    }
  return TRUE;
}

/* Lines lost to a file that cannot be opened or written: counted, and
 * reported by the warning about the file rather than line by line. */
static void
writer_count_dropped (guint n)
{
  g_mutex_lock (&files.lock);
  files.dropped += n;
  g_mutex_unlock (&files.lock);
}

/* Writes one batch, grouped per service so each file gets one write(). */
static void
writer_flush (GHashTable *open_files, const char *dir, GHashTable *batch)
{
  GHashTableIter it;
  gpointer key, value;

  g_hash_table_iter_init (&it, batch);
  while (g_hash_table_iter_next (&it, &key, &value))
    {
      const char *service = key;
      GString *text = value;
      guint lines = 0;
      OpenFile *f = g_hash_table_lookup (open_files, service);
      int err = 0;

      for (gsize i = 0; i < text->len; i++)
        lines += text->str[i] == '\n';
      if (f == NULL)
        {
          g_autofree char *name = g_strconcat (service, ".log", NULL);
          g_autofree char *path = g_build_filename (dir, name, NULL);
          f = g_new0 (OpenFile, 1);
          f->fd = open (path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
          g_hash_table_insert (open_files, g_strdup (service), f);
          if (f->fd < 0)
            {
              f->failing = TRUE;
              g_warning ("service log %s: cannot open: %s (its lines are dropped until the next reopen)", path,
                         g_strerror (errno));
            }
        }
      if (f->fd < 0)
        {
          writer_count_dropped (lines);
          continue;
        }
      if (!write_all (f->fd, text->str, text->len, &err))
        {
          writer_count_dropped (lines);
          if (!f->failing)
            g_warning ("service log %s/%s.log: write failed: %s (lines are dropped while it fails)", dir, service,
                       g_strerror (err));
          f->failing = TRUE;
        }
      else if (f->failing)
        {
          f->failing = FALSE;
          g_message ("service log %s/%s.log: writing again", dir, service);
        }
    }
}

static void
string_free (gpointer s)
{
  g_string_free (s, TRUE);
}

static gpointer
writer_main (gpointer data)
{
  g_autoptr (GHashTable) open_files = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, open_file_free);
  g_autofree char *dir = NULL;

  g_mutex_lock (&files.lock);
  for (;;)
    {
      g_autoptr (GHashTable) batch = NULL;
      LogLine *line;

      if (g_queue_is_empty (&files.queue))
        {
          if (files.dropped_unreported > 0)
            {
              guint64 n = files.dropped_unreported;
              files.dropped_unreported = 0;
              files.drop_warned = FALSE;
              g_mutex_unlock (&files.lock);
              g_message ("service logs: caught up; %" G_GUINT64_FORMAT " line%s had to be dropped", n,
                         n == 1 ? "" : "s");
              g_mutex_lock (&files.lock);
              continue;
            }
          if (files.stopping)
            break;
          g_cond_wait (&files.cond, &files.lock);
          continue;
        }

      /* Take everything up to the next marker; write it without the lock. */
      batch = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, string_free);
      while ((line = g_queue_peek_head (&files.queue)) != NULL && line->service != NULL)
        {
          GString *text;
          g_queue_pop_head (&files.queue);
          files.queued_bytes -= strlen (line->text);
          text = g_hash_table_lookup (batch, line->service);
          if (text == NULL)
            g_hash_table_insert (batch, g_strdup (line->service), (text = g_string_new (NULL)));
          g_string_append (text, line->text);
          log_line_free (line);
        }
      if (line != NULL && g_hash_table_size (batch) == 0)
        {
          /* A marker at the head: every file closes, and the next line opens its file by name. */
          g_queue_pop_head (&files.queue);
          g_mutex_unlock (&files.lock);
          g_hash_table_remove_all (open_files);
          if (line->text != NULL)
            {
              g_free (dir);
              dir = g_strdup (line->text);
            }
          log_line_free (line);
          g_mutex_lock (&files.lock);
          continue;
        }
      g_mutex_unlock (&files.lock);
      if (dir != NULL)
        writer_flush (open_files, dir, batch);
      g_mutex_lock (&files.lock);
    }
  files.stopped = TRUE;
  g_cond_broadcast (&files.cond);
  g_mutex_unlock (&files.lock);
  return NULL;
}

/* Which service file a line belongs to, or NULL. Called with the lock held. */
static const char *
route_line (const GLogField *fields, gsize n_fields, const char *domain)
{
  const char *service = field_value (fields, n_fields, "PB_SERVICE");

  if (service == NULL
      && ((field_value (fields, n_fields, "PB_QUEUE_ID") != NULL && field_value (fields, n_fields, "PB_SESSION") == NULL)
          || (domain != NULL && files.connection_domains != NULL
              && g_strv_contains ((const char *const *) files.connection_domains, domain))))
    service = PB_LOG_CONNECTIONS;
  if (service != NULL && files.services != NULL && g_strv_contains ((const char *const *) files.services, service))
    return service;
  return NULL;
}

/* Queues the line (MESSAGE is escaped) for its service's file; TRUE when this drop is the one to warn about. */
static gboolean
files_enqueue (GLogLevelFlags level, const GLogField *fields, gsize n_fields, const char *domain,
               const char *message)
{
  const char *service;
  gboolean warn = FALSE;

  g_mutex_lock (&files.lock);
  service = route_line (fields, n_fields, domain);
  if (service != NULL && !files.stopping)
    {
      g_autofree char *stamp = log_timestamp ();
      char *text = g_strdup_printf ("%s %s %s: %s\n", stamp, level_word (level), domain != NULL ? domain : "pillarbox",
                                    message != NULL ? message : "");
      gsize len = strlen (text);

      if (files.queued_bytes + len > files.limit)
        {
          g_free (text);
          files.dropped++;
          files.dropped_unreported++;
          warn = !files.drop_warned;
          files.drop_warned = TRUE;
        }
      else
        {
          LogLine *line = g_new (LogLine, 1);
          line->service = g_strdup (service);
          line->text = text;
          files.queued_bytes += len;
          g_queue_push_tail (&files.queue, line);
          g_cond_signal (&files.cond);
        }
    }
  g_mutex_unlock (&files.lock);
  return warn;
}

static void
files_push_marker (const char *new_dir)
{
  LogLine *line = g_new0 (LogLine, 1);

  line->text = g_strdup (new_dir);
  g_queue_push_tail (&files.queue, line);
  g_cond_signal (&files.cond);
}

gboolean
pb_log_files_check (PbGeneration *gen, GError **error)
{
  g_autoptr (GPtrArray) known = g_ptr_array_new ();

  g_ptr_array_add (known, (gpointer) PB_LOG_CONNECTIONS);
  for (guint i = 0; i < gen->listeners->len; i++)
    {
      PbListener *l = g_ptr_array_index (gen->listeners, i);
      if (!g_ptr_array_find_with_equal_func (known, l->service, g_str_equal, NULL))
        g_ptr_array_add (known, l->service);
    }
  for (guint i = 0; gen->core->service_logs[i] != NULL; i++)
    if (!g_ptr_array_find_with_equal_func (known, gen->core->service_logs[i], g_str_equal, NULL))
      {
        g_autoptr (GString) names = g_string_new (NULL);
        for (guint k = 0; k < known->len; k++)
          g_string_append_printf (names, "%s%s", k > 0 ? ", " : "", (const char *) g_ptr_array_index (known, k));
        g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG,
                     "[core] service-logs: no listener of this configuration has the service '%s' (known: %s)",
                     gen->core->service_logs[i], names->str);
        return FALSE;
      }
  return TRUE;
}

char *
pb_log_files_dir (PbGeneration *gen)
{
  if (*gen->core->log_dir != '\0')
    return g_strdup (gen->core->log_dir);
  return g_build_filename (gen->state_dir, "log", NULL);
}

gboolean
pb_log_files_configure (PbGeneration *gen, GError **error)
{
  g_autofree char *dir = pb_log_files_dir (gen);
  gboolean on = gen->core->service_logs[0] != NULL;
  GPtrArray *domains;

  if (!pb_log_files_check (gen, error))
    return FALSE;
  if (on && g_mkdir_with_parents (dir, 0750) != 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot create log directory %s: %s", dir,
                   g_strerror (errno));
      return FALSE;
    }
  /* Senders and collectors log in their module's domain (the convention of
   * pb-log.h); their lines belong to the connections log. */
  domains = g_ptr_array_new ();
  for (guint i = 0; i < gen->transports->len; i++)
    g_ptr_array_add (domains, g_strconcat ("pillarbox-", ((PbTransport *) g_ptr_array_index (gen->transports, i))->module->name, NULL));
  for (guint i = 0; i < gen->collectors->len; i++)
    g_ptr_array_add (domains, g_strconcat ("pillarbox-", ((PbCollector *) g_ptr_array_index (gen->collectors, i))->module->name, NULL));
  g_ptr_array_add (domains, NULL);

  g_mutex_lock (&files.lock);
  g_strfreev (files.services);
  files.services = g_strdupv (gen->core->service_logs);
  g_strfreev (files.connection_domains);
  files.connection_domains = (char **) g_ptr_array_free (domains, FALSE);
  g_free (files.dir);
  files.dir = g_strdup (dir);
  files.limit = (gsize) gen->core->service_log_buffer;
  if (on || files.thread != NULL)
    files_push_marker (dir);
  if (on && files.thread == NULL)
    {
      files.stopping = FALSE;
      files.stopped = FALSE;
      files.thread = g_thread_new ("pb-log-files", writer_main, NULL);
    }
  g_atomic_int_set (&files.enabled, on);
  g_mutex_unlock (&files.lock);
  return TRUE;
}

void
pb_log_files_reopen (void)
{
  g_mutex_lock (&files.lock);
  if (files.thread != NULL && !files.stopping)
    files_push_marker (NULL);
  g_mutex_unlock (&files.lock);
}

guint64
pb_log_files_dropped (void)
{
  guint64 n;

  g_mutex_lock (&files.lock);
  n = files.dropped;
  g_mutex_unlock (&files.lock);
  return n;
}

void
pb_log_files_shutdown (guint timeout_ms)
{
  gint64 deadline = g_get_monotonic_time () + (gint64) timeout_ms * 1000;
  gboolean stopped = TRUE;
  guint left;
  GThread *thread;

  g_atomic_int_set (&files.enabled, FALSE);
  g_mutex_lock (&files.lock);
  thread = files.thread;
  if (thread != NULL)
    {
      files.stopping = TRUE;
      g_cond_broadcast (&files.cond);
      while (!files.stopped && stopped)
        stopped = g_cond_wait_until (&files.cond, &files.lock, deadline) || files.stopped;
    }
  left = g_queue_get_length (&files.queue);
  g_mutex_unlock (&files.lock);
  if (thread == NULL)
    return;
  if (!stopped)
    {
      /* Joining would hang the exit on the disk that is stuck. */
      g_warning ("service logs: the disk did not take the last %u lines within %u ms; exiting without them",
                 left, timeout_ms);
      return;
    }
  g_thread_join (thread);
  g_mutex_lock (&files.lock);
  files.thread = NULL;
  g_queue_clear_full (&files.queue, (GDestroyNotify) log_line_free);
  files.queued_bytes = 0;
  g_clear_pointer (&files.services, g_strfreev);
  g_clear_pointer (&files.connection_domains, g_strfreev);
  g_clear_pointer (&files.dir, g_free);
  g_mutex_unlock (&files.lock);
}

static void
cmd_log_reopen (PbControlRequest *req, gpointer user_data)
{
  GVariantBuilder b;
  g_autofree char *dir = NULL;
  g_auto (GStrv) services = NULL;
  guint64 dropped;

  g_mutex_lock (&files.lock);
  dir = g_strdup (files.dir);
  services = files.services != NULL && g_atomic_int_get (&files.enabled) ? g_strdupv (files.services) : NULL;
  dropped = files.dropped;
  g_mutex_unlock (&files.lock);
  if (services == NULL)
    {
      pb_control_request_fail (req, "no service logs are configured (core.service-logs is empty)");
      return;
    }
  pb_log_files_reopen ();
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "dir", g_variant_new_string (dir));
  g_variant_builder_add (&b, "{sv}", "services", g_variant_new_strv ((const char *const *) services, -1));
  g_variant_builder_add (&b, "{sv}", "dropped", g_variant_new_uint64 (dropped));
  {
    g_autofree char *list = g_strjoinv (", ", services);
    g_autofree char *text = g_strdup_printf ("reopening the service logs in %s (%s); %" G_GUINT64_FORMAT
                                             " line%s dropped since start", dir, list, dropped,
                                             dropped == 1 ? "" : "s");
    pb_control_request_reply (req, g_variant_builder_end (&b), text);
  }
}

void
pb_log_files_register (PbGeneration *gen)
{
  static const PbControlCommandSpec spec = {
    sizeof (PbControlCommandSpec), "log-reopen",
    "Close and reopen the per-service log files (after logrotate has renamed them)", "log-reopen",
    cmd_log_reopen, NULL, FALSE, NULL
  };

  pb_generation_add_builtin_command (gen, &spec);
}

/* ---- the writer GLib calls ---- */

/* MESSAGE is the escaped text (log_text): it replaces the field's own in the journal too. */
static void
write_main (GLogLevelFlags level, const GLogField *fields, gsize n_fields, const char *domain, const char *message,
            gpointer user_data)
{
  g_autofree char *stamp = NULL;

  if (log_to_journal)
    {
      g_autofree GLogField *safe = g_new (GLogField, n_fields);
      GLogWriterOutput out;

      for (gsize i = 0; i < n_fields; i++)
        {
          safe[i] = fields[i];
          if (strcmp (fields[i].key, "MESSAGE") == 0)
            safe[i] = (GLogField) { "MESSAGE", message, -1 };
        }
      out = g_log_writer_journald (level, safe, n_fields, user_data);
      if (out == G_LOG_WRITER_HANDLED)
        return;
    }
  if (log_to_syslog)
    {
      syslog (LOG_MAIL | (int) g_ascii_strtoll (pb_log_priority (level), NULL, 10), "%s: %s",
              domain != NULL ? domain : "pillarbox", message != NULL ? message : "");
      return;
    }
  stamp = log_timestamp ();
  fprintf (stderr, "%s pillarboxd[%d]: %s: %s: %s\n", stamp, (int) getpid (),
           domain != NULL ? domain : "pillarbox", level_word (level), message != NULL ? message : "");
  fflush (stderr);
}

static GLogWriterOutput
pb_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer user_data)
{
  const char *domain = field_value (fields, n_fields, "GLIB_DOMAIN");
  g_autofree char *message = NULL;
  gboolean warn_drop = FALSE;

  /* G_MESSAGES_DEBUG still works for one domain at a time. */
  if ((level & G_LOG_LEVEL_DEBUG) && !log_verbose && g_log_writer_default_would_drop (level, domain))
    return G_LOG_WRITER_HANDLED;

  /* Escaped once, here, for every sink below. */
  message = log_text (fields, n_fields);
  if (g_atomic_int_get (&files.enabled))
    warn_drop = files_enqueue (level, fields, n_fields, domain, message);
  write_main (level, fields, n_fields, domain, message, user_data);
  if (warn_drop)
    {
      /* Written directly: GLib would not route a message logged from inside its writer back to us. */
      const GLogField warning[] = {
        { "PRIORITY", pb_log_priority (G_LOG_LEVEL_WARNING), -1 },
        { "GLIB_DOMAIN", "pillarbox", -1 },
        { "MESSAGE", "service logs: the log files are not keeping up (slow or stuck disk); "
                     "dropping lines until they do", -1 },
      };
      write_main (G_LOG_LEVEL_WARNING, warning, G_N_ELEMENTS (warning), "pillarbox", warning[2].value, user_data);
    }
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
