/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <time.h>

#include "addrlist.h"
#include "daemon.h"
#include "log.h"
#include "manager.h"
#include "reverse.h"
#include "serverconn.h"
#include "sock.h"

static uint64_t mono_usec(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static void count(Manager *m, const char *name, const char *result) {
        metric_add(m->reverse_total, (const char *const[]){ name, result }, 1);
}

static void reverse_log_closed(ReverseConn *rc, const char *why) {
        char cid[32], in[32], out[32], dur[32];

        if (LOG_DEBUG > log_get_max_level())
                return;
        (void) snprintf(cid, sizeof(cid), "%" PRIi64, rc->connect_id);
        (void) snprintf(in, sizeof(in), "%" PRIu64, rc->relay.bytes_in);
        (void) snprintf(out, sizeof(out), "%" PRIu64, rc->relay.bytes_out);
        (void) snprintf(dur, sizeof(dur), "%" PRIu64, mono_usec() - rc->start_usec);
        log_struct(LOG_DEBUG,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_TUNNEL_CLOSED }, { "KONN_DIRECTION", "reverse" },
                              { "KONN_REVERSE_NAME", rc->listener->name }, { "KONN_SERVER_ID", rc->sc->server_id },
                              { "KONN_CONNECT_ID", cid }, { "KONN_PEER", rc->peer }, { "KONN_BYTES_IN", in },
                              { "KONN_BYTES_OUT", out }, { "KONN_DURATION_USEC", dur }),
                   "Reverse connection %s from %s to '%s' closed (%s).", cid, rc->peer, rc->listener->name, why);
}

static ReverseConn *reverse_conn_free(ReverseConn *rc) {
        ServerConn *sc;

        if (!rc)
                return NULL;
        sc = rc->sc;
        LIST_REMOVE(rconns, sc->rconns, rc);
        sc->n_rconns--;
        relay_done(&rc->relay);
        if (rc->call) {
                /* Not closed in order: reset the stream. */
                grpc_call_abort(rc->call, GRPC_STATUS_CANCELLED, NULL);
                rc->call = NULL;
        }
        free(rc);
        manager_status_changed(sc->manager);
        server_conn_check_idle(sc);
        return NULL;
}

/* Our side is done (local EOF or error): CLOSE_RSP in-band after the queued DATA, then end our half. */
static void reverse_send_close(ReverseConn *rc) {
        Packet p = { .type = PACKET_CLOSE_RSP, .close_rsp.connect_id = rc->connect_id };

        if (!rc->call)
                return;
        relay_detach_call(&rc->relay);
        (void) grpc_call_send_packet(rc->call, &p);
        grpc_call_finish(rc->call, GRPC_STATUS_OK, NULL);
        rc->call = NULL;
}

static void on_relay_event(Relay *r, RelayEvent ev, int error, void *userdata) {
        ReverseConn *rc = userdata;

        if (ev == RELAY_DRAINED) {
                reverse_log_closed(rc, "closed by server");
                reverse_conn_free(rc);
                return;
        }
        reverse_log_closed(rc, error < 0 ? "client connection failed" : "closed by client");
        reverse_send_close(rc);
        reverse_conn_free(rc);
}

static int stream_on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        ReverseConn *rc = userdata;
        Manager *m = rc->sc->manager;
        int r;

        /* Not counted in upstream's stream_packets_total: that family describes the upstream protocol. */
        switch (p->type) {
        case PACKET_DIAL_RSP:
                if (rc->state != REVERSE_OPENING)
                        return 0;
                if (p->dial_rsp.error.len > 0 || p->dial_rsp.connect_id <= 0) {
                        /* A server sends its refusals as trailers; an error DIAL_RSP is treated alike. */
                        log_struct(LOG_WARNING,
                                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_DIRECTION", "reverse" },
                                              { "KONN_REVERSE_NAME", rc->listener->name },
                                              { "KONN_SERVER_ID", rc->sc->server_id }, { "KONN_PEER", rc->peer }),
                                   "Server '%s' refused the reverse connection from %s to '%s': %.*s",
                                   rc->sc->server_id, rc->peer, rc->listener->name, (int) p->dial_rsp.error.len,
                                   p->dial_rsp.error.ptr);
                        count(m, rc->listener->name, "refused");
                        reverse_conn_free(rc);
                        return 0;
                }
                rc->connect_id = p->dial_rsp.connect_id;
                rc->state = REVERSE_ESTABLISHED;
                r = relay_start(&rc->relay, call, rc->connect_id, NULL, 0);
                if (r < 0) {
                        reverse_send_close(rc);
                        reverse_conn_free(rc);
                        return 0;
                }
                count(m, rc->listener->name, "established");
                if (LOG_DEBUG <= log_get_max_level()) {
                        char cid[32];
                        (void) snprintf(cid, sizeof(cid), "%" PRIi64, rc->connect_id);
                        log_struct(LOG_DEBUG,
                                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_TUNNEL_OPENED }, { "KONN_DIRECTION", "reverse" },
                                              { "KONN_REVERSE_NAME", rc->listener->name },
                                              { "KONN_SERVER_ID", rc->sc->server_id }, { "KONN_CONNECT_ID", cid },
                                              { "KONN_PEER", rc->peer }),
                                   "Reverse connection %s from %s to '%s' established through server '%s'.", cid,
                                   rc->peer, rc->listener->name, rc->sc->server_id);
                }
                return 0;
        case PACKET_DATA:
                if (rc->state != REVERSE_ESTABLISHED)
                        return 0;
                r = relay_deliver(&rc->relay, p->data.data, p->data.data_len);
                if (r < 0) {
                        reverse_log_closed(rc, "client is not reading");
                        reverse_send_close(rc);
                        reverse_conn_free(rc);
                        return 0;
                }
                return r;
        case PACKET_CLOSE_RSP:
                if (rc->state != REVERSE_ESTABLISHED)
                        return 0;
                /* The destination closed: write what we have to the client, then close it. */
                rc->state = REVERSE_CLOSING;
                relay_detach_call(&rc->relay);
                grpc_call_finish(rc->call, GRPC_STATUS_OK, NULL);
                rc->call = NULL;
                relay_close(&rc->relay);
                return 0;
        default:
                return 0;
        }
}

static void stream_on_end(GrpcCall *call, int status, const char *message, void *userdata) {
        ReverseConn *rc = userdata;

        if (rc->state == REVERSE_ESTABLISHED)
                relay_detach_call(&rc->relay);
        rc->call = NULL;
        if (rc->state == REVERSE_OPENING) {
                /* Unknown or denied name, the per-agent limit, or the server's dial failed: one line here, one on
                 * the server. */
                log_struct(LOG_WARNING,
                           LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_DIRECTION", "reverse" },
                                      { "KONN_REVERSE_NAME", rc->listener->name }, { "KONN_SERVER_ID", rc->sc->server_id },
                                      { "KONN_PEER", rc->peer }),
                           "Server '%s' refused the reverse connection from %s to '%s': %s (%s).", rc->sc->server_id,
                           rc->peer, rc->listener->name, message ?: "no reason given", grpc_status_to_string(status));
                count(rc->sc->manager, rc->listener->name, "refused");
        } else if (rc->state == REVERSE_ESTABLISHED)
                reverse_log_closed(rc, "stream ended by server");
        reverse_conn_free(rc);
}

static const GrpcCallHandler stream_handler = {
        .on_packet = stream_on_packet,
        .on_end = stream_on_end,
};

/* A ready server connection that negotiated the feature, the one carrying the fewest of ours first. NULL if none;
 * *ret_unsupported then says whether a ready server lacks the feature (an upstream or a differently configured
 * konn server). */
static ServerConn *pick_server(Manager *m, bool *ret_unsupported) {
        ServerConn *best = NULL;

        *ret_unsupported = false;
        for (ServerConn *sc = m->conns; sc; sc = sc->conns_next) {
                /* After a GOAWAY no new stream may start on that connection. */
                if (sc->dead || sc->going_away || sc->state != SERVER_CONN_READY || !sc->conn)
                        continue;
                if (!sc->reverse) {
                        *ret_unsupported = true;
                        continue;
                }
                if (!best || sc->n_rconns < best->n_rconns)
                        best = sc;
        }
        return best;
}

static void refuse(ReverseListener *l, int fd, const char *peer, bool unsupported) {
        Manager *m = l->manager;

        (void) safe_close(fd);
        count(m, l->name, unsupported ? "unsupported" : "no_server");
        if (m->reverse_refusal_logged)
                return;
        m->reverse_refusal_logged = true;
        if (unsupported)
                log_struct(LOG_WARNING,
                           LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_DIRECTION", "reverse" },
                                      { "KONN_REVERSE_NAME", l->name }, { "KONN_PEER", peer }),
                           "No connected server offers node to control plane connections (konn-features: %s; "
                           "upstream servers never do): refusing connections on the reverse listeners (logged once).",
                           KONN_FEATURE_REVERSE);
        else
                log_struct(LOG_WARNING,
                           LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_DIRECTION", "reverse" },
                                      { "KONN_REVERSE_NAME", l->name }, { "KONN_PEER", peer }),
                           "No server connected: refusing connections on the reverse listeners until one is "
                           "(logged once).");
}

static void carry(ReverseListener *l, ServerConn *sc, int fd, const char *peer) {
        Manager *m = l->manager;
        const char *md[] = { KONN_REVERSE_NAME_HEADER, l->name, NULL };
        ReverseConn *rc;
        Transport t;
        int r;

        rc = calloc(1, sizeof(ReverseConn));
        if (!rc) {
                (void) safe_close(fd);
                log_oom();
                return;
        }
        rc->sc = sc;
        rc->listener = l;
        rc->start_usec = mono_usec();
        (void) snprintf(rc->peer, sizeof(rc->peer), "%s", peer);
        sock_set_nodelay(fd);
        transport_init(&t, fd, NULL);
        r = relay_init(&rc->relay, m->event, &t, on_relay_event, rc);
        LIST_PREPEND(rconns, sc->rconns, rc);
        sc->n_rconns++;
        if (r >= 0)
                r = grpc_call_start(sc->conn, KONN_REVERSE_STREAM_PATH, sc->authority, (char *const *) md,
                                    &stream_handler, rc, &rc->call);
        if (r < 0) {
                log_warning_errno(r, "Failed to open a reverse stream for %s to '%s': %m", peer, l->name);
                rc->call = NULL;
                reverse_conn_free(rc);
                return;
        }
        manager_status_changed(m);
}

static int on_accept(int cfd, const SockAddr *peer, socklen_t plen, void *userdata) {
        ReverseListener *l = userdata;
        Manager *m = l->manager;
        char name[SOCK_ADDR_STRING_MAX];
        bool unsupported;
        ServerConn *sc;

        (void) sock_addr_to_string(peer, plen, name, sizeof(name));
        if (peer->sa.sa_family == AF_UNIX)
                (void) snprintf(name, sizeof(name), "unix:%s", l->address);
        sc = pick_server(m, &unsupported);
        if (!sc) {
                refuse(l, cfd, name, unsupported);
                return 0;
        }
        carry(l, sc, cfd, name);
        return 0;
}

static int listen_one(ReverseListener *l, bool is_path) {
        char fdname[80];
        int fd;

        (void) snprintf(fdname, sizeof(fdname), "reverse-%s", l->name);
        fd = daemon_take_listen_fd(fdname);
        if (fd < 0 && is_path)
                fd = daemon_take_listen_fd_by_address(l->address, NULL, 0);
        else if (fd < 0) {
                char host[256];
                uint16_t port;

                if (sock_split_host_port(l->address, host, sizeof(host), &port, NULL) >= 0)
                        fd = daemon_take_listen_fd_by_address(NULL, host, port);
        }
        if (fd >= 0) {
                l->fd = fd;
                return 0;
        }
        if (is_path) {
                fd = sock_listen_unix(l->address, 0660, true);
                if (fd >= 0 && l->address[0] == '/') {
                        l->unlink_path = strdup(l->address);
                        if (!l->unlink_path) {
                                (void) safe_close(fd);
                                return log_oom();
                        }
                }
        } else {
                char host[256];
                uint16_t port;

                if (sock_split_host_port(l->address, host, sizeof(host), &port, NULL) < 0)
                        return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "Invalid reverse listener address '%s'.",
                                               l->address);
                fd = sock_listen_tcp(host, port);
        }
        if (fd < 0)
                return log_error_errno(fd, "Failed to listen on reverse listener '%s' (%s): %m", l->name, l->address);
        l->fd = fd;
        return 0;
}

int reverse_start(Manager *m) {
        _cleanup_free_ char *why = NULL;
        NamedAddr *list = NULL;
        int n, r = 0;

        n = named_addr_list_parse(m->config->reverse_listen, true, &list, &why);
        if (n < 0)
                return log_error_errno(n, "--reverse-listen: %s", why ?: "out of memory");
        for (int i = 0; i < n; i++) {
                ReverseListener *l = &m->listeners[m->n_listeners];

                *l = (ReverseListener){ .manager = m, .fd = -EBADF };
                (void) snprintf(l->name, sizeof(l->name), "%s", list[i].name);
                l->address = TAKE_PTR(list[i].address);
                m->n_listeners++;
                r = listen_one(l, list[i].is_path);
                if (r < 0)
                        break;
                /* Out of descriptors, the shared listener refuses on its reserve descriptor instead of spinning. */
                char what[96];
                (void) snprintf(what, sizeof(what), "reverse listener '%s'", l->name);
                r = listener_new(m->event, l->fd, what, on_accept, NULL, l, &l->listener);
                if (r < 0) {
                        log_error_errno(r, "Failed to watch reverse listener '%s': %m", l->name);
                        break;
                }
                log_info("Reverse listener '%s' on %s: connections go to the server's destination '%s'.", l->name,
                         l->address, l->name);
        }
        named_addr_list_free(list, (size_t) MAX(n, 0));
        return r;
}

void reverse_stop_accepting(Manager *m) {
        for (unsigned i = 0; i < m->n_listeners; i++)
                listener_set_enabled(m->listeners[i].listener, false);
}

void reverse_done(Manager *m) {
        for (unsigned i = 0; i < m->n_listeners; i++) {
                ReverseListener *l = &m->listeners[i];

                l->listener = listener_free(l->listener);
                l->fd = safe_close(l->fd);
                if (l->unlink_path)
                        (void) unlink(l->unlink_path);
                free(l->unlink_path);
                free(l->address);
        }
        m->n_listeners = 0;
}

void reverse_server_gone(ServerConn *sc) {
        while (sc->rconns) {
                ReverseConn *rc = sc->rconns;

                /* Every connection this server carried is closed at once (the local client sees EOF now). */
                if (rc->call && rc->state == REVERSE_ESTABLISHED)
                        relay_detach_call(&rc->relay);
                reverse_log_closed(rc, "server connection lost");
                reverse_conn_free(rc);
        }
}

void reverse_server_ready(ServerConn *sc) {
        if (sc->reverse)
                sc->manager->reverse_refusal_logged = false;
}

size_t reverse_n_conns(Manager *m) {
        size_t n = 0;

        for (ServerConn *sc = m->conns; sc; sc = sc->conns_next)
                if (!sc->dead)
                        n += sc->n_rconns;
        return n;
}
