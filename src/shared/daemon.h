/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon — what both daemons do the same way around their Manager: the event loop with its signal sources
 * (SIGTERM/SIGINT → stop, a second one → exit now; SIGHUP → reload), the watchdog, and sockets passed by systemd
 * (sd_listen_fds_with_names(), taken by name: "agent", "frontend", "health", "admin", "reverse-NAME"; or, for the
 * sockets of one unit, which share a name, by the address they listen on). Owns the table of passed
 * fds until each is taken; fds never taken are closed by daemon_listen_fds_done(). Loop thread only.
 */
#pragma once

#include <systemd/sd-event.h>

#include <stdio.h>

#include "conf.h"
#include "http.h"
#include "macro.h"

typedef struct DaemonHooks {
        /* First SIGTERM/SIGINT: begin a graceful stop. The manager calls sd_event_exit() when done. */
        void (*on_stop)(void *userdata);
        /* SIGHUP. */
        void (*on_reload)(void *userdata);
        void *userdata;
} DaemonHooks;

/* The default event loop with signals blocked and wired to hooks, the watchdog enabled when $WATCHDOG_USEC asks. */
int daemon_event_new(const DaemonHooks *hooks, sd_event **ret);

/* Collect the sockets systemd passed (LISTEN_FDS/LISTEN_FDNAMES); safe without socket activation. */
int daemon_listen_fds_init(void);
/* The passed fd named `name` (ownership moves to the caller), or -ENOENT. */
int daemon_take_listen_fd(const char *name);
/* A passed fd not taken yet that listens on the Unix socket `path` (if not NULL), else on host:port (host NULL or
 * "" = a wildcard address of either family). How sockets of one socket unit are told apart: systemd gives every
 * socket of a unit the same FileDescriptorName=. Ownership moves to the caller; -ENOENT if there is none. */
int daemon_take_listen_fd_by_address(const char *path, const char *host, uint16_t port);
void daemon_listen_fds_done(void);     /* logs each fd never taken, then closes it */
void daemon_listen_fds_close(void);    /* closes them silently (exit before any listener was set up) */
/* An HTTP listener on the (non-Unix) socket systemd passed as `name` (or one listening on bind:port), else on
 * bind:port (port 0: none, *ret stays NULL).
 * Logs its errors. */
int daemon_listen_http(sd_event *e, const char *name, const char *bind, int64_t port, http_handler_t h,
                       void *userdata, HttpServer **ret);

/* The same on a Unix socket: the AF_UNIX socket systemd passed as `name` (daemon_listen_http() takes only the
 * others of that name) or one listening on path, else a socket bound at path with mode 0660 (*ret_bound true: the caller unlinks it at exit);
 * no path: none. */
int daemon_listen_http_unix(sd_event *e, const char *name, const char *path, http_handler_t h, void *userdata,
                            HttpServer **ret, bool *ret_bound);

/* Graceful stop: check count(userdata) every 100 ms and exit the loop once it is 0 or timeout_usec has passed
 * (then logging how many were cut off, as `what`). The first check comes after one tick, so packets queued just
 * before (DRAIN) still leave. */
typedef struct DaemonStopWait {
        sd_event *event;
        sd_event_source *timer;
        uint64_t deadline;
        size_t (*count)(void *userdata);
        void *userdata;
        const char *what;
} DaemonStopWait;
int daemon_stop_wait(DaemonStopWait *w, sd_event *e, uint64_t timeout_usec, size_t (*count)(void *userdata),
                     void *userdata, const char *what);
void daemon_stop_wait_done(DaemonStopWait *w);

/* What differs between konn-server and konn-agent around the shared main loop. The config and manager types are
 * the daemon's own; daemon_main() only moves pointers around. */
typedef struct DaemonDescriptor {
        const char *name;                   /* "konn-server" */
        size_t config_size;
        int (*config_load)(void *config, int argc, char *argv[], ConfArgs *ret_args, char **ret_error);
        void (*config_done)(void *config);
        void (*print_help)(FILE *f);
        size_t log_level_offset, log_target_offset; /* int fields of the config */
        /* Takes ownership of config (also on failure). */
        int (*manager_new)(sd_event *e, void *config, void **ret);
        int (*manager_start)(void *m);
        void (*manager_stop)(void *m);
        void (*manager_reload)(void *m);
        void *(*manager_free)(void *m);
} DaemonDescriptor;

/* For a reload: load and validate the configuration again from the files and the original command line into a
 * new config object. NULL (after logging why) when it does not load; the caller keeps the running one. */
void *daemon_load_config(void);

/* Parse, --help/--version/--check-config, the event loop with signals, systemd's sockets, the manager, the loop.
 * Returns the process exit code. */
int daemon_main(const DaemonDescriptor *d, int argc, char *argv[]);
