#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""konn's OCI image (`make image`, tools/build-image.sh + tools/mkimage.py): its contents and labels, and both
daemons running from it under podman — read-only root, non-root user, no capabilities — tunnelling a CONNECT.

The image is built once per run with tools/build-image.sh (what `make image` runs) and loaded under a name of
this process (localhost/konn-test:PID), removed at the end. Skips with a reason where podman is absent or cannot
run containers. Podman facts on Debian 12 machines of this kind: `--runtime runc` (crun fails on the hybrid
cgroup layout), rlimits cannot be raised (lowered --ulimit values are passed).

Environment (besides konntest's): KONN_IMAGE_ARCHIVE=FILE uses an already built archive instead of building one.
"""

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import unittest
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kube"))
import konntest  # noqa: E402
import kubeapi  # noqa: E402
from konntest import T, cert  # noqa: E402

PODMAN = shutil.which("podman")
UID = 65532
NAME = "localhost/konn-test:%d" % os.getpid()
RUN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
             "--read-only", "--user", "%d:%d" % (UID, UID), "--cap-drop", "all",
             "--security-opt", "no-new-privileges", "--network", "host"]


def version():
    with open(os.path.join(konntest.BUILDDIR, "Makefile")) as f:
        return re.search(r"^PACKAGE_VERSION = (\S+)$", f.read(), re.M).group(1)


def podman(*args, check=True, timeout=120):
    r = subprocess.run([PODMAN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=T(timeout))
    if check and r.returncode != 0:
        raise AssertionError("podman %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()))
    return r


class Archive:
    """An OCI image layout packed as a tar: index, manifest, config and the single layer's members."""

    def __init__(self, path):
        with tarfile.open(path) as t:
            self.names = t.getnames()
            self.index = json.load(t.extractfile("index.json"))
            self.layout = json.load(t.extractfile("oci-layout"))

            def blob(desc):
                algo, digest = desc["digest"].split(":")
                data = t.extractfile("blobs/%s/%s" % (algo, digest)).read()
                assert hashlib.sha256(data).hexdigest() == digest and len(data) == desc["size"], desc
                return data

            self.manifest_desc = self.index["manifests"][0]
            self.manifest = json.loads(blob(self.manifest_desc))
            self.config = json.loads(blob(self.manifest["config"]))
            self.layer_gz = blob(self.manifest["layers"][0])
        self.layer_raw = gzip.decompress(self.layer_gz)
        with tarfile.open(fileobj=io.BytesIO(self.layer_raw)) as lt:
            self.members = {m.name: m for m in lt.getmembers()}


_image = {}


def image():
    """(archive path, image name), built and loaded once per process."""
    if not _image:
        path = os.environ.get("KONN_IMAGE_ARCHIVE")
        if not path:
            path = os.path.join(konntest.session_dir(), "konn.oci.tar")
            t0 = time.monotonic()
            # A build of its own, not a part of the `make check` that may be running this file.
            env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
            env["KONN_IMAGE_NO_LOAD"] = "1"
            r = subprocess.run(["sh", os.path.join(konntest.SRCDIR, "tools", "build-image.sh"), konntest.BUILDDIR,
                                path, NAME], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True, timeout=T(900), env=env)
            if r.returncode != 0:
                raise AssertionError("tools/build-image.sh failed:\n" + r.stdout)
            sys.stderr.write("image built in %.1f s:\n%s" % (time.monotonic() - t0, r.stdout))
        podman("load", "-q", "-i", path, timeout=300)
        podman("tag", Archive(path).manifest_desc["annotations"]["org.opencontainers.image.ref.name"], NAME,
               check=False)
        _image["path"] = path
    return _image["path"], NAME


def podman_unusable():
    if not PODMAN:
        return "podman is not installed (tools/install-deps.sh installs it)"
    if os.geteuid() != 0:
        return "needs root (podman with the system storage and host networking)"
    r = subprocess.run([PODMAN, "info"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
    if r.returncode != 0:
        return "podman cannot run here: " + r.stderr.strip()[-300:]
    return None


REASON = podman_unusable()


def tearDownModule():
    if _image and PODMAN:
        subprocess.run([PODMAN, "rmi", "-f", NAME], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@unittest.skipIf(REASON, REASON)
class ImageContents(unittest.TestCase):
    """The archive itself: OCI layout, labels, the non-root user, and nothing in it but what the daemons need."""

    @classmethod
    def setUpClass(cls):
        cls.path, _ = image()
        cls.a = Archive(cls.path)

    def test_layout_and_annotations(self):
        a = self.a
        self.assertEqual(a.layout, {"imageLayoutVersion": "1.0.0"})
        self.assertEqual(a.manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json")
        self.assertEqual(a.manifest_desc["annotations"]["org.opencontainers.image.ref.name"],
                         "localhost/konn-test:%d" % os.getpid() if not os.environ.get("KONN_IMAGE_ARCHIVE")
                         else a.manifest_desc["annotations"]["org.opencontainers.image.ref.name"])
        ann = a.manifest["annotations"]
        self.assertEqual(ann["org.opencontainers.image.version"], version())
        self.assertEqual(ann["org.opencontainers.image.licenses"], "Apache-2.0")
        self.assertEqual(ann["org.opencontainers.image.title"], "konn")
        self.assertRegex(ann["org.opencontainers.image.source"], r"^[a-z+]+:")
        self.assertRegex(ann["org.opencontainers.image.revision"], r"^[0-9a-f]{40}(-dirty)?$")
        self.assertEqual(a.config["config"]["Labels"], ann)
        self.assertEqual(a.config["config"]["User"], "%d:%d" % (UID, UID))
        # No per-thread malloc cache, as in the packaged units (memory back after many tunnels close).
        self.assertEqual(a.config["config"]["Env"],
                         ["PATH=/usr/sbin:/usr/bin", "GLIBC_TUNABLES=glibc.malloc.tcache_count=0"])
        self.assertEqual(a.config["os"], "linux")
        self.assertEqual(a.config["rootfs"]["diff_ids"], ["sha256:" + hashlib.sha256(a.layer_raw).hexdigest()])
        self.assertEqual(sorted(a.config["config"]["ExposedPorts"]),
                         ["8090/tcp", "8091/tcp", "8092/tcp", "8093/tcp", "8094/tcp", "8095/tcp"])
        sys.stderr.write("image size: %d bytes compressed (archive %d), %d bytes unpacked\n"
                         % (len(a.layer_gz), os.path.getsize(self.path), len(a.layer_raw)))

    def test_root_holds_only_the_daemons_and_their_libraries(self):
        m = self.a.members
        for p in ("usr/sbin/konn-server", "usr/sbin/konn-agent"):
            self.assertTrue(m[p].isfile() and m[p].mode & 0o111, p)
        self.assertNotIn("bin/sh", m)
        self.assertNotIn("usr/bin/sh", m)
        files = sorted(n for n, x in m.items() if x.isfile())
        others = [f for f in files if not re.match(
            r"^(usr/sbin/konn-(server|agent)|usr/lib(64)?/.*\.so[.0-9]*|etc/(passwd|group|nsswitch\.conf)|"
            r"etc/ssl/certs/ca-certificates\.crt|usr/share/doc/konn/LICENSE)$", f)]
        self.assertEqual(others, [])
        self.assertIn("lib64", m)  # the loader's path, /lib64/ld-linux-*.so.2, resolves through the host's links
        passwd = self._file("etc/passwd")
        self.assertIn(b"konn:x:65532:65532:", passwd)
        for d in ("etc/konn/konn-server.conf.d", "etc/konn/konn-agent.conf.d", "run/konn", "tmp"):
            self.assertTrue(m[d].isdir(), d)
        self.assertEqual((m["run/konn"].uid, m["run/konn"].gid), (UID, UID))
        self.assertTrue(all(x.uid in (0, UID) and x.mtime == m["usr/sbin/konn-server"].mtime for x in m.values()))

    def _file(self, name):
        with tarfile.open(fileobj=io.BytesIO(self.a.layer_raw)) as lt:
            return lt.extractfile(name).read()

    def test_reproducible(self):
        # The same binaries and time give the same bytes: run mkimage twice over the tree's own daemons.
        out = []
        for i in range(2):
            p = os.path.join(konntest.session_dir(), "repro%d.oci.tar" % i)
            subprocess.run(["/usr/bin/python3", os.path.join(konntest.SRCDIR, "tools", "mkimage.py"),
                            "--server", konntest.SERVER_BIN, "--agent", konntest.AGENT_BIN, "--version", "0",
                            "--created", "1700000000", "--output", p], check=True, stdout=subprocess.DEVNULL,
                           timeout=T(300))
            with open(p, "rb") as f:
                out.append(hashlib.sha256(f.read()).hexdigest())
            os.unlink(p)
        self.assertEqual(out[0], out[1])


class ContainerCase(konntest.KonnTestCase):
    """konn-server and konn-agent each in its own container (host network, loopback ports); the server's Unix
    socket in a host directory mounted into its container, as the static Pod's hostPath."""

    @classmethod
    def setUpClass(cls):
        cls.path, cls.name = image()

    def setUp(self):
        super().setUp()
        self.containers = []
        self.addCleanup(self._remove_containers)
        # What a Pod would mount: certificates readable by the container's user, a socket directory it owns.
        self.certs = os.path.join(self.dir, "certs")
        os.mkdir(self.certs)
        for n in ("ca.crt", "server.crt", "server.key", "agent.crt", "agent.key"):
            shutil.copy(cert(n), self.certs)
            os.chown(os.path.join(self.certs, n), UID, UID)
        self.run_dir = os.path.join(self.dir, "run")
        os.mkdir(self.run_dir, 0o750)
        os.chown(self.run_dir, UID, UID)
        os.chmod(self.dir, 0o755)
        os.chmod(os.path.dirname(self.dir), 0o755)

    def _remove_containers(self):
        for c in self.containers:
            subprocess.run([PODMAN, "rm", "-f", "-t", "0", c], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=T(120))

    def run_container(self, tag, argv, mounts=(), env=()):
        cname = "konn11-%s-%d-%d" % (tag, os.getpid(), len(self.containers))
        args = ["run", "-d", "--name", cname] + RUN_FLAGS
        for kv in env:
            args += ["-e", kv]
        for src, dst in mounts:
            args += ["-v", "%s:%s:ro" % (src, dst) if not dst.endswith(":rw") else "%s:%s" % (src, dst[:-3])]
        r = podman(*(args + [self.name] + argv))
        self.containers.append(cname)
        return cname

    def logs(self, cname):
        r = podman("logs", cname, check=False)
        return r.stdout + r.stderr

    def wait_log(self, cname, pattern, timeout=20):
        return self.wait_until(lambda: re.search(pattern, self.logs(cname), re.M), timeout,
                               "%r in the log of %s:\n%s" % (pattern, cname, self.logs(cname)[-3000:]))

    def pid_of(self, cname):
        return int(podman("inspect", "--format", "{{.State.Pid}}", cname).stdout.strip())

    def http_get(self, port, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=T(5)) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return None, b""

    def start_containers(self, mode="http-connect"):
        self.agent_port, self.server_health, self.agent_health = (konntest.free_port() for _ in range(3))
        sock = "/run/konn/konn-server.sock"
        server = self.run_container("server", [
            "konn-server", "--mode=" + mode, "--uds-name=" + sock, "--server-port=0",
            "--agent-port=%d" % self.agent_port, "--agent-bind-address=127.0.0.1",
            "--health-port=%d" % self.server_health, "--health-bind-address=127.0.0.1", "--admin-port=0",
            "--cluster-cert=/certs/server.crt", "--cluster-key=/certs/server.key", "--cluster-ca-cert=/certs/ca.crt",
            "--server-id=srv-c1"], [(self.certs, "/certs"), (self.run_dir, "/run/konn:rw")])
        self.sock_path = os.path.join(self.run_dir, "konn-server.sock")
        self.wait_until(lambda: os.path.exists(self.sock_path), 30, "the server's socket (log: %s)"
                        % self.logs(server)[-2000:])
        # The agent takes its configuration from a mounted drop-in directory, as from a ConfigMap.
        dropins = os.path.join(self.dir, "agent.conf.d")
        os.mkdir(dropins)
        with open(os.path.join(dropins, "10-pod.conf"), "w") as f:
            f.write('proxy-server-host = "127.0.0.1";\nproxy-server-port = %d;\nca-cert = "/certs/ca.crt";\n'
                    'agent-cert = "/certs/agent.crt";\nagent-key = "/certs/agent.key";\n'
                    'health-server-host = "127.0.0.1";\nhealth-server-port = %d;\nadmin-server-port = 0;\n'
                    % (self.agent_port, self.agent_health))
        os.chmod(dropins, 0o755)
        agent = self.run_container("agent", ["konn-agent", "--agent-id=node-c1", "--drain-timeout=3s"],
                                   [(self.certs, "/certs"), (dropins, "/etc/konn/konn-agent.conf.d")])
        self.wait_log(agent, r"node-c1.*[Cc]onnected|[Cc]onnected.*srv-c1", 30)
        return server, agent


@unittest.skipIf(REASON, REASON)
class ImageRuns(ContainerCase):
    """CONNECTs from the host through the server container's socket to a target on the host."""

    def test_tunnel_read_only_non_root(self):
        server, agent = self.start_containers()
        self.wait_log(server, r"^.*Agent 'node-c1' connected", 30)
        echo = self.track(konntest.EchoServer())
        data = konntest.Pattern(4 * konntest.MIB, seed=11).bytes()
        c = self.open_tunnel("127.0.0.1:%d" % echo.port)
        c.send(data)
        got = c.recv_exact(len(data))
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest())
        c.close()
        # Several tunnels at once.
        cs = [self.open_tunnel("127.0.0.1:%d" % echo.port) for _ in range(8)]
        for i, c in enumerate(cs):
            self.assert_echo(c, b"tunnel %d\n" % i)
        # Each daemon runs as 65532 with no capabilities and no way to gain any, on a read-only root.
        for cname in (server, agent):
            pid = self.pid_of(cname)
            with open("/proc/%d/status" % pid) as f:
                st = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
            self.assertEqual(st["Uid"].split(), [str(UID)] * 4, cname)
            self.assertEqual(st["Gid"].split(), [str(UID)] * 4, cname)
            for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                self.assertEqual(int(st[k], 16), 0, "%s %s" % (cname, k))
            self.assertEqual(st["NoNewPrivs"].strip(), "1")
            with open("/proc/%d/mountinfo" % pid) as f:
                root = [ln.split() for ln in f if ln.split()[4] == "/"]
            self.assertTrue(root and "ro" in root[-1][5].split(","), root)
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                self.assertTrue(f.read().startswith(b"konn-"), cname)
        # Health and readiness on the ports the probes use.
        self.assertEqual(self.http_get(self.server_health, "/healthz")[0], 200)
        self.assertEqual(self.http_get(self.server_health, "/readyz")[0], 200)
        self.assertEqual(self.http_get(self.agent_health, "/healthz")[0], 200)
        self.assertEqual(self.http_get(self.agent_health, "/readyz")[0], 200)
        # The logs are on stderr, plain lines without journald (what `kubectl logs` shows).
        r = podman("logs", server)
        self.assertEqual(r.stdout, "")
        self.assertRegex(r.stderr, r"(?m)^.*Agent 'node-c1' connected")

    def test_agent_restart_and_stop(self):
        server, agent = self.start_containers()
        echo = self.track(konntest.EchoServer())
        c = self.open_tunnel("127.0.0.1:%d" % echo.port)
        self.assert_echo(c, b"before\n")
        # SIGTERM to the container (what a Pod deletion does): the agent drains for up to --drain-timeout while
        # the tunnel stays open, then exits 0 within the grace period.
        t0 = time.monotonic()
        podman("stop", "-t", "20", agent, timeout=60)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", agent).stdout.strip()
        self.assertEqual(code, "0", self.logs(agent)[-2000:])
        self.assertLess(time.monotonic() - t0, T(25))
        self.wait_until(lambda: self.http_get(self.server_health, "/readyz")[0] != 200, 20,
                        "the server to be unready without agents")
        podman("start", agent)
        self.wait_until(lambda: self.http_get(self.server_health, "/readyz")[0] == 200, 30,
                        "the server to be ready again")
        c = self.open_tunnel("127.0.0.1:%d" % echo.port)
        self.assert_echo(c, b"after\n")
        podman("stop", "-t", "20", server, timeout=60)
        self.assertEqual(podman("inspect", "--format", "{{.State.ExitCode}}", server).stdout.strip(), "0",
                         self.logs(server)[-2000:])


KUBE_REASON = REASON or kubeapi.skip_reason()


@unittest.skipIf(KUBE_REASON, KUBE_REASON or "")
class ImageBehindKubeAPIServer(ContainerCase):
    """The static Pod's shape with the real image: kube-apiserver (on the host) dials the Unix socket that the
    non-root konn-server container made in the shared host directory; `kubectl logs` reaches a stand-in kubelet
    through the agent container."""

    def test_kubectl_logs_through_containers(self):
        api = kubeapi.KubeAPI(egress=("GRPC", os.path.join(self.run_dir, "konn-server.sock")))
        self.addCleanup(api.stop)
        api.start()
        self.start_containers(mode="grpc")
        kubelet = api.start_kubelet("image-node", "127.0.0.1")
        self.addCleanup(kubelet.close)
        api.create_pod("image-pod", "konn-image", "image-node")
        body = konntest.Pattern(konntest.big(4 * konntest.MIB), seed=41).bytes()
        kubelet.logs[("konn-image", "image-pod", "main")] = body
        r = api.kubectl("logs", "-n", "konn-image", "image-pod", raw=True, timeout=120)
        self.assertEqual(len(r.stdout), len(body))
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), hashlib.sha256(body).hexdigest())
        self.assertIn(("/containerLogs/konn-image/image-pod/main", "kube-apiserver-kubelet-client"),
                      kubelet.requests)

    def manifest_container(self, api, source, kind):
        """The first container of the `kind` object in a deploy/kubernetes manifest (-f FILE or -k DIR), as
        kubectl builds it (client-side dry run, JSON)."""
        text, items, dec, pos = api.kubectl("create", "--dry-run=client", "-o", "json", *source).stdout, [], \
            json.JSONDecoder(), 0
        while text[pos:].strip():  # one JSON document per object
            obj, end = dec.raw_decode(text, pos + len(text[pos:]) - len(text[pos:].lstrip()))
            items.append(obj)
            pos = end
        obj = [o for o in items if o["kind"] == kind][0]
        spec = obj["spec"]["template"]["spec"] if kind == "DaemonSet" else obj["spec"]
        return spec["containers"][0]

    def test_token_auth_as_deployed(self):
        """The token-authentication manifests' own command lines (static Pod konn-server, DaemonSet konn-agent),
        with only addresses and ports changed for the host network, and the shipped RBAC: the agent's projected
        token passes the server's TokenReview, the server holds its Lease, the agent counts it, kubectl logs
        works through both containers."""
        deploy = os.path.join(konntest.SRCDIR, "deploy", "kubernetes")
        sock = os.path.join(self.run_dir, "konnectivity-server.socket")
        api = kubeapi.KubeAPI(egress=("GRPC", sock))
        self.addCleanup(api.stop)
        api.start()
        for f in ("server-rbac.yaml", "agent-rbac.yaml", "base/agent-serviceaccount.yaml"):
            api.kubectl("apply", "-f", os.path.join(deploy, f))
        # konn-server's host directory (/etc/kubernetes/konnectivity-server): a serving certificate from the
        # cluster CA and a kubeconfig for user system:konnectivity-server (the subject of server-rbac.yaml).
        host = self.run_dir
        kubeapi.issue_cert(api.pki, "konn-server", "/CN=konn-server", "serverAuth", "IP:127.0.0.1")
        kubeapi.issue_cert(api.pki, "konn-server-client", "/CN=system:konnectivity-server", "clientAuth")
        for src, dst in (("konn-server.crt", "server.crt"), ("konn-server.key", "server.key"),
                         ("konn-server-client.crt", "client.crt"), ("konn-server-client.key", "client.key"),
                         ("ca.crt", "kube-ca.crt")):
            shutil.copy(os.path.join(api.pki, src), os.path.join(host, dst))
        d = "/etc/kubernetes/konnectivity-server"
        with open(os.path.join(host, "kubeconfig"), "w") as f:
            f.write("apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: %s\n"
                    "    certificate-authority: %s/kube-ca.crt\nusers:\n- name: u\n  user:\n"
                    "    client-certificate: %s/client.crt\n    client-key: %s/client.key\ncontexts:\n"
                    "- name: c\n  context:\n    cluster: k\n    user: u\ncurrent-context: c\n" % (api.url, d, d, d))
        for n in os.listdir(host):
            os.chown(os.path.join(host, n), UID, UID)

        def rewrite(args, changes, env):
            out = []
            for a in args:
                name = a[2:].split("=", 1)[0]
                if name in changes:
                    if changes[name] is None:
                        continue
                    a = "--%s=%s" % (name, changes[name])
                for k, v in env.items():
                    a = a.replace("$(%s)" % k, v)
                out.append(a)
            return out

        server_health, agent_port, agent_health = (konntest.free_port() for _ in range(3))
        c = self.manifest_container(api, ["-f", os.path.join(deploy, "control-plane", "konn-server.yaml")], "Pod")
        env = {"NODE_NAME": "cp-1"}
        argv = c["command"] + rewrite(c["args"], {
            "agent-port": str(agent_port), "health-port": str(server_health), "admin-port": "0"}, env) + [
            "--agent-bind-address=127.0.0.1", "--health-bind-address=127.0.0.1"]
        server = self.run_container("server", argv, [(host, d + ":rw")], ["%s=%s" % kv for kv in env.items()])
        self.wait_until(lambda: os.path.exists(sock), 30, "the server's socket (log: %s)" % self.logs(server)[-2000:])
        self.wait_until(lambda: api.kubectl("get", "lease", "-n", "kube-system", "-l", "k8s-app=konnectivity-server",
                                            "-o", "name").stdout.strip() == "lease.coordination.k8s.io/"
                        "konnectivity-proxy-server-cp-1", 30, "konn-server's Lease (log: %s)" % self.logs(server)[-2000:])

        # The agent: the projected token (audience system:konnectivity-server), the in-cluster configuration
        # (its own ServiceAccount token and the cluster CA, which also verifies konn-server), the ConfigMap drop-in.
        tokens = os.path.join(self.dir, "tokens")
        sa = os.path.join(self.dir, "serviceaccount")
        dropins = os.path.join(self.dir, "agent.conf.d")
        for p in (tokens, sa, dropins):
            os.mkdir(p)
        with open(os.path.join(tokens, "konnectivity-agent-token"), "w") as f:
            f.write(api.create_token("konnectivity-agent", "kube-system", "system:konnectivity-server"))
        with open(os.path.join(sa, "token"), "w") as f:
            f.write(api.create_token("konnectivity-agent", "kube-system", kubeapi.ISSUER))
        shutil.copy(os.path.join(api.pki, "ca.crt"), os.path.join(sa, "ca.crt"))
        with open(os.path.join(dropins, "50-cluster.conf"), "w") as f:
            f.write('proxy-server-host = "127.0.0.1";\nproxy-server-port = %d;\n' % agent_port)
        for p in (tokens, sa, dropins):
            os.chmod(p, 0o755)
            for n in os.listdir(p):
                os.chmod(os.path.join(p, n), 0o644)
        c = self.manifest_container(api, ["-k", deploy], "DaemonSet")
        env = {"NODE_NAME": "image-node", "HOST_IP": "127.0.0.1",
               "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
        argv = c["command"] + rewrite(c["args"], {
            "health-server-port": str(agent_health), "admin-server-port": "0", "drain-timeout": "3s"}, env)
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        agent = self.run_container("agent", argv, [
            (tokens, mounts["konnectivity-agent-token"]), (dropins, mounts["config"]),
            (sa, "/var/run/secrets/kubernetes.io/serviceaccount")], ["%s=%s" % kv for kv in env.items()])
        self.wait_log(server, r"Agent 'image-node' connected", 30)
        self.wait_log(agent, r"Connected to server 'cp-1'", 30)
        self.assertEqual(self.http_get(agent_health, "/readyz")[0], 200)

        kubelet = api.start_kubelet("image-node", "127.0.0.1")
        self.addCleanup(kubelet.close)
        api.create_pod("token-pod", "konn-image", "image-node")
        body = konntest.Pattern(konntest.MIB, seed=43).bytes()
        kubelet.logs[("konn-image", "token-pod", "main")] = body
        r = api.kubectl("logs", "-n", "konn-image", "token-pod", raw=True, timeout=120)
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), hashlib.sha256(body).hexdigest())


if __name__ == "__main__":
    konntest.main()
