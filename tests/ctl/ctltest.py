# SPDX-License-Identifier: Apache-2.0
"""Shared setup of the tests/ctl suites: konn-server with an admin Unix socket and admin port, and konn-agents
with admin sockets, on top of tests/integration/konntest.py (the one harness)."""

import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import konntest as kt  # noqa: E402,F401


class CtlTestCase(kt.KonnTestCase):

    def start_admin_server(self, server_id="srv1", extra=()):
        """konn-server with its admin interface on self.server_sock and on TCP self.admin_port."""
        self.server_sock = os.path.join(self.dir, "konn-server-admin.sock")
        self.admin_port = kt.free_port()
        return self.start_server(server_id=server_id,
                                 extra=("--admin-socket=" + self.server_sock, "--admin-port=%d" % self.admin_port,
                                        "--admin-bind-address=127.0.0.1") + tuple(extra),
                                 drop=("--admin-port=0",))

    def start_admin_agent(self, agent_id, server, identifiers="", extra=()):
        """konn-agent whose admin socket is DIR/agent-ID.sock (returned with the daemon)."""
        sock = os.path.join(self.dir, "agent-%s.sock" % agent_id)
        args = ("--admin-socket=" + sock,)
        if identifiers:
            args += ("--agent-identifiers=" + identifiers,)
        d = self.start_agent(agent_id=agent_id, server=server, extra=args + tuple(extra))
        return d, sock

    def ctl_json(self, *args, **kw):
        """konnctl -o json ARGS: the parsed object (exit status 0 asserted unless check_rc says otherwise)."""
        kw.setdefault("check_rc", 0)
        rc, out, err = self.konnctl("-o", "json", *args, **kw)
        return json.loads(out)

    def status(self, host):
        rc, out, err = self.konnctl("-H", host, "-o", "json", "status")
        self.assertIn(rc, (0, 1), err)
        return json.loads(out)
