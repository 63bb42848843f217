/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/uio.h>
/* Our CODE_FILE/CODE_LINE/CODE_FUNC name the caller of log_*(), not this file: no second set from libsystemd. */
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>

#include "log.h"

#define LOG_LINE_MAX 2048
#define LOG_FIELDS_MAX 24

static int max_level = LOG_INFO;
static LogTarget target = LOG_TARGET_AUTO;
static int journal_connected = -1; /* -1 unknown */
static int stderr_tty = -1;        /* -1 unknown */
static log_sink_t sink;
static void *sink_userdata;

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

void log_set_target(LogTarget t) {
        target = t;
        journal_connected = -1;
        stderr_tty = -1;
}

void log_set_sink(log_sink_t s, void *userdata) {
        sink = s;
        sink_userdata = userdata;
}

LogTarget log_target_from_string(const char *s) {
        static const char *const names[_LOG_TARGET_MAX] = {
                [LOG_TARGET_AUTO] = "auto",
                [LOG_TARGET_JOURNAL] = "journal",
                [LOG_TARGET_STDERR] = "stderr",
                [LOG_TARGET_STDERR_FIELDS] = "stderr-fields",
                [LOG_TARGET_CONSOLE] = "console",
                [LOG_TARGET_LOGFMT] = "logfmt",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (s && streq(s, names[i]))
                        return (LogTarget) i;
        return _LOG_TARGET_INVALID;
}

int log_level_from_string(const char *s) {
        static const char *const names[] = { "emerg", "alert", "crit", "err",
                                             "warning", "notice", "info", "debug" };
        if (!s || !*s)
                return -EINVAL;
        if (s[0] >= '0' && s[0] <= '7' && s[1] == '\0')
                return s[0] - '0';
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(s, names[i]))
                        return (int) i;
        if (streq(s, "error"))
                return LOG_ERR;
        if (streq(s, "warn"))
                return LOG_WARNING;
        return -EINVAL;
}

/* stderr is connected to the journal iff $JOURNAL_STREAM names stderr's device and inode. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

static bool use_journal(void) {
        if (target == LOG_TARGET_JOURNAL)
                return true;
        if (target != LOG_TARGET_AUTO)
                return false;
        if (journal_connected < 0)
                journal_connected = stderr_is_journal();
        return journal_connected;
}

static void write_journal(int level, int error, const char *file, int line, const char *func,
                          const LogField *fields, const char *message) {
        char prio[16], code_line[32], errno_field[32];
        _cleanup_free_ char *msg = NULL, *code_file = NULL, *code_func = NULL;
        struct iovec iov[LOG_FIELDS_MAX + 6];
        char *field_bufs[LOG_FIELDS_MAX] = {};
        size_t n = 0, nf = 0;

        (void) snprintf(prio, sizeof(prio), "PRIORITY=%d", level);
        iov[n++] = (struct iovec){ prio, strlen(prio) };
        (void) snprintf(code_line, sizeof(code_line), "CODE_LINE=%d", line);
        iov[n++] = (struct iovec){ code_line, strlen(code_line) };
        if (asprintf(&code_file, "CODE_FILE=%s", file) >= 0)
                iov[n++] = (struct iovec){ code_file, strlen(code_file) };
        if (asprintf(&code_func, "CODE_FUNC=%s", func) >= 0)
                iov[n++] = (struct iovec){ code_func, strlen(code_func) };
        if (error != 0) {
                (void) snprintf(errno_field, sizeof(errno_field), "ERRNO=%d", abs(error));
                iov[n++] = (struct iovec){ errno_field, strlen(errno_field) };
        }
        if (asprintf(&msg, "MESSAGE=%s", message) >= 0)
                iov[n++] = (struct iovec){ msg, strlen(msg) };
        for (const LogField *f = fields; f && f->key && nf < LOG_FIELDS_MAX; f++) {
                if (!f->value)
                        continue;
                if (asprintf(&field_bufs[nf], "%s=%s", f->key, f->value) < 0) {
                        field_bufs[nf] = NULL;
                        continue;
                }
                iov[n++] = (struct iovec){ field_bufs[nf], strlen(field_bufs[nf]) };
                nf++;
        }
        (void) sd_journal_sendv(iov, (int) n);
        for (size_t i = 0; i < nf; i++)
                free(field_bufs[i]);
}

static void write_stderr(int level, const LogField *fields, const char *message) {
        char line[LOG_LINE_MAX + 512];
        int k = snprintf(line, sizeof(line), "<%d>%s", level, message);
        size_t len = k < 0 ? 0 : MIN((size_t) k, sizeof(line) - 2);

        if (target == LOG_TARGET_STDERR_FIELDS)
                for (const LogField *f = fields; f && f->key; f++) {
                        if (!f->value)
                                continue;
                        k = snprintf(line + len, sizeof(line) - 1 - len, " %s=%s", f->key, f->value);
                        if (k < 0)
                                break;
                        len = MIN(len + (size_t) k, sizeof(line) - 2);
                }
        line[len++] = '\n';
        (void) !write(STDERR_FILENO, line, len);
}

static const char *const level_names[] = { "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug" };

static const char *level_name(int level) {
        return level >= 0 && level < (int) ELEMENTSOF(level_names) ? level_names[level] : "info";
}

/* Append to line[*len] within size (always leaving room for the newline). */
static void append(char *line, size_t size, size_t *len, const char *s, size_t n) {
        n = MIN(n, size - 1 - *len);
        memcpy(line + *len, s, n);
        *len += n;
}

/* A logfmt value: bare if it is non-empty and has no space, quote, '=' or control character; else quoted with
 * \" \\ \n \t and \xNN escapes. */
static void append_value(char *line, size_t size, size_t *len, const char *v) {
        bool bare = *v != '\0';

        for (const unsigned char *p = (const unsigned char *) v; *p && bare; p++)
                if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
                        bare = false;
        if (bare) {
                append(line, size, len, v, strlen(v));
                return;
        }
        append(line, size, len, "\"", 1);
        for (const unsigned char *p = (const unsigned char *) v; *p; p++) {
                char e[8];
                size_t n;

                if (*p == '"' || *p == '\\')
                        n = (size_t) snprintf(e, sizeof(e), "\\%c", *p);
                else if (*p == '\n')
                        n = (size_t) snprintf(e, sizeof(e), "\\n");
                else if (*p == '\t')
                        n = (size_t) snprintf(e, sizeof(e), "\\t");
                else if (*p < ' ' || *p == 0x7f)
                        n = (size_t) snprintf(e, sizeof(e), "\\x%02x", *p);
                else {
                        e[0] = (char) *p;
                        n = 1;
                }
                append(line, size, len, e, n);
        }
        append(line, size, len, "\"", 1);
}

static void format_time(char *buf, size_t size, bool utc_date) {
        struct timespec ts;
        struct tm tm;
        char tmp[64];

        (void) clock_gettime(CLOCK_REALTIME, &ts);
        if (utc_date) {
                (void) gmtime_r(&ts.tv_sec, &tm);
                (void) snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
        } else {
                (void) localtime_r(&ts.tv_sec, &tm);
                (void) snprintf(tmp, sizeof(tmp), "%02d:%02d:%02d.%03ld", tm.tm_hour, tm.tm_min, tm.tm_sec,
                                ts.tv_nsec / 1000000);
        }
        (void) snprintf(buf, size, "%.*s", (int) size - 1, tmp);
}

/* "16:41:02.123 warning: message": what a person at a terminal wants; the fields stay in the journal. */
static void write_console(int level, const char *message) {
        char line[LOG_LINE_MAX + 64], when[32];
        int k;

        format_time(when, sizeof(when), false);
        k = snprintf(line, sizeof(line), "%s %s%s%s\n", when, level <= LOG_NOTICE || level == LOG_DEBUG ? level_name(level) : "",
                     level <= LOG_NOTICE || level == LOG_DEBUG ? ": " : "", message);
        if (k < 0)
                return;
        if ((size_t) k >= sizeof(line)) {
                k = (int) sizeof(line) - 1;
                line[k - 1] = '\n';
        }
        (void) !write(STDERR_FILENO, line, (size_t) k);
}

/* One logfmt line: time, level, msg, then every field sorted by key (a stable order for log pipelines). */
static void write_logfmt(int level, int error, const LogField *fields, const char *message) {
        const LogField *sorted[LOG_FIELDS_MAX + 1];
        char line[LOG_LINE_MAX + 1024], when[32], errno_value[16];
        LogField errno_field = { "ERRNO", errno_value };
        size_t len = 0, n = 0;

        format_time(when, sizeof(when), true);
        append(line, sizeof(line), &len, "time=", 5);
        append(line, sizeof(line), &len, when, strlen(when));
        append(line, sizeof(line), &len, " level=", 7);
        append(line, sizeof(line), &len, level_name(level), strlen(level_name(level)));
        append(line, sizeof(line), &len, " msg=", 5);
        append_value(line, sizeof(line), &len, message);

        if (error != 0) {
                (void) snprintf(errno_value, sizeof(errno_value), "%d", abs(error));
                sorted[n++] = &errno_field;
        }
        for (const LogField *f = fields; f && f->key && n < LOG_FIELDS_MAX; f++)
                if (f->value)
                        sorted[n++] = f;
        for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && strcmp(sorted[j - 1]->key, sorted[j]->key) > 0; j--) {
                        const LogField *t = sorted[j];
                        sorted[j] = sorted[j - 1];
                        sorted[j - 1] = t;
                }
        for (size_t i = 0; i < n; i++) {
                append(line, sizeof(line), &len, " ", 1);
                append(line, sizeof(line), &len, sorted[i]->key, strlen(sorted[i]->key));
                append(line, sizeof(line), &len, "=", 1);
                append_value(line, sizeof(line), &len, sorted[i]->value);
        }
        line[len++] = '\n';
        (void) !write(STDERR_FILENO, line, len);
}

/* What "auto" means when stderr is not the journal. */
static LogTarget stderr_target(void) {
        if (target != LOG_TARGET_AUTO)
                return target;
        if (stderr_tty < 0)
                stderr_tty = isatty(STDERR_FILENO) > 0;
        return stderr_tty ? LOG_TARGET_CONSOLE : LOG_TARGET_LOGFMT;
}

int log_internalv(int level, int error, const char *file, int line, const char *func,
                  const LogField *fields, const char *format, va_list ap) {
        char message[LOG_LINE_MAX];
        int saved_errno = errno;

        if (level > max_level)
                return -abs(error);
        /* Let %m print the error we were handed. */
        errno = abs(error);
        (void) vsnprintf(message, sizeof(message), format, ap);
        errno = saved_errno;

        if (sink)
                sink(level, message, fields, sink_userdata);
        else if (use_journal())
                write_journal(level, error, file, line, func, fields, message);
        else
                switch (stderr_target()) {
                case LOG_TARGET_CONSOLE:
                        write_console(level, message);
                        break;
                case LOG_TARGET_LOGFMT:
                        write_logfmt(level, error, fields, message);
                        break;
                default:
                        write_stderr(level, fields, message);
                }
        errno = saved_errno;
        return -abs(error);
}

int log_internal(int level, int error, const char *file, int line, const char *func,
                 const LogField *fields, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = log_internalv(level, error, file, line, func, fields, format, ap);
        va_end(ap);
        return r;
}

int log_oom_internal(const char *file, int line, const char *func) {
        return log_internal(LOG_ERR, ENOMEM, file, line, func, NULL, "Out of memory.");
}

/* ---- rate-limited lines ---- */

typedef struct RatelimitSlot {
        uint64_t key;        /* 0: free */
        uint64_t begin_usec; /* start of the current window */
        unsigned suppressed; /* lines left out in the current window */
} RatelimitSlot;

static RatelimitSlot ratelimit_slots[LOG_RATELIMIT_SLOTS];
static uint64_t (*ratelimit_clock)(void);

void log_ratelimit_set_clock(uint64_t (*clock)(void)) {
        ratelimit_clock = clock;
        memset(ratelimit_slots, 0, sizeof(ratelimit_slots));
}

static uint64_t ratelimit_now(void) {
        struct timespec ts;

        if (ratelimit_clock)
                return ratelimit_clock();
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t n) {
        for (size_t i = 0; i < n; i++) {
                h ^= (unsigned char) s[i];
                h *= 0x100000001b3ULL;
        }
        return h;
}

/* The length of peer without a trailing ":port" ("10.0.0.1:4711", "[::1]:4711"; a bare "::1" keeps its digits). */
static size_t peer_host_len(const char *peer) {
        const char *colon = strrchr(peer, ':');

        if (!colon || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1))
                return strlen(peer);
        if (colon > peer && colon[-1] == ']')
                return (size_t) (colon - peer);
        if (memchr(peer, ':', (size_t) (colon - peer)))
                return strlen(peer); /* bare IPv6 */
        return (size_t) (colon - peer);
}

int log_ratelimited_internal(int level, int error, const char *file, int line, const char *func, const char *peer,
                             const LogField *fields, const char *format, ...) {
        LogField f[LOG_FIELDS_MAX + 1];
        char message[LOG_LINE_MAX], count[32];
        uint64_t key = 0xcbf29ce484222325ULL, now = ratelimit_now();
        unsigned suppressed;
        RatelimitSlot *slot;
        int saved_errno = errno;
        size_t n = 0, len;
        va_list ap;

        key = fnv1a(key, file, strlen(file));
        key = fnv1a(key, (const char *) &line, sizeof(line));
        if (peer)
                key = fnv1a(key, peer, peer_host_len(peer));
        key |= 1; /* never 0 */
        slot = &ratelimit_slots[key % LOG_RATELIMIT_SLOTS];
        if (slot->key == key && now < slot->begin_usec + LOG_RATELIMIT_INTERVAL_USEC) {
                slot->suppressed++;
                if (level >= LOG_DEBUG || LOG_DEBUG > max_level)
                        return -abs(error);
                /* With debug logging on, the repeats stay visible at debug level. */
                for (const LogField *i = fields; i && i->key && n < LOG_FIELDS_MAX - 1; i++)
                        f[n++] = *i;
                f[n++] = (LogField){ "KONN_RATELIMITED", "1" };
                f[n] = (LogField){ NULL, NULL };
                errno = abs(error);
                va_start(ap, format);
                (void) vsnprintf(message, sizeof(message), format, ap);
                va_end(ap);
                errno = saved_errno;
                return log_internal(LOG_DEBUG, error, file, line, func, f, "%s", message);
        }
        suppressed = slot->key == key ? slot->suppressed : 0;
        *slot = (RatelimitSlot){ .key = key, .begin_usec = now };

        errno = abs(error);
        va_start(ap, format);
        (void) vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        errno = saved_errno;
        if (suppressed == 0)
                return log_internal(level, error, file, line, func, fields, "%s", message);

        len = strlen(message);
        (void) snprintf(message + len, sizeof(message) - len, " (%u similar message%s suppressed)", suppressed,
                        suppressed == 1 ? "" : "s");
        (void) snprintf(count, sizeof(count), "%u", suppressed);
        for (const LogField *i = fields; i && i->key && n < LOG_FIELDS_MAX - 1; i++)
                f[n++] = *i;
        f[n++] = (LogField){ "KONN_SUPPRESSED", count };
        f[n] = (LogField){ NULL, NULL };
        return log_internal(level, error, file, line, func, f, "%s", message);
}
