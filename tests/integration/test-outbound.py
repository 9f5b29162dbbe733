# SPDX-License-Identifier: MIT
"""Outbound end to end: SMTP in, the queue manager, relay-sender, a real SMTP peer; per-session caps,
per-recipient results, retries with the remote reply kept for `queue show`, and a DSN to the sender."""

import base64
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "smtp_common", os.path.join(os.path.dirname(os.path.abspath(__file__)), "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)
from pbtest import ScriptedPeer, check, run_tests, wait_for  # noqa: E402



submit = common.submit


def queue(d):
    return json.loads(d.cli("--json", "queue", "list").stdout)


def test_relay_end_to_end():
    d = common.SmtpDaemon(core_extra="retry-schedule = 1s\nqueue-scan-interval = 1s\n", start=False)
    peer = ScriptedPeer(d.tmp, "--ext", "PIPELINING", "--rcpt", "bad=550 5.1.1 no such user here", "--rcpt", "slow=451 4.3.0 try again later")
    try:
        d.write("50-relay-sender.conf",
                "[module relay-sender]\n[relay-server peer]\naddress = 127.0.0.1:%d\nsecurity = none\n"
                "max-messages-per-session = 2\n" % peer.port)
        d.start()
        d.cli("domain", "add", common.DOMAIN)
        d.cli("user", "add", "bob@%s" % common.DOMAIN, input=common.PASSWORD + "\n")

        for i in range(5):
            submit(d, ["good%d@remote.example" % i], "message %d" % i)
        submit(d, ["good@remote.example", "bad@remote.example"], "mixed")
        submit(d, ["slow@remote.example"], "slow")

        # Six messages reach the peer, carried by sessions of at most two messages.
        msgs = wait_for("six messages at the peer", lambda: len(peer.messages()) >= 6 and peer.messages())
        per_session = {}
        for m in msgs:
            per_session[m["session"]] = per_session.get(m["session"], 0) + 1
        check(max(per_session.values()) <= 2, "a session carried more than 2 messages: %s" % per_session)
        bodies = [base64.b64decode(m["raw"]) for m in msgs]
        check(any(b"body of message 3" in b for b in bodies), "message content lost on the way")
        check(all(b.endswith(b"\r\n.\r\n") and b"\n." not in b.replace(b"\r\n.\r\n", b"") for b in bodies),
              "not dot-stuffed CRLF data")

        # bad@ bounced: bob gets a DSN naming the remote reply.
        def dsn():
            for entry in json.loads(d.cli("--json", "mailbox", "list", "bob@%s" % common.DOMAIN).stdout):
                return entry
            return None
        wait_for("the bounce in bob's mailbox", dsn)
        with common.contextlib.closing(d.db()) as db:
            raw = b"".join(r[0] for r in db.execute(
                "SELECT c.data FROM chunks c JOIN messages m ON m.id = c.message_id WHERE m.sender = '' ORDER BY c.pos"))
        check(b"multipart/report" in raw and b"550 5.1.1 no such user here" in raw and b"Final-Recipient: rfc822; bad@remote.example" in raw,
              "DSN content: %r" % raw[:2000])

        # slow@ is deferred and retried; queue show names the remote server's reply.
        def retried():
            for e in queue(d):
                if e[2] == "slow@remote.example" and e[4] == "deferred" and e[5] >= 2:
                    return e
            return None
        entry = wait_for("slow@ retried", retried)
        shown = d.cli("queue", "show", entry[0]).stdout
        check("451 4.3.0 try again later" in shown and "deferred" in shown and "next attempt" in shown, shown)
        # Delivered and bounced entries leave the queue with their message; only slow@ waits.
        states = {(e[2], e[4]) for e in queue(d)}
        check(states == {("slow@remote.example", "deferred")}, states)
        status = json.loads(d.cli("--json", "status").stdout)
        check(status["queue"]["deferred"] >= 1, status["queue"])
        d.finish()
    finally:
        peer.close()
        d.close()


if __name__ == "__main__":
    run_tests([test_relay_end_to_end])
