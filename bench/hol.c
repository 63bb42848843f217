/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "bench.h"

/* ---------------------------------------------------------------------------------------------- */
/* hol: tunnel A's download alone, and while tunnel B's reader is stopped. */


static int send_header(int fd, uint64_t size, uint64_t seed, uint64_t deadline) {
        uint64_t hdr[2] = { htole64(size), htole64(seed) };

        return write_all(fd, (const uint8_t *) hdr, HDR_SIZE, deadline, NULL);
}

static int hol_measure(Bench *b, const char *what, const char *uds, bool with_b, uint64_t seed,
                       HolResult *ret) {
        uint64_t deadline = now_usec() + (uint64_t) arg_timeout_sec * USEC_PER_SEC;
        uint64_t flood_closed0 = TSTAT(&b->target, TROLE_FLOOD, closed);
        uint64_t stall_closed0 = TSTAT(&b->target, TROLE_STALL, closed);
        uint64_t t0, t, last, limit = (uint64_t) arg_hol_seconds * USEC_PER_SEC;
        _cleanup_close_ int fd_a = -EBADF, fd_b = -EBADF;
        struct timeval tv = {
                .tv_usec = 100 * 1000,
        };
        HolResult res = {};
        Gen g;
        int r;

        /* A first, so that its CONNECT completes before anything is stalled. */
        r = connect_to(uds, b->target.port[TROLE_FLOOD], deadline, &fd_a);
        if (r < 0) {
                fail("%s: failed to open tunnel A: %s", what, strerror(-r));
                return r;
        }

        if (with_b) {
                uint64_t out0 = TSTAT(&b->target, TROLE_STALL, bytes_out), prev = out0, since, start;

                r = connect_to(uds, b->target.port[TROLE_STALL], deadline, &fd_b);
                if (r >= 0)
                        r = send_header(fd_b, 0, seed ^ UINT64_C(0xb), deadline);
                if (r < 0) {
                        fail("%s: failed to open tunnel B: %s", what, strerror(-r));
                        return r;
                }
                /* B's target sends until every buffer on the way is full. */
                start = since = now_usec();
                for (;;) {
                        uint64_t cur;

                        sleep_usec(50 * USEC_PER_MSEC);
                        cur = TSTAT(&b->target, TROLE_STALL, bytes_out);
                        t = now_usec();
                        if (cur != prev) {
                                prev = cur;
                                since = t;
                        } else if (cur > out0 && t - since >= HOL_STABLE_USEC) {
                                res.b_stable = true;
                                break;
                        }
                        if (t - start >= HOL_FILL_MAX_USEC)
                                break;
                }
                res.b_bytes = prev - out0;
        }

        gen_init(&g, seed);
        r = send_header(fd_a, 0, seed, deadline);
        if (r >= 0 && setsockopt(fd_a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
                r = negative_errno();
        if (r < 0) {
                fail("%s: failed to start tunnel A: %s", what, strerror(-r));
                return r;
        }
        t0 = last = now_usec();
        for (;;) {
                ssize_t k;

                t = now_usec();
                if (t - last >= MIN(HOL_STALL_USEC, limit)) {
                        res.stalled = true;
                        break;
                }
                if (t - t0 >= limit)
                        break;
                k = recv(fd_a, b->buf, arg_buffer_size, 0);
                if (k < 0) {
                        if (IN_SET(errno, EAGAIN, EINTR))
                                continue;
                        r = negative_errno();
                        fail("%s: tunnel A failed after %" PRIu64 " bytes: %s", what, res.bytes,
                             strerror(-r));
                        return r;
                }
                if (k == 0) {
                        fail("%s: tunnel A closed after %" PRIu64 " bytes", what, res.bytes);
                        return -ECONNRESET;
                }
                if (!gen_verify(&g, b->buf, (size_t) k, b->scratch, SCRATCH_SIZE)) {
                        fail("%s: tunnel A received wrong data after %" PRIu64 " good bytes", what,
                             res.bytes);
                        return -EBADMSG;
                }
                res.bytes += (uint64_t) k;
                last = now_usec();
        }
        res.mib_s = res.stalled ? 0 : mib_per_s(res.bytes, (double) (t - t0) / 1e6);

        fd_a = safe_close(fd_a);
        fd_b = safe_close(fd_b);
        r = target_wait_closed(&b->target, TROLE_FLOOD, flood_closed0 + 1, 10 * USEC_PER_SEC);
        if (r >= 0 && with_b)
                r = target_wait_closed(&b->target, TROLE_STALL, stall_closed0 + 1, 10 * USEC_PER_SEC);
        if (r < 0) {
                fail("%s: the target did not see tunnels A and B close within 10 s", what);
                return r;
        }
        *ret = res;
        return 0;
}

int run_hol(Bench *b, unsigned run) {
        const struct {
                const char *label;
                const char *name;
        } modes[] = {
                { "direct", NULL },
                { arg_konn_classic ? "classic" : "konn-to-konn",
                  arg_konn_classic ? "hol classic" : "hol konn-to-konn" },
                { "classic", "hol classic" },
        };
        HolResult alone[ELEMENTSOF(modes)] = {}, with_b[ELEMENTSOF(modes)] = {};
        bool done[ELEMENTSOF(modes)] = {};
        char stall_metric[48];
        Row *rw;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(modes); i++) {
                const char *uds = i == 0 ? NULL : i == 1 ? arg_konn_uds : arg_classic_uds;
                uint64_t seed = UINT64_C(0x686f6c2d41000000) + run * 16 + i * 2;
                char what[64];

                if (i > 0 && !uds)
                        continue;
                (void) snprintf(what, sizeof(what), "hol via %s, A alone", modes[i].label);
                r = hol_measure(b, what, uds, false, seed, &alone[i]);
                if (r < 0)
                        return r;
                (void) snprintf(what, sizeof(what), "hol via %s, B stalled", modes[i].label);
                r = hol_measure(b, what, uds, true, seed + 1, &with_b[i]);
                if (r < 0)
                        return r;
                done[i] = true;
        }

        (void) snprintf(
                stall_metric, sizeof(stall_metric), "runs where A made no progress for %u s",
                (unsigned) (MIN(HOL_STALL_USEC, (uint64_t) arg_hol_seconds * USEC_PER_SEC) / USEC_PER_SEC));
        for (size_t i = 1; i < ELEMENTSOF(modes); i++) {
                const char *name = modes[i].name;
                bool k2k = i == 1 && !arg_konn_classic;

                if (!done[i])
                        continue;
                for (size_t j = 0; j < 2; j++) {
                        size_t src = j == 0 ? 0 : i;
                        Transport tr = j == 0 ? TRANSPORT_DIRECT : TRANSPORT_KONN;

                        if (!done[src])
                                continue;
                        row_add(row(b, SCENARIO_HOL, name, "A alone", "MiB/s", 1, TARGET_NONE, 0), tr,
                                alone[src].mib_s);
                        row_add(row(b, SCENARIO_HOL, name, "A while B stalled", "MiB/s", 1, TARGET_NONE, 0),
                                tr, with_b[src].mib_s);
                        rw = row(b, SCENARIO_HOL, name, "A while B stalled / A alone", "", 3,
                                 k2k ? TARGET_KONN_MIN : TARGET_NONE, 0.9);
                        if (rw)
                                rw->no_ratio = true;
                        row_add(rw, tr, alone[src].mib_s > 0 ? with_b[src].mib_s / alone[src].mib_s : 0);
                        rw = row(b, SCENARIO_HOL, name, "B's target sent before B stalled", "MiB", 1,
                                 TARGET_NONE, 0);
                        if (rw)
                                rw->no_ratio = true;
                        row_add(rw, tr, (double) with_b[src].b_bytes / MIB_F);
                        rw = row(b, SCENARIO_HOL, name, stall_metric, "", 0, TARGET_NONE, 0);
                        if (rw)
                                rw->sum = true;
                        row_add(rw, tr, with_b[src].stalled ? 1 : 0);
                        rw = row(b, SCENARIO_HOL, name, "runs where B never stopped", "", 0, TARGET_NONE, 0);
                        if (rw)
                                rw->sum = true;
                        row_add(rw, tr, with_b[src].b_stable ? 0 : 1);
                }
        }
        return 0;
}
