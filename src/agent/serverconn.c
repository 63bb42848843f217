/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <time.h>

#include "endpoint.h"
#include "kubeconfig.h"
#include "log.h"
#include "manager.h"
#include "reverse.h"
#include "serverconn.h"
#include "sock.h"
#include "tls.h"

static void server_conn_teardown(ServerConn *sc, const char *reason);

static void free_endpoints(ServerConn *sc) {
        Endpoint *ep;

        /* Every endpoint carried by this stream dies with it (§5.4). */
        while ((ep = idmap_steal_first(sc->endpoints))) {
                if (idmap_get(sc->dials, ep->dial_id) == ep)
                        (void) idmap_remove(sc->dials, ep->dial_id);
                ep->connect_id = 0;
                if (ep->relay_live)
                        relay_detach_call(&ep->relay);
                endpoint_free(ep);
        }
}

ServerConn *server_conn_free(ServerConn *sc) {
        if (!sc)
                return NULL;
        if (sc->endpoints)
                free_endpoints(sc);
        reverse_server_gone(sc);
        if (sc->call) {
                grpc_call_finish(sc->call, GRPC_STATUS_OK, NULL);
                sc->call = NULL;
        }
        sc->conn = h2conn_free(sc->conn);
        sc->idle_check = sd_event_source_disable_unref(sc->idle_check);
        sc->query = resolve_query_cancel(sc->query);
        sc->io = sd_event_source_disable_unref(sc->io);
        sc->timer = sd_event_source_disable_unref(sc->timer);
        sc->fd = safe_close(sc->fd);
        idmap_free(sc->endpoints);
        idmap_free(sc->dials);
        free(sc->host);
        free(sc->server_id);
        free(sc);
        return NULL;
}

static int on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        ServerConn *sc = userdata;
        Endpoint *ep;

        if (packet_is_new(p))
                manager_count_packet(sc->manager, METRICS_SEGMENT_TO_AGENT, p->type);
        switch (p->type) {
        case PACKET_DIAL_REQ: {
                int r = endpoint_dial(sc, p);
                if (r < 0)
                        log_warning_errno(r, "Failed to handle a dial request from server '%s': %m", sc->server_id);
                return 0;
        }
        case PACKET_DATA:
                if (p->data.connect_id == 0)
                        return 0;
                ep = idmap_get(sc->endpoints, p->data.connect_id);
                if (!ep) {
                        Packet rsp = { .type = PACKET_CLOSE_RSP,
                                       .close_rsp = { .error = { "unrecognized connectID", 22 },
                                                      .connect_id = p->data.connect_id } };
                        if (packet_is_new(p))
                                (void) server_conn_send(sc, &rsp);
                        return 0;
                }
                return endpoint_deliver(ep, p->data.data, p->data.data_len);
        case PACKET_CLOSE_REQ:
                ep = idmap_get(sc->endpoints, p->close_req.connect_id);
                if (!ep) {
                        Packet rsp = { .type = PACKET_CLOSE_RSP,
                                       .close_rsp = { .error = { "Unknown connectID", 17 },
                                                      .connect_id = p->close_req.connect_id } };
                        (void) server_conn_send(sc, &rsp);
                        return 0;
                }
                if (ep->state != ENDPOINT_CLOSING)
                        endpoint_close_request(ep);
                return 0;
        case PACKET_DIAL_CLS:
                ep = idmap_get(sc->dials, p->dial_cls.random);
                if (ep)
                        endpoint_cancel_dial(ep);
                return 0;
        default:
                log_debug("Ignoring %s packet from server '%s'.", packet_type_to_string(p->type), sc->server_id);
                return 0;
        }
}

static int on_headers(GrpcCall *call, void *userdata) {
        ServerConn *sc = userdata;
        const char *id, *count;
        int64_t n = 0;

        if (grpc_call_header_count(call, "serverid") != 1 || grpc_call_header_count(call, "servercount") != 1) {
                log_warning("Server %s:%u did not send exactly one serverid and servercount, dropping the connection.",
                            sc->host, sc->port);
                return -EBADMSG;
        }
        id = grpc_call_header(call, "serverid", 0);
        count = grpc_call_header(call, "servercount", 0);
        for (const char *c = count; *c; c++) {
                if (*c < '0' || *c > '9' || n > 1000000) {
                        log_warning("Server %s:%u sent an invalid servercount '%s', dropping the connection.",
                                    sc->host, sc->port, count);
                        return -EBADMSG;
                }
                n = n * 10 + (*c - '0');
        }
        if (!*count) {
                log_warning("Server %s:%u sent an empty servercount, dropping the connection.", sc->host, sc->port);
                return -EBADMSG;
        }
        sc->server_id = strdup(id);
        if (!sc->server_id)
                return -ENOMEM;
        sc->tunnel_streams = sc->manager->config->tunnel_streams &&
                             konn_features_has(grpc_call_header(call, KONN_FEATURES_HEADER, 0),
                                               KONN_FEATURE_TUNNEL_STREAMS);
        sc->reverse = sc->manager->n_listeners > 0 &&
                      konn_features_has(grpc_call_header(call, KONN_FEATURES_HEADER, 0), KONN_FEATURE_REVERSE);
        sc->server_count = n;
        if (manager_has_server_id(sc->manager, sc, id)) {
                log_debug("Already connected to server '%s', closing the duplicate connection.", id);
                return -EEXIST;
        }
        sc->state = SERVER_CONN_READY;
        {
                struct timespec ts;
                (void) clock_gettime(CLOCK_REALTIME, &ts);
                sc->since_usec = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
        }
        sc->timer = sd_event_source_disable_unref(sc->timer);
        reverse_server_ready(sc);
        manager_conn_ready(sc->manager, sc);
        return 0;
}

/* The rate-limit key of this server address in log lines ("host/port": one key per server, not per host). */
static const char *server_conn_key(ServerConn *sc) {
        static char key[300];

        (void) snprintf(key, sizeof(key), "%s/%u", sc->host, sc->port);
        return key;
}

static void on_end(GrpcCall *call, int status, const char *message, void *userdata) {
        ServerConn *sc = userdata;

        sc->call = NULL;
        if (sc->state == SERVER_CONN_READY)
                log_struct(LOG_WARNING,
                           LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_SERVER_DISCONNECTED }, { "KONN_SERVER_ID", sc->server_id }),
                           "Stream to server '%s' ended: %s (%s).", sc->server_id, message ?: "no reason given",
                           grpc_status_to_string(status));
        else if (sc->server_id && manager_has_server_id(sc->manager, sc, sc->server_id))
                ; /* duplicate, already logged */
        else
                log_peer_warning(server_conn_key(sc), "Connect stream to %s:%u failed: %s (%s).", sc->host,
                                 sc->port, message ?: "no reason given", grpc_status_to_string(status));
        server_conn_teardown(sc, message);
}

static const GrpcCallHandler call_handler = {
        .on_headers = on_headers,
        .on_packet = on_packet,
        .on_end = on_end,
};

#define TOKEN_FILE_MAX (16 * 1024)

/* "Bearer <token>" from --service-account-token-path, read now: projected tokens rotate (§3.1). Surrounding
 * whitespace is trimmed (a file written by "kubectl create token >file" ends with a newline, which is not allowed
 * in an HTTP/2 header value). */
static int read_authorization(const char *path, char **ret) {
        _cleanup_free_ char *t = NULL;
        size_t n, start = 0;
        int r;

        r = kube_read_file(path, TOKEN_FILE_MAX, &t, &n);
        if (r < 0)
                return r;
        while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' ' || t[n - 1] == '\t'))
                t[--n] = 0;
        while (start < n && (t[start] == ' ' || t[start] == '\t' || t[start] == '\n' || t[start] == '\r'))
                start++;
        if (start == n)
                return -ENODATA;
        for (size_t i = start; i < n; i++)
                if ((unsigned char) t[i] < 0x20 || t[i] == 0x7f)
                        return -EBADMSG;
        return asprintf(ret, "Bearer %s", t + start) < 0 ? -ENOMEM : 0;
}

static void on_ready(H2Conn *c, void *userdata) {
        ServerConn *sc = userdata;
        const AgentConfig *cfg = sc->manager->config;
        _cleanup_free_ char *authorization = NULL;
        const char *md[9] = { "agentid", cfg->agent_id, "agentidentifiers", cfg->agent_identifiers ?: "" };
        char features[64] = "";
        size_t k = 4;
        int r;

        if (cfg->service_account_token_path) {
                r = read_authorization(cfg->service_account_token_path, &authorization);
                if (r < 0) {
                        log_warning_errno(r, "Cannot read the service account token '%s' for %s:%u: %s",
                                          cfg->service_account_token_path, sc->host, sc->port,
                                          r == -ENODATA ? "the file is empty"
                                          : r == -EBADMSG ? "control characters in the token"
                                          : r == -EFBIG  ? "file too large"
                                                         : strerror(-r));
                        h2conn_close(c, r, "cannot read the service account token");
                        return;
                }
                md[k++] = "authorization";
                md[k++] = authorization;
        }
        /* konn features this agent wants (an upstream server ignores the header). */
        if (cfg->tunnel_streams)
                (void) strcat(features, KONN_FEATURE_TUNNEL_STREAMS);
        if (sc->manager->n_listeners > 0)
                (void) strcat(strcat(features, *features ? "," : ""), KONN_FEATURE_REVERSE);
        if (*features) {
                md[k++] = KONN_FEATURES_HEADER;
                md[k++] = features;
        }
        md[k] = NULL;

        if (strchr(sc->host, ':'))
                (void) snprintf(sc->authority, sizeof(sc->authority), "[%s]:%u", sc->host, sc->port);
        else
                (void) snprintf(sc->authority, sizeof(sc->authority), "%s:%u", sc->host, sc->port);
        r = grpc_call_start(c, "/AgentService/Connect", sc->authority, (char *const *) md, &call_handler, sc,
                            &sc->call);
        if (r < 0) {
                log_warning_errno(r, "Failed to start the Connect stream to %s:%u: %m", sc->host, sc->port);
                h2conn_close(c, r, "failed to start stream");
        }
        if (authorization)
                explicit_bzero(authorization, strlen(authorization));
}

static void on_close(H2Conn *c, int error, const char *reason, void *userdata) {
        ServerConn *sc = userdata;

        if (!sc)
                return; /* we let go of this connection already */
        sc->conn = NULL; /* frees itself */
        if (sc->state != SERVER_CONN_READY && !sc->server_id)
                log_peer_warning(server_conn_key(sc), "Connection to server %s:%u failed: %s", sc->host, sc->port,
                                 reason ?: strerror(-error));
        server_conn_teardown(sc, reason);
}

#define GOAWAY_CLOSE_USEC (1 * USEC_PER_SEC)

static int on_goaway_close(sd_event_source *s, uint64_t usec, void *userdata) {
        server_conn_teardown(userdata, "server went away (GOAWAY)");
        return 0;
}

static int on_idle_check(sd_event_source *s, void *userdata) {
        ServerConn *sc = userdata;

        sc->idle_check = sd_event_source_disable_unref(sc->idle_check);
        if (sc->dead || !sc->going_away || idmap_size(sc->endpoints) > 0 || idmap_size(sc->dials) > 0 ||
            sc->n_rconns > 0)
                return 0;
        log_debug("Every connection through server '%s' finished after its GOAWAY, closing.", sc->server_id);
        if (sc->call) {
                /* END_STREAM: the server's graceful stop can complete, and it closes the connection itself. */
                grpc_call_finish(sc->call, GRPC_STATUS_OK, NULL);
                sc->call = NULL;
        }
        /* If it does not, close it ourselves a little later. */
        if (sd_event_add_time_relative(sc->manager->event, &sc->idle_check, CLOCK_MONOTONIC, GOAWAY_CLOSE_USEC, 0,
                                       on_goaway_close, sc) < 0)
                server_conn_teardown(sc, "server went away (GOAWAY)");
        return 0;
}

void server_conn_check_idle(ServerConn *sc) {
        if (!sc->going_away || sc->dead || sc->idle_check || !sc->call)
                return;
        (void) sd_event_add_defer(sc->manager->event, &sc->idle_check, on_idle_check, sc);
}

/* A graceful GOAWAY (a server stopping, a proxy recycling connections): what runs here finishes here, but the
 * server gets DRAIN (no new dials on this stream), a fresh connection is started at once, and once the last
 * endpoint is done the Connect stream ends and the connection closes. Dials that still arrive here are served
 * (never dropped), on the Connect stream itself, as no new HTTP/2 stream may be opened after a GOAWAY. */
static void on_goaway(H2Conn *c, uint32_t error_code, int32_t last_stream_id, void *userdata) {
        ServerConn *sc = userdata;
        Packet drain = { .type = PACKET_DRAIN };

        if (!sc || sc->dead || sc->going_away || sc->state != SERVER_CONN_READY)
                return;
        sc->going_away = true;
        log_struct(LOG_INFO, LOG_FIELDS({ "KONN_SERVER_ID", sc->server_id }),
                   "Server '%s' sent GOAWAY (error code %" PRIu32 "): finishing %zu connection%s on it, reconnecting.",
                   sc->server_id, error_code, idmap_size(sc->endpoints) + idmap_size(sc->dials),
                   idmap_size(sc->endpoints) + idmap_size(sc->dials) == 1 ? "" : "s");
        if (sc->call && grpc_call_send_packet(sc->call, &drain) >= 0)
                manager_count_packet(sc->manager, METRICS_SEGMENT_FROM_AGENT, PACKET_DRAIN);
        manager_conn_going_away(sc->manager, sc);
        server_conn_check_idle(sc);
}

static const H2ConnHandler conn_handler = {
        .on_ready = on_ready,
        .on_close = on_close,
        .on_goaway = on_goaway,
};

/* The connection is over: tell the manager (which frees us from the loop). */
static void server_conn_teardown(ServerConn *sc, const char *reason) {
        bool was_ready = sc->state == SERVER_CONN_READY;

        if (sc->dead)
                return;
        sc->dead = true;
        sc->timer = sd_event_source_disable_unref(sc->timer);
        sc->io = sd_event_source_disable_unref(sc->io);
        sc->query = resolve_query_cancel(sc->query);

        if (sc->endpoints)
                free_endpoints(sc);
        reverse_server_gone(sc);
        if (sc->call) {
                grpc_call_abort(sc->call, GRPC_STATUS_CANCELLED, NULL);
                sc->call = NULL;
        }
        if (sc->conn) {
                h2conn_close(sc->conn, -ECONNRESET, reason);
                h2conn_set_userdata(sc->conn, NULL);
                sc->conn = NULL;
        }
        manager_conn_gone(sc->manager, sc, was_ready);
}

static void fail_early(ServerConn *sc, const char *what, int error);

static int on_setup_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        fail_early(userdata, "no answer to the Connect call in time", -ETIMEDOUT);
        return 0;
}

static int start_tls(ServerConn *sc) {
        const AgentConfig *cfg = sc->manager->config;
        H2ConnSettings st = { .handshake_timeout_usec = cfg->handshake_timeout_usec,
                              .keepalive_usec = cfg->keepalive_time_usec,
                              .stream_window = (uint32_t) cfg->stream_window_size,
                              .connection_window = (uint32_t) cfg->connection_window_size,
                              .window_max = (uint32_t) cfg->max_window_size,
                              .held_max = (uint64_t) cfg->connection_buffer_size };
        TlsConn *tc = NULL;
        Transport t;
        int r;

        sc->io = sd_event_source_disable_unref(sc->io);
        sc->timer = sd_event_source_disable_unref(sc->timer);
        sock_set_nodelay(sc->fd);
        r = tls_conn_new(sc->manager->ctx, sc->fd, false, sc->host, &tc);
        if (r < 0)
                return r;
        transport_init(&t, TAKE_FD(sc->fd), tc);
        sc->state = SERVER_CONN_HANDSHAKE;
        r = h2conn_new(sc->manager->event, &t, false, &st, &conn_handler, sc, &sc->conn);
        if (r < 0)
                return r;
        /* TLS, HTTP/2 and the server's response headers, all within a bound (a server that accepts and then says
         * nothing must not hold an attempt forever). */
        return sd_event_add_time_relative(sc->manager->event, &sc->timer, CLOCK_MONOTONIC,
                                          2 * cfg->handshake_timeout_usec, 0, on_setup_timeout, sc);
}

static void fail_early(ServerConn *sc, const char *what, int error) {
        log_peer_warning_errno(error, server_conn_key(sc), "Connection to server %s:%u failed: %s: %m", sc->host,
                               sc->port, what);
        server_conn_teardown(sc, what);
}

static int on_connect_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ServerConn *sc = userdata;
        int r = sock_connect_result(sc->fd);

        if (r == -EINPROGRESS || r == -EALREADY)
                return 0;
        if (r < 0) {
                fail_early(sc, "connect", r);
                return 0;
        }
        r = start_tls(sc);
        if (r < 0)
                fail_early(sc, "TLS setup", r);
        return 0;
}

static int on_connect_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        fail_early(userdata, "connect", -ETIMEDOUT);
        return 0;
}

static void connect_to(ServerConn *sc, const SockAddr *a, socklen_t len) {
        Manager *m = sc->manager;
        bool in_progress = false;
        int r;

        sc->state = SERVER_CONN_CONNECTING;
        sc->addr = *a;
        sc->addr_len = len;
        sc->fd = sock_connect_start(a, len, &in_progress);
        if (sc->fd < 0) {
                fail_early(sc, "connect", sc->fd);
                return;
        }
        if (!in_progress) {
                r = start_tls(sc);
                if (r < 0)
                        fail_early(sc, "TLS setup", r);
                return;
        }
        r = sd_event_add_io(m->event, &sc->io, sc->fd, EPOLLOUT, on_connect_io, sc);
        if (r >= 0)
                r = sd_event_add_time_relative(m->event, &sc->timer, CLOCK_MONOTONIC,
                                               m->config->handshake_timeout_usec, 0, on_connect_timeout, sc);
        if (r < 0)
                fail_early(sc, "connect", r);
}

static void on_resolved(ResolveQuery *q, int error, const char *reason, const struct addrinfo *ai, void *userdata) {
        ServerConn *sc = userdata;
        SockAddr a;

        sc->query = NULL;
        if (error < 0 || !ai || ai->ai_addrlen > sizeof(a)) {
                log_warning("Failed to resolve server host '%s': %s", sc->host, reason ?: "no address");
                server_conn_teardown(sc, "lookup failed");
                return;
        }
        memcpy(&a, ai->ai_addr, ai->ai_addrlen);
        connect_to(sc, &a, ai->ai_addrlen);
}

int server_conn_send(ServerConn *sc, const Packet *p) {
        int r;

        if (!sc->call)
                return -ENOTCONN;
        r = grpc_call_send_packet(sc->call, p);
        if (r >= 0)
                manager_count_packet(sc->manager, METRICS_SEGMENT_FROM_AGENT, p->type);
        if (r < 0) {
                log_warning_errno(r, "Failed to send %s to server '%s', dropping the connection: %m",
                                  packet_type_to_string(p->type), sc->server_id);
                if (sc->conn)
                        h2conn_close(sc->conn, r, "send failed");
        }
        return r;
}

int server_conn_new(Manager *m, const char *host, uint16_t port, const SockAddr *addr, socklen_t addr_len,
                    ServerConn **ret) {
        ServerConn *sc;
        SockAddr a;
        socklen_t len;
        int r;

        sc = calloc(1, sizeof(ServerConn));
        if (!sc)
                return -ENOMEM;
        sc->manager = m;
        sc->fd = -EBADF;
        sc->port = port;
        sc->host = strdup(host);
        sc->endpoints = idmap_new();
        sc->dials = idmap_new();
        if (!sc->host || !sc->endpoints || !sc->dials) {
                server_conn_free(sc);
                return -ENOMEM;
        }
        LIST_PREPEND(conns, m->conns, sc);
        m->n_conns++;
        *ret = sc;

        if (addr) {
                connect_to(sc, addr, addr_len);
                return 0;
        }
        r = sock_parse_numeric(host, port, &a, &len);
        if (r >= 0) {
                connect_to(sc, &a, len);
                return 0;
        }
        sc->state = SERVER_CONN_RESOLVING;
        r = resolver_resolve(m->resolver, host, port, on_resolved, sc, &sc->query);
        if (r < 0)
                fail_early(sc, "lookup", r);
        return 0;
}
