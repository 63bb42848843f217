/* SPDX-License-Identifier: Apache-2.0 */
/*
 * server-config — konn-server's configuration: the key table (every upstream proxy-server and klog flag,
 * plus konn's own keys), loading (defaults < konn-server.conf < konn-server.conf.d/<name>.conf < flags, then
 * $PROXY_SERVER_ID / random UUID for --server-id) and the cross-field rules of protocol.md §7.3.
 * A ServerConfig is a flat value owned by whoever loaded it (main, or the reload path that swaps it in);
 * server_config_done() frees it. Called from main() and the SIGHUP handler on the loop.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "conf.h"

typedef enum ServerMode {
        SERVER_MODE_GRPC,
        SERVER_MODE_HTTP_CONNECT,
        _SERVER_MODE_MAX,
        _SERVER_MODE_INVALID = -EINVAL,
} ServerMode;

typedef struct ServerConfig {
        int mode; /* ServerMode */
        char *uds_name;
        bool delete_existing_uds_file;
        int64_t server_port;
        char *server_bind_address, *server_cert, *server_key, *server_ca_cert;
        int64_t agent_port;
        char *agent_bind_address, *cluster_cert, *cluster_key, *cluster_ca_cert;
        char *server_id; /* never NULL after server_config_load() */
        int64_t server_count;
        int64_t health_port; /* 0 = no health listener */
        char *health_bind_address;
        int64_t admin_port; /* 0 = no admin listener */
        char *admin_bind_address;
        char *admin_socket;  /* NULL = no admin Unix socket (unless systemd passes one) */
        uint64_t keepalive_time_usec, frontend_keepalive_time_usec;
        char **proxy_strategies; /* non-empty, each "default", "destHost" or "defaultRoute" */
        char **cipher_suites;  /* upstream Go cipher-suite names, stored unchecked; NULL = library default */
        char *tls_min_version; /* NULL (= TLS 1.2), "VersionTLS12" or "VersionTLS13" */
        uint64_t graceful_shutdown_timeout_usec, backend_dial_timeout_usec; /* 0 = off */
        /* Kubernetes: token authentication (all three or none) and the lease controller */
        char *agent_namespace, *agent_service_account, *authentication_audience;
        char *kubeconfig; /* NULL = in-cluster configuration */
        bool enable_lease_controller;
        char *lease_namespace, *lease_label;
        /* konn-only: */
        bool tunnel_streams;
        bool insecure_allow_unauthenticated_agents;
        uint64_t handshake_timeout_usec, header_timeout_usec;
        int64_t max_tunnels_per_agent;
        int64_t stream_window_size, connection_window_size, connection_buffer_size, max_window_size, relay_chunk_size;
        char *reverse_destinations; /* NAME=HOST:PORT[,...] (checked by server_config_validate()); NULL = off */
        int64_t max_reverse_per_agent;
        char *direct_cidrs;         /* CIDR[,...] (checked by server_config_validate()); NULL = none */
        bool kubeconfig_allow_insecure;
        uint64_t authentication_cache_ttl_usec, kube_api_timeout_usec;
        uint64_t lease_renew_interval_usec, lease_duration_usec;
        int64_t max_agents, max_pending_dials;
        int64_t max_frontend_connections; /* 0 = from RLIMIT_NOFILE (frontend_limit() in manager.c) */
        int64_t verbosity; /* klog --v */
        int log_level;     /* syslog level; resolved from --log-level, else --v, by server_config_load() */
        int log_target;    /* LogTarget */
} ServerConfig;

extern const ConfKey server_config_table[];

#ifndef KONN_SYSCONFDIR
#define KONN_SYSCONFDIR "/etc"
#endif
#define SERVER_CONFIG_DEFAULT_PATH KONN_SYSCONFDIR "/konn/konn-server.conf"

/* Everything: defaults, the main file (--config, else SERVER_CONFIG_DEFAULT_PATH, which may be missing),
 * drop-ins, flags, the --server-id fallbacks, log level resolution, then server_config_validate().
 * Returns 0 with *ret and *ret_args filled; a positive ConfAction (help/version) with only *ret_args
 * filled; or a negative errno with *ret_error set (a malloc'd message, NULL on -ENOMEM) and nothing else
 * written. *ret is overwritten without being freed first. */
int server_config_load(ServerConfig *ret, int argc, char *argv[], ConfArgs *ret_args, char **ret_error);
/* Cross-field rules; -EINVAL with a message naming the flags involved. When token authentication or the lease
 * controller is on, the kubeconfig (or in-cluster configuration) is loaded too, so --check-config reports its
 * errors. */
int server_config_validate(const ServerConfig *c, char **ret_error);
void server_config_done(ServerConfig *c);
/* Token authentication is on (--agent-namespace set; validation guarantees the other two). */
bool server_config_token_auth(const ServerConfig *c);
/* The Kubernetes client is needed (token authentication or the lease controller). */
bool server_config_needs_kube(const ServerConfig *c);

void server_config_print_help(FILE *f);
