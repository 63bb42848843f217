/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <stdio.h>

#include "grpc.h"
#include "macro.h"
#include "packet.h"
#include "fuzz-check.h"

/* The first byte picks where the rest of the input is split into two chunks. The stream is fed once
 * split in two and once byte by byte; both runs must deliver the same messages and end the same way.
 * Every message is decoded with packet_decode(). */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Digest {
        unsigned n;
        uint64_t hash; /* FNV-1a over lengths, bytes and decode results */
} Digest;

static void digest_add(Digest *d, const void *p, size_t len) {
        const uint8_t *b = p;

        for (size_t i = 0; i < len; i++) {
                d->hash ^= b[i];
                d->hash *= UINT64_C(0x100000001b3);
        }
}

static int on_message(const uint8_t *msg, size_t len, void *userdata) {
        Digest *d = userdata;
        Packet p;
        int r;

        CHECK(len <= GRPC_MESSAGE_MAX);
        CHECK(msg || len == 0);
        r = packet_decode(msg, len, &p);
        CHECK(r == 0 || r == -EBADMSG || r == -EPROTO || r == -EOPNOTSUPP);

        d->n++;
        digest_add(d, &len, sizeof(len));
        if (len > 0)
                digest_add(d, msg, len);
        digest_add(d, &r, sizeof(r));
        if (r == 0)
                digest_add(d, &p.type, sizeof(p.type));
        return 0;
}

/* Feeds [0, split) and [split, size) as separately allocated chunks. */
static int feed_split(GrpcReader *rd, const uint8_t *data, size_t size, size_t split, Digest *d) {
        _cleanup_free_ uint8_t *a = malloc(split ?: 1), *b = malloc(size - split ?: 1);
        int r;

        CHECK(a && b);
        memcpy(a, data, split);
        memcpy(b, data + split, size - split);

        r = grpc_reader_feed(rd, a, split, on_message, d);
        if (r < 0)
                return r;
        return grpc_reader_feed(rd, b, size - split, on_message, d);
}

static int feed_bytes(GrpcReader *rd, const uint8_t *data, size_t size, Digest *d) {
        for (size_t i = 0; i < size; i++) {
                uint8_t byte = data[i];
                int r;

                r = grpc_reader_feed(rd, &byte, 1, on_message, d);
                if (r < 0)
                        return r;
        }
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        GrpcReader r1 = {}, r2 = {};
        Digest d1 = { .hash = UINT64_C(0xcbf29ce484222325) }, d2 = d1;
        size_t split;
        bool idle1, idle2;
        int k1, k2;

        if (size == 0)
                return 0;
        split = data[0] % size; /* 0 .. size-1, i.e. any split of the size-1 remaining bytes */
        data++;
        size--;

        k1 = feed_split(&r1, data, size, split, &d1);
        idle1 = grpc_reader_idle(&r1);
        if (k1 < 0)
                CHECK(grpc_reader_feed(&r1, data, size, on_message, &d1) == k1); /* sticky */
        grpc_reader_done(&r1);
        CHECK(grpc_reader_idle(&r1));

        k2 = feed_bytes(&r2, data, size, &d2);
        idle2 = grpc_reader_idle(&r2);
        grpc_reader_done(&r2);

        CHECK(k1 == 0 || k1 == -EMSGSIZE || k1 == -EPROTONOSUPPORT || k1 == -EBADMSG);
        CHECK(k1 == k2);
        CHECK(idle1 == idle2);
        CHECK(d1.n == d2.n);
        CHECK(d1.hash == d2.hash);
        return 0;
}
