# SPDX-License-Identifier: Apache-2.0
"""Soak: konn-server + konn-agent under a mixed workload for KONN_SOAK_DURATION (make soak DURATION=...).

Workload, all through the HTTP CONNECT frontend (Unix socket) and one agent, concurrently:
  * dialers (2 threads): a tunnel to an echo target, 1 B-64 KiB of random bytes there and back, close;
  * bulk: 8 MiB (KONN_SIZE_DIVISOR applies) of a Pattern to the echo target, read back while writing;
  * slow reader: a 4 MiB download from a source target read 64 KiB at a time with 50 ms pauses;
  * failed dials: CONNECT to a refused port, exact 502 bytes with Go's error text;
  * agent restarts every RESTART seconds, alternating a graceful stop (SIGTERM, drain) and a crash (SIGKILL);
  * reloads every RELOAD seconds with certificate rotation, alternating the server's agent-listener certificate
    and the agent's client certificate (a fresh certificate from the test CA copied over the live file, SIGHUP,
    "Configuration reloaded" expected).
Every received byte is compared: a tunnel cut short by an agent restart may end early (its bytes must still be an
exact prefix) and dials may fail while no agent is connected; outside those windows any failure is unexpected.
Reloads excuse nothing (tunnels survive reloads).

Samples (every SAMPLE seconds) of VmRSS and open fds of both daemons go to samples.csv in KONN_SOAK_OUT (default:
the test directory, kept); events.log lists restarts, reloads and unexpected errors; verdict.txt the verdict.

Verdict: pass when (1) no transfer was corrupt, (2) no unexpected error, (3) after warm-up (20 % of the run, at
least 20 s, at most 5 min) the least-squares trend of the server's RSS, and of each agent incarnation's RSS long
enough to judge, projects less than max(8 MiB, 10 % of the level) of growth over the measured span, and (4) once the
workload stopped and drained, both daemons hold exactly as many fds as they did idle before it started.
"""

import csv
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "systemd"))
import konntest as kt  # noqa: E402
import konnsd  # noqa: E402
from konntest import T  # noqa: E402


def parse_duration(s):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", s or "")
    if not m:
        raise ValueError("bad duration %r (want e.g. 120, 90s, 10m, 1h)" % s)
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


DURATION = parse_duration(os.environ.get("KONN_SOAK_DURATION", "120"))
OUT = os.environ.get("KONN_SOAK_OUT") or None
SAMPLE = 5.0 if DURATION >= 900 else 2.0
RESTART = min(max(DURATION / 3, 30), 300)
RELOAD = min(max(DURATION / 4, 20), 120)
WARMUP = min(max(DURATION * 0.2, 20), 300)
BULK = kt.big(8 * kt.MIB)
SLOW = 4 * kt.MIB
MSG_RELOAD = konnsd.MSG_RELOAD


def proc_status(pid):
    """(VmRSS KiB, open fds) of pid, or (None, None) if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), None)
        return rss, len(os.listdir("/proc/%d/fd" % pid))
    except (FileNotFoundError, ProcessLookupError):
        return None, None


def trend_growth(points):
    """Least-squares slope of (t, v) times the time span: the growth the trend projects over the samples."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return 0.0, mv
    slope = sum((t - mt) * (v - mv) for t, v in points) / den
    return slope * (points[-1][0] - points[0][0]), mv


class Broken(Exception):
    """A tunnel ended early or a dial failed: excusable only during an agent restart."""


class Corrupt(Exception):
    """Bytes that differ from what was sent: never excusable."""


class Soak(kt.KonnTestCase):

    def setUp(self):
        super().setUp()
        konnsd.require_tools("openssl")
        self.out = OUT or os.path.join(self.dir, "soak")
        os.makedirs(self.out, exist_ok=True)
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.counts = {k: 0 for k in ("dial_ok", "bulk_ok", "slow_ok", "refused_ok", "excused", "corrupt",
                                      "unexpected", "bytes")}
        self.windows = []          # [start, end] of agent restarts (end None while in progress)
        self.events = open(os.path.join(self.out, "events.log"), "w")
        self.closers.append(self.events.close)
        self.stop = threading.Event()

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    def now(self):
        return time.monotonic() - self.t0

    def event(self, what):
        with self.lock:
            self.events.write("%9.1f %s\n" % (self.now(), what))
            self.events.flush()

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def excused(self, start, end):
        with self.lock:
            return any(s <= end and (e is None or start <= e) for s, e in self.windows)

    def run_op(self, name, fn):
        start = self.now()
        try:
            fn()
        except Corrupt as e:
            self.count("corrupt")
            self.event("CORRUPT %s: %s" % (name, e))
        except (Broken, OSError, AssertionError) as e:
            if self.excused(start, self.now()):
                self.count("excused")
            else:
                self.count("unexpected")
                self.event("UNEXPECTED %s: %s: %s" % (name, type(e).__name__, e))

    def tunnel(self, dest):
        c = kt.Client.uds(self.sock_path, timeout=30)
        try:
            c.send_connect(dest)
            head = c.read_head()
            if head != kt.RESP_200:
                rest = c.pending_bytes(wait=0.2) or b""
                raise Broken("dial to %s answered %r" % (dest, (head + rest)[:200]))
        except BaseException:
            c.close()
            raise
        return c

    # -- workload ------------------------------------------------------------------------------------------------

    def op_dial(self, rng):
        data = rng.randbytes(rng.randint(1, 64 * 1024))
        c = self.tunnel(self.echo.addr)
        try:
            c.send(data)
            got = bytearray()
            while len(got) < len(data):
                b = c.sock.recv(len(data) - len(got))
                if not b:
                    break
                got += b
            if bytes(got) != data[:len(got)]:
                raise Corrupt("echo of %d bytes differs at %d" % (len(data), next(
                    i for i in range(len(got)) if got[i] != data[i])))
            if len(got) < len(data):
                raise Broken("echo ended after %d of %d bytes" % (len(got), len(data)))
        finally:
            c.close()
        self.count("dial_ok")
        self.count("bytes", 2 * len(data))

    def op_bulk(self, seed):
        expected = kt.Pattern(BULK, seed=seed).bytes()
        c = self.tunnel(self.echo.addr)
        c.settimeout(T(60))

        def write():
            for off in range(0, len(expected), 256 * 1024):
                c.sock.sendall(expected[off:off + 256 * 1024])

        w = kt.Bg(write, name="bulk-writer")
        w.start()
        got = 0
        try:
            buf = bytearray(1 << 20)
            while got < len(expected):
                k = c.sock.recv_into(buf)
                if k == 0:
                    break
                if buf[:k] != expected[got:got + k]:
                    raise Corrupt("bulk echo differs in bytes %d..%d" % (got, got + k))
                got += k
            if got < len(expected):
                raise Broken("bulk echo ended after %d of %d bytes" % (got, len(expected)))
            w.join_result(60)
        finally:
            c.close()
            w.join(T(10))
        self.count("bulk_ok")
        self.count("bytes", 2 * len(expected))

    def op_slow(self):
        c = self.tunnel(self.source.addr)
        c.settimeout(T(30))
        h = hashlib.sha256()
        got = 0
        try:
            while True:
                b = c.sock.recv(64 * 1024)
                if not b:
                    break
                h.update(b)
                got += len(b)
                if got > SLOW:
                    raise Corrupt("slow download longer than %d bytes" % SLOW)
                time.sleep(0.05)
        finally:
            c.close()
        if got < SLOW:
            raise Broken("slow download ended after %d of %d bytes" % (got, SLOW))
        if h.hexdigest() != self.source_sha:
            raise Corrupt("slow download of %d bytes has the wrong sha256" % got)
        self.count("slow_ok")
        self.count("bytes", got)

    def op_refused(self):
        c = kt.Client.uds(self.sock_path, timeout=30)
        try:
            c.send_connect(self.refused.addr)
            got = c.read_to_eof(timeout=30)
        finally:
            c.close()
        if got != self.refused_resp:
            raise Broken("refused dial answered %r" % got[:200])
        self.count("refused_ok")

    def worker(self, name, op, pause):
        rng = random.Random(name)
        seed = 1000
        while not self.stop.is_set():
            seed += 1
            self.run_op(name, lambda: op(rng) if name.startswith("dial") else op(seed) if name == "bulk" else op())
            self.stop.wait(pause)

    # -- disturbances --------------------------------------------------------------------------------------------

    def restart_agent(self, n):
        crash = n % 2 == 0
        with self.lock:
            self.windows.append([self.now(), None])
        self.event("agent restart %d (%s)" % (n, "SIGKILL" if crash else "SIGTERM, drain"))
        old = self.agent
        if crash:
            old.kill9()
        else:
            old.proc.send_signal(signal.SIGTERM)
            rc = old.wait_exit(30)
            if rc != 0:
                self.count("unexpected")
                self.event("UNEXPECTED agent exited with %d on SIGTERM" % rc)
        since = self.server.mark()
        self.agent = self.start_agent_now("agent-%d" % n)
        self.server.wait_for(r"^Agent 'node1' connected", since=since, timeout=30)
        # Reconnected; dials already queued behind the restart get a moment to settle.
        time.sleep(1)
        with self.lock:
            self.windows[-1][1] = self.now()
        self.event("agent restart %d done (pid %d)" % (n, self.agent.pid))

    def start_agent_now(self, name):
        argv = self.agent_argv("node1", cert_name=None, extra=[
            "--agent-cert=" + self.agent_crt, "--agent-key=" + self.agent_key, "--drain-timeout=2s",
            "--log-level=info"])
        d = kt.Daemon(name, argv, self.dir).start()
        self.daemons.append(d)
        return d

    def reload(self, n):
        who = self.server if n % 2 == 0 else self.agent
        crt, key = (self.server_crt, self.server_key) if who is self.server else (self.agent_crt, self.agent_key)
        new_crt, new_key = konnsd.issue_cert(self.dir, "rot%d" % n, "konn-rotated-%d" % n,
                                             "server" if who is self.server else "client")
        konnsd.replace_file(new_key, key)
        konnsd.replace_file(new_crt, crt)
        since = who.mark()
        self.event("reload %d: %s certificate rotated, SIGHUP" % (n, who.name))
        who.proc.send_signal(signal.SIGHUP)
        try:
            who.wait_for(r"^Configuration reloaded", since=since, timeout=15, MESSAGE_ID=MSG_RELOAD)
        except AssertionError as e:
            self.count("unexpected")
            self.event("UNEXPECTED reload %d of %s: %s" % (n, who.name, str(e).splitlines()[0]))

    # -- the run -------------------------------------------------------------------------------------------------

    def test_soak(self):
        self.server_crt, self.server_key = self.live_copy("server")
        self.agent_crt, self.agent_key = self.live_copy("agent")
        self.agent_port = kt.free_port()
        argv = [a for a in self.server_argv(self.agent_port) if not a.startswith(("--cluster-cert=", "--cluster-key="))]
        self.server = kt.Daemon("server", argv + ["--cluster-cert=" + self.server_crt,
                                                  "--cluster-key=" + self.server_key,
                                                  "--log-level=info"], self.dir).start()
        self.daemons.append(self.server)
        self.server.wait_for(MESSAGE_ID=kt.MSG_STARTED, timeout=10)
        self.agent = self.start_agent_now("agent-0")
        self.server.wait_for(r"^Agent 'node1' connected", timeout=15)

        self.echo = self.track(kt.EchoServer())
        self.source = self.track(kt.SourceServer(SLOW, seed=77))
        self.source_sha = kt.Pattern(SLOW, seed=77).sha256()
        self.refused = self.track(kt.RefusedPort())
        self.refused_resp = (b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Type: text/plain; "
                             b"charset=utf-8\r\n\r\ndial tcp 127.0.0.1:%d: connect: connection refused"
                             % self.refused.port)
        # One tunnel opened and closed, so lazily created state exists before the baseline is taken.
        self.run_op("warm", lambda: self.op_dial(random.Random(0)))
        time.sleep(T(1))
        base_fds = {"server": proc_status(self.server.pid)[1], "agent": proc_status(self.agent.pid)[1]}
        self.event("baseline fds %r, duration %.0f s, restart every %.0f s, reload every %.0f s, warm-up %.0f s"
                   % (base_fds, DURATION, RESTART, RELOAD, WARMUP))

        workers = [kt.Bg(self.worker, "dial-a", self.op_dial, 0.02, name="dial-a"),
                   kt.Bg(self.worker, "dial-b", self.op_dial, 0.02, name="dial-b"),
                   kt.Bg(self.worker, "bulk", self.op_bulk, 0.5, name="bulk"),
                   kt.Bg(self.worker, "slow", self.op_slow, 0.5, name="slow"),
                   kt.Bg(self.worker, "refused", self.op_refused, 0.5, name="refused")]
        for w in workers:
            w.start()

        samples = []   # (t, server rss, server fds, agent pid, agent rss, agent fds)
        csv_path = os.path.join(self.out, "samples.csv")
        with open(csv_path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["t_s", "server_rss_kib", "server_fds", "agent_pid", "agent_rss_kib", "agent_fds",
                          "dial_ok", "bulk_ok", "slow_ok", "refused_ok", "excused", "corrupt", "unexpected",
                          "mib_moved"])
            start = self.now()
            next_sample = start
            next_restart = start + RESTART
            next_reload = start + RELOAD
            restarts = reloads = 0
            while self.now() < start + DURATION:
                t = self.now()
                if t >= next_sample:
                    srss, sfds = proc_status(self.server.pid)
                    arss, afds = proc_status(self.agent.pid)
                    with self.lock:
                        c = dict(self.counts)
                    row = (round(t - start, 1), srss, sfds, self.agent.pid, arss, afds)
                    samples.append(row)
                    out.writerow(list(row) + [c["dial_ok"], c["bulk_ok"], c["slow_ok"], c["refused_ok"],
                                              c["excused"], c["corrupt"], c["unexpected"], c["bytes"] >> 20])
                    f.flush()
                    self.echo.forget_done()
                    self.source.forget_done()
                    next_sample += SAMPLE
                if t >= next_restart and t < start + DURATION - 15:
                    restarts += 1
                    self.restart_agent(restarts)
                    next_restart = self.now() + RESTART
                if t >= next_reload and t < start + DURATION - 10:
                    reloads += 1
                    self.reload(reloads)
                    next_reload = self.now() + RELOAD
                time.sleep(0.1)

            self.stop.set()
            for w in workers:
                w.join_result(120)
            if not self.server.alive() or not self.agent.alive():
                self.count("unexpected")
                self.event("UNEXPECTED a daemon died: server alive %s, agent alive %s"
                           % (self.server.alive(), self.agent.alive()))
            # Drained: the fd counts return to the baseline (bounded wait, the agent may still be closing).
            end_fds = {}
            deadline = time.monotonic() + T(20)
            while True:
                end_fds = {"server": proc_status(self.server.pid)[1], "agent": proc_status(self.agent.pid)[1]}
                if end_fds == base_fds or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            srss, sfds = proc_status(self.server.pid)
            arss, afds = proc_status(self.agent.pid)
            row = (round(self.now() - start, 1), srss, sfds, self.agent.pid, arss, afds)
            samples.append(row)
            with self.lock:
                c = dict(self.counts)
            out.writerow(list(row) + [c["dial_ok"], c["bulk_ok"], c["slow_ok"], c["refused_ok"], c["excused"],
                                      c["corrupt"], c["unexpected"], c["bytes"] >> 20])

        # -- verdict -------------------------------------------------------------------------------------------
        fails = []
        lines = []
        if c["corrupt"]:
            fails.append("%d corrupt transfers" % c["corrupt"])
        if c["unexpected"]:
            fails.append("%d unexpected errors (events.log)" % c["unexpected"])
        for what, ok in (("dials", c["dial_ok"]), ("bulk transfers", c["bulk_ok"]), ("slow downloads", c["slow_ok"]),
                         ("refused dials", c["refused_ok"])):
            if ok == 0:
                fails.append("no successful %s" % what)

        def judge(name, points):
            points = [(t, v) for t, v in points if v is not None]
            if len(points) < 8:
                lines.append("%s: %d samples after warm-up, too few to judge a trend" % (name, len(points)))
                return
            growth, level = trend_growth(points)
            bound = max(8 * 1024, 0.10 * level)
            vals = [v for _, v in points]
            lines.append("%s RSS after warm-up: first %d KiB, last %d KiB, max %d KiB, trend %+.0f KiB over %.0f s "
                         "(bound %.0f KiB)" % (name, vals[0], vals[-1], max(vals), growth,
                                               points[-1][0] - points[0][0], bound))
            if growth > bound:
                fails.append("%s RSS grows: trend %+.0f KiB > %.0f KiB" % (name, growth, bound))

        judge("server", [(s[0], s[1]) for s in samples if s[0] >= WARMUP])
        by_pid = {}
        for s in samples:
            by_pid.setdefault(s[3], []).append(s)
        for pid, ss in by_pid.items():
            first = ss[0][0]
            judge("agent pid %d" % pid, [(s[0], s[4]) for s in ss if s[0] >= first + min(WARMUP, 30)])
        if end_fds != base_fds:
            fails.append("fds after the workload %r != idle before it %r" % (end_fds, base_fds))
        srv = [s for s in samples if s[1] is not None]
        lines.insert(0, "server RSS KiB: start %d, after warm-up %d, end %d, max %d; fds: start %d, max %d, end %d"
                     % (srv[0][1], next((s[1] for s in srv if s[0] >= WARMUP), srv[-1][1]), srv[-1][1],
                        max(s[1] for s in srv), srv[0][2], max(s[2] for s in srv), srv[-1][2]))
        agt = [s for s in samples if s[4] is not None]
        lines.insert(1, "agent RSS KiB: start %d, end %d, max %d; fds: start %d, max %d, end %d; %d incarnations"
                     % (agt[0][4], agt[-1][4], max(s[4] for s in agt), agt[0][5], max(s[5] for s in agt),
                        agt[-1][5], len(by_pid)))
        lines.insert(2, "work: %d dials, %d bulk (%d MiB each), %d slow downloads, %d refused dials, %d MiB moved; "
                        "%d excused by agent restarts, %d corrupt, %d unexpected; %d restarts, %d reloads; "
                        "fds idle before %r, after %r"
                     % (c["dial_ok"], c["bulk_ok"], BULK >> 20, c["slow_ok"], c["refused_ok"], c["bytes"] >> 20,
                        c["excused"], c["corrupt"], c["unexpected"], restarts, reloads, base_fds, end_fds))
        verdict = "PASS" if not fails else "FAIL: " + "; ".join(fails)
        text = "konn soak, %.0f s: %s\n%s\n" % (DURATION, verdict, "\n".join(lines))
        with open(os.path.join(self.out, "verdict.txt"), "w") as f:
            f.write(text)
        sys.stderr.write("\n" + text + "samples: %s\n" % csv_path)
        self.assertEqual(fails, [])

    def live_copy(self, name):
        crt, key = os.path.join(self.dir, name + "-live.crt"), os.path.join(self.dir, name + "-live.key")
        shutil.copyfile(kt.cert(name + ".crt"), crt)
        shutil.copyfile(kt.cert(name + ".key"), key)
        return crt, key


if __name__ == "__main__":
    kt.main()
