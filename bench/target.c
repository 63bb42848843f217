/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "bench.h"

/* ---------------------------------------------------------------------------------------------- */
/* The loopback target: three listeners on 127.0.0.1, each served by one thread, one connection at
 * a time (scenarios run one after another). main() posts a Job before it connects; the thread
 * copies it when it accepts, and posts a TargetResult carrying the Job's generation. */





const char *const role_name[_ROLE_MAX] = {
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
int target_wait(Listener *l, uint64_t generation, uint64_t deadline, TargetResult *ret_result) {
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

void target_post_job(Listener *l, const Job *job) {
        pthread_mutex_lock(&l->lock);
        l->job = *job;
        pthread_mutex_unlock(&l->lock);
}

int listener_start(Listener *l, Role role, size_t bufsize) {
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
void listener_stop(Listener *l) {
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
/* The target child process: one epoll loop, four listeners (see the comment at the top). */









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
int target_start(Target *t) {
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
int target_check(Target *t) {
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
void target_stop(Target *t) {
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
int target_wait_closed(Target *t, TRole role, uint64_t closed, uint64_t usec) {
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
