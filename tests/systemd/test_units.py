#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The shipped systemd units, sysusers.d and tmpfiles.d files, checked offline with systemd's own tools.

  * `systemd-analyze verify` of the units rendered as `make` renders them (@sbindir@=/usr/sbin,
    @sysconfdir@=/etc), inside a --root holding the built daemons at /usr/sbin, the host's unit files and the
    rendered man pages (MANPATH), so that ExecStart= and Documentation= are really resolved: no output at all;
  * `systemd-analyze security --offline=true` exposure: <= 1.5 for konn-server.service, <= 2.0 for
    konn-agent.service (the scores are printed);
  * the socket units give the fd names the daemon takes, and the reload runs --check-config first;
  * systemd-sysusers / systemd-tmpfiles --root create the users, the group and /run/konn as documented.
No systemd as PID 1 is needed.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import konnsd

SYSTEMD_DIR = os.path.join(konnsd.SRCDIR, "systemd")
MAN_DIR = os.path.join(konnsd.SRCDIR, "man")
SCORE_MAX = {"konn-server.service": 1.5, "konn-agent.service": 2.0}


def run(argv, env=None, timeout=120):
    e = dict(os.environ)
    e.update(env or {})
    e.setdefault("SYSTEMD_COLORS", "0")
    e["SYSTEMD_PAGER"] = ""
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, timeout=timeout)


def parse_unit(text):
    """{section: [(key, value), ...]} of a unit file (no continuation lines are used in ours)."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, [])
            continue
        k, _, v = line.partition("=")
        out[section].append((k, v))
    return out


def values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


class UnitFiles(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        konnsd.require_tools("systemd-analyze", "systemd-sysusers", "systemd-tmpfiles")
        cls.tmp = tempfile.mkdtemp(prefix="konn-units-")
        cls.root = os.path.join(cls.tmp, "root")
        cls.unitdir = os.path.join(cls.root, "etc", "systemd", "system")
        cls.mandir = os.path.join(cls.tmp, "man")
        os.makedirs(cls.unitdir)
        cls.text = {}
        for name in konnsd.UNIT_FILES:
            cls.text[name] = konnsd.render_in(os.path.join(SYSTEMD_DIR, name + ".in"), konnsd.UNIT_SUBST)
            with open(os.path.join(cls.unitdir, name), "w") as f:
                f.write(cls.text[name])
        cls.units = {n: parse_unit(t) for n, t in cls.text.items()}
        # The daemons where the units expect them, the host's units for the dependencies (sysinit.target,
        # network-online.target, ...), and the man pages for Documentation=.
        sbin = os.path.join(cls.root, "usr", "sbin")
        os.makedirs(sbin)
        for b in (konnsd.SERVER_BIN, konnsd.AGENT_BIN):
            shutil.copy2(b, sbin)
        hostunits = "/usr/lib/systemd/system" if os.path.isdir("/usr/lib/systemd/system") else "/lib/systemd/system"
        shutil.copytree(hostunits, os.path.join(cls.root, "usr", "lib", "systemd", "system"), symlinks=True)
        for page in konnsd.MAN_PAGES:
            sect = page.rsplit(".", 1)[1]
            d = os.path.join(cls.mandir, "man" + sect)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, page), "w") as f:
                f.write(konnsd.render_man(os.path.join(MAN_DIR, page + ".in"), konnsd.UNIT_SUBST))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_no_placeholder_left(self):
        for name, text in self.text.items():
            self.assertEqual(konnsd.leftover_placeholders(text), [], name)
        # Every .in file of systemd/ is one of the units checked here.
        shipped = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(SYSTEMD_DIR, "*.in")))
        self.assertEqual(shipped, sorted(konnsd.UNIT_FILES))

    def test_verify_passes_without_any_warning(self):
        r = run([konnsd.SYSTEMD_ANALYZE, "verify", "--root=" + self.root] + konnsd.UNIT_FILES,
                env={"MANPATH": self.mandir})
        out = (r.stdout + r.stderr).decode(errors="replace")
        self.assertEqual((r.returncode, out), (0, ""))

    def test_verify_would_catch_a_missing_binary(self):
        # The check above is only meaningful if verify really resolves ExecStart= inside the root.
        moved = os.path.join(self.tmp, "konn-agent.moved")
        os.rename(os.path.join(self.root, "usr", "sbin", "konn-agent"), moved)
        try:
            r = run([konnsd.SYSTEMD_ANALYZE, "verify", "--root=" + self.root, "konn-agent.service"],
                    env={"MANPATH": self.mandir})
        finally:
            os.rename(moved, os.path.join(self.root, "usr", "sbin", "konn-agent"))
        self.assertIn(b"Command /usr/sbin/konn-agent is not executable", r.stdout + r.stderr)

    def test_every_exec_command_exists(self):
        # systemd-analyze verify (252) checks ExecStart= only; ExecReload= must name real programs too.
        for name, unit in self.units.items():
            for k, v in unit.get("Service", []):
                if not k.startswith("Exec"):
                    continue
                path = v.lstrip("-@:+!").split()[0]
                host = path.replace("/usr/sbin/", os.path.join(self.root, "usr", "sbin") + "/")
                with self.subTest(unit=name, key=k):
                    self.assertTrue(os.access(host, os.X_OK), "%s=%s: %s is not executable" % (k, v, host))

    def test_security_scores(self):
        scores = {}
        for name, limit in SCORE_MAX.items():
            r = run([konnsd.SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager",
                     os.path.join(self.unitdir, name)])
            out = r.stdout.decode(errors="replace")
            m = re.search(r"Overall exposure level for %s: ([0-9]+\.[0-9])" % re.escape(name), out)
            self.assertIsNotNone(m, out + r.stderr.decode(errors="replace"))
            scores[name] = float(m.group(1))
            sys.stderr.write("\nsystemd-analyze security --offline=true %s: %s (limit %.1f)\n"
                             % (name, m.group(1), limit))
            # Settings that must be in place, whatever the total (JSON: locale-independent).
            r = run([konnsd.SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", "--json=short",
                     os.path.join(self.unitdir, name)])
            checks = {c["name"]: c["set"] for c in json.loads(r.stdout)}
            for check in ("User=/DynamicUser=", "NoNewPrivileges=", "PrivateUsers=", "PrivateDevices=",
                          "ProtectSystem=", "ProtectHome=", "PrivateTmp=", "SystemCallArchitectures=",
                          "MemoryDenyWriteExecute=", "RestrictNamespaces=~user",
                          "CapabilityBoundingSet=~CAP_SYS_ADMIN", "RestrictAddressFamilies=~AF_PACKET",
                          "RestrictAddressFamilies=~AF_NETLINK", "SystemCallFilter=~@privileged",
                          "SystemCallFilter=~@resources", "NotifyAccess=", "UMask=", "ProtectProc=",
                          "ProcSubset=", "ProtectClock=", "ProtectKernelTunables=", "RestrictSUIDSGID="):
                with self.subTest(unit=name, check=check):
                    self.assertIs(checks.get(check), True)
        for name, limit in SCORE_MAX.items():
            with self.subTest(unit=name):
                self.assertLessEqual(scores[name], limit)

    def test_sockets_match_the_daemon(self):
        frontend = self.units["konn-server.socket"]
        agent = self.units["konn-server-agent.socket"]
        server = self.units["konn-server.service"]
        self.assertEqual(values(frontend, "Socket", "ListenStream"), ["/run/konn/konn-server.sock"])
        self.assertEqual(values(frontend, "Socket", "FileDescriptorName"), ["frontend"])
        self.assertEqual(values(frontend, "Socket", "SocketMode"), ["0660"])
        self.assertEqual(values(frontend, "Socket", "SocketGroup"), ["konn-frontend"])
        self.assertEqual(values(agent, "Socket", "ListenStream"), ["8091"])
        self.assertEqual(values(agent, "Socket", "FileDescriptorName"), ["agent"])
        for s in (frontend, agent):
            self.assertEqual(values(s, "Socket", "Service"), ["konn-server.service"])
            self.assertEqual(values(s, "Install", "WantedBy"), ["sockets.target"])
        self.assertEqual(values(server, "Service", "Sockets"),
                         ["konn-server.socket konn-server-agent.socket konn-server-admin.socket"])
        # The admin Unix sockets (konnctl): named "admin", group konn-admin, 0660, one per daemon.
        for d in ("server", "agent"):
            admin = self.units["konn-%s-admin.socket" % d]
            self.assertEqual(values(admin, "Socket", "ListenStream"), ["/run/konn/konn-%s-admin.sock" % d])
            self.assertEqual(values(admin, "Socket", "FileDescriptorName"), ["admin"])
            self.assertEqual(values(admin, "Socket", "SocketMode"), ["0660"])
            self.assertEqual(values(admin, "Socket", "SocketGroup"), ["konn-admin"])
            self.assertEqual(values(admin, "Socket", "Service"), ["konn-%s.service" % d])
            self.assertEqual(values(admin, "Install", "WantedBy"), ["sockets.target"])

        self.assertEqual(values(server, "Service", "NonBlocking"), ["yes"])
        # The names must be the ones src/shared/daemon.c takes.
        with open(os.path.join(konnsd.SRCDIR, "src", "server", "manager.c")) as f:
            src = f.read()
        for fdname in ("frontend", "agent"):
            self.assertIn('daemon_take_listen_fd("%s")' % fdname, src)

    def test_agent_socket_matches_the_daemon(self):
        sock = self.units["konn-agent.socket"]
        agent = self.units["konn-agent.service"]
        # Health (all addresses) and admin (loopback) at the agent's default ports; node -> control-plane
        # listeners are added by drop-ins. One FileDescriptorName for all: the agent matches addresses.
        self.assertEqual(values(sock, "Socket", "ListenStream"), ["8093", "127.0.0.1:8094"])
        self.assertEqual(values(sock, "Socket", "FileDescriptorName"), ["konn-agent"])
        self.assertEqual(values(sock, "Socket", "Service"), ["konn-agent.service"])
        self.assertEqual(values(sock, "Socket", "BindIPv6Only"), ["both"])
        self.assertEqual(values(sock, "Install", "WantedBy"), ["sockets.target"])
        self.assertEqual(values(agent, "Service", "Sockets"), ["konn-agent.socket konn-agent-admin.socket"])
        self.assertEqual(values(agent, "Service", "NonBlocking"), ["yes"])
        self.assertEqual(values(agent, "Install", "Also"), ["konn-agent.socket"])
        # The defaults the socket mirrors are the agent's own.
        with open(os.path.join(konnsd.SRCDIR, "src", "agent", "agent-config.c")) as f:
            src = f.read()
        self.assertIn('PORT("health-server-port", health_server_port, 0, "8093"', src)
        self.assertIn('PORT("admin-server-port", admin_server_port, 0, "8094"', src)
        self.assertIn('STRING("admin-bind-address", admin_bind_address, "127.0.0.1"', src)
        # The names the agent takes first.
        with open(os.path.join(konnsd.SRCDIR, "src", "agent", "reverse.c")) as f:
            self.assertIn('"reverse-%s"', f.read())
        with open(os.path.join(konnsd.SRCDIR, "src", "agent", "health.c")) as f:
            self.assertIn("daemon_health_listen(&m->health, ", f.read())
        with open(os.path.join(konnsd.SRCDIR, "src", "shared", "admin.c")) as f:
            src = f.read()
        for fdname in ("health", "admin"):
            self.assertIn('daemon_listen_http(e, "%s"' % fdname, src)

    def test_service_settings(self):
        for name, daemon, user in (("konn-server.service", "konn-server", "konn-server"),
                                   ("konn-agent.service", "konn-agent", "konn-agent")):
            u = self.units[name]
            with self.subTest(unit=name):
                self.assertEqual(values(u, "Service", "Type"), ["notify"])
                self.assertEqual(values(u, "Service", "NotifyAccess"), ["main"])
                self.assertEqual(values(u, "Service", "ExecStart"), ["/usr/sbin/" + daemon])
                # --check-config first, so that a broken file fails the reload before the signal is sent.
                self.assertEqual(values(u, "Service", "ExecReload"),
                                 ["/usr/sbin/%s --check-config" % daemon, "/bin/kill -HUP $MAINPID"])
                self.assertEqual(values(u, "Service", "Restart"), ["on-failure"])
                self.assertEqual(values(u, "Service", "User"), [user])
                self.assertEqual(values(u, "Service", "LimitNOFILE"), ["1048576"])
                self.assertEqual(values(u, "Service", "Environment"), ["GLIBC_TUNABLES=glibc.malloc.tcache_count=0"])
                self.assertEqual(values(u, "Service", "CapabilityBoundingSet"), [""])
                self.assertEqual(values(u, "Service", "RestrictAddressFamilies"), ["AF_UNIX AF_INET AF_INET6"])
                self.assertEqual(values(u, "Service", "IPAddressDeny"), [])
                self.assertRegex(values(u, "Service", "WatchdogSec")[0], r"^[0-9]+s$")
        # The agent drains for up to drain-timeout (30s by default) on SIGTERM: the stop timeout must allow it.
        self.assertEqual(values(self.units["konn-agent.service"], "Service", "TimeoutStopSec"), ["60s"])

    def test_sysusers_and_tmpfiles(self):
        root = os.path.join(self.tmp, "sysroot")
        os.makedirs(os.path.join(root, "etc"))
        r = run(["systemd-sysusers", "--root=" + root, os.path.join(SYSTEMD_DIR, "konn.sysusers")])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(root, "etc", "passwd")) as f:
            users = {ln.split(":")[0]: ln.rstrip("\n").split(":") for ln in f}
        with open(os.path.join(root, "etc", "group")) as f:
            groups = {ln.split(":")[0]: ln.rstrip("\n").split(":") for ln in f}
        for u in ("konn-server", "konn-agent"):
            self.assertIn(u, users)
            self.assertLess(int(users[u][2]), 1000, "system user")
            self.assertEqual(users[u][6], "/usr/sbin/nologin")
            self.assertIn(u, groups)
        self.assertIn("konn-frontend", groups)
        self.assertIn("konn-admin", groups)

        r = run(["systemd-tmpfiles", "--root=" + root, "--create", os.path.join(SYSTEMD_DIR, "konn.tmpfiles")])
        self.assertEqual(r.returncode, 0, r.stderr)
        st = os.stat(os.path.join(root, "run", "konn"))
        self.assertEqual(oct(st.st_mode & 0o7777), oct(0o2751))
        self.assertEqual(st.st_uid, int(users["konn-server"][2]))
        self.assertEqual(st.st_gid, int(groups["konn-frontend"][2]))


if __name__ == "__main__":
    konnsd.konntest.main()
