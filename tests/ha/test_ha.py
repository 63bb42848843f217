#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""High availability (issue 6, protocol.md §3.4): three konn-servers with --server-count=3 and distinct IDs, reached
by one agent either through a round-robin TCP load balancer (the agent keeps reconnecting until it has 3 distinct
server IDs, duplicates closed) or directly through a comma list of three addresses (127.0.0.1..3, each server bound
to its own). A server is SIGKILLed and replaced (new ID, same address): the agent is back at 3 connections within
2 sync intervals (--sync-interval=1s), and tunnels through the surviving servers keep working meanwhile."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hatest as ht  # noqa: E402
from hatest import T, kt  # noqa: E402

SYNC = 1.0                      # --sync-interval
# 2 sync intervals, each up to 10 % longer (jitter, §3.4), plus the TLS + HTTP/2 + Connect setup on loopback.
REPLACE_BOUND = 2 * SYNC * 1.1 + 0.3


class Pinger(kt.Bg):
    """Keeps echoing through the given tunnels and opens a new tunnel through each given server every round, until
    stop(); records every failure."""

    def __init__(self, tc, tunnels, servers, dest):
        self.tc, self.tunnels, self.servers, self.dest = tc, tunnels, servers, dest
        self.stopping = False
        self.rounds = 0
        self.failures = []
        super().__init__(self._loop, name="pinger")

    def _loop(self):
        while not self.stopping:
            for i, c in enumerate(self.tunnels):
                msg = b"round %d tunnel %d" % (self.rounds, i)
                try:
                    c.send(msg)
                    got = c.recv_exact(len(msg))
                    if got != msg:
                        self.failures.append("tunnel %d: got %r" % (i, got))
                except (OSError, AssertionError) as e:
                    self.failures.append("tunnel %d: %r" % (i, e))
            for s in self.servers:
                try:
                    c = kt.Client.uds(s.sock_path, 5)
                    try:
                        c.send_connect(self.dest)
                        head = c.read_head()
                        if head != kt.RESP_200:
                            self.failures.append("new tunnel via %s: %r" % (s.server_id, head))
                        else:
                            c.send(b"x")
                            if c.recv_exact(1) != b"x":
                                self.failures.append("new tunnel via %s: bad echo" % s.server_id)
                    finally:
                        c.close()
                except (OSError, AssertionError) as e:
                    self.failures.append("new tunnel via %s: %r" % (s.server_id, e))
            self.rounds += 1
            time.sleep(0.05)

    def stop(self):
        self.stopping = True
        self.join_result(15)


class TestHA(ht.HaTestCase):

    def start_three(self, multi_address):
        """Three servers srv1..3 with --server-count=3: on 127.0.0.1..3 with one agent port (multi_address), or on
        127.0.0.1 with three ports behind a load balancer. Returns (servers, lb or None, agent hosts, agent port)."""
        if multi_address:
            port = kt.free_port()
            servers = [self.start_konn_server("srv%d" % (i + 1), bind=ht.LOOPBACKS[i], agent_port=port, count=3,
                                              ha_cert=True) for i in range(3)]
            return servers, None, ",".join(ht.LOOPBACKS), port
        servers = [self.start_konn_server("srv%d" % (i + 1), count=3) for i in range(3)]
        lb = self.track(ht.LoadBalancer([("127.0.0.1", s.agent_port) for s in servers]))
        return servers, lb, "127.0.0.1", lb.port

    def assert_one_agent_each(self, servers, agent_id="node1"):
        for s in servers:
            agents = self.admin_json(s, "agents")
            self.assertEqual([a["id"] for a in agents], [agent_id], "%s /agents: %r" % (s.server_id, agents))
            m = self.metrics(s)
            self.assertEqual(m.value(ht.M + "server_grpc_connections", service_method="Connect"), 1.0, s.server_id)
            self.assertEqual(m.value(ht.M + "server_ready_backends", proxy_strategy="default"), 1.0, s.server_id)
            self.assertEqual(self.get(s.health_port, "/readyz").body, b"ok")

    def reach_three(self, multi_address):
        servers, lb, hosts, port = self.start_three(multi_address)
        t0 = time.monotonic()
        agent = self.start_konn_agent("node1", hosts=hosts, port=port, extra=("--sync-interval=1s",))
        at = self.wait_metric(agent, ht.AGENT_OPEN, 3.0, timeout=15)
        sys.stderr.write("[3 servers reached %.2f s after the agent started] " % (at - t0))
        m = self.metrics(agent)
        self.assertEqual(m.value(ht.AGENT_KNOWN), 3.0)
        self.assertEqual(self.get(agent.health_port, "/readyz").body, b"ok")
        for s in servers:
            agent.wait_for(r"^Connected to server '%s'" % s.server_id, timeout=1, MESSAGE_ID=kt.MSG_SERVER_CONNECTED,
                           KONN_SERVER_ID=s.server_id)
        # The count was reached: no further attempts, and every duplicate was closed again (one stream per server).
        time.sleep(2 * SYNC * 1.1)
        self.assertEqual(self.metric(agent, ht.AGENT_OPEN), 3.0)
        self.assert_one_agent_each(servers)
        echo = self.track(kt.EchoServer())
        for s in servers:
            c = self.tunnel_via(s, echo.addr)
            self.assert_echo(c, b"via " + s.server_id.encode())
        return servers, lb, hosts, port, agent, echo

    def replace_one(self, multi_address):
        servers, lb, hosts, port, agent, echo = self.reach_three(multi_address)
        s1, s2, s3 = servers
        # Tunnels through the survivors, used continuously while srv2 is replaced.
        tunnels = [self.tunnel_via(s, echo.addr) for s in (s1, s3)]
        pinger = Pinger(self, tunnels, (s1, s3), echo.addr)
        pinger.start()
        self.wait_until(lambda: pinger.rounds >= 2, 5, "the pinger running")

        since = agent.mark()
        t_kill = time.monotonic()
        s2.kill9()
        self.wait_metric(agent, ht.AGENT_OPEN, 2.0, timeout=2)
        agent.wait_for(r"^Disconnected from server 'srv2'", since=since, timeout=2, KONN_SERVER_ID="srv2")
        self.assertEqual(self.get(agent.health_port, "/readyz").body, b"ok")
        s2b = self.start_konn_server("srv2b", bind=s2.bind, agent_port=s2.agent_port, count=3,
                                     ha_cert=multi_address)
        t_new = time.monotonic()
        at = self.wait_metric(agent, ht.AGENT_OPEN, 3.0, timeout=15)
        rounds = pinger.rounds
        self.wait_until(lambda: pinger.rounds >= rounds + 2, 5, "two more pinger rounds")
        pinger.stop()
        sys.stderr.write("[%s: back to 3 servers %.2f s after the replacement started, %.2f s after the SIGKILL; "
                         "%d pinger rounds] " % ("multi-address" if multi_address else "load balancer",
                                                 at - t_new, at - t_kill, pinger.rounds))
        self.assertEqual(pinger.failures, [])
        agent.wait_for(r"^Connected to server 'srv2b'", since=since, timeout=1, KONN_SERVER_ID="srv2b")
        self.assertLessEqual(at - t_new, T(REPLACE_BOUND),
                             "3 connections again %.2f s after the replacement started (> 2 sync intervals)"
                             % (at - t_new))
        self.assert_one_agent_each((s1, s3, s2b))
        c = self.tunnel_via(s2b, echo.addr)
        self.assert_echo(c, b"via the replacement")
        return at - t_new

    def test_lb_agent_reaches_three_servers(self):
        """One load-balancer address: the agent reconnects until it has 3 distinct server IDs (duplicates
        closed, one Connect stream per server), open_server_connections == 3, known_server_count == 3."""
        servers, lb, *_ = self.reach_three(multi_address=False)
        self.assertEqual(sorted(set(lb.picks)), [0, 1, 2])

    def test_multi_address_agent_reaches_three_servers(self):
        """A comma list of 127.0.0.1..3: the agent connects to each address directly, one connection per server
        and no duplicate at all."""
        servers, lb, hosts, port, agent, echo = self.reach_three(multi_address=True)
        for s in servers:
            self.assertEqual(len(s.find(r"^Agent 'node1' connected", MESSAGE_ID=kt.MSG_AGENT_CONNECTED)), 1,
                             s.server_id)
        self.assertEqual(agent.find(r"^Already connected to server"), [])
        self.assertEqual(agent.find(r"^Connection to server .* failed"), [])

    def test_lb_server_replaced(self):
        """Behind the load balancer: SIGKILL srv2, start srv2b on the same port: 3 connections again within 2 sync
        intervals of srv2b's start; tunnels through srv1 and srv3 (old and new) unaffected."""
        self.replace_one(multi_address=False)

    def test_multi_address_server_replaced(self):
        """Multi-address agent: SIGKILL srv2 (127.0.0.2), start srv2b on 127.0.0.2: 3 connections again within 2
        sync intervals of srv2b's start; tunnels through srv1 and srv3 unaffected."""
        self.replace_one(multi_address=True)


if __name__ == "__main__":
    ht.main()
