# SPDX-License-Identifier: MIT
"""Integration tests of pop3-collector: the real daemon (storage-sqlite, pop3-server,
pop3-collector) collecting from Dovecot, from a TCP proxy that cuts a RETR answer, from
scripted POP3 servers (APOP, the VPOP3 empty-list disconnect, no UIDL) and from its own
pop3-server. Each message must arrive exactly once, whatever is repeated or interrupted."""

import os
import poplib
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.environ.get("top_srcdir") or os.path.join(HERE, "..", ".."), "tests", "integration"))
from pbtest import (FIXTURES, TIMEOUT, TOP_BUILDDIR, Daemon, Failure, check,  # noqa: E402
                    fixture_modules, free_port, run_tests, run_user)
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("pop3_script", os.path.join(HERE, "pop3-script.py"))
pop3_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pop3_script)

MODULES = os.path.join(TOP_BUILDDIR, "modules")
DOVECOT = "/usr/sbin/dovecot"
PASSWORD = "secret"


def message(subject, to="bob@example.org", extra="", body="Hello.\r\n", size=None):
    text = ("Return-Path: <alice@remote.example>\r\nFrom: Alice <alice@remote.example>\r\n"
            "To: %s\r\n%sSubject: %s\r\n\r\n%s" % (to, extra, subject, body)).encode()
    n = 0
    while size is not None and len(text) < size:
        text += b"padding line %06d to make the message long enough for the test\r\n" % n
        n += 1
    return text


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Dovecot:
    """A Dovecot serving POP3 only on a loopback port, from maildirs in a temporary directory."""

    def __init__(self, users=("alice",)):
        self.tmp = tempfile.mkdtemp(prefix="pb-dovecot-")
        os.chmod(self.tmp, 0o755)
        self.port = free_port()
        root = os.geteuid() == 0
        # Dovecot refuses to run its login processes as root: as root, the
        # packaged service users and mail owned by nobody; otherwise ourselves.
        self.uid, self.gid = (65534, 65534) if root else (os.getuid(), os.getgid())
        me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
        internal, login, igroup = ("dovecot", "dovenull", "dovecot") if root else (me, me, group)
        with open(os.path.join(self.tmp, "passwd"), "w") as f:
            for u in users:
                f.write("%s:{PLAIN}%s\n" % (u, PASSWORD))
        self.conf = os.path.join(self.tmp, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write("""base_dir = {t}/run
state_dir = {t}/state
log_path = {t}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain apop
mail_location = maildir:{t}/mail/%u
first_valid_uid = 0
first_valid_gid = 0
default_internal_user = {internal}
default_login_user = {login}
default_internal_group = {igroup}
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {t}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={t}/mail/%u
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service anvil {{
  chroot =
}}
""".format(t=self.tmp, internal=internal, login=login, igroup=igroup, uid=self.uid, gid=self.gid,
           port=self.port))
        for u in users:
            for sub in ("new", "cur", "tmp"):
                os.makedirs(os.path.join(self.tmp, "mail", u, sub))
        self._chown_mail()
        self.files = 0
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"+OK"):
                        return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise Failure("dovecot did not start")

    def _chown_mail(self):
        for dirpath, dirs, files in os.walk(os.path.join(self.tmp, "mail")):
            for name in dirs + files:
                os.chown(os.path.join(dirpath, name), self.uid, self.gid)
        os.chown(os.path.join(self.tmp, "mail"), self.uid, self.gid)

    def add(self, data, user="alice"):
        """Puts a message into the maildir directly (Dovecot serves it with CRLF)."""
        self.files += 1
        name = "%d.M%dP%d.pbtest" % (1700000000 + self.files, self.files, os.getpid())
        tmp = os.path.join(self.tmp, "mail", user, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data.replace(b"\r\n", b"\n"))
        os.chown(tmp, self.uid, self.gid)
        os.rename(tmp, os.path.join(self.tmp, "mail", user, "new", name))

    def count(self, user="alice"):
        return sum(len([n for n in os.listdir(os.path.join(self.tmp, "mail", user, sub)) if not n.startswith(".")])
                   for sub in ("new", "cur"))

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Env:
    """pillarboxd with storage-sqlite, pop3-server, pop3-collector and fx-deliver."""

    def __init__(self, collectors="", start=True):
        self.pop3_port = free_port()
        self.pop3s_port = free_port()
        self.d = Daemon()
        self.moddir = os.path.join(self.d.tmp, "modules")
        os.mkdir(self.moddir)
        os.chmod(self.moddir, 0o755)
        fixture_modules()
        for name, where in (("storage-sqlite", MODULES), ("pop3-server", MODULES), ("pop3-collector", MODULES),
                            ("fx-deliver", FIXTURES)):
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
        self.d.write("30-pop3-server.conf", "[module pop3-server]\npop3-listen = 127.0.0.1:%d\npop3s-listen = 127.0.0.1:%d\n"
                     % (self.pop3_port, self.pop3s_port))
        self.d.write("90-fx-deliver.conf", "[module fx-deliver]\n")
        self.password_file = os.path.join(self.d.tmp, "collector.password")
        with open(self.password_file, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(self.password_file, 0o600)
        self.set_collectors(collectors)
        if start:
            self.d.start()
            self.d.cli("domain", "add", "example.org")
            for u in ("bob", "carol", "dave", "catchall", "remote"):
                self.d.cli("user", "add", u + "@example.org", "--protocols", "pop3", input=PASSWORD + "\n")

    def set_collectors(self, text):
        self.d.write("55-pop3-collector.conf", "[module pop3-collector]\n" + text)

    def collector(self, name, port, extra):
        return ("[collector %s]\nserver = 127.0.0.1:%d\nsecurity = none\nuser = alice\npassword-file = %s\n"
                "command-timeout = 5s\n%s\n" % (name, port, self.password_file, extra))

    def collect(self, name, expect=0):
        p = self.d.cli("--timeout", "60", "collect", name, expect=None)
        if p.returncode != expect:
            raise Failure("pillarbox collect %s: exit %d, expected %d: %s\n%s"
                          % (name, p.returncode, expect, (p.stdout + p.stderr).strip(), self.d.read_log()[-6000:]))
        return (p.stdout + p.stderr).strip()

    def restart(self):
        check(self.d.stop() == 0, "pillarboxd did not stop cleanly:\n%s" % self.d.read_log())
        self.d.notify.close()
        os.unlink(os.path.join(self.d.tmp, "notify.sock"))
        os.rename(self.d.log_path, self.d.log_path + ".%d" % time.time())
        self.d.start()

    def mailbox(self, user):
        """The local mailbox's messages, through Pillarbox's own POP3 server (STLS)."""
        p = poplib.POP3("127.0.0.1", self.pop3_port, timeout=TIMEOUT)
        p.stls(tls_context())
        p.user(user)
        p.pass_(PASSWORD)
        out = [b"\r\n".join(p.retr(i + 1)[1]) for i in range(p.stat()[0])]
        p.quit()
        return out

    def finish(self):
        """Stops the daemon; it must exit cleanly and never have logged a critical
        (pbtest looks for "CRITICAL", the log says "critical:")."""
        log = self.d.read_log()
        check("critical:" not in log, "pillarboxd logged a critical:\n%s" % log[-4000:])
        self.d.finish()

    def db(self):
        return os.path.join(self.d.state, "storage-sqlite", "pillarbox.db")


def subjects(msgs):
    out = []
    for m in msgs:
        for line in m.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
    return sorted(out)


def need_dovecot():
    if not os.access(DOVECOT, os.X_OK):
        print("# SKIP: %s is not installed" % DOVECOT)
        return False
    return True


# ---- Dovecot ------------------------------------------------------------------

def test_dovecot_leave_on_server_exactly_once():
    if not need_dovecot():
        return
    dv = Dovecot()
    env = Env()
    try:
        env.set_collectors(env.collector("dv", dv.port, "mailbox = bob@example.org\nleave-on-server = forever\n"))
        env.restart()
        for i in range(3):
            dv.add(message("leave %d" % i, body="line one\r\n.leading dot\r\n..two dots\r\n"))
        out = env.collect("dv")
        check(out == "3 new, 0 skipped, 0 deleted", "first run: %r" % out)
        for run in range(2):
            out = env.collect("dv")
            check(out == "0 new, 0 skipped, 0 deleted", "run %d: %r" % (run + 2, out))
        msgs = env.mailbox("bob@example.org")
        check(subjects(msgs) == ["leave 0", "leave 1", "leave 2"], "mailbox: %r" % subjects(msgs))
        check(dv.count() == 3, "Dovecot lost messages: %d" % dv.count())
        m = msgs[0]
        check(m.endswith(b"\r\nline one\r\n.leading dot\r\n..two dots"), "dot-unstuffing wrong: %r" % m)
        check(b"Received: from 127.0.0.1 ([127.0.0.1])" in m and b"pop3-collector dv, UID " in m,
              "no Received header naming server and collector: %r" % m[:400])
        check(m.startswith(b"Return-Path: <alice@remote.example>\r\nDelivered-To: bob@example.org\r\n"),
              "delivery headers: %r" % m[:200])
        # A new message, and a restart of the daemon: still each exactly once.
        dv.add(message("leave 3"))
        env.restart()
        out = env.collect("dv")
        check(out == "1 new, 0 skipped, 0 deleted", "after restart: %r" % out)
        check(len(env.mailbox("bob@example.org")) == 4, "mailbox count after restart")
        env.d.wait_log("collector dv: 1 new, 0 skipped, 0 deleted")
        env.finish()
    finally:
        env.d.close()
        dv.close()


def test_dovecot_delete_after_download_and_expiry():
    if not need_dovecot():
        return
    dv = Dovecot(users=("alice", "ann"))
    env = Env()
    try:
        env.set_collectors(
            env.collector("del", dv.port, "mailbox = bob@example.org\nleave-on-server = no\nauth = plain\n")
            + env.collector("keep", dv.port, "mailbox = carol@example.org\nleave-on-server = 2 days\n"
                            "auth = apop\n").replace("user = alice", "user = ann"))
        env.restart()
        for i in range(4):
            dv.add(message("gone %d" % i))
            dv.add(message("kept %d" % i), user="ann")
        out = env.collect("del")
        check(out == "4 new, 0 skipped, 4 deleted", "delete run: %r" % out)
        check(dv.count() == 0, "the Dovecot maildir still holds %d messages" % dv.count())
        check(env.collect("del") == "0 new, 0 skipped, 0 deleted", "second delete run")
        check(len(env.mailbox("bob@example.org")) == 4, "bob's mailbox")

        check(env.collect("keep") == "4 new, 0 skipped, 0 deleted", "keep run")
        check(env.collect("keep") == "0 new, 0 skipped, 0 deleted", "keep run again")
        check(dv.count("ann") == 4, "kept messages deleted too early")
        # Age two of the records by three days while the daemon is stopped:
        # the real clock, the real database, the real deletion path.
        check(env.d.stop() == 0, "stop")
        db = sqlite3.connect(env.db())
        keys = [r[0] for r in db.execute("SELECT key FROM origin WHERE key LIKE 'pop3-collector/keep/%' "
                                         "ORDER BY key LIMIT 2")]
        check(len(keys) == 2, "origin records: %r" % keys)
        db.executemany("UPDATE origin SET first_seen = first_seen - 3 * 86400 WHERE key = ?", [(k,) for k in keys])
        db.commit()
        db.close()
        env.d.notify.close()
        os.unlink(os.path.join(env.d.tmp, "notify.sock"))
        env.d.start()
        out = env.collect("keep")
        check(out == "0 new, 0 skipped, 2 deleted", "expiry run: %r" % out)
        check(dv.count("ann") == 2, "ann has %d, expected 2" % dv.count("ann"))
        check(env.collect("keep") == "0 new, 0 skipped, 0 deleted", "after expiry")
        check(len(env.mailbox("carol@example.org")) == 4, "carol's mailbox")
        # The records of the deleted UIDs were dropped, the others kept.
        check(env.d.stop() == 0, "stop")
        db = sqlite3.connect(env.db())
        left = db.execute("SELECT count(*) FROM origin WHERE key LIKE 'pop3-collector/keep/%'").fetchone()[0]
        gone = db.execute("SELECT count(*) FROM origin WHERE key LIKE 'pop3-collector/del/%'").fetchone()[0]
        db.close()
        check(left == 2 and gone == 0, "origin records left: keep %d, del %d" % (left, gone))
    finally:
        env.d.close()
        dv.close()


def test_dovecot_catch_all_and_max_size():
    if not need_dovecot():
        return
    dv = Dovecot()
    env = Env()
    try:
        env.set_collectors(env.collector("all", dv.port, "route-by-headers = true\ndefault-mailbox = catchall@example.org\n"
                                         "leave-on-server = forever\nmax-size = 8K\n"))
        env.restart()
        dv.add(message("to bob", to="Bob <bob@example.org>, someone@remote.example"))
        dv.add(message("cc carol", to="list@remote.example", extra="Cc: \"C\" <CAROL@example.org>\r\n"))
        dv.add(message("envelope dave", to="undisclosed-recipients:;", extra="X-Envelope-To: dave@example.org\r\n"))
        dv.add(message("nobody local", to="stranger@example.org, x@remote.example"))
        dv.add(message("too big", size=20000))
        out = env.collect("all")
        check(out == "4 new, 1 skipped, 0 deleted", "catch-all run: %r" % out)
        check(subjects(env.mailbox("bob@example.org")) == ["to bob"], "bob")
        check(subjects(env.mailbox("carol@example.org")) == ["cc carol"], "carol")
        check(subjects(env.mailbox("dave@example.org")) == ["envelope dave"], "dave")
        check(subjects(env.mailbox("catchall@example.org")) == ["nobody local"], "catch-all")
        env.d.wait_log("collector all: message UID ")
        out = env.collect("all")
        check(out == "0 new, 1 skipped, 0 deleted", "second run: %r" % out)
        log = env.d.read_log()
        warned = [line for line in log.splitlines() if "larger than max-size" in line and "WARNING" in line.upper()]
        check(len(warned) == 1, "the max-size warning should appear once:\n%s" % "\n".join(warned))
        check("collector all" in warned[0] and "UID " in warned[0] and "octets" in warned[0],
              "warning names collector, UID and size: %s" % warned[0])
        check(dv.count() == 5, "Dovecot lost messages")
        env.finish()
    finally:
        env.d.close()
        dv.close()


def test_dovecot_cut_mid_retr_then_exactly_once():
    if not need_dovecot():
        return
    dv = Dovecot()
    proxy = pop3_script.CutProxy(dv.port, cut_on=2, cut_after=300)
    env = Env()
    try:
        env.set_collectors(env.collector("cut", proxy.port, "mailbox = bob@example.org\nleave-on-server = no\n"))
        env.restart()
        for i in range(3):
            dv.add(message("cut %d" % i, size=3000))
        out = env.collect("cut", expect=1)
        check("lost while fetching message 2" in out and "nothing of it was stored" in out, "cut run: %r" % out)
        check(proxy.cut_done, "the proxy never cut")
        # The first was stored; its DELE never took effect (no QUIT): all three remain there.
        check(dv.count() == 3, "Dovecot count after the cut: %d" % dv.count())
        check(subjects(env.mailbox("bob@example.org")) == ["cut 0"], "after the cut")
        out = env.collect("cut")
        check(out == "2 new, 0 skipped, 3 deleted", "repeated run: %r" % out)
        check(subjects(env.mailbox("bob@example.org")) == ["cut 0", "cut 1", "cut 2"], "each exactly once")
        check(dv.count() == 0, "Dovecot still has %d" % dv.count())
        env.finish()
    finally:
        env.d.close()
        proxy.close()
        dv.close()


# ---- scripted servers and our own -----------------------------------------------

def test_scripted_apop_empty_list_and_no_uidl():
    ok = pop3_script.ScriptedPop3(messages=[message("apop 1"), message("apop 2")])
    empty = pop3_script.ScriptedPop3(messages=[], quirks=("close-on-empty-list",))
    nouidl = pop3_script.ScriptedPop3(messages=[message("x")], quirks=("no-uidl",))
    env = Env()
    try:
        env.set_collectors(env.collector("apop", ok.port, "auth = apop\nmailbox = bob@example.org\n")
                           + env.collector("empty", empty.port, "mailbox = bob@example.org\n")
                           + env.collector("nouidl", nouidl.port, "mailbox = bob@example.org\n"))
        env.restart()
        check(env.collect("apop") == "2 new, 0 skipped, 2 deleted", "APOP run")
        check("APOP" in ok.commands and "PASS" not in ok.commands, "APOP not used: %r" % ok.commands)
        check(ok.messages == [], "the scripted server kept messages")
        out = env.collect("empty")
        check(out == "0 new, 0 skipped, 0 deleted", "empty maildrop that disconnects on UIDL: %r" % out)
        check("UIDL" in empty.commands, "UIDL was never sent")
        out = env.collect("nouidl", expect=1)
        check("does not support UIDL" in out, "no-UIDL error: %r" % out)
        out = env.collect("nosuch", expect=1)
        check("no collector named nosuch" in out, out)
        check(subjects(env.mailbox("bob@example.org")) == ["apop 1", "apop 2"], "bob's mailbox")
        env.finish()
    finally:
        env.d.close()
        for s in (ok, empty, nouidl):
            s.close()


def peak_rss(pid):
    """The process's peak resident set so far (VmHWM), in octets."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise Failure("no VmHWM for pid %d" % pid)


# The bounds of docs/pop3-collector.md ("Limits").
MAX_LISTED = 100000
FLOOD = 1000000

# Under AddressSanitizer, freed memory waits in a quarantine of up to 256 MiB, which the flood's
# lines, read and freed one by one, fill: that would be ASan's growth, not the daemon's. A small
# quarantine keeps the figure the daemon's own (ASAN_OPTIONS means nothing to a normal build).
if "ASAN_OPTIONS" in os.environ:
    os.environ["ASAN_OPTIONS"] += ":quarantine_size_mb=16"


def test_scripted_endless_listings():
    """A hostile server: listings that never end, a line that never ends. Each run is aborted with
    the reason, the daemon's memory stays modest, and nothing is fetched, deleted, lost or stored
    twice: once the server behaves, both messages arrive, once."""
    peer = pop3_script.ScriptedPop3(messages=[message("flood 1"), message("flood 2")], quirks=("flood-uidl",),
                                    flood=FLOOD)
    env = Env()
    try:
        env.set_collectors(env.collector("flood", peer.port, "mailbox = bob@example.org\n"))
        env.restart()
        pid = env.d.proc.pid
        before = peak_rss(pid)
        out = env.collect("flood", expect=1)
        grown = peak_rss(pid) - before
        check("lists more than %d messages in its UIDL answer" % MAX_LISTED in out,
              "endless UIDL: %r (the daemon grew by %d MB)" % (out, grown >> 20))
        # A million UIDL lines of 70-character UIDs were sent: only the bound's worth may be kept
        # (16 MB measured; unbounded, 99 MB). ASan's redzones and shadow about double a heap of
        # small entries (45 MB measured), so a sanitized daemon gets twice the room.
        with open("/proc/%d/maps" % pid) as f:
            limit = (96 if "libasan" in f.read() else 48) * 1024 * 1024
        check(grown < limit, "the daemon grew by %d MB on an endless UIDL listing (at most %d)"
              % (grown >> 20, limit >> 20))
        check("run failed" in env.d.read_log(), "the failed run is not logged")
        check("RETR" not in peer.commands and "DELE" not in peer.commands, "commands after the flood: %r"
              % peer.commands)

        peer.quirks = {"flood-capa"}
        out = env.collect("flood", expect=1)
        check("sent more than 100 CAPA lines" in out, "endless CAPA: %r" % out)

        peer.quirks = {"long-uidl-line"}
        out = env.collect("flood", expect=1)
        check("sent a line longer than" in out, "endless UIDL line: %r" % out)

        peer.quirks = set()
        check(env.collect("flood") == "2 new, 0 skipped, 2 deleted", "run against the mended server")
        check(env.collect("flood") == "0 new, 0 skipped, 0 deleted", "second run")
        check(subjects(env.mailbox("bob@example.org")) == ["flood 1", "flood 2"], "bob's mailbox")
        env.finish()
    finally:
        env.d.close()
        peer.close()


def test_own_pop3_server_as_peer():
    env = Env()
    try:
        env.set_collectors(
            "[collector self]\nserver = 127.0.0.1:%d\nsecurity = stls\nverify-certificate = false\nauth = plain\n"
            "user = remote@example.org\npassword-file = %s\nmailbox = dave@example.org\nleave-on-server = no\n"
            % (env.pop3_port, env.password_file))
        env.restart()
        path = os.path.join(env.d.tmp, "m.eml")
        with open(path, "wb") as f:
            f.write(message("from ourselves", to="remote@example.org", body="..stuffed\r\n"))
        os.chmod(path, 0o644)
        env.d.cli("fx-deliver", "remote@example.org", path, "3")
        check(env.collect("self") == "3 new, 0 skipped, 3 deleted", "self run")
        check(len(env.mailbox("remote@example.org")) == 0, "the remote mailbox is not empty")
        got = env.mailbox("dave@example.org")
        check(len(got) == 3 and all(m.endswith(b"\r\n\r\n..stuffed") and b", TLS);" in m for m in got),
              "dave's copies: %r" % got[:1])
        env.finish()
    finally:
        env.d.close()


def test_bad_configuration():
    env = Env(start=False)
    try:
        os.chmod(env.password_file, 0o644)
        env.set_collectors(env.collector("x", 110, "mailbox = bob@example.org\n"))
        p = subprocess.run([os.path.join(TOP_BUILDDIR, "core", "pillarboxd"), "--check-config", "-c", env.d.conf,
                            "--state-dir", env.d.state], capture_output=True, text=True, timeout=TIMEOUT)
        out = p.stdout + p.stderr
        check(p.returncode != 0 and "password-file" in out and "chmod 600" in out, "mode 0644 accepted: %s" % out)
        os.chmod(env.password_file, 0o600)
        for extra, needle in (("leave-on-server = sometimes\nmailbox = b@example.org\n", "leave-on-server"),
                              ("", "mailbox: required"),
                              ("route-by-headers = true\nmailbox = b@example.org\n", "mailbox: not with")):
            env.set_collectors(env.collector("x", 110, extra))
            p = subprocess.run([os.path.join(TOP_BUILDDIR, "core", "pillarboxd"), "--check-config", "-c", env.d.conf,
                                "--state-dir", env.d.state], capture_output=True, text=True, timeout=TIMEOUT)
            out = p.stdout + p.stderr
            check(p.returncode != 0 and needle in out and "55-pop3-collector.conf:" in out,
                  "%r: %s" % (needle, out))
    finally:
        env.d.close()


if __name__ == "__main__":
    only = [t for t in sys.argv[1:]]
    tests = [test_dovecot_leave_on_server_exactly_once, test_dovecot_delete_after_download_and_expiry,
             test_dovecot_catch_all_and_max_size, test_dovecot_cut_mid_retr_then_exactly_once,
             test_scripted_apop_empty_list_and_no_uidl, test_scripted_endless_listings, test_own_pop3_server_as_peer,
             test_bad_configuration]
    run_tests([t for t in tests if not only or t.__name__ in only])
