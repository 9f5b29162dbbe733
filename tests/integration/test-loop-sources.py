# SPDX-License-Identifier: MIT
"""After thousands of SMTP sessions through every hook stage, the daemon's loop_sources at rest is
what it was before them (issue 27: each policy request left a dead source in the main context).

The daemon runs smtp-server with policy hooks on every stage SMTP has: load-limit and ids at
connect; the smtp-test-policy fixture (modules/smtp-server/test-smtp-policy.c, answers later
from a timer) at helo, mail-from, rcpt-to, data-start, data-end and queued; rate-cap at
mail-from, rcpt-to and queued; spf at mail-from and data-end, with core.dns-servers pointing
at tests/dns-server.py. THREADS clients, each from a loopback address of its own, run SESSIONS
sessions between them: most send one small message (EHLO, MAIL, RCPT, DATA); one in ten
leaves mid-command (before the greeting, while a hook thinks, in the middle of a line or of
the data); one in ten is refused by a policy (ids' block list and load-limit's per-address
limit at connect, the fixture at helo, mail-from, data-start and data-end, rate-cap, an SPF
fail, a hook that never answers and meets core.hook-timeout). Then, once no session is left,
loop_sources (`pillarbox --json status`) must come back to its value before the load within
IDLE_WAIT seconds.

The value before is taken after one session of each kind: two sources are made on first use
and kept for the daemon's life, smtp-server's timer of command deadlines (the first session,
modules/smtp-server/smtp-session.c wait_add()) and the resolver's watch on libunbound's pipe
(the first lookup, core/dns.c pb_resolver_lookup()); they are not what this test is about.
With the hook deadline leaking again (core/hooks.c request_finish() destroying without
releasing), loop_sources stays some 12 000 above its value before.
"""

import importlib.util
import itertools
import json
import os
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # the source tree is read-only under distcheck; leave no __pycache__
from pbtest import TIMEOUT, TOP_SRCDIR, check, run_tests  # noqa: E402

_spec = importlib.util.spec_from_file_location("smtp_common", os.path.join(HERE, "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

sys.path.insert(0, os.path.join(TOP_SRCDIR, "modules", "spf"))
from spf_zone import DnsServer, txt  # noqa: E402

SESSIONS = 2000
THREADS = 8
IDLE_WAIT = 30.0
CLIENTS = ["127.0.0.%d" % (10 + t) for t in range(THREADS)]
BLOCKED = "127.0.0.66"            # ids' block list
PER_ADDRESS = 4                   # load-limit's max-per-address
SENDER = "alice@pass.example.net"
CAPPED = "127.0.0.50"             # rate-cap: one message per hour from it, spent by the warm-up
ZONE = (txt("pass.example.net.", "v=spf1 ip4:127.0.0.0/8 -all")
        + txt("fail.example.net.", "v=spf1 ip4:192.0.2.1 -all"))
PORT = None                       # smtp-server's, once the daemon runs
BODY = "From: <%s>\r\nTo: <bob@example.org>\r\nSubject: loop sources\r\n\r\n%s\r\n." % (SENDER, "x" * 200)


class Addresses:
    """Fresh loopback addresses (127.1.0.1, 127.1.0.2, ...), one per call, for several threads."""

    def __init__(self):
        self.count = itertools.count()
        self.lock = threading.Lock()

    def next(self):
        with self.lock:
            n = next(self.count)
        return "127.1.%d.%d" % (n // 250, 1 + n % 250)


FLOOD = Addresses()


def start_daemon(dns):
    d = common.SmtpDaemon(core_extra="hook-timeout = 1s\ndns-servers = %s\n" % dns.address, start=False)
    # The clients are local to load-limit (not limited per address: a session that left
    # mid-command may still be open when the next one comes); the flood addresses are not.
    d.write("40-load-limit.conf", "[module load-limit]\nlocal-networks = %s\nmax-sessions = 0\n"
                                  "max-per-address = %d\n" % (", ".join(CLIENTS + [CAPPED]), PER_ADDRESS))
    # never-block (checked first) lists the clients only: BLOCKED and the flood addresses are scored.
    d.write("41-ids.conf", "[module ids]\nnever-block = %s\nblock = %s\n" % (", ".join(CLIENTS + [CAPPED]), BLOCKED))
    d.write("42-rate-cap.conf", "[module rate-cap]\n"
                                "[rate-cap-rule clients]\nper = client-address\nlimit = 1000000\naction = reject\n"
                                "[rate-cap-rule capped]\nlimit = 1\nclients = %s\n" % CAPPED)
    d.write("50-smtp-test-policy.conf", "[module smtp-test-policy]\ndelay = 1ms\n")
    d.write("60-spf.conf", "[module spf]\nlookup-timeout = 2s\n")
    d.start()
    d.cli("domain", "add", common.DOMAIN)
    d.cli("user", "add", "bob@" + common.DOMAIN, input=common.PASSWORD + "\n")
    return d


def status(d):
    return json.loads(d.cli("--json", "status").stdout)


def at_rest(d):
    """loop_sources once no session is left."""
    deadline = time.time() + TIMEOUT
    while True:
        s = status(d)
        if s["sessions"] == 0:
            return s["loop_sources"]
        check(time.time() < deadline, "%d sessions still open %.0f s after the load" % (s["sessions"], TIMEOUT))
        time.sleep(0.1)


# ---- one session of each kind; each returns the number of messages it stored (0 or 1) ----

def connect(source, greeting=220):
    c = common.SmtpClient(PORT, source=source)
    code, text = c.reply()
    check(code == greeting, "greeting from %s: %d %r" % (source, code, text))
    return c


def send(source, mail_from=SENDER):
    c = connect(source)
    c.cmd("EHLO client.example.net", 250)
    c.cmd("MAIL FROM:<%s>" % mail_from, 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    c.cmd("DATA", 354)
    c.cmd(BODY, 250)
    c.cmd("QUIT", 221)
    c.close()
    return 1


def refused_at_mail(source, mail_from, code, enhanced):
    c = connect(source)
    c.cmd("EHLO client.example.net", 250)
    got, text = c.cmd("MAIL FROM:<%s>" % mail_from)
    check(got == code and text[0].startswith(enhanced), "MAIL FROM:<%s>: %d %r" % (mail_from, got, text))
    c.cmd("QUIT", 221)
    c.close()
    return 0


def refused_blocked(source):
    c = connect(BLOCKED, greeting=421)
    check(c.closed(), "a blocked client stays connected")
    c.close()
    return 0


def refused_over_limit(source):
    """PER_ADDRESS sessions from a fresh address are admitted, the next one is refused."""
    flood = FLOOD.next()
    held = [connect(flood) for _ in range(PER_ADDRESS)]
    c = connect(flood, greeting=421)
    c.close()
    for h in held:
        h.close()
    return 0


def refused_at_helo(source):
    c = connect(source)
    check(c.cmd("EHLO reject-helo.example")[0] == 550, "EHLO reject-helo")
    c.cmd("QUIT", 221)
    c.close()
    return 0


def refused_at_data(source, mail_from, at_end):
    c = connect(source)
    c.cmd("EHLO client.example.net", 250)
    c.cmd("MAIL FROM:<%s>" % mail_from, 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    if at_end:
        c.cmd("DATA", 354)
        check(c.cmd(BODY)[0] == 550, "refused at data-end")
    else:
        check(c.cmd("DATA")[0] == 550, "refused at data-start")
    c.cmd("QUIT", 221)
    c.close()
    return 0


def disconnected_by_policy(source):
    c = connect(source)
    c.cmd("EHLO client.example.net", 250)
    c.cmd("MAIL FROM:<disconnect-mail-from@pass.example.net>", 421)
    check(c.closed(), "not closed after a policy's disconnect")
    c.close()
    return 0


REFUSALS = [
    refused_blocked,
    refused_over_limit,
    refused_at_helo,
    lambda s: refused_at_mail(s, "tempfail-mail-from@pass.example.net", 450, "4.7.1"),
    lambda s: refused_at_mail(CAPPED, SENDER, 450, "4.7.1"),
    lambda s: refused_at_mail(s, "mallory@fail.example.net", 550, "5.7.23"),
    lambda s: refused_at_mail(s, "hang-mail-from@pass.example.net", 451, "4.3.0"),
    lambda s: refused_at_data(s, "reject-data-start@pass.example.net", False),
    lambda s: refused_at_data(s, "reject-data-end@pass.example.net", True),
    disconnected_by_policy,
]


def leave(source, before):
    """Sends BEFORE (bytes, after the greeting unless None) and closes without reading on."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=TIMEOUT, source_address=(source, 0))
    if before is not None:
        s.recv(512)
        s.sendall(before)
    s.close()
    return 0


DISCONNECTS = [
    lambda s: leave(s, None),                                          # before the greeting (connect hooks)
    lambda s: leave(s, b"EHLO client.example.net\r\n"),                # while the helo hook thinks
    lambda s: leave(s, b"EHLO client.example.net\r\nMAIL FROM:<%s>\r\n" % SENDER.encode()),  # mail-from hooks
    lambda s: leave(s, b"EHLO client.example.net\r\nMAIL FROM:<%s>\r\nRCPT TO:<bob@exam" % SENDER.encode()),
    lambda s: leave(s, b"EHLO a.example\r\nMAIL FROM:<%s>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
                       b"Subject: cut\r\n\r\nhalf a mess" % SENDER.encode()),
]


def session(i, source):
    """Session I: mostly a message, one in ten a refusal, one in ten a client that leaves."""
    if i % 10 == 3:
        return REFUSALS[(i // 10) % len(REFUSALS)](source)
    if i % 10 == 7:
        return DISCONNECTS[(i // 10) % len(DISCONNECTS)](source)
    return send(source)


def load(total):
    """TOTAL sessions from THREADS clients at once; returns the messages stored."""
    counter = itertools.count()
    lock = threading.Lock()
    stored = [0]
    errors = []

    def worker(source):
        while not errors:
            with lock:
                i = next(counter)
            if i >= total:
                return
            try:
                n = session(i, source)
            except Exception as e:  # noqa: BLE001 - every kind of failure is reported
                errors.append("session %d from %s: %s: %s" % (i, source, type(e).__name__, e))
                return
            with lock:
                stored[0] += n

    threads = [threading.Thread(target=worker, args=(source,)) for source in CLIENTS]
    for t in threads:
        t.start()
    deadline = time.time() + 20 * TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
        check(not t.is_alive(), "a client thread is stuck")
    check(not errors, "\n".join(errors[:5]))
    return stored[0]


def test_loop_sources_come_back_after_the_load():
    global PORT
    dns = DnsServer(ZONE)
    try:
        with start_daemon(dns) as d:
            PORT = d.ports["smtp"]
            # One session of each kind first (see the docstring); CAPPED spends its one message.
            warm = send(CAPPED)
            for kind in REFUSALS + DISCONNECTS:
                kind(CLIENTS[0])
            warm += send(CLIENTS[0])
            d.wait_count("bob", warm)
            before = at_rest(d)

            t0 = time.time()
            stored = load(SESSIONS)
            took = time.time() - t0
            d.wait_count("bob", warm + stored, timeout=60)
            during = status(d)["loop_sources"]
            after = at_rest(d)
            deadline = time.time() + IDLE_WAIT
            while after != before and time.time() < deadline:
                time.sleep(0.5)
                after = status(d)["loop_sources"]
            print("# %d sessions (%d messages) in %.1f s; loop_sources %d before, %d just after, %d at rest"
                  % (SESSIONS, stored, took, before, during, after))
            check(after == before, "loop_sources is %d at rest after %d sessions, %d before them (%.0f s later)"
                  % (after, SESSIONS, before, IDLE_WAIT))
            log = d.read_log()
            check("hook-timeout" in log, "no hook met core.hook-timeout: the timeout path was not exercised")
    finally:
        dns.close()


if __name__ == "__main__":
    run_tests([test_loop_sources_come_back_after_the_load])
