/* SPDX-License-Identifier: Apache-2.0 */
/* ctl-table — aligned text tables for konnctl: columns padded to their widest cell (counted in characters, not
 * bytes), two spaces apart, no trailing blanks. Owns copies of every cell. */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

#define CTL_TABLE_COLUMNS_MAX 16

struct CtlTable {
        size_t n_cols, n_rows, cap;
        char **cells;                 /* n_rows * n_cols, row 0 the headers */
};

static void *xrealloc(void *p, size_t n) {
        void *q = realloc(p, n);
        if (!q) {
                fputs("konnctl: out of memory\n", stderr);
                exit(CTL_EXIT_FAILED);
        }
        return q;
}

static char *xstrdup(const char *s) {
        char *d = strdup(s ? s : "");
        if (!d) {
                fputs("konnctl: out of memory\n", stderr);
                exit(CTL_EXIT_FAILED);
        }
        return d;
}

CtlTable *ctl_table_new(const char *const *headers) {
        CtlTable *t = xrealloc(NULL, sizeof(CtlTable));

        *t = (CtlTable){};
        while (headers[t->n_cols] && t->n_cols < CTL_TABLE_COLUMNS_MAX)
                t->n_cols++;
        ctl_table_add(t, headers);
        return t;
}

void ctl_table_add(CtlTable *t, const char *const *cells) {
        if (t->n_rows == t->cap) {
                t->cap = t->cap ? t->cap * 2 : 16;
                t->cells = xrealloc(t->cells, t->cap * t->n_cols * sizeof(char *));
        }
        for (size_t c = 0; c < t->n_cols; c++)
                t->cells[t->n_rows * t->n_cols + c] = xstrdup(cells[c] && *cells[c] ? cells[c] : "-");
        t->n_rows++;
}

/* Display width: UTF-8 continuation bytes do not count. */
static size_t width(const char *s) {
        size_t n = 0;
        for (; *s; s++)
                if (((unsigned char) *s & 0xc0) != 0x80)
                        n++;
        return n;
}

void ctl_table_print(CtlTable *t) {
        size_t w[CTL_TABLE_COLUMNS_MAX] = {};

        for (size_t r = 0; r < t->n_rows; r++)
                for (size_t c = 0; c < t->n_cols; c++) {
                        size_t n = width(t->cells[r * t->n_cols + c]);
                        if (n > w[c])
                                w[c] = n;
                }
        for (size_t r = 0; r < t->n_rows; r++) {
                for (size_t c = 0; c < t->n_cols; c++) {
                        const char *s = t->cells[r * t->n_cols + c];
                        fputs(s, stdout);
                        if (c + 1 < t->n_cols)
                                printf("%*s", (int) (w[c] - width(s) + 2), "");
                }
                fputc('\n', stdout);
        }
}

void ctl_table_free(CtlTable *t) {
        if (!t)
                return;
        for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
}

void ctl_format_bytes(uint64_t n, char *buf, size_t size) {
        static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
        double v = (double) n;
        size_t u = 0;

        if (n < 1024) {
                (void) snprintf(buf, size, "%" PRIu64 " B", n);
                return;
        }
        v /= 1024;
        while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
                v /= 1024;
                u++;
        }
        (void) snprintf(buf, size, "%.1f %s", v, units[u]);
}

void ctl_format_duration(double s, char *buf, size_t size) {
        uint64_t t = (uint64_t) s;

        if (s < 0)
                s = 0;
        if (s < 1)
                (void) snprintf(buf, size, "%.2f ms", s * 1000);
        else if (s < 60)
                (void) snprintf(buf, size, "%.1f s", s);
        else if (t < 3600)
                (void) snprintf(buf, size, "%" PRIu64 "m%02" PRIu64 "s", t / 60, t % 60);
        else if (t < 86400)
                (void) snprintf(buf, size, "%" PRIu64 "h%02" PRIu64 "m", t / 3600, (t / 60) % 60);
        else
                (void) snprintf(buf, size, "%" PRIu64 "d%02" PRIu64 "h", t / 86400, (t / 3600) % 24);
}

const char *ctl_json_str(json_object *o, const char *key) {
        json_object *v;
        if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return "";
        return json_object_get_string(v);
}

int64_t ctl_json_int(json_object *o, const char *key) {
        json_object *v;
        if (!o || !json_object_object_get_ex(o, key, &v))
                return 0;
        return json_object_get_int64(v);
}

double ctl_json_double(json_object *o, const char *key) {
        json_object *v;
        if (!o || !json_object_object_get_ex(o, key, &v))
                return 0;
        return json_object_get_double(v);
}

bool ctl_json_bool(json_object *o, const char *key) {
        json_object *v;
        if (!o || !json_object_object_get_ex(o, key, &v))
                return false;
        return json_object_get_boolean(v);
}
