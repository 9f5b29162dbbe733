/* SPDX-License-Identifier: MIT */
/* Replays the fuzz corpus through the fuzz target, for `make check` without libFuzzer. */
#include "config.h"

#include <glib.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
main (int argc, char **argv)
{
  const char *dir = argc > 1 ? argv[1] : SMTP_CORPUS_DIR;
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;
  guint n = 0;

  if (d == NULL)
    {
      fprintf (stderr, "cannot open %s\n", dir);
      return 1;
    }
  while ((name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = g_build_filename (dir, name, NULL);
      g_autofree char *contents = NULL;
      gsize len = 0;

      if (!g_file_get_contents (path, &contents, &len, NULL))
        continue;
      LLVMFuzzerTestOneInput ((const uint8_t *) contents, len);
      /* Every prefix too: cuts in the middle of lines, chunks and end marks. */
      for (gsize cut = 1; cut < len && cut < 4096; cut += 1 + cut / 64)
        LLVMFuzzerTestOneInput ((const uint8_t *) contents, cut);
      printf ("ok %u - %s (%" G_GSIZE_FORMAT " octets)\n", ++n, name, len);
    }
  printf ("%u passed, 0 failed\n", n);
  return n > 0 ? 0 : 1;
}
