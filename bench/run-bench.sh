#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run-bench.sh [--size=SIZE] [--json=FILE] [--smoke] [--timeout=SEC] [--scenarios=LIST]
#              [--builddir=DIR] [--no-build] [--keep]
#
# Runs bench/konn-bench against a private konn-server + konn-agent pair on loopback:
#   1. builds konn-server, konn-agent and konn-bench unless --no-build (konn-bench goes through
#      "make bench/konn-bench" when the Makefile knows it, else it is compiled into the temp dir);
#   2. generates a test PKI with tests/gen-certs.sh into a temp dir;
#   3. starts konn-server (http-connect mode, Unix socket frontend, agent port picked at random in
#      20000..32767 and retried if taken; health/admin listeners off) and konn-agent (a1);
#   4. waits (at most 10 s) for "Agent 'a1' connected" in the server's log;
#   5. runs konn-bench (each scenario direct and through konn) and prints its table;
#   6. stops both daemons and removes the temp dir, always (trap), unless --keep.
# --smoke is the CI mode: 64 MiB per scenario; it checks that every transfer completes and
# verifies, and asserts nothing about speed. Exit status: konn-bench's (0 ok, 1 a scenario failed),
# 1 if the daemons could not be set up, 2 on usage errors.

set -eu

usage() {
        echo "usage: run-bench.sh [--size=SIZE] [--json=FILE] [--smoke] [--timeout=SEC]" >&2
        echo "                    [--scenarios=LIST] [--builddir=DIR] [--no-build] [--keep]" >&2
        exit 2
}

srcdir=$(cd "$(dirname "$0")/.." && pwd)
builddir=${KONN_BUILDDIR:-$srcdir}
size=1G
json=
timeout=120
scenarios=
build=1
keep=0

for arg in "$@"; do
        case $arg in
        --size=?*) size=${arg#--size=} ;;
        --json=?*) json=${arg#--json=} ;;
        --smoke) size=64M ;;
        --timeout=?*) timeout=${arg#--timeout=} ;;
        --scenarios=?*) scenarios=${arg#--scenarios=} ;;
        --builddir=?*) builddir=${arg#--builddir=} ;;
        --no-build) build=0 ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '4,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run-bench.sh: unknown option '$arg'" >&2; usage ;;
        esac
done
builddir=$(cd "$builddir" && pwd)
case $json in
""|/*) ;;
*) json=$(pwd)/$json ;;
esac

say() {
        echo "run-bench.sh: $*" >&2
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/konn-bench.XXXXXX")
server_pid=
agent_pid=
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
        stop_daemon "$bench_pid" konn-bench
        bench_pid=
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
        for f in "$tmp/server.log" "$tmp/agent.log"; do
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
                "$srcdir/bench/konn-bench.c" -lpthread -o "$tmp/konn-bench"
        bench=$tmp/konn-bench
fi
for p in "$builddir/konn-server" "$builddir/konn-agent" "$bench"; do
        if [ ! -x "$p" ]; then
                say "missing $p"
                exit 1
        fi
done

# 2. Certificates, and an empty configuration so that nothing in /etc or /usr/local/etc applies.
sh "$srcdir/tests/gen-certs.sh" "$tmp/certs"
certs=$tmp/certs
: >"$tmp/empty.conf"
uds=$tmp/konn.sock

# 3 + 4. Start the daemons; retry with another agent port if the server cannot bind it.
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

# Only the server's "Agent 'a1' connected" line is relied upon. If the server exits saying the port
# is in use, both daemons are stopped and another port is tried (at most 10 times).
attempt=0
port=
while :; do
        attempt=$((attempt + 1))
        port=$(random_port)
        : >"$tmp/server.log"
        "$builddir/konn-server" --config="$tmp/empty.conf" --log-target=stderr \
                --mode=http-connect --uds-name="$uds" --server-port=0 \
                --agent-port="$port" --agent-bind-address=127.0.0.1 --health-port=0 --admin-port=0 \
                --cluster-cert="$certs/server.crt" --cluster-key="$certs/server.key" \
                --cluster-ca-cert="$certs/ca.crt" --server-id=s1 2>"$tmp/server.log" &
        server_pid=$!
        "$builddir/konn-agent" --config="$tmp/empty.conf" --log-target=stderr \
                --proxy-server-host=127.0.0.1 --proxy-server-port="$port" --ca-cert="$certs/ca.crt" \
                --agent-cert="$certs/agent.crt" --agent-key="$certs/agent.key" --agent-id=a1 \
                --health-server-port=0 --admin-server-port=0 2>"$tmp/agent.log" &
        agent_pid=$!

        if wait_for "Agent 'a1' connected" "$tmp/server.log" "$server_pid" &&
                kill -0 "$agent_pid" 2>/dev/null; then
                break
        fi
        if kill -0 "$server_pid" 2>/dev/null || ! grep -q "in use" "$tmp/server.log" ||
                [ $attempt -ge 10 ]; then
                say "the daemons did not start, or the agent did not connect within 10 s"
                show_logs
                exit 1
        fi
        stop_daemon "$agent_pid" konn-agent
        agent_pid=
        wait "$server_pid" 2>/dev/null || :
        server_pid=
done

# 5. Benchmark.
say "konn-server pid $server_pid (agent port $port), konn-agent pid $agent_pid, socket $uds"
set -- --konn-uds="$uds" --server-pid="$server_pid" --agent-pid="$agent_pid" \
        --size="$size" --timeout="$timeout"
[ -z "$json" ] || set -- "$@" --json="$json"
[ -z "$scenarios" ] || set -- "$@" --scenarios="$scenarios"
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
