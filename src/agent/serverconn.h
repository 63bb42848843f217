/* SPDX-License-Identifier: Apache-2.0 */
/*
 * serverconn — one konn-agent connection to one konn-server replica: resolve, TCP connect, TLS (ALPN h2, mTLS),
 * HTTP/2, the /AgentService/Connect call with agentid/agentidentifiers metadata, the serverid/servercount answer,
 * and the endpoints dialled on behalf of this server (by connectID; pending dials also by dial ID). connectIDs are
 * numbered from 1 per stream, failed dials included. Owned by the Manager; frees its Endpoints (closing their
 * sockets) when it goes. Loop thread only.
 */
#pragma once

#include <systemd/sd-event.h>

#include "agent-forward.h"
#include "h2conn.h"
#include "idmap.h"
#include "macro.h"
#include "resolver.h"
#include "sock.h"

typedef enum ServerConnState {
        SERVER_CONN_RESOLVING,
        SERVER_CONN_CONNECTING,
        SERVER_CONN_HANDSHAKE,   /* TLS + HTTP/2 + waiting for response headers */
        SERVER_CONN_READY,
} ServerConnState;

struct ServerConn {
        Manager *manager;
        LIST_FIELDS(ServerConn, conns);
        ServerConnState state;
        char *host;             /* as configured: the TLS name checked and the :authority */
        uint16_t port;
        SockAddr addr;          /* the address connected to (valid once connecting) */
        socklen_t addr_len;
        ResolveQuery *query;
        int fd;
        sd_event_source *io, *timer;
        H2Conn *conn;
        GrpcCall *call;
        char *server_id;
        int64_t server_count;
        int64_t last_connect_id;
        IdMap *endpoints;   /* connectID → Endpoint */
        IdMap *dials;       /* dial ID → Endpoint still dialling */
        uint64_t since_usec;
        char authority[300];
        bool tunnel_streams;    /* konn-to-konn mode: each tunnel on its own stream */
        bool reverse;           /* the server takes node → control-plane streams (konn-features: reverse) */
        ReverseConn *rconns;    /* node → control-plane connections carried here (owned) */
        unsigned n_rconns;
        bool dead;          /* torn down, waiting for the Manager to free it */
        bool going_away;    /* the server sent GOAWAY: finish the endpoints here, dial nothing new on it */
        sd_event_source *idle_check;
};

/* Connect to host:port, at addr if given (multi-address discovery), else at what host resolves to. */
int server_conn_new(Manager *m, const char *host, uint16_t port, const SockAddr *addr, socklen_t addr_len,
                    ServerConn **ret);
ServerConn *server_conn_free(ServerConn *sc);
/* Send a packet to the server; on failure the connection is torn down (asynchronously) and -errno returned. */
int server_conn_send(ServerConn *sc, const Packet *p);
/* After GOAWAY: once no endpoint or dial is left, end the Connect stream and close (from the loop). */
void server_conn_check_idle(ServerConn *sc);
