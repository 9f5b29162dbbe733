/* SPDX-License-Identifier: MIT */
/* The settings reference (pillarboxd --print-settings): every key of the core and of the modules. */
#ifndef PILLARBOX_SETTINGS_DOC_H
#define PILLARBOX_SETTINGS_DOC_H

#include "pb-private.h"

G_BEGIN_DECLS

typedef enum {
  PB_SETTINGS_DOC_TEXT,
  PB_SETTINGS_DOC_MAN,
  PB_SETTINGS_DOC_JSON
} PbSettingsDocFormat;

/* "text", "man" or "json"; NULL means text. */
PB_PRIVATE gboolean pb_settings_doc_parse_format (const char *word, PbSettingsDocFormat *format);

/* Appends to OUT the core's groups, then those of each module in name
 * order: MODULES (nullable) names them, otherwise every NAME.so found in
 * MODULE_DIR (or its .libs). Modules are opened with the loader, never
 * initialised. Fails, with every module that could not be opened, when
 * any could not. */
PB_PRIVATE gboolean pb_settings_doc_write (const char *module_dir, const char *const *modules,
                                           PbSettingsDocFormat format, GString *out, GError **error);

G_END_DECLS

#endif /* PILLARBOX_SETTINGS_DOC_H */
