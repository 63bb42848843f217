/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <openssl/ssl.h>
#include <signal.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "daemon.h"
#include "log.h"

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

int daemon_event_new(const DaemonHooks *h, sd_event **ret) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
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

int daemon_take_listen_fd(const char *name) {
        for (unsigned i = 0; i < n_listen; i++)
                if (listen_fds[i] >= 0 && streq_ptr(listen_names[i], name)) {
                        int fd = listen_fds[i];
                        listen_fds[i] = -EBADF;
                        return fd;
                }
        return -ENOENT;
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
