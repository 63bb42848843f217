/* SPDX-License-Identifier: Apache-2.0 */
/*
 * frontend-grpc — the gRPC frontend end of a Tunnel: one /ProxyService/Proxy stream (konnectivity-client, as used by
 * kube-apiserver) carrying one dial, with the packet rules of protocol.md §5.2 and §5.3. DATA payloads are forwarded
 * between the frontend stream and the agent stream by two Forwarders (one copy, credits withheld until sent). Part
 * of the tunnel module (see tunnel.h for ownership); the frontend stream belongs to its H2Conn.
 *
 * konn differs from upstream where upstream is unsafe: only DATA and CLOSE_REQ naming this stream's own connectID
 * are passed to the agent (a frontend cannot reach another stream's tunnel), and when the agent goes away pending
 * dials are answered at once with an error DIAL_RSP.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>

#include "backend.h"
#include "log.h"
#include "manager.h"
#include "tunnel.h"

static int front_send(Tunnel *t, const Packet *p) {
        int r;

        if (!t->fcall)
                return -ENOTCONN;
        r = grpc_call_send_packet(t->fcall, p);
        if (r < 0)
                log_debug_errno(r, "Failed to send %s to frontend %s: %m", packet_type_to_string(p->type), t->peer);
        else
                manager_count_packet(t->manager, "to_client", p->type);
        return r;
}

/* We are done with the frontend stream: trailers (OK) once everything queued is out, then forget the tunnel. */
static void front_finish(Tunnel *t) {
        if (t->fcall) {
                grpc_call_finish(t->fcall, GRPC_STATUS_OK, NULL);
                t->fcall = NULL;
        }
        tunnel_free(t);
}

static void front_send_dial_error(Tunnel *t, const char *error) {
        Packet p = { .type = PACKET_DIAL_RSP,
                     .dial_rsp = { .error = { error, strlen(error) }, .random = t->dial_id } };
        (void) front_send(t, &p);
}

void grpc_tunnel_free(Tunnel *t) {
        if (t->relay_live) {
                relay_done(&t->relay);
                t->relay_live = false;
        }
        if (t->forwarding) {
                forwarder_done(&t->to_agent, false);
                forwarder_done(&t->to_front, false);
                t->forwarding = false;
        }
        if (t->fcall) {
                grpc_call_finish(t->fcall, GRPC_STATUS_OK, NULL);
                t->fcall = NULL;
        }
}

void grpc_dial_succeeded(Tunnel *t) {
        Packet p = { .type = PACKET_DIAL_RSP, .dial_rsp = { .connect_id = t->connect_id, .random = t->dial_id } };
        forwarder_init(&t->to_agent, t->fcall, tunnel_agent_call(t), t->connect_id);
        forwarder_init(&t->to_front, tunnel_agent_call(t), t->fcall, t->connect_id);
        t->to_agent.sent_packets = t->to_front.sent_packets = t->manager->metrics.stream_packets_total;
        t->to_agent.sent_labels[0] = "to_agent";
        t->to_front.sent_labels[0] = "to_client";
        t->to_agent.sent_labels[1] = t->to_front.sent_labels[1] = "DATA";
        t->forwarding = true;
        if (front_send(t, &p) < 0) {
                tunnel_send_close(t);
                tunnel_free(t);
        }
}

void grpc_dial_failed(Tunnel *t, const char *error) {
        front_send_dial_error(t, error);
        front_finish(t);
}

void grpc_dial_closed(Tunnel *t) {
        Packet p = { .type = PACKET_DIAL_CLS, .dial_cls.random = t->dial_id };

        (void) front_send(t, &p);
        front_finish(t);
}

void grpc_backend_gone(Tunnel *t, bool was_pending) {
        if (t->forwarding) {
                /* The agent's stream is going away: nothing more is owed to it or sent on it. */
                forwarder_forget_call(&t->to_front, t->to_front.src);
                forwarder_forget_call(&t->to_agent, t->to_agent.dst);
                forwarder_done(&t->to_front, true);
        }
        if (was_pending)
                front_send_dial_error(t, "agent disconnected before the dial completed");
        else {
                Packet p = { .type = PACKET_CLOSE_RSP, .close_rsp.connect_id = t->connect_id };
                (void) front_send(t, &p);
        }
        front_finish(t);
}

/* The agent's stream had to be given up on this tunnel: tell both sides, drop it. */
static void grpc_tunnel_abort(Tunnel *t, const char *error) {
        Packet r = { .type = PACKET_CLOSE_RSP,
                     .close_rsp = { .error = { error, strlen(error) }, .connect_id = t->connect_id } };

        (void) front_send(t, &r);
        tunnel_log_closed(t, error);
        tunnel_send_close(t);
        front_finish(t);
}

int grpc_deliver(Tunnel *t, const uint8_t *data, size_t len) {
        int r = forwarder_push(&t->to_front, data, len);

        if (r < 0) {
                grpc_tunnel_abort(t, "frontend is not reading");
                return 0;
        }
        t->bytes_out += len;
        return r;
}

void grpc_remote_closed(Tunnel *t) {
        Packet p = { .type = PACKET_CLOSE_RSP, .close_rsp.connect_id = t->connect_id };

        /* What the agent sent before CLOSE_RSP reaches the frontend first. */
        forwarder_done(&t->to_front, true);
        forwarder_done(&t->to_agent, false);
        t->forwarding = false;
        (void) front_send(t, &p);
        tunnel_log_closed(t, "closed by agent");
        front_finish(t);
}

/* Direct route: the destination socket is relayed on the frontend's own stream, as an agent endpoint is relayed on
 * the agent's. */
static void on_direct_relay_event(Relay *r, RelayEvent ev, int error, void *userdata) {
        Tunnel *t = userdata;
        Packet p = { .type = PACKET_CLOSE_RSP, .close_rsp.connect_id = t->connect_id };

        if (ev == RELAY_DRAINED) {
                /* After the frontend's CLOSE_REQ: everything it sent reached the destination. */
                tunnel_log_closed(t, "closed by frontend");
                tunnel_free(t);
                return;
        }
        /* The destination closed: CLOSE_RSP after the DATA already queued, then trailers. */
        relay_detach_call(&t->relay);
        (void) front_send(t, &p);
        tunnel_log_closed(t, error < 0 ? "destination connection failed" : "closed by destination");
        front_finish(t);
}

void grpc_direct_established(Tunnel *t, int fd) {
        Packet p = { .type = PACKET_DIAL_RSP, .dial_rsp = { .connect_id = t->connect_id, .random = t->dial_id } };
        Transport dest;
        int r;

        transport_init(&dest, fd, NULL);
        r = relay_init(&t->relay, t->manager->event, &dest, on_direct_relay_event, t);
        t->relay_live = true;
        t->relay.sent_packets = t->manager->metrics.stream_packets_total;
        t->relay.sent_labels[0] = "to_client";
        t->relay.sent_labels[1] = "DATA";
        if (r >= 0)
                r = front_send(t, &p);
        if (r >= 0)
                r = relay_start(&t->relay, t->fcall, t->connect_id, NULL, 0);
        if (r < 0)
                front_finish(t);
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Packets from the frontend */

static void front_dial(Tunnel *t, const Packet *p) {
        Manager *m = t->manager;
        int r;

        if (t->state != TUNNEL_HEADER) {
                Packet e = { .type = PACKET_DIAL_RSP,
                             .dial_rsp = { .error = { "only one dial per stream is supported", 37 },
                                           .random = p->dial_req.random } };
                (void) front_send(t, &e);
                return;
        }
        t->dial_id = p->dial_req.random;
        (void) snprintf(t->dest, sizeof(t->dest), "%.*s", (int) MIN(p->dial_req.address.len, sizeof(t->dest) - 1),
                        p->dial_req.address.ptr);
        if (idmap_get(m->pending, t->dial_id)) {
                front_send_dial_error(t, "dial ID already in use");
                t->ignore_input = true;
                return;
        }
        r = tunnel_request_dial(t);
        if (r == -ENOENT) {
                log_struct(LOG_INFO, LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_DEST", t->dest }),
                           "No agent available for a dial to '%s' from %s.", t->dest, t->peer);
                front_send_dial_error(t, "No agent available");
                t->ignore_input = true;
        } else if (r == -EBUSY || r == -EUSERS) {
                front_send_dial_error(t, r == -EBUSY ? "too many pending dials" : "every agent is at its tunnel limit");
                t->ignore_input = true;
        } else if (r < 0) {
                char err[128];
                (void) snprintf(err, sizeof(err), "failed to send the dial request: %s", strerror(-r));
                front_send_dial_error(t, err);
                t->ignore_input = true;
        }
}

static int front_data(Tunnel *t, const Packet *p) {
        int64_t cid = p->data.connect_id;
        int r;

        if (t->state == TUNNEL_HEADER) {
                Packet e = { .type = PACKET_CLOSE_RSP,
                             .close_rsp = { .error = { "backend not initialized", 23 }, .connect_id = cid } };
                (void) front_send(t, &e);
                t->ignore_input = true;
                return 0;
        }
        if (cid == 0 || t->state == TUNNEL_CLOSING)
                return 0;
        if (t->state != TUNNEL_ESTABLISHED || cid != t->connect_id) {
                Packet e = { .type = PACKET_CLOSE_RSP,
                             .close_rsp = { .error = { "mismatched connection IDs", 25 }, .connect_id = cid } };
                log_warning("Frontend %s sent DATA for connection %" PRIi64 " on the stream of connection %" PRIi64
                            ", refusing.", t->peer, cid, t->connect_id);
                (void) front_send(t, &e);
                if (t->state == TUNNEL_ESTABLISHED)
                        grpc_tunnel_abort(t, "mismatched connection IDs");
                else
                        t->ignore_input = true;
                return 0;
        }
        if (t->direct) {
                r = relay_deliver(&t->relay, p->data.data, p->data.data_len);
                if (r < 0) {
                        Packet e = { .type = PACKET_CLOSE_RSP,
                                     .close_rsp = { .error = { "destination is not reading", 26 },
                                                    .connect_id = t->connect_id } };
                        relay_detach_call(&t->relay);
                        (void) front_send(t, &e);
                        tunnel_log_closed(t, "destination is not reading");
                        front_finish(t);
                        return 0;
                }
                return r;
        }
        r = forwarder_push(&t->to_agent, p->data.data, p->data.data_len);
        if (r < 0) {
                grpc_tunnel_abort(t, "agent is not reading");
                return 0;
        }
        t->bytes_in += p->data.data_len;
        return r;
}

static void front_close_request(Tunnel *t, const Packet *p) {
        int64_t cid = p->close_req.connect_id;

        switch (t->state) {
        case TUNNEL_HEADER: {
                Packet e = { .type = PACKET_CLOSE_RSP,
                             .close_rsp = { .error = { "backend uninitialized", 21 }, .connect_id = cid } };
                (void) front_send(t, &e);
                return;
        }
        case TUNNEL_PENDING: {
                /* Closing before the dial answered: abandon the dial. */
                Packet c = { .type = PACKET_DIAL_CLS, .dial_cls.random = t->dial_id };
                Packet e = { .type = PACKET_CLOSE_RSP, .close_rsp.connect_id = cid };
                Backend *b = t->backend;

                tunnel_unpend(t);
                t->state = TUNNEL_CLOSING;
                (void) front_send(t, &e);
                front_finish(t);
                if (b)
                        (void) backend_send(b, &c);
                return;
        }
        case TUNNEL_ESTABLISHED: {
                Packet c = { .type = PACKET_CLOSE_REQ, .close_req.connect_id = t->connect_id };
                int r;

                if (cid != t->connect_id) {
                        Packet e = { .type = PACKET_CLOSE_RSP,
                                     .close_rsp = { .error = { "Unknown connectID", 17 }, .connect_id = cid } };
                        (void) front_send(t, &e);
                        return;
                }
                if (t->direct) {
                        /* Write what the frontend sent to the destination, confirm, close once written. */
                        Packet e = { .type = PACKET_CLOSE_RSP, .close_rsp.connect_id = cid };

                        t->ignore_input = true;
                        t->state = TUNNEL_CLOSING;
                        relay_detach_call(&t->relay);
                        (void) front_send(t, &e);
                        if (t->fcall) {
                                grpc_call_finish(t->fcall, GRPC_STATUS_OK, NULL);
                                t->fcall = NULL;
                        }
                        relay_close(&t->relay);
                        return;
                }
                /* Everything the frontend sent goes first; then wait for the agent's CLOSE_RSP. */
                forwarder_done(&t->to_agent, true);
                t->ignore_input = true;
                if (t->acall) {
                        r = grpc_call_send_packet(t->acall, &c);
                        if (r < 0)
                                grpc_tunnel_abort(t, "agent is not reading");
                } else
                        (void) backend_send(t->backend, &c);
                return;
        }
        default:
                return;
        }
}

static int front_on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        Tunnel *t = userdata;

        if (packet_is_new(p))
                manager_count_packet(t->manager, "from_client", p->type);
        if (t->ignore_input)
                return 0;
        switch (p->type) {
        case PACKET_DIAL_REQ:
                front_dial(t, p);
                return 0;
        case PACKET_DATA:
                return front_data(t, p);
        case PACKET_CLOSE_REQ:
                front_close_request(t, p);
                return 0;
        case PACKET_DIAL_CLS:
                if (t->state == TUNNEL_PENDING && p->dial_cls.random == t->dial_id) {
                        Packet c = { .type = PACKET_DIAL_CLS, .dial_cls.random = t->dial_id };
                        Backend *b = t->backend;

                        manager_count_dial_failure(t->manager, "frontend_close");
                        tunnel_unpend(t);
                        t->state = TUNNEL_CLOSING;
                        front_finish(t);
                        /* Upstream agents ignore it; konn agents abandon the dial. */
                        if (b)
                                (void) backend_send(b, &c);
                }
                return 0;
        default:
                log_debug("Ignoring %s packet from frontend %s.", packet_type_to_string(p->type), t->peer);
                return 0;
        }
}

static void front_on_end(GrpcCall *call, int status, const char *message, void *userdata) {
        Tunnel *t = userdata;
        Backend *b = t->backend;

        if (status != GRPC_STATUS_OK && status != GRPC_STATUS_CANCELLED && status != GRPC_STATUS_UNAVAILABLE)
                /* h2conn ended it over bad input (malformed, mismatched, oversized, compressed, truncated). */
                log_warning("Dropping a stream from frontend %s: %s (%s).", t->peer, message ?: "invalid input",
                            grpc_status_to_string(status));
        t->fcall = NULL;
        if (t->relay_live)
                relay_detach_call(&t->relay); /* direct route: the call carrying it is gone */
        if (t->forwarding) {
                forwarder_forget_call(&t->to_agent, call);
                forwarder_forget_call(&t->to_front, call);
        }
        if (t->state == TUNNEL_PENDING) {
                /* §5.2: pending dials of a stream that ends are cancelled towards the agent. */
                manager_count_dial_failure(t->manager, "frontend_close");
                Packet c = { .type = PACKET_DIAL_CLS, .dial_cls.random = t->dial_id };
                tunnel_free(t);
                if (b)
                        (void) backend_send(b, &c);
                return;
        }
        if (t->state == TUNNEL_ESTABLISHED) {
                if (t->forwarding)
                        forwarder_done(&t->to_agent, true);
                tunnel_log_closed(t, "closed by frontend");
                tunnel_send_close(t);
        }
        tunnel_free(t);
}

static const GrpcCallHandler front_handler = {
        .on_packet = front_on_packet,
        .on_end = front_on_end,
};

int grpc_frontend_on_call(Manager *m, const char *peer, GrpcCall *call, const char **ret_message) {
        Tunnel *t;
        int r;

        if (!streq_ptr(grpc_call_path(call), "/ProxyService/Proxy"))
                return GRPC_STATUS_UNIMPLEMENTED;
        if (!manager_frontend_has_room(m)) {
                manager_refused(m, "frontend_connections", peer, "a Proxy stream");
                *ret_message = "too many frontend connections";
                return GRPC_STATUS_RESOURCE_EXHAUSTED;
        }
        t = tunnel_alloc(m, TUNNEL_GRPC, peer);
        if (!t)
                return GRPC_STATUS_RESOURCE_EXHAUSTED;
        t->state = TUNNEL_HEADER;
        r = grpc_call_accept(call, NULL, &front_handler, t);
        if (r < 0) {
                tunnel_free(t);
                return GRPC_STATUS_INTERNAL;
        }
        t->fcall = call;
        return 0;
}
