# SPDX-License-Identifier: MIT
"""smtp-server over real sockets: EHLO, delivery into storage, replies and their codes, pipelining,
BDAT, dot-stuffing and end-of-data look-alikes, relay refusal, unknown users, VRFY/EXPN, HELO checks,
oversize lines, clients that vanish, and SIGTERM."""

import importlib.util
import os
import re
import signal
import smtplib
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
_spec = importlib.util.spec_from_file_location("smtp_common", os.path.join(HERE, "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

from pbtest import Failure, check, run_tests  # noqa: E402

SmtpClient = common.SmtpClient
message = common.message

# One daemon for the tests that do not need settings of their own.
D = None

# Replies that RFC 2034 §3 / RFC 5321 §4.2 leave without an enhanced code:
# the greeting, replies to HELO/EHLO (they start with the domain), 3xx.
CODE_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3} ")


def daemon():
    global D
    if D is None:
        D = common.SmtpDaemon(smtp_extra="vrfy-expn-from = 127.0.0.2\nrefuse-helo = spammer, bad.example\n"
                                         "max-errors = 100\n")
    return D


def connect(port_name="smtp", **kw):
    c = SmtpClient(daemon().ports[port_name], **kw)
    code, text = c.reply()
    check(code == 220, "greeting %d %s" % (code, text))
    return c


def test_greeting_and_ehlo():
    c = SmtpClient(daemon().ports["smtp"])
    code, text = c.reply()
    check(code == 220 and text == ["mx.test.example ESMTP Pillarbox"], "greeting %d %r" % (code, text))
    code, lines = c.cmd("EHLO client.example", 250)
    check(lines[0].startswith("mx.test.example "), lines[0])
    ext = [l.split()[0] for l in lines[1:]]
    for want in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS", "SMTPUTF8", "DSN",
                 "CHUNKING"):
        check(want in ext, "EHLO lacks %s: %r" % (want, lines))
    check("SIZE 26214400" in lines, "SIZE: %r" % lines)
    check("AUTH" not in ext, "AUTH offered without TLS: %r" % lines)
    code, lines = c.cmd("HELO client.example", 250)
    check(lines == ["mx.test.example"], lines)
    c.cmd("QUIT", 221)
    check(c.closed(), "not closed after QUIT")


def test_deliver_smtplib():
    d = daemon()
    before = d.count("bob")
    with smtplib.SMTP("127.0.0.1", d.ports["smtp"], timeout=20) as s:
        s.ehlo("client.example")
        code, resp = s.mail("sender@remote.example")
        check(code == 250 and resp.startswith(b"2.1.0"), resp)
        code, resp = s.rcpt("bob@example.org")
        check(code == 250 and resp.startswith(b"2.1.5"), resp)
        code, resp = s.data(message("smtplib").encode())
        check(code == 250, "%d %r" % (code, resp))
        m = re.match(rb"2\.0\.0 Ok: queued as (\S+)$", resp)
        check(m is not None, resp)
    qid = m.group(1).decode()
    d.wait_count("bob", before + 1)
    stored = d.message(qid)
    check(stored is not None, "no message %s in storage" % qid)
    head, _, rest = stored.partition(b"From: <sender@remote.example>")
    check(head.startswith(b"Received: from client.example ([127.0.0.1])\r\n"), head)
    check(b"by mx.test.example (Pillarbox) with ESMTP id s" in head, head)
    check(b"for <bob@example.org>;" in head, head)
    check(rest.endswith(b"Hello.\r\n"), rest)


def test_every_reply_has_an_enhanced_code():
    c = connect()
    replies = []

    def run(line):
        code, text = c.cmd(line)
        replies.append((line, code, text))
        return code

    run("EHLO x.example")
    for line in ("NOOP", "HELP", "RSET", "VRFY bob@example.org", "EXPN staff", "FOO", "MAIL FROM:<bad",
                 "RCPT TO:<bob@example.org>", "DATA", "MAIL FROM:<a@remote.example>", "MAIL FROM:<b@remote.example>",
                 "RCPT TO:<nobody@example.org>", "RCPT TO:<x@elsewhere.example>", "RCPT TO:<bob@example.org> XX=1",
                 "AUTH PLAIN", "STARTTLS now", "BDAT x", "RSET"):
        run(line)
    c.cmd("QUIT", 221)
    for line, code, text in replies[1:]:
        check(CODE_RE.match(text[-1]) is not None, "%r: %d %r has no enhanced code" % (line, code, text))
        check(text[-1][0] == str(code)[0], "%r: class of %d %r" % (line, code, text))


def test_pipelining_in_one_write():
    d = daemon()
    before = d.count("bob")
    c = connect()
    body = "Subject: pipelined\r\n\r\nline 1\r\n..starts with a dot\r\n"
    # RFC 2920: everything up to DATA in one write, then the content and more commands in another.
    c.send("EHLO pipe.example\r\nMAIL FROM:<p@remote.example>\r\nRCPT TO:<bob@example.org>\r\n"
           "RCPT TO:<nobody@example.org>\r\nRCPT TO:<r@elsewhere.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    codes = [c.reply()[0] for _ in range(7)]
    check(codes == [250, 250, 250, 550, 550, 250, 354], codes)
    c.send(body + ".\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
    code, text = c.reply()
    check(code == 250 and "queued as" in text[0], "%d %r" % (code, text))
    codes = [c.reply()[0] for _ in range(3)]
    check(codes == [250, 250, 354], codes)
    c.send("second\r\n.\r\nQUIT\r\n")
    check(c.reply()[0] == 250, "second message")
    check(c.reply()[0] == 221, "QUIT")
    d.wait_count("bob", before + 2)
    qids = list(d.messages().items())
    check(any(b"\r\n.starts with a dot\r\n" in m for _, m in qids), "dot-unstuffing")


def test_everything_in_one_write():
    """A client that does not wait for 354: the whole session in one segment."""
    d = daemon()
    before = d.count("alice")
    c = connect()
    c.send("EHLO hasty.example\r\nMAIL FROM:<h@remote.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
           "Subject: one write\r\n\r\nbody\r\n.\r\nMAIL FROM:<h@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
           "BDAT 6 LAST\r\nchunk\nQUIT\r\n")
    codes = [c.reply()[0] for _ in range(9)]
    check(codes == [250, 250, 250, 354, 250, 250, 250, 250, 221], codes)
    check(c.closed(), "not closed after QUIT")
    d.wait_count("alice", before + 2)


def test_bdat():
    d = daemon()
    before = d.count("alice")
    c = connect()
    part1 = b"Subject: chunks\r\n\r\nfirst part, "
    part2 = b"second part\r\n.\r\nnot an end\r\n"
    c.send(b"EHLO chunky.example\r\nMAIL FROM:<c@remote.example> BODY=8BITMIME\r\nRCPT TO:<alice@example.org>\r\n"
           b"BDAT %d\r\n%sBDAT %d LAST\r\n%sNOOP\r\n" % (len(part1), part1, len(part2), part2))
    codes = []
    for _ in range(6):
        code, text = c.reply()
        codes.append(code)
    check(codes == [250, 250, 250, 250, 250, 250], codes)
    d.wait_count("alice", before + 1)
    check(any(m.endswith(part1 + part2) for m in d.messages().values()), "BDAT content not stored as sent")
    # BDAT without MAIL: the chunk is read, then refused; the session goes on.
    c.send(b"BDAT 6\r\nQUIT\r\n")
    code, text = c.reply()
    check(code == 503 and text[0].startswith("5.5.1"), "%d %r" % (code, text))
    c.cmd("QUIT", 221)


def test_end_of_data_lookalikes():
    """SMTP smuggling: <LF>.<LF>, <LF>.<CR><LF> and <CR>.<CR> never end a message."""
    d = daemon()
    before = d.count("bob")
    c = connect()
    c.cmd("EHLO smuggler.example", 250)
    c.cmd("MAIL FROM:<s@remote.example>", 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    c.cmd("DATA", 354)
    smuggled = ("Subject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<evil@remote.example>\n"
                "x\n.\r\nRCPT TO:<alice@example.org>\r\ny\r.\rDATA\r\nend\r\n.\r\n")
    c.send(smuggled)
    code, text = c.reply()
    check(code == 250 and "queued as" in text[0], "%d %r" % (code, text))
    c.cmd("QUIT", 221)
    d.wait_count("bob", before + 1)
    stored = [m for m in d.messages().values() if b"Subject: smuggle" in m]
    check(len(stored) == 1, "smuggled message count %d" % len(stored))
    m = stored[0]
    check(b"MAIL FROM:<evil@remote.example>" in m and b"RCPT TO:<alice@example.org>" in m, m)
    check(re.search(rb"[^\r]\n|\r[^\n]", m) is None, "bare CR or LF stored: %r" % m)


def test_relay_and_unknown():
    c = connect()
    c.cmd("EHLO relay.example", 250)
    c.cmd("MAIL FROM:<a@remote.example>", 250)
    code, text = c.cmd("RCPT TO:<victim@elsewhere.example>")
    check(code == 550 and text == ["5.7.1 Relaying not allowed"], "%d %r" % (code, text))
    code, text = c.cmd("RCPT TO:<nobody@example.org>")
    check(code == 550 and text[0].startswith("5.1.1"), "%d %r" % (code, text))
    code, text = c.cmd("RCPT TO:<postmaster@example.org>")
    check(code in (250, 451), "postmaster: %d %r" % (code, text))
    c.cmd("RCPT TO:<BOB@Example.ORG>", 250)
    c.cmd("QUIT", 221)
    log = daemon().read_log()
    check("relay to <victim@elsewhere.example>" in log and "unknown recipient <nobody@example.org>" in log, log[-2000:])


def test_sequence_errors():
    c = connect()
    code, text = c.cmd("MAIL FROM:<a@remote.example>")
    check(code == 503 and text[0].startswith("5.5.1"), "%d %r" % (code, text))
    c.cmd("EHLO seq.example", 250)
    check(c.cmd("RCPT TO:<bob@example.org>")[0] == 503, "RCPT before MAIL")
    check(c.cmd("DATA")[0] == 503, "DATA before MAIL")
    c.cmd("MAIL FROM:<a@remote.example>", 250)
    check(c.cmd("MAIL FROM:<a@remote.example>")[0] == 503, "nested MAIL")
    code, text = c.cmd("DATA")
    check(code == 554 and text[0].startswith("5.5.1"), "DATA without RCPT: %d %r" % (code, text))
    c.cmd("RSET", 250)
    check(c.cmd("MAIL FROM:<a@remote.example> SIZE=10 SIZE=11")[0] == 501, "duplicate parameter")
    check(c.cmd("MAIL FROM:<a@remote.example> FOO=BAR")[0] == 555, "unknown parameter")
    c.cmd("HELO old.example", 250)
    check(c.cmd("MAIL FROM:<a@remote.example> SIZE=10")[0] == 555, "parameters after HELO")
    c.cmd("QUIT", 221)


def test_vrfy_expn():
    c = connect()
    code, text = c.cmd("VRFY bob@example.org")
    check(code == 252 and text[0].startswith("2.5.0"), "%d %r" % (code, text))
    code, text = c.cmd("EXPN staff@example.org")
    check(code == 502 and text[0].startswith("5.5.1"), "%d %r" % (code, text))
    c.cmd("QUIT", 221)
    # From an address in vrfy-expn-from.
    c = SmtpClient(daemon().ports["smtp"], source="127.0.0.2")
    c.reply()
    code, text = c.cmd("VRFY <bob@example.org>")
    check(code == 250 and text[0] == "2.1.5 <bob@example.org>", "%d %r" % (code, text))
    code, text = c.cmd("VRFY nobody@example.org")
    check(code == 550 and text[0].startswith("5.1.1"), "%d %r" % (code, text))
    code, text = c.cmd("EXPN bob@example.org")
    check(code == 250 and text == ["2.1.5 <bob@example.org>"], "%d %r" % (code, text))
    c.cmd("QUIT", 221)


def test_helo_checks():
    c = connect()
    code, text = c.cmd("EHLO mail.spammer.example")
    check(code == 550 and text[0].startswith("5.7.1"), "%d %r" % (code, text))
    check(c.cmd("MAIL FROM:<a@remote.example>")[0] == 503, "MAIL after a refused HELO")
    code, text = c.cmd("EHLO")
    check(code == 501, "empty EHLO: %d" % code)
    c.cmd("EHLO good.example", 250)
    c.cmd("QUIT", 221)


def test_oversize_and_garbage_lines():
    c = connect()
    c.cmd("EHLO long.example", 250)
    code, text = c.cmd("NOOP " + "x" * 5000)
    check(code == 500 and text[0].startswith("5.5.2"), "%d %r" % (code, text))
    code, text = c.cmd("NO\x00OP")
    check(code == 500, "NUL: %d" % code)
    c.send(b"\xff\xfe\r\n")
    check(c.reply()[0] == 500, "binary garbage")
    c.cmd("NOOP", 250)
    c.cmd("QUIT", 221)


def test_disconnect_mid_data():
    d = daemon()
    before = len(d.messages())
    c = connect()
    c.cmd("EHLO gone.example", 250)
    c.cmd("MAIL FROM:<g@remote.example>", 250)
    c.cmd("RCPT TO:<bob@example.org>", 250)
    c.cmd("DATA", 354)
    c.send("Subject: half\r\n\r\nhalf a message")
    c.close()
    time.sleep(0.5)
    check(len(d.messages()) == before, "a message the client never finished was stored")
    # The server is still fine.
    c = connect()
    c.cmd("NOOP", 250)
    c.cmd("QUIT", 221)


def test_reset_while_committing():
    """A client that resets the connection right after the end of the data still gets its
    message stored (RFC 5321 §6.1: a duplicate is better than a loss)."""
    d = daemon()
    before = d.count("alice")
    for i in range(5):
        c = connect()
        c.cmd("EHLO reset.example", 250)
        c.cmd("MAIL FROM:<r@remote.example>", 250)
        c.cmd("RCPT TO:<alice@example.org>", 250)
        c.cmd("DATA", 354)
        c.send("Subject: reset %d\r\n\r\nbody\r\n.\r\n" % i)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    d.wait_count("alice", before + 5)


def test_sigterm_says_421():
    d = common.SmtpDaemon(users=())
    try:
        c = SmtpClient(d.ports["smtp"])
        c.reply()
        c.cmd("EHLO idle.example", 250)
        d.signal(signal.SIGTERM)
        code, text = c.reply()
        check(code == 421 and text[0].startswith("4.3.2"), "%d %r" % (code, text))
        check(c.closed(), "not closed after 421")
        check(d.proc.wait(20) == 0, "exit status")
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
    run_tests([test_greeting_and_ehlo, test_deliver_smtplib, test_every_reply_has_an_enhanced_code,
               test_pipelining_in_one_write, test_everything_in_one_write, test_bdat, test_end_of_data_lookalikes, test_relay_and_unknown,
               test_sequence_errors, test_vrfy_expn, test_helo_checks, test_oversize_and_garbage_lines,
               test_disconnect_mid_data, test_reset_while_committing, test_sigterm_says_421, test_zz_clean_exit])
