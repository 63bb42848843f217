/* SPDX-License-Identifier: Apache-2.0 */
/* log: the per-peer rate limiting of repeated lines (a fake clock and a capturing sink). */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "log.h"
#include "macro.h"

static uint64_t fake_now;
static unsigned n_lines;
static int last_level;
static char last_message[512], last_suppressed[32], last_ratelimited[8];

static uint64_t fake_clock(void) {
        return fake_now;
}

static void sink(int level, const char *message, const LogField *fields, void *userdata) {
        n_lines++;
        last_level = level;
        (void) snprintf(last_message, sizeof(last_message), "%s", message);
        last_suppressed[0] = last_ratelimited[0] = '\0';
        for (const LogField *f = fields; f && f->key; f++) {
                if (streq(f->key, "KONN_SUPPRESSED"))
                        (void) snprintf(last_suppressed, sizeof(last_suppressed), "%s", f->value);
                if (streq(f->key, "KONN_RATELIMITED"))
                        (void) snprintf(last_ratelimited, sizeof(last_ratelimited), "%s", f->value);
        }
}

static void setup(void) {
        fake_now = 1000 * USEC_PER_SEC;
        n_lines = 0;
        log_set_sink(sink, NULL);
        log_set_max_level(LOG_INFO);
        log_ratelimit_set_clock(fake_clock);
}

static void teardown(void) {
        log_set_sink(NULL, NULL);
        log_ratelimit_set_clock(NULL);
}

static void fail_from(const char *peer) {
        log_peer_warning(peer, "Connection from %s failed", peer ?: "?");
}

START_TEST(test_one_line_with_a_count) {
        for (unsigned i = 0; i < 1000; i++)
                fail_from("10.0.0.1:4711");
        ck_assert_uint_eq(n_lines, 1);
        ck_assert_str_eq(last_message, "Connection from 10.0.0.1:4711 failed");
        ck_assert_str_eq(last_suppressed, "");
        ck_assert_int_eq(last_level, LOG_WARNING);

        /* Still inside the window: nothing. */
        fake_now += LOG_RATELIMIT_INTERVAL_USEC - 1;
        fail_from("10.0.0.1:4712");
        ck_assert_uint_eq(n_lines, 1);

        /* The next window: one line carrying the count (999 + 1 left out). */
        fake_now += 1;
        fail_from("10.0.0.1:4713");
        ck_assert_uint_eq(n_lines, 2);
        ck_assert_str_eq(last_message, "Connection from 10.0.0.1:4713 failed (1000 similar messages suppressed)");
        ck_assert_str_eq(last_suppressed, "1000");

        /* A quiet window later: no count. */
        fake_now += 3 * LOG_RATELIMIT_INTERVAL_USEC;
        fail_from("10.0.0.1:1");
        ck_assert_uint_eq(n_lines, 3);
        ck_assert_str_eq(last_message, "Connection from 10.0.0.1:1 failed");
}
END_TEST

START_TEST(test_per_peer_and_call_site) {
        fail_from("10.0.0.1:1");
        fail_from("10.0.0.2:1");
        fail_from("[::1]:1");
        fail_from("[::1]:2");
        fail_from("::1");
        fail_from(NULL);
        fail_from(NULL);
        ck_assert_uint_eq(n_lines, 5);
        /* Another call site with the same peer is another key. */
        log_peer_warning("10.0.0.1:9", "Something else about %s", "10.0.0.1");
        ck_assert_uint_eq(n_lines, 6);
}
END_TEST

START_TEST(test_debug_keeps_the_repeats) {
        log_set_max_level(LOG_DEBUG);
        fail_from("10.0.0.1:1");
        ck_assert_int_eq(last_level, LOG_WARNING);
        ck_assert_str_eq(last_ratelimited, "");
        fail_from("10.0.0.1:2");
        ck_assert_uint_eq(n_lines, 2);
        ck_assert_int_eq(last_level, LOG_DEBUG);
        ck_assert_str_eq(last_ratelimited, "1");
        ck_assert_str_eq(last_message, "Connection from 10.0.0.1:2 failed");
}
END_TEST

START_TEST(test_below_level_costs_nothing) {
        log_set_max_level(LOG_ERR);
        fail_from("10.0.0.1:1");
        ck_assert_uint_eq(n_lines, 0);
        /* Nothing was recorded: the first line at a level that shows is not a repeat. */
        log_set_max_level(LOG_INFO);
        fail_from("10.0.0.1:1");
        ck_assert_uint_eq(n_lines, 1);
        ck_assert_str_eq(last_suppressed, "");
}
END_TEST

static Suite *log_suite(void) {
        Suite *s = suite_create("log");
        TCase *tc = tcase_create("ratelimit");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_one_line_with_a_count);
        tcase_add_test(tc, test_per_peer_and_call_site);
        tcase_add_test(tc, test_debug_keeps_the_repeats);
        tcase_add_test(tc, test_below_level_costs_nothing);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(log_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
