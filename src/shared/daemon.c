/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include "daemon.h"
#include "log.h"
#include "sock.h"

#define LISTEN_FDS_MAX 16

static DaemonHooks hooks;
static unsigned n_stop_signals;
static int listen_fds[LISTEN_FDS_MAX];
static char *listen_names[LISTEN_FDS_MAX];
static unsigned n_listen;

static int on_stop_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        if (++n_stop_signals > 1 || !hooks.on_stop) {
                log_info("Received %s again, exiting now.", strsignal((int) si->ssi_signo));
                return sd_event_exit(sd_event_source_get_event(s), 0);
        }
        log_info("Received %s, stopping gracefully (send it again to exit at once).", strsignal((int) si->ssi_signo));
        hooks.on_stop(hooks.userdata);
        return 0;
}

static int on_hup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        if (hooks.on_reload)
                hooks.on_reload(hooks.userdata);
        return 0;
}

static pthread_t main_thread;

/* The loop thread blocks these signals and reads them from a signalfd. glibc's getaddrinfo_a notification
 * threads run with every signal unblocked, though, so the kernel may pick one of them: with the default action
 * that would kill the daemon mid-lookup. This handler only runs on such a thread and hands the signal to the loop
 * thread, where it stays pending for the signalfd. (pthread_kill() is async-signal-safe.) */
static void forward_signal(int sig) {
        int saved = errno;

        (void) pthread_kill(main_thread, sig);
        errno = saved;
}

int daemon_event_new(const DaemonHooks *h, sd_event **ret) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct sigaction sa = { .sa_handler = forward_signal, .sa_flags = SA_RESTART };
        sigset_t ss;
        int r;

        hooks = h ? *h : (DaemonHooks){};
        /* No openssl.cnf: a daemon's TLS settings are its own configuration. (Error strings stay: log lines must
         * say "certificate verify failed", not a reason number.) */
        (void) OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
        (void) sigemptyset(&ss);
        (void) sigaddset(&ss, SIGTERM);
        (void) sigaddset(&ss, SIGINT);
        (void) sigaddset(&ss, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0)
                return -errno;
        main_thread = pthread_self();
        (void) sigfillset(&sa.sa_mask);
        (void) sigaction(SIGTERM, &sa, NULL);
        (void) sigaction(SIGINT, &sa, NULL);
        (void) sigaction(SIGHUP, &sa, NULL);
        (void) signal(SIGPIPE, SIG_IGN);

        r = sd_event_default(&e);
        if (r < 0)
                return r;
        r = sd_event_add_signal(e, NULL, SIGTERM, on_stop_signal, NULL);
        if (r < 0)
                return r;
        r = sd_event_add_signal(e, NULL, SIGINT, on_stop_signal, NULL);
        if (r < 0)
                return r;
        r = sd_event_add_signal(e, NULL, SIGHUP, on_hup, NULL);
        if (r < 0)
                return r;
        r = sd_event_set_watchdog(e, true);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(e);
        return 0;
}

static int fd_nonblock(int fd) {
        int flags = fcntl(fd, F_GETFL);

        if (flags < 0)
                return -errno;
        if (flags & O_NONBLOCK)
                return 0;
        return RET_NERRNO(fcntl(fd, F_SETFL, flags | O_NONBLOCK));
}

int daemon_listen_fds_init(void) {
        char **names = NULL;
        int n;

        n = sd_listen_fds_with_names(true, &names);
        if (n < 0)
                return n;
        for (int i = 0; i < n; i++) {
                if (n_listen < LISTEN_FDS_MAX) {
                        listen_fds[n_listen] = SD_LISTEN_FDS_START + i;
                        listen_names[n_listen] = names ? names[i] : NULL;
                        n_listen++;
                } else {
                        (void) safe_close(SD_LISTEN_FDS_START + i);
                        if (names)
                                free(names[i]);
                }
        }
        free(names);
        return (int) n_listen;
}

static bool fd_is_unix(int fd) {
        int family = 0;
        socklen_t len = sizeof(family);

        return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) >= 0 && family == AF_UNIX;
}

/* family_filter: 0 any, 1 only AF_UNIX, -1 anything but AF_UNIX. */
static int take_listen_fd(const char *name, int family_filter) {
        for (unsigned i = 0; i < n_listen; i++)
                if (listen_fds[i] >= 0 && streq_ptr(listen_names[i], name) &&
                    (family_filter == 0 || (family_filter > 0) == fd_is_unix(listen_fds[i]))) {
                        int fd = listen_fds[i];
                        listen_fds[i] = -EBADF;
                        /* systemd passes sockets blocking unless the unit says NonBlocking=yes: the accept loops
                         * must never block, whatever the unit says. */
                        (void) fd_nonblock(fd);
                        return fd;
                }
        return -ENOENT;
}

/* Does the listening socket fd have the local address the configuration asks for? A wildcard host (NULL or "")
 * matches a socket bound to 0.0.0.0 or [::] with that port. */
static bool fd_listens_on(int fd, const char *path, const char *host, uint16_t port) {
        SockAddr local = {}, want;
        socklen_t len = sizeof(local), wlen;

        if (getsockname(fd, &local.sa, &len) < 0)
                return false;
        if (path) {
                size_t off = offsetof(struct sockaddr_un, sun_path), plen = strlen(path);

                if (local.sa.sa_family != AF_UNIX || len <= off)
                        return false;
                if (path[0] == '@') /* abstract: a leading NUL, no terminator */
                        return len - off == plen && local.un.sun_path[0] == '\0' &&
                               memcmp(local.un.sun_path + 1, path + 1, plen - 1) == 0;
                return strncmp(local.un.sun_path, path, sizeof(local.un.sun_path)) == 0;
        }
        if (local.sa.sa_family == AF_INET) {
                if (ntohs(local.in.sin_port) != port)
                        return false;
                if (!host || !*host)
                        return local.in.sin_addr.s_addr == htonl(INADDR_ANY);
        } else if (local.sa.sa_family == AF_INET6) {
                if (ntohs(local.in6.sin6_port) != port)
                        return false;
                if (!host || !*host)
                        return IN6_IS_ADDR_UNSPECIFIED(&local.in6.sin6_addr);
        } else
                return false;
        if (sock_parse_numeric(host, port, &want, &wlen) < 0 || want.sa.sa_family != local.sa.sa_family)
                return false;
        if (want.sa.sa_family == AF_INET)
                return want.in.sin_addr.s_addr == local.in.sin_addr.s_addr;
        return memcmp(&want.in6.sin6_addr, &local.in6.sin6_addr, sizeof(struct in6_addr)) == 0;
}

int daemon_take_listen_fd_by_address(const char *path, const char *host, uint16_t port) {
        for (unsigned i = 0; i < n_listen; i++)
                if (listen_fds[i] >= 0 && fd_listens_on(listen_fds[i], path, host, port)) {
                        int fd = listen_fds[i];
                        listen_fds[i] = -EBADF;
                        (void) fd_nonblock(fd);
                        return fd;
                }
        return -ENOENT;
}

void daemon_listen_fds_close(void) {
        for (unsigned i = 0; i < n_listen; i++) {
                listen_fds[i] = safe_close(listen_fds[i]);
                listen_names[i] = mfree(listen_names[i]);
        }
        n_listen = 0;
}

int daemon_take_listen_fd(const char *name) {
        return take_listen_fd(name, 0);
}

void daemon_listen_fds_done(void) {
        for (unsigned i = 0; i < n_listen; i++) {
                if (listen_fds[i] >= 0)
                        log_warning("Ignoring passed socket '%s' (fd %d): no listener of that name.",
                                    listen_names[i] ?: "unknown", listen_fds[i]);
                listen_fds[i] = safe_close(listen_fds[i]);
                listen_names[i] = mfree(listen_names[i]);
        }
        n_listen = 0;
}

int daemon_listen_http(sd_event *e, const char *name, const char *bind, int64_t port, http_handler_t h,
                       void *userdata, HttpServer **ret) {
        int fd, r;

        fd = take_listen_fd(name, -1);
        if (fd < 0 && port > 0)
                fd = daemon_take_listen_fd_by_address(NULL, bind, (uint16_t) port);
        if (fd < 0) {
                if (port == 0)
                        return 0;
                fd = sock_listen_tcp(bind, (uint16_t) port);
                if (fd < 0)
                        return log_error_errno(fd, "Failed to listen on the %s port %s:%" PRIi64 ": %m", name,
                                               bind ?: "", port);
        }
        r = http_server_new(e, fd, h, userdata, ret);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the %s listener: %m", name);
        return 0;
}

int daemon_listen_http_unix(sd_event *e, const char *name, const char *path, http_handler_t h, void *userdata,
                            HttpServer **ret, bool *ret_bound) {
        int fd, r;

        *ret_bound = false;
        fd = take_listen_fd(name, 1);
        if (fd < 0 && path && *path)
                fd = daemon_take_listen_fd_by_address(path, NULL, 0);
        if (fd < 0) {
                if (!path || !*path)
                        return 0;
                fd = sock_listen_unix(path, 0660, true);
                if (fd < 0)
                        return log_error_errno(fd, "Failed to listen on the %s socket %s: %m", name, path);
                *ret_bound = true;
        }
        r = http_server_new(e, fd, h, userdata, ret);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the %s socket listener: %m", name);
        return 0;
}

static int on_stop_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        DaemonStopWait *w = userdata;
        size_t n = w->count(w->userdata);

        if (n == 0 || usec >= w->deadline) {
                if (n > 0)
                        log_notice("%s timeout reached with %zu connection%s still open, closing them.", w->what, n,
                                   n == 1 ? "" : "s");
                return sd_event_exit(w->event, 0);
        }
        (void) sd_event_source_set_time_relative(s, 100 * USEC_PER_MSEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

int daemon_stop_wait(DaemonStopWait *w, sd_event *e, uint64_t timeout_usec, size_t (*count)(void *userdata),
                     void *userdata, const char *what) {
        uint64_t now;
        int r;

        *w = (DaemonStopWait){ .event = e, .count = count, .userdata = userdata, .what = what };
        (void) sd_event_now(e, CLOCK_MONOTONIC, &now);
        w->deadline = now + timeout_usec;
        r = sd_event_add_time_relative(e, &w->timer, CLOCK_MONOTONIC, 100 * USEC_PER_MSEC, 0, on_stop_tick, w);
        if (r < 0)
                (void) sd_event_exit(e, 0);
        return r;
}

void daemon_stop_wait_done(DaemonStopWait *w) {
        w->timer = sd_event_source_disable_unref(w->timer);
}

/* The one daemon of this process. */
static struct {
        const DaemonDescriptor *d;
        int argc;
        char **argv;
        sd_event *event;
        void *manager;
        int start_error;
} D;

static void apply_log_settings(const void *config) {
        log_set_target((LogTarget) *(const int *) ((const uint8_t *) config + D.d->log_target_offset));
        log_set_max_level(*(const int *) ((const uint8_t *) config + D.d->log_level_offset));
}

/* Build and start the manager from a valid configuration (ownership of config passes). */
static int start_manager(void *config) {
        int r;

        apply_log_settings(config);
        r = D.d->manager_new(D.event, config, &D.manager);
        if (r < 0)
                return log_error_errno(r, "Failed to create the manager: %m");
        r = D.d->manager_start(D.manager);
        daemon_listen_fds_done();
        return r;
}

/* Without a usable configuration under systemd, a fresh package install must not crash-loop: stay up, say so
 * in STATUS, and try again on every reload. */
static void wait_for_configuration(const char *error) {
        log_error("%s", error);
        log_notice("Waiting for a valid configuration; run 'systemctl reload %s' once it is in place.", D.d->name);
        (void) sd_notifyf(false, "READY=1\nSTATUS=Waiting for configuration: %s", error);
}

static void on_stop(void *userdata) {
        if (D.manager)
                D.d->manager_stop(D.manager);
        else
                (void) sd_event_exit(D.event, 0);
}

/* Load the configuration again; on failure *ret_error says why. */
static void *load_config(char **ret_error) {
        _cleanup_(conf_args_done) ConfArgs args = {};
        void *config;
        int r;

        config = calloc(1, D.d->config_size);
        if (!config)
                return NULL;
        r = D.d->config_load(config, D.argc, D.argv, &args, ret_error);
        if (r != 0)
                return mfree(config);
        return config;
}

void *daemon_load_config(void) {
        _cleanup_free_ char *error = NULL;
        void *config = load_config(&error);

        if (!config)
                log_error("Reloading the configuration failed, keeping the running one: %s", error ?: "out of memory");
        return config;
}

static void on_reload(void *userdata) {
        _cleanup_free_ char *error = NULL;
        void *config;
        int r;

        if (D.manager) {
                D.d->manager_reload(D.manager);
                return;
        }
        (void) sd_notify(false, "RELOADING=1");
        config = load_config(&error);
        if (!config) {
                wait_for_configuration(error ?: "out of memory");
                return;
        }
        log_info("Configuration is valid now, starting.");
        r = start_manager(config);
        if (r < 0) {
                D.start_error = r;
                (void) sd_event_exit(D.event, r);
        }
}

/* The loop is epoll-based (no select() and its FD_SETSIZE), so use the hard open-files limit, as systemd advises
 * services to: LimitNOFILE= (or prlimit/ulimit) sets the real ceiling, not the 1024 soft default. */
static void raise_nofile(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
                return;
        rl.rlim_cur = rl.rlim_max;
        (void) setrlimit(RLIMIT_NOFILE, &rl);
}

static int daemon_run(const DaemonDescriptor *d, int argc, char *argv[]) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(conf_args_done) ConfArgs args = {};
        _cleanup_free_ void *config = NULL;
        _cleanup_free_ char *error = NULL;
        DaemonHooks h = { .on_stop = on_stop, .on_reload = on_reload };
        bool waiting = false;
        int r;

        raise_nofile();
        D.d = d;
        D.argc = argc;
        D.argv = argv;
        config = calloc(1, d->config_size);
        if (!config)
                return log_oom();
        r = d->config_load(config, argc, argv, &args, &error);
        if (r < 0) {
                if (args.check_config || !getenv("NOTIFY_SOCKET") || r == -ENOMEM)
                        return log_error_errno(r, "%s", error ?: "Out of memory.");
                waiting = true;
        } else if (r == CONF_ACTION_HELP) {
                d->print_help(stdout);
                return 0;
        } else if (r == CONF_ACTION_VERSION) {
                printf("%s %s\n", d->name, PACKAGE_VERSION);
                return 0;
        } else if (args.check_config) {
                apply_log_settings(config);
                d->config_done(config);
                log_info("Configuration is valid.");
                return 0;
        }

        r = daemon_event_new(&h, &e);
        if (r < 0) {
                if (!waiting)
                        d->config_done(config);
                return log_error_errno(r, "Failed to set up the event loop: %m");
        }
        D.event = e;
        r = daemon_listen_fds_init();
        if (r < 0)
                log_warning_errno(r, "Failed to read the sockets passed by systemd, ignoring: %m");
        if (waiting)
                wait_for_configuration(error);
        else {
                r = start_manager(TAKE_PTR(config));
                if (r < 0)
                        goto finish;
        }
        r = sd_event_loop(e);
        if (D.start_error < 0)
                r = D.start_error;
        else if (r < 0)
                log_error_errno(r, "Event loop failed: %m");
        else {
                (void) sd_notify(false, "STOPPING=1");
                log_info("%s stopped.", d->name);
        }
finish:
        if (D.manager)
                D.manager = d->manager_free(D.manager);
        /* Still waiting for a configuration: nobody looked for listeners yet, so nothing was "ignored". */
        daemon_listen_fds_close();
        D.event = NULL;
        return r;
}

int daemon_main(const DaemonDescriptor *d, int argc, char *argv[]) {
        return daemon_run(d, argc, argv) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
