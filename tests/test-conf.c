/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <check.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>

#include "agent-config.h"
#include "conf.h"
#include "log.h"
#include "macro.h"
#include "server-config.h"

/* A small table exercising every type and flag, on its own struct. */
typedef struct TestConfig {
        char *name;
        bool flag;
        int64_t port;
        uint64_t timeout_usec;
        char **list;
        int mode;
        int level;
        char *shortstr;
        int64_t verbosity;
} TestConfig;

static const char *const test_modes[] = { "grpc", "http-connect", NULL };

/* clang-format off */
#define TOFF(f) offsetof(TestConfig, f)
static const ConfKey test_table[] = {
        { .name = "name", .type = CONF_STRING, .offset = TOFF(name), .def = "dflt", .help = "a string" },
        { .name = "flag", .type = CONF_BOOL, .offset = TOFF(flag), .def = "false", .help = "a bool" },
        { .name = "port", .type = CONF_INT, .offset = TOFF(port), .min = 0, .max = 65535, .def = "8091",
          .help = "a port" },
        { .name = "timeout", .type = CONF_DURATION, .offset = TOFF(timeout_usec), .min = 0,
          .max = 3600 * (int64_t) USEC_PER_SEC, .def = "10s", .help = "a duration" },
        { .name = "list", .type = CONF_STRV, .offset = TOFF(list), .def = "a,b", .help = "a list" },
        { .name = "mode", .type = CONF_ENUM, .offset = TOFF(mode), .def = "grpc", .enum_values = test_modes,
          .help = "an enum" },
        { .name = "log-level", .type = CONF_LOG_LEVEL, .offset = TOFF(level), .help = "a level" },
        { .name = "short", .type = CONF_STRING, .offset = TOFF(shortstr), .min = 0, .max = 3,
          .help = "short" },
        { .name = "ignored-int", .type = CONF_INT, .offset = CONF_NO_OFFSET, .min = 1, .max = 10, .def = "5",
          .flags = CONF_IGNORED, .help = "ignored" },
        { .name = "secret", .type = CONF_STRING, .offset = CONF_NO_OFFSET, .flags = CONF_UNSUPPORTED,
          .help = "unsupported" },
        { .name = "hidden-thing", .type = CONF_STRING, .offset = CONF_NO_OFFSET,
          .flags = CONF_IGNORED | CONF_HIDDEN, .help = "hidden" },
        CONF_KLOG_KEYS(TOFF(verbosity)),
        {}
};
/* clang-format on */

#define ARGS(...) ((const char *const[]){ "prog", __VA_ARGS__, NULL })

static int count_args(const char *const *a) {
        int n = 0;

        while (a[n])
                n++;
        return n;
}

/* conf_parse_argv() that also checks the "written only on success" contract. */
static int parse_argv(const ConfKey *table, void *cfg, const char *const *argv, ConfArgs *args,
                      char **error) {
        ConfArgs sentinel = { .action = 77, .check_config = true, .config_path = (char *) "sentinel" };
        int r;

        *args = sentinel;
        *error = NULL;
        r = conf_parse_argv(table, cfg, count_args(argv), (char **) argv, args, error);
        if (r < 0) {
                ck_assert_int_eq(args->action, 77);
                ck_assert_ptr_eq(args->config_path, sentinel.config_path);
                ck_assert_ptr_nonnull(*error);
                *args = (ConfArgs){};
        } else
                ck_assert_ptr_null(*error);
        return r;
}

static void test_defaults(TestConfig *c) {
        *c = (TestConfig){};
        ck_assert_int_eq(conf_set_defaults(test_table, c), 0);
}

static void assert_argv_error(const char *const *argv, int expected_r, const char *expected) {
        TestConfig c;
        ConfArgs args;
        char *error;

        test_defaults(&c);
        ck_assert_int_eq(parse_argv(test_table, &c, argv, &args, &error), expected_r);
        ck_assert_str_eq(error, expected);
        free(error);
        conf_free_values(test_table, &c);
}

static void assert_strv(char **l, const char *const *expected) {
        size_t n = 0;

        while (expected[n])
                n++;
        ck_assert_uint_eq(conf_strv_length(l), n);
        for (size_t i = 0; i < n; i++)
                ck_assert_str_eq(l[i], expected[i]);
        if (n == 0)
                ck_assert_ptr_null(l);
}
#define STRV(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define STRV_EMPTY ((const char *const[]){ NULL })

/* --- values --- */

/* clang-format off */
static const struct {
        const char *text;
        int r;
        int64_t usec;
} durations[] = {
        { "1h0m0s", 0, INT64_C(3600000000) },
        { "1.5s", 0, 1500000 },
        { "100ms", 0, 100000 },
        { "300us", 0, 300 },
        { "300\xc2\xb5s", 0, 300 },  /* micro sign */
        { "300\xce\xbcs", 0, 300 },  /* Greek mu */
        { "10ns", 0, 1 },            /* rounded up, never 0 */
        { "1000ns", 0, 1 },
        { "1001ns", 0, 2 },
        { "0", 0, 0 },
        { "0s", 0, 0 },
        { "-0", 0, 0 },
        { "+0s", 0, 0 },
        { "1h30m", 0, INT64_C(5400000000) },
        { "1m1.5s", 0, 61500000 },
        { ".5s", 0, 500000 },
        { "5.s", 0, 5000000 },
        { "-1s", 0, -1000000 },
        { "+2m", 0, 120000000 },
        { "1.0000001s", 0, 1000001 },     /* 1 s + 100 ns rounds up to the next µs */
        { "1.0000000001s", 0, 1000000 }, /* below 1 ns: dropped, as Go does */
        { "2562047h47m16.854775807s", 0, INT64_C(9223372036854776) },
        { "-2562047h47m16.854775808s", 0, -INT64_C(9223372036854776) },
        { "2562047h47m16.854775808s", -ERANGE, 0 },
        { "9223372036854775808ns", -ERANGE, 0 },
        { "99999999999999999999h", -ERANGE, 0 },
        { "1x", -EINVAL, 0 },
        { "", -EINVAL, 0 },
        { "-", -EINVAL, 0 },
        { "1", -EINVAL, 0 },
        { "s", -EINVAL, 0 },
        { ".s", -EINVAL, 0 },
        { "1h-1m", -EINVAL, 0 },
        { "1.2.3s", -EINVAL, 0 },
        { " 1s", -EINVAL, 0 },
        { "1s ", -EINVAL, 0 },
        { "1 s", -EINVAL, 0 },
        { "1e3s", -EINVAL, 0 },
        { "1S", -EINVAL, 0 },
        { "1sec", -EINVAL, 0 },
};
/* clang-format on */

START_TEST(test_parse_duration) {
        int64_t usec = 4242;
        int r;

        r = conf_parse_duration(durations[_i].text, &usec);
        ck_assert_msg(r == durations[_i].r, "'%s': got %d, expected %d", durations[_i].text, r,
                      durations[_i].r);
        if (r == 0)
                ck_assert_msg(usec == durations[_i].usec, "'%s': got %" PRIi64, durations[_i].text, usec);
        else
                ck_assert_int_eq(usec, 4242);
}
END_TEST

START_TEST(test_format_duration) {
        static const struct {
                uint64_t usec;
                const char *text;
        } cases[] = {
                { 0, "0s" },
                { 1, "1\xc2\xb5s" },
                { 300, "300\xc2\xb5s" },
                { 1000, "1ms" },
                { 1500, "1.5ms" },
                { 1001, "1.001ms" },
                { 100000, "100ms" },
                { 1000000, "1s" },
                { 1500000, "1.5s" },
                { 1000001, "1.000001s" },
                { 60000000, "1m0s" },
                { 61500000, "1m1.5s" },
                { UINT64_C(3600000000), "1h0m0s" },
                { UINT64_C(5400500000), "1h30m0.5s" },
                { UINT64_C(86400000000), "24h0m0s" },
        };
        char buf[CONF_DURATION_STRING_MAX];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int64_t back;

                ck_assert_str_eq(conf_format_duration(cases[i].usec, buf), cases[i].text);
                /* and Go's formatting parses back to the same value */
                ck_assert_int_eq(conf_parse_duration(buf, &back), 0);
                ck_assert_int_eq(back, (int64_t) cases[i].usec);
        }
        ck_assert_str_eq(conf_format_duration(UINT64_MAX, buf), "5124095576h1m49.551615s");
}
END_TEST

START_TEST(test_parse_bool) {
        static const char *const yes[] = { "1", "t", "T", "TRUE", "true", "True" };
        static const char *const no[] = { "0", "f", "F", "FALSE", "false", "False" };
        static const char *const bad[] = { "", "yes", "no", "on", "tRUE", "true ", "2", "-1" };
        bool b;

        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                b = false;
                ck_assert_int_eq(conf_parse_bool(yes[i], &b), 0);
                ck_assert(b);
        }
        for (size_t i = 0; i < ELEMENTSOF(no); i++) {
                b = true;
                ck_assert_int_eq(conf_parse_bool(no[i], &b), 0);
                ck_assert(!b);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                b = true;
                ck_assert_int_eq(conf_parse_bool(bad[i], &b), -EINVAL);
                ck_assert(b);
        }
        ck_assert_int_eq(conf_parse_bool(NULL, &b), -EINVAL);
}
END_TEST

START_TEST(test_parse_int64) {
        int64_t v = 0;

        ck_assert_int_eq(conf_parse_int64("0", &v), 0);
        ck_assert_int_eq(v, 0);
        ck_assert_int_eq(conf_parse_int64("-5", &v), 0);
        ck_assert_int_eq(v, -5);
        ck_assert_int_eq(conf_parse_int64("+7", &v), 0);
        ck_assert_int_eq(v, 7);
        ck_assert_int_eq(conf_parse_int64("9223372036854775807", &v), 0);
        ck_assert_int_eq(v, INT64_MAX);
        ck_assert_int_eq(conf_parse_int64("-9223372036854775808", &v), 0);
        ck_assert_int_eq(v, INT64_MIN);
        v = 99;
        ck_assert_int_eq(conf_parse_int64("9223372036854775808", &v), -ERANGE);
        ck_assert_int_eq(conf_parse_int64("-9223372036854775809", &v), -ERANGE);
        ck_assert_int_eq(conf_parse_int64("", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_int64("-", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_int64("abc", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_int64("1a", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_int64(" 1", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_int64("1 ", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_int64("0x10", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_int64("1.0", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_int64("--1", &v), -EINVAL);
        ck_assert_int_eq(v, 99);
}
END_TEST

START_TEST(test_parse_strv) {
        char **l = (char **) 0x1;

        ck_assert_int_eq(conf_parse_strv("", &l), 0);
        assert_strv(l, STRV_EMPTY);
        l = (char **) 0x1;
        ck_assert_int_eq(conf_parse_strv("[]", &l), 0);
        assert_strv(l, STRV_EMPTY);

        ck_assert_int_eq(conf_parse_strv("a,b", &l), 0);
        assert_strv(l, STRV("a", "b"));
        conf_strv_free(l);
        ck_assert_int_eq(conf_parse_strv("[a,b]", &l), 0);
        assert_strv(l, STRV("a", "b"));
        conf_strv_free(l);
        ck_assert_int_eq(conf_parse_strv("[h2-test]", &l), 0);
        assert_strv(l, STRV("h2-test"));
        conf_strv_free(l);
        ck_assert_int_eq(conf_parse_strv("single", &l), 0);
        assert_strv(l, STRV("single"));
        conf_strv_free(l);
        ck_assert_int_eq(conf_parse_strv("[a", &l), 0); /* brackets only strip as a pair */
        assert_strv(l, STRV("[a"));
        conf_strv_free(l);
        ck_assert_int_eq(conf_parse_strv("a b,c", &l), 0);
        assert_strv(l, STRV("a b", "c"));
        conf_strv_free(l);

        l = (char **) 0x1;
        ck_assert_int_eq(conf_parse_strv("a,,b", &l), -EINVAL);
        ck_assert_int_eq(conf_parse_strv(",", &l), -EINVAL);
        ck_assert_int_eq(conf_parse_strv("a,", &l), -EINVAL);
        ck_assert_int_eq(conf_parse_strv("[,a]", &l), -EINVAL);
        ck_assert_ptr_eq(l, (char **) 0x1);
}
END_TEST

static void assert_uuid(const char *s) {
        ck_assert_uint_eq(strlen(s), 36);
        for (size_t i = 0; i < 36; i++) {
                if (i == 8 || i == 13 || i == 18 || i == 23)
                        ck_assert_int_eq(s[i], '-');
                else
                        ck_assert_msg((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'),
                                      "bad uuid %s", s);
        }
        ck_assert_int_eq(s[14], '4');
        ck_assert_ptr_nonnull(strchr("89ab", s[19]));
}

START_TEST(test_uuid) {
        _cleanup_free_ char *a = NULL, *b = NULL;

        ck_assert_int_eq(conf_generate_uuid(&a), 0);
        ck_assert_int_eq(conf_generate_uuid(&b), 0);
        assert_uuid(a);
        assert_uuid(b);
        ck_assert_str_ne(a, b);
}
END_TEST

START_TEST(test_default_id) {
        _cleanup_free_ char *id = NULL, *given = strdup("given");

        ck_assert_int_eq(unsetenv("KONN_TEST_ID"), 0);
        ck_assert_int_eq(conf_default_id(&id, "KONN_TEST_ID"), 0);
        assert_uuid(id);
        free(id);
        id = NULL;

        ck_assert_int_eq(setenv("KONN_TEST_ID", "", 1), 0); /* empty counts as unset */
        ck_assert_int_eq(conf_default_id(&id, "KONN_TEST_ID"), 0);
        assert_uuid(id);
        free(id);
        id = NULL;

        ck_assert_int_eq(setenv("KONN_TEST_ID", "from-env", 1), 0);
        ck_assert_int_eq(conf_default_id(&id, "KONN_TEST_ID"), 0);
        ck_assert_str_eq(id, "from-env");

        ck_assert_int_eq(conf_default_id(&given, "KONN_TEST_ID"), 0);
        ck_assert_str_eq(given, "given");
        ck_assert_int_eq(unsetenv("KONN_TEST_ID"), 0);
}
END_TEST

START_TEST(test_resolve_log_level) {
        ck_assert_int_eq(conf_resolve_log_level(-1, 0), LOG_INFO);
        ck_assert_int_eq(conf_resolve_log_level(-1, 3), LOG_INFO);
        ck_assert_int_eq(conf_resolve_log_level(-1, 4), LOG_INFO);
        ck_assert_int_eq(conf_resolve_log_level(-1, 5), LOG_DEBUG);
        ck_assert_int_eq(conf_resolve_log_level(-1, 10), LOG_DEBUG);
        ck_assert_int_eq(conf_resolve_log_level(LOG_ERR, 10), LOG_ERR);
        ck_assert_int_eq(conf_resolve_log_level(LOG_INFO, 10), LOG_INFO);
}
END_TEST

START_TEST(test_printable_ascii) {
        ck_assert(conf_is_printable_ascii("agent-1 x~"));
        ck_assert(!conf_is_printable_ascii(""));
        ck_assert(!conf_is_printable_ascii(NULL));
        ck_assert(!conf_is_printable_ascii("a\nb"));
        ck_assert(!conf_is_printable_ascii("a\x7f"));
        ck_assert(!conf_is_printable_ascii("caf\xc3\xa9"));
}
END_TEST

/* --- argv --- */

START_TEST(test_defaults_exact) {
        TestConfig c;

        test_defaults(&c);
        ck_assert_str_eq(c.name, "dflt");
        ck_assert(!c.flag);
        ck_assert_int_eq(c.port, 8091);
        ck_assert_uint_eq(c.timeout_usec, 10 * USEC_PER_SEC);
        assert_strv(c.list, STRV("a", "b"));
        ck_assert_int_eq(c.mode, 0);
        ck_assert_int_eq(c.level, -1);
        ck_assert_ptr_null(c.shortstr);
        ck_assert_int_eq(c.verbosity, 4);
        conf_free_values(test_table, &c);
        ck_assert_ptr_null(c.name);
        ck_assert_ptr_null(c.list);
        conf_free_values(test_table, &c); /* idempotent */
}
END_TEST

START_TEST(test_argv_forms) {
        TestConfig c;
        ConfArgs args;
        char *error;

        test_defaults(&c);
        ck_assert_int_eq(parse_argv(test_table, &c,
                                    ARGS("--name", "spaced", "--port=80", "-timeout=1m", "-mode",
                                         "http-connect", "--flag", "--log-level=debug", "-v=6", "--list",
                                         "[x,y]"),
                                    &args, &error),
                         0);
        ck_assert_str_eq(c.name, "spaced");
        ck_assert_int_eq(c.port, 80);
        ck_assert_uint_eq(c.timeout_usec, 60 * USEC_PER_SEC);
        ck_assert_int_eq(c.mode, 1);
        ck_assert(c.flag);
        ck_assert_int_eq(c.level, LOG_DEBUG);
        ck_assert_int_eq(c.verbosity, 6);
        assert_strv(c.list, STRV("x", "y"));
        ck_assert_int_eq(args.action, CONF_ACTION_RUN);
        ck_assert(!args.check_config);
        ck_assert_ptr_null(args.config_path);

        /* later wins; --flag=false; "--name=" empties; "--" ends options; '_' matches '-' */
        ck_assert_int_eq(parse_argv(test_table, &c,
                                    ARGS("--port=81", "--port", "82", "--flag=false",
                                         "--name=", "--log_level=err", "--"),
                                    &args, &error),
                         0);
        ck_assert_int_eq(c.port, 82);
        ck_assert(!c.flag);
        ck_assert_ptr_null(c.name);
        ck_assert_int_eq(c.level, LOG_ERR);
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--flag=1", "--flag=F"), &args, &error), 0);
        ck_assert(!c.flag);
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--flag=T"), &args, &error), 0);
        ck_assert(c.flag);
        /* a value may start with '-' when it is the next argument */
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--name", "-x"), &args, &error), 0);
        ck_assert_str_eq(c.name, "-x");
        conf_free_values(test_table, &c);
}
END_TEST

START_TEST(test_argv_lists) {
        TestConfig c;
        ConfArgs args;
        char *error;

        test_defaults(&c);
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--list=[]"), &args, &error), 0);
        assert_strv(c.list, STRV_EMPTY);
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--list="), &args, &error), 0);
        assert_strv(c.list, STRV_EMPTY);
        /* pflag StringSlice: the first occurrence replaces, later ones append */
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--list=x", "--list=y,z", "--list=[]"), &args,
                                    &error),
                         0);
        assert_strv(c.list, STRV("x", "y", "z"));
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--list=q"), &args, &error), 0);
        assert_strv(c.list, STRV("q"));
        conf_free_values(test_table, &c);
}
END_TEST

START_TEST(test_argv_errors) {
        assert_argv_error(ARGS("--foo"), -EINVAL, "unknown flag: --foo");
        assert_argv_error(ARGS("--foo=bar"), -EINVAL, "unknown flag: --foo");
        assert_argv_error(ARGS("-foo"), -EINVAL, "unknown flag: -foo");
        assert_argv_error(ARGS("--port=abc"), -EINVAL, "invalid value 'abc' for flag --port: not a number");
        assert_argv_error(ARGS("--port", "70000"), -ERANGE,
                          "flag --port: value 70000 out of range 0..65535");
        assert_argv_error(ARGS("--port=-1"), -ERANGE, "flag --port: value -1 out of range 0..65535");
        assert_argv_error(ARGS("--port=99999999999999999999"), -ERANGE,
                          "flag --port: value 99999999999999999999 out of range 0..65535");
        assert_argv_error(ARGS("--port"), -EINVAL, "flag needs an argument: --port");
        assert_argv_error(ARGS("-v"), -EINVAL, "flag needs an argument: -v");
        assert_argv_error(ARGS("--timeout=-1s"), -ERANGE,
                          "flag --timeout: value -1s out of range 0s..1h0m0s");
        assert_argv_error(ARGS("--timeout=1h0m1s"), -ERANGE,
                          "flag --timeout: value 1h0m1s out of range 0s..1h0m0s");
        assert_argv_error(
                ARGS("--timeout=1x"), -EINVAL,
                "invalid value '1x' for flag --timeout: not a duration (examples: 1h0m0s, 1.5s, 100ms)");
        assert_argv_error(
                ARGS("--timeout="), -EINVAL,
                "invalid value '' for flag --timeout: not a duration (examples: 1h0m0s, 1.5s, 100ms)");
        assert_argv_error(ARGS("--flag=yes"), -EINVAL, "invalid value 'yes' for flag --flag: not a boolean");
        assert_argv_error(ARGS("--flag", "false"), -EINVAL, "unexpected argument 'false'");
        assert_argv_error(ARGS("positional"), -EINVAL, "unexpected argument 'positional'");
        assert_argv_error(ARGS("-"), -EINVAL, "unexpected argument '-'");
        assert_argv_error(ARGS("--", "after"), -EINVAL, "unexpected argument 'after'");
        assert_argv_error(ARGS("---port=1"), -EINVAL, "bad flag syntax: ---port=1");
        assert_argv_error(ARGS("--=1"), -EINVAL, "bad flag syntax: --=1");
        assert_argv_error(ARGS("--mode=tcp"), -EINVAL,
                          "invalid value 'tcp' for flag --mode: must be one of: grpc, http-connect");
        assert_argv_error(
                ARGS("--log-level=loud"), -EINVAL,
                "invalid value 'loud' for flag --log-level: not a log level (emerg, alert, crit, err, "
                "warning, notice, info, debug or 0..7)");
        assert_argv_error(ARGS("--list=a,,b"), -EINVAL,
                          "invalid value 'a,,b' for flag --list: empty list element");
        assert_argv_error(ARGS("--short=abcd"), -ERANGE, "flag --short: length 4 out of range 0..3");
        assert_argv_error(ARGS("--ignored-int=11"), -ERANGE,
                          "flag --ignored-int: value 11 out of range 1..10");
        assert_argv_error(ARGS("--ignored-int=x"), -EINVAL,
                          "invalid value 'x' for flag --ignored-int: not a number");
        assert_argv_error(
                ARGS("--secret=x"), -EINVAL,
                "invalid value 'x' for flag --secret: not supported by konn (only the default value is "
                "accepted)");
        assert_argv_error(ARGS("--help=maybe"), -EINVAL,
                          "invalid value 'maybe' for flag --help: not a boolean");
        assert_argv_error(ARGS("--config"), -EINVAL, "flag needs an argument: --config");
        assert_argv_error(ARGS("--config="), -EINVAL, "flag --config: value must not be empty");
        assert_argv_error(ARGS("--bogus", "--help"), -EINVAL, "unknown flag: --bogus");
        assert_argv_error(ARGS("-v=-1"), -ERANGE, "flag --v: value -1 out of range 0..2147483647");
}
END_TEST

START_TEST(test_argv_values_kept_on_error) {
        TestConfig c;
        ConfArgs args;
        char *error;

        test_defaults(&c);
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--port=70000"), &args, &error), -ERANGE);
        ck_assert_int_eq(c.port, 8091);
        free(error);
        conf_free_values(test_table, &c);
}
END_TEST

START_TEST(test_argv_ignored_and_unsupported) {
        TestConfig c, before;
        ConfArgs args;
        char *error;

        test_defaults(&c);
        before = c;
        ck_assert_int_eq(parse_argv(test_table, &c,
                                    ARGS("--ignored-int=7", "--hidden-thing=x", "--secret=", "--logtostderr",
                                         "--log_dir=/x", "--log-file-max-size=0", "--vmodule=a=1",
                                         "--stderrthreshold=ERROR", "--one-output=true"),
                                    &args, &error),
                         0);
        ck_assert_mem_eq(&c, &before, sizeof(c)); /* nothing stored */
        conf_free_values(test_table, &c);
}
END_TEST

START_TEST(test_argv_special) {
        TestConfig c = {};
        ConfArgs args;
        char *error;

        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--help"), &args, &error), CONF_ACTION_HELP);
        ck_assert_int_eq(args.action, CONF_ACTION_HELP);
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("-h"), &args, &error), CONF_ACTION_HELP);
        /* pflag stops at --help: what follows is not looked at */
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--port=1", "--help", "--bogus"), &args, &error),
                         CONF_ACTION_HELP);
        ck_assert_int_eq(c.port, 1);
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--help=false"), &args, &error), CONF_ACTION_RUN);
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--version"), &args, &error), CONF_ACTION_VERSION);
        ck_assert_int_eq(args.action, CONF_ACTION_VERSION);

        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--check-config", "--config", "/a", "--config=/b"),
                                    &args, &error),
                         0);
        ck_assert(args.check_config);
        ck_assert_str_eq(args.config_path, "/b");
        conf_args_done(&args);
        ck_assert_ptr_null(args.config_path);
        ck_assert_int_eq(parse_argv(test_table, &c, ARGS("--check-config=false"), &args, &error), 0);
        ck_assert(!args.check_config);

        /* cfg NULL: validate only */
        ck_assert_int_eq(parse_argv(test_table, NULL, ARGS("--port=5", "--list=a", "--name=x"), &args,
                                    &error),
                         0);
        ck_assert_int_eq(parse_argv(test_table, NULL, ARGS("--port=x"), &args, &error), -EINVAL);
        ck_assert_str_eq(error, "invalid value 'x' for flag --port: not a number");
        free(error);
        conf_free_values(test_table, &c);
}
END_TEST

/* --- files --- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static char *make_tmpdir(void) {
        char *d = strdup("/tmp/test-conf-XXXXXX");

        ck_assert_ptr_nonnull(d);
        ck_assert_ptr_nonnull(mkdtemp(d));
        return d;
}

static void rm_rf(char *dir) {
        ck_assert_int_eq(nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
        free(dir);
}

static char *write_file(const char *dir, const char *name, const char *content) {
        char *path;
        FILE *f;

        ck_assert_int_ge(asprintf(&path, "%s/%s", dir, name), 0);
        f = fopen(path, "we");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_ge(fputs(content, f), 0);
        ck_assert_int_eq(fclose(f), 0);
        return path;
}

static char *make_subdir(const char *dir, const char *name) {
        char *path;

        ck_assert_int_ge(asprintf(&path, "%s/%s", dir, name), 0);
        ck_assert_int_eq(mkdir(path, 0755), 0);
        return path;
}

START_TEST(test_file_all_types) {
        char *dir = make_tmpdir();
        _cleanup_free_ char *path = NULL;
        char *error = NULL;
        TestConfig c;

        path = write_file(dir, "a.conf",
                          "# comment\n"
                          "name = \"from-file\";\n"
                          "flag = true;\n"
                          "port = 8443;\n"
                          "timeout = \"1m30s\";\n"
                          "list = [\"x\", \"y\"];\n"
                          "mode = \"http-connect\";\n"
                          "log-level = \"warning\";\n"
                          "log_file_max_size = 5000000000L; // ignored klog key, 64-bit, underscore form\n"
                          "v = 7;\n");
        test_defaults(&c);
        ck_assert_int_eq(conf_load_file(test_table, &c, path, &error), 0);
        ck_assert_ptr_null(error);
        ck_assert_str_eq(c.name, "from-file");
        ck_assert(c.flag);
        ck_assert_int_eq(c.port, 8443);
        ck_assert_uint_eq(c.timeout_usec, 90 * USEC_PER_SEC);
        assert_strv(c.list, STRV("x", "y"));
        ck_assert_int_eq(c.mode, 1);
        ck_assert_int_eq(c.level, LOG_WARNING);
        ck_assert_int_eq(c.verbosity, 7);
        conf_free_values(test_table, &c);

        /* a libconfig list works like an array; an empty array empties; "" empties a string */
        free(path);
        path = write_file(dir, "b.conf", "list = ( \"p\" );\nname = \"\";\n");
        test_defaults(&c);
        ck_assert_int_eq(conf_load_file(test_table, &c, path, &error), 0);
        assert_strv(c.list, STRV("p"));
        ck_assert_ptr_null(c.name);
        free(path);
        path = write_file(dir, "c.conf", "list = [];\n");
        ck_assert_int_eq(conf_load_file(test_table, &c, path, &error), 0);
        assert_strv(c.list, STRV_EMPTY);
        conf_free_values(test_table, &c);
        rm_rf(dir);
}
END_TEST

/* clang-format off */
static const struct {
        const char *content;
        int r;
        const char *message; /* after "<path>:" */
} file_errors[] = {
        { "port = 1;\nbogus = 2;\n", -EINVAL, "2: unknown key 'bogus'" },
        { "config = \"/x\";\n", -EINVAL, "1: unknown key 'config'" },
        { "port = \"80\";\n", -EINVAL, "1: key 'port': expected an integer, got a string" },
        { "port = 1.5;\n", -EINVAL, "1: key 'port': expected an integer, got a float" },
        { "name = 5;\n", -EINVAL, "1: key 'name': expected a string, got an integer" },
        { "name = { a = 1; };\n", -EINVAL, "1: key 'name': expected a string, got a group" },
        { "flag = \"true\";\n", -EINVAL, "1: key 'flag': expected a boolean, got a string" },
        { "timeout = 10;\n", -EINVAL,
          "1: key 'timeout': expected a string with a duration such as \"10s\", got an integer" },
        { "list = \"a,b\";\n", -EINVAL,
          "1: key 'list': expected an array or list of strings, got a string" },
        { "list = [1, 2];\n", -EINVAL, "1: key 'list': list elements must be strings" },
        { "list = (\"a\", 2);\n", -EINVAL, "1: key 'list': list elements must be strings" },
        { "list = [\"a\", \"\"];\n", -EINVAL, "1: key 'list': empty list element" },
        { "\n\nport = 70000;\n", -ERANGE, "3: key 'port': value 70000 out of range 0..65535" },
        { "port = -1;\n", -ERANGE, "1: key 'port': value -1 out of range 0..65535" },
        { "port = 5000000000L;\n", -ERANGE, "1: key 'port': value 5000000000 out of range 0..65535" },
        { "timeout = \"2h\";\n", -ERANGE, "1: key 'timeout': value 2h out of range 0s..1h0m0s" },
        { "timeout = \"1x\";\n", -EINVAL,
          "1: key 'timeout': invalid value '1x': not a duration (examples: 1h0m0s, 1.5s, 100ms)" },
        { "mode = \"tcp\";\n", -EINVAL,
          "1: key 'mode': invalid value 'tcp': must be one of: grpc, http-connect" },
        { "short = \"abcd\";\n", -ERANGE, "1: key 'short': length 4 out of range 0..3" },
        { "ignored-int = 0;\n", -ERANGE, "1: key 'ignored-int': value 0 out of range 1..10" },
        { "secret = \"x\";\n", -EINVAL,
          "1: key 'secret': invalid value 'x': not supported by konn (only the default value is accepted)" },
        { "port = 1;\nname = ;\n", -EINVAL, "2: syntax error" },
        { "port = 1;\nport = 2;\n", -EINVAL, "2: duplicate setting name" },
        { "name = \"unterminated\n", -EINVAL, "2: syntax error" }, /* libconfig reports end of input */
        /* libconfig 1.5 would silently wrap these to 32 bits */
        { "port = 4294975386;\n", -ERANGE,
          "1: integer 4294975386 out of range (64-bit integers need an L suffix)" },
        { "\nport = -2147483649;\n", -ERANGE,
          "2: integer -2147483649 out of range (64-bit integers need an L suffix)" },
        { "port = 0x80000000;\n", -ERANGE,
          "1: integer 0x80000000 out of range (64-bit integers need an L suffix)" },
        { "port = 99999999999999999999L;\n", -ERANGE,
          "1: integer 99999999999999999999L out of range (64-bit integers need an L suffix)" },
        { "@include \"/etc/passwd\"\n", -EINVAL, "1: @include is not supported, use drop-ins in " },
};
/* clang-format on */

START_TEST(test_file_errors) {
        char *dir = make_tmpdir();
        _cleanup_free_ char *path = NULL, *expected = NULL;
        char *error = NULL;
        TestConfig c;

        path = write_file(dir, "e.conf", file_errors[_i].content);
        if (strstr(file_errors[_i].message, "@include"))
                ck_assert_int_ge(asprintf(&expected, "%s:%s%s.d/", path, file_errors[_i].message, path), 0);
        else
                ck_assert_int_ge(asprintf(&expected, "%s:%s", path, file_errors[_i].message), 0);
        test_defaults(&c);
        ck_assert_int_eq(conf_load_file(test_table, &c, path, &error), file_errors[_i].r);
        ck_assert_str_eq(error, expected);
        free(error);
        conf_free_values(test_table, &c);
        rm_rf(dir);
}
END_TEST

START_TEST(test_file_int_boundaries) {
        char *dir = make_tmpdir();
        _cleanup_free_ char *path = NULL;
        char *error = NULL;
        TestConfig c;

        /* the largest plain literals libconfig keeps intact, and digits inside strings and comments */
        path = write_file(dir, "ok.conf",
                          "v = 2147483647;\n"
                          "name = \"99999999999\"; # 99999999999\n"
                          "/* 99999999999 */ port = 0x7fff;\n"
                          "log-file-max-size = 9223372036854775807L;\n");
        test_defaults(&c);
        ck_assert_int_eq(conf_load_file(test_table, &c, path, &error), 0);
        ck_assert_int_eq(c.verbosity, 2147483647);
        ck_assert_str_eq(c.name, "99999999999");
        ck_assert_int_eq(c.port, 0x7fff);
        conf_free_values(test_table, &c);
        rm_rf(dir);
}
END_TEST

START_TEST(test_file_io_errors) {
        char *dir = make_tmpdir();
        _cleanup_free_ char *missing = NULL, *expected = NULL, *sub = NULL, *big = NULL;
        char *error = NULL;
        TestConfig c = {};
        FILE *f;

        ck_assert_int_ge(asprintf(&missing, "%s/missing.conf", dir), 0);
        ck_assert_int_eq(conf_load_file(test_table, &c, missing, &error), -ENOENT);
        ck_assert_int_ge(asprintf(&expected, "%s: No such file or directory", missing), 0);
        ck_assert_str_eq(error, expected);
        free(error);
        error = NULL;
        free(expected);
        expected = NULL;

        sub = make_subdir(dir, "sub.conf");
        ck_assert_int_eq(conf_load_file(test_table, &c, sub, &error), -EINVAL);
        ck_assert_int_ge(asprintf(&expected, "%s: not a regular file", sub), 0);
        ck_assert_str_eq(error, expected);
        free(error);
        error = NULL;
        free(expected);
        expected = NULL;

        ck_assert_int_ge(asprintf(&big, "%s/big.conf", dir), 0);
        f = fopen(big, "we");
        ck_assert_ptr_nonnull(f);
        for (int i = 0; i < 1024 * 1024 / 16 + 1; i++)
                fputs("# padding .....\n", f);
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_int_eq(conf_load_file(test_table, &c, big, &error), -EFBIG);
        ck_assert_int_ge(asprintf(&expected, "%s: larger than 1048576 bytes", big), 0);
        ck_assert_str_eq(error, expected);
        free(error);
        error = NULL;
        free(expected);
        expected = NULL;

        free(big);
        big = write_file(dir, "nul.conf", "port = 1;\n");
        f = fopen(big, "ae");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(fputc('\0', f), 0);
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_int_eq(conf_load_file(test_table, &c, big, &error), -EINVAL);
        ck_assert_int_ge(asprintf(&expected, "%s: contains a NUL byte", big), 0);
        ck_assert_str_eq(error, expected);
        free(error);
        rm_rf(dir);
}
END_TEST

/* conf_load() with argv built at run time. */
static int load(const char *default_path, const char *const *argv, TestConfig *c, ConfArgs *args,
                char **error) {
        *c = (TestConfig){};
        *error = NULL;
        *args = (ConfArgs){};
        return conf_load(test_table, c, default_path, count_args(argv), (char **) argv, args, error);
}

START_TEST(test_precedence) {
        char *dir = make_tmpdir();
        _cleanup_free_ char *main_path = NULL, *dropins = NULL;
        char *error, *p;
        TestConfig c;
        ConfArgs args;

        main_path = write_file(dir, "main.conf", "port = 1;\nname = \"main\";\nlist = [\"m\"];\nv = 1;\n");
        dropins = make_subdir(dir, "main.conf.d");
        /* strcmp order is "10-a" < "20-b" < "9-z"; created in an order that is neither that nor its
         * reverse, so readdir() order cannot pass for it */
        free(write_file(dropins, "20-b.conf", "port = 3;\ntimeout = \"2s\";\nmode = \"http-connect\";\n"));
        free(write_file(dropins, "9-z.conf", "v = 9;\nport = 9;\n"));
        free(write_file(dropins, "10-a.conf",
                        "port = 2;\nname = \"a\";\ntimeout = \"1s\";\nflag = true;\nmode = \"grpc\";\n"));
        /* not drop-ins: hidden, wrong suffix, a directory */
        free(write_file(dropins, ".hidden.conf", "bogus = 1;\n"));
        free(write_file(dropins, "notes.txt", "bogus = 1;\n"));
        free(write_file(dropins, "conf", "bogus = 1;\n"));
        p = make_subdir(dropins, "dir.conf");
        free(p);

        ck_assert_int_eq(load(main_path, ARGS("--timeout=5s", "--list=z"), &c, &args, &error), 0);
        ck_assert_ptr_null(error);
        ck_assert_int_eq(c.port, 9);                         /* 9-z over 20-b over 10-a over main */
        ck_assert_int_eq(c.mode, 1);                         /* 20-b over 10-a */
        ck_assert_str_eq(c.name, "a");                       /* 10-a.conf over main */
        ck_assert_uint_eq(c.timeout_usec, 5 * USEC_PER_SEC); /* flag over 20-b.conf */
        ck_assert(c.flag);                                   /* 10-a.conf over default */
        assert_strv(c.list, STRV("z"));                      /* flag replaces the file's list */
        ck_assert_int_eq(c.verbosity, 9);                    /* 9-z.conf over main */
        ck_assert_int_eq(args.action, CONF_ACTION_RUN);
        ck_assert_ptr_null(args.config_path);
        conf_free_values(test_table, &c);

        /* --config selects the main file; its drop-in directory follows it */
        p = write_file(dir, "other.conf", "port = 7;\n");
        ck_assert_int_eq(load(main_path, ARGS("--config", p), &c, &args, &error), 0);
        ck_assert_int_eq(c.port, 7);
        ck_assert_str_eq(c.name, "dflt");
        ck_assert_str_eq(args.config_path, p);
        conf_args_done(&args);
        conf_free_values(test_table, &c);
        free(p);

        /* an error in a drop-in names the drop-in */
        p = write_file(dropins, "30-bad.conf", "\nport = \"x\";\n");
        ck_assert_int_eq(load(main_path, ARGS("--port=9"), &c, &args, &error), -EINVAL);
        {
                _cleanup_free_ char *expected = NULL;

                ck_assert_int_ge(asprintf(&expected, "%s:2: key 'port': expected an integer, got a string",
                                          p),
                                 0);
                ck_assert_str_eq(error, expected);
        }
        free(error);
        conf_free_values(test_table, &c);
        free(p);
        rm_rf(dir);
}
END_TEST

/* Drop-ins apply in strcmp() order whatever order readdir() returns: with eight names created in a
 * scrambled order, the strcmp()-last one must win and the strcmp()-first broken one must be reported. */
START_TEST(test_dropin_order) {
        static const struct {
                const char *name;
                const char *content;
        } files[] = {
                { "3.conf", "port = 3;\n" },  { "a.conf", "port = 8;\n" }, { "10.conf", "port = 2;\n" },
                { "_.conf", "port = 7;\n" },  { "1.conf", "port = 1;\n" }, { "B.conf", "port = 6;\n" },
                { "20.conf", "port = 5;\n" }, { "2.conf", "port = 4;\n" },
        };
        char *dir = make_tmpdir();
        _cleanup_free_ char *main_path = NULL, *dropins = NULL, *expected = NULL;
        char *error;
        TestConfig c;
        ConfArgs args;

        ck_assert_int_ge(asprintf(&main_path, "%s/m.conf", dir), 0);
        dropins = make_subdir(dir, "m.conf.d");
        for (size_t i = 0; i < ELEMENTSOF(files); i++)
                free(write_file(dropins, files[i].name, files[i].content));
        ck_assert_int_eq(load(main_path, ARGS("--flag"), &c, &args, &error), 0);
        ck_assert_int_eq(c.port, 8);
        conf_free_values(test_table, &c);

        free(write_file(dropins, "B.conf", "bogus = 1;\n"));
        free(write_file(dropins, "20.conf", "port = \"x\";\n"));
        free(write_file(dropins, "a.conf", "bogus = 1;\n"));
        ck_assert_int_eq(load(main_path, ARGS("--flag"), &c, &args, &error), -EINVAL);
        ck_assert_int_ge(asprintf(&expected, "%s/20.conf:1: key 'port': expected an integer, got a string",
                                  dropins),
                         0);
        ck_assert_str_eq(error, expected);
        free(error);
        conf_free_values(test_table, &c);
        rm_rf(dir);
}
END_TEST

START_TEST(test_missing_main_file) {
        char *dir = make_tmpdir();
        _cleanup_free_ char *main_path = NULL, *dropins = NULL, *expected = NULL;
        char *error;
        TestConfig c;
        ConfArgs args;

        ck_assert_int_ge(asprintf(&main_path, "%s/absent.conf", dir), 0);
        /* the default path may be missing; its drop-ins are still read */
        ck_assert_int_eq(load(main_path, ARGS("--flag"), &c, &args, &error), 0);
        ck_assert_int_eq(c.port, 8091);
        ck_assert(c.flag);
        conf_free_values(test_table, &c);
        dropins = make_subdir(dir, "absent.conf.d");
        free(write_file(dropins, "a.conf", "port = 5;\n"));
        ck_assert_int_eq(load(main_path, ARGS("--flag"), &c, &args, &error), 0);
        ck_assert_int_eq(c.port, 5);
        conf_free_values(test_table, &c);

        /* ... but not when given with --config */
        ck_assert_int_eq(load(NULL, ARGS("--config", main_path), &c, &args, &error), -ENOENT);
        ck_assert_int_ge(asprintf(&expected, "%s: No such file or directory", main_path), 0);
        ck_assert_str_eq(error, expected);
        free(error);
        conf_free_values(test_table, &c);

        /* no default path: defaults and flags only */
        ck_assert_int_eq(load(NULL, ARGS("--port=4"), &c, &args, &error), 0);
        ck_assert_int_eq(c.port, 4);
        conf_free_values(test_table, &c);
        rm_rf(dir);
}
END_TEST

START_TEST(test_load_actions_and_flag_errors_first) {
        char *dir = make_tmpdir();
        _cleanup_free_ char *bad = NULL;
        TestConfig c, zero = {};
        char *error;
        ConfArgs args;

        bad = write_file(dir, "bad.conf", "this is not libconfig");
        /* --help / --version: no file is read and cfg stays untouched */
        ck_assert_int_eq(load(bad, ARGS("--help"), &c, &args, &error), CONF_ACTION_HELP);
        ck_assert_mem_eq(&c, &zero, sizeof(c));
        ck_assert_int_eq(load(bad, ARGS("--version"), &c, &args, &error), CONF_ACTION_VERSION);
        ck_assert_int_eq(args.action, CONF_ACTION_VERSION);
        ck_assert_mem_eq(&c, &zero, sizeof(c));
        /* a flag error is reported before the broken file is looked at */
        ck_assert_int_eq(load(bad, ARGS("--nope"), &c, &args, &error), -EINVAL);
        ck_assert_str_eq(error, "unknown flag: --nope");
        free(error);
        ck_assert_int_eq(load(bad, ARGS("--check-config"), &c, &args, &error), -EINVAL);
        ck_assert_ptr_nonnull(strstr(error, "bad.conf:1: syntax error"));
        free(error);
        conf_free_values(test_table, &c);
        rm_rf(dir);
}
END_TEST

/* --- server --- */

static char *empty_config(char **ret_dir) {
        char *dir = make_tmpdir();

        *ret_dir = dir;
        return write_file(dir, "empty.conf", "");
}

/* server_config_load() with --config=<empty file> prepended, so /etc is never read. */
static int server_load(const char *const *extra, ServerConfig *c, char **error) {
        _cleanup_free_ char *conf = NULL, *config_flag = NULL;
        _cleanup_free_ const char **argv = NULL;
        char *dir;
        ConfArgs args = {};
        int n = count_args(extra), r;

        conf = empty_config(&dir);
        ck_assert_int_ge(asprintf(&config_flag, "--config=%s", conf), 0);
        argv = calloc((size_t) n + 2, sizeof(char *));
        ck_assert_ptr_nonnull(argv);
        argv[0] = "konn-server";
        argv[1] = config_flag;
        for (int i = 1; i < n; i++)
                argv[i + 1] = extra[i];
        *error = NULL;
        r = server_config_load(c, n + 1, (char **) argv, &args, error);
        if (r >= 0) {
                ck_assert_str_eq(args.config_path, conf);
                ck_assert_ptr_null(*error);
        } else
                ck_assert_ptr_nonnull(*error);
        conf_args_done(&args);
        rm_rf(dir);
        return r;
}

/* clang-format off */
#define UDS_OK "--uds-name=/run/konn/konn.sock", "--server-port=0", "--cluster-cert=/c.pem", \
               "--cluster-key=/k.pem", "--cluster-ca-cert=/ca.pem"
/* clang-format on */

START_TEST(test_server_defaults) {
        ServerConfig c;
        char *error;

        ck_assert_int_eq(unsetenv("PROXY_SERVER_ID"), 0);
        ck_assert_int_eq(server_load(ARGS(UDS_OK), &c, &error), 0);
        ck_assert_int_eq(c.mode, SERVER_MODE_GRPC);
        ck_assert_str_eq(c.uds_name, "/run/konn/konn.sock");
        ck_assert(c.delete_existing_uds_file);
        ck_assert_int_eq(c.server_port, 0);
        ck_assert_ptr_null(c.server_bind_address);
        ck_assert_int_eq(c.agent_port, 8091);
        ck_assert_ptr_null(c.agent_bind_address);
        ck_assert_str_eq(c.cluster_cert, "/c.pem");
        ck_assert_str_eq(c.cluster_key, "/k.pem");
        ck_assert_str_eq(c.cluster_ca_cert, "/ca.pem");
        assert_uuid(c.server_id);
        ck_assert_int_eq(c.server_count, 1);
        ck_assert_int_eq(c.health_port, 8092);
        ck_assert_ptr_null(c.health_bind_address);
        ck_assert_int_eq(c.admin_port, 8095);
        ck_assert_str_eq(c.admin_bind_address, "127.0.0.1");
        ck_assert_uint_eq(c.keepalive_time_usec, 30 * USEC_PER_SEC);
        ck_assert_uint_eq(c.frontend_keepalive_time_usec, 3600 * USEC_PER_SEC);
        assert_strv(c.proxy_strategies, STRV("default"));
        ck_assert_ptr_null(c.cipher_suites);
        ck_assert_ptr_null(c.tls_min_version);
        ck_assert_uint_eq(c.graceful_shutdown_timeout_usec, 0);
        ck_assert_uint_eq(c.backend_dial_timeout_usec, 15 * USEC_PER_SEC);
        ck_assert(!c.insecure_allow_unauthenticated_agents);
        ck_assert_uint_eq(c.handshake_timeout_usec, 10 * USEC_PER_SEC);
        ck_assert_uint_eq(c.header_timeout_usec, 10 * USEC_PER_SEC);
        ck_assert_int_eq(c.max_tunnels_per_agent, 100000);
        ck_assert_int_eq(c.verbosity, 4);
        ck_assert_int_eq(c.log_level, LOG_INFO);
        ck_assert_int_eq(c.log_target, LOG_TARGET_AUTO);
        server_config_done(&c);
}
END_TEST

START_TEST(test_server_upstream_flags) {
        ServerConfig c;
        char *error;

        /* every upstream proxy-server flag (protocol.md §8.1) and klog flag, as a manifest passes them */
        ck_assert_int_eq(server_load(ARGS("--mode=http-connect", "--uds-name=",
                                          "--delete-existing-uds-file=false", "--server-port=8090",
                                          "--server-bind-address=127.0.0.1", "--server-cert=/s.crt",
                                          "--server-key=/s.key", "--server-ca-cert=/s-ca.crt",
                                          "--agent-port=8091", "--agent-bind-address=127.0.0.1",
                                          "--cluster-cert=/c.crt", "--cluster-key=/c.key",
                                          "--cluster-ca-cert=/c-ca.crt", "--health-port=8092",
                                          "--health-bind-address=", "--admin-port=8095",
                                          "--admin-bind-address=127.0.0.1", "--keepalive-time=1h0m0s",
                                          "--frontend-keepalive-time=30m", "--enable-profiling=false",
                                          "--enable-contention-profiling=false", "--server-id=srv-1",
                                          "--server-count=3", "--agent-namespace=",
                                          "--agent-service-account=", "--authentication-audience=",
                                          "--kubeconfig=", "--kubeconfig-qps=0", "--kubeconfig-burst=0",
                                          "--kube-api-content-type=application/vnd.kubernetes.protobuf",
                                          "--proxy-strategies=destHost,default", "--cipher-suites=[]",
                                          "--tls-min-version=VersionTLS13", "--xfr-channel-size=10",
                                          "--frontend-write-channel-size=10",
                                          "--enable-lease-controller=false", "--lease-namespace=kube-system",
                                          "--lease-label=k8s-app=konnectivity-server",
                                          "--graceful-shutdown-timeout=15s", "--backend-dial-timeout=0s",
                                          "--warn-on-channel-limit=true", "--v=4",
                                          "--vmodule=", "--logtostderr=true", "--alsologtostderr=false",
                                          "--alsologtostderrthreshold=", "--stderrthreshold=2",
                                          "--legacy-stderr-threshold-behavior=true", "--log-dir=",
                                          "--log-file=", "--log-file-max-size=0", "--add-dir-header=false",
                                          "--skip-headers=false", "--skip-log-headers=false",
                                          "--one-output=false", "--log-backtrace-at=:0"),
                                     &c, &error),
                         0);
        ck_assert_int_eq(c.mode, SERVER_MODE_HTTP_CONNECT);
        ck_assert_ptr_null(c.uds_name);
        ck_assert(!c.delete_existing_uds_file);
        ck_assert_int_eq(c.server_port, 8090);
        ck_assert_str_eq(c.server_bind_address, "127.0.0.1");
        ck_assert_str_eq(c.server_cert, "/s.crt");
        ck_assert_str_eq(c.server_key, "/s.key");
        ck_assert_str_eq(c.server_ca_cert, "/s-ca.crt");
        ck_assert_str_eq(c.server_id, "srv-1");
        ck_assert_int_eq(c.server_count, 3);
        ck_assert_uint_eq(c.frontend_keepalive_time_usec, 1800 * USEC_PER_SEC);
        assert_strv(c.proxy_strategies, STRV("destHost", "default"));
        ck_assert_str_eq(c.tls_min_version, "VersionTLS13");
        ck_assert_uint_eq(c.graceful_shutdown_timeout_usec, 15 * USEC_PER_SEC);
        ck_assert_int_eq(c.log_level, LOG_INFO);
        server_config_done(&c);
}
END_TEST

START_TEST(test_server_id_env) {
        ServerConfig c;
        char *error;

        ck_assert_int_eq(setenv("PROXY_SERVER_ID", "env-server", 1), 0);
        ck_assert_int_eq(server_load(ARGS(UDS_OK), &c, &error), 0);
        ck_assert_str_eq(c.server_id, "env-server");
        server_config_done(&c);
        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--server-id=flag-server"), &c, &error), 0);
        ck_assert_str_eq(c.server_id, "flag-server");
        server_config_done(&c);
        ck_assert_int_eq(unsetenv("PROXY_SERVER_ID"), 0);
}
END_TEST

START_TEST(test_server_log_level) {
        ServerConfig c;
        char *error;

        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--v=5"), &c, &error), 0);
        ck_assert_int_eq(c.log_level, LOG_DEBUG);
        server_config_done(&c);
        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--v=3"), &c, &error), 0);
        ck_assert_int_eq(c.log_level, LOG_INFO);
        server_config_done(&c);
        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--v=9", "--log-level=notice"), &c, &error), 0);
        ck_assert_int_eq(c.log_level, LOG_NOTICE);
        server_config_done(&c);
        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--log-level=7", "--log-target=stderr-fields"), &c,
                                     &error),
                         0);
        ck_assert_int_eq(c.log_level, LOG_DEBUG);
        ck_assert_int_eq(c.log_target, LOG_TARGET_STDERR_FIELDS);
        server_config_done(&c);
}
END_TEST

/* Valid TCP-frontend config from defaults, for server_config_validate() mutations. */
static void server_valid(ServerConfig *c) {
        *c = (ServerConfig){};
        ck_assert_int_eq(conf_set_defaults(server_config_table, c), 0);
        c->server_cert = strdup("/s.crt");
        c->server_key = strdup("/s.key");
        c->server_ca_cert = strdup("/s-ca.crt");
        c->cluster_cert = strdup("/c.crt");
        c->cluster_key = strdup("/c.key");
        c->cluster_ca_cert = strdup("/c-ca.crt");
        c->server_id = strdup("srv");
        c->log_level = LOG_INFO;
}

static void set_str(char **p, const char *v) {
        free(*p);
        *p = v ? strdup(v) : NULL;
}

/* clang-format off */
enum { SV_UDS_PORT, SV_UDS_CERT, SV_UDS_KEY, SV_UDS_CA, SV_TCP_CERT, SV_TCP_KEY, SV_TCP_CA, SV_TCP_PORT_LOW,
       SV_TCP_PORT_HIGH, SV_CLUSTER_CERT, SV_CLUSTER_KEY, SV_CLUSTER_CA, SV_AGENT_PORT, SV_HEALTH_PORT,
       SV_ADMIN_PORT, SV_SERVER_COUNT, SV_STRATEGIES_EMPTY, SV_STRATEGY_BAD, SV_TLS10, SV_TLS_BAD,
       SV_ID_EMPTY, SV_ID_CTRL, SV_MODE, SV_LOG_TARGET, SV_LOG_LEVEL, _SV_MAX };

static const char *const server_errors[_SV_MAX] = {
        [SV_UDS_PORT] = "--server-port must be 0 when --uds-name is set (got 8090)",
        [SV_UDS_CERT] = "--server-cert must not be set when --uds-name is set",
        [SV_UDS_KEY] = "--server-key must not be set when --uds-name is set",
        [SV_UDS_CA] = "--server-ca-cert must not be set when --uds-name is set",
        [SV_TCP_CERT] = "--server-cert is required when --uds-name is not set",
        [SV_TCP_KEY] = "--server-key is required when --uds-name is not set",
        [SV_TCP_CA] = "--server-ca-cert is required when --uds-name is not set",
        [SV_TCP_PORT_LOW] = "--server-port 1023 out of range 1024..49151",
        [SV_TCP_PORT_HIGH] = "--server-port 49152 out of range 1024..49151",
        [SV_CLUSTER_CERT] = "--cluster-cert is required",
        [SV_CLUSTER_KEY] = "--cluster-key is required",
        [SV_CLUSTER_CA] = "--cluster-ca-cert is required unless token authentication (--agent-namespace) or "
                          "--insecure-allow-unauthenticated-agents is set",
        [SV_AGENT_PORT] = "--agent-port 0 out of range 1024..49151",
        [SV_HEALTH_PORT] = "--health-port 80 out of range 1024..49151 (0 disables it)",
        [SV_ADMIN_PORT] = "--admin-port 65535 out of range 1024..49151 (0 disables it)",
        [SV_SERVER_COUNT] = "--server-count must be at least 1",
        [SV_STRATEGIES_EMPTY] = "--proxy-strategies must not be empty",
        [SV_STRATEGY_BAD] = "--proxy-strategies: unknown strategy 'desthost' (expected default, destHost or "
                            "defaultRoute)",
        [SV_TLS10] = "--tls-min-version=VersionTLS10 is not supported: konn requires TLS 1.2 or newer",
        [SV_TLS_BAD] = "--tls-min-version: unknown version 'TLS1.3' (expected VersionTLS12 or VersionTLS13)",
        [SV_ID_EMPTY] = "--server-id must be a non-empty string of printable ASCII characters",
        [SV_ID_CTRL] = "--server-id must be a non-empty string of printable ASCII characters",
        [SV_MODE] = "--mode must be 'grpc' or 'http-connect'",
        [SV_LOG_TARGET] = "--log-target must be auto, journal, console, logfmt, stderr or stderr-fields",
        [SV_LOG_LEVEL] = "--log-level must be a syslog level",
};
/* clang-format on */

START_TEST(test_server_validate) {
        ServerConfig c;
        char *error = NULL;

        server_valid(&c);
        ck_assert_int_eq(server_config_validate(&c, &error), 0);
        ck_assert_ptr_null(error);

        switch (_i) {
        case SV_UDS_PORT:
                set_str(&c.uds_name, "/run/k.sock");
                break;
        case SV_UDS_CERT:
        case SV_UDS_KEY:
        case SV_UDS_CA:
                set_str(&c.uds_name, "/run/k.sock");
                c.server_port = 0;
                if (_i != SV_UDS_CERT)
                        set_str(&c.server_cert, NULL);
                if (_i == SV_UDS_CA)
                        set_str(&c.server_key, NULL);
                break;
        case SV_TCP_CERT:
                set_str(&c.server_cert, NULL);
                break;
        case SV_TCP_KEY:
                set_str(&c.server_key, NULL);
                break;
        case SV_TCP_CA:
                set_str(&c.server_ca_cert, NULL);
                break;
        case SV_TCP_PORT_LOW:
                c.server_port = 1023;
                break;
        case SV_TCP_PORT_HIGH:
                c.server_port = 49152;
                break;
        case SV_CLUSTER_CERT:
                set_str(&c.cluster_cert, NULL);
                break;
        case SV_CLUSTER_KEY:
                set_str(&c.cluster_key, NULL);
                break;
        case SV_CLUSTER_CA:
                set_str(&c.cluster_ca_cert, NULL);
                break;
        case SV_AGENT_PORT:
                c.agent_port = 0;
                break;
        case SV_HEALTH_PORT:
                c.health_port = 80;
                break;
        case SV_ADMIN_PORT:
                c.admin_port = 65535;
                break;
        case SV_SERVER_COUNT:
                c.server_count = 0;
                break;
        case SV_STRATEGIES_EMPTY:
                conf_strv_free(c.proxy_strategies);
                c.proxy_strategies = NULL;
                break;
        case SV_STRATEGY_BAD:
                conf_strv_free(c.proxy_strategies);
                ck_assert_int_eq(conf_parse_strv("default,desthost", &c.proxy_strategies), 0);
                break;
        case SV_TLS10:
                set_str(&c.tls_min_version, "VersionTLS10");
                break;
        case SV_TLS_BAD:
                set_str(&c.tls_min_version, "TLS1.3");
                break;
        case SV_ID_EMPTY:
                set_str(&c.server_id, NULL);
                break;
        case SV_ID_CTRL:
                set_str(&c.server_id, "a\r\nb");
                break;
        case SV_MODE:
                c.mode = _SERVER_MODE_MAX;
                break;
        case SV_LOG_TARGET:
                c.log_target = _LOG_TARGET_MAX;
                break;
        case SV_LOG_LEVEL:
                c.log_level = -1;
                break;
        }
        ck_assert_int_eq(server_config_validate(&c, &error), -EINVAL);
        ck_assert_str_eq(error, server_errors[_i]);
        free(error);
        server_config_done(&c);
}
END_TEST

START_TEST(test_server_validate_allowed) {
        ServerConfig c;
        char *error = NULL;

        /* UDS with port 0 and no frontend certs; unauthenticated agents only when asked for */
        server_valid(&c);
        set_str(&c.uds_name, "/run/k.sock");
        c.server_port = 0;
        set_str(&c.server_cert, NULL);
        set_str(&c.server_key, NULL);
        set_str(&c.server_ca_cert, NULL);
        set_str(&c.cluster_ca_cert, NULL);
        c.insecure_allow_unauthenticated_agents = true;
        c.health_port = 0;
        c.admin_port = 0;
        c.agent_port = 49151;
        set_str(&c.tls_min_version, "VersionTLS12");
        ck_assert_int_eq(server_config_validate(&c, &error), 0);
        ck_assert_ptr_null(error);
        server_config_done(&c);

        server_valid(&c);
        c.server_port = 1024;
        c.agent_port = 1025;
        c.health_port = 49151;
        conf_strv_free(c.proxy_strategies);
        ck_assert_int_eq(conf_parse_strv("defaultRoute,destHost,default", &c.proxy_strategies), 0);
        ck_assert_int_eq(server_config_validate(&c, &error), 0);
        server_config_done(&c);
}
END_TEST

START_TEST(test_server_load_errors) {
        ServerConfig c, sentinel;
        char *error;

        memset(&sentinel, 0xaa, sizeof(sentinel));
        c = sentinel;
        /* validation runs inside load; *ret stays untouched on failure */
        ck_assert_int_eq(server_load(ARGS("--uds-name=/run/k.sock", "--cluster-cert=/c", "--cluster-key=/k",
                                          "--cluster-ca-cert=/ca"),
                                     &c, &error),
                         -EINVAL);
        ck_assert_str_eq(error, "--server-port must be 0 when --uds-name is set (got 8090)");
        ck_assert_mem_eq(&c, &sentinel, sizeof(c));
        free(error);
        /* token authentication: all three flags or none, never with --cluster-ca-cert (§8.1) */
        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--agent-namespace=kube-system"), &c, &error), -EINVAL);
        ck_assert_str_eq(error, "--agent-namespace, --agent-service-account and --authentication-audience must be "
                                "set together (token authentication)");
        free(error);
        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--agent-service-account=konn", "--authentication-audience=a"),
                                     &c, &error),
                         -EINVAL);
        ck_assert_str_eq(error, "--agent-namespace, --agent-service-account and --authentication-audience must be "
                                "set together (token authentication)");
        free(error);
        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--agent-namespace=kube-system", "--agent-service-account=konn",
                                          "--authentication-audience=a"),
                                     &c, &error),
                         -EINVAL);
        ck_assert_str_eq(error, "--cluster-ca-cert cannot be used with token authentication (--agent-namespace)");
        free(error);
        ck_assert_int_eq(server_load(ARGS("--uds-name=/run/k.sock", "--server-port=0", "--cluster-cert=/c",
                                          "--cluster-key=/k", "--agent-namespace=kube-system",
                                          "--agent-service-account=konn", "--authentication-audience=a",
                                          "--kubeconfig=/nonexistent/kubeconfig"),
                                     &c, &error),
                         -ENOENT);
        ck_assert_str_eq(error, "kubeconfig /nonexistent/kubeconfig: cannot read: No such file or directory");
        free(error);
        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--enable-lease-controller", "--lease-label=a b"), &c, &error),
                         -EINVAL);
        ck_assert_str_eq(error, "--lease-label: 'a b' is not a list of labels k=v,k=v");
        free(error);
        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--agent-port=70000"), &c, &error), -ERANGE);
        ck_assert_str_eq(error, "flag --agent-port: value 70000 out of range 0..65535");
        free(error);
        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--server-count=0"), &c, &error), -ERANGE);
        ck_assert_str_eq(error, "flag --server-count: value 0 out of range 1..2147483647");
        free(error);
        ck_assert_int_eq(server_load(ARGS(UDS_OK, "--handshake-timeout=0s"), &c, &error), -ERANGE);
        ck_assert_str_eq(error, "flag --handshake-timeout: value 0s out of range 1ms..1h0m0s");
        free(error);
        ck_assert_int_eq(server_load(ARGS(UDS_OK,
                                          "--uds-name=/123456789/123456789/123456789/123456789/"
                                          "123456789/123456789/123456789/123456789/123456789/123456789/"
                                          "1234567"),
                                     &c, &error),
                         -ERANGE);
        ck_assert_str_eq(error, "flag --uds-name: length 108 out of range 0..107");
        free(error);
        ck_assert_mem_eq(&c, &sentinel, sizeof(c));
}
END_TEST

START_TEST(test_server_help_action) {
        ServerConfig c, sentinel;
        ConfArgs args = {};
        char *error = NULL;

        memset(&sentinel, 0xaa, sizeof(sentinel));
        c = sentinel;
        ck_assert_int_eq(server_config_load(&c, 2,
                                            (char *[]){ (char *) "konn-server", (char *) "--help", NULL },
                                            &args, &error),
                         CONF_ACTION_HELP);
        ck_assert_int_eq(args.action, CONF_ACTION_HELP);
        ck_assert_ptr_null(error);
        ck_assert_mem_eq(&c, &sentinel, sizeof(c));
}
END_TEST

static char *capture_help(void (*print)(FILE *f)) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        ck_assert_ptr_nonnull(f);
        print(f);
        ck_assert_int_eq(fclose(f), 0);
        return buf;
}

static void print_server_man(FILE *f) {
        conf_print_keys_man(server_config_table, f);
}

static void print_agent_man(FILE *f) {
        conf_print_keys_man(agent_config_table, f);
}

/* Every visible key appears as "--name=" or "--name[" in --help and as one .TP entry in the man list;
 * hidden keys appear in neither. */
static void check_help(const ConfKey *table, void (*help)(FILE *f), void (*man)(FILE *f)) {
        _cleanup_free_ char *h = capture_help(help), *m = capture_help(man);
        size_t visible = 0, tp = 0;

        for (const ConfKey *k = table; k->name; k++) {
                _cleanup_free_ char *a = NULL, *b = NULL;

                ck_assert_int_ge(asprintf(&a, "--%s=", k->name), 0);
                ck_assert_int_ge(asprintf(&b, "--%s[=BOOL]", k->name), 0);
                if (k->flags & CONF_HIDDEN) {
                        ck_assert_msg(!strstr(h, a) && !strstr(h, b), "hidden %s in --help", k->name);
                        continue;
                }
                visible++;
                ck_assert_msg(strstr(h, k->type == CONF_BOOL ? b : a), "%s missing from --help", k->name);
        }
        for (const char *p = m; (p = strstr(p, ".TP\n")); p++)
                tp++;
        ck_assert_uint_eq(tp, visible);
        ck_assert_ptr_nonnull(strstr(h, "--check-config"));
        ck_assert_ptr_nonnull(strstr(h, "--config=PATH"));
        ck_assert_ptr_nonnull(strstr(h, "--version"));
}

START_TEST(test_server_help) {
        _cleanup_free_ char *h = capture_help(server_config_print_help), *m = capture_help(print_server_man);

        check_help(server_config_table, server_config_print_help, print_server_man);
        ck_assert_ptr_nonnull(strstr(h, "Usage: konn-server [OPTIONS...]\n"));
        ck_assert_ptr_nonnull(strstr(h,
                                     "  --mode=grpc|http-connect              Frontend protocol: grpc or "
                                     "http-connect (default: grpc)\n"));
        ck_assert_ptr_nonnull(strstr(h, "(default: " SERVER_CONFIG_DEFAULT_PATH ")"));
        ck_assert_ptr_nonnull(
                strstr(m,
                       ".TP\n\\fB\\-\\-agent\\-port\\fR=\\fIINT\\fR\nAgent gRPC listener port. "
                       "Default: \\fB8091\\fR.\n"));
        ck_assert_ptr_nonnull(
                strstr(m,
                       ".TP\n\\fB\\-\\-enable\\-profiling\\fR[=\\fIBOOL\\fR]\npprof on the admin "
                       "port. Default: \\fBfalse\\fR. Accepted for compatibility with upstream "
                       "Konnectivity and ignored.\n"));
}
END_TEST

/* --- agent --- */

static int agent_load(const char *const *extra, AgentConfig *c, char **error) {
        _cleanup_free_ char *conf = NULL, *config_flag = NULL;
        _cleanup_free_ const char **argv = NULL;
        char *dir;
        ConfArgs args = {};
        int n = count_args(extra), r;

        conf = empty_config(&dir);
        ck_assert_int_ge(asprintf(&config_flag, "--config=%s", conf), 0);
        argv = calloc((size_t) n + 2, sizeof(char *));
        ck_assert_ptr_nonnull(argv);
        argv[0] = "konn-agent";
        argv[1] = config_flag;
        for (int i = 1; i < n; i++)
                argv[i + 1] = extra[i];
        *error = NULL;
        r = agent_config_load(c, n + 1, (char **) argv, &args, error);
        if (r < 0)
                ck_assert_ptr_nonnull(*error);
        else
                ck_assert_ptr_null(*error);
        conf_args_done(&args);
        rm_rf(dir);
        return r;
}

START_TEST(test_agent_upstream_harness_flags) {
        AgentConfig c;
        char *error;

        /* what upstream's test harness passes (protocol.md §11): every flag, defaults included */
        ck_assert_int_eq(agent_load(ARGS("--proxy-server-host=localhost", "--proxy-server-port=40123",
                                         "--ca-cert=/certs/ca.crt", "--agent-cert=/certs/agent.crt",
                                         "--agent-key=/certs/agent.key", "--alpn-proto=[]",
                                         "--agent-id=agent-7", "--agent-identifiers=",
                                         "--service-account-token-path=", "--sync-interval=1s",
                                         "--sync-interval-cap=10s", "--probe-interval=1s",
                                         "--sync-forever=false", "--keepalive-time=1h0m0s",
                                         "--health-server-host=", "--health-server-port=40124",
                                         "--admin-bind-address=127.0.0.1", "--admin-server-port=40125",
                                         "--enable-profiling=false", "--enable-contention-profiling=false",
                                         "--xfr-channel-size=150", "--warn-on-channel-limit=false",
                                         "--count-server-leases=false", "--lease-namespace=kube-system",
                                         "--lease-label-selector=k8s-app=konnectivity-server",
                                         "--lease-label=k8s-app=konnectivity-server",
                                         "--server-count-source=default", "--kubeconfig=",
                                         "--kube-api-content-type=application/vnd.kubernetes.protobuf",
                                         "--v=4", "--vmodule=", "--logtostderr=true",
                                         "--alsologtostderr=false", "--alsologtostderrthreshold=",
                                         "--stderrthreshold=2", "--legacy-stderr-threshold-behavior=true",
                                         "--log-dir=", "--log-file=", "--log-file-max-size=1800",
                                         "--add-dir-header=false", "--skip-headers=false",
                                         "--skip-log-headers=false", "--one-output=false",
                                         "--log-backtrace-at=:0"),
                                    &c, &error),
                         0);
        ck_assert_str_eq(c.proxy_server_host, "localhost");
        ck_assert_int_eq(c.proxy_server_port, 40123);
        ck_assert_str_eq(c.ca_cert, "/certs/ca.crt");
        ck_assert_str_eq(c.agent_cert, "/certs/agent.crt");
        ck_assert_str_eq(c.agent_key, "/certs/agent.key");
        ck_assert_ptr_null(c.alpn_proto);
        ck_assert_str_eq(c.agent_id, "agent-7");
        ck_assert_ptr_null(c.agent_identifiers);
        ck_assert_ptr_null(c.service_account_token_path);
        ck_assert_uint_eq(c.sync_interval_usec, USEC_PER_SEC);
        ck_assert_uint_eq(c.sync_interval_cap_usec, 10 * USEC_PER_SEC);
        ck_assert_uint_eq(c.probe_interval_usec, USEC_PER_SEC);
        ck_assert(!c.sync_forever);
        ck_assert_uint_eq(c.keepalive_time_usec, 3600 * USEC_PER_SEC);
        ck_assert_ptr_null(c.health_server_host);
        ck_assert_int_eq(c.health_server_port, 40124);
        ck_assert_str_eq(c.admin_bind_address, "127.0.0.1");
        ck_assert_int_eq(c.admin_server_port, 40125);
        ck_assert(!c.count_server_leases);
        ck_assert_uint_eq(c.dial_timeout_usec, 5 * USEC_PER_SEC);
        ck_assert_uint_eq(c.drain_timeout_usec, 30 * USEC_PER_SEC);
        ck_assert_uint_eq(c.handshake_timeout_usec, 10 * USEC_PER_SEC);
        ck_assert_int_eq(c.verbosity, 4);
        ck_assert_int_eq(c.log_level, LOG_INFO);
        ck_assert_int_eq(c.log_target, LOG_TARGET_AUTO);
        agent_config_done(&c);

        ck_assert_int_eq(agent_load(ARGS("--ca-cert=/ca", "--alpn-proto=[konnectivity,x-test]",
                                         "--alpn-proto=third", "--sync-forever",
                                         "--agent-identifiers="
                                         "host=node1&ipv4=10.0.0.5&ipv6=fd00%3A%3A5&cidr=10.0.0.0%2F8&"
                                         "default-route=true"),
                                    &c, &error),
                         0);
        assert_strv(c.alpn_proto, STRV("konnectivity", "x-test", "third"));
        ck_assert(c.sync_forever);
        ck_assert_str_eq(c.agent_identifiers,
                         "host=node1&ipv4=10.0.0.5&ipv6=fd00%3A%3A5&cidr=10.0.0.0%2F8&default-route=true");
        agent_config_done(&c);
}
END_TEST

START_TEST(test_agent_id_env) {
        AgentConfig c;
        char *error;

        ck_assert_int_eq(unsetenv("PROXY_AGENT_ID"), 0);
        ck_assert_int_eq(agent_load(ARGS("--ca-cert=/ca"), &c, &error), 0);
        assert_uuid(c.agent_id);
        agent_config_done(&c);

        ck_assert_int_eq(setenv("PROXY_AGENT_ID", "env-agent", 1), 0);
        ck_assert_int_eq(agent_load(ARGS("--ca-cert=/ca"), &c, &error), 0);
        ck_assert_str_eq(c.agent_id, "env-agent");
        agent_config_done(&c);
        ck_assert_int_eq(agent_load(ARGS("--ca-cert=/ca", "--agent-id=flag-agent"), &c, &error), 0);
        ck_assert_str_eq(c.agent_id, "flag-agent");
        agent_config_done(&c);
        /* an explicitly empty --agent-id falls back too */
        ck_assert_int_eq(agent_load(ARGS("--ca-cert=/ca", "--agent-id="), &c, &error), 0);
        ck_assert_str_eq(c.agent_id, "env-agent");
        agent_config_done(&c);
        ck_assert_int_eq(setenv("PROXY_AGENT_ID", "bad\tid", 1), 0);
        ck_assert_int_eq(agent_load(ARGS("--ca-cert=/ca"), &c, &error), -EINVAL);
        ck_assert_str_eq(error, "--agent-id must be a non-empty string of printable ASCII characters");
        free(error);
        ck_assert_int_eq(unsetenv("PROXY_AGENT_ID"), 0);
}
END_TEST

/* clang-format off */
static const struct {
        const char *const *argv;
        int r;
        const char *message;
} agent_errors[] = {
        { ARGS("--agent-id=a"), -EINVAL, "--ca-cert is required" },
        { ARGS("--ca-cert=/ca", "--agent-cert=/c"), -EINVAL,
          "--agent-cert and --agent-key must be set together" },
        { ARGS("--ca-cert=/ca", "--agent-key=/k"), -EINVAL,
          "--agent-cert and --agent-key must be set together" },
        { ARGS("--ca-cert=/ca", "--sync-interval=11s"), -EINVAL,
          "--sync-interval 11s must not be greater than --sync-interval-cap 10s" },
        { ARGS("--ca-cert=/ca", "--sync-interval-cap=500ms"), -EINVAL,
          "--sync-interval 1s must not be greater than --sync-interval-cap 500ms" },
        { ARGS("--ca-cert=/ca", "--proxy-server-host="), -EINVAL, "--proxy-server-host must not be empty" },
        { ARGS("--ca-cert=/ca", "--proxy-server-port=0"), -ERANGE,
          "flag --proxy-server-port: value 0 out of range 1..65535" },
        { ARGS("--ca-cert=/ca", "--sync-interval=0s"), -ERANGE,
          "flag --sync-interval: value 0s out of range 1ms..87600h0m0s" },
        { ARGS("--ca-cert=/ca", "--agent-identifiers=host=a&foo=bar"), -EINVAL,
          "--agent-identifiers: unknown address type 'foo'" },
        { ARGS("--ca-cert=/ca", "--agent-identifiers=Host=a"), -EINVAL,
          "--agent-identifiers: unknown address type 'Host'" },
        { ARGS("--ca-cert=/ca", "--agent-identifiers=foo=1&host=%zz"), -EINVAL,
          "--agent-identifiers: invalid URL escape '%zz'" },
        { ARGS("--ca-cert=/ca", "--agent-identifiers=host=a%"), -EINVAL,
          "--agent-identifiers: invalid URL escape '%'" },
        { ARGS("--ca-cert=/ca", "--agent-identifiers=host=a%4"), -EINVAL,
          "--agent-identifiers: invalid URL escape '%4'" },
        { ARGS("--ca-cert=/ca", "--agent-identifiers=host=a;ipv4=1.2.3.4"), -EINVAL,
          "--agent-identifiers: invalid semicolon separator in query" },
        { ARGS("--ca-cert=/ca", "--agent-identifiers==x"), -EINVAL,
          "--agent-identifiers: unknown address type ''" },
        { ARGS("--ca-cert=/ca", "--agent-identifiers=host=\x01"), -EINVAL,
          "--agent-identifiers must consist of printable ASCII characters" },
        { ARGS("--ca-cert=/ca", "--alpn-proto=a,"
               "01234567890123456789012345678901234567890123456789"
               "01234567890123456789012345678901234567890123456789"
               "01234567890123456789012345678901234567890123456789"
               "01234567890123456789012345678901234567890123456789"
               "01234567890123456789012345678901234567890123456789"
               "01234567"),
          -EINVAL, "--alpn-proto: protocol id '01234567890123456789...' is longer than 255 bytes" },
        { ARGS("--ca-cert=/ca", "--log-target=syslog"), -EINVAL,
          "invalid value 'syslog' for flag --log-target: must be one of: auto, journal, stderr, "
          "stderr-fields, console, logfmt" },
        { ARGS("--ca-cert=/ca", "--server-count-source=min"), -EINVAL,
          "invalid value 'min' for flag --server-count-source: must be one of: \"\", default, max" },
};
/* clang-format on */

START_TEST(test_agent_errors) {
        AgentConfig c;
        char *error;

        ck_assert_int_eq(agent_load(agent_errors[_i].argv, &c, &error), agent_errors[_i].r);
        ck_assert_str_eq(error, agent_errors[_i].message);
        free(error);
}
END_TEST

START_TEST(test_agent_identifiers_ok) {
        static const char *const ok[] = {
                "", "host=a", "&&host=a&", "h%6Fst=x", "host=a+b&host=c", "default-route", "ipv6=%3A%3A1",
        };
        AgentConfig c;
        char *error = NULL;

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                _cleanup_free_ char *flag = NULL;

                ck_assert_int_ge(asprintf(&flag, "--agent-identifiers=%s", ok[i]), 0);
                ck_assert_msg(agent_load(ARGS("--ca-cert=/ca", flag), &c, &error) == 0, "%s: %s", ok[i],
                              error);
                agent_config_done(&c);
        }
}
END_TEST

START_TEST(test_agent_help) {
        _cleanup_free_ char *h = capture_help(agent_config_print_help);

        check_help(agent_config_table, agent_config_print_help, print_agent_man);
        ck_assert_ptr_nonnull(strstr(h, "Usage: konn-agent [OPTIONS...]\n"));
        ck_assert_ptr_nonnull(strstr(h, "--lease-label-selector=STRING"));
        ck_assert_ptr_null(strstr(h, "--lease-label=STRING"));
        ck_assert_ptr_nonnull(strstr(h, "--alpn-proto=LIST"));
        ck_assert_ptr_nonnull(strstr(h, "--sync-interval=DURATION"));
}
END_TEST

/* Table sanity for both daemons: unique names, defaults that parse and pass their bounds, storage flags
 * consistent with offsets. */
static void check_table(const ConfKey *table, size_t size) {
        void *cfg = calloc(1, size);

        ck_assert_ptr_nonnull(cfg);
        ck_assert_int_eq(conf_set_defaults(table, cfg), 0);
        for (const ConfKey *k = table; k->name; k++) {
                bool stored = !(k->flags & (CONF_IGNORED | CONF_UNSUPPORTED));

                ck_assert_msg(stored == (k->offset != CONF_NO_OFFSET), "%s: offset/flags mismatch", k->name);
                ck_assert_msg(!stored || k->offset < size, "%s: offset out of struct", k->name);
                ck_assert_msg(k->help && *k->help, "%s: no help", k->name);
                ck_assert_msg(k->type != CONF_ENUM || k->enum_values, "%s: enum without values", k->name);
                ck_assert_msg(k->type != CONF_DURATION || k->min >= 0, "%s: negative duration bound",
                              k->name);
                ck_assert_msg(k->type != CONF_INT || k->min <= k->max, "%s: empty range", k->name);
                ck_assert_msg(!streq(k->name, "help") && !streq(k->name, "config") &&
                                      !streq(k->name, "version") && !streq(k->name, "check-config"),
                              "%s: reserved", k->name);
                for (const ConfKey *j = k + 1; j->name; j++)
                        ck_assert_msg(!streq(k->name, j->name), "%s: duplicate", k->name);
        }
        conf_free_values(table, cfg);
        free(cfg);
}

START_TEST(test_tables) {
        check_table(server_config_table, sizeof(ServerConfig));
        check_table(agent_config_table, sizeof(AgentConfig));
        check_table(test_table, sizeof(TestConfig));
}
END_TEST

static Suite *conf_suite(void) {
        Suite *s = suite_create("conf");
        TCase *tc;

        tc = tcase_create("values");
        tcase_add_loop_test(tc, test_parse_duration, 0, (int) ELEMENTSOF(durations));
        tcase_add_test(tc, test_format_duration);
        tcase_add_test(tc, test_parse_bool);
        tcase_add_test(tc, test_parse_int64);
        tcase_add_test(tc, test_parse_strv);
        tcase_add_test(tc, test_uuid);
        tcase_add_test(tc, test_default_id);
        tcase_add_test(tc, test_resolve_log_level);
        tcase_add_test(tc, test_printable_ascii);
        tcase_add_test(tc, test_tables);
        suite_add_tcase(s, tc);

        tc = tcase_create("argv");
        tcase_add_test(tc, test_defaults_exact);
        tcase_add_test(tc, test_argv_forms);
        tcase_add_test(tc, test_argv_lists);
        tcase_add_test(tc, test_argv_errors);
        tcase_add_test(tc, test_argv_values_kept_on_error);
        tcase_add_test(tc, test_argv_ignored_and_unsupported);
        tcase_add_test(tc, test_argv_special);
        suite_add_tcase(s, tc);

        tc = tcase_create("files");
        tcase_add_test(tc, test_file_all_types);
        tcase_add_loop_test(tc, test_file_errors, 0, (int) ELEMENTSOF(file_errors));
        tcase_add_test(tc, test_file_int_boundaries);
        tcase_add_test(tc, test_file_io_errors);
        tcase_add_test(tc, test_precedence);
        tcase_add_test(tc, test_dropin_order);
        tcase_add_test(tc, test_missing_main_file);
        tcase_add_test(tc, test_load_actions_and_flag_errors_first);
        suite_add_tcase(s, tc);

        tc = tcase_create("server");
        tcase_add_test(tc, test_server_defaults);
        tcase_add_test(tc, test_server_upstream_flags);
        tcase_add_test(tc, test_server_id_env);
        tcase_add_test(tc, test_server_log_level);
        tcase_add_loop_test(tc, test_server_validate, 0, _SV_MAX);
        tcase_add_test(tc, test_server_validate_allowed);
        tcase_add_test(tc, test_server_load_errors);
        tcase_add_test(tc, test_server_help_action);
        tcase_add_test(tc, test_server_help);
        suite_add_tcase(s, tc);

        tc = tcase_create("agent");
        tcase_add_test(tc, test_agent_upstream_harness_flags);
        tcase_add_test(tc, test_agent_id_env);
        tcase_add_loop_test(tc, test_agent_errors, 0, (int) ELEMENTSOF(agent_errors));
        tcase_add_test(tc, test_agent_identifiers_ok);
        tcase_add_test(tc, test_agent_help);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        SRunner *sr = srunner_create(conf_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
