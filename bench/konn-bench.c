/* SPDX-License-Identifier: Apache-2.0 */
/*
 * konn-bench — throughput benchmark for konn: the same bulk transfers over direct loopback TCP and
 * through a running konn-server/konn-agent pair (HTTP CONNECT on the server's Unix socket).
 * Owns its loopback target (sink, source and echo listeners, one thread each), the client side of
 * every scenario and the report (table on stdout, optional JSON). The daemons are started and
 * stopped by bench/run-bench.sh; this program only reads their /proc entries.
 *
 * Scenarios, each run once direct and once through konn with the same byte count N:
 *   upload    client → sink, N bytes; timed until the sink has received the last byte;
 *   download  source → client, N bytes (the source waits for a one-byte "go" so that nothing is
 *             buffered before the clock starts); timed until the client has the last byte;
 *   echo      client → echo → client, N bytes each way at once (writer thread + reader);
 *             timed until the client has read the last echoed byte; the figure is per direction.
 * The payload is a seeded pseudo-random stream (wyrand); every receiver checksums what it got with
 * XXH64 and the result must equal the XXH64 of the stream computed before the clock starts, and
 * the byte count must be exact (a peer that sends more, or closes early, fails the run). Each
 * scenario has a fixed time bound (--timeout, 120 s) enforced with socket timeouts; any failure
 * ends the run with exit status 1. Nothing here judges the figures: they are reported, not asserted.
 *
 * Daemon cost: utime+stime of --server-pid and --agent-pid (from /proc/PID/stat) before and after
 * each konn scenario, reported as CPU-seconds per GiB carried through the tunnel (echo carries 2N),
 * and VmRSS/RssAnon/VmHWM from /proc/PID/status at the start and at the end of the run.
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
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
#define ROW_FORMAT "%-9s %13s %11s %12s %14s %10s %10s\n"

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

static inline bool isempty(const char *s) {
        return !s || s[0] == '\0';
}

static const char *arg_konn_uds = NULL;
static uint64_t arg_size = BENCH_DEFAULT_SIZE;
static size_t arg_buffer_size = BENCH_DEFAULT_BUFFER;
static unsigned arg_timeout_sec = BENCH_DEFAULT_TIMEOUT_SEC;
static const char *arg_json = NULL;
static pid_t arg_server_pid = 0;
static pid_t arg_agent_pid = 0;
static unsigned arg_scenarios = 0; /* bit mask of Scenario; 0 = all */
static bool arg_self_test = false;

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

/* ---------------------------------------------------------------------------------------------- */
/* Payload: wyrand stream. Word i (little-endian) of the stream depends only on (seed, i). */

static inline uint64_t wyrand(uint64_t *state) {
        __uint128_t m;

        *state += UINT64_C(0xa0761d6478bd642f);
        m = (__uint128_t) *state * (*state ^ UINT64_C(0xe7037ed1a0b428db));
        return (uint64_t) (m >> 64) ^ (uint64_t) m;
}

/* Fills buf with the next n bytes of the stream. n must be a multiple of 8 except on the last call. */
static void prng_fill(uint64_t *state, uint8_t *buf, size_t n) {
        size_t i;

        for (i = 0; i + 8 <= n; i += 8) {
                uint64_t w = htole64(wyrand(state));
                memcpy(buf + i, &w, 8);
        }
        if (i < n) {
                uint64_t w = htole64(wyrand(state));
                memcpy(buf + i, &w, n - i);
        }
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
        uint64_t state = seed;
        Digest d;

        digest_init(&d);
        while (size > 0) {
                size_t n = (size_t) MIN((uint64_t) bufsize, size);

                prng_fill(&state, buf, n);
                digest_update(&d, buf, n);
                size -= n;
        }
        return digest_final(&d);
}

/* Known answers, checked by --self-test: XXH64 test vectors (as printed by "xxhsum -H1"), and the
 * XXH64 of the first 1000003 bytes of stream 0x1234 (checked against xxhsum on a file written by
 * prng_fill()), fed in uneven pieces so that the streaming paths are exercised. */
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
        _cleanup_free_ uint8_t *buf = NULL;
        unsigned failed = 0;

        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                Digest d;
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
        if (!buf)
                return -ENOMEM;

        for (size_t bufsize = 8; bufsize <= 256 * 1024; bufsize *= 8) {
                uint64_t h = stream_digest(stream_seed, stream_size, buf, bufsize);

                if (h != stream_xxh64) {
                        fail("self-test: stream digest with %zu byte buffers = %016" PRIx64
                             ", expected %016" PRIx64, bufsize, h, stream_xxh64);
                        failed++;
                }
        }

        uint64_t state = stream_seed;
        Digest d;
        prng_fill(&state, buf, stream_size);
        digest_init(&d);
        for (size_t off = 0, piece = 1; off < stream_size; off += piece, piece = piece % 97 + 1)
                digest_update(&d, buf + off, (size_t) MIN((uint64_t) piece, stream_size - off));
        if (digest_final(&d) != stream_xxh64) {
                fail("self-test: digest of uneven pieces = %016" PRIx64 ", expected %016" PRIx64,
                     digest_final(&d), stream_xxh64);
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
        uint64_t state = seed;
        int r;

        while (s->done < s->size) {
                size_t n = (size_t) MIN((uint64_t) s->bufsize, s->size - s->done);

                if (now_usec() >= s->deadline)
                        return -ETIMEDOUT;
                prng_fill(&state, s->buf, n);
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

/* HTTP CONNECT on the konn Unix socket. The reply is read byte by byte up to the blank line, so no
 * tunnel payload is consumed; it must be exactly BENCH_CONNECT_REPLY (else -EPROTO). */
static int connect_konn(const char *uds, uint16_t port, uint64_t deadline, int *ret_fd) {
        struct sockaddr_un sa = {
                .sun_family = AF_UNIX,
        };
        _cleanup_close_ int fd = -EBADF;
        char request[128], reply[BENCH_REPLY_MAX + 1], line[128];
        size_t n = 0;
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

        r = snprintf(request, sizeof(request), "CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                     (unsigned) port);
        assert(r > 0 && (size_t) r < sizeof(request));
        r = write_all(fd, (const uint8_t *) request, (size_t) r, deadline, NULL);
        if (r < 0)
                return r;

        while (n < 4 || memcmp(reply + n - 4, "\r\n\r\n", 4) != 0) {
                ssize_t k;

                if (n >= BENCH_REPLY_MAX) {
                        reply_first_line(reply, n, line, sizeof(line));
                        fail("CONNECT reply longer than %u bytes: '%s...'", BENCH_REPLY_MAX, line);
                        return -EPROTO;
                }
                k = recv(fd, reply + n, 1, 0);
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
                n++;
        }

        if (n != STRLEN(BENCH_CONNECT_REPLY) || memcmp(reply, BENCH_CONNECT_REPLY, n) != 0) {
                reply_first_line(reply, n, line, sizeof(line));
                fail("CONNECT refused: '%s'", line);
                return -EPROTO;
        }

        *ret_fd = TAKE_FD(fd);
        return 0;
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
/* Scenarios. */

typedef enum Scenario {
        SCENARIO_UPLOAD,
        SCENARIO_DOWNLOAD,
        SCENARIO_ECHO,
        _SCENARIO_MAX,
} Scenario;

static const char *const scenario_name[_SCENARIO_MAX] = {
        [SCENARIO_UPLOAD] = "upload",
        [SCENARIO_DOWNLOAD] = "download",
        [SCENARIO_ECHO] = "echo",
};

static const Role scenario_role[_SCENARIO_MAX] = {
        [SCENARIO_UPLOAD] = ROLE_SINK,
        [SCENARIO_DOWNLOAD] = ROLE_SOURCE,
        [SCENARIO_ECHO] = ROLE_ECHO,
};

typedef struct Measurement {
        bool done;
        double seconds;   /* the bulk transfer, from first byte sent to last byte received */
        double setup_ms;  /* connect(), plus the CONNECT exchange through konn */
        uint64_t carried; /* payload bytes through the path, both directions counted */
        double bench_cpu_s;
        bool daemon_cpu_valid;
        double server_cpu_s;
        double agent_cpu_s;
} Measurement;

typedef struct Bench {
        Listener listeners[_ROLE_MAX];
        uint64_t generation;
        uint8_t *buf;        /* client reader / sender */
        uint8_t *wbuf;       /* echo writer thread */
        long clk_tck;
        Measurement m[_SCENARIO_MAX][_TRANSPORT_MAX];
        ProcMem mem_start[2], mem_end[2]; /* [0] server, [1] agent */
} Bench;

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

static double rusage_cpu_s(void) {
        struct rusage ru;

        if (getrusage(RUSAGE_SELF, &ru) < 0)
                return 0;
        return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 +
               (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
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

static bool have_daemon_pids(void) {
        return arg_server_pid > 0 && arg_agent_pid > 0;
}

/* Runs one scenario once. Logs the reason of any failure, and returns it. */
static int run_one(Bench *b, Scenario sc, Transport tr, uint64_t seed) {
        Listener *l = &b->listeners[scenario_role[sc]];
        const char *what_sc = scenario_name[sc], *what_tr = transport_name[tr];
        _cleanup_close_ int fd = -EBADF;
        uint64_t expected, deadline, t_setup, t0, t1 = 0, cpu0[2] = {}, cpu1[2] = {};
        TargetResult res = {};
        Measurement m = {};
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

        if (tr == TRANSPORT_KONN && have_daemon_pids()) {
                r = daemons_cpu(cpu0);
                if (r < 0) {
                        fail("%s via %s: cannot read the daemons' /proc/PID/stat: %s", what_sc, what_tr,
                             strerror(-r));
                        return r;
                }
        }
        bench0 = rusage_cpu_s();

        t_setup = now_usec();
        if (tr == TRANSPORT_DIRECT)
                r = connect_direct(l->port, deadline, &fd);
        else
                r = connect_konn(arg_konn_uds, l->port, deadline, &fd);
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
        m.carried = sc == SCENARIO_ECHO ? 2 * arg_size : arg_size;
        m.bench_cpu_s = rusage_cpu_s() - bench0;

        if (tr == TRANSPORT_KONN && have_daemon_pids()) {
                r = daemons_cpu(cpu1);
                if (r < 0) {
                        fail("%s via %s: cannot read the daemons' /proc/PID/stat (did one exit?): %s",
                             what_sc, what_tr, strerror(-r));
                        return r;
                }
                m.daemon_cpu_valid = true;
                m.server_cpu_s = (double) (cpu1[0] - cpu0[0]) / (double) b->clk_tck;
                m.agent_cpu_s = (double) (cpu1[1] - cpu0[1]) / (double) b->clk_tck;
        }

        m.done = true;
        b->m[sc][tr] = m;
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Report. */

static double mib_per_s(const Measurement *m, uint64_t size) {
        return (double) size / MIB_F / m->seconds;
}

static double cpu_per_gib(const Measurement *m) {
        return (m->server_cpu_s + m->agent_cpu_s) / ((double) m->carried / GIB);
}

static void print_size(FILE *f, uint64_t size) {
        if (size % (1ULL << 30) == 0)
                fprintf(f, "%" PRIu64 " GiB", size >> 30);
        else if (size % (1ULL << 20) == 0)
                fprintf(f, "%" PRIu64 " MiB", size >> 20);
        else
                fprintf(f, "%" PRIu64 " bytes", size);
}

static void print_table(const Bench *b) {
        printf("konn-bench %s: ", PACKAGE_VERSION);
        print_size(stdout, arg_size);
        printf(" per scenario and direction, %zu KiB buffers, %ld CPUs online.\n", arg_buffer_size / 1024,
               sysconf(_SC_NPROCESSORS_ONLN));
        printf("Throughput in MiB/s (1 MiB = 1048576 bytes), payload bytes over transfer time; "
               "echo is per direction.\n");
        printf("konn CPU s/GiB: konn-server + konn-agent CPU time (utime+stime) per GiB carried (echo "
               "carries 2x);\nserver s, agent s: each daemon's CPU seconds during that konn run.\n\n");
        printf(ROW_FORMAT, "scenario", "direct MiB/s", "konn MiB/s", "konn/direct", "konn CPU s/GiB",
               "server s", "agent s");

        for (Scenario sc = 0; sc < _SCENARIO_MAX; sc++) {
                const Measurement *md = &b->m[sc][TRANSPORT_DIRECT], *mk = &b->m[sc][TRANSPORT_KONN];
                char direct[32] = "-", konn[32] = "-", ratio[32] = "-", cpu[32] = "-", scpu[32] = "-",
                     acpu[32] = "-";

                if (!md->done && !mk->done)
                        continue;
                if (md->done)
                        (void) snprintf(direct, sizeof(direct), "%.1f", mib_per_s(md, arg_size));
                if (mk->done)
                        (void) snprintf(konn, sizeof(konn), "%.1f", mib_per_s(mk, arg_size));
                if (md->done && mk->done)
                        (void) snprintf(ratio, sizeof(ratio), "%.3f",
                                        mib_per_s(mk, arg_size) / mib_per_s(md, arg_size));
                if (mk->done && mk->daemon_cpu_valid) {
                        (void) snprintf(cpu, sizeof(cpu), "%.3f", cpu_per_gib(mk));
                        (void) snprintf(scpu, sizeof(scpu), "%.2f", mk->server_cpu_s);
                        (void) snprintf(acpu, sizeof(acpu), "%.2f", mk->agent_cpu_s);
                }
                printf(ROW_FORMAT, scenario_name[sc], direct, konn, ratio, cpu, scpu, acpu);
        }

        for (unsigned i = 0; i < 2; i++) {
                const ProcMem *s = &b->mem_start[i], *e = &b->mem_end[i];

                if (!e->valid)
                        continue;
                if (i == 0)
                        printf("\n");
                printf("%-11s VmRSS %" PRIu64 " KiB, RssAnon %" PRIu64 " KiB, VmHWM %" PRIu64
                       " KiB after the run",
                       i == 0 ? "konn-server" : "konn-agent", e->vmrss_kib, e->rssanon_kib, e->vmhwm_kib);
                if (s->valid)
                        printf(" (VmRSS %" PRIu64 " KiB, RssAnon %" PRIu64 " KiB before)", s->vmrss_kib,
                               s->rssanon_kib);
                printf("\n");
        }
}

static void json_measurement(FILE *f, const Measurement *m, bool konn) {
        if (!m->done) {
                fputs("null", f);
                return;
        }
        fprintf(f, "{\"seconds\": %.6f, \"mib_per_s\": %.3f, \"setup_ms\": %.3f, \"carried_bytes\": %" PRIu64
                   ", \"bench_cpu_s\": %.3f",
                m->seconds, mib_per_s(m, arg_size), m->setup_ms, m->carried, m->bench_cpu_s);
        if (konn) {
                if (m->daemon_cpu_valid)
                        fprintf(f,
                                ", \"server_cpu_s\": %.3f, \"agent_cpu_s\": %.3f, \"cpu_s_per_gib\": %.4f",
                                m->server_cpu_s, m->agent_cpu_s, cpu_per_gib(m));
                else
                        fputs(", \"server_cpu_s\": null, \"agent_cpu_s\": null, \"cpu_s_per_gib\": null", f);
        }
        fputc('}', f);
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
        FILE *f;
        bool first = true;

        f = fopen(path, "we");
        if (!f)
                return negative_errno();

        fprintf(f, "{\n  \"tool\": \"konn-bench\",\n  \"version\": \"%s\",\n  \"ok\": %s,\n",
                PACKAGE_VERSION, ok ? "true" : "false");
        fprintf(f, "  \"size_bytes\": %" PRIu64 ",\n  \"buffer_bytes\": %zu,\n  \"timeout_s\": %u,\n",
                arg_size, arg_buffer_size, arg_timeout_sec);
        fprintf(f, "  \"cpus_online\": %ld,\n", sysconf(_SC_NPROCESSORS_ONLN));
        fputs("  \"unit\": \"MiB/s (1 MiB = 1048576 bytes); echo figures are per direction; "
              "cpu_s_per_gib is server+agent CPU seconds per GiB carried, both directions counted\",\n",
              f);
        fputs("  \"checksum\": \"XXH64\",\n  \"scenarios\": [", f);
        for (Scenario sc = 0; sc < _SCENARIO_MAX; sc++) {
                const Measurement *md = &b->m[sc][TRANSPORT_DIRECT], *mk = &b->m[sc][TRANSPORT_KONN];

                if (!md->done && !mk->done)
                        continue;
                fprintf(f, "%s\n    {\"name\": \"%s\", \"direct\": ", first ? "" : ",", scenario_name[sc]);
                json_measurement(f, md, false);
                fputs(", \"konn\": ", f);
                json_measurement(f, mk, true);
                if (md->done && mk->done)
                        fprintf(f, ", \"ratio\": %.4f}", mib_per_s(mk, arg_size) / mib_per_s(md, arg_size));
                else
                        fputs(", \"ratio\": null}", f);
                first = false;
        }
        fputs("\n  ],\n  \"daemons\": {\n", f);
        for (unsigned i = 0; i < 2; i++) {
                pid_t pid = i == 0 ? arg_server_pid : arg_agent_pid;

                fprintf(f, "    \"%s\": {\"pid\": ", i == 0 ? "server" : "agent");
                if (pid > 0)
                        fprintf(f, "%d", (int) pid);
                else
                        fputs("null", f);
                fputs(", \"start\": ", f);
                json_mem(f, &b->mem_start[i]);
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

static void help(void) {
        printf("Usage: konn-bench [OPTIONS...]\n\n"
               "Throughput benchmark: bulk transfers over direct loopback TCP and through konn.\n\n"
               "  -h --help              Show this help and exit\n"
               "     --version           Show the version and exit\n"
               "     --konn-uds=PATH     konn-server HTTP CONNECT Unix socket (without it: direct only)\n"
               "     --size=SIZE         Bytes per scenario and direction, e.g. 64M, 1G (default: 1G)\n"
               "     --buffer-size=SIZE  read()/write() buffer size (default: 256K)\n"
               "     --scenarios=LIST    Comma-separated: upload,download,echo (default: all)\n"
               "     --timeout=SEC       Abort a scenario after SEC seconds (default: %u)\n"
               "     --server-pid=PID    konn-server process, for CPU and memory figures\n"
               "     --agent-pid=PID     konn-agent process, for CPU and memory figures\n"
               "     --json=FILE         Also write the results as JSON to FILE\n"
               "     --self-test         Check the checksum and payload generator against known answers\n\n"
               "Exit status: 0 all scenarios ran and verified, 1 a scenario failed, 2 usage error.\n",
               BENCH_DEFAULT_TIMEOUT_SEC);
}

enum {
        ARG_VERSION = 0x100,
        ARG_KONN_UDS,
        ARG_SIZE,
        ARG_BUFFER_SIZE,
        ARG_SCENARIOS,
        ARG_TIMEOUT,
        ARG_SERVER_PID,
        ARG_AGENT_PID,
        ARG_JSON,
        ARG_SELF_TEST,
};

/* 1: continue, 0: exit successfully (--help), < 0: usage error (already reported). */
static int parse_argv(int argc, char *argv[]) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "konn-uds", required_argument, NULL, ARG_KONN_UDS },
                { "size", required_argument, NULL, ARG_SIZE },
                { "buffer-size", required_argument, NULL, ARG_BUFFER_SIZE },
                { "scenarios", required_argument, NULL, ARG_SCENARIOS },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "server-pid", required_argument, NULL, ARG_SERVER_PID },
                { "agent-pid", required_argument, NULL, ARG_AGENT_PID },
                { "json", required_argument, NULL, ARG_JSON },
                { "self-test", no_argument, NULL, ARG_SELF_TEST },
                {}
        };
        uint64_t v;
        char *end;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("konn-bench %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_KONN_UDS:
                        if (isempty(optarg)) {
                                fail("--konn-uds= must not be empty");
                                return -EINVAL;
                        }
                        arg_konn_uds = optarg;
                        break;
                case ARG_SIZE:
                        r = parse_size(optarg, &v);
                        if (r < 0 || v == 0 || v > BENCH_MAX_SIZE) {
                                fail("invalid --size='%s' (1 byte .. 1T)", optarg);
                                return -EINVAL;
                        }
                        arg_size = v;
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
                                fail("invalid --scenarios='%s' (upload,download,echo)", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_TIMEOUT:
                        r = parse_u64(optarg, &v, &end);
                        if (r < 0 || *end != '\0' || v == 0 || v > 3600) {
                                fail("invalid --timeout='%s' (1 .. 3600 seconds)", optarg);
                                return -EINVAL;
                        }
                        arg_timeout_sec = (unsigned) v;
                        break;
                case ARG_SERVER_PID:
                        r = parse_pid(optarg, &arg_server_pid);
                        if (r < 0) {
                                fail("invalid --server-pid='%s'", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_AGENT_PID:
                        r = parse_pid(optarg, &arg_agent_pid);
                        if (r < 0) {
                                fail("invalid --agent-pid='%s'", optarg);
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
        if (have_daemon_pids() && !arg_konn_uds) {
                fail("--server-pid=/--agent-pid= need --konn-uds=");
                return -EINVAL;
        }
        return 1;
}

/* ---------------------------------------------------------------------------------------------- */

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
                (void) proc_mem(arg_server_pid, &b->mem_start[0]);
                (void) proc_mem(arg_agent_pid, &b->mem_start[1]);
        }

        b->buf = malloc(arg_buffer_size);
        b->wbuf = malloc(arg_buffer_size);
        if (!b->buf || !b->wbuf) {
                fail("out of memory");
                return -ENOMEM;
        }

        for (Role role = 0; role < _ROLE_MAX; role++) {
                r = listener_start(&b->listeners[role], role, arg_buffer_size);
                if (r < 0) {
                        fail("failed to start the %s listener: %s", role_name[role], strerror(-r));
                        return r;
                }
        }

        for (Scenario sc = 0; sc < _SCENARIO_MAX; sc++) {
                if (arg_scenarios != 0 && !(arg_scenarios & (1U << sc)))
                        continue;
                for (Transport tr = 0; tr < _TRANSPORT_MAX; tr++) {
                        /* A fixed seed per run: reproducible, and different in every run. */
                        uint64_t seed = UINT64_C(0x6b6f6e6e2d62656e) + sc * _TRANSPORT_MAX + tr;

                        if (tr == TRANSPORT_KONN && !arg_konn_uds)
                                continue;
                        r = run_one(b, sc, tr, seed);
                        if (r < 0)
                                return r;
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
        return 0;
}

/* Safe after a failure anywhere in run(): listener_stop() also wakes a target thread that is still
 * inside a connection. */
static void bench_done(Bench *b) {
        for (Role role = 0; role < _ROLE_MAX; role++)
                listener_stop(&b->listeners[role]);
        b->buf = mfree(b->buf);
        b->wbuf = mfree(b->wbuf);
}

int main(int argc, char *argv[]) {
        Bench b = {};
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
        if (r < 0)
                printf("\nFAILED: see the messages above; figures shown are for the runs that completed.\n");
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
