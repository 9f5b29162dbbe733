# SPDX-License-Identifier: MIT
"""Peers for the pop3-collector tests: a scripted POP3 server with chosen misbehaviour, and a
TCP proxy that cuts a connection a given number of octets into a RETR answer. Loopback only;
every socket has a timeout."""

import hashlib
import socket
import threading

TIMEOUT = 20.0


class Listener:
    """A loopback listening socket served by a thread, which hands each connection to
    self._accepted(); close() stops it within a fraction of a second."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            self._accepted(conn)


class ScriptedPop3(Listener):
    """A small POP3 server (RFC 1939) over a list of messages (bytes with CRLF line ends).

    quirks: "close-on-empty-list" closes the connection on UIDL/LIST of an empty maildrop
    (VPOP3's old behaviour, socket error 10503); "no-uidl" answers UIDL with -ERR. Hostile
    ones: "flood-uidl" and "flood-capa" follow the true listing with FLOOD more valid lines
    and then wait, never sending the final "." (an endless listing, bounded for the test);
    "long-uidl-line" answers UIDL with one line of a megabyte that does not end."""

    def __init__(self, messages=(), user="alice", password="secret", apop=True, quirks=(), flood=200000):
        self.messages = list(messages)
        self.deleted_total = []
        self.user, self.password = user, password
        self.apop, self.quirks = apop, set(quirks)
        self.flood = flood
        self.stamp = "<4711.1234567890@scripted.test>"
        self.commands = []
        super().__init__()

    def _accepted(self, conn):
        # One session at a time, as an ISP's old POP3 server would.
        conn.settimeout(TIMEOUT)
        try:
            self._session(conn)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def _session(self, conn):
        f = conn.makefile("rb")
        send = lambda text: conn.sendall(text.encode() + b"\r\n")  # noqa: E731
        send("+OK scripted POP3 ready " + (self.stamp if self.apop else ""))
        authed, user_ok, deleted = False, False, set()
        while True:
            raw = f.readline(1024)
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            word = line.split(" ")[0].upper()
            self.commands.append(word)
            live = [(i + 1, m) for i, m in enumerate(self.messages) if i + 1 not in deleted]
            if word == "CAPA" and "flood-capa" in self.quirks:
                send("+OK\r\nUSER\r\nUIDL")
                self._flood(conn, f, lambda n: b"X-FLOOD-%07d %s\r\n" % (n, b"x" * 60))
                return
            elif word == "CAPA":
                send("+OK\r\nUSER\r\nUIDL\r\n.")
            elif word == "USER":
                user_ok = line[5:] == self.user
                send("+OK" if user_ok else "-ERR who")
            elif word == "PASS":
                authed = user_ok and line[5:] == self.password
                send("+OK in" if authed else "-ERR denied")
            elif word == "APOP":
                parts = line.split(" ")
                want = hashlib.md5((self.stamp + self.password).encode()).hexdigest()
                authed = self.apop and len(parts) == 3 and parts[1] == self.user and parts[2] == want
                send("+OK in" if authed else "-ERR denied")
            elif not authed:
                send("-ERR log in first")
            elif word == "STAT":
                send("+OK %d %d" % (len(live), sum(len(m) for _, m in live)))
            elif word in ("UIDL", "LIST"):
                if not live and "close-on-empty-list" in self.quirks:
                    return
                if word == "UIDL" and "no-uidl" in self.quirks:
                    send("-ERR command not implemented")
                    continue
                if word == "UIDL" and "long-uidl-line" in self.quirks:
                    conn.sendall(b"+OK\r\n1 " + b"u" * (1 << 20))
                    f.readline(1024)  # until the client gives up
                    return
                send("+OK")
                for n, m in live:
                    send("%d %s" % (n, ("uid-%d" % n) if word == "UIDL" else len(m)))
                if word == "UIDL" and "flood-uidl" in self.quirks:
                    # UIDs of the longest valid form (70 characters, RFC 1939 §7).
                    first = len(live) + 1
                    self._flood(conn, f, lambda n: b"%d flood-%064d\r\n" % (first + n, first + n))
                    return
                send(".")
            elif word == "RETR":
                n = int(line[5:])
                body = self.messages[n - 1]
                lines = body.split(b"\r\n")
                if lines and lines[-1] == b"":
                    lines.pop()
                out = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)
                conn.sendall(b"+OK\r\n" + out + b".\r\n")
            elif word == "DELE":
                deleted.add(int(line[5:]))
                send("+OK")
            elif word == "QUIT":
                for n in sorted(deleted, reverse=True):
                    self.deleted_total.append(n)
                    del self.messages[n - 1]
                send("+OK bye")
                return
            else:
                send("-ERR unknown")


    def _flood(self, conn, f, make_line):
        """Sends self.flood lines made by MAKE_LINE(n), in large writes, then waits for the
        client to give up (it closes, or the socket times out)."""
        n = 0
        while n < self.flood:
            chunk = b"".join(make_line(n + k) for k in range(min(5000, self.flood - n)))
            n += 5000
            conn.sendall(chunk)
        f.readline(1024)


class CutProxy(Listener):
    """Forwards 127.0.0.1:port to UPSTREAM; with cut_on = N, the connection is cut CUT_AFTER
    octets into the answer to the Nth RETR (once; later connections pass untouched)."""

    def __init__(self, upstream_port, cut_on=2, cut_after=60):
        self.upstream = upstream_port
        self.cut_on, self.cut_after = cut_on, cut_after
        self.cut_done = False
        super().__init__()

    def _accepted(self, client):
        threading.Thread(target=self._pair, args=(client,), daemon=True).start()

    def _pair(self, client):
        server = socket.create_connection(("127.0.0.1", self.upstream), timeout=TIMEOUT)
        client.settimeout(TIMEOUT)
        state = {"retr": 0, "armed": False, "budget": 0}
        lock = threading.Lock()

        def close_both():
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def up():
            buf = b""
            try:
                while True:
                    data = client.recv(4096)
                    if not data:
                        break
                    buf += data
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if line.upper().startswith(b"RETR"):
                            with lock:
                                state["retr"] += 1
                                if state["retr"] == self.cut_on and not self.cut_done:
                                    state["armed"], state["budget"] = True, self.cut_after
                    server.sendall(data)
            except OSError:
                pass
            close_both()

        def down():
            try:
                while True:
                    data = server.recv(4096)
                    if not data:
                        break
                    with lock:
                        if state["armed"]:
                            part = data[:state["budget"]]
                            client.sendall(part)
                            state["budget"] -= len(part)
                            if state["budget"] <= 0:
                                self.cut_done = True
                                break
                            continue
                    client.sendall(data)
            except OSError:
                pass
            close_both()

        t = threading.Thread(target=up, daemon=True)
        t.start()
        down()
        t.join(TIMEOUT)
        client.close()
        server.close()
