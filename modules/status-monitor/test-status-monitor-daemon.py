# SPDX-License-Identifier: MIT
"""status-monitor end to end: the real daemon with storage-sqlite, smtp-server, relay-sender and a
scripted SMTP peer; monitor clients log in, read the initial burst, follow SMTP sessions, fire a
connection with CONNECT, and a client that never reads is cut off without delaying anyone."""

import importlib.util
import json
import os
import smtplib
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP_SRCDIR = os.environ.get("top_srcdir") or os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP_SRCDIR, "tests", "integration"))
_spec = importlib.util.spec_from_file_location(
    "smtp_common", os.path.join(TOP_SRCDIR, "tests", "integration", "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)
from pbtest import TIMEOUT, ScriptedPeer, check, free_port, run_tests  # noqa: E402

BOB = "bob@%s" % common.DOMAIN
ALICE = "alice@%s" % common.DOMAIN


class Monitor:
    """A status monitor client: replies (+OK/-ERR) and update lines, every read bounded."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.seen = []   # every line read, in order

    def send(self, text):
        self.sock.sendall(text.encode())

    def line(self, timeout=TIMEOUT):
        deadline = time.time() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("no line within %ss (have %r; seen %s)" % (timeout, self.buf, self.seen[-20:]))
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed (have %r; seen %s)" % (self.buf, self.seen[-20:]))
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        check(line.endswith(b"\r"), "line without CRLF: %r" % line)
        text = line[:-1].decode()
        self.seen.append(text)
        return text

    def reply(self, timeout=TIMEOUT):
        """The next +OK/-ERR line; update lines read meanwhile stay in self.seen."""
        while True:
            text = self.line(timeout)
            if text.startswith("+OK") or text.startswith("-ERR"):
                return text

    def wait(self, predicate, what, timeout=TIMEOUT):
        """Reads until a line satisfies PREDICATE; returns it."""
        deadline = time.time() + timeout
        while True:
            text = self.line(max(0.01, deadline - time.time()))
            if predicate(text):
                return text

    def login(self, user, password):
        self.send("LOGIN %s %s\r\n" % (user, password))
        return self.reply()

    def close(self):
        self.sock.close()


def fields(line):
    out = {}
    for token in line[2:].split(" "):
        key, _, value = token.partition("=")
        out[key] = "" if value == "-" else value.replace("%20", " ")
    return out


STATE = {}


def daemon():
    if "d" in STATE:
        return STATE["d"]
    d = common.SmtpDaemon(start=False)
    STATE["peer"] = peer = ScriptedPeer(d.tmp)
    d.monitor_port = free_port()
    d.write("50-relay-sender.conf",
            "[module relay-sender]\n[relay-server peer]\naddress = 127.0.0.1:%d\nsecurity = none\n"
            "[connection isp]\nsender = relay-sender\nsend-immediately = false\n" % peer.port)
    d.write("71-status-monitor.conf",
            "[module status-monitor]\nlisten = 127.0.0.1:%d\nadministrators = %s\npoll-interval = 1s\n"
            "summary-interval = 2s\nmax-output = 4K\nmax-clients = 5\n" % (d.monitor_port, BOB))
    STATE["d"] = d
    d.start()
    d.cli("domain", "add", common.DOMAIN)
    for user in ("bob", "alice"):
        d.cli("user", "add", "%s@%s" % (user, common.DOMAIN), input=common.PASSWORD + "\n")
    return d


def admin(d):
    """A logged-in monitor whose initial burst has been read; returns it and the burst."""
    m = Monitor(d.monitor_port)
    check(m.line().startswith("+OK Pillarbox Status Server Ready <"), m.seen)
    check(m.login(BOB, common.PASSWORD).startswith("+OK Logged in OK"), m.seen)
    burst = []
    while True:
        text = m.line()
        burst.append(text)
        if text.startswith("Y "):
            return m, burst


def test_login():
    d = daemon()
    watcher, _ = admin(d)
    m = Monitor(d.monitor_port)
    check(m.line().startswith("+OK Pillarbox Status Server Ready <"), m.seen)
    m.send("STATUS\r\n")
    check(m.reply() == "-ERR Log in first", m.seen)
    m.send("ALOGIN %s 9077A0BE9A986C3AE3B32D25C417A98D\r\n" % BOB)
    check(m.reply().startswith("-ERR ALOGIN is not available"), m.seen)
    check(m.login(BOB, "wrong-password") == "-ERR Login failed", m.seen)
    # A correct password of a user who is not an administrator is refused the same way.
    check(m.login(ALICE, common.PASSWORD) == "-ERR Login failed", m.seen)
    d.wait_log("%s is not listed in administrators" % ALICE)
    # Failed logins are auth-failed events (what ids counts): the logged-in monitor sees them.
    watcher.wait(lambda l: l.startswith("0") and "status-monitor login failed for %s from 127.0.0.1" % BOB in l,
                 "the failed login as an activity line")
    watcher.wait(lambda l: l.startswith("0") and "login failed for %s" % ALICE in l, "alice's failed login")
    # A third failure ends the connection.
    check(m.login("nobody", "x") == "-ERR Login failed", m.seen)
    check(m.sock.recv(100) == b"", "still connected after three failed logins")
    m.close()
    watcher.close()


def test_initial_burst():
    d = daemon()
    m, burst = admin(d)
    status = json.loads(d.cli("--json", "status").stdout)
    check(burst[0].startswith("1Idle"), burst)
    conns = [fields(l) for l in burst if l.startswith("C ")]
    check([c["name"] for c in conns] == ["isp"] and conns[0]["sender"] == "relay-sender"
          and conns[0]["state"] == "idle" and conns[0]["send-immediately"] == "no", burst)
    q = [fields(l) for l in burst if l.startswith("Q ")]
    check(len(q) == 1, burst)
    check({k: int(v) for k, v in q[0].items()} == status["queue"], (q, status["queue"]))
    mine = [fields(l) for l in burst if l.startswith("S ") and fields(l).get("service") == "status-monitor"
            and fields(l).get("user") == BOB]
    check(mine and mine[0]["event"] == "present" and mine[0]["state"] == "MONITOR", burst)
    y = fields(burst[-1])
    check(int(y["monitors"]) >= 1 and "pending" in y, burst)
    # STATUS repeats the burst on demand.
    m.send("STATUS\r\n")
    check(m.reply() == "+OK Status follows", m.seen)
    m.wait(lambda l: l.startswith("Q "), "the queue line of STATUS")
    m.wait(lambda l: l.startswith("Y "), "the summary of STATUS")
    # The periodic summary comes without asking (summary-interval = 2s).
    m.wait(lambda l: l.startswith("Y "), "a periodic summary", timeout=6)
    m.send("NOOP\r\nQUIT\r\n")
    check(m.reply() == "+OK", m.seen)
    check(m.reply() == "+OK Goodbye", m.seen)
    m.close()


def submit(d, rcpts, login=True):
    with smtplib.SMTP("127.0.0.1", d.ports["submission" if login else "smtp"], timeout=TIMEOUT) as s:
        s.starttls(context=common.insecure_context())
        if login:
            s.login(BOB, common.PASSWORD)
        check(s.sendmail(BOB, rcpts, "Subject: hi\r\n\r\nhello\r\n") == {}, "refused")


def test_sessions_and_queue():
    d = daemon()
    m, burst = admin(d)
    before = [fields(l) for l in burst if l.startswith("Q ")][0]
    submit(d, ["someone@remote.example"])
    start = fields(m.wait(lambda l: l.startswith("S ") and "event=start" in l and "service=smtp" in l, "start"))
    check(start["listener"] == "submission" and start["client"] == "127.0.0.1", start)
    login = fields(m.wait(lambda l: l.startswith("S ") and "event=login" in l and "id=%s" % start["id"] in l, "login"))
    check(login["user"] == BOB, login)
    m.wait(lambda l: l.startswith("0") and "queued from <%s>" % BOB in l, "the queued message")
    end = fields(m.wait(lambda l: l.startswith("S ") and "event=end" in l and "id=%s" % start["id"] in l, "end"))
    check(end["user"] == BOB and int(end["seconds"]) >= 0, end)
    # send-immediately = false: the message waits for the connection; the counts say so.
    q = fields(m.wait(lambda l: l.startswith("Q ") and int(fields(l)["pending"]) > int(before["pending"]), "Q"))
    status = json.loads(d.cli("--json", "status").stdout)
    check(int(q["pending"]) == status["queue"]["pending"], (q, status["queue"]))
    m.close()


def test_connect_now():
    d = daemon()
    peer = STATE["peer"]
    m, _ = admin(d)
    m.send("CONNECT nosuch\r\n")
    check(m.reply() == "-ERR no connection named nosuch", m.seen)
    check(peer.messages() == [], "mail left before CONNECT: %s" % peer.messages())
    m.send("CONNECT isp\r\n")
    check(m.reply() == "+OK connection isp fired", m.seen)
    m.wait(lambda l: l.startswith("0") and "Connect Now (isp) requested by %s" % BOB in l, "the activity line")
    m.wait(lambda l: l.startswith("0") and "Sent message" in l and "someone@remote.example" in l
           and "via relay-sender" in l, "the delivery")
    check(len(peer.messages()) == 1, peer.messages())
    m.wait(lambda l: l.startswith("Q ") and fields(l)["pending"] == "0", "an empty queue")
    m.close()


def test_slow_client():
    d = daemon()
    fast, _ = admin(d)
    # Idle SMTP clients make every STATUS burst long (one line per session), so the output of
    # 2000 STATUS commands (~10 MB) is more than the kernel buffers (tcp_wmem allows 4 MB).
    idle = [socket.create_connection(("127.0.0.1", d.ports["smtp"]), timeout=TIMEOUT) for _ in range(40)]
    for s in idle:
        check(s.recv(512).startswith(b"220"), "no SMTP greeting")
    slow = Monitor(d.monitor_port, rcvbuf=4096)
    slow.line()

    def flood():
        try:
            slow.sock.settimeout(TIMEOUT)
            slow.send("LOGIN %s %s\r\n" % (BOB, common.PASSWORD) + "STATUS\r\n" * 2000)
        except OSError:
            pass  # cut off while still sending: what we want
    sender = threading.Thread(target=flood)
    sender.start()
    # The slow client never reads. Meanwhile SMTP and the other monitor go on.
    t0 = time.time()
    submit(d, [ALICE], login=False)
    smtp_seconds = time.time() - t0
    t0 = time.time()
    fast.wait(lambda l: l.startswith("S ") and "event=end" in l and "service=smtp" in l, "the SMTP session's end")
    fast_seconds = time.time() - t0
    check(smtp_seconds < 3 and fast_seconds < 3, "delayed: smtp %.2fs, monitor %.2fs" % (smtp_seconds, fast_seconds))
    d.wait_log("status monitor client does not keep up", timeout=30)
    sender.join(TIMEOUT)
    # Cut off for good: its session is gone once the core's bounded flush (10 s) gives up.
    deadline = time.time() + 2 * TIMEOUT
    while len(monitor_sessions(d)) > 1 and time.time() < deadline:
        time.sleep(0.2)
    check(len(monitor_sessions(d)) == 1, "the slow client is still there: %s" % monitor_sessions(d))
    # The fast monitor is still served.
    fast.send("NOOP\r\n")
    check(fast.reply() == "+OK", fast.seen)
    print("# SMTP session %.3fs, its end seen by the other monitor %.3fs later, while a client did not read"
          % (smtp_seconds, fast_seconds))
    for s in idle:
        s.close()
    slow.close()
    fast.close()


def test_reload():
    d = daemon()
    old, _ = admin(d)
    d.cli("reload")
    # The client belongs to the old configuration; sessions of the new one still reach it.
    submit(d, [ALICE], login=False)
    start = fields(old.wait(lambda l: l.startswith("S ") and "event=start" in l and "service=smtp" in l, "start"))
    old.wait(lambda l: l.startswith("S ") and "event=end" in l and "id=%s" % start["id"] in l, "end")
    new, burst = admin(d)
    check(any(l.startswith("Q ") for l in burst), burst)
    old.send("STATUS\r\n")
    check(old.reply() == "+OK Status follows", old.seen)
    old.wait(lambda l: l.startswith("Y "), "the old client's burst")
    old.close()
    new.close()


def monitor_sessions(d):
    return [s for s in json.loads(d.cli("--json", "sessions").stdout) if s["service"] == "status-monitor"]


def test_max_clients_and_finish():
    d = daemon()
    # Earlier tests' clients are closed; wait until the daemon has seen them go.
    deadline = time.time() + TIMEOUT
    while monitor_sessions(d) and time.time() < deadline:
        time.sleep(0.1)
    check(monitor_sessions(d) == [], monitor_sessions(d))
    clients = [Monitor(d.monitor_port) for _ in range(5)]
    for c in clients:
        check(c.line().startswith("+OK"), c.seen)
    extra = Monitor(d.monitor_port)
    check(extra.line() == "-ERR Too many status monitor connections, try later", extra.seen)
    for c in clients + [extra]:
        c.close()
    # The daemon notices the closed connections a moment later (a loaded machine: later still).
    deadline = time.time() + TIMEOUT
    while monitor_sessions(d) and time.time() < deadline:
        time.sleep(0.1)
    # A monitor still connected at shutdown is told so.
    m, _ = admin(d)
    d.finish()
    check(m.reply() == "-ERR Server shutting down", m.seen)
    m.close()
    STATE["peer"].close()
    d.close()


if __name__ == "__main__":
    try:
        run_tests([test_login, test_initial_burst, test_sessions_and_queue, test_connect_now, test_slow_client,
                   test_reload, test_max_clients_and_finish])
    finally:
        if "d" in STATE:
            STATE["d"].close()
