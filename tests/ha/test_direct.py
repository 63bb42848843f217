#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The server's direct route (--direct-cidrs, issue 12): a dial to a numeric address inside the CIDRs skips the
agents and is connected by the server itself; everything else goes through an agent as before.

  * inside the CIDRs the destination is reached with no agent connected at all (64 KiB each way, byte-exact);
    /tunnels says route "direct", the journal fields KONN_ROUTE=direct;
  * outside (another loopback address, or a host name) the dial goes through the agent and the strategies;
  * a refused port answers the exact bytes an agent's refusal gives (Go's "dial tcp ...: connect: connection
    refused"), a blackholed one the exact 504 of --backend-dial-timeout, both compared with tunnelled dials in the
    same test; the failures land in konn_server_direct_dial_failure_count{reason} with upstream's reason values,
    and upstream's dial_failure_count is left to tunnelled dials;
  * IPv6 CIDRs (::1/128);
  * invalid CIDRs are configuration errors naming the flag.
"""

import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hatest as ht  # noqa: E402
from hatest import kt  # noqa: E402

S = ht.M + "server_"


class DirectRoute(ht.HaTestCase):

    def target_on(self, host):
        echo = kt.EchoServer(host=host)
        return self.track(echo)

    def test_inside_cidr_reached_without_any_agent(self):
        server = self.start_konn_server("srv1", extra=("--direct-cidrs=127.0.0.2/32,10.0.0.0/8",))
        echo = self.target_on("127.0.0.2")
        c = self.tunnel_via(server, echo.addr)
        data = kt.Pattern(64 * 1024, seed=3).bytes()
        c.send(data)
        self.assertEqual(c.recv_exact(len(data)), data)
        tunnels = self.admin_json(server, "tunnels")
        self.assertEqual(len(tunnels), 1)
        t = tunnels[0]
        self.assertEqual((t["route"], t["direction"], t["agent"], t["state"], t["destination"]),
                         ("direct", "forward", "", "established", echo.addr))
        self.assertEqual((t["bytes_in"], t["bytes_out"]), (len(data), len(data)))
        server.wait_for(r"^Tunnel 1 to '%s' established directly" % echo.addr, timeout=10,
                        MESSAGE_ID=kt.MSG_TUNNEL_OPENED, KONN_ROUTE="direct", KONN_DEST=echo.addr)
        c.close()
        line = server.wait_for(r"^Tunnel 1 to '%s' closed \(closed by client\)" % echo.addr, timeout=10,
                               MESSAGE_ID=kt.MSG_TUNNEL_CLOSED, KONN_ROUTE="direct")
        self.assertEqual((line.fields["KONN_BYTES_IN"], line.fields["KONN_BYTES_OUT"]),
                         (str(len(data)), str(len(data))))
        m = self.metrics(server)
        self.assertEqual(m.value("konn_server_direct_dial_duration_seconds_count"), 1)
        # Upstream's families describe tunnelled dials only.
        self.assertIsNone(m.get(S + "dial_duration_seconds_count"))
        self.assertEqual(m.value(S + "established_connections"), 0)
        # Readiness still means "an agent is there" (§9.1).
        self.assertEqual(self.get(server.health_port, "/readyz").status, 500)

    def test_destination_closes_first_and_pipelined_bytes(self):
        server = self.start_konn_server("srv1", extra=("--direct-cidrs=127.0.0.0/8",))
        src = self.track(kt.SourceServer(256 * 1024, seed=7))
        c = self.client_of(server)
        c.send_connect(src.addr, extra=b"early bytes")
        self.assertEqual(c.read_head(), kt.RESP_200)
        self.assertEqual(c.read_to_eof(timeout=10, limit=1 << 20), kt.Pattern(256 * 1024, seed=7).bytes())
        self.wait_until(lambda: src.conns and src.conns[0].data == b"early bytes", 10, "pipelined bytes")
        server.wait_for(r"closed \(closed by destination\)", timeout=10, KONN_ROUTE="direct")
        self.wait_until(lambda: self.admin_json(server, "tunnels") == [], 10, "the tunnel to go")

    def test_outside_cidr_goes_through_the_agent(self):
        server = self.start_konn_server("srv1", extra=("--direct-cidrs=127.0.0.2/32",))
        inside, outside = self.target_on("127.0.0.2"), self.target_on("127.0.0.1")
        # No agent: only the direct destination works.
        self.assertEqual(self.connect_expect(server, outside.addr), kt.RESP_500_NO_AGENT)
        agent = self.start_konn_agent(wait_server=server)
        c1 = self.tunnel_via(server, outside.addr)
        self.assert_echo(c1, b"through the agent\n")
        c2 = self.tunnel_via(server, inside.addr)
        self.assert_echo(c2, b"straight from the server\n")
        routes = sorted((t["destination"], t["route"], t["agent"]) for t in self.admin_json(server, "tunnels"))
        self.assertEqual(routes, sorted([(outside.addr, "agent", "node1"), (inside.addr, "direct", "")]))
        # The agent dialled only the outside destination.
        self.assertEqual(len(agent.find(r"^Connection \d+ to '%s' established" % outside.addr)), 1)
        self.assertEqual(agent.find(inside.addr), [])
        # Host names always go through the agents (they resolve in the cluster).
        c3 = self.tunnel_via(server, "localhost:%d" % outside.port)
        self.assert_echo(c3, b"by name\n")
        self.assertEqual(len(agent.find(r"^Connection \d+ to 'localhost:%d' established" % outside.port)), 1)

    def test_refused_and_timeout_bytes_and_metrics_match_tunnelled(self):
        refused = self.track(kt.RefusedPort())
        hole = self.track(kt.Blackhole())
        if not hole.works:
            self.skipTest("cannot make a blackholed loopback port here")
        # Tunnelled: an agent dials; the server's dial timeout (1 s) is shorter than the agent's (5 s).
        tun = self.start_konn_server("tun", extra=("--backend-dial-timeout=1s",))
        self.start_konn_agent(wait_server=tun)
        want_refused = self.connect_expect(tun, refused.addr)
        want_timeout = self.connect_expect(tun, hole.addr)
        self.assertEqual(want_refused, ht.resp_dial_error(
            "502 Bad Gateway", "dial tcp %s: connect: connection refused" % refused.addr))
        self.assertEqual(want_timeout, ht.RESP_504_DIAL_TIMEOUT)
        mt = self.metrics(tun)
        # Direct: no agent at all, the same bytes.
        direct = self.start_konn_server("dir", extra=("--backend-dial-timeout=1s", "--direct-cidrs=127.0.0.1/32"))
        self.assertEqual(self.connect_expect(direct, refused.addr), want_refused)
        self.assertEqual(self.connect_expect(direct, hole.addr), want_timeout)
        direct.wait_for(r"^Direct dial to '%s' failed: dial tcp %s: connect: connection refused$"
                        % (refused.addr, refused.addr), timeout=10, MESSAGE_ID=kt.MSG_DIAL_FAILED, KONN_ROUTE="direct")
        direct.wait_for(r"^Direct dial to '%s' did not complete within 1000 ms\.$" % hole.addr, timeout=10,
                        MESSAGE_ID=kt.MSG_DIAL_FAILED, KONN_ROUTE="direct")
        md = self.metrics(direct)
        for reason in ("error_response", "backend_dial_timeout"):
            with self.subTest(reason=reason):
                self.assertEqual(mt.value(S + "dial_failure_count", reason=reason), 1)
                self.assertEqual(md.value("konn_server_direct_dial_failure_count", reason=reason), 1)
                self.assertIsNone(md.get(S + "dial_failure_count", reason=reason))
        self.assertEqual(self.admin_json(direct, "tunnels"), [])

    def test_ipv6_cidr(self):
        if not kt.have_ipv6_loopback():
            self.skipTest("no IPv6 loopback")
        server = self.start_konn_server("srv1", extra=("--direct-cidrs=10.0.0.0/8,::1/128",))
        echo = self.target_on("::1")
        self.assertEqual(echo.addr, "[::1]:%d" % echo.port)
        c = self.tunnel_via(server, echo.addr)
        self.assert_echo(c, b"over IPv6\n")
        self.assertEqual(self.admin_json(server, "tunnels")[0]["route"], "direct")

    def test_invalid_cidrs_are_config_errors(self):
        for bad, msg in (("10.0.0.1/8", "--direct-cidrs: '10.0.0.1/8' has host bits set below the /8 prefix"),
                         ("fd00::/129", "--direct-cidrs: 'fd00::/129' has an invalid prefix length"),
                         ("example.com", "--direct-cidrs: 'example.com' is not a CIDR")):
            with self.subTest(value=bad):
                r = subprocess.run([kt.SERVER_BIN, "--config=" + self.empty_conf, "--check-config",
                                    "--uds-name=" + os.path.join(self.dir, "x.sock"), "--server-port=0",
                                    "--cluster-cert=" + kt.cert("server.crt"),
                                    "--cluster-key=" + kt.cert("server.key"),
                                    "--cluster-ca-cert=" + kt.cert("ca.crt"), "--direct-cidrs=" + bad],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
                self.assertEqual(r.returncode, 1)
                self.assertIn(msg, r.stderr.decode())


if __name__ == "__main__":
    ht.main()
