# SPDX-License-Identifier: MIT
"""A scripted SMTP server for the transports' tests (standard library only).

usage: python3 test-smtp-server.py --log FILE [--address 127.0.0.1] [--port 0] [options]

Prints "PORT <n>" once it listens and exits when its standard input closes, so a
test that dies takes its server with it. Each session is a thread.

Options shape the peer a test needs:
  --ext "PIPELINING" ...     EHLO keywords offered (repeatable; STARTTLS only with --cert)
  --cert FILE --key FILE     TLS for STARTTLS, or from the first octet with --implicit-tls
  --bad-tls                  answer STARTTLS 220, then send garbage and close
  --user U --password P      AUTH PLAIN/LOGIN must give these (else 535)
  --rcpt "TEXT=CODE REPLY"   a recipient containing TEXT gets this reply (repeatable)
  --mail-reply "CODE TEXT"   the reply to MAIL
  --data-reply "CODE TEXT"   the reply to DATA (instead of 354)
  --dot-reply "CODE TEXT"    the reply to the final "."
  --greeting "CODE TEXT"     the greeting (a 4xx/5xx greeting closes after QUIT or at once for 421)
  --no-ehlo                  answer EHLO with 502 (HELO works)
  --stall WHAT               never answer WHAT (greeting, mail, rcpt, data, dot)
  --multiline                answer MAIL and RCPT with multi-line replies

The log gets one JSON object per line: {"event": "connect", "session": N},
{"event": "message", "session": N, "tls": bool, "auth": user or null, "helo": ...,
"mail": "<args>", "rcpts": ["<args>", ...], "raw": base64 of the DATA octets as
received up to and including CRLF.CRLF, "pipelined": bool (RCPT and DATA were
already received when MAIL was read)}, {"event": "rset"|"quit"|"close", "session": N}.
"""

import argparse
import base64
import binascii
import json
import socket
import ssl
import sys
import threading

args = None
log_lock = threading.Lock()
session_counter = [0]


def log(obj):
    with log_lock:
        with open(args.log, "a") as f:
            f.write(json.dumps(obj) + "\n")


class Session:
    def __init__(self, sock, n):
        self.sock = sock
        self.n = n
        self.buf = b""
        self.tls = False
        self.auth = None
        self.helo = None
        self.reset()

    def reset(self):
        self.mail = None
        self.rcpts = []
        self.accepted = 0
        self.pipelined = False

    def send(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError()
        self.buf += data

    def line(self):
        while b"\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self, text, default):
        r = text if text else default
        if args.multiline and r[0] == "2":
            code = r[:3]
            self.send(code + "-first line")
            self.send(code + " " + r[4:])
        else:
            self.send(r)

    def data(self):
        raw = b""
        while True:
            end = self.buf.find(b"\r\n.\r\n")
            if raw == b"" and self.buf.startswith(b".\r\n"):
                raw, self.buf = self.buf[:3], self.buf[3:]
                return raw
            if end >= 0:
                raw += self.buf[: end + 5]
                self.buf = self.buf[end + 5 :]
                return raw
            # keep the last 4 octets: the terminator may straddle reads
            if len(self.buf) > 4:
                raw += self.buf[:-4]
                self.buf = self.buf[-4:]
            self.fill()

    def ehlo_lines(self):
        ext = list(args.ext)
        if args.cert and not self.tls and not args.implicit_tls:
            ext.append("STARTTLS")
        if args.user and "AUTH" not in " ".join(ext):
            ext.append("AUTH PLAIN LOGIN")
        return ext

    def run(self):
        log({"event": "connect", "session": self.n})
        if args.implicit_tls:
            self.start_tls()
        if args.stall == "greeting":
            self.fill()
            return
        greeting = args.greeting or "220 test.example ESMTP scripted"
        self.send(greeting)
        if greeting.startswith("421"):
            return
        while True:
            line = self.line()
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                if args.no_ehlo:
                    self.send("502 5.5.2 no EHLO here")
                    continue
                self.helo = line[5:]
                ext = self.ehlo_lines()
                if not ext:
                    self.send("250 test.example")
                else:
                    self.send("250-test.example")
                    for i, e in enumerate(ext):
                        self.send(("250 " if i == len(ext) - 1 else "250-") + e)
            elif verb == "HELO":
                self.helo = line[5:]
                self.send("250 test.example")
            elif verb == "STARTTLS":
                if args.bad_tls:
                    self.send("220 2.0.0 go ahead")
                    self.sock.sendall(b"this is not TLS at all\r\n" * 4)
                    return
                self.send("220 2.0.0 go ahead")
                self.buf = b""
                self.start_tls()
            elif verb == "AUTH":
                self.do_auth(line)
            elif verb == "MAIL":
                if greeting[0] != "2":
                    self.send("503 5.5.1 no service")
                    continue
                self.reset()
                self.mail = line[10:] if len(line) > 10 else ""
                # Everything the client pipelined is in the buffer already.
                self.pipelined = b"DATA" in self.buf.upper() and b"RCPT" in self.buf.upper()
                if args.stall == "mail":
                    self.fill()
                    return
                self.reply(args.mail_reply, "250 2.1.0 sender ok")
            elif verb == "RCPT":
                arg = line[8:]
                self.rcpts.append(arg)
                if args.stall == "rcpt":
                    self.fill()
                    return
                if self.mail is None:
                    self.send("503 5.5.1 need MAIL first")
                    continue
                r = None
                for rule in args.rcpt:
                    text, rep = rule.split("=", 1)
                    if text in arg:
                        r = rep
                        break
                if r is None or r[0] == "2":
                    self.accepted += 1
                self.reply(r, "250 2.1.5 recipient ok")
            elif verb == "DATA":
                if args.stall == "data":
                    self.fill()
                    return
                if self.mail is None or self.accepted == 0:
                    self.send("554 5.5.1 no valid recipients")
                    continue
                if args.data_reply:
                    self.send(args.data_reply)
                    continue
                self.send("354 go ahead")
                raw = self.data()
                log({"event": "message", "session": self.n, "tls": self.tls, "auth": self.auth,
                     "helo": self.helo, "mail": self.mail, "rcpts": self.rcpts,
                     "raw": base64.b64encode(raw).decode(), "pipelined": self.pipelined})
                if args.stall == "dot":
                    self.fill()
                    return
                self.send(args.dot_reply or "250 2.0.0 queued as T%d" % self.n)
                self.reset()
            elif verb == "RSET":
                log({"event": "rset", "session": self.n})
                self.reset()
                self.send("250 2.0.0 ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 ok")
            elif verb == "QUIT":
                log({"event": "quit", "session": self.n})
                self.send("221 2.0.0 bye")
                return
            else:
                self.send("500 5.5.2 what?")

    def start_tls(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        self.sock = ctx.wrap_socket(self.sock, server_side=True)
        self.tls = True

    def do_auth(self, line):
        parts = line.split()
        mech = parts[1].upper() if len(parts) > 1 else ""
        try:
            if mech == "PLAIN":
                if len(parts) > 2:
                    blob = parts[2]
                else:
                    self.send("334 ")
                    blob = self.line()
                _, user, password = base64.b64decode(blob).decode().split("\0")
            elif mech == "LOGIN":
                self.send("334 VXNlcm5hbWU6")
                user = base64.b64decode(self.line()).decode()
                self.send("334 UGFzc3dvcmQ6")
                password = base64.b64decode(self.line()).decode()
            else:
                self.send("504 5.5.4 unknown mechanism")
                return
        except (ValueError, binascii.Error):
            self.send("501 5.5.2 cannot decode")
            return
        if user == args.user and password == args.password:
            self.auth = user
            self.send("235 2.7.0 authenticated")
        else:
            self.send("535 5.7.8 bad credentials")


def serve(conn):
    session_counter[0] += 1
    s = Session(conn, session_counter[0])
    try:
        s.run()
    except (EOFError, OSError, ssl.SSLError):
        pass
    log({"event": "close", "session": s.n})
    try:
        s.sock.close()
    except OSError:
        pass


def main():
    global args
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ext", action="append", default=[])
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--implicit-tls", action="store_true")
    ap.add_argument("--bad-tls", action="store_true")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--rcpt", action="append", default=[])
    ap.add_argument("--mail-reply")
    ap.add_argument("--data-reply")
    ap.add_argument("--dot-reply")
    ap.add_argument("--greeting")
    ap.add_argument("--no-ehlo", action="store_true")
    ap.add_argument("--stall")
    ap.add_argument("--multiline", action="store_true")
    args = ap.parse_args()

    srv = socket.socket(socket.AF_INET6 if ":" in args.address else socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.address, args.port))
    srv.listen(64)
    print("PORT %d" % srv.getsockname()[1], flush=True)

    def accept_loop():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    sys.stdin.read()


if __name__ == "__main__":
    main()
