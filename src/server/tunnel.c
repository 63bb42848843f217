/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "backend.h"
#include "log.h"
#include "manager.h"
#include "tunnel.h"

uint64_t now_usec(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static void tunnel_counters(const Tunnel *t, uint64_t *in, uint64_t *out) {
        if (t->kind == TUNNEL_CONNECT) {
                *in = t->relay.bytes_in;
                *out = t->relay.bytes_out;
        } else {
                *in = t->bytes_in;
                *out = t->bytes_out;
        }
}

void tunnel_log_opened(Tunnel *t) {
        char cid[32], did[32];

        if (LOG_DEBUG > log_get_max_level())
                return;
        (void) snprintf(cid, sizeof(cid), "%" PRIi64, t->connect_id);
        (void) snprintf(did, sizeof(did), "%" PRIi64, t->dial_id);
        log_struct(LOG_DEBUG,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_TUNNEL_OPENED },
                              { "KONN_AGENT_ID", t->backend ? t->backend->agent_id : NULL },
                              { "KONN_CONNECT_ID", cid }, { "KONN_DIAL_ID", did }, { "KONN_DEST", t->dest }),
                   "Tunnel %s to '%s' established through agent '%s'.", cid, t->dest,
                   t->backend ? t->backend->agent_id : "?");
}

void tunnel_log_closed(Tunnel *t, const char *why) {
        char cid[32], did[32], in[32], out[32], dur[32];
        uint64_t bin, bout;

        if (LOG_DEBUG > log_get_max_level())
                return;
        tunnel_counters(t, &bin, &bout);
        (void) snprintf(cid, sizeof(cid), "%" PRIi64, t->connect_id);
        (void) snprintf(did, sizeof(did), "%" PRIi64, t->dial_id);
        (void) snprintf(in, sizeof(in), "%" PRIu64, bin);
        (void) snprintf(out, sizeof(out), "%" PRIu64, bout);
        (void) snprintf(dur, sizeof(dur), "%" PRIu64, now_usec() - t->start_usec);
        log_struct(LOG_DEBUG,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_TUNNEL_CLOSED },
                              { "KONN_AGENT_ID", t->backend ? t->backend->agent_id : NULL },
                              { "KONN_CONNECT_ID", cid }, { "KONN_DIAL_ID", did }, { "KONN_DEST", t->dest },
                              { "KONN_BYTES_IN", in }, { "KONN_BYTES_OUT", out }, { "KONN_DURATION_USEC", dur }),
                   "Tunnel %s to '%s' closed (%s), %s bytes in, %s bytes out.", cid, t->dest, why, in, out);
}

void tunnel_unpend(Tunnel *t) {
        if (t->state != TUNNEL_PENDING)
                return;
        t->timer = sd_event_source_disable_unref(t->timer);
        if (idmap_get(t->manager->pending, t->dial_id) == t)
                (void) idmap_remove(t->manager->pending, t->dial_id);
        if (t->backend) {
                LIST_REMOVE(pending, t->backend->pending, t);
                t->backend->n_pending--;
        }
}

void tunnel_unestablish(Tunnel *t) {
        if (t->state == TUNNEL_ESTABLISHED && t->backend && idmap_get(t->backend->tunnels, t->connect_id) == t)
                (void) idmap_remove(t->backend->tunnels, t->connect_id);
}

Tunnel *tunnel_alloc(Manager *m, TunnelKind kind, const char *peer) {
        Tunnel *t = calloc(1, sizeof(Tunnel));

        if (!t)
                return NULL;
        t->manager = m;
        t->kind = kind;
        t->t = TRANSPORT_NULL;
        t->start_usec = now_usec();
        (void) snprintf(t->peer, sizeof(t->peer), "%s", peer);
        LIST_PREPEND(tunnels, m->tunnels, t);
        m->n_tunnels++;
        return t;
}

Tunnel *tunnel_free(Tunnel *t) {
        if (!t)
                return NULL;
        tunnel_unpend(t);
        tunnel_unestablish(t);
        LIST_REMOVE(tunnels, t->manager->tunnels, t);
        t->manager->n_tunnels--;
        t->timer = sd_event_source_disable_unref(t->timer);
        if (t->kind == TUNNEL_CONNECT)
                connect_tunnel_free(t);
        else
                grpc_tunnel_free(t);
        free(t);
        return NULL;
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
        tunnel_unpend(t);
        t->state = TUNNEL_CLOSING;
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
        Packet p;
        int r;

        b = manager_pick_backend(m, t->dest);
        if (!b)
                return -ENOENT;
        p = (Packet){ .type = PACKET_DIAL_REQ,
                      .dial_req = { .protocol = { "tcp", 3 },
                                    .address = { t->dest, strlen(t->dest) },
                                    .random = t->dial_id } };
        /* Send first: if that fails the agent stream is ended, and this tunnel is not yet one of its dials. */
        r = backend_send(b, &p);
        if (r < 0)
                return r;
        r = idmap_put(m->pending, t->dial_id, t);
        if (r < 0) {
                Packet c = { .type = PACKET_DIAL_CLS, .dial_cls.random = t->dial_id };
                (void) backend_send(b, &c);
                return r;
        }
        t->backend = b;
        t->state = TUNNEL_PENDING;
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
        t->connect_id = connect_id;
        r = idmap_put(b->tunnels, connect_id, t);
        if (r < 0) {
                Packet p = { .type = PACKET_CLOSE_REQ, .close_req.connect_id = connect_id };
                log_warning_errno(r, "Agent '%s' answered dial %" PRIi64 " with connectID %" PRIi64
                                  " that is already in use, closing it: %m", b->agent_id, t->dial_id, connect_id);
                t->state = TUNNEL_CLOSING;
                (void) backend_send(b, &p);
                return false;
        }
        t->state = TUNNEL_ESTABLISHED;
        return true;
}

void tunnel_dial_succeeded(Tunnel *t, int64_t connect_id) {
        if (!tunnel_establish(t, connect_id)) {
                tunnel_dial_failed(t, "agent reused a connection ID");
                return;
        }
        tunnel_log_opened(t);
        if (t->kind == TUNNEL_CONNECT)
                connect_dial_succeeded(t);
        else
                grpc_dial_succeeded(t);
}

void tunnel_dial_failed(Tunnel *t, const char *error) {
        char did[32];

        (void) snprintf(did, sizeof(did), "%" PRIi64, t->dial_id);
        log_struct(LOG_INFO,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED },
                              { "KONN_AGENT_ID", t->backend ? t->backend->agent_id : NULL },
                              { "KONN_DIAL_ID", did }, { "KONN_DEST", t->dest }),
                   "Dial to '%s' through agent '%s' failed: %s", t->dest,
                   t->backend ? t->backend->agent_id : "?", error);
        tunnel_unpend(t);
        t->state = TUNNEL_CLOSING;
        if (t->kind == TUNNEL_CONNECT)
                connect_dial_failed(t, error);
        else
                grpc_dial_failed(t, error);
}

void tunnel_dial_closed(Tunnel *t) {
        tunnel_unpend(t);
        t->state = TUNNEL_CLOSING;
        if (t->kind == TUNNEL_CONNECT)
                connect_dial_closed(t);
        else
                grpc_dial_closed(t);
}

void tunnel_backend_gone(Tunnel *t) {
        bool was_pending = t->state == TUNNEL_PENDING;

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
        if (t->kind == TUNNEL_CONNECT)
                connect_remote_closed(t);
        else
                grpc_remote_closed(t);
}
