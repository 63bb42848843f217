/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "bufpool.h"

typedef struct FreeBuf {
        struct FreeBuf *next;
} FreeBuf;

static FreeBuf *free_list;
static size_t n_free;
static size_t n_taken;
size_t bufpool_chunk = BUFPOOL_CHUNK_DEFAULT;

int bufpool_set_chunk_size(size_t size) {
        if (size < BUFPOOL_CHUNK_MIN || size > BUFPOOL_CHUNK_MAX)
                return -ERANGE;
        if (size == bufpool_chunk)
                return 0;
        if (n_taken > 0)
                return -EBUSY;
        bufpool_trim();
        bufpool_chunk = size;
        return 0;
}

uint8_t *bufpool_get(void) {
        FreeBuf *b = free_list;

        if (!b) {
                uint8_t *p = malloc(BUFPOOL_HEADROOM + bufpool_chunk);
                if (p)
                        n_taken++;
                return p;
        }
        n_taken++;
        free_list = b->next;
        n_free--;
        return (uint8_t *) b;
}

void bufpool_put(uint8_t *p) {
        FreeBuf *b = (FreeBuf *) p;

        if (!p)
                return;
        n_taken--;
        if (n_free >= BUFPOOL_MAX_FREE) {
                free(p);
                return;
        }
        b->next = free_list;
        free_list = b;
        n_free++;
}

void bufpool_trim(void) {
        while (free_list) {
                FreeBuf *b = free_list;
                free_list = b->next;
                free(b);
        }
        n_free = 0;
}

