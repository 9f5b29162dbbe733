/* SPDX-License-Identifier: MIT */
/* The control socket: JSON-lines requests from `pillarbox`, dispatched to registered commands. */

/* Protocol, one request per line and one response line per request:
 *
 *   {"command": "status", "args": ["..."], "input": "optional text"}
 *   {"ok": true, "text": "...", "data": <JSON or null>}
 *   {"ok": false, "error": "one-line message"}
 *
 * A connection carries any number of requests in sequence but only one is
 * in flight at a time: the next line is read only after the previous
 * answer has been written out. That bounds what one client can make the
 * daemon hold (one request, one response, at most one line of input)
 * while the sockets stay non-blocking on the main loop, so a slow or
 * stuck client never holds up another. The "input" field carries
 * passwords: it is never logged, and the buffers that held it are wiped. */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, SO_PEERCRED */
#endif

#ifndef G_LOG_DOMAIN
#define G_LOG_DOMAIN "pillarbox"
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib.h>
#include <glib-unix.h>
#include <json-glib/json-glib.h>

#include <pillarbox/pillarbox.h>
#include "pb-private.h"

/* The longest request line accepted, without its newline. */
#define CONTROL_MAX_LINE (1024 * 1024)
/* How much one read asks for. */
#define CONTROL_READ_CHUNK (64 * 1024)
/* Connections open at once; more are answered with an error and closed. */
#define CONTROL_MAX_CONNECTIONS 64
/* Connections accepted per wake-up, so a flood cannot starve the loop. */
#define CONTROL_ACCEPT_BATCH 16
/* How long accepting pauses when the process is out of descriptors. */
#define CONTROL_ACCEPT_PAUSE_MS 1000

typedef enum {
  REQUEST_PENDING,
  REQUEST_OK,
  REQUEST_FAILED
} RequestState;

struct _PbControlRequest {
  gint ref_count;
  char **args;              /* never NULL */
  char *input;              /* nullable; wiped when freed */
  RequestState state;
  char *text;
  char *error;
  GVariant *data;           /* sunk */
  void (*done) (PbControlRequest *request, gpointer user_data);
  gpointer done_data;
};

typedef struct _ControlConn ControlConn;

struct _PbControlServer {
  char *path;
  int fd;
  dev_t dev;                /* identity of the socket file we made, so */
  ino_t ino;                /* free never unlinks somebody else's */
  GMainContext *context;     /* the thread-default context at creation */
  GSource *accept_source;   /* NULL while accepting is paused */
  GSource *resume_source;
  GQueue conns;             /* ControlConn *, each holding the list's ref */
  guint next_conn_id;
  PbCommandLookupFunc lookup;
  PbCommandListFunc list;
  gpointer user_data;
};

struct _ControlConn {
  gint ref_count;
  guint id;
  PbControlServer *server;  /* NULL once closed */
  int fd;
  GSource *source;
  gpointer fd_tag;
  GByteArray *in;
  gsize scan_pos;           /* bytes of `in` known to hold no newline */
  GByteArray *out;
  gsize out_pos;            /* bytes of `out` already written */
  PbControlRequest *current; /* the request in flight (a ref), or NULL */
  gboolean eof;             /* the client will send nothing more */
  gboolean close_after_flush;
  gboolean pumping;
  gboolean closed;
};

typedef struct {
  GSource base;
  ControlConn *conn;
} ConnSource;

/* "help" is answered by the server itself, from the list function. */
static const PbCommandEntry help_entry = {
  .spec = {
    .struct_size = sizeof (PbControlCommandSpec),
    .name = "help",
    .summary = "List the commands, or show how to use one",
    .usage = "help [COMMAND]",
    .func = NULL,
    .user_data = NULL,
    .reads_input = FALSE,
  },
  .provider = "core",
};

static void conn_pump (ControlConn *conn);

/* Overwrites memory that held secrets; volatile so it is not optimised away. */
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

/* Valid UTF-8 (so the JSON is valid), and for errors, one line. */
static char *
clean_text (const char *text, gboolean one_line)
{
  char *s = g_utf8_make_valid (text, -1);

  if (one_line)
    {
      for (char *p = s; *p != '\0'; p++)
        if ((guchar) *p < 0x20 || *p == 0x7f)
          *p = ' ';
      g_strchomp (s);
    }
  return s;
}

/* ---- requests ---------------------------------------------------------- */

/* A request is answered on the thread that runs the server's main context
 * (a module with worker threads hands its result back to the loop first):
 * the answer goes straight into the connection's buffers. */

/* Takes ownership of ARGS and INPUT. */
static PbControlRequest *
request_alloc (char **args, char *input)
{
  PbControlRequest *request = g_new0 (PbControlRequest, 1);

  request->ref_count = 1;
  request->args = args != NULL ? args : g_new0 (char *, 1);
  request->input = input;
  request->state = REQUEST_PENDING;
  return request;
}

PbControlRequest *
pb_control_request_new (const char *const *args, const char *input,
                        void (*done) (PbControlRequest *req, gpointer ud),
                        gpointer user_data)
{
  PbControlRequest *request;

  request = request_alloc (g_strdupv ((char **) args), g_strdup (input));
  request->done = done;
  request->done_data = user_data;
  return request;
}

const char *const *
pb_control_request_get_args (PbControlRequest *request)
{
  g_return_val_if_fail (request != NULL, NULL);

  return (const char *const *) request->args;
}

const char *
pb_control_request_get_input (PbControlRequest *request)
{
  g_return_val_if_fail (request != NULL, NULL);

  return request->input;
}

PbControlRequest *
pb_control_request_ref (PbControlRequest *request)
{
  g_return_val_if_fail (request != NULL, NULL);
  g_return_val_if_fail (request->ref_count > 0, NULL);

  g_atomic_int_inc (&request->ref_count);
  return request;
}

void
pb_control_request_unref (PbControlRequest *request)
{
  g_return_if_fail (request != NULL);
  g_return_if_fail (request->ref_count > 0);

  if (!g_atomic_int_dec_and_test (&request->ref_count))
    return;
  g_strfreev (request->args);
  wipe_free (request->input);
  g_free (request->text);
  g_free (request->error);
  if (request->data != NULL)
    g_variant_unref (request->data);
  g_free (request);
}

/* Hands the answer to whoever waits for it, once. */
static void
request_finish (PbControlRequest *request)
{
  void (*done) (PbControlRequest *, gpointer) = request->done;
  gpointer done_data = request->done_data;

  request->done = NULL;
  request->done_data = NULL;
  if (done != NULL)
    {
      pb_control_request_ref (request);
      done (request, done_data);
      pb_control_request_unref (request);
    }
}

void
pb_control_request_reply (PbControlRequest *request, GVariant *data, const char *text)
{
  if (data != NULL)
    g_variant_ref_sink (data);

  if (request == NULL || request->state != REQUEST_PENDING)
    {
      if (request == NULL)
        g_critical ("%s: assertion 'request != NULL' failed", G_STRFUNC);
      else
        g_critical ("%s: the control request was already answered; this reply is ignored", G_STRFUNC);
      if (data != NULL)
        g_variant_unref (data);
      return;
    }

  request->state = REQUEST_OK;
  request->data = data;
  request->text = text != NULL ? clean_text (text, FALSE) : NULL;
  request_finish (request);
}

void
pb_control_request_fail (PbControlRequest *request, const char *format, ...)
{
  va_list ap;
  char *message;

  g_return_if_fail (request != NULL);
  g_return_if_fail (format != NULL);

  if (request->state != REQUEST_PENDING)
    {
      g_critical ("%s: the control request was already answered; this error is ignored", G_STRFUNC);
      return;
    }

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);

  request->state = REQUEST_FAILED;
  request->error = clean_text (message, TRUE);
  g_free (message);
  request_finish (request);
}

gboolean
pb_control_request_is_ok (PbControlRequest *request)
{
  g_return_val_if_fail (request != NULL, FALSE);

  return request->state == REQUEST_OK;
}

const char *
pb_control_request_get_text (PbControlRequest *request)
{
  g_return_val_if_fail (request != NULL, NULL);

  return request->text;
}

const char *
pb_control_request_get_error (PbControlRequest *request)
{
  g_return_val_if_fail (request != NULL, NULL);

  return request->error;
}

GVariant *
pb_control_request_get_data (PbControlRequest *request)
{
  g_return_val_if_fail (request != NULL, NULL);

  return request->data;
}

/* The response line (with its newline) for an answered request. */
static char *
request_to_json_line (PbControlRequest *request)
{
  JsonBuilder *builder = json_builder_new ();
  JsonNode *root;
  char *json, *line;

  json_builder_begin_object (builder);
  json_builder_set_member_name (builder, "ok");
  json_builder_add_boolean_value (builder, request->state == REQUEST_OK);
  if (request->state == REQUEST_OK)
    {
      json_builder_set_member_name (builder, "text");
      json_builder_add_string_value (builder, request->text != NULL ? request->text : "");
      json_builder_set_member_name (builder, "data");
      if (request->data != NULL)
        json_builder_add_value (builder, json_gvariant_serialize (request->data));
      else
        json_builder_add_null_value (builder);
    }
  else
    {
      json_builder_set_member_name (builder, "error");
      json_builder_add_string_value (builder, request->error != NULL ? request->error : "failed");
    }
  json_builder_end_object (builder);

  root = json_builder_get_root (builder);
  json = json_to_string (root, FALSE);
  line = g_strconcat (json, "\n", NULL);
  g_free (json);
  json_node_unref (root);
  g_object_unref (builder);
  return line;
}

/* An error line for a client that has no request object (refusals). */
static char *
error_json_line (const char *message)
{
  PbControlRequest *request = request_alloc (NULL, NULL);
  char *line;

  pb_control_request_fail (request, "%s", message);
  line = request_to_json_line (request);
  pb_control_request_unref (request);
  return line;
}

/* ---- the built-in "help" ---------------------------------------------- */

static gint
compare_entries (gconstpointer a, gconstpointer b)
{
  const PbCommandEntry *ea = *(const PbCommandEntry *const *) a;
  const PbCommandEntry *eb = *(const PbCommandEntry *const *) b;

  return g_strcmp0 (ea->spec.name, eb->spec.name);
}

static const PbCommandEntry *
server_lookup (PbControlServer *server, const char *name)
{
  if (g_strcmp0 (name, "help") == 0)
    return &help_entry;
  if (server->lookup == NULL)
    return NULL;
  return server->lookup (name, server->user_data);
}

/* Every command, "help" included, sorted by name. Element type: const PbCommandEntry *. */
static GPtrArray *
server_list (PbControlServer *server)
{
  GPtrArray *all = g_ptr_array_new ();
  GPtrArray *listed = server->list != NULL ? server->list (server->user_data) : NULL;

  g_ptr_array_add (all, (gpointer) &help_entry);
  for (guint i = 0; listed != NULL && i < listed->len; i++)
    {
      const PbCommandEntry *entry = g_ptr_array_index (listed, i);

      if (entry != NULL && entry->spec.name != NULL && g_strcmp0 (entry->spec.name, "help") != 0)
        g_ptr_array_add (all, (gpointer) entry);
    }
  if (listed != NULL)
    g_ptr_array_unref (listed);
  g_ptr_array_sort (all, compare_entries);
  return all;
}

static GVariant *
entry_to_variant (const PbCommandEntry *entry)
{
  GVariantDict dict;

  g_variant_dict_init (&dict, NULL);
  g_variant_dict_insert (&dict, "name", "s", entry->spec.name != NULL ? entry->spec.name : "");
  g_variant_dict_insert (&dict, "summary", "s", entry->spec.summary != NULL ? entry->spec.summary : "");
  g_variant_dict_insert (&dict, "usage", "s", entry->spec.usage != NULL ? entry->spec.usage : entry->spec.name);
  g_variant_dict_insert (&dict, "provider", "s", entry->provider != NULL ? entry->provider : "core");
  g_variant_dict_insert (&dict, "reads_input", "b", entry->spec.reads_input);
  if (entry->spec.reads_input && entry->spec.input_for != NULL)
    g_variant_dict_insert_value (&dict, "input_for", g_variant_new_strv (entry->spec.input_for, -1));
  return g_variant_dict_end (&dict);
}

/* "usage: pillarbox A\n       pillarbox B\nSUMMARY (...)" for "help NAME". */
static char *
entry_usage_text (const PbCommandEntry *entry)
{
  GString *text = g_string_new (NULL);
  char **alternatives = g_strsplit (entry->spec.usage != NULL ? entry->spec.usage : entry->spec.name, "|", -1);
  const char *provider = entry->provider != NULL ? entry->provider : "core";
  gboolean first = TRUE;

  for (char **alt = alternatives; *alt != NULL; alt++)
    {
      char *s = g_strstrip (*alt);

      if (*s == '\0')
        continue;
      g_string_append_printf (text, "%s pillarbox %s\n", first ? "usage:" : "      ", s);
      first = FALSE;
    }
  g_strfreev (alternatives);
  if (entry->spec.summary != NULL && *entry->spec.summary != '\0')
    g_string_append_printf (text, "%s\n", entry->spec.summary);
  g_string_append_printf (text, "Provided by %s%s.", provider,
                          entry->spec.reads_input ? "; reads standard input (prompts on a terminal)" : "");
  return g_string_free (text, FALSE);
}

static void
control_help (PbControlServer *server, PbControlRequest *request)
{
  const char *const *args = (const char *const *) request->args;

  if (args[0] != NULL && args[1] != NULL)
    {
      pb_control_request_fail (request, "usage: pillarbox %s", help_entry.spec.usage);
      return;
    }

  if (args[0] != NULL)
    {
      const PbCommandEntry *entry = server_lookup (server, args[0]);
      char *text;

      if (entry == NULL)
        {
          pb_control_request_fail (request, "unknown command '%s' (try 'pillarbox help')", args[0]);
          return;
        }
      text = entry_usage_text (entry);
      pb_control_request_reply (request, entry_to_variant (entry), text);
      g_free (text);
      return;
    }

  GPtrArray *all = server_list (server);
  GVariantBuilder builder;
  GString *text = g_string_new ("Commands:\n");
  int width = 4;

  for (guint i = 0; i < all->len; i++)
    {
      const PbCommandEntry *entry = g_ptr_array_index (all, i);
      int len = (int) strlen (entry->spec.name);

      if (len > width && len <= 24)
        width = len;
    }

  g_variant_builder_init (&builder, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < all->len; i++)
    {
      const PbCommandEntry *entry = g_ptr_array_index (all, i);
      const char *provider = entry->provider != NULL ? entry->provider : "core";

      g_variant_builder_add_value (&builder, entry_to_variant (entry));
      g_string_append_printf (text, "  %-*s  %s", width, entry->spec.name,
                              entry->spec.summary != NULL ? entry->spec.summary : "");
      if (g_strcmp0 (provider, "core") != 0)
        g_string_append_printf (text, " [%s]", provider);
      g_string_append_c (text, '\n');
    }
  g_string_append (text, "Run 'pillarbox help COMMAND' to see how to use one.");
  g_ptr_array_unref (all);

  pb_control_request_reply (request, g_variant_builder_end (&builder), text->str);
  g_string_free (text, TRUE);
}

/* ---- connections ------------------------------------------------------- */

static ControlConn *
conn_ref (ControlConn *conn)
{
  conn->ref_count++;
  return conn;
}

static void
conn_unref (ControlConn *conn)
{
  if (--conn->ref_count > 0)
    return;
  g_assert (conn->closed);
  wipe (conn->in->data, conn->in->len);
  g_byte_array_unref (conn->in);
  g_byte_array_unref (conn->out);
  g_free (conn);
}

/* Forgets the request in flight: its answer, whenever it comes, goes nowhere. */
static void
conn_detach_request (ControlConn *conn)
{
  PbControlRequest *request = conn->current;

  if (request == NULL)
    return;
  conn->current = NULL;
  request->done = NULL;
  request->done_data = NULL;
  pb_control_request_unref (request);
}

static void
conn_close (ControlConn *conn)
{
  PbControlServer *server = conn->server;

  if (conn->closed)
    return;
  conn->closed = TRUE;
  conn_detach_request (conn);
  pb_source_clear (&conn->source);
  close (conn->fd);
  conn->fd = -1;
  if (server != NULL)
    g_queue_remove (&server->conns, conn);
  conn->server = NULL;
  g_debug ("control: connection %u closed", conn->id);
  conn_unref (conn); /* the server's */
}

static void
conn_queue (ControlConn *conn, const char *line)
{
  g_byte_array_append (conn->out, (const guint8 *) line, strlen (line));
}

/* Writes what it can. FALSE when it must wait for the socket (or closed it). */
static gboolean
conn_flush (ControlConn *conn)
{
  while (conn->out_pos < conn->out->len)
    {
      ssize_t n = send (conn->fd, conn->out->data + conn->out_pos,
                        conn->out->len - conn->out_pos, MSG_NOSIGNAL | MSG_DONTWAIT);

      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK)
            return FALSE;
          /* The client went away: whatever it asked for is dropped silently. */
          g_debug ("control: connection %u: write: %s", conn->id, g_strerror (errno));
          conn_close (conn);
          return FALSE;
        }
      conn->out_pos += (gsize) n;
    }
  g_byte_array_set_size (conn->out, 0);
  conn->out_pos = 0;
  return TRUE;
}

/* The request in flight was answered (now or later): queue the answer. */
static void
conn_request_done (PbControlRequest *request, gpointer user_data)
{
  ControlConn *conn = user_data;
  char *line;

  g_assert (conn->current == request);
  line = request_to_json_line (request);
  conn_queue (conn, line);
  g_free (line);
  conn_detach_request (conn);
  /* Inside conn_pump (a synchronous answer) this returns at once and the
   * pump goes on; from a later main-loop callback it writes now. */
  conn_ref (conn);
  conn_pump (conn);
  conn_unref (conn);
}

static void
conn_reply_error (ControlConn *conn, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
conn_reply_error (ControlConn *conn, const char *format, ...)
{
  va_list ap;
  char *message, *line;

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);
  line = error_json_line (message);
  conn_queue (conn, line);
  g_free (line);
  g_free (message);
}

/* Parses one request line (without its newline) and starts the command. */
static void
conn_handle_line (ControlConn *conn, char *line, gsize len)
{
  JsonParser *parser;
  JsonNode *root;
  JsonObject *object;
  JsonNode *node;
  GError *error = NULL;
  const char *command;
  char **args = NULL;
  char *input = NULL;
  gsize start = 0;

  if (len > 0 && line[len - 1] == '\r')
    len--;
  while (start < len && g_ascii_isspace (line[start]))
    start++;
  if (start == len)
    return; /* blank lines are not requests */

  if (!g_utf8_validate (line, (gssize) len, NULL))
    {
      conn_reply_error (conn, "malformed request: not valid UTF-8");
      return;
    }

  parser = json_parser_new_immutable ();
  if (!json_parser_load_from_data (parser, line, (gssize) len, &error))
    {
      conn_reply_error (conn, "malformed request: %s", error->message);
      g_error_free (error);
      g_object_unref (parser);
      return;
    }

  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      conn_reply_error (conn, "malformed request: expected a JSON object");
      goto out;
    }
  object = json_node_get_object (root);

  node = json_object_get_member (object, "command");
  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    {
      conn_reply_error (conn, "malformed request: missing \"command\"");
      goto out;
    }
  if (json_node_get_value_type (node) != G_TYPE_STRING
      || *(command = json_node_get_string (node)) == '\0')
    {
      conn_reply_error (conn, "malformed request: \"command\" must be a non-empty string");
      goto out;
    }

  node = json_object_get_member (object, "args");
  if (node != NULL && !JSON_NODE_HOLDS_NULL (node))
    {
      JsonArray *array = JSON_NODE_HOLDS_ARRAY (node) ? json_node_get_array (node) : NULL;
      guint n = array != NULL ? json_array_get_length (array) : 0;

      if (array == NULL)
        {
          conn_reply_error (conn, "malformed request: \"args\" must be an array of strings");
          goto out;
        }
      args = g_new0 (char *, n + 1);
      for (guint i = 0; i < n; i++)
        {
          JsonNode *element = json_array_get_element (array, i);

          if (json_node_get_value_type (element) != G_TYPE_STRING)
            {
              g_strfreev (args);
              args = NULL;
              conn_reply_error (conn, "malformed request: \"args\" must be an array of strings");
              goto out;
            }
          args[i] = g_strdup (json_node_get_string (element));
        }
    }

  node = json_object_get_member (object, "input");
  if (node != NULL && !JSON_NODE_HOLDS_NULL (node))
    {
      if (json_node_get_value_type (node) != G_TYPE_STRING)
        {
          g_strfreev (args);
          args = NULL;
          conn_reply_error (conn, "malformed request: \"input\" must be a string");
          goto out;
        }
      input = g_strdup (json_node_get_string (node));
    }

  {
    PbControlServer *server = conn->server;
    const PbCommandEntry *entry = server_lookup (server, command);
    PbControlRequest *request;

    if (entry == NULL || !pb_command_entry_reads_input (entry, (const char *const *) args))
      {
        /* Only a command that asked for input gets it. */
        wipe_free (input);
        input = NULL;
      }
    request = request_alloc (args, input);
    args = NULL;
    input = NULL;
    request->done = conn_request_done;
    request->done_data = conn;
    conn->current = request;

    if (entry == NULL)
      pb_control_request_fail (request, "unknown command '%s' (try 'pillarbox help')", command);
    else if (entry == &help_entry)
      control_help (server, request);
    else if (entry->spec.func == NULL)
      pb_control_request_fail (request, "command '%s' has no handler", command);
    else
      {
        g_debug ("control: connection %u: command '%s' (%s)", conn->id, command,
                 entry->provider != NULL ? entry->provider : "core");
        /* Our own ref for the call: the handler may stop the server, which
         * drops the connection's. */
        pb_control_request_ref (request);
        entry->spec.func (request, entry->spec.user_data);
        pb_control_request_unref (request);
      }
  }

out:
  g_object_unref (parser);
}

static void
conn_update_events (ControlConn *conn)
{
  GIOCondition events = G_IO_HUP | G_IO_ERR;

  if (conn->out_pos < conn->out->len)
    events |= G_IO_OUT;
  else if (conn->current == NULL && !conn->eof && !conn->close_after_flush)
    events |= G_IO_IN;
  g_source_modify_unix_fd (conn->source, conn->fd_tag, events);
}

/* Takes the first LEN bytes (and the newline after them, if CONSUME_NL) out of the input. */
static void
conn_consume_line (ControlConn *conn, gsize len, gboolean consume_nl)
{
  gsize n = len + (consume_nl ? 1 : 0);

  wipe (conn->in->data, n);
  g_byte_array_remove_range (conn->in, 0, (guint) n);
  conn->scan_pos = 0;
}

/* Moves the connection along as far as it can go without waiting. */
static void
conn_pump (ControlConn *conn)
{
  if (conn->pumping || conn->closed)
    return;
  conn->pumping = TRUE;
  conn_ref (conn);

  while (!conn->closed)
    {
      guint8 *nl;

      if (conn->out_pos < conn->out->len)
        {
          if (!conn_flush (conn))
            break;
          continue;
        }
      if (conn->close_after_flush)
        {
          conn_close (conn);
          break;
        }
      if (conn->current != NULL)
        break;

      nl = memchr (conn->in->data + conn->scan_pos, '\n', conn->in->len - conn->scan_pos);
      if (nl != NULL && (gsize) (nl - conn->in->data) <= CONTROL_MAX_LINE)
        {
          gsize len = (gsize) (nl - conn->in->data);

          *nl = '\0';
          conn_handle_line (conn, (char *) conn->in->data, len);
          if (!conn->closed)
            conn_consume_line (conn, len, TRUE);
          continue;
        }
      if (nl != NULL || conn->in->len > CONTROL_MAX_LINE)
        {
          g_message ("control: connection %u: request line over %d bytes; closing", conn->id, CONTROL_MAX_LINE);
          conn_reply_error (conn, "request line too long (the limit is %d bytes)", CONTROL_MAX_LINE);
          wipe (conn->in->data, conn->in->len);
          g_byte_array_set_size (conn->in, 0);
          conn->scan_pos = 0;
          conn->close_after_flush = TRUE;
          continue;
        }
      conn->scan_pos = conn->in->len;

      if (conn->eof)
        {
          if (conn->in->len > 0)
            {
              /* A last request without its newline. */
              gsize len = conn->in->len;

              g_byte_array_append (conn->in, (const guint8 *) "", 1);
              conn_handle_line (conn, (char *) conn->in->data, len);
              if (!conn->closed)
                conn_consume_line (conn, len, TRUE);
              continue;
            }
          conn->close_after_flush = TRUE;
          continue;
        }
      break;
    }

  if (!conn->closed)
    conn_update_events (conn);
  conn->pumping = FALSE;
  conn_unref (conn);
}

static void
conn_read (ControlConn *conn)
{
  guint old = conn->in->len;
  ssize_t n;

  g_byte_array_set_size (conn->in, old + CONTROL_READ_CHUNK);
  do
    n = recv (conn->fd, conn->in->data + old, CONTROL_READ_CHUNK, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  g_byte_array_set_size (conn->in, old + (n > 0 ? (guint) n : 0));

  if (n == 0)
    conn->eof = TRUE;
  else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    {
      g_debug ("control: connection %u: read: %s", conn->id, g_strerror (errno));
      conn_close (conn);
    }
}

static gboolean
conn_source_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  ControlConn *conn = ((ConnSource *) source)->conn;
  GIOCondition revents = g_source_query_unix_fd (source, conn->fd_tag);

  conn_ref (conn);
  if ((revents & (G_IO_HUP | G_IO_ERR)) && (conn->current != NULL || conn->eof))
    {
      /* Gone while its command runs: the answer will be dropped. */
      conn_close (conn);
    }
  else
    {
      if ((revents & (G_IO_IN | G_IO_HUP | G_IO_ERR)) && conn->current == NULL
          && !conn->eof && !conn->close_after_flush && conn->out_pos >= conn->out->len)
        conn_read (conn);
      conn_pump (conn);
    }
  conn_unref (conn);
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs conn_source_funcs = {
  .dispatch = conn_source_dispatch,
};

static void
conn_new (PbControlServer *server, int fd)
{
  ControlConn *conn = g_new0 (ControlConn, 1);

  conn->ref_count = 1; /* the server's */
  conn->id = ++server->next_conn_id;
  conn->server = server;
  conn->fd = fd;
  conn->in = g_byte_array_new ();
  conn->out = g_byte_array_new ();
  conn->source = g_source_new (&conn_source_funcs, sizeof (ConnSource));
  ((ConnSource *) conn->source)->conn = conn;
  g_source_set_static_name (conn->source, "pillarbox control connection");
  conn->fd_tag = g_source_add_unix_fd (conn->source, fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
  pb_source_attach (conn->source, server->context);
  g_queue_push_tail (&server->conns, conn);
  g_debug ("control: connection %u opened", conn->id);
}

/* ---- the listening socket ---------------------------------------------- */

/* Answers a connection we will not serve, without waiting, and closes it. */
static void
refuse_fd (int fd, const char *message)
{
  char *line = error_json_line (message);

  (void) send (fd, line, strlen (line), MSG_NOSIGNAL | MSG_DONTWAIT);
  g_free (line);
  close (fd);
}

static gboolean control_accept_cb (int fd, GIOCondition condition, gpointer user_data);

static void
control_watch_accept (PbControlServer *server)
{
  server->accept_source = g_unix_fd_source_new (server->fd, G_IO_IN);
  g_source_set_callback (server->accept_source, G_SOURCE_FUNC (control_accept_cb), server, NULL);
  g_source_set_static_name (server->accept_source, "pillarbox control accept");
  pb_source_attach (server->accept_source, server->context);
}

static gboolean
control_resume_accept (gpointer user_data)
{
  PbControlServer *server = user_data;

  g_clear_pointer (&server->resume_source, g_source_unref);
  control_watch_accept (server);
  return G_SOURCE_REMOVE;
}

static gboolean
control_accept_cb (int fd, GIOCondition condition, gpointer user_data)
{
  PbControlServer *server = user_data;

  for (int i = 0; i < CONTROL_ACCEPT_BATCH; i++)
    {
      int cfd = accept4 (server->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
      struct ucred cred;
      socklen_t cred_len = sizeof cred;

      if (cfd < 0)
        {
          if (errno == EINTR || errno == ECONNABORTED)
            continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
          g_warning ("control socket %s: accept: %s", server->path, g_strerror (errno));
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            {
              /* The socket stays readable: pause instead of spinning. */
              g_clear_pointer (&server->accept_source, g_source_unref);
              server->resume_source = g_timeout_source_new (CONTROL_ACCEPT_PAUSE_MS);
              g_source_set_callback (server->resume_source, control_resume_accept, server, NULL);
              pb_source_attach (server->resume_source, server->context);
              return G_SOURCE_REMOVE;
            }
          break;
        }

      /* The socket is 0600, so only our user (or root) can reach it; check
       * anyway in case the file's mode or owner was changed. */
      if (getsockopt (cfd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) == 0
          && cred.uid != 0 && cred.uid != geteuid ())
        {
          g_warning ("control socket %s: refused a connection from uid %u", server->path, (guint) cred.uid);
          refuse_fd (cfd, "permission denied");
          continue;
        }
      if (server->conns.length >= CONTROL_MAX_CONNECTIONS)
        {
          g_warning ("control socket %s: %d connections open; refusing another",
                     server->path, CONTROL_MAX_CONNECTIONS);
          refuse_fd (cfd, "too many control connections; try again later");
          continue;
        }
      conn_new (server, cfd);
    }
  return G_SOURCE_CONTINUE;
}

typedef enum {
  PROBE_ABSENT,
  PROBE_STALE,
  PROBE_LIVE,
  PROBE_FAILED
} ProbeResult;

static gboolean
fill_address (struct sockaddr_un *sa, const char *path, GError **error)
{
  memset (sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (strlen (path) >= sizeof sa->sun_path)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                   "control socket path %s is too long (%zu bytes; the limit is %zu)",
                   path, strlen (path), sizeof sa->sun_path - 1);
      return FALSE;
    }
  strcpy (sa->sun_path, path);
  return TRUE;
}

/* What is at PATH: nothing, a dead socket, a live one. */
static ProbeResult
probe_path (const char *path, GError **error)
{
  struct sockaddr_un sa;
  struct stat st;
  int fd, r, saved;

  if (lstat (path, &st) < 0)
    {
      if (errno == ENOENT)
        return PROBE_ABSENT;
      saved = errno;
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                   "control socket %s: %s", path, g_strerror (saved));
      return PROBE_FAILED;
    }
  if (!S_ISSOCK (st.st_mode))
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                   "control socket %s: the path exists and is not a socket; remove it if it is not needed", path);
      return PROBE_FAILED;
    }

  if (!fill_address (&sa, path, error))
    return PROBE_FAILED;
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    {
      saved = errno;
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "socket: %s", g_strerror (saved));
      return PROBE_FAILED;
    }
  do
    r = connect (fd, (struct sockaddr *) &sa, sizeof sa);
  while (r < 0 && errno == EINTR);
  saved = errno;
  close (fd);

  if (r == 0 || saved == EAGAIN || saved == EWOULDBLOCK)
    return PROBE_LIVE; /* EAGAIN: alive, its backlog is full */
  if (saved == ECONNREFUSED)
    return PROBE_STALE;
  if (saved == ENOENT)
    return PROBE_ABSENT;
  g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
               "cannot check control socket %s: %s", path, g_strerror (saved));
  return PROBE_FAILED;
}

/* Binds and listens at a temporary name in PATH's directory, made 0600
 * before listen(), then links it into place: nobody can connect before
 * the mode is right, and link() refuses to replace a socket that appeared
 * meanwhile. Sets *EXISTS when PATH was taken under our feet. */
static int
listen_at (const char *path, gboolean *exists, GError **error)
{
  struct sockaddr_un sa;
  char *dir = g_path_get_dirname (path);
  char *tmp = NULL;
  const char *bound;
  int fd, saved;

  *exists = FALSE;
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    {
      saved = errno;
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME, "socket: %s", g_strerror (saved));
      g_free (dir);
      return -1;
    }

  for (int attempt = 0; attempt < 8; attempt++)
    {
      tmp = g_strdup_printf ("%s/.control-%08x.tmp", dir, g_random_int ());
      if (strlen (tmp) >= sizeof sa.sun_path)
        {
          /* No room for a temporary name: bind in place (still 0600 before listen). */
          g_clear_pointer (&tmp, g_free);
          break;
        }
      fill_address (&sa, tmp, NULL);
      if (bind (fd, (struct sockaddr *) &sa, sizeof sa) == 0)
        break;
      saved = errno;
      g_clear_pointer (&tmp, g_free);
      if (saved != EADDRINUSE)
        {
          g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                       "cannot create control socket in %s: %s", dir, g_strerror (saved));
          goto fail;
        }
    }

  if (tmp == NULL)
    {
      if (!fill_address (&sa, path, error))
        goto fail;
      if (bind (fd, (struct sockaddr *) &sa, sizeof sa) < 0)
        {
          saved = errno;
          *exists = saved == EADDRINUSE;
          g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                       "cannot create control socket %s: %s", path, g_strerror (saved));
          goto fail;
        }
    }
  bound = tmp != NULL ? tmp : path;

  if (chmod (bound, 0600) < 0 || listen (fd, SOMAXCONN) < 0)
    {
      saved = errno;
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                   "cannot set up control socket %s: %s", path, g_strerror (saved));
      unlink (bound);
      goto fail;
    }

  if (tmp != NULL)
    {
      if (link (tmp, path) < 0)
        {
          saved = errno;
          if (saved == EEXIST)
            {
              *exists = TRUE;
              g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                           "cannot create control socket %s: %s", path, g_strerror (saved));
              unlink (tmp);
              goto fail;
            }
          /* A file system without hard links: rename instead. */
          if (rename (tmp, path) < 0)
            {
              saved = errno;
              g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                           "cannot create control socket %s: %s", path, g_strerror (saved));
              unlink (tmp);
              goto fail;
            }
        }
      else
        unlink (tmp);
    }

  g_free (tmp);
  g_free (dir);
  return fd;

fail:
  g_free (tmp);
  g_free (dir);
  close (fd);
  return -1;
}

PbControlServer *
pb_control_server_new (const char *path,
                       PbCommandLookupFunc lookup,
                       PbCommandListFunc list,
                       gpointer user_data,
                       GError **error)
{
  PbControlServer *server;
  struct sockaddr_un sa;
  struct stat st;
  int fd = -1;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (!fill_address (&sa, path, error))
    return NULL;

  for (int attempt = 0; fd < 0; attempt++)
    {
      gboolean exists = FALSE;
      GError *local_error = NULL;

      switch (probe_path (path, error))
        {
        case PROBE_LIVE:
          g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                       "another pillarboxd is already running (control socket %s is live)", path);
          return NULL;
        case PROBE_FAILED:
          return NULL;
        case PROBE_STALE:
          if (unlink (path) < 0 && errno != ENOENT)
            {
              int saved = errno;

              g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_RUNTIME,
                           "cannot remove stale control socket %s: %s", path, g_strerror (saved));
              return NULL;
            }
          g_message ("control: removed stale socket %s", path);
          break;
        case PROBE_ABSENT:
          break;
        }

      fd = listen_at (path, &exists, &local_error);
      if (fd < 0)
        {
          /* Somebody made the path meanwhile: look again, once. */
          if (exists && attempt == 0)
            {
              g_error_free (local_error);
              continue;
            }
          g_propagate_error (error, local_error);
          return NULL;
        }
    }

  server = g_new0 (PbControlServer, 1);
  server->path = g_strdup (path);
  server->fd = fd;
  server->lookup = lookup;
  server->list = list;
  server->user_data = user_data;
  g_queue_init (&server->conns);
  if (stat (path, &st) == 0)
    {
      server->dev = st.st_dev;
      server->ino = st.st_ino;
    }
  server->context = g_main_context_ref_thread_default ();
  control_watch_accept (server);
  g_debug ("control: listening on %s", path);
  return server;
}

void
pb_control_server_free (PbControlServer *server)
{
  struct stat st;

  if (server == NULL)
    return;

  pb_source_clear (&server->accept_source);
  pb_source_clear (&server->resume_source);

  while (server->conns.length > 0)
    {
      ControlConn *conn = conn_ref (g_queue_peek_head (&server->conns));

      if (conn->current != NULL)
        {
          /* Tell the waiting client, if its socket takes it without waiting. */
          conn_detach_request (conn);
          conn_reply_error (conn, "pillarboxd is shutting down; the command's outcome is unknown");
          conn_flush (conn);
        }
      conn_close (conn);
      conn_unref (conn);
    }

  /* Unlink only the socket we made, not one a newer daemon put there. */
  if (lstat (server->path, &st) == 0 && st.st_dev == server->dev && st.st_ino == server->ino)
    unlink (server->path);
  close (server->fd);
  g_debug ("control: stopped listening on %s", server->path);
  g_main_context_unref (server->context);
  g_free (server->path);
  g_free (server);
}

gboolean
pb_command_entry_reads_input (const PbCommandEntry *entry, const char *const *args)
{
  if (!entry->spec.reads_input)
    return FALSE;
  if (entry->spec.input_for == NULL)
    return TRUE;
  return args != NULL && args[0] != NULL && g_strv_contains (entry->spec.input_for, args[0]);
}
