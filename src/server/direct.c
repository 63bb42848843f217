/* SPDX-License-Identifier: Apache-2.0 */
/*
 * direct — the server's direct route (--direct-cidrs): a dial whose destination is a numeric address inside one of
 * the CIDRs skips the agents; the server connects itself, non-blocking, within the same --backend-dial-timeout, and
 * reports failures with the same texts an agent would (Go's "dial tcp ...: connect: connection refused") and the
 * same timeout answer as an agent that does not answer. The established connection is bridged to the frontend:
 * HTTP CONNECT through a Bridge (socket to socket), gRPC through a Relay on the frontend's Proxy stream.
 * Part of the tunnel module (see tunnel.h for ownership): the connecting socket belongs to its Tunnel.
 * Metrics go to konn's own families (konn_server_direct_*); upstream's families count tunnelled dials only.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/epoll.h>

#include "log.h"
#include "manager.h"
#include "sock.h"
#include "tunnel.h"

bool direct_match(Manager *m, const char *dest, SockAddr *ret, socklen_t *ret_len) {
        char host[256];
        uint16_t port;

        if (m->n_direct_cidrs == 0)
                return false;
        if (sock_split_host_port(dest, host, sizeof(host), &port, NULL) < 0)
                return false;
        if (sock_parse_numeric(host, port, ret, ret_len) < 0)
                return false; /* names go through the agents (they resolve in the cluster's DNS) */
        return cidr_list_contains(m->direct_cidrs, m->n_direct_cidrs, ret);
}

void direct_unpend(Tunnel *t) {
        t->dio = sd_event_source_disable_unref(t->dio);
        t->dfd = safe_close(t->dfd);
}

static void direct_failed(Tunnel *t, const char *reason, const char *error) {
        metric_add(t->manager->direct_dial_failures, (const char *const[]){ reason }, 1);
        tunnel_dial_failed(t, error);
}

static int on_connect(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Tunnel *t = userdata;
        Manager *m = t->manager;
        int r = sock_connect_result(t->dfd);

        if (r == -EINPROGRESS || r == -EALREADY)
                return 0;
        if (r < 0) {
                char err[512];

                (void) sock_format_dial_error(t->daddr, r, err, sizeof(err));
                direct_failed(t, "error_response", err);
                return 0;
        }
        t->dio = sd_event_source_disable_unref(t->dio);
        fd = TAKE_FD(t->dfd);
        tunnel_unpend(t);
        t->connect_id = ++m->direct_last_id;
        t->state = TUNNEL_ESTABLISHED;
        t->established_usec = now_usec();
        metric_observe(m->direct_dial_duration, NULL, (double) (t->established_usec - t->dial_usec) / USEC_PER_SEC);
        sock_set_nodelay(fd);
        tunnel_log_opened(t);
        if (t->kind == TUNNEL_CONNECT)
                connect_direct_established(t, fd);
        else
                grpc_direct_established(t, fd);
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Tunnel *t = userdata;
        char did[32];

        (void) snprintf(did, sizeof(did), "%" PRIi64, t->dial_id);
        log_struct(LOG_WARNING,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_ROUTE", "direct" },
                              { "KONN_DIAL_ID", did }, { "KONN_DEST", t->dest }),
                   "Direct dial to '%s' did not complete within %" PRIu64 " ms.", t->dest,
                   t->manager->config->backend_dial_timeout_usec / USEC_PER_MSEC);
        tunnel_unpend(t);
        t->state = TUNNEL_CLOSING;
        metric_add(t->manager->direct_dial_failures, (const char *const[]){ "backend_dial_timeout" }, 1);
        if (t->kind == TUNNEL_CONNECT)
                connect_dial_timed_out(t);
        else
                grpc_dial_failed(t, "timed out waiting for backend dial");
        return 0;
}

int direct_dial(Tunnel *t, const SockAddr *a, socklen_t len) {
        Manager *m = t->manager;
        int r;

        t->direct = true;
        t->state = TUNNEL_PENDING;
        t->dial_usec = now_usec();
        (void) sock_addr_to_string(a, len, t->daddr, sizeof(t->daddr));
        t->timer = sd_event_source_disable_unref(t->timer);
        t->dfd = sock_connect_start(a, len, NULL);
        if (t->dfd < 0) {
                char err[512];

                (void) sock_format_dial_error(t->daddr, t->dfd, err, sizeof(err));
                t->dfd = -EBADF;
                /* May free t: callers do not touch it after a 0 return. */
                direct_failed(t, "error_response", err);
                return 0;
        }
        /* Connected or not, the result is read when the socket is writable (at once for a local refusal). */
        r = sd_event_add_io(m->event, &t->dio, t->dfd, EPOLLOUT, on_connect, t);
        if (r < 0)
                return r;
        if (m->config->backend_dial_timeout_usec > 0) {
                r = sd_event_add_time_relative(m->event, &t->timer, CLOCK_MONOTONIC,
                                               m->config->backend_dial_timeout_usec, 0, on_timeout, t);
                if (r < 0)
                        log_warning_errno(r, "Failed to arm the dial timer, direct dial to '%s' waits without: %m",
                                          t->dest);
        }
        return 0;
}
