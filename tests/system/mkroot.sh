#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# mkroot.sh [--selinux] [CACHEDIR] — print the path of a cached minimal Debian 12 root for the system tests,
# creating it with debootstrap first if it is missing or was made from a different package list.
# --selinux: the root for the qemu SELinux test (run-qemu-selinux.sh): also a kernel with its initramfs,
# the reference policy (selinux-policy-default) and the SELinux tools; about 700 MB.
#
# The root (about 300 MB, 1-3 minutes to create) lives in CACHEDIR (default $KONN_TEST_CACHE, else
# /var/cache/konn-test) as bookworm-<hash>/, where <hash> covers everything below that shapes it, so a change
# here builds a fresh root and never reuses a stale one. It is never booted itself: tests boot a throw-away
# copy (systemd-nspawn --ephemeral). It holds konn's run-time dependencies, so that "apt install ./konn-*.deb"
# inside a container without network needs no download. Creation is serialised with flock(1), and a root
# appears under its final name only once complete (a killed run leaves only a *.tmp directory, removed by
# the next run). Needs root, debootstrap and network access to the Debian mirror (first run only).
set -eu

flavor=base
if [ "${1:-}" = --selinux ]; then
        flavor=selinux
        shift
fi
cache=${1:-${KONN_TEST_CACHE:-/var/cache/konn-test}}
mirror=${KONN_TEST_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
# systemd as PID 1 (+dbus for systemd-analyze security and busctl), konn's shared libraries, and python3 for
# the test client/target run inside the container. Keep this list in step with debian/control's Depends.
include=systemd,systemd-sysv,dbus,procps,libsystemd0,libssl3,libnghttp2-14,libconfig9,libcurl4,libyaml-0-2,libjson-c5,python3-minimal,openssl
if [ "$flavor" = selinux ]; then
        include="$include,linux-image-amd64,selinux-policy-default,policycoreutils,selinux-utils"
fi
version=1

key=$(printf '%s\n' "$suite" "$include" "$version" | sha256sum | cut -c1-12)
root=$cache/$suite-$flavor-$key

mkdir -p "$cache"
exec 9>"$cache/.lock"
if ! flock -w 900 9; then
        echo "mkroot.sh: timed out waiting for $cache/.lock" >&2
        exit 1
fi

if [ -f "$root/.konn-root-complete" ]; then
        echo "$root"
        exit 0
fi

rm -rf "$root.tmp"
echo "mkroot.sh: creating $root with debootstrap (first run only)" >&2
if ! debootstrap --variant=minbase --include="$include" --components=main "$suite" "$root.tmp" "$mirror" \
        >"$cache/debootstrap-$flavor.log" 2>&1; then
        echo "mkroot.sh: debootstrap failed, last lines of $cache/debootstrap-$flavor.log:" >&2
        tail -n 20 "$cache/debootstrap-$flavor.log" >&2
        exit 1
fi

# Make the root bootable and small: hostname, no machine-id (nspawn provides a transient one), no apt
# caches, no documentation.
echo konn-test >"$root.tmp/etc/hostname"
rm -f "$root.tmp/etc/machine-id" "$root.tmp/var/lib/dbus/machine-id"
: >"$root.tmp/etc/machine-id"
chroot "$root.tmp" apt-get clean
rm -rf "$root.tmp/var/lib/apt/lists/"* "$root.tmp/usr/share/doc/"* "$root.tmp/usr/share/man/"* \
        "$root.tmp/usr/share/locale/"*
# No network inside the container: keep apt from trying.
printf 'Acquire::Languages "none";\nAPT::Get::List-Cleanup "false";\n' >"$root.tmp/etc/apt/apt.conf.d/90konn-test"
: >"$root.tmp/.konn-root-complete"
mv "$root.tmp" "$root"
# Roots made from an older version of this script are never used again.
for old in "$cache/$suite-$flavor"-*; do
        if [ "$old" != "$root" ] && [ -f "$old/.konn-root-complete" ]; then
                rm -rf "$old"
        fi
done
echo "$root"
