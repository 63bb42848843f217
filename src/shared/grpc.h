/* SPDX-License-Identifier: Apache-2.0 */
/*
 * grpc — gRPC length-prefixed message framing on one HTTP/2 stream, plus the small gRPC helpers
 * (status names, content-type check, grpc-message percent-encoding). Pure code, no nghttp2.
 * A GrpcReader is embedded in (and owned by) the per-stream object; it owns only its reassembly
 * buffer, freed by grpc_reader_done(). Called from the h2 layer's DATA-chunk callback on the loop.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GRPC_MESSAGE_MAX (4u * 1024u * 1024u) /* 4 MiB, the Go default receive limit */
#define GRPC_PREFIX_SIZE 5

typedef enum GrpcStatus {
        GRPC_STATUS_OK = 0,
        GRPC_STATUS_CANCELLED = 1,
        GRPC_STATUS_UNKNOWN = 2,
        GRPC_STATUS_INVALID_ARGUMENT = 3,
        GRPC_STATUS_DEADLINE_EXCEEDED = 4,
        GRPC_STATUS_NOT_FOUND = 5,
        GRPC_STATUS_ALREADY_EXISTS = 6,
        GRPC_STATUS_PERMISSION_DENIED = 7,
        GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
        GRPC_STATUS_FAILED_PRECONDITION = 9,
        GRPC_STATUS_ABORTED = 10,
        GRPC_STATUS_OUT_OF_RANGE = 11,
        GRPC_STATUS_UNIMPLEMENTED = 12,
        GRPC_STATUS_INTERNAL = 13,
        GRPC_STATUS_UNAVAILABLE = 14,
        GRPC_STATUS_DATA_LOSS = 15,
        GRPC_STATUS_UNAUTHENTICATED = 16,
} GrpcStatus;

/* Go codes.Code String(): "OK", "Canceled", "Unknown", ... "Unauthenticated". Out-of-range values
 * give "Unknown" (Go would print "Code(N)"). */
const char *grpc_status_to_string(GrpcStatus s);

/* Message prefix: flag 0 (uncompressed), big-endian length. */
void grpc_prefix_write(uint8_t out[GRPC_PREFIX_SIZE], uint32_t len);

/* "application/grpc" exactly, or followed by '+' or ';' (case-sensitive, as grpc-go). v need not be
 * NUL-terminated. */
bool grpc_content_type_ok(const char *v, size_t len);

/* Percent-encode a grpc-message value per the gRPC HTTP/2 spec (bytes outside 0x20-0x7E and '%' →
 * %XX, upper-case hex). Writes at most size-1 bytes plus NUL, truncating cleanly: never splitting an
 * escape, nor a UTF-8 sequence. Returns the length written (without the NUL). msg NULL = "". */
size_t grpc_message_encode(const char *msg, char *out, size_t size);

#define GRPC_HEAD_MAX 48 /* bytes of a split message offered to a head callback before it is streamed */

/* Initialise with designated initialisers, e.g. `GrpcReader r = { .max = 64 * 1024 };`. */
typedef struct GrpcReader {
        uint8_t prefix[GRPC_PREFIX_SIZE];
        uint8_t head_len;   /* bytes collected in head[] (a split message's first bytes) */
        bool streaming;     /* the current message's body goes to the body callback as it arrives */
        size_t prefix_len;
        uint32_t msg_len;   /* of the message being assembled */
        uint32_t body_left; /* streaming: body bytes still to come */
        uint8_t *buf;       /* reassembly buffer, allocated only while a split message is pending */
        size_t buf_len;
        uint32_t max;       /* size limit; 0 means GRPC_MESSAGE_MAX */
        int error;          /* sticky: set by a failed grpc_reader_feed(), cleared by grpc_reader_done() */
        uint8_t head[GRPC_HEAD_MAX];
} GrpcReader;

/* Called once per complete message. `msg` is valid only during the call: it points either into the
 * chunk passed to grpc_reader_feed() (zero copy: whole message inside one chunk) or into the reader's
 * reassembly buffer. Return 0 to continue, negative errno to stop feeding (propagated). */
typedef int (*grpc_message_cb)(const uint8_t *msg, size_t len, void *userdata);

/* Feed one chunk of stream bytes. Returns 0, or: -EMSGSIZE when a prefix announces more than the
 * limit (detected as soon as the 5-byte prefix is complete); -EPROTONOSUPPORT for the compressed
 * flag; -EBADMSG for any other flag value; -ENOMEM; or the callback's negative return. The flag is
 * checked before the length. After an error the reader is unusable (every later feed returns the
 * same error) until grpc_reader_done(). */
int grpc_reader_feed(GrpcReader *r, const uint8_t *data, size_t len, grpc_message_cb cb, void *userdata);

/* Streamed delivery. A message that does not lie whole in the chunk at hand is offered to head() once its first
 * min(msg_len, GRPC_HEAD_MAX) bytes are known (when msg_len <= GRPC_HEAD_MAX that is the whole message, which goes
 * to message() instead). head() returns n > 0 when the first n bytes are the message's header and the rest should
 * stream: those bytes then go to body() as they arrive, in order and in place (several calls; `last` marks the one
 * that ends the message), and nothing is buffered. head() returns 0 to have the message reassembled and passed to
 * message() whole, or a negative errno to stop (propagated). */
typedef struct GrpcReaderCallbacks {
        grpc_message_cb message;
        int (*head)(const uint8_t *head, size_t len, uint32_t msg_len, void *userdata);
        int (*body)(const uint8_t *data, size_t len, bool last, void *userdata);
} GrpcReaderCallbacks;

/* As grpc_reader_feed(), with streamed delivery when cbs->head and cbs->body are set. */
int grpc_reader_feed_stream(GrpcReader *r, const uint8_t *data, size_t len, const GrpcReaderCallbacks *cbs,
                            void *userdata);

/* Bytes fed but not yet handed to a callback (a partial prefix, head or reassembled message). */
size_t grpc_reader_held(const GrpcReader *r);

/* Frees the reassembly buffer and resets the state (keeping .max); the reader may be reused after. */
void grpc_reader_done(GrpcReader *r);

/* True when no partial prefix/message is pending and no error occurred (clean end of stream). */
bool grpc_reader_idle(const GrpcReader *r);
