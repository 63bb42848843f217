#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run-all.sh [test_x.py ...] — run konn's systemd-facing tests (every tests/systemd/test_*.py, or the given
# ones) with /usr/bin/python3, one file after the other, each bounded by timeout(1). No systemd as PID 1 is
# needed: the tests use systemd-socket-activate, their own NOTIFY_SOCKET listener and offline systemd-analyze.
# Prints every file's unittest output, then one summary line "N passed, N failed" (test cases; skipped ones
# are listed separately). Exits 0 only if every file passed.
#
# Environment: as tests/integration/konntest.py (KONN_BUILDDIR, KONN_SRCDIR, KONN_WRAPPER, KONN_TIMEOUT_SCALE,
# KONN_KEEP). KONN_FILE_TIMEOUT overrides the per-file limit in seconds (default 600, 6000 with KONN_WRAPPER).

set -u

PYTHON=/usr/bin/python3
here=$(cd "$(dirname "$0")" && pwd)

if [ -n "${KONN_WRAPPER:-}" ]; then
        file_timeout=${KONN_FILE_TIMEOUT:-6000}
else
        file_timeout=${KONN_FILE_TIMEOUT:-600}
fi

if [ $# -eq 0 ]; then
        set -- "$here"/test_*.py
fi

out=$(mktemp "${TMPDIR:-/tmp}/konn-systemd-run.XXXXXX")
trap 'rm -f "$out"' EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
skipped=0
bad_files=""

for t in "$@"; do
        name=$(basename "$t")
        echo "=== $name"
        timeout -k 10 "$file_timeout" "$PYTHON" "$t" >"$out" 2>&1
        rc=$?
        cat "$out"
        ran=$(sed -n 's/^Ran \([0-9][0-9]*\) tests\{0,1\} in .*/\1/p' "$out" | tail -n 1)
        ran=${ran:-0}
        status=$(grep -E '^(OK|FAILED)( \(.*\))?$' "$out" | tail -n 1)
        s=$(printf '%s\n' "$status" | sed -n 's/.*skipped=\([0-9][0-9]*\).*/\1/p')
        u=$(printf '%s\n' "$status" | sed -n 's/.*unexpected successes=\([0-9][0-9]*\).*/\1/p')
        # Failed test cases, each counted once however many of its subtests or cleanups failed.
        nf=$(grep -E '^(FAIL|ERROR): ' "$out" | sed 's/^[A-Z]*: [^ ]* (\([^)]*\)).*/\1/' | sort -u | wc -l)
        nf=$(( nf + ${u:-0} ))
        [ "$nf" -gt "$ran" ] && nf=$ran
        if [ "$rc" -ne 0 ] && [ "$nf" -eq 0 ]; then
                # Crashed, timed out or failed to import: count the file as one failure.
                nf=1
                echo "=== $name: exit status $rc$( [ "$rc" -eq 124 ] && echo " (timed out after ${file_timeout}s)")"
        fi
        ns=${s:-0}
        np=$(( ran - nf - ns ))
        [ "$np" -lt 0 ] && np=0
        passed=$((passed + np))
        failed=$((failed + nf))
        skipped=$((skipped + ns))
        if [ "$rc" -ne 0 ]; then
                bad_files="$bad_files $name"
        fi
done

echo
[ -n "$bad_files" ] && echo "failed files:$bad_files"
[ "$skipped" -gt 0 ] && echo "$skipped skipped"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ -z "$bad_files" ]
