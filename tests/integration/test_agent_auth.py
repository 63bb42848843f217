#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Agent authentication on the agent port (mTLS): agents with a certificate from another CA, without a certificate,
or with an expired one never get connected; the server logs a warning naming the failure and keeps serving the good
agent. Also the agent's side: a server certificate that does not match the host name is refused."""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402


class TestAgentAuth(kt.KonnTestCase):

    def setUp(self):
        super().setUp()
        self.server = self.start_server()
        self.good = self.start_agent(agent_id="good", server=self.server)
        self.echo = self.track(kt.EchoServer())
        self.witness = self.open_tunnel(self.echo.addr)

    def assert_good_agent_serves(self):
        self.assert_echo(self.witness, b"witness")
        c = self.open_tunnel(self.echo.addr)
        self.assert_echo(c, b"through the good agent")
        opened = self.server.find(r"^Tunnel \d+ to '%s' established" % self.echo.addr)
        self.assertTrue(all(ll.fields.get("KONN_AGENT_ID") == "good" for ll in opened), opened)

    def bad_agent(self, agent_id, cert_name, reason_re):
        """Start an agent that must be refused; wait for the server's warning (at least two attempts, so the
        agent keeps retrying without ever getting in). Returns the warning lines."""
        since = self.server.mark()
        a = self.start_agent(agent_id=agent_id, cert_name=cert_name, wait=False,
                             extra=["--sync-interval=200ms", "--sync-interval-cap=500ms"])
        first = self.server.wait_for(r"^Agent connection from 127\.0\.0\.1:\d+ failed before any stream: ",
                                     since=since, prio_max=4, timeout=10)
        self.assertRegex(first.message, reason_re)
        deadline = time.monotonic() + T(10)
        while len(self.server.find(r"failed before any stream", since=since)) < 3:
            self.assertLess(time.monotonic(), deadline, "the refused agent did not retry")
            time.sleep(0.05)
        # Rate-limited per peer: the retries are debug lines (KONN_RATELIMITED=1), one warning per 10 s.
        warnings = self.server.find(r"failed before any stream", since=since, prio_max=4)
        repeats = self.server.find(r"failed before any stream", since=since, KONN_RATELIMITED="1")
        self.assertLessEqual(len(warnings), 2, warnings)
        self.assertGreaterEqual(len(repeats), 1)
        self.assertTrue(all(ll.prio == 7 for ll in repeats), repeats)
        self.assertEqual(self.server.find(r"^Agent '%s' connected" % agent_id), [])
        self.assertEqual(a.find(r"^Connected to server"), [])
        # The agent side reports the failure too, at warning level.
        a.wait_for(r"^Connection to server 127\.0\.0\.1:%d failed" % self.agent_port, prio_max=4)
        self.assertTrue(a.alive(), "a refused agent must keep retrying, not exit")
        self.assert_good_agent_serves()
        return first

    def test_agent_from_other_ca(self):
        """Scenario 11a: client certificate signed by another CA."""
        self.bad_agent("bad-ca", "other-agent", r"certificate verify failed: unable to get local issuer certificate$")

    def test_agent_without_certificate(self):
        """Scenario 11b: no client certificate at all."""
        self.bad_agent("no-cert", None, r"peer did not return a certificate$")

    def test_agent_expired_certificate(self):
        """Scenario 11c: client certificate from the right CA, but expired."""
        self.bad_agent("expired", "expired-agent", r"certificate verify failed: certificate has expired$")

    def test_agent_rejects_wrong_server_name(self):
        """The agent verifies the server certificate against --proxy-server-host: a certificate for another name
        (SAN wrong.example) is refused by the agent."""
        since = self.server.mark()
        s2 = self.start_server(server_id="wrongsan", name="server-wrongsan",
                               extra=["--cluster-cert=" + kt.cert("wrongsan-server.crt"),
                                      "--cluster-key=" + kt.cert("wrongsan-server.key")])
        a = self.start_agent(agent_id="picky", wait=False, server_id="wrongsan",
                             extra=["--sync-interval=200ms", "--sync-interval-cap=500ms"])
        ll = a.wait_for(r"^Connection to server 127\.0\.0\.1:%d failed" % self.agent_port, prio_max=4)
        self.assertRegex(ll.message, r"certificate verify failed: IP address mismatch$")
        time.sleep(0.5)
        self.assertEqual(s2.find(r"^Agent 'picky' connected"), [])
        self.assertEqual(a.find(r"^Connected to server"), [])
        self.assertEqual(self.server.find(r"^Agent 'picky'", since=since), [])


if __name__ == "__main__":
    kt.main()
