/* SPDX-License-Identifier: Apache-2.0 */
/*
 * trace — the live tunnel event stream of the admin interface (GET /v1/trace, protocol: docs/admin-api.md).
 * An event (dial requested, established, failed, closed) is formatted once into a stack buffer as one JSON line
 * and copied, as one HTTP chunk, into each subscriber's fixed buffer; the subscriber's socket is written when it
 * is writable. A subscriber whose buffer cannot take the next event is dropped (its connection closed): nothing
 * waits for a subscriber, and publishing never allocates. Events are per tunnel, never per packet; with nobody
 * subscribed publishing is one comparison. The hub also remembers the last TRACE_LAST_ERRORS failures for
 * /v1/status.
 *
 * The TraceHub is embedded in the daemon's health object and owns its subscribers (fd, event source, buffer).
 * Loop thread only.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "macro.h"

#define TRACE_SUBSCRIBERS_MAX 16U
#define TRACE_BUFFER_SIZE ((size_t) 64 * 1024)   /* queued per subscriber before it is dropped */
#define TRACE_SNDBUF_SIZE (32 * 1024)            /* kernel buffer of a subscriber socket */
#define TRACE_EVENT_MAX 2048                     /* one formatted event line */
#define TRACE_LAST_ERRORS 8U

typedef enum TraceEventType {
        TRACE_DIAL,        /* a dial was requested (server: DIAL_REQ sent to an agent; agent: DIAL_REQ received) */
        TRACE_ESTABLISHED, /* the dial succeeded */
        TRACE_FAILED,      /* the dial failed; reason says why, exactly as the client was told */
        TRACE_CLOSED,      /* an established tunnel ended; bytes and duration */
        _TRACE_EVENT_MAX,
} TraceEventType;

typedef struct TraceEvent {
        TraceEventType type;
        int64_t dial_id, connect_id;  /* 0: not known (yet) */
        const char *agent;            /* konn-server: the agent; konn-agent: NULL */
        const char *server;           /* konn-agent: the server that asked; konn-server: NULL */
        const char *dest;
        const char *frontend;         /* konn-server: "http-connect" or "grpc" */
        const char *client;           /* konn-server: the frontend client ("127.0.0.1:41234", "unix:/run/...") */
        const char *reason;           /* failed: the error; closed: who closed */
        uint64_t bytes_in, bytes_out; /* closed: towards the destination, back from it */
        uint64_t usec;                /* established: dial time; closed: time since established */
} TraceEvent;

typedef struct TraceError {
        uint64_t time_usec;           /* CLOCK_REALTIME */
        char dest[272];
        char reason[256];
} TraceError;

typedef struct TraceSubscriber TraceSubscriber;

typedef struct TraceHub {
        sd_event *event;
        TraceSubscriber *subscribers;
        unsigned n_subscribers;
        uint64_t seq;                 /* events published so far (also numbers them) */
        uint64_t n_dropped;           /* subscribers dropped for not reading */
        TraceError errors[TRACE_LAST_ERRORS];
        unsigned n_errors, next_error;
} TraceHub;

void trace_hub_init(TraceHub *h, sd_event *e);
/* Ends every subscriber's stream (last chunk, best effort) and frees them. */
void trace_hub_done(TraceHub *h);

void trace_publish(TraceHub *h, const TraceEvent *ev);

/* Take over an admin connection after its GET /v1/trace (fd is owned by the hub from here on, also on failure):
 * sends the response head and a first "subscribed" event. -EBUSY when TRACE_SUBSCRIBERS_MAX are connected. */
int trace_subscribe(TraceHub *h, int fd);

/* The i-th most recent failure (0 = newest), NULL past the end. */
const TraceError *trace_last_error(const TraceHub *h, unsigned i);

const char *trace_event_type_to_string(TraceEventType t);
/* One event as a JSON object without a trailing newline into buf (always NUL-terminated); its length. */
size_t trace_format(const TraceEvent *ev, uint64_t seq, uint64_t realtime_usec, char *buf, size_t size);
