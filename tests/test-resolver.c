/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <inttypes.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "resolver.h"

/* Every wait in this file is bounded; lookups here only touch /etc/hosts or a DNS server that
 * answers (or fails) fast. On a machine whose resolv.conf points at a black hole, the NXDOMAIN test
 * takes up to RES_TIMEOUT × attempts (glibc default 5 s × 2) and then reports EAI_AGAIN. */
#define WAIT_USEC (20 * USEC_PER_SEC)

static uint64_t now_usec(void) {
        struct timespec ts;

        ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* Run the loop until pred() holds; -ETIMEDOUT after timeout_usec. */
static int run_until(sd_event *e, bool (*pred)(void *), void *data, uint64_t timeout_usec) {
        uint64_t deadline = now_usec() + timeout_usec;

        while (!pred(data)) {
                int r;

                if (now_usec() >= deadline)
                        return -ETIMEDOUT;
                r = sd_event_run(e, 10 * USEC_PER_MSEC);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Run the loop for a while, whatever happens (to show that nothing does). */
static void run_for(sd_event *e, uint64_t usec) {
        uint64_t deadline = now_usec() + usec;

        while (now_usec() < deadline)
                ck_assert_int_ge(sd_event_run(e, 10 * USEC_PER_MSEC), 0);
}

static unsigned thread_count(void) {
        DIR *d = opendir("/proc/self/task");
        struct dirent *de;
        unsigned n = 0;

        ck_assert_ptr_nonnull(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

/* glibc's lookup threads idle for 1 s before they exit; notify threads are short-lived. Once only
 * this thread is left, every query glibc held has been through query_notify(). */
static void wait_glibc_threads_gone(void) {
        uint64_t deadline = now_usec() + WAIT_USEC;

        while (thread_count() > 1) {
                ck_assert_msg(now_usec() < deadline, "glibc threads still running");
                (void) usleep(10 * 1000);
        }
}

typedef struct Result {
        unsigned calls;
        ResolveQuery *q;
        int error;
        char reason[64];
        bool had_ai;
        unsigned n_ai;
        unsigned n_v4_loopback;
        unsigned n_v6_loopback;
        unsigned n_other;
        bool bad_port;
        bool bad_socktype;
        uint32_t scope;
} Result;

static void record_cb(ResolveQuery *q, int error, const char *reason, const struct addrinfo *ai,
                      void *userdata) {
        Result *res = userdata;

        res->calls++;
        res->q = q;
        res->error = error;
        (void) snprintf(res->reason, sizeof(res->reason), "%s", reason ?: "(null)");
        res->had_ai = ai;

        for (; ai; ai = ai->ai_next) {
                res->n_ai++;
                if (ai->ai_socktype != SOCK_STREAM)
                        res->bad_socktype = true;
                if (ai->ai_family == AF_INET) {
                        const struct sockaddr_in *in = (const struct sockaddr_in *) ai->ai_addr;

                        ck_assert_int_eq(ai->ai_addrlen, sizeof(struct sockaddr_in));
                        if (in->sin_addr.s_addr == htonl(INADDR_LOOPBACK))
                                res->n_v4_loopback++;
                        else
                                res->n_other++;
                        if (ntohs(in->sin_port) != 8080)
                                res->bad_port = true;
                } else if (ai->ai_family == AF_INET6) {
                        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) ai->ai_addr;

                        ck_assert_int_eq(ai->ai_addrlen, sizeof(struct sockaddr_in6));
                        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
                                res->n_v6_loopback++;
                        else
                                res->n_other++;
                        res->scope = in6->sin6_scope_id;
                        if (ntohs(in6->sin6_port) != 8080)
                                res->bad_port = true;
                } else
                        res->n_other++;
        }
}

static bool called_once(void *userdata) {
        return ((Result *) userdata)->calls >= 1;
}

static bool nothing_inflight(void *userdata) {
        return resolver_inflight(userdata) == 0;
}

static sd_event *new_event(void) {
        sd_event *e = NULL;

        ck_assert_int_eq(sd_event_new(&e), 0);
        return e;
}

START_TEST(test_resolve_localhost) {
        _cleanup_(sd_event_unrefp) sd_event *e = new_event();
        _cleanup_(resolver_freep) Resolver *r = NULL;
        ResolveQuery *q = NULL;
        Result res = {};

        ck_assert_int_eq(resolver_new(e, 8, &r), 0);
        ck_assert_uint_eq(resolver_inflight(r), 0);

        ck_assert_int_eq(resolver_resolve(r, "localhost", 8080, record_cb, &res, &q), 0);
        ck_assert_ptr_nonnull(q);
        ck_assert_uint_eq(res.calls, 0); /* never from inside resolver_resolve() */
        ck_assert_uint_eq(resolver_inflight(r), 1);

        ck_assert_int_eq(run_until(e, called_once, &res, WAIT_USEC), 0);
        ck_assert_uint_eq(res.calls, 1);
        ck_assert_ptr_eq(res.q, q);
        ck_assert_int_eq(res.error, 0);
        ck_assert_str_eq(res.reason, "(null)");
        ck_assert(res.had_ai);
        /* 127.0.0.1 and/or ::1, depending on /etc/hosts; nothing else, all for port 8080/tcp. */
        ck_assert_uint_ge(res.n_v4_loopback + res.n_v6_loopback, 1);
        ck_assert_uint_eq(res.n_other, 0);
        ck_assert(!res.bad_port);
        ck_assert(!res.bad_socktype);
        ck_assert_uint_eq(resolver_inflight(r), 0);

        /* Nothing more arrives. */
        run_for(e, 100 * USEC_PER_MSEC);
        ck_assert_uint_eq(res.calls, 1);
}
END_TEST

START_TEST(test_resolve_numeric_short_circuit) {
        _cleanup_(sd_event_unrefp) sd_event *e = new_event();
        _cleanup_(resolver_freep) Resolver *r = NULL;
        Result v4 = {}, v6 = {}, scoped = {};
        unsigned lo = if_nametoindex("lo"), threads_before;

        ck_assert_uint_ne(lo, 0);
        ck_assert_int_eq(resolver_new(e, 8, &r), 0);

        threads_before = thread_count();
        ck_assert_int_eq(resolver_resolve(r, "127.0.0.1", 8080, record_cb, &v4, NULL), 0);
        ck_assert_int_eq(resolver_resolve(r, "::1", 8080, record_cb, &v6, NULL), 0);
        ck_assert_int_eq(resolver_resolve(r, "fe80::1%lo", 8080, record_cb, &scoped, NULL), 0);
        ck_assert_uint_eq(resolver_inflight(r), 3);
        ck_assert_uint_eq(v4.calls + v6.calls + scoped.calls, 0);

        /* One loop iteration delivers them all: no thread, no waiting. */
        ck_assert_int_eq(sd_event_run(e, 0), 1);
        ck_assert_uint_le(thread_count(), threads_before);

        ck_assert_uint_eq(v4.calls, 1);
        ck_assert_int_eq(v4.error, 0);
        ck_assert_uint_eq(v4.n_ai, 1);
        ck_assert_uint_eq(v4.n_v4_loopback, 1);
        ck_assert(!v4.bad_port);

        ck_assert_uint_eq(v6.calls, 1);
        ck_assert_int_eq(v6.error, 0);
        ck_assert_uint_eq(v6.n_ai, 1);
        ck_assert_uint_eq(v6.n_v6_loopback, 1);
        ck_assert(!v6.bad_port);

        ck_assert_uint_eq(scoped.calls, 1);
        ck_assert_int_eq(scoped.error, 0);
        ck_assert_uint_eq(scoped.n_ai, 1);
        ck_assert_uint_eq(scoped.n_other, 1);
        ck_assert_uint_eq(scoped.scope, lo);

        ck_assert_uint_eq(resolver_inflight(r), 0);
}
END_TEST

START_TEST(test_resolve_nxdomain) {
        _cleanup_(sd_event_unrefp) sd_event *e = new_event();
        _cleanup_(resolver_freep) Resolver *r = NULL;
        Result res = {};
        uint64_t start;

        ck_assert_int_eq(resolver_new(e, 8, &r), 0);

        start = now_usec();
        ck_assert_int_eq(resolver_resolve(r, "nonexistent.invalid", 8080, record_cb, &res, NULL), 0);
        ck_assert_int_eq(run_until(e, called_once, &res, WAIT_USEC), 0);
        ck_assert_uint_eq(res.calls, 1);
        ck_assert_int_eq(res.error, -ENXIO);
        ck_assert_str_eq(res.reason, "no such host");
        ck_assert(!res.had_ai);
        ck_assert_uint_eq(resolver_inflight(r), 0);

        /* .invalid must fail fast; see WAIT_USEC for machines where it cannot. */
        ck_assert_msg(now_usec() - start < 5 * USEC_PER_SEC, "NXDOMAIN took %" PRIu64 " ms",
                      (now_usec() - start) / USEC_PER_MSEC);
}
END_TEST

START_TEST(test_cancel_before_completion) {
        _cleanup_(sd_event_unrefp) sd_event *e = new_event();
        _cleanup_(resolver_freep) Resolver *r = NULL;
        ResolveQuery *q = NULL, *n = NULL;
        Result res = {}, numeric = {};

        ck_assert_int_eq(resolver_new(e, 8, &r), 0);

        ck_assert_int_eq(resolver_resolve(r, "localhost", 8080, record_cb, &res, &q), 0);
        ck_assert_int_eq(resolver_resolve(r, "127.0.0.1", 8080, record_cb, &numeric, &n), 0);
        ck_assert_uint_eq(resolver_inflight(r), 2);

        ck_assert_ptr_null(resolve_query_cancel(q));
        /* The numeric one is finished already: cancelling frees its slot at once. A name keeps its
         * slot until glibc is done with it. */
        ck_assert_ptr_null(resolve_query_cancel(n));
        ck_assert_uint_le(resolver_inflight(r), 1);
        ck_assert_ptr_null(resolve_query_cancel(NULL));

        ck_assert_int_eq(run_until(e, nothing_inflight, r, WAIT_USEC), 0);
        run_for(e, 200 * USEC_PER_MSEC);
        ck_assert_uint_eq(res.calls, 0);
        ck_assert_uint_eq(numeric.calls, 0);
}
END_TEST

START_TEST(test_cancel_many_orphans) {
        _cleanup_(sd_event_unrefp) sd_event *e = new_event();
        _cleanup_(resolver_freep) Resolver *r = NULL;
        ResolveQuery *q[48];
        Result res = {};

        /* Enough parallel lookups that some are surely still running (orphaned) when cancelled,
         * and some queued behind glibc's 20 threads. */
        ck_assert_int_eq(resolver_new(e, ELEMENTSOF(q), &r), 0);
        for (size_t i = 0; i < ELEMENTSOF(q); i++)
                ck_assert_int_eq(resolver_resolve(r, i % 2 ? "localhost" : "nonexistent.invalid", 8080,
                                                  record_cb, &res, &q[i]),
                                 0);
        ck_assert_uint_eq(resolver_inflight(r), ELEMENTSOF(q));
        ck_assert_int_eq(resolver_resolve(r, "localhost", 8080, record_cb, &res, NULL), -EBUSY);

        for (size_t i = 0; i < ELEMENTSOF(q); i++)
                ck_assert_ptr_null(resolve_query_cancel(q[i]));

        ck_assert_int_eq(run_until(e, nothing_inflight, r, WAIT_USEC), 0);
        run_for(e, 100 * USEC_PER_MSEC);
        ck_assert_uint_eq(res.calls, 0);

        /* All slots are free again. */
        for (size_t i = 0; i < ELEMENTSOF(q); i++)
                ck_assert_int_eq(resolver_resolve(r, "127.0.0.1", 8080, record_cb, &res, NULL), 0);
        ck_assert_int_eq(run_until(e, nothing_inflight, r, WAIT_USEC), 0);
        ck_assert_uint_eq(res.calls, ELEMENTSOF(q));

        r = resolver_free(r);
        wait_glibc_threads_gone();
}
END_TEST

START_TEST(test_busy) {
        _cleanup_(sd_event_unrefp) sd_event *e = new_event();
        _cleanup_(resolver_freep) Resolver *r = NULL;
        Result a = {}, b = {}, c = {};
        ResolveQuery *q = (ResolveQuery *) 0x1;

        ck_assert_int_eq(resolver_new(e, 2, &r), 0);
        ck_assert_int_eq(resolver_resolve(r, "localhost", 8080, record_cb, &a, NULL), 0);
        ck_assert_int_eq(resolver_resolve(r, "127.0.0.1", 8080, record_cb, &b, NULL), 0);
        ck_assert_uint_eq(resolver_inflight(r), 2);

        ck_assert_int_eq(resolver_resolve(r, "localhost", 8080, record_cb, &c, &q), -EBUSY);
        ck_assert_ptr_eq(q, (ResolveQuery *) 0x1); /* untouched on failure */
        ck_assert_int_eq(resolver_resolve(r, "127.0.0.1", 8080, record_cb, &c, NULL), -EBUSY);
        ck_assert_str_eq(resolve_error_to_string(-EBUSY), "resolver busy");
        ck_assert_uint_eq(resolver_inflight(r), 2);

        ck_assert_int_eq(run_until(e, nothing_inflight, r, WAIT_USEC), 0);
        ck_assert_uint_eq(a.calls, 1);
        ck_assert_uint_eq(b.calls, 1);
        ck_assert_uint_eq(c.calls, 0);

        ck_assert_int_eq(resolver_resolve(r, "localhost", 8080, record_cb, &c, NULL), 0);
        ck_assert_int_eq(run_until(e, called_once, &c, WAIT_USEC), 0);
        ck_assert_int_eq(c.error, 0);
        ck_assert_uint_eq(resolver_inflight(r), 0);
}
END_TEST

START_TEST(test_free_with_queries_in_flight) {
        _cleanup_(sd_event_unrefp) sd_event *e = new_event();
        Resolver *r = NULL;
        Result res = {};

        ck_assert_int_eq(resolver_new(e, 32, &r), 0);
        for (unsigned i = 0; i < 8; i++) {
                ck_assert_int_eq(resolver_resolve(r, "localhost", 8080, record_cb, &res, NULL), 0);
                ck_assert_int_eq(resolver_resolve(r, "nonexistent.invalid", 8080, record_cb, &res, NULL), 0);
                ck_assert_int_eq(resolver_resolve(r, "::1", 8080, record_cb, &res, NULL), 0);
        }
        ck_assert_uint_eq(resolver_inflight(r), 24);

        ck_assert_ptr_null(resolver_free(r));

        /* The loop keeps working without the resolver's source, and no callback ever comes. */
        run_for(e, 200 * USEC_PER_MSEC);
        ck_assert_uint_eq(res.calls, 0);

        /* glibc finishes on its own; query_notify() frees what it held (valgrind checks the rest). */
        wait_glibc_threads_gone();
        ck_assert_uint_eq(res.calls, 0);
}
END_TEST

START_TEST(test_free_after_glibc_finished) {
        _cleanup_(sd_event_unrefp) sd_event *e = new_event();
        Resolver *r = NULL;
        Result res = {};

        /* Results collected by glibc but never dispatched by the loop. */
        ck_assert_int_eq(resolver_new(e, 4, &r), 0);
        ck_assert_int_eq(resolver_resolve(r, "localhost", 8080, record_cb, &res, NULL), 0);
        ck_assert_int_eq(resolver_resolve(r, "127.0.0.1", 8080, record_cb, &res, NULL), 0);
        wait_glibc_threads_gone();
        ck_assert_ptr_null(resolver_free(r));
        ck_assert_uint_eq(res.calls, 0);
        ck_assert_ptr_null(resolver_free(NULL));
}
END_TEST

typedef struct Reentrant {
        ResolveQuery *a, *b, *c;
        Resolver *r;
        unsigned calls_a, calls_b, calls_c;
} Reentrant;

static void reentrant_c_cb(ResolveQuery *q, int error, const char *reason, const struct addrinfo *ai,
                           void *userdata) {
        Reentrant *t = userdata;

        t->calls_c++;
        ck_assert_ptr_eq(q, t->c);
        ck_assert_int_eq(error, 0);
        /* Cancelling the query being delivered is a no-op. */
        ck_assert_ptr_null(resolve_query_cancel(q));
}

static void reentrant_cb(ResolveQuery *q, int error, const char *reason, const struct addrinfo *ai,
                         void *userdata) {
        Reentrant *t = userdata;

        ck_assert_int_eq(error, 0);
        if (q == t->a) {
                t->calls_a++;
                ck_assert_ptr_null(resolve_query_cancel(t->b));
        } else {
                ck_assert_ptr_eq(q, t->b);
                t->calls_b++;
                ck_assert_ptr_null(resolve_query_cancel(t->a));
        }

        /* A new query from inside a callback, delivered later. */
        ck_assert_int_eq(resolver_resolve(t->r, "::1", 1, reentrant_c_cb, t, &t->c), 0);
        ck_assert_uint_eq(t->calls_c, 0);
}

static bool reentrant_done(void *userdata) {
        Reentrant *t = userdata;

        return t->calls_c > 0 && resolver_inflight(t->r) == 0;
}

START_TEST(test_callback_reentrancy) {
        _cleanup_(sd_event_unrefp) sd_event *e = new_event();
        _cleanup_(resolver_freep) Resolver *r = NULL;
        Reentrant t = {};

        ck_assert_int_eq(resolver_new(e, 4, &r), 0);
        t.r = r;

        /* Both finished before the loop looks: they are delivered in the same dispatch, so the
         * first callback cancels a query that is done but not yet delivered. */
        ck_assert_int_eq(resolver_resolve(r, "localhost", 1, reentrant_cb, &t, &t.a), 0);
        ck_assert_int_eq(resolver_resolve(r, "127.0.0.1", 1, reentrant_cb, &t, &t.b), 0);
        wait_glibc_threads_gone();

        ck_assert_int_eq(run_until(e, reentrant_done, &t, WAIT_USEC), 0);
        ck_assert_uint_eq(t.calls_a + t.calls_b, 1);
        ck_assert_uint_eq(t.calls_c, 1);

        /* Again with the name still pending when the numeric one is delivered. */
        t = (Reentrant) { .r = r };
        ck_assert_int_eq(resolver_resolve(r, "localhost", 1, reentrant_cb, &t, &t.a), 0);
        ck_assert_int_eq(resolver_resolve(r, "127.0.0.1", 1, reentrant_cb, &t, &t.b), 0);
        ck_assert_int_eq(run_until(e, reentrant_done, &t, WAIT_USEC), 0);
        ck_assert_uint_eq(t.calls_a + t.calls_b, 1);
        ck_assert_uint_eq(t.calls_c, 1);
}
END_TEST

START_TEST(test_invalid_arguments) {
        _cleanup_(sd_event_unrefp) sd_event *e = new_event();
        _cleanup_(resolver_freep) Resolver *r = NULL;
        Resolver *sentinel = (Resolver *) 0x1;
        char name[RESOLVER_HOST_MAX + 2];
        Result res = {};

        ck_assert_int_eq(resolver_new(NULL, 1, &sentinel), -EINVAL);
        ck_assert_int_eq(resolver_new(e, 0, &sentinel), -EINVAL);
        ck_assert_ptr_eq(sentinel, (Resolver *) 0x1);
        ck_assert_int_eq(resolver_new(e, 1, NULL), -EINVAL);
        ck_assert_int_eq(resolver_new(e, 1, &r), 0);

        ck_assert_int_eq(resolver_resolve(NULL, "localhost", 1, record_cb, &res, NULL), -EINVAL);
        ck_assert_int_eq(resolver_resolve(r, NULL, 1, record_cb, &res, NULL), -EINVAL);
        ck_assert_int_eq(resolver_resolve(r, "localhost", 1, NULL, &res, NULL), -EINVAL);
        ck_assert_int_eq(resolver_resolve(r, "", 1, record_cb, &res, NULL), -EINVAL);
        memset(name, 'a', sizeof(name) - 1);
        name[sizeof(name) - 1] = '\0';
        ck_assert_int_eq(resolver_resolve(r, name, 1, record_cb, &res, NULL), -EINVAL);
        ck_assert_uint_eq(resolver_inflight(r), 0);
        ck_assert_uint_eq(resolver_inflight(NULL), 0);

        ck_assert_str_eq(resolve_error_to_string(-EINVAL), "no such host");
        ck_assert_str_eq(resolve_error_to_string(-ENXIO), "no such host");
        ck_assert_str_eq(resolve_error_to_string(-EBADMSG), "server misbehaving");
        ck_assert_str_eq(resolve_error_to_string(-EAGAIN), "temporary failure in name resolution");
        ck_assert_str_eq(resolve_error_to_string(-ENOMEM), "cannot allocate memory");
        ck_assert_str_eq(resolve_error_to_string(-EIO), "server misbehaving");
}
END_TEST

/* Leave no glibc thread behind: with CK_FORK=no under valgrind, a lookup thread still alive at exit
 * shows up as a leak of its TLS and its resolv.conf copy. */
static void teardown(void) {
        wait_glibc_threads_gone();
}

static Suite *resolver_suite(void) {
        Suite *s = suite_create("resolver");
        TCase *tc;

        tc = tcase_create("resolve");
        tcase_set_timeout(tc, 60);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_resolve_localhost);
        tcase_add_test(tc, test_resolve_numeric_short_circuit);
        tcase_add_test(tc, test_resolve_nxdomain);
        tcase_add_test(tc, test_invalid_arguments);
        suite_add_tcase(s, tc);

        tc = tcase_create("lifetime");
        tcase_set_timeout(tc, 60);
        tcase_add_checked_fixture(tc, NULL, teardown);
        tcase_add_test(tc, test_cancel_before_completion);
        tcase_add_test(tc, test_cancel_many_orphans);
        tcase_add_test(tc, test_busy);
        tcase_add_test(tc, test_free_with_queries_in_flight);
        tcase_add_test(tc, test_free_after_glibc_finished);
        tcase_add_test(tc, test_callback_reentrancy);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        SRunner *sr = srunner_create(resolver_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
