/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tls — OpenSSL 3 contexts (server/client, mTLS, ALPN policy) and non-blocking TLS connections on an fd
 * driven by the caller's event loop (resolved's DoT pattern: WANT_READ/WRITE → -EAGAIN + epoll events).
 * An SSL_CTX belongs to its creator (listener/dialer) and may be freed before its connections (refcounted);
 * a TlsConn belongs to the connection object wrapping the fd, which is never owned or closed here.
 * Called from the sd-event loop thread only; logs at debug only; writes use MSG_NOSIGNAL (no SIGPIPE).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "macro.h"

typedef struct TlsConn TlsConn;

typedef enum TlsAlpn {
        TLS_ALPN_NONE,   /* nothing negotiated */
        TLS_ALPN_H2,     /* "h2" */
        TLS_ALPN_HTTP11, /* "http/1.1" */
        _TLS_ALPN_MAX,
        _TLS_ALPN_INVALID = -EINVAL,
} TlsAlpn;

/* "h2", "http/1.1", or NULL for TLS_ALPN_NONE and out-of-range values. */
const char *tls_alpn_to_string(TlsAlpn a);

/* Server context from a PEM certificate chain and a PEM key. ca_file != NULL → require and verify a client
 * certificate signed by one of its CAs (mTLS); NULL → no client certificate is requested.
 * alpn: TLS_ALPN_H2 → select "h2", and refuse with a no_application_protocol alert any client that does not
 * offer "h2" (including clients that send no ALPN extension at all); TLS_ALPN_HTTP11 → select "http/1.1" if
 * offered, never "h2", and let clients offering neither through with no ALPN; TLS_ALPN_NONE → no ALPN.
 * TLS >= 1.2, no compression, no renegotiation.
 * Errors: -EINVAL (bad arguments, unparsable PEM, key does not match certificate), -errno of the failed
 * open (-ENOENT, -EACCES, ...), -ENOMEM. On failure *ret_error (if ret_error != NULL) is set to a malloc'd
 * reason naming the file, e.g. "Failed to load certificate '/x/y.pem': No such file or directory". */
int tls_ctx_new_server(const char *cert_file, const char *key_file, const char *ca_file, TlsAlpn alpn,
                       SSL_CTX **ret, char **ret_error);

/* Client context: trust ca_file (required: -EINVAL if NULL or empty), present cert_file/key_file if both
 * are non-NULL (-EINVAL if only one is), offer ALPN extra_alpn... then "h2" (extra_alpn: NULL or a
 * NULL-terminated list of protocol ids of 1..255 bytes, offered BEFORE "h2" like upstream's --alpn-proto).
 * Connections made from this context fail their handshake unless the server selects "h2".
 * Errors as tls_ctx_new_server(). */
int tls_ctx_new_client(const char *ca_file, const char *cert_file, const char *key_file,
                       char *const *extra_alpn, SSL_CTX **ret, char **ret_error);

/* Wrap a connected non-blocking fd. The fd is not owned: the caller closes it after tls_conn_free().
 * Client side (server == false): verify_host is required (-EINVAL if NULL or empty) and is the name the
 * server certificate must match: an IP literal (IPv6 optionally in brackets) must match an IP SAN, anything
 * else a DNS SAN (and is sent as SNI). Ignored on the server side. -ENOMEM on allocation failure.
 * ctx may also be an SSL_CTX that the caller configured itself (then no "h2" check is made). */
int tls_conn_new(SSL_CTX *ctx, int fd, bool server, const char *verify_host, TlsConn **ret);
TlsConn *tls_conn_free(TlsConn *c); /* NULL-safe, returns NULL; frees the SSL, never closes the fd */

/* Drive the handshake. 0 = complete (also on later calls); -EAGAIN = call again when tls_conn_events() is
 * ready; -EPROTO on TLS failure (certificate verification, ALPN refusal, alert from the peer, ...);
 * -ECONNRESET when the peer closed or reset; another -errno for other socket errors. On every failure a
 * reason is available from tls_conn_error(), and the failure is sticky (later calls return it again).
 * Note: with TLS 1.3 the client finishes before the server has checked the client certificate, so a
 * rejected client certificate shows up on the client as -EPROTO from its first tls_conn_read(). */
int tls_conn_handshake(TlsConn *c);

/* >0 bytes, 0 = clean EOF (close_notify, or TCP EOF without close_notify), -EAGAIN, -ECONNRESET, -EPROTO,
 * -ENOTCONN before the handshake completed, -EINVAL for size == 0 on read. Writes may be partial (at most
 * one TLS record per call); after -EAGAIN from tls_conn_write() the next call must pass the same bytes
 * again (the buffer may move). tls_conn_write() after tls_conn_shutdown() returns -EPIPE. */
ssize_t tls_conn_read(TlsConn *c, void *buf, size_t size);
ssize_t tls_conn_write(TlsConn *c, const void *buf, size_t size);

/* EPOLLIN and/or EPOLLOUT that the operations which last returned -EAGAIN are waiting for: the union of
 * what the pending handshake/shutdown, read and write need (each is cleared when that operation next
 * returns something other than -EAGAIN). 0 if nothing is waiting. */
uint32_t tls_conn_events(const TlsConn *c);
/* Coalescing: records written by tls_conn_write() wait in a write buffer and leave together with
 * tls_conn_flush(), which the caller must call once per batch of writes (one send() instead of one per record).
 * tls_conn_flush(): 0 when everything is out (also when nothing was buffered), -EAGAIN (wait for
 * tls_conn_events()), or a negative errno (the connection failed). */
void tls_conn_set_coalesce(TlsConn *c, bool b);
int tls_conn_flush(TlsConn *c);
/* Free the spare coalescing buffers (when the process goes idle). */
void tls_trim(void);

/* Bytes already decrypted inside OpenSSL and readable without touching the fd (SSL_pending): the caller
 * must keep reading while this is > 0, since epoll will not fire for them. */
size_t tls_conn_pending(const TlsConn *c);

/* Best-effort close_notify: 0 (sent, or nothing to do: handshake not complete, connection failed, already
 * shut down) or -EAGAIN (call again when tls_conn_events() is ready). Does not wait for the peer's
 * close_notify; reading remains possible afterwards. */
int tls_conn_shutdown(TlsConn *c);

TlsAlpn tls_conn_alpn(const TlsConn *c);
/* Last failure reason (storage inside the conn, valid until the next call on it), "" if none. */
const char *tls_conn_error(const TlsConn *c);
/* Verified peer certificate's subject CN, or its first DNS SAN if there is no CN, as a NUL-terminated
 * string. -ENOENT no peer certificate, -ENODATA neither CN nor DNS SAN, -EBADMSG the name contains NUL or
 * control characters, -ENOBUFS it does not fit in size bytes (including the NUL). */
int tls_conn_peer_name(const TlsConn *c, char *buf, size_t size);
const char *tls_conn_version(const TlsConn *c); /* "TLSv1.3", "TLSv1.2", ... */

DEFINE_TRIVIAL_CLEANUP_FUNC_VOID(SSL_CTX *, SSL_CTX_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(TlsConn *, tls_conn_free)
