/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <inttypes.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <strings.h>
#include <sys/epoll.h>

#include "h2conn.h"
#include "log.h"

#define H2_INBUF_SIZE (256 * 1024)
#define H2_OUTBUF_SIZE (256 * 1024)
#define H2_READS_PER_WAKEUP 16
#define CALL_HEADERS_MAX 64
#define CALL_HEADER_BYTES_MAX (16 * 1024)
#define CALL_CONTROL_BYTES_MAX (1024 * 1024)
#define H2_MAX_HEADER_LIST 65536
/* What we send and accept per DATA frame: a default relay chunk (128 KiB) with its headers, so between konn peers
 * one read is one frame; fits the output buffer. */
#define H2_MAX_FRAME (128 * 1024 + H2_SEND_HEADROOM)

typedef struct Header {
        char *name, *value;
} Header;

typedef enum H2State {
        H2_HANDSHAKE,
        H2_RUNNING,
        H2_CLOSING,
} H2State;

struct GrpcCall {
        H2Conn *conn;
        LIST_FIELDS(GrpcCall, calls);
        int32_t stream_id;
        bool client;
        char *path;
        Header *headers;
        unsigned n_headers;
        size_t header_bytes;

        const GrpcCallHandler *handler;
        void *userdata;

        GrpcReader reader;
        size_t unaccounted;  /* received bytes of a partial message: neither consumed nor retained yet */
        size_t cur_retained; /* retained by handlers while one chunk is processed */
        uint64_t withheld;   /* received bytes whose stream credits have not come back (part of conn->held) */
        uint32_t window;     /* this stream's receive window (grows alone: bdp_on_stream_data()) */
        uint32_t bdp_epoch;  /* the BDP sample its bdp_rx counts for (0: none) */
        uint64_t bdp_rx;     /* DATA bytes received during that sample */
        double bdp_bw_max;   /* the highest bandwidth its samples showed, bytes per microsecond */
        int64_t stream_connect_id; /* DATA message being streamed: its connect_id */
        bool stream_started;       /* ... and its first piece went to the owner */

        OutMsg *q_head, *q_tail;
        size_t q_bytes;         /* unsent bytes queued */
        size_t q_control_bytes; /* of which in control packets (DATA is bounded by flow control instead) */

        bool deferred;          /* data provider returned DEFERRED */
        bool responded;         /* server: response headers submitted */
        bool finishing;         /* end our side once the queue drains */
        bool ended_local;       /* trailers / END_STREAM submitted */
        bool rst_after_end;     /* server: reset once trailers are out if the client is still sending */
        bool ignore_input;
        bool remote_closed;
        int status;
        char *message;
        int rx_status;          /* client: grpc-status from the peer, -1 if none */
        char *rx_message;
};

struct H2Conn {
        sd_event *event;
        Transport transport;
        nghttp2_session *session;
        bool server;
        H2State state;
        unsigned in_nghttp2;    /* inside nghttp2_session_send()/mem_recv(): nghttp2 must not be re-entered */
        H2ConnSettings settings;
        sd_event_source *io, *timer, *defer, *keepalive;
        bool ping_outstanding;
        bool goaway_seen;       /* the peer's first GOAWAY was handed to on_goaway */
        bool goaway_pending;    /* h2conn_close() from inside nghttp2: GOAWAY submitted once nghttp2 returned */

        /* BDP estimation: one PING at a time, sent once a quarter of the initial stream window arrived while none
         * was out; each stream counts the DATA it received until the ACK (GrpcCall.bdp_rx). */
        bool bdp_ping_outstanding;
        uint64_t bdp_idle_bytes;   /* received since the last sample: a new one starts after stream_window / 4 */
        uint64_t bdp_sent_usec;    /* when the sample's PING left */
        uint32_t bdp_epoch;        /* samples started so far; the current or last one */
        unsigned bdp_n_rtt;        /* round trips measured (the first 10 are averaged) */
        double bdp_rtt_usec;       /* smoothed round trip */
        uint32_t stream_window, connection_window; /* initial stream window; connection window (only grows) */
        uint64_t held;          /* received bytes whose stream credits are withheld, all calls */
        uint64_t conn_owed;     /* connection credits not returned yet (while held > settings.held_max) */
        const H2ConnHandler *handler;
        void *userdata;

        uint8_t *outbuf;
        size_t out_off, out_len;
        bool write_blocked;

        GrpcCall *calls;
        size_t n_calls;

        OutMsg *done_head;      /* sent messages whose done() runs once nghttp2 has returned (next → next) */

        int close_error;
        char *close_reason;
};

/* Input is processed synchronously (read → nghttp2 → handlers), so one buffer serves every connection. DATA
 * payloads handed to handlers point into it and are valid only during the callback. */
static uint8_t inbuf[H2_INBUF_SIZE];

static void h2conn_schedule(H2Conn *c);
static void h2conn_fail(H2Conn *c, int error, const char *reason);

static const uint8_t bdp_ping_opaque[8] = { 'k', 'o', 'n', 'n', '-', 'b', 'd', 'p' };
static GrpcCall *grpc_call_free(GrpcCall *call);

/* ---------------------------------------------------------------------------------------------------------------- */
/* Output queue */

static size_t out_msg_total(const OutMsg *m) {
        return m->hdr_len + m->payload_len;
}

static void queue_append(GrpcCall *call, OutMsg *m) {
        m->call = call;
        m->next = NULL;
        m->prev = call->q_tail;
        if (call->q_tail)
                call->q_tail->next = m;
        else
                call->q_head = m;
        call->q_tail = m;
        call->q_bytes += out_msg_total(m) - m->sent;
        if (m->control)
                call->q_control_bytes += out_msg_total(m) - m->sent;
}

static void queue_unlink(GrpcCall *call, OutMsg *m) {
        size_t left = out_msg_total(m) - m->sent;

        if (m->prev)
                m->prev->next = m->next;
        else
                call->q_head = m->next;
        if (m->next)
                m->next->prev = m->prev;
        else
                call->q_tail = m->prev;
        m->next = m->prev = NULL;
        m->call = NULL;
        call->q_bytes -= left;
        if (m->control)
                call->q_control_bytes -= left;
}

static OutMsg *out_msg_new_owned(size_t len) {
        OutMsg *m = malloc(sizeof(OutMsg) + len);
        if (!m)
                return NULL;
        *m = (OutMsg){ .owned = true, .payload = (const uint8_t *) (m + 1), .payload_len = len };
        return m;
}

static void call_kick(GrpcCall *call) {
        H2Conn *c = call->conn;

        if (call->deferred && call->stream_id > 0 && c->session) {
                call->deferred = false;
                (void) nghttp2_session_resume_data(c->session, call->stream_id);
        }
        h2conn_schedule(c);
}

int grpc_call_send_packet(GrpcCall *call, const Packet *p) {
        size_t len, size;
        OutMsg *m;
        int r;

        assert(call);
        if (call->ended_local || call->finishing)
                return -ESHUTDOWN;
        if (call->q_control_bytes > CALL_CONTROL_BYTES_MAX)
                return -ENOBUFS;
        size = packet_encoded_size(p);
        if (size > GRPC_MESSAGE_MAX)
                return -EMSGSIZE;
        m = out_msg_new_owned(GRPC_PREFIX_SIZE + size);
        if (!m)
                return -ENOMEM;
        r = packet_encode(p, (uint8_t *) m->payload + GRPC_PREFIX_SIZE, size, &len);
        if (r < 0) {
                free(m);
                return r;
        }
        grpc_prefix_write((uint8_t *) m->payload, (uint32_t) len);
        m->payload_len = GRPC_PREFIX_SIZE + len;
        m->control = true;
        queue_append(call, m);
        call_kick(call);
        return 0;
}

int grpc_call_send_data_copy(GrpcCall *call, int64_t connect_id, const uint8_t *data, size_t len) {
        uint8_t hdr[GRPC_PREFIX_SIZE + PACKET_DATA_HEADER_MAX];
        size_t hl = 0;
        OutMsg *m;
        int r;

        if (call->ended_local || call->finishing)
                return -ESHUTDOWN;
        if (len > GRPC_MESSAGE_MAX - sizeof(hdr))
                return -EMSGSIZE;
        r = packet_encode_data_header(connect_id, len, hdr + GRPC_PREFIX_SIZE, sizeof(hdr) - GRPC_PREFIX_SIZE, &hl);
        if (r < 0)
                return r;
        grpc_prefix_write(hdr, (uint32_t) (hl + len));
        m = out_msg_new_owned(GRPC_PREFIX_SIZE + hl + len);
        if (!m)
                return -ENOMEM;
        memcpy((uint8_t *) m->payload, hdr, GRPC_PREFIX_SIZE + hl);
        memcpy((uint8_t *) m->payload + GRPC_PREFIX_SIZE + hl, data, len);
        queue_append(call, m);
        call_kick(call);
        return 0;
}

void grpc_call_send_data(GrpcCall *call, OutMsg *m, int64_t connect_id, const uint8_t *data, size_t len,
                         size_t headroom, out_msg_done_t done, void *userdata) {
        size_t hl = 0;

        assert(call && m && !m->call);
        assert(len <= GRPC_MESSAGE_MAX - PACKET_DATA_HEADER_MAX);
        assert(headroom == 0 || headroom >= H2_SEND_HEADROOM);
        *m = (OutMsg){ .payload = data, .payload_len = len, .headroom = headroom, .done = done, .userdata = userdata };
        if (packet_encode_data_header(connect_id, len, m->hdr + GRPC_PREFIX_SIZE,
                                      sizeof(m->hdr) - GRPC_PREFIX_SIZE, &hl) < 0)
                assert(!"DATA header does not fit");
        grpc_prefix_write(m->hdr, (uint32_t) (hl + len));
        m->hdr_len = GRPC_PREFIX_SIZE + hl;
        queue_append(call, m);
        call_kick(call);
}

void grpc_call_cancel_msg(OutMsg *m) {
        GrpcCall *call;
        OutMsg *copy;
        size_t left, k = 0;

        if (m && m->done_pending) {
                /* Already sent; only its done() is outstanding: forget it. */
                for (OutMsg **p = &m->done_conn->done_head; *p; p = &(*p)->next)
                        if (*p == m) {
                                *p = m->next;
                                break;
                        }
                m->next = NULL;
                m->done_pending = false;
                m->done_conn = NULL;
                return;
        }
        if (!m || !m->call)
                return;
        call = m->call;
        left = out_msg_total(m) - m->sent;
        copy = out_msg_new_owned(left);
        if (!copy) {
                /* Cannot keep the stream's framing intact without the bytes: the only safe way out is to kill it. */
                queue_unlink(call, m);
                grpc_call_abort(call, GRPC_STATUS_INTERNAL, "out of memory");
                return;
        }
        /* Copy what is unsent of header + payload. */
        for (size_t off = m->sent; off < out_msg_total(m); off++)
                ((uint8_t *) copy->payload)[k++] = off < m->hdr_len ? m->hdr[off] : m->payload[off - m->hdr_len];
        /* Put the copy where the original was, keeping order. */
        copy->call = call;
        copy->prev = m->prev;
        copy->next = m->next;
        if (m->prev)
                m->prev->next = copy;
        else
                call->q_head = copy;
        if (m->next)
                m->next->prev = copy;
        else
                call->q_tail = copy;
        /* A DATA copy: its bytes stay bounded by the flow control that bounded the original. */
        m->next = m->prev = NULL;
        m->call = NULL;
}

size_t grpc_call_queued_bytes(const GrpcCall *call) {
        return call->q_bytes;
}

/* Connection credits: `add` bytes just arrived. They come back at once unless the bytes held for stalled readers
 * exceed held_max; then as many stay owed as held exceeds it, and come back as held shrinks. */
static void conn_credit(H2Conn *c, size_t add) {
        uint64_t owed = c->conn_owed + add, over = c->held > c->settings.held_max ? c->held - c->settings.held_max : 0;
        uint64_t keep = MIN(owed, over);

        if (owed > keep && c->session)
                (void) nghttp2_session_consume_connection(c->session, (size_t) (owed - keep));
        c->conn_owed = keep;
}

/* Stream credits of n withheld bytes come back. */
static void call_credit(GrpcCall *call, size_t n) {
        H2Conn *c = call->conn;

        n = (size_t) MIN((uint64_t) n, call->withheld);
        if (n == 0)
                return;
        call->withheld -= n;
        c->held -= n;
        if (c->session)
                (void) nghttp2_session_consume_stream(c->session, call->stream_id, n);
}

void grpc_call_consume(GrpcCall *call, size_t n) {
        H2Conn *c;

        if (!call || n == 0)
                return;
        c = call->conn;
        if (!c->session || c->state != H2_RUNNING)
                return;
        call_credit(call, n);
        conn_credit(c, 0);
        h2conn_schedule(c);
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* nghttp2 output side */

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t length, int flags, void *userdata) {
        H2Conn *c = userdata;
        size_t room;

        if (c->out_off > 0 && c->out_off == c->out_len)
                c->out_off = c->out_len = 0;
        room = H2_OUTBUF_SIZE - c->out_len;
        if (room < 1024 && c->out_off > 0) {
                memmove(c->outbuf, c->outbuf + c->out_off, c->out_len - c->out_off);
                c->out_len -= c->out_off;
                c->out_off = 0;
                room = H2_OUTBUF_SIZE - c->out_len;
        }
        if (room == 0)
                return NGHTTP2_ERR_WOULDBLOCK;
        length = MIN(length, room);
        memcpy(c->outbuf + c->out_len, data, length);
        c->out_len += length;
        return (ssize_t) length;
}

static ssize_t on_data_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *userdata) {
        GrpcCall *call = source->ptr;

        if (call->q_bytes > 0) {
                OutMsg *m = call->q_head;

                *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
                /* A lent message gets frames of its own, so they can go out from its buffer (send_data_lent()). */
                if (m->headroom > 0)
                        return (ssize_t) MIN(length, out_msg_total(m) - m->sent);
                return (ssize_t) MIN(length, call->q_bytes);
        }
        if (!call->finishing) {
                call->deferred = true;
                return NGHTTP2_ERR_DEFERRED;
        }
        /* Queue drained and the owner is done: end our side. */
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        call->ended_local = true;
        if (!call->client) {
                char status[16], msg[512];
                nghttp2_nv nv[2];
                size_t n = 0;

                (void) snprintf(status, sizeof(status), "%d", call->status);
                nv[n++] = (nghttp2_nv){ (uint8_t *) "grpc-status", (uint8_t *) status, STRLEN("grpc-status"),
                                        strlen(status), NGHTTP2_NV_FLAG_NONE };
                if (call->message && *call->message) {
                        size_t l = grpc_message_encode(call->message, msg, sizeof(msg));
                        nv[n++] = (nghttp2_nv){ (uint8_t *) "grpc-message", (uint8_t *) msg,
                                                STRLEN("grpc-message"), l, NGHTTP2_NV_FLAG_NONE };
                }
                *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                if (nghttp2_submit_trailer(s, stream_id, nv, n) != 0)
                        return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
}

/* Between konn peers DATA frames may be larger than HTTP/2's default 16 KiB, so whole messages travel in one
 * frame; towards Go peers their SETTINGS keep frames at 16 KiB. */
static ssize_t on_data_length(nghttp2_session *s, uint8_t frame_type, int32_t stream_id, int32_t session_window,
                              int32_t stream_window, uint32_t remote_max_frame_size, void *userdata) {
        int64_t n = MIN((int64_t) session_window, (int64_t) stream_window);

        n = MIN(n, (int64_t) remote_max_frame_size);
        n = MIN(n, (int64_t) H2_MAX_FRAME);
        return (ssize_t) MAX(n, (int64_t) 1);
}

/* Account for `take` bytes of the call's first queued message having left; a message that is complete leaves the
 * queue (owned ones are freed, others get their done() once nghttp2 has returned). */
static void queue_advance(H2Conn *c, GrpcCall *call, OutMsg *m, size_t take) {
        m->sent += take;
        call->q_bytes -= take;
        if (m->control)
                call->q_control_bytes -= take;
        if (m->sent < out_msg_total(m))
                return;
        queue_unlink(call, m); /* nothing of it is left unsent: the byte counters stay as they are */
        if (m->owned)
                free(m);
        else if (m->done) {
                /* Dispatched after nghttp2_session_send() returns, where owners may act freely. */
                m->done_pending = true;
                m->done_conn = c;
                m->next = c->done_head;
                c->done_head = m;
        }
}

/* A DATA frame that lies within one message whose owner lent its buffer (OutMsg.headroom) goes to TLS from that
 * buffer: the frame header, and any of the message's gRPC prefix and packet header the frame carries, are written
 * into the bytes just before the frame's payload (headroom, or payload TLS has already taken), so the payload is
 * not copied into the output buffer first. TLS coalesces what it encrypts into one send() per pass anyway (tls.c),
 * so this adds no syscalls. Whatever TLS does not take now is copied into the (then empty) output buffer. Returns
 * false, having written nothing of the frame, when the frame does not qualify or the output buffer could not be
 * emptied first; the caller then copies as usual. */
static bool send_data_lent(H2Conn *c, GrpcCall *call, const uint8_t *framehd, size_t length, size_t padlen) {
        OutMsg *m = call->q_head;
        size_t need = 9 + length;
        uint8_t *start;
        ssize_t n;

        if (!m || m->headroom == 0 || padlen > 0 || !c->transport.tls || length > out_msg_total(m) - m->sent)
                return false;

        while (c->out_off < c->out_len) {
                n = transport_write(&c->transport, c->outbuf + c->out_off, c->out_len - c->out_off);
                if (n <= 0)
                        return false;
                c->out_off += (size_t) n;
        }
        c->out_off = c->out_len = 0;

        /* The frame's first byte in the message is at offset sent - hdr_len of the payload: negative while in the
         * headers, whose unsent rest then goes in front of the payload (headroom >= 9 + hdr_len). */
        start = (uint8_t *) m->payload - m->hdr_len + m->sent - 9;
        memcpy(start, framehd, 9);
        if (m->sent < m->hdr_len)
                memcpy(start + 9, m->hdr + m->sent, MIN(length, m->hdr_len - m->sent));
        n = transport_write(&c->transport, start, need);
        if (n < 0)
                n = 0; /* -EAGAIN; or an error, which the pump's next write reports */
        if ((size_t) n < need) {
                memcpy(c->outbuf, start + n, need - (size_t) n);
                c->out_len = need - (size_t) n;
        }
        queue_advance(c, call, m, length);
        return true;
}

static int on_send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *source, void *userdata) {
        H2Conn *c = userdata;
        GrpcCall *call = source->ptr;
        size_t padlen = frame->data.padlen, need = 9 + length + padlen, left = length;
        uint8_t *p;

        if (send_data_lent(c, call, framehd, length, padlen))
                return 0;

        if (c->out_off > 0 && H2_OUTBUF_SIZE - c->out_len < need) {
                memmove(c->outbuf, c->outbuf + c->out_off, c->out_len - c->out_off);
                c->out_len -= c->out_off;
                c->out_off = 0;
        }
        if (H2_OUTBUF_SIZE - c->out_len < need)
                return NGHTTP2_ERR_WOULDBLOCK;

        p = c->outbuf + c->out_len;
        memcpy(p, framehd, 9);
        p += 9;
        if (padlen > 0)
                *p++ = (uint8_t) (padlen - 1);
        while (left > 0) {
                OutMsg *m = call->q_head;
                size_t take;

                assert(m);
                take = MIN(left, out_msg_total(m) - m->sent);
                if (m->sent < m->hdr_len) {
                        size_t h = MIN(take, m->hdr_len - m->sent);
                        memcpy(p, m->hdr + m->sent, h);
                        if (take > h)
                                memcpy(p + h, m->payload, take - h);
                } else
                        memcpy(p, m->payload + (m->sent - m->hdr_len), take);
                p += take;
                left -= take;
                queue_advance(c, call, m, take);
        }
        if (padlen > 1) {
                memset(p, 0, padlen - 1);
                p += padlen - 1;
        }
        c->out_len += need;
        return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *userdata) {
        GrpcCall *call;

        if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
                return 0;
        call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
        if (call && call->rst_after_end && !call->remote_closed)
                (void) nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
        return 0;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* nghttp2 input side */

static void call_end(GrpcCall *call, int status, const char *message) {
        const GrpcCallHandler *h = call->handler;

        call->handler = NULL;
        call->ignore_input = true;
        if (h && h->on_end)
                h->on_end(call, status, message, call->userdata);
}

/* h2conn itself ends a call (bad input): the owner hears of it first, then the peer gets the status. */
static void call_fail(GrpcCall *call, int status, const char *message) {
        call_end(call, status, message);
        grpc_call_abort(call, status, message);
}

static int call_add_header(GrpcCall *call, const uint8_t *name, size_t namelen, const uint8_t *value,
                           size_t valuelen) {
        Header *n;

        if (call->n_headers >= CALL_HEADERS_MAX ||
            call->header_bytes + namelen + valuelen > CALL_HEADER_BYTES_MAX)
                return -E2BIG;
        n = realloc(call->headers, sizeof(Header) * (call->n_headers + 1));
        if (!n)
                return -ENOMEM;
        call->headers = n;
        n[call->n_headers].name = strndup((const char *) name, namelen);
        n[call->n_headers].value = strndup((const char *) value, valuelen);
        if (!n[call->n_headers].name || !n[call->n_headers].value) {
                free(n[call->n_headers].name);
                free(n[call->n_headers].value);
                return -ENOMEM;
        }
        call->n_headers++;
        call->header_bytes += namelen + valuelen;
        return 0;
}

/* Headers are only looked at when a call starts: let them go, an idle tunnel stream should cost little. */
static void call_drop_headers(GrpcCall *call) {
        for (unsigned i = 0; i < call->n_headers; i++) {
                free(call->headers[i].name);
                free(call->headers[i].value);
        }
        call->headers = mfree(call->headers);
        call->n_headers = 0;
        call->header_bytes = 0;
}

static GrpcCall *call_new(H2Conn *c, int32_t stream_id, bool client) {
        GrpcCall *call = calloc(1, sizeof(GrpcCall));

        if (!call)
                return NULL;
        call->conn = c;
        call->stream_id = stream_id;
        call->client = client;
        call->rx_status = -1;
        call->window = c->stream_window;
        LIST_PREPEND(calls, c->calls, call);
        c->n_calls++;
        return call;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *userdata) {
        H2Conn *c = userdata;
        GrpcCall *call;

        if (!c->server || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
                return 0;
        call = call_new(c, frame->hd.stream_id, false);
        if (!call)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        if (nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, call) != 0) {
                grpc_call_free(call);
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *userdata) {
        GrpcCall *call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);

        if (!call || frame->hd.type != NGHTTP2_HEADERS)
                return 0;
        if (namelen == STRLEN(":path") && memcmp(name, ":path", namelen) == 0 && !call->client) {
                free(call->path);
                call->path = strndup((const char *) value, valuelen);
                if (!call->path)
                        return NGHTTP2_ERR_CALLBACK_FAILURE;
                return 0;
        }
        if (call->client && namelen == STRLEN("grpc-status") && strncasecmp((const char *) name, "grpc-status", namelen) == 0) {
                char buf[8] = {};
                int v = 0;

                if (valuelen == 0 || valuelen >= sizeof(buf))
                        v = GRPC_STATUS_UNKNOWN;
                else {
                        memcpy(buf, value, valuelen);
                        for (size_t i = 0; i < valuelen; i++)
                                if (buf[i] < '0' || buf[i] > '9')
                                        v = -1;
                        v = v < 0 ? GRPC_STATUS_UNKNOWN : atoi(buf);
                }
                call->rx_status = v;
                return 0;
        }
        if (call->client && namelen == STRLEN("grpc-message") &&
            strncasecmp((const char *) name, "grpc-message", namelen) == 0) {
                free(call->rx_message);
                call->rx_message = strndup((const char *) value, MIN(valuelen, (size_t) 1024));
                return 0;
        }
        if (call_add_header(call, name, namelen, value, valuelen) < 0)
                /* Too many or too large headers: reset this stream only. */
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return 0;
}

/* Hand one decoded packet to the owner; DATA payload bytes it retains are added to cur_retained. */
static void call_deliver(GrpcCall *call, const Packet *p) {
        int r = call->handler->on_packet(call, p, call->userdata);

        if (r < 0) {
                if (!call->ignore_input)
                        grpc_call_abort(call, GRPC_STATUS_INTERNAL, "invalid packet");
                return;
        }
        if (p->type == PACKET_DATA)
                call->cur_retained += MIN((size_t) r, p->data.data_len);
}

static bool call_wants_input(const GrpcCall *call) {
        return !call->ignore_input && call->handler && call->conn->state == H2_RUNNING;
}

static int on_message(const uint8_t *msg, size_t len, void *userdata) {
        GrpcCall *call = userdata;
        Packet p;
        int r;

        if (!call_wants_input(call))
                return 0;
        r = packet_decode(msg, len, &p);
        if (r == -EOPNOTSUPP) {
                log_debug("Ignoring packet of unknown type on stream %d.", call->stream_id);
                return 0;
        }
        if (r == -EPROTO) {
                call_fail(call, GRPC_STATUS_INTERNAL, "packet payload missing or not matching its type");
                return 0;
        }
        if (r < 0) {
                call_fail(call, GRPC_STATUS_INTERNAL, "malformed packet");
                return 0;
        }
        call_deliver(call, &p);
        return 0;
}

/* A DATA message split over several HTTP/2 DATA frames is not reassembled: its payload goes to the owner piece by
 * piece as the frames arrive, so credits come back as the bytes leave and no partial message holds any window. */
static int on_message_head(const uint8_t *head, size_t len, uint32_t msg_len, void *userdata) {
        GrpcCall *call = userdata;
        size_t hdr = 0;
        Packet p;

        if (packet_decode_data_head(head, len, msg_len, &p, &hdr) <= 0)
                return 0;
        call->stream_connect_id = p.data.connect_id;
        call->stream_started = false;
        return (int) hdr;
}

static int on_message_body(const uint8_t *data, size_t len, bool last, void *userdata) {
        GrpcCall *call = userdata;
        Packet p = { .type = PACKET_DATA };

        if (!call_wants_input(call))
                return 0;
        p.data.connect_id = call->stream_connect_id;
        p.data.data = data;
        p.data.data_len = len;
        p.data.continued = call->stream_started;
        call->stream_started = true;
        call_deliver(call, &p);
        return 0;
}

static const GrpcReaderCallbacks reader_callbacks = {
        .message = on_message,
        .head = on_message_head,
        .body = on_message_body,
};

/* Windows follow the bandwidth-delay product, per stream. The connection measures the round trip: a PING goes out
 * once a quarter of the initial stream window has arrived while none is out, and each stream counts the DATA it
 * received until the ACK (its sample: what one round trip carried for it). As grpc-go's estimator does, a sample
 * counts only if the bandwidth it shows (sample / 1.5 smoothed round trips) is the stream's highest yet: when the
 * link is the limit, larger windows bring more bandwidth; when a CPU or a queue is (loopback, a busy peer), they only
 * bring longer round trips, the bandwidth stays flat and nothing grows. Unlike grpc-go, which grows every window of
 * a connection together, a stream grows alone, and only when it received more than 2/3 of its window during such a
 * sample while its reader kept up (it holds at most half its window unconsumed): to twice what it received, at
 * most window_max, with a WINDOW_UPDATE of its own (nghttp2_session_set_local_window_size()). So a reader that
 * stopped never grows its window, a tunnel that slows down keeps what it had, and a new tunnel starts at the
 * initial window and doubles per round trip; what stalled streams hold stays bounded by connection-buffer-size
 * (conn_credit()). The connection window grows along with the largest stream window. */
static bool bdp_enabled(const H2Conn *c) {
        return c->settings.window_max > c->stream_window && c->state == H2_RUNNING;
}

static void bdp_on_data(H2Conn *c, size_t len) {
        if (!bdp_enabled(c))
                return;
        if (!c->bdp_ping_outstanding) {
                /* Only bulk traffic can fill a window: small exchanges (a dial, a request and its answer) never
                 * send PINGs, which would cost both peers a wake-up each. */
                c->bdp_idle_bytes += len;
                if (c->bdp_idle_bytes < c->stream_window / 4)
                        return;
                if (nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, bdp_ping_opaque) != 0)
                        return;
                c->bdp_idle_bytes = 0;
                c->bdp_ping_outstanding = true;
                c->bdp_epoch = c->bdp_epoch == UINT32_MAX ? 1 : c->bdp_epoch + 1;
                (void) sd_event_now(c->event, CLOCK_MONOTONIC, &c->bdp_sent_usec);
                h2conn_schedule(c);
        }
}

static void bdp_on_ack(H2Conn *c) {
        uint64_t now = 0;
        double rtt;

        c->bdp_ping_outstanding = false;
        if (sd_event_now(c->event, CLOCK_MONOTONIC, &now) < 0 || now <= c->bdp_sent_usec)
                return;
        rtt = (double) (now - c->bdp_sent_usec);
        c->bdp_n_rtt++;
        if (c->bdp_n_rtt <= 10)
                c->bdp_rtt_usec += (rtt - c->bdp_rtt_usec) / c->bdp_n_rtt;
        else
                c->bdp_rtt_usec += (rtt - c->bdp_rtt_usec) * 0.9;
}

/* One stream's sample is complete: grow its window if the sample allows (see above). */
static void bdp_stream_sample(GrpcCall *call) {
        H2Conn *c = call->conn;
        uint64_t want;
        double bw;

        if (c->bdp_rtt_usec <= 0)
                return;
        /* A saturated round trip carries at most about 1.5 times the bandwidth-delay product. */
        bw = (double) call->bdp_rx / (c->bdp_rtt_usec * 1.5);
        if (bw < call->bdp_bw_max)
                return;
        call->bdp_bw_max = bw;
        if (call->bdp_rx * 3 <= (uint64_t) call->window * 2 || call->withheld > call->window / 2)
                return;
        want = MIN(call->bdp_rx * 2, (uint64_t) c->settings.window_max);
        if (want <= call->window ||
            nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, call->stream_id, (int32_t) want) != 0)
                return;
        call->window = (uint32_t) want;
        if (want > c->connection_window &&
            nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, (int32_t) want) == 0)
                c->connection_window = (uint32_t) want;
        log_debug("HTTP/2 receive window of stream %" PRIi32 " grown to %" PRIu32 " bytes "
                  "(%" PRIu64 " bytes in one round trip of %.1f ms).", call->stream_id, call->window, call->bdp_rx,
                  c->bdp_rtt_usec / 1000.0);
        h2conn_schedule(c);
}

/* DATA for one stream: complete its last sample if that ended, and count the bytes into the current one. */
static void bdp_on_stream_data(GrpcCall *call, size_t len) {
        H2Conn *c = call->conn;

        if (!bdp_enabled(c))
                return;
        if (call->bdp_epoch != 0 && (call->bdp_epoch != c->bdp_epoch || !c->bdp_ping_outstanding)) {
                bdp_stream_sample(call);
                call->bdp_epoch = 0;
                call->bdp_rx = 0;
        }
        if (!c->bdp_ping_outstanding)
                return;
        call->bdp_epoch = c->bdp_epoch;
        call->bdp_rx += len;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *userdata) {
        H2Conn *c = userdata;
        GrpcCall *call = nghttp2_session_get_stream_user_data(s, stream_id);
        size_t held;
        int r;

        bdp_on_data(c, len);
        /* Connection credits come back on receipt (conn_credit()); only the stream's wait for the bytes to leave.
         * Were the connection's withheld too, a few stalled streams (readers that stopped reading) would exhaust
         * the connection window and freeze every other tunnel on it. */
        if (!call || call->ignore_input) {
                (void) nghttp2_session_consume_stream(s, stream_id, len);
                conn_credit(c, len);
                return 0;
        }
        call->withheld += len;
        c->held += len;
        bdp_on_stream_data(call, len);
        call->unaccounted += len;
        call->cur_retained = 0;
        r = grpc_reader_feed_stream(&call->reader, data, len, &reader_callbacks, call);
        if (r < 0) {
                switch (r) {
                case -EMSGSIZE:
                        call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                        "grpc: received message larger than max (4194304 bytes)");
                        break;
                case -EPROTONOSUPPORT:
                        call_fail(call, GRPC_STATUS_INTERNAL,
                                  "grpc: compressed message received but no compression was negotiated");
                        break;
                default:
                        call_fail(call, GRPC_STATUS_INTERNAL, "grpc: malformed message framing");
                }
        }
        if (call->ignore_input) {
                /* Everything not handed to an owner is given back. */
                call_credit(call, call->unaccounted - MIN(call->unaccounted, call->cur_retained));
                call->unaccounted = 0;
                grpc_reader_done(&call->reader);
                conn_credit(c, len);
                return 0;
        }
        /* Bytes the reader still holds (a partial prefix, head or non-DATA message) keep their credits. */
        held = grpc_reader_held(&call->reader);
        assert(call->unaccounted >= call->cur_retained + held);
        call_credit(call, call->unaccounted - call->cur_retained - held);
        call->unaccounted = held;
        conn_credit(c, len);
        return 0;
}

static const char *call_header_value(const GrpcCall *call, const char *name) {
        return grpc_call_header(call, name, 0);
}

/* Trailers-only response (headers with grpc-status) for a call that was never accepted. */
static void call_reject(H2Conn *c, GrpcCall *call, int status, const char *message) {
        char st[16], msg[512];
        size_t l = grpc_message_encode(message ? message : "", msg, sizeof(msg));
        nghttp2_nv nv[] = {
                { (uint8_t *) ":status", (uint8_t *) "200", 7, 3, NGHTTP2_NV_FLAG_NONE },
                { (uint8_t *) "content-type", (uint8_t *) "application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE },
                { (uint8_t *) "grpc-status", (uint8_t *) st, 11, 0, NGHTTP2_NV_FLAG_NONE },
                { (uint8_t *) "grpc-message", (uint8_t *) msg, 12, l, NGHTTP2_NV_FLAG_NONE },
        };
        (void) snprintf(st, sizeof(st), "%d", status);
        nv[2].valuelen = strlen(st);
        call->ignore_input = true;
        call->ended_local = true;
        call->rst_after_end = true;
        (void) nghttp2_submit_response(c->session, call->stream_id, nv, l > 0 ? 4 : 3, NULL);
}

static void server_new_call(H2Conn *c, GrpcCall *call) {
        const char *method = call_header_value(call, ":method"), *ct = call_header_value(call, "content-type");
        const char *message = NULL;
        int status;

        if (!method || !streq(method, "POST") || !call->path) {
                status = GRPC_STATUS_INTERNAL;
                message = "invalid gRPC request: method must be POST";
        } else if (!ct || !grpc_content_type_ok(ct, strlen(ct))) {
                status = GRPC_STATUS_INTERNAL;
                message = "invalid gRPC request content-type";
        } else {
                status = c->handler->on_call ? c->handler->on_call(c, call, &message, c->userdata)
                                             : GRPC_STATUS_UNIMPLEMENTED;
                if (status == 0) {
                        call_drop_headers(call);
                        return;
                }
        }
        if (status == GRPC_STATUS_UNIMPLEMENTED && !message)
                message = "unknown method";
        call_reject(c, call, status, message);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *userdata) {
        H2Conn *c = userdata;
        GrpcCall *call;

        if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK)) {
                if (memcmp(frame->ping.opaque_data, bdp_ping_opaque, sizeof(bdp_ping_opaque)) == 0)
                        bdp_on_ack(c);
                else
                        c->ping_outstanding = false;
        }
        if (frame->hd.type == NGHTTP2_GOAWAY && !c->goaway_seen) {
                c->goaway_seen = true;
                if (c->handler->on_goaway)
                        c->handler->on_goaway(c, frame->goaway.error_code, frame->goaway.last_stream_id, c->userdata);
        }
        if (frame->hd.stream_id == 0)
                return 0;
        call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
        if (!call)
                return 0;

        if (frame->hd.type == NGHTTP2_HEADERS) {
                if (!call->client && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
                        server_new_call(c, call);
                else if (call->client && frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
                        const char *st = call_header_value(call, ":status");
                        const char *ct = call_header_value(call, "content-type");

                        if (!st || !streq(st, "200")) {
                                call_end(call, GRPC_STATUS_UNAVAILABLE, "unexpected HTTP status");
                                grpc_call_abort(call, GRPC_STATUS_CANCELLED, NULL);
                        } else if (call->rx_status < 0 && (!ct || !grpc_content_type_ok(ct, strlen(ct)))) {
                                call_end(call, GRPC_STATUS_UNKNOWN, "unexpected content-type");
                                grpc_call_abort(call, GRPC_STATUS_CANCELLED, NULL);
                        } else if (call->rx_status < 0 && call->handler && call->handler->on_headers &&
                                   call->handler->on_headers(call, call->userdata) < 0) {
                                call_end(call, GRPC_STATUS_CANCELLED, "rejected response headers");
                                grpc_call_abort(call, GRPC_STATUS_CANCELLED, NULL);
                        } else
                                call_drop_headers(call);
                }
        }

        if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
            (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
                call->remote_closed = true;
                if (!call->ignore_input && !grpc_reader_idle(&call->reader)) {
                        /* The peer ended the stream in the middle of a message. */
                        call_fail(call, GRPC_STATUS_INTERNAL, "grpc: stream ended inside a message");
                        return 0;
                }
                if (call->client) {
                        /* Server ended the call (trailers). */
                        int st = call->rx_status >= 0 ? call->rx_status : GRPC_STATUS_UNKNOWN;
                        call_end(call, st, call->rx_message ? call->rx_message
                                                            : (call->rx_status < 0 ? "stream ended without status" : NULL));
                        if (!call->ended_local)
                                grpc_call_abort(call, GRPC_STATUS_CANCELLED, NULL);
                } else if (call->handler) {
                        /* Client half-closed: the call is over for the owner; answer with OK trailers. */
                        call_end(call, GRPC_STATUS_OK, NULL);
                        grpc_call_finish(call, GRPC_STATUS_OK, NULL);
                }
        }
        return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *userdata) {
        GrpcCall *call = nghttp2_session_get_stream_user_data(s, stream_id);

        if (!call)
                return 0;
        if (call->handler) {
                if (call->client && call->rx_status >= 0)
                        call_end(call, call->rx_status, call->rx_message);
                else
                        call_end(call, error_code == NGHTTP2_NO_ERROR ? GRPC_STATUS_CANCELLED : GRPC_STATUS_UNAVAILABLE,
                                 error_code == NGHTTP2_NO_ERROR ? "stream closed" : nghttp2_http2_strerror(error_code));
        }
        (void) nghttp2_session_set_stream_user_data(s, stream_id, NULL);
        grpc_call_free(call);
        return 0;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Calls */

static GrpcCall *grpc_call_free(GrpcCall *call) {
        H2Conn *c;

        if (!call)
                return NULL;
        c = call->conn;
        while (call->q_head) {
                OutMsg *m = call->q_head;
                queue_unlink(call, m);
                if (m->owned)
                        free(m);
        }
        grpc_reader_done(&call->reader);
        /* Its withheld bytes no longer count against the connection (nghttp2 forgets the stream's window). */
        c->held -= call->withheld;
        call->withheld = 0;
        conn_credit(c, 0);
        LIST_REMOVE(calls, c->calls, call);
        c->n_calls--;
        call_drop_headers(call);
        free(call->path);
        free(call->message);
        free(call->rx_message);
        free(call);
        return NULL;
}

static size_t build_nv(nghttp2_nv *nv, size_t n, const char *name, const char *value) {
        nv[n] = (nghttp2_nv){ (uint8_t *) name, (uint8_t *) value, strlen(name), strlen(value),
                              NGHTTP2_NV_FLAG_NONE };
        return n + 1;
}

#define METADATA_MAX 16

/* Metadata values are per call (a tunnel stream's dial and connect IDs): they are kept out of the HPACK tables,
 * where each new value would evict an old entry and take a fresh allocation on both sides. After 9 000 tunnel
 * streams those entries, allocated during the peak and scattered over its heap, kept about 100 pages of konn-server
 * resident once everything had closed. */
static size_t build_metadata(nghttp2_nv *nv, size_t n, char *const *metadata) {
        for (size_t i = 0; metadata && metadata[i] && metadata[i + 1] && i / 2 < METADATA_MAX; i += 2) {
                n = build_nv(nv, n, metadata[i], metadata[i + 1]);
                nv[n - 1].flags |= NGHTTP2_NV_FLAG_NO_INDEX;
        }
        return n;
}

int grpc_call_start(H2Conn *c, const char *path, const char *authority, char *const *metadata,
                    const GrpcCallHandler *h, void *userdata, GrpcCall **ret) {
        nghttp2_nv nv[8 + METADATA_MAX];
        nghttp2_data_provider prd;
        GrpcCall *call;
        size_t n = 0;
        int32_t id;

        if (!c->session || c->state != H2_RUNNING)
                return -ENOTCONN;
        call = call_new(c, -1, true);
        if (!call)
                return -ENOMEM;
        call->handler = h;
        call->userdata = userdata;
        call->path = strdup(path);
        if (!call->path) {
                grpc_call_free(call);
                return -ENOMEM;
        }
        n = build_nv(nv, n, ":method", "POST");
        n = build_nv(nv, n, ":scheme", c->transport.tls ? "https" : "http");
        n = build_nv(nv, n, ":path", path);
        n = build_nv(nv, n, ":authority", authority);
        n = build_nv(nv, n, "content-type", "application/grpc");
        n = build_nv(nv, n, "te", "trailers");
        n = build_nv(nv, n, "user-agent", "konn/" PACKAGE_VERSION);
        n = build_metadata(nv, n, metadata);
        prd = (nghttp2_data_provider){ .source.ptr = call, .read_callback = on_data_read };
        id = nghttp2_submit_request(c->session, NULL, nv, n, &prd, call);
        if (id < 0) {
                grpc_call_free(call);
                return id == NGHTTP2_ERR_NOMEM ? -ENOMEM : -EIO;
        }
        call->stream_id = id;
        h2conn_schedule(c);
        *ret = call;
        return 0;
}

int grpc_call_accept(GrpcCall *call, char *const *metadata, const GrpcCallHandler *h, void *userdata) {
        H2Conn *c = call->conn;
        nghttp2_nv nv[2 + METADATA_MAX];
        nghttp2_data_provider prd;
        size_t n = 0;

        n = build_nv(nv, n, ":status", "200");
        n = build_nv(nv, n, "content-type", "application/grpc");
        n = build_metadata(nv, n, metadata);
        prd = (nghttp2_data_provider){ .source.ptr = call, .read_callback = on_data_read };
        if (nghttp2_submit_response(c->session, call->stream_id, nv, n, &prd) != 0)
                return -EIO;
        call->responded = true;
        call->handler = h;
        call->userdata = userdata;
        h2conn_schedule(c);
        return 0;
}

void grpc_call_reject(GrpcCall *call, int status, const char *message) {
        if (!call)
                return;
        if (call->client || call->responded || call->ended_local || call->finishing) {
                grpc_call_finish(call, status, message);
                return;
        }
        call->handler = NULL;
        call_reject(call->conn, call, status, message);
        h2conn_schedule(call->conn);
}

const char *grpc_call_path(const GrpcCall *call) {
        return call->path;
}

unsigned grpc_call_header_count(const GrpcCall *call, const char *name) {
        unsigned k = 0;

        for (unsigned i = 0; i < call->n_headers; i++)
                if (strcasecmp(call->headers[i].name, name) == 0)
                        k++;
        return k;
}

const char *grpc_call_header(const GrpcCall *call, const char *name, unsigned idx) {
        for (unsigned i = 0; i < call->n_headers; i++)
                if (strcasecmp(call->headers[i].name, name) == 0 && idx-- == 0)
                        return call->headers[i].value;
        return NULL;
}

H2Conn *grpc_call_conn(const GrpcCall *call) {
        return call->conn;
}

void grpc_call_set_handler(GrpcCall *call, const GrpcCallHandler *h, void *userdata) {
        call->handler = h;
        call->userdata = userdata;
}

void grpc_call_finish(GrpcCall *call, int status, const char *message) {
        if (!call)
                return;
        call->handler = NULL;
        call->ignore_input = true;
        if (call->finishing || call->ended_local)
                return;
        call->finishing = true;
        call->status = status;
        free(call->message);
        call->message = message ? strdup(message) : NULL;
        if (!call->client && !call->responded) {
                /* Never accepted: trailers-only is not possible any more from here; just reset. */
                call->ended_local = true;
                (void) nghttp2_submit_rst_stream(call->conn->session, NGHTTP2_FLAG_NONE, call->stream_id,
                                                 NGHTTP2_CANCEL);
        }
        call_kick(call);
}

void grpc_call_abort(GrpcCall *call, int status, const char *message) {
        H2Conn *c;

        if (!call)
                return;
        c = call->conn;
        call->handler = NULL;
        call->ignore_input = true;
        /* Drop what has not started going out; a partially sent message must be completed to keep framing. */
        for (OutMsg *m = call->q_head, *next; m; m = next) {
                next = m->next;
                if (m->sent > 0)
                        continue;
                queue_unlink(call, m);
                if (m->owned)
                        free(m);
        }
        if (call->client || !call->responded) {
                if (!call->ended_local) {
                        call->ended_local = true;
                        (void) nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, call->stream_id,
                                                         NGHTTP2_CANCEL);
                }
                h2conn_schedule(c);
                return;
        }
        call->rst_after_end = true;
        if (!call->finishing && !call->ended_local) {
                call->finishing = true;
                call->status = status;
                free(call->message);
                call->message = message ? strdup(message) : NULL;
        }
        call_kick(call);
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Connection I/O */

static int h2conn_update_events(H2Conn *c) {
        uint32_t ev = 0;

        if (c->state == H2_HANDSHAKE)
                ev = c->transport.want;
        else if (c->state == H2_RUNNING) {
                ev = transport_read_events(&c->transport);
                if (c->write_blocked)
                        ev |= transport_write_events(&c->transport);
        }
        if (ev == 0)
                return sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
        (void) sd_event_source_set_io_events(c->io, ev);
        return sd_event_source_set_enabled(c->io, SD_EVENT_ON);
}

static void h2conn_dispatch_done(H2Conn *c) {
        while (c->done_head) {
                OutMsg *m = c->done_head;

                c->done_head = m->next;
                m->next = NULL;
                m->done_pending = false;
                m->done_conn = NULL;
                m->done(m, m->userdata);
        }
}

/* Flush the output buffer, then let nghttp2 fill it again, until the socket or nghttp2 has nothing more. */
static int h2conn_pump_out_buffer(H2Conn *c) {
        for (unsigned round = 0; round < 64; round++) {
                int r;

                if (c->out_off < c->out_len) {
                        ssize_t n = transport_write(&c->transport, c->outbuf + c->out_off, c->out_len - c->out_off);
                        if (n == -EAGAIN) {
                                c->write_blocked = true;
                                return 0;
                        }
                        if (n < 0)
                                return (int) n;
                        c->out_off += (size_t) n;
                        if (c->out_off < c->out_len)
                                continue;
                        c->out_off = c->out_len = 0;
                }
                c->write_blocked = false;
                if (!nghttp2_session_want_write(c->session))
                        return 0;
                c->in_nghttp2++;
                r = nghttp2_session_send(c->session);
                c->in_nghttp2--;
                h2conn_dispatch_done(c);
                if (r != 0) {
                        log_debug("nghttp2_session_send() failed: %s", nghttp2_strerror(r));
                        return -EPROTO;
                }
                if (c->state != H2_RUNNING)
                        return 0;
                if (c->out_len == 0)
                        return 0;
        }
        /* More to do: come back through the defer source so reads get their turn. */
        h2conn_schedule(c);
        return 0;
}

/* ... and send the TLS records of this pass together: one send() instead of one per 16 KiB record. */
static int h2conn_pump_out(H2Conn *c) {
        int r = h2conn_pump_out_buffer(c);

        if (r < 0)
                return r;
        r = transport_flush(&c->transport);
        if (r == -EAGAIN) {
                c->write_blocked = true;
                return 0;
        }
        return r;
}

static int h2conn_start_session(H2Conn *c);

static void h2conn_process(H2Conn *c, uint32_t revents) {
        int r;

        if (c->state == H2_HANDSHAKE) {
                r = transport_handshake(&c->transport);
                if (r == -EAGAIN) {
                        (void) h2conn_update_events(c);
                        return;
                }
                if (r < 0) {
                        h2conn_fail(c, r, transport_error(&c->transport));
                        return;
                }
                c->timer = sd_event_source_disable_unref(c->timer);
                r = h2conn_start_session(c);
                if (r < 0) {
                        h2conn_fail(c, r, "failed to set up HTTP/2 session");
                        return;
                }
                c->state = H2_RUNNING;
                if (!c->server && c->handler->on_ready)
                        c->handler->on_ready(c, c->userdata);
                if (c->state != H2_RUNNING)
                        return;
        }

        for (unsigned i = 0; i < H2_READS_PER_WAKEUP && c->state == H2_RUNNING; i++) {
                size_t filled = 0;
                int end = 0;
                ssize_t k;

                /* Gather what is readable (TLS hands out one record per read) so that nghttp2 sees large chunks
                 * and whole gRPC messages can be decoded in place instead of being reassembled. */
                while (filled < sizeof(inbuf)) {
                        ssize_t n = transport_read(&c->transport, inbuf + filled, sizeof(inbuf) - filled);
                        if (n == -EAGAIN)
                                break;
                        if (n <= 0) {
                                end = n == 0 ? -ECONNRESET : (int) n;
                                break;
                        }
                        filled += (size_t) n;
                }
                if (filled > 0) {
                        c->in_nghttp2++;
                        k = nghttp2_session_mem_recv(c->session, inbuf, filled);
                        c->in_nghttp2--;
                        if (k < 0) {
                                log_debug("nghttp2_session_mem_recv() failed: %s", nghttp2_strerror((int) k));
                                /* nghttp2 queued a GOAWAY for protocol errors: try to get it out. */
                                (void) h2conn_pump_out(c);
                                h2conn_fail(c, -EPROTO, nghttp2_strerror((int) k));
                                return;
                        }
                }
                if (end < 0) {
                        h2conn_fail(c, end, end == -ECONNRESET ? "connection closed by peer"
                                                               : transport_error(&c->transport));
                        return;
                }
                if (filled < sizeof(inbuf))
                        break;
        }
        if (c->state != H2_RUNNING)
                return;
        r = h2conn_pump_out(c);
        if (r < 0) {
                h2conn_fail(c, r, transport_error(&c->transport));
                return;
        }
        if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session) &&
            c->out_len == 0) {
                h2conn_fail(c, -ECONNRESET, "connection finished (GOAWAY)");
                return;
        }
        (void) h2conn_update_events(c);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        h2conn_process(userdata, revents);
        return 0;
}

static void h2conn_finalize(H2Conn *c) {
        const H2ConnHandler *h = c->handler;
        void *ud = c->userdata;
        int error = c->close_error;
        _cleanup_free_ char *reason = TAKE_PTR(c->close_reason);

        if (c->goaway_pending && c->session) {
                /* Best effort: the socket may well be full or gone. */
                c->goaway_pending = false;
                if (nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR) == 0)
                        (void) h2conn_pump_out(c);
        }
        /* Every call still carrying an owner learns first, then the connection's owner. */
        for (GrpcCall *call = c->calls; call; call = call->calls_next)
                if (call->handler)
                        call_end(call, GRPC_STATUS_UNAVAILABLE, reason ? reason : "connection closed");
        c->handler = NULL;
        if (h && h->on_close)
                h->on_close(c, error, reason, ud);
        h2conn_free(c);
}

static int on_defer(sd_event_source *s, void *userdata) {
        H2Conn *c = userdata;

        if (c->state == H2_CLOSING) {
                h2conn_finalize(c);
                return 0;
        }
        if (c->state == H2_RUNNING)
                h2conn_process(c, 0);
        return 0;
}

static void h2conn_schedule(H2Conn *c) {
        if (c->defer)
                (void) sd_event_source_set_enabled(c->defer, SD_EVENT_ONESHOT);
}

static void h2conn_fail(H2Conn *c, int error, const char *reason) {
        if (c->state == H2_CLOSING)
                return;
        c->state = H2_CLOSING;
        c->close_error = error < 0 ? error : -ECONNRESET;
        c->close_reason = reason ? strdup(reason) : NULL;
        (void) sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
        c->timer = sd_event_source_disable_unref(c->timer);
        c->keepalive = sd_event_source_disable_unref(c->keepalive);
        h2conn_schedule(c);
}

void h2conn_close(H2Conn *c, int error, const char *reason) {
        if (!c || c->state == H2_CLOSING)
                return;
        if (c->session && c->state == H2_RUNNING) {
                /* From inside an nghttp2 callback (an owner's on_end or on_headers) nghttp2 is not touched: sending
                 * would re-enter it (the frame being sent would be processed twice and its stream closed, and its
                 * call freed, twice), and a terminate from inside nghttp2_session_mem_recv() is undone when the
                 * frame being received completes, after which a malformed frame in the same read trips nghttp2's
                 * assertion in its frame-size error path (found by fuzz-agent-conn). The GOAWAY goes out from
                 * h2conn_finalize() instead, on the loop. */
                if (c->in_nghttp2)
                        c->goaway_pending = true;
                else {
                        (void) nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
                        (void) h2conn_pump_out(c);
                }
        }
        h2conn_fail(c, error, reason);
}

static int on_keepalive(sd_event_source *s, uint64_t usec, void *userdata) {
        H2Conn *c = userdata;

        if (c->state != H2_RUNNING)
                return 0;
        if (c->ping_outstanding) {
                h2conn_fail(c, -ETIMEDOUT, "keepalive: the peer did not answer a PING");
                return 0;
        }
        if (nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL) == 0) {
                c->ping_outstanding = true;
                h2conn_schedule(c);
        }
        /* Next PING one interval after this one was due, not after it fired: lateness must not add up. */
        (void) sd_event_source_set_time(s, usec + c->settings.keepalive_usec);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static int on_handshake_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        h2conn_fail(userdata, -ETIMEDOUT, "TLS handshake timed out");
        return 0;
}

static int h2conn_start_session(H2Conn *c) {
        nghttp2_session_callbacks *cbs = NULL;
        nghttp2_option *opt = NULL;
        nghttp2_settings_entry iv[5];
        size_t n = 0;
        int r;

        if (nghttp2_session_callbacks_new(&cbs) != 0)
                return -ENOMEM;
        nghttp2_session_callbacks_set_send_callback(cbs, on_send);
        nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
        nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, on_data_length);
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);

        if (nghttp2_option_new(&opt) != 0) {
                nghttp2_session_callbacks_del(cbs);
                return -ENOMEM;
        }
        nghttp2_option_set_no_auto_window_update(opt, 1);
        /* kube-apiserver may send a raw socket path as :authority, which HTTP messaging checks reject (§2). */
        nghttp2_option_set_no_http_messaging(opt, 1);
        nghttp2_option_set_max_outbound_ack(opt, 1000);
        nghttp2_option_set_max_settings(opt, 32);
        /* No RFC 7540 priorities here: do not keep closed streams around (nghttp2 would keep up to
         * MAX_CONCURRENT_STREAMS of them, about 1 KiB each, long after their tunnels closed). */
        nghttp2_option_set_no_closed_streams(opt, 1);
        nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);

        r = c->server ? nghttp2_session_server_new2(&c->session, cbs, c, opt)
                      : nghttp2_session_client_new2(&c->session, cbs, c, opt);
        nghttp2_session_callbacks_del(cbs);
        nghttp2_option_del(opt);
        if (r != 0)
                return -ENOMEM;

        if (c->settings.held_max == 0)
                c->settings.held_max = H2_DEFAULT_HELD_MAX;
        c->stream_window = c->settings.stream_window ?: H2_DEFAULT_STREAM_WINDOW;
        c->connection_window = c->settings.connection_window ?: H2_DEFAULT_CONNECTION_WINDOW;
        iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->stream_window };
        iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEADER_LIST };
        iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_FRAME_SIZE, H2_MAX_FRAME };
        if (c->server)
                iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                                    c->settings.max_concurrent_streams ?: 1000 };
        else
                iv[n++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 };
        if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, n) != 0)
                return -EIO;
        if (nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, (int32_t) c->connection_window) != 0)
                return -EIO;
        c->outbuf = malloc(H2_OUTBUF_SIZE);
        if (!c->outbuf)
                return -ENOMEM;
        if (c->settings.keepalive_usec > 0) {
                r = sd_event_add_time_relative(c->event, &c->keepalive, CLOCK_MONOTONIC, c->settings.keepalive_usec,
                                               MIN(c->settings.keepalive_usec / 20, USEC_PER_SEC), on_keepalive, c);
                if (r < 0)
                        return r;
        }
        h2conn_schedule(c);
        return 0;
}

int h2conn_new(sd_event *e, Transport *t, bool server, const H2ConnSettings *s, const H2ConnHandler *h,
               void *userdata, H2Conn **ret) {
        H2Conn *c;
        int r;

        c = calloc(1, sizeof(H2Conn));
        if (!c) {
                transport_done(t);
                return -ENOMEM;
        }
        c->event = sd_event_ref(e);
        c->transport = *t;
        *t = TRANSPORT_NULL;
        transport_set_coalesce(&c->transport, true);
        c->server = server;
        c->settings = s ? *s : (H2ConnSettings){};
        c->handler = h;
        c->userdata = userdata;
        c->state = H2_HANDSHAKE;
        c->transport.want = server ? EPOLLIN : EPOLLOUT | EPOLLIN;

        r = sd_event_add_io(e, &c->io, c->transport.fd, EPOLLIN | EPOLLOUT, on_io, c);
        if (r < 0)
                goto fail;
        r = sd_event_add_defer(e, &c->defer, on_defer, c);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_enabled(c->defer, SD_EVENT_OFF);
        if (c->settings.handshake_timeout_usec > 0) {
                r = sd_event_add_time_relative(e, &c->timer, CLOCK_MONOTONIC, c->settings.handshake_timeout_usec,
                                               0, on_handshake_timeout, c);
                if (r < 0)
                        goto fail;
        }
        *ret = c;
        return 0;
fail:
        h2conn_free(c);
        return r;
}

H2Conn *h2conn_free(H2Conn *c) {
        if (!c)
                return NULL;
        c->handler = NULL;
        /* nghttp2_session_del() does not invoke on_stream_close; free calls ourselves. */
        while (c->calls) {
                GrpcCall *call = c->calls;
                call->handler = NULL;
                if (c->session)
                        (void) nghttp2_session_set_stream_user_data(c->session, call->stream_id, NULL);
                grpc_call_free(call);
        }
        while (c->done_head) {
                OutMsg *m = c->done_head;
                c->done_head = m->next;
                m->next = NULL;
                m->done_pending = false;
                m->done_conn = NULL;
        }
        nghttp2_session_del(c->session);
        c->io = sd_event_source_disable_unref(c->io);
        c->defer = sd_event_source_disable_unref(c->defer);
        c->timer = sd_event_source_disable_unref(c->timer);
        c->keepalive = sd_event_source_disable_unref(c->keepalive);
        transport_done(&c->transport);
        free(c->outbuf);
        free(c->close_reason);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

size_t h2conn_hpack_inflate_size(H2Conn *c) {
        return c->session ? nghttp2_session_get_hd_inflate_dynamic_table_size(c->session) : 0;
}

Transport *h2conn_transport(H2Conn *c) {
        return &c->transport;
}

void h2conn_set_userdata(H2Conn *c, void *userdata) {
        c->userdata = userdata;
}

bool konn_features_has(const char *list, const char *feature) {
        size_t n = strlen(feature);

        for (const char *p = list; p && *p;) {
                const char *end = strchr(p, ',') ?: p + strlen(p);
                while (*p == ' ')
                        p++;
                if ((size_t) (end - p) >= n && strncmp(p, feature, n) == 0) {
                        const char *q = p + n;
                        while (q < end && *q == ' ')
                                q++;
                        if (q == end)
                                return true;
                }
                p = *end ? end + 1 : end;
        }
        return false;
}
