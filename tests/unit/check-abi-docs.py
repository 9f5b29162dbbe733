# SPDX-License-Identifier: MIT
"""Every public item of the plugin ABI has a gtk-doc comment with a Since: line."""

import glob
import os
import re
import sys

top = os.environ.get("top_srcdir") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
problems = []
count = 0
for path in sorted(glob.glob(os.path.join(top, "plugin-api", "pillarbox", "*.h"))):
    text = open(path).read()
    name = os.path.basename(path)
    if not text.startswith("/* SPDX-License-Identifier:"):
        problems.append("%s: does not start with an SPDX line" % name)
    code = re.sub(r"\|\[.*?\]\|", "", text, flags=re.S)  # examples inside comments
    items = set()
    items.update(re.findall(r"PB_API\s+[^;]*?\b(pb_\w+)\s*\(", code))
    items.update(re.findall(r"typedef (?:struct|enum)\s*\{[^}]*\}\s*(\w+);", code, re.S))
    items.update(re.findall(r"typedef struct _\w+ (\w+);", code))
    items.update(re.findall(r"typedef [^;(]*\(\*(\w+)\)", code))
    items.update(re.findall(r"#define (PB_\w+)", code))
    for item in sorted(items):
        count += 1
        block = re.search(r"/\*\*\n \* %s:\n(.*?)\*/" % re.escape(item), text, re.S)
        if block is None:
            problems.append("%s: %s has no gtk-doc comment" % (name, item))
        elif "Since: ABI" not in block.group(1):
            problems.append("%s: %s's comment has no 'Since: ABI x.y'" % (name, item))
for p in problems:
    print("FAIL:", p)
print("checked %d public items" % count)
sys.exit(1 if problems else 0)
