/* SPDX-License-Identifier: Apache-2.0 */
/*
 * man-keys — build-time helper (not installed): prints the roff key list of konn-server or konn-agent from the same
 * key table that parses flags and config files, so the man pages can never disagree with the code.
 * Usage: man-keys server|agent
 */
#include "config.h"

#include <stdio.h>

#include "agent-config.h"
#include "conf.h"
#include "macro.h"
#include "server-config.h"

int main(int argc, char *argv[]) {
        if (argc != 2 || (!streq(argv[1], "server") && !streq(argv[1], "agent"))) {
                fprintf(stderr, "Usage: %s server|agent\n", argv[0]);
                return 2;
        }
        conf_print_keys_man(streq(argv[1], "server") ? server_config_table : agent_config_table, stdout);
        return fflush(stdout) == 0 ? 0 : 1;
}
