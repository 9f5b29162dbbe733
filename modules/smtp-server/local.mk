# SPDX-License-Identifier: MIT
# smtp-server: inbound SMTP, submission and implicit-TLS SMTP.

SMTP_PURE_SOURCES = \
	modules/smtp-server/smtp-parse.c \
	modules/smtp-server/smtp-content.c \
	modules/smtp-server/smtp-private.h
SMTP_SOURCES = \
	$(SMTP_PURE_SOURCES) \
	modules/smtp-server/smtp-module.c \
	modules/smtp-server/smtp-session.c \
	modules/smtp-server/smtp-mail.c \
	modules/smtp-server/smtp-data.c \
	modules/smtp-server/smtp-auth.c

pkglib_LTLIBRARIES += modules/smtp-server.la
modules_smtp_server_la_SOURCES = $(SMTP_SOURCES)
modules_smtp_server_la_CFLAGS = $(MODULE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-smtp\"
modules_smtp_server_la_LDFLAGS = $(MODULE_FLAGS)
modules_smtp_server_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

# Unit tests of the parser and the content decoder (pure functions: no
# storage, no daemon), and the fuzz corpus replayed through the fuzz target.
SMTP_UNIT_TESTS = \
	modules/smtp-server/test-smtp-parse \
	modules/smtp-server/test-smtp-corpus
check_PROGRAMS += $(SMTP_UNIT_TESTS)
TESTS += $(SMTP_UNIT_TESTS)
modules_smtp_server_test_smtp_parse_SOURCES = modules/smtp-server/test-smtp-parse.c $(SMTP_PURE_SOURCES)
modules_smtp_server_test_smtp_parse_CFLAGS = $(UNIT_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-smtp\"
modules_smtp_server_test_smtp_parse_LDADD = $(UNIT_LDADD)
modules_smtp_server_test_smtp_corpus_SOURCES = \
	modules/smtp-server/fuzz-smtp.c \
	modules/smtp-server/fuzz-smtp-driver.c \
	$(SMTP_PURE_SOURCES)
modules_smtp_server_test_smtp_corpus_CFLAGS = $(AM_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-smtp\" \
	-DSMTP_CORPUS_DIR=\"$(abs_top_srcdir)/modules/smtp-server/fuzz-corpus\"
modules_smtp_server_test_smtp_corpus_LDADD = $(GLIB_LIBS)

# A policy module for the integration tests: answers every stage later, as
# steered by the client (see the file). Built next to the real modules so the
# daemon under test finds it in the same module directory; never installed.
check_LTLIBRARIES += modules/smtp-test-policy.la
modules_smtp_test_policy_la_SOURCES = modules/smtp-server/test-smtp-policy.c
modules_smtp_test_policy_la_CFLAGS = $(MODULE_CFLAGS)
modules_smtp_test_policy_la_LDFLAGS = $(MODULE_FLAGS) -rpath /nowhere
modules_smtp_test_policy_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

# Integration tests: the real daemon with storage-sqlite, real clients.
SMTP_INTEGRATION_TESTS = \
	tests/integration/test-smtp.py \
	tests/integration/test-smtp-clients.py \
	tests/integration/test-smtp-limits.py \
	tests/integration/test-smtp-policy.py \
	tests/integration/test-smtp-abuse.py
TESTS += $(SMTP_INTEGRATION_TESTS)
EXTRA_DIST += \
	$(SMTP_INTEGRATION_TESTS) \
	tests/integration/test-smtp-common.py \
	modules/smtp-server/fuzz-corpus \
	tests/bench/smtp-accept \
	tests/bench/idle-conns \
	conf.d/20-smtp-server.conf \
	docs/smtp-server.md

# The libFuzzer target, built on demand with clang (not part of `make check`):
#   make fuzz-smtp && ./fuzz-smtp -max_total_time=300 $(srcdir)/modules/smtp-server/fuzz-corpus
FUZZ_CC = clang
fuzz-smtp: $(srcdir)/modules/smtp-server/fuzz-smtp.c $(SMTP_PURE_SOURCES)
	$(FUZZ_CC) -g -O1 -fsanitize=fuzzer,address,undefined -I$(top_builddir) -I$(top_srcdir)/plugin-api \
	  -I$(top_srcdir)/modules/smtp-server $(GLIB_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-smtp\" \
	  -o $@ $(srcdir)/modules/smtp-server/fuzz-smtp.c $(addprefix $(srcdir)/,$(filter %.c,$(SMTP_PURE_SOURCES))) \
	  $(GLIB_LIBS)
CLEANFILES += fuzz-smtp
.PHONY: fuzz-smtp-run
fuzz-smtp-run: fuzz-smtp
	./fuzz-smtp -max_total_time=$${FUZZ_SECONDS:-300} -timeout=10 $(srcdir)/modules/smtp-server/fuzz-corpus
