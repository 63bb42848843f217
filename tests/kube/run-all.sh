#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# run-all.sh [test_x.py ...] — tests against a real etcd + kube-apiserver (tests/kube/kubeapi.py); see tests/run-suite.sh.
here=$(dirname "$0")
exec sh "$here/../run-suite.sh" "$here" "$@"
