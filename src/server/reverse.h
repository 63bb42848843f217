/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reverse — node → control-plane connections on konn-server (docs/konn-protocol.md §3): one agent-opened
 * /konn.Reverse/Stream per connection, dialled only to the --reverse-destinations entry it names. Owned by the
 * Manager (list), indexed by the Backend whose connection carries it. Loop thread only.
 */
#pragma once

#include <systemd/sd-event.h>

#include "addrlist.h"
#include "h2conn.h"
#include "macro.h"
#include "relay.h"
#include "resolver.h"
#include "server-config.h"
#include "server-forward.h"
#include "sock.h"

#define REVERSE_MAX_ADDRS 8

typedef enum ReverseStreamState {
        REVERSE_STREAM_DIALING,
        REVERSE_STREAM_ESTABLISHED,
        REVERSE_STREAM_CLOSING,     /* the agent's client closed; flushing to the destination */
} ReverseStreamState;

struct ReverseStream {
        Manager *manager;
        LIST_FIELDS(ReverseStream, rstreams);
        LIST_FIELDS(ReverseStream, by_backend);
        Backend *backend;           /* indexes us; NULL once it let go */
        GrpcCall *call;
        ReverseStreamState state;
        char name[NAMED_ADDR_NAME_MAX + 1];
        char dest[264];             /* HOST:PORT from the allow-list */
        char agent_id[128];
        char host[256];
        uint16_t port;
        int64_t connect_id;
        ResolveQuery *query;
        SockAddr addrs[REVERSE_MAX_ADDRS];
        socklen_t addr_lens[REVERSE_MAX_ADDRS];
        unsigned n_addrs, next_addr;
        int last_error;
        int fd;                     /* while connecting */
        sd_event_source *io, *timer;
        Relay relay;                /* once connected: owns the socket */
        bool relay_live;
        uint64_t start_usec;
};

/* A /konn.Reverse/Stream call on the connection of b (which negotiated "reverse"): 0 after accepting it, or a
 * GrpcStatus to refuse it with *ret_message (unknown name, per-agent limit). Logs refusals (one line). */
int reverse_stream_opened(Backend *b, GrpcCall *call, const char **ret_message);
ReverseStream *reverse_stream_free(ReverseStream *rs);
/* The backend is going: close every connection it carries, at once. */
void reverse_backend_gone(Backend *b);
/* (Re)parse --reverse-destinations into the manager. */
int reverse_load_config(Manager *m, const ServerConfig *c);
