# SPDX-License-Identifier: MIT
"""What remote servers say must not reach the administrator's terminal raw: MX host names from
DNS with CR LF or ESC in them, and SMTP replies with ESC[2J, OSC sequences and bare CRs.
The real daemon (storage-sqlite, smtp-server, mx-sender) delivers through tests/dns-server.py
and a scripted SMTP peer; neither `pillarbox queue show` (text and JSON) nor the stored bounce
may hold a control octet other than a line end."""

import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import importlib.util  # noqa: E402

from pbtest import PILLARBOX, TIMEOUT, TOP_SRCDIR, Failure, ScriptedPeer, check, run_tests, wait_for  # noqa: E402

_spec = importlib.util.spec_from_file_location("smtp_common", os.path.join(HERE, "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

sys.path.insert(0, os.path.join(TOP_SRCDIR, "modules", "spf"))
from spf_zone import DnsServer  # noqa: E402

# Octets no output of `pillarbox` may hold: C0 controls but HT and LF, DEL. A mail (the
# bounce) may hold CR too, only before LF.
RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
RAW_CONTROL_MAIL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")

# The peer's replies: a screen clear and a bare CR that would hide what precedes it on a
# terminal; a window-title (OSC) sequence.
BOUNCE_REPLY = "550 5.1.1 gone\x1b[2J\rFAKE: all is well"
LATER_REPLY = "451 4.2.0 busy\x1b]0;pwned\x07\rX"

ZONE = """\
$ORIGIN example.
$TTL 300
remote      IN MX 10 mx.remote.example.
mx.remote   IN A  127.0.0.1
crlf        IN MX 10 mx\\013\\010bcc.crlf.example.
esc         IN MX 10 a\\027[2J.esc.example.
a\\027[2J.esc IN A 127.0.0.1
mixed       IN MX 10 a\\027[2J.esc.example.
mixed       IN MX 20 mx.remote.example.
"""


def raw_controls(data, pattern=RAW_CONTROL):
    return [m.group(0) for m in pattern.finditer(data)]


def cli_bytes(d, *args):
    """The command's output as octets (text mode would turn a bare CR into a line end)."""
    p = subprocess.run([PILLARBOX, "--state-dir", d.state] + list(args), capture_output=True, timeout=TIMEOUT)
    check(p.returncode == 0, "pillarbox %s: exit %d: %r" % (" ".join(args), p.returncode, p.stderr))
    return p.stdout


def test_remote_text_escaped():
    dns = DnsServer(ZONE)
    d = common.SmtpDaemon(core_extra="retry-schedule = 1h\nqueue-scan-interval = 1s\ndns-servers = %s\n"
                          % dns.address, start=False)
    peer = ScriptedPeer(d.tmp, "--rcpt", "bounce=" + BOUNCE_REPLY, "--rcpt", "later=" + LATER_REPLY)
    try:
        d.write("50-mx-sender.conf", "[module mx-sender]\nhelo-name = mx.test.example\nport = %d\ntls = none\n"
                % peer.port)
        d.start()
        d.cli("domain", "add", common.DOMAIN)
        d.cli("user", "add", "bob@%s" % common.DOMAIN, input=common.PASSWORD + "\n")
        rcpts = ["bounce@remote.example", "later@remote.example", "x@crlf.example", "y@esc.example",
                 "ok@mixed.example"]
        common.submit(d, rcpts, content="Subject: hostile\r\n\r\nbody\r\n")

        def queue():
            return json.loads(d.cli("--json", "queue", "list").stdout)

        def tried():
            q = queue()
            return q if len(q) == len(rcpts) and all(e[5] >= 1 for e in q) else None
        try:
            q = wait_for("an attempt for every recipient", tried)
        except Failure:
            raise Failure("the queue: %s\n%s" % (queue(), d.read_log()[-4000:]))

        # Every problem is reported, not only the first.
        problems = []

        def expect(cond, message):
            if not cond:
                problems.append(message)

        for args in (("queue", "list"), ("--json", "queue", "list"), ("queue", "show", q[0][0]),
                     ("--json", "queue", "show", q[0][0])):
            out = cli_bytes(d, *args)
            expect(not raw_controls(out), "pillarbox %s: raw control octets %r in:\n%r"
                   % (" ".join(args), raw_controls(out), out))
        states = {e[2]: e[4] for e in q}
        # An MX host whose name is not a host name is no MX: esc.example has no other, mixed.example has.
        expect(states == {"bounce@remote.example": "bounced", "later@remote.example": "deferred",
                          "x@crlf.example": "deferred", "y@esc.example": "deferred",
                          "ok@mixed.example": "delivered"}, "states: %s" % states)
        shown = d.cli("queue", "show", q[0][0]).stdout
        expect("451 4.2.0 busy\\x1b]0;pwned\\x07\\x0dX" in shown, "queue show: %r" % shown)
        for domain in ("crlf.example", "esc.example"):
            expect("the MX records of %s cannot be read" % domain in shown, "queue show (%s): %r" % (domain, shown))

        # The refused MX names are logged, escaped.
        log = d.read_log()
        expect("mx\\013\\010bcc.crlf.example" in log and "a\\027[2j.esc.example" in log,
               "the refused MX hosts are not logged")

        # bob's bounce for bounce@ names the reply, escaped, and holds no raw control octet.
        def dsn():
            with common.contextlib.closing(d.db()) as db:
                return b"".join(r[0] for r in db.execute(
                    "SELECT c.data FROM chunks c JOIN messages m ON m.id = c.message_id WHERE m.sender = '' "
                    "ORDER BY c.pos"))
        raw = wait_for("the bounce", dsn)
        expect(b"550 5.1.1 gone\\x1b[2J\\x0dFAKE: all is well" in raw, "bounce: %r" % raw[:3000])
        expect(not raw_controls(raw, RAW_CONTROL_MAIL), "raw control octets %r in the bounce:\n%r"
               % (raw_controls(raw, RAW_CONTROL_MAIL), raw[:3000]))
        check(not problems, "\n".join(problems))
        d.finish()
    finally:
        peer.close()
        d.close()
        dns.close()


if __name__ == "__main__":
    run_tests([test_remote_text_escaped])
