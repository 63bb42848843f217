/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of src/kube: kubeconfig and in-cluster loading (every field, every error message), token files,
 * and the JSON objects (TokenReview, Lease, Status, MicroTime, labels, JWT exp). */
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kubeconfig.h"
#include "kubeobj.h"
#include "macro.h"

static char dir[256];

static void write_file(const char *name, const char *content) {
        char p[512];
        FILE *f;

        (void) snprintf(p, sizeof(p), "%s/%s", dir, name);
        f = fopen(p, "w");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq((int) fwrite(content, 1, strlen(content), f), (int) strlen(content));
        ck_assert_int_eq(fclose(f), 0);
}

static void setup(void) {
        (void) snprintf(dir, sizeof(dir), "/tmp/konn10-test-kube-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void) {
        char cmd[300];
        (void) snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        ck_assert_int_eq(system(cmd), 0);
}

#define HEAD                                                                                          \
        "apiVersion: v1\nkind: Config\ncurrent-context: ctx\n"                                        \
        "contexts:\n- name: ctx\n  context:\n    cluster: c1\n    user: u1\n    namespace: kube-system\n"

/* "Q0EK" = base64("CA\n"), "Q0VSVAo=" = "CERT\n", "S0VZCg==" = "KEY\n" */
START_TEST(test_full_data) {
        _cleanup_(kube_config_freep) KubeConfig *c = NULL;
        _cleanup_free_ char *err = NULL;
        const char *y = HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://10.0.0.1:6443/\n"
                             "    certificate-authority-data: Q0EK\n"
                             "users:\n- name: u1\n  user:\n    client-certificate-data: Q0VSVAo=\n"
                             "    client-key-data: S0VZCg==\n    token: abc\n";

        ck_assert_int_eq(kube_config_parse(y, strlen(y), "/x/kc", NULL, false, &c, &err), 0);
        ck_assert_str_eq(c->origin, "kubeconfig /x/kc");
        ck_assert_str_eq(c->context, "ctx");
        ck_assert_str_eq(c->cluster, "c1");
        ck_assert_str_eq(c->user, "u1");
        ck_assert_str_eq(c->namespace, "kube-system");
        ck_assert_str_eq(c->server, "https://10.0.0.1:6443");
        ck_assert_int_eq((int) c->ca_len, 3);
        ck_assert_mem_eq(c->ca_pem, "CA\n", 3);
        ck_assert_int_eq((int) c->cert_len, 5);
        ck_assert_mem_eq(c->cert_pem, "CERT\n", 5);
        ck_assert_int_eq((int) c->key_len, 4);
        ck_assert_mem_eq(c->key_pem, "KEY\n", 4);
        ck_assert_str_eq(c->token, "abc");
        ck_assert_ptr_null(c->token_file);
        ck_assert(!c->insecure);
}
END_TEST

START_TEST(test_files_relative) {
        _cleanup_(kube_config_freep) KubeConfig *c = NULL;
        _cleanup_free_ char *err = NULL, *tok = NULL, *p = NULL;

        write_file("ca.pem", "CAFILE");
        write_file("c.pem", "CERTFILE");
        write_file("k.pem", "KEYFILE");
        write_file("tok", "  tok-1\n");
        write_file("kc", HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://h:1\n"
                              "    certificate-authority: ca.pem\n"
                              "users:\n- name: u1\n  user:\n    client-certificate: c.pem\n"
                              "    client-key: k.pem\n    tokenFile: tok\n    token: static\n");
        ck_assert_int_eq(asprintf(&p, "%s/kc", dir), (int) strlen(dir) + 3);
        ck_assert_int_eq(kube_config_load_file(p, NULL, false, &c, &err), 0);
        ck_assert_mem_eq(c->ca_pem, "CAFILE", 6);
        ck_assert_mem_eq(c->cert_pem, "CERTFILE", 8);
        ck_assert_mem_eq(c->key_pem, "KEYFILE", 7);
        ck_assert_int_eq(kube_config_token(c, &tok, &err), 0);
        ck_assert_str_eq(tok, "tok-1"); /* tokenFile wins over token, whitespace trimmed */
        tok = mfree(tok);
        write_file("tok", "tok-2"); /* rotation: read fresh */
        ck_assert_int_eq(kube_config_token(c, &tok, &err), 0);
        ck_assert_str_eq(tok, "tok-2");
        tok = mfree(tok);
        write_file("tok", " \n");
        ck_assert_int_eq(kube_config_token(c, &tok, &err), -ENODATA);
        ck_assert(strstr(err, "is empty"));
}
END_TEST

START_TEST(test_context_override_and_no_user) {
        _cleanup_(kube_config_freep) KubeConfig *c = NULL;
        _cleanup_free_ char *err = NULL, *tok = NULL;
        const char *y = HEAD "- name: other\n  context:\n    cluster: c2\n"
                             "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\n"
                             "- name: c2\n  cluster:\n    server: https://[::1]:6443\n"
                             "users:\n- name: u1\n  user:\n    token: t\n";

        ck_assert_int_eq(kube_config_parse(y, strlen(y), "kc", "other", false, &c, &err), 0);
        ck_assert_str_eq(c->server, "https://[::1]:6443");
        ck_assert_ptr_null(c->user);
        ck_assert_ptr_null(c->ca_pem);
        ck_assert_int_eq(kube_config_token(c, &tok, &err), 0);
        ck_assert_ptr_null(tok);
}
END_TEST

START_TEST(test_insecure) {
        _cleanup_(kube_config_freep) KubeConfig *c = NULL;
        _cleanup_free_ char *err = NULL;
        const char *y = HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\n"
                             "    insecure-skip-tls-verify: true\n"
                             "users:\n- name: u1\n  user:\n    token: t\n";

        ck_assert_int_eq(kube_config_parse(y, strlen(y), "kc", NULL, false, &c, &err), -EPERM);
        ck_assert_str_eq(err, "kubeconfig kc: cluster 'c1': insecure-skip-tls-verify is set (refused; konn always "
                              "verifies the API server's certificate)");
        ck_assert_int_eq(kube_config_parse(y, strlen(y), "kc", NULL, true, &c, &err), 0);
        ck_assert(c->insecure);
}
END_TEST

static const struct {
        const char *yaml;
        int r;
        const char *error;
} bad[] = {
        { "", -ENODATA, "kubeconfig kc: the document is empty" },
        { "- a\n", -EINVAL, "kubeconfig kc: the top level is not a mapping" },
        { "a: [\n", -EINVAL, "kubeconfig kc: line 2 column 1: did not find expected node content" },
        { "apiVersion: v1\n", -ENOENT, "kubeconfig kc: no current-context is set" },
        { "current-context: x\n", -ENOENT, "kubeconfig kc: context 'x' not found" },
        { "current-context: [a]\n", -EINVAL, "kubeconfig kc: line 1: 'current-context' must be a string" },
        { "current-context: x\ncontexts: {}\n", -EINVAL, "kubeconfig kc: line 2: 'contexts' must be a list" },
        { "current-context: x\ncontexts:\n- 1\n", -EINVAL, "kubeconfig kc: line 3: entries of 'contexts' must be mappings" },
        { "current-context: x\ncontexts:\n- name: x\n  context: 5\n", -EINVAL,
          "kubeconfig kc: line 4: 'context' must be a mapping" },
        { "current-context: x\ncontexts:\n- name: x\n  context:\n    user: u\n", -EINVAL,
          "kubeconfig kc: context 'x' names no cluster" },
        { HEAD, -ENOENT, "kubeconfig kc: cluster 'c1' not found" },
        { HEAD "clusters:\n- name: c1\n  cluster: {}\n", -EINVAL, "kubeconfig kc: cluster 'c1' has no server" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: http://a:1\n", -EINVAL,
          "kubeconfig kc: cluster 'c1': server 'http://a:1' is not an https:// URL" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\n    insecure-skip-tls-verify: maybe\n",
          -EINVAL, "kubeconfig kc: line 14: 'insecure-skip-tls-verify' must be true or false" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\n    certificate-authority-data: '!!'\n",
          -EINVAL, "kubeconfig kc: cluster 'c1': certificate-authority-data is not valid base64" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\n    certificate-authority: /nonexistent/ca\n",
          -ENOENT, "kubeconfig kc: cluster 'c1': cannot read certificate-authority '/nonexistent/ca': No such file or directory" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\n", -ENOENT,
          "kubeconfig kc: user 'u1' not found" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\nusers:\n- name: u1\n  user:\n"
               "    exec:\n      command: x\n", -EOPNOTSUPP,
          "kubeconfig kc: user 'u1': exec credential plugins are not supported (use token, tokenFile or a client "
          "certificate)" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\nusers:\n- name: u1\n  user:\n"
               "    auth-provider:\n      name: gcp\n", -EOPNOTSUPP,
          "kubeconfig kc: user 'u1': auth-provider plugins are not supported (use token, tokenFile or a client "
          "certificate)" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\nusers:\n- name: u1\n  user:\n"
               "    username: a\n    password: b\n", -EOPNOTSUPP,
          "kubeconfig kc: user 'u1': username/password authentication is not supported" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\nusers:\n- name: u1\n  user:\n"
               "    client-certificate-data: Q0VSVAo=\n", -EINVAL,
          "kubeconfig kc: user 'u1': client-certificate and client-key must be given together" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\nusers:\n- name: u1\n  user:\n"
               "    client-key-data: '%%'\n", -EINVAL,
          "kubeconfig kc: user 'u1': client-key-data is not valid base64" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\nusers:\n- name: u1\n  user:\n"
               "    client-certificate: /nonexistent/c\n    client-key-data: S0VZCg==\n", -ENOENT,
          "kubeconfig kc: user 'u1': cannot read client-certificate '/nonexistent/c': No such file or directory" },
        { HEAD "clusters:\n- name: c1\n  cluster:\n    server: https://a:1\nusers:\n- name: u1\n  user:\n"
               "    token: [x]\n", -EINVAL, "kubeconfig kc: line 17: 'token' must be a string" },
};

START_TEST(test_errors) {
        _cleanup_(kube_config_freep) KubeConfig *c = NULL;
        _cleanup_free_ char *err = NULL;
        int r = kube_config_parse(bad[_i].yaml, strlen(bad[_i].yaml), "kc", NULL, false, &c, &err);

        ck_assert_msg(r == bad[_i].r, "case %d: r=%d expected %d (%s)", _i, r, bad[_i].r, err ?: "");
        ck_assert_ptr_null(c);
        ck_assert_str_eq(err, bad[_i].error);
}
END_TEST

START_TEST(test_file_errors) {
        _cleanup_(kube_config_freep) KubeConfig *c = NULL;
        _cleanup_free_ char *err = NULL, *p = NULL, *big = NULL;
        FILE *f;

        ck_assert_int_eq(kube_config_load_file("/nonexistent/kc", NULL, false, &c, &err), -ENOENT);
        ck_assert_str_eq(err, "kubeconfig /nonexistent/kc: cannot read: No such file or directory");
        err = mfree(err);
        ck_assert_int_eq(asprintf(&p, "%s/big", dir), (int) strlen(dir) + 4);
        f = fopen(p, "w");
        ck_assert_ptr_nonnull(f);
        big = calloc(1, KUBE_FILE_MAX + 1);
        memset(big, '#', KUBE_FILE_MAX + 1);
        ck_assert_int_eq((int) fwrite(big, 1, KUBE_FILE_MAX + 1, f), (int) KUBE_FILE_MAX + 1);
        fclose(f);
        ck_assert_int_eq(kube_config_load_file(p, NULL, false, &c, &err), -EFBIG);
        ck_assert(strstr(err, ": file is larger than 1048576 bytes"));
}
END_TEST

START_TEST(test_in_cluster) {
        _cleanup_(kube_config_freep) KubeConfig *c = NULL;
        _cleanup_free_ char *err = NULL, *tok = NULL, *expect = NULL;

        ck_assert_int_eq(unsetenv("KUBERNETES_SERVICE_HOST"), 0);
        ck_assert_int_eq(kube_config_in_cluster(dir, &c, &err), -ENXIO);
        ck_assert_str_eq(err, "in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must "
                              "be set (or use --kubeconfig)");
        err = mfree(err);
        ck_assert_int_eq(setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1), 0);
        ck_assert_int_eq(setenv("KUBERNETES_SERVICE_PORT", "443", 1), 0);
        ck_assert_int_eq(kube_config_in_cluster(dir, &c, &err), -ENOENT);
        ck_assert_int_eq(asprintf(&expect, "in-cluster configuration: cannot read token '%s/token': No such file or "
                                           "directory", dir), (int) strlen(dir) + 79);
        ck_assert_str_eq(err, expect);
        err = mfree(err);
        write_file("token", "sa-token-1\n");
        ck_assert_int_eq(kube_config_in_cluster(dir, &c, &err), -ENOENT);
        ck_assert(strstr(err, "in-cluster configuration: cannot read CA '"));
        ck_assert(strstr(err, "/ca.crt': No such file or directory"));
        err = mfree(err);
        write_file("ca.crt", "CA");
        write_file("namespace", "kube-system\n");
        ck_assert_int_eq(kube_config_in_cluster(dir, &c, &err), 0);
        ck_assert_str_eq(c->server, "https://[fd00::1]:443");
        ck_assert_str_eq(c->origin, "in-cluster configuration");
        ck_assert_str_eq(c->namespace, "kube-system");
        ck_assert_mem_eq(c->ca_pem, "CA", 2);
        ck_assert_int_eq(kube_config_token(c, &tok, &err), 0);
        ck_assert_str_eq(tok, "sa-token-1");
        tok = mfree(tok);
        write_file("token", "sa-token-2"); /* the kubelet rotated it */
        ck_assert_int_eq(kube_config_token(c, &tok, &err), 0);
        ck_assert_str_eq(tok, "sa-token-2");
        c = kube_config_free(c);
        ck_assert_int_eq(setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1), 0);
        ck_assert_int_eq(kube_config_in_cluster(dir, &c, &err), 0);
        ck_assert_str_eq(c->server, "https://10.96.0.1:443");
        unsetenv("KUBERNETES_SERVICE_HOST");
        unsetenv("KUBERNETES_SERVICE_PORT");
}
END_TEST

/* ------------------------------------------------------------------------------------------------------------ */

START_TEST(test_tokenreview) {
        _cleanup_free_ char *j = NULL;
        KubeTokenReview t;
        const char *ok = "{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1\",\"status\":{"
                         "\"authenticated\":true,\"user\":{\"username\":\"system:serviceaccount:kube-system:konn\"},"
                         "\"audiences\":[\"aud\"]}}\n";
        const char *no = "{\"kind\":\"TokenReview\",\"status\":{\"error\":\"token audiences mismatch\"}}";

        ck_assert_int_eq(kube_tokenreview_request("tok\"en", "aud", &j), 0);
        ck_assert_str_eq(j, "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{"
                            "\"token\":\"tok\\\"en\",\"audiences\":[\"aud\"]}}");
        j = mfree(j);
        ck_assert_int_eq(kube_tokenreview_request("t", NULL, &j), 0);
        ck_assert_str_eq(j, "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{"
                            "\"token\":\"t\"}}");
        ck_assert_int_eq(kube_tokenreview_parse(ok, strlen(ok), &t), 0);
        ck_assert(t.authenticated);
        ck_assert_str_eq(t.username, "system:serviceaccount:kube-system:konn");
        ck_assert_ptr_null(t.error);
        kube_tokenreview_done(&t);
        ck_assert_int_eq(kube_tokenreview_parse(no, strlen(no), &t), 0);
        ck_assert(!t.authenticated);
        ck_assert_ptr_null(t.username);
        ck_assert_str_eq(t.error, "token audiences mismatch");
        kube_tokenreview_done(&t);
        ck_assert_int_eq(kube_tokenreview_parse("{\"kind\":\"Status\"}", 17, &t), -EBADMSG);
        ck_assert_int_eq(kube_tokenreview_parse("{\"kind\":\"TokenReview\"} x", 24, &t), -EBADMSG);
        ck_assert_int_eq(kube_tokenreview_parse("nope", 4, &t), -EBADMSG);
        ck_assert_int_eq(kube_tokenreview_parse("", 0, &t), -EBADMSG);
}
END_TEST

START_TEST(test_jwt_exp) {
        int64_t exp = 0;
        /* header {"alg":"none"} . payload {"exp":1700000000,"sub":"x"} . sig */
        ck_assert_int_eq(kube_jwt_exp("eyJhbGciOiJub25lIn0.eyJleHAiOjE3MDAwMDAwMDAsInN1YiI6IngifQ.c2ln", &exp), 0);
        ck_assert_int_eq(exp, 1700000000);
        /* payload {"sub":"x"} has no exp */
        ck_assert_int_eq(kube_jwt_exp("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln", &exp), -ENODATA);
        ck_assert_int_eq(kube_jwt_exp("opaque-token", &exp), -ENODATA);
        ck_assert_int_eq(kube_jwt_exp("a..b", &exp), -ENODATA);
        ck_assert_int_eq(kube_jwt_exp("a.!!!!.b", &exp), -ENODATA);
}
END_TEST

START_TEST(test_time) {
        char b[KUBE_TIME_MAX];
        int64_t t;

        ck_assert_str_eq(kube_time_format(1700000000123456, b), "2023-11-14T22:13:20.123456Z");
        ck_assert_int_eq(kube_time_parse("2023-11-14T22:13:20.123456Z", &t), 0);
        ck_assert_int_eq(t, 1700000000123456);
        ck_assert_int_eq(kube_time_parse("2023-11-14T22:13:20Z", &t), 0);
        ck_assert_int_eq(t, 1700000000000000);
        ck_assert_int_eq(kube_time_parse("2023-11-14T23:13:20.5+01:00", &t), 0);
        ck_assert_int_eq(t, 1700000000500000);
        ck_assert_int_eq(kube_time_parse("2023-11-14T22:13:20.123456789Z", &t), 0);
        ck_assert_int_eq(t, 1700000000123456);
        ck_assert_int_eq(kube_time_parse("2023-11-14 22:13:20Z", &t), -EINVAL);
        ck_assert_int_eq(kube_time_parse("2023-11-14T22:13:20", &t), -EINVAL);
        ck_assert_int_eq(kube_time_parse("2023-11-14T22:13:20.Z", &t), -EINVAL);
        ck_assert_int_eq(kube_time_parse("2023-11-14T22:13:20Zx", &t), -EINVAL);
}
END_TEST

START_TEST(test_labels) {
        ck_assert_int_eq(kube_labels_validate("k8s-app=konnectivity-server"), 0);
        ck_assert_int_eq(kube_labels_validate("a=b,example.com/c=d,e="), 0);
        ck_assert_int_eq(kube_labels_validate(""), 0);
        ck_assert_int_eq(kube_labels_validate("a"), -EINVAL);
        ck_assert_int_eq(kube_labels_validate("=b"), -EINVAL);
        ck_assert_int_eq(kube_labels_validate("a=b,"), -EINVAL);
        ck_assert_int_eq(kube_labels_validate("a b=c"), -EINVAL);
        ck_assert_int_eq(kube_labels_validate("a/=c"), -EINVAL);
        ck_assert_int_eq(kube_labels_validate("a=b c"), -EINVAL);
}
END_TEST

START_TEST(test_lease) {
        _cleanup_free_ char *j = NULL;
        KubeLease l, *list = NULL;
        size_t n = 0;
        const char *lj = "{\"kind\":\"LeaseList\",\"items\":[{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"7\"},"
                         "\"spec\":{\"holderIdentity\":\"s1\",\"leaseDurationSeconds\":30,"
                         "\"renewTime\":\"2023-11-14T22:13:20.000000Z\"}},"
                         "{\"metadata\":{\"name\":\"b\"},\"spec\":{\"leaseDurationSeconds\":30,"
                         "\"acquireTime\":\"2023-11-14T22:13:00.000000Z\"}},"
                         "{\"metadata\":{\"name\":\"c\"},\"spec\":{}},{\"nometa\":1}]}";

        ck_assert_int_eq(kube_lease_build("kube-system", "konnectivity-proxy-server-s1", "s1", 30,
                                          "k8s-app=konnectivity-server,x=y", 1700000000000000, 1700000001000000,
                                          NULL, &j),
                         0);
        ck_assert_str_eq(j, "{\"metadata\":{\"name\":\"konnectivity-proxy-server-s1\",\"namespace\":\"kube-system\","
                            "\"labels\":{\"k8s-app\":\"konnectivity-server\",\"x\":\"y\"}},\"spec\":{"
                            "\"holderIdentity\":\"s1\",\"leaseDurationSeconds\":30,"
                            "\"acquireTime\":\"2023-11-14T22:13:20.000000Z\","
                            "\"renewTime\":\"2023-11-14T22:13:21.000000Z\"},"
                            "\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\"}");
        j = mfree(j);
        ck_assert_int_eq(kube_lease_build("ns", "n", "h", 30, NULL, 0, 1700000001000000, "42", &j), 0);
        ck_assert(strstr(j, "\"resourceVersion\":\"42\""));
        ck_assert_ptr_null(strstr(j, "labels"));
        ck_assert_ptr_null(strstr(j, "acquireTime"));

        ck_assert_int_eq(kube_lease_list_parse(lj, strlen(lj), &list, &n), 0);
        ck_assert_int_eq((int) n, 3);
        ck_assert_str_eq(list[0].name, "a");
        ck_assert_str_eq(list[0].resource_version, "7");
        ck_assert_str_eq(list[0].holder, "s1");
        ck_assert_int_eq(list[0].duration_sec, 30);
        ck_assert_int_eq(list[0].renew_usec, 1700000000000000);
        ck_assert(kube_lease_valid(&list[0], 1700000029000000));
        ck_assert(!kube_lease_valid(&list[0], 1700000030000000));
        ck_assert(kube_lease_valid(&list[1], 1700000000000000 - 1)); /* acquireTime + 30 s */
        ck_assert(!kube_lease_valid(&list[1], 1700000010000000));
        ck_assert(!kube_lease_valid(&list[2], 0)); /* no time, no duration: invalid */
        kube_lease_list_free(list, n);

        ck_assert_int_eq(kube_lease_list_parse("{\"kind\":\"Lease\"}", 16, &list, &n), -EBADMSG);
        ck_assert_int_eq(kube_lease_parse(lj, strlen(lj), &l), -EBADMSG);
        {
                const char *one = "{\"kind\":\"Lease\",\"metadata\":{\"name\":\"x\",\"resourceVersion\":\"9\"}}";
                ck_assert_int_eq(kube_lease_parse(one, strlen(one), &l), 0);
        }
        ck_assert_str_eq(l.name, "x");
        ck_assert_str_eq(l.resource_version, "9");
        kube_lease_done(&l);
}
END_TEST

START_TEST(test_status) {
        _cleanup_free_ char *m = NULL;
        const char *s = "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"leases \\\"x\\\" already exists\","
                        "\"code\":409}";

        m = kube_status_message(s, strlen(s));
        ck_assert_str_eq(m, "leases \"x\" already exists");
        ck_assert_ptr_null(kube_status_message("<html>", 6));
}
END_TEST

static Suite *kube_suite(void) {
        Suite *s = suite_create("kube");
        TCase *tc = tcase_create("kubeconfig");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_full_data);
        tcase_add_test(tc, test_files_relative);
        tcase_add_test(tc, test_context_override_and_no_user);
        tcase_add_test(tc, test_insecure);
        tcase_add_loop_test(tc, test_errors, 0, (int) ELEMENTSOF(bad));
        tcase_add_test(tc, test_file_errors);
        tcase_add_test(tc, test_in_cluster);
        suite_add_tcase(s, tc);

        tc = tcase_create("objects");
        tcase_add_test(tc, test_tokenreview);
        tcase_add_test(tc, test_jwt_exp);
        tcase_add_test(tc, test_time);
        tcase_add_test(tc, test_labels);
        tcase_add_test(tc, test_lease);
        tcase_add_test(tc, test_status);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(kube_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
