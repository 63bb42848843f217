#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""End to end through the real kube-apiserver: `kubectl logs` → kube-apiserver's egress selector → konn-server's
Unix socket → konn-agent → a stand-in kubelet, for proxyProtocol GRPC and HTTPConnect.

kube-apiserver runs with deploy/kubernetes/control-plane/egress-selector-configuration.yaml (the shipped file,
only udsName and proxyProtocol replaced). The stand-in kubelet is an HTTPS server with a serving certificate from
the cluster CA (kube-apiserver verifies it: --kubelet-certificate-authority) that requires kube-apiserver's
kubelet client certificate, and answers /containerLogs/NS/POD/CONTAINER and /healthz. A Node whose InternalIP is
the kubelet's address and Pods bound to it make `kubectl logs` and node proxy reach it through the tunnel.

Node proxy refuses loopback addresses, so the whole file runs in a private network namespace of its own (lo up,
192.0.2.10/32 on lo; nothing can leave it): etcd, kube-apiserver, both daemons, the kubelet and kubectl all live
there. One kube-apiserver per proxy protocol, shared by that class's tests. Skips with the reason where
kube-apiserver, etcd or kubectl is absent or a network namespace cannot be made (not root)."""

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kubeapi  # noqa: E402
import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402

NODE_IP = "192.0.2.10"
NODE = "konn-node-1"
NS = "konn-e2e"
EGRESS = os.path.join(kubeapi.REPO, "deploy", "kubernetes", "control-plane", "egress-selector-configuration.yaml")

REASON = kubeapi.skip_reason() or kubeapi.private_netns_reason()
if not REASON:
    try:
        kubeapi.enter_private_netns((NODE_IP,))
    except (OSError, subprocess.SubprocessError) as e:
        REASON = "cannot make a private network namespace: %s" % e


class EgressCases:
    """The cases, for each proxy protocol (the subclasses set PROTOCOL and MODE)."""

    PROTOCOL = MODE = None

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="egress-%s." % cls.MODE, dir=kt.session_dir())
        cls.uds = os.path.join(cls.workdir, "konn.sock")
        with open(EGRESS) as f:
            text = f.read()
        text, n1 = re.subn(r"(?m)^(\s*proxyProtocol: )\S+$", r"\g<1>" + cls.PROTOCOL, text)
        text, n2 = re.subn(r"(?m)^(\s*udsName: )\S+$", r"\g<1>" + cls.uds, text)
        assert n1 == n2 == 1, text
        egress = os.path.join(cls.workdir, "egress-selector-configuration.yaml")
        with open(egress, "w") as f:
            f.write(text)
        cls.api = kubeapi.KubeAPI(os.path.join(cls.workdir, "kube"),
                                  extra_args=["--egress-selector-config-file", egress])
        cls.kubelet = None
        try:
            cls.api.start()
            cls.kubelet = cls.api.start_kubelet(NODE, NODE_IP)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.kubelet:
            cls.kubelet.close()
        cls.api.stop()

    def setUp(self):
        super().setUp()
        self.sock_path = self.uds
        self.server = self.start_server(extra=("--mode=" + self.MODE,))
        self.agent = self.start_agent(agent_id=NODE, server=self.server)

    def pod(self, name, body, container="main"):
        self.api.create_pod(name, NS, NODE, container)
        self.kubelet.logs[(NS, name, container)] = body

    def logs(self, name, timeout=120):
        return self.api.kubectl("logs", "-n", NS, name, raw=True, check=False, timeout=timeout)

    def assert_logs(self, name, body):
        r = self.logs(name)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout), len(body))
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), hashlib.sha256(body).hexdigest())

    def test_logs_exact_bytes(self):
        body = kt.Pattern(kt.big(16 * kt.MIB), seed=21).bytes()
        self.pod("big-%s" % self.MODE, body)
        mark = self.server.mark()
        self.assert_logs("big-%s" % self.MODE, body)
        # It went through the tunnel: konn-server logged the dial to the kubelet, the kubelet saw the API
        # server's kubelet client certificate.
        self.server.wait_for(r"%s:%d" % (re.escape(NODE_IP), self.kubelet.port), since=mark, timeout=10,
                             KONN_AGENT_ID=NODE)
        self.assertIn(("/containerLogs/%s/big-%s/main" % (NS, self.MODE), "kube-apiserver-kubelet-client"),
                      self.kubelet.requests)

    def test_concurrent_logs(self):
        n = 16
        bodies = {}
        for i in range(n):
            name = "many-%s-%d" % (self.MODE, i)
            bodies[name] = kt.Pattern(kt.big(512 * 1024) + i * 977, seed=100 + i).bytes()
            self.pod(name, bodies[name])
        results = {}

        def one(name):
            results[name] = self.logs(name)

        threads = [kt.Bg(one, name, name="logs-" + name) for name in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join_result(T(180))
        for name, body in bodies.items():
            r = results[name]
            self.assertEqual(r.returncode, 0, "%s: %s" % (name, r.stderr))
            self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), hashlib.sha256(body).hexdigest(), name)

    def test_agent_killed_and_restarted(self):
        body = kt.Pattern(kt.big(2 * kt.MIB), seed=31).bytes()
        name = "restart-%s" % self.MODE
        self.pod(name, body)
        self.assert_logs(name, body)
        self.agent.kill9()
        self.server.wait_for(r"^Agent '%s' disconnected" % NODE, timeout=10)
        # Without an agent the request fails (promptly, with an error), it does not hang.
        t0 = time.monotonic()
        r = self.logs(name, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertLess(time.monotonic() - t0, T(45))
        self.agent = self.start_agent(agent_id=NODE, server=self.server, name="agent-restarted")
        self.assert_logs(name, body)
        # And several at once again.
        results = [None] * 4
        threads = [kt.Bg(lambda i=i: results.__setitem__(i, self.logs(name)), name="again-%d" % i)
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join_result(T(120))
        for r in results:
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), hashlib.sha256(body).hexdigest())

    def test_node_proxy(self):
        r = self.api.kubectl("get", "--raw", "/api/v1/nodes/%s/proxy/healthz" % NODE)
        self.assertEqual(r.stdout, "ok")
        self.assertEqual(self.kubelet.requests[-1], ("/healthz", "kube-apiserver-kubelet-client"))
        # An unknown path is the kubelet's own 404, carried back through the tunnel.
        r = self.api.kubectl("get", "--raw", "/api/v1/nodes/%s/proxy/no-such-path" % NODE, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(self.kubelet.requests[-1], ("/no-such-path", "kube-apiserver-kubelet-client"))


@unittest.skipIf(REASON, REASON or "")
class TestGRPC(EgressCases, kt.KonnTestCase):
    PROTOCOL, MODE = "GRPC", "grpc"


@unittest.skipIf(REASON, REASON or "")
class TestHTTPConnect(EgressCases, kt.KonnTestCase):
    PROTOCOL, MODE = "HTTPConnect", "http-connect"


if __name__ == "__main__":
    kt.main()
