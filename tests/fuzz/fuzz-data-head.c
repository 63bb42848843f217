/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <stdio.h>

#include "macro.h"
#include "packet.h"
#include "fuzz-check.h"

/* packet_decode_data_head() against packet_decode(), the final word. The input is one whole message. For every
 * head length 0..min(size, 64): when the head parser says "streamable DATA" the whole message must decode as DATA
 * with the same connect_id, no error text, and its payload exactly the bytes after the header; and the answer must
 * not change with more head bytes. Conversely a message that packet_encode() reproduces byte for byte (the layout
 * konn and Go write) with a non-empty payload must be recognised as soon as its header is in the head. */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEAD_SCAN 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ uint8_t *copy = NULL, *out = NULL;
        size_t first_hdr = 0, hdr_len, out_len = 0;
        bool canonical = false, seen = false;
        Packet whole, p;
        int dr, k;

        /* A private copy of exactly size bytes: ASan catches any read past the head length asked for. */
        copy = malloc(size ?: 1);
        CHECK(copy);
        memcpy(copy, data, size);

        dr = packet_decode(copy, size, &whole);
        if (dr == 0 && whole.type == PACKET_DATA && whole.data.error.len == 0 && whole.data.data_len > 0) {
                size_t n = packet_encoded_size(&whole);

                out = malloc(n ?: 1);
                CHECK(out);
                canonical = packet_encode(&whole, out, n, &out_len) == 0 && out_len == size &&
                            memcmp(out, copy, size) == 0;
        }

        for (size_t len = 0; len <= MIN(size, (size_t) HEAD_SCAN); len++) {
                _cleanup_free_ uint8_t *head = malloc(len ?: 1);

                CHECK(head);
                memcpy(head, copy, len);
                p = (Packet) { .type = -1 };
                hdr_len = SIZE_MAX;
                k = packet_decode_data_head(head, len, size, &p, &hdr_len);
                CHECK(k == 0 || k == 1);
                if (k == 0) {
                        CHECK(!seen); /* once recognised, more head bytes cannot change the answer */
                        continue;
                }

                CHECK(hdr_len <= len);
                CHECK(hdr_len < size); /* at least one payload byte */
                CHECK(p.type == PACKET_DATA);
                CHECK(dr == 0);
                CHECK(whole.type == PACKET_DATA);
                CHECK(whole.data.error.len == 0);
                CHECK(whole.data.connect_id == p.data.connect_id);
                CHECK(whole.data.data_len == size - hdr_len);
                CHECK(whole.data.data == copy + hdr_len);
                if (seen)
                        CHECK(hdr_len == first_hdr);
                else {
                        seen = true;
                        first_hdr = hdr_len;
                        CHECK(len == hdr_len); /* recognised as soon as the header is complete */
                }
        }

        /* Every canonical DATA message with its header inside the scanned range was recognised. */
        if (canonical && size - whole.data.data_len <= HEAD_SCAN) {
                CHECK(seen);
                CHECK(first_hdr == size - whole.data.data_len);
        }
        return 0;
}
