/* SPDX-License-Identifier: MIT */
/* pillarboxd's entry point; everything else lives in libpillarbox (core/daemon.c). */
#include "config.h"
#include "pb-private.h"

int
main (int argc, char **argv)
{
  return pb_daemon_main (argc, argv);
}
