#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Backend selection (protocol.md §3.3, §6): --proxy-strategies default, destHost and defaultRoute, alone and in
several orders, with agents that carry different identifiers; draining agents used only as a last resort; the
oldest stream of an agent that has several. Which agent got a dial is read from the server's /tunnels JSON
("agent" field) while the tunnels are open."""

import collections
import os
import signal
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hatest as ht  # noqa: E402
from hatest import kt  # noqa: E402

# Agents and their identifiers (§3.1).
IDENTIFIERS = {
    "node-host": "host=localhost&cidr=10.0.0.0/8",
    "node-ip": "ipv4=127.0.0.2&ipv6=fd00::2",
    "node-route": "default-route=true",
    "node-plain": "",
}
DIALS = 40   # per random check: the chance that one of 4 agents is never drawn is 4 * 0.75^40 < 1e-4


class TestStrategies(ht.HaTestCase):

    def setUp(self):
        super().setUp()
        # Targets: localhost:P (matches node-host), 127.0.0.2:P (node-ip), 127.0.0.3:P (no identifier matches).
        self.echo_host = self.track(kt.EchoServer())
        self.echo_ip = self.track(kt.EchoServer(host="127.0.0.2"))
        self.echo_other = self.track(kt.EchoServer(host="127.0.0.3"))
        self.dest_host = "localhost:%d" % self.echo_host.port
        self.dest_ip = self.echo_ip.addr
        self.dest_other = self.echo_other.addr

    def setup_agents(self, strategies, agents=IDENTIFIERS):
        server = self.start_konn_server("srv1", strategies=strategies)
        for agent_id, ident in agents.items():
            self.start_konn_agent(agent_id, identifiers=ident, wait_server=server)
        return server

    def dial_agents(self, server, dest, n):
        """n tunnels to dest (each echoes once), then the agents the server lists for them (tunnels open before are
        not counted); all closed again."""
        before = {t["dial_id"] for t in self.admin_json(server, "tunnels")}
        clients = []
        for i in range(n):
            c = self.tunnel_via(server, dest)
            self.assert_echo(c, b"dial %d" % i)
            clients.append(c)
        agents = [t["agent"] for t in self.admin_json(server, "tunnels") if t["dial_id"] not in before]
        self.assertEqual(len(agents), n)
        for c in clients:
            c.close()
        self.wait_until(lambda: {t["dial_id"] for t in self.admin_json(server, "tunnels")} == before, 5,
                        "the tunnels closed")
        return collections.Counter(agents)

    def assert_no_agent(self, server, dest):
        before = self.metric(server, ht.M + "server_dial_failure_count", reason="no_agent")
        self.assertEqual(self.connect_expect(server, dest), kt.RESP_500_NO_AGENT)
        self.assertEqual(self.metric(server, ht.M + "server_dial_failure_count", reason="no_agent"), before + 1)

    def assert_ready_backends(self, server, expected):
        m = self.metrics(server)
        got = {dict(lb)["proxy_strategy"]: v for lb, v in m.series(ht.M + "server_ready_backends").items()}
        self.assertEqual(got, expected)

    # -- each strategy alone ---------------------------------------------------------------------------------

    def test_default_spreads_over_all_agents(self):
        """default: a random agent per dial, identifiers ignored: every agent gets some of 40 dials to localhost."""
        server = self.setup_agents("default")
        got = self.dial_agents(server, self.dest_host, DIALS)
        self.assertEqual(set(got), set(IDENTIFIERS), got)
        self.assert_ready_backends(server, {"default": 4.0})

    def test_desthost_alone(self):
        """destHost: the dial host is compared exactly with host/ipv4/ipv6 identifiers; no match → the 500
        no-agent response; a cidr identifier is not used."""
        server = self.setup_agents("destHost")
        self.assertEqual(self.dial_agents(server, self.dest_host, 6), {"node-host": 6})
        self.assertEqual(self.dial_agents(server, self.dest_ip, 6), {"node-ip": 6})
        self.assert_no_agent(server, self.dest_other)
        self.assert_no_agent(server, "10.1.2.3:80")      # inside node-host's cidr: still no match
        self.assert_no_agent(server, "127.0.0.1:%d" % self.echo_host.port)   # localhost's address ≠ "localhost"

    def test_desthost_ipv6_identifier(self):
        """destHost with an ipv6 identifier: the dial "[::1]:P" matches ipv6=::1 (brackets stripped)."""
        if not kt.have_ipv6_loopback():
            self.skipTest("no IPv6 loopback")
        echo6 = self.track(kt.EchoServer(host="::1"))
        server = self.setup_agents("destHost", {"node-v6": "ipv6=::1", "node-host": IDENTIFIERS["node-host"]})
        self.assertEqual(self.dial_agents(server, echo6.addr, 4), {"node-v6": 4})

    def test_defaultroute_alone(self):
        """defaultRoute: only the agent with default-route=true, whatever the destination."""
        server = self.setup_agents("defaultRoute")
        self.assertEqual(self.dial_agents(server, self.dest_host, 6), {"node-route": 6})
        self.assertEqual(self.dial_agents(server, self.dest_other, 6), {"node-route": 6})
        self.assert_ready_backends(server, {"defaultRoute": 1.0})

    def test_defaultroute_without_such_agent(self):
        """defaultRoute with no agent announcing default-route=true (default-route=false, =0, absent): 500."""
        server = self.setup_agents("defaultRoute", {"node-f": "default-route=false", "node-0": "default-route=0",
                                                    "node-plain": ""})
        self.assert_no_agent(server, self.dest_other)
        self.assert_ready_backends(server, {"defaultRoute": 0.0})

    # -- orders ----------------------------------------------------------------------------------------------

    def test_desthost_then_default(self):
        """"destHost,default": a matching identifier wins; without a match any agent (random) takes it."""
        server = self.setup_agents("destHost,default")
        self.assertEqual(self.dial_agents(server, self.dest_host, 6), {"node-host": 6})
        self.assertEqual(self.dial_agents(server, self.dest_ip, 6), {"node-ip": 6})
        got = self.dial_agents(server, self.dest_other, DIALS)
        self.assertEqual(set(got), set(IDENTIFIERS), got)
        # One ready_backends child per configured strategy. (destHost's value is not asserted: upstream's storage is
        # keyed by identifier value, konn counts agents; §9.2 does not settle it.)
        series = self.metrics(server).series(ht.M + "server_ready_backends")
        self.assertEqual(sorted(dict(lb)["proxy_strategy"] for lb in series), ["default", "destHost"])
        self.assertEqual(self.metrics(server).value(ht.M + "server_ready_backends", proxy_strategy="default"), 4.0)

    def test_desthost_then_defaultroute(self):
        """"destHost,defaultRoute": a matching identifier wins; without a match the default-route agent."""
        server = self.setup_agents("destHost,defaultRoute")
        self.assertEqual(self.dial_agents(server, self.dest_host, 6), {"node-host": 6})
        self.assertEqual(self.dial_agents(server, self.dest_other, 6), {"node-route": 6})

    def test_defaultroute_then_desthost(self):
        """"defaultRoute,destHost": the default-route agent is found first even where destHost would match; with it
        gone, destHost takes over and a non-matching dial gets the 500."""
        server = self.setup_agents("defaultRoute,destHost")
        self.assertEqual(self.dial_agents(server, self.dest_host, 6), {"node-route": 6})
        route = [d for d in self.daemons if getattr(d, "agent_id", None) == "node-route"][0]
        since = server.mark()
        route.kill9()
        server.wait_for(r"^Agent 'node-route' disconnected", since=since, MESSAGE_ID=kt.MSG_AGENT_DISCONNECTED)
        self.assertEqual(self.dial_agents(server, self.dest_host, 6), {"node-host": 6})
        self.assert_no_agent(server, self.dest_other)

    def test_default_then_desthost(self):
        """"default,destHost": default always finds an agent, so destHost never decides (localhost dials spread)."""
        server = self.setup_agents("default,destHost")
        got = self.dial_agents(server, self.dest_host, DIALS)
        self.assertEqual(set(got), set(IDENTIFIERS), got)

    # -- draining and several streams ------------------------------------------------------------------------

    def drain(self, server, agent):
        """SIGTERM the agent (--drain-timeout=60s, one tunnel open through it): it sends DRAIN and stays up."""
        since = server.mark()
        agent.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"^Agent '%s' is draining" % agent.agent_id, since=since, KONN_AGENT_ID=agent.agent_id)
        agent.wait_for(r"^Draining: waiting up to 60 s for 1 connection to finish\.$")
        drained = [a for a in self.admin_json(server, "agents") if a["id"] == agent.agent_id]
        self.assertEqual([a["draining"] for a in drained], [True])

    def test_draining_agent_is_last_resort_default(self):
        """default: after node-a sends DRAIN, all new dials go to node-b; once node-b is gone the server picks the
        draining node-a (last resort), which refuses ("agent is shutting down"); node-a's open tunnel works on."""
        server = self.start_konn_server("srv1")
        a = self.start_konn_agent("node-a", wait_server=server, extra=("--drain-timeout=60s",))
        keep = self.tunnel_via(server, self.dest_host)
        self.assert_echo(keep, b"kept open through node-a")
        self.assertEqual(self.tunnel_agents(server), ["node-a"])
        b = self.start_konn_agent("node-b", wait_server=server)
        self.drain(server, a)
        self.assertEqual(self.dial_agents(server, self.dest_host, 20), {"node-b": 20})
        self.assert_echo(keep, b"still open")

        since = server.mark()
        b.kill9()
        server.wait_for(r"^Agent 'node-b' disconnected", since=since, MESSAGE_ID=kt.MSG_AGENT_DISCONNECTED)
        self.assertEqual(self.connect_expect(server, self.dest_host),
                         ht.resp_dial_error("502 Bad Gateway", "agent is shutting down"))
        server.wait_for(r"^Dial to '%s' through agent 'node-a' failed: agent is shutting down" % self.dest_host,
                        since=since, KONN_AGENT_ID="node-a")
        self.assert_echo(keep, b"and still open")
        # Readiness counts a draining agent (upstream: any backend).
        self.assertEqual(self.get(server.health_port, "/readyz").body, b"ok")
        # Its last connection closed, the draining agent exits by itself.
        keep.close()
        self.assertEqual(a.wait_exit(5), 0)

    def test_draining_agent_is_last_resort_desthost(self):
        """destHost with two agents announcing ipv4=127.0.0.2: the oldest takes every dial; draining it moves them
        to the other; with the other gone the draining one is picked again (last resort)."""
        server = self.start_konn_server("srv1", strategies="destHost")
        old = self.start_konn_agent("node-old", identifiers="ipv4=127.0.0.2", wait_server=server,
                                    extra=("--drain-timeout=60s",))
        new = self.start_konn_agent("node-new", identifiers="ipv4=127.0.0.2", wait_server=server)
        self.assertEqual(self.dial_agents(server, self.dest_ip, 8), {"node-old": 8})
        keep = self.tunnel_via(server, self.dest_ip)
        self.drain(server, old)
        self.assertEqual(self.dial_agents(server, self.dest_ip, 8), {"node-new": 8})
        since = server.mark()
        new.kill9()
        server.wait_for(r"^Agent 'node-new' disconnected", since=since, MESSAGE_ID=kt.MSG_AGENT_DISCONNECTED)
        self.assertEqual(self.connect_expect(server, self.dest_ip),
                         ht.resp_dial_error("502 Bad Gateway", "agent is shutting down"))
        server.wait_for(r"^Dial to '%s' through agent 'node-old' failed" % self.dest_ip, since=since)
        self.assert_echo(keep, b"kept")
        keep.close()
        self.assertEqual(old.wait_exit(5), 0)

    def test_oldest_stream_of_one_agent(self):
        """Two agent processes with the same agent ID on one server: the older stream takes every dial (the newer
        one's endpoint count stays 0); once the older is gone, the newer one takes over."""
        server = self.start_konn_server("srv1")
        first = self.start_konn_agent("twin", name="agent-twin-1", wait_server=server)
        second = self.start_konn_agent("twin", name="agent-twin-2", wait_server=server)
        self.assertEqual(len(self.admin_json(server, "agents")), 2)
        # default's random choice is over agents, not streams: the newer stream is never drawn.
        clients = [self.tunnel_via(server, self.dest_host) for _ in range(12)]
        for c in clients:
            self.assert_echo(c, b"twin")
        self.assertEqual(self.metric(first, ht.M + "agent_open_endpoint_connections"), 12.0)
        self.assertEqual(self.metric(second, ht.M + "agent_open_endpoint_connections"), 0.0)
        self.assertEqual(self.metrics(server).value(ht.M + "server_ready_backend_connections"), 1.0)
        for c in clients:
            c.close()
        since = server.mark()
        first.kill9()
        server.wait_for(r"^Agent 'twin' disconnected", since=since, MESSAGE_ID=kt.MSG_AGENT_DISCONNECTED)
        c = self.tunnel_via(server, self.dest_host)
        self.assert_echo(c, b"second twin")
        self.assertEqual(self.metric(second, ht.M + "agent_open_endpoint_connections"), 1.0)


if __name__ == "__main__":
    ht.main()
