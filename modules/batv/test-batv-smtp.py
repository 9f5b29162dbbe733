# SPDX-License-Identifier: MIT
"""batv end to end: the real daemon with storage-sqlite, smtp-server, batv and relay-sender.
Bounces to signed, tampered, expired and untagged addresses; keys across a reload; outbound
signing through relay-sender to a scripted SMTP peer, with an excluded destination."""

import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import re
import signal
import smtplib
import ssl
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("top_srcdir") or os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
_spec = importlib.util.spec_from_file_location("smtp_common",
                                               os.path.join(SRC, "tests", "integration", "test-smtp-common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)
from pbtest import TIMEOUT, ScriptedPeer, check, mode_of, run_tests, wait_for  # noqa: E402

DOMAIN = common.DOMAIN
BOB = "bob@%s" % DOMAIN
ALICE = "alice@%s" % DOMAIN


def batv_daemon(batv_conf="", start_extra=None, core_extra=""):
    d = common.SmtpDaemon(core_extra=core_extra, start=False)
    d.write("61-batv.conf", "[module batv]\n" + batv_conf)
    if start_extra:
        start_extra(d)
    d.start()
    d.cli("domain", "add", DOMAIN)
    for user in ("bob", "alice"):
        d.cli("user", "add", "%s@%s" % (user, DOMAIN), input=common.PASSWORD + "\n")
    # The first key signs once it is on disk.
    wait_for("the first key to be saved", lambda: "active" in d.cli("batv", "keys").stdout
             and "not saved" not in d.cli("batv", "keys").stdout)
    return d


def key_file(d):
    return os.path.join(d.state, "batv", "keys")


def read_keys(d):
    """{number: (created, secret bytes)} from the state file, as a third party reads it."""
    keys = {}
    with open(key_file(d)) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                number, created, secret = line.split()
                keys[int(number)] = (int(created), bytes.fromhex(secret))
    return keys


def make_tag(secret, number, day, address):
    """draft-levine-smtp-batv-01 §4.1, computed here independently of the module."""
    local, domain = address.rsplit("@", 1)
    ddd = "%d%03d" % (number, day % 1000)
    mac = hmac.new(secret, (ddd + local + "@" + domain.lower()).encode(), hashlib.sha1).hexdigest()[:6]
    return "prvs=%s%s=%s" % (ddd, mac, address)


def today():
    return int(time.time()) // 86400


def bounce(d, rcpt, sender=""):
    """One message; returns the RCPT reply (code, text) and delivers when accepted."""
    c = common.SmtpClient(d.ports["smtp"])
    try:
        c.reply()
        c.cmd("EHLO client.test", 250)
        c.cmd("MAIL FROM:<%s>" % sender, 250)
        code, text = c.cmd("RCPT TO:<%s>" % rcpt)
        if code == 250:
            c.cmd("DATA", 354)
            c.cmd("Subject: delivery report\r\n\r\nyour message could not be delivered\r\n.", 250)
        c.cmd("QUIT", 221)
        return code, " ".join(text)
    finally:
        c.sock.close()


def mailbox_headers(d, user):
    with contextlib.closing(d.db()) as db:
        return [r[0] for r in db.execute("SELECT headers FROM mailbox WHERE user = ? ORDER BY uid", (user,))]


def test_bounces_and_keys():
    d = batv_daemon()
    try:
        check(mode_of(key_file(d)) == 0o600, "key file mode %o" % mode_of(key_file(d)))
        check(mode_of(os.path.dirname(key_file(d))) == 0o700, "key directory is not 0700")
        keys = read_keys(d)
        check(list(keys) == [0], keys)

        signed = d.cli("batv", "sign", BOB).stdout.strip()
        check(re.fullmatch(r"prvs=0\d{3}[0-9a-f]{6}=" + re.escape(BOB), signed), signed)
        # The module's HMAC is the draft's: the same tag from the key in the state file.
        check(signed == make_tag(keys[0][1], 0, today() + 7, BOB), "tag differs from Python's: %s" % signed)
        out = d.cli("batv", "verify", signed).stdout.splitlines()
        check(out[0] == "valid " + BOB, out)
        check(d.cli("batv", "verify", BOB).stdout.splitlines()[0] == "unsigned " + BOB, "unsigned")
        d.cli("batv", "verify", "not an address", expect=1)
        d.cli("batv", "sign", signed, expect=1)

        # A bounce to a valid tag lands in bob's mailbox, untagged.
        code, text = bounce(d, signed)
        check(code == 250 and signed in text, (code, text))
        d.wait_count("bob", 1)
        headers = mailbox_headers(d, BOB)
        check("Delivered-To: %s\r\n" % BOB in headers[0] and "Return-Path: <>" in headers[0], headers)
        check("prvs=" not in headers[0], headers)
        # The domain is case-insensitive.
        upper = signed[:-len(DOMAIN)] + DOMAIN.upper()
        check(bounce(d, upper)[0] == 250, "upper-case domain refused")
        d.wait_count("bob", 2)

        # Tampered signature, local part, day: 550 5.7.1.
        mac = signed[9:15]
        tampered = signed[:9] + ("0" if mac[0] != "0" else "1") + signed[10:]
        for bad in (tampered, signed.replace("=bob@", "=alice@"), signed[:6] + "%03d" % ((int(signed[6:9]) + 1) % 1000) + signed[9:],
                    "prvs=7" + signed[6:], "prvs=0123=" + BOB):
            code, text = bounce(d, bad)
            check(code == 550 and "5.7.1" in text and "Invalid BATV tag" in text, (bad, code, text))
            check(d.cli("batv", "verify", bad).stdout.split()[0] == "bad", bad)
        # Expired: made here with the key from the state file, one day past.
        expired = make_tag(keys[0][1], 0, today() - 1, ALICE)
        code, text = bounce(d, expired)
        check(code == 550 and "5.7.1" in text and "Expired BATV tag" in text, (code, text))
        check(d.cli("batv", "verify", expired).stdout.splitlines()[0] == "expired " + ALICE, "verify expired")
        # Made here for alice, valid: accepted, which cross-checks the HMAC once more.
        check(bounce(d, make_tag(keys[0][1], 0, today() + 3, ALICE))[0] == 250, "python-made tag refused")
        d.wait_count("alice", 1)

        # A real sender writing to a tagged address (an auto-responder): untagged, delivered,
        # even with a tag that does not verify.
        check(bounce(d, signed, sender="robot@remote.example")[0] == 250, "reply to tagged address refused")
        check(bounce(d, tampered, sender="robot@remote.example")[0] == 250, "reply to bad tag refused")
        d.wait_count("bob", 4)
        # Untagged bounces pass while reject-unsigned-bounces is off.
        check(bounce(d, BOB)[0] == 250, "untagged bounce refused with reject-unsigned-bounces off")
        d.wait_count("bob", 5)
        # A tagged address that is not local is none of batv's business: relaying is refused as usual.
        code, text = bounce(d, "prvs=0123abcdef=someone@remote.example")
        check(code == 550 and "Relaying" in text, (code, text))

        # Rotation: key 1 signs, key 0's tags still verify.
        out = d.cli("batv", "rotate").stdout
        check("key 1 signs" in out, out)
        check(sorted(read_keys(d)) == [0, 1], read_keys(d))
        listing = d.cli("batv", "keys").stdout
        check(re.search(r"key 0 .* verifies until", listing) and re.search(r"key 1 .* active", listing), listing)
        check("secret" not in listing.lower() and keys[0][1].hex() not in listing, "keys lists a secret")
        new = d.cli("batv", "sign", BOB).stdout.strip()
        check(new.startswith("prvs=1"), new)
        check(bounce(d, signed)[0] == 250 and bounce(d, new)[0] == 250, "old or new key refused")
        d.wait_count("bob", 7)

        # A reload builds a new instance: same keys from the file, and reject-unsigned-bounces on.
        before = open(key_file(d)).read()
        d.write("61-batv.conf", "[module batv]\nreject-unsigned-bounces = true\nexclude-senders = %s\n" % ALICE)
        d.signal(signal.SIGHUP)
        d.wait_log("configuration generation 2 is running")
        check(open(key_file(d)).read() == before, "the reload changed the key file")
        check(d.cli("batv", "verify", signed).stdout.startswith("valid "), "old tag invalid after reload")
        check(d.cli("batv", "verify", new).stdout.startswith("valid "), "new tag invalid after reload")
        code, text = bounce(d, BOB)
        check(code == 550 and "5.7.1" in text and "Unsigned bounce" in text, (code, text))
        check(bounce(d, new)[0] == 250, "signed bounce refused after reload")
        check(bounce(d, ALICE)[0] == 250, "bounce to an excluded sender refused")
        check(bounce(d, BOB, sender="friend@remote.example")[0] == 250, "normal mail refused")
        code, text = bounce(d, "nobody@%s" % DOMAIN)
        check(code == 550 and "5.1.1" in text, "unknown user: %s %s" % (code, text))
        d.wait_count("bob", 9)

        # A restart keeps the keys too.
        check(d.stop() == 0, "stop")
        d.notify.close()
        os.unlink(os.path.join(d.tmp, "notify.sock"))
        d.start()
        check(d.cli("batv", "verify", new).stdout.startswith("valid "), "tag invalid after restart")
        check(open(key_file(d)).read() == before, "the restart changed the key file")
        d.finish()
    finally:
        d.close()


def test_outbound_signing():
    peer = None

    def relay(d):
        nonlocal peer
        peer = ScriptedPeer(d.tmp)
        d.write("50-relay-sender.conf", "[module relay-sender]\n[relay-server peer]\naddress = 127.0.0.1:%d\n"
                "security = none\n" % peer.port)

    d = batv_daemon("exclude-destinations = *.lists.example, excluded.example\n", start_extra=relay,
                    core_extra="retry-schedule = 1s\nqueue-scan-interval = 1s\n")
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", d.ports["submission"], timeout=TIMEOUT) as s:
            s.starttls(context=ctx)
            s.login(BOB, common.PASSWORD)
            for rcpt in ("friend@remote.example", "someone@excluded.example", "member@x.lists.example"):
                refused = s.sendmail(BOB, [rcpt], "Subject: to %s\r\n\r\nhello\r\n" % rcpt)
                check(refused == {}, refused)
        msgs = wait_for("three messages at the peer", lambda: len(peer.messages()) >= 3 and peer.messages())
        senders = {}
        for m in msgs:
            rcpt = re.search(r"<([^>]*)>", m["rcpts"][0]).group(1)
            senders[rcpt] = re.search(r"<([^>]*)>", m["mail"]).group(1)
        signed = senders["friend@remote.example"]
        check(re.fullmatch(r"prvs=0\d{3}[0-9a-f]{6}=" + re.escape(BOB), signed), senders)
        check(d.cli("batv", "verify", signed).stdout.splitlines()[0] == "valid " + BOB, "peer's sender invalid")
        check(senders["someone@excluded.example"] == BOB, senders)
        check(senders["member@x.lists.example"] == BOB, senders)
        # The remote server's bounce to the signed sender comes back in.
        check(bounce(d, signed)[0] == 250, "bounce to the signed sender refused")
        d.wait_count("bob", 1)
        d.finish()
    finally:
        if peer is not None:
            peer.close()
        d.close()


def test_bad_config():
    import subprocess
    from pbtest import PILLARBOXD
    d = common.SmtpDaemon(start=False)
    try:
        for text, error in (
                ("exclude-senders = bob@example.org, a b\n",
                 "61-batv.conf:1: [module batv]: exclude-senders: 'a b' is not an address, a domain or *.domain"),
                ("exclude-destinations = x@lists.example\n",
                 "61-batv.conf:1: [module batv]: exclude-destinations: 'x@lists.example' is not a domain or *.domain"),
                ("tag-validity = 1000\n", "61-batv.conf:2: tag-validity: '1000' is out of range (from 1 to 365)")):
            d.write("61-batv.conf", "[module batv]\n" + text)
            p = subprocess.run([PILLARBOXD, "--check-config", "-c", d.conf, "--state-dir", d.state],
                               capture_output=True, text=True, timeout=TIMEOUT)
            check(p.returncode != 0 and error in p.stderr, (text, p.returncode, p.stderr))
        check(not os.path.exists(os.path.join(d.state, "batv")), "--check-config wrote keys")
    finally:
        d.close()


if __name__ == "__main__":
    run_tests([test_bounces_and_keys, test_outbound_signing, test_bad_config])
