/* SPDX-License-Identifier: Apache-2.0 */
/*
 * h2conn — one HTTP/2 connection (nghttp2 session over a Transport) and the gRPC calls on it.
 *
 * Owns: the nghttp2 session, the Transport, the output buffer, every GrpcCall (one per HTTP/2 stream) and every
 * OutMsg the library allocated (control packets, detached copies). An H2Conn is owned by whoever created it (the
 * server's manager for agent connections, an agent ServerConn) until it fails: then it calls on_close() and frees
 * itself afterwards, so the owner must forget the pointer in on_close(). Owners outside h2conn callbacks may call
 * h2conn_free() directly; from inside callbacks they call h2conn_close(), which tears down asynchronously.
 *
 * A GrpcCall is owned by its H2Conn. Its handler (the owner's object riding on it) learns of every end that the
 * owner did not cause through on_end(), after which the call pointer must be forgotten. grpc_call_finish() and
 * grpc_call_abort() end a call from the owner's side and detach the handler (no on_end follows).
 *
 * Data path: received DATA is de-framed (grpc) and decoded (packet) in place; DATA payloads point into the input
 * buffer. A DATA message split over HTTP/2 frames is streamed: on_packet() sees it piece by piece as the frames
 * arrive (p->data.continued on all pieces but the first), so credits never wait for a whole message. A handler
 * returns how many payload bytes it keeps unconsumed; those stream credits are returned later with
 * grpc_call_consume() once the bytes reached their destination (backpressure). Connection credits come back as
 * DATA arrives, so streams whose readers stopped cannot starve the others (as grpc-go does), until the bytes held
 * for such streams pass settings.held_max: from then on connection credits wait too, so what one connection makes
 * us hold stays below held_max plus the connection window. Outgoing messages are queued per call (OutMsg, FIFO)
 * and copied once into the connection's output buffer, never before; messages lent with headroom (relay and
 * forwarder chunks) are not even copied there on TLS connections: each of their frames goes to TLS straight from
 * the owner's buffer, its headers written in front of it.
 * Called from the sd-event loop only.
 */
#pragma once

#include <systemd/sd-event.h>

#include "grpc.h"
#include "macro.h"
#include "packet.h"
#include "transport.h"

typedef struct H2Conn H2Conn;
typedef struct GrpcCall GrpcCall;
typedef struct OutMsg OutMsg;

/* What a DATA message's headers need in front of its payload: HTTP/2 frame header, gRPC prefix, packet header. */
#define H2_SEND_HEADROOM 64

typedef void (*out_msg_done_t)(OutMsg *m, void *userdata);

/* One outgoing gRPC message. Embedded in its owner for DATA (no allocation per packet); the payload stays the
 * owner's memory until done() is called or the message is cancelled (then h2conn copies what is still unsent). */
struct OutMsg {
        OutMsg *next, *prev;
        GrpcCall *call;                 /* non-NULL while queued */
        uint8_t hdr[GRPC_PREFIX_SIZE + PACKET_DATA_HEADER_MAX];
        size_t hdr_len;
        const uint8_t *payload;
        size_t payload_len;
        size_t sent;                    /* bytes of hdr + payload already copied out */
        size_t headroom;                /* writable bytes before payload (0: payload is read-only); see below */
        out_msg_done_t done;
        void *userdata;
        bool owned;                     /* allocated by h2conn, freed when sent */
        bool control;                   /* a control packet: counts against the call's control-bytes bound */
        bool done_pending;              /* fully sent, done() not yet dispatched */
        H2Conn *done_conn;              /* whose done list holds it while done_pending */
};

typedef struct H2ConnHandler {
        /* Client: TLS and HTTP/2 preface done; submit calls now. */
        void (*on_ready)(H2Conn *c, void *userdata);
        /* Server: a new call's request headers are complete. Return 0 after grpc_call_accept(), or a GrpcStatus > 0
         * to have h2conn reject the call with a trailers-only response carrying that status and *ret_message. */
        int (*on_call)(H2Conn *c, GrpcCall *call, const char **ret_message, void *userdata);
        /* The connection failed or the peer went away. error is a negative errno; reason may be NULL. The H2Conn
         * frees itself after this returns. Not called for h2conn_free(). */
        void (*on_close)(H2Conn *c, int error, const char *reason, void *userdata);
        /* Optional: the peer sent GOAWAY (the first one only). Streams up to last_stream_id go on; no new stream
         * can be started on this connection. */
        void (*on_goaway)(H2Conn *c, uint32_t error_code, int32_t last_stream_id, void *userdata);
} H2ConnHandler;

typedef struct GrpcCallHandler {
        /* Client: response headers arrived (inspect them with grpc_call_header()). Return < 0 to cancel. */
        int (*on_headers)(GrpcCall *call, void *userdata);
        /* One decoded packet. Return < 0 to end the call (server: grpc-status INTERNAL); otherwise the number of DATA
         * payload bytes retained (their credits are returned later with grpc_call_consume()). */
        int (*on_packet)(GrpcCall *call, const Packet *p, void *userdata);
        /* The peer or the connection ended the call. status is a GrpcStatus, message may be NULL. */
        void (*on_end)(GrpcCall *call, int status, const char *message, void *userdata);
} GrpcCallHandler;

typedef struct H2ConnSettings {
        uint32_t max_concurrent_streams;     /* we accept; 0 = default 1000 */
        uint32_t stream_window;              /* initial per-stream receive window; 0 = default */
        uint32_t connection_window;          /* 0 = default */
        uint32_t window_max;                 /* both windows grow with the measured bandwidth-delay product up to
                                              * this; 0 or <= stream_window: fixed windows */
        uint64_t held_max;                   /* received bytes whose stream credits are withheld (stalled readers)
                                              * up to which connection credits still come back on receipt;
                                              * 0 = default */
        uint64_t handshake_timeout_usec;     /* 0 = none */
        uint64_t keepalive_usec;             /* PING interval; a PING not acknowledged by the next one kills the
                                              * connection. 0 = off */
} H2ConnSettings;

#define H2_DEFAULT_STREAM_WINDOW (1U * 1024 * 1024)
#define H2_DEFAULT_CONNECTION_WINDOW (16U * 1024 * 1024)
#define H2_DEFAULT_HELD_MAX ((uint64_t) 128 * 1024 * 1024)

/* Transport ownership passes to the H2Conn (also on failure). */
int h2conn_new(sd_event *e, Transport *t, bool server, const H2ConnSettings *s, const H2ConnHandler *h,
               void *userdata, H2Conn **ret);
H2Conn *h2conn_free(H2Conn *c);
void h2conn_close(H2Conn *c, int error, const char *reason);  /* async: GOAWAY, flush, on_close(), free */
Transport *h2conn_transport(H2Conn *c);
/* Bytes in the HPACK table of headers received (RFC 7541 sizes); for tests and diagnostics. */
size_t h2conn_hpack_inflate_size(H2Conn *c);
void h2conn_set_userdata(H2Conn *c, void *userdata);

/* Client: start a call. headers: name/value pairs for extra metadata, NULL-terminated array of 2*n strings. */
int grpc_call_start(H2Conn *c, const char *path, const char *authority, char *const *metadata,
                    const GrpcCallHandler *h, void *userdata, GrpcCall **ret);
/* Server: take a call offered by on_call and send response headers (:status 200, content-type, metadata).
 * on_call may also return 0 without accepting (deferred: e.g. while a token is reviewed); it then sets a handler
 * with grpc_call_set_handler() to hear of the peer going away, and later accepts or rejects the call. */
int grpc_call_accept(GrpcCall *call, char *const *metadata, const GrpcCallHandler *h, void *userdata);

/* Server: refuse a deferred call that was never accepted with a trailers-only response carrying status and
 * message (an accepted call is finished with them instead). Detaches the handler. */
void grpc_call_reject(GrpcCall *call, int status, const char *message);

const char *grpc_call_path(const GrpcCall *call);
/* Request headers (server, during on_call) or response headers (client, during on_headers); dropped after. */
unsigned grpc_call_header_count(const GrpcCall *call, const char *name);
const char *grpc_call_header(const GrpcCall *call, const char *name, unsigned idx);
H2Conn *grpc_call_conn(const GrpcCall *call);

/* Encode and queue one control packet (allocates). -ENOBUFS when the call's queue of control bytes is over its
 * bound (the peer is not reading): the caller treats that peer as stuck. */
int grpc_call_send_packet(GrpcCall *call, const Packet *p);
/* Queue a DATA packet whose payload lives in the caller's memory; done(m) fires once it has been copied out,
 * from h2conn's send path after nghttp2 returned: it may queue, consume and free its owner, but must not free the
 * H2Conn itself.
 * headroom: 0, or at least H2_SEND_HEADROOM writable bytes the caller owns just before data. Then data is lent
 * writable too, and on a TLS connection its DATA frames go to TLS straight from the caller's buffer: each frame's
 * header (and the gRPC prefix and packet header before the first) is written into the bytes just before it,
 * headroom or payload already sent, instead of frame and payload being copied into the output buffer. */
void grpc_call_send_data(GrpcCall *call, OutMsg *m, int64_t connect_id, const uint8_t *data, size_t len,
                         size_t headroom, out_msg_done_t done, void *userdata);
/* Queue a DATA packet with a copy of the payload (allocates; bounded by the flow control of wherever the bytes came
 * from, not by the control-bytes bound). */
int grpc_call_send_data_copy(GrpcCall *call, int64_t connect_id, const uint8_t *data, size_t len);
/* Take back a queued message: what is still unsent is copied and stays queued (bytes are never dropped or
 * reordered); done() will not be called. No-op if not queued. */
void grpc_call_cancel_msg(OutMsg *m);
/* Return flow-control credits for retained payload bytes. */
void grpc_call_consume(GrpcCall *call, size_t n);
size_t grpc_call_queued_bytes(const GrpcCall *call);
/* Hand an accepted/started call to another owner (the old one must forget it). */
void grpc_call_set_handler(GrpcCall *call, const GrpcCallHandler *h, void *userdata);
/* End the call from our side: server → trailers with status; client → END_STREAM (status ignored) after the queue
 * drains. Detaches the handler. */
void grpc_call_finish(GrpcCall *call, int status, const char *message);
/* End at once: server → trailers with status after the partially sent message, then RST_STREAM; client → RST. */
void grpc_call_abort(GrpcCall *call, int status, const char *message);

static inline void out_msg_init(OutMsg *m) {
        *m = (OutMsg){};
}
static inline bool out_msg_queued(const OutMsg *m) {
        return m->call != NULL;
}

/* konn-to-konn extension (docs/konn-protocol.md): the agent lists features in "konn-features" request metadata; a
 * konn server echoes those it enables in its response headers. Upstream peers ignore the header. */
#define KONN_FEATURES_HEADER "konn-features"
#define KONN_FEATURE_TUNNEL_STREAMS "tunnel-streams"
#define KONN_TUNNEL_STREAM_PATH "/konn.Tunnel/Stream"
/* Node → control plane (docs/konn-protocol.md §3): agent-opened streams to a server-side destination by name. */
#define KONN_FEATURE_REVERSE "reverse"
#define KONN_REVERSE_STREAM_PATH "/konn.Reverse/Stream"
#define KONN_REVERSE_NAME_HEADER "konn-reverse-name"
/* Whether the comma-separated list (may be NULL) contains feature. */
bool konn_features_has(const char *list, const char *feature);
