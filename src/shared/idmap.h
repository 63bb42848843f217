/* SPDX-License-Identifier: Apache-2.0 */
/*
 * idmap — a hash map from int64_t keys (connect IDs, dial randoms) to non-NULL void * values.
 * The map is owned by whoever created it; it never owns, frees or touches its values.
 * Not thread-safe; used from the event loop only. O(1) average put/get/remove; memory grows and
 * shrinks with the number of entries (at most ~31 bytes per entry while growing).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct IdMap IdMap;

IdMap *idmap_new(void);                            /* NULL on OOM */
IdMap *idmap_free(IdMap *m);                       /* frees the map only, not the values; NULL-safe */
int idmap_put(IdMap *m, int64_t key, void *value); /* -EEXIST if present, -ENOMEM, -EINVAL if !value */
void *idmap_get(const IdMap *m, int64_t key);      /* NULL if absent */
void *idmap_remove(IdMap *m, int64_t key);         /* the removed value, or NULL if absent */
size_t idmap_size(const IdMap *m);

/* Visit every entry once; *state starts at 0. Returns false when done. Removing the entry just
 * returned (idmap_remove() or idmap_steal_first()) is allowed during the walk; any other change
 * may make the walk skip or repeat entries. The order is unspecified. */
bool idmap_iterate(IdMap *m, size_t *state, int64_t *ret_key, void **ret_value);

/* Remove and return some value, NULL if empty (teardown loops). */
void *idmap_steal_first(IdMap *m);

/* Diagnostics for tests: number of hash slots, and bytes currently allocated for the map. */
size_t idmap_capacity(const IdMap *m);
size_t idmap_allocated(const IdMap *m);

DEFINE_TRIVIAL_CLEANUP_FUNC(IdMap *, idmap_free)
