#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Malformed, oversized, non-CONNECT and missing requests on the CONNECT frontend (protocol.md §7.1 step 1, §15):
exact responses, nothing is ever dialed, and an established tunnel is unaffected throughout."""

import email.utils
import os
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402

RESP_405_RE = re.compile(
    rb"\AHTTP/1\.1 405 Method Not Allowed\r\n"
    rb"Content-Type: text/plain; charset=utf-8\r\n"
    rb"X-Content-Type-Options: nosniff\r\n"
    rb"Date: ((?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    rb"\d\d:\d\d:\d\d GMT)\r\n"
    rb"Content-Length: 45\r\n"
    rb"\r\n\Z")
BODY_405 = b"this proxy only supports CONNECT passthrough\n"


class TestBadRequests(kt.KonnTestCase):

    def setUp(self):
        super().setUp()
        self.server = self.start_server(extra=["--header-timeout=1s"])
        self.agent = self.start_agent(server=self.server)
        self.echo = self.track(kt.EchoServer())
        # A tunnel that lives through every bad request of the test.
        self.witness = self.open_tunnel(self.echo.addr)
        self.assert_echo(self.witness, b"witness up")

    def assert_witness_ok(self):
        self.assert_echo(self.witness, b"witness still fine")
        c = self.open_tunnel(self.echo.addr)
        self.assert_echo(c, b"new tunnel fine")

    def assert_never_dialed(self, agent_since):
        dials = self.agent.find(r"^(Connection \d+ to|Dial to) ", since=agent_since)
        self.assertEqual(dials, [], "the agent dialed for a bad request")

    def bad(self, request, expected):
        """Send one request; expect exactly `expected` and then EOF."""
        c = self.uds_client()
        c.send(request)
        got = c.read_to_eof(timeout=5)
        self.assertEqual(got, expected, "request %r" % request[:80])

    def test_get_405_keepalive(self):
        """GET → Go's exact 405 (Date matched by pattern and checked to be now); the connection stays usable and
        a CONNECT on it then works."""
        c = self.uds_client()
        c.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = c.read_head()
        m = RESP_405_RE.match(head)
        self.assertIsNotNone(m, head)
        date = email.utils.parsedate_to_datetime(m.group(1).decode())
        self.assertLess(abs(date.timestamp() - time.time()), 300)
        self.assertEqual(c.recv_exact(45), BODY_405)
        self.assertEqual(c.pending_bytes(0.2), b"")   # keep-alive: still open, nothing more
        # Next request on the same connection.
        c.send(b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIsNotNone(RESP_405_RE.match(c.read_head()))
        self.assertEqual(c.recv_exact(45), BODY_405)
        self.open_tunnel(self.echo.addr, client=c)
        self.assert_echo(c, b"connect after 405")
        self.assert_witness_ok()

    def test_bad_authority_400(self):
        """No port, unterminated IPv6 literal, port 0, port 70000, empty target: exact 400 then close, never
        dialed."""
        since = self.agent.mark()
        for target in (b"127.0.0.1", b"[::1", b"[::1]", b"127.0.0.1:0", b"127.0.0.1:70000", b"127.0.0.1:",
                       b"localhost:65536", b":80", b"127.0.0.1:80x"):
            with self.subTest(target=target):
                self.bad(b"CONNECT " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", kt.RESP_400)
        # An empty request-target with a Host header is still refused (§15).
        self.bad(b"CONNECT  HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n", kt.RESP_400)
        # Garbage request lines.
        self.bad(b"CONNECT 127.0.0.1:80 HTTP/9.9\r\n\r\n", kt.RESP_400)
        self.bad(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40 + b"\r\n\r\n", kt.RESP_400)
        self.assert_never_dialed(since)
        self.server.wait_for(r"^Malformed CONNECT request from unix:", prio_max=4)
        self.assert_witness_ok()

    def test_header_too_large_431(self):
        """Request line + headers over 8 KiB → exact 431 then close."""
        since = self.agent.mark()
        req = (b"CONNECT " + self.echo.addr.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
               + b"a" * 9000 + b"\r\n\r\n")
        self.bad(req, kt.RESP_431)
        # Exactly at the limit is fine: 8192 bytes including the final blank line.
        head = b"CONNECT " + self.echo.addr.encode() + b" HTTP/1.1\r\nX-Pad: "
        pad = 8192 - len(head) - len(b"\r\n\r\n")
        req = head + b"b" * pad + b"\r\n\r\n"
        self.assertEqual(len(req), 8192)
        c = self.uds_client()
        c.send(req)
        self.assertEqual(c.read_head(), kt.RESP_200)
        self.assert_echo(c, b"at the limit")
        # One byte more is not.
        req = head + b"b" * (pad + 1) + b"\r\n\r\n"
        self.bad(req, kt.RESP_431)
        self.assertEqual(len(self.agent.find(r"^Connection \d+ to ", since=since)), 1)
        self.assert_witness_ok()

    def test_header_timeout(self):
        """A client that sends nothing (or half a request line) is closed after --header-timeout=1s."""
        for what, data in (("nothing", b""), ("partial", b"CONNECT 127.0.0.1:1 HT")):
            with self.subTest(what=what):
                c = self.uds_client()
                t0 = time.monotonic()
                if data:
                    c.send(data)
                got = c.read_to_eof(timeout=5)
                elapsed = time.monotonic() - t0
                self.assertEqual(got, b"")
                self.assertGreaterEqual(elapsed, 0.9)
                self.assertLess(elapsed, T(3))
        self.server.wait_for(r"sent no complete request within the time limit")
        self.assert_witness_ok()

    def test_many_bad_clients_in_parallel(self):
        """A burst of bad and silent clients does not disturb established tunnels."""
        silent = [self.uds_client() for _ in range(20)]
        for i in range(20):
            self.bad(b"CONNECT [::1 HTTP/1.1\r\n\r\n", kt.RESP_400)
        self.assert_witness_ok()
        for c in silent:
            self.assertEqual(c.read_to_eof(timeout=5), b"")
        self.assert_witness_ok()


if __name__ == "__main__":
    kt.main()
