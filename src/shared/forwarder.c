/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "forwarder.h"

#define FORWARDER_MESSAGE_MAX (GRPC_MESSAGE_MAX - PACKET_DATA_HEADER_MAX - GRPC_PREFIX_SIZE)

static void forwarder_send_next(Forwarder *f);

static void forwarder_sent(OutMsg *m, void *userdata) {
        Forwarder *f = userdata;

        if (f->src)
                grpc_call_consume(f->src, f->cur_len);
        f->cur = mfree(f->cur);
        f->cur_len = 0;
        forwarder_send_next(f);
}

static void forwarder_send_next(Forwarder *f) {
        if (f->next_len == 0 || out_msg_queued(&f->out) || !f->dst)
                return;
        f->cur = TAKE_PTR(f->next);
        f->cur_len = f->next_len;
        f->next_len = f->next_cap = 0;
        metric_add(f->sent_packets, f->sent_labels, 1);
        grpc_call_send_data(f->dst, &f->out, f->connect_id, f->cur, f->cur_len, forwarder_sent, f);
}

void forwarder_init(Forwarder *f, GrpcCall *src, GrpcCall *dst, int64_t connect_id) {
        *f = (Forwarder){ .src = src, .dst = dst, .connect_id = connect_id };
        out_msg_init(&f->out);
}

int forwarder_push(Forwarder *f, const uint8_t *data, size_t len) {
        if (len == 0)
                return 0;
        if (f->next_len + len > FORWARDER_MESSAGE_MAX)
                return -ENOBUFS;
        if (f->next_len + len > f->next_cap) {
                size_t cap = MAX(f->next_cap * 2, MAX(len, (size_t) 16384));
                uint8_t *n;

                cap = MIN(MAX(cap, f->next_len + len), (size_t) FORWARDER_MESSAGE_MAX);
                n = realloc(f->next, cap);
                if (!n)
                        return -ENOMEM;
                f->next = n;
                f->next_cap = cap;
        }
        memcpy(f->next + f->next_len, data, len);
        f->next_len += len;
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
        if (flush && f->dst && f->next_len > 0 &&
            grpc_call_send_data_copy(f->dst, f->connect_id, f->next, f->next_len) >= 0)
                metric_add(f->sent_packets, f->sent_labels, 1);
        if (f->src)
                grpc_call_consume(f->src, f->cur_len + f->next_len);
        f->src = f->dst = NULL;
        f->cur = mfree(f->cur);
        f->next = mfree(f->next);
        f->cur_len = f->next_len = f->next_cap = 0;
}
