#!/usr/bin/python3
# Writes the hand-made seeds of the whole-connection fuzzers into tests/fuzz/corpus/<target>/seed-*: valid HTTP/2
# conversations (preface, SETTINGS, HEADERS with HPACK literals, gRPC-framed Packets) that reach deep into each
# daemon, so libFuzzer mutates from there. Run it again after changing it; the seeds are committed.
# Layouts are described at the top of tests/fuzz/fuzz-server.c and tests/fuzz/fuzz-agent-conn.c.
import os
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack(headers):
    """Literal header fields without indexing, new names, no Huffman: simple and valid."""
    out = bytearray()
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out += b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v
    return bytes(out)


def settings(pairs=()):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 127
        n >>= 7
        if n:
            out.append(b | 128)
        else:
            out.append(b)
            return bytes(out)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def msg(*fields):
    return b"".join(f for f in fields if f)


def packet(ptype, sub_field=None, sub=b""):
    body = field(1, 0, ptype) if ptype else b""
    if sub_field:
        body += field(sub_field, 2, sub)
    return body


def dial_req(address, random, protocol="tcp"):
    return packet(0, 2, msg(field(1, 2, protocol.encode()), field(2, 2, address.encode()), field(3, 0, random)))


def dial_rsp(random, connect_id=0, error=""):
    return packet(1, 3, msg(field(1, 2, error.encode()) if error else b"",
                            field(2, 0, connect_id) if connect_id else b"", field(3, 0, random)))


def close_req(cid):
    return packet(2, 5, field(1, 0, cid))


def close_rsp(cid, error=""):
    return packet(3, 6, msg(field(1, 2, error.encode()) if error else b"", field(2, 0, cid)))


def data(cid, payload):
    return packet(4, 4, msg(field(1, 0, cid), field(3, 2, payload)))


def dial_cls(random):
    return packet(5, 7, field(1, 0, random))


def drain():
    return packet(6, 8, b"")


def grpc(p, compressed=0):
    return bytes([compressed]) + struct.pack(">I", len(p)) + p


def grpc_data(stream, *packets, end=False):
    return frame(DATA, END_STREAM if end else 0, stream, b"".join(grpc(p) for p in packets))


def split(part1, part2):
    return struct.pack("<H", len(part1)) + part1 + part2


# The server's first dial ID with its generator reset to 0 (fuzz-server.c): splitmix64 over a counter.
def first_dial_id():
    x = 0x9E3779B97F4A7C15
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return x & (2**63 - 1)


def request_headers(path, extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"), ("te", "trailers")] + list(extra)


def seeds_server_agent():
    r = first_dial_id()
    connect = PREFACE + settings([(4, 1 << 20)]) + frame(HEADERS, END_HEADERS, 1, hpack(request_headers(
        "/AgentService/Connect", [("agentid", "fuzz-agent"), ("agentidentifiers", "host=localhost&ipv4=127.0.0.1")])))
    connect_ts = PREFACE + settings() + frame(HEADERS, END_HEADERS, 1, hpack(request_headers(
        "/AgentService/Connect", [("agentid", "fuzz-agent"), ("konn-features", "tunnel-streams")])))
    ack = frame(SETTINGS, ACK, 0)
    yield "classic-echo", split(connect, ack + grpc_data(1, dial_rsp(r, 1), data(1, b"hello"), close_rsp(1)))
    yield "classic-data-then-close-req", split(connect, ack + grpc_data(1, dial_rsp(r, 1), data(1, b"x" * 300)) +
                                              frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 65536)))
    yield "dial-error", split(connect, ack + grpc_data(1, dial_rsp(r, 0, "dial tcp 127.0.0.1:7777: i/o timeout")))
    yield "dial-cls", split(connect, ack + grpc_data(1, dial_cls(r)))
    yield "drain", split(connect + grpc_data(1, drain()), ack + grpc_data(1, dial_rsp(r, 5), data(5, b"hi")))
    yield "wrong-random", split(connect, ack + grpc_data(1, dial_rsp(r ^ 1, 1), data(1, b"?"), close_req(1)))
    yield "end-stream", split(connect, ack + grpc_data(1, dial_rsp(r, 1), end=True))
    yield "rst-goaway", split(connect, ack + grpc_data(1, dial_rsp(r, 1)) +
                              frame(RST_STREAM, 0, 1, struct.pack(">I", 8)) +
                              frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)))
    yield "ping", split(connect + frame(PING, 0, 0, b"12345678"), ack + frame(PING, ACK, 0, b"12345678"))
    yield "tunnel-stream", split(connect_ts, ack + frame(HEADERS, END_HEADERS, 3, hpack(request_headers(
        "/konn.Tunnel/Stream", [("konn-dial-id", str(r)), ("konn-connect-id", "1")]))) +
        grpc_data(3, data(1, b"tunnel bytes"), close_rsp(1)))
    yield "tunnel-stream-unknown", split(connect_ts, ack + frame(HEADERS, END_HEADERS, 3, hpack(request_headers(
        "/konn.Tunnel/Stream", [("konn-dial-id", "12345"), ("konn-connect-id", "1")]))))
    yield "no-agentid", split(PREFACE + settings() + frame(HEADERS, END_HEADERS, 1, hpack(request_headers(
        "/AgentService/Connect"))), b"")
    yield "continuation", split(PREFACE + settings() + frame(HEADERS, 0, 1, hpack(request_headers(
        "/AgentService/Connect"))) + frame(CONTINUATION, END_HEADERS, 1, hpack([("agentid", "a")])), b"")


def seeds_frontend_grpc():
    proxy = PREFACE + settings() + frame(HEADERS, END_HEADERS, 1, hpack(request_headers("/ProxyService/Proxy")))
    ack = frame(SETTINGS, ACK, 0)
    for b in (0, 1, 2, 3, 4, 8, 16):
        yield "proxy-%d" % b, bytes([b]) + split(proxy + grpc_data(1, dial_req("127.0.0.1:7777", 42)),
                                                 ack + grpc_data(1, data(1, b"hello"), close_req(1)))
    yield "proxy-two-streams", bytes([0]) + split(proxy + grpc_data(1, dial_req("127.0.0.1:7777", 1)) + frame(
        HEADERS, END_HEADERS, 3, hpack(request_headers("/ProxyService/Proxy"))) +
        grpc_data(3, dial_req("127.0.0.1:7777", 2), dial_cls(2)), grpc_data(1, data(1, b"x" * 1000)) +
        frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))
    yield "proxy-end-stream", bytes([0]) + split(proxy + grpc_data(1, dial_req("localhost:7777", 3)),
                                                 grpc_data(1, data(1, b"bye"), end=True))
    yield "proxy-goaway", bytes([0]) + split(proxy + grpc_data(1, dial_req("127.0.0.1:7777", 4)),
                                             frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)))
    yield "unimplemented", bytes([0]) + split(PREFACE + settings() + frame(
        HEADERS, END_HEADERS | END_STREAM, 1, hpack(request_headers("/AgentService/Connect"))), b"")


def seeds_frontend_connect():
    req = b"CONNECT 127.0.0.1:7777 HTTP/1.1\r\nHost: 127.0.0.1:7777\r\nUser-Agent: fuzz\r\n\r\n"
    for b in (0, 1, 2, 3, 4, 8, 16):
        yield "connect-%d" % b, bytes([b]) + split(req + b"pipelined", b"hello, target")
    yield "connect-big", bytes([0]) + split(req, bytes(range(256)) * 16)
    yield "get", bytes([0]) + split(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"")
    yield "connect-name", bytes([0]) + split(b"CONNECT kubernetes.default.svc:443 HTTP/1.1\r\n\r\n", b"x")
    yield "connect-ipv6", bytes([1]) + split(
        b"CONNECT [::1]:7777 HTTP/1.0\r\nProxy-Authorization: Basic eA==\r\n\r\n", b"")


def seeds_agent_conn():
    response = settings([(3, 100), (4, 1 << 20)]) + frame(SETTINGS, ACK, 0) + frame(
        HEADERS, END_HEADERS, 1, hpack([(":status", "200"), ("content-type", "application/grpc"),
                                        ("serverid", "fuzz-server"), ("servercount", "1")]))
    response_ts = settings() + frame(SETTINGS, ACK, 0) + frame(
        HEADERS, END_HEADERS, 1, hpack([(":status", "200"), ("content-type", "application/grpc"),
                                        ("serverid", "fuzz-server"), ("servercount", "2"),
                                        ("konn-features", "tunnel-streams")]))
    yield "dial-data-close", split(response + grpc_data(1, dial_req("127.0.0.1:7777", 7)),
                                   grpc_data(1, data(1, b"GET / HTTP/1.0\r\n\r\n"), close_req(1)))
    yield "dial-refused", split(response + grpc_data(1, dial_req("127.0.0.1:1", 8)), grpc_data(1, close_req(1)))
    yield "dial-name", split(response + grpc_data(1, dial_req("localhost:7777", 9)), b"")
    yield "dial-cls", split(response + grpc_data(1, dial_req("127.0.0.1:7777", 10), dial_cls(10)), b"")
    yield "two-dials", split(response + grpc_data(1, dial_req("127.0.0.1:7777", 11), dial_req("127.0.0.1:7777", 12)),
                             grpc_data(1, data(2, b"two"), data(1, b"one"), close_req(2)) +
                             frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)))
    yield "trailers", split(response + grpc_data(1, dial_req("127.0.0.1:7777", 13)),
                            frame(HEADERS, END_HEADERS | END_STREAM, 1, hpack([("grpc-status", "0")])))
    yield "tunnel-streams", split(response_ts + grpc_data(1, dial_req("127.0.0.1:7777", 14)),
                                  frame(HEADERS, END_HEADERS, 2 + 1, hpack([(":status", "200"),
                                                                          ("content-type", "application/grpc")])) +
                                  grpc_data(3, data(1, b"on its own stream"), close_req(1)))
    yield "ping-window", split(response + frame(PING, 0, 0, b"abcdefgh") +
                               frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1000)),
                               frame(RST_STREAM, 0, 1, struct.pack(">I", 2)))


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    for target, gen in (("server-agent", seeds_server_agent), ("server-grpc", seeds_frontend_grpc),
                        ("server-connect", seeds_frontend_connect), ("agent-conn", seeds_agent_conn)):
        d = os.path.join(top, target)
        os.makedirs(d, exist_ok=True)
        for name, blob in gen():
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(blob)


if __name__ == "__main__":
    main()
