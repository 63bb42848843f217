/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-daemon — what the whole-connection fuzzers (fuzz-server-*.c, fuzz-agent-conn.c) share: a private network
 * namespace (the daemons dial whatever the input names, so the process must not reach any real network), TLS
 * switched off at link time (the input is the HTTP/2 byte stream itself), name lookups made synchronous (also at
 * link time, so none outlives its input), a "pipe" that feeds input bytes into one
 * socket from the sd-event loop while reading and discarding what the daemon answers, and a bounded way to run the
 * loop until nothing is left to do.
 *
 * The harness owns every Pipe it creates; fuzz_pipe_free() closes the socket. Loop thread only.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "fuzz-check.h"

/* Fixed addresses inside the private namespace, so seeds can name them. */
#define FUZZ_AGENT_PORT 8091        /* konn-server's agent port / the fake server the agent connects to */
#define FUZZ_TARGET_PORT 7777       /* a target the daemons may dial: 127.0.0.1:7777 */

/* Enter a private network namespace (root: CLONE_NEWNET; otherwise a user namespace too) with loopback up, make a
 * scratch directory, silence logging (FUZZ_DEBUG=1 keeps debug logs on stderr), start the echo target when the loop
 * exists. Aborts when isolation is impossible: fuzzing must never reach a real network. */
void fuzz_daemon_init(void);
const char *fuzz_scratch_dir(void);

typedef struct Pipe {
        sd_event_source *io;
        int fd;
        const uint8_t *data;    /* input still to send (the caller's memory, alive while the pipe is) */
        size_t left;
        bool eof_sent, peer_eof, failed, connected;
        bool shutdown_when_sent;/* shutdown(SHUT_WR) once all input is written */
        size_t received;        /* bytes the daemon sent us */
        uint8_t head[256];      /* the first bytes of them, for asserts */
} Pipe;

/* Connect a non-blocking socket to a Unix path or 127.0.0.1:port and pump data into it. */
int fuzz_pipe_connect_unix(sd_event *e, const char *path, Pipe **ret);
int fuzz_pipe_connect_tcp(sd_event *e, uint16_t port, Pipe **ret);
/* Pump over an already connected fd (taken). */
int fuzz_pipe_new(sd_event *e, int fd, Pipe **ret);
void fuzz_pipe_feed(Pipe *p, const uint8_t *data, size_t size, bool shutdown_when_sent);
Pipe *fuzz_pipe_free(Pipe *p);

/* Listen on 127.0.0.1:port (SO_REUSEADDR); accepted fds are handed to on_accept. */
int fuzz_listen(sd_event *e, uint16_t port, void (*on_accept)(int fd, void *userdata), void *userdata,
                sd_event_source **ret_source);

/* Target on 127.0.0.1:FUZZ_TARGET_PORT for this loop: greets with "hello\n", reads and drops the rest. */
int fuzz_target_start(sd_event *e);
void fuzz_target_stop(void);

/* Run the loop without waiting until it has been idle for a few passes (or max_iterations). */
void fuzz_run_until_idle(sd_event *e, unsigned max_iterations);

#define FUZZ_CHECK(x) CHECK(x)
