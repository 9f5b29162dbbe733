# SPDX-License-Identifier: MIT
"""Integration tests of pop3-server: the real daemon with storage-sqlite, Python's poplib, raw
sockets for the unpleasant cases, and fetchmail and mpop (real POP3 clients from Debian)
downloading mail."""

import base64
import hashlib
import json
import os
import poplib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pbtest import (FIXTURES, PILLARBOXD, TIMEOUT, TOP_BUILDDIR, Daemon, Failure, LineClient,  # noqa: E402
                    check, fixture_modules, free_port, run_tests, run_user, wait_for)

MODULES = os.path.join(TOP_BUILDDIR, "modules")
PASSWORD = "secret"
SENDER_HEADERS = "Return-Path: <sender@example.org>\r\nDelivered-To: %s\r\n"


def delivery_headers(user):
    return (SENDER_HEADERS % user).encode()


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def message(subject, body_lines, size=None):
    """A message with CRLF line ends; padded with body lines up to SIZE octets."""
    text = "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: %s\r\n\r\n" % subject
    text += "".join(line + "\r\n" for line in body_lines)
    parts = [text.encode()]
    have = len(parts[0])
    n = 0
    while size is not None and have < size:
        parts.append(b"padding line %06d of the message, to make it long enough for the test\r\n" % n)
        have += len(parts[-1])
        n += 1
    return b"".join(parts)


class Pop3Env:
    """pillarboxd with storage-sqlite, pop3-server and the fx-deliver fixture."""

    def __init__(self, pop3_extra="", fx_extra="", start=True):
        self.port = free_port()
        self.sport = free_port()
        self.d = Daemon()
        self.moddir = os.path.join(self.d.tmp, "modules")
        os.mkdir(self.moddir)
        os.chmod(self.moddir, 0o755)
        fixture_modules()
        for name, where in (("storage-sqlite", MODULES), ("pop3-server", MODULES), ("fx-deliver", FIXTURES)):
            path = os.path.join(where, ".libs", name + ".so")
            if not os.path.exists(path):
                raise Failure("%s is not built (make check builds it)" % path)
            os.chmod(path, 0o755)
            os.symlink(path, os.path.join(self.moddir, name + ".so"))
        core = "[core]\nmodule-dir = %s\nshutdown-timeout = 5s\n" % self.moddir
        if run_user():
            core += "user = %s\n" % run_user()
        self.d.write("00-core.conf", core)
        self.d.write("10-storage-sqlite.conf", "[module storage-sqlite]\n")
        self.d.write("30-pop3-server.conf",
                     "[module pop3-server]\npop3-listen = 127.0.0.1:%d\npop3s-listen = 127.0.0.1:%d\n%s"
                     % (self.port, self.sport, pop3_extra))
        self.d.write("90-fx-deliver.conf", "[module fx-deliver]\n" + fx_extra)
        self.files = 0
        if start:
            self.d.start()

    def restart(self):
        check(self.d.stop() == 0, "pillarboxd did not stop cleanly:\n%s" % self.d.read_log())
        self.d.notify.close()
        os.unlink(os.path.join(self.d.tmp, "notify.sock"))
        os.rename(self.d.log_path, self.d.log_path + ".1")
        self.d.start()

    def add_user(self, name, protocols="pop3", password=PASSWORD):
        self.d.cli("user", "add", name, "--protocols", protocols, input=password + "\n")

    def deliver(self, user, data, count=1):
        self.files += 1
        path = os.path.join(self.d.tmp, "msg%d.eml" % self.files)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
        self.d.cli("--timeout", "300", "fx-deliver", user, path, str(count))

    def pop(self, user=None, password=PASSWORD, tls="stls"):
        """A logged-in poplib client (STLS by default, or "implicit", or None for plain text)."""
        if tls == "implicit":
            p = poplib.POP3_SSL("127.0.0.1", self.sport, timeout=TIMEOUT, context=tls_context())
        else:
            p = poplib.POP3("127.0.0.1", self.port, timeout=TIMEOUT)
            if tls == "stls":
                p.stls(tls_context())
        if user is not None:
            p.user(user)
            p.pass_(password)
        return p

    def raw(self):
        c = LineClient(self.port)
        check(c.line().startswith("+OK"), "no greeting")
        return c

    def close(self, ok):
        try:
            if ok:
                self.d.finish()
        finally:
            self.d.close()


class TlsLineClient(LineClient):
    """LineClient over an already wrapped socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""


def raw_tls_login(env, user, password=PASSWORD):
    c = env.raw()
    c.send("STLS\r\n")
    check(c.line().startswith("+OK"), "STLS refused")
    t = TlsLineClient(tls_context().wrap_socket(c.sock))
    t.send("USER %s\r\nPASS %s\r\n" % (user, password))
    check(t.line().startswith("+OK"), "USER")
    line = t.line()
    check(line.startswith("+OK"), "login failed: %s" % line)
    return t


def read_multiline(c):
    """The lines of a multi-line response up to '.', as sent (still stuffed)."""
    lines = []
    while True:
        line = c.line()
        if line == ".":
            return lines
        lines.append(line)


def read_response(t, slowly=0):
    """The raw octets of one multi-line response, status line to terminator. After
    byte-stuffing, CRLF "." CRLF appears only at the end."""
    parts = [t.buf]
    t.buf = b""
    for _ in range(slowly):
        parts.append(t.sock.recv(4096))
        time.sleep(0.01)
    data = b"".join(parts)
    while True:
        end = data.find(b"\r\n.\r\n")
        if end >= 0:
            t.buf = data[end + 5:]
            return data[:end + 5]
        chunk = t.sock.recv(1 << 20)
        if not chunk:
            raise Failure("connection closed in a multi-line response (%d octets)" % len(data))
        data += chunk


def stuffed(content):
    """RFC 1939 section 3 byte-stuffing of CONTENT (CRLF lines), the slow way."""
    out = []
    for line in content.split(b"\r\n"):
        out.append(b"." + line if line.startswith(b".") else line)
    return b"\r\n".join(out)


def expect_error(fn, needle):
    try:
        fn()
    except poplib.error_proto as e:
        text = e.args[0].decode() if isinstance(e.args[0], bytes) else str(e.args[0])
        check(needle in text, "expected %r in %r" % (needle, text))
        return text
    raise Failure("expected an -ERR containing %r" % needle)


def drop(p, reset=False):
    """Ends a poplib session without QUIT: a FIN, or a reset (RST) with RESET."""
    if reset:
        p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    else:
        p.sock.shutdown(socket.SHUT_RDWR)
    p.file.close()
    p.sock.close()


def wait_unlocked(env, user):
    """A dropped connection's lock goes when the daemon has seen the close: retry briefly."""
    deadline = time.time() + TIMEOUT
    while True:
        try:
            return env.pop(user)
        except poplib.error_proto as e:
            if b"IN-USE" not in e.args[0] or time.time() > deadline:
                raise
            time.sleep(0.05)


# One daemon for the tests that need no special configuration; each test uses its own users.
ENV = None


def env():
    return ENV


# ---- the tests ----------------------------------------------------------------------------


def test_greeting_capa_plaintext_refused():
    c = env().raw()
    c.send("CAPA\r\n")
    check(c.line().startswith("+OK"), "CAPA")
    caps = read_multiline(c)
    for cap in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS", "EXPIRE NEVER",
                "IMPLEMENTATION Pillarbox"):
        check(cap in caps, "CAPA lacks %s: %s" % (cap, caps))
    check("USER" not in caps and not any(x.startswith("SASL") for x in caps),
          "USER/SASL advertised without TLS: %s" % caps)
    c.send("USER bob\r\n")
    line = c.line()
    check(line.startswith("-ERR [AUTH] ") and "TLS" in line, line)
    c.send("PASS secret\r\n")
    check(c.line().startswith("-ERR [AUTH] "), "PASS without TLS")
    c.send("AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n")
    check(c.line().startswith("-ERR [AUTH] "), "AUTH PLAIN without TLS")
    c.send("STAT\r\n")
    check(c.line().startswith("-ERR"), "STAT before login")
    c.send("APOP bob 0123456789abcdef0123456789abcdef\r\n")
    check(c.line().startswith("-ERR"), "APOP")
    c.send("QUIT\r\n")
    check(c.line().startswith("+OK"), "QUIT")
    check(c.closed(), "not closed after QUIT")


def test_retr_list_uidl_top_over_stls():
    e = env()
    e.add_user("alice")
    bodies = [
        message("one", ["Hello.", "", "Bye."]),
        message("dots", [".", "..", ".leading dot", "...", "middle . dot", ". space"]),
        message("big", ["big one"], size=200 * 1024),
    ]
    for b in bodies:
        e.deliver("alice", b)
    p = e.pop("alice")
    count, octets = p.stat()
    check(count == 3, "STAT count %d" % count)
    resp, listing, _ = p.list()
    sizes = [int(x.split()[1]) for x in listing]
    check(sum(sizes) == octets, "LIST sum %d != STAT octets %d" % (sum(sizes), octets))
    resp, uidls, _ = p.uidl()
    uids = [x.split()[1] for x in uidls]
    check(len(set(uids)) == 3, "UIDs not unique: %s" % uids)
    for i, body in enumerate(bodies, 1):
        content = delivery_headers("alice") + body
        resp, lines, got_octets = p.retr(i)
        check(sizes[i - 1] == len(content), "LIST %d says %d, content is %d octets" % (i, sizes[i - 1], len(content)))
        check(got_octets == sizes[i - 1], "RETR %d: %d octets received (unstuffed), LIST said %d"
              % (i, got_octets, sizes[i - 1]))
        check(b"\r\n".join(lines) + b"\r\n" == content, "RETR %d content differs" % i)
        check(resp.startswith(b"+OK %d octets" % len(content)), resp)
        check(p.list(i).split()[2] == str(sizes[i - 1]).encode(), "LIST %d" % i)
        check(p.uidl(i).split()[2] == uids[i - 1], "UIDL %d" % i)
    # TOP: the headers, the blank line, then n body lines (RFC 1939 section 7).
    resp, lines, _ = p.top(1, 0)
    header_section = (delivery_headers("alice") + bodies[0]).split(b"\r\n\r\n")[0]
    check(lines == header_section.split(b"\r\n") + [b""], "TOP 1 0: %r" % lines)
    check(lines[-1] == b"", "TOP 1 0 lacks the blank line: %r" % lines)
    resp, lines, _ = p.top(2, 2)
    check(lines[-2:] == [b".", b".."], "TOP 2 2 (unstuffed): %r" % lines)
    expect_error(lambda: p.retr(4), "No such message")
    expect_error(lambda: p.retr(0), "No such message")
    expect_error(lambda: p.top(1, -1), "Invalid")
    check(p.noop().startswith(b"+OK"), "NOOP")
    p.quit()


def test_byte_stuffing_on_the_wire():
    e = env()
    e.add_user("dot")
    # Storage is read in 64 KiB pieces of the message (the delivery headers come from the
    # listing): put a '.'-line right where the second piece begins, and more at the end.
    body = b"Subject: boundary\r\n\r\n"
    while len(body) + 64 <= 65536 - 70:
        body += b"x" * 62 + b"\r\n"
    body += b"y" * (65536 - len(body) - 2) + b"\r\n"
    check(len(body) == 65536, "setup: %d" % len(body))
    body += b".at the chunk boundary\r\n..\r\n.\r\nlast\r\n.\r\n"
    e.deliver("dot", body)
    t = raw_tls_login(e, "dot")
    t.send("RETR 1\r\n")
    content = delivery_headers("dot") + body
    data = read_response(t)
    first, rest = data.split(b"\r\n", 1)
    check(first == b"+OK %d octets" % len(content), first)
    check(rest == stuffed(content) + b".\r\n", "stuffed response differs from RFC 1939 section 3")
    t.send("QUIT\r\n")


def test_pop3s_and_auth_plain():
    e = env()
    e.add_user("carol")
    e.deliver("carol", message("hi", ["x"]))
    p = e.pop("carol", tls="implicit")
    check(p.stat()[0] == 1, "POP3S STAT")
    p.quit()

    raw = socket.create_connection(("127.0.0.1", e.sport), timeout=TIMEOUT)
    t = TlsLineClient(tls_context().wrap_socket(raw))
    check(t.line().startswith("+OK"), "POP3S greeting")
    t.send("CAPA\r\n")
    t.line()
    caps = read_multiline(t)
    check("USER" in caps and "SASL PLAIN" in caps and "STLS" not in caps, "CAPA under TLS: %s" % caps)
    t.send("AUTH\r\n")
    check(t.line() == "+OK" and read_multiline(t) == ["PLAIN"], "AUTH listing")
    t.send("AUTH CRAM-MD5\r\n")
    check(t.line().startswith("-ERR"), "unknown mechanism")
    # Continuation, cancelled.
    t.send("AUTH PLAIN\r\n")
    check(t.line() == "+ ", "no continuation")
    t.send("*\r\n")
    check(t.line().startswith("-ERR"), "cancel")
    # Not base64.
    t.send("AUTH PLAIN !!!!\r\n")
    check(t.line().startswith("-ERR"), "bad base64")
    # Wrong password.
    t.send("AUTH PLAIN %s\r\n" % base64.b64encode(b"\0carol\0wrong").decode())
    check(t.line() == "-ERR [AUTH] Authentication failed", "wrong password")
    # Right, with the continuation.
    t.send("AUTH PLAIN\r\n")
    check(t.line() == "+ ", "no continuation")
    t.send(base64.b64encode(b"\0carol\0" + PASSWORD.encode()).decode() + "\r\n")
    line = t.line()
    check(line.startswith("+OK") and "1 messages" in line, line)
    t.send("CAPA\r\n")
    t.line()
    caps = read_multiline(t)
    check("USER" not in caps and "STLS" not in caps and "TOP" in caps, "CAPA in TRANSACTION: %s" % caps)
    t.send("QUIT\r\n")
    check(t.line().startswith("+OK"), "QUIT")


def test_failed_logins_look_alike():
    e = env()
    e.add_user("dave")
    e.add_user("smtponly", protocols="smtp")
    replies = {}
    times = {}
    for name, user, password in (("wrong password", "dave", "nope"), ("unknown user", "ghost", "nope"),
                                 ("protocol not permitted", "smtponly", PASSWORD)) * 2:
        c = raw_tls_login_start(e)
        t0 = time.time()
        c.send("USER %s\r\nPASS %s\r\n" % (user, password))
        check(c.line().startswith("+OK"), "USER")
        reply = c.line()
        check(replies.setdefault(name, reply) == reply, "%s: replies differ: %s" % (name, reply))
        times[name] = min(times.get(name, 1e9), time.time() - t0)
        c.close()
    check(len(set(replies.values())) == 1, "replies differ: %s" % replies)
    check(replies["unknown user"] == "-ERR [AUTH] Authentication failed", replies)
    print("# failed login times: %s" % ", ".join("%s %.3fs" % kv for kv in times.items()))
    slowest, fastest = max(times.values()), min(times.values())
    check(slowest < fastest * 3 + 0.2, "login failure times differ widely: %s" % times)
    # Reported through the hooks, for the IDS module: event and auth stage.
    e.d.wait_log("fx-deliver: event auth-failed service=pop3 detail=ghost")
    e.d.wait_log("fx-deliver: auth user=ghost result=failure mechanism=USER")
    e.d.wait_log("fx-deliver: auth user=dave result=failure mechanism=USER")
    # Three failures on one connection end it.
    c = raw_tls_login_start(e)
    for _ in range(3):
        c.send("USER dave\r\nPASS nope\r\n")
        c.line()
        check(c.line() == "-ERR [AUTH] Authentication failed", "failure reply")
    check(c.closed(), "still open after three failed logins")


def raw_tls_login_start(env):
    c = env.raw()
    c.send("STLS\r\n")
    check(c.line().startswith("+OK"), "STLS refused")
    return TlsLineClient(tls_context().wrap_socket(c.sock))


def test_stls_injection():
    e = env()
    e.add_user("erin")
    c = e.raw()
    # Commands pipelined after STLS, in the same segment, must be discarded (RFC 2595 section 3.1).
    c.send("STLS\r\nUSER erin\r\nCAPA\r\n")
    check(c.line().startswith("+OK"), "STLS")
    check(c.buf == b"", "data after the STLS reply: %r" % c.buf)
    t = TlsLineClient(tls_context().wrap_socket(c.sock))
    t.send("PASS %s\r\n" % PASSWORD)
    line = t.line()
    check(line.startswith("-ERR") and "USER" in line, "injected USER was executed: %s" % line)
    t.send("STLS\r\n")
    check(t.line().startswith("-ERR"), "STLS twice")
    t.send("USER erin\r\nPASS %s\r\n" % PASSWORD)
    t.line()
    check(t.line().startswith("+OK"), "login after STLS")
    t.send("QUIT\r\n")
    check(t.line().startswith("+OK"), "QUIT")


def test_locking_in_use():
    e = env()
    e.add_user("frank")
    e.deliver("frank", message("m", ["x"]))
    first = e.pop("frank")
    second = e.pop()
    second.user("frank")
    expect_error(lambda: second.pass_(PASSWORD), "[IN-USE]")
    first.quit()
    second.user("frank")
    check(second.pass_(PASSWORD).startswith(b"+OK"), "login after the first session quit")
    second.quit()


def test_rset_and_dropped_connection_delete_nothing():
    e = env()
    e.add_user("gina")
    for i in range(3):
        e.deliver("gina", message("m%d" % i, ["x"]))
    p = e.pop("gina")
    uids = p.uidl()[1]
    p.dele(1)
    p.dele(2)
    check(p.stat()[0] == 1, "STAT after DELE")
    expect_error(lambda: p.retr(1), "deleted")
    expect_error(lambda: p.dele(1), "deleted")
    check(len(p.list()[1]) == 1, "deleted messages listed")
    check(p.rset().startswith(b"+OK"), "RSET")
    check(p.stat()[0] == 3, "STAT after RSET")
    p.dele(3)
    p.quit()
    p = e.pop("gina")
    check(p.uidl()[1] == uids[:2], "QUIT after RSET and DELE 3: %r" % p.uidl()[1])
    # DELE everything, then drop the connection without QUIT.
    p.dele(1)
    p.dele(2)
    drop(p)
    p = wait_unlocked(e, "gina")
    check(p.uidl()[1] == uids[:2], "a dropped connection deleted messages")
    # The same with a reset (RST) instead of a FIN.
    p.dele(1)
    drop(p, reset=True)
    p = wait_unlocked(e, "gina")
    check(p.stat()[0] == 2, "a reset connection deleted messages")
    p.dele(2)
    resp = p.quit()
    check(b"1 messages deleted" in resp, resp)
    p = e.pop("gina")
    check(p.uidl()[1] == [b"1 " + uids[0].split()[1]], "after QUIT: %r" % p.uidl()[1])
    p.quit()


def test_pipelining_and_slow_client():
    e = env()
    e.add_user("hank")
    for i in range(5):
        e.deliver("hank", message("pipe %d" % i, [".dot %d" % i]))
    t = raw_tls_login(e, "hank")
    # Everything in one segment (RFC 2449 section 6.6), answered in order.
    t.send("STAT\r\nLIST 2\r\nUIDL 3\r\nRETR 1\r\nTOP 2 0\r\nNOOP\r\nDELE 5\r\nLIST\r\nRSET\r\nXYZZY\r\nRETR 9\r\n")
    check(t.line().startswith("+OK 5 "), "STAT")
    check(t.line().startswith("+OK 2 "), "LIST 2")
    check(t.line().startswith("+OK 3 "), "UIDL 3")
    check(t.line().startswith("+OK"), "RETR 1")
    body = read_multiline(t)
    check("..dot 0" in body, "RETR 1 not stuffed: %s" % body)
    check(t.line().startswith("+OK"), "TOP")
    read_multiline(t)
    check(t.line() == "+OK", "NOOP")
    check(t.line().startswith("+OK"), "DELE")
    check(t.line().startswith("+OK 4 messages"), "LIST")
    check(len(read_multiline(t)) == 4, "LIST after DELE")
    check(t.line().startswith("+OK"), "RSET")
    check(t.line().startswith("-ERR"), "unknown command")
    check(t.line().startswith("-ERR"), "RETR 9")
    # One byte at a time.
    for ch in "STAT\r\nUIDL\r\n":
        t.send(ch)
        time.sleep(0.002)
    check(t.line().startswith("+OK 5 "), "STAT, slowly")
    check(t.line().startswith("+OK"), "UIDL, slowly")
    check(len(read_multiline(t)) == 5, "UIDL listing")
    t.send("QUIT\r\n")
    check(t.line().startswith("+OK"), "QUIT")


def test_read_ahead_out_of_order_and_dropped():
    """RETR reads the next messages ahead: any order of RETR, TOP and DELE must still send
    the right message, and a client that vanishes with reads in flight must not hurt."""
    e = env()
    e.add_user("pia")
    bodies = [message("ahead %d" % i, ["body %d" % i, ".dot %d" % i], size=1000 + 3000 * i) for i in range(12)]
    for b in bodies:
        e.deliver("pia", b)
    t = raw_tls_login(e, "pia")
    order = ["RETR 1", "RETR 2", "RETR 5", "RETR 3", "DELE 4", "RETR 6", "TOP 7 0", "RETR 7", "RETR 12",
             "RETR 11", "RETR 1", "RETR 10"]
    t.send("".join(c + "\r\n" for c in order))
    for cmd in order:
        verb, n = cmd.split()[0], int(cmd.split()[1])
        if verb == "DELE":
            check(t.line().startswith("+OK"), cmd)
            continue
        data = read_response(t)
        first, rest = data.split(b"\r\n", 1)
        check(first.startswith(b"+OK"), "%s: %r" % (cmd, first))
        content = delivery_headers("pia") + bodies[n - 1]
        if verb == "RETR":
            check(rest == stuffed(content) + b".\r\n", "%s sent the wrong content" % cmd)
        else:
            check(rest == stuffed(content.split(b"\r\n\r\n")[0] + b"\r\n\r\n") + b".\r\n", cmd)
    # Ask for everything and vanish while the answers and the reads ahead are under way.
    t.send("".join("RETR %d\r\n" % i for i in range(1, 13)))
    t.sock.recv(1000)
    t.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    t.sock.close()
    p = wait_unlocked(e, "pia")
    check(p.stat()[0] == 12, "messages lost")
    p.quit()


def test_bad_commands_and_long_lines():
    e = env()
    c = e.raw()
    c.send("USER " + "x" * 2000 + "\r\n")
    check(c.line() == "-ERR Line too long", "long line")
    c.send("CAPA\r\n")
    check(c.line().startswith("+OK"), "CAPA after a long line")
    read_multiline(c)
    for i in range(9):
        c.send("GET / HTTP/1.1\r\n")
        check(c.line().startswith("-ERR"), "garbage %d" % i)
    check(c.closed(), "still open after ten bad commands")


def test_large_message_slow_reader():
    e = env()
    e.add_user("ivan")
    big = message("large", ["start"], size=4 * 1024 * 1024)
    e.deliver("ivan", big)
    t = raw_tls_login(e, "ivan")
    t.send("RETR 1\r\n")
    # Read slowly for a while: the server must wait for us, not buffer the whole message.
    data = read_response(t, slowly=20)
    first, rest = data.split(b"\r\n", 1)
    content = delivery_headers("ivan") + big
    check(hashlib.sha256(rest).digest() == hashlib.sha256(stuffed(content) + b".\r\n").digest(),
          "4 MiB message differs")
    t.send("QUIT\r\n")


FETCHMAIL_MDA = """import os, sys
out = sys.argv[1]
data = sys.stdin.buffer.read()
with open(os.path.join(out, "%04d" % len(os.listdir(out))), "wb") as f:
    f.write(data)
"""


def test_fetchmail_downloads_everything():
    if shutil.which("fetchmail") is None:
        raise Failure("fetchmail is not installed (Debian package fetchmail)")
    e = env()
    e.add_user("olga")
    bodies = [message("fetchmail %d" % i, ["line", ".dot line", "..two dots", "", "end"], size=(i + 1) * 5000)
              for i in range(5)]
    for b in bodies:
        e.deliver("olga", b)
    home = os.path.join(e.d.tmp, "fetchmail-home")
    out = os.path.join(home, "out")
    os.makedirs(out)
    mda = os.path.join(home, "mda.py")
    with open(mda, "w") as f:
        f.write(FETCHMAIL_MDA)
    rc = os.path.join(home, "fetchmailrc")
    with open(rc, "w") as f:
        # STLS with TLS 1.2 or later; the self-signed certificate is not checked.
        f.write('set no syslog\npoll 127.0.0.1 with proto POP3 service %d\n'
                '  user "olga" there with password "%s" is "%s" here\n'
                '  sslproto "TLS1.2+" no sslcertck fetchall\n'
                '  mda "%s %s %s"\n' % (e.port, PASSWORD, os.environ.get("USER", "root"), sys.executable, mda, out))
    os.chmod(rc, 0o600)
    p = subprocess.run(["fetchmail", "-f", rc, "--invisible", "--idfile", os.path.join(home, "ids"),
                        "--pidfile", os.path.join(home, "pid")],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME=home))
    check(p.returncode == 0, "fetchmail failed (%d): %s %s" % (p.returncode, p.stdout, p.stderr))
    got = []
    for name in sorted(os.listdir(out)):
        with open(os.path.join(out, name), "rb") as f:
            got.append(f.read())
    # fetchmail hands messages to the MDA with LF line ends.
    want = [(delivery_headers("olga") + b).replace(b"\r\n", b"\n") for b in bodies]
    check(got == want, "fetchmail got %d messages, not the ones delivered:\n%r" % (len(got), got[:1]))
    # It deleted what it downloaded (no keep): the mailbox is empty now.
    pp = wait_unlocked(e, "olga")
    check(pp.stat()[0] == 0, "mailbox not empty after fetchmail")
    pp.quit()


def test_mpop_downloads_everything():
    if shutil.which("mpop") is None:
        print("# mpop is not installed (Debian package mpop): skipped")
        return
    e = env()
    e.add_user("judy")
    bodies = [message("mpop %d" % i, ["line", ".dot line", "", "end"], size=(i + 1) * 3000) for i in range(6)]
    for b in bodies:
        e.deliver("judy", b)
    home = os.path.join(e.d.tmp, "mpop-home")
    maildir = os.path.join(home, "Maildir")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub))
    conf = os.path.join(home, "mpoprc")
    with open(conf, "w") as f:
        f.write("account pillarbox\nhost 127.0.0.1\nport %d\ntls on\ntls_starttls on\ntls_certcheck off\n"
                "auth user\nuser judy\npassword %s\ndelivery maildir %s\nreceived_header off\n"
                "uidls_file %s/uidls\n" % (e.port, PASSWORD, maildir, home))
    os.chmod(conf, 0o600)
    p = subprocess.run(["mpop", "-C", conf, "pillarbox"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, HOME=home))
    check(p.returncode == 0, "mpop failed (%d): %s %s" % (p.returncode, p.stdout, p.stderr))
    got = []
    for name in sorted(os.listdir(os.path.join(maildir, "new"))):
        with open(os.path.join(maildir, "new", name), "rb") as f:
            got.append(f.read())
    want = sorted((delivery_headers("judy") + b).replace(b"\r\n", b"\n") for b in bodies)
    check(sorted(got) == want, "mpop got %d messages, not the ones delivered" % len(got))
    # mpop deletes what it downloaded (keep off): the mailbox is empty now.
    pp = wait_unlocked(e, "judy")
    check(pp.stat()[0] == 0, "mailbox not empty after mpop")
    pp.quit()


def test_uidl_stable_across_restart_and_never_reused():
    e = Pop3Env()
    ok = False
    try:
        e.add_user("kim")
        for i in range(3):
            e.deliver("kim", message("r%d" % i, ["x"]))
        p = e.pop("kim")
        before = p.uidl()[1]
        p.quit()
        e.restart()
        p = e.pop("kim")
        check(p.uidl()[1] == before, "UIDLs changed across a restart: %r %r" % (before, p.uidl()[1]))
        p.dele(3)
        p.quit()
        e.deliver("kim", message("new", ["y"]))
        p = e.pop("kim")
        after = [x.split()[1] for x in p.uidl()[1]]
        old = [x.split()[1] for x in before]
        check(after[:2] == old[:2] and after[2] not in old, "UIDL reused: %r then %r" % (old, after))
        p.quit()
        ok = True
    finally:
        e.close(ok)


def test_plaintext_allowed_when_configured():
    e = Pop3Env(pop3_extra="auth-plaintext = true\nimplementation =\nexpire = 30\n")
    ok = False
    try:
        e.add_user("leo")
        p = e.pop("leo", tls=None)
        caps = p.capa()
        check("IMPLEMENTATION" not in caps and caps.get("EXPIRE") == ["30"], "CAPA: %s" % caps)
        p.quit()
        c = e.raw()
        c.send("AUTH PLAIN %s\r\n" % base64.b64encode(b"leo\0leo\0" + PASSWORD.encode()).decode())
        check(c.line().startswith("+OK"), "AUTH PLAIN with authzid = authcid")
        c.send("QUIT\r\n")
        c.line()
        c = e.raw()
        c.send("AUTH PLAIN %s\r\n" % base64.b64encode(b"admin\0leo\0" + PASSWORD.encode()).decode())
        check(c.line().startswith("-ERR [AUTH]"), "proxy authorisation accepted")
        ok = True
    finally:
        e.close(ok)


def test_auth_stage_can_refuse():
    e = Pop3Env(fx_extra="auth-answer = reject\n")
    ok = False
    try:
        e.add_user("mia")
        p = e.pop()
        p.user("mia")
        expect_error(lambda: p.pass_(PASSWORD), "[AUTH] fx-deliver says no")
        p.close()
        e.d.write("90-fx-deliver.conf", "[module fx-deliver]\nauth-answer = disconnect\n")
        e.d.signal(signal.SIGHUP)
        e.d.wait_notify("READY=1")
        t = raw_tls_login_start(e)
        t.send("USER mia\r\nPASS %s\r\n" % PASSWORD)
        t.line()
        check(t.line().startswith("-ERR [SYS/TEMP] fx-deliver says goodbye"), "disconnect verdict")
        check(t.closed(), "not closed after a disconnect verdict")
        ok = True
    finally:
        e.close(ok)


def test_idle_timeout_and_shutdown():
    e = Pop3Env(pop3_extra="idle-timeout = 1s\n")
    ok = False
    try:
        c = e.raw()
        time.sleep(2.5)
        check(c.closed(), "idle connection not closed")
        e.add_user("ned")
        e.deliver("ned", message("keep", ["x"]))
        p = e.pop("ned")
        p.dele(1)
        e.d.signal(signal.SIGTERM)
        line = p.file.readline()
        check(line.startswith(b"-ERR [SYS/TEMP]"), "shutdown notice: %r" % line)
        check(e.d.proc.wait(TIMEOUT) == 0, "exit status")
        e.d.notify.close()
        os.unlink(os.path.join(e.d.tmp, "notify.sock"))
        e.d.start()
        p = e.pop("ned")
        check(p.stat()[0] == 1, "a message marked at shutdown was deleted")
        p.quit()
        ok = True
    finally:
        e.close(ok)


def test_client_that_never_reads_is_closed():
    # A client that pipelines RETRs and never reads: pop3-server stops reading its input
    # above its output mark, and the core's idle timeout counts while the client takes
    # none of its output, so the session ends instead of waiting for ever (issue 15).
    e = Pop3Env(pop3_extra="idle-timeout = 1s\n")
    ok = False
    try:
        e.add_user("olga")
        e.deliver("olga", message("big", ["start"], size=2 * 1024 * 1024))
        t = raw_tls_login(e, "olga")
        t.send("RETR 1\r\n" * 20)
        e.d.wait_log("the client took none of", timeout=TIMEOUT)
        wait_for("the session to end", lambda: json.loads(e.d.cli("--json", "status").stdout)["sessions"] == 0)
        t.close()
        ok = True
    finally:
        e.close(ok)


def test_check_config():
    d = Daemon()
    try:
        d.write("30-pop3-server.conf", "[module pop3-server]\npop3-listen = 127.0.0.1:%d\npop3s-listen =\n"
                "apop = true\n" % free_port())
        core = "[core]\nmodule-dir = %s\n" % MODULES
        if run_user():
            core += "user = %s\n" % run_user()
        d.write("00-core.conf", core)
        p = subprocess.run([PILLARBOXD, "--check-config", "-c", d.conf], capture_output=True, text=True,
                           timeout=TIMEOUT)
        check(p.returncode == 1 and "APOP" in p.stderr and "reversible" in p.stderr, p.stderr)
        d.write("30-pop3-server.conf", "[module pop3-server]\nexpire = soon\n")
        p = subprocess.run([PILLARBOXD, "--check-config", "-c", d.conf], capture_output=True, text=True,
                           timeout=TIMEOUT)
        check(p.returncode == 1 and "expire" in p.stderr, p.stderr)
        d.write("30-pop3-server.conf", "[module pop3-server]\n")
        p = subprocess.run([PILLARBOXD, "--check-config", "-c", d.conf], capture_output=True, text=True,
                           timeout=TIMEOUT)
        check(p.returncode == 0, p.stderr)
    finally:
        d.close()


SHARED = [
    test_greeting_capa_plaintext_refused,
    test_retr_list_uidl_top_over_stls,
    test_byte_stuffing_on_the_wire,
    test_pop3s_and_auth_plain,
    test_failed_logins_look_alike,
    test_stls_injection,
    test_locking_in_use,
    test_rset_and_dropped_connection_delete_nothing,
    test_pipelining_and_slow_client,
    test_read_ahead_out_of_order_and_dropped,
    test_bad_commands_and_long_lines,
    test_large_message_slow_reader,
    test_fetchmail_downloads_everything,
    test_mpop_downloads_everything,
]
OWN = [
    test_uidl_stable_across_restart_and_never_reused,
    test_plaintext_allowed_when_configured,
    test_auth_stage_can_refuse,
    test_idle_timeout_and_shutdown,
    test_client_that_never_reads_is_closed,
    test_check_config,
]


def main():
    global ENV
    only = sys.argv[1:]
    tests = [t for t in SHARED + OWN if not only or t.__name__ in only]
    ENV = Pop3Env() if any(t in SHARED for t in tests) else None

    def shared_last():
        # The shared daemon must end cleanly too (no leaks, no criticals).
        ENV.close(True)

    if ENV is not None:
        tests.append(shared_last)
    try:
        run_tests(tests)
    finally:
        if ENV is not None:
            ENV.d.close()


if __name__ == "__main__":
    main()
