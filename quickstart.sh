#!/bin/sh
# SPDX-License-Identifier: MIT
# The README's two commands: "run" installs, builds and starts pillarboxd with the shipped conf.d;
# "test" installs, builds and runs the whole test suite (normal build via distcheck, then sanitizers).
set -eu
cd "$(dirname "$0")"
top=$(pwd)
jobs=$(nproc 2>/dev/null || echo 2)

usage() {
  echo "usage: $0 run | test" >&2
  exit 64
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# install_packages SECTION: "run" takes the list above "## test", "test" takes all of it.
install_packages() {
  if [ "$1" = run ]; then
    pkgs=$(sed -e '/^## test/,$d' -e 's/#.*//' debian-packages.txt)
  else
    pkgs=$(sed -e 's/#.*//' debian-packages.txt)
  fi
  missing=
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
  done
  if [ -z "$missing" ]; then
    echo "== Debian packages: all installed"
    return
  fi
  echo "== installing Debian packages:$missing"
  # Postfix is only a test peer and benchmark reference: no system mail configuration.
  echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q > /dev/null
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

# build DIR [CONFIGURE ARGS...]
build() {
  dir=$1
  shift
  if [ ! -x configure ] || [ configure.ac -nt configure ]; then
    echo "== autogen"
    ./autogen.sh > /dev/null
  fi
  mkdir -p "$dir"
  if [ ! -f "$dir/Makefile" ]; then
    echo "== configure $*"
    (cd "$dir" && "$top/configure" "$@" > configure.out) || { cat "$dir/configure.out"; exit 1; }
  fi
  echo "== make in $dir"
  make -C "$dir" -j"$jobs" > "$dir/make.out" 2>&1 || { cat "$dir/make.out"; exit 1; }
}

cmd=${1:-}
case "$cmd" in
  run)
    install_packages run
    build _build/default
    if [ "$(id -u)" = 0 ] && ! id pillarbox > /dev/null 2>&1; then
      echo "== creating the system user 'pillarbox' (core.user) for the daemon to run as"
      adduser --system --group --no-create-home --home /nonexistent --quiet pillarbox
    fi
    state=$top/state
    # Started as root, the daemon drops to 'pillarbox', which must still reach
    # its state directory: a clone in a home directory of mode 0700 (Debian's
    # default) is out of its reach, so the state goes to /var/lib then.
    if [ "$(id -u)" = 0 ] && ! runuser -u pillarbox -- test -x "$top"; then
      state=/var/lib/pillarbox
      echo "== the user 'pillarbox' cannot reach $top (a parent directory is closed to it, such as a"
      echo "   home directory of mode 0700): the state goes to $state instead of $top/state"
    fi
    echo "== starting pillarboxd in the foreground (Ctrl-C stops it); state in $state"
    echo "   from another terminal:  sudo $top/_build/default/core/pillarbox --state-dir $state status"
    exec _build/default/core/pillarboxd -f -c conf.d --state-dir "$state" \
      -o core.module-dir="$top/_build/default/modules"
    ;;
  test)
    install_packages test
    build _build/check
    echo "== make distcheck (build, whole suite, install, dist) in _build/check"
    if ! make -C _build/check -j"$jobs" distcheck > _build/check/distcheck.out 2>&1; then
      tail -n 200 _build/check/distcheck.out
      find _build/check -name test-suite.log -newer _build/check/Makefile -exec cat {} \; 2>/dev/null | tail -n 400
      echo "FAIL: make distcheck"
      exit 1
    fi
    grep -E '^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):' _build/check/distcheck.out | sed 's/^/   normal build: /'
    build _build/asan --enable-sanitizers
    echo "== the whole suite under AddressSanitizer and UndefinedBehaviorSanitizer in _build/asan"
    if ! make -C _build/asan -j"$jobs" check; then
      cat _build/asan/test-suite.log
      grep -E '^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):' _build/asan/test-suite.log
      exit 1
    fi
    ;;
  *)
    usage
    ;;
esac
