#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# build-image.sh BUILDDIR OUTPUT IMAGE-NAME — what `make image` runs: konn's OCI image, offline, from this tree.
#
# 1. `make distdir` of the configured tree BUILDDIR into a temporary directory, configured there with
#    --prefix=/usr --sysconfdir=/etc (the paths the image uses: /etc/konn/konn-agent.conf.d/ for a mounted
#    ConfigMap), and only konn-server and konn-agent built;
# 2. tools/mkimage.py writes OUTPUT, an OCI image layout packed as a tar ("oci-archive"), from them;
# 3. where podman exists, `podman load` stores it locally as IMAGE-NAME (skipped with KONN_IMAGE_NO_LOAD=1).
# No registry is contacted. Environment: IMAGE_SOURCE (org.opencontainers.image.source; default: the git remote
# "origin" if there is one, else file://SRCDIR), SOURCE_DATE_EPOCH (image time; default: the last commit's time).
set -eu

if [ $# -ne 3 ]; then
        echo "usage: $0 BUILDDIR OUTPUT IMAGE-NAME" >&2
        exit 2
fi
builddir=$(cd "$1" && pwd)
output=$2
name=$3
srcdir=$(cd "$(dirname "$0")/.." && pwd)
case $output in /*) ;; *) output=$(pwd)/$output ;; esac

work=$(mktemp -d "${TMPDIR:-/tmp}/konn-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

version=$(sed -n 's/^PACKAGE_VERSION = //p' "$builddir/Makefile")
revision=$(git -C "$srcdir" rev-parse HEAD 2>/dev/null || true)
if [ -n "$revision" ] && [ -n "$(git -C "$srcdir" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        revision="$revision-dirty"
fi
created=${SOURCE_DATE_EPOCH:-$(git -C "$srcdir" log -1 --format=%ct 2>/dev/null || echo 0)}
source=${IMAGE_SOURCE:-$(git -C "$srcdir" config --get remote.origin.url 2>/dev/null || true)}
# Without a remote, the tree it was built from (set IMAGE_SOURCE for a published image); a remote that is a
# plain path (a local clone, as in CI) becomes a file:// URL.
source=${source:-$srcdir}
case "$source" in
/*) source=file://$source ;;
esac

echo "  DISTDIR  $work/konn-$version"
make -s -C "$builddir" distdir distdir="$work/konn-$version" top_distdir="$work/konn-$version" >/dev/null
echo "  BUILD    konn-server konn-agent (--prefix=/usr --sysconfdir=/etc)"
# Hardened like the Debian packages (debian/rules: hardening=+all) where dpkg-buildflags exists.
cflags="-O2 -g" cppflags="" ldflags=""
if command -v dpkg-buildflags >/dev/null 2>&1; then
        cflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS)
        cppflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS)
        ldflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS)
fi
(cd "$work/konn-$version" && ./configure -q --prefix=/usr --sysconfdir=/etc --localstatedir=/var \
        CFLAGS="$cflags" CPPFLAGS="$cppflags" LDFLAGS="$ldflags" >/dev/null &&
        make -s -j"$(nproc)" konn-server konn-agent >/dev/null)
echo "  IMAGE    $output"
/usr/bin/python3 "$srcdir/tools/mkimage.py" --server "$work/konn-$version/konn-server" \
        --agent "$work/konn-$version/konn-agent" --version "$version" --output "$output" \
        --revision "$revision" --source "$source" --created "$created" --license-file "$srcdir/LICENSE" \
        --ref-name "$name"
if [ "${KONN_IMAGE_NO_LOAD:-0}" != 1 ] && command -v podman >/dev/null 2>&1; then
        echo "  LOAD     $name"
        podman load -q -i "$output"
fi
