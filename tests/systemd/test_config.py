#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Configuration files as systemd deployments use them (konn.conf(5)).

  * precedence built-in default < main file < drop-ins (lexical order, later wins) < flags, seen through
    --check-config (a cross-field error quotes the effective value) and through behaviour: the server ID in the
    server's start-up line, the agent ID in the server's log, debug lines switched on and off by log-level;
  * every error class (unknown key, wrong type, out of range, syntax error, bad enum/duration, bad flag) with
    its exact "<3>FILE:LINE: ..." line and exit code 1, in the main file and in a drop-in, for both daemons;
  * which drop-ins are read (".conf" regular files not starting with a dot);
  * the shipped example configs etc/konn/*.conf: every key of --help is there once, commented out, with the
    default --help shows; they pass --check-config as shipped and with every line uncommented, once a drop-in
    fills the required keys.
"""

import os
import re
import subprocess
import unittest

import konnsd
import konntest
from konntest import T

EXAMPLES = os.path.join(konnsd.SRCDIR, "etc", "konn")
SETTING_RE = re.compile(r"^#([a-z][a-z0-9-]*) = (.*);$")


def check_config(binary, args, env=None):
    r = subprocess.run([binary] + list(args) + ["--check-config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=konntest.clean_env(env), timeout=T(30))
    # stderr is a pipe: "auto" logs logfmt lines; compared here in the "<N>message" form.
    return r.returncode, r.stdout.decode(errors="replace"), konntest.logfmt_to_prefixed(r.stderr.decode(errors="replace"))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def help_keys(binary):
    """{key: default text or None} of every option --help lists (program options excluded)."""
    out = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, timeout=T(30), check=True).stdout.decode()
    entries, cur, section = {}, None, None
    for line in out.splitlines():
        if line and not line.startswith(" "):
            section = line
            cur = None
            continue
        if section == "Program options:":
            continue
        m = re.match(r"^  --([a-z0-9-]+)(\[?=\S*)?\s*(.*)$", line)
        if m:
            cur = m.group(1)
            entries[cur] = m.group(3)
        elif cur and line.strip():
            entries[cur] += " " + line.strip()
    out = {}
    for k, text in entries.items():
        m = re.search(r"\(default: ([^ )]*)\)$", text)
        out[k] = m.group(1) if m else None
    return out


def libconfig_value_text(v):
    """The example's value written the way --help shows defaults."""
    if v.startswith('"'):
        return v[1:-1]
    if v.startswith("["):
        items = re.findall(r'"([^"]*)"', v)
        return "[]" if not items else ",".join(items)
    return v


class Config(konnsd.SdTestCase):

    # -- helpers -----------------------------------------------------------------------------------------------

    def server_required(self):
        return ('uds-name = "%s";\nserver-port = 0;\ncluster-cert = "%s";\ncluster-key = "%s";\n'
                'cluster-ca-cert = "%s";\n' % (os.path.join(self.dir, "s.sock"), konntest.cert("server.crt"),
                                               konntest.cert("server.key"), konntest.cert("ca.crt")))

    def agent_required(self):
        return ('ca-cert = "%s";\nagent-cert = "%s";\nagent-key = "%s";\n'
                % (konntest.cert("ca.crt"), konntest.cert("agent.crt"), konntest.cert("agent.key")))

    def run_server(self, conf, flags=(), env=None, name="server"):
        """konn-server with --config=conf, the test's ports and certificates, and only `flags` on top."""
        self.agent_port = konntest.free_port()
        argv = [konnsd.SERVER_BIN, "--config=" + conf, "--mode=http-connect", "--uds-name=" + self.sock_path,
                "--server-port=0", "--agent-port=%d" % self.agent_port, "--agent-bind-address=127.0.0.1",
                "--health-port=0", "--admin-port=0", "--log-target=stderr-fields"] + list(flags)
        d = self.start_env_daemon(name, argv, env=env)
        d.wait_for(MESSAGE_ID=konntest.MSG_STARTED, timeout=10)
        return d

    # -- precedence --------------------------------------------------------------------------------------------

    def test_precedence_through_check_config(self):
        main = os.path.join(self.dir, "s.conf")
        dropins = main + ".d"
        base = ["--config=" + main]

        def expect_port(port, flags=()):
            self.assertEqual(check_config(konnsd.SERVER_BIN, base + list(flags)),
                             (1, "", "<3>--server-port must be 0 when --uds-name is set (got %d)\n" % port))

        write(main, self.server_required().replace("server-port = 0;\n", ""))
        expect_port(8090)                                   # built-in default
        write(main, self.server_required().replace("server-port = 0;", "server-port = 1111;"))
        expect_port(1111)                                   # main file beats the default
        # "10-z.conf" sorts before "9-a.conf" (strcmp, not numeric): 9-a is read last and wins. Written in the
        # opposite order, so that directory order cannot pass for lexical order.
        write(os.path.join(dropins, "9-a.conf"), "server-port = 3333;\n")
        write(os.path.join(dropins, "10-z.conf"), "server-port = 2222;\n")
        expect_port(3333)
        expect_port(4444, ["--server-port=4444"])          # flags beat everything
        self.assertEqual(check_config(konnsd.SERVER_BIN, base + ["--server-port=0"]),
                         (0, "", "<6>Configuration is valid.\n"))
        os.unlink(os.path.join(dropins, "9-a.conf"))
        expect_port(2222)

    def test_precedence_of_server_id(self):
        main = write(os.path.join(self.dir, "s.conf"), self.server_required())
        dropins = main + ".d"

        def started_id(flags=(), env=None):
            d = self.run_server(main, flags, env=env, name="server-%d" % len(self.daemons))
            line = d.find(MESSAGE_ID=konntest.MSG_STARTED)[0]
            self.assertEqual(self.stop_daemon(d), 0)
            self.assertIn("(id '%s')" % line.fields["KONN_SERVER_ID"], line.message)
            return line.fields["KONN_SERVER_ID"]

        self.assertRegex(started_id(), r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
        self.assertEqual(started_id(env={"PROXY_SERVER_ID": "from-env"}), "from-env")
        write(main, self.server_required() + 'server-id = "from-file";\n')
        self.assertEqual(started_id(env={"PROXY_SERVER_ID": "from-env"}), "from-file")
        write(os.path.join(dropins, "20-b.conf"), 'server-id = "from-20-b";\n')
        write(os.path.join(dropins, "10-a.conf"), 'server-id = "from-10-a";\n')
        self.assertEqual(started_id(), "from-20-b")
        self.assertEqual(started_id(["--server-id=from-flag"]), "from-flag")

    def test_agent_id_from_dropin_reaches_the_server(self):
        self.sock_path = os.path.join(self.dir, "s.sock")
        server = self.start_server(server_id="srv1")
        main = write(os.path.join(self.dir, "a.conf"), self.agent_required() + 'agent-id = "from-file";\n')
        write(os.path.join(main + ".d", "50-id.conf"), 'agent-id = "from-dropin";\n')
        argv = [konnsd.AGENT_BIN, "--config=" + main, "--proxy-server-port=%d" % self.agent_port,
                "--health-server-port=0", "--admin-server-port=0", "--log-target=stderr-fields"]
        self.start_env_daemon("agent", argv)
        server.wait_for(r"^Agent 'from-dropin' connected", timeout=10, KONN_AGENT_ID="from-dropin")
        self.assertEqual(server.find(r"^Agent 'from-file'"), [])

    def test_log_level_from_file_dropin_and_flag(self):
        self.sock_path = os.path.join(self.dir, "s.sock")
        main = write(os.path.join(self.dir, "s.conf"), self.server_required() + 'log-level = "debug";\n')
        dropin = os.path.join(main + ".d", "50-quiet.conf")

        def debug_lines_on_agent_connect(flags=()):
            s = self.run_server(main, list(flags) + ["--server-id=srv1"],
                                name="server-%d" % len(self.daemons))
            a = self.start_agent(server=s, name="agent-%d" % len(self.daemons))
            self.assertEqual(self.stop_daemon(a), 0)
            self.assertEqual(self.stop_daemon(s), 0)
            self.assertTrue(s.find(r"^Agent 'node1' connected"))
            return [ll for ll in s.lines() if ll.prio == 7]

        self.assertNotEqual(debug_lines_on_agent_connect(), [])          # main file: debug
        write(dropin, 'log-level = "info";\n')
        self.assertEqual(debug_lines_on_agent_connect(), [])             # drop-in: info
        self.assertNotEqual(debug_lines_on_agent_connect(["--log-level=debug"]), [])  # flag: debug again

    # -- errors --------------------------------------------------------------------------------------------------

    ERRORS = [
        # (label, text placed at line 3, server message, agent message)
        ("unknown key", "bogus-key = 1;",
         "unknown key 'bogus-key'", "unknown key 'bogus-key'"),
        ("wrong type", 'agent-port = "8091";',
         "key 'agent-port': expected an integer, got a string", None),
        ("wrong type", 'proxy-server-port = "8091";',
         None, "key 'proxy-server-port': expected an integer, got a string"),
        ("wrong type", 'sync-forever = "yes";',
         None, "key 'sync-forever': expected a boolean, got a string"),
        ("wrong type (duration without unit)", "graceful-shutdown-timeout = 5;",
         "key 'graceful-shutdown-timeout': expected a string with a duration such as \"10s\", got an integer",
         None),
        ("out of range", "agent-port = 70000;",
         "key 'agent-port': value 70000 out of range 0..65535", None),
        ("out of range", "proxy-server-port = 0;",
         None, "key 'proxy-server-port': value 0 out of range 1..65535"),
        ("out of range (duration)", 'drain-timeout = "2h";',
         None, "key 'drain-timeout': value 2h out of range 0s..1h0m0s"),
        ("bad value", 'mode = "tcp";',
         "key 'mode': invalid value 'tcp': must be one of: grpc, http-connect", None),
        ("syntax error", "agent-port = ;", "syntax error", "syntax error"),
        ("syntax error", 'agent-id "no-equals-sign";', None, "syntax error"),
    ]

    def test_error_classes_name_file_and_line(self):
        for binary, required, col in ((konnsd.SERVER_BIN, self.server_required(), 2),
                                      (konnsd.AGENT_BIN, self.agent_required(), 3)):
            for label, text, *msgs in self.ERRORS:
                msg = msgs[col - 2]
                if msg is None:
                    continue
                body = "# line 1\n\n" + text + "\n"
                name = os.path.basename(binary)
                with self.subTest(daemon=name, error=label, where="main file", text=text):
                    main = write(os.path.join(self.dir, "%s-main.conf" % name), body + required)
                    self.assertEqual(check_config(binary, ["--config=" + main]),
                                     (1, "", "<3>%s:3: %s\n" % (main, msg)))
                with self.subTest(daemon=name, error=label, where="drop-in", text=text):
                    main = write(os.path.join(self.dir, "%s-ok.conf" % name), required)
                    dropin = write(os.path.join(main + ".d", "50-bad.conf"), body)
                    write(os.path.join(main + ".d", "60-good.conf"), "# fine\n")
                    self.assertEqual(check_config(binary, ["--config=" + main]),
                                     (1, "", "<3>%s:3: %s\n" % (dropin, msg)))
                    os.unlink(dropin)

    def test_flag_errors(self):
        main = write(os.path.join(self.dir, "s.conf"), self.server_required())
        for flags, msg in ((["--agent-port=70000"], "flag --agent-port: value 70000 out of range 0..65535"),
                           (["--bogus-flag=1"], "unknown flag: --bogus-flag"),
                           (["--agent-port=x"], "invalid value 'x' for flag --agent-port: not a number")):
            with self.subTest(flags=flags):
                self.assertEqual(check_config(konnsd.SERVER_BIN, ["--config=" + main] + flags),
                                 (1, "", "<3>%s\n" % msg))

    def test_missing_config_named_by_flag(self):
        path = os.path.join(self.dir, "nonexistent.conf")
        self.assertEqual(check_config(konnsd.AGENT_BIN, ["--config=" + path]),
                         (1, "", "<3>%s: No such file or directory\n" % path))

    def test_only_conf_files_not_starting_with_a_dot_are_read(self):
        main = write(os.path.join(self.dir, "a.conf"), self.agent_required())
        d = main + ".d"
        for junk in (".hidden.conf", "50-local.conf.dpkg-old", "50-local.conf~", "README"):
            write(os.path.join(d, junk), "this is not libconfig\n")
        os.makedirs(os.path.join(d, "60-dir.conf"))
        self.assertEqual(check_config(konnsd.AGENT_BIN, ["--config=" + main]),
                         (0, "", "<6>Configuration is valid.\n"))
        # The same junk under a name that is read is an error, so the files above were really skipped.
        bad = write(os.path.join(d, "70-read.conf"), "this is not libconfig\n")
        rc, out, err = check_config(konnsd.AGENT_BIN, ["--config=" + main])
        self.assertEqual((rc, out), (1, ""))
        self.assertTrue(err.startswith("<3>%s:1: " % bad), err)

    # -- the shipped examples ---------------------------------------------------------------------------------

    def example(self, name):
        with open(os.path.join(EXAMPLES, name)) as f:
            return f.read()

    def test_examples_list_every_key_with_its_default(self):
        # Keys without a single-word default in --help whose example shows the effective value instead.
        shown_effective = {"log-level": "info"}
        for name, binary in (("konn-server.conf", konnsd.SERVER_BIN), ("konn-agent.conf", konnsd.AGENT_BIN)):
            keys = help_keys(binary)
            settings = {}
            for line in self.example(name).splitlines():
                m = SETTING_RE.match(line)
                if m:
                    with self.subTest(example=name, key=m.group(1)):
                        self.assertNotIn(m.group(1), settings, "listed twice")
                    settings[m.group(1)] = libconfig_value_text(m.group(2))
                else:
                    # Everything else is prose or blank: no active setting in a shipped example.
                    with self.subTest(example=name, line=line):
                        self.assertTrue(line == "" or line.startswith("# ") or line == "#", line)
            with self.subTest(example=name):
                self.assertEqual(sorted(settings), sorted(keys))
            for k, default in keys.items():
                with self.subTest(example=name, key=k):
                    self.assertEqual(settings.get(k), default if default is not None else shown_effective.get(k, ""))

    def test_examples_pass_check_config_once_required_keys_are_filled(self):
        for name, binary, required, missing in (
                ("konn-server.conf", konnsd.SERVER_BIN, self.server_required(),
                 "--server-cert is required when --uds-name is not set"),
                ("konn-agent.conf", konnsd.AGENT_BIN, self.agent_required(), "--ca-cert is required")):
            for variant in ("as shipped", "every setting uncommented"):
                with self.subTest(example=name, variant=variant):
                    text = self.example(name)
                    if variant != "as shipped":
                        text = "\n".join(re.sub(r"^#([a-z][a-z0-9-]*) = ", r"\1 = ", ln)
                                         for ln in text.splitlines()) + "\n"
                    sub = os.path.join(self.dir, variant.replace(" ", "-"))
                    main = write(os.path.join(sub, name), text)
                    self.assertEqual(check_config(binary, ["--config=" + main]), (1, "", "<3>%s\n" % missing))
                    write(os.path.join(main + ".d", "50-required.conf"), required)
                    self.assertEqual(check_config(binary, ["--config=" + main]),
                                     (0, "", "<6>Configuration is valid.\n"))


if __name__ == "__main__":
    konnsd.konntest.main()
