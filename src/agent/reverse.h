/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reverse — konn-agent's node → control-plane listeners (--reverse-listen=NAME=ADDRESS,...): each listener is a
 * socket passed by systemd (name "reverse-NAME", or by address) or bound by the agent, and every connection
 * accepted there is carried to a konn server on a stream of its own (/konn.Reverse/Stream, docs/konn-protocol.md
 * §3) that names only NAME; the server dials its own destination for NAME. Bytes move through a Relay exactly as
 * for the normal direction (same backpressure).
 *
 * The Manager owns the listeners (array); a ServerConn owns the ReverseConns it carries (list), so a server
 * connection that goes closes all of them at once. Loop thread only.
 */
#pragma once

#include <systemd/sd-event.h>

#include "agent-forward.h"
#include "h2conn.h"
#include "listener.h"
#include "macro.h"
#include "relay.h"

struct ReverseListener {
        Manager *manager;
        char name[65];
        char *address;            /* as configured */
        int fd;
        Listener *listener;
        char *unlink_path;        /* a Unix socket we bound ourselves, removed at exit */
};

typedef enum ReverseConnState {
        REVERSE_OPENING,          /* stream started, waiting for the server's dial result */
        REVERSE_ESTABLISHED,
        REVERSE_CLOSING,          /* flushing to the local client, then freed */
} ReverseConnState;

struct ReverseConn {
        ServerConn *sc;
        LIST_FIELDS(ReverseConn, rconns);
        ReverseListener *listener;
        ReverseConnState state;
        GrpcCall *call;           /* this connection's stream (owned by the ServerConn's H2Conn) */
        Relay relay;              /* owns the accepted socket */
        int64_t connect_id;       /* the server's ID for it, from its DIAL_RSP */
        char peer[128];
        uint64_t start_usec;
};

/* Parse --reverse-listen, take the passed sockets or bind, start accepting. Logs its errors. */
int reverse_start(Manager *m);
/* Stop accepting (drain); listeners stay open until reverse_done(). */
void reverse_stop_accepting(Manager *m);
void reverse_done(Manager *m);
/* The server connection is going: close every connection it carries, at once. */
void reverse_server_gone(ServerConn *sc);
/* A server connection negotiated the feature: refusals are worth one log line again. */
void reverse_server_ready(ServerConn *sc);
size_t reverse_n_conns(Manager *m);
