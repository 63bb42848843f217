/* SPDX-License-Identifier: Apache-2.0 */
/*
 * health — konn-server's HTTP endpoints: the health port (/healthz, /readyz, /ready, /metrics; protocol.md §9.1)
 * and the admin interface on the admin port and the admin Unix socket (/metrics; konn's live state as JSON:
 * /v1/status, /v1/agents, /v1/tunnels, the /v1/trace event stream, and the older /agents, /tunnels). Owns both HttpServers and the
 * metrics registry; the counters are bumped by the modules where things happen, through manager->metrics.
 * Embedded in the Manager; started by manager_start(). Loop thread only.
 */
#pragma once

#include "admin.h"
#include "http.h"
#include "metrics.h"
#include "server-forward.h"
#include "trace.h"

typedef DaemonHealth ServerHealth;

/* Registry and families; before listeners, so every module can count from the start. */
int server_health_init(Manager *m);
/* Listeners on --health-port / --admin-port (0 = off), or the sockets systemd passed as "health" / "admin". */
int server_health_start(Manager *m);
void server_health_done(Manager *m);
bool server_ready(Manager *m);
/* A tunnel event: counted for /v1/status and published to /v1/trace subscribers. */
void server_trace(Manager *m, const TraceEvent *ev);
