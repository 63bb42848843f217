#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# coverage.sh DIR SRCDIR TARGET... — what `make fuzz-coverage` runs after building DIR/cov-TARGET (the fuzz targets
# linked with the replay driver and clang's -fprofile-instr-generate -fcoverage-mapping): replays each target's
# corpus, merges the profiles and prints llvm-cov's report for the parser modules (the decoders each parser fuzzer
# targets) and for the modules the whole-connection fuzzers drive. DIR/report.txt keeps the full report.
set -eu
dir=$1 src=$2
shift 2
cov=$(command -v llvm-cov || command -v llvm-cov-14)
prof=$(command -v llvm-profdata || command -v llvm-profdata-14)
rm -f "$dir"/*.profraw
objects=""
for t in "$@"; do
        LLVM_PROFILE_FILE="$dir/$t.profraw" "$dir/cov-$t" "$src/tests/fuzz/corpus/$t" >/dev/null
        objects="$objects -object=$dir/cov-$t"
done
"$prof" merge -sparse "$dir"/*.profraw -o "$dir/all.profdata"
first=$(echo "$objects" | sed 's/^ *-object=\([^ ]*\).*/\1/')
rest=$(echo "$objects" | sed 's/^ *-object=[^ ]*//')
# shellcheck disable=SC2086
"$cov" report -instr-profile="$dir/all.profdata" "$first" $rest >"$dir/report.txt"
echo "Parser modules (corpus replay of every fuzz target):"
grep -E '^(Filename|-+$)' "$dir/report.txt" | head -2
grep -E 'src/shared/(packet|grpc|connect|http|conf)\.c ' "$dir/report.txt"
echo "Connection modules (whole-connection fuzzers):"
grep -E 'src/(shared/(h2conn|relay|forwarder|transport)|server/[a-z-]+|agent/[a-z-]+)\.c ' "$dir/report.txt" |
        grep -v -- '-config\.c'
grep -E '^TOTAL' "$dir/report.txt"
