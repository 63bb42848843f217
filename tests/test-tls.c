/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

/*
 * Unit tests for src/shared/tls.c. A test PKI is generated once per run (test-certs). Each test
 * connects a client and a server TlsConn over a non-blocking AF_UNIX socketpair and drives both
 * handshakes alternately with poll(), bounded in rounds and time.
 */

#include <check.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "log.h"
#include "macro.h"
#include "tls.h"
#include "test-certs.h"

#define P(name) CERT(name)

/* Keys gen-certs.sh does not make: an RSA key (another OpenSSL key slot than the EC certificates) and an
 * encrypted copy of server.key. */
static void write_extra_keys(void) {
        EVP_PKEY *rsa, *key;
        FILE *f;

        rsa = EVP_RSA_gen(2048);
        ck_assert_ptr_nonnull(rsa);
        f = fopen(P("rsa.key"), "we");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(PEM_write_PrivateKey(f, rsa, NULL, NULL, 0, NULL, NULL), 1);
        ck_assert_int_eq(fclose(f), 0);
        EVP_PKEY_free(rsa);

        f = fopen(P("server.key"), "re");
        ck_assert_ptr_nonnull(f);
        key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        ck_assert_ptr_nonnull(key);
        ck_assert_int_eq(fclose(f), 0);
        f = fopen(P("encrypted.key"), "we");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(PEM_write_PrivateKey(f, key, EVP_aes_128_cbc(), (const unsigned char *) "secret", 6,
                                              NULL, NULL),
                         1);
        ck_assert_int_eq(fclose(f), 0);
        EVP_PKEY_free(key);
}

static void tls_certs_setup(void) {
        certs_setup();
        write_extra_keys();
}

static uint64_t now_usec(void) {
        struct timespec ts;

        ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* Contexts. */

static SSL_CTX *server_ctx(const char *cert, const char *key, const char *ca, TlsAlpn alpn) {
        _cleanup_free_ char *error = NULL;
        SSL_CTX *ctx = NULL;

        ck_assert_int_eq(tls_ctx_new_server(P(cert), P(key), ca ? P(ca) : NULL, alpn, &ctx, &error), 0);
        ck_assert_ptr_null(error);
        ck_assert_ptr_nonnull(ctx);
        return ctx;
}

static SSL_CTX *client_ctx(const char *cert, const char *key, char *const *extra_alpn) {
        _cleanup_free_ char *error = NULL;
        SSL_CTX *ctx = NULL;

        ck_assert_int_eq(tls_ctx_new_client(P("ca.crt"), cert ? P(cert) : NULL, key ? P(key) : NULL,
                                            extra_alpn, &ctx, &error), 0);
        ck_assert_ptr_null(error);
        ck_assert_ptr_nonnull(ctx);
        return ctx;
}

/* A client context built directly with OpenSSL: trusts ca.crt, offers exactly alpn (may be NULL). */
static SSL_CTX *raw_client_ctx(const char *alpn, size_t alpn_len, const char *cert, const char *key) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

        ck_assert_ptr_nonnull(ctx);
        ck_assert_int_eq(SSL_CTX_load_verify_file(ctx, P("ca.crt")), 1);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (alpn)
                ck_assert_int_eq(SSL_CTX_set_alpn_protos(ctx, (const uint8_t *) alpn, (unsigned) alpn_len), 0);
        if (cert) {
                ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(ctx, P(cert)), 1);
                ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(ctx, P(key), SSL_FILETYPE_PEM), 1);
        }
        return ctx;
}

/* Connection pairs. */

typedef struct Pair {
        int fd[2]; /* [0] client side, [1] server side */
        TlsConn *client, *server;
} Pair;

#define PAIR_NULL ((Pair) { .fd = { -EBADF, -EBADF } })

static void pair_done(Pair *p) {
        p->client = tls_conn_free(p->client);
        p->server = tls_conn_free(p->server);
        p->fd[0] = safe_close(p->fd[0]);
        p->fd[1] = safe_close(p->fd[1]);
}

static void pair_init(Pair *p, SSL_CTX *server, SSL_CTX *client, const char *host) {
        *p = PAIR_NULL;
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p->fd), 0);
        ck_assert_int_eq(tls_conn_new(client, p->fd[0], false, host, &p->client), 0);
        ck_assert_int_eq(tls_conn_new(server, p->fd[1], true, NULL, &p->server), 0);
}

/* Drive both handshakes until neither returns -EAGAIN (≤ 1000 rounds, ≤ 5 s). */
static void pair_handshake(Pair *p, int *ret_client, int *ret_server) {
        uint64_t deadline = now_usec() + 5 * USEC_PER_SEC;
        int rc = -EAGAIN, rs = -EAGAIN;

        for (unsigned round = 0; round < 1000; round++) {
                struct pollfd pfd[2];
                unsigned n = 0;
                uint64_t t;

                if (rc == -EAGAIN)
                        rc = tls_conn_handshake(p->client);
                if (rs == -EAGAIN)
                        rs = tls_conn_handshake(p->server);
                if (rc != -EAGAIN && rs != -EAGAIN)
                        break;

                if (rc == -EAGAIN) {
                        ck_assert_uint_ne(tls_conn_events(p->client), 0);
                        pfd[n++] = (struct pollfd) { p->fd[0], (short) tls_conn_events(p->client), 0 };
                }
                if (rs == -EAGAIN) {
                        ck_assert_uint_ne(tls_conn_events(p->server), 0);
                        pfd[n++] = (struct pollfd) { p->fd[1], (short) tls_conn_events(p->server), 0 };
                }

                t = now_usec();
                if (t >= deadline)
                        break;
                if (poll(pfd, n, (int) ((deadline - t) / USEC_PER_MSEC) + 1) == 0)
                        break;
        }

        *ret_client = rc;
        *ret_server = rs;
}

static void pair_connect(Pair *p, SSL_CTX *server, SSL_CTX *client, const char *host) {
        int rc, rs;

        pair_init(p, server, client, host);
        pair_handshake(p, &rc, &rs);
        ck_assert_int_eq(rc, 0);
        ck_assert_int_eq(rs, 0);
}

/* Read exactly size bytes (polling as needed). */
static void read_exact(TlsConn *c, int fd, void *buf, size_t size) {
        uint64_t deadline = now_usec() + 5 * USEC_PER_SEC;
        size_t done = 0;

        while (done < size) {
                ssize_t n = tls_conn_read(c, (uint8_t *) buf + done, size - done);

                if (n == -EAGAIN) {
                        struct pollfd pfd = { .fd = fd, .events = (short) tls_conn_events(c) };

                        ck_assert_int_eq(tls_conn_events(c), EPOLLIN);
                        ck_assert_uint_lt(now_usec(), deadline);
                        ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
                        continue;
                }
                ck_assert_int_gt(n, 0);
                done += (size_t) n;
        }
}

/* Read until something other than -EAGAIN comes back. */
static ssize_t read_result(TlsConn *c, int fd, void *buf, size_t size) {
        for (unsigned i = 0; i < 100; i++) {
                ssize_t n = tls_conn_read(c, buf, size);
                struct pollfd pfd = { .fd = fd, .events = POLLIN };

                if (n != -EAGAIN)
                        return n;
                ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
        }
        ck_abort_msg("read never completed");
        return -EAGAIN;
}

static void write_all(TlsConn *c, const void *buf, size_t size) {
        ck_assert_int_eq(tls_conn_write(c, buf, size), (ssize_t) size);
}

/* Tests. */

START_TEST(test_alpn_to_string) {
        ck_assert_str_eq(tls_alpn_to_string(TLS_ALPN_H2), "h2");
        ck_assert_str_eq(tls_alpn_to_string(TLS_ALPN_HTTP11), "http/1.1");
        ck_assert_ptr_null(tls_alpn_to_string(TLS_ALPN_NONE));
        ck_assert_ptr_null(tls_alpn_to_string(_TLS_ALPN_MAX));
        ck_assert_ptr_null(tls_alpn_to_string(_TLS_ALPN_INVALID));
}
END_TEST

START_TEST(test_mtls_h2) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char buf[64];

        pair_connect(&p, s, c, "127.0.0.1");

        ck_assert_int_eq(tls_conn_alpn(p.client), TLS_ALPN_H2);
        ck_assert_int_eq(tls_conn_alpn(p.server), TLS_ALPN_H2);
        ck_assert_str_eq(tls_conn_version(p.client), "TLSv1.3");
        ck_assert_str_eq(tls_conn_version(p.server), "TLSv1.3");
        ck_assert_str_eq(tls_conn_error(p.client), "");
        ck_assert_str_eq(tls_conn_error(p.server), "");
        ck_assert_uint_eq(tls_conn_events(p.client), 0);
        ck_assert_uint_eq(tls_conn_events(p.server), 0);
        /* Completed handshakes stay complete. */
        ck_assert_int_eq(tls_conn_handshake(p.client), 0);
        ck_assert_int_eq(tls_conn_handshake(p.server), 0);

        ck_assert_int_eq(tls_conn_peer_name(p.server, buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, "konn-agent-1");
        ck_assert_int_eq(tls_conn_peer_name(p.client, buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, "konn-server");

        write_all(p.client, "ping", 4);
        memset(buf, 0, sizeof(buf));
        read_exact(p.server, p.fd[1], buf, 4);
        ck_assert_mem_eq(buf, "ping", 4);

        write_all(p.server, "pong!", 5);
        memset(buf, 0, sizeof(buf));
        read_exact(p.client, p.fd[0], buf, 5);
        ck_assert_mem_eq(buf, "pong!", 5);

        /* Nothing more to read. */
        ck_assert_int_eq(tls_conn_read(p.server, buf, sizeof(buf)), -EAGAIN);
        ck_assert_uint_eq(tls_conn_events(p.server), EPOLLIN);
}
END_TEST

static const struct {
        const char *host;
        int client;
        const char *error;
} host_cases[] = {
        { "localhost", 0, "" },
        { "kubernetes", 0, "" },
        { "127.0.0.1", 0, "" },
        { "::1", 0, "" },
        { "[::1]", 0, "" },
        { "example.com", -EPROTO, "certificate verify failed: hostname mismatch" },
        { "10.0.0.1", -EPROTO, "certificate verify failed: IP address mismatch" },
        { "::2", -EPROTO, "certificate verify failed: IP address mismatch" },
        { "127.0.0.1.nip.io", -EPROTO, "certificate verify failed: hostname mismatch" },
};

START_TEST(test_verify_host) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        int rc, rs;

        pair_init(&p, s, c, host_cases[_i].host);
        pair_handshake(&p, &rc, &rs);
        ck_assert_int_eq(rc, host_cases[_i].client);
        ck_assert_str_eq(tls_conn_error(p.client), host_cases[_i].error);
        if (rc == 0)
                ck_assert_int_eq(rs, 0);
        else {
                /* The client aborts with an alert before the server finishes. */
                ck_assert_int_eq(rs, -EPROTO);
                ck_assert_str_eq(tls_conn_error(p.server), "sslv3 alert bad certificate");
        }
}
END_TEST

START_TEST(test_wrong_san) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s =
                server_ctx("wrongsan-server.crt", "wrongsan-server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char buf[16];
        int rc, rs;

        pair_init(&p, s, c, "localhost");
        pair_handshake(&p, &rc, &rs);
        ck_assert_int_eq(rc, -EPROTO);
        ck_assert_str_eq(tls_conn_error(p.client), "certificate verify failed: hostname mismatch");
        ck_assert_int_eq(rs, -EPROTO);
        ck_assert_str_eq(tls_conn_error(p.server), "sslv3 alert bad certificate");

        /* Failure is sticky and blocks I/O. */
        ck_assert_int_eq(tls_conn_handshake(p.client), -EPROTO);
        ck_assert_int_eq(tls_conn_read(p.client, buf, sizeof(buf)), -EPROTO);
        ck_assert_int_eq(tls_conn_write(p.client, "x", 1), -EPROTO);
        ck_assert_int_eq(tls_conn_shutdown(p.client), 0);
        ck_assert_uint_eq(tls_conn_events(p.client), 0);
        ck_assert_int_eq(tls_conn_peer_name(p.client, buf, sizeof(buf)), -ENOENT);
}
END_TEST

START_TEST(test_bulk_partial_writes) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        _cleanup_free_ uint8_t *in = NULL, *out = NULL;
        const size_t total = 1 * MIB;
        size_t sent = 0, received = 0;
        unsigned partial = 0, eagain = 0, rounds = 0;

        pair_connect(&p, s, c, "localhost");

        in = malloc(total);
        out = malloc(total);
        ck_assert_ptr_nonnull(in);
        ck_assert_ptr_nonnull(out);
        for (size_t i = 0; i < total; i++)
                in[i] = (uint8_t) (i * 131 + (i >> 13));

        while (received < total) {
                ck_assert_uint_lt(++rounds, 100000);

                /* Write until the socket is full. */
                while (sent < total) {
                        ssize_t n = tls_conn_write(p.client, in + sent, total - sent);

                        if (n == -EAGAIN) {
                                eagain++;
                                ck_assert_uint_eq(tls_conn_events(p.client), EPOLLOUT);
                                break;
                        }
                        ck_assert_int_gt(n, 0);
                        ck_assert_uint_le((size_t) n, total - sent);
                        if ((size_t) n < total - sent)
                                partial++;
                        sent += (size_t) n;
                }

                /* Drain in odd-sized chunks, so records are split across reads. */
                for (;;) {
                        size_t chunk = MIN((size_t) 5000, total - received);
                        ssize_t n = tls_conn_read(p.server, out + received, chunk);

                        if (n == -EAGAIN)
                                break;
                        ck_assert_int_gt(n, 0);
                        received += (size_t) n;
                        if (received == total)
                                break;
                }
        }

        ck_assert_uint_eq(sent, total);
        ck_assert_uint_eq(received, total);
        ck_assert_mem_eq(in, out, total);
        ck_assert_uint_gt(partial, 0);
        ck_assert_uint_gt(eagain, 0);
        ck_assert_uint_eq(tls_conn_pending(p.server), 0);
}
END_TEST

START_TEST(test_pending) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char msg[100], buf[100];

        pair_connect(&p, s, c, "localhost");

        for (size_t i = 0; i < sizeof(msg); i++)
                msg[i] = (char) ('a' + i % 26);
        write_all(p.server, msg, sizeof(msg));

        ck_assert_uint_eq(tls_conn_pending(p.client), 0);
        read_exact(p.client, p.fd[0], buf, 10);
        ck_assert_mem_eq(buf, msg, 10);
        /* The rest of the record is decrypted inside OpenSSL; the socket is empty. */
        ck_assert_uint_eq(tls_conn_pending(p.client), 90);
        ck_assert_int_eq(tls_conn_read(p.client, buf, sizeof(buf)), 90);
        ck_assert_mem_eq(buf, msg + 10, 90);
        ck_assert_uint_eq(tls_conn_pending(p.client), 0);
        ck_assert_int_eq(tls_conn_read(p.client, buf, sizeof(buf)), -EAGAIN);
}
END_TEST

START_TEST(test_no_client_cert) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx(NULL, NULL, NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char buf[16];
        int rc, rs;

        pair_init(&p, s, c, "localhost");
        pair_handshake(&p, &rc, &rs);
        ck_assert_int_eq(rs, -EPROTO);
        ck_assert_ptr_nonnull(strstr(tls_conn_error(p.server), "certificate"));
        ck_assert_str_eq(tls_conn_error(p.server), "peer did not return a certificate");
        ck_assert_int_eq(tls_conn_peer_name(p.server, buf, sizeof(buf)), -ENOENT);

        /* TLS 1.3: the client is done before the server looks at its (missing) certificate, and learns of
         * the refusal from the alert on its first read. */
        ck_assert_int_eq(rc, 0);
        ck_assert_int_eq(read_result(p.client, p.fd[0], buf, sizeof(buf)), -EPROTO);
        ck_assert_str_eq(tls_conn_error(p.client), "tlsv13 alert certificate required");
}
END_TEST

START_TEST(test_no_client_cert_tls12) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx(NULL, NULL, NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        int rc, rs;

        ck_assert_int_eq(SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION), 1);
        pair_init(&p, s, c, "localhost");
        pair_handshake(&p, &rc, &rs);
        ck_assert_int_eq(rs, -EPROTO);
        ck_assert_str_eq(tls_conn_error(p.server), "peer did not return a certificate");
        ck_assert_int_eq(rc, -EPROTO);
        ck_assert_str_eq(tls_conn_error(p.client), "sslv3 alert handshake failure");
}
END_TEST

START_TEST(test_mtls_tls12) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char buf[16];

        ck_assert_int_eq(SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION), 1);
        pair_connect(&p, s, c, "::1");
        ck_assert_str_eq(tls_conn_version(p.client), "TLSv1.2");
        ck_assert_str_eq(tls_conn_version(p.server), "TLSv1.2");
        ck_assert_int_eq(tls_conn_alpn(p.client), TLS_ALPN_H2);
        ck_assert_int_eq(tls_conn_alpn(p.server), TLS_ALPN_H2);
        ck_assert_int_eq(tls_conn_peer_name(p.server, buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, "konn-agent-1");

        write_all(p.server, "tls12", 5);
        read_exact(p.client, p.fd[0], buf, 5);
        ck_assert_mem_eq(buf, "tls12", 5);
}
END_TEST

static const struct {
        const char *cert, *key, *server_error, *client_error;
} bad_client_cases[] = {
        { "other-agent.crt", "other-agent.key",
          "certificate verify failed: unable to get local issuer certificate", "tlsv1 alert unknown ca" },
        { "expired-agent.crt", "expired-agent.key",
          "certificate verify failed: certificate has expired", "sslv3 alert certificate expired" },
        /* A server certificate with clientAuth EKU... but from the right CA: accepted. Covered elsewhere. */
};

START_TEST(test_bad_client_cert) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c =
                client_ctx(bad_client_cases[_i].cert, bad_client_cases[_i].key, NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char buf[16];
        int rc, rs;

        pair_init(&p, s, c, "localhost");
        pair_handshake(&p, &rc, &rs);
        ck_assert_int_eq(rs, -EPROTO);
        ck_assert_str_eq(tls_conn_error(p.server), bad_client_cases[_i].server_error);
        ck_assert_int_eq(tls_conn_peer_name(p.server, buf, sizeof(buf)), -ENOENT);
        ck_assert_int_eq(rc, 0);
        ck_assert_int_eq(read_result(p.client, p.fd[0], buf, sizeof(buf)), -EPROTO);
        ck_assert_str_eq(tls_conn_error(p.client), bad_client_cases[_i].client_error);
}
END_TEST

START_TEST(test_no_mtls) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", NULL, TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx(NULL, NULL, NULL);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c2 = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL, p2 = PAIR_NULL;
        char buf[16];

        pair_connect(&p, s, c, "kubernetes");
        ck_assert_int_eq(tls_conn_peer_name(p.server, buf, sizeof(buf)), -ENOENT);
        ck_assert_int_eq(tls_conn_peer_name(p.client, buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, "konn-server");

        /* No certificate is requested, so none is sent even if the client has one. */
        pair_connect(&p2, s, c2, "kubernetes");
        ck_assert_int_eq(tls_conn_peer_name(p2.server, buf, sizeof(buf)), -ENOENT);
}
END_TEST

START_TEST(test_peer_name) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s =
                server_ctx("nocn-server.crt", "nocn-server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char buf[32];

        pair_init(&p, s, c, "nocn.example");
        ck_assert_int_eq(tls_conn_peer_name(p.client, buf, sizeof(buf)), -ENOENT);
        ck_assert_int_eq(tls_conn_peer_name(p.server, buf, sizeof(buf)), -ENOENT);
        {
                int rc, rs;

                pair_handshake(&p, &rc, &rs);
                ck_assert_int_eq(rc, 0);
                ck_assert_int_eq(rs, 0);
        }

        /* No CN: the first DNS SAN. */
        ck_assert_int_eq(tls_conn_peer_name(p.client, buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, "nocn.example");
        ck_assert_int_eq(tls_conn_peer_name(p.client, buf, STRLEN("nocn.example") + 1), 0);
        ck_assert_str_eq(buf, "nocn.example");
        ck_assert_int_eq(tls_conn_peer_name(p.client, buf, STRLEN("nocn.example")), -ENOBUFS);

        ck_assert_int_eq(tls_conn_peer_name(p.server, buf, STRLEN("konn-agent-1") + 1), 0);
        ck_assert_str_eq(buf, "konn-agent-1");
        strcpy(buf, "untouched");
        ck_assert_int_eq(tls_conn_peer_name(p.server, buf, STRLEN("konn-agent-1")), -ENOBUFS);
        ck_assert_str_eq(buf, "untouched");
        ck_assert_int_eq(tls_conn_peer_name(p.server, buf, 0), -ENOBUFS);
}
END_TEST

static const struct {
        const char *alpn;
        size_t len;
} no_h2_cases[] = {
        { NULL, 0 },                                 /* no ALPN extension at all */
        { "\x08http/1.1", STRLEN("\x08http/1.1") }, /* ALPN without h2 */
        { "\x02h3\x03h2c", STRLEN("\x02h3\x03h2c") },
};

START_TEST(test_h2_refused) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c =
                raw_client_ctx(no_h2_cases[_i].alpn, no_h2_cases[_i].len, "agent.crt", "agent.key");
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        int rc, rs;

        pair_init(&p, s, c, "localhost");
        pair_handshake(&p, &rc, &rs);
        ck_assert_int_eq(rs, -EPROTO);
        ck_assert_str_eq(tls_conn_error(p.server), "client did not offer ALPN h2");
        ck_assert_int_eq(rc, -EPROTO);
        ck_assert_str_eq(tls_conn_error(p.client), "tlsv1 alert no application protocol");
}
END_TEST

START_TEST(test_h2_among_others) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c =
                raw_client_ctx("\x08http/1.1\x02h2", STRLEN("\x08http/1.1\x02h2"), "agent.crt", "agent.key");
        _cleanup_(pair_done) Pair p = PAIR_NULL;

        pair_connect(&p, s, c, "localhost");
        ck_assert_int_eq(tls_conn_alpn(p.server), TLS_ALPN_H2);
}
END_TEST

static char recorded_alpn[64];
static unsigned recorded_alpn_len;

static int record_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned inlen, void *arg) {
        ck_assert_uint_le(inlen, sizeof(recorded_alpn));
        memcpy(recorded_alpn, in, inlen);
        recorded_alpn_len = inlen;
        *out = (const unsigned char *) "h2";
        *outlen = 2;
        return SSL_TLSEXT_ERR_OK;
}

START_TEST(test_extra_alpn_order) {
        char *const extra[] = { (char *) "foo", (char *) "konnectivity", NULL };
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", extra);
        _cleanup_(pair_done) Pair p = PAIR_NULL, p2 = PAIR_NULL;
        static const char expected[] = "\x03" "foo" "\x0c" "konnectivity" "\x02" "h2";

        /* Exact bytes offered: extras first, in order, then h2. */
        SSL_CTX_set_alpn_select_cb(s, record_alpn_cb, NULL);
        SSL_CTX_set_client_hello_cb(s, NULL, NULL);
        pair_connect(&p, s, c, "localhost");
        ck_assert_uint_eq(recorded_alpn_len, STRLEN(expected));
        ck_assert_mem_eq(recorded_alpn, expected, STRLEN(expected));
        ck_assert_int_eq(tls_conn_alpn(p.client), TLS_ALPN_H2);

        /* And our H2 server still picks h2 out of that list. */
        {
                _cleanup_(SSL_CTX_freep) SSL_CTX *s2 =
                        server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);

                pair_connect(&p2, s2, c, "localhost");
                ck_assert_int_eq(tls_conn_alpn(p2.server), TLS_ALPN_H2);
                ck_assert_int_eq(tls_conn_alpn(p2.client), TLS_ALPN_H2);
        }
}
END_TEST

#define H2_HTTP11 "\x02h2\x08http/1.1"

START_TEST(test_http11_server) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s =
                server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_HTTP11);
        _cleanup_(SSL_CTX_freep) SSL_CTX *none = raw_client_ctx(NULL, 0, "client.crt", "client.key");
        _cleanup_(SSL_CTX_freep) SSL_CTX *both =
                raw_client_ctx(H2_HTTP11, STRLEN(H2_HTTP11), "client.crt", "client.key");
        _cleanup_(SSL_CTX_freep) SSL_CTX *h2 = client_ctx("client.crt", "client.key", NULL);
        _cleanup_(pair_done) Pair p1 = PAIR_NULL, p2 = PAIR_NULL, p3 = PAIR_NULL;
        char buf[32];
        int rc, rs;

        /* A client offering nothing gets through with no ALPN. */
        pair_connect(&p1, s, none, "localhost");
        ck_assert_int_eq(tls_conn_alpn(p1.client), TLS_ALPN_NONE);
        ck_assert_int_eq(tls_conn_alpn(p1.server), TLS_ALPN_NONE);
        ck_assert_int_eq(tls_conn_peer_name(p1.server, buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, "kube-apiserver");

        /* h2 is never selected, even when preferred by the client. */
        pair_connect(&p2, s, both, "localhost");
        ck_assert_int_eq(tls_conn_alpn(p2.client), TLS_ALPN_HTTP11);
        ck_assert_int_eq(tls_conn_alpn(p2.server), TLS_ALPN_HTTP11);

        /* Our h2-only client refuses a server that does not select h2. */
        pair_init(&p3, s, h2, "localhost");
        pair_handshake(&p3, &rc, &rs);
        ck_assert_int_eq(rc, -EPROTO);
        ck_assert_str_eq(tls_conn_error(p3.client), "server did not select ALPN h2");
        ck_assert_int_eq(rs, 0);
        ck_assert_int_eq(tls_conn_alpn(p3.server), TLS_ALPN_NONE);
}
END_TEST

START_TEST(test_alpn_none_server) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", NULL, TLS_ALPN_NONE);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = raw_client_ctx("\x02h2", 3, NULL, NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;

        pair_connect(&p, s, c, "localhost");
        ck_assert_int_eq(tls_conn_alpn(p.client), TLS_ALPN_NONE);
        ck_assert_int_eq(tls_conn_alpn(p.server), TLS_ALPN_NONE);
}
END_TEST

START_TEST(test_tls11_refused) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", NULL, TLS_ALPN_HTTP11);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = raw_client_ctx(NULL, 0, NULL, NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL, control = PAIR_NULL;
        int rc, rs;

        ck_assert_int_eq(SSL_CTX_get_min_proto_version(s), TLS1_2_VERSION);

        /* Lower the security level on both sides, so that only our protocol floor is in the way. */
        SSL_CTX_set_security_level(s, 0);
        ck_assert_int_eq(SSL_CTX_set_cipher_list(s, "DEFAULT:@SECLEVEL=0"), 1);
        SSL_CTX_set_security_level(c, 0);
        ck_assert_int_eq(SSL_CTX_set_cipher_list(c, "DEFAULT:@SECLEVEL=0"), 1);
        ck_assert_int_eq(SSL_CTX_set_min_proto_version(c, TLS1_1_VERSION), 1);
        ck_assert_int_eq(SSL_CTX_set_max_proto_version(c, TLS1_1_VERSION), 1);

        pair_init(&p, s, c, "localhost");
        pair_handshake(&p, &rc, &rs);
        ck_assert_int_eq(rs, -EPROTO);
        ck_assert_str_eq(tls_conn_error(p.server), "unsupported protocol");
        ck_assert_int_eq(rc, -EPROTO);
        ck_assert_str_eq(tls_conn_error(p.client), "tlsv1 alert protocol version");

        /* Control: without the floor the same client gets through, so the refusal above was ours. */
        ck_assert_int_eq(SSL_CTX_set_min_proto_version(s, TLS1_1_VERSION), 1);
        pair_connect(&control, s, c, "localhost");
        ck_assert_str_eq(tls_conn_version(control.server), "TLSv1.1");
}
END_TEST

START_TEST(test_shutdown_eof) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char buf[16];

        pair_connect(&p, s, c, "localhost");

        write_all(p.client, "last", 4);
        ck_assert_int_eq(tls_conn_shutdown(p.client), 0);
        ck_assert_int_eq(tls_conn_shutdown(p.client), 0);
        ck_assert_int_eq(tls_conn_write(p.client, "x", 1), -EPIPE);

        read_exact(p.server, p.fd[1], buf, 4);
        ck_assert_mem_eq(buf, "last", 4);
        ck_assert_int_eq(read_result(p.server, p.fd[1], buf, sizeof(buf)), 0);
        ck_assert_int_eq(tls_conn_read(p.server, buf, sizeof(buf)), 0);

        /* Half close: the server may still answer, then close too. */
        write_all(p.server, "bye", 3);
        ck_assert_int_eq(tls_conn_shutdown(p.server), 0);
        read_exact(p.client, p.fd[0], buf, 3);
        ck_assert_mem_eq(buf, "bye", 3);
        ck_assert_int_eq(read_result(p.client, p.fd[0], buf, sizeof(buf)), 0);
        ck_assert_int_eq(tls_conn_read(p.client, buf, sizeof(buf)), 0);
}
END_TEST

START_TEST(test_tcp_eof) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char buf[16];

        pair_connect(&p, s, c, "localhost");

        write_all(p.client, "abc", 3);
        ck_assert_int_eq(shutdown(p.fd[0], SHUT_WR), 0); /* no close_notify */

        read_exact(p.server, p.fd[1], buf, 3);
        ck_assert_mem_eq(buf, "abc", 3);
        ck_assert_int_eq(read_result(p.server, p.fd[1], buf, sizeof(buf)), 0);
        ck_assert_str_eq(tls_conn_error(p.server), "unexpected EOF from peer");
        ck_assert_int_eq(tls_conn_read(p.server, buf, sizeof(buf)), 0);
        /* OpenSSL is in a fatal state after an unclean EOF: no writes, shutdown is a no-op. */
        ck_assert_int_eq(tls_conn_write(p.server, "x", 1), -EPIPE);
        ck_assert_int_eq(tls_conn_shutdown(p.server), 0);
        ck_assert_uint_eq(tls_conn_pending(p.server), 0);
}
END_TEST

START_TEST(test_handshake_peer_gone) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char buf[8];

        pair_init(&p, s, c, "localhost");

        /* ClientHello sent, now waiting for the ServerHello. */
        ck_assert_int_eq(tls_conn_handshake(p.client), -EAGAIN);
        ck_assert_uint_eq(tls_conn_events(p.client), EPOLLIN);
        ck_assert_int_eq(tls_conn_read(p.client, buf, sizeof(buf)), -ENOTCONN);
        ck_assert_int_eq(tls_conn_write(p.client, "x", 1), -ENOTCONN);
        ck_assert_uint_eq(tls_conn_pending(p.client), 0);
        ck_assert_int_eq(tls_conn_shutdown(p.client), 0);

        /* The server goes away without reading the ClientHello: AF_UNIX reports a reset. */
        p.server = tls_conn_free(p.server);
        p.fd[1] = safe_close(p.fd[1]);

        ck_assert_int_eq(tls_conn_handshake(p.client), -ECONNRESET);
        ck_assert_str_eq(tls_conn_error(p.client), "Connection reset by peer");
        ck_assert_int_eq(tls_conn_handshake(p.client), -ECONNRESET);
        ck_assert_uint_eq(tls_conn_events(p.client), 0);
}
END_TEST

START_TEST(test_handshake_peer_eof) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char hello[4096];

        pair_init(&p, s, c, "localhost");
        ck_assert_int_eq(tls_conn_handshake(p.client), -EAGAIN);

        /* The server side reads the ClientHello and hangs up cleanly (TCP FIN). */
        ck_assert_int_gt(read(p.fd[1], hello, sizeof(hello)), 0);
        ck_assert_int_eq(shutdown(p.fd[1], SHUT_WR), 0);

        ck_assert_int_eq(tls_conn_handshake(p.client), -ECONNRESET);
        ck_assert_str_eq(tls_conn_error(p.client), "connection closed by peer during handshake");
}
END_TEST

START_TEST(test_write_blocks) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        char buf[16 * 1024] = {};
        ssize_t n = 0;
        unsigned i;

        pair_connect(&p, s, c, "localhost");

        ck_assert_int_eq(tls_conn_write(p.client, buf, 0), 0);
        ck_assert_int_eq(tls_conn_read(p.client, buf, 0), -EINVAL);

        for (i = 0; i < 10000; i++) {
                n = tls_conn_write(p.client, buf, sizeof(buf));
                if (n < 0)
                        break;
                ck_assert_int_eq(n, (ssize_t) sizeof(buf));
        }
        ck_assert_int_eq(n, -EAGAIN);
        ck_assert_uint_eq(tls_conn_events(p.client), EPOLLOUT);

        /* A read that also has to wait adds EPOLLIN. */
        ck_assert_int_eq(tls_conn_read(p.client, buf, sizeof(buf)), -EAGAIN);
        ck_assert_uint_eq(tls_conn_events(p.client), EPOLLIN | EPOLLOUT);
}
END_TEST

START_TEST(test_write_peer_closed) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx("agent.crt", "agent.key", NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;

        pair_connect(&p, s, c, "localhost");
        p.server = tls_conn_free(p.server);
        p.fd[1] = safe_close(p.fd[1]);

        /* SIGPIPE is not ignored here: without MSG_NOSIGNAL this test dies. */
        ck_assert_int_eq(tls_conn_write(p.client, "x", 1), -ECONNRESET);
        ck_assert_str_eq(tls_conn_error(p.client), "Broken pipe");
        ck_assert_int_eq(tls_conn_write(p.client, "x", 1), -ECONNRESET);
        ck_assert_int_eq(tls_conn_shutdown(p.client), 0);
}
END_TEST

START_TEST(test_conn_new_errors) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx(NULL, NULL, NULL);
        TlsConn *conn = (TlsConn *) 0x1;
        int fds[2];

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
        ck_assert_int_eq(tls_conn_new(c, fds[0], false, NULL, &conn), -EINVAL);
        ck_assert_int_eq(tls_conn_new(c, fds[0], false, "", &conn), -EINVAL);
        ck_assert_ptr_eq(conn, (TlsConn *) 0x1);
        ck_assert_ptr_null(tls_conn_free(NULL));

        conn = NULL;
        ck_assert_int_eq(tls_conn_new(c, fds[0], false, "localhost", &conn), 0);
        ck_assert_ptr_nonnull(conn);
        ck_assert_int_eq(tls_conn_alpn(conn), TLS_ALPN_NONE);
        ck_assert_str_eq(tls_conn_error(conn), "");
        ck_assert_uint_eq(tls_conn_events(conn), 0);
        ck_assert_ptr_null(tls_conn_free(conn));

        /* The fd survives tls_conn_free(). */
        ck_assert_int_eq(write(fds[0], "x", 1), 1);
        safe_close(fds[0]);
        safe_close(fds[1]);
}
END_TEST

/* Context errors. File names are relative to the certificate directory; "%1"/"%2" in the expected message
 * stand for the full path of the first/second file named in args. */
static const struct {
        const char *cert, *key, *ca;
        TlsAlpn alpn;
        int r;
        const char *message;
        int args[2]; /* 1 = cert, 2 = key, 3 = ca; 0 = none */
} server_error_cases[] = {
#define NO_IDENTITY "TLS server needs a certificate and a private key"
        { "missing.crt", "server.key", NULL, TLS_ALPN_H2, -ENOENT,
          "Failed to load certificate '%s': No such file or directory", { 1 } },
        { "server.crt", "missing.key", NULL, TLS_ALPN_H2, -ENOENT,
          "Failed to load private key '%s': No such file or directory", { 2 } },
        { "server.crt", "server.key", "missing-ca.crt", TLS_ALPN_H2, -ENOENT,
          "Failed to load CA certificates '%s': No such file or directory", { 3 } },
        /* Key of the same type, from another certificate. */
        { "server.crt", "agent.key", NULL, TLS_ALPN_H2, -EINVAL,
          "Private key '%s' does not match certificate '%s'", { 2, 1 } },
        /* Key of another type, which OpenSSL files under another slot. */
        { "server.crt", "rsa.key", NULL, TLS_ALPN_H2, -EINVAL,
          "Private key '%s' does not match certificate '%s'", { 2, 1 } },
        { "server.crt", "encrypted.key", NULL, TLS_ALPN_H2, -EINVAL,
          "Failed to load private key '%s': encrypted keys are not supported", { 2 } },
        { "server.crt", "server.crt", NULL, TLS_ALPN_H2, -EINVAL,
          "Failed to load private key '%s': unsupported "
          "(No supported data to decode. Input type: PEM)", { 2 } },
        { "server.key", "server.key", NULL, TLS_ALPN_H2, -EINVAL,
          "Failed to load certificate '%s': no start line (Expecting: TRUSTED CERTIFICATE)", { 1 } },
        { "server.crt", "server.key", "server.key", TLS_ALPN_H2, -EINVAL,
          "Failed to load CA certificates '%s': no certificate or crl found", { 3 } },
        { NULL, "server.key", NULL, TLS_ALPN_H2, -EINVAL, NO_IDENTITY },
        { "server.crt", NULL, NULL, TLS_ALPN_H2, -EINVAL, NO_IDENTITY },
        { "", "server.key", NULL, TLS_ALPN_H2, -EINVAL, NO_IDENTITY },
        { "server.crt", "server.key", "", TLS_ALPN_H2, -EINVAL, "Empty CA file name" },
        { "server.crt", "server.key", NULL, _TLS_ALPN_MAX, -EINVAL, "Invalid ALPN mode 3" },
        { "server.crt", "server.key", NULL, _TLS_ALPN_INVALID, -EINVAL, "Invalid ALPN mode -22" },
};

/* NULL stays NULL, "" stays "", anything else becomes a path in the certificate directory. */
static const char *case_path(char *buf, const char *name) {
        return name && *name ? cert_path_into(buf, name) : name;
}

START_TEST(test_ctx_server_errors) {
        char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX], expected[4 * PATH_MAX];
        const char *paths[4] = { "", case_path(cert, server_error_cases[_i].cert),
                                 case_path(key, server_error_cases[_i].key),
                                 case_path(ca, server_error_cases[_i].ca) };
        _cleanup_free_ char *error = NULL;
        SSL_CTX *ctx = (SSL_CTX *) 0x1;

        (void) snprintf(expected, sizeof(expected), server_error_cases[_i].message,
                        paths[server_error_cases[_i].args[0]], paths[server_error_cases[_i].args[1]]);

        ck_assert_int_eq(tls_ctx_new_server(paths[1], paths[2], paths[3], server_error_cases[_i].alpn, &ctx,
                                            &error),
                         server_error_cases[_i].r);
        ck_assert_str_eq(error, expected);
        /* Nothing written to ret on failure, and the OpenSSL error queue is left empty. */
        ck_assert_ptr_eq(ctx, (SSL_CTX *) 0x1);
        ck_assert_uint_eq(ERR_peek_error(), 0);

        /* ret_error is optional. */
        ck_assert_int_eq(tls_ctx_new_server(paths[1], paths[2], paths[3], server_error_cases[_i].alpn, &ctx,
                                            NULL),
                         server_error_cases[_i].r);
        ck_assert_ptr_eq(ctx, (SSL_CTX *) 0x1);
}
END_TEST

static char long_id[257];
static char *const empty_ids[] = { (char *) "", NULL };
static char *const long_ids[] = { long_id, NULL };

static const struct {
        const char *ca, *cert, *key;
        char *const *alpn;
        int r;
        const char *message;
        int args[2]; /* 1 = ca, 2 = cert, 3 = key; 0 = none */
} client_error_cases[] = {
#define NOT_TOGETHER "TLS client certificate and key must be given together"
        { NULL, NULL, NULL, NULL, -EINVAL, "TLS client needs a CA file to verify the server" },
        { "", NULL, NULL, NULL, -EINVAL, "TLS client needs a CA file to verify the server" },
        { "missing-ca.crt", NULL, NULL, NULL, -ENOENT,
          "Failed to load CA certificates '%s': No such file or directory", { 1 } },
        { "agent.key", NULL, NULL, NULL, -EINVAL,
          "Failed to load CA certificates '%s': no certificate or crl found", { 1 } },
        { "ca.crt", "agent.crt", NULL, NULL, -EINVAL, NOT_TOGETHER },
        { "ca.crt", NULL, "agent.key", NULL, -EINVAL, NOT_TOGETHER },
        { "ca.crt", "", "", NULL, -EINVAL, "Empty TLS client certificate or key file name" },
        { "ca.crt", "missing.crt", "agent.key", NULL, -ENOENT,
          "Failed to load certificate '%s': No such file or directory", { 2 } },
        { "ca.crt", "agent.crt", "client.key", NULL, -EINVAL,
          "Private key '%s' does not match certificate '%s'", { 3, 2 } },
        { "ca.crt", NULL, NULL, empty_ids, -EINVAL, "Invalid ALPN protocol id ''" },
        { "ca.crt", NULL, NULL, long_ids, -EINVAL, "Invalid ALPN protocol id '%s'", { 4 } },
};

START_TEST(test_ctx_client_errors) {
        char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], expected[4 * PATH_MAX];
        const char *paths[5] = { "", case_path(ca, client_error_cases[_i].ca),
                                 case_path(cert, client_error_cases[_i].cert),
                                 case_path(key, client_error_cases[_i].key), long_id };
        _cleanup_free_ char *error = NULL;
        SSL_CTX *ctx = (SSL_CTX *) 0x1;

        memset(long_id, 'a', 256);
        long_id[256] = 0;

        (void) snprintf(expected, sizeof(expected), client_error_cases[_i].message,
                        paths[client_error_cases[_i].args[0]], paths[client_error_cases[_i].args[1]]);

        ck_assert_int_eq(tls_ctx_new_client(paths[1], paths[2], paths[3], client_error_cases[_i].alpn, &ctx,
                                            &error),
                         client_error_cases[_i].r);
        ck_assert_str_eq(error, expected);
        ck_assert_ptr_eq(ctx, (SSL_CTX *) 0x1);
        ck_assert_uint_eq(ERR_peek_error(), 0);
}
END_TEST

START_TEST(test_ctx_client_settings) {
        _cleanup_free_ char *error = NULL;
        SSL_CTX *ctx = NULL;

        /* 255 bytes is the longest valid protocol id. */
        memset(long_id, 'a', 255);
        long_id[255] = 0;
        ck_assert_int_eq(tls_ctx_new_client(P("ca.crt"), NULL, NULL, long_ids, &ctx, &error), 0);
        ck_assert_ptr_null(error);
        ck_assert_ptr_nonnull(ctx);
        ck_assert_int_eq(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
        ck_assert_uint_eq(SSL_CTX_get_options(ctx) & (SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION),
                          SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
        ck_assert_int_eq(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
        SSL_CTX_free(ctx);
}
END_TEST

START_TEST(test_ctx_server_settings) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *mtls =
                server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *plain = server_ctx("server.crt", "server.key", NULL, TLS_ALPN_H2);

        ck_assert_int_eq(SSL_CTX_get_verify_mode(mtls), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
        ck_assert_int_eq(sk_X509_NAME_num(SSL_CTX_get_client_CA_list(mtls)), 1);
        ck_assert_int_eq(SSL_CTX_get_verify_mode(plain), SSL_VERIFY_NONE);
        ck_assert_int_eq(SSL_CTX_get_min_proto_version(plain), TLS1_2_VERSION);
        ck_assert_uint_eq(SSL_CTX_get_options(plain) & (SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION),
                          SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
        ck_assert_uint_eq(SSL_CTX_get_mode(plain) &
                                  (SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER),
                          SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}
END_TEST

/* The tls module logs at debug level only; every line it emits passes through here. */
static unsigned debug_lines;
static void log_sink(int level, const char *message, const LogField *fields, void *userdata) {
        ck_assert_int_eq(level, LOG_DEBUG);
        ck_assert_ptr_nonnull(message);
        debug_lines++;
}

START_TEST(test_logs_debug_only) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *s = server_ctx("server.crt", "server.key", "ca.crt", TLS_ALPN_H2);
        _cleanup_(SSL_CTX_freep) SSL_CTX *c = client_ctx(NULL, NULL, NULL);
        _cleanup_(pair_done) Pair p = PAIR_NULL;
        SSL_CTX *bad = NULL;
        int rc, rs;

        debug_lines = 0;
        pair_init(&p, s, c, "localhost");
        pair_handshake(&p, &rc, &rs);
        ck_assert_int_eq(rs, -EPROTO);
        ck_assert_int_eq(tls_ctx_new_server(P("missing.crt"), P("server.key"), NULL, TLS_ALPN_H2, &bad,
                                            NULL),
                         -ENOENT);
        /* client handshake done, server failure, context failure */
        ck_assert_uint_eq(debug_lines, 3);
}
END_TEST

static Suite *tls_suite(void) {
        Suite *s = suite_create("tls");
        TCase *tc = tcase_create("tls");

        tcase_add_unchecked_fixture(tc, tls_certs_setup, certs_teardown);
        tcase_set_timeout(tc, 30);

        tcase_add_test(tc, test_alpn_to_string);
        tcase_add_test(tc, test_mtls_h2);
        tcase_add_loop_test(tc, test_verify_host, 0, (int) ELEMENTSOF(host_cases));
        tcase_add_test(tc, test_wrong_san);
        tcase_add_test(tc, test_bulk_partial_writes);
        tcase_add_test(tc, test_pending);
        tcase_add_test(tc, test_no_client_cert);
        tcase_add_test(tc, test_no_client_cert_tls12);
        tcase_add_test(tc, test_mtls_tls12);
        tcase_add_loop_test(tc, test_bad_client_cert, 0, (int) ELEMENTSOF(bad_client_cases));
        tcase_add_test(tc, test_no_mtls);
        tcase_add_test(tc, test_peer_name);
        tcase_add_loop_test(tc, test_h2_refused, 0, (int) ELEMENTSOF(no_h2_cases));
        tcase_add_test(tc, test_h2_among_others);
        tcase_add_test(tc, test_extra_alpn_order);
        tcase_add_test(tc, test_http11_server);
        tcase_add_test(tc, test_alpn_none_server);
        tcase_add_test(tc, test_tls11_refused);
        tcase_add_test(tc, test_shutdown_eof);
        tcase_add_test(tc, test_tcp_eof);
        tcase_add_test(tc, test_handshake_peer_gone);
        tcase_add_test(tc, test_handshake_peer_eof);
        tcase_add_test(tc, test_write_blocks);
        tcase_add_test(tc, test_write_peer_closed);
        tcase_add_test(tc, test_conn_new_errors);
        tcase_add_loop_test(tc, test_ctx_server_errors, 0, (int) ELEMENTSOF(server_error_cases));
        tcase_add_loop_test(tc, test_ctx_client_errors, 0, (int) ELEMENTSOF(client_error_cases));
        tcase_add_test(tc, test_ctx_client_settings);
        tcase_add_test(tc, test_ctx_server_settings);
        tcase_add_test(tc, test_logs_debug_only);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(tls_suite());
        int failed;

        log_set_max_level(LOG_DEBUG);
        log_set_sink(log_sink, NULL);

        srunner_run_all(sr, CK_ENV);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
