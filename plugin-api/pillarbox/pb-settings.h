/* SPDX-License-Identifier: MIT */
/* Typed settings tables: a module declares its keys, the core parses and checks them. */
#ifndef PILLARBOX_PB_SETTINGS_H
#define PILLARBOX_PB_SETTINGS_H

#include <pillarbox/pb-abi.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-settings
 * @title: Settings tables
 *
 * A module never parses configuration files. It declares a table of
 * #PbSetting entries describing a plain C struct; the core reads the
 * module's `[module NAME]` group, converts every value to its type,
 * rejects unknown keys and bad values with `FILE:LINE:`, applies defaults
 * (written as text and parsed by the same code, so a default is always a
 * valid value and the documentation shows it verbatim), runs the module's
 * optional check function, and hands the module an immutable struct.
 *
 * The same tables generate the pillarbox.conf(5) manual page.
 *
 * |[<!-- language="C" -->
 * typedef struct {
 *   char   *greeting;
 *   gint64  max_lines;
 *   gboolean verbose;
 * } EchoConfig;
 *
 * static const PbSetting echo_settings[] = {
 *   PB_SETTING_STRING (EchoConfig, greeting, "greeting", "hello",
 *                      "Text sent when a client connects."),
 *   PB_SETTING_INT (EchoConfig, max_lines, "max-lines", "100", 1, 10000,
 *                   "Lines echoed before the server hangs up."),
 *   PB_SETTING_BOOL (EchoConfig, verbose, "verbose", "false",
 *                    "Log every line."),
 *   PB_SETTINGS_END
 * };
 * ]|
 */

/**
 * PbSettingType:
 * @PB_SETTING_TYPE_BOOL: `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`); stored as #gboolean
 * @PB_SETTING_TYPE_INT: a decimal integer within [min, max]; stored as #gint64
 * @PB_SETTING_TYPE_STRING: any text; stored as `char *` (never %NULL; empty when unset)
 * @PB_SETTING_TYPE_STRING_LIST: comma-separated items, blanks trimmed, empty items
 *   dropped; stored as a %NULL-terminated `char **` (never %NULL)
 * @PB_SETTING_TYPE_ENUM: one of the words in `choices`; stored as #gint, the index into `choices`
 * @PB_SETTING_TYPE_DURATION: a number with a unit `ms`, `s`, `m`, `h` or `d`
 *   (a bare number means seconds), within [min, max] milliseconds; stored as #gint64 milliseconds
 * @PB_SETTING_TYPE_SIZE: a number with an optional unit `K`, `M`, `G` (powers of 1024)
 *   within [min, max] bytes; stored as #gint64 bytes
 * @PB_SETTING_TYPE_ENDPOINTS: comma-separated `HOST:PORT` or `[IPv6]:PORT`
 *   items; stored as a %NULL-terminated `char **` in the canonical form `HOST:PORT`
 * @PB_SETTING_TYPE_ADDRESS_LIST: comma-separated IP addresses, CIDR prefixes
 *   (`10.0.0.0/8`, `2001:db8::/32`) or wildcards (`192.168.1.*`); stored as
 *   a %NULL-terminated `char **` of CIDR prefixes (wildcards converted)
 * @PB_SETTING_TYPE_PATH: a file name; relative names are resolved against
 *   the configuration directory; stored as `char *` (empty when unset)
 *
 * The value types a setting can have.
 *
 * Since: ABI 1.0
 */
typedef enum {
  PB_SETTING_TYPE_BOOL = 1,
  PB_SETTING_TYPE_INT,
  PB_SETTING_TYPE_STRING,
  PB_SETTING_TYPE_STRING_LIST,
  PB_SETTING_TYPE_ENUM,
  PB_SETTING_TYPE_DURATION,
  PB_SETTING_TYPE_SIZE,
  PB_SETTING_TYPE_ENDPOINTS,
  PB_SETTING_TYPE_ADDRESS_LIST,
  PB_SETTING_TYPE_PATH
} PbSettingType;

/**
 * PbSetting:
 * @key: the key as written in the configuration file (kebab-case); %NULL ends a table
 * @type: the value type
 * @offset: where the value is stored in the module's config struct
 * @default_value: the default, written as in a configuration file; %NULL means
 *   the key is required
 * @min: smallest allowed value for INT, DURATION (ms) and SIZE (bytes)
 * @max: largest allowed value for INT, DURATION (ms) and SIZE (bytes)
 * @choices: (nullable): %NULL-terminated words for ENUM
 * @doc: one or more sentences for the manual page
 *
 * One entry of a settings table. Tables end with %PB_SETTINGS_END. The
 * size of an entry is recorded in the module descriptor
 * (`setting_entry_size`), so entries may grow in later minors.
 *
 * Since: ABI 1.0
 */
typedef struct {
  const char *key;
  PbSettingType type;
  gsize offset;
  const char *default_value;
  gint64 min;
  gint64 max;
  const char *const *choices;
  const char *doc;
} PbSetting;

/**
 * PB_SETTINGS_END:
 *
 * Ends a settings table.
 *
 * Since: ABI 1.0
 */
#define PB_SETTINGS_END { NULL, (PbSettingType) 0, 0, NULL, 0, 0, NULL, NULL }

/**
 * PB_SETTING_BOOL:
 * @st: the config struct type
 * @field: its #gboolean member
 * @key: the key
 * @def: the default as text
 * @doc: documentation
 *
 * A boolean setting.
 *
 * Since: ABI 1.0
 */
#define PB_SETTING_BOOL(st, field, key, def, doc) \
  { key, PB_SETTING_TYPE_BOOL, G_STRUCT_OFFSET (st, field), def, 0, 1, NULL, doc }

/**
 * PB_SETTING_INT:
 * @st: the config struct type
 * @field: its #gint64 member
 * @key: the key
 * @def: the default as text
 * @lo: the smallest allowed value
 * @hi: the largest allowed value
 * @doc: documentation
 *
 * An integer setting.
 *
 * Since: ABI 1.0
 */
#define PB_SETTING_INT(st, field, key, def, lo, hi, doc) \
  { key, PB_SETTING_TYPE_INT, G_STRUCT_OFFSET (st, field), def, lo, hi, NULL, doc }

/**
 * PB_SETTING_STRING:
 * @st: the config struct type
 * @field: its `char *` member
 * @key: the key
 * @def: the default
 * @doc: documentation
 *
 * A text setting.
 *
 * Since: ABI 1.0
 */
#define PB_SETTING_STRING(st, field, key, def, doc) \
  { key, PB_SETTING_TYPE_STRING, G_STRUCT_OFFSET (st, field), def, 0, 0, NULL, doc }

/**
 * PB_SETTING_STRING_LIST:
 * @st: the config struct type
 * @field: its `char **` member
 * @key: the key
 * @def: the default, comma-separated
 * @doc: documentation
 *
 * A list of words.
 *
 * Since: ABI 1.0
 */
#define PB_SETTING_STRING_LIST(st, field, key, def, doc) \
  { key, PB_SETTING_TYPE_STRING_LIST, G_STRUCT_OFFSET (st, field), def, 0, 0, NULL, doc }

/**
 * PB_SETTING_ENUM:
 * @st: the config struct type
 * @field: its #gint member
 * @key: the key
 * @def: the default word
 * @words: a %NULL-terminated `const char *const[]`
 * @doc: documentation
 *
 * One word out of a fixed set; the struct receives its index.
 *
 * Since: ABI 1.0
 */
#define PB_SETTING_ENUM(st, field, key, def, words, doc) \
  { key, PB_SETTING_TYPE_ENUM, G_STRUCT_OFFSET (st, field), def, 0, 0, words, doc }

/**
 * PB_SETTING_DURATION:
 * @st: the config struct type
 * @field: its #gint64 member (milliseconds)
 * @key: the key
 * @def: the default, e.g. "5m"
 * @lo: the shortest allowed, in milliseconds
 * @hi: the longest allowed, in milliseconds
 * @doc: documentation
 *
 * A duration.
 *
 * Since: ABI 1.0
 */
#define PB_SETTING_DURATION(st, field, key, def, lo, hi, doc) \
  { key, PB_SETTING_TYPE_DURATION, G_STRUCT_OFFSET (st, field), def, lo, hi, NULL, doc }

/**
 * PB_SETTING_SIZE:
 * @st: the config struct type
 * @field: its #gint64 member (bytes)
 * @key: the key
 * @def: the default, e.g. "10M"
 * @lo: the smallest allowed, in bytes
 * @hi: the largest allowed, in bytes
 * @doc: documentation
 *
 * A size in bytes.
 *
 * Since: ABI 1.0
 */
#define PB_SETTING_SIZE(st, field, key, def, lo, hi, doc) \
  { key, PB_SETTING_TYPE_SIZE, G_STRUCT_OFFSET (st, field), def, lo, hi, NULL, doc }

/**
 * PB_SETTING_ENDPOINTS:
 * @st: the config struct type
 * @field: its `char **` member
 * @key: the key
 * @def: the default, e.g. "127.0.0.1:2525"
 * @doc: documentation
 *
 * A list of `HOST:PORT` endpoints, checked at configuration time.
 *
 * Since: ABI 1.0
 */
#define PB_SETTING_ENDPOINTS(st, field, key, def, doc) \
  { key, PB_SETTING_TYPE_ENDPOINTS, G_STRUCT_OFFSET (st, field), def, 0, 0, NULL, doc }

/**
 * PB_SETTING_ADDRESS_LIST:
 * @st: the config struct type
 * @field: its `char **` member
 * @key: the key
 * @def: the default, e.g. "127.0.0.0/8, ::1"
 * @doc: documentation
 *
 * A list of IP addresses, prefixes or wildcards, checked at configuration
 * time and stored as CIDR prefixes.
 *
 * Since: ABI 1.0
 */
#define PB_SETTING_ADDRESS_LIST(st, field, key, def, doc) \
  { key, PB_SETTING_TYPE_ADDRESS_LIST, G_STRUCT_OFFSET (st, field), def, 0, 0, NULL, doc }

/**
 * PB_SETTING_PATH:
 * @st: the config struct type
 * @field: its `char *` member
 * @key: the key
 * @def: the default
 * @doc: documentation
 *
 * A file name, made absolute against the configuration directory.
 *
 * Since: ABI 1.0
 */
#define PB_SETTING_PATH(st, field, key, def, doc) \
  { key, PB_SETTING_TYPE_PATH, G_STRUCT_OFFSET (st, field), def, 0, 0, NULL, doc }

/**
 * PbConfigCheckFunc:
 * @config: the parsed struct, every field set
 * @error: where to report the problem
 *
 * A module's own check of a parsed configuration, for rules that cross
 * keys ("max-a must not exceed max-b"). Runs at start, on reload and for
 * `--check-config`. It must not touch the network or files other than
 * reading them.
 *
 * Returns: %TRUE when the configuration is acceptable
 *
 * Since: ABI 1.0
 */
typedef gboolean (*PbConfigCheckFunc) (const void *config, GError **error);

/**
 * PbSectionInfo:
 * @struct_size: sizeof (PbSectionInfo)
 * @kind: the first word of the group name (`[KIND NAME]`), e.g. "collector"
 * @summary: one line for the manual page
 * @settings: the table for one section
 * @config_size: sizeof the struct @settings describe
 * @check: (nullable): a check for one section
 *
 * A kind of named, repeatable configuration group that a module owns, for
 * things an administrator lists several of (remote mailboxes to collect,
 * relay servers, connections). `[collector isp]` and `[collector office]`
 * each become a struct the module finds with pb_module_get_sections().
 *
 * Since: ABI 1.0
 */
typedef struct {
  gsize struct_size;
  const char *kind;
  const char *summary;
  const PbSetting *settings;
  gsize config_size;
  PbConfigCheckFunc check;
} PbSectionInfo;

PB_END_DECLS

#endif /* PILLARBOX_PB_SETTINGS_H */
