/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connect.h"
#include "macro.h"

#define KUBE_REQUEST "CONNECT 127.0.0.1:10250 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

/* Parse s (length given explicitly, so embedded NULs work) and check that *ret and the header
 * length are left untouched by every failure other than -EOPNOTSUPP. */
static int parse_n(const char *s, size_t n, ConnectRequest *req, size_t *hl) {
        ConnectRequest sentinel;
        size_t hl_sentinel = (size_t) 0xdeadbeef;
        int r;

        memset(&sentinel, 0xaa, sizeof(sentinel));
        memcpy(req, &sentinel, sizeof(sentinel));
        *hl = hl_sentinel;

        r = connect_parse(s, n, req, hl);
        if (r < 0 && r != -EOPNOTSUPP) {
                ck_assert_mem_eq(req, &sentinel, sizeof(sentinel));
                ck_assert_uint_eq(*hl, hl_sentinel);
        }
        return r;
}

static int parse(const char *s, ConnectRequest *req, size_t *hl) {
        return parse_n(s, strlen(s), req, hl);
}

static void assert_connect(const char *s, const char *host, uint16_t port, const char *authority) {
        ConnectRequest req;
        size_t hl;

        ck_assert_int_eq(parse(s, &req, &hl), 0);
        ck_assert_uint_eq(hl, strlen(s));
        ck_assert_str_eq(req.host, host);
        ck_assert_uint_eq(req.port, port);
        ck_assert_str_eq(req.authority, authority);
        ck_assert(!req.has_body);
}

/* A request of exactly total bytes: request line, one padding header, and the blank line unless
 * !terminated (then the padding simply runs to the end). */
static char *make_padded(size_t total, bool terminated) {
        static const char head[] = "CONNECT 10.0.0.1:10250 HTTP/1.1\r\nX-Pad: ";
        static const char tail[] = "\r\n\r\n";
        size_t tail_len = terminated ? STRLEN(tail) : 0;
        char *s;

        ck_assert_uint_gt(total, STRLEN(head) + tail_len);
        s = malloc(total + 1);
        ck_assert_ptr_nonnull(s);
        memcpy(s, head, STRLEN(head));
        memset(s + STRLEN(head), 'a', total - STRLEN(head) - tail_len);
        memcpy(s + total - tail_len, tail, tail_len);
        s[total] = 0;
        return s;
}

START_TEST(test_kube_apiserver_request) {
        ConnectRequest req;
        size_t hl;

        ck_assert_int_eq(parse(KUBE_REQUEST, &req, &hl), 0);
        ck_assert_uint_eq(hl, STRLEN(KUBE_REQUEST));
        ck_assert_uint_eq(hl, 53);
        ck_assert_str_eq(req.host, "127.0.0.1");
        ck_assert_uint_eq(req.port, 10250);
        ck_assert_str_eq(req.authority, "127.0.0.1:10250");
        ck_assert(!req.has_body);
}
END_TEST

START_TEST(test_ipv6) {
        assert_connect("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", "::1", 443, "[::1]:443");
        assert_connect("CONNECT [2001:db8::a:1]:10250 HTTP/1.1\r\n\r\n", "2001:db8::a:1", 10250,
                       "[2001:db8::a:1]:10250");
        assert_connect("CONNECT [::ffff:10.0.0.1]:65535 HTTP/1.1\r\n\r\n", "::ffff:10.0.0.1", 65535,
                       "[::ffff:10.0.0.1]:65535");
}
END_TEST

START_TEST(test_hostname) {
        assert_connect("CONNECT svc.ns.svc:443 HTTP/1.1\r\nHost: svc.ns.svc:443\r\n\r\n", "svc.ns.svc", 443,
                       "svc.ns.svc:443");
        assert_connect("CONNECT Node-1.Example_x~y.:1 HTTP/1.1\r\n\r\n", "Node-1.Example_x~y.", 1,
                       "Node-1.Example_x~y.:1");
}
END_TEST

START_TEST(test_variants) {
        /* Bare LF line endings, HTTP/1.0, no Host header, Host header pointing elsewhere. */
        assert_connect("CONNECT 10.1.2.3:22 HTTP/1.1\n\n", "10.1.2.3", 22, "10.1.2.3:22");
        assert_connect("CONNECT 10.1.2.3:22 HTTP/1.0\r\n\r\n", "10.1.2.3", 22, "10.1.2.3:22");
        assert_connect("CONNECT 10.1.2.3:22 HTTP/1.1\r\nHost: evil.example:80\n"
                       "User-Agent: x\t y\r\nX-Empty:\r\n\n",
                       "10.1.2.3", 22, "10.1.2.3:22");
        /* Leading zeros are normalized in the authority. */
        assert_connect("CONNECT 10.0.0.1:00080 HTTP/1.1\r\n\r\n", "10.0.0.1", 80, "10.0.0.1:80");
        /* CONNECT never has a body, whatever it announces. */
        assert_connect("CONNECT 10.0.0.1:80 HTTP/1.1\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
                       "10.0.0.1", 80, "10.0.0.1:80");
}
END_TEST

START_TEST(test_host_length) {
        char host[257], s[400];

        memset(host, 'h', 255);
        host[255] = 0;
        ck_assert_int_lt(snprintf(s, sizeof(s), "CONNECT %s:65535 HTTP/1.1\r\n\r\n", host), (int) sizeof(s));
        {
                ConnectRequest req;
                size_t hl;

                ck_assert_int_eq(parse(s, &req, &hl), 0);
                ck_assert_str_eq(req.host, host);
                ck_assert_uint_eq(strlen(req.authority), 255 + 6);
                ck_assert_int_eq(strncmp(req.authority + 255, ":65535", 7), 0);
        }

        memset(host, 'h', 256);
        host[256] = 0;
        ck_assert_int_lt(snprintf(s, sizeof(s), "CONNECT %s:65535 HTTP/1.1\r\n\r\n", host), (int) sizeof(s));
        {
                ConnectRequest req;
                size_t hl;

                ck_assert_int_eq(parse(s, &req, &hl), -EBADMSG);
        }
}
END_TEST

START_TEST(test_pipelined) {
        static const char s[] = KUBE_REQUEST "\x16\x03\x01 tls hello";
        ConnectRequest req;
        size_t hl;

        ck_assert_int_eq(parse_n(s, STRLEN(s), &req, &hl), 0);
        ck_assert_uint_eq(hl, STRLEN(KUBE_REQUEST));
        ck_assert_str_eq(req.authority, "127.0.0.1:10250");

        /* A second request pipelined after the first is payload too. */
        ck_assert_int_eq(parse(KUBE_REQUEST KUBE_REQUEST, &req, &hl), 0);
        ck_assert_uint_eq(hl, STRLEN(KUBE_REQUEST));
}
END_TEST

START_TEST(test_byte_at_a_time) {
        static const char *const requests[] = {
                KUBE_REQUEST,
                "CONNECT [::1]:443 HTTP/1.1\n\n",
                "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        };

        for (size_t k = 0; k < ELEMENTSOF(requests); k++) {
                const char *s = requests[k];
                size_t len = strlen(s);
                int expected = k == 2 ? -EOPNOTSUPP : 0;
                ConnectRequest req;
                size_t hl;

                for (size_t n = 0; n < len; n++)
                        ck_assert_int_eq(parse_n(s, n, &req, &hl), -EAGAIN);
                ck_assert_int_eq(parse_n(s, len, &req, &hl), expected);
                ck_assert_uint_eq(hl, len);
        }
}
END_TEST

START_TEST(test_empty_and_null_input) {
        ConnectRequest req;
        size_t hl;

        ck_assert_int_eq(parse_n(NULL, 0, &req, &hl), -EAGAIN);
        ck_assert_int_eq(parse_n("", 0, &req, &hl), -EAGAIN);
}
END_TEST

#define BAD(name, request) { name, request, STRLEN(request) }
static const struct {
        const char *name;
        const char *request;
        size_t len;
} bad_requests[] = {
        /* authority */
        BAD("missing port", "CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n"),
        BAD("empty port", "CONNECT 127.0.0.1: HTTP/1.1\r\n\r\n"),
        BAD("port 0", "CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n"),
        BAD("port 00000", "CONNECT 127.0.0.1:00000 HTTP/1.1\r\n\r\n"),
        BAD("port 65536", "CONNECT 127.0.0.1:65536 HTTP/1.1\r\n\r\n"),
        BAD("port 99999", "CONNECT 127.0.0.1:99999 HTTP/1.1\r\n\r\n"),
        BAD("port overflow", "CONNECT 127.0.0.1:184467440737095516170 HTTP/1.1\r\n\r\n"),
        BAD("port non-numeric", "CONNECT 127.0.0.1:https HTTP/1.1\r\n\r\n"),
        BAD("port 4a3", "CONNECT 127.0.0.1:4a3 HTTP/1.1\r\n\r\n"),
        BAD("port -1", "CONNECT 127.0.0.1:-1 HTTP/1.1\r\n\r\n"),
        BAD("port +80", "CONNECT 127.0.0.1:+80 HTTP/1.1\r\n\r\n"),
        BAD("v6 without ]", "CONNECT [::1 HTTP/1.1\r\n\r\n"),
        BAD("v6 without ] with port", "CONNECT [::1:443 HTTP/1.1\r\n\r\n"),
        BAD("v6 no port", "CONNECT [::1] HTTP/1.1\r\n\r\n"),
        BAD("v6 empty port", "CONNECT [::1]: HTTP/1.1\r\n\r\n"),
        BAD("v6 no colon", "CONNECT [::1]443 HTTP/1.1\r\n\r\n"),
        BAD("v6 empty", "CONNECT []:443 HTTP/1.1\r\n\r\n"),
        BAD("v6 invalid", "CONNECT [zz::1]:443 HTTP/1.1\r\n\r\n"),
        BAD("v4 in brackets", "CONNECT [10.0.0.1]:443 HTTP/1.1\r\n\r\n"),
        BAD("v6 zone", "CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\n\r\n"),
        BAD("v6 unbracketed", "CONNECT ::1:443 HTTP/1.1\r\n\r\n"),
        BAD("empty host", "CONNECT :443 HTTP/1.1\r\n\r\n"),
        BAD("only colon", "CONNECT : HTTP/1.1\r\n\r\n"),
        BAD("absolute-form", "CONNECT http://127.0.0.1:80/ HTTP/1.1\r\n\r\n"),
        BAD("absolute-form no path", "CONNECT http://127.0.0.1:80 HTTP/1.1\r\n\r\n"),
        BAD("origin-form", "CONNECT / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"),
        BAD("origin-form with port", "CONNECT /x:80 HTTP/1.1\r\n\r\n"),
        BAD("userinfo", "CONNECT user@127.0.0.1:80 HTTP/1.1\r\n\r\n"),
        BAD("percent in host", "CONNECT a%2eb:80 HTTP/1.1\r\n\r\n"),
        BAD("query", "CONNECT a:80?x HTTP/1.1\r\n\r\n"),
        BAD("non-ascii host", "CONNECT h\xc3\xa9:80 HTTP/1.1\r\n\r\n"),
        BAD("empty target, Host set", "CONNECT  HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"),
        /* control bytes and spaces */
        BAD("0x01 in target", "CONNECT 127.0.0.1:80\x01 HTTP/1.1\r\n\r\n"),
        BAD("0x7f in target", "CONNECT 127.0.0.1:8\x7f HTTP/1.1\r\n\r\n"),
        BAD("NUL in target", "CONNECT 127.0.0.1:80\0 HTTP/1.1\r\n\r\n"),
        BAD("tab in target", "CONNECT 127.0.0.1:\t80 HTTP/1.1\r\n\r\n"),
        BAD("tab as separator", "CONNECT\t127.0.0.1:80 HTTP/1.1\r\n\r\n"),
        BAD("space in target", "CONNECT 127.0.0.1 :80 HTTP/1.1\r\n\r\n"),
        BAD("space in host", "CONNECT a b:80 HTTP/1.1\r\n\r\n"),
        BAD("double space", "CONNECT  127.0.0.1:80 HTTP/1.1\r\n\r\n"),
        BAD("double space before ver", "CONNECT 127.0.0.1:80  HTTP/1.1\r\n\r\n"),
        BAD("trailing space", "CONNECT 127.0.0.1:80 HTTP/1.1 \r\n\r\n"),
        BAD("leading space", " CONNECT 127.0.0.1:80 HTTP/1.1\r\n\r\n"),
        BAD("bare CR in line", "CONNECT 127.0.0.1:80 HTTP/1.1\rX\r\n\r\n"),
        BAD("CRCRLF", "CONNECT 127.0.0.1:80 HTTP/1.1\r\r\n\r\n"),
        /* request line shape and version */
        BAD("no version", "CONNECT 127.0.0.1:80\r\n\r\n"),
        BAD("method only", "CONNECT\r\n\r\n"),
        BAD("HTTP/2.0", "CONNECT 127.0.0.1:80 HTTP/2.0\r\n\r\n"),
        BAD("HTTP/1.2", "CONNECT 127.0.0.1:80 HTTP/1.2\r\n\r\n"),
        BAD("HTTP/0.9", "CONNECT 127.0.0.1:80 HTTP/0.9\r\n\r\n"),
        BAD("lowercase version", "CONNECT 127.0.0.1:80 http/1.1\r\n\r\n"),
        BAD("version suffix", "CONNECT 127.0.0.1:80 HTTP/1.10\r\n\r\n"),
        BAD("short version", "CONNECT 127.0.0.1:80 HTTP/1\r\n\r\n"),
        BAD("empty request line", "\r\nCONNECT 127.0.0.1:80 HTTP/1.1\r\n\r\n"),
        BAD("empty request line LF", "\n\n"),
        BAD("bad method char", "CON(NECT 127.0.0.1:80 HTTP/1.1\r\n\r\n"),
        BAD("non-ascii method", "CONN\xc3\x89" "CT 127.0.0.1:80 HTTP/1.1\r\n\r\n"),
        BAD("TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n"),
        /* headers */
        BAD("header without colon", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n"),
        BAD("header empty name", "CONNECT 127.0.0.1:80 HTTP/1.1\r\n: x\r\n\r\n"),
        BAD("space before colon", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost : x\r\n\r\n"),
        BAD("space in name", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHo st: x\r\n\r\n"),
        BAD("obs-fold SP", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: a\r\n b\r\n\r\n"),
        BAD("obs-fold HT", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: a\r\n\tb\r\n\r\n"),
        BAD("whitespace-only line", "CONNECT 127.0.0.1:80 HTTP/1.1\r\n \r\n\r\n"),
        BAD("0x01 in value", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nX: a\x01\r\n\r\n"),
        BAD("0x7f in value", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nX: a\x7f\r\n\r\n"),
        BAD("NUL in value", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nX: a\0b\r\n\r\n"),
        BAD("bare CR in value", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nX: a\rb\r\n\r\n"),
        BAD("0x7f in name", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nX\x7f: a\r\n\r\n"),
        BAD("CL non-numeric", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nContent-Length: abc\r\n\r\n"),
        BAD("CL empty", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nContent-Length: \r\n\r\n"),
        BAD("CL negative", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
        BAD("CL list", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n"),
        BAD("CL overflow", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        BAD("CL conflicting", "GET / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\n"),
        BAD("GET with CTL in target", "GET /\x01 HTTP/1.1\r\n\r\n"),
        BAD("GET with bad version", "GET / HTTP/3\r\n\r\n"),
        BAD("GET with bad header", "GET / HTTP/1.1\r\nfoo\r\n\r\n"),
};

START_TEST(test_bad_request) {
        const char *s = bad_requests[_i].request;
        size_t n = bad_requests[_i].len;
        ConnectRequest req;
        size_t hl;

        ck_assert_msg(parse_n(s, n, &req, &hl) == -EBADMSG, "'%s' not refused with -EBADMSG",
                      bad_requests[_i].name);
}
END_TEST

START_TEST(test_bad_request_early) {
        /* A complete malformed line is refused at once, without waiting for the blank line. */
        static const char *const partial[] = {
                "CONNECT 127.0.0.1 HTTP/1.1\r\n",
                "CONNECT [::1 HTTP/1.1\n",
                "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost 127.0.0.1\r\nX-More: ",
                "\x16\x03\x01\x02\x05\n",
        };
        ConnectRequest req;
        size_t hl;

        for (size_t k = 0; k < ELEMENTSOF(partial); k++)
                ck_assert_int_eq(parse(partial[k], &req, &hl), -EBADMSG);

        /* An incomplete line is not judged yet. */
        ck_assert_int_eq(parse("CONNECT 127.0.0.1 HTTP/1.1", &req, &hl), -EAGAIN);
        ck_assert_int_eq(parse("\x16\x03\x01", &req, &hl), -EAGAIN);
}
END_TEST

START_TEST(test_not_connect) {
        static const char post[] = "POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        ConnectRequest req;
        size_t hl;

        ck_assert_int_eq(parse("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", &req, &hl), -EOPNOTSUPP);
        ck_assert_uint_eq(hl, 35);
        ck_assert(!req.has_body);
        ck_assert_str_eq(req.host, "");
        ck_assert_str_eq(req.authority, "");
        ck_assert_uint_eq(req.port, 0);

        ck_assert_int_eq(parse(post, &req, &hl), -EOPNOTSUPP);
        ck_assert_uint_eq(hl, STRLEN(post) - 5);
        ck_assert(req.has_body);

        ck_assert_int_eq(parse("POST / HTTP/1.1\r\ncontent-length:   0  \r\n\r\n", &req, &hl), -EOPNOTSUPP);
        ck_assert(!req.has_body);

        ck_assert_int_eq(parse("POST / HTTP/1.1\r\nCONTENT-LENGTH: 7\r\nContent-Length: 7\r\n\r\n", &req, &hl),
                         -EOPNOTSUPP);
        ck_assert(req.has_body);

        ck_assert_int_eq(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", &req, &hl),
                         -EOPNOTSUPP);
        ck_assert_uint_eq(hl, 47);
        ck_assert(req.has_body);

        ck_assert_int_eq(parse("PUT /x HTTP/1.0\ntransfer-encoding: gzip\n\n", &req, &hl), -EOPNOTSUPP);
        ck_assert(req.has_body);

        /* The method is case-sensitive. */
        ck_assert_int_eq(parse("connect 127.0.0.1:80 HTTP/1.1\r\n\r\n", &req, &hl), -EOPNOTSUPP);
        ck_assert_uint_eq(hl, 33);
        ck_assert(!req.has_body);
        ck_assert_int_eq(parse("Connect 127.0.0.1:80 HTTP/1.1\r\n\r\n", &req, &hl), -EOPNOTSUPP);
        ck_assert_int_eq(parse("CONNECTX 127.0.0.1:80 HTTP/1.1\r\n\r\n", &req, &hl), -EOPNOTSUPP);

        /* Targets of other methods are not authorities; they are only checked for CTLs. */
        ck_assert_int_eq(parse("OPTIONS * HTTP/1.1\r\n\r\n", &req, &hl), -EOPNOTSUPP);
        ck_assert_int_eq(parse("GET http://a/b?c HTTP/1.1\r\n\r\n", &req, &hl), -EOPNOTSUPP);
}
END_TEST

START_TEST(test_size_limits) {
        _cleanup_free_ char *s8191 = make_padded(CONNECT_HEADER_MAX - 1, false);
        _cleanup_free_ char *s8192 = make_padded(CONNECT_HEADER_MAX, false);
        _cleanup_free_ char *s10000 = make_padded(10000, false);
        _cleanup_free_ char *ok8192 = make_padded(CONNECT_HEADER_MAX, true);
        _cleanup_free_ char *big8193 = make_padded(CONNECT_HEADER_MAX + 1, true);
        _cleanup_free_ char *ok_payload = NULL;
        ConnectRequest req;
        size_t hl;

        ck_assert_int_eq(parse_n(s8191, CONNECT_HEADER_MAX - 1, &req, &hl), -EAGAIN);
        ck_assert_int_eq(parse_n(s8192, CONNECT_HEADER_MAX, &req, &hl), -E2BIG);
        ck_assert_int_eq(parse_n(s10000, 10000, &req, &hl), -E2BIG);

        ck_assert_int_eq(parse_n(ok8192, CONNECT_HEADER_MAX, &req, &hl), 0);
        ck_assert_uint_eq(hl, CONNECT_HEADER_MAX);
        ck_assert_str_eq(req.authority, "10.0.0.1:10250");
        /* One byte short of the final LF. */
        ck_assert_int_eq(parse_n(ok8192, CONNECT_HEADER_MAX - 1, &req, &hl), -EAGAIN);

        /* The complete 8192-byte header followed by payload. */
        ok_payload = malloc(CONNECT_HEADER_MAX + 100);
        ck_assert_ptr_nonnull(ok_payload);
        memcpy(ok_payload, ok8192, CONNECT_HEADER_MAX);
        memset(ok_payload + CONNECT_HEADER_MAX, '\n', 100);
        ck_assert_int_eq(parse_n(ok_payload, CONNECT_HEADER_MAX + 100, &req, &hl), 0);
        ck_assert_uint_eq(hl, CONNECT_HEADER_MAX);

        /* Complete, but its final LF is byte 8193. */
        ck_assert_int_eq(parse_n(big8193, CONNECT_HEADER_MAX + 1, &req, &hl), -E2BIG);
        ck_assert_int_eq(parse_n(big8193, CONNECT_HEADER_MAX, &req, &hl), -E2BIG);
        ck_assert_int_eq(parse_n(big8193, CONNECT_HEADER_MAX - 1, &req, &hl), -EAGAIN);
}
END_TEST

START_TEST(test_response_constants) {
        ck_assert_str_eq(CONNECT_RESPONSE_ESTABLISHED, "HTTP/1.1 200 Connection Established\r\n\r\n");
        ck_assert_uint_eq(strlen(CONNECT_RESPONSE_ESTABLISHED), 39);
        ck_assert_str_eq(CONNECT_RESPONSE_NO_AGENT,
                         "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"
                         "currently no tunnels available: No agent available");
        ck_assert_uint_eq(strlen(CONNECT_RESPONSE_NO_AGENT), 114);
        ck_assert_str_eq(CONNECT_RESPONSE_BAD_REQUEST,
                         "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         "Connection: close\r\n\r\n400 Bad Request");
        ck_assert_uint_eq(strlen(CONNECT_RESPONSE_BAD_REQUEST), 103);
        ck_assert_str_eq(CONNECT_RESPONSE_TOO_LARGE,
                         "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; "
                         "charset=utf-8\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large");
        ck_assert_uint_eq(strlen(CONNECT_RESPONSE_TOO_LARGE), 143);
        ck_assert_str_eq(CONNECT_RESPONSE_DIAL_TIMEOUT,
                         "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                         "Backend dial timeout: timed out waiting for backend dial\r\n");
        ck_assert_uint_eq(strlen(CONNECT_RESPONSE_DIAL_TIMEOUT), 131);
}
END_TEST

#define R405(date)                                            \
        "HTTP/1.1 405 Method Not Allowed\r\n"                 \
        "Content-Type: text/plain; charset=utf-8\r\n"         \
        "X-Content-Type-Options: nosniff\r\n"                 \
        "Date: " date "\r\n"                                  \
        "Content-Length: 45\r\n"                              \
        "\r\n"                                                \
        "this proxy only supports CONNECT passthrough\n"

static void assert_405(time_t t, const char *expected) {
        char buf[512];
        size_t len;

        ck_assert_int_eq(connect_format_405(t, buf, sizeof(buf), &len), 0);
        ck_assert_str_eq(buf, expected);
        ck_assert_uint_eq(len, strlen(expected));
}

START_TEST(test_format_405) {
        static const char body[] = "this proxy only supports CONNECT passthrough\n";
        char buf[512];
        size_t len, len2 = 77;

        ck_assert_uint_eq(STRLEN(body), 45);
        assert_405(0, R405("Thu, 01 Jan 1970 00:00:00 GMT"));
        assert_405(-1, R405("Wed, 31 Dec 1969 23:59:59 GMT"));
        assert_405(951782400, R405("Tue, 29 Feb 2000 00:00:00 GMT"));
        assert_405(1700000000, R405("Tue, 14 Nov 2023 22:13:20 GMT"));
        assert_405(253402300799, R405("Fri, 31 Dec 9999 23:59:59 GMT"));
        ck_assert_uint_eq(STRLEN(R405("Thu, 01 Jan 1970 00:00:00 GMT")), 211);

        ck_assert_int_eq(connect_format_405(253402300800, buf, sizeof(buf), &len2), -ERANGE);
        ck_assert_uint_eq(len2, 77);

        /* Exact fit needs room for the NUL; a failure leaves buf and *ret_len alone. */
        ck_assert_int_eq(connect_format_405(0, buf, 212, &len), 0);
        ck_assert_uint_eq(len, 211);
        memset(buf, 'Z', sizeof(buf));
        ck_assert_int_eq(connect_format_405(0, buf, 211, &len2), -ENOBUFS);
        ck_assert_uint_eq(len2, 77);
        ck_assert_int_eq(buf[0], 'Z');
        ck_assert_int_eq(connect_format_405(0, NULL, 0, &len2), -ENOBUFS);
}
END_TEST

START_TEST(test_status_mapping) {
        static const struct {
                const char *err;
                int status;
        } table[] = {
                { "dial tcp 10.0.0.1:10250: i/o timeout",                        504 },
                { "context deadline exceeded",                                   504 },
                { "timeout",                                                     504 },
                { "dial tcp 10.0.0.1:10250: connect: too many open files",       503 },
                { "dial tcp 127.0.0.1:1: connect: connection refused",           502 },
                { "read: connection reset by peer",                              502 },
                { "write: broken pipe",                                          502 },
                { "connect: network is unreachable",                             502 },
                { "connect: no route to host",                                   502 },
                { "host is unreachable",                                         502 },
                { "network is down",                                             502 },
                { "dial tcp: lookup nope.invalid: no such host",                 502 },
                { "temporary failure in name resolution",                        502 },
                { "tls: bad record MAC",                                         502 },
                { "ssl error",                                                   502 },
                { "x509: certificate signed by unknown authority",               502 },
                { "something else entirely",                                     502 },
                { "",                                                            502 },
                /* case-insensitive */
                { "I/O TIMEOUT",                                                 504 },
                { "Context Deadline Exceeded",                                   504 },
                { "TimeOut",                                                     504 },
                { "Too Many Open Files",                                         503 },
                { "CONNECTION REFUSED",                                          502 },
                /* first match wins */
                { "tls handshake timeout",                                       504 },
                { "x509: certificate has expired: i/o timeout",                  504 },
                { "connection refused: too many open files",                     503 },
                { "too many open files after timeout",                           504 },
                { "ssl: too many open files",                                    503 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                ck_assert_msg(connect_status_for_dial_error(table[i].err) == table[i].status,
                              "'%s' → %d, expected %d", table[i].err,
                              connect_status_for_dial_error(table[i].err), table[i].status);

        ck_assert_int_eq(connect_status_for_dial_error(NULL), 502);
}
END_TEST

START_TEST(test_format_dial_error) {
        static const char refused[] =
                "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                "dial tcp 127.0.0.1:1: connect: connection refused";
        char buf[512];
        size_t len, len2 = 77;

        ck_assert_int_eq(connect_format_dial_error("dial tcp 127.0.0.1:1: connect: connection refused",
                                                   buf, sizeof(buf), &len), 0);
        ck_assert_str_eq(buf, refused);
        ck_assert_uint_eq(len, STRLEN(refused));

        ck_assert_int_eq(connect_format_dial_error("dial tcp 10.0.0.1:10250: i/o timeout", buf, sizeof(buf), &len),
                         0);
        ck_assert_str_eq(buf, "HTTP/1.1 504 Gateway Timeout\r\nConnection: close\r\n"
                              "Content-Type: text/plain; charset=utf-8\r\n\r\ndial tcp 10.0.0.1:10250: i/o timeout");

        ck_assert_int_eq(connect_format_dial_error("socket: too many open files", buf, sizeof(buf), &len), 0);
        ck_assert_str_eq(buf, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                              "Content-Type: text/plain; charset=utf-8\r\n\r\nsocket: too many open files");

        ck_assert_int_eq(connect_format_dial_error("", buf, sizeof(buf), &len), 0);
        ck_assert_str_eq(buf, "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n"
                              "Content-Type: text/plain; charset=utf-8\r\n\r\n");

        /* Boundary: the NUL must fit too. */
        ck_assert_int_eq(connect_format_dial_error("dial tcp 127.0.0.1:1: connect: connection refused",
                                                   buf, STRLEN(refused) + 1, &len), 0);
        ck_assert_uint_eq(len, STRLEN(refused));
        memset(buf, 'Z', sizeof(buf));
        ck_assert_int_eq(connect_format_dial_error("dial tcp 127.0.0.1:1: connect: connection refused",
                                                   buf, STRLEN(refused), &len2), -ENOBUFS);
        ck_assert_uint_eq(len2, 77);
        ck_assert_int_eq(buf[0], 'Z');
}
END_TEST

START_TEST(test_format_502) {
        static const char expected[] =
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                "Failed to tunnel dial request: rpc error: code = Unavailable\r\n";
        char buf[256];
        size_t len, len2 = 77;

        ck_assert_int_eq(connect_format_502("Failed to tunnel dial request: ", "rpc error: code = Unavailable",
                                            buf, sizeof(buf), &len), 0);
        ck_assert_str_eq(buf, expected);
        ck_assert_uint_eq(len, STRLEN(expected));

        ck_assert_int_eq(connect_format_502("Backend context error: ", "context canceled", buf, sizeof(buf), &len), 0);
        ck_assert_str_eq(buf, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                              "Backend context error: context canceled\r\n");
        ck_assert_uint_eq(len, 110);

        ck_assert_int_eq(connect_format_502("Failed to tunnel dial request: ", "rpc error: code = Unavailable",
                                            buf, STRLEN(expected) + 1, &len), 0);
        memset(buf, 'Z', sizeof(buf));
        ck_assert_int_eq(connect_format_502("Failed to tunnel dial request: ", "rpc error: code = Unavailable",
                                            buf, STRLEN(expected), &len2), -ENOBUFS);
        ck_assert_uint_eq(len2, 77);
        ck_assert_int_eq(buf[0], 'Z');
}
END_TEST

START_TEST(test_format_504) {
        static const char expected[] =
                "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                "Failed to tunnel dial request: backend dial timeout\r\n";
        char buf[256];
        size_t len, len2 = 77;

        ck_assert_int_eq(connect_format_504("Failed to tunnel dial request: ", "backend dial timeout",
                                            buf, sizeof(buf), &len), 0);
        ck_assert_str_eq(buf, expected);
        ck_assert_uint_eq(len, STRLEN(expected));
        ck_assert_uint_eq(len, 126);

        ck_assert_int_eq(connect_format_504(NULL, NULL, buf, sizeof(buf), &len), 0);
        ck_assert_str_eq(buf, "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\r\n");

        memset(buf, 'Z', sizeof(buf));
        ck_assert_int_eq(connect_format_504("Failed to tunnel dial request: ", "backend dial timeout",
                                            buf, STRLEN(expected), &len2), -ENOBUFS);
        ck_assert_uint_eq(len2, 77);
        ck_assert_int_eq(buf[0], 'Z');
}
END_TEST

static Suite *connect_suite(void) {
        Suite *s = suite_create("connect");
        TCase *tc;

        tc = tcase_create("parse");
        tcase_add_test(tc, test_kube_apiserver_request);
        tcase_add_test(tc, test_ipv6);
        tcase_add_test(tc, test_hostname);
        tcase_add_test(tc, test_variants);
        tcase_add_test(tc, test_host_length);
        tcase_add_test(tc, test_pipelined);
        tcase_add_test(tc, test_byte_at_a_time);
        tcase_add_test(tc, test_empty_and_null_input);
        tcase_add_loop_test(tc, test_bad_request, 0, (int) ELEMENTSOF(bad_requests));
        tcase_add_test(tc, test_bad_request_early);
        tcase_add_test(tc, test_not_connect);
        tcase_add_test(tc, test_size_limits);
        suite_add_tcase(s, tc);

        tc = tcase_create("responses");
        tcase_add_test(tc, test_response_constants);
        tcase_add_test(tc, test_format_405);
        tcase_add_test(tc, test_status_mapping);
        tcase_add_test(tc, test_format_dial_error);
        tcase_add_test(tc, test_format_502);
        tcase_add_test(tc, test_format_504);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        SRunner *sr = srunner_create(connect_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
