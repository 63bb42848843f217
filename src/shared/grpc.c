/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>

#include "grpc.h"
#include "macro.h"

/*
 * The reader copies nothing it does not have to: a message whose body lies entirely inside one
 * chunk is handed to the callback in place. Only when a body actually spans chunks is a buffer of
 * exactly msg_len bytes allocated, and only once the first body byte is at hand (a prefix that ends
 * a chunk does not allocate: the next chunk may still hold the whole body).
 */

static const char *const grpc_status_table[] = {
        [GRPC_STATUS_OK] = "OK",
        [GRPC_STATUS_CANCELLED] = "Canceled",
        [GRPC_STATUS_UNKNOWN] = "Unknown",
        [GRPC_STATUS_INVALID_ARGUMENT] = "InvalidArgument",
        [GRPC_STATUS_DEADLINE_EXCEEDED] = "DeadlineExceeded",
        [GRPC_STATUS_NOT_FOUND] = "NotFound",
        [GRPC_STATUS_ALREADY_EXISTS] = "AlreadyExists",
        [GRPC_STATUS_PERMISSION_DENIED] = "PermissionDenied",
        [GRPC_STATUS_RESOURCE_EXHAUSTED] = "ResourceExhausted",
        [GRPC_STATUS_FAILED_PRECONDITION] = "FailedPrecondition",
        [GRPC_STATUS_ABORTED] = "Aborted",
        [GRPC_STATUS_OUT_OF_RANGE] = "OutOfRange",
        [GRPC_STATUS_UNIMPLEMENTED] = "Unimplemented",
        [GRPC_STATUS_INTERNAL] = "Internal",
        [GRPC_STATUS_UNAVAILABLE] = "Unavailable",
        [GRPC_STATUS_DATA_LOSS] = "DataLoss",
        [GRPC_STATUS_UNAUTHENTICATED] = "Unauthenticated",
};

const char *grpc_status_to_string(GrpcStatus s) {
        if ((unsigned) s >= ELEMENTSOF(grpc_status_table))
                return "Unknown";
        return grpc_status_table[s];
}

void grpc_prefix_write(uint8_t out[GRPC_PREFIX_SIZE], uint32_t len) {
        assert(out);

        out[0] = 0;
        out[1] = (uint8_t) (len >> 24);
        out[2] = (uint8_t) (len >> 16);
        out[3] = (uint8_t) (len >> 8);
        out[4] = (uint8_t) len;
}

bool grpc_content_type_ok(const char *v, size_t len) {
        static const char base[] = "application/grpc";

        if (!v || len < STRLEN(base))
                return false;
        if (memcmp(v, base, STRLEN(base)) != 0)
                return false;
        return len == STRLEN(base) || v[STRLEN(base)] == '+' || v[STRLEN(base)] == ';';
}

size_t grpc_message_encode(const char *msg, char *out, size_t size) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = 0, lead = SIZE_MAX; /* output offset of the current UTF-8 lead byte, if any */

        if (size == 0)
                return 0;
        assert(out);

        for (const uint8_t *s = (const uint8_t *) (msg ?: ""); *s; s++) {
                uint8_t c = *s;
                bool esc = c < 0x20 || c > 0x7E || c == '%';
                bool continuation = (c & 0xC0) == 0x80;

                if (!continuation)
                        lead = c >= 0xC0 ? n : SIZE_MAX;

                if (size - 1 - n < (esc ? 3u : 1u)) {
                        /* Out of room: drop a partially written UTF-8 sequence as well. */
                        if (continuation && lead != SIZE_MAX)
                                n = lead;
                        break;
                }

                if (esc) {
                        out[n++] = '%';
                        out[n++] = hex[c >> 4];
                        out[n++] = hex[c & 0xF];
                } else
                        out[n++] = (char) c;
        }

        out[n] = '\0';
        return n;
}

static uint32_t reader_limit(const GrpcReader *r) {
        return r->max > 0 ? r->max : GRPC_MESSAGE_MAX;
}

/* The prefix is complete: validate it and load msg_len. */
static int reader_parse_prefix(GrpcReader *r) {
        uint32_t len;

        switch (r->prefix[0]) {
        case 0:
                break;
        case 1:
                return -EPROTONOSUPPORT; /* compressed; we never negotiate a grpc-encoding */
        default:
                return -EBADMSG;
        }

        len = (uint32_t) r->prefix[1] << 24 | (uint32_t) r->prefix[2] << 16 | (uint32_t) r->prefix[3] << 8 |
              (uint32_t) r->prefix[4];
        if (len > reader_limit(r))
                return -EMSGSIZE;

        r->msg_len = len;
        r->buf_len = 0;
        return 0;
}

/* Streaming: hand the next body bytes of the current message to cbs->body. */
static int reader_body(GrpcReader *r, const uint8_t *data, size_t n, const GrpcReaderCallbacks *cbs,
                       void *userdata) {
        r->body_left -= (uint32_t) n;
        if (r->body_left == 0) {
                r->streaming = false;
                r->prefix_len = 0;
        }
        return cbs->body(data, n, !r->streaming, userdata);
}

/* A message is split across chunks and has a head callback: collect its head (in place when the chunk holds it)
 * and let the callback choose. Returns 1 when the caller should go on reassembling into r->buf, 0 to continue with
 * the next message or body bytes (or to wait for more input when *off == len), or a negative errno. */
static int reader_head(GrpcReader *r, const uint8_t *data, size_t len, size_t *off, const GrpcReaderCallbacks *cbs,
                       void *userdata) {
        size_t want = MIN((size_t) r->msg_len, (size_t) GRPC_HEAD_MAX), avail = len - *off, n;
        uint8_t copy[GRPC_HEAD_MAX];
        const uint8_t *head;
        int k;

        if (r->head_len == 0 && avail >= want)
                head = data + *off; /* not consumed yet: what the callback leaves is body */
        else {
                n = MIN(want - r->head_len, avail);
                memcpy(r->head + r->head_len, data + *off, n);
                r->head_len += (uint8_t) n;
                *off += n;
                if (r->head_len < want)
                        return 0;
                /* Callbacks may reset the reader: work on a copy. */
                memcpy(copy, r->head, want);
                r->head_len = 0;
                head = copy;
        }

        if (want == r->msg_len) {
                /* A small message, whole now. */
                r->prefix_len = 0;
                k = cbs->message(head, want, userdata);
                return k < 0 ? k : 0;
        }

        k = cbs->head(head, want, r->msg_len, userdata);
        if (k < 0)
                return k;
        if (k > 0) {
                assert((size_t) k <= want);
                r->streaming = true;
                r->body_left = r->msg_len - (uint32_t) k;
                if (head != copy) {
                        *off += (size_t) k;
                        return 0;
                }
                if ((size_t) k == want)
                        return 0;
                k = reader_body(r, copy + k, want - (size_t) k, cbs, userdata);
                return k < 0 ? k : 0;
        }

        /* Reassemble, starting with the head bytes already taken from earlier chunks. */
        r->buf = malloc(r->msg_len);
        if (!r->buf)
                return -ENOMEM;
        r->buf_len = 0;
        if (head == copy) {
                memcpy(r->buf, copy, want);
                r->buf_len = want;
        }
        return 1;
}

static int reader_feed(GrpcReader *r, const uint8_t *data, size_t len, const GrpcReaderCallbacks *cbs,
                       void *userdata) {
        size_t off = 0;
        int k;

        for (;;) {
                uint32_t msg_len;
                size_t avail, n;

                if (r->prefix_len < GRPC_PREFIX_SIZE) {
                        if (off == len)
                                return 0;
                        n = MIN(GRPC_PREFIX_SIZE - r->prefix_len, len - off);
                        memcpy(r->prefix + r->prefix_len, data + off, n);
                        r->prefix_len += n;
                        off += n;
                        if (r->prefix_len < GRPC_PREFIX_SIZE)
                                return 0;

                        k = reader_parse_prefix(r);
                        if (k < 0)
                                return k;
                }

                msg_len = r->msg_len;
                avail = len - off;

                if (r->streaming) {
                        if (avail == 0)
                                return 0;
                        n = MIN(avail, (size_t) r->body_left);
                        off += n;
                        k = reader_body(r, data + off - n, n, cbs, userdata);
                        if (k < 0)
                                return k;
                        continue;
                }

                if (!r->buf) {
                        if (r->head_len == 0 && avail >= msg_len) {
                                /* Whole body inside this chunk: zero copy. */
                                const uint8_t *msg = data ? data + off : NULL;

                                off += msg_len;
                                r->prefix_len = 0;
                                k = cbs->message(msg, msg_len, userdata);
                                if (k < 0)
                                        return k;
                                continue;
                        }
                        if (avail == 0)
                                return 0; /* keep waiting; the next chunk may hold it all */

                        if (cbs->head && cbs->body) {
                                k = reader_head(r, data, len, &off, cbs, userdata);
                                if (k < 0)
                                        return k;
                                if (k == 0)
                                        continue;
                        } else {
                                r->buf = malloc(msg_len);
                                if (!r->buf)
                                        return -ENOMEM;
                                r->buf_len = 0;
                        }
                        avail = len - off;
                }

                if (avail == 0)
                        return 0;
                n = MIN((size_t) msg_len - r->buf_len, avail);
                memcpy(r->buf + r->buf_len, data + off, n);
                r->buf_len += n;
                off += n;
                if (r->buf_len < msg_len)
                        return 0;

                {
                        /* Reset before the callback so that the reader is consistent whatever it does. */
                        _cleanup_free_ uint8_t *msg = TAKE_PTR(r->buf);

                        r->buf_len = 0;
                        r->prefix_len = 0;
                        k = cbs->message(msg, msg_len, userdata);
                        if (k < 0)
                                return k;
                }
        }
}

int grpc_reader_feed_stream(GrpcReader *r, const uint8_t *data, size_t len, const GrpcReaderCallbacks *cbs,
                            void *userdata) {
        int k;

        assert(r);
        assert(data || len == 0);
        assert(cbs && cbs->message);

        if (r->error < 0)
                return r->error;

        k = reader_feed(r, data, len, cbs, userdata);
        if (k < 0)
                r->error = k;
        return k;
}

int grpc_reader_feed(GrpcReader *r, const uint8_t *data, size_t len, grpc_message_cb cb, void *userdata) {
        return grpc_reader_feed_stream(r, data, len, &(const GrpcReaderCallbacks){ .message = cb }, userdata);
}

size_t grpc_reader_held(const GrpcReader *r) {
        assert(r);
        if (r->streaming)
                return 0;
        return r->prefix_len + r->head_len + r->buf_len;
}

void grpc_reader_done(GrpcReader *r) {
        if (!r)
                return;
        free(r->buf);
        *r = (GrpcReader) { .max = r->max };
}

bool grpc_reader_idle(const GrpcReader *r) {
        assert(r);
        return r->prefix_len == 0 && !r->buf && r->error == 0;
}
