# SPDX-License-Identifier: MIT
# The shipped configuration: the embedded default (loopback, unprivileged ports).

confddir = $(sysconfdir)/pillarbox/conf.d
dist_confd_DATA = \
	conf.d/00-core.conf
