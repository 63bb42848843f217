/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for memtrim: a trim runs MEMTRIM_DELAY_USEC after the daemon became idle, only if it still is idle then,
 * at most once per MEMTRIM_INTERVAL_USEC, and scheduling again while one is pending changes nothing.
 */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <time.h>

#include "memtrim.h"

static bool idle_now;

static bool is_idle(void *userdata) {
        return *(bool *) userdata;
}

static uint64_t mono_usec(void) {
        struct timespec ts;

        ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

/* Run the loop until n trims happened or `limit_usec` passed; returns when the n-th trim was seen (0 if never). */
static uint64_t run_until_trims(sd_event *e, MemTrim *t, unsigned n, uint64_t limit_usec) {
        uint64_t start = mono_usec();

        for (unsigned i = 0; i < 10000 && mono_usec() - start < limit_usec; i++) {
                ck_assert_int_ge(sd_event_run(e, 20 * 1000), 0);
                if (t->n_trims >= n)
                        return mono_usec();
        }
        return 0;
}

START_TEST(test_trim_after_delay_when_idle) {
        sd_event *e = NULL;
        MemTrim t;
        uint64_t start, done;

        ck_assert_int_eq(sd_event_new(&e), 0);
        idle_now = true;
        memtrim_init(&t, e, is_idle, &idle_now);
        start = mono_usec();
        memtrim_schedule(&t);
        memtrim_schedule(&t); /* pending already: no second timer, no earlier trim */
        ck_assert_uint_eq(t.n_trims, 0);
        done = run_until_trims(e, &t, 1, 2 * 1000 * 1000);
        ck_assert_uint_gt(done, 0);
        ck_assert_uint_eq(t.n_trims, 1);
        ck_assert_uint_ge(done - start, MEMTRIM_DELAY_USEC);
        ck_assert_uint_lt(done - start, MEMTRIM_INTERVAL_USEC);

        /* Idle again at once: the next trim waits for the interval since the last one. */
        memtrim_schedule(&t);
        ck_assert_uint_gt(run_until_trims(e, &t, 2, 2 * 1000 * 1000), 0);
        ck_assert_uint_eq(t.n_trims, 2);
        ck_assert_uint_ge(mono_usec() - done, MEMTRIM_INTERVAL_USEC - 20 * 1000);
        memtrim_done(&t);
        sd_event_unref(e);
}
END_TEST

START_TEST(test_no_trim_when_busy_again) {
        sd_event *e = NULL;
        MemTrim t;

        ck_assert_int_eq(sd_event_new(&e), 0);
        idle_now = true;
        memtrim_init(&t, e, is_idle, &idle_now);
        memtrim_schedule(&t);
        idle_now = false; /* a tunnel opened before the timer fired */
        ck_assert_uint_eq(run_until_trims(e, &t, 1, MEMTRIM_DELAY_USEC + 300 * 1000), 0);
        ck_assert_uint_eq(t.n_trims, 0);
        /* Idle once more: trimmed then. */
        idle_now = true;
        memtrim_schedule(&t);
        ck_assert_uint_gt(run_until_trims(e, &t, 1, 2 * 1000 * 1000), 0);
        memtrim_done(&t);
        memtrim_done(&t); /* idempotent */
        sd_event_unref(e);
}
END_TEST

int main(void) {
        Suite *s = suite_create("memtrim");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_set_timeout(tc, 20);
        tcase_add_test(tc, test_trim_after_delay_when_idle);
        tcase_add_test(tc, test_no_trim_when_busy_again);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
