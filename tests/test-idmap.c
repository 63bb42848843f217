/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "idmap.h"
#include "macro.h"

/* Check records every passing ck_assert*(), which makes hot loops very slow under valgrind. In
 * loops, compare first and only hand failures to Check (which then reports both values). */
#define FAST_ASSERT(type, check, op, X, Y)                    \
        do {                                                  \
                type _x = (type) (X);                         \
                type _y = (type) (Y);                         \
                if (!(_x op _y))                              \
                        check(_x, _y);                        \
        } while (0)

/* Out-of-memory injection: this binary must be linked with
 * -Wl,--wrap=malloc -Wl,--wrap=realloc -Wl,--wrap=calloc, so that every allocation made by the
 * module under test goes through the wrappers below. fail_at = N fails the N-th allocation from
 * now on (0 = the next one), once; -1 never fails. fail_always fails every allocation. */
void *__real_malloc(size_t size);
void *__real_realloc(void *p, size_t size);
void *__real_calloc(size_t n, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_realloc(void *p, size_t size);
void *__wrap_calloc(size_t n, size_t size);

/* volatile: the compiler assumes malloc() leaves globals alone. */
static volatile int fail_at = -1;
static volatile bool fail_always;
static volatile unsigned n_wrapped;

/* Disarm before any ck_assert*(): Check itself allocates when recording a passed assertion. */
static bool fail_now(void) {
        n_wrapped++;
        if (fail_always)
                return true;
        if (fail_at < 0)
                return false;
        if (fail_at-- == 0)
                return true;
        return false;
}

void *__wrap_malloc(size_t size) {
        return fail_now() ? NULL : __real_malloc(size);
}

void *__wrap_realloc(void *p, size_t size) {
        return fail_now() ? NULL : __real_realloc(p, size);
}

void *__wrap_calloc(size_t n, size_t size) {
        return fail_now() ? NULL : __real_calloc(n, size);
}

static void assert_wrapped(void) {
        void *volatile p;
        unsigned before = n_wrapped;

        p = malloc(16);
        free(p);
        ck_assert_msg(n_wrapped == before + 1, "test-idmap must be linked with -Wl,--wrap=malloc,...");
}

static void *val(int64_t k) {
        /* Encode the key into a pointer-sized non-NULL value. */
        return (void *) (uintptr_t) (((uint64_t) k << 1) | 1);
}

static int64_t spread_key(uint64_t i) {
        /* Keys all over the int64 range, including negatives. */
        return (int64_t) (i * UINT64_C(0x9e3779b97f4a7c15));
}

START_TEST(test_basic) {
        _cleanup_(idmap_freep) IdMap *m = idmap_new();
        int x = 1, y = 2, z = 3;

        ck_assert_ptr_nonnull(m);
        ck_assert_uint_eq(idmap_size(m), 0);
        ck_assert_uint_eq(idmap_capacity(m), 8);
        ck_assert_ptr_null(idmap_get(m, 1));
        ck_assert_ptr_null(idmap_remove(m, 1));

        ck_assert_int_eq(idmap_put(m, 1, &x), 0);
        ck_assert_int_eq(idmap_put(m, 2, &y), 0);
        ck_assert_uint_eq(idmap_size(m), 2);
        ck_assert_ptr_eq(idmap_get(m, 1), &x);
        ck_assert_ptr_eq(idmap_get(m, 2), &y);
        ck_assert_ptr_null(idmap_get(m, 3));

        ck_assert_int_eq(idmap_put(m, 1, &z), -EEXIST);
        ck_assert_ptr_eq(idmap_get(m, 1), &x);
        ck_assert_uint_eq(idmap_size(m), 2);

        ck_assert_int_eq(idmap_put(m, 3, NULL), -EINVAL);
        ck_assert_uint_eq(idmap_size(m), 2);

        ck_assert_ptr_eq(idmap_remove(m, 1), &x);
        ck_assert_ptr_null(idmap_get(m, 1));
        ck_assert_ptr_null(idmap_remove(m, 1));
        ck_assert_uint_eq(idmap_size(m), 1);
        ck_assert_ptr_eq(idmap_get(m, 2), &y);

        /* Re-adding a removed key works. */
        ck_assert_int_eq(idmap_put(m, 1, &z), 0);
        ck_assert_ptr_eq(idmap_get(m, 1), &z);
        ck_assert_uint_eq(idmap_size(m), 2);
}
END_TEST

START_TEST(test_null_map) {
        size_t state = 0;

        ck_assert_ptr_null(idmap_free(NULL));
        ck_assert_ptr_null(idmap_get(NULL, 5));
        ck_assert_ptr_null(idmap_remove(NULL, 5));
        ck_assert_ptr_null(idmap_steal_first(NULL));
        ck_assert_uint_eq(idmap_size(NULL), 0);
        ck_assert(!idmap_iterate(NULL, &state, NULL, NULL));
}
END_TEST

START_TEST(test_special_keys) {
        static const int64_t keys[] = { 0, -1, 1, INT64_MIN, INT64_MAX, INT64_MIN + 1, INT64_MAX - 1,
                                        (int64_t) 1 << 32, -((int64_t) 1 << 32) };
        _cleanup_(idmap_freep) IdMap *m = idmap_new();

        ck_assert_ptr_nonnull(m);
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                ck_assert_int_eq(idmap_put(m, keys[i], val((int64_t) i)), 0);
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                ck_assert_int_eq(idmap_put(m, keys[i], val(99)), -EEXIST);
        ck_assert_uint_eq(idmap_size(m), ELEMENTSOF(keys));
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                ck_assert_ptr_eq(idmap_get(m, keys[i]), val((int64_t) i));
        ck_assert_ptr_null(idmap_get(m, 2));
        ck_assert_ptr_null(idmap_get(m, -2));

        ck_assert_ptr_eq(idmap_remove(m, INT64_MIN), val(3));
        ck_assert_ptr_null(idmap_get(m, INT64_MIN));
        ck_assert_ptr_eq(idmap_remove(m, 0), val(0));
        ck_assert_ptr_null(idmap_get(m, 0));
        ck_assert_ptr_eq(idmap_get(m, -1), val(1));
        ck_assert_ptr_eq(idmap_get(m, INT64_MAX), val(4));
        ck_assert_uint_eq(idmap_size(m), ELEMENTSOF(keys) - 2);
}
END_TEST

START_TEST(test_growth) {
        _cleanup_(idmap_freep) IdMap *m = idmap_new();

        ck_assert_ptr_nonnull(m);
        /* Load stays at most 3/4: 6 entries fit in 8 slots, the 7th doubles the table. */
        for (int64_t k = 0; k < 6; k++)
                ck_assert_int_eq(idmap_put(m, k, val(k)), 0);
        ck_assert_uint_eq(idmap_capacity(m), 8);
        ck_assert_int_eq(idmap_put(m, 6, val(6)), 0);
        ck_assert_uint_eq(idmap_capacity(m), 16);
        for (int64_t k = 7; k < 12; k++)
                ck_assert_int_eq(idmap_put(m, k, val(k)), 0);
        ck_assert_uint_eq(idmap_capacity(m), 16);
        ck_assert_int_eq(idmap_put(m, 12, val(12)), 0);
        ck_assert_uint_eq(idmap_capacity(m), 32);
        for (int64_t k = 0; k < 13; k++)
                ck_assert_ptr_eq(idmap_get(m, k), val(k));

        /* Shrinks below load 1/8: 32 slots → 16 at 3 entries, → 8 at 1 entry, never below 8. */
        for (int64_t k = 12; k >= 4; k--)
                ck_assert_ptr_eq(idmap_remove(m, k), val(k));
        ck_assert_uint_eq(idmap_capacity(m), 32);
        ck_assert_ptr_eq(idmap_remove(m, 3), val(3));
        ck_assert_uint_eq(idmap_capacity(m), 16);
        ck_assert_ptr_eq(idmap_remove(m, 2), val(2));
        ck_assert_uint_eq(idmap_capacity(m), 16);
        ck_assert_ptr_eq(idmap_remove(m, 1), val(1));
        ck_assert_uint_eq(idmap_capacity(m), 8);
        ck_assert_ptr_eq(idmap_get(m, 0), val(0));
        ck_assert_ptr_eq(idmap_remove(m, 0), val(0));
        ck_assert_uint_eq(idmap_capacity(m), 8);
        ck_assert_uint_eq(idmap_size(m), 0);
}
END_TEST

static void check_iterate_all(IdMap *m, int64_t n) {
        _cleanup_free_ unsigned char *seen = calloc((size_t) n, 1);
        size_t state = 0, count = 0;
        int64_t k;
        void *v;

        ck_assert_ptr_nonnull(seen);
        while (idmap_iterate(m, &state, &k, &v)) {
                FAST_ASSERT(intmax_t, ck_assert_int_ge, >=, k, 0);
                FAST_ASSERT(intmax_t, ck_assert_int_lt, <, k, n);
                FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, v, val(k));
                FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, seen[k], 0);
                seen[k] = 1;
                count++;
        }
        FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, count, idmap_size(m));
        /* Done stays done. */
        ck_assert(!idmap_iterate(m, &state, &k, &v));
}

START_TEST(test_iterate) {
        _cleanup_(idmap_freep) IdMap *m = idmap_new();
        size_t state = 0;
        int64_t k = 42;
        void *v = val(42);

        ck_assert_ptr_nonnull(m);
        ck_assert(!idmap_iterate(m, &state, &k, &v));
        ck_assert_int_eq(k, 42); /* untouched when nothing is returned */
        ck_assert_ptr_eq(v, val(42));

        for (int64_t i = 0; i < 1000; i++)
                ck_assert_int_eq(idmap_put(m, i, val(i)), 0);
        check_iterate_all(m, 1000);

        /* Output parameters are optional. */
        state = 0;
        for (size_t i = 0; i < 1000; i++)
                ck_assert(idmap_iterate(m, &state, NULL, NULL));
        ck_assert(!idmap_iterate(m, &state, NULL, NULL));
}
END_TEST

static void iterate_remove(int64_t n, int64_t modulus) {
        _cleanup_(idmap_freep) IdMap *m = idmap_new();
        _cleanup_free_ unsigned char *seen = calloc((size_t) n, 1);
        size_t state = 0, count = 0;
        int64_t k;
        void *v;

        ck_assert_ptr_nonnull(m);
        ck_assert_ptr_nonnull(seen);
        for (int64_t i = 0; i < n; i++)
                FAST_ASSERT(intmax_t, ck_assert_int_eq, ==, idmap_put(m, i, val(i)), 0);

        while (idmap_iterate(m, &state, &k, &v)) {
                FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, v, val(k));
                FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, seen[k], 0);
                seen[k] = 1;
                count++;
                if (k % modulus == 0)
                        FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_remove(m, k), val(k));
        }
        FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, count, (size_t) n);

        for (int64_t i = 0; i < n; i++)
                if (i % modulus == 0)
                        FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, i), NULL);
                else
                        FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, i), val(i));
        FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, idmap_size(m), (size_t) (n - (n + modulus - 1) / modulus));
        check_iterate_all(m, n);
}

START_TEST(test_iterate_remove_some) {
        iterate_remove(1000, 3);
        iterate_remove(1000, 2);
}
END_TEST

START_TEST(test_iterate_remove_all) {
        /* Removing everything shrinks the table many times during the walk. */
        iterate_remove(100000, 1);
}
END_TEST

START_TEST(test_iterate_steal) {
        _cleanup_(idmap_freep) IdMap *m = idmap_new();
        _cleanup_free_ unsigned char *seen = calloc(500, 1);
        size_t state = 0, count = 0;
        int64_t k;

        ck_assert_ptr_nonnull(m);
        for (int64_t i = 0; i < 500; i++)
                ck_assert_int_eq(idmap_put(m, i, val(i)), 0);
        /* Steal inside the walk: every entry is still visited at most once, and every entry is either
         * visited or stolen. */
        while (idmap_iterate(m, &state, &k, NULL)) {
                void *v;

                ck_assert_uint_eq(seen[k], 0);
                seen[k] = 1;
                count++;
                v = idmap_steal_first(m);
                ck_assert_ptr_nonnull(v);
                ck_assert_ptr_null(idmap_get(m, (int64_t) ((uintptr_t) v >> 1)));
        }
        ck_assert_uint_eq(count, 500);
        ck_assert_uint_eq(idmap_size(m), 0);
}
END_TEST

START_TEST(test_steal_first) {
        _cleanup_(idmap_freep) IdMap *m = idmap_new();
        _cleanup_free_ unsigned char *seen = calloc(1000, 1);
        size_t before, count = 0;
        void *v;

        ck_assert_ptr_nonnull(m);
        ck_assert_ptr_nonnull(seen);
        ck_assert_ptr_null(idmap_steal_first(m));
        before = idmap_allocated(m);

        for (int64_t i = 0; i < 1000; i++)
                ck_assert_int_eq(idmap_put(m, i - 500, val(i)), 0);
        while ((v = idmap_steal_first(m))) {
                uint64_t i = (uintptr_t) v >> 1;

                ck_assert_uint_lt(i, 1000);
                ck_assert_uint_eq(seen[i], 0);
                seen[i] = 1;
                ck_assert_ptr_null(idmap_get(m, (int64_t) i - 500));
                count++;
                ck_assert_uint_eq(idmap_size(m), 1000 - count);
        }
        ck_assert_uint_eq(count, 1000);
        ck_assert_uint_eq(idmap_size(m), 0);
        ck_assert_uint_eq(idmap_capacity(m), 8);
        ck_assert_uint_eq(idmap_allocated(m), before);
}
END_TEST

START_TEST(test_many) {
        _cleanup_(idmap_freep) IdMap *m = idmap_new();
        size_t empty;

        ck_assert_ptr_nonnull(m);
        empty = idmap_allocated(m);

        for (uint64_t i = 0; i < 100000; i++)
                FAST_ASSERT(intmax_t, ck_assert_int_eq, ==, idmap_put(m, spread_key(i), val((int64_t) i)), 0);
        FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, idmap_size(m), 100000);
        FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, idmap_capacity(m), 262144);
        /* ≤ 32 bytes per entry. */
        FAST_ASSERT(uintmax_t, ck_assert_uint_le, <=, idmap_allocated(m), 32 * 100000);

        for (uint64_t i = 0; i < 100000; i++)
                FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, spread_key(i)), val((int64_t) i));
        for (uint64_t i = 100000; i < 110000; i++)
                FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, spread_key(i)), NULL);
        FAST_ASSERT(intmax_t, ck_assert_int_eq, ==, idmap_put(m, spread_key(777), val(1)), -EEXIST);

        /* Remove all but 10: the table halves whenever the load drops below 1/8 (at 15 entries:
         * 128 → 64 slots). The entry array follows. */
        for (uint64_t i = 10; i < 100000; i++)
                FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_remove(m, spread_key(i)), val((int64_t) i));
        FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, idmap_size(m), 10);
        FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, idmap_capacity(m), 64);
        FAST_ASSERT(uintmax_t, ck_assert_uint_le, <=, idmap_allocated(m), empty + 64 * 4 + 20 * 16);
        for (uint64_t i = 0; i < 10; i++)
                FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, spread_key(i)), val((int64_t) i));

        for (uint64_t i = 0; i < 10; i++)
                FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_remove(m, spread_key(i)), val((int64_t) i));
        FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, idmap_capacity(m), 8);
        FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, idmap_allocated(m), empty);
}
END_TEST

START_TEST(test_many_clustered) {
        /* Keys that defeat weak hashes: sequential, and multiples of 2^32 and 2^48. */
        static const int shifts[] = { 0, 32, 48 };

        for (size_t s = 0; s < ELEMENTSOF(shifts); s++) {
                _cleanup_(idmap_freep) IdMap *m = idmap_new();

                ck_assert_ptr_nonnull(m);
                for (int64_t i = 0; i < 50000; i++)
                        FAST_ASSERT(intmax_t, ck_assert_int_eq, ==, idmap_put(m, (int64_t) ((uint64_t) i << shifts[s]), val(i)), 0);
                for (int64_t i = 0; i < 50000; i++)
                        FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, (int64_t) ((uint64_t) i << shifts[s])), val(i));
                for (int64_t i = 0; i < 50000; i += 2)
                        FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_remove(m, (int64_t) ((uint64_t) i << shifts[s])), val(i));
                for (int64_t i = 0; i < 50000; i++)
                        if (i % 2)
                                FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, (int64_t) ((uint64_t) i << shifts[s])), val(i));
                        else
                                FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, (int64_t) ((uint64_t) i << shifts[s])), NULL);
        }
}
END_TEST

START_TEST(test_random_model) {
        /* Random operations on a small key range against a plain array model: exercises probe runs,
         * backward shifts across the table end, and every grow/shrink path. */
        enum { RANGE = 600 };
        _cleanup_(idmap_freep) IdMap *m = idmap_new();
        void *model[RANGE] = {};
        size_t model_size = 0;
        uint64_t rng = 12345;

        ck_assert_ptr_nonnull(m);
        for (unsigned op = 0; op < 300000; op++) {
                int64_t k;
                unsigned what;

                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                k = (int64_t) (rng % RANGE) - RANGE / 2;
                /* Phases biased towards inserting or removing, so the map grows and shrinks. */
                what = (unsigned) (rng >> 32) % 100;
                if ((op / 20000) % 2 == 0 ? what < 65 : what < 30) {
                        int r = idmap_put(m, k, val(op));

                        if (model[k + RANGE / 2]) {
                                FAST_ASSERT(intmax_t, ck_assert_int_eq, ==, r, -EEXIST);
                        } else {
                                FAST_ASSERT(intmax_t, ck_assert_int_eq, ==, r, 0);
                                model[k + RANGE / 2] = val(op);
                                model_size++;
                        }
                } else if (what < 80) {
                        void *v = idmap_remove(m, k);

                        FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, v, model[k + RANGE / 2]);
                        if (v) {
                                model[k + RANGE / 2] = NULL;
                                model_size--;
                        }
                } else
                        FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, k), model[k + RANGE / 2]);

                FAST_ASSERT(uintmax_t, ck_assert_uint_eq, ==, idmap_size(m), model_size);
                FAST_ASSERT(uintmax_t, ck_assert_uint_ge, >=, idmap_capacity(m) * 3, model_size * 4);

                if (op % 5000 == 0) {
                        for (int64_t j = 0; j < RANGE; j++)
                                FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, j - RANGE / 2), model[j]);
                }
        }
}
END_TEST

START_TEST(test_oom_new) {
        assert_wrapped();

        /* idmap_new() makes exactly two allocations; failing either yields NULL (valgrind: no leak). */
        for (int n = 0; n < 2; n++) {
                IdMap *m;

                fail_at = n;
                m = idmap_new();
                fail_at = -1;
                ck_assert_ptr_null(m);
        }
        fail_at = 2;
        {
                _cleanup_(idmap_freep) IdMap *m = idmap_new();
                int left = fail_at;

                fail_at = -1;
                ck_assert_ptr_nonnull(m);
                ck_assert_int_eq(left, 0); /* exactly two allocations were made */
        }
}
END_TEST

START_TEST(test_oom_put) {
        _cleanup_(idmap_freep) IdMap *m = NULL;
        unsigned max_allocs = 0, failures = 0;

        assert_wrapped();
        m = idmap_new();
        ck_assert_ptr_nonnull(m);

        /* For every insert, fail its 1st, 2nd, ... allocation in turn until it succeeds. Every failure
         * must be -ENOMEM and leave the map exactly as it was. */
        for (int64_t k = 0; k < 3000; k++) {
                for (int n = 0;; n++) {
                        int r, left;

                        fail_at = n;
                        r = idmap_put(m, k, val(k));
                        left = fail_at;
                        fail_at = -1;

                        if (r == 0) {
                                ck_assert_int_ge(left, 0); /* made fewer than n + 1 allocations */
                                max_allocs = MAX(max_allocs, (unsigned) n);
                                break;
                        }
                        ck_assert_int_eq(r, -ENOMEM);
                        ck_assert_int_eq(left, -1);
                        ck_assert_uint_eq(idmap_size(m), (size_t) k);
                        ck_assert_ptr_null(idmap_get(m, k));
                        failures++;
                }
                for (int64_t j = 0; j <= k; j += 97)
                        FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, j), val(j));
        }
        /* Some inserts grow both arrays at once (e.g. the 7th). */
        ck_assert_uint_eq(max_allocs, 2);
        ck_assert_uint_gt(failures, 30);
        ck_assert_uint_eq(idmap_size(m), 3000);
        check_iterate_all(m, 3000);
}
END_TEST

START_TEST(test_oom_remove) {
        _cleanup_(idmap_freep) IdMap *m = idmap_new();

        assert_wrapped();
        ck_assert_ptr_nonnull(m);
        for (int64_t k = 0; k < 5000; k++)
                ck_assert_int_eq(idmap_put(m, k, val(k)), 0);

        /* With every allocation failing, removal still works; the map just keeps its memory. */
        for (int64_t k = 0; k < 5000; k++) {
                void *v;

                fail_always = true;
                v = idmap_remove(m, k);
                fail_always = false;
                ck_assert_ptr_eq(v, val(k));
                for (int64_t j = k + 1; j < 5000; j += 499)
                        FAST_ASSERT(const void *, ck_assert_ptr_eq, ==, idmap_get(m, j), val(j));
        }
        /* Nothing could be reallocated, but the empty entry array was freed. */
        ck_assert_uint_eq(idmap_capacity(m), 8192);
        ck_assert_uint_eq(idmap_size(m), 0);
        ck_assert_ptr_null(idmap_get(m, 0));

        /* It recovers once memory is back. */
        ck_assert_int_eq(idmap_put(m, 1, val(1)), 0);
        ck_assert_ptr_eq(idmap_remove(m, 1), val(1));
        ck_assert_uint_eq(idmap_capacity(m), 8);
}
END_TEST

static Suite *idmap_suite(void) {
        Suite *s = suite_create("idmap");
        TCase *tc;

        tc = tcase_create("api");
        tcase_add_test(tc, test_basic);
        tcase_add_test(tc, test_null_map);
        tcase_add_test(tc, test_special_keys);
        tcase_add_test(tc, test_growth);
        tcase_add_test(tc, test_iterate);
        tcase_add_test(tc, test_iterate_remove_some);
        tcase_add_test(tc, test_iterate_steal);
        tcase_add_test(tc, test_steal_first);
        suite_add_tcase(s, tc);

        tc = tcase_create("scale");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_iterate_remove_all);
        tcase_add_test(tc, test_many);
        tcase_add_test(tc, test_many_clustered);
        tcase_add_test(tc, test_random_model);
        suite_add_tcase(s, tc);

        tc = tcase_create("oom");
        tcase_add_test(tc, test_oom_new);
        tcase_add_test(tc, test_oom_put);
        tcase_add_test(tc, test_oom_remove);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        SRunner *sr = srunner_create(idmap_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
