# SPDX-License-Identifier: Apache-2.0
"""hatest — what the high-availability tests (tests/ha, issue 6) add to the integration harness.

Owns: konn-server/konn-agent start helpers with health and admin ports, per-server Unix sockets, bind addresses
127.0.0.1..3 and a server certificate valid for those three addresses (made once per process with the test CA of
tests/gen-certs.sh, in konntest's certs directory); a plain HTTP/1.1 GET client for the health/admin ports; a
Prometheus text parser; a round-robin TCP load balancer (threads, stopped in cleanup); SIGSTOP/SIGCONT with a
guaranteed SIGCONT in cleanup.
It imports tests/integration/konntest.py (not copied) and extends its KonnTestCase; every wait is bounded and
scaled by konntest.T. Standard library only, /usr/bin/python3.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402

LOOPBACKS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")

# Exact bodies of §9.1 and the task brief.
SERVER_NOT_READY = b"no connection to any proxy agent"
AGENT_NOT_READY = b"[+]ping ok\n[-]server-connected failed: no servers connected\nreadyz check failed\n"
AGENT_READY_VERBOSE = b"[+]ping ok\n[+]server-connected ok\nreadyz check passed\n"
RESP_504_DIAL_TIMEOUT = (b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                         b"Backend dial timeout: timed out waiting for backend dial\r\n")

M = "konnectivity_network_proxy_"
AGENT_OPEN = M + "agent_open_server_connections"
AGENT_KNOWN = M + "agent_known_server_count"


def resp_dial_error(status, text):
    """The response to a CONNECT whose dial the agent answered with an error (§7.1)."""
    return (b"HTTP/1.1 " + status.encode() + b"\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8"
            b"\r\n\r\n" + text.encode())


# --------------------------------------------------------------------------------------------------------------
# A server certificate valid for 127.0.0.1, 127.0.0.2 and 127.0.0.3 (the agent checks each address it dials)

_ha_lock = threading.Lock()


def ha_server_cert(name="ha-server", ips=LOOPBACKS):
    """(crt, key) paths of a server certificate with SAN IP:127.0.0.1..3 (or the given ips), DNS:localhost, signed
    by the test CA; made next to the test PKI (konntest's per-process certs directory), again if it vanished."""
    with _ha_lock:
        d = kt.certs_dir()
        crt, key, csr, ext, srl = (os.path.join(d, n) for n in (name + ".crt", name + ".key", name + ".csr",
                                                               name + ".ext", name + "-ca.srl"))
        if os.path.exists(crt) and os.path.exists(key):
            return crt, key
        with open(ext, "w") as f:
            f.write("subjectAltName = DNS:localhost," + ",".join("IP:" + ip for ip in ips) + "\n"
                    "extendedKeyUsage = serverAuth,clientAuth\nbasicConstraints = CA:FALSE\n")
        for argv in (["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key + ".tmp"],
                     ["openssl", "req", "-new", "-key", key + ".tmp", "-subj", "/CN=konn-ha-server", "-out", csr],
                     ["openssl", "x509", "-req", "-in", csr, "-CA", kt.cert("ca.crt"), "-CAkey", kt.cert("ca.key"),
                      "-CAcreateserial", "-CAserial", srl, "-days", "30", "-sha256", "-extfile", ext,
                      "-out", crt + ".tmp"]):
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            if r.returncode != 0 or not os.path.exists(argv[-1]):
                raise RuntimeError("%s failed (exit status %d): %r" % (" ".join(argv), r.returncode,
                                                                       r.stdout.decode(errors="replace")))
        os.chmod(key + ".tmp", 0o600)
        os.rename(key + ".tmp", key)
        os.rename(crt + ".tmp", crt)
        return crt, key


# --------------------------------------------------------------------------------------------------------------
# HTTP GET and Prometheus text


class HttpResult:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def __repr__(self):
        return "HttpResult(%d %s, %r, %r)" % (self.status, self.reason, self.headers, self.body[:200])


def http_get(port, path, host="127.0.0.1", timeout=5):
    """One GET over a fresh connection (Connection: close), read to EOF; no redirect following."""
    with socket.create_connection((host, port), timeout=T(timeout)) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (path, host, port)).encode())
        buf = bytearray()
        while True:
            b = s.recv(65536)
            if not b:
                break
            buf += b
    head, sep, body = bytes(buf).partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("incomplete HTTP response from port %d %s: %r" % (port, path, bytes(buf[:300])))
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"^HTTP/1\.[01] (\d{3}) ?(.*)$", lines[0])
    if not m:
        raise AssertionError("bad status line %r" % lines[0])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(body) != n:
            raise AssertionError("body of %d bytes, Content-Length %d" % (len(body), n))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = bytearray(), body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2:]
        body = bytes(out)
    return HttpResult(int(m.group(1)), m.group(2), headers, body)


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """A parsed Prometheus text exposition: samples[(name, ((label, value), ...))] = float; help/type per family."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        self.help = {}
        self.type = {}
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name, _, h = line[7:].partition(" ")
                self.help[name] = h
            elif line.startswith("# TYPE "):
                name, _, t = line[7:].partition(" ")
                self.type[name] = t
            elif line and not line.startswith("#"):
                m = _SAMPLE_RE.match(line)
                if not m:
                    raise AssertionError("unparsable metrics line %r" % line)
                labels = tuple(sorted(_LABEL_RE.findall(m.group(3) or "")))
                self.samples[(m.group(1), labels)] = float(m.group(4))

    def get(self, name, default=None, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))), default)

    def value(self, name, **labels):
        """A labelled child never touched is absent (as with Go's *Vec); it counts as 0."""
        return self.get(name, 0.0, **labels)

    def series(self, name):
        """{labels-dict-as-tuple: value} of every sample of `name`."""
        return {lb: v for (n, lb), v in self.samples.items() if n == name}

    def lines_of(self, family):
        return [ln for ln in self.text.splitlines()
                if ln.startswith("# HELP %s " % family) or ln.startswith("# TYPE %s " % family)]


# --------------------------------------------------------------------------------------------------------------
# Round-robin TCP load balancer


class LoadBalancer:
    """Listens on 127.0.0.1:<port>; every accepted connection goes to the next backend in turn (round robin), with
    one thread per direction. A backend that refuses is skipped for the next one (redispatch, as HAProxy or a
    Service without the dead endpoint); with none left the client connection is closed. close() stops
    everything."""

    def __init__(self, backends, port=0):
        self.backends = list(backends)   # [(host, port)]
        self.next = 0
        self.picks = []                  # backend index per forwarded connection
        self.lock = threading.Lock()
        self.socks = set()
        self.threads = []
        self.stopping = False
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(128)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name="lb-accept")
        self._acceptor.start()

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            b = None
            for _ in range(len(self.backends)):
                with self.lock:
                    i = self.next % len(self.backends)
                    self.next += 1
                    host, port = self.backends[i]
                try:
                    b = socket.create_connection((host, port), timeout=2)
                except OSError:
                    continue
                with self.lock:
                    self.picks.append(i)
                break
            if b is None:
                c.close()
                continue
            c.settimeout(None)
            b.settimeout(None)
            with self.lock:
                if self.stopping:
                    c.close()
                    b.close()
                    return
                self.socks.update((c, b))
                for src, dst in ((c, b), (b, c)):
                    t = threading.Thread(target=self._pump, args=(src, dst), daemon=True, name="lb-pump")
                    self.threads.append(t)
                    t.start()

    def _pump(self, src, dst):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
        except OSError:
            pass
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    def close(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        self._acceptor.join(T(2))
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(T(2))
        for s in socks:
            s.close()


# --------------------------------------------------------------------------------------------------------------
# Test case base


class HaTestCase(kt.KonnTestCase):
    """KonnTestCase plus servers/agents with health and admin ports and SIGSTOP bookkeeping."""

    def setUp(self):
        super().setUp()
        self.stopped = []
        # Registered after konntest's cleanup, so it runs first: no daemon is left stopped for SIGTERM.
        self.addCleanup(self._resume_all)

    def _resume_all(self):
        for d in self.stopped:
            if d.alive():
                try:
                    os.kill(d.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def sigstop(self, d):
        self.stopped.append(d)
        os.kill(d.pid, signal.SIGSTOP)

    def sigcont(self, d):
        os.kill(d.pid, signal.SIGCONT)

    # -- daemons ---------------------------------------------------------------------------------------------

    def start_konn_server(self, server_id, bind="127.0.0.1", agent_port=None, count=1, strategies=None,
                          mode="http-connect", extra=(), ha_cert=False, name=None, prefix=(), cert=None):
        """konn-server with the UDS frontend <dir>/<server_id>.sock, agent listener bind:agent_port (a free port if
        None), health and admin ports on 127.0.0.1. Waits for the startup line. The Daemon gets the attributes
        server_id, bind, agent_port, health_port, admin_port, sock_path. `prefix` goes before the command (e.g.
        ["prlimit", "--nofile=128"], which execs it, so the pid stays the daemon's); `cert` a (crt, key) pair for
        the agent listener."""
        crt, key = cert or (ha_server_cert() if ha_cert else (kt.cert("server.crt"), kt.cert("server.key")))
        sock_path = os.path.join(self.dir, server_id + ".sock")
        for attempt in range(3):
            ap = agent_port or kt.free_port()
            hp, adp = kt.free_port(), kt.free_port()
            argv = [kt.SERVER_BIN, "--config=" + self.empty_conf, "--mode=" + mode,
                    "--agent-port=%d" % ap, "--agent-bind-address=" + bind,
                    "--health-port=%d" % hp, "--health-bind-address=127.0.0.1", "--admin-port=%d" % adp,
                    "--cluster-cert=" + crt, "--cluster-key=" + key, "--cluster-ca-cert=" + kt.cert("ca.crt"),
                    "--server-id=" + server_id, "--server-count=%d" % count,
                    "--uds-name=" + sock_path, "--server-port=0",
                    "--log-level=debug", "--log-target=stderr-fields"]
            if strategies is not None:
                argv.append("--proxy-strategies=" + strategies)
            argv += list(extra)
            d = kt.Daemon(name or "server-%s" % server_id, list(prefix) + argv, self.dir).start()
            self.daemons.append(d)
            try:
                d.wait_for(MESSAGE_ID=kt.MSG_STARTED, timeout=10)
            except AssertionError:
                if not d.alive() and "Failed to listen" in d.text() and attempt < 2:
                    d.stop()
                    self.daemons.remove(d)
                    continue
                raise
            d.server_id, d.bind, d.agent_port, d.health_port, d.admin_port, d.sock_path = \
                server_id, bind, ap, hp, adp, sock_path
            return d
        raise AssertionError("could not start konn-server %s" % server_id)

    def start_konn_agent(self, agent_id="node1", hosts="127.0.0.1", port=None, identifiers=None, extra=(),
                         name=None, wait_server=None, prefix=()):
        """konn-agent towards hosts (comma list) : port, health and admin ports on 127.0.0.1 (attributes
        health_port, admin_port, agent_id). wait_server: a server Daemon whose 'Agent connected' line (and the
        agent's 'Connected to server' line) is awaited."""
        since = wait_server.mark() if wait_server else 0
        hp, adp = kt.free_port(), kt.free_port()
        argv = [kt.AGENT_BIN, "--config=" + self.empty_conf,
                "--proxy-server-host=" + hosts, "--proxy-server-port=%d" % (port or wait_server.agent_port),
                "--ca-cert=" + kt.cert("ca.crt"), "--agent-id=" + agent_id,
                "--agent-cert=" + kt.cert("agent.crt"), "--agent-key=" + kt.cert("agent.key"),
                "--health-server-host=127.0.0.1", "--health-server-port=%d" % hp,
                "--admin-server-port=%d" % adp, "--admin-bind-address=127.0.0.1",
                "--log-level=debug", "--log-target=stderr-fields"]
        if identifiers is not None:
            argv.append("--agent-identifiers=" + identifiers)
        argv += list(extra)
        d = kt.Daemon(name or "agent-%s" % agent_id, list(prefix) + argv, self.dir).start()
        self.daemons.append(d)
        d.agent_id, d.health_port, d.admin_port = agent_id, hp, adp
        d.wait_for(MESSAGE_ID=kt.MSG_STARTED, timeout=10)
        if wait_server is not None:
            d.wait_for(r"^Connected to server '%s'" % re.escape(wait_server.server_id), timeout=10,
                       MESSAGE_ID=kt.MSG_SERVER_CONNECTED)
            wait_server.wait_for(r"^Agent '%s' connected" % re.escape(agent_id), since=since, timeout=10,
                                 MESSAGE_ID=kt.MSG_AGENT_CONNECTED, KONN_AGENT_ID=agent_id)
        return d

    # -- health, admin, metrics ------------------------------------------------------------------------------

    def get(self, port, path, host="127.0.0.1"):
        return http_get(port, path, host)

    def metrics(self, d):
        r = http_get(d.health_port, "/metrics")
        self.assertEqual(r.status, 200, r)
        return Metrics(r.body.decode())

    def metric(self, d, name, **labels):
        return self.metrics(d).value(name, **labels)

    def wait_metric(self, d, name, value, timeout=10, **labels):
        """Poll d's /metrics (bounded) until name{labels} == value; returns the monotonic time it was seen."""
        deadline = time.monotonic() + T(timeout)
        last = None
        while True:
            try:
                last = self.metric(d, name, **labels)
            except (OSError, AssertionError) as e:
                last = repr(e)
            if last == value:
                return time.monotonic()
            if time.monotonic() >= deadline:
                raise AssertionError("%s: %s%r is %r, expected %r within %.1f s" % (d.name, name, labels, last, value,
                                                                                   T(timeout)))
            time.sleep(0.02)

    def admin_json(self, server, what):
        r = http_get(server.admin_port, "/" + what)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("content-type"), "application/json")
        return json.loads(r.body)

    def tunnel_agents(self, server):
        """The "agent" of every tunnel the server lists now (/tunnels on the admin port)."""
        return [t["agent"] for t in self.admin_json(server, "tunnels")]

    # -- frontends -------------------------------------------------------------------------------------------

    def client_of(self, server, timeout=10):
        return self.track(kt.Client.uds(server.sock_path, timeout))

    def tunnel_via(self, server, dest):
        return self.open_tunnel(dest, client=self.client_of(server))

    def connect_expect(self, server, dest, timeout=10):
        """CONNECT dest through server; returns everything until EOF (for failure responses)."""
        c = self.client_of(server)
        c.send_connect(dest)
        return c.read_to_eof(timeout=timeout)


def main():
    kt.main()
