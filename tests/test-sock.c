/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "sock.h"

/* ---- helpers ---- */

static void wait_fd(int fd, short events) {
        struct pollfd p = { .fd = fd, .events = events };

        ck_assert_int_eq(poll(&p, 1, 5000), 1);
        ck_assert(p.revents & (events | POLLERR | POLLHUP));
}

static uint16_t local_port(int fd) {
        SockAddr a = {};
        socklen_t l = sizeof(a);

        ck_assert_int_eq(getsockname(fd, &a.sa, &l), 0);
        if (a.sa.sa_family == AF_INET)
                return ntohs(a.in.sin_port);
        ck_assert_int_eq(a.sa.sa_family, AF_INET6);
        return ntohs(a.in6.sin6_port);
}

static void assert_nonblock_cloexec(int fd) {
        ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
        ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
}

static int int_sockopt(int fd, int level, int opt) {
        int v = -1;
        socklen_t l = sizeof(v);

        ck_assert_int_eq(getsockopt(fd, level, opt, &v, &l), 0);
        return v;
}

static void assert_v4(const SockAddr *a, socklen_t len, const char *ip, uint16_t port) {
        char buf[INET_ADDRSTRLEN];

        ck_assert_int_eq(len, sizeof(struct sockaddr_in));
        ck_assert_int_eq(a->in.sin_family, AF_INET);
        ck_assert_int_eq(ntohs(a->in.sin_port), port);
        ck_assert_str_eq(inet_ntop(AF_INET, &a->in.sin_addr, buf, sizeof(buf)), ip);
}

static void assert_v6(const SockAddr *a, socklen_t len, const char *ip, uint16_t port, uint32_t scope) {
        char buf[INET6_ADDRSTRLEN];

        ck_assert_int_eq(len, sizeof(struct sockaddr_in6));
        ck_assert_int_eq(a->in6.sin6_family, AF_INET6);
        ck_assert_int_eq(ntohs(a->in6.sin6_port), port);
        ck_assert_uint_eq(a->in6.sin6_scope_id, scope);
        ck_assert_str_eq(inet_ntop(AF_INET6, &a->in6.sin6_addr, buf, sizeof(buf)), ip);
}

/* A parse that fails must leave the out-parameters alone. */
static void assert_parse_fails(const char *s, int expected) {
        SockAddr a, sentinel;
        socklen_t len = 4242;

        memset(&sentinel, 0xaa, sizeof(sentinel));
        a = sentinel;
        ck_assert_msg(sock_parse_numeric(s, 7, &a, &len) == expected, "'%s': got %i, want %i", s,
                      sock_parse_numeric(s, 7, &a, &len), expected);
        ck_assert_int_eq(memcmp(&a, &sentinel, sizeof(a)), 0);
        ck_assert_int_eq(len, 4242);
}

/* ---- sock_parse_numeric ---- */

START_TEST(test_parse_ipv4) {
        SockAddr a;
        socklen_t len;

        ck_assert_int_eq(sock_parse_numeric("127.0.0.1:80", 7, &a, &len), 0);
        assert_v4(&a, len, "127.0.0.1", 80);

        ck_assert_int_eq(sock_parse_numeric("10.0.0.1", 443, &a, &len), 0);
        assert_v4(&a, len, "10.0.0.1", 443);

        /* Go accepts brackets around any host, and port text "" means 0. */
        ck_assert_int_eq(sock_parse_numeric("[1.2.3.4]:80", 7, &a, &len), 0);
        assert_v4(&a, len, "1.2.3.4", 80);
        ck_assert_int_eq(sock_parse_numeric("1.2.3.4:0", 7, &a, &len), 0);
        assert_v4(&a, len, "1.2.3.4", 0);
        ck_assert_int_eq(sock_parse_numeric("1.2.3.4:", 7, &a, &len), 0);
        assert_v4(&a, len, "1.2.3.4", 0);
        ck_assert_int_eq(sock_parse_numeric("1.2.3.4:65535", 7, &a, &len), 0);
        assert_v4(&a, len, "1.2.3.4", 65535);
        ck_assert_int_eq(sock_parse_numeric("1.2.3.4:00080", 7, &a, &len), 0);
        assert_v4(&a, len, "1.2.3.4", 80);
}
END_TEST

START_TEST(test_parse_ipv6) {
        SockAddr a;
        socklen_t len;
        unsigned lo = if_nametoindex("lo");

        ck_assert_int_eq(sock_parse_numeric("[::1]:8080", 7, &a, &len), 0);
        assert_v6(&a, len, "::1", 8080, 0);

        ck_assert_int_eq(sock_parse_numeric("[::1]", 9, &a, &len), 0);
        assert_v6(&a, len, "::1", 9, 0);

        ck_assert_int_eq(sock_parse_numeric("::1", 10, &a, &len), 0);
        assert_v6(&a, len, "::1", 10, 0);

        ck_assert_int_eq(sock_parse_numeric("2001:db8::1", 1, &a, &len), 0);
        assert_v6(&a, len, "2001:db8::1", 1, 0);

        ck_assert_int_eq(sock_parse_numeric("[::ffff:1.2.3.4]:5", 7, &a, &len), 0);
        assert_v6(&a, len, "::ffff:1.2.3.4", 5, 0);

        ck_assert_int_eq(sock_parse_numeric("fe80::1%3", 11, &a, &len), 0);
        assert_v6(&a, len, "fe80::1", 11, 3);

        ck_assert_int_eq(sock_parse_numeric("[fe80::1%25]:12", 7, &a, &len), 0);
        assert_v6(&a, len, "fe80::1", 12, 25);

        ck_assert_uint_ne(lo, 0);
        ck_assert_int_eq(sock_parse_numeric("[fe80::1%lo]:13", 7, &a, &len), 0);
        assert_v6(&a, len, "fe80::1", 13, lo);
}
END_TEST

START_TEST(test_parse_names) {
        assert_parse_fails("localhost", -EADDRNOTAVAIL);
        assert_parse_fails("localhost:80", -EADDRNOTAVAIL);
        assert_parse_fails("svc.ns.svc:443", -EADDRNOTAVAIL);
        assert_parse_fails("[foo]:80", -EADDRNOTAVAIL);
        /* Leading zeros are not an IPv4 literal (Go ≥ 1.17 and inet_pton agree): a name. */
        assert_parse_fails("01.2.3.4:80", -EADDRNOTAVAIL);
        assert_parse_fails("1.2.3", -EADDRNOTAVAIL);
        /* Longer than any IP literal could be. */
        assert_parse_fails("a-very-long-host-name-longer-than-any-ip-literal-could-be.example.com:80",
                           -EADDRNOTAVAIL);
}
END_TEST

START_TEST(test_parse_bad_port) {
        assert_parse_fails("1.2.3.4:65536", -ERANGE);
        assert_parse_fails("1.2.3.4:99999999999999999999", -ERANGE);
        assert_parse_fails("1.2.3.4:http", -ERANGE);
        assert_parse_fails("1.2.3.4:-1", -ERANGE);
        assert_parse_fails("1.2.3.4:+80", -ERANGE);
        assert_parse_fails("[::1]:65536", -ERANGE);
        assert_parse_fails("[::1]:8 0", -ERANGE);
}
END_TEST

START_TEST(test_parse_malformed) {
        SockAddr a;
        socklen_t len;

        assert_parse_fails("", -EINVAL);
        assert_parse_fails(":80", -EINVAL);
        assert_parse_fails("[]:80", -EINVAL);
        assert_parse_fails("[]", -EINVAL);
        assert_parse_fails("[::1", -EINVAL);
        assert_parse_fails("[::1]x", -EINVAL);
        assert_parse_fails("[::1]:80:90", -EINVAL);
        assert_parse_fails("[::1]:8]0", -EINVAL);
        assert_parse_fails("[[::1]", -EINVAL);
        assert_parse_fails("1.2.3.4]:80", -EINVAL);
        assert_parse_fails("a[b:80", -EINVAL);
        assert_parse_fails("::1::2", -EINVAL);
        assert_parse_fails("1.2.3.4:80:90", -EINVAL);
        assert_parse_fails("fe80::1%", -EINVAL);
        assert_parse_fails("fe80::1%nosuchif0", -EINVAL);
        assert_parse_fails("fe80::1%99999999999", -EINVAL);
        assert_parse_fails("[:::::::::::::::::::::::::::::::::::::::::::::::::::::::::::::::]:1", -EINVAL);

        ck_assert_int_eq(sock_parse_numeric(NULL, 1, &a, &len), -EINVAL);
        ck_assert_int_eq(sock_parse_numeric("1.2.3.4", 1, NULL, &len), -EINVAL);
        ck_assert_int_eq(sock_parse_numeric("1.2.3.4", 1, &a, NULL), -EINVAL);
}
END_TEST

/* ---- sock_split_host_port ---- */

static void assert_split(const char *addr, const char *host, uint16_t port) {
        char h[64];
        uint16_t p = 4242;
        const char *reason = "untouched";

        ck_assert_msg(sock_split_host_port(addr, h, sizeof(h), &p, &reason) == 0, "'%s'", addr);
        ck_assert_str_eq(h, host);
        ck_assert_uint_eq(p, port);
        ck_assert_str_eq(reason, "untouched");
}

static void assert_split_fails(const char *addr, int error, const char *reason) {
        char h[64] = "untouched";
        uint16_t p = 4242;
        const char *got = NULL;

        ck_assert_msg(sock_split_host_port(addr, h, sizeof(h), &p, &got) == error, "'%s'", addr);
        ck_assert_ptr_nonnull(got);
        ck_assert_str_eq(got, reason);
        ck_assert_str_eq(h, "untouched");
        ck_assert_uint_eq(p, 4242);
}

START_TEST(test_split) {
        assert_split("svc.ns.svc:443", "svc.ns.svc", 443);
        assert_split("127.0.0.1:80", "127.0.0.1", 80);
        assert_split("[::1]:80", "::1", 80);
        assert_split("[fe80::1%eth0]:80", "fe80::1%eth0", 80);
        assert_split("[foo]:1", "foo", 1);
        assert_split("h:0", "h", 0);
        assert_split("h:", "h", 0);
        assert_split(":80", "", 80);
        assert_split("h:65535", "h", 65535);
}
END_TEST

START_TEST(test_split_errors) {
        char h[8];
        uint16_t p = 4242;

        assert_split_fails("foo", -EINVAL, "missing port in address");
        assert_split_fails("", -EINVAL, "missing port in address");
        assert_split_fails("[::1]", -EINVAL, "missing port in address");
        assert_split_fails("[::1]x:80", -EINVAL, "missing port in address");
        assert_split_fails("::1", -EINVAL, "too many colons in address");
        assert_split_fails("1:2:3", -EINVAL, "too many colons in address");
        assert_split_fails("[::1]:80:90", -EINVAL, "too many colons in address");
        assert_split_fails("[::1:80", -EINVAL, "missing ']' in address");
        assert_split_fails("a[b:80", -EINVAL, "unexpected '[' in address");
        assert_split_fails("[a[b]:80", -EINVAL, "unexpected '[' in address");
        assert_split_fails("a]b:80", -EINVAL, "unexpected ']' in address");
        assert_split_fails("[::1]:8]0", -EINVAL, "unexpected ']' in address");
        assert_split_fails("h:65536", -ERANGE, "invalid port");
        assert_split_fails("h:http", -ERANGE, "invalid port");
        assert_split_fails("h:-1", -ERANGE, "invalid port");
        assert_split_fails("a-host-name-longer-than-sixty-three-bytes-does-not-fit-the-buffer.example:1",
                           -ENOBUFS, "address too long");

        /* Exactly fitting and one byte short; reason may be NULL. */
        ck_assert_int_eq(sock_split_host_port("1234567:1", h, sizeof(h), &p, NULL), 0);
        ck_assert_str_eq(h, "1234567");
        ck_assert_int_eq(sock_split_host_port("12345678:1", h, sizeof(h), &p, NULL), -ENOBUFS);
        ck_assert_int_eq(sock_split_host_port("foo", h, sizeof(h), &p, NULL), -EINVAL);

        ck_assert_int_eq(sock_split_host_port(NULL, h, sizeof(h), &p, NULL), -EINVAL);
        ck_assert_int_eq(sock_split_host_port("a:1", NULL, 0, &p, NULL), -EINVAL);
        ck_assert_int_eq(sock_split_host_port("a:1", h, sizeof(h), NULL, NULL), -EINVAL);
}
END_TEST

/* ---- TCP ---- */

START_TEST(test_tcp_listen_connect_accept) {
        _cleanup_close_ int lfd = -EBADF, cfd = -EBADF, afd = -EBADF;
        SockAddr a, peer, sentinel;
        socklen_t len, peer_len = 4242;
        bool in_progress = true;
        char buf[SOCK_ADDR_STRING_MAX], s[32];
        uint16_t port;

        lfd = sock_listen_tcp("127.0.0.1", 0);
        ck_assert_int_ge(lfd, 0);
        assert_nonblock_cloexec(lfd);
        ck_assert_int_eq(int_sockopt(lfd, SOL_SOCKET, SO_REUSEADDR), 1);
        ck_assert_int_eq(int_sockopt(lfd, SOL_SOCKET, SO_ACCEPTCONN), 1);
        port = local_port(lfd);
        ck_assert_uint_ne(port, 0);

        /* Nothing pending yet; out-parameters untouched. */
        memset(&sentinel, 0x55, sizeof(sentinel));
        peer = sentinel;
        ck_assert_int_eq(sock_accept(lfd, &peer, &peer_len), -EAGAIN);
        ck_assert_int_eq(memcmp(&peer, &sentinel, sizeof(peer)), 0);
        ck_assert_int_eq(peer_len, 4242);

        ck_assert_int_eq(sock_parse_numeric("127.0.0.1", port, &a, &len), 0);
        cfd = sock_connect_start(&a, len, &in_progress);
        ck_assert_int_ge(cfd, 0);
        assert_nonblock_cloexec(cfd);
        if (in_progress)
                wait_fd(cfd, POLLOUT);
        ck_assert_int_eq(sock_connect_result(cfd), 0);

        wait_fd(lfd, POLLIN);
        afd = sock_accept(lfd, &peer, &peer_len);
        ck_assert_int_ge(afd, 0);
        assert_nonblock_cloexec(afd);
        ck_assert_int_eq(peer_len, sizeof(struct sockaddr_in));
        ck_assert_int_eq(peer.sa.sa_family, AF_INET);
        ck_assert_str_eq(sock_addr_to_string(&peer, peer_len, buf, sizeof(buf)),
                         (snprintf(s, sizeof(s), "127.0.0.1:%u", local_port(cfd)), s));
        ck_assert_int_eq(sock_accept(lfd, NULL, NULL), -EAGAIN);

        /* Bytes flow. */
        ck_assert_int_eq(write(cfd, "ping", 4), 4);
        wait_fd(afd, POLLIN);
        ck_assert_int_eq(read(afd, buf, sizeof(buf)), 4);
        ck_assert_int_eq(memcmp(buf, "ping", 4), 0);

        sock_set_nodelay(cfd);
        ck_assert_int_eq(int_sockopt(cfd, IPPROTO_TCP, TCP_NODELAY), 1);

        ck_assert_int_eq(sock_set_buffers(cfd, 65536, 0), 0);
        ck_assert_int_ge(int_sockopt(cfd, SOL_SOCKET, SO_SNDBUF), 65536);
        ck_assert_int_eq(sock_set_buffers(cfd, 0, 131072), 0);
        ck_assert_int_ge(int_sockopt(cfd, SOL_SOCKET, SO_RCVBUF), 131072);
        ck_assert_int_eq(sock_set_buffers(cfd, -1, 0), -EINVAL);
        ck_assert_int_eq(sock_set_buffers(cfd, 0, -1), -EINVAL);
        ck_assert_int_eq(sock_set_buffers(-1, 4096, 0), -EBADF);
}
END_TEST

START_TEST(test_tcp_connect_refused) {
        _cleanup_close_ int holder = -EBADF, cfd = -EBADF;
        SockAddr a = { .in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) } };
        socklen_t l = sizeof(a.in);
        bool in_progress = false;
        int r;

        /* Hold a port that is bound but not listening: nobody else can take it while we test. */
        holder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(holder, 0);
        ck_assert_int_eq(bind(holder, &a.sa, l), 0);
        ck_assert_int_eq(getsockname(holder, &a.sa, &l), 0);

        r = sock_connect_start(&a, sizeof(a.in), &in_progress);
        if (r >= 0) {
                cfd = r;
                ck_assert(in_progress);
                wait_fd(cfd, POLLOUT);
                ck_assert_int_eq(sock_connect_result(cfd), -ECONNREFUSED);
        } else
                ck_assert_int_eq(r, -ECONNREFUSED);

        ck_assert_int_eq(sock_connect_start(NULL, 16, NULL), -EINVAL);
        ck_assert_int_eq(sock_connect_start(&a, 1, NULL), -EINVAL);
        ck_assert_int_eq(sock_connect_result(-1), -EBADF);
}
END_TEST

START_TEST(test_tcp_listen_wildcard) {
        _cleanup_close_ int lfd = -EBADF, cfd = -EBADF, afd = -EBADF;
        SockAddr a = {};
        socklen_t l = sizeof(a);
        bool in_progress;

        lfd = sock_listen_tcp(NULL, 0);
        ck_assert_int_ge(lfd, 0);
        assert_nonblock_cloexec(lfd);
        ck_assert_int_eq(getsockname(lfd, &a.sa, &l), 0);
        if (a.sa.sa_family == AF_INET6) {
                ck_assert(IN6_IS_ADDR_UNSPECIFIED(&a.in6.sin6_addr));
                ck_assert_int_eq(int_sockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY), 0);
        } else {
                /* The IPv4 fallback, on a kernel without IPv6. */
                ck_assert_int_eq(a.sa.sa_family, AF_INET);
                ck_assert_uint_eq(a.in.sin_addr.s_addr, htonl(INADDR_ANY));
        }

        /* Reachable over IPv4 either way (dual-stack). */
        ck_assert_int_eq(sock_parse_numeric("127.0.0.1", local_port(lfd), &a, &l), 0);
        cfd = sock_connect_start(&a, l, &in_progress);
        ck_assert_int_ge(cfd, 0);
        if (in_progress)
                wait_fd(cfd, POLLOUT);
        ck_assert_int_eq(sock_connect_result(cfd), 0);
        wait_fd(lfd, POLLIN);
        afd = sock_accept(lfd, NULL, NULL);
        ck_assert_int_ge(afd, 0);
        lfd = safe_close(lfd);

        lfd = sock_listen_tcp("", 0);
        ck_assert_int_ge(lfd, 0);
}
END_TEST

START_TEST(test_tcp_connect_local_completes_at_once) {
        /* Loopback handshakes complete inside connect(): sock_connect_start() notices (one zero-timeout poll()) and
         * reports the connection as established, so the caller skips a loop iteration. Twenty tries, at least
         * one immediate (a loaded machine may defer the handshake's softirq now and then), and every connection,
         * immediate or not, ends up established. */
        _cleanup_close_ int lfd = sock_listen_tcp("127.0.0.1", 0);
        unsigned immediate = 0;
        SockAddr a = {};
        socklen_t l;

        ck_assert_int_ge(lfd, 0);
        ck_assert_int_eq(sock_parse_numeric("127.0.0.1", local_port(lfd), &a, &l), 0);
        for (unsigned i = 0; i < 20; i++) {
                _cleanup_close_ int cfd = -EBADF, afd = -EBADF;
                bool in_progress = true;

                cfd = sock_connect_start(&a, l, &in_progress);
                ck_assert_int_ge(cfd, 0);
                if (!in_progress)
                        immediate++;
                else
                        wait_fd(cfd, POLLOUT);
                ck_assert_int_eq(sock_connect_result(cfd), 0);
                wait_fd(lfd, POLLIN);
                afd = sock_accept(lfd, NULL, NULL);
                ck_assert_int_ge(afd, 0);
        }
        ck_assert_uint_ge(immediate, 1);
}
END_TEST

START_TEST(test_tcp_listen_addresses) {
        _cleanup_close_ int fd = -EBADF, fd2 = -EBADF;
        SockAddr a = {};
        socklen_t l = sizeof(a);

        fd = sock_listen_tcp("[::1]", 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(getsockname(fd, &a.sa, &l), 0);
        ck_assert_int_eq(a.sa.sa_family, AF_INET6);
        ck_assert(IN6_IS_ADDR_LOOPBACK(&a.in6.sin6_addr));

        /* A port given inside host wins; the same port twice is EADDRINUSE despite SO_REUSEADDR. */
        {
                char h[32];

                (void) snprintf(h, sizeof(h), "[::1]:%u", local_port(fd));
                fd2 = sock_listen_tcp(h, 1);
                ck_assert_int_eq(fd2, -EADDRINUSE);
        }

        ck_assert_int_eq(sock_listen_tcp("localhost", 0), -EADDRNOTAVAIL);
        ck_assert_int_eq(sock_listen_tcp("1.2.3.4:99999", 0), -ERANGE);
        ck_assert_int_eq(sock_listen_tcp("[::1", 0), -EINVAL);
        /* Not a local address. */
        ck_assert_int_eq(sock_listen_tcp("192.0.2.200", 0), -EADDRNOTAVAIL);
}
END_TEST

/* ---- Unix ---- */

static char *make_tmpdir(void) {
        char t[] = "/tmp/test-sock-XXXXXX";

        ck_assert_ptr_nonnull(mkdtemp(t));
        return strdup(t);
}

static void rm_tmpdir(char *d, const char *name) {
        char p[256];

        (void) snprintf(p, sizeof(p), "%s/%s", d, name);
        (void) unlink(p);
        (void) rmdir(d);
        free(d);
}

START_TEST(test_unix_mode_and_delete) {
        _cleanup_close_ int fd = -EBADF, fd2 = -EBADF, cfd = -EBADF, afd = -EBADF;
        char *dir = make_tmpdir(), path[256], buf[SOCK_ADDR_STRING_MAX];
        SockAddr a = { .un.sun_family = AF_UNIX };
        struct stat st;
        bool in_progress = true;
        mode_t old;

        (void) snprintf(path, sizeof(path), "%s/konn.sock", dir);
        old = umask(022);

        fd = sock_listen_unix(path, 0660, false);
        ck_assert_int_ge(fd, 0);
        assert_nonblock_cloexec(fd);
        ck_assert_int_eq(umask(022), 022); /* restored */
        ck_assert_int_eq(lstat(path, &st), 0);
        ck_assert(S_ISSOCK(st.st_mode));
        ck_assert_uint_eq(st.st_mode & 07777, 0660);

        /* Connect and accept through it. */
        memcpy(a.un.sun_path, path, strlen(path) + 1);
        cfd = sock_connect_start(&a, sizeof(a.un), &in_progress);
        ck_assert_int_ge(cfd, 0);
        ck_assert(!in_progress);
        ck_assert_int_eq(sock_connect_result(cfd), 0);
        afd = sock_accept(fd, NULL, NULL);
        ck_assert_int_ge(afd, 0);
        sock_set_nodelay(afd); /* not TCP: ignored */

        {
                SockAddr me = {};
                socklen_t l = sizeof(me);

                ck_assert_int_eq(getsockname(fd, &me.sa, &l), 0);
                ck_assert_str_eq(sock_addr_to_string(&me, l, buf, sizeof(buf)), path);
        }

        /* In use, not deleted → EADDRINUSE; deleted → a fresh socket with the new mode. */
        ck_assert_int_eq(sock_listen_unix(path, 0660, false), -EADDRINUSE);
        fd = safe_close(fd);
        ck_assert_int_eq(sock_listen_unix(path, 0660, false), -EADDRINUSE); /* stale */
        fd2 = sock_listen_unix(path, 0600, true);
        ck_assert_int_ge(fd2, 0);
        ck_assert_int_eq(lstat(path, &st), 0);
        ck_assert(S_ISSOCK(st.st_mode));
        ck_assert_uint_eq(st.st_mode & 07777, 0600);

        (void) umask(old);
        rm_tmpdir(dir, "konn.sock");
}
END_TEST

START_TEST(test_unix_no_delete_regular_file) {
        char *dir = make_tmpdir(), path[256];
        struct stat st;
        int fd;

        (void) snprintf(path, sizeof(path), "%s/file", dir);
        fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        ck_assert_int_ge(fd, 0);
        (void) close(fd);

        ck_assert_int_eq(sock_listen_unix(path, 0660, true), -EADDRINUSE);
        ck_assert_int_eq(lstat(path, &st), 0);
        ck_assert(S_ISREG(st.st_mode));

        rm_tmpdir(dir, "file");
}
END_TEST

START_TEST(test_unix_errors_and_abstract) {
        _cleanup_close_ int fd = -EBADF;
        const size_t sun_path_size = sizeof(((struct sockaddr_un *) NULL)->sun_path);
        char long_path[200] = {}, name[64], buf[SOCK_ADDR_STRING_MAX];
        SockAddr me = {};
        socklen_t l = sizeof(me);

        memset(long_path, 'x', sizeof(long_path) - 1);
        long_path[0] = '/';
        ck_assert_int_eq(sock_listen_unix(long_path, 0660, false), -ENAMETOOLONG);
        long_path[sun_path_size] = '\0'; /* exactly sun_path bytes: no room for the NUL */
        ck_assert_int_eq(sock_listen_unix(long_path, 0660, false), -ENAMETOOLONG);
        ck_assert_int_eq(sock_listen_unix("", 0660, false), -EINVAL);
        ck_assert_int_eq(sock_listen_unix(NULL, 0660, false), -EINVAL);
        ck_assert_int_eq(sock_listen_unix("/tmp/x.sock", 04660, false), -EINVAL);
        ck_assert_int_eq(sock_listen_unix("/nonexistent-dir/x.sock", 0660, false), -ENOENT);

        (void) snprintf(name, sizeof(name), "@konn-test-sock-%i", (int) getpid());
        fd = sock_listen_unix(name, 0600, true);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(getsockname(fd, &me.sa, &l), 0);
        ck_assert_str_eq(sock_addr_to_string(&me, l, buf, sizeof(buf)), name);
        ck_assert_int_eq(sock_listen_unix(name, 0600, true), -EADDRINUSE);
}
END_TEST

/* ---- sock_addr_to_string ---- */

START_TEST(test_addr_to_string) {
        char buf[SOCK_ADDR_STRING_MAX], lo[IF_NAMESIZE + 32];
        SockAddr a;
        socklen_t l;

        ck_assert_int_eq(sock_parse_numeric("127.0.0.1:80", 0, &a, &l), 0);
        ck_assert_str_eq(sock_addr_to_string(&a, l, buf, sizeof(buf)), "127.0.0.1:80");
        ck_assert_int_eq(sock_parse_numeric("[::1]:80", 0, &a, &l), 0);
        ck_assert_str_eq(sock_addr_to_string(&a, l, buf, sizeof(buf)), "[::1]:80");
        ck_assert_int_eq(sock_parse_numeric("[2001:db8:0:0:1:0:0:1]:443", 0, &a, &l), 0);
        ck_assert_str_eq(sock_addr_to_string(&a, l, buf, sizeof(buf)), "[2001:db8::1:0:0:1]:443");
        ck_assert_int_eq(sock_parse_numeric("[::ffff:1.2.3.4]:80", 0, &a, &l), 0);
        ck_assert_str_eq(sock_addr_to_string(&a, l, buf, sizeof(buf)), "1.2.3.4:80");
        ck_assert_int_eq(sock_parse_numeric("[fe80::1%4000000]:80", 0, &a, &l), 0);
        ck_assert_str_eq(sock_addr_to_string(&a, l, buf, sizeof(buf)), "[fe80::1%4000000]:80");
        ck_assert_int_eq(sock_parse_numeric("[fe80::1%lo]:80", 0, &a, &l), 0);
        (void) snprintf(lo, sizeof(lo), "[fe80::1%%lo]:80");
        ck_assert_str_eq(sock_addr_to_string(&a, l, buf, sizeof(buf)), lo);

        /* Truncation keeps a terminated prefix. */
        ck_assert_int_eq(sock_parse_numeric("127.0.0.1:80", 0, &a, &l), 0);
        ck_assert_str_eq(sock_addr_to_string(&a, l, buf, 5), "127.");
        ck_assert_str_eq(sock_addr_to_string(&a, l, buf, 0), "");
        ck_assert_str_eq(sock_addr_to_string(&a, l, NULL, 10), "");
        ck_assert_str_eq(sock_addr_to_string(&a, 3, buf, sizeof(buf)), "<address family 2>");
        ck_assert_str_eq(sock_addr_to_string(NULL, 16, buf, sizeof(buf)), "<nil>");
        ck_assert_str_eq(sock_addr_to_string(&a, 1, buf, sizeof(buf)), "<nil>");

        a = (SockAddr) { .un = { .sun_family = AF_UNIX, .sun_path = "/run/konn/x.sock" } };
        ck_assert_str_eq(sock_addr_to_string(&a, sizeof(a.un), buf, sizeof(buf)), "/run/konn/x.sock");
        l = offsetof(struct sockaddr_un, sun_path) + 4;
        ck_assert_str_eq(sock_addr_to_string(&a, l, buf, sizeof(buf)), "/run");
        a = (SockAddr) { .un = { .sun_family = AF_UNIX, .sun_path = "\0abs" } };
        ck_assert_str_eq(sock_addr_to_string(&a, l, buf, sizeof(buf)), "@abs");
        ck_assert_str_eq(sock_addr_to_string(&a, sizeof(sa_family_t), buf, sizeof(buf)), "@");

        a = (SockAddr) { .sa.sa_family = AF_PACKET };
        ck_assert_str_eq(sock_addr_to_string(&a, sizeof(a), buf, sizeof(buf)), "<address family 17>");
}
END_TEST

/* ---- Go error texts ---- */

static void assert_dial_error(const char *addr, int error, const char *want) {
        char buf[256];

        ck_assert_int_eq(sock_format_dial_error(addr, error, buf, sizeof(buf)), (int) strlen(want));
        ck_assert_str_eq(buf, want);
}

START_TEST(test_dial_error_texts) {
        assert_dial_error("127.0.0.1:1", -ECONNREFUSED, "dial tcp 127.0.0.1:1: connect: connection refused");
        assert_dial_error("127.0.0.1:1", ECONNREFUSED, "dial tcp 127.0.0.1:1: connect: connection refused");
        assert_dial_error("10.0.0.1:10250", -ETIMEDOUT, "dial tcp 10.0.0.1:10250: i/o timeout");
        assert_dial_error("10.0.0.1:1", -EHOSTUNREACH, "dial tcp 10.0.0.1:1: connect: no route to host");
        assert_dial_error("10.0.0.1:1", -ENETUNREACH,
                          "dial tcp 10.0.0.1:1: connect: network is unreachable");
        assert_dial_error("10.0.0.1:1", -ECONNRESET,
                          "dial tcp 10.0.0.1:1: connect: connection reset by peer");
        assert_dial_error("10.0.0.1:1", -EMFILE, "dial tcp 10.0.0.1:1: socket: too many open files");
        assert_dial_error("[::1]:80", -ECONNREFUSED, "dial tcp [::1]:80: connect: connection refused");
        /* Not pinned: glibc's text with Go's first-letter rule. */
        assert_dial_error("10.0.0.1:1", -EADDRNOTAVAIL,
                          "dial tcp 10.0.0.1:1: connect: cannot assign requested address");
        assert_dial_error("10.0.0.1:1", -EACCES, "dial tcp 10.0.0.1:1: connect: permission denied");
        assert_dial_error("10.0.0.1:1", -EPERM, "dial tcp 10.0.0.1:1: connect: operation not permitted");
        assert_dial_error("10.0.0.1:1", -ENFILE,
                          "dial tcp 10.0.0.1:1: socket: too many open files in system");
        assert_dial_error("10.0.0.1:1", -EDOTDOT, "dial tcp 10.0.0.1:1: connect: RFS specific error");
        assert_dial_error("10.0.0.1:1", -4000, "dial tcp 10.0.0.1:1: connect: errno 4000");
        assert_dial_error("", -ECONNREFUSED, "dial tcp: connect: connection refused");
}
END_TEST

START_TEST(test_lookup_and_address_error_texts) {
        char buf[256];

        ck_assert_int_eq(sock_format_lookup_error("foo.invalid", "no such host", buf, sizeof(buf)),
                         (int) strlen("dial tcp: lookup foo.invalid: no such host"));
        ck_assert_str_eq(buf, "dial tcp: lookup foo.invalid: no such host");

        ck_assert_int_eq(sock_format_address_error("foo", "missing port in address", buf, sizeof(buf)),
                         (int) strlen("dial tcp: address foo: missing port in address"));
        ck_assert_str_eq(buf, "dial tcp: address foo: missing port in address");

        ck_assert_int_eq(sock_format_address_error("65536", "invalid port", buf, sizeof(buf)),
                         (int) strlen("dial tcp: address 65536: invalid port"));
        ck_assert_str_eq(buf, "dial tcp: address 65536: invalid port");

        ck_assert_int_eq(sock_format_address_error("", "missing port in address", buf, sizeof(buf)),
                         (int) strlen("dial tcp: missing port in address"));
        ck_assert_str_eq(buf, "dial tcp: missing port in address");
}
END_TEST

START_TEST(test_error_text_truncation_and_args) {
        char buf[10];

        ck_assert_int_eq(sock_format_dial_error("127.0.0.1:1", -ECONNREFUSED, buf, sizeof(buf)), -ENOBUFS);
        ck_assert_str_eq(buf, "dial tcp ");
        ck_assert_int_eq(sock_format_lookup_error("foo", "no such host", buf, sizeof(buf)), -ENOBUFS);
        ck_assert_str_eq(buf, "dial tcp:");
        ck_assert_int_eq(sock_format_address_error("foo", "x", buf, sizeof(buf)), -ENOBUFS);
        ck_assert_str_eq(buf, "dial tcp:");

        ck_assert_int_eq(sock_format_dial_error("a", 0, buf, sizeof(buf)), -EINVAL);
        ck_assert_int_eq(sock_format_dial_error(NULL, -EIO, buf, sizeof(buf)), -EINVAL);
        ck_assert_int_eq(sock_format_dial_error("a", -EIO, NULL, 0), -EINVAL);
        ck_assert_int_eq(sock_format_dial_error("a", -EIO, buf, 0), -EINVAL);
        ck_assert_int_eq(sock_format_lookup_error(NULL, "x", buf, sizeof(buf)), -EINVAL);
        ck_assert_int_eq(sock_format_lookup_error("h", NULL, buf, sizeof(buf)), -EINVAL);
        ck_assert_int_eq(sock_format_address_error(NULL, "x", buf, sizeof(buf)), -EINVAL);
        ck_assert_int_eq(sock_format_address_error("a", NULL, buf, sizeof(buf)), -EINVAL);
}
END_TEST

static Suite *sock_suite(void) {
        Suite *s = suite_create("sock");
        TCase *tc;

        tc = tcase_create("parse");
        tcase_add_test(tc, test_parse_ipv4);
        tcase_add_test(tc, test_parse_ipv6);
        tcase_add_test(tc, test_parse_names);
        tcase_add_test(tc, test_parse_bad_port);
        tcase_add_test(tc, test_parse_malformed);
        tcase_add_test(tc, test_split);
        tcase_add_test(tc, test_split_errors);
        suite_add_tcase(s, tc);

        tc = tcase_create("tcp");
        tcase_add_test(tc, test_tcp_listen_connect_accept);
        tcase_add_test(tc, test_tcp_connect_refused);
        tcase_add_test(tc, test_tcp_connect_local_completes_at_once);
        tcase_add_test(tc, test_tcp_listen_wildcard);
        tcase_add_test(tc, test_tcp_listen_addresses);
        suite_add_tcase(s, tc);

        tc = tcase_create("unix");
        tcase_add_test(tc, test_unix_mode_and_delete);
        tcase_add_test(tc, test_unix_no_delete_regular_file);
        tcase_add_test(tc, test_unix_errors_and_abstract);
        suite_add_tcase(s, tc);

        tc = tcase_create("format");
        tcase_add_test(tc, test_addr_to_string);
        tcase_add_test(tc, test_dial_error_texts);
        tcase_add_test(tc, test_lookup_and_address_error_texts);
        tcase_add_test(tc, test_error_text_truncation_and_args);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        SRunner *sr = srunner_create(sock_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
