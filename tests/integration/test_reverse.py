#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Node -> control plane (issue 12, docs/konn-protocol.md §3): connections accepted on the agent's
--reverse-listen listeners are carried to konn-server, which dials only the --reverse-destinations entry of that
name. Real daemons on loopback.

  * 64 MiB each way byte-exact (sha256), TCP and Unix socket listeners;
  * 200 concurrent connections, each echoing its own tag;
  * a reader that stops reading stalls only its own connection (one HTTP/2 stream each), and so do 24 of them,
    more than the connection window holds stream windows (connection credits come back on receipt), also with
    windows grown by the BDP estimator;
  * a name not on the server's allow-list: that connection is closed, one log line on each side;
  * the per-agent limit, and a destination that refuses: closed, one line each side;
  * a server without the feature: the agent refuses and logs once;
  * agent or server killed mid-transfer: every affected connection is closed at once (also with growing windows);
  * /tunnels, /agents, metrics and journal fields show the direction.
The upstream-protocol server case (python3-grpcio fake server) is in tests/conformance/test_fake_server.py.
"""

import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request

import konntest
from konntest import T

MIB = 1024 * 1024


def http_json(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=T(10)) as r:
        return json.loads(r.read())


def http_text(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=T(10)) as r:
        return r.read().decode()


def metric(text, family, **labels):
    want = family + ("{" + ",".join('%s="%s"' % kv for kv in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


class Reverse(konntest.KonnTestCase):

    def listener(self):
        return "127.0.0.1:%d" % konntest.free_port()

    def assert_echoes(self, c, data, timeout):
        """Send data through c (connected to an echo destination) while reading it back; byte-exact."""
        got = bytearray()

        def reader():
            while len(got) < len(data):
                b = c.sock.recv(256 * 1024)
                if not b:
                    break
                got.extend(b)
        r = konntest.Bg(reader)
        r.start()
        c.send(data)
        r.join_result(timeout)
        self.assertEqual(bytes(got), data)

    def test_64mib_each_way_byte_exact(self):
        size = konntest.big(64 * MIB)
        sink = self.track(konntest.SinkServer())
        source = self.track(konntest.SourceServer(size, seed=12))
        up, down = self.listener(), os.path.join(self.dir, "down.sock")
        self.start_reverse_pair({"up": sink.addr, "down": source.addr}, {"up": up, "down": down})
        result = {}

        def upload():
            c = self.reverse_client(up, timeout=120)
            for chunk in konntest.Pattern(size, seed=21).chunks():
                c.send(chunk)
            c.sock.shutdown(socket.SHUT_WR)
            result["up_eof"] = c.read_to_eof(timeout=120)

        def download():
            c = self.reverse_client(down, timeout=120)
            got = c.read_to_eof(timeout=240, limit=size + 1)
            result["down"] = (len(got), konntest.hashlib.sha256(got).hexdigest())

        threads = [konntest.Bg(upload), konntest.Bg(download)]
        for t in threads:
            t.start()
        for t in threads:
            t.join_result(300)
        self.assertEqual(result["down"], (size, konntest.Pattern(size, seed=12).sha256()))
        rec = sink.wait_conns(1)[0]
        self.assertTrue(rec.done.wait(T(60)), "the sink did not see EOF")
        self.assertEqual((rec.nbytes, rec.sha.hexdigest()), (size, konntest.Pattern(size, seed=21).sha256()))
        self.assertEqual(result["up_eof"], b"")

    def test_200_concurrent(self):
        echo = self.track(konntest.EchoServer())
        lst = self.listener()
        server, agent = self.start_reverse_pair({"api": echo.addr}, {"api": lst})
        n = 200
        clients = [self.reverse_client(lst, timeout=60) for _ in range(n)]
        for i, c in enumerate(clients):
            c.send(b"tag-%04d\n" % i)
        for i, c in enumerate(clients):
            self.assertEqual(c.recv_exact(9), b"tag-%04d\n" % i)
        self.assertEqual(len(echo.wait_conns(n)), n)
        for c in clients:
            c.close()
        self.wait_until(lambda: all(r.done.is_set() for r in echo.conns), 30, "every destination connection closed")

    def test_slow_reader_does_not_stall_others(self):
        stream = self.track(konntest.SourceServer(None, seed=5))   # streams forever
        echo = self.track(konntest.EchoServer())
        slow, fast = self.listener(), self.listener()
        self.start_reverse_pair({"stream": stream.addr, "echo": echo.addr}, {"stream": slow, "echo": fast})
        stalled = self.reverse_client(slow)
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Never read: its stream's window (1 MiB) and the socket buffers fill, then the source blocks.
        rec = stream.wait_conns(1)[0]
        last = [-1]

        def blocked():
            now = rec.sent
            if now > 0 and now == last[0]:
                return True
            last[0] = now
            time.sleep(0.5)
            return False
        self.wait_until(blocked, 60, "the stalled connection's source to block")
        blocked_at = rec.sent
        # Another connection of the same agent keeps flowing: 8 MiB echoed.
        self.assert_echoes(self.reverse_client(fast, timeout=60),
                           konntest.Pattern(konntest.big(8 * MIB), seed=9).bytes(), 120)
        # The stalled one stayed stalled (bounded by flow control), and still works when read.
        self.assertLess(rec.sent - blocked_at, 2 * MIB)
        stalled.settimeout(T(10))
        self.assertGreater(len(stalled.sock.recv(65536)), 0)

    def stalled_readers_leave_others_flowing(self, n, extra=()):
        source = self.track(konntest.SourceServer(None, seed=6))  # streams forever
        echo = self.track(konntest.EchoServer())
        slow, fast = self.listener(), self.listener()
        self.start_reverse_pair({"stream": source.addr, "echo": echo.addr}, {"stream": slow, "echo": fast},
                                server_extra=extra, agent_extra=extra)
        stalled = [self.reverse_client(slow) for _ in range(n)]
        for c in stalled:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        recs = source.wait_conns(n)
        self.wait_sources_blocked(recs, 90, "every stalled connection's source to block")
        # Between them the stalled streams hold more than the agent's connection window (16 MiB) ...
        self.assertGreater(sum(r.sent for r in recs), 16 * MIB)
        # ... and a connection of the same agent still flows: 4 MiB echoed byte-exact.
        self.assert_echoes(self.reverse_client(fast, timeout=60), konntest.Pattern(4 * MIB, seed=10).bytes(), 60)
        # Every stalled connection still works when read.
        for s in stalled:
            s.settimeout(T(10))
            self.assertGreater(len(s.sock.recv(65536)), 0)

    def test_many_stalled_readers_do_not_freeze_the_agent(self):
        # 24 readers that stopped, each holding a full 1 MiB stream window: more than the 16 MiB connection window.
        self.stalled_readers_leave_others_flowing(24)

    def test_stalled_readers_with_growing_windows(self):
        # Windows that grew together (the estimator before issue 14's per-stream growth) let three or four stalled
        # streams exhaust the connection; named explicitly so the test keeps its meaning if the default changes.
        self.stalled_readers_leave_others_flowing(6, extra=["--max-window-size=16777216"])

    def test_name_not_allowed_is_refused_with_one_line_each_side(self):
        echo = self.track(konntest.EchoServer())
        ok, secret = self.listener(), self.listener()
        server, agent = self.start_reverse_pair({"api": echo.addr}, {"api": ok, "secret": secret})
        c = self.reverse_client(secret)
        c.send(b"let me in")
        self.assertEqual(c.read_to_eof(timeout=10), b"")
        sl = server.wait_for(r"^Refusing a reverse connection from agent 'node1' to 'secret': not in "
                             r"reverse-destinations\.$", timeout=10, MESSAGE_ID=konntest.MSG_DIAL_FAILED,
                             KONN_DIRECTION="reverse", KONN_REVERSE_NAME="secret", KONN_AGENT_ID="node1")
        self.assertEqual(sl.prio, 4)
        al = agent.wait_for(r"^Server 'srv1' refused the reverse connection from 127\.0\.0\.1:\d+ to 'secret': "
                            r"reverse destination 'secret' is not allowed \(NotFound\)\.$", timeout=10,
                            KONN_DIRECTION="reverse", KONN_REVERSE_NAME="secret", KONN_SERVER_ID="srv1")
        self.assertEqual(al.prio, 4)
        self.assertEqual(len(server.find("secret")), 1)
        self.assertEqual(len(agent.find(r"refused the reverse connection")), 1)
        self.assertEqual(echo.conns, [])
        # The allowed name still works on the same agent.
        c2 = self.reverse_client(ok)
        self.assert_echo(c2, b"allowed\n")

    def test_destination_refused_and_per_agent_limit(self):
        refused = self.track(konntest.RefusedPort())
        echo = self.track(konntest.EchoServer())
        bad, good = self.listener(), self.listener()
        server, agent = self.start_reverse_pair({"bad": refused.addr, "good": echo.addr}, {"bad": bad, "good": good},
                                                server_extra=["--max-reverse-per-agent=2"])
        c = self.reverse_client(bad)
        self.assertEqual(c.read_to_eof(timeout=10), b"")
        server.wait_for(r"^Reverse connection from agent 'node1' to 'bad' \(%s\) failed: dial tcp %s: connect: "
                        r"connection refused$" % (refused.addr, refused.addr), timeout=10, KONN_DIRECTION="reverse")
        agent.wait_for(r"refused the reverse connection .* to 'bad': dial tcp %s: connect: connection refused "
                       r"\(Unavailable\)\.$" % refused.addr, timeout=10)
        held = [self.reverse_client(good) for _ in range(2)]
        for i, h in enumerate(held):
            self.assert_echo(h, b"held %d\n" % i)
        third = self.reverse_client(good)
        self.assertEqual(third.read_to_eof(timeout=10), b"")
        server.wait_for(r"^Refusing a reverse connection from agent 'node1' to 'good': too many reverse connections "
                        r"from this agent \(max-reverse-per-agent\)\.$", timeout=10)
        agent.wait_for(r"to 'good': too many reverse connections \(ResourceExhausted\)\.$", timeout=10)
        for h in held:
            self.assert_echo(h, b"still\n")

    def test_server_without_the_feature_refuses_once(self):
        lst = self.listener()
        server, agent = self.start_reverse_pair({}, {"api": lst})
        for _ in range(3):
            c = self.reverse_client(lst)
            self.assertEqual(c.read_to_eof(timeout=10), b"")
        line = agent.wait_for(r"^No connected server offers node to control plane connections", timeout=10,
                              KONN_DIRECTION="reverse")
        self.assertEqual(line.prio, 4)
        self.assertEqual(len(agent.find(r"^No connected server offers")), 1)
        # No stream was ever opened on the server.
        self.assertEqual(server.find("everse"), [])

    def kill_mid_transfer(self, kill_agent, extra=()):
        source = self.track(konntest.SourceServer(None, seed=3))
        lst = self.listener()
        server, agent = self.start_reverse_pair({"src": source.addr}, {"src": lst}, server_extra=extra,
                                                agent_extra=extra)
        clients = [self.reverse_client(lst, timeout=30) for _ in range(5)]
        for c in clients:
            self.assertGreater(len(c.sock.recv(65536)), 0)
        recs = source.wait_conns(5)
        victim = agent if kill_agent else server
        t0 = time.monotonic()
        victim.kill9()
        if kill_agent:
            # The server closes every destination connection the agent's connection carried.
            for rec in recs:
                self.assertTrue(rec.done.wait(T(5)), "destination connection not closed")
            took = max(rec.eof_at or time.monotonic() for rec in recs) - t0
        else:
            # The agent closes every local client the server connection carried.
            for c in clients:
                c.settimeout(T(5))
                while True:
                    try:
                        if not c.sock.recv(1 << 20):
                            break
                    except ConnectionResetError:
                        break
            took = time.monotonic() - t0
        self.assertLess(took, T(2))
        return took

    def test_agent_killed_mid_transfer_closes_all(self):
        took = self.kill_mid_transfer(kill_agent=True)
        self.daemons = [d for d in self.daemons if d.alive()]
        print("[destinations closed %.3f s after SIGKILL of the agent]" % took)

    def test_server_killed_mid_transfer_closes_all(self):
        took = self.kill_mid_transfer(kill_agent=False)
        self.daemons = [d for d in self.daemons if d.alive()]
        print("[local clients closed %.3f s after SIGKILL of the server]" % took)

    def test_killed_mid_transfer_with_growing_windows(self):
        # Regression: with --max-window-size the grown windows of three streams used to exhaust the connection
        # window, and a fourth or fifth stream never got its first byte (the clients below wait for one each).
        for kill_agent in (True, False, True):
            took = self.kill_mid_transfer(kill_agent=kill_agent, extra=["--max-window-size=16777216"])
            self.daemons = [d for d in self.daemons if d.alive()]
            print("[%s killed: closed after %.3f s]" % ("agent" if kill_agent else "server", took))

    def test_admin_metrics_and_journal_show_the_direction(self):
        echo = self.track(konntest.EchoServer())
        lst = self.listener()
        admin, health, ahealth = konntest.free_port(), konntest.free_port(), konntest.free_port()
        server, agent = self.start_reverse_pair(
            {"api": echo.addr}, {"api": lst},
            server_extra=["--admin-port=%d" % admin, "--health-port=%d" % health,
                          "--health-bind-address=127.0.0.1"],
            agent_extra=["--health-server-host=127.0.0.1", "--health-server-port=%d" % ahealth])
        server.wait_for(r"^Agent 'node1' connected .*, node to control plane\)\.$", timeout=10)
        c = self.reverse_client(lst)
        self.assert_echo(c, b"x" * 1000)
        tunnels = http_json(admin, "/tunnels")
        self.assertEqual(len(tunnels), 1)
        t = tunnels[0]
        self.assertEqual((t["direction"], t["name"], t["destination"], t["agent"], t["state"], t["bytes_in"],
                          t["bytes_out"]), ("reverse", "api", echo.addr, "node1", "established", 1000, 1000))
        agents = http_json(admin, "/agents")
        self.assertEqual((agents[0]["reverse"], agents[0]["reverse_connections"]), (True, 1))
        sm = http_text(health, "/metrics")
        self.assertEqual(metric(sm, "konn_server_reverse_connections_total", name="api", result="established"), 1)
        self.assertEqual(metric(sm, "konn_server_reverse_open_connections", name="api"), 1)
        am = http_text(ahealth, "/metrics")
        self.assertEqual(metric(am, "konn_agent_reverse_connections_total", name="api", result="established"), 1)
        self.assertEqual(metric(am, "konn_agent_reverse_open_connections", name="api"), 1)
        # Upstream's families are the upstream protocol's: no reverse packets in them.
        self.assertIsNone(metric(sm, "konnectivity_network_proxy_server_stream_packets_total",
                                 packet_type="DATA", segment="from_agent"))
        server.wait_for(r"^Reverse connection 1 from agent 'node1' to 'api' \(%s\) established\.$" % echo.addr,
                        timeout=10, MESSAGE_ID=konntest.MSG_TUNNEL_OPENED, KONN_DIRECTION="reverse",
                        KONN_REVERSE_NAME="api", KONN_DEST=echo.addr, KONN_CONNECT_ID="1")
        agent.wait_for(r"^Reverse connection 1 from 127\.0\.0\.1:\d+ to 'api' established through server 'srv1'\.$",
                       timeout=10, MESSAGE_ID=konntest.MSG_TUNNEL_OPENED, KONN_DIRECTION="reverse",
                       KONN_REVERSE_NAME="api")
        c.close()
        server.wait_for(r"^Reverse connection 1 from agent 'node1' to 'api' .* closed \(closed by agent\)\.$",
                        timeout=10, MESSAGE_ID=konntest.MSG_TUNNEL_CLOSED, KONN_BYTES_IN="1000", KONN_BYTES_OUT="1000")
        agent.wait_for(r"^Reverse connection 1 from .* closed \(closed by client\)\.$", timeout=10,
                       MESSAGE_ID=konntest.MSG_TUNNEL_CLOSED, KONN_DIRECTION="reverse")
        self.wait_until(lambda: http_json(admin, "/tunnels") == [], 10, "the reverse connection to go")

    def test_reload_changing_direct_cidrs_keeps_reverse_destinations(self):
        """Regression: a reload that changed --direct-cidrs freed the reverse allow-list (leaving the server pointing
        at freed memory) and the resolver. Reverse connections must keep working across such a reload, also to a
        destination given by name (resolved by the server)."""
        echo = self.track(konntest.EchoServer())
        lst = self.listener()
        conf = os.path.join(self.dir, "server.conf")
        with open(conf, "w") as f:
            f.write('direct-cidrs = "192.0.2.0/24";\n')
        server, agent = self.start_reverse_pair({"api": "localhost:%d" % echo.port}, {"api": lst},
                                                server_extra=["--config=" + conf])
        before = self.reverse_client(lst, timeout=30)
        before.send(b"before\n")
        self.assertEqual(before.recv_exact(7), b"before\n")
        for cidrs in ("198.51.100.0/24", "203.0.113.0/24,2001:db8::/32"):
            since = server.mark()
            with open(conf, "w") as f:
                f.write('direct-cidrs = "%s";\n' % cidrs)
            os.kill(server.proc.pid, signal.SIGHUP)
            server.wait_for(r"^Direct route: dials to %s " % re.escape(cidrs), since=since, timeout=10)
            server.wait_for(r"^Configuration reloaded", since=since, timeout=10)
            for i in range(3):
                c = self.reverse_client(lst, timeout=30)
                c.send(b"after-%d\n" % i)
                self.assertEqual(c.recv_exact(8), b"after-%d\n" % i)
                c.close()
        before.send(b"still\n")
        self.assertEqual(before.recv_exact(6), b"still\n")
        self.assertTrue(server.alive() and agent.alive())

    def test_config_errors(self):
        import subprocess
        for argv, msg in (
                ([konntest.AGENT_BIN, "--reverse-listen=api"], "--reverse-listen: 'api' is not NAME=ADDRESS"),
                ([konntest.AGENT_BIN, "--reverse-listen=a=1.2.3.4:1,a=/x.sock"], "--reverse-listen: name 'a' appears twice"),
                ([konntest.SERVER_BIN, "--uds-name=/x.sock", "--server-port=0", "--reverse-destinations=api=/x.sock"],
                 "--reverse-destinations: api: '/x.sock' must be HOST:PORT")):
            with self.subTest(argv=argv):
                if argv[0] == konntest.SERVER_BIN:
                    extra = ["--cluster-cert=" + konntest.cert("server.crt"),
                             "--cluster-key=" + konntest.cert("server.key"),
                             "--cluster-ca-cert=" + konntest.cert("ca.crt")]
                else:
                    extra = ["--ca-cert=" + konntest.cert("ca.crt")]
                r = subprocess.run(argv + ["--config=" + self.empty_conf, "--check-config"] + extra,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(msg, r.stderr.decode())


if __name__ == "__main__":
    konntest.main()
