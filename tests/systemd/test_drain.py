#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Graceful stop on SIGTERM (`systemctl stop`).

  * agent: a transfer in progress through the agent completes after SIGTERM; the agent sends DRAIN (the server
    logs the agent draining), reports STOPPING=1, and exits 0 as soon as the transfer ends, well before
    --drain-timeout; new dials are refused meanwhile;
  * agent: --drain-timeout bounds the wait, and a second SIGTERM exits at once;
  * server: with --graceful-shutdown-timeout it stops accepting but lets an open tunnel finish, then exits 0.
"""

import signal
import socket
import time
import unittest

import konnsd
import konntest
from konntest import T

DRAIN_TIMEOUT = 20


class Drain(konnsd.SdTestCase):

    def pair(self, agent_extra=(), server_extra=(), notify=None):
        server = self.start_server(extra=server_extra)
        env = {"NOTIFY_SOCKET": notify.path} if notify else None
        agent = self.start_env_daemon("agent", self.agent_argv("node1", extra=list(agent_extra)), env=env)
        agent.wait_for(r"^Connected to server 'srv1'", timeout=10)
        server.wait_for(r"^Agent 'node1' connected", timeout=10)
        return server, agent

    def test_transfer_in_progress_completes_after_sigterm(self):
        n = self.notify_listener()
        server, agent = self.pair(["--drain-timeout=%ds" % DRAIN_TIMEOUT], notify=n)
        sink = self.track(konntest.SinkServer())
        c = self.open_tunnel(sink.addr)
        rec = sink.wait_conns(1)[0]
        pattern = konntest.Pattern(8 * konntest.MIB, seed=7)
        chunks = list(pattern.chunks())
        half = len(chunks) // 2
        for ch in chunks[:half]:
            c.send(ch)

        m = n.mark()
        t_term = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"^Agent 'node1' is draining; it is used for new dials only as a last resort\.$",
                        timeout=10, KONN_AGENT_ID="node1")
        agent.wait_for(r"^Draining: waiting up to %d s for 1 connection to finish\.$" % DRAIN_TIMEOUT, timeout=10)
        n.wait_for("STOPPING=1", since=m)
        n.wait_for("STATUS=Draining, 1 tunnels open", since=m)

        # New dials are refused while draining (this agent is the only one, so the server still asks it).
        c2 = self.uds_client()
        c2.send_connect(sink.addr)
        head = c2.read_head()
        self.assertTrue(head.startswith(b"HTTP/1.1 5"), head)
        c2.close()
        self.assertEqual(len(sink.conns), 1)

        # The rest of the transfer still goes through, while the agent waits for it.
        time.sleep(T(0.3))
        self.assertTrue(agent.alive())
        for ch in chunks[half:]:
            c.send(ch)
        c.sock.shutdown(socket.SHUT_WR)
        self.assertTrue(rec.done.wait(T(30)), "target did not see the end of the transfer")
        self.assertEqual((rec.nbytes, rec.sha.hexdigest()), (pattern.size, pattern.sha256()))
        c.close()

        # Once the tunnel is closed the agent exits 0 at once, not after the drain timeout.
        self.assertEqual(self.reap(agent, DRAIN_TIMEOUT / 2), 0)
        self.assertLess(time.monotonic() - t_term, T(DRAIN_TIMEOUT / 2))
        self.assertEqual(agent.find(r"^Drain timeout reached"), [])
        server.wait_for(r"^Agent 'node1' disconnected", timeout=10)

    def test_drain_timeout_bounds_the_wait(self):
        server, agent = self.pair(["--drain-timeout=1s"])
        echo = self.track(konntest.EchoServer())
        c = self.open_tunnel(echo.addr)
        self.assert_echo(c, b"idle afterwards\n")
        t0 = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.reap(agent, 10), 0)
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, T(5))
        agent.wait_for(r"^Drain timeout reached with 1 connection still open, closing them\.$", timeout=1,
                       allow_exit=True)

    def test_second_sigterm_exits_at_once(self):
        server, agent = self.pair(["--drain-timeout=%ds" % DRAIN_TIMEOUT])
        echo = self.track(konntest.EchoServer())
        c = self.open_tunnel(echo.addr)
        self.assert_echo(c, b"still open\n")
        agent.proc.send_signal(signal.SIGTERM)
        agent.wait_for(r"^Draining: waiting up to", timeout=10)
        t0 = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.reap(agent, 5), 0)
        self.assertLess(time.monotonic() - t0, T(2))
        agent.wait_for(r"^Received Terminated again, exiting now\.$", timeout=1, allow_exit=True)

    def test_server_graceful_shutdown_lets_a_tunnel_finish(self):
        server, agent = self.pair(server_extra=["--graceful-shutdown-timeout=%ds" % DRAIN_TIMEOUT])
        echo = self.track(konntest.EchoServer())
        c = self.open_tunnel(echo.addr)
        self.assert_echo(c, b"before SIGTERM\n")
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"^Waiting up to %d s for 1 connection to finish\.$" % DRAIN_TIMEOUT, timeout=10)
        self.assert_echo(c, b"after SIGTERM\n")
        # Not accepting any more: a new frontend connection gets no answer.
        c2 = self.uds_client()
        c2.send_connect(echo.addr)
        self.assertEqual(c2.pending_bytes(wait=T(0.3)), b"")
        time.sleep(T(0.3))
        self.assertTrue(server.alive())
        c.close()
        self.assertEqual(self.reap(server, DRAIN_TIMEOUT / 2), 0)
        self.assertLess(time.monotonic() - t0, T(DRAIN_TIMEOUT / 2))
        c2.close()


if __name__ == "__main__":
    konnsd.konntest.main()
