/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for h2conn: a client and a server H2Conn over a Unix socketpair (plain transport) on one sd-event loop.
 * Metadata both ways, packets both ways, trailers and status codes, UNIMPLEMENTED, backpressure through
 * withheld flow-control credits, and cancelling a queued message without losing or reordering bytes; stalled
 * streams neither starve the others nor hold more than the connection buffer allows.
 */
#include "config.h"

#include <check.h>
#include <sys/socket.h>

#include "h2conn.h"
#include "log.h"
#include "test-certs.h"

#define LOOP_MAX 20000
#define UINT_TO_PTR(u) ((void *) (uintptr_t) (u))
#define PTR_TO_UINT(p) ((unsigned) (uintptr_t) (p))

typedef struct Fixture {
        sd_event *e;
        H2Conn *client, *server;
        GrpcCall *ccall, *scall;
        bool ready;
        /* server side observations */
        char agentid[64];
        unsigned n_agentid;
        Packet last;
        char last_addr[64];
        unsigned n_server_packets;
        size_t server_data_bytes;
        uint8_t server_data[4 * 1024 * 1024];
        bool retain;          /* server keeps DATA credits */
        size_t retained;
        int server_end_status;
        bool server_ended;
        /* client side observations */
        char serverid[64];
        unsigned n_client_packets;
        int client_end_status;
        char client_end_message[128];
        bool client_ended;
        int reject_status;    /* server rejects calls with this status when > 0 */
        /* stall test: per-stream observations on the server, by slot */
        GrpcCall *stall_calls[16];
        size_t stall_got[16], stall_retained[16];
        bool stall_retain[16];
} Fixture;

static Fixture *F;

static void spin(bool *flag) {
        for (unsigned i = 0; i < LOOP_MAX && !*flag; i++)
                ck_assert_int_ge(sd_event_run(F->e, 100 * 1000), 0);
        ck_assert_msg(*flag, "condition not reached");
}

static void spin_n(unsigned n) {
        for (unsigned i = 0; i < n; i++)
                ck_assert_int_ge(sd_event_run(F->e, 1000), 0);
}

/* Drive the loop, returning withheld credits, until the server has `total` payload bytes. */
static void drain_retained(size_t total) {
        F->retain = false;
        for (unsigned i = 0; i < LOOP_MAX && F->server_data_bytes < total; i++) {
                if (F->retained > 0 && F->scall) {
                        grpc_call_consume(F->scall, F->retained);
                        F->retained = 0;
                }
                ck_assert_int_ge(sd_event_run(F->e, 100000), 0);
        }
        ck_assert_uint_eq(F->server_data_bytes, total);
}

static int s_on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        F->n_server_packets++;
        F->last = *p;
        if (p->type == PACKET_DIAL_REQ)
                (void) snprintf(F->last_addr, sizeof(F->last_addr), "%.*s", (int) p->dial_req.address.len,
                                p->dial_req.address.ptr);
        if (p->type == PACKET_DATA) {
                ck_assert_uint_le(F->server_data_bytes + p->data.data_len, sizeof(F->server_data));
                memcpy(F->server_data + F->server_data_bytes, p->data.data, p->data.data_len);
                F->server_data_bytes += p->data.data_len;
                if (F->retain) {
                        F->retained += p->data.data_len;
                        return (int) p->data.data_len;
                }
        }
        return 0;
}

static void s_on_end(GrpcCall *call, int status, const char *message, void *userdata) {
        F->server_ended = true;
        F->server_end_status = status;
        F->scall = NULL;
}

static const GrpcCallHandler s_handler = { .on_packet = s_on_packet, .on_end = s_on_end };

/* One server stream of the stall test: counts its DATA and keeps the credits while its slot says so. */
static int stall_on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        unsigned i = PTR_TO_UINT(userdata);

        if (p->type != PACKET_DATA)
                return 0;
        F->stall_got[i] += p->data.data_len;
        if (!F->stall_retain[i])
                return 0;
        F->stall_retained[i] += p->data.data_len;
        return (int) p->data.data_len;
}

static void stall_on_end(GrpcCall *call, int status, const char *message, void *userdata) {
        F->stall_calls[PTR_TO_UINT(userdata)] = NULL;
}

static const GrpcCallHandler stall_handler = { .on_packet = stall_on_packet, .on_end = stall_on_end };

static int s_on_call(H2Conn *c, GrpcCall *call, const char **ret_message, void *userdata) {
        const char *md[] = { "serverid", "srv-7", "servercount", "3", NULL };

        if (F->reject_status > 0) {
                *ret_message = "go away";
                return F->reject_status;
        }
        if (streq_ptr(grpc_call_path(call), "/test/Stall")) {
                const char *slot = grpc_call_header(call, "slot", 0);
                unsigned i = slot ? (unsigned) atoi(slot) : 0;

                ck_assert_uint_lt(i, ELEMENTSOF(F->stall_calls));
                ck_assert_int_eq(grpc_call_accept(call, NULL, &stall_handler, UINT_TO_PTR(i)), 0);
                F->stall_calls[i] = call;
                return 0;
        }
        if (!streq_ptr(grpc_call_path(call), "/AgentService/Connect"))
                return GRPC_STATUS_UNIMPLEMENTED;
        F->n_agentid = grpc_call_header_count(call, "agentid");
        (void) snprintf(F->agentid, sizeof(F->agentid), "%s", grpc_call_header(call, "agentid", 0) ?: "");
        ck_assert_int_eq(grpc_call_accept(call, (char *const *) md, &s_handler, NULL), 0);
        F->scall = call;
        return 0;
}

static void c_on_ready(H2Conn *c, void *userdata) {
        F->ready = true;
}

static int c_on_headers(GrpcCall *call, void *userdata) {
        (void) snprintf(F->serverid, sizeof(F->serverid), "%s", grpc_call_header(call, "serverid", 0) ?: "");
        return 0;
}

static int c_on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        F->n_client_packets++;
        return 0;
}

static void c_on_end(GrpcCall *call, int status, const char *message, void *userdata) {
        F->client_ended = true;
        F->client_end_status = status;
        (void) snprintf(F->client_end_message, sizeof(F->client_end_message), "%s", message ?: "");
        F->ccall = NULL;
}

static const GrpcCallHandler c_handler = { .on_headers = c_on_headers, .on_packet = c_on_packet, .on_end = c_on_end };
static const H2ConnHandler server_conn_handler = { .on_call = s_on_call };
static void c_on_close(H2Conn *c, int error, const char *reason, void *userdata) {
        F->client = NULL; /* it frees itself */
}

static const H2ConnHandler client_conn_handler = { .on_ready = c_on_ready, .on_close = c_on_close };

/* A client and a server H2Conn over a socketpair, plain or mTLS (with the test PKI; the unchecked fixture made
 * it); server_settings NULL: the defaults. */
static void setup_with(const H2ConnSettings *server_settings, bool tls) {
        TlsConn *ctls = NULL, *stls = NULL;
        int sv[2];
        Transport ct, st;

        F = calloc(1, sizeof(Fixture));
        ck_assert_ptr_nonnull(F);
        ck_assert_int_eq(sd_event_new(&F->e), 0);
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        if (tls) {
                SSL_CTX *sctx = NULL, *cctx = NULL;

                ck_assert_int_eq(tls_ctx_new_server(CERT("server.crt"), CERT("server.key"), CERT("ca.crt"),
                                                    TLS_ALPN_H2, &sctx, NULL), 0);
                ck_assert_int_eq(tls_ctx_new_client(CERT("ca.crt"), CERT("agent.crt"), CERT("agent.key"), NULL,
                                                    &cctx, NULL), 0);
                ck_assert_int_eq(tls_conn_new(sctx, sv[1], true, NULL, &stls), 0);
                ck_assert_int_eq(tls_conn_new(cctx, sv[0], false, "localhost", &ctls), 0);
                SSL_CTX_free(sctx); /* the connections keep their references */
                SSL_CTX_free(cctx);
        }
        transport_init(&ct, sv[0], ctls);
        transport_init(&st, sv[1], stls);
        ck_assert_int_eq(h2conn_new(F->e, &st, true, server_settings, &server_conn_handler, NULL, &F->server), 0);
        ck_assert_int_eq(h2conn_new(F->e, &ct, false, NULL, &client_conn_handler, NULL, &F->client), 0);
        spin(&F->ready);
}

static void setup(void) {
        setup_with(NULL, false);
}

static void teardown(void) {
        F->client = h2conn_free(F->client);
        F->server = h2conn_free(F->server);
        F->e = sd_event_unref(F->e);
        free(F);
}

static void start_call(const char *path) {
        const char *md[] = { "agentid", "node-1", "agentidentifiers", "host=node-1", NULL };
        ck_assert_int_eq(grpc_call_start(F->client, path, "localhost", (char *const *) md, &c_handler, NULL, &F->ccall), 0);
}

START_TEST(test_metadata_and_packets) {
        Packet dial = { .type = PACKET_DIAL_REQ,
                        .dial_req = { .protocol = { "tcp", 3 }, .address = { "10.0.0.1:443", 12 }, .random = 99 } };

        start_call("/AgentService/Connect");
        ck_assert_int_eq(grpc_call_send_packet(F->ccall, &dial), 0);
        for (unsigned i = 0; i < LOOP_MAX && (F->n_server_packets == 0 || !*F->serverid); i++)
                ck_assert_int_ge(sd_event_run(F->e, 100000), 0);
        ck_assert_uint_eq(F->n_agentid, 1);
        ck_assert_str_eq(F->agentid, "node-1");
        ck_assert_str_eq(F->serverid, "srv-7");
        ck_assert_int_eq(F->last.type, PACKET_DIAL_REQ);
        ck_assert_str_eq(F->last_addr, "10.0.0.1:443");
        ck_assert_int_eq(F->last.dial_req.random, 99);
}
END_TEST

START_TEST(test_server_finish_status) {
        start_call("/AgentService/Connect");
        for (unsigned i = 0; i < LOOP_MAX && !F->scall; i++)
                ck_assert_int_ge(sd_event_run(F->e, 100000), 0);
        grpc_call_finish(F->scall, GRPC_STATUS_RESOURCE_EXHAUSTED, "too much: 100%");
        F->scall = NULL;
        spin(&F->client_ended);
        ck_assert_int_eq(F->client_end_status, GRPC_STATUS_RESOURCE_EXHAUSTED);
        /* grpc-message is percent-encoded on the wire. */
        ck_assert_str_eq(F->client_end_message, "too much: 100%25");
}
END_TEST

START_TEST(test_unimplemented) {
        start_call("/agent.AgentService/Connect");
        spin(&F->client_ended);
        ck_assert_int_eq(F->client_end_status, GRPC_STATUS_UNIMPLEMENTED);
        ck_assert_uint_eq(F->n_server_packets, 0);
}
END_TEST

START_TEST(test_rejected_with_status) {
        F->reject_status = GRPC_STATUS_UNKNOWN;
        start_call("/AgentService/Connect");
        spin(&F->client_ended);
        ck_assert_int_eq(F->client_end_status, GRPC_STATUS_UNKNOWN);
        ck_assert_str_eq(F->client_end_message, "go away");
}
END_TEST

START_TEST(test_backpressure_withheld_credits) {
        /* 3 MiB of DATA while the server keeps every credit: the 1 MiB stream window must stop the sender. */
        static uint8_t payload[3 * 1024 * 1024];
        size_t sent_before;

        for (size_t i = 0; i < sizeof(payload); i++)
                payload[i] = (uint8_t) (i * 7 + 3);
        F->retain = true;
        start_call("/AgentService/Connect");
        for (size_t off = 0; off < sizeof(payload); off += 64 * 1024)
                ck_assert_int_eq(grpc_call_send_data_copy(F->ccall, 1, payload + off, 64 * 1024), 0);
        spin_n(2000);
        sent_before = F->server_data_bytes;
        ck_assert_uint_gt(sent_before, 0);
        ck_assert_uint_le(sent_before, H2_DEFAULT_STREAM_WINDOW);
        ck_assert_uint_gt(grpc_call_queued_bytes(F->ccall), 0);
        /* Give the credits back: everything arrives, intact and in order. */
        drain_retained(sizeof(payload));
        ck_assert_mem_eq(F->server_data, payload, sizeof(payload));
}
END_TEST

typedef struct Owned {
        OutMsg m;
        uint8_t data[200000];
        bool done;
} Owned;

static void owned_done(OutMsg *m, void *userdata) {
        ((Owned *) userdata)->done = true;
}

START_TEST(test_cancel_keeps_bytes) {
        /* Queue two messages referencing caller memory, cancel the first before it is out, scribble over its
         * memory: the server must still receive both payloads intact, in order, and done() must not fire. */
        Owned *a = calloc(1, sizeof(Owned)), *b = calloc(1, sizeof(Owned));

        memset(a->data, 'a', sizeof(a->data));
        memset(b->data, 'b', sizeof(b->data));
        start_call("/AgentService/Connect");
        grpc_call_send_data(F->ccall, &a->m, 5, a->data, sizeof(a->data), 0, owned_done, a);
        grpc_call_send_data(F->ccall, &b->m, 5, b->data, sizeof(b->data), 0, owned_done, b);
        grpc_call_cancel_msg(&a->m);
        ck_assert(!out_msg_queued(&a->m));
        memset(a->data, 'X', sizeof(a->data));
        for (unsigned i = 0; i < LOOP_MAX && F->server_data_bytes < 2 * sizeof(a->data); i++)
                ck_assert_int_ge(sd_event_run(F->e, 100000), 0);
        ck_assert_uint_eq(F->server_data_bytes, 2 * sizeof(a->data));
        for (size_t i = 0; i < sizeof(a->data); i++) {
                ck_assert_int_eq(F->server_data[i], 'a');
                ck_assert_int_eq(F->server_data[sizeof(a->data) + i], 'b');
        }
        ck_assert(!a->done);
        ck_assert(b->done);
        free(a);
        free(b);
}
END_TEST

START_TEST(test_peer_gone_ends_calls) {
        start_call("/AgentService/Connect");
        for (unsigned i = 0; i < LOOP_MAX && !F->scall; i++)
                ck_assert_int_ge(sd_event_run(F->e, 100000), 0);
        F->server = h2conn_free(F->server);
        spin(&F->client_ended);
        ck_assert_int_eq(F->client_end_status, GRPC_STATUS_UNAVAILABLE);
        for (unsigned i = 0; i < LOOP_MAX && F->client; i++)
                ck_assert_int_ge(sd_event_run(F->e, 100000), 0);
        ck_assert_ptr_null(F->client);
}
END_TEST

/* Small windows so that a few stalled streams could exhaust the connection window. */
#define STALL_STREAM_WINDOW (64u * 1024)
#define STALL_CONN_WINDOW (256u * 1024)

static void setup_stall(uint64_t held_max) {
        setup_with(&(const H2ConnSettings){ .stream_window = STALL_STREAM_WINDOW,
                                            .connection_window = STALL_CONN_WINDOW, .held_max = held_max },
                   false);
}

static GrpcCall *stall_call(unsigned slot, bool retain, size_t bytes) {
        static uint8_t chunk[32 * 1024];
        char num[8];
        const char *md[] = { "slot", num, NULL };
        GrpcCall *call;

        (void) snprintf(num, sizeof(num), "%u", slot);
        F->stall_retain[slot] = retain;
        ck_assert_int_eq(grpc_call_start(F->client, "/test/Stall", "localhost", (char *const *) md, &c_handler, NULL,
                                         &call), 0);
        for (size_t off = 0; off < bytes; off += sizeof(chunk))
                ck_assert_int_eq(grpc_call_send_data_copy(call, 1, chunk, MIN(sizeof(chunk), bytes - off)), 0);
        return call;
}

static size_t stall_total(unsigned n) {
        size_t t = 0;

        for (unsigned i = 0; i < n; i++)
                t += F->stall_got[i];
        return t;
}

START_TEST(test_stalled_streams_do_not_starve_others) {
        /* Eight streams whose reader keeps every credit hold 8 x 64 KiB, twice the 256 KiB connection window; a
         * ninth stream still moves 1 MiB, because connection credits come back on receipt. */
        setup_stall(0);
        for (unsigned i = 0; i < 8; i++)
                (void) stall_call(i, true, 2 * STALL_STREAM_WINDOW);
        spin_n(500);
        for (unsigned i = 0; i < 8; i++) { /* its window (less the gRPC and packet framing), then stopped */
                ck_assert_uint_le(F->stall_got[i], STALL_STREAM_WINDOW);
                ck_assert_uint_gt(F->stall_got[i], STALL_STREAM_WINDOW - 1024);
        }
        (void) stall_call(8, false, 1024 * 1024);
        for (unsigned i = 0; i < LOOP_MAX && F->stall_got[8] < 1024 * 1024; i++)
                ck_assert_int_ge(sd_event_run(F->e, 100 * 1000), 0);
        ck_assert_uint_eq(F->stall_got[8], 1024 * 1024);
}
END_TEST

START_TEST(test_stalled_bytes_bounded_by_connection_buffer) {
        /* With held_max 128 KiB, once the stalled streams hold more than that, connection credits wait too: what
         * arrives stops at held_max + the connection window, and a fresh stream is throttled until the stalled
         * ones drain. Then everything completes. */
        const uint64_t held_max = 128 * 1024;
        size_t before;

        setup_stall(held_max);
        for (unsigned i = 0; i < 8; i++)
                (void) stall_call(i, true, 2 * STALL_STREAM_WINDOW);
        (void) stall_call(8, false, 1024 * 1024);
        spin_n(500);
        before = stall_total(9);
        ck_assert_uint_le(before, held_max + STALL_CONN_WINDOW);
        ck_assert_uint_lt(F->stall_got[8], 1024 * 1024);
        spin_n(200);
        ck_assert_uint_eq(stall_total(9), before); /* stopped, not crawling */
        /* The stalled readers take their bytes: the credits come back, and all of it arrives. */
        for (unsigned i = 0; i < 8; i++)
                F->stall_retain[i] = false;
        for (unsigned i = 0; i < LOOP_MAX && stall_total(9) < 8 * 2 * STALL_STREAM_WINDOW + 1024 * 1024; i++) {
                for (unsigned k = 0; k < 8; k++)
                        if (F->stall_retained[k] > 0 && F->stall_calls[k]) {
                                grpc_call_consume(F->stall_calls[k], F->stall_retained[k]);
                                F->stall_retained[k] = 0;
                        }
                ck_assert_int_ge(sd_event_run(F->e, 100 * 1000), 0);
        }
        for (unsigned i = 0; i < 8; i++)
                ck_assert_uint_eq(F->stall_got[i], 2 * STALL_STREAM_WINDOW);
        ck_assert_uint_eq(F->stall_got[8], 1024 * 1024);
}
END_TEST

/* Messages lent with headroom (grpc_call_send_data(..., H2_SEND_HEADROOM, ...)), as relay and forwarder send them:
 * over TLS their frames go to TLS from the owner's buffer, headers written in front of each frame. */
typedef struct Lent {
        OutMsg m;
        uint8_t room[H2_SEND_HEADROOM];
        uint8_t data[200000];
        bool done;
} Lent;

static void lent_done(OutMsg *m, void *userdata) {
        ((Lent *) userdata)->done = true;
}

static Lent *lent_new(unsigned seed) {
        Lent *l = calloc(1, sizeof(Lent));

        ck_assert_ptr_nonnull(l);
        memset(l->room, 0xEE, sizeof(l->room));
        for (size_t i = 0; i < sizeof(l->data); i++)
                l->data[i] = (uint8_t) (i * 31 + seed);
        return l;
}

static void setup_tls_window(uint32_t stream_window) {
        setup_with(&(const H2ConnSettings){ .stream_window = stream_window }, true);
        spin_n(100); /* the server's SETTINGS (its windows) reach the client */
}

/* Sizes around every frame boundary: 1 byte, one 16 KiB frame, a default relay chunk (128 KiB, one frame between
 * konn peers), and 200 000 bytes (two frames at 128 KiB, thirteen at 16 KiB). */
static const size_t lent_sizes[] = { 1, 100, 16384 - 20, 16384, 128 * 1024, 200000 };

static void lent_roundtrip(void) {
        Lent *l[ELEMENTSOF(lent_sizes)];
        size_t total = 0, off = 0;

        start_call("/AgentService/Connect");
        for (size_t i = 0; i < ELEMENTSOF(lent_sizes); i++) {
                l[i] = lent_new((unsigned) i);
                grpc_call_send_data(F->ccall, &l[i]->m, 7, l[i]->data, lent_sizes[i], sizeof(l[i]->room), lent_done,
                                    l[i]);
                total += lent_sizes[i];
        }
        for (unsigned i = 0; i < LOOP_MAX && F->server_data_bytes < total; i++)
                ck_assert_int_ge(sd_event_run(F->e, 100000), 0);
        ck_assert_uint_eq(F->server_data_bytes, total);
        for (size_t i = 0; i < ELEMENTSOF(lent_sizes); i++) {
                Lent *x = l[i];
                uint8_t want[sizeof(x->data)];

                for (size_t j = 0; j < lent_sizes[i]; j++)
                        want[j] = (uint8_t) (j * 31 + i);
                ck_assert_mem_eq(F->server_data + off, want, lent_sizes[i]);
                off += lent_sizes[i];
                ck_assert(x->done);
                /* The frame header went into the lent room: DATA (type 0) of the client's first stream, 1. */
                ck_assert_int_eq(x->room[sizeof(x->room) - x->m.hdr_len - 9 + 3], 0);
                ck_assert_int_eq(x->room[sizeof(x->room) - x->m.hdr_len - 9 + 8], 1);
                ck_assert_int_eq(x->room[0], 0xEE);
                free(x);
        }
}

START_TEST(test_lent_frames_big_window) {
        setup_tls_window(0);
        lent_roundtrip();
}
END_TEST

START_TEST(test_lent_frames_small_window) {
        /* 16 KiB windows: frames split messages anywhere, later frames' headers overwrite sent payload. */
        setup_tls_window(16 * 1024);
        lent_roundtrip();
}
END_TEST

START_TEST(test_lent_frames_odd_window) {
        /* A window of a prime number of bytes: frames also start inside a message's headers. */
        setup_tls_window(20011);
        lent_roundtrip();
}
END_TEST

START_TEST(test_lent_frame_starts_in_headers) {
        /* The 16 KiB window ends 3 bytes into the second message's headers: its next frame carries the rest of
         * them, written into its headroom right before the payload. */
        Lent *a = lent_new(1), *b = lent_new(2);
        uint8_t hdr[PACKET_DATA_HEADER_MAX], want[2 * sizeof(a->data)];
        size_t hl = 0, size_a = 16000;

        ck_assert_int_eq(packet_encode_data_header(7, size_a, hdr, sizeof(hdr), &hl), 0);
        size_a = 16384 - 3 - GRPC_PREFIX_SIZE - hl;
        setup_tls_window(16384);
        memcpy(want, a->data, size_a);
        memcpy(want + size_a, b->data, sizeof(b->data));
        F->retain = true;
        start_call("/AgentService/Connect");
        grpc_call_send_data(F->ccall, &a->m, 7, a->data, size_a, sizeof(a->room), lent_done, a);
        grpc_call_send_data(F->ccall, &b->m, 7, b->data, sizeof(b->data), sizeof(b->room), lent_done, b);
        ck_assert_uint_eq(a->m.hdr_len + a->m.payload_len, 16384 - 3);
        for (unsigned i = 0; i < LOOP_MAX && !a->done; i++)
                ck_assert_int_ge(sd_event_run(F->e, 100000), 0);
        spin_n(200);
        ck_assert_uint_eq(F->server_data_bytes, size_a);
        ck_assert_uint_eq(b->m.sent, 3);
        drain_retained(size_a + sizeof(b->data));
        ck_assert_mem_eq(F->server_data, want, size_a + sizeof(b->data));
        ck_assert(b->done);
        free(a);
        free(b);
}
END_TEST

START_TEST(test_lent_cancel_keeps_bytes) {
        /* A lent message stopped by the stream window in its middle is cancelled: what is unsent is copied intact
         * although the owner then scribbles over all of its buffer, and nothing is reordered. */
        Lent *a = lent_new(1), *b = lent_new(2);
        uint8_t want[2 * sizeof(a->data)];

        setup_tls_window(64 * 1024);
        memcpy(want, a->data, sizeof(a->data));
        memcpy(want + sizeof(a->data), b->data, sizeof(b->data));
        F->retain = true;
        start_call("/AgentService/Connect");
        grpc_call_send_data(F->ccall, &a->m, 7, a->data, sizeof(a->data), sizeof(a->room), lent_done, a);
        grpc_call_send_data(F->ccall, &b->m, 7, b->data, sizeof(b->data), sizeof(b->room), lent_done, b);
        for (unsigned i = 0; i < LOOP_MAX && F->server_data_bytes < 64 * 1024 - a->m.hdr_len; i++)
                ck_assert_int_ge(sd_event_run(F->e, 100000), 0);
        spin_n(200);
        ck_assert_uint_eq(F->server_data_bytes, 64 * 1024 - a->m.hdr_len);
        ck_assert(out_msg_queued(&a->m));
        grpc_call_cancel_msg(&a->m);
        memset(a, 'X', sizeof(*a));
        drain_retained(sizeof(want));
        ck_assert_mem_eq(F->server_data, want, sizeof(want));
        ck_assert(b->done);
        free(a);
        free(b);
}
END_TEST

START_TEST(test_metadata_not_indexed) {
        /* Per-call metadata (a tunnel stream's IDs) stays out of the receiver's HPACK table: a second call with
         * other values adds nothing, the fixed request headers being in it already. */
        const char *md1[] = { "konn-dial-id", "1234567890123456789", "konn-connect-id", "17", NULL };
        const char *md2[] = { "konn-dial-id", "9876543210987654321", "konn-connect-id", "18", NULL };
        GrpcCall *c1 = NULL, *c2 = NULL;
        size_t after_first;

        ck_assert_int_eq(grpc_call_start(F->client, "/AgentService/Connect", "localhost", (char *const *) md1,
                                         &c_handler, NULL, &c1), 0);
        spin_n(50);
        ck_assert_ptr_nonnull(F->scall);
        after_first = h2conn_hpack_inflate_size(F->server);
        ck_assert_uint_gt(after_first, 0);
        F->scall = NULL;
        ck_assert_int_eq(grpc_call_start(F->client, "/AgentService/Connect", "localhost", (char *const *) md2,
                                         &c_handler, NULL, &c2), 0);
        spin_n(50);
        ck_assert_ptr_nonnull(F->scall);
        ck_assert_uint_eq(h2conn_hpack_inflate_size(F->server), after_first);
}
END_TEST

START_TEST(test_features_list) {
        ck_assert(konn_features_has("tunnel-streams", "tunnel-streams"));
        ck_assert(konn_features_has("a, tunnel-streams ,b", "tunnel-streams"));
        ck_assert(!konn_features_has("tunnel-streamsx", "tunnel-streams"));
        ck_assert(!konn_features_has("x-tunnel-streams", "tunnel-streams"));
        ck_assert(!konn_features_has("", "tunnel-streams"));
        ck_assert(!konn_features_has(NULL, "tunnel-streams"));
}
END_TEST

static Suite *h2conn_suite(void) {
        Suite *s = suite_create("h2conn");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_metadata_and_packets);
        tcase_add_test(tc, test_server_finish_status);
        tcase_add_test(tc, test_unimplemented);
        tcase_add_test(tc, test_rejected_with_status);
        tcase_add_test(tc, test_backpressure_withheld_credits);
        tcase_add_test(tc, test_cancel_keeps_bytes);
        tcase_add_test(tc, test_peer_gone_ends_calls);
        tcase_add_test(tc, test_metadata_not_indexed);
        suite_add_tcase(s, tc);
        tc = tcase_create("stalled streams");
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_stalled_streams_do_not_starve_others);
        tcase_add_test(tc, test_stalled_bytes_bounded_by_connection_buffer);
        suite_add_tcase(s, tc);
        tc = tcase_create("lent frames over TLS");
        tcase_add_unchecked_fixture(tc, certs_setup, certs_teardown);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_lent_frames_big_window);
        tcase_add_test(tc, test_lent_frames_small_window);
        tcase_add_test(tc, test_lent_frames_odd_window);
        tcase_add_test(tc, test_lent_frame_starts_in_headers);
        tcase_add_test(tc, test_lent_cancel_keeps_bytes);
        suite_add_tcase(s, tc);
        tc = tcase_create("features");
        tcase_add_test(tc, test_features_list);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(h2conn_suite());
        int failed;

        log_set_max_level(LOG_WARNING);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
