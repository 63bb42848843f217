/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <fcntl.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include "fuzz-daemon.h"
#include "log.h"
#include "macro.h"
#include "tls.h"

static char scratch[64];

/* TLS off: the fuzz targets link with -Wl,--wrap for these three (FUZZ_WRAPS in Makefile.am), so contexts are never built and every
 * Transport is plain. The daemons treat a NULL context as "no TLS on this listener" (as for a Unix frontend). */
int __wrap_tls_ctx_new_server(const char *cert_file, const char *key_file, const char *ca_file, TlsAlpn alpn,
                              SSL_CTX **ret, char **ret_error);
int __wrap_tls_ctx_new_client(const char *ca_file, const char *cert_file, const char *key_file,
                              char *const *extra_alpn, SSL_CTX **ret, char **ret_error);
int __wrap_tls_conn_new(SSL_CTX *ctx, int fd, bool server, const char *verify_host, TlsConn **ret);

int __wrap_tls_ctx_new_server(const char *cert_file, const char *key_file, const char *ca_file, TlsAlpn alpn,
                              SSL_CTX **ret, char **ret_error) {
        *ret = NULL;
        return 0;
}

int __wrap_tls_ctx_new_client(const char *ca_file, const char *cert_file, const char *key_file,
                              char *const *extra_alpn, SSL_CTX **ret, char **ret_error) {
        *ret = NULL;
        return 0;
}

int __wrap_tls_conn_new(SSL_CTX *ctx, int fd, bool server, const char *verify_host, TlsConn **ret) {
        FUZZ_CHECK(!ctx);
        *ret = NULL;
        return 0;
}

/* Name lookups synchronously (getaddrinfo_a is wrapped too): the loop sees the same eventfd wake-up, but no lookup
 * outlives its input on a glibc thread (LeakSanitizer would call the query a leak when an input ends during one),
 * and runs are deterministic. In the private namespace a lookup ends at once: /etc/hosts, or no route to DNS. */
int __wrap_getaddrinfo_a(int mode, struct gaicb *list[], int nitems, struct sigevent *sev);

int __wrap_getaddrinfo_a(int mode, struct gaicb *list[], int nitems, struct sigevent *sev) {
        for (int i = 0; i < nitems; i++)
                if (list[i])
                        list[i]->__return = getaddrinfo(list[i]->ar_name, list[i]->ar_service, list[i]->ar_request,
                                                        &list[i]->ar_result);
        if (sev && sev->sigev_notify == SIGEV_THREAD)
                sev->sigev_notify_function(sev->sigev_value);
        return 0;
}

static void loopback_up(void) {
        struct ifreq ifr = {};
        int fd;

        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        FUZZ_CHECK(fd >= 0);
        strcpy(ifr.ifr_name, "lo");
        FUZZ_CHECK(ioctl(fd, SIOCGIFFLAGS, &ifr) == 0);
        ifr.ifr_flags |= IFF_UP;
        FUZZ_CHECK(ioctl(fd, SIOCSIFFLAGS, &ifr) == 0);
        close(fd);
}

static void write_file(const char *path, const char *s) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);

        if (fd < 0)
                return;
        (void) !write(fd, s, strlen(s));
        close(fd);
}

void fuzz_daemon_init(void) {
        static bool done;
        uid_t uid = getuid();
        gid_t gid = getgid();

        if (done)
                return;
        done = true;
        if (unshare(CLONE_NEWNET) < 0) {
                char map[64];

                if (unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0) {
                        fprintf(stderr, "fuzz: cannot enter a private network namespace (%m); refusing to run a "
                                        "daemon fuzzer that could reach a real network\n");
                        exit(EXIT_FAILURE);
                }
                write_file("/proc/self/setgroups", "deny");
                (void) snprintf(map, sizeof(map), "0 %u 1", (unsigned) uid);
                write_file("/proc/self/uid_map", map);
                (void) snprintf(map, sizeof(map), "0 %u 1", (unsigned) gid);
                write_file("/proc/self/gid_map", map);
        }
        loopback_up();

        (void) snprintf(scratch, sizeof(scratch), "/tmp/konn-fuzz-%d", (int) getpid());
        FUZZ_CHECK(mkdir(scratch, 0700) == 0 || errno == EEXIST);

        if (getenv("FUZZ_DEBUG")) {
                log_set_target(LOG_TARGET_STDERR);
                log_set_max_level(LOG_DEBUG);
        } else
                log_set_max_level(-1);
}

const char *fuzz_scratch_dir(void) {
        return scratch;
}

/* ---- pipes -------------------------------------------------------------------------------------------------- */

static void pipe_update(Pipe *p) {
        uint32_t ev = EPOLLIN | EPOLLRDHUP;

        if (p->left > 0 || !p->connected)
                ev |= EPOLLOUT;
        if (p->failed || (p->peer_eof && (p->left == 0 || p->eof_sent)))
                (void) sd_event_source_set_enabled(p->io, SD_EVENT_OFF);
        else
                (void) sd_event_source_set_io_events(p->io, ev);
}

static int pipe_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Pipe *p = userdata;

        if (!p->connected && (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                int err = 0;
                socklen_t l = sizeof(err);

                (void) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
                if (err != 0) {
                        p->failed = true;
                        pipe_update(p);
                        return 0;
                }
                p->connected = true;
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
                for (unsigned i = 0; i < 16; i++) {
                        uint8_t buf[16384];
                        ssize_t n = read(fd, buf, sizeof(buf));

                        if (n > 0) {
                                if (p->received < sizeof(p->head))
                                        memcpy(p->head + p->received, buf,
                                               MIN((size_t) n, sizeof(p->head) - p->received));
                                p->received += (size_t) n;
                                continue;
                        }
                        if (n == 0)
                                p->peer_eof = true;
                        else if (errno != EAGAIN && errno != EINTR) {
                                p->peer_eof = true;
                                p->failed = true;
                        }
                        break;
                }
        }
        while (p->left > 0 && !p->failed) {
                ssize_t n = send(fd, p->data, p->left, MSG_NOSIGNAL | MSG_DONTWAIT);

                if (n < 0) {
                        if (errno != EAGAIN && errno != EINTR)
                                p->failed = true;
                        break;
                }
                p->data += n;
                p->left -= (size_t) n;
        }
        if (p->left == 0 && p->shutdown_when_sent && !p->eof_sent && !p->failed) {
                (void) shutdown(fd, SHUT_WR);
                p->eof_sent = true;
        }
        pipe_update(p);
        return 0;
}

int fuzz_pipe_new(sd_event *e, int fd, Pipe **ret) {
        Pipe *p = calloc(1, sizeof(Pipe));
        int r;

        FUZZ_CHECK(p);
        p->fd = fd;
        p->connected = true;
        r = sd_event_add_io(e, &p->io, fd, EPOLLIN | EPOLLRDHUP, pipe_on_io, p);
        FUZZ_CHECK(r >= 0);
        *ret = p;
        return 0;
}

static int pipe_connect(sd_event *e, const struct sockaddr *sa, socklen_t len, Pipe **ret) {
        Pipe *p;
        int fd;

        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        FUZZ_CHECK(fd >= 0);
        if (connect(fd, sa, len) < 0 && errno != EINPROGRESS && errno != EAGAIN) {
                int r = -errno;
                close(fd);
                return r;
        }
        (void) fuzz_pipe_new(e, fd, &p);
        p->connected = false;
        (void) sd_event_source_set_io_events(p->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
        *ret = p;
        return 0;
}

int fuzz_pipe_connect_unix(sd_event *e, const char *path, Pipe **ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        FUZZ_CHECK(strlen(path) < sizeof(sa.sun_path));
        strcpy(sa.sun_path, path);
        return pipe_connect(e, (struct sockaddr *) &sa, sizeof(sa), ret);
}

int fuzz_pipe_connect_tcp(sd_event *e, uint16_t port, Pipe **ret) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

        return pipe_connect(e, (struct sockaddr *) &sa, sizeof(sa), ret);
}

void fuzz_pipe_feed(Pipe *p, const uint8_t *data, size_t size, bool shutdown_when_sent) {
        p->data = data;
        p->left = size;
        p->shutdown_when_sent = shutdown_when_sent;
        if (!p->failed)
                (void) sd_event_source_set_enabled(p->io, SD_EVENT_ON);
        pipe_update(p);
}

Pipe *fuzz_pipe_free(Pipe *p) {
        if (!p)
                return NULL;
        sd_event_source_disable_unref(p->io);
        if (p->fd >= 0) {
                /* RST instead of FIN + TIME_WAIT: millions of connections go through the same ports. */
                struct linger l = { .l_onoff = 1, .l_linger = 0 };
                (void) setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
                close(p->fd);
        }
        free(p);
        return NULL;
}

/* ---- listeners and the echo target -------------------------------------------------------------------------- */

typedef struct Listener {
        void (*on_accept)(int fd, void *userdata);
        void *userdata;
} Listener;

static int listener_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Listener *l = userdata;

        for (unsigned i = 0; i < 16; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

                if (cfd < 0)
                        break;
                l->on_accept(cfd, l->userdata);
        }
        return 0;
}

static void listener_free(void *userdata) {
        free(userdata);
}

int fuzz_listen(sd_event *e, uint16_t port, void (*on_accept)(int fd, void *userdata), void *userdata,
                sd_event_source **ret_source) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        Listener *l;
        int fd, one = 1, r;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        FUZZ_CHECK(fd >= 0);
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        l = calloc(1, sizeof(Listener));
        FUZZ_CHECK(l);
        l->on_accept = on_accept;
        l->userdata = userdata;
        r = sd_event_add_io(e, ret_source, fd, EPOLLIN, listener_on_io, l);
        FUZZ_CHECK(r >= 0);
        (void) sd_event_source_set_io_fd_own(*ret_source, true);
        (void) sd_event_source_set_destroy_callback(*ret_source, listener_free);
        return 0;
}

#define TARGET_CONNS_MAX 8
static struct {
        sd_event_source *listener;
        Pipe *conns[TARGET_CONNS_MAX];
        unsigned n;
} target;

static const uint8_t greeting[] = "hello\n";

static void target_on_accept(int fd, void *userdata) {
        Pipe *p;

        if (target.n >= TARGET_CONNS_MAX) {
                close(fd);
                return;
        }
        (void) fuzz_pipe_new(userdata, fd, &p);
        fuzz_pipe_feed(p, greeting, sizeof(greeting) - 1, false);
        target.conns[target.n++] = p;
}

int fuzz_target_start(sd_event *e) {
        return fuzz_listen(e, FUZZ_TARGET_PORT, target_on_accept, e, &target.listener);
}

void fuzz_target_stop(void) {
        for (unsigned i = 0; i < target.n; i++)
                target.conns[i] = fuzz_pipe_free(target.conns[i]);
        target.n = 0;
        target.listener = sd_event_source_disable_unref(target.listener);
}

void fuzz_run_until_idle(sd_event *e, unsigned max_iterations) {
        unsigned idle = 0;

        for (unsigned i = 0; i < max_iterations && idle < 3; i++) {
                int r = sd_event_run(e, 0);

                FUZZ_CHECK(r >= 0);
                idle = r == 0 ? idle + 1 : 0;
        }
}
