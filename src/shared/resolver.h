/* SPDX-License-Identifier: Apache-2.0 */
/*
 * resolver — asynchronous host-name resolution for dial requests, on glibc's getaddrinfo_a().
 * Owns every ResolveQuery and one eventfd source on the loop. The Resolver is owned by the daemon's
 * Manager (one per process); a caller holds its ResolveQuery only as a handle for cancelling it.
 * All functions and callbacks run on the sd-event loop thread. glibc's threads only run the
 * SIGEV_THREAD notify function, which writes the eventfd and drops an atomic reference.
 */
#pragma once

#include <netdb.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct Resolver Resolver;         /* owned by the daemon's manager; one per process */
typedef struct ResolveQuery ResolveQuery; /* owned by the resolver; the caller holds a cancellable handle */

/* Longest host name accepted (RFC 1035 text form, with a trailing dot). */
#define RESOLVER_HOST_MAX 254U

/* Called on the loop, at most once per query, never after resolve_query_cancel(). On success error
 * is 0 and ai is a non-empty list (AF_INET and/or AF_INET6, SOCK_STREAM, port filled in) valid only
 * during the call. On failure ai is NULL, error is one of the codes below and reason is Go's text
 * for it (valid during the call):
 *   -ENXIO   "no such host"                          (EAI_NONAME, EAI_NODATA)
 *   -EBADMSG "server misbehaving"                    (EAI_FAIL)
 *   -EAGAIN  "temporary failure in name resolution"  (EAI_AGAIN: timeout, SERVFAIL)
 *   -ENOMEM  "cannot allocate memory"                (EAI_MEMORY)
 *   -EIO     glibc's gai_strerror() text             (anything else, e.g. EAI_SYSTEM)
 * The query handle is dead once the callback returns. The callback may start new queries and cancel
 * other ones (or call resolve_query_cancel() on q itself, a no-op), but must not free the resolver. */
typedef void (*resolve_cb)(ResolveQuery *q, int error, const char *reason, const struct addrinfo *ai,
                           void *userdata);

/* max_inflight ≥ 1 bounds the queries that occupy a slot: from resolver_resolve() until the callback
 * has run, or, if cancelled, until glibc has finished the lookup (cancel does not interrupt glibc, see
 * resolver.c), so it also bounds the lookups glibc runs for us. -EINVAL for a NULL event loop or
 * max_inflight 0. Takes a reference on the event loop. */
int resolver_new(sd_event *e, unsigned max_inflight, Resolver **ret);

/* Cancels everything; no callback is called. Does not block: lookups glibc is still running keep
 * their memory until they finish (then the notify function frees it). NULL-safe, returns NULL.
 * Must not be called from inside a resolve_cb. */
Resolver *resolver_free(Resolver *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(Resolver *, resolver_free);

/* Resolve host (a name or numeric IP, no brackets, no port) for a TCP dial to `port`. Numeric hosts
 * are short-circuited (getaddrinfo(AI_NUMERICHOST), no thread, no I/O); names go to getaddrinfo_a()
 * with AF_UNSPEC/SOCK_STREAM and no AI_ADDRCONFIG. The callback always comes later from the loop,
 * never from inside this call. *ret (may be NULL) is written on success. Errors: -EBUSY when
 * max_inflight slots are in use, -EINVAL for NULL arguments or a host that cannot be a host name
 * (empty or longer than RESOLVER_HOST_MAX: report it as "no such host", as Go would), -ENOMEM,
 * -EAGAIN if glibc could not start the lookup. */
int resolver_resolve(Resolver *r, const char *host, uint16_t port, resolve_cb cb, void *userdata,
                     ResolveQuery **ret);

/* NULL-safe. Afterwards cb is never called for q and the handle is dead. Returns NULL. */
ResolveQuery *resolve_query_cancel(ResolveQuery *q);

/* Slots in use (see resolver_new()); 0 for NULL. */
unsigned resolver_inflight(const Resolver *r);

/* Go's reason text for an error passed to resolve_cb or returned by resolver_resolve():
 * -EBUSY → "resolver busy", -EINVAL and -ENXIO → "no such host", -EBADMSG → "server misbehaving",
 * -EAGAIN → "temporary failure in name resolution", -ENOMEM → "cannot allocate memory", anything
 * else → "server misbehaving". */
const char *resolve_error_to_string(int error);
