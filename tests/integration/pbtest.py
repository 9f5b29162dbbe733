# SPDX-License-Identifier: MIT
"""Shared helpers for integration tests: run the real pillarboxd from the build tree on loopback."""

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

TOP_BUILDDIR = os.environ.get("top_builddir") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
TOP_SRCDIR = os.environ.get("top_srcdir") or TOP_BUILDDIR
PILLARBOXD = os.path.join(TOP_BUILDDIR, "core", "pillarboxd")
PILLARBOX = os.path.join(TOP_BUILDDIR, "core", "pillarbox")
FIXTURES = os.path.join(TOP_BUILDDIR, "tests", "fixtures")

# Every wait in these tests is bounded; sanitizer builds are slower, so be generous.
TIMEOUT = 20.0


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def fixture_modules():
    """The fixture modules, made go-w (the loader refuses group-writable modules)."""
    for path in glob.glob(os.path.join(FIXTURES, ".libs", "*.so")):
        os.chmod(path, 0o755)
    return FIXTURES


def free_port():
    """A port free on 127.0.0.0/8 below the kernel's ephemeral range (32768 and up): a port
    picked there could be taken meanwhile by a client socket of a test running beside us."""
    import random
    for _ in range(500):
        port = random.randrange(20000, 32000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.2", port))
            return port
        except OSError:
            continue
    raise Failure("no free port")


def run_user():
    """When the suite runs as root, the daemon drops to this unprivileged user."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody",):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    raise Failure("running as root but there is no 'nobody' user to drop to")


class Daemon:
    """A pillarboxd in the foreground with its own conf.d and state directory."""

    def __init__(self, conf_files=None, core_extra=""):
        self.tmp = tempfile.mkdtemp(prefix="pillarbox-it-")
        os.chmod(self.tmp, 0o755)
        self.conf = os.path.join(self.tmp, "conf.d")
        self.state = os.path.join(self.tmp, "state")
        os.mkdir(self.conf)
        os.chmod(self.conf, 0o755)
        self.set_core(core_extra)
        for name, text in (conf_files or {}).items():
            self.write(name, text)
        self.proc = None
        self.log_path = os.path.join(self.tmp, "pillarboxd.log")
        self.notify = None

    def set_core(self, extra=""):
        """(Re)writes 00-core.conf: the build tree's fixtures, a short shutdown, EXTRA."""
        core = "[core]\nmodule-dir = %s\nshutdown-timeout = 5s\n" % fixture_modules()
        user = run_user()
        if user:
            core += "user = %s\n" % user
        self.write("00-core.conf", core + extra)

    def write(self, name, text):
        path = os.path.join(self.conf, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)

    def start(self, extra_args=(), wait=True):
        """Starts with -f and waits for READY=1 on a NOTIFY_SOCKET of our own."""
        notify_path = os.path.join(self.tmp, "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(notify_path)
        os.chmod(notify_path, 0o777)  # the daemon may have dropped to another user
        os.chmod(self.tmp, 0o755)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [PILLARBOXD, "-f", "-v", "-c", self.conf, "--state-dir", self.state] + list(extra_args),
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_notify("READY=1")
        return self

    def wait_notify(self, state, timeout=TIMEOUT):
        self.notify.settimeout(0.2)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                msg = self.notify.recv(4096).decode()
            except socket.timeout:
                if self.proc.poll() is not None:
                    raise Failure("pillarboxd exited with %s before %s:\n%s"
                                  % (self.proc.returncode, state, self.read_log()))
                continue
            if state in msg.split("\n"):
                return
        raise Failure("no %s from pillarboxd within %ss:\n%s" % (state, timeout, self.read_log()))

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_log(self, needle, timeout=TIMEOUT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.read_log():
                return
            time.sleep(0.05)
        raise Failure("log never contained %r:\n%s" % (needle, self.read_log()))

    def cli(self, *args, input=None, expect=0):
        p = subprocess.run([PILLARBOX, "--state-dir", self.state] + list(args), input=input,
                           capture_output=True, text=True, timeout=TIMEOUT)
        if expect is not None and p.returncode != expect:
            raise Failure("pillarbox %s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                          % (" ".join(args), p.returncode, expect, p.stdout, p.stderr))
        return p

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=TIMEOUT):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure("pillarboxd did not exit within %ss of SIGTERM:\n%s" % (timeout, self.read_log()))

    def close(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        finally:
            if self.notify:
                self.notify.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.finish()
        finally:
            self.close()

    def finish(self):
        """Stops a daemon that is still running and checks it ended cleanly: exit
        status 0 and nothing from the sanitizers (leaks, memory errors, UB)."""
        if self.proc is None:
            return
        running = self.proc.poll() is None
        status = self.stop()
        log = self.read_log()
        # pb-log writes levels in lower case: "... critical pillarbox-x: ..." in service log
        # files, "pillarboxd[PID]: DOMAIN: critical: ..." on stderr; GLib's own writer, before
        # pb-log is installed, in upper case.
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "CRITICAL", " critical ",
                       ": critical: "):
            check(marker not in log, "pillarboxd reported %r:\n%s" % (marker.strip(), log))
        if running:
            check(status == 0, "pillarboxd exited with %s after SIGTERM:\n%s" % (status, log))


class LineClient:
    """A raw line client with a bounded read."""

    def __init__(self, port, host="127.0.0.1", source=None):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT,
                                             source_address=(source, 0) if source else None)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Failure("connection closed while waiting for a line (have %r)" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().rstrip("\r")

    def closed(self):
        """True once the server has closed the connection (bounded wait)."""
        try:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, ConnectionResetError):
            return False

    def close(self):
        self.sock.close()


def wait_for(what, predicate, timeout=TIMEOUT):
    """Polls PREDICATE until it returns something true (returned), for TIMEOUT seconds at most."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise Failure("timed out waiting for %s" % what)


class ScriptedPeer:
    """modules/smtp-client/test-smtp-server.py: a scripted SMTP server standing in for an ISP's
    relay or an MX host. OPTIONS are its own ("--rcpt", "slow=451 4.3.0 try again later",
    "--ext", "PIPELINING"); what it saw is logged as JSON lines."""

    def __init__(self, tmp, *options):
        self.log = os.path.join(tmp, "peer-%d.log" % id(self))
        script = os.path.join(TOP_SRCDIR, "modules", "smtp-client", "test-smtp-server.py")
        self.proc = subprocess.Popen(["/usr/bin/python3", script, "--log", self.log] + list(options),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        check(line.startswith("PORT "), "the scripted peer did not start: %r" % line)
        self.port = int(line.split()[1])

    def events(self):
        try:
            with open(self.log) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def messages(self):
        return [e for e in self.events() if e["event"] == "message"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(TIMEOUT)


def run_tests(tests):
    """Runs each test function; prints TAP-ish lines; exits 1 on any failure."""
    failed = 0
    for test in tests:
        name = test.__name__
        t0 = time.time()
        try:
            test()
            print("ok - %s (%.2fs)" % (name, time.time() - t0))
        except Exception as e:  # noqa: BLE001 - report every kind of failure
            failed += 1
            print("FAIL - %s: %s: %s" % (name, type(e).__name__, e))
        sys.stdout.flush()
    print("%d of %d passed" % (len(tests) - failed, len(tests)))
    sys.exit(1 if failed else 0)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)
