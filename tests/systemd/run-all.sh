#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# run-all.sh [test_x.py ...] — the systemd-facing tests (socket activation, sd_notify, config, reload, drain,
# units, man pages); see tests/run-suite.sh.
here=$(dirname "$0")
exec sh "$here/../run-suite.sh" "$here" "$@"
