/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench.h — what the parts of konn-bench share: options, types, the report rows and every function
 * one part calls in another. See konn-bench.c for what the benchmark does and how the files divide it.
 */
#pragma once

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "macro.h"

#define BENCH_DEFAULT_SIZE ((uint64_t) 1 << 30)

#define BENCH_DEFAULT_BUFFER ((size_t) 256 * 1024)

#define BENCH_DEFAULT_TIMEOUT_SEC 120U

#define BENCH_MAX_SIZE ((uint64_t) 1 << 40)

#define BENCH_CONNECT_REPLY "HTTP/1.1 200 Connection Established\r\n\r\n"

#define BENCH_REPLY_MAX 1024U

#define GIB ((double) (1ULL << 30))

#define MIB_F ((double) (1ULL << 20))

#define RUNS_MAX 15U

#define IDLE_STEPS_MAX 8U

#define IDLE_TUNNELS_MAX 1000000U

#define FD_MARGIN 256U              /* descriptors besides the tunnels, per process */

#define OPEN_INFLIGHT 200U          /* connections being set up at once when opening many */

#define CONN_REPLY_MAX 256U         /* CONNECT reply buffer of a non-blocking connection */

#define CONN_WBUF ((size_t) 128 * 1024)

#define TARGET_BUF ((size_t) 128 * 1024)

#define SCRATCH_SIZE ((size_t) 64 * 1024)

#define HDR_SIZE 16U                /* echo/flood header: size (le64), seed (le64) */

#define HELLO_BYTE 'H'

#define HOL_STALL_USEC (3 * USEC_PER_SEC)          /* A without progress this long: stalled */

#define HOL_STABLE_USEC (500 * USEC_PER_MSEC)      /* B's target sent nothing this long: B is stalled */

#define HOL_FILL_MAX_USEC (10 * USEC_PER_SEC)      /* give up waiting for B to stall */

#define SETTLE_MIN_USEC (300 * USEC_PER_MSEC)      /* memory samples: first wait, then until stable */

#define SETTLE_MAX_USEC (3 * USEC_PER_SEC)

#define CLOSE_WAIT_USEC (60 * USEC_PER_SEC)        /* for the target to see every close */

#define ROWS_MAX 192U

#define IN_SET(x, ...)                                                  \
        ({                                                              \
                const int _in_set_v = (x);                              \
                const int _in_set_a[] = { __VA_ARGS__ };                \
                bool _in_set_found = false;                             \
                for (size_t _i = 0; _i < ELEMENTSOF(_in_set_a); _i++)  \
                        if (_in_set_a[_i] == _in_set_v) {               \
                                _in_set_found = true;                   \
                                break;                                  \
                        }                                               \
                _in_set_found;                                          \
        })

typedef struct Gen {
        uint64_t state;
        uint8_t word[8];
        unsigned left; /* the last 'left' bytes of word are not handed out yet */
} Gen;

#define XXH_P1 UINT64_C(0x9E3779B185EBCA87)

#define XXH_P2 UINT64_C(0xC2B2AE3D27D4EB4F)

#define XXH_P3 UINT64_C(0x165667B19E3779F9)

#define XXH_P4 UINT64_C(0x85EBCA77C2B2AE63)

#define XXH_P5 UINT64_C(0x27D4EB2F165667C5)

typedef struct Digest {
        uint64_t v[4];
        uint64_t total;
        uint8_t tail[32];
        size_t tail_len;
} Digest;

/* One direction of a transfer. done counts bytes moved so far, also after a failure. */
typedef struct Stream {
        int fd;
        uint64_t size;
        uint64_t done;
        uint64_t deadline;
        uint8_t *buf;
        size_t bufsize;
} Stream;

typedef enum Transport {
        TRANSPORT_DIRECT,
        TRANSPORT_KONN,
        _TRANSPORT_MAX,
} Transport;

typedef struct ProcMem {
        bool valid;
        uint64_t vmrss_kib;
        uint64_t rssanon_kib;
        uint64_t vmhwm_kib;
} ProcMem;

typedef enum Role {
        ROLE_SINK,
        ROLE_SOURCE,
        ROLE_ECHO,
        _ROLE_MAX,
} Role;

typedef struct Job {
        uint64_t generation;
        uint64_t size;
        uint64_t seed; /* source only */
        uint64_t deadline;
} Job;

typedef struct TargetResult {
        uint64_t generation;
        int error;          /* 0 or negative errno */
        uint64_t bytes;     /* received (sink, echo) or sent (source) */
        uint64_t digest;    /* XXH64 of what was received (sink, echo) */
        uint64_t done_usec; /* monotonic time the sink received its last byte */
} TargetResult;

typedef struct Listener {
        Role role;
        bool initialized;
        int fd;
        uint16_t port;
        uint8_t *buf;
        size_t bufsize;
        pthread_t thread;
        bool thread_started;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        /* Protected by lock: */
        bool stopping;
        int conn_fd; /* the connection being served, so that listener_stop() can shut it down */
        Job job;
        TargetResult result;
} Listener;

typedef enum TRole {
        TROLE_ECHO,
        TROLE_HELLO,
        TROLE_FLOOD,
        TROLE_STALL,
        _TROLE_MAX,
} TRole;

/* Per listener; written by the child only (relaxed atomics), read by the parent. */
typedef struct TStats {
        uint64_t accepted;
        uint64_t closed;
        uint64_t bytes_in;
        uint64_t bytes_out;
        uint64_t failed;        /* connections that ended in an error other than the peer going away */
        uint64_t verify_failed; /* echo payload that differed from the stream named in its header */
} TStats;

#define TSTAT(t, role, field) __atomic_load_n(&(t)->stats[role].field, __ATOMIC_RELAXED)

typedef struct Target {
        pid_t pid;
        int pipe_fd; /* write end; the child exits when the read end reports EOF */
        TStats *stats;
        uint16_t port[_TROLE_MAX];
} Target;

typedef enum TNodeKind {
        TNODE_LISTENER,
        TNODE_CONN,
        TNODE_PIPE,
} TNodeKind;

typedef struct TNode {
        TNodeKind kind;
        int fd;
        TRole role;
} TNode;

typedef struct TConn {
        TNode node; /* first: epoll data.ptr points at either */
        uint32_t events;
        uint8_t hdr[HDR_SIZE];
        size_t hdr_len;
        uint64_t size;    /* echo: payload bytes announced in the header */
        uint64_t done_in; /* echo: payload bytes received */
        Gen gen;
        uint8_t *buf;
        size_t off, len; /* pending output buf[off..len) */
} TConn;

typedef struct TChild {
        int epfd;
        TStats *stats;
        uint8_t *scratch;
} TChild;

typedef enum ConnState {
        CONN_FREE,
        CONN_RETRY,      /* the konn socket's backlog was full (EAGAIN): connect() again soon */
        CONN_CONNECTING, /* TCP connect() in progress */
        CONN_REQUEST,    /* sending the CONNECT request */
        CONN_REPLY,      /* reading the CONNECT reply */
        CONN_OPEN,
} ConnState;

typedef struct Conn {
        int fd;
        ConnState state;
        uint32_t events; /* registered with epoll; 0: not registered */
        const char *uds; /* NULL: direct TCP */
        uint16_t port;
        bool ready;      /* open, and (hello) its byte has arrived */
        uint64_t t_start;
        uint64_t t_done;
        size_t req_off;
        size_t reply_len;
        char reply[CONN_REPLY_MAX];
        /* echo-many */
        Gen sgen, rgen;
        uint64_t size, sent, received;
        uint8_t *wbuf;
        size_t woff, wlen;
} Conn;

typedef struct Loop {
        int epfd;
        Conn **retry;
        size_t n_retry, retry_cap;
} Loop;

typedef enum Scenario {
        SCENARIO_UPLOAD,
        SCENARIO_DOWNLOAD,
        SCENARIO_ECHO,
        SCENARIO_ECHO_MANY,
        SCENARIO_DIAL,
        SCENARIO_DIAL_CONCURRENT,
        SCENARIO_IDLE_RSS,
        SCENARIO_IDLE_TUNNELS,
        SCENARIO_HOL,
        SCENARIO_ECHO_1000,
        _SCENARIO_MAX,
} Scenario;

typedef enum TargetKind {
        TARGET_NONE,
        TARGET_RATIO_MIN, /* konn/direct >= value */
        TARGET_RATIO_MAX, /* konn/direct <= value */
        TARGET_KONN_MIN,  /* konn >= value */
        TARGET_KONN_MAX,  /* konn <= value */
} TargetKind;

/* One line of the report: a metric of a scenario, with one value per run for each column. */
typedef struct Row {
        Scenario scenario;
        char name[32];
        char metric[48];
        const char *unit;
        unsigned decimals;
        TargetKind target;
        double target_value;
        bool sum;      /* report the sum of the runs instead of the median */
        bool no_ratio; /* konn/direct means nothing here */
        double v[_TRANSPORT_MAX][RUNS_MAX];
        unsigned n[_TRANSPORT_MAX];
} Row;

typedef struct Measurement {
        bool done;
        double seconds;   /* the bulk transfer, from first byte sent to last byte received */
        double setup_ms;  /* connect(), plus the CONNECT exchange through konn */
        uint64_t carried; /* payload bytes through the path, both directions counted */
        uint64_t size;    /* payload bytes per direction */
        double bench_cpu_s;
        bool daemon_cpu_valid;
        double server_cpu_s;
        double agent_cpu_s;
} Measurement;

typedef struct Bench {
        Listener listeners[_ROLE_MAX];
        Target target;
        Loop loop;
        uint64_t generation;
        uint8_t *buf;     /* client reader / sender, arg_buffer_size */
        uint8_t *wbuf;    /* echo writer thread, arg_buffer_size */
        uint8_t *scratch; /* gen_verify(), SCRATCH_SIZE */
        long clk_tck;
        ProcMem mem_idle[2], mem_end[2]; /* [0] server, [1] agent */
        Row rows[ROWS_MAX];
        unsigned n_rows;
        double aes_gcm_bps;                        /* openssl speed, one core, 16 KiB; 0 = unknown */
        double direct_cpu_per_gib[_SCENARIO_MAX];  /* client+target CPU of the last direct run */
        unsigned failed; /* bit mask of Scenario */
} Bench;

/* Daemon CPU counters at the start of a konn measurement (valid stays false without pids). */
typedef struct CpuMark {
        bool valid;
        uint64_t ticks[2];
} CpuMark;

#define ROW_FORMAT "%-18s %-42s %11s %11s %7s %-14s %s\n"

typedef struct EchoWriter {
        Stream s;
        uint64_t seed;
        int error;
} EchoWriter;

typedef struct HolResult {
        double mib_s;     /* 0 when stalled */
        uint64_t bytes;   /* A's payload received and verified */
        bool stalled;     /* A made no progress for HOL_STALL_USEC */
        uint64_t b_bytes; /* what B's target managed to send before B stalled */
        bool b_stable;    /* B's target stopped sending (else the wait gave up after HOL_FILL_MAX_USEC) */
} HolResult;

static inline void pclosep(FILE **f) {
        if (*f)
                (void) pclose(*f);
}

static inline bool isempty(const char *s) {
        return !s || s[0] == '\0';
}

static inline uint64_t wyrand(uint64_t *state) {
        __uint128_t m;

        *state += UINT64_C(0xa0761d6478bd642f);
        m = (__uint128_t) *state * (*state ^ UINT64_C(0xe7037ed1a0b428db));
        return (uint64_t) (m >> 64) ^ (uint64_t) m;
}

static inline uint64_t rotl64(uint64_t x, unsigned r) {
        return (x << r) | (x >> (64 - r));
}

static inline uint64_t read64(const uint8_t *p) {
        uint64_t v;

        memcpy(&v, p, 8);
        return le64toh(v);
}

static inline uint32_t read32(const uint8_t *p) {
        uint32_t v;

        memcpy(&v, p, 4);
        return le32toh(v);
}

static inline uint64_t xxh_round(uint64_t acc, uint64_t input) {
        acc += input * XXH_P2;
        acc = rotl64(acc, 31);
        return acc * XXH_P1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t val) {
        acc ^= xxh_round(0, val);
        return acc * XXH_P1 + XXH_P4;
}

extern const char *arg_konn_uds;
extern const char *arg_classic_uds;
extern bool arg_konn_classic;
extern uint64_t arg_size;
extern size_t arg_buffer_size;
extern unsigned arg_timeout_sec;
extern pid_t arg_server_pid;
extern pid_t arg_agent_pid;
extern unsigned arg_scenarios;
extern unsigned arg_runs;
extern unsigned arg_tunnels;
extern uint64_t arg_tunnel_size;
extern unsigned arg_many_tunnels;
extern uint64_t arg_many_tunnel_size;
extern unsigned arg_dials;
extern unsigned arg_dialers;
extern unsigned arg_concurrent_dials;
/* The idle-tunnel targets are judged from this many tunnels on (the figure is 10 000, which needs 20 512
 * descriptors in konn-bench; report.c says at which count they were judged). */
#define IDLE_TARGET_MIN_TUNNELS 5000
extern unsigned arg_idle_tunnels[IDLE_STEPS_MAX];
extern unsigned arg_n_idle_tunnels;
extern unsigned arg_hol_seconds;
extern const char *const transport_name[_TRANSPORT_MAX];
extern const char *const role_name[_ROLE_MAX];
extern const char *const scenario_name[_SCENARIO_MAX];
extern const Scenario scenario_order[_SCENARIO_MAX];
extern const Role scenario_role[_SCENARIO_MAX];
extern const char *const daemon_name[];


/* konn-bench.c */
void progress(const char *what, unsigned run);
int run(Bench *b);

/* util.c */
void fail(const char *format, ...) _printf_(1, 2);
uint64_t now_usec(void);
void sleep_usec(uint64_t usec);
void gen_init(Gen *g, uint64_t seed);
void gen_fill(Gen *g, uint8_t *p, size_t n);
bool gen_verify(Gen *g, const uint8_t *p, size_t n, uint8_t *scratch, size_t scratch_size);
void digest_init(Digest *d);
uint64_t digest_final(const Digest *d);
uint64_t stream_digest(uint64_t seed, uint64_t size, uint8_t *buf, size_t bufsize);
int self_test(void);
int set_deadline(int fd, uint64_t deadline);
int io_errno(uint64_t deadline);
int write_all(int fd, const uint8_t *p, size_t n, uint64_t deadline, uint64_t *progress);
int stream_send(Stream *s, uint64_t seed);
int stream_recv(Stream *s, Digest *d, int echo_fd);
int expect_eof(int fd, uint64_t deadline);
int connect_direct(uint16_t port, uint64_t deadline, int *ret_fd);
void reply_first_line(const char *reply, size_t n, char *out, size_t outsize);
int format_connect_request(uint16_t port, char *buf, size_t size);
int check_connect_reply(const char *reply, size_t hlen);
int connect_konn(const char *uds, uint16_t port, uint64_t deadline, uint8_t *extra, size_t extra_size, size_t *ret_extra_len, int *ret_fd);
int connect_to(const char *uds, uint16_t port, uint64_t deadline, int *ret_fd);
int proc_cpu_ticks(pid_t pid, uint64_t *ret_ticks);
int proc_mem(pid_t pid, ProcMem *ret_mem);

/* target.c */
int target_wait(Listener *l, uint64_t generation, uint64_t deadline, TargetResult *ret_result);
void target_post_job(Listener *l, const Job *job);
int listener_start(Listener *l, Role role, size_t bufsize);
void listener_stop(Listener *l);
int target_start(Target *t);
int target_check(Target *t);
void target_stop(Target *t);
int target_wait_closed(Target *t, TRole role, uint64_t closed, uint64_t usec);

/* conns.c */
int conn_set_events(Loop *lp, Conn *c, uint32_t events);
void conn_close(Conn *c);
Conn *conns_new(unsigned n);
void conns_free(Loop *lp, Conn *conns, unsigned n);
int conn_begin(Loop *lp, Conn *c, const char *uds, uint16_t port);
int loop_retry_all(Loop *lp);
int conn_setup_event(Loop *lp, Conn *c, const uint8_t **ret_extra, size_t *ret_extra_len);
int conn_hello_event(Loop *lp, Conn *c);

/* report.c */
bool scenario_enabled(Scenario sc);
Row *row(Bench *b, Scenario sc, const char *name, const char *metric, const char *unit, unsigned decimals, TargetKind target, double target_value);
void row_add(Row *r, Transport tr, double v);
double client_target_cpu_s(const Bench *b);
bool have_daemon_pids(void);
int daemons_cpu(uint64_t ret_ticks[2]);
int cpu_mark(Transport tr, CpuMark *ret);
int cpu_since(const Bench *b, const CpuMark *start, double ret_s[2]);
int daemons_mem_settled(ProcMem ret[2]);
double mib_per_s(uint64_t bytes, double seconds);
double median(const double *v, unsigned n);
void print_table(const Bench *b);
void print_targets(const Bench *b);
int write_json(const Bench *b, const char *path, bool ok);

/* bulk.c */
void record_transfer(Bench *b, Scenario sc, const char *name, const char *metric, bool efficiency_target, Transport tr, const Measurement *m);
int run_bulk(Bench *b, Scenario sc, unsigned run);

/* many.c */
int loop_wait(Bench *b, struct epoll_event *evs, int max, uint64_t deadline);
int run_echo_many(Bench *b, unsigned run);
int run_echo_1000(Bench *b, unsigned run);
void record_idle_rss(Bench *b);
int run_idle_tunnels(Bench *b, unsigned n);

/* dial.c */
int run_dial(Bench *b, Scenario sc, unsigned run);

/* hol.c */
int run_hol(Bench *b, unsigned run);
