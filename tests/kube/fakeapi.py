# SPDX-License-Identifier: Apache-2.0
"""fakeapi — a small fake Kubernetes API server over HTTPS for konn's tests: TokenReview
(authentication.k8s.io/v1) and Leases (coordination.k8s.io/v1: get, create, update, delete with resourceVersion
preconditions and 409 conflicts, list with a label selector), with programmable delays and failures.

Owns one ThreadingHTTPServer on 127.0.0.1 (free port, TLS with the konn test PKI's server.crt, which carries
IP:127.0.0.1), its thread, the in-memory objects and the log of requests; close() stops it. It imports
tests/integration/konntest.py for the PKI and ports and grows no harness of its own (the real API server is
kubeapi.py). Standard library only, /usr/bin/python3.

    api = fakeapi.FakeAPI(client_token="konn-server-token")   # the bearer token the daemons must present
    api.add_token("t1", "system:serviceaccount:kube-system:konn-agent", audiences=["system:konnectivity-server"])
    api.write_kubeconfig(path)                                # for --kubeconfig
    api.delay = 3                                             # seconds before answering TokenReviews
    api.fail = 503                                            # every request answers 503 (None: normal)
    api.close()
"""

import base64
import http.server
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import konntest as kt  # noqa: E402

LEASES = "/apis/coordination.k8s.io/v1/namespaces/"
TOKENREVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


def jwt(exp, sub="x"):
    """An unsigned JWT-shaped token with an exp claim (the fake API decides validity by its own table)."""
    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return "%s.%s.sig" % (b64({"alg": "none"}), b64({"exp": int(exp), "sub": sub}))


def micro_time(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def parse_time(s):
    base, _, frac = s.rstrip("Z").partition(".")
    return time.mktime(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) - time.timezone + (float("0." + frac) if frac else 0)


def status(code, reason, message):
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                  "reason": reason, "code": code}


class FakeAPI:
    def __init__(self, client_token="konn-server-token"):
        self.client_token = client_token   # None: any bearer token is accepted
        self.tokens = {}                   # token -> (username, audiences, exp or None)
        self.leases = {}                   # (ns, name) -> object
        self.rv = 100
        self.delay = 0                     # seconds, TokenReview only
        self.fail = None                   # None, or an HTTP status every request gets
        self.fail_paths = ()               # with fail: only paths starting with one of these (empty: all)
        self.on_delete = None              # callback(ns, name) run before a DELETE is decided (tests race it)
        self.requests = []                 # (method, path, headers dict, body dict or None)
        self.lock = threading.Lock()
        self.conns = set()                 # open client connections (closed by close(): "the API server died")
        self.port = kt.free_port()
        self.url = "https://127.0.0.1:%d" % self.port
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with api.lock:
                    api.conns.add(self.connection)

            def finish(self):
                with api.lock:
                    api.conns.discard(self.connection)
                super().finish()

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                code, obj = api.dispatch(self.command, self.path, dict(self.headers), body)
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(kt.cert("server.crt"), kt.cert("server.key"))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fakeapi", daemon=True)
        self.thread.start()

    def close(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            with self.lock:
                conns = list(self.conns)
            for c in conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.thread.join(10)
            self.httpd = None

    # -- setup ---------------------------------------------------------------------------------------------------

    def add_token(self, token, username, audiences=("system:konnectivity-server",), exp=None):
        with self.lock:
            self.tokens[token] = (username, list(audiences), exp)

    def remove_token(self, token):
        with self.lock:
            self.tokens.pop(token, None)

    def put_lease(self, name, ns="kube-system", holder="x", renew=None, duration=30,
                  labels=None):
        """Store a Lease directly (renew: epoch seconds of renewTime). Returns its resourceVersion."""
        with self.lock:
            self.rv += 1
            obj = {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
                   "metadata": {"name": name, "namespace": ns, "resourceVersion": str(self.rv),
                                "labels": labels if labels is not None else {"k8s-app": "konnectivity-server"}},
                   "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                            "renewTime": micro_time(renew if renew is not None else time.time())}}
            self.leases[(ns, name)] = obj
            return str(self.rv)

    def lease(self, name, ns="kube-system"):
        with self.lock:
            return json.loads(json.dumps(self.leases.get((ns, name)))) if (ns, name) in self.leases else None

    def lease_names(self, ns="kube-system"):
        with self.lock:
            return sorted(n for (s, n) in self.leases if s == ns)

    def count(self, method, prefix):
        with self.lock:
            return sum(1 for m, p, _, _ in self.requests if m == method and p.startswith(prefix))

    def reviews(self):
        """The TokenReview request bodies seen, oldest first."""
        with self.lock:
            return [b for m, p, _, b in self.requests if m == "POST" and p == TOKENREVIEWS]

    def write_kubeconfig(self, path, token=None, token_file=None):
        user = ("    tokenFile: %s\n" % token_file) if token_file else ("    token: %s\n" % (token or self.client_token))
        with open(path, "w") as f:
            f.write("apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
                    "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: konn\n"
                    "clusters:\n- name: fake\n  cluster:\n    server: %s\n    certificate-authority: %s\n"
                    "users:\n- name: konn\n  user:\n%s" % (self.url, kt.cert("ca.crt"), user))
        return path

    # -- the API ---------------------------------------------------------------------------------------------------

    def dispatch(self, method, path, headers, body):
        with self.lock:
            self.requests.append((method, path, headers, body))
            fail = self.fail
            fail_paths = self.fail_paths
        if fail and (not fail_paths or any(path.startswith(p) for p in fail_paths)):
            return status(fail, "InternalError", "injected failure")
        auth = headers.get("Authorization") or headers.get("authorization") or ""
        if self.client_token is not None and auth != "Bearer " + self.client_token:
            return status(401, "Unauthorized", "Unauthorized")
        if method == "POST" and path == TOKENREVIEWS:
            if self.delay:
                time.sleep(self.delay)
            return self.token_review(body or {})
        if path.startswith(LEASES):
            u = urllib.parse.urlparse(path)
            parts = u.path[len(LEASES):].split("/")
            if len(parts) >= 2 and parts[1] == "leases":
                ns = parts[0]
                name = parts[2] if len(parts) > 2 else None
                with self.lock:
                    return self.lease_op(method, ns, name, urllib.parse.parse_qs(u.query), body)
        return status(404, "NotFound", "the server could not find the requested resource")

    def token_review(self, body):
        spec = body.get("spec") or {}
        token = spec.get("token", "")
        want = spec.get("audiences") or []
        out = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "spec": spec, "status": {}}
        with self.lock:
            entry = self.tokens.get(token)
        if entry is None:
            out["status"] = {"authenticated": False, "error": "invalid bearer token"}
        else:
            user, auds, exp = entry
            if want and not set(want) & set(auds):
                out["status"] = {"authenticated": False, "error": "token audiences mismatch"}
            elif exp is not None and exp <= time.time():
                out["status"] = {"authenticated": False, "error": "token has expired"}
            else:
                out["status"] = {"authenticated": True, "user": {"username": user},
                                 "audiences": sorted(set(want) & set(auds)) if want else auds}
        return 201, out

    def lease_op(self, method, ns, name, query, body):
        key = (ns, name)
        if method == "GET" and name is None:
            sel = dict(kv.split("=", 1) for kv in (query.get("labelSelector", [""])[0]).split(",") if "=" in kv)
            items = [o for (s, _), o in sorted(self.leases.items()) if s == ns and
                     all((o["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())]
            self.rv += 1
            return 200, {"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
                         "metadata": {"resourceVersion": str(self.rv)}, "items": items}
        if method == "GET":
            if key not in self.leases:
                return status(404, "NotFound", 'leases.coordination.k8s.io "%s" not found' % name)
            return 200, self.leases[key]
        if method == "POST" and name is None:
            name = ((body or {}).get("metadata") or {}).get("name")
            if not name or (body or {}).get("kind") != "Lease":
                return status(422, "Invalid", "Lease is invalid")
            if (ns, name) in self.leases:
                return status(409, "AlreadyExists", 'leases.coordination.k8s.io "%s" already exists' % name)
            self.rv += 1
            body["metadata"]["resourceVersion"] = str(self.rv)
            self.leases[(ns, name)] = body
            return 201, body
        if method == "PUT":
            if key not in self.leases:
                return status(404, "NotFound", 'leases.coordination.k8s.io "%s" not found' % name)
            have = self.leases[key]["metadata"]["resourceVersion"]
            if (body or {}).get("metadata", {}).get("resourceVersion") != have:
                return status(409, "Conflict", 'Operation cannot be fulfilled on leases.coordination.k8s.io "%s": '
                              'the object has been modified; please apply your changes to the latest version and '
                              'try again' % name)
            self.rv += 1
            body["metadata"]["resourceVersion"] = str(self.rv)
            self.leases[key] = body
            return 200, body
        if method == "DELETE":
            if self.on_delete:
                self.lock.release()
                try:
                    self.on_delete(ns, name)
                finally:
                    self.lock.acquire()
            if key not in self.leases:
                return status(404, "NotFound", 'leases.coordination.k8s.io "%s" not found' % name)
            pre = ((body or {}).get("preconditions") or {}).get("resourceVersion")
            if pre is not None and pre != self.leases[key]["metadata"]["resourceVersion"]:
                return status(409, "Conflict", "Precondition failed: ResourceVersion in precondition: %s, "
                              "ResourceVersion in object meta: %s" % (pre, self.leases[key]["metadata"]
                                                                       ["resourceVersion"]))
            del self.leases[key]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return status(405, "MethodNotAllowed", "method not allowed")
