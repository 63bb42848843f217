#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""konn against the REAL kube-apiserver (tests/kube/kubeapi.py: etcd + kube-apiserver on loopback), set up as the
kubernetes.io "Set up Konnectivity service" guide does it: konn-server runs as the ServiceAccount
kube-system/konnectivity-server (bound to system:auth-delegator for TokenReviews, and to a Role on Leases), agents
present tokens of kube-system/konnectivity-agent with the audience system:konnectivity-server.

- TokenReview: an agent with a token from `kubectl create token` connects and tunnels; a token with another
  audience and a token of another ServiceAccount are refused with the API server's reason.
- Leases: two konn-servers publish their Leases (checked with kubectl), a konn-agent counts 2; one server stops
  gracefully, its Lease disappears and the agent's count drops to 1.
One API server for the whole file. Skips with the reason where kube-apiserver, etcd or kubectl is absent."""

import json
import os
import re
import signal
import sys
import time
import unittest
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kubeapi  # noqa: E402
import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402

REASON = kubeapi.skip_reason()
NS, AGENT_SA, SERVER_SA, AUD = "kube-system", "konnectivity-agent", "konnectivity-server", "system:konnectivity-server"


def known_server_count(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=T(5)) as r:
        m = re.search(r"^konnectivity_network_proxy_agent_known_server_count (\S+)$", r.read().decode(), re.M)
        return float(m.group(1)) if m else None


@unittest.skipIf(REASON, REASON or "")
class TestRealAPIServer(kt.KonnTestCase):
    @classmethod
    def setUpClass(cls):
        cls.api = kubeapi.KubeAPI()
        try:
            cls.api.start()
            cls.api.ensure_service_account(SERVER_SA, NS)
            cls.api.ensure_service_account(AGENT_SA, NS)
            # RBAC as in the kubernetes.io guide (TokenReview through system:auth-delegator), plus Leases
            cls.api.kubectl("create", "clusterrolebinding", "konn-server-auth-delegator",
                            "--clusterrole=system:auth-delegator", "--serviceaccount=%s:%s" % (NS, SERVER_SA))
            cls.api.kubectl("create", "role", "konn-leases", "-n", NS, "--resource=leases.coordination.k8s.io",
                            "--verb=get,list,watch,create,update,delete")
            cls.api.kubectl("create", "rolebinding", "konn-leases", "-n", NS, "--role=konn-leases",
                            "--serviceaccount=%s:%s" % (NS, SERVER_SA), "--serviceaccount=%s:%s" % (NS, AGENT_SA))
            # the daemons authenticate to the API server with their own ServiceAccount tokens
            cls.server_token = cls.api.create_token(SERVER_SA, NS, kubeapi.ISSUER)
            cls.agent_api_token = cls.api.create_token(AGENT_SA, NS, kubeapi.ISSUER)
        except Exception:
            cls.api.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.api.stop()

    def setUp(self):
        super().setUp()
        self.server_kc = self.api.write_kubeconfig(os.path.join(self.dir, "server.kubeconfig"),
                                                   token=self.server_token, user=SERVER_SA)
        self.agent_kc = self.api.write_kubeconfig(os.path.join(self.dir, "agent.kubeconfig"),
                                                  token=self.agent_api_token, user=AGENT_SA)

    def token_file(self, name, token):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write(token + "\n")  # as `kubectl create token > file` writes it
        return p

    def auth_flags(self):
        return ["--agent-namespace=" + NS, "--agent-service-account=" + AGENT_SA, "--authentication-audience=" + AUD,
                "--kubeconfig=" + self.server_kc]

    def test_token_review(self):
        s = self.start_server(extra=self.auth_flags(), drop=("--cluster-ca-cert",))
        good = self.api.create_token(AGENT_SA, NS, AUD)
        a = self.start_agent(agent_id="node1", server=s, cert_name=None,
                             extra=["--service-account-token-path=" + self.token_file("good.token", good)])
        echo = self.track(kt.EchoServer())
        self.assert_echo(self.open_tunnel(echo.addr), b"reviewed by the real kube-apiserver")
        s.wait_for(r"^Agent 'node1' connected \(system:serviceaccount:[^,]+, .*token reviewed\)\.$")
        # wrong audience: the API server refuses the review
        wrong_aud = self.api.create_token(AGENT_SA, NS, "some-other-audience")
        b = self.start_agent(agent_id="wrong-aud", server=s, cert_name=None, wait=False,
                             extra=["--service-account-token-path=" + self.token_file("aud.token", wrong_aud),
                                    "--sync-interval=300ms", "--sync-interval-cap=1s"])
        ll = s.wait_for(r"^Refused agent 'wrong-aud' \(token\): token not authenticated: ", prio_max=4, timeout=15,
                        KONN_AGENT_ID="wrong-aud")
        self.assertIn("audience", ll.fields["KONN_REASON"])
        # a valid token of another ServiceAccount: authenticated by the API server, refused by konn-server
        self.api.ensure_service_account("intruder", "default")
        other = self.api.create_token("intruder", "default", AUD)
        c = self.start_agent(agent_id="intruder", server=s, cert_name=None, wait=False,
                             extra=["--service-account-token-path=" + self.token_file("other.token", other),
                                    "--sync-interval=300ms", "--sync-interval-cap=1s"])
        ll = s.wait_for(r"^Refused agent 'intruder'", prio_max=4, timeout=15)
        self.assertEqual(ll.fields["KONN_REASON"], "token belongs to 'system:serviceaccount:default:intruder', "
                         "expected 'system:serviceaccount:%s:%s'" % (NS, AGENT_SA))
        self.assertEqual(s.find(r"^Agent '(wrong-aud|intruder)' connected"), [])
        # the konn-server's requests went over HTTP/2 (ALPN h2) to the real API server
        self.assertTrue(s.find(r"^Kubernetes API POST https://127\.0\.0\.1:\d+/apis/authentication\.k8s\.io/v1/"
                               r"tokenreviews: HTTP 201 over HTTP/2 in \d+ ms\.$"))
        self.assertTrue(a.alive() and b.alive() and c.alive())

    def test_leases_counted(self):
        servers = []
        for sid in ("konn-a", "konn-b"):
            port = kt.free_port()
            s = self.start_server(server_id=sid, name="server-" + sid, extra=[
                "--enable-lease-controller", "--lease-renew-interval=1s", "--kubeconfig=" + self.server_kc,
                "--health-port=%d" % port, "--health-bind-address=127.0.0.1"])
            s.agent_port_ = self.agent_port
            s.wait_for(r"^Lease controller: holding lease 'konnectivity-proxy-server-%s'" % sid, timeout=15)
            servers.append(s)
        r = self.api.kubectl("get", "leases", "-n", NS, "-l", "k8s-app=konnectivity-server", "-o", "json")
        items = {i["metadata"]["name"]: i for i in json.loads(r.stdout)["items"]}
        self.assertEqual(sorted(items), ["konnectivity-proxy-server-konn-a", "konnectivity-proxy-server-konn-b"])
        self.assertEqual(items["konnectivity-proxy-server-konn-a"]["spec"]["holderIdentity"], "konn-a")
        self.assertEqual(items["konnectivity-proxy-server-konn-a"]["spec"]["leaseDurationSeconds"], 30)
        hp = kt.free_port()
        agent = self.start_agent(agent_id="node1", server=servers[0], port=servers[0].agent_port_,
                                 server_id="konn-a",
                                 extra=["--count-server-leases", "--lease-count-interval=500ms",
                                        "--kubeconfig=" + self.agent_kc, "--health-server-port=%d" % hp,
                                        "--health-server-host=127.0.0.1"])
        self.wait_until(lambda: known_server_count(hp) == 2, 15, "the agent to count 2 servers")
        agent.wait_for(r"^Server count is now 2 \(2 valid leases\)\.$")
        # konn-b stops gracefully: its Lease goes away, the agent's count drops
        os.kill(servers[1].pid, signal.SIGTERM)
        self.assertEqual(servers[1].wait_exit(15), 0)
        r = self.api.kubectl("get", "leases", "-n", NS, "-l", "k8s-app=konnectivity-server", "-o", "name")
        self.assertEqual(r.stdout.split(), ["lease.coordination.k8s.io/konnectivity-proxy-server-konn-a"])
        self.wait_until(lambda: known_server_count(hp) == 1, 15, "the agent to count 1 server")
        self.assertTrue(agent.find(r"^Kubernetes API GET https://127\.0\.0\.1:\d+/apis/coordination\.k8s\.io/v1/"
                                   r"namespaces/kube-system/leases\?labelSelector=k8s-app%3Dkonnectivity-server: "
                                   r"HTTP 200 over HTTP/2"))
        # konn-a renews against the real API server (renewTime moves)
        r1 = self.api.kubectl("get", "lease", "konnectivity-proxy-server-konn-a", "-n", NS, "-o",
                              "jsonpath={.spec.renewTime}").stdout
        time.sleep(T(2.5))
        r2 = self.api.kubectl("get", "lease", "konnectivity-proxy-server-konn-a", "-n", NS, "-o",
                              "jsonpath={.spec.renewTime}").stdout
        self.assertGreater(r2, r1)


if __name__ == "__main__":
    kt.main()
