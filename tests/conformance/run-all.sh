#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run-all.sh [test_x.py ...] — run konn's wire-conformance suite (every tests/conformance/test_*.py, or the given
# ones) with /usr/bin/python3 (Debian's python3-grpcio, python3-protobuf, python3-grpc-tools and python3-h2 are
# needed), one file after the other, each bounded by timeout(1). Prints every file's unittest output, then one
# summary line "N passed, N failed" (test cases; skipped ones are listed separately). Exits 0 only if every file
# passed.
#
# Environment: as for tests/integration (KONN_BUILDDIR, KONN_SRCDIR, KONN_WRAPPER, KONN_TIMEOUT_SCALE,
# KONN_SIZE_DIVISOR, KONN_KEEP; see tests/integration/konntest.py). KONN_FILE_TIMEOUT overrides the per-file limit
# in seconds (default 300, 3000 with KONN_WRAPPER).

set -u

PYTHON=/usr/bin/python3
here=$(cd "$(dirname "$0")" && pwd)

if [ -n "${KONN_WRAPPER:-}" ]; then
        file_timeout=${KONN_FILE_TIMEOUT:-3000}
else
        file_timeout=${KONN_FILE_TIMEOUT:-300}
fi

if ! "$PYTHON" -c 'import grpc, grpc_tools, google.protobuf, h2' 2>/dev/null; then
        echo "run-all.sh: $PYTHON lacks grpc, grpc_tools, google.protobuf or h2" >&2
        echo "(python3-grpcio, python3-grpc-tools, python3-protobuf, python3-h2; see tools/install-deps.sh)" >&2
        echo "0 passed, 1 failed"
        exit 1
fi

if [ $# -eq 0 ]; then
        set -- "$here"/test_*.py
fi

out=$(mktemp "${TMPDIR:-/tmp}/konn-conf-run.XXXXXX")
trap 'rm -f "$out"' EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
skipped=0
bad_files=""

for t in "$@"; do
        # A bare file name means the file in this directory.
        [ -e "$t" ] || [ ! -e "$here/$t" ] || t=$here/$t
        name=$(basename "$t")
        echo "=== $name"
        timeout -k 10 "$file_timeout" "$PYTHON" "$t" >"$out" 2>&1
        rc=$?
        cat "$out"
        ran=$(sed -n 's/^Ran \([0-9][0-9]*\) tests\{0,1\} in .*/\1/p' "$out" | tail -n 1)
        ran=${ran:-0}
        status=$(grep -E '^(OK|FAILED)( \(.*\))?$' "$out" | tail -n 1)
        f=$(printf '%s\n' "$status" | sed -n 's/.*failures=\([0-9][0-9]*\).*/\1/p')
        e=$(printf '%s\n' "$status" | sed -n 's/.*errors=\([0-9][0-9]*\).*/\1/p')
        s=$(printf '%s\n' "$status" | sed -n 's/.*skipped=\([0-9][0-9]*\).*/\1/p')
        u=$(printf '%s\n' "$status" | sed -n 's/.*unexpected successes=\([0-9][0-9]*\).*/\1/p')
        nf=$(( ${f:-0} + ${e:-0} + ${u:-0} ))
        # A test can report a failure and a cleanup error: count test cases, not reports.
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
