#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""konn-server against a grpcio fake agent (/AgentService/Connect over TLS with a client certificate): response
headers (§3.2), dials from both frontends (§5.1-§5.3, §7.1), cleanup rules, DRAIN (§6), agent loss with pending
dials (§15), stream isolation of tunnels (§15) and metadata errors (§2, §3.2). Every packet the server sends to the
fake agent is compared byte-for-byte with the python3-protobuf serialization of the expected Packet."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konnconf as kc  # noqa: E402
from konnconf import T, kt  # noqa: E402

import grpc  # noqa: E402


class TestFakeAgent(kc.ConfTestCase):

    def assertPacket(self, got_raw, expected):
        self.assertIsNotNone(got_raw, "stream ended; expected %s" % kc.describe(kc.ser(expected)))
        self.assertEqual(kc.describe(got_raw), kc.describe(kc.ser(expected)))
        self.assertEqual(got_raw, kc.ser(expected))

    def connect_fake(self, server, agent_id="fake", identifiers="", channel=None):
        """A fake agent whose stream the server has registered; returns (channel, stream)."""
        since = server.mark()
        ch, st = self.fake_agent(agent_id, identifiers, channel=channel)
        st.initial_metadata()
        server.wait_for(r"^Agent '%s' connected" % agent_id, since=since, timeout=10,
                        MESSAGE_ID=kt.MSG_AGENT_CONNECTED)
        return ch, st

    def recv_dial_req(self, st, address, random=None):
        """Read the DIAL_REQ a fake agent gets; checks exact bytes; returns its random."""
        raw = st.recv(10)
        self.assertIsNotNone(raw, "agent stream ended")
        p = kc.parse(raw)
        self.assertEqual(p.type, kc.pb().DIAL_REQ, kc.describe(raw))
        if random is None:
            random = p.dialRequest.random
            self.assertGreater(random, 0, "upstream draws dial IDs with rand.Int63 (non-negative)")
        self.assertPacket(raw, kc.dial_req(address, random))
        return random

    # -- handshake -----------------------------------------------------------------------------------------------

    def test_server_headers_before_any_message(self):
        """serverid/servercount arrive as response headers (exactly one of each) while the agent has sent nothing
        and before any message; --server-count=3 gives "3"."""
        self.start_server(extra=("--server-count=3",))
        ch, st = self.fake_agent("fake")
        md = st.initial_metadata()
        self.assertEqual([v for k, v in md if k == "serverid"], ["srv1"])
        self.assertEqual([v for k, v in md if k == "servercount"], ["3"])
        self.assertEqual(st.pending(0.3), [])

    def test_upstream_agent_never_sees_konn_features(self):
        """A server with node -> control-plane destinations configured: an upstream agent (no konn-features
        request header) gets no konn-features header back, and /konn.Reverse/Stream on its connection is refused
        with FAILED_PRECONDITION (nothing is dialled)."""
        echo = self.track(kt.EchoServer())
        server = self.start_server(extra=("--reverse-destinations=api=" + echo.addr,))
        ch, st = self.fake_agent("upstream")
        md = st.initial_metadata()
        self.assertEqual([k for k, v in md if k == "konn-features"], [])
        self.assertEqual([v for k, v in md if k == "serverid"], ["srv1"])
        rev = self.stream(ch, "/konn.Reverse/Stream", metadata=[("konn-reverse-name", "api")])
        code, details, rest = rev.wait_end(10)
        self.assertEqual((code, details, rest), (grpc.StatusCode.FAILED_PRECONDITION,
                                                 "reverse connections were not negotiated on this connection", []))
        self.assertEqual(echo.conns, [])
        # A konn agent asking for it is answered with the feature.
        ch2, st2 = self.fake_agent("konnlike", metadata=[("agentid", "konnlike"), ("agentidentifiers", ""),
                                                          ("konn-features", "reverse")])
        self.assertEqual([v for k, v in st2.initial_metadata() if k == "konn-features"], ["reverse"])
        server.wait_for(r"^Agent 'konnlike' connected .*, node to control plane\)\.$", timeout=10)

    def test_missing_agentid(self):
        """No agentid → grpc-status 2 UNKNOWN "expected one agent ID in the context, got 0", nothing else."""
        self.start_server()
        ch, st = self.fake_agent(metadata=[("agentidentifiers", "")])
        code, details, rest = st.wait_end(10)
        self.assertEqual((code, details, rest),
                         (grpc.StatusCode.UNKNOWN, "expected one agent ID in the context, got 0", []))

    def test_two_agentids(self):
        """Two agentid values → UNKNOWN "expected one agent ID in the context, got 2"."""
        self.start_server()
        ch, st = self.fake_agent(metadata=[("agentid", "a"), ("agentid", "b")])
        code, details, rest = st.wait_end(10)
        self.assertEqual((code, details, rest),
                         (grpc.StatusCode.UNKNOWN, "expected one agent ID in the context, got 2", []))

    def test_unknown_method_on_agent_port(self):
        """/agent.AgentService/Connect (with a package) on the agent port → UNIMPLEMENTED."""
        self.start_server()
        ch = self.agent_channel()
        st = self.stream(ch, "/agent.AgentService/Connect", metadata=[("agentid", "fake")])
        code, details, rest = st.wait_end(10)
        self.assertEqual((code, rest), (grpc.StatusCode.UNIMPLEMENTED, []))

    # -- dials through the fake agent ------------------------------------------------------------------------------

    def test_connect_frontend_dial(self):
        """CONNECT on the UDS → the fake agent gets DIAL_REQ{"tcp", address, random}; DIAL_RSP{random, 7} → the
        client gets exactly the 200 line; DATA both ways; client EOF → CLOSE_REQ{7}."""
        server = self.start_server()
        ch, st = self.connect_fake(server)
        c = self.uds_client()
        c.send_connect("127.0.0.1:4321")
        random = self.recv_dial_req(st, "127.0.0.1:4321")
        self.assertEqual(c.pending_bytes(0.2), b"", "nothing may be written before the DIAL_RSP")
        st.send(kc.dial_rsp(random, connect_id=7))
        self.assertEqual(c.read_head(), kc.RESP_200)
        self.assertEqual(c.pending_bytes(0.2), b"", "nothing may follow the 200 response")
        c.send(b"ping")
        self.assertPacket(st.recv(10), kc.data(7, b"ping"))
        st.send(kc.data(7, b"pong"))
        self.assertEqual(c.recv_exact(4), b"pong")
        c.close()
        self.assertPacket(st.recv(10), kc.close_req(7))
        st.send(kc.close_rsp(7))
        self.assertEqual(st.pending(0.3), [])
        self.assertTrue(server.alive())

    def test_connect_frontend_agent_closes(self):
        """CLOSE_RSP{7} from the fake agent after DATA → the CONNECT client gets the DATA, then EOF."""
        server = self.start_server()
        ch, st = self.connect_fake(server)
        c = self.uds_client()
        c.send_connect("127.0.0.1:4322")
        random = self.recv_dial_req(st, "127.0.0.1:4322")
        st.send(kc.dial_rsp(random, connect_id=7))
        self.assertEqual(c.read_head(), kc.RESP_200)
        st.send(kc.data(7, b"last words"))
        st.send(kc.close_rsp(7))
        self.assertEqual(c.read_to_eof(5), b"last words")

    def test_connect_frontend_dial_error(self):
        """DIAL_RSP{random, error} → exactly the 502 response with the error text (§7.1), then close."""
        server = self.start_server()
        ch, st = self.connect_fake(server)
        c = self.uds_client()
        c.send_connect("127.0.0.1:1")
        random = self.recv_dial_req(st, "127.0.0.1:1")
        err = "dial tcp 127.0.0.1:1: connect: connection refused"
        st.send(kc.dial_rsp(random, error=err))
        self.assertEqual(c.read_to_eof(5), kc.resp_dial_error("502 Bad Gateway", err))

    def test_grpc_frontend_dial(self):
        """gRPC frontend: the DIAL_REQ (random unchanged), DIAL_RSP, DATA, CLOSE_REQ and CLOSE_RSP pass through the
        server unchanged in both directions."""
        server = self.start_grpc_server()
        ch, st = self.connect_fake(server)
        fe = self.stream(self.frontend_channel())
        fe.send(kc.dial_req("10.1.2.3:443", 123456789))
        self.recv_dial_req(st, "10.1.2.3:443", random=123456789)
        st.send(kc.dial_rsp(123456789, connect_id=9))
        self.assertPacket(fe.recv(10), kc.dial_rsp(123456789, connect_id=9))
        fe.send(kc.data(9, b"request"))
        self.assertPacket(st.recv(10), kc.data(9, b"request"))
        st.send(kc.data(9, b"response"))
        self.assertPacket(fe.recv(10), kc.data(9, b"response"))
        fe.send(kc.close_req(9))
        self.assertPacket(st.recv(10), kc.close_req(9))
        st.send(kc.close_rsp(9))
        self.assertPacket(fe.recv(10), kc.close_rsp(9))
        code, details, rest = fe.wait_end()
        self.assertEqual((code, rest), (grpc.StatusCode.OK, []))

    def test_grpc_frontend_dial_error(self):
        """An error DIAL_RSP is passed to the gRPC frontend unchanged."""
        server = self.start_grpc_server()
        ch, st = self.connect_fake(server)
        fe = self.stream(self.frontend_channel())
        fe.send(kc.dial_req("127.0.0.1:1", 42))
        self.recv_dial_req(st, "127.0.0.1:1", random=42)
        err = "dial tcp 127.0.0.1:1: connect: connection refused"
        st.send(kc.dial_rsp(42, error=err))
        self.assertPacket(fe.recv(10), kc.dial_rsp(42, error=err))

    def test_grpc_frontend_stream_end_closes_tunnel(self):
        """The frontend cancels an established stream → CLOSE_REQ{cid} to the agent (§5.2)."""
        server = self.start_grpc_server()
        ch, st = self.connect_fake(server)
        fe = self.stream(self.frontend_channel())
        fe.send(kc.dial_req("10.0.0.1:80", 55))
        self.recv_dial_req(st, "10.0.0.1:80", random=55)
        st.send(kc.dial_rsp(55, connect_id=3))
        self.assertPacket(fe.recv(10), kc.dial_rsp(55, connect_id=3))
        fe.cancel()
        self.assertPacket(st.recv(10), kc.close_req(3))

    def test_grpc_frontend_pending_stream_end_sends_dial_cls(self):
        """The frontend cancels while its dial is pending → DIAL_CLS{random} to the agent (§5.2)."""
        server = self.start_grpc_server()
        ch, st = self.connect_fake(server)
        fe = self.stream(self.frontend_channel())
        fe.send(kc.dial_req("10.0.0.1:80", 56))
        self.recv_dial_req(st, "10.0.0.1:80", random=56)
        fe.cancel()
        self.assertPacket(st.recv(10), kc.dial_cls(56))

    def test_late_dial_rsp_after_dial_cls_is_closed(self):
        """The frontend abandons a dial with DIAL_CLS; the agent's late DIAL_RSP{random, 4} → CLOSE_REQ{4} (§5.3,
        §14.9: clean up the orphaned connection)."""
        server = self.start_grpc_server()
        ch, st = self.connect_fake(server)
        fe = self.stream(self.frontend_channel())
        fe.send(kc.dial_req("10.0.0.1:80", 57))
        self.recv_dial_req(st, "10.0.0.1:80", random=57)
        fe.send(kc.dial_cls(57))
        code, details, rest = fe.wait_end(5)
        self.assertEqual((code, rest), (grpc.StatusCode.OK, []))
        # Upstream does not forward a frontend's DIAL_CLS (§5.2); konn does (its agents abandon the dial). Both
        # are fine for an upstream agent, which ignores DIAL_CLS.
        self.assertIn([kc.describe(r) for r in st.pending(0.3)], ([], [kc.describe(kc.ser(kc.dial_cls(57)))]))
        st.send(kc.dial_rsp(57, connect_id=4))
        self.assertPacket(st.recv(10), kc.close_req(4))

    # -- unknown IDs ---------------------------------------------------------------------------------------------

    def test_data_for_unknown_connect_id(self):
        """DATA{555} on no tunnel → the server answers CLOSE_REQ{555}."""
        server = self.start_server()
        ch, st = self.connect_fake(server)
        st.send(kc.data(555, b"orphan"))
        self.assertPacket(st.recv(10), kc.close_req(555))
        self.assertTrue(server.alive())

    def test_data_connect_id_zero_ignored(self):
        """DATA{0} is ignored (no CLOSE_REQ{0})."""
        server = self.start_server()
        ch, st = self.connect_fake(server)
        st.send(kc.data(0, b"zero"))
        self.assertEqual(st.pending(0.5), [])

    def test_dial_rsp_for_unknown_dial(self):
        """DIAL_RSP for a dial nobody made, with connectID 8 → CLOSE_REQ{8}; with an error → nothing."""
        server = self.start_server()
        ch, st = self.connect_fake(server)
        st.send(kc.dial_rsp(999, connect_id=8))
        self.assertPacket(st.recv(10), kc.close_req(8))
        st.send(kc.dial_rsp(998, error="boom"))
        self.assertEqual(st.pending(0.5), [])

    def test_close_rsp_for_unknown_id_ignored(self):
        """CLOSE_RSP for an unknown connectID is ignored: no answer, stream stays up."""
        server = self.start_server()
        ch, st = self.connect_fake(server)
        st.send(kc.close_rsp(77))
        self.assertEqual(st.pending(0.5), [])
        st.send(kc.data(78, b"x"))
        self.assertPacket(st.recv(10), kc.close_req(78))

    # -- agent loss ----------------------------------------------------------------------------------------------

    def check_vanish_connect(self, how):
        server = self.start_server()
        ch, st = self.connect_fake(server)
        c = self.uds_client()
        c.send_connect("127.0.0.1:4323")
        self.recv_dial_req(st, "127.0.0.1:4323")
        t0 = time.monotonic()
        if how == "cancel":
            st.cancel()
        else:
            ch.close()
        c.settimeout(T(5))
        got = c.read_to_eof(5)
        elapsed = time.monotonic() - t0
        self.assertEqual(got, kc.RESP_502_CONTEXT)
        self.assertLess(elapsed, T(1.0), "502 must come at once, not after a timeout")

    def test_agent_cancels_stream_mid_connect_dial(self):
        """The fake agent cancels its stream (RST_STREAM) while a CONNECT dial is pending → exactly
        "502 Bad Gateway ... Backend context error: context canceled" within 1 s."""
        self.check_vanish_connect("cancel")

    def test_agent_channel_closed_mid_connect_dial(self):
        """The fake agent closes its channel (TCP+TLS connection) while a CONNECT dial is pending → the same 502
        within 1 s."""
        self.check_vanish_connect("close")

    def check_vanish_grpc(self, how):
        server = self.start_grpc_server()
        ch, st = self.connect_fake(server)
        fe = self.stream(self.frontend_channel())
        fe.send(kc.dial_req("10.0.0.2:80", 4242))
        self.recv_dial_req(st, "10.0.0.2:80", random=4242)
        t0 = time.monotonic()
        if how == "cancel":
            st.cancel()
        else:
            ch.close()
        p = fe.recv_packet(5)
        elapsed = time.monotonic() - t0
        self.assertEqual(p.type, kc.pb().DIAL_RSP, kc.describe(kc.ser(p)))
        self.assertEqual(p.dialResponse.random, 4242)
        self.assertEqual(p.dialResponse.connectID, 0)
        self.assertNotEqual(p.dialResponse.error, "")
        self.assertEqual(kc.ser(p), kc.ser(kc.dial_rsp(4242, error=p.dialResponse.error)))
        self.assertLess(elapsed, T(1.0), "the pending dial must fail at once (§15), not after 30 s")

    def test_agent_cancels_stream_mid_grpc_dial(self):
        """Pending gRPC-frontend dial, the fake agent cancels its stream → DIAL_RSP{random, error} at once."""
        self.check_vanish_grpc("cancel")

    def test_agent_channel_closed_mid_grpc_dial(self):
        """Pending gRPC-frontend dial, the fake agent closes its channel → DIAL_RSP{random, error} at once."""
        self.check_vanish_grpc("close")

    def test_agent_loss_closes_established_tunnels(self):
        """Established gRPC tunnel, agent stream gone → CLOSE_RSP{cid} (no error) to the frontend (§5.3)."""
        server = self.start_grpc_server()
        ch, st = self.connect_fake(server)
        fe = self.stream(self.frontend_channel())
        fe.send(kc.dial_req("10.0.0.3:80", 60))
        self.recv_dial_req(st, "10.0.0.3:80", random=60)
        st.send(kc.dial_rsp(60, connect_id=5))
        self.assertPacket(fe.recv(10), kc.dial_rsp(60, connect_id=5))
        ch.close()
        self.assertPacket(fe.recv(5), kc.close_rsp(5))

    # -- DRAIN ---------------------------------------------------------------------------------------------------

    def test_drain_only_agent_still_used(self):
        """DRAIN from the only agent → the server logs that it is draining and still sends it new dials."""
        server = self.start_server()
        ch, st = self.connect_fake(server)
        since = server.mark()
        st.send(kc.drain())
        server.wait_for(r"draining", since=since, timeout=5, KONN_AGENT_ID="fake")
        self.assertTrue(server.alive())
        c = self.uds_client()
        c.send_connect("127.0.0.1:4324")
        random = self.recv_dial_req(st, "127.0.0.1:4324")
        st.send(kc.dial_rsp(random, connect_id=1))
        self.assertEqual(c.read_head(), kc.RESP_200)

    def test_drain_prefers_other_agent(self):
        """With a draining and a non-draining agent, 8 dials in a row all go to the non-draining one (§6)."""
        server = self.start_grpc_server()
        ch_a, a = self.connect_fake(server, "draining")
        ch_b, b = self.connect_fake(server, "fresh")
        since = server.mark()
        a.send(kc.drain())
        server.wait_for(r"draining", since=since, timeout=5, KONN_AGENT_ID="draining")
        for i in range(8):
            fe = self.stream(self.frontend_channel())
            fe.send(kc.dial_req("10.0.0.4:80", 700 + i))
            self.recv_dial_req(b, "10.0.0.4:80", random=700 + i)
            fe.close()
            self.assertPacket(b.recv(10), kc.dial_cls(700 + i))
        self.assertEqual(a.pending(0.3), [])

    # -- stream isolation (§15) ----------------------------------------------------------------------------------

    def check_isolation(self, intruder_id):
        server = self.start_grpc_server()
        ch_a, a = self.connect_fake(server, "victim")
        fe = self.stream(self.frontend_channel())
        fe.send(kc.dial_req("10.0.0.5:80", 31337))
        self.recv_dial_req(a, "10.0.0.5:80", random=31337)
        a.send(kc.dial_rsp(31337, connect_id=1))
        self.assertPacket(fe.recv(10), kc.dial_rsp(31337, connect_id=1))
        # The intruder: its own TLS connection and stream.
        ch_b, b = self.connect_fake(server, intruder_id)
        b.send(kc.data(1, b"INJECTED"))
        self.assertPacket(b.recv(10), kc.close_req(1))
        b.send(kc.close_rsp(1))
        b.send(kc.close_rsp(1, error="forged"))
        self.assertEqual(fe.pending(0.5), [], "nothing from the intruder may reach the victim's frontend")
        self.assertEqual(a.pending(0.2), [], "the victim agent must not be told anything")
        # The victim tunnel still works in both directions and closes normally.
        fe.send(kc.data(1, b"hello victim"))
        self.assertPacket(a.recv(10), kc.data(1, b"hello victim"))
        a.send(kc.data(1, b"hello frontend"))
        self.assertPacket(fe.recv(10), kc.data(1, b"hello frontend"))
        fe.send(kc.close_req(1))
        self.assertPacket(a.recv(10), kc.close_req(1))
        a.send(kc.close_rsp(1))
        self.assertPacket(fe.recv(10), kc.close_rsp(1))
        self.assertEqual(b.pending(0.2), [])

    def test_other_stream_same_agentid_cannot_touch_tunnel(self):
        """A second stream announcing the SAME agentid sends DATA and CLOSE_RSP for the first stream's connectID:
        the victim's tunnel is unaffected; the intruder gets CLOSE_REQ for the DATA (unknown on its stream)."""
        self.check_isolation("victim")

    def test_other_stream_other_agentid_cannot_touch_tunnel(self):
        """The same with a different agentid."""
        self.check_isolation("intruder")

    def test_other_stream_cannot_answer_pending_dial(self):
        """A second stream sends DIAL_RSP for the first stream's pending dial: the dial stays pending (no DIAL_RSP
        to the frontend, and the intruder is told CLOSE_REQ for its connectID); the real answer then completes it."""
        server = self.start_grpc_server()
        ch_a, a = self.connect_fake(server, "victim")
        fe = self.stream(self.frontend_channel())
        fe.send(kc.dial_req("10.0.0.6:80", 4711))
        self.recv_dial_req(a, "10.0.0.6:80", random=4711)
        ch_b, b = self.connect_fake(server, "victim")
        b.send(kc.dial_rsp(4711, connect_id=66))
        self.assertPacket(b.recv(10), kc.close_req(66))
        self.assertEqual(fe.pending(0.5), [])
        a.send(kc.dial_rsp(4711, connect_id=2))
        self.assertPacket(fe.recv(10), kc.dial_rsp(4711, connect_id=2))


if __name__ == "__main__":
    kc.main()
