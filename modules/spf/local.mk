# SPDX-License-Identifier: MIT
# spf: Sender Policy Framework (RFC 7208) checks at MAIL FROM, Received-SPF and
# Authentication-Results headers, `pillarbox spf-check`; its unit and integration tests.

pkglib_LTLIBRARIES += modules/spf.la
modules_spf_la_SOURCES = \
	modules/spf/spf-private.h \
	modules/spf/spf-headers.h \
	modules/spf/spf-record.c \
	modules/spf/spf-headers.c \
	modules/spf/spf-eval.c \
	modules/spf/spf-module.c
modules_spf_la_CFLAGS = $(MODULE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-spf\"
modules_spf_la_LDFLAGS = $(MODULE_FLAGS)
modules_spf_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

CONFD_FILES += conf.d/60-spf.conf

# Unit tests of the parts without DNS: macros (RFC 7208 §7.4's examples),
# record syntax, selection, CIDR matching, header text.
check_PROGRAMS += modules/spf/test-spf
TESTS += modules/spf/test-spf
modules_spf_test_spf_SOURCES = \
	modules/spf/test-spf.c \
	modules/spf/spf-record.c \
	modules/spf/spf-headers.c \
	modules/spf/spf-headers.h \
	modules/spf/spf-private.h
modules_spf_test_spf_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/unit -DG_LOG_DOMAIN=\"pillarbox-spf\"
modules_spf_test_spf_CFLAGS = $(UNIT_CFLAGS)
modules_spf_test_spf_LDADD = $(UNIT_LDADD)

# check_host() against a real DNS server (tests/dns-server.py) serving RFC 7208
# Appendix A and more; then the daemon end to end with smtp-server.
SPF_INTEGRATION_TESTS = \
	modules/spf/test-spf-check.py \
	modules/spf/test-spf-smtp.py
TESTS += $(SPF_INTEGRATION_TESTS)
EXTRA_DIST += \
	$(SPF_INTEGRATION_TESTS) \
	modules/spf/spf_zone.py \
	docs/spf.md
modules/spf/test-spf-check.log modules/spf/test-spf-smtp.log: \
	modules/spf.la modules/smtp-server.la modules/storage-sqlite.la
