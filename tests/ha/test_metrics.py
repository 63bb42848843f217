#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Prometheus metrics with upstream names (protocol.md §9.2, §9.3, §9.5): exact counter and gauge values on the
server's and the agent's /metrics after a known sequence — K dials with no agent, N successful dials with one
round trip of data each, M refused dials, one dial the agent times out (--dial-timeout=5s against a blackholed
target), one CONNECT client that hangs up while its dial is pending — and the reasons backend_close and
backend_dial_timeout; HELP/TYPE lines of the two §9.5 agent families byte-exact; histogram buckets; process_*.

Upstream counts every packet a peer sends or receives on its Connect stream (server: backend Send/Recv, agent:
Send/Recv), DATA included; the expected packet counts below follow that."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hatest as ht  # noqa: E402
from hatest import kt  # noqa: E402

K, N, M = 2, 3, 2
S = ht.M + "server_"
A = ht.M + "agent_"

HELP_TYPE_AGENT = [
    "# HELP konnectivity_network_proxy_agent_endpoint_dial_failure_total Number of failures dialing the remote "
    "endpoint, by reason (example: timeout).",
    "# TYPE konnectivity_network_proxy_agent_endpoint_dial_failure_total counter",
    "# HELP konnectivity_network_proxy_agent_open_endpoint_connections Current number of open endpoint connections.",
    "# TYPE konnectivity_network_proxy_agent_open_endpoint_connections gauge",
]

SERVER_DIAL_BUCKETS = ["1e-06", "1e-05", "0.0001", "0.005", "0.025", "0.1", "0.5", "2.5", "12.5", "+Inf"]
AGENT_DIAL_BUCKETS = ["0.005", "0.025", "0.1", "0.5", "2.5", "10", "30", "+Inf"]
CONN_BUCKETS = ["1", "5", "15", "30", "60", "300", "900", "1800", "3600", "14400", "43200", "86400", "+Inf"]


def buckets(m, name):
    return [dict(lb)["le"] for (n, lb) in m.samples if n == name + "_bucket"]


class TestMetrics(ht.HaTestCase):

    def check(self, m, name, expected, **labels):
        with self.subTest(metric=name, labels=labels):
            self.assertEqual(m.value(name, **labels), float(expected), "%s%r" % (name, labels))

    def run_sequence(self, tunnel_streams):
        flag = "--tunnel-streams=%s" % ("true" if tunnel_streams else "false")
        server = self.start_konn_server("srv1", extra=(flag,))
        echo = self.track(kt.EchoServer())
        refused = self.track(kt.RefusedPort())
        hole = self.track(kt.Blackhole())
        if not hole.works:
            self.skipTest("connect() to a full accept queue completes here: no blackhole")

        for _ in range(K):
            self.assertEqual(self.connect_expect(server, echo.addr), kt.RESP_500_NO_AGENT)
        agent = self.start_konn_agent("node1", wait_server=server, extra=(flag, "--dial-timeout=5s"))

        for i in range(N):
            c = self.tunnel_via(server, echo.addr)
            self.assert_echo(c, b"round trip %d" % i)
            c.close()
            self.wait_until(lambda: self.admin_json(server, "tunnels") == [], 5, "tunnel %d gone" % i)
        self.wait_metric(agent, A + "open_endpoint_connections", 0.0)
        for _ in range(M):
            self.assertEqual(self.connect_expect(server, refused.addr), ht.resp_dial_error(
                "502 Bad Gateway", "dial tcp %s: connect: connection refused" % refused.addr))

        # Two dials into the blackhole: one the client abandons, one the agent times out.
        timed = self.client_of(server, timeout=15)
        t0 = time.monotonic()   # before the request: the agent's 5 s dial timer cannot start earlier
        timed.send_connect(hole.addr)
        self.wait_until(lambda: kt.syn_sent_count(hole.port) == 1, 5, "the agent's first connect() pending")
        quitter = self.client_of(server)
        quitter.send_connect(hole.addr)
        self.wait_until(lambda: kt.syn_sent_count(hole.port) == 2, 5, "the agent's second connect() pending")
        self.wait_metric(server, S + "pending_backend_dials", 2.0)
        quitter.close()
        self.wait_metric(server, S + "dial_failure_count", 1.0, reason="frontend_close")
        self.wait_metric(server, S + "pending_backend_dials", 1.0)
        # The agent abandons the dial on DIAL_CLS: its connect() goes away long before the 5 s dial timeout.
        self.wait_until(lambda: kt.syn_sent_count(hole.port) == 1, 2, "the abandoned connect() closed")
        self.assertEqual(timed.read_to_eof(timeout=10), ht.resp_dial_error(
            "504 Gateway Timeout", "dial tcp %s: i/o timeout" % hole.addr))
        took = time.monotonic() - t0
        self.assertGreater(took, 4.0)
        self.wait_metric(server, S + "pending_backend_dials", 0.0)
        time.sleep(0.2)   # nothing more may arrive: counters below are final

        sm, am = self.metrics(server), self.metrics(agent)
        # Server: dial failures by reason (absent children count as 0, as with Go's CounterVec).
        for reason, n in (("no_agent", K), ("error_response", M + 1), ("frontend_close", 1), ("backend_close", 0),
                          ("backend_dial_timeout", 0), ("unrecognized_response", 0), ("send_rsp", 0)):
            self.check(sm, S + "dial_failure_count", n, reason=reason)
        # Server: packets on the agent stream.
        for seg, typ, n in (("to_agent", "DIAL_REQ", N + M + 2), ("from_agent", "DIAL_RSP", N + M + 1),
                            ("to_agent", "DIAL_CLS", 1), ("from_agent", "DATA", N), ("to_agent", "CLOSE_REQ", N),
                            ("from_agent", "CLOSE_RSP", N),
                            # BUG: DATA sent to the agent by the relay is never counted (server to_agent DATA = 0)
                            ("to_agent", "DATA", N)):
            self.check(sm, S + "stream_packets_total", n, segment=seg, packet_type=typ)
        self.check(sm, S + "stream_packets_total", 0, segment="from_client", packet_type="DIAL_REQ")
        # Server: gauges and histograms.
        self.check(sm, S + "established_connections", 0)
        self.check(sm, S + "pending_backend_dials", 0)
        self.check(sm, S + "http_connections", 0)
        self.check(sm, S + "grpc_connections", 1, service_method="Connect")
        self.check(sm, S + "grpc_connections", 0, service_method="Proxy")
        self.check(sm, S + "ready_backend_connections", 1)
        self.check(sm, S + "ready_backends", 1, proxy_strategy="default")
        self.check(sm, S + "dial_duration_seconds_count", N)
        self.check(sm, S + "connection_duration_seconds_count", N)
        self.check(sm, S + "dial_duration_seconds_bucket", N, le="+Inf")

        # Agent.
        self.check(am, A + "endpoint_dial_failure_total", M, reason="unknown")
        self.check(am, A + "endpoint_dial_failure_total", 1, reason="timeout")
        self.check(am, A + "open_endpoint_connections", 0)
        self.check(am, A + "open_server_connections", 1)
        self.check(am, A + "known_server_count", 1)
        self.check(am, A + "dial_duration_seconds_count", N)
        for seg, typ, n in (("to_agent", "DIAL_REQ", N + M + 2), ("from_agent", "DIAL_RSP", N + M + 1),
                            ("to_agent", "DIAL_CLS", 1), ("to_agent", "DATA", N), ("to_agent", "CLOSE_REQ", N),
                            ("from_agent", "CLOSE_RSP", N),
                            # BUG: DATA the agent sends (endpoint → server) is never counted (from_agent DATA = 0)
                            ("from_agent", "DATA", N)):
            self.check(am, A + "stream_packets_total", n, segment=seg, packet_type=typ)
        return sm, am

    def test_known_sequence(self):
        """The known sequence with konn-to-konn tunnel streams (the default): exact values on both sides.
        # BUG: with tunnel streams the server also misses from_agent DIAL_RSP/CLOSE_RSP and the agent from_agent
        DIAL_RSP (packets on per-tunnel streams are not counted)."""
        self.run_sequence(tunnel_streams=True)

    def test_known_sequence_upstream_framing(self):
        """The same sequence with --tunnel-streams=false on both sides (everything on the one Connect stream, as
        with an upstream peer): the same exact values."""
        self.run_sequence(tunnel_streams=False)

    def test_backend_close_and_dial_timeout_reasons(self):
        """--backend-dial-timeout=1s, agent SIGSTOPped: a CONNECT gets the 504 after 1 s (backend_dial_timeout);
        a second CONNECT is pending when the agent is SIGKILLed: 502 context error at once (backend_close)."""
        server = self.start_konn_server("srv1", extra=("--backend-dial-timeout=1s",))
        agent = self.start_konn_agent("node1", wait_server=server)
        echo = self.track(kt.EchoServer())
        self.sigstop(agent)
        self.assertEqual(self.connect_expect(server, echo.addr), ht.RESP_504_DIAL_TIMEOUT)
        pending = self.client_of(server)
        pending.send_connect(echo.addr)
        self.wait_metric(server, S + "pending_backend_dials", 1.0)
        agent.kill9()
        self.assertEqual(pending.read_to_eof(timeout=5), kt.RESP_502_CONTEXT)
        m = self.metrics(server)
        self.check(m, S + "dial_failure_count", 1, reason="backend_dial_timeout")
        self.check(m, S + "dial_failure_count", 1, reason="backend_close")
        self.check(m, S + "dial_failure_count", 0, reason="error_response")
        self.check(m, S + "pending_backend_dials", 0)
        self.check(m, S + "stream_packets_total", 2, segment="to_agent", packet_type="DIAL_REQ")
        self.check(m, S + "stream_packets_total", 1, segment="to_agent", packet_type="DIAL_CLS")
        self.check(m, S + "ready_backend_connections", 0)
        self.check(m, S + "grpc_connections", 0, service_method="Connect")
        self.check(m, S + "dial_duration_seconds_count", 0)

    def test_help_type_and_buckets(self):
        """§9.5 HELP/TYPE lines of the agent's endpoint_dial_failure_total and open_endpoint_connections
        byte-exact; histogram buckets of §9.2/§9.3; process_* basics; the exposition content type."""
        server = self.start_konn_server("srv1")
        agent = self.start_konn_agent("node1", wait_server=server, extra=("--dial-timeout=5s",))
        refused = self.track(kt.RefusedPort())
        echo = self.track(kt.EchoServer())
        self.connect_expect(server, refused.addr)     # one endpoint_dial_failure_total child exists now
        c = self.tunnel_via(server, echo.addr)
        self.assert_echo(c, b"x")
        c.close()
        self.wait_metric(server, S + "connection_duration_seconds_count", 1.0)
        r = self.get(agent.health_port, "/metrics")
        self.assertEqual(r.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8")
        am = ht.Metrics(r.body.decode())
        got = am.lines_of(A + "endpoint_dial_failure_total") + am.lines_of(A + "open_endpoint_connections")
        self.assertEqual(got, HELP_TYPE_AGENT)
        self.assertEqual(buckets(am, A + "dial_duration_seconds"), AGENT_DIAL_BUCKETS)
        self.assertEqual(am.type.get(A + "dial_duration_seconds"), "histogram")
        sm = self.metrics(server)
        self.assertEqual(buckets(sm, S + "dial_duration_seconds"), SERVER_DIAL_BUCKETS)
        self.assertEqual(buckets(sm, S + "connection_duration_seconds"), CONN_BUCKETS)
        for name, typ in ((S + "dial_failure_count", "counter"), (S + "stream_packets_total", "counter"),
                          (S + "ready_backends", "gauge"), (S + "grpc_connections", "gauge"),
                          (S + "established_connections", "gauge"), (S + "pending_backend_dials", "gauge"),
                          (S + "dial_duration_seconds", "histogram"), (S + "connection_duration_seconds", "histogram")):
            self.assertEqual(sm.type.get(name), typ, name)
        for m, d in ((sm, server), (am, agent)):
            self.assertGreater(m.value("process_resident_memory_bytes"), 1e6)
            self.assertGreater(m.value("process_open_fds"), 3)
            self.assertIn("process_cpu_seconds_total", m.type)
            self.assertLess(abs(m.value("process_start_time_seconds") - time.time()), 120)
            # Real fds, not a constant: within the few connections (scrapes) open while the value was taken.
            self.assertLessEqual(abs(m.value("process_open_fds") - len(os.listdir("/proc/%d/fd" % d.pid))), 3,
                                 d.name)


if __name__ == "__main__":
    ht.main()
