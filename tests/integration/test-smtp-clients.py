# SPDX-License-Identifier: MIT
"""smtp-server with real clients: smtplib over STARTTLS and implicit TLS with AUTH PLAIN and LOGIN,
swaks, gnutls-cli on the implicit-TLS port, STARTTLS command injection, relaying after AUTH,
and own-addresses-only."""

import importlib.util
import os
import shutil
import smtplib
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
_spec = importlib.util.spec_from_file_location("smtp_common", os.path.join(HERE, "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

from pbtest import TIMEOUT, check, run_tests  # noqa: E402

SmtpClient = common.SmtpClient
PASSWORD = common.PASSWORD
D = None


def daemon():
    global D
    if D is None:
        D = common.SmtpDaemon(smtp_extra="own-addresses-only = true\nmax-errors = 100\n")
    return D


def test_submission_needs_auth_and_tls():
    d = daemon()
    c = SmtpClient(d.ports["submission"])
    check(c.reply()[0] == 220, "greeting")
    code, lines = c.cmd("EHLO client.example", 250)
    check("AUTH PLAIN LOGIN" not in lines, "AUTH offered in plain text: %r" % lines)
    check("STARTTLS" in lines, lines)
    code, text = c.cmd("MAIL FROM:<bob@example.org>")
    check(code == 530 and text[0].startswith("5.7.0"), "%d %r" % (code, text))
    code, text = c.cmd("AUTH PLAIN " + common.plain_b64("bob@example.org", PASSWORD))
    check(code == 538 and text[0].startswith("5.7.11"), "%d %r" % (code, text))
    c.cmd("STARTTLS", 220)
    c.starttls()
    code, lines = c.cmd("EHLO client.example", 250)
    check("AUTH PLAIN LOGIN" in lines and "STARTTLS" not in lines, lines)
    code, text = c.cmd("AUTH PLAIN " + common.plain_b64("bob@example.org", "wrong"))
    check(code == 535 and text[0].startswith("5.7.8"), "%d %r" % (code, text))
    code, text = c.cmd("AUTH PLAIN")
    check(code == 334, "%d %r" % (code, text))
    code, text = c.cmd("*")
    check(code == 501, "cancel: %d %r" % (code, text))
    c.cmd("AUTH PLAIN " + common.plain_b64("bob@example.org", PASSWORD), 235)
    code, lines = c.cmd("EHLO client.example", 250)
    check(not any(l.startswith("AUTH") for l in lines), "AUTH offered again: %r" % lines)
    c.cmd("AUTH PLAIN " + common.plain_b64("bob@example.org", PASSWORD), 503)
    c.cmd("QUIT", 221)
    log = d.read_log()
    check(PASSWORD not in log and common.plain_b64("bob@example.org", PASSWORD) not in log, "a password was logged")


def test_smtplib_starttls_login_and_relay():
    d = daemon()
    before = len(d.queue())
    with smtplib.SMTP("127.0.0.1", d.ports["submission"], timeout=TIMEOUT) as s:
        s.ehlo("laptop.example")
        s.starttls(context=common.insecure_context())
        s.ehlo("laptop.example")
        s.login("bob@example.org", PASSWORD)   # smtplib prefers... whichever is offered first it knows
        refused = s.sendmail("bob@example.org", ["alice@example.org", "friend@elsewhere.example"],
                             common.message("relayed").encode())
        check(refused == {}, refused)
    d.wait_count("alice", 1)
    check(len(d.queue()) == before + 1 and d.queue()[-1][1] == "friend@elsewhere.example", d.queue())
    received = [m for m in d.messages().values() if b"Subject: relayed" in m][0]
    check(b"with ESMTPSA" in received and b"(using TLS" in received and b"(authenticated user bob@example.org)"
          in received, received[:600])


def test_auth_login_and_own_addresses():
    d = daemon()
    with smtplib.SMTP("127.0.0.1", d.ports["submission"], timeout=TIMEOUT) as s:
        s.ehlo("laptop.example")
        s.starttls(context=common.insecure_context())
        s.ehlo("laptop.example")
        s.user, s.password = "alice@example.org", PASSWORD
        code, resp = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        check(code == 235, "%d %r" % (code, resp))
        code, resp = s.mail("bob@example.org")
        check(code == 553 and resp.startswith(b"5.7.1"), "%d %r" % (code, resp))
        code, resp = s.mail("")
        check(code == 553, "null sender: %d %r" % (code, resp))
        code, resp = s.mail("alice@example.org")
        check(code == 250, "%d %r" % (code, resp))


def test_smtps_implicit_tls():
    d = daemon()
    before = d.count("alice")
    with smtplib.SMTP_SSL("127.0.0.1", d.ports["smtps"], timeout=TIMEOUT, context=common.insecure_context()) as s:
        code, resp = s.ehlo("laptop.example")
        check(b"AUTH PLAIN LOGIN" in resp and b"STARTTLS" not in resp, resp)
        s.login("bob@example.org", PASSWORD)
        s.sendmail("bob@example.org", ["alice@example.org"], common.message("implicit").encode())
    d.wait_count("alice", before + 1)
    # Unauthenticated: refused on this listener.
    c = SmtpClient(d.ports["smtps"], tls=True)
    c.reply()
    c.cmd("EHLO x.example", 250)
    check(c.cmd("MAIL FROM:<x@remote.example>")[0] == 530, "smtps without AUTH")
    c.cmd("QUIT", 221)


def test_starttls_injection():
    """RFC 3207 §4.2: commands pipelined after STARTTLS in plain text are never executed."""
    d = daemon()
    c = SmtpClient(d.ports["smtp"])
    c.reply()
    c.cmd("EHLO x.example", 250)
    c.send("STARTTLS\r\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.org>\r\n")
    code, text = c.reply()
    check(code == 220, "%d %r" % (code, text))
    check(c.buf == b"", "replies to injected commands: %r" % c.buf)
    c.starttls()
    # The session starts over: no HELO, no transaction.
    code, text = c.cmd("RCPT TO:<bob@example.org>")
    check(code == 503, "injected MAIL was executed: %d %r" % (code, text))
    c.cmd("EHLO x.example", 250)
    code, text = c.cmd("RCPT TO:<bob@example.org>")
    check(code == 503 and "MAIL" in text[0], "%d %r" % (code, text))
    code, text = c.cmd("STARTTLS")
    check(code == 503, "second STARTTLS: %d %r" % (code, text))
    c.cmd("QUIT", 221)


def test_swaks():
    swaks = shutil.which("swaks")
    check(swaks is not None, "swaks is not installed (Debian package swaks)")
    d = daemon()
    before = d.count("bob")
    p = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(d.ports["smtp"]), "--from",
                        "someone@remote.example", "--to", "bob@example.org", "--helo", "swaks.example",
                        "--header", "Subject: swaks", "--body", "sent by swaks", "--pipeline"],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, "swaks failed: %s %s" % (p.stdout[-2000:], p.stderr[-500:]))
    check("queued as" in p.stdout, p.stdout[-1000:])
    # With STARTTLS and AUTH on the submission port.
    p = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(d.ports["submission"]), "--tls",
                        "--auth", "PLAIN", "--auth-user", "bob@example.org", "--auth-password", PASSWORD,
                        "--from", "bob@example.org", "--to", "bob@example.org", "--helo", "swaks.example",
                        "--header", "Subject: swaks tls"],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, "swaks --tls --auth failed: %s %s" % (p.stdout[-2000:], p.stderr[-500:]))
    d.wait_count("bob", before + 2)


def test_gnutls_cli_implicit_tls():
    gnutls = shutil.which("gnutls-cli")
    check(gnutls is not None, "gnutls-cli is not installed (Debian package gnutls-bin)")
    d = daemon()
    script = ("EHLO gnutls.example\r\nAUTH PLAIN %s\r\nQUIT\r\n" % common.plain_b64("bob@example.org", PASSWORD))
    p = subprocess.run([gnutls, "--insecure", "--port", str(d.ports["smtps"]), "127.0.0.1"], input=script,
                       capture_output=True, text=True, timeout=60)
    out = p.stdout
    check("220 mx.test.example" in out, out[-2000:])
    check("250-AUTH PLAIN LOGIN" in out, out[-2000:])
    check("235 2.7.0" in out and "221 2.0.0" in out, out[-2000:])


def test_zz_clean_exit():
    global D
    if D is not None:
        d, D = D, None
        try:
            d.finish()
        finally:
            d.close()


if __name__ == "__main__":
    run_tests([test_submission_needs_auth_and_tls, test_smtplib_starttls_login_and_relay,
               test_auth_login_and_own_addresses, test_smtps_implicit_tls, test_starttls_injection, test_swaks,
               test_gnutls_cli_implicit_tls, test_zz_clean_exit])
