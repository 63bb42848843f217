/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "addrlist.h"
#include "macro.h"

static int parse_named(const char *s, bool paths, NamedAddr **l, char **err) {
        *l = NULL;
        *err = NULL;
        return named_addr_list_parse(s, paths, l, err);
}

START_TEST(test_named_valid) {
        NamedAddr *l;
        char *err;
        int n;

        n = parse_named(" api=127.0.0.1:6443 , sock=/run/konn/api.sock,v6=[::1]:443,abs=@konn,dns=kube.local:6443", true,
                        &l, &err);
        ck_assert_int_eq(n, 5);
        ck_assert_ptr_null(err);
        ck_assert_str_eq(l[0].name, "api");
        ck_assert_str_eq(l[0].address, "127.0.0.1:6443");
        ck_assert(!l[0].is_path);
        ck_assert_str_eq(l[1].address, "/run/konn/api.sock");
        ck_assert(l[1].is_path);
        ck_assert_str_eq(l[2].address, "[::1]:443");
        ck_assert(l[3].is_path);
        ck_assert_str_eq(named_addr_list_find(l, (size_t) n, "dns")->address, "kube.local:6443");
        ck_assert_ptr_null(named_addr_list_find(l, (size_t) n, "nope"));
        named_addr_list_free(l, (size_t) n);

        ck_assert_int_eq(parse_named(NULL, true, &l, &err), 0);
        ck_assert_ptr_null(l);
        ck_assert_int_eq(parse_named(" , ,", false, &l, &err), 0);
}
END_TEST

static void expect_error(const char *s, bool paths, const char *want) {
        NamedAddr *l;
        char *err;

        ck_assert_int_eq(parse_named(s, paths, &l, &err), -EINVAL);
        ck_assert_ptr_nonnull(err);
        ck_assert_str_eq(err, want);
        free(err);
}

START_TEST(test_named_errors) {
        expect_error("api", true, "'api' is not NAME=ADDRESS");
        expect_error("=1.2.3.4:5", true, "'=1.2.3.4:5' is not NAME=ADDRESS");
        expect_error("api=", true, "'api=' is not NAME=ADDRESS");
        expect_error("a/b=1.2.3.4:5", true, "name 'a/b' may contain only letters, digits, '_', '-' and '.'");
        expect_error("a=1.2.3.4:5,a=1.2.3.4:6", true, "name 'a' appears twice");
        expect_error("a=/run/x.sock", false, "a: '/run/x.sock' must be HOST:PORT");
        expect_error("a=1.2.3.4", true, "a: '1.2.3.4' is not HOST:PORT or a socket path: missing port in address");
        expect_error("a=1.2.3.4:0", false, "a: '1.2.3.4:0' needs a port 1..65535");
        expect_error("a=:80", false, "a: ':80' is not HOST:PORT");
}
END_TEST

static bool contains(const Cidr *l, int n, const char *ip) {
        SockAddr a = {};

        if (strchr(ip, ':')) {
                a.in6.sin6_family = AF_INET6;
                ck_assert_int_eq(inet_pton(AF_INET6, ip, &a.in6.sin6_addr), 1);
        } else {
                a.in.sin_family = AF_INET;
                ck_assert_int_eq(inet_pton(AF_INET, ip, &a.in.sin_addr), 1);
        }
        return cidr_list_contains(l, (size_t) n, &a);
}

START_TEST(test_cidr) {
        Cidr *l = NULL;
        char *err = NULL;
        int n;

        n = cidr_list_parse("10.0.0.0/8, 192.168.1.128/25,fd00::/8,2001:db8::1,172.16.5.4", &l, &err);
        ck_assert_int_eq(n, 5);
        ck_assert(contains(l, n, "10.255.1.2"));
        ck_assert(!contains(l, n, "11.0.0.1"));
        ck_assert(contains(l, n, "192.168.1.200"));
        ck_assert(!contains(l, n, "192.168.1.127"));
        ck_assert(contains(l, n, "fd12:3456::1"));
        ck_assert(!contains(l, n, "fe80::1"));
        ck_assert(contains(l, n, "2001:db8::1"));
        ck_assert(!contains(l, n, "2001:db8::2"));
        ck_assert(contains(l, n, "172.16.5.4"));
        ck_assert(contains(l, n, "::ffff:10.1.2.3")); /* IPv4-mapped counts as IPv4 */
        free(l);

        n = cidr_list_parse("0.0.0.0/0", &l, &err);
        ck_assert_int_eq(n, 1);
        ck_assert(contains(l, n, "203.0.113.9"));
        ck_assert(!contains(l, n, "::1"));
        free(l);
        n = cidr_list_parse("::/0,127.0.0.1/32", &l, &err);
        ck_assert_int_eq(n, 2);
        ck_assert(contains(l, n, "::1"));
        ck_assert(contains(l, n, "127.0.0.1"));
        ck_assert(!contains(l, n, "127.0.0.2"));
        free(l);

        ck_assert_int_eq(cidr_list_parse("10.0.0.1/8", &l, &err), -EINVAL);
        ck_assert_str_eq(err, "'10.0.0.1/8' has host bits set below the /8 prefix");
        ck_assert_int_eq(cidr_list_parse("10.0.0.0/33", &l, &err), -EINVAL);
        ck_assert_str_eq(err, "'10.0.0.0/33' has an invalid prefix length");
        ck_assert_int_eq(cidr_list_parse("fd00::/", &l, &err), -EINVAL);
        ck_assert_str_eq(err, "'fd00::/' has an invalid prefix length");
        ck_assert_int_eq(cidr_list_parse("example.com/8", &l, &err), -EINVAL);
        ck_assert_str_eq(err, "'example.com/8' is not a CIDR");
        free(err);
        ck_assert_int_eq(cidr_list_parse(NULL, &l, &err), 0);
}
END_TEST

int main(void) {
        Suite *s = suite_create("addrlist");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_named_valid);
        tcase_add_test(tc, test_named_errors);
        tcase_add_test(tc, test_cidr);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
