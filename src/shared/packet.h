/* SPDX-License-Identifier: Apache-2.0 */
/*
 * packet — the Konnectivity `Packet` protobuf codec (protocol.md §1), pure code, no allocation.
 * Owns nothing: a decoded Packet borrows the caller's input buffer (strings and DATA bytes point
 * into it, zero copy), so it is valid only as long as that buffer. Encoding writes into a buffer the
 * caller owns. Called from any context (loop callbacks, tests, fuzzers); never logs.
 */
#pragma once

#include <errno.h>
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
                } data;
                struct {
                        int64_t random;
                } dial_cls;
        };
} Packet;

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
