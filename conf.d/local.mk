# SPDX-License-Identifier: MIT
# The shipped configuration: the embedded default (loopback, unprivileged ports).
# Installed only where no file of the same name exists yet, so a reinstall never
# overwrites an administrator's edits; uninstall removes only unmodified files.
# A module's fragment (modules/NAME/local.mk) adds its own file with CONFD_FILES +=.

CONFD_FILES += \
	conf.d/00-core.conf \
	conf.d/10-storage-sqlite.conf \
	conf.d/20-smtp-server.conf \
	conf.d/30-pop3-server.conf \
	conf.d/40-load-limit.conf \
	conf.d/41-ids.conf \
	conf.d/42-rate-cap.conf \
	conf.d/50-relay-sender.conf \
	conf.d/51-mx-sender.conf
EXTRA_DIST += $(CONFD_FILES)
confddir = $(sysconfdir)/pillarbox/conf.d

install-data-local: install-confd
install-confd:
	$(MKDIR_P) "$(DESTDIR)$(confddir)"
	@for f in $(CONFD_FILES); do \
	  dst="$(DESTDIR)$(confddir)/$$(basename $$f)"; \
	  if test -e "$$dst"; then echo "  keeping existing $$dst"; \
	  else echo "  $(INSTALL_DATA) $$f $$dst"; $(INSTALL_DATA) "$(srcdir)/$$f" "$$dst" || exit 1; fi; \
	done

uninstall-local: uninstall-confd
uninstall-confd:
	@for f in $(CONFD_FILES); do \
	  dst="$(DESTDIR)$(confddir)/$$(basename $$f)"; \
	  if test -e "$$dst" && cmp -s "$(srcdir)/$$f" "$$dst"; then rm -f "$$dst"; \
	  elif test -e "$$dst"; then echo "  keeping modified $$dst"; fi; \
	done

.PHONY: install-confd uninstall-confd
