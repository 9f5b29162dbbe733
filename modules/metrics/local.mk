# SPDX-License-Identifier: MIT
# metrics: Prometheus text exposition over HTTP (GET /metrics); its unit tests (exposition
# format and escaping, the HTTP request parser, the counters and the page) and its
# integration test (real daemon, mixed traffic, every counter checked).

pkglib_LTLIBRARIES += modules/metrics.la
modules_metrics_la_SOURCES = \
	modules/metrics/metrics-private.h \
	modules/metrics/metrics-expo.c \
	modules/metrics/metrics-http.c \
	modules/metrics/metrics-render.c \
	modules/metrics/metrics-module.c
modules_metrics_la_CFLAGS = $(MODULE_CFLAGS) -DG_LOG_DOMAIN=\"pillarbox-metrics\"
modules_metrics_la_LDFLAGS = $(MODULE_FLAGS)
modules_metrics_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS) -lm

check_PROGRAMS += modules/metrics/test-metrics
TESTS += modules/metrics/test-metrics
modules_metrics_test_metrics_SOURCES = \
	modules/metrics/test-metrics.c \
	modules/metrics/metrics-expo.c \
	modules/metrics/metrics-http.c \
	modules/metrics/metrics-render.c \
	modules/metrics/metrics-private.h
modules_metrics_test_metrics_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/unit -DG_LOG_DOMAIN=\"pillarbox-metrics\"
modules_metrics_test_metrics_CFLAGS = $(UNIT_CFLAGS)
modules_metrics_test_metrics_LDADD = $(UNIT_LDADD) -lm

TESTS += modules/metrics/test-metrics-traffic.py
CONFD_FILES += conf.d/70-metrics.conf
EXTRA_DIST += \
	modules/metrics/test-metrics-traffic.py \
	docs/metrics.md
# The modules the integration test runs.
modules/metrics/test-metrics-traffic.log: \
	modules/metrics.la modules/storage-sqlite.la modules/smtp-server.la modules/pop3-server.la \
	modules/ids.la modules/relay-sender.la
