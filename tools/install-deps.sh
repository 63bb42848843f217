#!/bin/sh
# Installs everything konn needs to build, test, benchmark and package on Debian 12 (run as root).
# Used by tools/demo.sh, tools/check.sh and CI; safe to run repeatedly.
set -eu
export DEBIAN_FRONTEND=noninteractive
PKGS="build-essential autoconf automake pkg-config
      libsystemd-dev libssl-dev libnghttp2-dev libconfig-dev check
      libyaml-dev libjson-c-dev libcurl4-openssl-dev
      openssl curl ca-certificates python3 python3-grpcio python3-grpc-tools python3-protobuf python3-h2
      valgrind clang systemd groff-base man-db procps iproute2
      dpkg-dev debhelper lintian devscripts rpm rpmlint debootstrap systemd-container
      selinux-policy-dev selinux-policy-default policycoreutils setools semodule-utils e2fsprogs qemu-system-x86
      etcd-server podman runc prometheus
      iproute2 iptables conntrack libnetfilter-queue-dev"
missing=""
for p in $PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
        echo "Installing:$missing"
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
