/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Whole-connection fuzzers of konn-server, built three times (one per port) from this file:
 *
 *  FUZZ_PORT_AGENT   (fuzz-server-agent): the input is what an agent sends on the agent port, TLS off. Layout:
 *                    2 bytes little-endian n, then n bytes sent first (preface, SETTINGS, the Connect call), then
 *                    the rest, sent after a CONNECT frontend client asked for 127.0.0.1:7777 (so the server has
 *                    sent this "agent" a DIAL_REQ; with the dial-ID generator reset per input its random is fixed,
 *                    see tests/fuzz/gen-h2-seeds.py).
 *  FUZZ_PORT_GRPC    (fuzz-server-grpc): the input is what kube-apiserver sends on the gRPC frontend (Unix socket).
 *  FUZZ_PORT_CONNECT (fuzz-server-connect): the same for the HTTP CONNECT frontend.
 *                    For both frontends the first byte picks how the scripted agent (a real HTTP/2 client built on
 *                    h2conn, connected before the input is sent) answers dials; then, as for the agent port, 2
 *                    bytes n, n bytes sent first (the request), and the rest once the loop went idle (the dial
 *                    was answered).
 *
 * Each input gets a fresh sd-event loop and Manager (manager_new + manager_start with a generated command line),
 * the loop runs until idle (bounded), then every peer goes away and the harness demands that the Manager forgot all
 * links, backends, tunnels and pending dials before it is freed; LeakSanitizer checks the rest.
 */
#include "config.h"

#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"
#include "fuzz-daemon.h"
#include "h2conn.h"
#include "log.h"
#include "manager.h"
#include "server-config.h"
#include "tunnel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ITERATIONS 2000

/* ---- the scripted agent (frontend targets) ----------------------------------------------------------------- */

enum {
        AGENT_ACCEPT = 0,     /* DIAL_RSP success, echo DATA, answer CLOSE_REQ */
        AGENT_REFUSE = 1,     /* DIAL_RSP with the Go error text */
        AGENT_SILENT = 2,     /* never answers a dial */
        AGENT_DIAL_CLS = 3,   /* DIAL_CLS instead of an answer */
        AGENT_CLOSE_AFTER_DATA = 1 << 2,  /* CLOSE_RSP after the first DATA (the destination closed) */
        AGENT_GONE_AFTER_DATA = 1 << 3,   /* the whole agent connection ends at the first DATA */
        AGENT_DRAIN = 1 << 4,             /* DRAIN right after connecting */
};

typedef struct FakeAgent {
        H2Conn *conn;
        GrpcCall *call;
        unsigned behaviour;
        int64_t next_connect_id;
        bool ready, ended, gone;
} FakeAgent;

static void agent_send(FakeAgent *a, const Packet *p) {
        if (a->call)
                (void) grpc_call_send_packet(a->call, p);
}

static int agent_on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        FakeAgent *a = userdata;

        switch (p->type) {
        case PACKET_DIAL_REQ:
                switch (a->behaviour & 3) {
                case AGENT_ACCEPT:
                        agent_send(a, &(Packet){ .type = PACKET_DIAL_RSP,
                                                  .dial_rsp = { .random = p->dial_req.random,
                                                                .connect_id = ++a->next_connect_id } });
                        break;
                case AGENT_REFUSE: {
                        static const char e[] = "dial tcp 127.0.0.1:7777: connect: connection refused";
                        ++a->next_connect_id;
                        agent_send(a, &(Packet){ .type = PACKET_DIAL_RSP,
                                                  .dial_rsp = { .random = p->dial_req.random,
                                                                .error = { e, sizeof(e) - 1 } } });
                        break;
                }
                case AGENT_DIAL_CLS:
                        agent_send(a, &(Packet){ .type = PACKET_DIAL_CLS, .dial_cls = { p->dial_req.random } });
                        break;
                default:
                        break;
                }
                return 0;
        case PACKET_DATA:
                if (a->behaviour & AGENT_GONE_AFTER_DATA) {
                        if (!a->gone)
                                h2conn_close(a->conn, -ECONNRESET, "fuzz: agent gone");
                        a->gone = true;
                        return 0;
                }
                if (p->data.data_len > 0)
                        (void) grpc_call_send_data_copy(call, p->data.connect_id, p->data.data, p->data.data_len);
                if (a->behaviour & AGENT_CLOSE_AFTER_DATA)
                        agent_send(a, &(Packet){ .type = PACKET_CLOSE_RSP,
                                                  .close_rsp = { .connect_id = p->data.connect_id } });
                return 0;
        case PACKET_CLOSE_REQ:
                agent_send(a, &(Packet){ .type = PACKET_CLOSE_RSP,
                                          .close_rsp = { .connect_id = p->close_req.connect_id } });
                return 0;
        default:
                return 0;
        }
}

static void agent_on_end(GrpcCall *call, int status, const char *message, void *userdata) {
        FakeAgent *a = userdata;

        a->call = NULL;
        a->ended = true;
}

static const GrpcCallHandler agent_call_handler = {
        .on_packet = agent_on_packet,
        .on_end = agent_on_end,
};

static void agent_on_ready(H2Conn *c, void *userdata) {
        static char agentid[] = "agentid", id[] = "fuzz-agent", ids[] = "agentidentifiers", host[] = "host=localhost";
        char *const metadata[] = { agentid, id, ids, host, NULL };
        FakeAgent *a = userdata;

        FUZZ_CHECK(grpc_call_start(c, "/AgentService/Connect", "127.0.0.1", metadata, &agent_call_handler, a,
                                   &a->call) >= 0);
        a->ready = true;
        if (a->behaviour & AGENT_DRAIN)
                agent_send(a, &(Packet){ .type = PACKET_DRAIN });
}

static void agent_on_close(H2Conn *c, int error, const char *reason, void *userdata) {
        FakeAgent *a = userdata;

        a->conn = NULL;
        a->call = NULL;
}

static const H2ConnHandler agent_conn_handler = {
        .on_ready = agent_on_ready,
        .on_close = agent_on_close,
};

static void __attribute__((unused)) agent_connect(sd_event *e, FakeAgent *a) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(FUZZ_AGENT_PORT),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        Transport t;
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        FUZZ_CHECK(fd >= 0);
        /* Loopback connects complete at once (the listener's backlog takes it). */
        FUZZ_CHECK(connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0 || errno == EINPROGRESS);
        {
                struct linger l = { .l_onoff = 1, .l_linger = 0 };
                (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        }
        transport_init(&t, fd, NULL);
        FUZZ_CHECK(h2conn_new(e, &t, false, &(H2ConnSettings){}, &agent_conn_handler, a, &a->conn) >= 0);
}

/* ---- one input ---------------------------------------------------------------------------------------------- */

static Manager *server_new(sd_event *e, const char *mode, char *uds) {
        char a_uds[200], a_mode[64], a_cfg[200];
        char *argv[] = {
                (char *) "konn-server", a_cfg, a_uds, a_mode,
                (char *) "--cluster-cert=/nonexistent/cert.pem", (char *) "--cluster-key=/nonexistent/key.pem",
                (char *) "--insecure-allow-unauthenticated-agents",
                (char *) "--agent-bind-address=127.0.0.1", (char *) "--agent-port=8091",
                (char *) "--server-port=0", (char *) "--health-port=0", (char *) "--admin-port=0",
                (char *) "--server-id=fuzz-server",
                NULL,
        };
        _cleanup_(conf_args_done) ConfArgs args = {};
        _cleanup_free_ char *error = NULL;
        ServerConfig *c;
        Manager *m = NULL;
        int r;

        (void) snprintf(a_cfg, sizeof(a_cfg), "--config=%s/empty.conf", fuzz_scratch_dir());
        (void) snprintf(a_uds, sizeof(a_uds), "--uds-name=%s", uds);
        (void) snprintf(a_mode, sizeof(a_mode), "--mode=%s", mode);
        c = calloc(1, sizeof(ServerConfig));
        FUZZ_CHECK(c);
        r = server_config_load(c, (int) ELEMENTSOF(argv) - 1, argv, &args, &error);
        if (r != 0)
                fprintf(stderr, "fuzz: server config: %s\n", error ?: "?");
        FUZZ_CHECK(r == 0);
        FUZZ_CHECK(manager_new(e, c, &m) >= 0);
        m->rng = 0;  /* deterministic dial IDs: seeds can answer the first DIAL_REQ */
        r = manager_start(m);
        FUZZ_CHECK(r >= 0);
        return m;
}

static void check_forgotten(Manager *m) {
        FUZZ_CHECK(!m->tunnels);
        FUZZ_CHECK(m->n_tunnels == 0);
        FUZZ_CHECK(idmap_size(m->pending) == 0);
        FUZZ_CHECK(!m->backends);
        FUZZ_CHECK(m->n_backends == 0);
        FUZZ_CHECK(!m->links);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char uds[160], empty[160];
        sd_event *e = NULL;
        Manager *m;
        Pipe *in = NULL, *front = NULL;
        FakeAgent agent = {};
        FILE *f;

        if (size > 1 << 20)
                return 0;
        fuzz_daemon_init();
        (void) snprintf(uds, sizeof(uds), "%s/frontend.sock", fuzz_scratch_dir());
        (void) snprintf(empty, sizeof(empty), "%s/empty.conf", fuzz_scratch_dir());
        f = fopen(empty, "we");
        FUZZ_CHECK(f);
        fclose(f);

        FUZZ_CHECK(sd_event_new(&e) >= 0);
#if defined(FUZZ_PORT_AGENT)
        m = server_new(e, "http-connect", uds);
        {
                static const uint8_t connect_req[] =
                        "CONNECT 127.0.0.1:7777 HTTP/1.1\r\nHost: 127.0.0.1:7777\r\n\r\nping";
                size_t n = size >= 2 ? MIN((size_t) (data[0] | data[1] << 8), size - 2) : size;
                const uint8_t *p = size >= 2 ? data + 2 : data;
                size_t rest = size >= 2 ? size - 2 - n : 0;

                FUZZ_CHECK(fuzz_pipe_connect_tcp(e, FUZZ_AGENT_PORT, &in) >= 0);
                fuzz_pipe_feed(in, p, n, false);
                fuzz_run_until_idle(e, MAX_ITERATIONS);
                if (m->backends) {
                        /* The input registered an agent: make the server dial through it. */
                        FUZZ_CHECK(fuzz_pipe_connect_unix(e, uds, &front) >= 0);
                        fuzz_pipe_feed(front, connect_req, sizeof(connect_req) - 1, false);
                        fuzz_run_until_idle(e, MAX_ITERATIONS);
                        if (getenv("FUZZ_DEBUG")) {
                                size_t state = 0;
                                int64_t id;
                                void *v;

                                while (idmap_iterate(m->pending, &state, &id, &v))
                                        fprintf(stderr, "fuzz: pending dial %" PRIi64 "\n", id);
                        }
                }
                fuzz_pipe_feed(in, p + n, rest, true);
                fuzz_run_until_idle(e, MAX_ITERATIONS);
        }
#else
#  if defined(FUZZ_PORT_GRPC)
        m = server_new(e, "grpc", uds);
#  else
        m = server_new(e, "http-connect", uds);
#  endif
        agent.behaviour = size > 0 ? data[0] : 0;
        agent_connect(e, &agent);
        fuzz_run_until_idle(e, MAX_ITERATIONS);
        FUZZ_CHECK(agent.ready);
        FUZZ_CHECK(m->n_backends == 1);

        data += !!size;
        size -= !!size;
        {
                size_t n = size >= 2 ? MIN((size_t) (data[0] | data[1] << 8), size - 2) : size;
                const uint8_t *p = size >= 2 ? data + 2 : data;
                size_t rest = size >= 2 ? size - 2 - n : 0;

                FUZZ_CHECK(fuzz_pipe_connect_unix(e, uds, &front) >= 0);
                fuzz_pipe_feed(front, p, n, false);
                fuzz_run_until_idle(e, MAX_ITERATIONS);
                fuzz_pipe_feed(front, p + n, rest, false);
                fuzz_run_until_idle(e, MAX_ITERATIONS);
        }
#endif

        /* Every peer goes away; the server must forget everything that rode on them. */
        front = fuzz_pipe_free(front);
        in = fuzz_pipe_free(in);
        fuzz_run_until_idle(e, MAX_ITERATIONS);
        if (agent.conn)
                agent.conn = h2conn_free(agent.conn);
        fuzz_run_until_idle(e, MAX_ITERATIONS);
        check_forgotten(m);

        manager_free(m);
        sd_event_unref(e);
        return 0;
}
