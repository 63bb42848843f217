/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <sys/random.h>
#include <time.h>

#include "idmap.h"
#include "macro.h"

/* Layout: entries live in a dense array (key + value, 16 bytes each) in insertion order modulo
 * removals; a power-of-two table of uint32_t slots indexes into it with linear probing and
 * backward-shift deletion (no tombstones). Removing entry i moves the last dense entry into i.
 *
 * Iteration walks the dense array from the end to the start, so removing the entry just returned
 * only ever moves an already-visited entry into its place, and resizing the slot table never
 * disturbs a walk. The slot table grows at load > 3/4 and shrinks at load < 1/8 (never below
 * IDMAP_MIN_SLOTS); the dense array grows by 1.25x and, when less than half used, is cut back to
 * 1.25x its size (freed when empty). Together that is at most ~31 bytes per entry while growing.
 *
 * Keys may be chosen by a peer (dial randoms, connect IDs), so the hash is splitmix64's finalizer
 * over the key XORed with a per-map random seed: colliding keys cannot be precomputed. */

#define IDMAP_MIN_SLOTS 8U
#define IDMAP_MIN_ENTRIES 4U
#define IDMAP_EMPTY UINT32_MAX
#define IDMAP_MAX_ENTRIES ((size_t) UINT32_MAX / 2)

typedef struct IdMapEntry {
        int64_t key;
        void *value;
} IdMapEntry;

struct IdMap {
        IdMapEntry *entries; /* dense, n_entries used of n_alloc */
        size_t n_entries;
        size_t n_alloc;
        uint32_t *slots;     /* n_slots, a power of two; IDMAP_EMPTY or an index into entries */
        size_t n_slots;
        uint64_t seed;
};

static uint64_t hash_key(const IdMap *m, int64_t key) {
        uint64_t z = ((uint64_t) key ^ m->seed) + UINT64_C(0x9e3779b97f4a7c15);

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static uint64_t random_seed(const void *p) {
        uint64_t s;

        if (getrandom(&s, sizeof(s), GRND_NONBLOCK) == (ssize_t) sizeof(s))
                return s;

        /* Early boot without entropy: still better than a fixed seed. */
        return (uint64_t) (uintptr_t) p ^ ((uint64_t) time(NULL) << 20) ^ (uint64_t) getpid();
}

static uint32_t *slots_new(size_t n) {
        uint32_t *s = malloc(n * sizeof(uint32_t));

        if (s)
                memset(s, 0xff, n * sizeof(uint32_t)); /* IDMAP_EMPTY everywhere */
        return s;
}

static void slot_insert(IdMap *m, uint64_t h, uint32_t idx) {
        size_t mask = m->n_slots - 1;

        for (size_t i = h & mask;; i = (i + 1) & mask)
                if (m->slots[i] == IDMAP_EMPTY) {
                        m->slots[i] = idx;
                        return;
                }
}

/* The slot holding key, or SIZE_MAX. Terminates because the load is always < 1. */
static size_t slot_find(const IdMap *m, int64_t key) {
        size_t mask = m->n_slots - 1;

        for (size_t i = hash_key(m, key) & mask;; i = (i + 1) & mask) {
                uint32_t e = m->slots[i];

                if (e == IDMAP_EMPTY)
                        return SIZE_MAX;
                if (m->entries[e].key == key)
                        return i;
        }
}

/* Backward-shift deletion: pull later members of the probe run into the hole. */
static void slot_delete(IdMap *m, size_t hole) {
        size_t mask = m->n_slots - 1;

        for (size_t j = (hole + 1) & mask;; j = (j + 1) & mask) {
                uint32_t e = m->slots[j];
                size_t home;

                if (e == IDMAP_EMPTY)
                        break;

                home = hash_key(m, m->entries[e].key) & mask;
                /* The entry at j may move to hole unless its home lies cyclically in (hole, j]. */
                if (hole <= j ? (home <= hole || home > j) : (home <= hole && home > j)) {
                        m->slots[hole] = e;
                        hole = j;
                }
        }

        m->slots[hole] = IDMAP_EMPTY;
}

static int slots_resize(IdMap *m, size_t n_slots) {
        uint32_t *s;

        assert(n_slots >= IDMAP_MIN_SLOTS && (n_slots & (n_slots - 1)) == 0);
        assert(m->n_entries * 4 < n_slots * 3);

        s = slots_new(n_slots);
        if (!s)
                return -ENOMEM;

        free(m->slots);
        m->slots = s;
        m->n_slots = n_slots;
        for (size_t i = 0; i < m->n_entries; i++)
                slot_insert(m, hash_key(m, m->entries[i].key), (uint32_t) i);
        return 0;
}

IdMap *idmap_new(void) {
        _cleanup_free_ IdMap *m = NULL;

        m = malloc(sizeof(IdMap));
        if (!m)
                return NULL;

        *m = (IdMap) {
                .slots = slots_new(IDMAP_MIN_SLOTS),
                .n_slots = IDMAP_MIN_SLOTS,
        };
        if (!m->slots)
                return NULL;
        m->seed = random_seed(m);

        return TAKE_PTR(m);
}

IdMap *idmap_free(IdMap *m) {
        if (!m)
                return NULL;

        free(m->entries);
        free(m->slots);
        free(m);
        return NULL;
}

int idmap_put(IdMap *m, int64_t key, void *value) {
        int r;

        assert(m);

        if (!value)
                return -EINVAL;
        if (slot_find(m, key) != SIZE_MAX)
                return -EEXIST;
        if (m->n_entries >= IDMAP_MAX_ENTRIES)
                return -ENOMEM;

        if (m->n_entries == m->n_alloc) {
                size_t n = MAX((size_t) IDMAP_MIN_ENTRIES, m->n_alloc + MAX(m->n_alloc / 4, (size_t) 1));
                IdMapEntry *e = realloc(m->entries, n * sizeof(IdMapEntry));

                if (!e)
                        return -ENOMEM;
                m->entries = e;
                m->n_alloc = n;
        }

        if ((m->n_entries + 1) * 4 > m->n_slots * 3) {
                r = slots_resize(m, m->n_slots * 2);
                if (r < 0)
                        return r;
        }

        m->entries[m->n_entries] = (IdMapEntry) { .key = key, .value = value };
        slot_insert(m, hash_key(m, key), (uint32_t) m->n_entries);
        m->n_entries++;
        return 0;
}

void *idmap_get(const IdMap *m, int64_t key) {
        size_t i;

        if (!m)
                return NULL;

        i = slot_find(m, key);
        return i == SIZE_MAX ? NULL : m->entries[m->slots[i]].value;
}

static void maybe_shrink(IdMap *m) {
        /* Below load 1/8, resize to load 1/4..1/2 (normally a halving; more if earlier shrinks failed).
         * Failures are harmless here: the map just stays bigger than needed. */
        if (m->n_slots > IDMAP_MIN_SLOTS && m->n_entries * 8 < m->n_slots) {
                size_t n = IDMAP_MIN_SLOTS;

                while (n < m->n_entries * 4)
                        n *= 2;
                if (n < m->n_slots)
                        (void) slots_resize(m, n);
        }

        if (m->n_entries == 0) {
                free(m->entries);
                m->entries = NULL;
                m->n_alloc = 0;
        } else if (m->n_alloc > IDMAP_MIN_ENTRIES && m->n_entries < m->n_alloc / 2) {
                size_t n = MAX((size_t) IDMAP_MIN_ENTRIES, m->n_entries + m->n_entries / 4);
                IdMapEntry *e = realloc(m->entries, n * sizeof(IdMapEntry));

                if (e) {
                        m->entries = e;
                        m->n_alloc = n;
                }
        }
}

void *idmap_remove(IdMap *m, int64_t key) {
        size_t i, last;
        uint32_t idx;
        void *value;

        if (!m)
                return NULL;

        i = slot_find(m, key);
        if (i == SIZE_MAX)
                return NULL;

        idx = m->slots[i];
        value = m->entries[idx].value;
        slot_delete(m, i);

        last = m->n_entries - 1;
        if (idx != last) {
                /* Keep the array dense: move the last entry into the hole and repoint its slot.
                 * Its slot is found by key; the copy at idx has no slot yet, so only the slot
                 * pointing at last matches. */
                m->entries[idx] = m->entries[last];
                i = slot_find(m, m->entries[last].key);
                assert(i != SIZE_MAX && m->slots[i] == last);
                m->slots[i] = idx;
        }
        m->n_entries--;

        maybe_shrink(m);
        return value;
}

size_t idmap_size(const IdMap *m) {
        return m ? m->n_entries : 0;
}

bool idmap_iterate(IdMap *m, size_t *state, int64_t *ret_key, void **ret_value) {
        size_t pos;

        assert(state);

        /* *state == 0: not started; otherwise *state - 1 entries at the front are still unvisited. */
        pos = *state == 0 ? idmap_size(m) : MIN(*state - 1, idmap_size(m));
        if (pos == 0) {
                *state = 1;
                return false;
        }

        pos--;
        if (ret_key)
                *ret_key = m->entries[pos].key;
        if (ret_value)
                *ret_value = m->entries[pos].value;
        *state = pos + 1;
        return true;
}

void *idmap_steal_first(IdMap *m) {
        if (idmap_size(m) == 0)
                return NULL;

        /* The last dense entry: removing it moves nothing, so this is safe inside a walk too. */
        return idmap_remove(m, m->entries[m->n_entries - 1].key);
}

size_t idmap_capacity(const IdMap *m) {
        return m ? m->n_slots : 0;
}

size_t idmap_allocated(const IdMap *m) {
        if (!m)
                return 0;
        return sizeof(IdMap) + m->n_alloc * sizeof(IdMapEntry) + m->n_slots * sizeof(uint32_t);
}
