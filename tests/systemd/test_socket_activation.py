#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Socket activation of konn-server without systemd as PID 1.

With systemd-socket-activate(1) (the sockets exist before the server, which is exec'd on the first connection
attempt): the server takes "agent" and "frontend" by name and ignores what its configuration says about those
listeners, a real konn-agent connects through the passed agent socket and a CONNECT through the passed frontend
socket reaches a target, unknown names are logged and closed, a passed Unix socket is plain even with a TCP+mTLS
configuration, a passed TCP frontend gets TLS, and the server never unlinks a socket it did not create.

With sockets held by the test across two server instances (what a socket unit does during
`systemctl restart konn-server`): connections queued while no server runs are served by the next one.
"""

import os
import socket
import time
import unittest
import urllib.error
import urllib.request

import konnsd
import konntest
from konntest import T


class SocketActivation(konnsd.SdTestCase):

    def setUp(self):
        super().setUp()
        konnsd.require_tools("systemd-socket-activate")
        self.passed_sock = os.path.join(self.dir, "passed.sock")
        self.configured_sock = os.path.join(self.dir, "configured.sock")
        self.sock_path = self.configured_sock
        self.configured_agent_port = konntest.free_port()
        self.agent_port = konntest.free_port()  # the passed one: what the agent dials

    def activated_server(self, listens, fdnames, server_argv, name="server", env=None):
        argv = konnsd.socket_activate_argv(listens, fdnames, server_argv, env=env)
        d = konnsd.EnvDaemon(name, argv, self.dir).start()
        self.daemons.append(d)
        # systemd-socket-activate prints one "Listening on ..." line per socket, then waits.
        self.wait_until(lambda: d.text().count("Listening on ") >= len(listens) or not d.alive(), 10,
                        "systemd-socket-activate to listen")
        self.assertTrue(d.alive(), d.tail())
        return d

    def default_server(self, extra_listens=(), extra_names=(), argv=None):
        argv = argv or self.server_argv(self.configured_agent_port)  # --uds-name=configured.sock
        return self.activated_server(["127.0.0.1:%d" % self.agent_port, self.passed_sock] + list(extra_listens),
                                     ["agent", "frontend"] + list(extra_names), argv)

    def assert_refused_tcp(self, port):
        s = socket.socket()
        s.settimeout(T(5))
        try:
            with self.assertRaises(ConnectionRefusedError):
                s.connect(("127.0.0.1", port))
        finally:
            s.close()

    def test_agent_and_frontend_through_passed_sockets(self):
        echo = self.track(konntest.EchoServer())
        server = self.default_server()
        activator_pid = server.pid
        # The agent's connection attempt is what makes systemd-socket-activate exec the server: that first,
        # queued connection must be served.
        agent = self.start_agent(server=None, wait=False, extra=["--sync-interval=100ms", "--sync-interval-cap=200ms"])
        server.wait_for(r"^Agent 'node1' connected \(CN=konn-agent-1, ", timeout=10,
                        MESSAGE_ID=konntest.MSG_AGENT_CONNECTED, KONN_AGENT_ID="node1")
        agent.wait_for(r"^Connected to server 'srv1'", timeout=10, MESSAGE_ID=konntest.MSG_SERVER_CONNECTED)
        started = server.find(MESSAGE_ID=konntest.MSG_STARTED)
        self.assertEqual(len(started), 1)
        self.assertIn("HTTP CONNECT frontend on a socket passed by systemd", started[0].message)
        # The server is the exec'd activator (LISTEN_PID matched), not a child of it.
        self.assertEqual(server.pid, activator_pid)
        if not konntest.WRAPPER:
            with open("/proc/%d/comm" % server.pid) as f:
                self.assertEqual(f.read().strip(), "konn-server")

        c = self.open_tunnel(echo.addr, client=konntest.Client.uds(self.passed_sock))
        self.track(c)
        self.assert_echo(c, b"through the passed frontend socket\n")
        self.assertEqual(len(echo.conns), 1)

        # Nothing of the configured listeners exists: they were replaced by the passed sockets.
        self.assertFalse(os.path.exists(self.configured_sock))
        self.assert_refused_tcp(self.configured_agent_port)
        self.assertEqual(server.find("Ignoring passed socket"), [])

        c.close()
        self.assertEqual(self.stop_daemon(server), 0)
        # The socket belongs to whoever created it (systemd): the server must not unlink it.
        self.assertTrue(os.path.exists(self.passed_sock))

    def test_first_frontend_connection_is_served(self):
        # No agent at all: the CONNECT that triggers the start gets the server's exact "no agent" answer rather
        # than a reset.
        server = self.default_server()
        c = self.track(konntest.Client.uds(self.passed_sock))
        c.send_connect("127.0.0.1:9")
        self.assertEqual(c.read_to_eof(timeout=10), konntest.RESP_500_NO_AGENT)
        server.wait_for(MESSAGE_ID=konntest.MSG_STARTED, timeout=10)

    def test_unknown_fd_name_is_logged_and_closed(self):
        bogus = os.path.join(self.dir, "bogus.sock")
        server = self.default_server(extra_listens=[bogus], extra_names=["bogus"])
        self.start_agent(server=None, wait=False, extra=["--sync-interval=100ms", "--sync-interval-cap=200ms"])
        line = server.wait_for(r"^Ignoring passed socket 'bogus' \(fd 5\): no listener of that name\.$", timeout=10)
        self.assertEqual(line.prio, 4)
        server.wait_for(r"^Agent 'node1' connected", timeout=10)
        # Closed, not leaked: nobody listens on it any more (the activator exec'd, so the server held the only
        # copy).
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self.assertRaises(ConnectionRefusedError):
                s.connect(bogus)
        finally:
            s.close()

    def test_passed_unix_frontend_is_plain_despite_tcp_config(self):
        echo = self.track(konntest.EchoServer())
        # A TCP+mTLS frontend configuration (no --uds-name): a passed Unix socket still speaks plain CONNECT.
        tcp_port = konntest.free_port()
        argv = self.server_argv(self.configured_agent_port, tcp_port=tcp_port)
        server = self.default_server(argv=argv)
        self.start_agent(server=None, wait=False, extra=["--sync-interval=100ms", "--sync-interval-cap=200ms"])
        server.wait_for(r"^Agent 'node1' connected", timeout=10)
        c = self.track(self.open_tunnel(echo.addr, client=konntest.Client.uds(self.passed_sock)))
        self.assert_echo(c, b"plain over the passed unix socket\n")
        self.assert_refused_tcp(tcp_port)

    def test_passed_tcp_frontend_uses_tls(self):
        echo = self.track(konntest.EchoServer())
        self.frontend_port = konntest.free_port()
        argv = self.server_argv(self.configured_agent_port, tcp_port=konntest.free_port())
        server = self.activated_server(["127.0.0.1:%d" % self.agent_port, "127.0.0.1:%d" % self.frontend_port],
                                       ["agent", "frontend"], argv)
        self.start_agent(server=None, wait=False, extra=["--sync-interval=100ms", "--sync-interval-cap=200ms"])
        server.wait_for(r"^Agent 'node1' connected", timeout=10)
        c = self.track(self.open_tunnel(echo.addr, client=self.tls_client()))
        self.assert_echo(c, b"mTLS over the passed TCP socket\n")
        # Plain text on that socket is not CONNECT: the TLS server refuses it.
        raw = self.track(konntest.Client(socket.create_connection(("127.0.0.1", self.frontend_port), timeout=T(10))))
        raw.send_connect(echo.addr)
        self.assertFalse(raw.read_to_eof(timeout=15).startswith(b"HTTP/1.1 200"))
        self.assertEqual(len(echo.conns), 1)


class RestartWithHeldSockets(konnsd.SdTestCase):
    """The sockets stay with the test (the socket unit) while server instances come and go."""

    def setUp(self):
        super().setUp()
        self.holder = konnsd.SocketHolder()
        self.closers.append(self.holder.close)
        self.frontend_path = os.path.join(self.dir, "held.sock")
        self.holder.add_unix("frontend", self.frontend_path)
        self.agent_port = self.holder.add_tcp("agent")
        self.sock_path = os.path.join(self.dir, "configured.sock")
        self.instance = 0

    def start_instance(self):
        self.instance += 1
        argv = self.server_argv(konntest.free_port())
        d = self.holder.daemon("server-%d" % self.instance, argv, self.dir).start()
        self.daemons.append(d)
        d.wait_for(MESSAGE_ID=konntest.MSG_STARTED, timeout=10)
        return d

    def stop_instance(self, d):
        self.assertEqual(self.stop_daemon(d), 0)
        self.assertTrue(os.path.exists(self.frontend_path))

    def test_queued_agent_connection_survives_restart(self):
        echo = self.track(konntest.EchoServer())
        s1 = self.start_instance()
        a1 = self.start_agent(server=s1, name="agent-1")
        self.assertEqual(self.stop_daemon(a1), 0)
        self.stop_instance(s1)

        # No server now. An agent started in this gap gets its TCP connection queued by the kernel on the held
        # socket and waits in the TLS handshake (not refused)...
        a2 = self.start_agent(server=None, wait=False, name="agent-2",
                              extra=["--handshake-timeout=60s", "--sync-interval=100ms",
                                     "--sync-interval-cap=200ms"])
        time.sleep(T(0.5))
        self.assertEqual(a2.find("failed"), [], a2.tail())
        self.assertEqual(a2.find(MESSAGE_ID=konntest.MSG_SERVER_CONNECTED), [])
        # ... and the next instance serves that very connection: the first attempt succeeds.
        s2 = self.start_instance()
        a2.wait_for(r"^Connected to server 'srv1'", timeout=10)
        s2.wait_for(r"^Agent 'node1' connected", timeout=10)
        self.assertEqual(a2.find(r"[Ff]ailed"), [], a2.tail())
        c = self.track(self.open_tunnel(echo.addr, client=konntest.Client.uds(self.frontend_path)))
        self.assert_echo(c, b"after the restart\n")

    def test_queued_frontend_connection_survives_restart(self):
        s1 = self.start_instance()
        self.stop_instance(s1)
        # Connecting works while no server runs (the socket is held), and the request waits.
        c = self.track(konntest.Client.uds(self.frontend_path))
        c.send_connect("127.0.0.1:9")
        self.assertEqual(c.pending_bytes(wait=T(0.3)), b"")
        self.start_instance()
        self.assertEqual(c.read_to_eof(timeout=10), konntest.RESP_500_NO_AGENT)



def http_get(port, path, timeout=10):
    """(status, body, location) of GET http://127.0.0.1:port/path, without following redirects."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kw):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open("http://127.0.0.1:%d%s" % (port, path), timeout=T(timeout)) as r:
            return r.status, r.read(), r.headers.get("Location")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Location")


def assert_closed_without_data(test, port=None, path=None, timeout=10):
    """Connect to the reverse listener and expect it to be accepted and closed with nothing sent."""
    if path:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(T(timeout))
        s.connect(path)
    else:
        s = socket.create_connection(("127.0.0.1", port), timeout=T(timeout))
    try:
        try:
            s.sendall(b"hello?")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed already
        got = b""
        try:
            while True:
                b = s.recv(4096)
                if not b:
                    break
                got += b
        except ConnectionResetError:
            pass
        test.assertEqual(got, b"")
    finally:
        s.close()


class AgentSocketActivation(konnsd.SdTestCase):
    """konn-agent takes its health, admin and node -> control-plane listeners from systemd: by the names
    "health", "admin", "reverse-NAME", or (konn-agent.socket: one unit, one name for all) by address."""

    AGENT_REFUSAL = r"^No connected server offers node to control plane connections"

    def configured(self):
        """Ports in the agent's configuration that must stay unbound when sockets are passed by name."""
        return konntest.free_port(), konntest.free_port(), konntest.free_port()

    def test_all_three_names_via_systemd_socket_activate(self):
        server = self.start_server()
        ch, ca, cr = self.configured()
        health, admin, rev = konntest.free_port(), konntest.free_port(), os.path.join(self.dir, "rev.sock")
        argv = self.agent_argv(extra=["--health-server-host=127.0.0.1", "--health-server-port=%d" % ch,
                                      "--admin-server-port=%d" % ca, "--reverse-listen=api=127.0.0.1:%d" % cr,
                                      "--sync-interval=100ms", "--sync-interval-cap=200ms"])
        argv = konnsd.socket_activate_argv(["127.0.0.1:%d" % health, "127.0.0.1:%d" % admin, rev],
                                           ["health", "admin", "reverse-api"], argv)
        agent = konnsd.EnvDaemon("agent", argv, self.dir).start()
        self.daemons.append(agent)
        self.wait_until(lambda: agent.text().count("Listening on ") >= 3 or not agent.alive(), 10,
                        "systemd-socket-activate to listen")
        # The first connection (to the health socket) execs the agent, which must serve that very connection.
        self.assertEqual(http_get(health, "/healthz")[:2], (200, b"ok"))
        agent.wait_for(r"^Connected to server 'srv1'", timeout=10, MESSAGE_ID=konntest.MSG_SERVER_CONNECTED)
        status, _, location = http_get(admin, "/metrics")
        self.assertEqual((status, location), (301, "http://127.0.0.1:%d/metrics" % ch))
        agent.wait_for(r"^Reverse listener 'api' on 127\.0\.0\.1:%d: " % cr, timeout=10)
        # The server has no reverse destinations: the agent refuses (closes) each connection, logging once.
        for _ in range(3):
            assert_closed_without_data(self, path=rev)
        line = agent.wait_for(self.AGENT_REFUSAL, timeout=10, KONN_DIRECTION="reverse", KONN_REVERSE_NAME="api")
        self.assertEqual(line.prio, 4)
        self.assertEqual(len(agent.find(self.AGENT_REFUSAL)), 1)
        # Nothing of the configured addresses was bound: the passed sockets replaced them.
        for port in (ch, ca, cr):
            self.assert_refused_tcp(port)
        self.assertEqual(agent.find("Ignoring passed socket"), [])
        self.assertEqual(self.stop_daemon(agent), 0)
        self.assertTrue(os.path.exists(rev))  # systemd's socket: never unlinked by the agent

    def assert_refused_tcp(self, port):
        s = socket.socket()
        s.settimeout(T(5))
        try:
            with self.assertRaises(ConnectionRefusedError):
                s.connect(("127.0.0.1", port))
        finally:
            s.close()

    def test_one_unit_one_name_matched_by_address(self):
        # konn-agent.socket: FileDescriptorName=konn-agent for every socket; the agent matches addresses.
        server = self.start_server()
        holder = konnsd.SocketHolder()
        self.closers.append(holder.close)
        health = holder.add_tcp("konn-agent")
        admin = holder.add_tcp("konn-agent")
        rev = holder.add_tcp("konn-agent")
        revpath = os.path.join(self.dir, "rev2.sock")
        holder.add_unix("konn-agent", revpath)
        stray = holder.add_tcp("konn-agent")
        argv = self.agent_argv(extra=["--health-server-host=127.0.0.1", "--health-server-port=%d" % health,
                                      "--admin-bind-address=127.0.0.1", "--admin-server-port=%d" % admin,
                                      "--reverse-listen=api=127.0.0.1:%d,sock=%s" % (rev, revpath)])
        agent = holder.daemon("agent", argv, self.dir).start()
        self.daemons.append(agent)
        agent.wait_for(r"^Connected to server 'srv1'", timeout=10)
        self.assertEqual(http_get(health, "/readyz")[:2], (200, b"ok"))
        self.assertEqual(http_get(admin, "/metrics")[0], 301)
        assert_closed_without_data(self, port=rev)
        assert_closed_without_data(self, path=revpath)
        agent.wait_for(self.AGENT_REFUSAL, timeout=10)
        # The one socket no listener asked for is logged and closed.
        agent.wait_for(r"^Ignoring passed socket 'konn-agent' \(fd 7\): no listener of that name\.$", timeout=10)
        self.assertEqual(len(agent.find("Ignoring passed socket")), 1)
        del stray
        self.assertEqual(self.stop_daemon(agent), 0)
        self.assertTrue(os.path.exists(revpath))

    def test_unconfigured_agent_exits_without_ignored_socket_lines(self):
        # A fresh package install: konn-agent.socket passes its sockets to an agent that has no configuration
        # yet and waits for one; stopping it then is not an "ignored socket".
        holder = konnsd.SocketHolder()
        self.closers.append(holder.close)
        holder.add_tcp("konn-agent")
        holder.add_tcp("konn-agent")
        n = self.notify_listener()
        agent = holder.daemon("agent", [konntest.AGENT_BIN, "--config=" + self.empty_conf,
                                        "--log-target=stderr-fields"], self.dir,
                              env={"NOTIFY_SOCKET": n.path}).start()
        self.daemons.append(agent)
        agent.wait_for(r"^Waiting for a valid configuration", timeout=10)
        self.assertEqual(self.stop_daemon(agent), 0)
        self.assertEqual(agent.find("Ignoring passed socket"), [])

    def test_without_systemd_the_agent_binds_its_listeners(self):
        self.start_server()
        health, rev = konntest.free_port(), konntest.free_port()
        revpath = os.path.join(self.dir, "own.sock")
        agent = self.start_agent(extra=["--health-server-host=127.0.0.1", "--health-server-port=%d" % health,
                                        "--reverse-listen=api=127.0.0.1:%d,sock=%s" % (rev, revpath)])
        self.assertEqual(http_get(health, "/healthz")[:2], (200, b"ok"))
        assert_closed_without_data(self, port=rev)
        assert_closed_without_data(self, path=revpath)
        self.assertEqual(os.stat(revpath).st_mode & 0o777, 0o660)
        self.assertEqual(self.stop_daemon(agent), 0)
        # A socket file the agent created itself is removed at exit.
        self.assertFalse(os.path.exists(revpath))
        self.assert_refused_tcp(rev)


class BlockingPassedSockets(konnsd.SdTestCase):
    """systemd passes listening sockets in blocking mode unless the service sets NonBlocking=yes (and
    systemd-socket-activate always does). The daemon must not depend on the unit for that."""

    def test_regression_blocking_passed_socket_hangs_accept_loop(self):
        holder = konnsd.SocketHolder(nonblocking=False)
        self.closers.append(holder.close)
        path = os.path.join(self.dir, "blocking.sock")
        holder.add_unix("frontend", path)
        self.agent_port = holder.add_tcp("agent")
        self.sock_path = os.path.join(self.dir, "configured.sock")
        server = holder.daemon("server", self.server_argv(konntest.free_port()), self.dir).start()
        self.daemons.append(server)
        server.wait_for(MESSAGE_ID=konntest.MSG_STARTED, timeout=10)
        # Each connection must be answered; an accept loop that runs until EAGAIN on a blocking socket would
        # hang in accept() after the first one and never serve anything again (nor react to SIGTERM).
        for i in range(3):
            with self.subTest(connection=i):
                c = self.track(konntest.Client.uds(path))
                c.send_connect("127.0.0.1:9")
                self.assertEqual(c.read_to_eof(timeout=5), konntest.RESP_500_NO_AGENT)
        self.assertEqual(self.stop_daemon(server, timeout=5), 0)


if __name__ == "__main__":
    konnsd.konntest.main()
