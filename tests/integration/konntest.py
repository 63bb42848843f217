# SPDX-License-Identifier: Apache-2.0
"""konntest — harness for konn's loopback integration tests (standard library only, /usr/bin/python3).

Owns: a temp directory per test, the test PKI (generated once per process), free ports, the konn-server and
konn-agent processes of a test (stderr captured to a file, always stopped in cleanup), an HTTP CONNECT client
(Unix socket, or TLS with a client certificate), and loopback target servers (echo, sink, source, silent,
blackhole, refused port, tiny HTTP).

Environment:
  KONN_BUILDDIR       directory holding konn-server, konn-agent and konnctl (default: the repository root)
  KONN_SRCDIR         source tree holding tests/gen-certs.sh (default: the repository root)
  KONN_WRAPPER        command prepended to every daemon command line, e.g.
                      "valgrind --leak-check=full --error-exitcode=99 --errors-for-leak-kinds=definite";
                      daemons are then always stopped with SIGTERM and must exit 0; for valgrind,
                      tests/integration/valgrind.supp is added unless the wrapper names its own --suppressions
  KONN_TIMEOUT_SCALE  multiplier for every timeout (default 1, or 10 with a wrapper)
  KONN_SIZE_DIVISOR   divisor for the large transfer sizes (default 1, or 16 with a wrapper)
  KONN_KEEP=1         keep every test directory (failed tests always keep theirs)
  KONN_TMPDIR         where the per-process directory "konn-it.<pid>.*" holding the PKI and the test
                      directories is created (default: $TMPDIR or /tmp)
  KONN_MALLOC_CHECK=0 run daemons without MALLOC_PERTURB_ / tcache off (see daemon_env())
  KONN_SANITIZER=1    the daemons are an ASan + UBSan build (make check-asan): daemons get SANITIZER_OPTIONS
                      (ASAN_OPTIONS / UBSAN_OPTIONS already in the environment win), timeouts are scaled by 3 and
                      large transfers divided by 4 unless set above, and RSS bounds are relaxed (shadow memory,
                      quarantine).
Whatever the build, a sanitizer report (AddressSanitizer, LeakSanitizer, UBSan "runtime error:") in a daemon's
log fails the test that ran it (checked in cleanup, see SANITIZER_REPORT).
"""

import atexit
import collections
import hashlib
import http.server
import os
import random
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILDDIR = os.path.abspath(os.environ.get("KONN_BUILDDIR") or REPO)
SRCDIR = os.path.abspath(os.environ.get("KONN_SRCDIR") or REPO)
WRAPPER = shlex.split(os.environ.get("KONN_WRAPPER", ""))
VALGRIND_SUPP = os.path.join(HERE, "valgrind.supp")
if WRAPPER and os.path.basename(WRAPPER[0]) == "valgrind" and not any(a.startswith("--suppressions=")
                                                                       for a in WRAPPER):
    WRAPPER.insert(1, "--suppressions=" + VALGRIND_SUPP)
SANITIZER = os.environ.get("KONN_SANITIZER", "") not in ("", "0")
SCALE = float(os.environ.get("KONN_TIMEOUT_SCALE") or (10 if WRAPPER else 3 if SANITIZER else 1))
SIZE_DIVISOR = int(os.environ.get("KONN_SIZE_DIVISOR") or (16 if WRAPPER else 4 if SANITIZER else 1))
# Any report stops the daemon (halt_on_error, UBSan without recovery) with a distinct exit code; leaks are checked
# at exit. The quarantine is kept small so RSS-bounded tests measure the daemon, not ASan.
SANITIZER_OPTIONS = {
    "ASAN_OPTIONS": "halt_on_error=1:abort_on_error=0:exitcode=66:detect_leaks=1:quarantine_size_mb=16:"
                    "detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=67",
    "LSAN_OPTIONS": "exitcode=68",
}
# The first line of a sanitizer report.
SANITIZER_REPORT = re.compile(r"^(==\d+==ERROR: (AddressSanitizer|LeakSanitizer)|[^\s#:]+:\d+:\d+: runtime error: |"
                              r"SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer))", re.M)
KEEP = os.environ.get("KONN_KEEP", "") not in ("", "0")
TMPDIR = os.environ.get("KONN_TMPDIR") or None

_session_dir = None


def session_dir():
    """This process's private parent directory ("konn-it.<pid>.XXXXXXXX" in KONN_TMPDIR, $TMPDIR or /tmp) that
    holds the PKI and every test directory; removed at exit unless a kept test directory is still inside."""
    global _session_dir
    if _session_dir is None:
        _session_dir = tempfile.mkdtemp(prefix="konn-it.%d." % os.getpid(), dir=TMPDIR)
        atexit.register(_remove_session_dir, _session_dir)
    return _session_dir


def _remove_session_dir(d):
    shutil.rmtree(os.path.join(d, "certs"), ignore_errors=True)
    try:
        os.rmdir(d)
    except OSError:
        pass

SERVER_BIN = os.path.join(BUILDDIR, "konn-server")
AGENT_BIN = os.path.join(BUILDDIR, "konn-agent")
KONNCTL_BIN = os.path.join(BUILDDIR, "konnctl")
GEN_CERTS = os.path.join(SRCDIR, "tests", "gen-certs.sh")
CURL = "/usr/bin/curl"

MIB = 1 << 20

# MESSAGE_IDs from src/shared/log.h
MSG_AGENT_CONNECTED = "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a11"
MSG_AGENT_DISCONNECTED = "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a12"
MSG_SERVER_CONNECTED = "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a13"
MSG_SERVER_DISCONNECTED = "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a14"
MSG_TUNNEL_OPENED = "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a15"
MSG_TUNNEL_CLOSED = "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a16"
MSG_DIAL_FAILED = "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a17"
MSG_STARTED = "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a19"

# Exact response bytes (protocol.md §7.1 and §15).
RESP_200 = b"HTTP/1.1 200 Connection Established\r\n\r\n"
RESP_500_NO_AGENT = (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"
                     b"currently no tunnels available: No agent available")
RESP_400 = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
            b"400 Bad Request")
RESP_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\n\r\n431 Request Header Fields Too Large")
RESP_502_CONTEXT = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                    b"Backend context error: context canceled\r\n")

# konn's limits (README "Limits"): 503 with a one-line reason.
def _resp_503(reason):
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
            b"\r\n" + reason + b"\n")


RESP_503_FRONTEND = _resp_503(b"too many frontend connections")
RESP_503_DIALS = _resp_503(b"too many pending dials")
RESP_503_AGENT = _resp_503(b"every agent is at its tunnel limit")
RESP_503_NO_FDS = _resp_503(b"out of file descriptors")


def T(seconds):
    """A timeout, scaled for slow runs (valgrind)."""
    return seconds * SCALE


def big(nbytes):
    """A large transfer size, reduced for slow runs."""
    return max(nbytes // SIZE_DIVISOR, MIB)


# --------------------------------------------------------------------------------------------------------------
# Certificates and ports

_certs_dir = None
_certs_lock = threading.Lock()


def certs_dir():
    """Directory with the test PKI from tests/gen-certs.sh, generated once per process (again if it vanished)."""
    global _certs_dir
    with _certs_lock:
        if _certs_dir is None or not os.path.exists(os.path.join(_certs_dir, "wrongsan-server.key")):
            d = os.path.join(session_dir(), "certs")
            r = subprocess.run(["sh", GEN_CERTS, d], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            if r.returncode != 0:
                raise RuntimeError("gen-certs.sh failed: " + r.stdout.decode(errors="replace"))
            _certs_dir = d
        return _certs_dir


def cert(name):
    """Path of a file of the test PKI, e.g. cert("ca.crt")."""
    return os.path.join(certs_dir(), name)


_used_ports = set()


def _port_range():
    """20000..45000, cut below the kernel's ephemeral range so that no outgoing connection (the agent's own
    reconnection attempts included) can be handed one of our listening ports as its local port."""
    lo, hi = 20000, 45000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph_lo, eph_hi = (int(x) for x in f.read().split())
        if eph_lo - 1 - lo >= 2000:
            hi = min(hi, eph_lo - 1)
        elif eph_hi + 1 + 2000 <= hi:
            lo = max(lo, eph_hi + 1)
    except (OSError, ValueError):
        pass
    return lo, hi


def free_port():
    """A TCP port in 20000..45000 (see _port_range()) that nobody listens on now (tried by binding 0.0.0.0 without
    SO_REUSEADDR)."""
    lo, hi = _port_range()
    for _ in range(500):
        p = random.randint(lo, hi)
        if p in _used_ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("0.0.0.0", p))
        except OSError:
            continue
        finally:
            s.close()
        _used_ports.add(p)
        return p
    raise RuntimeError("no free port found in %d..%d" % (lo, hi))


# --------------------------------------------------------------------------------------------------------------
# Log lines: "<N>message KEY=value KEY=value ..."

LogLine = collections.namedtuple("LogLine", "prio message fields raw")

_LINE_RE = re.compile(r"^<([0-7])>(.*)$")
_FIELD_RE = re.compile(r" (MESSAGE_ID|KONN_[A-Z0-9_]+)=")


def parse_log_line(raw):
    m = _LINE_RE.match(raw)
    if not m:
        return None
    prio, rest = int(m.group(1)), m.group(2)
    matches = list(_FIELD_RE.finditer(rest))
    if not matches:
        return LogLine(prio, rest, {}, raw)
    fields = {}
    for i, fm in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(rest)
        fields[fm.group(1)] = rest[fm.end():end]
    return LogLine(prio, rest[:matches[0].start()], fields, raw)


def parse_log(text):
    """Every "<N>message KEY=value" line, and every logfmt line (what a daemon logs before its configuration, and
    with it --log-target, is applied) as the same LogLine."""
    return [ll for ll in (parse_log_line(x) or _logfmt_logline(x) for x in text.splitlines()) if ll]


# Log lines in logfmt (--log-target=logfmt, and "auto" when stderr is neither a terminal nor the journal):
# time=2026-12-07T16:41:02.123Z level=info msg="..." KEY=value ... (fields sorted by key).

LEVELS = ["emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"]
_LOGFMT_PAIR_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')


def _logfmt_unquote(v):
    if not v.startswith('"'):
        return v
    out, i, body = [], 0, v[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            if n == "x":
                out.append(chr(int(body[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append({"n": "\n", "t": "\t"}.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_logfmt_line(raw):
    """[(key, value), ...] in line order, or None if raw is not a whole logfmt line."""
    pairs, pos = [], 0
    for m in _LOGFMT_PAIR_RE.finditer(raw):
        if m.start() != pos:
            return None
        pairs.append((m.group(1), _logfmt_unquote(m.group(2))))
        pos = m.end()
    return pairs if pairs and pos == len(raw) else None


def _logfmt_logline(raw):
    pairs = parse_logfmt_line(raw)
    d = dict(pairs or [])
    if not pairs or pairs[0][0] != "time" or d.get("level") not in LEVELS or "msg" not in d:
        return None
    fields = {k: v for k, v in pairs[3:] if k == "MESSAGE_ID" or k.startswith("KONN_")}
    return LogLine(LEVELS.index(d["level"]), d["msg"], fields, raw)


def logfmt_to_prefixed(text):
    """logfmt lines as "<N>message" lines (what --log-target=stderr prints), other lines unchanged: for checks
    written against the priority-prefix form of messages logged before the configuration is applied."""
    out = []
    for raw in text.splitlines():
        pairs = parse_logfmt_line(raw)
        d = dict(pairs or [])
        if pairs and pairs[0][0] == "time" and d.get("level") in LEVELS and "msg" in d:
            out.append("<%d>%s" % (LEVELS.index(d["level"]), d["msg"]))
        else:
            out.append(raw)
    return "".join(x + "\n" for x in out)


# --------------------------------------------------------------------------------------------------------------
# Daemons


def clean_env(extra=None):
    env = dict(os.environ)
    for k in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "PROXY_AGENT_ID", "PROXY_SERVER_ID", "LISTEN_FDS", "LISTEN_PID",
              "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", "http_proxy", "https_proxy", "HTTP_PROXY",
              "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        env.pop(k, None)
    if extra:
        env.update(extra)
    return env


def daemon_env():
    """Environment of a daemon: clean_env(), plus (unless KONN_MALLOC_CHECK=0 or a wrapper is used) glibc malloc
    settings that turn most use-after-free reads into crashes: freed memory is filled with 0xa5 bytes and the
    per-thread cache, which skips that filling, is off."""
    extra = {}
    if SANITIZER:
        extra.update({k: v for k, v in SANITIZER_OPTIONS.items() if k not in os.environ})
    elif not WRAPPER and os.environ.get("KONN_MALLOC_CHECK", "1") != "0":
        extra["MALLOC_PERTURB_"] = "165"
        tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]
        extra["GLIBC_TUNABLES"] = ":".join(tunables + ["glibc.malloc.tcache_count=0"])
    return clean_env(extra)


class Daemon:
    """One konn-server or konn-agent process; stdout+stderr go to NAME.log in the test directory."""

    def __init__(self, name, argv, workdir):
        self.name = name
        self.argv = WRAPPER + list(argv)
        self.workdir = workdir
        self.log_path = os.path.join(workdir, name + ".log")
        self.proc = None
        self.killed = False
        self.exited_early = False
        self.returncode = None

    def start(self):
        with open(self.log_path, "ab") as f:
            f.write(("# " + " ".join(shlex.quote(a) for a in self.argv) + "\n").encode())
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._logf, stderr=self._logf,
                                     cwd=self.workdir, env=daemon_env())
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def lines(self):
        return parse_log(self.text())

    def mark(self):
        """Number of log lines so far; pass as since= to look only at newer lines."""
        return len(self.lines())

    def tail(self, n=60):
        return "\n".join(self.text().splitlines()[-n:])

    def sanitizer_report(self):
        """The sanitizer report in this daemon's log (from its first line, at most 60 lines), or None."""
        text = self.text()
        m = SANITIZER_REPORT.search(text)
        if not m:
            return None
        return "\n".join(text[m.start():].splitlines()[:60])

    def find(self, pattern=None, since=0, prio_max=7, **fields):
        """Log lines after `since` whose message matches the regex `pattern` and that carry the given fields."""
        out = []
        for ll in self.lines()[since:]:
            if ll.prio > prio_max:
                continue
            if pattern is not None and not re.search(pattern, ll.message):
                continue
            if any(ll.fields.get(k) != v for k, v in fields.items()):
                continue
            out.append(ll)
        return out

    def wait_for(self, pattern=None, timeout=10, since=0, prio_max=7, allow_exit=False, **fields):
        """Wait (bounded) for a matching log line and return it; AssertionError with the log tail otherwise."""
        deadline = time.monotonic() + T(timeout)
        while True:
            found = self.find(pattern, since=since, prio_max=prio_max, **fields)
            if found:
                return found[0]
            if not allow_exit and not self.alive():
                raise AssertionError("%s exited (rc %r) while waiting for %r %r; log:\n%s"
                                     % (self.name, self.proc.poll(), pattern, fields, self.tail()))
            if time.monotonic() >= deadline:
                raise AssertionError("%s: no log line %r %r within %.1f s; log:\n%s"
                                     % (self.name, pattern, fields, T(timeout), self.tail()))
            time.sleep(0.02)

    def rss_kib(self):
        """VmRSS of the process in KiB (None if it is gone)."""
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            return None
        return None

    def kill9(self):
        """SIGKILL and reap; cleanup does not check the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=T(10))
            self._logf.close()
        self.killed = True

    def wait_exit(self, timeout):
        """Wait (bounded) for the process to exit, which the test expects (the exit code is the test's to check;
        cleanup will not check it again), and return its exit code."""
        try:
            self.returncode = self.proc.wait(timeout=T(timeout))
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError("%s did not exit within %.1f s; log:\n%s" % (self.name, T(timeout), self.tail()))
        self.killed = True
        self._logf.close()
        return self.returncode

    def stop(self):
        """SIGTERM (a second one if the first only starts draining), wait, SIGKILL as a last resort.
        Returns the exit code, or None when the test already killed or reaped the daemon (kill9(), wait_exit())."""
        if self.proc is None or self.killed:
            return None
        self.exited_early = self.proc.poll() is not None
        # The agent drains on the first SIGTERM (waits for open connections) and exits on the second.
        for wait in (T(3), T(10)):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=T(10))
        self.returncode = self.proc.returncode
        self._logf.close()
        return self.returncode


# --------------------------------------------------------------------------------------------------------------
# Threads


class Bg(threading.Thread):
    """A daemon thread running fn(*args) that keeps its result or exception; join_result() re-raises."""

    def __init__(self, fn, *args, name=None):
        super().__init__(name=name, daemon=True)
        self.fn, self.args = fn, args
        self.result = None
        self.error = None

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except BaseException as e:  # noqa: BLE001 - re-raised in join_result()
            self.error = e

    def join_result(self, timeout):
        self.join(T(timeout))
        if self.is_alive():
            raise AssertionError("thread %s did not finish within %.1f s" % (self.name, T(timeout)))
        if self.error is not None:
            raise self.error
        return self.result


# --------------------------------------------------------------------------------------------------------------
# Data patterns


class Pattern:
    """A deterministic byte stream of `size` bytes: 64 KiB chunks of seeded random bytes, each prefixed with its
    chunk index and the seed so that reordered, duplicated or cross-connection data is detected."""

    CHUNK = 64 * 1024

    def __init__(self, size, seed=0):
        self.size, self.seed = size, seed
        self._base = random.Random(seed).randbytes(self.CHUNK)

    def chunks(self, chunk=None):
        off, i = 0, 0
        while off < self.size:
            c = i.to_bytes(8, "big") + self.seed.to_bytes(8, "big") + self._base[16:]
            n = min(len(c), self.size - off)
            yield c[:n]
            off += n
            i += 1

    def bytes(self):
        return b"".join(self.chunks())

    def sha256(self):
        h = hashlib.sha256()
        for c in self.chunks():
            h.update(c)
        return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Target servers (the "real destinations" the agent dials)


class ConnRecord:
    """What a target saw on one accepted connection."""

    def __init__(self, sock):
        self.sock = sock
        self.accepted_at = time.monotonic()
        self.nbytes = 0
        self.sent = 0
        self.sha = hashlib.sha256()
        self.data = bytearray()      # first KEEP_DATA bytes
        self.eof_at = None           # monotonic time the target saw EOF (or a reset)
        self.error = None
        self.done = threading.Event()

    KEEP_DATA = 1 * MIB

    def got(self, b):
        self.nbytes += len(b)
        self.sha.update(b)
        if len(self.data) < self.KEEP_DATA:
            self.data += b[:self.KEEP_DATA - len(self.data)]


class TargetServer:
    """Threaded TCP server on 127.0.0.1:<ephemeral>; subclasses implement handle(rec)."""

    def __init__(self, host="127.0.0.1"):
        v6 = ":" in host
        self.lsock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, 0))
        self.lsock.listen(512)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.addr = ("[%s]:%d" if v6 else "%s:%d") % (host, self.port)
        self.conns = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.stopping = False
        self.threads = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name=type(self).__name__)
        self._acceptor.start()

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(None)
            rec = ConnRecord(s)
            with self.cond:
                self.conns.append(rec)
                self.cond.notify_all()
            t = threading.Thread(target=self._run, args=(rec,), daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, rec):
        try:
            self.handle(rec)
        except OSError as e:
            rec.error = e
            if rec.eof_at is None:
                rec.eof_at = time.monotonic()
        finally:
            try:
                rec.sock.close()
            except OSError:
                pass
            rec.done.set()

    def recv_loop(self, rec, on_data=None):
        """Read until EOF (or reset); records bytes, sha and the EOF time."""
        buf = bytearray(256 * 1024)
        while True:
            try:
                n = rec.sock.recv_into(buf)
            except ConnectionResetError as e:
                rec.error = e
                n = 0
            if n == 0:
                rec.eof_at = time.monotonic()
                return
            b = bytes(buf[:n])
            rec.got(b)
            if on_data:
                on_data(b)

    def forget_done(self):
        """Drop the records and threads of finished connections (long runs: the soak test)."""
        with self.cond:
            self.conns = [r for r in self.conns if not r.done.is_set()]
            self.threads = [t for t in self.threads if t.is_alive()]

    def wait_conns(self, n, timeout=10):
        """Wait (bounded) until at least n connections were accepted; returns the records."""
        deadline = time.monotonic() + T(timeout)
        with self.cond:
            while len(self.conns) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: %d connections accepted, expected %d"
                                         % (type(self).__name__, len(self.conns), n))
                self.cond.wait(left)
            return list(self.conns)

    def close(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for rec in conns:
            try:
                rec.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(2)
        for t in self.threads:
            t.join(2)


class EchoServer(TargetServer):
    def handle(self, rec):
        def echo(b):
            rec.sock.sendall(b)
            rec.sent += len(b)
        self.recv_loop(rec, echo)


class SinkServer(TargetServer):
    """Reads to EOF; rec.sha / rec.nbytes / rec.data tell what arrived."""

    def handle(self, rec):
        self.recv_loop(rec)


class SourceServer(TargetServer):
    """Sends Pattern(size, seed) then closes (unless close=False); rec.sent tracks progress. With size=None it
    streams forever (until the peer goes away or the server is closed)."""

    def __init__(self, size, seed=1, close=True, host="127.0.0.1"):
        self.size, self.seed, self.close_after = size, seed, close
        super().__init__(host)

    def handle(self, rec):
        reader = threading.Thread(target=self._drain, args=(rec,), daemon=True)
        reader.start()
        if self.size is None:
            block = Pattern(Pattern.CHUNK, self.seed).bytes()
            while not self.stopping:
                rec.sock.sendall(block)
                rec.sent += len(block)
        else:
            for c in Pattern(self.size, self.seed).chunks():
                rec.sock.sendall(c)
                rec.sent += len(c)
        if self.close_after:
            rec.sock.shutdown(socket.SHUT_WR)
        reader.join(T(30))

    def _drain(self, rec):
        try:
            self.recv_loop(rec)
        except OSError:
            rec.eof_at = rec.eof_at or time.monotonic()


class SilentServer(TargetServer):
    """Accepts and reads, but never writes anything."""

    def handle(self, rec):
        self.recv_loop(rec)


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def cpu_seconds(pid):
    """User + system CPU time a process has used so far, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


SS = shutil.which("ss", path="/usr/bin:/bin:/usr/sbin:/sbin")


def syn_sent_count(port):
    """Number of TCP sockets (this network namespace) in SYN_SENT towards `port`: a dial in progress. Asks the
    kernel with a filter through ss(8) when it is there: /proc/net/tcp lists every socket, which takes seconds to
    read on a machine holding 100 000 connections (other tests running alongside)."""
    if SS:
        r = subprocess.run([SS, "-Htn", "state", "syn-sent", "dport = :%d" % port], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=T(10))
        if r.returncode == 0:
            return len([x for x in r.stdout.decode().splitlines() if x.strip()])
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "02" and int(parts[2].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except FileNotFoundError:
            pass
    return n


class Blackhole:
    """A listening socket whose accept queue is full, so that a further connect() to it never completes (on Linux
    the SYN is dropped while the queue is full). Used to make the agent's dial time out on loopback; a dial in
    progress shows up as a SYN_SENT socket (syn_sent_count(port))."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.fillers = []
        for _ in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(0.3)
            try:
                s.connect(("127.0.0.1", self.port))
                self.fillers.append(s)
            except (socket.timeout, OSError):
                s.close()
                break
        # Verify: one more connect must hang.
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", self.port))
            self.works = False
        except socket.timeout:
            self.works = True
        except OSError:
            self.works = False
        finally:
            probe.close()

    def close(self):
        for s in self.fillers:
            s.close()
        self.lsock.close()


class RefusedPort:
    """A port bound (so nobody else gets it) but not listening: connect() is refused."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port

    def close(self):
        self.sock.close()


class HttpTarget:
    """A tiny HTTP/1.1 server answering every GET with BODY."""

    BODY = b"konn integration test says hello\n"

    def __init__(self):
        body = self.BODY

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(2)


# --------------------------------------------------------------------------------------------------------------
# HTTP CONNECT client


class Client:
    """One frontend connection (Unix socket or TLS). All reads are bounded by timeouts."""

    def __init__(self, sock):
        self.sock = sock

    @classmethod
    def uds(cls, path, timeout=10):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(T(timeout))
        s.connect(path)
        return cls(s)

    @staticmethod
    def tls_context(cert_name="client", ca="ca.crt"):
        ctx = ssl.create_default_context(cafile=cert(ca))
        if cert_name:
            ctx.load_cert_chain(cert(cert_name + ".crt"), cert(cert_name + ".key"))
        return ctx

    @classmethod
    def tls(cls, port, cert_name="client", timeout=10, host="127.0.0.1"):
        ctx = cls.tls_context(cert_name)
        raw = socket.create_connection(("127.0.0.1", port), timeout=T(timeout))
        try:
            s = ctx.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        return cls(s)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.sock.sendall(data)

    def send_connect(self, dest, extra=b"", headers=b"Host: 127.0.0.1\r\n"):
        """The request kube-apiserver sends, plus optional pipelined bytes."""
        self.sock.sendall(b"CONNECT " + dest.encode() + b" HTTP/1.1\r\n" + headers + b"\r\n" + extra)

    def read_head(self, limit=64 * 1024):
        """Read byte by byte up to and including the first CRLFCRLF (never past it). Returns what was read; on
        EOF before the end of the head returns the partial bytes."""
        buf = bytearray()
        while not buf.endswith(b"\r\n\r\n") and len(buf) < limit:
            try:
                b = self.sock.recv(1)
            except ConnectionResetError:
                b = b""
            if not b:
                break
            buf += b
        return bytes(buf)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            b = self.sock.recv(min(n - len(buf), 1 << 20))
            if not b:
                raise AssertionError("EOF after %d of %d bytes" % (len(buf), n))
            buf += b
        return bytes(buf)

    def read_to_eof(self, timeout=10, limit=1 << 20):
        """Everything until EOF (a reset after data also counts as the end); AssertionError on timeout."""
        self.sock.settimeout(T(timeout))
        buf = bytearray()
        while len(buf) <= limit:
            try:
                b = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLEOFError):
                break
            except socket.timeout:
                raise AssertionError("no EOF within %.1f s; got %r" % (T(timeout), bytes(buf[:300])))
            if not b:
                break
            buf += b
        return bytes(buf)

    def pending_bytes(self, wait=0.2):
        """Bytes that arrive within `wait` seconds (b"" if none; None if the connection is at EOF)."""
        old = self.sock.gettimeout()
        self.sock.settimeout(wait)
        try:
            b = self.sock.recv(65536)
            return b if b else None
        except socket.timeout:
            return b""
        finally:
            self.sock.settimeout(old)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------------------------
# Test case base


class KonnTestCase(unittest.TestCase):
    """Per test: a temp directory, and everything started through it is stopped in cleanup."""

    maxDiff = None

    def setUp(self):
        # Short: the Unix socket path inside must stay well below 108 bytes.
        self.dir = tempfile.mkdtemp(prefix="%s-" % self._testMethodName[5:29], dir=session_dir())
        self.daemons = []
        self.closers = []
        self.sock_path = os.path.join(self.dir, "konn.sock")
        self.empty_conf = os.path.join(self.dir, "empty.conf")
        open(self.empty_conf, "w").close()
        certs_dir()
        for b in (SERVER_BIN, AGENT_BIN):
            if not os.access(b, os.X_OK):
                self.fail("%s is missing; build konn first (make) or set KONN_BUILDDIR" % b)
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for c in reversed(self.closers):
            try:
                c()
            except Exception:  # noqa: BLE001 - best effort
                pass
        bad = []
        for d in reversed(self.daemons):
            rc = d.stop()
            if d.exited_early:
                bad.append("%s exited by itself during the test (rc %d); log tail:\n%s" % (d.name, rc, d.tail(40)))
            elif rc is not None and rc != 0:
                bad.append("%s exited with %d on SIGTERM; log tail:\n%s" % (d.name, rc, d.tail(40)))
        for d in self.daemons:
            report = d.sanitizer_report()
            if report:
                bad.append("sanitizer report from %s:\n%s" % (d.name, report))
        if bad:
            self.fail("\n".join(bad))

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        try:
            return super().run(result)
        finally:
            failed = len(result.failures) + len(result.errors) > before
            if not hasattr(self, "dir"):
                pass  # setUp never ran (a class-level skip, or setUpClass failed)
            elif failed:
                sys.stderr.write("\n---- %s failed; test directory kept: %s\n" % (self.id(), self.dir))
                for d in self.daemons:
                    sys.stderr.write("---- %s log tail:\n%s\n" % (d.name, d.tail(40)))
            elif KEEP:
                sys.stderr.write("\n---- %s: test directory kept: %s\n" % (self.id(), self.dir))
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------------------------

    def track(self, obj):
        """Register a target/socket/client for closing in cleanup; returns it."""
        self.closers.append(obj.close)
        return obj

    def server_argv(self, agent_port, server_id="srv1", tcp_port=None, uds=True, extra=()):
        argv = [SERVER_BIN, "--config=" + self.empty_conf, "--mode=http-connect",
                "--agent-port=%d" % agent_port, "--agent-bind-address=127.0.0.1",
                "--health-port=0", "--admin-port=0",
                "--cluster-cert=" + cert("server.crt"), "--cluster-key=" + cert("server.key"),
                "--cluster-ca-cert=" + cert("ca.crt"),
                "--server-id=" + server_id, "--log-level=debug", "--log-target=stderr-fields"]
        if tcp_port is not None:
            argv += ["--server-port=%d" % tcp_port, "--server-bind-address=127.0.0.1",
                     "--server-cert=" + cert("server.crt"), "--server-key=" + cert("server.key"),
                     "--server-ca-cert=" + cert("ca.crt")]
        elif uds:
            argv += ["--uds-name=" + self.sock_path, "--server-port=0"]
        return argv + list(extra)

    def start_server(self, server_id="srv1", agent_port=None, tcp=False, extra=(), name=None, drop=()):
        """Start konn-server (UDS frontend, or TCP+mTLS with tcp=True) and wait for its startup line. Ports are
        picked afresh (up to 3 attempts) if the chosen one turns out to be taken. Sets self.agent_port and
        self.frontend_port. `drop` removes argv items starting with any of the given prefixes."""
        fixed = agent_port is not None
        for attempt in range(3):
            ap = agent_port if fixed else free_port()
            fp = free_port() if tcp else None
            argv = [a for a in self.server_argv(ap, server_id, tcp_port=fp, extra=extra)
                    if not any(a.startswith(p) for p in drop)]
            d = Daemon(name or "server-%s" % server_id, argv, self.dir).start()
            self.daemons.append(d)
            try:
                d.wait_for(MESSAGE_ID=MSG_STARTED, timeout=10)
            except AssertionError:
                if not d.alive() and "Failed to listen" in d.text() and attempt < 2 and not fixed:
                    d.stop()
                    self.daemons.remove(d)
                    continue
                raise
            self.agent_port, self.frontend_port = ap, fp
            return d
        raise AssertionError("could not start konn-server")

    def agent_argv(self, agent_id="node1", port=None, cert_name="agent", extra=()):
        argv = [AGENT_BIN, "--config=" + self.empty_conf,
                "--proxy-server-host=127.0.0.1", "--proxy-server-port=%d" % (port or self.agent_port),
                "--ca-cert=" + cert("ca.crt"), "--agent-id=" + agent_id,
                "--health-server-port=0", "--admin-server-port=0",
                "--log-level=debug", "--log-target=stderr-fields"]
        if cert_name:
            argv += ["--agent-cert=" + cert(cert_name + ".crt"), "--agent-key=" + cert(cert_name + ".key")]
        return argv + list(extra)

    def start_agent(self, agent_id="node1", server=None, wait=True, cert_name="agent", extra=(), name=None,
                    port=None, server_id="srv1"):
        """Start konn-agent; with wait=True wait until both sides log the connection."""
        since = server.mark() if server else 0
        d = Daemon(name or "agent-%s" % agent_id, self.agent_argv(agent_id, port, cert_name, extra), self.dir)
        d.start()
        self.daemons.append(d)
        if wait:
            d.wait_for(r"^Connected to server '%s'" % re.escape(server_id), timeout=10,
                       MESSAGE_ID=MSG_SERVER_CONNECTED, KONN_SERVER_ID=server_id, KONN_AGENT_ID=agent_id)
            if server:
                server.wait_for(r"^Agent '%s' connected" % re.escape(agent_id), since=since, timeout=10,
                                MESSAGE_ID=MSG_AGENT_CONNECTED, KONN_AGENT_ID=agent_id)
        return d

    def start_pair(self, **kw):
        s = self.start_server(**kw)
        a = self.start_agent(server=s)
        return s, a

    def start_reverse_pair(self, dests, listens, server_extra=(), agent_extra=(), agent_id="node1"):
        """Node -> control plane: konn-server with --reverse-destinations=dests ({name: "host:port"}) and konn-agent
        with --reverse-listen=listens ({name: "host:port" or socket path}); waits until the agent connected with
        the feature negotiated. Returns (server, agent)."""
        d = ",".join("%s=%s" % kv for kv in dests.items())
        ls = ",".join("%s=%s" % kv for kv in listens.items())
        server = self.start_server(extra=(["--reverse-destinations=" + d] if d else []) + list(server_extra))
        agent = self.start_agent(agent_id=agent_id, server=server,
                                 extra=(["--reverse-listen=" + ls] if ls else []) + list(agent_extra))
        return server, agent

    def reverse_client(self, address, timeout=10):
        """A Client connected to an agent's reverse listener ("host:port" or a socket path); tracked."""
        if address.startswith("/"):
            c = Client.uds(address, timeout)
        else:
            host, port = address.rsplit(":", 1)
            c = Client(socket.create_connection((host.strip("[]"), int(port)), timeout=T(timeout)))
        return self.track(c)

    def uds_client(self, timeout=10):
        c = Client.uds(self.sock_path, timeout)
        self.track(c)
        return c

    def tls_client(self, cert_name="client", timeout=10):
        c = Client.tls(self.frontend_port, cert_name, timeout)
        self.track(c)
        return c

    def open_tunnel(self, dest, client=None, extra=b""):
        """CONNECT through the UDS frontend (or the given client); asserts the exact 200 bytes and that nothing
        else is buffered behind them (kube-apiserver refuses that)."""
        c = client or self.uds_client()
        c.send_connect(dest, extra)
        head = c.read_head()
        self.assertEqual(head, RESP_200)
        return c

    def assert_echo(self, c, data):
        c.send(data)
        self.assertEqual(c.recv_exact(len(data)), data)

    def konnctl(self, *args, env=None, user=None, timeout=30, check_rc=None):
        """Run konnctl with args; (returncode, stdout, stderr) as text. env: extra variables. user: (uid, gid,
        [groups]) to drop to with setpriv (root only). check_rc: assert this exit status (stderr in the message)."""
        argv = [KONNCTL_BIN] + list(args)
        if user is not None:
            uid, gid, groups = user
            argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
                    ("--groups=" + ",".join(str(g) for g in groups)) if groups else "--clear-groups", "--"] + argv
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=clean_env(env), timeout=T(timeout))
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        if check_rc is not None:
            self.assertEqual(r.returncode, check_rc, "konnctl %s: stdout:\n%s\nstderr:\n%s" % (" ".join(args), out, err))
        return r.returncode, out, err

    def wait_until(self, pred, timeout, what):
        """Poll pred() (bounded); AssertionError naming `what` on timeout."""
        deadline = time.monotonic() + T(timeout)
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %.1f s waiting for %s" % (T(timeout), what))
            time.sleep(0.01)

    def wait_sources_blocked(self, recs, timeout, what, interval=0.5):
        """Wait until every SourceServer connection in recs has sent something and none sent more in the last
        `interval` seconds (their readers stopped and every buffer on the way is full)."""
        last = [None]

        def all_blocked():
            now = [r.sent for r in recs]
            if all(now) and now == last[0]:
                return True
            last[0] = now
            time.sleep(interval)
            return False
        self.wait_until(all_blocked, timeout, what)


def main():
    """unittest.main() plus one machine-readable line for run-all.sh: "konn-summary: ran=N failed=F skipped=S",
    counting test cases (a test with several failed subtests, or failing both in its body and in cleanup,
    counts once)."""
    prog = unittest.main(verbosity=2, exit=False)
    r = prog.result
    failed = {getattr(t, "test_case", t).id() for t, _ in r.failures + r.errors}
    failed |= {t.id() for t in r.unexpectedSuccesses}
    print("konn-summary: ran=%d failed=%d skipped=%d" % (r.testsRun, len(failed), len(r.skipped)), flush=True)
    sys.exit(0 if r.wasSuccessful() else 1)
