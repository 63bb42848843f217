/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "kubeclient.h"
#include "kubeobj.h"
#include "lease.h"
#include "log.h"
#include "manager.h"
#include "metrics.h"

#define LEASE_API "/apis/coordination.k8s.io/v1/namespaces/"
#define GC_DELETES_MAX 64
#define STEPS_PER_TICK 4
#define STOP_TIMEOUT_USEC (3 * USEC_PER_SEC)

typedef enum LeaseStep {
        STEP_IDLE,
        STEP_GET,
        STEP_CREATE,
        STEP_UPDATE,
        STEP_LIST,
} LeaseStep;

struct LeaseController {
        Manager *manager;
        char *name, *ns, *labels, *holder, *selector_escaped;
        char *rv;              /* resourceVersion of our Lease as last seen */
        int64_t acquire_usec;
        sd_event_source *timer;
        KubeRequest *req;      /* the renewal/list step in flight */
        LeaseStep step;
        unsigned steps;        /* in this tick (bounded) */
        struct LeaseDelete {
                LeaseController *lc;
                KubeRequest *req;
                char *name;
        } del[GC_DELETES_MAX];
        bool stopping, renewed_once;
        char *last_error;
        void (*stop_done)(void *userdata);
        void *stop_userdata;
        Metric *culled, *delete_latency, *delete_total, *list_latency, *list_total;
};

static int64_t realtime_usec(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * (int64_t) USEC_PER_SEC + ts.tv_nsec / 1000;
}

static void status_code(const KubeResponse *r, char buf[static 16]) {
        (void) snprintf(buf, 16, "%ld", r->error < 0 ? 0L : r->status);
}

/* Kubernetes' reason for an error response ("Conflict", "NotFound", ...), "" on success. */
static const char *reason_of(const KubeResponse *r) {
        if (r->error < 0)
                return "transport";
        switch (r->status) {
        case 200:
        case 201:
                return "";
        case 404:
                return "NotFound";
        case 409:
                return "Conflict";
        case 401:
                return "Unauthorized";
        case 403:
                return "Forbidden";
        case 422:
                return "Invalid";
        case 429:
                return "TooManyRequests";
        default:
                return r->status >= 500 ? "InternalError" : "Unknown";
        }
}

static void note_error(LeaseController *lc, const char *what, const KubeResponse *r) {
        _cleanup_free_ char *msg = NULL, *line = NULL;

        if (r->error >= 0)
                msg = kube_status_message(r->body, r->body_len);
        if (r->error < 0)
                (void) asprintf(&line, "%s failed: %s", what, r->reason ?: strerror(-r->error));
        else
                (void) asprintf(&line, "%s failed: HTTP %ld%s%s", what, r->status, msg ? ": " : "", msg ?: "");
        if (!line)
                return;
        if (!streq_ptr(lc->last_error, line))
                log_warning("Lease controller: %s", line);
        free(lc->last_error);
        lc->last_error = TAKE_PTR(line);
}

static void note_ok(LeaseController *lc) {
        if (lc->last_error) {
                log_info("Lease controller: lease '%s' renewed again.", lc->name);
                lc->last_error = mfree(lc->last_error);
        }
}

static void on_step(const KubeResponse *r, void *userdata);

static int request(LeaseController *lc, LeaseStep step, const char *method, const char *path, const char *body) {
        KubeRequestSpec spec = {
                .method = method,
                .path = path,
                .body = body,
                .timeout_usec = lc->manager->config->kube_api_timeout_usec,
                .max_body = 4 * MIB,
                /* GET and LIST are idempotent; create and update carry their own preconditions. */
                .max_attempts = streq(method, "GET") ? 2 : 1,
        };
        int r;

        lc->step = step;
        lc->steps++;
        r = kube_request(lc->manager->kube, &spec, on_step, lc, &lc->req);
        if (r < 0) {
                lc->step = STEP_IDLE;
                lc->req = NULL;
                log_warning_errno(r, "Lease controller: cannot start a request: %m");
        }
        return r;
}

static int own_path(LeaseController *lc, char **ret) {
        return asprintf(ret, LEASE_API "%s/leases/%s", lc->ns, lc->name) < 0 ? -ENOMEM : 0;
}

static void do_get(LeaseController *lc) {
        _cleanup_free_ char *p = NULL;
        if (own_path(lc, &p) >= 0)
                (void) request(lc, STEP_GET, "GET", p, NULL);
}

static void do_create(LeaseController *lc) {
        _cleanup_free_ char *p = NULL, *body = NULL;
        int64_t now = realtime_usec();

        lc->acquire_usec = now;
        if (asprintf(&p, LEASE_API "%s/leases", lc->ns) < 0 ||
            kube_lease_build(lc->ns, lc->name, lc->holder, (int64_t) (lc->manager->config->lease_duration_usec / USEC_PER_SEC), lc->labels, now, now, NULL, &body) < 0)
                return;
        (void) request(lc, STEP_CREATE, "POST", p, body);
}

static void do_update(LeaseController *lc) {
        _cleanup_free_ char *p = NULL, *body = NULL;
        int64_t now = realtime_usec();

        if (own_path(lc, &p) < 0 ||
            kube_lease_build(lc->ns, lc->name, lc->holder, (int64_t) (lc->manager->config->lease_duration_usec / USEC_PER_SEC), lc->labels,
                             lc->acquire_usec ?: now, now, lc->rv, &body) < 0)
                return;
        (void) request(lc, STEP_UPDATE, "PUT", p, body);
}

static void do_list(LeaseController *lc) {
        _cleanup_free_ char *p = NULL;

        if (asprintf(&p, LEASE_API "%s/leases?labelSelector=%s", lc->ns, lc->selector_escaped) < 0)
                return;
        (void) request(lc, STEP_LIST, "GET", p, NULL);
}

static void on_delete(const KubeResponse *r, void *userdata);

static void gc(LeaseController *lc, const KubeResponse *r) {
        KubeLease *l = NULL;
        size_t n = 0;
        int64_t now = realtime_usec();

        if (kube_lease_list_parse(r->body, r->body_len, &l, &n) < 0) {
                log_warning("Lease controller: malformed LeaseList from the API server.");
                return;
        }
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *p = NULL, *body = NULL;
                unsigned slot = GC_DELETES_MAX;
                KubeRequestSpec spec = {
                        .method = "DELETE",
                        .timeout_usec = lc->manager->config->kube_api_timeout_usec,
                        .max_body = 64 * KIB,
                        .max_attempts = 1,
                };

                if (streq(l[i].name, lc->name) || kube_lease_valid(&l[i], now) || !l[i].resource_version)
                        continue;
                for (unsigned k = 0; k < GC_DELETES_MAX; k++)
                        if (lc->del[k].name && streq(lc->del[k].name, l[i].name)) {
                                slot = GC_DELETES_MAX; /* already being deleted */
                                break;
                        } else if (!lc->del[k].req && slot == GC_DELETES_MAX)
                                slot = k;
                if (slot == GC_DELETES_MAX)
                        continue;
                if (asprintf(&p, LEASE_API "%s/leases/%s", lc->ns, l[i].name) < 0 ||
                    asprintf(&body,
                             "{\"kind\":\"DeleteOptions\",\"apiVersion\":\"v1\",\"preconditions\":"
                             "{\"resourceVersion\":\"%s\"}}",
                             l[i].resource_version) < 0)
                        break;
                spec.path = p;
                spec.body = body;
                lc->del[slot].lc = lc;
                lc->del[slot].name = strdup(l[i].name);
                if (!lc->del[slot].name)
                        break;
                if (kube_request(lc->manager->kube, &spec, on_delete, &lc->del[slot], &lc->del[slot].req) < 0) {
                        lc->del[slot].name = mfree(lc->del[slot].name);
                        lc->del[slot].req = NULL;
                        continue;
                }
                log_info("Lease controller: deleting expired lease '%s' (holder '%s').", l[i].name,
                         l[i].holder ?: "");
        }
        kube_lease_list_free(l, n);
}

static void on_delete(const KubeResponse *r, void *userdata) {
        struct LeaseDelete *d = userdata;
        LeaseController *lc = d->lc;
        char code[16];

        status_code(r, code);
        metric_observe(lc->delete_latency, (const char *const[]){ code }, (double) r->duration_usec / 1e6);
        metric_add(lc->delete_total, (const char *const[]){ code, reason_of(r) }, 1);
        if (r->error >= 0 && r->status == 200) {
                metric_add(lc->culled, NULL, 1);
                log_info("Lease controller: deleted expired lease '%s'.", d->name);
        } else if (r->error >= 0 && r->status == 409)
                log_info("Lease controller: lease '%s' was renewed meanwhile; kept.", d->name);
        else if (r->error >= 0 && r->status == 404)
                log_debug("Lease controller: lease '%s' is already gone.", d->name);
        else
                note_error(lc, "deleting an expired lease", r);
        d->req = NULL;
        d->name = mfree(d->name);
}

static void on_step(const KubeResponse *r, void *userdata) {
        LeaseController *lc = userdata;
        LeaseStep step = lc->step;
        bool more = lc->steps < STEPS_PER_TICK;
        KubeLease l = {};
        char code[16];

        lc->req = NULL;
        lc->step = STEP_IDLE;
        switch (step) {
        case STEP_GET:
                if (r->error >= 0 && r->status == 404) {
                        if (more)
                                do_create(lc);
                        return;
                }
                if (r->error >= 0 && r->status == 200 && kube_lease_parse(r->body, r->body_len, &l) >= 0) {
                        free(lc->rv);
                        lc->rv = TAKE_PTR(l.resource_version);
                        if (!lc->acquire_usec)
                                lc->acquire_usec = l.acquire_usec;
                        kube_lease_done(&l);
                        if (more)
                                do_update(lc);
                        return;
                }
                note_error(lc, "reading our lease", r);
                return;
        case STEP_CREATE:
        case STEP_UPDATE:
                if (r->error >= 0 && (r->status == 200 || r->status == 201) &&
                    kube_lease_parse(r->body, r->body_len, &l) >= 0) {
                        free(lc->rv);
                        lc->rv = TAKE_PTR(l.resource_version);
                        kube_lease_done(&l);
                        if (!lc->renewed_once)
                                log_info("Lease controller: holding lease '%s' in namespace '%s' (labels %s).",
                                         lc->name, lc->ns, lc->labels);
                        lc->renewed_once = true;
                        note_ok(lc);
                        do_list(lc);
                        return;
                }
                if (r->error >= 0 && (r->status == 409 || r->status == 404)) {
                        /* Someone changed or removed it (or it exists already): read it again. */
                        lc->rv = mfree(lc->rv);
                        if (more)
                                do_get(lc);
                        return;
                }
                note_error(lc, step == STEP_CREATE ? "creating our lease" : "renewing our lease", r);
                return;
        case STEP_LIST:
                status_code(r, code);
                metric_observe(lc->list_latency, (const char *const[]){ code }, (double) r->duration_usec / 1e6);
                metric_add(lc->list_total, (const char *const[]){ code, reason_of(r) }, 1);
                if (r->error >= 0 && r->status == 200)
                        gc(lc, r);
                else
                        note_error(lc, "listing leases", r);
                return;
        case STEP_IDLE:
                return;
        }
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        LeaseController *lc = userdata;

        (void) sd_event_source_set_time_relative(s, lc->manager->config->lease_renew_interval_usec);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ON);
        if (lc->stopping || lc->req)
                return 0; /* the previous tick is still at work (slow API server): skip this one */
        lc->steps = 0;
        if (lc->rv)
                do_update(lc);
        else
                do_get(lc);
        return 0;
}

int lease_controller_new(Manager *m, LeaseController **ret) {
        static const char *const code_label[] = { "http_status_code", NULL };
        static const char *const code_reason_labels[] = { "http_status_code", "reason", NULL };
        static const double buckets[] = { 0.005, 0.025, 0.1, 0.5, 2.5, 10, 30 };
        const ServerConfig *c = m->config;
        MetricsRegistry *reg = m->health.registry;
        LeaseController *lc;
        int r;

        lc = calloc(1, sizeof(*lc));
        if (!lc)
                return -ENOMEM;
        lc->manager = m;
        lc->ns = strdup(c->lease_namespace);
        lc->labels = strdup(c->lease_label);
        lc->holder = strdup(c->server_id);
        lc->selector_escaped = kube_url_escape(c->lease_label);
        if (!lc->ns || !lc->labels || !lc->holder || !lc->selector_escaped ||
            asprintf(&lc->name, LEASE_NAME_PREFIX "%s", c->server_id) < 0) {
                lease_controller_free(lc);
                return -ENOMEM;
        }
        lc->culled = metric_new(reg, METRIC_COUNTER, METRICS_NAMESPACE "_server_culled_leases_count",
                                "Count of expired leases that the lease garbage collection controller has culled.",
                                NULL, NULL, 0);
        lc->delete_latency = metric_new(reg, METRIC_HISTOGRAM, METRICS_NAMESPACE "_server_lease_delete_latency_seconds",
                                        "Latency of lease deletion calls by the garbage collection controller in "
                                        "seconds.",
                                        code_label, buckets, ELEMENTSOF(buckets));
        lc->delete_total = metric_new(reg, METRIC_COUNTER, METRICS_NAMESPACE "_server_lease_delete_total",
                                      "Count of lease deletion calls by the garbage collection controller. Labeled "
                                      "by HTTP status code and reason.",
                                      code_reason_labels, NULL, 0);
        lc->list_latency = metric_new(reg, METRIC_HISTOGRAM, METRICS_NAMESPACE "_server_lease_list_latency_seconds",
                                      "Latency of lease list calls by the garbage collection controller in seconds.",
                                      code_label, buckets, ELEMENTSOF(buckets));
        lc->list_total = metric_new(reg, METRIC_COUNTER, METRICS_NAMESPACE "_server_lease_list_total",
                                    "Count of lease list calls made by the garbage collection controller. Labeled "
                                    "by HTTP status code and reason.",
                                    code_reason_labels, NULL, 0);
        metric_touch(lc->culled, NULL);
        r = sd_event_add_time_relative(m->event, &lc->timer, CLOCK_MONOTONIC, 0, 0, on_tick, lc);
        if (r < 0) {
                lease_controller_free(lc);
                return r;
        }
        (void) sd_event_source_set_description(lc->timer, "lease-controller");
        *ret = lc;
        return 0;
}

LeaseController *lease_controller_free(LeaseController *lc) {
        if (!lc)
                return NULL;
        kube_request_cancel(lc->req);
        for (unsigned k = 0; k < GC_DELETES_MAX; k++) {
                kube_request_cancel(lc->del[k].req);
                free(lc->del[k].name);
        }
        sd_event_source_disable_unref(lc->timer);
        free(lc->name);
        free(lc->ns);
        free(lc->labels);
        free(lc->holder);
        free(lc->selector_escaped);
        free(lc->rv);
        free(lc->last_error);
        free(lc);
        return NULL;
}

static void on_stopped(const KubeResponse *r, void *userdata) {
        LeaseController *lc = userdata;

        lc->req = NULL;
        if (r->error >= 0 && (r->status == 200 || r->status == 404))
                log_info("Lease controller: deleted our lease '%s'.", lc->name);
        else
                note_error(lc, "deleting our lease", r);
        lc->stop_done(lc->stop_userdata);
}

int lease_controller_stop(LeaseController *lc, void (*done)(void *userdata), void *userdata) {
        _cleanup_free_ char *p = NULL;
        KubeRequestSpec spec = {
                .method = "DELETE",
                .timeout_usec = MIN(lc->manager->config->kube_api_timeout_usec, STOP_TIMEOUT_USEC),
                .max_body = 64 * KIB,
                .max_attempts = 1,
        };
        int r;

        lc->stopping = true;
        (void) sd_event_source_set_enabled(lc->timer, SD_EVENT_OFF);
        kube_request_cancel(lc->req);
        lc->req = NULL;
        if (own_path(lc, &p) < 0)
                return -ENOMEM;
        spec.path = p;
        lc->stop_done = done;
        lc->stop_userdata = userdata;
        r = kube_request(lc->manager->kube, &spec, on_stopped, lc, &lc->req);
        if (r < 0)
                return r;
        log_info("Lease controller: deleting our lease '%s' before stopping.", lc->name);
        return 0;
}
