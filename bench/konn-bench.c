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
 *   dial-concurrent  --dialers clients dialling back to back, --concurrent-dials in all: p50/p99, dials/s;
 *   upload, download, echo  one tunnel, --size bytes (echo: both directions at once), XXH64-checked;
 *   hol           head-of-line: tunnel A downloads for --hol-seconds alone, then again while tunnel B's
 *                 target floods and its client never reads; A's throughput with B stalled / A alone.
 *                 Through the pair at --konn-uds (konn-to-konn mode unless --konn-mode=classic says
 *                 otherwise) and, with --classic-uds, a second pair running the classic single-stream
 *                 protocol. A that makes no progress for 3 s (or for the whole measurement, if that is
 *                 shorter) counts as stalled: 0 MiB/s;
 *   echo-many     --tunnels tunnels x --tunnel-size bytes echoed at once, aggregate MiB/s per direction,
 *                 verified byte for byte by the target and by the client (last: the heaviest).
 * A failed scenario is reported and the others still run. Daemon CPU (utime+stime of --server-pid and
 * --agent-pid) is reported per GiB carried for the bulk scenarios and per dial for the dial scenarios.
 * --runs=N repeats each scenario (direct and konn alternately) and reports medians. Nothing here judges
 * the figures: the table shows the issue's targets, but the exit status only says whether every
 * scenario ran and verified.
 */
#include "config.h"

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

static inline void pclosep(FILE **f) {
        if (*f)
                (void) pclose(*f);
}

static inline bool isempty(const char *s) {
        return !s || s[0] == '\0';
}

static const char *arg_konn_uds = NULL;
static const char *arg_classic_uds = NULL;
/* --konn-mode=classic: the --konn-uds pair runs --tunnel-streams=false */
static bool arg_konn_classic = false;
static uint64_t arg_size = BENCH_DEFAULT_SIZE;
static size_t arg_buffer_size = BENCH_DEFAULT_BUFFER;
static unsigned arg_timeout_sec = BENCH_DEFAULT_TIMEOUT_SEC;
static const char *arg_json = NULL;
static pid_t arg_server_pid = 0;
static pid_t arg_agent_pid = 0;
static unsigned arg_scenarios = 0; /* bit mask of Scenario; 0 = all */
static bool arg_self_test = false;
static bool arg_smoke = false;
static unsigned arg_runs = 1;
static unsigned arg_tunnels = 100;
static uint64_t arg_tunnel_size = (uint64_t) 8 << 20;
static unsigned arg_many_tunnels = 1000;                /* echo-1000 */
static uint64_t arg_many_tunnel_size = (uint64_t) 1 << 20;
static unsigned arg_dials = 1000;
static unsigned arg_dialers = 200;
static unsigned arg_concurrent_dials = 2000;
static unsigned arg_idle_tunnels[IDLE_STEPS_MAX] = { 1000, 10000 };
static unsigned arg_n_idle_tunnels = 2;
static unsigned arg_hol_seconds = 5;

static void fail(const char *format, ...) _printf_(1, 2);
static void fail(const char *format, ...) {
        va_list ap;

        fputs("konn-bench: ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static uint64_t now_usec(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000U;
}

static void sleep_usec(uint64_t usec) {
        struct timespec ts = {
                .tv_sec = (time_t) (usec / USEC_PER_SEC),
                .tv_nsec = (long) (usec % USEC_PER_SEC) * 1000L,
        };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* ---------------------------------------------------------------------------------------------- */
/* Payload: wyrand stream. Word i (little-endian) of the stream depends only on (seed, i); Gen hands
 * it out in pieces of any size, so every sender and receiver can produce or check it on the fly. */

static inline uint64_t wyrand(uint64_t *state) {
        __uint128_t m;

        *state += UINT64_C(0xa0761d6478bd642f);
        m = (__uint128_t) *state * (*state ^ UINT64_C(0xe7037ed1a0b428db));
        return (uint64_t) (m >> 64) ^ (uint64_t) m;
}

typedef struct Gen {
        uint64_t state;
        uint8_t word[8];
        unsigned left; /* the last 'left' bytes of word are not handed out yet */
} Gen;

static void gen_init(Gen *g, uint64_t seed) {
        *g = (Gen) {
                .state = seed,
        };
}

/* Fills p with the next n bytes of the stream. */
static void gen_fill(Gen *g, uint8_t *p, size_t n) {
        size_t k = MIN(n, (size_t) g->left);

        memcpy(p, g->word + 8 - g->left, k);
        g->left -= (unsigned) k;
        p += k;
        n -= k;
        for (; n >= 8; p += 8, n -= 8) {
                uint64_t w = htole64(wyrand(&g->state));
                memcpy(p, &w, 8);
        }
        if (n > 0) {
                uint64_t w = htole64(wyrand(&g->state));
                memcpy(g->word, &w, 8);
                memcpy(p, g->word, n);
                g->left = (unsigned) (8 - n);
        }
}

/* Consumes n bytes of the stream; true if they equal p[0..n). */
static bool gen_verify(Gen *g, const uint8_t *p, size_t n, uint8_t *scratch, size_t scratch_size) {
        bool ok = true;

        while (n > 0) {
                size_t k = MIN(n, scratch_size);

                gen_fill(g, scratch, k);
                if (memcmp(p, scratch, k) != 0)
                        ok = false;
                p += k;
                n -= k;
        }
        return ok;
}

/* ---------------------------------------------------------------------------------------------- */
/* XXH64 (seed 0), streaming, independent of how the input is split. */

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

static void digest_init(Digest *d) {
        *d = (Digest) {
                .v = { XXH_P1 + XXH_P2, XXH_P2, 0, -XXH_P1 },
        };
}

static void digest_update(Digest *d, const uint8_t *p, size_t n) {
        d->total += n;

        if (d->tail_len > 0) {
                size_t k = MIN(n, sizeof(d->tail) - d->tail_len);

                memcpy(d->tail + d->tail_len, p, k);
                d->tail_len += k;
                p += k;
                n -= k;
                if (d->tail_len < sizeof(d->tail))
                        return;
                for (unsigned i = 0; i < 4; i++)
                        d->v[i] = xxh_round(d->v[i], read64(d->tail + 8 * i));
                d->tail_len = 0;
        }

        uint64_t v0 = d->v[0], v1 = d->v[1], v2 = d->v[2], v3 = d->v[3];
        while (n >= 32) {
                v0 = xxh_round(v0, read64(p));
                v1 = xxh_round(v1, read64(p + 8));
                v2 = xxh_round(v2, read64(p + 16));
                v3 = xxh_round(v3, read64(p + 24));
                p += 32;
                n -= 32;
        }
        d->v[0] = v0;
        d->v[1] = v1;
        d->v[2] = v2;
        d->v[3] = v3;

        memcpy(d->tail, p, n);
        d->tail_len = n;
}

static uint64_t digest_final(const Digest *d) {
        const uint8_t *p = d->tail, *end = d->tail + d->tail_len;
        uint64_t h;

        if (d->total >= 32) {
                h = rotl64(d->v[0], 1) + rotl64(d->v[1], 7) + rotl64(d->v[2], 12) + rotl64(d->v[3], 18);
                for (unsigned i = 0; i < 4; i++)
                        h = xxh_merge(h, d->v[i]);
        } else
                h = d->v[2] + XXH_P5;

        h += d->total;

        for (; p + 8 <= end; p += 8) {
                h ^= xxh_round(0, read64(p));
                h = rotl64(h, 27) * XXH_P1 + XXH_P4;
        }
        if (p + 4 <= end) {
                h ^= (uint64_t) read32(p) * XXH_P1;
                h = rotl64(h, 23) * XXH_P2 + XXH_P3;
                p += 4;
        }
        for (; p < end; p++) {
                h ^= (uint64_t) *p * XXH_P5;
                h = rotl64(h, 11) * XXH_P1;
        }

        h ^= h >> 33;
        h *= XXH_P2;
        h ^= h >> 29;
        h *= XXH_P3;
        h ^= h >> 32;
        return h;
}

/* XXH64 of the first size bytes of stream seed; computed before a run's clock starts. */
static uint64_t stream_digest(uint64_t seed, uint64_t size, uint8_t *buf, size_t bufsize) {
        Digest d;
        Gen g;

        gen_init(&g, seed);
        digest_init(&d);
        while (size > 0) {
                size_t n = (size_t) MIN((uint64_t) bufsize, size);

                gen_fill(&g, buf, n);
                digest_update(&d, buf, n);
                size -= n;
        }
        return digest_final(&d);
}

/* Known answers, checked by --self-test: XXH64 test vectors (as printed by "xxhsum -H1"), and the
 * XXH64 of the first 1000003 bytes of stream 0x1234 (checked against xxhsum on a file written with
 * 8-byte aligned pieces), produced and hashed in uneven pieces so that the streaming paths of both the
 * generator and the digest are exercised; gen_verify() must accept the stream and reject one flipped
 * bit. */
static int self_test(void) {
        static const struct {
                const char *input;
                uint64_t xxh64;
        } vectors[] = {
                { "", UINT64_C(0xef46db3751d8e999) },
                { "abc", UINT64_C(0x44bc2cf5ad770999) },
        };
        const uint64_t stream_seed = 0x1234, stream_size = 1000003;
        const uint64_t stream_xxh64 = UINT64_C(0x5bcce14a52eef0d8);
        _cleanup_free_ uint8_t *buf = NULL, *scratch = NULL;
        unsigned failed = 0;
        Digest d;
        Gen g;

        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                uint64_t h;

                digest_init(&d);
                digest_update(&d, (const uint8_t *) vectors[i].input, strlen(vectors[i].input));
                h = digest_final(&d);
                if (h != vectors[i].xxh64) {
                        fail("self-test: XXH64('%s') = %016" PRIx64 ", expected %016" PRIx64,
                             vectors[i].input, h, vectors[i].xxh64);
                        failed++;
                }
        }

        buf = malloc(stream_size);
        scratch = malloc(SCRATCH_SIZE);
        if (!buf || !scratch)
                return -ENOMEM;

        for (size_t bufsize = 8; bufsize <= 256 * 1024; bufsize *= 8) {
                uint64_t h = stream_digest(stream_seed, stream_size, buf, bufsize);

                if (h != stream_xxh64) {
                        fail("self-test: stream digest with %zu byte buffers = %016" PRIx64
                             ", expected %016" PRIx64, bufsize, h, stream_xxh64);
                        failed++;
                }
        }

        /* Generated in pieces of 1..97 bytes, hashed in pieces of 1..89 bytes. */
        gen_init(&g, stream_seed);
        for (size_t off = 0, piece = 1; off < stream_size; off += piece, piece = piece % 97 + 1)
                gen_fill(&g, buf + off, (size_t) MIN((uint64_t) piece, stream_size - off));
        digest_init(&d);
        for (size_t off = 0, piece = 1; off < stream_size; off += piece, piece = piece % 89 + 1)
                digest_update(&d, buf + off, (size_t) MIN((uint64_t) piece, stream_size - off));
        if (digest_final(&d) != stream_xxh64) {
                fail("self-test: digest of uneven pieces = %016" PRIx64 ", expected %016" PRIx64,
                     digest_final(&d), stream_xxh64);
                failed++;
        }

        gen_init(&g, stream_seed);
        for (size_t off = 0, piece = 3; off < stream_size; off += piece, piece = piece * 7 % 70001 + 1)
                if (!gen_verify(&g, buf + off, (size_t) MIN((uint64_t) piece, stream_size - off), scratch,
                                SCRATCH_SIZE)) {
                        fail("self-test: gen_verify() rejected the stream at offset %zu", off);
                        failed++;
                        break;
                }
        buf[stream_size / 2] ^= 0x10;
        gen_init(&g, stream_seed);
        if (gen_verify(&g, buf, stream_size, scratch, SCRATCH_SIZE)) {
                fail("self-test: gen_verify() accepted a flipped bit");
                failed++;
        }

        return failed > 0 ? -EBADMSG : 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Socket I/O with the scenario's deadline. */

static int set_deadline(int fd, uint64_t deadline) {
        uint64_t now = now_usec(), left = deadline > now ? deadline - now : 1;
        struct timeval tv = {
                .tv_sec = (time_t) (left / USEC_PER_SEC),
                .tv_usec = (suseconds_t) (left % USEC_PER_SEC),
        };

        if (tv.tv_sec == 0 && tv.tv_usec == 0)
                tv.tv_usec = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
                return negative_errno();
        if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
                return negative_errno();
        return 0;
}

static int io_errno(uint64_t deadline) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || now_usec() >= deadline)
                return -ETIMEDOUT;
        return negative_errno();
}

/* Writes all n bytes; *progress (if not NULL) grows with every byte accepted, also on failure. */
static int write_all(int fd, const uint8_t *p, size_t n, uint64_t deadline, uint64_t *progress) {
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return io_errno(deadline);
                }
                p += k;
                n -= (size_t) k;
                if (progress)
                        *progress += (uint64_t) k;
        }
        return 0;
}

/* One direction of a transfer. done counts bytes moved so far, also after a failure. */
typedef struct Stream {
        int fd;
        uint64_t size;
        uint64_t done;
        uint64_t deadline;
        uint8_t *buf;
        size_t bufsize;
} Stream;

/* Sends size bytes of stream seed. */
static int stream_send(Stream *s, uint64_t seed) {
        Gen g;
        int r;

        gen_init(&g, seed);
        while (s->done < s->size) {
                size_t n = (size_t) MIN((uint64_t) s->bufsize, s->size - s->done);

                if (now_usec() >= s->deadline)
                        return -ETIMEDOUT;
                gen_fill(&g, s->buf, n);
                r = write_all(s->fd, s->buf, n, s->deadline, &s->done);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Receives exactly size bytes into d; echo_fd >= 0 also writes each chunk back there. A close
 * before size bytes is -ECONNRESET. Never reads past size. */
static int stream_recv(Stream *s, Digest *d, int echo_fd) {
        int r;

        while (s->done < s->size) {
                size_t want = (size_t) MIN((uint64_t) s->bufsize, s->size - s->done);
                ssize_t k;

                if (now_usec() >= s->deadline)
                        return -ETIMEDOUT;
                k = recv(s->fd, s->buf, want, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return io_errno(s->deadline);
                }
                if (k == 0)
                        return -ECONNRESET;
                digest_update(d, s->buf, (size_t) k);
                s->done += (uint64_t) k;
                if (echo_fd >= 0) {
                        r = write_all(echo_fd, s->buf, (size_t) k, s->deadline, NULL);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* After the expected bytes: the peer must close without sending anything more (-EPROTO). */
static int expect_eof(int fd, uint64_t deadline) {
        uint8_t b[64];

        for (;;) {
                ssize_t k = recv(fd, b, sizeof(b), 0);

                if (k == 0)
                        return 0;
                if (k > 0)
                        return -EPROTO;
                if (errno == EINTR)
                        continue;
                return io_errno(deadline);
        }
}

/* ---------------------------------------------------------------------------------------------- */
/* The loopback target: three listeners on 127.0.0.1, each served by one thread, one connection at
 * a time (scenarios run one after another). main() posts a Job before it connects; the thread
 * copies it when it accepts, and posts a TargetResult carrying the Job's generation. */

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

static const char *const role_name[_ROLE_MAX] = {
        [ROLE_SINK] = "sink",
        [ROLE_SOURCE] = "source",
        [ROLE_ECHO] = "echo",
};

static int target_serve(Listener *l, int fd, const Job *job, TargetResult *res) {
        Stream s = {
                .fd = fd,
                .size = job->size,
                .deadline = job->deadline,
                .buf = l->buf,
                .bufsize = l->bufsize,
        };
        Digest d;
        uint8_t go;
        ssize_t k;
        int r;

        r = set_deadline(fd, job->deadline);
        if (r < 0)
                return r;

        digest_init(&d);
        switch (l->role) {
        case ROLE_SINK:
                r = stream_recv(&s, &d, -EBADF);
                res->done_usec = now_usec();
                break;
        case ROLE_SOURCE:
                /* Wait for the client's "go" so nothing is sent before its clock starts. */
                do
                        k = recv(fd, &go, 1, 0);
                while (k < 0 && errno == EINTR);
                if (k < 0)
                        return io_errno(job->deadline);
                if (k == 0)
                        return -ECONNRESET;
                r = stream_send(&s, job->seed);
                break;
        case ROLE_ECHO:
                r = stream_recv(&s, &d, fd);
                break;
        default:
                abort();
        }
        res->bytes = s.done;
        res->digest = digest_final(&d);
        return r;
}

static void target_post(Listener *l, const TargetResult *res) {
        pthread_mutex_lock(&l->lock);
        l->result = *res;
        pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->lock);
}

static void *target_thread(void *userdata) {
        Listener *l = userdata;

        for (;;) {
                TargetResult res = {};
                Job job;
                bool stopping;
                int fd, error;

                fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
                error = fd < 0 ? negative_errno() : 0;

                pthread_mutex_lock(&l->lock);
                job = l->job;
                stopping = l->stopping;
                if (!stopping && fd >= 0)
                        l->conn_fd = fd;
                pthread_mutex_unlock(&l->lock);

                if (stopping) {
                        (void) safe_close(fd);
                        return NULL;
                }
                if (fd < 0) {
                        if (IN_SET(-error, EINTR, ECONNABORTED, EPROTO))
                                continue;
                        /* Persistent failure: fail the current job and stop serving. */
                        res = (TargetResult) {
                                .generation = job.generation,
                                .error = error,
                        };
                        target_post(l, &res);
                        return NULL;
                }

                res.generation = job.generation;
                res.error = target_serve(l, fd, &job, &res);

                pthread_mutex_lock(&l->lock);
                l->conn_fd = -EBADF;
                pthread_mutex_unlock(&l->lock);
                (void) safe_close(fd);

                target_post(l, &res);
        }
}

/* Waits for the result of job generation; -ETIMEDOUT at deadline. */
static int target_wait(Listener *l, uint64_t generation, uint64_t deadline, TargetResult *ret_result) {
        struct timespec ts = {
                .tv_sec = (time_t) (deadline / USEC_PER_SEC),
                .tv_nsec = (long) (deadline % USEC_PER_SEC) * 1000L,
        };
        int r = 0;

        pthread_mutex_lock(&l->lock);
        while (l->result.generation != generation && r == 0)
                r = pthread_cond_timedwait(&l->cond, &l->lock, &ts);
        if (l->result.generation == generation) {
                *ret_result = l->result;
                r = 0;
        } else
                r = -ETIMEDOUT;
        pthread_mutex_unlock(&l->lock);
        return r;
}

static void target_post_job(Listener *l, const Job *job) {
        pthread_mutex_lock(&l->lock);
        l->job = *job;
        pthread_mutex_unlock(&l->lock);
}

static int listener_start(Listener *l, Role role, size_t bufsize) {
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        socklen_t salen = sizeof(sa);
        pthread_condattr_t ca;
        int r;

        *l = (Listener) {
                .role = role,
                .initialized = true,
                .fd = -EBADF,
                .conn_fd = -EBADF,
                .bufsize = bufsize,
        };
        pthread_mutex_init(&l->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&l->cond, &ca);
        pthread_condattr_destroy(&ca);

        l->buf = malloc(bufsize);
        if (!l->buf)
                return -ENOMEM;

        l->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (l->fd < 0)
                return negative_errno();
        if (bind(l->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return negative_errno();
        if (listen(l->fd, 16) < 0)
                return negative_errno();
        if (getsockname(l->fd, (struct sockaddr *) &sa, &salen) < 0)
                return negative_errno();
        l->port = ntohs(sa.sin_port);

        r = -pthread_create(&l->thread, NULL, target_thread, l);
        if (r < 0)
                return r;
        l->thread_started = true;
        return 0;
}

/* Stops the thread and frees everything; safe on a zeroed or half-started Listener. shutdown()
 * wakes the thread whether it waits in accept() or inside a connection (after a failed run). */
static void listener_stop(Listener *l) {
        if (!l->initialized)
                return;
        if (l->thread_started) {
                pthread_mutex_lock(&l->lock);
                l->stopping = true;
                if (l->conn_fd >= 0)
                        (void) shutdown(l->conn_fd, SHUT_RDWR);
                pthread_mutex_unlock(&l->lock);
                (void) shutdown(l->fd, SHUT_RDWR);
                (void) pthread_join(l->thread, NULL);
                l->thread_started = false;
        }
        l->fd = safe_close(l->fd);
        l->buf = mfree(l->buf);
        pthread_cond_destroy(&l->cond);
        pthread_mutex_destroy(&l->lock);
        l->initialized = false;
}

/* ---------------------------------------------------------------------------------------------- */
/* Client side: connections, direct or through konn. */

/* ---------------------------------------------------------------------------------------------- */
/* Client side: blocking connections, direct or through konn. */

typedef enum Transport {
        TRANSPORT_DIRECT,
        TRANSPORT_KONN,
        _TRANSPORT_MAX,
} Transport;

static const char *const transport_name[_TRANSPORT_MAX] = {
        [TRANSPORT_DIRECT] = "direct",
        [TRANSPORT_KONN] = "konn",
};

static int connect_direct(uint16_t port, uint64_t deadline, int *ret_fd) {
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_port = htons(port),
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        _cleanup_close_ int fd = -EBADF;
        int r;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        r = set_deadline(fd, deadline);
        if (r < 0)
                return r;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return io_errno(deadline);

        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Printable copy of the first line of a reply, for the error message. */
static void reply_first_line(const char *reply, size_t n, char *out, size_t outsize) {
        size_t j = 0;

        for (size_t i = 0; i < n && reply[i] != '\r' && reply[i] != '\n' && j + 1 < outsize; i++)
                out[j++] = reply[i] >= 0x20 && reply[i] < 0x7f ? reply[i] : '?';
        out[j] = '\0';
}

static int format_connect_request(uint16_t port, char *buf, size_t size) {
        int r = snprintf(buf, size, "CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                         (unsigned) port);

        assert(r > 0 && (size_t) r < size);
        return r;
}

/* Checks a complete CONNECT reply header of hlen bytes; logs and returns -EPROTO if it is not exactly
 * BENCH_CONNECT_REPLY. */
static int check_connect_reply(const char *reply, size_t hlen) {
        char line[128];

        if (hlen == STRLEN(BENCH_CONNECT_REPLY) && memcmp(reply, BENCH_CONNECT_REPLY, hlen) == 0)
                return 0;
        reply_first_line(reply, hlen, line, sizeof(line));
        fail("CONNECT refused: '%s'", line);
        return -EPROTO;
}

/* HTTP CONNECT on a konn Unix socket. The reply must be exactly BENCH_CONNECT_REPLY (else -EPROTO).
 * Tunnel bytes that arrive with it (at most extra_size, more is -EPROTO) are copied to extra. */
static int connect_konn(const char *uds, uint16_t port, uint64_t deadline, uint8_t *extra, size_t extra_size,
                        size_t *ret_extra_len, int *ret_fd) {
        struct sockaddr_un sa = {
                .sun_family = AF_UNIX,
        };
        _cleanup_close_ int fd = -EBADF;
        char request[128], reply[BENCH_REPLY_MAX], line[128];
        const char *end;
        size_t n = 0, hlen;
        int r;

        if (strlen(uds) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, uds, strlen(uds));

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        r = set_deadline(fd, deadline);
        if (r < 0)
                return r;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return io_errno(deadline);

        r = format_connect_request(port, request, sizeof(request));
        r = write_all(fd, (const uint8_t *) request, (size_t) r, deadline, NULL);
        if (r < 0)
                return r;

        while (!(end = memmem(reply, n, "\r\n\r\n", 4))) {
                ssize_t k;

                if (n >= sizeof(reply)) {
                        reply_first_line(reply, n, line, sizeof(line));
                        fail("CONNECT reply longer than %zu bytes: '%s...'", sizeof(reply), line);
                        return -EPROTO;
                }
                k = recv(fd, reply + n, sizeof(reply) - n, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return io_errno(deadline);
                }
                if (k == 0) {
                        reply_first_line(reply, n, line, sizeof(line));
                        fail("konn closed the connection during the CONNECT reply (got '%s')", line);
                        return -ECONNRESET;
                }
                n += (size_t) k;
        }

        hlen = (size_t) (end + 4 - reply);
        r = check_connect_reply(reply, hlen);
        if (r < 0)
                return r;
        if (n - hlen > extra_size) {
                fail("%zu unexpected bytes arrived with the CONNECT reply", n - hlen);
                return -EPROTO;
        }
        if (n > hlen)
                memcpy(extra, reply + hlen, n - hlen);

        *ret_extra_len = n - hlen;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* A blocking connection to port, direct (uds NULL) or through the konn socket uds, that expects no bytes
 * before it sends something. */
static int connect_to(const char *uds, uint16_t port, uint64_t deadline, int *ret_fd) {
        size_t n_extra;

        if (!uds)
                return connect_direct(port, deadline, ret_fd);
        return connect_konn(uds, port, deadline, NULL, 0, &n_extra, ret_fd);
}

/* ---------------------------------------------------------------------------------------------- */
/* Daemon accounting from /proc. */

typedef struct ProcMem {
        bool valid;
        uint64_t vmrss_kib;
        uint64_t rssanon_kib;
        uint64_t vmhwm_kib;
} ProcMem;

/* utime+stime of pid, in clock ticks. */
static int proc_cpu_ticks(pid_t pid, uint64_t *ret_ticks) {
        char path[64], buf[1024], *p, *save = NULL;
        unsigned long long utime = 0, stime = 0;
        _cleanup_close_ int fd = -EBADF;
        ssize_t n;

        (void) snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0)
                return negative_errno();
        buf[n] = '\0';

        /* "pid (comm) state ppid ...": comm may contain anything, so start after the last ')'. */
        p = strrchr(buf, ')');
        if (!p)
                return -EBADMSG;
        p++;
        /* After ')': state is field 3; utime and stime are fields 14 and 15. */
        unsigned field = 2;
        for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
                field++;
                if (field == 14 || field == 15) {
                        char *end;

                        errno = 0;
                        unsigned long long v = strtoull(tok, &end, 10);
                        if (errno != 0 || end == tok || *end != '\0')
                                return -EBADMSG;
                        if (field == 14)
                                utime = v;
                        else {
                                stime = v;
                                *ret_ticks = utime + stime;
                                return 0;
                        }
                }
        }
        return -EBADMSG;
}

static int proc_mem(pid_t pid, ProcMem *ret_mem) {
        static const char *const keys[] = { "VmRSS:", "RssAnon:", "VmHWM:" };
        char path[64], line[256];
        ProcMem m = {};
        uint64_t *const values[ELEMENTSOF(keys)] = { &m.vmrss_kib, &m.rssanon_kib, &m.vmhwm_kib };
        unsigned found = 0;
        FILE *f;

        (void) snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return negative_errno();
        while (fgets(line, sizeof(line), f))
                for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                        unsigned long long v;

                        if (strncmp(line, keys[i], strlen(keys[i])) != 0)
                                continue;
                        if (sscanf(line + strlen(keys[i]), " %llu kB", &v) != 1)
                                continue;
                        *values[i] = v;
                        found |= 1U << i;
                }
        fclose(f);
        if (found != (1U << ELEMENTSOF(keys)) - 1)
                return -EBADMSG;

        m.valid = true;
        *ret_mem = m;
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* The target child process: one epoll loop, four listeners (see the comment at the top). */

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

static void tstat_add(uint64_t *p, uint64_t v) {
        (void) __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

static void tconn_free(TChild *t, TConn *c, int error) {
        if (error < 0 && !IN_SET(-error, ECONNRESET, EPIPE))
                tstat_add(&t->stats[c->node.role].failed, 1);
        tstat_add(&t->stats[c->node.role].closed, 1);
        (void) safe_close(c->node.fd);
        free(c->buf);
        free(c);
}

static int tconn_set_events(TChild *t, TConn *c, uint32_t events) {
        struct epoll_event ev = {
                .events = events,
                .data.ptr = c,
        };

        if (events == c->events)
                return 0;
        if (epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->node.fd, &ev) < 0)
                return negative_errno();
        c->events = events;
        return 0;
}

/* 1 once the 16-byte header is complete (buf allocated, gen seeded), 0 while incomplete, < 0 on error. */
static int tconn_read_header(TChild *t, TConn *c) {
        uint64_t v;
        ssize_t k;

        while (c->hdr_len < HDR_SIZE) {
                k = recv(c->node.fd, c->hdr + c->hdr_len, HDR_SIZE - c->hdr_len, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : negative_errno();
                }
                if (k == 0)
                        return -ECONNRESET;
                c->hdr_len += (size_t) k;
                tstat_add(&t->stats[c->node.role].bytes_in, (uint64_t) k);
        }
        memcpy(&v, c->hdr, 8);
        c->size = le64toh(v);
        memcpy(&v, c->hdr + 8, 8);
        gen_init(&c->gen, le64toh(v));
        c->buf = malloc(TARGET_BUF);
        if (!c->buf)
                return -ENOMEM;
        return 1;
}

/* Echo: verify and write back exactly size bytes, then close (0). */
static int tconn_echo(TChild *t, TConn *c) {
        TStats *st = &t->stats[c->node.role];
        int r;

        if (!c->buf) {
                r = tconn_read_header(t, c);
                if (r <= 0)
                        return r < 0 ? r : 1;
                if (c->size == 0)
                        return 0;
        }

        for (unsigned i = 0; i < 16; i++) {
                ssize_t k;

                if (c->off < c->len) {
                        k = send(c->node.fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (errno == EAGAIN)
                                        return tconn_set_events(t, c, EPOLLOUT) < 0 ? -EIO : 1;
                                return negative_errno();
                        }
                        c->off += (size_t) k;
                        tstat_add(&st->bytes_out, (uint64_t) k);
                        if (c->off < c->len)
                                continue;
                        c->off = c->len = 0;
                }
                if (c->done_in == c->size)
                        return 0; /* everything echoed */

                k = recv(c->node.fd, c->buf, (size_t) MIN((uint64_t) TARGET_BUF, c->size - c->done_in), 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return tconn_set_events(t, c, EPOLLIN) < 0 ? -EIO : 1;
                        return negative_errno();
                }
                if (k == 0)
                        return -ECONNRESET;
                if (!gen_verify(&c->gen, c->buf, (size_t) k, t->scratch, SCRATCH_SIZE)) {
                        tstat_add(&st->verify_failed, 1);
                        return -EBADMSG;
                }
                c->done_in += (uint64_t) k;
                tstat_add(&st->bytes_in, (uint64_t) k);
                c->len = (size_t) k;
        }
        /* Budget used up; level-triggered epoll calls again for whatever is waiting. */
        return tconn_set_events(t, c, c->off < c->len ? EPOLLOUT : EPOLLIN) < 0 ? -EIO : 1;
}

/* Reads and discards; 0 when the peer has closed. */
static int tconn_drain(TChild *t, TConn *c) {
        for (unsigned i = 0; i < 16; i++) {
                ssize_t k = recv(c->node.fd, t->scratch, SCRATCH_SIZE, 0);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 1 : negative_errno();
                }
                if (k == 0)
                        return 0;
                tstat_add(&t->stats[c->node.role].bytes_in, (uint64_t) k);
        }
        return 1;
}

/* Flood/stall: after the header, send the stream until the peer goes away. */
static int tconn_flood(TChild *t, TConn *c, uint32_t events) {
        TStats *st = &t->stats[c->node.role];
        int r;

        if (!c->buf) {
                r = tconn_read_header(t, c);
                if (r <= 0)
                        return r < 0 ? r : 1;
                return tconn_set_events(t, c, EPOLLIN | EPOLLOUT) < 0 ? -EIO : 1;
        }
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                r = tconn_drain(t, c);
                if (r <= 0)
                        return r;
        }
        if (!(events & EPOLLOUT))
                return 1;
        for (unsigned i = 0; i < 16; i++) {
                ssize_t k;

                if (c->off == c->len) {
                        gen_fill(&c->gen, c->buf, TARGET_BUF);
                        c->off = 0;
                        c->len = TARGET_BUF;
                }
                k = send(c->node.fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 1 : negative_errno();
                }
                c->off += (size_t) k;
                tstat_add(&st->bytes_out, (uint64_t) k);
        }
        return 1;
}

static void tchild_accept(TChild *t, TNode *l) {
        for (unsigned i = 0; i < 256; i++) {
                struct epoll_event ev = {
                        .events = EPOLLIN,
                };
                TConn *c;
                int fd;

                fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (IN_SET(errno, EINTR, ECONNABORTED))
                                continue;
                        if (errno != EAGAIN)
                                tstat_add(&t->stats[l->role].failed, 1);
                        return;
                }
                tstat_add(&t->stats[l->role].accepted, 1);
                c = calloc(1, sizeof(TConn));
                if (!c) {
                        (void) safe_close(fd);
                        tstat_add(&t->stats[l->role].failed, 1);
                        tstat_add(&t->stats[l->role].closed, 1);
                        continue;
                }
                *c = (TConn) {
                        .node.kind = TNODE_CONN,
                        .node.fd = fd,
                        .node.role = l->role,
                        .events = EPOLLIN,
                };
                if (l->role == TROLE_HELLO) {
                        const uint8_t hello = HELLO_BYTE;

                        if (send(fd, &hello, 1, MSG_NOSIGNAL) != 1) {
                                tconn_free(t, c, -EIO);
                                continue;
                        }
                        tstat_add(&t->stats[l->role].bytes_out, 1);
                }
                ev.data.ptr = c;
                if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                        tconn_free(t, c, -EIO);
        }
}

static void tchild_conn_event(TChild *t, TConn *c, uint32_t events) {
        int r;

        switch (c->node.role) {
        case TROLE_ECHO:
                r = tconn_echo(t, c);
                break;
        case TROLE_HELLO:
                r = tconn_drain(t, c);
                break;
        case TROLE_FLOOD:
        case TROLE_STALL:
                r = tconn_flood(t, c, events);
                break;
        default:
                abort();
        }
        if (r <= 0)
                tconn_free(t, c, r);
}

static _Noreturn void tchild_main(int lfd[_TROLE_MAX], int pipe_fd, TStats *stats, pid_t parent) {
        static TNode listeners[_TROLE_MAX], pipe_node;
        struct epoll_event evs[256];
        TChild t = {
                .stats = stats,
        };

        /* Die with the parent, also if it was gone before prctl() took effect. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                _exit(EXIT_FAILURE);
        (void) signal(SIGINT, SIG_IGN); /* ^C goes to the parent, which closes the pipe */

        t.scratch = malloc(SCRATCH_SIZE);
        t.epfd = epoll_create1(EPOLL_CLOEXEC);
        if (!t.scratch || t.epfd < 0)
                _exit(EXIT_FAILURE);

        pipe_node = (TNode) {
                .kind = TNODE_PIPE,
                .fd = pipe_fd,
        };
        if (epoll_ctl(t.epfd, EPOLL_CTL_ADD, pipe_fd,
                      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &pipe_node }) < 0)
                _exit(EXIT_FAILURE);
        for (TRole role = 0; role < _TROLE_MAX; role++) {
                listeners[role] = (TNode) {
                        .kind = TNODE_LISTENER,
                        .fd = lfd[role],
                        .role = role,
                };
                if (epoll_ctl(t.epfd, EPOLL_CTL_ADD, lfd[role],
                              &(struct epoll_event) { .events = EPOLLIN, .data.ptr = &listeners[role] }) < 0)
                        _exit(EXIT_FAILURE);
        }

        for (;;) {
                int n = epoll_wait(t.epfd, evs, (int) ELEMENTSOF(evs), -1);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        _exit(EXIT_FAILURE);
                }
                for (int i = 0; i < n; i++) {
                        TNode *node = evs[i].data.ptr;

                        switch (node->kind) {
                        case TNODE_PIPE:
                                _exit(EXIT_SUCCESS);
                        case TNODE_LISTENER:
                                tchild_accept(&t, node);
                                break;
                        case TNODE_CONN:
                                tchild_conn_event(&t, (TConn *) node, evs[i].events);
                                break;
                        }
                }
        }
}

static int tlisten(uint16_t *ret_port, int *ret_fd) {
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        socklen_t salen = sizeof(sa);
        _cleanup_close_ int fd = -EBADF;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return negative_errno();
        if (listen(fd, 4096) < 0)
                return negative_errno();
        if (getsockname(fd, (struct sockaddr *) &sa, &salen) < 0)
                return negative_errno();
        *ret_port = ntohs(sa.sin_port);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Creates the listeners and forks the child. Call before any thread exists. */
static int target_start(Target *t) {
        int lfd[_TROLE_MAX], pipefd[2] = { -EBADF, -EBADF }, r = 0;
        pid_t parent = getpid(), pid;
        TStats *stats;

        *t = (Target) {
                .pid = -1,
                .pipe_fd = -EBADF,
        };
        for (TRole role = 0; role < _TROLE_MAX; role++)
                lfd[role] = -EBADF;

        stats = mmap(NULL, sizeof(TStats) * _TROLE_MAX, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
        if (stats == MAP_FAILED)
                return negative_errno();
        t->stats = stats;

        for (TRole role = 0; role < _TROLE_MAX && r >= 0; role++)
                r = tlisten(&t->port[role], &lfd[role]);
        if (r >= 0 && pipe2(pipefd, O_CLOEXEC) < 0)
                r = negative_errno();
        if (r >= 0) {
                (void) fflush(NULL);
                pid = fork();
                if (pid < 0)
                        r = negative_errno();
                else if (pid == 0) {
                        (void) safe_close(pipefd[1]);
                        tchild_main(lfd, pipefd[0], stats, parent);
                } else {
                        t->pid = pid;
                        t->pipe_fd = TAKE_FD(pipefd[1]);
                }
        }

        for (TRole role = 0; role < _TROLE_MAX; role++)
                (void) safe_close(lfd[role]);
        (void) safe_close(pipefd[0]);
        (void) safe_close(pipefd[1]);
        return r;
}

/* -ESRCH if the child has exited. */
static int target_check(Target *t) {
        int status;

        if (t->pid <= 0)
                return -ESRCH;
        if (waitpid(t->pid, &status, WNOHANG) == t->pid) {
                fail("the target process exited unexpectedly (status 0x%x)", (unsigned) status);
                t->pid = -1;
                return -ESRCH;
        }
        return 0;
}

/* Safe on a zeroed or failed Target: closes the pipe, waits up to 2 s for the child, then kills it. */
static void target_stop(Target *t) {
        if (t->pid > 0) {
                t->pipe_fd = safe_close(t->pipe_fd);
                for (unsigned i = 0; i < 200; i++) {
                        if (waitpid(t->pid, NULL, WNOHANG) == t->pid) {
                                t->pid = -1;
                                break;
                        }
                        sleep_usec(10 * USEC_PER_MSEC);
                }
                if (t->pid > 0) {
                        (void) kill(t->pid, SIGKILL);
                        (void) waitpid(t->pid, NULL, 0);
                        t->pid = -1;
                }
        }
        t->pipe_fd = safe_close(t->pipe_fd);
        if (t->stats && t->stats != MAP_FAILED)
                (void) munmap(t->stats, sizeof(TStats) * _TROLE_MAX);
        t->stats = NULL;
}

/* Waits until the target has seen `closed` closes on role; -ETIMEDOUT after usec. */
static int target_wait_closed(Target *t, TRole role, uint64_t closed, uint64_t usec) {
        uint64_t until = now_usec() + usec;

        while (TSTAT(t, role, closed) < closed) {
                if (target_check(t) < 0)
                        return -ESRCH;
                if (now_usec() >= until)
                        return -ETIMEDOUT;
                sleep_usec(5 * USEC_PER_MSEC);
        }
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Client side: many non-blocking connections on one epoll loop (level-triggered). */

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

static int conn_set_events(Loop *lp, Conn *c, uint32_t events) {
        struct epoll_event ev = {
                .events = events,
                .data.ptr = c,
        };
        int op;

        if (events == c->events)
                return 0;
        op = c->events == 0 ? EPOLL_CTL_ADD : events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
        if (epoll_ctl(lp->epfd, op, c->fd, &ev) < 0)
                return negative_errno();
        c->events = events;
        return 0;
}

static void conn_close(Conn *c) {
        c->fd = safe_close(c->fd); /* also leaves the epoll set */
        c->events = 0;
        c->state = CONN_FREE;
        c->ready = false;
        c->wbuf = mfree(c->wbuf);
}

/* n closed connections; NULL on OOM. */
static Conn *conns_new(unsigned n) {
        Conn *conns = calloc(MAX(n, 1U), sizeof(Conn));

        if (!conns)
                return NULL;
        for (unsigned i = 0; i < n; i++)
                conns[i].fd = -EBADF;
        return conns;
}

/* Closes and frees a set of connections; the retry list only ever refers to the current set. */
static void conns_free(Loop *lp, Conn *conns, unsigned n) {
        lp->n_retry = 0;
        if (!conns)
                return;
        for (unsigned i = 0; i < n; i++)
                conn_close(&conns[i]);
        free(conns);
}

static int loop_add_retry(Loop *lp, Conn *c) {
        if (lp->n_retry == lp->retry_cap) {
                size_t cap = MAX(lp->retry_cap * 2, (size_t) 64);
                Conn **p = realloc(lp->retry, cap * sizeof(Conn *));

                if (!p)
                        return -ENOMEM;
                lp->retry = p;
                lp->retry_cap = cap;
        }
        lp->retry[lp->n_retry++] = c;
        c->state = CONN_RETRY;
        return 0;
}

static int conn_send_request(Loop *lp, Conn *c) {
        char request[128];
        size_t n = (size_t) format_connect_request(c->port, request, sizeof(request));

        while (c->req_off < n) {
                ssize_t k = send(c->fd, request + c->req_off, n - c->req_off, MSG_NOSIGNAL);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                c->state = CONN_REQUEST;
                                return conn_set_events(lp, c, EPOLLOUT);
                        }
                        return negative_errno();
                }
                c->req_off += (size_t) k;
        }
        c->state = CONN_REPLY;
        return conn_set_events(lp, c, EPOLLIN);
}

static int conn_connect(Loop *lp, Conn *c) {
        if (c->uds) {
                struct sockaddr_un sa = {
                        .sun_family = AF_UNIX,
                };

                if (strlen(c->uds) >= sizeof(sa.sun_path))
                        return -ENAMETOOLONG;
                memcpy(sa.sun_path, c->uds, strlen(c->uds));
                if (connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                        if (errno == EAGAIN)
                                return loop_add_retry(lp, c);
                        return negative_errno();
                }
                c->req_off = 0;
                return conn_send_request(lp, c);
        }

        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_port = htons(c->port),
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        if (connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
                return negative_errno();
        /* Also when connect() completed at once: EPOLLOUT fires right away. */
        c->state = CONN_CONNECTING;
        return conn_set_events(lp, c, EPOLLOUT);
}

/* Starts a connection to port, direct (uds NULL) or through the konn socket uds. c must be closed. */
static int conn_begin(Loop *lp, Conn *c, const char *uds, uint16_t port) {
        assert(c->fd < 0 || c->state == CONN_FREE);
        *c = (Conn) {
                .fd = -EBADF,
                .uds = uds,
                .port = port,
                .t_start = now_usec(),
        };
        c->fd = socket(uds ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return negative_errno();
        return conn_connect(lp, c);
}

/* connect() again for every connection that found the konn socket's backlog full. In place: each
 * retry appends at most one entry, at an index not above the one being visited. */
static int loop_retry_all(Loop *lp) {
        size_t n = lp->n_retry;
        int r;

        lp->n_retry = 0;
        for (size_t i = 0; i < n; i++) {
                Conn *c = lp->retry[i];

                if (c->state != CONN_RETRY)
                        continue;
                r = conn_connect(lp, c);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Advances the set-up of c on an epoll event. Returns 1 when the connection is open (*ret_extra and
 * *ret_extra_len: tunnel bytes that came with the CONNECT reply), 0 while it is still being set up, or
 * a negative errno (-EPROTO: a reply other than BENCH_CONNECT_REPLY, which is logged). */
static int conn_setup_event(Loop *lp, Conn *c, const uint8_t **ret_extra, size_t *ret_extra_len) {
        switch (c->state) {
        case CONN_CONNECTING: {
                int error = 0, r;
                socklen_t len = sizeof(error);

                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        return negative_errno();
                if (error != 0)
                        return -error;
                c->state = CONN_OPEN;
                r = conn_set_events(lp, c, EPOLLIN);
                if (r < 0)
                        return r;
                *ret_extra = NULL;
                *ret_extra_len = 0;
                return 1;
        }

        case CONN_REQUEST:
                return conn_send_request(lp, c);

        case CONN_REPLY: {
                const char *end;
                size_t hlen;
                ssize_t k;
                int r;

                k = recv(c->fd, c->reply + c->reply_len, sizeof(c->reply) - c->reply_len, 0);
                if (k < 0)
                        return IN_SET(errno, EAGAIN, EINTR) ? 0 : negative_errno();
                if (k == 0) {
                        char line[128];

                        reply_first_line(c->reply, c->reply_len, line, sizeof(line));
                        fail("konn closed the connection during the CONNECT reply (got '%s')", line);
                        return -ECONNRESET;
                }
                c->reply_len += (size_t) k;
                end = memmem(c->reply, c->reply_len, "\r\n\r\n", 4);
                if (!end) {
                        if (c->reply_len < sizeof(c->reply))
                                return 0;
                        return check_connect_reply(c->reply, c->reply_len);
                }
                hlen = (size_t) (end + 4 - c->reply);
                r = check_connect_reply(c->reply, hlen);
                if (r < 0)
                        return r;
                c->state = CONN_OPEN;
                *ret_extra = (const uint8_t *) c->reply + hlen;
                *ret_extra_len = c->reply_len - hlen;
                return 1;
        }

        default:
                return -EINVAL;
        }
}

/* For connections to the hello target: 1 once HELLO_BYTE (and nothing else) has arrived, 0 while
 * pending, negative errno on failure. */
static int conn_hello_event(Loop *lp, Conn *c) {
        const uint8_t *extra;
        size_t n_extra;
        uint8_t b[2];
        ssize_t k;
        int r;

        if (c->state != CONN_OPEN) {
                r = conn_setup_event(lp, c, &extra, &n_extra);
                if (r <= 0 || n_extra == 0)
                        return r < 0 ? r : 0;
                return n_extra == 1 && extra[0] == HELLO_BYTE ? 1 : -EPROTO;
        }
        k = recv(c->fd, b, sizeof(b), 0);
        if (k < 0)
                return IN_SET(errno, EAGAIN, EINTR) ? 0 : negative_errno();
        if (k == 0)
                return -ECONNRESET;
        return k == 1 && b[0] == HELLO_BYTE ? 1 : -EPROTO;
}

/* ---------------------------------------------------------------------------------------------- */
/* Scenarios and results. */

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

static const char *const scenario_name[_SCENARIO_MAX] = {
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
static const Scenario scenario_order[_SCENARIO_MAX] = {
        SCENARIO_IDLE_RSS, SCENARIO_IDLE_TUNNELS, SCENARIO_DIAL, SCENARIO_DIAL_CONCURRENT, SCENARIO_UPLOAD,
        SCENARIO_DOWNLOAD, SCENARIO_ECHO,         SCENARIO_HOL,  SCENARIO_ECHO_MANY, SCENARIO_ECHO_1000,
};

static const Role scenario_role[_SCENARIO_MAX] = {
        [SCENARIO_UPLOAD] = ROLE_SINK,
        [SCENARIO_DOWNLOAD] = ROLE_SOURCE,
        [SCENARIO_ECHO] = ROLE_ECHO,
};

static bool scenario_enabled(Scenario sc) {
        return arg_scenarios == 0 || (arg_scenarios & (1U << sc));
}

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

static const char *const daemon_name[2] = { "server", "agent" };

/* Finds or adds the row (scenario, name, metric). NULL if the table is full (then nothing is recorded). */
static Row *row(Bench *b, Scenario sc, const char *name, const char *metric, const char *unit,
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

static void row_add(Row *r, Transport tr, double v) {
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
static double client_target_cpu_s(const Bench *b) {
        uint64_t ticks = 0;
        double s = rusage_cpu_s();

        if (b->target.pid > 0 && proc_cpu_ticks(b->target.pid, &ticks) >= 0)
                s += (double) ticks / (double) b->clk_tck;
        return s;
}

static bool have_daemon_pids(void) {
        return arg_server_pid > 0 && arg_agent_pid > 0;
}

static int daemons_cpu(uint64_t ret_ticks[2]) {
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

/* Daemon CPU counters at the start of a konn measurement (valid stays false without pids). */
typedef struct CpuMark {
        bool valid;
        uint64_t ticks[2];
} CpuMark;

static int cpu_mark(Transport tr, CpuMark *ret) {
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
static int cpu_since(const Bench *b, const CpuMark *start, double ret_s[2]) {
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
static int daemons_mem_settled(ProcMem ret[2]) {
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

static double mib_per_s(uint64_t bytes, double seconds) {
        return seconds > 0 ? (double) bytes / MIB_F / seconds : 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* upload, download, echo: one tunnel, the thread targets. */

typedef struct EchoWriter {
        Stream s;
        uint64_t seed;
        int error;
} EchoWriter;

static void *echo_writer_thread(void *userdata) {
        EchoWriter *w = userdata;

        w->error = stream_send(&w->s, w->seed);
        if (w->error < 0)
                (void) shutdown(w->s.fd, SHUT_RDWR); /* wake the reader */
        return NULL;
}

/* Runs one bulk scenario once. Logs the reason of any failure, and returns it. */
static int run_bulk_one(Bench *b, Scenario sc, Transport tr, uint64_t seed, Measurement *ret) {
        Listener *l = &b->listeners[scenario_role[sc]];
        const char *what_sc = scenario_name[sc], *what_tr = transport_name[tr];
        _cleanup_close_ int fd = -EBADF;
        uint64_t expected, deadline, t_setup, t0, t1 = 0;
        TargetResult res = {};
        Measurement m = {};
        CpuMark cpu;
        double cpu_s[2];
        Stream s;
        Digest d;
        Job job;
        double bench0;
        int r;

        expected = stream_digest(seed, arg_size, b->buf, arg_buffer_size);

        deadline = now_usec() + (uint64_t) arg_timeout_sec * USEC_PER_SEC;
        job = (Job) {
                .generation = ++b->generation,
                .size = arg_size,
                .seed = seed,
                .deadline = deadline,
        };
        target_post_job(l, &job);

        r = cpu_mark(tr, &cpu);
        if (r < 0)
                return r;
        bench0 = client_target_cpu_s(b);

        t_setup = now_usec();
        r = connect_to(tr == TRANSPORT_KONN ? arg_konn_uds : NULL, l->port, deadline, &fd);
        if (r < 0) {
                fail("%s via %s: failed to open the connection to the %s: %s", what_sc, what_tr,
                     role_name[l->role], strerror(-r));
                return r;
        }
        t0 = now_usec();
        m.setup_ms = (double) (t0 - t_setup) / 1e3;

        s = (Stream) {
                .fd = fd,
                .size = arg_size,
                .deadline = deadline,
                .buf = b->buf,
                .bufsize = arg_buffer_size,
        };
        digest_init(&d);

        switch (sc) {
        case SCENARIO_UPLOAD:
                r = stream_send(&s, seed);
                if (r < 0)
                        fail("%s via %s: send failed after %" PRIu64 " of %" PRIu64 " bytes: %s", what_sc,
                             what_tr, s.done, s.size, strerror(-r));
                break;

        case SCENARIO_DOWNLOAD: {
                const uint8_t go = 'G';

                r = write_all(fd, &go, 1, deadline, NULL);
                if (r < 0) {
                        fail("%s via %s: failed to send the start byte: %s", what_sc, what_tr, strerror(-r));
                        break;
                }
                r = stream_recv(&s, &d, -EBADF);
                t1 = now_usec();
                if (r < 0)
                        fail("%s via %s: receive failed after %" PRIu64 " of %" PRIu64 " bytes: %s", what_sc,
                             what_tr, s.done, s.size, strerror(-r));
                break;
        }

        case SCENARIO_ECHO: {
                EchoWriter w = {
                        .s = s,
                        .seed = seed,
                };
                pthread_t thread;

                w.s.buf = b->wbuf;
                r = -pthread_create(&thread, NULL, echo_writer_thread, &w);
                if (r < 0) {
                        fail("%s via %s: failed to start the writer thread: %s", what_sc, what_tr,
                             strerror(-r));
                        break;
                }
                r = stream_recv(&s, &d, -EBADF);
                t1 = now_usec();
                if (r < 0)
                        (void) shutdown(fd, SHUT_RDWR); /* wake the writer */
                (void) pthread_join(thread, NULL);
                if (w.error < 0) {
                        fail("%s via %s: send failed after %" PRIu64 " of %" PRIu64 " bytes: %s", what_sc,
                             what_tr, w.s.done, w.s.size, strerror(-w.error));
                        r = w.error;
                } else if (r < 0)
                        fail("%s via %s: receive failed after %" PRIu64 " of %" PRIu64 " bytes: %s", what_sc,
                             what_tr, s.done, s.size, strerror(-r));
                break;
        }

        default:
                abort();
        }

        if (r >= 0) {
                /* The target closes after its N bytes; nothing more may arrive. */
                r = expect_eof(fd, deadline);
                if (r == -EPROTO)
                        fail("%s via %s: received more than the %" PRIu64 " bytes expected", what_sc,
                             what_tr, arg_size);
                else if (r < 0)
                        fail("%s via %s: waiting for the close after the last byte failed: %s", what_sc,
                             what_tr, strerror(-r));
        }
        if (r < 0) {
                /* Say what the target side saw, if it has finished. */
                if (target_wait(l, job.generation, now_usec(), &res) >= 0 && res.error < 0)
                        fail("%s via %s: the %s saw %" PRIu64 " bytes and failed: %s", what_sc, what_tr,
                             role_name[l->role], res.bytes, strerror(-res.error));
                return r;
        }

        r = target_wait(l, job.generation, deadline, &res);
        if (r < 0) {
                fail("%s via %s: the %s did not finish in time", what_sc, what_tr, role_name[l->role]);
                return r;
        }
        if (res.error < 0) {
                fail("%s via %s: the %s failed after %" PRIu64 " of %" PRIu64 " bytes: %s", what_sc, what_tr,
                     role_name[l->role], res.bytes, arg_size, strerror(-res.error));
                return res.error;
        }
        if (res.bytes != arg_size) {
                fail("%s via %s: the %s handled %" PRIu64 " bytes, expected %" PRIu64, what_sc, what_tr,
                     role_name[l->role], res.bytes, arg_size);
                return -EBADMSG;
        }

        /* Checksums: the receiver(s) must have seen exactly the generated stream. */
        if (IN_SET(sc, SCENARIO_UPLOAD, SCENARIO_ECHO) && res.digest != expected) {
                fail("%s via %s: checksum mismatch at the %s: got %016" PRIx64 ", sent %016" PRIx64, what_sc,
                     what_tr, role_name[l->role], res.digest, expected);
                return -EBADMSG;
        }
        if (IN_SET(sc, SCENARIO_DOWNLOAD, SCENARIO_ECHO) && digest_final(&d) != expected) {
                fail("%s via %s: checksum mismatch at the client: got %016" PRIx64 ", sent %016" PRIx64,
                     what_sc, what_tr, digest_final(&d), expected);
                return -EBADMSG;
        }

        if (sc == SCENARIO_UPLOAD)
                t1 = res.done_usec;
        m.seconds = (double) (t1 > t0 ? t1 - t0 : 1) / 1e6;
        m.size = arg_size;
        m.carried = sc == SCENARIO_ECHO ? 2 * arg_size : arg_size;
        m.bench_cpu_s = client_target_cpu_s(b) - bench0;

        r = cpu_since(b, &cpu, cpu_s);
        if (r < 0)
                return r;
        if (r > 0) {
                m.daemon_cpu_valid = true;
                m.server_cpu_s = cpu_s[0];
                m.agent_cpu_s = cpu_s[1];
        }

        m.done = true;
        *ret = m;
        return 0;
}

/* Throughput row, and for konn the daemons' CPU per GiB carried. */
/* Throughput and, through konn, CPU per GiB carried against the physical floor measured in the same run:
 * floor = 2 x (client + target CPU per GiB of the direct run: the two socket copies each daemon must make too)
 *       + 2 x (1 / AES-GCM bytes per second of one core: one encryption and one decryption per byte).
 * efficiency = floor / (server + agent CPU per GiB). */
static void record_transfer(Bench *b, Scenario sc, const char *name, const char *metric, bool efficiency_target,
                            Transport tr, const Measurement *m) {
        double gib = (double) m->carried / GIB;

        row_add(row(b, sc, name, metric, "MiB/s", 1, TARGET_NONE, 0), tr, mib_per_s(m->size, m->seconds));
        if (tr == TRANSPORT_DIRECT && gib > 0)
                b->direct_cpu_per_gib[sc] = m->bench_cpu_s / gib;
        if (tr != TRANSPORT_KONN || !m->daemon_cpu_valid)
                return;
        double cpu = (m->server_cpu_s + m->agent_cpu_s) / gib;
        row_add(row(b, sc, name, "CPU server+agent per GiB", "s", 3, TARGET_NONE, 0), tr, cpu);
        if (b->aes_gcm_bps > 0 && b->direct_cpu_per_gib[sc] > 0 && cpu > 0) {
                double floor = 2 * b->direct_cpu_per_gib[sc] + 2 * GIB / b->aes_gcm_bps;

                row_add(row(b, sc, name, "floor CPU per GiB (same run)", "s", 3, TARGET_NONE, 0), tr, floor);
                row_add(row(b, sc, name, "efficiency = floor / CPU per GiB", "", 3,
                            efficiency_target ? TARGET_KONN_MIN : TARGET_NONE, 0.8),
                        tr, floor / cpu);
        }
        row_add(row(b, sc, name, "CPU server per GiB", "s", 3, TARGET_NONE, 0), tr, m->server_cpu_s / gib);
        row_add(row(b, sc, name, "CPU agent per GiB", "s", 3, TARGET_NONE, 0), tr, m->agent_cpu_s / gib);
}

static int run_bulk(Bench *b, Scenario sc, unsigned run) {
        int r;

        for (Transport tr = 0; tr < _TRANSPORT_MAX; tr++) {
                /* A fixed seed per scenario, transport and run: reproducible, and different in every run. */
                uint64_t seed = UINT64_C(0x6b6f6e6e2d62656e) + (sc * _TRANSPORT_MAX + tr) * RUNS_MAX + run;
                Measurement m;

                if (tr == TRANSPORT_KONN && !arg_konn_uds)
                        continue;
                r = run_bulk_one(b, sc, tr, seed, &m);
                if (r < 0)
                        return r;
                record_transfer(b, sc, scenario_name[sc],
                                sc == SCENARIO_ECHO ? "throughput per direction" : "throughput", sc != SCENARIO_ECHO,
                                tr, &m);
        }
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Many connections: opening, echo-many. */

/* Waits for events (at most 1 s, or 1 ms while connections wait to retry), after retrying those.
 * Returns the number of events, 0 on timeout or EINTR, -ETIMEDOUT past deadline, -ESRCH if the target
 * process died. */
static int loop_wait(Bench *b, struct epoll_event *evs, int max, uint64_t deadline) {
        Loop *lp = &b->loop;
        uint64_t now;
        int n, timeout, r;

        r = loop_retry_all(lp);
        if (r < 0)
                return r;
        now = now_usec();
        if (now >= deadline)
                return -ETIMEDOUT;
        timeout = lp->n_retry > 0 ? 1 : (int) MIN((deadline - now + 999) / 1000, (uint64_t) 1000);
        n = epoll_wait(lp->epfd, evs, max, timeout);
        if (n < 0)
                return errno == EINTR ? 0 : negative_errno();
        if (n == 0 && target_check(&b->target) < 0)
                return -ESRCH;
        return n;
}

/* Opens n connections to port, at most OPEN_INFLIGHT being set up at a time. With hello, a connection
 * is ready when the target's HELLO_BYTE has arrived (and it stays registered for EPOLLIN, so that a
 * close is noticed); otherwise when it is open and nothing has arrived. Logs failures. */
static int open_many(Bench *b, const char *what, Conn *conns, unsigned n, const char *uds, uint16_t port,
                     bool hello, uint64_t deadline) {
        struct epoll_event evs[256];
        unsigned next = 0, inflight = 0, ready = 0;
        int r;

        while (ready < n) {
                while (inflight < OPEN_INFLIGHT && next < n) {
                        r = conn_begin(&b->loop, &conns[next], uds, port);
                        if (r < 0) {
                                fail("%s: connection %u of %u: %s", what, next + 1, n, strerror(-r));
                                return r;
                        }
                        next++;
                        inflight++;
                }

                r = loop_wait(b, evs, (int) ELEMENTSOF(evs), deadline);
                if (r < 0) {
                        fail("%s: %u of %u connections ready: %s", what, ready, n, strerror(-r));
                        return r;
                }
                for (int i = 0; i < r; i++) {
                        Conn *c = evs[i].data.ptr;
                        unsigned index = (unsigned) (c - conns);
                        int k;

                        if (c->ready) {
                                /* An idle connection that should not have had anything to say. */
                                uint8_t x;
                                ssize_t m = recv(c->fd, &x, 1, 0);

                                if (m < 0 && IN_SET(errno, EAGAIN, EINTR))
                                        continue;
                                k = m == 0 ? -ECONNRESET : m < 0 ? negative_errno() : -EPROTO;
                        } else if (hello)
                                k = conn_hello_event(&b->loop, c);
                        else {
                                const uint8_t *extra;
                                size_t n_extra;

                                k = conn_setup_event(&b->loop, c, &extra, &n_extra);
                                if (k > 0 && n_extra > 0)
                                        k = -EPROTO;
                        }
                        if (k < 0) {
                                fail("%s: connection %u of %u (%u ready) failed: %s", what, index + 1, n,
                                     ready, strerror(-k));
                                return k;
                        }
                        if (k == 0)
                                continue;
                        c->ready = true;
                        c->t_done = now_usec();
                        ready++;
                        inflight--;
                }
        }
        return 0;
}

static int echo_many_write(Loop *lp, Conn *c) {
        for (unsigned i = 0; i < 4; i++) {
                ssize_t k;

                if (c->woff == c->wlen) {
                        size_t n;

                        if (c->sent == c->size)
                                return conn_set_events(lp, c, EPOLLIN);
                        n = (size_t) MIN((uint64_t) CONN_WBUF, c->size - c->sent);
                        gen_fill(&c->sgen, c->wbuf, n);
                        c->sent += n;
                        c->woff = 0;
                        c->wlen = n;
                }
                k = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : negative_errno();
                }
                c->woff += (size_t) k;
        }
        return 0;
}

/* 1 when the connection is finished (all bytes back, then EOF; closed here), 0 to go on. */
static int echo_many_read(Bench *b, Conn *c) {
        ssize_t k = recv(c->fd, b->buf, arg_buffer_size, 0);

        if (k < 0)
                return IN_SET(errno, EAGAIN, EINTR) ? 0 : negative_errno();
        if (k == 0) {
                if (c->received != c->size)
                        return -ECONNRESET;
                conn_close(c);
                return 1;
        }
        if (c->received + (uint64_t) k > c->size)
                return -EPROTO;
        if (!gen_verify(&c->rgen, b->buf, (size_t) k, b->scratch, SCRATCH_SIZE))
                return -EBADMSG;
        c->received += (uint64_t) k;
        if (c->received == c->size)
                c->t_done = now_usec();
        return 0;
}

/* n tunnels x size bytes echoed at once through uds (NULL: direct); what_tr names the path in messages. */
static int echo_many_once(Bench *b, Transport tr, const char *uds, const char *what_tr, unsigned n, uint64_t size,
                          unsigned run, Measurement *ret) {
        uint64_t deadline = now_usec() + (uint64_t) arg_timeout_sec * USEC_PER_SEC, t0, t_end = 0;
        uint64_t verify0 = TSTAT(&b->target, TROLE_ECHO, verify_failed);
        uint64_t failed0 = TSTAT(&b->target, TROLE_ECHO, failed);
        unsigned finished = 0;
        struct epoll_event evs[256];
        Measurement m = {};
        double bench0, cpu_s[2];
        char what[64];
        CpuMark cpu;
        Conn *conns;
        int r;

        (void) snprintf(what, sizeof(what), "echo %u tunnels via %s", n, what_tr);
        conns = conns_new(n);
        if (!conns)
                return -ENOMEM;

        r = open_many(b, what, conns, n, uds, b->target.port[TROLE_ECHO], false, deadline);
        if (r < 0)
                goto finish;

        for (unsigned i = 0; i < n && r >= 0; i++) {
                Conn *c = &conns[i];
                uint64_t seed =
                        UINT64_C(0x6563686f2d6d616e) + ((uint64_t) run * _TRANSPORT_MAX + tr) * n + i;
                uint64_t hdr[2] = { htole64(size), htole64(seed) };

                gen_init(&c->sgen, seed);
                gen_init(&c->rgen, seed);
                c->size = size;
                c->wbuf = malloc(CONN_WBUF);
                if (!c->wbuf) {
                        r = -ENOMEM;
                        break;
                }
                memcpy(c->wbuf, hdr, HDR_SIZE);
                c->woff = 0;
                c->wlen = HDR_SIZE;
        }
        if (r < 0)
                goto finish;

        r = cpu_mark(tr, &cpu);
        if (r < 0)
                goto finish;
        bench0 = client_target_cpu_s(b);
        t0 = now_usec();
        for (unsigned i = 0; i < n && r >= 0; i++)
                r = conn_set_events(&b->loop, &conns[i], EPOLLIN | EPOLLOUT);
        if (r < 0)
                goto finish;

        while (finished < n) {
                r = loop_wait(b, evs, (int) ELEMENTSOF(evs), deadline);
                if (r < 0) {
                        fail("%s: %u of %u tunnels finished: %s", what, finished, n, strerror(-r));
                        goto finish;
                }
                for (int i = 0; i < r; i++) {
                        Conn *c = evs[i].data.ptr;
                        unsigned index = (unsigned) (c - conns);
                        int k = 0;

                        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                                k = echo_many_read(b, c);
                                if (k > 0) {
                                        t_end = MAX(t_end, c->t_done);
                                        finished++;
                                        continue;
                                }
                        }
                        if (k == 0 && (evs[i].events & EPOLLOUT))
                                k = echo_many_write(&b->loop, c);
                        if (k < 0) {
                                fail("%s: tunnel %u: %s after %" PRIu64 " bytes sent, %" PRIu64
                                     " of %" PRIu64 " received",
                                     what, index + 1,
                                     k == -EBADMSG  ? "the echo differs from what was sent"
                                     : k == -EPROTO ? "more bytes came back than were sent"
                                                    : strerror(-k),
                                     c->sent, c->received, c->size);
                                r = k;
                                goto finish;
                        }
                }
        }

        if (TSTAT(&b->target, TROLE_ECHO, verify_failed) != verify0 ||
            TSTAT(&b->target, TROLE_ECHO, failed) != failed0) {
                fail("%s: the echo target saw %" PRIu64 " tunnels with wrong data and %" PRIu64 " failures",
                     what, TSTAT(&b->target, TROLE_ECHO, verify_failed) - verify0,
                     TSTAT(&b->target, TROLE_ECHO, failed) - failed0);
                r = -EBADMSG;
                goto finish;
        }

        m.seconds = (double) (t_end > t0 ? t_end - t0 : 1) / 1e6;
        m.size = (uint64_t) n * size;
        m.carried = 2 * m.size;
        m.bench_cpu_s = client_target_cpu_s(b) - bench0;
        r = cpu_since(b, &cpu, cpu_s);
        if (r < 0)
                goto finish;
        if (r > 0) {
                m.daemon_cpu_valid = true;
                m.server_cpu_s = cpu_s[0];
                m.agent_cpu_s = cpu_s[1];
        }
        m.done = true;
        *ret = m;
        r = 0;
finish:
        conns_free(&b->loop, conns, n);
        return r;
}

static int run_echo_many(Bench *b, unsigned run) {
        int r;

        for (Transport tr = 0; tr < _TRANSPORT_MAX; tr++) {
                Measurement m;

                if (tr == TRANSPORT_KONN && !arg_konn_uds)
                        continue;
                r = echo_many_once(b, tr, tr == TRANSPORT_KONN ? arg_konn_uds : NULL, transport_name[tr], arg_tunnels,
                                   arg_tunnel_size, run, &m);
                if (r < 0)
                        return r;
                record_transfer(b, SCENARIO_ECHO_MANY, scenario_name[SCENARIO_ECHO_MANY],
                                "aggregate throughput per direction", true, tr, &m);
        }
        return 0;
}

/* echo-1000: the issue's "1 000 concurrently echoing tunnels complete", through the konn pair and, with
 * --classic-uds, through the classic pair too; 1 where every tunnel completed and verified. */
static int run_echo_1000(Bench *b, unsigned run) {
        int r, k = 0;

        for (unsigned i = 0; i < 3; i++) {
                Transport tr = i == 0 ? TRANSPORT_DIRECT : TRANSPORT_KONN;
                const char *uds = i == 0 ? NULL : i == 1 ? arg_konn_uds : arg_classic_uds;
                const char *label = i == 2 ? "echo-1000 classic" : arg_konn_classic ? "echo-1000 classic" : "echo-1000";
                Measurement m;

                if (i > 0 && !uds)
                        continue;
                r = echo_many_once(b, tr, uds, i == 0 ? "direct" : label + STRLEN("echo-1000 "), arg_many_tunnels,
                                   arg_many_tunnel_size, run, &m);
                if (r < 0 && i == 0)
                        return r;
                row_add(row(b, SCENARIO_ECHO_1000, label, "tunnels completed and verified", "", 0, TARGET_KONN_MIN,
                            (double) arg_many_tunnels),
                        tr, r < 0 ? 0 : (double) arg_many_tunnels);
                if (r < 0) {
                        k = r;
                        continue;
                }
                if (i == 2) {
                        /* Only the classic pair: no daemon CPU figures (its pids are not ours). */
                        m.daemon_cpu_valid = false;
                }
                record_transfer(b, SCENARIO_ECHO_1000, label, "aggregate throughput per direction", false, tr, &m);
        }
        return k;
}

/* ---------------------------------------------------------------------------------------------- */
/* dial, dial-concurrent: CONNECT (or TCP connect) until the hello target's byte has arrived. */

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static uint64_t percentile(const uint64_t *sorted, size_t n, unsigned pct) {
        size_t rank = ((size_t) pct * n + 99) / 100;

        return sorted[rank > 0 ? rank - 1 : 0];
}

static int dial_one_blocking(const char *uds, uint16_t port, uint64_t deadline, uint64_t *ret_usec) {
        _cleanup_close_ int fd = -EBADF;
        uint64_t t0 = now_usec();
        uint8_t hello[1];
        size_t n = 0;
        int r;

        if (uds)
                r = connect_konn(uds, port, deadline, hello, sizeof(hello), &n, &fd);
        else
                r = connect_direct(port, deadline, &fd);
        if (r < 0)
                return r;
        while (n == 0) {
                ssize_t k = recv(fd, hello, sizeof(hello), 0);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return io_errno(deadline);
                }
                if (k == 0)
                        return -ECONNRESET;
                n = (size_t) k;
        }
        if (hello[0] != HELLO_BYTE)
                return -EPROTO;
        *ret_usec = now_usec() - t0;
        return 0;
}

static int dial_sequential(const char *what, const char *uds, uint16_t port, unsigned count,
                           uint64_t deadline, uint64_t *lat) {
        int r;

        for (unsigned i = 0; i < count; i++) {
                r = dial_one_blocking(uds, port, deadline, &lat[i]);
                if (r < 0) {
                        fail("%s: dial %u of %u failed: %s", what, i + 1, count, strerror(-r));
                        return r;
                }
        }
        return 0;
}

static int dial_concurrent(Bench *b, const char *what, const char *uds, uint16_t port, unsigned dialers,
                           unsigned total, uint64_t deadline, uint64_t *lat) {
        struct epoll_event evs[256];
        unsigned started = 0, finished = 0;
        Conn *conns;
        int r = 0;

        dialers = MIN(dialers, total);
        conns = conns_new(dialers);
        if (!conns)
                return -ENOMEM;

        for (unsigned i = 0; i < dialers && r >= 0; i++, started++)
                r = conn_begin(&b->loop, &conns[i], uds, port);
        while (r >= 0 && finished < total) {
                r = loop_wait(b, evs, (int) ELEMENTSOF(evs), deadline);
                if (r < 0)
                        break;
                for (int i = 0; i < r; i++) {
                        Conn *c = evs[i].data.ptr;
                        int k = conn_hello_event(&b->loop, c);

                        if (k < 0) {
                                r = k;
                                break;
                        }
                        if (k == 0)
                                continue;
                        lat[finished++] = now_usec() - c->t_start;
                        conn_close(c);
                        if (started < total) {
                                k = conn_begin(&b->loop, c, uds, port);
                                if (k < 0) {
                                        r = k;
                                        break;
                                }
                                started++;
                        }
                }
        }
        if (r < 0)
                fail("%s: %u of %u dials done: %s", what, finished, total, strerror(-r));
        conns_free(&b->loop, conns, dialers);
        return r < 0 ? r : 0;
}

static int run_dial(Bench *b, Scenario sc, unsigned run) {
        unsigned count = sc == SCENARIO_DIAL ? arg_dials : arg_concurrent_dials;
        uint16_t port = b->target.port[TROLE_HELLO];
        const char *name = scenario_name[sc];
        int r;

        for (Transport tr = 0; tr < _TRANSPORT_MAX; tr++) {
                const char *uds = tr == TRANSPORT_KONN ? arg_konn_uds : NULL;
                uint64_t deadline = now_usec() + (uint64_t) arg_timeout_sec * USEC_PER_SEC, t0, t1;
                uint64_t failed0 = TSTAT(&b->target, TROLE_HELLO, failed);
                _cleanup_free_ uint64_t *lat = NULL;
                double cpu_s[2];
                char what[64];
                CpuMark cpu;

                if (tr == TRANSPORT_KONN && !uds)
                        continue;
                (void) snprintf(what, sizeof(what), "%s via %s", name, transport_name[tr]);
                lat = calloc(count, sizeof(uint64_t));
                if (!lat)
                        return -ENOMEM;

                r = cpu_mark(tr, &cpu);
                if (r < 0)
                        return r;
                t0 = now_usec();
                if (sc == SCENARIO_DIAL)
                        r = dial_sequential(what, uds, port, count, deadline, lat);
                else
                        r = dial_concurrent(b, what, uds, port, arg_dialers, count, deadline, lat);
                t1 = now_usec();
                if (r < 0)
                        return r;
                if (TSTAT(&b->target, TROLE_HELLO, failed) != failed0) {
                        fail("%s: the hello target saw %" PRIu64 " failed connections", what,
                             TSTAT(&b->target, TROLE_HELLO, failed) - failed0);
                        return -EIO;
                }

                qsort(lat, count, sizeof(uint64_t), cmp_u64);
                row_add(row(b, sc, name, "p50 connect to first byte", "ms", 3,
                            sc == SCENARIO_DIAL ? TARGET_RATIO_MAX : TARGET_NONE, 3.0), tr,
                        (double) percentile(lat, count, 50) / 1e3);
                row_add(row(b, sc, name, "p99 connect to first byte", "ms", 3, TARGET_NONE, 0), tr,
                        (double) percentile(lat, count, 99) / 1e3);
                row_add(row(b, sc, name, "dials per second", "1/s", 0,
                            sc == SCENARIO_DIAL_CONCURRENT ? TARGET_RATIO_MIN : TARGET_NONE, 0.5), tr,
                        (double) count / ((double) (t1 > t0 ? t1 - t0 : 1) / 1e6));
                r = cpu_since(b, &cpu, cpu_s);
                if (r < 0)
                        return r;
                if (r > 0)
                        row_add(row(b, sc, name, "CPU server+agent per dial", "us", 1, TARGET_NONE, 0), tr,
                                (cpu_s[0] + cpu_s[1]) * 1e6 / count);
        }
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* idle-rss, idle-tunnels. */

static void record_idle_rss(Bench *b) {
        for (unsigned i = 0; i < 2; i++) {
                char metric[48];

                if (!b->mem_idle[i].valid)
                        continue;
                (void) snprintf(metric, sizeof(metric), "%s VmRSS", daemon_name[i]);
                row_add(row(b, SCENARIO_IDLE_RSS, "idle-rss", metric, "KiB", 0, TARGET_NONE, 0),
                        TRANSPORT_KONN, (double) b->mem_idle[i].vmrss_kib);
                (void) snprintf(metric, sizeof(metric), "%s RssAnon", daemon_name[i]);
                row_add(row(b, SCENARIO_IDLE_RSS, "idle-rss", metric, "KiB", 0, TARGET_KONN_MAX, 2048),
                        TRANSPORT_KONN, (double) b->mem_idle[i].rssanon_kib);
        }
}

/* Per daemon and N: (RSS with N idle tunnels open - idle RSS) / N, where idle is the sample taken at
 * start, as the issue defines it; and RSS after they are all closed again, minus idle. Both VmRSS and
 * RssAnon. */
static int run_idle_tunnels(Bench *b, unsigned n) {
        static const double per_tunnel_target[2] = { 3072, 2048 }; /* bytes: server, agent */
        uint16_t port = b->target.port[TROLE_HELLO];
        char name[32];
        int r;

        (void) snprintf(name, sizeof(name), "idle-tunnels %u", n);
        for (Transport tr = 0; tr < _TRANSPORT_MAX; tr++) {
                const char *uds = tr == TRANSPORT_KONN ? arg_konn_uds : NULL;
                bool mem = tr == TRANSPORT_KONN && have_daemon_pids() && b->mem_idle[0].valid &&
                           b->mem_idle[1].valid;
                uint64_t deadline = now_usec() + (uint64_t) arg_timeout_sec * USEC_PER_SEC, t0, t1;
                uint64_t accepted0 = TSTAT(&b->target, TROLE_HELLO, accepted);
                uint64_t closed0 = TSTAT(&b->target, TROLE_HELLO, closed);
                uint64_t failed0 = TSTAT(&b->target, TROLE_HELLO, failed);
                ProcMem open[2] = {}, closed[2] = {}, after1s[2] = {};
                const ProcMem *idle = b->mem_idle;
                char what[64];
                Conn *conns;

                if (tr == TRANSPORT_KONN && !uds)
                        continue;
                (void) snprintf(what, sizeof(what), "%s via %s", name, transport_name[tr]);

                conns = conns_new(n);
                if (!conns)
                        return -ENOMEM;
                t0 = now_usec();
                r = open_many(b, what, conns, n, uds, port, true, deadline);
                t1 = now_usec();
                if (r >= 0 && TSTAT(&b->target, TROLE_HELLO, accepted) - accepted0 != n) {
                        fail("%s: the target accepted %" PRIu64 " connections for %u tunnels", what,
                             TSTAT(&b->target, TROLE_HELLO, accepted) - accepted0, n);
                        r = -EPROTO;
                }
                if (r >= 0 && mem)
                        r = daemons_mem_settled(open);
                conns_free(&b->loop, conns, n);
                if (r < 0)
                        return r;

                r = target_wait_closed(&b->target, TROLE_HELLO, closed0 + n, CLOSE_WAIT_USEC);
                if (r < 0) {
                        fail("%s: only %" PRIu64 " of %u connections were closed at the target %s", what,
                             TSTAT(&b->target, TROLE_HELLO, closed) - closed0, n,
                             r == -ETIMEDOUT ? "within 60 s of closing the tunnels" : "before it died");
                        return r;
                }
                if (TSTAT(&b->target, TROLE_HELLO, failed) != failed0) {
                        fail("%s: the hello target saw %" PRIu64 " failed connections", what,
                             TSTAT(&b->target, TROLE_HELLO, failed) - failed0);
                        return -EIO;
                }
                if (mem) {
                        /* The issue's figure: one second after the last tunnel closed (the target saw it). */
                        sleep_usec(USEC_PER_SEC);
                        r = proc_mem(arg_server_pid, &after1s[0]);
                        if (r >= 0)
                                r = proc_mem(arg_agent_pid, &after1s[1]);
                        if (r < 0) {
                                fail("cannot read the daemons' /proc/PID/status (did one exit?): %s", strerror(-r));
                                return r;
                        }
                        r = daemons_mem_settled(closed);
                        if (r < 0)
                                return r;
                }

                row_add(row(b, SCENARIO_IDLE_TUNNELS, name, "tunnels opened per second", "1/s", 0,
                            TARGET_NONE, 0),
                        tr, (double) n / ((double) (t1 > t0 ? t1 - t0 : 1) / 1e6));
                if (!mem)
                        continue;
                for (unsigned i = 0; i < 2; i++) {
                        TargetKind target = n >= 10000 ? TARGET_KONN_MAX : TARGET_NONE;
                        char metric[48];

                        (void) snprintf(metric, sizeof(metric), "%s VmRSS per tunnel", daemon_name[i]);
                        row_add(row(b, SCENARIO_IDLE_TUNNELS, name, metric, "B", 0, target,
                                    per_tunnel_target[i]),
                                tr, ((double) open[i].vmrss_kib - (double) idle[i].vmrss_kib) * 1024 / n);
                        (void) snprintf(metric, sizeof(metric), "%s RssAnon per tunnel", daemon_name[i]);
                        row_add(row(b, SCENARIO_IDLE_TUNNELS, name, metric, "B", 0, target,
                                    per_tunnel_target[i]),
                                tr,
                                ((double) open[i].rssanon_kib - (double) idle[i].rssanon_kib) * 1024 / n);
                        (void) snprintf(metric, sizeof(metric), "%s VmRSS 1 s after close - idle",
                                        daemon_name[i]);
                        row_add(row(b, SCENARIO_IDLE_TUNNELS, name, metric, "KiB", 0, TARGET_KONN_MAX, 1024),
                                tr, (double) after1s[i].vmrss_kib - (double) idle[i].vmrss_kib);
                        (void) snprintf(metric, sizeof(metric), "%s VmRSS settled after close - idle",
                                        daemon_name[i]);
                        row_add(row(b, SCENARIO_IDLE_TUNNELS, name, metric, "KiB", 0, TARGET_NONE, 0),
                                tr, (double) closed[i].vmrss_kib - (double) idle[i].vmrss_kib);
                        (void) snprintf(metric, sizeof(metric), "%s RssAnon settled after close - idle",
                                        daemon_name[i]);
                        row_add(row(b, SCENARIO_IDLE_TUNNELS, name, metric, "KiB", 0, TARGET_NONE, 0),
                                tr, (double) closed[i].rssanon_kib - (double) idle[i].rssanon_kib);
                }
        }
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* hol: tunnel A's download alone, and while tunnel B's reader is stopped. */

typedef struct HolResult {
        double mib_s;     /* 0 when stalled */
        uint64_t bytes;   /* A's payload received and verified */
        bool stalled;     /* A made no progress for HOL_STALL_USEC */
        uint64_t b_bytes; /* what B's target managed to send before B stalled */
        bool b_stable;    /* B's target stopped sending (else the wait gave up after HOL_FILL_MAX_USEC) */
} HolResult;

static int send_header(int fd, uint64_t size, uint64_t seed, uint64_t deadline) {
        uint64_t hdr[2] = { htole64(size), htole64(seed) };

        return write_all(fd, (const uint8_t *) hdr, HDR_SIZE, deadline, NULL);
}

static int hol_measure(Bench *b, const char *what, const char *uds, bool with_b, uint64_t seed,
                       HolResult *ret) {
        uint64_t deadline = now_usec() + (uint64_t) arg_timeout_sec * USEC_PER_SEC;
        uint64_t flood_closed0 = TSTAT(&b->target, TROLE_FLOOD, closed);
        uint64_t stall_closed0 = TSTAT(&b->target, TROLE_STALL, closed);
        uint64_t t0, t, last, limit = (uint64_t) arg_hol_seconds * USEC_PER_SEC;
        _cleanup_close_ int fd_a = -EBADF, fd_b = -EBADF;
        struct timeval tv = {
                .tv_usec = 100 * 1000,
        };
        HolResult res = {};
        Gen g;
        int r;

        /* A first, so that its CONNECT completes before anything is stalled. */
        r = connect_to(uds, b->target.port[TROLE_FLOOD], deadline, &fd_a);
        if (r < 0) {
                fail("%s: failed to open tunnel A: %s", what, strerror(-r));
                return r;
        }

        if (with_b) {
                uint64_t out0 = TSTAT(&b->target, TROLE_STALL, bytes_out), prev = out0, since, start;

                r = connect_to(uds, b->target.port[TROLE_STALL], deadline, &fd_b);
                if (r >= 0)
                        r = send_header(fd_b, 0, seed ^ UINT64_C(0xb), deadline);
                if (r < 0) {
                        fail("%s: failed to open tunnel B: %s", what, strerror(-r));
                        return r;
                }
                /* B's target sends until every buffer on the way is full. */
                start = since = now_usec();
                for (;;) {
                        uint64_t cur;

                        sleep_usec(50 * USEC_PER_MSEC);
                        cur = TSTAT(&b->target, TROLE_STALL, bytes_out);
                        t = now_usec();
                        if (cur != prev) {
                                prev = cur;
                                since = t;
                        } else if (cur > out0 && t - since >= HOL_STABLE_USEC) {
                                res.b_stable = true;
                                break;
                        }
                        if (t - start >= HOL_FILL_MAX_USEC)
                                break;
                }
                res.b_bytes = prev - out0;
        }

        gen_init(&g, seed);
        r = send_header(fd_a, 0, seed, deadline);
        if (r >= 0 && setsockopt(fd_a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
                r = negative_errno();
        if (r < 0) {
                fail("%s: failed to start tunnel A: %s", what, strerror(-r));
                return r;
        }
        t0 = last = now_usec();
        for (;;) {
                ssize_t k;

                t = now_usec();
                if (t - last >= MIN(HOL_STALL_USEC, limit)) {
                        res.stalled = true;
                        break;
                }
                if (t - t0 >= limit)
                        break;
                k = recv(fd_a, b->buf, arg_buffer_size, 0);
                if (k < 0) {
                        if (IN_SET(errno, EAGAIN, EINTR))
                                continue;
                        r = negative_errno();
                        fail("%s: tunnel A failed after %" PRIu64 " bytes: %s", what, res.bytes,
                             strerror(-r));
                        return r;
                }
                if (k == 0) {
                        fail("%s: tunnel A closed after %" PRIu64 " bytes", what, res.bytes);
                        return -ECONNRESET;
                }
                if (!gen_verify(&g, b->buf, (size_t) k, b->scratch, SCRATCH_SIZE)) {
                        fail("%s: tunnel A received wrong data after %" PRIu64 " good bytes", what,
                             res.bytes);
                        return -EBADMSG;
                }
                res.bytes += (uint64_t) k;
                last = now_usec();
        }
        res.mib_s = res.stalled ? 0 : mib_per_s(res.bytes, (double) (t - t0) / 1e6);

        fd_a = safe_close(fd_a);
        fd_b = safe_close(fd_b);
        r = target_wait_closed(&b->target, TROLE_FLOOD, flood_closed0 + 1, 10 * USEC_PER_SEC);
        if (r >= 0 && with_b)
                r = target_wait_closed(&b->target, TROLE_STALL, stall_closed0 + 1, 10 * USEC_PER_SEC);
        if (r < 0) {
                fail("%s: the target did not see tunnels A and B close within 10 s", what);
                return r;
        }
        *ret = res;
        return 0;
}

static int run_hol(Bench *b, unsigned run) {
        const struct {
                const char *label;
                const char *name;
        } modes[] = {
                { "direct", NULL },
                { arg_konn_classic ? "classic" : "konn-to-konn",
                  arg_konn_classic ? "hol classic" : "hol konn-to-konn" },
                { "classic", "hol classic" },
        };
        HolResult alone[ELEMENTSOF(modes)] = {}, with_b[ELEMENTSOF(modes)] = {};
        bool done[ELEMENTSOF(modes)] = {};
        char stall_metric[48];
        Row *rw;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(modes); i++) {
                const char *uds = i == 0 ? NULL : i == 1 ? arg_konn_uds : arg_classic_uds;
                uint64_t seed = UINT64_C(0x686f6c2d41000000) + run * 16 + i * 2;
                char what[64];

                if (i > 0 && !uds)
                        continue;
                (void) snprintf(what, sizeof(what), "hol via %s, A alone", modes[i].label);
                r = hol_measure(b, what, uds, false, seed, &alone[i]);
                if (r < 0)
                        return r;
                (void) snprintf(what, sizeof(what), "hol via %s, B stalled", modes[i].label);
                r = hol_measure(b, what, uds, true, seed + 1, &with_b[i]);
                if (r < 0)
                        return r;
                done[i] = true;
        }

        (void) snprintf(
                stall_metric, sizeof(stall_metric), "runs where A made no progress for %u s",
                (unsigned) (MIN(HOL_STALL_USEC, (uint64_t) arg_hol_seconds * USEC_PER_SEC) / USEC_PER_SEC));
        for (size_t i = 1; i < ELEMENTSOF(modes); i++) {
                const char *name = modes[i].name;
                bool k2k = i == 1 && !arg_konn_classic;

                if (!done[i])
                        continue;
                for (size_t j = 0; j < 2; j++) {
                        size_t src = j == 0 ? 0 : i;
                        Transport tr = j == 0 ? TRANSPORT_DIRECT : TRANSPORT_KONN;

                        if (!done[src])
                                continue;
                        row_add(row(b, SCENARIO_HOL, name, "A alone", "MiB/s", 1, TARGET_NONE, 0), tr,
                                alone[src].mib_s);
                        row_add(row(b, SCENARIO_HOL, name, "A while B stalled", "MiB/s", 1, TARGET_NONE, 0),
                                tr, with_b[src].mib_s);
                        rw = row(b, SCENARIO_HOL, name, "A while B stalled / A alone", "", 3,
                                 k2k ? TARGET_KONN_MIN : TARGET_NONE, 0.9);
                        if (rw)
                                rw->no_ratio = true;
                        row_add(rw, tr, alone[src].mib_s > 0 ? with_b[src].mib_s / alone[src].mib_s : 0);
                        rw = row(b, SCENARIO_HOL, name, "B's target sent before B stalled", "MiB", 1,
                                 TARGET_NONE, 0);
                        if (rw)
                                rw->no_ratio = true;
                        row_add(rw, tr, (double) with_b[src].b_bytes / MIB_F);
                        rw = row(b, SCENARIO_HOL, name, stall_metric, "", 0, TARGET_NONE, 0);
                        if (rw)
                                rw->sum = true;
                        row_add(rw, tr, with_b[src].stalled ? 1 : 0);
                        rw = row(b, SCENARIO_HOL, name, "runs where B never stopped", "", 0, TARGET_NONE, 0);
                        if (rw)
                                rw->sum = true;
                        row_add(rw, tr, with_b[src].b_stable ? 0 : 1);
                }
        }
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Report: medians of the runs (or sums, for counts), konn/direct, the issue's target. */

static double median(const double *v, unsigned n) {
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

#define ROW_FORMAT "%-18s %-42s %11s %11s %7s %-14s %s\n"

static void print_table(const Bench *b) {
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

static void print_targets(const Bench *b) {
        printf("\nTargets of the performance issue (met / NOT met / not measured):\n");
        for (size_t t = 0; t < ELEMENTSOF(issue_targets); t++) {
                unsigned n = 0, met = 0;

                for (unsigned i = 0; i < b->n_rows; i++) {
                        const Row *r = &b->rows[i];
                        int k;

                        if (r->scenario != issue_targets[t].scenario || r->target == TARGET_NONE)
                                continue;
                        if (issue_targets[t].name && !streq(r->name, issue_targets[t].name))
                                continue;
                        k = row_met(r);
                        if (k < 0)
                                continue;
                        n++;
                        met += k;
                }
                printf("  %-78s %s\n", issue_targets[t].what,
                       n == 0 ? "not measured" : met == n ? "met" : "NOT met");
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

static int write_json(const Bench *b, const char *path, bool ok) {
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

static void progress(const char *what, unsigned run) {
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

static int run(Bench *b) {
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
