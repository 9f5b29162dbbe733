/* SPDX-License-Identifier: MIT */
/* The `pillarbox` command: runs one control command in the running pillarboxd and prints its answer. */

/* It speaks the control protocol of core/control.c (JSON lines over the
 * UNIX socket STATE_DIR/control.sock) and links only GLib and json-glib,
 * not libpillarbox, so it stays small and works whatever modules the
 * daemon loaded. Exit statuses: 0 success, 1 the command failed, 2 the
 * daemon could not be reached or did not answer properly, 64 usage. */

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif
#ifndef PB_STATE_DIR
#define PB_STATE_DIR "/var/lib/pillarbox"
#endif
#ifndef PB_SYSCONF_DIR
#define PB_SYSCONF_DIR "/etc/pillarbox"
#endif

/* The socket's name in the state directory (PB_CONTROL_SOCKET_NAME in pb-private.h). */
#define CLI_SOCKET_NAME "control.sock"

/* Exit statuses. */
#define CLI_EXIT_FAILED 1       /* the daemon answered with an error */
#define CLI_EXIT_UNREACHABLE 2  /* no daemon, no answer, or a broken one */
#define CLI_EXIT_USAGE 64       /* EX_USAGE */

#define CLI_DEFAULT_TIMEOUT 30.0
/* Standard input sent with a request; the daemon takes 1 MiB lines, and
 * JSON escaping may double the size. */
#define CLI_MAX_INPUT (256 * 1024)
/* The longest answer accepted from the daemon. */
#define CLI_MAX_REPLY (256 * 1024 * 1024)
/* --help asks the daemon for its commands, but not for long. */
#define CLI_HELP_TIMEOUT 5.0

typedef struct {
  const char *state_dir;
  char *socket_path;
  gboolean json;
  gboolean help;
  double timeout;           /* seconds; 0 waits forever */
  const char *command;
  char **args;              /* the words after COMMAND but --json, NULL-terminated */
} Options;

typedef struct {
  int fd;
  GString *in;              /* received and not yet consumed */
  double timeout;
} Link;

static GQuark
cli_error_quark (void)
{
  return g_quark_from_static_string ("pillarbox-cli-error");
}

/* Errors carry the exit status as their code. */
#define CLI_ERROR (cli_error_quark ())

static void
wipe (void *p, gsize n)
{
  volatile guchar *v = p;

  while (n-- > 0)
    *v++ = 0;
}

static void
wipe_free (char *s)
{
  if (s != NULL)
    {
      wipe (s, strlen (s));
      g_free (s);
    }
}

static void usage_error (const char *format, ...) G_GNUC_PRINTF (1, 2) G_GNUC_NORETURN;

static void
usage_error (const char *format, ...)
{
  va_list ap;

  fputs ("pillarbox: ", stderr);
  va_start (ap, format);
  vfprintf (stderr, format, ap);
  va_end (ap);
  fputc ('\n', stderr);
  exit (CLI_EXIT_USAGE);
}

static void
print_usage (FILE *out)
{
  fprintf (out,
           "Usage: pillarbox [OPTION...] COMMAND [ARG...]\n"
           "\n"
           "Runs COMMAND in the running pillarboxd through its control socket\n"
           "(STATE_DIR/" CLI_SOCKET_NAME ") and prints the answer.\n"
           "\n"
           "Options (before COMMAND; after it only --json is the program's, the rest goes to the command):\n"
           "  --state-dir DIR     the daemon's state directory (default: $PILLARBOX_STATE_DIR,\n"
           "                      else " PB_STATE_DIR ")\n"
           "  --json              print the answer's structured data as JSON\n"
           "  --timeout SECONDS   how long to wait for each answer (default %g; 0 waits forever)\n"
           "  --version           print the version and exit\n"
           "  -h, --help          print this help (and the daemon's commands) and exit\n"
           "\n"
           "'pillarbox help' lists the daemon's commands; 'pillarbox help COMMAND' shows one.\n"
           "Exit status: 0 success, 1 the command failed, 2 pillarboxd unreachable or not\n"
           "answering, 64 usage error.\n",
           CLI_DEFAULT_TIMEOUT);
}

/* The value of --NAME=VALUE or --NAME VALUE; NULL when ARG is not --NAME. */
static const char *
option_value (const char *name, int argc, char **argv, int *i)
{
  const char *arg = argv[*i];
  gsize len = strlen (name);

  if (strncmp (arg, name, len) != 0)
    return NULL;
  if (arg[len] == '=')
    return arg + len + 1;
  if (arg[len] != '\0')
    return NULL;
  if (*i + 1 >= argc)
    usage_error ("option %s needs a value (try 'pillarbox --help')", name);
  return argv[++*i];
}

static void
parse_options (Options *opts, int argc, char **argv)
{
  int i;

  opts->timeout = CLI_DEFAULT_TIMEOUT;

  /* Options only before COMMAND: GOptionContext would also take the
   * command's own "--all" (`pillarbox queue delete --all`). */
  for (i = 1; i < argc; i++)
    {
      const char *arg = argv[i];
      const char *value;

      if (arg[0] != '-' || arg[1] == '\0')
        break;
      if (strcmp (arg, "--") == 0)
        {
          i++;
          break;
        }
      if (strcmp (arg, "--json") == 0)
        opts->json = TRUE;
      else if (strcmp (arg, "-h") == 0 || strcmp (arg, "--help") == 0)
        opts->help = TRUE;
      else if (strcmp (arg, "--version") == 0)
        {
          printf ("pillarbox %s\n", PACKAGE_VERSION);
          exit (0);
        }
      else if ((value = option_value ("--state-dir", argc, argv, &i)) != NULL)
        {
          if (*value == '\0')
            usage_error ("--state-dir needs a directory");
          opts->state_dir = value;
        }
      else if ((value = option_value ("--timeout", argc, argv, &i)) != NULL)
        {
          char *end = NULL;
          double t = g_ascii_strtod (value, &end);

          if (*value == '\0' || end == NULL || *end != '\0' || !isfinite (t) || t < 0 || t > 1e6)
            usage_error ("invalid --timeout '%s' (a number of seconds; 0 waits forever)", value);
          opts->timeout = t;
        }
      else
        usage_error ("unknown option '%s' (try 'pillarbox --help')", arg);
    }

  if (i < argc)
    {
      GPtrArray *args = g_ptr_array_new ();
      gboolean literal = FALSE;

      opts->command = argv[i];
      /* --json is the program's, wherever it is written (`pillarbox status
       * --json`); every other word after COMMAND is the command's, and after
       * a "--" even --json is. */
      for (int j = i + 1; j < argc; j++)
        {
          if (!literal && strcmp (argv[j], "--json") == 0)
            opts->json = TRUE;
          else
            {
              if (strcmp (argv[j], "--") == 0)
                literal = TRUE;
              g_ptr_array_add (args, argv[j]);
            }
        }
      g_ptr_array_add (args, NULL);
      opts->args = (char **) g_ptr_array_free (args, FALSE);
    }
  for (int j = i; j < argc; j++)
    if (!g_utf8_validate (argv[j], -1, NULL))
      usage_error ("argument %d is not valid UTF-8", j);
  if (opts->command == NULL && !opts->help)
    usage_error ("no command given (try 'pillarbox help', or 'pillarbox --help' for the options)");

  if (opts->state_dir == NULL)
    {
      const char *env = g_getenv ("PILLARBOX_STATE_DIR");

      opts->state_dir = env != NULL && *env != '\0' ? env : PB_STATE_DIR;
    }
  opts->socket_path = g_build_filename (opts->state_dir, CLI_SOCKET_NAME, NULL);
}

/* ---- talking to the daemon ---------------------------------------------- */

static gint64
deadline_after (double timeout)
{
  return timeout > 0 ? g_get_monotonic_time () + (gint64) (timeout * G_USEC_PER_SEC) : -1;
}

/* Waits until FD is ready for EVENTS. FALSE on timeout (errno ETIMEDOUT) or error. */
static gboolean
wait_fd (int fd, short events, gint64 deadline)
{
  for (;;)
    {
      struct pollfd pfd = { .fd = fd, .events = events, .revents = 0 };
      int ms = -1, r;

      if (deadline >= 0)
        {
          gint64 left = deadline - g_get_monotonic_time ();

          if (left <= 0)
            {
              errno = ETIMEDOUT;
              return FALSE;
            }
          ms = (int) MIN ((left + 999) / 1000, G_MAXINT);
        }
      r = poll (&pfd, 1, ms);
      if (r > 0)
        return TRUE;
      if (r < 0 && errno != EINTR)
        return FALSE;
    }
}

static int
link_connect (const char *path, double timeout, GError **error)
{
  struct sockaddr_un sa;
  struct timeval tv;
  int fd, saved;

  memset (&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (strlen (path) >= sizeof sa.sun_path)
    {
      g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                   "cannot reach pillarboxd at %s: the path is too long for a socket", path);
      return -1;
    }
  strcpy (sa.sun_path, path);

  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    {
      saved = errno;
      g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE, "socket: %s", g_strerror (saved));
      return -1;
    }
  /* connect() on a UNIX socket waits only when the daemon's backlog is
   * full, and then no longer than the send timeout. */
  tv.tv_sec = (time_t) timeout;
  tv.tv_usec = (suseconds_t) ((timeout - (double) tv.tv_sec) * 1e6);
  setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

  while (connect (fd, (struct sockaddr *) &sa, sizeof sa) < 0)
    {
      if (errno == EINTR)
        continue;
      saved = errno;
      close (fd);
      if (saved == ENOENT || saved == ECONNREFUSED)
        {
          char *state_dir = g_path_get_dirname (path);

          g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                       "cannot reach pillarboxd at %s: %s (is the daemon running? "
                       "start it with: pillarboxd -c %s/conf.d --state-dir %s)",
                       path, g_strerror (saved), PB_SYSCONF_DIR, state_dir);
          g_free (state_dir);
        }
      else if (saved == EACCES || saved == EPERM)
        g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                     "cannot reach pillarboxd at %s: %s (the control socket is open only to "
                     "the user pillarboxd runs as, and to root)", path, g_strerror (saved));
      else if (saved == EAGAIN || saved == EWOULDBLOCK || saved == ETIMEDOUT)
        g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                     "cannot reach pillarboxd at %s: timed out (the daemon is not accepting connections)",
                     path);
      else
        g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                     "cannot reach pillarboxd at %s: %s", path, g_strerror (saved));
      return -1;
    }
  return fd;
}

static gboolean
link_send (Link *link, const char *data, gsize len, GError **error)
{
  gint64 deadline = deadline_after (link->timeout);
  gsize off = 0;

  while (off < len)
    {
      ssize_t n;

      if (!wait_fd (link->fd, POLLOUT, deadline))
        goto failed;
      n = send (link->fd, data + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0)
        {
          if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
            continue;
          goto failed;
        }
      off += (gsize) n;
    }
  return TRUE;

failed:
  if (errno == ETIMEDOUT)
    g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                 "timed out after %g s sending to pillarboxd", link->timeout);
  else
    g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                 "lost the connection to pillarboxd: %s", g_strerror (errno));
  return FALSE;
}

/* Reads one response line and parses it. */
static JsonNode *
link_receive (Link *link, GError **error)
{
  gint64 deadline = deadline_after (link->timeout);
  GError *parse_error = NULL;
  JsonNode *node;
  char *nl;
  gsize len;

  while ((nl = memchr (link->in->str, '\n', link->in->len)) == NULL)
    {
      char chunk[65536];
      ssize_t n;

      if (link->in->len > CLI_MAX_REPLY)
        {
          g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                       "the answer from pillarboxd is too large (over %d bytes)", CLI_MAX_REPLY);
          return NULL;
        }
      if (!wait_fd (link->fd, POLLIN, deadline))
        {
          if (errno == ETIMEDOUT)
            g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                         "timed out after %g s waiting for pillarboxd to answer "
                         "(--timeout SECONDS waits longer)", link->timeout);
          else
            g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                         "lost the connection to pillarboxd: %s", g_strerror (errno));
          return NULL;
        }
      n = recv (link->fd, chunk, sizeof chunk, MSG_DONTWAIT);
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        continue;
      if (n < 0)
        {
          g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                       "lost the connection to pillarboxd: %s", g_strerror (errno));
          return NULL;
        }
      if (n == 0)
        {
          g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE,
                       "pillarboxd closed the connection without answering");
          return NULL;
        }
      g_string_append_len (link->in, chunk, n);
    }

  len = (gsize) (nl - link->in->str);
  *nl = '\0';
  node = json_from_string (link->in->str, &parse_error);
  g_string_erase (link->in, 0, (gssize) len + 1);
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT (node)
      || json_object_get_member (json_node_get_object (node), "ok") == NULL)
    {
      g_set_error (error, CLI_ERROR, CLI_EXIT_UNREACHABLE, "malformed answer from pillarboxd%s%s",
                   parse_error != NULL ? ": " : "", parse_error != NULL ? parse_error->message : "");
      g_clear_error (&parse_error);
      if (node != NULL)
        json_node_unref (node);
      return NULL;
    }
  return node;
}

/* Sends one request and returns its response object (a JSON object node). */
static JsonNode *
link_call (Link *link, const char *command, char **args, const char *input, GError **error)
{
  JsonBuilder *builder = json_builder_new ();
  JsonNode *request;
  char *json, *line;
  gboolean sent;

  json_builder_begin_object (builder);
  json_builder_set_member_name (builder, "command");
  json_builder_add_string_value (builder, command);
  json_builder_set_member_name (builder, "args");
  json_builder_begin_array (builder);
  for (char **a = args; a != NULL && *a != NULL; a++)
    json_builder_add_string_value (builder, *a);
  json_builder_end_array (builder);
  if (input != NULL)
    {
      json_builder_set_member_name (builder, "input");
      json_builder_add_string_value (builder, input);
    }
  json_builder_end_object (builder);
  request = json_builder_get_root (builder);
  g_object_unref (builder);

  json = json_to_string (request, FALSE);
  json_node_unref (request);
  line = g_strconcat (json, "\n", NULL);
  wipe_free (json);
  sent = link_send (link, line, strlen (line), error);
  wipe_free (line);
  if (!sent)
    return NULL;
  return link_receive (link, error);
}

static void
link_close (Link *link)
{
  if (link->fd >= 0)
    close (link->fd);
  link->fd = -1;
  g_string_free (link->in, TRUE);
  link->in = NULL;
}

static gboolean
link_open (Link *link, const char *path, double timeout, GError **error)
{
  link->fd = link_connect (path, timeout, error);
  link->in = g_string_new (NULL);
  link->timeout = timeout;
  return link->fd >= 0;
}

/* ---- standard input ----------------------------------------------------- */

static struct termios saved_termios;
static volatile sig_atomic_t termios_changed;

static void
restore_terminal_and_die (int sig)
{
  if (termios_changed)
    tcsetattr (STDIN_FILENO, TCSANOW, &saved_termios);
  signal (sig, SIG_DFL);
  raise (sig);
}

static const int prompt_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP };

/* Prompts on stderr and reads one line from the terminal without echo. */
static char *
prompt_hidden (const char *prompt, GError **error)
{
  struct sigaction sa, old_sa[G_N_ELEMENTS (prompt_signals)];
  struct termios noecho;
  GString *line = g_string_new (NULL);
  gboolean eof = FALSE;
  int saved = 0;

  fputs (prompt, stderr);
  fflush (stderr);

  if (tcgetattr (STDIN_FILENO, &saved_termios) < 0)
    {
      saved = errno;
      g_set_error (error, CLI_ERROR, CLI_EXIT_FAILED, "cannot read the terminal: %s", g_strerror (saved));
      g_string_free (line, TRUE);
      return NULL;
    }
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = restore_terminal_and_die;
  sigemptyset (&sa.sa_mask);
  for (gsize i = 0; i < G_N_ELEMENTS (prompt_signals); i++)
    sigaction (prompt_signals[i], &sa, &old_sa[i]);

  noecho = saved_termios;
  noecho.c_lflag &= ~(tcflag_t) ECHO;
  termios_changed = TRUE;
  tcsetattr (STDIN_FILENO, TCSAFLUSH, &noecho);

  for (;;)
    {
      char c;
      ssize_t n = read (STDIN_FILENO, &c, 1);

      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        saved = errno;
      if (n == 0 && line->len == 0)
        eof = TRUE;
      if (n <= 0 || c == '\n')
        break;
      if (line->len < CLI_MAX_INPUT)
        g_string_append_c (line, c);
    }

  tcsetattr (STDIN_FILENO, TCSAFLUSH, &saved_termios);
  termios_changed = FALSE;
  for (gsize i = 0; i < G_N_ELEMENTS (prompt_signals); i++)
    sigaction (prompt_signals[i], &old_sa[i], NULL);
  fputc ('\n', stderr);

  if (saved != 0 || eof)
    {
      g_set_error (error, CLI_ERROR, CLI_EXIT_FAILED, "cannot read the terminal: %s",
                   saved != 0 ? g_strerror (saved) : "end of file");
      wipe (line->str, line->len);
      g_string_free (line, TRUE);
      return NULL;
    }
  return g_string_free (line, FALSE);
}

/* Reads all of a non-terminal standard input. */
static char *
read_all_input (GError **error)
{
  GString *buf = g_string_new (NULL);

  for (;;)
    {
      char chunk[8192];
      ssize_t n = read (STDIN_FILENO, chunk, sizeof chunk);

      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          int saved = errno;

          g_set_error (error, CLI_ERROR, CLI_EXIT_FAILED, "cannot read standard input: %s", g_strerror (saved));
          break;
        }
      if (n == 0)
        {
          if (memchr (buf->str, '\0', buf->len) == NULL)
            return g_string_free (buf, FALSE);
          g_set_error (error, CLI_ERROR, CLI_EXIT_FAILED, "standard input contains a NUL byte");
          break;
        }
      if (buf->len + (gsize) n > CLI_MAX_INPUT)
        {
          g_set_error (error, CLI_ERROR, CLI_EXIT_FAILED,
                       "standard input is too large (the limit is %d bytes)", CLI_MAX_INPUT);
          wipe (chunk, sizeof chunk);
          break;
        }
      g_string_append_len (buf, chunk, n);
      wipe (chunk, (gsize) n);
    }
  wipe (buf->str, buf->len);
  g_string_free (buf, TRUE);
  return NULL;
}

/* What a reads_input command sends: typed at a prompt (twice when it sets
 * a password) or piped in, without one final newline. */
static char *
read_input (gboolean confirm, GError **error)
{
  char *input;

  if (isatty (STDIN_FILENO))
    {
      input = prompt_hidden ("Password: ", error);
      if (input != NULL && confirm)
        {
          char *again = prompt_hidden ("Retype password: ", error);

          if (again == NULL)
            {
              wipe_free (input);
              return NULL;
            }
          if (strcmp (input, again) != 0)
            {
              g_set_error (error, CLI_ERROR, CLI_EXIT_FAILED, "the passwords do not match");
              wipe_free (input);
              input = NULL;
            }
          wipe_free (again);
        }
    }
  else
    input = read_all_input (error);

  if (input != NULL)
    {
      gsize len = strlen (input);

      if (len > 0 && input[len - 1] == '\n')
        {
          input[--len] = '\0';
          if (len > 0 && input[len - 1] == '\r')
            input[--len] = '\0';
        }
      if (!g_utf8_validate (input, (gssize) len, NULL))
        {
          g_set_error (error, CLI_ERROR, CLI_EXIT_FAILED, "the input is not valid UTF-8 text");
          wipe_free (input);
          return NULL;
        }
    }
  return input;
}

/* Asks the daemon whether COMMAND reads standard input, and whether it
 * sets a password (its usage mentions "passwd"). Unknown: neither. */
static void
query_input_needs (Link *link, const char *command, char **args, gboolean *reads_input, gboolean *confirm,
                   GError **error)
{
  JsonNode *reply = link_call (link, "help", NULL, NULL, error);
  JsonObject *o;
  JsonNode *data;

  *reads_input = FALSE;
  *confirm = FALSE;
  if (reply == NULL)
    return;
  o = json_node_get_object (reply);
  data = json_object_get_member (o, "data");
  if (json_object_get_boolean_member_with_default (o, "ok", FALSE)
      && data != NULL && JSON_NODE_HOLDS_ARRAY (data))
    {
      JsonArray *commands = json_node_get_array (data);

      for (guint i = 0; i < json_array_get_length (commands); i++)
        {
          JsonNode *element = json_array_get_element (commands, i);
          JsonObject *cmd = JSON_NODE_HOLDS_OBJECT (element) ? json_node_get_object (element) : NULL;
          const char *usage;

          if (cmd == NULL
              || g_strcmp0 (json_object_get_string_member_with_default (cmd, "name", NULL), command) != 0)
            continue;
          *reads_input = json_object_get_boolean_member_with_default (cmd, "reads_input", FALSE);
          if (*reads_input && json_object_has_member (cmd, "input_for"))
            {
              /* Only some subcommands read input (user add/passwd, not user list). */
              JsonNode *for_node = json_object_get_member (cmd, "input_for");
              JsonArray *subs = JSON_NODE_HOLDS_ARRAY (for_node) ? json_node_get_array (for_node) : NULL;
              gboolean match = FALSE;

              for (guint k = 0; subs != NULL && k < json_array_get_length (subs); k++)
                if (args != NULL && args[0] != NULL
                    && g_strcmp0 (json_array_get_string_element (subs, k), args[0]) == 0)
                  match = TRUE;
              *reads_input = match;
            }
          usage = json_object_get_string_member_with_default (cmd, "usage", "");
          *confirm = usage != NULL && strstr (usage, "passwd") != NULL;
          break;
        }
    }
  json_node_unref (reply);
}

/* ---- output --------------------------------------------------------------- */

static int
print_reply (const Options *opts, JsonNode *reply)
{
  JsonObject *o = json_node_get_object (reply);
  gboolean ok = json_object_get_boolean_member_with_default (o, "ok", FALSE);

  if (!ok)
    {
      const char *message = json_object_get_string_member_with_default (o, "error", NULL);

      if (message == NULL || *message == '\0')
        message = "the command failed";
      if (opts->json)
        {
          JsonBuilder *builder = json_builder_new ();
          JsonNode *root;
          char *json;

          json_builder_begin_object (builder);
          json_builder_set_member_name (builder, "ok");
          json_builder_add_boolean_value (builder, FALSE);
          json_builder_set_member_name (builder, "error");
          json_builder_add_string_value (builder, message);
          json_builder_end_object (builder);
          root = json_builder_get_root (builder);
          json = json_to_string (root, FALSE);
          printf ("%s\n", json);
          g_free (json);
          json_node_unref (root);
          g_object_unref (builder);
        }
      else
        fprintf (stderr, "pillarbox: %s\n", message);
      return CLI_EXIT_FAILED;
    }

  if (opts->json)
    {
      JsonNode *data = json_object_get_member (o, "data");

      if (data == NULL || JSON_NODE_HOLDS_NULL (data))
        puts ("null");
      else
        {
          char *json = json_to_string (data, TRUE);

          printf ("%s\n", json);
          g_free (json);
        }
    }
  else
    {
      const char *text = json_object_get_string_member_with_default (o, "text", "");
      gsize len = text != NULL ? strlen (text) : 0;

      if (len > 0)
        {
          fputs (text, stdout);
          if (text[len - 1] != '\n')
            fputc ('\n', stdout);
        }
    }
  return 0;
}

/* --help: local usage, then the daemon's commands if it answers. */
static int
run_help (const Options *opts)
{
  GError *error = NULL;
  Link link;
  JsonNode *reply = NULL;
  double timeout = opts->timeout > 0 ? MIN (opts->timeout, CLI_HELP_TIMEOUT) : CLI_HELP_TIMEOUT;

  print_usage (stdout);
  if (link_open (&link, opts->socket_path, timeout, &error))
    reply = link_call (&link, "help", NULL, NULL, &error);
  link_close (&link);

  if (reply != NULL && json_object_get_boolean_member_with_default (json_node_get_object (reply), "ok", FALSE))
    {
      const char *text = json_object_get_string_member_with_default (json_node_get_object (reply), "text", "");

      if (text == NULL)
        text = "";
      printf ("\n%s%s", text, g_str_has_suffix (text, "\n") ? "" : "\n");
    }
  else
    printf ("\nThe daemon's commands are not listed: %s.\n",
            error != NULL ? error->message : "it did not list them");
  g_clear_error (&error);
  if (reply != NULL)
    json_node_unref (reply);
  return 0;
}

static int
finish (int status)
{
  if (fflush (stdout) != 0 || ferror (stdout))
    {
      fprintf (stderr, "pillarbox: cannot write the output: %s\n", g_strerror (errno));
      return CLI_EXIT_FAILED;
    }
  return status;
}

int
main (int argc, char **argv)
{
  Options opts = { 0 };
  GError *error = NULL;
  JsonNode *reply = NULL;
  char *input = NULL;
  gboolean reads_input = FALSE, confirm = FALSE;
  Link link = { .fd = -1, .in = NULL, .timeout = 0 };
  int status;

  parse_options (&opts, argc, argv);

  if (opts.help)
    {
      status = run_help (&opts);
      g_free (opts.socket_path);
      g_free (opts.args);
      return finish (status);
    }

  if (!link_open (&link, opts.socket_path, opts.timeout, &error))
    goto failed;

  /* A second round trip rather than a cached list: the daemon's commands
   * change with its modules, and only it knows which read input. */
  if (strcmp (opts.command, "help") != 0)
    {
      query_input_needs (&link, opts.command, opts.args, &reads_input, &confirm, &error);
      if (error != NULL)
        goto failed;
    }
  if (reads_input)
    {
      input = read_input (confirm, &error);
      if (input == NULL)
        goto failed;
    }

  reply = link_call (&link, opts.command, opts.args, input, &error);
  wipe_free (input);
  input = NULL;
  if (reply == NULL)
    goto failed;

  status = print_reply (&opts, reply);
  json_node_unref (reply);
  link_close (&link);
  g_free (opts.socket_path);
  g_free (opts.args);
  return finish (status);

failed:
  wipe_free (input);
  if (link.in != NULL)
    link_close (&link);
  fprintf (stderr, "pillarbox: %s\n", error->message);
  status = error->domain == CLI_ERROR ? error->code : CLI_EXIT_UNREACHABLE;
  g_error_free (error);
  g_free (opts.socket_path);
  g_free (opts.args);
  return finish (status);
}
