# SPDX-License-Identifier: MIT
# mx-sender: outgoing mail straight to the recipients' MX hosts; its unit and
# integration tests (smtp-sink on 127.0.0.2 and 127.0.0.3, a real DNS server).

MX_PURE_SOURCES = \
	modules/mx-sender/mx-private.h \
	modules/mx-sender/mx-plan.c

pkglib_LTLIBRARIES += modules/mx-sender.la
modules_mx_sender_la_SOURCES = \
	$(SMTPC_SOURCES) \
	$(MX_PURE_SOURCES) \
	modules/mx-sender/mx-deliver.c \
	modules/mx-sender/mx-module.c
modules_mx_sender_la_CPPFLAGS = $(SMTPC_CPPFLAGS)
modules_mx_sender_la_CFLAGS = $(MODULE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-mx-sender\"
modules_mx_sender_la_LDFLAGS = $(MODULE_FLAGS)
modules_mx_sender_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

MX_TESTS = \
	modules/mx-sender/test-mx \
	modules/mx-sender/test-mx-sink
check_PROGRAMS += $(MX_TESTS)
TESTS += $(MX_TESTS)
modules_mx_sender_test_mx_SOURCES = modules/mx-sender/test-mx.c $(SMTPC_PURE_SOURCES) $(MX_PURE_SOURCES)
modules_mx_sender_test_mx_CPPFLAGS = $(SMTPC_CPPFLAGS) -I$(top_srcdir)/modules/mx-sender -I$(top_srcdir)/tests/unit
modules_mx_sender_test_mx_CFLAGS = $(UNIT_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-mx-sender\"
modules_mx_sender_test_mx_LDADD = $(UNIT_LDADD)
modules_mx_sender_test_mx_sink_SOURCES = modules/mx-sender/test-mx-sink.c $(SMTPC_TEST_SOURCES)
modules_mx_sender_test_mx_sink_CPPFLAGS = $(SMTPC_CPPFLAGS) -I$(top_srcdir)/tests/unit
modules_mx_sender_test_mx_sink_CFLAGS = $(UNIT_CFLAGS)
modules_mx_sender_test_mx_sink_LDADD = $(UNIT_LDADD)
# The test loads the module and the test store from the build tree.
EXTRA_modules_mx_sender_test_mx_sink_DEPENDENCIES = modules/mx-sender.la modules/smtpc-test-store.la

EXTRA_DIST += docs/mx-sender.md
