# SPDX-License-Identifier: MIT
"""Integration tests of pillarboxd itself: config checking, control socket, TLS, reload, shutdown."""

import json
import os
import pwd
import signal
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pbtest import (PILLARBOX, PILLARBOXD, TIMEOUT, TOP_BUILDDIR, TOP_SRCDIR, Daemon, Failure,  # noqa: E402
                    LineClient, check, fixture_modules, free_port, mode_of, run_tests, run_user)


def example_conf(port, extra=""):
    return {"10-example.conf": "[module example]\nlisten = 127.0.0.1:%d\n%s" % (port, extra)}


def check_config(conf_dir, *extra):
    return subprocess.run([PILLARBOXD, "--check-config", "-c", conf_dir] + list(extra),
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_check_config_shipped():
    # The shipped modules, from this build tree.
    extra = ["-o", "core.module-dir=%s" % os.path.join(TOP_BUILDDIR, "modules")]
    fixture_modules()
    try:
        pwd.getpwnam("pillarbox")
    except KeyError:
        if os.geteuid() == 0:
            # As root, --check-config also checks that core.user (pillarbox) exists.
            p = check_config(os.path.join(TOP_SRCDIR, "conf.d"), *extra)
            check(p.returncode == 1 and "core.user: no such user 'pillarbox'" in p.stderr, p.stderr)
            extra += ["-o", "core.user=nobody"]
    p = check_config(os.path.join(TOP_SRCDIR, "conf.d"), *extra)
    check(p.returncode == 0, "shipped conf.d fails --check-config: %s" % p.stderr)
    check("configuration OK" in p.stdout, p.stdout)


def test_check_config_misspelt_key():
    with Daemon() as d:
        d.write("10-example.conf", "[module example]\nlisten = 127.0.0.1:2600\ngreting = hi\n")
        p = check_config(d.conf)
        check(p.returncode == 1, "exit %d, expected 1" % p.returncode)
        want = "%s:3: unknown key 'greting' in [module example] (did you mean 'greeting'?)" % \
            os.path.join(d.conf, "10-example.conf")
        check(want in p.stderr, "expected %r in:\n%s" % (want, p.stderr))


def test_check_config_abi_major():
    with Daemon() as d:
        d.write("10-x.conf", "[module fx-major]\n")
        p = check_config(d.conf)
        check(p.returncode == 1, "exit %d" % p.returncode)
        check("ABI 2." in p.stderr and "ABI 1." in p.stderr and "fx-major.so" in p.stderr, p.stderr)
        check("10-x.conf:1:" in p.stderr, p.stderr)


def test_check_config_override():
    with Daemon(example_conf(2600)) as d:
        p = check_config(d.conf, "-o", "example.max-line=10")
        check(p.returncode == 1 and "command line (-o example.max-line=10)" in p.stderr
              and "out of range" in p.stderr, p.stderr)
        p = check_config(d.conf, "-o", "example.max-line=100", "-o", "core.hostname=mx.example.org")
        check(p.returncode == 0, p.stderr)


def test_version():
    p = subprocess.run([PILLARBOXD, "--version"], capture_output=True, text=True, timeout=TIMEOUT)
    check(p.returncode == 0 and "plugin ABI 1." in p.stdout, p.stdout)
    p = subprocess.run([PILLARBOXD, "--bogus"], capture_output=True, text=True, timeout=TIMEOUT)
    check(p.returncode == 64 and "--bogus" in p.stderr, p.stderr)


def test_control_round_trip():
    port = free_port()
    with Daemon(example_conf(port)) as d:
        d.start()
        sock = os.path.join(d.state, "control.sock")
        check(mode_of(sock) == 0o600, "control socket mode %o" % mode_of(sock))
        text = d.cli("status").stdout
        check("pillarboxd " in text and "example" in text and "127.0.0.1:%d" % port in text, text)
        status = json.loads(d.cli("--json", "status").stdout)
        check(status["modules"][0]["name"] == "example", status)
        check(status["modules"][0]["abi"].startswith("1."), status)
        check(status["listeners"][0]["addresses"] == ["127.0.0.1:%d" % port], status)
        check(status["pid"] == d.proc.pid, "pid %s vs %s" % (status["pid"], d.proc.pid))
        # --json after the command is the program's too; the process's own figures are there.
        after = json.loads(d.cli("status", "--json").stdout)
        check(after["pid"] == d.proc.pid, after)
        check(isinstance(after["loop_sources"], int) and after["loop_sources"] > 0, after)
        check(after["rss_bytes"] > 1024 * 1024, after)
        check("loop sources" in text and "MiB resident" in text, text)
        mods = json.loads(d.cli("--json", "modules").stdout)
        check([m["name"] for m in mods] == ["example"], mods)
        helptext = d.cli("help").stdout
        for word in ("status", "modules", "reload", "example"):
            check(word in helptext, helptext)
        p = d.cli("frobnicate", expect=1)
        check("unknown command 'frobnicate'" in p.stderr, p.stderr)
        # The example module's own command, added through the ABI.
        c = LineClient(port)
        check(c.line().startswith("+OK"), "greeting")
        c.send("ECHO one\r\nECHO two\r\n")
        check(c.line() == "+OK one" and c.line() == "+OK two", "echo")
        sessions = json.loads(d.cli("--json", "sessions").stdout)
        check(len(sessions) == 1 and sessions[0]["service"] == "echo" and sessions[0]["client"] == "127.0.0.1"
              and sessions[0]["state"] == "READY" and sessions[0]["listener"] == "example", sessions)
        check("127.0.0.1" in d.cli("sessions").stdout, "sessions text")
        counters = json.loads(d.cli("--json", "example").stdout)
        check(counters["lines"] == 2 and counters["sessions"] == 1, counters)
        sessions = json.loads(d.cli("--json", "status").stdout)["sessions"]
        check(sessions == 1, "sessions %s" % sessions)
        c.close()
        user = run_user()
        if user:
            with open("/proc/%d/status" % d.proc.pid) as f:
                uids = [line.split()[1:] for line in f if line.startswith("Uid:")][0]
            want = str(pwd.getpwnam(user).pw_uid)
            check(uids == [want] * 4, "daemon uids %s, expected all %s" % (uids, want))
        check(d.stop() == 0, "exit status")


def test_pipelined_lines_and_long_line():
    port = free_port()
    with Daemon(example_conf(port, "max-line = 64\n")) as d:
        d.start()
        c = LineClient(port)
        c.line()
        batch = "".join("ECHO %d\r\n" % i for i in range(200))
        c.send(batch + "ECHO " + "x" * 500 + "\r\nECHO after\r\n")
        for i in range(200):
            got = c.line()
            check(got == "+OK %d" % i, "line %d: %r" % (i, got))
        check(c.line() == "-ERR line too long", "long line")
        check(c.line() == "+OK after", "after long line")
        c.close()


def test_starttls_discards_injected_commands():
    port = free_port()
    with Daemon(example_conf(port)) as d:
        d.start()
        c = LineClient(port)
        c.line()
        # RFC 3207 §4.2: what follows STARTTLS in the same packet must not be executed.
        c.send("STARTTLS\r\nECHO injected\r\n")
        check(c.line() == "+OK begin TLS", "starttls reply")
        check(c.buf == b"", "plaintext after STARTTLS reply: %r" % c.buf)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        tls = ctx.wrap_socket(c.sock, server_hostname="localhost")
        t = LineClient.__new__(LineClient)
        t.sock, t.buf = tls, b""
        check(t.line().startswith("+OK Pillarbox"), "greeting after TLS")
        t.send("ECHO after\r\n")
        got = t.line()
        check(got == "+OK after", "injected command was executed: first reply %r" % got)
        t.send("QUIT\r\n")
        check(t.line() == "+OK bye", "quit")
        tls.close()


def test_implicit_tls_with_gnutls_cli():
    port, tls_port = free_port(), free_port()
    with Daemon(example_conf(port, "tls-listen = 127.0.0.1:%d\n" % tls_port)) as d:
        d.start()
        try:
            p = subprocess.run(["gnutls-cli", "--insecure", "-p", str(tls_port), "127.0.0.1"],
                               input="ECHO over tls\r\nQUIT\r\n", capture_output=True, text=True, timeout=TIMEOUT)
            out = p.stdout
        except FileNotFoundError:
            # Without gnutls-bin, Python's TLS client does the same job.
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=TIMEOUT))
            s.sendall(b"ECHO over tls\r\nQUIT\r\n")
            out = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
            out = out.decode()
        check("+OK over tls" in out and "+OK bye" in out, out)
        status = json.loads(d.cli("--json", "status").stdout)
        tls = [listener for listener in status["listeners"] if listener["name"] == "example-tls"][0]
        check(tls["tls"] == "implicit" and tls["accepted"] == 1, tls)
        certs = os.listdir(os.path.join(d.state, "tls"))
        check(sorted(certs) == ["selfsigned.crt", "selfsigned.key"], certs)
        check(mode_of(os.path.join(d.state, "tls", "selfsigned.key")) == 0o600, "key mode")


def tls_peer_cert(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)) as s:
        return s.getpeercert(binary_form=True)


def test_sighup_reloads_certificate():
    port, tls_port = free_port(), free_port()
    with Daemon(example_conf(port, "tls-listen = 127.0.0.1:%d\n" % tls_port)) as d:
        d.start()
        with open(os.path.join(d.state, "tls", "selfsigned.crt")) as f:
            selfsigned = ssl.PEM_cert_to_DER_cert(f.read())
        check(tls_peer_cert(tls_port) == selfsigned, "first certificate is not the self-signed one")
        key, cert, template = (os.path.join(d.tmp, n) for n in ("new.key", "new.crt", "cert.cfg"))
        with open(template, "w") as f:
            f.write('cn = "reloaded.example.org"\nexpiration_days = 30\ntls_www_server\nsigning_key\n')
        subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", key],
                       check=True, capture_output=True, timeout=TIMEOUT)
        subprocess.run(["certtool", "--generate-self-signed", "--load-privkey", key, "--template", template,
                        "--outfile", cert], check=True, capture_output=True, timeout=TIMEOUT)
        os.chmod(key, 0o644)  # readable by core.user, which re-reads it on reload
        d.set_core("tls-certificate = %s\ntls-key = %s\n" % (cert, key))
        d.signal(signal.SIGHUP)
        d.wait_log("configuration generation 2")
        with open(cert) as f:
            check(tls_peer_cert(tls_port) == ssl.PEM_cert_to_DER_cert(f.read()), "SIGHUP did not load the new certificate")
        check("CN=reloaded.example.org" in d.cli("status").stdout, "status does not show the new certificate")


def test_connect_hook_refusal():
    port = free_port()
    with Daemon(example_conf(port, "deny = 127.0.0.3, 10.*\n")) as d:
        d.start()
        c = LineClient(port, source="127.0.0.3")
        check(c.line() == "-ERR access denied", "refusal line")
        check(c.closed(), "refused connection left open")
        ok = LineClient(port, source="127.0.0.2")
        check(ok.line().startswith("+OK"), "other address refused")
        ok.close()
        d.wait_log("refused 127.0.0.3 on example: access denied")
    # On a dual-stack "*:PORT" listener an IPv4 client is matched as IPv4, not ::ffff:...
    port = free_port()
    with Daemon({"10-example.conf": "[module example]\nlisten = *:%d\ndeny = 127.0.0.3\n" % port}) as d:
        d.start()
        c = LineClient(port, source="127.0.0.3")
        check(c.line() == "-ERR access denied", "IPv4 deny entry ignored on a dual-stack listener")
        c.close()
        ok = LineClient(port, source="127.0.0.2")
        check(ok.line().startswith("+OK"), "other address refused")
        ok.close()


def test_sighup_bad_config_keeps_old():
    port = free_port()
    with Daemon(example_conf(port, "greeting = first\n")) as d:
        d.start()
        held = LineClient(port)
        check(held.line() == "+OK first", "first greeting")
        d.write("10-example.conf", "[module example]\nlisten = 127.0.0.1:%d\ngreeting = second\nbogus = 1\n" % port)
        d.signal(signal.SIGHUP)
        d.wait_log("still running generation 1")
        check("10-example.conf:4: unknown key 'bogus'" in d.read_log(), d.read_log())
        c = LineClient(port)
        check(c.line() == "+OK first", "the old configuration should still serve")
        c.close()
        p = d.cli("reload", expect=1)
        check("running one is kept" in p.stderr and "bogus" in p.stderr, p.stderr)
        # A good configuration replaces it; the held session stays on its generation.
        d.write("10-example.conf", "[module example]\nlisten = 127.0.0.1:%d\ngreeting = second\n" % port)
        d.signal(signal.SIGHUP)
        d.wait_log("configuration generation")
        c = LineClient(port)
        check(c.line() == "+OK second", "new greeting after reload")
        c.close()
        held.send("ECHO still here\r\n")
        check(held.line() == "+OK still here", "held session broken by reload")
        held.close()
        check(json.loads(d.cli("--json", "status").stdout)["generation"] >= 2, "generation")
        check(d.cli("reload").stdout.strip() == "configuration reloaded", "pillarbox reload")


def test_reload_moves_listener():
    port, port2 = free_port(), free_port()
    with Daemon(example_conf(port)) as d:
        d.start()
        d.write("10-example.conf", "[module example]\nlisten = 127.0.0.1:%d\n" % port2)
        d.cli("reload")
        c = LineClient(port2)
        check(c.line().startswith("+OK"), "new port")
        c.close()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            raise Failure("the old port still accepts connections")
        except ConnectionRefusedError:
            pass


def test_sigterm_drains_sessions():
    port = free_port()
    with Daemon(example_conf(port)) as d:
        d.start()
        c = LineClient(port)
        c.line()
        t0 = time.time()
        d.signal(signal.SIGTERM)
        check(c.line() == "-ERR server shutting down", "shutdown notice")
        check(d.proc.wait(TIMEOUT) == 0, "exit status %s" % d.proc.returncode)
        check(time.time() - t0 < 5, "shutdown took %.1fs" % (time.time() - t0))
        check(not os.path.exists(os.path.join(d.state, "control.sock")), "control socket left behind")
        check("stopped" in d.read_log(), d.read_log())


def test_cli_without_daemon():
    p = subprocess.run([PILLARBOX, "--state-dir", "/nonexistent/pillarbox", "status"], capture_output=True,
                       text=True, timeout=TIMEOUT)
    check(p.returncode == 2, "exit %d" % p.returncode)
    check("cannot reach pillarboxd" in p.stderr and "/nonexistent/pillarbox/control.sock" in p.stderr, p.stderr)


def test_start_failures():
    port = free_port()
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        with Daemon(example_conf(port)) as d:
            d.start(wait=False)
            check(d.proc.wait(TIMEOUT) == 1, "exit %s" % d.proc.returncode)
            check("cannot listen on 127.0.0.1:%d" % port in d.read_log(), d.read_log())
    finally:
        blocker.close()
    with Daemon(example_conf(free_port())) as d:
        d.start()
        second = subprocess.run([PILLARBOXD, "-f", "-c", d.conf, "--state-dir", d.state], capture_output=True,
                                text=True, timeout=TIMEOUT)
        check(second.returncode == 1 and "another pillarboxd" in second.stderr, second.stderr)


def test_background_mode():
    port = free_port()
    with Daemon(example_conf(port)) as d:
        p = subprocess.run([PILLARBOXD, "-c", d.conf, "--state-dir", d.state], capture_output=True, text=True,
                           timeout=TIMEOUT)
        check(p.returncode == 0, "background start: %d %s" % (p.returncode, p.stderr))
        # The parent returned only once the daemon was ready: it answers at once.
        c = LineClient(port)
        check(c.line().startswith("+OK"), "greeting")
        c.close()
        with open(os.path.join(d.state, "pillarboxd.pid")) as f:
            pid = int(f.read())
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        check(fields[4] == "0", "daemon has a controlling terminal (tty_nr %s)" % fields[4])
        check(int(fields[3]) != pid, "daemon is a session leader; it should have forked after setsid")
        check(os.readlink("/proc/%d/fd/0" % pid) == "/dev/null", "stdin not /dev/null")
        check(json.loads(d.cli("--json", "status").stdout)["pid"] == pid, "status pid")
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + TIMEOUT
        while os.path.exists("/proc/%d" % pid) and time.time() < deadline:
            time.sleep(0.05)
        check(not os.path.exists("/proc/%d" % pid), "daemon did not stop")
        check(not os.path.exists(os.path.join(d.state, "pillarboxd.pid")), "pid file left behind")
        # A failing start reports through the exit status, not silently in the background.
        d.write("10-example.conf", "[module example]\nlisten = 127.0.0.1:%d\nnope = 1\n" % port)
        p = subprocess.run([PILLARBOXD, "-c", d.conf, "--state-dir", d.state], capture_output=True, text=True,
                           timeout=TIMEOUT)
        check(p.returncode == 1 and "unknown key 'nope'" in p.stderr, p.stderr)


def pidfile_attack(plant):
    """Plants something at STATE/pillarboxd.pid as the run user could (the state directory is
    theirs), starts the daemon, and returns (exit status, output, victim's content after)."""
    with Daemon(example_conf(free_port())) as d:
        victim = os.path.join(d.tmp, "victim")
        with open(victim, "w") as f:
            f.write("root:precious:0:0\n")
        os.chmod(victim, 0o600)
        os.makedirs(d.state, mode=0o750)
        pidfile = os.path.join(d.state, "pillarboxd.pid")
        plant(victim, pidfile)
        user = run_user()
        if user:
            pw = pwd.getpwnam(user)
            os.chown(d.state, pw.pw_uid, pw.pw_gid)
            os.lchown(pidfile, pw.pw_uid, pw.pw_gid)
        d.start(wait=False)
        try:
            d.wait_notify("READY=1")
            started = True
        except Failure:
            started = False  # it exited
        with open(victim) as f:
            after = f.read()
        check(not started, "pillarboxd started over a planted pid file (victim now %r):\n%s" % (after, d.read_log()))
        return d.proc.wait(TIMEOUT), d.read_log(), after


def test_pidfile_symlink_not_followed():
    # Root at start-up must neither truncate nor write through a symbolic link
    # that the run user planted in its state directory.
    status, log, after = pidfile_attack(lambda victim, pidfile: os.symlink(victim, pidfile))
    check(after == "root:precious:0:0\n", "the victim was overwritten through the symlink: %r" % after)
    check(status == 1, "exit %s:\n%s" % (status, log))
    errors = [line for line in log.splitlines() if line.startswith("pillarboxd: ")]
    check(len(errors) == 1 and "is a symbolic link" in errors[0], log)


def test_pidfile_hard_link_refused():
    # A second name for another file (where protected_hardlinks does not stop it).
    status, log, after = pidfile_attack(lambda victim, pidfile: os.link(victim, pidfile))
    check(after == "root:precious:0:0\n", "the victim was overwritten through the hard link: %r" % after)
    check(status == 1 and "has other names (hard links)" in log, "exit %s:\n%s" % (status, log))


def test_pidfile_fifo_refused():
    status, log, after = pidfile_attack(lambda victim, pidfile: os.mkfifo(pidfile))
    check(status == 1 and "not a regular file" in log, "exit %s:\n%s" % (status, log))


def test_pidfile_stale_replaced():
    # A stale pid file, longer than the new pid, of a daemon that died: replaced whole.
    with Daemon(example_conf(free_port())) as d:
        os.makedirs(d.state, mode=0o750)
        with open(os.path.join(d.state, "pillarboxd.pid"), "w") as f:
            f.write("4194303999\n")
        d.start()
        with open(os.path.join(d.state, "pillarboxd.pid")) as f:
            check(f.read() == "%d\n" % d.proc.pid, "pid file not rewritten")


if __name__ == "__main__":
    run_tests([
        test_check_config_shipped,
        test_check_config_misspelt_key,
        test_check_config_abi_major,
        test_check_config_override,
        test_version,
        test_control_round_trip,
        test_pipelined_lines_and_long_line,
        test_starttls_discards_injected_commands,
        test_implicit_tls_with_gnutls_cli,
        test_sighup_reloads_certificate,
        test_connect_hook_refusal,
        test_sighup_bad_config_keeps_old,
        test_reload_moves_listener,
        test_sigterm_drains_sessions,
        test_cli_without_daemon,
        test_start_failures,
        test_background_mode,
        test_pidfile_symlink_not_followed,
        test_pidfile_hard_link_refused,
        test_pidfile_fifo_refused,
        test_pidfile_stale_replaced,
    ])
