#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run-nspawn.sh [SRCDIR] — konn's real-systemd end-to-end test (`make check-system`), as root.
#
#   1. builds the .debs from SRCDIR (tests/system/build-debs.sh; default: this script's tree),
#   2. gets the cached minimal Debian 12 root (tests/system/mkroot.sh; debootstrap on the first run only),
#   3. boots a throw-away copy of it: systemd-nspawn --ephemeral -b --register=no --keep-unit --console=pipe
#      --private-network (own loopback: the daemons' ports never meet the host's), and steps in with
#      nsenter into the container's PID 1,
#   4. apt installs konn-common, konn-server and konn-agent (offline: the root holds their dependencies),
#   5. runs tests/system/scenario.py inside (unconfigured behaviour, configuration through drop-ins with
#      tests/gen-certs.sh certificates, units active, CONNECT through the frontend socket, journal fields,
#      reload with a rotated certificate, systemd-analyze security inside, drain on stop),
#   6. apt purges the packages and checks that nothing of theirs is left,
#   7. powers the container off; nspawn is killed if it has not exited 30 s later.
# Prints one line per step, the time each phase took and "N passed, N failed". Exit 0 if all passed, 1 if
# not, 77 (skip) when not run as root. Every wait is bounded; the ephemeral copy is removed by nspawn.
#
# Environment: KONN_TEST_CACHE (root cache, default /var/cache/konn-test), KONN_TEST_KEEP=1 (keep the
# scratch directory with the console log and the .debs).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "${1:-$here/../..}" && pwd)

if [ "$(id -u)" != 0 ]; then
        echo "SKIP: run-nspawn.sh needs root (systemd-nspawn, debootstrap)"
        exit 77
fi
for tool in systemd-nspawn debootstrap nsenter dpkg-buildpackage openssl flock timeout; do
        if ! command -v "$tool" >/dev/null; then
                echo "FAIL: $tool is missing (tools/install-deps.sh installs it)"
                echo "0 passed, 1 failed"
                exit 1
        fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/konn-system.XXXXXX")
share=$work/share
mkdir -p "$share/debs"
nspawn_pid=""
pid1=""
passed=0
failed=0
t_all=$(date +%s)

stop_container() {
        [ -n "$nspawn_pid" ] || return 0
        if kill -0 "$nspawn_pid" 2>/dev/null; then
                if [ -n "$pid1" ]; then
                        timeout 20 nsenter -t "$pid1" -a systemctl poweroff --no-block >/dev/null 2>&1 || true
                fi
                i=0
                while kill -0 "$nspawn_pid" 2>/dev/null && [ $i -lt 150 ]; do
                        sleep 0.2
                        i=$((i + 1))
                done
                if kill -0 "$nspawn_pid" 2>/dev/null; then
                        echo "warning: the container did not power off within 30 s, killing systemd-nspawn"
                        kill -KILL "$nspawn_pid" 2>/dev/null || true
                fi
        fi
        wait "$nspawn_pid" 2>/dev/null || true
        nspawn_pid=""
}

cleanup() {
        stop_container
        if [ "${KONN_TEST_KEEP:-0}" = 1 ]; then
                echo "kept $work"
        else
                rm -rf "$work"
        fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

pass() {
        echo "PASS: $1"
        passed=$((passed + 1))
}
fail() {
        echo "FAIL: $1"
        failed=$((failed + 1))
}
finish() {
        echo "total $(($(date +%s) - t_all)) s"
        echo "$passed passed, $failed failed"
        [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
        exit $?
}
phase_start() {
        t_phase=$(date +%s)
}
phase_time() {
        echo "TIME: $1 $(($(date +%s) - t_phase)) s"
}

# Run a command inside the container, with a clean environment and a time limit.
inside() {
        limit=$1
        shift
        timeout "$limit" nsenter -t "$pid1" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}

# ---- 1. packages
phase_start
if sh "$here/build-debs.sh" "$src" "$work/debs-all" >"$work/build-debs.out" 2>&1; then
        cp "$work"/debs-all/konn-common_*.deb "$work"/debs-all/konn-server_*.deb "$work"/debs-all/konn-agent_*.deb \
                "$work"/debs-all/konnctl_*.deb "$share/debs/"
        pass "build-debs ($(cd "$share/debs" && echo *.deb))"
else
        cat "$work/build-debs.out"
        fail "build-debs"
        finish
fi
phase_time build-debs

# ---- 2. root
phase_start
if ! root=$(sh "$here/mkroot.sh"); then
        fail "mkroot"
        finish
fi
phase_time mkroot

# ---- 3. boot
sh "$src/tests/gen-certs.sh" "$share/pki"
cp "$here/scenario.py" "$share/"
phase_start
systemd-nspawn -D "$root" --ephemeral -b --register=no --keep-unit --console=pipe --private-network \
        --bind-ro="$share:/mnt/konn-test" >"$work/console.log" 2>&1 </dev/null &
nspawn_pid=$!
i=0
while [ -z "$pid1" ] && [ $i -lt 150 ] && kill -0 "$nspawn_pid" 2>/dev/null; do
        pid1=$(pgrep -P "$nspawn_pid" -x systemd || true)
        [ -n "$pid1" ] || sleep 0.2
        i=$((i + 1))
done
if [ -z "$pid1" ]; then
        tail -n 30 "$work/console.log"
        fail "boot: no systemd inside systemd-nspawn within 30 s"
        finish
fi
# PID 1 exists before its bus socket does: retry until systemctl gets an answer (90 s in all).
state=""
i=0
while [ -z "$state" ] && [ $i -lt 180 ]; do
        state=$(inside 90 systemctl is-system-running --wait 2>/dev/null || true)
        [ -n "$state" ] || sleep 0.5
        i=$((i + 1))
done
if [ "$state" = running ]; then
        pass "boot (systemctl is-system-running: $state)"
else
        inside 10 systemctl --failed --no-pager || true
        fail "boot (systemctl is-system-running: '$state')"
        finish
fi
phase_time boot

# ---- 4. install
phase_start
if inside 300 env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        $(cd "$share/debs" && for f in *.deb; do echo "/mnt/konn-test/debs/$f"; done) >"$work/install.log" 2>&1; then
        enabled=$(inside 10 systemctl is-enabled konn-server.socket konn-server-agent.socket konn-server.service \
                konn-agent.service konn-agent.socket | tr '\n' ' ')
        if [ "$enabled" = "enabled enabled enabled enabled enabled " ]; then
                pass "apt-install (units enabled: $enabled)"
        else
                fail "apt-install: units not all enabled: $enabled"
        fi
else
        cat "$work/install.log"
        fail "apt-install"
        finish
fi
phase_time apt-install

# ---- 5. scenario
phase_start
inside 900 python3 /mnt/konn-test/scenario.py /mnt/konn-test/pki >"$work/scenario.log" 2>&1 || true
cat "$work/scenario.log"
s_passed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$work/scenario.log" | tail -n 1)
s_failed=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$work/scenario.log" | tail -n 1)
if [ -z "$s_passed" ]; then
        fail "scenario.py did not finish"
else
        passed=$((passed + s_passed))
        failed=$((failed + s_failed))
fi
if [ "$failed" -ne 0 ]; then
        echo "---- journal of the konn units inside the container (last 60 lines)"
        inside 20 journalctl --no-pager -u konn-server -u konn-agent -u konn-server.socket | tail -n 60 || true
fi
phase_time scenario

# ---- 6. purge
phase_start
if inside 300 env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q konn-agent konn-server konnctl konn-common \
        >"$work/purge.log" 2>&1; then
        problems=""
        left=$(inside 10 dpkg-query -W -f='${db:Status-Abbrev}${Package}\n' 'konn-*' konnctl 2>/dev/null | grep -v '^un' || true)
        [ -z "$left" ] || problems="$problems; still known to dpkg: $left"
        for f in /usr/sbin/konn-server /usr/sbin/konn-agent /lib/systemd/system/konn-server.service \
                /lib/systemd/system/konn-server.socket /lib/systemd/system/konn-server-agent.socket \
                /lib/systemd/system/konn-agent.service /usr/lib/sysusers.d/konn.conf /usr/lib/tmpfiles.d/konn.conf \
                /etc/konn/konn-server.conf /etc/konn/konn-agent.conf /usr/share/man/man8/konn-server.8.gz \
                /run/konn/konn-server.sock /usr/bin/konnctl /lib/systemd/system/konn-server-admin.socket \
                /lib/systemd/system/konn-agent-admin.socket /run/konn/konn-server-admin.sock; do
                if inside 10 test -e "$f"; then
                        problems="$problems; $f still exists"
                fi
        done
        links=$(inside 10 find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled -name '*konn*' | tr '\n' ' ')
        [ -z "$links" ] || problems="$problems; enablement left: $links"
        procs=$(inside 10 sh -c 'grep -l "^konn-" /proc/[0-9]*/comm 2>/dev/null' | tr '\n' ' ' || true)
        [ -z "$procs" ] || problems="$problems; konn processes left: $procs"
        # What remains in /etc/konn must be exactly the administrator's files that scenario.py created.
        etc=$(inside 10 find /etc/konn -type f | sort | tr '\n' ' ')
        want="/etc/konn/konn-agent.conf.d/50-e2e.conf /etc/konn/konn-server.conf.d/50-e2e.conf /etc/konn/pki/agent.crt /etc/konn/pki/agent.key /etc/konn/pki/ca.crt /etc/konn/pki/server.crt /etc/konn/pki/server.key "
        [ "$etc" = "$want" ] || problems="$problems; /etc/konn holds '$etc', expected only the test's own files"
        if [ -z "$problems" ]; then
                pass "apt-purge (nothing of the packages left; /etc/konn keeps only the test's own files)"
        else
                fail "apt-purge${problems}"
        fi
else
        cat "$work/purge.log"
        fail "apt-purge"
fi
phase_time apt-purge

# ---- 7. power off
phase_start
stop_container
phase_time poweroff
finish
