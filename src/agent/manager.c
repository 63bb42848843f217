/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/random.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "bufpool.h"
#include "conf.h"
#include "daemon.h"
#include "leasecount.h"
#include "log.h"
#include "manager.h"
#include "serverconn.h"
#include "tls.h"

#define RESOLVER_MAX_INFLIGHT 64

static uint64_t jitter(Manager *m, uint64_t usec) {
        /* d × (1 + U[0, 0.1)), as upstream's wait.Jitter(d, 0.1). */
        m->rng = m->rng * 6364136223846793005ULL + 1442695040888963407ULL;
        return usec + (usec / 10) * ((m->rng >> 33) % 1000) / 1000;
}

static void manager_schedule_sync(Manager *m, uint64_t usec) {
        (void) sd_event_source_set_time_relative(m->sync_timer, usec);
        (void) sd_event_source_set_enabled(m->sync_timer, SD_EVENT_ONESHOT);
}

static void manager_reap(Manager *m) {
        ServerConn *sc, *n;

        LIST_FOREACH_SAFE(conns, sc, n, m->conns)
                if (sc->dead) {
                        LIST_REMOVE(conns, m->conns, sc);
                        m->n_conns--;
                        server_conn_free(sc);
                }
}

static bool addr_in_use(Manager *m, const ServerAddr *a) {
        for (ServerConn *sc = m->conns; sc; sc = sc->conns_next)
                if (!sc->dead && !sc->going_away && sc->state != SERVER_CONN_RESOLVING && sc->addr_len == a->len &&
                    memcmp(&sc->addr, &a->addr, a->len) == 0)
                        return true;
        return false;
}

/* One attempt per iteration (§3.4): an address without a connection first — with several addresses the agent
 * reaches every replica directly — else the next one in turn (one address behind a load balancer: duplicates
 * are the normal outcome). */
static void sync_attempt(Manager *m) {
        const AgentConfig *c = m->config;
        const ServerAddr *a = NULL;
        ServerConn *sc;
        int r;

        if (!c->sync_forever && m->server_count > 0 && m->n_ready >= (unsigned) m->server_count &&
            m->n_ready >= m->n_addrs) {
                manager_schedule_sync(m, jitter(m, c->sync_interval_usec));
                return;
        }
        if (m->n_addrs == 0) {
                manager_schedule_sync(m, jitter(m, m->backoff_usec));
                m->backoff_usec = MIN(m->backoff_usec * 3 / 2, c->sync_interval_cap_usec);
                return;
        }
        for (unsigned i = 0; i < m->n_addrs && !a; i++)
                if (!addr_in_use(m, &m->addrs[i]))
                        a = &m->addrs[i];
        if (!a) {
                if (!c->sync_forever && m->server_count > 0 && m->n_ready >= (unsigned) m->server_count) {
                        manager_schedule_sync(m, jitter(m, c->sync_interval_usec));
                        return;
                }
                a = &m->addrs[m->next_addr++ % m->n_addrs];
        }
        m->attempting = true;
        r = server_conn_new(m, a->host, (uint16_t) c->proxy_server_port, &a->addr, a->len, &sc);
        if (r < 0) {
                m->attempting = false;
                log_warning_errno(r, "Failed to start a server connection: %m");
                manager_schedule_sync(m, jitter(m, m->backoff_usec));
        }
}

static void book_add(Manager *m, const char *host, const SockAddr *addr, socklen_t len) {
        for (unsigned i = 0; i < m->n_fresh; i++)
                if (m->fresh[i].len == len && memcmp(&m->fresh[i].addr, addr, len) == 0)
                        return;
        if (m->n_fresh >= MANAGER_ADDRS_MAX)
                return;
        m->fresh[m->n_fresh++] = (ServerAddr){ .addr = *addr, .len = len, .host = host };
}

static void book_done(Manager *m) {
        uint64_t now;

        if (m->n_fresh > 0 || m->n_addrs == 0) {
                memcpy(m->addrs, m->fresh, sizeof(ServerAddr) * m->n_fresh);
                m->n_addrs = m->n_fresh;
        } else
                log_warning("No address found for any server host; keeping the previous addresses.");
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        m->book_usec = now;
        if (!m->draining && !m->attempting)
                sync_attempt(m);
}

static void on_target_resolved(ResolveQuery *q, int error, const char *reason, const struct addrinfo *ai,
                               void *userdata) {
        ServerTarget *t = userdata;
        Manager *m = t->manager;

        t->query = NULL;
        if (error < 0)
                log_warning("Failed to resolve server host '%s': %s", t->host, reason ?: "unknown error");
        for (; ai; ai = ai->ai_next)
                if (ai->ai_addrlen <= sizeof(SockAddr)) {
                        SockAddr a;
                        memcpy(&a, ai->ai_addr, ai->ai_addrlen);
                        book_add(m, t->host, &a, ai->ai_addrlen);
                }
        if (--m->n_resolving == 0)
                book_done(m);
}

/* Resolve every configured host again (numeric ones at once, names off the loop). */
static void book_refresh(Manager *m) {
        const AgentConfig *c = m->config;

        m->n_fresh = 0;
        m->n_resolving = 1; /* held until every query is started */
        for (unsigned i = 0; i < m->n_targets; i++) {
                ServerTarget *t = &m->targets[i];
                SockAddr a;
                socklen_t len;
                int r;

                if (sock_parse_numeric(t->host, (uint16_t) c->proxy_server_port, &a, &len) >= 0) {
                        book_add(m, t->host, &a, len);
                        continue;
                }
                r = resolver_resolve(m->resolver, t->host, (uint16_t) c->proxy_server_port, on_target_resolved, t,
                                     &t->query);
                if (r < 0)
                        log_warning_errno(r, "Failed to resolve server host '%s': %m", t->host);
                else
                        m->n_resolving++;
        }
        if (--m->n_resolving == 0)
                book_done(m);
}

static int on_sync(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        manager_reap(m);
        if (m->attempting || m->draining || m->n_resolving > 0)
                return 0;
        if (m->n_addrs == 0 || usec >= m->book_usec + m->config->sync_interval_usec)
                book_refresh(m);
        else
                sync_attempt(m);
        return 0;
}

/* Split --proxy-server-host at commas into targets. */
static int manager_parse_targets(Manager *m) {
        const char *p = m->config->proxy_server_host;

        while (p && *p) {
                const char *comma = strchr(p, ',');
                size_t len = comma ? (size_t) (comma - p) : strlen(p);

                while (len > 0 && (*p == ' '))
                        p++, len--;
                while (len > 0 && p[len - 1] == ' ')
                        len--;
                if (len > 0) {
                        if (m->n_targets >= MANAGER_TARGETS_MAX)
                                return log_error_errno(SYNTHETIC_ERRNO(E2BIG),
                                                       "--proxy-server-host names more than %d hosts.",
                                                       MANAGER_TARGETS_MAX);
                        m->targets[m->n_targets].manager = m;
                        m->targets[m->n_targets].host = strndup(p, len);
                        if (!m->targets[m->n_targets].host)
                                return log_oom();
                        /* "[::1]" → "::1" */
                        if (m->targets[m->n_targets].host[0] == '[' && len > 2 &&
                            m->targets[m->n_targets].host[len - 1] == ']') {
                                memmove(m->targets[m->n_targets].host, m->targets[m->n_targets].host + 1, len - 2);
                                m->targets[m->n_targets].host[len - 2] = '\0';
                        }
                        m->n_targets++;
                }
                p = comma ? comma + 1 : NULL;
        }
        if (m->n_targets == 0)
                return log_error_errno(SYNTHETIC_ERRNO(EINVAL), "--proxy-server-host is empty.");
        return 0;
}

bool manager_has_server_id(Manager *m, ServerConn *except, const char *id) {
        ServerConn *sc;

        for (sc = m->conns; sc; sc = sc->conns_next)
                if (sc != except && !sc->dead && !sc->going_away && sc->state == SERVER_CONN_READY &&
                    streq_ptr(sc->server_id, id))
                        return true;
        return false;
}

/* §3.4: --server-count-source=default uses the lease count alone when lease counting is on; max uses the larger of
 * leases and the newest servercount. */
static int64_t effective_server_count(const Manager *m) {
        int64_t response = m->response_count > 0 ? m->response_count : 1;

        if (!m->config->count_server_leases)
                return response;
        if (m->config->server_count_source == SERVER_COUNT_SOURCE_MAX)
                return MAX(m->lease_count, response);
        return m->lease_count > 0 ? m->lease_count : 1;
}

void manager_set_lease_count(Manager *m, int64_t n) {
        int64_t before = m->server_count;

        m->lease_count = n;
        m->server_count = effective_server_count(m);
        if (m->server_count != before) {
                log_info("Server count is now %" PRIi64 " (%" PRIi64 " valid lease%s).", m->server_count, n,
                         n == 1 ? "" : "s");
                manager_update_status(m);
                if (m->server_count > before && !m->attempting && !m->draining)
                        manager_schedule_sync(m, jitter(m, m->config->sync_interval_usec));
        }
}

void manager_conn_ready(Manager *m, ServerConn *sc) {
        const AgentConfig *c = m->config;

        m->n_ready++;
        m->attempting = false;
        m->response_count = sc->server_count > 0 ? sc->server_count : 1;
        m->server_count = effective_server_count(m);
        m->backoff_usec = c->sync_interval_usec;
        log_struct(LOG_INFO,
                   LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_SERVER_CONNECTED }, { "KONN_SERVER_ID", sc->server_id },
                              { "KONN_AGENT_ID", c->agent_id }),
                   "Connected to server '%s' at %s:%u (%u of %" PRIi64 " servers).", sc->server_id, sc->host,
                   sc->port, m->n_ready, m->server_count);
        if (m->n_ready == 1)
                (void) sd_notify(false, "READY=1");
        manager_update_status(m);
        manager_schedule_sync(m, jitter(m, c->sync_interval_usec));
}

void manager_conn_going_away(Manager *m, ServerConn *sc) {
        /* No longer counts as connected: the sync loop connects again at once (to the same address too). */
        m->n_ready--;
        manager_update_status(m);
        manager_schedule_sync(m, 0);
}

void manager_conn_gone(Manager *m, ServerConn *sc, bool was_ready) {
        const AgentConfig *c = m->config;
        bool duplicate = !was_ready && sc->server_id;

        if (sc->going_away) {
                /* Counted out already by manager_conn_going_away(); not an attempt of the sync loop. */
                log_struct(LOG_INFO, LOG_FIELDS({ "KONN_SERVER_ID", sc->server_id }),
                           "Disconnected from server '%s' (after its GOAWAY).", sc->server_id);
                manager_update_status(m);
                return;
        }

        if (was_ready) {
                m->n_ready--;
                log_struct(LOG_INFO, LOG_FIELDS({ "KONN_SERVER_ID", sc->server_id }),
                           "Disconnected from server '%s'.", sc->server_id);
        }
        if (!was_ready && m->attempting) {
                m->attempting = false;
                if (duplicate)
                        /* Reached a replica we already have: not a failure, no backoff (§3.4). */
                        manager_schedule_sync(m, jitter(m, c->sync_interval_usec));
                else {
                        metric_add(m->metrics.server_connection_failure_count, (const char *const[]){ "to_server" }, 1);
                        manager_schedule_sync(m, jitter(m, m->backoff_usec));
                        m->backoff_usec = MIN(m->backoff_usec * 3 / 2, c->sync_interval_cap_usec);
                }
        } else if (was_ready)
                manager_schedule_sync(m, 0);
        manager_update_status(m);
}

void manager_count_packet(Manager *m, const char *segment, int packet_type) {
        metric_add(m->metrics.stream_packets_total,
                   (const char *const[]){ segment, packet_type_to_string((PacketType) packet_type) }, 1);
}

size_t manager_n_endpoints(Manager *m) {
        size_t n = 0;

        for (ServerConn *sc = m->conns; sc; sc = sc->conns_next)
                if (!sc->dead)
                        n += idmap_size(sc->endpoints);
        return n;
}

/* Nothing open: memtrim may give the memory the tunnels used back to the system. */
static bool manager_idle(void *userdata) {
        Manager *m = userdata;

        return manager_n_endpoints(m) == 0 && reverse_n_conns(m) == 0;
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        manager_update_status(m);
        return 0;
}

void manager_status_changed(Manager *m) {
        int enabled = SD_EVENT_OFF;

        if (manager_idle(m))
                memtrim_schedule(&m->trim);

        if (!m->status_timer) {
                if (sd_event_add_time_relative(m->event, &m->status_timer, CLOCK_MONOTONIC, USEC_PER_SEC,
                                               USEC_PER_SEC, on_status_timer, m) < 0)
                        manager_update_status(m);
                return;
        }
        (void) sd_event_source_get_enabled(m->status_timer, &enabled);
        if (enabled != SD_EVENT_OFF)
                return;
        (void) sd_event_source_set_time_relative(m->status_timer, USEC_PER_SEC);
        (void) sd_event_source_set_enabled(m->status_timer, SD_EVENT_ONESHOT);
}

void manager_update_status(Manager *m) {
        size_t tunnels = manager_n_endpoints(m) + reverse_n_conns(m);

        if (m->draining)
                (void) sd_notifyf(false, "STATUS=Draining, %zu tunnels open", tunnels);
        else if (m->n_ready == 0)
                (void) sd_notifyf(false, "STATUS=Connecting to %s:%" PRIi64 "...", m->config->proxy_server_host,
                                  m->config->proxy_server_port);
        else
                (void) sd_notifyf(false, "STATUS=%u/%" PRIi64 " servers, %zu tunnels", m->n_ready, m->server_count,
                                  tunnels);
}

int manager_start(Manager *m) {
        const AgentConfig *c = m->config;
        _cleanup_free_ char *error = NULL;
        int r;

        r = tls_ctx_new_client(c->ca_cert, c->agent_cert, c->agent_key, c->alpn_proto, &m->ctx, &error);
        if (r < 0)
                return log_error_errno(r, "Failed to set up TLS: %s", error ?: "unknown error");
        r = resolver_new(m->event, RESOLVER_MAX_INFLIGHT, &m->resolver);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the resolver: %m");
        r = manager_parse_targets(m);
        if (r < 0)
                return r;
        r = agent_health_start(m);
        if (r < 0)
                return r;
        r = reverse_start(m);
        if (r < 0)
                return r;
        if (c->count_server_leases) {
                r = lease_counter_new(m, &m->lease);
                if (r < 0)
                        return log_error_errno(r, "Failed to start counting server leases: %m");
        }
        m->backoff_usec = c->sync_interval_usec;
        r = sd_event_add_time_relative(m->event, &m->sync_timer, CLOCK_MONOTONIC, 0, 0, on_sync, m);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the sync timer: %m");
        log_struct(LOG_INFO, LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_STARTED }, { "KONN_AGENT_ID", c->agent_id }),
                   "konn-agent %s (id '%s') connecting to %s:%" PRIi64 ".", PACKAGE_VERSION, c->agent_id,
                   c->proxy_server_host, c->proxy_server_port);
        manager_update_status(m);
        return 0;
}

static size_t stop_count(void *userdata) {
        Manager *m = userdata;
        return manager_n_endpoints(m) + reverse_n_conns(m);
}

void manager_stop(Manager *m) {
        Packet drain = { .type = PACKET_DRAIN };
        size_t n;

        if (m->draining)
                return;
        m->draining = true;
        (void) sd_notify(false, "STOPPING=1");
        (void) sd_event_source_set_enabled(m->sync_timer, SD_EVENT_OFF);
        reverse_stop_accepting(m);
        for (ServerConn *sc = m->conns; sc; sc = sc->conns_next)
                if (!sc->dead && sc->state == SERVER_CONN_READY)
                        (void) server_conn_send(sc, &drain);
        n = stop_count(m);
        manager_update_status(m);
        if (m->config->drain_timeout_usec == 0) {
                (void) sd_event_exit(m->event, 0);
                return;
        }
        /* Even with nothing open, go through one tick so the DRAIN packets actually leave. */
        if (n > 0)
                log_info("Draining: waiting up to %" PRIu64 " s for %zu connection%s to finish.",
                         m->config->drain_timeout_usec / USEC_PER_SEC, n, n == 1 ? "" : "s");
        (void) daemon_stop_wait(&m->stop_wait, m->event, m->config->drain_timeout_usec, stop_count, m, "Drain");
}

void manager_reload(Manager *m) {
        _cleanup_free_ char *error = NULL;
        AgentConfig *n, *old = m->config;
        SSL_CTX *ctx = NULL;
        int r;

        (void) sd_notify(false, "RELOADING=1");
        n = daemon_load_config();
        if (!n)
                goto done;
        r = tls_ctx_new_client(n->ca_cert, n->agent_cert, n->agent_key, n->alpn_proto, &ctx, &error);
        if (r < 0) {
                log_error("Reloading the configuration failed, keeping the running one: %s", error ?: "TLS setup failed");
                agent_config_done(n);
                free(n);
                goto done;
        }
        if (!streq_ptr(n->reverse_listen, old->reverse_listen))
                log_warning("reverse-listen changed; the listeners change only after a restart.");
        if (!streq_ptr(n->agent_id, old->agent_id)) {
                log_warning("The agent ID cannot change on reload; keeping '%s'.", old->agent_id);
                free(n->agent_id);
                n->agent_id = strdup(old->agent_id);
        }
        if (n->count_server_leases != old->count_server_leases) {
                log_warning("Turning lease counting on or off takes effect only after a restart.");
                n->count_server_leases = old->count_server_leases;
        }
        SSL_CTX_free(m->ctx);
        m->ctx = ctx;
        m->config = n;
        agent_config_done(old);
        free(old);
        if (m->lease)
                (void) lease_counter_reload(m->lease); /* re-reads the kubeconfig */
        m->server_count = effective_server_count(m);
        log_set_max_level(n->log_level);
        log_set_target(n->log_target);
        log_struct(LOG_INFO, LOG_FIELDS({ "MESSAGE_ID", KONN_MESSAGE_RELOAD }),
                   "Configuration reloaded; new server connections use the new certificates.");
done:
        /* READY=1 only if we were ready before the reload: an agent still connecting is not started yet. */
        if (m->n_ready > 0)
                (void) sd_notify(false, "READY=1");
        manager_update_status(m);
}

int manager_new(sd_event *e, AgentConfig *config, Manager **ret) {
        Manager *m = calloc(1, sizeof(Manager));

        if (!m) {
                agent_config_done(config);
                free(config);
                return -ENOMEM;
        }
        m->event = sd_event_ref(e);
        memtrim_init(&m->trim, m->event, manager_idle, m);
        m->config = config;
        m->server_count = 1;
        /* Only here: buffers in use keep their size, so a reload cannot change it. */
        (void) bufpool_set_chunk_size((size_t) config->relay_chunk_size);
        m->lease_count = 1;
        if (getrandom(&m->rng, sizeof(m->rng), 0) != sizeof(m->rng))
                m->rng = (uint64_t) time(NULL) ^ (uint64_t) getpid();
        if (agent_health_init(m) < 0) {
                manager_free(m);
                return -ENOMEM;
        }
        *ret = m;
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        m->lease = lease_counter_free(m->lease);
        while (m->conns) {
                ServerConn *sc = m->conns;
                LIST_REMOVE(conns, m->conns, sc);
                server_conn_free(sc);
        }
        m->sync_timer = sd_event_source_disable_unref(m->sync_timer);
        for (unsigned i = 0; i < m->n_targets; i++) {
                m->targets[i].query = resolve_query_cancel(m->targets[i].query);
                free(m->targets[i].host);
        }
        reverse_done(m);
        agent_health_done(m);
        m->status_timer = sd_event_source_disable_unref(m->status_timer);
        memtrim_done(&m->trim);
        m->resolver = resolver_free(m->resolver);
        daemon_stop_wait_done(&m->stop_wait);
        SSL_CTX_free(m->ctx);
        if (m->config) {
                agent_config_done(m->config);
                free(m->config);
        }
        sd_event_unref(m->event);
        free(m);
        return NULL;
}
