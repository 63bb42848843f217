/* SPDX-License-Identifier: Apache-2.0 */
/* konn-agent: the shared daemon main loop (daemon.c) around konn-agent's configuration and Manager. */
#include "config.h"

#include "daemon.h"
#include "manager.h"
#include "agent-config.h"

static int config_load(void *c, int argc, char *argv[], ConfArgs *ret_args, char **ret_error) {
        return agent_config_load(c, argc, argv, ret_args, ret_error);
}

static void config_done(void *c) {
        agent_config_done(c);
}

static int new_manager(sd_event *e, void *config, void **ret) {
        return manager_new(e, config, (Manager **) ret);
}

static int start(void *m) {
        return manager_start(m);
}

static void stop(void *m) {
        manager_stop(m);
}

static void reload(void *m) {
        manager_reload(m);
}

static void *free_manager(void *m) {
        return manager_free(m);
}

int main(int argc, char *argv[]) {
        static const DaemonDescriptor d = {
                .name = "konn-agent",
                .config_size = sizeof(AgentConfig),
                .config_load = config_load,
                .config_done = config_done,
                .print_help = agent_config_print_help,
                .log_level_offset = offsetof(AgentConfig, log_level),
                .log_target_offset = offsetof(AgentConfig, log_target),
                .manager_new = new_manager,
                .manager_start = start,
                .manager_stop = stop,
                .manager_reload = reload,
                .manager_free = free_manager,
        };
        return daemon_main(&d, argc, argv);
}
