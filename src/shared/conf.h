/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conf — table-driven configuration: one ConfKey table per daemon describes every key once, and from it
 * come the defaults, command-line flags (upstream pflag/klog names and syntax), libconfig files with
 * <main>.d/<name>.conf drop-ins, --help and the man-page key list. Owns no global state: values live in the
 * caller's *Config struct (strings and lists malloc'd, freed by conf_free_values()). Called from main()
 * at start-up and from the SIGHUP handler on the loop (parse into a fresh struct, then swap).
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Value types, and the storage each one uses at ConfKey.offset inside a Config struct:
 *   CONF_STRING    char *    malloc'd; NULL = unset or empty ("" is stored as NULL).
 *                            min/max bound the length in bytes when max > 0.
 *   CONF_BOOL      bool      Go ParseBool syntax (1 t T TRUE true True 0 f F FALSE false False).
 *   CONF_INT       int64_t   decimal, optional sign; always bounded by min..max (ports: 0..65535).
 *   CONF_DURATION  uint64_t  Go time.ParseDuration syntax ("1h0m0s", "1.5s", "300µs", "0"), stored in µs,
 *                            sub-µs remainders rounded up (so "10ns" is 1µs, never 0). min/max in µs.
 *   CONF_STRV      char **   NULL-terminated, malloc'd; NULL = empty. "a,b", "[a,b]", "[]" and "" are
 *                            accepted. Repeating the flag appends (pflag StringSlice). min/max bound the
 *                            element count when max > 0.
 *   CONF_ENUM      int       index into ConfKey.enum_values (NULL-terminated).
 *   CONF_LOG_LEVEL int       syslog level via log_level_from_string(); a NULL default stores -1
 *                            ("unset"). */
typedef enum ConfType {
        CONF_STRING,
        CONF_BOOL,
        CONF_INT,
        CONF_DURATION,
        CONF_STRV,
        CONF_ENUM,
        CONF_LOG_LEVEL,
        _CONF_TYPE_MAX,
        _CONF_TYPE_INVALID = -EINVAL,
} ConfType;

enum {
        /* Accepted for upstream compatibility: the value is parsed and bounds-checked, then dropped with a
         * debug log. Such keys have offset CONF_NO_OFFSET. */
        CONF_IGNORED = 1u << 0,
        /* Not shown by --help or the man page (deprecated aliases). */
        CONF_HIDDEN = 1u << 1,
        /* An upstream feature konn does not implement and must not silently drop (fail closed): only the
         * default value is accepted, anything else is an error. Also CONF_NO_OFFSET. */
        CONF_UNSUPPORTED = 1u << 2,
};

#define CONF_NO_OFFSET ((size_t) -1)

typedef struct ConfKey {
        const char *name; /* flag name without "--" = config-file key; NULL ends a table */
        ConfType type;
        size_t offset; /* offsetof(Config, field), or CONF_NO_OFFSET */
        int64_t min, max;
        const char *def;                /* default as text, parsed by the same parser; NULL = zero value */
        const char *const *enum_values; /* CONF_ENUM only, NULL-terminated */
        unsigned flags;
        const char *help;
} ConfKey;

typedef enum ConfAction {
        CONF_ACTION_RUN = 0,
        CONF_ACTION_HELP = 1,    /* --help, -h */
        CONF_ACTION_VERSION = 2, /* --version */
} ConfAction;

/* What the command line asked for besides key values. Owned by the caller; free with conf_args_done(). */
typedef struct ConfArgs {
        ConfAction action;
        bool check_config; /* --check-config: load and validate, then exit */
        char *config_path; /* --config=PATH, NULL if not given */
} ConfArgs;

void conf_args_done(ConfArgs *a);

/* Stores every key's default. Returns -EINVAL if a default of the table does not parse (a table bug). */
int conf_set_defaults(const ConfKey *table, void *cfg);
/* Frees strings and lists and sets them to NULL. Safe on a zeroed struct. */
void conf_free_values(const ConfKey *table, void *cfg);

/* Parse argv (argv[0] skipped) into cfg. Flags are --name=value, --name value, or with a single dash
 * (-v=4); '_' in a name matches '-' (klog's WordSepNormalizeFunc); a bare bool flag means true; "--" ends
 * the options; positional arguments are an error. Special flags: --help/-h and --version return
 * CONF_ACTION_HELP/CONF_ACTION_VERSION at once, --check-config and --config=PATH land in *ret_args.
 * cfg may be NULL to only validate. Returns 0 or a positive ConfAction, and fills *ret_args; on failure
 * returns -EINVAL (syntax, unknown flag, bad value) or -ERANGE (out of bounds) and sets *ret_error to a
 * malloc'd message (NULL on -ENOMEM), e.g. "unknown flag: --foo",
 * "invalid value 'abc' for flag --agent-port: not a number",
 * "flag --agent-port: value 70000 out of range 0..65535". */
int conf_parse_argv(const ConfKey *table, void *cfg, int argc, char *argv[], ConfArgs *ret_args,
                    char **ret_error);

/* Load one libconfig file into cfg. Every top-level setting must be a known key with the libconfig type
 * of its ConfType: string for strings, durations ("1h0m0s"; a bare integer is refused, the unit is
 * mandatory), enums and log levels; integer for ints; boolean for bools; array or list of strings for
 * lists (replacing, not appending). Errors (-EINVAL/-ERANGE, or -errno when the file cannot be opened,
 * -ENOENT included) set *ret_error to "FILE:LINE: key 'foo': ...", "FILE:LINE: unknown key 'foo'",
 * "FILE:LINE: <libconfig syntax error>" or "FILE: <strerror>". */
int conf_load_file(const ConfKey *table, void *cfg, const char *path, char **ret_error);

/* Everything, in precedence order: defaults < main file < drop-ins "<main>.d/<name>.conf" (strcmp order,
 * names starting with '.' skipped) < flags. The main file is --config or default_path (NULL: none); a
 * missing main file is an error only when it came from --config. Flags are parsed first (to find
 * --config, --help, ...) and applied again last. cfg must be zeroed; on failure it may hold partial values
 * (free them with conf_free_values()). Returns as conf_parse_argv(); on a positive action no file is read
 * and cfg is left untouched. */
int conf_load(const ConfKey *table, void *cfg, const char *default_path, int argc, char *argv[],
              ConfArgs *ret_args, char **ret_error);

/* The checks of the two logging keys every daemon has: a syslog level and a LogTarget. */
int conf_validate_log(int log_level, int log_target, char **ret_error);

/* What a daemon's configuration needs beyond its table, for conf_load_daemon(). */
typedef struct ConfDaemon {
        const ConfKey *table;
        size_t size;                      /* of the daemon's config struct */
        const char *default_path;
        size_t id_offset;                 /* char * field: the daemon's ID */
        const char *id_env;               /* its environment fallback, e.g. "PROXY_AGENT_ID" */
        size_t log_level_offset;          /* int field */
        size_t verbosity_offset;          /* int64_t field (klog --v) */
        int (*validate)(const void *cfg, char **ret_error);
} ConfDaemon;

/* The load both daemons share: conf_load(), the ID fallback (flag, environment, random UUID), the effective log
 * level, then d->validate(). Returns as conf_load(); cfg (d->size bytes) is written only on success. */
int conf_load_daemon(const ConfDaemon *d, void *cfg, int argc, char *argv[], ConfArgs *ret_args, char **ret_error);

/* --help text, every key not CONF_HIDDEN, table order, ignored keys in their own section. */
void conf_print_help(const ConfKey *table, const char *program, const char *summary,
                     const char *default_path, FILE *f);
/* roff ".TP" entries, one per key not CONF_HIDDEN, for konn-server(8), konn-agent(8) and konn.conf(5). */
void conf_print_keys_man(const ConfKey *table, FILE *f);

/* Value parsers, also used by tests. */
int conf_parse_bool(const char *s, bool *ret);
int conf_parse_int64(const char *s, int64_t *ret);         /* -EINVAL, or -ERANGE on overflow */
int conf_parse_duration(const char *s, int64_t *ret_usec); /* Go syntax; may be negative */
int conf_parse_strv(const char *s, char ***ret);           /* *ret NULL for an empty list */

#define CONF_DURATION_STRING_MAX 64
/* Go's time.Duration.String() of usec µs: "1h0m0s", "1.5s", "100ms", "300µs", "0s". Returns buf. */
const char *conf_format_duration(uint64_t usec, char buf[static CONF_DURATION_STRING_MAX]);

/* Go's url.QueryUnescape() of s[0..n) ('+' is a space) into *ret (malloc'd, *ret_len bytes, may contain NUL).
 * -EINVAL on a bad escape, with *ret_bad pointing at its '%'; -ENOMEM. */
int conf_query_unescape(const char *s, size_t n, char **ret, size_t *ret_len, const char **ret_bad);

/* A random UUID v4 string (getrandom()), lowercase 8-4-4-4-12. */
int conf_generate_uuid(char **ret);
/* When *id is NULL: take $env_name if set and non-empty, else a fresh UUID v4. */
int conf_default_id(char **id, const char *env_name);
/* The effective syslog level: log_level when given (>= 0), else from klog --v (>= 5 debug, else info). */
int conf_resolve_log_level(int log_level, int64_t verbosity);

/* Values of a "log-target" CONF_ENUM key, in LogTarget order: auto, journal, stderr, stderr-fields. */
extern const char *const conf_log_target_values[];

/* An upstream key konn accepts, checks and drops (see CONF_IGNORED). */
/* clang-format off */
#define CONF_IGNORED_KEY(n, t, mn, mx, d, h)                                                                \
        { .name = (n), .type = (t), .offset = CONF_NO_OFFSET, .min = (mn), .max = (mx), .def = (d),         \
          .flags = CONF_IGNORED, .help = (h) }

/* klog's flags (protocol.md §8), shared by both daemons. Only --v is stored (int64_t at verbosity_offset,
 * default 4 as upstream forces it; see conf_resolve_log_level()); the rest are accepted and ignored. */
#define CONF_KLOG_KEYS(verbosity_offset)                                                                    \
        { .name = "v", .type = CONF_INT, .offset = (verbosity_offset), .min = 0, .max = INT32_MAX,          \
          .def = "4",                                                                                       \
          .help = "klog verbosity; 5 or more selects the debug log level unless --log-level is given" },    \
        CONF_IGNORED_KEY("vmodule", CONF_STRING, 0, 0, NULL, "klog: per-module verbosity"),                 \
        CONF_IGNORED_KEY("logtostderr", CONF_BOOL, 0, 0, "true",                                            \
                         "klog: log to standard error instead of files"),                                   \
        CONF_IGNORED_KEY("alsologtostderr", CONF_BOOL, 0, 0, "false",                                       \
                         "klog: log to standard error as well as files"),                                   \
        CONF_IGNORED_KEY("alsologtostderrthreshold", CONF_STRING, 0, 0, NULL,                               \
                         "klog: threshold of --alsologtostderr"),                                           \
        CONF_IGNORED_KEY("stderrthreshold", CONF_STRING, 0, 0, "2",                                         \
                         "klog: severity at or above which logs go to stderr"),                             \
        CONF_IGNORED_KEY("legacy-stderr-threshold-behavior", CONF_BOOL, 0, 0, "true",                       \
                         "klog: legacy --stderrthreshold behaviour"),                                       \
        CONF_IGNORED_KEY("log-dir", CONF_STRING, 0, 0, NULL, "klog: directory for log files"),              \
        CONF_IGNORED_KEY("log-file", CONF_STRING, 0, 0, NULL, "klog: log file"),                            \
        CONF_IGNORED_KEY("log-file-max-size", CONF_INT, 0, INT64_MAX, "1800",                               \
                         "klog: maximum log file size in MB"),                                              \
        CONF_IGNORED_KEY("add-dir-header", CONF_BOOL, 0, 0, "false",                                        \
                         "klog: add the file directory to the header"),                                     \
        CONF_IGNORED_KEY("skip-headers", CONF_BOOL, 0, 0, "false", "klog: no header prefixes"),             \
        CONF_IGNORED_KEY("skip-log-headers", CONF_BOOL, 0, 0, "false", "klog: no headers in log files"),    \
        CONF_IGNORED_KEY("one-output", CONF_BOOL, 0, 0, "false",                                            \
                         "klog: write each entry only to its own severity's file"),                         \
        CONF_IGNORED_KEY("log-backtrace-at", CONF_STRING, 0, 0, ":0",                                       \
                         "klog: emit a stack trace at file:line")
/* clang-format on */

/* Helpers for the daemons' validation code. */
size_t conf_strv_length(char *const *l);
void conf_strv_free(char **l);
/* Non-empty and only 0x20..0x7e (fit for an HTTP/2 header value such as agentid/serverid). */
bool conf_is_printable_ascii(const char *s);
/* *ret_error = malloc'd message; returns r, or -ENOMEM (and *ret_error = NULL) if formatting failed. */
int conf_set_error(char **ret_error, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
