#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run-fuzz.sh --time=SECONDS [--runs=N] [--builddir=DIR] [--srcdir=DIR] TARGET... — what `make fuzz` runs.
# For each target: libFuzzer (tests/fuzz/libfuzzer-TARGET, from make fuzz-build) for SECONDS (or N executions,
# whichever comes first) on a scratch corpus seeded with tests/fuzz/corpus/TARGET, then `-merge=1` of the scratch
# corpus into tests/fuzz/corpus/TARGET (only inputs that add coverage are kept). A crash, leak or timeout stops
# with the reproducer in tests/fuzz/crash-TARGET-* and a non-zero exit. One line per target: executions, exec/s,
# inputs added. Runs under nice(1); FUZZ_JOBS targets at a time (default 1).
set -eu
time=60 runs=-1 b=. s=.
while [ $# -gt 0 ]; do
        case "$1" in
        --time=*) time=${1#--time=} ;;
        --runs=*) runs=${1#--runs=} ;;
        --builddir=*) b=${1#--builddir=} ;;
        --srcdir=*) s=${1#--srcdir=} ;;
        -*) echo "run-fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
        esac
        shift
done
[ $# -gt 0 ] || set -- packet grpc grpc-stream data-head connect conf http kubeconfig server-agent server-grpc server-connect agent-conn
scratch=$(mktemp -d "${TMPDIR:-/tmp}/konn-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

one() {
        t=$1
        bin="$b/tests/fuzz/libfuzzer-$t"
        corpus="$s/tests/fuzz/corpus/$t"
        [ -x "$bin" ] || { echo "run-fuzz.sh: $bin missing (make fuzz-build)" >&2; return 2; }
        mkdir -p "$corpus" "$scratch/$t"
        before=$(ls "$corpus" | wc -l)
        # The whole-connection targets take longer inputs (a conversation), the parsers the default.
        case "$t" in server-*|agent-*) maxlen=-max_len=16384 ;; *) maxlen= ;; esac
        # shellcheck disable=SC2086
        if ! nice -n 10 "$bin" -max_total_time="$time" -runs="$runs" $maxlen -timeout=60 -print_final_stats=1 \
                -artifact_prefix="$b/tests/fuzz/crash-$t-" "$scratch/$t" "$corpus" >"$scratch/$t.log" 2>&1; then
                tail -60 "$scratch/$t.log"
                echo "$t: FAILED (reproducer: $(ls "$b"/tests/fuzz/crash-"$t"-* 2>/dev/null | head -1))"
                return 1
        fi
        nice -n 10 "$bin" -merge=1 $maxlen "$corpus" "$scratch/$t" >"$scratch/$t.merge.log" 2>&1 || {
                tail -20 "$scratch/$t.merge.log"; echo "$t: merge failed"; return 1; }
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log")
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$scratch/$t.log")
        cov=$(grep -a '^#[0-9]*.*cov:' "$scratch/$t.log" | tail -1 | sed 's/.*cov: \([0-9]*\) ft: \([0-9]*\).*/cov \1 ft \2/')
        echo "$t: ${execs:-?} executions in ${time} s max (${rate:-?}/s), $cov, corpus $before -> $(ls "$corpus" | wc -l)"
}

status=0
jobs=${FUZZ_JOBS:-1}
if [ "$jobs" -le 1 ]; then
        for t in "$@"; do one "$t" || status=1; done
else
        for t in "$@"; do
                ( one "$t" >"$scratch/$t.result" 2>&1; echo $? >"$scratch/$t.rc" ) &
                while [ "$(jobs -p | wc -l)" -ge "$jobs" ]; do sleep 1; done
        done
        wait
        for t in "$@"; do cat "$scratch/$t.result"; [ "$(cat "$scratch/$t.rc")" = 0 ] || status=1; done
fi
exit $status
