#!/bin/sh
# The whole test suite, from a fresh Debian 12 machine (as root): dependencies, a warnings-as-errors build,
# unit tests, fuzz corpus replay, integration and conformance tests with the real daemons, a benchmark smoke run,
# the packages in a booted Debian 12 and the fault-injection suite.
set -eu
cd "$(dirname "$0")/.."
sh tools/install-deps.sh
sh tools/build.sh --enable-werror
status=0
make -j"$(nproc)" check || status=$?
# One closing line counting individual test cases: Check's "Checks: N, Failures: F, Errors: E" lines and the
# Python suites' "konn-summary: ran=N failed=F skipped=S" lines, from every test log.
logs=$(find tests -name '*.log' ! -name 'test-suite.log' 2>/dev/null)
if [ -n "$logs" ]; then
        # shellcheck disable=SC2086
        set -- $(cat $logs | awk '
                /Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+/ {
                        gsub(/[,%]/, " "); for (i = 1; i <= NF; i++) {
                                if ($i == "Checks:") c = $(i + 1); if ($i == "Failures:") f = $(i + 1); if ($i == "Errors:") e = $(i + 1) }
                        pass += c - f - e; fail += f + e }
                /^konn-summary: ran=/ {
                        split($2, a, "="); split($3, b, "="); split($4, d, "=")
                        pass += a[2] - b[2] - d[2]; fail += b[2]; skip += d[2] }
                END { print pass + 0, fail + 0, skip + 0 }')
        pass=$1 fail=$2 skip=$3
fi
if [ "$status" -ne 0 ]; then
        cat test-suite.log 2>/dev/null | tail -200
fi
if [ "$status" -eq 0 ]; then
        make bench-smoke || status=$?
fi
# The integration, conformance and HA suites again with ASan + UBSan daemons (any report fails), then a 2-minute
# soak (mixed workload, agent restarts, certificate rotation; verdict on data, RSS trend and fds).
for t in check-asan "soak DURATION=120"; do
        [ "$status" -eq 0 ] || break
        # shellcheck disable=SC2086
        rc=0; out=$(make $t 2>&1) || rc=$?
        printf '%s\n' "$out" | tail -40
        n=$(printf '%s\n' "$out" | sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\1 \2/p' | tail -n 1)
        [ -z "$n" ] && n=$(printf '%s\n' "$out" | sed -n 's/^konn-summary: ran=\([0-9]*\) failed=\([0-9]*\).*/\1 \2/p' |
                tail -n 1 | awk '{ print $1 - $2, $2 }')
        [ -n "$n" ] && pass=$(( ${pass:-0} + ${n% *} )) && fail=$(( ${fail:-0} + ${n#* } ))
        [ "$rc" -eq 0 ] || status=$rc
done
# The packages, installed into a booted Debian 12 (systemd-nspawn; the root is cached in /var/cache/konn-test).
if [ "$status" -eq 0 ]; then
        out=$(make check-system 2>&1); rc=$?
        printf '%s\n' "$out" | tail -40
        n=$(printf '%s\n' "$out" | sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\1 \2/p' | tail -n 1)
        [ -n "$n" ] && pass=$(( ${pass:-0} + ${n% *} )) && fail=$(( ${fail:-0} + ${n#* } ))
        [ "$rc" -eq 0 ] || status=$rc
fi
# Fault injection (root: its own network namespaces, iptables, the NFQUEUE delay line; figures in the output).
if [ "$status" -eq 0 ]; then
        rc=0
        out=$(make check-faults 2>&1) || rc=$?
        printf '%s\n' "$out" | grep -E '^\[fault|fault: |passed|FAIL|Error' | tail -60
        n=$(printf '%s\n' "$out" | sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed.*$/\1 \2/p' | tail -n 1)
        [ -n "$n" ] && pass=$(( ${pass:-0} + ${n% *} )) && fail=$(( ${fail:-0} + ${n#* } ))
        [ "$rc" -eq 0 ] || status=$rc
fi
echo "${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped"
exit "$status"
