#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""konn-agent against a grpcio fake proxy server (mTLS, /AgentService/Connect, serverid/servercount headers): request
metadata (§3.1), the TLS ClientHello's ALPN list (§2), and the agent's answer to every packet kind (§5.4), each
reply compared byte-for-byte with the python3-protobuf serialization of the expected Packet. Every packet the agent
sends in this file is also checked to carry the payload that matches its type."""

import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konnconf as kc  # noqa: E402
from konnconf import T, kt  # noqa: E402


def client_hello_alpn(sock, timeout):
    """Read one TLS ClientHello from a raw TCP socket; returns the list of offered ALPN protocol ids (None if the
    extension is absent)."""
    sock.settimeout(timeout)
    buf = b""

    def need(n):
        nonlocal buf
        while len(buf) < n:
            b = sock.recv(65536)
            if not b:
                raise AssertionError("EOF inside the ClientHello")
            buf += b

    need(5)
    ctype, _, rlen = struct.unpack(">BHH", buf[:5])
    if ctype != 22:
        raise AssertionError("not a TLS handshake record: %r" % buf[:5])
    need(5 + rlen)
    hs = buf[5:5 + rlen]
    if hs[0] != 1:
        raise AssertionError("not a ClientHello")
    hlen = int.from_bytes(hs[1:4], "big")
    if hlen + 4 > len(hs):
        raise AssertionError("ClientHello spans several records (unexpected for this client)")
    body = hs[4:4 + hlen]
    off = 2 + 32
    off += 1 + body[off]                                          # session id
    off += 2 + int.from_bytes(body[off:off + 2], "big")           # cipher suites
    off += 1 + body[off]                                          # compression methods
    ext_end = off + 2 + int.from_bytes(body[off:off + 2], "big")
    off += 2
    while off + 4 <= ext_end:
        etype, elen = struct.unpack(">HH", body[off:off + 4])
        ext = body[off + 4:off + 4 + elen]
        off += 4 + elen
        if etype == 16:
            names, i = [], 2
            while i < len(ext):
                n = ext[i]
                names.append(ext[i + 1:i + 1 + n].decode())
                i += 1 + n
            return names
    return None


class TestFakeServer(kc.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.seen = []

    # -- helpers -------------------------------------------------------------------------------------------------

    def start(self, identifiers="host=node1", extra=(), **fs_kw):
        self.fs = self.fake_server(**fs_kw)
        args = list(extra)
        if identifiers is not None:
            args.append("--agent-identifiers=" + identifiers)
        self.agent = self.start_agent(port=self.fs.port, server_id="fake1", extra=args)
        self.ss = self.fs.accept(10)
        return self.ss

    def recv(self, timeout=10):
        """Next packet from the agent (raw bytes); asserts its payload matches its type."""
        raw = self.ss.recv_packet(timeout)
        self.check_payload(raw)
        return raw

    def check_payload(self, raw):
        self.seen.append(raw)
        p = kc.parse(raw)
        self.assertIn(p.type, kc.PAYLOAD_OF_TYPE, kc.describe(raw))
        self.assertEqual(p.WhichOneof("payload"), kc.PAYLOAD_OF_TYPE[p.type], kc.describe(raw))
        # No unknown fields anywhere, canonical field order: the bytes are what Go's encoder would produce.
        q = kc.pb().Packet()
        q.CopyFrom(p)
        q.DiscardUnknownFields()
        self.assertEqual(kc.ser(q).hex(), raw.hex(), "non-canonical or unknown fields: " + kc.describe(raw))

    def expect(self, expected, timeout=10):
        raw = self.recv(timeout)
        self.assertEqual(kc.describe(raw), kc.describe(kc.ser(expected)))
        self.assertEqual(raw, kc.ser(expected))

    def nothing(self, wait=0.5):
        got = self.ss.pending(wait)
        for raw in got:
            self.check_payload(raw)
        self.assertEqual([kc.describe(r) for r in got], [])

    def dial_ok(self, address, random, connect_id):
        self.ss.send(kc.dial_req(address, random))
        self.expect(kc.dial_rsp(random, connect_id=connect_id))

    # -- handshake -----------------------------------------------------------------------------------------------

    def test_request_metadata(self):
        """agentid and agentidentifiers (verbatim) arrive once each; the client certificate is presented."""
        ss = self.start(identifiers="host=node1&ipv4=10.0.0.5")
        self.assertEqual(ss.md("agentid"), ["node1"])
        self.assertEqual(ss.md("agentidentifiers"), ["host=node1&ipv4=10.0.0.5"])
        self.assertEqual(ss.md("authorization"), [])
        self.assertEqual(len(ss.md("user-agent")), 1)
        self.assertEqual([k for k, _ in ss.metadata if k != k.lower()], [], "metadata keys must be lowercase")
        self.assertEqual(ss.auth.get("transport_security_type"), [b"ssl"])
        self.assertEqual(ss.auth.get("x509_common_name"), [b"konn-agent-1"])
        self.nothing(0.3)

    def test_reverse_listener_towards_upstream_server_refused_cleanly(self):
        """Node -> control plane needs a konn server. The agent asks for it (konn-features: ..., reverse), the
        upstream-protocol server never answers: every connection on the reverse listener is accepted and closed
        with nothing sent, the agent says so once, and the server sees no extra stream or packet."""
        port = kt.free_port()
        ss = self.start(extra=["--reverse-listen=api=127.0.0.1:%d" % port])
        feats = ss.md("konn-features")
        self.assertEqual(len(feats), 1)
        self.assertIn("reverse", [f.strip() for f in feats[0].split(",")])
        for _ in range(3):
            c = self.track(kt.Client(socket.create_connection(("127.0.0.1", port), timeout=T(10))))
            try:
                c.send(b"hello")
            except OSError:
                pass
            self.assertEqual(c.read_to_eof(timeout=10), b"")
        self.agent.wait_for(r"^No connected server offers node to control plane connections", timeout=10,
                            KONN_DIRECTION="reverse")
        self.assertEqual(len(self.agent.find(r"^No connected server offers")), 1)
        self.nothing(0.5)
        self.assertTrue(self.agent.alive())

    def test_empty_identifiers_still_sent(self):
        """--agent-identifiers empty → agentidentifiers is still sent, with an empty value (§3.1)."""
        ss = self.start(identifiers=None)
        self.assertEqual(ss.md("agentidentifiers"), [""])

    def check_alpn(self, extra, expected):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.closers.append(ls.close)
        ls.bind(("127.0.0.1", 0))
        ls.listen(4)
        ls.settimeout(T(10))
        self.start_agent(port=ls.getsockname()[1], wait=False, extra=extra)
        s, _ = ls.accept()
        self.closers.append(s.close)
        self.assertEqual(client_hello_alpn(s, T(10)), expected)

    def test_alpn_offers_h2(self):
        """The agent's ClientHello offers exactly ["h2"] (grpc-go ≥ 1.67 enforces it)."""
        self.check_alpn((), ["h2"])

    def test_alpn_extra_protocols_first(self):
        """--alpn-proto=foo,bar → ALPN ["foo", "bar", "h2"] (extra ids before h2, §2)."""
        self.check_alpn(("--alpn-proto=foo,bar",), ["foo", "bar", "h2"])

    def test_missing_serverid_rejected(self):
        """A server whose response headers lack serverid is not accepted: the agent ends that stream and does not
        report the server as connected (§3.2)."""
        fs = self.fake_server(header_metadata=[("servercount", "1")])
        agent = self.start_agent(port=fs.port, wait=False)
        ss = fs.accept(10)
        self.assertTrue(ss.ended.wait(T(5)), "agent kept a stream without serverid")
        self.assertEqual(agent.find(r"^Connected to server"), [])

    def test_bad_servercount_rejected(self):
        """servercount that is not an integer → the stream is given up (§3.2)."""
        fs = self.fake_server(header_metadata=[("serverid", "fake1"), ("servercount", "three")])
        agent = self.start_agent(port=fs.port, wait=False)
        ss = fs.accept(10)
        self.assertTrue(ss.ended.wait(T(5)), "agent kept a stream with a bad servercount")
        self.assertEqual(agent.find(r"^Connected to server"), [])

    # -- dials ---------------------------------------------------------------------------------------------------

    def test_connect_ids_sequential_failed_dials_consume(self):
        """DIAL_RSP{random, connectID} with IDs 1, 2, then a refused dial (consumes 3, answers connectID 0), then 4."""
        self.start()
        echo = self.track(kt.EchoServer())
        ref = self.track(kt.RefusedPort())
        self.dial_ok(echo.addr, 101, 1)
        self.dial_ok(echo.addr, 102, 2)
        self.ss.send(kc.dial_req(ref.addr, 103))
        self.expect(kc.dial_rsp(103, error="dial tcp %s: connect: connection refused" % ref.addr))
        self.dial_ok(echo.addr, 104, 4)
        self.assertEqual(len(echo.wait_conns(3)), 3)

    def test_dial_refused(self):
        """Refused → DIAL_RSP{random, error "dial tcp 127.0.0.1:P: connect: connection refused"}, connectID 0."""
        self.start()
        ref = self.track(kt.RefusedPort())
        self.ss.send(kc.dial_req(ref.addr, 7))
        self.expect(kc.dial_rsp(7, error="dial tcp %s: connect: connection refused" % ref.addr))

    def test_dial_missing_port(self):
        """Address without a port → "dial tcp: address 127.0.0.1: missing port in address"."""
        self.start()
        self.ss.send(kc.dial_req("127.0.0.1", 8))
        self.expect(kc.dial_rsp(8, error="dial tcp: address 127.0.0.1: missing port in address"))

    def test_dial_unknown_host(self):
        """x.invalid:80 → DIAL_RSP{random, error containing "no such host"}, connectID 0."""
        self.start()
        self.ss.send(kc.dial_req("x.invalid:80", 9))
        raw = self.recv(15)
        p = kc.parse(raw)
        self.assertEqual((p.type, p.dialResponse.random, p.dialResponse.connectID), (kc.pb().DIAL_RSP, 9, 0))
        self.assertIn("no such host", p.dialResponse.error)
        self.assertTrue(p.dialResponse.error.startswith("dial tcp: lookup x.invalid"), p.dialResponse.error)
        self.assertEqual(raw, kc.ser(kc.dial_rsp(9, error=p.dialResponse.error)))

    def test_dial_cls_for_pending_dial(self):
        """DIAL_CLS for a dial that hangs (full accept queue) → no DIAL_RSP for it ever (also past the dial
        timeout); the stream keeps working and the next dial gets the next connectID."""
        bh = self.track(kt.Blackhole())
        if not bh.works:
            self.skipTest("cannot fill a listen backlog on this kernel")
        self.start(extra=("--dial-timeout=2s",))
        echo = self.track(kt.EchoServer())
        self.ss.send(kc.dial_req(bh.addr, 11))
        if hasattr(kt, "syn_sent_count"):
            # Premise: the agent's connect() really is in progress.
            self.wait_until(lambda: kt.syn_sent_count(bh.port) >= 1, 5, "the agent's SYN to the blackhole")
        else:
            time.sleep(0.3)
        self.ss.send(kc.dial_cls(11))
        self.nothing(T(2.8))
        self.dial_ok(echo.addr, 12, 2)

    # -- data and close ------------------------------------------------------------------------------------------

    def test_data_round_trip(self):
        """DATA{1, bytes} → the target gets the bytes; the echo comes back as DATA{1, bytes}."""
        self.start()
        echo = self.track(kt.EchoServer())
        self.dial_ok(echo.addr, 21, 1)
        self.ss.send(kc.data(1, b"abc"))
        self.expect(kc.data(1, b"abc"))
        payload = kt.Pattern(256 * 1024, seed=21).bytes()
        self.ss.send(kc.data(1, payload))
        got = bytearray()
        while len(got) < len(payload):
            p = kc.parse(self.recv(10))
            self.assertEqual((p.type, p.data.connectID, p.data.error), (kc.pb().DATA, 1, ""))
            self.assertGreater(len(p.data.data), 0, "no empty DATA packets")
            got += p.data.data
        self.assertEqual(bytes(got), payload)

    def test_data_unknown_connect_id(self):
        """DATA for an unknown connectID → CLOSE_RSP{connectID, error "unrecognized connectID"}."""
        self.start()
        self.ss.send(kc.data(42, b"nobody"))
        self.expect(kc.close_rsp(42, error="unrecognized connectID"))

    def test_data_connect_id_zero_ignored(self):
        """DATA with connectID 0 is ignored."""
        self.start()
        self.ss.send(kc.data(0, b"zero"))
        self.nothing(0.5)

    def test_close_req_unknown(self):
        """CLOSE_REQ for an unknown connectID → CLOSE_RSP{connectID, error "Unknown connectID"}."""
        self.start()
        self.ss.send(kc.close_req(43))
        self.expect(kc.close_rsp(43, error="Unknown connectID"))

    def test_close_req_known(self):
        """CLOSE_REQ{1} → CLOSE_RSP{1} (no error) and the target sees EOF; data sent before it is delivered."""
        self.start()
        sink = self.track(kt.SinkServer())
        self.dial_ok(sink.addr, 31, 1)
        self.ss.send(kc.data(1, b"flushed before close"))
        self.ss.send(kc.close_req(1))
        self.expect(kc.close_rsp(1))
        rec = sink.wait_conns(1)[0]
        self.assertTrue(rec.done.wait(T(5)), "target did not see EOF")
        self.assertEqual(bytes(rec.data), b"flushed before close")
        # The ID is gone now.
        self.ss.send(kc.data(1, b"late"))
        self.expect(kc.close_rsp(1, error="unrecognized connectID"))

    def test_target_closes(self):
        """The target sends 200 KiB and closes → DATA{1} packets, then CLOSE_RSP{1} after all the DATA."""
        self.start()
        size = 200 * 1024
        src = self.track(kt.SourceServer(size, seed=41))
        self.dial_ok(src.addr, 41, 1)
        got = bytearray()
        while True:
            raw = self.recv(10)
            p = kc.parse(raw)
            if p.type != kc.pb().DATA:
                break
            self.assertEqual((p.data.connectID, p.data.error), (1, ""))
            got += p.data.data
        self.assertEqual(raw, kc.ser(kc.close_rsp(1)))
        self.assertEqual(bytes(got), kt.Pattern(size, seed=41).bytes())
        self.nothing(0.3)

    def test_target_reset_reported(self):
        """The target resets the connection → the agent still reports CLOSE_RSP{1} for it."""
        self.start()
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.closers.append(ls.close)
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        ls.settimeout(T(5))
        self.dial_ok("127.0.0.1:%d" % ls.getsockname()[1], 51, 1)
        s, _ = ls.accept()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        self.expect(kc.close_rsp(1))

    def test_dial_rsp_precedes_data(self):
        """A target that talks first: DIAL_RSP always precedes its first DATA (§5.4)."""
        self.start()
        src = self.track(kt.SourceServer(64 * 1024, seed=61))
        self.ss.send(kc.dial_req(src.addr, 61))
        self.expect(kc.dial_rsp(61, connect_id=1))
        p = kc.parse(self.recv(10))
        self.assertEqual((p.type, p.data.connectID), (kc.pb().DATA, 1))

    def test_unhandled_packet_types_ignored(self):
        """DIAL_RSP, CLOSE_RSP and DRAIN sent to an agent are ignored; the stream keeps working."""
        self.start()
        echo = self.track(kt.EchoServer())
        self.ss.send(kc.dial_rsp(1, connect_id=1))
        self.ss.send(kc.close_rsp(1))
        self.ss.send(kc.drain())
        self.nothing(0.5)
        self.dial_ok(echo.addr, 71, 1)
        self.assertTrue(self.agent.alive())

    def test_drain_on_first_sigterm(self):
        """First SIGTERM with a tunnel open → DRAIN{} (exactly 08 06 42 00) on the stream; the open tunnel keeps
        working; a new DIAL_REQ is still answered (konn: with an error, see the report); after CLOSE_REQ the agent
        exits 0 by itself."""
        self.start()
        echo = self.track(kt.EchoServer())
        self.dial_ok(echo.addr, 81, 1)
        self.agent.proc.send_signal(15)
        self.assertEqual(self.recv(5), bytes.fromhex("08064200"))
        self.ss.send(kc.data(1, b"after drain"))
        self.expect(kc.data(1, b"after drain"))
        self.ss.send(kc.dial_req(echo.addr, 82))
        p = kc.parse(self.recv(5))
        self.assertEqual((p.type, p.dialResponse.random), (kc.pb().DIAL_RSP, 82), kc.describe(kc.ser(p)))
        if p.dialResponse.error:
            self.assertEqual(p.dialResponse.connectID, 0)
        else:
            self.ss.send(kc.close_req(p.dialResponse.connectID))
            self.expect(kc.close_rsp(p.dialResponse.connectID))
        self.ss.send(kc.close_req(1))
        self.expect(kc.close_rsp(1))
        self.assertEqual(self.expect_exit(self.agent, 5), 0)

    def test_idle_agent_sigterm_exits(self):
        """SIGTERM with no tunnel open → the agent exits 0 at once; anything it still sends is a DRAIN{}."""
        self.start()
        self.agent.proc.send_signal(15)
        self.assertEqual(self.expect_exit(self.agent, 5), 0)
        self.assertTrue(self.ss.ended.wait(T(5)))
        rest = self.ss.pending(0.2)
        self.assertIn(rest, ([], [bytes.fromhex("08064200")]))

    def test_many_dials_payloads_match_types(self):
        """A mix of 30 dials (ok, refused, missing port), DATA, CLOSE_REQ and unknown IDs, interleaved: every packet
        the agent sends carries the payload of its type, and each DIAL_RSP answers exactly one DIAL_REQ."""
        self.start()
        echo = self.track(kt.EchoServer())
        ref = self.track(kt.RefusedPort())
        expect_randoms = set()
        for i in range(30):
            r = 1000 + i
            addr = (echo.addr, ref.addr, "127.0.0.1")[i % 3]
            self.ss.send(kc.dial_req(addr, r))
            expect_randoms.add(r)
            self.ss.send(kc.data(500 + i, b"?"))
            self.ss.send(kc.close_req(900 + i))
        dial_rsps, close_rsps = {}, 0
        deadline = time.monotonic() + T(20)
        while len(dial_rsps) < 30 or close_rsps < 60:
            self.assertLess(time.monotonic(), deadline)
            p = kc.parse(self.recv(10))
            if p.type == kc.pb().DIAL_RSP:
                self.assertNotIn(p.dialResponse.random, dial_rsps)
                dial_rsps[p.dialResponse.random] = p.dialResponse
            elif p.type == kc.pb().CLOSE_RSP:
                close_rsps += 1
                self.assertIn(p.closeResponse.error, ("unrecognized connectID", "Unknown connectID"))
            else:
                self.fail("unexpected %s" % kc.describe(kc.ser(p)))
        self.assertEqual(set(dial_rsps), expect_randoms)
        ok = sorted(d.connectID for d in dial_rsps.values() if not d.error)
        self.assertEqual(len(ok), 10)
        self.assertTrue(all(d.connectID == 0 for d in dial_rsps.values() if d.error))
        self.assertEqual(len(set(ok)), 10)
        self.assertEqual(len(self.seen), 90)
        self.nothing(0.3)


if __name__ == "__main__":
    kc.main()
