/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kubeobj — the few Kubernetes API objects konn speaks, as JSON (json-c): TokenReview
 * (authentication.k8s.io/v1) requests and responses, Lease (coordination.k8s.io/v1) objects and lists, Status
 * error messages, label strings ("k=v,k=v") and MicroTime timestamps. Pure functions on buffers: no I/O, no
 * loop, no global state (fuzzable). Results are flat values owned by the caller (free with the *_done()
 * functions). Malformed JSON or objects of the wrong shape are -EBADMSG, never a crash.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KUBE_JSON_DEPTH_MAX 32

/* {"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":..,"audiences":[audience]}}
 * (audiences omitted when audience is NULL). */
int kube_tokenreview_request(const char *token, const char *audience, char **ret_json);

typedef struct KubeTokenReview {
        bool authenticated;
        char *username; /* status.user.username, or NULL */
        char *error;    /* status.error, or NULL */
} KubeTokenReview;

int kube_tokenreview_parse(const char *body, size_t size, KubeTokenReview *ret);
void kube_tokenreview_done(KubeTokenReview *r);

/* The "exp" claim of a JWT (seconds since the epoch), read without verifying anything: only used to keep a
 * cached review from outliving the token. -ENODATA when token is not a JWT or has no numeric exp. */
int kube_jwt_exp(const char *token, int64_t *ret);

typedef struct KubeLease {
        char *name;
        char *resource_version;
        char *holder;              /* spec.holderIdentity, or NULL */
        int64_t duration_sec;      /* spec.leaseDurationSeconds, 0 if unset */
        int64_t acquire_usec;      /* spec.acquireTime, CLOCK_REALTIME µs, 0 if unset */
        int64_t renew_usec;        /* spec.renewTime, 0 if unset */
} KubeLease;

/* A Lease object for create (resource_version NULL) or update (PUT with the version read). labels: "k=v,k=v"
 * (may be NULL or empty). Times in CLOCK_REALTIME µs. */
int kube_lease_build(const char *ns, const char *name, const char *holder, int64_t duration_sec, const char *labels,
                     int64_t acquire_usec, int64_t renew_usec, const char *resource_version, char **ret_json);
int kube_lease_parse(const char *body, size_t size, KubeLease *ret);
/* A LeaseList: *ret is an array of *ret_n leases (free with kube_lease_list_free()). */
int kube_lease_list_parse(const char *body, size_t size, KubeLease **ret, size_t *ret_n);
void kube_lease_done(KubeLease *l);
void kube_lease_list_free(KubeLease *l, size_t n);
/* Valid = (renewTime, else acquireTime) + leaseDurationSeconds is after now (upstream's isLeaseValid()). */
bool kube_lease_valid(const KubeLease *l, int64_t now_usec);

/* A Status object's "message", or NULL (malloc'd). */
char *kube_status_message(const char *body, size_t size);

/* "k=v,k=v" with Kubernetes label syntax (name parts [A-Za-z0-9._-/], values up to 63 chars). -EINVAL. */
int kube_labels_validate(const char *s);

#define KUBE_TIME_MAX 64
/* MicroTime: "2006-01-02T15:04:05.000000Z". */
const char *kube_time_format(int64_t usec, char buf[static KUBE_TIME_MAX]);
/* RFC 3339 with optional fraction, 'Z' or ±hh:mm. -EINVAL. */
int kube_time_parse(const char *s, int64_t *ret_usec);
