# SPDX-License-Identifier: MIT
# systemd unit, and the example out-of-tree plugin (shipped as source).

systemdsystemunit_DATA = contrib/pillarbox.service
EXTRA_DIST += \
	contrib/pillarbox.service.in \
	contrib/example-plugin/Makefile \
	contrib/example-plugin/example.c \
	contrib/example-plugin/example.conf \
	contrib/example-plugin/README.md

contrib/pillarbox.service: contrib/pillarbox.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) contrib && sed -e 's|@SBINDIR@|$(sbindir)|g' -e 's|@SYSCONFDIR@|$(sysconfdir)|g' \
	  -e 's|@LOCALSTATEDIR@|$(localstatedir)|g' $(srcdir)/contrib/pillarbox.service.in > $@
CLEANFILES += contrib/pillarbox.service
