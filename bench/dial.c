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

/* The wake-up floor, measured in the same run: the median of one process wake-up on this machine from one CPU to
 * another (half a round trip of one byte between two processes pinned to CPUs 0 and 1, over a socketpair, each
 * blocked in read()). On this 2-core VM that costs about 20 us, against 4 us between two processes on one CPU: an
 * idle vCPU must be woken. A sequential dial leaves the CPUs idle between its steps, so its hops are of the first
 * kind when they change CPU. A direct dial's first byte needs two (the
 * target on the connection, the client on the byte); through konn the byte crosses six (server on the CONNECT,
 * agent on the DIAL_REQ, target on the connection, agent on the byte, server on its DATA, client on it), whatever
 * the daemons do in between. */
#define WAKE_ROUNDS 4000

static int measure_wakeup_usec(double *ret) {
        _cleanup_free_ uint64_t *rtt = calloc(WAKE_ROUNDS, sizeof(uint64_t));
        int sv[2], r = 0, status;
        cpu_set_t saved, one;
        pid_t pid;
        char c = 'w';

        if (!rtt)
                return -ENOMEM;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        if (sched_getaffinity(0, sizeof(saved), &saved) < 0) {
                r = -errno;
                goto out;
        }
        if (CPU_COUNT(&saved) >= 2) {
                CPU_ZERO(&one);
                CPU_SET(0, &one);
                (void) sched_setaffinity(0, sizeof(one), &one);
        }
        pid = fork();
        if (pid < 0) {
                r = -errno;
                (void) sched_setaffinity(0, sizeof(saved), &saved);
                goto out;
        }
        if (pid == 0) {
                if (CPU_COUNT(&saved) >= 2) {
                        CPU_ZERO(&one);
                        CPU_SET(1, &one);
                        (void) sched_setaffinity(0, sizeof(one), &one);
                }
                (void) close(sv[0]);
                for (unsigned i = 0; i < WAKE_ROUNDS; i++)
                        if (read(sv[1], &c, 1) != 1 || write(sv[1], &c, 1) != 1)
                                break;
                _exit(0);
        }
        for (unsigned i = 0; i < WAKE_ROUNDS; i++) {
                uint64_t t0 = now_usec();

                if (write(sv[0], &c, 1) != 1 || read(sv[0], &c, 1) != 1) {
                        r = -EIO;
                        break;
                }
                rtt[i] = now_usec() - t0;
        }
        (void) shutdown(sv[0], SHUT_RDWR);
        (void) waitpid(pid, &status, 0);
        (void) sched_setaffinity(0, sizeof(saved), &saved);
        if (r >= 0) {
                qsort(rtt, WAKE_ROUNDS, sizeof(uint64_t), cmp_u64);
                *ret = (double) percentile(rtt, WAKE_ROUNDS, 50) / 2.0;
        }
out:
        (void) close(sv[0]);
        (void) close(sv[1]);
        return r;
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
        if (sc == SCENARIO_DIAL) {
                double wake = 0;

                r = measure_wakeup_usec(&wake);
                if (r < 0) {
                        fail("%s: measuring a wake-up: %s", name, strerror(-r));
                        return r;
                }
                row_add(row(b, sc, name, "one wake-up, CPU 0 to 1 (ping-pong / 2)", "us", 1, TARGET_NONE, 0),
                        TRANSPORT_DIRECT, wake);
                row_add(row(b, sc, name, "wake-up floor: 2 direct, 6 via konn", "ms", 3, TARGET_NONE, 0),
                        TRANSPORT_DIRECT, 2 * wake / 1e3);
                row_add(row(b, sc, name, "wake-up floor: 2 direct, 6 via konn", "ms", 3, TARGET_NONE, 0),
                        TRANSPORT_KONN, 6 * wake / 1e3);
        }
        return 0;
}
