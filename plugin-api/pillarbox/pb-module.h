/* SPDX-License-Identifier: MIT */
/* The module descriptor, PB_MODULE_DEFINE, and the module handle a module registers through. */
#ifndef PILLARBOX_PB_MODULE_H
#define PILLARBOX_PB_MODULE_H

#include <pillarbox/pb-abi.h>
#include <pillarbox/pb-settings.h>

PB_BEGIN_DECLS

/**
 * SECTION:pb-module
 * @title: Modules
 *
 * A module is a shared object that exports exactly one symbol,
 * %PB_MODULE_SYMBOL, a const #PbModuleInfo written by PB_MODULE_DEFINE().
 *
 * Life of a module instance, one per configuration generation:
 *
 * 1. The core reads the descriptor, checks magic and ABI versions, parses
 *    the module's group with its settings table and runs its check.
 * 2. `init` is called on the loop thread, before privileges are dropped
 *    and before any thread starts. It registers what the module provides
 *    (listeners, hooks, commands, a storage backend, transports,
 *    collectors) through the `pb_module_add_*` functions. It must not
 *    open files for writing, start threads or touch the network.
 *    Registration closes when `init` returns.
 * 3. `start` (optional) runs once listeners are bound and privileges are
 *    dropped: open databases, start threads, arm timers here.
 * 4. `fini` runs when the instance is retired: at shutdown, or after a
 *    reload once the last session of the old generation has ended.
 *
 * A reload (SIGHUP) builds a whole new generation next to the running one;
 * if anything in it fails, it is discarded and the running generation
 * stays. A module must therefore keep its state in its instance (see
 * pb_module_set_data()), never in global variables: two instances of the
 * same module can be alive at once during a reload.
 */

/**
 * PbModule:
 *
 * An opaque handle on one instance of a loaded module. It is the module's
 * way into the core: every registration and core service takes it.
 *
 * Since: ABI 1.0
 */
typedef struct _PbModule PbModule;

/**
 * PbModuleInitFunc:
 * @module: the instance being initialised
 * @config: the module's parsed settings struct (immutable; owned by the
 *   core; valid until `fini` returns), or %NULL if the module has no settings
 * @error: where to report failure
 *
 * Registers what the module provides.
 *
 * Returns: %TRUE on success; on %FALSE the core reports @error as
 *   "module NAME: init failed: ..." and refuses the configuration.
 *
 * Since: ABI 1.0
 */
typedef gboolean (*PbModuleInitFunc) (PbModule *module, const void *config, GError **error);

/**
 * PbModuleStartFunc:
 * @module: the instance
 * @error: where to report failure
 *
 * Called after listeners are bound and privileges dropped.
 *
 * Returns: %TRUE on success
 *
 * Since: ABI 1.0
 */
typedef gboolean (*PbModuleStartFunc) (PbModule *module, GError **error);

/**
 * PbModuleFiniFunc:
 * @module: the instance
 *
 * Releases what the module holds. Registrations are removed by the core.
 *
 * Since: ABI 1.0
 */
typedef void (*PbModuleFiniFunc) (PbModule *module);

/**
 * PbModuleInfo:
 * @magic: %PB_MODULE_MAGIC
 * @abi_major: %PB_ABI_MAJOR the module was built with
 * @abi_minor: %PB_ABI_MINOR the module was built with
 * @struct_size: sizeof (PbModuleInfo) the module was built with
 * @name: the module's name; must equal its file name and its conf.d group
 * @version: the module's own version
 * @summary: one line saying what it does
 * @init: registers what the module provides
 * @fini: (nullable): releases it
 * @start: (nullable): opens files and starts threads after privileges are dropped
 * @settings: (nullable): the settings table of the `[module NAME]` group
 * @setting_entry_size: sizeof (PbSetting) the module was built with
 * @config_size: sizeof the struct @settings describe
 * @check: (nullable): a check across keys
 * @sections: (nullable): a %NULL-terminated array of the repeatable groups the module owns
 *
 * The descriptor every module exports. Write it with PB_MODULE_DEFINE().
 * Fields are only ever appended; the core reads a field only when
 * @struct_size covers it.
 *
 * Since: ABI 1.0
 */
typedef struct {
  guint32 magic;
  guint16 abi_major;
  guint16 abi_minor;
  gsize struct_size;
  const char *name;
  const char *version;
  const char *summary;
  PbModuleInitFunc init;
  PbModuleFiniFunc fini;
  PbModuleStartFunc start;
  const PbSetting *settings;
  gsize setting_entry_size;
  gsize config_size;
  PbConfigCheckFunc check;
  const PbSectionInfo *const *sections;
} PbModuleInfo;

/**
 * PB_MODULE_EXPORT:
 *
 * Gives the descriptor default visibility when the module is built with
 * `-fvisibility=hidden` (as it should be).
 *
 * Since: ABI 1.0
 */
#if defined(__GNUC__)
#define PB_MODULE_EXPORT __attribute__ ((visibility ("default"))) __attribute__ ((used))
#else
#define PB_MODULE_EXPORT
#endif

/**
 * PB_MODULE_DEFINE:
 * @...: designated initialisers for the fields of #PbModuleInfo other than
 *   magic, versions, struct_size and setting_entry_size
 *
 * Defines the module's descriptor:
 *
 * |[<!-- language="C" -->
 * PB_MODULE_DEFINE (
 *   .name    = "echo",
 *   .version = "1.0",
 *   .summary = "Echoes lines back",
 *   .init    = echo_init,
 *   .fini    = echo_fini,
 *   .settings = echo_settings,
 *   .config_size = sizeof (EchoConfig));
 * ]|
 *
 * In C++ (C++20 designated initialisers) the fields must be given in
 * declaration order.
 *
 * Since: ABI 1.0
 */
#ifdef __cplusplus
static inline PbModuleInfo
pb_module_info_fill_ (PbModuleInfo info)
{
  info.setting_entry_size = sizeof (PbSetting);
  return info;
}
#define PB_MODULE_DEFINE(...)                                          \
  extern "C" PB_MODULE_EXPORT const PbModuleInfo                       \
      pillarbox_module_info = pb_module_info_fill_ (PbModuleInfo {     \
        .magic = PB_MODULE_MAGIC,                                      \
        .abi_major = PB_ABI_MAJOR,                                     \
        .abi_minor = PB_ABI_MINOR,                                     \
        .struct_size = sizeof (PbModuleInfo),                          \
        __VA_ARGS__                                                    \
      })
#else
#define PB_MODULE_DEFINE(...)                                          \
  PB_MODULE_EXPORT const PbModuleInfo                                  \
      pillarbox_module_info = {                                        \
        .magic = PB_MODULE_MAGIC,                                      \
        .abi_major = PB_ABI_MAJOR,                                     \
        .abi_minor = PB_ABI_MINOR,                                     \
        .struct_size = sizeof (PbModuleInfo),                          \
        .setting_entry_size = sizeof (PbSetting),                      \
        __VA_ARGS__                                                    \
      }
#endif

/**
 * pb_module_get_name:
 * @module: a module instance
 *
 * Returns: (transfer none): the module's name
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_module_get_name (PbModule *module);

/**
 * pb_module_get_config:
 * @module: a module instance
 *
 * Returns: (transfer none) (nullable): the parsed settings struct also passed to `init`
 *
 * Since: ABI 1.0
 */
PB_API const void *pb_module_get_config (PbModule *module);

/**
 * pb_module_get_sections:
 * @module: a module instance
 * @kind: a section kind the module declared
 * @names: (out) (optional) (transfer none): the section names, %NULL-terminated, in file order
 *
 * The parsed structs of every `[KIND NAME]` group, in the order they
 * appear in the configuration.
 *
 * Returns: (transfer none): a %NULL-terminated array of config structs
 *   (empty when there are none); valid for the life of the instance
 *
 * Since: ABI 1.0
 */
PB_API const void *const *pb_module_get_sections (PbModule *module,
                                                  const char *kind,
                                                  const char *const **names);

/**
 * pb_module_set_data:
 * @module: a module instance
 * @data: (nullable): the instance's private state
 * @destroy: (nullable): called on @data after `fini`
 *
 * Attaches the module's state to its instance.
 *
 * Since: ABI 1.0
 */
PB_API void pb_module_set_data (PbModule *module, gpointer data, GDestroyNotify destroy);

/**
 * pb_module_get_data:
 * @module: a module instance
 *
 * Returns: (transfer none) (nullable): what pb_module_set_data() attached
 *
 * Since: ABI 1.0
 */
PB_API gpointer pb_module_get_data (PbModule *module);

/**
 * pb_module_get_hostname:
 * @module: a module instance
 *
 * Returns: (transfer none): the server's name for greetings and Received
 *   headers (`core.hostname`)
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_module_get_hostname (PbModule *module);

/**
 * pb_module_get_state_dir:
 * @module: a module instance
 *
 * Returns: (transfer none): the daemon's state directory (absolute); a
 *   module keeps its files in a subdirectory named after itself
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_module_get_state_dir (PbModule *module);

/**
 * pb_module_is_checking:
 * @module: a module instance
 *
 * Whether this instance exists only to validate a configuration
 * (`pillarboxd --check-config`): `start` will never be called.
 *
 * Returns: %TRUE when checking only
 *
 * Since: ABI 1.0
 */
PB_API gboolean pb_module_is_checking (PbModule *module);

/**
 * pb_version:
 *
 * Returns: (transfer none): the version of the running core, e.g. "0.1.0"
 *
 * Since: ABI 1.0
 */
PB_API const char *pb_version (void);

/**
 * pb_abi_version:
 * @major: (out) (optional): the core's ABI major
 * @minor: (out) (optional): the core's ABI minor
 *
 * The ABI the running core implements, which may be newer than the
 * headers a module was built with.
 *
 * Since: ABI 1.0
 */
PB_API void pb_abi_version (guint *major, guint *minor);

PB_END_DECLS

#endif /* PILLARBOX_PB_MODULE_H */
