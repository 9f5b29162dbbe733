# SPDX-License-Identifier: MIT
# The SMTP client shared by relay-sender and mx-sender. It is not a library: its
# sources are listed in both modules' SOURCES, so each module carries its own
# copy with its own log domain. Also: its unit tests, and the fixtures the
# transports' tests share (a file-backed storage module, a scripted SMTP server,
# helpers that start smtp-sink and the DNS server).

SMTPC_PURE_SOURCES = \
	modules/smtp-client/smtpc.h \
	modules/smtp-client/smtpc-reply.c \
	modules/smtp-client/smtpc-body.c
SMTPC_SOURCES = \
	$(SMTPC_PURE_SOURCES) \
	modules/smtp-client/smtpc-session.c \
	modules/smtp-client/smtpc-job.c
SMTPC_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/modules/smtp-client

# Unit tests of the pure parts: replies fed one octet at a time, EHLO
# capabilities, dot-stuffing across chunk boundaries.
check_PROGRAMS += modules/smtp-client/test-smtpc
TESTS += modules/smtp-client/test-smtpc
modules_smtp_client_test_smtpc_SOURCES = modules/smtp-client/test-smtpc.c $(SMTPC_PURE_SOURCES)
modules_smtp_client_test_smtpc_CPPFLAGS = $(SMTPC_CPPFLAGS) -I$(top_srcdir)/tests/unit
modules_smtp_client_test_smtpc_CFLAGS = $(UNIT_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-smtpc\"
modules_smtp_client_test_smtpc_LDADD = $(UNIT_LDADD)

# A storage backend serving message bodies from files, for the transports'
# tests; built next to the real modules so a test generation finds both.
check_LTLIBRARIES += modules/smtpc-test-store.la
modules_smtpc_test_store_la_SOURCES = modules/smtp-client/test-store.c
modules_smtpc_test_store_la_CFLAGS = $(MODULE_CFLAGS)
modules_smtpc_test_store_la_LDFLAGS = $(MODULE_FLAGS) -rpath /nowhere
modules_smtpc_test_store_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

# What the transports' integration tests share.
SMTPC_TEST_SOURCES = \
	modules/smtp-client/test-transport.c \
	modules/smtp-client/test-transport.h

EXTRA_DIST += modules/smtp-client/test-smtp-server.py
