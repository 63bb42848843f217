# SPDX-License-Identifier: Apache-2.0
"""konnsd — helpers for konn's systemd-facing tests (standard library only, /usr/bin/python3).

Builds on tests/integration/konntest.py (daemons, PKI, targets, CONNECT client, KonnTestCase) and adds what
a service manager would provide, without needing systemd as PID 1:
  * NotifyListener: a NOTIFY_SOCKET datagram socket recording every sd_notify() message with the sender's pid;
  * EnvDaemon: a konntest.Daemon started with a chosen environment (NOTIFY_SOCKET, WATCHDOG_*, LISTEN_*);
  * SocketHolder: listening sockets held by the test and passed to successive daemon instances the way systemd
    passes a socket unit's sockets (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES), so a restart can be simulated;
  * the systemd-socket-activate(1) command line;
  * rendering of the .in units and man pages as `make` does (sed of @sbindir@/@sysconfdir@, key lists).
Every wait is bounded (konntest.T scales it) and everything started is stopped by the test's cleanup.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import konntest  # noqa: E402
from konntest import T  # noqa: E402,F401

SRCDIR = konntest.SRCDIR
BUILDDIR = konntest.BUILDDIR
SERVER_BIN = konntest.SERVER_BIN
AGENT_BIN = konntest.AGENT_BIN
MSG_RELOAD = "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a18"
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"

# Debian packages providing the tools these tests run (the systemd package is present even where systemd is not
# PID 1, e.g. in containers).
TOOLS = {"systemd-socket-activate": "systemd", "systemd-analyze": "systemd", "systemd-sysusers": "systemd",
         "systemd-tmpfiles": "systemd", "groff": "groff-base", "man": "man-db", "openssl": "openssl"}


def require_tools(*names):
    """AssertionError naming the Debian package when a tool is missing (a missing tool fails, never skips)."""
    missing = ["%s (package %s)" % (n, TOOLS.get(n, "?")) for n in names if not shutil.which(n)]
    if missing:
        raise AssertionError("missing tools: " + ", ".join(missing))


# --------------------------------------------------------------------------------------------------------------
# NOTIFY_SOCKET


class NotifyListener:
    """An AF_UNIX datagram socket at PATH (give it to a daemon as NOTIFY_SOCKET). Every datagram is recorded as
    (monotonic time, sender pid, [assignment lines]) in arrival order."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages = []
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True, name="notify")
        self.thread.start()

    def _loop(self):
        creds_size = socket.CMSG_SPACE(struct.calcsize("3i"))
        while not self.stopping:
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, creds_size)
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", cdata[:12])[0]
            lines = [x for x in data.decode("utf-8", errors="replace").split("\n") if x]
            with self.cond:
                self.messages.append((time.monotonic(), pid, lines))
                self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.messages)

    def lines(self, since=0, pid=None):
        """Flattened assignment lines of the messages after `since` (optionally from one pid only)."""
        with self.cond:
            msgs = self.messages[since:]
        return [ln for _, p, ls in msgs if pid is None or p == pid for ln in ls]

    def times(self, line, since=0):
        """Monotonic arrival times of every message carrying exactly `line`."""
        with self.cond:
            return [t for t, _, ls in self.messages[since:] if line in ls]

    def wait_for(self, pred, timeout=10, since=0, what=None):
        """Wait (bounded) for a line matching pred (a string: exact line, or a callable); returns the index of
        the message holding it."""
        match = (lambda ln: ln == pred) if isinstance(pred, str) else pred
        deadline = time.monotonic() + T(timeout)
        with self.cond:
            i = since
            while True:
                while i < len(self.messages):
                    if any(match(ln) for ln in self.messages[i][2]):
                        return i
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no notify message %s within %.1f s; got %r"
                                         % (what or repr(pred), T(timeout), self.lines_locked(since)))
                self.cond.wait(left)

    def lines_locked(self, since):
        return [ln for _, _, ls in self.messages[since:] for ln in ls]

    def close(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        self.thread.join(2)


def status_lines(lines):
    return [ln[len("STATUS="):] for ln in lines if ln.startswith("STATUS=")]


def state_lines(lines):
    """READY=1 / RELOADING=1 / STOPPING=1 only, in order (what the state machine of a Type=notify unit sees)."""
    return [ln for ln in lines if ln in ("READY=1", "RELOADING=1", "STOPPING=1")]


# --------------------------------------------------------------------------------------------------------------
# Daemons with an environment


class EnvDaemon(konntest.Daemon):
    """A konntest.Daemon whose environment is clean_env() plus `env`; argv is used as is (no KONN_WRAPPER added
    here: put konntest.WRAPPER where it belongs, e.g. after systemd-socket-activate's own options)."""

    def __init__(self, name, argv, workdir, env=None, pass_fds=()):
        super().__init__(name, [], workdir)
        self.argv = list(argv)
        self.env = env or {}
        self.pass_fds = tuple(pass_fds)

    def start(self):
        with open(self.log_path, "ab") as f:
            f.write(("# " + " ".join(shlex.quote(a) for a in self.argv) + "\n").encode())
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._logf, stderr=self._logf,
                                     cwd=self.workdir, env=konntest.clean_env(self.env), pass_fds=self.pass_fds)
        return self


def with_own_pid(argv, **env_from_pid):
    """argv run through sh so that the given variables are set to the process's own pid before exec (the pid
    stays the same across exec, also through valgrind): with_own_pid(argv, WATCHDOG_PID=True)."""
    exports = " ".join("%s=$$" % k for k in env_from_pid)
    return ["/bin/sh", "-c", "export %s; exec \"$@\"" % exports, "sh"] + list(argv)


def socket_activate_argv(listens, fdnames, argv, env=None):
    """systemd-socket-activate(1) of systemd 252: one -l per socket, names as --fdname=a:b (in -l order),
    variables for the child only through -E (it does not pass its own environment on). The child is exec'd,
    keeping the pid, after the first connection attempt on any of the sockets."""
    cmd = [SOCKET_ACTIVATE]
    for addr in listens:
        cmd += ["-l", addr]
    cmd.append("--fdname=" + ":".join(fdnames))
    for k, v in (env or {}).items():
        cmd += ["-E", "%s=%s" % (k, v)]
    return cmd + konntest.WRAPPER + list(argv)


class SocketHolder:
    """Listening sockets owned by the test, like a socket unit's: they outlive each daemon instance started with
    them. daemon(...) passes them as fds 3.. with LISTEN_FDS, LISTEN_PID (the child's own pid) and
    LISTEN_FDNAMES, as systemd does."""

    # Runs in the child: move the inherited fds to 3.., set LISTEN_*, exec (the pid stays the same).
    SHIM = (
        "import fcntl, os, sys\n"
        "fds = [int(x) for x in sys.argv[1].split(',')]\n"
        "tmp = [fcntl.fcntl(f, fcntl.F_DUPFD, 100) for f in fds]\n"
        "for f in fds:\n"
        "    os.close(f)\n"
        "for i, t in enumerate(tmp):\n"
        "    os.dup2(t, 3 + i)\n"
        "    os.close(t)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=sys.argv[2])\n"
        "os.execv(sys.argv[3], sys.argv[3:])\n")

    def __init__(self, nonblocking=True):
        # konn-server.service sets NonBlocking=yes; systemd's default (and systemd-socket-activate's) is blocking.
        self.nonblocking = nonblocking
        self.socks = []  # (name, socket)

    def add_unix(self, name, path, backlog=64):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(backlog)
        s.setblocking(not self.nonblocking)
        self.socks.append((name, s))
        return s

    def add_tcp(self, name, host="127.0.0.1", backlog=64):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        s.listen(backlog)
        s.setblocking(not self.nonblocking)
        self.socks.append((name, s))
        return s.getsockname()[1]

    def daemon(self, name, argv, workdir, env=None):
        """An EnvDaemon (not started yet) that receives the sockets."""
        fds = [s.fileno() for _, s in self.socks]
        cmd = konntest.WRAPPER + list(argv)
        if not os.path.isabs(cmd[0]):
            cmd[0] = shutil.which(cmd[0]) or cmd[0]
        full = ["/usr/bin/python3", "-c", self.SHIM, ",".join(map(str, fds)),
                ":".join(nm for nm, _ in self.socks)] + cmd
        return EnvDaemon(name, full, workdir, env=env, pass_fds=fds)

    def close(self):
        for _, s in self.socks:
            s.close()
        self.socks = []


# --------------------------------------------------------------------------------------------------------------
# Units and man pages, rendered as make does


def render_in(path, subst):
    with open(path) as f:
        text = f.read()
    for k, v in subst.items():
        text = text.replace("@%s@" % k, v)
    return text


def man_keys(which):
    """The .TP key list of `which` ("server"/"agent") from tools/man-keys when built, else a sample."""
    tool = os.path.join(BUILDDIR, "tools", "man-keys")
    if os.access(tool, os.X_OK):
        r = subprocess.run([tool, which], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        if r.returncode == 0 and r.stdout:
            return r.stdout.decode()
    return (".TP\n\\fB\\-\\-sample\\-key\\fR=\\fIINT\\fR\nA sample key. Default: \\fB1\\fR.\n"
            ".TP\n\\fB\\-\\-other\\-key\\fR[=\\fIBOOL\\fR]\nAnother sample key. Default: \\fBfalse\\fR.\n")


def render_man(path, subst):
    """A man/*.in page with @SERVER_KEYS@/@AGENT_KEYS@ lines replaced by the generated key lists."""
    out = []
    for line in render_in(path, subst).splitlines(keepends=True):
        if line.rstrip("\n") == "@SERVER_KEYS@":
            out.append(man_keys("server"))
        elif line.rstrip("\n") == "@AGENT_KEYS@":
            out.append(man_keys("agent"))
        else:
            out.append(line)
    return "".join(out)


UNIT_SUBST = {"sbindir": "/usr/sbin", "sysconfdir": "/etc", "PACKAGE_VERSION": "0"}
UNIT_FILES = ["konn-server.service", "konn-server.socket", "konn-server-agent.socket", "konn-agent.service",
              "konn-agent.socket", "konn-server-admin.socket", "konn-agent-admin.socket"]
MAN_PAGES = ["konn-server.8", "konn-agent.8", "konn.conf.5", "konnctl.1"]


def leftover_placeholders(text):
    return sorted(set(re.findall(r"@[A-Za-z_]+@", text)))


# --------------------------------------------------------------------------------------------------------------
# Test case base


class SdTestCase(konntest.KonnTestCase):
    """konntest.KonnTestCase plus NOTIFY_SOCKET listeners and daemons stopped by the test itself."""

    def notify_listener(self, name="notify"):
        n = NotifyListener(os.path.join(self.dir, name + ".sock"))
        self.closers.append(n.close)
        return n

    def stop_daemon(self, d, timeout=10):
        """SIGTERM once and wait (bounded) for the exit code; the cleanup then leaves d alone."""
        d.proc.send_signal(signal.SIGTERM)
        rc = d.wait_exit(timeout)
        d._logf.close()
        d.killed = True  # handled: konntest's cleanup must not treat it as "exited by itself"
        return rc

    def reap(self, d, timeout):
        """Wait (bounded) for d to exit on its own; returns the exit code; the cleanup then leaves d alone."""
        rc = d.wait_exit(timeout)
        d._logf.close()
        d.killed = True
        return rc

    def start_env_daemon(self, name, argv, env=None):
        d = EnvDaemon(name, konntest.WRAPPER + list(argv), self.dir, env=env).start()
        self.daemons.append(d)
        return d


# --------------------------------------------------------------------------------------------------------------
# Certificates issued by the test CA (for rotation)

_EXT = {
    "client": "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=clientAuth\n",
    "server": "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=serverAuth,clientAuth\n"
              "subjectAltName=DNS:localhost,DNS:kubernetes,IP:127.0.0.1,IP:::1\n",
}


def issue_cert(directory, name, cn, kind="client"):
    """A fresh EC key and a certificate CN=cn signed by the test CA of tests/gen-certs.sh (same CA as the
    daemons trust); returns (crt path, key path)."""
    key = os.path.join(directory, name + ".key")
    crt = os.path.join(directory, name + ".crt")
    csr = os.path.join(directory, name + ".csr")
    ext = os.path.join(directory, name + ".ext")
    with open(ext, "w") as f:
        f.write(_EXT[kind])

    def ossl(*args):
        r = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60, env=dict(os.environ, OPENSSL_CONF="/dev/null"))
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (args[0], r.stdout.decode(errors="replace")))

    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    ossl("req", "-new", "-key", key, "-subj", "/CN=" + cn, "-out", csr)
    ossl("x509", "-req", "-in", csr, "-CA", konntest.cert("ca.crt"), "-CAkey", konntest.cert("ca.key"),
         "-set_serial", "0x" + os.urandom(16).hex(), "-days", "30", "-sha256", "-extfile", ext, "-out", crt)
    os.unlink(csr)
    os.unlink(ext)
    return crt, key


def replace_file(src, dst):
    """Atomically replace dst with a copy of src (what a certificate renewal tool does)."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.rename(tmp, dst)
