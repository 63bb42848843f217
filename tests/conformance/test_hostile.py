#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Hostile peers against konn-server (protocol.md §1.4 rules, §2, §15). Throughout every test a real konn-agent is
connected and a gRPC-frontend tunnel through it carries echo traffic continuously (a background pinger); after each
hostile event konn must still be alive, the good tunnel must not have missed a beat, only the hostile stream may be
dropped (with grpc-status 13 INTERNAL, or 8 RESOURCE_EXHAUSTED for a message over 4 MiB) and the server must log
exactly one warning line for it. Hostile agents use grpcio (identity serializer) or python3-h2 over TLS; hostile
frontends use grpcio or python3-h2 on the Unix socket."""

import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konnconf as kc  # noqa: E402
from konnconf import T, kt  # noqa: E402

import grpc  # noqa: E402

MISMATCH = bytes.fromhex("08041a00")      # type DATA, payload dialResponse (empty)
NO_PAYLOAD = bytes.fromhex("0804")        # type DATA, no payload
MALFORMED = bytes.fromhex("ffffff")       # not a protobuf
BIG = 5 * kt.MIB


def big_data_packet():
    """A well-formed DATA packet of a little over 5 MiB."""
    return kc.ser(kc.data(1, b"\x00" * BIG))


class Pinger:
    """Echo round trips on an established gRPC tunnel, every 20 ms, in a background thread; any wrong byte,
    unexpected packet or 5 s stall is recorded as an error."""

    def __init__(self, stream, connect_id):
        self.stream, self.cid = stream, connect_id
        self.count = 0
        self.error = None
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True, name="pinger")
        self.thread.start()

    def _run(self):
        i = 0
        try:
            while not self.stop_ev.is_set():
                payload = b"ping %06d " % i + bytes(random.Random(i).randbytes(200))
                with self.lock:
                    self.stream.send(kc.data(self.cid, payload))
                    got = bytearray()
                    while len(got) < len(payload):
                        p = self.stream.recv_packet(5)
                        if p.type != kc.pb().DATA or p.data.connectID != self.cid:
                            raise AssertionError("good tunnel got %s" % kc.describe(kc.ser(p)))
                        got += p.data.data
                    if bytes(got) != payload:
                        raise AssertionError("good tunnel: wrong echo for ping %d" % i)
                self.count += 1
                i += 1
                self.stop_ev.wait(0.02)
        except BaseException as e:  # noqa: BLE001 - reported by check()
            self.error = e

    def check(self, min_new=3, timeout=5):
        """The pinger has no error and completes `min_new` more round trips (bounded)."""
        start = self.count
        deadline = time.monotonic() + T(timeout)
        while self.count < start + min_new:
            if self.error is not None:
                raise AssertionError("good tunnel broke: %r" % self.error)
            if time.monotonic() > deadline:
                raise AssertionError("good tunnel stalled (%d round trips)" % self.count)
            time.sleep(0.01)
        if self.error is not None:
            raise AssertionError("good tunnel broke: %r" % self.error)

    def close(self):
        self.stop_ev.set()
        self.thread.join(T(10))


class TestHostile(kc.ConfTestCase):

    def setUp(self):
        super().setUp()
        self.server = self.start_grpc_server()
        self.agent = self.start_agent(server=self.server)
        self.echo = self.track(kt.EchoServer())
        self.fe_channel = self.frontend_channel()
        self.good = self.stream(self.fe_channel)
        self.good_cid = self.grpc_dial(self.good, self.echo.addr, 1)
        self.pinger = Pinger(self.good, self.good_cid)
        self.closers.append(self.pinger.close)
        self.pinger.check()

    def tearDown(self):
        # The good agent's stream never went away.
        self.assertEqual(self.server.find(r"^Agent 'node1' disconnected"), [])

    # -- helpers -------------------------------------------------------------------------------------------------

    def assert_survived(self):
        """konn is alive, the good tunnel keeps echoing, and a fresh dial on the same frontend channel works."""
        self.assertTrue(self.server.alive(), "konn-server died:\n" + self.server.tail())
        self.pinger.check()
        st = self.stream(self.fe_channel)
        # Any hostile agent is gone by now, so the dial goes to the good agent.
        cid = self.grpc_dial(st, self.echo.addr, 2)
        self.grpc_echo(st, cid, b"fresh tunnel after the hostile event")
        st.send(kc.close_req(cid))
        self.assertEqual(st.recv(10), kc.ser(kc.close_rsp(cid)))

    def log_lines(self, since, prio_max):
        """Log lines at `prio_max` or more severe since `since`, once the first one appeared (or after 3 s)."""
        deadline = time.monotonic() + T(3)
        while not self.server.find(None, since=since, prio_max=prio_max) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        return self.server.find(None, since=since, prio_max=prio_max)

    def assert_one_line(self, lines, pattern):
        """Exactly one line, matching `pattern`."""
        self.assertEqual(len(lines), 1, "expected exactly one log line matching %r, got:\n%s"
                         % (pattern, "\n".join(ll.raw for ll in lines)))
        self.assertRegex(lines[0].message, pattern)
        return lines[0]

    def hostile_agent_grpcio(self, msg, status, keyword):
        """A grpcio fake agent: one benign stream and one hostile stream on the same channel; the hostile one sends
        `msg` and must end with `status`; the benign one must keep working."""
        since = self.server.mark()
        ch = self.agent_channel()
        _, benign = self.fake_agent("bystander", channel=ch)
        benign.initial_metadata()
        self.server.wait_for(r"^Agent 'bystander' connected", since=since, timeout=5)
        _, evil = self.fake_agent("evil", channel=ch)
        evil.initial_metadata()
        self.server.wait_for(r"^Agent 'evil' connected", since=since, timeout=5)
        mark = self.server.mark()
        evil.send(msg)
        code, details, rest = evil.wait_end(10)
        self.assertEqual(code, status, details)
        self.assertEqual(rest, [])
        self.assertIn(keyword, details)
        line = self.assert_one_line(self.log_lines(mark, 4), r"^Stream of agent 'evil' .*failed: ")
        self.assertIn(details, line.message)
        self.server.wait_for(r"^Agent 'evil' disconnected", since=mark, timeout=5)
        # The other stream of the same connection is unaffected.
        benign.send(kc.data(999, b"still there?"))
        self.assertEqual(benign.recv(5), kc.ser(kc.close_req(999)))
        benign.close()
        self.server.wait_for(r"^Agent 'bystander' disconnected", since=mark, timeout=5)
        self.assert_survived()

    def hostile_agent_raw(self, payload, status, keyword, end_stream=False):
        """python3-h2 over TLS: a benign Connect stream and a hostile one on the same connection; the hostile one
        sends raw DATA `payload`."""
        since = self.server.mark()
        h = self.raw_h2()
        self.assertEqual(h.alpn, "h2")
        benign = h.open_call(metadata=[("agentid", "bystander"), ("agentidentifiers", "")])
        h.wait_headers(benign)
        evil = h.open_call(metadata=[("agentid", "evil"), ("agentidentifiers", "")])
        hdrs = h.wait_headers(evil)
        self.assertEqual((hdrs.get(":status"), hdrs.get("serverid")), ("200", "srv1"))
        self.server.wait_for(r"^Agent 'evil' connected", since=since, timeout=5)
        mark = self.server.mark()
        h.send(evil, payload, end=end_stream)
        st = h.wait_end(evil, 10)
        self.assertEqual(st["grpc-status"], str(status), st)
        self.assertIn(keyword, st["grpc-message"] or "")
        self.assertEqual(h.messages(evil), [])
        line = self.assert_one_line(self.log_lines(mark, 4), r"^Stream of agent 'evil' .*failed: ")
        self.assertIn(st["grpc-message"], line.message)
        self.server.wait_for(r"^Agent 'evil' disconnected", since=mark, timeout=5)
        h.send(benign, kc.grpc_frame(kc.ser(kc.data(998, b"?"))))
        self.assertEqual(h.wait_messages(benign, 1), [kc.ser(kc.close_req(998))])
        self.assertFalse(h.closed)
        h.close()
        self.server.wait_for(r"^Agent 'bystander' disconnected", since=mark, timeout=5)
        self.assert_survived()

    def hostile_frontend_grpcio(self, msg, status, keyword, compression=None):
        """A hostile Proxy stream on the SAME grpcio channel as the good tunnel."""
        evil = self.stream(self.fe_channel, compression=compression)
        mark = self.server.mark()
        evil.send(msg)
        code, details, rest = evil.wait_end(10)
        self.assertEqual(code, status, details)
        self.assertEqual(rest, [])
        self.assertIn(keyword, details)
        lines = self.log_lines(mark, 6)
        self.assert_survived()
        # BUG: konn-server logs nothing at all (not even at debug level) when it ends a frontend stream with
        # 13/8 for a bad message; §15 asks for one log line, as it does for agent streams.
        line = self.assert_one_line(lines, r"(?i)frontend")
        self.assertIn(details, line.message)

    # -- hostile agents ------------------------------------------------------------------------------------------

    def test_agent_payload_mismatch(self):
        """08 04 1a 00 (DATA carrying a dialResponse) from an agent → 13 INTERNAL for that stream only."""
        self.hostile_agent_grpcio(MISMATCH, grpc.StatusCode.INTERNAL, "type")

    def test_agent_no_payload(self):
        """08 04 (DATA without payload) from an agent → 13 INTERNAL."""
        self.hostile_agent_grpcio(NO_PAYLOAD, grpc.StatusCode.INTERNAL, "payload")

    def test_agent_malformed_protobuf(self):
        """ff ff ff from an agent → 13 INTERNAL."""
        self.hostile_agent_grpcio(MALFORMED, grpc.StatusCode.INTERNAL, "malformed")

    def test_agent_message_over_4mib(self):
        """A 5 MiB message from an agent → 8 RESOURCE_EXHAUSTED."""
        self.hostile_agent_grpcio(big_data_packet(), grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max")

    def test_agent_compressed_flag(self):
        """A message with the compressed flag set (no grpc-encoding negotiated) → 13 INTERNAL."""
        self.hostile_agent_raw(kc.grpc_frame(kc.ser(kc.data(1, b"x")), compressed=True),
                               grpc.StatusCode.INTERNAL.value[0], "compress")

    def test_agent_truncated_message(self):
        """A length prefix announcing 100 bytes, 10 bytes sent, then END_STREAM → 13 INTERNAL."""
        self.hostile_agent_raw(kc.grpc_frame(b"\x08\x04\x22\x00" + b"\x00" * 6, length=100),
                               grpc.StatusCode.INTERNAL.value[0], "", end_stream=True)

    def test_agent_prefix_over_4mib_refused_before_body(self):
        """A length prefix announcing 5 MiB followed by only 1 KiB: refused at the prefix with 8, without waiting
        for (or buffering) the body (§15)."""
        self.hostile_agent_raw(kc.grpc_frame(b"\x00" * 1024, length=BIG),
                               grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], "larger than max")

    def test_agent_garbage_after_tls_handshake(self):
        """Random bytes instead of the HTTP/2 preface after a good TLS handshake (ALPN h2): the connection is
        closed, one warning line, nothing else affected."""
        mark = self.server.mark()
        h = self.raw_h2(preface=False)
        self.assertEqual(h.alpn, "h2")
        h.send_raw(random.Random(7).randbytes(512))
        h.wait_closed(10)
        lines = self.log_lines(mark, 4)
        self.assert_survived()
        self.assert_one_line(lines, r"(?i)agent connection")

    # -- hostile frontends ---------------------------------------------------------------------------------------

    def test_frontend_payload_mismatch(self):
        """08 04 1a 00 on a Proxy stream (same channel as the good tunnel) → 13 INTERNAL for that stream only."""
        self.hostile_frontend_grpcio(MISMATCH, grpc.StatusCode.INTERNAL, "type")

    def test_frontend_no_payload(self):
        """08 04 on a Proxy stream → 13 INTERNAL."""
        self.hostile_frontend_grpcio(NO_PAYLOAD, grpc.StatusCode.INTERNAL, "payload")

    def test_frontend_malformed_protobuf(self):
        """ff ff ff on a Proxy stream → 13 INTERNAL."""
        self.hostile_frontend_grpcio(MALFORMED, grpc.StatusCode.INTERNAL, "malformed")

    def test_frontend_message_over_4mib(self):
        """A 5 MiB message on a Proxy stream → 8 RESOURCE_EXHAUSTED."""
        self.hostile_frontend_grpcio(big_data_packet(), grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max")

    def test_frontend_gzip_compressed(self):
        """grpcio with gzip compression on a Proxy stream (grpc-encoding: gzip, compressed flag 1) → 13 INTERNAL
        (§15: no compression is supported)."""
        self.hostile_frontend_grpcio(kc.ser(kc.dial_req(self.echo.addr, 3)) * 20, grpc.StatusCode.INTERNAL,
                                     "compress", compression=grpc.Compression.Gzip)

    def test_frontend_truncated_message(self):
        """Raw HTTP/2 on the Unix socket: a prefix announcing 100 bytes, 10 sent, END_STREAM → 13 INTERNAL."""
        h = self.raw_h2(unix_path=self.sock_path)
        mark = self.server.mark()
        sid = h.open_call(path=kc.PROXY, metadata=[])
        h.send(sid, kc.grpc_frame(b"\x00" * 10, length=100), end=True)
        st = h.wait_end(sid, 10)
        self.assertEqual(st["grpc-status"], "13", st)
        self.assertEqual(h.messages(sid), [])
        lines = self.log_lines(mark, 6)
        self.assert_survived()
        # BUG: no log line at all for the failed frontend stream (see hostile_frontend_grpcio).
        line = self.assert_one_line(lines, r"(?i)frontend")
        self.assertIn(st["grpc-message"], line.message)

    def test_frontend_garbage_preface(self):
        """Random bytes instead of the HTTP/2 preface on the Unix socket → connection closed, one warning line."""
        mark = self.server.mark()
        h = self.raw_h2(unix_path=self.sock_path, preface=False)
        h.send_raw(random.Random(8).randbytes(512))
        h.wait_closed(10)
        lines = self.log_lines(mark, 4)
        self.assert_survived()
        self.assert_one_line(lines, r"(?i)frontend connection")


if __name__ == "__main__":
    kc.main()
