#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The gRPC frontend (/ProxyService/Proxy on the UDS, konn-server --mode=grpc) driven by grpcio as an independent
client, through a real konn-agent to loopback targets (protocol.md §5.1, §5.2, §5.5, §2). Every packet konn sends
back is compared byte-for-byte with the python3-protobuf serialization of the expected Packet."""

import hashlib
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konnconf as kc  # noqa: E402
from konnconf import T, kt  # noqa: E402

import grpc  # noqa: E402

BULK = kt.big(32 * kt.MIB)


class TestFrontend(kc.ConfTestCase):

    def pair(self, agent_extra=()):
        server = self.start_grpc_server()
        agent = self.start_agent(server=server, extra=agent_extra)
        return server, agent

    def assertPacket(self, got_raw, expected):
        """Exact bytes of a received packet against the python3-protobuf encoding of `expected`."""
        self.assertEqual(kc.describe(got_raw), kc.describe(kc.ser(expected)))
        self.assertEqual(got_raw, kc.ser(expected))

    def recv_until_close_rsp(self, st, connect_id, timeout=60):
        """Read DATA for connect_id until CLOSE_RSP; returns (nbytes, sha256 hex, raw CLOSE_RSP)."""
        h = hashlib.sha256()
        n = 0
        deadline = time.monotonic() + T(timeout)
        while True:
            self.assertLess(time.monotonic(), deadline, "no CLOSE_RSP within %.1f s (%d bytes)" % (T(timeout), n))
            raw = st.recv(timeout)
            self.assertIsNotNone(raw, "call ended (%s %s) before CLOSE_RSP" % (st.code, st.details))
            p = kc.parse(raw)
            if p.type == kc.pb().DATA:
                self.assertEqual(p.WhichOneof("payload"), "data")
                self.assertEqual(p.data.connectID, connect_id)
                self.assertEqual(p.data.error, "")
                h.update(p.data.data)
                n += len(p.data.data)
                continue
            return n, h.hexdigest(), raw

    # -- bulk ----------------------------------------------------------------------------------------------------

    def test_bulk_upload_32mib(self):
        """32 MiB frontend → target in 64 KiB DATA packets; the target's SHA-256 matches; CLOSE_REQ → CLOSE_RSP."""
        self.pair()
        sink = self.track(kt.SinkServer())
        st = self.stream(self.frontend_channel())
        cid = self.grpc_dial(st, sink.addr, 1001)
        pat = kt.Pattern(BULK, seed=11)
        for chunk in pat.chunks():
            st.send(kc.data(cid, chunk))
        st.send(kc.close_req(cid))
        self.assertPacket(st.recv(60), kc.close_rsp(cid))
        rec = sink.wait_conns(1)[0]
        self.assertTrue(rec.done.wait(T(30)), "target did not see EOF")
        self.assertEqual(rec.nbytes, BULK)
        self.assertEqual(rec.sha.hexdigest(), pat.sha256())
        code, details, rest = st.wait_end()
        self.assertEqual((code, rest), (grpc.StatusCode.OK, []))

    def test_bulk_download_32mib(self):
        """32 MiB target → frontend; the SHA-256 of the DATA payloads matches and CLOSE_RSP{cid} comes last."""
        self.pair()
        src = self.track(kt.SourceServer(BULK, seed=12))
        st = self.stream(self.frontend_channel())
        cid = self.grpc_dial(st, src.addr, 1002)
        n, sha, last = self.recv_until_close_rsp(st, cid)
        self.assertEqual(n, BULK)
        self.assertEqual(sha, kt.Pattern(BULK, seed=12).sha256())
        self.assertPacket(last, kc.close_rsp(cid))
        code, details, rest = st.wait_end()
        self.assertEqual((code, rest), (grpc.StatusCode.OK, []))

    def test_bulk_echo_both_ways_at_once(self):
        """32 MiB each way at the same time through an echo target (sender and reader run concurrently)."""
        self.pair()
        echo = self.track(kt.EchoServer())
        st = self.stream(self.frontend_channel())
        cid = self.grpc_dial(st, echo.addr, 1003)
        pat = kt.Pattern(BULK, seed=13)

        def sender():
            for chunk in pat.chunks():
                st.send(kc.data(cid, chunk))

        snd = kt.Bg(sender, name="sender")
        snd.start()
        h = hashlib.sha256()
        n = 0
        while n < BULK:
            p = st.recv_packet(60)
            self.assertEqual(p.type, kc.pb().DATA, kc.describe(kc.ser(p)))
            self.assertEqual(p.data.connectID, cid)
            h.update(p.data.data)
            n += len(p.data.data)
        snd.join_result(60)
        self.assertEqual(n, BULK)
        self.assertEqual(h.hexdigest(), pat.sha256())
        st.send(kc.close_req(cid))
        self.assertPacket(st.recv(20), kc.close_rsp(cid))

    # -- concurrency ---------------------------------------------------------------------------------------------

    def test_50_concurrent_streams_one_channel(self):
        """50 Proxy streams multiplexed on ONE grpcio channel (one HTTP/2 connection), each with its own dial and
        its own echo pattern, all open at the same time (newest kube-apiserver, protocol.md §7.4)."""
        n = 50
        server, _ = self.pair()
        echo = self.track(kt.EchoServer())
        ch = self.frontend_channel()
        streams = [self.stream(ch) for _ in range(n)]
        barrier = threading.Barrier(n, timeout=T(60))
        cids = [None] * n

        def one(i):
            st = streams[i]
            st.send(kc.dial_req(echo.addr, 5000 + i))
            p = st.recv_packet(30)
            if (p.type, p.dialResponse.random, p.dialResponse.error) != (kc.pb().DIAL_RSP, 5000 + i, ""):
                raise AssertionError("stream %d: %s" % (i, kc.describe(kc.ser(p))))
            cid = p.dialResponse.connectID
            cids[i] = cid
            barrier.wait()
            payload = kt.Pattern(16 * 1024 + 31 * i, seed=700 + i).bytes()
            for _ in range(2):
                st.send(kc.data(cid, payload))
                got = bytearray()
                while len(got) < len(payload):
                    q = st.recv_packet(30)
                    if q.type != kc.pb().DATA or q.data.connectID != cid:
                        raise AssertionError("stream %d: %s" % (i, kc.describe(kc.ser(q))))
                    got += q.data.data
                if bytes(got) != payload:
                    raise AssertionError("stream %d: wrong echo" % i)
            barrier.wait()
            st.send(kc.close_req(cid))
            raw = st.recv(30)
            if raw != kc.ser(kc.close_rsp(cid)):
                raise AssertionError("stream %d: %s" % (i, kc.describe(raw or b"")))
            return True

        threads = [kt.Bg(one, i, name="stream-%d" % i) for i in range(n)]
        for t in threads:
            t.start()
        results = [t.join_result(90) for t in threads]
        self.assertEqual(results, [True] * n)
        self.assertEqual(len(set(cids)), n, "connectIDs must be distinct: %r" % cids)
        self.assertEqual(sorted(cids), list(range(1, n + 1)), "agent numbers connectIDs 1.. per stream")
        self.assertEqual(len(echo.conns), n)
        for rec in echo.conns:
            self.assertTrue(rec.done.wait(T(10)))
        self.assertEqual(len(server.find(r"^Tunnel \d+ to '%s' established" % echo.addr)), n)

    # -- dial errors ---------------------------------------------------------------------------------------------

    def test_dial_refused(self):
        """Refused port → DIAL_RSP{random, error "dial tcp 127.0.0.1:P: connect: connection refused"}, connectID
        0, then the stream ends with OK."""
        self.pair()
        ref = self.track(kt.RefusedPort())
        st = self.stream(self.frontend_channel())
        st.send(kc.dial_req(ref.addr, 77))
        self.assertPacket(st.recv(10), kc.dial_rsp(77, error="dial tcp %s: connect: connection refused" % ref.addr))
        code, details, rest = st.wait_end()
        self.assertEqual((code, rest), (grpc.StatusCode.OK, []))

    def test_no_agent_available(self):
        """No agent connected → DIAL_RSP{random, error "No agent available"} and nothing else."""
        self.start_grpc_server()
        st = self.stream(self.frontend_channel())
        st.send(kc.dial_req("127.0.0.1:9", 78))
        self.assertPacket(st.recv(10), kc.dial_rsp(78, error="No agent available"))
        self.assertEqual(st.pending(0.5), [])

    def test_limits(self):
        """konn's limits on the gRPC frontend (README "Limits"): a Proxy stream beyond --max-frontend-connections
        ends with RESOURCE_EXHAUSTED "too many frontend connections"; a dial beyond --max-tunnels-per-agent gets
        DIAL_RSP{error "every agent is at its tunnel limit"}; the streams already open keep working."""
        server = self.start_grpc_server(extra=("--max-frontend-connections=2", "--max-tunnels-per-agent=1"))
        self.start_agent(server=server)
        echo = self.track(kt.EchoServer())
        ch = self.frontend_channel()
        first = self.stream(ch)
        first.send(kc.dial_req(echo.addr, 81))
        rsp = kc.parse(first.recv(10))
        self.assertEqual((rsp.dialResponse.random, rsp.dialResponse.error), (81, ""))
        second = self.stream(ch)
        second.send(kc.dial_req(echo.addr, 82))
        self.assertPacket(second.recv(10), kc.dial_rsp(82, error="every agent is at its tunnel limit"))
        third = self.stream(ch)
        third.send(kc.dial_req(echo.addr, 83))
        code, details, rest = third.wait_end(5)
        self.assertEqual((code, details, rest), (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many frontend connections",
                                                 []))
        first.send(kc.data(rsp.dialResponse.connectID, b"still echoing"))
        self.assertPacket(first.recv(10), kc.data(rsp.dialResponse.connectID, b"still echoing"))
        server.wait_for(r"^Refusing a Proxy stream from .*: limit 'frontend_connections' reached "
                        r"\(--max-frontend-connections\)\.$", prio_max=4)

    def test_dial_cls_before_dial_rsp(self):
        """DIAL_REQ to a target whose accept queue is full (the agent's dial hangs), then DIAL_CLS: no DIAL_RSP
        ever reaches the frontend, the stream ends, and the server keeps working (a later dial succeeds)."""
        bh = self.track(kt.Blackhole())
        if not bh.works:
            self.skipTest("cannot fill a listen backlog on this kernel")
        server, agent = self.pair(agent_extra=("--dial-timeout=2s",))
        echo = self.track(kt.EchoServer())
        st = self.stream(self.frontend_channel())
        st.send(kc.dial_req(bh.addr, 79))
        time.sleep(0.3)
        st.send(kc.dial_cls(79))
        code, details, rest = st.wait_end(5)
        self.assertEqual(rest, [], [kc.describe(r) for r in rest])
        self.assertEqual(code, grpc.StatusCode.OK)
        # konn forwards DIAL_CLS to its agent, which abandons the dial (upstream agents would ignore it).
        agent.wait_for(r"^Dial 79 to '%s' cancelled by the server" % bh.addr, timeout=5)
        # Past the agent's dial timeout: still no late answer anywhere, both daemons alive, and a new dial works.
        time.sleep(T(2.5))
        self.assertTrue(server.alive() and agent.alive())
        st2 = self.stream(self.frontend_channel())
        cid = self.grpc_dial(st2, echo.addr, 80)
        self.grpc_echo(st2, cid, b"still healthy")

    def test_close_req_while_pending(self):
        """CLOSE_REQ{0} before the DIAL_RSP (konnectivity-client would send DIAL_CLS here, §5.5; upstream forwards
        the CLOSE_REQ to the agent): konn abandons the dial and answers CLOSE_RSP{0} itself, never a DIAL_RSP."""
        bh = self.track(kt.Blackhole())
        if not bh.works:
            self.skipTest("cannot fill a listen backlog on this kernel")
        self.pair(agent_extra=("--dial-timeout=2s",))
        st = self.stream(self.frontend_channel())
        st.send(kc.dial_req(bh.addr, 81))
        time.sleep(0.3)
        st.send(kc.close_req(0))
        code, details, rest = st.wait_end(5)
        self.assertEqual([kc.describe(r) for r in rest], [kc.describe(kc.ser(kc.close_rsp(0)))])
        self.assertEqual(code, grpc.StatusCode.OK)

    # -- closing -------------------------------------------------------------------------------------------------

    def test_client_closes_first(self):
        """CLOSE_REQ{cid} → CLOSE_RSP{cid} (exact bytes), the target sees EOF, the stream ends with OK."""
        self.pair()
        echo = self.track(kt.EchoServer())
        st = self.stream(self.frontend_channel())
        cid = self.grpc_dial(st, echo.addr, 90)
        self.grpc_echo(st, cid, b"before close")
        st.send(kc.close_req(cid))
        self.assertPacket(st.recv(10), kc.close_rsp(cid))
        rec = echo.wait_conns(1)[0]
        self.assertTrue(rec.done.wait(T(5)), "target did not see EOF")
        self.assertIsNotNone(rec.eof_at)
        self.assertEqual(bytes(rec.data), b"before close")
        code, details, rest = st.wait_end()
        self.assertEqual((code, rest), (grpc.StatusCode.OK, []))

    def test_target_closes_first(self):
        """The target sends 300 KiB and closes: all DATA arrives, then CLOSE_RSP{cid} (no error) comes last."""
        self.pair()
        size = 300 * 1024
        src = self.track(kt.SourceServer(size, seed=91))
        st = self.stream(self.frontend_channel())
        cid = self.grpc_dial(st, src.addr, 91)
        n, sha, last = self.recv_until_close_rsp(st, cid, timeout=20)
        self.assertEqual(n, size)
        self.assertEqual(sha, kt.Pattern(size, seed=91).sha256())
        self.assertPacket(last, kc.close_rsp(cid))
        code, details, rest = st.wait_end()
        self.assertEqual((code, rest), (grpc.StatusCode.OK, []))

    def test_stream_cancel_closes_target(self):
        """The frontend cancels its stream without CLOSE_REQ: the server sends CLOSE_REQ to the agent, which closes
        the target connection (§5.2: established connections of an ending stream are closed)."""
        self.pair()
        echo = self.track(kt.EchoServer())
        st = self.stream(self.frontend_channel())
        cid = self.grpc_dial(st, echo.addr, 92)
        self.grpc_echo(st, cid, b"x" * 1000)
        st.cancel()
        rec = echo.wait_conns(1)[0]
        self.assertTrue(rec.done.wait(T(5)), "target connection not closed after the frontend stream ended")

    # -- protocol corner cases -----------------------------------------------------------------------------------

    def test_data_before_dial(self):
        """DATA before any DIAL_REQ → CLOSE_RSP{connectID, error "backend not initialized"} (§5.2)."""
        self.pair()
        st = self.stream(self.frontend_channel())
        st.send(kc.data(5, b"early"))
        self.assertPacket(st.recv(10), kc.close_rsp(5, error="backend not initialized"))

    def test_close_req_before_dial(self):
        """CLOSE_REQ before any DIAL_REQ → CLOSE_RSP{connectID, error "backend uninitialized"}; keep reading: a
        dial on the same stream still works."""
        self.pair()
        echo = self.track(kt.EchoServer())
        st = self.stream(self.frontend_channel())
        st.send(kc.close_req(6))
        self.assertPacket(st.recv(10), kc.close_rsp(6, error="backend uninitialized"))
        cid = self.grpc_dial(st, echo.addr, 93)
        self.grpc_echo(st, cid, b"after an early CLOSE_REQ")

    # -- transport -----------------------------------------------------------------------------------------------

    def test_unknown_method(self):
        """An unknown method on the frontend → grpc-status 12 UNIMPLEMENTED, no message."""
        self.start_grpc_server()
        st = self.stream(self.frontend_channel(), method="/ProxyService/Nope")
        code, details, rest = st.wait_end(10)
        self.assertEqual((code, rest), (grpc.StatusCode.UNIMPLEMENTED, []))

    def test_package_prefixed_method_is_unknown(self):
        """The method path has no package: "/client.ProxyService/Proxy" is UNIMPLEMENTED (§1.1)."""
        self.start_grpc_server()
        st = self.stream(self.frontend_channel(), method="/client.ProxyService/Proxy")
        code, details, rest = st.wait_end(10)
        self.assertEqual((code, rest), (grpc.StatusCode.UNIMPLEMENTED, []))

    def sent_authority(self, options):
        """The :authority grpcio really sends with these channel options (captured by a python3-h2 listener on a
        scratch socket), so that the authority tests cannot pass vacuously."""
        import h2.config
        import h2.connection
        import h2.events
        path = os.path.join(self.dir, "capture.sock")
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.closers.append(ls.close)
        ls.bind(path)
        ls.listen(1)
        ls.settimeout(T(5))
        ch = grpc.insecure_channel("unix:" + path, options=kc.channel_options(options))
        self.closers.append(ch.close)
        call = ch.stream_stream(kc.PROXY)(iter([b""]))
        self.closers.append(call.cancel)
        s, _ = ls.accept()
        self.closers.append(s.close)
        s.settimeout(T(5))
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        c.initiate_connection()
        s.sendall(c.data_to_send())
        for _ in range(50):
            b = s.recv(65536)
            if not b:
                break
            for ev in c.receive_data(b):
                if isinstance(ev, h2.events.RequestReceived):
                    return dict(ev.headers).get(":authority")
            s.sendall(c.data_to_send())
        self.fail("grpcio sent no request headers")

    def check_authority(self, authority):
        self.assertEqual(self.sent_authority([("grpc.default_authority", authority)]), authority)
        self.pair()
        echo = self.track(kt.EchoServer())
        ch = self.frontend_channel(options=[("grpc.default_authority", authority)])
        st = self.stream(ch)
        cid = self.grpc_dial(st, echo.addr, 94)
        self.grpc_echo(st, cid, b"authority " + authority.encode())

    def test_authority_raw_socket_path(self):
        """:authority = a raw socket path with slashes (older grpc-go, §2) is accepted."""
        self.check_authority("/tmp/x.sock")

    def test_authority_percent_encoded(self):
        """:authority = the percent-encoded socket path (grpc-go ≥ 1.5x) is accepted."""
        self.check_authority("%2Ftmp%2Fx.sock")

    def test_authority_default(self):
        """grpcio's own default :authority for a unix: target is accepted too."""
        self.pair()
        echo = self.track(kt.EchoServer())
        st = self.stream(self.frontend_channel())
        cid = self.grpc_dial(st, echo.addr, 95)
        self.grpc_echo(st, cid, b"default authority")
        self.assertEqual(self.sent_authority([]), "localhost")


class TestFrontendDirect(kc.ConfTestCase):
    """The direct route (--direct-cidrs) seen from a gRPC frontend: no agent at all, and the packets are the same
    as through an agent (DIAL_RSP with a connectID, DATA both ways, CLOSE_REQ → CLOSE_RSP, refusal texts)."""

    assertPacket = TestFrontend.assertPacket
    recv_until_close_rsp = TestFrontend.recv_until_close_rsp

    def direct_server(self):
        return self.start_grpc_server(extra=("--direct-cidrs=127.0.0.0/8",))

    def test_direct_echo_and_client_close(self):
        self.direct_server()
        echo = self.track(kt.EchoServer())
        st = self.stream(self.frontend_channel())
        cid = self.grpc_dial(st, echo.addr, 301)
        self.assertEqual(cid, 1)  # the server numbers its direct connections from 1
        self.grpc_echo(st, cid, b"direct over grpc" * 1000)
        st.send(kc.close_req(cid))
        self.assertPacket(st.recv(10), kc.close_rsp(cid))
        rec = echo.wait_conns(1)[0]
        self.assertTrue(rec.done.wait(T(5)), "target did not see EOF")
        code, details, rest = st.wait_end()
        self.assertEqual((code, rest), (grpc.StatusCode.OK, []))

    def test_direct_target_closes_first(self):
        self.direct_server()
        size = 300 * 1024
        src = self.track(kt.SourceServer(size, seed=92))
        st = self.stream(self.frontend_channel())
        cid = self.grpc_dial(st, src.addr, 302)
        n, sha, last = self.recv_until_close_rsp(st, cid, timeout=20)
        self.assertEqual((n, sha), (size, kt.Pattern(size, seed=92).sha256()))
        self.assertPacket(last, kc.close_rsp(cid))
        code, details, rest = st.wait_end()
        self.assertEqual((code, rest), (grpc.StatusCode.OK, []))

    def test_direct_dial_refused_same_packet_as_agent(self):
        self.direct_server()
        ref = self.track(kt.RefusedPort())
        st = self.stream(self.frontend_channel())
        st.send(kc.dial_req(ref.addr, 303))
        self.assertPacket(st.recv(10), kc.dial_rsp(303, error="dial tcp %s: connect: connection refused" % ref.addr))
        code, details, rest = st.wait_end()
        self.assertEqual((code, rest), (grpc.StatusCode.OK, []))

    def test_direct_stream_cancel_closes_target(self):
        self.direct_server()
        echo = self.track(kt.EchoServer())
        st = self.stream(self.frontend_channel())
        cid = self.grpc_dial(st, echo.addr, 304)
        self.grpc_echo(st, cid, b"then cancel")
        st.cancel()
        rec = echo.wait_conns(1)[0]
        self.assertTrue(rec.done.wait(T(5)), "target did not see EOF")


if __name__ == "__main__":
    kc.main()
