/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <check.h>
#include <stdio.h>

#include "macro.h"
#include "packet.h"

#define S(s) ((PacketStr) { .ptr = (s), .len = STRLEN(s) })

typedef struct Vector {
        const char *name;
        const char *hex;
        Packet packet;
} Vector;

/* protocol.md §1.4, produced by Go protobuf. */
static const Vector vectors[] = {
        { "dial_req",
          "12 15 0a 03 74 63 70 12 0c 31 32 37 2e 30 2e 30 2e 31 3a 38 30 18 01",
          { .type = PACKET_DIAL_REQ,
            .dial_req = { .protocol = S("tcp"), .address = S("127.0.0.1:80"), .random = 1 } } },
        { "dial_req_neg",
          "12 0b 18 ff ff ff ff ff ff ff ff ff 01",
          { .type = PACKET_DIAL_REQ, .dial_req = { .random = -1 } } },
        { "dial_rsp",
          "08 01 1a 04 10 01 18 01",
          { .type = PACKET_DIAL_RSP, .dial_rsp = { .random = 1, .connect_id = 1 } } },
        { "dial_rsp_err",
          "08 01 1a 05 0a 01 78 18 01",
          { .type = PACKET_DIAL_RSP, .dial_rsp = { .random = 1, .error = S("x") } } },
        { "data",
          "08 04 22 06 08 01 1a 02 68 69",
          { .type = PACKET_DATA,
            .data = { .connect_id = 1, .data = (const uint8_t *) "hi", .data_len = 2 } } },
        { "close_req",
          "08 02 2a 02 08 01",
          { .type = PACKET_CLOSE_REQ, .close_req = { .connect_id = 1 } } },
        { "close_rsp",
          "08 03 32 02 10 01",
          { .type = PACKET_CLOSE_RSP, .close_rsp = { .connect_id = 1 } } },
        { "close_rsp_empty",
          "08 03 32 00",
          { .type = PACKET_CLOSE_RSP } },
        { "dial_cls",
          "08 05 3a 02 08 01",
          { .type = PACKET_DIAL_CLS, .dial_cls = { .random = 1 } } },
        { "drain",
          "08 06 42 00",
          { .type = PACKET_DRAIN } },
};

static size_t unhex(const char *hex, uint8_t *out, size_t size) {
        size_t n = 0;

        for (const char *p = hex; *p;) {
                unsigned v;

                if (*p == ' ') {
                        p++;
                        continue;
                }
                ck_assert_int_eq(sscanf(p, "%2x", &v), 1);
                ck_assert_uint_lt(n, size);
                out[n++] = (uint8_t) v;
                p += 2;
        }
        return n;
}

static void assert_str_eq(PacketStr a, PacketStr b) {
        ck_assert_uint_eq(a.len, b.len);
        if (a.len > 0)
                ck_assert_mem_eq(a.ptr, b.ptr, a.len);
}

static void assert_packet_eq(const Packet *a, const Packet *b) {
        ck_assert_int_eq(a->type, b->type);
        switch (a->type) {
        case PACKET_DIAL_REQ:
                assert_str_eq(a->dial_req.protocol, b->dial_req.protocol);
                assert_str_eq(a->dial_req.address, b->dial_req.address);
                ck_assert_int_eq(a->dial_req.random, b->dial_req.random);
                break;
        case PACKET_DIAL_RSP:
                assert_str_eq(a->dial_rsp.error, b->dial_rsp.error);
                ck_assert_int_eq(a->dial_rsp.connect_id, b->dial_rsp.connect_id);
                ck_assert_int_eq(a->dial_rsp.random, b->dial_rsp.random);
                break;
        case PACKET_CLOSE_REQ:
                ck_assert_int_eq(a->close_req.connect_id, b->close_req.connect_id);
                break;
        case PACKET_CLOSE_RSP:
                assert_str_eq(a->close_rsp.error, b->close_rsp.error);
                ck_assert_int_eq(a->close_rsp.connect_id, b->close_rsp.connect_id);
                break;
        case PACKET_DATA:
                ck_assert_int_eq(a->data.connect_id, b->data.connect_id);
                assert_str_eq(a->data.error, b->data.error);
                ck_assert_uint_eq(a->data.data_len, b->data.data_len);
                if (a->data.data_len > 0)
                        ck_assert_mem_eq(a->data.data, b->data.data, a->data.data_len);
                break;
        case PACKET_DIAL_CLS:
                ck_assert_int_eq(a->dial_cls.random, b->dial_cls.random);
                break;
        case PACKET_DRAIN:
                break;
        default:
                ck_abort_msg("bad type %d", a->type);
        }
}

/* Decode hex, expecting r; on success compare with *expect (if given). */
static void check_decode(const char *hex, int expect_r, const Packet *expect) {
        uint8_t buf[256];
        Packet p = { .type = 99 };
        size_t n = unhex(hex, buf, sizeof(buf));
        int r;

        r = packet_decode(buf, n, &p);
        ck_assert_msg(r == expect_r, "decode(%s) = %d, expected %d", hex, r, expect_r);
        if (r < 0)
                ck_assert_int_eq(p.type, 99); /* ret untouched on failure */
        else if (expect)
                assert_packet_eq(&p, expect);
}

START_TEST(test_type_to_string) {
        ck_assert_str_eq(packet_type_to_string(PACKET_DIAL_REQ), "DIAL_REQ");
        ck_assert_str_eq(packet_type_to_string(PACKET_DIAL_RSP), "DIAL_RSP");
        ck_assert_str_eq(packet_type_to_string(PACKET_CLOSE_REQ), "CLOSE_REQ");
        ck_assert_str_eq(packet_type_to_string(PACKET_CLOSE_RSP), "CLOSE_RSP");
        ck_assert_str_eq(packet_type_to_string(PACKET_DATA), "DATA");
        ck_assert_str_eq(packet_type_to_string(PACKET_DIAL_CLS), "DIAL_CLS");
        ck_assert_str_eq(packet_type_to_string(PACKET_DRAIN), "DRAIN");
        ck_assert_str_eq(packet_type_to_string(_PACKET_TYPE_MAX), "Unknown");
        ck_assert_str_eq(packet_type_to_string(_PACKET_TYPE_INVALID), "Unknown");
        ck_assert_str_eq(packet_type_to_string(-1), "Unknown");
}
END_TEST

START_TEST(test_vector_decode) {
        const Vector *v = &vectors[_i];
        uint8_t buf[64];
        size_t n = unhex(v->hex, buf, sizeof(buf));
        Packet p;

        ck_assert_int_eq(packet_decode(buf, n, &p), 0);
        assert_packet_eq(&p, &v->packet);
}
END_TEST

START_TEST(test_vector_encode) {
        const Vector *v = &vectors[_i];
        uint8_t want[64], out[64];
        size_t n = unhex(v->hex, want, sizeof(want)), len = 12345;

        ck_assert_uint_eq(packet_encoded_size(&v->packet), n);
        ck_assert_int_eq(packet_encode(&v->packet, out, sizeof(out), &len), 0);
        ck_assert_uint_eq(len, n);
        ck_assert_mem_eq(out, want, n);

        /* Exactly-sized buffer works, one byte less does not. */
        ck_assert_int_eq(packet_encode(&v->packet, out, n, &len), 0);
        ck_assert_uint_eq(len, n);
        len = 12345;
        ck_assert_int_eq(packet_encode(&v->packet, out, n - 1, &len), -ENOBUFS);
        ck_assert_uint_eq(len, 12345);
}
END_TEST

START_TEST(test_vector_roundtrip) {
        const Vector *v = &vectors[_i];
        uint8_t in[64], out[64];
        size_t n = unhex(v->hex, in, sizeof(in)), len;
        Packet p, q;

        ck_assert_int_eq(packet_decode(in, n, &p), 0);
        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), 0);
        ck_assert_uint_eq(len, n);
        ck_assert_mem_eq(out, in, n);
        ck_assert_int_eq(packet_decode(out, len, &q), 0);
        assert_packet_eq(&q, &p);
}
END_TEST

/* Every strict prefix of a vector fails: the payload is always the last field and length-delimited,
 * so a prefix ends either at a top-level field boundary before the payload (-EPROTO: payload
 * missing) or inside a field (-EBADMSG). */
START_TEST(test_vector_truncations) {
        const Vector *v = &vectors[_i];
        uint8_t buf[64];
        size_t n = unhex(v->hex, buf, sizeof(buf));

        for (size_t k = 0; k < n; k++) {
                /* exact size, so that ASan/valgrind see overreads */
                _cleanup_free_ uint8_t *copy = malloc(k ?: 1);
                bool boundary = k == 0 || (buf[0] == 0x08 && k == 2);
                Packet p = { .type = 99 };
                int r;

                ck_assert_ptr_nonnull(copy);
                memcpy(copy, buf, k);
                r = packet_decode(copy, k, &p);
                ck_assert_msg(r == (boundary ? -EPROTO : -EBADMSG), "%s truncated to %zu: %d",
                              v->name, k, r);
                ck_assert_int_eq(p.type, 99);
        }
}
END_TEST

START_TEST(test_zero_copy) {
        uint8_t buf[64];
        size_t n;
        Packet p;

        n = unhex(vectors[4].hex, buf, sizeof(buf));
        ck_assert_int_eq(packet_decode(buf, n, &p), 0);
        ck_assert_int_eq(p.type, PACKET_DATA);
        ck_assert_ptr_eq(p.data.data, buf + 8);
        ck_assert_uint_eq(p.data.data_len, 2);

        n = unhex(vectors[0].hex, buf, sizeof(buf));
        ck_assert_int_eq(packet_decode(buf, n, &p), 0);
        ck_assert_ptr_eq(p.dial_req.protocol.ptr, (const char *) buf + 4);
        ck_assert_ptr_eq(p.dial_req.address.ptr, (const char *) buf + 9);

        n = unhex(vectors[3].hex, buf, sizeof(buf));
        ck_assert_int_eq(packet_decode(buf, n, &p), 0);
        ck_assert_ptr_eq(p.dial_rsp.error.ptr, (const char *) buf + 6);
}
END_TEST

START_TEST(test_negative_int64) {
        uint8_t out[64];
        size_t len;
        Packet p = { .type = PACKET_DATA, .data = { .connect_id = INT64_MIN } };

        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), 0);
        ck_assert_uint_eq(len, 15);
        ck_assert_mem_eq(out, "\x08\x04\x22\x0b\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 15);
        check_decode("08 04 22 0b 08 80 80 80 80 80 80 80 80 80 01", 0, &p);

        p = (Packet) { .type = PACKET_DIAL_RSP, .dial_rsp = { .connect_id = -2, .random = INT64_MAX } };
        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), 0);
        ck_assert_uint_eq(len, 25);
        ck_assert_mem_eq(out,
                         "\x08\x01\x1a\x15"
                         "\x10\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01"
                         "\x18\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
                         25);
        check_decode("08 01 1a 15 10 fe ff ff ff ff ff ff ff ff 01 18 ff ff ff ff ff ff ff ff 7f", 0, &p);

        /* Non-canonical (padded) varints decode like Go does. */
        p = (Packet) { .type = PACKET_CLOSE_REQ, .close_req = { .connect_id = 1 } };
        check_decode("08 82 80 80 80 00 2a 03 08 81 00", 0, &p);
}
END_TEST

START_TEST(test_unknown_fields_top) {
        const Packet want = { .type = PACKET_DATA, .data = { .connect_id = 1, .data = (const uint8_t *) "hi",
                                                             .data_len = 2 } };

        /* varint (field 9), fixed64 (10), length-delimited (11, content not parsed), fixed32 (12) */
        check_decode("48 96 01 08 04 22 06 08 01 1a 02 68 69", 0, &want);
        check_decode("51 01 02 03 04 05 06 07 08 08 04 22 06 08 01 1a 02 68 69", 0, &want);
        check_decode("08 04 5a 03 ff c0 07 22 06 08 01 1a 02 68 69", 0, &want);
        check_decode("08 04 22 06 08 01 1a 02 68 69 65 01 02 03 04", 0, &want);
        /* after the payload, and the largest valid field number (2^29-1, 5-byte tag) */
        check_decode("08 04 22 06 08 01 1a 02 68 69 f8 ff ff ff 0f 01", 0, &want);
        check_decode("08 04 22 06 08 01 1a 02 68 69 fa ff ff ff 0f 00", 0, &want);
        /* an empty unknown length-delimited field */
        check_decode("5a 00 08 04 22 06 08 01 1a 02 68 69", 0, &want);
}
END_TEST

START_TEST(test_unknown_fields_nested) {
        const Packet want = { .type = PACKET_DATA, .data = { .connect_id = 1, .data = (const uint8_t *) "hi",
                                                             .data_len = 2 } };
        const Packet drain = { .type = PACKET_DRAIN };

        check_decode("08 04 22 09 20 96 01 08 01 1a 02 68 69", 0, &want);             /* varint #4 */
        check_decode("08 04 22 0f 08 01 29 01 02 03 04 05 06 07 08 1a 02 68 69", 0, &want); /* fixed64 #5 */
        check_decode("08 04 22 0b 08 01 1a 02 68 69 32 03 ff fe fd", 0, &want);       /* bytes #6 */
        check_decode("08 04 22 0b 08 01 3d 01 02 03 04 1a 02 68 69", 0, &want);       /* fixed32 #7 */
        /* DRAIN has no fields: everything inside is unknown */
        check_decode("08 06 42 08 08 01 11 00 00 00 00 00", -EBADMSG, NULL);        /* truncated fixed64 */
        check_decode("08 06 42 0b 08 01 11 00 00 00 00 00 00 00 00", 0, &drain);
        check_decode("08 06 42 07 0a 01 ff 15 00 00 00", -EBADMSG, NULL);            /* truncated fixed32 */
        check_decode("08 06 42 08 0a 01 ff 15 00 00 00 00", 0, &drain);
}
END_TEST

/* A known field with an unexpected wire type is an unknown field (Go's behaviour). */
START_TEST(test_wrong_wire_type) {
        const Packet close_req = { .type = PACKET_CLOSE_REQ, .close_req = { .connect_id = 1 } };
        const Packet empty_req = { .type = PACKET_DIAL_REQ };

        /* type as length-delimited: ignored, so type stays DIAL_REQ and the payload mismatches */
        check_decode("0a 01 02 2a 02 08 01", -EPROTO, NULL);
        check_decode("0a 01 02 08 02 2a 02 08 01", 0, &close_req);
        /* payload member as varint: ignored, so the payload is missing */
        check_decode("08 02 28 01", -EPROTO, NULL);
        /* nested: connectID as fixed64, protocol as varint */
        check_decode("08 02 2a 09 09 01 00 00 00 00 00 00 00", 0,
                     &(const Packet) { .type = PACKET_CLOSE_REQ });
        check_decode("12 02 08 05", 0, &empty_req);
        /* a wrong-wire-type occurrence does not override an earlier good one */
        check_decode("08 02 2a 0b 08 05 09 01 00 00 00 00 00 00 00", 0,
                     &(const Packet) { .type = PACKET_CLOSE_REQ, .close_req = { .connect_id = 5 } });
        check_decode("12 05 0a 01 78 0a 00 12 00", 0,
                     &(const Packet) { .type = PACKET_DIAL_REQ, .dial_req = { .protocol = S("") } });
        check_decode("12 05 0a 01 78 08 05", 0,
                     &(const Packet) { .type = PACKET_DIAL_REQ, .dial_req = { .protocol = S("x") } });
        check_decode("08 04 22 06 1a 01 7a 1d 00 00 00 00 00 00 00", -EBADMSG, NULL);
        check_decode("08 04 22 0a 1a 01 7a 1d 00 00 00 00 08 01", 0,
                     &(const Packet) { .type = PACKET_DATA,
                                       .data = { .connect_id = 1, .data = (const uint8_t *) "z",
                                                 .data_len = 1 } });
}
END_TEST

START_TEST(test_payload_mismatch) {
        /* each type with the payload of the next member */
        check_decode("12 00 08 01", -EPROTO, NULL); /* dialRequest, then type DIAL_RSP */
        check_decode("1a 00", -EPROTO, NULL);       /* DIAL_REQ with dialResponse */
        check_decode("08 01 12 00", -EPROTO, NULL); /* DIAL_RSP with dialRequest */
        check_decode("08 02 32 00", -EPROTO, NULL); /* CLOSE_REQ with closeResponse */
        check_decode("08 03 2a 00", -EPROTO, NULL); /* CLOSE_RSP with closeRequest */
        check_decode("08 04 3a 00", -EPROTO, NULL); /* DATA with closeDial */
        check_decode("08 05 42 00", -EPROTO, NULL); /* DIAL_CLS with drain */
        check_decode("08 06 22 00", -EPROTO, NULL); /* DRAIN with data */
}
END_TEST

START_TEST(test_missing_payload) {
        Packet p = { .type = 99 };

        ck_assert_int_eq(packet_decode(NULL, 0, &p), -EPROTO);
        ck_assert_int_eq(p.type, 99);
        check_decode("", -EPROTO, NULL);
        check_decode("08 00", -EPROTO, NULL);
        check_decode("08 01", -EPROTO, NULL);
        check_decode("08 02", -EPROTO, NULL);
        check_decode("08 03", -EPROTO, NULL);
        check_decode("08 04", -EPROTO, NULL);
        check_decode("08 05", -EPROTO, NULL);
        check_decode("08 06", -EPROTO, NULL);
        check_decode("48 01", -EPROTO, NULL); /* only an unknown field */
}
END_TEST

START_TEST(test_unknown_type) {
        check_decode("08 07", -EOPNOTSUPP, NULL);
        check_decode("08 07 4a 00", -EOPNOTSUPP, NULL);   /* a future type with a future member */
        check_decode("08 07 12 00", -EOPNOTSUPP, NULL);   /* with a known member */
        check_decode("08 64 22 00", -EOPNOTSUPP, NULL);
        check_decode("08 ff ff ff ff ff ff ff ff ff 01 12 00", -EOPNOTSUPP, NULL); /* -1 */
        check_decode("08 80 80 80 80 08 12 00", -EOPNOTSUPP, NULL);             /* INT32_MIN */
        /* malformation still wins over an unknown type */
        check_decode("08 07 12 05", -EBADMSG, NULL);
}
END_TEST

START_TEST(test_type_int32_truncation) {
        /* Go decodes the enum as int32: 2^32 + 4 is DATA, 2^32 is DIAL_REQ. */
        check_decode("08 84 80 80 80 10 22 00", 0, &(const Packet) { .type = PACKET_DATA });
        check_decode("08 80 80 80 80 10 12 00", 0, &(const Packet) { .type = PACKET_DIAL_REQ });
}
END_TEST

START_TEST(test_type_last_wins) {
        check_decode("08 01 08 04 22 00", 0, &(const Packet) { .type = PACKET_DATA });
        check_decode("08 04 22 00 08 00", -EPROTO, NULL);
        check_decode("08 04 22 00 08 00 12 00", 0, &(const Packet) { .type = PACKET_DIAL_REQ });
}
END_TEST

START_TEST(test_invalid_utf8) {
        static const char *const bad[] = {
                "ff", "80", "c0 80", "c1 bf", "e0 80 80", "e0 9f bf", "ed a0 80", "ed bf bf", "e2 82",
                "f0 80 80 80", "f0 8f bf bf", "f4 90 80 80", "f5 80 80 80", "fe", "c3", "61 c3", "f0 9f 98",
                "e2 28 a1", "c3 28",
        };
        static const char *const good[] = {
                "", "61", "7f", "c2 80", "c3 a9", "df bf", "e0 a0 80", "e2 82 ac", "ed 9f bf", "ee 80 80",
                "ef bf bf", "f0 90 80 80", "f0 9f 98 80", "f4 8f bf bf", "00",
        };
        /* member prefix, string field tag */
        static const struct {
                const char *type_hex;
                uint8_t member_tag, field_tag;
        } where[] = {
                { "", 0x12, 0x0a },      /* DialRequest.protocol */
                { "", 0x12, 0x12 },      /* DialRequest.address */
                { "08 01", 0x1a, 0x0a }, /* DialResponse.error */
                { "08 03", 0x32, 0x0a }, /* CloseResponse.error */
                { "08 04", 0x22, 0x12 }, /* Data.error */
        };

        for (size_t w = 0; w < ELEMENTSOF(where); w++)
                for (int pass = 0; pass < 2; pass++) {
                        const char *const *list = pass == 0 ? bad : good;
                        size_t count = pass == 0 ? ELEMENTSOF(bad) : ELEMENTSOF(good);

                        for (size_t i = 0; i < count; i++) {
                                uint8_t s[8], buf[32];
                                size_t sl = unhex(list[i], s, sizeof(s)), n = 0;
                                Packet p = { .type = 99 };
                                int r;

                                n = unhex(where[w].type_hex, buf, sizeof(buf));
                                buf[n++] = where[w].member_tag;
                                buf[n++] = (uint8_t) (2 + sl);
                                buf[n++] = where[w].field_tag;
                                buf[n++] = (uint8_t) sl;
                                memcpy(buf + n, s, sl);
                                n += sl;

                                r = packet_decode(buf, n, &p);
                                ck_assert_msg(r == (pass == 0 ? -EBADMSG : 0), "site %zu string '%s': %d", w,
                                              list[i], r);
                        }
                }

        /* bytes fields and unknown fields are not UTF-8 checked */
        check_decode("08 04 22 04 1a 02 ff fe", 0,
                     &(const Packet) { .type = PACKET_DATA, .data = { .data = (const uint8_t *) "\xff\xfe",
                                                                      .data_len = 2 } });
        check_decode("08 04 22 00 4a 01 ff", 0, &(const Packet) { .type = PACKET_DATA });
        /* a member that is later replaced was still parsed, and its bad string is still an error */
        check_decode("08 04 12 03 0a 01 ff 22 00", -EBADMSG, NULL);
}
END_TEST

START_TEST(test_encode_invalid_utf8) {
        uint8_t out[64];
        size_t len = 777;
        Packet p = { .type = PACKET_CLOSE_RSP, .close_rsp = { .error = S("bad \xff") } };

        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), -EINVAL);
        ck_assert_uint_eq(len, 777);
        p = (Packet) { .type = PACKET_DIAL_REQ, .dial_req = { .address = S("\xed\xa0\x80") } };
        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), -EINVAL);
        p = (Packet) { .type = PACKET_DATA, .data = { .error = S("\xc3") } };
        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), -EINVAL);
        /* non-UTF-8 in DATA bytes is fine */
        p = (Packet) { .type = PACKET_DATA, .data = { .data = (const uint8_t *) "\xff", .data_len = 1 } };
        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), 0);
        ck_assert_uint_eq(len, 7);
        ck_assert_mem_eq(out, "\x08\x04\x22\x03\x1a\x01\xff", 7);
}
END_TEST

START_TEST(test_wire_errors) {
        /* groups, at top level and nested */
        check_decode("0b 0c", -EBADMSG, NULL);
        check_decode("4b 4c 08 04 22 00", -EBADMSG, NULL);
        check_decode("4c 08 04 22 00", -EBADMSG, NULL);
        check_decode("08 04 22 02 23 24", -EBADMSG, NULL);
        check_decode("08 04 22 01 24", -EBADMSG, NULL);
        /* wire types 6 and 7 */
        check_decode("4e 00 08 04 22 00", -EBADMSG, NULL);
        check_decode("4f 00 08 04 22 00", -EBADMSG, NULL);
        check_decode("08 04 22 02 0e 00", -EBADMSG, NULL);
        /* field number 0 */
        check_decode("00 00 08 04 22 00", -EBADMSG, NULL);
        check_decode("02 00 08 04 22 00", -EBADMSG, NULL);
        check_decode("08 04 22 02 00 00", -EBADMSG, NULL);
        /* field number 2^29 */
        check_decode("08 04 22 00 80 80 80 80 10 00", -EBADMSG, NULL);
        /* 11-byte varints: value, tag and length */
        check_decode("08 84 80 80 80 80 80 80 80 80 80 00 22 00", -EBADMSG, NULL);
        check_decode("88 80 80 80 80 80 80 80 80 80 00 04 22 00", -EBADMSG, NULL);
        check_decode("08 04 22 80 80 80 80 80 80 80 80 80 80 00", -EBADMSG, NULL);
        check_decode("08 04 22 0c 08 81 80 80 80 80 80 80 80 80 80 00", -EBADMSG, NULL);
        /* 10-byte varints whose last byte overflows 64 bits */
        check_decode("08 84 80 80 80 80 80 80 80 80 02 22 00", -EBADMSG, NULL);
        check_decode("08 04 22 0b 08 ff ff ff ff ff ff ff ff ff 02", -EBADMSG, NULL);
        /* the same with a valid 10th byte decodes */
        check_decode("08 04 22 0b 08 ff ff ff ff ff ff ff ff ff 01", 0,
                     &(const Packet) { .type = PACKET_DATA, .data = { .connect_id = -1 } });
        /* lengths beyond the buffer, at both levels, including 2^63 */
        check_decode("08 04 22 07 08 01 1a 02 68 69", -EBADMSG, NULL);
        check_decode("08 04 22 06 08 01 1a 03 68 69", -EBADMSG, NULL);
        check_decode("08 04 22 80 80 80 80 80 80 80 80 80 01", -EBADMSG, NULL);
        check_decode("08 04 22 0a 1a ff ff ff ff ff ff ff ff 7f", -EBADMSG, NULL);
        check_decode("5a ff ff ff ff 0f 08 04 22 00", -EBADMSG, NULL);
        /* truncated fixed fields at top level */
        check_decode("08 04 22 00 49 00 00 00 00 00 00 00", -EBADMSG, NULL);
        check_decode("08 04 22 00 4d 00 00 00", -EBADMSG, NULL);
        /* a truncated tag */
        check_decode("08 04 22 00 80", -EBADMSG, NULL);
}
END_TEST

START_TEST(test_oneof_merge) {
        /* same member twice: fields merge, later scalars win */
        check_decode("12 05 0a 03 74 63 70 12 02 18 05", 0,
                     &(const Packet) { .type = PACKET_DIAL_REQ,
                                       .dial_req = { .protocol = S("tcp"), .random = 5 } });
        check_decode("12 07 0a 03 74 63 70 18 05 12 05 0a 03 75 64 70", 0,
                     &(const Packet) { .type = PACKET_DIAL_REQ,
                                       .dial_req = { .protocol = S("udp"), .random = 5 } });
        /* repeated scalar inside one occurrence: last wins; bytes are replaced, not appended */
        check_decode("08 04 22 0c 08 01 08 02 1a 02 68 69 1a 02 79 6f", 0,
                     &(const Packet) { .type = PACKET_DATA,
                                       .data = { .connect_id = 2, .data = (const uint8_t *) "yo",
                                                 .data_len = 2 } });
        /* merge across occurrences with the type in between */
        check_decode("1a 03 0a 01 78 08 01 1a 02 10 07", 0,
                     &(const Packet) { .type = PACKET_DIAL_RSP,
                                       .dial_rsp = { .error = S("x"), .connect_id = 7 } });
}
END_TEST

START_TEST(test_oneof_reset) {
        /* dialRequest{tcp, 7}, dialResponse{1}, dialRequest{random 9}: the first one is gone */
        check_decode("12 07 0a 03 74 63 70 18 07 1a 02 10 01 12 02 18 09", 0,
                     &(const Packet) { .type = PACKET_DIAL_REQ, .dial_req = { .random = 9 } });
        /* dialResponse{"x", 3}, data{1}, dialResponse{random 2} with type DIAL_RSP */
        check_decode("08 01 1a 05 0a 01 78 10 03 22 02 08 01 1a 02 18 02", 0,
                     &(const Packet) { .type = PACKET_DIAL_RSP, .dial_rsp = { .random = 2 } });
        /* the last member decides: a DATA type whose data member was replaced is a mismatch */
        check_decode("08 04 22 02 08 01 2a 02 08 01", -EPROTO, NULL);
        check_decode("08 04 2a 02 08 01 22 02 08 01", 0,
                     &(const Packet) { .type = PACKET_DATA, .data = { .connect_id = 1 } });
}
END_TEST

static const size_t data_sizes[] = { 0, 1, 127, 128, 16383, 16384, 1024 * 1024 };
static const int64_t connect_ids[] = { 0, 1, INT64_C(1) << 31, INT64_MAX, -1 };

START_TEST(test_data_header) {
        size_t data_len = data_sizes[_i / ELEMENTSOF(connect_ids)];
        int64_t cid = connect_ids[_i % ELEMENTSOF(connect_ids)];
        _cleanup_free_ uint8_t *payload = malloc(data_len ?: 1);
        _cleanup_free_ uint8_t *full = malloc(data_len + 64);
        _cleanup_free_ uint8_t *split = malloc(data_len + 64);
        size_t full_len = 0, hdr_len = 0;
        Packet p, q;

        ck_assert_ptr_nonnull(payload);
        ck_assert_ptr_nonnull(full);
        ck_assert_ptr_nonnull(split);
        for (size_t i = 0; i < data_len; i++)
                payload[i] = (uint8_t) (i * 7 + 3);

        p = (Packet) { .type = PACKET_DATA,
                       .data = { .connect_id = cid, .data = payload, .data_len = data_len } };
        ck_assert_int_eq(packet_encode(&p, full, data_len + 64, &full_len), 0);
        ck_assert_uint_eq(full_len, packet_encoded_size(&p));

        ck_assert_int_eq(packet_encode_data_header(cid, data_len, split, data_len + 64, &hdr_len), 0);
        ck_assert_uint_le(hdr_len, PACKET_DATA_HEADER_MAX);
        ck_assert_uint_eq(hdr_len + data_len, full_len);
        if (data_len > 0)
                memcpy(split + hdr_len, payload, data_len);
        ck_assert_mem_eq(split, full, full_len);

        ck_assert_int_eq(packet_decode(split, full_len, &q), 0);
        ck_assert_int_eq(q.type, PACKET_DATA);
        ck_assert_int_eq(q.data.connect_id, cid);
        ck_assert_uint_eq(q.data.data_len, data_len);
        if (data_len > 0)
                ck_assert_ptr_eq(q.data.data, split + hdr_len);
}
END_TEST

/* Streamed delivery: the header is recognised from any head that holds it, for every size and ID. */
START_TEST(test_data_head) {
        size_t data_len = data_sizes[_i / ELEMENTSOF(connect_ids)];
        int64_t cid = connect_ids[_i % ELEMENTSOF(connect_ids)];
        uint8_t hdr[PACKET_DATA_HEADER_MAX];
        size_t hdr_len = 0, got = 0;
        Packet q;

        ck_assert_int_eq(packet_encode_data_header(cid, data_len, hdr, sizeof(hdr), &hdr_len), 0);
        for (size_t l = 0; l <= hdr_len; l++) {
                int r = packet_decode_data_head(hdr, l, hdr_len + data_len, &q, &got);

                /* no payload: nothing to stream */
                ck_assert_int_eq(r, l == hdr_len && data_len > 0 ? 1 : 0);
                if (r == 1) {
                        ck_assert_uint_eq(got, hdr_len);
                        ck_assert_int_eq(q.type, PACKET_DATA);
                        ck_assert_int_eq(q.data.connect_id, cid);
                        ck_assert(!q.data.continued);
                }
        }
}
END_TEST

/* Only the canonical layout streams; everything else is left to packet_decode() on the whole message. */
START_TEST(test_data_head_other_layouts) {
        static const struct {
                const char *bytes;
                size_t len, msg_len;
        } no[] = {
                { "\x08\x04\x22\x08\x08\x03\x12\x01\x65\x1a\x01\x7a", 12, 12 }, /* error text */
                { "\x08\x04\x22\x05\x08\x03\x1a\x01", 8, 10 },                /* Data shorter than msg */
                { "\x08\x04\x22\x06\x08\x03\x1a\x01\x7a\x20", 9, 10 },       /* field after data */
                { "\x22\x05\x08\x03\x1a\x01\x7a\x08\x04", 9, 9 },             /* type last */
                { "\x08\x02\x2a\x02\x08\x03", 6, 6 },                           /* CLOSE_REQ */
                { "\x08\x04\x22\x05\x1a\x01\x7a\x08\x03", 9, 9 },             /* connectID after data */
                { "\x08\x04\x22\x04\x08\x03\x1a\x00", 8, 8 },                 /* no payload */
                { "\x08\x04\x22\x85", 4, 9 },                                     /* truncated varint */
        };
        Packet q;
        size_t got = 0;

        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                ck_assert_msg(packet_decode_data_head((const uint8_t *) no[i].bytes, no[i].len, no[i].msg_len, &q,
                                                      &got) == 0, "layout %zu", i);
        /* the canonical one, for contrast: header 7 bytes, 1 payload byte */
        ck_assert_int_eq(packet_decode_data_head((const uint8_t *) "\x08\x04\x22\x05\x08\x03\x1a\x01\x7a", 9,
                                                 9, &q, &got), 1);
        ck_assert_uint_eq(got, 8);
        ck_assert_int_eq(q.data.connect_id, 3);
}
END_TEST

START_TEST(test_data_header_bytes) {
        uint8_t out[PACKET_DATA_HEADER_MAX];
        size_t len = 0;

        /* the worst case: negative connectID, data_len needing 10 bytes */
        ck_assert_int_eq(packet_encode_data_header(-1, SIZE_MAX - PACKET_DATA_HEADER_MAX,
                                                   out, sizeof(out), &len), 0);
        ck_assert_uint_eq(len, 35);
        ck_assert_int_eq(packet_encode_data_header(0, 0, out, sizeof(out), &len), 0);
        ck_assert_uint_eq(len, 4);
        ck_assert_mem_eq(out, "\x08\x04\x22\x00", 4);
        ck_assert_int_eq(packet_encode_data_header(1, 2, out, sizeof(out), &len), 0);
        ck_assert_uint_eq(len, 8);
        ck_assert_mem_eq(out, "\x08\x04\x22\x06\x08\x01\x1a\x02", 8);
        ck_assert_int_eq(packet_encode_data_header(300, 200, out, sizeof(out), &len), 0);
        ck_assert_uint_eq(len, 11);
        ck_assert_mem_eq(out, "\x08\x04\x22\xce\x01\x08\xac\x02\x1a\xc8\x01", 11);
}
END_TEST

START_TEST(test_enobufs) {
        uint8_t out[64], want[64];
        size_t len = 4242;
        Packet p = { .type = PACKET_DIAL_REQ,
                     .dial_req = { .protocol = S("tcp"), .address = S("127.0.0.1:80"), .random = 1 } };

        memset(out, 0xAA, sizeof(out));
        memset(want, 0xAA, sizeof(want));
        for (size_t size = 0; size < 23; size++) {
                ck_assert_int_eq(packet_encode(&p, out, size, &len), -ENOBUFS);
                ck_assert_mem_eq(out, want, sizeof(out));
                ck_assert_uint_eq(len, 4242);
        }
        ck_assert_int_eq(packet_encode(&p, NULL, 0, &len), -ENOBUFS);
        ck_assert_int_eq(packet_encode(&p, out, 23, NULL), 0);

        for (size_t size = 0; size < 8; size++) {
                memset(out, 0xAA, sizeof(out));
                ck_assert_int_eq(packet_encode_data_header(1, 2, out, size, &len), -ENOBUFS);
                ck_assert_mem_eq(out, want, sizeof(out));
                ck_assert_uint_eq(len, 4242);
        }
        ck_assert_int_eq(packet_encode_data_header(1, 2, NULL, 0, &len), -ENOBUFS);
        ck_assert_int_eq(packet_encode_data_header(1, 2, out, 8, NULL), 0);
}
END_TEST

START_TEST(test_einval) {
        uint8_t out[64];
        size_t len = 4242;
        Packet p = { .type = _PACKET_TYPE_MAX };

        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), -EINVAL);
        ck_assert_uint_eq(packet_encoded_size(&p), 0);
        p.type = _PACKET_TYPE_INVALID;
        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), -EINVAL);
        ck_assert_uint_eq(packet_encoded_size(&p), 0);
        p.type = -1;
        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), -EINVAL);
        p.type = 100;
        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), -EINVAL);
        ck_assert_uint_eq(len, 4242);

        ck_assert_int_eq(packet_encode_data_header(1, SIZE_MAX, out, sizeof(out), &len), -EMSGSIZE);
        ck_assert_int_eq(packet_encode_data_header(1, SIZE_MAX - PACKET_DATA_HEADER_MAX + 1,
                                                   out, sizeof(out), &len), -EMSGSIZE);
        ck_assert_uint_eq(len, 4242);
}
END_TEST

START_TEST(test_encode_defaults_omitted) {
        uint8_t out[64];
        size_t len;
        /* empty payloads are still emitted; DIAL_REQ omits the type */
        static const struct {
                PacketType type;
                const char *bytes;
                size_t len;
        } empty[] = {
                { PACKET_DIAL_REQ, "\x12\x00", 2 },     { PACKET_DIAL_RSP, "\x08\x01\x1a\x00", 4 },
                { PACKET_CLOSE_REQ, "\x08\x02\x2a\x00", 4 }, { PACKET_CLOSE_RSP, "\x08\x03\x32\x00", 4 },
                { PACKET_DATA, "\x08\x04\x22\x00", 4 },  { PACKET_DIAL_CLS, "\x08\x05\x3a\x00", 4 },
                { PACKET_DRAIN, "\x08\x06\x42\x00", 4 },
        };

        for (size_t i = 0; i < ELEMENTSOF(empty); i++) {
                Packet p = { .type = empty[i].type };

                ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), 0);
                ck_assert_uint_eq(len, empty[i].len);
                ck_assert_mem_eq(out, empty[i].bytes, len);
        }

        /* DATA with every field set: connectID, error, data in field order */
        Packet p = { .type = PACKET_DATA,
                     .data = { .connect_id = 3, .error = S("e"),
                               .data = (const uint8_t *) "z", .data_len = 1 } };
        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), 0);
        ck_assert_uint_eq(len, 12);
        ck_assert_mem_eq(out, "\x08\x04\x22\x08\x08\x03\x12\x01\x65\x1a\x01\x7a", 12);
        check_decode("08 04 22 08 08 03 12 01 65 1a 01 7a", 0, &p);

        /* CLOSE_RSP with error and connectID */
        p = (Packet) { .type = PACKET_CLOSE_RSP, .close_rsp = { .error = S("no"), .connect_id = 9 } };
        ck_assert_int_eq(packet_encode(&p, out, sizeof(out), &len), 0);
        ck_assert_uint_eq(len, 10);
        ck_assert_mem_eq(out, "\x08\x03\x32\x06\x0a\x02\x6e\x6f\x10\x09", 10);
}
END_TEST

static Suite *packet_suite(void) {
        Suite *s = suite_create("packet");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_type_to_string);
        tcase_add_loop_test(tc, test_vector_decode, 0, ELEMENTSOF(vectors));
        tcase_add_loop_test(tc, test_vector_encode, 0, ELEMENTSOF(vectors));
        tcase_add_loop_test(tc, test_vector_roundtrip, 0, ELEMENTSOF(vectors));
        tcase_add_loop_test(tc, test_vector_truncations, 0, ELEMENTSOF(vectors));
        tcase_add_test(tc, test_zero_copy);
        tcase_add_test(tc, test_negative_int64);
        tcase_add_test(tc, test_unknown_fields_top);
        tcase_add_test(tc, test_unknown_fields_nested);
        tcase_add_test(tc, test_wrong_wire_type);
        tcase_add_test(tc, test_payload_mismatch);
        tcase_add_test(tc, test_missing_payload);
        tcase_add_test(tc, test_unknown_type);
        tcase_add_test(tc, test_type_int32_truncation);
        tcase_add_test(tc, test_type_last_wins);
        tcase_add_test(tc, test_invalid_utf8);
        tcase_add_test(tc, test_encode_invalid_utf8);
        tcase_add_test(tc, test_wire_errors);
        tcase_add_test(tc, test_oneof_merge);
        tcase_add_test(tc, test_oneof_reset);
        tcase_add_loop_test(tc, test_data_header, 0, ELEMENTSOF(data_sizes) * ELEMENTSOF(connect_ids));
        tcase_add_loop_test(tc, test_data_head, 0, ELEMENTSOF(data_sizes) * ELEMENTSOF(connect_ids));
        tcase_add_test(tc, test_data_head_other_layouts);
        tcase_add_test(tc, test_data_header_bytes);
        tcase_add_test(tc, test_enobufs);
        tcase_add_test(tc, test_einval);
        tcase_add_test(tc, test_encode_defaults_omitted);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(packet_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
