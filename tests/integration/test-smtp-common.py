# SPDX-License-Identifier: MIT
"""Shared by the smtp-server integration tests: a daemon with storage-sqlite and smtp-server
from the build tree, a domain and users, and a raw SMTP client."""

import base64
import contextlib
import os
import smtplib
import socket
import sqlite3
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pbtest import TIMEOUT, TOP_BUILDDIR, Daemon, Failure, check, free_port  # noqa: E402,F401

MODULES = os.path.join(TOP_BUILDDIR, "modules")
DOMAIN = "example.org"
PASSWORD = "s3cret-Pass"


def build_modules():
    """The build tree's modules, made go-w (the loader refuses group-writable modules)."""
    libs = os.path.join(MODULES, ".libs")
    for name in os.listdir(libs):
        if name.endswith(".so"):
            os.chmod(os.path.join(libs, name), 0o755)
    return MODULES


class SmtpDaemon(Daemon):
    """pillarboxd with storage-sqlite and smtp-server on free loopback ports."""

    def __init__(self, smtp_extra="", core_extra="", users=("bob", "alice"), start=True):
        self.ports = {"smtp": free_port(), "submission": free_port(), "smtps": free_port()}
        super().__init__(core_extra=core_extra)
        self.write("10-storage-sqlite.conf", "[module storage-sqlite]\nfree-space-reserve = 0\n")
        self.write("20-smtp-server.conf",
                   "[module smtp-server]\nsmtp-listen = 127.0.0.1:%d\nsubmission-listen = 127.0.0.1:%d\n"
                   "smtps-listen = 127.0.0.1:%d\n%s" % (self.ports["smtp"], self.ports["submission"],
                                                        self.ports["smtps"], smtp_extra))
        if start:
            self.start()
            self.cli("domain", "add", DOMAIN)
            for user in users:
                self.cli("user", "add", "%s@%s" % (user, DOMAIN), input=PASSWORD + "\n")

    def set_core(self, extra=""):
        super().set_core("hostname = mx.test.example\n" + extra)
        path = os.path.join(self.conf, "00-core.conf")
        with open(path) as f:
            text = f.read()
        lines = [l for l in text.splitlines() if not l.startswith("module-dir")]
        lines.insert(1, "module-dir = %s" % build_modules())
        self.write("00-core.conf", "\n".join(lines) + "\n")

    def db(self):
        """The storage-sqlite database, read-only: what is stored is what counts."""
        path = os.path.join(self.state, "storage-sqlite", "pillarbox.db")
        return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=TIMEOUT)

    def count(self, user):
        with contextlib.closing(self.db()) as db:
            return db.execute("SELECT COUNT(*) FROM mailbox WHERE user = ?", ("%s@%s" % (user, DOMAIN),)).fetchone()[0]

    def messages(self):
        """Every committed message: {queue id: content}."""
        out = {}
        with contextlib.closing(self.db()) as db:
            for qid, mid in db.execute("SELECT queue_id, id FROM messages WHERE state = 'committed'").fetchall():
                out[qid] = b"".join(r[0] for r in db.execute(
                    "SELECT data FROM chunks WHERE message_id = ? ORDER BY pos", (mid,)))
        return out

    def message(self, queue_id):
        return self.messages().get(queue_id)

    def queue(self):
        """Remote recipients waiting: [(queue id, recipient)]."""
        with contextlib.closing(self.db()) as db:
            return db.execute("SELECT m.queue_id, q.recipient FROM queue q JOIN messages m ON m.id = q.message_id"
                              ).fetchall()

    def wait_count(self, user, n, timeout=TIMEOUT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.count(user) == n:
                return
            time.sleep(0.1)
        raise Failure("mailbox of %s never held %d messages (has %d):\n%s" % (user, n, self.count(user),
                                                                              self.read_log()[-3000:]))


class SmtpClient:
    """A raw SMTP client: sends lines or bytes, reads whole (multi-line) replies."""

    def __init__(self, port, tls=False, source=None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT,
                                        source_address=(source, 0) if source else None)
        if tls:
            sock = insecure_context().wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buf = b""

    def starttls(self):
        self.sock = insecure_context().wrap_socket(self.sock, server_hostname="localhost")

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Failure("connection closed while waiting for a reply (have %r)" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace").rstrip("\r")

    def reply(self):
        """One reply: (code, [text lines])."""
        lines = []
        while True:
            line = self._line()
            check(len(line) >= 3 and line[:3].isdigit(), "malformed reply line %r" % line)
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return int(line[:3]), lines
            check(line[3] == "-", "malformed reply line %r" % line)

    def cmd(self, line, expect=None):
        self.send(line + "\r\n")
        code, text = self.reply()
        if expect is not None:
            check(code == expect, "%r: expected %d, got %d %s" % (line, expect, code, text))
        return code, text

    def closed(self, timeout=TIMEOUT):
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, ConnectionResetError):
            return False
        except ssl.SSLError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def insecure_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def submit(d, rcpts, subject="hello", content=None):
    """Sends one message as bob over submission (STARTTLS, AUTH) and checks every recipient
    was taken. CONTENT defaults to a Subject header and a body naming SUBJECT."""
    if content is None:
        content = "Subject: %s\r\n\r\nbody of %s\r\n" % (subject, subject)
    with smtplib.SMTP("127.0.0.1", d.ports["submission"], timeout=TIMEOUT) as s:
        s.starttls(context=insecure_context())
        s.login("bob@%s" % DOMAIN, PASSWORD)
        refused = s.sendmail("bob@%s" % DOMAIN, rcpts, content)
        check(refused == {}, refused)


def plain_b64(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


def message(subject="test", body="Hello.\r\n", extra=""):
    return ("From: <sender@remote.example>\r\nTo: <bob@example.org>\r\nSubject: %s\r\n%s\r\n%s"
            % (subject, extra, body))
