# SPDX-License-Identifier: MIT
# ids: intrusion detection (weighted client errors, temporary blocks kept in the state
# directory, `pillarbox ids`) and its unit tests. Integration tests: modules/load-limit/local.mk.

pkglib_LTLIBRARIES += modules/ids.la
modules_ids_la_SOURCES = \
	modules/ids/ids-private.h \
	modules/ids/ids-table.c \
	modules/state-store/state-store.c \
	modules/state-store/state-store.h \
	modules/ids/ids-module.c
modules_ids_la_CFLAGS = $(MODULE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-ids\"
modules_ids_la_LDFLAGS = $(MODULE_FLAGS)
modules_ids_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

# Unit tests: prefixes, scores over the monitor period with a fake clock, blocks,
# the merge of two writers, the state file.
check_PROGRAMS += modules/ids/test-ids
TESTS += modules/ids/test-ids
modules_ids_test_ids_SOURCES = \
	modules/ids/test-ids.c \
	modules/ids/ids-table.c \
	modules/state-store/state-store.c \
	modules/state-store/state-store.h \
	modules/ids/ids-private.h
modules_ids_test_ids_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/unit -DG_LOG_DOMAIN=\"pillarbox-ids\"
modules_ids_test_ids_CFLAGS = $(UNIT_CFLAGS)
modules_ids_test_ids_LDADD = $(UNIT_LDADD)

EXTRA_DIST += docs/ids.md
