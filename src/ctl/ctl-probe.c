/* SPDX-License-Identifier: Apache-2.0 */
/* ctl-probe — konnctl probe HOST:PORT: open a tunnel through konn-server's frontend exactly as kube-apiserver
 * does (HTTP CONNECT over the Unix socket, or over TCP with mTLS), time it, and report the server's answer. With
 * the server's admin interface reachable, the probe first subscribes to /v1/trace and then reads its own tunnel's
 * events there: which agent carried it, and the dial time the server measured. */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "ctl.h"
#include "macro.h"
#include "sock.h"
#include "tls.h"

#define PROBE_RESPONSE_MAX 8192

static double now_s(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

typedef struct Conn {
        int fd;
        SSL_CTX *ctx;
        TlsConn *tls;
} Conn;

static void conn_close(Conn *c) {
        c->tls = tls_conn_free(c->tls);
        if (c->ctx)
                SSL_CTX_free(c->ctx);
        c->ctx = NULL;
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
}

static ssize_t conn_write(Conn *c, const void *p, size_t n) {
        return c->tls ? tls_conn_write(c->tls, p, n) : send(c->fd, p, n, MSG_NOSIGNAL) < 0 ? -errno : (ssize_t) n;
}

static ssize_t conn_read(Conn *c, void *p, size_t n) {
        ssize_t k;
        if (c->tls)
                return tls_conn_read(c->tls, p, n);
        k = recv(c->fd, p, n, 0);
        return k < 0 ? -errno : k;
}

/* Connect to the frontend; prints why not and returns a CTL_EXIT_* (> 0). */
static int frontend_connect(const CtlProbeOptions *o, const char *frontend, Conn *c) {
        CtlTarget t = {};
        int r;

        (void) snprintf(t.address, sizeof(t.address), "%s", frontend);
        t.is_unix = strchr(frontend, '/') != NULL;
        c->fd = ctl_connect(&t, o->timeout_ms);
        if (c->fd < 0) {
                r = c->fd;
                fprintf(stderr, "konnctl: cannot connect to the frontend %s: %s\n", frontend, strerror(-r));
                return ctl_exit_for_errno(r);
        }
        if (t.is_unix)
                return 0;
        if (!o->ca) {
                fprintf(stderr, "konnctl: a TCP frontend needs --ca-cert (and --cert/--key for mTLS)\n");
                return CTL_EXIT_USAGE;
        }
        {
                char host[256], name[256];
                uint16_t port;
                SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

                if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
                    SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1 ||
                    (o->cert && SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) ||
                    (o->key && SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1)) {
                        fprintf(stderr, "konnctl: cannot load the TLS files (--ca-cert %s, --cert %s, --key %s)\n",
                                o->ca, o->cert ?: "-", o->key ?: "-");
                        if (ctx)
                                SSL_CTX_free(ctx);
                        return CTL_EXIT_USAGE;
                }
                SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
                c->ctx = ctx;
                if (sock_split_host_port(frontend, host, sizeof(host), &port, NULL) < 0)
                        host[0] = '\0';
                (void) snprintf(name, sizeof(name), "%s", o->tls_name ?: host);
                r = tls_conn_new(ctx, c->fd, false, name, &c->tls);
                if (r >= 0)
                        r = tls_conn_handshake(c->tls);
                if (r < 0) {
                        fprintf(stderr, "konnctl: TLS with the frontend %s failed: %s\n", frontend,
                                c->tls && *tls_conn_error(c->tls) ? tls_conn_error(c->tls) : strerror(-r));
                        return r == -EAGAIN ? CTL_EXIT_TIMEOUT : CTL_EXIT_FAILED;
                }
        }
        return 0;
}

typedef struct TraceMatch {
        char agent[256];
        double dial_seconds;
        int64_t dial_id;
        char reason[1024];
        bool found_dial, done, failed;
} TraceMatch;

/* Read trace lines for up to timeout_ms, following the first dial to dest from client (when known). */
static void follow_trace(CtlStream *s, const char *dest, const char *client, TraceMatch *m, int timeout_ms) {
        double deadline = now_s() + timeout_ms / 1000.0;

        while (!m->done) {
                int left = (int) ((deadline - now_s()) * 1000);
                const char *line;
                json_object *e;

                if (left <= 0 || ctl_stream_next(s, left, &line) < 0)
                        return;
                e = json_tokener_parse(line);
                if (!e)
                        continue;
                if (!m->found_dial) {
                        if (strcmp(ctl_json_str(e, "event"), "dial") == 0 &&
                            strcmp(ctl_json_str(e, "destination"), dest) == 0 &&
                            (!client || strcmp(ctl_json_str(e, "client"), client) == 0)) {
                                m->found_dial = true;
                                m->dial_id = ctl_json_int(e, "dial_id");
                                (void) snprintf(m->agent, sizeof(m->agent), "%s", ctl_json_str(e, "agent"));
                        }
                } else if (ctl_json_int(e, "dial_id") == m->dial_id) {
                        const char *ev = ctl_json_str(e, "event");
                        if (strcmp(ev, "established") == 0) {
                                m->dial_seconds = ctl_json_double(e, "dial_seconds");
                                (void) snprintf(m->agent, sizeof(m->agent), "%s", ctl_json_str(e, "agent"));
                                m->done = true;
                        } else if (strcmp(ev, "failed") == 0) {
                                (void) snprintf(m->reason, sizeof(m->reason), "%s", ctl_json_str(e, "reason"));
                                m->failed = m->done = true;
                        }
                }
                json_object_put(e);
        }
}

int ctl_probe(const CtlProbeOptions *o) {
        const char *frontend = o->frontend ?: "/run/konn/konn-server.sock";
        char host[256], req[1024], resp[PROBE_RESPONSE_MAX + 1], client[SOCK_ADDR_STRING_MAX] = "", *body;
        uint16_t port;
        const char *reason = NULL;
        CtlStream *trace = NULL;
        CtlTarget admin;
        TraceMatch m = {};
        Conn c = { .fd = -1 };
        size_t len = 0;
        double t0, t1 = 0;
        int r, code = 0, exit_code;

        if (sock_split_host_port(o->dest, host, sizeof(host), &port, &reason) < 0 || !host[0] || port == 0) {
                fprintf(stderr, "konnctl: probe needs HOST:PORT, not '%s'%s%s\n", o->dest, reason ? ": " : "",
                        reason ?: "");
                return CTL_EXIT_USAGE;
        }
        /* Subscribe first, so the tunnel's events cannot be missed; without the admin interface the probe still
         * reports the frontend's answer. */
        if (ctl_find_target(o->admin, "konn-server", &admin) == 0 &&
            ctl_stream_open(&admin, "/v1/trace", o->timeout_ms, &trace) == 0) {
                const char *line;
                if (ctl_stream_next(trace, o->timeout_ms, &line) < 0 || !strstr(line, "\"subscribed\""))
                        trace = ctl_stream_free(trace);
        }
        if (!trace)
                fprintf(stderr, "konnctl: the server's admin interface is not reachable: the agent that carries the "
                        "probe cannot be named\n");

        r = frontend_connect(o, frontend, &c);
        if (r > 0) {
                conn_close(&c);
                ctl_stream_free(trace);
                return r;
        }
        if (!strchr(frontend, '/')) {
                SockAddr a;
                socklen_t al = sizeof(a);
                if (getsockname(c.fd, &a.sa, &al) < 0 || !sock_addr_to_string(&a, al, client, sizeof(client)))
                        client[0] = '\0';
        }
        (void) snprintf(req, sizeof(req), "CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: konnctl/" PACKAGE_VERSION
                        "\r\n\r\n", o->dest, o->dest);
        t0 = now_s();
        if (conn_write(&c, req, strlen(req)) < 0) {
                fprintf(stderr, "konnctl: sending the CONNECT request to %s failed\n", frontend);
                conn_close(&c);
                ctl_stream_free(trace);
                return CTL_EXIT_UNREACHABLE;
        }
        /* The head, and for an error the body up to EOF (the server closes after it). */
        for (;;) {
                ssize_t k = conn_read(&c, resp + len, PROBE_RESPONSE_MAX - len);
                if (k == -EAGAIN || k == -ETIMEDOUT) {
                        fprintf(stderr, "konnctl: no answer from the frontend within %.1f s\n", o->timeout_ms / 1000.0);
                        conn_close(&c);
                        ctl_stream_free(trace);
                        return CTL_EXIT_TIMEOUT;
                }
                if (k <= 0)
                        break;
                len += (size_t) k;
                resp[len] = '\0';
                if (!t1 && strstr(resp, "\r\n\r\n"))
                        t1 = now_s();
                if (sscanf(resp, "HTTP/1.%*d %d", &code) == 1 && code == 200 && t1)
                        break;
                if (len == PROBE_RESPONSE_MAX)
                        break;
        }
        if (!t1)
                t1 = now_s();
        resp[len] = '\0';
        if (len == 0) {
                const char *why = c.tls ? tls_conn_error(c.tls) : "";
                fprintf(stderr, "konnctl: the frontend %s closed the connection without answering%s%s\n", frontend,
                        *why ? ": " : "", why);
                conn_close(&c);
                ctl_stream_free(trace);
                return CTL_EXIT_UNREACHABLE;
        }
        conn_close(&c); /* closing the tunnel at once: the agent closes its connection to the destination */
        if (sscanf(resp, "HTTP/1.%*d %d", &code) != 1) {
                fprintf(stderr, "konnctl: the frontend %s did not answer the CONNECT request with HTTP\n", frontend);
                ctl_stream_free(trace);
                return CTL_EXIT_PROTOCOL;
        }
        if (trace) {
                follow_trace(trace, o->dest, client[0] ? client : NULL, &m, MIN(o->timeout_ms, 5000));
                trace = ctl_stream_free(trace);
        }
        body = strstr(resp, "\r\n\r\n");
        body = body ? body + 4 : resp + len;
        body[strcspn(body, "\r\n")] = '\0';

        if (code == 200)
                exit_code = CTL_EXIT_OK;
        else if (code == 504)
                exit_code = CTL_EXIT_TIMEOUT;
        else if (code == 500 && strstr(body, "No agent available"))
                exit_code = CTL_EXIT_NO_AGENT;
        else
                exit_code = CTL_EXIT_FAILED;

        if (o->json) {
                json_object *j = json_object_new_object();
                json_object_object_add(j, "destination", json_object_new_string(o->dest));
                json_object_object_add(j, "frontend", json_object_new_string(frontend));
                json_object_object_add(j, "ok", json_object_new_boolean(code == 200));
                json_object_object_add(j, "status", json_object_new_int(code));
                json_object_object_add(j, "reason", json_object_new_string(code == 200 ? "" : body));
                json_object_object_add(j, "agent", m.agent[0] ? json_object_new_string(m.agent) : NULL);
                json_object_object_add(j, "connect_seconds", json_object_new_double(t1 - t0));
                json_object_object_add(j, "dial_seconds", m.done && !m.failed ? json_object_new_double(m.dial_seconds) : NULL);
                puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(j);
                return exit_code;
        }
        {
                char total[32], dial[32];
                ctl_format_duration(t1 - t0, total, sizeof(total));
                ctl_format_duration(m.dial_seconds, dial, sizeof(dial));
                if (code == 200) {
                        printf("%s: tunnel established through agent '%s' in %s", o->dest, m.agent[0] ? m.agent : "?",
                               total);
                        if (m.done && !m.failed)
                                printf(" (dial %s at the server)", dial);
                        printf("\n");
                } else
                        printf("%s: FAILED (HTTP %d%s%s%s): %s\n", o->dest, code, m.agent[0] ? ", agent '" : "",
                               m.agent[0] ? m.agent : "", m.agent[0] ? "'" : "", body[0] ? body : "(no reason given)");
        }
        return exit_code;
}
