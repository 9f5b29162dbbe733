# SPDX-License-Identifier: MIT
# storage-sqlite: the embedded default storage backend, its tests, crash test and benchmarks.

pkglib_LTLIBRARIES += modules/storage-sqlite.la
modules_storage_sqlite_la_SOURCES = \
	modules/storage-sqlite/storage-sqlite-module.c \
	modules/storage-sqlite/sqlite-private.h \
	modules/storage-sqlite/sqlite-api.c \
	modules/storage-sqlite/sqlite-store.c \
	modules/storage-sqlite/sqlite-checkpoint.c \
	modules/storage-sqlite/sqlite-db.c \
	modules/storage-sqlite/sqlite-schema.c \
	modules/storage-sqlite/sqlite-mailbox.c \
	modules/storage-sqlite/sqlite-queue.c \
	modules/storage-sqlite/sqlite-origin.c \
	modules/storage-sqlite/sqlite-directory.c
modules_storage_sqlite_la_CFLAGS = $(MODULE_CFLAGS) $(SQLITE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-storage-sqlite\"
modules_storage_sqlite_la_LDFLAGS = $(MODULE_FLAGS)
modules_storage_sqlite_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS) $(SQLITE_LIBS)

# Unit tests through the real core (a generation built from a temporary conf dir).
check_PROGRAMS += modules/storage-sqlite/test-storage-sqlite
TESTS += modules/storage-sqlite/test-storage-sqlite
modules_storage_sqlite_test_storage_sqlite_SOURCES = modules/storage-sqlite/test-storage-sqlite.c
modules_storage_sqlite_test_storage_sqlite_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/unit
modules_storage_sqlite_test_storage_sqlite_CFLAGS = $(UNIT_CFLAGS) $(SQLITE_CFLAGS)
modules_storage_sqlite_test_storage_sqlite_LDADD = $(UNIT_LDADD) $(SQLITE_LIBS)
# The module under test must be built before the test runs.
EXTRA_modules_storage_sqlite_test_storage_sqlite_DEPENDENCIES = modules/storage-sqlite.la

# The crash test: sq-crash-writer commits until SIGKILLed at a random moment,
# the test reopens the store and checks every acknowledged commit. 500 kill
# points in the default suite; `make crash-test-long` runs 5000.
check_PROGRAMS += \
	modules/storage-sqlite/sq-crash-writer \
	modules/storage-sqlite/test-storage-sqlite-crash
TESTS += modules/storage-sqlite/test-storage-sqlite-crash
modules_storage_sqlite_sq_crash_writer_SOURCES = modules/storage-sqlite/sq-crash-writer.c
modules_storage_sqlite_sq_crash_writer_LDADD = core/libpillarbox.la $(GLIB_LIBS) $(LTDL_LIBS)
# A real executable (no libtool wrapper script): it is started hundreds of times.
modules_storage_sqlite_sq_crash_writer_LDFLAGS = -no-install
modules_storage_sqlite_test_storage_sqlite_crash_SOURCES = modules/storage-sqlite/test-storage-sqlite-crash.c
modules_storage_sqlite_test_storage_sqlite_crash_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/unit
modules_storage_sqlite_test_storage_sqlite_crash_CFLAGS = $(UNIT_CFLAGS) $(SQLITE_CFLAGS)
modules_storage_sqlite_test_storage_sqlite_crash_LDADD = $(UNIT_LDADD) $(SQLITE_LIBS)
EXTRA_modules_storage_sqlite_test_storage_sqlite_crash_DEPENDENCIES = \
	modules/storage-sqlite.la modules/storage-sqlite/sq-crash-writer

crash-test-long: modules/storage-sqlite.la modules/storage-sqlite/sq-crash-writer modules/storage-sqlite/test-storage-sqlite-crash
	@$(AM_TESTS_ENVIRONMENT) PB_CRASH_ROUNDS=$${PB_CRASH_ROUNDS:-5000} \
	  ./modules/storage-sqlite/test-storage-sqlite-crash
.PHONY: crash-test-long

# Benchmarks (run from the top of the build tree): tests/bench/store-commit
# drives the module through the core; store-body-bench measured blobs in the
# database against spool files (docs/storage-sqlite.md has the figures).
noinst_PROGRAMS += tests/bench/store-commit-bench tests/bench/store-body-bench
tests_bench_store_commit_bench_SOURCES = tests/bench/store-commit-bench.c
tests_bench_store_commit_bench_LDADD = core/libpillarbox.la $(GLIB_LIBS) $(LTDL_LIBS)
tests_bench_store_commit_bench_LDFLAGS = -no-install
tests_bench_store_body_bench_SOURCES = tests/bench/store-body-bench.c
tests_bench_store_body_bench_CFLAGS = $(AM_CFLAGS) $(SQLITE_CFLAGS)
tests_bench_store_body_bench_LDADD = $(GLIB_LIBS) $(SQLITE_LIBS)
EXTRA_DIST += \
	tests/bench/store-commit \
	docs/storage-sqlite.md
