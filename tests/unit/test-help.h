/* SPDX-License-Identifier: MIT */
/* Helpers for the cmocka unit tests: temporary config dirs, fixtures, log capture, loop waits. */
#ifndef PILLARBOX_TEST_HELP_H
#define PILLARBOX_TEST_HELP_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "pb-private.h"

G_BEGIN_DECLS

/* A fresh temporary directory (removed by pbt_rmtree). */
char *pbt_mkdtemp (void);
void pbt_rmtree (const char *dir);
/* Writes DIR/NAME with TEXT. */
void pbt_write_file (const char *dir, const char *name, const char *text);
/* The build tree's fixture module directory, with the modules made go-w. */
const char *pbt_fixture_dir (void);

/* Log capture: warnings and criticals are collected instead of printed;
 * pbt_log_expect() consumes one containing NEEDLE; pbt_log_check_empty()
 * fails the test when unexpected ones remain. */
void pbt_log_capture (void);
gboolean pbt_log_expect (const char *needle);
void pbt_log_check_empty (void);
void pbt_log_clear (void);

/* Runs the default main context until *FLAG is TRUE or MS pass; returns *FLAG. */
gboolean pbt_loop_until (const gboolean *flag, guint ms);
/* Runs the default main context for MS milliseconds. */
void pbt_loop_run_for (guint ms);

G_END_DECLS

#endif /* PILLARBOX_TEST_HELP_H */
