/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "macro.h"

/* Out-of-memory injection: this binary must be linked with
 * -Wl,--wrap=malloc -Wl,--wrap=realloc -Wl,--wrap=calloc. fail_always fails every allocation made
 * through them (libsystemd's and libc's own allocations are not affected). */
void *__real_malloc(size_t size);
void *__real_realloc(void *p, size_t size);
void *__real_calloc(size_t n, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_realloc(void *p, size_t size);
void *__wrap_calloc(size_t n, size_t size);

static volatile bool fail_always;

void *__wrap_malloc(size_t size) {
        return fail_always ? NULL : __real_malloc(size);
}

void *__wrap_realloc(void *p, size_t size) {
        return fail_always ? NULL : __real_realloc(p, size);
}

void *__wrap_calloc(size_t n, size_t size) {
        return fail_always ? NULL : __real_calloc(n, size);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(HttpServer *, http_server_free);

/* ---- http_parse_request ---- */

typedef struct Parsed {
        int r;
        HttpRequest req;
        size_t hl;
        char storage[HTTP_HEADER_MAX];
} Parsed;

static void parse(Parsed *p, const char *s, size_t len) {
        p->hl = SIZE_MAX;
        p->r = http_parse_request(s, len, &p->req, p->storage, sizeof(p->storage), &p->hl);
}

static void parse_str(Parsed *p, const char *s) {
        parse(p, s, strlen(s));
}

/* A failed parse must leave the out-parameters alone. */
static void assert_parse_fails(const char *s, size_t len, int expected) {
        HttpRequest req, sentinel;
        char storage[HTTP_HEADER_MAX];
        size_t hl = 4242;
        int r;

        memset(&sentinel, 0xaa, sizeof(sentinel));
        req = sentinel;
        r = http_parse_request(s, len, &req, storage, sizeof(storage), &hl);
        ck_assert_msg(r == expected, "'%.*s': got %i, want %i", (int) MIN(len, (size_t) 80), s, r, expected);
        ck_assert_int_eq(memcmp(&req, &sentinel, sizeof(req)), 0);
        ck_assert_uint_eq(hl, 4242);
}

static void assert_bad(const char *s) {
        assert_parse_fails(s, strlen(s), -EBADMSG);
}

START_TEST(test_parse_basic) {
        static const char s[] = "GET /metrics?x=1&y HTTP/1.1\r\nHost: localhost:8092\r\nAccept: */*\r\n\r\n";
        Parsed p;

        parse_str(&p, s);
        ck_assert_int_eq(p.r, 0);
        ck_assert_uint_eq(p.hl, strlen(s));
        ck_assert_str_eq(p.req.method, "GET");
        ck_assert_str_eq(p.req.path, "/metrics");
        ck_assert_str_eq(p.req.query, "x=1&y");
        ck_assert_str_eq(p.req.host, "localhost:8092");
        ck_assert_uint_eq(p.req.version, 11);
        ck_assert(p.req.keep_alive);
        ck_assert(!p.req.has_body);
        /* Everything lives in the caller's storage. */
        ck_assert(p.req.method >= p.storage && p.req.host < p.storage + sizeof(p.storage));
}
END_TEST

START_TEST(test_parse_no_query_no_host) {
        Parsed p;

        parse_str(&p, "HEAD /healthz HTTP/1.1\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert_uint_eq(p.hl, 26);
        ck_assert_str_eq(p.req.method, "HEAD");
        ck_assert_str_eq(p.req.path, "/healthz");
        ck_assert_str_eq(p.req.query, "");
        ck_assert_str_eq(p.req.host, "");

        /* "?" alone: empty query; only the first '?' splits. */
        parse_str(&p, "GET /readyz?verbose?a=b HTTP/1.1\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert_str_eq(p.req.path, "/readyz");
        ck_assert_str_eq(p.req.query, "verbose?a=b");
        parse_str(&p, "GET /? HTTP/1.1\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert_str_eq(p.req.path, "/");
        ck_assert_str_eq(p.req.query, "");

        /* Methods are any token and passed on as sent. */
        parse_str(&p, "get /%41 HTTP/1.1\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert_str_eq(p.req.method, "get");
        ck_assert_str_eq(p.req.path, "/%41");
}
END_TEST

START_TEST(test_parse_pipelined_and_lf) {
        static const char s[] = "GET /a HTTP/1.1\nHost:  x \t\n\nGET /b HTTP/1.1\r\n\r\n";
        Parsed p;

        parse_str(&p, s);
        ck_assert_int_eq(p.r, 0);
        ck_assert_uint_eq(p.hl, strlen("GET /a HTTP/1.1\nHost:  x \t\n\n"));
        ck_assert_str_eq(p.req.path, "/a");
        ck_assert_str_eq(p.req.host, "x"); /* OWS trimmed */

        parse_str(&p, s + p.hl);
        ck_assert_int_eq(p.r, 0);
        ck_assert_str_eq(p.req.path, "/b");
}
END_TEST

START_TEST(test_parse_keep_alive) {
        Parsed p;

        parse_str(&p, "GET / HTTP/1.0\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert_uint_eq(p.req.version, 10);
        ck_assert(!p.req.keep_alive);

        parse_str(&p, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert(p.req.keep_alive);

        parse_str(&p, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert(!p.req.keep_alive);

        parse_str(&p, "GET / HTTP/1.1\r\nconnection: upgrade ,CLOSE\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert(!p.req.keep_alive);

        parse_str(&p, "GET / HTTP/1.1\r\nConnection: closed\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert(p.req.keep_alive);

        parse_str(&p, "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert(!p.req.keep_alive);
}
END_TEST

START_TEST(test_parse_body) {
        Parsed p;

        parse_str(&p, "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        ck_assert_int_eq(p.r, 0);
        ck_assert_uint_eq(p.hl, strlen("POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n"));
        ck_assert(p.req.has_body);

        parse_str(&p, "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert(!p.req.has_body);

        parse_str(&p, "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        ck_assert_int_eq(p.r, 0);
        ck_assert(p.req.has_body);
}
END_TEST

START_TEST(test_parse_eagain) {
        static const char s[] = "GET /metrics?a=b HTTP/1.1\r\nHost: h\r\nX-Y: z\r\n\r\n";
        Parsed p;

        /* Byte at a time: every proper prefix is incomplete, the whole is complete. */
        for (size_t i = 0; i < strlen(s); i++)
                assert_parse_fails(s, i, -EAGAIN);
        parse(&p, s, strlen(s));
        ck_assert_int_eq(p.r, 0);
        ck_assert_uint_eq(p.hl, strlen(s));
}
END_TEST

static char *make_head(size_t total, bool complete) {
        /* "GET / HTTP/1.1\r\n" + "X: aaaa...\r\n" (+ "\r\n") of exactly `total` bytes. */
        static const char start[] = "GET / HTTP/1.1\r\nX: ";
        size_t tail = complete ? 4 : 2;
        char *s = malloc(total + 1);

        ck_assert_ptr_nonnull(s);
        ck_assert_uint_ge(total, strlen(start) + tail);
        memcpy(s, start, strlen(start));
        memset(s + strlen(start), 'a', total - strlen(start) - tail);
        memcpy(s + total - tail, complete ? "\r\n\r\n" : "\r\n", tail);
        s[total] = 0;
        return s;
}

START_TEST(test_parse_limit) {
        _cleanup_free_ char *full = make_head(HTTP_HEADER_MAX, true);
        _cleanup_free_ char *over = make_head(HTTP_HEADER_MAX + 1, true);
        _cleanup_free_ char *open = make_head(HTTP_HEADER_MAX, false);
        Parsed p;

        /* A head of exactly 8 KiB is fine, even with more bytes after it. */
        parse(&p, full, HTTP_HEADER_MAX);
        ck_assert_int_eq(p.r, 0);
        ck_assert_uint_eq(p.hl, HTTP_HEADER_MAX);

        /* One byte more: the end is never seen within the limit. */
        assert_parse_fails(over, HTTP_HEADER_MAX + 1, -E2BIG);
        assert_parse_fails(over, HTTP_HEADER_MAX, -E2BIG);
        assert_parse_fails(over, HTTP_HEADER_MAX - 1, -EAGAIN);
        assert_parse_fails(open, HTTP_HEADER_MAX, -E2BIG);
        assert_parse_fails(open, HTTP_HEADER_MAX - 1, -EAGAIN);
}
END_TEST

START_TEST(test_parse_ebadmsg) {
        static const char *const bad[] = {
                "\r\n",
                "GET\r\n\r\n",
                "GET /\r\n\r\n",
                "GET  / HTTP/1.1\r\n\r\n",
                "GET / HTTP/1.1 \r\n\r\n",
                "GET /a b HTTP/1.1\r\n\r\n",
                "GET foo HTTP/1.1\r\n\r\n",
                "GET * HTTP/1.1\r\n\r\n",
                "GET http://h/ HTTP/1.1\r\n\r\n",
                "GET / HTTP/2.0\r\n\r\n",
                "GET / HTTP/1.2\r\n\r\n",
                "GET / HTTP/1.10\r\n\r\n",
                "GET / http/1.1\r\n\r\n",
                "G(T / HTTP/1.1\r\n\r\n",
                "GET /\x7f HTTP/1.1\r\n\r\n",
                "GET /\t HTTP/1.1\r\n\r\n",
                "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
                "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                "GET / HTTP/1.1\r\nName : x\r\n\r\n",
                "GET / HTTP/1.1\r\n: x\r\n\r\n",
                "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
                "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
                "GET / HTTP/1.1\r\nA: \x01\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
                "GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
                "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "GET / HTTP/1.1\r\nContent-Length: \r\n\r\n",
                "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_bad(bad[i]);

        /* NUL bytes are control characters too. */
        assert_parse_fails("GET /\0 HTTP/1.1\r\n\r\n", 20, -EBADMSG);
        assert_parse_fails("GET / HTTP/1.1\r\nA: \0\r\n\r\n", 25, -EBADMSG);

        /* Lines are judged as soon as they are complete: no waiting for the end of the head. */
        assert_parse_fails("XYZ\n", 4, -EBADMSG);
        assert_parse_fails("GET / HTTP/1.1\r\nbad line\r\nmore", 31, -EBADMSG);
        /* ... but an incomplete garbage line is just incomplete. */
        assert_parse_fails("XYZ", 3, -EAGAIN);
}
END_TEST

START_TEST(test_parse_enobufs) {
        static const char s[] = "GET /path?q HTTP/1.1\r\nHost: host\r\n\r\n";
        char storage[32];
        HttpRequest req;
        size_t hl = 0;

        /* "GET" "/path" "q" "host" + 4 NULs = 17 bytes */
        ck_assert_int_eq(http_parse_request(s, strlen(s), &req, storage, 16, &hl), -ENOBUFS);
        ck_assert_uint_eq(hl, 0);
        ck_assert_int_eq(http_parse_request(s, strlen(s), &req, storage, 17, &hl), 0);
        ck_assert_uint_eq(hl, strlen(s));
        ck_assert_str_eq(req.host, "host");
}
END_TEST

START_TEST(test_status_strings) {
        ck_assert_str_eq(http_status_to_string(200), "OK");
        ck_assert_str_eq(http_status_to_string(301), "Moved Permanently");
        ck_assert_str_eq(http_status_to_string(404), "Not Found");
        ck_assert_str_eq(http_status_to_string(405), "Method Not Allowed");
        ck_assert_str_eq(http_status_to_string(431), "Request Header Fields Too Large");
        ck_assert_str_eq(http_status_to_string(500), "Internal Server Error");
        ck_assert_str_eq(http_status_to_string(503), "Service Unavailable");
        ck_assert_ptr_null(http_status_to_string(0));
        ck_assert_ptr_null(http_status_to_string(299));
        ck_assert_ptr_null(http_status_to_string(-1));
}
END_TEST

/* ---- the server, end to end on loopback ---- */

#define BIG_BODY_SIZE ((size_t) 12 * 1024 * 1024)

typedef struct Fixture {
        sd_event *event;
        HttpServer *server;
        uint16_t port;
        unsigned n_calls;
        char last_query[64];
        char last_method[16];
} Fixture;

static int handler(const HttpRequest *req, HttpResponse *ret, void *userdata) {
        Fixture *f = userdata;
        int r;

        f->n_calls++;
        snprintf(f->last_query, sizeof(f->last_query), "%s", req->query);
        snprintf(f->last_method, sizeof(f->last_method), "%s", req->method);

        if (streq(req->path, "/healthz"))
                return http_response_set_text(ret, 200, "ok");
        if (streq(req->path, "/readyz"))
                return http_response_set_text(ret, 503, "[-]server-connected failed: no servers connected\n");
        if (streq(req->path, "/metrics")) {
                static char location[128];

                snprintf(location, sizeof(location), "http://%s:8093/metrics", req->host);
                ret->status = 301;
                ret->location = location;
                return 0;
        }
        if (streq(req->path, "/prom")) {
                r = http_response_set_text(ret, 200, "a 1\n");
                ret->content_type = "text/plain; version=0.0.4; charset=utf-8";
                return r;
        }
        if (streq(req->path, "/fail")) {
                (void) http_response_set_text(ret, 200, "leaked?"); /* freed by http */
                return -EIO;
        }
        if (streq(req->path, "/bad-location")) {
                ret->status = 301;
                ret->location = "http://x/\r\nSet-Cookie: a=b";
                return 0;
        }
        if (streq(req->path, "/bad-status"))
                return http_response_set_text(ret, 299, "x");
        if (streq(req->path, "/big")) {
                /* "?n=<bytes>" or BIG_BODY_SIZE */
                size_t n = strncmp(req->query, "n=", 2) == 0 ? strtoul(req->query + 2, NULL, 10) : BIG_BODY_SIZE;

                ret->status = 200;
                ret->body = malloc(n);
                if (!ret->body)
                        return -ENOMEM;
                for (size_t i = 0; i < n; i++)
                        ret->body[i] = (char) ('a' + i % 26);
                ret->body_len = n;
                return 0;
        }
        return http_response_set_text(ret, 404, "404 page not found\n");
}

static uint16_t listen_port(int fd) {
        struct sockaddr_in a = {};
        socklen_t l = sizeof(a);

        ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &a, &l), 0);
        return ntohs(a.sin_port);
}

static void fixture_setup(Fixture *f) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd;

        *f = (Fixture) {};
        ck_assert_int_eq(sd_event_new(&f->event), 0);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* blocking: http must make it non-blocking */
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        ck_assert_int_eq(listen(fd, 512), 0);
        f->port = listen_port(fd);
        ck_assert_int_eq(http_server_new(f->event, fd, handler, f, &f->server), 0);
        ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
}

static void fixture_teardown(Fixture *f) {
        f->server = http_server_free(f->server);
        f->event = sd_event_unref(f->event);
}

static int client_connect(Fixture *f) {
        struct sockaddr_in a = {
                .sin_family = AF_INET,
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                .sin_port = htons(f->port),
        };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        /* The backlog takes the connection before accept(), so this does not need the loop. */
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        return fd;
}

/* A client with a small receive buffer, so that the server's responses queue up on its side. */
static int client_connect_small_rcvbuf(Fixture *f) {
        struct sockaddr_in a = {
                .sin_family = AF_INET,
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                .sin_port = htons(f->port),
        };
        int small = 4096, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        return fd;
}

static void client_send(int fd, const char *s, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
                ck_assert_int_gt(k, 0);
                s += k;
                n -= (size_t) k;
        }
}

static void client_send_str(int fd, const char *s) {
        client_send(fd, s, strlen(s));
}

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* Run the loop while collecting what the client receives, until `want` bytes arrived (and then
 * check nothing more is pending) or, with want == SIZE_MAX, until EOF. Returns the bytes (malloc'd,
 * NUL-terminated) and whether EOF was seen. */
static char *client_collect(Fixture *f, int fd, size_t want, size_t *ret_len, bool *ret_eof) {
        size_t cap = 64 * 1024, len = 0;
        char *buf = malloc(cap + 1);
        uint64_t deadline = now_usec() + 10 * USEC_PER_SEC;
        bool eof = false;

        ck_assert_ptr_nonnull(buf);
        while (len < want && !eof) {
                ssize_t k;

                ck_assert_msg(now_usec() < deadline, "timed out waiting for the response (%zu bytes so far)",
                              len);
                ck_assert_int_ge(sd_event_run(f->event, 1000), 0);
                for (;;) {
                        if (len == cap) {
                                cap *= 2;
                                buf = realloc(buf, cap + 1);
                                ck_assert_ptr_nonnull(buf);
                        }
                        k = recv(fd, buf + len, MIN(cap - len, want - len), MSG_DONTWAIT);
                        if (k == 0) {
                                eof = true;
                                break;
                        }
                        if (k < 0) {
                                ck_assert(errno == EAGAIN || errno == ECONNRESET);
                                if (errno == ECONNRESET)
                                        eof = true;
                                break;
                        }
                        len += (size_t) k;
                        if (len >= want)
                                break;
                }
        }
        buf[len] = 0;
        *ret_len = len;
        if (ret_eof)
                *ret_eof = eof;
        return buf;
}

/* Expect exactly `expected` and then nothing else for now (the connection stays open). */
static void expect_response(Fixture *f, int fd, const char *expected) {
        _cleanup_free_ char *got = NULL;
        size_t len;
        bool eof;
        char extra;

        got = client_collect(f, fd, strlen(expected), &len, &eof);
        ck_assert_str_eq(got, expected);
        ck_assert(!eof);
        for (unsigned i = 0; i < 20; i++)
                ck_assert_int_ge(sd_event_run(f->event, 1000), 0);
        ck_assert_int_eq(recv(fd, &extra, 1, MSG_DONTWAIT), -1);
        ck_assert_int_eq(errno, EAGAIN);
}

/* Expect exactly `expected` followed by EOF. */
static void expect_response_then_eof(Fixture *f, int fd, const char *expected) {
        _cleanup_free_ char *got = NULL;
        size_t len;
        bool eof;

        got = client_collect(f, fd, SIZE_MAX, &len, &eof);
        ck_assert(eof);
        ck_assert_str_eq(got, expected);
}

static void run_until_connections(Fixture *f, unsigned n) {
        uint64_t deadline = now_usec() + 10 * USEC_PER_SEC;

        while (http_server_n_connections(f->server) != n) {
                ck_assert_msg(now_usec() < deadline, "%u connections, want %u",
                              http_server_n_connections(f->server), n);
                ck_assert_int_ge(sd_event_run(f->event, 1000), 0);
        }
}

#define OK_RESPONSE                                     \
        "HTTP/1.1 200 OK\r\n"                           \
        "Content-Type: text/plain; charset=utf-8\r\n"   \
        "Content-Length: 2\r\n"                         \
        "\r\n"                                          \
        "ok"

START_TEST(test_server_get) {
        Fixture f;
        _cleanup_close_ int fd = -EBADF;

        fixture_setup(&f);
        fd = client_connect(&f);
        client_send_str(fd, "GET /healthz?verbose HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        expect_response(&f, fd, OK_RESPONSE);
        ck_assert_uint_eq(f.n_calls, 1);
        ck_assert_str_eq(f.last_query, "verbose");
        ck_assert_str_eq(f.last_method, "GET");
        ck_assert_uint_eq(http_server_n_connections(f.server), 1);

        /* The client goes away: the server notices and forgets the connection. */
        fd = safe_close(fd);
        run_until_connections(&f, 0);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_head) {
        Fixture f;
        _cleanup_close_ int fd = -EBADF;

        fixture_setup(&f);
        fd = client_connect(&f);
        client_send_str(fd, "HEAD /healthz HTTP/1.1\r\n\r\n");
        expect_response(&f, fd,
                        "HTTP/1.1 200 OK\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: 2\r\n"
                        "\r\n");
        ck_assert_str_eq(f.last_method, "HEAD");
        /* No stray body: the next response on the connection starts right away. */
        client_send_str(fd, "GET /healthz HTTP/1.1\r\n\r\n");
        expect_response(&f, fd, OK_RESPONSE);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_statuses) {
        Fixture f;
        _cleanup_close_ int fd = -EBADF;

        fixture_setup(&f);
        fd = client_connect(&f);

        client_send_str(fd, "GET /nope HTTP/1.1\r\n\r\n");
        expect_response(&f, fd,
                        "HTTP/1.1 404 Not Found\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: 19\r\n"
                        "\r\n"
                        "404 page not found\n");

        client_send_str(fd, "GET /readyz HTTP/1.1\r\n\r\n");
        expect_response(&f, fd,
                        "HTTP/1.1 503 Service Unavailable\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: 49\r\n"
                        "\r\n"
                        "[-]server-connected failed: no servers connected\n");

        client_send_str(fd, "GET /metrics HTTP/1.1\r\nHost: node1\r\n\r\n");
        expect_response(&f, fd,
                        "HTTP/1.1 301 Moved Permanently\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: 0\r\n"
                        "Location: http://node1:8093/metrics\r\n"
                        "\r\n");

        client_send_str(fd, "GET /prom HTTP/1.1\r\n\r\n");
        expect_response(&f, fd,
                        "HTTP/1.1 200 OK\r\n"
                        "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                        "Content-Length: 4\r\n"
                        "\r\n"
                        "a 1\n");

        /* Handler failures, header injection and unknown codes all become a 500 (connection kept). */
        for (unsigned i = 0; i < 3; i++) {
                static const char *const req[] = {
                        "GET /fail HTTP/1.1\r\n\r\n",
                        "GET /bad-location HTTP/1.1\r\n\r\n",
                        "GET /bad-status HTTP/1.1\r\n\r\n",
                };
                client_send_str(fd, req[i]);
                expect_response(&f, fd,
                                "HTTP/1.1 500 Internal Server Error\r\n"
                                "Content-Type: text/plain; charset=utf-8\r\n"
                                "Content-Length: 25\r\n"
                                "\r\n"
                                "500 Internal Server Error");
        }
        ck_assert_uint_eq(http_server_n_connections(f.server), 1);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_keep_alive_pipelined) {
        Fixture f;
        _cleanup_close_ int fd = -EBADF;

        fixture_setup(&f);
        fd = client_connect(&f);

        /* Two requests on one connection, one after the other ... */
        client_send_str(fd, "GET /healthz HTTP/1.1\r\n\r\n");
        expect_response(&f, fd, OK_RESPONSE);
        client_send_str(fd, "GET /healthz HTTP/1.1\r\n\r\n");
        expect_response(&f, fd, OK_RESPONSE);
        /* ... and two in one packet. */
        client_send_str(fd, "GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n");
        expect_response(&f, fd,
                        OK_RESPONSE "HTTP/1.1 404 Not Found\r\n"
                                    "Content-Type: text/plain; charset=utf-8\r\n"
                                    "Content-Length: 19\r\n"
                                    "\r\n"
                                    "404 page not found\n");
        ck_assert_uint_eq(f.n_calls, 4);
        ck_assert_uint_eq(http_server_n_connections(f.server), 1);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_connection_close) {
        Fixture f;
        _cleanup_close_ int fd1 = -EBADF, fd2 = -EBADF;

        fixture_setup(&f);
        fd1 = client_connect(&f);
        client_send_str(fd1, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n");
        expect_response_then_eof(&f, fd1,
                                 "HTTP/1.1 200 OK\r\n"
                                 "Content-Type: text/plain; charset=utf-8\r\n"
                                 "Content-Length: 2\r\n"
                                 "Connection: close\r\n"
                                 "\r\n"
                                 "ok");
        ck_assert_uint_eq(f.n_calls, 1);

        /* HTTP/1.0 closes by default. */
        fd2 = client_connect(&f);
        client_send_str(fd2, "GET /healthz HTTP/1.0\r\n\r\n");
        expect_response_then_eof(&f, fd2,
                                 "HTTP/1.1 200 OK\r\n"
                                 "Content-Type: text/plain; charset=utf-8\r\n"
                                 "Content-Length: 2\r\n"
                                 "Connection: close\r\n"
                                 "\r\n"
                                 "ok");
        /* Lingering ends as soon as the client closes too. */
        fd1 = safe_close(fd1);
        fd2 = safe_close(fd2);
        run_until_connections(&f, 0);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_405_400) {
        Fixture f;
        _cleanup_close_ int fd1 = -EBADF, fd2 = -EBADF, fd3 = -EBADF;

        fixture_setup(&f);
        fd1 = client_connect(&f);
        client_send_str(fd1, "POST /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        expect_response_then_eof(&f, fd1,
                                 "HTTP/1.1 405 Method Not Allowed\r\n"
                                 "Content-Type: text/plain; charset=utf-8\r\n"
                                 "Content-Length: 22\r\n"
                                 "Allow: GET, HEAD\r\n"
                                 "Connection: close\r\n"
                                 "\r\n"
                                 "405 Method Not Allowed");

        fd2 = client_connect(&f);
        client_send_str(fd2, "GET / HTTP/1.1\r\nBad Header\r\n\r\n");
        expect_response_then_eof(&f, fd2,
                                 "HTTP/1.1 400 Bad Request\r\n"
                                 "Content-Type: text/plain; charset=utf-8\r\n"
                                 "Content-Length: 15\r\n"
                                 "Connection: close\r\n"
                                 "\r\n"
                                 "400 Bad Request");

        /* A GET announcing a body is answered, then the connection ends (the body is never read). */
        fd3 = client_connect(&f);
        client_send_str(fd3, "GET /healthz HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET ");
        expect_response_then_eof(&f, fd3,
                                 "HTTP/1.1 200 OK\r\n"
                                 "Content-Type: text/plain; charset=utf-8\r\n"
                                 "Content-Length: 2\r\n"
                                 "Connection: close\r\n"
                                 "\r\n"
                                 "ok");
        ck_assert_uint_eq(f.n_calls, 1);
        fd1 = safe_close(fd1);
        fd2 = safe_close(fd2);
        fd3 = safe_close(fd3);
        run_until_connections(&f, 0);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_431) {
        Fixture f;
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *big = make_head(3 * HTTP_HEADER_MAX, true);

        fixture_setup(&f);
        fd = client_connect(&f);
        /* More than the server ever reads: the lingering close must not turn this into an RST. */
        client_send_str(fd, big);
        expect_response_then_eof(&f, fd,
                                 "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                 "Content-Type: text/plain; charset=utf-8\r\n"
                                 "Content-Length: 35\r\n"
                                 "Connection: close\r\n"
                                 "\r\n"
                                 "431 Request Header Fields Too Large");
        ck_assert_uint_eq(f.n_calls, 0);
        fd = safe_close(fd);
        run_until_connections(&f, 0);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_header_timeout) {
        Fixture f;
        _cleanup_close_ int fd1 = -EBADF, fd2 = -EBADF;
        _cleanup_free_ char *got = NULL;
        uint64_t start;
        size_t len;
        bool eof;

        fixture_setup(&f);
        http_server_set_timeouts(f.server, 200 * USEC_PER_MSEC, 0, 0);

        /* Nothing at all, and a head that never completes: both closed after the header timeout. */
        start = now_usec();
        fd1 = client_connect(&f);
        fd2 = client_connect(&f);
        client_send_str(fd2, "GET /healthz HTT");
        run_until_connections(&f, 2);
        got = client_collect(&f, fd2, SIZE_MAX, &len, &eof);
        ck_assert(eof);
        ck_assert_uint_eq(len, 0);
        run_until_connections(&f, 0);
        ck_assert_uint_ge(now_usec() - start, 200 * USEC_PER_MSEC);
        ck_assert_uint_lt(now_usec() - start, 5 * USEC_PER_SEC);
        ck_assert_uint_eq(f.n_calls, 0);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_idle_timeout) {
        Fixture f;
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *got = NULL;
        uint64_t start;
        size_t len;
        bool eof;

        fixture_setup(&f);
        http_server_set_timeouts(f.server, 5 * USEC_PER_SEC, 300 * USEC_PER_MSEC, 0);
        fd = client_connect(&f);
        client_send_str(fd, "GET /healthz HTTP/1.1\r\n\r\n");
        got = client_collect(&f, fd, strlen(OK_RESPONSE), &len, &eof);
        ck_assert_str_eq(got, OK_RESPONSE);
        got = mfree(got);

        /* Idle between requests: closed after the idle timeout, not the (longer) header timeout. */
        start = now_usec();
        got = client_collect(&f, fd, SIZE_MAX, &len, &eof);
        ck_assert(eof);
        ck_assert_uint_eq(len, 0);
        ck_assert_uint_ge(now_usec() - start, 250 * USEC_PER_MSEC);
        ck_assert_uint_lt(now_usec() - start, 4 * USEC_PER_SEC);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_requests_per_connection) {
        Fixture f;
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *reqs = NULL, *expected = NULL, *got = NULL;
        static const char req[] = "GET /healthz HTTP/1.1\r\n\r\n";
        size_t len, n = HTTP_REQUESTS_PER_CONNECTION_MAX + 1;
        bool eof;
        char *p;

        /* 101 pipelined requests: 100 answers, the last one announcing the close. */
        reqs = malloc(n * strlen(req) + 1);
        expected = malloc(n * strlen(OK_RESPONSE) + 64);
        ck_assert_ptr_nonnull(reqs);
        ck_assert_ptr_nonnull(expected);
        p = reqs;
        for (size_t i = 0; i < n; i++)
                p = stpcpy(p, req);
        p = expected;
        for (size_t i = 0; i < n - 2; i++)
                p = stpcpy(p, OK_RESPONSE);
        stpcpy(p, "HTTP/1.1 200 OK\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 2\r\n"
                  "Connection: close\r\n"
                  "\r\n"
                  "ok");

        fixture_setup(&f);
        fd = client_connect(&f);
        client_send_str(fd, reqs);
        got = client_collect(&f, fd, SIZE_MAX, &len, &eof);
        ck_assert(eof);
        ck_assert_str_eq(got, expected);
        ck_assert_uint_eq(f.n_calls, HTTP_REQUESTS_PER_CONNECTION_MAX);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_big_body) {
        Fixture f;
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *got = NULL;
        static const char head[] = "HTTP/1.1 200 OK\r\n"
                                   "Content-Type: text/plain; charset=utf-8\r\n"
                                   "Content-Length: 12582912\r\n"
                                   "\r\n";
        size_t len, bad = SIZE_MAX;
        bool eof;

        fixture_setup(&f);
        fd = client_connect(&f);
        client_send_str(fd, "GET /big HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n");
        /* Far more than the socket buffers: the server has to wait for EPOLLOUT several times. */
        got = client_collect(&f, fd, strlen(head) + BIG_BODY_SIZE + strlen(OK_RESPONSE), &len, &eof);
        ck_assert_uint_eq(len, strlen(head) + BIG_BODY_SIZE + strlen(OK_RESPONSE));
        ck_assert_int_eq(memcmp(got, head, strlen(head)), 0);
        for (size_t i = 0; i < BIG_BODY_SIZE; i++)
                if (got[strlen(head) + i] != (char) ('a' + i % 26)) {
                        bad = i;
                        break;
                }
        ck_assert_uint_eq(bad, SIZE_MAX);
        ck_assert_str_eq(got + strlen(head) + BIG_BODY_SIZE, OK_RESPONSE);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_lingering_close) {
        Fixture f;
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *got = NULL, *junk = NULL;
        static const char head[] = "HTTP/1.1 200 OK\r\n"
                                   "Content-Type: text/plain; charset=utf-8\r\n"
                                   "Content-Length: 2097152\r\n"
                                   "Connection: close\r\n"
                                   "\r\n";
        size_t len;
        bool eof;

        /* The last response is followed by bytes the server never reads. A plain close() would
         * answer them with an RST that throws away the unsent tail of the response; lingering
         * (shutdown, drain, then close) delivers all of it. */
        junk = malloc(64 * 1024);
        ck_assert_ptr_nonnull(junk);
        memset(junk, 'j', 64 * 1024);

        fixture_setup(&f);
        fd = client_connect_small_rcvbuf(&f);
        client_send_str(fd, "GET /big?n=2097152 HTTP/1.1\r\nConnection: close\r\n\r\n");
        client_send(fd, junk, 64 * 1024);
        got = client_collect(&f, fd, SIZE_MAX, &len, &eof);
        ck_assert(eof);
        ck_assert_uint_eq(len, strlen(head) + 2097152);
        ck_assert_int_eq(memcmp(got, head, strlen(head)), 0);
        ck_assert_uint_eq(f.n_calls, 1);
        fd = safe_close(fd);
        run_until_connections(&f, 0);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_write_timeout) {
        Fixture f;
        _cleanup_close_ int fd = -EBADF;

        fixture_setup(&f);
        http_server_set_timeouts(f.server, 0, 0, 300 * USEC_PER_MSEC);
        fd = client_connect_small_rcvbuf(&f);
        /* A client that never reads a 12 MiB response is dropped after the write timeout. */
        client_send_str(fd, "GET /big HTTP/1.1\r\n\r\n");
        run_until_connections(&f, 1);
        run_until_connections(&f, 0);
        ck_assert_uint_eq(f.n_calls, 1);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_connection_limit) {
        Fixture f;
        struct rlimit rl;
        int fds[HTTP_CONNECTIONS_MAX + 1];
        _cleanup_free_ char *got = NULL;
        size_t len;
        bool eof;

        ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
        if (rl.rlim_cur < 2 * HTTP_CONNECTIONS_MAX + 64) {
                rl.rlim_cur = MIN(rl.rlim_max, (rlim_t) 4 * HTTP_CONNECTIONS_MAX);
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
        ck_assert_uint_ge(rl.rlim_cur, 2 * HTTP_CONNECTIONS_MAX + 64);

        fixture_setup(&f);
        for (unsigned i = 0; i < HTTP_CONNECTIONS_MAX; i++)
                fds[i] = client_connect(&f);
        run_until_connections(&f, HTTP_CONNECTIONS_MAX);

        /* One more is accepted and closed at once. */
        fds[HTTP_CONNECTIONS_MAX] = client_connect(&f);
        got = client_collect(&f, fds[HTTP_CONNECTIONS_MAX], SIZE_MAX, &len, &eof);
        ck_assert(eof);
        ck_assert_uint_eq(len, 0);
        ck_assert_uint_eq(http_server_n_connections(f.server), HTTP_CONNECTIONS_MAX);

        /* The others still work. */
        client_send_str(fds[0], "GET /healthz HTTP/1.1\r\n\r\n");
        expect_response(&f, fds[0], OK_RESPONSE);

        /* Freeing the server closes every connection. */
        f.server = http_server_free(f.server);
        for (unsigned i = 0; i < HTTP_CONNECTIONS_MAX; i++) {
                char c;
                struct pollfd p = { .fd = fds[i], .events = POLLIN };

                ck_assert_int_eq(poll(&p, 1, 5000), 1);
                ck_assert_int_eq(recv(fds[i], &c, 1, MSG_DONTWAIT), 0);
        }
        for (unsigned i = 0; i <= HTTP_CONNECTIONS_MAX; i++)
                safe_close(fds[i]);
        fixture_teardown(&f);
}
END_TEST

START_TEST(test_server_free_with_pending) {
        Fixture f;
        _cleanup_close_ int fd1 = -EBADF, fd2 = -EBADF;

        /* Connections in every state (reading, writing a big body) are torn down without leaks. */
        fixture_setup(&f);
        fd1 = client_connect(&f);
        fd2 = client_connect(&f);
        client_send_str(fd1, "GET /hea");
        client_send_str(fd2, "GET /big HTTP/1.1\r\n\r\n");
        run_until_connections(&f, 2);
        for (unsigned i = 0; i < 50 && f.n_calls == 0; i++)
                ck_assert_int_ge(sd_event_run(f.event, 1000), 0);
        ck_assert_uint_eq(f.n_calls, 1);
        fixture_teardown(&f);
        ck_assert_ptr_null(http_server_free(NULL));
        ck_assert_uint_eq(http_server_n_connections(NULL), 0);
}
END_TEST

START_TEST(test_server_new_failures) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        HttpServer *s = (HttpServer *) 0x1;
        int fd;

        ck_assert_int_eq(sd_event_new(&e), 0);
        ck_assert_int_eq(http_server_new(e, -EBADF, handler, NULL, &s), -EBADF);
        ck_assert_ptr_eq(s, (HttpServer *) 0x1);

        /* On out-of-memory the listening fd is closed all the same. */
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        fail_always = true;
        {
                int r = http_server_new(e, fd, handler, NULL, &s);
                fail_always = false;
                ck_assert_int_eq(r, -ENOMEM);
        }
        ck_assert_ptr_eq(s, (HttpServer *) 0x1);
        ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
        ck_assert_int_eq(errno, EBADF);
}
END_TEST

START_TEST(test_response_set_text) {
        HttpResponse r = {};

        ck_assert_int_eq(http_response_set_text(&r, 200, "ok"), 0);
        ck_assert_int_eq(r.status, 200);
        ck_assert_ptr_null(r.content_type);
        ck_assert_uint_eq(r.body_len, 2);
        ck_assert_int_eq(memcmp(r.body, "ok", 2), 0);
        /* Replacing frees the old body. */
        ck_assert_int_eq(http_response_set_text(&r, 500, ""), 0);
        ck_assert_int_eq(r.status, 500);
        ck_assert_uint_eq(r.body_len, 0);
        free(r.body);
}
END_TEST

static Suite *http_suite(void) {
        Suite *s = suite_create("http");
        TCase *tc;

        tc = tcase_create("parse");
        tcase_add_test(tc, test_parse_basic);
        tcase_add_test(tc, test_parse_no_query_no_host);
        tcase_add_test(tc, test_parse_pipelined_and_lf);
        tcase_add_test(tc, test_parse_keep_alive);
        tcase_add_test(tc, test_parse_body);
        tcase_add_test(tc, test_parse_eagain);
        tcase_add_test(tc, test_parse_limit);
        tcase_add_test(tc, test_parse_ebadmsg);
        tcase_add_test(tc, test_parse_enobufs);
        tcase_add_test(tc, test_status_strings);
        tcase_add_test(tc, test_response_set_text);
        suite_add_tcase(s, tc);

        tc = tcase_create("server");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_server_get);
        tcase_add_test(tc, test_server_head);
        tcase_add_test(tc, test_server_statuses);
        tcase_add_test(tc, test_server_keep_alive_pipelined);
        tcase_add_test(tc, test_server_connection_close);
        tcase_add_test(tc, test_server_405_400);
        tcase_add_test(tc, test_server_431);
        tcase_add_test(tc, test_server_header_timeout);
        tcase_add_test(tc, test_server_idle_timeout);
        tcase_add_test(tc, test_server_requests_per_connection);
        tcase_add_test(tc, test_server_big_body);
        tcase_add_test(tc, test_server_lingering_close);
        tcase_add_test(tc, test_server_write_timeout);
        tcase_add_test(tc, test_server_connection_limit);
        tcase_add_test(tc, test_server_free_with_pending);
        tcase_add_test(tc, test_server_new_failures);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        SRunner *sr = srunner_create(http_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
