#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""mkimage.py — write konn's OCI image (an OCI image layout packed as a tar, "oci-archive") from built daemons.

Offline and without a container engine: the image is one layer holding only what the daemons need at run time
— konn-server and konn-agent (stripped), the shared libraries ldd(1) lists for them and the dynamic loader (with
the host's symlinks on the way, e.g. /lib -> usr/lib), the CA bundle, passwd/group with the non-root user
konn (65532:65532), an nsswitch.conf, empty mount points for config drop-ins and the frontend socket, and the
licence. No shell, no package manager. The tar is reproducible: entries sorted, owners numeric, every mtime and
the gzip header time set to --created, so the same binaries give the same digests.

Both daemons share one image: they are built from one tree, link the same libraries (about 90 % of the bytes),
and an operator pins one version for both; the Pod picks the daemon by its command (konn-server / konn-agent).

Usage: mkimage.py --server BIN --agent BIN --version V --output FILE.oci.tar [--revision R] [--source URL]
                  [--created EPOCH] [--license-file FILE] [--ref-name NAME] [--ca-bundle FILE] [--strip PROG]
Prints one line per artefact with sizes; exit status non-zero on any error.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

UID = GID = 65532
USER = "konn"
PORTS = (8090, 8091, 8092, 8093, 8094, 8095)  # upstream: frontend, agent, server health, agent health/admin, admin

ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


class Root:
    """The image's file tree: path (no leading "/") -> entry; directories are implied by their children."""

    def __init__(self, mtime):
        self.mtime = mtime
        self.entries = {}

    def _dirs_of(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                self.entries[d] = ("dir", 0o755, 0, 0, None)

    def add_dir(self, path, mode=0o755, uid=0, gid=0):
        path = path.strip("/")
        self._dirs_of(path)
        self.entries[path] = ("dir", mode, uid, gid, None)

    def add_bytes(self, path, data, mode=0o644):
        path = path.strip("/")
        self._dirs_of(path)
        self.entries[path] = ("file", mode, 0, 0, data)

    def add_symlink(self, path, target):
        path = path.strip("/")
        self._dirs_of(path)
        self.entries[path] = ("symlink", 0o777, 0, 0, target)

    def add_host_path(self, path, data=None):
        """Copy host file `path` (or `data` under that name), replicating every symlink met on the way so that
        the name resolves inside the image as it does on the host."""
        path = os.path.normpath(path)
        parts = path.strip("/").split("/")
        cur = ""
        for i, p in enumerate(parts):
            cur = cur + "/" + p
            st = os.lstat(cur)
            if os.path.islink(cur):
                target = os.readlink(cur)
                self.add_symlink(cur, target)
                resolved = os.path.normpath(os.path.join(os.path.dirname(cur), target))
                rest = "/".join(parts[i + 1:])
                return self.add_host_path(os.path.join(resolved, rest) if rest else resolved, data)
            if i < len(parts) - 1:
                continue
            if data is None:
                with open(cur, "rb") as f:
                    data = f.read()
            self.add_bytes(cur, data, st.st_mode & 0o755)
            return

    def write_tar(self, fileobj):
        with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                kind, mode, uid, gid, data = self.entries[path]
                ti = tarfile.TarInfo(path)
                ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = self.mtime, mode, uid, gid, "", ""
                if kind == "dir":
                    ti.type = tarfile.DIRTYPE
                    tar.addfile(ti)
                elif kind == "symlink":
                    ti.type, ti.linkname = tarfile.SYMTYPE, data
                    tar.addfile(ti)
                else:
                    ti.size = len(data)
                    tar.addfile(ti, io.BytesIO(data))


def ldd_paths(binary):
    """Absolute paths of the shared objects and the loader that `binary` needs (ldd output)."""
    out = subprocess.run(["ldd", binary], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True).stdout
    paths = []
    for line in out.splitlines():
        line = line.strip()
        m = re.match(r"^\S+ => (/\S+) \(0x[0-9a-f]+\)$", line) or re.match(r"^(/\S+) \(0x[0-9a-f]+\)$", line)
        if m:
            paths.append(m.group(1))
        elif "not found" in line:
            raise SystemExit("mkimage: %s: %s" % (binary, line))
    if not paths:
        raise SystemExit("mkimage: ldd found no libraries for %s (static binaries are not expected)" % binary)
    return paths


def find_library(soname):
    """The path of a library the daemons dlopen() (ldconfig's cache), for libraries ldd cannot see."""
    out = subprocess.run(["ldconfig", "-p"], check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
    for line in out.splitlines():
        m = re.match(r"^\s*(\S+) \(([^)]*)\) => (/\S+)$", line)
        if m and m.group(1) == soname and ("x86-64" in m.group(2) or platform.machine() != "x86_64"):
            return m.group(3)
    raise SystemExit("mkimage: %s not found (ldconfig -p)" % soname)


def stripped(binary, strip):
    with tempfile.TemporaryDirectory(prefix="konn-mkimage.") as d:
        out = os.path.join(d, os.path.basename(binary))
        subprocess.run([strip, "--strip-unneeded", "-o", out, binary], check=True)
        with open(out, "rb") as f:
            return f.read()


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    d = os.path.join(layout, "blobs", "sha256")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--revision", default="")
    ap.add_argument("--source", default="")
    ap.add_argument("--created", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH") or 0))
    ap.add_argument("--license-file", default="")
    ap.add_argument("--ref-name", default="")
    ap.add_argument("--ca-bundle", default="/etc/ssl/certs/ca-certificates.crt")
    ap.add_argument("--strip", default="strip")
    # libcurl is loaded with dlopen() only when a daemon talks to the Kubernetes API (token authentication,
    # leases): ldd does not list it, so it and its dependencies are added by name.
    ap.add_argument("--dlopen", action="append", default=None, metavar="SONAME")
    a = ap.parse_args()

    arch = ARCH.get(platform.machine())
    if not arch:
        raise SystemExit("mkimage: unknown machine %s" % platform.machine())
    root = Root(a.created)

    libs = []
    for name, path in (("konn-server", a.server), ("konn-agent", a.agent)):
        root.add_bytes("usr/sbin/" + name, stripped(path, a.strip), 0o755)
        for p in ldd_paths(path):
            if p not in libs:
                libs.append(p)
    for soname in a.dlopen if a.dlopen is not None else ["libcurl.so.4"]:
        path = find_library(soname)
        for p in [path] + ldd_paths(path):
            if p not in libs:
                libs.append(p)
    for p in libs:
        root.add_host_path(p)

    root.add_bytes("etc/passwd", ("root:x:0:0:root:/root:/usr/sbin/nologin\n"
                                  "%s:x:%d:%d:konn:/nonexistent:/usr/sbin/nologin\n" % (USER, UID, GID)).encode())
    root.add_bytes("etc/group", ("root:x:0:\n%s:x:%d:\n" % (USER, GID)).encode())
    root.add_bytes("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    with open(a.ca_bundle, "rb") as f:
        root.add_bytes("etc/ssl/certs/ca-certificates.crt", f.read())
    if a.license_file:
        with open(a.license_file, "rb") as f:
            root.add_bytes("usr/share/doc/konn/LICENSE", f.read())
    # Mount points: a ConfigMap of drop-ins, the frontend socket's directory; /tmp for anything that insists.
    root.add_dir("etc/konn/konn-server.conf.d")
    root.add_dir("etc/konn/konn-agent.conf.d")
    root.add_dir("run/konn", 0o755, UID, GID)
    root.add_dir("tmp", 0o1777)
    root.add_dir("root", 0o700)

    raw = io.BytesIO()
    root.write_tar(raw)
    raw = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=9, mtime=0) as g:
        g.write(raw)
    gz = gz.getvalue()

    created = datetime.datetime.fromtimestamp(a.created, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "org.opencontainers.image.title": "konn",
        "org.opencontainers.image.description":
            "konn-server and konn-agent: Kubernetes Konnectivity (apiserver network proxy) in C",
        "org.opencontainers.image.version": a.version,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.created": created,
    }
    if a.revision:
        labels["org.opencontainers.image.revision"] = a.revision
    if a.source:
        labels["org.opencontainers.image.source"] = a.source

    with tempfile.TemporaryDirectory(prefix="konn-mkimage.") as layout:
        layer_digest, layer_size = blob(layout, gz)
        config = {
            "created": created,
            "architecture": arch,
            "os": "linux",
            "config": {
                "User": "%d:%d" % (UID, GID),
                "Env": ["PATH=/usr/sbin:/usr/bin", "GLIBC_TUNABLES=glibc.malloc.tcache_count=0"],
                "Cmd": ["konn-agent", "--help"],
                "WorkingDir": "/",
                "ExposedPorts": {"%d/tcp" % p: {} for p in PORTS},
                "StopSignal": "SIGTERM",
                "Labels": labels,
            },
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
            "history": [{"created": created, "created_by": "tools/mkimage.py (konn %s)" % a.version}],
        }
        config_digest, config_size = blob(layout, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                        "size": layer_size}],
            "annotations": labels,
        }
        manifest_digest, manifest_size = blob(layout, json.dumps(manifest, sort_keys=True).encode())
        desc = {"mediaType": manifest["mediaType"], "digest": manifest_digest, "size": manifest_size,
                "platform": {"architecture": arch, "os": "linux"}}
        if a.ref_name:
            desc["annotations"] = {"org.opencontainers.image.ref.name": a.ref_name}
        with open(os.path.join(layout, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [desc]}, f, sort_keys=True)
        with open(os.path.join(layout, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

        tmp = a.output + ".tmp"
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for dirpath, dirnames, filenames in os.walk(layout):
                dirnames.sort()
                for n in sorted(dirnames) + sorted(filenames):
                    full = os.path.join(dirpath, n)
                    ti = tar.gettarinfo(full, os.path.relpath(full, layout))
                    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = a.created, 0, 0, "", ""
                    ti.mode = 0o755 if ti.isdir() else 0o644
                    if ti.isdir():
                        tar.addfile(ti)
                    else:
                        with open(full, "rb") as f:
                            tar.addfile(ti, f)
        os.replace(tmp, a.output)

    print("image %s: manifest %s" % (a.output, manifest_digest))
    print("image size: %d bytes compressed layer, %d bytes unpacked root, %d files, %d shared objects"
          % (layer_size, len(raw), sum(1 for e in root.entries.values() if e[0] == "file"), len(libs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
