/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "backend.h"
#include "daemon.h"
#include "health.h"
#include "jsonw.h"
#include "log.h"
#include "manager.h"
#include "reverse.h"
#include "tunnel.h"

/* Ready ⇔ the first strategy has at least one agent (§9.1): "default" needs any, "defaultRoute" one with the
 * default-route identifier, "destHost" one with a host identifier. */
bool server_ready(Manager *m) {
        const char *first = m->config->proxy_strategies ? m->config->proxy_strategies[0] : "default";

        for (Backend *b = m->backends; b; b = b->backends_next) {
                if (streq_ptr(first, "defaultRoute") && !b->default_route)
                        continue;
                if (streq_ptr(first, "destHost") && !(b->hosts && b->hosts[0]))
                        continue;
                return true;
        }
        return false;
}

/* Gauges are read off the live state when scraped, so they can never drift. */
static void update_gauges(Manager *m) {
        ServerMetrics *sm = &m->metrics;
        unsigned agents = 0, pending = 0, established = 0, http = 0, proxy = 0, direct = 0;

        for (Backend *b = m->backends; b; b = b->backends_next) {
                if (!b->superseded)
                        agents++;
                pending += b->n_pending;
                established += (unsigned) idmap_size(b->tunnels);
        }
        for (Tunnel *t = m->tunnels; t; t = t->tunnels_next) {
                if (t->direct && t->state == TUNNEL_ESTABLISHED)
                        direct++;
                if (t->kind == TUNNEL_CONNECT)
                        http++;
                else if (t->fcall)
                        proxy++;
        }
        metric_set(sm->grpc_connections, (const char *const[]){ "Connect" }, m->n_backends);
        metric_set(sm->grpc_connections, (const char *const[]){ "Proxy" }, proxy);
        metric_set(sm->http_connections, NULL, http);
        metric_set(sm->ready_backend_connections, NULL, agents);
        metric_set(sm->pending_backend_dials, NULL, pending);
        metric_set(sm->established_connections, NULL, established);
        if (m->n_direct_cidrs > 0)
                metric_set(m->direct_connections, NULL, direct);
        for (size_t i = 0; i < m->n_reverse_dests; i++) {
                unsigned n = 0;
                for (ReverseStream *rs = m->rstreams; rs; rs = rs->rstreams_next)
                        if (streq(rs->name, m->reverse_dests[i].name))
                                n++;
                metric_set(m->reverse_open, (const char *const[]){ m->reverse_dests[i].name }, n);
        }
        for (char **st = m->config->proxy_strategies; st && *st; st++) {
                unsigned n = 0;
                for (Backend *b = m->backends; b; b = b->backends_next) {
                        if (b->superseded)
                                continue;
                        if (streq(*st, "default") || (streq(*st, "defaultRoute") && b->default_route) ||
                            (streq(*st, "destHost") && b->hosts && b->hosts[0]))
                                n++;
                }
                metric_set(sm->ready_backends, (const char *const[]){ *st }, n);
        }
}

static int respond_metrics(Manager *m, HttpResponse *ret) {
        size_t len;
        int r;

        update_gauges(m);
        r = metrics_render(m->health.registry, &ret->body, &len);
        if (r < 0)
                return r;
        ret->status = 200;
        ret->body_len = len;
        ret->content_type = METRICS_CONTENT_TYPE;
        return 0;
}

static int on_health(const HttpRequest *req, HttpResponse *ret, void *userdata) {
        Manager *m = userdata;

        if (streq(req->path, "/healthz") || streq(req->path, "/livez"))
                return http_response_set_text(ret, 200, "ok");
        if (streq(req->path, "/readyz") || streq(req->path, "/ready")) {
                /* Fail closed (token authentication): while TokenReviews cannot be done, new agents are refused;
                 * say so rather than "ok". */
                if (auth_unavailable(m)) {
                        _cleanup_free_ char *t = NULL;
                        if (asprintf(&t, "token authentication unavailable: %s", auth_unavailable(m)) < 0)
                                return -ENOMEM;
                        return http_response_set_text(ret, 500, t);
                }
                return server_ready(m) ? http_response_set_text(ret, 200, "ok")
                                       : http_response_set_text(ret, 500, "no connection to any proxy agent");
        }
        if (streq(req->path, "/metrics"))
                return respond_metrics(m, ret);
        return http_response_set_text(ret, 404, "404 page not found\n");
}

/* Legacy /agents and /tunnels (kept as they were; new fields go to /v1 only). */
static int respond_json(Manager *m, bool tunnels, HttpResponse *ret) {
        uint64_t now = now_usec();
        size_t len = 0;
        char *buf = NULL;
        bool first = true;
        FILE *f;

        f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;
        fputs("[", f);
        if (!tunnels)
                for (Backend *b = m->backends; b; b = b->backends_next) {
                        fputs(first ? "\n  {\"id\": " : ",\n  {\"id\": ", f);
                        first = false;
                        jsonw_string(f, b->agent_id);
                        fputs(", \"identifiers\": ", f);
                        jsonw_string(f, b->identifiers);
                        fputs(", \"peer\": ", f);
                        jsonw_string(f, b->peer);
                        fprintf(f, ", \"since\": %" PRIu64 ", \"draining\": %s, \"tunnel_streams\": %s, "
                                "\"tunnels\": %zu, \"pending_dials\": %u, \"reverse\": %s, \"reverse_connections\": %u}",
                                b->since_usec / USEC_PER_SEC, b->draining ? "true" : "false",
                                b->tunnel_streams ? "true" : "false", idmap_size(b->tunnels), b->n_pending,
                                b->reverse ? "true" : "false", b->n_rstreams);
                }
        else
                for (Tunnel *t = m->tunnels; t; t = t->tunnels_next) {
                        fprintf(f, "%s  {\"dial_id\": %" PRIi64 ", \"connect_id\": %" PRIi64 ", \"frontend\": \"%s\", "
                                "\"state\": \"%s\", \"destination\": ",
                                first ? "\n" : ",\n", t->dial_id, t->connect_id, tunnel_frontend_name(t),
                                tunnel_state_name(t));
                        first = false;
                        jsonw_string(f, t->dest);
                        fputs(", \"direction\": \"forward\", \"route\": ", f);
                        fputs(t->direct ? "\"direct\"" : "\"agent\"", f);
                        fputs(", \"agent\": ", f);
                        jsonw_string(f, t->backend ? t->backend->agent_id : NULL);
                        fprintf(f, ", \"age_seconds\": %.3f, \"bytes_in\": %" PRIu64 ", \"bytes_out\": %" PRIu64 "}",
                                (double) (now - t->start_usec) / USEC_PER_SEC, tunnel_bytes_in(t), tunnel_bytes_out(t));
                }
        if (tunnels)
                for (ReverseStream *rs = m->rstreams; rs; rs = rs->rstreams_next) {
                        static const char *const rstates[] = { "pending", "established", "closing" };

                        fprintf(f, "%s  {\"dial_id\": 0, \"connect_id\": %" PRIi64 ", \"frontend\": \"agent\", "
                                "\"state\": \"%s\", \"destination\": ",
                                first ? "\n" : ",\n", rs->connect_id, rstates[rs->state]);
                        first = false;
                        jsonw_string(f, rs->dest);
                        fputs(", \"direction\": \"reverse\", \"route\": \"agent\", \"name\": ", f);
                        jsonw_string(f, rs->name);
                        fputs(", \"agent\": ", f);
                        jsonw_string(f, rs->agent_id);
                        fprintf(f, ", \"age_seconds\": %.3f, \"bytes_in\": %" PRIu64 ", \"bytes_out\": %" PRIu64 "}",
                                (double) (now - rs->start_usec) / USEC_PER_SEC,
                                rs->relay_live ? rs->relay.bytes_out : 0, rs->relay_live ? rs->relay.bytes_in : 0);
                }
        fputs(first ? "]\n" : "\n]\n", f);
        return admin_body_finish(f, &buf, &len, ret);
}

/* ---- the versioned admin interface, /v1 (docs/admin-api.md) ---- */

static void v1_agents(void *userdata, FILE *f) {
        Manager *m = userdata;
        bool first = true;

        fputs("{\"agents\": [", f);
        for (Backend *b = m->backends; b; b = b->backends_next) {
                uint64_t in = 0, out = 0;
                char since[32], addr[128] = "";

                for (Tunnel *t = m->tunnels; t; t = t->tunnels_next)
                        if (t->backend == b) {
                                in += tunnel_bytes_in(t);
                                out += tunnel_bytes_out(t);
                        }
                if (b->call)
                        (void) admin_peer_address(h2conn_transport(grpc_call_conn(b->call))->fd, addr, sizeof(addr));
                jsonw_time(since, b->since_usec);
                fputs(first ? "\n  {\"id\": " : ",\n  {\"id\": ", f);
                first = false;
                jsonw_string(f, b->agent_id);
                fputs(", \"identifiers\": ", f);
                jsonw_string(f, b->identifiers);
                fputs(", \"address\": ", f);
                jsonw_string(f, addr);
                fputs(", \"subject\": ", f);
                jsonw_string(f, b->peer);
                fprintf(f, ", \"since\": \"%s\", \"draining\": %s, \"superseded\": %s, \"tunnel_streams\": %s, "
                        "\"tunnels\": %zu, \"pending_dials\": %u, \"bytes_to_destination\": %" PRIu64
                        ", \"bytes_from_destination\": %" PRIu64 "}",
                        since, b->draining ? "true" : "false", b->superseded ? "true" : "false",
                        b->tunnel_streams ? "true" : "false", idmap_size(b->tunnels), b->n_pending, in, out);
        }
        fputs(first ? "]}\n" : "\n]}\n", f);
}

static void v1_tunnels(void *userdata, FILE *f) {
        Manager *m = userdata;
        uint64_t now = now_usec();
        bool first = true;

        fputs("{\"tunnels\": [", f);
        for (Tunnel *t = m->tunnels; t; t = t->tunnels_next) {
                fprintf(f, "%s  {\"dial_id\": %" PRIi64 ", \"connect_id\": %" PRIi64 ", \"frontend\": \"%s\", "
                        "\"state\": \"%s\", \"destination\": ",
                        first ? "\n" : ",\n", t->dial_id, t->connect_id, tunnel_frontend_name(t), tunnel_state_name(t));
                first = false;
                jsonw_string(f, t->dest);
                fprintf(f, ", \"direction\": \"forward\", \"route\": \"%s\", \"agent\": ", t->direct ? "direct" : "agent");
                jsonw_string(f, t->backend ? t->backend->agent_id : NULL);
                fputs(", \"client\": ", f);
                jsonw_string(f, t->peer);
                fprintf(f, ", \"age_seconds\": %.3f, \"bytes_to_destination\": %" PRIu64
                        ", \"bytes_from_destination\": %" PRIu64 "}",
                        (double) (now - t->start_usec) / USEC_PER_SEC, tunnel_bytes_in(t), tunnel_bytes_out(t));
        }
        /* Node to control plane connections (asked for by agents). */
        for (ReverseStream *rs = m->rstreams; rs; rs = rs->rstreams_next) {
                static const char *const rstates[] = { "pending", "established", "closing" };

                fprintf(f, "%s  {\"dial_id\": 0, \"connect_id\": %" PRIi64 ", \"frontend\": \"agent\", "
                        "\"state\": \"%s\", \"destination\": ",
                        first ? "\n" : ",\n", rs->connect_id, rstates[rs->state]);
                first = false;
                jsonw_string(f, rs->dest);
                fputs(", \"direction\": \"reverse\", \"route\": \"agent\", \"name\": ", f);
                jsonw_string(f, rs->name);
                fputs(", \"agent\": ", f);
                jsonw_string(f, rs->agent_id);
                fprintf(f, ", \"client\": \"\", \"age_seconds\": %.3f, \"bytes_to_destination\": %" PRIu64
                        ", \"bytes_from_destination\": %" PRIu64 "}",
                        (double) (now - rs->start_usec) / USEC_PER_SEC, rs->relay_live ? rs->relay.bytes_out : 0,
                        rs->relay_live ? rs->relay.bytes_in : 0);
        }
        fputs(first ? "]}\n" : "\n]}\n", f);
}

static void v1_status(void *userdata, FILE *f) {
        Manager *m = userdata;
        ServerHealth *h = &m->health;
        unsigned agents = 0, pending = 0, established = 0;
        uint64_t in = h->closed_bytes_in, out = h->closed_bytes_out;
        bool ready = server_ready(m);

        for (Backend *b = m->backends; b; b = b->backends_next) {
                if (!b->superseded)
                        agents++;
                pending += b->n_pending;
                established += (unsigned) idmap_size(b->tunnels);
        }
        for (Tunnel *t = m->tunnels; t; t = t->tunnels_next) {
                in += tunnel_bytes_in(t);
                out += tunnel_bytes_out(t);
        }
        fputs("{\"daemon\": \"konn-server\", \"api\": \"v1\", \"version\": \"" PACKAGE_VERSION "\", \"server_id\": ", f);
        jsonw_string(f, m->config->server_id);
        fprintf(f, ", \"server_count\": %" PRIi64 ", ", m->config->server_count);
        admin_write_process(f, &h->admin_state);
        fprintf(f, ", \"ready\": %s, \"ready_reason\": \"%s\", \"stopping\": %s, \"agents\": %u, \"agent_streams\": %u, "
                "\"frontend_connections\": %u, \"tunnels\": {\"established\": %u, \"pending\": %u}, "
                "\"bytes_to_destination\": %" PRIu64 ", \"bytes_from_destination\": %" PRIu64 ", ",
                ready ? "true" : "false", ready ? "" : "no connection to any proxy agent",
                m->stopping ? "true" : "false", agents, m->n_backends, m->n_tunnels, established, pending, in, out);
        admin_write_dials(f, &h->admin_state, &h->trace);
        fputs("}\n", f);
}

static int on_admin(const HttpRequest *req, HttpResponse *ret, void *userdata) {
        Manager *m = userdata;

        if (streq(req->path, "/metrics"))
                return respond_metrics(m, ret);
        if (streq(req->path, "/agents"))
                return respond_json(m, false, ret);
        if (streq(req->path, "/tunnels"))
                return respond_json(m, true, ret);
        if (streq(req->path, "/v1/status"))
                return admin_respond(v1_status, m, ret);
        if (streq(req->path, "/v1/agents"))
                return admin_respond(v1_agents, m, ret);
        if (streq(req->path, "/v1/tunnels"))
                return admin_respond(v1_tunnels, m, ret);
        if (streq(req->path, "/v1/trace"))
                return admin_respond_trace(&m->health.trace, req, ret);
        return http_response_set_text(ret, 404, "404 page not found\n");
}

void server_trace(Manager *m, const TraceEvent *ev) {
        daemon_health_event(&m->health, ev);
}

int server_health_init(Manager *m) {
        int r;

        r = daemon_health_init(&m->health, m->event);
        if (r < 0)
                return r;
        r = server_metrics_init(m->health.registry, &m->metrics, m->config->proxy_strategies);
        if (r < 0)
                return log_error_errno(r, "Failed to set up metrics: %m");
        m->reverse_total = metric_new(m->health.registry, METRIC_COUNTER, "konn_server_reverse_connections_total",
                                      "Node to control plane connections asked for by agents, by destination name "
                                      "and result (established, dial_failed, limit, unknown_name).",
                                      (const char *const[]){ "name", "result", NULL }, NULL, 0);
        m->reverse_open = metric_new(m->health.registry, METRIC_GAUGE, "konn_server_reverse_open_connections",
                                     "Node to control plane connections open now, by destination name.",
                                     (const char *const[]){ "name", NULL }, NULL, 0);
        /* konn's own families for the direct route; upstream's count tunnelled dials only, as upstream does. */
        m->direct_dial_duration = metric_new(m->health.registry, METRIC_HISTOGRAM,
                                             "konn_server_direct_dial_duration_seconds",
                                             "Latency of dials this server made itself (direct-cidrs), in seconds.",
                                             NULL, NULL, 0);
        m->direct_dial_failures = metric_new(m->health.registry, METRIC_COUNTER, "konn_server_direct_dial_failure_count",
                                             "Failed direct dials (direct-cidrs), by reason (error_response, "
                                             "backend_dial_timeout, as the upstream dial_failure_count).",
                                             (const char *const[]){ "reason", NULL }, NULL, 0);
        m->direct_connections = metric_new(m->health.registry, METRIC_GAUGE, "konn_server_direct_connections",
                                           "Established direct connections (direct-cidrs).", NULL, NULL, 0);
        metrics_add_process_collector(m->health.registry);
        /* konn's own family: refusals by the limits of the README's "Limits" section, each label present from
         * the start. */
        m->limit_refusals = metric_new(m->health.registry, METRIC_COUNTER, "konn_server_limit_refusals_total",
                                       "Connections, streams and dials refused by a konn limit, by limit.",
                                       (const char *const[]){ "limit", NULL }, NULL, 0);
        if (!m->limit_refusals)
                return log_oom();
        for (const char *const *l = (const char *const[]){ "agents", "file_descriptors", "frontend_connections",
                                                           "pending_dials", "tunnels_per_agent", NULL };
             *l; l++)
                metric_touch(m->limit_refusals, (const char *const[]){ *l });
        return 0;
}

int server_health_start(Manager *m) {
        const ServerConfig *c = m->config;

        return daemon_health_listen(&m->health, m->event, c->health_bind_address, c->health_port, on_health, c->admin_bind_address,
                                    c->admin_port, c->admin_socket, on_admin, m);
}

void server_health_done(Manager *m) {
        daemon_health_done(&m->health);
}
