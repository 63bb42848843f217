#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run-bench.sh [--smoke] [--runs=N] [--scenarios=LIST] [--size=SIZE] [--idle-tunnels=LIST] [--json=FILE]
#              [--mode=konn-to-konn|classic] [--timeout=SEC] [--builddir=DIR] [--no-build] [--keep]
#              [-- KONN-BENCH-OPTIONS...]
#
# Runs bench/konn-bench against private konn-server + konn-agent pairs on loopback:
#   1. builds konn-server, konn-agent and konn-bench unless --no-build (konn-bench goes through
#      "make bench/konn-bench" when the Makefile knows it, else it is compiled into the temp dir);
#   2. raises the open-file limit to 65536 for the daemons and konn-bench (10 000 idle tunnels need
#      10 000 descriptors in each daemon and 20 000 in konn-bench, which holds both ends); if the hard limit
#      is lower it is used when it still covers the idle-tunnel counts, else the script stops and says so;
#   3. generates a test PKI with tests/gen-certs.sh into a temp dir;
#   4. starts the daemons with the malloc tunables the packaged units set (GLIBC_TUNABLES=
#      glibc.malloc.tcache_count=0; KONN_BENCH_TUNABLES= overrides, empty for glibc's defaults):
#      the konn-to-konn pair (konn-server in http-connect mode on a Unix socket, agent port picked
#      at random in 20000..32767 and retried if taken; health/admin listeners off; konn-agent a1) and,
#      when the hol or echo-1000 scenario runs, a second "classic" pair with --tunnel-streams=false on both daemons;
#      waits (at most 10 s each) for "Agent '...' connected" in the server's log and checks there that
#      the first pair negotiated one stream per tunnel and the classic pair did not. --mode=classic runs
#      every scenario on a classic pair instead (and no second pair);
#   5. runs konn-bench (each scenario direct and through konn; see konn-bench --help) and prints its
#      table;
#   6. stops every daemon and removes the temp dir, always (trap), unless --keep.
# --smoke is the CI mode (konn-bench --smoke: 64 MiB bulk, 10 x 1 MiB echo-many, 50 dials, 100 idle
# tunnels, 1 s hol); it checks that every scenario completes and verifies, and asserts nothing about
# speed. --runs=3 repeats every scenario and reports medians. Options after "--" go to konn-bench.
# Exit status: konn-bench's (0 ok, 1 a scenario failed), 1 if the daemons could not be set up,
# 2 on usage errors.

set -eu

usage() {
        echo "usage: run-bench.sh [--smoke] [--runs=N] [--scenarios=LIST] [--size=SIZE] [--idle-tunnels=LIST]" >&2
        echo "                    [--json=FILE] [--mode=konn-to-konn|classic] [--timeout=SEC] [--builddir=DIR]" >&2
        echo "                    [--no-build] [--keep]" >&2
        echo "                    [-- KONN-BENCH-OPTIONS...]" >&2
        exit 2
}

srcdir=$(cd "$(dirname "$0")/.." && pwd)
builddir=${KONN_BUILDDIR:-$srcdir}
size=
json=
timeout=120
scenarios=
runs=
idle=
smoke=0
mode=konn-to-konn
build=1
keep=0

while [ $# -gt 0 ]; do
        case $1 in
        --size=?*) size=${1#--size=} ;;
        --json=?*) json=${1#--json=} ;;
        --smoke) smoke=1 ;;
        --runs=?*) runs=${1#--runs=} ;;
        --idle-tunnels=?*) idle=${1#--idle-tunnels=} ;;
        --timeout=?*) timeout=${1#--timeout=} ;;
        --mode=konn-to-konn|--mode=classic) mode=${1#--mode=} ;;
        --scenarios=?*) scenarios=${1#--scenarios=} ;;
        --builddir=?*) builddir=${1#--builddir=} ;;
        --no-build) build=0 ;;
        --keep) keep=1 ;;
        --) shift; break ;;
        -h|--help) sed -n '4,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run-bench.sh: unknown option '$1'" >&2; usage ;;
        esac
        shift
done
# "$@" now holds the options for konn-bench given after "--".
builddir=$(cd "$builddir" && pwd)
case $json in
""|/*) ;;
*) json=$(pwd)/$json ;;
esac

say() {
        echo "run-bench.sh: $*" >&2
}

# wants SCENARIO: true if SCENARIO is selected (all are by default).
wants() {
        [ -z "$scenarios" ] && return 0
        case ",$scenarios," in
        *",$1,"*) return 0 ;;
        esac
        return 1
}

# 2. Open-file limit, before anything is started (the daemons and konn-bench inherit it).
want_fds=65536
# shellcheck disable=SC3045 # ulimit -n and -H: dash and bash have them
if ! ulimit -n "$want_fds" 2>/dev/null; then
        # shellcheck disable=SC3045
        hard=$(ulimit -H -n)
        need=512
        if wants idle-tunnels; then
                if [ -n "$idle" ]; then
                        list=$idle
                elif [ $smoke -eq 1 ]; then
                        list=100
                else
                        list=1000,10000
                fi
                for n in $(echo "$list" | tr ',' ' '); do
                        case $n in
                        ''|*[!0-9]*) say "invalid --idle-tunnels='$idle'"; exit 2 ;;
                        esac
                        # konn-bench holds both ends of every tunnel (the client and the target side).
                        [ $((2 * n + 512)) -le $need ] || need=$((2 * n + 512))
                done
        fi
        if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
                say "cannot raise the open-file limit to $want_fds: the hard limit is $hard, and the idle-tunnel"
                say "scenario needs $need descriptors in konn-bench (both ends of every tunnel; each daemon needs half)."
                say "Raise the hard limit (as root: ulimit -Hn, LimitNOFILE=, limits.conf), or pass --idle-tunnels= with fewer."
                exit 1
        fi
        # shellcheck disable=SC3045
        ulimit -n "$hard"
        say "warning: could not raise the open-file limit to $want_fds (hard limit $hard); using $hard, enough for these scenarios"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/konn-bench.XXXXXX")
server_pid=
agent_pid=
pair_server_pid=
pair_agent_pid=
classic_server_pid=
classic_agent_pid=
bench_pid=

# shellcheck disable=SC2317 # called from the trap
stop_daemon() {
        # stop_daemon PID NAME: SIGTERM, up to 5 s, then SIGKILL.
        [ -n "$1" ] || return 0
        kill -TERM "$1" 2>/dev/null || return 0
        i=0
        while kill -0 "$1" 2>/dev/null && [ "$i" -lt 50 ]; do
                sleep 0.1
                i=$((i + 1))
        done
        if kill -0 "$1" 2>/dev/null; then
                say "$2 (pid $1) did not stop within 5 s, killing it"
                kill -KILL "$1" 2>/dev/null || :
        fi
        wait "$1" 2>/dev/null || :
}

# shellcheck disable=SC2317 # called from the trap
cleanup() {
        # A pair being started (not yet recorded below) is stopped too.
        case " $server_pid $agent_pid $classic_server_pid $classic_agent_pid " in
        *" $pair_agent_pid "*) ;;
        *) stop_daemon "$pair_agent_pid" konn-agent ;;
        esac
        case " $server_pid $agent_pid $classic_server_pid $classic_agent_pid " in
        *" $pair_server_pid "*) ;;
        *) stop_daemon "$pair_server_pid" konn-server ;;
        esac
        pair_server_pid=
        pair_agent_pid=
        stop_daemon "$bench_pid" konn-bench
        bench_pid=
        stop_daemon "$classic_agent_pid" konn-agent
        classic_agent_pid=
        stop_daemon "$classic_server_pid" konn-server
        classic_server_pid=
        stop_daemon "$agent_pid" konn-agent
        agent_pid=
        stop_daemon "$server_pid" konn-server
        server_pid=
        if [ "$keep" -eq 1 ]; then
                say "kept $tmp"
        else
                rm -rf "$tmp"
        fi
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() {
        for f in "$tmp"/*.log; do
                [ -s "$f" ] || continue
                echo "---- $(basename "$f") (last 20 lines) ----" >&2
                tail -n 20 "$f" >&2
        done
}

# 1. Build.
bench=
if [ $build -eq 1 ]; then
        make -C "$builddir" -s konn-server konn-agent >&2
        # -r: only a real rule counts (make's built-in "%: %.c" would compile it without flags).
        if make -C "$builddir" -r -n bench/konn-bench >/dev/null 2>&1; then
                make -C "$builddir" -s bench/konn-bench >&2
                bench=$builddir/bench/konn-bench
        fi
elif [ -x "$builddir/bench/konn-bench" ]; then
        bench=$builddir/bench/konn-bench
fi
if [ -z "$bench" ]; then
        ${CC:-cc} -std=gnu17 -O2 -Wall -Wextra -I"$builddir" -I"$srcdir/src/shared" \
                "$srcdir"/bench/*.c -lpthread -o "$tmp/konn-bench"
        bench=$tmp/konn-bench
fi
for p in "$builddir/konn-server" "$builddir/konn-agent" "$bench"; do
        if [ ! -x "$p" ]; then
                say "missing $p"
                exit 1
        fi
done

# 3. Certificates, and an empty configuration so that nothing in /etc or /usr/local/etc applies.
sh "$srcdir/tests/gen-certs.sh" "$tmp/certs"
certs=$tmp/certs
: >"$tmp/empty.conf"

# 4. Daemons, with the malloc tunables the packaged units and the image set (no per-thread cache: see
# systemd/konn-server.service.in); KONN_BENCH_TUNABLES overrides them ("" = glibc's defaults).
daemon_tunables=${KONN_BENCH_TUNABLES-glibc.malloc.tcache_count=0}
random_port() {
        echo $(( $(od -An -N2 -tu2 /dev/urandom) % 12768 + 20000 ))
}

# wait_for PATTERN FILE PID: 0 once PATTERN is in FILE, 1 if PID exits first or after 10 s.
wait_for() {
        i=0
        while [ $i -lt 100 ]; do
                grep -qF "$1" "$2" 2>/dev/null && return 0
                kill -0 "$3" 2>/dev/null || return 1
                sleep 0.1
                i=$((i + 1))
        done
        return 1
}

# start_pair NAME AGENT_ID TUNNEL_STREAMS: starts konn-server on $tmp/NAME.sock and its konn-agent;
# sets pair_server_pid and pair_agent_pid. Only the server's "Agent 'ID' connected" line is relied
# upon. If the server exits saying the port is in use, both are stopped and another port is tried
# (at most 10 times).
start_pair() {
        attempt=0
        while :; do
                attempt=$((attempt + 1))
                port=$(random_port)
                : >"$tmp/$1-server.log"
                GLIBC_TUNABLES=$daemon_tunables "$builddir/konn-server" --config="$tmp/empty.conf" --log-target=stderr \
                        --mode=http-connect --uds-name="$tmp/$1.sock" --server-port=0 \
                        --agent-port="$port" --agent-bind-address=127.0.0.1 --health-port=0 --admin-port=0 \
                        --cluster-cert="$certs/server.crt" --cluster-key="$certs/server.key" \
                        --cluster-ca-cert="$certs/ca.crt" --server-id="$1" \
                        --tunnel-streams="$3" 2>"$tmp/$1-server.log" &
                pair_server_pid=$!
                GLIBC_TUNABLES=$daemon_tunables "$builddir/konn-agent" --config="$tmp/empty.conf" --log-target=stderr \
                        --proxy-server-host=127.0.0.1 --proxy-server-port="$port" --ca-cert="$certs/ca.crt" \
                        --agent-cert="$certs/agent.crt" --agent-key="$certs/agent.key" --agent-id="$2" \
                        --health-server-port=0 --admin-server-port=0 \
                        --tunnel-streams="$3" 2>"$tmp/$1-agent.log" &
                pair_agent_pid=$!

                if wait_for "Agent '$2' connected" "$tmp/$1-server.log" "$pair_server_pid" &&
                        kill -0 "$pair_agent_pid" 2>/dev/null; then
                        say "$1 pair: konn-server pid $pair_server_pid (agent port $port), konn-agent pid $pair_agent_pid"
                        return 0
                fi
                if kill -0 "$pair_server_pid" 2>/dev/null || ! grep -q "in use" "$tmp/$1-server.log" ||
                        [ $attempt -ge 10 ]; then
                        say "the $1 daemons did not start, or the agent did not connect within 10 s"
                        return 1
                fi
                stop_daemon "$pair_agent_pid" konn-agent
                wait "$pair_server_pid" 2>/dev/null || :
        done
}

# negotiated NAME AGENT_ID: true if the pair's server says it runs one stream per tunnel for the agent.
negotiated() {
        grep -F "Agent '$2' connected" "$tmp/$1-server.log" | grep -qF "one stream per tunnel"
}

if [ "$mode" = classic ]; then
        start_pair konn a1 false || {
                show_logs
                exit 1
        }
else
        start_pair konn a1 true || {
                show_logs
                exit 1
        }
fi
server_pid=$pair_server_pid
agent_pid=$pair_agent_pid
if [ "$mode" = classic ] && negotiated konn a1; then
        say "the classic pair negotiated one stream per tunnel despite --tunnel-streams=false"
        exit 1
elif [ "$mode" != classic ] && ! negotiated konn a1; then
        say "the konn pair did not negotiate one stream per tunnel (konn-to-konn mode):"
        grep -F "Agent 'a1' connected" "$tmp/konn-server.log" >&2 || :
        exit 1
fi

classic_uds=
if [ "$mode" != classic ] && { wants hol || wants echo-1000; }; then
        start_pair classic a2 false || {
                show_logs
                exit 1
        }
        classic_server_pid=$pair_server_pid
        classic_agent_pid=$pair_agent_pid
        if negotiated classic a2; then
                say "the classic pair negotiated one stream per tunnel despite --tunnel-streams=false"
                exit 1
        fi
        classic_uds=$tmp/classic.sock
fi

# 5. Benchmark.
# shellcheck disable=SC3045
say "open-file limit $(ulimit -n); running $bench"
set -- --konn-uds="$tmp/konn.sock" --konn-mode="$mode" --server-pid="$server_pid" --agent-pid="$agent_pid" \
        --timeout="$timeout" "$@"
[ $smoke -eq 0 ] || set -- --smoke "$@"
[ -z "$size" ] || set -- "$@" --size="$size"
[ -z "$runs" ] || set -- "$@" --runs="$runs"
[ -z "$idle" ] || set -- "$@" --idle-tunnels="$idle"
[ -z "$json" ] || set -- "$@" --json="$json"
[ -z "$scenarios" ] || set -- "$@" --scenarios="$scenarios"
[ -z "$classic_uds" ] || set -- "$@" --classic-uds="$classic_uds"
# In the background so that a signal to this script is handled at once (the trap stops it too).
rc=0
"$bench" "$@" &
bench_pid=$!
wait "$bench_pid" || rc=$?
bench_pid=

if [ $rc -ne 0 ]; then
        say "konn-bench failed (exit status $rc)"
        show_logs
elif [ -n "$json" ]; then
        say "results written to $json"
fi
# 6. The trap stops the daemons.
exit $rc
