/* SPDX-License-Identifier: Apache-2.0 */
/*
 * packet — the Konnectivity `Packet` protobuf codec (protocol.md §1), pure code, no allocation.
 * Owns nothing: a decoded Packet borrows the caller's input buffer (strings and DATA bytes point
 * into it, zero copy), so it is valid only as long as that buffer. Encoding writes into a buffer the
 * caller owns. Called from any context (loop callbacks, tests, fuzzers); never logs.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum PacketType {
        PACKET_DIAL_REQ = 0,
        PACKET_DIAL_RSP = 1,
        PACKET_CLOSE_REQ = 2,
        PACKET_CLOSE_RSP = 3,
        PACKET_DATA = 4,
        PACKET_DIAL_CLS = 5,
        PACKET_DRAIN = 6,
        _PACKET_TYPE_MAX,
        _PACKET_TYPE_INVALID = -EINVAL,
} PacketType;

/* Points into the input buffer, not NUL-terminated. */
typedef struct PacketStr {
        const char *ptr;
        size_t len;
} PacketStr;

/* The union member in use is the one named after `type` (DRAIN has none). */
typedef struct Packet {
        PacketType type;
        union {
                struct {
                        PacketStr protocol, address;
                        int64_t random;
                } dial_req;
                struct {
                        PacketStr error;
                        int64_t connect_id, random;
                } dial_rsp;
                struct {
                        int64_t connect_id;
                } close_req;
                struct {
                        PacketStr error;
                        int64_t connect_id;
                } close_rsp;
                struct {
                        int64_t connect_id;
                        PacketStr error;
                        const uint8_t *data;
                        size_t data_len;
                        /* Streamed delivery (h2conn): a later piece of a DATA message whose first piece was
                         * already handed over with the same connect_id; not a packet of its own. */
                        bool continued;
                } data;
                struct {
                        int64_t random;
                } dial_cls;
        };
} Packet;

/* False for the later pieces of a streamed DATA message: count and answer a packet once, on its first piece. */
static inline bool packet_is_new(const Packet *p) {
        return p->type != PACKET_DATA || !p->data.continued;
}

#define PACKET_DATA_HEADER_MAX 40 /* upper bound of packet_encode_data_header() output */

/* "DIAL_REQ", ... "DRAIN"; "Unknown" for anything else. */
const char *packet_type_to_string(PacketType t);

/* Decode one Packet (proto3 wire format). On success fills *ret (pointers into buf) and returns 0.
 * -EBADMSG: wire malformation (truncation, bad varint, bad wire type or field number, group,
 *           invalid UTF-8 in a string field);
 * -EOPNOTSUPP: well-formed but `type` is not 0..6 (the caller should ignore the packet);
 * -EPROTO: known type whose oneof payload is absent or is another member.
 * A known field arriving with an unexpected wire type is skipped like an unknown field (as Go does). */
int packet_decode(const uint8_t *buf, size_t len, Packet *ret);

/* Exact size packet_encode() writes for p; 0 if p->type is not 0..6. */
size_t packet_encoded_size(const Packet *p);

/* Encode byte-identically to Go protobuf. -EINVAL: type not 0..6, or a string field is not valid
 * UTF-8 (Go would refuse to decode it); -ENOBUFS: size < packet_encoded_size(p), nothing written.
 * ret_len may be NULL. */
int packet_encode(const Packet *p, uint8_t *buf, size_t size, size_t *ret_len);

/* Encode a DATA packet {connect_id, data of data_len bytes} without the payload bytes: the caller
 * appends data_len bytes after the *ret_len written and gets exactly packet_encode()'s output.
 * At most PACKET_DATA_HEADER_MAX bytes. -ENOBUFS if size is too small, -EMSGSIZE if data_len is
 * absurdly large (the total would not fit in size_t). ret_len may be NULL. */
int packet_encode_data_header(int64_t connect_id, size_t data_len,
                              uint8_t *buf, size_t size, size_t *ret_len);

/* Streamed delivery of a DATA message whose bytes are still arriving: look at its first len bytes (head) of
 * msg_len. Returns 1 when the message is a DATA packet laid out as packet_encode() and Go write it (type,
 * then the Data member with an optional connect_id and the data field last, both running to the end of the
 * message, no error text, at least one payload byte) and its header ends inside head: *ret gets the type and
 * connect_id (no data) and *ret_hdr_len the header length; the other msg_len - *ret_hdr_len bytes are the payload.
 * Returns 0 otherwise (not DATA, another layout, or the header does not fit in head): reassemble the message and
 * use packet_decode(). Never fails otherwise; the payload needs no validation. */
int packet_decode_data_head(const uint8_t *head, size_t len, size_t msg_len, Packet *ret, size_t *ret_hdr_len);
