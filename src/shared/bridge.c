/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <sys/epoll.h>

#include "bridge.h"
#include "bufpool.h"

static void bridge_finish(Bridge *br, int error, const char *why) {
        if (br->done)
                return;
        br->done = true;
        (void) sd_event_source_set_enabled(br->aio, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(br->bio, SD_EVENT_OFF);
        br->on_done(br, error, why, br->userdata); /* may free the owner: nothing after this */
}

/* One step of src → dst: read a chunk when the buffer is empty, write what is buffered. Returns 1 on progress, 0
 * when waiting, < 0 on failure (*ret_why set). */
static int move(Transport *src, Transport *dst, BridgeDir *d, const char **ret_why) {
        int progress = 0;
        ssize_t n;

        if (d->len == 0 && !d->eof) {
                if (!d->buf) {
                        d->buf = bufpool_get();
                        if (!d->buf)
                                return -ENOMEM;
                }
                n = transport_read(src, d->buf, BUFPOOL_CHUNK);
                if (n > 0) {
                        d->off = 0;
                        d->len = (size_t) n;
                        d->read_want = 0;
                        progress = 1;
                } else if (n == 0) {
                        d->eof = true;
                        progress = 1;
                } else if (n == -EAGAIN) {
                        d->read_want = transport_read_events(src);
                        /* Idle: the chunk goes back to the pool until data arrives. */
                        d->buf = (bufpool_put(d->buf), NULL);
                } else {
                        *ret_why = "read failed";
                        return (int) n;
                }
        }
        if (d->off < d->len) {
                n = transport_write(dst, d->buf + d->off, d->len - d->off);
                if (n > 0) {
                        size_t skipped = MIN(d->skip, (size_t) n);

                        d->skip -= skipped;
                        d->off += (size_t) n;
                        d->bytes += (uint64_t) n - skipped;
                        d->write_want = 0;
                        if (d->off == d->len)
                                d->off = d->len = 0;
                        progress = 1;
                } else if (n == -EAGAIN)
                        d->write_want = transport_write_events(dst);
                else {
                        *ret_why = "write failed";
                        return (int) n;
                }
        }
        return progress;
}

static uint32_t events_for(const BridgeDir *in, const BridgeDir *out) {
        uint32_t ev = 0;

        if (in->len == 0 && !in->eof)
                ev |= in->read_want ?: EPOLLIN;
        if (out->off < out->len)
                ev |= out->write_want ?: EPOLLOUT;
        return ev;
}

static void set_events(sd_event_source *s, uint32_t ev) {
        if (ev == 0) {
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_io_events(s, ev);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ON);
}

static void pump(Bridge *br) {
        const char *why = NULL;

        for (unsigned i = 0; i < 64; i++) {
                int p1, p2;

                p1 = move(&br->a, &br->b, &br->ab, &why);
                if (p1 < 0) {
                        bridge_finish(br, p1, why);
                        return;
                }
                p2 = move(&br->b, &br->a, &br->ba, &why);
                if (p2 < 0) {
                        bridge_finish(br, p2, why);
                        return;
                }
                if ((br->ab.eof && br->ab.len == 0) || (br->ba.eof && br->ba.len == 0)) {
                        bridge_finish(br, 0, br->ab.eof ? "closed by client" : "closed by destination");
                        return;
                }
                if (!p1 && !p2) {
                        /* TLS may hold decrypted bytes the fd will not announce again. */
                        if ((br->ab.len == 0 && transport_pending(&br->a) > 0) ||
                            (br->ba.len == 0 && transport_pending(&br->b) > 0))
                                continue;
                        break;
                }
                if (i == 63) {
                        /* Fair to the rest of the loop: continue on the next iteration. */
                        (void) sd_event_source_set_enabled(br->kick, SD_EVENT_ONESHOT);
                        break;
                }
        }
        set_events(br->aio, events_for(&br->ab, &br->ba));
        set_events(br->bio, events_for(&br->ba, &br->ab));
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        pump(userdata);
        return 0;
}

static int on_kick(sd_event_source *s, void *userdata) {
        pump(userdata);
        return 0;
}

static int prefill(BridgeDir *d, const void *p, size_t n) {
        if (n == 0)
                return 0;
        if (n > BUFPOOL_CHUNK)
                return -E2BIG;
        d->buf = bufpool_get();
        if (!d->buf)
                return -ENOMEM;
        memcpy(d->buf, p, n);
        d->off = 0;
        d->len = n;
        return 0;
}

int bridge_start(Bridge *br, sd_event *e, Transport *a, Transport *b, const void *prefix_a, size_t na,
                 const void *prefix_b, size_t nb, bridge_done_t on_done, void *userdata) {
        int r;

        *br = (Bridge){ .a = *a, .b = *b, .on_done = on_done, .userdata = userdata };
        *a = TRANSPORT_NULL;
        *b = TRANSPORT_NULL;
        r = prefill(&br->ba, prefix_a, na);
        br->ba.skip = na;
        if (r >= 0)
                r = prefill(&br->ab, prefix_b, nb);
        if (r >= 0)
                r = sd_event_add_io(e, &br->aio, br->a.fd, EPOLLIN, on_io, br);
        if (r >= 0)
                r = sd_event_add_io(e, &br->bio, br->b.fd, EPOLLIN, on_io, br);
        if (r >= 0)
                r = sd_event_add_defer(e, &br->kick, on_kick, br);
        if (r < 0)
                return r;
        /* The first pump runs from the loop, never inside the caller. */
        return sd_event_source_set_enabled(br->kick, SD_EVENT_ONESHOT);
}

void bridge_done(Bridge *br) {
        br->aio = sd_event_source_disable_unref(br->aio);
        br->bio = sd_event_source_disable_unref(br->bio);
        br->kick = sd_event_source_disable_unref(br->kick);
        transport_done(&br->a);
        transport_done(&br->b);
        br->ab.buf = (bufpool_put(br->ab.buf), NULL);
        br->ba.buf = (bufpool_put(br->ba.buf), NULL);
}
