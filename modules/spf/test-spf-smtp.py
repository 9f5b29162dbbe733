# SPDX-License-Identifier: MIT
"""spf end to end: pillarboxd with storage-sqlite, smtp-server and spf, core.dns-servers pointing at
tests/dns-server.py. A passing sender's message reaches the mailbox with Received-SPF and
Authentication-Results; -all gets 550 5.7.23; DNS trouble gets 451 4.7.24; an authenticated
session is not checked; a second transaction never reuses the first one's result."""

import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # the source tree is read-only under distcheck; leave no __pycache__
import spf_zone  # noqa: E402
from spf_zone import DnsServer, TOP_SRCDIR, txt  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "smtp_common", os.path.join(TOP_SRCDIR, "tests", "integration", "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

from pbtest import check, run_tests  # noqa: E402

ZONE = (txt("pass.example.net.", "v=spf1 ip4:127.0.0.0/8 -all")
        + txt("fail.example.net.", "v=spf1 ip4:192.0.2.1 -all exp=why.fail.example.net")
        + txt("why.fail.example.net.", "%{i} may not send for %{d}")
        + txt("soft.example.net.", "v=spf1 ~all")
        + txt("client.example.net.", "v=spf1 a -all")
        + "client.example.net. IN A 127.0.0.1\n"
        # The local domain refuses every host, so a check of an authenticated sender would show.
        + txt("example.org.", "v=spf1 -all")
        + txt("broken.example.net.", "v=spf1 include:host.servfail.example.net -all"))

D = None
DNS = None


def daemon():
    global D, DNS
    if D is None:
        DNS = DnsServer(ZONE)
        D = common.SmtpDaemon(core_extra="dns-servers = %s\n" % DNS.address, start=False)
        D.write("60-spf.conf", "[module spf]\nlookup-timeout = 2s\n")
        D.start()
        D.cli("domain", "add", common.DOMAIN)
        D.cli("user", "add", "bob@" + common.DOMAIN, input=common.PASSWORD + "\n")
    return D


def client(port="smtp"):
    c = common.SmtpClient(daemon().ports[port])
    check(c.reply()[0] == 220, "greeting")
    return c


def send(c, mail_from, subject):
    """One transaction; returns the stored message."""
    c.cmd("MAIL FROM:<%s>" % mail_from, 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    c.cmd("DATA", 354)
    code, text = c.cmd("Subject: %s\r\n\r\nbody\r\n." % subject)
    check(code == 250, "%d %r" % (code, text))
    qid = text[0].split()[-1]
    stored = D.message(qid)
    check(stored is not None, "message %s not stored" % qid)
    return stored.decode()


def headers(message, name):
    head = message.split("\r\n\r\n", 1)[0]
    return [line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith(name.lower() + ":")]


def test_pass_delivered_with_headers():
    d = daemon()
    before = d.count("bob")
    c = client()
    c.cmd("EHLO client.example.net", 250)
    msg = send(c, "alice@pass.example.net", "spf pass")
    c.cmd("QUIT", 221)
    d.wait_count("bob", before + 1)
    rs = headers(msg, "Received-SPF")
    ar = headers(msg, "Authentication-Results")
    check(len(rs) == 1 and rs[0].startswith("pass (mx.test.example: domain of alice@pass.example.net designates "
                                             "127.0.0.1 as permitted sender)"), rs)
    for part in ("client-ip=127.0.0.1;", 'envelope-from="alice@pass.example.net";', "helo=client.example.net;",
                 "receiver=mx.test.example;", "identity=mailfrom;", 'mechanism="ip4:127.0.0.0/8"'):
        check(part in rs[0], "%r not in %r" % (part, rs[0]))
    check(ar == ["mx.test.example; spf=pass smtp.mailfrom=alice@pass.example.net"], ar)
    check(msg.index("Received-SPF:") < msg.index("Subject:"), "headers must come first")
    check("SPF pass for mailfrom identity alice@pass.example.net from 127.0.0.1" in d.read_log(), "no log line")


def test_fail_rejected():
    d = daemon()
    before = d.count("bob")
    c = client()
    c.cmd("EHLO client.example.net", 250)
    code, text = c.cmd("MAIL FROM:<mallory@fail.example.net>")
    check(code == 550 and text == ["5.7.23 127.0.0.1 may not send for fail.example.net"], "%d %r" % (code, text))
    # The session goes on: a good sender is still welcome.
    send(c, "alice@pass.example.net", "after a refusal")
    c.cmd("QUIT", 221)
    d.wait_count("bob", before + 1)


def test_temperror_deferred_and_softfail_tagged():
    daemon()
    c = client()
    c.cmd("EHLO client.example.net", 250)
    code, text = c.cmd("MAIL FROM:<x@broken.example.net>")
    check(code == 451 and text[0].startswith("4.7.24 SPF temporary error for broken.example.net"), "%d %r" % (code, text))
    msg = send(c, "x@soft.example.net", "softfail")
    c.cmd("QUIT", 221)
    rs = headers(msg, "Received-SPF")
    check(len(rs) == 1 and rs[0].startswith("softfail "), rs)
    check(headers(msg, "Authentication-Results") == ["mx.test.example; spf=softfail smtp.mailfrom=x@soft.example.net"],
          msg[:500])


def test_second_transaction_has_its_own_result():
    daemon()
    c = client()
    c.cmd("EHLO client.example.net", 250)
    c.cmd("MAIL FROM:<alice@pass.example.net>", 250)
    c.cmd("RSET", 250)
    msg = send(c, "y@soft.example.net", "after RSET")
    check([h.split()[0] for h in headers(msg, "Received-SPF")] == ["softfail"], msg[:600])
    msg = send(c, "alice@pass.example.net", "second transaction")
    check([h.split()[0] for h in headers(msg, "Received-SPF")] == ["pass"], msg[:600])
    # The null sender is checked as postmaster@HELO (RFC 7208 §2.4).
    msg = send(c, "", "bounce")
    c.cmd("QUIT", 221)
    rs = headers(msg, "Received-SPF")
    check(len(rs) == 1 and rs[0].startswith("pass ") and "identity=helo" in rs[0] and 'envelope-from=""' in rs[0], rs)
    check(headers(msg, "Authentication-Results") == ["mx.test.example; spf=pass smtp.helo=client.example.net"], msg[:600])


def test_authenticated_session_not_checked():
    daemon()
    c = client("submission")
    c.cmd("EHLO client.example.net", 250)
    c.cmd("STARTTLS", 220)
    c.starttls()
    c.cmd("EHLO client.example.net", 250)
    c.cmd("AUTH PLAIN " + common.plain_b64("bob@example.org", common.PASSWORD), 235)
    # Would be refused (-all) if it were checked.
    msg = send(c, "bob@example.org", "authenticated")
    c.cmd("QUIT", 221)
    check(headers(msg, "Received-SPF") == [] and headers(msg, "Authentication-Results") == [], msg[:600])


def test_dns_silence_and_client_leaving():
    d = daemon()
    # The domain's server never answers: 451 4.7.24 after lookup-timeout, not a hang.
    c = client()
    c.cmd("EHLO client.example.net", 250)
    t0 = time.time()
    code, text = c.cmd("MAIL FROM:<x@slow.timeout.example.net>")
    check(code == 451 and text[0].startswith("4.7.24 "), "%d %r" % (code, text))
    check(time.time() - t0 < 10, "took %.1fs" % (time.time() - t0))
    c.cmd("QUIT", 221)
    # The client leaves while its check waits for DNS: the session goes on working.
    c = client()
    c.cmd("EHLO client.example.net", 250)
    c.send("MAIL FROM:<x@gone.timeout.example.net>\r\n")
    time.sleep(0.2)
    c.sock.close()
    c = client()
    c.cmd("EHLO client.example.net", 250)
    send(c, "alice@pass.example.net", "still working")
    c.cmd("QUIT", 221)


def test_hook_timeout_cancels_check_and_trusted_networks():
    # core.hook-timeout shorter than the DNS wait: the core answers 451 4.3.0 and cancels the
    # request; the check stops at once (its lookup is dropped) and still completes.
    d = common.SmtpDaemon(core_extra="dns-servers = %s\nhook-timeout = 1s\n" % DNS.address, start=False)
    try:
        d.write("60-spf.conf", "[module spf]\nlookup-timeout = 10s\ntrusted-networks = 127.0.0.2\ncheck-helo = true\n")
        d.start()
        d.cli("domain", "add", common.DOMAIN)
        d.cli("user", "add", "bob@" + common.DOMAIN, input=common.PASSWORD + "\n")
        # A client in trusted-networks is not checked: -all does not refuse it, no headers.
        c = common.SmtpClient(d.ports["smtp"], source="127.0.0.2")
        c.reply()
        c.cmd("EHLO client.example.net", 250)
        c.cmd("MAIL FROM:<mallory@fail.example.net>", 250)
        c.cmd("RCPT TO:<bob@example.org>", 250)
        c.cmd("DATA", 354)
        code, text = c.cmd("Subject: trusted\r\n\r\nbody\r\n.")
        check(code == 250, "%d %r" % (code, text))
        msg = d.message(text[0].split()[-1]).decode()
        check(headers(msg, "Received-SPF") == [], msg[:500])
        c.cmd("QUIT", 221)
        # check-helo: a HELO name whose record fails refuses even a passing MAIL FROM ...
        c = common.SmtpClient(d.ports["smtp"])
        c.reply()
        c.cmd("EHLO fail.example.net", 250)
        code, text = c.cmd("MAIL FROM:<alice@pass.example.net>")
        check(code == 550 and text[0].startswith("5.7.23 "), "%d %r" % (code, text))
        # ... and both results are reported when HELO passes.
        c.cmd("EHLO client.example.net", 250)
        c.cmd("MAIL FROM:<x@soft.example.net>", 250)
        c.cmd("RCPT TO:<bob@example.org>", 250)
        c.cmd("DATA", 354)
        code, text = c.cmd("Subject: helo checked\r\n\r\nbody\r\n.")
        msg = d.message(text[0].split()[-1]).decode()
        check(headers(msg, "Authentication-Results")
              == ["mx.test.example; spf=pass smtp.helo=client.example.net; spf=softfail smtp.mailfrom=x@soft.example.net"],
              msg[:600])
        check([h.split()[0] for h in headers(msg, "Received-SPF")] == ["softfail"], msg[:600])
        c.cmd("QUIT", 221)
        c = common.SmtpClient(d.ports["smtp"])
        c.reply()
        c.cmd("EHLO client.example.net", 250)
        code, text = c.cmd("MAIL FROM:<x@cancel.timeout.example.net>")
        check(code == 451 and text[0].startswith("4.3.0"), "%d %r" % (code, text))
        d.wait_log("SPF check of x@cancel.timeout.example.net abandoned: check cancelled", timeout=5)
        c.cmd("QUIT", 221)
        d.finish()
    finally:
        d.close()


def test_daemon_clean_exit():
    D.finish()
    D.close()
    DNS.close()


if __name__ == "__main__":
    run_tests([test_pass_delivered_with_headers, test_fail_rejected, test_temperror_deferred_and_softfail_tagged,
               test_second_transaction_has_its_own_result, test_authenticated_session_not_checked,
               test_dns_silence_and_client_leaving, test_hook_timeout_cancels_check_and_trusted_networks,
               test_daemon_clean_exit])
