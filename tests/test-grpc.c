/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <sys/resource.h>

#include "grpc.h"
#include "macro.h"

#define MSGS_MAX 64

/* Records every delivered message (a copy plus where it pointed). */
typedef struct Collector {
        unsigned n;
        const uint8_t *ptr[MSGS_MAX];
        size_t len[MSGS_MAX];
        uint8_t *copy[MSGS_MAX];
        unsigned fail_at; /* return fail_r for the fail_at-th message (1-based); 0 = never */
        int fail_r;
} Collector;

static int collect(const uint8_t *msg, size_t len, void *userdata) {
        Collector *c = userdata;

        ck_assert_uint_lt(c->n, MSGS_MAX);
        c->ptr[c->n] = msg;
        c->len[c->n] = len;
        c->copy[c->n] = malloc(len ?: 1);
        ck_assert_ptr_nonnull(c->copy[c->n]);
        if (len > 0)
                memcpy(c->copy[c->n], msg, len);
        c->n++;
        if (c->fail_at > 0 && c->n == c->fail_at)
                return c->fail_r;
        return 0;
}

static void collector_done(Collector *c) {
        for (unsigned i = 0; i < c->n; i++)
                free(c->copy[i]);
        *c = (Collector) {};
}

static int never_called(const uint8_t *msg, size_t len, void *userdata) {
        ck_abort_msg("callback must not be called");
        return 0;
}

/* Builds prefix+body into out, returns the framed length. */
static size_t frame(uint8_t *out, const void *body, uint32_t len) {
        grpc_prefix_write(out, len);
        if (len > 0)
                memcpy(out + GRPC_PREFIX_SIZE, body, len);
        return GRPC_PREFIX_SIZE + len;
}

START_TEST(test_status_strings) {
        static const char *const want[] = {
                "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
                "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
                "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
        };

        ck_assert_uint_eq(ELEMENTSOF(want), 17);
        for (int i = 0; i < (int) ELEMENTSOF(want); i++)
                ck_assert_str_eq(grpc_status_to_string((GrpcStatus) i), want[i]);
        ck_assert_str_eq(grpc_status_to_string(GRPC_STATUS_CANCELLED), "Canceled");
        ck_assert_str_eq(grpc_status_to_string(GRPC_STATUS_INTERNAL), "Internal");
        ck_assert_str_eq(grpc_status_to_string(GRPC_STATUS_RESOURCE_EXHAUSTED), "ResourceExhausted");
        ck_assert_str_eq(grpc_status_to_string((GrpcStatus) 17), "Unknown");
        ck_assert_str_eq(grpc_status_to_string((GrpcStatus) -1), "Unknown");
}
END_TEST

START_TEST(test_prefix_write) {
        uint8_t out[GRPC_PREFIX_SIZE + 1] = { [GRPC_PREFIX_SIZE] = 0xEE };

        grpc_prefix_write(out, 0);
        ck_assert_mem_eq(out, "\x00\x00\x00\x00\x00\xee", 6);
        grpc_prefix_write(out, 10);
        ck_assert_mem_eq(out, "\x00\x00\x00\x00\x0a\xee", 6);
        grpc_prefix_write(out, 0x01020304);
        ck_assert_mem_eq(out, "\x00\x01\x02\x03\x04\xee", 6);
        grpc_prefix_write(out, GRPC_MESSAGE_MAX);
        ck_assert_mem_eq(out, "\x00\x00\x40\x00\x00\xee", 6);
        grpc_prefix_write(out, UINT32_MAX);
        ck_assert_mem_eq(out, "\x00\xff\xff\xff\xff\xee", 6);
}
END_TEST

#define CT(s) (s), STRLEN(s)
#define U8(s) ((const uint8_t *) (s))

START_TEST(test_content_type) {
        ck_assert(grpc_content_type_ok(CT("application/grpc")));
        ck_assert(grpc_content_type_ok(CT("application/grpc+proto")));
        ck_assert(grpc_content_type_ok(CT("application/grpc;charset=utf-8")));
        ck_assert(grpc_content_type_ok(CT("application/grpc+")));
        ck_assert(grpc_content_type_ok(CT("application/grpc;")));
        /* length-bounded, no NUL needed */
        ck_assert(grpc_content_type_ok("application/grpcXYZ", 16));
        ck_assert(grpc_content_type_ok("application/grpc+proto", 16));

        ck_assert(!grpc_content_type_ok(CT("application/grpcx")));
        ck_assert(!grpc_content_type_ok(CT("application/grpc-web")));
        ck_assert(!grpc_content_type_ok(CT("application/grpc proto")));
        ck_assert(!grpc_content_type_ok(CT("application/grp")));
        ck_assert(!grpc_content_type_ok(CT("Application/grpc")));
        ck_assert(!grpc_content_type_ok(CT("APPLICATION/GRPC")));
        ck_assert(!grpc_content_type_ok(CT("application/json")));
        ck_assert(!grpc_content_type_ok(CT(" application/grpc")));
        ck_assert(!grpc_content_type_ok(CT("")));
        ck_assert(!grpc_content_type_ok("application/grpc", 15));
        ck_assert(!grpc_content_type_ok(NULL, 0));
}
END_TEST

static void check_encode(const char *msg, size_t size, const char *want) {
        char out[128];
        size_t n;

        ck_assert_uint_le(size, sizeof(out) - 1);
        memset(out, 'Z', sizeof(out));
        n = grpc_message_encode(msg, out, size);
        ck_assert_msg(n == strlen(want), "encode('%s', %zu) = %zu, expected %zu", msg ?: "(null)", size, n,
                      strlen(want));
        ck_assert_str_eq(out, want);
        ck_assert_uint_lt(n, size);
        ck_assert_int_eq(out[size], 'Z'); /* nothing written past size */
}

START_TEST(test_message_encode) {
        char one = 'Z';

        check_encode("", 16, "");
        check_encode(NULL, 16, "");
        check_encode("hello world", 64, "hello world");
        check_encode(" !\"#$&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~", 64,
                     " !\"#$&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~");
        check_encode("50%", 64, "50%25");
        check_encode("a\nb\tc\r", 64, "a%0Ab%09c%0D");
        check_encode("\x01\x1f\x7f", 64, "%01%1F%7F");
        check_encode("\xe2\x82\xac", 64, "%E2%82%AC");
        check_encode("\xff\xfe", 64, "%FF%FE");
        check_encode("dial tcp 127.0.0.1:1: connect: connection refused", 64,
                     "dial tcp 127.0.0.1:1: connect: connection refused");

        /* truncation: at most size-1 bytes, never half an escape */
        check_encode("abc", 1, "");
        check_encode("abc", 3, "ab");
        check_encode("abc", 4, "abc");
        check_encode("%%", 3, "");
        check_encode("%%", 4, "%25");
        check_encode("%%", 6, "%25");
        check_encode("%%", 7, "%25%25");
        check_encode("a%", 4, "a");
        check_encode("a%", 5, "a%25");
        /* ... and never half a UTF-8 sequence */
        check_encode("a\xe2\x82\xac", 5, "a");
        check_encode("a\xe2\x82\xac", 7, "a");
        check_encode("a\xe2\x82\xac", 10, "a");
        check_encode("a\xe2\x82\xac", 11, "a%E2%82%AC");
        check_encode("\xe2\x82\xac" "b", 10, "%E2%82%AC");
        check_encode("\xc3\xa9\xc3\xa9", 10, "%C3%A9");
        check_encode("\xf0\x9f\x98\x80z", 13, "%F0%9F%98%80");
        /* stray continuation bytes (not UTF-8) are plain bytes: no backtracking past ASCII */
        check_encode("a\x80\x80", 5, "a%80");
        check_encode("a\x80\x80", 4, "a");

        /* size 0 writes nothing at all */
        ck_assert_uint_eq(grpc_message_encode("abc", &one, 0), 0);
        ck_assert_int_eq(one, 'Z');
        ck_assert_uint_eq(grpc_message_encode("abc", NULL, 0), 0);
}
END_TEST

START_TEST(test_single_zero_copy) {
        GrpcReader r = {};
        Collector c = {};
        uint8_t buf[32];
        size_t n = frame(buf, "hello", 5);

        ck_assert(grpc_reader_idle(&r));
        ck_assert_int_eq(grpc_reader_feed(&r, buf, n, collect, &c), 0);
        ck_assert_uint_eq(c.n, 1);
        ck_assert_ptr_eq(c.ptr[0], buf + 5);
        ck_assert_uint_eq(c.len[0], 5);
        ck_assert_mem_eq(c.copy[0], "hello", 5);
        ck_assert(grpc_reader_idle(&r));
        ck_assert_ptr_null(r.buf);
        grpc_reader_done(&r);
        collector_done(&c);
}
END_TEST

START_TEST(test_many_in_one_chunk) {
        GrpcReader r = {};
        Collector c = {};
        uint8_t buf[1024];
        size_t off[40], n = 0;

        for (unsigned i = 0; i < 40; i++) {
                uint8_t body[40];

                memset(body, 'a' + (int) (i % 26), i);
                off[i] = n + GRPC_PREFIX_SIZE;
                n += frame(buf + n, body, i);
        }

        ck_assert_int_eq(grpc_reader_feed(&r, buf, n, collect, &c), 0);
        ck_assert_uint_eq(c.n, 40);
        for (unsigned i = 0; i < 40; i++) {
                ck_assert_uint_eq(c.len[i], i);
                ck_assert_ptr_eq(c.ptr[i], buf + off[i]);
                for (unsigned k = 0; k < i; k++)
                        ck_assert_int_eq(c.copy[i][k], 'a' + (int) (i % 26));
        }
        ck_assert(grpc_reader_idle(&r));
        grpc_reader_done(&r);
        collector_done(&c);
}
END_TEST

/* Three messages (lengths 0, 3, 12, 1), split in two chunks at every position. */
START_TEST(test_split_everywhere) {
        static const uint32_t lens[] = { 0, 3, 12, 1 };
        uint8_t stream[64];
        size_t body_off[ELEMENTSOF(lens)], total = 0;

        for (size_t i = 0; i < ELEMENTSOF(lens); i++) {
                uint8_t body[16];

                for (uint32_t k = 0; k < lens[i]; k++)
                        body[k] = (uint8_t) (i * 16 + k);
                body_off[i] = total + GRPC_PREFIX_SIZE;
                total += frame(stream + total, body, lens[i]);
        }

        for (size_t s = 0; s <= total; s++) {
                _cleanup_free_ uint8_t *a = malloc(s ?: 1), *b = malloc(total - s ?: 1);
                GrpcReader r = { .max = 12 };
                Collector c = {};
                bool boundary = false;

                ck_assert_ptr_nonnull(a);
                ck_assert_ptr_nonnull(b);
                memcpy(a, stream, s);
                memcpy(b, stream + s, total - s);

                ck_assert_int_eq(grpc_reader_feed(&r, a, s, collect, &c), 0);
                /* idle after the first chunk iff it ends exactly at a message boundary */
                for (size_t i = 0; i <= ELEMENTSOF(lens); i++)
                        if (s == (i == ELEMENTSOF(lens) ? total : body_off[i] - GRPC_PREFIX_SIZE))
                                boundary = true;
                ck_assert_msg(grpc_reader_idle(&r) == boundary, "split %zu", s);

                ck_assert_int_eq(grpc_reader_feed(&r, b, total - s, collect, &c), 0);
                ck_assert(grpc_reader_idle(&r));
                ck_assert_ptr_null(r.buf);

                ck_assert_uint_eq(c.n, ELEMENTSOF(lens));
                for (size_t i = 0; i < ELEMENTSOF(lens); i++) {
                        size_t lo = body_off[i], hi = body_off[i] + lens[i];

                        ck_assert_uint_eq(c.len[i], lens[i]);
                        if (lens[i] > 0)
                                ck_assert_mem_eq(c.copy[i], stream + lo, lens[i]);
                        /* zero copy exactly when the body lies inside one chunk */
                        if (hi <= s)
                                ck_assert_ptr_eq(c.ptr[i], a + lo);
                        else if (lo >= s)
                                ck_assert_ptr_eq(c.ptr[i], b + (lo - s));
                        else {
                                ck_assert_ptr_nonnull(c.ptr[i]);
                                ck_assert(c.ptr[i] < a || c.ptr[i] >= a + s);
                                ck_assert(c.ptr[i] < b || c.ptr[i] >= b + (total - s));
                        }
                }
                grpc_reader_done(&r);
                collector_done(&c);
        }
}
END_TEST

/* Streamed delivery: messages whose body starts with 'S' stream after a 3-byte header, the others are reassembled
 * (head callback says 0) or, when small or whole in a chunk, delivered as usual. Every split of the stream into
 * two chunks, and byte by byte, gives the same bytes in the same order, and nothing is buffered while streaming. */
typedef struct StreamLog {
        Collector whole;
        uint8_t body[1024];
        size_t body_len;
        unsigned heads, lasts;
        bool in_message;
} StreamLog;

static int stream_head(const uint8_t *head, size_t len, uint32_t msg_len, void *userdata) {
        StreamLog *l = userdata;

        ck_assert_uint_eq(len, MIN((size_t) msg_len, (size_t) GRPC_HEAD_MAX));
        ck_assert_uint_gt(msg_len, len);
        ck_assert(!l->in_message);
        if (head[0] != 'S')
                return 0;
        l->heads++;
        l->in_message = true;
        return 3;
}

static int stream_body(const uint8_t *data, size_t len, bool last, void *userdata) {
        StreamLog *l = userdata;

        ck_assert(l->in_message);
        ck_assert_uint_gt(len, 0);
        ck_assert_uint_le(l->body_len + len, sizeof(l->body));
        memcpy(l->body + l->body_len, data, len);
        l->body_len += len;
        if (last) {
                l->lasts++;
                l->in_message = false;
        }
        return 0;
}

static int stream_whole(const uint8_t *msg, size_t len, void *userdata) {
        StreamLog *l = userdata;

        ck_assert(!l->in_message);
        return collect(msg, len, &l->whole);
}

START_TEST(test_stream_split_everywhere) {
        static const GrpcReaderCallbacks cbs = { .message = stream_whole, .head = stream_head, .body = stream_body };
        /* streamed (S), reassembled (R), small (s), empty, streamed again */
        static const struct { char kind; uint32_t len; } msgs[] = { { 'S', 200 }, { 'R', 90 }, { 's', 20 },
                                                                    { 0, 0 }, { 'S', 60 } };
        uint8_t stream[512], want_body[512];
        size_t total = 0, want_len = 0;

        for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
                uint8_t body[256];

                for (uint32_t k = 0; k < msgs[i].len; k++)
                        body[k] = k == 0 ? (uint8_t) msgs[i].kind : (uint8_t) (i * 31 + k);
                if (msgs[i].kind == 'S') {
                        memcpy(want_body + want_len, body + 3, msgs[i].len - 3);
                        want_len += msgs[i].len - 3;
                }
                total += frame(stream + total, body, msgs[i].len);
        }

        for (size_t s = 0; s <= total + 1; s++) {
                GrpcReader r = {};
                StreamLog l = {};
                bool bytewise = s == total + 1;

                if (bytewise)
                        for (size_t k = 0; k < total; k++)
                                ck_assert_int_eq(grpc_reader_feed_stream(&r, stream + k, 1, &cbs, &l), 0);
                else {
                        ck_assert_int_eq(grpc_reader_feed_stream(&r, stream, s, &cbs, &l), 0);
                        if (l.in_message)
                                ck_assert_uint_eq(grpc_reader_held(&r), 0);
                        ck_assert_int_eq(grpc_reader_feed_stream(&r, stream + s, total - s, &cbs, &l), 0);
                }
                ck_assert(grpc_reader_idle(&r));
                ck_assert_uint_eq(grpc_reader_held(&r), 0);
                /* Each 'S' message streamed unless it lay whole inside one chunk. */
                ck_assert_uint_eq(l.heads, l.lasts);
                ck_assert_uint_eq(l.whole.n + l.heads, ELEMENTSOF(msgs));
                {
                        uint8_t got[512];
                        size_t n = 0, w = 0;

                        /* Rebuild every 'S' payload from whichever path carried it, in order. */
                        for (size_t i = 0, wi = 0; i < ELEMENTSOF(msgs); i++) {
                                if (msgs[i].kind != 'S') {
                                        ck_assert_uint_lt(wi, l.whole.n);
                                        ck_assert_uint_eq(l.whole.len[wi], msgs[i].len);
                                        wi++;
                                        continue;
                                }
                                if (wi < l.whole.n && l.whole.len[wi] == msgs[i].len && l.whole.copy[wi][0] == 'S') {
                                        memcpy(got + n, l.whole.copy[wi] + 3, msgs[i].len - 3);
                                        wi++;
                                } else {
                                        memcpy(got + n, l.body + w, msgs[i].len - 3);
                                        w += msgs[i].len - 3;
                                }
                                n += msgs[i].len - 3;
                        }
                        ck_assert_uint_eq(w, l.body_len);
                        ck_assert_uint_eq(n, want_len);
                        ck_assert_mem_eq(got, want_body, want_len);
                }
                if (bytewise)
                        ck_assert_uint_eq(l.heads, 2);
                grpc_reader_done(&r);
                collector_done(&l.whole);
        }
}
END_TEST

START_TEST(test_byte_by_byte) {
        uint8_t stream[64];
        size_t total = 0;
        GrpcReader r = {};
        Collector c = {};

        total += frame(stream + total, "abc", 3);
        total += frame(stream + total, "", 0);
        total += frame(stream + total, "0123456789", 10);

        for (size_t i = 0; i < total; i++) {
                uint8_t byte = stream[i];

                ck_assert_int_eq(grpc_reader_feed(&r, &byte, 1, collect, &c), 0);
                ck_assert_int_eq(grpc_reader_feed(&r, NULL, 0, collect, &c), 0);
        }
        ck_assert_uint_eq(c.n, 3);
        ck_assert_uint_eq(c.len[0], 3);
        ck_assert_mem_eq(c.copy[0], "abc", 3);
        ck_assert_uint_eq(c.len[1], 0);
        ck_assert_uint_eq(c.len[2], 10);
        ck_assert_mem_eq(c.copy[2], "0123456789", 10);
        ck_assert(grpc_reader_idle(&r));
        grpc_reader_done(&r);
        collector_done(&c);
}
END_TEST

START_TEST(test_prefix_alone_does_not_allocate) {
        uint8_t stream[32];
        size_t n = frame(stream, "hello", 5);
        GrpcReader r = {};
        Collector c = {};

        /* the prefix ends the first chunk; the whole body arrives in the next: zero copy */
        ck_assert_int_eq(grpc_reader_feed(&r, stream, GRPC_PREFIX_SIZE, collect, &c), 0);
        ck_assert_ptr_null(r.buf);
        ck_assert(!grpc_reader_idle(&r));
        ck_assert_int_eq(grpc_reader_feed(&r, stream + GRPC_PREFIX_SIZE, 0, collect, &c), 0);
        ck_assert_ptr_null(r.buf);
        ck_assert_int_eq(grpc_reader_feed(&r, stream + GRPC_PREFIX_SIZE, n - GRPC_PREFIX_SIZE, collect, &c),
                         0);
        ck_assert_uint_eq(c.n, 1);
        ck_assert_ptr_eq(c.ptr[0], stream + GRPC_PREFIX_SIZE);

        /* one body byte, then the rest: a buffer of exactly msg_len is used */
        ck_assert_int_eq(grpc_reader_feed(&r, stream, GRPC_PREFIX_SIZE + 1, collect, &c), 0);
        ck_assert_ptr_nonnull(r.buf);
        ck_assert_uint_eq(r.buf_len, 1);
        ck_assert_uint_eq(r.msg_len, 5);
        ck_assert_int_eq(grpc_reader_feed(&r, stream + GRPC_PREFIX_SIZE + 1, 4, collect, &c), 0);
        ck_assert_uint_eq(c.n, 2);
        ck_assert_mem_eq(c.copy[1], "hello", 5);
        ck_assert_ptr_null(r.buf);
        ck_assert(grpc_reader_idle(&r));
        grpc_reader_done(&r);
        collector_done(&c);
}
END_TEST

START_TEST(test_zero_length) {
        uint8_t stream[32];
        size_t n = 0;
        GrpcReader r = {};
        Collector c = {};

        n += frame(stream + n, "", 0);
        n += frame(stream + n, "x", 1);
        n += frame(stream + n, "", 0);

        ck_assert_int_eq(grpc_reader_feed(&r, stream, n, collect, &c), 0);
        ck_assert_uint_eq(c.n, 3);
        ck_assert_uint_eq(c.len[0], 0);
        ck_assert_ptr_eq(c.ptr[0], stream + 5);
        ck_assert_uint_eq(c.len[1], 1);
        ck_assert_uint_eq(c.len[2], 0);
        ck_assert_ptr_eq(c.ptr[2], stream + n); /* at the very end of the chunk */
        ck_assert(grpc_reader_idle(&r));
        grpc_reader_done(&r);
        collector_done(&c);
}
END_TEST

START_TEST(test_limit) {
        uint8_t stream[64], body[17] = {};
        GrpcReader r = { .max = 16 };
        Collector c = {};
        size_t n;

        /* exactly the limit is accepted */
        n = frame(stream, body, 16);
        ck_assert_int_eq(grpc_reader_feed(&r, stream, n, collect, &c), 0);
        ck_assert_uint_eq(c.n, 1);
        ck_assert_uint_eq(c.len[0], 16);
        collector_done(&c);

        /* limit + 1 is refused as soon as the prefix is complete, before any body byte */
        n = frame(stream, body, 17);
        ck_assert_int_eq(grpc_reader_feed(&r, stream, 3, never_called, NULL), 0);
        ck_assert_int_eq(grpc_reader_feed(&r, stream + 3, 2, never_called, NULL), -EMSGSIZE);
        ck_assert_ptr_null(r.buf);
        ck_assert(!grpc_reader_idle(&r));
        /* sticky until done() */
        ck_assert_int_eq(grpc_reader_feed(&r, stream + 5, n - 5, never_called, NULL), -EMSGSIZE);
        ck_assert_int_eq(grpc_reader_feed(&r, NULL, 0, never_called, NULL), -EMSGSIZE);
        grpc_reader_done(&r);
        ck_assert_uint_eq(r.max, 16);
        ck_assert(grpc_reader_idle(&r));

        /* the whole oversized frame in one chunk: still no callback, no allocation */
        ck_assert_int_eq(grpc_reader_feed(&r, stream, n, never_called, NULL), -EMSGSIZE);
        ck_assert_ptr_null(r.buf);
        grpc_reader_done(&r);

        /* the reader is reusable after done() */
        n = frame(stream, "ok", 2);
        ck_assert_int_eq(grpc_reader_feed(&r, stream, n, collect, &c), 0);
        ck_assert_uint_eq(c.n, 1);
        grpc_reader_done(&r);
        collector_done(&c);
}
END_TEST

START_TEST(test_limit_default) {
        uint8_t prefix[GRPC_PREFIX_SIZE];
        _cleanup_free_ uint8_t *big = malloc(GRPC_MESSAGE_MAX);
        GrpcReader r = {};
        Collector c = {};

        ck_assert_ptr_nonnull(big);
        memset(big, 0x5A, GRPC_MESSAGE_MAX);

        grpc_prefix_write(prefix, GRPC_MESSAGE_MAX + 1);
        ck_assert_int_eq(grpc_reader_feed(&r, prefix, sizeof(prefix), never_called, NULL), -EMSGSIZE);
        ck_assert_ptr_null(r.buf);
        grpc_reader_done(&r);

        grpc_prefix_write(prefix, UINT32_MAX);
        ck_assert_int_eq(grpc_reader_feed(&r, prefix, sizeof(prefix), never_called, NULL), -EMSGSIZE);
        grpc_reader_done(&r);

        /* exactly 4 MiB is accepted: once whole (zero copy), once split */
        grpc_prefix_write(prefix, GRPC_MESSAGE_MAX);
        ck_assert_int_eq(grpc_reader_feed(&r, prefix, sizeof(prefix), collect, &c), 0);
        ck_assert_int_eq(grpc_reader_feed(&r, big, GRPC_MESSAGE_MAX, collect, &c), 0);
        ck_assert_uint_eq(c.n, 1);
        ck_assert_ptr_eq(c.ptr[0], big);
        ck_assert_uint_eq(c.len[0], GRPC_MESSAGE_MAX);

        ck_assert_int_eq(grpc_reader_feed(&r, prefix, sizeof(prefix), collect, &c), 0);
        ck_assert_int_eq(grpc_reader_feed(&r, big, 1000, collect, &c), 0);
        ck_assert_ptr_nonnull(r.buf);
        ck_assert_int_eq(grpc_reader_feed(&r, big + 1000, GRPC_MESSAGE_MAX - 1000, collect, &c), 0);
        ck_assert_uint_eq(c.n, 2);
        ck_assert_uint_eq(c.len[1], GRPC_MESSAGE_MAX);
        ck_assert_mem_eq(c.copy[1], big, GRPC_MESSAGE_MAX);
        ck_assert(grpc_reader_idle(&r));
        grpc_reader_done(&r);
        collector_done(&c);
}
END_TEST

START_TEST(test_flags) {
        GrpcReader r = {};

        ck_assert_int_eq(grpc_reader_feed(&r, U8("\x01\x00\x00\x00\x01x"), 6, never_called, NULL),
                         -EPROTONOSUPPORT);
        ck_assert(!grpc_reader_idle(&r));
        ck_assert_int_eq(grpc_reader_feed(&r, U8("\x00\x00\x00\x00\x00"), 5, never_called, NULL),
                         -EPROTONOSUPPORT);
        grpc_reader_done(&r);

        /* the flag is checked before the length */
        ck_assert_int_eq(grpc_reader_feed(&r, U8("\x01\xff\xff\xff\xff"), 5, never_called, NULL),
                         -EPROTONOSUPPORT);
        grpc_reader_done(&r);

        static const uint8_t bad[] = { 0x02, 0x03, 0x80, 0xff };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                uint8_t p[GRPC_PREFIX_SIZE] = { bad[i], 0, 0, 0, 0 };

                ck_assert_int_eq(grpc_reader_feed(&r, p, 1, never_called, NULL), 0);
                ck_assert_int_eq(grpc_reader_feed(&r, p + 1, 4, never_called, NULL), -EBADMSG);
                grpc_reader_done(&r);
        }

        /* a bad flag after good messages in the same chunk: the good ones are delivered first */
        {
                Collector c = {};
                uint8_t s[32];
                size_t n = frame(s, "ab", 2);

                memcpy(s + n, "\x02\x00\x00\x00\x00", 5);
                ck_assert_int_eq(grpc_reader_feed(&r, s, n + 5, collect, &c), -EBADMSG);
                ck_assert_uint_eq(c.n, 1);
                grpc_reader_done(&r);
                collector_done(&c);
        }
}
END_TEST

START_TEST(test_callback_error) {
        uint8_t stream[64];
        size_t n = 0;
        GrpcReader r = {};
        Collector c = { .fail_at = 2, .fail_r = -ECANCELED };

        n += frame(stream + n, "one", 3);
        n += frame(stream + n, "two", 3);
        n += frame(stream + n, "three", 5);

        ck_assert_int_eq(grpc_reader_feed(&r, stream, n, collect, &c), -ECANCELED);
        ck_assert_uint_eq(c.n, 2);
        ck_assert(!grpc_reader_idle(&r));
        ck_assert_int_eq(grpc_reader_feed(&r, stream, n, never_called, NULL), -ECANCELED);
        grpc_reader_done(&r);
        collector_done(&c);

        /* from a reassembled message: the buffer is released (valgrind checks) */
        c = (Collector) { .fail_at = 1, .fail_r = -EIO };
        ck_assert_int_eq(grpc_reader_feed(&r, stream, 6, collect, &c), 0);
        ck_assert_ptr_nonnull(r.buf);
        ck_assert_int_eq(grpc_reader_feed(&r, stream + 6, n - 6, collect, &c), -EIO);
        ck_assert_uint_eq(c.n, 1);
        ck_assert_mem_eq(c.copy[0], "one", 3);
        ck_assert_ptr_null(r.buf);
        grpc_reader_done(&r);
        collector_done(&c);

        /* a positive return continues */
        c = (Collector) { .fail_at = 1, .fail_r = 1 };
        ck_assert_int_eq(grpc_reader_feed(&r, stream, n, collect, &c), 0);
        ck_assert_uint_eq(c.n, 3);
        grpc_reader_done(&r);
        collector_done(&c);
}
END_TEST

START_TEST(test_done_frees_pending) {
        uint8_t stream[32];
        size_t n = frame(stream, "0123456789", 10);
        GrpcReader r = { .max = 100 };

        ck_assert_int_eq(grpc_reader_feed(&r, stream, n - 3, never_called, NULL), 0);
        ck_assert_ptr_nonnull(r.buf);
        ck_assert(!grpc_reader_idle(&r));
        grpc_reader_done(&r);
        ck_assert_ptr_null(r.buf);
        ck_assert_uint_eq(r.prefix_len, 0);
        ck_assert_uint_eq(r.buf_len, 0);
        ck_assert_uint_eq(r.max, 100);
        ck_assert(grpc_reader_idle(&r));
        grpc_reader_done(&r); /* twice is fine */
        grpc_reader_done(NULL);

        /* partial prefix only */
        ck_assert_int_eq(grpc_reader_feed(&r, stream, 2, never_called, NULL), 0);
        ck_assert(!grpc_reader_idle(&r));
        grpc_reader_done(&r);
        ck_assert(grpc_reader_idle(&r));
}
END_TEST

START_TEST(test_enomem) {
        const char *f = getenv("CK_FORK");
        struct rlimit rl = { .rlim_cur = 256 * MIB, .rlim_max = RLIM_INFINITY };
        uint8_t stream[GRPC_PREFIX_SIZE + 1];
        GrpcReader r = { .max = UINT32_MAX };

        /* Only when forked (a limit on the whole runner, or valgrind, would be a bad idea), and not
         * under ASan, whose allocator aborts instead of returning NULL once its mmap fails. */
        if (f && streq(f, "no"))
                return;
#if defined(__SANITIZE_ADDRESS__)
        return;
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
        return;
#  endif
#endif
        ck_assert_int_eq(getrlimit(RLIMIT_AS, &rl) >= 0, 1);
        rl.rlim_cur = 256 * MIB;
        ck_assert_int_eq(setrlimit(RLIMIT_AS, &rl), 0);

        grpc_prefix_write(stream, UINT32_MAX);
        stream[GRPC_PREFIX_SIZE] = 'x';
        ck_assert_int_eq(grpc_reader_feed(&r, stream, sizeof(stream), never_called, NULL), -ENOMEM);
        ck_assert_ptr_null(r.buf);
        ck_assert(!grpc_reader_idle(&r));
        ck_assert_int_eq(grpc_reader_feed(&r, stream, sizeof(stream), never_called, NULL), -ENOMEM);
        grpc_reader_done(&r);
        ck_assert(grpc_reader_idle(&r));
}
END_TEST

static Suite *grpc_suite(void) {
        Suite *s = suite_create("grpc");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_status_strings);
        tcase_add_test(tc, test_prefix_write);
        tcase_add_test(tc, test_content_type);
        tcase_add_test(tc, test_message_encode);
        tcase_add_test(tc, test_single_zero_copy);
        tcase_add_test(tc, test_many_in_one_chunk);
        tcase_add_test(tc, test_split_everywhere);
        tcase_add_test(tc, test_byte_by_byte);
        tcase_add_test(tc, test_stream_split_everywhere);
        tcase_add_test(tc, test_prefix_alone_does_not_allocate);
        tcase_add_test(tc, test_zero_length);
        tcase_add_test(tc, test_limit);
        tcase_add_test(tc, test_limit_default);
        tcase_add_test(tc, test_flags);
        tcase_add_test(tc, test_callback_error);
        tcase_add_test(tc, test_done_frees_pending);
        tcase_add_test(tc, test_enomem);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(grpc_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
