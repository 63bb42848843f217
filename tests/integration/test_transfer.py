#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Bulk data through the tunnel: 64 MiB each way with SHA-256 checksums, 200 concurrent tunnels, and a slow reader
of a large download while both daemons' memory (VmRSS) must stay bounded (flow control end to end)."""

import hashlib
import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402

BULK = kt.big(64 * kt.MIB)


def send_pattern(c, pattern):
    for chunk in pattern.chunks():
        c.sock.sendall(chunk)


def read_n_hash(c, n):
    """Read exactly n bytes; returns the sha256 hex digest."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    got = 0
    while got < n:
        k = c.sock.recv_into(buf, min(len(buf), n - got))
        if k == 0:
            raise AssertionError("EOF after %d of %d bytes" % (got, n))
        h.update(memoryview(buf)[:k])
        got += k
    return h.hexdigest()


def read_eof_hash(c):
    """Read to EOF; returns (byte count, sha256 hex digest)."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    got = 0
    while True:
        k = c.sock.recv_into(buf)
        if k == 0:
            return got, h.hexdigest()
        h.update(memoryview(buf)[:k])
        got += k


class TestTransfer(kt.KonnTestCase):

    def report(self, what, nbytes, seconds):
        sys.stderr.write("[%s: %d MiB in %.2f s = %.0f MiB/s] " % (what, nbytes >> 20, seconds,
                                                                  nbytes / kt.MIB / max(seconds, 1e-6)))

    def test_upload_64mib(self):
        """Scenario 5a: 64 MiB client → target (sink), SHA-256 checked at the target."""
        server, agent = self.start_pair()
        sink = self.track(kt.SinkServer())
        c = self.open_tunnel(sink.addr)
        c.settimeout(T(60))
        p = kt.Pattern(BULK, seed=51)
        t0 = time.monotonic()
        send_pattern(c, p)
        c.close()
        rec = sink.wait_conns(1)[0]
        self.assertTrue(rec.done.wait(T(60)), "sink did not see EOF")
        self.report("upload", BULK, time.monotonic() - t0)
        self.assertEqual(rec.nbytes, BULK)
        self.assertEqual(rec.sha.hexdigest(), p.sha256())

    def test_download_64mib(self):
        """Scenario 5b: 64 MiB target (source) → client, SHA-256 checked at the client, then EOF."""
        server, agent = self.start_pair()
        src = self.track(kt.SourceServer(BULK, seed=52))
        t0 = time.monotonic()
        c = self.open_tunnel(src.addr)
        c.settimeout(T(60))
        n, sha = read_eof_hash(c)
        self.report("download", BULK, time.monotonic() - t0)
        self.assertEqual(n, BULK)
        self.assertEqual(sha, kt.Pattern(BULK, seed=52).sha256())

    def test_both_ways_64mib(self):
        """Scenario 5c: 64 MiB each way at the same time through an echo target."""
        server, agent = self.start_pair()
        echo = self.track(kt.EchoServer())
        c = self.open_tunnel(echo.addr)
        c.settimeout(T(60))
        p = kt.Pattern(BULK, seed=53)
        t0 = time.monotonic()
        sender = kt.Bg(send_pattern, c, p, name="sender")
        sender.start()
        sha = read_n_hash(c, BULK)
        sender.join_result(60)
        self.report("echo", BULK, time.monotonic() - t0)
        self.assertEqual(sha, p.sha256())
        c.close()
        self.assertTrue(echo.wait_conns(1)[0].done.wait(T(5)))

    def test_200_concurrent_tunnels(self):
        """Scenario 6: 200 tunnels open at the same time, each echoing its own pattern."""
        n = 200
        server, agent = self.start_pair()
        echo = self.track(kt.EchoServer())
        barrier = threading.Barrier(n, timeout=T(60))
        clients = [None] * n

        def one(i):
            c = kt.Client.uds(self.sock_path, timeout=60)
            clients[i] = c
            c.send_connect(echo.addr)
            head = c.read_head()
            if head != kt.RESP_200:
                raise AssertionError("tunnel %d: %r" % (i, head))
            barrier.wait()           # all 200 established before any data
            data = kt.Pattern(32 * 1024 + i * 17, seed=1000 + i).bytes()
            for _ in range(2):
                c.send(data)
                back = c.recv_exact(len(data))
                if back != data:
                    raise AssertionError("tunnel %d: wrong echo" % i)
            barrier.wait()           # all 200 verified while still open
            return True

        threads = [kt.Bg(one, i, name="tunnel-%d" % i) for i in range(n)]
        try:
            for t in threads:
                t.start()
            results = [t.join_result(90) for t in threads]
        finally:
            for c in clients:
                if c:
                    c.close()
        self.assertEqual(results, [True] * n)
        self.assertEqual(len(echo.conns), n)
        self.assertEqual(len(server.find(r"^Tunnel \d+ to '%s' established" % echo.addr)), n)
        # And all 200 close cleanly.
        for rec in echo.conns:
            self.assertTrue(rec.done.wait(T(10)))

    def test_stalled_client(self):
        """A client that stops reading an endless download: backpressure reaches the target (it gets blocked, the
        bytes in flight stay bounded) and nothing is lost or deadlocked. With konn's one-stream-per-tunnel extension
        (announced in the server's "Agent ... connected" line) other tunnels of the same agent are not held up at
        all; on the classic protocol (one HTTP/2 window for all tunnels of an agent, architecture.md "data path") a
        dial made meanwhile may wait, but completes once the stalled client is gone."""
        server = self.start_server()
        since = server.mark()
        self.start_agent(server=server)
        per_tunnel = bool(server.find(r"one stream per tunnel", since=since, MESSAGE_ID=kt.MSG_AGENT_CONNECTED))
        src = self.track(kt.SourceServer(None, seed=7))
        echo = self.track(kt.EchoServer())
        stalled = self.open_tunnel(src.addr)
        rec = src.wait_conns(1)[0]
        # Wait until the source is blocked (its sent counter stops moving).
        last = -1
        deadline = time.monotonic() + T(10)
        while rec.sent != last:
            self.assertLess(time.monotonic(), deadline, "source never blocked: no backpressure")
            last = rec.sent
            time.sleep(0.3)
        self.assertLess(rec.sent, 64 * kt.MIB)
        c = self.uds_client(timeout=20)
        c.send_connect(echo.addr)
        if per_tunnel:
            # Unaffected by the stalled tunnel: established and echoing at once, several MiB both ways.
            c.settimeout(T(2))
            self.assertEqual(c.read_head(), kt.RESP_200)
            c.settimeout(T(10))
            self.assert_echo(c, kt.Pattern(4 * kt.MIB, seed=9).bytes())
            self.assertEqual(rec.sent, last, "the stalled tunnel moved although its client does not read")
            stalled.close()
        else:
            sys.stderr.write("[classic protocol: shared window] ")
            time.sleep(0.3)
            stalled.close()
            self.assertEqual(c.read_head(), kt.RESP_200)
        self.assert_echo(c, b"unblocked")
        self.assertTrue(rec.done.wait(T(5)), "source connection of the stalled tunnel not closed")
        self.assert_echo(self.open_tunnel(echo.addr), kt.Pattern(2 * kt.MIB, seed=8).bytes())

    def test_slow_reader_memory_bounded(self):
        """Scenario 15: 1 GiB from the target to a client that reads 1 MiB and then sleeps: the daemons' VmRSS
        stays within 64 MiB of the idle value, the target is held back (bytes in flight bounded), and every byte
        arrives intact."""
        size = kt.big(1024 * kt.MIB)
        limit_kib = 64 * 1024
        server, agent = self.start_pair()
        src = self.track(kt.SourceServer(size, seed=150))
        # Idle values with one tunnel open (buffers allocated lazily count as growth, which is the point).
        idle = {d.name: d.rss_kib() for d in (server, agent)}
        c = self.open_tunnel(src.addr)
        c.settimeout(T(30))
        rec = src.wait_conns(1)[0]

        peak = dict(idle)
        in_flight_max = 0
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                for d in (server, agent):
                    v = d.rss_kib()
                    if v is not None:
                        peak[d.name] = max(peak[d.name], v)
                time.sleep(0.05)

        sampler = kt.Bg(sample, name="rss-sampler")
        sampler.start()
        h = hashlib.sha256()
        got = 0
        buf = bytearray(kt.MIB)
        t0 = time.monotonic()
        try:
            while True:
                # Read (up to) 1 MiB, then sleep: well below what the tunnel can do (several hundred MiB/s).
                k_total = 0
                while k_total < kt.MIB:
                    k = c.sock.recv_into(memoryview(buf)[k_total:])
                    if k == 0:
                        break
                    k_total += k
                h.update(memoryview(buf)[:k_total])
                got += k_total
                in_flight_max = max(in_flight_max, rec.sent - got)
                if k_total < kt.MIB:
                    break
                time.sleep(0.01)
                self.assertLess(time.monotonic() - t0, T(45), "slow read took too long")
        finally:
            stop.set()
            sampler.join_result(5)
        self.report("slow reader", size, time.monotonic() - t0)
        sys.stderr.write("[rss KiB idle %r peak %r; in flight max %d KiB] " % (idle, peak, in_flight_max >> 10))
        self.assertEqual(got, size)
        self.assertEqual(h.hexdigest(), kt.Pattern(size, seed=150).sha256())
        for name in idle:
            self.assertLess(peak[name] - idle[name], limit_kib * (4 if kt.WRAPPER or kt.SANITIZER else 1),
                            "%s grew from %d KiB to %d KiB" % (name, idle[name], peak[name]))
        if not kt.WRAPPER:
            # Backpressure reached the target: it never ran far ahead of the reader.
            self.assertLess(in_flight_max, 64 * kt.MIB)


if __name__ == "__main__":
    kt.main()
