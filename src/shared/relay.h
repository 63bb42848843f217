/* SPDX-License-Identifier: Apache-2.0 */
/*
 * relay — moves bytes between one plain-side byte stream (a frontend client socket on the server, a dialled
 * endpoint on the agent; plain or TLS) and the gRPC call that carries its tunnel.
 *
 * Owns the Transport, its io source, the read buffer (taken from bufpool only while a chunk is in flight) and the
 * bounded write buffer (allocated only while the socket cannot keep up). Embedded in, and owned by, a server Tunnel
 * or an agent Endpoint, which must call relay_done() before freeing itself.
 *
 * Backpressure: one chunk per direction in flight. Socket → tunnel: after a chunk is queued, reading stops until
 * h2conn has copied it out. Tunnel → socket: bytes the socket does not take at once are kept and their HTTP/2
 * credits withheld (grpc_call_consume() only after the write), so the sender's window closes instead of our memory
 * growing. Loop thread only. on_event may free the owner (and so the relay) and is the last thing relay code does.
 */
#pragma once

#include <systemd/sd-event.h>

#include "h2conn.h"
#include "metrics.h"
#include "transport.h"

#define RELAY_WBUF_MAX (32U * 1024 * 1024) /* hard cap; flow control keeps us far below */

typedef struct Relay Relay;

typedef enum RelayEvent {
        RELAY_EOF,      /* the socket side closed or failed (error in the callback's error argument) */
        RELAY_DRAINED,  /* after relay_close(): everything written, the owner may free */
} RelayEvent;

typedef void (*relay_event_t)(Relay *r, RelayEvent ev, int error, void *userdata);

struct Relay {
        Transport t;
        sd_event_source *io, *kick;
        relay_event_t on_event;
        void *userdata;

        GrpcCall *call;          /* not owned; set while the tunnel is established */
        int64_t connect_id;

        uint8_t *rbuf;
        OutMsg out;
        bool reading;            /* started and not paused */
        bool read_eof;
        uint32_t read_want, write_want;

        uint8_t *wbuf;
        size_t wcap, woff, wlen;
        size_t raw_prefix;       /* bytes at wbuf[woff..] that carry no flow-control credit (CONNECT response) */
        size_t credits;          /* payload bytes buffered whose credits are still withheld */
        bool closing;

        uint64_t bytes_in, bytes_out; /* socket → tunnel, tunnel → socket */
        Metric *sent_packets;         /* optional: counts each DATA packet sent, with sent_labels */
        const char *sent_labels[2];
};

/* Takes ownership of t (also on failure). Nothing is read until relay_start(). */
int relay_init(Relay *r, sd_event *e, Transport *t, relay_event_t on_event, void *userdata);
/* Begin relaying on call/connect_id; `pipelined` bytes (the client's bytes after a CONNECT header) go first. */
int relay_start(Relay *r, GrpcCall *call, int64_t connect_id, const uint8_t *pipelined, size_t n);
/* Queue bytes that are not tunnel payload (a CONNECT response) ahead of everything else. */
int relay_write_raw(Relay *r, const void *data, size_t len);
/* DATA for this tunnel: returns the number of bytes kept (credits withheld), or -ENOBUFS past RELAY_WBUF_MAX. */
int relay_deliver(Relay *r, const uint8_t *data, size_t len);
/* Stop reading; RELAY_DRAINED fires once the write buffer is empty (at once, from the loop, if it is already). */
void relay_close(Relay *r);
/* The call carrying the tunnel is gone: forget it (credits no longer owed), stop reading. */
void relay_detach_call(Relay *r);
/* Free everything: cancels a queued chunk (h2conn keeps a copy so no byte is lost), returns withheld credits. */
void relay_done(Relay *r);
