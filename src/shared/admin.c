/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "daemon.h"
#include "jsonw.h"
#include "log.h"
#include "sock.h"

static uint64_t clock_usec(clockid_t id) {
        struct timespec ts;
        (void) clock_gettime(id, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

void admin_state_init(AdminState *a) {
        *a = (AdminState){ .started_realtime_usec = clock_usec(CLOCK_REALTIME), .started_usec = clock_usec(CLOCK_MONOTONIC) };
}

void admin_state_done(AdminState *a) {
        a->unix_server = http_server_free(a->unix_server);
        if (a->bound_path) {
                (void) unlink(a->bound_path);
                a->bound_path = mfree(a->bound_path);
        }
}

int admin_listen_unix(AdminState *a, sd_event *e, const char *path, http_handler_t h, void *userdata) {
        bool bound = false;
        int r;

        r = daemon_listen_http_unix(e, "admin", path, h, userdata, &a->unix_server, &bound);
        if (r < 0)
                return r;
        if (bound) {
                a->bound_path = strdup(path);
                if (!a->bound_path)
                        return log_oom();
        }
        return 0;
}

void admin_count_event(AdminState *a, const TraceEvent *ev) {
        if (ev->type >= 0 && ev->type < _TRACE_EVENT_MAX)
                a->dials[ev->type]++;
}

void admin_write_process(FILE *f, const AdminState *a) {
        char started[32];

        jsonw_time(started, a->started_realtime_usec);
        fprintf(f, "\"pid\": %d, \"started\": \"%s\", \"uptime_seconds\": %.3f", (int) getpid(), started,
                (double) (clock_usec(CLOCK_MONOTONIC) - a->started_usec) / USEC_PER_SEC);
}

void admin_write_dials(FILE *f, const AdminState *a, const TraceHub *h) {
        const TraceError *e;

        fprintf(f, "\"dials\": {\"requested\": %" PRIu64 ", \"established\": %" PRIu64 ", \"failed\": %" PRIu64
                "}, \"tunnels_closed\": %" PRIu64 ", \"trace_subscribers\": %u, \"trace_dropped\": %" PRIu64
                ", \"last_errors\": [",
                a->dials[TRACE_DIAL], a->dials[TRACE_ESTABLISHED], a->dials[TRACE_FAILED], a->dials[TRACE_CLOSED],
                h->n_subscribers, h->n_dropped);
        for (unsigned i = 0; (e = trace_last_error(h, i)); i++) {
                char when[32];

                jsonw_time(when, e->time_usec);
                fprintf(f, "%s{\"time\": \"%s\", \"destination\": ", i ? ", " : "", when);
                jsonw_string(f, e->dest);
                fputs(", \"reason\": ", f);
                jsonw_string(f, e->reason);
                fputc('}', f);
        }
        fputc(']', f);
}

int admin_body_finish(FILE *f, char **buf, size_t *len, HttpResponse *ret) {
        if (fclose(f) != 0) {
                *buf = mfree(*buf);
                return -ENOMEM;
        }
        ret->status = 200;
        ret->body = TAKE_PTR(*buf);
        ret->body_len = *len;
        ret->content_type = "application/json";
        return 0;
}

int admin_respond(void (*write)(void *userdata, FILE *f), void *userdata, HttpResponse *ret) {
        size_t len = 0;
        char *buf = NULL;
        FILE *f;

        f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;
        write(userdata, f);
        return admin_body_finish(f, &buf, &len, ret);
}

static int takeover_trace(int fd, void *userdata) {
        return trace_subscribe(userdata, fd);
}

int admin_respond_trace(TraceHub *h, const HttpRequest *req, HttpResponse *ret) {
        if (h->n_subscribers >= TRACE_SUBSCRIBERS_MAX)
                return http_response_set_text(ret, 503, "too many trace subscribers\n");
        if (streq(req->method, "HEAD")) {
                ret->content_type = "application/x-ndjson";
                return http_response_set_text(ret, 200, "");
        }
        ret->takeover = takeover_trace;
        ret->takeover_userdata = h;
        return 0;
}

void admin_peer_address(int fd, char *buf, size_t size) {
        SockAddr a;
        socklen_t len = sizeof(a);

        if (size == 0)
                return;
        buf[0] = '\0';
        if (fd < 0 || getpeername(fd, &a.sa, &len) < 0)
                return;
        if (!sock_addr_to_string(&a, len, buf, size))
                buf[0] = '\0';
}

int daemon_health_init(DaemonHealth *h, sd_event *e) {
        h->registry = metrics_registry_new();
        if (!h->registry)
                return log_oom();
        trace_hub_init(&h->trace, e);
        admin_state_init(&h->admin_state);
        return 0;
}

int daemon_health_listen(DaemonHealth *h, sd_event *e, const char *health_bind, int64_t health_port,
                         http_handler_t on_health, const char *admin_bind, int64_t admin_port,
                         const char *admin_socket, http_handler_t on_admin, void *userdata) {
        int r;

        r = daemon_listen_http(e, "health", health_bind, health_port, on_health, userdata, &h->health);
        if (r < 0)
                return r;
        r = daemon_listen_http(e, "admin", admin_bind, admin_port, on_admin, userdata, &h->admin);
        if (r < 0)
                return r;
        return admin_listen_unix(&h->admin_state, e, admin_socket, on_admin, userdata);
}

void daemon_health_done(DaemonHealth *h) {
        h->health = http_server_free(h->health);
        h->admin = http_server_free(h->admin);
        trace_hub_done(&h->trace);
        admin_state_done(&h->admin_state);
        h->registry = metrics_registry_free(h->registry);
}

void daemon_health_event(DaemonHealth *h, const TraceEvent *ev) {
        admin_count_event(&h->admin_state, ev);
        if (ev->type == TRACE_CLOSED) {
                h->closed_bytes_in += ev->bytes_in;
                h->closed_bytes_out += ev->bytes_out;
        }
        trace_publish(&h->trace, ev);
}
