# SPDX-License-Identifier: MIT
"""Every setting of the core and of every built module has real help text, appears in its module's
docs/NAME.md, and appears in the generated pillarbox.conf(5); and the check itself catches a
fixture module whose keys are undocumented."""

import json
import os
import re
import subprocess
import sys

TOP_BUILDDIR = os.environ.get("top_builddir") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
TOP_SRCDIR = os.environ.get("top_srcdir") or TOP_BUILDDIR
PILLARBOXD = os.path.join(TOP_BUILDDIR, "core", "pillarboxd")
MAN_PAGE = os.path.join(TOP_BUILDDIR, "docs", "pillarbox.conf.5")
MODULE_LIST = os.path.join(TOP_BUILDDIR, "docs", "pillarbox-modules.list")

# Help that only pretends to document: a marker, or too short to say anything.
PLACEHOLDER = re.compile(r"\b(TODO|FIXME|XXX|TBD|TBA)\b|^\s*(undocumented|help|doc|description|none|n/?a)\s*\.?\s*$",
                         re.I)
MIN_HELP = 15


def settings(module_dir, names):
    """The settings reference as pillarboxd prints it (the generator under test)."""
    p = subprocess.run([PILLARBOXD, "--print-settings=json", "-o", "core.module-dir=%s" % module_dir] + names,
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise SystemExit("pillarboxd --print-settings failed (%d): %s" % (p.returncode, p.stderr))
    return json.loads(p.stdout)


def roff(text):
    return text.replace("\\", "\\e").replace("-", "\\-")


def man_sections(page):
    """{'.SS' title as printed: [keys]} of a generated page."""
    out = {}
    current = None
    lines = page.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'^\.SS "(.*)"$', line)
        if m:
            current = out.setdefault(m.group(1), [])
        elif line == ".TP" and current is not None and i + 1 < len(lines) and lines[i + 1].startswith(".B "):
            current.append(lines[i + 1][3:])
    return out


def problems_of(groups, docs_dir, page):
    problems = []
    sections = man_sections(page)
    doc_cache = {}
    for g in groups:
        where = g["group"] + (" (module %s)" % g["module"] if g["module"] and g["kind"] != "module" else "")
        if not (g["summary"] or "").strip():
            problems.append("%s: no summary" % where)
        for k in g["keys"]:
            key, doc = k["key"], (k["doc"] or "").strip()
            if not doc:
                problems.append("%s: key '%s' has empty help" % (where, key))
            elif len(doc) < MIN_HELP or PLACEHOLDER.search(doc) or doc.rstrip(".").lower() == key.lower():
                problems.append("%s: key '%s' has placeholder help: %r" % (where, key, doc))
            if g["module"]:
                md = os.path.join(docs_dir, g["module"] + ".md")
                if md not in doc_cache:
                    doc_cache[md] = open(md, encoding="utf-8").read() if os.path.exists(md) else None
                text = doc_cache[md]
                if text is not None and not re.search(r"`%s`|^#?\s*%s\s*=" % (re.escape(key), re.escape(key)),
                                                      text, re.M):
                    problems.append("%s: key '%s' is not documented in %s" % (where, key, os.path.basename(md)))
            if roff(key) not in sections.get(roff(g["group"]), []):
                problems.append("%s: key '%s' is missing from the manual page" % (where, key))
    return problems


def check_built_modules():
    with open(MODULE_LIST) as f:
        names = [line.strip() for line in f if line.strip()]
    groups = settings(os.path.join(TOP_BUILDDIR, "modules"), names)
    printed = {g["module"] for g in groups if g["module"]}
    missing = sorted(set(names) - printed)
    with open(MAN_PAGE, encoding="utf-8") as f:
        page = f.read()
    problems = ["module %s: not in the settings reference" % n for n in missing]
    problems += problems_of(groups, os.path.join(TOP_SRCDIR, "docs"), page)
    count = sum(len(g["keys"]) for g in groups)
    return problems, count, len(names)


def check_fixture_is_caught():
    """fx-undoc has an empty help, a placeholder help and a key its .md omits; and a page
    without one of its keys must be noticed too."""
    fixtures = os.path.join(TOP_BUILDDIR, "tests", "fixtures")
    os.chmod(os.path.join(fixtures, ".libs", "fx-undoc.so"), 0o755)
    groups = [g for g in settings(fixtures, ["fx-undoc"]) if g["module"] == "fx-undoc"]
    p = subprocess.run([PILLARBOXD, "--print-settings=man", "-o", "core.module-dir=%s" % fixtures, "fx-undoc"],
                       capture_output=True, text=True, timeout=60, check=True)
    page = p.stdout.replace(".TP\n.B %s\n" % roff("listen-backlog"), ".TP\n")
    got = sorted(problems_of(groups, os.path.join(TOP_SRCDIR, "tests", "fixtures"), page))
    want = sorted([
        "[module fx-undoc]: key 'greeting' has empty help",
        "[module fx-undoc]: key 'max-items' has placeholder help: 'TODO'",
        "[module fx-undoc]: key 'secret-mode' is not documented in fx-undoc.md",
        "[module fx-undoc]: key 'listen-backlog' is missing from the manual page",
        "[widget NAME] (module fx-undoc): key 'colour' has placeholder help: 'Colour.'",
    ])
    return [] if got == want else ["the check of fx-undoc found %s, expected %s" % (got, want)]


def main():
    problems, keys, modules = check_built_modules()
    problems += check_fixture_is_caught()
    for p in problems:
        print("FAIL: %s" % p)
    print("%d keys of the core and %d modules checked; %d problem(s)" % (keys, modules, len(problems)))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
