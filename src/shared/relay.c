/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <sys/epoll.h>

#include "bufpool.h"
#include "log.h"
#include "relay.h"

_Static_assert(BUFPOOL_HEADROOM >= H2_SEND_HEADROOM, "relay chunks are lent to h2conn with their headroom");

static int relay_update(Relay *r);
static int relay_do_read(Relay *r);

static void relay_sent(OutMsg *m, void *userdata) {
        /* Runs from h2conn's send path once nghttp2 has returned: go straight on with the next chunk. */
        Relay *r = userdata;
        int k;

        if (r->closing || r->read_eof || !r->call)
                return;
        r->reading = true;
        k = relay_do_read(r);
        if (k != 0) {
                r->on_event(r, RELAY_EOF, k > 0 ? 0 : k, r->userdata);
                return;
        }
        (void) relay_update(r);
}

static int relay_update(Relay *r) {
        uint32_t ev = 0;

        if (!r->io)
                return 0;
        if (r->reading && !out_msg_queued(&r->out))
                ev |= r->read_want;
        if (r->woff < r->wlen)
                ev |= r->write_want;
        if (ev == 0)
                return sd_event_source_set_enabled(r->io, SD_EVENT_OFF);
        /* Edge-triggered: every change of the mask (pausing and resuming a direction goes through here) makes
         * epoll look again, and a handler reads or writes until EAGAIN or pauses. Level-triggered, each of 10 000
         * sockets that closed at once was handed back by every epoll_wait() until its turn came, and sd-event
         * dispatches one source per epoll_wait(): closing 9 000 idle tunnels took 8 minutes at 100 % CPU. */
        (void) sd_event_source_set_io_events(r->io, ev | EPOLLET);
        return sd_event_source_set_enabled(r->io, SD_EVENT_ON);
}

static void relay_send_chunk(Relay *r, size_t n) {
        r->bytes_in += n;
        metric_add(r->sent_packets, r->sent_labels, 1);
        grpc_call_send_data(r->call, &r->out, r->connect_id, r->rbuf + BUFPOOL_HEADROOM, n, BUFPOOL_HEADROOM,
                            relay_sent, r);
}

/* Returns 0, or a negative errno / 1 for EOF that the owner must hear about. */
static int relay_do_read(Relay *r) {
        ssize_t n;

        if (!r->reading || out_msg_queued(&r->out) || !r->call)
                return 0;
        if (!r->rbuf) {
                r->rbuf = bufpool_get();
                if (!r->rbuf)
                        return -ENOMEM;
        }
        n = transport_read(&r->t, r->rbuf + BUFPOOL_HEADROOM, BUFPOOL_CHUNK);
        if (n == -EAGAIN) {
                r->read_want = transport_read_events(&r->t);
                /* Nothing in flight: give the buffer back while idle. */
                r->rbuf = (bufpool_put(r->rbuf), NULL);
                return 0;
        }
        if (n <= 0) {
                r->read_eof = true;
                r->reading = false;
                return n == 0 ? 1 : (int) n;
        }
        relay_send_chunk(r, (size_t) n);
        return 0;
}

static int relay_flush(Relay *r) {
        while (r->woff < r->wlen) {
                ssize_t n = transport_write(&r->t, r->wbuf + r->woff, r->wlen - r->woff);
                size_t raw;

                if (n == -EAGAIN) {
                        r->write_want = transport_write_events(&r->t);
                        return 0;
                }
                if (n < 0)
                        return (int) n;
                r->woff += (size_t) n;
                raw = MIN((size_t) n, r->raw_prefix);
                r->raw_prefix -= raw;
                if ((size_t) n > raw) {
                        size_t c = MIN((size_t) n - raw, r->credits);
                        r->credits -= c;
                        r->bytes_out += c;
                        if (r->call)
                                grpc_call_consume(r->call, c);
                }
        }
        /* Drained: release the buffer until the socket is slow again. */
        r->wbuf = mfree(r->wbuf);
        r->woff = r->wlen = r->wcap = 0;
        return 0;
}

static int relay_buffer(Relay *r, const uint8_t *data, size_t len) {
        size_t used = r->wlen - r->woff;

        if (used + len > RELAY_WBUF_MAX)
                return -ENOBUFS;
        if (r->wlen + len > r->wcap) {
                size_t cap;
                uint8_t *n;

                if (r->woff > 0) {
                        memmove(r->wbuf, r->wbuf + r->woff, used);
                        r->woff = 0;
                        r->wlen = used;
                }
                if (r->wlen + len > r->wcap) {
                        cap = MAX(r->wcap * 2, (size_t) BUFPOOL_CHUNK);
                        while (cap < r->wlen + len)
                                cap *= 2;
                        n = realloc(r->wbuf, cap);
                        if (!n)
                                return -ENOMEM;
                        r->wbuf = n;
                        r->wcap = cap;
                }
        }
        memcpy(r->wbuf + r->wlen, data, len);
        r->wlen += len;
        return 0;
}

static int on_kick(sd_event_source *s, void *userdata) {
        Relay *r = userdata;
        int k = relay_do_read(r);

        if (k != 0) {
                r->on_event(r, RELAY_EOF, k > 0 ? 0 : k, r->userdata);
                return 0;
        }
        (void) relay_update(r);
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Relay *r = userdata;
        int k;

        if (r->woff < r->wlen) {
                k = relay_flush(r);
                if (k < 0) {
                        r->on_event(r, RELAY_EOF, k, r->userdata);
                        return 0;
                }
        }
        if (r->closing) {
                if (r->woff >= r->wlen) {
                        r->on_event(r, RELAY_DRAINED, 0, r->userdata);
                        return 0;
                }
                (void) relay_update(r);
                return 0;
        }
        k = relay_do_read(r);
        if (k != 0) {
                r->on_event(r, RELAY_EOF, k > 0 ? 0 : k, r->userdata);
                return 0;
        }
        if ((revents & (EPOLLHUP | EPOLLERR)) && !r->reading && r->woff >= r->wlen && !out_msg_queued(&r->out)) {
                r->on_event(r, RELAY_EOF, (revents & EPOLLERR) ? -ECONNRESET : 0, r->userdata);
                return 0;
        }
        (void) relay_update(r);
        return 0;
}

int relay_init(Relay *r, sd_event *e, Transport *t, relay_event_t on_event, void *userdata) {
        int k;

        *r = (Relay){ .t = *t, .on_event = on_event, .userdata = userdata, .read_want = EPOLLIN,
                      .write_want = EPOLLOUT };
        *t = TRANSPORT_NULL;
        out_msg_init(&r->out);
        k = sd_event_add_io(e, &r->io, r->t.fd, EPOLLIN | EPOLLET, on_io, r);
        if (k < 0)
                return k;
        (void) sd_event_source_set_enabled(r->io, SD_EVENT_OFF);
        if (r->t.tls) {
                k = sd_event_add_defer(e, &r->kick, on_kick, r);
                if (k < 0)
                        return k;
                (void) sd_event_source_set_enabled(r->kick, SD_EVENT_OFF);
        }
        return 0;
}

int relay_start(Relay *r, GrpcCall *call, int64_t connect_id, const uint8_t *pipelined, size_t n) {
        r->call = call;
        r->connect_id = connect_id;
        r->reading = true;
        if (n > 0) {
                r->rbuf = bufpool_get();
                if (!r->rbuf)
                        return -ENOMEM;
                memcpy(r->rbuf + BUFPOOL_HEADROOM, pipelined, MIN(n, (size_t) BUFPOOL_CHUNK));
                relay_send_chunk(r, MIN(n, (size_t) BUFPOOL_CHUNK));
        } else if (transport_pending(&r->t) > 0 && r->kick)
                (void) sd_event_source_set_enabled(r->kick, SD_EVENT_ONESHOT);
        return relay_update(r);
}

/* With nothing queued ahead, write straight from the caller's memory: bytes written (>= 0) or a negative errno. */
static ssize_t relay_write_direct(Relay *r, const void *data, size_t len) {
        ssize_t n;

        if (r->woff < r->wlen)
                return 0;
        n = transport_write(&r->t, data, len);
        if (n == -EAGAIN) {
                r->write_want = transport_write_events(&r->t);
                return 0;
        }
        return n;
}

int relay_write_raw(Relay *r, const void *data, size_t len) {
        ssize_t n;
        int k;

        assert(r->wlen == r->woff + r->raw_prefix); /* raw bytes only ahead of payload */
        /* Usually the socket takes a CONNECT response at once: no buffer needed. */
        n = relay_write_direct(r, data, len);
        if (n < 0)
                return (int) n;
        if ((size_t) n == len)
                return relay_update(r);
        data = (const uint8_t *) data + n;
        len -= (size_t) n;
        k = relay_buffer(r, data, len);
        if (k < 0)
                return k;
        r->raw_prefix += len;
        k = relay_flush(r);
        if (k < 0)
                return k;
        return relay_update(r);
}

int relay_deliver(Relay *r, const uint8_t *data, size_t len) {
        ssize_t n;
        size_t done;
        int k;

        if (r->closing && !r->call)
                return 0;
        /* Nothing queued ahead: write straight from the HTTP/2 input, no copy. */
        n = relay_write_direct(r, data, len);
        if (n < 0)
                return (int) n;
        done = (size_t) n;
        r->bytes_out += done;
        if (done == len)
                return 0;
        k = relay_buffer(r, data + done, len - done);
        if (k < 0)
                return k;
        r->credits += len - done;
        (void) relay_update(r);
        return (int) (len - done);
}

void relay_close(Relay *r) {
        r->closing = true;
        r->reading = false;
        if (r->woff >= r->wlen && r->io) {
                /* Fire RELAY_DRAINED from the loop, not from inside the caller. */
                (void) sd_event_source_set_io_events(r->io, EPOLLOUT);
                (void) sd_event_source_set_enabled(r->io, SD_EVENT_ONESHOT);
                return;
        }
        (void) relay_update(r);
}

void relay_detach_call(Relay *r) {
        grpc_call_cancel_msg(&r->out);
        /* Bytes still buffered will be written, but the stream forgets them now: give the credits back. */
        if (r->call && r->credits > 0)
                grpc_call_consume(r->call, r->credits);
        r->call = NULL;
        r->credits = 0;
        r->reading = false;
        (void) relay_update(r);
}

void relay_done(Relay *r) {
        grpc_call_cancel_msg(&r->out);
        if (r->call && r->credits > 0)
                grpc_call_consume(r->call, r->credits);
        r->call = NULL;
        r->credits = 0;
        r->io = sd_event_source_disable_unref(r->io);
        r->kick = sd_event_source_disable_unref(r->kick);
        transport_done(&r->t);
        r->rbuf = (bufpool_put(r->rbuf), NULL);
        r->wbuf = mfree(r->wbuf);
        r->woff = r->wlen = r->wcap = 0;
}
