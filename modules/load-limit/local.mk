# SPDX-License-Identifier: MIT
# load-limit: simultaneous-session limits at connect; its unit tests, and the tests and
# fixture shared by the three inbound policy modules (load-limit, ids, rate-cap).

pkglib_LTLIBRARIES += modules/load-limit.la
modules_load_limit_la_SOURCES = \
	modules/load-limit/ll-private.h \
	modules/load-limit/ll-limits.c \
	modules/load-limit/load-limit-module.c
modules_load_limit_la_CFLAGS = $(MODULE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-load-limit\"
modules_load_limit_la_LDFLAGS = $(MODULE_FLAGS)
modules_load_limit_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

# Unit tests of the address matching and the admission arithmetic.
check_PROGRAMS += modules/load-limit/test-load-limit
TESTS += modules/load-limit/test-load-limit
modules_load_limit_test_load_limit_SOURCES = \
	modules/load-limit/test-load-limit.c \
	modules/load-limit/ll-limits.c \
	modules/load-limit/ll-private.h
modules_load_limit_test_load_limit_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/unit -DG_LOG_DOMAIN=\"pillarbox-load-limit\"
modules_load_limit_test_load_limit_CFLAGS = $(UNIT_CFLAGS)
modules_load_limit_test_load_limit_LDADD = $(UNIT_LDADD)

# A fixture protocol for the policy integration tests: a line service whose
# commands report events (FAIL-AUTH, UNKNOWN-RCPT, ...) and run the mail-from,
# rcpt-to and queued stages, so ids and rate-cap are tested without SMTP.
check_LTLIBRARIES += tests/fixtures/fx-events.la
tests_fixtures_fx_events_la_SOURCES = tests/fixtures/fx-events.c
tests_fixtures_fx_events_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_events_la_LDFLAGS = $(MODULE_FLAGS) -rpath /nowhere
tests_fixtures_fx_events_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

# Integration tests of load-limit, ids and rate-cap with the real daemon.
POLICY_INTEGRATION_TESTS = \
	tests/integration/test-policy.py \
	tests/integration/test-policy-load.py
TESTS += $(POLICY_INTEGRATION_TESTS)
EXTRA_DIST += \
	$(POLICY_INTEGRATION_TESTS) \
	docs/load-limit.md
# The modules under test must be built before the tests run.
tests/integration/test-policy.log tests/integration/test-policy-load.log: \
	modules/load-limit.la modules/ids.la modules/rate-cap.la tests/fixtures/fx-events.la
# test-example-plugin runs `make install` in the build tree (see tests/local.mk): not beside these.
