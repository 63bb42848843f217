#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Health and readiness (protocol.md §9.1): exact status codes and bodies of /healthz, /readyz, /ready (server:
500 "no connection to any proxy agent" → 200 "ok" when the first agent connects, and back; only the FIRST
strategy counts), agent /readyz 503 → 200 with and without ?verbose, the agent admin port's /metrics redirect, and
the server admin port's /metrics, /agents and /tunnels."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hatest as ht  # noqa: E402
from hatest import kt  # noqa: E402


class TestReadiness(ht.HaTestCase):

    def assertBody(self, port, path, status, body):
        r = self.get(port, path)
        self.assertEqual((r.status, r.body), (status, body), "GET %s on port %d: %r" % (path, port, r))
        return r

    def assert_server_ready(self, server, ready):
        for path in ("/readyz", "/ready"):
            if ready:
                self.assertBody(server.health_port, path, 200, b"ok")
            else:
                self.assertBody(server.health_port, path, 500, ht.SERVER_NOT_READY)
        self.assertBody(server.health_port, "/healthz", 200, b"ok")

    def test_server_ready_when_first_agent_connects(self):
        """Server: /readyz and /ready 500 with the exact body until an agent connects, then 200 "ok"; 500 again
        when the last agent is gone; /healthz is always 200 "ok"; ready_backend_connections follows."""
        server = self.start_konn_server("srv1")
        self.assert_server_ready(server, False)
        r = self.get(server.health_port, "/readyz")
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r)
        m = self.metrics(server)
        self.assertEqual(m.get(ht.M + "server_ready_backend_connections"), 0.0, "must exist at 0 before any agent")
        self.assertEqual(m.get(ht.M + "server_ready_backends", proxy_strategy="default"), 0.0)

        a1 = self.start_konn_agent("node1", wait_server=server)
        self.assert_server_ready(server, True)
        a2 = self.start_konn_agent("node2", wait_server=server)
        self.assertEqual(self.metric(server, ht.M + "server_ready_backend_connections"), 2.0)

        since = server.mark()
        a1.kill9()
        server.wait_for(r"^Agent 'node1' disconnected", since=since, MESSAGE_ID=kt.MSG_AGENT_DISCONNECTED)
        self.assert_server_ready(server, True)
        a2.kill9()
        server.wait_for(r"^Agent 'node2' disconnected", since=since, MESSAGE_ID=kt.MSG_AGENT_DISCONNECTED)
        self.assert_server_ready(server, False)
        self.assertEqual(self.metric(server, ht.M + "server_ready_backend_connections"), 0.0)

    def test_server_ready_uses_first_strategy_only(self):
        """"destHost,default": an agent without host/ipv4/ipv6 identifiers can take dials (default) but the server
        stays not ready; an agent with ipv4= makes it ready. "defaultRoute,default": only default-route=true."""
        server = self.start_konn_server("srv1", strategies="destHost,default")
        self.start_konn_agent("plain", wait_server=server)
        self.assert_server_ready(server, False)
        echo = self.track(kt.EchoServer())
        self.assert_echo(self.tunnel_via(server, echo.addr), b"routable though not ready")
        self.start_konn_agent("ip", identifiers="ipv4=10.0.0.7", wait_server=server)
        self.assert_server_ready(server, True)

        server2 = self.start_konn_server("srv2", strategies="defaultRoute,default")
        self.start_konn_agent("plain2", wait_server=server2, identifiers="host=x&default-route=false")
        self.assert_server_ready(server2, False)
        self.start_konn_agent("route2", wait_server=server2, identifiers="default-route=true")
        self.assert_server_ready(server2, True)

    def test_server_unknown_path_and_admin(self):
        """Unknown health path → 404; the admin port (127.0.0.1) serves /metrics and the JSON lists."""
        server = self.start_konn_server("srv1")
        self.assertEqual(self.get(server.health_port, "/nope").status, 404)
        self.start_konn_agent("node1", identifiers="host=node1", wait_server=server)
        r = self.get(server.admin_port, "/metrics")
        self.assertEqual(r.status, 200)
        self.assertIn(ht.M + "server_ready_backend_connections 1\n", r.body.decode())
        agents = self.admin_json(server, "agents")
        self.assertEqual([(a["id"], a["identifiers"], a["draining"]) for a in agents], [("node1", "host=node1", False)])
        self.assertEqual(self.admin_json(server, "tunnels"), [])

    def test_agent_ready_when_server_connected(self):
        """Agent: /readyz (and /ready) 503 with the exact check lines while no server is connected (also with
        ?verbose); 200 "ok" / the verbose "passed" lines once connected; 503 again after the server is killed."""
        port = kt.free_port()
        agent = self.start_konn_agent("node1", port=port, extra=("--sync-interval=1s", "--sync-interval-cap=1s"))
        agent.wait_for(r"^Connection to server 127\.0\.0\.1:%d failed" % port, timeout=5)
        for path in ("/readyz", "/ready", "/readyz?verbose", "/readyz?verbose=1"):
            self.assertBody(agent.health_port, path, 503, ht.AGENT_NOT_READY)
        self.assertBody(agent.health_port, "/healthz", 200, b"ok")
        self.assertEqual(self.metric(agent, ht.AGENT_OPEN), 0.0)

        server = self.start_konn_server("srv1", agent_port=port)
        self.wait_until(lambda: self.get(agent.health_port, "/readyz").status == 200, 5, "agent ready")
        self.assertBody(agent.health_port, "/readyz", 200, b"ok")
        self.assertBody(agent.health_port, "/ready", 200, b"ok")
        self.assertBody(agent.health_port, "/readyz?verbose", 200, ht.AGENT_READY_VERBOSE)
        self.assertBody(agent.health_port, "/healthz", 200, b"ok")

        server.kill9()
        self.wait_until(lambda: self.get(agent.health_port, "/readyz").status == 503, 5, "agent not ready")
        self.assertBody(agent.health_port, "/readyz", 503, ht.AGENT_NOT_READY)

    def test_agent_admin_metrics_redirect(self):
        """Agent admin port: /metrics → 301 to the health port on the host the client used; other paths 404; the
        health port's /metrics is the Prometheus text."""
        agent = self.start_konn_agent("node1", port=kt.free_port())
        r = self.get(agent.admin_port, "/metrics")
        self.assertEqual(r.status, 301, r)
        self.assertEqual(r.headers.get("location"), "http://127.0.0.1:%d/metrics" % agent.health_port)
        r = self.get(agent.admin_port, "/metrics", host="localhost")
        self.assertEqual(r.headers.get("location"), "http://localhost:%d/metrics" % agent.health_port)
        self.assertEqual(self.get(agent.admin_port, "/healthz").status, 404)
        r = self.get(agent.health_port, "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain; version=0.0.4"), r)


if __name__ == "__main__":
    ht.main()
