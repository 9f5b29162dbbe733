# SPDX-License-Identifier: MIT
# In-tree modules: each one adds itself here as pkglib_LTLIBRARIES += modules/NAME.la
# with sources in modules/NAME/, built with $(MODULE_CFLAGS) and $(MODULE_FLAGS),
# linked with core/libpillarbox.la. The build tree's modules land in modules/.libs/,
# which is what tests pass as core.module-dir.
EXTRA_DIST += modules/README.md
