/* SPDX-License-Identifier: MIT */
/* Reading conf.d: GKeyFile-syntax files with every group and key tied to FILE:LINE. */
#ifndef PILLARBOX_CONF_H
#define PILLARBOX_CONF_H

#include "pb-private.h"

G_BEGIN_DECLS

/* Diagnostics: every configuration problem found, one line each, so
 * --check-config can print them all rather than stopping at the first. */
typedef struct {
  GPtrArray *lines;   /* char *, "FILE:LINE: message" */
} PbDiag;

PB_PRIVATE PbDiag *pb_diag_new (void);
PB_PRIVATE void pb_diag_free (PbDiag *diag);
/* FILE may be NULL (no location); LINE 0 means the whole file. */
PB_PRIVATE void pb_diag_add (PbDiag *diag, const char *file, guint line, const char *format, ...) G_GNUC_PRINTF (4, 5);
PB_PRIVATE gboolean pb_diag_is_empty (const PbDiag *diag);
/* All lines joined with newlines, or NULL when empty. */
PB_PRIVATE char *pb_diag_join (const PbDiag *diag);

typedef struct {
  char *key;
  char *value;
  const char *file;   /* owned by the PbConfSource */
  guint line;
  gboolean used;      /* consumed by a settings table */
} PbConfEntry;

typedef struct {
  char *name;         /* as written between the brackets, trimmed */
  const char *file;
  guint line;
  GPtrArray *entries; /* PbConfEntry *, in file order */
} PbConfGroup;

typedef struct {
  char *dir;          /* the configuration directory (absolute) */
  GPtrArray *files;   /* char *, the files read, in order */
  GPtrArray *groups;  /* PbConfGroup *, in reading order */
} PbConfSource;

/* Reads DIR/ *.conf in name order. Problems go to DIAG; the result holds
 * whatever could be read (NULL only when DIR itself is unreadable). */
PB_PRIVATE PbConfSource *pb_conf_source_load_dir (const char *dir, PbDiag *diag);
/* Parses one file's text (tests, and the reader above). */
PB_PRIVATE void pb_conf_source_parse (PbConfSource *source, const char *file, const char *data, gsize len, PbDiag *diag);
PB_PRIVATE PbConfSource *pb_conf_source_new (const char *dir);
PB_PRIVATE void pb_conf_source_free (PbConfSource *source);

/* Applies "-o GROUP.KEY=VALUE": GROUP is "core" or a module name. */
PB_PRIVATE gboolean pb_conf_source_apply_override (PbConfSource *source, const char *spec, PbDiag *diag);

PB_PRIVATE PbConfGroup *pb_conf_source_find_group (PbConfSource *source, const char *name);
PB_PRIVATE PbConfEntry *pb_conf_group_find (PbConfGroup *group, const char *key);

/* Splits a group name "module smtp-server" into KIND and NAME; a single word gives NAME NULL. */
PB_PRIVATE void pb_conf_group_split_name (const PbConfGroup *group, char **kind, char **name);

G_END_DECLS

#endif /* PILLARBOX_CONF_H */
