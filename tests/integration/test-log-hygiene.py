# SPDX-License-Identifier: MIT
"""Log forging and uncounted failures (issue 15, finding 4), against the real daemon: a SASL user
name carrying a newline cannot write a line of its own into the log, and names that are not valid
UTF-8, contain blanks or control characters, or are too long are failed logins (535 5.7.8 in SMTP,
-ERR [AUTH] in POP3, "Login failed" in the status monitor) that ids and POP3's own limit count,
never temporary failures a client may repeat without end, and never a GLib critical."""

import base64
import importlib.util
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
_spec = importlib.util.spec_from_file_location("smtp_common", os.path.join(HERE, "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

from pbtest import LineClient, check, free_port, run_tests, wait_for  # noqa: E402

# A critical (GLib's answer to invalid UTF-8 where a string must be valid) ends the daemon here
# (make check sets this too), and test_zz_clean_exit looks for one in the log.
os.environ["G_DEBUG"] = "fatal-criticals"

FORGED = "2031-01-01T00:00:00.000Z pillarboxd[1]: pillarbox-smtp: info: FORGED-LINE admin logged in"
# Names that are not names: each must be a failed login, counted, whatever the protocol.
BAD_NAMES = [
    ("a blank", b"bob smith@example.org"),
    ("a control character", b"bob\x01@example.org"),
    ("a tab", b"bob\t@example.org"),
    ("DEL", b"bob\x7f@example.org"),
    ("invalid UTF-8", b"bob\xff\xfe@example.org"),
    ("an overlong UTF-8 sequence", b"bob\xc0\xaf@example.org"),
    ("a C1 control", "bob\u0085@example.org".encode()),
    # One more than the longest name the core takes (254 octets, the longest address), and short
    # enough for POP3's USER (arguments of at most 255 octets, pop3-parse.c).
    ("255 octets", b"b" * 243 + b"@example.org"),
]
# SMTP's AUTH carries longer names still (within its 512-octet command line).
LONG_NAMES = [("300 octets", b"b" * 288 + b"@example.org"), ("300 newlines", b"\n" * 300)]
BOB = "bob@" + common.DOMAIN
D = None


def daemon():
    """smtp-server, pop3-server (plain text allowed) and status-monitor; ids scores 127.0.0.2 and
    blocks it at the fourth failed login (weight 1, threshold 4)."""
    global D
    if D is None:
        D = common.SmtpDaemon(smtp_extra="auth-plaintext = true\nmax-errors = 100\n", start=False)
        D.pop3_port = free_port()
        D.monitor_port = free_port()
        D.write("30-pop3-server.conf", "[module pop3-server]\npop3-listen = 127.0.0.1:%d\npop3s-listen =\n"
                "auth-plaintext = true\n" % D.pop3_port)
        D.write("41-ids.conf", "[module ids]\nnever-block = 127.0.0.1\nthreshold = 4\nweight-auth-failed = 1\n"
                "weight-protocol-error = 0\n")
        D.write("71-status-monitor.conf", "[module status-monitor]\nlisten = 127.0.0.1:%d\nadministrators = %s\n"
                % (D.monitor_port, BOB))
        D.start()
        D.cli("domain", "add", common.DOMAIN)
        D.cli("user", "add", BOB, "--protocols", "smtp,pop3", input=common.PASSWORD + "\n")
    return D


def smtp(source="127.0.0.1"):
    c = common.SmtpClient(daemon().ports["submission"], source=source)
    check(c.reply()[0] == 220, "greeting")
    c.cmd("EHLO client.example", 250)
    return c


def plain(user, password=common.PASSWORD):
    return base64.b64encode(b"\0" + user + b"\0" + password.encode()).decode()


def log_lines():
    return daemon().read_log().split("\n")


def check_not_forged(marker):
    """No line of the log starts with the forged text: every line that holds it holds it after the
    newline that tried to start it, shown as \\x0a (in any case: the core lower-cases names)."""
    log = daemon().read_log()
    for line in log.lower().split("\n"):
        check(not line.startswith(FORGED[:30].lower()), "forged log line: %r" % line)
        check("forged-line" not in line or ("\\x0a" + FORGED[:30]).lower() in line, "forged log line: %r" % line)
    check(("\\x0a" + FORGED) in log, "the forging attempt is not in the log, escaped:\n%s" % log[-3000:])
    check(marker in log, "%r not logged" % marker)


def test_smtp_auth_plain_newline_is_escaped():
    c = smtp()
    code, text = c.cmd("AUTH PLAIN " + plain(("bob\n" + FORGED).encode()))
    c.cmd("QUIT", 221)
    daemon().wait_log("AUTH PLAIN for bob")
    check_not_forged("AUTH PLAIN for bob\\x0a")
    check(code == 535 and text == ["5.7.8 Authentication credentials invalid"], "%d %r" % (code, text))


def test_smtp_auth_login_newline_is_escaped():
    c = smtp()
    c.cmd("AUTH LOGIN " + base64.b64encode(("carol\r\n" + FORGED).encode()).decode(), 334)
    code, text = c.cmd(base64.b64encode(b"whatever").decode())
    c.cmd("QUIT", 221)
    daemon().wait_log("AUTH LOGIN for carol")
    check_not_forged("AUTH LOGIN for carol\\x0d\\x0a")
    check(code == 535, "%d %r" % (code, text))


def test_smtp_bad_names_are_failed_logins():
    c = smtp()
    for what, name in BAD_NAMES + LONG_NAMES:
        code, text = c.cmd("AUTH PLAIN " + plain(name))
        check(code == 535 and text == ["5.7.8 Authentication credentials invalid"],
              "%s: %d %r" % (what, code, text))
    # The session still works: a right login after all that.
    c.cmd("AUTH PLAIN " + plain(BOB.encode()), 235)
    c.cmd("QUIT", 221)
    log = daemon().read_log()
    check("Temporary authentication failure" not in log and "could not be checked" not in log, log[-3000:])


def test_smtp_bad_names_are_counted_by_ids():
    """From 127.0.0.2 (scored): four failed logins with bad names block the address."""
    c = smtp("127.0.0.2")
    for what, name in BAD_NAMES[:4]:
        code, text = c.cmd("AUTH PLAIN " + plain(name))
        check(code == 535, "%s: %d %r" % (what, code, text))
    c.cmd("QUIT", 221)
    c = common.SmtpClient(daemon().ports["submission"], source="127.0.0.2")
    code, text = c.reply()
    check(code == 421 and "blocked temporarily" in text[0],
          "127.0.0.2 not blocked after four failed logins: %d %r" % (code, text))
    c.close()


def pop3():
    c = LineClient(daemon().pop3_port)
    check(c.line().startswith("+OK"), "POP3 greeting")
    return c


def test_pop3_user_pass_bad_names_count_towards_the_limit():
    """Three failed logins end a POP3 session, names that are not names included."""
    for names in (BAD_NAMES[1:4], BAD_NAMES[4:7], [BAD_NAMES[7]] * 3):
        c = pop3()
        for what, name in names:
            c.send(b"USER " + name + b"\r\n")
            reply = c.line()
            check(reply.startswith("+OK"), "%s: USER: %s" % (what, reply))
            c.send(b"PASS " + common.PASSWORD.encode() + b"\r\n")
            reply = c.line()
            check(reply == "-ERR [AUTH] Authentication failed", "%s: %s" % (what, reply))
        check(c.closed(), "still open after three failed logins: %s" % [n for n, _ in names])


def test_pop3_auth_plain_newline_and_bad_names():
    c = pop3()
    c.send("AUTH PLAIN %s\r\n" % plain(("bob\n" + FORGED).encode()))
    reply = c.line()
    wait_for("the login's log line", lambda: re.search(r"login (of|failed for) bob", daemon().read_log()))
    check_not_forged("login failed for bob\\x0a")
    check(reply == "-ERR [AUTH] Authentication failed", "newline name: %s" % reply)
    c.send("AUTH PLAIN %s\r\n" % plain(b"bob\xff@example.org"))
    check(c.line() == "-ERR [AUTH] Authentication failed", "invalid UTF-8")
    c.send("AUTH PLAIN %s\r\n" % plain(b"bob smith"))
    check(c.line() == "-ERR [AUTH] Authentication failed", "blank")
    check(c.closed(), "still open after three failed logins")
    # A right login still works afterwards.
    c = pop3()
    c.send("AUTH PLAIN %s\r\n" % plain(BOB.encode()))
    check(c.line().startswith("+OK"), "right login")
    c.send("QUIT\r\n")
    c.line()


def test_status_monitor_bad_names_are_failed_logins():
    c = LineClient(daemon().monitor_port)
    check(c.line().startswith("+OK"), "monitor greeting")
    for what, name in (BAD_NAMES[1], BAD_NAMES[4], BAD_NAMES[6]):
        c.send(b"LOGIN " + name + b" " + common.PASSWORD.encode() + b"\r\n")
        reply = c.line()
        check(reply == "-ERR Login failed", "%s: %s" % (what, reply))
    check(c.closed(), "monitor still open after three failed logins")
    log = daemon().read_log()
    check("status monitor login failed for bob\\x01@example.org" in log, log[-3000:])


def test_invalid_utf8_names_raise_no_critical():
    """Each on a session of its own, first thing: an invalid UTF-8 name reached a GVariant
    string, a GLib critical, which G_DEBUG=fatal-criticals makes the end of the daemon."""
    d = daemon()
    name = b"\xc3\x28\xff@example.org"
    c = smtp()
    code, text = c.cmd("AUTH PLAIN " + plain(name))
    check(code == 535, "SMTP: %d %r" % (code, text))
    c.cmd("QUIT", 221)
    c = pop3()
    c.send(b"USER " + name + b"\r\nPASS x\r\n")
    check(c.line().startswith("+OK"), "POP3 USER")
    reply = c.line()
    check(reply == "-ERR [AUTH] Authentication failed", "POP3: %s" % reply)
    c = LineClient(d.monitor_port)
    check(c.line().startswith("+OK"), "monitor greeting")
    c.send(b"LOGIN " + name + b" x\r\n")
    reply = c.line()
    check(reply == "-ERR Login failed", "status monitor: %s" % reply)
    check(d.proc.poll() is None, "pillarboxd died (%s):\n%s" % (d.proc.returncode, d.read_log()[-2000:]))
    log = d.read_log()
    check("critical" not in log.lower(), "a critical:\n%s" % log[-3000:])
    check("\\xc3(\\xff@example.org" in log, "the name is not in the log, escaped:\n%s" % log[-3000:])


def test_no_raw_control_characters_in_the_log():
    """Whatever the tests above sent, the log holds no control character but the line ends, and is
    valid UTF-8."""
    d = daemon()
    with open(d.log_path, "rb") as f:
        raw = f.read()
    raw.decode("utf-8")
    bad = re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", raw)
    check(bad is None, "raw control character in the log near %r" % raw[max(0, bad.start() - 80):bad.end() + 20]
          if bad else "")


def test_zz_clean_exit():
    d = daemon()
    # pb-log writes "DOMAIN: critical: TEXT", which Daemon.finish()'s markers do not catch.
    check(": critical: " not in d.read_log(), "a critical:\n%s" % d.read_log()[-3000:])
    check(d.proc.poll() is None, "pillarboxd died (%s)" % d.proc.returncode)
    d.finish()


if __name__ == "__main__":
    ok = False
    try:
        run_tests([test_smtp_auth_plain_newline_is_escaped, test_smtp_auth_login_newline_is_escaped,
                   test_smtp_bad_names_are_failed_logins, test_smtp_bad_names_are_counted_by_ids,
                   test_pop3_user_pass_bad_names_count_towards_the_limit,
                   test_pop3_auth_plain_newline_and_bad_names, test_status_monitor_bad_names_are_failed_logins,
                   test_invalid_utf8_names_raise_no_critical, test_no_raw_control_characters_in_the_log,
                   test_zz_clean_exit])
    finally:
        if D is not None:
            D.close()
