#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""ServiceAccount-token authentication of agents (protocol.md §3.1, §3.2) against the fake API server
(tests/kube/fakeapi.py): a good token connects and tunnels; a wrong audience, a wrong namespace or service account,
an expired token, no token and an unknown token are refused with one log line naming the agent and the reason and
an error status on the stream (never a hang); the API server being down refuses new agents (fail closed, /readyz
says why) while connected agents keep tunnelling; a slow API server does not hold up other agents' tunnels; the
agent reads its token file afresh on every connection (rotation); reviews are cached but never past the token's
exp; --check-config and reload cover the kubeconfig."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakeapi  # noqa: E402
import konntest as kt  # noqa: E402
from konntest import T  # noqa: E402

NS, SA, AUD = "kube-system", "konn-agent", "system:konnectivity-server"
USER = "system:serviceaccount:%s:%s" % (NS, SA)
MSG_AGENT_REFUSED = "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a1a"


class TokenAuthTestCase(kt.KonnTestCase):
    def setUp(self):
        super().setUp()
        self.api = self.track(fakeapi.FakeAPI())
        self.kubeconfig = self.api.write_kubeconfig(os.path.join(self.dir, "kubeconfig"))
        self.api.add_token("good", USER)
        self.echo = self.track(kt.EchoServer())

    def start_auth_server(self, extra=(), health=False):
        argv = ["--agent-namespace=" + NS, "--agent-service-account=" + SA, "--authentication-audience=" + AUD,
                "--kubeconfig=" + self.kubeconfig]
        if health:
            self.health_port = kt.free_port()
            argv += ["--health-port=%d" % self.health_port, "--health-bind-address=127.0.0.1"]
        return self.start_server(extra=argv + list(extra), drop=("--cluster-ca-cert",))

    def token_file(self, name, token):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write(token)
        return p

    def start_token_agent(self, agent_id, token, server, wait=True, extra=()):
        argv = ["--sync-interval=200ms", "--sync-interval-cap=500ms"]
        if token is not None:
            argv.append("--service-account-token-path=" + self.token_file(agent_id + ".token", token))
        return self.start_agent(agent_id=agent_id, server=server, cert_name=None, wait=wait,
                                extra=argv + list(extra))

    def readyz(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.health_port, timeout=T(5)) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def assert_refused(self, server, agent, agent_id, reason):
        """One warning per attempt naming the agent and the reason (journald fields), and the agent sees the
        stream end with an error status, never a hang; it keeps retrying (two attempts seen)."""
        pattern = r"^Refused agent '%s' \(token\): " % agent_id
        server.wait_for(pattern, prio_max=4, timeout=10, MESSAGE_ID=MSG_AGENT_REFUSED, KONN_AGENT_ID=agent_id)
        lines = self.wait_until(lambda: (lambda f: f if len(f) >= 2 else None)(
            server.find(pattern, prio_max=4, MESSAGE_ID=MSG_AGENT_REFUSED, KONN_AGENT_ID=agent_id)),
            10, "a second refusal of %s" % agent_id)
        for ll in lines:
            self.assertEqual(ll.fields.get("KONN_REASON"), reason, ll.message)
            self.assertEqual(ll.message, "Refused agent '%s' (token): %s." % (agent_id, reason))
        agent.wait_for(r"^Connect stream to 127\.0\.0\.1:\d+ failed: failed to authenticate request: %s \(Unknown\)"
                       % kt.re.escape(reason), timeout=10)
        self.assertEqual(server.find(r"^Agent '%s' connected" % agent_id), [])
        return lines


class TestTokenAuth(TokenAuthTestCase):

    def test_good_token(self):
        admin_port = kt.free_port()
        s = self.start_auth_server(extra=["--admin-port=%d" % admin_port, "--admin-bind-address=127.0.0.1"])
        a = self.start_token_agent("node1", "good", s)
        c = self.open_tunnel(self.echo.addr)
        self.assert_echo(c, b"through a token-authenticated agent")
        ll = s.wait_for(r"^Agent 'node1' connected \(system:serviceaccount:%s:%s, identifiers '', one stream per "
                        r"tunnel, token reviewed\)\.$" % (NS, SA))
        self.assertEqual(ll.fields["KONN_PEER"], "system:serviceaccount:%s:%s" % (NS, SA))
        # The admin interface (and so `konnctl agents`) names the ServiceAccount as the agent's subject.
        rc, out, err = self.konnctl("-H", "127.0.0.1:%d" % admin_port, "-o", "json", "agents")
        self.assertEqual(rc, 0, err)
        agents = json.loads(out)["agents"]
        self.assertEqual([(x["id"], x["subject"]) for x in agents],
                         [("node1", "system:serviceaccount:%s:%s" % (NS, SA))])
        reviews = self.api.reviews()
        self.assertGreaterEqual(len(reviews), 1)
        self.assertEqual(reviews[0], {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                      "spec": {"token": "good", "audiences": [AUD]}})
        # the server authenticated itself to the API server with the kubeconfig's token
        self.assertTrue(all(h.get("Authorization") == "Bearer konn-server-token"
                            for _, p, h, _ in self.api.requests))
        self.assertTrue(a.alive())

    def test_refusals(self):
        s = self.start_auth_server()
        self.api.add_token("wrong-aud", USER, audiences=["other"])
        self.api.add_token("wrong-ns", "system:serviceaccount:default:%s" % SA)
        self.api.add_token("wrong-sa", "system:serviceaccount:%s:intruder" % NS)
        self.api.add_token("expired", USER, exp=time.time() - 5)
        cases = [("aud", "wrong-aud", "token not authenticated: token audiences mismatch"),
                 ("ns", "wrong-ns", "token belongs to 'system:serviceaccount:default:konn-agent', expected '%s'"
                  % USER),
                 ("sa", "wrong-sa", "token belongs to 'system:serviceaccount:kube-system:intruder', expected '%s'"
                  % USER),
                 ("expired", "expired", "token not authenticated: token has expired"),
                 ("unknown", "nobody-knows-me", "token not authenticated: invalid bearer token"),
                 ("none", None, "no authorization metadata (a ServiceAccount token is required)")]
        agents = []
        for agent_id, token, reason in cases:
            with self.subTest(agent_id):
                a = self.start_token_agent(agent_id, token, s, wait=False)
                agents.append(a)
                self.assert_refused(s, a, agent_id, reason)
        # a good agent still gets in and tunnels, and the refused ones are all still alive and retrying
        self.start_token_agent("good", "good", s)
        self.assert_echo(self.open_tunnel(self.echo.addr), b"still fine")
        self.assertTrue(all(a.alive() for a in agents))

    def test_api_server_down_fails_closed(self):
        s = self.start_auth_server(health=True)
        self.start_token_agent("early", "good", s)
        witness = self.open_tunnel(self.echo.addr)
        self.assert_echo(witness, b"before")
        self.assertEqual(self.readyz(), (200, "ok"))
        self.api.add_token("late-token", USER)
        self.api.close()  # its port is closed now: connections are refused
        a = self.start_token_agent("late", "late-token", s, wait=False)
        ll = s.wait_for(r"^Refused agent 'late' \(token\): TokenReview failed: ", prio_max=4, timeout=15,
                        KONN_AGENT_ID="late")
        self.assertIn("TokenReview failed", ll.fields["KONN_REASON"])
        s.wait_for(r"^Token authentication is unavailable, refusing agents: TokenReview failed: ", prio_max=4)
        code, body = self.readyz()
        self.assertEqual(code, 500)
        self.assertTrue(body.startswith("token authentication unavailable: TokenReview failed: "), body)
        a.wait_for(r"^Connect stream to 127\.0\.0\.1:\d+ failed: failed to authenticate request: TokenReview "
                   r"failed: ", timeout=10)
        # the agent connected before keeps its stream and tunnels
        self.assert_echo(witness, b"after")
        self.assert_echo(self.open_tunnel(self.echo.addr), b"new tunnel through the early agent")
        self.assertEqual(s.find(r"^Agent 'late' connected"), [])
        self.assertTrue(a.alive())

    def test_api_server_errors_fail_closed(self):
        s = self.start_auth_server(health=True)
        self.api.fail = 503
        a = self.start_token_agent("n503", "good", s, wait=False)
        self.assert_refused(s, a, "n503", "TokenReview failed: HTTP 503: injected failure")
        code, body = self.readyz()
        self.assertEqual((code, body), (500, "token authentication unavailable: TokenReview failed: HTTP 503: "
                                             "injected failure"))
        self.api.fail = None  # the API server is back: the retrying agent gets in, readiness recovers
        s.wait_for(r"^Agent 'n503' connected", timeout=15)
        s.wait_for(r"^Token authentication works again\.$")
        self.assertEqual(self.readyz(), (200, "ok"))
        # the server's own credentials refused (401): also fail closed, with the reason
        self.api.client_token = "rotated-elsewhere"
        self.api.add_token("good-2", USER)  # not cached
        b = self.start_token_agent("n401", "good-2", s, wait=False)
        ll = s.wait_for(r"^Refused agent 'n401'", prio_max=4, timeout=10)
        self.assertEqual(ll.fields["KONN_REASON"], "TokenReview failed: HTTP 401: Unauthorized")
        self.assertTrue(b.alive())

    def test_slow_api_server_does_not_block_tunnels(self):
        s = self.start_auth_server()
        self.start_token_agent("fast", "good", s)
        c = self.open_tunnel(self.echo.addr)
        self.assert_echo(c, b"warm")
        self.api.add_token("slow", USER)
        self.api.delay = 3
        before = len(self.api.reviews())
        slow = self.start_token_agent("slowpoke", "slow", s, wait=False)
        self.wait_until(lambda: len(self.api.reviews()) > before, 10, "the slow review to start")
        # while that review is pending: echoes and new tunnels through the first agent keep flowing
        t0 = time.monotonic()
        rounds, worst = 0, 0.0
        while time.monotonic() - t0 < 2:
            r0 = time.monotonic()
            self.assert_echo(c, b"x" * 1000)
            worst = max(worst, time.monotonic() - r0)
            rounds += 1
        self.assert_echo(self.open_tunnel(self.echo.addr), b"a new tunnel meanwhile")
        self.assertEqual(s.find(r"^Agent 'slowpoke' connected"), [], "the review was not pending")
        self.assertLess(worst, T(1.0), "an echo waited %.2f s behind the review" % worst)
        self.assertGreater(rounds, 10)
        s.wait_for(r"^Agent 'slowpoke' connected", timeout=15)
        self.assertTrue(slow.alive())

    def test_agent_reads_rotated_token(self):
        s = self.start_auth_server(extra=["--authentication-cache-ttl=0"])
        self.api.add_token("rot-1", USER)
        a = self.start_token_agent("rot", "rot-1", s)
        # the kubelet rotates the projected token; the old one stops working
        self.token_file("rot.token", "rot-2\n")
        self.api.remove_token("rot-1")
        self.api.add_token("rot-2", USER)
        agent_port = self.agent_port
        s.kill9()
        s2 = self.start_server(agent_port=agent_port, extra=[
            "--agent-namespace=" + NS, "--agent-service-account=" + SA, "--authentication-audience=" + AUD,
            "--kubeconfig=" + self.kubeconfig, "--authentication-cache-ttl=0"], drop=("--cluster-ca-cert",),
            name="server-2")
        s2.wait_for(r"^Agent 'rot' connected", timeout=20)
        self.assertEqual(self.api.reviews()[-1]["spec"]["token"], "rot-2")
        self.assertEqual(s2.find(r"^Refused agent"), [])
        self.assertTrue(a.alive())

    def test_cache_and_token_expiry(self):
        s = self.start_auth_server()
        self.start_token_agent("c1", "good", s)
        self.start_token_agent("c2", "good", s)
        goods = [b for b in self.api.reviews() if b["spec"]["token"] == "good"]
        self.assertEqual(len(goods), 1, "the second connection with the same token used the cached review")
        # a JWT whose exp is near: cached only until then, then reviewed again (and now refused)
        short = fakeapi.jwt(time.time() + T(4))
        self.api.add_token(short, USER, exp=time.time() + T(4))
        self.start_token_agent("j1", short, s)
        n = len(self.api.reviews())
        time.sleep(max(0, T(4) + 0.5))
        a = self.start_token_agent("j2", short, s, wait=False)
        ll = s.wait_for(r"^Refused agent 'j2'", prio_max=4, timeout=10)
        self.assertEqual(ll.fields["KONN_REASON"], "token not authenticated: token has expired")
        self.assertGreater(len(self.api.reviews()), n, "the expired token was served from the cache")
        self.assertTrue(a.alive())


class TestTokenAuthConfig(TokenAuthTestCase):

    def run_check(self, *flags):
        argv = [kt.SERVER_BIN, "--config=" + self.empty_conf, "--check-config", "--uds-name=" + self.sock_path,
                "--server-port=0", "--cluster-cert=" + kt.cert("server.crt"),
                "--cluster-key=" + kt.cert("server.key")] + list(flags)
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=T(10),
                              env=kt.clean_env())

    def test_check_config(self):
        auth = ["--agent-namespace=" + NS, "--agent-service-account=" + SA, "--authentication-audience=" + AUD]
        r = self.run_check(*auth, "--kubeconfig=" + self.kubeconfig)
        self.assertEqual(r.returncode, 0, r.stdout)
        r = self.run_check(*auth, "--kubeconfig=/nonexistent/kc")
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"kubeconfig /nonexistent/kc: cannot read: No such file or directory", r.stdout)
        r = self.run_check(*auth[:2], "--kubeconfig=" + self.kubeconfig)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"--agent-namespace, --agent-service-account and --authentication-audience must be set "
                      b"together (token authentication)", r.stdout)
        r = self.run_check(*auth, "--kubeconfig=" + self.kubeconfig, "--cluster-ca-cert=" + kt.cert("ca.crt"))
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"--cluster-ca-cert cannot be used with token authentication (--agent-namespace)", r.stdout)
        exec_kc = os.path.join(self.dir, "exec.kubeconfig")
        with open(exec_kc, "w") as f:
            f.write("current-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: gke}\n"
                    "clusters:\n- name: k\n  cluster: {server: 'https://127.0.0.1:1'}\n"
                    "users:\n- name: gke\n  user:\n    exec: {command: gke-gcloud-auth-plugin}\n")
        r = self.run_check(*auth, "--kubeconfig=" + exec_kc)
        self.assertEqual(r.returncode, 1)
        self.assertIn(("kubeconfig %s: user 'gke': exec credential plugins are not supported (use token, tokenFile "
                       "or a client certificate)" % exec_kc).encode(), r.stdout)
        # in-cluster without the environment
        r = self.run_check(*auth)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set "
                      b"(or use --kubeconfig)", r.stdout)

    def test_reload_rereads_kubeconfig(self):
        s = self.start_auth_server(extra=["--authentication-cache-ttl=0"])
        self.start_token_agent("r1", "good", s)
        # the API server now wants another credential; the kubeconfig on disk says so; SIGHUP re-reads it
        self.api.client_token = "second-token"
        self.api.write_kubeconfig(self.kubeconfig, token="second-token")
        since = s.mark()
        os.kill(s.pid, signal.SIGHUP)
        s.wait_for(r"^Configuration reloaded", since=since, timeout=10)
        self.start_token_agent("r2", "good", s)
        self.assertEqual(self.api.requests[-1][2].get("Authorization"), "Bearer second-token")
        # a broken kubeconfig on reload: the running one stays, and so does authentication
        with open(self.kubeconfig, "w") as f:
            f.write("current-context: nope\n")
        since = s.mark()
        os.kill(s.pid, signal.SIGHUP)
        s.wait_for(r"^Reloading the configuration failed, keeping the running one: kubeconfig %s: context 'nope' not "
                   r"found$" % kt.re.escape(self.kubeconfig), since=since, prio_max=3, timeout=10)
        self.start_token_agent("r3", "good", s)

    def test_kubeconfig_token_file_rotates(self):
        """tokenFile in the server's kubeconfig is read per request (like the in-cluster token)."""
        tf = self.token_file("server.token", "konn-server-token")
        self.api.write_kubeconfig(self.kubeconfig, token_file=tf)
        s = self.start_auth_server(extra=["--authentication-cache-ttl=0"])
        self.start_token_agent("f1", "good", s)
        self.api.client_token = "rotated"
        self.token_file("server.token", "rotated\n")
        self.start_token_agent("f2", "good", s)
        self.assertEqual(self.api.requests[-1][2].get("Authorization"), "Bearer rotated")


if __name__ == "__main__":
    kt.main()
