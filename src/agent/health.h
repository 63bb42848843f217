/* SPDX-License-Identifier: Apache-2.0 */
/*
 * health — konn-agent's HTTP endpoints (protocol.md §9.1): the health port (/healthz, /readyz, /ready, /metrics)
 * and the admin port (/metrics is a 301 to the health port, as upstream). Owns both HttpServers and the metrics
 * registry; counters are bumped where things happen through manager->metrics. Embedded in the Manager.
 * Loop thread only.
 */
#pragma once

#include "agent-forward.h"
#include "http.h"
#include "metrics.h"

typedef struct AgentHealth {
        HttpServer *health, *admin;
        MetricsRegistry *registry;
} AgentHealth;

int agent_health_init(Manager *m);
int agent_health_start(Manager *m);
void agent_health_done(Manager *m);
