/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "http.h"
#include "listener.h"
#include "log.h"
#include "macro.h"

/* Each connection is a small state machine driven by one I/O source and one timer:
 *   READING   — EPOLLIN; bytes go into a fixed HTTP_HEADER_MAX buffer that is parsed after every read.
 *               Timer: header timeout from the first byte of a request (and from accept), idle timeout
 *               while waiting between keep-alive requests.
 *   WRITING   — EPOLLOUT only (input is not read, so pipelined requests wait in the kernel); the
 *               response is the formatted head plus the handler's body. Timer: write timeout.
 *   LINGERING — after the last response: SHUT_WR, then discard input until EOF or a short timer, so that
 *               unread request bytes do not make close() send an RST that destroys the response.
 * Pipelined bytes left in the buffer after a request are parsed as soon as the response is written.
 * The per-connection memory is fixed: the input buffer, the response head and one body. */

#define HTTP_RESPONSE_HEAD_MAX (512 + HTTP_LOCATION_MAX)
#define HTTP_CONTENT_TYPE_MAX 256
#define HTTP_LINGER_USEC ((uint64_t) 2 * USEC_PER_SEC)
#define HTTP_TIMER_ACCURACY_USEC USEC_PER_MSEC
#define HTTP_DEFAULT_CONTENT_TYPE "text/plain; charset=utf-8"

typedef enum ConnState {
        CONN_READING,
        CONN_WRITING,
        CONN_LINGERING,
        CONN_TAKEN,       /* the handler took the socket over (HttpResponse.takeover): only freeing is left */
} ConnState;

typedef struct HttpConnection HttpConnection;

struct HttpConnection {
        HttpServer *server; /* non-owning */
        int fd;
        sd_event_source *io, *timer;
        ConnState state;
        bool idle;        /* READING, waiting for the first byte of a keep-alive request */
        bool close_after; /* close once the current response is written */
        unsigned n_requests;

        char in[HTTP_HEADER_MAX];
        size_t in_len;

        char head[HTTP_RESPONSE_HEAD_MAX];
        size_t head_len, head_off;
        char *body; /* owned */
        size_t body_len, body_off;

        LIST_FIELDS(HttpConnection, connections);
};

struct HttpServer {
        sd_event *event;
        int listen_fd;
        Listener *listener;
        http_handler_t handler;
        void *userdata;
        uint64_t header_usec, idle_usec, write_usec;
        unsigned n_connections;
        HttpConnection *connections;
};

/* ---- request parsing (pure) ---- */

static bool is_digit(unsigned char c) {
        return c >= '0' && c <= '9';
}

static bool is_alpha(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RFC 9110 tchar */
static bool is_tchar(unsigned char c) {
        return is_digit(c) || is_alpha(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s, size_t n) {
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!is_tchar((unsigned char) s[i]))
                        return false;
        return true;
}

static bool is_vchar(unsigned char c) {
        return c > 0x20 && c < 0x7f;
}

/* field-value characters: VCHAR, SP, HTAB and obs-text */
static bool is_field_char(unsigned char c) {
        return c == ' ' || c == '\t' || is_vchar(c) || c >= 0x80;
}

static bool is_ows(char c) {
        return c == ' ' || c == '\t';
}

static bool token_eq(const char *s, size_t n, const char *lit) {
        return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

typedef struct Span {
        const char *p;
        size_t n;
} Span;

typedef struct ParseState {
        Span method, path, query, host;
        unsigned version;
        bool have_host;
        bool conn_close, conn_keep_alive;
        bool have_content_length;
        uint64_t content_length;
        bool transfer_encoding;
} ParseState;

static int parse_request_line(const char *l, size_t n, ParseState *st) {
        const char *sp1, *sp2, *target, *q;
        size_t target_len;

        sp1 = memchr(l, ' ', n);
        if (!sp1 || !is_token(l, (size_t) (sp1 - l)))
                return -EBADMSG;
        st->method = (Span) { l, (size_t) (sp1 - l) };

        target = sp1 + 1;
        sp2 = memchr(target, ' ', n - (size_t) (target - l));
        if (!sp2)
                return -EBADMSG;
        target_len = (size_t) (sp2 - target);
        if (target_len == 0 || target[0] != '/')
                return -EBADMSG;
        for (size_t i = 0; i < target_len; i++)
                if (!is_vchar((unsigned char) target[i]))
                        return -EBADMSG;

        q = memchr(target, '?', target_len);
        if (q) {
                st->path = (Span) { target, (size_t) (q - target) };
                st->query = (Span) { q + 1, target_len - (size_t) (q - target) - 1 };
        } else {
                st->path = (Span) { target, target_len };
                st->query = (Span) { "", 0 };
        }

        if (n - (size_t) (sp2 + 1 - l) != STRLEN("HTTP/1.1") || memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
                return -EBADMSG;
        switch (sp2[8]) {
        case '0':
                st->version = 10;
                break;
        case '1':
                st->version = 11;
                break;
        default:
                return -EBADMSG;
        }
        return 0;
}

static int parse_content_length(const char *v, size_t n, uint64_t *ret) {
        uint64_t x = 0;

        if (n == 0)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                if (!is_digit((unsigned char) v[i]))
                        return -EBADMSG;
                if (x > (UINT64_MAX - 9) / 10)
                        return -EBADMSG;
                x = x * 10 + (uint64_t) (v[i] - '0');
        }
        *ret = x;
        return 0;
}

static void parse_connection_tokens(const char *v, size_t n, ParseState *st) {
        size_t i = 0;

        while (i < n) {
                size_t start, end;

                while (i < n && (is_ows(v[i]) || v[i] == ','))
                        i++;
                start = i;
                while (i < n && v[i] != ',')
                        i++;
                end = i;
                while (end > start && is_ows(v[end - 1]))
                        end--;
                if (token_eq(v + start, end - start, "close"))
                        st->conn_close = true;
                else if (token_eq(v + start, end - start, "keep-alive"))
                        st->conn_keep_alive = true;
        }
}

static int parse_header_line(const char *l, size_t n, ParseState *st) {
        const char *colon, *v;
        size_t name_len, vn;
        int r;

        /* obs-fold (a line starting with whitespace) is refused, as RFC 9112 allows. */
        colon = memchr(l, ':', n);
        if (!colon)
                return -EBADMSG;
        name_len = (size_t) (colon - l);
        if (!is_token(l, name_len))
                return -EBADMSG;

        v = colon + 1;
        vn = n - name_len - 1;
        for (size_t i = 0; i < vn; i++)
                if (!is_field_char((unsigned char) v[i]))
                        return -EBADMSG;
        while (vn > 0 && is_ows(v[0])) {
                v++;
                vn--;
        }
        while (vn > 0 && is_ows(v[vn - 1]))
                vn--;

        if (token_eq(l, name_len, "Host")) {
                if (st->have_host)
                        return -EBADMSG;
                st->have_host = true;
                st->host = (Span) { v, vn };
        } else if (token_eq(l, name_len, "Connection"))
                parse_connection_tokens(v, vn, st);
        else if (token_eq(l, name_len, "Content-Length")) {
                uint64_t cl;

                r = parse_content_length(v, vn, &cl);
                if (r < 0)
                        return r;
                if (st->have_content_length && st->content_length != cl)
                        return -EBADMSG;
                st->have_content_length = true;
                st->content_length = cl;
        } else if (token_eq(l, name_len, "Transfer-Encoding"))
                st->transfer_encoding = true;

        return 0;
}

static char *copy_span(char **p, Span s) {
        char *start = *p;

        memcpy(start, s.p, s.n);
        start[s.n] = 0;
        *p = start + s.n + 1;
        return start;
}

int http_parse_request(const char *buf, size_t len, HttpRequest *ret, char *storage, size_t storage_size,
                       size_t *ret_header_len) {
        ParseState st = {};
        size_t n = MIN(len, (size_t) HTTP_HEADER_MAX), pos = 0, need;
        bool first = true;
        char *p;
        int r;

        assert(buf || len == 0);
        assert(ret);
        assert(storage || storage_size == 0);
        assert(ret_header_len);

        for (;;) {
                const char *nl, *l;
                size_t ll;

                nl = memchr(buf + pos, '\n', n - pos);
                if (!nl)
                        return len >= HTTP_HEADER_MAX ? -E2BIG : -EAGAIN;

                l = buf + pos;
                ll = (size_t) (nl - l);
                if (ll > 0 && l[ll - 1] == '\r')
                        ll--;
                pos = (size_t) (nl - buf) + 1;

                if (first) {
                        r = parse_request_line(l, ll, &st);
                        if (r < 0)
                                return r;
                        first = false;
                        continue;
                }
                if (ll == 0)
                        break;
                r = parse_header_line(l, ll, &st);
                if (r < 0)
                        return r;
        }

        need = st.method.n + st.path.n + st.query.n + st.host.n + 4;
        if (need > storage_size)
                return -ENOBUFS;

        p = storage;
        *ret = (HttpRequest) {
                .method = copy_span(&p, st.method),
                .path = copy_span(&p, st.path),
                .query = copy_span(&p, st.query),
                .host = copy_span(&p, st.have_host ? st.host : (Span) { "", 0 }),
                .version = st.version,
                .keep_alive = !st.conn_close && (st.version == 11 || st.conn_keep_alive),
                .has_body = st.transfer_encoding || st.content_length > 0,
        };
        *ret_header_len = pos;
        return 0;
}

const char *http_status_to_string(int status) {
        switch (status) {
        case 200:
                return "OK";
        case 301:
                return "Moved Permanently";
        case 302:
                return "Found";
        case 400:
                return "Bad Request";
        case 403:
                return "Forbidden";
        case 404:
                return "Not Found";
        case 405:
                return "Method Not Allowed";
        case 431:
                return "Request Header Fields Too Large";
        case 500:
                return "Internal Server Error";
        case 503:
                return "Service Unavailable";
        default:
                return NULL;
        }
}

int http_response_set_text(HttpResponse *r, int status, const char *text) {
        char *b;

        assert(r);
        assert(text);

        b = strdup(text);
        if (!b)
                return -ENOMEM;
        free(r->body);
        r->status = status;
        r->content_type = NULL;
        r->body = b;
        r->body_len = strlen(b);
        return 0;
}

/* ---- connections ---- */

static HttpConnection *conn_free(HttpConnection *c) {
        if (!c)
                return NULL;

        if (c->server) {
                LIST_REMOVE(connections, c->server->connections, c);
                c->server->n_connections--;
        }
        c->io = sd_event_source_disable_unref(c->io);
        c->timer = sd_event_source_disable_unref(c->timer);
        c->fd = safe_close(c->fd);
        free(c->body);
        return mfree(c);
}

static int conn_arm_timer(HttpConnection *c, uint64_t usec) {
        int r;

        r = sd_event_source_set_time_relative(c->timer, usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
}

static int conn_set_events(HttpConnection *c, uint32_t events) {
        return sd_event_source_set_io_events(c->io, events);
}

static bool valid_header_value(const char *s, size_t max) {
        size_t n = 0;

        for (; *s; s++, n++) {
                if (n >= max)
                        return false;
                if (!is_vchar((unsigned char) *s) && *s != ' ' && *s != '\t')
                        return false;
        }
        return true;
}

/* Prepare the response in c (taking ownership of body) and switch to WRITING. Never fails: anything
 * wrong with what the handler produced becomes a 500. */
static void conn_prepare_response(HttpConnection *c, int status, const char *content_type, char *body,
                                  size_t body_len, const char *location, bool head_only) {
        const char *reason = http_status_to_string(status);
        int n;

        if (!reason || body_len > HTTP_BODY_MAX || (body_len > 0 && !body) ||
            (content_type && !valid_header_value(content_type, HTTP_CONTENT_TYPE_MAX)) ||
            (location && !valid_header_value(location, HTTP_LOCATION_MAX))) {
                log_debug("http: handler produced an unusable response (status %i), sending 500", status);
                free(body);
                status = 500;
                reason = http_status_to_string(status);
                body = strdup("500 Internal Server Error");
                body_len = body ? strlen(body) : 0;
                content_type = NULL;
                location = NULL;
        }
        if (status == 405)
                c->close_after = true;

        n = snprintf(c->head, sizeof(c->head),
                     "HTTP/1.1 %i %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "%s%s%s"
                     "%s"
                     "%s"
                     "\r\n",
                     status, reason, content_type ?: HTTP_DEFAULT_CONTENT_TYPE, body_len,
                     location ? "Location: " : "", location ?: "", location ? "\r\n" : "",
                     status == 405 ? "Allow: GET, HEAD\r\n" : "",
                     c->close_after ? "Connection: close\r\n" : "");
        assert(n > 0 && (size_t) n < sizeof(c->head)); /* bounded by the checks above */
        c->head_len = (size_t) n;
        c->head_off = 0;

        free(c->body);
        if (head_only) {
                free(body);
                c->body = NULL;
                c->body_len = 0;
        } else {
                c->body = body;
                c->body_len = body_len;
        }
        c->body_off = 0;
        c->state = CONN_WRITING;
        (void) conn_arm_timer(c, c->server->write_usec);
}

/* A response of our own: "<code> <reason>" as text. close_conn: end the connection after it. */
static void conn_prepare_error(HttpConnection *c, int status, bool close_conn) {
        char text[64];

        if (close_conn)
                c->close_after = true;
        (void) snprintf(text, sizeof(text), "%i %s", status, http_status_to_string(status));
        conn_prepare_response(c, status, NULL, strdup(text), strlen(text), NULL, false);
}

static void conn_call_handler(HttpConnection *c, const HttpRequest *req) {
        HttpResponse resp = {};
        bool head_only = streq(req->method, "HEAD");
        int r;

        r = c->server->handler(req, &resp, c->server->userdata);
        if (r >= 0 && resp.takeover) {
                int fd = TAKE_FD(c->fd);

                free(resp.body);
                c->io = sd_event_source_disable_unref(c->io);
                c->state = CONN_TAKEN;
                r = resp.takeover(fd, resp.takeover_userdata);
                if (r < 0)
                        log_debug_errno(r, "http: handing over the connection for '%s' failed: %m", req->path);
                return;
        }
        if (r < 0) {
                log_debug_errno(r, "http: handler failed for '%s': %m", req->path);
                resp.body = mfree(resp.body);
                conn_prepare_error(c, 500, false);
                return;
        }
        conn_prepare_response(c, resp.status, resp.content_type, TAKE_PTR(resp.body), resp.body_len,
                              resp.location, head_only);
}

/* Parse what is buffered; 1 if a response was prepared (state is WRITING), 0 if more input is needed. */
static int conn_try_request(HttpConnection *c) {
        char storage[HTTP_HEADER_MAX];
        HttpRequest req;
        size_t hl;
        int r;

        if (c->in_len == 0)
                return 0;

        r = http_parse_request(c->in, c->in_len, &req, storage, sizeof(storage), &hl);
        if (r == -EAGAIN)
                return 0;
        if (r == -E2BIG) {
                log_debug("http: request head too large");
                conn_prepare_error(c, 431, true);
                return 1;
        }
        if (r < 0) {
                log_debug_errno(r, "http: malformed request: %m");
                conn_prepare_error(c, 400, true);
                return 1;
        }

        memmove(c->in, c->in + hl, c->in_len - hl);
        c->in_len -= hl;
        c->n_requests++;

        /* A body we will not read, or the end of this connection's request budget, ends it. */
        if (!req.keep_alive || req.has_body || c->n_requests >= HTTP_REQUESTS_PER_CONNECTION_MAX)
                c->close_after = true;

        if (!streq(req.method, "GET") && !streq(req.method, "HEAD")) {
                log_debug("http: method '%s' not allowed", req.method);
                conn_prepare_error(c, 405, true);
                return 1;
        }

        conn_call_handler(c, &req);
        return 1;
}

/* 0 when everything is written, -EAGAIN when the socket is full, another negative errno on failure. */
static int conn_flush(HttpConnection *c) {
        for (;;) {
                struct iovec iov[2];
                struct msghdr mh = { .msg_iov = iov };
                size_t k = 0;
                ssize_t n;

                if (c->head_off < c->head_len)
                        iov[k++] = (struct iovec) { c->head + c->head_off, c->head_len - c->head_off };
                if (c->body_off < c->body_len)
                        iov[k++] = (struct iovec) { c->body + c->body_off, c->body_len - c->body_off };
                if (k == 0)
                        return 0;
                mh.msg_iovlen = k;

                n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return -EAGAIN;
                        return -errno;
                }

                size_t m = (size_t) n, h = MIN(m, c->head_len - c->head_off);
                c->head_off += h;
                c->body_off += m - h;
        }
}

static void conn_begin_linger(HttpConnection *c) {
        c->state = CONN_LINGERING;
        c->body = mfree(c->body);
        c->body_len = c->body_off = 0;
        (void) shutdown(c->fd, SHUT_WR);
        (void) conn_set_events(c, EPOLLIN);
        (void) conn_arm_timer(c, MIN(HTTP_LINGER_USEC, c->server->header_usec));
}

/* Run the state machine as far as it goes without waiting. Returns < 0 if c must be freed. */
static int conn_dispatch(HttpConnection *c) {
        int r;

        for (;;)
                switch (c->state) {
                case CONN_READING:
                        if (conn_try_request(c) == 0)
                                return conn_set_events(c, EPOLLIN);
                        break;

                case CONN_WRITING:
                        r = conn_flush(c);
                        if (r == -EAGAIN)
                                return conn_set_events(c, EPOLLOUT);
                        if (r < 0)
                                return log_debug_errno(r, "http: write failed: %m");

                        c->body = mfree(c->body);
                        c->body_len = c->body_off = 0;
                        c->head_len = c->head_off = 0;
                        if (c->close_after) {
                                conn_begin_linger(c);
                                return 0;
                        }
                        c->state = CONN_READING;
                        c->idle = c->in_len == 0;
                        r = conn_arm_timer(c, c->idle ? c->server->idle_usec : c->server->header_usec);
                        if (r < 0)
                                return r;
                        break;

                case CONN_LINGERING:
                        return 0;
                case CONN_TAKEN:
                        return -ECONNABORTED; /* the socket has a new owner: free what is left */
                }
}

static int conn_read(HttpConnection *c) {
        ssize_t n;
        int r;

        if (c->in_len >= sizeof(c->in))
                return 0; /* cannot happen: a full buffer is always a complete or too large head */

        n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                return log_debug_errno(errno, "http: read failed: %m");
        }
        if (n == 0)
                return -ECONNRESET; /* EOF: nothing pending can be answered any more */

        if (c->idle) {
                c->idle = false;
                r = conn_arm_timer(c, c->server->header_usec);
                if (r < 0)
                        return r;
        }
        c->in_len += (size_t) n;
        return 0;
}

static int conn_discard(HttpConnection *c) {
        char buf[4096];

        for (unsigned i = 0; i < 16; i++) {
                ssize_t n = read(c->fd, buf, sizeof(buf));
                if (n < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
                if (n == 0)
                        return -ECONNRESET;
        }
        return 0;
}

static int on_conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        HttpConnection *c = userdata;
        int r = 0;

        switch (c->state) {
        case CONN_READING:
                if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                        r = conn_read(c);
                break;
        case CONN_WRITING:
                break; /* conn_flush() below reports errors */
        case CONN_TAKEN:
                break;
        case CONN_LINGERING:
                r = conn_discard(c);
                if (r < 0) {
                        conn_free(c);
                        return 0;
                }
                return 0;
        }
        if (r >= 0)
                r = conn_dispatch(c);
        if (r < 0)
                conn_free(c);
        return 0;
}

static int on_conn_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpConnection *c = userdata;

        log_debug("http: connection timed out (state %i), closing", (int) c->state);
        conn_free(c);
        return 0;
}

static int conn_new(HttpServer *s, int fd) {
        _cleanup_close_ int fd_close = fd;
        HttpConnection *c;
        int r;

        c = malloc(sizeof(HttpConnection));
        if (!c)
                return -ENOMEM;
        /* The buffers are left uninitialised; only the fields below matter. */
        c->server = NULL;
        c->fd = TAKE_FD(fd_close);
        c->io = c->timer = NULL;
        c->state = CONN_READING;
        c->idle = false;
        c->close_after = false;
        c->n_requests = 0;
        c->in_len = 0;
        c->head_len = c->head_off = 0;
        c->body = NULL;
        c->body_len = c->body_off = 0;
        c->connections_next = c->connections_prev = NULL;

        r = sd_event_add_io(s->event, &c->io, c->fd, EPOLLIN, on_conn_io, c);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(s->event, &c->timer, CLOCK_MONOTONIC, s->header_usec,
                                       HTTP_TIMER_ACCURACY_USEC, on_conn_timer, c);
        if (r < 0)
                goto fail;

        c->server = s;
        LIST_PREPEND(connections, s->connections, c);
        s->n_connections++;
        return 0;

fail:
        conn_free(c);
        return r;
}

/* ---- the listener ---- */

static int on_accept(int cfd, const SockAddr *peer, socklen_t peer_len, void *userdata) {
        HttpServer *s = userdata;

        if (s->n_connections >= HTTP_CONNECTIONS_MAX) {
                log_debug("http: %u connections open, refusing another", s->n_connections);
                safe_close(cfd);
                return 0;
        }
        return conn_new(s, cfd);
}

static void on_refuse(int cfd, void *userdata) {
        static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

        (void) !send(cfd, resp, sizeof(resp) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
}

int http_server_new(sd_event *e, int listen_fd, http_handler_t h, void *userdata, HttpServer **ret) {
        _cleanup_close_ int fd = listen_fd;
        HttpServer *s;
        int flags, r;

        assert(e);
        assert(h);
        assert(ret);

        if (fd < 0)
                return -EBADF;
        flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return -errno;
        if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;

        s = malloc(sizeof(HttpServer));
        if (!s)
                return -ENOMEM;
        *s = (HttpServer) {
                .event = sd_event_ref(e),
                .listen_fd = TAKE_FD(fd),
                .handler = h,
                .userdata = userdata,
                .header_usec = HTTP_HEADER_TIMEOUT_USEC,
                .idle_usec = HTTP_IDLE_TIMEOUT_USEC,
                .write_usec = HTTP_WRITE_TIMEOUT_USEC,
        };

        r = listener_new(e, s->listen_fd, "HTTP", on_accept, on_refuse, s, &s->listener);
        if (r < 0) {
                http_server_free(s);
                return r;
        }

        *ret = s;
        return 0;
}

HttpServer *http_server_free(HttpServer *s) {
        HttpConnection *c, *n;

        if (!s)
                return NULL;

        LIST_FOREACH_SAFE(connections, c, n, s->connections)
                conn_free(c);
        s->listener = listener_free(s->listener);
        s->listen_fd = safe_close(s->listen_fd);
        sd_event_unref(s->event);
        return mfree(s);
}

unsigned http_server_n_connections(const HttpServer *s) {
        return s ? s->n_connections : 0;
}

void http_server_set_timeouts(HttpServer *s, uint64_t header_usec, uint64_t idle_usec, uint64_t write_usec) {
        assert(s);

        if (header_usec > 0)
                s->header_usec = header_usec;
        if (idle_usec > 0)
                s->idle_usec = idle_usec;
        if (write_usec > 0)
                s->write_usec = write_usec;
}
