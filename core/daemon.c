/* SPDX-License-Identifier: MIT */
/* pillarboxd: options, start-up, privilege drop, background mode, reload and orderly shutdown. */
#include "config.h"
#include "core-private.h"
#include "settings-doc.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib-unix.h>

typedef struct {
  char *conf_dir;
  char *state_dir;
  char **overrides;
  gboolean foreground;
  gboolean check_config;
  gboolean verbose;
  gboolean version;
  gboolean print_settings;
  char *print_format;         /* --print-settings=FORMAT, NULL for text */
  char **print_modules;       /* the arguments after --print-settings */

  GMainLoop *loop;
  PbControlServer *control;
  gboolean shutting_down;
  gint64 shutdown_deadline;
  guint drain_source;
  char *pidfile;
  int pidfile_fd;
  int ready_fd;               /* background mode: the pipe to the waiting parent */
  int exit_status;
} Daemon;

static Daemon daemon_state;

/* ---- systemd readiness (sd_notify protocol, written out: no libsystemd needed) ---- */

static void
daemon_notify (const char *state)
{
  const char *path = g_getenv ("NOTIFY_SOCKET");
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  gsize len;
  int fd;

  if (path == NULL || (path[0] != '/' && path[0] != '@') || strlen (path) >= sizeof sa.sun_path)
    return;
  len = strlen (path);
  memcpy (sa.sun_path, path, len);
  if (sa.sun_path[0] == '@')
    sa.sun_path[0] = '\0';  /* abstract namespace */
  fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return;
  if (sendto (fd, state, strlen (state), MSG_NOSIGNAL, (struct sockaddr *) &sa,
              (socklen_t) (G_STRUCT_OFFSET (struct sockaddr_un, sun_path) + len)) < 0)
    g_debug ("sd_notify %s: %s", state, g_strerror (errno));
  close (fd);
}

/* ---- configuration ---- */

typedef struct {
  uid_t uid;
  gid_t gid;
  char *name;
} RunUser;

static gboolean resolve_run_user (const char *user, RunUser *ru, GError **error);

static void
print_diag (PbDiag *diag)
{
  for (guint i = 0; i < diag->lines->len; i++)
    g_printerr ("%s\n", (const char *) g_ptr_array_index (diag->lines, i));
}

static void
log_diag (PbDiag *diag)
{
  for (guint i = 0; i < diag->lines->len; i++)
    g_warning ("%s", (const char *) g_ptr_array_index (diag->lines, i));
}

static int
daemon_check_config (Daemon *d)
{
  PbDiag *diag = pb_diag_new ();
  PbGeneration *gen = pb_generation_build (d->conf_dir, d->state_dir, (const char *const *) d->overrides,
                                           TRUE, diag);
  int status = 0;

  if (gen != NULL)
    {
      g_autoptr (GError) error = NULL;
      RunUser ru = { 0 };
      if (!resolve_run_user (gen->core->user, &ru, &error))
        pb_diag_add (diag, NULL, 0, "%s", error->message);
      g_free (ru.name);
    }
  if (gen != NULL)
    {
      g_autoptr (GError) error = NULL;
      if (!pb_log_files_check (gen, &error))
        pb_diag_add (diag, NULL, 0, "%s", error->message);
    }
  if (gen != NULL && *gen->core->tls_certificate != '\0')
    {
      g_autoptr (GError) error = NULL;
      PbTlsCreds *creds = pb_tls_creds_load (gen->core->tls_certificate, gen->core->tls_key, &error);
      if (creds == NULL)
        pb_diag_add (diag, NULL, 0, "%s", error->message);
      else
        pb_tls_creds_unref (creds);
    }
  if (!pb_diag_is_empty (diag))
    {
      print_diag (diag);
      g_printerr ("pillarboxd: configuration in %s has %u error%s\n", d->conf_dir, diag->lines->len,
                  diag->lines->len == 1 ? "" : "s");
      status = 1;
    }
  else
    g_print ("%s: configuration OK (%u module%s, %u listener%s)\n", d->conf_dir, gen->modules->len,
             gen->modules->len == 1 ? "" : "s", gen->listeners->len, gen->listeners->len == 1 ? "" : "s");
  if (gen != NULL)
    pb_generation_unref (gen);
  pb_diag_free (diag);
  return status;
}

static gboolean
daemon_unref_later (gpointer gen)
{
  pb_generation_unref (gen);
  return G_SOURCE_REMOVE;
}

static gboolean
daemon_reload (char **errors)
{
  Daemon *d = &daemon_state;
  PbDiag *diag = pb_diag_new ();
  PbGeneration *current = pb_generation_get_current ();
  PbGeneration *gen, *old;
  g_autoptr (GError) error = NULL;

  if (d->shutting_down)
    {
      *errors = g_strdup ("the server is shutting down");
      pb_diag_free (diag);
      return FALSE;
    }
  daemon_notify ("RELOADING=1");
  g_message ("reloading the configuration from %s", d->conf_dir);
  gen = pb_generation_build (d->conf_dir, d->state_dir, (const char *const *) d->overrides, FALSE, diag);
  if (gen != NULL)
    pb_log_files_register (gen);
  if (gen != NULL && (!pb_log_files_check (gen, &error) || !pb_generation_bind (gen, current, &error)
                      || !pb_generation_start (gen, &error) || !pb_log_files_configure (gen, &error)))
    {
      pb_diag_add (diag, NULL, 0, "%s", error->message);
      g_clear_pointer (&gen, pb_generation_unref);
    }
  if (gen == NULL)
    {
      /* logrotate's SIGHUP must reopen the files even when the new configuration is refused. */
      pb_log_files_reopen ();
      log_diag (diag);
      g_warning ("the new configuration has errors; still running generation %u", current->serial);
      *errors = pb_diag_join (diag);
      pb_diag_free (diag);
      daemon_notify ("READY=1");
      return FALSE;
    }
  pb_diag_free (diag);
  if (g_strcmp0 (gen->core->user, current->core->user) != 0 && getuid () != geteuid ())
    g_warning ("core.user changed: it takes effect when pillarboxd is restarted");

  old = pb_generation_activate (gen);
  pb_generation_unref (gen);  /* activate holds it */
  g_message ("configuration generation %u is running (%u modules, %u listeners)", gen->serial,
             gen->modules->len, gen->listeners->len);
  /* The old generation lives on while its sessions do; drop our reference
   * from an idle so a control command of the old generation can return first. */
  if (old != NULL)
    pb_idle_add (daemon_unref_later, old);
  daemon_notify ("READY=1");
  return TRUE;
}

static gboolean
on_sighup (gpointer data)
{
  g_autofree char *errors = NULL;

  daemon_reload (&errors);
  return G_SOURCE_CONTINUE;
}

/* ---- shutdown ---- */

static gboolean
drain_check (gpointer data)
{
  Daemon *d = data;

  if (pb_sessions_count () == 0)
    {
      d->drain_source = 0;
      g_main_loop_quit (d->loop);
      return G_SOURCE_REMOVE;
    }
  if (g_get_monotonic_time () >= d->shutdown_deadline)
    {
      g_message ("closing %u session%s still open after the shutdown timeout", pb_sessions_count (),
                 pb_sessions_count () == 1 ? "" : "s");
      pb_sessions_shutdown (TRUE);
      d->shutdown_deadline = G_MAXINT64;
    }
  return G_SOURCE_CONTINUE;
}

static gboolean
on_terminate (gpointer data)
{
  Daemon *d = &daemon_state;
  PbGeneration *gen = pb_generation_get_current ();

  if (d->shutting_down)
    {
      g_message ("second stop signal: closing every session now");
      pb_sessions_shutdown (TRUE);
      return G_SOURCE_CONTINUE;
    }
  d->shutting_down = TRUE;
  daemon_notify ("STOPPING=1");
  g_message ("stopping: no new connections; waiting up to %" G_GINT64_FORMAT " ms for %u session%s",
             gen->core->shutdown_timeout, pb_sessions_count (), pb_sessions_count () == 1 ? "" : "s");
  pb_generation_close_listeners (gen);
  pb_sessions_shutdown (FALSE);
  d->shutdown_deadline = g_get_monotonic_time () + gen->core->shutdown_timeout * 1000;
  d->drain_source = pb_timeout_add (20, drain_check, d);
  return G_SOURCE_CONTINUE;
}

/* ---- privileges, state directory, pid file, background ---- */

static gboolean
resolve_run_user (const char *user, RunUser *ru, GError **error)
{
  struct passwd *pw;

  ru->uid = getuid ();
  ru->gid = getgid ();
  ru->name = NULL;
  if (geteuid () != 0)
    return TRUE;
  if (*user == '\0' || strcmp (user, "root") == 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG,
                   "core.user: pillarboxd will not run as root; name an unprivileged user");
      return FALSE;
    }
  errno = 0;
  pw = getpwnam (user);
  if (pw == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG,
                   "core.user: no such user '%s' (create it, e.g. adduser --system --group %s)", user, user);
      return FALSE;
    }
  ru->uid = pw->pw_uid;
  ru->gid = pw->pw_gid;
  ru->name = g_strdup (pw->pw_name);
  return TRUE;
}

/* WHAT names the directory in errors ("state directory", "log directory"). */
static gboolean
prepare_dir (const char *what, const char *dir, const RunUser *ru, GError **error)
{
  struct stat st;

  if (g_mkdir_with_parents (dir, 0750) != 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot create %s %s: %s", what, dir,
                   g_strerror (errno));
      return FALSE;
    }
  if (stat (dir, &st) != 0 || !S_ISDIR (st.st_mode))
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "%s %s is not a directory", what, dir);
      return FALSE;
    }
  if (geteuid () == 0 && (st.st_uid != ru->uid || st.st_gid != ru->gid)
      && chown (dir, ru->uid, ru->gid) != 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot give %s %s to %s: %s", what, dir,
                   ru->name, g_strerror (errno));
      return FALSE;
    }
  if ((st.st_mode & S_IWOTH) != 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                   "%s %s is writable by others (mode %04o); fix with chmod o-w", what, dir,
                   (unsigned) (st.st_mode & 07777));
      return FALSE;
    }
  return TRUE;
}

/* After dropping privileges: DIR must still be reachable, readable and
 * writable by the run user. A state directory inside a home directory of
 * mode 0700 is the common trap; name the directory that blocks the way. */
static gboolean
check_reachable (const char *what, const char *dir, const RunUser *ru, GError **error)
{
  g_autofree char *blocker = NULL;
  struct stat st;
  int saved;

  if (access (dir, R_OK | W_OK | X_OK) == 0)
    return TRUE;
  saved = errno;
  /* The first directory from the top that the user may not pass. */
  for (const char *slash = strchr (dir + 1, '/'); slash != NULL && blocker == NULL; slash = strchr (slash + 1, '/'))
    {
      g_autofree char *prefix = g_strndup (dir, (gsize) (slash - dir));
      if (access (prefix, X_OK) != 0)
        blocker = g_steal_pointer (&prefix);
    }
  if (blocker != NULL && stat (blocker, &st) == 0)
    g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                 "%s %s cannot be reached by user %s: %s is mode %04o, owned by uid %u; choose a %s the user "
                 "can reach (--state-dir, core.user) or let it through (chmod o+x %s)",
                 what, dir, ru->name, blocker, (unsigned) (st.st_mode & 07777), (unsigned) st.st_uid, what, blocker);
  else
    g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "%s %s is not usable by user %s: %s", what, dir,
                 ru->name, g_strerror (saved));
  return FALSE;
}

static gboolean
drop_privileges (const RunUser *ru, const char *state_dir, GError **error)
{
  if (geteuid () != 0)
    return TRUE;
  if (initgroups (ru->name, ru->gid) != 0 || setgid (ru->gid) != 0 || setuid (ru->uid) != 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot switch to user %s: %s", ru->name,
                   g_strerror (errno));
      return FALSE;
    }
  if (setuid (0) == 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "privileges could be regained after dropping them");
      return FALSE;
    }
  if (!check_reachable ("state directory", state_dir, ru, error))
    return FALSE;
  g_message ("running as user %s (uid %u)", ru->name, (unsigned) ru->uid);
  return TRUE;
}

/*
 * The pid file is opened as root, in a directory the run user owns (the
 * state directory, by default): whatever that user left there is hostile.
 * A symbolic link is never followed (O_NOFOLLOW), and nothing is truncated
 * or written before the file is known to be a plain file with no other name,
 * owned by us or by the run user, and its lock is held; everything after the
 * open works on the descriptor, never again on the name.
 */
static gboolean
pidfile_refuse (Daemon *d, int fd, const char *why, GError **error)
{
  g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "pid file %s %s; remove it and start again", d->pidfile,
               why);
  if (fd >= 0)
    close (fd);
  return FALSE;
}

static gboolean
pidfile_acquire (Daemon *d, const RunUser *ru, GError **error)
{
  g_autofree char *pid = NULL;
  struct stat st;
  int fd = open (d->pidfile, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0644);

  if (fd < 0 && errno == ELOOP)
    return pidfile_refuse (d, -1, "is a symbolic link, which pillarboxd does not follow", error);
  if (fd < 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot open pid file %s: %s", d->pidfile,
                   g_strerror (errno));
      return FALSE;
    }
  if (fstat (fd, &st) != 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot examine pid file %s: %s", d->pidfile,
                   g_strerror (errno));
      close (fd);
      return FALSE;
    }
  if (!S_ISREG (st.st_mode))
    return pidfile_refuse (d, fd, "is not a regular file", error);
  if (st.st_nlink != 1)
    return pidfile_refuse (d, fd, "has other names (hard links)", error);
  if (st.st_uid != geteuid () && st.st_uid != ru->uid)
    {
      g_autofree char *why = g_strdup_printf ("belongs to uid %u, neither pillarboxd's nor core.user's",
                                              (unsigned) st.st_uid);
      return pidfile_refuse (d, fd, why, error);
    }
  if (flock (fd, LOCK_EX | LOCK_NB) != 0)
    {
      char buf[32] = { 0 };
      ssize_t n = pread (fd, buf, sizeof buf - 1, 0);
      const char *other = n > 0 ? g_strstrip (buf) : "";
      /* The file's text is only shown when it is a number. */
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                   "another pillarboxd (pid %s) is running with state directory %s",
                   *other != '\0' && strspn (other, "0123456789") == strlen (other) ? other : "?", d->state_dir);
      close (fd);
      return FALSE;
    }
  pid = g_strdup_printf ("%d\n", (int) getpid ());
  if (ftruncate (fd, 0) != 0 || pwrite (fd, pid, strlen (pid), 0) != (ssize_t) strlen (pid))
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "cannot write pid file %s: %s", d->pidfile,
                   g_strerror (errno));
      close (fd);
      return FALSE;
    }
  d->pidfile_fd = fd;
  return TRUE;
}

/* Forks into the background. The parent waits until the daemon reports
 * that it is ready (or failed) and exits with the matching status, so
 * start-up errors still reach the administrator's terminal. */
static void
daemonize (Daemon *d)
{
  int pipefd[2];
  pid_t pid;

  if (pipe2 (pipefd, O_CLOEXEC) != 0)
    {
      g_printerr ("pillarboxd: pipe: %s\n", g_strerror (errno));
      exit (1);
    }
  pid = fork ();
  if (pid < 0)
    {
      g_printerr ("pillarboxd: fork: %s\n", g_strerror (errno));
      exit (1);
    }
  if (pid > 0)
    {
      char status = 1;
      close (pipefd[1]);
      if (read (pipefd[0], &status, 1) != 1)
        status = 1;
      waitpid (pid, NULL, 0);
      _exit (status);
    }
  close (pipefd[0]);
  if (setsid () < 0)
    _exit (1);
  pid = fork ();
  if (pid < 0)
    _exit (1);
  if (pid > 0)
    _exit (0);
  if (chdir ("/") != 0)
    _exit (1);
  d->ready_fd = pipefd[1];
}

static void
report_ready (Daemon *d, gboolean ok)
{
  char status = ok ? 0 : 1;
  int null;

  if (d->ready_fd < 0)
    return;
  if (ok)
    {
      pb_log_detach ();
      null = open ("/dev/null", O_RDWR);
      if (null >= 0)
        {
          dup2 (null, STDIN_FILENO);
          dup2 (null, STDOUT_FILENO);
          dup2 (null, STDERR_FILENO);
          if (null > STDERR_FILENO)
            close (null);
        }
    }
  if (write (d->ready_fd, &status, 1) != 1)
    g_debug ("readiness pipe: %s", g_strerror (errno));
  close (d->ready_fd);
  d->ready_fd = -1;
}

/* ---- the settings reference ---- */

static gboolean
on_print_settings (const char *option, const char *value, gpointer data, GError **error)
{
  Daemon *d = &daemon_state;
  PbSettingsDocFormat format;

  if (!pb_settings_doc_parse_format (value, &format))
    {
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "--print-settings: unknown format '%s' (text, man or json)", value);
      return FALSE;
    }
  d->print_settings = TRUE;
  g_free (d->print_format);
  d->print_format = g_strdup (value);
  return TRUE;
}

/* The module directory comes from [core] as the loader's would: the files
 * of -c DIR when given (a build needs no installed configuration), then
 * the -o overrides, then the built-in default. */
static int
daemon_print_settings (Daemon *d, gboolean conf_given)
{
  PbDiag *diag = pb_diag_new ();
  PbSettingsTable core_table = { pb_core_settings, sizeof (PbSetting), sizeof (PbCoreConfig), NULL };
  PbConfSource *src = NULL;
  PbCoreConfig *core = NULL;
  PbSettingsDocFormat format = PB_SETTINGS_DOC_TEXT;
  g_autoptr (GString) out = g_string_new (NULL);
  g_autoptr (GError) error = NULL;
  int status = 1;

  pb_settings_doc_parse_format (d->print_format, &format);
  if (conf_given)
    src = pb_conf_source_load_dir (d->conf_dir, diag);
  else
    {
      g_autofree char *cwd = g_get_current_dir ();
      src = pb_conf_source_new (cwd);
    }
  for (guint i = 0; src != NULL && d->overrides != NULL && d->overrides[i] != NULL; i++)
    pb_conf_source_apply_override (src, d->overrides[i], diag);
  if (src != NULL && pb_diag_is_empty (diag))
    core = pb_settings_parse_group (&core_table, pb_conf_source_find_group (src, "core"), src->dir, "[core]", diag);
  if (core == NULL || !pb_diag_is_empty (diag))
    {
      print_diag (diag);
      goto out;
    }
  if (!pb_settings_doc_write (core->module_dir, (const char *const *) d->print_modules, format, out, &error))
    {
      g_printerr ("pillarboxd: --print-settings: %s\n", error->message);
      goto out;
    }
  fwrite (out->str, 1, out->len, stdout);
  status = fflush (stdout) == 0 ? 0 : 1;
out:
  pb_settings_free (&core_table, core);
  pb_conf_source_free (src);
  pb_diag_free (diag);
  return status;
}

/* ---- main ---- */

static gboolean
parse_options (Daemon *d, int *argc, char ***argv)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GOptionContext) ctx = NULL;
  const GOptionEntry entries[] = {
    { "config-dir", 'c', 0, G_OPTION_ARG_FILENAME, &d->conf_dir,
      "Read configuration files (*.conf) from DIR (default " PB_SYSCONF_DIR "/conf.d)", "DIR" },
    { "foreground", 'f', 0, G_OPTION_ARG_NONE, &d->foreground, "Stay in the foreground, log to stderr", NULL },
    { "state-dir", 0, 0, G_OPTION_ARG_FILENAME, &d->state_dir,
      "Keep state (storage, control socket, certificates) in DIR (default " PB_STATE_DIR ")", "DIR" },
    { "option", 'o', 0, G_OPTION_ARG_STRING_ARRAY, &d->overrides,
      "Override a setting: GROUP.KEY=VALUE (GROUP is core or a module name); repeatable", "GROUP.KEY=VALUE" },
    { "check-config", 0, 0, G_OPTION_ARG_NONE, &d->check_config,
      "Check the configuration, print every error, exit 0 or 1", NULL },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &d->verbose, "Log debugging messages", NULL },
    { "version", 0, 0, G_OPTION_ARG_NONE, &d->version, "Print the version and plugin ABI, then exit", NULL },
    { "print-settings", 0, G_OPTION_FLAG_OPTIONAL_ARG, G_OPTION_ARG_CALLBACK, (gpointer) on_print_settings,
      "Print every setting of the core and of the modules (all in the module directory, or each MODULE "
      "named after the options) as text, a man page section or json, then exit", "[text|man|json]" },
    { NULL }
  };

  ctx = g_option_context_new (NULL);
  g_option_context_set_summary (ctx, "The Pillarbox mail server daemon.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, argc, argv, &error))
    {
      g_printerr ("pillarboxd: %s (see pillarboxd --help)\n", error->message);
      return FALSE;
    }
  if (d->print_settings)
    d->print_modules = g_strdupv (*argv + 1);
  else if (*argc > 1)
    {
      g_printerr ("pillarboxd: unexpected argument '%s' (see pillarboxd --help)\n", (*argv)[1]);
      return FALSE;
    }
  return TRUE;
}

static gboolean
daemon_start (Daemon *d, GError **error)
{
  PbDiag *diag = pb_diag_new ();
  PbGeneration *gen;
  RunUser ru = { 0 };
  g_autofree char *socket_path = NULL;
  gboolean ok = FALSE;

  gen = pb_generation_build (d->conf_dir, d->state_dir, (const char *const *) d->overrides, FALSE, diag);
  if (gen == NULL)
    {
      g_autofree char *all = pb_diag_join (diag);
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_CONFIG, "%s", all);
      pb_diag_free (diag);
      return FALSE;
    }
  pb_diag_free (diag);

  pb_log_files_register (gen);
  if (!pb_log_files_check (gen, error))
    goto out;
  if (!resolve_run_user (gen->core->user, &ru, error) || !prepare_dir ("state directory", d->state_dir, &ru, error))
    goto out;
  if (gen->core->service_logs[0] != NULL)
    {
      g_autofree char *log_dir = pb_log_files_dir (gen);
      if (!prepare_dir ("log directory", log_dir, &ru, error))
        goto out;
    }

  if (!d->foreground)
    daemonize (d);

  d->pidfile = *gen->core->pidfile != '\0' ? g_strdup (gen->core->pidfile)
                                          : g_build_filename (d->state_dir, "pillarboxd.pid", NULL);
  if (!pidfile_acquire (d, &ru, error))
    goto out;

  /* Privileged work first: ports below 1024 and a configured key that only
   * root may read; then give up root for good. */
  if (!pb_generation_bind (gen, NULL, error) || !pb_generation_load_tls (gen, FALSE, error)
      || !drop_privileges (&ru, d->state_dir, error))
    goto out;
  if (!pb_generation_start (gen, error) || !pb_log_files_configure (gen, error))
    goto out;

  socket_path = g_build_filename (d->state_dir, PB_CONTROL_SOCKET_NAME, NULL);
  d->control = pb_control_server_new (socket_path, pb_generation_lookup_command, pb_generation_list_commands,
                                      NULL, error);
  if (d->control == NULL)
    goto out;

  pb_generation_unref (pb_generation_activate (gen));
  pb_builtins_set_start_time (g_get_real_time ());
  pb_builtins_set_reload_func (daemon_reload);
  g_message ("pillarboxd %s started (plugin ABI %u.%u): %u module%s, %u listener%s, state in %s",
             PACKAGE_VERSION, PB_ABI_MAJOR, PB_ABI_MINOR, gen->modules->len, gen->modules->len == 1 ? "" : "s",
             gen->listeners->len, gen->listeners->len == 1 ? "" : "s", d->state_dir);
  for (guint i = 0; i < gen->listeners->len; i++)
    {
      PbListener *l = g_ptr_array_index (gen->listeners, i);
      for (guint k = 0; k < l->sockets->len; k++)
        g_message ("listening on %s for %s (%s)", ((PbBoundSocket *) g_ptr_array_index (l->sockets, k))->bound,
                   l->name, l->module->name);
    }
  ok = TRUE;
out:
  pb_generation_unref (gen);
  g_free (ru.name);
  return ok;
}

int
pb_daemon_main (int argc, char **argv)
{
  Daemon *d = &daemon_state;
  g_autoptr (GError) error = NULL;
  PbGeneration *last;
  gboolean conf_given;

  d->pidfile_fd = -1;
  d->ready_fd = -1;
  if (!parse_options (d, &argc, &argv))
    return 64;
  if (d->version)
    {
      g_print ("pillarboxd %s (plugin ABI %u.%u)\n", PACKAGE_VERSION, PB_ABI_MAJOR, PB_ABI_MINOR);
      return 0;
    }
  conf_given = d->conf_dir != NULL;
  {
    /* Absolute, because background mode changes to / before any reload reads it. */
    char *abs = g_canonicalize_filename (d->conf_dir != NULL ? d->conf_dir : PB_SYSCONF_DIR "/conf.d", NULL);
    g_free (d->conf_dir);
    d->conf_dir = abs;
  }
  {
    char *abs = g_canonicalize_filename (d->state_dir != NULL ? d->state_dir : PB_STATE_DIR, NULL);
    g_free (d->state_dir);
    d->state_dir = abs;
  }
  pb_log_init (d->verbose);
  signal (SIGPIPE, SIG_IGN);
  if (lt_dlinit () != 0)
    {
      g_printerr ("pillarboxd: cannot initialise libltdl: %s\n", lt_dlerror ());
      return 1;
    }

  if (d->check_config)
    return daemon_check_config (d);
  if (d->print_settings)
    {
      int status = daemon_print_settings (d, conf_given);
      g_free (d->conf_dir);
      g_free (d->state_dir);
      g_free (d->print_format);
      g_strfreev (d->print_modules);
      g_strfreev (d->overrides);
      return status;
    }

  d->loop = g_main_loop_new (NULL, FALSE);
  if (!daemon_start (d, &error))
    {
      g_printerr ("pillarboxd: %s\n", error->message);
      report_ready (d, FALSE);
      return 1;
    }
  pb_unix_signal_add (SIGHUP, on_sighup, d);
  pb_unix_signal_add (SIGTERM, on_terminate, d);
  pb_unix_signal_add (SIGINT, on_terminate, d);
  daemon_notify ("READY=1");
  report_ready (d, TRUE);

  g_main_loop_run (d->loop);

  g_message ("stopped");
  pb_control_server_free (d->control);
  last = pb_generation_activate (NULL);
  pb_generation_unref (last);
  /* Run idles that release retired generations. */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  pb_log_files_shutdown (2000);
  if (d->pidfile_fd >= 0)
    {
      unlink (d->pidfile);
      close (d->pidfile_fd);
    }
  g_main_loop_unref (d->loop);
  g_free (d->pidfile);
  g_free (d->conf_dir);
  g_free (d->state_dir);
  g_strfreev (d->overrides);
  return d->exit_status;
}
