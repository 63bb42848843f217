#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""deploy/monitoring: every metric the Grafana dashboard and the Prometheus alerting rules name exists in konn's
/metrics output (both daemons scraped on their health ports after a dial, a refused dial and a closed tunnel);
the dashboard is valid JSON with a PromQL target on every panel; `promtool check rules` and `promtool test rules`
pass (skipped with the reason where promtool, from Debian's prometheus package, is absent)."""

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctltest  # noqa: E402
from ctltest import kt  # noqa: E402

MON = os.path.join(kt.SRCDIR, "deploy", "monitoring")
DASHBOARD = os.path.join(MON, "konn-dashboard.json")
RULES = os.path.join(MON, "konn-alerts.yml")
RULE_TESTS = os.path.join(MON, "konn-alerts.test.yml")
# Names PromQL itself provides, not konn.
PROMQL_WORDS = {"sum", "by", "rate", "histogram_quantile", "and", "on", "or", "min_over_time", "changes", "clamp_min",
                "le", "job", "instance", "reason", "without", "max", "min", "count", "avg", "label_values", "up"}
METRIC_RE = re.compile(r"\b((?:konnectivity_network_proxy_(?:server|agent)|process)_[a-z_]+)\b")


def metric_names(exprs):
    names = set()
    for e in exprs:
        names |= set(METRIC_RE.findall(e))
    return names


def dashboard_exprs():
    with open(DASHBOARD) as f:
        d = json.load(f)
    exprs = []
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        targets = p.get("targets", [])
        assert targets and all(t.get("expr") for t in targets), "panel %r has no PromQL target" % p["title"]
        exprs += [t["expr"] for t in targets]
    return exprs


def rule_exprs():
    """The expr: values of konn-alerts.yml (plain or block scalars), read without a YAML library."""
    exprs, block, indent = [], None, 0
    with open(RULES) as f:
        for line in f:
            if block is not None:
                if line.strip() and len(line) - len(line.lstrip()) > indent:
                    block.append(line.strip())
                    continue
                exprs.append(" ".join(block))
                block = None
            m = re.match(r"^(\s*)expr:\s*(.*)$", line)
            if m:
                if m.group(2).strip() in ("|", ">"):
                    block, indent = [], len(m.group(1))
                else:
                    exprs.append(m.group(2).strip())
    if block:
        exprs.append(" ".join(block))
    return exprs


def families(text):
    """Metric family names of a text exposition, with histogram and counter sample suffixes mapped back."""
    fams = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    out = set(fams)
    for f in fams:
        out |= {f + "_bucket", f + "_sum", f + "_count"}
    return out


class Monitoring(ctltest.CtlTestCase):

    def test_every_named_metric_exists(self):
        sp, ap = kt.free_port(), kt.free_port()
        server = self.start_server(extra=("--health-port=%d" % sp, "--health-bind-address=127.0.0.1"),
                                   drop=("--health-port=0",))
        self.start_agent(server=server, extra=("--health-server-port=%d" % ap, "--health-server-host=127.0.0.1"),
                         name="agent")
        echo = self.track(kt.EchoServer())
        refused = self.track(kt.RefusedPort())
        c = self.open_tunnel(echo.addr)
        self.assert_echo(c, b"x")
        c.close()
        c = self.uds_client()
        c.send_connect(refused.addr)
        c.read_to_eof()
        scraped = {}
        for name, port in (("server", sp), ("agent", ap)):
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=kt.T(10)) as r:
                scraped[name] = families(r.read().decode())
        have = scraped["server"] | scraped["agent"]
        for source, exprs in (("dashboard", dashboard_exprs()), ("alert rules", rule_exprs())):
            names = metric_names(exprs)
            self.assertGreater(len(names), 8, source)
            for n in sorted(names):
                with self.subTest(source=source, metric=n):
                    self.assertIn(n, have)
            # process_* come from both daemons.
            for n in sorted(x for x in names if x.startswith("process_")):
                with self.subTest(source=source, metric=n, daemon="both"):
                    self.assertIn(n, scraped["server"])
                    self.assertIn(n, scraped["agent"])
        # The alerts the issue asks for are there.
        with open(RULES) as f:
            alerts = re.findall(r"^\s*- alert: (\S+)", f.read(), re.M)
        for a in ("KonnAgentMissingServers", "KonnServerNoReadyBackends", "KonnServerDialFailures",
                  "KonnAgentDialFailures", "KonnTunnelsPendingTooLong", "KonnProcessRestarts"):
            self.assertIn(a, alerts)

    def test_promtool(self):
        promtool = shutil.which("promtool")
        if not promtool:
            self.skipTest("promtool not installed (Debian package prometheus; tools/install-deps.sh installs it)")
        for argv in (["check", "rules", RULES], ["test", "rules", RULE_TESTS]):
            r = subprocess.run([promtool] + argv, cwd=MON, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=kt.T(120))
            out = r.stdout.decode(errors="replace")
            self.assertEqual(r.returncode, 0, out)
            self.assertIn("SUCCESS", out)


if __name__ == "__main__":
    kt.main()
