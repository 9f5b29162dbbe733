# SPDX-License-Identifier: MIT
"""metrics end to end: the real daemon (storage-sqlite, smtp-server, pop3-server, ids, relay-sender,
metrics) takes a known mix of traffic; every counter on /metrics must equal what was sent, the queue
gauges must equal `pillarbox status --json`; and the HTTP side answers 404/405/400, HEAD, and serves
one scrape while another client dawdles."""

import importlib.util
import json
import os
import poplib
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP_SRCDIR = os.environ.get("top_srcdir") or os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(TOP_SRCDIR, "tests", "integration"))
_spec = importlib.util.spec_from_file_location(
    "smtp_common", os.path.join(TOP_SRCDIR, "tests", "integration", "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)
from pbtest import PILLARBOXD, TIMEOUT, Failure, ScriptedPeer, check, free_port, run_tests, wait_for  # noqa: E402
from smtpsink import Sink  # noqa: E402

SMTP_SINK = "/usr/sbin/smtp-sink"
DOMAIN = common.DOMAIN
PASSWORD = common.PASSWORD


def parse_metrics(text):
    """{(name, frozenset of label items): value}; checks HELP and TYPE come before each family."""
    samples = {}
    declared = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            declared.setdefault(line.split()[2], set()).add("help")
            continue
        if line.startswith("# TYPE "):
            declared.setdefault(line.split()[2], set()).add(line.split()[3])
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        check(m is not None, "not a sample line: %r" % line)
        name, labels, value = m.groups()
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name not in declared and name.endswith(suffix):
                family = name[:-len(suffix)]
        check(family in declared and "help" in declared[family] and len(declared[family]) == 2,
              "sample %s before its HELP and TYPE" % name)
        items = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        samples[(name, items)] = float(value)
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class Setup:
    def __init__(self):
        self.peer = None
        self.sink = None
        self.d = common.SmtpDaemon(smtp_extra="max-message-size = 8K\n",
                                   core_extra="retry-schedule = 1h\nqueue-scan-interval = 1s\n", start=False)
        try:
            self.peer = ScriptedPeer(self.d.tmp, "--rcpt", "slow=451 4.3.0 try again later")
            self.sink = Sink()
            self.pop3 = free_port()
            self.http = free_port()
            self.d.write("30-pop3-server.conf", "[module pop3-server]\npop3-listen = 127.0.0.1:%d\n"
                         "pop3s-listen = 127.0.0.1:%d\n" % (self.pop3, free_port()))
            # 127.0.0.2 may be blocked: it plays the misbehaving client.
            self.d.write("41-ids.conf", "[module ids]\nnever-block = 127.0.0.1\nthreshold = 3\n")
            self.d.write("50-relay-sender.conf",
                         "[module relay-sender]\n"
                         "[relay-server sink]\naddress = 127.0.0.1:%d\nsecurity = none\n"
                         "[relay-server peer]\naddress = 127.0.0.1:%d\nsecurity = none\n"
                         "[relay-route slow]\nrecipients = slow.example\nservers = peer\n"
                         "[relay-route rest]\nservers = sink\n" % (self.sink.port, self.peer.port))
            self.d.write("70-metrics.conf", "[module metrics]\nlisten = 127.0.0.1:%d\nread-timeout = 2s\n"
                         % self.http)
            self.d.start()
            self.d.cli("domain", "add", DOMAIN)
            for user in ("bob", "alice"):
                self.d.cli("user", "add", "%s@%s" % (user, DOMAIN), "--protocols", "smtp,pop3",
                           input=PASSWORD + "\n")
        except Exception:
            self.close()
            raise

    def url(self, path="/metrics"):
        return "http://127.0.0.1:%d%s" % (self.http, path)

    def scrape(self):
        with urllib.request.urlopen(self.url(), timeout=TIMEOUT) as r:
            check(r.status == 200, r.status)
            check(r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers["Content-Type"])
            return r.read().decode()

    def close(self):
        for part in (self.peer, self.sink):
            if part is not None:
                part.close()
        self.d.close()


def smtp(port):
    return smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT)


def test_counters_equal_traffic():
    s = Setup()
    try:
        d = s.d
        sessions = {"smtp": 0, "submission": 0, "pop3": 0}
        msg = "Subject: hi\r\n\r\nhello\r\n"

        # Accepted: three local messages (1 + 1 + 2 recipients) on the inbound port...
        with smtp(d.ports["smtp"]) as c:
            sessions["smtp"] += 1
            check(c.sendmail("x@sender.example", ["bob@%s" % DOMAIN], msg) == {}, "local 1")
            check(c.sendmail("x@sender.example", ["alice@%s" % DOMAIN], msg) == {}, "local 2")
            check(c.sendmail("x@sender.example", ["bob@%s" % DOMAIN, "alice@%s" % DOMAIN], msg) == {}, "local 3")
        # ...and two outbound ones by submission: two recipients for smtp-sink, one the peer defers.
        with smtp(d.ports["submission"]) as c:
            sessions["submission"] += 1
            c.starttls(context=common.insecure_context())
            c.login("bob@%s" % DOMAIN, PASSWORD)
            check(c.sendmail("bob@%s" % DOMAIN, ["a@sink.example", "b@sink.example"], msg) == {}, "out 1")
            check(c.sendmail("bob@%s" % DOMAIN, ["slow@slow.example"], msg) == {}, "out 2")
        accepted, recipients = 5, 7

        # Refused: unknown local recipients, relaying without authentication, a message too big.
        unknown, relay = 2, 3
        with smtp(d.ports["smtp"]) as c:
            sessions["smtp"] += 1
            c.ehlo()
            c.mail("x@sender.example")
            for i in range(unknown):
                code, _ = c.rcpt("nobody%d@%s" % (i, DOMAIN))
                check(code == 550, "unknown recipient answered %d" % code)
            for i in range(relay):
                code, _ = c.rcpt("someone%d@elsewhere.example" % i)
                check(code in (550, 554), "relay answered %d" % code)
            c.rset()
            # No SIZE= on MAIL: the limit is found in the data path.
            c.mail("x@sender.example")
            check(c.rcpt("bob@%s" % DOMAIN)[0] == 250, "rcpt for the big message")
            code, _ = c.data("Subject: big\r\n\r\n" + ("x" * 76 + "\r\n") * 200)
            check(code == 552, "a message over max-message-size answered %d" % code)

        # POP3 sessions.
        pop_sessions = 2
        for _ in range(pop_sessions):
            p = poplib.POP3("127.0.0.1", s.pop3, timeout=TIMEOUT)
            sessions["pop3"] += 1
            p.stls(context=common.insecure_context())
            p.user("bob@%s" % DOMAIN)
            p.pass_(PASSWORD)
            p.stat()
            p.quit()

        # A client from 127.0.0.2 sends nonsense until ids blocks it; its next connection is refused.
        bad = common.SmtpClient(d.ports["smtp"], source="127.0.0.2")
        sessions["smtp"] += 1
        bad.reply()
        for _ in range(3):
            bad.send("NONSENSE\r\n")
            bad.reply()
        bad.sock.close()
        d.wait_log("blocked 127.0.0.2")
        refused = common.SmtpClient(d.ports["smtp"], source="127.0.0.2")
        line = refused.reply()
        check("421" in str(line), "a blocked client got %r" % (line,))
        refused.sock.close()

        # Deliveries: two to smtp-sink, one deferred by the peer's 451.
        def outcomes():
            entries = json.loads(d.cli("--json", "queue", "list").stdout)
            return [e for e in entries if e[2] == "slow@slow.example" and e[4] == "deferred"]
        deferred = wait_for("slow@ deferred", outcomes)
        wait_for("both sink deliveries", lambda: value(parse_metrics(s.scrape()), "pillarbox_deliveries_total",
                                                        result="delivered", domain="sink.example") >= 2)
        shown = d.cli("queue", "show", deferred[0][0]).stdout
        check("451 4.3.0 try again later" in shown, "queue show does not name the peer's reply:\n" + shown)

        # Scrape; sessions_total of the metrics listener counts this scrape too.
        text = s.scrape()
        m = parse_metrics(text)
        scrapes = value(m, "pillarbox_sessions_total", service="http", listener="metrics")
        check(scrapes >= 2, "scrapes counted: %s" % scrapes)
        expect = {
            ("pillarbox_sessions_total", (("service", "smtp"), ("listener", "smtp"))): sessions["smtp"],
            ("pillarbox_sessions_total", (("service", "smtp"), ("listener", "submission"))): sessions["submission"],
            ("pillarbox_sessions_total", (("service", "pop3"), ("listener", "pop3"))): sessions["pop3"],
            ("pillarbox_messages_accepted_total", (("service", "smtp"),)): accepted,
            ("pillarbox_recipients_accepted_total", (("service", "smtp"),)): recipients,
            ("pillarbox_messages_rejected_total", (("reason", "unknown_recipient"),)): unknown,
            ("pillarbox_messages_rejected_total", (("reason", "relay_denied"),)): relay,
            ("pillarbox_messages_rejected_total", (("reason", "message_too_big"),)): 1,
            ("pillarbox_messages_rejected_total", (("reason", "protocol_error"),)): 3,
            ("pillarbox_messages_rejected_total", (("reason", "blocked"),)): 1,
            ("pillarbox_messages_rejected_total", (("reason", "auth_failed"),)): 0,
            ("pillarbox_messages_rejected_total", (("reason", "too_many_connections"),)): 0,
            ("pillarbox_messages_rejected_total", (("reason", "policy_connect"),)): 0,
            ("pillarbox_deliveries_total", (("result", "delivered"), ("domain", "sink.example"))): 2,
            ("pillarbox_deliveries_total", (("result", "deferred"), ("domain", "slow.example"))): 1,
            ("pillarbox_ids_blocks_total", ()): 1,
            ("pillarbox_storage_commit_seconds_count", ()): accepted,
            ("pillarbox_storage_commit_seconds_bucket", (("le", "+Inf"),)): accepted,
        }
        for (name, labels), want in expect.items():
            got = value(m, name, **dict(labels))
            check(got == want, "%s%s = %s, sent %s\n%s" % (name, dict(labels), got, want, text))
        # Nothing else was refused, and no other service accepted mail.
        for (name, labels), v in m.items():
            if name == "pillarbox_messages_rejected_total" and v:
                check(((name, tuple(sorted(labels))) in {(k[0], tuple(sorted(k[1]))) for k in expect}),
                      "unexpected refusals %s = %s" % (dict(labels), v))
        check(m[("pillarbox_storage_commit_seconds_sum", frozenset())] > 0, "commit time sum")
        check(value(m, "pillarbox_sessions_active", service="http", listener="metrics") == 1,
              "the scrape sees itself as the one active session")

        # The gauges equal what `pillarbox status` says.
        status = json.loads(d.cli("--json", "status").stdout)
        for state in ("pending", "deferred", "delivered", "bounced"):
            check(value(m, "pillarbox_queue_recipients", state=state) == status["queue"][state],
                  "queue %s: %s vs %s" % (state, m, status["queue"]))
            check(value(m, "pillarbox_queue_messages", state=state) == status["queue_messages"][state],
                  "queue messages %s vs %s" % (state, status["queue_messages"]))
        check(status["queue"]["deferred"] == 1 and status["queue_messages"]["deferred"] == 1, status["queue"])
        check(value(m, "pillarbox_start_time_seconds") == status["start_time"], "start time")
        check(abs(value(m, "pillarbox_start_time_seconds") - time.time()) < 600, "start time is not now-ish")
        check(status["storage_commit_latency"]["count"] == accepted, status["storage_commit_latency"])
        d.finish()
    finally:
        s.close()


def raw_http(port, data, read=True):
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(data)
    out = b""
    if read:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    sock.close()
    return out


def test_http_answers():
    s = Setup()
    try:
        for path, code in (("/", 404), ("/metricsx", 404), ("/metrics/", 404)):
            try:
                urllib.request.urlopen(s.url(path), timeout=TIMEOUT)
                raise Failure("GET %s succeeded" % path)
            except urllib.error.HTTPError as e:
                check(e.code == code, "GET %s: %d" % (path, e.code))
        reply = raw_http(s.http, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        check(reply.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: GET, HEAD\r\n" in reply, reply)
        for garbage in (b"hello\r\n\r\n", b"GET /metrics HTTP/1.1\r\n\r\n", b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n"):
            reply = raw_http(s.http, garbage)
            check(reply.startswith(b"HTTP/1.1 400 "), "%r answered %r" % (garbage, reply))
        reply = raw_http(s.http, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n")
        check(reply.startswith(b"HTTP/1.1 431 "), reply[:100])
        reply = raw_http(s.http, b"GET /metrics HTTP/3.0\r\n\r\n")
        check(reply.startswith(b"HTTP/1.1 505 "), reply[:100])

        # HEAD: the GET's headers, no body.
        reply = raw_http(s.http, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 200 OK") and b"Content-Type: text/plain; version=0.0.4" in head, head)
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        check(length > 1000 and body == b"", "HEAD: length %d, body %r" % (length, body[:50]))

        # A dawdling client holds its connection; another scrape is served meanwhile,
        # and the dawdler is cut off after read-timeout (2 s) without an answer.
        slow = socket.create_connection(("127.0.0.1", s.http), timeout=TIMEOUT)
        slow.sendall(b"GET /metr")
        t0 = time.time()
        text = s.scrape()
        check(time.time() - t0 < 1.5, "a scrape waited for the slow client")
        check("pillarbox_sessions_active" in text, text[:200])
        slow.settimeout(TIMEOUT)
        got = slow.recv(4096)
        waited = time.time() - t0
        check(got == b"" or got.startswith(b"HTTP/1.1 408"), "the slow client got %r" % got)
        check(1.0 <= waited <= 10, "the slow client was cut off after %.1fs" % waited)
        slow.close()
        s.d.finish()
    finally:
        s.close()


def test_remote_address_refused():
    """A non-loopback listen address is a configuration error unless allow-remote = true."""
    d = common.SmtpDaemon(start=False)
    try:
        d.write("70-metrics.conf", "[module metrics]\nlisten = 0.0.0.0:%d\n" % free_port())
        p = subprocess.run([PILLARBOXD, "--check-config", "-c", d.conf, "--state-dir", d.state],
                           capture_output=True, text=True, timeout=TIMEOUT)
        out = p.stdout + p.stderr
        check(p.returncode != 0, "accepted: %s" % out)
        check("70-metrics.conf:1" in out and "is not a loopback address" in out and "allow-remote" in out, out)
        d.write("70-metrics.conf", "[module metrics]\nlisten = 0.0.0.0:%d\nallow-remote = true\n" % free_port())
        p = subprocess.run([PILLARBOXD, "--check-config", "-c", d.conf, "--state-dir", d.state],
                           capture_output=True, text=True, timeout=TIMEOUT)
        check(p.returncode == 0, p.stdout + p.stderr)
    finally:
        d.close()


if __name__ == "__main__":
    if not os.access(SMTP_SINK, os.X_OK) or shutil.which("python3") is None:
        print("1..0 # SKIP smtp-sink is not installed")
        sys.exit(77)
    run_tests([test_counters_equal_traffic, test_http_answers, test_remote_address_refused])
