/* SPDX-License-Identifier: MIT */
/* Typed settings: turning a configuration group into a module's immutable struct. */
#ifndef PILLARBOX_SETTINGS_H
#define PILLARBOX_SETTINGS_H

#include "conf.h"

G_BEGIN_DECLS

/* A settings table as the core reads it: entries may be larger than the
 * core's PbSetting (a newer minor) but never smaller than ABI 1.0's. */
typedef struct {
  const PbSetting *entries;
  gsize entry_size;
  gsize config_size;
  PbConfigCheckFunc check;
} PbSettingsTable;

PB_PRIVATE const PbSetting *pb_settings_table_get (const PbSettingsTable *table, guint i);

/* Parses one value into FIELD (which must be zeroed or hold a previous
 * value to be freed). On failure returns FALSE with a message that does
 * not repeat the key ("'12x' is not an integer"). */
PB_PRIVATE gboolean pb_setting_parse (const PbSetting *setting, const char *text, const char *conf_dir,
                                      void *field, char **message);
PB_PRIVATE void pb_setting_clear (const PbSetting *setting, void *field);

/* Fills a new struct from GROUP (nullable: defaults only). Unknown keys,
 * bad values and missing required keys go to DIAG with FILE:LINE; WHERE
 * names the group for messages without a line ("[module spf]").
 * Returns NULL when anything was wrong. */
PB_PRIVATE void *pb_settings_parse_group (const PbSettingsTable *table, PbConfGroup *group,
                                          const char *conf_dir, const char *where, PbDiag *diag);
PB_PRIVATE void pb_settings_free (const PbSettingsTable *table, void *config);

/* Renders a value back to text ("30s", "10M", "a, b"), for status and docs. */
PB_PRIVATE char *pb_setting_format (const PbSetting *setting, const void *field);

/* Human form of a duration in milliseconds ("1h", "250ms"). */
PB_PRIVATE char *pb_format_duration (gint64 ms);

G_END_DECLS

#endif /* PILLARBOX_SETTINGS_H */
