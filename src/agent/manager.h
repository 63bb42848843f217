/* SPDX-License-Identifier: Apache-2.0 */
/*
 * manager — konn-agent's top-level object: the TLS client context, the resolver, and the set of connections to
 * konn-server replicas with the loop that keeps them (one new connection per attempt, backoff on failure, duplicate
 * server IDs closed), with the server count from the servers' servercount or from Leases. Owns every ServerConn and
 * the LeaseCounter. Created and run by main.c. Loop thread only.
 */
#pragma once

#include <openssl/ssl.h>
#include <systemd/sd-event.h>

#include "addrlist.h"
#include "agent-config.h"
#include "agent-forward.h"
#include "health.h"
#include "daemon.h"
#include "macro.h"
#include "memtrim.h"
#include "resolver.h"
#include "reverse.h"
#include "sock.h"

#define MANAGER_TARGETS_MAX 16
#define MANAGER_ADDRS_MAX 32

/* One entry of --proxy-server-host (a comma-separated list of names or addresses). */
typedef struct ServerTarget {
        Manager *manager;
        char *host;
        ResolveQuery *query;
} ServerTarget;

/* One address to connect to directly, and the configured name it came from (checked in the certificate). */
typedef struct ServerAddr {
        SockAddr addr;
        socklen_t len;
        const char *host;   /* points into targets[] */
} ServerAddr;

struct Manager {
        sd_event *event;
        AgentConfig *config;      /* owned; replaced as a whole on reload */
        SSL_CTX *ctx;
        Resolver *resolver;
        ServerConn *conns;
        unsigned n_conns;         /* all, including the one being set up */
        unsigned n_ready;
        int64_t server_count;     /* the count the sync loop aims at (--server-count-source); 1 until known */
        int64_t response_count;   /* servercount of the newest successful new connection; 0 until known */
        int64_t lease_count;      /* valid server Leases (last good list; 1 until known), --count-server-leases */
        LeaseCounter *lease;      /* owned; --count-server-leases */
        bool attempting;
        uint64_t backoff_usec;
        sd_event_source *sync_timer;
        uint64_t rng;
        ServerTarget targets[MANAGER_TARGETS_MAX];
        unsigned n_targets;
        ServerAddr addrs[MANAGER_ADDRS_MAX];    /* the address book, refreshed every sync interval */
        unsigned n_addrs, next_addr, n_resolving;
        ServerAddr fresh[MANAGER_ADDRS_MAX];    /* being collected by a refresh */
        unsigned n_fresh;
        uint64_t book_usec;                     /* when the address book was last refreshed */
        bool draining;            /* stopping: DRAIN sent, no new connections or dials */
        AgentHealth health;
        AgentMetrics metrics;
        sd_event_source *status_timer;  /* coalesces STATUS= updates (at most one a second) */
        MemTrim trim;                   /* gives memory back once nothing is open */
        DaemonStopWait stop_wait;
        ReverseListener listeners[NAMED_ADDR_MAX];  /* --reverse-listen (reverse.c) */
        unsigned n_listeners;
        bool reverse_refusal_logged;    /* "no server takes reverse connections" said once */
        Metric *reverse_total;          /* konn_agent_reverse_connections_total{name,result} */
        Metric *reverse_open;           /* konn_agent_reverse_open_connections{name} */
};

/* Takes ownership of config (also on failure). */
int manager_new(sd_event *e, AgentConfig *config, Manager **ret);
Manager *manager_free(Manager *m);
int manager_start(Manager *m);
/* SIGTERM: send DRAIN to every server, take no new dials, let open connections finish for up to --drain-timeout,
 * then exit the loop. */
void manager_stop(Manager *m);
/* SIGHUP: load the configuration again, rebuild the TLS context (certificate rotation), swap; on failure keep the
 * running one. Existing server connections and tunnels are untouched; new connections use the new material. */
void manager_reload(Manager *m);
size_t manager_n_endpoints(Manager *m);
/* Metrics (upstream names, §9.3): "from_agent" for packets sent, "to_agent" for packets received. */
void manager_count_packet(Manager *m, const char *segment, int packet_type);
/* Called by a ServerConn when it became ready (true) or failed/closed (false, before it is freed). */
void manager_conn_ready(Manager *m, ServerConn *sc);
void manager_conn_gone(Manager *m, ServerConn *sc, bool was_ready);
/* sc got GOAWAY: count it out of the ready servers and start a new connection now. */
void manager_conn_going_away(Manager *m, ServerConn *sc);
bool manager_has_server_id(Manager *m, ServerConn *except, const char *id);
/* The lease counter's latest count: recompute the server count and wake the sync loop when it grew. */
void manager_set_lease_count(Manager *m, int64_t n);
void manager_update_status(Manager *m);
/* A connection came or went: update STATUS= within a second (and return memory once none is left). */
void manager_status_changed(Manager *m);

DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);
