#!/bin/sh
# SPDX-License-Identifier: MIT
# The example plugin builds out of tree from the *installed* headers through pkg-config alone,
# pillarboxd loads it and serves through it, and the same source rebuilt with another ABI major
# is refused with both versions in the message.
set -eu
: "${top_builddir:?}" "${top_srcdir:?}"
PYTHON3=${PYTHON3:-/usr/bin/python3}
tmp=$(mktemp -d /tmp/pillarbox-plugin-XXXXXX)
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 1. Install into a staging root (headers, libpillarbox, pillarbox-plugin.pc).
make -C "$top_builddir" install DESTDIR="$tmp/root" > "$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "make install"; }
pc=$(find "$tmp/root" -name pillarbox-plugin.pc | head -n 1)
[ -n "$pc" ] || fail "pillarbox-plugin.pc was not installed"
# The staged .pc still names the configured prefix; point it at the staging root.
prefix=$(sed -n 's/^prefix=//p' "$pc")
mkdir "$tmp/pkgconfig"
sed "s|^prefix=.*|prefix=$tmp/root$prefix|" "$pc" > "$tmp/pkgconfig/pillarbox-plugin.pc"
export PKG_CONFIG_PATH="$tmp/pkgconfig"
pkg-config --exists --print-errors pillarbox-plugin || fail "pkg-config cannot find pillarbox-plugin"
[ "$(pkg-config --variable=abi_major pillarbox-plugin)" = 1 ] || fail "abi_major in pillarbox-plugin.pc"

# 2. Build a copy of the example from the installed headers only (no -I into the source tree).
mkdir "$tmp/src" "$tmp/mods"
cp "$top_srcdir/contrib/example-plugin/example.c" "$top_srcdir/contrib/example-plugin/Makefile" "$tmp/src/"
make -C "$tmp/src" CFLAGS="-O2 -g -Werror" > "$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; fail "out-of-tree build"; }
grep -q -- "-I$tmp/root" "$tmp/build.log" || { cat "$tmp/build.log"; fail "the build did not use the installed headers"; }
exported=$(nm -D --defined-only "$tmp/src/example.so" | awk '$2 ~ /[A-Z]/ {print $3}' | grep -v '^_' || true)
[ "$exported" = "pillarbox_module_info" ] || fail "example.so exports more than its descriptor: $exported"
install -m 0755 "$tmp/src/example.so" "$tmp/mods/example.so"

# 3. pillarboxd (the build tree's) loads it and serves through it.
port=$("$PYTHON3" -c 'import sys; sys.path.insert(0, sys.argv[1]); import pbtest; print(pbtest.free_port())' "$top_srcdir/tests/integration")
mkdir "$tmp/conf"
chmod 755 "$tmp/conf"
user=
[ "$(id -u)" = 0 ] && user="user = nobody"
printf '[core]\nmodule-dir = %s\n%s\n' "$tmp/mods" "$user" > "$tmp/conf/00-core.conf"
printf '[module example]\nlisten = 127.0.0.1:%s\ngreeting = built out of tree\n' "$port" > "$tmp/conf/10-example.conf"
"$top_builddir/core/pillarboxd" --check-config -c "$tmp/conf" || fail "check-config with the out-of-tree module"
"$top_builddir/core/pillarboxd" -f -c "$tmp/conf" --state-dir "$tmp/state" > "$tmp/daemon.log" 2>&1 &
daemon=$!
reply=$("$PYTHON3" - "$port" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
deadline = time.time() + 20
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
s.sendall(b"ECHO from the installed ABI\r\nQUIT\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode().replace("\r", ""))
PY
) || { kill "$daemon"; cat "$tmp/daemon.log"; fail "no answer from the out-of-tree module"; }
kill -TERM "$daemon"
wait "$daemon" || fail "pillarboxd exited with $?"
echo "$reply" | grep -q "^+OK built out of tree" || fail "greeting: $reply"
echo "$reply" | grep -q "^+OK from the installed ABI" || fail "echo: $reply"

# 4. The same plugin rebuilt for ABI 2 is refused, naming both versions.
make -C "$tmp/src" clean > /dev/null
make -C "$tmp/src" CFLAGS="-O2 -DPB_ABI_MAJOR=2" > "$tmp/build2.log" 2>&1 || { cat "$tmp/build2.log"; fail "ABI 2 build"; }
install -m 0755 "$tmp/src/example.so" "$tmp/mods/example.so"
minor=$(sed -n 's/^#define PB_ABI_MINOR \([0-9]*\)$/\1/p' "$top_srcdir/plugin-api/pillarbox/pb-abi.h")
if "$top_builddir/core/pillarboxd" --check-config -c "$tmp/conf" > "$tmp/check.log" 2>&1; then
  fail "a module built for ABI 2.$minor was accepted"
fi
cat "$tmp/check.log"
grep -q "10-example.conf:1: .*example.so: built for plugin ABI 2.$minor but this pillarboxd provides ABI 1.$minor" "$tmp/check.log" \
  || fail "the refusal does not name the file and both versions"
echo "ok - example plugin: out-of-tree build, load, serve, ABI 2 refused"
