# SPDX-License-Identifier: MIT
# systemd unit, logrotate configuration, and the example out-of-tree plugin (shipped as source).

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

# Rotation of the per-service log files (core.service-logs in the default
# log directory). Installed into $(sysconfdir)/logrotate.d like the unit
# file: in place with --sysconfdir=/etc (packages); under /usr/local an
# administrator links it into /etc/logrotate.d.
logrotatedir = $(sysconfdir)/logrotate.d
logrotate_DATA = contrib/logrotate/pillarbox
EXTRA_DIST += contrib/logrotate/pillarbox.in
contrib/logrotate/pillarbox: contrib/logrotate/pillarbox.in Makefile
	$(AM_V_GEN)$(MKDIR_P) contrib/logrotate && sed -e 's|@BINDIR@|$(bindir)|g' \
	  -e 's|@STATEDIR@|$(localstatedir)/lib/pillarbox|g' -e 's|@LOGDIR@|$(localstatedir)/lib/pillarbox/log|g' \
	  $(srcdir)/contrib/logrotate/pillarbox.in > $@
CLEANFILES += contrib/logrotate/pillarbox
