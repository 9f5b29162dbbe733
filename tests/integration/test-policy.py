# SPDX-License-Identifier: MIT
"""Integration tests of the inbound policy modules load-limit, ids and rate-cap with the real daemon.

Clients connect from several loopback addresses (127.0.0.2, 127.0.0.3, ...: Linux routes all
of 127.0.0.0/8 to lo without setup) to prove per-address limits and reservations. The
protocols are the example module (the echo service, refusal "-ERR TEXT") and the fx-events
fixture (refusal "CODE ENHANCED TEXT" like SMTP's; commands that report events and run the
mail-from, rcpt-to and queued stages), and smtp-server / pop3-server when they are built.

Module directory: core.module-dir takes one directory, and the modules under test live in
two (TOP_BUILDDIR/modules/.libs and tests/fixtures/.libs). Each daemon gets a temporary
directory of symbolic links to the .so files it needs: the loader stat()s through a link,
so it checks the real file's mode (made 0755 here) and always loads the freshly built one.
"""

import base64
import json
import os
import signal
import smtplib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pbtest import (FIXTURES, TIMEOUT, TOP_BUILDDIR, Daemon, Failure, LineClient,  # noqa: E402
                    check, free_port, run_tests, run_user)

BUILD_MODULES = os.path.join(TOP_BUILDDIR, "modules", ".libs")
POLICY_MODULES = ("load-limit", "ids", "rate-cap")
OPTIONAL_MODULES = ("smtp-server", "pop3-server", "storage-sqlite")
FIXTURE_NAMES = ("example", "fx-events")


def module_dir(parent):
    """A directory of symlinks to the modules the tests use (see the file's docstring)."""
    d = os.path.join(parent, "modules")
    if os.path.isdir(d):
        return d
    os.mkdir(d)
    os.chmod(d, 0o755)
    sources = [(BUILD_MODULES, n) for n in POLICY_MODULES + OPTIONAL_MODULES]
    sources += [(os.path.join(FIXTURES, ".libs"), n) for n in FIXTURE_NAMES]
    for libs, name in sources:
        src = os.path.join(libs, name + ".so")
        if not os.path.exists(src):
            if name in POLICY_MODULES or name in FIXTURE_NAMES:
                raise Failure("%s is not built (run make check)" % src)
            continue
        os.chmod(src, 0o755)
        os.symlink(src, os.path.join(d, name + ".so"))
    return d


class PolicyDaemon(Daemon):
    """A Daemon whose module-dir holds the policy modules and the fixtures."""

    def set_core(self, extra=""):
        core = "[core]\nmodule-dir = %s\nshutdown-timeout = 5s\n" % module_dir(self.tmp)
        user = run_user()
        if user:
            core += "user = %s\n" % user
        self.write("00-core.conf", core + extra)

    def restart(self):
        """SIGTERM, wait, and start again on the same configuration and state directory."""
        check(self.stop() == 0, "exit status at restart:\n%s" % self.read_log())
        self.notify.close()
        os.unlink(os.path.join(self.tmp, "notify.sock"))
        self.log.close()
        os.rename(self.log_path, self.log_path + ".1")
        return self.start()

    def read_log(self):
        text = ""
        if os.path.exists(self.log_path + ".1"):
            with open(self.log_path + ".1", errors="replace") as f:
                text = f.read()
        return text + super().read_log()

    def count_log(self, needle):
        return self.read_log().count(needle)


def fx_conf(port, name="fx-events", service="fx"):
    return "[module fx-events]\nlisten = 127.0.0.1:%d\nname = %s\nservice = %s\n" % (port, name, service)


def example_conf(port):
    return "[module example]\nlisten = 127.0.0.1:%d\n" % port


class Client(LineClient):
    """A LineClient from a given loopback address that reads its greeting."""

    def __init__(self, port, source):
        super().__init__(port, source=source)
        self.greeting = self.line()

    def admitted(self):
        return self.greeting.startswith("+OK")

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.line()


def connect_all(port, sources):
    return [Client(port, s) for s in sources]


def refused_with(port, source, expected):
    """Connects from SOURCE and checks the refusal line and the close."""
    c = Client(port, source)
    try:
        check(c.greeting == expected, "from %s: %r, expected %r" % (source, c.greeting, expected))
        check(c.closed(), "connection from %s not closed after the refusal" % source)
    finally:
        c.close()


def close_all(clients):
    for c in clients:
        c.close()


def wait_until(what, predicate, timeout=TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise Failure("timed out waiting for %s" % what)


PER_ADDRESS = "421 4.3.2 Too many connections from your IP address - try later"
TOTAL = "421 4.3.2 Too many connections to this server - try later"
BLOCKED = "421 4.7.0 Your connection has been blocked temporarily - Try again later"

# The loopback addresses are incoming clients in these tests, not local ones.
LL_BASE = "[module load-limit]\nlocal-networks =\n"
IDS_BASE = "[module ids]\nnever-block =\n"

# ---- load-limit -------------------------------------------------------------------------


def test_reserved_sessions():
    """The issue's scenario: 10 sessions allowed, 4 reserved for 127.0.0.5."""
    port = free_port()
    conf = LL_BASE + "max-sessions = 10\nmax-per-address = 0\nreserved = 4\nreserved-for = 127.0.0.5\n"
    with PolicyDaemon({"10-fx.conf": fx_conf(port), "40-ll.conf": conf}) as d:
        d.start()
        others = connect_all(port, ["127.0.0.2", "127.0.0.3", "127.0.0.4"] * 2)
        for i, c in enumerate(others):
            check(c.admitted(), "other session %d refused: %r" % (i, c.greeting))
        refused_with(port, "127.0.0.6", TOTAL)
        refused_with(port, "127.0.0.2", TOTAL)
        gateway = connect_all(port, ["127.0.0.5"] * 4)
        for i, c in enumerate(gateway):
            check(c.admitted(), "reserved session %d refused: %r" % (i, c.greeting))
            check(c.cmd("EVENT protocol-error") == "+OK", "session %d works" % i)
        # Now every one of the ten slots is taken, reserved ones too.
        refused_with(port, "127.0.0.5", TOTAL)
        status = json.loads(d.cli("--json", "load-limit").stdout)[0]
        check(status["incoming"] == 10 and status["others"] == 6 and status["reserved"] == 4, status)
        check(status["addresses"]["127.0.0.5"] == 4, status)
        # A session that ends is counted out: another client gets its slot.
        others[0].close()
        wait_until("the slot to free", lambda: json.loads(d.cli("--json", "load-limit").stdout)[0]["others"] == 5)
        again = Client(port, "127.0.0.7")
        check(again.admitted(), "slot not freed: %r" % again.greeting)
        check("load-limit: refusing 127.0.0.6 on fx-events: all listeners 6 of 6 (reserved)" in d.read_log(),
              d.read_log())
        close_all(others + gateway + [again])


def test_per_address():
    port = free_port()
    with PolicyDaemon({"10-fx.conf": fx_conf(port), "40-ll.conf": LL_BASE + "max-per-address = 3\n",
                       "41-ids.conf": IDS_BASE}) as d:
        d.start()
        held = connect_all(port, ["127.0.0.2"] * 3)
        check(all(c.admitted() for c in held), "three sessions from one address")
        refused_with(port, "127.0.0.2", PER_ADDRESS)
        other = Client(port, "127.0.0.3")
        check(other.admitted(), "another address is not limited: %r" % other.greeting)
        # ids weighs the refusal (event 6).
        d.wait_log("IDS event 6 (too-many-connections) from 127.0.0.2 on fx-events weight 1 score 1/10")
        close_all(held + [other])


def test_example_refusal_and_local():
    """The example module's refusal line; local sessions counted apart."""
    port = free_port()
    conf = ("[module load-limit]\nmax-sessions = 2\nmax-per-address = 0\nlocal-networks = 127.0.0.9\n"
            "max-local-sessions = 3\n")
    with PolicyDaemon({"10-example.conf": example_conf(port), "40-ll.conf": conf}) as d:
        d.start()
        incoming = connect_all(port, ["127.0.0.2", "127.0.0.3"])
        check(all(c.admitted() for c in incoming), "two incoming")
        refused_with(port, "127.0.0.4", "-ERR Too many connections to this server - try later")
        local = connect_all(port, ["127.0.0.9"] * 3)
        check(all(c.admitted() for c in local), "local sessions are not incoming ones")
        check(local[0].cmd("ECHO hi") == "+OK hi", "local session works")
        refused_with(port, "127.0.0.9", "-ERR Too many connections to this server - try later")
        status = json.loads(d.cli("--json", "load-limit").stdout)[0]
        check(status["incoming"] == 2 and status["local"] == 3, status)
        close_all(incoming + local)


def test_listener_and_service_limits():
    fx_port, ex_port, fx2_port = free_port(), free_port(), free_port()
    conf = (LL_BASE + "[load-limit-listener fx-events]\nmax-sessions = 1\n"
            "[load-limit-service echo]\nmax-per-address = 2\n")
    with PolicyDaemon({"10-fx.conf": fx_conf(fx_port), "11-example.conf": example_conf(ex_port),
                       "40-ll.conf": conf}) as d:
        d.start()
        fx = Client(fx_port, "127.0.0.2")
        check(fx.admitted(), "first fx session")
        refused_with(fx_port, "127.0.0.3", TOTAL)
        echo = connect_all(ex_port, ["127.0.0.2", "127.0.0.2", "127.0.0.3"])
        check(all(c.admitted() for c in echo), "the echo listener has its own limits")
        refused_with(ex_port, "127.0.0.2", "-ERR Too many connections from your IP address - try later")
        text = d.cli("load-limit").stdout
        check("listener fx-events: incoming 1 of 1" in text and "service echo: incoming 3" in text, text)
        close_all([fx] + echo)
    # A reserved count that does not fit is a configuration error.
    with PolicyDaemon({"10-fx.conf": fx_conf(fx2_port),
                       "40-ll.conf": "[module load-limit]\nmax-sessions = 4\nreserved = 4\nreserved-for = 10.*\n"}) as d:
        d.start(wait=False)
        d.proc.wait(TIMEOUT)
        check(d.proc.returncode != 0 and "must be smaller than max-sessions" in d.read_log(), d.read_log())
        d.proc = None


# ---- ids ----------------------------------------------------------------------------------


def fail_auth(port, source, times):
    c = Client(port, source)
    check(c.admitted(), "session from %s: %r" % (source, c.greeting))
    for _ in range(times):
        check(c.cmd("FAIL-AUTH mallory") == "+OK", "FAIL-AUTH")
    return c


def test_ids_block_survives_restart():
    """Five failed logins block an address for block-time; another address is unaffected;
    the block is still there after a restart; the administrator can lift it."""
    port = free_port()
    with PolicyDaemon({"10-fx.conf": fx_conf(port), "41-ids.conf": IDS_BASE + "block-time = 2h\n",
                       "40-ll.conf": LL_BASE}) as d:
        d.start()
        c = fail_auth(port, "127.0.0.2", 4)
        d.wait_log("IDS event 1 (auth-failed) from 127.0.0.2 on fx-events weight 2 score 8/10")
        check("IDS event 20" not in d.read_log(), "blocked after four failures")
        check(c.cmd("FAIL-AUTH mallory") == "+OK", "fifth failure")
        d.wait_log("IDS event 20 (blocked) from 127.0.0.2 blocked 127.0.0.2 for 2h "
                   "(score 10/10, last event auth-failed)")
        # The session that failed goes on (its protocol decides); new ones are refused.
        check(c.cmd("EVENT protocol-error") == "+OK", "the open session is not cut")
        c.close()
        refused_with(port, "127.0.0.2", BLOCKED)
        d.wait_log("IDS event 21 (refused) from 127.0.0.2 on fx-events blocked for 1h59m")
        other = Client(port, "127.0.0.3")
        check(other.admitted(), "another address is unaffected: %r" % other.greeting)
        other.close()
        listing = json.loads(d.cli("--json", "ids", "list").stdout)
        check(len(listing) == 1 and listing[0]["address"] == "127.0.0.2", listing)
        check(7100 <= listing[0]["remaining-seconds"] <= 7200, listing)
        check("127.0.0.2 until " in d.cli("ids", "list").stdout, "text listing")
        wait_until("the block to be saved", lambda: os.path.exists(os.path.join(d.state, "ids", "blocks")))

        d.restart()
        refused_with(port, "127.0.0.2", BLOCKED)
        check("ids: 1 blocks loaded from" in d.read_log(), "no load message")
        check(Client(port, "127.0.0.3").admitted(), "127.0.0.3 after restart")

        check(d.cli("ids", "unblock", "127.0.0.2").stdout.strip() == "127.0.0.2 unblocked", "unblock")
        check(Client(port, "127.0.0.2").admitted(), "unblocked address refused")
        check("was not blocked" in d.cli("ids", "unblock", "127.0.0.2").stdout, "second unblock")
        # By hand, with a duration, a prefix or a wildcard.
        check(d.cli("ids", "block", "127.0.0.4", "10m").stdout.strip() == "127.0.0.4 blocked for 10m", "block")
        refused_with(port, "127.0.0.4", BLOCKED)
        d.cli("ids", "block", "127.0.1.*")
        refused_with(port, "127.0.1.200", BLOCKED)
        p = d.cli("ids", "block", "not-an-address", expect=1)
        check("is not an IP address" in p.stderr, p.stderr)
        p = d.cli("ids", "frobnicate", expect=1)
        check("usage: ids list" in p.stderr, p.stderr)
        d.wait_log("IDS event 23 (manual-block) from 127.0.0.4 for 10m")
        d.wait_log("IDS event 24 (unblocked) from 127.0.0.2 by the administrator")

        # The unblock survives a restart too (the file keeps it).
        d.restart()
        check(Client(port, "127.0.0.2").admitted(), "127.0.0.2 blocked again after restart")
        refused_with(port, "127.0.0.4", BLOCKED)


def test_ids_never_block_and_block_list():
    port = free_port()
    conf = "[module ids]\nnever-block = 127.0.0.2\nblock = 127.0.0.66, 127.0.2.*\nthreshold = 3\n"
    with PolicyDaemon({"10-fx.conf": fx_conf(port), "41-ids.conf": conf}) as d:
        d.start()
        c = fail_auth(port, "127.0.0.2", 5)
        c.close()
        d.wait_log("IDS event 1 (auth-failed) from 127.0.0.2 on fx-events weight 2 (never-block)")
        check(Client(port, "127.0.0.2").admitted(), "never-block address was blocked")
        refused_with(port, "127.0.0.66", "554 5.7.1 Access denied - your address is blocked")
        refused_with(port, "127.0.2.9", "554 5.7.1 Access denied - your address is blocked")
        d.wait_log("IDS event 22 (refused-block-list) from 127.0.2.9 on fx-events")
        # Other event kinds and weights: 3 protocol errors of weight 1 reach threshold 3.
        c = Client(port, "127.0.0.7")
        for kind in ("unknown-recipient", "protocol-error"):
            check(c.cmd("EVENT " + kind) == "+OK", kind)
        check(c.cmd("EVENT relay-denied") == "+OK", "relay-denied")
        d.wait_log("IDS event 4 (relay-denied) from 127.0.0.7 on fx-events weight 2 score 4/3")
        d.wait_log("IDS event 20 (blocked) from 127.0.0.7")
        c.close()
        scores = json.loads(d.cli("--json", "ids", "scores").stdout)
        check("127.0.0.7" not in scores, "a blocked address keeps no score: %s" % scores)


def test_ids_reload_shares_blocks():
    """A session of the old generation that triggers a block after a reload: the new
    generation refuses the address within a few seconds (the state file is shared)."""
    port = free_port()
    with PolicyDaemon({"10-fx.conf": fx_conf(port), "41-ids.conf": IDS_BASE}) as d:
        d.start()
        old = fail_auth(port, "127.0.0.8", 2)
        d.cli("ids", "block", "127.0.0.9")
        d.signal(signal.SIGHUP)
        d.wait_log("configuration generation 2 is running")
        # The manual block is written to the state file by a worker thread: under load
        # it may reach the new instance a moment after the reload.
        def refused_9():
            c = Client(port, "127.0.0.9")
            ok = not c.admitted()
            c.close()
            return ok
        wait_until("the new generation to refuse the manually blocked address", refused_9, timeout=10)
        refused_with(port, "127.0.0.9", BLOCKED)
        for _ in range(3):
            check(old.cmd("FAIL-AUTH x") == "+OK", "old session")
        d.wait_log("IDS event 20 (blocked) from 127.0.0.8")

        def refused():
            c = Client(port, "127.0.0.8")
            ok = not c.admitted()
            c.close()
            return ok
        wait_until("the new generation to see the old one's block", refused, timeout=10)
        old.close()


# ---- rate-cap -------------------------------------------------------------------------------


def rc_conf(rules):
    return "[module rate-cap]\n" + rules


def send(c, sender, rcpts, queue=True):
    """MAIL, RCPTs, QUEUED; returns the first refusal or '+OK'."""
    r = c.cmd("MAIL " + sender)
    if r != "+OK":
        return r
    for rcpt in rcpts:
        r = c.cmd("RCPT " + rcpt)
        if r != "+OK":
            return r
    if queue:
        check(c.cmd("QUEUED") == "+OK", "QUEUED")
    return "+OK"


def test_rate_cap_messages_per_sender():
    port = free_port()
    rules = ("[rate-cap-rule senders]\nper = sender\ncount = messages\nlimit = 2\nperiod = 1h\n"
             "action = defer\n")
    with PolicyDaemon({"10-fx.conf": fx_conf(port), "42-rc.conf": rc_conf(rules)}) as d:
        d.start()
        c = Client(port, "127.0.0.2")
        check(send(c, "bob@example.org", ["a@example.net"]) == "+OK", "first")
        check(send(c, "Bob@Example.org", ["a@example.net"]) == "+OK", "second (same sender, other case)")
        r = send(c, "bob@example.org", ["a@example.net"])
        check(r == "-ERR 450 4.7.1 Too many messages from this sender: at most 2 per 1 hour - try again later", r)
        d.wait_log("rate-cap: rule senders: sender bob@example.org has 2 messages in the last 1 hour (limit 2): "
                   "deferring MAIL FROM")
        check(send(c, "<>", ["bob@example.org"]) == "+OK", "bounces are exempt")
        check(send(c, "alice@example.org", ["x@example.net"]) == "+OK", "another sender")
        # A transaction that is never queued does not count.
        check(send(c, "carol@example.org", ["x@example.net"], queue=False) == "+OK", "carol 1 (not queued)")
        check(send(c, "carol@example.org", ["x@example.net"]) == "+OK", "carol 1")
        check(send(c, "carol@example.org", ["x@example.net"]) == "+OK", "carol 2")
        check(send(c, "carol@example.org", ["x@example.net"]).startswith("-ERR 450"), "carol 3")
        status = json.loads(d.cli("--json", "rate-cap").stdout)
        check(status[0]["counters"] == {"bob@example.org": 2, "alice@example.org": 1, "carol@example.org": 2},
              status)

        # Counters survive a reload: the new instance reads what the old one saved (the
        # old one saves at most once a second, and the new one re-reads the file when it
        # changes: they agree within about two seconds)...
        d.cli("reload")
        c2 = Client(port, "127.0.0.2")
        wait_until("the new generation to see the counts",
                   lambda: send(c2, "bob@example.org", ["a@example.net"]).startswith("-ERR 450"), timeout=5)
        # ...and a restart.
        c.close()
        c2.close()
        d.restart()
        c3 = Client(port, "127.0.0.3")
        check(send(c3, "bob@example.org", ["a@example.net"]).startswith("-ERR 450"), "after restart")
        check(send(c3, "dave@example.org", ["a@example.net"]) == "+OK", "dave after restart")
        c3.close()


def test_rate_cap_recipients_per_client_reject():
    port = free_port()
    rules = ("[rate-cap-rule clients]\nper = client-address\ncount = recipients\nlimit = 3\nperiod = 10m\n"
             "action = reject\nexempt-clients = 127.0.0.9\n")
    with PolicyDaemon({"10-fx.conf": fx_conf(port), "42-rc.conf": rc_conf(rules)}) as d:
        d.start()
        c = Client(port, "127.0.0.2")
        check(send(c, "a@example.org", ["1@x", "2@x"]) == "+OK", "two recipients")
        check(c.cmd("MAIL a@example.org") == "+OK", "MAIL")
        check(c.cmd("RCPT 3@x") == "+OK", "third recipient")
        r = c.cmd("RCPT 4@x")
        check(r == "-ERR 550 5.7.1 Too many recipients from your IP address: at most 3 per 10 minutes", r)
        check(c.cmd("QUEUED") == "+OK", "queued with three")
        check(c.cmd("MAIL a@example.org").startswith("-ERR 550 5.7.1"), "no room left at MAIL FROM")
        other = Client(port, "127.0.0.3")
        check(send(other, "a@example.org", ["1@x", "2@x", "3@x"]) == "+OK", "another client")
        exempt = Client(port, "127.0.0.9")
        check(send(exempt, "a@example.org", ["%d@x" % i for i in range(10)]) == "+OK", "exempt client")
        close_all([c, other, exempt])


def test_rate_cap_parallel_sessions_and_users():
    """Two sessions of one user at once cannot overshoot: MAIL reserves the message."""
    port = free_port()
    rules = ("[rate-cap-rule users]\nper = user\ncount = messages\nlimit = 1\nauthenticated = yes\n"
             "listeners = fx-events\n")
    with PolicyDaemon({"10-fx.conf": fx_conf(port), "42-rc.conf": rc_conf(rules)}) as d:
        d.start()
        a, b = Client(port, "127.0.0.2"), Client(port, "127.0.0.3")
        check(a.cmd("AUTH bob") == "+OK" and b.cmd("AUTH BOB") == "+OK", "AUTH")
        check(a.cmd("MAIL x@example.org") == "+OK", "a MAIL")
        check(b.cmd("MAIL y@example.org").startswith("-ERR 450 4.7.1 Too many messages from your account"),
              "b is refused while a holds the only message")
        # a gives up (a new MAIL, then the session ends): b may go.
        a.close()
        wait_until("a's hold to be released", lambda: b.cmd("MAIL y@example.org") == "+OK")
        check(b.cmd("QUEUED") == "+OK", "b queued")
        # Not authenticated: the rule does not apply.
        anon = Client(port, "127.0.0.4")
        check(send(anon, "z@example.org", ["q@x"]) == "+OK", "unauthenticated")
        close_all([b, anon])
    # per = user with authenticated = no is refused.
    with PolicyDaemon({"10-fx.conf": fx_conf(free_port()),
                       "42-rc.conf": rc_conf("[rate-cap-rule x]\nper = user\nlimit = 5\nauthenticated = no\n")}) as d:
        d.start(wait=False)
        d.proc.wait(TIMEOUT)
        check(d.proc.returncode != 0 and "leaves nothing to count" in d.read_log(), d.read_log())
        d.proc = None


def test_rate_cap_no_rules():
    port = free_port()
    with PolicyDaemon({"10-fx.conf": fx_conf(port), "42-rc.conf": rc_conf("")}) as d:
        d.start()
        c = Client(port, "127.0.0.2")
        for _ in range(5):
            check(send(c, "bob@example.org", ["a@x"]) == "+OK", "no rule, no limit")
        check(d.cli("rate-cap").stdout.strip() == "no rules are configured", "rate-cap show")
        c.close()


# ---- with the real protocol modules, when they are built -------------------------------------

DOMAIN = "example.org"
PASSWORD = "s3cret-Pass"


def protocols_available():
    return all(os.path.exists(os.path.join(BUILD_MODULES, n + ".so"))
               for n in ("smtp-server", "pop3-server", "storage-sqlite"))


class MailDaemon(PolicyDaemon):
    """storage-sqlite, smtp-server and pop3-server (plain-text logins allowed), with the
    policy modules as EXTRA configures them, a domain and the user bob."""

    def __init__(self, extra):
        self.smtp_port, self.pop3_port = free_port(), free_port()
        files = {
            "10-storage-sqlite.conf": "[module storage-sqlite]\nfree-space-reserve = 0\n",
            "20-smtp-server.conf": "[module smtp-server]\nsmtp-listen = 127.0.0.1:%d\nsubmission-listen =\n"
                                   "smtps-listen =\nauth-plaintext = true\n" % self.smtp_port,
            "30-pop3-server.conf": "[module pop3-server]\npop3-listen = 127.0.0.1:%d\npop3s-listen =\n"
                                   "auth-plaintext = true\n" % self.pop3_port,
        }
        files.update(extra)
        super().__init__(files)

    def setup(self):
        self.start()
        self.cli("domain", "add", DOMAIN)
        self.cli("user", "add", "bob@" + DOMAIN, input=PASSWORD + "\n")
        return self


def smtp_client(port, source):
    c = LineClient(port, source=source)
    greeting = c.line()
    if not greeting.startswith("220"):
        return c, greeting
    c.send("EHLO client.example\r\n")
    while True:
        line = c.line()
        if line.startswith("250 "):
            break
        check(line.startswith("250-"), "EHLO: %r" % line)
    return c, greeting


def plain(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()


def smtp_fail_auth(port, source, times):
    """TIMES failed AUTH PLAIN over as many sessions as the server allows."""
    failed = 0
    while failed < times:
        c, greeting = smtp_client(port, source)
        check(greeting.startswith("220"), "greeting %r" % greeting)
        while failed < times:
            c.send("AUTH PLAIN %s\r\n" % plain("bob@" + DOMAIN, "wrong"))
            reply = c.line()
            if reply.startswith("535"):
                failed += 1
                continue
            check(reply.startswith("421"), "AUTH: %r" % reply)
            break
        c.close()


def pop3_fail_auth(port, source, times):
    """TIMES failed USER/PASS logins, over new sessions when the server closes one."""
    failed = 0
    while failed < times:
        c = LineClient(port, source=source)
        check(c.line().startswith("+OK"), "POP3 greeting")
        try:
            while failed < times:
                c.send("USER bob@%s\r\n" % DOMAIN)
                if not c.line().startswith("+OK"):
                    break
                c.send("PASS wrong\r\n")
                reply = c.line()
                check(reply.startswith("-ERR"), "PASS: %r" % reply)
                failed += 1
        except (Failure, OSError):
            pass  # pop3-server closes after a few failures of its own
        c.close()


def test_smtp_and_pop3():
    """Five failed AUTH over SMTP, or five failed logins over POP3, block an address (also
    after a restart); the refusals as the real protocol modules write them."""
    if not protocols_available():
        print("# smtp-server, pop3-server or storage-sqlite not built: skipped")
        return
    extra = {"40-ll.conf": LL_BASE + "max-per-address = 2\n", "41-ids.conf": IDS_BASE}
    with MailDaemon(extra) as d:
        d.setup()
        smtp_fail_auth(d.smtp_port, "127.0.0.2", 5)
        d.wait_log("IDS event 20 (blocked) from 127.0.0.2")
        c = LineClient(d.smtp_port, source="127.0.0.2")
        check(c.line() == BLOCKED, "SMTP refusal of a blocked client")
        c.close()
        # The block covers every service: POP3 from the same address.
        c = LineClient(d.pop3_port, source="127.0.0.2")
        check(c.line() == "-ERR [SYS/TEMP] Your connection has been blocked temporarily - Try again later",
              "POP3 refusal of a blocked client")
        c.close()
        # Another address logs in fine.
        ok, _ = smtp_client(d.smtp_port, "127.0.0.3")
        ok.send("AUTH PLAIN %s\r\n" % plain("bob@" + DOMAIN, PASSWORD))
        check(ok.line().startswith("235"), "AUTH from another address")
        ok.close()

        pop3_fail_auth(d.pop3_port, "127.0.0.4", 5)
        d.wait_log("IDS event 20 (blocked) from 127.0.0.4")
        c = LineClient(d.pop3_port, source="127.0.0.4")
        check(c.line().startswith("-ERR [SYS/TEMP] Your connection has been blocked"), "POP3 block")
        c.close()

        # load-limit through both protocols.
        held = [LineClient(d.pop3_port, source="127.0.0.5") for _ in range(2)]
        for h in held:
            check(h.line().startswith("+OK"), "POP3 session")
        c = LineClient(d.pop3_port, source="127.0.0.5")
        check(c.line() == "-ERR [SYS/TEMP] Too many connections from your IP address - try later", "POP3 limit")
        c.close()
        c = LineClient(d.smtp_port, source="127.0.0.5")
        check(c.line() == PER_ADDRESS, "SMTP limit (the limit counts both services)")
        close_all(held + [c])

        d.restart()
        c = LineClient(d.smtp_port, source="127.0.0.2")
        check(c.line() == BLOCKED, "still blocked after a restart")
        c.close()


def test_smtp_rate_cap():
    """rate-cap counts what smtp-server queues."""
    if not protocols_available():
        print("# smtp-server, pop3-server or storage-sqlite not built: skipped")
        return
    rules = "[rate-cap-rule senders]\nper = sender\nlimit = 2\nperiod = 1h\n"
    with MailDaemon({"42-rc.conf": rc_conf(rules)}) as d:
        d.setup()
        s = smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=TIMEOUT, source_address=("127.0.0.2", 0))
        for i in range(2):
            s.sendmail("carol@example.net", ["bob@" + DOMAIN], "Subject: %d\r\n\r\nhello\r\n" % i)
        code, text = s.mail("carol@example.net")
        check(code == 450 and b"4.7.1 Too many messages from this sender" in text, "%d %s" % (code, text))
        s.rset()
        s.sendmail("", ["bob@" + DOMAIN], "Subject: bounce\r\n\r\nbounces are exempt\r\n")
        s.quit()


if __name__ == "__main__":
    run_tests([
        test_reserved_sessions,
        test_per_address,
        test_example_refusal_and_local,
        test_listener_and_service_limits,
        test_ids_block_survives_restart,
        test_ids_never_block_and_block_list,
        test_ids_reload_shares_blocks,
        test_rate_cap_messages_per_sender,
        test_rate_cap_recipients_per_client_reject,
        test_rate_cap_parallel_sessions_and_users,
        test_rate_cap_no_rules,
        test_smtp_and_pop3,
        test_smtp_rate_cap,
    ])
