#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""deploy/kubernetes against the real kube-apiserver: both kustomizations (token authentication and mtls/) and
both static Pod manifests pass `kubectl apply --dry-run=server --validate=strict` (unknown or misplaced fields
fail), with the objects, flags and ports checked; kube-apiserver starts with the shipped
EgressSelectorConfiguration and dials its socket for `kubectl logs`. Skips with the reason where
kube-apiserver, etcd or kubectl is absent."""

import json
import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kubeapi  # noqa: E402
import konntest as kt  # noqa: E402

REASON = kubeapi.skip_reason()
DEPLOY = os.path.join(kubeapi.REPO, "deploy", "kubernetes")
EGRESS = os.path.join(DEPLOY, "control-plane", "egress-selector-configuration.yaml")
SOCKET = "/etc/kubernetes/konnectivity-server/konnectivity-server.socket"
AUDIENCE = "system:konnectivity-server"


def by_kind(items):
    return {(o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] == "ConfigMap"
             else o["metadata"]["name"]): o for o in items}


def flags(container):
    return dict(a[2:].split("=", 1) for a in container["args"])


@unittest.skipIf(REASON, REASON or "")
class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.api = kubeapi.KubeAPI(extra_args=["--egress-selector-config-file", EGRESS])
        try:
            cls.api.start()
        except Exception:
            cls.api.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.api.stop()

    def dry_run(self, *source):
        """kubectl apply --dry-run=server --validate=strict -o json of the given source (-k DIR or -f FILE):
        the objects as the API server would have stored them."""
        r = self.api.kubectl("apply", "--dry-run=server", "--validate=strict", "-o", "json", *source)
        self.assertEqual(r.stderr.strip(), "", r.stderr)
        out = json.loads(r.stdout)
        return out["items"] if out.get("kind") == "List" else [out]

    def test_token_kustomization(self):
        objs = by_kind(self.dry_run("-k", DEPLOY))
        self.assertEqual(sorted(objs), sorted([
            ("ServiceAccount", "konnectivity-agent"), ("ConfigMap", "konnectivity-agent-config"),
            ("DaemonSet", "konnectivity-agent"), ("NetworkPolicy", "konnectivity-agent"),
            ("Role", "konnectivity-agent-leases"), ("RoleBinding", "konnectivity-agent-leases"),
            ("Role", "konnectivity-server-leases"), ("RoleBinding", "konnectivity-server-leases"),
            ("ClusterRoleBinding", "system:konnectivity-server")]))
        for o in objs.values():
            if o["kind"] != "ClusterRoleBinding":
                self.assertEqual(o["metadata"]["namespace"], "kube-system", o["metadata"])
        ds = objs[("DaemonSet", "konnectivity-agent")]["spec"]["template"]["spec"]
        c = ds["containers"][0]
        self.assertEqual(c["command"], ["konn-agent"])
        self.assertEqual(c["image"], "localhost/konn:0.1.0")
        f = flags(c)
        self.assertEqual(f["service-account-token-path"], "/var/run/secrets/tokens/konnectivity-agent-token")
        self.assertEqual((f["health-server-port"], f["admin-server-port"]), ("8093", "8094"))
        self.assertEqual((f["count-server-leases"], f["lease-namespace"], f["lease-label-selector"]),
                         ("true", "kube-system", "k8s-app=konnectivity-server"))
        token = [v for v in ds["volumes"] if v["name"] == "konnectivity-agent-token"][0]
        self.assertEqual(token["projected"]["sources"][0]["serviceAccountToken"]["audience"], AUDIENCE)
        self.assertEqual(ds["serviceAccountName"], "konnectivity-agent")
        self.assertGreater(ds["terminationGracePeriodSeconds"], 30)  # longer than --drain-timeout=30s
        self.assert_hardened(ds, c)
        self.assertEqual(c["livenessProbe"]["httpGet"]["port"], 8093)
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
        # The ConfigMap drop-in is mounted where konn-agent reads drop-ins, and holds the server's address.
        cm = objs[("ConfigMap", "konnectivity-agent-config")]
        self.assertIn('proxy-server-port = 8091;', cm["data"]["50-cluster.conf"])
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        self.assertEqual(mounts["config"], "/etc/konn/konn-agent.conf.d")
        cfgvol = [v for v in ds["volumes"] if v["name"] == "config"][0]
        self.assertEqual(cfgvol["configMap"]["name"], cm["metadata"]["name"])
        # RBAC: the agent reads Leases, the server writes its own and may review tokens.
        role = objs[("Role", "konnectivity-agent-leases")]["rules"][0]
        self.assertEqual((role["resources"], role["verbs"]), (["leases"], ["get", "list", "watch"]))
        crb = objs[("ClusterRoleBinding", "system:konnectivity-server")]
        self.assertEqual(crb["roleRef"]["name"], "system:auth-delegator")
        # NetworkPolicy: egress to konn-server's agent port.
        np = objs[("NetworkPolicy", "konnectivity-agent")]["spec"]
        self.assertEqual(np["policyTypes"], ["Egress"])
        self.assertIn({"protocol": "TCP", "port": 8091}, np["egress"][0]["ports"])
        self.assertEqual(np["podSelector"]["matchLabels"], {"k8s-app": "konnectivity-agent"})

    def assert_hardened(self, pod, c):
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertEqual(pod["securityContext"]["runAsUser"], 65532)
        self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
        sc = c["securityContext"]
        self.assertEqual((sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"], sc["capabilities"]),
                         (True, False, {"drop": ["ALL"]}))

    def test_mtls_kustomization(self):
        objs = by_kind(self.dry_run("-k", os.path.join(DEPLOY, "mtls")))
        self.assertEqual(sorted(k for k, _ in objs), ["ConfigMap", "DaemonSet", "NetworkPolicy", "ServiceAccount"])
        ds = objs[("DaemonSet", "konnectivity-agent")]["spec"]["template"]["spec"]
        c = ds["containers"][0]
        f = flags(c)
        self.assertEqual((f["agent-cert"], f["agent-key"], f["ca-cert"]),
                         ("/etc/konn/tls/tls.crt", "/etc/konn/tls/tls.key", "/etc/konn/tls/ca.crt"))
        self.assertNotIn("service-account-token-path", f)
        self.assertEqual(sorted(v["name"] for v in ds["volumes"]), ["config", "tls"])
        self.assertEqual(sorted(m["name"] for m in c["volumeMounts"]), ["config", "tls"])
        self.assertFalse(ds["automountServiceAccountToken"])
        self.assert_hardened(ds, c)

    def check_static_pod(self, name):
        [pod] = self.dry_run("-f", os.path.join(DEPLOY, "control-plane", name))
        self.assertEqual((pod["kind"], pod["metadata"]["namespace"]), ("Pod", "kube-system"))
        spec = pod["spec"]
        self.assertTrue(spec["hostNetwork"])
        c = spec["containers"][0]
        self.assertEqual(c["command"], ["konn-server"])
        f = flags(c)
        self.assertEqual((f["uds-name"], f["mode"], f["server-port"]), (SOCKET, "grpc", "0"))
        self.assertEqual((f["agent-port"], f["health-port"], f["admin-port"]), ("8091", "8092", "8095"))
        self.assertEqual(spec["volumes"][0]["hostPath"], {"path": os.path.dirname(SOCKET), "type": "Directory"})
        self.assertEqual(c["volumeMounts"][0]["mountPath"], os.path.dirname(SOCKET))
        self.assertEqual(c["livenessProbe"]["httpGet"]["port"], 8092)
        self.assert_hardened(spec, c)
        return f

    def test_server_static_pod_token(self):
        f = self.check_static_pod("konn-server.yaml")
        self.assertEqual((f["agent-namespace"], f["agent-service-account"], f["authentication-audience"]),
                         ("kube-system", "konnectivity-agent", AUDIENCE))
        self.assertEqual((f["enable-lease-controller"], f["lease-namespace"], f["lease-label"]),
                         ("true", "kube-system", "k8s-app=konnectivity-server"))
        self.assertIn("kubeconfig", f)
        self.assertNotIn("cluster-ca-cert", f)

    def test_server_static_pod_mtls(self):
        f = self.check_static_pod("konn-server-mtls.yaml")
        self.assertIn("cluster-ca-cert", f)
        self.assertNotIn("agent-namespace", f)
        self.assertNotIn("kubeconfig", f)

    def test_schema_errors_fail(self):
        # The same check refuses a misspelt field: the dry runs above would catch one in deploy/.
        with open(os.path.join(DEPLOY, "control-plane", "konn-server.yaml")) as f:
            text = f.read().replace("hostNetwork: true", "hostNetwrok: true")
        r = self.api.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("hostNetwrok", r.stderr)

    def test_egress_selector_configuration_loaded(self):
        # kube-apiserver runs with the shipped file: kubectl logs is dialled through its socket.
        self.api.create_node("manifest-node", "127.0.0.1", kt.free_port())
        self.api.create_pod("manifest-pod", "konn-test", "manifest-node")
        r = self.api.kubectl("logs", "-n", "konn-test", "manifest-pod", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(SOCKET, r.stderr)


if __name__ == "__main__":
    kt.main()
