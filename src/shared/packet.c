/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <assert.h>
#include <stdbool.h>

#include "macro.h"
#include "packet.h"

/*
 * The schema (protocol.md §1.3) is described by two small tables: one per oneof member listing its
 * fields, and the member table indexed by PacketType. Decoding and encoding both walk these tables,
 * so field numbers live in exactly one place. Every field number in the schema is below 16, so each
 * tag is a single byte on encode.
 */

enum {
        WIRE_VARINT = 0,
        WIRE_FIXED64 = 1,
        WIRE_LEN = 2,
        WIRE_SGROUP = 3,
        WIRE_EGROUP = 4,
        WIRE_FIXED32 = 5,
};

#define FIELD_NUMBER_MAX ((UINT32_C(1) << 29) - 1)
#define VARINT_MAX_BYTES 10
#define PACKET_FIELD_TYPE 1

typedef enum FieldKind {
        FIELD_INT64,  /* int64_t at .offset */
        FIELD_STRING, /* PacketStr at .offset, must be UTF-8 */
        FIELD_BYTES,  /* const uint8_t * at .offset, size_t at .len_offset */
} FieldKind;

typedef struct FieldDesc {
        uint32_t number;
        FieldKind kind;
        size_t offset;
        size_t len_offset;
} FieldDesc;

typedef struct MemberDesc {
        uint32_t number; /* field number of the oneof member inside Packet */
        const FieldDesc *fields;
        size_t n_fields;
} MemberDesc;

#define F_INT64(n, m) { .number = (n), .kind = FIELD_INT64, .offset = offsetof(Packet, m) }
#define F_STRING(n, m) { .number = (n), .kind = FIELD_STRING, .offset = offsetof(Packet, m) }
#define F_BYTES(n, m, l)                                                          \
        { .number = (n), .kind = FIELD_BYTES, .offset = offsetof(Packet, m),     \
          .len_offset = offsetof(Packet, l) }

/* Sorted by field number: encoding emits them in this order, as Go does. */
static const FieldDesc dial_req_fields[] = {
        F_STRING(1, dial_req.protocol),
        F_STRING(2, dial_req.address),
        F_INT64(3, dial_req.random),
};
static const FieldDesc dial_rsp_fields[] = {
        F_STRING(1, dial_rsp.error),
        F_INT64(2, dial_rsp.connect_id),
        F_INT64(3, dial_rsp.random),
};
static const FieldDesc close_req_fields[] = {
        F_INT64(1, close_req.connect_id),
};
static const FieldDesc close_rsp_fields[] = {
        F_STRING(1, close_rsp.error),
        F_INT64(2, close_rsp.connect_id),
};
static const FieldDesc data_fields[] = {
        F_INT64(1, data.connect_id),
        F_STRING(2, data.error),
        F_BYTES(3, data.data, data.data_len),
};
static const FieldDesc dial_cls_fields[] = {
        F_INT64(1, dial_cls.random),
};

static const MemberDesc members[_PACKET_TYPE_MAX] = {
        [PACKET_DIAL_REQ] = { 2, dial_req_fields, ELEMENTSOF(dial_req_fields) },
        [PACKET_DIAL_RSP] = { 3, dial_rsp_fields, ELEMENTSOF(dial_rsp_fields) },
        [PACKET_DATA] = { 4, data_fields, ELEMENTSOF(data_fields) },
        [PACKET_CLOSE_REQ] = { 5, close_req_fields, ELEMENTSOF(close_req_fields) },
        [PACKET_CLOSE_RSP] = { 6, close_rsp_fields, ELEMENTSOF(close_rsp_fields) },
        [PACKET_DIAL_CLS] = { 7, dial_cls_fields, ELEMENTSOF(dial_cls_fields) },
        [PACKET_DRAIN] = { 8, NULL, 0 },
};

static const char *const packet_type_table[_PACKET_TYPE_MAX] = {
        [PACKET_DIAL_REQ] = "DIAL_REQ",
        [PACKET_DIAL_RSP] = "DIAL_RSP",
        [PACKET_CLOSE_REQ] = "CLOSE_REQ",
        [PACKET_CLOSE_RSP] = "CLOSE_RSP",
        [PACKET_DATA] = "DATA",
        [PACKET_DIAL_CLS] = "DIAL_CLS",
        [PACKET_DRAIN] = "DRAIN",
};

const char *packet_type_to_string(PacketType t) {
        if (t < 0 || t >= _PACKET_TYPE_MAX)
                return "Unknown";
        return packet_type_table[t];
}

static bool type_is_valid(PacketType t) {
        return t >= 0 && t < _PACKET_TYPE_MAX;
}

/* Strict UTF-8 as Go's utf8.Valid: no overlongs, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const uint8_t *s, size_t len) {
        size_t i = 0;

        while (i < len) {
                uint8_t c = s[i];
                uint8_t lo = 0x80, hi = 0xBF;
                size_t n;

                if (c < 0x80) {
                        i++;
                        continue;
                }
                if (c >= 0xC2 && c <= 0xDF)
                        n = 1;
                else if (c >= 0xE0 && c <= 0xEF) {
                        n = 2;
                        if (c == 0xE0)
                                lo = 0xA0;
                        else if (c == 0xED)
                                hi = 0x9F;
                } else if (c >= 0xF0 && c <= 0xF4) {
                        n = 3;
                        if (c == 0xF0)
                                lo = 0x90;
                        else if (c == 0xF4)
                                hi = 0x8F;
                } else
                        return false;

                if (len - i - 1 < n)
                        return false;
                if (s[i + 1] < lo || s[i + 1] > hi)
                        return false;
                for (size_t k = 2; k <= n; k++)
                        if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                                return false;
                i += n + 1;
        }
        return true;
}

/* ---- decoding ---- */

typedef struct Cursor {
        const uint8_t *p, *end;
} Cursor;

typedef struct Field {
        uint32_t number;
        unsigned wire_type;
        uint64_t value;     /* WIRE_VARINT */
        const uint8_t *ptr; /* WIRE_LEN */
        size_t len;
} Field;

static int read_varint(Cursor *c, uint64_t *ret) {
        uint64_t v = 0;

        for (unsigned i = 0; i < VARINT_MAX_BYTES; i++) {
                uint8_t b;

                if (c->p >= c->end)
                        return -EBADMSG;
                b = *c->p++;
                /* The 10th byte may carry only bit 63. */
                if (i == VARINT_MAX_BYTES - 1 && b > 1)
                        return -EBADMSG;
                v |= (uint64_t) (b & 0x7F) << (7 * i);
                if (!(b & 0x80)) {
                        *ret = v;
                        return 0;
                }
        }
        return -EBADMSG;
}

static int skip_bytes(Cursor *c, size_t n) {
        if ((size_t) (c->end - c->p) < n)
                return -EBADMSG;
        c->p += n;
        return 0;
}

/* Returns 1 and fills *ret when a field was read, 0 at the end of the buffer. */
static int next_field(Cursor *c, Field *ret) {
        Field f = {};
        uint64_t tag, n;
        int r;

        if (c->p >= c->end)
                return 0;

        r = read_varint(c, &tag);
        if (r < 0)
                return r;
        if (tag >> 3 == 0 || tag >> 3 > FIELD_NUMBER_MAX)
                return -EBADMSG;
        f.number = (uint32_t) (tag >> 3);
        f.wire_type = (unsigned) (tag & 7);

        switch (f.wire_type) {
        case WIRE_VARINT:
                r = read_varint(c, &f.value);
                break;
        case WIRE_FIXED64:
                r = skip_bytes(c, 8);
                break;
        case WIRE_FIXED32:
                r = skip_bytes(c, 4);
                break;
        case WIRE_LEN:
                r = read_varint(c, &n);
                if (r < 0)
                        break;
                if (n > (uint64_t) (c->end - c->p))
                        return -EBADMSG;
                f.ptr = c->p;
                f.len = (size_t) n;
                c->p += n;
                break;
        default: /* groups (3, 4) and the undefined wire types 6, 7 */
                return -EBADMSG;
        }
        if (r < 0)
                return r;

        *ret = f;
        return 1;
}

static const FieldDesc *member_find_field(const MemberDesc *m, uint32_t number) {
        for (size_t i = 0; i < m->n_fields; i++)
                if (m->fields[i].number == number)
                        return &m->fields[i];
        return NULL;
}

/* Parse one occurrence of a oneof member into p, merging over what is already there. */
static int member_parse(const MemberDesc *m, const uint8_t *buf, size_t len, Packet *p) {
        Cursor c = { .p = buf, .end = buf + len };
        uint8_t *base = (uint8_t *) p;
        int r;

        for (;;) {
                const FieldDesc *d;
                Field f;

                r = next_field(&c, &f);
                if (r < 0)
                        return r;
                if (r == 0)
                        return 0;

                d = member_find_field(m, f.number);
                if (!d)
                        continue; /* unknown field */

                switch (d->kind) {
                case FIELD_INT64:
                        if (f.wire_type != WIRE_VARINT)
                                continue; /* wrong wire type: Go keeps it as an unknown field */
                        *(int64_t *) (base + d->offset) = (int64_t) f.value;
                        break;
                case FIELD_STRING:
                        if (f.wire_type != WIRE_LEN)
                                continue;
                        if (!utf8_valid(f.ptr, f.len))
                                return -EBADMSG;
                        *(PacketStr *) (base + d->offset) = (PacketStr) {
                                .ptr = (const char *) f.ptr,
                                .len = f.len,
                        };
                        break;
                case FIELD_BYTES:
                        if (f.wire_type != WIRE_LEN)
                                continue;
                        *(const uint8_t **) (base + d->offset) = f.ptr;
                        *(size_t *) (base + d->len_offset) = f.len;
                        break;
                }
        }
}

static PacketType member_type_for_field(uint32_t number) {
        for (PacketType t = 0; t < _PACKET_TYPE_MAX; t++)
                if (members[t].number == number)
                        return t;
        return _PACKET_TYPE_INVALID;
}

int packet_decode(const uint8_t *buf, size_t len, Packet *ret) {
        Cursor c = { .p = buf, .end = buf ? buf + len : NULL };
        PacketType member = _PACKET_TYPE_INVALID;
        int32_t type = 0;
        Packet p = {};
        int r;

        assert(buf || len == 0);
        assert(ret);

        for (;;) {
                PacketType t;
                Field f;

                r = next_field(&c, &f);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;

                if (f.number == PACKET_FIELD_TYPE) {
                        /* An enum is an int32: Go truncates the varint to 32 bits. */
                        if (f.wire_type == WIRE_VARINT)
                                type = (int32_t) (uint32_t) f.value;
                        continue;
                }

                t = member_type_for_field(f.number);
                if (t < 0 || f.wire_type != WIRE_LEN)
                        continue; /* unknown field, or a member with the wrong wire type */

                /* The same member again merges into it; another member replaces the payload. */
                if (t != member) {
                        p = (Packet) {};
                        member = t;
                }
                r = member_parse(&members[t], f.ptr, f.len, &p);
                if (r < 0)
                        return r;
        }

        if (!type_is_valid(type))
                return -EOPNOTSUPP;
        if (member != (PacketType) type)
                return -EPROTO;

        p.type = type;
        *ret = p;
        return 0;
}

/* ---- encoding ---- */

static size_t varint_size(uint64_t v) {
        size_t n = 1;

        while (v >= 0x80) {
                v >>= 7;
                n++;
        }
        return n;
}

static size_t varint_write(uint8_t *buf, uint64_t v) {
        size_t n = 0;

        while (v >= 0x80) {
                buf[n++] = (uint8_t) (v | 0x80);
                v >>= 7;
        }
        buf[n++] = (uint8_t) v;
        return n;
}

static uint8_t tag_byte(uint32_t number, unsigned wire_type) {
        assert(number < 16);
        return (uint8_t) (number << 3 | wire_type);
}

/* Size of field d's encoding in p, 0 when it holds the proto3 default and is omitted. */
static size_t field_size(const FieldDesc *d, const Packet *p) {
        const uint8_t *base = (const uint8_t *) p;
        size_t len;

        switch (d->kind) {
        case FIELD_INT64: {
                int64_t v = *(const int64_t *) (base + d->offset);
                return v == 0 ? 0 : 1 + varint_size((uint64_t) v);
        }
        case FIELD_STRING:
                len = ((const PacketStr *) (base + d->offset))->len;
                break;
        case FIELD_BYTES:
                len = *(const size_t *) (base + d->len_offset);
                break;
        default:
                assert(false);
                return 0;
        }
        return len == 0 ? 0 : 1 + varint_size(len) + len;
}

static size_t member_body_size(const MemberDesc *m, const Packet *p) {
        size_t n = 0;

        for (size_t i = 0; i < m->n_fields; i++)
                n += field_size(&m->fields[i], p);
        return n;
}

size_t packet_encoded_size(const Packet *p) {
        size_t body, n = 0;

        assert(p);

        if (!type_is_valid(p->type))
                return 0;

        if (p->type != 0)
                n += 1 + varint_size((uint64_t) (int64_t) p->type);
        body = member_body_size(&members[p->type], p);
        return n + 1 + varint_size(body) + body;
}

static size_t field_write(const FieldDesc *d, const Packet *p, uint8_t *buf) {
        const uint8_t *base = (const uint8_t *) p;
        const uint8_t *src;
        size_t n, len;

        switch (d->kind) {
        case FIELD_INT64: {
                int64_t v = *(const int64_t *) (base + d->offset);
                if (v == 0)
                        return 0;
                buf[0] = tag_byte(d->number, WIRE_VARINT);
                return 1 + varint_write(buf + 1, (uint64_t) v);
        }
        case FIELD_STRING: {
                const PacketStr *s = (const PacketStr *) (base + d->offset);
                src = (const uint8_t *) s->ptr;
                len = s->len;
                break;
        }
        case FIELD_BYTES:
                src = *(const uint8_t *const *) (base + d->offset);
                len = *(const size_t *) (base + d->len_offset);
                break;
        default:
                assert(false);
                return 0;
        }
        if (len == 0)
                return 0;
        assert(src);
        buf[0] = tag_byte(d->number, WIRE_LEN);
        n = 1 + varint_write(buf + 1, len);
        memcpy(buf + n, src, len);
        return n + len;
}

int packet_encode(const Packet *p, uint8_t *buf, size_t size, size_t *ret_len) {
        const MemberDesc *m;
        size_t total, body, n = 0;

        assert(p);
        assert(buf || size == 0);

        if (!type_is_valid(p->type))
                return -EINVAL;
        m = &members[p->type];

        /* Go's Marshal refuses invalid UTF-8 in proto3 strings, and its Unmarshal would too. */
        for (size_t i = 0; i < m->n_fields; i++)
                if (m->fields[i].kind == FIELD_STRING) {
                        const PacketStr *s = (const PacketStr *) ((const uint8_t *) p + m->fields[i].offset);
                        assert(s->ptr || s->len == 0);
                        if (s->len > 0 && !utf8_valid((const uint8_t *) s->ptr, s->len))
                                return -EINVAL;
                }

        total = packet_encoded_size(p);
        if (size < total)
                return -ENOBUFS;

        if (p->type != 0) {
                buf[n++] = tag_byte(PACKET_FIELD_TYPE, WIRE_VARINT);
                n += varint_write(buf + n, (uint64_t) (int64_t) p->type);
        }
        body = member_body_size(m, p);
        buf[n++] = tag_byte(m->number, WIRE_LEN);
        n += varint_write(buf + n, body);
        for (size_t i = 0; i < m->n_fields; i++)
                n += field_write(&m->fields[i], p, buf + n);

        assert(n == total);
        if (ret_len)
                *ret_len = n;
        return 0;
}

int packet_encode_data_header(int64_t connect_id, size_t data_len,
                              uint8_t *buf, size_t size, size_t *ret_len) {
        uint8_t tmp[PACKET_DATA_HEADER_MAX];
        size_t body = 0, n = 0;

        assert(buf || size == 0);

        if (data_len > SIZE_MAX - PACKET_DATA_HEADER_MAX)
                return -EMSGSIZE;

        if (connect_id != 0)
                body += 1 + varint_size((uint64_t) connect_id);
        if (data_len > 0)
                body += 1 + varint_size(data_len) + data_len;

        /* Assemble in a scratch buffer so that -ENOBUFS leaves buf untouched. */
        tmp[n++] = tag_byte(PACKET_FIELD_TYPE, WIRE_VARINT);
        tmp[n++] = PACKET_DATA;
        tmp[n++] = tag_byte(members[PACKET_DATA].number, WIRE_LEN);
        n += varint_write(tmp + n, body);
        if (connect_id != 0) {
                tmp[n++] = tag_byte(data_fields[0].number, WIRE_VARINT);
                n += varint_write(tmp + n, (uint64_t) connect_id);
        }
        if (data_len > 0) {
                tmp[n++] = tag_byte(data_fields[2].number, WIRE_LEN);
                n += varint_write(tmp + n, data_len);
        }
        assert(n <= sizeof(tmp));

        if (size < n)
                return -ENOBUFS;
        memcpy(buf, tmp, n);
        if (ret_len)
                *ret_len = n;
        return 0;
}

int packet_decode_data_head(const uint8_t *head, size_t len, size_t msg_len, Packet *ret, size_t *ret_hdr_len) {
        Cursor c = { .p = head, .end = head ? head + MIN(len, msg_len) : NULL };
        const uint8_t *sub_start;
        uint64_t type, sub_len, v, data_len;
        int64_t connect_id = 0;

        assert(head || len == 0);
        assert(ret && ret_hdr_len);

        /* The layout packet_encode() and Go's proto.Marshal produce, and no other: type, then the Data member
         * running to the end of the message, its data field last and running to the end as well. Anything else
         * (an error text, unknown or repeated fields, another order) is not streamable: the caller reassembles
         * the message and packet_decode() has the final word. */
        if (c.p >= c.end || *c.p++ != tag_byte(PACKET_FIELD_TYPE, WIRE_VARINT))
                return 0;
        if (read_varint(&c, &type) < 0 || type != PACKET_DATA)
                return 0;
        if (c.p >= c.end || *c.p++ != tag_byte(members[PACKET_DATA].number, WIRE_LEN))
                return 0;
        if (read_varint(&c, &sub_len) < 0 || sub_len != msg_len - (size_t) (c.p - head))
                return 0;
        sub_start = c.p;
        if (c.p < c.end && *c.p == tag_byte(data_fields[0].number, WIRE_VARINT)) {
                c.p++;
                if (read_varint(&c, &v) < 0)
                        return 0;
                connect_id = (int64_t) v;
        }
        if (c.p >= c.end || *c.p++ != tag_byte(data_fields[2].number, WIRE_LEN))
                return 0;
        if (read_varint(&c, &data_len) < 0 || data_len == 0 ||
            data_len != sub_len - (uint64_t) (c.p - sub_start))
                return 0;

        *ret = (Packet) { .type = PACKET_DATA, .data.connect_id = connect_id };
        *ret_hdr_len = (size_t) (c.p - head);
        return 1;
}
