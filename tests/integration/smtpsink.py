# SPDX-License-Identifier: MIT
"""Postfix's smtp-sink as a test peer, with what it saw: sessions, senders, times.

smtp-sink -v logs each protocol step on its standard error ("connect (AF_INET 127.0.0.1)",
"MAIL FROM:<a@b>", ".", "disconnect"). It serves sessions in one process, so lines of
parallel sessions can interleave: tests that count messages per session run their sender with
one connection at a time. Each line is stamped with the time this reader saw it.
"""

import os
import re
import shutil
import subprocess
import threading
import time

from pbtest import check, free_port

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


class Sink:
    def __init__(self, *options):
        check(os.access(SMTP_SINK, os.X_OK), "smtp-sink is missing (Debian package postfix)")
        self.port = free_port()
        self.lines = []          # (time, line)
        self.lock = threading.Lock()
        cmd = [SMTP_SINK, "-v"] + list(options) + ["127.0.0.1:%d" % self.port, "64"]
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", "nobody"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.time() + 10
        while not any("trying..." in line or "name_mask" in line for _, line in self.snapshot()):
            check(time.time() < deadline and self.proc.poll() is None, "smtp-sink did not start")
            time.sleep(0.05)
        time.sleep(0.1)

    def _read(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append((time.time(), line.rstrip("\n")))

    def snapshot(self):
        with self.lock:
            return list(self.lines)

    def sessions(self):
        """[(connect time, [(time, sender) for each message])] in order."""
        out = []
        sender = None
        for t, line in self.snapshot():
            step = line.split(": ", 1)[-1]
            if step.startswith("connect "):
                out.append((t, []))
            elif step.upper().startswith("MAIL FROM:"):
                m = re.match(r"MAIL FROM:\s*<([^>]*)>", step, re.I)
                sender = m.group(1) if m else step
            elif step == "." and out:
                out[-1][1].append((t, sender))
        return out

    def messages(self):
        """[(time, sender)] of every message the sink accepted, in order."""
        return [m for _, msgs in self.sessions() for m in msgs]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
