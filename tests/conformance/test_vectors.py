#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Wire vectors of protocol.md §1.4: each packet encoded by an independent protobuf implementation (python3-protobuf,
from tests/conformance/konnectivity.proto) must equal the hex copied from protocol.md, must exist byte-for-byte as a
seed of konn's packet fuzzer corpus (tests/fuzz/corpus/packet/, the bytes konn's C codec is tested with), and must
decode back to the same fields. No daemon is started."""

import hashlib
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konnconf as kc  # noqa: E402

CORPUS = os.path.join(os.path.dirname(kc.HERE), "fuzz", "corpus", "packet")

# (name, builder, hex from protocol.md §1.4 copied verbatim, expected decoded fields)
VECTORS = [
    ("dial_req", lambda: kc.dial_req("127.0.0.1:80", 1),
     "12 15 0a 03 74 63 70 12 0c 31 32 37 2e 30 2e 30 2e 31 3a 38 30 18 01",
     ("DIAL_REQ", "dialRequest", {"protocol": "tcp", "address": "127.0.0.1:80", "random": 1})),
    ("dial_req_negative_random", lambda: kc.dial_req("", -1, protocol=""),
     "12 0b 18 ff ff ff ff ff ff ff ff ff 01",
     ("DIAL_REQ", "dialRequest", {"protocol": "", "address": "", "random": -1})),
    ("dial_rsp_ok", lambda: kc.dial_rsp(1, connect_id=1),
     "08 01 1a 04 10 01 18 01",
     ("DIAL_RSP", "dialResponse", {"error": "", "connectID": 1, "random": 1})),
    ("dial_rsp_error", lambda: kc.dial_rsp(1, error="x"),
     "08 01 1a 05 0a 01 78 18 01",
     ("DIAL_RSP", "dialResponse", {"error": "x", "connectID": 0, "random": 1})),
    ("data", lambda: kc.data(1, b"hi"),
     "08 04 22 06 08 01 1a 02 68 69",
     ("DATA", "data", {"connectID": 1, "error": "", "data": b"hi"})),
    ("close_req", lambda: kc.close_req(1),
     "08 02 2a 02 08 01",
     ("CLOSE_REQ", "closeRequest", {"connectID": 1})),
    ("close_rsp", lambda: kc.close_rsp(1),
     "08 03 32 02 10 01",
     ("CLOSE_RSP", "closeResponse", {"error": "", "connectID": 1})),
    ("close_rsp_empty", lambda: kc.close_rsp(0),
     "08 03 32 00",
     ("CLOSE_RSP", "closeResponse", {"error": "", "connectID": 0})),
    ("dial_cls", lambda: kc.dial_cls(1),
     "08 05 3a 02 08 01",
     ("DIAL_CLS", "closeDial", {"random": 1})),
    ("drain", lambda: kc.drain(),
     "08 06 42 00",
     ("DRAIN", "drain", {})),
]


def corpus_files():
    out = {}
    for name in sorted(os.listdir(CORPUS)):
        with open(os.path.join(CORPUS, name), "rb") as f:
            out[name] = f.read()
    return out


class TestVectors(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.corpus = corpus_files()

    def check_encode(self, name):
        _, build, hexstr, _ = next(v for v in VECTORS if v[0] == name)
        expected = bytes.fromhex(hexstr.replace(" ", ""))
        self.assertEqual(kc.ser(build()).hex(" "), expected.hex(" "))

    def check_corpus(self, name):
        _, _, hexstr, _ = next(v for v in VECTORS if v[0] == name)
        expected = bytes.fromhex(hexstr.replace(" ", ""))
        matches = [f for f, b in self.corpus.items() if b == expected]
        self.assertEqual(len(matches), 1, "seed with bytes %s in %s: %r" % (expected.hex(" "), CORPUS, matches))
        # Seeds are named by the SHA-256 of their content.
        self.assertEqual(matches[0], hashlib.sha256(expected).hexdigest())

    def check_decode(self, name):
        _, _, hexstr, (type_name, payload, fields) = next(v for v in VECTORS if v[0] == name)
        p = kc.parse(bytes.fromhex(hexstr.replace(" ", "")))
        self.assertEqual(kc.pb().PacketType.Name(p.type), type_name)
        self.assertEqual(p.WhichOneof("payload"), payload)
        sub = getattr(p, payload)
        for k, v in fields.items():
            self.assertEqual(getattr(sub, k), v, k)
        # Every field of the submessage is covered by the expectation.
        self.assertEqual(sorted(f.name for f in sub.DESCRIPTOR.fields), sorted(fields))
        # Re-encoding is canonical.
        self.assertEqual(kc.ser(p).hex(" "), hexstr)

    def test_dial_req_field1_absent(self):
        """Type 0 is the proto3 default: no field 1 on the wire; a decoder defaults to DIAL_REQ."""
        b = kc.ser(kc.dial_req("127.0.0.1:80", 1))
        self.assertEqual(b[0], 0x12)
        self.assertEqual(kc.parse(bytes.fromhex("1200")).type, kc.pb().DIAL_REQ)

    def test_empty_oneof_member_is_emitted(self):
        """A set oneof member is serialized even when empty (32 00, 42 00)."""
        self.assertEqual(kc.ser(kc.close_rsp(0)), bytes.fromhex("08033200"))
        self.assertEqual(kc.ser(kc.drain()), bytes.fromhex("08064200"))
        p = kc.pb().Packet(type=kc.pb().DRAIN)
        self.assertEqual(kc.ser(p), bytes.fromhex("0806"), "without the payload only the type is sent")

    def test_negative_int64_is_ten_byte_varint(self):
        b = kc.ser(kc.dial_cls(-1))
        self.assertEqual(b, bytes.fromhex("08053a0b08ffffffffffffffffff01"))

    def test_schema_matches_protocol(self):
        """Our .proto against §1.1-§1.3: no package, the method paths, bidi streaming, field numbers and types."""
        d = kc.pb().DESCRIPTOR
        self.assertEqual((d.package, d.syntax), ("", "proto3"))
        paths = {}
        for s in d.services_by_name.values():
            for m in s.methods:
                paths["/%s/%s" % (s.full_name, m.name)] = (m.input_type.full_name, m.output_type.full_name,
                                                           m.client_streaming, m.server_streaming)
        self.assertEqual(paths, {kc.PROXY: ("Packet", "Packet", True, True),
                                 kc.AGENT_CONNECT: ("Packet", "Packet", True, True)})
        self.assertEqual({v.name: v.number for v in d.enum_types_by_name["PacketType"].values},
                         {"DIAL_REQ": 0, "DIAL_RSP": 1, "CLOSE_REQ": 2, "CLOSE_RSP": 3, "DATA": 4, "DIAL_CLS": 5,
                          "DRAIN": 6})
        F = kc.pb().Packet.DESCRIPTOR.fields_by_name["type"].__class__
        fields = {}
        for name in ("Packet", "DialRequest", "DialResponse", "CloseRequest", "CloseResponse", "CloseDial",
                     "Drain", "Data"):
            for f in d.message_types_by_name[name].fields:
                fields["%s.%s" % (name, f.name)] = (f.number, f.type)
        self.assertEqual(fields, {
            "Packet.type": (1, F.TYPE_ENUM),
            "Packet.dialRequest": (2, F.TYPE_MESSAGE), "Packet.dialResponse": (3, F.TYPE_MESSAGE),
            "Packet.data": (4, F.TYPE_MESSAGE), "Packet.closeRequest": (5, F.TYPE_MESSAGE),
            "Packet.closeResponse": (6, F.TYPE_MESSAGE), "Packet.closeDial": (7, F.TYPE_MESSAGE),
            "Packet.drain": (8, F.TYPE_MESSAGE),
            "DialRequest.protocol": (1, F.TYPE_STRING), "DialRequest.address": (2, F.TYPE_STRING),
            "DialRequest.random": (3, F.TYPE_INT64),
            "DialResponse.error": (1, F.TYPE_STRING), "DialResponse.connectID": (2, F.TYPE_INT64),
            "DialResponse.random": (3, F.TYPE_INT64),
            "CloseRequest.connectID": (1, F.TYPE_INT64),
            "CloseResponse.error": (1, F.TYPE_STRING), "CloseResponse.connectID": (2, F.TYPE_INT64),
            "CloseDial.random": (1, F.TYPE_INT64),
            "Data.connectID": (1, F.TYPE_INT64), "Data.error": (2, F.TYPE_STRING), "Data.data": (3, F.TYPE_BYTES),
        })
        self.assertEqual([f.name for f in d.message_types_by_name["Packet"].oneofs_by_name["payload"].fields],
                         ["dialRequest", "dialResponse", "data", "closeRequest", "closeResponse", "closeDial",
                          "drain"])

    def test_corpus_has_all_vectors(self):
        present = {b for b in self.corpus.values()}
        missing = [n for n, _, h, _ in VECTORS if bytes.fromhex(h.replace(" ", "")) not in present]
        self.assertEqual(missing, [])

    def test_corpus_seed_names_are_sha256(self):
        bad = [f for f, b in self.corpus.items() if hashlib.sha256(b).hexdigest() != f]
        self.assertEqual(bad, [])


def _add(name):
    setattr(TestVectors, "test_encode_%s" % name, lambda self: self.check_encode(name))
    setattr(TestVectors, "test_corpus_%s" % name, lambda self: self.check_corpus(name))
    setattr(TestVectors, "test_decode_%s" % name, lambda self: self.check_decode(name))


for _v in VECTORS:
    _add(_v[0])


if __name__ == "__main__":
    kc.main()
