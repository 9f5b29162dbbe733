# SPDX-License-Identifier: MIT
# batv: Bounce Address Tag Validation (prvs signing of local senders at delivery-attempt,
# checking at rcpt-address, keys in the state directory, `pillarbox batv`), its unit
# tests and its integration test.

pkglib_LTLIBRARIES += modules/batv.la
modules_batv_la_SOURCES = \
	modules/batv/batv-private.h \
	modules/batv/batv-tag.c \
	modules/state-store/state-store.c \
	modules/state-store/state-store.h \
	modules/batv/batv-module.c
modules_batv_la_CFLAGS = $(MODULE_CFLAGS) $(GNUTLS_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-batv\"
modules_batv_la_LDFLAGS = $(MODULE_FLAGS)
modules_batv_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS) $(GNUTLS_LIBS)

# Unit tests: tags against vectors computed with Python's hmac, expiry and the
# wrap of the day count with a fake clock, tampering, key rotation, the key file's text.
check_PROGRAMS += modules/batv/test-batv
TESTS += modules/batv/test-batv
modules_batv_test_batv_SOURCES = \
	modules/batv/test-batv.c \
	modules/batv/batv-tag.c \
	modules/batv/batv-private.h
modules_batv_test_batv_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/unit -DG_LOG_DOMAIN=\"pillarbox-batv\"
modules_batv_test_batv_CFLAGS = $(UNIT_CFLAGS)
modules_batv_test_batv_LDADD = $(UNIT_LDADD)

# Integration: the real daemon with smtp-server, storage-sqlite, relay-sender and batv.
TESTS += modules/batv/test-batv-smtp.py
EXTRA_DIST += modules/batv/test-batv-smtp.py

CONFD_FILES += conf.d/61-batv.conf
EXTRA_DIST += docs/batv.md
