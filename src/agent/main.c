/* SPDX-License-Identifier: Apache-2.0 */
/* konn-agent: parse the configuration, build the Manager, run the loop, map the result to an exit code. */
#include "config.h"

#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "conf.h"
#include "daemon.h"
#include "log.h"
#include "manager.h"
#include "agent-config.h"

static void on_stop(void *userdata) {
        manager_stop(*(Manager **) userdata);
}

static void on_reload(void *userdata) {
        manager_reload(*(Manager **) userdata);
}

static int run(int argc, char *argv[]) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_(conf_args_done) ConfArgs args = {};
        _cleanup_free_ AgentConfig *config = NULL;
        _cleanup_free_ char *error = NULL;
        DaemonHooks hooks = { .on_stop = on_stop, .on_reload = on_reload, .userdata = &m };
        int r;

        config = calloc(1, sizeof(AgentConfig));
        if (!config)
                return log_oom();
        r = agent_config_load(config, argc, argv, &args, &error);
        if (r < 0)
                return log_error_errno(r, "%s", error ?: "Out of memory.");
        if (r == CONF_ACTION_HELP) {
                agent_config_print_help(stdout);
                return 0;
        }
        if (r == CONF_ACTION_VERSION) {
                printf("konn-agent %s\n", PACKAGE_VERSION);
                return 0;
        }
        log_set_target(config->log_target);
        log_set_max_level(config->log_level);
        if (args.check_config) {
                agent_config_done(config);
                log_info("Configuration is valid.");
                return 0;
        }

        r = daemon_event_new(&hooks, &e);
        if (r < 0) {
                agent_config_done(config);
                return log_error_errno(r, "Failed to set up the event loop: %m");
        }
        r = daemon_listen_fds_init();
        if (r < 0)
                log_warning_errno(r, "Failed to read the sockets passed by systemd, ignoring: %m");
        r = manager_new(e, TAKE_PTR(config), argc, argv, &m);
        if (r < 0)
                return log_error_errno(r, "Failed to create the manager: %m");
        r = manager_start(m);
        daemon_listen_fds_done();
        if (r < 0)
                return r;
        r = sd_event_loop(e);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        (void) sd_notify(false, "STOPPING=1");
        log_info("konn-agent stopped.");
        return 0;
}

int main(int argc, char *argv[]) {
        return run(argc, argv) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
