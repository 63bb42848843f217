/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "jsonw.h"
#include "log.h"
#include "trace.h"

struct TraceSubscriber {
        TraceHub *hub;
        LIST_FIELDS(TraceSubscriber, subscribers);
        int fd;
        sd_event_source *io;
        size_t off, len;          /* queued bytes: buf[off .. off+len) */
        char buf[];               /* TRACE_BUFFER_SIZE */
};

static const char *const event_names[_TRACE_EVENT_MAX] = {
        [TRACE_DIAL] = "dial",
        [TRACE_ESTABLISHED] = "established",
        [TRACE_FAILED] = "failed",
        [TRACE_CLOSED] = "closed",
};

const char *trace_event_type_to_string(TraceEventType t) {
        return t >= 0 && t < _TRACE_EVENT_MAX ? event_names[t] : NULL;
}

static uint64_t realtime_usec(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

void trace_hub_init(TraceHub *h, sd_event *e) {
        *h = (TraceHub){ .event = e };
}

static void subscriber_free(TraceSubscriber *s) {
        if (!s)
                return;
        LIST_REMOVE(subscribers, s->hub->subscribers, s);
        s->hub->n_subscribers--;
        s->io = sd_event_source_disable_unref(s->io);
        s->fd = safe_close(s->fd);
        free(s);
}

void trace_hub_done(TraceHub *h) {
        while (h->subscribers) {
                TraceSubscriber *s = h->subscribers;
                /* The terminating chunk, if the socket takes it now; the client sees a clean end of stream. */
                (void) !send(s->fd, "0\r\n\r\n", 5, MSG_NOSIGNAL | MSG_DONTWAIT);
                subscriber_free(s);
        }
}

/* Write what is queued. 0 when all is written or the socket is full; <0 when the subscriber is gone. */
static int subscriber_flush(TraceSubscriber *s) {
        while (s->len > 0) {
                ssize_t n = send(s->fd, s->buf + s->off, s->len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        return -errno;
                }
                s->off += (size_t) n;
                s->len -= (size_t) n;
        }
        if (s->len == 0)
                s->off = 0;
        return sd_event_source_set_io_events(s->io, s->len > 0 ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static int on_subscriber_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        TraceSubscriber *s = userdata;
        char discard[256];

        if (revents & (EPOLLHUP | EPOLLERR)) {
                subscriber_free(s);
                return 0;
        }
        if (revents & EPOLLIN) {
                /* A subscriber has nothing to say; EOF means it went away (Ctrl-C). */
                ssize_t n = read(fd, discard, sizeof(discard));
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                        subscriber_free(s);
                        return 0;
                }
        }
        if (subscriber_flush(s) < 0)
                subscriber_free(s);
        return 0;
}

/* Queue one chunk; false if it does not fit (the caller drops the subscriber). */
static bool subscriber_queue(TraceSubscriber *s, const char *line, size_t n) {
        char head[16];
        int k = snprintf(head, sizeof(head), "%zx\r\n", n + 1);
        size_t need = (size_t) k + n + 3;

        if (s->len + need > TRACE_BUFFER_SIZE)
                return false;
        if (s->off + s->len + need > TRACE_BUFFER_SIZE) {
                memmove(s->buf, s->buf + s->off, s->len);
                s->off = 0;
        }
        char *p = s->buf + s->off + s->len;
        memcpy(p, head, (size_t) k);
        memcpy(p + k, line, n);
        memcpy(p + k + n, "\n\r\n", 3);
        s->len += need;
        return true;
}

size_t trace_format(const TraceEvent *ev, uint64_t seq, uint64_t now, char *buf, size_t size) {
        char when[32], s1[300], s2[300], s3[600];
        const char *peer_key = ev->server ? "server" : "agent";
        int k;

        jsonw_time(when, now);
        (void) jsonw_escape(s1, sizeof(s1), ev->server ?: ev->agent);
        (void) jsonw_escape(s2, sizeof(s2), ev->dest);
        (void) jsonw_escape(s3, sizeof(s3), ev->reason);
        k = snprintf(buf, size,
                     "{\"seq\": %" PRIu64 ", \"time\": \"%s\", \"event\": \"%s\", \"dial_id\": %" PRIi64
                     ", \"connect_id\": %" PRIi64 ", \"%s\": %s, \"destination\": %s",
                     seq, when, trace_event_type_to_string(ev->type) ?: "?", ev->dial_id, ev->connect_id, peer_key, s1,
                     s2);
        if (k < 0 || (size_t) k >= size)
                goto cut;
        if (ev->frontend) {
                size_t n = (size_t) k;
                (void) jsonw_escape(s1, sizeof(s1), ev->client);
                k = snprintf(buf + n, size - n, ", \"frontend\": \"%s\", \"client\": %s", ev->frontend, s1);
                if (k < 0 || (size_t) k >= size - n)
                        goto cut;
                k += (int) n;
        }
        {
                size_t n = (size_t) k;
                switch (ev->type) {
                case TRACE_ESTABLISHED:
                        k = snprintf(buf + n, size - n, ", \"dial_seconds\": %.6f}", (double) ev->usec / USEC_PER_SEC);
                        break;
                case TRACE_FAILED:
                        k = snprintf(buf + n, size - n, ", \"reason\": %s}", s3);
                        break;
                case TRACE_CLOSED:
                        k = snprintf(buf + n, size - n,
                                     ", \"reason\": %s, \"bytes_to_destination\": %" PRIu64 ", \"bytes_from_destination\": %" PRIu64
                                     ", \"duration_seconds\": %.6f}",
                                     s3, ev->bytes_in, ev->bytes_out, (double) ev->usec / USEC_PER_SEC);
                        break;
                default:
                        k = snprintf(buf + n, size - n, "}");
                }
                if (k < 0 || (size_t) k >= size - n)
                        goto cut;
                return n + (size_t) k;
        }
cut:
        /* Cannot happen with TRACE_EVENT_MAX: every variable part is bounded above. */
        k = snprintf(buf, size, "{\"seq\": %" PRIu64 ", \"event\": \"%s\"}", seq, trace_event_type_to_string(ev->type) ?: "?");
        return k < 0 ? 0 : MIN((size_t) k, size - 1);
}

static void remember_error(TraceHub *h, const TraceEvent *ev, uint64_t now) {
        TraceError *e = &h->errors[h->next_error];

        e->time_usec = now;
        (void) snprintf(e->dest, sizeof(e->dest), "%s", ev->dest ?: "");
        (void) snprintf(e->reason, sizeof(e->reason), "%s", ev->reason ?: "");
        h->next_error = (h->next_error + 1) % TRACE_LAST_ERRORS;
        if (h->n_errors < TRACE_LAST_ERRORS)
                h->n_errors++;
}

const TraceError *trace_last_error(const TraceHub *h, unsigned i) {
        if (i >= h->n_errors)
                return NULL;
        return &h->errors[(h->next_error + TRACE_LAST_ERRORS - 1 - i) % TRACE_LAST_ERRORS];
}

static void publish_line(TraceHub *h, const char *line, size_t n) {
        TraceSubscriber *s, *next;

        LIST_FOREACH_SAFE(subscribers, s, next, h->subscribers) {
                if (!subscriber_queue(s, line, n)) {
                        h->n_dropped++;
                        log_notice("Dropping a trace subscriber: it is not reading (%zu bytes queued).", s->len);
                        subscriber_free(s);
                        continue;
                }
                /* Written when the socket says it is writable, never here: publishing costs no syscall. */
                if (sd_event_source_set_io_events(s->io, EPOLLIN | EPOLLOUT) < 0)
                        subscriber_free(s);
        }
}

void trace_publish(TraceHub *h, const TraceEvent *ev) {
        char line[TRACE_EVENT_MAX];
        uint64_t now;
        size_t n;

        h->seq++;
        if (ev->type == TRACE_FAILED) {
                now = realtime_usec();
                remember_error(h, ev, now);
        } else if (!h->subscribers)
                return;
        else
                now = realtime_usec();
        if (!h->subscribers)
                return;
        n = trace_format(ev, h->seq, now, line, sizeof(line));
        publish_line(h, line, n);
}

int trace_subscribe(TraceHub *h, int fd) {
        static const char head[] = "HTTP/1.1 200 OK\r\n"
                                   "Content-Type: application/x-ndjson\r\n"
                                   "Transfer-Encoding: chunked\r\n"
                                   "Cache-Control: no-store\r\n"
                                   "Connection: close\r\n"
                                   "\r\n";
        _cleanup_close_ int fd_close = fd;
        TraceSubscriber *s;
        char line[128];
        int k, r;

        if (h->n_subscribers >= TRACE_SUBSCRIBERS_MAX)
                return -EBUSY;
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &(int){ TRACE_SNDBUF_SIZE }, sizeof(int));
        s = malloc(sizeof(TraceSubscriber) + TRACE_BUFFER_SIZE);
        if (!s)
                return -ENOMEM;
        *s = (TraceSubscriber){ .hub = h, .fd = TAKE_FD(fd_close) };
        r = sd_event_add_io(h->event, &s->io, s->fd, EPOLLIN | EPOLLOUT, on_subscriber_io, s);
        if (r < 0) {
                safe_close(s->fd);
                free(s);
                return r;
        }
        LIST_PREPEND(subscribers, h->subscribers, s);
        h->n_subscribers++;
        memcpy(s->buf, head, sizeof(head) - 1);
        s->len = sizeof(head) - 1;
        {
                char when[32];
                jsonw_time(when, realtime_usec());
                k = snprintf(line, sizeof(line), "{\"seq\": %" PRIu64 ", \"time\": \"%s\", \"event\": \"subscribed\"}",
                             h->seq, when);
        }
        (void) subscriber_queue(s, line, (size_t) k);
        return 0;
}
