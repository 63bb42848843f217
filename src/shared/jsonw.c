/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <string.h>
#include <time.h>

#include "jsonw.h"

/* One character's escaped form into out (at most 7 bytes); its length. */
static size_t escape_char(unsigned char c, char out[static 8]) {
        if (c == '"' || c == '\\') {
                out[0] = '\\';
                out[1] = (char) c;
                return 2;
        }
        if (c < 0x20 || c == 0x7f)
                return (size_t) snprintf(out, 8, "\\u%04x", c);
        out[0] = (char) c;
        return 1;
}

void jsonw_string(FILE *f, const char *s) {
        char e[8];

        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *) (s ? s : ""); *p; p++)
                fwrite(e, 1, escape_char(*p, e), f);
        fputc('"', f);
}

size_t jsonw_escape(char *buf, size_t size, const char *s) {
        size_t n = 0;
        char e[8];

        if (size < 3) {
                if (size > 0)
                        buf[0] = '\0';
                return 0;
        }
        buf[n++] = '"';
        for (const unsigned char *p = (const unsigned char *) (s ? s : ""); *p; p++) {
                size_t k = escape_char(*p, e);
                if (n + k + 2 > size)
                        break;
                memcpy(buf + n, e, k);
                n += k;
        }
        buf[n++] = '"';
        buf[n] = '\0';
        return n;
}

void jsonw_time(char buf[static 32], unsigned long long usec) {
        time_t sec = (time_t) (usec / 1000000ULL);
        struct tm tm;

        if (!gmtime_r(&sec, &tm)) {
                (void) snprintf(buf, 32, "1970-01-01T00:00:00.000Z");
                return;
        }
        char tmp[128];
        (void) snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
                        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned) ((usec / 1000ULL) % 1000ULL));
        (void) snprintf(buf, 32, "%.31s", tmp);
}
