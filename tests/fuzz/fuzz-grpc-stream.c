/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <stdio.h>

#include "grpc.h"
#include "macro.h"
#include "packet.h"
#include "fuzz-check.h"

/* grpc_reader_feed_stream() with the callbacks konn's relay uses (head() asks packet_decode_data_head(), body()
 * takes the payload as it arrives) against grpc_reader_feed() of the same bytes in one piece. The first input byte
 * picks a chunk size (1..256); the stream is cut into chunks of that size. Both readers must end the same way
 * (result, idleness), see the same sequence of messages, and every streamed message, rebuilt from its head and body
 * pieces, must be byte-identical to the message the whole-message reader delivered; body pieces arrive in order,
 * never empty unless last, `last` exactly once per streamed message, and nothing is reported held while streaming. */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MSGS 4096

typedef struct Msg {
        size_t off, len; /* of the message's bytes in the record buffer */
} Msg;

typedef struct Record {
        uint8_t *buf; /* every delivered message's bytes, concatenated */
        size_t len, cap;
        Msg msgs[MAX_MSGS];
        unsigned n;
        /* streaming state */
        bool in_body;
        uint32_t msg_len;
        size_t got;
        unsigned heads, streamed;
        const GrpcReader *rd;
} Record;

static void record_bytes(Record *rec, const uint8_t *p, size_t len) {
        if (len == 0)
                return;
        if (rec->len + len > rec->cap) {
                size_t cap = MAX(rec->cap * 2, rec->len + len);

                rec->buf = realloc(rec->buf, cap);
                CHECK(rec->buf);
                rec->cap = cap;
        }
        memcpy(rec->buf + rec->len, p, len);
        rec->len += len;
}

static void record_start(Record *rec) {
        CHECK(rec->n < MAX_MSGS);
        rec->msgs[rec->n] = (Msg) { .off = rec->len };
}

static void record_end(Record *rec) {
        rec->msgs[rec->n].len = rec->len - rec->msgs[rec->n].off;
        rec->n++;
}

static int on_message(const uint8_t *msg, size_t len, void *userdata) {
        Record *rec = userdata;

        CHECK(!rec->in_body);
        CHECK(len <= GRPC_MESSAGE_MAX);
        CHECK(msg || len == 0);
        if (rec->n >= MAX_MSGS)
                return -E2BIG; /* bounded work per input; both readers stop at the same message */
        record_start(rec);
        record_bytes(rec, msg, len);
        record_end(rec);
        return 0;
}

static int on_head(const uint8_t *head, size_t len, uint32_t msg_len, void *userdata) {
        Record *rec = userdata;
        size_t hdr_len;
        Packet p;

        CHECK(!rec->in_body);
        CHECK(len == MIN((size_t) msg_len, (size_t) GRPC_HEAD_MAX));
        CHECK(msg_len > GRPC_HEAD_MAX);
        rec->heads++;
        if (packet_decode_data_head(head, len, msg_len, &p, &hdr_len) != 1)
                return 0;
        CHECK(hdr_len > 0 && hdr_len <= len);
        if (rec->n >= MAX_MSGS)
                return -E2BIG;
        record_start(rec);
        record_bytes(rec, head, hdr_len);
        rec->in_body = true;
        rec->msg_len = msg_len;
        rec->got = hdr_len;
        rec->streamed++;
        return (int) hdr_len;
}

static int on_body(const uint8_t *p, size_t len, bool last, void *userdata) {
        Record *rec = userdata;

        CHECK(rec->in_body);
        CHECK(len > 0 || last);
        CHECK(p || len == 0);
        CHECK(grpc_reader_held(rec->rd) == 0);
        record_bytes(rec, p, len);
        rec->got += len;
        CHECK(rec->got <= rec->msg_len);
        CHECK(last == (rec->got == rec->msg_len));
        if (last) {
                rec->in_body = false;
                record_end(rec);
        }
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const GrpcReaderCallbacks cbs = { .message = on_message, .head = on_head, .body = on_body };
        GrpcReader r1 = {}, r2 = {};
        Record *a, *b;
        size_t chunk;
        int k1 = 0, k2;

        if (size == 0)
                return 0;
        chunk = (size_t) data[0] + 1;
        data++;
        size--;

        a = calloc(1, sizeof(Record));
        b = calloc(1, sizeof(Record));
        CHECK(a && b);
        a->rd = &r1;

        for (size_t off = 0; off < size && k1 == 0; off += chunk) {
                size_t n = MIN(chunk, size - off);
                _cleanup_free_ uint8_t *piece = malloc(n); /* exact size: ASan sees any overread */

                CHECK(piece);
                memcpy(piece, data + off, n);
                k1 = grpc_reader_feed_stream(&r1, piece, n, &cbs, a);
        }
        k2 = grpc_reader_feed(&r2, data, size, on_message, b);

        CHECK(k1 == 0 || k1 == -EMSGSIZE || k1 == -EPROTONOSUPPORT || k1 == -EBADMSG || k1 == -E2BIG);
        CHECK(k1 == k2);
        if (k1 == 0) {
                CHECK(grpc_reader_idle(&r1) == grpc_reader_idle(&r2));
                CHECK(!a->in_body || !grpc_reader_idle(&r1));
        }
        /* The streaming reader may be inside a message the whole reader still holds (or vice versa nothing):
         * compare the messages both completed. */
        CHECK(a->n == b->n);
        for (unsigned i = 0; i < a->n; i++) {
                CHECK(a->msgs[i].len == b->msgs[i].len);
                if (a->msgs[i].len > 0)
                        CHECK(memcmp(a->buf + a->msgs[i].off, b->buf + b->msgs[i].off, a->msgs[i].len) == 0);
        }
        CHECK(a->streamed <= a->heads);

        grpc_reader_done(&r1);
        grpc_reader_done(&r2);
        CHECK(grpc_reader_idle(&r1) && grpc_reader_idle(&r2));
        free(a->buf);
        free(b->buf);
        free(a);
        free(b);
        return 0;
}
