/* SPDX-License-Identifier: Apache-2.0 */
/*
 * listener — accepting connections on one listening socket without ever spinning. Every listener of both daemons
 * (agent port, frontend socket, health and admin ports) goes through here.
 *
 * Running out of descriptors (EMFILE, ENFILE) leaves a listening socket readable, so a loop that just logs and
 * returns spins at full CPU and floods the log. Here, the process keeps one reserve descriptor: when accept fails
 * with EMFILE/ENFILE, the reserve is closed, the pending connection accepted, handed to the owner's refuse
 * callback (which may write the documented error bytes on a plain socket) and closed, and the reserve re-opened —
 * so waiting clients get an answer at once instead of hanging in the backlog. When even that fails (or on ENOBUFS,
 * ENOMEM), the listener pauses and a timer re-enables it after LISTENER_RETRY_USEC. Either way one rate-limited
 * warning per LOG_RATELIMIT_INTERVAL_USEC says what happened and how often, and one info line says when accepting
 * works again. Transient per-connection errors (ECONNABORTED, ...) are skipped.
 *
 * The Listener does not own the socket; its owner closes it after listener_free(). Loop thread only.
 */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "sock.h"

#define LISTENER_BURST 64
#define LISTENER_RETRY_USEC ((uint64_t) 100 * USEC_PER_MSEC)

typedef struct Listener Listener;

/* A new connection (non-blocking, close-on-exec); the callee owns cfd whatever it returns. A negative return is
 * logged (rate-limited) as a failure to set the connection up. */
typedef int (*listener_accept_t)(int cfd, const SockAddr *peer, socklen_t peer_len, void *userdata);
/* Optional: a connection accepted only to be refused for lack of descriptors; write what the client should read
 * (best effort, non-blocking). The listener closes cfd afterwards. */
typedef void (*listener_refuse_t)(int cfd, void *userdata);

/* what: a noun for log lines ("agent", "frontend", "health"). */
int listener_new(sd_event *e, int fd, const char *what, listener_accept_t on_accept, listener_refuse_t on_refuse,
                 void *userdata, Listener **ret);
Listener *listener_free(Listener *l);
/* Stop (graceful shutdown) or resume accepting. */
void listener_set_enabled(Listener *l, bool enabled);
/* Connections refused, and pauses, because descriptors ran out (lifetime counters, for metrics and tests). */
uint64_t listener_n_refused(const Listener *l);
uint64_t listener_n_paused(const Listener *l);
/* All listeners of the process together (the metric konn_accept_refused_total). */
uint64_t listener_total_refused(void);

DEFINE_TRIVIAL_CLEANUP_FUNC(Listener *, listener_free);
