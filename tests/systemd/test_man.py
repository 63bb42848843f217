#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The man pages konn-server(8), konn-agent(8) and konn.conf(5), rendered as make renders them (key lists from
tools/man-keys when built, else a sample .TP list): groff reports no warning with -ww, man -l renders them, the
sections the project requires are present, every key of the daemon's --help is documented, and the MESSAGE_IDs
quoted match src/shared/log.h."""

import os
import re
import subprocess
import tempfile
import shutil
import unittest

import konnsd

MAN_DIR = os.path.join(konnsd.SRCDIR, "man")
SECTIONS_8 = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION FILES", "SIGNALS", "SOCKET ACTIVATION",
              "LOGGING", "EXIT STATUS", "FILES", "SEE ALSO"]
SECTIONS_1 = ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "EXIT STATUS", "ENVIRONMENT", "FILES",
              "EXAMPLES", "SEE ALSO"]
SECTIONS_5 = ["NAME", "SYNOPSIS", "DESCRIPTION", "FORMAT", "PRECEDENCE", "DROP-INS", "ERRORS", "SERVER KEYS",
              "AGENT KEYS", "FILES", "SEE ALSO"]


def message_ids():
    with open(os.path.join(konnsd.SRCDIR, "src", "shared", "log.h")) as f:
        return dict(re.findall(r'#define KONN_MESSAGE_([A-Z_]+) "([0-9a-f]{32})"', f.read()))


class ManPages(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        konnsd.require_tools("groff", "man")
        cls.tmp = tempfile.mkdtemp(prefix="konn-man-")
        cls.pages = {}
        for page in konnsd.MAN_PAGES:
            text = konnsd.render_man(os.path.join(MAN_DIR, page + ".in"), konnsd.UNIT_SUBST)
            path = os.path.join(cls.tmp, page)
            with open(path, "w") as f:
                f.write(text)
            cls.pages[page] = (path, text)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_groff_has_no_warnings(self):
        for page, (path, _) in self.pages.items():
            with self.subTest(page=page):
                r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", path], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, timeout=60)
                self.assertEqual((r.returncode, r.stderr.decode()), (0, ""))

    def test_man_renders_the_required_sections(self):
        for page, (path, text) in self.pages.items():
            with self.subTest(page=page):
                self.assertEqual(konnsd.leftover_placeholders(text), [])
                r = subprocess.run(["man", "-l", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0", PAGER="cat"),
                                   timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
                out = re.sub(r".\x08", "", r.stdout.decode())
                headings = re.findall(r"^([A-Z][A-Z .-]+)$", out, re.M)
                want = SECTIONS_5 if page.endswith(".5") else SECTIONS_1 if page.endswith(".1") else SECTIONS_8
                self.assertEqual([h for h in headings if h in want], want)

    def test_every_key_is_documented(self):
        for page, binaries in (("konn-server.8", [konnsd.SERVER_BIN]), ("konn-agent.8", [konnsd.AGENT_BIN]),
                               ("konn.conf.5", [konnsd.SERVER_BIN, konnsd.AGENT_BIN])):
            text = self.pages[page][1]
            if "sample\\-key" in text:
                self.skipTest("tools/man-keys is not built; the key lists are samples")
            for b in binaries:
                out = subprocess.run([b, "--help"], stdout=subprocess.PIPE, timeout=30, check=True).stdout.decode()
                keys = re.findall(r"^  --([a-z0-9-]+)", out, re.M)
                keys = [k for k in keys if k not in ("help", "version", "config", "check-config")]
                self.assertGreater(len(keys), 20)
                for k in keys:
                    with self.subTest(page=page, key=k):
                        self.assertIn(".TP\n\\fB\\-\\-%s\\fR" % k.replace("-", "\\-"), text)

    def test_message_ids_match_log_h(self):
        ids = message_ids()
        self.assertEqual(len(ids), 10)
        quoted = {}
        for page in ("konn-server.8", "konn-agent.8"):
            quoted[page] = set(re.findall(r"\b[0-9a-f]{32}\b", self.pages[page][1]))
            self.assertTrue(quoted[page] <= set(ids.values()), quoted[page] - set(ids.values()))
        server = {"STARTED", "AGENT_CONNECTED", "AGENT_DISCONNECTED", "AGENT_REFUSED", "TUNNEL_OPENED",
                  "TUNNEL_CLOSED", "DIAL_FAILED", "RELOAD"}
        agent = {"STARTED", "SERVER_CONNECTED", "SERVER_DISCONNECTED", "TUNNEL_OPENED", "TUNNEL_CLOSED",
                 "DIAL_FAILED", "RELOAD"}
        self.assertEqual(quoted["konn-server.8"], {ids[k] for k in server})
        self.assertEqual(quoted["konn-agent.8"], {ids[k] for k in agent})


if __name__ == "__main__":
    konnsd.konntest.main()
