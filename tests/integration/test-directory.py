# SPDX-License-Identifier: MIT
"""The directory end to end: pillarbox domain/user/alias/list commands, the core's router (aliases,
lists, loops, shared and alias domains, postmaster) seen through real SMTP, and passwords never in clear."""

import glob
import json
import os
import smtplib
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "smtp_common", os.path.join(os.path.dirname(os.path.abspath(__file__)), "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)
from pbtest import PILLARBOX, TIMEOUT, check, run_tests  # noqa: E402

PASSWORD = common.PASSWORD


def rcpt(d, address, sender="someone@elsewhere.example"):
    """The reply to RCPT TO:<address> on the inbound port (unauthenticated)."""
    with smtplib.SMTP("127.0.0.1", d.ports["smtp"], timeout=TIMEOUT) as s:
        s.ehlo("client.example")
        s.mail(sender)
        code, text = s.rcpt(address)
        s.rset()
        return code, text.decode()


def deliver(d, address, body="Subject: hi\r\n\r\nhello\r\n"):
    with smtplib.SMTP("127.0.0.1", d.ports["smtp"], timeout=TIMEOUT) as s:
        s.sendmail("someone@elsewhere.example", [address], body)


def mailbox(d, user):
    return json.loads(d.cli("--json", "mailbox", "list", user).stdout)


def test_commands_and_routing():
    with common.SmtpDaemon(users=()) as d:   # adds the domain example.org
        d.cli("domain", "add", "shared.example", "--shared")
        d.cli("domain", "add", "alias.example", "--alias-of", "example.org")
        p = d.cli("domain", "add", "example.org", expect=1)
        check("exists already" in p.stderr, p.stderr)
        p = d.cli("domain", "add", "not a domain", expect=1)
        check("is not a domain name" in p.stderr, p.stderr)
        domains = json.loads(d.cli("--json", "domain", "list").stdout)
        check(sorted(x[0] for x in domains) == ["alias.example", "example.org", "shared.example"], domains)

        d.cli("user", "add", "bob@example.org", input=PASSWORD + "\n")
        d.cli("user", "add", "carol@example.org", "--protocols", "pop3", "--max-size", "1M", input=PASSWORD + "\n")
        d.cli("user", "add", "alice", input=PASSWORD + "\n")
        p = d.cli("user", "add", "dave@example.org", input="", expect=1)
        check("no password given" in p.stderr, p.stderr)
        # 'user list' reads no input: it must not wait for standard input.
        listing = subprocess.run([PILLARBOX, "--state-dir", d.state, "--json", "user", "list"], stdin=None,
                                 capture_output=True, text=True, timeout=TIMEOUT)
        users = {u[0]: u for u in json.loads(listing.stdout)}
        check(set(users) == {"alice", "bob@example.org", "carol@example.org"}, users)
        check(users["carol@example.org"][1] == "pop3" and users["carol@example.org"][2] == 1024 * 1024, users)

        d.cli("alias", "add", "info@example.org", "bob@example.org")
        d.cli("alias", "add", "loop1@example.org", "loop2@example.org")
        d.cli("alias", "add", "loop2@example.org", "loop1@example.org")
        d.cli("alias", "add", "away@example.org", "someone@remote.example")
        d.cli("list", "add", "team@example.org")
        d.cli("list", "add-member", "team@example.org", "bob@example.org")
        d.cli("list", "add-member", "team@example.org", "info@example.org")   # bob again, through the alias
        d.cli("list", "add-member", "team@example.org", "alice")
        members = json.loads(d.cli("--json", "list", "members", "team@example.org").stdout)
        check(sorted(members) == ["alice", "bob@example.org", "info@example.org"], members)

        cases = [
            ("bob@example.org", 250, ""),
            ("BOB@Example.ORG", 250, ""),
            ("bob@alias.example", 250, ""),             # domain alias
            ("alice@shared.example", 250, ""),          # shared users: bare name at a shared domain
            ("alice@example.org", 550, "5.1.1"),        # not shared: no such user there
            ("nobody@example.org", 550, "5.1.1"),
            ("info@example.org", 250, ""),
            ("team@example.org", 250, ""),
            ("loop1@example.org", 550, "5.4.6"),
            ("someone@remote.example", 550, "5.7.1"),   # relaying, not authenticated
            ("postmaster@example.org", 451, "4.3.0"),   # postmaster not configured yet: deferred, not refused
        ]
        for i, (address, code, enhanced) in enumerate(cases):
            got, text = rcpt(d, address)
            check(got == code and enhanced in text, "case %d %s: %d %s" % (i, address, got, text))

        # RFC 5321 4.5.1: once a postmaster user exists, postmaster at any local domain reaches it.
        d.cli("user", "add", "postmaster", input=PASSWORD + "\n")
        for address in ("postmaster@example.org", "Postmaster@shared.example", "postmaster"):
            got, text = rcpt(d, address)
            check(got == 250, "%s: %d %s" % (address, got, text))

        deliver(d, "team@example.org")
        deliver(d, "info@example.org")
        bob = mailbox(d, "bob@example.org")
        alice = mailbox(d, "alice")
        check(len(bob) == 2, "bob gets the list once (not twice through info@) and the alias once: %s" % bob)
        check(len(alice) == 1, alice)

        # Passwords: stored hashed (yescrypt), never in clear anywhere.
        blob = b""
        for path in glob.glob(os.path.join(d.state, "storage-sqlite", "*")):   # the database and its WAL
            with open(path, "rb") as f:
                data = f.read()
            check(PASSWORD.encode() not in data, "the password is in clear in %s" % path)
            blob += data
        check(b"$y$" in blob, "no yescrypt hash in the database")
        check(PASSWORD not in d.read_log(), "the password is in the log")

        # AUTH through the router's user names, on the submission port under STARTTLS.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", d.ports["submission"], timeout=TIMEOUT) as s:
            s.starttls(context=ctx)
            s.login("bob@example.org", PASSWORD)
        with smtplib.SMTP("127.0.0.1", d.ports["submission"], timeout=TIMEOUT) as s:
            s.starttls(context=ctx)
            try:
                s.login("carol@example.org", PASSWORD)   # pop3 only
                raise AssertionError("a POP3-only user logged in over SMTP")
            except smtplib.SMTPAuthenticationError:
                pass

        # Password change and deletions.
        d.cli("user", "passwd", "bob@example.org", input="n3w-Pass\n")
        with smtplib.SMTP("127.0.0.1", d.ports["submission"], timeout=TIMEOUT) as s:
            s.starttls(context=ctx)
            s.login("bob@example.org", "n3w-Pass")
        d.cli("alias", "del", "info@example.org")
        got, _ = rcpt(d, "info@example.org")
        check(got == 550, "deleted alias still accepted")
        d.cli("user", "del", "alice")
        p = d.cli("mailbox", "list", "alice", expect=1)
        check("does not exist" in p.stderr, p.stderr)
        p = d.cli("user", "del", "alice", expect=1)
        check("does not exist" in p.stderr, p.stderr)


if __name__ == "__main__":
    run_tests([test_commands_and_routing])
