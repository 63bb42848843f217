/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "bench.h"

void fail(const char *format, ...) {
        va_list ap;

        fputs("konn-bench: ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
}

uint64_t now_usec(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000U;
}

void sleep_usec(uint64_t usec) {
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



void gen_init(Gen *g, uint64_t seed) {
        *g = (Gen) {
                .state = seed,
        };
}

/* Fills p with the next n bytes of the stream. */
void gen_fill(Gen *g, uint8_t *p, size_t n) {
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
bool gen_verify(Gen *g, const uint8_t *p, size_t n, uint8_t *scratch, size_t scratch_size) {
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








void digest_init(Digest *d) {
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

uint64_t digest_final(const Digest *d) {
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
uint64_t stream_digest(uint64_t seed, uint64_t size, uint8_t *buf, size_t bufsize) {
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
int self_test(void) {
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

int set_deadline(int fd, uint64_t deadline) {
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

int io_errno(uint64_t deadline) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || now_usec() >= deadline)
                return -ETIMEDOUT;
        return negative_errno();
}

/* Writes all n bytes; *progress (if not NULL) grows with every byte accepted, also on failure. */
int write_all(int fd, const uint8_t *p, size_t n, uint64_t deadline, uint64_t *progress) {
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


/* Sends size bytes of stream seed. */
int stream_send(Stream *s, uint64_t seed) {
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
int stream_recv(Stream *s, Digest *d, int echo_fd) {
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
int expect_eof(int fd, uint64_t deadline) {
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
/* Client side: connections, direct or through konn. */

/* ---------------------------------------------------------------------------------------------- */
/* Client side: blocking connections, direct or through konn. */


const char *const transport_name[_TRANSPORT_MAX] = {
        [TRANSPORT_DIRECT] = "direct",
        [TRANSPORT_KONN] = "konn",
};

int connect_direct(uint16_t port, uint64_t deadline, int *ret_fd) {
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
void reply_first_line(const char *reply, size_t n, char *out, size_t outsize) {
        size_t j = 0;

        for (size_t i = 0; i < n && reply[i] != '\r' && reply[i] != '\n' && j + 1 < outsize; i++)
                out[j++] = reply[i] >= 0x20 && reply[i] < 0x7f ? reply[i] : '?';
        out[j] = '\0';
}

int format_connect_request(uint16_t port, char *buf, size_t size) {
        int r = snprintf(buf, size, "CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                         (unsigned) port);

        assert(r > 0 && (size_t) r < size);
        return r;
}

/* Checks a complete CONNECT reply header of hlen bytes; logs and returns -EPROTO if it is not exactly
 * BENCH_CONNECT_REPLY. */
int check_connect_reply(const char *reply, size_t hlen) {
        char line[128];

        if (hlen == STRLEN(BENCH_CONNECT_REPLY) && memcmp(reply, BENCH_CONNECT_REPLY, hlen) == 0)
                return 0;
        reply_first_line(reply, hlen, line, sizeof(line));
        fail("CONNECT refused: '%s'", line);
        return -EPROTO;
}

/* HTTP CONNECT on a konn Unix socket. The reply must be exactly BENCH_CONNECT_REPLY (else -EPROTO).
 * Tunnel bytes that arrive with it (at most extra_size, more is -EPROTO) are copied to extra. */
int connect_konn(const char *uds, uint16_t port, uint64_t deadline, uint8_t *extra, size_t extra_size,
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
int connect_to(const char *uds, uint16_t port, uint64_t deadline, int *ret_fd) {
        size_t n_extra;

        if (!uds)
                return connect_direct(port, deadline, ret_fd);
        return connect_konn(uds, port, deadline, NULL, 0, &n_extra, ret_fd);
}

/* ---------------------------------------------------------------------------------------------- */
/* Daemon accounting from /proc. */


/* utime+stime of pid, in clock ticks. */
int proc_cpu_ticks(pid_t pid, uint64_t *ret_ticks) {
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

int proc_mem(pid_t pid, ProcMem *ret_mem) {
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
