/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth.h"
#include "backend.h"
#include "kubeobj.h"
#include "log.h"
#include "manager.h"

#define TOKEN_MAX (16 * 1024)
#define REVIEW_ATTEMPTS 2
#define REVIEW_BODY_MAX (64 * 1024)

static int64_t realtime_usec(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * (int64_t) USEC_PER_SEC + ts.tv_nsec / 1000;
}

static void token_hash(const char *token, uint8_t out[static 32]) {
        unsigned len = 32;
        if (!EVP_Digest(token, strlen(token), out, &len, EVP_sha256(), NULL))
                memset(out, 0, 32);
}

static AuthCacheEntry *cache_find(Auth *a, const uint8_t hash[static 32], int64_t now) {
        for (unsigned i = 0; i < AUTH_CACHE_MAX; i++) {
                AuthCacheEntry *e = &a->cache[i];
                if (e->expires_usec == 0)
                        continue;
                if (e->expires_usec <= now) {
                        *e = (AuthCacheEntry){};
                        continue;
                }
                if (CRYPTO_memcmp(e->hash, hash, 32) == 0)
                        return e;
        }
        return NULL;
}

static void cache_add(Auth *a, const uint8_t hash[static 32], int64_t expires) {
        AuthCacheEntry *slot = NULL;

        for (unsigned i = 0; i < AUTH_CACHE_MAX && !slot; i++)
                if (a->cache[i].expires_usec == 0)
                        slot = &a->cache[i];
        if (!slot) {
                slot = &a->cache[a->next_slot];
                a->next_slot = (a->next_slot + 1) % AUTH_CACHE_MAX;
        }
        memcpy(slot->hash, hash, 32);
        slot->expires_usec = expires;
}

static void set_unavailable(Manager *m, const char *reason) {
        if (streq_ptr(m->auth.unavailable, reason))
                return;
        if (reason) {
                log_warning("Token authentication is unavailable, refusing agents: %s", reason);
                free(m->auth.unavailable);
                m->auth.unavailable = strdup(reason);
        } else if (m->auth.unavailable) {
                log_info("Token authentication works again.");
                m->auth.unavailable = mfree(m->auth.unavailable);
        }
}

static void finish(Backend *b, bool ok, const char *reason) {
        auth_done_t done = b->auth_done;

        b->review = NULL;
        b->auth_done = NULL;
        if (b->token) {
                explicit_bzero(b->token, strlen(b->token));
                b->token = mfree(b->token);
        }
        done(b, ok, reason);
}

static void on_review(const KubeResponse *r, void *userdata) {
        Backend *b = userdata;
        Manager *m = b->manager;
        const ServerConfig *c = m->config;
        KubeTokenReview tr = {};
        _cleanup_free_ char *expected = NULL, *reason = NULL, *msg = NULL;
        int64_t now = realtime_usec(), expires, exp;
        int k;

        if (r->error < 0) {
                (void) asprintf(&reason, "TokenReview failed: %s", r->reason ?: strerror(-r->error));
                set_unavailable(m, reason);
                finish(b, false, reason ?: "TokenReview failed");
                return;
        }
        if (r->status != 200 && r->status != 201) {
                msg = kube_status_message(r->body, r->body_len);
                (void) asprintf(&reason, "TokenReview failed: HTTP %ld%s%s", r->status, msg ? ": " : "", msg ?: "");
                set_unavailable(m, reason);
                finish(b, false, reason ?: "TokenReview failed");
                return;
        }
        k = kube_tokenreview_parse(r->body, r->body_len, &tr);
        if (k < 0) {
                set_unavailable(m, "TokenReview failed: malformed response from the API server");
                finish(b, false, "TokenReview failed: malformed response from the API server");
                return;
        }
        set_unavailable(m, NULL);
        if (!tr.authenticated) {
                (void) asprintf(&reason, "token not authenticated: %s", tr.error ?: "lookup failed");
                kube_tokenreview_done(&tr);
                finish(b, false, reason ?: "token not authenticated");
                return;
        }
        if (asprintf(&expected, "system:serviceaccount:%s:%s", c->agent_namespace, c->agent_service_account) < 0) {
                kube_tokenreview_done(&tr);
                finish(b, false, "out of memory");
                return;
        }
        if (!streq_ptr(tr.username, expected)) {
                (void) asprintf(&reason, "token belongs to '%s', expected '%s'", tr.username ?: "", expected);
                kube_tokenreview_done(&tr);
                finish(b, false, reason ?: "wrong service account");
                return;
        }
        kube_tokenreview_done(&tr);
        if (c->authentication_cache_ttl_usec > 0) {
                expires = now + (int64_t) c->authentication_cache_ttl_usec;
                if (kube_jwt_exp(b->token, &exp) >= 0 && exp < INT64_MAX / (int64_t) USEC_PER_SEC)
                        expires = MIN(expires, exp * (int64_t) USEC_PER_SEC);
                if (expires > now)
                        cache_add(&m->auth, b->token_hash, expires);
        }
        finish(b, true, NULL);
}

int auth_start(Manager *m, Backend *b, const char *authorization, auth_done_t done, const char **ret_reason) {
        _cleanup_free_ char *body = NULL;
        const char *token;
        KubeRequestSpec spec = {
                .method = "POST",
                .path = "/apis/authentication.k8s.io/v1/tokenreviews",
                .timeout_usec = m->config->kube_api_timeout_usec,
                .max_body = REVIEW_BODY_MAX,
                .max_attempts = REVIEW_ATTEMPTS, /* a review changes nothing: safe to repeat */
        };
        int r;

        if (!authorization) {
                *ret_reason = "no authorization metadata (a ServiceAccount token is required)";
                return -EACCES;
        }
        if (strncmp(authorization, "Bearer ", 7) != 0) {
                *ret_reason = "authorization metadata is not a Bearer token";
                return -EACCES;
        }
        token = authorization + 7;
        if (!*token) {
                *ret_reason = "empty Bearer token";
                return -EACCES;
        }
        if (strlen(token) > TOKEN_MAX) {
                *ret_reason = "Bearer token too long";
                return -EACCES;
        }
        token_hash(token, b->token_hash);
        if (cache_find(&m->auth, b->token_hash, realtime_usec()))
                return 1;
        if (!m->kube) {
                *ret_reason = "no Kubernetes client";
                return -ENOTCONN;
        }
        b->token = strdup(token);
        if (!b->token)
                return -ENOMEM;
        r = kube_tokenreview_request(token, m->config->authentication_audience, &body);
        if (r < 0) {
                *ret_reason = "out of memory";
                return r;
        }
        spec.body = body;
        b->auth_done = done;
        r = kube_request(m->kube, &spec, on_review, b, &b->review);
        explicit_bzero(body, strlen(body));
        if (r < 0) {
                b->auth_done = NULL;
                *ret_reason = "cannot start the TokenReview";
                return r;
        }
        return 0;
}

void auth_cancel(Backend *b) {
        kube_request_cancel(b->review);
        b->review = NULL;
        b->auth_done = NULL;
        if (b->token) {
                explicit_bzero(b->token, strlen(b->token));
                b->token = mfree(b->token);
        }
}

const char *auth_unavailable(const Manager *m) {
        return m->auth.unavailable;
}

void auth_done(Auth *a) {
        a->unavailable = mfree(a->unavailable);
        explicit_bzero(a->cache, sizeof(a->cache));
}
