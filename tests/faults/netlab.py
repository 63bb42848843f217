# SPDX-License-Identifier: Apache-2.0
"""netlab — a two-namespace network with controllable faults, for the fault-injection suite (tests/faults) and the
long-link benchmark. Root only; standard library only, /usr/bin/python3.

Topology (names and addresses are the prefix's, so parallel users do not collide; the defaults are issue 13's):

    <prefix>-cp  (control plane: konn-server, frontend clients)      <prefix>-node (konn-agent, its targets)
      lo, <prefix>c  10.213.0.1/24  ==== veth ====  <prefix>n  10.213.0.2/24, lo

Faults, each applied inside the namespaces only, all undone by clear() and by down():
  delay(rtt_ms, loss_pct)  tests/faults/delayline in both namespaces holds every packet arriving over the veth for
                           rtt_ms/2 and drops loss_pct % of them (iptables NFQUEUE --queue-bypass on INPUT, so a
                           stopped delay line leaves a clean link; INPUT, not OUTPUT, so TCP small queues do not
                           throttle the sender). The kernel has no netem; this is the substitute.
  blackhole(to_node, to_cp) iptables DROP of the veth traffic in one or both directions (no RST, no ICMP);
                           heal() removes it.
  reset(ns, ss_filter)     `ss -K` in a namespace: the matching TCP sockets are destroyed (the peer sees an RST on
                           its next packet).
  stateful_firewall(port)  in the control plane, accept only SYNs and packets conntrack knows for `port`
                           (nf_conntrack_tcp_loose=0): flush_conntrack() then behaves as a NAT gateway losing its state.

Python processes run code "inside" a namespace with `with lab.inside(lab.node): sock = ...`: the calling thread
switches namespace (setns(2)) for the block; sockets keep the namespace they were created in, so loopback target
servers of konntest (EchoServer, SinkServer, ...) made inside the block live in that namespace. Commands run in a
namespace with lab.cmd(ns, argv) (an argv for kt.Daemon or subprocess) or lab.run(ns, argv).

Usage:
    lab = netlab.Lab()          # prefix "konn13", subnet 10.213.0
    lab.up()                    # removes leftovers of an earlier run first
    try: ... finally: lab.down()
"""

import contextlib
import ctypes
import os
import shutil
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILDDIR = os.path.abspath(os.environ.get("KONN_BUILDDIR") or REPO)
DELAYLINE = os.path.join(BUILDDIR, "tests", "faults", "delayline")
CLONE_NEWNET = 0x40000000
CHAIN = "KONNLAB"

_libc = ctypes.CDLL(None, use_errno=True)


def missing_requirements():
    """Why the lab cannot run here (a string), or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables", "ss", "conntrack"):
        if not shutil.which(tool):
            return "%s is not installed" % tool
    if not os.access(DELAYLINE, os.X_OK):
        return "%s is not built (libnetfilter-queue-dev missing?)" % DELAYLINE
    return None


def _setns(fd, what):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns(%s): %s" % (what, os.strerror(e)))


class Lab:
    def __init__(self, prefix="konn13", subnet="10.213.0", queue=1313):
        self.prefix = prefix
        self.cp, self.node = prefix + "-cp", prefix + "-node"
        self.cp_if, self.node_if = prefix + "c", prefix + "n"
        self.cp_addr, self.node_addr = subnet + ".1", subnet + ".2"
        self.queue = queue
        self.delaylines = []
        self.is_up = False

    # -- plumbing ------------------------------------------------------------------------------------------------

    def cmd(self, ns, argv):
        return ["ip", "netns", "exec", ns] + list(argv)

    def run(self, ns, argv, check=True, timeout=30):
        argv = self.cmd(ns, argv) if ns else list(argv)
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stdout.decode(errors="replace")))
        return r.stdout.decode(errors="replace")

    @contextlib.contextmanager
    def inside(self, ns):
        """Run the block with this thread in namespace ns (sockets made here stay there)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fd = os.open("/run/netns/" + ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, ns)
            finally:
                os.close(fd)
            try:
                yield
            finally:
                _setns(home, "the original namespace")
        finally:
            os.close(home)

    def up(self):
        self.down()
        self.run(None, ["ip", "netns", "add", self.cp])
        self.run(None, ["ip", "netns", "add", self.node])
        self.is_up = True
        self.run(None, ["ip", "link", "add", self.cp_if, "netns", self.cp, "type", "veth",
                        "peer", "name", self.node_if, "netns", self.node])
        for ns, ifname, addr in ((self.cp, self.cp_if, self.cp_addr), (self.node, self.node_if, self.node_addr)):
            self.run(ns, ["ip", "link", "set", "lo", "up"])
            self.run(ns, ["ip", "addr", "add", addr + "/24", "dev", ifname])
            self.run(ns, ["ip", "link", "set", ifname, "up"])
            for hook in ("INPUT", "OUTPUT"):
                self.run(ns, ["iptables", "-w", "-N", CHAIN + "-" + hook])
                self.run(ns, ["iptables", "-w", "-I", hook, "-j", CHAIN + "-" + hook])
        return self

    def down(self):
        self.stop_delay()
        for ns in (self.cp, self.node):
            self.run(None, ["ip", "netns", "del", ns], check=False)
        self.is_up = False

    # -- faults --------------------------------------------------------------------------------------------------

    def _ipt(self, ns, hook, rule, add=True):
        self.run(ns, ["iptables", "-w", "-A" if add else "-D", CHAIN + "-" + hook] + rule)

    def clear(self):
        """Remove every fault: no delay line, no drop or firewall rule (conntrack entries stay)."""
        self.stop_delay()
        for ns in (self.cp, self.node):
            for hook in ("INPUT", "OUTPUT"):
                self.run(ns, ["iptables", "-w", "-F", CHAIN + "-" + hook])

    def delay(self, rtt_ms, loss_pct=0.0, seed=1, gso=False):
        """Hold each packet rtt_ms/2 on arrival in either namespace; drop loss_pct % of them (per direction)."""
        self.stop_delay()
        for i, (ns, ifname) in enumerate(((self.cp, self.cp_if), (self.node, self.node_if))):
            argv = [DELAYLINE, "--queue=%d" % self.queue, "--delay-ms=%g" % (rtt_ms / 2.0),
                    "--loss=%g" % loss_pct, "--seed=%d" % (seed + i)] + (["--gso"] if gso else [])
            p = subprocess.Popen(self.cmd(ns, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            line = p.stdout.readline()
            if line.strip() != b"ready":
                p.kill()
                p.wait()
                raise RuntimeError("delayline did not start in %s: %r" % (ns, line + p.stdout.read()))
            self.delaylines.append(p)
            self._ipt(ns, "INPUT", ["-i", ifname, "-j", "NFQUEUE", "--queue-num", str(self.queue),
                                    "--queue-bypass"])

    def stop_delay(self):
        """Stop the delay lines (held packets are released); returns their "packets=... dropped=..." lines."""
        out = []
        for p in self.delaylines:
            p.terminate()
            try:
                out.append(p.communicate(timeout=10)[0].decode(errors="replace").strip())
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.delaylines = []
        if self.is_up:
            for ns in (self.cp, self.node):
                rules = self.run(ns, ["iptables", "-w", "-S", CHAIN + "-INPUT"], check=False)
                for line in rules.splitlines():
                    if "NFQUEUE" in line:
                        self.run(ns, ["iptables", "-w"] + ["-D"] + line.split()[1:], check=False)
        return out

    def blackhole(self, to_node=True, to_cp=True):
        """Drop veth traffic silently: towards the node, towards the control plane, or both."""
        if to_node:
            self._ipt(self.node, "INPUT", ["-i", self.node_if, "-j", "DROP"])
        if to_cp:
            self._ipt(self.cp, "INPUT", ["-i", self.cp_if, "-j", "DROP"])

    def heal(self):
        for ns, ifname in ((self.node, self.node_if), (self.cp, self.cp_if)):
            self.run(ns, ["iptables", "-w", "-D", CHAIN + "-INPUT", "-i", ifname, "-j", "DROP"], check=False)

    def reset(self, ns, ss_filter):
        """Destroy the TCP sockets matching an ss(8) filter in ns (e.g. "dport = :8091"); returns ss's output."""
        return self.run(ns, ["ss", "-K", "-t", "-n"] + ss_filter.split())

    def stateful_firewall(self, port):
        """Control plane accepts, for TCP port `port`, only new SYNs and packets of connections conntrack knows."""
        self.run(self.cp, ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_loose=0"])
        self._ipt(self.cp, "INPUT", ["-i", self.cp_if, "-p", "tcp", "--dport", str(port), "-m", "conntrack",
                                     "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
        self._ipt(self.cp, "INPUT", ["-i", self.cp_if, "-p", "tcp", "--dport", str(port), "--syn", "-m",
                                     "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"])
        self._ipt(self.cp, "INPUT", ["-i", self.cp_if, "-p", "tcp", "--dport", str(port), "-j", "DROP"])

    def flush_conntrack(self):
        self.run(self.cp, ["conntrack", "-F"], check=False)

    def tcp_sockets(self, ns, ss_filter=""):
        """Established TCP sockets in ns matching an ss(8) filter (lines of ss output)."""
        out = self.run(ns, ["ss", "-t", "-n", "-H", "state", "established"] + ss_filter.split(), check=False)
        return [ln for ln in out.splitlines() if ln.strip()]


def wait(pred, timeout, what, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(step)
