#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# build-debs.sh SRCDIR OUTDIR — build konn's .debs from the source tree SRCDIR into OUTDIR, without touching
# SRCDIR: the files git knows about (tracked, or untracked and not ignored) are copied to a scratch directory
# and built there with `dpkg-buildpackage -us -uc -b`. The unit tests are skipped (nocheck profile), since
# `make check` runs them already; set KONN_DEB_CHECK=1 to run them too. Needs the Build-Depends of
# debian/control (dpkg-buildpackage names any that are missing). Prints the build log's tail on failure.
set -eu

if [ $# -ne 2 ]; then
        echo "usage: $0 SRCDIR OUTDIR" >&2
        exit 2
fi
src=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/konn-debs.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM
mkdir "$work/konn"

# Generated files that .gitignore does not list (units and man pages made from .in, policy and debhelper
# output) stay behind, so a configured or previously packaged tree builds like a fresh clone.
generated='^(debian/(\.debhelper/|tmp/|(konn-(common|server|agent|selinux)|konnctl)(-dbgsym)?/|files$|.*\.substvars$|.*\.debhelper\.log$|debhelper-build-stamp$)|selinux/(tmp/|.*\.pp$)|systemd/[^/]*\.(service|socket)$|man/[^/]*\.[158]$)'
if [ -e "$src/.git" ] && command -v git >/dev/null; then
        (cd "$src" && git ls-files -c -o --exclude-standard --deduplicate) | grep -Ev "$generated" |
                (cd "$src" && tar --ignore-failed-read --verbatim-files-from -T - -cf - 2>/dev/null) |
                tar -xf - -C "$work/konn"
else
        cp -a "$src/." "$work/konn/"
fi

if [ "${KONN_DEB_CHECK:-0}" = 1 ]; then
        profiles=""
        options="${DEB_BUILD_OPTIONS:-}"
else
        profiles="-Pnocheck"
        options="nocheck ${DEB_BUILD_OPTIONS:-}"
fi
jobs=$(nproc 2>/dev/null || echo 1)
if ! (cd "$work/konn" && DEB_BUILD_OPTIONS="$options parallel=$jobs" \
        dpkg-buildpackage -us -uc -b $profiles) >"$work/build.log" 2>&1; then
        echo "build-debs.sh: dpkg-buildpackage failed; last lines of its log:" >&2
        tail -n 40 "$work/build.log" >&2
        exit 1
fi
cp "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$out/"
ls "$out"
