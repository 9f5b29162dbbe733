# SPDX-License-Identifier: MIT
"""A real DNS server on a loopback port for tests, serving a zone file (needs Debian's python3-dnslib).

usage: /usr/bin/python3 tests/dns-server.py ZONEFILE [--port N] [--address 127.0.0.1]

Prints "PORT <n>" on stdout once it answers on UDP and TCP, and exits when its standard
input is closed, so a test that dies takes its server with it.

The zone is standard master-file text (with $ORIGIN and $TTL). A name that is not in the
zone is NXDOMAIN; a name present without the asked type is NODATA. Two magic labels make
failures to order: any name under "servfail." is answered SERVFAIL, and any name under
"timeout." is never answered.

The zone file is read again when it changes (a new mtime, size or inode), so a test can
serve several versions of the same names one after the other from one server: write the
new text to a temporary file and rename it over the zone file.
"""

import argparse
import os
import sys
import threading
import time

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSServer


class ZoneResolver(BaseResolver):
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.stamp = None
        self.records = []
        self.reload()
        if self.stamp is None:
            sys.exit("dns-server: cannot read the zone %s" % path)

    def reload(self):
        """Reads the zone again if the file changed; keeps the old records if the new text is bad."""
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self.lock:
            if stamp == self.stamp:
                return
            with open(self.path) as f:
                text = f.read()
            try:
                self.records = [(rr.rname, QTYPE[rr.rtype], rr) for rr in RR.fromZone(text)]
            except Exception as e:  # noqa: BLE001 - a half-written zone must not kill the server
                print("zone %s: %s" % (self.path, e), file=sys.stderr, flush=True)
                return
            self.stamp = stamp

    def resolve(self, request, handler):
        try:
            self.reload()
        except OSError:
            pass
        reply = request.reply()
        qname = request.q.qname
        qtype = QTYPE[request.q.qtype]
        labels = [label.decode().lower() for label in qname.label]
        if "timeout" in labels:
            return None
        if "servfail" in labels:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        found = False
        for rname, rtype, rr in self.records:
            if rname == qname:
                found = True
                if rtype == qtype or (rtype == "CNAME" and qtype != "CNAME"):
                    reply.add_answer(rr)
        if not found:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("zone")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--address", default="127.0.0.1")
    args = ap.parse_args()
    resolver = ZoneResolver(args.zone)

    port = args.port
    if port == 0:
        import socket
        # One free port for both UDP and TCP.
        for _ in range(50):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((args.address, 0))
            port = s.getsockname()[1]
            s.close()
            t = socket.socket()
            try:
                t.bind((args.address, port))
                t.close()
                break
            except OSError:
                t.close()
    udp = DNSServer(resolver, port=port, address=args.address, tcp=False, logger=QuietLogger())
    tcp = DNSServer(resolver, port=port, address=args.address, tcp=True, logger=QuietLogger())
    for server in (udp, tcp):
        # A "timeout." name returns no reply on purpose; do not print a traceback for it.
        server.server.handle_error = lambda *a: None
        server.start_thread()
    print("PORT %d" % port, flush=True)

    # Exit when the test that started us goes away.
    def watch_stdin():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    while True:
        time.sleep(3600)


class QuietLogger:
    def __getattr__(self, name):
        return lambda *a, **k: None


if __name__ == "__main__":
    main()
