/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connect.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Invariants of connect_parse() on arbitrary input, plus the dial-error formatter on the input as
 * an error text. Any violation aborts. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *buf = (const char *) data;
        ConnectRequest req, req2;
        size_t hl = SIZE_MAX, hl2 = SIZE_MAX;
        int r, r2;

        r = connect_parse(buf, size, &req, &hl);
        switch (r) {
        case 0:
                if (hl == 0 || hl > size || hl > CONNECT_HEADER_MAX)
                        abort();
                if (req.port == 0 || req.has_body)
                        abort();
                if (strnlen(req.host, sizeof(req.host)) == sizeof(req.host) || req.host[0] == 0)
                        abort();
                if (strnlen(req.authority, sizeof(req.authority)) == sizeof(req.authority) ||
                    req.authority[0] == 0)
                        abort();
                /* The authority never holds anything that could split a request or a log line. */
                for (const char *p = req.authority; *p; p++)
                        if ((unsigned char) *p <= ' ' || (unsigned char) *p >= 0x7f)
                                abort();
                __attribute__((fallthrough));
        case -EOPNOTSUPP:
                if (hl == 0 || hl > size || hl > CONNECT_HEADER_MAX)
                        abort();
                /* The header block alone parses the same way: trailing bytes never matter. */
                r2 = connect_parse(buf, hl, &req2, &hl2);
                if (r2 != r || hl2 != hl || memcmp(&req, &req2, sizeof(req)) != 0)
                        abort();
                /* ... and one byte less is merely incomplete (all its lines were fine). */
                r2 = connect_parse(buf, hl - 1, &req2, &hl2);
                if (r2 != -EAGAIN)
                        abort();
                break;
        case -EAGAIN:
                if (size >= CONNECT_HEADER_MAX)
                        abort();
                break;
        case -E2BIG:
                if (size < CONNECT_HEADER_MAX)
                        abort();
                break;
        case -EBADMSG:
                break;
        default:
                abort();
        }

        if (r != 0 && r != -EOPNOTSUPP && hl != SIZE_MAX)
                abort();

        /* The formatters with the input as error text (up to its first NUL). */
        {
                char text[1024], out[2048];
                size_t n = MIN(size, sizeof(text) - 1), len = SIZE_MAX;
                int status;

                memcpy(text, data, n);
                text[n] = 0;

                status = connect_status_for_dial_error(text);
                if (status != 502 && status != 503 && status != 504)
                        abort();
                r = connect_format_dial_error(text, out, sizeof(out), &len);
                if (r != 0 || len != strlen(out) || len < strlen(text))
                        abort();
                r = connect_format_502("Backend context error: ", text, out, sizeof(out), &len);
                if (r != 0 || len != strlen(out))
                        abort();
        }

        return 0;
}
