# SPDX-License-Identifier: MIT
"""smtp-server's policy stages with a module that answers every stage asynchronously
(modules/smtp-server/test-smtp-policy.c): the stages run in order, refusals and deferrals become
the right replies, headers added at data-end reach the stored message, and a hook that never
answers gives 451 4.3.0 after core.hook-timeout instead of a hang."""

import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
_spec = importlib.util.spec_from_file_location("smtp_common", os.path.join(HERE, "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

from pbtest import check, run_tests  # noqa: E402

SmtpClient = common.SmtpClient
D = None


def daemon():
    global D
    if D is None:
        D = common.SmtpDaemon(core_extra="hook-timeout = 1s\n", smtp_extra="max-errors = 100\n", start=False)
        D.write("50-smtp-test-policy.conf", "[module smtp-test-policy]\n")
        D.start()
        D.cli("domain", "add", common.DOMAIN)
        D.cli("user", "add", "bob@" + common.DOMAIN, input=common.PASSWORD + "\n")
    return D


def client():
    c = SmtpClient(daemon().ports["smtp"])
    check(c.reply()[0] == 220, "greeting")
    return c


def test_stages_in_order_and_headers():
    d = daemon()
    c = client()
    c.cmd("EHLO ok.example", 250)
    c.cmd("MAIL FROM:<fine@remote.example>", 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    c.cmd("DATA", 354)
    code, text = c.cmd("Subject: stages\r\n\r\nbody\r\n.")
    check(code == 250, "%d %r" % (code, text))
    qid = text[0].split()[-1]
    c.cmd("QUIT", 221)
    stored = d.message(qid)
    check(stored.startswith(b"X-Policy-Stages: helo,mail-from,rcpt-to,data-start\r\nReceived: "), stored[:300])


def test_refusals_at_each_stage():
    c = client()
    code, text = c.cmd("EHLO reject-helo.example")
    check(code == 550 and text == ["5.7.1 policy fixture says no at helo"], "%d %r" % (code, text))
    check(c.cmd("MAIL FROM:<a@remote.example>")[0] == 503, "refused HELO still counted")
    c.cmd("EHLO ok.example", 250)
    code, text = c.cmd("MAIL FROM:<tempfail-mail-from@remote.example>")
    check(code == 450 and text[0].startswith("4.7.1"), "%d %r" % (code, text))
    c.cmd("MAIL FROM:<reject-data-start@remote.example>", 250)
    code, text = c.cmd("RCPT TO:<reject-rcpt-to@example.org>")
    check(code == 550, "RCPT: %d %r" % (code, text))
    c.cmd("RCPT TO:<bob@example.org>", 250)
    code, text = c.cmd("DATA")
    check(code == 550 and "data-start" in text[0], "DATA: %d %r" % (code, text))
    c.cmd("RSET", 250)
    c.cmd("MAIL FROM:<reject-data-end@remote.example>", 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    c.cmd("DATA", 354)
    code, text = c.cmd("Subject: refused at the end\r\n\r\nbody\r\n.")
    check(code == 550 and "data-end" in text[0], "end of data: %d %r" % (code, text))
    # BDAT refused at data-start: the chunk is read, then refused.
    c.cmd("MAIL FROM:<reject-data-start@remote.example>", 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    c.send(b"BDAT 4 LAST\r\nabcdNOOP\r\n")
    code, text = c.reply()
    check(code == 550, "BDAT: %d %r" % (code, text))
    check(c.reply()[0] == 250, "NOOP after the refused chunk")
    c.cmd("MAIL FROM:<disconnect-mail-from@remote.example>", 421)
    check(c.closed(), "not closed after DISCONNECT")


def test_hook_that_never_answers():
    c = client()
    c.cmd("EHLO ok.example", 250)
    t0 = time.time()
    code, text = c.cmd("MAIL FROM:<hang-mail-from@remote.example>")
    waited = time.time() - t0
    check(code == 451 and text[0].startswith("4.3.0"), "%d %r" % (code, text))
    check(0.8 < waited < 5, "answered after %.1f s (hook-timeout = 1s)" % waited)
    c.cmd("MAIL FROM:<fine@remote.example>", 250)
    c.cmd("QUIT", 221)


def test_auth_stage():
    d = daemon()
    c = SmtpClient(d.ports["submission"])
    c.reply()
    c.cmd("EHLO ok.example", 250)
    c.cmd("STARTTLS", 220)
    c.starttls()
    c.cmd("EHLO ok.example", 250)
    c.cmd("AUTH PLAIN " + common.plain_b64("bob@example.org", common.PASSWORD), 235)
    c.cmd("QUIT", 221)
    check("AUTH PLAIN: authenticated as bob@example.org" in d.read_log(), "no AUTH log line")


def test_client_leaves_while_a_hook_thinks():
    c = client()
    c.cmd("EHLO ok.example", 250)
    c.send("MAIL FROM:<hang-mail-from@remote.example>\r\n")
    c.close()
    time.sleep(1.5)
    c = client()
    c.cmd("NOOP", 250)
    c.cmd("QUIT", 221)


def test_zz_clean_exit():
    global D
    if D is not None:
        d, D = D, None
        try:
            d.finish()
        finally:
            d.close()


if __name__ == "__main__":
    run_tests([test_stages_in_order_and_headers, test_refusals_at_each_stage, test_hook_that_never_answers,
               test_auth_stage, test_client_leaves_while_a_hook_thinks, test_zz_clean_exit])
