#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The /v1/trace event stream and `konnctl trace`: each event of a known sequence (a tunnel opened, echoed and
closed; a refused dial; a dial with no agent) arrives in order with its exact fields, on the server and on the
agent, as JSON lines and as table lines; --dest filters; Ctrl-C ends konnctl with status 0. A subscriber that
never reads is dropped (log line, status counters) while a bulk transfer runs, the transfer completes intact, and
the admin interface keeps answering; the transfer's rate with and without the stuck subscriber is reported."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctltest  # noqa: E402
from ctltest import kt  # noqa: E402

TIME_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


class Tracer:
    """konnctl trace ARGS in the background; its stdout lines collected."""

    def __init__(self, test, *args):
        self.proc = subprocess.Popen([kt.KONNCTL_BIN] + list(args) + ["trace"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=kt.clean_env())
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        test.closers.append(self.kill)

    def _read(self):
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode().rstrip("\n"))
                self.cond.notify_all()

    def wait_lines(self, n, timeout):
        deadline = time.monotonic() + kt.T(timeout)
        with self.cond:
            while len(self.lines) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("trace: %d of %d lines after %.1f s: %r" % (len(self.lines), n,
                                                                                    kt.T(timeout), self.lines))
                self.cond.wait(left)
            return list(self.lines)

    def interrupt(self):
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(timeout=kt.T(10))
        self.thread.join(kt.T(5))
        return rc, self.proc.stderr.read().decode()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(kt.T(5))
        self.proc.stdout.close()
        self.proc.stderr.close()


class Trace(ctltest.CtlTestCase):

    def setUp(self):
        super().setUp()
        self.server = self.start_admin_server()
        self.agent, self.agent_sock = self.start_admin_agent("node1", self.server)

    def wait_subscribers(self, host, n, tracers=()):
        try:
            self.wait_until(lambda: self.status(host)["trace_subscribers"] == n, 10, "%d trace subscribers" % n)
        except AssertionError:
            for t in tracers:
                if t.proc.poll() is not None:
                    sys.stderr.write("konnctl %r exited %d: %s\n" % (t.proc.args, t.proc.returncode,
                                                                      t.proc.stderr.read().decode()))
            raise

    def test_events_in_order(self):
        echo = self.track(kt.EchoServer())
        refused = self.track(kt.RefusedPort())
        tj = Tracer(self, "-H", self.server_sock, "-o", "json")
        ta = Tracer(self, "-H", self.agent_sock, "-o", "json")
        tt = Tracer(self, "-H", "127.0.0.1:%d" % self.admin_port)
        tf = Tracer(self, "-H", self.server_sock, "-o", "json", "--dest", "*:%d" % refused.port)
        self.wait_subscribers(self.server_sock, 3, (tj, tt, tf))
        self.wait_subscribers(self.agent_sock, 1)
        c = self.open_tunnel(echo.addr)
        self.assert_echo(c, b"12345")
        c.close()
        reason = "dial tcp %s: connect: connection refused" % refused.addr
        c = self.uds_client()
        c.send_connect(refused.addr)
        c.read_to_eof()

        events = [json.loads(x) for x in tj.wait_lines(5, 10)]
        for e in events:
            self.assertRegex(e.pop("time"), TIME_RE)
            self.assertEqual(e.pop("frontend"), "http-connect")
            self.assertEqual(e.pop("client"), "unix:" + self.sock_path)
        seqs = [e.pop("seq") for e in events]
        self.assertEqual(seqs, sorted(seqs))
        d1, d2 = events[0]["dial_id"], events[3]["dial_id"]
        self.assertNotEqual(d1, d2)
        self.assertGreater(events[1].pop("dial_seconds"), 0)
        self.assertGreater(events[2].pop("duration_seconds"), 0)
        self.assertEqual(events, [
            {"event": "dial", "dial_id": d1, "connect_id": 0, "agent": "node1", "destination": echo.addr},
            {"event": "established", "dial_id": d1, "connect_id": 1, "agent": "node1", "destination": echo.addr},
            {"event": "closed", "dial_id": d1, "connect_id": 1, "agent": "node1", "destination": echo.addr,
             "reason": "closed by client", "bytes_to_destination": 5, "bytes_from_destination": 5},
            {"event": "dial", "dial_id": d2, "connect_id": 0, "agent": "node1", "destination": refused.addr},
            {"event": "failed", "dial_id": d2, "connect_id": 0, "agent": "node1", "destination": refused.addr,
             "reason": reason}])

        # The agent's view of the same tunnels: each tunnel's events in order (the first tunnel's close reaches the
        # agent asynchronously, so it may come after the second dial).
        aev = [json.loads(x) for x in ta.wait_lines(5, 10)]
        per = {}
        for e in aev:
            per.setdefault(e["dial_id"], []).append((e["event"], e["connect_id"], e["server"], e["destination"]))
        self.assertEqual(per, {d1: [("dial", 0, "srv1", echo.addr), ("established", 1, "srv1", echo.addr),
                                    ("closed", 1, "srv1", echo.addr)],
                               d2: [("dial", 0, "srv1", refused.addr), ("failed", 0, "srv1", refused.addr)]})
        closed = [e for e in aev if e["event"] == "closed"][0]
        self.assertEqual((closed["bytes_to_destination"], closed["bytes_from_destination"]), (5, 5))
        self.assertEqual([e for e in aev if e["event"] == "failed"][0]["reason"], reason)
        self.assertEqual([e["seq"] for e in aev], sorted(e["seq"] for e in aev))

        # The table form (over the admin TCP port): a header, then one line per event.
        lines = tt.wait_lines(6, 10)
        self.assertRegex(lines[0], r"^TIME +EVENT +DESTINATION +PEER +DETAILS$")
        ev = r"^\d\d:\d\d:\d\d\.\d{3}  "
        a = re.escape(echo.addr)
        self.assertRegex(lines[1], ev + r"dial         %s +node1 +dial_id=%d via http-connect$" % (a, d1))
        self.assertRegex(lines[2], ev + r"established  %s +node1 +connect_id=1 dial [0-9.]+ ms$" % a)
        self.assertRegex(lines[3], ev + r"closed       %s +node1 +connect_id=1 5 B to dest, 5 B back, [0-9.]+ m?s "
                                        r"\(closed by client\)$" % a)
        self.assertRegex(lines[5], ev + r"failed       %s +node1 +%s$" % (re.escape(refused.addr), re.escape(reason)))

        # --dest filters: nothing about the echo tunnel reaches this one.
        self.assertEqual([json.loads(x)["event"] for x in tf.wait_lines(2, 10)], ["dial", "failed"])
        self.assertEqual(json.loads(tf.lines[0])["destination"], refused.addr)

        # No agent: the dial and its failure (the agent stopped, so the server has none).
        self.agent.stop()
        self.daemons.remove(self.agent)
        self.wait_until(lambda: self.status(self.server_sock)["agents"] == 0, 10, "the agent to go")
        c = self.uds_client()
        c.send_connect(echo.addr)
        self.assertEqual(c.read_to_eof(), kt.RESP_500_NO_AGENT)
        ev = [json.loads(x) for x in tj.wait_lines(7, 10)[5:]]
        self.assertEqual([(e["event"], e["agent"], e.get("reason")) for e in ev],
                         [("dial", "", None), ("failed", "", "No agent available")])

        for t in (tj, tt, tf):
            rc, err = t.interrupt()
            self.assertEqual((rc, err), (0, ""))
        self.wait_subscribers(self.server_sock, 0)

    def test_slow_subscriber_is_dropped(self):
        size = 256 * kt.MIB // kt.SIZE_DIVISOR
        sink = self.track(kt.SinkServer())
        echo = self.track(kt.EchoServer())

        def bulk():
            before = len(sink.conns)
            c = self.open_tunnel(sink.addr)
            data = kt.Pattern(size, seed=3)
            t0 = time.monotonic()
            for chunk in data.chunks():
                c.send(chunk)
            c.sock.shutdown(socket.SHUT_WR)
            rec = sink.wait_conns(before + 1)[before]
            self.wait_until(lambda: rec.nbytes == size, 60, "the sink to get every byte")
            c.close()
            return time.monotonic() - t0, rec.sha.hexdigest() == data.sha256()

        # With a subscriber that never reads, while short tunnels make events until it is dropped.
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(self.server_sock)
        self.closers.append(stuck.close)
        stuck.sendall(b"GET /v1/trace HTTP/1.1\r\nHost: x\r\n\r\n")
        self.wait_subscribers(self.server_sock, 1)
        mark = self.server.mark()
        job = kt.Bg(bulk)
        job.start()
        n = 0
        while self.status(self.server_sock)["trace_dropped"] == 0:
            self.assertLess(n, 3000, "the stuck subscriber was never dropped")
            c = self.open_tunnel(echo.addr)
            c.close()
            n += 1
        during = job.is_alive()
        t0 = time.monotonic()
        st = self.status(self.server_sock)
        answer = time.monotonic() - t0
        dur, ok = job.join_result(120)
        self.assertTrue(ok, "the bulk transfer arrived intact")
        # The same load without any subscriber, for comparison (reported, not asserted: timing is noisy here).
        job = kt.Bg(bulk)
        job.start()
        for _ in range(n):
            self.status(self.server_sock)
            self.open_tunnel(echo.addr).close()
        base, ok = job.join_result(120)
        self.assertTrue(ok)
        self.assertEqual((st["trace_subscribers"], st["trace_dropped"]), (0, 1))
        self.server.wait_for(r"^Dropping a trace subscriber: it is not reading \(\d+ bytes queued\)\.$", since=mark,
                             timeout=5, prio_max=5)
        # Its connection was closed: after what the kernel buffered, EOF.
        stuck.settimeout(kt.T(10))
        got = b""
        while True:
            b = stuck.recv(65536)
            if not b:
                break
            got += b
        self.assertTrue(got.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b'"event": "subscribed"', got)
        sys.stderr.write("\n%d MiB bulk transfer next to %d short tunnels: %.2f s without a trace subscriber, "
                         "%.2f s with a stuck one (%.2fx); dropped after %d tunnels (%d bytes had reached it), %s the "
                         "transfer; status answered in %.1f ms\n" % (size // kt.MIB, n, base, dur, dur / base if base else 0, n, len(got),
                                                    "during" if during else "after", answer * 1000))


if __name__ == "__main__":
    kt.main()
