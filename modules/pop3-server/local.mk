# SPDX-License-Identifier: MIT
# pop3-server: mailboxes served over POP3 and POP3S; its unit tests, test fixture, integration tests and conf.d file.

pkglib_LTLIBRARIES += modules/pop3-server.la
modules_pop3_server_la_SOURCES = \
	modules/pop3-server/pop3-private.h \
	modules/pop3-server/pop3-module.c \
	modules/pop3-server/pop3-session.c \
	modules/pop3-server/pop3-retr.c \
	modules/pop3-server/pop3-parse.c
modules_pop3_server_la_CFLAGS = $(MODULE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-pop3\"
modules_pop3_server_la_LDFLAGS = $(MODULE_FLAGS)
modules_pop3_server_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

# Unit tests of the pure parser (command lines fed through a real PbConn
# one byte at a time and pipelined, SASL PLAIN, CAPA, byte-stuffing, TOP).
check_PROGRAMS += modules/pop3-server/test-pop3
TESTS += modules/pop3-server/test-pop3
modules_pop3_server_test_pop3_SOURCES = \
	modules/pop3-server/test-pop3.c \
	modules/pop3-server/pop3-parse.c \
	modules/pop3-server/pop3-private.h
modules_pop3_server_test_pop3_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/unit -DG_LOG_DOMAIN=\"pillarbox-pop3\"
modules_pop3_server_test_pop3_CFLAGS = $(UNIT_CFLAGS)
modules_pop3_server_test_pop3_LDADD = $(UNIT_LDADD)

# Test fixture: local delivery into mailboxes (`pillarbox fx-deliver USER FILE [COUNT]`)
# before smtp-server exists, and an auth-stage hook plus an event log for the tests.
check_LTLIBRARIES += tests/fixtures/fx-deliver.la
tests_fixtures_fx_deliver_la_SOURCES = tests/fixtures/fx-deliver.c
tests_fixtures_fx_deliver_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_deliver_la_LDFLAGS = $(MODULE_FLAGS) -rpath /nowhere
tests_fixtures_fx_deliver_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

POP3_INTEGRATION_TESTS = tests/integration/test-pop3.py
TESTS += $(POP3_INTEGRATION_TESTS)
EXTRA_DIST += \
	$(POP3_INTEGRATION_TESTS) \
	docs/pop3-server.md \
	tests/bench/pop3-retr
# test-pop3.py runs the daemon and modules from the build tree: the modules and the
# fixture must be built first, and test-example-plugin's `make install` (which may relink
# them) must not run beside it.
tests/integration/test-pop3.log: modules/pop3-server.la modules/storage-sqlite.la tests/fixtures/fx-deliver.la
