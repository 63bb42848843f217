#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""konnctl against running daemons. A known sequence — two agents (node1 for 127.0.0.1, node2 for 127.0.0.2 with
the destHost strategy), two tunnels kept open with 5 and 7 bytes echoed, one refused dial, one tunnel opened,
3 bytes echoed and closed — then every command's table and JSON output checked field by field on both daemons,
over the admin Unix socket and over the admin TCP port; tunnels filtered by --agent and --dest; probe: success
with the agent that carried it, refusal with the exact reason, no agent; finding the daemon by itself; exit
statuses when the daemon is down, when the socket is not permitted (a non-root user outside the socket's group)
and when a command does not belong to the daemon."""

import json
import os
import re
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctltest  # noqa: E402
from ctltest import kt  # noqa: E402

TIME_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
ADDR_RE = r"127\.0\.0\.1:\d+"


def table(text):
    """Rows of an aligned table as lists of cells (cells are separated by two or more spaces)."""
    return [re.split(r"  +", line.rstrip()) for line in text.splitlines() if line.strip()]


class Konnctl(ctltest.CtlTestCase):

    def setUp(self):
        super().setUp()
        self.server = self.start_admin_server(extra=("--proxy-strategies=destHost,default", "--server-count=3"))
        self.agent1, self.sock1 = self.start_admin_agent("node1", self.server, "ipv4=127.0.0.1")
        self.agent2, self.sock2 = self.start_admin_agent("node2", self.server, "ipv4=127.0.0.2")

    def run_sequence(self):
        self.echo1 = self.track(kt.EchoServer())
        self.echo2 = self.track(kt.EchoServer(host="127.0.0.2"))
        self.refused = self.track(kt.RefusedPort())
        self.t1 = self.open_tunnel(self.echo1.addr)
        self.assert_echo(self.t1, b"hello")
        self.t2 = self.open_tunnel(self.echo2.addr)
        self.assert_echo(self.t2, b"goodbye")
        c = self.uds_client()
        c.send_connect(self.refused.addr)
        self.assertTrue(c.read_to_eof().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        t3 = self.open_tunnel(self.echo1.addr)
        self.assert_echo(t3, b"bye")
        t3.close()
        self.refused_reason = "dial tcp %s: connect: connection refused" % self.refused.addr
        self.wait_until(lambda: self.status(self.server_sock)["tunnels_closed"] == 1, 10, "the closed tunnel")
        self.wait_until(lambda: all(self.status(s)["tunnels_closed"] == n for s, n in ((self.sock1, 1), (self.sock2, 0))),
                        10, "the agents to count the closed tunnel")

    # -- status ------------------------------------------------------------------------------------------------

    def test_status_server(self):
        self.run_sequence()
        for host in (self.server_sock, "127.0.0.1:%d" % self.admin_port):
            with self.subTest(host=host):
                st = self.ctl_json("-H", host, "status")
                self.assertRegex(st.pop("started"), TIME_RE)
                self.assertGreater(st.pop("uptime_seconds"), 0)
                self.assertEqual(st.pop("pid"), self.server.pid)
                errors = st.pop("last_errors")
                self.assertEqual(len(errors), 1)
                self.assertRegex(errors[0].pop("time"), TIME_RE)
                self.assertEqual(errors[0], {"destination": self.refused.addr, "reason": self.refused_reason})
                self.assertEqual(st, {
                    "daemon": "konn-server", "api": "v1", "version": st["version"], "server_id": "srv1",
                    "server_count": 3, "ready": True, "ready_reason": "", "stopping": False, "agents": 2,
                    "agent_streams": 2, "frontend_connections": 2,
                    "tunnels": {"established": 2, "pending": 0},
                    "bytes_to_destination": 15, "bytes_from_destination": 15,
                    "dials": {"requested": 4, "established": 3, "failed": 1}, "tunnels_closed": 1,
                    "trace_subscribers": 0, "trace_dropped": 0})
        rc, out, err = self.konnctl("-H", self.server_sock, "status", check_rc=0)
        lines = out.splitlines()
        self.assertEqual(lines[0], "Daemon:       konn-server %s (pid %d, %s)" % (st["version"], self.server.pid,
                                                                                 self.server_sock))
        self.assertEqual(lines[1], "Server ID:    srv1 (server count 3)")
        self.assertRegex(lines[2], r"^Uptime:       [0-9.]+ (ms|s) \(since %s\)$" % TIME_RE)
        self.assertEqual(lines[3:10], [
            "Ready:        yes",
            "Agents:       2 connected (2 streams), 2 frontend connections",
            "Tunnels:      2 open, 0 pending",
            "Bytes:        15 B to destinations, 15 B back",
            "Dials:        4 requested, 3 established, 1 failed; 1 tunnels closed",
            "Trace:        0 subscribers, 0 dropped",
            "Last errors:"])
        self.assertRegex(lines[10], r"^  \d\d:\d\d:\d\d  %s  %s$" % (re.escape(self.refused.addr),
                                                                       re.escape(self.refused_reason)))
        self.assertEqual(len(lines), 11)

    def test_status_agent_and_not_ready(self):
        self.run_sequence()
        st = self.ctl_json("-H", self.sock1, "status")
        for k in ("started", "uptime_seconds", "pid", "version", "last_errors"):
            st.pop(k)
        self.assertEqual(st, {
            "daemon": "konn-agent", "api": "v1", "agent_id": "node1", "identifiers": "ipv4=127.0.0.1",
            "ready": True, "ready_reason": "", "stopping": False, "servers": {"connected": 1, "count": 3},
            "tunnels": {"established": 1, "pending": 0}, "bytes_to_destination": 8, "bytes_from_destination": 8,
            "dials": {"requested": 3, "established": 2, "failed": 1}, "tunnels_closed": 1,
            "trace_subscribers": 0, "trace_dropped": 0})
        rc, out, err = self.konnctl("-H", self.sock1, "status", check_rc=0)
        self.assertIn("\nAgent ID:     node1 (ipv4=127.0.0.1)\n", out)
        self.assertIn("\nServers:      1/3 servers\n", out)
        self.assertIn("\nTunnels:      1 open, 0 pending\n", out)
        self.assertIn("\nBytes:        8 B to destinations, 8 B back\n", out)
        self.assertIn("\nDials:        3 requested, 2 established, 1 failed; 1 tunnels closed\n", out)
        # Not ready: a server without agents answers, and konnctl says why with exit status 1.
        lone_sock = os.path.join(self.dir, "lone.sock")
        self.start_server(server_id="lone", name="lone",
                          extra=("--admin-socket=" + lone_sock, "--uds-name=" + os.path.join(self.dir, "lone-f.sock")))
        rc, out, err = self.konnctl("-H", lone_sock, "status", check_rc=1)
        self.assertIn("\nReady:        no: no connection to any proxy agent\n", out)
        self.assertIn("\nAgents:       0 connected (0 streams), 0 frontend connections\n", out)
        self.assertEqual(self.ctl_json("-H", lone_sock, "status", check_rc=1)["ready_reason"],
                         "no connection to any proxy agent")

    # -- agents, servers ---------------------------------------------------------------------------------------

    def test_agents(self):
        self.run_sequence()
        agents = sorted(self.ctl_json("-H", self.server_sock, "agents")["agents"], key=lambda a: a["id"])
        for a in agents:
            self.assertRegex(a.pop("address"), "^" + ADDR_RE + "$")
            self.assertRegex(a.pop("since"), TIME_RE)
            self.assertIn(a.pop("tunnel_streams"), (True, False))
        self.assertEqual(agents, [
            {"id": "node1", "identifiers": "ipv4=127.0.0.1", "subject": "CN=konn-agent-1", "draining": False,
             "superseded": False, "tunnels": 1, "pending_dials": 0, "bytes_to_destination": 5,
             "bytes_from_destination": 5},
            {"id": "node2", "identifiers": "ipv4=127.0.0.2", "subject": "CN=konn-agent-1", "draining": False,
             "superseded": False, "tunnels": 1, "pending_dials": 0, "bytes_to_destination": 7,
             "bytes_from_destination": 7}])
        rc, out, err = self.konnctl("-H", self.server_sock, "agents", check_rc=0)
        rows = table(out)
        self.assertEqual(rows[0], ["AGENT", "IDENTIFIERS", "ADDRESS", "SUBJECT", "CONNECTED", "DRAINING", "TUNNELS",
                                   "PENDING", "TO-DEST", "FROM-DEST"])
        body = sorted(rows[1:])
        self.assertEqual(len(body), 2)
        for row, (name, ident, n) in zip(body, (("node1", "ipv4=127.0.0.1", "5 B"), ("node2", "ipv4=127.0.0.2", "7 B"))):
            self.assertEqual([row[0], row[1], row[3], row[5], row[6], row[7], row[8], row[9]],
                             [name, ident, "CN=konn-agent-1", "no", "1", "0", n, n])
            self.assertRegex(row[2], "^" + ADDR_RE + "$")
            self.assertRegex(row[4], TIME_RE)
        # Columns are aligned: every header starts where its cells start.
        lines = out.splitlines()
        for h in ("ADDRESS", "TUNNELS", "FROM-DEST"):
            col = lines[0].index(h)
            for line in lines[1:]:
                self.assertNotEqual(line[col], " ", (h, line))
                self.assertEqual(line[col - 1], " ", (h, line))

    def test_servers(self):
        self.run_sequence()
        servers = self.ctl_json("-H", self.sock2, "servers")["servers"]
        self.assertEqual(len(servers), 1)
        s = servers[0]
        self.assertRegex(s.pop("since"), TIME_RE)
        self.assertIn(s.pop("tunnel_streams"), (True, False))
        self.assertEqual(s, {"id": "srv1", "host": "127.0.0.1", "port": self.agent_port,
                             "address": "127.0.0.1:%d" % self.agent_port, "state": "ready", "server_count": 3,
                             "draining": False, "tunnels": 1, "pending_dials": 0, "bytes_to_destination": 7,
                             "bytes_from_destination": 7})
        rc, out, err = self.konnctl("-H", self.sock2, "servers", check_rc=0)
        rows = table(out)
        self.assertEqual(rows[0], ["SERVER", "ADDRESS", "STATE", "CONNECTED", "TUNNELS", "PENDING", "TO-DEST",
                                   "FROM-DEST"])
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[1][:3] + rows[1][4:], ["srv1", "127.0.0.1:%d" % self.agent_port, "ready", "1", "0",
                                                     "7 B", "7 B"])

    # -- tunnels -----------------------------------------------------------------------------------------------

    def test_tunnels_server_filters(self):
        self.run_sequence()
        tunnels = self.ctl_json("-H", self.server_sock, "tunnels")["tunnels"]
        self.assertEqual(len(tunnels), 2)
        by_dest = {t["destination"]: t for t in tunnels}
        for t, agent, n in ((by_dest[self.echo1.addr], "node1", 5), (by_dest[self.echo2.addr], "node2", 7)):
            self.assertGreater(t.pop("dial_id"), 0)
            self.assertGreater(t.pop("age_seconds"), 0)
            self.assertEqual(t.pop("connect_id"), 1)
            self.assertEqual(t, {"frontend": "http-connect", "state": "established", "destination": t["destination"],
                                 "direction": "forward", "route": "agent", "agent": agent, "client": "unix:" + self.sock_path, "bytes_to_destination": n,
                                 "bytes_from_destination": n})
        only2 = self.ctl_json("-H", self.server_sock, "tunnels", "--agent", "node2")["tunnels"]
        self.assertEqual([t["destination"] for t in only2], [self.echo2.addr])
        only1 = self.ctl_json("-H", self.server_sock, "tunnels", "--dest", "127.0.0.1:*")["tunnels"]
        self.assertEqual([t["agent"] for t in only1], ["node1"])
        self.assertEqual(self.ctl_json("-H", self.server_sock, "tunnels", "--dest", "10.*")["tunnels"], [])
        rc, out, err = self.konnctl("-H", self.server_sock, "tunnels", "--agent", "node2", check_rc=0)
        rows = table(out)
        self.assertEqual(rows[0], ["CONNECT-ID", "DIAL-ID", "DESTINATION", "AGENT", "FRONTEND", "CLIENT", "STATE",
                                   "AGE", "TO-DEST", "FROM-DEST"])
        self.assertEqual(len(rows), 2)
        r = rows[1]
        self.assertEqual([r[0], r[2], r[3], r[4], r[5], r[6], r[8], r[9]],
                         ["1", self.echo2.addr, "node2", "http-connect", "unix:" + self.sock_path, "established",
                          "7 B", "7 B"])
        self.assertRegex(r[1], r"^\d+$")
        self.assertRegex(r[7], r"^[0-9.]+ (ms|s)$|^\dm\d\ds$")
        rc, out, err = self.konnctl("-H", self.server_sock, "tunnels", "--dest", "10.*", check_rc=0)
        self.assertEqual(out, "No tunnels match.\n")
        # Legacy listings stay as they were (tests/ha uses them).
        legacy = json.loads(self.http_get("/tunnels"))
        self.assertEqual(sorted(t["destination"] for t in legacy), sorted([self.echo1.addr, self.echo2.addr]))
        self.assertEqual(sorted(legacy[0]), ["age_seconds", "agent", "bytes_in", "bytes_out", "connect_id", "destination",
                                             "dial_id", "direction", "frontend", "route", "state"])

    def test_tunnels_agent(self):
        self.run_sequence()
        tunnels = self.ctl_json("-H", self.sock1, "tunnels")["tunnels"]
        self.assertEqual(len(tunnels), 1)
        t = tunnels[0]
        self.assertGreater(t.pop("age_seconds"), 0)
        self.assertGreater(t.pop("dial_id"), 0)
        self.assertEqual(t, {"connect_id": 1, "state": "established", "destination": self.echo1.addr,
                             "server": "srv1", "bytes_to_destination": 5, "bytes_from_destination": 5})
        rc, out, err = self.konnctl("-H", self.sock1, "tunnels", check_rc=0)
        rows = table(out)
        self.assertEqual(rows[0], ["CONNECT-ID", "DIAL-ID", "DESTINATION", "SERVER", "STATE", "AGE", "TO-DEST",
                                   "FROM-DEST"])
        self.assertEqual([rows[1][i] for i in (0, 2, 3, 4, 6, 7)],
                         ["1", self.echo1.addr, "srv1", "established", "5 B", "5 B"])

    def http_get(self, path):
        s = socket.create_connection(("127.0.0.1", self.admin_port), timeout=kt.T(10))
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
        return body.decode()

    # -- probe -------------------------------------------------------------------------------------------------

    def test_probe(self):
        echo = self.track(kt.EchoServer())
        refused = self.track(kt.RefusedPort())
        base = ("-H", self.server_sock, "probe", "--frontend", self.sock_path)
        rc, out, err = self.konnctl(*base, echo.addr, check_rc=0)
        self.assertRegex(out, r"^%s: tunnel established through agent 'node1' in [0-9.]+ (ms|s) "
                              r"\(dial [0-9.]+ (ms|s) at the server\)\n$" % re.escape(echo.addr))
        p = self.ctl_json(*base, echo.addr)
        self.assertGreater(p.pop("connect_seconds"), 0)
        self.assertGreater(p.pop("dial_seconds"), 0)
        self.assertEqual(p, {"destination": echo.addr, "frontend": self.sock_path, "ok": True, "status": 200,
                             "reason": "", "agent": "node1"})
        reason = "dial tcp %s: connect: connection refused" % refused.addr
        rc, out, err = self.konnctl(*base, refused.addr, check_rc=1)
        self.assertEqual(out, "%s: FAILED (HTTP 502, agent 'node1'): %s\n" % (refused.addr, reason))
        p = self.ctl_json(*base, refused.addr, check_rc=1)
        p.pop("connect_seconds")
        self.assertEqual(p, {"destination": refused.addr, "frontend": self.sock_path, "ok": False, "status": 502,
                             "reason": reason, "agent": "node1", "dial_seconds": None})
        # The echo target saw the probes' connections come and go.
        self.assertEqual(len(echo.wait_conns(2)), 2)

    def test_probe_timeout(self):
        """A dial that hangs (a target whose accept queue is full) outlasts --timeout: exit 7, and the reason."""
        hole = self.track(kt.Blackhole())
        if not hole.works:
            self.skipTest("this kernel completes connect() to a listener with a full accept queue")
        t0 = time.monotonic()
        rc, out, err = self.konnctl("-H", self.server_sock, "probe", "--frontend", self.sock_path, "--timeout", "1",
                                    hole.addr, check_rc=7)
        self.assertEqual((out, err), ("", "konnctl: no answer from the frontend within 1.0 s\n"))
        self.assertGreaterEqual(time.monotonic() - t0, 1.0)

    def test_probe_no_agent_and_tcp_frontend(self):
        lone_admin = os.path.join(self.dir, "lone.sock")
        lone = self.start_server(server_id="lone", name="lone", tcp=True, extra=("--admin-socket=" + lone_admin,))
        rc, out, err = self.konnctl("-H", lone_admin, "probe", "--frontend", "127.0.0.1:%d" % self.frontend_port,
                                    "--cert", kt.cert("client.crt"), "--key", kt.cert("client.key"),
                                    "--ca-cert", kt.cert("ca.crt"), "127.0.0.1:9", check_rc=6)
        self.assertEqual(out, "127.0.0.1:9: FAILED (HTTP 500): currently no tunnels available: No agent available\n")
        # TCP+mTLS without a client certificate: the frontend refuses the handshake.
        rc, out, err = self.konnctl("-H", lone_admin, "probe", "--frontend", "127.0.0.1:%d" % self.frontend_port,
                                    "--ca-cert", kt.cert("ca.crt"), "127.0.0.1:9", check_rc=3)
        self.assertTrue(err.startswith("konnctl: the frontend 127.0.0.1:%d closed the connection without answering"
                                       % self.frontend_port), err)
        rc, out, err = self.konnctl("probe", "not-an-address", check_rc=2)
        self.assertIn("probe needs HOST:PORT", err)

    # -- finding the daemon, errors ----------------------------------------------------------------------------

    def test_finds_the_local_daemon(self):
        env = {"KONNCTL_RUNTIME_DIR": self.dir}
        os.symlink(self.sock1, os.path.join(self.dir, "konn-agent-admin.sock"))
        self.assertEqual(self.ctl_json("status", env=env)["daemon"], "konn-server")   # the server comes first
        self.assertEqual(self.ctl_json("servers", env=env)["servers"][0]["id"], "srv1")  # an agent command
        self.assertEqual(len(self.ctl_json("agents", env=env)["agents"]), 2)

    def test_daemon_down(self):
        gone = os.path.join(self.dir, "gone.sock")
        rc, out, err = self.konnctl("-H", gone, "status", check_rc=3)
        self.assertEqual(err, "konnctl: cannot connect to %s: No such file or directory\n" % gone)
        port = kt.free_port()
        rc, out, err = self.konnctl("-H", "127.0.0.1:%d" % port, "tunnels", check_rc=3)
        self.assertEqual(err, "konnctl: cannot connect to 127.0.0.1:%d: Connection refused\n" % port)
        # A daemon that stops: its socket file is removed, konnctl says the same.
        self.agent2.stop()
        self.daemons.remove(self.agent2)
        self.assertFalse(os.path.exists(self.sock2))
        self.konnctl("-H", self.sock2, "servers", check_rc=3)
        # Nothing found by itself: the message says where it looked.
        busy = [p for p in (8095, 8094) if socket.socket().connect_ex(("127.0.0.1", p)) == 0]
        if not busy:
            rc, out, err = self.konnctl("status", env={"KONNCTL_RUNTIME_DIR": os.path.join(self.dir, "none")},
                                        check_rc=3)
            self.assertIn("no konn daemon found", err)

    def test_wrong_daemon_and_usage(self):
        rc, out, err = self.konnctl("-H", self.sock1, "agents", check_rc=5)
        self.assertIn("does not serve /v1/agents", err)
        rc, out, err = self.konnctl("-H", self.server_sock, "servers", check_rc=5)
        self.konnctl("frobnicate", check_rc=2)
        self.konnctl("-o", "yaml", "status", check_rc=2)
        self.konnctl(check_rc=2)

    def test_socket_not_permitted(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to drop to another user")
        import grp
        import pwd
        nobody = pwd.getpwnam("nobody")
        nogroup = grp.getgrgid(nobody.pw_gid).gr_gid
        admin_group = grp.getgrnam("daemon").gr_gid
        # Let others traverse the test's directories; the socket itself stays 0660, group "daemon".
        d = self.dir
        while d != "/" and d.startswith(kt.session_dir()):
            os.chmod(d, 0o711)
            d = os.path.dirname(d)
        os.chown(self.server_sock, 0, admin_group)
        self.assertEqual(os.stat(self.server_sock).st_mode & 0o777, 0o660)
        rc, out, err = self.konnctl("-H", self.server_sock, "status", user=(nobody.pw_uid, nogroup, []), check_rc=4)
        self.assertEqual(err, "konnctl: cannot connect to %s: Permission denied\n" % self.server_sock)
        # Found by itself: said once nothing else answers (the default admin ports are not in use here).
        if not [p for p in (8095, 8094) if socket.socket().connect_ex(("127.0.0.1", p)) == 0]:
            env = {"KONNCTL_RUNTIME_DIR": self.dir}
            rc, out, err = self.konnctl("status", env=env, user=(nobody.pw_uid, nogroup, []), check_rc=4)
            self.assertEqual(err, "konnctl: %s: permission denied (members of the socket's group may connect; see "
                                  "konnctl(1))\n" % self.server_sock)
        # A member of the socket's group may.
        st = json.loads(self.konnctl("-H", self.server_sock, "-o", "json", "status",
                                     user=(nobody.pw_uid, nogroup, [admin_group]), check_rc=0)[1])
        self.assertEqual(st["daemon"], "konn-server")


if __name__ == "__main__":
    kt.main()
