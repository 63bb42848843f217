/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <time.h>

/* libcurl is opened with dlopen() when the first client is created (systemd's pattern for optional libraries):
 * a daemon that never talks to Kubernetes does not map libcurl and the ~28 libraries it pulls in (about 4 MiB of
 * resident memory per daemon, measured). No type-checking macros: the calls go through the table below. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <dlfcn.h>

#include "kubeclient.h"
#include "log.h"

#define LIBCURL_SONAME "libcurl.so.4"

#define CURL_SYMBOLS(X)                                                                                      \
        X(curl_easy_cleanup) X(curl_easy_getinfo) X(curl_easy_init) X(curl_easy_setopt) X(curl_easy_strerror)    \
        X(curl_global_init) X(curl_multi_add_handle) X(curl_multi_assign) X(curl_multi_cleanup)                  \
        X(curl_multi_info_read) X(curl_multi_init) X(curl_multi_remove_handle) X(curl_multi_setopt)              \
        X(curl_multi_socket_action) X(curl_slist_append) X(curl_slist_free_all)

static struct {
        void *handle;
#define FIELD(n) __typeof__(n) *n;
        CURL_SYMBOLS(FIELD)
#undef FIELD
} sym;

/* Open libcurl once (kept open for the life of the process). -ENOPKG with *ret_error naming what is missing. */
static int curl_dlopen(char **ret_error) {
        void *h;

        if (sym.handle)
                return 0;
        h = dlopen(LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!h) {
                if (ret_error && asprintf(ret_error, "cannot load %s (install libcurl4): %s", LIBCURL_SONAME,
                                          dlerror() ?: "unknown error") < 0)
                        *ret_error = NULL;
                return -ENOPKG;
        }
#define LOAD(n)                                                                                                 \
        sym.n = (__typeof__(n) *) dlsym(h, #n);                                                                 \
        if (!sym.n) {                                                                                           \
                if (ret_error && asprintf(ret_error, "%s has no symbol %s", LIBCURL_SONAME, #n) < 0)            \
                        *ret_error = NULL;                                                                      \
                (void) dlclose(h);                                                                              \
                return -ENOPKG;                                                                                 \
        }
        CURL_SYMBOLS(LOAD)
#undef LOAD
        sym.handle = h;
        return 0;
}

#define DEFAULT_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define DEFAULT_MAX_BODY MIB
#define RETRY_FIRST_USEC (250 * USEC_PER_MSEC)
#define RETRY_MAX_USEC (4 * USEC_PER_SEC)

struct KubeClient {
        sd_event *event;
        const KubeConfig *config;
        CURLM *multi;
        sd_event_source *timer;
        KubeRequest *requests;
        bool in_socket_action;
};

struct KubeRequest {
        KubeClient *client;
        LIST_FIELDS(KubeRequest, requests);
        CURL *easy;                 /* NULL between attempts */
        struct curl_slist *headers;
        char *url, *method, *body;
        char *buf;                  /* response */
        size_t len, cap, max_body;
        bool too_big;
        uint64_t timeout_usec;
        unsigned attempts, max_attempts;
        uint64_t started_usec;
        sd_event_source *retry;
        char errbuf[CURL_ERROR_SIZE];
        kube_callback_t cb;
        void *userdata;
};

static uint64_t now_usec(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static void request_drop_easy(KubeRequest *r) {
        if (r->easy) {
                (void) sym.curl_multi_remove_handle(r->client->multi, r->easy);
                sym.curl_easy_cleanup(r->easy);
                r->easy = NULL;
        }
        sym.curl_slist_free_all(r->headers);
        r->headers = NULL;
}

static void request_free(KubeRequest *r) {
        if (!r)
                return;
        request_drop_easy(r);
        LIST_REMOVE(requests, r->client->requests, r);
        sd_event_source_disable_unref(r->retry);
        free(r->url);
        free(r->method);
        free(r->body);
        free(r->buf);
        free(r);
}

void kube_request_cancel(KubeRequest *r) {
        request_free(r);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* libcurl ↔ sd-event */

static void check_done(KubeClient *c);

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        KubeClient *c = userdata;
        int running, action = 0;

        if (revents & (EPOLLIN | EPOLLHUP))
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & EPOLLERR)
                action |= CURL_CSELECT_ERR;
        c->in_socket_action = true;
        (void) sym.curl_multi_socket_action(c->multi, fd, action, &running);
        c->in_socket_action = false;
        check_done(c);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        KubeClient *c = userdata;
        int running;

        c->in_socket_action = true;
        (void) sym.curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        c->in_socket_action = false;
        check_done(c);
        return 0;
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        KubeClient *c = userp;
        sd_event_source *s = socketp;
        uint32_t events = 0;

        if (what == CURL_POLL_REMOVE) {
                if (s) {
                        sd_event_source_disable_unref(s);
                        (void) sym.curl_multi_assign(c->multi, fd, NULL);
                }
                return 0;
        }
        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;
        if (s) {
                if (sd_event_source_set_io_events(s, events) < 0 ||
                    sd_event_source_set_enabled(s, SD_EVENT_ON) < 0)
                        return -1;
                return 0;
        }
        if (sd_event_add_io(c->event, &s, fd, events, on_io, c) < 0)
                return -1;
        (void) sd_event_source_set_description(s, "kube-client-io");
        if (sym.curl_multi_assign(c->multi, fd, s) != CURLM_OK) {
                sd_event_source_disable_unref(s);
                return -1;
        }
        return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
        KubeClient *c = userp;

        if (timeout_ms < 0)
                return sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
        /* timeout 0: run on the next loop iteration, never recursively from here. */
        if (sd_event_source_set_time_relative(c->timer, (uint64_t) timeout_ms * USEC_PER_MSEC) < 0 ||
            sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT) < 0)
                return -1;
        return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        KubeRequest *r = userdata;
        size_t n = size * nmemb;

        if (r->len + n > r->max_body) {
                r->too_big = true;
                return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
        }
        if (r->len + n + 1 > r->cap) {
                size_t cap = MAX(r->cap * 2, r->len + n + 1);
                char *b;

                cap = MIN(cap, r->max_body + 1);
                b = realloc(r->buf, cap);
                if (!b)
                        return 0;
                r->buf = b;
                r->cap = cap;
        }
        memcpy(r->buf + r->len, ptr, n);
        r->len += n;
        r->buf[r->len] = 0;
        return n;
}

static int start_attempt(KubeRequest *r);

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        KubeRequest *r = userdata;
        int k;

        r->retry = sd_event_source_disable_unref(r->retry);
        k = start_attempt(r);
        if (k < 0) {
                KubeResponse resp = { .error = k, .reason = "cannot start request", .body = "",
                                      .attempts = r->attempts };
                kube_callback_t cb = r->cb;
                void *ud = r->userdata;
                request_free(r);
                cb(&resp, ud);
        }
        return 0;
}

static int curl_error_to_errno(CURLcode code) {
        switch (code) {
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_COULDNT_RESOLVE_HOST:
                return -EHOSTUNREACH;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CIPHER:
                return -EPROTO;
        case CURLE_WRITE_ERROR:
                return -EFBIG;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_GOT_NOTHING:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
                return -ECONNRESET;
        default:
                return -EIO;
        }
}

static void request_done(KubeRequest *r, CURLcode code) {
        KubeResponse resp = { .body = "", .attempts = r->attempts };
        kube_callback_t cb = r->cb;
        void *ud = r->userdata;
        long status = 0;
        bool retry;

        resp.duration_usec = now_usec() - r->started_usec;
        if (code == CURLE_OK) {
                long version = 0;

                (void) sym.curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
                (void) sym.curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &version);
                resp.status = status;
                log_debug("Kubernetes API %s %s: HTTP %ld over %s in %" PRIu64 " ms.", r->method, r->url, status,
                          version == CURL_HTTP_VERSION_2_0 ? "HTTP/2" : "HTTP/1.1",
                          resp.duration_usec / USEC_PER_MSEC);
        } else {
                resp.error = r->too_big ? -EFBIG : curl_error_to_errno(code);
                resp.reason = r->too_big ? "response too large"
                              : r->errbuf[0] ? r->errbuf
                                             : sym.curl_easy_strerror(code);
        }
        retry = r->attempts < r->max_attempts && resp.error != -EFBIG && resp.error != -ENOMEM &&
                (resp.error < 0 || status == 429 || status >= 500);
        if (retry) {
                uint64_t delay = RETRY_FIRST_USEC << MIN(r->attempts - 1, 5u);

                delay = MIN(delay, RETRY_MAX_USEC);
                log_debug("Kubernetes API %s %s failed (%s), retrying in %" PRIu64 " ms.", r->method, r->url,
                          resp.error < 0 ? resp.reason : "HTTP error", delay / USEC_PER_MSEC);
                request_drop_easy(r);
                r->len = 0;
                r->too_big = false;
                if (sd_event_add_time_relative(r->client->event, &r->retry, CLOCK_MONOTONIC, delay, 0, on_retry,
                                               r) >= 0)
                        return;
        }
        if (r->buf)
                resp.body = r->buf, resp.body_len = r->len;
        /* Unlinked before the callback (which may cancel other requests); freed after it. */
        request_drop_easy(r);
        LIST_REMOVE(requests, r->client->requests, r);
        cb(&resp, ud);
        sd_event_source_disable_unref(r->retry);
        free(r->url);
        free(r->method);
        free(r->body);
        free(r->buf);
        free(r);
}

static void check_done(KubeClient *c) {
        CURLMsg *m;
        int left;

        while ((m = sym.curl_multi_info_read(c->multi, &left))) {
                KubeRequest *r = NULL;

                if (m->msg != CURLMSG_DONE)
                        continue;
                (void) sym.curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **) &r);
                if (r)
                        request_done(r, m->data.result);
        }
}

static int start_attempt(KubeRequest *r) {
        KubeClient *c = r->client;
        const KubeConfig *kc = c->config;
        _cleanup_free_ char *token = NULL, *error = NULL, *auth = NULL;
        CURL *e;
        int k;

        k = kube_config_token(kc, &token, &error);
        if (k == -ENOMEM)
                return k;
        if (k < 0)
                log_warning("%s", error ?: "cannot read the Kubernetes token file");

        e = sym.curl_easy_init();
        if (!e)
                return -ENOMEM;
        r->easy = e;
        r->attempts++;
        r->started_usec = now_usec();
        r->errbuf[0] = 0;
        r->headers = sym.curl_slist_append(NULL, "Accept: application/json");
        if (r->headers && r->body)
                r->headers = sym.curl_slist_append(r->headers, "Content-Type: application/json");
        if (r->headers && token) {
                if (asprintf(&auth, "Authorization: Bearer %s", token) < 0)
                        return -ENOMEM;
                r->headers = sym.curl_slist_append(r->headers, auth);
                explicit_bzero(auth, strlen(auth));
        }
        if (!r->headers)
                return -ENOMEM;

        (void) sym.curl_easy_setopt(e, CURLOPT_PRIVATE, r);
        (void) sym.curl_easy_setopt(e, CURLOPT_URL, r->url);
        (void) sym.curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
        (void) sym.curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        (void) sym.curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
        (void) sym.curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
        (void) sym.curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
        (void) sym.curl_easy_setopt(e, CURLOPT_USERAGENT, PACKAGE_NAME "/" PACKAGE_VERSION);
        (void) sym.curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) (r->timeout_usec / USEC_PER_MSEC));
        (void) sym.curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) (r->timeout_usec / USEC_PER_MSEC));
        (void) sym.curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
        (void) sym.curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
        (void) sym.curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
        (void) sym.curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
        if (r->body) {
                (void) sym.curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
                (void) sym.curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long) strlen(r->body));
        } else if (streq(r->method, "GET"))
                (void) sym.curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        if (kc->ca_pem) {
                struct curl_blob b = { .data = kc->ca_pem, .len = kc->ca_len, .flags = CURL_BLOB_COPY };
                (void) sym.curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &b);
        }
        if (kc->cert_pem && kc->key_pem) {
                struct curl_blob cb = { .data = kc->cert_pem, .len = kc->cert_len, .flags = CURL_BLOB_COPY };
                struct curl_blob kb = { .data = kc->key_pem, .len = kc->key_len, .flags = CURL_BLOB_COPY };
                (void) sym.curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &cb);
                (void) sym.curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
                (void) sym.curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &kb);
                (void) sym.curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
        }
        if (kc->insecure) {
                (void) sym.curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
                (void) sym.curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        if (sym.curl_multi_add_handle(c->multi, e) != CURLM_OK)
                return -ENOMEM;
        return 0;
}

int kube_request(KubeClient *c, const KubeRequestSpec *spec, kube_callback_t cb, void *userdata, KubeRequest **ret) {
        KubeRequest *r;
        int k;

        assert(c && spec && spec->method && spec->path && cb);
        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->client = c;
        LIST_PREPEND(requests, c->requests, r);
        r->cb = cb;
        r->userdata = userdata;
        r->timeout_usec = spec->timeout_usec ?: DEFAULT_TIMEOUT_USEC;
        r->max_body = spec->max_body ?: DEFAULT_MAX_BODY;
        r->max_attempts = MAX(spec->max_attempts, 1u);
        r->method = strdup(spec->method);
        r->body = spec->body ? strdup(spec->body) : NULL;
        if (!r->method || (spec->body && !r->body) || asprintf(&r->url, "%s%s", c->config->server, spec->path) < 0) {
                request_free(r);
                return -ENOMEM;
        }
        k = start_attempt(r);
        if (k < 0) {
                request_free(r);
                return k;
        }
        if (ret)
                *ret = r;
        return 0;
}

int kube_client_new(sd_event *e, const KubeConfig *config, KubeClient **ret, char **ret_error) {
        static bool initialized;
        _cleanup_(kube_client_freep) KubeClient *c = NULL;
        int r;

        r = curl_dlopen(ret_error);
        if (r < 0)
                return r;
        if (!initialized) {
                if (sym.curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                        if (ret_error)
                                *ret_error = strdup("libcurl initialization failed");
                        return -EIO;
                }
                initialized = true;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(e);
        c->config = config;
        c->multi = sym.curl_multi_init();
        if (!c->multi)
                return -ENOMEM;
        (void) sym.curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
        (void) sym.curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
        (void) sym.curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
        (void) sym.curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
        (void) sym.curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
        (void) sym.curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 4L);
        r = sd_event_add_time(e, &c->timer, CLOCK_MONOTONIC, UINT64_MAX, 0, on_timer, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->timer, "kube-client-timer");
        *ret = TAKE_PTR(c);
        return 0;
}

KubeClient *kube_client_free(KubeClient *c) {
        if (!c)
                return NULL;
        while (c->requests)
                request_free(c->requests);
        if (c->multi)
                (void) sym.curl_multi_cleanup(c->multi); /* calls socket_cb(REMOVE) for what is still open */
        sd_event_source_disable_unref(c->timer);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

void kube_client_set_config(KubeClient *c, const KubeConfig *config) {
        c->config = config;
}

const KubeConfig *kube_client_config(const KubeClient *c) {
        return c->config;
}

char *kube_url_escape(const char *s) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(s);
        char *out = malloc(n * 3 + 1), *o = out;

        if (!out)
                return NULL;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                    *p == '_' || *p == '.' || *p == '~')
                        *o++ = (char) *p;
                else {
                        *o++ = '%';
                        *o++ = hex[*p >> 4];
                        *o++ = hex[*p & 15];
                }
        }
        *o = 0;
        return out;
}
