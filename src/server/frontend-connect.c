/* SPDX-License-Identifier: Apache-2.0 */
/*
 * frontend-connect — the HTTP CONNECT frontend end of a Tunnel: TLS handshake (TCP frontend), a bounded request
 * header read with a timeout, the dial, the exact response bytes of protocol.md §7.1 / §15, then the relay
 * between the client socket and the agent stream. Part of the tunnel module (see tunnel.h for ownership).
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <time.h>

#include "backend.h"
#include "connect.h"
#include "log.h"
#include "manager.h"
#include "tunnel.h"

/* Request header plus whatever the client pipelines while its dial is pending. The buffer starts small (a
 * kube-apiserver CONNECT is under 100 bytes) and grows only for clients that send more. */
#define TUNNEL_HBUF_MAX (CONNECT_HEADER_MAX + 8192)
#define TUNNEL_HBUF_INITIAL 512

void connect_tunnel_free(Tunnel *t) {
        if (t->relay_live)
                relay_done(&t->relay);
        if (t->bridge_live)
                bridge_done(&t->bridge);
        t->io = sd_event_source_disable_unref(t->io);
        t->timer = sd_event_source_disable_unref(t->timer);
        transport_done(&t->t);
        t->hbuf = mfree(t->hbuf);
}

static void on_relay_event(Relay *r, RelayEvent ev, int error, void *userdata);

/* Move the client socket into the relay (the header-phase io source goes away). */
static int tunnel_take_relay(Tunnel *t) {
        int r;

        t->io = sd_event_source_disable_unref(t->io);
        t->timer = sd_event_source_disable_unref(t->timer);
        r = relay_init(&t->relay, t->manager->event, &t->t, on_relay_event, t);
        t->relay_live = true;
        return r;
}

/* Write a final response and close once it is out (or at once if the socket is gone). */
static void respond_and_close(Tunnel *t, const char *data, size_t len) {
        tunnel_unpend(t);
        tunnel_unestablish(t);
        t->state = TUNNEL_CLOSING;
        if (!t->relay_live && tunnel_take_relay(t) < 0) {
                tunnel_free(t);
                return;
        }
        relay_detach_call(&t->relay);
        if (len > 0 && relay_write_raw(&t->relay, data, len) < 0) {
                tunnel_free(t);
                return;
        }
        relay_close(&t->relay);
}

static void respond_static(Tunnel *t, const char *s) {
        respond_and_close(t, s, strlen(s));
}

static void on_relay_event(Relay *r, RelayEvent ev, int error, void *userdata) {
        Tunnel *t = userdata;

        if (ev == RELAY_DRAINED) {
                if (t->connect_id != 0)
                        tunnel_log_closed(t, "closed by agent");
                tunnel_free(t);
                return;
        }
        /* The client went away or failed: drop the tunnel, tell the agent. */
        if (t->state == TUNNEL_ESTABLISHED) {
                tunnel_log_closed(t, error < 0 ? "client connection failed" : "closed by client");
                tunnel_send_close(t);
        }
        tunnel_free(t);
}

void connect_dial_succeeded(Tunnel *t) {
        int r;

        r = tunnel_take_relay(t);
        t->relay.sent_packets = t->manager->metrics.stream_packets_total;
        t->relay.sent_labels[0] = "to_agent";
        t->relay.sent_labels[1] = "DATA";
        if (r >= 0)
                r = relay_write_raw(&t->relay, CONNECT_RESPONSE_ESTABLISHED, strlen(CONNECT_RESPONSE_ESTABLISHED));
        if (r >= 0)
                r = relay_start(&t->relay, tunnel_agent_call(t), t->connect_id, (const uint8_t *) t->hbuf + t->header_len,
                                t->hlen - t->header_len);
        t->hbuf = mfree(t->hbuf);
        t->hlen = t->hcap = t->header_len = 0;
        if (r < 0) {
                log_debug_errno(r, "Failed to start relaying tunnel %" PRIi64 ": %m", t->connect_id);
                tunnel_send_close(t);
                tunnel_free(t);
        }
}

static void on_bridge_done(Bridge *b, int error, const char *why, void *userdata) {
        Tunnel *t = userdata;

        tunnel_log_closed(t, why);
        tunnel_free(t);
}

/* Direct route: the server's own socket to the destination, bridged to the client with the same 200 first and the
 * client's pipelined bytes first the other way. */
void connect_direct_established(Tunnel *t, int fd) {
        Transport dest;
        int r;

        transport_init(&dest, fd, NULL);
        t->io = sd_event_source_disable_unref(t->io);
        t->timer = sd_event_source_disable_unref(t->timer);
        r = bridge_start(&t->bridge, t->manager->event, &t->t, &dest, CONNECT_RESPONSE_ESTABLISHED,
                         strlen(CONNECT_RESPONSE_ESTABLISHED), t->hbuf + t->header_len, t->hlen - t->header_len,
                         on_bridge_done, t);
        t->bridge_live = true;
        t->hbuf = mfree(t->hbuf);
        t->hlen = t->hcap = t->header_len = 0;
        if (r < 0) {
                log_debug_errno(r, "Failed to start the direct tunnel %" PRIi64 ": %m", t->connect_id);
                tunnel_free(t);
        }
}

void connect_dial_failed(Tunnel *t, const char *error) {
        char buf[1024];
        size_t len;

        if (connect_format_dial_error(error, buf, sizeof(buf), &len) < 0)
                (void) connect_format_dial_error("dial failed", buf, sizeof(buf), &len);
        respond_and_close(t, buf, len);
}

void connect_dial_timed_out(Tunnel *t) {
        respond_static(t, CONNECT_RESPONSE_DIAL_TIMEOUT);
}

void connect_dial_closed(Tunnel *t) {
        /* DIAL_CLS from the agent: close without any response (§7.1). */
        respond_and_close(t, "", 0);
}

void connect_backend_gone(Tunnel *t, bool was_pending) {
        char buf[256];
        size_t len = 0;

        if (was_pending) {
                if (connect_format_502("Backend context error: ", "context canceled", buf, sizeof(buf), &len) < 0)
                        len = 0;
                respond_and_close(t, buf, len);
                return;
        }
        if (t->relay_live) {
                /* Deliver what the agent sent before it went, then close. */
                relay_detach_call(&t->relay);
                relay_close(&t->relay);
        } else
                tunnel_free(t);
}

int connect_deliver(Tunnel *t, const uint8_t *data, size_t len) {
        int r = relay_deliver(&t->relay, data, len);

        if (r < 0) {
                log_debug_errno(r, "Writing to the client of tunnel %" PRIi64 " failed: %m", t->connect_id);
                tunnel_log_closed(t, "client write failed");
                tunnel_send_close(t);
                tunnel_free(t);
                return 0;
        }
        return r;
}

void connect_remote_closed(Tunnel *t) {
        /* Deliver what the agent sent before CLOSE_RSP, then close. Credits are no longer owed. */
        relay_detach_call(&t->relay);
        relay_close(&t->relay);
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Header phase */

static void start_dial(Tunnel *t, const ConnectRequest *req) {
        int r;

        (void) snprintf(t->dest, sizeof(t->dest), "%s", req->authority);
        t->dial_id = manager_new_dial_id(t->manager);
        r = tunnel_request_dial(t);
        if (r == -ENOENT) {
                log_struct(LOG_INFO, LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_DEST", t->dest }),
                           "No agent available for a dial to '%s' from %s.", t->dest, t->peer);
                respond_static(t, CONNECT_RESPONSE_NO_AGENT);
                return;
        }
        if (r == -EBUSY || r == -EUSERS) {
                respond_static(t, r == -EBUSY ? CONNECT_RESPONSE_LIMIT_DIALS : CONNECT_RESPONSE_LIMIT_AGENT);
                return;
        }
        if (r < 0) {
                char buf[512];
                size_t len;
                if (connect_format_502("Failed to tunnel dial request: ", strerror(-r), buf, sizeof(buf), &len) < 0)
                        len = 0;
                respond_and_close(t, buf, len);
        }
}

/* Returns false when the tunnel was freed or handed on. */
static bool parse_header(Tunnel *t) {
        for (;;) {
                ConnectRequest req;
                size_t hl = 0;
                int r = connect_parse(t->hbuf, t->hlen, &req, &hl);

                switch (r) {
                case 0:
                        t->header_len = hl;
                        t->timer = sd_event_source_disable_unref(t->timer);
                        start_dial(t, &req);
                        return false;
                case -EAGAIN:
                        return true;
                case -E2BIG:
                        log_warning("CONNECT request from %s exceeds %d bytes, refusing.", t->peer, CONNECT_HEADER_MAX);
                        respond_static(t, CONNECT_RESPONSE_TOO_LARGE);
                        return false;
                case -EOPNOTSUPP: {
                        char buf[512];
                        size_t len;
                        ssize_t n;

                        log_info("Refusing a non-CONNECT request from %s.", t->peer);
                        if (connect_format_405(time(NULL), buf, sizeof(buf), &len) < 0) {
                                respond_static(t, CONNECT_RESPONSE_BAD_REQUEST);
                                return false;
                        }
                        if (req.has_body) {
                                respond_and_close(t, buf, len);
                                return false;
                        }
                        /* Keep-alive, as Go does: answer and parse the next request. */
                        n = transport_write(&t->t, buf, len);
                        if (n != (ssize_t) len) {
                                respond_and_close(t, "", 0);
                                return false;
                        }
                        memmove(t->hbuf, t->hbuf + hl, t->hlen - hl);
                        t->hlen -= hl;
                        continue;
                }
                default:
                        log_warning("Malformed CONNECT request from %s, refusing.", t->peer);
                        respond_static(t, CONNECT_RESPONSE_BAD_REQUEST);
                        return false;
                }
        }
}

static int update_io(Tunnel *t, uint32_t ev) {
        if (ev == 0)
                return sd_event_source_set_enabled(t->io, SD_EVENT_OFF);
        (void) sd_event_source_set_io_events(t->io, ev);
        return sd_event_source_set_enabled(t->io, SD_EVENT_ON);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Tunnel *t = userdata;
        int r;

        if (t->state == TUNNEL_HANDSHAKE) {
                r = transport_handshake(&t->t);
                if (r == -EAGAIN)
                        return update_io(t, t->t.want);
                if (r < 0) {
                        log_warning("TLS handshake with frontend client %s failed: %s", t->peer,
                                    transport_error(&t->t) ?: strerror(-r));
                        tunnel_free(t);
                        return 0;
                }
                t->state = TUNNEL_HEADER;
        }

        for (unsigned i = 0; i < 4; i++) {
                ssize_t n;

                if (t->hlen >= TUNNEL_HBUF_MAX) {
                        /* Pending and the client keeps sending: wait for the dial. */
                        (void) sd_event_source_set_enabled(t->io, SD_EVENT_OFF);
                        return 0;
                }
                if (t->hlen == t->hcap) {
                        size_t cap = MIN(t->hcap * 4, (size_t) TUNNEL_HBUF_MAX);
                        char *nb = realloc(t->hbuf, cap);
                        if (!nb) {
                                log_oom();
                                tunnel_free(t);
                                return 0;
                        }
                        t->hbuf = nb;
                        t->hcap = cap;
                }
                n = transport_read(&t->t, t->hbuf + t->hlen, t->hcap - t->hlen);
                if (n == -EAGAIN)
                        break;
                if (n <= 0) {
                        if (t->state == TUNNEL_PENDING) {
                                /* Client gave up while its dial is pending: tell the agent, forget it. */
                                manager_count_dial_failure(t->manager, "frontend_close");
                                Packet p = { .type = PACKET_DIAL_CLS, .dial_cls.random = t->dial_id };
                                Backend *b = t->backend;

                                tunnel_free(t);
                                if (b)
                                        (void) backend_send(b, &p);
                                return 0;
                        }
                        if (n < 0 || t->hlen > 0)
                                log_debug("Frontend client %s went away before sending a complete request.", t->peer);
                        tunnel_free(t);
                        return 0;
                }
                t->hlen += (size_t) n;
                if (t->state == TUNNEL_HEADER && !parse_header(t))
                        return 0;
                if (transport_pending(&t->t) == 0)
                        break;
        }
        return update_io(t, transport_read_events(&t->t));
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Tunnel *t = userdata;

        log_info("Frontend client %s sent no complete request within the time limit, closing.", t->peer);
        tunnel_free(t);
        return 0;
}

int connect_tunnel_new(Manager *m, int fd, bool tls, const char *peer) {
        _cleanup_close_ int cfd = fd;
        TlsConn *tc = NULL;
        Tunnel *t;
        int r;

        if (tls) {
                r = tls_conn_new(m->frontend_ctx, fd, true, NULL, &tc);
                if (r < 0)
                        return r;
        }
        t = tunnel_alloc(m, TUNNEL_CONNECT, peer);
        if (!t) {
                tls_conn_free(tc);
                return -ENOMEM;
        }
        transport_init(&t->t, TAKE_FD(cfd), tc);
        t->state = tls ? TUNNEL_HANDSHAKE : TUNNEL_HEADER;
        t->hcap = TUNNEL_HBUF_INITIAL;
        t->hbuf = malloc(t->hcap);
        if (!t->hbuf) {
                tunnel_free(t);
                return -ENOMEM;
        }
        r = sd_event_add_io(m->event, &t->io, t->t.fd, EPOLLIN, on_io, t);
        if (r >= 0)
                r = sd_event_add_time_relative(m->event, &t->timer, CLOCK_MONOTONIC,
                                               m->config->header_timeout_usec +
                                                       (tls ? m->config->handshake_timeout_usec : 0),
                                               0, on_timeout, t);
        if (r < 0) {
                tunnel_free(t);
                return r;
        }
        /* A plain client has usually sent its CONNECT line by the time it is accepted: read it now rather than
         * one loop iteration later (on_io may free t; EAGAIN just leaves the io source waiting). */
        if (!tls)
                (void) on_io(t->io, t->t.fd, EPOLLIN, t);
        return 0;
}
