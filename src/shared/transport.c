/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include "transport.h"

void transport_init(Transport *t, int fd, TlsConn *tls) {
        *t = (Transport){ .fd = fd, .tls = tls, .want = EPOLLIN };
}

void transport_done(Transport *t) {
        t->tls = tls_conn_free(t->tls);
        t->fd = safe_close(t->fd);
}

int transport_handshake(Transport *t) {
        int r;

        if (!t->tls)
                return 0;
        r = tls_conn_handshake(t->tls);
        if (r == -EAGAIN)
                t->want = tls_conn_events(t->tls);
        return r;
}

ssize_t transport_read(Transport *t, void *buf, size_t size) {
        ssize_t n;

        if (t->tls) {
                n = tls_conn_read(t->tls, buf, size);
                if (n == -EAGAIN)
                        t->want = tls_conn_events(t->tls);
                return n;
        }
        n = read(t->fd, buf, size);
        if (n < 0) {
                if (errno == EINTR)
                        return -EAGAIN;
                if (errno == EAGAIN)
                        t->want = EPOLLIN;
                return -errno;
        }
        return n;
}

ssize_t transport_write(Transport *t, const void *buf, size_t size) {
        ssize_t n;

        if (t->tls) {
                n = tls_conn_write(t->tls, buf, size);
                if (n == -EAGAIN)
                        t->want = tls_conn_events(t->tls);
                return n;
        }
        n = send(t->fd, buf, size, MSG_NOSIGNAL);
        if (n < 0) {
                if (errno == EINTR || errno == EAGAIN) {
                        t->want = EPOLLOUT;
                        return -EAGAIN;
                }
                return -errno;
        }
        return n;
}

void transport_set_coalesce(Transport *t, bool b) {
        if (t->tls)
                tls_conn_set_coalesce(t->tls, b);
}

int transport_flush(Transport *t) {
        int r;

        if (!t->tls)
                return 0;
        r = tls_conn_flush(t->tls);
        if (r == -EAGAIN)
                t->want = tls_conn_events(t->tls);
        return r;
}

size_t transport_pending(const Transport *t) {
        return t->tls ? tls_conn_pending(t->tls) : 0;
}

uint32_t transport_read_events(const Transport *t) {
        return t->tls ? t->want : EPOLLIN;
}

uint32_t transport_write_events(const Transport *t) {
        return t->tls ? t->want : EPOLLOUT;
}

const char *transport_error(const Transport *t) {
        return t->tls ? tls_conn_error(t->tls) : NULL;
}
