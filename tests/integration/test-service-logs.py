# SPDX-License-Identifier: MIT
"""Per-service log files (core.service-logs): SMTP and POP3 sessions each in their own file, delivery
attempts in connections.log with the queue id, reopening after a rename (log-reopen and SIGHUP), bad
service names refused, and a stuck log file that drops lines without delaying any client."""

import importlib.util
import os
import poplib
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("smtp_common", os.path.join(_here, "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)
from pbtest import PILLARBOXD, TIMEOUT, TOP_SRCDIR, Failure, ScriptedPeer, check, free_port, run_tests, wait_for  # noqa: E402


STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|critical|warning|notice|info|debug) pillarbox\S*: ")


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def submit(d, rcpt, subject):
    with smtplib.SMTP("127.0.0.1", d.ports["submission"], timeout=TIMEOUT) as s:
        s.starttls(context=common.insecure_context())
        s.login("bob@%s" % common.DOMAIN, common.PASSWORD)
        check(s.sendmail("bob@%s" % common.DOMAIN, [rcpt], "Subject: %s\r\n\r\nbody\r\n" % subject) == {},
              "refused")


class Env:
    """storage-sqlite, smtp-server, pop3-server and relay-sender to a scripted peer."""

    def __init__(self, services="smtp, pop3, connections", extra="", start=True):
        self.d = common.SmtpDaemon(core_extra="log-dir = ../logs\nservice-logs = %s\n%s" % (services, extra),
                                   start=False)
        self.logs = os.path.join(self.d.tmp, "logs")
        self.pop3_port = free_port()
        self.peer = ScriptedPeer(self.d.tmp)
        self.d.write("30-pop3-server.conf", "[module pop3-server]\npop3-listen = 127.0.0.1:%d\npop3s-listen =\n"
                     % self.pop3_port)
        self.d.write("50-relay-sender.conf", "[module relay-sender]\n[relay-server peer]\naddress = 127.0.0.1:%d\n"
                     "security = none\n" % self.peer.port)
        if start:
            self.start()

    def start(self):
        self.d.start()
        self.d.cli("domain", "add", common.DOMAIN)
        self.d.cli("user", "add", "bob@%s" % common.DOMAIN, input=common.PASSWORD + "\n")

    def path(self, service):
        return os.path.join(self.logs, service + ".log")

    def smtp_local(self, subject):
        """An SMTP session on port 25's stand-in delivering to bob; returns the queue id."""
        with smtplib.SMTP("127.0.0.1", self.d.ports["smtp"], timeout=TIMEOUT) as s:
            s.ehlo("client.test.example")
            s.mail("alice@remote.example")
            s.rcpt("bob@%s" % common.DOMAIN)
            code, text = s.data(common.message(subject))
            check(code == 250, "DATA: %d %s" % (code, text))
        return re.search(r"queued as (\S+)", text.decode()).group(1)

    def pop3(self):
        p = poplib.POP3("127.0.0.1", self.pop3_port, timeout=TIMEOUT)
        p.stls(common.insecure_context())
        p.user("bob@%s" % common.DOMAIN)
        p.pass_(common.PASSWORD)
        count = p.stat()[0]
        p.quit()
        return count

    def close(self):
        self.peer.close()
        self.d.close()


def test_each_service_in_its_file():
    e = Env()
    try:
        qid_local = e.smtp_local("for bob")
        submit(e.d, "carol@remote.example", "relayed")
        check(e.pop3() == 1, "bob's mailbox should hold the message")

        smtp_log = wait_for("smtp.log with the local queue id", lambda: qid_local in read(e.path("smtp")) and
                            read(e.path("smtp")))
        wait_for("the relay delivery in connections.log",
                 lambda: "to=<carol@remote.example>" in read(e.path("connections"))
                 and "delivered" in read(e.path("connections")))
        # The relayed message's queue id, as the SMTP session logged it, ties both files together.
        conn_log = read(e.path("connections"))
        relay_line = [l for l in conn_log.splitlines() if "to=<carol@remote.example>" in l and "delivered" in l]
        check(relay_line, conn_log)
        qid = re.search(r": (\S+): to=<carol@remote\.example>", relay_line[0]).group(1)
        check(qid in smtp_log, "the relayed queue id %s is not in smtp.log:\n%s" % (qid, smtp_log))

        pop3_log = wait_for("pop3.log with bob's login", lambda: "login bob@" in read(e.path("pop3")) and
                            read(e.path("pop3")))
        for name, text in (("smtp", smtp_log), ("pop3", pop3_log), ("connections", conn_log)):
            for line in text.splitlines():
                check(STAMP.match(line), "%s.log: line without timestamp and level: %r" % (name, line))
        check("pillarbox-pop3:" not in smtp_log and "login bob@" not in smtp_log, "POP3 lines in smtp.log")
        check("pillarbox-smtp:" not in pop3_log and qid_local not in pop3_log, "SMTP lines in pop3.log")
        check("pillarbox-smtp:" not in conn_log and "pillarbox-pop3:" not in conn_log,
              "session lines in connections.log:\n%s" % conn_log)
        check("relay-sender" in conn_log, conn_log)
        # Lines not tied to a service stay only in the main log.
        check("started (plugin ABI" not in smtp_log + pop3_log + conn_log, "daemon lines in a service log")
        e.d.finish()
    finally:
        e.close()


def test_reopen_after_rename():
    e = Env(services="smtp, pop3")
    try:
        q1 = e.smtp_local("before rotation")
        wait_for("the first session in smtp.log", lambda: q1 in read(e.path("smtp")))
        os.rename(e.path("smtp"), e.path("smtp") + ".1")
        out = e.d.cli("log-reopen").stdout
        check("reopening" in out and e.logs in out, out)
        q2 = e.smtp_local("after rotation")
        wait_for("the second session in a new smtp.log", lambda: q2 in read(e.path("smtp")))
        check(q2 not in read(e.path("smtp") + ".1") and q1 not in read(e.path("smtp")),
              "lines went to the wrong file after log-reopen")

        # SIGHUP (what a reload does) reopens too.
        e.pop3()
        wait_for("the first POP3 session", lambda: "logout bob@" in read(e.path("pop3")))
        os.rename(e.path("pop3"), e.path("pop3") + ".1")
        e.d.signal(signal.SIGHUP)
        e.d.wait_log("configuration generation 2 is running")
        e.pop3()
        wait_for("a new pop3.log after SIGHUP", lambda: "logout bob@" in read(e.path("pop3")))
        check(read(e.path("pop3") + ".1").count("logout bob@") == 1, read(e.path("pop3") + ".1"))
        check("connections" not in os.listdir(e.logs) and not os.path.exists(e.path("connections")),
              "connections.log written though not configured")
        e.d.finish()
    finally:
        e.close()


def test_unknown_service_refused():
    e = Env(services="smtp, pop4", start=False)
    try:
        p = subprocess.run([PILLARBOXD, "--check-config", "-c", e.d.conf, "--state-dir", e.d.state],
                           capture_output=True, text=True, timeout=TIMEOUT)
        check(p.returncode == 1, p.stdout + p.stderr)
        check("service-logs: no listener of this configuration has the service 'pop4'" in p.stderr
              and "connections" in p.stderr and "smtp" in p.stderr, p.stderr)
        e.d.set_core("log-dir = ../logs\nservice-logs = smtp\nservice-log-buffer = 1K\n")
        p = subprocess.run([PILLARBOXD, "--check-config", "-c", e.d.conf, "--state-dir", e.d.state],
                           capture_output=True, text=True, timeout=TIMEOUT)
        check(p.returncode == 1 and re.search(r"00-core\.conf:\d+: service-log-buffer: '1K' is out of range",
                                              p.stderr), p.stderr)
    finally:
        e.close()


def test_stuck_file_drops_without_blocking():
    """smtp.log is a FIFO nobody reads: the writer thread blocks in open(), as on a hung disk.
    Clients are served at full speed, lines beyond service-log-buffer are dropped with one
    warning, and once the FIFO is read everything resumes and the drop is reported."""
    e = Env(services="smtp", extra="service-log-buffer = 16K\n", start=False)
    reader = None
    try:
        os.makedirs(e.logs, mode=0o755)
        os.mkfifo(e.path("smtp"))
        os.chmod(e.path("smtp"), 0o666)  # the daemon may have dropped to another user
        e.start()
        t0 = time.time()
        for i in range(60):
            c = common.SmtpClient(e.d.ports["smtp"])
            check(c.reply()[0] == 220, "no greeting")
            c.cmd("EHLO client%d.test.example" % i, 250)
            c.cmd("MAIL FROM:<a%d@remote.example>" % i, 250)
            c.cmd("RSET", 250)
            c.cmd("QUIT", 221)
            c.close()
        elapsed = time.time() - t0
        check(elapsed < 15, "60 sessions took %.1fs with a stuck log file" % elapsed)
        e.d.wait_log("service logs: the log files are not keeping up")
        check(e.d.read_log().count("not keeping up") == 1, "the drop warning was repeated")

        got = []

        def drain():
            fd = os.open(e.path("smtp"), os.O_RDONLY)
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                got.append(chunk)
            os.close(fd)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        e.d.wait_log("service logs: caught up")
        dropped = int(re.search(r"service logs: caught up; (\d+) lines? had to be dropped", e.d.read_log()).group(1))
        check(dropped > 0, "no line counted as dropped")
        print("# 60 SMTP sessions in %.2fs while smtp.log was stuck; %d lines dropped" % (elapsed, dropped))
        c = common.SmtpClient(e.d.ports["smtp"])
        c.reply()
        c.cmd("EHLO after.test.example", 250)
        c.cmd("QUIT", 221)
        c.close()
        # The session's id, from the main log, where its connect line was written at accept.
        sid = re.findall(r"(s[0-9a-f]+): connect from", e.d.read_log())[-1].encode()
        wait_for("the session after the stall in the FIFO", lambda: b"%s: connect from" % sid in b"".join(got))
        e.d.finish()
        reader.join(TIMEOUT)
        check(not reader.is_alive(), "the daemon kept the log file open after exit")
    finally:
        e.close()


run_tests([test_each_service_in_its_file, test_reopen_after_rename, test_unknown_service_refused,
           test_stuck_file_drops_without_blocking])
