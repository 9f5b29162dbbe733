# SPDX-License-Identifier: MIT
# relay-sender: outgoing mail through relay servers (smarthosts), with TLS, AUTH,
# per-session and periodic caps and routing rules; its unit and integration tests.

RELAY_PURE_SOURCES = \
	modules/relay-sender/relay-private.h \
	modules/relay-sender/relay-caps.c \
	modules/relay-sender/relay-route.c

pkglib_LTLIBRARIES += modules/relay-sender.la
modules_relay_sender_la_SOURCES = \
	$(SMTPC_SOURCES) \
	$(RELAY_PURE_SOURCES) \
	modules/relay-sender/relay-deliver.c \
	modules/relay-sender/relay-module.c
modules_relay_sender_la_CPPFLAGS = $(SMTPC_CPPFLAGS)
modules_relay_sender_la_CFLAGS = $(MODULE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-relay-sender\"
modules_relay_sender_la_LDFLAGS = $(MODULE_FLAGS)
modules_relay_sender_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

# Unit tests: limits and their windows with a fake clock, the caps log, routes.
# Integration tests: the module in a real generation, delivering to smtp-sink
# and to the scripted Python server (TLS, AUTH, per-recipient replies).
RELAY_TESTS = \
	modules/relay-sender/test-relay \
	modules/relay-sender/test-relay-sink
check_PROGRAMS += $(RELAY_TESTS)
TESTS += $(RELAY_TESTS)
modules_relay_sender_test_relay_SOURCES = modules/relay-sender/test-relay.c $(SMTPC_PURE_SOURCES) $(RELAY_PURE_SOURCES)
modules_relay_sender_test_relay_CPPFLAGS = $(SMTPC_CPPFLAGS) -I$(top_srcdir)/modules/relay-sender -I$(top_srcdir)/tests/unit
modules_relay_sender_test_relay_CFLAGS = $(UNIT_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-relay-sender\"
modules_relay_sender_test_relay_LDADD = $(UNIT_LDADD)
modules_relay_sender_test_relay_sink_SOURCES = modules/relay-sender/test-relay-sink.c $(SMTPC_TEST_SOURCES)
modules_relay_sender_test_relay_sink_CPPFLAGS = $(SMTPC_CPPFLAGS) -I$(top_srcdir)/tests/unit
modules_relay_sender_test_relay_sink_CFLAGS = $(UNIT_CFLAGS)
modules_relay_sender_test_relay_sink_LDADD = $(UNIT_LDADD)
# The test loads the module and the test store from the build tree.
EXTRA_modules_relay_sender_test_relay_sink_DEPENDENCIES = modules/relay-sender.la modules/smtpc-test-store.la

EXTRA_DIST += docs/relay-sender.md
