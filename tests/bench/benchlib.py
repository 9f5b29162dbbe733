# SPDX-License-Identifier: MIT
"""What the SMTP benchmarks share: ports, CPU accounting, smtp-source, and a private Postfix.

The reference Postfix runs from a configuration of its own in a temporary directory, on a
loopback port, with its default durable queue, and is stopped afterwards; the system's own
Postfix configuration is only touched to list that directory in alternate_config_directories
(restored on stop), which `postfix -c` requires.
"""

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
TICKS = os.sysconf("SC_CLK_TCK")
NAME = os.path.basename(sys.argv[0])


def log(*args):
    print(*args, flush=True)


def die(msg):
    log("%s: %s" % (NAME, msg))
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(100)
                return
        except OSError:
            time.sleep(0.1)
    die("nothing answers on port %d" % port)


def cpu_of(pids):
    """User + system seconds of PIDS, with their reaped children."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])   # utime stime cutime cstime
        except (OSError, IndexError):
            pass
    return total / TICKS


def processes_of(exe_prefix):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            exe = os.readlink("/proc/%s/exe" % d)
        except OSError:
            continue
        if exe.startswith(exe_prefix):
            pids.append(int(d))
    return pids


def require_tools(*tools):
    for tool in tools:
        if not os.access(tool, os.X_OK):
            die("%s is missing (run from the top of a built tree; Debian package postfix)" % tool)
    if os.geteuid() != 0:
        die("must run as root (Postfix's reference instance)")


def smtp_source(port, sessions, messages, size, sender, recipient):
    """Runs smtp-source to completion; returns the wall-clock seconds it took."""
    cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size), "-f", sender,
           "-t", recipient, "-M", "client.example", "127.0.0.1:%d" % port]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.time() - t0
    if p.returncode != 0:
        die("smtp-source failed (%d): %s" % (p.returncode, p.stderr[-2000:]))
    return wall


MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A private Postfix under TMP/postfix; MAIN adds to or overrides its main.cf."""

    def __init__(self, tmp, main):
        self.dir = os.path.join(tmp, "postfix")
        self.conf = os.path.join(self.dir, "conf")
        self.port = free_port()
        for sub in ("conf", "queue", "data", "log"):
            os.makedirs(os.path.join(self.dir, sub))
        os.chmod(tmp, 0o755)
        os.chmod(self.dir, 0o755)
        pw = pwd.getpwnam("postfix")
        os.chown(os.path.join(self.dir, "data"), pw.pw_uid, pw.pw_gid)
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": os.path.join(self.dir, "queue"),
            "data_directory": os.path.join(self.dir, "data"),
            "maillog_file": os.path.join(self.dir, "log", "postfix.log"),
            "maillog_file_prefixes": self.dir,
            "myhostname": "ref.bench.example",
            "mydomain": "bench.example",
            "mydestination": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "default_process_limit": "200",
            "smtputf8_enable": "no",
        }
        settings.update(main)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            for k, v in settings.items():
                f.write("%s = %s\n" % (k, v))
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=self.port))
        # Our directory must be listed in the system's alternate_config_directories, which
        # postconf cannot set without /etc/postfix/main.cf; Debian's postfix installed with
        # "No configuration" (as quickstart.sh does) has none: make an empty one for the run.
        self.system_main_cf = os.path.join(subprocess.run([POSTCONF, "-h", "-d", "config_directory"],
                                                          capture_output=True, text=True,
                                                          check=True).stdout.strip(), "main.cf")
        self.made_main_cf = not os.path.exists(self.system_main_cf)
        if self.made_main_cf:
            open(self.system_main_cf, "w").close()
        self.old_alternates = subprocess.run([POSTCONF, "-h", "alternate_config_directories"], capture_output=True,
                                             text=True).stdout.strip()
        dirs = [d for d in self.old_alternates.replace(",", " ").split() if d]
        subprocess.run([POSTCONF, "-e", "alternate_config_directories = %s" % " ".join(dirs + [self.conf])],
                       check=True)
        self.postfix("start")
        wait_port(self.port)

    def postfix(self, what):
        # postfix(1) only talks to a terminal or its log: script(1) gives it one.
        p = subprocess.run(["script", "-qc", "%s -c %s %s" % (POSTFIX, self.conf, what), "/dev/null"],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0 and what == "start":
            die("postfix start failed: %s" % p.stdout[-2000:])

    def cpu(self):
        return cpu_of(processes_of("/usr/lib/postfix/"))

    def stop(self):
        self.postfix("stop")
        subprocess.run([POSTCONF, "-e", "alternate_config_directories = %s" % self.old_alternates], check=False)
        if self.made_main_cf:
            os.unlink(self.system_main_cf)


def make_modules_loadable(top):
    # The loader refuses group/other-writable modules; a fresh build may have them 0775.
    path = os.path.join(top, "modules", ".libs")
    for name in os.listdir(path):
        if name.endswith(".so"):
            os.chmod(os.path.join(path, name), 0o755)
