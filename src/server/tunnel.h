/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tunnel — one tunnelled TCP connection on konn-server, from its frontend end to its agent stream.
 * The frontend end is either an HTTP CONNECT client socket (frontend-connect.c: TLS handshake → request header →
 * pending dial → relay) or a gRPC /ProxyService/Proxy stream (frontend-grpc.c: DIAL_REQ → pending → packets
 * forwarded both ways). This file holds what both share: the state, the indexes, and the entry points the Backend
 * calls for packets from the agent.
 *
 * Owned by the Manager (list of all tunnels). While pending it is also indexed by dial ID in the Manager and listed
 * in its Backend; once established it is indexed by connectID in its Backend. tunnel_free() unhooks it from all of
 * those. Loop thread only.
 */
#pragma once

#include <systemd/sd-event.h>

#include "bridge.h"
#include "forwarder.h"
#include "h2conn.h"
#include "relay.h"
#include "server-forward.h"
#include "sock.h"
#include "trace.h"
#include "transport.h"

typedef enum TunnelKind {
        TUNNEL_CONNECT,
        TUNNEL_GRPC,
} TunnelKind;

typedef enum TunnelState {
        TUNNEL_HANDSHAKE,    /* CONNECT over TLS: handshaking */
        TUNNEL_HEADER,       /* waiting for the dial request (CONNECT header or DIAL_REQ) */
        TUNNEL_PENDING,      /* DIAL_REQ sent to the agent, waiting for DIAL_RSP */
        TUNNEL_ESTABLISHED,
        TUNNEL_CLOSING,      /* no backend any more; finishing towards the frontend */
} TunnelState;

struct Tunnel {
        Manager *manager;
        LIST_FIELDS(Tunnel, tunnels);
        LIST_FIELDS(Tunnel, pending);
        TunnelKind kind;
        TunnelState state;
        Backend *backend;

        int64_t dial_id, connect_id;
        GrpcCall *acall;             /* konn-to-konn mode: the tunnel's own stream to the agent (else NULL: the
                                      * agent's Connect stream carries it) */
        bool close_sent;             /* CLOSE_REQ sent in-band on acall: its stream ends at the agent's CLOSE_RSP */
        char dest[264];
        char peer[128];
        uint64_t start_usec, dial_usec, established_usec;

        /* TUNNEL_CONNECT */
        Transport t;                 /* until the relay takes it */
        sd_event_source *io, *timer;
        char *hbuf;                  /* request header + pipelined bytes, until established */
        size_t hlen, hcap, header_len;
        Relay relay;
        bool relay_live;

        /* Direct route (--direct-cidrs, direct.c): dialled by this server, no agent. CONNECT tunnels then move bytes
         * with `bridge`, gRPC ones with `relay` on fcall. */
        bool direct;
        int dfd;                     /* while connecting */
        sd_event_source *dio;
        char daddr[SOCK_ADDR_STRING_MAX];
        Bridge bridge;
        bool bridge_live;

        /* TUNNEL_GRPC */
        GrpcCall *fcall;             /* the frontend's Proxy stream (owned by its H2Conn) */
        Forwarder to_agent, to_front;
        bool forwarding;
        bool ignore_input;           /* "stop reading this stream" (protocol.md §5.2) */
        int64_t seen_connect_id;     /* first non-zero connectID the frontend used in DATA */
        uint64_t bytes_in, bytes_out;
        /* For the admin interface's trace events (the backend is gone by the time the tunnel is freed). */
        char *agent_id;              /* copied when established */
        const char *close_why;       /* a string literal, from tunnel_log_closed() */
};

Tunnel *tunnel_alloc(Manager *m, TunnelKind kind, const char *peer);
Tunnel *tunnel_free(Tunnel *t);
/* Choose an agent for t->dest and send DIAL_REQ with t->dial_id. 0 on success (t is pending); -ENOENT when no agent
 * is available; another -errno if the DIAL_REQ could not be sent. */
int tunnel_request_dial(Tunnel *t);
void tunnel_unpend(Tunnel *t);
void tunnel_unestablish(Tunnel *t);
bool tunnel_establish(Tunnel *t, int64_t connect_id);
void tunnel_log_opened(Tunnel *t);
void tunnel_log_closed(Tunnel *t, const char *why);
/* The call that carries this tunnel's DATA to the agent. */
GrpcCall *tunnel_agent_call(Tunnel *t);
/* Tell the agent the tunnel is over (CLOSE_REQ on whichever stream carries it) and let go of the agent side:
 * the tunnel is unhooked from its backend first, so a failing send cannot reach back into it. Queue anything
 * that must precede the CLOSE_REQ before calling this. */
void tunnel_send_close(Tunnel *t);
/* konn-to-konn mode: the agent opened the tunnel's own stream for pending dial dial_id (that is its DIAL_RSP). */
int tunnel_stream_opened(Backend *b, GrpcCall *call, const char **ret_message);
uint64_t now_usec(void);
/* For the admin interface and trace events. */
const char *tunnel_frontend_name(const Tunnel *t);     /* "http-connect", "grpc" */
const char *tunnel_state_name(const Tunnel *t);        /* "handshake", "header", "pending", "established", "closing" */
uint64_t tunnel_bytes_in(const Tunnel *t);             /* from the client, towards the destination */
uint64_t tunnel_bytes_out(const Tunnel *t);            /* from the destination, back to the client */
/* Publish a trace event about t (reason: failed/closed only). */
void tunnel_trace(Tunnel *t, TraceEventType type, const char *reason);

/* Called by the Backend for packets and events that concern this tunnel. */
void tunnel_dial_succeeded(Tunnel *t, int64_t connect_id);
void tunnel_dial_failed(Tunnel *t, const char *error);
void tunnel_dial_closed(Tunnel *t);            /* DIAL_CLS from the agent */
void tunnel_backend_gone(Tunnel *t);           /* the agent stream ended */
int tunnel_deliver(Tunnel *t, const uint8_t *data, size_t len);  /* DATA; returns bytes retained */
void tunnel_remote_closed(Tunnel *t);          /* CLOSE_RSP from the agent */

/* direct.c */
/* Whether dest is a numeric address inside --direct-cidrs (*ret filled). */
bool direct_match(Manager *m, const char *dest, SockAddr *ret, socklen_t *ret_len);
/* Connect to a for t (state becomes pending). 0, or -errno if the dial could not start (t untouched then). A 0
 * return may already have answered (and freed) t. */
int direct_dial(Tunnel *t, const SockAddr *a, socklen_t len);
void direct_unpend(Tunnel *t);
/* Bytes client → destination and back, whatever carries the tunnel. */
void tunnel_counters(const Tunnel *t, uint64_t *in, uint64_t *out);

/* frontend-connect.c */
int connect_tunnel_new(Manager *m, int fd, bool tls, const char *peer);
void connect_tunnel_free(Tunnel *t);
void connect_dial_succeeded(Tunnel *t);
void connect_dial_failed(Tunnel *t, const char *error);
void connect_dial_timed_out(Tunnel *t);
void connect_dial_closed(Tunnel *t);
void connect_backend_gone(Tunnel *t, bool was_pending);
int connect_deliver(Tunnel *t, const uint8_t *data, size_t len);
void connect_remote_closed(Tunnel *t);
void connect_direct_established(Tunnel *t, int fd);

/* frontend-grpc.c */
int grpc_frontend_on_call(Manager *m, const char *peer, GrpcCall *call, const char **ret_message);
void grpc_tunnel_free(Tunnel *t);
void grpc_dial_succeeded(Tunnel *t);
void grpc_dial_failed(Tunnel *t, const char *error);
void grpc_dial_closed(Tunnel *t);
void grpc_backend_gone(Tunnel *t, bool was_pending);
int grpc_deliver(Tunnel *t, const uint8_t *data, size_t len);
void grpc_remote_closed(Tunnel *t);
void grpc_direct_established(Tunnel *t, int fd);
