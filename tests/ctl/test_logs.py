#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Log formats with --log-target=auto: stderr on a pseudo-terminal gives short human lines (time, level word for
notices and worse, the message; no MESSAGE_ID, no KONN_* fields) unless --log-target=logfmt asks for them; stderr
on a pipe (a container's log) gives one logfmt line per event: time, level, msg, then every field sorted by key;
stderr connected to the journal (JOURNAL_STREAM naming it) sends native journal entries with PRIORITY, CODE_*,
MESSAGE, MESSAGE_ID and the KONN_* fields, received here on a journal socket of the test's own (a private mount
namespace binds it over /run/systemd/journal; skipped where that is not allowed)."""

import os
import pty
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctltest  # noqa: E402
from ctltest import kt  # noqa: E402

TIME_ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


class LogFormats(ctltest.CtlTestCase):

    def server_argv(self, target):
        argv = [a for a in super().server_argv(kt.free_port(), "srv1") if not a.startswith("--log-")]
        return argv + ["--log-level=info"] + (["--log-target=" + target] if target else [])

    def run_until(self, argv, fd_out, pattern, read, timeout=10, env=None):
        """Start argv with stderr on fd_out, collect text with read() until pattern matches, stop it."""
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fd_out,
                             env=kt.clean_env(env), cwd=self.dir)
        self.closers.append(lambda: (p.poll() is None and p.kill(), p.wait()))
        text = ""
        deadline = time.monotonic() + kt.T(timeout)
        try:
            while not re.search(pattern, text, re.M):
                if time.monotonic() > deadline:
                    raise AssertionError("no %r within %.1f s in:\n%s" % (pattern, kt.T(timeout), text))
                text += read(0.2)
        finally:
            p.terminate()
            p.wait(timeout=kt.T(10))
        return text

    def refused_dial_lines(self, target, on_pty, env=None):
        """A server and an agent, one refused dial; the server's stderr as text (pty or pipe)."""
        refused = self.track(kt.RefusedPort())
        if on_pty:
            master, slave = pty.openpty()
            self.closers.append(lambda: os.close(master))

            def read(t):
                r, _, _ = select.select([master], [], [], t)
                try:
                    return os.read(master, 65536).decode(errors="replace") if r else ""
                except OSError:
                    return ""
            out = slave
        else:
            rfd, wfd = os.pipe()
            self.closers.append(lambda: os.close(rfd))

            def read(t):
                r, _, _ = select.select([rfd], [], [], t)
                return os.read(rfd, 65536).decode(errors="replace") if r else ""
            out = wfd
        argv = self.server_argv(target)
        self.agent_port = int([a for a in argv if a.startswith("--agent-port=")][0].split("=")[1])

        def go():
            self.start_agent(server=None, wait=False)
            self.wait_until(lambda: os.path.exists(self.sock_path), 10, "the frontend socket")
            time.sleep(0.3)
            for _ in range(100):
                c = kt.Client.uds(self.sock_path)
                c.send_connect(refused.addr)
                resp = c.read_to_eof()
                c.close()
                if resp.startswith(b"HTTP/1.1 502"):
                    return
                time.sleep(0.1)
        job = kt.Bg(go)
        job.start()
        text = self.run_until(argv, out, r"Dial to '%s' through agent 'node1' failed" % re.escape(refused.addr), read,
                              env=env)
        os.close(out)
        job.join_result(30)
        return text.replace("\r\n", "\n"), refused

    def test_terminal_short_lines(self):
        text, refused = self.refused_dial_lines(None, on_pty=True)
        lines = text.splitlines()
        started = [x for x in lines if "accepting agents" in x]
        self.assertEqual(len(started), 1, text)
        self.assertRegex(started[0], r"^\d\d:\d\d:\d\d\.\d{3} konn-server \S+ \(id 'srv1'\) accepting agents on port \d+, "
                                     r"HTTP CONNECT frontend on ")
        failed = [x for x in lines if "through agent 'node1' failed" in x]
        self.assertRegex(failed[0], r"^\d\d:\d\d:\d\d\.\d{3} Dial to '%s' through agent 'node1' failed: dial tcp %s: "
                                    r"connect: connection refused$" % (re.escape(refused.addr), re.escape(refused.addr)))
        self.assertNotIn("MESSAGE_ID", text)
        self.assertNotIn("KONN_", text)
        self.assertNotRegex(text, r"^<\d>", "no priority prefixes on a terminal")
        # Asked for: logfmt on a terminal shows every field.
        text, refused = self.refused_dial_lines("logfmt", on_pty=True)
        self.assertIn("KONN_AGENT_ID=node1", text)
        self.assertIn("MESSAGE_ID=2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a17", text)

    def test_pipe_logfmt_lines(self):
        text, refused = self.refused_dial_lines(None, on_pty=False)
        parsed = [kt.parse_logfmt_line(x) for x in text.splitlines()]
        self.assertNotIn(None, parsed, text)
        for pairs in parsed:
            self.assertEqual([k for k, _ in pairs[:3]], ["time", "level", "msg"])
            self.assertRegex(pairs[0][1], "^" + TIME_ISO + "$")
            self.assertIn(pairs[1][1], kt.LEVELS)
            keys = [k for k, _ in pairs[3:]]
            self.assertEqual(keys, sorted(keys), "fields in a stable (sorted) order")
        failed = [p for p in parsed if p[2][1].startswith("Dial to '%s'" % refused.addr)]
        self.assertEqual(len(failed), 1, text)
        d = dict(failed[0])
        self.assertEqual([k for k, _ in failed[0]], ["time", "level", "msg", "KONN_AGENT_ID", "KONN_DEST",
                                                    "KONN_DIAL_ID", "KONN_ROUTE", "MESSAGE_ID"])
        self.assertEqual((d["level"], d["msg"], d["KONN_AGENT_ID"], d["KONN_DEST"], d["MESSAGE_ID"]),
                         ("info", "Dial to '%s' through agent 'node1' failed: dial tcp %s: connect: connection refused"
                          % (refused.addr, refused.addr), "node1", refused.addr, kt.MSG_DIAL_FAILED))
        self.assertRegex(d["KONN_DIAL_ID"], r"^\d+$")
        # The raw line: the message quoted, plain values bare.
        raw = [x for x in text.splitlines() if "KONN_DIAL_ID=" in x and refused.addr in x][0]
        self.assertRegex(raw, r'^time=%s level=info msg="Dial to \'%s\' through agent \'node1\' failed: dial tcp %s: '
                              r'connect: connection refused" KONN_AGENT_ID=node1 KONN_DEST=%s KONN_DIAL_ID=\d+ '
                              r'KONN_ROUTE=agent MESSAGE_ID=%s$' % (TIME_ISO, re.escape(refused.addr), re.escape(refused.addr),
                                                   re.escape(refused.addr), kt.MSG_DIAL_FAILED))

    def test_journal_fields(self):
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare(1) for a private journal socket")
        jdir = os.path.join(self.dir, "journal")
        os.mkdir(jdir)
        js = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        js.bind(os.path.join(jdir, "socket"))
        js.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.closers.append(js.close)
        probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /run"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=kt.T(30))
        if probe.returncode != 0:
            self.skipTest("cannot make a private mount namespace here: %s" % probe.stdout.decode().strip())
        # stderr is a pipe whose device:inode JOURNAL_STREAM names: "auto" must pick the journal.
        rfd, wfd = os.pipe()
        self.closers.append(lambda: os.close(rfd))
        st = os.fstat(wfd)
        argv = ["unshare", "-m", "sh", "-c",
                'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && '
                'mount --bind "$0" /run/systemd/journal && exec "$@"', jdir] + self.server_argv(None)
        entries = []

        def read(t):
            r, _, _ = select.select([js], [], [], t)
            if r:
                entries.append(parse_journal(js.recv(1 << 20)))
                return entries[-1].get("MESSAGE", "") + "\n"
            return ""
        self.run_until(argv, wfd, r"accepting agents", read, env={"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
        os.close(wfd)
        self.assertEqual(os.read(rfd, 65536), b"", "nothing on stderr when the journal is connected")
        started = [e for e in entries if "accepting agents" in e.get("MESSAGE", "")][0]
        self.assertEqual(started["MESSAGE_ID"], kt.MSG_STARTED)
        self.assertEqual(started["KONN_SERVER_ID"], "srv1")
        self.assertEqual(started["PRIORITY"], "6")
        self.assertTrue(started["CODE_FILE"].endswith("manager.c"), started)
        self.assertRegex(started["CODE_LINE"], r"^\d+$")
        self.assertEqual(started["CODE_FUNC"], "manager_start")


def parse_journal(data):
    """The native journal protocol: KEY=value lines, or KEY\\n<le64 size>value\\n for binary-safe values."""
    pairs, i = [], 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            pairs.append((k.decode(), v.decode(errors="replace")))
            i = nl + 1
        else:
            n = struct.unpack("<Q", data[nl + 1:nl + 9])[0]
            pairs.append((line.decode(), data[nl + 9:nl + 9 + n].decode(errors="replace")))
            i = nl + 9 + n + 1
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    assert not dup, "fields sent twice: %s in %r" % (dup, pairs)
    return dict(pairs)


if __name__ == "__main__":
    kt.main()
