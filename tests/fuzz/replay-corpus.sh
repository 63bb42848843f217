#!/bin/sh
# Replays every seed and past crasher of every fuzz target with the gcc-built replay drivers (make check).
# The whole-connection targets (server-*, agent-conn) run the daemons in a private network namespace.
set -eu
b=${KONN_BUILDDIR:-.}
s=${KONN_SRCDIR:-.}
for t in packet grpc grpc-stream data-head connect conf http kubeconfig server-agent server-grpc server-connect agent-conn; do
        "$b/tests/fuzz/fuzz-$t" "$s/tests/fuzz/corpus/$t"
done
