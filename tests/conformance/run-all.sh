#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# run-all.sh [test_x.py ...] — the wire-conformance suite against python3-grpcio; see tests/run-suite.sh.
here=$(dirname "$0")
if ! /usr/bin/python3 -c 'import grpc, grpc_tools, google.protobuf, h2' 2>/dev/null; then
        echo "run-all.sh: /usr/bin/python3 lacks python3-grpcio, -grpc-tools, -protobuf or -h2 (tools/install-deps.sh)" >&2
        echo "0 passed, 1 failed"
        exit 1
fi
exec sh "$here/../run-suite.sh" "$here" "$@"
