#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Live reload (SIGHUP, i.e. `systemctl reload`): certificate rotation without dropping a tunnel, and failed
reloads that keep the running configuration.

  * agent: its client certificate files are replaced by a fresh certificate of the same CA with another CN and
    the agent gets SIGHUP while a tunnel carries data; the tunnel keeps echoing, the agent logs the reload, and
    the next server connection (a restarted server) presents the new CN;
  * server: its cluster certificate is rotated the same way; the running tunnel is unaffected and a new TLS
    handshake on the agent port presents the new certificate;
  * a broken configuration (agent) or unusable TLS material (server) fails the reload with an error line, the
    old configuration stays in force (observable: debug logging, the old certificate), READY=1 still follows
    RELOADING=1, and tunnels carry on.
"""

import os
import shutil
import signal
import socket
import ssl
import threading
import time
import unittest

import konnsd
import konntest
from konntest import T


class EchoLoop:
    """A CONNECT tunnel to an echo target exercised in the background: numbered 64-byte messages, each of which
    must come back unchanged. Counts round trips; the first failure is kept."""

    def __init__(self, client):
        self.c = client
        self.count = 0
        self.error = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="echo-loop")
        self.thread.start()

    def _run(self):
        try:
            while not self.stop.is_set():
                msg = ("%063d\n" % self.count).encode()
                self.c.send(msg)
                got = self.c.recv_exact(len(msg))
                if got != msg:
                    raise AssertionError("echo %d came back as %r" % (self.count, got))
                self.count += 1
                time.sleep(0.01)
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self.error = e

    def wait_more(self, n, timeout=10):
        target = self.count + n
        deadline = time.monotonic() + T(timeout)
        while self.count < target and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.error is not None:
            raise AssertionError("tunnel broke: %r" % (self.error,))
        if self.count < target:
            raise AssertionError("only %d of %d round trips within %.1f s" % (self.count, target, T(timeout)))

    def finish(self):
        self.stop.set()
        self.thread.join(T(10))
        if self.error is not None:
            raise AssertionError("tunnel broke: %r" % (self.error,))


def presented_cert(port):
    """DER of the certificate the server presents on its agent port (handshake with the test agent's cert)."""
    ctx = ssl.create_default_context(cafile=konntest.cert("ca.crt"))
    ctx.load_cert_chain(konntest.cert("agent.crt"), konntest.cert("agent.key"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=T(10)) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.getpeercert(binary_form=True)


def der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


class Reload(konnsd.SdTestCase):

    def setUp(self):
        super().setUp()
        konnsd.require_tools("openssl")

    def live_copy(self, name):
        """Copies of the test PKI's NAME.crt/.key in the test directory, which the test may then replace."""
        crt, key = os.path.join(self.dir, name + "-live.crt"), os.path.join(self.dir, name + "-live.key")
        shutil.copyfile(konntest.cert(name + ".crt"), crt)
        shutil.copyfile(konntest.cert(name + ".key"), key)
        return crt, key

    def server_with(self, crt, key, env=None):
        """konn-server whose agent-listener certificate and key are crt/key."""
        self.agent_port = konntest.free_port()
        argv = [a for a in self.server_argv(self.agent_port)
                if not a.startswith(("--cluster-cert=", "--cluster-key="))]
        server = self.start_env_daemon("server", argv + ["--cluster-cert=" + crt, "--cluster-key=" + key], env=env)
        server.wait_for(MESSAGE_ID=konntest.MSG_STARTED, timeout=10)
        return server

    def agent_with(self, crt, key, extra=(), env=None, config=None, drop=()):
        argv = [a for a in self.agent_argv("node1", cert_name=None, extra=["--agent-cert=" + crt, "--agent-key=" + key]
                                           + list(extra)) if not a.startswith(tuple(drop))]
        if config:
            argv = [a for a in argv if not a.startswith("--config=")] + ["--config=" + config]
        return self.start_env_daemon("agent", argv, env=env)

    def test_agent_certificate_rotation_keeps_the_tunnel(self):
        server = self.start_server()
        crt, key = self.live_copy("agent")
        agent = self.agent_with(crt, key)
        server.wait_for(r"^Agent 'node1' connected \(CN=konn-agent-1, ", timeout=10, KONN_PEER="CN=konn-agent-1")
        echo = self.track(konntest.EchoServer())
        loop = EchoLoop(self.open_tunnel(echo.addr))
        loop.wait_more(20)

        new_crt, new_key = konnsd.issue_cert(self.dir, "rotated", "konn-agent-rotated", "client")
        konnsd.replace_file(new_key, key)
        konnsd.replace_file(new_crt, crt)
        since = agent.mark()
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for(r"^Configuration reloaded; new server connections use the new certificates\.$", since=since,
                       timeout=10, MESSAGE_ID=konnsd.MSG_RELOAD)
        loop.wait_more(50)                      # the tunnel carries on over the same stream
        loop.finish()
        self.assertEqual(len(server.find(r"^Agent 'node1' connected")), 1)
        self.assertEqual(server.find(r"^Agent 'node1' disconnected"), [])
        self.assertEqual(agent.find(prio_max=3, since=since), [])

        # A new server connection (the server restarts on the same port) presents the new certificate.
        self.assertEqual(self.stop_daemon(server), 0)
        server2 = self.start_server(agent_port=self.agent_port, name="server-2")
        server2.wait_for(r"^Agent 'node1' connected \(CN=konn-agent-rotated, ", timeout=15,
                         KONN_PEER="CN=konn-agent-rotated", KONN_AGENT_ID="node1")
        c = self.open_tunnel(echo.addr)
        self.assert_echo(c, b"through the reconnected agent\n")

    def test_server_certificate_rotation_keeps_the_tunnel(self):
        crt, key = self.live_copy("server")
        server = self.server_with(crt, key)
        self.start_agent(server=server)
        echo = self.track(konntest.EchoServer())
        loop = EchoLoop(self.open_tunnel(echo.addr))
        loop.wait_more(20)
        self.assertEqual(presented_cert(self.agent_port), der(konntest.cert("server.crt")))

        new_crt, new_key = konnsd.issue_cert(self.dir, "rotated", "konn-server-rotated", "server")
        konnsd.replace_file(new_key, key)
        konnsd.replace_file(new_crt, crt)
        since = server.mark()
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for(r"^Configuration reloaded; new connections use the new certificates\.$", since=since,
                        timeout=10, MESSAGE_ID=konnsd.MSG_RELOAD)
        loop.wait_more(50)
        loop.finish()
        self.assertEqual(presented_cert(self.agent_port), der(new_crt))
        # A new agent accepts the rotated certificate (same CA, SAN 127.0.0.1).
        self.start_agent(agent_id="node2", server=server)
        self.assertEqual(server.find(r"^Agent 'node1' disconnected"), [])

    def test_failed_agent_reload_keeps_the_running_configuration(self):
        server = self.start_server()
        n = self.notify_listener()
        conf = os.path.join(self.dir, "agent.conf")
        with open(conf, "w") as f:
            f.write('log-level = "debug";\n')
        agent = self.agent_with(konntest.cert("agent.crt"), konntest.cert("agent.key"), config=conf,
                                drop=("--log-level=",), env={"NOTIFY_SOCKET": n.path})
        server.wait_for(r"^Agent 'node1' connected", timeout=10)
        n.wait_for("READY=1")
        echo = self.track(konntest.EchoServer())
        loop = EchoLoop(self.open_tunnel(echo.addr))
        loop.wait_more(10)

        with open(conf, "w") as f:
            f.write('# broken\nlog-level = ;\n')
        since, m = agent.mark(), n.mark()
        agent.proc.send_signal(signal.SIGHUP)
        line = agent.wait_for(r"^Reloading the configuration failed", since=since, timeout=10)
        self.assertEqual((line.prio, line.message), (3, "Reloading the configuration failed, keeping the running one: "
                                                        "%s:2: syntax error" % conf))
        n.wait_for("READY=1", since=m)
        self.assertEqual(konnsd.state_lines(n.lines(since=m)), ["RELOADING=1", "READY=1"])
        self.assertEqual(agent.find(since=since, MESSAGE_ID=konnsd.MSG_RELOAD), [])
        loop.wait_more(20)
        # The old configuration is still in force: debug lines for a new tunnel.
        since = agent.mark()
        c = self.open_tunnel(echo.addr)
        self.assert_echo(c, b"new tunnel after the failed reload\n")
        agent.wait_for(r"^Connection [0-9]+ to '%s' established\.$" % echo.addr, since=since, timeout=10)
        c.close()

        # A good file is taken on the next reload: info level, so no more debug lines.
        with open(conf, "w") as f:
            f.write('log-level = "info";\n')
        since = agent.mark()
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for(since=since, timeout=10, MESSAGE_ID=konnsd.MSG_RELOAD)
        since = agent.mark()
        c = self.open_tunnel(echo.addr)
        self.assert_echo(c, b"after the good reload\n")
        c.close()
        loop.wait_more(10)
        loop.finish()
        time.sleep(T(0.2))
        self.assertEqual([ll for ll in agent.lines()[since:] if ll.prio == 7], [])

    def test_failed_server_reload_keeps_the_running_configuration(self):
        n = self.notify_listener()
        crt, key = self.live_copy("server")
        server = self.server_with(crt, key, env={"NOTIFY_SOCKET": n.path})
        self.start_agent(server=server)
        echo = self.track(konntest.EchoServer())
        loop = EchoLoop(self.open_tunnel(echo.addr))
        loop.wait_more(10)

        # 1. A broken drop-in: the error names it.
        dropin = os.path.join(self.dir, "empty.conf.d", "50-bad.conf")
        os.makedirs(os.path.dirname(dropin))
        with open(dropin, "w") as f:
            f.write("\n\nbogus-key = 1;\n")
        since, m = server.mark(), n.mark()
        server.proc.send_signal(signal.SIGHUP)
        line = server.wait_for(r"^Reloading the configuration failed", since=since, timeout=10)
        self.assertEqual((line.prio, line.message),
                         (3, "Reloading the configuration failed, keeping the running one: "
                             "%s:3: unknown key 'bogus-key'" % dropin))
        n.wait_for("READY=1", since=m)
        self.assertEqual(konnsd.state_lines(n.lines(since=m)), ["RELOADING=1", "READY=1"])
        os.unlink(dropin)
        loop.wait_more(10)

        # 2. A certificate file that is no certificate: the TLS context cannot be rebuilt.
        with open(crt, "w") as f:
            f.write("not a certificate\n")
        since, m = server.mark(), n.mark()
        server.proc.send_signal(signal.SIGHUP)
        line = server.wait_for(r"^Reloading the configuration failed", since=since, timeout=10)
        self.assertEqual((line.prio, line.message),
                         (3, "Reloading the configuration failed (TLS material), keeping the running one."))
        self.assertTrue(server.find(r"^Failed to set up TLS for the agent listener: ", since=since, prio_max=3))
        n.wait_for("READY=1", since=m)
        self.assertEqual(konnsd.state_lines(n.lines(since=m)), ["RELOADING=1", "READY=1"])
        self.assertEqual(server.find(since=since, MESSAGE_ID=konnsd.MSG_RELOAD), [])
        loop.wait_more(20)
        loop.finish()
        # The old TLS context is still the one in use.
        self.assertEqual(presented_cert(self.agent_port), der(konntest.cert("server.crt")))
        self.start_agent(agent_id="node2", server=server)


if __name__ == "__main__":
    konnsd.konntest.main()
