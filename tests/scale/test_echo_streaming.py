#!/usr/bin/python3
"""1 000 tunnels echoing at once with large relay chunks and small HTTP/2 windows (issue 14).

Each DATA message (256 KiB: --relay-chunk-size) is far larger than a stream's window (16 KiB) and the thousand
tunnels' messages together are far larger than a connection's window (64 KiB): a receiver that reassembled whole
messages before giving their credits back would stall at once. konn delivers DATA as it arrives, so every tunnel
must complete. bench/konn-bench's echo-many scenario is the client and the echo target: it verifies every byte in
both directions (XXH64 streams per tunnel) and exits non-zero if any tunnel fails or stalls. Runs once with one
HTTP/2 stream per tunnel (konn-to-konn mode) and once on the classic single stream."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import konntest  # noqa: E402

BENCH = os.path.join(konntest.BUILDDIR, "bench", "konn-bench")
# Under valgrind (KONN_WRAPPER) a thousand tunnels would take hours: 50 still stall without streamed delivery.
TUNNELS = int(os.environ.get("KONN_ECHO_TUNNELS", "50" if os.environ.get("KONN_WRAPPER") else "1000"))
TUNNEL_SIZE = 320 * 1024  # more than one chunk per direction: messages split and streamed on both sides
SMALL = ("--stream-window-size=16384", "--connection-window-size=65535", "--max-window-size=0",
         "--relay-chunk-size=262144")


class TestEchoStreaming(konntest.KonnTestCase):
    def echo_many(self, extra=()):
        if not os.access(BENCH, os.X_OK):
            self.fail("%s is missing; build it first (make)" % BENCH)
        server = self.start_server(extra=SMALL + extra)
        agent = self.start_agent(server=server, extra=SMALL + extra)
        report = os.path.join(self.dir, "echo.json")
        argv = [BENCH, "--konn-uds=" + self.sock_path, "--scenarios=echo-many", "--tunnels=%d" % TUNNELS,
                "--tunnel-size=%d" % TUNNEL_SIZE, "--timeout=%d" % konntest.T(150), "--json=" + report,
                "--server-pid=%d" % server.pid, "--agent-pid=%d" % agent.pid]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=konntest.T(400))
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, "konn-bench failed:\n" + out[-4000:] + "\nserver log:\n" + server.tail())
        with open(report) as f:
            data = json.load(f)
        self.assertTrue(data["ok"])
        self.assertEqual(data["failed"], [])
        self.assertEqual(data["parameters"]["tunnels"], TUNNELS)
        self.assertEqual(data["parameters"]["tunnel_bytes"], TUNNEL_SIZE)
        rows = [r for r in data["rows"] if r["scenario"] == "echo-many" and r["unit"] == "MiB/s"]
        self.assertEqual(len(rows), 1, data["rows"])
        self.assertGreater(rows[0]["konn"], 0)
        self.assertTrue(server.alive() and agent.alive())
        print("\n%d tunnels x %d KiB echoed: %.0f MiB/s per direction (direct %.0f)" %
              (TUNNELS, TUNNEL_SIZE // 1024, rows[0]["konn"], rows[0]["direct"]), file=sys.stderr)

    def test_echo_many_stream_per_tunnel(self):
        """konn-to-konn mode: one HTTP/2 stream per tunnel."""
        self.echo_many()

    def test_echo_many_classic(self):
        """The upstream protocol: every tunnel on the agent's one Connect stream."""
        self.echo_many(extra=("--tunnel-streams=false",))


if __name__ == "__main__":
    konntest.main()
