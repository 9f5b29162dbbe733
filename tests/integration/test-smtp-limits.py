# SPDX-License-Identifier: MIT
"""smtp-server limits and policies with short settings: message size (at MAIL and while streaming,
DATA and BDAT), recipients, command and data timeouts, max errors, require-auth with trusted
networks, HELO syntax, line length, and bare LF rejection."""

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
TRUSTED = "127.0.0.2"


def daemon():
    global D
    if D is None:
        D = common.SmtpDaemon(smtp_extra="max-message-size = 2K\nmax-recipients = 2\ncommand-timeout = 2s\n"
                                         "data-timeout = 2s\nmax-errors = 5\nrequire-auth = true\n"
                                         "trusted-networks = %s\ncheck-helo-syntax = true\n"
                                         "max-line-length = 512\n" % TRUSTED)
    return D


def trusted_client():
    c = SmtpClient(daemon().ports["smtp"], source=TRUSTED)
    check(c.reply()[0] == 220, "greeting")
    c.cmd("EHLO trusted.example", 250)
    return c


def test_size_at_mail_and_while_streaming():
    d = daemon()
    before = len(d.messages())
    c = trusted_client()
    code, text = c.cmd("MAIL FROM:<a@remote.example> SIZE=5000")
    check(code == 552 and text == ["5.2.3 Message exceeds fixed maximum message size"], "%d %r" % (code, text))
    c.cmd("MAIL FROM:<a@remote.example> SIZE=1000", 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    c.cmd("DATA", 354)
    c.send("Subject: big\r\n\r\n" + ("x" * 70 + "\r\n") * 60 + ".\r\n")
    code, text = c.reply()
    check(code == 552 and text[0].startswith("5.2.3"), "%d %r" % (code, text))
    # BDAT over the limit: every chunk is read, the one that crosses the limit is refused.
    c.cmd("MAIL FROM:<a@remote.example>", 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    chunk = b"y" * 1500
    c.send(b"BDAT 1500\r\n" + chunk + b"BDAT 1500 LAST\r\n" + chunk + b"NOOP\r\n")
    check(c.reply()[0] == 250, "first chunk")
    code, text = c.reply()
    check(code == 552 and text[0].startswith("5.2.3"), "second chunk: %d %r" % (code, text))
    check(c.reply()[0] == 250, "NOOP after the chunks")
    # The session is still usable for a message that fits.
    c.cmd("MAIL FROM:<a@remote.example>", 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    c.cmd("DATA", 354)
    code, text = c.cmd("Subject: small\r\n\r\nfits\r\n.")
    check(code == 250, "%d %r" % (code, text))
    c.cmd("QUIT", 221)
    check(len(d.messages()) == before + 1, "only the small message is stored")


def test_max_recipients():
    c = trusted_client()
    c.cmd("MAIL FROM:<a@remote.example>", 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    c.cmd("RCPT TO:<alice@example.org>", 250)
    code, text = c.cmd("RCPT TO:<postmaster@example.org>")
    check(code == 452 and text[0].startswith("4.5.3"), "%d %r" % (code, text))
    c.cmd("QUIT", 221)


def test_require_auth_and_trusted_networks():
    c = SmtpClient(daemon().ports["smtp"])
    c.reply()
    c.cmd("EHLO untrusted.example", 250)
    code, text = c.cmd("MAIL FROM:<a@remote.example>")
    check(code == 530 and text[0].startswith("5.7.0"), "%d %r" % (code, text))
    c.cmd("QUIT", 221)
    c = trusted_client()
    c.cmd("MAIL FROM:<a@remote.example>", 250)
    c.cmd("RCPT TO:<someone@elsewhere.example>", 250)   # trusted: may relay
    c.cmd("QUIT", 221)


def test_helo_syntax_and_line_length():
    c = SmtpClient(daemon().ports["smtp"], source=TRUSTED)
    c.reply()
    code, text = c.cmd("EHLO under_score.example")
    check(code == 501 and text[0].startswith("5.5.2"), "%d %r" % (code, text))
    c.cmd("EHLO [127.0.0.2]", 250)
    code, text = c.cmd("NOOP " + "z" * 600)
    check(code == 500 and text[0].startswith("5.5.2"), "%d %r" % (code, text))
    c.cmd("NOOP " + "z" * 400, 250)
    c.cmd("QUIT", 221)


def test_command_timeout():
    c = SmtpClient(daemon().ports["smtp"])
    c.reply()
    c.cmd("EHLO slow.example", 250)
    t0 = time.time()
    code, text = c.reply()
    waited = time.time() - t0
    check(code == 421 and text[0].startswith("4.4.2"), "%d %r" % (code, text))
    check(1.5 < waited < 6, "timed out after %.1f s (command-timeout = 2s)" % waited)
    check(c.closed(), "not closed after the timeout")


def test_data_timeout():
    d = daemon()
    before = len(d.messages())
    c = trusted_client()
    c.cmd("MAIL FROM:<a@remote.example>", 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    c.cmd("DATA", 354)
    c.send("Subject: stalled\r\n\r\npart")
    code, text = c.reply()
    check(code == 421 and text[0].startswith("4.4.2"), "%d %r" % (code, text))
    check(c.closed(), "not closed after the data timeout")
    check(len(d.messages()) == before, "a stalled message was stored")


def test_max_errors():
    c = SmtpClient(daemon().ports["smtp"])
    c.reply()
    for i in range(4):
        check(c.cmd("BOGUS %d" % i)[0] == 500, "error %d" % i)
    code, text = c.cmd("BOGUS 5")
    check(code == 500, "fifth error: %d" % code)
    code, text = c.reply()
    check(code == 421 and text[0].startswith("4.7.0"), "%d %r" % (code, text))
    check(c.closed(), "not closed after max-errors")


def test_bare_lf_reject():
    d = common.SmtpDaemon(smtp_extra="bare-lf = reject\n", users=("bob",))
    try:
        c = SmtpClient(d.ports["smtp"])
        c.reply()
        c.send("EHLO lf.example\n")
        code, text = c.reply()
        check(code == 521 and text[0].startswith("5.5.2"), "%d %r" % (code, text))
        check(c.closed(), "not closed after a bare LF command")
        c = SmtpClient(d.ports["smtp"])
        c.reply()
        c.cmd("EHLO lf.example", 250)
        c.cmd("MAIL FROM:<a@remote.example>", 250)
        c.cmd("RCPT TO:<bob@example.org>", 250)
        c.cmd("DATA", 354)
        c.send("Subject: lf\r\n\r\nhello\n.\nMAIL FROM:<evil@remote.example>\r\n.\r\n")
        code, text = c.reply()
        check(code == 521 and text[0].startswith("5.5.2"), "%d %r" % (code, text))
        check(c.closed(), "not closed after bare LF in content")
        check(len(d.messages()) == 0, "a message with bare LF was stored")
        d.finish()
    finally:
        d.close()


def test_zz_clean_exit():
    global D
    if D is not None:
        d, D = D, None
        try:
            d.finish()
        finally:
            d.close()


if __name__ == "__main__":
    run_tests([test_size_at_mail_and_while_streaming, test_max_recipients, test_require_auth_and_trusted_networks,
               test_helo_syntax_and_line_length, test_command_timeout, test_data_timeout, test_max_errors,
               test_bare_lf_reject, test_zz_clean_exit])
