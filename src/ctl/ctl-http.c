/* SPDX-License-Identifier: Apache-2.0 */
/* ctl-http — konnctl's admin client: finding the local daemon (admin Unix socket, else the default admin port),
 * blocking connects with timeouts, one GET per connection ("Connection: close"), whole bodies or streamed
 * chunked bodies split into lines. Every failure is printed here, once, and mapped to an exit status class. */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl.h"
#include "macro.h"
#include "sock.h"

#define CTL_BODY_MAX ((size_t) 64 * 1024 * 1024)
#define CTL_LINE_MAX 16384
#define CTL_TIMEOUT_MS 10000

int ctl_exit_for_errno(int error) {
        switch (abs(error)) {
        case EACCES:
        case EPERM:
                return CTL_EXIT_PERMISSION;
        case ETIMEDOUT:
        case EAGAIN:
                return CTL_EXIT_TIMEOUT;
        default:
                return CTL_EXIT_UNREACHABLE;
        }
}

static void set_timeouts(int fd, int timeout_ms) {
        struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };

        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int connect_unix(const char *path, int timeout_ms) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        int fd;

        if (strlen(path) >= sizeof(a.sun_path))
                return -ENAMETOOLONG;
        memcpy(a.sun_path, path, strlen(path));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        set_timeouts(fd, timeout_ms);
        if (connect(fd, (struct sockaddr *) &a, sizeof(a)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

static int connect_tcp(const char *address, int timeout_ms) {
        char host[256];
        uint16_t port;
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
        char service[8];
        int r, fd = -ENOENT;

        r = sock_split_host_port(address, host, sizeof(host), &port, NULL);
        if (r < 0)
                return r;
        (void) snprintf(service, sizeof(service), "%u", port);
        r = getaddrinfo(host[0] ? host : "127.0.0.1", service, &hints, &res);
        if (r != 0)
                return -EHOSTUNREACH;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0) {
                        fd = -errno;
                        continue;
                }
                set_timeouts(fd, timeout_ms);
                if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
                        break;
                r = -errno;
                close(fd);
                fd = r == -EINPROGRESS ? -ETIMEDOUT : r;
        }
        freeaddrinfo(res);
        return fd;
}

int ctl_connect(const CtlTarget *t, int timeout_ms) {
        return t->is_unix ? connect_unix(t->address, timeout_ms) : connect_tcp(t->address, timeout_ms);
}

static void target_set(CtlTarget *t, const char *address) {
        (void) snprintf(t->address, sizeof(t->address), "%.*s", (int) sizeof(t->address) - 1, address);
        t->is_unix = strchr(address, '/') != NULL;
}

int ctl_find_target(const char *host, const char *want, CtlTarget *ret) {
        const char *dir = getenv("KONNCTL_RUNTIME_DIR");
        struct {
                char address[256];
                const char *daemon;
        } cand[4];
        size_t n = 0;
        int fd;
        char denied[2][256];
        size_t n_denied = 0;

        if (host) {
                target_set(ret, host);
                fd = ctl_connect(ret, CTL_TIMEOUT_MS);
                if (fd < 0) {
                        fprintf(stderr, "konnctl: cannot connect to %s: %s\n", ret->address, strerror(-fd));
                        return ctl_exit_for_errno(fd);
                }
                close(fd);
                return 0;
        }
        if (!dir || !*dir)
                dir = "/run/konn";
        (void) snprintf(cand[n].address, sizeof(cand[n].address), "%s/konn-server-admin.sock", dir);
        cand[n++].daemon = "konn-server";
        (void) snprintf(cand[n].address, sizeof(cand[n].address), "%s/konn-agent-admin.sock", dir);
        cand[n++].daemon = "konn-agent";
        (void) snprintf(cand[n].address, sizeof(cand[n].address), "127.0.0.1:8095");
        cand[n++].daemon = "konn-server";
        (void) snprintf(cand[n].address, sizeof(cand[n].address), "127.0.0.1:8094");
        cand[n++].daemon = "konn-agent";

        for (size_t i = 0; i < n; i++) {
                if (want && strcmp(want, cand[i].daemon) != 0)
                        continue;
                target_set(ret, cand[i].address);
                fd = ctl_connect(ret, 2000);
                if (fd >= 0) {
                        close(fd);
                        return 0;
                }
                /* Not permitted: the admin port may still answer; said only if nothing else does. */
                if ((fd == -EACCES || fd == -EPERM) && n_denied < 2)
                        (void) snprintf(denied[n_denied++], sizeof(denied[0]), "%s", ret->address);
        }
        for (size_t i = 0; i < n_denied; i++)
                fprintf(stderr, "konnctl: %s: permission denied (members of the socket's group may connect; "
                        "see konnctl(1))\n", denied[i]);
        if (n_denied > 0)
                return CTL_EXIT_PERMISSION;
        fprintf(stderr, "konnctl: no %s found: no admin socket in %s and nothing listening on the default admin "
                "port%s; is the daemon running? (-H selects another address)\n", want ?: "konn daemon", dir,
                want ? "" : "s 8095/8094");
        return CTL_EXIT_UNREACHABLE;
}

static int send_request(int fd, const CtlTarget *t, const char *path) {
        char req[1024];
        int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: konnctl/" PACKAGE_VERSION
                         "\r\nConnection: close\r\n\r\n", path, t->is_unix ? "localhost" : t->address);
        size_t off = 0;

        if (n < 0 || (size_t) n >= sizeof(req))
                return -ENAMETOOLONG;
        while (off < (size_t) n) {
                ssize_t k = send(fd, req + off, (size_t) n - off, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                off += (size_t) k;
        }
        return 0;
}

/* Status code of a response head, 0 if it is not one. */
static int parse_status(const char *head) {
        int code;
        if (sscanf(head, "HTTP/1.%*d %d", &code) != 1)
                return 0;
        return code;
}

static bool head_has(const char *head, size_t head_len, const char *header, const char *value) {
        size_t hl = strlen(header);
        for (const char *p = head; p && p < head + head_len; p = strstr(p, "\r\n")) {
                if (p[0] == '\r')
                        p += 2;
                if (strncasecmp(p, header, hl) == 0 && p[hl] == ':') {
                        const char *v = p + hl + 1, *e = strstr(v, "\r\n");
                        while (*v == ' ')
                                v++;
                        if (e && (size_t) (e - v) >= strlen(value) && strncasecmp(v, value, strlen(value)) == 0)
                                return true;
                }
                if (p[0] == '\0')
                        break;
        }
        return false;
}

static int report_http_error(const CtlTarget *t, const char *path, int code, const char *body) {
        size_t n = strcspn(body, "\r\n");
        if (code == 404)
                fprintf(stderr, "konnctl: %s does not serve %s (agents is a konn-server command, servers a konn-agent "
                        "one; is it a konn daemon's admin interface?)\n", t->address, path);
        else
                fprintf(stderr, "konnctl: %s answered %d for %s: %.*s\n", t->address, code, path, (int) n, body);
        return CTL_EXIT_PROTOCOL;
}

int ctl_get(const CtlTarget *t, const char *path, char **ret_body) {
        size_t len = 0, cap = 0;
        char *buf = NULL, *end;
        int fd, r, code;

        fd = ctl_connect(t, CTL_TIMEOUT_MS);
        if (fd < 0) {
                fprintf(stderr, "konnctl: cannot connect to %s: %s\n", t->address, strerror(-fd));
                return ctl_exit_for_errno(fd);
        }
        r = send_request(fd, t, path);
        if (r < 0) {
                close(fd);
                fprintf(stderr, "konnctl: sending to %s failed: %s\n", t->address, strerror(-r));
                return ctl_exit_for_errno(r);
        }
        for (;;) {
                ssize_t k;
                if (cap - len < 65536) {
                        char *nb;
                        if (cap > CTL_BODY_MAX) {
                                close(fd);
                                free(buf);
                                fprintf(stderr, "konnctl: the answer from %s is too large\n", t->address);
                                return CTL_EXIT_PROTOCOL;
                        }
                        cap = cap ? cap * 2 : 131072;
                        nb = realloc(buf, cap + 1);
                        if (!nb) {
                                close(fd);
                                free(buf);
                                fputs("konnctl: out of memory\n", stderr);
                                return CTL_EXIT_FAILED;
                        }
                        buf = nb;
                }
                k = recv(fd, buf + len, cap - len, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = -errno;
                        close(fd);
                        free(buf);
                        fprintf(stderr, "konnctl: reading from %s failed: %s\n", t->address,
                                r == -EAGAIN ? "timed out" : strerror(-r));
                        return ctl_exit_for_errno(r);
                }
                if (k == 0)
                        break;
                len += (size_t) k;
        }
        close(fd);
        if (!buf) {
                fprintf(stderr, "konnctl: %s closed the connection without an answer\n", t->address);
                return CTL_EXIT_PROTOCOL;
        }
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        code = parse_status(buf);
        if (!end || code == 0) {
                free(buf);
                fprintf(stderr, "konnctl: %s did not answer with HTTP\n", t->address);
                return CTL_EXIT_PROTOCOL;
        }
        if (code != 200) {
                r = report_http_error(t, path, code, end + 4);
                free(buf);
                return r;
        }
        memmove(buf, end + 4, len - (size_t) (end + 4 - buf) + 1);
        *ret_body = buf;
        return 0;
}

int ctl_get_json(const CtlTarget *t, const char *path, json_object **ret) {
        enum json_tokener_error jerr;
        char *body = NULL;
        json_object *o;
        int r;

        r = ctl_get(t, path, &body);
        if (r > 0)
                return r;
        o = json_tokener_parse_verbose(body, &jerr);
        free(body);
        if (!o || !json_object_is_type(o, json_type_object)) {
                fprintf(stderr, "konnctl: %s answered %s with invalid JSON: %s\n", t->address, path,
                        o ? "not an object" : json_tokener_error_desc(jerr));
                json_object_put(o);
                return CTL_EXIT_PROTOCOL;
        }
        *ret = o;
        return 0;
}

/* ---- streamed bodies ---- */

struct CtlStream {
        const CtlTarget *target;
        int fd;
        char buf[65536];
        size_t len, pos;
        bool chunked, crlf_due, ended;
        uint64_t chunk_left;
        char line[CTL_LINE_MAX];
        size_t line_len;
};

CtlStream *ctl_stream_free(CtlStream *s) {
        if (s) {
                if (s->fd >= 0)
                        close(s->fd);
                free(s);
        }
        return NULL;
}

/* Wait up to timeout_ms (-1: for ever) for the fd to be readable and read; bytes read, 0 at EOF, -errno. */
static ssize_t stream_read(CtlStream *s, int timeout_ms) {
        struct pollfd p = { .fd = s->fd, .events = POLLIN };
        ssize_t k;
        int r;

        if (s->len == sizeof(s->buf))
                return -ENOBUFS;
        r = poll(&p, 1, timeout_ms);
        if (r < 0)
                return -errno;
        if (r == 0)
                return -ETIMEDOUT;
        k = recv(s->fd, s->buf + s->len, sizeof(s->buf) - s->len, 0);
        if (k < 0)
                return -errno;
        s->len += (size_t) k;
        return k;
}

int ctl_stream_open(const CtlTarget *t, const char *path, int timeout_ms, CtlStream **ret) {
        CtlStream *s;
        char *end;
        int r, code;

        s = calloc(1, sizeof(CtlStream));
        if (!s) {
                fputs("konnctl: out of memory\n", stderr);
                return CTL_EXIT_FAILED;
        }
        s->target = t;
        s->fd = ctl_connect(t, timeout_ms);
        if (s->fd < 0) {
                r = s->fd;
                free(s);
                fprintf(stderr, "konnctl: cannot connect to %s: %s\n", t->address, strerror(-r));
                return ctl_exit_for_errno(r);
        }
        r = send_request(s->fd, t, path);
        while (r >= 0 && !(end = memmem(s->buf, s->len, "\r\n\r\n", 4))) {
                ssize_t k = stream_read(s, timeout_ms);
                if (k == -EINTR)
                        continue;
                r = k == 0 ? -ECONNRESET : k < 0 ? (int) k : 0;
        }
        if (r < 0) {
                ctl_stream_free(s);
                fprintf(stderr, "konnctl: no answer from %s: %s\n", t->address, strerror(-r));
                return r == -ENOBUFS ? CTL_EXIT_PROTOCOL : ctl_exit_for_errno(r);
        }
        *end = '\0';
        code = parse_status(s->buf);
        s->chunked = head_has(s->buf, (size_t) (end - s->buf), "Transfer-Encoding", "chunked");
        s->pos = (size_t) (end - s->buf) + 4;
        if (code != 200) {
                char body[512];
                size_t bl = MIN(s->len - s->pos, sizeof(body) - 1);
                memcpy(body, s->buf + s->pos, bl);
                body[bl] = '\0';
                ctl_stream_free(s);
                if (!code) {
                        fprintf(stderr, "konnctl: %s did not answer with HTTP\n", t->address);
                        return CTL_EXIT_PROTOCOL;
                }
                return report_http_error(t, path, code, body);
        }
        *ret = s;
        return 0;
}

/* Move body bytes from buf into the line; true when a line is complete. */
static bool take_body(CtlStream *s, size_t n) {
        for (size_t i = 0; i < n; i++) {
                char c = s->buf[s->pos++];
                if (s->chunked)
                        s->chunk_left--;
                if (c == '\n') {
                        s->line[s->line_len] = '\0';
                        return true;
                }
                if (s->line_len < sizeof(s->line) - 1)
                        s->line[s->line_len++] = c;
        }
        return false;
}

int ctl_stream_next(CtlStream *s, int timeout_ms, const char **ret_line) {
        for (;;) {
                /* Use what is buffered first. */
                while (s->pos < s->len && !s->ended) {
                        if (!s->chunked) {
                                if (take_body(s, s->len - s->pos)) {
                                        s->line_len = 0;
                                        *ret_line = s->line;
                                        return 0;
                                }
                                continue;
                        }
                        if (s->crlf_due) {
                                if (s->len - s->pos < 2)
                                        break;
                                s->pos += 2;
                                s->crlf_due = false;
                        } else if (s->chunk_left == 0) {
                                char *eol = memmem(s->buf + s->pos, s->len - s->pos, "\r\n", 2);
                                if (!eol)
                                        break;
                                *eol = '\0';
                                s->chunk_left = strtoull(s->buf + s->pos, NULL, 16);
                                s->pos = (size_t) (eol - s->buf) + 2;
                                if (s->chunk_left == 0)
                                        s->ended = true;
                        } else {
                                bool done = take_body(s, (size_t) MIN(s->chunk_left, (uint64_t) (s->len - s->pos)));
                                if (s->chunk_left == 0)
                                        s->crlf_due = true;
                                if (done) {
                                        s->line_len = 0;
                                        *ret_line = s->line;
                                        return 0;
                                }
                        }
                }
                if (s->ended)
                        return -EPIPE;
                memmove(s->buf, s->buf + s->pos, s->len - s->pos);
                s->len -= s->pos;
                s->pos = 0;
                ssize_t k = stream_read(s, timeout_ms);
                if (k == 0)
                        return -EPIPE;
                if (k < 0)
                        return (int) k;
        }
}

int ctl_stream(const CtlTarget *t, const char *path, int (*on_line)(const char *line, void *userdata), void *userdata,
               volatile int *stop) {
        CtlStream *s = NULL;
        const char *line;
        int r;

        r = ctl_stream_open(t, path, CTL_TIMEOUT_MS, &s);
        if (r > 0)
                return r;
        for (;;) {
                if (*stop) {
                        ctl_stream_free(s);
                        return CTL_EXIT_OK;
                }
                r = ctl_stream_next(s, -1, &line);
                if (r == -EINTR)
                        continue;
                if (r < 0) {
                        ctl_stream_free(s);
                        if (*stop)
                                return CTL_EXIT_OK;
                        fprintf(stderr, "konnctl: %s ended the stream%s%s\n", t->address, r == -EPIPE ? "" : ": ",
                                r == -EPIPE ? " (the daemon stopped, or dropped this reader for being too slow)"
                                            : strerror(-r));
                        return CTL_EXIT_UNREACHABLE;
                }
                r = on_line(line, userdata);
                if (r != 0) {
                        ctl_stream_free(s);
                        return r;
                }
        }
}
