/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

/*
 * How the resolver stays off the loop without ever freeing memory glibc still uses:
 *
 *  - Each name lookup is one getaddrinfo_a(GAI_NOWAIT) request with SIGEV_THREAD notification. The
 *    notify function runs on a glibc thread and does two things only: write 1 to the eventfd and
 *    drop the query reference glibc holds. The loop's eventfd source then scans its pending queries
 *    with gai_error() and calls back for every one that is no longer EAI_INPROGRESS.
 *  - A ResolveQuery carries two references: the loop's and glibc's (dropped by the notify function).
 *    The last one frees the query, on whichever thread that happens. The eventfd lives in a separate
 *    refcounted Notifier that every query references, so a notify function running after
 *    resolver_free() still writes to our eventfd, never to a closed or reused fd number.
 *  - Cancel never calls gai_cancel(). In glibc (checked on Debian 12's 2.36 under valgrind, and in
 *    upstream resolv/gai_misc.c) a successful gai_cancel() leaks the request's async_waitlist (104
 *    bytes) and its request-pool slot and never sends the notification; and glibc starts a worker
 *    thread immediately, so most cancels would get EAI_NOTCANCELED anyway. A cancelled query is
 *    orphaned instead: no callback, memory kept until glibc finishes, and its max_inflight slot kept
 *    until then too, so max_inflight bounds the lookups glibc runs on our behalf. Orphans are reaped
 *    (by gai_error(), not by the notification) on every eventfd wake-up, and before -EBUSY is
 *    returned, so even a lost notification does not cost a slot for ever.
 *  - resolver_free() does not wait: it drops the loop's references and glibc's notify function frees
 *    what is left. The only leak is when glibc fails to create the notify thread (out of memory or
 *    threads): that query's memory is never freed. Its slot is still reaped as above.
 *  - Numeric hosts never reach getaddrinfo_a(): getaddrinfo(AI_NUMERICHOST) converts them without
 *    NSS or I/O, and the result goes through the same done list and eventfd wake-up, so the callback
 *    never runs inside resolver_resolve().
 *  - AI_ADDRCONFIG is off: glibc ignores loopback addresses for it, so on a loopback-only machine it
 *    would hide "localhost". Dialling an address family the host lacks fails fast anyway.
 */

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/eventfd.h>

#include "resolver.h"

/* The eventfd, shared by the Resolver and every query glibc may still notify about. */
typedef struct Notifier {
        atomic_uint n_ref;
        int fd;
} Notifier;

typedef enum QueryState {
        QUERY_PENDING,  /* on r->pending: glibc is working on it */
        QUERY_DONE,     /* on r->done: finished, callback due */
        QUERY_ORPHANED, /* on r->orphans: cancelled while glibc is still working on it */
        QUERY_DETACHED, /* on no list: its callback is running, or it is only waiting for glibc */
} QueryState;

struct ResolveQuery {
        /* First member: glibc's request list points here, so an in-flight query stays reachable. */
        struct gaicb gaicb;
        struct addrinfo hints;
        char service[sizeof("65535")];
        char *host;

        /* The loop's reference, plus one while glibc owes us the notify call. */
        atomic_uint n_ref;
        Notifier *notifier;

        /* Loop thread only. */
        Resolver *resolver;
        QueryState state;
        int gai_ret;
        resolve_cb cb;
        void *userdata;
        LIST_FIELDS(ResolveQuery, queries);
};

struct Resolver {
        sd_event *event;
        sd_event_source *notify_source;
        Notifier *notifier;

        unsigned max_inflight;
        unsigned n_inflight; /* queries on pending + done + orphans */
        bool dispatching;

        ResolveQuery *pending;
        ResolveQuery *done;
        ResolveQuery *orphans;
};

static Notifier *notifier_ref(Notifier *n) {
        atomic_fetch_add_explicit(&n->n_ref, 1, memory_order_relaxed);
        return n;
}

static Notifier *notifier_unref(Notifier *n) {
        if (!n)
                return NULL;

        if (atomic_fetch_sub_explicit(&n->n_ref, 1, memory_order_acq_rel) == 1) {
                safe_close(n->fd);
                free(n);
        }
        return NULL;
}

/* Any thread. */
static void notifier_poke(Notifier *n) {
        static const uint64_t one = 1;
        ssize_t k;

        /* Can only fail with EAGAIN when the counter is about to overflow: then it is non-zero
         * already, and the loop will wake up anyway. */
        k = write(n->fd, &one, sizeof(one));
        (void) k;
}

/* Any thread. */
static void query_unref(ResolveQuery *q) {
        if (atomic_fetch_sub_explicit(&q->n_ref, 1, memory_order_acq_rel) != 1)
                return;

        if (q->gaicb.ar_result)
                freeaddrinfo(q->gaicb.ar_result);
        free(q->host);
        notifier_unref(q->notifier);
        free(q);
}

/* glibc's SIGEV_THREAD notification, on a thread of its own. Touches nothing the loop owns. */
static void query_notify(union sigval v) {
        ResolveQuery *q = v.sival_ptr;

        notifier_poke(q->notifier);
        query_unref(q);
}

static bool query_finished(ResolveQuery *q) {
        int e;

        e = gai_error(&q->gaicb);
        if (e == EAI_INPROGRESS)
                return false;

        /* glibc's worker stores ar_result before the status it returns; read them in that order. */
        atomic_thread_fence(memory_order_acquire);
        q->gai_ret = e;
        return true;
}

/* Take q off the books: it no longer occupies a slot and will never be called back. The caller has
 * removed it from its list already. */
static void query_detach(Resolver *r, ResolveQuery *q) {
        assert(r->n_inflight > 0);

        r->n_inflight--;
        q->state = QUERY_DETACHED;
        q->resolver = NULL;
}

static void resolver_reap_orphans(Resolver *r) {
        ResolveQuery *q, *n;

        LIST_FOREACH_SAFE(queries, q, n, r->orphans)
                if (query_finished(q)) {
                        LIST_REMOVE(queries, r->orphans, q);
                        query_detach(r, q);
                        query_unref(q);
                }
}

static void resolver_collect(Resolver *r) {
        ResolveQuery *q, *n;

        /* pending is newest first, so prepending to done puts the oldest first. */
        LIST_FOREACH_SAFE(queries, q, n, r->pending)
                if (query_finished(q)) {
                        LIST_REMOVE(queries, r->pending, q);
                        LIST_PREPEND(queries, r->done, q);
                        q->state = QUERY_DONE;
                }

        resolver_reap_orphans(r);
}

const char *resolve_error_to_string(int error) {
        switch (error) {
        case -EBUSY:
                return "resolver busy";
        case -EINVAL:
        case -ENXIO:
                return "no such host";
        case -EAGAIN:
                return "temporary failure in name resolution";
        case -ENOMEM:
                return "cannot allocate memory";
        default:
                return "server misbehaving";
        }
}

static int gai_to_errno(int e, const char **ret_reason) {
        int error;

        switch (e) {
        case EAI_NONAME:
        case EAI_NODATA:
                error = -ENXIO;
                break;
        case EAI_FAIL:
                error = -EBADMSG;
                break;
        case EAI_AGAIN:
                error = -EAGAIN;
                break;
        case EAI_MEMORY:
                error = -ENOMEM;
                break;
        default:
                /* What Go's cgo resolver reports for the rest. */
                *ret_reason = gai_strerror(e);
                return -EIO;
        }

        *ret_reason = resolve_error_to_string(error);
        return error;
}

static void query_deliver(ResolveQuery *q) {
        const char *reason = NULL;
        int error = 0;

        if (q->gai_ret != 0)
                error = gai_to_errno(q->gai_ret, &reason);
        else if (!q->gaicb.ar_result)
                error = gai_to_errno(EAI_NONAME, &reason);

        q->cb(q, error, reason, error == 0 ? q->gaicb.ar_result : NULL, q->userdata);
}

static int resolver_on_notify(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Resolver *r = userdata;
        uint64_t v;
        ssize_t k;

        k = read(fd, &v, sizeof(v)); /* EAGAIN: woken for nothing, or by a numeric query */
        (void) k;

        resolver_collect(r);

        /* Re-read the head each time: a callback may cancel other done queries or add new ones. */
        r->dispatching = true;
        while (r->done) {
                ResolveQuery *q = r->done;

                LIST_REMOVE(queries, r->done, q);
                query_detach(r, q);
                query_deliver(q);
                query_unref(q);
        }
        r->dispatching = false;

        return 0;
}

int resolver_new(sd_event *e, unsigned max_inflight, Resolver **ret) {
        _cleanup_(resolver_freep) Resolver *r = NULL;
        int k;

        if (!e || max_inflight == 0 || !ret)
                return -EINVAL;

        r = calloc(1, sizeof(Resolver));
        if (!r)
                return -ENOMEM;
        r->max_inflight = max_inflight;

        r->notifier = calloc(1, sizeof(Notifier));
        if (!r->notifier)
                return -ENOMEM;
        atomic_init(&r->notifier->n_ref, 1);
        r->notifier->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (r->notifier->fd < 0)
                return -errno;

        k = sd_event_add_io(e, &r->notify_source, r->notifier->fd, EPOLLIN, resolver_on_notify, r);
        if (k < 0)
                return k;
        (void) sd_event_source_set_description(r->notify_source, "resolver-notify");

        r->event = sd_event_ref(e);

        *ret = TAKE_PTR(r);
        return 0;
}

static void resolver_drop_list(Resolver *r, ResolveQuery **head) {
        ResolveQuery *q;

        while ((q = *head)) {
                LIST_REMOVE(queries, *head, q);
                query_detach(r, q);
                query_unref(q);
        }
}

Resolver *resolver_free(Resolver *r) {
        if (!r)
                return NULL;

        /* The dispatch loop would walk a freed resolver. */
        assert(!r->dispatching);

        /* Queries glibc still works on survive on glibc's reference; query_notify() frees them. */
        resolver_drop_list(r, &r->pending);
        resolver_drop_list(r, &r->done);
        resolver_drop_list(r, &r->orphans);

        r->notify_source = sd_event_source_disable_unref(r->notify_source);
        r->notifier = notifier_unref(r->notifier);
        r->event = sd_event_unref(r->event);
        free(r);
        return NULL;
}

static bool host_is_numeric(const char *host) {
        char buf[RESOLVER_HOST_MAX + 1];
        union {
                struct in_addr a4;
                struct in6_addr a6;
        } a;
        char *zone;

        if (inet_pton(AF_INET, host, &a.a4) == 1)
                return true;
        if (!strchr(host, ':'))
                return false;

        /* IPv6, maybe with a zone, which getaddrinfo(AI_NUMERICHOST) handles. */
        (void) snprintf(buf, sizeof(buf), "%s", host);
        zone = strchr(buf, '%');
        if (zone)
                *zone = '\0';
        return inet_pton(AF_INET6, buf, &a.a6) == 1;
}

int resolver_resolve(Resolver *r, const char *host, uint16_t port, resolve_cb cb, void *userdata,
                     ResolveQuery **ret) {
        ResolveQuery *q;
        size_t l;

        if (!r || !host || !cb)
                return -EINVAL;

        l = strlen(host);
        if (l == 0 || l > RESOLVER_HOST_MAX)
                return -EINVAL;

        if (r->n_inflight >= r->max_inflight)
                resolver_reap_orphans(r);
        if (r->n_inflight >= r->max_inflight)
                return -EBUSY;

        q = calloc(1, sizeof(ResolveQuery));
        if (!q)
                return -ENOMEM;
        q->host = strdup(host);
        if (!q->host) {
                free(q);
                return -ENOMEM;
        }
        (void) snprintf(q->service, sizeof(q->service), "%u", port);
        q->hints = (struct addrinfo) {
                .ai_flags = AI_NUMERICSERV,
                .ai_family = AF_UNSPEC,
                .ai_socktype = SOCK_STREAM,
                .ai_protocol = IPPROTO_TCP,
        };
        q->gaicb = (struct gaicb) {
                .ar_name = q->host,
                .ar_service = q->service,
                .ar_request = &q->hints,
        };
        q->notifier = notifier_ref(r->notifier);
        q->resolver = r;
        q->cb = cb;
        q->userdata = userdata;

        if (host_is_numeric(host)) {
                struct addrinfo hints = q->hints;

                atomic_init(&q->n_ref, 1);
                hints.ai_flags |= AI_NUMERICHOST;
                q->gai_ret = getaddrinfo(q->host, q->service, &hints, &q->gaicb.ar_result);
                q->state = QUERY_DONE;
                LIST_PREPEND(queries, r->done, q);
                notifier_poke(r->notifier);
        } else {
                struct sigevent sev = {
                        .sigev_notify = SIGEV_THREAD,
                        .sigev_notify_function = query_notify,
                        .sigev_value.sival_ptr = q,
                };
                struct gaicb *list[] = { &q->gaicb };
                int k;

                /* Before submitting: the notification may run before getaddrinfo_a() returns. */
                atomic_init(&q->n_ref, 2);

                k = getaddrinfo_a(GAI_NOWAIT, list, 1, &sev);
                if (k == EAI_SYSTEM) {
                        /* Not enqueued (no memory or thread). glibc still runs the notify function
                         * for the empty batch, and that drops glibc's reference. */
                        query_unref(q);
                        return -EAGAIN;
                }
                if (k != 0) {
                        /* EAI_AGAIN: enqueued and running, but glibc could not allocate the
                         * notification, so none will come. Keep it as an orphan until it is done. */
                        atomic_fetch_sub_explicit(&q->n_ref, 1, memory_order_relaxed);
                        q->cb = NULL;
                        q->state = QUERY_ORPHANED;
                        LIST_PREPEND(queries, r->orphans, q);
                        r->n_inflight++;
                        return -ENOMEM;
                }

                q->state = QUERY_PENDING;
                LIST_PREPEND(queries, r->pending, q);
        }

        r->n_inflight++;
        if (ret)
                *ret = q;
        return 0;
}

ResolveQuery *resolve_query_cancel(ResolveQuery *q) {
        Resolver *r;

        if (!q)
                return NULL;

        r = q->resolver;
        switch (q->state) {

        case QUERY_PENDING:
                LIST_REMOVE(queries, r->pending, q);
                if (query_finished(q)) {
                        query_detach(r, q);
                        query_unref(q);
                } else {
                        q->cb = NULL;
                        q->state = QUERY_ORPHANED;
                        LIST_PREPEND(queries, r->orphans, q);
                }
                break;

        case QUERY_DONE:
                LIST_REMOVE(queries, r->done, q);
                query_detach(r, q);
                query_unref(q);
                break;

        case QUERY_DETACHED:
                /* Called from its own callback: nothing left to cancel. */
                break;

        case QUERY_ORPHANED:
                assert(!"query cancelled twice");
                break;
        }

        return NULL;
}

unsigned resolver_inflight(const Resolver *r) {
        return r ? r->n_inflight : 0;
}
