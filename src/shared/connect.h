/* SPDX-License-Identifier: Apache-2.0 */
/*
 * connect — the HTTP/1.x CONNECT frontend's wire format: a strict parser for one request header
 * block, and the exact response bytes konn writes (protocol.md §7.1 and §15).
 * Owns no objects and allocates nothing: results go into caller-provided structs and buffers.
 * Pure functions, called from the server's CONNECT frontend on the event loop.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CONNECT_HEADER_MAX 8192 /* request line + headers, including the final blank line */

typedef struct ConnectRequest {
        char host[256];       /* NUL-terminated; IPv6 without brackets */
        uint16_t port;        /* 1..65535 */
        char authority[264];  /* normalized "host:port" or "[v6]:port", as it should be dialed */
        bool has_body;        /* non-CONNECT request announced a body (Content-Length > 0 or
                               * Transfer-Encoding); always false for CONNECT */
} ConnectRequest;

/* Parse one request at the start of buf[0..len).
 * 0: a complete CONNECT request; *ret_header_len = bytes consumed (request line + headers + blank
 *    line); bytes beyond that are tunnel payload the client pipelined (the caller forwards them).
 * -EAGAIN: incomplete and len < CONNECT_HEADER_MAX (read more).
 * -E2BIG: no end of headers within CONNECT_HEADER_MAX bytes (→ 431).
 * -EOPNOTSUPP: a well-formed request whose method is not CONNECT (→ 405); *ret_header_len and
 *    *ret are set (host/authority empty, port 0, has_body meaningful).
 * -EBADMSG: malformed request line, headers, version or authority (→ 400). Never dial these.
 * Lines are checked in order as soon as they are complete, so garbage is refused without waiting
 * for the end of the header block. The Host header is ignored for the dial address. The
 * authority host is a DNS name/IPv4 of [A-Za-z0-9._~-] or a bracketed IPv6 literal accepted by
 * inet_pton() (no zone ids); the port is 1*DIGIT in 1..65535 (leading zeros are normalized away
 * in ->authority). On -EAGAIN, -E2BIG and -EBADMSG nothing is written. */
int connect_parse(const char *buf, size_t len, ConnectRequest *ret, size_t *ret_header_len);

/* Exact response bytes (protocol.md §7.1 / §15); NUL-terminated, length via strlen(). */
extern const char CONNECT_RESPONSE_ESTABLISHED[];  /* 200 Connection Established, no headers */
extern const char CONNECT_RESPONSE_NO_AGENT[];     /* 500 "currently no tunnels available: ..." */
extern const char CONNECT_RESPONSE_BAD_REQUEST[];  /* 400, Go's own bytes */
extern const char CONNECT_RESPONSE_TOO_LARGE[];    /* 431 */
extern const char CONNECT_RESPONSE_DIAL_TIMEOUT[]; /* 504 "Backend dial timeout: ..." */
/* konn's limits (README "Limits"): 503 with a one-line reason. */
extern const char CONNECT_RESPONSE_LIMIT_FRONTEND[];    /* --max-frontend-connections */
extern const char CONNECT_RESPONSE_LIMIT_DIALS[];       /* --max-pending-dials */
extern const char CONNECT_RESPONSE_LIMIT_AGENT[];       /* --max-tunnels-per-agent, every agent full */
extern const char CONNECT_RESPONSE_NO_DESCRIPTORS[];    /* accept hit EMFILE/ENFILE (Unix-socket frontend) */

/* The formatters below write a NUL-terminated response into buf and its length (without the NUL)
 * into *ret_len. -ENOBUFS if it (plus the NUL) does not fit in size; buf is then left untouched. */

/* 405 with Go's exact header order (Content-Type, X-Content-Type-Options, Date, Content-Length: 45,
 * body) for time t, Date formatted as Go's http.TimeFormat. -ERANGE if t's year is not 0..9999. */
int connect_format_405(time_t t, char *buf, size_t size, size_t *ret_len);

/* Status for a dial error text per the §7.1 table (case-insensitive substring, first match wins):
 * 504, 503 or 502. NULL counts as "" (502). */
int connect_status_for_dial_error(const char *err);

/* The error-DIAL_RSP response: status line from the table, "Connection: close",
 * "Content-Type: text/plain; charset=utf-8", blank line, body = err (no trailing CRLF). */
int connect_format_dial_error(const char *err, char *buf, size_t size, size_t *ret_len);

/* "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n<prefix><err>\r\n",
 * for the "Failed to tunnel dial request: " and "Backend context error: " cases. */
int connect_format_502(const char *prefix, const char *err, char *buf, size_t size, size_t *ret_len);
/* The same with "HTTP/1.1 504 Gateway Timeout": upstream's answer when sending the DIAL_REQ to the
 * agent timed out ("Failed to tunnel dial request: " + the timeout error). */
int connect_format_504(const char *prefix, const char *err, char *buf, size_t size, size_t *ret_len);
