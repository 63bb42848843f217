#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# run-all.sh [test_x.py ...] — konnctl, the admin interface and its trace stream, log formats, dashboards and
# alert rules; see tests/run-suite.sh.
here=$(dirname "$0")
exec sh "$here/../run-suite.sh" "$here" "$@"
