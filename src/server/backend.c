/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "backend.h"
#include "conf.h"
#include "log.h"
#include "manager.h"
#include "reverse.h"
#include "tunnel.h"

static void backend_on_end(GrpcCall *call, int status, const char *message, void *userdata) {
        Backend *b = userdata;

        b->call = NULL;
        if (status == GRPC_STATUS_OK || status == GRPC_STATUS_CANCELLED || status == GRPC_STATUS_UNAVAILABLE)
                /* The agent went away (closed, reset, or its connection died): logged as a disconnect. */
                backend_free(b, message ? message : "stream ended");
        else {
                log_struct(LOG_WARNING, LOG_FIELDS({ "KONN_AGENT_ID", b->agent_id }),
                           "Stream of agent '%s' (%s) failed: %s (%s).", b->agent_id, b->peer,
                           message ? message : "no reason given", grpc_status_to_string(status));
                backend_free(b, message ? message : "stream failed");
        }
}

static int backend_close_unknown(Backend *b, int64_t connect_id) {
        Packet p = { .type = PACKET_CLOSE_REQ, .close_req.connect_id = connect_id };
        return backend_send(b, &p);
}

static int backend_on_packet(GrpcCall *call, const Packet *p, void *userdata) {
        Backend *b = userdata;
        Manager *m = b->manager;
        Tunnel *t;

        if (packet_is_new(p))
                manager_count_packet(m, "from_agent", p->type);
        switch (p->type) {
        case PACKET_DIAL_RSP: {
                t = idmap_get(m->pending, p->dial_rsp.random);
                if (!t || t->backend != b) {
                        /* A dial nobody waits for any more (or not this stream's): clean up on the agent. */
                        log_debug("DIAL_RSP for unknown dial %" PRIi64 " from agent '%s'.", p->dial_rsp.random,
                                  b->agent_id);
                        manager_count_dial_failure(m, "unrecognized_response");
                        if (p->dial_rsp.error.len == 0 && p->dial_rsp.connect_id != 0)
                                (void) backend_close_unknown(b, p->dial_rsp.connect_id);
                        return 0;
                }
                if (p->dial_rsp.error.len > 0) {
                        char err[512];
                        (void) snprintf(err, sizeof(err), "%.*s", (int) p->dial_rsp.error.len, p->dial_rsp.error.ptr);
                        tunnel_dial_failed(t, err);
                } else if (p->dial_rsp.connect_id == 0) {
                        tunnel_dial_failed(t, "agent answered without a connection ID");
                } else
                        tunnel_dial_succeeded(t, p->dial_rsp.connect_id);
                return 0;
        }
        case PACKET_DATA:
                if (p->data.connect_id == 0)
                        return 0;
                t = idmap_get(b->tunnels, p->data.connect_id);
                if (!t) {
                        if (packet_is_new(p))
                                (void) backend_close_unknown(b, p->data.connect_id);
                        return 0;
                }
                return tunnel_deliver(t, p->data.data, p->data.data_len);
        case PACKET_CLOSE_RSP:
                t = idmap_get(b->tunnels, p->close_rsp.connect_id);
                if (t)
                        tunnel_remote_closed(t);
                return 0;
        case PACKET_DIAL_CLS:
                t = idmap_get(m->pending, p->dial_cls.random);
                if (t && t->backend == b)
                        tunnel_dial_closed(t);
                return 0;
        case PACKET_DRAIN:
                if (!b->draining)
                        log_struct(LOG_INFO, LOG_FIELDS({ "KONN_AGENT_ID", b->agent_id }),
                                   "Agent '%s' is draining; it is used for new dials only as a last resort.",
                                   b->agent_id);
                b->draining = true;
                return 0;
        default:
                log_debug("Ignoring %s packet from agent '%s'.", packet_type_to_string(p->type), b->agent_id);
                return 0;
        }
}

static const GrpcCallHandler backend_handler = {
        .on_packet = backend_on_packet,
        .on_end = backend_on_end,
};

int backend_send(Backend *b, const Packet *p) {
        int r;

        if (!b->call)
                return -ENOTCONN;
        r = grpc_call_send_packet(b->call, p);
        if (r >= 0)
                manager_count_packet(b->manager, "to_agent", p->type);
        if (r < 0) {
                log_struct_errno(LOG_WARNING, r, LOG_FIELDS({ "KONN_AGENT_ID", b->agent_id }),
                                 "Failed to send %s to agent '%s', dropping its stream: %m",
                                 packet_type_to_string(p->type), b->agent_id);
                grpc_call_abort(b->call, GRPC_STATUS_UNAVAILABLE, "agent is not reading");
                b->call = NULL;
                backend_free(b, "send failed");
        }
        return r;
}

/* Percent-decode s[0..len) as Go's url.ParseQuery does; NULL on a bad escape or no memory. */
static char *query_unescape(const char *s, size_t len) {
        const char *bad;
        size_t n;
        char *out;

        if (conf_query_unescape(s, len, &out, &n, &bad) < 0)
                return NULL;
        return out;
}

static bool parse_go_bool(const char *v) {
        static const char *const yes[] = { "1", "t", "T", "true", "TRUE", "True" };
        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (streq(v, yes[i]))
                        return true;
        return false;
}

#define IDENTIFIER_HOSTS_MAX 64

int backend_parse_identifiers(const char *s, char ***ret_hosts, bool *ret_default_route) {
        char **hosts = NULL;
        size_t n = 0;
        bool dr = false, dr_seen = false;

        if (strlen(s) > 4096)
                return -E2BIG;
        for (const char *p = s; *p;) {
                const char *amp = strchr(p, '&'), *end = amp ?: p + strlen(p), *eq;
                _cleanup_free_ char *key = NULL, *value = NULL;

                eq = memchr(p, '=', (size_t) (end - p));
                if (end > p) {
                        key = query_unescape(p, (size_t) ((eq ?: end) - p));
                        value = eq ? query_unescape(eq + 1, (size_t) (end - eq - 1)) : strdup("");
                        if (!key || !value)
                                goto fail;
                        if (streq(key, "host") || streq(key, "ipv4") || streq(key, "ipv6")) {
                                char **nh;
                                if (n >= IDENTIFIER_HOSTS_MAX)
                                        goto fail;
                                nh = realloc(hosts, sizeof(char *) * (n + 2));
                                if (!nh)
                                        goto fail;
                                hosts = nh;
                                hosts[n++] = TAKE_PTR(value);
                                hosts[n] = NULL;
                        } else if (streq(key, "default-route") && !dr_seen) {
                                dr_seen = true;
                                dr = parse_go_bool(value);
                        }
                        /* cidr is parsed upstream but used by no strategy; unknown keys are ignored (§3.1). */
                }
                p = amp ? amp + 1 : end;
        }
        *ret_hosts = hosts;
        *ret_default_route = dr;
        return 0;
fail:
        for (size_t i = 0; i < n; i++)
                free(hosts[i]);
        free(hosts);
        return -EINVAL;
}

static void backend_pending_end(GrpcCall *call, int status, const char *message, void *userdata) {
        Backend *b = userdata;

        log_debug("Agent '%s' went away while its token was reviewed.", b->agent_id);
        b->call = NULL;
        backend_free(b, NULL);
}

static int backend_pending_packet(GrpcCall *call, const Packet *p, void *userdata) {
        return 0; /* nothing is routed before the stream is accepted */
}

static const GrpcCallHandler backend_pending_handler = {
        .on_packet = backend_pending_packet,
        .on_end = backend_pending_end,
};

static void log_refused(Backend *b, const char *reason) {
        log_struct(LOG_WARNING,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_AGENT_REFUSED }, { "KONN_AGENT_ID", b->agent_id },
                              { "KONN_PEER", b->peer }, { "KONN_REASON", reason }),
                   "Refused agent '%s' (%s): %s.", b->agent_id, b->peer, reason);
}

/* Accept the stream: response headers, registration. A GrpcStatus > 0 on failure (the caller rejects). */
static int backend_activate(Backend *b, GrpcCall *call) {
        Manager *m = b->manager;
        const char *server_count_metadata[7];
        char features[64] = "";
        char count[24];
        int r;

        /* A token-authenticated agent is known by its ServiceAccount from here on: the review (or the cache of
         * reviews) has just shown that the token belongs to exactly this one. */
        if (server_config_token_auth(m->config))
                (void) snprintf(b->peer, sizeof(b->peer), "system:serviceaccount:%s:%s", m->config->agent_namespace,
                                m->config->agent_service_account);
        (void) snprintf(count, sizeof(count), "%" PRIi64, m->config->server_count);
        server_count_metadata[0] = "serverid";
        server_count_metadata[1] = m->config->server_id;
        server_count_metadata[2] = "servercount";
        server_count_metadata[3] = count;
        server_count_metadata[4] = NULL;
        /* konn-to-konn mode when the agent asks for it (upstream agents never do, upstream servers never answer). */
        if (m->config->tunnel_streams && b->wants_tunnel_streams) {
                b->tunnel_streams = true;
                (void) strcat(features, KONN_FEATURE_TUNNEL_STREAMS);
        }
        /* Node → control plane, offered only with destinations to offer. */
        if (m->n_reverse_dests > 0 && b->wants_reverse) {
                b->reverse = true;
                (void) strcat(strcat(features, *features ? "," : ""), KONN_FEATURE_REVERSE);
        }
        if (*features) {
                server_count_metadata[4] = "konn-features";
                server_count_metadata[5] = features;
                server_count_metadata[6] = NULL;
        }
        r = grpc_call_accept(call, (char *const *) server_count_metadata, &backend_handler, b);
        if (r < 0)
                return GRPC_STATUS_INTERNAL;
        b->call = call;
        {
                struct timespec ts;
                (void) clock_gettime(CLOCK_REALTIME, &ts);
                b->since_usec = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
        }
        /* Several streams of one agent: the oldest is used (§3.3); a newcomer waits behind it. */
        for (Backend *o = m->backends; o; o = o->backends_next)
                if (streq(o->agent_id, b->agent_id)) {
                        b->superseded = true;
                        break;
                }
        LIST_PREPEND(backends, m->backends, b);
        m->n_backends++;
        log_struct(LOG_INFO,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_AGENT_CONNECTED }, { "KONN_AGENT_ID", b->agent_id },
                              { "KONN_AGENT_IDENTIFIERS", b->identifiers }, { "KONN_PEER", b->peer }),
                   "Agent '%s' connected (%s, identifiers '%s'%s%s%s).", b->agent_id, b->peer, b->identifiers,
                   b->tunnel_streams ? ", one stream per tunnel" : "", b->reverse ? ", node to control plane" : "",
                   server_config_token_auth(m->config) ? ", token reviewed" : "");
        manager_update_status(m);
        return 0;
}

/* The TokenReview finished (auth.c): accept the deferred stream, or reject it with UNKNOWN (§3.2). */
static void backend_auth_done(Backend *b, bool ok, const char *reason) {
        Manager *m = b->manager;
        GrpcCall *call = b->call;
        char msg[512];
        int status;

        LIST_REMOVE(backends, m->authenticating, b);
        b->authenticating = false;
        if (ok) {
                status = backend_activate(b, call);
                if (status == 0)
                        return;
                reason = "cannot accept the stream";
        } else
                status = GRPC_STATUS_UNKNOWN;
        log_refused(b, reason);
        (void) snprintf(msg, sizeof(msg), "failed to authenticate request: %s", reason);
        grpc_call_reject(call, status, msg);
        b->call = NULL;
        backend_free(b, NULL);
}

int backend_on_call(Manager *m, AgentLink *link, GrpcCall *call, const char **ret_message) {
        static char msg[512];
        Backend *b;
        unsigned n;
        int r;

        if (!streq_ptr(grpc_call_path(call), "/AgentService/Connect"))
                return GRPC_STATUS_UNIMPLEMENTED;

        n = grpc_call_header_count(call, "agentid");
        if (n != 1) {
                (void) snprintf(msg, sizeof(msg), "expected one agent ID in the context, got %u", n);
                *ret_message = msg;
                log_warning("Refusing an agent stream with %u agent IDs.", n);
                return GRPC_STATUS_UNKNOWN;
        }
        if (grpc_call_header_count(call, "agentidentifiers") > 1) {
                *ret_message = "expected at most one set of agent identifiers";
                return GRPC_STATUS_UNKNOWN;
        }

        if ((int64_t) m->n_backends >= m->config->max_agents) {
                bool known = false;

                /* A reconnecting agent replaces its older stream (§3.3): that one does not count as another. */
                for (Backend *i = m->backends; i && !known; i = i->backends_next)
                        known = streq_ptr(i->agent_id, grpc_call_header(call, "agentid", 0));
                if (!known) {
                        manager_refused(m, "agents", grpc_call_header(call, "agentid", 0), "the stream of agent");
                        *ret_message = "too many agents";
                        return GRPC_STATUS_RESOURCE_EXHAUSTED;
                }
        }
        b = calloc(1, sizeof(Backend));
        if (!b)
                return GRPC_STATUS_RESOURCE_EXHAUSTED;
        b->manager = m;
        b->link = link;
        b->agent_id = strdup(grpc_call_header(call, "agentid", 0));
        b->identifiers = strdup(grpc_call_header(call, "agentidentifiers", 0) ?: "");
        b->tunnels = idmap_new();
        if (!b->agent_id || !b->identifiers || !b->tunnels) {
                b->call = NULL;
                backend_free(b, NULL);
                return GRPC_STATUS_RESOURCE_EXHAUSTED;
        }
        r = backend_parse_identifiers(b->identifiers, &b->hosts, &b->default_route);
        if (r < 0) {
                log_warning("Refusing agent '%s': malformed agent identifiers '%s'.", b->agent_id, b->identifiers);
                *ret_message = "malformed agent identifiers";
                backend_free(b, NULL);
                return GRPC_STATUS_UNKNOWN;
        }
        {
                Transport *tr = h2conn_transport(grpc_call_conn(call));
                char cn[128] = "";
                if (tr->tls && tls_conn_peer_name(tr->tls, cn, sizeof(cn)) >= 0)
                        (void) snprintf(b->peer, sizeof(b->peer), "CN=%s", cn);
                else if (server_config_token_auth(m->config))
                        (void) snprintf(b->peer, sizeof(b->peer), "token");
                else
                        (void) snprintf(b->peer, sizeof(b->peer), "no certificate");
        }
        b->wants_tunnel_streams =
                konn_features_has(grpc_call_header(call, "konn-features", 0), KONN_FEATURE_TUNNEL_STREAMS);
        b->wants_reverse = konn_features_has(grpc_call_header(call, "konn-features", 0), KONN_FEATURE_REVERSE);

        if (server_config_token_auth(m->config)) {
                const char *reason = NULL;

                if (grpc_call_header_count(call, "authorization") > 1) {
                        reason = "more than one authorization metadata value";
                        r = -EACCES;
                } else
                        r = auth_start(m, b, grpc_call_header(call, "authorization", 0), backend_auth_done, &reason);
                if (r == 0) {
                        /* Reviewed asynchronously: the stream waits, unaccepted; nothing else does. */
                        b->call = call;
                        b->authenticating = true;
                        grpc_call_set_handler(call, &backend_pending_handler, b);
                        LIST_PREPEND(backends, m->authenticating, b);
                        return 0;
                }
                if (r < 0) {
                        log_refused(b, reason ?: "authentication failed");
                        (void) snprintf(msg, sizeof(msg), "failed to authenticate request: %s",
                                        reason ?: "authentication failed");
                        *ret_message = msg;
                        backend_free(b, NULL);
                        return GRPC_STATUS_UNKNOWN;
                }
                /* r == 1: a cached review */
        }
        r = backend_activate(b, call);
        if (r > 0)
                backend_free(b, NULL);
        return r;
}

Backend *backend_free(Backend *b, const char *reason) {
        Manager *m;
        bool registered;

        if (!b)
                return NULL;
        m = b->manager;
        if (b->authenticating) {
                LIST_REMOVE(backends, m->authenticating, b);
                b->authenticating = false;
        }
        auth_cancel(b);
        registered = b->backends_prev || m->backends == b;
        if (registered) {
                LIST_REMOVE(backends, m->backends, b);
                m->n_backends--;
                if (!b->superseded) {
                        /* The next-oldest stream of the same agent takes over. */
                        Backend *next = NULL;
                        for (Backend *o = m->backends; o; o = o->backends_next)
                                if (streq(o->agent_id, b->agent_id))
                                        next = o;
                        if (next)
                                next->superseded = false;
                }
        }
        /* Pending dials fail at once (§15), established tunnels are closed. */
        while (b->pending)
                tunnel_backend_gone(b->pending);
        if (b->tunnels) {
                Tunnel *t;
                while ((t = idmap_steal_first(b->tunnels))) {
                        t->state = TUNNEL_ESTABLISHED;
                        tunnel_backend_gone(t);
                }
        }
        reverse_backend_gone(b);
        if (b->call) {
                grpc_call_finish(b->call, GRPC_STATUS_OK, NULL);
                b->call = NULL;
        }
        if (registered) {
                log_struct(LOG_INFO,
                           LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_AGENT_DISCONNECTED }, { "KONN_AGENT_ID", b->agent_id }),
                           "Agent '%s' disconnected: %s.", b->agent_id, reason ?: "shutting down");
                manager_update_status(m);
        }
        idmap_free(b->tunnels);
        for (char **h = b->hosts; h && *h; h++)
                free(*h);
        free(b->hosts);
        free(b->agent_id);
        free(b->identifiers);
        free(b);
        return NULL;
}
