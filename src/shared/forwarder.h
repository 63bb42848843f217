/* SPDX-License-Identifier: Apache-2.0 */
/*
 * forwarder — carries DATA payloads from one gRPC call to another (a gRPC frontend stream and an agent stream on
 * konn-server), one direction per Forwarder. Received payloads live in h2conn's transient input buffer, so they
 * are copied once into the forwarder's chunks; their HTTP/2 credits on the source call are withheld until the copy
 * has been sent on the destination call, so the source's flow-control window bounds the memory held here (no
 * queue grows beyond it, however large the window has grown). Payloads that arrive while one message is in flight
 * are coalesced into chunks of up to FORWARDER_CHUNK bytes, each sent as one message when its turn comes.
 * Embedded in, and owned by, a server Tunnel, which calls forwarder_done() before freeing itself. Loop thread only.
 */
#pragma once

#include "h2conn.h"
#include "metrics.h"

#define FORWARDER_CHUNK ((size_t) 256 * 1024)

typedef struct ForwarderChunk ForwarderChunk;

typedef struct Forwarder {
        GrpcCall *src;          /* credits owed here; NULL once detached */
        GrpcCall *dst;
        int64_t connect_id;
        OutMsg out;
        ForwarderChunk *cur;    /* the message in flight (referenced by out) */
        ForwarderChunk *head, *tail; /* accepted, waiting for their turn */
        size_t pending;         /* bytes in head..tail */
        Metric *sent_packets;   /* optional: counts each DATA packet sent, with sent_labels */
        const char *sent_labels[2];
} Forwarder;

void forwarder_init(Forwarder *f, GrpcCall *src, GrpcCall *dst, int64_t connect_id);
/* A DATA payload from src: queue it towards dst. Returns bytes retained (credits withheld), or -ENOMEM / -ENOBUFS
 * (more is waiting than any window allows: the source ignored flow control). */
int forwarder_push(Forwarder *f, const uint8_t *data, size_t len);
/* Stop, giving the credits back to src (if still set). flush: the destination is still there and everything
 * accepted goes out (in order, before whatever the owner queues next); otherwise what was not yet queued is
 * dropped. Owners clear f->src / f->dst (forwarder_forget_call()) as soon as either call ends. */
void forwarder_done(Forwarder *f, bool flush);
/* A call ended: forget it wherever it appears. */
void forwarder_forget_call(Forwarder *f, GrpcCall *call);
