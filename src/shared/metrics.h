/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics — Prometheus counters, gauges and histograms rendered in the text exposition format 0.0.4
 * the way Go's client_golang writes it, plus the upstream Konnectivity server and agent families
 * (protocol.md §9) and a process_* collector read from /proc/self.
 * The MetricsRegistry owns every Metric family and its children; the caller owns the registry and
 * frees it last. Metric pointers stay valid until then. Loop thread only: nothing here is locked.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum MetricType {
        METRIC_COUNTER,
        METRIC_GAUGE,
        METRIC_HISTOGRAM,
        _METRIC_TYPE_MAX,
        _METRIC_TYPE_INVALID = -EINVAL,
} MetricType;

#define METRIC_CHILDREN_MAX 64U        /* label combinations per family; more are dropped */
#define METRIC_LABELS_MAX 8U           /* label names per family */
#define METRIC_LABEL_VALUE_MAX 256U    /* bytes; longer label values are dropped */

/* The Content-Type client_golang uses for this format. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct Metric Metric;
typedef struct MetricsRegistry MetricsRegistry;

MetricsRegistry *metrics_registry_new(void);
MetricsRegistry *metrics_registry_free(MetricsRegistry *r);

/* Register a family. name, help, label names and buckets are copied. label_names is NULL-terminated
 * (or NULL for none). Histogram buckets must be strictly increasing; a trailing +Inf is dropped;
 * n_buckets 0 means Go's DefBuckets. Returns NULL only for out-of-memory. Invalid names, a duplicate
 * name, a histogram label called "le" or unsorted buckets are programming errors (assert). */
Metric *metric_new(MetricsRegistry *r, MetricType t, const char *name, const char *help,
                   const char *const *label_names, const double *buckets, size_t n_buckets);

/* label_values: one per label name, same order (NULL for a family without labels; a NULL entry counts
 * as ""). A child is created on first use; creating the (METRIC_CHILDREN_MAX+1)th child, a value
 * longer than METRIC_LABEL_VALUE_MAX or out-of-memory drops the update. Once a child exists, updates
 * do not allocate. m may be NULL (no-op), so a failed metric_new() needs no special casing.
 * Wrong use (metric_set on a counter, a negative counter increment, metric_observe on a gauge, ...) is
 * ignored. */
void metric_add(Metric *m, const char *const *label_values, double v);     /* counter, gauge */
void metric_set(Metric *m, const char *const *label_values, double v);     /* gauge */
void metric_observe(Metric *m, const char *const *label_values, double v); /* histogram */
/* The value (for histograms: the observation count), or NAN if the child does not exist. */
double metric_get(Metric *m, const char *const *label_values);
/* Make sure the child exists (value 0): Go renders a family only once it has a child. */
void metric_touch(Metric *m, const char *const *label_values);

/* Render everything: "# HELP", "# TYPE", then samples. Families in registration order (Go sorts them
 * by name; the *_metrics_init() constructors register in that order), families without children
 * omitted (as Go does), children sorted by label values and labels by name (as Go does), histograms as
 * cumulative _bucket{le=".."} lines ending with +Inf, then _sum and _count. Numbers as Go's
 * strconv.FormatFloat(v, 'g', -1, 64): "3", "12.5", "1e-06", "1.234567e+06", "+Inf", "NaN".
 * *ret is malloc'd and NUL-terminated, *ret_len excludes the NUL. 0 or -ENOMEM. */
int metrics_render(MetricsRegistry *r, char **ret, size_t *ret_len);

/* Write v as Go's FormatFloat(v, 'g', -1, 64) (with Go's text-format special cases) into buf, which
 * must hold at least METRIC_FLOAT_MAX bytes. Returns buf. */
#define METRIC_FLOAT_MAX 32
const char *metric_format_float(double v, char *buf);

/* Register the process_* families (computed at render time from /proc/self, client_golang's names and
 * HELP texts): process_cpu_seconds_total, process_max_fds, process_open_fds,
 * process_resident_memory_bytes, process_start_time_seconds, process_virtual_memory_bytes,
 * process_virtual_memory_max_bytes. They render at this point of the registration order (Go puts them
 * after konnectivity_*, so add the collector last); a value that cannot be read is left out. Adding it
 * twice is a no-op; on out-of-memory it is not added. */
void metrics_add_process_collector(MetricsRegistry *r);

/* ---- upstream Konnectivity families (protocol.md §9.2, §9.3) ---- */

#define METRICS_NAMESPACE "konnectivity_network_proxy"

/* Label values used by upstream. */
#define METRICS_SERVICE_METHOD_PROXY "Proxy"
#define METRICS_SERVICE_METHOD_CONNECT "Connect"
#define METRICS_SEGMENT_FROM_CLIENT "from_client"
#define METRICS_SEGMENT_TO_CLIENT "to_client"
#define METRICS_SEGMENT_FROM_AGENT "from_agent"
#define METRICS_SEGMENT_TO_AGENT "to_agent"
#define METRICS_DIAL_FAILURE_NO_AGENT "no_agent"
#define METRICS_DIAL_FAILURE_ERROR_RESPONSE "error_response"
#define METRICS_DIAL_FAILURE_UNRECOGNIZED_RESPONSE "unrecognized_response"
#define METRICS_DIAL_FAILURE_SEND_RESPONSE "send_rsp"
#define METRICS_DIAL_FAILURE_BACKEND_CLOSE "backend_close"
#define METRICS_DIAL_FAILURE_BACKEND_DIAL_TIMEOUT "backend_dial_timeout"
#define METRICS_DIAL_FAILURE_FRONTEND_CLOSE "frontend_close"
#define METRICS_AGENT_DIAL_FAILURE_TIMEOUT "timeout"
#define METRICS_AGENT_DIAL_FAILURE_UNKNOWN "unknown"
#define METRICS_DIRECTION_TO_SERVER "to_server"
#define METRICS_DIRECTION_FROM_SERVER "from_server"

/* Label names per family (values in this order):
 *   grpc_connections, full_receive_channels: service_method
 *   ready_backends: proxy_strategy      dial_failure_count: reason
 *   stream_packets_total: segment, packet_type    stream_errors_total: segment, code, packet_type
 *   agent endpoint_dial_failure_total: reason     agent server_connection_failure_count: direction
 * Every other family has no labels (pass NULL). */
typedef struct ServerMetrics {
        Metric *dial_duration, *frontend_write_duration, *connection_duration, *grpc_connections,
                *http_connections, *ready_backend_connections, *ready_backends, *pending_backend_dials,
                *established_connections, *full_receive_channels, *dial_failure_count,
                *stream_packets_total, *stream_errors_total;
} ServerMetrics;

/* Registers the konnectivity_network_proxy_server_* families (not the lease ones) in Go's name order,
 * and creates at 0: http_connections (a plain Gauge upstream), ready_backend_connections and
 * ready_backends{proxy_strategy=s} for each s of the NULL-terminated proxy_strategies (may be NULL).
 * 0, or -ENOMEM (*ret untouched; families registered so far stay in r, so free r). */
int server_metrics_init(MetricsRegistry *r, ServerMetrics *ret, char *const *proxy_strategies);

typedef struct AgentMetrics {
        Metric *dial_duration, *server_connection_failure_count, *endpoint_dial_failure_total,
                *open_server_connections, *known_server_count, *open_endpoint_connections,
                *stream_packets_total, *stream_errors_total;
} AgentMetrics;

/* Registers the konnectivity_network_proxy_agent_* families (not the lease ones) in Go's name order
 * and creates known_server_count (a plain Gauge upstream) at 0. 0 or -ENOMEM, as above. */
int agent_metrics_init(MetricsRegistry *r, AgentMetrics *ret);
