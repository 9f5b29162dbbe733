# SPDX-License-Identifier: MIT
"""Outbound against Postfix's smtp-sink: the ISP's caps as the sink sees them, the ordering
options, `queue delete --all`, the connector schedule and its deny windows.

The relay keeps one connection (max-connections = 1), so the sink's sessions come one after
another and its log tells which message came in which session.
"""

import contextlib
import datetime
import importlib.util
import json
import os
import smtplib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "smtp_common", os.path.join(os.path.dirname(os.path.abspath(__file__)), "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)
from pbtest import TIMEOUT, check, run_tests, wait_for  # noqa: E402
from smtpsink import Sink  # noqa: E402


def relay_conf(sink, server_extra="", extra=""):
    return ("[module relay-sender]\n%s[relay-server sink]\naddress = 127.0.0.1:%d\nsecurity = none\n"
            "max-connections = 1\n%s" % (extra, sink.port, server_extra))


def daemon(core_extra=""):
    return common.SmtpDaemon(smtp_extra="trusted-networks = 127.0.0.0/8\n", core_extra=core_extra, start=False)


def send(d, senders, size_of=lambda i: 100):
    """One message per sender, over one SMTP session, from a trusted client."""
    with smtplib.SMTP("127.0.0.1", d.ports["smtp"], timeout=TIMEOUT) as s:
        for i, sender in enumerate(senders):
            body = "Subject: m%d\r\n\r\n%s\r\n" % (i, "x" * size_of(i))
            refused = s.sendmail(sender, ["rcpt@remote.example"], body)
            check(refused == {}, refused)


def connection_state(d, name):
    status = json.loads(d.cli("--json", "status").stdout)
    return [c for c in status["connections"] if c["name"] == name][0]


def test_caps_at_the_sink():
    """VPOP3's "10 messages per session" with "50 messages per 60 minutes", the period
    shortened to 5 s: the sink sees sessions of at most 10 messages and never more than
    50 messages in any 5 s. Mail over the cap is held back, not tried: with the default
    retry schedule (5 minutes) a tried-and-deferred message would miss the test."""
    sink = Sink()
    d = daemon()
    try:
        d.write("50-relay-sender.conf", relay_conf(sink, "max-messages-per-session = 10\n"
                                                         "limits = 50 messages per 5s\n"))
        d.start()
        t0 = time.time()
        send(d, ["s%d@sender.example" % i for i in range(120)])
        saw_held = False
        deadline = time.time() + 60
        while len(sink.messages()) < 120 and time.time() < deadline:
            saw_held = saw_held or connection_state(d, "default")["state"].startswith("held")
            time.sleep(0.2)
        msgs = sink.messages()
        check(len(msgs) == 120, "the sink got %d of 120 messages" % len(msgs))
        check(sorted(s for _, s in msgs) == sorted("s%d@sender.example" % i for i in range(120)),
              "lost or duplicated messages at the sink")
        sessions = sink.sessions()
        sizes = [len(m) for _, m in sessions if m]
        check(max(sizes) <= 10, "a session carried %d messages: %s" % (max(sizes), sizes))
        times = [t for t, _ in msgs]
        # The sink stamps a message when it reads its ".", a moment before the relay counts
        # it; a window a little shorter than the period keeps that skew out of the count.
        worst = max(sum(1 for u in times if t <= u < t + 4.8) for t in times)
        check(worst <= 50, "%d messages within 4.8 s at the sink" % worst)
        check(times[-1] - t0 >= 9.5, "120 messages at 50 per 5 s took only %.1f s" % (times[-1] - t0))
        check(saw_held, "status never showed the connection held by the cap")
        # Held-back mail was never an attempt.
        hist = d.db().execute("SELECT COUNT(*) FROM queue_history WHERE reply LIKE '451%'").fetchone()[0]
        check(hist == 0, "%d cap deferrals were recorded as attempts" % hist)
        d.finish()
    finally:
        d.close()
        sink.close()


def ordering_case(order, sizes, expected):
    sink = Sink()
    d = daemon("queue-order = %s\ndestination-concurrency = 1\n" % order)
    try:
        d.write("50-relay-sender.conf", relay_conf(sink) + "[connection out]\nsender = relay-sender\n"
                                                           "send-immediately = false\n")
        d.start()
        senders = ["o%d@sender.example" % i for i in range(len(sizes))]
        for i, sender in enumerate(senders):
            send(d, [sender], lambda _: sizes[i])
            time.sleep(1.05)   # queued-at has a resolution of one second
        time.sleep(1)
        check(sink.messages() == [], "mail went before the connection fired")
        d.cli("connect-now", "out")
        wait_for("%d messages at the sink" % len(sizes), lambda: len(sink.messages()) == len(sizes))
        got = [s for _, s in sink.messages()]
        check(got == [senders[i] for i in expected], "queue-order %s sent %s" % (order, got))
        d.finish()
    finally:
        d.close()
        sink.close()


def test_ordering_options():
    sizes = [3000, 100, 2000]
    ordering_case("oldest", sizes, [0, 1, 2])
    ordering_case("smallest", sizes, [1, 2, 0])
    ordering_case("newest", sizes, [2, 1, 0])


def test_queue_delete_all():
    sink = Sink()
    d = daemon()
    try:
        d.write("50-relay-sender.conf", relay_conf(sink) + "[connection out]\nsender = relay-sender\n"
                                                           "send-immediately = false\n")
        d.start()
        send(d, ["a%d@sender.example" % i for i in range(5)])
        check(len(json.loads(d.cli("--json", "queue", "list").stdout)) == 5, "five queued")
        out = d.cli("queue", "delete", "--all").stdout
        check("all: 5 recipients removed" in out, out)
        check(json.loads(d.cli("--json", "queue", "list").stdout) == [], "the queue is not empty")
        d.cli("connect-now", "out")
        time.sleep(1.5)
        check(sink.messages() == [], "deleted mail was sent")
        d.finish()
    finally:
        d.close()
        sink.close()


def hhmm(t):
    return datetime.datetime.fromtimestamp(t).strftime("%H:%M")


def test_schedule_and_deny_window():
    """A connection that sends only on its schedule ("every 1m") fires at the next minute;
    inside a deny window even connect-now holds the mail; without the window it goes."""
    sink = Sink()
    d = daemon()
    try:
        now = time.time()
        deny = "deny from %s to %s" % (hhmm(now - 60), hhmm(now + 180))
        d.write("50-relay-sender.conf", relay_conf(sink) + "[connection out]\nsender = relay-sender\n"
                                                           "send-immediately = false\nschedule = %s\n" % deny)
        d.start()
        send(d, ["held@sender.example"])
        d.cli("connect-now", "out")
        time.sleep(2)
        check(sink.messages() == [], "mail went inside the deny window")
        check(connection_state(d, "out")["state"] == "held (deny window)", connection_state(d, "out"))

        # The schedule fires at the next minute; keep clear of a boundary that is too close
        # to tell "at once" from "on schedule".
        if 60 - time.time() % 60 < 6:
            time.sleep(60 - time.time() % 60 + 0.5)
        d.write("50-relay-sender.conf", relay_conf(sink) + "[connection out]\nsender = relay-sender\n"
                                                           "send-immediately = false\nschedule = every 1m\n")
        d.cli("reload")
        reloaded = time.time()
        time.sleep(2)
        check(sink.messages() == [], "mail went before the schedule fired")
        boundary = (int(reloaded) // 60 + 1) * 60
        msgs = wait_for("the scheduled run", lambda: sink.messages(), timeout=boundary - time.time() + 30)
        check(msgs[0][0] >= boundary - 1, "sent at %.1f, before the minute %d" % (msgs[0][0], boundary))
        d.finish()
    finally:
        d.close()
        sink.close()


def test_backscatter_rule():
    """core.bounce-remote-senders = false: a refused message from an outside sender is not
    bounced to that (likely forged) address; a local sender still gets its bounce."""
    sink = Sink("-f", "RCPT")
    d = daemon("bounce-remote-senders = false\n")
    try:
        d.write("50-relay-sender.conf", relay_conf(sink))
        d.start()
        d.cli("domain", "add", common.DOMAIN)
        d.cli("user", "add", "bob@%s" % common.DOMAIN, input=common.PASSWORD + "\n")
        send(d, ["stranger@outside.example", "bob@%s" % common.DOMAIN])
        d.wait_count("bob", 1)
        d.wait_log("no bounce to the outside sender <stranger@outside.example>")
        time.sleep(1)
        rcpts = [e[2] for e in json.loads(d.cli("--json", "queue", "list").stdout)]
        check("stranger@outside.example" not in rcpts, "a bounce is queued for the outside sender: %s" % rcpts)
        check(d.count("bob") == 1, "bob has %d messages" % d.count("bob"))
        d.finish()
    finally:
        d.close()
        sink.close()


def test_delay_notice():
    """core.delay-warning-time: a recipient the relay keeps deferring gets its (local) sender
    one delay notice, Action: delayed with Will-Retry-Until, however many retries follow;
    a sender whose NOTIFY leaves out DELAY gets none."""
    sink = Sink("-r", "RCPT")
    d = daemon("retry-schedule = 1s\ndelay-warning-time = 2s\n")
    try:
        d.write("50-relay-sender.conf", relay_conf(sink))
        d.start()
        d.cli("domain", "add", common.DOMAIN)
        for user in ("bob", "alice"):
            d.cli("user", "add", "%s@%s" % (user, common.DOMAIN), input=common.PASSWORD + "\n")
        with smtplib.SMTP("127.0.0.1", d.ports["smtp"], timeout=TIMEOUT) as s:
            s.sendmail("bob@%s" % common.DOMAIN, ["late@remote.example"], "Subject: slow\r\n\r\nbody\r\n")
            s.sendmail("alice@%s" % common.DOMAIN, ["late2@remote.example"], "Subject: quiet\r\n\r\nbody\r\n",
                       rcpt_options=["NOTIFY=FAILURE"])
        d.wait_count("bob", 1, timeout=30)
        # Several more retries, still one notice.
        wait_for("five attempts", lambda: any(e[2] == "late@remote.example" and e[5] >= 5
                                               for e in json.loads(d.cli("--json", "queue", "list").stdout)))
        check(d.count("bob") == 1, "bob has %d notices" % d.count("bob"))
        check(d.count("alice") == 0, "alice asked for NOTIFY=FAILURE and got a delay notice")
        with contextlib.closing(d.db()) as db:
            qid = db.execute("SELECT m.queue_id FROM mailbox b JOIN messages m ON m.id = b.message_id"
                             " WHERE b.user = ?", ("bob@%s" % common.DOMAIN,)).fetchone()[0]
        text = d.message(qid).decode()
        for needle in ("Subject: Delayed Mail", "Action: delayed", "Will-Retry-Until:", "Status: 4.", "late@remote.example"):
            check(needle in text, "%r not in the notice:\n%s" % (needle, text[:3000]))
        d.finish()
    finally:
        d.close()
        sink.close()


if __name__ == "__main__":
    run_tests([test_delay_notice, test_backscatter_rule, test_queue_delete_all, test_ordering_options, test_caps_at_the_sink, test_schedule_and_deny_window])
