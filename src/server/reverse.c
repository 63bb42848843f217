/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reverse — the server end of node → control-plane connections (docs/konn-protocol.md §3): an agent that
 * negotiated "reverse" opens /konn.Reverse/Stream naming a destination; only names in --reverse-destinations are
 * dialled (the agent never chooses an address), within --max-reverse-per-agent streams per agent. The dialled
 * socket is relayed on the stream with the same Relay (and backpressure) as a tunnel's destination on the agent.
 *
 * The Manager owns every ReverseStream (list); its Backend indexes it (list), and freeing the backend closes all
 * of them at once. The GrpcCall belongs to the agent's H2Conn. Loop thread only.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/epoll.h>

#include "backend.h"
#include "log.h"
#include "manager.h"
#include "reverse.h"
#include "tunnel.h"

#define NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"

static void count(Manager *m, const char *name, const char *result) {
        metric_add(m->reverse_total, (const char *const[]){ name, result }, 1);
}

static void log_closed(ReverseStream *rs, const char *why) {
        char cid[32], in[32], out[32], dur[32];

        if (LOG_DEBUG > log_get_max_level())
                return;
        (void) snprintf(cid, sizeof(cid), "%" PRIi64, rs->connect_id);
        (void) snprintf(in, sizeof(in), "%" PRIu64, rs->relay_live ? rs->relay.bytes_out : 0);
        (void) snprintf(out, sizeof(out), "%" PRIu64, rs->relay_live ? rs->relay.bytes_in : 0);
        (void) snprintf(dur, sizeof(dur), "%" PRIu64, now_usec() - rs->start_usec);
        log_struct(LOG_DEBUG,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_TUNNEL_CLOSED }, { "KONN_DIRECTION", "reverse" },
                              { "KONN_REVERSE_NAME", rs->name }, { "KONN_AGENT_ID", rs->agent_id },
                              { "KONN_CONNECT_ID", cid }, { "KONN_DEST", rs->dest }, { "KONN_BYTES_IN", in },
                              { "KONN_BYTES_OUT", out }, { "KONN_DURATION_USEC", dur }),
                   "Reverse connection %s from agent '%s' to '%s' (%s) closed (%s).", cid, rs->agent_id, rs->name,
                   rs->dest, why);
}

ReverseStream *reverse_stream_free(ReverseStream *rs) {
        Manager *m;

        if (!rs)
                return NULL;
        m = rs->manager;
        LIST_REMOVE(rstreams, m->rstreams, rs);
        m->n_rstreams--;
        if (rs->backend) {
                LIST_REMOVE(by_backend, rs->backend->rstreams, rs);
                rs->backend->n_rstreams--;
        }
        rs->query = resolve_query_cancel(rs->query);
        rs->io = sd_event_source_disable_unref(rs->io);
        rs->timer = sd_event_source_disable_unref(rs->timer);
        rs->fd = safe_close(rs->fd);
        if (rs->relay_live)
                relay_done(&rs->relay);
        if (rs->call) {
                grpc_call_abort(rs->call, GRPC_STATUS_CANCELLED, NULL);
                rs->call = NULL;
        }
        free(rs);
        manager_status_changed(m);
        return NULL;
}

/* Our side is over: CLOSE_RSP after the queued DATA, end the stream (OK), free. */
static void close_in_order(ReverseStream *rs, const char *why) {
        Packet p = { .type = PACKET_CLOSE_RSP, .close_rsp.connect_id = rs->connect_id };

        log_closed(rs, why);
        if (rs->call) {
                relay_detach_call(&rs->relay);
                (void) grpc_call_send_packet(rs->call, &p);
                grpc_call_finish(rs->call, GRPC_STATUS_OK, NULL);
                rs->call = NULL;
        }
        reverse_stream_free(rs);
}

static void on_relay_event(Relay *r, RelayEvent ev, int error, void *userdata) {
        ReverseStream *rs = userdata;

        if (ev == RELAY_DRAINED) {
                log_closed(rs, "closed by agent");
                reverse_stream_free(rs);
                return;
        }
        close_in_order(rs, error < 0 ? "destination connection failed" : "closed by destination");
}

static int on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        ReverseStream *rs = userdata;
        int r;

        switch (p->type) {
        case PACKET_DATA:
                if (rs->state != REVERSE_STREAM_ESTABLISHED)
                        return 0; /* the agent waits for our DIAL_RSP; anything earlier is dropped */
                r = relay_deliver(&rs->relay, p->data.data, p->data.data_len);
                if (r < 0) {
                        close_in_order(rs, "destination is not reading");
                        return 0;
                }
                return r;
        case PACKET_CLOSE_RSP:
                if (rs->state != REVERSE_STREAM_ESTABLISHED) {
                        grpc_call_finish(rs->call, GRPC_STATUS_OK, NULL);
                        rs->call = NULL;
                        log_closed(rs, "abandoned by agent");
                        reverse_stream_free(rs);
                        return 0;
                }
                /* The node's client closed: write what it sent to the destination, then close it. */
                rs->state = REVERSE_STREAM_CLOSING;
                relay_detach_call(&rs->relay);
                grpc_call_finish(rs->call, GRPC_STATUS_OK, NULL);
                rs->call = NULL;
                relay_close(&rs->relay);
                return 0;
        default:
                return 0;
        }
}

static void on_end(GrpcCall *call, int status, const char *message, void *userdata) {
        ReverseStream *rs = userdata;

        /* Reset by the agent, or its connection died: close the destination at once. */
        if (rs->relay_live)
                relay_detach_call(&rs->relay);
        rs->call = NULL;
        log_closed(rs, message ?: "stream ended by agent");
        reverse_stream_free(rs);
}

static const GrpcCallHandler handler = {
        .on_packet = on_packet,
        .on_end = on_end,
};

static void dial_failed(ReverseStream *rs, const char *error) {
        log_struct(LOG_WARNING,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_DIRECTION", "reverse" },
                              { "KONN_REVERSE_NAME", rs->name }, { "KONN_AGENT_ID", rs->agent_id },
                              { "KONN_DEST", rs->dest }),
                   "Reverse connection from agent '%s' to '%s' (%s) failed: %s", rs->agent_id, rs->name, rs->dest,
                   error);
        count(rs->manager, rs->name, "dial_failed");
        if (rs->call) {
                grpc_call_finish(rs->call, GRPC_STATUS_UNAVAILABLE, error);
                rs->call = NULL;
        }
        reverse_stream_free(rs);
}

static void established(ReverseStream *rs) {
        Manager *m = rs->manager;
        Packet p = { .type = PACKET_DIAL_RSP };
        Transport t;
        int r;

        rs->io = sd_event_source_disable_unref(rs->io);
        rs->timer = sd_event_source_disable_unref(rs->timer);
        rs->connect_id = ++m->reverse_last_id;
        p.dial_rsp.connect_id = rs->connect_id;
        sock_set_nodelay(rs->fd);
        transport_init(&t, TAKE_FD(rs->fd), NULL);
        r = relay_init(&rs->relay, m->event, &t, on_relay_event, rs);
        rs->relay_live = true;
        if (r >= 0)
                r = grpc_call_send_packet(rs->call, &p);
        if (r >= 0)
                r = relay_start(&rs->relay, rs->call, rs->connect_id, NULL, 0);
        if (r < 0) {
                dial_failed(rs, "cannot start relaying");
                return;
        }
        rs->state = REVERSE_STREAM_ESTABLISHED;
        count(m, rs->name, "established");
        if (LOG_DEBUG <= log_get_max_level()) {
                char cid[32];
                (void) snprintf(cid, sizeof(cid), "%" PRIi64, rs->connect_id);
                log_struct(LOG_DEBUG,
                           LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_TUNNEL_OPENED }, { "KONN_DIRECTION", "reverse" },
                                      { "KONN_REVERSE_NAME", rs->name }, { "KONN_AGENT_ID", rs->agent_id },
                                      { "KONN_CONNECT_ID", cid }, { "KONN_DEST", rs->dest }),
                           "Reverse connection %s from agent '%s' to '%s' (%s) established.", cid, rs->agent_id,
                           rs->name, rs->dest);
        }
}

static void try_next(ReverseStream *rs);

static int on_connect(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ReverseStream *rs = userdata;
        int r = sock_connect_result(rs->fd);

        if (r == -EINPROGRESS || r == -EALREADY)
                return 0;
        if (r < 0) {
                rs->last_error = r;
                rs->io = sd_event_source_disable_unref(rs->io);
                rs->fd = safe_close(rs->fd);
                try_next(rs);
                return 0;
        }
        established(rs);
        return 0;
}

static void try_next(ReverseStream *rs) {
        char err[512], addr[sizeof(rs->dest)];

        while (rs->next_addr < rs->n_addrs) {
                unsigned i = rs->next_addr++;
                int r;

                rs->fd = sock_connect_start(&rs->addrs[i], rs->addr_lens[i], NULL);
                if (rs->fd < 0) {
                        rs->last_error = rs->fd;
                        rs->fd = -EBADF;
                        continue;
                }
                r = sd_event_add_io(rs->manager->event, &rs->io, rs->fd, EPOLLOUT, on_connect, rs);
                if (r < 0) {
                        rs->last_error = r;
                        rs->fd = safe_close(rs->fd);
                        continue;
                }
                return;
        }
        if (rs->n_addrs == 1)
                (void) sock_addr_to_string(&rs->addrs[0], rs->addr_lens[0], addr, sizeof(addr));
        else
                (void) snprintf(addr, sizeof(addr), "%s", rs->dest);
        (void) sock_format_dial_error(addr, rs->last_error ?: -ECONNREFUSED, err, sizeof(err));
        dial_failed(rs, err);
}

static void on_resolved(ResolveQuery *q, int error, const char *reason, const struct addrinfo *ai, void *userdata) {
        ReverseStream *rs = userdata;
        char err[512];

        rs->query = NULL;
        if (error < 0) {
                (void) sock_format_lookup_error(rs->host, reason, err, sizeof(err));
                dial_failed(rs, err);
                return;
        }
        for (; ai && rs->n_addrs < REVERSE_MAX_ADDRS; ai = ai->ai_next)
                if (ai->ai_addrlen <= sizeof(SockAddr)) {
                        memcpy(&rs->addrs[rs->n_addrs], ai->ai_addr, ai->ai_addrlen);
                        rs->addr_lens[rs->n_addrs++] = ai->ai_addrlen;
                }
        try_next(rs);
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        ReverseStream *rs = userdata;
        char err[512];

        (void) sock_format_dial_error(rs->dest, -ETIMEDOUT, err, sizeof(err));
        dial_failed(rs, err);
        return 0;
}

static void refuse_log(Manager *m, Backend *b, const char *name, const char *why) {
        log_struct(LOG_WARNING,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_DIAL_FAILED }, { "KONN_DIRECTION", "reverse" },
                              { "KONN_REVERSE_NAME", name }, { "KONN_AGENT_ID", b->agent_id }),
                   "Refusing a reverse connection from agent '%s' to '%s': %s.", b->agent_id, name, why);
}

int reverse_stream_opened(Backend *b, GrpcCall *call, const char **ret_message) {
        static char msg[160];
        Manager *m = b->manager;
        const char *name = grpc_call_header(call, KONN_REVERSE_NAME_HEADER, 0);
        const NamedAddr *dest;
        ReverseStream *rs;
        int r;

        if (!name || grpc_call_header_count(call, KONN_REVERSE_NAME_HEADER) != 1 || !*name ||
            strlen(name) > NAMED_ADDR_NAME_MAX || strspn(name, NAME_CHARS) != strlen(name)) {
                log_struct(LOG_WARNING, LOG_FIELDS({ "KONN_DIRECTION", "reverse" }, { "KONN_AGENT_ID", b->agent_id }),
                           "Refusing a reverse connection from agent '%s': missing or malformed %s.", b->agent_id,
                           KONN_REVERSE_NAME_HEADER);
                *ret_message = "exactly one valid konn-reverse-name is required";
                return GRPC_STATUS_INVALID_ARGUMENT;
        }
        dest = named_addr_list_find(m->reverse_dests, m->n_reverse_dests, name);
        if (!dest) {
                refuse_log(m, b, name, "not in reverse-destinations");
                count(m, "", "unknown_name");
                (void) snprintf(msg, sizeof(msg), "reverse destination '%s' is not allowed", name);
                *ret_message = msg;
                return GRPC_STATUS_NOT_FOUND;
        }
        if (b->n_rstreams >= (unsigned) m->config->max_reverse_per_agent) {
                refuse_log(m, b, name, "too many reverse connections from this agent (max-reverse-per-agent)");
                count(m, dest->name, "limit");
                *ret_message = "too many reverse connections";
                return GRPC_STATUS_RESOURCE_EXHAUSTED;
        }
        rs = calloc(1, sizeof(ReverseStream));
        if (!rs)
                return GRPC_STATUS_RESOURCE_EXHAUSTED;
        rs->manager = m;
        rs->backend = b;
        rs->fd = -EBADF;
        rs->start_usec = now_usec();
        (void) snprintf(rs->name, sizeof(rs->name), "%s", dest->name);
        (void) snprintf(rs->dest, sizeof(rs->dest), "%s", dest->address);
        (void) snprintf(rs->agent_id, sizeof(rs->agent_id), "%s", b->agent_id);
        LIST_PREPEND(rstreams, m->rstreams, rs);
        m->n_rstreams++;
        LIST_PREPEND(by_backend, b->rstreams, rs);
        b->n_rstreams++;
        r = grpc_call_accept(call, NULL, &handler, rs);
        if (r < 0) {
                reverse_stream_free(rs);
                return GRPC_STATUS_INTERNAL;
        }
        rs->call = call;
        manager_status_changed(m);

        /* From here on every failure is answered on the stream (trailers with the Go dial error). */
        if (sock_split_host_port(rs->dest, rs->host, sizeof(rs->host), &rs->port, NULL) < 0) {
                dial_failed(rs, "invalid destination");
                return 0;
        }
        if (m->config->backend_dial_timeout_usec > 0) {
                r = sd_event_add_time_relative(m->event, &rs->timer, CLOCK_MONOTONIC,
                                               m->config->backend_dial_timeout_usec, 0, on_timeout, rs);
                if (r < 0)
                        log_warning_errno(r, "Failed to arm the reverse dial timer: %m");
        }
        if (sock_parse_numeric(rs->host, rs->port, &rs->addrs[0], &rs->addr_lens[0]) >= 0) {
                rs->n_addrs = 1;
                try_next(rs);
                return 0;
        }
        if (!m->resolver) {
                r = resolver_new(m->event, 64, &m->resolver);
                if (r < 0) {
                        dial_failed(rs, "cannot start the resolver");
                        return 0;
                }
        }
        r = resolver_resolve(m->resolver, rs->host, rs->port, on_resolved, rs, &rs->query);
        if (r < 0) {
                char err[512];
                (void) sock_format_lookup_error(rs->host, resolve_error_to_string(r), err, sizeof(err));
                dial_failed(rs, err);
        }
        return 0;
}

void reverse_backend_gone(Backend *b) {
        /* The agent's stream is gone: every connection it carried closes now. */
        while (b->rstreams) {
                ReverseStream *rs = b->rstreams;

                if (rs->relay_live && rs->call)
                        relay_detach_call(&rs->relay);
                log_closed(rs, "agent disconnected");
                reverse_stream_free(rs);
        }
}

int reverse_load_config(Manager *m, const ServerConfig *c) {
        _cleanup_free_ char *why = NULL;
        NamedAddr *l = NULL;
        int n;

        n = named_addr_list_parse(c->reverse_destinations, false, &l, &why);
        if (n < 0)
                return log_error_errno(n, "--reverse-destinations: %s", why ?: "out of memory");
        named_addr_list_free(m->reverse_dests, m->n_reverse_dests);
        m->reverse_dests = l;
        m->n_reverse_dests = (size_t) n;
        for (int i = 0; i < n; i++)
                log_info("Reverse destination '%s': agents may reach %s through their tunnel.", l[i].name,
                         l[i].address);
        return 0;
}
