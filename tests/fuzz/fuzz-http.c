/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool in_storage(const char *p, const char *storage, size_t size) {
        return p >= storage && p < storage + size && memchr(p, 0, (size_t) (storage + size - p));
}

static bool clean(const char *s, bool allow_space) {
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                if (c == '\r' || c == '\n' || c == 0x7f || (c < 0x20 && c != '\t'))
                        return false;
                if (!allow_space && (c == ' ' || c == '\t'))
                        return false;
        }
        return true;
}

/* Invariants of http_parse_request() on arbitrary input. Any violation aborts. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static char storage[HTTP_HEADER_MAX], storage2[HTTP_HEADER_MAX];
        const char *buf = (const char *) data;
        HttpRequest req, req2, sentinel;
        size_t hl = SIZE_MAX, hl2 = SIZE_MAX, need;
        int r, r2;

        memset(&sentinel, 0xaa, sizeof(sentinel));
        req = sentinel;
        r = http_parse_request(buf, size, &req, storage, sizeof(storage), &hl);
        switch (r) {
        case 0:
                break;
        case -EAGAIN:
                if (size >= HTTP_HEADER_MAX)
                        abort();
                goto untouched;
        case -E2BIG:
                if (size < HTTP_HEADER_MAX)
                        abort();
                goto untouched;
        case -EBADMSG:
                goto untouched;
        default:
                abort();
        }

        if (hl == 0 || hl > size || hl > HTTP_HEADER_MAX)
                abort();
        if (!in_storage(req.method, storage, sizeof(storage)) || !in_storage(req.path, storage, sizeof(storage)) ||
            !in_storage(req.query, storage, sizeof(storage)) || !in_storage(req.host, storage, sizeof(storage)))
                abort();
        if (req.method[0] == 0 || req.path[0] != '/' || strchr(req.path, '?'))
                abort();
        /* Nothing that could split a response header or a log line gets through. */
        if (!clean(req.method, false) || !clean(req.path, false) || !clean(req.query, false) ||
            !clean(req.host, true))
                abort();
        if (req.version != 10 && req.version != 11)
                abort();

        /* The head alone parses the same way: trailing bytes never matter. */
        r2 = http_parse_request(buf, hl, &req2, storage2, sizeof(storage2), &hl2);
        if (r2 != 0 || hl2 != hl || !streq(req.method, req2.method) || !streq(req.path, req2.path) ||
            !streq(req.query, req2.query) || !streq(req.host, req2.host) || req.version != req2.version ||
            req.keep_alive != req2.keep_alive || req.has_body != req2.has_body)
                abort();
        /* ... and one byte less is merely incomplete: every line before was fine. */
        if (http_parse_request(buf, hl - 1, &req2, storage2, sizeof(storage2), &hl2) != -EAGAIN)
                abort();

        /* Storage: exactly enough works, one byte less is -ENOBUFS. */
        need = strlen(req.method) + strlen(req.path) + strlen(req.query) + strlen(req.host) + 4;
        if (http_parse_request(buf, size, &req2, storage2, need, &hl2) != 0)
                abort();
        if (http_parse_request(buf, size, &req2, storage2, need - 1, &hl2) != -ENOBUFS)
                abort();
        return 0;

untouched:
        if (hl != SIZE_MAX || memcmp(&req, &sentinel, sizeof(req)) != 0)
                abort();
        return 0;
}
