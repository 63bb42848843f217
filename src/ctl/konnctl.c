/* SPDX-License-Identifier: Apache-2.0 */
/*
 * konnctl — the operator's view of a running konn-server or konn-agent through its admin interface
 * (docs/admin-api.md): status, agents, servers, tunnels, the live trace of tunnel events, and probe. This file
 * holds the command line and the per-command output; the admin client, tables and probe are in ctl-*.c.
 */
#include "config.h"

#include <fnmatch.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

static struct {
        const char *host;
        bool json;
        const char *agent, *server, *dest;
        CtlProbeOptions probe;
} arg = { .probe = { .timeout_ms = 20000 } };

static volatile int stop_requested;

static void on_signal(int sig) {
        stop_requested = 1;
}

static void help(void) {
        printf("Usage: konnctl [OPTIONS] COMMAND\n"
               "\n"
               "Inspect a running konn-server or konn-agent through its admin interface.\n"
               "\n"
               "Commands:\n"
               "  status                 Identity, readiness, peers, tunnels, bytes, last errors\n"
               "  agents                 Connected agents (konn-server)\n"
               "  servers                Server connections (konn-agent)\n"
               "  tunnels                Open and pending tunnels\n"
               "  trace                  Live tunnel events until Ctrl-C\n"
               "  probe HOST:PORT        Open a tunnel through the server's frontend and report the outcome\n"
               "\n"
               "Options:\n"
               "  -H, --host ADDRESS     Admin interface: host:port or a Unix socket path\n"
               "                         (default: the local daemon's admin socket in /run/konn, else\n"
               "                         127.0.0.1:8095 then 127.0.0.1:8094)\n"
               "  -o, --output FORMAT    table (default) or json (JSON lines for trace)\n"
               "      --agent ID         tunnels, trace: only this agent's\n"
               "      --server ID        tunnels, trace (konn-agent): only this server's\n"
               "      --dest PATTERN     tunnels, trace: only destinations matching this glob\n"
               "      --frontend ADDRESS probe: the server's frontend, a Unix socket path (default\n"
               "                         /run/konn/konn-server.sock) or host:port (TCP+mTLS)\n"
               "      --cert FILE, --key FILE, --ca-cert FILE\n"
               "                         probe over TCP: client certificate, key, and the CA to verify the server\n"
               "      --tls-name NAME    probe over TCP: the name the server certificate must carry\n"
               "      --timeout SECONDS  probe: give up after this long (default 20)\n"
               "  -h, --help             Show this help\n"
               "      --version          Show the version\n"
               "\n"
               "Exit status: 0 success; 1 not ready / dial failed; 2 usage; 3 daemon unreachable;\n"
               "4 permission denied; 5 unexpected answer; 6 no agent; 7 timeout. See konnctl(1).\n");
}

static bool match(json_object *o) {
        const char *dest = ctl_json_str(o, "destination");

        if (arg.agent && strcmp(ctl_json_str(o, "agent"), arg.agent) != 0)
                return false;
        if (arg.server && strcmp(ctl_json_str(o, "server"), arg.server) != 0)
                return false;
        if (arg.dest && fnmatch(arg.dest, dest, 0) != 0)
                return false;
        return true;
}

static void print_json(json_object *o) {
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* "2026-12-07T16:41:02.123Z" → "16:41:02" (or the time as given if it is not in that form). */
static const char *clock_of(const char *t, char *buf, size_t size) {
        if (strlen(t) >= 19 && t[10] == 'T')
                (void) snprintf(buf, size, "%.8s", t + 11);
        else
                (void) snprintf(buf, size, "%s", t);
        return buf;
}

/* ---- status ---- */

static int cmd_status(void) {
        CtlTarget t;
        json_object *o, *v, *errs;
        char b1[32], b2[32], d[32];
        bool server;
        int r;

        r = ctl_find_target(arg.host, NULL, &t);
        if (r > 0)
                return r;
        r = ctl_get_json(&t, "/v1/status", &o);
        if (r > 0)
                return r;
        r = ctl_json_bool(o, "ready") ? CTL_EXIT_OK : CTL_EXIT_FAILED;
        if (arg.json) {
                print_json(o);
                json_object_put(o);
                return r;
        }
        server = strcmp(ctl_json_str(o, "daemon"), "konn-server") == 0;
        printf("Daemon:       %s %s (pid %" PRId64 ", %s)\n", ctl_json_str(o, "daemon"), ctl_json_str(o, "version"),
               ctl_json_int(o, "pid"), t.address);
        if (server)
                printf("Server ID:    %s (server count %" PRId64 ")\n", ctl_json_str(o, "server_id"),
                       ctl_json_int(o, "server_count"));
        else
                printf("Agent ID:     %s%s%s%s\n", ctl_json_str(o, "agent_id"),
                       *ctl_json_str(o, "identifiers") ? " (" : "", ctl_json_str(o, "identifiers"),
                       *ctl_json_str(o, "identifiers") ? ")" : "");
        ctl_format_duration(ctl_json_double(o, "uptime_seconds"), d, sizeof(d));
        printf("Uptime:       %s (since %s)\n", d, ctl_json_str(o, "started"));
        if (ctl_json_bool(o, "ready"))
                printf("Ready:        yes%s\n", ctl_json_bool(o, "stopping") ? " (stopping)" : "");
        else
                printf("Ready:        no: %s%s\n", ctl_json_str(o, "ready_reason"),
                       ctl_json_bool(o, "stopping") ? " (stopping)" : "");
        if (server)
                printf("Agents:       %" PRId64 " connected (%" PRId64 " streams), %" PRId64 " frontend connections\n",
                       ctl_json_int(o, "agents"), ctl_json_int(o, "agent_streams"),
                       ctl_json_int(o, "frontend_connections"));
        else if (json_object_object_get_ex(o, "servers", &v))
                printf("Servers:      %" PRId64 "/%" PRId64 " servers\n", ctl_json_int(v, "connected"),
                       ctl_json_int(v, "count"));
        if (json_object_object_get_ex(o, "tunnels", &v))
                printf("Tunnels:      %" PRId64 " open, %" PRId64 " pending\n", ctl_json_int(v, "established"),
                       ctl_json_int(v, "pending"));
        ctl_format_bytes((uint64_t) ctl_json_int(o, "bytes_to_destination"), b1, sizeof(b1));
        ctl_format_bytes((uint64_t) ctl_json_int(o, "bytes_from_destination"), b2, sizeof(b2));
        printf("Bytes:        %s to destinations, %s back\n", b1, b2);
        if (json_object_object_get_ex(o, "dials", &v))
                printf("Dials:        %" PRId64 " requested, %" PRId64 " established, %" PRId64 " failed; %" PRId64
                       " tunnels closed\n",
                       ctl_json_int(v, "requested"), ctl_json_int(v, "established"), ctl_json_int(v, "failed"),
                       ctl_json_int(o, "tunnels_closed"));
        printf("Trace:        %" PRId64 " subscribers, %" PRId64 " dropped\n", ctl_json_int(o, "trace_subscribers"),
               ctl_json_int(o, "trace_dropped"));
        if (json_object_object_get_ex(o, "last_errors", &errs) && json_object_array_length(errs) > 0) {
                printf("Last errors:\n");
                for (size_t i = 0; i < json_object_array_length(errs); i++) {
                        json_object *e = json_object_array_get_idx(errs, i);
                        char c[32];
                        printf("  %s  %s  %s\n", clock_of(ctl_json_str(e, "time"), c, sizeof(c)),
                               ctl_json_str(e, "destination"), ctl_json_str(e, "reason"));
                }
        } else
                printf("Last errors:  none\n");
        json_object_put(o);
        return r;
}

/* ---- agents, servers, tunnels ---- */

static int get_list(const char *want, const char *path, const char *key, json_object **ret_o, json_object **ret_list) {
        CtlTarget t;
        int r;

        r = ctl_find_target(arg.host, want, &t);
        if (r > 0)
                return r;
        r = ctl_get_json(&t, path, ret_o);
        if (r > 0)
                return r;
        if (!json_object_object_get_ex(*ret_o, key, ret_list) || !json_object_is_type(*ret_list, json_type_array)) {
                fprintf(stderr, "konnctl: %s answered %s without a \"%s\" list\n", t.address, path, key);
                json_object_put(*ret_o);
                return CTL_EXIT_PROTOCOL;
        }
        return 0;
}

/* The two byte counters every listing shows, formatted for a table. */
static void format_byte_pair(json_object *o, char to[static 32], char from[static 32]) {
        ctl_format_bytes((uint64_t) ctl_json_int(o, "bytes_to_destination"), to, 32);
        ctl_format_bytes((uint64_t) ctl_json_int(o, "bytes_from_destination"), from, 32);
}

/* One table row per element of the list (ctl_table_add() copies the cells). */
typedef void (*list_row_fn)(CtlTable *tab, json_object *row);

/* GET path from daemon (see get_list()), then print the whole answer (-o json) or one table row per list entry. */
static int cmd_list(const char *daemon, const char *path, const char *key, const char *const *headers,
                    list_row_fn add_row) {
        json_object *o, *list;
        CtlTable *tab;
        int r;

        r = get_list(daemon, path, key, &o, &list);
        if (r > 0)
                return r;
        if (arg.json) {
                print_json(o);
                json_object_put(o);
                return 0;
        }
        tab = ctl_table_new(headers);
        for (size_t i = 0; i < json_object_array_length(list); i++)
                add_row(tab, json_object_array_get_idx(list, i));
        ctl_table_print(tab);
        ctl_table_free(tab);
        json_object_put(o);
        return 0;
}

static void agent_row(CtlTable *tab, json_object *a) {
        char tun[24], pend[24], b1[32], b2[32], since[64];

        (void) snprintf(tun, sizeof(tun), "%" PRId64, ctl_json_int(a, "tunnels"));
        (void) snprintf(pend, sizeof(pend), "%" PRId64, ctl_json_int(a, "pending_dials"));
        format_byte_pair(a, b1, b2);
        (void) snprintf(since, sizeof(since), "%s", ctl_json_str(a, "since"));
        ctl_table_add(tab, (const char *const[]){
                ctl_json_str(a, "id"), ctl_json_str(a, "identifiers"), ctl_json_str(a, "address"),
                ctl_json_str(a, "subject"), since,
                ctl_json_bool(a, "draining") ? "yes" : (ctl_json_bool(a, "superseded") ? "superseded" : "no"),
                tun, pend, b1, b2 });
}

static int cmd_agents(void) {
        static const char *const headers[] = { "AGENT", "IDENTIFIERS", "ADDRESS", "SUBJECT", "CONNECTED", "DRAINING",
                                               "TUNNELS", "PENDING", "TO-DEST", "FROM-DEST", NULL };

        return cmd_list("konn-server", "/v1/agents", "agents", headers, agent_row);
}

static void server_row(CtlTable *tab, json_object *s) {
        char tun[24], pend[24], b1[32], b2[32], addr[300];

        (void) snprintf(tun, sizeof(tun), "%" PRId64, ctl_json_int(s, "tunnels"));
        (void) snprintf(pend, sizeof(pend), "%" PRId64, ctl_json_int(s, "pending_dials"));
        format_byte_pair(s, b1, b2);
        (void) snprintf(addr, sizeof(addr), "%s", ctl_json_str(s, "address"));
        ctl_table_add(tab, (const char *const[]){ ctl_json_str(s, "id"), addr, ctl_json_str(s, "state"),
                                                  ctl_json_str(s, "since"), tun, pend, b1, b2 });
}

static int cmd_servers(void) {
        static const char *const headers[] = { "SERVER", "ADDRESS", "STATE", "CONNECTED", "TUNNELS", "PENDING",
                                               "TO-DEST", "FROM-DEST", NULL };

        return cmd_list("konn-agent", "/v1/servers", "servers", headers, server_row);
}

static int cmd_tunnels(void) {
        static const char *const server_headers[] = { "CONNECT-ID", "DIAL-ID", "DESTINATION", "AGENT", "FRONTEND",
                                                      "CLIENT", "STATE", "AGE", "TO-DEST", "FROM-DEST", NULL };
        static const char *const agent_headers[] = { "CONNECT-ID", "DIAL-ID", "DESTINATION", "SERVER", "STATE", "AGE",
                                                     "TO-DEST", "FROM-DEST", NULL };
        json_object *o, *list, *out = NULL;
        CtlTable *tab = NULL;
        int r;

        r = get_list(NULL, "/v1/tunnels", "tunnels", &o, &list);
        if (r > 0)
                return r;
        if (arg.json)
                out = json_object_new_array();
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                json_object *t = json_object_array_get_idx(list, i);
                bool on_server = json_object_object_get_ex(t, "agent", NULL);
                char cid[24], did[24], age[32], b1[32], b2[32];

                if (!match(t))
                        continue;
                if (out) {
                        json_object_array_add(out, json_object_get(t));
                        continue;
                }
                if (!tab)
                        tab = ctl_table_new(on_server ? server_headers : agent_headers);
                (void) snprintf(cid, sizeof(cid), "%" PRId64, ctl_json_int(t, "connect_id"));
                (void) snprintf(did, sizeof(did), "%" PRId64, ctl_json_int(t, "dial_id"));
                ctl_format_duration(ctl_json_double(t, "age_seconds"), age, sizeof(age));
                format_byte_pair(t, b1, b2);
                if (on_server)
                        ctl_table_add(tab, (const char *const[]){ strcmp(cid, "0") ? cid : "-", did,
                                                                  ctl_json_str(t, "destination"), ctl_json_str(t, "agent"),
                                                                  ctl_json_str(t, "frontend"), ctl_json_str(t, "client"),
                                                                  ctl_json_str(t, "state"), age, b1, b2 });
                else
                        ctl_table_add(tab, (const char *const[]){ cid, did, ctl_json_str(t, "destination"),
                                                                  ctl_json_str(t, "server"), ctl_json_str(t, "state"),
                                                                  age, b1, b2 });
        }
        if (out) {
                json_object *w = json_object_new_object();
                json_object_object_add(w, "tunnels", out);
                print_json(w);
                json_object_put(w);
        } else if (tab) {
                ctl_table_print(tab);
                ctl_table_free(tab);
        } else
                printf("No tunnels%s.\n", arg.agent || arg.server || arg.dest ? " match" : "");
        json_object_put(o);
        return 0;
}

/* ---- trace ---- */

static int on_trace_line(const char *line, void *userdata) {
        enum json_tokener_error jerr;
        json_object *e = json_tokener_parse_verbose(line, &jerr);
        const char *ev, *peer;
        char c[32], d[32], b1[32], b2[32], detail[1024];

        if (!e || !json_object_is_type(e, json_type_object)) {
                json_object_put(e);
                fprintf(stderr, "konnctl: ignoring a trace line that is not a JSON object\n");
                return 0;
        }
        ev = ctl_json_str(e, "event");
        if (strcmp(ev, "subscribed") == 0 || !match(e)) {
                json_object_put(e);
                return 0;
        }
        if (arg.json) {
                puts(line);
                fflush(stdout);
                json_object_put(e);
                return 0;
        }
        peer = json_object_object_get_ex(e, "agent", NULL) ? ctl_json_str(e, "agent") : ctl_json_str(e, "server");
        detail[0] = '\0';
        if (strcmp(ev, "established") == 0) {
                ctl_format_duration(ctl_json_double(e, "dial_seconds"), d, sizeof(d));
                (void) snprintf(detail, sizeof(detail), "connect_id=%" PRId64 " dial %s", ctl_json_int(e, "connect_id"), d);
        } else if (strcmp(ev, "failed") == 0)
                (void) snprintf(detail, sizeof(detail), "%s", ctl_json_str(e, "reason"));
        else if (strcmp(ev, "closed") == 0) {
                ctl_format_duration(ctl_json_double(e, "duration_seconds"), d, sizeof(d));
                ctl_format_bytes((uint64_t) ctl_json_int(e, "bytes_to_destination"), b1, sizeof(b1));
                ctl_format_bytes((uint64_t) ctl_json_int(e, "bytes_from_destination"), b2, sizeof(b2));
                (void) snprintf(detail, sizeof(detail), "connect_id=%" PRId64 " %s to dest, %s back, %s (%s)",
                                ctl_json_int(e, "connect_id"), b1, b2, d, ctl_json_str(e, "reason"));
        } else if (strcmp(ev, "dial") == 0)
                (void) snprintf(detail, sizeof(detail), "dial_id=%" PRId64 "%s%s", ctl_json_int(e, "dial_id"),
                                *ctl_json_str(e, "frontend") ? " via " : "", ctl_json_str(e, "frontend"));
        {
                const char *t = ctl_json_str(e, "time");
                if (strlen(t) >= 23 && t[10] == 'T')
                        (void) snprintf(c, sizeof(c), "%.12s", t + 11);
                else
                        (void) snprintf(c, sizeof(c), "%s", t);
        }
        printf("%-12s  %-11s  %-21s  %-12s  %s\n", c, ev, ctl_json_str(e, "destination"), *peer ? peer : "-", detail);
        fflush(stdout);
        json_object_put(e);
        return 0;
}

static int cmd_trace(void) {
        struct sigaction sa = { .sa_handler = on_signal };
        CtlTarget t;
        int r;

        r = ctl_find_target(arg.host, NULL, &t);
        if (r > 0)
                return r;
        /* No SA_RESTART: Ctrl-C interrupts the blocking read, and the stream ends cleanly. */
        (void) sigaction(SIGINT, &sa, NULL);
        (void) sigaction(SIGTERM, &sa, NULL);
        if (!arg.json) {
                printf("%-12s  %-11s  %-21s  %-12s  %s\n", "TIME", "EVENT", "DESTINATION", "PEER", "DETAILS");
                fflush(stdout);
        }
        return ctl_stream(&t, "/v1/trace", on_trace_line, NULL, &stop_requested);
}

int main(int argc, char *argv[]) {
        enum { OPT_AGENT = 0x100, OPT_SERVER, OPT_DEST, OPT_FRONTEND, OPT_CERT, OPT_KEY, OPT_CA, OPT_TLS_NAME,
               OPT_TIMEOUT, OPT_VERSION };
        static const struct option options[] = {
                { "host", required_argument, NULL, 'H' },       { "output", required_argument, NULL, 'o' },
                { "agent", required_argument, NULL, OPT_AGENT }, { "server", required_argument, NULL, OPT_SERVER },
                { "dest", required_argument, NULL, OPT_DEST },   { "frontend", required_argument, NULL, OPT_FRONTEND },
                { "cert", required_argument, NULL, OPT_CERT },   { "key", required_argument, NULL, OPT_KEY },
                { "ca-cert", required_argument, NULL, OPT_CA },  { "tls-name", required_argument, NULL, OPT_TLS_NAME },
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "help", no_argument, NULL, 'h' },              { "version", no_argument, NULL, OPT_VERSION },
                {}
        };
        const char *cmd;
        int c;

        while ((c = getopt_long(argc, argv, "H:o:h", options, NULL)) >= 0)
                switch (c) {
                case 'H':
                        arg.host = optarg;
                        break;
                case 'o':
                        if (strcmp(optarg, "json") == 0)
                                arg.json = true;
                        else if (strcmp(optarg, "table") == 0)
                                arg.json = false;
                        else {
                                fprintf(stderr, "konnctl: --output must be table or json, not '%s'\n", optarg);
                                return CTL_EXIT_USAGE;
                        }
                        break;
                case OPT_AGENT:
                        arg.agent = optarg;
                        break;
                case OPT_SERVER:
                        arg.server = optarg;
                        break;
                case OPT_DEST:
                        arg.dest = optarg;
                        break;
                case OPT_FRONTEND:
                        arg.probe.frontend = optarg;
                        break;
                case OPT_CERT:
                        arg.probe.cert = optarg;
                        break;
                case OPT_KEY:
                        arg.probe.key = optarg;
                        break;
                case OPT_CA:
                        arg.probe.ca = optarg;
                        break;
                case OPT_TLS_NAME:
                        arg.probe.tls_name = optarg;
                        break;
                case OPT_TIMEOUT: {
                        char *end;
                        double s = strtod(optarg, &end);
                        if (*end || s <= 0 || s > 3600) {
                                fprintf(stderr, "konnctl: --timeout must be a number of seconds (0 < s <= 3600)\n");
                                return CTL_EXIT_USAGE;
                        }
                        arg.probe.timeout_ms = (int) (s * 1000);
                        break;
                }
                case 'h':
                        help();
                        return CTL_EXIT_OK;
                case OPT_VERSION:
                        printf("konnctl %s\n", PACKAGE_VERSION);
                        return CTL_EXIT_OK;
                default:
                        fprintf(stderr, "Try 'konnctl --help'.\n");
                        return CTL_EXIT_USAGE;
                }
        if (optind >= argc) {
                fprintf(stderr, "konnctl: a command is required (status, agents, servers, tunnels, trace, probe)\n");
                return CTL_EXIT_USAGE;
        }
        cmd = argv[optind++];
        if (strcmp(cmd, "probe") == 0) {
                if (optind + 1 != argc) {
                        fprintf(stderr, "konnctl: probe takes one HOST:PORT\n");
                        return CTL_EXIT_USAGE;
                }
                arg.probe.dest = argv[optind];
                arg.probe.admin = arg.host;
                arg.probe.json = arg.json;
                return ctl_probe(&arg.probe);
        }
        if (optind != argc) {
                fprintf(stderr, "konnctl: unexpected argument '%s'\n", argv[optind]);
                return CTL_EXIT_USAGE;
        }
        if (strcmp(cmd, "status") == 0)
                return cmd_status();
        if (strcmp(cmd, "agents") == 0)
                return cmd_agents();
        if (strcmp(cmd, "servers") == 0)
                return cmd_servers();
        if (strcmp(cmd, "tunnels") == 0)
                return cmd_tunnels();
        if (strcmp(cmd, "trace") == 0)
                return cmd_trace();
        fprintf(stderr, "konnctl: unknown command '%s' (status, agents, servers, tunnels, trace, probe)\n", cmd);
        return CTL_EXIT_USAGE;
}
