/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <strings.h>

#include "daemon.h"
#include "health.h"
#include "log.h"
#include "manager.h"
#include "serverconn.h"

static void update_gauges(Manager *m) {
        metric_set(m->metrics.open_server_connections, NULL, m->n_ready);
        metric_set(m->metrics.known_server_count, NULL, (double) m->server_count);
        metric_set(m->metrics.open_endpoint_connections, NULL, (double) manager_n_endpoints(m));
        for (unsigned i = 0; i < m->n_listeners; i++) {
                size_t n = 0;
                for (ServerConn *sc = m->conns; sc; sc = sc->conns_next)
                        for (ReverseConn *rc = sc->rconns; rc && !sc->dead; rc = rc->rconns_next)
                                if (rc->listener == &m->listeners[i])
                                        n++;
                metric_set(m->reverse_open, (const char *const[]){ m->listeners[i].name }, (double) n);
        }
}

static bool query_has(const char *query, const char *key) {
        size_t n = strlen(key);

        for (const char *p = query; p && *p;) {
                if (strncmp(p, key, n) == 0 && (p[n] == '\0' || p[n] == '&' || p[n] == '='))
                        return true;
                p = strchr(p, '&');
                p = p ? p + 1 : NULL;
        }
        return false;
}

/* /readyz as upstream's healthz handler: checks "ping" and "server-connected". */
static int respond_ready(Manager *m, const HttpRequest *req, HttpResponse *ret) {
        bool ok = m->n_ready > 0, verbose = query_has(req->query, "verbose");

        if (ok)
                return http_response_set_text(ret, 200, verbose ? "[+]ping ok\n[+]server-connected ok\nreadyz check passed\n"
                                                                : "ok");
        return http_response_set_text(ret, 503, "[+]ping ok\n[-]server-connected failed: no servers connected\n"
                                                "readyz check failed\n");
}

static int on_health(const HttpRequest *req, HttpResponse *ret, void *userdata) {
        Manager *m = userdata;
        size_t len;
        int r;

        if (streq(req->path, "/healthz") || streq(req->path, "/livez"))
                return http_response_set_text(ret, 200, "ok");
        if (streq(req->path, "/readyz") || streq(req->path, "/ready"))
                return respond_ready(m, req, ret);
        if (streq(req->path, "/metrics")) {
                update_gauges(m);
                r = metrics_render(m->health.registry, &ret->body, &len);
                if (r < 0)
                        return r;
                ret->status = 200;
                ret->body_len = len;
                ret->content_type = METRICS_CONTENT_TYPE;
                return 0;
        }
        return http_response_set_text(ret, 404, "404 page not found\n");
}

/* The agent's admin port redirects /metrics to the health port, on the host the client used (§9.1). */
static int on_admin(const HttpRequest *req, HttpResponse *ret, void *userdata) {
        Manager *m = userdata;
        static char location[512];
        char host[256] = "127.0.0.1";

        if (!streq(req->path, "/metrics"))
                return http_response_set_text(ret, 404, "404 page not found\n");
        if (req->host && *req->host) {
                const char *colon = strrchr(req->host, ':'), *bracket = strrchr(req->host, ']');
                size_t n = colon && (!bracket || colon > bracket) ? (size_t) (colon - req->host) : strlen(req->host);
                (void) snprintf(host, sizeof(host), "%.*s", (int) MIN(n, sizeof(host) - 1), req->host);
        }
        (void) snprintf(location, sizeof(location), "http://%s:%" PRIi64 "/metrics", host,
                        m->config->health_server_port);
        ret->location = location;
        return http_response_set_text(ret, 301, "");
}


int agent_health_init(Manager *m) {
        int r;

        m->health.registry = metrics_registry_new();
        if (!m->health.registry)
                return log_oom();
        r = agent_metrics_init(m->health.registry, &m->metrics);
        if (r < 0)
                return log_error_errno(r, "Failed to set up metrics: %m");
        /* konn's own families (node → control plane); upstream's are unchanged. */
        m->reverse_total = metric_new(m->health.registry, METRIC_COUNTER, "konn_agent_reverse_connections_total",
                                      "Node to control plane connections accepted on the reverse listeners, by "
                                      "listener name and result (established, refused, unsupported, no_server).",
                                      (const char *const[]){ "name", "result", NULL }, NULL, 0);
        m->reverse_open = metric_new(m->health.registry, METRIC_GAUGE, "konn_agent_reverse_open_connections",
                                     "Node to control plane connections open now, by listener name.",
                                     (const char *const[]){ "name", NULL }, NULL, 0);
        metrics_add_process_collector(m->health.registry);
        return 0;
}

int agent_health_start(Manager *m) {
        const AgentConfig *c = m->config;
        int r;

        r = daemon_listen_http(m->event, "health", c->health_server_host, c->health_server_port, on_health, m, &m->health.health);
        if (r < 0)
                return r;
        return daemon_listen_http(m->event, "admin", c->admin_bind_address, c->admin_server_port, on_admin, m, &m->health.admin);
}

void agent_health_done(Manager *m) {
        m->health.health = http_server_free(m->health.health);
        m->health.admin = http_server_free(m->health.admin);
        m->health.registry = metrics_registry_free(m->health.registry);
}
