/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <stdio.h>

#include "macro.h"
#include "packet.h"
#include "fuzz-check.h"

/* Decode; on success re-encode, decode again and demand the same fields, and demand that encoding
 * is canonical (a second round trip gives the same bytes, never longer than the input). */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool str_eq(PacketStr a, PacketStr b) {
        return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static bool inside(const void *p, size_t len, const uint8_t *buf, size_t size) {
        const uint8_t *q = p;

        return len == 0 || (q >= buf && len <= size && q <= buf + size - len);
}

static bool packet_eq(const Packet *a, const Packet *b) {
        if (a->type != b->type)
                return false;
        switch (a->type) {
        case PACKET_DIAL_REQ:
                return str_eq(a->dial_req.protocol, b->dial_req.protocol) &&
                       str_eq(a->dial_req.address, b->dial_req.address) &&
                       a->dial_req.random == b->dial_req.random;
        case PACKET_DIAL_RSP:
                return str_eq(a->dial_rsp.error, b->dial_rsp.error) &&
                       a->dial_rsp.connect_id == b->dial_rsp.connect_id &&
                       a->dial_rsp.random == b->dial_rsp.random;
        case PACKET_CLOSE_REQ:
                return a->close_req.connect_id == b->close_req.connect_id;
        case PACKET_CLOSE_RSP:
                return str_eq(a->close_rsp.error, b->close_rsp.error) &&
                       a->close_rsp.connect_id == b->close_rsp.connect_id;
        case PACKET_DATA:
                return a->data.connect_id == b->data.connect_id && str_eq(a->data.error, b->data.error) &&
                       a->data.data_len == b->data.data_len &&
                       (a->data.data_len == 0 || memcmp(a->data.data, b->data.data, a->data.data_len) == 0);
        case PACKET_DIAL_CLS:
                return a->dial_cls.random == b->dial_cls.random;
        case PACKET_DRAIN:
                return true;
        default:
                return false;
        }
}

/* Every pointer of a decoded packet lies inside the input (zero copy, no overread). */
static void check_inside(const Packet *p, const uint8_t *buf, size_t size) {
        switch (p->type) {
        case PACKET_DIAL_REQ:
                CHECK(inside(p->dial_req.protocol.ptr, p->dial_req.protocol.len, buf, size));
                CHECK(inside(p->dial_req.address.ptr, p->dial_req.address.len, buf, size));
                break;
        case PACKET_DIAL_RSP:
                CHECK(inside(p->dial_rsp.error.ptr, p->dial_rsp.error.len, buf, size));
                break;
        case PACKET_CLOSE_RSP:
                CHECK(inside(p->close_rsp.error.ptr, p->close_rsp.error.len, buf, size));
                break;
        case PACKET_DATA:
                CHECK(inside(p->data.error.ptr, p->data.error.len, buf, size));
                CHECK(inside(p->data.data, p->data.data_len, buf, size));
                break;
        default:
                break;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ uint8_t *out = NULL, *out2 = NULL;
        size_t n, len = 0, len2 = 0;
        Packet p, q;
        int r;

        r = packet_decode(data, size, &p);
        if (r < 0) {
                CHECK(r == -EBADMSG || r == -EPROTO || r == -EOPNOTSUPP);
                return 0;
        }
        CHECK(p.type >= 0 && p.type < _PACKET_TYPE_MAX);
        check_inside(&p, data, size);

        n = packet_encoded_size(&p);
        CHECK(n > 0);
        CHECK(n <= size);
        out = malloc(n);
        CHECK(out);
        CHECK(packet_encode(&p, out, n, &len) == 0);
        CHECK(len == n);
        CHECK(packet_encode(&p, out, n - 1, NULL) == -ENOBUFS);

        CHECK(packet_decode(out, len, &q) == 0);
        CHECK(packet_eq(&p, &q));
        check_inside(&q, out, len);

        out2 = malloc(n);
        CHECK(out2);
        CHECK(packet_encode(&q, out2, n, &len2) == 0);
        CHECK(len2 == len);
        CHECK(memcmp(out, out2, len) == 0);

        /* The zero-copy DATA header gives the same bytes. */
        if (p.type == PACKET_DATA && p.data.error.len == 0) {
                uint8_t hdr[PACKET_DATA_HEADER_MAX];
                size_t hl;

                r = packet_encode_data_header(p.data.connect_id, p.data.data_len, hdr, sizeof(hdr), &hl);
                CHECK(r == 0);
                CHECK(hl + p.data.data_len == len);
                CHECK(memcmp(hdr, out, hl) == 0);
        }
        return 0;
}
