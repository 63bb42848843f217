/* SPDX-License-Identifier: Apache-2.0 */
/*
 * health — konn-server's HTTP endpoints: the health port (/healthz, /readyz, /ready, /metrics; protocol.md §9.1)
 * and the admin port (/metrics, and konn's live state as JSON: /agents, /tunnels). Owns both HttpServers and the
 * metrics registry; the counters are bumped by the modules where things happen, through manager->metrics.
 * Embedded in the Manager; started by manager_start(). Loop thread only.
 */
#pragma once

#include "http.h"
#include "metrics.h"
#include "server-forward.h"

typedef struct ServerHealth {
        HttpServer *health, *admin;
        MetricsRegistry *registry;
} ServerHealth;

/* Registry and families; before listeners, so every module can count from the start. */
int server_health_init(Manager *m);
/* Listeners on --health-port / --admin-port (0 = off), or the sockets systemd passed as "health" / "admin". */
int server_health_start(Manager *m);
void server_health_done(Manager *m);
bool server_ready(Manager *m);
