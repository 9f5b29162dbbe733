# SPDX-License-Identifier: MIT
# The test suite: cmocka unit tests, fixture modules, integration tests with the real daemon.

AM_TESTS_ENVIRONMENT = \
	top_srcdir='$(abs_top_srcdir)'; export top_srcdir; \
	top_builddir='$(abs_top_builddir)'; export top_builddir; \
	PYTHON3='$(PYTHON3)'; export PYTHON3; \
	CC='$(CC)'; export CC; CXX='$(CXX)'; export CXX; \
	ASAN_OPTIONS='detect_leaks=1:abort_on_error=1:detect_odr_violation=0'; export ASAN_OPTIONS; \
	LSAN_OPTIONS='suppressions=$(abs_top_srcdir)/tests/lsan.supp:print_suppressions=0'; export LSAN_OPTIONS; \
	UBSAN_OPTIONS='print_stacktrace=1:halt_on_error=1'; export UBSAN_OPTIONS; \
	G_DEBUG='fatal-criticals'; export G_DEBUG;
TEST_EXTENSIONS = .py .sh
PY_LOG_COMPILER = $(PYTHON3)
SH_LOG_COMPILER = $(SHELL)

UNIT_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) $(GNUTLS_CFLAGS) $(JSON_CFLAGS) -DTOP_BUILDDIR=\"$(abs_top_builddir)\" -DTOP_SRCDIR=\"$(abs_top_srcdir)\"
UNIT_LDADD = core/libpillarbox.la tests/unit/libtesthelp.la $(CMOCKA_LIBS) $(GLIB_LIBS) $(GNUTLS_LIBS) $(JSON_LIBS) $(LTDL_LIBS)

check_LTLIBRARIES += tests/unit/libtesthelp.la
tests_unit_libtesthelp_la_SOURCES = tests/unit/test-help.c tests/unit/test-help.h
tests_unit_libtesthelp_la_CFLAGS = $(UNIT_CFLAGS)

UNIT_TESTS = \
	tests/unit/test-config \
	tests/unit/test-loader \
	tests/unit/test-hooks \
	tests/unit/test-abi \
	tests/unit/test-conn \
	tests/unit/test-control \
	tests/unit/test-dns \
	tests/unit/test-schedule
check_PROGRAMS += $(UNIT_TESTS)
TESTS += $(UNIT_TESTS)

tests_unit_test_config_SOURCES = tests/unit/test-config.c
tests_unit_test_config_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_config_LDADD = $(UNIT_LDADD)
tests_unit_test_loader_SOURCES = tests/unit/test-loader.c
tests_unit_test_loader_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_loader_LDADD = $(UNIT_LDADD)
tests_unit_test_hooks_SOURCES = tests/unit/test-hooks.c
tests_unit_test_hooks_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_hooks_LDADD = $(UNIT_LDADD)
tests_unit_test_abi_SOURCES = tests/unit/test-abi.c
tests_unit_test_abi_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_abi_LDADD = $(UNIT_LDADD)
tests_unit_test_conn_SOURCES = tests/unit/test-conn.c
tests_unit_test_conn_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_conn_LDADD = $(UNIT_LDADD)
tests_unit_test_schedule_SOURCES = tests/unit/test-schedule.c
tests_unit_test_schedule_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_schedule_LDADD = $(UNIT_LDADD)
tests_unit_test_dns_SOURCES = tests/unit/test-dns.c
tests_unit_test_dns_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_dns_LDADD = $(UNIT_LDADD)
tests_unit_test_control_SOURCES = tests/unit/test-control.c
tests_unit_test_control_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_control_LDADD = $(UNIT_LDADD)
# pb_log_escape on hostile input, the writer's lines, the login names the core refuses.
check_PROGRAMS += tests/unit/test-log
TESTS += tests/unit/test-log
tests_unit_test_log_SOURCES = tests/unit/test-log.c
tests_unit_test_log_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_log_LDADD = $(UNIT_LDADD)

# Every public header compiles alone as C99 and as C++; every public item is documented.
TESTS += tests/unit/headers.sh tests/unit/check-abi-docs.py
# Every main-loop source is attached through pb-loop.h (counted) and released whole.
TESTS += tests/unit/check-sources.py

# Fixture modules, several broken on purpose, for the loader's errors; the
# policy fixture is built three times under three names to test hook order.
FIXTURE_FLAGS = $(MODULE_FLAGS) -rpath /nowhere
FIXTURE_LIBADD = core/libpillarbox.la $(GLIB_LIBS)
check_LTLIBRARIES += \
	tests/fixtures/fx-good.la \
	tests/fixtures/fx-badmagic.la \
	tests/fixtures/fx-newminor.la \
	tests/fixtures/fx-major.la \
	tests/fixtures/fx-initfail.la \
	tests/fixtures/fx-nosymbol.la \
	tests/fixtures/fx-policy-a.la \
	tests/fixtures/fx-policy-b.la \
	tests/fixtures/fx-policy-c.la \
	tests/fixtures/example.la
tests_fixtures_fx_good_la_SOURCES = tests/fixtures/fx-good.c
tests_fixtures_fx_good_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_good_la_LDFLAGS = $(FIXTURE_FLAGS)
tests_fixtures_fx_good_la_LIBADD = $(FIXTURE_LIBADD)
tests_fixtures_fx_badmagic_la_SOURCES = tests/fixtures/fx-badmagic.c
tests_fixtures_fx_badmagic_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_badmagic_la_LDFLAGS = $(FIXTURE_FLAGS)
tests_fixtures_fx_badmagic_la_LIBADD = $(FIXTURE_LIBADD)
tests_fixtures_fx_newminor_la_SOURCES = tests/fixtures/fx-newminor.c
tests_fixtures_fx_newminor_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_newminor_la_LDFLAGS = $(FIXTURE_FLAGS)
tests_fixtures_fx_newminor_la_LIBADD = $(FIXTURE_LIBADD)
tests_fixtures_fx_major_la_SOURCES = tests/fixtures/fx-major.c
tests_fixtures_fx_major_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_major_la_LDFLAGS = $(FIXTURE_FLAGS)
tests_fixtures_fx_major_la_LIBADD = $(FIXTURE_LIBADD)
tests_fixtures_fx_initfail_la_SOURCES = tests/fixtures/fx-initfail.c
tests_fixtures_fx_initfail_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_initfail_la_LDFLAGS = $(FIXTURE_FLAGS)
tests_fixtures_fx_initfail_la_LIBADD = $(FIXTURE_LIBADD)
tests_fixtures_fx_nosymbol_la_SOURCES = tests/fixtures/fx-nosymbol.c
tests_fixtures_fx_nosymbol_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_nosymbol_la_LDFLAGS = -module -avoid-version -shared -rpath /nowhere
tests_fixtures_fx_policy_a_la_SOURCES = tests/fixtures/fx-policy.c
tests_fixtures_fx_policy_a_la_CPPFLAGS = $(AM_CPPFLAGS) -DFX_NAME=\"fx-policy-a\"
tests_fixtures_fx_policy_a_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_policy_a_la_LDFLAGS = $(FIXTURE_FLAGS)
tests_fixtures_fx_policy_a_la_LIBADD = $(FIXTURE_LIBADD)
tests_fixtures_fx_policy_b_la_SOURCES = tests/fixtures/fx-policy.c
tests_fixtures_fx_policy_b_la_CPPFLAGS = $(AM_CPPFLAGS) -DFX_NAME=\"fx-policy-b\"
tests_fixtures_fx_policy_b_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_policy_b_la_LDFLAGS = $(FIXTURE_FLAGS)
tests_fixtures_fx_policy_b_la_LIBADD = $(FIXTURE_LIBADD)
tests_fixtures_fx_policy_c_la_SOURCES = tests/fixtures/fx-policy.c
tests_fixtures_fx_policy_c_la_CPPFLAGS = $(AM_CPPFLAGS) -DFX_NAME=\"fx-policy-c\"
tests_fixtures_fx_policy_c_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_policy_c_la_LDFLAGS = $(FIXTURE_FLAGS)
tests_fixtures_fx_policy_c_la_LIBADD = $(FIXTURE_LIBADD)
# The example plugin, built in-tree for the daemon's integration tests (the
# out-of-tree build through pkg-config is tests/integration/test-example-plugin.sh).
tests_fixtures_example_la_SOURCES = contrib/example-plugin/example.c
tests_fixtures_example_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_example_la_LDFLAGS = $(FIXTURE_FLAGS)
tests_fixtures_example_la_LIBADD = $(FIXTURE_LIBADD)

# Integration tests: the real daemon on loopback ports, real clients.
INTEGRATION_TESTS = \
	tests/integration/test-daemon.py \
	tests/integration/test-directory.py \
	tests/integration/test-outbound.py \
	tests/integration/test-outbound-caps.py \
	tests/integration/test-hostile-remote.py \
	tests/integration/test-loop-sources.py \
	tests/integration/test-log-hygiene.py \
	tests/integration/test-example-plugin.sh
TESTS += $(INTEGRATION_TESTS)

EXTRA_DIST += \
	tests/unit/headers.sh \
	tests/unit/check-abi-docs.py \
	tests/unit/check-sources.py \
	tests/dns-server.py \
	tests/lsan.supp \
	tests/integration/pbtest.py \
	tests/integration/smtpsink.py \
	tests/bench/benchlib.py \
	tests/bench/smtp-relay \
	tests/bench/soak \
	$(INTEGRATION_TESTS)

# test-loop-sources drives smtp-server through the policy modules, the smtp-test-policy
# fixture and spf: all must be built before it runs.
tests/integration/test-loop-sources.log: modules/smtp-server.la modules/storage-sqlite.la modules/load-limit.la \
	modules/ids.la modules/rate-cap.la modules/spf.la modules/smtp-test-policy.la

# test-log-hygiene logs in over smtp-server, pop3-server and status-monitor, with ids scoring.
tests/integration/test-log-hygiene.log: modules/smtp-server.la modules/storage-sqlite.la modules/pop3-server.la \
	modules/status-monitor.la modules/ids.la

# test-example-plugin runs `make install DESTDIR=...` in the build tree, which
# relinks the modules: it runs last, after every other test.
tests/integration/test-example-plugin.log: $(filter-out tests/integration/test-example-plugin.log,$(TEST_LOGS))
