#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# run-all.sh [test_x.py ...] — high availability, strategies, readiness, metrics, keepalive and dial-timeout tests; see tests/run-suite.sh.
here=$(dirname "$0")
exec sh "$here/../run-suite.sh" "$here" "$@"
