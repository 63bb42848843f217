/* SPDX-License-Identifier: Apache-2.0 */
/*
 * admin — what the admin interfaces of both daemons share (docs/admin-api.md): the admin Unix socket listener,
 * process facts and dial counters for /v1/status, JSON response bodies, and handing a GET /v1/trace connection to
 * the TraceHub. The daemon-specific resources (/v1/agents, /v1/servers, /v1/tunnels) live in each daemon's
 * health.c. AdminState is embedded in the daemon's health object and owns the Unix socket listener (and the
 * socket file when it bound it itself). Loop thread only.
 */
#pragma once

#include <stdio.h>

#include "http.h"
#include "trace.h"

typedef struct AdminState {
        HttpServer *unix_server;
        char *bound_path;             /* the socket file we created (unlinked at exit); NULL when passed */
        uint64_t started_realtime_usec, started_usec;
        uint64_t dials[_TRACE_EVENT_MAX]; /* events seen, by type */
} AdminState;

void admin_state_init(AdminState *a);
void admin_state_done(AdminState *a);

/* The admin listener on the AF_UNIX socket systemd passed as "admin", else bound at path (mode 0660), else none. */
int admin_listen_unix(AdminState *a, sd_event *e, const char *path, http_handler_t h, void *userdata);

/* Bookkeeping for /v1/status; called for every trace event before it is published. */
void admin_count_event(AdminState *a, const TraceEvent *ev);

/* JSON members (no braces): "pid", "started", "uptime_seconds". */
void admin_write_process(FILE *f, const AdminState *a);
/* JSON members: "dials" {requested, established, failed}, "tunnels_closed", "trace_subscribers",
 * "trace_dropped", "last_errors" [{time, destination, reason}] newest first. */
void admin_write_dials(FILE *f, const AdminState *a, const TraceHub *h);

/* 200 application/json with the body write(userdata, f) produces. */
int admin_respond(void (*write)(void *userdata, FILE *f), void *userdata, HttpResponse *ret);
/* Close the memstream f (opened over *buf, *len) and make it the 200 application/json body of ret. */
int admin_body_finish(FILE *f, char **buf, size_t *len, HttpResponse *ret);
/* GET /v1/trace: the connection goes to the hub (503 when it is full). */
int admin_respond_trace(TraceHub *h, const HttpRequest *req, HttpResponse *ret);

/* The peer address of a connected socket as text ("10.0.0.5:41234", "[::1]:41234"); "" when unknown. */
void admin_peer_address(int fd, char *buf, size_t size);
