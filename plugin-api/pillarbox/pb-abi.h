/* SPDX-License-Identifier: MIT */
/* Pillarbox plugin ABI: version numbers, export and declaration macros. */
#ifndef PILLARBOX_PB_ABI_H
#define PILLARBOX_PB_ABI_H

#include <glib.h>

/**
 * SECTION:pb-abi
 * @title: ABI versions
 *
 * The plugin ABI has a major and a minor number. The core loads a module
 * only when the module's major equals the core's and the module's minor is
 * not newer than the core's. Bumping the minor adds (functions, struct
 * fields appended at the end, enum values); bumping the major breaks.
 *
 * Every struct that crosses the boundary begins with a `struct_size` member
 * filled with sizeof() at the writer's side, so a newer reader can tell
 * which fields an older writer knew about.
 */

/**
 * PB_ABI_MAJOR:
 *
 * The ABI major version these headers describe. A module built with a
 * different major is refused.
 *
 * Since: ABI 1.0
 */
#ifndef PB_ABI_MAJOR
#define PB_ABI_MAJOR 1
#endif

/**
 * PB_ABI_MINOR:
 *
 * The ABI minor version these headers describe. A module built against a
 * newer minor than the running core's is refused.
 *
 * Since: ABI 1.0
 */
#ifndef PB_ABI_MINOR
#define PB_ABI_MINOR 2
#endif

/**
 * PB_MODULE_MAGIC:
 *
 * The first word of every module descriptor ("PBOX"), so the core can tell
 * a Pillarbox module from an unrelated shared object that happens to
 * export a symbol of the same name.
 *
 * Since: ABI 1.0
 */
#define PB_MODULE_MAGIC 0x50424f58u

/**
 * PB_MODULE_SYMBOL:
 *
 * The name of the one symbol a module exports: its descriptor.
 *
 * Since: ABI 1.0
 */
#define PB_MODULE_SYMBOL "pillarbox_module_info"

/**
 * PB_API:
 *
 * Marks a function exported by libpillarbox.
 *
 * Since: ABI 1.0
 */
#if defined(__GNUC__)
#define PB_API __attribute__ ((visibility ("default")))
#else
#define PB_API
#endif

/**
 * PB_BEGIN_DECLS:
 *
 * Opens an `extern "C"` block when compiled as C++.
 *
 * Since: ABI 1.0
 */
#define PB_BEGIN_DECLS G_BEGIN_DECLS

/**
 * PB_END_DECLS:
 *
 * Closes the block opened by %PB_BEGIN_DECLS.
 *
 * Since: ABI 1.0
 */
#define PB_END_DECLS G_END_DECLS

/**
 * PB_FIELD_PRESENT:
 * @ptr: a pointer to a sized struct
 * @type: the struct's type
 * @field: a member of @type
 *
 * Whether the writer of *@ptr knew about @field, judged by its
 * `struct_size`. Readers use this before touching any field added after
 * ABI 1.0.
 *
 * Since: ABI 1.0
 */
#define PB_FIELD_PRESENT(ptr, type, field) \
  ((ptr)->struct_size >= G_STRUCT_OFFSET (type, field) + sizeof (((type *) 0)->field))

#endif /* PILLARBOX_PB_ABI_H */
