# SPDX-License-Identifier: MIT
# rate-cap: inbound message and recipient rates per client address, user or sender, with
# counters kept across reloads and restarts; its unit tests. Integration tests:
# modules/load-limit/local.mk.

pkglib_LTLIBRARIES += modules/rate-cap.la
modules_rate_cap_la_SOURCES = \
	modules/rate-cap/rc-private.h \
	modules/rate-cap/rc-counters.c \
	modules/state-store/state-store.c \
	modules/state-store/state-store.h \
	modules/rate-cap/rate-cap-module.c
modules_rate_cap_la_CFLAGS = $(MODULE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-rate-cap\"
modules_rate_cap_la_LDFLAGS = $(MODULE_FLAGS)
modules_rate_cap_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

# Unit tests: the sliding window with a fake clock, the merge of two instances'
# counters, the state file.
check_PROGRAMS += modules/rate-cap/test-rate-cap
TESTS += modules/rate-cap/test-rate-cap
modules_rate_cap_test_rate_cap_SOURCES = \
	modules/rate-cap/test-rate-cap.c \
	modules/rate-cap/rc-counters.c \
	modules/state-store/state-store.c \
	modules/state-store/state-store.h \
	modules/rate-cap/rc-private.h
modules_rate_cap_test_rate_cap_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/unit -DG_LOG_DOMAIN=\"pillarbox-rate-cap\"
modules_rate_cap_test_rate_cap_CFLAGS = $(UNIT_CFLAGS)
modules_rate_cap_test_rate_cap_LDADD = $(UNIT_LDADD)

EXTRA_DIST += docs/rate-cap.md
