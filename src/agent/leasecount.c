/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "kubeclient.h"
#include "kubeconfig.h"
#include "kubeobj.h"
#include "leasecount.h"
#include "log.h"
#include "manager.h"
#include "metrics.h"

struct LeaseCounter {
        Manager *manager;
        KubeConfig *config;
        KubeClient *client;
        sd_event_source *timer;
        KubeRequest *req;
        char *path;
        char *last_error;
        Metric *lists_total, *watches_total, *list_latency;
};

static int64_t realtime_usec(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * (int64_t) USEC_PER_SEC + ts.tv_nsec / 1000;
}

static void on_list(const KubeResponse *r, void *userdata) {
        LeaseCounter *lc = userdata;
        Manager *m = lc->manager;
        _cleanup_free_ char *msg = NULL, *err = NULL;
        KubeLease *l = NULL;
        size_t n = 0, valid = 0;
        int64_t now = realtime_usec();
        char code[16];

        lc->req = NULL;
        (void) snprintf(code, sizeof(code), "%ld", r->error < 0 ? 0L : r->status);
        metric_observe(lc->list_latency, (const char *const[]){ code }, (double) r->duration_usec / 1e6);
        if (r->error >= 0 && r->status == 200 && kube_lease_list_parse(r->body, r->body_len, &l, &n) >= 0) {
                metric_add(lc->lists_total, (const char *const[]){ code, "" }, 1);
                for (size_t i = 0; i < n; i++)
                        if (kube_lease_valid(&l[i], now))
                                valid++;
                kube_lease_list_free(l, n);
                if (lc->last_error) {
                        log_info("Listing server leases works again.");
                        lc->last_error = mfree(lc->last_error);
                }
                manager_set_lease_count(m, valid > 0 ? (int64_t) valid : 1);
                return;
        }
        /* Keep the last good count (§3.4). */
        if (r->error < 0) {
                metric_add(lc->lists_total, (const char *const[]){ code, "transport" }, 1);
                (void) asprintf(&err, "%s", r->reason ?: strerror(-r->error));
        } else {
                msg = kube_status_message(r->body, r->body_len);
                metric_add(lc->lists_total, (const char *const[]){ code, r->status == 200 ? "malformed" : "error" }, 1);
                (void) asprintf(&err, "HTTP %ld%s%s", r->status, msg ? ": " : "", msg ?: "");
        }
        if (err && !streq_ptr(err, lc->last_error))
                log_warning("Listing server leases failed, keeping the last count (%" PRIi64 "): %s",
                            m->lease_count, err);
        if (err) {
                free(lc->last_error);
                lc->last_error = TAKE_PTR(err);
        }
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        LeaseCounter *lc = userdata;
        const AgentConfig *c = lc->manager->config;
        KubeRequestSpec spec = {
                .method = "GET",
                .path = lc->path,
                .timeout_usec = c->kube_api_timeout_usec,
                .max_body = 4 * MIB,
                .max_attempts = 2,
        };
        int r;

        (void) sd_event_source_set_time_relative(s, c->lease_count_interval_usec);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ON);
        if (lc->req || lc->manager->draining)
                return 0;
        r = kube_request(lc->client, &spec, on_list, lc, &lc->req);
        if (r < 0)
                log_warning_errno(r, "Cannot list server leases: %m");
        return 0;
}

int lease_counter_new(Manager *m, LeaseCounter **ret) {
        static const char *const code_reason[] = { "http_response_code", "reason", NULL };
        static const char *const code[] = { "http_response_code", NULL };
        static const double buckets[] = { 0.005, 0.025, 0.1, 0.5, 2.5, 10, 30 };
        const AgentConfig *c = m->config;
        MetricsRegistry *reg = m->health.registry;
        _cleanup_free_ char *error = NULL, *sel = NULL;
        LeaseCounter *lc;
        int r;

        lc = calloc(1, sizeof(*lc));
        if (!lc)
                return -ENOMEM;
        lc->manager = m;
        r = kube_config_load(c->kubeconfig, c->kubeconfig_allow_insecure, &lc->config, &error);
        if (r < 0) {
                log_error("%s", error ?: "Out of memory.");
                lease_counter_free(lc);
                return r;
        }
        r = kube_client_new(m->event, lc->config, &lc->client, &error);
        if (r < 0) {
                lease_counter_free(lc);
                return r;
        }
        sel = kube_url_escape(c->lease_label_selector ?: "");
        if (!sel || asprintf(&lc->path, "/apis/coordination.k8s.io/v1/namespaces/%s/leases%s%s", c->lease_namespace,
                             *sel ? "?labelSelector=" : "", sel) < 0) {
                lease_counter_free(lc);
                return -ENOMEM;
        }
        lc->lists_total = metric_new(reg, METRIC_COUNTER, METRICS_NAMESPACE "_agent_lease_lists_total",
                                     "Count of server lease list calls made by the server counter, labeled by HTTP "
                                     "response code and reason.",
                                     code_reason, NULL, 0);
        lc->watches_total = metric_new(reg, METRIC_COUNTER, METRICS_NAMESPACE "_agent_lease_watches_total",
                                       "Count of server lease watch calls made by the server counter, labeled by "
                                       "HTTP response code and reason.",
                                       code_reason, NULL, 0);
        lc->list_latency = metric_new(reg, METRIC_HISTOGRAM, METRICS_NAMESPACE "_agent_lease_list_latency_seconds",
                                      "Latency of server lease list calls made by the server counter in seconds.",
                                      code, buckets, ELEMENTSOF(buckets));
        r = sd_event_add_time_relative(m->event, &lc->timer, CLOCK_MONOTONIC, 0, 0, on_tick, lc);
        if (r < 0) {
                lease_counter_free(lc);
                return r;
        }
        (void) sd_event_source_set_description(lc->timer, "lease-counter");
        log_info("Counting servers from Leases in namespace '%s' matching '%s' (%s, %s).", c->lease_namespace,
                 c->lease_label_selector ?: "", lc->config->server, lc->config->origin);
        *ret = lc;
        return 0;
}

LeaseCounter *lease_counter_free(LeaseCounter *lc) {
        if (!lc)
                return NULL;
        kube_request_cancel(lc->req);
        kube_client_free(lc->client);
        kube_config_free(lc->config);
        sd_event_source_disable_unref(lc->timer);
        free(lc->path);
        free(lc->last_error);
        free(lc);
        return NULL;
}

int lease_counter_reload(LeaseCounter *lc) {
        const AgentConfig *c = lc->manager->config;
        _cleanup_free_ char *error = NULL;
        KubeConfig *kc = NULL;
        int r;

        r = kube_config_load(c->kubeconfig, c->kubeconfig_allow_insecure, &kc, &error);
        if (r < 0) {
                log_error("Reloading the kubeconfig failed, keeping the running one: %s", error ?: "out of memory");
                return r;
        }
        kube_client_set_config(lc->client, kc);
        kube_config_free(lc->config);
        lc->config = kc;
        {
                _cleanup_free_ char *sel = kube_url_escape(c->lease_label_selector ?: ""), *path = NULL;
                if (sel && asprintf(&path, "/apis/coordination.k8s.io/v1/namespaces/%s/leases%s%s",
                                    c->lease_namespace, *sel ? "?labelSelector=" : "", sel) >= 0) {
                        free(lc->path);
                        lc->path = TAKE_PTR(path);
                }
        }
        return 0;
}
