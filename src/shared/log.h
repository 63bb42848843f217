/* SPDX-License-Identifier: Apache-2.0 */
/*
 * log — the only place konn writes log output. Owns the two logging globals (max level and
 * target). Under journald (JOURNAL_STREAM matches stderr, or forced) every line goes out via
 * sd_journal_sendv() with PRIORITY, CODE_FILE/LINE/FUNC, MESSAGE and the caller's KONN_* fields.
 * Otherwise, with the "auto" target: on a terminal short human lines ("16:41:02.123 warning: ...",
 * no fields); anywhere else (containers, pipes) one logfmt line per event: time, level, msg, then
 * every field (MESSAGE_ID, KONN_*, ERRNO) sorted by name, values quoted where needed. "console" and
 * "logfmt" force either; "stderr" is the "<N>message" form, "stderr-fields" the same with the fields
 * appended (what the test harness parses). Called from the loop thread only.
 */
#pragma once

#include <stdarg.h>
#include <syslog.h>

#include "macro.h"

typedef enum LogTarget {
        LOG_TARGET_AUTO,          /* journal if stderr is connected to it, else stderr */
        LOG_TARGET_JOURNAL,
        LOG_TARGET_STDERR,
        LOG_TARGET_STDERR_FIELDS, /* stderr, with structured fields appended (tests) */
        LOG_TARGET_CONSOLE,       /* short human lines without fields (auto on a terminal) */
        LOG_TARGET_LOGFMT,        /* time=... level=... msg="..." KEY=value... (auto elsewhere) */
        _LOG_TARGET_MAX,
        _LOG_TARGET_INVALID = -EINVAL,
} LogTarget;

typedef struct LogField {
        const char *key;   /* e.g. "KONN_AGENT_ID"; NULL terminates an array */
        const char *value; /* NULL values are skipped */
} LogField;

/* Stable MESSAGE_IDs for key events (journalctl MESSAGE_ID=...). */
#define KONN_MESSAGE_AGENT_CONNECTED "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a11"
#define KONN_MESSAGE_AGENT_DISCONNECTED "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a12"
#define KONN_MESSAGE_SERVER_CONNECTED "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a13"
#define KONN_MESSAGE_SERVER_DISCONNECTED "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a14"
#define KONN_MESSAGE_TUNNEL_OPENED "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a15"
#define KONN_MESSAGE_TUNNEL_CLOSED "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a16"
#define KONN_MESSAGE_DIAL_FAILED "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a17"
#define KONN_MESSAGE_RELOAD "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a18"
#define KONN_MESSAGE_STARTED "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a19"
#define KONN_MESSAGE_AGENT_REFUSED "2f0a6b3e4b5c4e5f9a1d7c3b8e6f0a1a"

void log_set_max_level(int level);
int log_get_max_level(void);
void log_set_target(LogTarget t);
LogTarget log_target_from_string(const char *s);
int log_level_from_string(const char *s); /* "err", "info", "debug", or 0..7 */
/* Route output to a callback instead (unit tests). NULL restores normal output. */
typedef void (*log_sink_t)(int level, const char *message, const LogField *fields, void *userdata);
void log_set_sink(log_sink_t sink, void *userdata);

/* Returns -abs(error) (or 0 when error == 0), so callers can "return log_error_errno(r, ...)". */
int log_internal(int level, int error, const char *file, int line, const char *func,
                 const LogField *fields, const char *format, ...) _printf_(7, 8);
int log_internalv(int level, int error, const char *file, int line, const char *func,
                  const LogField *fields, const char *format, va_list ap) _printf_(7, 0);

#define LOG_FIELDS(...) ((const LogField[]){ __VA_ARGS__, { NULL, NULL } })

#define log_full_errno_fields(level, error, fields, ...)                                         \
        ({                                                                                       \
                int _level = (level), _e = (error);                                              \
                _level <= log_get_max_level()                                                    \
                        ? log_internal(_level, _e, __FILE__, __LINE__, __func__, fields, __VA_ARGS__) \
                        : -abs(_e);                                                              \
        })
#define log_full_errno(level, error, ...) log_full_errno_fields(level, error, NULL, __VA_ARGS__)
#define log_full(level, ...) (void) log_full_errno(level, 0, __VA_ARGS__)

#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...) log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_notice_errno(e, ...) log_full_errno(LOG_NOTICE, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, e, __VA_ARGS__)

/* Structured variants: log_struct(LOG_INFO, 0, LOG_FIELDS({"KONN_AGENT_ID", id}), "fmt", ...) */
#define log_struct_errno(level, error, fields, ...) log_full_errno_fields(level, error, fields, __VA_ARGS__)
#define log_struct(level, fields, ...) (void) log_full_errno_fields(level, 0, fields, __VA_ARGS__)

/* Create an error the code made up, systemd-style. */
#define SYNTHETIC_ERRNO(e) (e)

/* Rate-limited lines for errors one peer can repeat in a loop (an agent with a bad certificate reconnecting, a
 * listener out of descriptors, a target refusing every dial): per call site and peer, the first line of each
 * LOG_RATELIMIT_INTERVAL_USEC window is written, later ones are only counted, and the next line written after the
 * window says how many were left out (" (N similar messages suppressed)", journald field KONN_SUPPRESSED=N).
 * With debug logging on, the left-out lines are still written, at debug level with KONN_RATELIMITED=1.
 * peer may be NULL (one key per call site); a trailing ":port" is ignored, so reconnects from new source ports
 * count as the same peer. A fixed table of LOG_RATELIMIT_SLOTS keys; a key pushed out forgets its count. */
#define LOG_RATELIMIT_INTERVAL_USEC (10 * USEC_PER_SEC)
#define LOG_RATELIMIT_SLOTS 256
int log_ratelimited_internal(int level, int error, const char *file, int line, const char *func, const char *peer,
                             const LogField *fields, const char *format, ...) _printf_(8, 9);
#define log_peer_full_errno_fields(level, error, peer, fields, ...)                                    \
        ({                                                                                       \
                int _level = (level), _e = (error);                                              \
                _level <= log_get_max_level()                                                    \
                        ? log_ratelimited_internal(_level, _e, __FILE__, __LINE__, __func__, peer, fields, \
                                                   __VA_ARGS__)                                  \
                        : -abs(_e);                                                              \
        })
#define log_peer_warning_errno(e, peer, ...) log_peer_full_errno_fields(LOG_WARNING, e, peer, NULL, __VA_ARGS__)
#define log_peer_warning(peer, ...) (void) log_peer_full_errno_fields(LOG_WARNING, 0, peer, NULL, __VA_ARGS__)
#define log_peer_info(peer, ...) (void) log_peer_full_errno_fields(LOG_INFO, 0, peer, NULL, __VA_ARGS__)
#define log_peer_struct(level, peer, fields, ...) (void) log_peer_full_errno_fields(level, 0, peer, fields, __VA_ARGS__)
/* Unit tests: the clock the rate limiter reads (NULL: CLOCK_MONOTONIC); also forgets every key. */
void log_ratelimit_set_clock(uint64_t (*clock)(void));

int log_oom_internal(const char *file, int line, const char *func);
#define log_oom() log_oom_internal(__FILE__, __LINE__, __func__)
