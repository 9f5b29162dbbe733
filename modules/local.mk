# SPDX-License-Identifier: MIT
# In-tree modules. Each module has a fragment modules/NAME/local.mk that adds
# pkglib_LTLIBRARIES += modules/NAME.la (sources in modules/NAME/, built with
# $(MODULE_CFLAGS) and $(MODULE_FLAGS), linked with core/libpillarbox.la), its
# tests, and its conf.d file. The build tree's modules land in modules/.libs/,
# which is what tests pass as core.module-dir.
EXTRA_DIST += modules/README.md

include modules/storage-sqlite/local.mk
include modules/smtp-server/local.mk
include modules/pop3-server/local.mk
include modules/load-limit/local.mk
include modules/ids/local.mk
include modules/rate-cap/local.mk
include modules/smtp-client/local.mk
include modules/relay-sender/local.mk
include modules/mx-sender/local.mk
include modules/spf/local.mk
include modules/batv/local.mk
include modules/pop3-collector/local.mk
include modules/metrics/local.mk
include modules/status-monitor/local.mk
