/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

/*
 * Design notes.
 * - The fd is wrapped in a BIO that is OpenSSL's socket BIO except for its write method, which uses
 *   send(MSG_NOSIGNAL): a peer that resets the connection must not kill the daemon with SIGPIPE. Reads go
 *   straight to the socket (no read-ahead), so bytes are either in the kernel (epoll fires) or decrypted
 *   inside OpenSSL (tls_conn_pending()).
 * - Coalescing (tls_conn_set_coalesce(), used by h2conn): records written by tls_conn_write() are collected in
 *   a write buffer and leave in one send() per tls_conn_flush() (or when the buffer is full), instead of one
 *   send() per 16 KiB record. Every other write OpenSSL makes (handshake, alerts, close_notify) sends what is
 *   buffered first, so bytes never overtake each other. Buffers come from a small free list and go back to it
 *   whenever a flush empties them, so an idle connection holds none.
 * - A connection is in one of three states: HANDSHAKE, RUNNING, FAILED. FAILED is sticky: once OpenSSL has
 *   reported a fatal error no further SSL_* I/O call is made on that SSL (OpenSSL forbids it, including
 *   SSL_shutdown()), and every call returns the saved error. Sending close_notify and receiving EOF are
 *   flags on top of RUNNING.
 * - An H2 server refuses clients without ALPN in the ClientHello callback, because OpenSSL does not call the
 *   ALPN select callback at all when the extension is absent.
 * - Client contexts made by tls_ctx_new_client() carry a marker (SSL_CTX ex_data) that makes their
 *   connections insist on "h2" being selected; contexts built by the caller do not.
 */

#include <arpa/inet.h>
#include <assert.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls.h"

/* Internal results of tls_conn_classify(), besides -EAGAIN and negative errnos. */
#define TLS_EOF_CLEAN 1   /* close_notify received */
#define TLS_EOF_UNCLEAN 2 /* TCP EOF without close_notify: OpenSSL is in a fatal state now */

typedef enum TlsState {
        TLS_STATE_HANDSHAKE,
        TLS_STATE_RUNNING,
        TLS_STATE_FAILED,
} TlsState;

struct TlsConn {
        SSL *ssl;
        int fd; /* not owned */
        bool server;
        bool require_h2;     /* client: fail unless the server selects "h2" */
        bool alpn_refused;   /* server: a callback refused the client's ALPN offer */
        bool handshake_done; /* the handshake succeeded at some point */
        bool sent_shutdown;  /* close_notify queued (perhaps not flushed yet) */
        bool shutdown_done;  /* SSL_shutdown() finished its part */
        bool eof;            /* read saw close_notify or TCP EOF */
        bool ssl_dead;       /* OpenSSL saw a fatal condition: no further SSL_* I/O calls */
        TlsState state;
        int error; /* negative errno, valid in TLS_STATE_FAILED */
        uint32_t events_handshake, events_read, events_write;
        bool coalesce;       /* tls_conn_write() records are buffered until tls_conn_flush() */
        bool in_write;       /* inside tls_conn_write(): the BIO may buffer */
        uint8_t *wbuf;       /* TLS_WBUF_SIZE bytes while records wait, else NULL */
        size_t woff, wlen;
        char error_text[256];
};

/* 16 full TLS 1.3 records (16 KiB + 22 bytes each) and some: what h2conn writes per pass (256 KiB). */
#define TLS_WBUF_SIZE ((size_t) 264 * 1024)
#define TLS_WBUF_SPARES 2

static uint8_t *tls_wbuf_spare[TLS_WBUF_SPARES];
static unsigned tls_wbuf_n_spare;

static const unsigned char alpn_h2[] = "\x02h2";
static const unsigned char alpn_http11[] = "\x08http/1.1";

static CRYPTO_ONCE tls_once = CRYPTO_ONCE_STATIC_INIT;
static int tls_ctx_index = -1;              /* SSL_CTX ex_data: client context that requires "h2" */
static int tls_ssl_index = -1;              /* SSL ex_data: the TlsConn */
static BIO_METHOD *tls_bio_method = NULL;   /* process lifetime */
static const char tls_require_h2_marker[] = "konn-h2";

const char *tls_alpn_to_string(TlsAlpn a) {
        switch (a) {
        case TLS_ALPN_H2:
                return "h2";
        case TLS_ALPN_HTTP11:
                return "http/1.1";
        default:
                return NULL;
        }
}

static uint8_t *tls_wbuf_get(void) {
        if (tls_wbuf_n_spare > 0)
                return tls_wbuf_spare[--tls_wbuf_n_spare];
        return malloc(TLS_WBUF_SIZE);
}

static void tls_wbuf_put(uint8_t *b) {
        if (!b)
                return;
        if (tls_wbuf_n_spare < TLS_WBUF_SPARES)
                tls_wbuf_spare[tls_wbuf_n_spare++] = b;
        else
                free(b);
}

void tls_trim(void) {
        while (tls_wbuf_n_spare > 0)
                free(tls_wbuf_spare[--tls_wbuf_n_spare]);
}

/* One send() of what is buffered: 0 (perhaps partly sent), -EAGAIN, or a negative errno. */
static int tls_wbuf_send(TlsConn *c) {
        ssize_t n;

        if (c->woff >= c->wlen)
                return 0;
        n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK)
                n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
        c->woff += (size_t) n;
        if (c->woff == c->wlen)
                c->woff = c->wlen = 0;
        return 0;
}

/* BIO write result for a failed buffered write: retry on -EAGAIN, else errno for tls_conn_classify(). */
static int tls_bio_fail(BIO *b, int k) {
        if (k == -EAGAIN)
                BIO_set_retry_write(b);
        errno = k == -EAGAIN ? EAGAIN : -k;
        return -1;
}

static int tls_bio_write(BIO *b, const char *buf, int len) {
        int fd = (int) BIO_get_fd(b, NULL);
        TlsConn *c = BIO_get_app_data(b);
        ssize_t n;
        int k;

        BIO_clear_retry_flags(b);
        if (len <= 0)
                return 0;

        if (c && c->coalesce && c->in_write) {
                if (!c->wbuf) {
                        c->wbuf = tls_wbuf_get();
                        if (!c->wbuf)
                                return tls_bio_fail(b, -ENOMEM);
                }
                if (TLS_WBUF_SIZE - c->wlen < (size_t) len) {
                        k = tls_wbuf_send(c);
                        if (k < 0)
                                return tls_bio_fail(b, k);
                        if (c->woff > 0) {
                                memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
                                c->wlen -= c->woff;
                                c->woff = 0;
                        }
                        if (TLS_WBUF_SIZE - c->wlen < (size_t) len)
                                return tls_bio_fail(b, -EAGAIN);
                }
                memcpy(c->wbuf + c->wlen, buf, (size_t) len);
                c->wlen += (size_t) len;
                return len;
        }
        /* Unbuffered: whatever is buffered goes first. */
        if (c && c->woff < c->wlen) {
                k = tls_wbuf_send(c);
                if (k < 0)
                        return tls_bio_fail(b, k);
                if (c->woff < c->wlen)
                        return tls_bio_fail(b, -EAGAIN);
        }

        errno = 0;
        n = send(fd, buf, (size_t) len, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK)
                n = write(fd, buf, (size_t) len);
        if (n < 0 && BIO_sock_should_retry((int) n))
                BIO_set_retry_write(b);
        return (int) n;
}

static BIO_METHOD *tls_bio_method_new(void) {
        const BIO_METHOD *sock = BIO_s_socket();
        BIO_METHOD *m;
        int type;

        type = BIO_get_new_index();
        if (type < 0)
                return NULL;

        m = BIO_meth_new(type | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "konn socket");
        if (!m)
                return NULL;

        if (!BIO_meth_set_write(m, tls_bio_write) ||
            !BIO_meth_set_read(m, BIO_meth_get_read(sock)) ||
            !BIO_meth_set_puts(m, BIO_meth_get_puts(sock)) ||
            !BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(sock)) ||
            !BIO_meth_set_create(m, BIO_meth_get_create(sock)) ||
            !BIO_meth_set_destroy(m, BIO_meth_get_destroy(sock))) {
                BIO_meth_free(m);
                return NULL;
        }
        return m;
}

static void tls_init_once(void) {
        tls_ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        tls_ssl_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        tls_bio_method = tls_bio_method_new();
}

static int tls_init(void) {
        if (!CRYPTO_THREAD_run_once(&tls_once, tls_init_once))
                return -ENOMEM;
        if (tls_ctx_index < 0 || tls_ssl_index < 0 || !tls_bio_method)
                return -ENOMEM;
        return 0;
}

/* Context construction errors. */

_printf_(3, 4) static int tls_ctx_fail(char **ret_error, int error, const char *format, ...) {
        char *message = NULL;
        va_list ap;

        ERR_clear_error();

        va_start(ap, format);
        if (vasprintf(&message, format, ap) < 0)
                message = NULL;
        va_end(ap);

        log_debug_errno(error, "TLS context setup failed: %s", message ?: "out of memory");

        if (ret_error && message)
                *ret_error = message;
        else
                free(message);
        return error;
}

/* Describe the queued OpenSSL errors: a system error (a failed open) wins and is returned as -errno;
 * otherwise the first queued error's reason is used and fallback is returned. */
static int tls_queued_error(int fallback, char *buf, size_t size) {
        unsigned long first = 0, e;
        char data[128] = "";
        const char *d;
        int flags;

        assert(buf);
        assert(size > 0);

        while ((e = ERR_get_error_all(NULL, NULL, NULL, &d, &flags)) != 0) {
                if (first == 0 && !ERR_SYSTEM_ERROR(e) && (flags & ERR_TXT_STRING) && d)
                        (void) snprintf(data, sizeof(data), "%s", d);
                if (ERR_SYSTEM_ERROR(e)) {
                        int err = ERR_GET_REASON(e);

                        if (err > 0) {
                                (void) snprintf(buf, size, "%s", strerror(err));
                                ERR_clear_error();
                                return -err;
                        }
                }
                if (first == 0)
                        first = e;
        }

        if (first == 0)
                (void) snprintf(buf, size, "unknown error");
        else {
                const char *reason = ERR_reason_error_string(first);

                if (reason && data[0])
                        (void) snprintf(buf, size, "%s (%s)", reason, data);
                else if (reason)
                        (void) snprintf(buf, size, "%s", reason);
                else
                        ERR_error_string_n(first, buf, size);
        }
        return fallback;
}

static bool tls_error_is(unsigned long e, int lib, int reason) {
        return e != 0 && !ERR_SYSTEM_ERROR(e) && ERR_GET_LIB(e) == lib && ERR_GET_REASON(e) == reason;
}

static int tls_no_password_cb(char *buf, int size, int rwflag, void *userdata) {
        /* Encrypted keys are not supported: never prompt on a terminal, just note that we were asked. */
        if (userdata)
                *(bool *) userdata = true;
        return -1;
}

static int tls_ctx_common(SSL_CTX *ctx) {
        assert(ctx);

        if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
                return -EIO;
        (void) SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                            SSL_OP_CIPHER_SERVER_PREFERENCE);
        /* TLS 1.3 suites in OpenSSL's set, AES-128-GCM first: with AES-NI it is about 1.5x faster than
         * AES-256-GCM, and every byte of a tunnel is encrypted and decrypted once per hop. */
        if (!SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                           "TLS_CHACHA20_POLY1305_SHA256"))
                return -EIO;
        (void) SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        /* Read whatever the socket has in one go instead of one header and one body read per record. */
        SSL_CTX_set_read_ahead(ctx, 1);
        SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
        SSL_CTX_set_default_passwd_cb(ctx, tls_no_password_cb);
        return 0;
}

static int tls_ctx_load_identity(SSL_CTX *ctx, const char *cert_file, const char *key_file,
                                 char **ret_error) {
        bool encrypted = false;
        char reason[256];
        int k, r;

        assert(ctx);
        assert(cert_file);
        assert(key_file);

        ERR_clear_error();
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
                r = tls_queued_error(-EINVAL, reason, sizeof(reason));
                return tls_ctx_fail(ret_error, r, "Failed to load certificate '%s': %s", cert_file, reason);
        }

        ERR_clear_error();
        SSL_CTX_set_default_passwd_cb_userdata(ctx, &encrypted);
        k = SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM);
        SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
        if (k != 1) {
                if (tls_error_is(ERR_peek_last_error(), ERR_LIB_X509, X509_R_KEY_VALUES_MISMATCH))
                        return tls_ctx_fail(ret_error, -EINVAL,
                                            "Private key '%s' does not match certificate '%s'",
                                            key_file, cert_file);
                if (encrypted)
                        return tls_ctx_fail(ret_error, -EINVAL,
                                            "Failed to load private key '%s': %s",
                                            key_file, "encrypted keys are not supported");

                r = tls_queued_error(-EINVAL, reason, sizeof(reason));
                return tls_ctx_fail(ret_error, r, "Failed to load private key '%s': %s", key_file, reason);
        }

        /* Also catches a key of another type than the certificate's, which lands in another slot. */
        ERR_clear_error();
        if (SSL_CTX_check_private_key(ctx) != 1)
                return tls_ctx_fail(ret_error, -EINVAL, "Private key '%s' does not match certificate '%s'",
                                    key_file, cert_file);

        return 0;
}

static int tls_ctx_load_ca(SSL_CTX *ctx, const char *ca_file, char **ret_error) {
        char reason[256];
        int r;

        assert(ctx);
        assert(ca_file);

        ERR_clear_error();
        if (SSL_CTX_load_verify_file(ctx, ca_file) != 1) {
                r = tls_queued_error(-EINVAL, reason, sizeof(reason));
                return tls_ctx_fail(ret_error, r, "Failed to load CA certificates '%s': %s",
                                    ca_file, reason);
        }
        return 0;
}

/* Refuse (no_application_protocol) a ClientHello that carries no ALPN extension at all. */
static int tls_client_hello_cb(SSL *ssl, int *al, void *arg) {
        const unsigned char *ext;
        size_t ext_len;
        TlsConn *c;

        if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
                                      &ext, &ext_len) == 1)
                return SSL_CLIENT_HELLO_SUCCESS;

        c = SSL_get_ex_data(ssl, tls_ssl_index);
        if (c)
                c->alpn_refused = true;
        *al = SSL_AD_NO_APPLICATION_PROTOCOL;
        return SSL_CLIENT_HELLO_ERROR;
}

static int tls_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                              const unsigned char *in, unsigned inlen, void *arg) {
        TlsAlpn mode = (TlsAlpn) (intptr_t) arg;
        const unsigned char *ours = mode == TLS_ALPN_H2 ? alpn_h2 : alpn_http11;
        unsigned ours_len = mode == TLS_ALPN_H2 ? STRLEN(alpn_h2) : STRLEN(alpn_http11);
        unsigned char *selected = NULL;
        unsigned char selected_len = 0;
        TlsConn *c;
        int r;

        /* OpenSSL has validated the client's list; SSL_select_next_proto() walks it again with bounds
         * checks and picks our single protocol if the client offered it. */
        r = SSL_select_next_proto(&selected, &selected_len, ours, ours_len, in, inlen);
        if (r == OPENSSL_NPN_NEGOTIATED) {
                *out = selected;
                *outlen = selected_len;
                return SSL_TLSEXT_ERR_OK;
        }

        if (mode != TLS_ALPN_H2)
                return SSL_TLSEXT_ERR_NOACK;

        c = SSL_get_ex_data(ssl, tls_ssl_index);
        if (c)
                c->alpn_refused = true;
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* OpenSSL sends no_application_protocol */
}

int tls_ctx_new_server(const char *cert_file, const char *key_file, const char *ca_file, TlsAlpn alpn,
                       SSL_CTX **ret, char **ret_error) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = NULL;
        int r;

        assert(ret);

        if (!cert_file || !*cert_file || !key_file || !*key_file)
                return tls_ctx_fail(ret_error, -EINVAL, "TLS server needs a certificate and a private key");
        if (ca_file && !*ca_file)
                return tls_ctx_fail(ret_error, -EINVAL, "Empty CA file name");
        if (alpn < 0 || alpn >= _TLS_ALPN_MAX)
                return tls_ctx_fail(ret_error, -EINVAL, "Invalid ALPN mode %i", (int) alpn);

        r = tls_init();
        if (r < 0)
                return tls_ctx_fail(ret_error, r, "Failed to initialize OpenSSL");

        ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx)
                return tls_ctx_fail(ret_error, -ENOMEM, "Failed to allocate TLS server context");

        r = tls_ctx_common(ctx);
        if (r < 0)
                return tls_ctx_fail(ret_error, r, "Failed to set up TLS server context");

        /* Needed for session resumption when client certificates are verified. */
        if (SSL_CTX_set_session_id_context(ctx, (const unsigned char *) "konn", STRLEN("konn")) != 1)
                return tls_ctx_fail(ret_error, -EIO, "Failed to set TLS session id context");

        r = tls_ctx_load_identity(ctx, cert_file, key_file, ret_error);
        if (r < 0)
                return r;

        if (ca_file) {
                STACK_OF(X509_NAME) *names;

                r = tls_ctx_load_ca(ctx, ca_file, ret_error);
                if (r < 0)
                        return r;

                /* Advertise the acceptable CAs in the CertificateRequest. */
                names = SSL_load_client_CA_file(ca_file);
                if (!names)
                        return tls_ctx_fail(ret_error, -EINVAL, "Failed to load CA names from '%s'",
                                            ca_file);
                SSL_CTX_set_client_CA_list(ctx, names);

                SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        } else
                SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);

        if (alpn == TLS_ALPN_H2)
                SSL_CTX_set_client_hello_cb(ctx, tls_client_hello_cb, NULL);
        if (alpn != TLS_ALPN_NONE)
                SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select_cb, (void *) (intptr_t) alpn);

        ERR_clear_error();
        *ret = TAKE_PTR(ctx);
        return 0;
}

/* ALPN wire format (length-prefixed ids) of extra... then "h2". -EINVAL (with *ret_bad) for an id that is
 * empty or longer than 255 bytes. */
static int tls_alpn_wire(char *const *extra, unsigned char **ret, size_t *ret_len, const char **ret_bad) {
        _cleanup_free_ unsigned char *wire = NULL;
        size_t len = STRLEN(alpn_h2);
        unsigned char *q;

        for (char *const *p = extra; p && *p; p++) {
                size_t l = strlen(*p);

                if (l == 0 || l > 255 || len + 1 + l > UINT_MAX) {
                        *ret_bad = *p;
                        return -EINVAL;
                }
                len += 1 + l;
        }

        wire = malloc(len);
        if (!wire)
                return -ENOMEM;

        q = wire;
        for (char *const *p = extra; p && *p; p++) {
                size_t l = strlen(*p);

                *q++ = (unsigned char) l;
                memcpy(q, *p, l);
                q += l;
        }
        memcpy(q, alpn_h2, STRLEN(alpn_h2));

        *ret = TAKE_PTR(wire);
        *ret_len = len;
        return 0;
}

int tls_ctx_new_client(const char *ca_file, const char *cert_file, const char *key_file,
                       char *const *extra_alpn, SSL_CTX **ret, char **ret_error) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = NULL;
        _cleanup_free_ unsigned char *protos = NULL;
        const char *bad_id = NULL;
        size_t protos_len = 0;
        int r;

        assert(ret);

        if (!ca_file || !*ca_file)
                return tls_ctx_fail(ret_error, -EINVAL, "TLS client needs a CA file to verify the server");
        if (!!cert_file != !!key_file)
                return tls_ctx_fail(ret_error, -EINVAL,
                                    "TLS client certificate and key must be given together");
        if ((cert_file && !*cert_file) || (key_file && !*key_file))
                return tls_ctx_fail(ret_error, -EINVAL, "Empty TLS client certificate or key file name");

        r = tls_alpn_wire(extra_alpn, &protos, &protos_len, &bad_id);
        if (r == -EINVAL)
                return tls_ctx_fail(ret_error, r, "Invalid ALPN protocol id '%s'", bad_id);
        if (r < 0)
                return tls_ctx_fail(ret_error, r, "Out of memory");

        r = tls_init();
        if (r < 0)
                return tls_ctx_fail(ret_error, r, "Failed to initialize OpenSSL");

        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx)
                return tls_ctx_fail(ret_error, -ENOMEM, "Failed to allocate TLS client context");

        r = tls_ctx_common(ctx);
        if (r < 0)
                return tls_ctx_fail(ret_error, r, "Failed to set up TLS client context");

        r = tls_ctx_load_ca(ctx, ca_file, ret_error);
        if (r < 0)
                return r;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

        if (cert_file) {
                r = tls_ctx_load_identity(ctx, cert_file, key_file, ret_error);
                if (r < 0)
                        return r;
        }

        /* Note: SSL_CTX_set_alpn_protos() returns 0 on success. */
        if (SSL_CTX_set_alpn_protos(ctx, protos, (unsigned) protos_len) != 0)
                return tls_ctx_fail(ret_error, -ENOMEM, "Failed to set ALPN protocols");

        if (SSL_CTX_set_ex_data(ctx, tls_ctx_index, (void *) tls_require_h2_marker) != 1)
                return tls_ctx_fail(ret_error, -ENOMEM, "Failed to mark TLS client context");

        ERR_clear_error();
        *ret = TAKE_PTR(ctx);
        return 0;
}

/* Connections. */

_printf_(3, 4) static int tls_conn_fail(TlsConn *c, int error, const char *format, ...) {
        va_list ap;

        assert(c);
        assert(error < 0);

        if (format) {
                va_start(ap, format);
                (void) vsnprintf(c->error_text, sizeof(c->error_text), format, ap);
                va_end(ap);
        }

        c->state = TLS_STATE_FAILED;
        c->error = error;
        c->events_handshake = c->events_read = c->events_write = 0;
        ERR_clear_error();

        log_debug_errno(error, "TLS %s connection on fd %i failed: %s",
                        c->server ? "server" : "client", c->fd, c->error_text);
        return error;
}

_printf_(2, 3) static void tls_conn_set_error(TlsConn *c, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(c->error_text, sizeof(c->error_text), format, ap);
        va_end(ap);
}

/* Classify a failed SSL_* call (k <= 0, errno_saved = errno right after it): -EAGAIN with *events set,
 * TLS_EOF_CLEAN/UNCLEAN, or a negative errno with c->error_text describing it. Clears the error queue. */
static int tls_conn_classify(TlsConn *c, int k, int errno_saved, uint32_t *events) {
        unsigned long e, first = 0, verify = 0;
        int r;

        assert(c);
        assert(events);

        *events = 0;

        switch (SSL_get_error(c->ssl, k)) {

        case SSL_ERROR_WANT_READ:
                ERR_clear_error();
                *events = EPOLLIN;
                return -EAGAIN;

        case SSL_ERROR_WANT_WRITE:
                ERR_clear_error();
                *events = EPOLLOUT;
                return -EAGAIN;

        case SSL_ERROR_ZERO_RETURN:
                ERR_clear_error();
                tls_conn_set_error(c, "connection closed by peer");
                return TLS_EOF_CLEAN;

        case SSL_ERROR_SYSCALL:
                ERR_clear_error();
                if (errno_saved <= 0) {
                        tls_conn_set_error(c, "unexpected EOF from peer");
                        return TLS_EOF_UNCLEAN;
                }
                tls_conn_set_error(c, "%s", strerror(errno_saved));
                if (errno_saved == ECONNRESET || errno_saved == EPIPE)
                        return -ECONNRESET;
                return -errno_saved;

        case SSL_ERROR_SSL:
                while ((e = ERR_get_error()) != 0) {
                        if (first == 0)
                                first = e;
                        if (verify == 0 && tls_error_is(e, ERR_LIB_SSL, SSL_R_CERTIFICATE_VERIFY_FAILED))
                                verify = e;
                }

                if (tls_error_is(first, ERR_LIB_SSL, SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
                        tls_conn_set_error(c, "unexpected EOF from peer");
                        return TLS_EOF_UNCLEAN;
                }

                if (c->alpn_refused)
                        tls_conn_set_error(c, "client did not offer ALPN h2");
                else if (verify != 0) {
                        long v = SSL_get_verify_result(c->ssl);
                        const char *why = v == X509_V_OK ? "unknown reason" : X509_verify_cert_error_string(v);

                        tls_conn_set_error(c, "certificate verify failed: %s", why);
                } else if (first != 0 && ERR_SYSTEM_ERROR(first)) {
                        r = ERR_GET_REASON(first);
                        tls_conn_set_error(c, "%s", strerror(r));
                        return r > 0 ? -r : -EIO;
                } else if (first != 0) {
                        const char *reason = ERR_reason_error_string(first);

                        if (reason)
                                tls_conn_set_error(c, "%s", reason);
                        else
                                ERR_error_string_n(first, c->error_text, sizeof(c->error_text));
                } else
                        tls_conn_set_error(c, "TLS protocol error");
                ERR_clear_error();
                return -EPROTO;

        default:
                ERR_clear_error();
                tls_conn_set_error(c, "unexpected OpenSSL state");
                return -EPROTO;
        }
}

static bool tls_ip_literal(const char *host, char *buf, size_t size) {
        unsigned char addr[sizeof(struct in6_addr)];
        size_t l = strlen(host);

        if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1) {
                if (l >= size)
                        return false;
                memcpy(buf, host, l + 1);
                return true;
        }

        /* "[::1]" */
        if (l >= 2 && host[0] == '[' && host[l - 1] == ']' && l - 2 < size) {
                memcpy(buf, host + 1, l - 2);
                buf[l - 2] = 0;
                if (inet_pton(AF_INET6, buf, addr) == 1)
                        return true;
        }
        return false;
}

int tls_conn_new(SSL_CTX *ctx, int fd, bool server, const char *verify_host, TlsConn **ret) {
        _cleanup_(tls_conn_freep) TlsConn *c = NULL;
        BIO *bio;
        int r;

        assert(ctx);
        assert(fd >= 0);
        assert(ret);

        if (!server && (!verify_host || !*verify_host))
                return -EINVAL;

        r = tls_init();
        if (r < 0)
                return r;

        c = malloc(sizeof(TlsConn));
        if (!c)
                return -ENOMEM;
        *c = (TlsConn) {
                .fd = fd,
                .server = server,
                .state = TLS_STATE_HANDSHAKE,
        };

        ERR_clear_error();
        c->ssl = SSL_new(ctx);
        if (!c->ssl)
                return -ENOMEM;

        bio = BIO_new(tls_bio_method);
        if (!bio)
                return -ENOMEM;
        (void) BIO_set_fd(bio, fd, BIO_NOCLOSE);
        BIO_set_app_data(bio, c);
        SSL_set_bio(c->ssl, bio, bio); /* the SSL owns the BIO now */

        if (SSL_set_ex_data(c->ssl, tls_ssl_index, c) != 1)
                return -ENOMEM;

        if (server)
                SSL_set_accept_state(c->ssl);
        else {
                char ip[INET6_ADDRSTRLEN + 1];

                if (tls_ip_literal(verify_host, ip, sizeof(ip))) {
                        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), ip) != 1)
                                return -EINVAL;
                } else {
                        X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(c->ssl),
                                                        X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                        if (SSL_set1_host(c->ssl, verify_host) != 1)
                                return -ENOMEM;
                        if (SSL_set_tlsext_host_name(c->ssl, verify_host) != 1)
                                return -EINVAL;
                }

                c->require_h2 = SSL_CTX_get_ex_data(ctx, tls_ctx_index) == tls_require_h2_marker;
                SSL_set_connect_state(c->ssl);
        }

        ERR_clear_error();
        *ret = TAKE_PTR(c);
        return 0;
}

TlsConn *tls_conn_free(TlsConn *c) {
        if (!c)
                return NULL;

        SSL_free(c->ssl); /* frees the BIO too, never the fd; OpenSSL cleanses key material */
        tls_wbuf_put(c->wbuf);
        free(c);
        return NULL;
}

int tls_conn_handshake(TlsConn *c) {
        int k, errno_saved, r;

        assert(c);

        if (c->state == TLS_STATE_FAILED)
                return c->error;
        if (c->state != TLS_STATE_HANDSHAKE)
                return 0;

        ERR_clear_error();
        errno = 0;
        k = SSL_do_handshake(c->ssl);
        errno_saved = errno;
        if (k <= 0) {
                r = tls_conn_classify(c, k, errno_saved, &c->events_handshake);
                if (r == -EAGAIN)
                        return r;
                if (r > 0)
                        return tls_conn_fail(c, -ECONNRESET, "connection closed by peer during handshake");
                return tls_conn_fail(c, r, NULL);
        }

        c->events_handshake = 0;

        if (c->require_h2 && tls_conn_alpn(c) != TLS_ALPN_H2)
                return tls_conn_fail(c, -EPROTO, "server did not select ALPN h2");

        c->state = TLS_STATE_RUNNING;
        c->handshake_done = true;
        log_debug("TLS %s handshake on fd %i complete: %s, ALPN %s", c->server ? "server" : "client", c->fd,
                  SSL_get_version(c->ssl), tls_alpn_to_string(tls_conn_alpn(c)) ?: "none");
        return 0;
}

ssize_t tls_conn_read(TlsConn *c, void *buf, size_t size) {
        size_t n = 0;
        int k, errno_saved, r;

        assert(c);
        assert(buf || size == 0);

        if (c->state == TLS_STATE_FAILED)
                return c->error;
        if (c->state != TLS_STATE_RUNNING)
                return -ENOTCONN;
        if (size == 0)
                return -EINVAL;
        if (c->eof)
                return 0;

        size = MIN(size, (size_t) SSIZE_MAX);

        ERR_clear_error();
        errno = 0;
        k = SSL_read_ex(c->ssl, buf, size, &n);
        errno_saved = errno;
        if (k > 0) {
                c->events_read = 0;
                return (ssize_t) n;
        }

        r = tls_conn_classify(c, k, errno_saved, &c->events_read);
        if (r == -EAGAIN)
                return r;
        if (r > 0) {
                /* EOF, with or without close_notify: both are a clean end of the stream for us. */
                c->eof = true;
                if (r == TLS_EOF_UNCLEAN)
                        c->ssl_dead = true;
                return 0;
        }
        return tls_conn_fail(c, r, NULL);
}

ssize_t tls_conn_write(TlsConn *c, const void *buf, size_t size) {
        size_t n = 0;
        int k, errno_saved, r;

        assert(c);
        assert(buf || size == 0);

        if (c->state == TLS_STATE_FAILED)
                return c->error;
        if (c->state != TLS_STATE_RUNNING)
                return -ENOTCONN;
        if (c->sent_shutdown || c->ssl_dead)
                return -EPIPE;
        if (size == 0)
                return 0;

        size = MIN(size, (size_t) SSIZE_MAX);

        ERR_clear_error();
        errno = 0;
        c->in_write = true;
        k = SSL_write_ex(c->ssl, buf, size, &n);
        c->in_write = false;
        errno_saved = errno;
        if (k > 0) {
                c->events_write = 0;
                return (ssize_t) n;
        }

        r = tls_conn_classify(c, k, errno_saved, &c->events_write);
        if (r == -EAGAIN)
                return r;
        if (r > 0)
                return tls_conn_fail(c, -ECONNRESET, "connection closed by peer");
        return tls_conn_fail(c, r, NULL);
}

void tls_conn_set_coalesce(TlsConn *c, bool b) {
        assert(c);
        c->coalesce = b;
}

int tls_conn_flush(TlsConn *c) {
        int k;

        assert(c);

        if (!c->wbuf)
                return 0;
        k = tls_wbuf_send(c);
        if (k == -EAGAIN || (k == 0 && c->woff < c->wlen)) {
                c->events_write = EPOLLOUT;
                return -EAGAIN;
        }
        if (k < 0) {
                c->ssl_dead = true;
                return tls_conn_fail(c, k == -EPIPE ? -ECONNRESET : k, "%s", strerror(-k));
        }
        c->events_write = 0;
        /* Empty: back to the free list until the next burst. */
        tls_wbuf_put(TAKE_PTR(c->wbuf));
        return 0;
}

uint32_t tls_conn_events(const TlsConn *c) {
        assert(c);

        return c->events_handshake | c->events_read | c->events_write;
}

size_t tls_conn_pending(const TlsConn *c) {
        int k;

        assert(c);

        if (c->state != TLS_STATE_RUNNING || c->eof)
                return 0;

        k = SSL_pending(c->ssl);
        if (k > 0)
                return (size_t) k;
        /* With read-ahead, whole records may sit undecrypted in OpenSSL's buffer: epoll will not fire for them. */
        return SSL_has_pending(c->ssl) ? 1 : 0;
}

int tls_conn_shutdown(TlsConn *c) {
        int k, errno_saved, r;

        assert(c);

        if (c->state != TLS_STATE_RUNNING || c->shutdown_done || c->ssl_dead)
                return 0;

        c->sent_shutdown = true;

        ERR_clear_error();
        errno = 0;
        k = SSL_shutdown(c->ssl);
        errno_saved = errno;
        if (k >= 0) {
                /* 0: our close_notify is out, the peer's has not arrived; we do not wait for it. */
                c->events_handshake = 0;
                c->shutdown_done = true;
                ERR_clear_error();
                return 0;
        }

        r = tls_conn_classify(c, k, errno_saved, &c->events_handshake);
        if (r == -EAGAIN)
                return r;

        /* Best effort: the peer is gone. Remember why, but report success. */
        c->shutdown_done = true;
        (void) tls_conn_fail(c, r > 0 ? -ECONNRESET : r, NULL);
        return 0;
}

TlsAlpn tls_conn_alpn(const TlsConn *c) {
        const unsigned char *p = NULL;
        unsigned l = 0;

        assert(c);

        SSL_get0_alpn_selected(c->ssl, &p, &l);
        if (!p)
                return TLS_ALPN_NONE;
        if (l == STRLEN(alpn_h2) - 1 && memcmp(p, alpn_h2 + 1, l) == 0)
                return TLS_ALPN_H2;
        if (l == STRLEN(alpn_http11) - 1 && memcmp(p, alpn_http11 + 1, l) == 0)
                return TLS_ALPN_HTTP11;
        return TLS_ALPN_NONE;
}

const char *tls_conn_error(const TlsConn *c) {
        assert(c);

        return c->error_text;
}

static int tls_copy_name(const ASN1_STRING *s, char *buf, size_t size) {
        unsigned char *utf8 = NULL;
        int l;

        l = ASN1_STRING_to_UTF8(&utf8, s);
        if (l < 0)
                return -EBADMSG;

        for (int i = 0; i < l; i++)
                if (utf8[i] < 0x20 || utf8[i] == 0x7f) {
                        OPENSSL_free(utf8);
                        return -EBADMSG;
                }

        if ((size_t) l >= size) {
                OPENSSL_free(utf8);
                return -ENOBUFS;
        }

        memcpy(buf, utf8, (size_t) l);
        buf[l] = 0;
        OPENSSL_free(utf8);
        return 0;
}

int tls_conn_peer_name(const TlsConn *c, char *buf, size_t size) {
        GENERAL_NAMES *names;
        X509_NAME *subject;
        X509 *cert;
        int i, r = -ENODATA;

        assert(c);
        assert(buf || size == 0);

        /* Only a certificate that passed verification is worth naming. */
        if (!c->handshake_done)
                return -ENOENT;

        cert = SSL_get0_peer_certificate(c->ssl);
        if (!cert)
                return -ENOENT;

        subject = X509_get_subject_name(cert);
        i = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
        if (i >= 0)
                return tls_copy_name(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)), buf, size);

        names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
        for (i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
                const GENERAL_NAME *n = sk_GENERAL_NAME_value(names, i);

                if (n->type == GEN_DNS) {
                        r = tls_copy_name(n->d.dNSName, buf, size);
                        break;
                }
        }
        GENERAL_NAMES_free(names);
        return r;
}

const char *tls_conn_version(const TlsConn *c) {
        assert(c);

        return SSL_get_version(c->ssl);
}
