/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "bench.h"

/* ---------------------------------------------------------------------------------------------- */
/* Client side: many non-blocking connections on one epoll loop (level-triggered). */




int conn_set_events(Loop *lp, Conn *c, uint32_t events) {
        struct epoll_event ev = {
                .events = events,
                .data.ptr = c,
        };
        int op;

        if (events == c->events)
                return 0;
        op = c->events == 0 ? EPOLL_CTL_ADD : events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
        if (epoll_ctl(lp->epfd, op, c->fd, &ev) < 0)
                return negative_errno();
        c->events = events;
        return 0;
}

void conn_close(Conn *c) {
        c->fd = safe_close(c->fd); /* also leaves the epoll set */
        c->events = 0;
        c->state = CONN_FREE;
        c->ready = false;
        c->wbuf = mfree(c->wbuf);
}

/* n closed connections; NULL on OOM. */
Conn *conns_new(unsigned n) {
        Conn *conns = calloc(MAX(n, 1U), sizeof(Conn));

        if (!conns)
                return NULL;
        for (unsigned i = 0; i < n; i++)
                conns[i].fd = -EBADF;
        return conns;
}

/* Closes and frees a set of connections; the retry list only ever refers to the current set. */
void conns_free(Loop *lp, Conn *conns, unsigned n) {
        lp->n_retry = 0;
        if (!conns)
                return;
        for (unsigned i = 0; i < n; i++)
                conn_close(&conns[i]);
        free(conns);
}

static int loop_add_retry(Loop *lp, Conn *c) {
        if (lp->n_retry == lp->retry_cap) {
                size_t cap = MAX(lp->retry_cap * 2, (size_t) 64);
                Conn **p = realloc(lp->retry, cap * sizeof(Conn *));

                if (!p)
                        return -ENOMEM;
                lp->retry = p;
                lp->retry_cap = cap;
        }
        lp->retry[lp->n_retry++] = c;
        c->state = CONN_RETRY;
        return 0;
}

static int conn_send_request(Loop *lp, Conn *c) {
        char request[128];
        size_t n = (size_t) format_connect_request(c->port, request, sizeof(request));

        while (c->req_off < n) {
                ssize_t k = send(c->fd, request + c->req_off, n - c->req_off, MSG_NOSIGNAL);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                c->state = CONN_REQUEST;
                                return conn_set_events(lp, c, EPOLLOUT);
                        }
                        return negative_errno();
                }
                c->req_off += (size_t) k;
        }
        c->state = CONN_REPLY;
        return conn_set_events(lp, c, EPOLLIN);
}

static int conn_connect(Loop *lp, Conn *c) {
        if (c->uds) {
                struct sockaddr_un sa = {
                        .sun_family = AF_UNIX,
                };

                if (strlen(c->uds) >= sizeof(sa.sun_path))
                        return -ENAMETOOLONG;
                memcpy(sa.sun_path, c->uds, strlen(c->uds));
                if (connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                        if (errno == EAGAIN)
                                return loop_add_retry(lp, c);
                        return negative_errno();
                }
                c->req_off = 0;
                return conn_send_request(lp, c);
        }

        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_port = htons(c->port),
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        if (connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
                return negative_errno();
        /* Also when connect() completed at once: EPOLLOUT fires right away. */
        c->state = CONN_CONNECTING;
        return conn_set_events(lp, c, EPOLLOUT);
}

/* Starts a connection to port, direct (uds NULL) or through the konn socket uds. c must be closed. */
int conn_begin(Loop *lp, Conn *c, const char *uds, uint16_t port) {
        assert(c->fd < 0 || c->state == CONN_FREE);
        *c = (Conn) {
                .fd = -EBADF,
                .uds = uds,
                .port = port,
                .t_start = now_usec(),
        };
        c->fd = socket(uds ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return negative_errno();
        return conn_connect(lp, c);
}

/* connect() again for every connection that found the konn socket's backlog full. In place: each
 * retry appends at most one entry, at an index not above the one being visited. */
int loop_retry_all(Loop *lp) {
        size_t n = lp->n_retry;
        int r;

        lp->n_retry = 0;
        for (size_t i = 0; i < n; i++) {
                Conn *c = lp->retry[i];

                if (c->state != CONN_RETRY)
                        continue;
                r = conn_connect(lp, c);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Advances the set-up of c on an epoll event. Returns 1 when the connection is open (*ret_extra and
 * *ret_extra_len: tunnel bytes that came with the CONNECT reply), 0 while it is still being set up, or
 * a negative errno (-EPROTO: a reply other than BENCH_CONNECT_REPLY, which is logged). */
int conn_setup_event(Loop *lp, Conn *c, const uint8_t **ret_extra, size_t *ret_extra_len) {
        switch (c->state) {
        case CONN_CONNECTING: {
                int error = 0, r;
                socklen_t len = sizeof(error);

                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        return negative_errno();
                if (error != 0)
                        return -error;
                c->state = CONN_OPEN;
                r = conn_set_events(lp, c, EPOLLIN);
                if (r < 0)
                        return r;
                *ret_extra = NULL;
                *ret_extra_len = 0;
                return 1;
        }

        case CONN_REQUEST:
                return conn_send_request(lp, c);

        case CONN_REPLY: {
                const char *end;
                size_t hlen;
                ssize_t k;
                int r;

                k = recv(c->fd, c->reply + c->reply_len, sizeof(c->reply) - c->reply_len, 0);
                if (k < 0)
                        return IN_SET(errno, EAGAIN, EINTR) ? 0 : negative_errno();
                if (k == 0) {
                        char line[128];

                        reply_first_line(c->reply, c->reply_len, line, sizeof(line));
                        fail("konn closed the connection during the CONNECT reply (got '%s')", line);
                        return -ECONNRESET;
                }
                c->reply_len += (size_t) k;
                end = memmem(c->reply, c->reply_len, "\r\n\r\n", 4);
                if (!end) {
                        if (c->reply_len < sizeof(c->reply))
                                return 0;
                        return check_connect_reply(c->reply, c->reply_len);
                }
                hlen = (size_t) (end + 4 - c->reply);
                r = check_connect_reply(c->reply, hlen);
                if (r < 0)
                        return r;
                c->state = CONN_OPEN;
                *ret_extra = (const uint8_t *) c->reply + hlen;
                *ret_extra_len = c->reply_len - hlen;
                return 1;
        }

        default:
                return -EINVAL;
        }
}

/* For connections to the hello target: 1 once HELLO_BYTE (and nothing else) has arrived, 0 while
 * pending, negative errno on failure. */
int conn_hello_event(Loop *lp, Conn *c) {
        const uint8_t *extra;
        size_t n_extra;
        uint8_t b[2];
        ssize_t k;
        int r;

        if (c->state != CONN_OPEN) {
                r = conn_setup_event(lp, c, &extra, &n_extra);
                if (r <= 0 || n_extra == 0)
                        return r < 0 ? r : 0;
                return n_extra == 1 && extra[0] == HELLO_BYTE ? 1 : -EPROTO;
        }
        k = recv(c->fd, b, sizeof(b), 0);
        if (k < 0)
                return IN_SET(errno, EAGAIN, EINTR) ? 0 : negative_errno();
        if (k == 0)
                return -ECONNRESET;
        return k == 1 && b[0] == HELLO_BYTE ? 1 : -EPROTO;
}
