/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "forwarder.h"

/* HTTP/2 windows are at most 2^31 - 1 bytes: a source that makes us hold more ignored flow control. */
#define FORWARDER_PENDING_MAX ((size_t) INT32_MAX)

struct ForwarderChunk {
        ForwarderChunk *next;
        size_t len, cap;
        uint8_t headroom[H2_SEND_HEADROOM]; /* lent to h2conn with data (grpc_call_send_data()) */
        uint8_t data[];
};

static void forwarder_send_next(Forwarder *f);

static void forwarder_sent(OutMsg *m, void *userdata) {
        Forwarder *f = userdata;

        if (f->src && f->cur)
                grpc_call_consume(f->src, f->cur->len);
        f->cur = mfree(f->cur);
        forwarder_send_next(f);
}

static void forwarder_send_next(Forwarder *f) {
        ForwarderChunk *c = f->head;

        if (!c || out_msg_queued(&f->out) || f->cur || !f->dst)
                return;
        f->head = c->next;
        if (!f->head)
                f->tail = NULL;
        f->pending -= c->len;
        c->next = NULL;
        f->cur = c;
        metric_add(f->sent_packets, f->sent_labels, 1);
        grpc_call_send_data(f->dst, &f->out, f->connect_id, c->data, c->len, sizeof(c->headroom), forwarder_sent, f);
}

void forwarder_init(Forwarder *f, GrpcCall *src, GrpcCall *dst, int64_t connect_id) {
        *f = (Forwarder){ .src = src, .dst = dst, .connect_id = connect_id };
        out_msg_init(&f->out);
}

int forwarder_push(Forwarder *f, const uint8_t *data, size_t len) {
        ForwarderChunk *t = f->tail;

        if (len == 0)
                return 0;
        if (f->pending + len > FORWARDER_PENDING_MAX)
                return -ENOBUFS;
        if (!t || t->cap - t->len < len) {
                size_t cap = MAX(len, FORWARDER_CHUNK);

                if (cap > GRPC_MESSAGE_MAX - GRPC_PREFIX_SIZE - PACKET_DATA_HEADER_MAX)
                        return -ENOBUFS;
                t = malloc(sizeof(ForwarderChunk) + cap);
                if (!t)
                        return -ENOMEM;
                *t = (ForwarderChunk){ .cap = cap };
                if (f->tail)
                        f->tail->next = t;
                else
                        f->head = t;
                f->tail = t;
        }
        memcpy(t->data + t->len, data, len);
        t->len += len;
        f->pending += len;
        forwarder_send_next(f);
        return (int) len;
}

void forwarder_forget_call(Forwarder *f, GrpcCall *call) {
        if (f->src == call)
                f->src = NULL;
        if (f->dst == call) {
                grpc_call_cancel_msg(&f->out);
                f->dst = NULL;
        }
}

void forwarder_done(Forwarder *f, bool flush) {
        /* A queued message stays queued (h2conn copies what is unsent). */
        grpc_call_cancel_msg(&f->out);
        if (f->src)
                grpc_call_consume(f->src, (f->cur ? f->cur->len : 0) + f->pending);
        f->cur = mfree(f->cur);
        while (f->head) {
                ForwarderChunk *c = f->head;

                f->head = c->next;
                if (flush && f->dst && grpc_call_send_data_copy(f->dst, f->connect_id, c->data, c->len) >= 0)
                        metric_add(f->sent_packets, f->sent_labels, 1);
                free(c);
        }
        f->src = f->dst = NULL;
        f->tail = NULL;
        f->pending = 0;
}
