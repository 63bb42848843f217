/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bridge — moves bytes between two byte streams (Transports: a frontend client, plain or TLS, and a socket the
 * server dialled itself for a --direct-cidrs destination). No tunnel, no gRPC: the direct route's data path.
 *
 * Owns both Transports, their io sources and at most one pooled 64 KiB chunk per direction (taken while data is in
 * flight). Backpressure: a direction reads only once its chunk has been written out, so a slow reader stops the
 * other side's reads instead of growing memory. When one side reaches EOF (or fails), what it sent is written to
 * the other side, then the bridge reports BRIDGE_DONE and the owner frees it: both connections close, as a tunnel
 * closes both ends. Embedded in its owner (a server Tunnel); loop thread only. on_done may free the owner.
 */
#pragma once

#include <systemd/sd-event.h>

#include "transport.h"

typedef struct Bridge Bridge;
typedef void (*bridge_done_t)(Bridge *b, int error, const char *why, void *userdata);

typedef struct BridgeDir {
        uint8_t *buf;
        size_t off, len;
        bool eof;
        uint32_t read_want, write_want;   /* events the last -EAGAIN asked for */
        uint64_t bytes;               /* written, not counting `skip` */
        size_t skip;                  /* prefix bytes still to write that are not payload (the CONNECT 200) */
} BridgeDir;

struct Bridge {
        Transport a, b;               /* a: the client side, b: the dialled side */
        sd_event_source *aio, *bio, *kick;
        BridgeDir ab, ba;             /* a → b, b → a */
        bridge_done_t on_done;
        void *userdata;
        bool done;
};

/* Takes ownership of both transports (also on failure). prefix_b goes to b first (bytes a sent early, e.g. what a
 * CONNECT client pipelined, counted as payload), prefix_a to a first (the CONNECT 200, not counted in ba.bytes).
 * Each must fit one chunk. */
int bridge_start(Bridge *br, sd_event *e, Transport *a, Transport *b, const void *prefix_a, size_t na,
                 const void *prefix_b, size_t nb, bridge_done_t on_done, void *userdata);
void bridge_done(Bridge *br);
