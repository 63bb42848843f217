/* SPDX-License-Identifier: Apache-2.0 */
/*
 * leasecount — konn-agent's lease-based server count (protocol.md §3.4, --count-server-leases): every
 * --lease-count-interval (10 s, upstream's informer resync) it lists the Leases in --lease-namespace matching
 * --lease-label-selector and counts the valid ones (renewTime, else acquireTime, plus leaseDurationSeconds is in the
 * future); none valid counts as 1; a failed list keeps the last good count. The count goes to the manager, whose
 * sync loop uses it per --server-count-source. Counts the §9.3 lease metrics. Owns the Kubernetes client, its
 * configuration, its timer and the request in flight; owned by the Manager. Loop thread only.
 */
#pragma once

#include "agent-forward.h"

typedef struct LeaseCounter LeaseCounter;

/* Loads the kubeconfig (or in-cluster configuration) and lists at once. */
int lease_counter_new(Manager *m, LeaseCounter **ret);
LeaseCounter *lease_counter_free(LeaseCounter *lc);
/* Reload: re-read the kubeconfig (rotated credentials); on failure the running one stays (logged). */
int lease_counter_reload(LeaseCounter *lc);
