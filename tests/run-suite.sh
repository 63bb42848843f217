#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run-suite.sh DIR [test_x.py ...] — run one of konn's Python test suites (every DIR/test_*.py, or the given
# ones) with /usr/bin/python3, one file after the other, each bounded by timeout(1). Prints every file's unittest
# output, then one summary line "N passed, N failed" (test cases, from the "konn-summary:" line each file prints;
# skipped ones are listed separately; a file that crashes or times out counts as one failure). Exits 0 only if
# every file passed. Each suite's run-all.sh calls this.
#
# Environment: see the docstring of tests/integration/konntest.py (KONN_BUILDDIR, KONN_SRCDIR, KONN_WRAPPER,
# KONN_TIMEOUT_SCALE, KONN_SIZE_DIVISOR, KONN_KEEP, KONN_TMPDIR, KONN_MALLOC_CHECK). KONN_FILE_TIMEOUT overrides
# the per-file limit in seconds (default 600, 6000 with KONN_WRAPPER).

set -u

PYTHON=/usr/bin/python3
here=$(cd "$1" && pwd)
shift

if [ -n "${KONN_WRAPPER:-}" ]; then
        file_timeout=${KONN_FILE_TIMEOUT:-6000}
else
        file_timeout=${KONN_FILE_TIMEOUT:-600}
fi

if [ $# -eq 0 ]; then
        set -- "$here"/test_*.py
fi

trap 'exit 130' INT TERM

passed=0
failed=0
skipped=0
bad_files=""

for t in "$@"; do
        [ -e "$t" ] || t="$here/$t"
        name=$(basename "$t")
        echo "=== $name"
        # Output is kept in memory (no temp file for anyone to clean away), printed once the file is done.
        out=$(timeout -k 10 "$file_timeout" "$PYTHON" "$t" 2>&1; echo "konn-run-all-rc=$?")
        rc=$(printf '%s\n' "$out" | sed -n 's/^konn-run-all-rc=//p' | tail -n 1)
        rc=${rc:-1}
        out=$(printf '%s\n' "$out" | sed '/^konn-run-all-rc=/d')
        printf '%s\n' "$out"
        summary=$(printf '%s\n' "$out" | sed -n 's/^konn-summary: //p' | tail -n 1)
        ran=$(printf '%s\n' "$summary" | sed -n 's/.*ran=\([0-9][0-9]*\).*/\1/p')
        nf=$(printf '%s\n' "$summary" | sed -n 's/.*failed=\([0-9][0-9]*\).*/\1/p')
        s=$(printf '%s\n' "$summary" | sed -n 's/.*skipped=\([0-9][0-9]*\).*/\1/p')
        ran=${ran:-0}
        nf=${nf:-0}
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
