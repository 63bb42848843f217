/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ctl — what konnctl's modules share: exit statuses by failure class, the admin client (ctl-http.c: finding the
 * daemon, one GET, streamed chunked bodies), aligned tables (ctl-table.c) and the probe (ctl-probe.c). konnctl is
 * a short-lived blocking command-line program; it never runs inside the daemons.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

/* Exit statuses (konnctl(1), EXIT STATUS). */
enum {
        CTL_EXIT_OK = 0,
        CTL_EXIT_FAILED = 1,          /* the daemon answered: not ready (status), or the probed dial failed */
        CTL_EXIT_USAGE = 2,           /* bad command line */
        CTL_EXIT_UNREACHABLE = 3,     /* no daemon at the address (not running, refused, no such socket) */
        CTL_EXIT_PERMISSION = 4,      /* the admin socket exists but this user may not connect to it */
        CTL_EXIT_PROTOCOL = 5,        /* unexpected answer: HTTP error, bad JSON, wrong daemon for the command */
        CTL_EXIT_NO_AGENT = 6,        /* probe: the server has no agent for the destination */
        CTL_EXIT_TIMEOUT = 7,         /* probe or request timed out */
};

/* Where the admin interface is: a Unix socket path or host:port. */
typedef struct CtlTarget {
        char address[256];
        bool is_unix;
} CtlTarget;

/* The exit status for a connect() errno. */
int ctl_exit_for_errno(int error);

/* Resolve -H (NULL: find the local daemon: the admin sockets in $KONNCTL_RUNTIME_DIR or /run/konn, server first,
 * then 127.0.0.1:8095 and 127.0.0.1:8094). want: "konn-server", "konn-agent" or NULL for either. Prints why on
 * failure and returns a CTL_EXIT_* (> 0); 0 on success. */
int ctl_find_target(const char *host, const char *want, CtlTarget *ret);
/* Connect to the target (blocking, with timeout_ms for connect, sends and receives); fd or -errno. */
int ctl_connect(const CtlTarget *t, int timeout_ms);

/* GET path; the whole body (NUL-terminated, malloc'd) of a 200 answer. Prints what went wrong and returns a
 * CTL_EXIT_* (> 0) otherwise. */
int ctl_get(const CtlTarget *t, const char *path, char **ret_body);
/* GET path and parse the body as a JSON object. */
int ctl_get_json(const CtlTarget *t, const char *path, json_object **ret);

/* A streamed GET, line by line: open (the head is read, a non-200 answer printed and returned as CTL_EXIT_*),
 * then each next line (the returned pointer is valid until the next call): 0, -ETIMEDOUT after timeout_ms (-1:
 * wait for ever), -EINTR on a signal, -EPIPE at the end of the stream, another -errno on failure. */
typedef struct CtlStream CtlStream;
int ctl_stream_open(const CtlTarget *t, const char *path, int timeout_ms, CtlStream **ret);
int ctl_stream_next(CtlStream *s, int timeout_ms, const char **ret_line);
CtlStream *ctl_stream_free(CtlStream *s);
/* A streamed GET: on_line is called for every complete line of the (chunked or plain) body until it returns
 * non-zero (that value is returned), the stream ends (CTL_EXIT_UNREACHABLE after printing why) or *stop is set
 * (CTL_EXIT_OK). */
int ctl_stream(const CtlTarget *t, const char *path, int (*on_line)(const char *line, void *userdata), void *userdata,
               volatile int *stop);

/* Tables: add cells row by row (strings are copied), then print with every column as wide as its widest cell. */
typedef struct CtlTable CtlTable;
CtlTable *ctl_table_new(const char *const *headers);
void ctl_table_add(CtlTable *t, const char *const *cells);
void ctl_table_print(CtlTable *t);
void ctl_table_free(CtlTable *t);

/* Formatting helpers. */
void ctl_format_bytes(uint64_t n, char *buf, size_t size);        /* "949 B", "1.5 KiB", "3.2 MiB" */
void ctl_format_duration(double seconds, char *buf, size_t size); /* "0.77 ms", "3.2 s", "4m12s", "2h03m", "3d04h" */
const char *ctl_json_str(json_object *o, const char *key);        /* "" when missing */
int64_t ctl_json_int(json_object *o, const char *key);
double ctl_json_double(json_object *o, const char *key);
bool ctl_json_bool(json_object *o, const char *key);

/* konnctl probe. */
typedef struct CtlProbeOptions {
        const char *dest;
        const char *frontend;         /* Unix socket path or host:port; NULL: /run/konn/konn-server.sock */
        const char *cert, *key, *ca;  /* TCP frontend: client certificate, key, CA */
        const char *tls_name;         /* name to verify in the server certificate (default: the frontend host) */
        const char *admin;            /* -H, for which agent carried it; NULL: find it */
        int timeout_ms;
        bool json;
} CtlProbeOptions;
int ctl_probe(const CtlProbeOptions *o);
