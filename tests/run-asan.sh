#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run-asan.sh ASAN_BUILDDIR — every fuzz corpus replayed by the ASan + UBSan fuzz targets, then the integration,
# conformance and HA suites against the ASan + UBSan daemons in ASAN_BUILDDIR (make check-asan builds both),
# KONN_ASAN_JOBS files at a time (default: the number of CPUs).
# Daemons halt on the first report (konntest.SANITIZER_OPTIONS), leaks are checked when they exit, and a report in
# any daemon's log fails the test (konntest cleanup). Each file's output goes to ASAN_BUILDDIR/logs/; failing files
# are printed. Last line: "N passed, N failed" (test cases); exits 0 only if everything passed.
set -u
dir=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
jobs=${KONN_ASAN_JOBS:-$(nproc)}
export KONN_BUILDDIR="$dir" KONN_SRCDIR="$src" KONN_SANITIZER=1
for b in konn-server konn-agent; do
        [ -x "$dir/$b" ] || { echo "run-asan.sh: $dir/$b is missing (make check-asan builds it)" >&2; exit 2; }
done
rm -rf "$dir/logs"
mkdir -p "$dir/logs"
start=$(date +%s)
# The corpora (seeds and past crashers): the replay drivers stop at the first report (ASAN_OPTIONS below).
if ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        KONN_BUILDDIR="$dir" sh "$src/tests/fuzz/replay-corpus.sh" >"$dir/logs/fuzz-corpus.log" 2>&1; then
        corpus_pass=1 corpus_fail=0
else
        corpus_pass=0 corpus_fail=1
        echo "==== fuzz corpus replay (ASan + UBSan) failed:"
        tail -60 "$dir/logs/fuzz-corpus.log"
fi
mv "$dir/logs/fuzz-corpus.log" "$dir/fuzz-corpus.log"
# The longest files first, so the parallel workers finish together.
heavy="integration/test_transfer.py ha/test_ha.py conformance/test_frontend.py conformance/test_hostile.py
integration/test_failover.py ha/test_keepalive.py"
files=""
for f in $heavy; do files="$files $src/tests/$f"; done
for f in "$src"/tests/integration/test_*.py "$src"/tests/conformance/test_*.py "$src"/tests/ha/test_*.py; do
        case " $files " in *" $f "*) ;; *) files="$files $f" ;; esac
done
# shellcheck disable=SC2086
printf '%s\n' $files | xargs -P "$jobs" -I{} sh -c \
        'f={}; sh "$0/tests/run-suite.sh" "$(dirname "$f")" "$f" >"$1/logs/$(basename "$(dirname "$f")")-$(basename "$f" .py).log" 2>&1' \
        "$src" "$dir"
passed=$corpus_pass failed=$corpus_fail skipped=0
for log in "$dir"/logs/*.log; do
        line=$(sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\1 \2/p' "$log" | tail -n 1)
        s=$(sed -n 's/^\([0-9][0-9]*\) skipped$/\1/p' "$log" | tail -n 1)
        if [ -z "$line" ]; then
                line="0 1"
        fi
        p=${line% *} f=${line#* }
        passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + ${s:-0}))
        if [ "$f" -ne 0 ]; then
                echo "==== $(basename "$log" .log) (ASan + UBSan) failed:"
                cat "$log"
        fi
done
echo "check-asan: corpus replay $( [ "$corpus_fail" -eq 0 ] && echo passed || echo FAILED), $(ls "$dir"/logs/*.log | wc -l) suite files in $(( $(date +%s) - start )) s ($skipped skipped)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
