/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lease — konn-server's lease controller (protocol.md §10, --enable-lease-controller): holds the Lease
 * "konnectivity-proxy-server-<serverID>" in --lease-namespace (holderIdentity = server ID, --lease-duration 30 s,
 * labels --lease-label), renews it every --lease-renew-interval (15 s) (create when missing, update with the resourceVersion read, re-read on 409),
 * garbage-collects expired Leases matching --lease-label (delete with a resourceVersion precondition, so a Lease
 * renewed meanwhile survives), and deletes its own Lease on graceful stop so agents count one server fewer at once.
 * Counts the §9.2 lease metrics. Owns its timer and the requests in flight; owned by the Manager.
 * Loop thread only.
 */
#pragma once

#include "server-forward.h"

#define LEASE_NAME_PREFIX "konnectivity-proxy-server-"

/* Starts at once (first renewal on the next loop iteration). */
int lease_controller_new(Manager *m, LeaseController **ret);
LeaseController *lease_controller_free(LeaseController *lc);
/* Graceful stop: stop renewing, delete our Lease (at most 3 s), then done(userdata) from the loop. */
int lease_controller_stop(LeaseController *lc, void (*done)(void *userdata), void *userdata);
