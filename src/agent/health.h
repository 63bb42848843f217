/* SPDX-License-Identifier: Apache-2.0 */
/*
 * health — konn-agent's HTTP endpoints (protocol.md §9.1): the health port (/healthz, /readyz, /ready, /metrics)
 * and the admin interface on the admin port and the admin Unix socket (/metrics is a 301 to the health port, as
 * upstream; konn's live state as JSON: /v1/status, /v1/servers, /v1/tunnels and the /v1/trace event stream). Owns both HttpServers and the metrics
 * registry; counters are bumped where things happen through manager->metrics. Embedded in the Manager.
 * Loop thread only.
 */
#pragma once

#include "admin.h"
#include "agent-forward.h"
#include "http.h"
#include "metrics.h"
#include "trace.h"

typedef DaemonHealth AgentHealth;

int agent_health_init(Manager *m);
int agent_health_start(Manager *m);
void agent_health_done(Manager *m);
/* A connection event: counted for /v1/status and published to /v1/trace subscribers. */
void agent_trace(Manager *m, const TraceEvent *ev);
