/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bufpool — fixed-size relay read buffers, recycled so the steady-state data path does not allocate per packet.
 * Owns the free list (a bounded number of spare buffers; beyond that, buffers go back to malloc). A buffer taken
 * with bufpool_get() belongs to the caller until bufpool_put(). Loop thread only. 64 KiB chunks: 256 KiB ones
 * cost ~15% less CPU per GiB on one tunnel but deadlocked 100 tunnels echoing at once in konn-to-konn mode
 * (whole-message reassembly and withheld credits exhausting the connection window); see make bench echo-many.
 */
#pragma once

#include "macro.h"

#define BUFPOOL_CHUNK (64 * 1024)
#define BUFPOOL_MAX_FREE 4

uint8_t *bufpool_get(void);           /* NULL on OOM */
void bufpool_put(uint8_t *b);         /* NULL-safe */
void bufpool_trim(void);              /* release every spare buffer (idle memory goes back to the system) */
