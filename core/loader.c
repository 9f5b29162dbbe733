/* SPDX-License-Identifier: MIT */
/* Finds, checks and opens module files with libltdl; refuses anything unsafe or incompatible. */
#include "config.h"
#include "core-private.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Opened module files by path; the process keeps them mapped (see PbModuleFile). */
static GHashTable *module_files;
/* The same files by "MODULE-DIR\nNAME", as a configuration names them. A
 * reload asks for modules this process already holds without touching the
 * disk: a new build takes effect at the next restart anyway, and after
 * dropping privileges the daemon may no longer be able to reach the module
 * directory (a build tree in a home directory of mode 0700). */
static GHashTable *module_names;

static void
module_file_remember (const char *module_dir, const char *name, PbModuleFile *mf)
{
  if (module_names == NULL)
    module_names = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_hash_table_replace (module_names, g_strconcat (module_dir, "\n", name, NULL), mf);
}

gboolean
pb_module_name_is_valid (const char *name)
{
  if (name == NULL || *name == '\0' || strlen (name) > 64)
    return FALSE;
  for (const char *p = name; *p != '\0'; p++)
    if (!g_ascii_islower (*p) && !g_ascii_isdigit (*p) && *p != '-' && *p != '_')
      return FALSE;
  return TRUE;
}

/* The installed layout is DIR/NAME.so; a libtool build tree keeps it in DIR/.libs/. */
static char *
module_find_file (const char *module_dir, const char *name)
{
  g_autofree char *file = g_strconcat (name, ".so", NULL);
  char *path = g_build_filename (module_dir, file, NULL);

  if (g_file_test (path, G_FILE_TEST_EXISTS))
    return path;
  g_free (path);
  path = g_build_filename (module_dir, ".libs", file, NULL);
  if (g_file_test (path, G_FILE_TEST_EXISTS))
    return path;
  g_free (path);
  return NULL;
}

/* libltdl reports any dlopen failure as "file not found"; say what is wrong. */
static gboolean
module_has_elf_header (const char *path)
{
  char magic[4] = { 0 };
  FILE *f = fopen (path, "rb");
  gboolean ok;

  if (f == NULL)
    return TRUE;  /* let lt_dlopen report the error */
  ok = fread (magic, 1, sizeof magic, f) == sizeof magic && memcmp (magic, "\177ELF", 4) == 0;
  fclose (f);
  return ok;
}

PbModuleFile *
pb_module_file_open (const char *module_dir, const char *name, GError **error)
{
  g_autofree char *path = NULL;
  struct stat st;
  lt_dlhandle handle;
  const PbModuleInfo *info;
  PbModuleFile *mf;

  if (!pb_module_name_is_valid (name))
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "invalid module name '%s' (lower-case letters, digits, '-' and '_')", name);
      return NULL;
    }
  if (module_names != NULL)
    {
      g_autofree char *key = g_strconcat (module_dir, "\n", name, NULL);
      if ((mf = g_hash_table_lookup (module_names, key)) != NULL)
        return mf;
    }
  errno = 0;
  if (stat (module_dir, &st) != 0 || !S_ISDIR (st.st_mode))
    {
      /* After dropping privileges "Permission denied" is the likely
       * answer; say so rather than "does not exist". */
      if (errno == 0 || errno == ENOENT || errno == ENOTDIR)
        g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                     "module '%s': module directory %s does not exist (set core.module-dir)", name, module_dir);
      else
        g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                     "module '%s': module directory %s cannot be reached: %s (as uid %u)", name, module_dir,
                     g_strerror (errno), (unsigned) geteuid ());
      return NULL;
    }
  path = module_find_file (module_dir, name);
  if (path == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "unknown module '%s': no file %s/%s.so", name, module_dir, name);
      return NULL;
    }

  if (module_files != NULL && (mf = g_hash_table_lookup (module_files, path)) != NULL)
    {
      module_file_remember (module_dir, name, mf);
      return mf;
    }

  if (stat (path, &st) != 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "%s: missing or unreadable module file: %s", path, g_strerror (errno));
      return NULL;
    }
  if (!S_ISREG (st.st_mode))
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE, "%s: not a regular file", path);
      return NULL;
    }
  /* A module runs with the daemon's privileges: anyone who can write it owns the server. */
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "%s: refusing to load a module writable by group or others (mode %04o; fix with chmod go-w)",
                   path, (unsigned) (st.st_mode & 07777));
      return NULL;
    }

  if (!module_has_elf_header (path))
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "%s: not a loadable module (not an ELF shared object)", path);
      return NULL;
    }
  handle = lt_dlopen (path);
  if (handle == NULL)
    {
      const char *why = lt_dlerror ();
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "%s: not a loadable module: %s", path, why != NULL ? why : "unknown error");
      return NULL;
    }
  info = lt_dlsym (handle, PB_MODULE_SYMBOL);
  if (info == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "%s: not a Pillarbox module (no %s symbol)", path, PB_MODULE_SYMBOL);
      lt_dlclose (handle);
      return NULL;
    }
  if (info->magic != PB_MODULE_MAGIC)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "%s: not a Pillarbox module (bad magic 0x%08x)", path, info->magic);
      lt_dlclose (handle);
      return NULL;
    }
  if (info->abi_major != PB_ABI_MAJOR)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "%s: built for plugin ABI %u.%u but this pillarboxd provides ABI %u.%u "
                   "(major versions differ; rebuild the module against this version's headers)",
                   path, info->abi_major, info->abi_minor, PB_ABI_MAJOR, PB_ABI_MINOR);
      lt_dlclose (handle);
      return NULL;
    }
  if (info->abi_minor > PB_ABI_MINOR)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "%s: built for plugin ABI %u.%u, newer than this pillarboxd's ABI %u.%u "
                   "(upgrade pillarboxd or build the module against older headers)",
                   path, info->abi_major, info->abi_minor, PB_ABI_MAJOR, PB_ABI_MINOR);
      lt_dlclose (handle);
      return NULL;
    }
  if (info->struct_size < G_STRUCT_OFFSET (PbModuleInfo, sections) + sizeof (info->sections)
      || info->init == NULL || info->name == NULL)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "%s: malformed module descriptor (size %zu, name or init missing)", path, info->struct_size);
      lt_dlclose (handle);
      return NULL;
    }
  if (strcmp (info->name, name) != 0)
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "%s: the module calls itself '%s', not '%s'", path, info->name, name);
      lt_dlclose (handle);
      return NULL;
    }
  if (info->settings != NULL && info->setting_entry_size < sizeof (PbSetting))
    {
      g_set_error (error, PB_CORE_ERROR, PB_CORE_ERROR_MODULE,
                   "%s: malformed settings table (entry size %zu)", path, info->setting_entry_size);
      lt_dlclose (handle);
      return NULL;
    }

  mf = g_new0 (PbModuleFile, 1);
  mf->name = g_strdup (name);
  mf->path = g_steal_pointer (&path);
  mf->handle = handle;
  mf->info = info;
  if (module_files == NULL)
    module_files = g_hash_table_new (g_str_hash, g_str_equal);
  g_hash_table_insert (module_files, mf->path, mf);
  module_file_remember (module_dir, name, mf);
  return mf;
}
