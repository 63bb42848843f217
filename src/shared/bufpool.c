/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "bufpool.h"

typedef struct FreeBuf {
        struct FreeBuf *next;
} FreeBuf;

static FreeBuf *free_list;
static size_t n_free;

uint8_t *bufpool_get(void) {
        FreeBuf *b = free_list;

        if (!b)
                return malloc(BUFPOOL_CHUNK);
        free_list = b->next;
        n_free--;
        return (uint8_t *) b;
}

void bufpool_put(uint8_t *p) {
        FreeBuf *b = (FreeBuf *) p;

        if (!p)
                return;
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

