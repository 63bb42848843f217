/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "metrics.h"

/* Output compatibility with client_golang (expfmt text format 0.0.4) is the point of this module:
 * the upstream test harness compares HELP/TYPE lines byte for byte, and dashboards match label sets.
 * So labels are written sorted by name, children sorted by those label values, "le" last, families
 * without any child skipped, and numbers formatted as Go's strconv.FormatFloat(v, 'g', -1, 64).
 * A child is one allocation holding its bucket counters and label values; after it exists an update
 * is a linear lookup (at most METRIC_CHILDREN_MAX string compares) and an addition. */

typedef struct MetricChild {
        char **values; /* n_labels, declaration order; point into this allocation */
        double value;  /* counter, gauge */
        double sum;    /* histogram */
        uint64_t count;
        uint64_t buckets[]; /* histogram, per bucket (not cumulative) */
} MetricChild;

struct Metric {
        MetricsRegistry *registry; /* non-owning */
        MetricType type;
        char *name, *help;
        char **label_names;
        size_t n_labels;
        size_t order[METRIC_LABELS_MAX]; /* label indices sorted by name */
        double *buckets;
        size_t n_buckets;
        MetricChild *children[METRIC_CHILDREN_MAX]; /* sorted by label values in name order */
        size_t n_children;
        bool warned;
};

typedef struct RegistryEntry {
        Metric *metric; /* NULL: the process collector */
} RegistryEntry;

struct MetricsRegistry {
        RegistryEntry *entries;
        size_t n_entries;
        bool has_process_collector;
};

static const double go_default_buckets[] = { .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10 };

/* ---- numbers ---- */

const char *metric_format_float(double v, char *buf) {
        char e[METRIC_FLOAT_MAX];
        int digits = 17, exp;
        const char *x;

        assert(buf);

        /* expfmt's writeFloat() special cases */
        if (v == 1)
                return strcpy(buf, "1");
        if (v == 0)
                return strcpy(buf, "0");
        if (v == -1)
                return strcpy(buf, "-1");
        if (isnan(v))
                return strcpy(buf, "NaN");
        if (isinf(v))
                return strcpy(buf, v > 0 ? "+Inf" : "-Inf");

        /* Shortest number of significant digits that reads back as the same double. */
        for (int p = 1; p <= 17; p++) {
                (void) snprintf(e, sizeof(e), "%.*e", p - 1, v);
                if (strtod(e, NULL) == v) {
                        digits = p;
                        break;
                }
        }
        (void) snprintf(e, sizeof(e), "%.*e", digits - 1, v);
        x = strchr(e, 'e');
        assert(x);
        exp = atoi(x + 1); /* our own "%e" output: always a valid exponent */

        /* Go: %e form if exp < -4 || exp >= 6 (precision 6 is used for the decision when shortest). */
        if (exp < -4 || exp >= 6)
                return strcpy(buf, e); /* "d.ddde±XX": same layout as Go (two exponent digits minimum) */
        (void) snprintf(buf, METRIC_FLOAT_MAX, "%.*f", MAX(digits - 1 - exp, 0), v);
        return buf;
}

/* ---- allocation (plain malloc/realloc, so that the failmalloc tests reach every allocation) ---- */

static char *str_dup(const char *s) {
        size_t n = strlen(s) + 1;
        char *d = malloc(n);

        return d ? memcpy(d, s, n) : NULL;
}

static int entries_grow(MetricsRegistry *r) {
        RegistryEntry *n;

        if (r->n_entries >= SIZE_MAX / sizeof(RegistryEntry) - 1)
                return -ENOMEM;
        n = realloc(r->entries, (r->n_entries + 1) * sizeof(RegistryEntry));
        if (!n)
                return -ENOMEM;
        r->entries = n;
        return 0;
}

/* ---- names ---- */

static bool valid_metric_name(const char *s) {
        if (!s || !*s)
                return false;
        for (size_t i = 0; s[i]; i++) {
                char c = s[i];
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                          (i > 0 && c >= '0' && c <= '9');
                if (!ok)
                        return false;
        }
        return true;
}

static bool valid_label_name(const char *s) {
        if (!s || !*s || strncmp(s, "__", 2) == 0)
                return false;
        for (size_t i = 0; s[i]; i++) {
                char c = s[i];
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                          (i > 0 && c >= '0' && c <= '9');
                if (!ok)
                        return false;
        }
        return true;
}

/* ---- registry ---- */

static Metric *metric_free(Metric *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_children; i++)
                free(m->children[i]);
        if (m->label_names)
                for (size_t i = 0; i < m->n_labels; i++)
                        free(m->label_names[i]);
        free(m->label_names);
        free(m->buckets);
        free(m->name);
        free(m->help);
        return mfree(m);
}

MetricsRegistry *metrics_registry_new(void) {
        return calloc(1, sizeof(MetricsRegistry));
}

MetricsRegistry *metrics_registry_free(MetricsRegistry *r) {
        if (!r)
                return NULL;
        for (size_t i = 0; i < r->n_entries; i++)
                metric_free(r->entries[i].metric);
        free(r->entries);
        return mfree(r);
}

static int registry_append(MetricsRegistry *r, Metric *m) {
        if (entries_grow(r) < 0)
                return -ENOMEM;
        r->entries[r->n_entries++] = (RegistryEntry) { .metric = m };
        return 0;
}

static bool registry_has_name(MetricsRegistry *r, const char *name) {
        for (size_t i = 0; i < r->n_entries; i++)
                if (r->entries[i].metric && streq(r->entries[i].metric->name, name))
                        return true;
        return false;
}

static bool metric_args_valid(MetricsRegistry *r, MetricType t, const char *name, const char *help,
                              const char *const *label_names, const double *buckets, size_t n_buckets) {
        size_t n = 0;

        if (!r || t < 0 || t >= _METRIC_TYPE_MAX || !valid_metric_name(name) || !help)
                return false;
        if (registry_has_name(r, name))
                return false;
        for (; label_names && label_names[n]; n++) {
                if (!valid_label_name(label_names[n]) || n >= METRIC_LABELS_MAX)
                        return false;
                if (t == METRIC_HISTOGRAM && streq(label_names[n], "le"))
                        return false;
                for (size_t j = 0; j < n; j++)
                        if (streq(label_names[j], label_names[n]))
                                return false;
        }
        if (t == METRIC_HISTOGRAM) {
                if (n_buckets > 0 && !buckets)
                        return false;
                for (size_t i = 0; i < n_buckets; i++) {
                        if (isnan(buckets[i]))
                                return false;
                        if (i > 0 && !(buckets[i] > buckets[i - 1]))
                                return false;
                }
        }
        return true;
}

Metric *metric_new(MetricsRegistry *r, MetricType t, const char *name, const char *help,
                   const char *const *label_names, const double *buckets, size_t n_buckets) {
        Metric *m;

        if (!metric_args_valid(r, t, name, help, label_names, buckets, n_buckets)) {
                assert(!"metric_new(): invalid arguments");
                return NULL;
        }

        m = calloc(1, sizeof(Metric));
        if (!m)
                return NULL;
        m->registry = r;
        m->type = t;
        m->name = str_dup(name);
        m->help = str_dup(help);
        if (!m->name || !m->help)
                return metric_free(m);

        while (label_names && label_names[m->n_labels])
                m->n_labels++;
        if (m->n_labels > 0) {
                m->label_names = calloc(m->n_labels, sizeof(char *));
                if (!m->label_names)
                        return metric_free(m);
                for (size_t i = 0; i < m->n_labels; i++) {
                        m->label_names[i] = str_dup(label_names[i]);
                        if (!m->label_names[i])
                                return metric_free(m);
                }
        }
        /* Insertion sort of the label indices by name: this is the order labels are written in. */
        for (size_t i = 0; i < m->n_labels; i++) {
                size_t j = i;
                while (j > 0 && strcmp(m->label_names[m->order[j - 1]], m->label_names[i]) > 0) {
                        m->order[j] = m->order[j - 1];
                        j--;
                }
                m->order[j] = i;
        }

        if (t == METRIC_HISTOGRAM) {
                if (n_buckets == 0) {
                        buckets = go_default_buckets;
                        n_buckets = ELEMENTSOF(go_default_buckets);
                }
                if (isinf(buckets[n_buckets - 1]) && buckets[n_buckets - 1] > 0)
                        n_buckets--; /* +Inf is implicit */
                if (n_buckets > 0) {
                        m->buckets = malloc(n_buckets * sizeof(double));
                        if (!m->buckets)
                                return metric_free(m);
                        memcpy(m->buckets, buckets, n_buckets * sizeof(double));
                }
                m->n_buckets = n_buckets;
        }

        if (registry_append(r, m) < 0)
                return metric_free(m);
        return m;
}

/* ---- children ---- */

static const char *label_value(const char *const *values, size_t i) {
        return values && values[i] ? values[i] : "";
}

static bool child_matches(const Metric *m, const MetricChild *c, const char *const *values) {
        for (size_t i = 0; i < m->n_labels; i++)
                if (!streq(c->values[i], label_value(values, i)))
                        return false;
        return true;
}

/* Go's MetricSorter order: label values compared in label-name order. */
static int child_compare(const Metric *m, const MetricChild *c, const char *const *values) {
        for (size_t k = 0; k < m->n_labels; k++) {
                size_t i = m->order[k];
                int d = strcmp(c->values[i], label_value(values, i));
                if (d != 0)
                        return d;
        }
        return 0;
}

static MetricChild *child_find(Metric *m, const char *const *values) {
        for (size_t i = 0; i < m->n_children; i++)
                if (child_matches(m, m->children[i], values))
                        return m->children[i];
        return NULL;
}

static MetricChild *child_get(Metric *m, const char *const *values) {
        MetricChild *c;
        size_t size, lens[METRIC_LABELS_MAX], pos;
        char *p;

        c = child_find(m, values);
        if (c)
                return c;

        if (m->n_children >= METRIC_CHILDREN_MAX) {
                if (!m->warned)
                        log_debug("metrics: %s has %u children, dropping new label values", m->name,
                                  METRIC_CHILDREN_MAX);
                m->warned = true;
                return NULL;
        }

        size = sizeof(MetricChild) + m->n_buckets * sizeof(uint64_t) + m->n_labels * sizeof(char *);
        for (size_t i = 0; i < m->n_labels; i++) {
                lens[i] = strlen(label_value(values, i));
                if (lens[i] > METRIC_LABEL_VALUE_MAX) {
                        log_debug("metrics: %s: label value too long, dropping update", m->name);
                        return NULL;
                }
                size += lens[i] + 1;
        }

        c = calloc(1, size);
        if (!c)
                return NULL;
        c->values = (char **) ((uint8_t *) c + sizeof(MetricChild) + m->n_buckets * sizeof(uint64_t));
        p = (char *) (c->values + m->n_labels);
        for (size_t i = 0; i < m->n_labels; i++) {
                memcpy(p, label_value(values, i), lens[i] + 1);
                c->values[i] = p;
                p += lens[i] + 1;
        }

        for (pos = 0; pos < m->n_children; pos++)
                if (child_compare(m, m->children[pos], values) > 0)
                        break;
        memmove(m->children + pos + 1, m->children + pos, (m->n_children - pos) * sizeof(MetricChild *));
        m->children[pos] = c;
        m->n_children++;
        return c;
}

void metric_add(Metric *m, const char *const *label_values, double v) {
        MetricChild *c;

        if (!m || m->type == METRIC_HISTOGRAM)
                return;
        if (m->type == METRIC_COUNTER && v < 0)
                return; /* counters only go up (Go panics here) */
        c = child_get(m, label_values);
        if (c)
                c->value += v;
}

void metric_set(Metric *m, const char *const *label_values, double v) {
        MetricChild *c;

        if (!m || m->type != METRIC_GAUGE)
                return;
        c = child_get(m, label_values);
        if (c)
                c->value = v;
}

void metric_observe(Metric *m, const char *const *label_values, double v) {
        MetricChild *c;

        if (!m || m->type != METRIC_HISTOGRAM)
                return;
        c = child_get(m, label_values);
        if (!c)
                return;
        /* The first bucket whose upper bound is >= v; beyond the last one only +Inf (= count) sees it. */
        for (size_t i = 0; i < m->n_buckets; i++)
                if (v <= m->buckets[i]) {
                        c->buckets[i]++;
                        break;
                }
        c->sum += v;
        c->count++;
}

double metric_get(Metric *m, const char *const *label_values) {
        MetricChild *c;

        if (!m)
                return NAN;
        c = child_find(m, label_values);
        if (!c)
                return NAN;
        return m->type == METRIC_HISTOGRAM ? (double) c->count : c->value;
}

void metric_touch(Metric *m, const char *const *label_values) {
        if (m)
                (void) child_get(m, label_values);
}

/* ---- rendering ---- */

static void write_escaped(FILE *f, const char *s, bool quote) {
        for (; *s; s++)
                switch (*s) {
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                case '"':
                        fputs(quote ? "\\\"" : "\"", f);
                        break;
                default:
                        fputc(*s, f);
                }
}

static void write_header(FILE *f, const char *name, const char *help, const char *type) {
        fprintf(f, "# HELP %s ", name);
        write_escaped(f, help, false);
        fprintf(f, "\n# TYPE %s %s\n", name, type);
}

static void write_sample(FILE *f, const Metric *m, const MetricChild *c, const char *suffix, const char *le,
                         double v) {
        char num[METRIC_FLOAT_MAX];
        bool any = false;

        fputs(m->name, f);
        fputs(suffix, f);
        for (size_t k = 0; k < m->n_labels; k++) {
                size_t i = m->order[k];
                fprintf(f, "%s%s=\"", any ? "," : "{", m->label_names[i]);
                write_escaped(f, c->values[i], true);
                fputc('"', f);
                any = true;
        }
        if (le) {
                fprintf(f, "%sle=\"%s\"", any ? "," : "{", le);
                any = true;
        }
        if (any)
                fputc('}', f);
        fprintf(f, " %s\n", metric_format_float(v, num));
}

static const char *metric_type_to_string(MetricType t) {
        switch (t) {
        case METRIC_COUNTER:
                return "counter";
        case METRIC_GAUGE:
                return "gauge";
        case METRIC_HISTOGRAM:
                return "histogram";
        default:
                return "untyped";
        }
}

static void render_metric(FILE *f, const Metric *m) {
        char le[METRIC_FLOAT_MAX];

        if (m->n_children == 0)
                return;

        write_header(f, m->name, m->help, metric_type_to_string(m->type));
        for (size_t i = 0; i < m->n_children; i++) {
                const MetricChild *c = m->children[i];
                uint64_t cumulative = 0;

                if (m->type != METRIC_HISTOGRAM) {
                        write_sample(f, m, c, "", NULL, c->value);
                        continue;
                }
                for (size_t b = 0; b < m->n_buckets; b++) {
                        cumulative += c->buckets[b];
                        write_sample(f, m, c, "_bucket", metric_format_float(m->buckets[b], le),
                                     (double) cumulative);
                }
                write_sample(f, m, c, "_bucket", "+Inf", (double) c->count);
                write_sample(f, m, c, "_sum", NULL, c->sum);
                write_sample(f, m, c, "_count", NULL, (double) c->count);
        }
}

/* ---- process collector ---- */

static inline void fclosep(FILE **f) {
        if (*f)
                (void) fclose(*f);
}

static int parse_u64(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long x;

        if (!s || !*s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        x = strtoull(s, &end, 10);
        if (errno != 0 || *end != 0)
                return -ERANGE;
        *ret = (uint64_t) x;
        return 0;
}

typedef struct ProcStat {
        uint64_t utime, stime, starttime, vsize, rss; /* clock ticks, bytes, pages */
} ProcStat;

static int read_proc_self_stat(ProcStat *ret) {
        _cleanup_(fclosep) FILE *f = NULL;
        char buf[4096], *p, *save = NULL, *tok;
        uint64_t fields[22] = {}; /* fields 3..24 of proc_pid_stat(5) */
        size_t n, i = 0;

        f = fopen("/proc/self/stat", "re");
        if (!f)
                return -errno;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = 0;

        /* The command name (field 2) may hold anything, spaces and ')' included: skip to the last ')'. */
        p = strrchr(buf, ')');
        if (!p)
                return -EBADMSG;
        for (tok = strtok_r(p + 1, " \n", &save); tok && i < ELEMENTSOF(fields);
             tok = strtok_r(NULL, " \n", &save), i++) {
                if (i == 0)
                        continue; /* state, a letter */
                /* Some fields may be negative (priority, nice...): only the ones we use must parse. */
                if (parse_u64(tok, &fields[i]) < 0)
                        fields[i] = 0;
        }
        if (i < ELEMENTSOF(fields))
                return -EBADMSG;

        *ret = (ProcStat) {
                .utime = fields[14 - 3],
                .stime = fields[15 - 3],
                .starttime = fields[22 - 3],
                .vsize = fields[23 - 3],
                .rss = fields[24 - 3],
        };
        return 0;
}

static int read_boot_time(uint64_t *ret) {
        _cleanup_(fclosep) FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        size_t size = 0;

        f = fopen("/proc/stat", "re");
        if (!f)
                return -errno;
        while (getline(&line, &size, f) > 0)
                if (strncmp(line, "btime ", 6) == 0) {
                        line[strcspn(line, "\n")] = 0;
                        return parse_u64(line + 6, ret);
                }
        return -ENOENT;
}

static int count_open_fds(uint64_t *ret) {
        DIR *d;
        struct dirent *de;
        uint64_t n = 0;

        d = opendir("/proc/self/fd");
        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        (void) closedir(d);
        *ret = n;
        return 0;
}

static void render_process_value(FILE *f, const char *name, const char *help, const char *type, double v) {
        char num[METRIC_FLOAT_MAX];

        write_header(f, name, help, type);
        fprintf(f, "%s %s\n", name, metric_format_float(v, num));
}

static double rlimit_soft(int resource, bool *ok) {
        struct rlimit rl;

        *ok = getrlimit(resource, &rl) >= 0;
        if (!*ok)
                return 0;
        /* Go's procfs reads "unlimited" as the largest uint64. */
        return rl.rlim_cur == RLIM_INFINITY ? (double) UINT64_MAX : (double) rl.rlim_cur;
}

/* client_golang's process collector, names sorted as Go gathers them. */
static void render_process(FILE *f) {
        ProcStat st;
        uint64_t btime = 0, fds = 0;
        long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
        bool have_stat, ok;
        double v;

        if (tck <= 0)
                tck = 100;
        if (page <= 0)
                page = 4096;
        have_stat = read_proc_self_stat(&st) >= 0;

        if (have_stat)
                render_process_value(f, "process_cpu_seconds_total",
                                     "Total user and system CPU time spent in seconds.", "counter",
                                     (double) (st.utime + st.stime) / (double) tck);
        v = rlimit_soft(RLIMIT_NOFILE, &ok);
        if (ok)
                render_process_value(f, "process_max_fds", "Maximum number of open file descriptors.",
                                     "gauge", v);
        if (count_open_fds(&fds) >= 0)
                render_process_value(f, "process_open_fds", "Number of open file descriptors.", "gauge",
                                     (double) fds);
        if (have_stat) {
                render_process_value(f, "process_resident_memory_bytes", "Resident memory size in bytes.",
                                     "gauge", (double) st.rss * (double) page);
                if (read_boot_time(&btime) >= 0)
                        render_process_value(f, "process_start_time_seconds",
                                             "Start time of the process since unix epoch in seconds.",
                                             "gauge", (double) btime + (double) st.starttime / (double) tck);
                render_process_value(f, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                     "gauge", (double) st.vsize);
        }
        v = rlimit_soft(RLIMIT_AS, &ok);
        if (ok)
                render_process_value(f, "process_virtual_memory_max_bytes",
                                     "Maximum amount of virtual memory available in bytes.", "gauge", v);
}

void metrics_add_process_collector(MetricsRegistry *r) {
        if (!r || r->has_process_collector)
                return;
        if (entries_grow(r) < 0) {
                log_debug("metrics: out of memory, process collector not added");
                return;
        }
        r->entries[r->n_entries++] = (RegistryEntry) { .metric = NULL };
        r->has_process_collector = true;
}

int metrics_render(MetricsRegistry *r, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        FILE *f;

        assert(r);
        assert(ret);
        assert(ret_len);

        f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;
        for (size_t i = 0; i < r->n_entries; i++) {
                if (r->entries[i].metric)
                        render_metric(f, r->entries[i].metric);
                else
                        render_process(f);
        }
        if (ferror(f) || fclose(f) != 0)
                return -ENOMEM;

        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

/* ---- upstream families ---- */

#define SERVER_PREFIX METRICS_NAMESPACE "_server_"
#define AGENT_PREFIX METRICS_NAMESPACE "_agent_"

/* pkg/server/metrics: "buckets ranging from 10 ns to 12.5 seconds" */
static const double server_latency_buckets[] = { 0.000001, 0.00001, 0.0001, 0.005, 0.025, 0.1, 0.5, 2.5, 12.5 };
static const double server_connection_duration_buckets[] = { 1, 5, 15, 30, 60, 300, 900, 1800, 3600,
                                                             14400, 43200, 86400 };
/* pkg/agent/metrics: 5 ms to 30 s */
static const double agent_latency_buckets[] = { 0.005, 0.025, 0.1, 0.5, 2.5, 10, 30 };

/* konnectivity-client/pkg/common/metrics: shared by client, server and agent */
#define HELP_STREAM_PACKETS "Count of packets processed, by segment and packet type (example: from_client, DIAL_REQ)"
#define HELP_STREAM_ERRORS                                                                              \
        "Count of gRPC stream errors, by segment, grpc Code, packet type. (example: from_agent, "      \
        "Code.Unavailable, DIAL_RSP)"

static const char *const labels_service_method[] = { "service_method", NULL };
static const char *const labels_reason[] = { "reason", NULL };
static const char *const labels_proxy_strategy[] = { "proxy_strategy", NULL };
static const char *const labels_direction[] = { "direction", NULL };
static const char *const labels_stream_packets[] = { "segment", "packet_type", NULL };
static const char *const labels_stream_errors[] = { "segment", "code", "packet_type", NULL };

int server_metrics_init(MetricsRegistry *r, ServerMetrics *ret, char *const *proxy_strategies) {
        ServerMetrics m;

        assert(r);
        assert(ret);

        /* Registered in Go's output order (sorted by name). */
        m.connection_duration = metric_new(
                r, METRIC_HISTOGRAM, SERVER_PREFIX "connection_duration_seconds",
                "Lifetime of established end-to-end connections in seconds, from the successful dial "
                "until the connection is closed.",
                NULL, server_connection_duration_buckets, ELEMENTSOF(server_connection_duration_buckets));
        if (!m.connection_duration)
                return -ENOMEM;
        m.dial_duration = metric_new(r, METRIC_HISTOGRAM, SERVER_PREFIX "dial_duration_seconds",
                                     "Latency of dial to the remote endpoint in seconds", NULL,
                                     server_latency_buckets, ELEMENTSOF(server_latency_buckets));
        if (!m.dial_duration)
                return -ENOMEM;
        m.dial_failure_count = metric_new(
                r, METRIC_COUNTER, SERVER_PREFIX "dial_failure_count",
                "Number of dial failures observed. Multiple failures can occur for a single dial request.",
                labels_reason, NULL, 0);
        if (!m.dial_failure_count)
                return -ENOMEM;
        m.established_connections = metric_new(
                r, METRIC_GAUGE, SERVER_PREFIX "established_connections",
                "Current number of established end-to-end connections (post-dial).", NULL, NULL, 0);
        if (!m.established_connections)
                return -ENOMEM;
        m.frontend_write_duration = metric_new(r, METRIC_HISTOGRAM,
                                               SERVER_PREFIX "frontend_write_duration_seconds",
                                               "Latency of write to the frontend in seconds", NULL,
                                               server_latency_buckets, ELEMENTSOF(server_latency_buckets));
        if (!m.frontend_write_duration)
                return -ENOMEM;
        m.full_receive_channels = metric_new(
                r, METRIC_GAUGE, SERVER_PREFIX "full_receive_channels",
                "Number of current connections blocked by a full receive channel, partitioned by service "
                "method.",
                labels_service_method, NULL, 0);
        if (!m.full_receive_channels)
                return -ENOMEM;
        m.grpc_connections = metric_new(r, METRIC_GAUGE, SERVER_PREFIX "grpc_connections",
                                        "Number of current grpc connections, partitioned by service method.",
                                        labels_service_method, NULL, 0);
        if (!m.grpc_connections)
                return -ENOMEM;
        m.http_connections = metric_new(r, METRIC_GAUGE, SERVER_PREFIX "http_connections",
                                        "Number of current HTTP CONNECT connections", NULL, NULL, 0);
        if (!m.http_connections)
                return -ENOMEM;
        m.pending_backend_dials = metric_new(r, METRIC_GAUGE, SERVER_PREFIX "pending_backend_dials",
                                             "Current number of pending backend dial requests", NULL, NULL, 0);
        if (!m.pending_backend_dials)
                return -ENOMEM;
        m.ready_backend_connections = metric_new(r, METRIC_GAUGE, SERVER_PREFIX "ready_backend_connections",
                                                 "Number of konnectivity agent connected to the proxy server",
                                                 NULL, NULL, 0);
        if (!m.ready_backend_connections)
                return -ENOMEM;
        m.ready_backends = metric_new(
                r, METRIC_GAUGE, SERVER_PREFIX "ready_backends",
                "Number of konnectivity agents connected to the proxy server, partitioned by proxy strategy.",
                labels_proxy_strategy, NULL, 0);
        if (!m.ready_backends)
                return -ENOMEM;
        m.stream_errors_total = metric_new(r, METRIC_COUNTER, SERVER_PREFIX "stream_errors_total",
                                           HELP_STREAM_ERRORS, labels_stream_errors, NULL, 0);
        if (!m.stream_errors_total)
                return -ENOMEM;
        m.stream_packets_total = metric_new(r, METRIC_COUNTER, SERVER_PREFIX "stream_packets_total",
                                            HELP_STREAM_PACKETS, labels_stream_packets, NULL, 0);
        if (!m.stream_packets_total)
                return -ENOMEM;

        /* Plain (non-vector) Gauge upstream, so always present; the others are set to 0 at startup. */
        metric_touch(m.http_connections, NULL);
        metric_touch(m.ready_backend_connections, NULL);
        for (size_t i = 0; proxy_strategies && proxy_strategies[i]; i++)
                metric_touch(m.ready_backends, (const char *const[]) { proxy_strategies[i] });
        if (!child_find(m.http_connections, NULL) || !child_find(m.ready_backend_connections, NULL))
                return -ENOMEM;
        for (size_t i = 0; proxy_strategies && proxy_strategies[i]; i++)
                if (!child_find(m.ready_backends, (const char *const[]) { proxy_strategies[i] }))
                        return -ENOMEM;

        *ret = m;
        return 0;
}

int agent_metrics_init(MetricsRegistry *r, AgentMetrics *ret) {
        AgentMetrics m;

        assert(r);
        assert(ret);

        m.dial_duration = metric_new(r, METRIC_HISTOGRAM, AGENT_PREFIX "dial_duration_seconds",
                                     "Latency of dial to the remote endpoint in seconds", NULL,
                                     agent_latency_buckets, ELEMENTSOF(agent_latency_buckets));
        if (!m.dial_duration)
                return -ENOMEM;
        /* §9.5: compared byte for byte by the upstream harness */
        m.endpoint_dial_failure_total = metric_new(
                r, METRIC_COUNTER, AGENT_PREFIX "endpoint_dial_failure_total",
                "Number of failures dialing the remote endpoint, by reason (example: timeout).", labels_reason,
                NULL, 0);
        if (!m.endpoint_dial_failure_total)
                return -ENOMEM;
        m.known_server_count = metric_new(r, METRIC_GAUGE, AGENT_PREFIX "known_server_count",
                                          "Current number of servers agent is trying to connect to.", NULL,
                                          NULL, 0);
        if (!m.known_server_count)
                return -ENOMEM;
        /* §9.5: compared byte for byte by the upstream harness */
        m.open_endpoint_connections = metric_new(r, METRIC_GAUGE, AGENT_PREFIX "open_endpoint_connections",
                                                 "Current number of open endpoint connections.", NULL, NULL, 0);
        if (!m.open_endpoint_connections)
                return -ENOMEM;
        m.open_server_connections = metric_new(r, METRIC_GAUGE, AGENT_PREFIX "open_server_connections",
                                               "Current number of open server connections.", NULL, NULL, 0);
        if (!m.open_server_connections)
                return -ENOMEM;
        m.server_connection_failure_count = metric_new(
                r, METRIC_COUNTER, AGENT_PREFIX "server_connection_failure_count",
                "Count of failures to send to or receive from the proxy server, labeled by the direction "
                "(from_server or to_server). DEPRECATED, please use stream_events_error_total",
                labels_direction, NULL, 0);
        if (!m.server_connection_failure_count)
                return -ENOMEM;
        m.stream_errors_total = metric_new(r, METRIC_COUNTER, AGENT_PREFIX "stream_errors_total",
                                           HELP_STREAM_ERRORS, labels_stream_errors, NULL, 0);
        if (!m.stream_errors_total)
                return -ENOMEM;
        m.stream_packets_total = metric_new(r, METRIC_COUNTER, AGENT_PREFIX "stream_packets_total",
                                            HELP_STREAM_PACKETS, labels_stream_packets, NULL, 0);
        if (!m.stream_packets_total)
                return -ENOMEM;

        /* A plain (non-vector) Gauge upstream: always present. */
        metric_touch(m.known_server_count, NULL);
        if (!child_find(m.known_server_count, NULL))
                return -ENOMEM;

        *ret = m;
        return 0;
}
