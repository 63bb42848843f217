/* SPDX-License-Identifier: Apache-2.0 */
/*
 * admin — what the admin interfaces of both daemons share (docs/admin-api.md): the admin Unix socket listener,
 * process facts and dial counters for /v1/status, JSON response bodies, and handing a GET /v1/trace connection to
 * the TraceHub. The daemon-specific resources (/v1/agents, /v1/servers, /v1/tunnels) live in each daemon's
 * health.c. DaemonHealth is what each daemon's health module holds (embedded in its Manager); its AdminState owns
 * the Unix socket listener (and the socket file when it bound it itself). Loop thread only.
 */
#pragma once

#include <stdio.h>

#include "http.h"
#include "metrics.h"
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

/* Both daemons' health and admin state: the health and admin HTTP servers (TCP), the metrics registry, the trace
 * hub, the admin state (Unix socket, /v1/status bookkeeping) and the bytes of tunnels already closed. */
typedef struct DaemonHealth {
        HttpServer *health, *admin;   /* admin: the TCP admin port; the admin Unix socket is in admin_state */
        MetricsRegistry *registry;
        TraceHub trace;
        AdminState admin_state;
        uint64_t closed_bytes_in, closed_bytes_out; /* of tunnels already closed, for /v1/status */
} DaemonHealth;

/* The registry (empty: the daemon adds its families), the trace hub and the admin state. -ENOMEM, logged. */
int daemon_health_init(DaemonHealth *h, sd_event *e);
/* The health and admin TCP listeners (daemon_listen_http(): systemd's "health"/"admin" sockets or bound; port 0:
 * none) and the admin Unix socket. Errors are logged. */
int daemon_health_listen(DaemonHealth *h, sd_event *e, const char *health_bind, int64_t health_port,
                         http_handler_t on_health, const char *admin_bind, int64_t admin_port,
                         const char *admin_socket, http_handler_t on_admin, void *userdata);
void daemon_health_done(DaemonHealth *h);
/* A tunnel event: counted for /v1/status and published to /v1/trace subscribers. */
void daemon_health_event(DaemonHealth *h, const TraceEvent *ev);
