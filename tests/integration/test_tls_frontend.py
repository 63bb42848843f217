#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""HTTP CONNECT over the TCP+mTLS frontend: Python's ssl module and curl as clients, and clients without a valid
certificate being refused while the server keeps serving everyone else (protocol.md §7.1, §7.3)."""

import os
import socket
import ssl
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402


class TestTlsFrontend(kt.KonnTestCase):

    def start_tcp_pair(self):
        server = self.start_server(tcp=True)
        agent = self.start_agent(server=server)
        return server, agent

    def test_ssl_client(self):
        """Scenario 2a: CONNECT over TLS with a client certificate: exact 200, echo, HTTP/1.1 only (no h2)."""
        server, agent = self.start_tcp_pair()
        echo = self.track(kt.EchoServer())
        c = self.tls_client()
        self.assertIn(c.sock.version(), ("TLSv1.2", "TLSv1.3"))
        c.send_connect(echo.addr)
        self.assertEqual(c.read_head(), b"HTTP/1.1 200 Connection Established\r\n\r\n")
        self.assertEqual(c.pending_bytes(0.2), b"")
        self.assert_echo(c, b"over tls\n")
        self.assert_echo(c, kt.Pattern(500000, seed=2).bytes())
        c.close()

        # A client that offers only h2 must not get it: the frontend speaks HTTP/1.1.
        ctx = kt.Client.tls_context("client")
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection(("127.0.0.1", self.frontend_port), timeout=T(10))
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.track(kt.Client(s))
        self.assertIn(s.selected_alpn_protocol(), (None, "http/1.1"))
        c2 = kt.Client(s)
        self.assert_echo(self.open_tunnel(echo.addr, client=c2), b"alpn ok")

    def test_curl(self):
        """Scenario 2b: curl through the HTTPS proxy (CONNECT via --proxytunnel) to a tiny HTTP target."""
        if not os.access(kt.CURL, os.X_OK):
            self.skipTest("/usr/bin/curl is missing (install curl; it is required in CI)")
        server, agent = self.start_tcp_pair()
        web = self.track(kt.HttpTarget())
        argv = [kt.CURL, "-sS", "--max-time", str(int(T(15))), "--noproxy", "",
                "--proxytunnel", "--proxy", "https://127.0.0.1:%d" % self.frontend_port,
                "--proxy-cacert", kt.cert("ca.crt"), "--proxy-cert", kt.cert("client.crt"),
                "--proxy-key", kt.cert("client.key"),
                "-D", os.path.join(self.dir, "curl-headers"),
                "http://%s/konn" % web.addr]
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(30),
                           env=kt.clean_env())
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        self.assertEqual(r.stdout, kt.HttpTarget.BODY)
        with open(os.path.join(self.dir, "curl-headers"), "rb") as f:
            headers = f.read()
        # curl records the proxy's CONNECT response first, then the target's response.
        self.assertTrue(headers.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.0 200 OK\r\n")
                        or headers.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 OK\r\n"),
                        headers)
        server.wait_for(r"^Tunnel \d+ to '%s' established" % web.addr, KONN_DEST=web.addr)

        # Without the client certificate curl must fail (and the server keeps going).
        r = subprocess.run([a for a in argv if a not in (kt.cert("client.crt"), kt.cert("client.key"),
                                                          "--proxy-cert", "--proxy-key")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(30), env=kt.clean_env())
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stdout, b"")

    def test_stalled_handshakes_time_out(self):
        """§15: a TCP client that never starts the TLS handshake is dropped after --handshake-timeout (frontend:
        plus --header-timeout), on the frontend port and on the agent port; served tunnels are unaffected."""
        server = self.start_server(tcp=True, extra=["--handshake-timeout=1s", "--header-timeout=1s"])
        self.start_agent(server=server)
        echo = self.track(kt.EchoServer())
        keep = self.open_tunnel(echo.addr, client=self.tls_client())
        for port, lo, hi in ((self.frontend_port, 0.9, 3.5), (self.agent_port, 0.9, 2.5)):
            with self.subTest(port=port):
                raw = socket.create_connection(("127.0.0.1", port), timeout=T(10))
                self.track(raw)
                t0 = time.monotonic()
                got = kt.Client(raw).read_to_eof(timeout=10)
                elapsed = time.monotonic() - t0
                self.assertEqual(got, b"")
                self.assertGreaterEqual(elapsed, lo)
                self.assertLess(elapsed, T(hi))
        self.assert_echo(keep, b"still here")

    def _refused(self, c_factory):
        """A TLS client the server must refuse: either the handshake fails, or the first read fails / hits EOF,
        and not a single HTTP byte is received. Returns a description of how it failed."""
        try:
            c = c_factory()
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            return "handshake: %r" % e
        self.track(c)
        try:
            c.send_connect("127.0.0.1:9")
            got = c.read_to_eof(timeout=5)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            return "after handshake: %r" % e
        self.assertEqual(got, b"")
        return "EOF"

    def test_client_cert_required(self):
        """Scenario 3: no client certificate, or one from another CA: TLS failure, no HTTP response; the server
        logs the failure and keeps serving good clients (including one that was already connected)."""
        server, agent = self.start_tcp_pair()
        echo = self.track(kt.EchoServer())
        before = self.open_tunnel(echo.addr, client=self.tls_client())
        self.assert_echo(before, b"before")

        since = server.mark()
        how = self._refused(lambda: kt.Client.tls(self.frontend_port, cert_name=None))
        ll = server.wait_for(r"^TLS handshake with frontend client 127\.0\.0\.1:\d+ failed: ", since=since,
                             prio_max=4)
        self.assertRegex(ll.message, r"(?i)certificate", "no-cert failure (%s) not explained: %s" % (how, ll.message))

        since = server.mark()
        how = self._refused(lambda: kt.Client.tls(self.frontend_port, cert_name="other-agent"))
        ll = server.wait_for(r"^TLS handshake with frontend client 127\.0\.0\.1:\d+ failed: ", since=since,
                             prio_max=4)
        self.assertRegex(ll.message, r"(?i)certificate|unknown ca",
                         "wrong-CA failure (%s) not explained: %s" % (how, ll.message))

        # A client that does not trust the server (wrong CA on the client side) fails too.
        ctx = ssl.create_default_context(cafile=kt.cert("other-ca.crt"))
        ctx.load_cert_chain(kt.cert("client.crt"), kt.cert("client.key"))
        raw = socket.create_connection(("127.0.0.1", self.frontend_port), timeout=T(10))
        with self.assertRaises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        raw.close()

        # Plain text on the TLS port: refused, no HTTP answer.
        raw = socket.create_connection(("127.0.0.1", self.frontend_port), timeout=T(10))
        self.track(raw)
        raw.sendall(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")
        got = kt.Client(raw).read_to_eof(timeout=5)
        self.assertFalse(got.startswith(b"HTTP/"), got)

        # Everybody else is unaffected.
        self.assert_echo(before, b"after")
        self.assert_echo(self.open_tunnel(echo.addr, client=self.tls_client()), b"new client")
        self.assertTrue(server.alive())


if __name__ == "__main__":
    kt.main()
