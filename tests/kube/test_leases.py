#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Leases (protocol.md §3.4, §10) against the fake API server (tests/kube/fakeapi.py): the server's lease controller
creates and renews its Lease (re-reading it after a 409 conflict), garbage-collects expired Leases matching its
labels with a resourceVersion precondition (a Lease renewed meanwhile survives the 409), leaves other labels alone,
deletes its own Lease on graceful stop, and counts the §9.2 lease metrics; the agent counts valid Leases of two
servers, drops the count when a server stops, keeps the last good count when listing fails, and applies
--server-count-source=default|max."""

import os
import re
import signal
import sys
import time
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakeapi  # noqa: E402
import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402

LABELS = {"k8s-app": "konnectivity-server"}


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=T(5)) as r:
        return r.read().decode()


def metric(text, name, **labels):
    """The value of one sample (None when absent)."""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    pat = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" (\S+)$"
    for line in text.splitlines():
        m = re.match(pat, line)
        if m:
            return float(m.group(1))
    return None


class LeaseTestCase(kt.KonnTestCase):
    def setUp(self):
        super().setUp()
        self.api = self.track(fakeapi.FakeAPI())
        self.kubeconfig = self.api.write_kubeconfig(os.path.join(self.dir, "kubeconfig"))

    def start_lease_server(self, server_id, extra=()):
        port = kt.free_port()
        s = self.start_server(server_id=server_id, name="server-" + server_id, extra=[
            "--enable-lease-controller", "--lease-renew-interval=500ms", "--kubeconfig=" + self.kubeconfig,
            "--health-port=%d" % port, "--health-bind-address=127.0.0.1"] + list(extra))
        s.health_port = port
        s.agent_port_ = self.agent_port
        return s

    def start_counting_agent(self, agent_id, server, extra=()):
        port = kt.free_port()
        a = self.start_agent(agent_id=agent_id, server=server, port=server.agent_port_, server_id=server.name[7:],
                             extra=["--count-server-leases", "--lease-count-interval=300ms",
                                    "--kubeconfig=" + self.kubeconfig, "--health-server-port=%d" % port,
                                    "--health-server-host=127.0.0.1"] + list(extra))
        a.health_port = port
        return a

    def wait_metric(self, daemon, name, value, timeout=10, **labels):
        self.wait_until(lambda: metric(scrape(daemon.health_port), name, **labels) == value, timeout,
                        "%s%s == %s on %s" % (name, labels, value, daemon.name))


class TestServerLeaseController(LeaseTestCase):

    def test_create_renew_conflict_and_delete_on_stop(self):
        s = self.start_lease_server("srv1")
        name = "konnectivity-proxy-server-srv1"
        self.wait_until(lambda: self.api.lease(name), 10, "the lease to be created")
        s.wait_for(r"^Lease controller: holding lease '%s' in namespace 'kube-system' \(labels "
                   r"k8s-app=konnectivity-server\)\.$" % name)
        lease = self.api.lease(name)
        self.assertEqual(lease["metadata"]["labels"], LABELS)
        self.assertEqual(lease["metadata"]["namespace"], "kube-system")
        self.assertEqual(lease["spec"]["holderIdentity"], "srv1")
        self.assertEqual(lease["spec"]["leaseDurationSeconds"], 30)
        acquired = lease["spec"]["acquireTime"]
        first = fakeapi.parse_time(lease["spec"]["renewTime"])
        self.assertLess(abs(first - time.time()), 5)
        # renewed: renewTime moves, the resourceVersion changes, acquireTime stays
        rv = lease["metadata"]["resourceVersion"]
        self.wait_until(lambda: fakeapi.parse_time(self.api.lease(name)["spec"]["renewTime"]) > first, 10,
                        "a renewal")
        later = self.api.lease(name)
        self.assertNotEqual(later["metadata"]["resourceVersion"], rv)
        self.assertEqual(later["spec"]["acquireTime"], acquired)
        # someone else writes the object: the next update conflicts (409), the controller reads it and renews
        self.api.put_lease(name, holder="srv1", renew=time.time() - 1000)
        bumped = self.api.lease(name)["metadata"]["resourceVersion"]
        gets_before = self.api.count("GET", fakeapi.LEASES + "kube-system/leases/" + name)
        self.wait_until(lambda: fakeapi.parse_time(self.api.lease(name)["spec"]["renewTime"]) > time.time() - 100,
                        10, "a renewal after the conflict")
        self.assertNotEqual(self.api.lease(name)["metadata"]["resourceVersion"], bumped)
        self.assertGreater(self.api.count("GET", fakeapi.LEASES + "kube-system/leases/" + name), gets_before)
        # graceful stop deletes our lease
        os.kill(s.pid, signal.SIGTERM)
        s.wait_for(r"^Lease controller: deleted our lease '%s'\.$" % name, timeout=10, allow_exit=True)
        self.assertEqual(s.wait_exit(T(10)), 0)
        self.assertIsNone(self.api.lease(name))

    def test_gc_with_precondition(self):
        now = time.time()
        old_rv = self.api.put_lease("konnectivity-proxy-server-old", holder="old", renew=now - 120)
        self.api.put_lease("konnectivity-proxy-server-alive", holder="alive", renew=now + 3600)
        self.api.put_lease("other-app-expired", holder="x", renew=now - 120, labels={"k8s-app": "other"})
        self.api.put_lease("konnectivity-proxy-server-racy", holder="racy", renew=now - 120)

        def renew_racy_first(ns, name):
            if name == "konnectivity-proxy-server-racy":  # renewed by its server just before our delete lands
                self.api.put_lease(name, holder="racy", renew=time.time())
        self.api.on_delete = renew_racy_first
        s = self.start_lease_server("srv1")
        s.wait_for(r"^Lease controller: deleted expired lease 'konnectivity-proxy-server-old'\.$", timeout=10)
        s.wait_for(r"^Lease controller: lease 'konnectivity-proxy-server-racy' was renewed meanwhile; kept\.$",
                   timeout=10)
        self.assertEqual(self.api.lease_names(), ["konnectivity-proxy-server-alive", "konnectivity-proxy-server-racy",
                                                  "konnectivity-proxy-server-srv1", "other-app-expired"])
        deletes = [(p, b) for m, p, _, b in self.api.requests if m == "DELETE"]
        old = [b for p, b in deletes if p.endswith("/konnectivity-proxy-server-old")]
        self.assertEqual(old[0], {"kind": "DeleteOptions", "apiVersion": "v1",
                                  "preconditions": {"resourceVersion": old_rv}})
        self.assertFalse(any(p.endswith("/other-app-expired") or p.endswith("/konnectivity-proxy-server-alive")
                             for p, _ in deletes))
        lists = [p for m, p, _, _ in self.api.requests if m == "GET" and "labelSelector=" in p]
        self.assertEqual(lists[0], fakeapi.LEASES + "kube-system/leases?labelSelector=k8s-app%3Dkonnectivity-server")
        text = scrape(s.health_port)
        pfx = "konnectivity_network_proxy_server_"
        self.assertEqual(metric(text, pfx + "culled_leases_count"), 1)
        self.assertEqual(metric(text, pfx + "lease_delete_total", http_status_code="200", reason=""), 1)
        self.assertEqual(metric(text, pfx + "lease_delete_total", http_status_code="409", reason="Conflict"), 1)
        self.assertGreaterEqual(metric(text, pfx + "lease_list_total", http_status_code="200", reason=""), 1)
        self.assertGreaterEqual(metric(text, pfx + "lease_list_latency_seconds_count", http_status_code="200"), 1)
        self.assertGreaterEqual(metric(text, pfx + "lease_delete_latency_seconds_count", http_status_code="200"), 1)
        self.assertIn("# TYPE %sculled_leases_count counter" % pfx, text)

    def test_api_errors_keep_serving(self):
        self.api.fail = 500
        s = self.start_lease_server("srv1")
        s.wait_for(r"^Lease controller: reading our lease failed: HTTP 500: injected failure$", prio_max=4)
        self.start_agent(server=s)  # the tunnel path does not depend on the API server
        echo = self.track(kt.EchoServer())
        self.assert_echo(self.open_tunnel(echo.addr), b"leases are not in the data path")
        self.api.fail = None
        s.wait_for(r"^Lease controller: lease 'konnectivity-proxy-server-srv1' renewed again\.$", timeout=10)
        self.assertIsNotNone(self.api.lease("konnectivity-proxy-server-srv1"))


class TestAgentLeaseCount(LeaseTestCase):

    def test_two_servers_counted_then_one_stops(self):
        a_srv = self.start_lease_server("srv-a")
        b_srv = self.start_lease_server("srv-b")
        # expired: never counted (and srv-a's garbage collection may delete it any time)
        self.api.put_lease("konnectivity-proxy-server-dead", holder="dead", renew=time.time() - 300)
        self.wait_until(lambda: {"konnectivity-proxy-server-srv-a", "konnectivity-proxy-server-srv-b"}
                        <= set(self.api.lease_names()), 10, "both servers' leases")
        agent = self.start_counting_agent("node1", a_srv)
        self.wait_metric(agent, "konnectivity_network_proxy_agent_known_server_count", 2)
        agent.wait_for(r"^Server count is now 2 \(2 valid leases\)\.$")
        # the sync loop aims at 2 servers although srv-a's servercount says 1: it keeps trying (duplicates)
        agent.wait_for(r"^Already connected to server 'srv-a', closing the duplicate connection\.$", timeout=10)
        text = scrape(agent.health_port)
        self.assertGreaterEqual(metric(text, "konnectivity_network_proxy_agent_lease_lists_total",
                                       http_response_code="200", reason=""), 1)
        self.assertGreaterEqual(metric(text, "konnectivity_network_proxy_agent_lease_list_latency_seconds_count",
                                       http_response_code="200"), 1)
        # lease_watches_total is registered but never incremented (as upstream), so, like a Go CounterVec without
        # children, it is not rendered
        self.assertNotIn("lease_watches_total", text)
        # srv-b stops gracefully: its lease is deleted and the count drops
        since = agent.mark()
        os.kill(b_srv.pid, signal.SIGTERM)
        self.assertEqual(b_srv.wait_exit(10), 0)
        self.assertNotIn("konnectivity-proxy-server-srv-b", self.api.lease_names())
        self.wait_metric(agent, "konnectivity_network_proxy_agent_known_server_count", 1)
        agent.wait_for(r"^Server count is now 1 \(1 valid lease\)\.$", since=since)

    def test_list_errors_keep_last_count(self):
        srv = self.start_lease_server("srv-a")
        self.api.put_lease("konnectivity-proxy-server-x", holder="x", renew=time.time() + 3600)
        agent = self.start_counting_agent("node1", srv)
        self.wait_metric(agent, "konnectivity_network_proxy_agent_known_server_count", 2)
        self.api.fail, self.api.fail_paths = 500, (fakeapi.LEASES,)
        agent.wait_for(r"^Listing server leases failed, keeping the last count \(2\): HTTP 500: injected failure$",
                       prio_max=4, timeout=10)
        self.wait_until(lambda: (metric(scrape(agent.health_port), "konnectivity_network_proxy_agent_lease_lists_total",
                                        http_response_code="500", reason="error") or 0) >= 2, 10, "two failed lists")
        self.assertEqual(metric(scrape(agent.health_port), "konnectivity_network_proxy_agent_known_server_count"), 2)
        self.api.fail = None
        agent.wait_for(r"^Listing server leases works again\.$", timeout=10)

    def test_server_count_source(self):
        srv = self.start_lease_server("srv-a", extra=["--server-count=3"])
        self.wait_until(lambda: self.api.lease("konnectivity-proxy-server-srv-a"), 10, "the lease")
        default = self.start_counting_agent("dflt", srv)
        mx = self.start_counting_agent("max", srv, extra=["--server-count-source=max"])
        self.wait_metric(default, "konnectivity_network_proxy_agent_known_server_count", 1)
        self.wait_metric(mx, "konnectivity_network_proxy_agent_known_server_count", 3)
        default.wait_for(r"^Connected to server 'srv-a' at 127\.0\.0\.1:\d+ \(1 of 1 servers\)\.$")


class TestLeaseConfig(LeaseTestCase):

    def test_check_config(self):
        import subprocess
        base = [kt.AGENT_BIN, "--config=" + self.empty_conf, "--check-config", "--ca-cert=" + kt.cert("ca.crt")]
        r = subprocess.run(base + ["--count-server-leases", "--kubeconfig=" + self.kubeconfig,
                                   "--lease-label=app=x"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=T(10), env=kt.clean_env())
        self.assertEqual(r.returncode, 0, r.stdout)
        r = subprocess.run(base + ["--count-server-leases", "--kubeconfig=/nonexistent/kc"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=T(10), env=kt.clean_env())
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"kubeconfig /nonexistent/kc: cannot read: No such file or directory", r.stdout)
        r = subprocess.run(base + ["--server-count-source=min"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=T(10), env=kt.clean_env())
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"--server-count-source", r.stdout)
        sbase = [kt.SERVER_BIN, "--config=" + self.empty_conf, "--check-config", "--uds-name=" + self.sock_path,
                 "--server-port=0", "--cluster-cert=" + kt.cert("server.crt"), "--cluster-key=" + kt.cert("server.key"),
                 "--cluster-ca-cert=" + kt.cert("ca.crt"), "--enable-lease-controller"]
        r = subprocess.run(sbase + ["--kubeconfig=" + self.kubeconfig], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=T(10), env=kt.clean_env())
        self.assertEqual(r.returncode, 0, r.stdout)
        r = subprocess.run(sbase + ["--kubeconfig=" + self.kubeconfig, "--lease-label=a=b,"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=T(10), env=kt.clean_env())
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"--lease-label: 'a=b,' is not a list of labels k=v,k=v", r.stdout)


if __name__ == "__main__":
    kt.main()
