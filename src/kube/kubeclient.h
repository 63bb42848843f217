/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kubeclient — asynchronous HTTPS requests to the Kubernetes API server on the daemon's sd-event loop, with
 * libcurl's multi interface (HTTP/2 over TLS with ALPN where the server offers it, else HTTP/1.1; connections
 * reused; host names resolved by libcurl's resolver thread, never on the loop).
 *
 * Owns: the curl multi handle, one sd-event source per socket libcurl watches, its timer, every KubeRequest in
 * flight and a copy of the KubeConfig it was built from. A KubeRequest belongs to the client until its callback
 * has run (then it is freed) or until the caller cancels it (then no callback runs). Callbacks run from the loop,
 * never from inside kube_request() itself. Bounds: per-attempt timeout, response body size, attempts; retries
 * (transport errors, 429 and 5xx) back off 0.25 s, 0.5 s, 1 s, ... up to 4 s, and only for requests the caller
 * marked retryable (idempotent ones). The bearer token is read fresh per attempt (kube_config_token()).
 * Loop thread only.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "kubeconfig.h"
#include "macro.h"

typedef struct KubeClient KubeClient;
typedef struct KubeRequest KubeRequest;

typedef struct KubeResponse {
        int error;          /* 0 = an HTTP response arrived (any status); else -errno (-ETIMEDOUT, -ECONNREFUSED,
                             * -EPROTO for TLS failures, -EFBIG for an oversized body, -EIO, ...) */
        const char *reason; /* error text when error != 0 (libcurl's message) */
        long status;        /* HTTP status, 0 when error != 0 */
        const char *body;   /* NUL-terminated; "" when none */
        size_t body_len;
        uint64_t duration_usec; /* of the last attempt */
        unsigned attempts;
} KubeResponse;

/* Runs once per request unless cancelled. The request is freed right after it returns. */
typedef void (*kube_callback_t)(const KubeResponse *r, void *userdata);

typedef struct KubeRequestSpec {
        const char *method;      /* "GET", "POST", "PUT", "DELETE" */
        const char *path;        /* "/apis/...", appended to the server URL; already URL-encoded */
        const char *body;        /* JSON or NULL */
        uint64_t timeout_usec;   /* per attempt; 0 = 10 s */
        size_t max_body;         /* response bytes kept; 0 = 1 MiB */
        unsigned max_attempts;   /* 0 or 1 = no retry; more only for idempotent requests */
} KubeRequestSpec;

/* config is borrowed: it must stay valid until the client is freed or given another one. Each attempt copies
 * what it needs from it (URL, PEM blobs, the token), so requests in flight survive a config swap. */
int kube_client_new(sd_event *e, const KubeConfig *config, KubeClient **ret, char **ret_error);
/* Cancels every request (no callbacks) and frees everything. NULL-safe. */
KubeClient *kube_client_free(KubeClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(KubeClient *, kube_client_free)
const KubeConfig *kube_client_config(const KubeClient *c);
/* Reload: later attempts (and retries of requests in flight) use config. The old one may be freed now. */
void kube_client_set_config(KubeClient *c, const KubeConfig *config);

int kube_request(KubeClient *c, const KubeRequestSpec *spec, kube_callback_t cb, void *userdata, KubeRequest **ret);
/* Abandon a request: its callback will not run. NULL-safe. Must not be called from its own callback.
 * Callbacks may start and cancel other requests, but must not free the client (defer that). */
void kube_request_cancel(KubeRequest *r);

/* Percent-encode a query value. */
char *kube_url_escape(const char *s);
