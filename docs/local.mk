# SPDX-License-Identifier: MIT
# Manual pages and guides.

dist_man_MANS = \
	docs/pillarboxd.8 \
	docs/pillarbox.1 \
	docs/pillarbox.conf.5
EXTRA_DIST += \
	docs/admin-guide.md \
	docs/plugin-guide.md \
	docs/design-decisions.md
