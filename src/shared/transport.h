/* SPDX-License-Identifier: Apache-2.0 */
/*
 * transport — one connected, non-blocking byte stream: a plain socket (Unix or TCP) or TLS on a socket.
 * Owns the fd and the TlsConn; whoever holds the Transport (an H2Conn, a frontend tunnel, an agent endpoint)
 * owns it. Called from the loop only. Errors are negative errno; -EAGAIN means "wait for transport_events()".
 */
#pragma once

#include <sys/types.h>

#include "macro.h"
#include "tls.h"

typedef struct Transport {
        int fd;
        TlsConn *tls;       /* NULL for plain sockets */
        uint32_t want;      /* EPOLL* the last -EAGAIN waits for */
} Transport;

#define TRANSPORT_NULL ((Transport){ .fd = -EBADF })

/* Takes ownership of fd (and tls, if not NULL) — also on failure of later calls. */
void transport_init(Transport *t, int fd, TlsConn *tls);
void transport_done(Transport *t);  /* closes everything; idempotent */

int transport_handshake(Transport *t);  /* 0 when complete (or plain), -EAGAIN, -EPROTO, ... */
ssize_t transport_read(Transport *t, void *buf, size_t size);         /* >0, 0 = EOF, -EAGAIN, <0 */
ssize_t transport_write(Transport *t, const void *buf, size_t size);  /* >0, -EAGAIN, <0 */
/* Coalesce writes (TLS: records leave together at transport_flush(); plain sockets write at once anyway). */
void transport_set_coalesce(Transport *t, bool b);
/* Send what coalescing buffered: 0, -EAGAIN (wait for transport_write_events()), or a negative errno. */
int transport_flush(Transport *t);
/* Bytes readable without waiting for the fd (decrypted data buffered in OpenSSL). */
size_t transport_pending(const Transport *t);
uint32_t transport_read_events(const Transport *t);   /* what to poll for after a read returned -EAGAIN */
uint32_t transport_write_events(const Transport *t);  /* ... after a write returned -EAGAIN */
const char *transport_error(const Transport *t);      /* TLS failure reason, or NULL */
