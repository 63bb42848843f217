/* SPDX-License-Identifier: Apache-2.0 */
/*
 * endpoint — one destination connection the agent dials for a server: name resolution off the loop, non-blocking
 * connect with the dial timeout, DIAL_RSP, then the relay between the socket and the server stream; CLOSE_REQ /
 * CLOSE_RSP handling. Owned by its ServerConn (indexed by connectID, and by dial ID while dialling).
 * Loop thread only.
 */
#pragma once

#include <systemd/sd-event.h>

#include "agent-forward.h"
#include "relay.h"
#include "resolver.h"
#include "sock.h"

#define ENDPOINT_MAX_ADDRS 8

typedef enum EndpointState {
        ENDPOINT_RESOLVING,
        ENDPOINT_CONNECTING,
        ENDPOINT_ESTABLISHED,
        ENDPOINT_CLOSING,
} EndpointState;

/* What a dial needs only while it is in progress; freed once connected, so an open connection stays small. */
typedef struct EndpointDial {
        char host[256];
        uint16_t port;
        ResolveQuery *query;
        SockAddr addrs[ENDPOINT_MAX_ADDRS];
        socklen_t addr_lens[ENDPOINT_MAX_ADDRS];
        unsigned n_addrs, next_addr;
        int last_error;
} EndpointDial;

struct Endpoint {
        ServerConn *sc;
        EndpointState state;
        int64_t connect_id, dial_id;
        char *address;          /* as requested, "host:port" */
        EndpointDial *dial;     /* while resolving/connecting */
        int fd;
        sd_event_source *io, *timer;
        Relay relay;
        bool relay_live;
        GrpcCall *call;         /* konn-to-konn mode: this connection's own stream (else the Connect stream) */
        uint64_t start_usec;
        uint64_t established_usec;  /* 0 until connected */
        const char *close_why;      /* a string literal, for the trace's closed event */
};

/* Handle a DIAL_REQ: allocates the next connectID and starts dialling; answers DIAL_RSP itself (also on failure). */
int endpoint_dial(ServerConn *sc, const Packet *p);
Endpoint *endpoint_free(Endpoint *ep);
uint64_t endpoint_now_usec(void);            /* CLOCK_MONOTONIC, the clock of start_usec */
/* DATA from the server: returns the number of payload bytes retained. */
int endpoint_deliver(Endpoint *ep, const uint8_t *data, size_t len);
void endpoint_close_request(Endpoint *ep);   /* CLOSE_REQ */
void endpoint_cancel_dial(Endpoint *ep);     /* DIAL_CLS while dialling */
