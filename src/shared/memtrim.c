/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <malloc.h>

#include "bufpool.h"
#include "log.h"
#include "memtrim.h"
#include "tls.h"

static int memtrim_arm(MemTrim *t, uint64_t when);

static int on_trim_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        MemTrim *t = userdata;
        uint64_t now = 0;

        if (!t->idle(t->userdata))
                return 0; /* busy again: the next time it becomes idle schedules anew */
        (void) sd_event_now(t->event, CLOCK_MONOTONIC, &now);
        if (t->last_usec > 0 && now < t->last_usec + MEMTRIM_INTERVAL_USEC) {
                (void) memtrim_arm(t, t->last_usec + MEMTRIM_INTERVAL_USEC);
                return 0;
        }
        t->last_usec = now;
        t->n_trims++;
        bufpool_trim();
        tls_trim();
        (void) malloc_trim(0);
        return 0;
}

static int memtrim_arm(MemTrim *t, uint64_t when) {
        int r;

        if (t->timer) {
                r = sd_event_source_set_time(t->timer, when);
                if (r >= 0)
                        r = sd_event_source_set_enabled(t->timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time(t->event, &t->timer, CLOCK_MONOTONIC, when, 10 * 1000, on_trim_timer, t);
        if (r < 0)
                log_debug_errno(r, "Failed to arm the memory trim timer: %m");
        return r;
}

void memtrim_init(MemTrim *t, sd_event *e, bool (*idle)(void *userdata), void *userdata) {
        *t = (MemTrim){ .event = e, .idle = idle, .userdata = userdata };
}

void memtrim_done(MemTrim *t) {
        t->timer = sd_event_source_disable_unref(t->timer);
}

void memtrim_schedule(MemTrim *t) {
        int enabled = SD_EVENT_OFF;
        uint64_t now = 0;

        if (!t->event)
                return;
        if (t->timer && sd_event_source_get_enabled(t->timer, &enabled) >= 0 && enabled != SD_EVENT_OFF)
                return;
        if (sd_event_now(t->event, CLOCK_MONOTONIC, &now) < 0)
                return;
        (void) memtrim_arm(t, now + MEMTRIM_DELAY_USEC);
}
