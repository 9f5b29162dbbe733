#!/bin/sh
# SPDX-License-Identifier: MIT
# Every public header compiles on its own, as C99 and as C++ (a module may be written in either).
set -u
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${CC:=cc}"
: "${CXX:=c++}"
glib_cflags=$(pkg-config --cflags glib-2.0 gio-2.0)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
count=0
for header in "$top_srcdir"/plugin-api/pillarbox/*.h; do
  name=$(basename "$header")
  printf '#include <pillarbox/%s>\nint pb_header_test_%s;\n' "$name" "$(echo "$name" | tr -c 'a-z0-9\n' '_')" > "$tmp/t.c"
  cp "$tmp/t.c" "$tmp/t.cc"
  # shellcheck disable=SC2086
  if ! $CC -std=c99 -Wall -Wextra -Werror -fsyntax-only -I"$top_srcdir/plugin-api" $glib_cflags "$tmp/t.c" 2> "$tmp/err"; then
    echo "FAIL: $name does not compile alone as C99:"; cat "$tmp/err"; status=1
  fi
  # shellcheck disable=SC2086
  if ! $CXX -std=c++11 -Wall -Wextra -Werror -fsyntax-only -I"$top_srcdir/plugin-api" $glib_cflags "$tmp/t.cc" 2> "$tmp/err"; then
    echo "FAIL: $name does not compile alone as C++11:"; cat "$tmp/err"; status=1
  fi
  count=$((count + 1))
done
# A module written in C++ with PB_MODULE_DEFINE must compile too.
cat > "$tmp/m.cc" <<'CXX'
#include <pillarbox/pillarbox.h>
static gboolean m_init (PbModule *, const void *, GError **) { return TRUE; }
PB_MODULE_DEFINE (.name = "cxx", .version = "1", .summary = "C++ module", .init = m_init);
CXX
# shellcheck disable=SC2086
if ! $CXX -std=c++20 -Wall -Werror -fsyntax-only -I"$top_srcdir/plugin-api" $glib_cflags "$tmp/m.cc" 2> "$tmp/err"; then
  echo "FAIL: PB_MODULE_DEFINE does not compile as C++20:"; cat "$tmp/err"; status=1
fi
echo "checked $count headers as C99 and C++11"
exit $status
