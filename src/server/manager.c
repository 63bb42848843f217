/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include "backend.h"
#include "bufpool.h"
#include "connect.h"
#include "conf.h"
#include "daemon.h"
#include "h2conn.h"
#include "lease.h"
#include "log.h"
#include "manager.h"
#include "sock.h"
#include "tls.h"
#include "reverse.h"
#include "tunnel.h"

/* One accepted HTTP/2 connection: an agent's (TLS), or a gRPC frontend's (Unix socket, or TLS). Owned by the
 * Manager; its H2Conn frees itself after on_close. */
struct AgentLink {
        Manager *manager;
        LIST_FIELDS(AgentLink, links);
        H2Conn *conn;
        char peer[128];
        bool frontend;
        bool got_call;
};

static void link_free(AgentLink *l) {
        if (l->frontend)
                l->manager->n_frontend_links--;
        else
                l->manager->n_agent_links--;
        LIST_REMOVE(links, l->manager->links, l);
        free(l);
}

static int link_on_call(H2Conn *c, GrpcCall *call, const char **ret_message, void *userdata) {
        AgentLink *l = userdata;

        l->got_call = true;
        if (l->frontend)
                return grpc_frontend_on_call(l->manager, l->peer, call, ret_message);
        if (streq_ptr(grpc_call_path(call), KONN_REVERSE_STREAM_PATH)) {
                /* Node → control plane: only on a connection whose Connect stream negotiated it. */
                for (Backend *b = l->manager->backends; b; b = b->backends_next)
                        if (b->link == l && b->reverse)
                                return reverse_stream_opened(b, call, ret_message);
                *ret_message = "reverse connections were not negotiated on this connection";
                return GRPC_STATUS_FAILED_PRECONDITION;
        }
        if (streq_ptr(grpc_call_path(call), KONN_TUNNEL_STREAM_PATH)) {
                /* A tunnel's own stream belongs to the Connect stream on the same connection. */
                for (Backend *b = l->manager->backends; b; b = b->backends_next)
                        if (b->link == l && b->tunnel_streams)
                                return tunnel_stream_opened(b, call, ret_message);
                *ret_message = "tunnel streams were not negotiated on this connection";
                return GRPC_STATUS_FAILED_PRECONDITION;
        }
        return backend_on_call(l->manager, l, call, ret_message);
}

static void link_on_close(H2Conn *c, int error, const char *reason, void *userdata) {
        AgentLink *l = userdata;

        if (!l->got_call)
                /* An agent with a bad certificate retries in a loop: one line per peer and interval. */
                log_peer_warning(l->peer, "%s connection from %s failed before any stream: %s",
                                 l->frontend ? "Frontend" : "Agent", l->peer, reason ?: strerror(-error));
        else
                log_debug("%s connection from %s closed: %s", l->frontend ? "Frontend" : "Agent", l->peer,
                          reason ?: strerror(-error));
        link_free(l);
}

static const H2ConnHandler link_handler = {
        .on_call = link_on_call,
        .on_close = link_on_close,
};

static int link_new(Manager *m, int fd, bool frontend, const char *peer) {
        _cleanup_close_ int cfd = fd;
        SSL_CTX *ctx = frontend ? m->frontend_ctx : m->agent_ctx;
        H2ConnSettings st = {
                .handshake_timeout_usec = m->config->handshake_timeout_usec,
                /* kube-apiserver multiplexes many Proxy streams on one connection. */
                .max_concurrent_streams = frontend ? 10000 : (uint32_t) MIN(m->config->max_tunnels_per_agent + 16, (int64_t) INT32_MAX),
                .stream_window = (uint32_t) m->config->stream_window_size,
                .connection_window = (uint32_t) m->config->connection_window_size,
                .window_max = (uint32_t) m->config->max_window_size,
                .held_max = (uint64_t) m->config->connection_buffer_size,
                .keepalive_usec = frontend ? m->config->frontend_keepalive_time_usec : m->config->keepalive_time_usec,
        };
        TlsConn *tc = NULL;
        AgentLink *l;
        Transport t;
        int r;

        if (ctx) {
                r = tls_conn_new(ctx, cfd, true, NULL, &tc);
                if (r < 0)
                        return r;
        }
        l = calloc(1, sizeof(AgentLink));
        if (!l) {
                tls_conn_free(tc);
                return -ENOMEM;
        }
        l->manager = m;
        l->frontend = frontend;
        if (frontend)
                m->n_frontend_links++;
        else
                m->n_agent_links++;
        (void) snprintf(l->peer, sizeof(l->peer), "%s", peer);
        transport_init(&t, TAKE_FD(cfd), tc);
        LIST_PREPEND(links, m->links, l);
        r = h2conn_new(m->event, &t, true, &st, &link_handler, l, &l->conn);
        if (r < 0) {
                link_free(l);
                return r;
        }
        return 0;
}

static int on_agent_accept(int cfd, const SockAddr *peer, socklen_t plen, void *userdata) {
        _cleanup_close_ int fd = cfd;
        Manager *m = userdata;
        char name[SOCK_ADDR_STRING_MAX];

        (void) sock_addr_to_string(peer, plen, name, sizeof(name));
        /* Connections that have not opened their Connect stream yet count too: twice --max-agents bounds the
         * TLS state held for them (the stream itself is refused with a gRPC status, see backend_on_call()). */
        if ((int64_t) m->n_agent_links >= 2 * m->config->max_agents) {
                manager_refused(m, "agents", name, "agent connection");
                return 0;
        }
        sock_set_nodelay(fd);
        return link_new(m, TAKE_FD(fd), false, name);
}

static void on_frontend_refuse(int cfd, void *userdata) {
        Manager *m = userdata;

        manager_refused(m, "file_descriptors", NULL, "frontend connection");
        /* Only a plain HTTP CONNECT socket can be answered without a handshake. */
        if (!m->frontend_ctx && m->config->mode == SERVER_MODE_HTTP_CONNECT)
                (void) !send(cfd, CONNECT_RESPONSE_NO_DESCRIPTORS, strlen(CONNECT_RESPONSE_NO_DESCRIPTORS),
                             MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void on_agent_refuse(int cfd, void *userdata) {
        manager_refused(userdata, "file_descriptors", NULL, "agent connection");
}

static int on_frontend_accept(int cfd, const SockAddr *peer, socklen_t plen, void *userdata) {
        _cleanup_close_ int fd = cfd;
        Manager *m = userdata;
        char name[SOCK_ADDR_STRING_MAX];

        if (m->frontend_ctx) {
                sock_set_nodelay(fd);
                (void) sock_addr_to_string(peer, plen, name, sizeof(name));
        } else
                (void) snprintf(name, sizeof(name), "unix:%s", m->config->uds_name);
        if (m->config->mode == SERVER_MODE_GRPC) {
                /* Each Proxy stream counts against the limit (grpc_frontend_on_call()); a connection carries many. */
                if (m->n_frontend_links >= m->frontend_limit) {
                        manager_refused(m, "frontend_connections", name, "gRPC frontend connection");
                        return 0;
                }
                return link_new(m, TAKE_FD(fd), true, name);
        }
        if (!manager_frontend_has_room(m)) {
                manager_refused(m, "frontend_connections", name, "frontend connection");
                /* A plain socket gets the documented bytes; a TLS client would need a handshake first. */
                if (!m->frontend_ctx)
                        (void) !send(fd, CONNECT_RESPONSE_LIMIT_FRONTEND, strlen(CONNECT_RESPONSE_LIMIT_FRONTEND),
                                     MSG_NOSIGNAL | MSG_DONTWAIT);
                return 0;
        }
        return connect_tunnel_new(m, TAKE_FD(fd), m->frontend_ctx != NULL, name);
}

bool manager_frontend_has_room(Manager *m) {
        return m->n_tunnels < m->frontend_limit;
}

void manager_refused(Manager *m, const char *limit, const char *peer, const char *what) {
        metric_add(m->limit_refusals, (const char *const[]){ limit }, 1);
        log_peer_full_errno_fields(LOG_WARNING, 0, limit, LOG_FIELDS({ "KONN_LIMIT", limit }, { "KONN_PEER", peer }),
                                   "Refusing %s%s%s: limit '%s' reached (%s).", what, peer ? " from " : "",
                                   peer ?: "", limit,
                                   streq(limit, "file_descriptors") ? "out of file descriptors" :
                                   streq(limit, "agents") ? "--max-agents" :
                                   streq(limit, "pending_dials") ? "--max-pending-dials" :
                                   streq(limit, "tunnels_per_agent") ? "--max-tunnels-per-agent" :
                                   "--max-frontend-connections");
}

/* --max-frontend-connections, or with 0 the open-files limit less a reserve for agents, listeners and the
 * process itself (an eighth, at least 64), at least 16. */
static unsigned frontend_limit(const ServerConfig *c) {
        struct rlimit rl;
        uint64_t n, reserve;

        if (c->max_frontend_connections > 0)
                return (unsigned) MIN(c->max_frontend_connections, (int64_t) UINT_MAX);
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
                return 1U << 20;
        n = rl.rlim_cur;
        reserve = MAX(n / 8, 64);
        return (unsigned) MIN(MAX(n > reserve ? n - reserve : 0, 16), (uint64_t) UINT_MAX);
}

static unsigned manager_random(Manager *m, unsigned n) {
        m->rng = m->rng * 6364136223846793005ULL + 1442695040888963407ULL;
        return (unsigned) ((m->rng >> 33) % n);
}

static bool has_room(const Backend *b) {
        return (int64_t) (b->n_pending + idmap_size(b->tunnels)) < b->manager->config->max_tunnels_per_agent;
}

static bool eligible(const Backend *b, bool need_default_route) {
        return !b->superseded && (!need_default_route || b->default_route) && has_room(b);
}

/* default / defaultRoute (§3.3): from a random start over the agents, the first that is not draining; if all are
 * draining, the first draining one seen. */
static Backend *pick_random(Manager *m, bool need_default_route) {
        Backend *draining = NULL;
        unsigned n = 0, start, i;

        for (Backend *b = m->backends; b; b = b->backends_next)
                if (eligible(b, need_default_route))
                        n++;
        if (n == 0)
                return NULL;
        start = manager_random(m, n);
        for (unsigned pass = 0; pass < 2; pass++) {
                i = 0;
                for (Backend *b = m->backends; b; b = b->backends_next) {
                        if (!eligible(b, need_default_route))
                                continue;
                        if ((pass == 0 && i++ < start) || (pass == 1 && i++ >= start))
                                continue;
                        if (!b->draining)
                                return b;
                        if (!draining)
                                draining = b;
                }
        }
        return draining;
}

/* destHost (§3.3): agents whose host/ipv4/ipv6 identifier equals the dial host exactly; the oldest that is not
 * draining, else the oldest draining one. */
static Backend *pick_dest_host(Manager *m, const char *address) {
        Backend *best = NULL, *draining = NULL;
        char host[256];
        uint16_t port;
        const char *reason;

        if (sock_split_host_port(address, host, sizeof(host), &port, &reason) < 0)
                return NULL;
        /* The list is newest first: the last match is the oldest. */
        for (Backend *b = m->backends; b; b = b->backends_next)
                for (char **h = b->hosts; h && *h && has_room(b); h++)
                        if (streq(*h, host)) {
                                if (b->draining)
                                        draining = b;
                                else
                                        best = b;
                                break;
                        }
        return best ?: draining;
}

Backend *manager_pick_backend(Manager *m, const char *address) {
        for (char **st = m->config->proxy_strategies; st && *st; st++) {
                Backend *b = NULL;

                if (streq(*st, "default"))
                        b = pick_random(m, false);
                else if (streq(*st, "defaultRoute"))
                        b = pick_random(m, true);
                else if (streq(*st, "destHost"))
                        b = pick_dest_host(m, address);
                if (b)
                        return b;
        }
        return NULL;
}

int64_t manager_new_dial_id(Manager *m) {
        for (;;) {
                uint64_t x;
                int64_t id;

                /* splitmix64 over a counter seeded from getrandom(). */
                x = (m->rng += 0x9e3779b97f4a7c15ULL);
                x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
                x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
                x ^= x >> 31;
                id = (int64_t) (x & INT64_MAX);
                if (id != 0 && !idmap_get(m->pending, id))
                        return id;
        }
}

void manager_count_packet(Manager *m, const char *segment, int packet_type) {
        metric_add(m->metrics.stream_packets_total,
                   (const char *const[]){ segment, packet_type_to_string((PacketType) packet_type) }, 1);
}

void manager_count_dial_failure(Manager *m, const char *reason) {
        metric_add(m->metrics.dial_failure_count, (const char *const[]){ reason }, 1);
}

/* Nothing open: memtrim may give the memory the tunnels used back to the system. */
static bool manager_idle(void *userdata) {
        Manager *m = userdata;

        return m->n_tunnels == 0 && m->n_rstreams == 0;
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        manager_update_status(m);
        return 0;
}

void manager_status_changed(Manager *m) {
        int r;

        if (manager_idle(m))
                memtrim_schedule(&m->trim);

        if (m->status_timer) {
                int enabled = SD_EVENT_OFF;
                (void) sd_event_source_get_enabled(m->status_timer, &enabled);
                if (enabled != SD_EVENT_OFF)
                        return;
                (void) sd_event_source_set_time_relative(m->status_timer, USEC_PER_SEC);
                (void) sd_event_source_set_enabled(m->status_timer, SD_EVENT_ONESHOT);
                return;
        }
        r = sd_event_add_time_relative(m->event, &m->status_timer, CLOCK_MONOTONIC, USEC_PER_SEC, USEC_PER_SEC,
                                       on_status_timer, m);
        if (r < 0)
                manager_update_status(m);
}

void manager_update_status(Manager *m) {
        if (m->n_rstreams > 0)
                (void) sd_notifyf(false, "STATUS=%u agent stream%s, %u frontend connection%s, %u node connection%s",
                                  m->n_backends, m->n_backends == 1 ? "" : "s", m->n_tunnels,
                                  m->n_tunnels == 1 ? "" : "s", m->n_rstreams, m->n_rstreams == 1 ? "" : "s");
        else
                (void) sd_notifyf(false, "STATUS=%u agent stream%s, %u frontend connection%s", m->n_backends,
                                  m->n_backends == 1 ? "" : "s", m->n_tunnels, m->n_tunnels == 1 ? "" : "s");
}

static int load_ctx(const char *what, const char *cert, const char *key, const char *ca, TlsAlpn alpn, SSL_CTX **ret) {
        _cleanup_free_ char *error = NULL;
        int r;

        r = tls_ctx_new_server(cert, key, ca, alpn, ret, &error);
        if (r < 0)
                return log_error_errno(r, "Failed to set up TLS for the %s listener: %s", what, error ?: "unknown error");
        return 0;
}

static bool has_uds(const ServerConfig *c) {
        return c->uds_name && *c->uds_name;
}

/* Both TLS contexts for configuration c. The frontend one stays NULL for a Unix-socket frontend. */
static int load_contexts(const ServerConfig *c, SSL_CTX **ret_agent, SSL_CTX **ret_frontend) {
        SSL_CTX *a = NULL, *f = NULL;
        int r;

        r = load_ctx("agent", c->cluster_cert, c->cluster_key,
                     c->cluster_ca_cert && *c->cluster_ca_cert ? c->cluster_ca_cert : NULL, TLS_ALPN_H2, &a);
        if (r < 0)
                return r;
        if (!has_uds(c)) {
                r = load_ctx("frontend", c->server_cert, c->server_key, c->server_ca_cert,
                             c->mode == SERVER_MODE_GRPC ? TLS_ALPN_H2 : TLS_ALPN_HTTP11, &f);
                if (r < 0) {
                        SSL_CTX_free(a);
                        return r;
                }
        }
        *ret_agent = a;
        *ret_frontend = f;
        return 0;
}

static int listen_agent(Manager *m) {
        const ServerConfig *c = m->config;

        m->agent_fd = daemon_take_listen_fd("agent");
        if (m->agent_fd >= 0)
                return 0;
        m->agent_fd = sock_listen_tcp(c->agent_bind_address, (uint16_t) c->agent_port);
        if (m->agent_fd < 0)
                return log_error_errno(m->agent_fd, "Failed to listen on agent port %s:%" PRIi64 ": %m",
                                       c->agent_bind_address ?: "", c->agent_port);
        return 0;
}

static int listen_frontend(Manager *m) {
        const ServerConfig *c = m->config;
        int fd;

        fd = daemon_take_listen_fd("frontend");
        if (fd >= 0) {
                m->frontend_fd = fd;
                m->frontend_passed = true;
                if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0 && m->frontend_ctx) {
                        /* A Unix socket from systemd carries no TLS, whatever the TCP settings say. */
                        SSL_CTX_free(m->frontend_ctx);
                        m->frontend_ctx = NULL;
                }
                return 0;
        }
        if (has_uds(c)) {
                m->frontend_fd = sock_listen_unix(c->uds_name, 0660, c->delete_existing_uds_file);
                if (m->frontend_fd < 0)
                        return log_error_errno(m->frontend_fd, "Failed to listen on Unix socket '%s': %m", c->uds_name);
                m->frontend_uds_path = strdup(c->uds_name);
                return 0;
        }
        m->frontend_fd = sock_listen_tcp(c->server_bind_address, (uint16_t) c->server_port);
        if (m->frontend_fd < 0)
                return log_error_errno(m->frontend_fd, "Failed to listen on frontend port %s:%" PRIi64 ": %m",
                                       c->server_bind_address ?: "", c->server_port);
        return 0;
}

/* Parse --direct-cidrs of c into the manager (the configuration was validated, so only memory can fail). */
static int load_direct_cidrs(Manager *m, const ServerConfig *c) {
        _cleanup_free_ char *why = NULL;
        Cidr *l = NULL;
        int n;

        n = cidr_list_parse(c->direct_cidrs, &l, &why);
        if (n < 0)
                return log_error_errno(n, "--direct-cidrs: %s", why ?: "out of memory");
        free(m->direct_cidrs);
        m->direct_cidrs = l;
        m->n_direct_cidrs = (size_t) n;
        if (n > 0)
                log_info("Direct route: dials to %s go straight from this server, not through agents.",
                         c->direct_cidrs);
        return 0;
}

/* The Kubernetes client (token authentication, leases). */
static int start_kube(Manager *m) {
        const ServerConfig *c = m->config;
        _cleanup_free_ char *error = NULL;
        int r;

        if (!server_config_needs_kube(c))
                return 0;
        r = kube_config_load(c->kubeconfig, c->kubeconfig_allow_insecure, &m->kube_config, &error);
        if (r < 0)
                return log_error_errno(r, "%s", error ?: "Out of memory.");
        r = kube_client_new(m->event, m->kube_config, &m->kube, &error);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the Kubernetes client: %s", error ?: "out of memory");
        if (server_config_token_auth(c))
                log_info("Agents authenticate with ServiceAccount tokens (system:serviceaccount:%s:%s, audience "
                         "'%s'), reviewed by %s (%s).",
                         c->agent_namespace, c->agent_service_account, c->authentication_audience,
                         m->kube_config->server, m->kube_config->origin);
        if (c->enable_lease_controller) {
                r = lease_controller_new(m, &m->lease);
                if (r < 0)
                        return log_error_errno(r, "Failed to start the lease controller: %m");
        }
        return 0;
}

int manager_start(Manager *m) {
        const ServerConfig *c = m->config;
        int r;

        r = load_direct_cidrs(m, c);
        if (r < 0)
                return r;
        r = reverse_load_config(m, c);
        if (r < 0)
                return r;
        r = load_contexts(c, &m->agent_ctx, &m->frontend_ctx);
        if (r < 0)
                return r;
        r = start_kube(m);
        if (r < 0)
                return r;
        if ((!c->cluster_ca_cert || !*c->cluster_ca_cert) && !server_config_token_auth(c))
                log_warning("--insecure-allow-unauthenticated-agents is set: agents are accepted WITHOUT any "
                            "authentication. Anyone who can reach port %" PRIi64 " can receive tunnelled traffic.",
                            c->agent_port);

        r = listen_agent(m);
        if (r < 0)
                return r;
        m->frontend_limit = frontend_limit(c);
        r = listener_new(m->event, m->agent_fd, "agent", on_agent_accept, on_agent_refuse, m, &m->agent_listener);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the agent listener: %m");
        r = listen_frontend(m);
        if (r < 0)
                return r;
        r = listener_new(m->event, m->frontend_fd, "frontend", on_frontend_accept, on_frontend_refuse, m,
                         &m->frontend_listener);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the frontend listener: %m");
        r = server_health_start(m);
        if (r < 0)
                return r;

        if (has_uds(c) || m->frontend_passed)
                log_struct(LOG_INFO, LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_STARTED }, { "KONN_SERVER_ID", c->server_id }),
                           "konn-server %s (id '%s') accepting agents on port %" PRIi64 ", %s frontend on %s%s.",
                           PACKAGE_VERSION, c->server_id, c->agent_port,
                           c->mode == SERVER_MODE_GRPC ? "gRPC" : "HTTP CONNECT",
                           m->frontend_passed ? "a socket passed by systemd" : "unix:",
                           m->frontend_passed ? "" : c->uds_name);
        else
                log_struct(LOG_INFO, LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_STARTED }, { "KONN_SERVER_ID", c->server_id }),
                           "konn-server %s (id '%s') accepting agents on port %" PRIi64
                           ", %s frontend on TCP+mTLS port %" PRIi64 ".",
                           PACKAGE_VERSION, c->server_id, c->agent_port,
                           c->mode == SERVER_MODE_GRPC ? "gRPC" : "HTTP CONNECT", c->server_port);
        (void) sd_notify(false, "READY=1");
        manager_update_status(m);
        return 0;
}

static size_t stop_count(void *userdata) {
        Manager *m = userdata;
        return m->n_tunnels + m->n_rstreams;
}

static void stop_continue(void *userdata) {
        Manager *m = userdata;

        if (m->config->graceful_shutdown_timeout_usec == 0 || stop_count(m) == 0) {
                (void) sd_event_exit(m->event, 0);
                return;
        }
        log_info("Waiting up to %" PRIu64 " s for %u connection%s to finish.",
                 m->config->graceful_shutdown_timeout_usec / USEC_PER_SEC, m->n_tunnels, m->n_tunnels == 1 ? "" : "s");
        (void) daemon_stop_wait(&m->stop_wait, m->event, m->config->graceful_shutdown_timeout_usec, stop_count, m, "Graceful shutdown");
}

void manager_stop(Manager *m) {
        if (m->stopping)
                return;
        m->stopping = true;
        (void) sd_notify(false, "STOPPING=1");
        /* No new agents or frontend connections; the listening sockets stay open (systemd may hold them). */
        listener_set_enabled(m->agent_listener, false);
        listener_set_enabled(m->frontend_listener, false);
        /* Our lease goes first (bounded), so agents stop counting this server at once (§10). */
        if (m->lease && lease_controller_stop(m->lease, stop_continue, m) >= 0)
                return;
        stop_continue(m);
}

void manager_reload(Manager *m) {
        _cleanup_free_ char *error = NULL;
        ServerConfig *n, *old = m->config;
        SSL_CTX *actx = NULL, *fctx = NULL;
        int r;

        (void) sd_notify(false, "RELOADING=1");
        n = daemon_load_config();
        if (!n)
                goto done;
        r = load_contexts(n, &actx, &fctx);
        if (r < 0) {
                log_error("Reloading the configuration failed (TLS material), keeping the running one.");
                server_config_done(n);
                free(n);
                goto done;
        }
        if (server_config_needs_kube(n) != server_config_needs_kube(old) ||
            n->enable_lease_controller != old->enable_lease_controller ||
            server_config_token_auth(n) != server_config_token_auth(old))
                log_warning("Turning token authentication or the lease controller on or off takes effect only after "
                            "a restart.");
        if (m->kube && server_config_needs_kube(n)) {
                /* Re-read the kubeconfig (or the in-cluster files): rotated certificates, a new token, ... */
                KubeConfig *kc = NULL;
                r = kube_config_load(n->kubeconfig, n->kubeconfig_allow_insecure, &kc, &error);
                if (r < 0) {
                        log_error("Reloading the configuration failed (%s), keeping the running one.",
                                  error ?: "out of memory");
                        SSL_CTX_free(actx);
                        SSL_CTX_free(fctx);
                        server_config_done(n);
                        free(n);
                        goto done;
                }
                kube_client_set_config(m->kube, kc);
                kube_config_free(m->kube_config);
                m->kube_config = kc;
        }
        if (!streq_ptr(n->lease_namespace, old->lease_namespace) || !streq_ptr(n->lease_label, old->lease_label)) {
                log_warning("Lease settings take effect only after a restart; keeping the running ones.");
                free(n->lease_namespace);
                free(n->lease_label);
                n->lease_namespace = old->lease_namespace ? strdup(old->lease_namespace) : NULL;
                n->lease_label = old->lease_label ? strdup(old->lease_label) : NULL;
        }
        n->enable_lease_controller = old->enable_lease_controller;
        /* What the listeners and the agents already know cannot change without a restart. */
        if (n->mode != old->mode || n->agent_port != old->agent_port || n->server_port != old->server_port ||
            !streq_ptr(n->uds_name, old->uds_name) || !streq_ptr(n->agent_bind_address, old->agent_bind_address) ||
            !streq_ptr(n->server_bind_address, old->server_bind_address))
                log_warning("Listener settings changed; they take effect only after a restart.");
        if (!streq_ptr(n->server_id, old->server_id)) {
                log_warning("The server ID cannot change on reload; keeping '%s'.", old->server_id);
                free(n->server_id);
                n->server_id = strdup(old->server_id);
        }
        n->mode = old->mode;
        if (fctx && !m->frontend_ctx) {
                /* The running frontend is a Unix socket. */
                SSL_CTX_free(fctx);
                fctx = NULL;
        }
        SSL_CTX_free(m->agent_ctx);
        m->agent_ctx = actx;
        if (m->frontend_ctx) {
                SSL_CTX_free(m->frontend_ctx);
                m->frontend_ctx = fctx;
        }
        if (!streq_ptr(n->direct_cidrs, old->direct_cidrs) && load_direct_cidrs(m, n) < 0)
                log_warning("Keeping the previous direct-cidrs.");
        /* New reverse streams use the new allow-list; open ones stay. Agents connected before negotiated the
         * feature with the old one (an agent learns of a change on its next connection). */
        if (!streq_ptr(n->reverse_destinations, old->reverse_destinations) && reverse_load_config(m, n) < 0)
                log_warning("Keeping the previous reverse-destinations.");
        m->config = n;
        m->frontend_limit = frontend_limit(n);
        server_config_done(old);
        free(old);
        log_set_max_level(n->log_level);
        log_set_target(n->log_target);
        log_struct(LOG_INFO, LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_RELOAD }),
                   "Configuration reloaded; new connections use the new certificates.");
done:
        (void) sd_notify(false, "READY=1");
        manager_update_status(m);
}

int manager_new(sd_event *e, ServerConfig *config, Manager **ret) {
        Manager *m;

        m = calloc(1, sizeof(Manager));
        if (!m) {
                server_config_done(config);
                free(config);
                return -ENOMEM;
        }
        m->event = sd_event_ref(e);
        memtrim_init(&m->trim, m->event, manager_idle, m);
        m->config = config;
        /* Only here: buffers in use keep their size, so a reload cannot change it. */
        (void) bufpool_set_chunk_size((size_t) config->relay_chunk_size);
        m->agent_fd = m->frontend_fd = -EBADF;
        m->pending = idmap_new();
        if (!m->pending) {
                manager_free(m);
                return -ENOMEM;
        }
        if (getrandom(&m->rng, sizeof(m->rng), 0) != sizeof(m->rng))
                m->rng = (uint64_t) time(NULL) ^ (uint64_t) getpid();
        if (server_health_init(m) < 0) {
                manager_free(m);
                return -ENOMEM;
        }
        *ret = m;
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        while (m->backends)
                backend_free(m->backends, NULL);
        while (m->tunnels)
                tunnel_free(m->tunnels);
        while (m->rstreams)
                reverse_stream_free(m->rstreams);
        while (m->links) {
                AgentLink *l = m->links;
                h2conn_free(l->conn);
                link_free(l);
        }
        while (m->authenticating)
                backend_free(m->authenticating, NULL);
        m->lease = lease_controller_free(m->lease);
        m->kube = kube_client_free(m->kube);
        m->kube_config = kube_config_free(m->kube_config);
        auth_done(&m->auth);
        server_health_done(m);
        m->agent_listener = listener_free(m->agent_listener);
        m->frontend_listener = listener_free(m->frontend_listener);
        m->agent_fd = safe_close(m->agent_fd);
        m->frontend_fd = safe_close(m->frontend_fd);
        if (m->frontend_uds_path && !m->frontend_passed)
                (void) unlink(m->frontend_uds_path);
        daemon_stop_wait_done(&m->stop_wait);
        m->status_timer = sd_event_source_disable_unref(m->status_timer);
        memtrim_done(&m->trim);
        free(m->frontend_uds_path);
        SSL_CTX_free(m->agent_ctx);
        SSL_CTX_free(m->frontend_ctx);
        idmap_free(m->pending);
        free(m->direct_cidrs);
        named_addr_list_free(m->reverse_dests, m->n_reverse_dests);
        m->resolver = resolver_free(m->resolver); /* after the reverse streams: they may hold lookups */
        if (m->config) {
                server_config_done(m->config);
                free(m->config);
        }
        sd_event_unref(m->event);
        free(m);
        return NULL;
}
