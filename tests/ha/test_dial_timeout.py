#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Backend dial timeout (issue 6, protocol.md §5.2, §5.6, §7.1): with --backend-dial-timeout=1s, a dial whose
agent never answers ends after 1 s — a CONNECT frontend gets exactly the 504 "Backend dial timeout" bytes, a gRPC
frontend a DIAL_RSP with the error "timed out waiting for backend dial" — and the agent gets DIAL_CLS for it. The
silent agent is a SIGSTOPped konn-agent, or a grpcio fake agent on /AgentService/Connect (tests/conformance's
konnconf, Debian's python3-grpcio) that reads and never replies; a dial answered in time is not cut."""

import os
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hatest as ht  # noqa: E402
from hatest import T, kt  # noqa: E402

try:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "conformance"))
    import konnconf as kc  # noqa: E402
    import grpc  # noqa: E402
    HAVE_GRPC = True
    Base = kc.ConfTestCase
except ImportError:   # python3-grpcio / grpc-tools / protobuf / h2 missing: only the konn-agent tests run
    HAVE_GRPC = False
    Base = kt.KonnTestCase

TIMEOUT = 1.0
# The response must come after the timeout, and soon after it (timer, loopback, one scheduling round).
LATE_BOUND = TIMEOUT + 0.5
DIAL_ERROR = "timed out waiting for backend dial"


class TestDialTimeout(ht.HaTestCase, Base):

    def need_grpc(self):
        if not HAVE_GRPC:
            self.skipTest("python3-grpcio, python3-grpc-tools, python3-protobuf or python3-h2 missing")

    def timed_server(self, mode="http-connect"):
        return self.start_konn_server("srv1", mode=mode, extra=("--backend-dial-timeout=1s",))

    def silent_fake_agent(self, server, agent_id="fake"):
        """A grpcio agent stream registered on the server that never sends anything."""
        since = server.mark()
        ch = self.agent_channel(port=server.agent_port)
        st = self.stream(ch, kc.AGENT_CONNECT, metadata=[("agentid", agent_id), ("agentidentifiers", "")])
        md = st.initial_metadata()
        self.assertEqual([v for k, v in md if k == "serverid"], ["srv1"])
        server.wait_for(r"^Agent '%s' connected" % agent_id, since=since, MESSAGE_ID=kt.MSG_AGENT_CONNECTED)
        return st

    def recv_packet_exact(self, st, expected):
        raw = st.recv(10)
        self.assertIsNotNone(raw, "stream ended; expected %s" % kc.describe(kc.ser(expected)))
        self.assertEqual(kc.describe(raw), kc.describe(kc.ser(expected)))
        self.assertEqual(raw, kc.ser(expected))

    def assert_timeout_counted(self, server, n=1):
        m = self.metrics(server)
        self.assertEqual(m.value(ht.M + "server_dial_failure_count", reason="backend_dial_timeout"), float(n))
        self.assertEqual(m.value(ht.M + "server_pending_backend_dials"), 0.0)

    def test_connect_sigstopped_konn_agent(self):
        """konn-agent SIGSTOPped after connecting: the CONNECT client gets exactly the 504 bytes 1 s after its
        request, the server logs it and counts backend_dial_timeout; after SIGCONT the agent abandons the dial
        (DIAL_CLS: the target never keeps a connection) and new tunnels work."""
        server = self.timed_server()
        agent = self.start_konn_agent("node1", wait_server=server)
        echo = self.track(kt.EchoServer())
        self.sigstop(agent)
        since = server.mark()
        c = self.client_of(server)
        t0 = time.monotonic()
        c.send_connect(echo.addr)
        got = c.read_to_eof(timeout=10)
        took = time.monotonic() - t0
        sys.stderr.write("[504 after %.3f s] " % took)
        self.assertEqual(got, ht.RESP_504_DIAL_TIMEOUT)
        self.assertGreaterEqual(took, TIMEOUT)
        self.assertLess(took, T(LATE_BOUND))
        server.wait_for(r"^Agent 'node1' did not answer the dial to '%s' within 1000 ms\." % echo.addr, since=since,
                        MESSAGE_ID=kt.MSG_DIAL_FAILED, KONN_AGENT_ID="node1")
        self.assert_timeout_counted(server)

        self.sigcont(agent)
        c2 = self.tunnel_via(server, echo.addr)
        self.assert_echo(c2, b"after SIGCONT")
        # The timed-out dial left nothing open at the target: only c2's connection is still there.
        self.wait_until(lambda: sum(1 for r in echo.conns if not r.done.is_set()) == 1, 3,
                        "only the new tunnel's target connection open")
        self.assertEqual(self.metric(agent, ht.M + "agent_open_endpoint_connections"), 1.0)

    def test_connect_silent_fake_agent(self):
        """grpcio fake agent that never answers: the fake agent sees DIAL_REQ then, 1 s later, DIAL_CLS for the
        same random; the CONNECT client gets exactly the 504 bytes."""
        self.need_grpc()
        server = self.timed_server()
        st = self.silent_fake_agent(server)
        c = self.client_of(server)
        t0 = time.monotonic()
        c.send_connect("127.0.0.1:4321")
        p = kc.parse(st.recv(10))
        self.assertEqual(p.type, kc.pb().DIAL_REQ)
        random = p.dialRequest.random
        self.assertGreater(random, 0)
        self.assertEqual(c.pending_bytes(0.5), b"", "nothing may be written before the timeout")
        self.recv_packet_exact(st, kc.dial_cls(random))
        self.assertEqual(c.read_to_eof(timeout=5), ht.RESP_504_DIAL_TIMEOUT)
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, TIMEOUT)
        self.assertLess(took, T(LATE_BOUND))
        self.assert_timeout_counted(server)
        self.assertEqual(st.pending(0.3), [])

    def test_grpc_frontend_silent_fake_agent(self):
        """gRPC frontend (--mode=grpc): DIAL_REQ{random R} through a silent fake agent → after 1 s the frontend
        gets exactly DIAL_RSP{random R, error "timed out waiting for backend dial"} and the agent DIAL_CLS{R}; a late
        DIAL_RSP from the agent is counted as unrecognized_response and answered with CLOSE_REQ, and nothing more
        reaches the frontend."""
        self.need_grpc()
        server = self.timed_server(mode="grpc")
        st = self.silent_fake_agent(server)
        ch = grpc.insecure_channel("unix:" + server.sock_path, options=kc.channel_options())
        self.closers.append(ch.close)
        front = self.stream(ch, kc.PROXY)
        t0 = time.monotonic()
        front.send(kc.dial_req("127.0.0.1:4321", 4242))
        self.recv_packet_exact(st, kc.dial_req("127.0.0.1:4321", 4242))
        raw = front.recv(10)
        took = time.monotonic() - t0
        self.assertIsNotNone(raw, "frontend stream ended without a DIAL_RSP (%s: %s)" % (front.code, front.details))
        self.assertEqual(kc.describe(raw), kc.describe(kc.ser(kc.dial_rsp(4242, error=DIAL_ERROR))))
        self.assertEqual(raw, kc.ser(kc.dial_rsp(4242, error=DIAL_ERROR)))
        self.assertGreaterEqual(took, TIMEOUT)
        self.assertLess(took, T(LATE_BOUND))
        self.recv_packet_exact(st, kc.dial_cls(4242))
        self.assert_timeout_counted(server)

        st.send(kc.dial_rsp(4242, connect_id=9))
        self.recv_packet_exact(st, kc.close_req(9))
        self.assertEqual(self.metric(server, ht.M + "server_dial_failure_count", reason="unrecognized_response"), 1.0)
        self.assertEqual(front.pending(0.3), [])

    def test_answer_in_time_is_not_cut(self):
        """A fake agent answering after 0.5 s: the CONNECT client gets the 200, and the tunnel still carries data
        after the 1 s timeout has long passed; nothing is counted as a timeout."""
        self.need_grpc()
        server = self.timed_server()
        st = self.silent_fake_agent(server)
        c = self.client_of(server)
        c.send_connect("127.0.0.1:4321")
        random = kc.parse(st.recv(10)).dialRequest.random
        time.sleep(0.5)
        st.send(kc.dial_rsp(random, connect_id=7))
        self.assertEqual(c.read_head(), kt.RESP_200)
        time.sleep(2 * TIMEOUT)
        c.send(b"ping")
        self.recv_packet_exact(st, kc.data(7, b"ping"))
        st.send(kc.data(7, b"pong"))
        self.assertEqual(c.recv_exact(4), b"pong")
        self.assert_timeout_counted(server, 0)
        self.assertEqual(self.metric(server, ht.M + "server_established_connections"), 1.0)


if __name__ == "__main__":
    ht.main()
