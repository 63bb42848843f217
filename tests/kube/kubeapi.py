# SPDX-License-Identifier: Apache-2.0
"""kubeapi — a real etcd + kube-apiserver on loopback, for konn's tests that must talk to Kubernetes itself
(TokenReview, Leases, the egress selector, server-side validation of manifests).

Owns: the binaries' discovery (and the reason to skip when one is missing), a throw-away PKI made with the
openssl CLI (cluster CA, API server serving certificate, admin and kubelet-client certificates, the
ServiceAccount signing key), one etcd and one kube-apiserver process per KubeAPI (stderr to files in its
directory, always stopped by stop(), at exit too), an admin kubeconfig, a kubectl wrapper, raw API requests
with the admin certificate, ServiceAccount tokens from TokenRequest (`kubectl create token`), a stand-in kubelet
(HTTPS /containerLogs and /healthz) behind a Node object, and a private network namespace for node proxy.

It imports tests/integration/konntest.py (free ports, temp directories, T()) and grows no harness of its own.
Standard library only, /usr/bin/python3.

Environment:
  KUBE_APISERVER  kube-apiserver binary (default: ../shared/kube/kube-apiserver next to the repository)
  KUBE_ETCD       etcd binary (default: /usr/bin/etcd, Debian's etcd-server)
  KUBECTL         kubectl binary (default: /usr/bin/kubectl)

Usage:
    reason = kubeapi.skip_reason()          # None, or why the tests must skip
    api = kubeapi.KubeAPI(workdir, egress=("GRPC", "/path/konn.sock"))
    api.start()                             # etcd + kube-apiserver, /readyz == 200 (≤ 60 s)
    api.kubectl("get", "ns")                # CompletedProcess; raises on a non-zero exit unless check=False
    token = api.create_token("konn-agent", "kube-system", "system:konnectivity-server")
    status, obj = api.request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases")
    api.stop()
"""

import atexit
import http.client
import http.server
import json
import os
import re
import signal
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
KUBE_APISERVER = os.environ.get("KUBE_APISERVER") or os.path.join(os.path.dirname(REPO), "shared", "kube",
                                                                     "kube-apiserver")
KUBE_ETCD = os.environ.get("KUBE_ETCD") or "/usr/bin/etcd"
KUBECTL = os.environ.get("KUBECTL") or "/usr/bin/kubectl"

# The cluster CIDR is only a setting: nothing is ever sent there.
SERVICE_CIDR = "10.96.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"


def skip_reason():
    """None when kube-apiserver, etcd and kubectl are all there; otherwise a sentence naming what is missing and
    how to provide it (for unittest's skip)."""
    missing = []
    for what, path, hint in (("kube-apiserver", KUBE_APISERVER, "set KUBE_APISERVER (see ../shared/kube/README.md)"),
                             ("etcd", KUBE_ETCD, "install Debian's etcd-server or set KUBE_ETCD"),
                             ("kubectl", KUBECTL, "set KUBECTL; Debian 12 has no kubectl package")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            missing.append("%s not found at %s (%s)" % (what, path, hint))
    return "; ".join(missing) or None


def _openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stdout.decode(errors="replace")))


def make_pki(d, sans=("IP:127.0.0.1", "DNS:localhost")):
    """A cluster PKI in directory d: ca.crt/.key, apiserver.crt/.key (serverAuth, SANs `sans` plus the service
    names), admin.crt/.key (CN=konn-test-admin, O=system:masters), kubelet-client.crt/.key (O=system:masters),
    sa.key/sa.pub (ServiceAccount token signing). EC P-256, valid one day."""
    os.makedirs(d, exist_ok=True)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=d)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=konn-test-kube-ca", "-days", "1",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", "ca.crt", cwd=d)
    all_sans = list(sans) + ["DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                             "IP:10.96.0.1"]
    leaves = (("apiserver", "/CN=kube-apiserver", "serverAuth", ",".join(all_sans)),
              ("admin", "/O=system:masters/CN=konn-test-admin", "clientAuth", None),
              ("kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth", None))
    for name, subj, eku, san in leaves:
        issue_cert(d, name, subj, eku, san)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=d)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    return d


def issue_cert(d, name, subj, eku, san=None):
    """name.crt/name.key in the PKI directory d, signed by its ca.crt/ca.key: subject `subj` ("/CN=..."),
    extendedKeyUsage `eku` ("serverAuth", "clientAuth"), subjectAltName `san` ("IP:192.0.2.10,DNS:x") or None."""
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name + ".key", cwd=d)
    _openssl("req", "-new", "-key", name + ".key", "-subj", subj, "-out", name + ".csr", cwd=d)
    ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n" % eku
    if san:
        ext += "subjectAltName=%s\n" % san
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", name + ".ext", "-out", name + ".crt", cwd=d)
    return os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")


def private_netns_reason():
    """None if enter_private_netns() can work here (root, ip(8)); otherwise why not."""
    if os.geteuid() != 0:
        return "needs root to create a private network namespace"
    if not os.path.exists("/usr/sbin/ip") and not os.path.exists("/sbin/ip"):
        return "ip(8) (iproute2) is missing"
    return None


def enter_private_netns(addresses=("192.0.2.10",)):
    """Moves this process into a new, private network namespace (unshare(CLONE_NEWNET)) with lo up and the given
    IPv4 addresses added to lo as /32: node proxy and pod proxy refuse loopback addresses, these they accept,
    and nothing can leave the namespace. Every process started afterwards (etcd, kube-apiserver, the daemons,
    kubectl) lives in it. Call it before starting any thread (at import time of a test file)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        e = ctypes.get_errno()
        raise OSError(e, "unshare(CLONE_NEWNET): " + os.strerror(e))
    ip = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
    subprocess.run([ip, "link", "set", "lo", "up"], check=True, timeout=30)
    for a in addresses:
        subprocess.run([ip, "addr", "add", a + "/32", "dev", "lo"], check=True, timeout=30)


class StandInKubelet(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """A stand-in kubelet for `kubectl logs` and node proxy: HTTPS on (host, any port) with the serving certificate
    crt/key, requiring a client certificate signed by ca (kube-apiserver's kubelet client certificate). Answers
    GET /containerLogs/NS/POD/CONTAINER with logs[(ns, pod, container)] (bytes), /healthz with "ok", anything
    else 404; records (path, client certificate CN) of every request in `requests`. close() stops it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host, crt, key, ca):
        self.logs = {}
        self.requests = []
        self.lock = threading.Lock()
        super().__init__((host, 0), _KubeletHandler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()


class _KubeletHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        view = memoryview(body)
        for off in range(0, len(body), 256 * 1024):
            self.wfile.write(view[off:off + 256 * 1024])

    def do_GET(self):
        peer = self.connection.getpeercert() or {}
        cn = dict(x[0] for x in peer.get("subject", ())).get("commonName", "")
        with self.server.lock:
            self.server.requests.append((self.path, cn))
        m = re.match(r"^/containerLogs/([^/]+)/([^/]+)/([^/?]+)(\?.*)?$", self.path)
        if m and m.group(1, 2, 3) in self.server.logs:
            self._reply(200, self.server.logs[m.group(1, 2, 3)])
        elif self.path == "/healthz":
            self._reply(200, b"ok")
        else:
            self._reply(404, b"404 page not found\n")


def egress_selector_config(protocol, uds):
    """The EgressSelectorConfiguration text for kube-apiserver: selection `cluster` through konn-server's Unix
    socket `uds`, protocol "GRPC" or "HTTPConnect"."""
    return ("apiVersion: apiserver.k8s.io/v1beta1\n"
            "kind: EgressSelectorConfiguration\n"
            "egressSelections:\n"
            "- name: cluster\n"
            "  connection:\n"
            "    proxyProtocol: %s\n"
            "    transport:\n"
            "      uds:\n"
            "        udsName: %s\n" % (protocol, uds))


class KubeAPI:
    """One etcd and one kube-apiserver on `host` (default 127.0.0.1) with fresh ports, their files in workdir.

    egress: None, or (proxyProtocol, udsName) to start kube-apiserver with an EgressSelectorConfiguration.
    sans: extra subjectAltName entries for the serving certificate (e.g. "IP:192.0.2.10" inside a namespace).
    extra_args: more kube-apiserver flags."""

    def __init__(self, workdir=None, egress=None, host="127.0.0.1", sans=(), extra_args=()):
        self.dir = workdir or tempfile.mkdtemp(prefix="kubeapi.", dir=kt.session_dir())
        os.makedirs(self.dir, exist_ok=True)
        self.host = host
        self.egress = egress
        self.sans = ["IP:127.0.0.1", "DNS:localhost"] + (["IP:" + host] if host != "127.0.0.1" else []) + list(sans)
        self.extra_args = list(extra_args)
        self.port = None
        self.url = None
        self.pki = os.path.join(self.dir, "pki")
        self.kubeconfig = os.path.join(self.dir, "admin.kubeconfig")
        self.procs = []
        self._ssl = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self, timeout=60):
        reason = skip_reason()
        if reason:
            raise RuntimeError(reason)
        make_pki(self.pki, self.sans)
        etcd_client, etcd_peer = kt.free_port(), kt.free_port()
        self.port = kt.free_port()
        self.url = "https://%s:%d" % (self.host, self.port)
        etcd_url = "http://127.0.0.1:%d" % etcd_client
        self._spawn("etcd", [KUBE_ETCD, "--name", "konn-test", "--data-dir", os.path.join(self.dir, "etcd"),
                             "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                             "--listen-peer-urls", "http://127.0.0.1:%d" % etcd_peer,
                             "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % etcd_peer,
                             "--initial-cluster", "konn-test=http://127.0.0.1:%d" % etcd_peer,
                             "--log-level", "warn"])
        p = self.pki
        args = [KUBE_APISERVER,
                "--etcd-servers", etcd_url,
                "--bind-address", self.host, "--advertise-address", self.host, "--secure-port", str(self.port),
                "--endpoint-reconciler-type", "none",
                "--service-cluster-ip-range", SERVICE_CIDR,
                "--authorization-mode", "RBAC",
                "--client-ca-file", p + "/ca.crt",
                "--tls-cert-file", p + "/apiserver.crt", "--tls-private-key-file", p + "/apiserver.key",
                "--service-account-key-file", p + "/sa.pub",
                "--service-account-signing-key-file", p + "/sa.key",
                "--service-account-issuer", ISSUER,
                "--kubelet-client-certificate", p + "/kubelet-client.crt",
                "--kubelet-client-key", p + "/kubelet-client.key",
                "--kubelet-certificate-authority", p + "/ca.crt",
                "--kubelet-preferred-address-types", "InternalIP",
                "--disable-admission-plugins", "ServiceAccount",
                "--allow-privileged=true",
                "--profiling=false"]
        if self.egress:
            path = os.path.join(self.dir, "egress-selector.yaml")
            with open(path, "w") as f:
                f.write(egress_selector_config(*self.egress))
            args += ["--egress-selector-config-file", path]
        self._spawn("kube-apiserver", args + self.extra_args)
        self._write_kubeconfig()
        deadline = time.monotonic() + T(timeout)
        last = None
        while time.monotonic() < deadline:
            for name, proc, log in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError("%s exited with %s:\n%s" % (name, proc.returncode, self.log_tail(name)))
            try:
                status, _ = self.request("GET", "/readyz", timeout=2, raw=True)
                if status == 200:
                    return self
                last = "readyz %d" % status
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        raise RuntimeError("kube-apiserver not ready within %ds (%s):\n%s" % (timeout, last,
                                                                             self.log_tail("kube-apiserver")))

    def _spawn(self, name, argv):
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.dir, env=kt.clean_env(), start_new_session=True)
        self.procs.append((name, proc, log))
        atexit.register(self._kill, proc)

    @staticmethod
    def _kill(proc):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()

    def stop(self):
        """Stops kube-apiserver, then etcd (SIGTERM, SIGKILL after 10 s); safe to call twice."""
        for name, proc, log in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except OSError:
                    pass
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._kill(proc)
            log.close()
        self.procs = []

    def log_tail(self, name, nbytes=4000):
        try:
            with open(os.path.join(self.dir, name + ".log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - nbytes))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # -- clients -------------------------------------------------------------------------------------------------

    def _write_kubeconfig(self):
        p = self.pki
        text = ("apiVersion: v1\nkind: Config\n"
                "clusters:\n- name: konn-test\n  cluster:\n    server: %s\n    certificate-authority: %s\n"
                "users:\n- name: admin\n  user:\n    client-certificate: %s\n    client-key: %s\n"
                "contexts:\n- name: admin@konn-test\n  context:\n    cluster: konn-test\n    user: admin\n"
                "current-context: admin@konn-test\n"
                % (self.url, p + "/ca.crt", p + "/admin.crt", p + "/admin.key"))
        with open(self.kubeconfig, "w") as f:
            f.write(text)

    def write_kubeconfig(self, path, token=None, token_file=None, user="konn"):
        """A kubeconfig at `path` for a daemon: this API server and CA, and as user either a bearer token,
        a token file, or (neither) the admin certificate. Returns path."""
        p = self.pki
        if token is not None:
            user_text = "    token: %s\n" % token
        elif token_file is not None:
            user_text = "    tokenFile: %s\n" % token_file
        else:
            user_text = "    client-certificate: %s\n    client-key: %s\n" % (p + "/admin.crt", p + "/admin.key")
        with open(path, "w") as f:
            f.write("apiVersion: v1\nkind: Config\n"
                    "clusters:\n- name: konn-test\n  cluster:\n    server: %s\n    certificate-authority: %s\n"
                    "users:\n- name: %s\n  user:\n%s"
                    "contexts:\n- name: %s@konn-test\n  context:\n    cluster: konn-test\n    user: %s\n"
                    "current-context: %s@konn-test\n" % (self.url, p + "/ca.crt", user, user_text, user, user, user))
        return path

    def ssl_context(self):
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "ca.crt"))
            ctx.load_cert_chain(os.path.join(self.pki, "admin.crt"), os.path.join(self.pki, "admin.key"))
            self._ssl = ctx
        return self._ssl

    def request(self, method, path, body=None, timeout=10, raw=False, content_type="application/json"):
        """One request with the admin certificate. Returns (status, parsed JSON or None); raw=True returns the
        body bytes instead."""
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ssl_context(), timeout=T(timeout))
        try:
            data = None
            headers = {"Accept": "application/json"}
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        if raw:
            return resp.status, payload
        try:
            return resp.status, json.loads(payload) if payload else None
        except ValueError:
            return resp.status, None

    def kubectl(self, *args, input=None, check=True, timeout=60, raw=False):
        """Runs kubectl with the admin kubeconfig; returns the CompletedProcess (stdout/stderr as text; stdout as
        bytes with raw=True). Raises RuntimeError with both streams on a non-zero exit when check is true."""
        r = subprocess.run([KUBECTL, "--kubeconfig", self.kubeconfig] + list(args),
                           input=input if input is None or isinstance(input, bytes) else input.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(timeout),
                           env=kt.clean_env())
        if not raw:
            r.stdout = r.stdout.decode(errors="replace")
        r.stderr = r.stderr.decode(errors="replace")
        if check and r.returncode != 0:
            raise RuntimeError("kubectl %s exited %d:\n%s%s" % (" ".join(args), r.returncode,
                                                                 "" if raw else r.stdout, r.stderr))
        return r

    def apply(self, manifest_text):
        """kubectl apply -f - of a YAML/JSON text."""
        return self.kubectl("apply", "-f", "-", input=manifest_text)

    def ensure_namespace(self, ns):
        if self.kubectl("get", "namespace", ns, check=False).returncode != 0:
            self.kubectl("create", "namespace", ns)

    def ensure_service_account(self, name, ns):
        self.ensure_namespace(ns)
        if self.kubectl("get", "serviceaccount", name, "-n", ns, check=False).returncode != 0:
            self.kubectl("create", "serviceaccount", name, "-n", ns)

    def create_node(self, name, address, kubelet_port):
        """A Node object whose InternalIP is `address` and kubelet endpoint port `kubelet_port` (status set
        through the status subresource, as no kubelet runs)."""
        self.apply(json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))
        patch = {"status": {"addresses": [{"type": "InternalIP", "address": address}],
                            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}}}}
        self.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(patch))

    def start_kubelet(self, node, address):
        """A StandInKubelet on `address` with a serving certificate from this cluster's CA (kube-apiserver
        verifies it) and the Node object `node` pointing at it. The caller closes it."""
        crt, key = issue_cert(self.pki, "kubelet-" + node, "/CN=system:node:" + node, "serverAuth", "IP:" + address)
        kubelet = StandInKubelet(address, crt, key, os.path.join(self.pki, "ca.crt"))
        try:
            self.create_node(node, address, kubelet.port)
        except Exception:
            kubelet.close()
            raise
        return kubelet

    def create_pod(self, name, ns, node, container="main"):
        """A Pod bound to `node` (spec.nodeName), one container named `container`; nothing runs it."""
        self.ensure_namespace(ns)
        self.apply(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                               "spec": {"nodeName": node,
                                        "containers": [{"name": container, "image": "konn.invalid/none"}]}}))

    def create_token(self, sa, ns, audience, duration=None):
        """A signed ServiceAccount token for sa in ns with the given audience (TokenRequest); creates the
        namespace and ServiceAccount if needed. duration: e.g. "10m" (the API server's minimum is 10 minutes)."""
        self.ensure_service_account(sa, ns)
        args = ["create", "token", sa, "-n", ns, "--audience", audience]
        if duration:
            args += ["--duration", duration]
        return self.kubectl(*args).stdout.strip()
