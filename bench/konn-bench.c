/* SPDX-License-Identifier: Apache-2.0 */
/*
 * konn-bench — the konn benchmark suite: every scenario is run over direct loopback TCP and through a
 * running konn-server/konn-agent pair (HTTP CONNECT on the server's Unix socket) in the same run, and
 * reported side by side (absolute figures and the konn/direct ratio) as a table and as JSON.
 * Owns its loopback targets, the client side of every scenario and the report. The daemons are started
 * and stopped by bench/run-bench.sh; this program only reads their /proc entries.
 *
 * Targets. Bulk scenarios use three thread-served listeners in this process (sink, source, echo; one
 * connection at a time, each reporting the XXH64 of what it received). Everything with many connections
 * uses a target child process (forked at start, so that 10 000 tunnels need 10 000 descriptors per
 * process, not 20 000) running one epoll loop over four listeners: echo (a 16-byte header {size, seed},
 * then exactly size bytes, verified and echoed, then close), hello (one byte on accept, then idle until
 * the peer closes), flood and stall (header {0, seed}, then the stream until the peer goes away; stall
 * is flood on its own port and counters, for the head-of-line scenario). The child publishes per
 * listener counters (accepted, closed, bytes, failures) in a shared mapping that only it writes; it
 * exits when the pipe from this process closes (or this process dies: PR_SET_PDEATHSIG).
 *
 * Scenarios (names for --scenarios), in the order they run:
 *   idle-rss      VmRSS and RssAnon of both daemons at start (after one agent connection);
 *   idle-tunnels  for each N of --idle-tunnels (1000,10000; all runs of one N, then the next): open N
 *                 tunnels to hello, wait until every one has delivered its byte, sample the daemons:
 *                 (RSS - idle RSS) / N; close them all, wait until the target saw every close, sample
 *                 again: RSS - idle RSS; direct opens the same N connections (the open rate is the paired
 *                 figure);
 *   dial          sequential: connect (+ CONNECT) until the target's first byte, --dials times, p50/p99;
 *                 and its wake-up floor, measured in the same run: one process wake-up from CPU 0 to CPU 1,
 *                 times the wake-ups a first byte needs (2 direct, 6 through konn);
 *   dial-concurrent  --dialers clients dialling back to back, --concurrent-dials in all: p50/p99, dials/s;
 *   upload, download, echo  one tunnel, --size bytes (echo: both directions at once), XXH64-checked;
 *   hol           head-of-line: tunnel A downloads for --hol-seconds alone, then again while tunnel B's
 *                 target floods and its client never reads; A's throughput with B stalled / A alone.
 *                 Through the pair at --konn-uds (konn-to-konn mode unless --konn-mode=classic says
 *                 otherwise) and, with --classic-uds, a second pair running the classic single-stream
 *                 protocol. A that makes no progress for 3 s (or for the whole measurement, if that is
 *                 shorter) counts as stalled: 0 MiB/s;
 *   echo-many     --tunnels tunnels x --tunnel-size bytes echoed at once, aggregate MiB/s per direction,
 *                 verified byte for byte by the target and by the client;
 *   echo-1000     the same with --many-tunnels (1000) x --many-tunnel-size (1M), through the konn pair and,
 *                 with --classic-uds, the classic pair: every tunnel must complete (last: the heaviest).
 * Bulk scenarios also report the physical floor measured in the same run: AES-128-GCM bytes per second of
 * one core at 16 KiB (`openssl speed -evp`), floor CPU per GiB = 2 x (client + target CPU per GiB of the
 * direct run) + 2 / AES bytes per second, and efficiency = floor / (server + agent CPU per GiB). The
 * closing list names every target of the performance issue as met, NOT met or not measured.
 * Files: konn-bench.c (this: options, open-file limits, the run), bench.h (what the others share), util.c
 * (payload generator, XXH64, socket I/O with deadlines, blocking client connections, /proc accounting),
 * target.c (thread targets and the target child), conns.c (many non-blocking client connections on one
 * epoll loop), report.c (rows, CPU marks, the physical floor, table, targets, JSON), bulk.c (upload,
 * download, echo), many.c (echo-many, echo-1000, idle-rss, idle-tunnels), dial.c, hol.c.
 * A failed scenario is reported and the others still run. Daemon CPU (utime+stime of --server-pid and
 * --agent-pid) is reported per GiB carried for the bulk scenarios and per dial for the dial scenarios.
 * --runs=N repeats each scenario (direct and konn alternately) and reports medians. Nothing here judges
 * the figures: the table shows the targets, but the exit status only says whether every
 * scenario ran and verified.
 */
#include "config.h"

#include "bench.h"

const char *arg_konn_uds = NULL;
const char *arg_classic_uds = NULL;
/* --konn-mode=classic: the --konn-uds pair runs --tunnel-streams=false */
bool arg_konn_classic = false;
uint64_t arg_size = BENCH_DEFAULT_SIZE;
size_t arg_buffer_size = BENCH_DEFAULT_BUFFER;
unsigned arg_timeout_sec = BENCH_DEFAULT_TIMEOUT_SEC;
static const char *arg_json = NULL;
pid_t arg_server_pid = 0;
pid_t arg_agent_pid = 0;
unsigned arg_scenarios = 0; /* bit mask of Scenario; 0 = all */
static bool arg_self_test = false;
static bool arg_smoke = false;
unsigned arg_runs = 1;
unsigned arg_tunnels = 100;
uint64_t arg_tunnel_size = (uint64_t) 8 << 20;
unsigned arg_many_tunnels = 1000;                /* echo-1000 */
uint64_t arg_many_tunnel_size = (uint64_t) 1 << 20;
unsigned arg_dials = 1000;
unsigned arg_dialers = 200;
unsigned arg_concurrent_dials = 2000;
unsigned arg_idle_tunnels[IDLE_STEPS_MAX] = { 1000, 10000 };
unsigned arg_n_idle_tunnels = 2;
unsigned arg_hol_seconds = 5;

/* ---------------------------------------------------------------------------------------------- */
/* Command line. */

static int parse_u64(const char *s, uint64_t *ret_value, char **ret_end) {
        char *end;
        unsigned long long v;

        if (!s || !(*s >= '0' && *s <= '9'))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (errno != 0 || end == s)
                return -EINVAL;
        *ret_value = v;
        *ret_end = end;
        return 0;
}

/* "65536", "64K", "64M", "1G", "1T", optionally followed by "iB" (binary units always). */
static int parse_size(const char *s, uint64_t *ret_size) {
        uint64_t v, mult = 1;
        char *end;
        int r;

        r = parse_u64(s, &v, &end);
        if (r < 0)
                return r;
        switch (*end) {
        case 'k': case 'K': mult = 1ULL << 10; end++; break;
        case 'm': case 'M': mult = 1ULL << 20; end++; break;
        case 'g': case 'G': mult = 1ULL << 30; end++; break;
        case 't': case 'T': mult = 1ULL << 40; end++; break;
        default: break;
        }
        if (mult > 1 && streq(end, "iB"))
                end += 2;
        if (*end != '\0')
                return -EINVAL;
        if (v > UINT64_MAX / mult)
                return -ERANGE;
        *ret_size = v * mult;
        return 0;
}

static int parse_pid(const char *s, pid_t *ret_pid) {
        uint64_t v;
        char *end;
        int r;

        r = parse_u64(s, &v, &end);
        if (r < 0)
                return r;
        if (*end != '\0')
                return -EINVAL;
        if (v == 0 || v > INT_MAX)
                return -ERANGE;
        *ret_pid = (pid_t) v;
        return 0;
}

static int parse_unsigned(const char *s, unsigned min, unsigned max, unsigned *ret) {
        uint64_t v;
        char *end;
        int r;

        r = parse_u64(s, &v, &end);
        if (r < 0)
                return r;
        if (*end != '\0')
                return -EINVAL;
        if (v < min || v > max)
                return -ERANGE;
        *ret = (unsigned) v;
        return 0;
}

static int parse_scenarios(const char *s, unsigned *ret_mask) {
        _cleanup_free_ char *copy = strdup(s);
        char *save = NULL;
        unsigned mask = 0;

        if (!copy)
                return -ENOMEM;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                Scenario sc;

                for (sc = 0; sc < _SCENARIO_MAX; sc++)
                        if (streq(tok, scenario_name[sc]))
                                break;
                if (sc == _SCENARIO_MAX)
                        return -EINVAL;
                mask |= 1U << sc;
        }
        if (mask == 0)
                return -EINVAL;
        *ret_mask = mask;
        return 0;
}

static int parse_idle_tunnels(const char *s, unsigned ret[IDLE_STEPS_MAX], unsigned *ret_n) {
        _cleanup_free_ char *copy = strdup(s);
        unsigned v[IDLE_STEPS_MAX], n = 0;
        char *save = NULL;
        int r;

        if (!copy)
                return -ENOMEM;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (n >= IDLE_STEPS_MAX)
                        return -E2BIG;
                r = parse_unsigned(tok, 1, IDLE_TUNNELS_MAX, &v[n]);
                if (r < 0)
                        return r;
                for (unsigned i = 0; i < n; i++)
                        if (v[i] == v[n])
                                return -EINVAL; /* one row per count */
                n++;
        }
        if (n == 0)
                return -EINVAL;
        memcpy(ret, v, n * sizeof(unsigned));
        *ret_n = n;
        return 0;
}

static void help(void) {
        printf("Usage: konn-bench [OPTIONS...]\n\n"
               "Benchmark suite: each scenario over direct loopback TCP and through konn, side by side.\n\n"
               "  -h --help               Show this help and exit\n"
               "     --version            Show the version and exit\n"
               "     --konn-uds=PATH      konn-server HTTP CONNECT Unix socket (without it: direct only)\n"
               "     --classic-uds=PATH   A second pair running --tunnel-streams=false (hol only)\n"
               "     --konn-mode=MODE     What the --konn-uds pair runs, for the labels:\n"
               "                          konn-to-konn (default) or classic\n"
               "     --server-pid=PID     konn-server of --konn-uds, for CPU and memory figures\n"
               "     --agent-pid=PID      konn-agent of --konn-uds, for CPU and memory figures\n"
               "     --scenarios=LIST     Comma-separated, default all: upload,download,echo,\n"
               "                          echo-many,echo-1000,dial,dial-concurrent,idle-rss,\n"
               "                          idle-tunnels,hol\n"
               "     --runs=N             Repeat every scenario N times, report medians (default: 1)\n"
               "     --smoke              Small sizes for CI: 64M bulk, 10 x 1M echo-many, 50 dials\n"
               "                          (100 by 10 dialers), 100 idle tunnels, 1 s hol; the other\n"
               "                          options override it\n"
               "     --size=SIZE          Bulk bytes per scenario and direction (default: 1G)\n"
               "     --buffer-size=SIZE   read()/write() buffer size (default: 256K)\n"
               "     --tunnels=N          echo-many tunnels (default: 100)\n"
               "     --tunnel-size=SIZE   echo-many bytes per tunnel and direction (default: 8M)\n"
               "     --many-tunnels=N     echo-1000 tunnels (default: 1000)\n"
               "     --many-tunnel-size=SIZE  echo-1000 bytes per tunnel and direction (default: 1M)\n"
               "     --dials=N            Sequential dials (default: 1000)\n"
               "     --dialers=N          Concurrent dialers (default: 200)\n"
               "     --concurrent-dials=N Dials made by the concurrent dialers in all (default: 2000)\n"
               "     --idle-tunnels=LIST  Idle tunnel counts, comma-separated (default: 1000,10000)\n"
               "     --hol-seconds=SEC    Length of each head-of-line measurement (default: 5)\n"
               "     --timeout=SEC        Abort a scenario run after SEC seconds (default: %u)\n"
               "     --json=FILE          Also write the results as JSON to FILE\n"
               "     --self-test          Check the checksum and payload generator against known answers\n\n"
               "Exit status: 0 all scenarios ran and verified, 1 a scenario failed, 2 usage error.\n",
               BENCH_DEFAULT_TIMEOUT_SEC);
}

enum {
        ARG_VERSION = 0x100,
        ARG_KONN_UDS,
        ARG_CLASSIC_UDS,
        ARG_KONN_MODE,
        ARG_SIZE,
        ARG_BUFFER_SIZE,
        ARG_SCENARIOS,
        ARG_TIMEOUT,
        ARG_SERVER_PID,
        ARG_AGENT_PID,
        ARG_JSON,
        ARG_SELF_TEST,
        ARG_SMOKE,
        ARG_RUNS,
        ARG_TUNNELS,
        ARG_TUNNEL_SIZE,
        ARG_MANY_TUNNELS,
        ARG_MANY_TUNNEL_SIZE,
        ARG_DIALS,
        ARG_DIALERS,
        ARG_CONCURRENT_DIALS,
        ARG_IDLE_TUNNELS,
        ARG_HOL_SECONDS,
};

static void apply_smoke(void) {
        arg_smoke = true;
        arg_size = (uint64_t) 64 << 20;
        arg_tunnels = 10;
        arg_tunnel_size = (uint64_t) 1 << 20;
        arg_dials = 50;
        arg_dialers = 10;
        arg_concurrent_dials = 100;
        arg_idle_tunnels[0] = 100;
        arg_n_idle_tunnels = 1;
        arg_hol_seconds = 1;
        arg_many_tunnels = 200;
        arg_many_tunnel_size = (uint64_t) 256 << 10;
}

/* 1: continue, 0: exit successfully (--help), < 0: usage error (already reported). */
static int parse_argv(int argc, char *argv[]) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "konn-uds", required_argument, NULL, ARG_KONN_UDS },
                { "classic-uds", required_argument, NULL, ARG_CLASSIC_UDS },
                { "konn-mode", required_argument, NULL, ARG_KONN_MODE },
                { "size", required_argument, NULL, ARG_SIZE },
                { "buffer-size", required_argument, NULL, ARG_BUFFER_SIZE },
                { "scenarios", required_argument, NULL, ARG_SCENARIOS },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "server-pid", required_argument, NULL, ARG_SERVER_PID },
                { "agent-pid", required_argument, NULL, ARG_AGENT_PID },
                { "json", required_argument, NULL, ARG_JSON },
                { "self-test", no_argument, NULL, ARG_SELF_TEST },
                { "smoke", no_argument, NULL, ARG_SMOKE },
                { "runs", required_argument, NULL, ARG_RUNS },
                { "tunnels", required_argument, NULL, ARG_TUNNELS },
                { "tunnel-size", required_argument, NULL, ARG_TUNNEL_SIZE },
                { "many-tunnels", required_argument, NULL, ARG_MANY_TUNNELS },
                { "many-tunnel-size", required_argument, NULL, ARG_MANY_TUNNEL_SIZE },
                { "dials", required_argument, NULL, ARG_DIALS },
                { "dialers", required_argument, NULL, ARG_DIALERS },
                { "concurrent-dials", required_argument, NULL, ARG_CONCURRENT_DIALS },
                { "idle-tunnels", required_argument, NULL, ARG_IDLE_TUNNELS },
                { "hol-seconds", required_argument, NULL, ARG_HOL_SECONDS },
                {}
        };
        uint64_t v;
        int c, r;

        /* --smoke sets defaults; the options given with it override them wherever they stand. */
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--"))
                        break;
                if (streq(argv[i], "--smoke"))
                        apply_smoke();
        }

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("konn-bench %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_KONN_UDS:
                case ARG_CLASSIC_UDS:
                        if (isempty(optarg)) {
                                fail("--%s= must not be empty",
                                     c == ARG_KONN_UDS ? "konn-uds" : "classic-uds");
                                return -EINVAL;
                        }
                        if (c == ARG_KONN_UDS)
                                arg_konn_uds = optarg;
                        else
                                arg_classic_uds = optarg;
                        break;
                case ARG_KONN_MODE:
                        if (streq(optarg, "konn-to-konn"))
                                arg_konn_classic = false;
                        else if (streq(optarg, "classic"))
                                arg_konn_classic = true;
                        else {
                                fail("invalid --konn-mode='%s' (konn-to-konn or classic)", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_SIZE:
                case ARG_TUNNEL_SIZE:
                case ARG_MANY_TUNNEL_SIZE:
                        r = parse_size(optarg, &v);
                        if (r < 0 || v == 0 || v > BENCH_MAX_SIZE) {
                                fail("invalid --%s='%s' (1 byte .. 1T)",
                                     c == ARG_SIZE ? "size" : c == ARG_TUNNEL_SIZE ? "tunnel-size" : "many-tunnel-size",
                                     optarg);
                                return -EINVAL;
                        }
                        if (c == ARG_SIZE)
                                arg_size = v;
                        else if (c == ARG_TUNNEL_SIZE)
                                arg_tunnel_size = v;
                        else
                                arg_many_tunnel_size = v;
                        break;
                case ARG_BUFFER_SIZE:
                        r = parse_size(optarg, &v);
                        if (r < 0 || v < 4096 || v > 64 * MIB || v % 8 != 0) {
                                fail("invalid --buffer-size='%s' (4K .. 64M, a multiple of 8)", optarg);
                                return -EINVAL;
                        }
                        arg_buffer_size = (size_t) v;
                        break;
                case ARG_SCENARIOS:
                        r = parse_scenarios(optarg, &arg_scenarios);
                        if (r < 0) {
                                fail("invalid --scenarios='%s' (see --help)", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_TIMEOUT:
                        r = parse_unsigned(optarg, 1, 3600, &arg_timeout_sec);
                        if (r < 0) {
                                fail("invalid --timeout='%s' (1 .. 3600 seconds)", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_SERVER_PID:
                case ARG_AGENT_PID:
                        r = parse_pid(optarg, c == ARG_SERVER_PID ? &arg_server_pid : &arg_agent_pid);
                        if (r < 0) {
                                fail("invalid --%s='%s'", c == ARG_SERVER_PID ? "server-pid" : "agent-pid",
                                     optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_JSON:
                        if (isempty(optarg)) {
                                fail("--json= must not be empty");
                                return -EINVAL;
                        }
                        arg_json = optarg;
                        break;
                case ARG_SELF_TEST:
                        arg_self_test = true;
                        break;
                case ARG_SMOKE:
                        break; /* applied above */
                case ARG_RUNS:
                        r = parse_unsigned(optarg, 1, RUNS_MAX, &arg_runs);
                        if (r < 0) {
                                fail("invalid --runs='%s' (1 .. %u)", optarg, RUNS_MAX);
                                return -EINVAL;
                        }
                        break;
                case ARG_TUNNELS:
                case ARG_MANY_TUNNELS:
                        r = parse_unsigned(optarg, 1, 10000, c == ARG_TUNNELS ? &arg_tunnels : &arg_many_tunnels);
                        if (r < 0) {
                                fail("invalid --%s='%s' (1 .. 10000)", c == ARG_TUNNELS ? "tunnels" : "many-tunnels",
                                     optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_DIALS:
                case ARG_CONCURRENT_DIALS:
                        r = parse_unsigned(optarg, 1, 10000000,
                                           c == ARG_DIALS ? &arg_dials : &arg_concurrent_dials);
                        if (r < 0) {
                                fail("invalid --%s='%s' (1 .. 10000000)",
                                     c == ARG_DIALS ? "dials" : "concurrent-dials", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_DIALERS:
                        r = parse_unsigned(optarg, 1, 10000, &arg_dialers);
                        if (r < 0) {
                                fail("invalid --dialers='%s' (1 .. 10000)", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_IDLE_TUNNELS:
                        r = parse_idle_tunnels(optarg, arg_idle_tunnels, &arg_n_idle_tunnels);
                        if (r < 0) {
                                fail("invalid --idle-tunnels='%s' (up to %u counts of 1 .. %u)", optarg,
                                     IDLE_STEPS_MAX, IDLE_TUNNELS_MAX);
                                return -EINVAL;
                        }
                        break;
                case ARG_HOL_SECONDS:
                        r = parse_unsigned(optarg, 1, 600, &arg_hol_seconds);
                        if (r < 0) {
                                fail("invalid --hol-seconds='%s' (1 .. 600)", optarg);
                                return -EINVAL;
                        }
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }

        if (optind < argc) {
                fail("unexpected argument '%s'", argv[optind]);
                return -EINVAL;
        }
        if ((arg_server_pid > 0) != (arg_agent_pid > 0)) {
                fail("--server-pid= and --agent-pid= go together");
                return -EINVAL;
        }
        if (arg_konn_classic && arg_classic_uds) {
                fail("--classic-uds= names a second pair; with --konn-mode=classic the first is classic");
                return -EINVAL;
        }
        if (have_daemon_pids() && !arg_konn_uds) {
                fail("--server-pid=/--agent-pid= need --konn-uds=");
                return -EINVAL;
        }
        return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Open-file limits: 10 000 idle tunnels need 10 000 descriptors in this process, in the target child,
 * in konn-server and in konn-agent. */

static unsigned fds_needed(void) {
        unsigned n = MAX(MAX(arg_dialers, arg_tunnels), OPEN_INFLIGHT);

        if (scenario_enabled(SCENARIO_ECHO_1000))
                n = MAX(n, arg_many_tunnels);

        if (scenario_enabled(SCENARIO_IDLE_TUNNELS))
                for (unsigned i = 0; i < arg_n_idle_tunnels; i++)
                        n = MAX(n, arg_idle_tunnels[i]);
        return n + FD_MARGIN;
}

/* Soft limit of "Max open files" in /proc/PID/limits (UINT64_MAX for unlimited). */
static int proc_nofile_limit(pid_t pid, uint64_t *ret) {
        char path[64], line[256];
        FILE *f;
        int r = -EBADMSG;

        (void) snprintf(path, sizeof(path), "/proc/%d/limits", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return negative_errno();
        while (fgets(line, sizeof(line), f)) {
                unsigned long long v;
                char word[32];

                if (strncmp(line, "Max open files", 14) != 0)
                        continue;
                if (sscanf(line + 14, " %31s", word) != 1)
                        break;
                if (streq(word, "unlimited")) {
                        *ret = UINT64_MAX;
                        r = 0;
                } else if (sscanf(word, "%llu", &v) == 1) {
                        *ret = v;
                        r = 0;
                }
                break;
        }
        fclose(f);
        return r;
}

static int check_fd_limits(void) {
        unsigned need = fds_needed();
        struct rlimit rl;
        int r;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return negative_errno();
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
                if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
                        fail("these scenarios need %u open files per process, but the hard "
                             "RLIMIT_NOFILE is %llu: raise it (ulimit -n, as root) or lower --idle-tunnels=",
                             need, (unsigned long long) rl.rlim_max);
                        return -EMFILE;
                }
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
                        r = negative_errno();
                        fail("failed to raise RLIMIT_NOFILE to %llu: %s", (unsigned long long) rl.rlim_cur,
                             strerror(-r));
                        return r;
                }
        }

        for (unsigned i = 0; have_daemon_pids() && i < 2; i++) {
                pid_t pid = i == 0 ? arg_server_pid : arg_agent_pid;
                uint64_t limit = 0;

                r = proc_nofile_limit(pid, &limit);
                if (r < 0) {
                        fail("cannot read /proc/%d/limits: %s", (int) pid, strerror(-r));
                        return r;
                }
                if (limit < need) {
                        fail("konn-%s (pid %d) may open only %" PRIu64 " files, these scenarios need %u: "
                             "start it with a higher ulimit -n",
                             daemon_name[i], (int) pid, limit, need);
                        return -EMFILE;
                }
        }
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */

void progress(const char *what, unsigned run) {
        if (arg_runs > 1)
                fprintf(stderr, "konn-bench: %s (run %u of %u)\n", what, run + 1, arg_runs);
        else
                fprintf(stderr, "konn-bench: %s\n", what);
}

/* AES-128-GCM bytes per second of one core at 16 KiB records, as `openssl speed -evp` measures it; 0 if the
 * openssl tool is missing or says something else. */
static double measure_aes_gcm(void) {
        _cleanup_(pclosep) FILE *p = NULL;
        char line[256];
        double v = 0;

        p = popen("openssl speed -evp aes-128-gcm -bytes 16384 -seconds 2 2>/dev/null", "re");
        if (!p)
                return 0;
        while (fgets(line, sizeof(line), p)) {
                double k;

                if (strncasecmp(line, "aes-128-gcm", STRLEN("aes-128-gcm")) == 0 &&
                    sscanf(line + STRLEN("aes-128-gcm"), "%lfk", &k) == 1)
                        v = k * 1000; /* "in 1000s of bytes per second" */
        }
        return v;
}

int run(Bench *b) {
        int r;

        b->clk_tck = sysconf(_SC_CLK_TCK);
        if (b->clk_tck <= 0) {
                fail("sysconf(_SC_CLK_TCK) failed");
                return -EINVAL;
        }

        if (have_daemon_pids()) {
                r = daemons_cpu((uint64_t[2]) {});
                if (r < 0) {
                        fail("cannot read /proc/%d/stat or /proc/%d/stat: %s", (int) arg_server_pid,
                             (int) arg_agent_pid, strerror(-r));
                        return r;
                }
        }
        r = check_fd_limits();
        if (r < 0)
                return r;

        b->loop.epfd = epoll_create1(EPOLL_CLOEXEC);
        if (b->loop.epfd < 0) {
                r = negative_errno();
                fail("epoll_create1() failed: %s", strerror(-r));
                return r;
        }
        b->buf = malloc(arg_buffer_size);
        b->wbuf = malloc(arg_buffer_size);
        b->scratch = malloc(SCRATCH_SIZE);
        if (!b->buf || !b->wbuf || !b->scratch) {
                fail("out of memory");
                return -ENOMEM;
        }

        if (arg_konn_uds) {
                b->aes_gcm_bps = measure_aes_gcm();
                if (b->aes_gcm_bps <= 0)
                        fprintf(stderr, "konn-bench: openssl speed gave no AES-128-GCM figure: no physical floor.\n");
        }

        /* The child first: fork() before any thread exists. */
        r = target_start(&b->target);
        if (r < 0) {
                fail("failed to start the target process: %s", strerror(-r));
                return r;
        }
        for (Role role = 0; role < _ROLE_MAX; role++) {
                r = listener_start(&b->listeners[role], role, arg_buffer_size);
                if (r < 0) {
                        fail("failed to start the %s listener: %s", role_name[role], strerror(-r));
                        return r;
                }
        }

        /* Idle memory first, before anything has touched the daemons. */
        if (have_daemon_pids()) {
                progress("idle-rss", 0);
                r = daemons_mem_settled(b->mem_idle);
                if (r < 0)
                        return r;
                if (scenario_enabled(SCENARIO_IDLE_RSS))
                        record_idle_rss(b);
        }

        for (size_t i = 0; i < ELEMENTSOF(scenario_order); i++) {
                Scenario sc = scenario_order[i];
                /* idle-tunnels: all runs of one count, then the next count (memory only grows towards
                 * the larger count; the runs of one count see the same heap). */
                unsigned steps = sc == SCENARIO_IDLE_TUNNELS ? arg_n_idle_tunnels : 1;

                if (sc == SCENARIO_IDLE_RSS || !scenario_enabled(sc))
                        continue;
                for (unsigned k = 0; k < steps * arg_runs; k++) {
                        unsigned step = k / arg_runs, run = k % arg_runs;
                        char what[64];

                        if (sc == SCENARIO_IDLE_TUNNELS)
                                (void) snprintf(what, sizeof(what), "idle-tunnels %u",
                                                arg_idle_tunnels[step]);
                        else
                                (void) snprintf(what, sizeof(what), "%s", scenario_name[sc]);
                        progress(what, run);

                        switch (sc) {
                        case SCENARIO_IDLE_TUNNELS:
                                r = run_idle_tunnels(b, arg_idle_tunnels[step]);
                                break;
                        case SCENARIO_DIAL:
                        case SCENARIO_DIAL_CONCURRENT:
                                r = run_dial(b, sc, run);
                                break;
                        case SCENARIO_UPLOAD:
                        case SCENARIO_DOWNLOAD:
                        case SCENARIO_ECHO:
                                r = run_bulk(b, sc, run);
                                break;
                        case SCENARIO_ECHO_MANY:
                                r = run_echo_many(b, run);
                                break;
                        case SCENARIO_HOL:
                                r = run_hol(b, run);
                                break;
                        case SCENARIO_ECHO_1000:
                                r = run_echo_1000(b, run);
                                break;
                        default:
                                abort();
                        }
                        if (r >= 0)
                                continue;
                        /* Go on with the other scenarios, unless a process the rest depends on is gone. */
                        b->failed |= 1U << sc;
                        if (target_check(&b->target) < 0)
                                return -ESRCH;
                        if (have_daemon_pids() &&
                            (kill(arg_server_pid, 0) < 0 || kill(arg_agent_pid, 0) < 0)) {
                                fail("konn-server or konn-agent has exited; stopping");
                                return -ESRCH;
                        }
                        break;
                }
        }

        if (have_daemon_pids()) {
                r = proc_mem(arg_server_pid, &b->mem_end[0]);
                if (r >= 0)
                        r = proc_mem(arg_agent_pid, &b->mem_end[1]);
                if (r < 0) {
                        fail("cannot read the daemons' /proc/PID/status (did one exit?): %s", strerror(-r));
                        return r;
                }
        }
        return b->failed != 0 ? -EIO : 0;
}

/* Safe after a failure anywhere in run(): listener_stop() also wakes a target thread that is still
 * inside a connection, target_stop() ends the child whatever it is doing. */
static void bench_done(Bench *b) {
        for (Role role = 0; role < _ROLE_MAX; role++)
                listener_stop(&b->listeners[role]);
        target_stop(&b->target);
        b->loop.epfd = safe_close(b->loop.epfd);
        b->loop.retry = mfree(b->loop.retry);
        b->buf = mfree(b->buf);
        b->wbuf = mfree(b->wbuf);
        b->scratch = mfree(b->scratch);
}

int main(int argc, char *argv[]) {
        static Bench b = {
                .loop.epfd = -EBADF,
                .target.pid = -1,
                .target.pipe_fd = -EBADF,
        };
        int r, k;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? 2 : 0;

        if (arg_self_test) {
                r = self_test();
                if (r < 0)
                        return EXIT_FAILURE;
                printf("konn-bench: self-test passed\n");
                return EXIT_SUCCESS;
        }

        (void) signal(SIGPIPE, SIG_IGN);

        r = run(&b);
        bench_done(&b);

        print_table(&b);
        print_targets(&b);
        if (r < 0) {
                unsigned n = 0;

                printf("\nFAILED");
                for (Scenario sc = 0; sc < _SCENARIO_MAX; sc++)
                        if (b.failed & (1U << sc))
                                printf("%s%s", n++ == 0 ? ": " : ", ", scenario_name[sc]);
                printf(" (see the messages above); figures shown are for the runs that completed.\n");
        }
        if (arg_json) {
                k = write_json(&b, arg_json, r >= 0);
                if (k < 0) {
                        fail("failed to write '%s': %s", arg_json, strerror(-k));
                        if (r >= 0)
                                r = k;
                }
        }
        if (fflush(stdout) != 0 && r >= 0)
                r = negative_errno();

        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
