#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Start-up configuration checks: both daemons refuse bad configurations with exit status 1 and an error naming the
problem; --insecure-allow-unauthenticated-agents starts with a loud warning and really accepts an agent without a
certificate (protocol.md §7.3, §8)."""

import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402


class TestConfig(kt.KonnTestCase):

    def run_daemon(self, argv):
        """Run a daemon that is expected to exit by itself (bounded); returns (exit code, parsed log lines)."""
        r = subprocess.run(kt.WRAPPER + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=T(20), cwd=self.dir, env=kt.daemon_env())
        text = r.stdout.decode("utf-8", errors="replace")
        with open(os.path.join(self.dir, "run-%d.log" % len(os.listdir(self.dir))), "w") as f:
            f.write(" ".join(argv) + "\n" + text)
        # Errors found before the configuration is applied are logged with "auto": logfmt on this pipe.
        return r.returncode, kt.parse_log(kt.logfmt_to_prefixed(text)), text

    def assert_refused(self, argv, message_re):
        rc, lines, text = self.run_daemon(argv)
        self.assertEqual(rc, 1, text)
        errors = [ll for ll in lines if ll.prio <= 3]
        self.assertTrue(errors, "no error-level line:\n" + text)
        self.assertTrue(any(re.search(message_re, ll.message) for ll in errors),
                        "no error line matching %r:\n%s" % (message_re, text))
        self.assertNotIn("accepting agents", text)

    def test_server_requires_cluster_ca(self):
        """Scenario 16a: without --cluster-ca-cert the server refuses to start and names the escape hatch."""
        argv = [a for a in self.server_argv(kt.free_port()) if not a.startswith("--cluster-ca-cert=")]
        self.assert_refused(argv, r"--cluster-ca-cert is required unless token authentication \(--agent-namespace\) or --insecure-allow-unauthenticated-agents")
        self.assertFalse(os.path.exists(self.sock_path))

    def test_server_insecure_flag(self):
        """Scenario 16b: with --insecure-allow-unauthenticated-agents it starts, warns loudly, and an agent without
        a client certificate can connect and carry tunnels."""
        server = self.start_server(drop=("--cluster-ca-cert=",),
                                   extra=["--insecure-allow-unauthenticated-agents"])
        warn = server.find(r"--insecure-allow-unauthenticated-agents", prio_max=4)
        self.assertEqual(len(warn), 1, server.text())
        self.assertRegex(warn[0].message, r"WITHOUT any authentication")
        self.start_agent(agent_id="anonymous", server=server, cert_name=None)
        echo = self.track(kt.EchoServer())
        self.assert_echo(self.open_tunnel(echo.addr), b"insecure but working")

    def test_server_bad_values(self):
        """Other refused server configurations."""
        port = kt.free_port()
        cases = [
            (self.server_argv(80), r"--agent-port 80 out of range 1024\.\.49151"),
            (self.server_argv(49152), r"--agent-port 49152 out of range 1024\.\.49151"),
            (self.server_argv(port, extra=["--mode=socks"]), r"invalid value 'socks' for flag --mode"),
            (self.server_argv(port, extra=["--server-port=8090"]),
             r"--server-port must be 0 when --uds-name is set"),
            (self.server_argv(port, extra=["--proxy-strategies=nearest"]), r"unknown strategy 'nearest'"),
            (self.server_argv(port, extra=["--tls-min-version=VersionTLS10"]), r"TLS 1\.2 or newer"),
            (self.server_argv(port, extra=["--no-such-option"]), r"unknown flag: --no-such-option"),
            ([a for a in self.server_argv(port) if not a.startswith("--cluster-cert=")],
             r"--cluster-cert is required"),
            (self.server_argv(port, extra=["--cluster-cert=" + os.path.join(self.dir, "missing.crt")]),
             r"missing\.crt"),
        ]
        for argv, msg in cases:
            with self.subTest(msg=msg):
                self.assert_refused(argv, msg)

    def test_server_check_config(self):
        """--check-config validates and exits 0 without listening."""
        rc, lines, text = self.run_daemon(self.server_argv(kt.free_port(), extra=["--check-config"]))
        self.assertEqual(rc, 0, text)
        self.assertNotIn("accepting agents", text)
        self.assertFalse(os.path.exists(self.sock_path))

    def test_agent_bad_config(self):
        """Scenario 16c: the agent refuses to start without --ca-cert, and on other bad values."""
        port = kt.free_port()
        cases = [
            ([a for a in self.agent_argv(port=port) if not a.startswith("--ca-cert=")], r"--ca-cert is required"),
            ([a for a in self.agent_argv(port=port) if not a.startswith("--agent-key=")],
             r"--agent-cert and --agent-key must be set together"),
            (self.agent_argv(port=port, extra=["--proxy-server-port=70000"]),
             r"--proxy-server-port: value 70000 out of range 1\.\.65535"),
            (self.agent_argv(port=port, extra=["--agent-identifiers=color=blue"]), r"unknown address type 'color'"),
            (self.agent_argv(port=port, extra=["--dial-timeout=soon"]), r"dial-timeout"),
        ]
        for argv, msg in cases:
            with self.subTest(msg=msg):
                self.assert_refused(argv, msg)


if __name__ == "__main__":
    kt.main()
