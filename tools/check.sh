#!/bin/sh
# The whole test suite, from a fresh Debian 12 machine (as root): dependencies, a warnings-as-errors build,
# unit tests, fuzz corpus replay, integration and conformance tests with the real daemons, and a benchmark smoke run.
set -eu
cd "$(dirname "$0")/.."
sh tools/install-deps.sh
sh tools/build.sh --enable-werror
status=0
make -j"$(nproc)" check || status=$?
# Print every test's result and one closing summary line.
if [ -f test-suite.log ]; then
        pass=$(grep -c '^:test-result: PASS' tests/*.trs tests/*/*.trs 2>/dev/null | awk -F: '{s+=$2} END {print s+0}')
        fail=$(grep -c '^:test-result: \(FAIL\|ERROR\|XPASS\)' tests/*.trs tests/*/*.trs 2>/dev/null | awk -F: '{s+=$2} END {print s+0}')
        skip=$(grep -c '^:test-result: SKIP' tests/*.trs tests/*/*.trs 2>/dev/null | awk -F: '{s+=$2} END {print s+0}')
fi
if [ "$status" -ne 0 ]; then
        cat test-suite.log 2>/dev/null | tail -200
fi
if [ "$status" -eq 0 ]; then
        make bench-smoke || status=$?
fi
echo "${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped"
exit "$status"
