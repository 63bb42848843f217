/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Whole-connection fuzzer of konn-agent's connection to a server (fuzz-agent-conn): the input is what a konn-server
 * sends the agent, TLS off. Layout: 2 bytes little-endian n, then n bytes sent as soon as the agent connected (server
 * preface, response headers on stream 1, DIAL_REQs ...), then, once the loop went idle (dials to the target at
 * 127.0.0.1:7777 completed), the rest (DATA, CLOSE_REQ, DIAL_CLS, GOAWAY ...).
 *
 * Each input gets a fresh sd-event loop, a fake server listening on 127.0.0.1:8091 and a fresh agent Manager
 * (manager_new + manager_start with a generated command line). After the server side and the target went away, the
 * agent must have no endpoint left and every server connection must be dead; LeakSanitizer checks the rest.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-config.h"
#include "fuzz-daemon.h"
#include "log.h"
#include "manager.h"
#include "serverconn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ITERATIONS 2000

static Pipe *accepted;

static void on_accept(int fd, void *userdata) {
        if (accepted) {
                close(fd);  /* one connection per input; a second attempt is refused */
                return;
        }
        (void) fuzz_pipe_new(userdata, fd, &accepted);
}

static Manager *agent_new(sd_event *e) {
        char a_cfg[200];
        char *argv[] = {
                (char *) "konn-agent", a_cfg,
                (char *) "--proxy-server-host=127.0.0.1", (char *) "--proxy-server-port=8091",
                (char *) "--ca-cert=/nonexistent/ca.pem", (char *) "--agent-id=fuzz-agent",
                (char *) "--agent-identifiers=host=localhost&ipv4=127.0.0.1",
                (char *) "--health-server-port=0", (char *) "--admin-server-port=0",
                NULL,
        };
        _cleanup_(conf_args_done) ConfArgs args = {};
        _cleanup_free_ char *error = NULL;
        AgentConfig *c;
        Manager *m = NULL;
        int r;

        (void) snprintf(a_cfg, sizeof(a_cfg), "--config=%s/empty.conf", fuzz_scratch_dir());
        c = calloc(1, sizeof(AgentConfig));
        FUZZ_CHECK(c);
        r = agent_config_load(c, (int) ELEMENTSOF(argv) - 1, argv, &args, &error);
        if (r != 0)
                fprintf(stderr, "fuzz: agent config: %s\n", error ?: "?");
        FUZZ_CHECK(r == 0);
        FUZZ_CHECK(manager_new(e, c, &m) >= 0);
        FUZZ_CHECK(manager_start(m) >= 0);
        return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        size_t n = size >= 2 ? MIN((size_t) (data[0] | data[1] << 8), size - 2) : size;
        const uint8_t *p = size >= 2 ? data + 2 : data;
        size_t rest = size >= 2 ? size - 2 - n : 0;
        sd_event_source *listener = NULL;
        char empty[160];
        sd_event *e = NULL;
        Manager *m;
        FILE *f;

        if (size > 1 << 20)
                return 0;
        fuzz_daemon_init();
        (void) snprintf(empty, sizeof(empty), "%s/empty.conf", fuzz_scratch_dir());
        f = fopen(empty, "we");
        FUZZ_CHECK(f);
        fclose(f);

        FUZZ_CHECK(sd_event_new(&e) >= 0);
        FUZZ_CHECK(fuzz_listen(e, FUZZ_AGENT_PORT, on_accept, e, &listener) >= 0);
        FUZZ_CHECK(fuzz_target_start(e) >= 0);
        m = agent_new(e);

        /* The sync timer fires at once: the agent connects, we accept and answer with the input. */
        fuzz_run_until_idle(e, MAX_ITERATIONS);
        FUZZ_CHECK(accepted);
        fuzz_pipe_feed(accepted, p, n, false);
        fuzz_run_until_idle(e, MAX_ITERATIONS);
        fuzz_pipe_feed(accepted, p + n, rest, true);
        fuzz_run_until_idle(e, MAX_ITERATIONS);

        /* The server and every destination go away: the agent must close all endpoints. */
        accepted = fuzz_pipe_free(accepted);
        fuzz_target_stop();
        listener = sd_event_source_disable_unref(listener);
        fuzz_run_until_idle(e, MAX_ITERATIONS);
        FUZZ_CHECK(manager_n_endpoints(m) == 0);
        for (ServerConn *sc = m->conns; sc; sc = sc->conns_next)
                FUZZ_CHECK(sc->dead || sc->state != SERVER_CONN_READY);

        manager_free(m);
        sd_event_unref(e);
        return 0;
}
