/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon — what both daemons do the same way around their Manager: the event loop with its signal sources
 * (SIGTERM/SIGINT → stop, a second one → exit now; SIGHUP → reload), the watchdog, and sockets passed by systemd
 * (sd_listen_fds_with_names(), taken by name: "agent", "frontend", "health", "admin"). Owns the table of passed
 * fds until each is taken; fds never taken are closed by daemon_listen_fds_done(). Loop thread only.
 */
#pragma once

#include <systemd/sd-event.h>

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
void daemon_listen_fds_done(void);
