/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bufpool — fixed-size relay read buffers, recycled so the steady-state data path does not allocate per packet.
 * Owns the free list (a bounded number of spare buffers; beyond that, buffers go back to malloc). A buffer taken
 * with bufpool_get() belongs to the caller until bufpool_put(). Loop thread only. The chunk size is the largest
 * read the relay does and so the largest DATA message it sends; it is set once at startup (--relay-chunk-size),
 * before any buffer is taken. Received DATA is streamed to its destination as it arrives (h2conn), so a large
 * chunk never needs a whole-message buffer or window on the receiving side. 128 KiB by measurement (CPU per GiB of
 * server + agent, 512 MiB, three runs each on a loaded 2-core machine): upload 1.60 s (64 KiB), 1.46 (128 KiB),
 * 1.40 (256 KiB); download 1.80 / 1.96 / 1.90 (noise); 256 KiB would double again what many busy tunnels hold.
 */
#pragma once

#include "macro.h"

#define BUFPOOL_CHUNK_DEFAULT (128 * 1024)
#define BUFPOOL_CHUNK_MIN (16 * 1024) /* holds what a CONNECT client pipelines behind its header */
#define BUFPOOL_CHUNK_MAX (1024 * 1024)
#define BUFPOOL_MAX_FREE 4
/* Every buffer has this many bytes before its BUFPOOL_CHUNK: the relay reads behind them, and h2conn writes the
 * frame and message headers there and hands TLS the frame straight from the buffer (grpc_call_send_data()). */
#define BUFPOOL_HEADROOM 64

extern size_t bufpool_chunk; /* bytes per buffer */
#define BUFPOOL_CHUNK bufpool_chunk

/* Before the first bufpool_get(); size within BUFPOOL_CHUNK_MIN..MAX. -EBUSY once buffers exist. */
int bufpool_set_chunk_size(size_t size);

uint8_t *bufpool_get(void);           /* BUFPOOL_HEADROOM + BUFPOOL_CHUNK bytes; NULL on OOM */
void bufpool_put(uint8_t *b);         /* NULL-safe */
void bufpool_trim(void);              /* release every spare buffer (idle memory goes back to the system) */
