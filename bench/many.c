/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "bench.h"

/* ---------------------------------------------------------------------------------------------- */
/* Many connections: opening, echo-many. */

/* Waits for events (at most 1 s, or 1 ms while connections wait to retry), after retrying those.
 * Returns the number of events, 0 on timeout or EINTR, -ETIMEDOUT past deadline, -ESRCH if the target
 * process died. */
int loop_wait(Bench *b, struct epoll_event *evs, int max, uint64_t deadline) {
        Loop *lp = &b->loop;
        uint64_t now;
        int n, timeout, r;

        r = loop_retry_all(lp);
        if (r < 0)
                return r;
        now = now_usec();
        if (now >= deadline)
                return -ETIMEDOUT;
        timeout = lp->n_retry > 0 ? 1 : (int) MIN((deadline - now + 999) / 1000, (uint64_t) 1000);
        n = epoll_wait(lp->epfd, evs, max, timeout);
        if (n < 0)
                return errno == EINTR ? 0 : negative_errno();
        if (n == 0 && target_check(&b->target) < 0)
                return -ESRCH;
        return n;
}

/* Opens n connections to port, at most OPEN_INFLIGHT being set up at a time. With hello, a connection
 * is ready when the target's HELLO_BYTE has arrived (and it stays registered for EPOLLIN, so that a
 * close is noticed); otherwise when it is open and nothing has arrived. Logs failures. */
static int open_many(Bench *b, const char *what, Conn *conns, unsigned n, const char *uds, uint16_t port,
                     bool hello, uint64_t deadline) {
        struct epoll_event evs[256];
        unsigned next = 0, inflight = 0, ready = 0;
        int r;

        while (ready < n) {
                while (inflight < OPEN_INFLIGHT && next < n) {
                        r = conn_begin(&b->loop, &conns[next], uds, port);
                        if (r < 0) {
                                fail("%s: connection %u of %u: %s", what, next + 1, n, strerror(-r));
                                return r;
                        }
                        next++;
                        inflight++;
                }

                r = loop_wait(b, evs, (int) ELEMENTSOF(evs), deadline);
                if (r < 0) {
                        fail("%s: %u of %u connections ready: %s", what, ready, n, strerror(-r));
                        return r;
                }
                for (int i = 0; i < r; i++) {
                        Conn *c = evs[i].data.ptr;
                        unsigned index = (unsigned) (c - conns);
                        int k;

                        if (c->ready) {
                                /* An idle connection that should not have had anything to say. */
                                uint8_t x;
                                ssize_t m = recv(c->fd, &x, 1, 0);

                                if (m < 0 && IN_SET(errno, EAGAIN, EINTR))
                                        continue;
                                k = m == 0 ? -ECONNRESET : m < 0 ? negative_errno() : -EPROTO;
                        } else if (hello)
                                k = conn_hello_event(&b->loop, c);
                        else {
                                const uint8_t *extra;
                                size_t n_extra;

                                k = conn_setup_event(&b->loop, c, &extra, &n_extra);
                                if (k > 0 && n_extra > 0)
                                        k = -EPROTO;
                        }
                        if (k < 0) {
                                fail("%s: connection %u of %u (%u ready) failed: %s", what, index + 1, n,
                                     ready, strerror(-k));
                                return k;
                        }
                        if (k == 0)
                                continue;
                        c->ready = true;
                        c->t_done = now_usec();
                        ready++;
                        inflight--;
                }
        }
        return 0;
}

static int echo_many_write(Loop *lp, Conn *c) {
        for (unsigned i = 0; i < 4; i++) {
                ssize_t k;

                if (c->woff == c->wlen) {
                        size_t n;

                        if (c->sent == c->size)
                                return conn_set_events(lp, c, EPOLLIN);
                        n = (size_t) MIN((uint64_t) CONN_WBUF, c->size - c->sent);
                        gen_fill(&c->sgen, c->wbuf, n);
                        c->sent += n;
                        c->woff = 0;
                        c->wlen = n;
                }
                k = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : negative_errno();
                }
                c->woff += (size_t) k;
        }
        return 0;
}

/* 1 when the connection is finished (all bytes back, then EOF; closed here), 0 to go on. */
static int echo_many_read(Bench *b, Conn *c) {
        ssize_t k = recv(c->fd, b->buf, arg_buffer_size, 0);

        if (k < 0)
                return IN_SET(errno, EAGAIN, EINTR) ? 0 : negative_errno();
        if (k == 0) {
                if (c->received != c->size)
                        return -ECONNRESET;
                conn_close(c);
                return 1;
        }
        if (c->received + (uint64_t) k > c->size)
                return -EPROTO;
        if (!gen_verify(&c->rgen, b->buf, (size_t) k, b->scratch, SCRATCH_SIZE))
                return -EBADMSG;
        c->received += (uint64_t) k;
        if (c->received == c->size)
                c->t_done = now_usec();
        return 0;
}

/* n tunnels x size bytes echoed at once through uds (NULL: direct); what_tr names the path in messages. */
static int echo_many_once(Bench *b, Transport tr, const char *uds, const char *what_tr, unsigned n, uint64_t size,
                          unsigned run, Measurement *ret) {
        uint64_t deadline = now_usec() + (uint64_t) arg_timeout_sec * USEC_PER_SEC, t0, t_end = 0;
        uint64_t verify0 = TSTAT(&b->target, TROLE_ECHO, verify_failed);
        uint64_t failed0 = TSTAT(&b->target, TROLE_ECHO, failed);
        unsigned finished = 0;
        struct epoll_event evs[256];
        Measurement m = {};
        double bench0, cpu_s[2];
        char what[64];
        CpuMark cpu;
        Conn *conns;
        int r;

        (void) snprintf(what, sizeof(what), "echo %u tunnels via %s", n, what_tr);
        conns = conns_new(n);
        if (!conns)
                return -ENOMEM;

        r = open_many(b, what, conns, n, uds, b->target.port[TROLE_ECHO], false, deadline);
        if (r < 0)
                goto finish;

        for (unsigned i = 0; i < n && r >= 0; i++) {
                Conn *c = &conns[i];
                uint64_t seed =
                        UINT64_C(0x6563686f2d6d616e) + ((uint64_t) run * _TRANSPORT_MAX + tr) * n + i;
                uint64_t hdr[2] = { htole64(size), htole64(seed) };

                gen_init(&c->sgen, seed);
                gen_init(&c->rgen, seed);
                c->size = size;
                c->wbuf = malloc(CONN_WBUF);
                if (!c->wbuf) {
                        r = -ENOMEM;
                        break;
                }
                memcpy(c->wbuf, hdr, HDR_SIZE);
                c->woff = 0;
                c->wlen = HDR_SIZE;
        }
        if (r < 0)
                goto finish;

        r = cpu_mark(tr, &cpu);
        if (r < 0)
                goto finish;
        bench0 = client_target_cpu_s(b);
        t0 = now_usec();
        for (unsigned i = 0; i < n && r >= 0; i++)
                r = conn_set_events(&b->loop, &conns[i], EPOLLIN | EPOLLOUT);
        if (r < 0)
                goto finish;

        while (finished < n) {
                r = loop_wait(b, evs, (int) ELEMENTSOF(evs), deadline);
                if (r < 0) {
                        fail("%s: %u of %u tunnels finished: %s", what, finished, n, strerror(-r));
                        goto finish;
                }
                for (int i = 0; i < r; i++) {
                        Conn *c = evs[i].data.ptr;
                        unsigned index = (unsigned) (c - conns);
                        int k = 0;

                        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                                k = echo_many_read(b, c);
                                if (k > 0) {
                                        t_end = MAX(t_end, c->t_done);
                                        finished++;
                                        continue;
                                }
                        }
                        if (k == 0 && (evs[i].events & EPOLLOUT))
                                k = echo_many_write(&b->loop, c);
                        if (k < 0) {
                                fail("%s: tunnel %u: %s after %" PRIu64 " bytes sent, %" PRIu64
                                     " of %" PRIu64 " received",
                                     what, index + 1,
                                     k == -EBADMSG  ? "the echo differs from what was sent"
                                     : k == -EPROTO ? "more bytes came back than were sent"
                                                    : strerror(-k),
                                     c->sent, c->received, c->size);
                                r = k;
                                goto finish;
                        }
                }
        }

        if (TSTAT(&b->target, TROLE_ECHO, verify_failed) != verify0 ||
            TSTAT(&b->target, TROLE_ECHO, failed) != failed0) {
                fail("%s: the echo target saw %" PRIu64 " tunnels with wrong data and %" PRIu64 " failures",
                     what, TSTAT(&b->target, TROLE_ECHO, verify_failed) - verify0,
                     TSTAT(&b->target, TROLE_ECHO, failed) - failed0);
                r = -EBADMSG;
                goto finish;
        }

        m.seconds = (double) (t_end > t0 ? t_end - t0 : 1) / 1e6;
        m.size = (uint64_t) n * size;
        m.carried = 2 * m.size;
        m.bench_cpu_s = client_target_cpu_s(b) - bench0;
        r = cpu_since(b, &cpu, cpu_s);
        if (r < 0)
                goto finish;
        if (r > 0) {
                m.daemon_cpu_valid = true;
                m.server_cpu_s = cpu_s[0];
                m.agent_cpu_s = cpu_s[1];
        }
        m.done = true;
        *ret = m;
        r = 0;
finish:
        conns_free(&b->loop, conns, n);
        return r;
}

int run_echo_many(Bench *b, unsigned run) {
        int r;

        for (Transport tr = 0; tr < _TRANSPORT_MAX; tr++) {
                Measurement m;

                if (tr == TRANSPORT_KONN && !arg_konn_uds)
                        continue;
                r = echo_many_once(b, tr, tr == TRANSPORT_KONN ? arg_konn_uds : NULL, transport_name[tr], arg_tunnels,
                                   arg_tunnel_size, run, &m);
                if (r < 0)
                        return r;
                record_transfer(b, SCENARIO_ECHO_MANY, scenario_name[SCENARIO_ECHO_MANY],
                                "aggregate throughput per direction", true, tr, &m);
        }
        return 0;
}

/* echo-1000: the "1 000 concurrently echoing tunnels complete", through the konn pair and, with
 * --classic-uds, through the classic pair too; 1 where every tunnel completed and verified. */
int run_echo_1000(Bench *b, unsigned run) {
        int r, k = 0;

        for (unsigned i = 0; i < 3; i++) {
                Transport tr = i == 0 ? TRANSPORT_DIRECT : TRANSPORT_KONN;
                const char *uds = i == 0 ? NULL : i == 1 ? arg_konn_uds : arg_classic_uds;
                const char *label = i == 2 ? "echo-1000 classic" : arg_konn_classic ? "echo-1000 classic" : "echo-1000";
                Measurement m;

                if (i > 0 && !uds)
                        continue;
                r = echo_many_once(b, tr, uds, i == 0 ? "direct" : label + STRLEN("echo-1000 "), arg_many_tunnels,
                                   arg_many_tunnel_size, run, &m);
                if (r < 0 && i == 0)
                        return r;
                row_add(row(b, SCENARIO_ECHO_1000, label, "tunnels completed and verified", "", 0, TARGET_KONN_MIN,
                            (double) arg_many_tunnels),
                        tr, r < 0 ? 0 : (double) arg_many_tunnels);
                if (r < 0) {
                        k = r;
                        continue;
                }
                if (i == 2) {
                        /* Only the classic pair: no daemon CPU figures (its pids are not ours). */
                        m.daemon_cpu_valid = false;
                }
                record_transfer(b, SCENARIO_ECHO_1000, label, "aggregate throughput per direction", false, tr, &m);
        }
        return k;
}

/* ---------------------------------------------------------------------------------------------- */
/* idle-rss, idle-tunnels. */

void record_idle_rss(Bench *b) {
        for (unsigned i = 0; i < 2; i++) {
                char metric[48];

                if (!b->mem_idle[i].valid)
                        continue;
                (void) snprintf(metric, sizeof(metric), "%s VmRSS", daemon_name[i]);
                row_add(row(b, SCENARIO_IDLE_RSS, "idle-rss", metric, "KiB", 0, TARGET_NONE, 0),
                        TRANSPORT_KONN, (double) b->mem_idle[i].vmrss_kib);
                (void) snprintf(metric, sizeof(metric), "%s RssAnon", daemon_name[i]);
                row_add(row(b, SCENARIO_IDLE_RSS, "idle-rss", metric, "KiB", 0, TARGET_KONN_MAX, 2048),
                        TRANSPORT_KONN, (double) b->mem_idle[i].rssanon_kib);
        }
}

/* Per daemon and N: (RSS with N idle tunnels open - idle RSS) / N, where idle is the sample taken at
 * start, as the issue defines it; and RSS after they are all closed again, minus idle. Both VmRSS and
 * RssAnon. */
int run_idle_tunnels(Bench *b, unsigned n) {
        static const double per_tunnel_target[2] = { 3072, 2048 }; /* bytes: server, agent */
        uint16_t port = b->target.port[TROLE_HELLO];
        char name[32];
        int r;

        (void) snprintf(name, sizeof(name), "idle-tunnels %u", n);
        for (Transport tr = 0; tr < _TRANSPORT_MAX; tr++) {
                const char *uds = tr == TRANSPORT_KONN ? arg_konn_uds : NULL;
                bool mem = tr == TRANSPORT_KONN && have_daemon_pids() && b->mem_idle[0].valid &&
                           b->mem_idle[1].valid;
                uint64_t deadline = now_usec() + (uint64_t) arg_timeout_sec * USEC_PER_SEC, t0, t1;
                uint64_t accepted0 = TSTAT(&b->target, TROLE_HELLO, accepted);
                uint64_t closed0 = TSTAT(&b->target, TROLE_HELLO, closed);
                uint64_t failed0 = TSTAT(&b->target, TROLE_HELLO, failed);
                ProcMem open[2] = {}, closed[2] = {}, after1s[2] = {};
                const ProcMem *idle = b->mem_idle;
                char what[64];
                Conn *conns;

                if (tr == TRANSPORT_KONN && !uds)
                        continue;
                (void) snprintf(what, sizeof(what), "%s via %s", name, transport_name[tr]);

                conns = conns_new(n);
                if (!conns)
                        return -ENOMEM;
                t0 = now_usec();
                r = open_many(b, what, conns, n, uds, port, true, deadline);
                t1 = now_usec();
                if (r >= 0 && TSTAT(&b->target, TROLE_HELLO, accepted) - accepted0 != n) {
                        fail("%s: the target accepted %" PRIu64 " connections for %u tunnels", what,
                             TSTAT(&b->target, TROLE_HELLO, accepted) - accepted0, n);
                        r = -EPROTO;
                }
                if (r >= 0 && mem)
                        r = daemons_mem_settled(open);
                conns_free(&b->loop, conns, n);
                if (r < 0)
                        return r;

                r = target_wait_closed(&b->target, TROLE_HELLO, closed0 + n, CLOSE_WAIT_USEC);
                if (r < 0) {
                        fail("%s: only %" PRIu64 " of %u connections were closed at the target %s", what,
                             TSTAT(&b->target, TROLE_HELLO, closed) - closed0, n,
                             r == -ETIMEDOUT ? "within 60 s of closing the tunnels" : "before it died");
                        return r;
                }
                if (TSTAT(&b->target, TROLE_HELLO, failed) != failed0) {
                        fail("%s: the hello target saw %" PRIu64 " failed connections", what,
                             TSTAT(&b->target, TROLE_HELLO, failed) - failed0);
                        return -EIO;
                }
                if (mem) {
                        /* The figure: one second after the last tunnel closed (the target saw it). */
                        sleep_usec(USEC_PER_SEC);
                        r = proc_mem(arg_server_pid, &after1s[0]);
                        if (r >= 0)
                                r = proc_mem(arg_agent_pid, &after1s[1]);
                        if (r < 0) {
                                fail("cannot read the daemons' /proc/PID/status (did one exit?): %s", strerror(-r));
                                return r;
                        }
                        r = daemons_mem_settled(closed);
                        if (r < 0)
                                return r;
                }

                row_add(row(b, SCENARIO_IDLE_TUNNELS, name, "tunnels opened per second", "1/s", 0,
                            TARGET_NONE, 0),
                        tr, (double) n / ((double) (t1 > t0 ? t1 - t0 : 1) / 1e6));
                if (!mem)
                        continue;
                for (unsigned i = 0; i < 2; i++) {
                        /* From 5 000 on, what a daemon costs once (its tables, the agent connection) adds little
                         * per tunnel; the per-tunnel targets are for 10 000 (IDLE_TARGET_MIN_TUNNELS). */
                        TargetKind target = n >= IDLE_TARGET_MIN_TUNNELS ? TARGET_KONN_MAX : TARGET_NONE;
                        char metric[48];

                        (void) snprintf(metric, sizeof(metric), "%s VmRSS per tunnel", daemon_name[i]);
                        row_add(row(b, SCENARIO_IDLE_TUNNELS, name, metric, "B", 0, target,
                                    per_tunnel_target[i]),
                                tr, ((double) open[i].vmrss_kib - (double) idle[i].vmrss_kib) * 1024 / n);
                        (void) snprintf(metric, sizeof(metric), "%s RssAnon per tunnel", daemon_name[i]);
                        row_add(row(b, SCENARIO_IDLE_TUNNELS, name, metric, "B", 0, target,
                                    per_tunnel_target[i]),
                                tr,
                                ((double) open[i].rssanon_kib - (double) idle[i].rssanon_kib) * 1024 / n);
                        (void) snprintf(metric, sizeof(metric), "%s VmRSS 1 s after close - idle",
                                        daemon_name[i]);
                        row_add(row(b, SCENARIO_IDLE_TUNNELS, name, metric, "KiB", 0, TARGET_KONN_MAX, 1024),
                                tr, (double) after1s[i].vmrss_kib - (double) idle[i].vmrss_kib);
                        (void) snprintf(metric, sizeof(metric), "%s VmRSS settled after close - idle",
                                        daemon_name[i]);
                        row_add(row(b, SCENARIO_IDLE_TUNNELS, name, metric, "KiB", 0, TARGET_NONE, 0),
                                tr, (double) closed[i].vmrss_kib - (double) idle[i].vmrss_kib);
                        (void) snprintf(metric, sizeof(metric), "%s RssAnon settled after close - idle",
                                        daemon_name[i]);
                        row_add(row(b, SCENARIO_IDLE_TUNNELS, name, metric, "KiB", 0, TARGET_NONE, 0),
                                tr, (double) closed[i].rssanon_kib - (double) idle[i].rssanon_kib);
                }
        }
        return 0;
}
