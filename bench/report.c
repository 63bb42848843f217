/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "bench.h"

/* ---------------------------------------------------------------------------------------------- */
/* Scenarios and results. */


const char *const scenario_name[_SCENARIO_MAX] = {
        [SCENARIO_UPLOAD] = "upload",
        [SCENARIO_DOWNLOAD] = "download",
        [SCENARIO_ECHO] = "echo",
        [SCENARIO_ECHO_MANY] = "echo-many",
        [SCENARIO_DIAL] = "dial",
        [SCENARIO_DIAL_CONCURRENT] = "dial-concurrent",
        [SCENARIO_IDLE_RSS] = "idle-rss",
        [SCENARIO_IDLE_TUNNELS] = "idle-tunnels",
        [SCENARIO_HOL] = "hol",
        [SCENARIO_ECHO_1000] = "echo-1000",
};

/* Execution order: memory first, while the daemons are fresh; echo-many, the heaviest, last. */
const Scenario scenario_order[_SCENARIO_MAX] = {
        SCENARIO_IDLE_RSS, SCENARIO_IDLE_TUNNELS, SCENARIO_DIAL, SCENARIO_DIAL_CONCURRENT, SCENARIO_UPLOAD,
        SCENARIO_DOWNLOAD, SCENARIO_ECHO,         SCENARIO_HOL,  SCENARIO_ECHO_MANY, SCENARIO_ECHO_1000,
};

const Role scenario_role[_SCENARIO_MAX] = {
        [SCENARIO_UPLOAD] = ROLE_SINK,
        [SCENARIO_DOWNLOAD] = ROLE_SOURCE,
        [SCENARIO_ECHO] = ROLE_ECHO,
};

bool scenario_enabled(Scenario sc) {
        return arg_scenarios == 0 || (arg_scenarios & (1U << sc));
}





const char *const daemon_name[2] = { "server", "agent" };

/* Finds or adds the row (scenario, name, metric). NULL if the table is full (then nothing is recorded). */
Row *row(Bench *b, Scenario sc, const char *name, const char *metric, const char *unit,
                unsigned decimals, TargetKind target, double target_value) {
        Row *r;

        for (unsigned i = 0; i < b->n_rows; i++)
                if (b->rows[i].scenario == sc && streq(b->rows[i].name, name) &&
                    streq(b->rows[i].metric, metric))
                        return &b->rows[i];
        if (b->n_rows >= ROWS_MAX)
                return NULL;
        r = &b->rows[b->n_rows++];
        *r = (Row) {
                .scenario = sc,
                .unit = unit,
                .decimals = decimals,
                .target = target,
                .target_value = target_value,
        };
        (void) snprintf(r->name, sizeof(r->name), "%s", name);
        (void) snprintf(r->metric, sizeof(r->metric), "%s", metric);
        return r;
}

void row_add(Row *r, Transport tr, double v) {
        if (r && r->n[tr] < RUNS_MAX)
                r->v[tr][r->n[tr]++] = v;
}

static double rusage_cpu_s(void) {
        struct rusage ru;

        if (getrusage(RUSAGE_SELF, &ru) < 0)
                return 0;
        return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 +
               (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds of this process (client and thread targets) plus the target child process. */
double client_target_cpu_s(const Bench *b) {
        uint64_t ticks = 0;
        double s = rusage_cpu_s();

        if (b->target.pid > 0 && proc_cpu_ticks(b->target.pid, &ticks) >= 0)
                s += (double) ticks / (double) b->clk_tck;
        return s;
}

bool have_daemon_pids(void) {
        return arg_server_pid > 0 && arg_agent_pid > 0;
}

int daemons_cpu(uint64_t ret_ticks[2]) {
        uint64_t t[2] = {};
        int r;

        r = proc_cpu_ticks(arg_server_pid, &t[0]);
        if (r < 0)
                return r;
        r = proc_cpu_ticks(arg_agent_pid, &t[1]);
        if (r < 0)
                return r;
        ret_ticks[0] = t[0];
        ret_ticks[1] = t[1];
        return 0;
}


int cpu_mark(Transport tr, CpuMark *ret) {
        CpuMark m = {};
        int r;

        if (tr == TRANSPORT_KONN && have_daemon_pids()) {
                r = daemons_cpu(m.ticks);
                if (r < 0) {
                        fail("cannot read the daemons' /proc/PID/stat (did one exit?): %s", strerror(-r));
                        return r;
                }
                m.valid = true;
        }
        *ret = m;
        return 0;
}

/* CPU seconds of each daemon since start; false if start is not valid. */
int cpu_since(const Bench *b, const CpuMark *start, double ret_s[2]) {
        uint64_t t[2];
        int r;

        if (!start->valid)
                return 0;
        r = daemons_cpu(t);
        if (r < 0) {
                fail("cannot read the daemons' /proc/PID/stat (did one exit?): %s", strerror(-r));
                return r;
        }
        ret_s[0] = (double) (t[0] - start->ticks[0]) / (double) b->clk_tck;
        ret_s[1] = (double) (t[1] - start->ticks[1]) / (double) b->clk_tck;
        return 1;
}

/* Samples both daemons' memory until two samples 100 ms apart agree (at least SETTLE_MIN_USEC after
 * the call, at most SETTLE_MAX_USEC). */
int daemons_mem_settled(ProcMem ret[2]) {
        uint64_t start = now_usec();
        ProcMem prev[2] = {}, cur[2] = {};
        int r;

        sleep_usec(SETTLE_MIN_USEC);
        for (;;) {
                r = proc_mem(arg_server_pid, &cur[0]);
                if (r >= 0)
                        r = proc_mem(arg_agent_pid, &cur[1]);
                if (r < 0) {
                        fail("cannot read the daemons' /proc/PID/status (did one exit?): %s", strerror(-r));
                        return r;
                }
                if (prev[0].valid && prev[0].vmrss_kib == cur[0].vmrss_kib &&
                    prev[0].rssanon_kib == cur[0].rssanon_kib && prev[1].vmrss_kib == cur[1].vmrss_kib &&
                    prev[1].rssanon_kib == cur[1].rssanon_kib)
                        break;
                if (now_usec() - start >= SETTLE_MAX_USEC)
                        break;
                prev[0] = cur[0];
                prev[1] = cur[1];
                sleep_usec(100 * USEC_PER_MSEC);
        }
        ret[0] = cur[0];
        ret[1] = cur[1];
        return 0;
}

double mib_per_s(uint64_t bytes, double seconds) {
        return seconds > 0 ? (double) bytes / MIB_F / seconds : 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Report: medians of the runs (or sums, for counts), konn/direct, the issue's target. */

double median(const double *v, unsigned n) {
        double s[RUNS_MAX];

        assert(n > 0 && n <= RUNS_MAX);
        memcpy(s, v, n * sizeof(double));
        for (unsigned i = 1; i < n; i++)
                for (unsigned j = i; j > 0 && s[j - 1] > s[j]; j--) {
                        double x = s[j];

                        s[j] = s[j - 1];
                        s[j - 1] = x;
                }
        return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static bool row_value(const Row *r, Transport tr, double *ret) {
        double sum = 0;

        if (r->n[tr] == 0)
                return false;
        if (!r->sum) {
                *ret = median(r->v[tr], r->n[tr]);
                return true;
        }
        for (unsigned i = 0; i < r->n[tr]; i++)
                sum += r->v[tr][i];
        *ret = sum;
        return true;
}

static bool row_ratio(const Row *r, double *ret) {
        double d, k;

        if (r->sum || r->no_ratio || !row_value(r, TRANSPORT_DIRECT, &d) ||
            !row_value(r, TRANSPORT_KONN, &k) || d <= 0)
                return false;
        *ret = k / d;
        return true;
}

/* 1 met, 0 missed, -1 no target or no figure. */
static int row_met(const Row *r) {
        double v;

        switch (r->target) {
        case TARGET_RATIO_MIN:
                return row_ratio(r, &v) ? v >= r->target_value : -1;
        case TARGET_RATIO_MAX:
                return row_ratio(r, &v) ? v <= r->target_value : -1;
        case TARGET_KONN_MIN:
                return row_value(r, TRANSPORT_KONN, &v) ? v >= r->target_value : -1;
        case TARGET_KONN_MAX:
                return row_value(r, TRANSPORT_KONN, &v) ? v <= r->target_value : -1;
        default:
                return -1;
        }
}

static void format_target(const Row *r, char *buf, size_t size) {
        switch (r->target) {
        case TARGET_RATIO_MIN:
                (void) snprintf(buf, size, "ratio >= %.2f", r->target_value);
                break;
        case TARGET_RATIO_MAX:
                (void) snprintf(buf, size, "ratio <= %.2f", r->target_value);
                break;
        case TARGET_KONN_MIN:
                (void) snprintf(buf, size, "konn >= %g", r->target_value);
                break;
        case TARGET_KONN_MAX:
                (void) snprintf(buf, size, "konn <= %g", r->target_value);
                break;
        default:
                (void) snprintf(buf, size, "-");
        }
}

static void format_value(const Row *r, Transport tr, char *buf, size_t size) {
        double v;

        if (!row_value(r, tr, &v))
                (void) snprintf(buf, size, "-");
        else
                (void) snprintf(buf, size, "%.*f", (int) r->decimals, v);
}

static void format_size(char *buf, size_t size, uint64_t bytes) {
        if (bytes % (1ULL << 30) == 0)
                (void) snprintf(buf, size, "%" PRIu64 " GiB", bytes >> 30);
        else if (bytes % (1ULL << 20) == 0)
                (void) snprintf(buf, size, "%" PRIu64 " MiB", bytes >> 20);
        else
                (void) snprintf(buf, size, "%" PRIu64 " bytes", bytes);
}


void print_table(const Bench *b) {
        char size[32], tsize[32];

        format_size(size, sizeof(size), arg_size);
        format_size(tsize, sizeof(tsize), arg_tunnel_size);
        printf("konn-bench %s: %u run%s (figures are medians; counts are sums), %ld CPUs online.\n",
               PACKAGE_VERSION, arg_runs, arg_runs == 1 ? "" : "s", sysconf(_SC_NPROCESSORS_ONLN));
        printf("bulk %s per direction, %zu KiB buffers; echo-many %u x %s; dial %u sequential, %u by %u "
               "dialers;\nidle-tunnels",
               size, arg_buffer_size / 1024, arg_tunnels, tsize, arg_dials, arg_concurrent_dials,
               arg_dialers);
        for (unsigned i = 0; i < arg_n_idle_tunnels; i++)
                printf("%s%u", i == 0 ? " " : ",", arg_idle_tunnels[i]);
        printf("; hol %u s per measurement.\nkonn: a konn-server/konn-agent pair in %s mode%s.\n",
               arg_hol_seconds, arg_konn_classic ? "classic (--tunnel-streams=false)" : "konn-to-konn",
               arg_classic_uds ? "; hol classic: a second pair with --tunnel-streams=false" : "");
        printf("1 MiB = 1048576 bytes. ratio = konn / direct. CPU = konn-server + konn-agent "
               "utime+stime.\n\n");
        printf(ROW_FORMAT, "scenario", "metric", "direct", "konn", "ratio", "target", "met");

        for (Scenario sc = 0; sc < _SCENARIO_MAX; sc++)
                for (unsigned i = 0; i < b->n_rows; i++) {
                        const Row *r = &b->rows[i];
                        char metric[64], direct[32], konn[32], ratio[32] = "-", target[32];
                        double v;
                        int met;

                        if (r->scenario != sc)
                                continue;
                        if (isempty(r->unit))
                                (void) snprintf(metric, sizeof(metric), "%s", r->metric);
                        else
                                (void) snprintf(metric, sizeof(metric), "%s [%s]", r->metric, r->unit);
                        format_value(r, TRANSPORT_DIRECT, direct, sizeof(direct));
                        format_value(r, TRANSPORT_KONN, konn, sizeof(konn));
                        if (row_ratio(r, &v))
                                (void) snprintf(ratio, sizeof(ratio), "%.3f", v);
                        format_target(r, target, sizeof(target));
                        met = row_met(r);
                        printf(ROW_FORMAT, r->name, metric, direct, konn, ratio, target,
                               met < 0 ? "" : met ? "yes" : "NO");
                }

        for (unsigned i = 0; i < 2; i++) {
                const ProcMem *s = &b->mem_idle[i], *e = &b->mem_end[i];

                if (!e->valid)
                        continue;
                if (i == 0)
                        printf("\n");
                printf("konn-%-6s VmRSS %" PRIu64 " KiB, RssAnon %" PRIu64 " KiB, VmHWM %" PRIu64
                       " KiB after the run",
                       daemon_name[i], e->vmrss_kib, e->rssanon_kib, e->vmhwm_kib);
                if (s->valid)
                        printf(" (idle: VmRSS %" PRIu64 " KiB, RssAnon %" PRIu64 " KiB)", s->vmrss_kib,
                               s->rssanon_kib);
                printf("\n");
        }
}

/* The performance issue's targets, one line each: met, NOT met, or not measured in this run (scenario not run, or
 * the figure is missing). Every line points at the rows above that decide it. */
static const struct {
        const char *what;
        Scenario scenario;
        const char *name;   /* row name; NULL: every row of the scenario that has a target */
} issue_targets[] = {
        { "efficiency >= 0.8, single-tunnel upload", SCENARIO_UPLOAD, NULL },
        { "efficiency >= 0.8, single-tunnel download", SCENARIO_DOWNLOAD, NULL },
        { "efficiency >= 0.8, 100-tunnel echo", SCENARIO_ECHO_MANY, NULL },
        { "1 000 concurrently echoing tunnels complete (konn-to-konn)", SCENARIO_ECHO_1000, "echo-1000" },
        { "1 000 concurrently echoing tunnels complete (classic)", SCENARIO_ECHO_1000, "echo-1000 classic" },
        { "sequential dial p50 <= 3x direct", SCENARIO_DIAL, NULL },
        { "200 concurrent dialers >= 0.5 of direct dials/s", SCENARIO_DIAL_CONCURRENT, NULL },
        { "head-of-line ratio >= 0.9 (konn-to-konn)", SCENARIO_HOL, NULL },
        { "idle RssAnon <= 2 MiB per daemon", SCENARIO_IDLE_RSS, NULL },
        { "idle tunnels at 10 000: <= 3 / 2 KiB each, RSS idle + 1 MiB 1 s after close", SCENARIO_IDLE_TUNNELS,
          "idle-tunnels 10000" },
};

/* How many of the target's rows were judged (*ret_n) and met (*ret_met); name overrides the target's row name. */
static void target_count(const Bench *b, size_t t, const char *name, unsigned *ret_n, unsigned *ret_met) {
        unsigned n = 0, met = 0;

        name = name ?: issue_targets[t].name;
        for (unsigned i = 0; i < b->n_rows; i++) {
                const Row *r = &b->rows[i];
                int k;

                if (r->scenario != issue_targets[t].scenario || r->target == TARGET_NONE)
                        continue;
                if (name && !streq(r->name, name))
                        continue;
                k = row_met(r);
                if (k < 0)
                        continue;
                n++;
                met += k;
        }
        *ret_n = n;
        *ret_met = met;
}

void print_targets(const Bench *b) {
        printf("\nTargets of the performance issue (met / NOT met / not measured):\n");
        for (size_t t = 0; t < ELEMENTSOF(issue_targets); t++) {
                unsigned n, met, largest = 0;
                char at[64] = "";

                target_count(b, t, NULL, &n, &met);
                if (n == 0 && issue_targets[t].scenario == SCENARIO_IDLE_TUNNELS) {
                        /* 10 000 needs 2 x 10 000 + 512 descriptors in konn-bench; where the hard limit is lower,
                         * judge the largest count that ran, and say so. */
                        char name[64];

                        for (unsigned i = 0; i < arg_n_idle_tunnels; i++)
                                largest = MAX(largest, arg_idle_tunnels[i]);
                        (void) snprintf(name, sizeof(name), "idle-tunnels %u", largest);
                        if (largest >= IDLE_TARGET_MIN_TUNNELS)
                                target_count(b, t, name, &n, &met);
                        if (n > 0)
                                (void) snprintf(at, sizeof(at), " at %u tunnels (10 000 not run)", largest);
                }
                printf("  %-78s %s%s\n", issue_targets[t].what,
                       n == 0 ? "not measured" : met == n ? "met" : "NOT met", at);
        }
        printf("  %-78s %s\n", "long link (20 ms each way): >= 0.8 of plain TCP each direction, >= 0.5 with 1 % loss",
               "not measured by konn-bench (needs the fault suite's network namespaces)");
}

static void json_number(FILE *f, bool have, double v) {
        if (have)
                fprintf(f, "%.6g", v);
        else
                fputs("null", f);
}

static void json_runs(FILE *f, const Row *r, Transport tr) {
        fputc('[', f);
        for (unsigned i = 0; i < r->n[tr]; i++)
                fprintf(f, "%s%.6g", i == 0 ? "" : ", ", r->v[tr][i]);
        fputc(']', f);
}

static void json_mem(FILE *f, const ProcMem *m) {
        if (!m->valid) {
                fputs("null", f);
                return;
        }
        fprintf(f, "{\"vmrss_kib\": %" PRIu64 ", \"rssanon_kib\": %" PRIu64 ", \"vmhwm_kib\": %" PRIu64 "}",
                m->vmrss_kib, m->rssanon_kib, m->vmhwm_kib);
}

int write_json(const Bench *b, const char *path, bool ok) {
        static const char *const target_kind[] = {
                [TARGET_NONE] = NULL,
                [TARGET_RATIO_MIN] = "ratio_min",
                [TARGET_RATIO_MAX] = "ratio_max",
                [TARGET_KONN_MIN] = "konn_min",
                [TARGET_KONN_MAX] = "konn_max",
        };
        bool first = true;
        unsigned n = 0;
        FILE *f;

        f = fopen(path, "we");
        if (!f)
                return negative_errno();

        fprintf(f, "{\n  \"tool\": \"konn-bench\",\n  \"version\": \"%s\",\n  \"ok\": %s,\n",
                PACKAGE_VERSION, ok ? "true" : "false");
        fprintf(f, "  \"runs\": %u,\n  \"cpus_online\": %ld,\n", arg_runs, sysconf(_SC_NPROCESSORS_ONLN));
        fprintf(f,
                "  \"parameters\": {\"bulk_bytes\": %" PRIu64 ", \"buffer_bytes\": %zu, \"tunnels\": %u, "
                "\"tunnel_bytes\": %" PRIu64 ", \"dials\": %u, \"dialers\": %u, \"concurrent_dials\": %u, "
                "\"idle_tunnels\": [",
                arg_size, arg_buffer_size, arg_tunnels, arg_tunnel_size, arg_dials, arg_dialers,
                arg_concurrent_dials);
        for (unsigned i = 0; i < arg_n_idle_tunnels; i++)
                fprintf(f, "%s%u", i == 0 ? "" : ", ", arg_idle_tunnels[i]);
        fprintf(f,
                "], \"hol_seconds\": %u, \"hol_stall_seconds\": %u, \"timeout_s\": %u, "
                "\"konn_mode\": \"%s\", \"classic_pair\": %s},\n",
                arg_hol_seconds,
                (unsigned) (MIN(HOL_STALL_USEC, (uint64_t) arg_hol_seconds * USEC_PER_SEC) / USEC_PER_SEC),
                arg_timeout_sec, arg_konn_classic ? "classic" : "konn-to-konn",
                arg_classic_uds ? "true" : "false");
        fputs("  \"notes\": \"1 MiB = 1048576 bytes; direct/konn are medians of the runs (sums for "
              "'runs where' counts); ratio = konn/direct; CPU = konn-server + konn-agent utime+stime; "
              "per-direction throughput for echo scenarios; CPU per GiB counts both directions\",\n",
              f);
        fputs("  \"failed\": [", f);
        for (Scenario sc = 0; sc < _SCENARIO_MAX; sc++)
                if (b->failed & (1U << sc))
                        fprintf(f, "%s\"%s\"", n++ == 0 ? "" : ", ", scenario_name[sc]);
        fputs("],\n", f);
        fputs("  \"rows\": [", f);
        for (Scenario sc = 0; sc < _SCENARIO_MAX; sc++)
                for (unsigned i = 0; i < b->n_rows; i++) {
                        const Row *r = &b->rows[i];
                        double v;
                        bool have;
                        int met;

                        if (r->scenario != sc)
                                continue;
                        fprintf(f,
                                "%s\n    {\"scenario\": \"%s\", \"name\": \"%s\", \"metric\": \"%s\", "
                                "\"unit\": \"%s\"",
                                first ? "" : ",", scenario_name[sc], r->name, r->metric, r->unit);
                        fputs(", \"direct\": ", f);
                        have = row_value(r, TRANSPORT_DIRECT, &v);
                        json_number(f, have, v);
                        fputs(", \"konn\": ", f);
                        have = row_value(r, TRANSPORT_KONN, &v);
                        json_number(f, have, v);
                        fputs(", \"ratio\": ", f);
                        have = row_ratio(r, &v);
                        json_number(f, have, v);
                        if (r->target == TARGET_NONE)
                                fputs(", \"target\": null", f);
                        else
                                fprintf(f, ", \"target\": {\"kind\": \"%s\", \"value\": %g}",
                                        target_kind[r->target], r->target_value);
                        met = row_met(r);
                        fprintf(f, ", \"met\": %s", met < 0 ? "null" : met ? "true" : "false");
                        fprintf(f, ", \"aggregate\": \"%s\", \"direct_runs\": ", r->sum ? "sum" : "median");
                        json_runs(f, r, TRANSPORT_DIRECT);
                        fputs(", \"konn_runs\": ", f);
                        json_runs(f, r, TRANSPORT_KONN);
                        fputc('}', f);
                        first = false;
                }
        fputs("\n  ],\n  \"daemons\": {\n", f);
        for (unsigned i = 0; i < 2; i++) {
                pid_t pid = i == 0 ? arg_server_pid : arg_agent_pid;

                fprintf(f, "    \"%s\": {\"pid\": ", daemon_name[i]);
                if (pid > 0)
                        fprintf(f, "%d", (int) pid);
                else
                        fputs("null", f);
                fputs(", \"idle\": ", f);
                json_mem(f, &b->mem_idle[i]);
                fputs(", \"end\": ", f);
                json_mem(f, &b->mem_end[i]);
                fprintf(f, "}%s\n", i == 0 ? "," : "");
        }
        fputs("  }\n}\n", f);

        if (ferror(f)) {
                fclose(f);
                return -EIO;
        }
        if (fclose(f) != 0)
                return negative_errno();
        return 0;
}
