#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""sd_notify(3) messages of both daemons, seen through a NOTIFY_SOCKET listener the test creates (what systemd
does for a Type=notify service): READY=1 and STATUS= from the server once it listens; the agent's
"Connecting to ..." STATUS before its first server connection and READY=1 only after it; RELOADING=1 then
READY=1 around SIGHUP; STOPPING=1 on SIGTERM; WATCHDOG=1 at the pace WATCHDOG_USEC asks, only when WATCHDOG_PID
names the daemon; and the order of all of these. Every message must come from the daemon's own pid
(NotifyAccess=main in the units)."""

import signal
import time
import unittest

import konnsd
import konntest
from konnsd import state_lines, status_lines
from konntest import T

WATCHDOG_USEC = 200000


class Notify(konnsd.SdTestCase):

    def server(self, notify, env=None, extra=()):
        self.agent_port = konntest.free_port()
        env = dict(env or {}, NOTIFY_SOCKET=notify.path)
        d = self.start_env_daemon("server", self.server_argv(self.agent_port, extra=extra), env=env)
        d.wait_for(MESSAGE_ID=konntest.MSG_STARTED, timeout=10)
        return d

    def agent(self, notify, port, extra=(), env=None):
        env = dict(env or {}, NOTIFY_SOCKET=notify.path)
        argv = self.agent_argv("node1", port=port, extra=["--sync-interval=100ms", "--sync-interval-cap=200ms"]
                               + list(extra))
        return self.start_env_daemon("agent", argv, env=env)

    def assert_from(self, notify, pid):
        with notify.cond:
            pids = {p for _, p, _ in notify.messages}
        self.assertEqual(pids, {pid})

    def test_server_sequence(self):
        n = self.notify_listener()
        s = self.server(n)
        n.wait_for("READY=1")
        n.wait_for("STATUS=0 agent streams, 0 frontend connections")
        # Ready once listening, with the status right behind it.
        self.assertEqual(n.lines()[:2], ["READY=1", "STATUS=0 agent streams, 0 frontend connections"])

        m = n.mark()
        self.start_agent(server=s)
        n.wait_for("STATUS=1 agent stream, 0 frontend connections", since=m)
        echo = self.track(konntest.EchoServer())
        c = self.open_tunnel(echo.addr)
        n.wait_for("STATUS=1 agent stream, 1 frontend connection", since=m)
        self.assert_echo(c, b"x")
        c.close()
        n.wait_for("STATUS=1 agent stream, 0 frontend connections", since=n.mark() - 1)
        self.assertEqual(state_lines(n.lines(since=m)), [])

        # Reload: RELOADING=1, then READY=1, then the status again.
        m = n.mark()
        s.proc.send_signal(signal.SIGHUP)
        s.wait_for(MESSAGE_ID=konnsd.MSG_RELOAD, timeout=10)
        n.wait_for("STATUS=1 agent stream, 0 frontend connections", since=m)
        got = n.lines(since=m)
        self.assertEqual(state_lines(got), ["RELOADING=1", "READY=1"])
        self.assertLess(got.index("READY=1"), got.index("STATUS=1 agent stream, 0 frontend connections"))

        # Stop: STOPPING=1, and nothing announces readiness after it.
        m = n.mark()
        self.assertEqual(self.stop_daemon(s), 0)
        # The listener reads datagrams on its own thread: the last ones may still be on their way.
        n.wait_for("STOPPING=1", since=m)
        got = n.lines(since=m)
        self.assertIn("STOPPING=1", got)
        self.assertEqual(set(state_lines(got)), {"STOPPING=1"})
        self.assertEqual(state_lines(got)[0], "STOPPING=1")
        self.assertEqual(n.times("WATCHDOG=1"), [])
        self.assert_from(n, s.pid)

    def test_agent_ready_only_once_connected(self):
        n = self.notify_listener()
        port = konntest.free_port()
        a = self.agent(n, port)
        connecting = "STATUS=Connecting to 127.0.0.1:%d..." % port
        n.wait_for(connecting)
        # Several connection attempts fail (nothing listens) and the agent stays "activating".
        a.wait_for(r"^Connection to server 127\.0\.0\.1:%d failed" % port, timeout=10)
        time.sleep(T(0.5))
        self.assertNotIn("READY=1", n.lines())
        self.assertEqual(set(status_lines(n.lines())), {connecting[len("STATUS="):]})

        m = n.mark()
        self.start_server(agent_port=port)
        i = n.wait_for("READY=1", since=m, timeout=15)
        n.wait_for("STATUS=1/1 servers, 0 tunnels", since=i)
        got = n.lines()
        self.assertEqual(got.count("READY=1"), 1)
        self.assertLess(got.index(connecting), got.index("READY=1"))
        self.assertLess(got.index("READY=1"), got.index("STATUS=1/1 servers, 0 tunnels"))

        m = n.mark()
        a.proc.send_signal(signal.SIGHUP)
        a.wait_for(MESSAGE_ID=konnsd.MSG_RELOAD, timeout=10)
        n.wait_for("STATUS=1/1 servers, 0 tunnels", since=m)
        got = n.lines(since=m)
        self.assertEqual(state_lines(got), ["RELOADING=1", "READY=1"])
        self.assertLess(got.index("READY=1"), got.index("STATUS=1/1 servers, 0 tunnels"))

        m = n.mark()
        self.assertEqual(self.stop_daemon(a), 0)
        # The listener reads datagrams on its own thread: the last ones may still be on their way.
        n.wait_for("STOPPING=1", since=m)
        n.wait_for("STATUS=Draining, 0 tunnels open", since=m)
        got = n.lines(since=m)
        self.assertEqual(set(state_lines(got)), {"STOPPING=1"})
        self.assertIn("STATUS=Draining, 0 tunnels open", got)
        self.assertLess(got.index("STOPPING=1"), got.index("STATUS=Draining, 0 tunnels open"))
        self.assert_from(n, a.pid)

    def test_agent_reload_before_connecting_does_not_claim_ready(self):
        # A SIGHUP while the agent is still connecting (activating) must not end the wait of "systemctl start":
        # READY=1 may only follow RELOADING=1 if the agent was ready before.
        n = self.notify_listener()
        port = konntest.free_port()
        a = self.agent(n, port)
        n.wait_for("STATUS=Connecting to 127.0.0.1:%d..." % port)
        m = n.mark()
        a.proc.send_signal(signal.SIGHUP)
        a.wait_for(MESSAGE_ID=konnsd.MSG_RELOAD, timeout=10)
        n.wait_for("STATUS=Connecting to 127.0.0.1:%d..." % port, since=m)
        time.sleep(T(0.3))
        self.assertNotIn("READY=1", n.lines())
        # Once connected it is ready, exactly once.
        self.start_server(agent_port=port)
        n.wait_for("READY=1", since=m, timeout=15)
        self.assertEqual(n.lines().count("READY=1"), 1)

    def watchdog_daemon(self, name, argv, n):
        """argv started with WATCHDOG_USEC and WATCHDOG_PID set to its own pid, as systemd does."""
        argv = konnsd.with_own_pid(konntest.WRAPPER + argv, WATCHDOG_PID=True)
        env = {"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        d = konnsd.EnvDaemon(name, argv, self.dir, env=env).start()
        self.daemons.append(d)
        return d

    def assert_watchdog_pace(self, n):
        first = n.wait_for("WATCHDOG=1", timeout=5)
        t0 = n.messages[first][0]
        time.sleep(T(1.5))
        times = [t for t in n.times("WATCHDOG=1") if t >= t0]
        # sd-event pings between 1/2 and 3/4 of the interval after the previous ping: about 10 in 1.5 s, and
        # never a gap as long as the interval itself (systemd would kill the service).
        self.assertGreaterEqual(len(times), 5, times)
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertLess(max(gaps), T(WATCHDOG_USEC / 1e6), gaps)

    def test_server_watchdog(self):
        n = self.notify_listener()
        self.agent_port = konntest.free_port()
        d = self.watchdog_daemon("server", self.server_argv(self.agent_port), n)
        n.wait_for("READY=1", timeout=10)
        self.assert_watchdog_pace(n)
        self.assertEqual(self.stop_daemon(d), 0)
        self.assert_from(n, d.pid)

    def test_agent_watchdog_while_still_connecting(self):
        # Not connected, so not ready yet: the loop is alive all the same, so it pings.
        n = self.notify_listener()
        port = konntest.free_port()
        d = self.watchdog_daemon("agent", self.agent_argv("node1", port=port), n)
        n.wait_for("STATUS=Connecting to 127.0.0.1:%d..." % port, timeout=10)
        self.assert_watchdog_pace(n)
        self.assertNotIn("READY=1", n.lines())
        self.assertEqual(self.stop_daemon(d), 0)
        self.assert_from(n, d.pid)

    def test_no_watchdog_for_another_pid_or_without_usec(self):
        for label, env in (("WATCHDOG_PID of another process", {"WATCHDOG_USEC": str(WATCHDOG_USEC),
                                                                 "WATCHDOG_PID": "1"}),
                           ("no WATCHDOG_USEC", {})):
            with self.subTest(label):
                n = self.notify_listener("notify-%d" % len(self.closers))
                s = self.server(n, env=env)
                n.wait_for("READY=1")
                time.sleep(T(0.6))
                self.assertNotIn("WATCHDOG=1", n.lines())
                self.assertEqual(self.stop_daemon(s), 0)


if __name__ == "__main__":
    konnsd.konntest.main()
