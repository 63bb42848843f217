/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "health.h"
#include "log.h"
#include "manager.h"
#include "tunnel.h"

uint64_t now_usec(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

void tunnel_counters(const Tunnel *t, uint64_t *in, uint64_t *out) {
        if (t->bridge_live) {
                *in = t->bridge.ab.bytes;
                *out = t->bridge.ba.bytes;
        } else if (t->kind == TUNNEL_CONNECT || t->relay_live) {
                *in = t->relay.bytes_in;
                *out = t->relay.bytes_out;
        } else {
                *in = t->bytes_in;
                *out = t->bytes_out;
        }
}

const char *tunnel_frontend_name(const Tunnel *t) {
        return t->kind == TUNNEL_CONNECT ? "http-connect" : "grpc";
}

const char *tunnel_state_name(const Tunnel *t) {
        static const char *const states[] = {
                [TUNNEL_HANDSHAKE] = "handshake", [TUNNEL_HEADER] = "header", [TUNNEL_PENDING] = "pending",
                [TUNNEL_ESTABLISHED] = "established", [TUNNEL_CLOSING] = "closing",
        };
        return t->state < ELEMENTSOF(states) ? states[t->state] : "?";
}

uint64_t tunnel_bytes_in(const Tunnel *t) {
        uint64_t in, out;
        tunnel_counters(t, &in, &out);
        return in;
}

uint64_t tunnel_bytes_out(const Tunnel *t) {
        uint64_t in, out;
        tunnel_counters(t, &in, &out);
        return out;
}

void tunnel_trace(Tunnel *t, TraceEventType type, const char *reason) {
        uint64_t now = now_usec();
        TraceEvent ev = {
                .type = type,
                .dial_id = t->dial_id,
                .connect_id = type == TRACE_DIAL || type == TRACE_FAILED ? 0 : t->connect_id,
                .agent = t->agent_id ?: (t->backend ? t->backend->agent_id : NULL),
                .dest = t->dest,
                .frontend = tunnel_frontend_name(t),
                .client = t->peer,
                .reason = reason,
        };

        if (type == TRACE_ESTABLISHED)
                ev.usec = t->established_usec - t->dial_usec;
        else if (type == TRACE_CLOSED) {
                tunnel_counters(t, &ev.bytes_in, &ev.bytes_out);
                ev.usec = now - t->established_usec;
        }
        server_trace(t->manager, &ev);
}

void tunnel_log_opened(Tunnel *t) {
        char cid[32], did[32];

        if (LOG_DEBUG > log_get_max_level())
                return;
        (void) snprintf(cid, sizeof(cid), "%" PRIi64, t->connect_id);
        (void) snprintf(did, sizeof(did), "%" PRIi64, t->dial_id);
        if (t->direct)
                log_struct(LOG_DEBUG,
                           LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_TUNNEL_OPENED }, { "KONN_ROUTE", "direct" },
                                      { "KONN_CONNECT_ID", cid }, { "KONN_DIAL_ID", did }, { "KONN_DEST", t->dest }),
                           "Tunnel %s to '%s' established directly (direct-cidrs).", cid, t->dest);
        else
                log_struct(LOG_DEBUG,
                           LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_TUNNEL_OPENED }, { "KONN_ROUTE", "agent" },
                                      { "KONN_AGENT_ID", t->backend ? t->backend->agent_id : NULL },
                                      { "KONN_CONNECT_ID", cid }, { "KONN_DIAL_ID", did }, { "KONN_DEST", t->dest }),
                           "Tunnel %s to '%s' established through agent '%s'.", cid, t->dest,
                           t->backend ? t->backend->agent_id : "?");
}

void tunnel_log_closed(Tunnel *t, const char *why) {
        char cid[32], did[32], in[32], out[32], dur[32];
        uint64_t bin, bout;

        if (!t->close_why)
                t->close_why = why;
        if (LOG_DEBUG > log_get_max_level())
                return;
        tunnel_counters(t, &bin, &bout);
        (void) snprintf(cid, sizeof(cid), "%" PRIi64, t->connect_id);
        (void) snprintf(did, sizeof(did), "%" PRIi64, t->dial_id);
        (void) snprintf(in, sizeof(in), "%" PRIu64, bin);
        (void) snprintf(out, sizeof(out), "%" PRIu64, bout);
        (void) snprintf(dur, sizeof(dur), "%" PRIu64, now_usec() - t->start_usec);
        log_struct(LOG_DEBUG,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_TUNNEL_CLOSED }, { "KONN_ROUTE", t->direct ? "direct" : "agent" },
                              { "KONN_AGENT_ID", t->backend ? t->backend->agent_id : NULL },
                              { "KONN_CONNECT_ID", cid }, { "KONN_DIAL_ID", did }, { "KONN_DEST", t->dest },
                              { "KONN_BYTES_IN", in }, { "KONN_BYTES_OUT", out }, { "KONN_DURATION_USEC", dur }),
                   "Tunnel %s to '%s' closed (%s), %s bytes in, %s bytes out.", cid, t->dest, why, in, out);
}

/* Invariant: t->backend is set only while the tunnel is indexed in that backend (its pending list or its tunnel
 * map), so a backend that goes away can never leave a tunnel pointing at it. */
void tunnel_unpend(Tunnel *t) {
        if (t->state != TUNNEL_PENDING)
                return;
        t->timer = sd_event_source_disable_unref(t->timer);
        if (t->direct)
                direct_unpend(t);
        if (idmap_get(t->manager->pending, t->dial_id) == t)
                (void) idmap_remove(t->manager->pending, t->dial_id);
        if (t->backend) {
                LIST_REMOVE(pending, t->backend->pending, t);
                t->backend->n_pending--;
                t->backend = NULL;
        }
}

void tunnel_unestablish(Tunnel *t) {
        if (t->state != TUNNEL_ESTABLISHED || !t->backend)
                return;
        if (idmap_get(t->backend->tunnels, t->connect_id) == t)
                (void) idmap_remove(t->backend->tunnels, t->connect_id);
        t->backend = NULL;
}

Tunnel *tunnel_alloc(Manager *m, TunnelKind kind, const char *peer) {
        Tunnel *t = calloc(1, sizeof(Tunnel));

        if (!t)
                return NULL;
        t->manager = m;
        t->kind = kind;
        t->t = TRANSPORT_NULL;
        t->dfd = -EBADF;
        t->start_usec = now_usec();
        (void) snprintf(t->peer, sizeof(t->peer), "%s", peer);
        LIST_PREPEND(tunnels, m->tunnels, t);
        m->n_tunnels++;
        manager_status_changed(m);
        return t;
}

/* A tunnel stream whose tunnel is gone, waiting for the agent's CLOSE_RSP. Owned by its H2Conn. */
static int closing_on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        if (packet_is_new(p))
                manager_count_packet(userdata, "from_agent", p->type);
        if (p->type == PACKET_CLOSE_RSP)
                grpc_call_finish(call, GRPC_STATUS_OK, NULL);
        return 0;
}

static void closing_on_end(GrpcCall *call, int status, const char *message, void *userdata) {
}

static const GrpcCallHandler closing_handler = {
        .on_packet = closing_on_packet,
        .on_end = closing_on_end,
};

Tunnel *tunnel_free(Tunnel *t) {
        if (!t)
                return NULL;
        if (t->state == TUNNEL_PENDING)
                tunnel_trace(t, TRACE_FAILED, "the client went away while the dial was pending");
        else if (t->established_usec > 0)
                tunnel_trace(t, TRACE_CLOSED, t->close_why ?: "closed");
        tunnel_unpend(t);
        tunnel_unestablish(t);
        LIST_REMOVE(tunnels, t->manager->tunnels, t);
        t->manager->n_tunnels--;
        manager_status_changed(t->manager);
        t->timer = sd_event_source_disable_unref(t->timer);
        if (t->established_usec > 0 && !t->direct)
                metric_observe(t->manager->metrics.connection_duration, NULL,
                               (double) (now_usec() - t->established_usec) / USEC_PER_SEC);
        if (t->kind == TUNNEL_CONNECT)
                connect_tunnel_free(t);
        else
                grpc_tunnel_free(t);
        if (t->acall) {
                /* Relay and forwarders are done with it. After an in-band CLOSE_REQ the stream lives on until the
                 * agent's CLOSE_RSP (as the Connect stream would carry it in the classic protocol); otherwise it
                 * ends now, trailers after what is queued. */
                if (t->close_sent)
                        grpc_call_set_handler(t->acall, &closing_handler, t->manager);
                else
                        grpc_call_finish(t->acall, GRPC_STATUS_OK, NULL);
                t->acall = NULL;
        }
        free(t->agent_id);
        free(t);
        return NULL;
}

GrpcCall *tunnel_agent_call(Tunnel *t) {
        if (t->acall)
                return t->acall;
        return t->backend ? t->backend->call : NULL;
}

void tunnel_send_close(Tunnel *t) {
        Packet p = { .type = PACKET_CLOSE_REQ, .close_req.connect_id = t->connect_id };
        Backend *b = t->backend;

        if (t->state != TUNNEL_ESTABLISHED)
                return;
        tunnel_unestablish(t);
        t->state = TUNNEL_CLOSING;
        t->backend = NULL;
        if (t->acall) {
                /* In-band on the tunnel's own stream; the stream ends when the tunnel is freed. */
                if (grpc_call_send_packet(t->acall, &p) < 0)
                        grpc_call_abort(t->acall, GRPC_STATUS_CANCELLED, NULL), t->acall = NULL;
                else {
                        manager_count_packet(t->manager, "to_agent", p.type);
                        t->close_sent = true;
                }
                return;
        }
        if (b)
                (void) backend_send(b, &p);
}

static int on_dial_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Tunnel *t = userdata;
        Packet c = { .type = PACKET_DIAL_CLS, .dial_cls.random = t->dial_id };
        Backend *b = t->backend;
        char did[32];

        (void) snprintf(did, sizeof(did), "%" PRIi64, t->dial_id);
        log_struct(LOG_WARNING,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_AGENT_ID", b ? b->agent_id : NULL },
                              { "KONN_DIAL_ID", did }, { "KONN_DEST", t->dest }),
                   "Agent '%s' did not answer the dial to '%s' within %" PRIu64 " ms.", b ? b->agent_id : "?",
                   t->dest, t->manager->config->backend_dial_timeout_usec / USEC_PER_MSEC);
        tunnel_trace(t, TRACE_FAILED, "timed out waiting for backend dial");
        tunnel_unpend(t);
        t->state = TUNNEL_CLOSING;
        manager_count_dial_failure(t->manager, "backend_dial_timeout");
        if (t->kind == TUNNEL_CONNECT)
                connect_dial_timed_out(t);
        else
                grpc_dial_failed(t, "timed out waiting for backend dial");
        /* konn agents abandon the dial; upstream agents ignore this and a late DIAL_RSP is cleaned up. */
        if (b)
                (void) backend_send(b, &c);
        return 0;
}

int tunnel_request_dial(Tunnel *t) {
        Manager *m = t->manager;
        Backend *b;
        SockAddr da;
        socklen_t dlen;
        Packet p;
        int r;

        /* The direct route comes before any strategy: those destinations never go through an agent. */
        if (direct_match(m, t->dest, &da, &dlen))
                return direct_dial(t, &da, dlen);
        if ((int64_t) idmap_size(m->pending) >= m->config->max_pending_dials) {
                manager_refused(m, "pending_dials", t->peer, "a dial");
                return -EBUSY;
        }
        b = manager_pick_backend(m, t->dest);
        t->backend = b; /* for the trace event only: not indexed yet */
        tunnel_trace(t, TRACE_DIAL, NULL);
        t->backend = NULL;
        if (!b) {
                for (Backend *i = m->backends; i; i = i->backends_next)
                        if (!i->superseded && (int64_t) (i->n_pending + idmap_size(i->tunnels)) >=
                                                      m->config->max_tunnels_per_agent) {
                                /* An agent was passed over for being at --max-tunnels-per-agent. */
                                manager_refused(m, "tunnels_per_agent", t->peer, "a dial");
                                return -EUSERS;
                        }
                manager_count_dial_failure(m, "no_agent");
                tunnel_trace(t, TRACE_FAILED, "No agent available");
                return -ENOENT;
        }
        p = (Packet){ .type = PACKET_DIAL_REQ,
                      .dial_req = { .protocol = { "tcp", 3 },
                                    .address = { t->dest, strlen(t->dest) },
                                    .random = t->dial_id } };
        /* Send first: if that fails the agent stream is ended, and this tunnel is not yet one of its dials. */
        r = backend_send(b, &p);
        if (r < 0) {
                tunnel_trace(t, TRACE_FAILED, "failed to send the dial request");
                return r;
        }
        r = idmap_put(m->pending, t->dial_id, t);
        if (r < 0) {
                Packet c = { .type = PACKET_DIAL_CLS, .dial_cls.random = t->dial_id };
                (void) backend_send(b, &c);
                tunnel_trace(t, TRACE_FAILED, "failed to send the dial request");
                return r;
        }
        t->backend = b;
        t->state = TUNNEL_PENDING;
        t->dial_usec = now_usec();
        LIST_PREPEND(pending, b->pending, t);
        b->n_pending++;
        t->timer = sd_event_source_disable_unref(t->timer);
        if (m->config->backend_dial_timeout_usec > 0) {
                r = sd_event_add_time_relative(m->event, &t->timer, CLOCK_MONOTONIC,
                                               m->config->backend_dial_timeout_usec, 0, on_dial_timeout, t);
                if (r < 0)
                        log_warning_errno(r, "Failed to arm the dial timer, dial %" PRIi64 " waits without: %m",
                                          t->dial_id);
        }
        return 0;
}

/* Index an established tunnel in its backend. False (and the agent told to close it) if the ID is taken. */
bool tunnel_establish(Tunnel *t, int64_t connect_id) {
        Backend *b = t->backend;
        int r;

        tunnel_unpend(t);
        t->backend = b;
        t->connect_id = connect_id;
        r = idmap_put(b->tunnels, connect_id, t);
        if (r < 0) {
                Packet p = { .type = PACKET_CLOSE_REQ, .close_req.connect_id = connect_id };

                log_warning_errno(r, "Agent '%s' answered dial %" PRIi64 " with connectID %" PRIi64
                                  " that is already in use, closing it: %m", b->agent_id, t->dial_id, connect_id);
                t->backend = NULL; /* not indexed in b */
                t->state = TUNNEL_CLOSING;
                if (t->acall) {
                        if (grpc_call_send_packet(t->acall, &p) < 0)
                                grpc_call_abort(t->acall, GRPC_STATUS_CANCELLED, NULL), t->acall = NULL;
                } else
                        (void) backend_send(b, &p);
                return false;
        }
        t->state = TUNNEL_ESTABLISHED;
        return true;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* konn-to-konn mode: each tunnel on its own HTTP/2 stream */

static int stream_on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        Tunnel *t = userdata;

        if (packet_is_new(p))
                manager_count_packet(t->manager, "from_agent", p->type);
        switch (p->type) {
        case PACKET_DATA:
                return tunnel_deliver(t, p->data.data, p->data.data_len);
        case PACKET_CLOSE_RSP:
                tunnel_remote_closed(t);
                return 0;
        default:
                log_debug("Ignoring %s packet on the stream of tunnel %" PRIi64 ".", packet_type_to_string(p->type),
                          t->connect_id);
                return 0;
        }
}

static void stream_on_end(GrpcCall *call, int status, const char *message, void *userdata) {
        Tunnel *t = userdata;

        /* The agent ended or reset the tunnel's stream without CLOSE_RSP: the tunnel is over. The call is still
         * valid during this callback, so relay and forwarders return their credits to it first. */
        if (t->state == TUNNEL_ESTABLISHED)
                tunnel_remote_closed(t);
        else
                t->acall = NULL;
}

static const GrpcCallHandler stream_handler = {
        .on_packet = stream_on_packet,
        .on_end = stream_on_end,
};

int tunnel_stream_opened(Backend *b, GrpcCall *call, const char **ret_message) {
        const char *did = grpc_call_header(call, "konn-dial-id", 0), *cid = grpc_call_header(call, "konn-connect-id", 0);
        Tunnel *t;
        int64_t dial_id = 0, connect_id = 0;
        int r;

        if (!did || !cid || sscanf(did, "%" SCNi64, &dial_id) != 1 || sscanf(cid, "%" SCNi64, &connect_id) != 1 ||
            connect_id <= 0) {
                *ret_message = "konn-dial-id and konn-connect-id are required";
                return GRPC_STATUS_INVALID_ARGUMENT;
        }
        t = idmap_get(b->manager->pending, dial_id);
        if (!t || t->backend != b) {
                /* Not a dial of this agent stream (any more): the agent closes its end. */
                *ret_message = "no such pending dial";
                return GRPC_STATUS_NOT_FOUND;
        }
        r = grpc_call_accept(call, NULL, &stream_handler, t);
        if (r < 0)
                return GRPC_STATUS_INTERNAL;
        /* Opening the stream is this mode's DIAL_RSP: counted as one. */
        manager_count_packet(b->manager, "from_agent", PACKET_DIAL_RSP);
        t->acall = call;
        tunnel_dial_succeeded(t, connect_id);
        return 0;
}

void tunnel_dial_succeeded(Tunnel *t, int64_t connect_id) {
        if (!tunnel_establish(t, connect_id)) {
                tunnel_dial_failed(t, "agent reused a connection ID");
                return;
        }
        t->established_usec = now_usec();
        metric_observe(t->manager->metrics.dial_duration, NULL, (double) (t->established_usec - t->dial_usec) / USEC_PER_SEC);
        t->agent_id = strdup(t->backend->agent_id); /* NULL (out of memory) only costs the trace its agent */
        tunnel_trace(t, TRACE_ESTABLISHED, NULL);
        tunnel_log_opened(t);
        if (t->kind == TUNNEL_CONNECT)
                connect_dial_succeeded(t);
        else
                grpc_dial_succeeded(t);
}

void tunnel_dial_failed(Tunnel *t, const char *error) {
        char did[32];

        (void) snprintf(did, sizeof(did), "%" PRIi64, t->dial_id);
        if (t->direct)
                log_struct(LOG_INFO,
                           LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_ROUTE", "direct" },
                                      { "KONN_DIAL_ID", did }, { "KONN_DEST", t->dest }),
                           "Direct dial to '%s' failed: %s", t->dest, error);
        else
                log_struct(LOG_INFO,
                           LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_ROUTE", "agent" },
                                      { "KONN_AGENT_ID", t->backend ? t->backend->agent_id : NULL },
                                      { "KONN_DIAL_ID", did }, { "KONN_DEST", t->dest }),
                           "Dial to '%s' through agent '%s' failed: %s", t->dest,
                           t->backend ? t->backend->agent_id : "?", error);
        tunnel_trace(t, TRACE_FAILED, error);
        tunnel_unpend(t);
        t->state = TUNNEL_CLOSING;
        if (!t->direct) /* direct failures are counted in konn_server_direct_dial_failure_count */
                manager_count_dial_failure(t->manager, "error_response");
        if (t->kind == TUNNEL_CONNECT)
                connect_dial_failed(t, error);
        else
                grpc_dial_failed(t, error);
}

void tunnel_dial_closed(Tunnel *t) {
        tunnel_trace(t, TRACE_FAILED, "the agent closed the dial");
        tunnel_unpend(t);
        t->state = TUNNEL_CLOSING;
        if (t->kind == TUNNEL_CONNECT)
                connect_dial_closed(t);
        else
                grpc_dial_closed(t);
}

void tunnel_backend_gone(Tunnel *t) {
        bool was_pending = t->state == TUNNEL_PENDING;

        if (was_pending) {
                manager_count_dial_failure(t->manager, "backend_close");
                tunnel_trace(t, TRACE_FAILED, "the agent disconnected while the dial was pending");
        }
        tunnel_unpend(t);
        tunnel_unestablish(t);
        if (!was_pending)
                tunnel_log_closed(t, "agent disconnected");
        t->state = TUNNEL_CLOSING;
        t->backend = NULL;
        if (t->kind == TUNNEL_CONNECT)
                connect_backend_gone(t, was_pending);
        else
                grpc_backend_gone(t, was_pending);
}

int tunnel_deliver(Tunnel *t, const uint8_t *data, size_t len) {
        if (t->state != TUNNEL_ESTABLISHED)
                return 0;
        return t->kind == TUNNEL_CONNECT ? connect_deliver(t, data, len) : grpc_deliver(t, data, len);
}

void tunnel_remote_closed(Tunnel *t) {
        if (t->state != TUNNEL_ESTABLISHED)
                return;
        tunnel_unestablish(t);
        t->state = TUNNEL_CLOSING;
        if (t->kind == TUNNEL_GRPC) {
                grpc_remote_closed(t); /* frees t, which ends its stream */
                return;
        }
        connect_remote_closed(t);
        if (t->acall) {
                /* The relay has let go of the tunnel's stream: end our side of it. */
                grpc_call_finish(t->acall, GRPC_STATUS_OK, NULL);
                t->acall = NULL;
        }
}
