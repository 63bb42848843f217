/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memtrim — giving memory back to the system once a daemon is idle (no tunnel open): the spare relay buffers
 * (bufpool), the spare TLS write buffers (tls) and free heap pages (malloc_trim). The trim runs a little after the
 * daemon became idle, not at once: closing a tunnel still frees and recycles memory after the count reached zero
 * (the last replies to the peer leave, buffers go back to their spare lists), and what is freed after a trim stays
 * resident. At most one trim a second. Owns its timer. Loop thread only.
 */
#pragma once

#include <systemd/sd-event.h>

#include <stdbool.h>
#include <stdint.h>

#define MEMTRIM_DELAY_USEC (250 * 1000ULL)
#define MEMTRIM_INTERVAL_USEC (1000 * 1000ULL)

typedef struct MemTrim {
        sd_event *event;
        sd_event_source *timer;
        uint64_t last_usec;                 /* when the last trim ran (CLOCK_MONOTONIC) */
        bool (*idle)(void *userdata);       /* whether nothing is open now */
        void *userdata;
        unsigned n_trims;                   /* trims run, for tests */
} MemTrim;

void memtrim_init(MemTrim *t, sd_event *e, bool (*idle)(void *userdata), void *userdata);
void memtrim_done(MemTrim *t);
/* The daemon may have become idle: trim MEMTRIM_DELAY_USEC from now (or a second after the last trim, if that is
 * later) if it still is then. Cheap to call on every change; a trim already scheduled stays. */
void memtrim_schedule(MemTrim *t);
