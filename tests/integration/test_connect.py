#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""HTTP CONNECT over the Unix-socket frontend: the happy path, pipelined bytes, dial failures, no agent, idle and
unreachable targets, and who-closes-first semantics (protocol.md §7.1, §15)."""

import os
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402


class TestConnect(kt.KonnTestCase):

    def test_uds_echo(self):
        """Scenario 1: CONNECT over the UDS to an echo target: exact 200 bytes, then data both ways."""
        server, agent = self.start_pair()
        echo = self.track(kt.EchoServer())
        since = server.mark()
        c = self.uds_client()
        c.send_connect(echo.addr)
        self.assertEqual(c.read_head(), b"HTTP/1.1 200 Connection Established\r\n\r\n")
        # Nothing may follow the 200 before the target says something.
        self.assertEqual(c.pending_bytes(0.2), b"")
        for i in range(10):
            self.assert_echo(c, b"hello konn %d\n" % i)
        self.assert_echo(c, bytes(range(256)) * 64)
        ll = server.wait_for(r"^Tunnel \d+ to '%s' established through agent 'node1'\.$" % echo.addr, since=since,
                             MESSAGE_ID=kt.MSG_TUNNEL_OPENED, KONN_AGENT_ID="node1", KONN_DEST=echo.addr)
        self.assertGreater(int(ll.fields["KONN_CONNECT_ID"]), 0)
        self.assertEqual(len(echo.conns), 1)
        c.close()
        rec = echo.conns[0]
        self.assertTrue(rec.done.wait(T(2)), "target did not see EOF after the client closed")
        total = sum(len(b"hello konn %d\n" % i) for i in range(10)) + 256 * 64
        self.assertEqual(rec.nbytes, total)
        cid = ll.fields["KONN_CONNECT_ID"]
        ll = server.wait_for(r"^Tunnel %s to '%s' closed \(closed by client\)" % (cid, echo.addr), since=since,
                             MESSAGE_ID=kt.MSG_TUNNEL_CLOSED, KONN_DEST=echo.addr)
        self.assertEqual((ll.fields["KONN_BYTES_IN"], ll.fields["KONN_BYTES_OUT"]), (str(total), str(total)))

    def test_destination_forms(self):
        """Host names are resolved by the agent (localhost), IPv6 literals are dialed, a port with leading zeros is
        normalized, and an unresolvable name fails with a 502 naming the lookup."""
        server, agent = self.start_pair()
        echo = self.track(kt.EchoServer())
        since = server.mark()
        self.assert_echo(self.open_tunnel("localhost:%d" % echo.port), b"by name")
        server.wait_for(r"^Tunnel \d+ to 'localhost:%d' established" % echo.port, since=since,
                        KONN_DEST="localhost:%d" % echo.port)
        self.assert_echo(self.open_tunnel("127.0.0.1:000%d" % echo.port), b"leading zeros")
        server.wait_for(r"^Tunnel \d+ to '127\.0\.0\.1:%d' established" % echo.port, since=since)
        if kt.have_ipv6_loopback():
            echo6 = self.track(kt.EchoServer("::1"))
            self.assert_echo(self.open_tunnel(echo6.addr), b"over ipv6")
            server.wait_for(r"^Tunnel \d+ to '\[::1\]:%d' established" % echo6.port, since=since,
                            KONN_DEST=echo6.addr)
        else:
            sys.stderr.write("[no IPv6 loopback: IPv6 part skipped] ")
        c = self.uds_client()
        c.send_connect("no-such-host.invalid:80")
        got = c.read_to_eof(timeout=15)
        self.assertTrue(got.startswith(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n"
                                       b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
                                       b"dial tcp: lookup no-such-host.invalid"), got)

    def test_pipelined_bytes_forwarded(self):
        """Scenario 4: bytes sent in the same write as the CONNECT header reach the target, in order."""
        server, agent = self.start_pair()
        sink = self.track(kt.SinkServer())
        small = b"PIPELINED-PAYLOAD-0123456789"
        c = self.open_tunnel(sink.addr, extra=small)
        c.send(b"+after")
        c.close()
        rec = sink.wait_conns(1)[0]
        self.assertTrue(rec.done.wait(T(5)))
        self.assertEqual(bytes(rec.data), small + b"+after")

        # A larger pipelined block (several KiB, more than one read on the server side).
        big = kt.Pattern(7000, seed=4).bytes()
        c = self.open_tunnel(sink.addr, extra=big)
        c.close()
        rec = sink.wait_conns(2)[1]
        self.assertTrue(rec.done.wait(T(5)))
        self.assertEqual(bytes(rec.data), big)

        # Far more than the server buffers while the dial is pending (it must stop reading, not drop or fail).
        huge = kt.Pattern(300000, seed=5)
        c = self.uds_client()
        c.settimeout(T(10))
        sender = kt.Bg(c.send_connect, sink.addr, huge.bytes(), name="huge-pipelined")
        sender.start()
        self.assertEqual(c.read_head(), kt.RESP_200)
        sender.join_result(10)
        c.close()
        rec = sink.wait_conns(3)[2]
        self.assertTrue(rec.done.wait(T(5)))
        self.assertEqual(rec.nbytes, huge.size)
        self.assertEqual(rec.sha.hexdigest(), huge.sha256())

        # Pipelined bytes to an echo target come back right after the 200.
        echo = self.track(kt.EchoServer())
        c = self.open_tunnel(echo.addr, extra=b"ping-pipelined")
        self.assertEqual(c.recv_exact(len(b"ping-pipelined")), b"ping-pipelined")

    def test_dial_refused(self):
        """Scenario 7: dial to a refused port: exact 502 with Go's error text, then the connection is closed."""
        server, agent = self.start_pair()
        refused = self.track(kt.RefusedPort())
        since = server.mark()
        c = self.uds_client()
        c.send_connect(refused.addr)
        expected = (b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    b"\r\ndial tcp 127.0.0.1:%d: connect: connection refused" % refused.port)
        self.assertEqual(c.read_to_eof(timeout=5), expected)
        server.wait_for(r"^Dial to '%s' through agent 'node1' failed: dial tcp %s: connect: connection refused$"
                        % (refused.addr, refused.addr), since=since, MESSAGE_ID=kt.MSG_DIAL_FAILED,
                        KONN_DEST=refused.addr)
        # The agent is still usable.
        echo = self.track(kt.EchoServer())
        self.assert_echo(self.open_tunnel(echo.addr), b"still fine")

    def test_no_agent(self):
        """Scenario 8: no agent connected: exact 500 bytes, then EOF."""
        server = self.start_server()
        c = self.uds_client()
        c.send_connect("127.0.0.1:9")
        self.assertEqual(c.read_to_eof(timeout=5),
                         b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"
                         b"currently no tunnels available: No agent available")
        server.wait_for(r"^No agent available for a dial to '127\.0\.0\.1:9'", MESSAGE_ID=kt.MSG_DIAL_FAILED)

    def test_silent_target(self):
        """Scenario 9a: a target that accepts but never answers: the tunnel is established and stays idle and
        open; the bytes we send still arrive."""
        server, agent = self.start_pair()
        silent = self.track(kt.SilentServer())
        c = self.open_tunnel(silent.addr)
        rec = silent.wait_conns(1)[0]
        c.send(b"are you there?")
        self.assertEqual(c.pending_bytes(1.0), b"")   # idle, not closed
        self.wait_until(lambda: rec.nbytes == 14, 5, "the silent target to receive 14 bytes")
        c.send(b" still here")
        self.assertEqual(c.pending_bytes(0.5), b"")
        self.wait_until(lambda: rec.nbytes == 25, 5, "the silent target to receive 25 bytes")
        self.assertEqual(bytes(rec.data), b"are you there? still here")
        self.assertFalse(rec.done.is_set())
        c.close()
        self.assertTrue(rec.done.wait(T(2)), "silent target did not see EOF")

    def test_dial_timeout(self):
        """Scenario 9b: a target whose connect() never completes (full accept queue): the agent's --dial-timeout=1s
        fires and the client gets the exact 504 with Go's i/o timeout text."""
        hole = kt.Blackhole()
        self.track(hole)
        if not hole.works:
            self.skipTest("this kernel completes connect() to a listener with a full accept queue")
        server = self.start_server()
        self.start_agent(server=server, extra=["--dial-timeout=1s"])
        c = self.uds_client()
        t0 = time.monotonic()
        c.send_connect(hole.addr)
        # (No wait for the agent's SYN_SENT socket here: under load a poll can miss its one-second life. Go's
        # "i/o timeout" text below is the agent's own dial timer speaking.)
        got = c.read_to_eof(timeout=10)
        elapsed = time.monotonic() - t0
        self.assertEqual(got, b"HTTP/1.1 504 Gateway Timeout\r\nConnection: close\r\nContent-Type: text/plain; "
                              b"charset=utf-8\r\n\r\ndial tcp %s: i/o timeout" % hole.addr.encode())
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, T(3))
        self.wait_until(lambda: kt.syn_sent_count(hole.port) == 0, 1, "the agent to drop its connecting socket")
        # Other tunnels unaffected.
        echo = self.track(kt.EchoServer())
        self.assert_echo(self.open_tunnel(echo.addr), b"after timeout")

    def test_client_gives_up_pending_dial(self):
        """A client that hangs up while its dial is still pending: the server sends DIAL_CLS and the agent abandons
        the dial at once (konn's agent honours DIAL_CLS; upstream ignores it); nothing else is disturbed."""
        hole = self.track(kt.Blackhole())
        if not hole.works:
            self.skipTest("this kernel completes connect() to a listener with a full accept queue")
        server = self.start_server()
        # A dial timeout well beyond the time the test needs to see the pending connect() and hang up, even on a
        # loaded machine; the end of the test waits past it to show the abandoned dial never reports back.
        agent = self.start_agent(server=server, extra=["--dial-timeout=4s"])
        echo = self.track(kt.EchoServer())
        keep = self.open_tunnel(echo.addr)
        since = agent.mark()
        c = self.uds_client()
        c.send_connect(hole.addr)
        self.wait_until(lambda: kt.syn_sent_count(hole.port) == 1, 5, "the agent's connect() to the blackhole")
        self.assertEqual(c.pending_bytes(0.1), b"")
        t0 = time.monotonic()
        c.close()
        agent.wait_for(r"^Dial \d+ to '%s' cancelled by the server\.$" % hole.addr, since=since, timeout=1)
        self.wait_until(lambda: kt.syn_sent_count(hole.port) == 0, 1, "the agent to drop its connecting socket")
        self.assertLess(time.monotonic() - t0, T(1))
        self.assert_echo(keep, b"unaffected")
        self.assert_echo(self.open_tunnel(echo.addr), b"new one")
        # The abandoned dial never reports back (its timer went with it): no failure after --dial-timeout=4s.
        time.sleep(max(0, t0 + 4.5 - time.monotonic()))
        self.assertEqual(server.find(r"^Dial to '%s'" % hole.addr), [])
        self.assertEqual(agent.find(r"^Dial to '%s' failed" % hole.addr), [])

    def test_client_closes_first(self):
        """Scenario 14a: the client closes first: the target sees EOF (quickly), after all data."""
        server, agent = self.start_pair()
        sink = self.track(kt.SinkServer())
        c = self.open_tunnel(sink.addr)
        payload = kt.Pattern(300000, seed=14).bytes()
        c.send(payload)
        c.close()
        t0 = time.monotonic()
        rec = sink.wait_conns(1)[0]
        self.assertTrue(rec.done.wait(T(5)), "target did not see EOF")
        self.assertEqual(rec.nbytes, len(payload))
        self.assertEqual(rec.sha.hexdigest(), kt.Pattern(300000, seed=14).sha256())
        self.assertLess(rec.eof_at - t0, T(1))

        # Half-close (shutdown(SHUT_WR)) also ends the tunnel toward the target.
        echo = self.track(kt.EchoServer())
        c = self.open_tunnel(echo.addr)
        self.assert_echo(c, b"x" * 1000)
        c.sock.shutdown(socket.SHUT_WR)
        rec = echo.wait_conns(1)[0]
        self.assertTrue(rec.done.wait(T(2)), "echo target did not see EOF after SHUT_WR")
        self.assertIsNone(c.pending_bytes(T(2)))

    def test_target_closes_first(self):
        """Scenario 14b: the target sends data then closes: the client gets every byte, then EOF."""
        server, agent = self.start_pair()
        size = 3 * kt.MIB + 12345
        src = self.track(kt.SourceServer(size, seed=15))
        c = self.open_tunnel(src.addr)
        c.settimeout(T(10))
        h = kt.hashlib.sha256()
        n = 0
        while True:
            b = c.sock.recv(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
        self.assertEqual(n, size)
        self.assertEqual(h.hexdigest(), kt.Pattern(size, seed=15).sha256())
        # An empty response from a target that closes at once: 200, then EOF.
        src0 = self.track(kt.SourceServer(0, seed=0))
        c = self.open_tunnel(src0.addr)
        self.assertEqual(c.read_to_eof(timeout=5), b"")


if __name__ == "__main__":
    kt.main()
