# SPDX-License-Identifier: MIT
# The public plugin ABI headers and their pkg-config file.

pbincludedir = $(includedir)/pillarbox-1/pillarbox
pbinclude_HEADERS = \
	plugin-api/pillarbox/pillarbox.h \
	plugin-api/pillarbox/pb-abi.h \
	plugin-api/pillarbox/pb-settings.h \
	plugin-api/pillarbox/pb-module.h \
	plugin-api/pillarbox/pb-conn.h \
	plugin-api/pillarbox/pb-session.h \
	plugin-api/pillarbox/pb-hooks.h \
	plugin-api/pillarbox/pb-control.h \
	plugin-api/pillarbox/pb-storage.h \
	plugin-api/pillarbox/pb-directory.h \
	plugin-api/pillarbox/pb-dns.h \
	plugin-api/pillarbox/pb-transport.h \
	plugin-api/pillarbox/pb-log.h \
	plugin-api/pillarbox/pb-loop.h

pkgconfigdir = $(libdir)/pkgconfig
pkgconfig_DATA = plugin-api/pillarbox-plugin.pc
EXTRA_DIST += plugin-api/pillarbox-plugin.pc.in
