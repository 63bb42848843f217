/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agent-config — konn-agent's configuration: the key table (every upstream proxy-agent and klog flag, plus
 * konn's own keys), loading (defaults < konn-agent.conf < konn-agent.conf.d/<name>.conf < flags, then
 * $PROXY_AGENT_ID / random UUID for --agent-id) and the cross-field rules upstream's agent enforces.
 * An AgentConfig is a flat value owned by whoever loaded it (main, or the reload path that swaps it in);
 * agent_config_done() frees it. Called from main() and the SIGHUP handler on the loop.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "conf.h"

typedef enum ServerCountSource {
        SERVER_COUNT_SOURCE_UNSET,   /* "" = default */
        SERVER_COUNT_SOURCE_DEFAULT, /* leases alone when lease counting is on, else the servercount header */
        SERVER_COUNT_SOURCE_MAX,     /* max(leases, servercount header) */
} ServerCountSource;

typedef struct AgentConfig {
        char *proxy_server_host; /* never NULL after agent_config_load() */
        int64_t proxy_server_port;
        char *ca_cert, *agent_cert, *agent_key;
        char **alpn_proto;       /* extra ALPN ids offered before "h2"; NULL = none; each 1..255 bytes */
        char *agent_id;          /* never NULL after agent_config_load() */
        char *agent_identifiers; /* sent verbatim as agentidentifiers; keys are validated */
        char *service_account_token_path;
        uint64_t sync_interval_usec, sync_interval_cap_usec, probe_interval_usec;
        bool sync_forever;
        uint64_t keepalive_time_usec;
        char *health_server_host;
        int64_t health_server_port; /* 0 = no health listener */
        char *admin_bind_address;
        int64_t admin_server_port; /* 0 = no admin listener */
        char *admin_socket;  /* NULL = no admin Unix socket (unless systemd passes one) */
        bool count_server_leases;  /* count servers from Leases (§3.4) */
        char *lease_namespace, *lease_label_selector;
        int server_count_source;   /* ServerCountSource */
        char *kubeconfig;          /* NULL = in-cluster configuration */
        /* konn-only: */
        uint64_t dial_timeout_usec;
        uint64_t drain_timeout_usec;
        bool tunnel_streams;
        char *reverse_listen;   /* NAME=ADDRESS[,...] (checked by agent_config_validate()); NULL = none */
        uint64_t handshake_timeout_usec;
        int64_t stream_window_size, connection_window_size, connection_buffer_size, max_window_size, relay_chunk_size;
        bool kubeconfig_allow_insecure;
        uint64_t kube_api_timeout_usec, lease_count_interval_usec;
        int64_t verbosity; /* klog --v */
        int log_level;     /* syslog level; resolved from --log-level, else --v, by agent_config_load() */
        int log_target;    /* LogTarget */
} AgentConfig;

extern const ConfKey agent_config_table[];

#ifndef KONN_SYSCONFDIR
#define KONN_SYSCONFDIR "/etc"
#endif
#define AGENT_CONFIG_DEFAULT_PATH KONN_SYSCONFDIR "/konn/konn-agent.conf"

/* Same contract as server_config_load(): 0 with *ret and *ret_args filled, a positive ConfAction with only
 * *ret_args filled, or a negative errno with *ret_error set and nothing else written. */
int agent_config_load(AgentConfig *ret, int argc, char *argv[], ConfArgs *ret_args, char **ret_error);
/* With --count-server-leases the kubeconfig (or in-cluster configuration) is loaded too, so --check-config
 * reports its errors. */
int agent_config_validate(const AgentConfig *c, char **ret_error);
void agent_config_done(AgentConfig *c);

void agent_config_print_help(FILE *f);
