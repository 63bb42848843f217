#!/bin/sh
# Replays every seed and past crasher of every fuzz target with the gcc-built replay drivers (make check).
set -eu
b=${KONN_BUILDDIR:-.}
s=${KONN_SRCDIR:-.}
for t in packet grpc connect conf http kubeconfig; do
        "$b/tests/fuzz/fuzz-$t" "$s/tests/fuzz/corpus/$t"
done
