/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "metrics.h"

/* Out-of-memory injection: this binary must be linked with
 * -Wl,--wrap=malloc -Wl,--wrap=realloc -Wl,--wrap=calloc. fail_at = N fails the N-th allocation from
 * now on (0 = the next one), once; -1 never fails. */
void *__real_malloc(size_t size);
void *__real_realloc(void *p, size_t size);
void *__real_calloc(size_t n, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_realloc(void *p, size_t size);
void *__wrap_calloc(size_t n, size_t size);

static volatile int fail_at = -1;
static volatile unsigned n_wrapped;

static bool fail_now(void) {
        n_wrapped++;
        if (fail_at < 0)
                return false;
        return fail_at-- == 0;
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
        ck_assert_msg(n_wrapped == before + 1, "test-metrics must be linked with -Wl,--wrap=malloc,...");
}

DEFINE_TRIVIAL_CLEANUP_FUNC(MetricsRegistry *, metrics_registry_free);

static char *render(MetricsRegistry *r) {
        char *text = NULL;
        size_t len = SIZE_MAX;

        ck_assert_int_eq(metrics_render(r, &text, &len), 0);
        ck_assert_ptr_nonnull(text);
        ck_assert_uint_eq(len, strlen(text));
        return text;
}

static void assert_render(MetricsRegistry *r, const char *expected) {
        _cleanup_free_ char *text = render(r);

        ck_assert_str_eq(text, expected);
}

#define L(...) ((const char *const[]) { __VA_ARGS__ })

/* ---- number formatting ---- */

START_TEST(test_format_float) {
        static const struct {
                double v;
                const char *s;
        } t[] = {
                { 0, "0" },
                { -0.0, "0" },
                { 1, "1" },
                { -1, "-1" },
                { 3, "3" },
                { 100, "100" },
                { 86400, "86400" },
                { 999999, "999999" },
                { 123456.7, "123456.7" },
                { 1e6, "1e+06" },
                { 1048576, "1.048576e+06" },
                { 1.71161221321e+09, "1.71161221321e+09" },
                { 18446744073709551615.0, "1.8446744073709552e+19" },
                { 12.5, "12.5" },
                { 0.1, "0.1" },
                { 0.1 + 0.2, "0.30000000000000004" },
                { 0.0001, "0.0001" },
                { 0.00001, "1e-05" },
                { 0.000001, "1e-06" },
                { 2.5e-5, "2.5e-05" },
                { -2.5, "-2.5" },
                { 5e-324, "5e-324" },
                { 1.7976931348623157e+308, "1.7976931348623157e+308" },
                { INFINITY, "+Inf" },
                { -INFINITY, "-Inf" },
                { NAN, "NaN" },
        };
        char buf[METRIC_FLOAT_MAX];

        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                ck_assert_str_eq(metric_format_float(t[i].v, buf), t[i].s);
}
END_TEST

/* ---- counters, gauges, histograms ---- */

START_TEST(test_counter_labels) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        Metric *m;

        ck_assert_ptr_nonnull(r);
        m = metric_new(r, METRIC_COUNTER, "test_requests_total", "Requests.", L("method", "code", NULL), NULL,
                       0);
        ck_assert_ptr_nonnull(m);

        /* No child yet: Go leaves the family out entirely. */
        assert_render(r, "");
        ck_assert(isnan(metric_get(m, L("GET", "200"))));

        metric_add(m, L("GET", "200"), 1);
        metric_add(m, L("POST", "500"), 1);
        metric_add(m, L("GET", "404"), 2);
        metric_add(m, L("GET", "200"), 2);
        metric_add(m, L("GET", "200"), -5); /* counters never go down */
        metric_set(m, L("GET", "200"), 42); /* not a gauge */
        metric_observe(m, L("GET", "200"), 1);

        ck_assert(metric_get(m, L("GET", "200")) == 3);
        ck_assert(metric_get(m, L("GET", "404")) == 2);
        ck_assert(metric_get(m, L("POST", "500")) == 1);

        /* Labels sorted by name (code before method), children sorted by those values. */
        assert_render(r, "# HELP test_requests_total Requests.\n"
                         "# TYPE test_requests_total counter\n"
                         "test_requests_total{code=\"200\",method=\"GET\"} 3\n"
                         "test_requests_total{code=\"404\",method=\"GET\"} 2\n"
                         "test_requests_total{code=\"500\",method=\"POST\"} 1\n");
}
END_TEST

START_TEST(test_gauge) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        Metric *g;

        g = metric_new(r, METRIC_GAUGE, "test_gauge", "A gauge.", NULL, NULL, 0);
        ck_assert_ptr_nonnull(g);

        metric_add(g, NULL, 5);
        metric_add(g, NULL, -7);
        ck_assert(metric_get(g, NULL) == -2);
        assert_render(r, "# HELP test_gauge A gauge.\n"
                         "# TYPE test_gauge gauge\n"
                         "test_gauge -2\n");

        metric_set(g, NULL, 0.25);
        assert_render(r, "# HELP test_gauge A gauge.\n"
                         "# TYPE test_gauge gauge\n"
                         "test_gauge 0.25\n");

        metric_set(g, NULL, 2500000);
        metric_observe(g, NULL, 1); /* not a histogram */
        assert_render(r, "# HELP test_gauge A gauge.\n"
                         "# TYPE test_gauge gauge\n"
                         "test_gauge 2.5e+06\n");
}
END_TEST

START_TEST(test_touch) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        Metric *g, *h;

        g = metric_new(r, METRIC_GAUGE, "g", "G.", L("k", NULL), NULL, 0);
        h = metric_new(r, METRIC_HISTOGRAM, "h", "H.", NULL, (const double[]) { 1 }, 1);
        ck_assert(isnan(metric_get(g, L("a"))));
        metric_touch(g, L("a"));
        metric_touch(g, L("a"));
        metric_touch(h, NULL);
        ck_assert(metric_get(g, L("a")) == 0);
        ck_assert(metric_get(h, NULL) == 0);
        assert_render(r, "# HELP g G.\n"
                         "# TYPE g gauge\n"
                         "g{k=\"a\"} 0\n"
                         "# HELP h H.\n"
                         "# TYPE h histogram\n"
                         "h_bucket{le=\"1\"} 0\n"
                         "h_bucket{le=\"+Inf\"} 0\n"
                         "h_sum 0\n"
                         "h_count 0\n");
}
END_TEST

START_TEST(test_histogram) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        Metric *h;

        h = metric_new(r, METRIC_HISTOGRAM, "test_seconds", "Latency.", NULL, (const double[]) { 0.5, 1, 10 },
                       3);
        ck_assert_ptr_nonnull(h);

        metric_observe(h, NULL, 0.25);
        metric_observe(h, NULL, 0.5); /* upper bounds are inclusive */
        metric_observe(h, NULL, 1);
        metric_observe(h, NULL, 2);
        metric_observe(h, NULL, 16); /* only +Inf */
        metric_add(h, NULL, 100);    /* not a counter */
        metric_set(h, NULL, 100);
        ck_assert(metric_get(h, NULL) == 5);

        assert_render(r, "# HELP test_seconds Latency.\n"
                         "# TYPE test_seconds histogram\n"
                         "test_seconds_bucket{le=\"0.5\"} 2\n"
                         "test_seconds_bucket{le=\"1\"} 3\n"
                         "test_seconds_bucket{le=\"10\"} 4\n"
                         "test_seconds_bucket{le=\"+Inf\"} 5\n"
                         "test_seconds_sum 19.75\n"
                         "test_seconds_count 5\n");
}
END_TEST

START_TEST(test_histogram_labels_and_buckets) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        Metric *h, *d;

        /* A trailing +Inf is implicit; le comes after the other labels. */
        h = metric_new(r, METRIC_HISTOGRAM, "h", "H.", L("code", NULL), (const double[]) { 1e-6, 2, INFINITY },
                       3);
        d = metric_new(r, METRIC_HISTOGRAM, "d", "Default buckets.", NULL, NULL, 0);
        ck_assert_ptr_nonnull(h);
        ck_assert_ptr_nonnull(d);

        metric_observe(h, L("500"), 3);
        metric_observe(h, L("200"), 1e-7);
        metric_observe(h, L("200"), 1.5);
        metric_observe(d, NULL, 0.07);

        assert_render(r, "# HELP h H.\n"
                         "# TYPE h histogram\n"
                         "h_bucket{code=\"200\",le=\"1e-06\"} 1\n"
                         "h_bucket{code=\"200\",le=\"2\"} 2\n"
                         "h_bucket{code=\"200\",le=\"+Inf\"} 2\n"
                         "h_sum{code=\"200\"} 1.5000001\n"
                         "h_count{code=\"200\"} 2\n"
                         "h_bucket{code=\"500\",le=\"1e-06\"} 0\n"
                         "h_bucket{code=\"500\",le=\"2\"} 0\n"
                         "h_bucket{code=\"500\",le=\"+Inf\"} 1\n"
                         "h_sum{code=\"500\"} 3\n"
                         "h_count{code=\"500\"} 1\n"
                         "# HELP d Default buckets.\n"
                         "# TYPE d histogram\n"
                         "d_bucket{le=\"0.005\"} 0\n"
                         "d_bucket{le=\"0.01\"} 0\n"
                         "d_bucket{le=\"0.025\"} 0\n"
                         "d_bucket{le=\"0.05\"} 0\n"
                         "d_bucket{le=\"0.1\"} 1\n"
                         "d_bucket{le=\"0.25\"} 1\n"
                         "d_bucket{le=\"0.5\"} 1\n"
                         "d_bucket{le=\"1\"} 1\n"
                         "d_bucket{le=\"2.5\"} 1\n"
                         "d_bucket{le=\"5\"} 1\n"
                         "d_bucket{le=\"10\"} 1\n"
                         "d_bucket{le=\"+Inf\"} 1\n"
                         "d_sum 0.07\n"
                         "d_count 1\n");
}
END_TEST

START_TEST(test_escaping) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        Metric *m;

        m = metric_new(r, METRIC_GAUGE, "esc", "Back\\slash, \"quotes\" and\nnewline.", L("v", NULL), NULL, 0);
        metric_set(m, L("a\\b\"c\nd"), 1);
        metric_set(m, L(""), 2);
        metric_set(m, (const char *const[]) { NULL }, 3); /* NULL counts as "" */

        /* HELP escapes only backslash and newline; label values also the double quote. */
        assert_render(r, "# HELP esc Back\\\\slash, \"quotes\" and\\nnewline.\n"
                         "# TYPE esc gauge\n"
                         "esc{v=\"\"} 3\n"
                         "esc{v=\"a\\\\b\\\"c\\nd\"} 1\n");
}
END_TEST

START_TEST(test_ordering) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        Metric *z, *empty, *a;

        z = metric_new(r, METRIC_COUNTER, "zzz_total", "Z.", NULL, NULL, 0);
        empty = metric_new(r, METRIC_GAUGE, "mmm", "Never used.", L("x", NULL), NULL, 0);
        a = metric_new(r, METRIC_GAUGE, "aaa", "A.", L("x", NULL), NULL, 0);
        ck_assert_ptr_nonnull(empty);

        metric_set(a, L("b"), 1);
        metric_set(a, L("a"), 2);
        metric_set(a, L("B"), 3);
        metric_add(z, NULL, 1);

        /* Families in registration order, children by byte order of their label values. */
        assert_render(r, "# HELP zzz_total Z.\n"
                         "# TYPE zzz_total counter\n"
                         "zzz_total 1\n"
                         "# HELP aaa A.\n"
                         "# TYPE aaa gauge\n"
                         "aaa{x=\"B\"} 3\n"
                         "aaa{x=\"a\"} 2\n"
                         "aaa{x=\"b\"} 1\n");
}
END_TEST

START_TEST(test_children_bound) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        _cleanup_free_ char *text = NULL;
        char v[16], big[METRIC_LABEL_VALUE_MAX + 2];
        Metric *m;
        unsigned lines = 0;

        m = metric_new(r, METRIC_COUNTER, "c_total", "C.", L("id", NULL), NULL, 0);
        for (unsigned i = 0; i < METRIC_CHILDREN_MAX; i++) {
                snprintf(v, sizeof(v), "%03u", i);
                metric_add(m, L(v), 1);
        }
        metric_add(m, L("overflow"), 1);
        metric_touch(m, L("overflow2"));
        ck_assert(isnan(metric_get(m, L("overflow"))));
        ck_assert(isnan(metric_get(m, L("overflow2"))));
        /* Existing children still count. */
        metric_add(m, L("063"), 1);
        ck_assert(metric_get(m, L("063")) == 2);

        text = render(r);
        for (char *p = text; (p = strchr(p, '\n')); p++)
                lines++;
        ck_assert_uint_eq(lines, METRIC_CHILDREN_MAX + 2);
        ck_assert_ptr_null(strstr(text, "overflow"));
        ck_assert_ptr_nonnull(strstr(text, "c_total{id=\"000\"} 1\n"));
        ck_assert_ptr_nonnull(strstr(text, "c_total{id=\"063\"} 2\n"));

        /* Over-long label values are dropped, at the limit they are kept. */
        {
                _cleanup_(metrics_registry_freep) MetricsRegistry *r2 = metrics_registry_new();
                Metric *g = metric_new(r2, METRIC_GAUGE, "g", "G.", L("v", NULL), NULL, 0);

                memset(big, 'x', sizeof(big) - 1);
                big[sizeof(big) - 1] = 0;
                metric_set(g, L(big), 1);
                ck_assert(isnan(metric_get(g, L(big))));
                big[METRIC_LABEL_VALUE_MAX] = 0;
                metric_set(g, L(big), 1);
                ck_assert(metric_get(g, L(big)) == 1);
        }
}
END_TEST

START_TEST(test_null_metric) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();

        metric_add(NULL, NULL, 1);
        metric_set(NULL, NULL, 1);
        metric_observe(NULL, NULL, 1);
        metric_touch(NULL, NULL);
        ck_assert(isnan(metric_get(NULL, NULL)));
        ck_assert_ptr_null(metrics_registry_free(NULL));
        assert_render(r, "");
}
END_TEST

START_TEST(test_duplicate_name_aborts) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();

        ck_assert_ptr_nonnull(metric_new(r, METRIC_GAUGE, "dup", "D.", NULL, NULL, 0));
        (void) metric_new(r, METRIC_COUNTER, "dup", "D.", NULL, NULL, 0);
}
END_TEST

START_TEST(test_unsorted_buckets_abort) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();

        (void) metric_new(r, METRIC_HISTOGRAM, "h", "H.", NULL, (const double[]) { 2, 1 }, 2);
}
END_TEST

START_TEST(test_le_label_aborts) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();

        (void) metric_new(r, METRIC_HISTOGRAM, "h", "H.", L("le", NULL), NULL, 0);
}
END_TEST

START_TEST(test_bad_name_aborts) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();

        (void) metric_new(r, METRIC_GAUGE, "0bad", "B.", NULL, NULL, 0);
}
END_TEST

/* ---- upstream families ---- */

#define AGENT_KNOWN_SERVER_COUNT                                                                      \
        "# HELP konnectivity_network_proxy_agent_known_server_count Current number of servers agent is " \
        "trying to connect to.\n"                                                                       \
        "# TYPE konnectivity_network_proxy_agent_known_server_count gauge\n"                           \
        "konnectivity_network_proxy_agent_known_server_count 0\n"

START_TEST(test_agent_metrics) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        AgentMetrics m;

        ck_assert_int_eq(agent_metrics_init(r, &m), 0);

        /* Only the plain Gauge exists before use, as with client_golang. */
        assert_render(r, AGENT_KNOWN_SERVER_COUNT);

        metric_observe(m.dial_duration, NULL, 0.02);
        metric_add(m.endpoint_dial_failure_total, L(METRICS_AGENT_DIAL_FAILURE_TIMEOUT), 1);
        metric_add(m.open_endpoint_connections, NULL, 2);
        metric_set(m.open_server_connections, NULL, 1);
        metric_add(m.server_connection_failure_count, L(METRICS_DIRECTION_TO_SERVER), 1);
        metric_add(m.stream_errors_total, L(METRICS_SEGMENT_FROM_AGENT, "Unavailable", "DIAL_RSP"), 1);
        metric_add(m.stream_packets_total, L(METRICS_SEGMENT_TO_AGENT, "DIAL_REQ"), 4);
        metric_add(m.stream_packets_total, L(METRICS_SEGMENT_FROM_AGENT, "DIAL_RSP"), 4);

        /* The two §9.5 HELP lines are the upstream harness's byte-exact ones. */
        assert_render(
                r,
                "# HELP konnectivity_network_proxy_agent_dial_duration_seconds Latency of dial to the remote "
                "endpoint in seconds\n"
                "# TYPE konnectivity_network_proxy_agent_dial_duration_seconds histogram\n"
                "konnectivity_network_proxy_agent_dial_duration_seconds_bucket{le=\"0.005\"} 0\n"
                "konnectivity_network_proxy_agent_dial_duration_seconds_bucket{le=\"0.025\"} 1\n"
                "konnectivity_network_proxy_agent_dial_duration_seconds_bucket{le=\"0.1\"} 1\n"
                "konnectivity_network_proxy_agent_dial_duration_seconds_bucket{le=\"0.5\"} 1\n"
                "konnectivity_network_proxy_agent_dial_duration_seconds_bucket{le=\"2.5\"} 1\n"
                "konnectivity_network_proxy_agent_dial_duration_seconds_bucket{le=\"10\"} 1\n"
                "konnectivity_network_proxy_agent_dial_duration_seconds_bucket{le=\"30\"} 1\n"
                "konnectivity_network_proxy_agent_dial_duration_seconds_bucket{le=\"+Inf\"} 1\n"
                "konnectivity_network_proxy_agent_dial_duration_seconds_sum 0.02\n"
                "konnectivity_network_proxy_agent_dial_duration_seconds_count 1\n"
                "# HELP konnectivity_network_proxy_agent_endpoint_dial_failure_total Number of failures dialing "
                "the remote endpoint, by reason (example: timeout).\n"
                "# TYPE konnectivity_network_proxy_agent_endpoint_dial_failure_total counter\n"
                "konnectivity_network_proxy_agent_endpoint_dial_failure_total{reason=\"timeout\"} 1\n" AGENT_KNOWN_SERVER_COUNT
                "# HELP konnectivity_network_proxy_agent_open_endpoint_connections Current number of open "
                "endpoint connections.\n"
                "# TYPE konnectivity_network_proxy_agent_open_endpoint_connections gauge\n"
                "konnectivity_network_proxy_agent_open_endpoint_connections 2\n"
                "# HELP konnectivity_network_proxy_agent_open_server_connections Current number of open server "
                "connections.\n"
                "# TYPE konnectivity_network_proxy_agent_open_server_connections gauge\n"
                "konnectivity_network_proxy_agent_open_server_connections 1\n"
                "# HELP konnectivity_network_proxy_agent_server_connection_failure_count Count of failures to "
                "send to or receive from the proxy server, labeled by the direction (from_server or "
                "to_server). DEPRECATED, please use stream_events_error_total\n"
                "# TYPE konnectivity_network_proxy_agent_server_connection_failure_count counter\n"
                "konnectivity_network_proxy_agent_server_connection_failure_count{direction=\"to_server\"} 1\n"
                "# HELP konnectivity_network_proxy_agent_stream_errors_total Count of gRPC stream errors, by "
                "segment, grpc Code, packet type. (example: from_agent, Code.Unavailable, DIAL_RSP)\n"
                "# TYPE konnectivity_network_proxy_agent_stream_errors_total counter\n"
                "konnectivity_network_proxy_agent_stream_errors_total{code=\"Unavailable\",packet_type=\"DIAL_"
                "RSP\",segment=\"from_agent\"} 1\n"
                "# HELP konnectivity_network_proxy_agent_stream_packets_total Count of packets processed, by "
                "segment and packet type (example: from_client, DIAL_REQ)\n"
                "# TYPE konnectivity_network_proxy_agent_stream_packets_total counter\n"
                "konnectivity_network_proxy_agent_stream_packets_total{packet_type=\"DIAL_REQ\",segment=\"to_"
                "agent\"} 4\n"
                "konnectivity_network_proxy_agent_stream_packets_total{packet_type=\"DIAL_RSP\",segment=\"from_"
                "agent\"} 4\n");
}
END_TEST

/* text contains `lines` starting at the beginning of a line. */
static bool has_lines(const char *text, const char *lines) {
        for (const char *p = text; (p = strstr(p, lines)); p++)
                if (p == text || p[-1] == '\n')
                        return true;
        return false;
}

START_TEST(test_help_9_5) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        _cleanup_free_ char *text = NULL;
        AgentMetrics m;

        ck_assert_int_eq(agent_metrics_init(r, &m), 0);
        metric_touch(m.endpoint_dial_failure_total, L("unknown"));
        metric_touch(m.open_endpoint_connections, NULL);
        text = render(r);
        ck_assert(has_lines(text, "# HELP konnectivity_network_proxy_agent_endpoint_dial_failure_total Number of "
                                  "failures dialing the remote endpoint, by reason (example: timeout).\n"
                                  "# TYPE konnectivity_network_proxy_agent_endpoint_dial_failure_total counter\n"
                                  "konnectivity_network_proxy_agent_endpoint_dial_failure_total{reason=\"unknown\"} "
                                  "0\n"));
        ck_assert(has_lines(text, "# HELP konnectivity_network_proxy_agent_open_endpoint_connections Current "
                                  "number of open endpoint connections.\n"
                                  "# TYPE konnectivity_network_proxy_agent_open_endpoint_connections gauge\n"
                                  "konnectivity_network_proxy_agent_open_endpoint_connections 0\n"));
}
END_TEST

START_TEST(test_server_metrics) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        char *strategies[] = { (char *) "destHost", (char *) "default", NULL };
        _cleanup_free_ char *text = NULL;
        ServerMetrics m;

        ck_assert_int_eq(server_metrics_init(r, &m, strategies), 0);

        /* At startup: the plain Gauge and the two families upstream sets to 0. */
        assert_render(r, "# HELP konnectivity_network_proxy_server_http_connections Number of current HTTP "
                         "CONNECT connections\n"
                         "# TYPE konnectivity_network_proxy_server_http_connections gauge\n"
                         "konnectivity_network_proxy_server_http_connections 0\n"
                         "# HELP konnectivity_network_proxy_server_ready_backend_connections Number of "
                         "konnectivity agent connected to the proxy server\n"
                         "# TYPE konnectivity_network_proxy_server_ready_backend_connections gauge\n"
                         "konnectivity_network_proxy_server_ready_backend_connections 0\n"
                         "# HELP konnectivity_network_proxy_server_ready_backends Number of konnectivity "
                         "agents connected to the proxy server, partitioned by proxy strategy.\n"
                         "# TYPE konnectivity_network_proxy_server_ready_backends gauge\n"
                         "konnectivity_network_proxy_server_ready_backends{proxy_strategy=\"default\"} 0\n"
                         "konnectivity_network_proxy_server_ready_backends{proxy_strategy=\"destHost\"} 0\n");

        metric_observe(m.dial_duration, NULL, 0.003);
        metric_observe(m.connection_duration, NULL, 100000);
        metric_observe(m.frontend_write_duration, NULL, 0.0000005);
        metric_add(m.grpc_connections, L(METRICS_SERVICE_METHOD_CONNECT), 1);
        metric_add(m.full_receive_channels, L(METRICS_SERVICE_METHOD_PROXY), 1);
        metric_add(m.dial_failure_count, L(METRICS_DIAL_FAILURE_NO_AGENT), 1);
        metric_set(m.pending_backend_dials, NULL, 1);
        metric_set(m.established_connections, NULL, 2);
        metric_add(m.stream_packets_total, L(METRICS_SEGMENT_FROM_CLIENT, "DIAL_REQ"), 1);
        metric_add(m.stream_errors_total, L(METRICS_SEGMENT_TO_CLIENT, "Canceled", "DATA"), 1);

        text = render(r);
        ck_assert_ptr_nonnull(strstr(
                text, "# HELP konnectivity_network_proxy_server_connection_duration_seconds Lifetime of "
                      "established end-to-end connections in seconds, from the successful dial until the "
                      "connection is closed.\n"
                      "# TYPE konnectivity_network_proxy_server_connection_duration_seconds histogram\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"1\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"5\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"15\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"30\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"60\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"300\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"900\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"1800\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"3600\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"14400\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"43200\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"86400\"} 0\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_bucket{le=\"+Inf\"} 1\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_sum 100000\n"
                      "konnectivity_network_proxy_server_connection_duration_seconds_count 1\n"
                      "# HELP konnectivity_network_proxy_server_dial_duration_seconds Latency of dial to the "
                      "remote endpoint in seconds\n"
                      "# TYPE konnectivity_network_proxy_server_dial_duration_seconds histogram\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_bucket{le=\"1e-06\"} 0\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_bucket{le=\"1e-05\"} 0\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_bucket{le=\"0.0001\"} 0\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_bucket{le=\"0.005\"} 1\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_bucket{le=\"0.025\"} 1\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_bucket{le=\"0.1\"} 1\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_bucket{le=\"0.5\"} 1\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_bucket{le=\"2.5\"} 1\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_bucket{le=\"12.5\"} 1\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_bucket{le=\"+Inf\"} 1\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_sum 0.003\n"
                      "konnectivity_network_proxy_server_dial_duration_seconds_count 1\n"
                      "# HELP konnectivity_network_proxy_server_dial_failure_count Number of dial failures "
                      "observed. Multiple failures can occur for a single dial request.\n"
                      "# TYPE konnectivity_network_proxy_server_dial_failure_count counter\n"
                      "konnectivity_network_proxy_server_dial_failure_count{reason=\"no_agent\"} 1\n"
                      "# HELP konnectivity_network_proxy_server_established_connections Current number of "
                      "established end-to-end connections (post-dial).\n"
                      "# TYPE konnectivity_network_proxy_server_established_connections gauge\n"
                      "konnectivity_network_proxy_server_established_connections 2\n"
                      "# HELP konnectivity_network_proxy_server_frontend_write_duration_seconds Latency of "
                      "write to the frontend in seconds\n"
                      "# TYPE konnectivity_network_proxy_server_frontend_write_duration_seconds histogram\n"
                      "konnectivity_network_proxy_server_frontend_write_duration_seconds_bucket{le=\"1e-06\"} "
                      "1\n"));
        ck_assert_ptr_nonnull(strstr(
                text, "konnectivity_network_proxy_server_frontend_write_duration_seconds_sum 5e-07\n"
                      "konnectivity_network_proxy_server_frontend_write_duration_seconds_count 1\n"
                      "# HELP konnectivity_network_proxy_server_full_receive_channels Number of current "
                      "connections blocked by a full receive channel, partitioned by service method.\n"
                      "# TYPE konnectivity_network_proxy_server_full_receive_channels gauge\n"
                      "konnectivity_network_proxy_server_full_receive_channels{service_method=\"Proxy\"} 1\n"
                      "# HELP konnectivity_network_proxy_server_grpc_connections Number of current grpc "
                      "connections, partitioned by service method.\n"
                      "# TYPE konnectivity_network_proxy_server_grpc_connections gauge\n"
                      "konnectivity_network_proxy_server_grpc_connections{service_method=\"Connect\"} 1\n"
                      "# HELP konnectivity_network_proxy_server_http_connections Number of current HTTP "
                      "CONNECT connections\n"
                      "# TYPE konnectivity_network_proxy_server_http_connections gauge\n"
                      "konnectivity_network_proxy_server_http_connections 0\n"
                      "# HELP konnectivity_network_proxy_server_pending_backend_dials Current number of "
                      "pending backend dial requests\n"
                      "# TYPE konnectivity_network_proxy_server_pending_backend_dials gauge\n"
                      "konnectivity_network_proxy_server_pending_backend_dials 1\n"
                      "# HELP konnectivity_network_proxy_server_ready_backend_connections Number of "
                      "konnectivity agent connected to the proxy server\n"));
        ck_assert_ptr_nonnull(strstr(
                text, "konnectivity_network_proxy_server_ready_backends{proxy_strategy=\"destHost\"} 0\n"
                      "# HELP konnectivity_network_proxy_server_stream_errors_total Count of gRPC stream "
                      "errors, by segment, grpc Code, packet type. (example: from_agent, Code.Unavailable, "
                      "DIAL_RSP)\n"
                      "# TYPE konnectivity_network_proxy_server_stream_errors_total counter\n"
                      "konnectivity_network_proxy_server_stream_errors_total{code=\"Canceled\",packet_type="
                      "\"DATA\",segment=\"to_client\"} 1\n"
                      "# HELP konnectivity_network_proxy_server_stream_packets_total Count of packets "
                      "processed, by segment and packet type (example: from_client, DIAL_REQ)\n"
                      "# TYPE konnectivity_network_proxy_server_stream_packets_total counter\n"
                      "konnectivity_network_proxy_server_stream_packets_total{packet_type=\"DIAL_REQ\","
                      "segment=\"from_client\"} 1\n"));
        /* Nothing after the last family. */
        ck_assert(strlen(text) > 0);
        ck_assert_ptr_nonnull(strstr(text, "segment=\"from_client\"} 1\n"));
        ck_assert_str_eq(strstr(text, "segment=\"from_client\"} 1\n"), "segment=\"from_client\"} 1\n");
}
END_TEST

START_TEST(test_server_metrics_no_strategies) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        _cleanup_free_ char *text = NULL;
        ServerMetrics m;

        ck_assert_int_eq(server_metrics_init(r, &m, NULL), 0);
        text = render(r);
        ck_assert_ptr_null(strstr(text, "ready_backends{"));
        ck_assert_ptr_nonnull(strstr(text, "konnectivity_network_proxy_server_ready_backend_connections 0\n"));
}
END_TEST

/* ---- process collector ---- */

static double sample_value(const char *text, const char *name) {
        _cleanup_free_ char *needle = NULL;
        const char *p;
        char *end;
        double v;

        ck_assert_int_ge(asprintf(&needle, "\n%s ", name), 0);
        p = strstr(text, needle);
        ck_assert_msg(p, "no sample for %s", name);
        p += strlen(needle);
        v = strtod(p, &end);
        ck_assert_msg(end != p && *end == '\n', "%s: value is not a number", name);
        return v;
}

START_TEST(test_process_collector) {
        _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
        _cleanup_free_ char *text = NULL;
        static const char *const names[] = {
                "process_cpu_seconds_total",     "process_max_fds",
                "process_open_fds",              "process_resident_memory_bytes",
                "process_start_time_seconds",    "process_virtual_memory_bytes",
                "process_virtual_memory_max_bytes",
        };
        const char *prev = NULL;
        Metric *g;

        g = metric_new(r, METRIC_GAUGE, "before", "B.", NULL, NULL, 0);
        metric_touch(g, NULL);
        metrics_add_process_collector(r);
        metrics_add_process_collector(r); /* no-op */

        text = render(r);
        ck_assert(strncmp(text, "# HELP before B.\n# TYPE before gauge\nbefore 0\n", 37) == 0);

        /* Go's names, HELP texts, types, in Go's (sorted) order, each once. */
        ck_assert_ptr_nonnull(strstr(text, "# HELP process_cpu_seconds_total Total user and system CPU time "
                                           "spent in seconds.\n# TYPE process_cpu_seconds_total counter\n"));
        ck_assert_ptr_nonnull(strstr(text, "# HELP process_max_fds Maximum number of open file descriptors.\n"
                                           "# TYPE process_max_fds gauge\n"));
        ck_assert_ptr_nonnull(strstr(text, "# HELP process_open_fds Number of open file descriptors.\n"
                                           "# TYPE process_open_fds gauge\n"));
        ck_assert_ptr_nonnull(strstr(text, "# HELP process_resident_memory_bytes Resident memory size in "
                                           "bytes.\n# TYPE process_resident_memory_bytes gauge\n"));
        ck_assert_ptr_nonnull(strstr(text, "# HELP process_start_time_seconds Start time of the process since "
                                           "unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\n"));
        ck_assert_ptr_nonnull(strstr(text, "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                                           "# TYPE process_virtual_memory_bytes gauge\n"));
        ck_assert_ptr_nonnull(strstr(text, "# HELP process_virtual_memory_max_bytes Maximum amount of virtual "
                                           "memory available in bytes.\n"
                                           "# TYPE process_virtual_memory_max_bytes gauge\n"));
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                _cleanup_free_ char *help = NULL;
                const char *p;

                ck_assert_int_ge(asprintf(&help, "# HELP %s ", names[i]), 0);
                p = strstr(text, help);
                ck_assert_ptr_nonnull(p);
                ck_assert_ptr_null(strstr(p + 1, help));
                ck_assert(!prev || p > prev);
                prev = p;
                ck_assert(sample_value(text, names[i]) >= 0);
        }

        ck_assert(sample_value(text, "process_open_fds") >= 3);
        ck_assert(sample_value(text, "process_max_fds") >= sample_value(text, "process_open_fds"));
        ck_assert(sample_value(text, "process_resident_memory_bytes") > 0);
        ck_assert(sample_value(text, "process_virtual_memory_bytes") >=
                  sample_value(text, "process_resident_memory_bytes"));
        ck_assert(sample_value(text, "process_start_time_seconds") > 1e9);
        ck_assert(sample_value(text, "process_start_time_seconds") <= (double) time(NULL) + 1);
}
END_TEST

/* ---- out of memory ---- */

START_TEST(test_oom_registry_and_metric) {
        assert_wrapped();

        fail_at = 0;
        ck_assert_ptr_null(metrics_registry_new());
        fail_at = -1;

        for (int n = 0;; n++) {
                _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
                Metric *m;

                ck_assert_ptr_nonnull(r);
                fail_at = n;
                m = metric_new(r, METRIC_HISTOGRAM, "h", "H.", L("a", "b", NULL), (const double[]) { 1, 2 }, 2);
                if (m) {
                        fail_at = -1;
                        ck_assert_int_gt(n, 0);
                        break;
                }
                /* A failed metric_new() leaves no family behind: the name is free again. */
                fail_at = -1;
                ck_assert_ptr_nonnull(
                        metric_new(r, METRIC_HISTOGRAM, "h", "H.", L("a", NULL), (const double[]) { 1 }, 1));
        }

        /* Creating a child fails cleanly (the update is dropped) and works later. */
        {
                _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
                Metric *c = metric_new(r, METRIC_COUNTER, "c_total", "C.", L("k", NULL), NULL, 0);

                fail_at = 0;
                metric_add(c, L("x"), 1);
                fail_at = -1;
                ck_assert(isnan(metric_get(c, L("x"))));
                metric_add(c, L("x"), 1);
                ck_assert(metric_get(c, L("x")) == 1);

                /* Updating an existing child allocates nothing. */
                int left;

                fail_at = 0;
                metric_add(c, L("x"), 1);
                left = fail_at;
                fail_at = -1;
                ck_assert_int_eq(left, 0);
                ck_assert(metric_get(c, L("x")) == 2);
        }
}
END_TEST

START_TEST(test_oom_init) {
        assert_wrapped();

        for (int n = 0;; n++) {
                _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
                ServerMetrics m, sentinel;
                char *strategies[] = { (char *) "default", NULL };
                int k;

                memset(&sentinel, 0xaa, sizeof(sentinel));
                m = sentinel;
                fail_at = n;
                k = server_metrics_init(r, &m, strategies);
                fail_at = -1;
                if (k == 0)
                        break;
                ck_assert_int_eq(k, -ENOMEM);
                ck_assert_int_eq(memcmp(&m, &sentinel, sizeof(m)), 0);
        }

        for (int n = 0;; n++) {
                _cleanup_(metrics_registry_freep) MetricsRegistry *r = metrics_registry_new();
                AgentMetrics m, sentinel;
                int k;

                memset(&sentinel, 0xaa, sizeof(sentinel));
                m = sentinel;
                fail_at = n;
                k = agent_metrics_init(r, &m);
                fail_at = -1;
                if (k == 0) {
                        assert_render(r, AGENT_KNOWN_SERVER_COUNT);
                        break;
                }
                ck_assert_int_eq(k, -ENOMEM);
                ck_assert_int_eq(memcmp(&m, &sentinel, sizeof(m)), 0);
        }
}
END_TEST

static Suite *metrics_suite(void) {
        Suite *s = suite_create("metrics");
        TCase *tc;

        tc = tcase_create("format");
        tcase_add_test(tc, test_format_float);
        suite_add_tcase(s, tc);

        tc = tcase_create("families");
        tcase_add_test(tc, test_counter_labels);
        tcase_add_test(tc, test_gauge);
        tcase_add_test(tc, test_touch);
        tcase_add_test(tc, test_histogram);
        tcase_add_test(tc, test_histogram_labels_and_buckets);
        tcase_add_test(tc, test_escaping);
        tcase_add_test(tc, test_ordering);
        tcase_add_test(tc, test_children_bound);
        tcase_add_test(tc, test_null_metric);
        /* Programming errors abort; that can only be observed in a forked test. */
        if (!streq_ptr(getenv("CK_FORK"), "no")) {
                tcase_add_test_raise_signal(tc, test_duplicate_name_aborts, SIGABRT);
                tcase_add_test_raise_signal(tc, test_unsorted_buckets_abort, SIGABRT);
                tcase_add_test_raise_signal(tc, test_le_label_aborts, SIGABRT);
                tcase_add_test_raise_signal(tc, test_bad_name_aborts, SIGABRT);
        }
        suite_add_tcase(s, tc);

        tc = tcase_create("upstream");
        tcase_add_test(tc, test_agent_metrics);
        tcase_add_test(tc, test_help_9_5);
        tcase_add_test(tc, test_server_metrics);
        tcase_add_test(tc, test_server_metrics_no_strategies);
        suite_add_tcase(s, tc);

        tc = tcase_create("process");
        tcase_add_test(tc, test_process_collector);
        suite_add_tcase(s, tc);

        tc = tcase_create("oom");
        tcase_add_test(tc, test_oom_registry_and_metric);
        tcase_add_test(tc, test_oom_init);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        SRunner *sr = srunner_create(metrics_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
