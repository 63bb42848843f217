/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <inttypes.h>
#include <stddef.h>
#include <string.h>
#include <syslog.h>

#include "addrlist.h"
#include "agent-config.h"
#include "kubeconfig.h"
#include "log.h"
#include "macro.h"

/* Key table notes.
 * - Names, defaults and value syntax are upstream proxy-agent's (protocol.md §8.2): upstream's test harness
 *   passes every flag, defaults included (--alpn-proto=[] --keepalive-time=1h0m0s ...), so all of them must
 *   parse. Profiling flags are CONF_IGNORED, and so is --kube-api-content-type (konn always speaks JSON).
 *   --lease-label is upstream's hidden, deprecated alias of --lease-label-selector (same field; the later wins).
 * - --dial-timeout defaults to upstream's hard-coded 5 s.
 * - --health-server-port/--admin-server-port 0 disable the listener (a konn extension; upstream
 *   needs > 0). */

/* clang-format off */
#define OFF(field) offsetof(AgentConfig, field)
#define STRING(n, f, d, h) { .name = n, .type = CONF_STRING, .offset = OFF(f), .def = d, .help = h }
#define BOOL(n, f, d, h) { .name = n, .type = CONF_BOOL, .offset = OFF(f), .def = d, .help = h }
#define PORT(n, f, mn, d, h) \
        { .name = n, .type = CONF_INT, .offset = OFF(f), .min = mn, .max = 65535, .def = d, .help = h }
#define INT(n, f, mn, mx, d, h) \
        { .name = n, .type = CONF_INT, .offset = OFF(f), .min = mn, .max = mx, .def = d, .help = h }
#define DURATION(n, f, mn, mx, d, h) \
        { .name = n, .type = CONF_DURATION, .offset = OFF(f), .min = mn, .max = mx, .def = d, .help = h }

#define SEC ((int64_t) USEC_PER_SEC)
#define MSEC ((int64_t) USEC_PER_MSEC)
#define HOUR (3600 * SEC)
#define TEN_YEARS (87600 * HOUR)

static const char *const server_count_source_values[] = { "", "default", "max", NULL };

const ConfKey agent_config_table[] = {
        STRING("proxy-server-host", proxy_server_host, "127.0.0.1",
               "Server address; also the name checked in the server certificate"),
        PORT("proxy-server-port", proxy_server_port, 1, "8091", "Server agent port"),
        STRING("ca-cert", ca_cert, NULL, "CA bundle that verifies the server certificate (required)"),
        STRING("agent-cert", agent_cert, NULL, "Client certificate presented to the server"),
        STRING("agent-key", agent_key, NULL, "Private key of --agent-cert"),
        { .name = "alpn-proto", .type = CONF_STRV, .offset = OFF(alpn_proto), .def = "[]",
          .help = "Extra ALPN protocol ids offered before h2" },
        STRING("agent-id", agent_id, NULL,
               "Agent ID sent as agentid (default: $PROXY_AGENT_ID, else a random UUID)"),
        STRING("agent-identifiers", agent_identifiers, NULL,
               "URL query of identifiers: host, ipv4, ipv6, cidr, default-route "
               "(e.g. host=node1&ipv4=10.0.0.5)"),
        STRING("service-account-token-path", service_account_token_path, NULL,
               "File whose content is sent as \"authorization: Bearer ...\""),
        DURATION("sync-interval", sync_interval_usec, MSEC, TEN_YEARS, "1s",
                 "Initial interval of the server discovery loop"),
        DURATION("sync-interval-cap", sync_interval_cap_usec, MSEC, TEN_YEARS, "10s",
                 "Back-off ceiling of the server discovery loop"),
        DURATION("probe-interval", probe_interval_usec, MSEC, TEN_YEARS, "1s",
                 "Interval of the server connection health check"),
        BOOL("sync-forever", sync_forever, "false",
             "Keep looking for new servers after the count is reached"),
        DURATION("keepalive-time", keepalive_time_usec, SEC, TEN_YEARS, "30s",
                 "HTTP/2 PING interval towards servers; a server that leaves a PING unanswered until the next one "
                 "is dropped. Go servers refuse pings more often than every 30 s (upstream default: 1h)"),
        STRING("health-server-host", health_server_host, NULL, "Health listener bind address (empty: all)"),
        PORT("health-server-port", health_server_port, 0, "8093", "Health listener port (0: disabled)"),
        STRING("admin-bind-address", admin_bind_address, "127.0.0.1", "Admin listener bind address"),
        PORT("admin-server-port", admin_server_port, 0, "8094", "Admin listener port (0: disabled)"),
        STRING("admin-socket", admin_socket, NULL,
               "Admin Unix socket path, e.g. /run/konn/konn-agent-admin.sock (mode 0660; empty: none)"),
        BOOL("count-server-leases", count_server_leases, "false",
             "Count server replicas from their Leases in the Kubernetes API (with --lease-namespace and "
             "--lease-label-selector)"),
        STRING("lease-namespace", lease_namespace, "kube-system", "Namespace of the server Leases"),
        STRING("lease-label-selector", lease_label_selector, "k8s-app=konnectivity-server",
               "Label selector of the server Leases"),
        { .name = "lease-label", .type = CONF_STRING, .offset = OFF(lease_label_selector),
          .def = "k8s-app=konnectivity-server", .flags = CONF_HIDDEN,
          .help = "Deprecated alias of --lease-label-selector" },
        { .name = "server-count-source", .type = CONF_ENUM, .offset = OFF(server_count_source), .def = "default",
          .enum_values = server_count_source_values,
          .help = "default: the lease count when --count-server-leases is on, else the servers' servercount; max: "
                  "the larger of both" },
        STRING("kubeconfig", kubeconfig, NULL,
               "Kubernetes client configuration for lease counting (empty: in-cluster configuration)"),

        /* konn-only */
        DURATION("dial-timeout", dial_timeout_usec, MSEC, HOUR, "5s",
                 "Time limit for dialling a destination"),
        DURATION("handshake-timeout", handshake_timeout_usec, MSEC, HOUR, "10s",
                 "Time limit for the TLS handshake with a server"),
        BOOL("kubeconfig-allow-insecure", kubeconfig_allow_insecure, "false",
             "Accept insecure-skip-tls-verify in the kubeconfig (the API server's certificate is then not checked)"),
        DURATION("kube-api-timeout", kube_api_timeout_usec, 100 * MSEC, HOUR, "10s",
                 "Time limit for one Kubernetes API request"),
        DURATION("lease-count-interval", lease_count_interval_usec, 100 * MSEC, HOUR, "10s",
                 "How often the server Leases are listed (upstream's informer resync: 10s)"),
        BOOL("tunnel-streams", tunnel_streams, "true",
             "Ask konn servers for one HTTP/2 stream per tunnel (per-tunnel flow control); upstream servers "
             "ignore the request"),
        STRING("reverse-listen", reverse_listen, NULL,
               "Node to control plane: NAME=ADDRESS[,...] local listeners (ADDRESS is HOST:PORT or a socket path) "
               "whose connections are carried to the server's destination NAME (needs a konn server)"),
        DURATION("drain-timeout", drain_timeout_usec, 0, HOUR, "30s",
                 "On SIGTERM, how long open connections may take to finish after DRAIN "
                 "(0: exit at once)"),
        INT("stream-window-size", stream_window_size, 16384, INT32_MAX, "1048576",
            "HTTP/2 receive window of each stream, in bytes"),
        INT("connection-window-size", connection_window_size, 65535, INT32_MAX, "16777216",
            "HTTP/2 receive window of each server connection, in bytes: what one server may have in flight "
            "towards this agent"),
        INT("connection-buffer-size", connection_buffer_size, 65536, INT64_C(1) << 40, "134217728",
            "Bytes one server connection may leave with this agent for destinations that are not keeping up (stalled tunnels, whose stream credits are withheld); past it the connection's window stops reopening until they drain. Memory per connection is bounded by this plus the connection window"),
        INT("max-window-size", max_window_size, 0, INT32_MAX, "16777216",
            "Upper bound in bytes to which a stream's receive window grows with the measured bandwidth-delay "
            "product (a stream grows while its reader keeps up and the link's bandwidth still rises; 0: fixed "
            "windows)"),
        INT("relay-chunk-size", relay_chunk_size, 16384, 1048576, "131072",
            "Largest read from a destination and so the largest DATA message sent to servers, in bytes"),
        { .name = "log-level", .type = CONF_LOG_LEVEL, .offset = OFF(log_level),
          .help = "Log level: emerg..debug (default: info, or debug with --v=5 or more)" },
        { .name = "log-target", .type = CONF_ENUM, .offset = OFF(log_target), .def = "auto",
          .enum_values = conf_log_target_values, .help = "Where log lines go" },

        /* upstream flags konn accepts and ignores */
        CONF_IGNORED_KEY("enable-profiling", CONF_BOOL, 0, 0, "false", "pprof on the admin port"),
        CONF_IGNORED_KEY("enable-contention-profiling", CONF_BOOL, 0, 0, "false", "block profiling"),
        CONF_IGNORED_KEY("xfr-channel-size", CONF_INT, 1, INT32_MAX, "150", "Per-connection queue depth"),
        CONF_IGNORED_KEY("warn-on-channel-limit", CONF_BOOL, 0, 0, "false", "Log when a queue is full"),
        CONF_IGNORED_KEY("kube-api-content-type", CONF_STRING, 0, 0, "application/vnd.kubernetes.protobuf",
                         "Kubernetes client content type"),
        CONF_KLOG_KEYS(OFF(verbosity)),
        {}
};
/* clang-format on */

/* Upstream agent's validateAgentIdentifiers(): url.ParseQuery(), then only known keys. A parse error
 * anywhere wins over an unknown key, as in Go. */
static int validate_identifiers(const char *q, char **ret_error) {
        static const char *const keys[] = { "host", "ipv4", "ipv6", "cidr", "default-route" };
        _cleanup_free_ char *unknown = NULL;
        const char *p = q;
        int r;

        if (!q)
                return 0;
        if (!conf_is_printable_ascii(q))
                return conf_set_error(ret_error, -EINVAL,
                                      "--agent-identifiers must consist of printable ASCII characters");
        while (*p) {
                const char *amp = strchr(p, '&'), *eq, *bad = NULL;
                size_t n = amp ? (size_t) (amp - p) : strlen(p), klen;
                _cleanup_free_ char *key = NULL, *value = NULL;
                bool known = false;

                if (memchr(p, ';', n))
                        return conf_set_error(ret_error, -EINVAL,
                                              "--agent-identifiers: invalid semicolon separator in query");
                if (n > 0) {
                        size_t vlen;

                        eq = memchr(p, '=', n);
                        r = conf_query_unescape(p, eq ? (size_t) (eq - p) : n, &key, &klen, &bad);
                        if (r >= 0 && eq)
                                r = conf_query_unescape(eq + 1, n - (size_t) (eq + 1 - p), &value, &vlen, &bad);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0)
                                return conf_set_error(ret_error, -EINVAL,
                                                      "--agent-identifiers: invalid URL escape '%.*s'",
                                                      (int) MIN(strlen(bad), (size_t) 3), bad);
                        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                                if (strlen(keys[i]) == klen && memcmp(keys[i], key, klen) == 0)
                                        known = true;
                        if (!known && !unknown)
                                unknown = TAKE_PTR(key);
                }
                if (!amp)
                        break;
                p = amp + 1;
        }
        if (unknown)
                return conf_set_error(ret_error, -EINVAL, "--agent-identifiers: unknown address type '%s'",
                                      unknown);
        return 0;
}

int agent_config_validate(const AgentConfig *c, char **ret_error) {
        char a[CONF_DURATION_STRING_MAX], b[CONF_DURATION_STRING_MAX];
        int r;

        assert(c);
        assert(ret_error);

        if (!c->proxy_server_host)
                return conf_set_error(ret_error, -EINVAL, "--proxy-server-host must not be empty");
        if (c->proxy_server_port < 1 || c->proxy_server_port > 65535)
                return conf_set_error(ret_error, -EINVAL,
                                      "--proxy-server-port %" PRIi64 " out of range 1..65535",
                                      c->proxy_server_port);
        if (!c->ca_cert)
                return conf_set_error(ret_error, -EINVAL, "--ca-cert is required");
        if (!c->agent_cert != !c->agent_key)
                return conf_set_error(ret_error, -EINVAL,
                                      "--agent-cert and --agent-key must be set together");
        if (c->sync_interval_usec > c->sync_interval_cap_usec)
                return conf_set_error(ret_error, -EINVAL,
                                      "--sync-interval %s must not be greater than --sync-interval-cap %s",
                                      conf_format_duration(c->sync_interval_usec, a),
                                      conf_format_duration(c->sync_interval_cap_usec, b));
        for (char **p = c->alpn_proto; p && *p; p++)
                if (strlen(*p) > 255)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--alpn-proto: protocol id '%.20s...' is longer than "
                                              "255 bytes",
                                              *p);
        if (!conf_is_printable_ascii(c->agent_id))
                return conf_set_error(ret_error, -EINVAL,
                                      "--agent-id must be a non-empty string of printable ASCII characters");
        r = validate_identifiers(c->agent_identifiers, ret_error);
        if (r < 0)
                return r;
        {
                _cleanup_free_ char *why = NULL;
                NamedAddr *l = NULL;

                r = named_addr_list_parse(c->reverse_listen, true, &l, &why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return conf_set_error(ret_error, -EINVAL, "--reverse-listen: %s", why);
                named_addr_list_free(l, (size_t) r);
        }
        r = conf_validate_log(c->log_level, c->log_target, ret_error);
        if (r < 0)
                return r;
        if (c->count_server_leases) {
                _cleanup_(kube_config_freep) KubeConfig *kc = NULL;
                _cleanup_free_ char *e = NULL;

                if (!c->lease_namespace)
                        return conf_set_error(ret_error, -EINVAL,
                                              "--lease-namespace must not be empty with --count-server-leases");
                if (c->lease_label_selector && !conf_is_printable_ascii(c->lease_label_selector))
                        return conf_set_error(ret_error, -EINVAL,
                                              "--lease-label-selector must consist of printable ASCII characters");
                r = kube_config_load(c->kubeconfig, c->kubeconfig_allow_insecure, &kc, &e);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return conf_set_error(ret_error, r, "%s", e);
        }
        return 0;
}

void agent_config_done(AgentConfig *c) {
        if (!c)
                return;
        conf_free_values(agent_config_table, c);
}

static int validate(const void *c, char **ret_error) {
        return agent_config_validate(c, ret_error);
}

int agent_config_load(AgentConfig *ret, int argc, char *argv[], ConfArgs *ret_args, char **ret_error) {
        static const ConfDaemon d = {
                .table = agent_config_table,
                .size = sizeof(AgentConfig),
                .default_path = AGENT_CONFIG_DEFAULT_PATH,
                .id_offset = offsetof(AgentConfig, agent_id),
                .id_env = "PROXY_AGENT_ID",
                .log_level_offset = offsetof(AgentConfig, log_level),
                .verbosity_offset = offsetof(AgentConfig, verbosity),
                .validate = validate,
        };

        return conf_load_daemon(&d, ret, argc, argv, ret_args, ret_error);
}

void agent_config_print_help(FILE *f) {
        conf_print_help(agent_config_table, "konn-agent",
                        "Konnectivity proxy agent: keeps tunnels to the proxy servers and dials "
                        "destinations for them.",
                        AGENT_CONFIG_DEFAULT_PATH, f);
}
