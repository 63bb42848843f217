/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>

#include "addrlist.h"
#include "macro.h"

_printf_(2, 3) static int set_error(char **ret_error, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        if (!s)
                return -ENOMEM;
        free(*ret_error);
        *ret_error = s;
        return -EINVAL;
}

/* The next comma-separated item of *p, spaces trimmed; false at the end. */
static bool next_item(const char **p, const char **ret, size_t *ret_len) {
        const char *s = *p, *comma;
        size_t n;

        for (;;) {
                if (!s || !*s)
                        return false;
                comma = strchr(s, ',');
                n = comma ? (size_t) (comma - s) : strlen(s);
                *p = comma ? comma + 1 : NULL;
                while (n > 0 && *s == ' ')
                        s++, n--;
                while (n > 0 && s[n - 1] == ' ')
                        n--;
                if (n > 0) {
                        *ret = s;
                        *ret_len = n;
                        return true;
                }
                s = *p;
        }
}

static bool valid_name_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
               c == '.';
}

void named_addr_list_free(NamedAddr *l, size_t n) {
        for (size_t i = 0; l && i < n; i++)
                free(l[i].address);
        free(l);
}

const NamedAddr *named_addr_list_find(const NamedAddr *l, size_t n, const char *name) {
        for (size_t i = 0; l && name && i < n; i++)
                if (streq(l[i].name, name))
                        return &l[i];
        return NULL;
}

int named_addr_list_parse(const char *s, bool allow_paths, NamedAddr **ret, char **ret_error) {
        NamedAddr *l = NULL;
        const char *item, *p = s;
        size_t len, n = 0;
        int r;

        while (next_item(&p, &item, &len)) {
                const char *eq = memchr(item, '=', len);
                size_t nlen = eq ? (size_t) (eq - item) : 0, alen = eq ? len - nlen - 1 : 0;
                NamedAddr *e;

                if (!eq || nlen == 0 || alen == 0) {
                        r = set_error(ret_error, "'%.*s' is not NAME=ADDRESS", (int) MIN(len, (size_t) 200), item);
                        goto fail;
                }
                if (nlen > NAMED_ADDR_NAME_MAX) {
                        r = set_error(ret_error, "name '%.*s...' is longer than %d bytes", 20, item, NAMED_ADDR_NAME_MAX);
                        goto fail;
                }
                for (size_t i = 0; i < nlen; i++)
                        if (!valid_name_char(item[i])) {
                                r = set_error(ret_error, "name '%.*s' may contain only letters, digits, '_', '-' and '.'",
                                              (int) nlen, item);
                                goto fail;
                        }
                if (n >= NAMED_ADDR_MAX) {
                        r = set_error(ret_error, "more than %d entries", NAMED_ADDR_MAX);
                        goto fail;
                }
                for (size_t i = 0; i < n; i++)
                        if (strlen(l[i].name) == nlen && memcmp(l[i].name, item, nlen) == 0) {
                                r = set_error(ret_error, "name '%.*s' appears twice", (int) nlen, item);
                                goto fail;
                        }
                e = realloc(l, sizeof(NamedAddr) * (n + 1));
                if (!e) {
                        r = -ENOMEM;
                        goto fail;
                }
                l = e;
                e = &l[n];
                *e = (NamedAddr){};
                memcpy(e->name, item, nlen);
                e->address = strndup(eq + 1, alen);
                if (!e->address) {
                        r = -ENOMEM;
                        goto fail;
                }
                n++;
                if (e->address[0] == '/' || e->address[0] == '@') {
                        if (!allow_paths) {
                                r = set_error(ret_error, "%s: '%s' must be HOST:PORT", e->name, e->address);
                                goto fail;
                        }
                        if (alen >= sizeof(((struct sockaddr_un *) NULL)->sun_path) || alen < 2) {
                                r = set_error(ret_error, "%s: socket path '%s' is too long or empty", e->name, e->address);
                                goto fail;
                        }
                        e->is_path = true;
                } else {
                        char host[256];
                        uint16_t port = 0;
                        const char *reason = NULL;

                        if (sock_split_host_port(e->address, host, sizeof(host), &port, &reason) < 0 || !*host) {
                                r = set_error(ret_error, "%s: '%s' is not HOST:PORT%s%s%s", e->name, e->address,
                                              allow_paths ? " or a socket path" : "", reason ? ": " : "",
                                              reason ?: "");
                                goto fail;
                        }
                        if (port == 0) {
                                r = set_error(ret_error, "%s: '%s' needs a port 1..65535", e->name, e->address);
                                goto fail;
                        }
                }
        }
        *ret = l;
        return (int) n;
fail:
        named_addr_list_free(l, n);
        return r;
}

int cidr_list_parse(const char *s, Cidr **ret, char **ret_error) {
        Cidr *l = NULL;
        const char *item, *p = s;
        size_t len, n = 0;
        int r;

        while (next_item(&p, &item, &len)) {
                char buf[INET6_ADDRSTRLEN + 8];
                const char *slash;
                unsigned max, prefix;
                Cidr c = {};
                Cidr *nl;

                if (len >= sizeof(buf)) {
                        r = set_error(ret_error, "'%.*s...' is not a CIDR", 20, item);
                        goto fail;
                }
                memcpy(buf, item, len);
                buf[len] = '\0';
                slash = strchr(buf, '/');
                if (slash)
                        buf[slash - buf] = '\0';
                if (inet_pton(AF_INET, buf, c.addr) == 1)
                        c.family = AF_INET, max = 32;
                else if (inet_pton(AF_INET6, buf, c.addr) == 1)
                        c.family = AF_INET6, max = 128;
                else {
                        r = set_error(ret_error, "'%.*s' is not a CIDR", (int) len, item);
                        goto fail;
                }
                prefix = max;
                if (slash) {
                        const char *d = slash + 1;
                        unsigned v = 0;

                        if (!*d || strlen(d) > 3)
                                goto bad_prefix;
                        for (; *d; d++) {
                                if (*d < '0' || *d > '9')
                                        goto bad_prefix;
                                v = v * 10 + (unsigned) (*d - '0');
                        }
                        if (v > max)
                                goto bad_prefix;
                        prefix = v;
                }
                c.prefix = prefix;
                for (unsigned bit = prefix; bit < max; bit++)
                        if (c.addr[bit / 8] & (0x80 >> (bit % 8))) {
                                r = set_error(ret_error, "'%.*s' has host bits set below the /%u prefix", (int) len,
                                              item, prefix);
                                goto fail;
                        }
                if (n >= CIDR_LIST_MAX) {
                        r = set_error(ret_error, "more than %d CIDRs", CIDR_LIST_MAX);
                        goto fail;
                }
                nl = realloc(l, sizeof(Cidr) * (n + 1));
                if (!nl) {
                        r = -ENOMEM;
                        goto fail;
                }
                l = nl;
                l[n++] = c;
                continue;
        bad_prefix:
                r = set_error(ret_error, "'%.*s' has an invalid prefix length", (int) len, item);
                goto fail;
        }
        *ret = l;
        return (int) n;
fail:
        free(l);
        return r;
}

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix) {
        unsigned full = prefix / 8, rest = prefix % 8;

        if (memcmp(a, net, full) != 0)
                return false;
        return rest == 0 || ((a[full] ^ net[full]) & (uint8_t) (0xff00 >> rest)) == 0;
}

bool cidr_list_contains(const Cidr *l, size_t n, const SockAddr *a) {
        static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        const uint8_t *bytes;
        int family;

        if (a->sa.sa_family == AF_INET) {
                family = AF_INET;
                bytes = (const uint8_t *) &a->in.sin_addr;
        } else if (a->sa.sa_family == AF_INET6) {
                bytes = (const uint8_t *) &a->in6.sin6_addr;
                family = AF_INET6;
                if (memcmp(bytes, v4mapped, sizeof(v4mapped)) == 0) {
                        family = AF_INET;
                        bytes += 12;
                }
        } else
                return false;
        for (size_t i = 0; i < n; i++)
                if (l[i].family == family && prefix_match(bytes, l[i].addr, l[i].prefix))
                        return true;
        return false;
}
