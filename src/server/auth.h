/* SPDX-License-Identifier: Apache-2.0 */
/*
 * auth — token authentication of agent streams (protocol.md §3.1, §3.2): the "authorization: Bearer" metadata is
 * reviewed with an authentication.k8s.io/v1 TokenReview (audience --authentication-audience), and the returned
 * username must be system:serviceaccount:<--agent-namespace>:<--agent-service-account>. Reviews run on the loop
 * through the KubeClient (never blocking other agents or tunnels); successful ones are cached by the token's
 * SHA-256 for --authentication-cache-ttl, never past the token's own exp claim, in a bounded table.
 * Fail closed: while the API server cannot answer, agents are refused and /readyz says why (auth_unavailable()).
 *
 * Owns: the cache and the "unavailable" reason. Embedded in the Manager. A review belongs to the Backend waiting
 * for it (auth_cancel() on free). Loop thread only.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "kubeclient.h"
#include "server-forward.h"

#define AUTH_CACHE_MAX 1024

typedef struct AuthCacheEntry {
        uint8_t hash[32];
        int64_t expires_usec; /* CLOCK_REALTIME; 0 = free slot */
} AuthCacheEntry;

typedef struct Auth {
        AuthCacheEntry cache[AUTH_CACHE_MAX];
        unsigned next_slot;     /* round-robin replacement when full */
        char *unavailable;      /* why the last review could not be done (API server down, refused us, ...) */
} Auth;

/* Result of a review, delivered to the backend: ok, or refused with a reason (one log line is the caller's). */
typedef void (*auth_done_t)(Backend *b, bool ok, const char *reason);

/* Start authenticating b from its authorization metadata (authorization: the single value, NULL when absent).
 * Returns 1 when the token is in the cache (accept now), 0 when a review was started (done() follows unless
 * auth_cancel()), or -EACCES with *ret_reason for an immediate refusal (no/malformed metadata), or another
 * -errno (then *ret_reason too). */
int auth_start(Manager *m, Backend *b, const char *authorization, auth_done_t done, const char **ret_reason);
void auth_cancel(Backend *b);
/* NULL when reviews work (or none has failed since the last success), else the reason. */
const char *auth_unavailable(const Manager *m);
void auth_done(Auth *a);
