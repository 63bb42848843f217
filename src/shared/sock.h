/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sock — non-blocking socket helpers: numeric address parsing and host:port splitting with Go's net
 * rules, TCP and Unix listeners, non-blocking connect/accept, socket options, and the Go error texts
 * that an agent reports for failed dials. Owns no objects: every fd returned belongs to the caller.
 * Called from the loop thread; nothing here blocks and nothing resolves names (names are reported as
 * -EADDRNOTAVAIL so that the caller hands them to the resolver module).
 */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

typedef union SockAddr {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage storage;
} SockAddr;

/* Big enough for any sock_addr_to_string() output: "[v6%zone]:65535" or "@" + a full sun_path. */
#define SOCK_ADDR_STRING_MAX 128

/* Parse a numeric address: "1.2.3.4:80", "[::1]:80", "[::1]", "1.2.3.4", "::1", "fe80::1%eth0".
 * `port` is used when the string carries none. Port text follows Go: decimal digits, empty = 0.
 * Returns 0, -EADDRNOTAVAIL if the host is a name (resolve it), -EINVAL for malformed input (also an
 * empty host, or an unknown IPv6 zone), -ERANGE for a bad port (non-digits or > 65535).
 * IPv4-mapped IPv6 literals stay AF_INET6. */
int sock_parse_numeric(const char *host, uint16_t port, SockAddr *ret, socklen_t *ret_len);

/* Split "host:port" like Go's net.SplitHostPort (brackets removed; the host may be empty or a
 * name), then parse the port as above. Errors: -EINVAL with *ret_reason "missing port in address",
 * "too many colons in address", "missing ']' in address", "unexpected '[' in address" or
 * "unexpected ']' in address"; -ERANGE with "invalid port" (Go puts the port text, not the whole
 * address, in that message); -ENOBUFS with "address too long" if host_size is too small.
 * `host` and *ret_port are written only on success, *ret_reason (may be NULL) only on failure. */
int sock_split_host_port(const char *addr, char *host, size_t host_size, uint16_t *ret_port,
                         const char **ret_reason);

/* Listen on TCP. host NULL or "" = all addresses: dual-stack [::] with IPV6_V6ONLY=0, falling back
 * to 0.0.0.0 when IPv6 is unavailable. Otherwise host is a numeric address as accepted by
 * sock_parse_numeric() (a port inside it wins over `port`); names give -EADDRNOTAVAIL.
 * SO_REUSEADDR, backlog 4096, SOCK_CLOEXEC|SOCK_NONBLOCK. Returns the fd or a negative errno. */
int sock_listen_tcp(const char *host, uint16_t port);

/* Listen on a Unix stream socket. The file is created under umask(~mode & 0777) and then chmod()ed
 * to `mode`, so it is never reachable with looser permissions. With delete_existing, an existing
 * *socket* at path is unlinked first (other file types are left alone, bind then fails with
 * -EADDRINUSE). A leading '@' selects the abstract namespace (no file, mode ignored).
 * -ENAMETOOLONG if path does not fit sun_path, -EINVAL for an empty path or mode > 0777. */
int sock_listen_unix(const char *path, mode_t mode, bool delete_existing);

/* Start a non-blocking stream connect to `a`. Returns the fd; *ret_in_progress (may be NULL) is true
 * when the connect is still under way (wait for EPOLLOUT, then call sock_connect_result()), false if it
 * completed already (checked once with a zero-timeout poll(): local destinations usually have).
 * On failure returns a negative errno and no fd is left open. */
int sock_connect_start(const SockAddr *a, socklen_t len, bool *ret_in_progress);

/* 0 if the connect completed, else the negative errno from SO_ERROR (e.g. -ECONNREFUSED). */
int sock_connect_result(int fd);

/* accept4() with SOCK_CLOEXEC|SOCK_NONBLOCK. Returns the fd, -EAGAIN when nothing is pending, or
 * another negative errno. ret_peer/ret_len may be NULL; they are written only on success. */
int sock_accept(int listen_fd, SockAddr *ret_peer, socklen_t *ret_len);

/* TCP_NODELAY on; errors (and non-TCP sockets) are ignored. */
void sock_set_nodelay(int fd);

/* SO_SNDBUF/SO_RCVBUF; 0 leaves a direction alone. -EINVAL for negative sizes, else 0 or -errno. */
int sock_set_buffers(int fd, int sndbuf, int rcvbuf);

/* Format as Go prints addresses: "127.0.0.1:80", "[::1]:80", "[fe80::1%eth0]:80", IPv4-mapped IPv6
 * as plain IPv4 ("1.2.3.4:80"), Unix "/path", "@abstract", "@" for an unnamed socket. Returns buf,
 * always NUL-terminated (truncated if size is too small; use SOCK_ADDR_STRING_MAX). "<nil>" for a
 * NULL or too-short address. Returns "" if buf is NULL or size is 0. */
const char *sock_addr_to_string(const SockAddr *a, socklen_t len, char *buf, size_t size);

/* Go's error texts for a failed TCP dial, written into buf (always NUL-terminated). Each returns the
 * length of the text, -ENOBUFS if it had to be truncated, or -EINVAL for bad arguments.
 *   dial_error("127.0.0.1:1", -ECONNREFUSED)   → "dial tcp 127.0.0.1:1: connect: connection refused"
 *   dial_error("10.0.0.1:10250", -ETIMEDOUT)   → "dial tcp 10.0.0.1:10250: i/o timeout"
 *   lookup_error("foo.invalid", "no such host") → "dial tcp: lookup foo.invalid: no such host"
 *   address_error("foo", "missing port in address") → "dial tcp: address foo: missing port in address"
 * `error` may be given with either sign (0 is -EINVAL). errno texts are Go's syscall.Errno strings
 * (glibc's English description with the first letter lowercased as Go's mkerrors does), never
 * localised. An empty addr in sock_format_address_error() gives "dial tcp: <reason>" as in Go. */
int sock_format_dial_error(const char *addr, int error, char *buf, size_t size);
int sock_format_lookup_error(const char *host, const char *reason, char *buf, size_t size);
int sock_format_address_error(const char *addr, const char *reason, char *buf, size_t size);
