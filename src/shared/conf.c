/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libconfig.h>
#include <stdarg.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <syslog.h>

#include "conf.h"
#include "log.h"

/* Design notes.
 * - One pass per source: a value is parsed (text or libconfig setting) into a ConfValue, checked against the
 *   key's bounds, then stored, freeing what it replaces. Ignored keys go through the same parse and check,
 *   so a malformed upstream flag is still refused, as pflag would refuse it.
 * - The command line is parsed twice by conf_load(): once without storing (to find --config, --help and to
 *   report flag errors before touching files), once after the files so that flags win.
 * - Errors are returned as malloc'd text; this module only logs at debug level. */

const char *const conf_log_target_values[] = { "auto", "journal", "stderr", "stderr-fields", "console", "logfmt", NULL };

#define strneq(a, b, n) (strncmp((a), (b), (n)) == 0)

static void *free_null(void *p) {
        free(p);
        return NULL;
}

typedef struct ConfValue {
        char *s;
        char **l;
        int64_t i; /* ints, durations (µs), enum index, log level */
        bool b;
} ConfValue;

static void value_done(ConfValue *v) {
        v->s = free_null(v->s);
        conf_strv_free(v->l);
        v->l = NULL;
}

static void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

static void config_destroyp(config_t **c) {
        if (*c)
                config_destroy(*c);
}

static void strv_freep(char ***l) {
        conf_strv_free(*l);
}

int conf_set_error(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(ret_error, fmt, ap);
        va_end(ap);
        if (k < 0) {
                *ret_error = NULL;
                return -ENOMEM;
        }
        return r;
}

_printf_(1, 2) static char *strdup_printf(const char *fmt, ...) {
        va_list ap;
        char *s;
        int k;

        va_start(ap, fmt);
        k = vasprintf(&s, fmt, ap);
        va_end(ap);
        return k < 0 ? NULL : s;
}

bool conf_is_printable_ascii(const char *s) {
        if (!s || *s == '\0')
                return false;
        for (; *s; s++)
                if (*s < 0x20 || *s > 0x7e)
                        return false;
        return true;
}

void conf_strv_free(char **l) {
        for (char **i = l; i && *i; i++)
                free(*i);
        free(l);
}

size_t conf_strv_length(char *const *l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

/* Concatenates b to a, taking ownership of both. */
static int strv_extend_take(char ***a, char **b) {
        size_t na = conf_strv_length(*a), nb = conf_strv_length(b);
        char **n;

        if (nb == 0) {
                free(b);
                return 0;
        }
        if (na == 0) {
                free(*a);
                *a = b;
                return 0;
        }
        n = reallocarray(*a, na + nb + 1, sizeof(char *));
        if (!n)
                return -ENOMEM;
        memcpy(n + na, b, (nb + 1) * sizeof(char *));
        free(b);
        *a = n;
        return 0;
}

void conf_args_done(ConfArgs *a) {
        if (!a)
                return;
        a->config_path = free_null(a->config_path);
        a->action = CONF_ACTION_RUN;
        a->check_config = false;
}

/* Value parsers */

int conf_parse_bool(const char *s, bool *ret) {
        static const char *const yes[] = { "1", "t", "T", "TRUE", "true", "True" };
        static const char *const no[] = { "0", "f", "F", "FALSE", "false", "False" };

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (streq(s, yes[i])) {
                        *ret = true;
                        return 0;
                }
                if (streq(s, no[i])) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}

int conf_parse_int64(const char *s, int64_t *ret) {
        const char *p;
        char *end;
        long long v;

        if (!s)
                return -EINVAL;
        p = s + (*s == '-' || *s == '+');
        if (*p < '0' || *p > '9')
                return -EINVAL;
        for (const char *q = p; *q; q++)
                if (*q < '0' || *q > '9')
                        return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (errno != 0 || *end != '\0')
                return -EINVAL;
        *ret = (int64_t) v;
        return 0;
}

#define DURATION_OVERFLOW ((uint64_t) 1 << 63)

/* Go's leadingInt(): digits into *x, -ERANGE past 1<<63. */
static int duration_leading_int(const char **s, uint64_t *ret) {
        uint64_t x = 0;

        for (; **s >= '0' && **s <= '9'; (*s)++) {
                if (x > DURATION_OVERFLOW / 10)
                        return -ERANGE;
                x = x * 10 + (uint64_t) (**s - '0');
                if (x > DURATION_OVERFLOW)
                        return -ERANGE;
        }
        *ret = x;
        return 0;
}

/* Go's leadingFraction(): never fails, extra precision is dropped. */
static void duration_leading_fraction(const char **s, uint64_t *ret, double *ret_scale) {
        uint64_t x = 0;
        double scale = 1;
        bool overflow = false;

        for (; **s >= '0' && **s <= '9'; (*s)++) {
                uint64_t y;

                if (overflow)
                        continue;
                if (x > (DURATION_OVERFLOW - 1) / 10) {
                        overflow = true;
                        continue;
                }
                y = x * 10 + (uint64_t) (**s - '0');
                if (y > DURATION_OVERFLOW) {
                        overflow = true;
                        continue;
                }
                x = y;
                scale *= 10;
        }
        *ret = x;
        *ret_scale = scale;
}

static uint64_t duration_unit(const char *u, size_t n) {
        static const struct {
                const char *name;
                uint64_t ns;
        } units[] = {
                { "ns", 1 },
                { "us", 1000 },
                { "\xc2\xb5s", 1000 }, /* U+00B5 micro sign */
                { "\xce\xbcs", 1000 }, /* U+03BC Greek small letter mu */
                { "ms", 1000 * 1000 },
                { "s", UINT64_C(1000000000) },
                { "m", UINT64_C(60000000000) },
                { "h", UINT64_C(3600000000000) },
        };

        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0)
                        return units[i].ns;
        return 0;
}

/* Go's time.ParseDuration(), then nanoseconds to µs rounding away from zero. */
int conf_parse_duration(const char *s, int64_t *ret_usec) {
        uint64_t d = 0, usec;
        bool neg = false;
        int r;

        if (!s)
                return -EINVAL;
        if (*s == '-' || *s == '+') {
                neg = *s == '-';
                s++;
        }
        if (streq(s, "0")) {
                *ret_usec = 0;
                return 0;
        }
        if (*s == '\0')
                return -EINVAL;

        while (*s != '\0') {
                uint64_t v, f = 0, unit;
                double scale = 1;
                const char *start, *u;
                bool pre, post = false;

                if (!(*s == '.' || (*s >= '0' && *s <= '9')))
                        return -EINVAL;
                start = s;
                r = duration_leading_int(&s, &v);
                if (r < 0)
                        return r;
                pre = s != start;
                if (*s == '.') {
                        s++;
                        start = s;
                        duration_leading_fraction(&s, &f, &scale);
                        post = s != start;
                }
                if (!pre && !post)
                        return -EINVAL;
                u = s;
                while (*s != '\0' && *s != '.' && !(*s >= '0' && *s <= '9'))
                        s++;
                if (s == u)
                        return -EINVAL; /* missing unit */
                unit = duration_unit(u, (size_t) (s - u));
                if (unit == 0)
                        return -EINVAL;
                if (v > DURATION_OVERFLOW / unit)
                        return -ERANGE;
                v *= unit;
                if (f > 0) {
                        v += (uint64_t) ((double) f * ((double) unit / scale));
                        if (v > DURATION_OVERFLOW)
                                return -ERANGE;
                }
                d += v;
                if (d > DURATION_OVERFLOW)
                        return -ERANGE;
        }
        if (!neg && d > DURATION_OVERFLOW - 1)
                return -ERANGE;

        usec = d / 1000 + (d % 1000 != 0);
        *ret_usec = neg ? -(int64_t) usec : (int64_t) usec;
        return 0;
}

/* Appends the fraction frac/10^digits without trailing zeros (and without '.' if it is zero). */
static void format_fraction(char *p, size_t n, uint64_t frac, unsigned digits) {
        char tmp[24];

        if (frac == 0) {
                *p = '\0';
                return;
        }
        (void) snprintf(tmp, sizeof(tmp), "%0*" PRIu64, (int) digits, frac);
        for (size_t l = strlen(tmp); l > 0 && tmp[l - 1] == '0'; l--)
                tmp[l - 1] = '\0';
        (void) snprintf(p, n, ".%s", tmp);
}

const char *conf_format_duration(uint64_t usec, char buf[static CONF_DURATION_STRING_MAX]) {
        char frac[24];

        if (usec == 0)
                (void) snprintf(buf, CONF_DURATION_STRING_MAX, "0s");
        else if (usec < 1000)
                (void) snprintf(buf, CONF_DURATION_STRING_MAX, "%" PRIu64 "\xc2\xb5s", usec);
        else if (usec < USEC_PER_SEC) {
                format_fraction(frac, sizeof(frac), usec % 1000, 3);
                (void) snprintf(buf, CONF_DURATION_STRING_MAX, "%" PRIu64 "%sms", usec / 1000, frac);
        } else {
                uint64_t secs = usec / USEC_PER_SEC;

                format_fraction(frac, sizeof(frac), usec % USEC_PER_SEC, 6);
                if (secs >= 3600)
                        (void) snprintf(buf, CONF_DURATION_STRING_MAX,
                                        "%" PRIu64 "h%" PRIu64 "m%" PRIu64 "%ss", secs / 3600,
                                        secs / 60 % 60, secs % 60, frac);
                else if (secs >= 60)
                        (void) snprintf(buf, CONF_DURATION_STRING_MAX, "%" PRIu64 "m%" PRIu64 "%ss",
                                        secs / 60, secs % 60, frac);
                else
                        (void) snprintf(buf, CONF_DURATION_STRING_MAX, "%" PRIu64 "%ss", secs, frac);
        }
        return buf;
}

int conf_parse_strv(const char *s, char ***ret) {
        _cleanup_(strv_freep) char **l = NULL;
        size_t len, n = 1, k = 0;
        const char *p;

        if (!s)
                return -EINVAL;
        len = strlen(s);
        if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
                s++;
                len -= 2;
        }
        if (len == 0) {
                *ret = NULL;
                return 0;
        }
        for (size_t i = 0; i < len; i++)
                if (s[i] == ',')
                        n++;
        l = calloc(n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        p = s;
        for (;;) {
                const char *e = memchr(p, ',', len - (size_t) (p - s));
                size_t m = e ? (size_t) (e - p) : len - (size_t) (p - s);

                if (m == 0)
                        return -EINVAL; /* empty element */
                l[k] = strndup(p, m);
                if (!l[k])
                        return -ENOMEM;
                k++;
                if (!e)
                        break;
                p = e + 1;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* Table helpers */

static size_t table_size(const ConfKey *table) {
        size_t n = 0;

        while (table[n].name)
                n++;
        return n;
}

static bool stores(const ConfKey *k) {
        return k->offset != CONF_NO_OFFSET && !(k->flags & (CONF_IGNORED | CONF_UNSUPPORTED));
}

/* Names match with '_' in the input standing for '-' (klog's WordSepNormalizeFunc). */
static const ConfKey *table_find(const ConfKey *table, const char *name, size_t len) {
        for (const ConfKey *k = table; k->name; k++) {
                size_t i;

                if (strlen(k->name) != len)
                        continue;
                for (i = 0; i < len; i++)
                        if (name[i] != k->name[i] && !(name[i] == '_' && k->name[i] == '-'))
                                break;
                if (i == len)
                        return k;
        }
        return NULL;
}

static const char *type_metavar(const ConfKey *k) {
        switch (k->type) {
        case CONF_STRING:
                return "STRING";
        case CONF_BOOL:
                return "BOOL";
        case CONF_INT:
                return "INT";
        case CONF_DURATION:
                return "DURATION";
        case CONF_STRV:
                return "LIST";
        case CONF_ENUM:
                return NULL; /* the values are listed instead */
        case CONF_LOG_LEVEL:
                return "LEVEL";
        default:
                return "?";
        }
}

/* "a, b" with "" shown as '""'. */
static char *enum_list(const ConfKey *k, const char *sep) {
        size_t n = 1;
        char *s, *p;

        for (const char *const *v = k->enum_values; v && *v; v++)
                n += strlen(*v) + 2 + strlen(sep);
        s = p = malloc(n);
        if (!s)
                return NULL;
        *p = '\0';
        for (const char *const *v = k->enum_values; v && *v; v++)
                p = stpcpy(stpcpy(p, v == k->enum_values ? "" : sep), **v ? *v : "\"\"");
        return s;
}

/* Parse text into *ret. On failure returns -EINVAL/-ERANGE/-ENOMEM with *ret_reason (NULL on -ENOMEM). */
static int value_parse(const ConfKey *k, const char *text, ConfValue *ret, char **ret_reason) {
        ConfValue v = {};
        int r;

        *ret_reason = NULL;
        switch (k->type) {
        case CONF_STRING:
                if (*text != '\0') {
                        v.s = strdup(text);
                        if (!v.s)
                                return -ENOMEM;
                }
                break;
        case CONF_BOOL:
                if (conf_parse_bool(text, &v.b) < 0) {
                        *ret_reason = strdup("not a boolean");
                        return *ret_reason ? -EINVAL : -ENOMEM;
                }
                break;
        case CONF_INT:
                r = conf_parse_int64(text, &v.i);
                if (r == -ERANGE) {
                        *ret_reason = strdup_printf("value %s out of range %" PRIi64 "..%" PRIi64, text,
                                                    k->min, k->max);
                        return *ret_reason ? -ERANGE : -ENOMEM;
                }
                if (r < 0) {
                        *ret_reason = strdup("not a number");
                        return *ret_reason ? -EINVAL : -ENOMEM;
                }
                break;
        case CONF_DURATION:
                r = conf_parse_duration(text, &v.i);
                if (r == -ERANGE) {
                        char a[CONF_DURATION_STRING_MAX], b[CONF_DURATION_STRING_MAX];

                        *ret_reason = strdup_printf("value %s out of range %s..%s", text,
                                                    conf_format_duration((uint64_t) k->min, a),
                                                    conf_format_duration((uint64_t) k->max, b));
                        return *ret_reason ? -ERANGE : -ENOMEM;
                }
                if (r < 0) {
                        *ret_reason = strdup("not a duration (examples: 1h0m0s, 1.5s, 100ms)");
                        return *ret_reason ? -EINVAL : -ENOMEM;
                }
                break;
        case CONF_STRV:
                r = conf_parse_strv(text, &v.l);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        *ret_reason = strdup("empty list element");
                        return *ret_reason ? -EINVAL : -ENOMEM;
                }
                break;
        case CONF_ENUM: {
                _cleanup_free_ char *values = NULL;

                for (const char *const *e = k->enum_values; e && *e; e++)
                        if (streq(text, *e)) {
                                v.i = e - k->enum_values;
                                *ret = v;
                                return 0;
                        }
                values = enum_list(k, ", ");
                if (!values)
                        return -ENOMEM;
                *ret_reason = strdup_printf("must be one of: %s", values);
                return *ret_reason ? -EINVAL : -ENOMEM;
        }
        case CONF_LOG_LEVEL:
                r = log_level_from_string(text);
                if (r < 0) {
                        *ret_reason =
                                strdup("not a log level (emerg, alert, crit, err, warning, notice, info, "
                                       "debug or 0..7)");
                        return *ret_reason ? -EINVAL : -ENOMEM;
                }
                v.i = r;
                break;
        default:
                return -EINVAL;
        }
        *ret = v;
        return 0;
}

/* The value a key takes when its default applies. */
static int value_default(const ConfKey *k, ConfValue *ret) {
        _cleanup_free_ char *reason = NULL;

        if (!k->def) {
                *ret = (ConfValue){ .i = k->type == CONF_LOG_LEVEL ? -1 : 0 };
                return 0;
        }
        return value_parse(k, k->def, ret, &reason);
}

static bool value_equal(const ConfKey *k, const ConfValue *a, const ConfValue *b) {
        switch (k->type) {
        case CONF_STRING:
                return streq_ptr(a->s, b->s);
        case CONF_BOOL:
                return a->b == b->b;
        case CONF_STRV:
                for (size_t i = 0;; i++) {
                        const char *x = a->l ? a->l[i] : NULL, *y = b->l ? b->l[i] : NULL;

                        if (!streq_ptr(x, y))
                                return false;
                        if (!x)
                                return true;
                }
        default:
                return a->i == b->i;
        }
}

/* Bounds and the CONF_UNSUPPORTED rule. shown is the value as the user wrote it (for messages). */
static int value_check(const ConfKey *k, const ConfValue *v, const char *shown, char **ret_reason) {
        *ret_reason = NULL;

        switch (k->type) {
        case CONF_INT:
                if (v->i < k->min || v->i > k->max) {
                        *ret_reason = strdup_printf("value %s out of range %" PRIi64 "..%" PRIi64, shown,
                                                    k->min, k->max);
                        return *ret_reason ? -ERANGE : -ENOMEM;
                }
                break;
        case CONF_DURATION:
                if (v->i < k->min || v->i > k->max) {
                        char a[CONF_DURATION_STRING_MAX], b[CONF_DURATION_STRING_MAX];

                        *ret_reason = strdup_printf("value %s out of range %s..%s", shown,
                                                    conf_format_duration((uint64_t) k->min, a),
                                                    conf_format_duration((uint64_t) k->max, b));
                        return *ret_reason ? -ERANGE : -ENOMEM;
                }
                break;
        case CONF_STRING: {
                size_t n = v->s ? strlen(v->s) : 0;

                if (k->max > 0 && ((int64_t) n < k->min || (int64_t) n > k->max)) {
                        *ret_reason = strdup_printf("length %zu out of range %" PRIi64 "..%" PRIi64, n,
                                                    k->min, k->max);
                        return *ret_reason ? -ERANGE : -ENOMEM;
                }
                break;
        }
        case CONF_STRV: {
                size_t n = conf_strv_length(v->l);

                if (k->max > 0 && ((int64_t) n < k->min || (int64_t) n > k->max)) {
                        *ret_reason = strdup_printf("%zu elements out of range %" PRIi64 "..%" PRIi64, n,
                                                    k->min, k->max);
                        return *ret_reason ? -ERANGE : -ENOMEM;
                }
                break;
        }
        default:
                break;
        }

        if (k->flags & CONF_UNSUPPORTED) {
                ConfValue d = {};
                bool same;
                int r;

                r = value_default(k, &d);
                if (r < 0)
                        return r == -ENOMEM ? r : -EINVAL;
                same = value_equal(k, v, &d);
                value_done(&d);
                if (!same) {
                        *ret_reason = strdup("not supported by konn (only the default value is accepted)");
                        return *ret_reason ? -EINVAL : -ENOMEM;
                }
        }
        return 0;
}

/* Takes ownership of *v. cfg NULL (validation pass) and non-storing keys just drop it. */
static int value_store(const ConfKey *k, void *cfg, ConfValue *v, bool append) {
        uint8_t *p;

        if (!cfg || !stores(k)) {
                value_done(v);
                return 0;
        }
        p = (uint8_t *) cfg + k->offset;
        switch (k->type) {
        case CONF_STRING:
                free(*(char **) p);
                *(char **) p = TAKE_PTR(v->s);
                break;
        case CONF_BOOL:
                *(bool *) p = v->b;
                break;
        case CONF_INT:
                *(int64_t *) p = v->i;
                break;
        case CONF_DURATION:
                *(uint64_t *) p = (uint64_t) v->i;
                break;
        case CONF_STRV:
                if (append) {
                        int r = strv_extend_take((char ***) p, v->l);
                        if (r < 0) {
                                value_done(v);
                                return r;
                        }
                        v->l = NULL;
                } else {
                        conf_strv_free(*(char ***) p);
                        *(char ***) p = TAKE_PTR(v->l);
                }
                break;
        case CONF_ENUM:
        case CONF_LOG_LEVEL:
                *(int *) p = (int) v->i;
                break;
        default:
                value_done(v);
                return -EINVAL;
        }
        value_done(v);
        return 0;
}

int conf_set_defaults(const ConfKey *table, void *cfg) {
        int r;

        for (const ConfKey *k = table; k->name; k++) {
                ConfValue v = {};
                _cleanup_free_ char *reason = NULL;

                r = value_default(k, &v);
                if (r < 0)
                        return r == -ENOMEM ? r : -EINVAL;
                r = value_check(k, &v, k->def ?: "", &reason);
                if (r < 0) {
                        value_done(&v);
                        return r == -ENOMEM ? r : -EINVAL;
                }
                r = value_store(k, cfg, &v, false);
                if (r < 0)
                        return r;
        }
        return 0;
}

void conf_free_values(const ConfKey *table, void *cfg) {
        if (!cfg)
                return;
        for (const ConfKey *k = table; k->name; k++) {
                uint8_t *p;

                if (!stores(k))
                        continue;
                p = (uint8_t *) cfg + k->offset;
                if (k->type == CONF_STRING) {
                        free(*(char **) p);
                        *(char **) p = NULL;
                } else if (k->type == CONF_STRV) {
                        conf_strv_free(*(char ***) p);
                        *(char ***) p = NULL;
                }
        }
}

/* Command line */

static bool key_takes_value(const ConfKey *k) {
        return k->type != CONF_BOOL;
}

/* One flag's value: parse, check, store; errors in pflag's words. */
static int argv_apply(const ConfKey *k, void *cfg, const char *value, bool append, char **ret_error) {
        _cleanup_free_ char *reason = NULL;
        ConfValue v = {};
        int r;

        r = value_parse(k, value, &v, &reason);
        if (r >= 0) {
                r = value_check(k, &v, value, &reason);
                if (r < 0)
                        value_done(&v);
        }
        if (r == -ENOMEM || (r < 0 && !reason))
                return -ENOMEM;
        if (r == -ERANGE)
                return conf_set_error(ret_error, r, "flag --%s: %s", k->name, reason);
        if (r < 0)
                return conf_set_error(ret_error, r, "invalid value '%s' for flag --%s: %s", value, k->name,
                                      reason);

        if (!stores(k))
                log_debug("Flag --%s is accepted for compatibility with upstream Konnectivity and ignored.",
                          k->name);
        return value_store(k, cfg, &v, append);
}

static int special_bool(const char *flag, const char *value, bool *ret, char **ret_error) {
        if (!value) {
                *ret = true;
                return 0;
        }
        if (conf_parse_bool(value, ret) < 0)
                return conf_set_error(ret_error, -EINVAL, "invalid value '%s' for flag %s: not a boolean",
                                      value, flag);
        return 0;
}

int conf_parse_argv(const ConfKey *table, void *cfg, int argc, char *argv[], ConfArgs *ret_args,
                    char **ret_error) {
        _cleanup_(conf_args_done) ConfArgs args = {};
        _cleanup_free_ bool *seen = NULL;
        int r;

        assert(table);
        assert(ret_args);
        assert(ret_error);

        seen = calloc(table_size(table) + 1, sizeof(bool));
        if (!seen)
                return -ENOMEM;

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *name, *eq, *value = NULL;
                _cleanup_free_ char *flag = NULL;
                const ConfKey *k;
                size_t len;
                bool b;

                if (streq(a, "--")) {
                        if (i + 1 < argc)
                                return conf_set_error(ret_error, -EINVAL, "unexpected argument '%s'",
                                                      argv[i + 1]);
                        break;
                }
                if (a[0] != '-' || a[1] == '\0')
                        return conf_set_error(ret_error, -EINVAL, "unexpected argument '%s'", a);
                name = a + 1 + (a[1] == '-');
                if (*name == '-' || *name == '=' || *name == '\0')
                        return conf_set_error(ret_error, -EINVAL, "bad flag syntax: %s", a);
                eq = strchr(name, '=');
                len = eq ? (size_t) (eq - name) : strlen(name);
                if (eq)
                        value = eq + 1;
                flag = strndup(a, (size_t) (name - a) + len); /* "--name" as the user wrote it */
                if (!flag)
                        return -ENOMEM;

                if ((len == 4 && strneq(name, "help", 4)) || (len == 1 && name[0] == 'h')) {
                        r = special_bool(flag, value, &b, ret_error);
                        if (r < 0)
                                return r;
                        if (b) {
                                args.action = CONF_ACTION_HELP;
                                break;
                        }
                        continue;
                }
                if (len == 7 && strneq(name, "version", 7)) {
                        r = special_bool(flag, value, &b, ret_error);
                        if (r < 0)
                                return r;
                        if (b) {
                                args.action = CONF_ACTION_VERSION;
                                break;
                        }
                        continue;
                }
                if (len == 12 && (strneq(name, "check-config", 12) || strneq(name, "check_config", 12))) {
                        r = special_bool(flag, value, &args.check_config, ret_error);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (len == 6 && strneq(name, "config", 6)) {
                        if (!value) {
                                if (i + 1 >= argc)
                                        return conf_set_error(ret_error, -EINVAL,
                                                              "flag needs an argument: %s", flag);
                                value = argv[++i];
                        }
                        if (*value == '\0')
                                return conf_set_error(ret_error, -EINVAL,
                                                      "flag --config: value must not be empty");
                        free(args.config_path);
                        args.config_path = strdup(value);
                        if (!args.config_path)
                                return -ENOMEM;
                        continue;
                }

                k = table_find(table, name, len);
                if (!k)
                        return conf_set_error(ret_error, -EINVAL, "unknown flag: %s", flag);
                if (!value) {
                        if (!key_takes_value(k))
                                value = "true";
                        else if (i + 1 >= argc)
                                return conf_set_error(ret_error, -EINVAL, "flag needs an argument: %s",
                                                      flag);
                        else
                                value = argv[++i];
                }
                /* pflag StringSlice: the first occurrence replaces the current value, later ones append. */
                r = argv_apply(k, cfg, value, seen[k - table], ret_error);
                if (r < 0)
                        return r;
                seen[k - table] = true;
        }

        *ret_args = args;
        args = (ConfArgs){};
        return ret_args->action;
}

/* Files */

static const char *libconfig_type_name(int type) {
        switch (type) {
        case CONFIG_TYPE_GROUP:
                return "a group";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                return "an integer";
        case CONFIG_TYPE_FLOAT:
                return "a float";
        case CONFIG_TYPE_STRING:
                return "a string";
        case CONFIG_TYPE_BOOL:
                return "a boolean";
        case CONFIG_TYPE_ARRAY:
                return "an array";
        case CONFIG_TYPE_LIST:
                return "a list";
        default:
                return "an unknown type";
        }
}

static const char *expected_type(const ConfKey *k) {
        switch (k->type) {
        case CONF_STRING:
        case CONF_ENUM:
        case CONF_LOG_LEVEL:
                return "a string";
        case CONF_DURATION:
                return "a string with a duration such as \"10s\"";
        case CONF_BOOL:
                return "a boolean";
        case CONF_INT:
                return "an integer";
        case CONF_STRV:
                return "an array or list of strings";
        default:
                return "?";
        }
}

/* Converts one libconfig setting into a ConfValue. *ret_shown is the text used in messages. */
static int setting_parse(const ConfKey *k, config_setting_t *s, ConfValue *ret, char **ret_shown,
                         char **ret_reason) {
        int type = config_setting_type(s);
        ConfValue v = {};
        int r;

        *ret_reason = NULL;
        *ret_shown = NULL;
        switch (k->type) {
        case CONF_STRING:
        case CONF_DURATION:
        case CONF_ENUM:
        case CONF_LOG_LEVEL: {
                const char *text;

                if (type != CONFIG_TYPE_STRING)
                        break;
                text = config_setting_get_string(s);
                *ret_shown = strdup(text ?: "");
                if (!*ret_shown)
                        return -ENOMEM;
                return value_parse(k, *ret_shown, ret, ret_reason);
        }
        case CONF_BOOL:
                if (type != CONFIG_TYPE_BOOL)
                        break;
                v.b = config_setting_get_bool(s);
                *ret = v;
                return 0;
        case CONF_INT:
                if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
                        break;
                v.i = (int64_t) config_setting_get_int64(s);
                *ret_shown = strdup_printf("%" PRIi64, v.i);
                if (!*ret_shown)
                        return -ENOMEM;
                *ret = v;
                return 0;
        case CONF_STRV: {
                int n;

                if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST)
                        break;
                n = config_setting_length(s);
                if (n > 0) {
                        v.l = calloc((size_t) n + 1, sizeof(char *));
                        if (!v.l)
                                return -ENOMEM;
                }
                for (int i = 0; i < n; i++) {
                        config_setting_t *e = config_setting_get_elem(s, (unsigned) i);
                        const char *text;

                        if (!e || config_setting_type(e) != CONFIG_TYPE_STRING) {
                                value_done(&v);
                                *ret_reason = strdup("list elements must be strings");
                                return *ret_reason ? -EINVAL : -ENOMEM;
                        }
                        text = config_setting_get_string(e);
                        if (!text || *text == '\0') {
                                value_done(&v);
                                *ret_reason = strdup("empty list element");
                                return *ret_reason ? -EINVAL : -ENOMEM;
                        }
                        v.l[i] = strdup(text);
                        if (!v.l[i]) {
                                value_done(&v);
                                return -ENOMEM;
                        }
                }
                *ret = v;
                return 0;
        }
        default:
                return -EINVAL;
        }

        r = -EINVAL;
        *ret_reason = strdup_printf("expected %s, got %s", expected_type(k), libconfig_type_name(type));
        return *ret_reason ? r : -ENOMEM;
}

static int file_apply(const ConfKey *k, void *cfg, const char *path, unsigned line, config_setting_t *s,
                      char **ret_error) {
        _cleanup_free_ char *shown = NULL, *reason = NULL;
        ConfValue v = {};
        int r;

        r = setting_parse(k, s, &v, &shown, &reason);
        if (r >= 0) {
                r = value_check(k, &v, shown ?: "", &reason);
                if (r < 0)
                        value_done(&v);
        }
        if (r == -ENOMEM || (r < 0 && !reason))
                return -ENOMEM;
        if (r == -EINVAL && shown)
                return conf_set_error(ret_error, r, "%s:%u: key '%s': invalid value '%s': %s", path, line,
                                      k->name, shown, reason);
        if (r < 0)
                return conf_set_error(ret_error, r, "%s:%u: key '%s': %s", path, line, k->name, reason);

        if (!stores(k))
                log_debug("%s:%u: key '%s' is accepted for compatibility with upstream Konnectivity and "
                          "ignored.",
                          path, line, k->name);
        return value_store(k, cfg, &v, false);
}

#define CONF_FILE_SIZE_MAX (1024 * 1024)

static int read_file(const char *path, char **ret, char **ret_error) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        size_t n = 0, allocated;
        struct stat st;
        int r;

        /* O_NONBLOCK so that a FIFO cannot block the open; it is refused below. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 || fstat(fd, &st) < 0) {
                r = negative_errno();
                return conf_set_error(ret_error, r, "%s: %s", path, strerror(-r));
        }
        if (!S_ISREG(st.st_mode))
                return conf_set_error(ret_error, -EINVAL, "%s: not a regular file", path);
        if (st.st_size > CONF_FILE_SIZE_MAX)
                return conf_set_error(ret_error, -EFBIG, "%s: larger than %d bytes", path,
                                      CONF_FILE_SIZE_MAX);

        /* Room for st_size bytes, the NUL and one byte to see EOF; grown if the file grows while we read,
         * never past the limit. */
        allocated = (size_t) st.st_size + 2;
        buf = malloc(allocated);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k;

                if (n + 1 >= allocated) {
                        size_t a = MIN(allocated * 2, (size_t) CONF_FILE_SIZE_MAX + 2);
                        char *b;

                        if (a <= allocated)
                                return conf_set_error(ret_error, -EFBIG, "%s: larger than %d bytes", path,
                                                      CONF_FILE_SIZE_MAX);
                        b = realloc(buf, a);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        allocated = a;
                }
                k = read(fd, buf + n, allocated - 1 - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        return conf_set_error(ret_error, r, "%s: %s", path, strerror(-r));
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n > CONF_FILE_SIZE_MAX)
                        return conf_set_error(ret_error, -EFBIG, "%s: larger than %d bytes", path,
                                              CONF_FILE_SIZE_MAX);
        }
        if (memchr(buf, '\0', n))
                return conf_set_error(ret_error, -EINVAL, "%s: contains a NUL byte", path);
        buf[n] = '\0';
        *ret = TAKE_PTR(buf);
        return 0;
}

static unsigned digit_value(char c) {
        if (c >= 'a' && c <= 'f')
                return (unsigned) (c - 'a' + 10);
        if (c >= 'A' && c <= 'F')
                return (unsigned) (c - 'A' + 10);
        return (unsigned) (c - '0');
}

static bool is_word_char(char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
                c == '+' || c == '_' || c == '.' || c == '*';
}

/* Would libconfig 1.5 store this integer literal without wrapping? It converts plain literals with a
 * 32-bit cast (99999999999 silently becomes 1215752191) and "L" literals by saturating at 64 bits. */
static bool int_literal_fits(const char *w, size_t n) {
        bool neg = false, hex = false, l = false;
        uint64_t v = 0, max;
        size_t i = 0;

        if (n > 0 && w[n - 1] == 'L') {
                l = true;
                n -= 1 + (n >= 2 && w[n - 2] == 'L');
        }
        if (i < n && (w[i] == '-' || w[i] == '+'))
                neg = w[i++] == '-';
        if (!neg && n - i > 2 && w[i] == '0' && (w[i + 1] == 'x' || w[i + 1] == 'X')) {
                hex = true;
                i += 2;
        }
        if (i >= n)
                return true; /* not an integer literal */
        for (size_t j = i; j < n; j++)
                if (!(w[j] >= '0' && w[j] <= '9') &&
                    !(hex && ((w[j] >= 'a' && w[j] <= 'f') || (w[j] >= 'A' && w[j] <= 'F'))))
                        return true; /* a float, a name, ...: not ours to judge */
        max = l ? (uint64_t) INT64_MAX : (uint64_t) INT32_MAX;
        if (neg && !hex)
                max++;
        for (; i < n; i++) {
                unsigned d = digit_value(w[i]);

                if (v > (max - d) / (hex ? 16 : 10))
                        return false;
                v = v * (hex ? 16 : 10) + d;
        }
        return true;
}

/* A lexical pass over libconfig text (strings and comments skipped): finds the first @directive and the
 * first integer literal libconfig would wrap. Lines are 1-based; 0 = none found. */
static void scan_source(const char *s, unsigned *ret_directive_line, unsigned *ret_int_line,
                        const char **ret_int, size_t *ret_int_len) {
        unsigned line = 1;

        *ret_directive_line = *ret_int_line = 0;
        *ret_int = NULL;
        *ret_int_len = 0;
        while (*s) {
                if (*s == '\n') {
                        line++;
                        s++;
                } else if (*s == '"') {
                        for (s++; *s && *s != '"'; s++) {
                                if (*s == '\n')
                                        line++;
                                if (*s == '\\' && s[1] != '\0')
                                        s++;
                        }
                        if (*s)
                                s++;
                } else if (*s == '#' || (*s == '/' && s[1] == '/')) {
                        while (*s && *s != '\n')
                                s++;
                } else if (*s == '/' && s[1] == '*') {
                        for (s += 2; *s && !(*s == '*' && s[1] == '/'); s++)
                                if (*s == '\n')
                                        line++;
                        if (*s)
                                s += 2;
                } else if (*s == '@') {
                        if (*ret_directive_line == 0)
                                *ret_directive_line = line;
                        s++;
                } else if (is_word_char(*s)) {
                        const char *w = s;

                        while (is_word_char(*s))
                                s++;
                        if (*ret_int_line == 0 && !int_literal_fits(w, (size_t) (s - w))) {
                                *ret_int_line = line;
                                *ret_int = w;
                                *ret_int_len = (size_t) (s - w);
                        }
                } else
                        s++;
        }
}

int conf_load_file(const ConfKey *table, void *cfg, const char *path, char **ret_error) {
        _cleanup_(config_destroyp) config_t *cleanup = NULL;
        _cleanup_free_ char *text = NULL;
        unsigned directive_line, int_line;
        const char *int_text;
        size_t int_len;
        config_setting_t *root;
        config_t c;
        int r, n;

        assert(table);
        assert(path);
        assert(ret_error);

        r = read_file(path, &text, ret_error);
        if (r < 0)
                return r;

        /* libconfig 1.5 has no include hook, and drop-ins do that job: refuse @include before libconfig
         * would open anything. */
        scan_source(text, &directive_line, &int_line, &int_text, &int_len);
        if (directive_line > 0)
                return conf_set_error(ret_error, -EINVAL,
                                      "%s:%u: @include is not supported, use drop-ins in %s.d/", path,
                                      directive_line, path);

        config_init(&c);
        cleanup = &c;
        if (config_read_string(&c, text) != CONFIG_TRUE)
                return conf_set_error(ret_error, -EINVAL, "%s:%d: %s", config_error_file(&c) ?: path,
                                      config_error_line(&c), config_error_text(&c) ?: "syntax error");
        if (int_line > 0)
                return conf_set_error(ret_error, -ERANGE,
                                      "%s:%u: integer %.*s out of range (64-bit integers need an L suffix)",
                                      path, int_line, (int) MIN(int_len, (size_t) 64), int_text);

        root = config_root_setting(&c);
        n = config_setting_length(root);
        for (int i = 0; i < n; i++) {
                config_setting_t *s = config_setting_get_elem(root, (unsigned) i);
                const char *name = config_setting_name(s);
                unsigned line = config_setting_source_line(s);
                const ConfKey *k;

                k = name ? table_find(table, name, strlen(name)) : NULL;
                if (!k)
                        return conf_set_error(ret_error, -EINVAL, "%s:%u: unknown key '%s'", path, line,
                                              name ?: "");
                r = file_apply(k, cfg, path, line, s, ret_error);
                if (r < 0)
                        return r;
        }
        log_debug("Loaded configuration file %s.", path);
        return 0;
}

static int strcmp_ptr(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Regular files "*.conf" in dir (not starting with '.'), full paths, strcmp order. Missing dir: empty. */
static int list_dropins(const char *dir, char ***ret) {
        _cleanup_(strv_freep) char **l = NULL;
        _cleanup_(closedirp) DIR *d = NULL;
        size_t n = 0, allocated = 0;

        d = opendir(dir);
        if (!d) {
                if (errno == ENOENT || errno == ENOTDIR) {
                        *ret = NULL;
                        return 0;
                }
                return negative_errno();
        }
        for (;;) {
                struct dirent *de;
                struct stat st;
                size_t len;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                return negative_errno();
                        break;
                }
                len = strlen(de->d_name);
                if (de->d_name[0] == '.' || len <= STRLEN(".conf") ||
                    !streq(de->d_name + len - STRLEN(".conf"), ".conf"))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || !S_ISREG(st.st_mode)) {
                        log_debug("Skipping drop-in %s/%s: not a regular file.", dir, de->d_name);
                        continue;
                }
                if (n + 2 > allocated) {
                        size_t a = MAX(allocated * 2, (size_t) 8);
                        char **nl = reallocarray(l, a, sizeof(char *));

                        if (!nl)
                                return -ENOMEM;
                        l = nl;
                        allocated = a;
                }
                l[n] = strdup_printf("%s/%s", dir, de->d_name);
                if (!l[n])
                        return -ENOMEM;
                l[++n] = NULL;
        }
        if (n > 0)
                qsort(l, n, sizeof(char *), strcmp_ptr);
        *ret = TAKE_PTR(l);
        return 0;
}

int conf_load(const ConfKey *table, void *cfg, const char *default_path, int argc, char *argv[],
              ConfArgs *ret_args, char **ret_error) {
        _cleanup_(conf_args_done) ConfArgs args = {}, again = {};
        const char *path;
        int r;

        assert(table);
        assert(cfg);
        assert(ret_args);
        assert(ret_error);

        r = conf_parse_argv(table, NULL, argc, argv, &args, ret_error);
        if (r < 0)
                return r;
        if (r > 0) {
                *ret_args = args;
                args = (ConfArgs){};
                return r;
        }

        r = conf_set_defaults(table, cfg);
        if (r < 0)
                return conf_set_error(ret_error, r,
                                      "internal error: a default value of the key table does not parse");

        path = args.config_path ?: default_path;
        if (path) {
                _cleanup_(strv_freep) char **dropins = NULL;
                _cleanup_free_ char *dir = NULL, *error = NULL;

                r = conf_load_file(table, cfg, path, &error);
                if (r == -ENOENT && !args.config_path)
                        log_debug("Configuration file %s does not exist, using defaults.", path);
                else if (r < 0) {
                        *ret_error = TAKE_PTR(error);
                        return r;
                }

                dir = strdup_printf("%s.d", path);
                if (!dir)
                        return -ENOMEM;
                r = list_dropins(dir, &dropins);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return conf_set_error(ret_error, r, "%s: %s", dir, strerror(-r));
                for (char **p = dropins; p && *p; p++) {
                        r = conf_load_file(table, cfg, *p, ret_error);
                        if (r < 0)
                                return r;
                }
        }

        r = conf_parse_argv(table, cfg, argc, argv, &again, ret_error);
        if (r < 0)
                return r;

        *ret_args = args;
        args = (ConfArgs){};
        return 0;
}

/* --help and man page */

static char *key_usage(const ConfKey *k) {
        const char *metavar = type_metavar(k);
        _cleanup_free_ char *values = NULL;

        if (k->type == CONF_BOOL)
                return strdup_printf("--%s[=BOOL]", k->name);
        if (metavar)
                return strdup_printf("--%s=%s", k->name, metavar);
        values = enum_list(k, "|");
        if (!values)
                return NULL;
        return strdup_printf("--%s=%s", k->name, values);
}

#define HELP_COLUMN 40

static void help_line(FILE *f, const char *usage, const char *help, const char *def) {
        int n = fprintf(f, "  %s", usage);

        if (n >= HELP_COLUMN - 1)
                fprintf(f, "\n%*s", HELP_COLUMN, "");
        else
                fprintf(f, "%*s", HELP_COLUMN - n, "");
        fputs(help ?: "", f);
        if (def && *def)
                fprintf(f, " (default: %s)", def);
        fputc('\n', f);
}

static void help_section(const ConfKey *table, unsigned want, FILE *f) {
        for (const ConfKey *k = table; k->name; k++) {
                _cleanup_free_ char *usage = NULL;

                if ((k->flags & CONF_HIDDEN) || (k->flags & (CONF_IGNORED | CONF_UNSUPPORTED)) != want)
                        continue;
                usage = key_usage(k);
                help_line(f, usage ?: k->name, k->help, k->def);
        }
}

void conf_print_help(const ConfKey *table, const char *program, const char *summary,
                     const char *default_path, FILE *f) {
        fprintf(f, "Usage: %s [OPTIONS...]\n\n", program);
        if (summary)
                fprintf(f, "%s\n\n", summary);
        fputs("Every option is also a configuration file key of the same name (\"agent-port = 8091;\").\n\n",
              f);
        fputs("Program options:\n", f);
        help_line(f, "-h --help", "Show this help and exit", NULL);
        help_line(f, "--version", "Show the version and exit", NULL);
        help_line(f, "--config=PATH", "Main configuration file; drop-ins are read from PATH.d/*.conf",
                  default_path);
        help_line(f, "--check-config", "Load and validate the configuration, then exit", NULL);
        fputs("\nOptions:\n", f);
        help_section(table, 0, f);
        fputs("\nAccepted for compatibility with upstream Konnectivity and ignored:\n", f);
        help_section(table, CONF_IGNORED, f);
        fputs("\nNot implemented by konn; only the default value is accepted:\n", f);
        help_section(table, CONF_UNSUPPORTED, f);
}

/* roff text: escape '\' and '-', and protect a leading '.' or '\''. */
static void roff_puts(const char *s, FILE *f) {
        if (*s == '.' || *s == '\'')
                fputs("\\&", f);
        for (; *s; s++) {
                if (*s == '\\')
                        fputs("\\e", f);
                else if (*s == '-')
                        fputs("\\-", f);
                else
                        fputc(*s, f);
        }
}

void conf_print_keys_man(const ConfKey *table, FILE *f) {
        for (const ConfKey *k = table; k->name; k++) {
                const char *metavar;

                if (k->flags & CONF_HIDDEN)
                        continue;
                fputs(".TP\n\\fB\\-\\-", f);
                roff_puts(k->name, f);
                fputs("\\fR", f);
                metavar = type_metavar(k);
                if (k->type == CONF_BOOL)
                        fputs("[=\\fIBOOL\\fR]", f);
                else if (metavar)
                        fprintf(f, "=\\fI%s\\fR", metavar);
                else {
                        _cleanup_free_ char *values = enum_list(k, "|");

                        fputs("=\\fI", f);
                        roff_puts(values ?: "", f);
                        fputs("\\fR", f);
                }
                fputc('\n', f);
                roff_puts(k->help ?: "", f);
                fputc('.', f);
                if (k->def && *k->def) {
                        fputs(" Default: \\fB", f);
                        roff_puts(k->def, f);
                        fputs("\\fR.", f);
                }
                if (k->flags & CONF_IGNORED)
                        fputs(" Accepted for compatibility with upstream Konnectivity and ignored.", f);
                if (k->flags & CONF_UNSUPPORTED)
                        fputs(" Not implemented by konn: only the default value is accepted.", f);
                fputc('\n', f);
        }
}

/* IDs and log level */

int conf_generate_uuid(char **ret) {
        uint8_t b[16];
        ssize_t n;
        char *s;

        n = getrandom(b, sizeof(b), 0);
        if (n < 0)
                return negative_errno();
        if ((size_t) n != sizeof(b))
                return -EIO;
        b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
        b[8] = (b[8] & 0x3f) | 0x80; /* RFC 4122 variant */
        s = strdup_printf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                          b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                          b[15]);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int conf_default_id(char **id, const char *env_name) {
        const char *e;

        assert(id);
        if (*id)
                return 0;
        e = env_name ? getenv(env_name) : NULL;
        if (e && *e) {
                *id = strdup(e);
                return *id ? 0 : -ENOMEM;
        }
        return conf_generate_uuid(id);
}

int conf_resolve_log_level(int log_level, int64_t verbosity) {
        if (log_level >= 0)
                return log_level;
        return verbosity >= 5 ? LOG_DEBUG : LOG_INFO;
}

static int unhex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -EINVAL;
}

/* Go's url.QueryUnescape() of s[0..n) into *ret (malloc'd, *ret_len bytes, may contain NUL). On a bad
 * escape returns -EINVAL with *ret_bad pointing at the '%'. */
int conf_query_unescape(const char *s, size_t n, char **ret, size_t *ret_len, const char **ret_bad) {
        _cleanup_free_ char *out = malloc(n + 1);
        size_t k = 0;

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '%') {
                        if (i + 2 >= n || unhex(s[i + 1]) < 0 || unhex(s[i + 2]) < 0) {
                                *ret_bad = s + i;
                                return -EINVAL;
                        }
                        out[k++] = (char) (unhex(s[i + 1]) << 4 | unhex(s[i + 2]));
                        i += 2;
                } else
                        out[k++] = s[i] == '+' ? ' ' : s[i];
        }
        out[k] = '\0';
        *ret = TAKE_PTR(out);
        *ret_len = k;
        return 0;
}

int conf_load_daemon(const ConfDaemon *d, void *ret, int argc, char *argv[], ConfArgs *ret_args, char **ret_error) {
        _cleanup_(conf_args_done) ConfArgs args = {};
        _cleanup_free_ char *error = NULL;
        _cleanup_free_ uint8_t *c = NULL;
        int r;

        assert(d && ret && ret_args && ret_error);

        c = calloc(1, d->size);
        if (!c)
                return -ENOMEM;
        r = conf_load(d->table, c, d->default_path, argc, argv, &args, &error);
        if (r < 0) {
                conf_free_values(d->table, c);
                *ret_error = TAKE_PTR(error);
                return r;
        }
        if (r > 0) {
                conf_free_values(d->table, c);
                *ret_args = args;
                args = (ConfArgs){};
                return r;
        }
        r = conf_default_id((char **) (c + d->id_offset), d->id_env);
        if (r >= 0) {
                int *level = (int *) (c + d->log_level_offset);
                *level = conf_resolve_log_level(*level, *(const int64_t *) (c + d->verbosity_offset));
                r = d->validate(c, &error);
                if (r < 0)
                        *ret_error = TAKE_PTR(error);
        } else
                r = conf_set_error(ret_error, r, "failed to generate an ID: %s", strerror(-r));
        if (r < 0) {
                conf_free_values(d->table, c);
                return r;
        }
        memcpy(ret, c, d->size);
        *ret_args = args;
        args = (ConfArgs){};
        return 0;
}

int conf_validate_log(int log_level, int log_target, char **ret_error) {
        if (log_level < LOG_EMERG || log_level > LOG_DEBUG)
                return conf_set_error(ret_error, -EINVAL, "--log-level must be a syslog level");
        if (log_target < 0 || log_target >= _LOG_TARGET_MAX)
                return conf_set_error(ret_error, -EINVAL,
                                      "--log-target must be auto, journal, console, logfmt, stderr or stderr-fields");
        return 0;
}
