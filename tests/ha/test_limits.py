#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Resource exhaustion and konn's limits (issue 13, README "Limits"): a server out of file descriptors, and
--max-frontend-connections, --max-pending-dials, --max-tunnels-per-agent and --max-agents. In each case the
tunnels already open keep working, the new ones are refused with the documented bytes or status, one rate-limited
warning says so (konn_server_limit_refusals_total{limit} counts every refusal), the server does not spin, and
service resumes by itself once something is freed."""

import os
import socket
import time

import hatest
from hatest import kt, T

LIMIT = "konn_server_limit_refusals_total"


class LimitsTest(hatest.HaTestCase):

    def setUp(self):
        super().setUp()
        self.echo = self.track(kt.EchoServer())

    def pair(self, server_extra=(), prefix=(), agent_extra=()):
        s = self.start_konn_server("srv1", extra=server_extra, prefix=prefix)
        a = self.start_konn_agent("node1", wait_server=s, extra=agent_extra)
        return s, a

    def connect_many(self, server, n, dest):
        """n CONNECTs to dest, one after the other; each client is kept open. Returns (ok clients, refused
        response bodies)."""
        ok, refused = [], []
        for i in range(n):
            c = self.client_of(server)
            try:
                c.send_connect(dest)
            except BrokenPipeError:
                pass  # refused at once: the answer is waiting in the socket
            head = c.read_head()
            if head == kt.RESP_200:
                ok.append(c)
            else:
                refused.append(head + c.read_to_eof())
        return ok, refused

    def warnings(self, d, pattern, since=0):
        return d.find(pattern, since=since, prio_max=4)

    def assert_idle_cpu(self, d, seconds=2.0, limit=0.25):
        before = kt.cpu_seconds(d.pid)
        time.sleep(seconds)
        used = kt.cpu_seconds(d.pid) - before
        self.assertLess(used, limit * T(1), "%s used %.2f s of CPU in %.1f s" % (d.name, used, seconds))

    def test_out_of_descriptors(self):
        """The issue's reproduction: konn-server under a small open-files limit with more CONNECTs than fit. The
        listener neither spins nor floods: each connection beyond the limit is accepted on the reserve descriptor
        and answered with the exact 503 "out of file descriptors", one warning (not one per connection), the
        tunnels already open keep echoing, and after they close the server accepts again by itself."""
        s, a = self.pair(server_extra=["--max-frontend-connections=100000"])
        witness = self.tunnel_via(s, self.echo.addr)
        self.assert_echo(witness, b"before")
        # 64 descriptors in all: about 50 are left for frontend connections.
        kt.subprocess.run(["prlimit", "--pid", str(s.pid), "--nofile=64:64"], check=True)
        since = s.mark()
        ok, refused = self.connect_many(s, 120, self.echo.addr)
        self.assertGreaterEqual(len(ok), 20)
        self.assertGreaterEqual(len(refused), 40)
        self.assertEqual(set(refused), {kt.RESP_503_NO_FDS})
        self.assertEqual(len(ok) + len(refused), 120)
        for i, c in enumerate(ok[::7]):
            self.assert_echo(c, b"held %d" % i)
        self.assert_echo(witness, b"still working")
        lines = self.warnings(s, r"^Out of file descriptors \(Too many open files\): refusing new frontend "
                                 r"connections until some are closed", since)
        self.assertIn(len(lines), (1, 2), lines)  # one per 10 s window
        self.assertEqual(s.find(r"^Failed to accept", since=since), [])
        self.assert_idle_cpu(s)
        # Descriptors come back: the server accepts again without any help.
        for c in ok:
            c.close()
        self.wait_until(lambda: kt.open_fds(s.pid) < 40, 10, "the server to close the tunnels")
        since = s.mark()
        c = self.tunnel_via(s, self.echo.addr)
        self.assert_echo(c, b"after")
        s.wait_for(r"^Accepting frontend connections again \(\d+ refused while out of descriptors\)\.$",
                   since=since)
        self.assertEqual(self.metric(s, LIMIT, limit="file_descriptors"), len(refused))

    def test_prlimit_128_with_300_connects(self):
        """Started as an operator would (prlimit --nofile=128) with 300 CONNECTs held: the automatic
        --max-frontend-connections (128 less a reserve of 64) lets exactly 64 in, the other 236 get the exact 503
        "too many frontend connections", counted in the metric, in at most two warnings, and the server idles."""
        s, a = self.pair(prefix=["prlimit", "--nofile=128:128"])
        since = s.mark()
        ok, refused = self.connect_many(s, 300, self.echo.addr)
        self.assertEqual(len(ok), 64)
        self.assertEqual(set(refused), {kt.RESP_503_FRONTEND})
        for i, c in enumerate(ok[::9]):
            self.assert_echo(c, b"held %d" % i)
        lines = self.warnings(s, r"^Refusing frontend connection from unix:.*: limit 'frontend_connections' reached "
                                 r"\(--max-frontend-connections\)\.", since)
        self.assertIn(len(lines), (1, 2), lines)
        self.assertEqual(lines[0].fields.get("KONN_LIMIT"), "frontend_connections")
        self.assertEqual(self.metric(s, LIMIT, limit="frontend_connections"), 236)
        self.assertEqual(self.metric(s, LIMIT, limit="file_descriptors"), 0)
        self.assert_idle_cpu(s)
        ok[0].close()
        self.wait_until(lambda: len(self.admin_json(s, "tunnels")) == 63, 10, "one tunnel to close")
        self.assert_echo(self.tunnel_via(s, self.echo.addr), b"room again")

    def test_max_pending_dials(self):
        hole = self.track(kt.Blackhole())
        if not hole.works:
            self.skipTest("cannot make a connect() hang on this machine's loopback")
        s, a = self.pair(server_extra=["--max-pending-dials=2", "--backend-dial-timeout=60s"],
                         agent_extra=["--dial-timeout=60s"])
        held = []
        for _ in range(2):
            c = self.client_of(s)
            c.send_connect(hole.addr)
            held.append(c)
        self.wait_until(lambda: kt.syn_sent_count(hole.port) == 2, 10, "two dials in progress")
        self.assertEqual(self.connect_expect(s, self.echo.addr), kt.RESP_503_DIALS)
        self.assertEqual(self.metric(s, LIMIT, limit="pending_dials"), 1)
        s.wait_for(r"^Refusing a dial from unix:.*: limit 'pending_dials' reached \(--max-pending-dials\)\.$",
                   prio_max=4, KONN_LIMIT="pending_dials")
        held[0].close()
        self.wait_until(lambda: kt.syn_sent_count(hole.port) == 1, 10, "the abandoned dial to be cancelled")
        self.assert_echo(self.tunnel_via(s, self.echo.addr), b"a dial fits again")

    def test_max_tunnels_per_agent(self):
        s, a = self.pair(server_extra=["--max-tunnels-per-agent=2"])
        t1 = self.tunnel_via(s, self.echo.addr)
        t2 = self.tunnel_via(s, self.echo.addr)
        self.assertEqual(self.connect_expect(s, self.echo.addr), kt.RESP_503_AGENT)
        self.assertEqual(self.metric(s, LIMIT, limit="tunnels_per_agent"), 1)
        self.assert_echo(t1, b"one")
        self.assert_echo(t2, b"two")
        t1.close()
        self.wait_until(lambda: len(self.admin_json(s, "tunnels")) == 1, 10, "one tunnel to close")
        self.assert_echo(self.tunnel_via(s, self.echo.addr), b"three")

    def test_max_agents(self):
        s, a = self.pair(server_extra=["--max-agents=1"])
        b = self.start_konn_agent("node2", hosts="127.0.0.1", port=s.agent_port,
                                  extra=["--sync-interval=200ms", "--sync-interval-cap=500ms"])
        b.wait_for(r"^Connect stream to 127\.0\.0\.1:%d failed: too many agents \(ResourceExhausted\)\.$"
                   % s.agent_port)
        s.wait_for(r"^Refusing the stream of agent from node2: limit 'agents' reached \(--max-agents\)\.$",
                   prio_max=4)
        self.assertEqual(s.find(r"^Agent 'node2' connected"), [])
        self.assertGreaterEqual(self.metric(s, LIMIT, limit="agents"), 1)
        self.assert_echo(self.tunnel_via(s, self.echo.addr), b"node1 serves")
        # The agent that is in may reconnect (its new stream replaces the old one).
        self.assertEqual([t["agent"] for t in self.admin_json(s, "tunnels")], ["node1"])

    def test_agent_out_of_descriptors(self):
        """The agent out of descriptors: a dial fails at socket() and the client gets the exact 503 (§7.1) with
        Go's text ("socket: too many open files"), the open tunnels keep echoing, and dials work again once one
        closes."""
        s, a = self.pair()
        held = [self.tunnel_via(s, self.echo.addr) for _ in range(3)]
        limit = kt.open_fds(a.pid) + 1   # one more descriptor, then none
        kt.subprocess.run(["prlimit", "--pid", str(a.pid), "--nofile=%d:%d" % (limit, limit)], check=True)
        held.append(self.tunnel_via(s, self.echo.addr))
        self.assertEqual(self.connect_expect(s, self.echo.addr), hatest.resp_dial_error(
            "503 Service Unavailable", "dial tcp %s: socket: too many open files" % self.echo.addr))
        for i, c in enumerate(held):
            self.assert_echo(c, b"held %d" % i)
        held.pop().close()
        self.wait_until(lambda: kt.open_fds(a.pid) < limit, 10, "the agent to close the endpoint")
        self.assert_echo(self.tunnel_via(s, self.echo.addr), b"again")

    def test_reverse_listener_out_of_descriptors(self):
        """The agent's reverse listener (node -> control plane) out of descriptors: the connection beyond the limit
        is accepted on the reserve descriptor and closed at once, one warning, no spinning, the open connection
        keeps echoing, and the listener accepts again once it closes."""
        lst = "127.0.0.1:%d" % kt.free_port()
        s, a = self.start_reverse_pair({"api": self.echo.addr}, {"api": lst})
        first = self.reverse_client(lst)
        self.assert_echo(first, b"first")
        since = a.mark()
        limit = kt.open_fds(a.pid)
        kt.subprocess.run(["prlimit", "--pid", str(a.pid), "--nofile=%d:%d" % (limit, limit)], check=True)
        for _ in range(20):
            c = self.reverse_client(lst)
            self.assertEqual(c.read_to_eof(timeout=5), b"")
        lines = self.warnings(a, r"^Out of file descriptors \(Too many open files\): refusing new reverse listener "
                                 r"'api' connections until some are closed", since)
        self.assertIn(len(lines), (1, 2), lines)
        self.assert_echo(first, b"still echoing")
        self.assert_idle_cpu(a)
        first.close()
        self.wait_until(lambda: kt.open_fds(a.pid) < limit, 10, "the agent to close the connection")
        again = self.reverse_client(lst)
        self.assert_echo(again, b"again")
        a.wait_for(r"^Accepting reverse listener 'api' connections again \(\d+ refused while out of descriptors\)",
                   since=since)

    def test_metric_families(self):
        """Every limit label exists from the start, at 0."""
        s = self.start_konn_server("srv1")
        m = self.metrics(s)
        self.assertEqual(m.series(LIMIT), {(("limit", lim),): 0.0 for lim in (
            "agents", "file_descriptors", "frontend_connections", "pending_dials", "tunnels_per_agent")})
        self.assertEqual(m.lines_of(LIMIT), [
            "# HELP %s Connections, streams and dials refused by a konn limit, by limit." % LIMIT,
            "# TYPE %s counter" % LIMIT])


if __name__ == "__main__":
    hatest.main()
