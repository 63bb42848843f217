/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "bench.h"

/* ---------------------------------------------------------------------------------------------- */
/* upload, download, echo: one tunnel, the thread targets. */


static void *echo_writer_thread(void *userdata) {
        EchoWriter *w = userdata;

        w->error = stream_send(&w->s, w->seed);
        if (w->error < 0)
                (void) shutdown(w->s.fd, SHUT_RDWR); /* wake the reader */
        return NULL;
}

/* Runs one bulk scenario once. Logs the reason of any failure, and returns it. */
static int run_bulk_one(Bench *b, Scenario sc, Transport tr, uint64_t seed, Measurement *ret) {
        Listener *l = &b->listeners[scenario_role[sc]];
        const char *what_sc = scenario_name[sc], *what_tr = transport_name[tr];
        _cleanup_close_ int fd = -EBADF;
        uint64_t expected, deadline, t_setup, t0, t1 = 0;
        TargetResult res = {};
        Measurement m = {};
        CpuMark cpu;
        double cpu_s[2];
        Stream s;
        Digest d;
        Job job;
        double bench0;
        int r;

        expected = stream_digest(seed, arg_size, b->buf, arg_buffer_size);

        deadline = now_usec() + (uint64_t) arg_timeout_sec * USEC_PER_SEC;
        job = (Job) {
                .generation = ++b->generation,
                .size = arg_size,
                .seed = seed,
                .deadline = deadline,
        };
        target_post_job(l, &job);

        r = cpu_mark(tr, &cpu);
        if (r < 0)
                return r;
        bench0 = client_target_cpu_s(b);

        t_setup = now_usec();
        r = connect_to(tr == TRANSPORT_KONN ? arg_konn_uds : NULL, l->port, deadline, &fd);
        if (r < 0) {
                fail("%s via %s: failed to open the connection to the %s: %s", what_sc, what_tr,
                     role_name[l->role], strerror(-r));
                return r;
        }
        t0 = now_usec();
        m.setup_ms = (double) (t0 - t_setup) / 1e3;

        s = (Stream) {
                .fd = fd,
                .size = arg_size,
                .deadline = deadline,
                .buf = b->buf,
                .bufsize = arg_buffer_size,
        };
        digest_init(&d);

        switch (sc) {
        case SCENARIO_UPLOAD:
                r = stream_send(&s, seed);
                if (r < 0)
                        fail("%s via %s: send failed after %" PRIu64 " of %" PRIu64 " bytes: %s", what_sc,
                             what_tr, s.done, s.size, strerror(-r));
                break;

        case SCENARIO_DOWNLOAD: {
                const uint8_t go = 'G';

                r = write_all(fd, &go, 1, deadline, NULL);
                if (r < 0) {
                        fail("%s via %s: failed to send the start byte: %s", what_sc, what_tr, strerror(-r));
                        break;
                }
                r = stream_recv(&s, &d, -EBADF);
                t1 = now_usec();
                if (r < 0)
                        fail("%s via %s: receive failed after %" PRIu64 " of %" PRIu64 " bytes: %s", what_sc,
                             what_tr, s.done, s.size, strerror(-r));
                break;
        }

        case SCENARIO_ECHO: {
                EchoWriter w = {
                        .s = s,
                        .seed = seed,
                };
                pthread_t thread;

                w.s.buf = b->wbuf;
                r = -pthread_create(&thread, NULL, echo_writer_thread, &w);
                if (r < 0) {
                        fail("%s via %s: failed to start the writer thread: %s", what_sc, what_tr,
                             strerror(-r));
                        break;
                }
                r = stream_recv(&s, &d, -EBADF);
                t1 = now_usec();
                if (r < 0)
                        (void) shutdown(fd, SHUT_RDWR); /* wake the writer */
                (void) pthread_join(thread, NULL);
                if (w.error < 0) {
                        fail("%s via %s: send failed after %" PRIu64 " of %" PRIu64 " bytes: %s", what_sc,
                             what_tr, w.s.done, w.s.size, strerror(-w.error));
                        r = w.error;
                } else if (r < 0)
                        fail("%s via %s: receive failed after %" PRIu64 " of %" PRIu64 " bytes: %s", what_sc,
                             what_tr, s.done, s.size, strerror(-r));
                break;
        }

        default:
                abort();
        }

        if (r >= 0) {
                /* The target closes after its N bytes; nothing more may arrive. */
                r = expect_eof(fd, deadline);
                if (r == -EPROTO)
                        fail("%s via %s: received more than the %" PRIu64 " bytes expected", what_sc,
                             what_tr, arg_size);
                else if (r < 0)
                        fail("%s via %s: waiting for the close after the last byte failed: %s", what_sc,
                             what_tr, strerror(-r));
        }
        if (r < 0) {
                /* Say what the target side saw, if it has finished. */
                if (target_wait(l, job.generation, now_usec(), &res) >= 0 && res.error < 0)
                        fail("%s via %s: the %s saw %" PRIu64 " bytes and failed: %s", what_sc, what_tr,
                             role_name[l->role], res.bytes, strerror(-res.error));
                return r;
        }

        r = target_wait(l, job.generation, deadline, &res);
        if (r < 0) {
                fail("%s via %s: the %s did not finish in time", what_sc, what_tr, role_name[l->role]);
                return r;
        }
        if (res.error < 0) {
                fail("%s via %s: the %s failed after %" PRIu64 " of %" PRIu64 " bytes: %s", what_sc, what_tr,
                     role_name[l->role], res.bytes, arg_size, strerror(-res.error));
                return res.error;
        }
        if (res.bytes != arg_size) {
                fail("%s via %s: the %s handled %" PRIu64 " bytes, expected %" PRIu64, what_sc, what_tr,
                     role_name[l->role], res.bytes, arg_size);
                return -EBADMSG;
        }

        /* Checksums: the receiver(s) must have seen exactly the generated stream. */
        if (IN_SET(sc, SCENARIO_UPLOAD, SCENARIO_ECHO) && res.digest != expected) {
                fail("%s via %s: checksum mismatch at the %s: got %016" PRIx64 ", sent %016" PRIx64, what_sc,
                     what_tr, role_name[l->role], res.digest, expected);
                return -EBADMSG;
        }
        if (IN_SET(sc, SCENARIO_DOWNLOAD, SCENARIO_ECHO) && digest_final(&d) != expected) {
                fail("%s via %s: checksum mismatch at the client: got %016" PRIx64 ", sent %016" PRIx64,
                     what_sc, what_tr, digest_final(&d), expected);
                return -EBADMSG;
        }

        if (sc == SCENARIO_UPLOAD)
                t1 = res.done_usec;
        m.seconds = (double) (t1 > t0 ? t1 - t0 : 1) / 1e6;
        m.size = arg_size;
        m.carried = sc == SCENARIO_ECHO ? 2 * arg_size : arg_size;
        m.bench_cpu_s = client_target_cpu_s(b) - bench0;

        r = cpu_since(b, &cpu, cpu_s);
        if (r < 0)
                return r;
        if (r > 0) {
                m.daemon_cpu_valid = true;
                m.server_cpu_s = cpu_s[0];
                m.agent_cpu_s = cpu_s[1];
        }

        m.done = true;
        *ret = m;
        return 0;
}

/* Throughput row, and for konn the daemons' CPU per GiB carried. */
/* Throughput and, through konn, CPU per GiB carried against the physical floor measured in the same run:
 * floor = 2 x (client + target CPU per GiB of the direct run: the two socket copies each daemon must make too)
 *       + 2 x (1 / AES-GCM bytes per second of one core: one encryption and one decryption per byte).
 * efficiency = floor / (server + agent CPU per GiB). */
void record_transfer(Bench *b, Scenario sc, const char *name, const char *metric, bool efficiency_target,
                            Transport tr, const Measurement *m) {
        double gib = (double) m->carried / GIB;

        row_add(row(b, sc, name, metric, "MiB/s", 1, TARGET_NONE, 0), tr, mib_per_s(m->size, m->seconds));
        if (tr == TRANSPORT_DIRECT && gib > 0)
                b->direct_cpu_per_gib[sc] = m->bench_cpu_s / gib;
        if (tr != TRANSPORT_KONN || !m->daemon_cpu_valid)
                return;
        double cpu = (m->server_cpu_s + m->agent_cpu_s) / gib;
        row_add(row(b, sc, name, "CPU server+agent per GiB", "s", 3, TARGET_NONE, 0), tr, cpu);
        if (b->aes_gcm_bps > 0 && b->direct_cpu_per_gib[sc] > 0 && cpu > 0) {
                double floor = 2 * b->direct_cpu_per_gib[sc] + 2 * GIB / b->aes_gcm_bps;

                row_add(row(b, sc, name, "floor CPU per GiB (same run)", "s", 3, TARGET_NONE, 0), tr, floor);
                row_add(row(b, sc, name, "efficiency = floor / CPU per GiB", "", 3,
                            efficiency_target ? TARGET_KONN_MIN : TARGET_NONE, 0.8),
                        tr, floor / cpu);
        }
        row_add(row(b, sc, name, "CPU server per GiB", "s", 3, TARGET_NONE, 0), tr, m->server_cpu_s / gib);
        row_add(row(b, sc, name, "CPU agent per GiB", "s", 3, TARGET_NONE, 0), tr, m->agent_cpu_s / gib);
}

int run_bulk(Bench *b, Scenario sc, unsigned run) {
        int r;

        for (Transport tr = 0; tr < _TRANSPORT_MAX; tr++) {
                /* A fixed seed per scenario, transport and run: reproducible, and different in every run. */
                uint64_t seed = UINT64_C(0x6b6f6e6e2d62656e) + (sc * _TRANSPORT_MAX + tr) * RUNS_MAX + run;
                Measurement m;

                if (tr == TRANSPORT_KONN && !arg_konn_uds)
                        continue;
                r = run_bulk_one(b, sc, tr, seed, &m);
                if (r < 0)
                        return r;
                record_transfer(b, sc, scenario_name[sc],
                                sc == SCENARIO_ECHO ? "throughput per direction" : "throughput", sc != SCENARIO_ECHO,
                                tr, &m);
        }
        return 0;
}
