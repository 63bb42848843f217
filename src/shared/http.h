/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http — a tiny HTTP/1.1 responder (GET/HEAD, plain TCP) for the health, readiness, metrics and admin
 * ports, plus the pure request-head parser it uses. The HttpServer owns its listening fd, every
 * connection and their event sources; the caller owns the HttpServer. Runs on the caller's sd-event
 * loop: the handler is called from an I/O callback and must neither block nor free the server.
 * Bounded everywhere: head size, connections, requests per connection, response size, time per state.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#define HTTP_HEADER_MAX 8192                 /* request line + headers + blank line; beyond → 431 */
#define HTTP_CONNECTIONS_MAX 256U            /* more are accepted and closed at once */
#define HTTP_REQUESTS_PER_CONNECTION_MAX 100U
#define HTTP_BODY_MAX ((size_t) 16 * 1024 * 1024) /* larger handler bodies become a 500 */
#define HTTP_LOCATION_MAX 2048
#define HTTP_HEADER_TIMEOUT_USEC ((uint64_t) 10 * 1000000) /* first byte → complete head */
#define HTTP_IDLE_TIMEOUT_USEC ((uint64_t) 60 * 1000000)   /* keep-alive wait for the next request */
#define HTTP_WRITE_TIMEOUT_USEC ((uint64_t) 10 * 1000000)  /* whole response written */

typedef struct HttpServer HttpServer;

typedef struct HttpRequest {
        const char *method;    /* a token, e.g. "GET" (case-sensitive, as sent) */
        const char *path;      /* starts with '/', not percent-decoded, without the query */
        const char *query;     /* after the first '?', without it; "" if none */
        const char *host;      /* Host header value, "" if none */
        unsigned version;      /* 10 for HTTP/1.0, 11 for HTTP/1.1 */
        bool keep_alive;       /* 1.1 without "Connection: close", or 1.0 with "Connection: keep-alive" */
        bool has_body;         /* Content-Length > 0 or any Transfer-Encoding (never read: we close) */
} HttpRequest;

typedef struct HttpResponse {
        int status;               /* one of the codes http_status_to_string() knows */
        const char *content_type; /* NULL = "text/plain; charset=utf-8"; must outlive the call */
        char *body;               /* malloc'd by the handler, freed by http (also on errors) */
        size_t body_len;
        const char *location;     /* for 301: copied by http; CR/LF/CTL or > HTTP_LOCATION_MAX → 500 */
        /* Instead of a response: the connection's socket is handed to takeover(fd, takeover_userdata), which owns
         * it from then on, also when it fails (long-lived streams: the admin interface's /v1/trace). Bytes the
         * client pipelined after this request are dropped. A negative return is logged at debug level. */
        int (*takeover)(int fd, void *userdata);
        void *takeover_userdata;
} HttpResponse;

/* Called once per GET or HEAD request with *ret zero-initialised. Fill *ret and return 0; a negative
 * return (or a status http doesn't know) sends 500 instead. For HEAD, fill the body as for GET:
 * http sends its Content-Length but not the body. */
typedef int (*http_handler_t)(const HttpRequest *req, HttpResponse *ret, void *userdata);

/* Parse one request head at the start of buf[0..len). Strings are copied NUL-terminated into storage
 * (storage_size >= HTTP_HEADER_MAX always suffices) and *ret points into it.
 * 0: complete; *ret_header_len = bytes of request line + headers + blank line (bytes after it are the
 *    next pipelined request). Bare LF line ends are accepted like CRLF.
 * -EAGAIN: incomplete and len < HTTP_HEADER_MAX. -E2BIG: no end of head within HTTP_HEADER_MAX.
 * -EBADMSG: malformed (request line, version other than HTTP/1.0 or 1.1, target not starting with
 *    '/', header syntax, obs-fold, control characters, duplicate Host, bad Content-Length).
 *    Lines are checked as soon as they are complete, so garbage fails without waiting for the end.
 * -ENOBUFS: storage too small. Nothing is written unless 0 is returned. */
int http_parse_request(const char *buf, size_t len, HttpRequest *ret, char *storage, size_t storage_size,
                       size_t *ret_header_len);

/* Reason phrase for the codes konn sends ("OK", "Moved Permanently", ...), NULL for others. */
const char *http_status_to_string(int status);

/* Convenience for handlers: body = strdup(text), content_type NULL (text/plain). 0 or -ENOMEM. */
int http_response_set_text(HttpResponse *r, int status, const char *text);

/* Takes ownership of listen_fd (a listening stream socket; made non-blocking here) in every case,
 * also on failure. The handler and userdata must outlive the server. */
int http_server_new(sd_event *e, int listen_fd, http_handler_t h, void *userdata, HttpServer **ret);
/* Closes the listener and every connection, freeing pending response bodies. NULL-safe. */
HttpServer *http_server_free(HttpServer *s);
unsigned http_server_n_connections(const HttpServer *s);
/* Override the timeouts (tests); each applies the next time a connection arms that timer. 0 keeps a
 * value unchanged. */
void http_server_set_timeouts(HttpServer *s, uint64_t header_usec, uint64_t idle_usec, uint64_t write_usec);
