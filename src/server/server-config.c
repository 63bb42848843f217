/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <inttypes.h>
#include <stddef.h>
#include <string.h>
#include <syslog.h>

#include "kubeconfig.h"
#include "kubeobj.h"
#include "log.h"
#include "macro.h"
#include "addrlist.h"
#include "server-config.h"

/* Key table notes.
 * - Names, defaults and value syntax are upstream proxy-server's (protocol.md §8.1), so the flags upstream
 *   manifests pass keep working. Flags for features konn lacks are CONF_IGNORED (parsed, bounds-checked,
 *   dropped). --kubeconfig-qps/--kubeconfig-burst are ignored (konn makes a handful of API requests a minute) and
 *   so is --kube-api-content-type (konn always speaks JSON, which every API server accepts).
 * - Ports are 0..65535 in the table; server_config_validate() narrows them to upstream's 1024..49151, with
 *   0 allowed for --server-port with --uds-name and for --health-port/--admin-port ("listener disabled",
 *   a konn extension).
 * - --v keeps upstream's forced default 4 and maps to info; 5 or more means debug. --log-level wins. */

static const char *const server_mode_values[] = { "grpc", "http-connect", NULL };

/* clang-format off */
#define OFF(field) offsetof(ServerConfig, field)
#define STRING(n, f, d, h) { .name = n, .type = CONF_STRING, .offset = OFF(f), .def = d, .help = h }
#define BOOL(n, f, d, h) { .name = n, .type = CONF_BOOL, .offset = OFF(f), .def = d, .help = h }
#define INT(n, f, mn, mx, d, h) \
        { .name = n, .type = CONF_INT, .offset = OFF(f), .min = mn, .max = mx, .def = d, .help = h }
#define PORT(n, f, d, h) INT(n, f, 0, 65535, d, h)
#define DURATION(n, f, mn, mx, d, h) \
        { .name = n, .type = CONF_DURATION, .offset = OFF(f), .min = mn, .max = mx, .def = d, .help = h }

#define SEC ((int64_t) USEC_PER_SEC)
#define MSEC ((int64_t) USEC_PER_MSEC)
#define HOUR (3600 * SEC)
#define TEN_YEARS (87600 * HOUR)

const ConfKey server_config_table[] = {
        { .name = "mode", .type = CONF_ENUM, .offset = OFF(mode), .def = "grpc",
          .enum_values = server_mode_values, .help = "Frontend protocol: grpc or http-connect" },
        { .name = "uds-name", .type = CONF_STRING, .offset = OFF(uds_name), .min = 0, .max = 107,
          .help = "Unix socket path of the frontend; empty selects the TCP+mTLS frontend" },
        BOOL("delete-existing-uds-file", delete_existing_uds_file, "true",
             "Remove a stale socket file before listening on --uds-name"),
        PORT("server-port", server_port, "8090", "Frontend TCP port (must be 0 with --uds-name)"),
        STRING("server-bind-address", server_bind_address, NULL, "Frontend bind address (empty: all)"),
        STRING("server-cert", server_cert, NULL, "Frontend TLS certificate (TCP frontend)"),
        STRING("server-key", server_key, NULL, "Frontend TLS private key (TCP frontend)"),
        STRING("server-ca-cert", server_ca_cert, NULL, "CA for frontend client certificates (TCP frontend)"),
        PORT("agent-port", agent_port, "8091", "Agent gRPC listener port"),
        STRING("agent-bind-address", agent_bind_address, NULL, "Agent listener bind address (empty: all)"),
        STRING("cluster-cert", cluster_cert, NULL, "Agent listener TLS certificate"),
        STRING("cluster-key", cluster_key, NULL, "Agent listener TLS private key"),
        STRING("cluster-ca-cert", cluster_ca_cert, NULL, "CA for agent client certificates"),
        PORT("health-port", health_port, "8092", "Health listener port (0: disabled)"),
        STRING("health-bind-address", health_bind_address, NULL,
               "Health listener bind address (empty: all)"),
        PORT("admin-port", admin_port, "8095", "Admin listener port (0: disabled)"),
        STRING("admin-bind-address", admin_bind_address, "127.0.0.1", "Admin listener bind address"),
        STRING("admin-socket", admin_socket, NULL,
               "Admin Unix socket path, e.g. /run/konn/konn-server-admin.sock (mode 0660; empty: none)"),
        DURATION("keepalive-time", keepalive_time_usec, SEC, TEN_YEARS, "30s",
                 "HTTP/2 PING interval towards agents; an agent that leaves a PING unanswered until the next one is "
                 "dropped (upstream default: 1h)"),
        DURATION("frontend-keepalive-time", frontend_keepalive_time_usec, SEC, TEN_YEARS, "1h0m0s",
                 "Idle time before the frontend listener pings a client"),
        STRING("server-id", server_id, NULL,
               "Server ID sent to agents as serverid (default: $PROXY_SERVER_ID, else a random UUID)"),
        INT("server-count", server_count, 1, INT32_MAX, "1",
            "Number of server replicas announced to agents as servercount"),
        { .name = "proxy-strategies", .type = CONF_STRV, .offset = OFF(proxy_strategies), .def = "default",
          .help = "Ordered agent selection strategies: default, destHost, defaultRoute" },
        { .name = "cipher-suites", .type = CONF_STRV, .offset = OFF(cipher_suites), .def = "[]",
          .help = "TLS 1.2 cipher suites (empty: library default)" },
        STRING("tls-min-version", tls_min_version, NULL,
               "Minimum TLS version: VersionTLS12 or VersionTLS13 (empty: TLS 1.2)"),
        DURATION("graceful-shutdown-timeout", graceful_shutdown_timeout_usec, 0, TEN_YEARS, "0s",
                 "On SIGTERM, wait this long for connections to finish (0: exit at once)"),
        DURATION("backend-dial-timeout", backend_dial_timeout_usec, 0, TEN_YEARS, "15s",
                 "Time limit for an agent to answer a dial (0: none; upstream default: 0)"),

        STRING("agent-namespace", agent_namespace, NULL,
               "Token authentication: the agents' ServiceAccount namespace (needs --agent-service-account and "
               "--authentication-audience; agents then present a ServiceAccount token, reviewed with a TokenReview)"),
        STRING("agent-service-account", agent_service_account, NULL,
               "Token authentication: the agents' ServiceAccount name"),
        STRING("authentication-audience", authentication_audience, NULL,
               "Token authentication: the audience the agents' tokens must carry"),
        STRING("kubeconfig", kubeconfig, NULL,
               "Kubernetes client configuration for token authentication and leases (empty: in-cluster "
               "configuration)"),
        BOOL("enable-lease-controller", enable_lease_controller, "false",
             "Publish this server's Lease (renewed every 15 s, 30 s duration) and delete expired ones"),
        STRING("lease-namespace", lease_namespace, "kube-system", "Namespace of the server Leases"),
        STRING("lease-label", lease_label, "k8s-app=konnectivity-server",
               "Labels of this server's Lease and selector of the Leases it garbage-collects (k=v,k=v)"),

        /* konn-only */
        BOOL("tunnel-streams", tunnel_streams, "true",
             "Offer konn agents one HTTP/2 stream per tunnel (per-tunnel flow control); upstream agents are "
             "unaffected"),
        BOOL("insecure-allow-unauthenticated-agents", insecure_allow_unauthenticated_agents, "false",
             "Accept agents without a client certificate when --cluster-ca-cert is not set"),
        DURATION("handshake-timeout", handshake_timeout_usec, MSEC, HOUR, "10s",
                 "Time limit for a TLS handshake on the agent and frontend listeners"),
        DURATION("header-timeout", header_timeout_usec, MSEC, HOUR, "10s",
                 "Time limit for an HTTP CONNECT client to send its request header"),
        INT("max-tunnels-per-agent", max_tunnels_per_agent, 1, 100000000, "100000",
            "Maximum pending and established tunnels per agent stream; a dial finds another agent, or is refused "
            "(503 / DIAL_RSP \"every agent is at its tunnel limit\")"),
        INT("max-agents", max_agents, 1, 10000000, "10000",
            "Maximum agent streams; another agent's Connect ends with RESOURCE_EXHAUSTED \"too many agents\""),
        INT("max-pending-dials", max_pending_dials, 1, 100000000, "10000",
            "Maximum dials waiting for an agent's answer; more are refused (503 / DIAL_RSP \"too many pending "
            "dials\")"),
        INT("max-frontend-connections", max_frontend_connections, 0, 100000000, "0",
            "Maximum frontend connections (CONNECT) and Proxy streams (gRPC); more are refused (503 \"too many "
            "frontend connections\" / RESOURCE_EXHAUSTED). 0: the open-files limit minus a reserve of an eighth "
            "(at least 64)"),
        INT("stream-window-size", stream_window_size, 16384, INT32_MAX, "1048576",
            "HTTP/2 receive window of each stream, in bytes (agent and frontend connections)"),
        INT("connection-window-size", connection_window_size, 65535, INT32_MAX, "67108864",
            "HTTP/2 receive window of each agent or frontend connection, in bytes: what one connection may have "
            "in flight towards this server"),
        INT("connection-buffer-size", connection_buffer_size, 65536, INT64_C(1) << 40, "134217728",
            "Bytes one agent or frontend connection may leave with this server for readers that are not keeping up (stalled tunnels, whose stream credits are withheld); past it the connection's window stops reopening until they drain. Memory per connection is bounded by this plus the connection window"),
        INT("max-window-size", max_window_size, 0, INT32_MAX, "16777216",
            "Upper bound in bytes to which a stream's receive window grows with the measured bandwidth-delay "
            "product (a stream grows while its reader keeps up and the link's bandwidth still rises; 0: fixed "
            "windows)"),
        INT("relay-chunk-size", relay_chunk_size, 16384, 1048576, "131072",
            "Largest read from a CONNECT client and so the largest DATA message sent to agents, in bytes"),
        STRING("reverse-destinations", reverse_destinations, NULL,
               "Node to control plane: NAME=HOST:PORT[,...], the only destinations konn agents may reach "
               "through their tunnel, by NAME (empty: the feature is off)"),
        INT("max-reverse-per-agent", max_reverse_per_agent, 1, 1000000, "1000",
            "Maximum node to control plane connections open at once per agent stream"),
        STRING("direct-cidrs", direct_cidrs, NULL,
               "CIDR[,CIDR...] (IPv4 and IPv6) of destinations this server dials itself instead of through an "
               "agent (empty: none)"),
        BOOL("kubeconfig-allow-insecure", kubeconfig_allow_insecure, "false",
             "Accept insecure-skip-tls-verify in the kubeconfig (the API server's certificate is then not checked)"),
        DURATION("authentication-cache-ttl", authentication_cache_ttl_usec, 0, HOUR, "1m0s",
                 "How long a successful TokenReview is reused for the same token (never past the token's expiry; "
                 "0: review every connection)"),
        DURATION("kube-api-timeout", kube_api_timeout_usec, 100 * MSEC, HOUR, "10s",
                 "Time limit for one Kubernetes API request"),
        DURATION("lease-renew-interval", lease_renew_interval_usec, 100 * MSEC, HOUR, "15s",
                 "How often the lease controller renews this server's Lease and collects expired ones "
                 "(upstream: 15s)"),
        DURATION("lease-duration", lease_duration_usec, SEC, HOUR, "30s",
                 "leaseDurationSeconds of this server's Lease (upstream: 30s; must exceed --lease-renew-interval)"),
        { .name = "log-level", .type = CONF_LOG_LEVEL, .offset = OFF(log_level),
          .help = "Log level: emerg..debug (default: info, or debug with --v=5 or more)" },
        { .name = "log-target", .type = CONF_ENUM, .offset = OFF(log_target), .def = "auto",
          .enum_values = conf_log_target_values, .help = "Where log lines go" },

        /* upstream flags konn accepts and ignores, or refuses unless left at their default */
        CONF_IGNORED_KEY("enable-profiling", CONF_BOOL, 0, 0, "false", "pprof on the admin port"),
        CONF_IGNORED_KEY("enable-contention-profiling", CONF_BOOL, 0, 0, "false", "block profiling"),
        CONF_IGNORED_KEY("kubeconfig-qps", CONF_STRING, 0, 0, "0", "Kubernetes client QPS"),
        CONF_IGNORED_KEY("kubeconfig-burst", CONF_INT, 0, INT32_MAX, "0", "Kubernetes client burst"),
        CONF_IGNORED_KEY("kube-api-content-type", CONF_STRING, 0, 0, "application/vnd.kubernetes.protobuf",
                         "Kubernetes client content type"),
        CONF_IGNORED_KEY("xfr-channel-size", CONF_INT, 1, INT32_MAX, "10", "Per-stream packet queue depth"),
        CONF_IGNORED_KEY("frontend-write-channel-size", CONF_INT, 1, INT32_MAX, "10",
                         "Per-frontend packet buffer"),
        CONF_IGNORED_KEY("warn-on-channel-limit", CONF_BOOL, 0, 0, "true", "Deprecated no-op"),
        CONF_KLOG_KEYS(OFF(verbosity)),
        {}
};
/* clang-format on */

static bool port_ok(int64_t p) {
        return p >= 1024 && p <= 49151;
}

static bool strv_contains_only(char *const *l, const char *const *allowed, const char **ret_bad) {
        for (char *const *i = l; i && *i; i++) {
                bool found = false;

                for (const char *const *a = allowed; *a; a++)
                        if (streq(*i, *a))
                                found = true;
                if (!found) {
                        *ret_bad = *i;
                        return false;
                }
        }
        return true;
}

int server_config_validate(const ServerConfig *c, char **ret_error) {
        static const char *const strategies[] = { "default", "destHost", "defaultRoute", NULL };
        const char *bad;
        int r;

        assert(c);
        assert(ret_error);

        if (c->mode < 0 || c->mode >= _SERVER_MODE_MAX)
                return conf_set_error(ret_error, -EINVAL, "--mode must be 'grpc' or 'http-connect'");

        if (c->uds_name) {
                if (c->server_port != 0)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--server-port must be 0 when --uds-name is set "
                                              "(got %" PRIi64 ")",
                                              c->server_port);
                if (c->server_cert)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--server-cert must not be set when --uds-name is set");
                if (c->server_key)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--server-key must not be set when --uds-name is set");
                if (c->server_ca_cert)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--server-ca-cert must not be set when --uds-name is set");
        } else {
                if (!c->server_cert)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--server-cert is required when --uds-name is not set");
                if (!c->server_key)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--server-key is required when --uds-name is not set");
                if (!c->server_ca_cert)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--server-ca-cert is required when --uds-name is not set");
                if (!port_ok(c->server_port))
                        return conf_set_error(ret_error, -EINVAL,
                                              "--server-port %" PRIi64 " out of range 1024..49151",
                                              c->server_port);
        }

        if (!c->cluster_cert)
                return conf_set_error(ret_error, -EINVAL, "--cluster-cert is required");
        if (!c->cluster_key)
                return conf_set_error(ret_error, -EINVAL, "--cluster-key is required");
        if (!!c->agent_namespace != !!c->agent_service_account ||
            !!c->agent_namespace != !!c->authentication_audience)
                return conf_set_error(ret_error, -EINVAL,
                                      "--agent-namespace, --agent-service-account and --authentication-audience "
                                      "must be set together (token authentication)");
        if (server_config_token_auth(c) && c->cluster_ca_cert)
                return conf_set_error(ret_error, -EINVAL,
                                      "--cluster-ca-cert cannot be used with token authentication "
                                      "(--agent-namespace)");
        if (!c->cluster_ca_cert && !c->insecure_allow_unauthenticated_agents && !server_config_token_auth(c))
                return conf_set_error(ret_error, -EINVAL,
                                      "--cluster-ca-cert is required unless token authentication "
                                      "(--agent-namespace) or --insecure-allow-unauthenticated-agents is set");
        if (c->enable_lease_controller) {
                if (!c->lease_namespace)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--lease-namespace must not be empty with --enable-lease-controller");
                if (c->lease_duration_usec <= c->lease_renew_interval_usec)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--lease-duration must be longer than --lease-renew-interval");
                if (!c->lease_label || kube_labels_validate(c->lease_label) < 0)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--lease-label: '%s' is not a list of labels k=v,k=v",
                                              c->lease_label ?: "");
        }

        if (!port_ok(c->agent_port))
                return conf_set_error(ret_error, -EINVAL,
                                      "--agent-port %" PRIi64 " out of range 1024..49151", c->agent_port);
        if (c->health_port != 0 && !port_ok(c->health_port))
                return conf_set_error(ret_error, -EINVAL,
                                      "--health-port %" PRIi64 " out of range 1024..49151 (0 disables it)",
                                      c->health_port);
        if (c->admin_port != 0 && !port_ok(c->admin_port))
                return conf_set_error(ret_error, -EINVAL,
                                      "--admin-port %" PRIi64 " out of range 1024..49151 (0 disables it)",
                                      c->admin_port);

        if (c->server_count < 1)
                return conf_set_error(ret_error, -EINVAL, "--server-count must be at least 1");

        if (conf_strv_length(c->proxy_strategies) == 0)
                return conf_set_error(ret_error, -EINVAL, "--proxy-strategies must not be empty");
        if (!strv_contains_only(c->proxy_strategies, strategies, &bad))
                return conf_set_error(ret_error, -EINVAL,
                                      "--proxy-strategies: unknown strategy '%s' "
                                      "(expected default, destHost or defaultRoute)",
                                      bad);

        if (c->tls_min_version && !streq(c->tls_min_version, "VersionTLS12") &&
            !streq(c->tls_min_version, "VersionTLS13")) {
                if (streq(c->tls_min_version, "VersionTLS10") || streq(c->tls_min_version, "VersionTLS11"))
                        return conf_set_error(ret_error, -EINVAL,
                                              "--tls-min-version=%s is not supported: "
                                              "konn requires TLS 1.2 or newer",
                                              c->tls_min_version);
                return conf_set_error(ret_error, -EINVAL,
                                      "--tls-min-version: unknown version '%s' (expected VersionTLS12 or "
                                      "VersionTLS13)",
                                      c->tls_min_version);
        }

        if (!conf_is_printable_ascii(c->server_id))
                return conf_set_error(ret_error, -EINVAL,
                                      "--server-id must be a non-empty string of printable "
                                      "ASCII characters");
        {
                _cleanup_free_ char *why = NULL;
                NamedAddr *l = NULL;
                Cidr *cidrs = NULL;

                r = named_addr_list_parse(c->reverse_destinations, false, &l, &why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return conf_set_error(ret_error, -EINVAL, "--reverse-destinations: %s", why);
                named_addr_list_free(l, (size_t) r);
                r = cidr_list_parse(c->direct_cidrs, &cidrs, &why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return conf_set_error(ret_error, -EINVAL, "--direct-cidrs: %s", why);
                free(cidrs);
        }

        r = conf_validate_log(c->log_level, c->log_target, ret_error);
        if (r < 0)
                return r;
        if (server_config_needs_kube(c)) {
                _cleanup_(kube_config_freep) KubeConfig *kc = NULL;
                _cleanup_free_ char *e = NULL;

                r = kube_config_load(c->kubeconfig, c->kubeconfig_allow_insecure, &kc, &e);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return conf_set_error(ret_error, r, "%s", e);
        }
        return 0;
}

bool server_config_token_auth(const ServerConfig *c) {
        return c->agent_namespace != NULL;
}

bool server_config_needs_kube(const ServerConfig *c) {
        return server_config_token_auth(c) || c->enable_lease_controller;
}

void server_config_done(ServerConfig *c) {
        if (!c)
                return;
        conf_free_values(server_config_table, c);
}

static int validate(const void *c, char **ret_error) {
        return server_config_validate(c, ret_error);
}

int server_config_load(ServerConfig *ret, int argc, char *argv[], ConfArgs *ret_args, char **ret_error) {
        static const ConfDaemon d = {
                .table = server_config_table,
                .size = sizeof(ServerConfig),
                .default_path = SERVER_CONFIG_DEFAULT_PATH,
                .id_offset = offsetof(ServerConfig, server_id),
                .id_env = "PROXY_SERVER_ID",
                .log_level_offset = offsetof(ServerConfig, log_level),
                .verbosity_offset = offsetof(ServerConfig, verbosity),
                .validate = validate,
        };

        return conf_load_daemon(&d, ret, argc, argv, ret_args, ret_error);
}

void server_config_print_help(FILE *f) {
        conf_print_help(server_config_table, "konn-server",
                        "Konnectivity proxy server: accepts agent tunnels and proxies frontend connections "
                        "through them.",
                        SERVER_CONFIG_DEFAULT_PATH, f);
}
