/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include "endpoint.h"
#include "health.h"
#include "log.h"
#include "manager.h"
#include "serverconn.h"

/* Bounds on what one server can make us hold. */
#define ENDPOINTS_PER_SERVER_MAX 200000
#define DIALS_PER_SERVER_MAX 20000

uint64_t endpoint_now_usec(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static void endpoint_trace(Endpoint *ep, TraceEventType type, const char *reason) {
        TraceEvent ev = {
                .type = type,
                .dial_id = ep->dial_id,
                .connect_id = type == TRACE_DIAL || type == TRACE_FAILED ? 0 : ep->connect_id,
                .server = ep->sc->server_id ?: "",
                .dest = ep->address,
                .reason = reason,
        };

        if (type == TRACE_ESTABLISHED)
                ev.usec = ep->established_usec - ep->start_usec;
        else if (type == TRACE_CLOSED) {
                ev.usec = endpoint_now_usec() - ep->established_usec;
                if (ep->relay_live) {
                        ev.bytes_in = ep->relay.bytes_out;
                        ev.bytes_out = ep->relay.bytes_in;
                }
        }
        agent_trace(ep->sc->manager, &ev);
}

static void endpoint_log_closed(Endpoint *ep, const char *why) {
        char cid[32], in[32], out[32], dur[32];

        if (!ep->close_why)
                ep->close_why = why;

        if (LOG_DEBUG > log_get_max_level())
                return;
        (void) snprintf(cid, sizeof(cid), "%" PRIi64, ep->connect_id);
        (void) snprintf(in, sizeof(in), "%" PRIu64, ep->relay.bytes_out);
        (void) snprintf(out, sizeof(out), "%" PRIu64, ep->relay.bytes_in);
        (void) snprintf(dur, sizeof(dur), "%" PRIu64, endpoint_now_usec() - ep->start_usec);
        log_struct(LOG_DEBUG,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_TUNNEL_CLOSED }, { "KONN_SERVER_ID", ep->sc->server_id },
                              { "KONN_CONNECT_ID", cid }, { "KONN_DEST", ep->address }, { "KONN_BYTES_IN", in },
                              { "KONN_BYTES_OUT", out }, { "KONN_DURATION_USEC", dur }),
                   "Connection %s to '%s' closed (%s).", cid, ep->address, why);
}

Endpoint *endpoint_free(Endpoint *ep) {
        ServerConn *sc;

        if (!ep)
                return NULL;
        sc = ep->sc;
        if (ep->established_usec > 0)
                endpoint_trace(ep, TRACE_CLOSED, ep->close_why ?: "closed");
        else if (ep->state == ENDPOINT_RESOLVING || ep->state == ENDPOINT_CONNECTING)
                endpoint_trace(ep, TRACE_FAILED, "dial abandoned: the server connection or the dial went away");
        if (idmap_get(sc->endpoints, ep->connect_id) == ep)
                (void) idmap_remove(sc->endpoints, ep->connect_id);
        if (idmap_get(sc->dials, ep->dial_id) == ep)
                (void) idmap_remove(sc->dials, ep->dial_id);
        server_conn_check_idle(sc);
        if (ep->dial) {
                ep->dial->query = resolve_query_cancel(ep->dial->query);
                ep->dial = mfree(ep->dial);
        }
        if (ep->relay_live)
                relay_done(&ep->relay);
        if (ep->call) {
                /* Not closed in order: reset the tunnel's stream. */
                grpc_call_abort(ep->call, GRPC_STATUS_CANCELLED, NULL);
                ep->call = NULL;
        }
        ep->io = sd_event_source_disable_unref(ep->io);
        ep->timer = sd_event_source_disable_unref(ep->timer);
        ep->fd = safe_close(ep->fd);
        free(ep->address);
        free(ep);
        manager_status_changed(sc->manager);
        return NULL;
}

static void endpoint_fail(Endpoint *ep, const char *error) {
        ServerConn *sc = ep->sc;
        Packet p = { .type = PACKET_DIAL_RSP,
                     .dial_rsp = { .error = { error, strlen(error) }, .random = ep->dial_id } };
        char did[32];

        metric_add(sc->manager->metrics.endpoint_dial_failure_total,
                   (const char *const[]){ strstr(error, "timeout") ? "timeout" : "unknown" }, 1);
        (void) snprintf(did, sizeof(did), "%" PRIi64, ep->dial_id);
        log_struct(LOG_INFO,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_SERVER_ID", sc->server_id },
                              { "KONN_DIAL_ID", did }, { "KONN_DEST", ep->address }),
                   "Dial to '%s' failed: %s", ep->address, error);
        endpoint_trace(ep, TRACE_FAILED, error);
        ep->established_usec = 0;
        ep->state = ENDPOINT_CLOSING;
        endpoint_free(ep);
        (void) server_conn_send(sc, &p);
}

/* Report the end of this connection to the server (CLOSE_RSP) on the stream that carries it, after everything
 * already queued there. In konn-to-konn mode that also ends our side of the tunnel's stream. */
static void endpoint_send_close_rsp(Endpoint *ep) {
        Packet p = { .type = PACKET_CLOSE_RSP, .close_rsp.connect_id = ep->connect_id };

        if (ep->call) {
                if (grpc_call_send_packet(ep->call, &p) >= 0)
                        manager_count_packet(ep->sc->manager, METRICS_SEGMENT_FROM_AGENT, p.type);
                grpc_call_finish(ep->call, GRPC_STATUS_OK, NULL);
                ep->call = NULL;
        } else
                (void) server_conn_send(ep->sc, &p);
}

static void on_relay_event(Relay *r, RelayEvent ev, int error, void *userdata) {
        Endpoint *ep = userdata;

        if (ev == RELAY_DRAINED) {
                endpoint_log_closed(ep, "closed by server");
                endpoint_free(ep);
                return;
        }
        /* Endpoint EOF or error: report CLOSE_RSP (there is no agent→server CLOSE_REQ, §5.1). */
        endpoint_log_closed(ep, error < 0 ? "connection failed" : "closed by destination");
        endpoint_send_close_rsp(ep);
        endpoint_free(ep);
}

static int stream_on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        Endpoint *ep = userdata;

        if (packet_is_new(p))
                manager_count_packet(ep->sc->manager, METRICS_SEGMENT_TO_AGENT, p->type);
        switch (p->type) {
        case PACKET_DATA:
                return endpoint_deliver(ep, p->data.data, p->data.data_len);
        case PACKET_CLOSE_REQ:
                if (ep->state == ENDPOINT_ESTABLISHED)
                        endpoint_close_request(ep);
                return 0;
        default:
                return 0;
        }
}

static void stream_on_end(GrpcCall *call, int status, const char *message, void *userdata) {
        Endpoint *ep = userdata;

        /* The server ended or refused the tunnel's stream: the connection is over. */
        if (status != GRPC_STATUS_OK)
                log_debug("Stream of connection %" PRIi64 " ended: %s (%s).", ep->connect_id, message ?: "no reason",
                          grpc_status_to_string(status));
        if (ep->relay_live)
                relay_detach_call(&ep->relay);
        ep->call = NULL;
        endpoint_log_closed(ep, "stream ended by server");
        endpoint_free(ep);
}

static const GrpcCallHandler stream_handler = {
        .on_packet = stream_on_packet,
        .on_end = stream_on_end,
};

static void endpoint_established(Endpoint *ep) {
        ServerConn *sc = ep->sc;
        Packet p = { .type = PACKET_DIAL_RSP, .dial_rsp = { .connect_id = ep->connect_id, .random = ep->dial_id } };
        Transport t;
        int r;

        ep->io = sd_event_source_disable_unref(ep->io);
        ep->timer = sd_event_source_disable_unref(ep->timer);
        ep->dial = mfree(ep->dial);
        (void) idmap_remove(sc->dials, ep->dial_id);
        sock_set_nodelay(ep->fd);
        transport_init(&t, TAKE_FD(ep->fd), NULL);
        r = relay_init(&ep->relay, sc->manager->event, &t, on_relay_event, ep);
        ep->relay_live = true;
        ep->relay.sent_packets = sc->manager->metrics.stream_packets_total;
        ep->relay.sent_labels[0] = METRICS_SEGMENT_FROM_AGENT;
        ep->relay.sent_labels[1] = "DATA";
        if (r < 0) {
                char err[512];
                (void) snprintf(err, sizeof(err), "dial tcp %s: %s", ep->address, strerror(-r));
                endpoint_fail(ep, err);
                return;
        }
        ep->state = ENDPOINT_ESTABLISHED;
        ep->established_usec = endpoint_now_usec();
        endpoint_trace(ep, TRACE_ESTABLISHED, NULL);
        metric_observe(sc->manager->metrics.dial_duration, NULL, (double) (endpoint_now_usec() - ep->start_usec) / USEC_PER_SEC);
        if (sc->tunnel_streams && !sc->going_away) {
                /* konn-to-konn mode: opening the tunnel's own stream is the successful DIAL_RSP. */
                char did[24], cid[24];
                const char *md[] = { "konn-dial-id", did, "konn-connect-id", cid, NULL };

                (void) snprintf(did, sizeof(did), "%" PRIi64, ep->dial_id);
                (void) snprintf(cid, sizeof(cid), "%" PRIi64, ep->connect_id);
                r = grpc_call_start(sc->conn, KONN_TUNNEL_STREAM_PATH, sc->authority, (char *const *) md,
                                    &stream_handler, ep, &ep->call);
                if (r >= 0)
                        manager_count_packet(sc->manager, METRICS_SEGMENT_FROM_AGENT, PACKET_DIAL_RSP);
                if (r < 0) {
                        char err[512];
                        (void) snprintf(err, sizeof(err), "dial tcp %s: cannot open tunnel stream: %s", ep->address,
                                        strerror(-r));
                        endpoint_fail(ep, err);
                        return;
                }
        } else {
                /* DIAL_RSP goes out before any DATA of this connection: it is queued first. */
                r = server_conn_send(sc, &p);
                if (r < 0)
                        return; /* the server connection is going down and takes us with it */
        }
        r = relay_start(&ep->relay, ep->call ?: sc->call, ep->connect_id, NULL, 0);
        if (r < 0) {
                endpoint_send_close_rsp(ep);
                endpoint_free(ep);
                return;
        }
        if (LOG_DEBUG <= log_get_max_level()) {
                char cid[32];
                (void) snprintf(cid, sizeof(cid), "%" PRIi64, ep->connect_id);
                log_struct(LOG_DEBUG,
                           LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_TUNNEL_OPENED }, { "KONN_SERVER_ID", sc->server_id },
                                      { "KONN_CONNECT_ID", cid }, { "KONN_DEST", ep->address }),
                           "Connection %s to '%s' established.", cid, ep->address);
        }
}

static void endpoint_try_next(Endpoint *ep);

static int on_connect_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Endpoint *ep = userdata;
        int r = sock_connect_result(ep->fd);

        if (r == -EINPROGRESS || r == -EALREADY)
                return 0;
        if (r < 0) {
                ep->dial->last_error = r;
                ep->io = sd_event_source_disable_unref(ep->io);
                ep->fd = safe_close(ep->fd);
                endpoint_try_next(ep);
                return 0;
        }
        endpoint_established(ep);
        return 0;
}

static void endpoint_try_next(Endpoint *ep) {
        char err[512];

        while (ep->dial->next_addr < ep->dial->n_addrs) {
                unsigned i = ep->dial->next_addr++;
                bool in_progress = false;
                int fd, r;

                fd = sock_connect_start(&ep->dial->addrs[i], ep->dial->addr_lens[i], &in_progress);
                if (fd < 0) {
                        ep->dial->last_error = fd;
                        continue;
                }
                ep->fd = fd;
                if (!in_progress) {
                        endpoint_established(ep);
                        return;
                }
                r = sd_event_add_io(ep->sc->manager->event, &ep->io, fd, EPOLLOUT, on_connect_io, ep);
                if (r < 0) {
                        ep->dial->last_error = r;
                        ep->fd = safe_close(ep->fd);
                        continue;
                }
                return;
        }
        /* Go reports the error of the first address tried; we report the last, which for one address is the same. */
        {
                char addr[300];
                if (ep->dial->n_addrs == 1)
                        (void) sock_addr_to_string(&ep->dial->addrs[0], ep->dial->addr_lens[0], addr, sizeof(addr));
                else
                        (void) snprintf(addr, sizeof(addr), "%s", ep->address);
                (void) sock_format_dial_error(addr, ep->dial->last_error ?: -ECONNREFUSED, err, sizeof(err));
        }
        endpoint_fail(ep, err);
}

static void on_resolved(ResolveQuery *q, int error, const char *reason, const struct addrinfo *ai, void *userdata) {
        Endpoint *ep = userdata;
        char err[512];

        ep->dial->query = NULL;
        if (error < 0) {
                (void) sock_format_lookup_error(ep->dial->host, reason, err, sizeof(err));
                endpoint_fail(ep, err);
                return;
        }
        for (const struct addrinfo *a = ai; a && ep->dial->n_addrs < ENDPOINT_MAX_ADDRS; a = a->ai_next) {
                if (a->ai_addrlen > sizeof(SockAddr))
                        continue;
                memcpy(&ep->dial->addrs[ep->dial->n_addrs], a->ai_addr, a->ai_addrlen);
                ep->dial->addr_lens[ep->dial->n_addrs++] = a->ai_addrlen;
        }
        ep->state = ENDPOINT_CONNECTING;
        endpoint_try_next(ep);
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Endpoint *ep = userdata;
        char err[512], addr[300];

        if (ep->state == ENDPOINT_CONNECTING && ep->dial->next_addr > 0)
                (void) sock_addr_to_string(&ep->dial->addrs[ep->dial->next_addr - 1], ep->dial->addr_lens[ep->dial->next_addr - 1], addr,
                                           sizeof(addr));
        else
                (void) snprintf(addr, sizeof(addr), "%s", ep->address);
        (void) sock_format_dial_error(addr, -ETIMEDOUT, err, sizeof(err));
        endpoint_fail(ep, err);
        return 0;
}

/* A dial refused before it had an Endpoint: both of its events. */
static void trace_refused(ServerConn *sc, const Packet *p, const char *reason) {
        char dest[272];
        TraceEvent ev = { .type = TRACE_DIAL, .dial_id = p->dial_req.random, .server = sc->server_id ?: "", .dest = dest };

        (void) snprintf(dest, sizeof(dest), "%.*s", (int) MIN(p->dial_req.address.len, sizeof(dest) - 1),
                        p->dial_req.address.ptr ?: "");
        agent_trace(sc->manager, &ev);
        ev.type = TRACE_FAILED;
        ev.reason = reason;
        agent_trace(sc->manager, &ev);
}

int endpoint_dial(ServerConn *sc, const Packet *p) {
        Manager *m = sc->manager;
        int64_t connect_id = ++sc->last_connect_id;
        char err[512], proto[16];
        const char *reason = NULL;
        Endpoint *ep;
        int r;

        if (m->draining) {
                Packet rsp = { .type = PACKET_DIAL_RSP,
                               .dial_rsp = { .error = { "agent is shutting down", 22 }, .random = p->dial_req.random } };
                trace_refused(sc, p, "agent is shutting down");
                return server_conn_send(sc, &rsp);
        }
        if (idmap_size(sc->endpoints) >= ENDPOINTS_PER_SERVER_MAX || idmap_size(sc->dials) >= DIALS_PER_SERVER_MAX) {
                Packet rsp = { .type = PACKET_DIAL_RSP,
                               .dial_rsp = { .error = { "too many open connections", 25 }, .random = p->dial_req.random } };
                log_warning("Server '%s' asked for more connections than allowed, refusing a dial.", sc->server_id);
                trace_refused(sc, p, "too many open connections");
                return server_conn_send(sc, &rsp);
        }
        ep = calloc(1, sizeof(Endpoint));
        if (!ep)
                return -ENOMEM;
        ep->sc = sc;
        ep->fd = -EBADF;
        ep->connect_id = connect_id;
        ep->dial_id = p->dial_req.random;
        ep->start_usec = endpoint_now_usec();
        /* An absent address field decodes as { NULL, 0 }: dial "" (it fails with Go's error text), never strndup(NULL). */
        ep->address = strndup(p->dial_req.address.ptr ?: "", MIN(p->dial_req.address.len, (size_t) 270));
        ep->dial = calloc(1, sizeof(EndpointDial));
        if (!ep->address || !ep->dial) {
                free(ep->address);
                free(ep->dial);
                free(ep);
                return -ENOMEM;
        }
        (void) snprintf(proto, sizeof(proto), "%.*s", (int) MIN(p->dial_req.protocol.len, (size_t) 15),
                        p->dial_req.protocol.ptr);
        r = idmap_put(sc->endpoints, connect_id, ep);
        if (r < 0) {
                free(ep->address);
                free(ep->dial);
                free(ep);
                return r;
        }
        (void) idmap_put(sc->dials, ep->dial_id, ep); /* a duplicate dial ID only loses DIAL_CLS matching */
        endpoint_trace(ep, TRACE_DIAL, NULL);

        if (!streq(proto, "tcp") && !streq(proto, "tcp4") && !streq(proto, "tcp6")) {
                (void) snprintf(err, sizeof(err), "dial %s: unknown network %s", proto, proto);
                endpoint_fail(ep, err);
                return 0;
        }
        r = sock_split_host_port(ep->address, ep->dial->host, sizeof(ep->dial->host), &ep->dial->port, &reason);
        if (r < 0) {
                (void) sock_format_address_error(ep->address, reason ?: "invalid address", err, sizeof(err));
                endpoint_fail(ep, err);
                return 0;
        }
        r = sd_event_add_time_relative(m->event, &ep->timer, CLOCK_MONOTONIC, m->config->dial_timeout_usec, 0,
                                       on_timeout, ep);
        if (r < 0) {
                endpoint_fail(ep, "dial tcp: cannot arm dial timer");
                return 0;
        }
        r = sock_parse_numeric(ep->dial->host, ep->dial->port, &ep->dial->addrs[0], &ep->dial->addr_lens[0]);
        if (r >= 0) {
                ep->dial->n_addrs = 1;
                ep->state = ENDPOINT_CONNECTING;
                endpoint_try_next(ep);
                return 0;
        }
        if (r != -EADDRNOTAVAIL) {
                (void) sock_format_address_error(ep->address, "invalid address", err, sizeof(err));
                endpoint_fail(ep, err);
                return 0;
        }
        ep->state = ENDPOINT_RESOLVING;
        r = resolver_resolve(m->resolver, ep->dial->host, ep->dial->port, on_resolved, ep, &ep->dial->query);
        if (r < 0) {
                (void) sock_format_lookup_error(ep->dial->host, resolve_error_to_string(r), err, sizeof(err));
                endpoint_fail(ep, err);
        }
        return 0;
}

int endpoint_deliver(Endpoint *ep, const uint8_t *data, size_t len) {
        int r;

        if (ep->state != ENDPOINT_ESTABLISHED)
                return 0;
        r = relay_deliver(&ep->relay, data, len);
        if (r < 0) {
                log_debug_errno(r, "Writing to '%s' failed: %m", ep->address);
                endpoint_send_close_rsp(ep);
                endpoint_free(ep);
                return 0;
        }
        return r;
}

void endpoint_close_request(Endpoint *ep) {
        if (ep->state != ENDPOINT_ESTABLISHED) {
                /* Still dialling: abandon the dial, confirm the close. */
                endpoint_send_close_rsp(ep);
                endpoint_free(ep);
                return;
        }
        /* Stays indexed (the ServerConn owns it) but takes no more DATA. */
        ep->state = ENDPOINT_CLOSING;
        /* Queued DATA from the endpoint goes out first (FIFO), then CLOSE_RSP; what the server sent before its
         * CLOSE_REQ is written to the endpoint before we close it. */
        relay_detach_call(&ep->relay);
        endpoint_send_close_rsp(ep);
        relay_close(&ep->relay);
}

void endpoint_cancel_dial(Endpoint *ep) {
        if (ep->state == ENDPOINT_RESOLVING || ep->state == ENDPOINT_CONNECTING) {
                log_debug("Dial %" PRIi64 " to '%s' cancelled by the server.", ep->dial_id, ep->address);
                endpoint_trace(ep, TRACE_FAILED, "dial cancelled by the server");
                ep->state = ENDPOINT_CLOSING;
                endpoint_free(ep);
        }
}
