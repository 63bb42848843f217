/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "bench.h"

/* ---------------------------------------------------------------------------------------------- */
/* dial, dial-concurrent: CONNECT (or TCP connect) until the hello target's byte has arrived. */

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static uint64_t percentile(const uint64_t *sorted, size_t n, unsigned pct) {
        size_t rank = ((size_t) pct * n + 99) / 100;

        return sorted[rank > 0 ? rank - 1 : 0];
}

static int dial_one_blocking(const char *uds, uint16_t port, uint64_t deadline, uint64_t *ret_usec) {
        _cleanup_close_ int fd = -EBADF;
        uint64_t t0 = now_usec();
        uint8_t hello[1];
        size_t n = 0;
        int r;

        if (uds)
                r = connect_konn(uds, port, deadline, hello, sizeof(hello), &n, &fd);
        else
                r = connect_direct(port, deadline, &fd);
        if (r < 0)
                return r;
        while (n == 0) {
                ssize_t k = recv(fd, hello, sizeof(hello), 0);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return io_errno(deadline);
                }
                if (k == 0)
                        return -ECONNRESET;
                n = (size_t) k;
        }
        if (hello[0] != HELLO_BYTE)
                return -EPROTO;
        *ret_usec = now_usec() - t0;
        return 0;
}

static int dial_sequential(const char *what, const char *uds, uint16_t port, unsigned count,
                           uint64_t deadline, uint64_t *lat) {
        int r;

        for (unsigned i = 0; i < count; i++) {
                r = dial_one_blocking(uds, port, deadline, &lat[i]);
                if (r < 0) {
                        fail("%s: dial %u of %u failed: %s", what, i + 1, count, strerror(-r));
                        return r;
                }
        }
        return 0;
}

static int dial_concurrent(Bench *b, const char *what, const char *uds, uint16_t port, unsigned dialers,
                           unsigned total, uint64_t deadline, uint64_t *lat) {
        struct epoll_event evs[256];
        unsigned started = 0, finished = 0;
        Conn *conns;
        int r = 0;

        dialers = MIN(dialers, total);
        conns = conns_new(dialers);
        if (!conns)
                return -ENOMEM;

        for (unsigned i = 0; i < dialers && r >= 0; i++, started++)
                r = conn_begin(&b->loop, &conns[i], uds, port);
        while (r >= 0 && finished < total) {
                r = loop_wait(b, evs, (int) ELEMENTSOF(evs), deadline);
                if (r < 0)
                        break;
                for (int i = 0; i < r; i++) {
                        Conn *c = evs[i].data.ptr;
                        int k = conn_hello_event(&b->loop, c);

                        if (k < 0) {
                                r = k;
                                break;
                        }
                        if (k == 0)
                                continue;
                        lat[finished++] = now_usec() - c->t_start;
                        conn_close(c);
                        if (started < total) {
                                k = conn_begin(&b->loop, c, uds, port);
                                if (k < 0) {
                                        r = k;
                                        break;
                                }
                                started++;
                        }
                }
        }
        if (r < 0)
                fail("%s: %u of %u dials done: %s", what, finished, total, strerror(-r));
        conns_free(&b->loop, conns, dialers);
        return r < 0 ? r : 0;
}

int run_dial(Bench *b, Scenario sc, unsigned run) {
        unsigned count = sc == SCENARIO_DIAL ? arg_dials : arg_concurrent_dials;
        uint16_t port = b->target.port[TROLE_HELLO];
        const char *name = scenario_name[sc];
        int r;

        for (Transport tr = 0; tr < _TRANSPORT_MAX; tr++) {
                const char *uds = tr == TRANSPORT_KONN ? arg_konn_uds : NULL;
                uint64_t deadline = now_usec() + (uint64_t) arg_timeout_sec * USEC_PER_SEC, t0, t1;
                uint64_t failed0 = TSTAT(&b->target, TROLE_HELLO, failed);
                _cleanup_free_ uint64_t *lat = NULL;
                double cpu_s[2];
                char what[64];
                CpuMark cpu;

                if (tr == TRANSPORT_KONN && !uds)
                        continue;
                (void) snprintf(what, sizeof(what), "%s via %s", name, transport_name[tr]);
                lat = calloc(count, sizeof(uint64_t));
                if (!lat)
                        return -ENOMEM;

                r = cpu_mark(tr, &cpu);
                if (r < 0)
                        return r;
                t0 = now_usec();
                if (sc == SCENARIO_DIAL)
                        r = dial_sequential(what, uds, port, count, deadline, lat);
                else
                        r = dial_concurrent(b, what, uds, port, arg_dialers, count, deadline, lat);
                t1 = now_usec();
                if (r < 0)
                        return r;
                if (TSTAT(&b->target, TROLE_HELLO, failed) != failed0) {
                        fail("%s: the hello target saw %" PRIu64 " failed connections", what,
                             TSTAT(&b->target, TROLE_HELLO, failed) - failed0);
                        return -EIO;
                }

                qsort(lat, count, sizeof(uint64_t), cmp_u64);
                row_add(row(b, sc, name, "p50 connect to first byte", "ms", 3,
                            sc == SCENARIO_DIAL ? TARGET_RATIO_MAX : TARGET_NONE, 3.0), tr,
                        (double) percentile(lat, count, 50) / 1e3);
                row_add(row(b, sc, name, "p99 connect to first byte", "ms", 3, TARGET_NONE, 0), tr,
                        (double) percentile(lat, count, 99) / 1e3);
                row_add(row(b, sc, name, "dials per second", "1/s", 0,
                            sc == SCENARIO_DIAL_CONCURRENT ? TARGET_RATIO_MIN : TARGET_NONE, 0.5), tr,
                        (double) count / ((double) (t1 > t0 ? t1 - t0 : 1) / 1e6));
                r = cpu_since(b, &cpu, cpu_s);
                if (r < 0)
                        return r;
                if (r > 0)
                        row_add(row(b, sc, name, "CPU server+agent per dial", "us", 1, TARGET_NONE, 0), tr,
                                (cpu_s[0] + cpu_s[1]) * 1e6 / count);
        }
        return 0;
}
