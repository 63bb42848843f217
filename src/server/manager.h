/* SPDX-License-Identifier: Apache-2.0 */
/*
 * manager — konn-server's top-level object: the event loop's listeners (agent port, frontend Unix socket or TCP),
 * the TLS contexts, the set of connected agent streams (Backends, and those whose token is being reviewed), every
 * frontend Tunnel, the server-wide map of pending dials by dial ID ("random"), and the Kubernetes client with the
 * lease controller. Owns all of them; created and run by main.c, freed at exit.
 * Loop thread only.
 */
#pragma once

#include <openssl/ssl.h>
#include <systemd/sd-event.h>

#include "addrlist.h"
#include "auth.h"
#include "health.h"
#include "kubeclient.h"
#include "idmap.h"
#include "daemon.h"
#include "listener.h"
#include "macro.h"
#include "memtrim.h"
#include "resolver.h"
#include "server-config.h"
#include "server-forward.h"

struct Manager {
        sd_event *event;
        ServerConfig *config;  /* owned; replaced as a whole on reload */
        SSL_CTX *agent_ctx;    /* agent listener: cluster cert, cluster CA (mTLS), ALPN h2 */
        SSL_CTX *frontend_ctx; /* TCP frontend: server cert, server CA (mTLS), HTTP/1.1 */
        int agent_fd, frontend_fd;
        Listener *agent_listener, *frontend_listener;
        unsigned n_agent_links, n_frontend_links; /* accepted HTTP/2 connections (AgentLinks) of each kind */
        unsigned frontend_limit;                  /* --max-frontend-connections, resolved */
        Metric *limit_refusals;                   /* konn_server_limit_refusals_total{limit} */
        char *frontend_uds_path; /* unlinked at exit when we created it */

        AgentLink *links;      /* agent TLS connections */
        Backend *backends;     /* agent Connect streams, newest first */
        Backend *authenticating; /* agent streams whose TokenReview is in flight (not routable) */
        KubeConfig *kube_config; /* owned; NULL unless token authentication or the lease controller is on */
        KubeClient *kube;        /* owned */
        Auth auth;
        LeaseController *lease;  /* owned; --enable-lease-controller */
        unsigned n_backends;
        Tunnel *tunnels;       /* every frontend connection */
        unsigned n_tunnels;
        IdMap *pending;        /* dial ID → Tunnel waiting for DIAL_RSP */
        uint64_t rng;
        bool frontend_passed;  /* the frontend socket came from systemd: not ours to unlink */
        bool stopping;
        ServerHealth health;
        ServerMetrics metrics;
        DaemonStopWait stop_wait;
        sd_event_source *status_timer;  /* coalesces STATUS= updates (at most one a second) */
        MemTrim trim;                   /* gives memory back once nothing is open */
        Cidr *direct_cidrs;             /* --direct-cidrs, parsed (replaced on reload) */
        size_t n_direct_cidrs;
        int64_t direct_last_id;         /* connectIDs of direct tunnels (the server's own numbering) */
        Metric *direct_dial_duration, *direct_dial_failures, *direct_connections;
        NamedAddr *reverse_dests;       /* --reverse-destinations, parsed (replaced on reload) */
        size_t n_reverse_dests;
        ReverseStream *rstreams;        /* node → control-plane connections (reverse.c) */
        unsigned n_rstreams;
        int64_t reverse_last_id;
        Resolver *resolver;             /* created on the first reverse destination given by name */
        Metric *reverse_total, *reverse_open;
};

/* Takes ownership of config (also on failure). */
int manager_new(sd_event *e, ServerConfig *config, Manager **ret);
Manager *manager_free(Manager *m);
int manager_start(Manager *m);   /* bind/listen (or take systemd's sockets); logs its own errors */
/* SIGTERM: stop accepting; let tunnels finish for up to --graceful-shutdown-timeout, then exit the loop. */
void manager_stop(Manager *m);
/* SIGHUP: load the configuration again into a new object, validate it, rebuild the TLS contexts (certificate
 * rotation), then swap. On any failure the running configuration stays. Established tunnels are untouched. */
void manager_reload(Manager *m);
/* Pick an agent stream for a dial to `address` (default strategy: random start, first non-draining, else a
 * draining one). NULL when no agent is connected. */
Backend *manager_pick_backend(Manager *m, const char *address);
/* A fresh dial ID: positive int63, not in use. */
int64_t manager_new_dial_id(Manager *m);
void manager_update_status(Manager *m);
/* Something STATUS= shows changed (a frontend connection came or went): update within a second. */
void manager_status_changed(Manager *m);
/* Metrics (upstream names, §9.2). */
void manager_count_packet(Manager *m, const char *segment, int packet_type);
void manager_count_dial_failure(Manager *m, const char *reason);
/* A connection, stream or dial refused by one of the limits (README "Limits"): counts it in
 * konn_server_limit_refusals_total{limit} and writes one rate-limited warning per limit (with the peer). */
void manager_refused(Manager *m, const char *limit, const char *peer, const char *what);
/* Whether another frontend connection or Proxy stream fits under --max-frontend-connections. */
bool manager_frontend_has_room(Manager *m);

DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);
