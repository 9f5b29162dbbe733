# SPDX-License-Identifier: MIT
"""A real DNS server on a loopback port for tests, serving a zone file (needs Debian's python3-dnslib).

usage: /usr/bin/python3 tests/dns-server.py ZONEFILE [--port N] [--address 127.0.0.1]

Prints "PORT <n>" on stdout once it answers on UDP and TCP, and exits when its standard
input is closed, so a test that dies takes its server with it.

The zone is standard master-file text (with $ORIGIN and $TTL). A name that is not in the
zone is NXDOMAIN; a name present without the asked type is NODATA. Two magic labels make
failures to order: any name under "servfail." is answered SERVFAIL, and any name under
"timeout." is never answered.
"""

import argparse
import os
import sys
import threading
import time

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSServer


class ZoneResolver(BaseResolver):
    def __init__(self, zone_text):
        self.records = [(rr.rname, QTYPE[rr.rtype], rr) for rr in RR.fromZone(zone_text)]

    def resolve(self, request, handler):
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
    with open(args.zone) as f:
        resolver = ZoneResolver(f.read())

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
