/* SPDX-License-Identifier: Apache-2.0 */
/* konn-server: the shared daemon main loop (daemon.c) around konn-server's configuration and Manager. */
#include "config.h"

#include "daemon.h"
#include "manager.h"
#include "server-config.h"

static int config_load(void *c, int argc, char *argv[], ConfArgs *ret_args, char **ret_error) {
        return server_config_load(c, argc, argv, ret_args, ret_error);
}

static void config_done(void *c) {
        server_config_done(c);
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
                .name = "konn-server",
                .config_size = sizeof(ServerConfig),
                .config_load = config_load,
                .config_done = config_done,
                .print_help = server_config_print_help,
                .log_level_offset = offsetof(ServerConfig, log_level),
                .log_target_offset = offsetof(ServerConfig, log_target),
                .manager_new = new_manager,
                .manager_start = start,
                .manager_stop = stop,
                .manager_reload = reload,
                .manager_free = free_manager,
        };
        return daemon_main(&d, argc, argv);
}
