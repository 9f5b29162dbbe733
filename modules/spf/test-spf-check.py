# SPDX-License-Identifier: MIT
"""`pillarbox spf-check --dns` against a real DNS server (tests/dns-server.py): every example of
RFC 7208 Appendix A with the RFC's answers, then the limits (10 DNS terms, 2 void lookups,
10 MX names), DNS failures and timeouts, redirect, exp=, IPv6 and macros."""

import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # the source tree is read-only under distcheck; leave no __pycache__
import spf_zone  # noqa: E402
from spf_zone import APPENDIX_A, DnsServer, txt  # noqa: E402
from pbtest import PILLARBOXD, TIMEOUT, TOP_BUILDDIR, TOP_SRCDIR, Daemon, check, run_tests  # noqa: E402

D = None
DNS = None


class SpfDaemon(Daemon):
    """pillarboxd from the build tree with only the spf module."""

    def set_core(self, extra=""):
        super().set_core("hostname = mx.example.net.example\n" + extra)
        path = os.path.join(self.conf, "00-core.conf")
        with open(path) as f:
            lines = [l for l in f.read().splitlines() if not l.startswith("module-dir")]
        libs = os.path.join(TOP_BUILDDIR, "modules", ".libs")
        for name in os.listdir(libs):
            if name.endswith(".so"):
                os.chmod(os.path.join(libs, name), 0o755)
        lines.insert(1, "module-dir = %s" % os.path.join(TOP_BUILDDIR, "modules"))
        self.write("00-core.conf", "\n".join(lines) + "\n")


def setup():
    global D, DNS
    if D is None:
        DNS = DnsServer(APPENDIX_A)
        D = SpfDaemon(conf_files={"60-spf.conf": "[module spf]\nlookup-timeout = 2s\n"})
        D.start()
    return D


def spf(ip, sender=None, helo="client.example.net", zone=None, extra=(), expect=0):
    """Runs spf-check; returns (result, second line or None)."""
    d = setup()
    if zone is not None:
        DNS.set_zone(APPENDIX_A + zone)
    args = ["spf-check", "--ip", ip, "--dns", DNS.address]
    if sender is not None:
        args += ["--mail-from", sender]
    if helo is not None:
        args += ["--helo", helo]
    p = d.cli(*(args + list(extra)), expect=expect)
    lines = p.stdout.strip("\n").split("\n")
    return lines[0], (lines[1] if len(lines) > 1 else None)


def expect_all(zone, sender, cases, label):
    """CASES: [(ip, expected result)], all against ZONE."""
    DNS.set_zone(APPENDIX_A + zone)
    for ip, want in cases:
        got, second = spf(ip, sender)
        check(got == want, "%s: %s from %s gave %s (%s), RFC says %s" % (label, sender, ip, got, second, want))


# ---- RFC 7208 Appendix A -----------------------------------------------------------------

def test_a1_simple_examples():
    setup()
    ex = "example.com."
    examples = [
        ("v=spf1 +all", [("192.0.2.1", "pass"), ("10.0.0.4", "pass"), ("2001:db8::1", "pass")]),
        ("v=spf1 a -all", [("192.0.2.10", "pass"), ("192.0.2.11", "pass"), ("192.0.2.65", "fail"),
                           ("192.0.2.129", "fail")]),
        # example.org has no A records: nobody passes.
        ("v=spf1 a:example.org -all", [("192.0.2.10", "fail"), ("192.0.2.140", "fail")]),
        ("v=spf1 mx -all", [("192.0.2.129", "pass"), ("192.0.2.130", "pass"), ("192.0.2.10", "fail"),
                            ("192.0.2.140", "fail")]),
        ("v=spf1 mx:example.org -all", [("192.0.2.140", "pass"), ("192.0.2.129", "fail")]),
        ("v=spf1 mx mx:example.org -all", [("192.0.2.129", "pass"), ("192.0.2.130", "pass"),
                                           ("192.0.2.140", "pass"), ("192.0.2.10", "fail")]),
        ("v=spf1 mx/30 mx:example.org/30 -all", [("192.0.2.128", "pass"), ("192.0.2.131", "pass"),
                                                  ("192.0.2.140", "pass"), ("192.0.2.143", "pass"),
                                                  ("192.0.2.132", "fail"), ("192.0.2.144", "fail"),
                                                  ("192.0.2.10", "fail")]),
        # Reverse DNS valid and in example.com / valid but elsewhere / not valid.
        ("v=spf1 ptr -all", [("192.0.2.65", "pass"), ("192.0.2.140", "fail"), ("10.0.0.4", "fail")]),
        ("v=spf1 ip4:192.0.2.128/28 -all", [("192.0.2.65", "fail"), ("192.0.2.129", "pass")]),
    ]
    for record, cases in examples:
        expect_all(txt(ex, record), "user@example.com", cases, record)


def test_a2_multiple_domains():
    setup()
    zone = (txt("example.org.", "v=spf1 include:example.com include:example.net -all")
            + txt("la.example.org.", "v=spf1 redirect=example.org")
            + txt("ny.example.org.", "v=spf1 redirect=example.org")
            + txt("sf.example.org.", "v=spf1 redirect=example.org")
            # The RFC leaves these two to the reader; any pass/fail record shows the effect.
            + txt("example.com.", "v=spf1 mx -all")
            + txt("example.net.", "v=spf1 a:bob.example.com -all"))
    expect_all(zone, "user@example.org", [("192.0.2.129", "pass"), ("192.0.2.66", "pass"),
                                          ("192.0.2.10", "fail")], "A.2 example.org")
    for name in ("la", "ny", "sf"):
        expect_all(zone, "user@%s.example.org" % name, [("192.0.2.130", "pass"), ("192.0.2.66", "pass"),
                                                        ("192.0.2.65", "fail")], "A.2 " + name)


def test_a3_dnsbl_style():
    setup()
    zone = ("$ORIGIN _spf.example.com.\n"
            "mary.mobile-users                   IN A 127.0.0.2\n"
            "fred.mobile-users                   IN A 127.0.0.2\n"
            "15.15.168.192.joel.remote-users     IN A 127.0.0.2\n"
            "16.15.168.192.joel.remote-users     IN A 127.0.0.2\n"
            "$ORIGIN .\n"
            + txt("example.com.", "v=spf1 mx include:mobile-users._spf.%{d} include:remote-users._spf.%{d} -all")
            + txt("mobile-users._spf.example.com.", "v=spf1 exists:%{l1r+}.%{d}")
            + txt("remote-users._spf.example.com.", "v=spf1 exists:%{ir}.%{l1r+}.%{d}"))
    expect_all(zone, "mary@example.com", [("203.0.113.9", "pass"), ("2001:db8::9", "pass")], "A.3 mary")
    expect_all(zone, "fred+news@example.com", [("198.51.100.1", "pass")], "A.3 fred")
    expect_all(zone, "joel@example.com", [("192.168.15.15", "pass"), ("192.168.15.16", "pass"),
                                          ("192.168.15.17", "fail"), ("203.0.113.9", "fail")], "A.3 joel")
    expect_all(zone, "bob@example.com", [("192.0.2.129", "pass"), ("203.0.113.9", "fail")], "A.3 bob")


def test_a4_multiple_requirements():
    setup()
    common = txt("example.com.", "v=spf1 ", "-include:ip4._spf.%{d} ", "-include:ptr._spf.%{d} ", "+all") \
        + txt("ip4._spf.example.com.", "v=spf1 -ip4:192.0.2.0/24 +all")
    # As corrected by erratum 6216: in 192.0.2.0/24 and reverse DNS valid in example.com.
    fixed = common + txt("ptr._spf.example.com.", "v=spf1 -ptr:example.com +all")
    expect_all(fixed, "user@example.com", [("192.0.2.65", "pass"), ("192.0.2.66", "pass"),
                                           ("192.0.2.140", "fail"), ("10.0.0.4", "fail"),
                                           ("203.0.113.1", "fail")], "A.4 (erratum 6216)")
    # As printed, ptr defaults to ptr._spf.example.com, which no PTR name is under: all fail.
    printed = common + txt("ptr._spf.example.com.", "v=spf1 -ptr +all")
    expect_all(printed, "user@example.com", [("192.0.2.65", "fail"), ("10.0.0.4", "fail")], "A.4 as printed")


# ---- limits -------------------------------------------------------------------------------

def chain(prefix, n):
    """N includes in a row: prefix0 includes prefix1 ... includes prefixN, which passes all."""
    zone = ""
    for i in range(n):
        zone += txt("%s%d.limit.example.net." % (prefix, i), "v=spf1 include:%s%d.limit.example.net -all" % (prefix, i + 1))
    return zone + txt("%s%d.limit.example.net." % (prefix, n), "v=spf1 +all")


def test_dns_lookup_limit():
    setup()
    zone = chain("ten", 10) + chain("eleven", 11)
    got, _ = spf("192.0.2.1", "a@ten0.limit.example.net", zone=zone)
    check(got == "pass", "10 includes: %s" % got)
    got, problem = spf("192.0.2.1", "a@eleven0.limit.example.net")
    check(got == "permerror" and "more than 10" in problem, "11 includes: %s %s" % (got, problem))
    # Every querying term counts, not only include (§4.6.4); ip4 and all do not.
    zone = txt("mixed.limit.example.net.", "v=spf1 a mx ptr a a a mx mx ptr a ip4:10.0.0.0/8 "
               "redirect=other.limit.example.net") + txt("other.limit.example.net.", "v=spf1 +all") \
        + "mixed.limit.example.net. IN A 192.0.2.200\nmixed.limit.example.net. IN MX 0 mixed.limit.example.net.\n"
    got, problem = spf("192.0.2.1", "a@mixed.limit.example.net", zone=zone)
    check(got == "permerror" and "redirect=" in problem, "10 mechanisms, then redirect: %s %s" % (got, problem))
    got, _ = spf("10.1.2.3", "a@mixed.limit.example.net")
    check(got == "pass", "ip4 matched after 10 DNS terms: %s" % got)
    # Lookup counts reported in --json.
    DNS.set_zone(APPENDIX_A + chain("ten", 10))
    p = setup().cli("--json", "spf-check", "--ip", "192.0.2.1", "--mail-from", "a@ten0.limit.example.net",
                    "--dns", DNS.address)
    data = json.loads(p.stdout)
    check(data["result"] == "pass" and data["lookups"] == 10 and data["mechanism"] == "include:ten1.limit.example.net",
          data)


def test_void_lookup_limit():
    setup()
    zone = (txt("three.void.example.net.", "v=spf1 a:nx1.void.example.net a:nx2.void.example.net a:nx3.void.example.net +all")
            + txt("two.void.example.net.", "v=spf1 a:nx1.void.example.net mx:nx2.void.example.net +all")
            + txt("nodata.void.example.net.", "v=spf1 a:x.void.example.net exists:x.void.example.net mx:x.void.example.net +all")
            + "x.void.example.net. IN TXT \"not an address\"\n")
    got, problem = spf("192.0.2.1", "a@three.void.example.net", zone=zone)
    check(got == "permerror" and "void" in problem, "3 NXDOMAIN: %s %s" % (got, problem))
    got, _ = spf("192.0.2.1", "a@two.void.example.net")
    check(got == "pass", "2 NXDOMAIN: %s" % got)
    got, problem = spf("192.0.2.1", "a@nodata.void.example.net")
    check(got == "permerror" and "void" in problem, "3 NODATA: %s %s" % (got, problem))


def test_mx_name_limit():
    setup()
    zone = txt("manymx.example.net.", "v=spf1 mx -all") + txt("tenmx.example.net.", "v=spf1 mx -all")
    for i in range(11):
        zone += "manymx.example.net. IN MX %d mx%d.manymx.example.net.\nmx%d.manymx.example.net. IN A 192.0.2.%d\n" % (i, i, i, 20 + i)
        if i < 10:
            zone += "tenmx.example.net. IN MX %d mx%d.manymx.example.net.\n" % (i, i)
    got, problem = spf("192.0.2.20", "a@manymx.example.net", zone=zone)
    check(got == "permerror" and "MX" in problem, "11 MX: %s %s" % (got, problem))
    got, _ = spf("192.0.2.29", "a@tenmx.example.net")
    check(got == "pass", "10 MX, the last matches: %s" % got)


# ---- DNS failures ---------------------------------------------------------------------------

def test_servfail_and_timeout():
    setup()
    zone = txt("sf.example.net.", "v=spf1 a:host.servfail.example.net -all") + txt("ok.example.net.", "v=spf1 include:x.servfail.example.net -all")
    got, problem = spf("192.0.2.1", "a@sf.example.net", zone=zone)
    check(got == "temperror" and "servfail.example.net" in problem, "a: SERVFAIL: %s %s" % (got, problem))
    got, _ = spf("192.0.2.1", "a@ok.example.net")
    check(got == "temperror", "include: SERVFAIL: %s" % got)
    got, _ = spf("192.0.2.1", "a@servfail.example.net")
    check(got == "temperror", "the domain's own TXT SERVFAIL: %s" % got)
    # A server that never answers: temperror, and soon.
    t0 = time.time()
    got, problem = spf("192.0.2.1", "a@host.timeout.example.net", extra=("--timeout", "2"))
    took = time.time() - t0
    check(got == "temperror", "timeout: %s %s" % (got, problem))
    check(took < 10, "a lookup that never answers took %.1fs" % took)
    t0 = time.time()
    got, problem = spf("192.0.2.1", "a@host.timeout.example.net")
    check(got == "temperror" and time.time() - t0 < 15, "lookup-timeout 2s: %s %s" % (got, problem))


# ---- records ---------------------------------------------------------------------------------

def test_records_and_results():
    setup()
    zone = (txt("none.example.net.", "some other text")
            + txt("two.example.net.", "v=spf1 +all") + txt("two.example.net.", "v=spf1 -all")
            + txt("syntax.example.net.", "v=spf1 ip4:192.0.2.300 -all")
            + txt("soft.example.net.", "v=spf1 ~all")
            + txt("neutral.example.net.", "v=spf1 ?all")
            + txt("empty.example.net.", "v=spf1")
            + txt("badinclude.example.net.", "v=spf1 include:none.example.net -all")
            + txt("split.example.net.", "v=spf1 ip4:192.0.2.1", " -all")
            + txt("helo.example.net.", "v=spf1 a -all") + "helo.example.net. IN A 192.0.2.44\n")
    expect = [("a@none.example.net", "none"), ("a@nxdomain.example.net", "none"), ("a@two.example.net", "permerror"),
              ("a@syntax.example.net", "permerror"), ("a@soft.example.net", "softfail"), ("a@neutral.example.net", "neutral"),
              ("a@empty.example.net", "neutral"), ("a@badinclude.example.net", "permerror"), ("a@split.example.net", "pass"),
              ("a@com", "none")]
    DNS.set_zone(APPENDIX_A + zone)
    for sender, want in expect:
        got, second = spf("192.0.2.1", sender)
        check(got == want, "%s: %s (%s), expected %s" % (sender, got, second, want))
    # Null sender and HELO identity: postmaster@HELO (§2.3, §2.4).
    got, _ = spf("192.0.2.44", "", helo="helo.example.net")
    check(got == "pass", "null sender, HELO helo.example.net: %s" % got)
    got, _ = spf("192.0.2.45", None, helo="helo.example.net")
    check(got == "fail", "HELO only: %s" % got)
    p = setup().cli("--json", "spf-check", "--ip", "192.0.2.44", "--helo", "helo.example.net", "--dns", DNS.address)
    data = json.loads(p.stdout)
    check(data["identity"] == "helo" and data["sender"] == "postmaster@helo.example.net", data)


def test_redirect():
    setup()
    zone = (txt("r.example.net.", "v=spf1 ip4:198.51.100.1 redirect=_spf.r.example.net")
            + txt("_spf.r.example.net.", "v=spf1 ip4:192.0.2.0/24 -all exp=why.r.example.net")
            + txt("why.r.example.net.", "redirected %{d} refuses %{i}")
            + txt("dangling.example.net.", "v=spf1 redirect=nothing.example.net")
            + txt("withall.example.net.", "v=spf1 ?all redirect=_spf.r.example.net")
            + txt("loop.example.net.", "v=spf1 redirect=loop.example.net"))
    got, _ = spf("198.51.100.1", "a@r.example.net", zone=zone)
    check(got == "pass", "before the redirect: %s" % got)
    got, _ = spf("192.0.2.9", "a@r.example.net")
    check(got == "pass", "through the redirect: %s" % got)
    got, why = spf("203.0.113.5", "a@r.example.net")
    # §6.2: the exp= of the redirect target is used, with its <domain>.
    check(got == "fail" and why == "redirected _spf.r.example.net refuses 203.0.113.5", "%s %r" % (got, why))
    got, _ = spf("192.0.2.9", "a@dangling.example.net")
    check(got == "permerror", "redirect to no record: %s" % got)
    got, _ = spf("192.0.2.9", "a@withall.example.net")
    check(got == "neutral", "all makes redirect ignored: %s" % got)
    got, problem = spf("192.0.2.9", "a@loop.example.net")
    check(got == "permerror" and "more than 10" in problem, "redirect loop: %s %s" % (got, problem))


def test_explanation():
    setup()
    zone = (txt("exp.example.net.", "v=spf1 mx -all exp=explain._spf.%{d}")
            + txt("explain._spf.exp.example.net.", "%{i} is not one of %{d}'s designated mail servers.")
            + txt("noexp.example.net.", "v=spf1 -all")
            + txt("badexp.example.net.", "v=spf1 -all exp=missing.badexp.example.net")
            + txt("twoexp.example.net.", "v=spf1 -all exp=e.twoexp.example.net")
            + txt("e.twoexp.example.net.", "one") + txt("e.twoexp.example.net.", "two")
            + txt("inc.example.net.", "v=spf1 -include:incd.example.net +all exp=e.inc.example.net")
            + txt("incd.example.net.", "v=spf1 +all exp=e.incd.example.net")
            + txt("e.inc.example.net.", "outer %{d} for %{s} via %{c}") + txt("e.incd.example.net.", "inner must not be used"))
    got, why = spf("192.0.2.1", "user@exp.example.net", zone=zone)
    check(got == "fail" and why == "192.0.2.1 is not one of exp.example.net's designated mail servers.", "%s %r" % (got, why))
    # Without exp= (or when it cannot be had) the default explanation.
    for sender in ("a@noexp.example.net", "a@badexp.example.net", "a@twoexp.example.net"):
        got, why = spf("192.0.2.1", sender)
        check(got == "fail" and why is not None and "does not designate 192.0.2.1" in why, "%s: %r" % (sender, why))
    # §6.2: an included record's exp= is not used.
    got, why = spf("2001:db8::5", "joe@inc.example.net")
    check(got == "fail" and why == "outer inc.example.net for joe@inc.example.net via 2001:db8::5", "%s %r" % (got, why))
    # Nothing on the second line for a pass.
    got, second = spf("192.0.2.1", "user@incd.example.net")
    check(got == "pass" and second is None, "%s %r" % (got, second))


def test_ipv6_and_macros():
    setup()
    zone = (txt("v6.example.net.", "v=spf1 ip6:2001:db8::/32 a:host.v6.example.net//96 -all")
            + "host.v6.example.net. IN AAAA 2001:db9:1:2:3:4::1\nhost.v6.example.net. IN A 192.0.2.80\n"
            + txt("m.example.net.", "v=spf1 exists:%{i}._spf.%{d} -all")
            + "192.0.2.3._spf.m.example.net. IN A 127.0.0.2\n"
            + "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.m.example.net. IN A 127.0.0.2\n"
            + txt("m6.example.net.", "v=spf1 exists:%{ir}.%{v}._spf.m.example.net -all")
            + txt("p.example.net.", "v=spf1 exists:%{p}.ok.p.example.net -all")
            + "amy.example.com.ok.p.example.net. IN A 127.0.0.2\n")
    for ip, want in (("2001:db8::cb01", "pass"), ("2001:db9:1:2:3:4:5:6", "pass"), ("2001:db9:1:2:3:5::1", "fail"),
                     ("192.0.2.1", "fail"), ("192.0.2.80", "pass"), ("::ffff:192.0.2.80", "pass")):
        got, _ = spf(ip, "a@v6.example.net", zone=zone)
        check(got == want, "v6.example.net from %s: %s, expected %s" % (ip, got, want))
    for ip, sender, want in (("192.0.2.3", "a@m.example.net", "pass"), ("192.0.2.4", "a@m.example.net", "fail"),
                             ("2001:db8::cb01", "a@m6.example.net", "pass"), ("2001:db8::cb02", "a@m6.example.net", "fail"),
                             ("192.0.2.65", "a@p.example.net", "pass"), ("192.0.2.140", "a@p.example.net", "fail")):
        got, _ = spf(ip, sender)
        check(got == want, "%s from %s: %s, expected %s" % (sender, ip, got, want))


def test_usage_errors():
    d = setup()
    for args, needle in ((["--mail-from", "a@b.example"], "--ip is required"),
                         (["--ip", "192.0.2.1"], "--mail-from or --helo is required"),
                         (["--ip", "nonsense", "--helo", "x.example"], "not an IPv4 or IPv6 address"),
                         (["--ip", "192.0.2.1", "--helo", "x.example", "--bogus"], "unknown argument '--bogus'"),
                         (["--ip", "192.0.2.1", "--helo", "x.example", "--dns", "not a server"], "--dns"),
                         (["--ip", "192.0.2.1", "--helo", "x.example", "--timeout", "0"], "--timeout"),
                         (["--ip", "192.0.2.1", "--helo"], "--helo needs a value")):
        p = d.cli("spf-check", *args, expect=1)
        err = p.stderr.strip()
        check(needle in err and "\n" not in err, "%r: %r" % (args, err))


def check_config(text):
    d = SpfDaemon(conf_files={"60-spf.conf": text})
    try:
        return subprocess.run([PILLARBOXD, "--check-config", "-c", d.conf], capture_output=True, text=True,
                              timeout=TIMEOUT)
    finally:
        d.close()


def test_configuration():
    # The shipped file with the group and every key uncommented: its defaults are valid.
    with open(os.path.join(TOP_SRCDIR, "conf.d", "60-spf.conf")) as f:
        shipped = f.read()
    check("\n[module spf]" not in shipped and "\n#[module spf]" in shipped, "spf must ship disabled")
    enabled = re.sub(r"(?m)^#(\[module spf\]|[a-z-]+ =.*)$", r"\1", shipped)
    check(enabled.count("\n[module spf]") == 1 and "\non-fail = reject" in enabled, enabled)
    p = check_config(enabled)
    check(p.returncode == 0, "shipped 60-spf.conf, uncommented: %s" % p.stderr)
    # Bad values: one line naming the file and line.
    for text, line, needle in (("[module spf]\n\ndefault-explanation = %{x} bad\n", 1, "default-explanation"),
                               ("[module spf]\non-fail = bounce\n", 2, "bounce"),
                               ("[module spf]\ntrusted-networks = 10.0.0.0/33\n", 2, "10.0.0.0/33"),
                               ("[module spf]\nmax-void-lookups = 11\n", 2, "11")):
        p = check_config(text)
        first = p.stderr.strip().split("\n")[0]
        check(p.returncode != 0 and "60-spf.conf:%d: " % line in first and needle in first,
              "%r: %r" % (text, p.stderr))


def teardown():
    if D is not None:
        D.finish()
        D.close()
    if DNS is not None:
        DNS.close()


def test_daemon_clean_exit():
    teardown()


if __name__ == "__main__":
    run_tests([test_a1_simple_examples, test_a2_multiple_domains, test_a3_dnsbl_style, test_a4_multiple_requirements,
               test_dns_lookup_limit, test_void_lookup_limit, test_mx_name_limit, test_servfail_and_timeout,
               test_records_and_results, test_redirect, test_explanation, test_ipv6_and_macros, test_usage_errors, test_configuration,
               test_daemon_clean_exit])
