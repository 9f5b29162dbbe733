# SPDX-License-Identifier: MIT
"""Refusals by load-limit, ids and rate-cap come within one second while 2000 other idle
connections are open (issue 6, "Done when"). Bounded: at most IDLE connections, each wait
limited in time; the script raises its own descriptor limit (the daemon inherits it)."""

import importlib.util
import json
import os
import resource
import selectors
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from pbtest import TIMEOUT, Failure, check, free_port, run_tests  # noqa: E402

# The helpers of test-policy.py (a file name with a dash is imported by path).
_spec = importlib.util.spec_from_file_location("test_policy", os.path.join(HERE, "test-policy.py"))
policy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(policy)

IDLE = 2000
SOURCES = ["127.0.0.%d" % i for i in range(2, 12)]   # 200 connections from each
LATENCY = 1.0
OPEN_DEADLINE = 120.0


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(soft >= IDLE + 200, "cannot raise the descriptor limit to %d (hard limit %s)" % (need, hard))


def open_idle(port, count):
    """COUNT connections that have read their greeting, opened without blocking."""
    sel = selectors.DefaultSelector()
    socks = []
    pending = {}
    deadline = time.time() + OPEN_DEADLINE
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((SOURCES[i % len(SOURCES)], 0))
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        pending[s] = b""
        sel.register(s, selectors.EVENT_READ)
        # Keep the accept queue short: drain greetings as we go.
        while len(pending) > 200 and time.time() < deadline:
            drain(sel, pending, 0.5)
    while pending and time.time() < deadline:
        drain(sel, pending, 0.5)
    sel.close()
    check(not pending, "%d of %d idle connections got no greeting in %ss" % (len(pending), count, OPEN_DEADLINE))
    return socks


def drain(sel, pending, timeout):
    for key, _ in sel.select(timeout):
        s = key.fileobj
        try:
            data = s.recv(256)
        except BlockingIOError:
            continue
        if not data:
            raise Failure("an idle connection was closed by the server")
        pending[s] += data
        if b"\n" in pending[s]:
            check(pending[s].startswith(b"+OK"), "idle connection greeted with %r" % pending[s])
            sel.unregister(s)
            del pending[s]


def timed_first_line(port, source, send=None):
    """Seconds from connect() (or from sending SEND on a fresh client) to the first line."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, source_address=(source, 0))
    buf = b""
    try:
        while b"\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    return time.monotonic() - t0, buf.decode(errors="replace").split("\r\n")[0]


def test_refusals_under_idle_load():
    raise_fd_limit(IDLE + 1024)
    ex_port, fx_port = free_port(), free_port()
    conf = {
        "10-example.conf": policy.example_conf(ex_port),
        "11-fx.conf": policy.fx_conf(fx_port),
        "40-ll.conf": policy.LL_BASE + "max-sessions = 0\nmax-per-address = 0\n"
                      "[load-limit-listener fx-events]\nmax-sessions = 1\n",
        "41-ids.conf": policy.IDS_BASE,
        "42-rc.conf": "[module rate-cap]\n[rate-cap-rule senders]\nper = sender\nlimit = 1\n",
    }
    with policy.PolicyDaemon(conf) as d:
        d.start()
        t0 = time.time()
        idle = open_idle(ex_port, IDLE)
        print("# %d idle connections open in %.1fs" % (len(idle), time.time() - t0))
        try:
            sessions = json.loads(d.cli("--json", "status").stdout)["sessions"]
            check(sessions >= IDLE, "the daemon has %d sessions" % sessions)

            # load-limit: the fx listener's one slot is taken; the next client is refused.
            holder = policy.Client(fx_port, "127.0.0.20")
            check(holder.admitted(), "holder: %r" % holder.greeting)
            worst = 0.0
            for _ in range(5):
                took, line = timed_first_line(fx_port, "127.0.0.21")
                check(line == policy.TOTAL, "load-limit refusal: %r" % line)
                worst = max(worst, took)
            print("# load-limit refusal: worst %.3fs" % worst)
            check(worst < LATENCY, "load-limit refusal took %.3fs" % worst)

            # ids: a blocked address.
            d.cli("ids", "block", "127.0.0.30")
            worst = 0.0
            for _ in range(5):
                took, line = timed_first_line(ex_port, "127.0.0.30")
                check(line == "-ERR Your connection has been blocked temporarily - Try again later", line)
                worst = max(worst, took)
            print("# ids refusal: worst %.3fs" % worst)
            check(worst < LATENCY, "ids refusal took %.3fs" % worst)

            # rate-cap: the second message of a sender, refused at MAIL FROM.
            check(policy.send(holder, "bob@example.org", ["a@example.net"]) == "+OK", "first message")
            t = time.monotonic()
            reply = holder.cmd("MAIL bob@example.org")
            took = time.monotonic() - t
            check(reply.startswith("-ERR 450 4.7.1"), reply)
            print("# rate-cap refusal: %.3fs" % took)
            check(took < LATENCY, "rate-cap refusal took %.3fs" % took)
            holder.close()

            # The idle connections are all still served.
            for s in idle[:: IDLE // 20]:
                s.setblocking(True)
                s.settimeout(TIMEOUT)
                s.sendall(b"ECHO still here\r\n")
                check(s.recv(64).startswith(b"+OK still here"), "an idle connection stopped answering")
        finally:
            for s in idle:
                s.close()
        # Every idle session is counted out again (bounded wait).
        policy.wait_until("the idle sessions to end",
                          lambda: json.loads(d.cli("--json", "status").stdout)["sessions"] == 0, timeout=60)
        status = json.loads(d.cli("--json", "load-limit").stdout)
        check(all(scope["incoming"] == 0 for scope in status), status)


if __name__ == "__main__":
    run_tests([test_refusals_under_idle_load])
