# SPDX-License-Identifier: MIT
# libpillarbox (the core, which modules link), pillarboxd and the pillarbox command.

lib_LTLIBRARIES = core/libpillarbox.la
core_libpillarbox_la_SOURCES = \
	core/pb-private.h \
	core/core-private.h \
	core/util.c \
	core/loop.c \
	core/conf.c \
	core/conf.h \
	core/settings.c \
	core/settings.h \
	core/settings-doc.c \
	core/settings-doc.h \
	core/loader.c \
	core/generation.c \
	core/hooks.c \
	core/session.c \
	core/listener.c \
	core/storage.c \
	core/router.c \
	core/auth.c \
	core/dircmds.c \
	core/dns.c \
	core/connect.c \
	core/queue.c \
	core/schedule.c \
	core/bounce.c \
	core/queuecmds.c \
	core/transport.c \
	core/transport.h \
	core/builtins.c \
	core/conn.c \
	core/tls.c \
	core/tls-private.h \
	core/control.c \
	core/log.c \
	core/log.h \
	core/daemon.c
core_libpillarbox_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden $(GNUTLS_CFLAGS) $(JSON_CFLAGS) $(CRYPT_CFLAGS) $(UNBOUND_CFLAGS)
core_libpillarbox_la_LIBADD = $(GLIB_LIBS) $(GNUTLS_LIBS) $(JSON_LIBS) $(LTDL_LIBS) $(CRYPT_LIBS) $(UNBOUND_LIBS)
# libtool version of the shared library; the plugin ABI is versioned separately (pb-abi.h).
core_libpillarbox_la_LDFLAGS = $(AM_LDFLAGS) -version-info 1:0:0

sbin_PROGRAMS = core/pillarboxd
core_pillarboxd_SOURCES = core/pillarboxd.c
core_pillarboxd_LDADD = core/libpillarbox.la $(GLIB_LIBS)

bin_PROGRAMS = core/pillarbox
core_pillarbox_SOURCES = core/cli.c
core_pillarbox_CFLAGS = $(AM_CFLAGS) $(JSON_CFLAGS)
core_pillarbox_LDADD = $(GLIB_LIBS) $(JSON_LIBS)

# Per-service log files with the real daemon (SMTP, POP3, connections; reopen; a stuck file).
TESTS += tests/integration/test-service-logs.py
EXTRA_DIST += tests/integration/test-service-logs.py
