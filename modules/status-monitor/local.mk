# SPDX-License-Identifier: MIT
# status-monitor: VPOP3's Status Monitor service on port 5109 (issue 10): LOGIN, update lines
# (connection status, sessions, queue counts, activity), STATUS and CONNECT; its tests.

pkglib_LTLIBRARIES += modules/status-monitor.la
modules_status_monitor_la_SOURCES = \
	modules/status-monitor/sm-private.h \
	modules/status-monitor/sm-line.c \
	modules/status-monitor/sm-hub.c \
	modules/status-monitor/sm-session.c \
	modules/status-monitor/status-monitor-module.c
modules_status_monitor_la_CFLAGS = $(MODULE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-status-monitor\"
modules_status_monitor_la_LDFLAGS = $(MODULE_FLAGS)
modules_status_monitor_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)

# Unit tests of the line format: FILETIME, escaping, update lines read back, command
# parsing, the lines made from the status and sessions commands' data.
check_PROGRAMS += modules/status-monitor/test-status-monitor
TESTS += modules/status-monitor/test-status-monitor
modules_status_monitor_test_status_monitor_SOURCES = \
	modules/status-monitor/test-status-monitor.c \
	modules/status-monitor/sm-line.c \
	modules/status-monitor/sm-private.h
modules_status_monitor_test_status_monitor_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/unit -DG_LOG_DOMAIN=\"pillarbox-status-monitor\"
modules_status_monitor_test_status_monitor_CFLAGS = $(UNIT_CFLAGS)
modules_status_monitor_test_status_monitor_LDADD = $(UNIT_LDADD)

# Integration test: the real daemon with storage-sqlite, smtp-server, relay-sender and a
# scripted SMTP peer; a Python monitor client.
STATUS_MONITOR_INTEGRATION_TESTS = modules/status-monitor/test-status-monitor-daemon.py
TESTS += $(STATUS_MONITOR_INTEGRATION_TESTS)
EXTRA_DIST += \
	$(STATUS_MONITOR_INTEGRATION_TESTS) \
	docs/status-monitor.md
CONFD_FILES += conf.d/71-status-monitor.conf
# The daemon and modules run from the build tree: build them first, and keep
# test-example-plugin's `make install` (which may relink them) from running beside it.
modules/status-monitor/test-status-monitor-daemon.log: modules/status-monitor.la modules/storage-sqlite.la \
	modules/smtp-server.la modules/relay-sender.la
