#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""konn-agent and a server's HTTP/2 GOAWAY (issue 13): a python3-h2 fake server sends a graceful GOAWAY while a
tunnel is open on the agent's Connect stream. The agent tells the server DRAIN, opens a new connection at once (the
same server ID is not a duplicate of a connection that is going away), keeps serving the old tunnel to the end,
answers a dial that still arrives on the old connection there (nothing lost), and once the old connection has no
tunnel left ends its Connect stream and closes it. Each packet is compared byte for byte."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konnconf as kc  # noqa: E402
from konnconf import T, kt  # noqa: E402


class GoawayTest(kc.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.lsock = kc.RawH2Server.listener()
        self.closers.append(self.lsock.close)
        self.echo = self.track(kt.EchoServer())

    def accept(self, timeout=10):
        self.lsock.settimeout(T(timeout))
        sock, _ = self.lsock.accept()
        h = kc.RawH2Server(sock)
        self.closers.append(h.close)
        sid = h.wait_call()
        self.assertEqual(h.streams[sid]["headers"][":path"], kc.AGENT_CONNECT)
        h.respond(sid)
        return h, sid

    def expect(self, h, sid, *packets, timeout=10):
        """The next len(packets) messages on sid are exactly these packets."""
        have = len(self.seen.setdefault((id(h), sid), []))
        msgs = h.wait_messages(sid, have + len(packets), timeout)
        got = msgs[have:have + len(packets)]
        self.seen[(id(h), sid)] = msgs[:have + len(packets)]
        self.assertEqual([kc.describe(m) for m in got], [kc.describe(kc.ser(p)) for p in packets])

    def test_goaway_mid_tunnel(self):
        self.seen = {}
        agent = self.start_agent(agent_id="goaway", port=self.lsock.getsockname()[1], wait=False,
                                 extra=["--sync-interval=200ms", "--sync-interval-cap=500ms"])
        old, sid = self.accept()
        agent.wait_for(r"^Connected to server 'raw1'")

        # A tunnel on the old connection (classic framing: this server does not offer tunnel streams).
        old.send_packet(sid, kc.dial_req(self.echo.addr, 11))
        self.expect(old, sid, kc.dial_rsp(11, connect_id=1))
        old.send_packet(sid, kc.data(1, b"before"))
        self.expect(old, sid, kc.data(1, b"before"))

        since = agent.mark()
        old.send_goaway(last_stream_id=sid)
        t0 = time.monotonic()
        # DRAIN on the old stream, and a new connection at once, counted as connected again.
        self.expect(old, sid, kc.drain())
        new, nsid = self.accept(timeout=5)
        agent.wait_for(r"^Connected to server 'raw1'", since=since)
        reconnect = time.monotonic() - t0
        agent.wait_for(r"^Server 'raw1' sent GOAWAY \(error code 0\): finishing 1 connection on it, reconnecting\.$",
                       since=since)
        self.assertEqual(agent.find(r"Already connected to server", since=since), [])

        # The old tunnel goes on; a dial that still arrives there is served on the old Connect stream.
        old.send_packet(sid, kc.data(1, b"after goaway"))
        self.expect(old, sid, kc.data(1, b"after goaway"))
        old.send_packet(sid, kc.dial_req(self.echo.addr, 12))
        self.expect(old, sid, kc.dial_rsp(12, connect_id=2))
        old.send_packet(sid, kc.data(2, b"late dial"))
        self.expect(old, sid, kc.data(2, b"late dial"))

        # New work goes to the new connection.
        new.send_packet(nsid, kc.dial_req(self.echo.addr, 21))
        self.expect(new, nsid, kc.dial_rsp(21, connect_id=1))
        new.send_packet(nsid, kc.data(1, b"new connection"))
        self.expect(new, nsid, kc.data(1, b"new connection"))

        # Closing the old tunnels: the agent ends its Connect stream and closes the old connection.
        old.send_packet(sid, kc.close_req(1))
        self.expect(old, sid, kc.close_rsp(1))
        self.assertFalse(old.streams[sid]["ended"])
        old.send_packet(sid, kc.close_req(2))
        self.expect(old, sid, kc.close_rsp(2))
        st = old.wait_end(sid, timeout=5)
        self.assertTrue(st["ended"], st)       # END_STREAM, not a reset
        self.assertIsNone(st["reset"], st)
        old.wait_closed(timeout=5)
        agent.wait_for(r"^Disconnected from server 'raw1' \(after its GOAWAY\)\.$", since=since)
        sys.stderr.write("[reconnect after GOAWAY: %.3f s] " % reconnect)
        self.assertLess(reconnect, T(2))

        # The new connection is unaffected.
        new.send_packet(nsid, kc.data(1, b"still here"))
        self.expect(new, nsid, kc.data(1, b"still here"))
        self.assertEqual(agent.find(r"Stream to server .* ended", since=since), [])


if __name__ == "__main__":
    kt.main()
