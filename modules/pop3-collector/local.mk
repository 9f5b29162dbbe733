# SPDX-License-Identifier: MIT
# pop3-collector: fetches remote POP3 mailboxes into local ones, each message exactly once
# (storage origins); its unit tests and its integration tests against Dovecot, scripted
# POP3 servers and Pillarbox's own pop3-server.

COLLECTOR_PURE_SOURCES = \
	modules/pop3-collector/collector-private.h \
	modules/pop3-collector/collector-util.c

pkglib_LTLIBRARIES += modules/pop3-collector.la
modules_pop3_collector_la_SOURCES = \
	$(COLLECTOR_PURE_SOURCES) \
	modules/pop3-collector/collector-run.c \
	modules/pop3-collector/collector-module.c
modules_pop3_collector_la_CFLAGS = $(MODULE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-pop3-collector\"
modules_pop3_collector_la_LDFLAGS = $(MODULE_FLAGS)
modules_pop3_collector_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

# Unit tests: settings values, replies, UIDL and LIST lines, APOP and PLAIN,
# header parsing and address extraction, each fed table-driven.
check_PROGRAMS += modules/pop3-collector/test-collector
TESTS += modules/pop3-collector/test-collector
modules_pop3_collector_test_collector_SOURCES = \
	modules/pop3-collector/test-collector.c \
	$(COLLECTOR_PURE_SOURCES)
modules_pop3_collector_test_collector_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/unit \
	-DG_LOG_DOMAIN=\"pillarbox-pop3-collector\"
modules_pop3_collector_test_collector_CFLAGS = $(UNIT_CFLAGS)
modules_pop3_collector_test_collector_LDADD = $(UNIT_LDADD)

# Integration: the real daemon collecting from Dovecot (skipped when it is not
# installed), from scripted Python servers and from its own pop3-server.
COLLECTOR_INTEGRATION_TESTS = modules/pop3-collector/test-collector-peers.py
TESTS += $(COLLECTOR_INTEGRATION_TESTS)
modules/pop3-collector/test-collector-peers.log: modules/pop3-collector.la modules/pop3-server.la \
	modules/storage-sqlite.la tests/fixtures/fx-deliver.la

CONFD_FILES += conf.d/55-pop3-collector.conf
EXTRA_DIST += \
	$(COLLECTOR_INTEGRATION_TESTS) \
	modules/pop3-collector/pop3-script.py \
	docs/pop3-collector.md
