/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "connect.h"
#include "macro.h"

/* The parser works on complete lines only, in order: the request line is validated (and for CONNECT
 * the authority split into host and port) as soon as its LF is seen, each header line likewise.
 * Only the first CONNECT_HEADER_MAX bytes are ever looked at. Nothing is copied out of the buffer
 * before its length has been checked against the destination. */

const char CONNECT_RESPONSE_ESTABLISHED[] = "HTTP/1.1 200 Connection Established\r\n\r\n";
const char CONNECT_RESPONSE_NO_AGENT[] =
        "HTTP/1.1 500 Internal Server Error\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "currently no tunnels available: No agent available";
const char CONNECT_RESPONSE_BAD_REQUEST[] =
        "HTTP/1.1 400 Bad Request\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Connection: close\r\n"
        "\r\n"
        "400 Bad Request";
const char CONNECT_RESPONSE_TOO_LARGE[] =
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Connection: close\r\n"
        "\r\n"
        "431 Request Header Fields Too Large";
const char CONNECT_RESPONSE_DIAL_TIMEOUT[] =
        "HTTP/1.1 504 Gateway Timeout\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Backend dial timeout: timed out waiting for backend dial\r\n";

#define RESPONSE_503(reason)                                   \
        "HTTP/1.1 503 Service Unavailable\r\n"                  \
        "Content-Type: text/plain; charset=utf-8\r\n"           \
        "Connection: close\r\n"                                 \
        "\r\n"                                                  \
        reason "\n"
const char CONNECT_RESPONSE_LIMIT_FRONTEND[] = RESPONSE_503("too many frontend connections");
const char CONNECT_RESPONSE_LIMIT_DIALS[] = RESPONSE_503("too many pending dials");
const char CONNECT_RESPONSE_LIMIT_AGENT[] = RESPONSE_503("every agent is at its tunnel limit");
const char CONNECT_RESPONSE_NO_DESCRIPTORS[] = RESPONSE_503("out of file descriptors");

typedef struct ParseState {
        bool is_connect;
        bool has_content_length;
        uint64_t content_length;
        bool has_transfer_encoding;
        ConnectRequest req;
} ParseState;

static bool is_ctl(unsigned char c) {
        return c < 0x20 || c == 0x7f;
}

static bool is_digit(unsigned char c) {
        return c >= '0' && c <= '9';
}

static bool is_alnum(unsigned char c) {
        return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RFC 9110 tchar */
static bool is_tchar(unsigned char c) {
        return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s, size_t n) {
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!is_tchar((unsigned char) s[i]))
                        return false;
        return true;
}

/* Characters konn accepts in an unbracketed authority host (DNS name or IPv4). */
static bool is_host_char(unsigned char c) {
        return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static bool memeq_case(const char *s, size_t n, const char *lit) {
        return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

static int parse_port(const char *s, size_t n, uint16_t *ret) {
        unsigned v = 0;

        if (n == 0)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                if (!is_digit((unsigned char) s[i]))
                        return -EBADMSG;
                v = v * 10 + (unsigned) (s[i] - '0');
                if (v > UINT16_MAX)
                        return -EBADMSG;
        }
        if (v == 0)
                return -EBADMSG;

        *ret = (uint16_t) v;
        return 0;
}

static int parse_authority(const char *s, size_t n, ConnectRequest *req) {
        const char *port;
        size_t host_len, port_len;
        bool v6;
        int r;

        if (n == 0)
                return -EBADMSG;

        if (s[0] == '[') {
                const char *rb = memchr(s, ']', n);
                char tmp[INET6_ADDRSTRLEN];
                struct in6_addr a;

                if (!rb)
                        return -EBADMSG;
                host_len = (size_t) (rb - s) - 1;
                if (host_len == 0 || host_len >= sizeof(tmp))
                        return -EBADMSG;
                memcpy(tmp, s + 1, host_len);
                tmp[host_len] = 0;
                if (inet_pton(AF_INET6, tmp, &a) != 1)
                        return -EBADMSG;
                if ((size_t) (rb + 1 - s) >= n || rb[1] != ':')
                        return -EBADMSG;
                port = rb + 2;
                port_len = n - (size_t) (port - s);
                memcpy(req->host, tmp, host_len + 1);
                v6 = true;
        } else {
                const char *colon = memrchr(s, ':', n);

                if (!colon)
                        return -EBADMSG;
                host_len = (size_t) (colon - s);
                if (host_len == 0 || host_len >= sizeof(req->host))
                        return -EBADMSG;
                for (size_t i = 0; i < host_len; i++)
                        if (!is_host_char((unsigned char) s[i]))
                                return -EBADMSG;
                port = colon + 1;
                port_len = n - host_len - 1;
                memcpy(req->host, s, host_len);
                req->host[host_len] = 0;
                v6 = false;
        }

        r = parse_port(port, port_len, &req->port);
        if (r < 0)
                return r;

        /* Cannot truncate: host ≤ 255 bytes, so at most 255 + 3 + 5 + NUL = 264. */
        r = snprintf(req->authority, sizeof(req->authority), v6 ? "[%s]:%u" : "%s:%u",
                     req->host, (unsigned) req->port);
        assert(r > 0 && (size_t) r < sizeof(req->authority));
        return 0;
}

static int parse_request_line(const char *line, size_t n, ParseState *st) {
        const char *sp1, *sp2, *target, *version;
        size_t method_len, target_len, version_len;

        for (size_t i = 0; i < n; i++)
                if (is_ctl((unsigned char) line[i]))
                        return -EBADMSG;

        sp1 = memchr(line, ' ', n);
        sp2 = memrchr(line, ' ', n);
        if (!sp1 || sp1 == sp2)
                return -EBADMSG;

        method_len = (size_t) (sp1 - line);
        target = sp1 + 1;
        target_len = (size_t) (sp2 - target);
        version = sp2 + 1;
        version_len = n - (size_t) (version - line);

        if (!is_token(line, method_len))
                return -EBADMSG;
        if (target_len == 0 || memchr(target, ' ', target_len))
                return -EBADMSG;
        if (!(version_len == STRLEN("HTTP/1.1") &&
              (memcmp(version, "HTTP/1.1", version_len) == 0 || memcmp(version, "HTTP/1.0", version_len) == 0)))
                return -EBADMSG;

        st->is_connect = method_len == STRLEN("CONNECT") && memcmp(line, "CONNECT", method_len) == 0;
        if (!st->is_connect)
                return 0;

        return parse_authority(target, target_len, &st->req);
}

static int parse_header_line(const char *line, size_t n, ParseState *st) {
        const char *colon, *value;
        size_t name_len, value_len;

        /* obs-fold */
        if (line[0] == ' ' || line[0] == '\t')
                return -EBADMSG;

        colon = memchr(line, ':', n);
        if (!colon)
                return -EBADMSG;
        name_len = (size_t) (colon - line);
        if (!is_token(line, name_len))
                return -EBADMSG;

        value = colon + 1;
        value_len = n - name_len - 1;
        for (size_t i = 0; i < value_len; i++)
                if (is_ctl((unsigned char) value[i]) && value[i] != '\t')
                        return -EBADMSG;

        /* Strip optional whitespace on both sides. */
        while (value_len > 0 && (value[0] == ' ' || value[0] == '\t')) {
                value++;
                value_len--;
        }
        while (value_len > 0 && (value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
                value_len--;

        if (memeq_case(line, name_len, "Content-Length")) {
                uint64_t v = 0;

                if (value_len == 0)
                        return -EBADMSG;
                for (size_t i = 0; i < value_len; i++) {
                        if (!is_digit((unsigned char) value[i]))
                                return -EBADMSG;
                        if (v > (UINT64_MAX - 9) / 10)
                                return -EBADMSG;
                        v = v * 10 + (uint64_t) (value[i] - '0');
                }
                /* Repeated Content-Length headers must agree (RFC 9112 §6.3). */
                if (st->has_content_length && st->content_length != v)
                        return -EBADMSG;
                st->has_content_length = true;
                st->content_length = v;
        } else if (memeq_case(line, name_len, "Transfer-Encoding"))
                st->has_transfer_encoding = true;

        return 0;
}

int connect_parse(const char *buf, size_t len, ConnectRequest *ret, size_t *ret_header_len) {
        size_t window = MIN(len, (size_t) CONNECT_HEADER_MAX), pos = 0;
        ParseState st = {};
        bool first = true;
        int r;

        assert(buf || len == 0);
        assert(ret);
        assert(ret_header_len);

        for (;;) {
                const char *line, *nl;
                size_t n;

                nl = pos < window ? memchr(buf + pos, '\n', window - pos) : NULL;
                if (!nl)
                        return len >= CONNECT_HEADER_MAX ? -E2BIG : -EAGAIN;

                line = buf + pos;
                n = (size_t) (nl - line);
                if (n > 0 && line[n - 1] == '\r')
                        n--;
                pos = (size_t) (nl - buf) + 1;

                if (first) {
                        /* An empty request line is malformed as well. */
                        if (n == 0)
                                return -EBADMSG;
                        r = parse_request_line(line, n, &st);
                        if (r < 0)
                                return r;
                        first = false;
                        continue;
                }

                if (n == 0)
                        break;

                r = parse_header_line(line, n, &st);
                if (r < 0)
                        return r;
        }

        if (!st.is_connect) {
                *ret = (ConnectRequest) {
                        .has_body = st.has_transfer_encoding ||
                                    (st.has_content_length && st.content_length > 0),
                };
                *ret_header_len = pos;
                return -EOPNOTSUPP;
        }

        *ret = st.req;
        ret->has_body = false;
        *ret_header_len = pos;
        return 0;
}

/* Concatenate a NULL-terminated list of strings into buf, all or nothing. */
static int format_strv(char *buf, size_t size, size_t *ret_len, const char *const *parts) {
        size_t total = 0, k = 0;

        assert(buf || size == 0);
        assert(ret_len);

        for (const char *const *p = parts; *p; p++)
                total += strlen(*p);
        if (total >= size)
                return -ENOBUFS;

        for (const char *const *p = parts; *p; p++) {
                size_t l = strlen(*p);

                memcpy(buf + k, *p, l);
                k += l;
        }
        buf[k] = 0;

        *ret_len = total;
        return 0;
}
#define FORMAT_STRV(buf, size, ret_len, ...) \
        format_strv(buf, size, ret_len, (const char *const[]) { __VA_ARGS__, NULL })

/* Go's net/http appendTime(): "Mon, 02 Jan 2006 15:04:05 GMT", never locale dependent. */
static int format_http_date(time_t t, char buf[static 30]) {
        static const char days[] = "SunMonTueWedThuFriSat";
        static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
        struct tm tm;
        int year;

        if (!gmtime_r(&t, &tm))
                return -ERANGE;
        year = tm.tm_year + 1900;
        if (year < 0 || year > 9999 || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 || tm.tm_mon > 11)
                return -ERANGE;

        memcpy(buf, days + 3 * tm.tm_wday, 3);
        buf[3] = ',';
        buf[4] = ' ';
        buf[5] = (char) ('0' + tm.tm_mday / 10);
        buf[6] = (char) ('0' + tm.tm_mday % 10);
        buf[7] = ' ';
        memcpy(buf + 8, months + 3 * tm.tm_mon, 3);
        buf[11] = ' ';
        buf[12] = (char) ('0' + year / 1000);
        buf[13] = (char) ('0' + year / 100 % 10);
        buf[14] = (char) ('0' + year / 10 % 10);
        buf[15] = (char) ('0' + year % 10);
        buf[16] = ' ';
        buf[17] = (char) ('0' + tm.tm_hour / 10);
        buf[18] = (char) ('0' + tm.tm_hour % 10);
        buf[19] = ':';
        buf[20] = (char) ('0' + tm.tm_min / 10);
        buf[21] = (char) ('0' + tm.tm_min % 10);
        buf[22] = ':';
        /* tm_sec may be 60 only for leap seconds, which gmtime() never produces from a time_t. */
        buf[23] = (char) ('0' + tm.tm_sec / 10);
        buf[24] = (char) ('0' + tm.tm_sec % 10);
        memcpy(buf + 25, " GMT", 5);
        return 0;
}

int connect_format_405(time_t t, char *buf, size_t size, size_t *ret_len) {
        char date[30];
        int r;

        r = format_http_date(t, date);
        if (r < 0)
                return r;

        return FORMAT_STRV(buf, size, ret_len,
                           "HTTP/1.1 405 Method Not Allowed\r\n"
                           "Content-Type: text/plain; charset=utf-8\r\n"
                           "X-Content-Type-Options: nosniff\r\n"
                           "Date: ", date, "\r\n"
                           "Content-Length: 45\r\n"
                           "\r\n"
                           "this proxy only supports CONNECT passthrough\n");
}

int connect_status_for_dial_error(const char *err) {
        static const struct {
                const char *needle;
                int status;
        } table[] = {
                { "i/o timeout",              504 },
                { "deadline exceeded",        504 },
                { "timeout",                  504 },
                { "too many open files",      503 },
                { "connection refused",       502 },
                { "connection reset by peer", 502 },
                { "broken pipe",              502 },
                { "network is unreachable",   502 },
                { "no route to host",         502 },
                { "host is unreachable",      502 },
                { "network is down",          502 },
                { "no such host",             502 },
                { "name resolution",          502 },
                { "tls",                      502 },
                { "ssl",                      502 },
                { "certificate",              502 },
        };

        if (!err)
                return 502;

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (strcasestr(err, table[i].needle))
                        return table[i].status;

        return 502;
}

static const char *status_line(int status) {
        switch (status) {
        case 502:
                return "HTTP/1.1 502 Bad Gateway\r\n";
        case 503:
                return "HTTP/1.1 503 Service Unavailable\r\n";
        case 504:
                return "HTTP/1.1 504 Gateway Timeout\r\n";
        default:
                assert(false);
                return "HTTP/1.1 502 Bad Gateway\r\n";
        }
}

int connect_format_dial_error(const char *err, char *buf, size_t size, size_t *ret_len) {
        if (!err)
                err = "";

        return FORMAT_STRV(buf, size, ret_len,
                           status_line(connect_status_for_dial_error(err)),
                           "Connection: close\r\n"
                           "Content-Type: text/plain; charset=utf-8\r\n"
                           "\r\n",
                           err);
}

static int format_gateway_error(const char *status, const char *prefix, const char *err,
                                char *buf, size_t size, size_t *ret_len) {
        return FORMAT_STRV(buf, size, ret_len,
                           status,
                           "Content-Type: text/plain; charset=utf-8\r\n"
                           "\r\n",
                           prefix ?: "", err ?: "", "\r\n");
}

int connect_format_502(const char *prefix, const char *err, char *buf, size_t size, size_t *ret_len) {
        return format_gateway_error(status_line(502), prefix, err, buf, size, ret_len);
}

int connect_format_504(const char *prefix, const char *err, char *buf, size_t size, size_t *ret_len) {
        return format_gateway_error(status_line(504), prefix, err, buf, size, ret_len);
}
