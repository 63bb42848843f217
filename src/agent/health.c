/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <strings.h>

#include "daemon.h"
#include "endpoint.h"
#include "health.h"
#include "jsonw.h"
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

static const char *endpoint_state_name(const Endpoint *ep) {
        switch (ep->state) {
        case ENDPOINT_RESOLVING:
        case ENDPOINT_CONNECTING:
                return "pending";
        case ENDPOINT_ESTABLISHED:
                return "established";
        default:
                return "closing";
        }
}

static void v1_servers(void *userdata, FILE *f) {
        Manager *m = userdata;
        static const char *const states[] = { "resolving", "connecting", "handshake", "ready" };
        bool first = true;

        fputs("{\"servers\": [", f);
        for (ServerConn *sc = m->conns; sc; sc = sc->conns_next) {
                uint64_t in = 0, out = 0;
                unsigned pending = 0, established = 0;
                char since[32] = "", addr[SOCK_ADDR_STRING_MAX] = "";
                size_t st = 0;
                void *v;

                if (sc->dead)
                        continue;
                while (idmap_iterate(sc->endpoints, &st, NULL, &v)) {
                        Endpoint *ep = v;
                        if (ep->state == ENDPOINT_ESTABLISHED)
                                established++;
                        else if (ep->state != ENDPOINT_CLOSING)
                                pending++;
                        if (ep->relay_live) {
                                in += ep->relay.bytes_out;
                                out += ep->relay.bytes_in;
                        }
                }
                if (sc->state >= SERVER_CONN_CONNECTING && !sock_addr_to_string(&sc->addr, sc->addr_len, addr, sizeof(addr)))
                        addr[0] = '\0';
                if (sc->since_usec > 0)
                        jsonw_time(since, sc->since_usec);
                fputs(first ? "\n  {\"id\": " : ",\n  {\"id\": ", f);
                first = false;
                jsonw_string(f, sc->server_id);
                fprintf(f, ", \"host\": ");
                jsonw_string(f, sc->host);
                fprintf(f, ", \"port\": %u, \"address\": ", sc->port);
                jsonw_string(f, addr);
                fprintf(f, ", \"state\": \"%s\", \"since\": ", sc->state < ELEMENTSOF(states) ? states[sc->state] : "?");
                if (since[0])
                        fprintf(f, "\"%s\"", since);
                else
                        fputs("null", f);
                fprintf(f, ", \"server_count\": %" PRIi64 ", \"tunnel_streams\": %s, \"draining\": %s, \"tunnels\": %u, "
                        "\"pending_dials\": %u, \"bytes_to_destination\": %" PRIu64 ", \"bytes_from_destination\": %" PRIu64
                        "}",
                        sc->server_count, sc->tunnel_streams ? "true" : "false", m->draining ? "true" : "false",
                        established, pending, in, out);
        }
        fputs(first ? "]}\n" : "\n]}\n", f);
}

static void v1_tunnels(void *userdata, FILE *f) {
        Manager *m = userdata;
        uint64_t now = endpoint_now_usec();
        bool first = true;

        fputs("{\"tunnels\": [", f);
        for (ServerConn *sc = m->conns; sc; sc = sc->conns_next) {
                size_t st = 0;
                void *v;

                while (idmap_iterate(sc->endpoints, &st, NULL, &v)) {
                        Endpoint *ep = v;
                        fprintf(f, "%s  {\"dial_id\": %" PRIi64 ", \"connect_id\": %" PRIi64 ", \"state\": \"%s\", "
                                "\"destination\": ",
                                first ? "\n" : ",\n", ep->dial_id, ep->connect_id, endpoint_state_name(ep));
                        first = false;
                        jsonw_string(f, ep->address);
                        fputs(", \"server\": ", f);
                        jsonw_string(f, sc->server_id);
                        fprintf(f, ", \"age_seconds\": %.3f, \"bytes_to_destination\": %" PRIu64
                                ", \"bytes_from_destination\": %" PRIu64 "}",
                                (double) (now - ep->start_usec) / USEC_PER_SEC, ep->relay_live ? ep->relay.bytes_out : 0,
                                ep->relay_live ? ep->relay.bytes_in : 0);
                }
        }
        fputs(first ? "]}\n" : "\n]}\n", f);
}

static void v1_status(void *userdata, FILE *f) {
        Manager *m = userdata;
        AgentHealth *h = &m->health;
        uint64_t in = h->closed_bytes_in, out = h->closed_bytes_out;
        unsigned pending = 0, established = 0;
        bool ready = m->n_ready > 0;

        for (ServerConn *sc = m->conns; sc; sc = sc->conns_next) {
                size_t st = 0;
                void *v;

                while (idmap_iterate(sc->endpoints, &st, NULL, &v)) {
                        Endpoint *ep = v;
                        if (ep->state == ENDPOINT_ESTABLISHED)
                                established++;
                        else if (ep->state != ENDPOINT_CLOSING)
                                pending++;
                        if (ep->relay_live) {
                                in += ep->relay.bytes_out;
                                out += ep->relay.bytes_in;
                        }
                }
        }
        fputs("{\"daemon\": \"konn-agent\", \"api\": \"v1\", \"version\": \"" PACKAGE_VERSION "\", \"agent_id\": ", f);
        jsonw_string(f, m->config->agent_id);
        fputs(", \"identifiers\": ", f);
        jsonw_string(f, m->config->agent_identifiers);
        fputs(", ", f);
        admin_write_process(f, &h->admin_state);
        fprintf(f, ", \"ready\": %s, \"ready_reason\": \"%s\", \"stopping\": %s, "
                "\"servers\": {\"connected\": %u, \"count\": %" PRIi64 "}, "
                "\"tunnels\": {\"established\": %u, \"pending\": %u}, "
                "\"bytes_to_destination\": %" PRIu64 ", \"bytes_from_destination\": %" PRIu64 ", ",
                ready ? "true" : "false", ready ? "" : "no servers connected", m->draining ? "true" : "false",
                m->n_ready, m->server_count, established, pending, in, out);
        admin_write_dials(f, &h->admin_state, &h->trace);
        fputs("}\n", f);
}

/* The admin interface (docs/admin-api.md); its /metrics redirects to the health port, on the host the client
 * used (§9.1). */
static int on_admin(const HttpRequest *req, HttpResponse *ret, void *userdata) {
        Manager *m = userdata;
        static char location[512];
        char host[256] = "127.0.0.1";

        if (streq(req->path, "/v1/status"))
                return admin_respond(v1_status, m, ret);
        if (streq(req->path, "/v1/servers"))
                return admin_respond(v1_servers, m, ret);
        if (streq(req->path, "/v1/tunnels"))
                return admin_respond(v1_tunnels, m, ret);
        if (streq(req->path, "/v1/trace"))
                return admin_respond_trace(&m->health.trace, req, ret);
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

void agent_trace(Manager *m, const TraceEvent *ev) {
        daemon_health_event(&m->health, ev);
}

int agent_health_init(Manager *m) {
        int r;

        r = daemon_health_init(&m->health, m->event);
        if (r < 0)
                return r;
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

        return daemon_health_listen(&m->health, m->event, c->health_server_host, c->health_server_port, on_health,
                                    c->admin_bind_address, c->admin_server_port, c->admin_socket, on_admin, m);
}

void agent_health_done(Manager *m) {
        daemon_health_done(&m->health);
}
