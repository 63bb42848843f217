/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "listener.h"
#include "log.h"

struct Listener {
        sd_event *event;
        int fd;
        char *what;
        sd_event_source *io, *retry;
        listener_accept_t on_accept;
        listener_refuse_t on_refuse;
        void *userdata;
        bool enabled;      /* the owner wants connections */
        bool paused;       /* waiting for the retry timer */
        bool short_of_fds; /* refused or paused since the last successful accept */
        uint64_t n_refused, n_paused, n_refused_episode;
};

/* One per process: closed to make room for accepting a connection we must refuse. */
static int reserve_fd = -EBADF;
static unsigned n_listeners;
static uint64_t total_refused;

static void reserve_open(void) {
        if (reserve_fd < 0)
                reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

uint64_t listener_total_refused(void) {
        return total_refused;
}

uint64_t listener_n_refused(const Listener *l) {
        return l ? l->n_refused : 0;
}

uint64_t listener_n_paused(const Listener *l) {
        return l ? l->n_paused : 0;
}

static void update_io(Listener *l) {
        (void) sd_event_source_set_enabled(l->io, l->enabled && !l->paused ? SD_EVENT_ON : SD_EVENT_OFF);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Listener *l = userdata;

        l->paused = false;
        reserve_open();
        update_io(l);
        return 0;
}

static void pause_accepting(Listener *l, int error) {
        int r;

        l->n_paused++;
        l->short_of_fds = true;
        log_peer_full_errno_fields(LOG_WARNING, error, l->what, NULL,
                                   "Failed to accept %s connections: %m; pausing for %" PRIu64 " ms.", l->what,
                                   LISTENER_RETRY_USEC / USEC_PER_MSEC);
        if (!l->retry) {
                r = sd_event_add_time_relative(l->event, &l->retry, CLOCK_MONOTONIC, LISTENER_RETRY_USEC,
                                               USEC_PER_MSEC, on_retry, l);
                if (r < 0)
                        return; /* without a timer, keep accepting rather than never again */
        } else {
                (void) sd_event_source_set_time_relative(l->retry, LISTENER_RETRY_USEC);
                (void) sd_event_source_set_enabled(l->retry, SD_EVENT_ONESHOT);
        }
        l->paused = true;
        update_io(l);
}

/* accept() failed with EMFILE/ENFILE: use the reserve descriptor to accept and refuse one connection. Returns
 * true if one was refused (go on), false if the listener paused. */
static bool refuse_one(Listener *l, int error) {
        int cfd;

        if (reserve_fd < 0) {
                pause_accepting(l, error);
                return false;
        }
        reserve_fd = safe_close(reserve_fd);
        cfd = sock_accept(l->fd, NULL, NULL);
        if (cfd < 0) {
                reserve_open();
                if (cfd == -EAGAIN)
                        return false;
                pause_accepting(l, cfd);
                return false;
        }
        if (l->on_refuse)
                l->on_refuse(cfd, l->userdata);
        safe_close(cfd);
        reserve_open();
        l->n_refused++;
        l->n_refused_episode++;
        total_refused++;
        l->short_of_fds = true;
        log_peer_full_errno_fields(LOG_WARNING, error, l->what, NULL,
                                   "Out of file descriptors (%m): refusing new %s connections until some are "
                                   "closed (%" PRIu64 " refused so far).",
                                   l->what, l->n_refused_episode);
        return true;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Listener *l = userdata;

        for (unsigned i = 0; i < LISTENER_BURST && l->enabled && !l->paused; i++) {
                SockAddr peer;
                socklen_t plen = sizeof(peer);
                int cfd, r;

                cfd = sock_accept(l->fd, &peer, &plen);
                switch (cfd) {
                case -EAGAIN:
                        return 0;
                case -EINTR:
                case -ECONNABORTED:
                case -EPROTO:
                case -EPERM:
                case -ENETDOWN:
                case -ENOPROTOOPT:
                case -EHOSTDOWN:
                case -ENONET:
                case -EHOSTUNREACH:
                case -EOPNOTSUPP:
                case -ENETUNREACH:
                        continue;
                case -EMFILE:
                case -ENFILE:
                        if (!refuse_one(l, cfd))
                                return 0;
                        continue;
                default:
                        if (cfd < 0) {
                                /* ENOBUFS, ENOMEM, ...: the listener stays readable, back off. */
                                pause_accepting(l, cfd);
                                return 0;
                        }
                }

                if (l->short_of_fds) {
                        l->short_of_fds = false;
                        log_info("Accepting %s connections again (%" PRIu64 " refused while out of descriptors).",
                                 l->what, l->n_refused_episode);
                        l->n_refused_episode = 0;
                }
                r = l->on_accept(cfd, &peer, plen, l->userdata);
                if (r < 0) {
                        char name[SOCK_ADDR_STRING_MAX];

                        (void) sock_addr_to_string(&peer, plen, name, sizeof(name));
                        log_peer_full_errno_fields(LOG_WARNING, r, name, NULL,
                                                   "Failed to set up %s connection from %s, ignoring: %m", l->what,
                                                   name);
                }
        }
        return 0;
}

int listener_new(sd_event *e, int fd, const char *what, listener_accept_t on_accept, listener_refuse_t on_refuse,
                 void *userdata, Listener **ret) {
        Listener *l;
        int r;

        assert(e);
        assert(fd >= 0);
        assert(on_accept);
        assert(ret);

        l = calloc(1, sizeof(Listener));
        if (!l)
                return -ENOMEM;
        *l = (Listener){
                .event = sd_event_ref(e),
                .fd = fd,
                .what = strdup(what ?: "incoming"),
                .on_accept = on_accept,
                .on_refuse = on_refuse,
                .userdata = userdata,
                .enabled = true,
        };
        n_listeners++;
        if (!l->what) {
                listener_free(l);
                return -ENOMEM;
        }
        r = sd_event_add_io(e, &l->io, fd, EPOLLIN, on_io, l);
        if (r < 0) {
                listener_free(l);
                return r;
        }
        reserve_open();
        *ret = l;
        return 0;
}

Listener *listener_free(Listener *l) {
        if (!l)
                return NULL;
        l->io = sd_event_source_disable_unref(l->io);
        l->retry = sd_event_source_disable_unref(l->retry);
        sd_event_unref(l->event);
        free(l->what);
        free(l);
        if (--n_listeners == 0)
                reserve_fd = safe_close(reserve_fd);
        return NULL;
}

void listener_set_enabled(Listener *l, bool enabled) {
        if (!l)
                return;
        l->enabled = enabled;
        update_io(l);
}
