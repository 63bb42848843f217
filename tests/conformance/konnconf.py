# SPDX-License-Identifier: Apache-2.0
"""konnconf — shared pieces of konn's wire-conformance suite (independent peer: Debian's grpcio + protobuf).

Owns: the Python protobuf module generated (once per process, into a temp dir) from tests/conformance/
konnectivity.proto with grpc_tools.protoc; Packet builders; a raw-bytes bidi gRPC call wrapper with bounded reads
(Stream); a grpcio fake proxy server for konn-agent (FakeServer, ServerStream); a raw HTTP/2 + TLS gRPC client built
on python3-h2 for frames grpcio will not produce (RawH2); and ConfTestCase, which extends the integration harness
(tests/integration/konntest.py, imported, not copied) so that every channel, call and server is closed in cleanup.
Everything runs on loopback; every wait is bounded (scaled by konntest.T).
"""

import atexit
import importlib
import os
import queue
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402

import grpc  # noqa: E402

PYTHON = "/usr/bin/python3"
PROTO = os.path.join(HERE, "konnectivity.proto")

# Exact HTTP CONNECT responses, from protocol.md §7.1 (kept here, not taken from the integration harness).
RESP_200 = b"HTTP/1.1 200 Connection Established\r\n\r\n"
RESP_502_CONTEXT = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                    b"Backend context error: context canceled\r\n")


def resp_dial_error(status_line, text):
    """The answer to an error DIAL_RSP: status line, Connection: close, Content-Type, blank line, error text."""
    return (b"HTTP/1.1 " + status_line.encode() + b"\r\nConnection: close\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode())


AGENT_CONNECT = "/AgentService/Connect"
PROXY = "/ProxyService/Proxy"

# --------------------------------------------------------------------------------------------------------------
# Generated protobuf module

_pb = None
_pb_lock = threading.Lock()


def pb():
    """The konnectivity_pb2 module, generated from our .proto at first use."""
    global _pb
    with _pb_lock:
        if _pb is None:
            d = tempfile.mkdtemp(prefix="konn-conf-pb-")
            atexit.register(shutil.rmtree, d, True)
            r = subprocess.run([PYTHON, "-m", "grpc_tools.protoc", "-I" + HERE, "--python_out=" + d, PROTO],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            if r.returncode != 0:
                raise RuntimeError("grpc_tools.protoc failed: " + r.stdout.decode(errors="replace"))
            sys.path.insert(0, d)
            _pb = importlib.import_module("konnectivity_pb2")
        return _pb


# --------------------------------------------------------------------------------------------------------------
# Packets


def dial_req(address, random, protocol="tcp"):
    p = pb()
    return p.Packet(type=p.DIAL_REQ, dialRequest=p.DialRequest(protocol=protocol, address=address, random=random))


def dial_rsp(random, connect_id=0, error=""):
    p = pb()
    return p.Packet(type=p.DIAL_RSP, dialResponse=p.DialResponse(random=random, connectID=connect_id, error=error))


def data(connect_id, payload):
    p = pb()
    return p.Packet(type=p.DATA, data=p.Data(connectID=connect_id, data=payload))


def close_req(connect_id):
    p = pb()
    return p.Packet(type=p.CLOSE_REQ, closeRequest=p.CloseRequest(connectID=connect_id))


def close_rsp(connect_id, error=""):
    p = pb()
    return p.Packet(type=p.CLOSE_RSP, closeResponse=p.CloseResponse(connectID=connect_id, error=error))


def dial_cls(random):
    p = pb()
    return p.Packet(type=p.DIAL_CLS, closeDial=p.CloseDial(random=random))


def drain():
    p = pb()
    return p.Packet(type=p.DRAIN, drain=p.Drain())


def ser(packet):
    return packet.SerializeToString()


def parse(raw):
    p = pb().Packet()
    p.ParseFromString(raw)
    return p


PAYLOAD_OF_TYPE = {0: "dialRequest", 1: "dialResponse", 2: "closeRequest", 3: "closeResponse", 4: "data",
                   5: "closeDial", 6: "drain"}


def describe(raw):
    """A one-line description of a serialized packet, for assertion messages."""
    try:
        p = parse(raw)
    except Exception:  # noqa: BLE001 - a description must never raise
        return "undecodable %s" % raw[:64].hex()
    name = pb().PacketType.Name(p.type) if p.type in PAYLOAD_OF_TYPE else "type%d" % p.type
    body = " ".join(str(p).split())
    return "%s {%s} = %s" % (name, body, raw[:64].hex())


def grpc_frame(msg, compressed=False, length=None):
    """One gRPC length-prefixed message (5-byte prefix); `length` overrides the announced length."""
    return struct.pack(">BI", 1 if compressed else 0, len(msg) if length is None else length) + msg


# --------------------------------------------------------------------------------------------------------------
# Client side: one raw-bytes bidi call

_END = object()


def channel_options(extra=()):
    # A private subchannel pool: closing a channel really closes its connection, and two channels never share one.
    return [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)] + list(extra)


class Stream:
    """One bidirectional gRPC call with bytes in both directions (identity (de)serializers). Requests go through a
    queue consumed by grpcio; responses are collected by a reader thread. All reads are bounded."""

    def __init__(self, channel, method, metadata=None, compression=None):
        self.out = queue.Queue()
        self.inq = queue.Queue()
        self.ended = threading.Event()
        self.code = None
        self.details = None
        mc = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
        self.call = mc(self._requests(), metadata=metadata, compression=compression)
        self._reader = threading.Thread(target=self._read, daemon=True, name="stream-reader")
        self._reader.start()

    def _requests(self):
        while True:
            item = self.out.get()
            if item is _END:
                return
            yield item

    def _read(self):
        try:
            for msg in self.call:
                self.inq.put(msg)
        except grpc.RpcError:
            pass
        except Exception as e:  # noqa: BLE001 - recorded for the test
            self.details = "reader: %r" % e
        finally:
            try:
                self.code = self.call.code()
                self.details = self.call.details()
            except Exception:  # noqa: BLE001
                pass
            self.ended.set()
            self.inq.put(_END)

    def send(self, msg):
        """Queue one message: bytes as they are, or a Packet (serialized)."""
        self.out.put(msg if isinstance(msg, (bytes, bytearray)) else ser(msg))

    def half_close(self):
        self.out.put(_END)

    def recv(self, timeout=10):
        """Next message (bytes), or None when the call has ended. AssertionError after `timeout`."""
        try:
            m = self.inq.get(timeout=T(timeout))
        except queue.Empty:
            raise AssertionError("no message and no end of call within %.1f s" % T(timeout)) from None
        if m is _END:
            self.inq.put(_END)
            return None
        return m

    def recv_packet(self, timeout=10):
        m = self.recv(timeout)
        if m is None:
            raise AssertionError("call ended (%s: %s) while a packet was expected" % (self.code, self.details))
        return parse(m)

    def pending(self, wait=0.3):
        """Messages arriving within `wait` seconds (stops at the end of the call)."""
        out = []
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                m = self.inq.get(timeout=left)
            except queue.Empty:
                return out
            if m is _END:
                self.inq.put(_END)
                return out
            out.append(m)

    def wait_end(self, timeout=10):
        """Wait for the end of the call; returns (grpc.StatusCode, details, [messages still unread])."""
        if not self.ended.wait(T(timeout)):
            raise AssertionError("call did not end within %.1f s" % T(timeout))
        rest = []
        while True:
            m = self.inq.get(timeout=T(5))
            if m is _END:
                self.inq.put(_END)
                break
            rest.append(m)
        return self.code, self.details, rest

    def initial_metadata(self, timeout=10):
        t = kt.Bg(self.call.initial_metadata, name="initial-metadata")
        t.start()
        return t.join_result(timeout)

    def trailing_metadata(self):
        return self.call.trailing_metadata()

    def cancel(self):
        self.call.cancel()

    def close(self):
        self.out.put(_END)
        try:
            self.call.cancel()
        except Exception:  # noqa: BLE001
            pass
        self._reader.join(T(5))


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def agent_credentials(cert_name="agent"):
    return grpc.ssl_channel_credentials(read_file(kt.cert("ca.crt")), read_file(kt.cert(cert_name + ".key")),
                                        read_file(kt.cert(cert_name + ".crt")))


# --------------------------------------------------------------------------------------------------------------
# Server side: a grpcio fake proxy server for konn-agent


class ServerStream:
    """One /AgentService/Connect call accepted by FakeServer; driven by the test through send()/recv()."""

    def __init__(self, request_iterator, context):
        self.context = context
        self.metadata = list(context.invocation_metadata())
        self.auth = context.auth_context()
        self.peer = context.peer()
        self.out = queue.Queue()
        self.inq = queue.Queue()
        self.ended = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(request_iterator,), daemon=True,
                                        name="fake-server-reader")
        self._reader.start()

    def _read(self, it):
        try:
            for msg in it:
                self.inq.put(msg)
        except Exception:  # noqa: BLE001 - the call ended
            pass
        finally:
            self.ended.set()
            self.inq.put(_END)

    def md(self, key):
        return [v for k, v in self.metadata if k == key]

    def send(self, msg):
        self.out.put(msg if isinstance(msg, (bytes, bytearray)) else ser(msg))

    def finish(self):
        self.out.put(_END)

    def recv(self, timeout=10):
        try:
            m = self.inq.get(timeout=T(timeout))
        except queue.Empty:
            raise AssertionError("agent sent nothing within %.1f s" % T(timeout)) from None
        if m is _END:
            self.inq.put(_END)
            return None
        return m

    def recv_packet(self, timeout=10):
        m = self.recv(timeout)
        if m is None:
            raise AssertionError("agent stream ended while a packet was expected")
        return m

    def pending(self, wait=0.3):
        out = []
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                m = self.inq.get(timeout=left)
            except queue.Empty:
                return out
            if m is _END:
                self.inq.put(_END)
                return out
            out.append(m)

    def responses(self):
        """The handler's response generator: messages queued by send() until finish() or the call ends."""
        while self.context.is_active():
            try:
                m = self.out.get(timeout=0.1)
            except queue.Empty:
                continue
            if m is _END:
                return
            yield m


class FakeServer:
    """grpcio server on 127.0.0.1:<ephemeral> with mTLS (server.crt, client certs from ca.crt) serving
    /AgentService/Connect; every accepted call is put on self.streams. Sends serverid/servercount first."""

    def __init__(self, server_id="fake1", server_count="1", header_metadata=None):
        self.header_metadata = header_metadata if header_metadata is not None else \
            [("serverid", server_id), ("servercount", server_count)]
        self.streams = queue.Queue()
        self.all = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                                  options=[("grpc.so_reuseport", 0)])
        handler = grpc.method_handlers_generic_handler("AgentService", {
            "Connect": grpc.stream_stream_rpc_method_handler(self._connect)})
        self.server.add_generic_rpc_handlers((handler,))
        creds = grpc.ssl_server_credentials([(read_file(kt.cert("server.key")), read_file(kt.cert("server.crt")))],
                                            root_certificates=read_file(kt.cert("ca.crt")),
                                            require_client_auth=True)
        self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        if not self.port:
            raise RuntimeError("grpc server could not bind")
        self.server.start()

    def _connect(self, request_iterator, context):
        ss = ServerStream(request_iterator, context)
        self.all.append(ss)
        context.send_initial_metadata(self.header_metadata)
        self.streams.put(ss)
        yield from ss.responses()

    def accept(self, timeout=10):
        try:
            return self.streams.get(timeout=T(timeout))
        except queue.Empty:
            raise AssertionError("no agent stream within %.1f s" % T(timeout)) from None

    def close(self):
        for ss in self.all:
            ss.finish()
        self.server.stop(grace=None).wait(T(5))


# --------------------------------------------------------------------------------------------------------------
# Raw HTTP/2 gRPC client over TLS (python3-h2), for frames grpcio never sends


class RawH2:
    """A TLS connection speaking HTTP/2 with python3-h2; open_call() starts a gRPC POST, send() writes raw DATA."""

    def __init__(self, port=None, cert_name="agent", timeout=10, preface=True, unix_path=None):
        """TLS (ALPN h2, client certificate `cert_name`) to 127.0.0.1:port, or plain HTTP/2 on a Unix socket."""
        import h2.config
        import h2.connection
        self.alpn = None
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(T(timeout))
            self.sock.connect(unix_path)
            self.scheme, self.authority = "http", "localhost"
        else:
            ctx = ssl.create_default_context(cafile=kt.cert("ca.crt"))
            if cert_name:
                ctx.load_cert_chain(kt.cert(cert_name + ".crt"), kt.cert(cert_name + ".key"))
            ctx.set_alpn_protocols(["h2"])
            raw = socket.create_connection(("127.0.0.1", port), timeout=T(timeout))
            try:
                self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
            except BaseException:
                raw.close()
                raise
            self.alpn = self.sock.selected_alpn_protocol()
            self.scheme, self.authority = "https", "localhost"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.streams = {}
        self.closed = False
        self.goaway = None
        if preface:
            self.conn.initiate_connection()
            self.flush()

    def flush(self):
        d = self.conn.data_to_send()
        if d:
            self.sock.sendall(d)

    def open_call(self, path=AGENT_CONNECT, metadata=(("agentid", "raw"), ("agentidentifiers", ""))):
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", self.scheme), (":path", path), (":authority", self.authority),
                   ("content-type", "application/grpc"), ("te", "trailers")] + list(metadata)
        self.conn.send_headers(sid, headers)
        self.flush()
        self.streams[sid] = {"headers": None, "trailers": None, "data": bytearray(), "ended": False,
                             "reset": None}
        return sid

    def send(self, sid, payload, end=False):
        """Send payload as DATA frames, respecting flow control (bounded wait for window updates)."""
        deadline = time.monotonic() + T(20)
        off = 0
        while off < len(payload):
            st = self.streams[sid]
            if st["ended"] or st["reset"] is not None or self.closed:
                return off
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                if time.monotonic() > deadline:
                    raise AssertionError("flow-control window stayed closed")
                self._pump(0.2)
                continue
            chunk = payload[off:off + window]
            self.conn.send_data(sid, chunk)
            self.flush()
            off += len(chunk)
        if end:
            self.conn.end_stream(sid)
            self.flush()
        return off

    def send_raw(self, b):
        self.sock.sendall(b)

    def _pump(self, wait):
        import h2.events
        self.sock.settimeout(wait)
        try:
            b = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return
        except (ConnectionResetError, ssl.SSLError, OSError):
            b = b""
        if not b:
            self.closed = True
            return
        for ev in self.conn.receive_data(b):
            sid = getattr(ev, "stream_id", None)
            st = self.streams.get(sid)
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[sid] = {"headers": dict(ev.headers), "trailers": None, "data": bytearray(),
                                     "ended": False, "reset": None}
            elif isinstance(ev, h2.events.ResponseReceived) and st is not None:
                st["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived) and st is not None:
                st["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                if st is not None:
                    st["data"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and st is not None:
                st["ended"] = True
            elif isinstance(ev, h2.events.StreamReset) and st is not None:
                st["reset"] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code
        try:
            self.flush()
        except OSError:
            self.closed = True

    def wait_end(self, sid, timeout=10):
        """Wait until the stream ends (END_STREAM or RST_STREAM) or the connection closes; returns the stream's
        record: headers, trailers, data, ended, reset, and grpc-status / grpc-message (from the trailers, or from
        a trailers-only response)."""
        deadline = time.monotonic() + T(timeout)
        st = self.streams[sid]
        while not (st["ended"] or st["reset"] is not None or self.closed):
            if time.monotonic() > deadline:
                raise AssertionError("stream %d did not end within %.1f s: %r" % (sid, T(timeout), st))
            self._pump(0.1)
        src = st["trailers"] or st["headers"] or {}
        st["grpc-status"] = src.get("grpc-status")
        st["grpc-message"] = src.get("grpc-message")
        return st

    def messages(self, sid):
        """The complete gRPC messages received so far on stream sid (compressed flag ignored)."""
        buf, out = bytes(self.streams[sid]["data"]), []
        while len(buf) >= 5:
            n = struct.unpack(">I", buf[1:5])[0]
            if len(buf) < 5 + n:
                break
            out.append(buf[5:5 + n])
            buf = buf[5 + n:]
        return out

    def wait_messages(self, sid, n, timeout=10):
        """Wait until at least n complete messages arrived on sid; returns them all."""
        deadline = time.monotonic() + T(timeout)
        while len(self.messages(sid)) < n:
            st = self.streams[sid]
            if st["ended"] or st["reset"] is not None or self.closed:
                raise AssertionError("stream %d ended with %d of %d messages: %r" % (sid, len(self.messages(sid)),
                                                                                n, st))
            if time.monotonic() > deadline:
                raise AssertionError("stream %d: %d of %d messages within %.1f s" % (sid, len(self.messages(sid)),
                                                                                 n, T(timeout)))
            self._pump(0.1)
        return self.messages(sid)

    def wait_headers(self, sid, timeout=10):
        deadline = time.monotonic() + T(timeout)
        while self.streams[sid]["headers"] is None:
            if self.closed or time.monotonic() > deadline:
                raise AssertionError("no response headers on stream %d: %r" % (sid, self.streams[sid]))
            self._pump(0.1)
        return self.streams[sid]["headers"]

    def wait_closed(self, timeout=10):
        deadline = time.monotonic() + T(timeout)
        while not self.closed:
            if time.monotonic() > deadline:
                raise AssertionError("connection not closed within %.1f s" % T(timeout))
            self._pump(0.1)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class RawH2Server(RawH2):
    """The server side of one agent connection, in python3-h2: for frames grpcio's server never sends on demand
    (a GOAWAY in the middle of a stream). Listen with listener(), then RawH2Server(lsock.accept()[0])."""

    @staticmethod
    def listener():
        """A TLS listener on 127.0.0.1:<ephemeral> with server.crt, client certificates from ca.crt, ALPN h2."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=kt.cert("ca.crt"))
        ctx.load_cert_chain(kt.cert("server.crt"), kt.cert("server.key"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2"])
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        return ctx.wrap_socket(lsock, server_side=True)

    def __init__(self, sock, timeout=10):  # noqa: super().__init__ would dial
        import h2.config
        import h2.connection
        self.sock = sock
        self.sock.settimeout(T(timeout))
        self.alpn = sock.selected_alpn_protocol()
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams = {}
        self.closed = False
        self.goaway = None
        self.conn.initiate_connection()
        self.flush()

    def wait_call(self, timeout=10):
        """The first stream the agent opens; returns its id."""
        deadline = time.monotonic() + T(timeout)
        while not self.streams:
            if self.closed or time.monotonic() > deadline:
                raise AssertionError("no call from the agent")
            self._pump(0.1)
        return min(self.streams)

    def respond(self, sid, server_id="raw1", server_count="1"):
        self.conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                     ("serverid", server_id), ("servercount", server_count)])
        self.flush()

    def send_packet(self, sid, packet):
        self.send(sid, grpc_frame(ser(packet)))

    def send_goaway(self, last_stream_id, error_code=0):
        """A GOAWAY frame written as raw bytes: h2's own state machine would refuse to go on with the streams."""
        self.send_raw(struct.pack(">I", 8)[1:] + bytes([7, 0]) + struct.pack(">III", 0, last_stream_id, error_code))


# --------------------------------------------------------------------------------------------------------------
# Test case base


class ConfTestCase(kt.KonnTestCase):
    """KonnTestCase plus grpcio channels/calls/servers that are closed in cleanup (before the daemons stop)."""

    def setUp(self):
        super().setUp()
        pb()

    def start_grpc_server(self, extra=(), **kw):
        return self.start_server(extra=("--mode=grpc",) + tuple(extra), **kw)

    def frontend_channel(self, options=()):
        ch = grpc.insecure_channel("unix:" + self.sock_path, options=channel_options(options))
        self.closers.append(ch.close)
        return ch

    def stream(self, channel, method=PROXY, metadata=None, compression=None):
        s = Stream(channel, method, metadata=metadata, compression=compression)
        self.closers.append(s.close)
        return s

    def agent_channel(self, port=None, cert_name="agent", options=()):
        ch = grpc.secure_channel("127.0.0.1:%d" % (port or self.agent_port), agent_credentials(cert_name),
                                 options=channel_options([("grpc.ssl_target_name_override", "localhost")]
                                                         + list(options)))
        self.closers.append(ch.close)
        return ch

    def fake_agent(self, agent_id="fake", identifiers="", metadata=None, channel=None):
        """A grpcio fake agent: Connect stream on its own channel (or `channel`); returns (channel, stream)."""
        ch = channel or self.agent_channel()
        md = metadata if metadata is not None else [("agentid", agent_id), ("agentidentifiers", identifiers)]
        return ch, self.stream(ch, AGENT_CONNECT, metadata=md)

    def fake_server(self, **kw):
        fs = FakeServer(**kw)
        self.closers.append(fs.close)
        return fs

    def raw_h2(self, port=None, **kw):
        r = RawH2(port or self.agent_port, **kw)
        self.closers.append(r.close)
        return r

    def grpc_dial(self, stream, address, random, timeout=10):
        """DIAL_REQ on a frontend stream; asserts a successful DIAL_RSP for `random`; returns the connectID."""
        stream.send(dial_req(address, random))
        p = stream.recv_packet(timeout)
        self.assertEqual(p.type, pb().DIAL_RSP, describe(ser(p)))
        self.assertEqual(p.WhichOneof("payload"), "dialResponse")
        self.assertEqual(p.dialResponse.random, random)
        self.assertEqual(p.dialResponse.error, "")
        self.assertGreater(p.dialResponse.connectID, 0)
        return p.dialResponse.connectID

    def grpc_echo(self, stream, connect_id, payload, timeout=10):
        """Send payload as one DATA and read DATA packets until the same bytes came back."""
        stream.send(data(connect_id, payload))
        got = bytearray()
        while len(got) < len(payload):
            p = stream.recv_packet(timeout)
            self.assertEqual(p.type, pb().DATA, describe(ser(p)))
            self.assertEqual(p.data.connectID, connect_id)
            got += p.data.data
        self.assertEqual(bytes(got), payload)

    def expect_exit(self, d, timeout):
        """The daemon `d` is expected to exit by itself now: wait (bounded), return its exit code, and take it off
        the cleanup list (konntest would otherwise report it as having exited early)."""
        rc = d.wait_exit(timeout)
        if d in self.daemons:
            self.daemons.remove(d)
        try:
            d._logf.close()
        except Exception:  # noqa: BLE001
            pass
        return rc

    def wait_agent_gone(self, server, agent_id, since, timeout=10):
        return server.wait_for(r"^Agent '%s' disconnected" % agent_id, since=since, timeout=timeout,
                               MESSAGE_ID=kt.MSG_AGENT_DISCONNECTED)


def main():
    # unittest.main() plus the "konn-summary:" line tests/run-suite.sh and tools/check.sh count.
    kt.main()
