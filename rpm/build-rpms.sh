#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# build-rpms.sh SRCDIR OUTDIR [rpmbuild options...] — build konn's RPMs from the source tree SRCDIR with
# rpm/konn.spec, without touching SRCDIR: the files git knows about are packed into konn-VERSION.tar.gz (a
# snapshot without configure; the spec runs autoreconf then) and built with `rpmbuild -bb` in a scratch
# _topdir. On Debian, whose rpm database knows none of the build dependencies, pass --nodeps; add
# "--without check" to skip %check. The RPMs are copied to OUTDIR.
set -eu

if [ $# -lt 2 ]; then
        echo "usage: $0 SRCDIR OUTDIR [rpmbuild options...]" >&2
        exit 2
fi
src=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
shift 2

version=$(sed -n 's/^Version: *//p' "$src/rpm/konn.spec")
work=$(mktemp -d "${TMPDIR:-/tmp}/konn-rpms.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM
mkdir -p "$work/SOURCES" "$work/konn-$version"

generated='^(debian/(\.debhelper/|tmp/|konn-(common|server|agent|selinux)(-dbgsym)?/|files$|.*\.substvars$|.*\.debhelper\.log$|debhelper-build-stamp$)|selinux/(tmp/|.*\.pp(\.bz2)?$)|systemd/[^/]*\.(service|socket)$|man/[^/]*\.[58]$)'
if [ -e "$src/.git" ] && command -v git >/dev/null; then
        (cd "$src" && git ls-files -c -o --exclude-standard --deduplicate) | grep -Ev "$generated" |
                (cd "$src" && tar --ignore-failed-read --verbatim-files-from -T - -cf - 2>/dev/null) |
                tar -xf - -C "$work/konn-$version"
else
        cp -a "$src/." "$work/konn-$version/"
fi
tar -C "$work" -czf "$work/SOURCES/konn-$version.tar.gz" "konn-$version"
cp "$src/systemd/konn.sysusers" "$work/SOURCES/"

if ! rpmbuild -bb --define "_topdir $work" "$@" "$src/rpm/konn.spec" >"$work/rpmbuild.log" 2>&1; then
        echo "build-rpms.sh: rpmbuild failed; last lines of its log:" >&2
        tail -n 40 "$work/rpmbuild.log" >&2
        exit 1
fi
find "$work/RPMS" -name '*.rpm' -exec cp {} "$out/" \;
ls "$out"
