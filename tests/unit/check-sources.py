# SPDX-License-Identifier: MIT
"""Every main-loop source in core/ and modules/ goes through pb-loop.h, and is let go whole.

A destroyed source that is never unreferenced stays in its context's list for the life of the
process and slows every loop iteration (issue 27). The rule (docs/design-decisions.md, "Sources
on the loop"): attach through pb_source_attach() or the pb_*_add() conveniences, so that the
source is counted in `pillarbox status`; let go of a kept source with pb_source_clear(). This
check fails on the calls that bypass the count, and on a g_source_destroy() that is not followed
by the g_source_unref() of the same source.
"""

import glob
import os
import re
import sys

top = os.environ.get("top_srcdir") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
BYPASS = re.compile(r"\b(g_source_attach|g_timeout_add(?:_full|_seconds(?:_full)?|_once)?|g_idle_add(?:_full|_once)?"
                    r"|g_unix_fd_add(?:_full)?|g_unix_signal_add(?:_full)?|g_child_watch_add(?:_full)?)\s*\(")
DESTROY_ONLY = re.compile(r"g_clear_pointer\s*\([^;]*g_source_destroy\s*\)")
DESTROY = re.compile(r"g_source_destroy\s*\(\s*(?:\(GSource \*\)\s*)?([^)]+?)\s*\)\s*;")

problems = []
files = 0
for path in sorted(glob.glob(os.path.join(top, "core", "*.c")) + glob.glob(os.path.join(top, "modules", "*", "*.c"))):
    name = os.path.relpath(path, top)
    base = os.path.basename(path)
    if base.startswith("test-") or name == os.path.join("core", "loop.c"):
        continue
    files += 1
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        code = line.split("//")[0]
        m = BYPASS.search(code)
        if m:
            problems.append("%s:%d: %s() bypasses the source count; use pb-loop.h" % (name, i + 1, m.group(1)))
        if DESTROY_ONLY.search(code):
            problems.append("%s:%d: a source destroyed but never released; use pb_source_clear()" % (name, i + 1))
            continue
        m = DESTROY.search(code)
        if m:
            what = re.escape(m.group(1))
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if not re.search(r"g_source_unref\s*\(\s*(?:\(GSource \*\)\s*)?%s\s*\)" % what, following) \
                    and not re.search(r"g_clear_pointer\s*\(\s*&%s\s*,\s*g_source_unref\s*\)" % what, following):
                problems.append("%s:%d: g_source_destroy (%s) is not followed by its g_source_unref; "
                                "use pb_source_clear()" % (name, i + 1, m.group(1)))
for p in problems:
    print("FAIL:", p)
print("checked %d files" % files)
sys.exit(1 if problems else 0)
