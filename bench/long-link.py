#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""long-link — the performance issue's long-link scenario: one tunnel across a link with a delay each way (20 ms by
default), against plain TCP on the same link, upload and download, without and with packet loss.

The link is the fault suite's: tests/faults/netlab.py builds two network namespaces joined by a veth and holds every
packet in its userspace delay line (this kernel has no netem); konn-server runs in the control-plane namespace,
konn-agent and the sink/source targets in the node namespace, and the agent connects after the delay is in place
(so TCP's round-trip estimates are the link's). Plain TCP: a client in the control plane to the same targets. konn:
HTTP CONNECT on the server's Unix socket to 127.0.0.1:PORT, which the agent dials in the node namespace. Each
figure is the median of --runs transfers of --seconds each; the table gives konn / TCP per direction against the
issue's targets (>= 0.8 without loss, >= 0.5 with 1 % loss). Reports numbers, never fails on them; exits 1 only
if the setup fails, and 77 (skip) where the lab cannot run (not root, netlab.py or its delay line missing).

    bench/long-link.py [--rtt-ms=40] [--loss=1] [--runs=3] [--seconds=5] [--builddir=DIR] [--json=FILE]
                       [-- DAEMON-OPTIONS...]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rtt-ms", type=float, default=40.0, help="round trip added by the link (default 40: 20 each way)")
    p.add_argument("--loss", type=float, default=1.0, help="loss in percent for the lossy runs (0: skip them)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--builddir", default=os.environ.get("KONN_BUILDDIR") or SRC)
    p.add_argument("--json")
    p.add_argument("daemon_args", nargs="*", help="extra options for both daemons (after --)")
    return p.parse_args()


def serve(sock, role):
    """sink: read and drop; source: write until the peer goes away. One thread per connection."""
    def conn(c):
        buf = b"\0" * (1 << 20)
        try:
            if role == "sink":
                while c.recv(1 << 20):
                    pass
            else:
                while True:
                    c.sendall(buf)
        except OSError:
            pass
        finally:
            c.close()

    def loop():
        while True:
            try:
                c, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=conn, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


def transfer(sock, direction, seconds):
    """MB/s (10^6 bytes) moved by sock in `direction` ("up": we send, "down": we receive) during `seconds`."""
    data, buf, n = b"\1" * (1 << 20), bytearray(1 << 20), 0
    sock.settimeout(10)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            if direction == "up":
                n += sock.send(data)
            else:
                k = sock.recv_into(buf)
                if not k:
                    break
                n += k
    finally:
        dt = time.monotonic() - t0
        sock.close()
    return n / dt / 1e6


def make_cert(pki, ip):
    """A server certificate for the control plane's address, signed by the test CA."""
    with open(os.path.join(pki, "san.cnf"), "w") as f:
        f.write("subjectAltName = IP:%s\n" % ip)
    for argv in (["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-subj", "/CN=konn-server", "-keyout", pki + "/link.key", "-out", pki + "/link.csr"],
                 ["openssl", "x509", "-req", "-in", pki + "/link.csr", "-CA", pki + "/ca.crt", "-CAkey", pki + "/ca.key",
                  "-CAcreateserial", "-days", "2", "-extfile", pki + "/san.cnf", "-out", pki + "/link.crt"]):
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    a = parse_args()
    sys.path.insert(0, os.path.join(SRC, "tests", "faults"))
    os.environ.setdefault("KONN_BUILDDIR", a.builddir)
    try:
        import netlab
    except ImportError:
        print("long-link: skipped: tests/faults/netlab.py (the fault suite's network lab) is not here")
        return 77
    why = netlab.missing_requirements()
    if why:
        print("long-link: skipped: %s" % why)
        return 77

    tmp = tempfile.mkdtemp(prefix="konn-long-link.")
    pki = os.path.join(tmp, "pki")
    subprocess.run(["sh", os.path.join(SRC, "tests", "gen-certs.sh"), pki], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    conf = os.path.join(tmp, "empty.conf")
    open(conf, "w").close()
    lab = netlab.Lab(prefix="konnbl", subnet="10.214.0", queue=1414)
    make_cert(pki, lab.cp_addr)
    results = {}
    procs = []

    def start(loss):
        lab.clear()
        lab.delay(a.rtt_ms, loss)
        start.n = getattr(start, "n", 0) + 1
        uds = os.path.join(tmp, "k%d.sock" % start.n)
        slog_path = os.path.join(tmp, "server-%d.log" % start.n)
        slog, alog = open(slog_path, "w"), open(os.path.join(tmp, "agent-%d.log" % start.n), "w")
        srv = subprocess.Popen(lab.cmd(lab.cp, [
            os.path.join(a.builddir, "konn-server"), "--config=" + conf, "--log-target=stderr", "--mode=http-connect",
            "--uds-name=" + uds, "--server-port=0", "--agent-port=8091", "--agent-bind-address=" + lab.cp_addr,
            "--health-port=0", "--admin-port=0", "--cluster-cert=" + pki + "/link.crt",
            "--cluster-key=" + pki + "/link.key", "--cluster-ca-cert=" + pki + "/ca.crt", "--server-id=s"] +
            a.daemon_args), stderr=slog)
        procs.append(srv)
        time.sleep(0.3)
        agent = subprocess.Popen(lab.cmd(lab.node, [
            os.path.join(a.builddir, "konn-agent"), "--config=" + conf, "--log-target=stderr",
            "--proxy-server-host=" + lab.cp_addr, "--proxy-server-port=8091", "--ca-cert=" + pki + "/ca.crt",
            "--agent-cert=" + pki + "/agent.crt", "--agent-key=" + pki + "/agent.key", "--agent-id=a1",
            "--health-server-port=0", "--admin-server-port=0"] + a.daemon_args), stderr=alog)
        procs.append(agent)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with open(slog_path) as f:
                if "Agent 'a1' connected" in f.read():
                    return uds
            time.sleep(0.1)
        raise RuntimeError("the agent did not connect across the link")

    def stop():
        while procs:
            p = procs.pop()
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    try:
        lab.up()
        with lab.inside(lab.node):
            ports = {}
            for role in ("sink", "source"):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", 0))
                s.listen(16)
                serve(s, role)
                ports[role] = s.getsockname()[1]
        for loss in ([0.0] + ([a.loss] if a.loss > 0 else [])):
            uds = start(loss)
            for direction, role in (("up", "sink"), ("down", "source")):
                tcp, konn = [], []
                for _ in range(a.runs):
                    with lab.inside(lab.cp):
                        s = socket.create_connection((lab.node_addr, ports[role]), timeout=10)
                    tcp.append(transfer(s, direction, a.seconds))
                    c = socket.socket(socket.AF_UNIX)
                    c.settimeout(10)
                    c.connect(uds)
                    c.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % ports[role])
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        b = c.recv(1)
                        if not b:
                            raise RuntimeError("the tunnel closed before its 200")
                        head += b
                    if b" 200 " not in head.split(b"\r\n")[0]:
                        raise RuntimeError("CONNECT refused: %r" % head)
                    konn.append(transfer(c, direction, a.seconds))
                results["%s loss %g%%" % (direction, loss)] = {
                    "tcp_mb_s": statistics.median(tcp), "konn_mb_s": statistics.median(konn),
                    "tcp_runs": tcp, "konn_runs": konn, "target": 0.8 if loss == 0 else 0.5}
            stop()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print("long-link: setup failed: %s (logs in %s)" % (e, tmp))
        return 1
    finally:
        stop()
        lab.down()

    print("long-link: one tunnel vs plain TCP across %g ms of round trip (%g each way), medians of %d x %g s "
          "(MB = 10^6 bytes)" % (a.rtt_ms, a.rtt_ms / 2, a.runs, a.seconds))
    print("%-22s %10s %10s %7s %-9s %s" % ("direction", "TCP MB/s", "konn MB/s", "ratio", "target", "met"))
    for k, r in results.items():
        ratio = r["konn_mb_s"] / r["tcp_mb_s"] if r["tcp_mb_s"] > 0 else 0
        r["ratio"] = ratio
        print("%-22s %10.1f %10.1f %7.2f >= %-6.1f %s" % (k, r["tcp_mb_s"], r["konn_mb_s"], ratio, r["target"],
                                                         "yes" if ratio >= r["target"] else "NO"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rtt_ms": a.rtt_ms, "runs": a.runs, "seconds": a.seconds, "results": results}, f, indent=2)
    subprocess.run(["rm", "-rf", tmp])
    return 0


if __name__ == "__main__":
    sys.exit(main())
