# SPDX-License-Identifier: MIT
"""Shared by the spf tests: the zone of RFC 7208 Appendix A, and tests/dns-server.py on a
free loopback port serving one zone after another."""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP_SRCDIR = os.environ.get("top_srcdir") or os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(TOP_SRCDIR, "tests", "integration"))
from pbtest import TIMEOUT, Failure, free_port  # noqa: E402

# RFC 7208 Appendix A: the hosts and reverse names every example shares.
APPENDIX_A = """\
$TTL 300
example.com.                 IN MX    10 mail-a.example.com.
example.com.                 IN MX    20 mail-b.example.com.
example.com.                 IN A     192.0.2.10
example.com.                 IN A     192.0.2.11
amy.example.com.             IN A     192.0.2.65
bob.example.com.             IN A     192.0.2.66
mail-a.example.com.          IN A     192.0.2.129
mail-b.example.com.          IN A     192.0.2.130
www.example.com.             IN CNAME example.com.
example.org.                 IN MX    10 mail-c.example.org.
mail-c.example.org.          IN A     192.0.2.140
10.2.0.192.in-addr.arpa.     IN PTR   example.com.
11.2.0.192.in-addr.arpa.     IN PTR   example.com.
65.2.0.192.in-addr.arpa.     IN PTR   amy.example.com.
66.2.0.192.in-addr.arpa.     IN PTR   bob.example.com.
129.2.0.192.in-addr.arpa.    IN PTR   mail-a.example.com.
130.2.0.192.in-addr.arpa.    IN PTR   mail-b.example.com.
140.2.0.192.in-addr.arpa.    IN PTR   mail-c.example.org.
4.0.0.10.in-addr.arpa.       IN PTR   bob.example.com.
"""


def txt(name, *strings):
    """A TXT record line; several strings are joined by the resolver (RFC 7208 §3.3)."""
    return "%s IN TXT %s\n" % (name, " ".join('"%s"' % s for s in strings))


class DnsServer:
    """tests/dns-server.py with a zone file this object rewrites."""

    def __init__(self, zone=""):
        self.dir = tempfile.mkdtemp(prefix="pillarbox-spf-dns-")
        self.path = os.path.join(self.dir, "zone")
        self.version = 0
        self.set_zone(zone)
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(TOP_SRCDIR, "tests", "dns-server.py"), self.path,
             "--port", str(self.port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise Failure("dns-server.py did not start: %r" % line)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def set_zone(self, text):
        """Serves TEXT from now on. The rename gives a new file and the explicit mtime a new
        stamp, so the server notices even two changes within one clock tick."""
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        self.version += 1
        stamp = 1_000_000_000_000_000_000 + self.version
        os.utime(tmp, ns=(stamp, stamp))
        os.replace(tmp, self.path)

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(TIMEOUT)
        except Exception:  # noqa: BLE001 - best effort at teardown
            self.proc.kill()
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)
