/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "macro.h"
#include "sock.h"

#define SOCK_LISTEN_BACKLOG 4096

/* Longest text that can still be a numeric IP: an IPv6 literal plus "%" and an interface name. */
#define NUMERIC_HOST_MAX (INET6_ADDRSTRLEN + 1 + IF_NAMESIZE)

#define REASON_MISSING_PORT "missing port in address"
#define REASON_TOO_MANY_COLONS "too many colons in address"
#define REASON_INVALID_PORT "invalid port"

/* Port text, Go style: decimal digits only, and "" means port 0 (Go's legacy behaviour,
 * golang.org/issue/13610). */
static int parse_port(const char *s, size_t n, uint16_t *ret) {
        unsigned v = 0;

        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -ERANGE;
                v = v * 10 + (unsigned) (s[i] - '0');
                if (v > UINT16_MAX)
                        return -ERANGE;
        }

        *ret = (uint16_t) v;
        return 0;
}

/* Go's net.SplitHostPort(), on spans of `addr`. */
static int split_spans(const char *addr, const char **ret_host, size_t *ret_host_len, const char **ret_port,
                       const char **ret_reason) {
        const char *colon, *host;
        size_t i, j = 0, k = 0, host_len;

        colon = strrchr(addr, ':');
        if (!colon) {
                *ret_reason = REASON_MISSING_PORT;
                return -EINVAL;
        }
        i = (size_t) (colon - addr);

        if (addr[0] == '[') {
                const char *end = strchr(addr, ']');
                size_t e;

                if (!end) {
                        *ret_reason = "missing ']' in address";
                        return -EINVAL;
                }
                e = (size_t) (end - addr);
                if (addr[e + 1] == '\0') {
                        *ret_reason = REASON_MISSING_PORT;
                        return -EINVAL;
                }
                if (e + 1 != i) {
                        *ret_reason = addr[e + 1] == ':' ? REASON_TOO_MANY_COLONS : REASON_MISSING_PORT;
                        return -EINVAL;
                }
                host = addr + 1;
                host_len = e - 1;
                j = 1;
                k = e + 1;
        } else {
                host = addr;
                host_len = i;
                if (memchr(host, ':', host_len)) {
                        *ret_reason = REASON_TOO_MANY_COLONS;
                        return -EINVAL;
                }
        }

        if (strchr(addr + j, '[')) {
                *ret_reason = "unexpected '[' in address";
                return -EINVAL;
        }
        if (strchr(addr + k, ']')) {
                *ret_reason = "unexpected ']' in address";
                return -EINVAL;
        }

        *ret_host = host;
        *ret_host_len = host_len;
        *ret_port = colon + 1;
        return 0;
}

int sock_split_host_port(const char *addr, char *host, size_t host_size, uint16_t *ret_port,
                         const char **ret_reason) {
        const char *h, *p, *reason = NULL;
        size_t hl;
        uint16_t port;
        int r;

        if (!addr || !host || !ret_port)
                return -EINVAL;

        r = split_spans(addr, &h, &hl, &p, &reason);
        if (r < 0)
                goto fail;

        r = parse_port(p, strlen(p), &port);
        if (r < 0) {
                reason = REASON_INVALID_PORT;
                goto fail;
        }

        if (hl >= host_size) {
                r = -ENOBUFS;
                reason = "address too long";
                goto fail;
        }

        memcpy(host, h, hl);
        host[hl] = '\0';
        *ret_port = port;
        return 0;

fail:
        if (ret_reason)
                *ret_reason = reason;
        return r;
}

static int parse_ip(const char *h, size_t hl, uint16_t port, SockAddr *ret, socklen_t *ret_len) {
        char buf[NUMERIC_HOST_MAX + 1];
        struct in_addr a4;
        struct in6_addr a6;
        uint32_t scope = 0;
        char *zone;

        if (hl == 0)
                return -EINVAL;
        if (hl > NUMERIC_HOST_MAX)
                /* Too long for any IP literal: a name, unless it has a colon (a broken IPv6). */
                return memchr(h, ':', hl) ? -EINVAL : -EADDRNOTAVAIL;

        memcpy(buf, h, hl);
        buf[hl] = '\0';

        if (inet_pton(AF_INET, buf, &a4) == 1) {
                *ret = (SockAddr) {
                        .in = {
                                .sin_family = AF_INET,
                                .sin_port = htons(port),
                                .sin_addr = a4,
                        },
                };
                *ret_len = sizeof(struct sockaddr_in);
                return 0;
        }

        if (!strchr(buf, ':'))
                return -EADDRNOTAVAIL; /* "localhost", "svc.ns.svc", ... */

        zone = strchr(buf, '%');
        if (zone)
                *zone++ = '\0';

        if (inet_pton(AF_INET6, buf, &a6) != 1)
                return -EINVAL;

        if (zone) {
                size_t zl = strlen(zone);

                if (zl == 0)
                        return -EINVAL;
                if (strspn(zone, "0123456789") == zl) {
                        char *end;
                        unsigned long v;

                        errno = 0;
                        v = strtoul(zone, &end, 10);
                        if (errno != 0 || *end != '\0' || v > UINT32_MAX)
                                return -EINVAL;
                        scope = (uint32_t) v;
                } else {
                        scope = if_nametoindex(zone);
                        if (scope == 0)
                                return -EINVAL;
                }
        }

        *ret = (SockAddr) {
                .in6 = {
                        .sin6_family = AF_INET6,
                        .sin6_port = htons(port),
                        .sin6_addr = a6,
                        .sin6_scope_id = scope,
                },
        };
        *ret_len = sizeof(struct sockaddr_in6);
        return 0;
}

int sock_parse_numeric(const char *host, uint16_t port, SockAddr *ret, socklen_t *ret_len) {
        const char *h, *first_colon, *last_colon;
        size_t hl;
        int r;

        if (!host || !ret || !ret_len || host[0] == '\0')
                return -EINVAL;

        first_colon = strchr(host, ':');
        last_colon = strrchr(host, ':');

        if (host[0] == '[') {
                const char *end = strchr(host, ']');

                if (!end)
                        return -EINVAL;
                if (end[1] == '\0') {
                        /* "[::1]": bracketed literal, default port. */
                        h = host + 1;
                        hl = (size_t) (end - host) - 1;
                        if (memchr(h, '[', hl))
                                return -EINVAL;
                        goto parse;
                }
        } else if (!first_colon || first_colon != last_colon) {
                /* "1.2.3.4", "name" or a bare IPv6 literal "::1": default port. */
                h = host;
                hl = strlen(host);
                if (strpbrk(host, "[]"))
                        return -EINVAL;
                goto parse;
        }

        /* "host:port" or "[host]:port". */
        {
                const char *p, *reason;

                r = split_spans(host, &h, &hl, &p, &reason);
                if (r < 0)
                        return r;
                r = parse_port(p, strlen(p), &port);
                if (r < 0)
                        return r;
        }

parse:
        return parse_ip(h, hl, port, ret, ret_len);
}

static int listen_one(const SockAddr *a, socklen_t len, bool dual_stack) {
        _cleanup_close_ int fd = -EBADF;
        static const int one = 1, zero = 0;

        fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_TCP);
        if (fd < 0)
                return -errno;

        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                return -errno;

        if (a->sa.sa_family == AF_INET6 && dual_stack &&
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
                return -errno;

        if (bind(fd, &a->sa, len) < 0)
                return -errno;

        if (listen(fd, SOCK_LISTEN_BACKLOG) < 0)
                return -errno;

        return TAKE_FD(fd);
}

/* What socket()/bind() on [::] return when the kernel has no IPv6, or has it disabled. */
static bool ipv6_unavailable(int r) {
        return r == -EAFNOSUPPORT || r == -EPROTONOSUPPORT || r == -EADDRNOTAVAIL;
}

int sock_listen_tcp(const char *host, uint16_t port) {
        SockAddr a;
        socklen_t len;
        int r;

        if (host && host[0] != '\0') {
                r = sock_parse_numeric(host, port, &a, &len);
                if (r < 0)
                        return r;
                return listen_one(&a, len,
                                  a.sa.sa_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&a.in6.sin6_addr));
        }

        a = (SockAddr) {
                .in6 = {
                        .sin6_family = AF_INET6,
                        .sin6_port = htons(port),
                        .sin6_addr = IN6ADDR_ANY_INIT,
                },
        };
        r = listen_one(&a, sizeof(struct sockaddr_in6), true);
        if (!ipv6_unavailable(r))
                return r;

        log_debug_errno(r, "IPv6 unavailable for the wildcard listener, falling back to 0.0.0.0: %m");
        a = (SockAddr) {
                .in = {
                        .sin_family = AF_INET,
                        .sin_port = htons(port),
                        .sin_addr.s_addr = htonl(INADDR_ANY),
                },
        };
        return listen_one(&a, sizeof(struct sockaddr_in), false);
}

int sock_listen_unix(const char *path, mode_t mode, bool delete_existing) {
        _cleanup_close_ int fd = -EBADF;
        SockAddr a = { .un.sun_family = AF_UNIX };
        socklen_t len;
        size_t l;
        bool abstract;
        int r;

        if (!path || path[0] == '\0' || (mode & ~(mode_t) 0777) != 0)
                return -EINVAL;

        l = strlen(path);
        if (l >= sizeof(a.un.sun_path))
                return -ENAMETOOLONG;

        abstract = path[0] == '@';
        memcpy(a.un.sun_path, path, l);
        if (abstract)
                a.un.sun_path[0] = '\0';
        len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + l + (abstract ? 0 : 1));

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;

        if (abstract) {
                if (bind(fd, &a.sa, len) < 0)
                        return -errno;
        } else {
                mode_t old;

                if (delete_existing) {
                        struct stat st;

                        if (lstat(path, &st) >= 0 && S_ISSOCK(st.st_mode) && unlink(path) < 0 &&
                            errno != ENOENT)
                                return -errno;
                }

                /* umask is process-wide, but bind() is the only file creation in this window on the
                 * loop thread, and the chmod() afterwards makes the mode exact either way. */
                old = umask(~mode & 0777);
                r = RET_NERRNO(bind(fd, &a.sa, len));
                (void) umask(old);
                if (r < 0)
                        return r;

                if (chmod(path, mode) < 0) {
                        r = -errno;
                        (void) unlink(path);
                        return r;
                }
        }

        if (listen(fd, SOCK_LISTEN_BACKLOG) < 0) {
                r = -errno;
                if (!abstract)
                        (void) unlink(path);
                return r;
        }

        return TAKE_FD(fd);
}

int sock_connect_start(const SockAddr *a, socklen_t len, bool *ret_in_progress) {
        _cleanup_close_ int fd = -EBADF;
        bool in_progress = false;

        if (!a || len < sizeof(sa_family_t) || len > sizeof(SockAddr))
                return -EINVAL;

        fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;

        if (connect(fd, &a->sa, len) < 0) {
                struct pollfd p = { .fd = fd, .events = POLLOUT };

                if (errno != EINPROGRESS)
                        return -errno;
                /* A destination on this host (the kubelet, a local pod, loopback) has usually completed the
                 * handshake by now: one poll() saves the caller a loop iteration and two epoll_ctl() calls. */
                in_progress = !(poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP)));
        }

        if (ret_in_progress)
                *ret_in_progress = in_progress;
        return TAKE_FD(fd);
}

int sock_connect_result(int fd) {
        int error = 0;
        socklen_t l = sizeof(error);

        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &l) < 0)
                return -errno;

        return -error;
}

int sock_accept(int listen_fd, SockAddr *ret_peer, socklen_t *ret_len) {
        SockAddr peer = {};
        socklen_t l = sizeof(peer);
        int fd;

        fd = accept4(listen_fd, &peer.sa, &l, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
                return -errno;

        if (ret_peer)
                *ret_peer = peer;
        if (ret_len)
                *ret_len = l;
        return fd;
}

void sock_set_nodelay(int fd) {
        static const int one = 1;

        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int sock_set_buffers(int fd, int sndbuf, int rcvbuf) {
        if (sndbuf < 0 || rcvbuf < 0)
                return -EINVAL;

        if (sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) < 0)
                return -errno;
        if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0)
                return -errno;

        return 0;
}

const char *sock_addr_to_string(const SockAddr *a, socklen_t len, char *buf, size_t size) {
        char ip[INET6_ADDRSTRLEN];

        if (!buf || size == 0)
                return "";

        if (!a || len < sizeof(sa_family_t)) {
                (void) snprintf(buf, size, "<nil>");
                return buf;
        }

        switch (a->sa.sa_family) {

        case AF_INET:
                if (len < sizeof(struct sockaddr_in) || !inet_ntop(AF_INET, &a->in.sin_addr, ip, sizeof(ip)))
                        break;
                (void) snprintf(buf, size, "%s:%u", ip, ntohs(a->in.sin_port));
                return buf;

        case AF_INET6: {
                char zone[IF_NAMESIZE + 1] = "";

                if (len < sizeof(struct sockaddr_in6))
                        break;

                if (IN6_IS_ADDR_V4MAPPED(&a->in6.sin6_addr)) {
                        /* Go prints IPv4-mapped addresses as plain IPv4. */
                        if (!inet_ntop(AF_INET, &a->in6.sin6_addr.s6_addr[12], ip, sizeof(ip)))
                                break;
                        (void) snprintf(buf, size, "%s:%u", ip, ntohs(a->in6.sin6_port));
                        return buf;
                }

                if (!inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, sizeof(ip)))
                        break;
                if (a->in6.sin6_scope_id != 0 && !if_indextoname(a->in6.sin6_scope_id, zone))
                        (void) snprintf(zone, sizeof(zone), "%" PRIu32, a->in6.sin6_scope_id);

                (void) snprintf(buf, size, "[%s%s%s]:%u", ip, zone[0] ? "%" : "", zone,
                                ntohs(a->in6.sin6_port));
                return buf;
        }

        case AF_UNIX: {
                size_t n = len - offsetof(struct sockaddr_un, sun_path);

                if (len <= offsetof(struct sockaddr_un, sun_path)) {
                        (void) snprintf(buf, size, "@");
                        return buf;
                }
                n = MIN(n, sizeof(a->un.sun_path));

                if (a->un.sun_path[0] == '\0')
                        /* Abstract: the leading NUL is shown as '@' and the name ends at the next
                         * NUL, as in Go. */
                        (void) snprintf(buf, size, "@%.*s", (int) strnlen(a->un.sun_path + 1, n - 1),
                                        a->un.sun_path + 1);
                else
                        (void) snprintf(buf, size, "%.*s", (int) strnlen(a->un.sun_path, n), a->un.sun_path);
                return buf;
        }
        }

        (void) snprintf(buf, size, "<address family %i>", a->sa.sa_family);
        return buf;
}

/* Go's syscall.Errno text. Go generated its table from glibc's strerror() and lowercased the first
 * letter when the second one is lowercase ("Bad" → "bad", "RFS" stays). The common ones are pinned
 * here; the rest come from strerrordesc_np(), which is never localised. */
static const char *errno_text(int error, char *buf, size_t size) {
        static const struct {
                int error;
                const char *text;
        } table[] = {
                { ECONNREFUSED, "connection refused" },
                { ENETUNREACH, "network is unreachable" },
                { EHOSTUNREACH, "no route to host" },
                { ECONNRESET, "connection reset by peer" },
                { EMFILE, "too many open files" },
                { ETIMEDOUT, "connection timed out" },
        };
        const char *s;

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (table[i].error == error)
                        return table[i].text;

        s = strerrordesc_np(error);
        if (!s) {
                (void) snprintf(buf, size, "errno %i", error);
                return buf;
        }

        (void) snprintf(buf, size, "%s", s);
        if (buf[0] >= 'A' && buf[0] <= 'Z' && buf[1] >= 'a' && buf[1] <= 'z')
                buf[0] = (char) (buf[0] - 'A' + 'a');
        return buf;
}

static int format_result(int n, size_t size) {
        if (n < 0)
                return -EINVAL;
        if ((size_t) n >= size)
                return -ENOBUFS;
        return n;
}

int sock_format_dial_error(const char *addr, int error, char *buf, size_t size) {
        const char *sep;
        char tmp[128];

        if (!addr || !buf || size == 0 || error == 0 || error == INT_MIN)
                return -EINVAL;

        sep = addr[0] ? " " : "";
        error = abs(error);
        if (error == ETIMEDOUT)
                /* Go reports its own deadline, not the syscall: no "connect: " prefix. */
                return format_result(snprintf(buf, size, "dial tcp%s%s: i/o timeout", sep, addr), size);

        /* Go names the system call that failed: out of descriptors, that is socket(), not connect(). */
        return format_result(snprintf(buf, size, "dial tcp%s%s: %s: %s", sep, addr,
                                      error == EMFILE || error == ENFILE ? "socket" : "connect",
                                      errno_text(error, tmp, sizeof(tmp))),
                             size);
}

int sock_format_lookup_error(const char *host, const char *reason, char *buf, size_t size) {
        if (!host || !reason || !buf || size == 0)
                return -EINVAL;

        return format_result(snprintf(buf, size, "dial tcp: lookup %s: %s", host, reason), size);
}

int sock_format_address_error(const char *addr, const char *reason, char *buf, size_t size) {
        if (!addr || !reason || !buf || size == 0)
                return -EINVAL;

        /* Go's AddrError leaves out "address <addr>: " when the address is empty. */
        if (addr[0] == '\0')
                return format_result(snprintf(buf, size, "dial tcp: %s", reason), size);

        return format_result(snprintf(buf, size, "dial tcp: address %s: %s", addr, reason), size);
}
