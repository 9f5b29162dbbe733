# SPDX-License-Identifier: MIT
# Manual pages and guides; pillarbox.conf(5) is generated from the settings tables.

dist_man_MANS = \
	docs/pillarboxd.8 \
	docs/pillarbox.1
EXTRA_DIST += \
	docs/admin-guide.md \
	docs/plugin-guide.md \
	docs/design-decisions.md \
	docs/pillarbox.conf.5.in

# pillarbox.conf(5): the hand-written head and tail around the reference of
# every key that the just-built pillarboxd prints for the core and for each
# module this build installs (the names come from pkglib_LTLIBRARIES, so a
# new module is picked up and test-only modules are not). Generated in the
# build directory and not distributed: it always matches the code it
# describes. The loader refuses group-writable modules, hence the chmod.
PB_DOC_MODULES = $(notdir $(pkglib_LTLIBRARIES:.la=))
man_MANS = docs/pillarbox.conf.5
docs/pillarbox.conf.5: $(srcdir)/docs/pillarbox.conf.5.in core/pillarboxd$(EXEEXT) $(pkglib_LTLIBRARIES) Makefile
	$(AM_V_GEN)$(MKDIR_P) docs && \
	{ chmod go-w $(top_builddir)/modules/.libs/*.so 2>/dev/null || :; } && \
	core/pillarboxd --print-settings=man -o core.module-dir='$(abs_top_builddir)/modules' \
	  $(PB_DOC_MODULES) > $@.settings && \
	sed -e 's|%VERSION%|$(PACKAGE_VERSION)|g' -e '/^@SETTINGS@$$/{' -e 'r $@.settings' -e 'd' -e '}' \
	  $(srcdir)/docs/pillarbox.conf.5.in > $@.tmp && \
	printf '%s\n' $(PB_DOC_MODULES) > docs/pillarbox-modules.list && \
	rm -f $@.settings && mv -f $@.tmp $@
CLEANFILES += docs/pillarbox.conf.5 docs/pillarbox.conf.5.tmp docs/pillarbox.conf.5.settings \
	docs/pillarbox-modules.list

# Every key has real help, is in its module's docs/NAME.md and in the page;
# fx-undoc is the module the check must reject.
TESTS += tests/unit/check-settings-docs.py
EXTRA_DIST += tests/unit/check-settings-docs.py tests/fixtures/fx-undoc.md
check_LTLIBRARIES += tests/fixtures/fx-undoc.la
tests_fixtures_fx_undoc_la_SOURCES = tests/fixtures/fx-undoc.c
tests_fixtures_fx_undoc_la_CFLAGS = $(MODULE_CFLAGS)
tests_fixtures_fx_undoc_la_LDFLAGS = $(MODULE_FLAGS) -rpath /nowhere
tests_fixtures_fx_undoc_la_LIBADD = core/libpillarbox.la $(GLIB_LIBS)
tests/unit/check-settings-docs.log: docs/pillarbox.conf.5
