# SPDX-License-Identifier: Apache-2.0
"""The kube-apiserver harness itself (tests/kube/kubeapi.py) against the real binaries: the API server comes up,
TokenRequest gives a token that TokenReview accepts with the expected username and audience (and refuses for
another audience), a Lease can be created, conflicts on a stale resourceVersion, and the egress selector
configuration is accepted. Skips with the reason where kube-apiserver, etcd or kubectl is absent."""

import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kubeapi  # noqa: E402
import konntest as kt  # noqa: E402

REASON = kubeapi.skip_reason()
AUDIENCE = "system:konnectivity-server"


@unittest.skipIf(REASON, REASON or "")
class KubeAPIHarness(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.api = kubeapi.KubeAPI(egress=("HTTPConnect", os.path.join(kt.session_dir(), "konn-server.sock")))
        try:
            cls.api.start()
        except Exception:
            cls.api.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.api.stop()

    def review(self, token, audiences):
        status, obj = self.api.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences}})
        self.assertEqual(status, 201, obj)
        return obj["status"]

    def test_readyz_and_version(self):
        status, body = self.api.request("GET", "/readyz", raw=True)
        self.assertEqual((status, body), (200, b"ok"))
        status, obj = self.api.request("GET", "/version")
        self.assertEqual(status, 200)
        self.assertEqual(obj["gitVersion"].split("-")[0], "v1.26.4")

    def test_token_review(self):
        token = self.api.create_token("konn-agent", "kube-system", AUDIENCE)
        self.assertEqual(token.count("."), 2, "a JWT has three parts")
        st = self.review(token, [AUDIENCE])
        self.assertTrue(st["authenticated"], st)
        self.assertEqual(st["user"]["username"], "system:serviceaccount:kube-system:konn-agent")
        self.assertEqual(st["audiences"], [AUDIENCE])
        st = self.review(token, ["some-other-audience"])
        self.assertFalse(st.get("authenticated", False), st)
        self.assertIn("audience", st.get("error", ""))

    def test_lease_conflict(self):
        self.api.ensure_namespace("konn-test")
        path = "/apis/coordination.k8s.io/v1/namespaces/konn-test/leases"
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "harness", "labels": {"k8s-app": "konnectivity-server"}},
                 "spec": {"holderIdentity": "harness", "leaseDurationSeconds": 30}}
        status, created = self.api.request("POST", path, lease)
        self.assertEqual(status, 201, created)
        rv = created["metadata"]["resourceVersion"]
        created["spec"]["leaseDurationSeconds"] = 31
        status, updated = self.api.request("PUT", path + "/harness", created)
        self.assertEqual(status, 200, updated)
        self.assertNotEqual(updated["metadata"]["resourceVersion"], rv)
        created["metadata"]["resourceVersion"] = rv      # stale now
        status, obj = self.api.request("PUT", path + "/harness", created)
        self.assertEqual(status, 409, obj)
        status, obj = self.api.request("DELETE", path + "/harness", {
            "kind": "DeleteOptions", "apiVersion": "v1",
            "preconditions": {"resourceVersion": updated["metadata"]["resourceVersion"]}})
        self.assertEqual(status, 200, obj)
        r = self.api.kubectl("get", "leases", "-n", "konn-test", "-o", "name")
        self.assertEqual(r.stdout.strip(), "")

    def test_egress_selector_in_use(self):
        """kubectl logs of a Pod on a Node is dialled through the egress selector: with nothing listening on the
        configured Unix socket, the error names that socket."""
        port = kt.free_port()
        self.api.create_node("harness-node", "127.0.0.1", port)
        self.api.create_pod("harness-pod", "konn-test", "harness-node")
        r = self.api.kubectl("logs", "-n", "konn-test", "harness-pod", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(self.api.egress[1], r.stderr)


if __name__ == "__main__":
    kt.main()
