#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run-qemu-selinux.sh [SRCDIR] — konn's SELinux run test (`make check-selinux`), as root.
#
#   1. builds the .debs from SRCDIR (konn-common, konn-server, konn-agent and konn-selinux),
#   2. copies the cached Debian 12 root of `mkroot.sh --selinux` (kernel, selinux-policy-default) and apt
#      installs the packages into it offline (konn-selinux's postinst loads the konn module with semodule),
#   3. sets SELinux to permissive, labels every file with the host's setfiles (policycoreutils) from the
#      image's file contexts, and adds a one-shot unit that runs tests/system/scenario.py at boot, prints
#      to the serial console and powers the machine off,
#   4. packs the root into an ext4 image (mke2fs -d keeps the security.selinux labels) and boots it in
#      qemu (KVM if usable, else software emulation) with selinux=1 security=selinux enforcing=0,
#   5. reads the scenario's results from the serial console: the whole scenario must pass, and the SELinux
#      steps must have run: the daemons in konn_server_t/konn_agent_t and zero AVC denials for them.
# Prints the steps, the times and "N passed, N failed"; exit 0/1, or 77 (skip) when not root. qemu runs
# under `timeout` (KONN_QEMU_TIMEOUT, default 900 s), so nothing outlives the test.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "${1:-$here/../..}" && pwd)

if [ "$(id -u)" != 0 ]; then
        echo "SKIP: run-qemu-selinux.sh needs root"
        exit 77
fi
for tool in qemu-system-x86_64 mke2fs setfiles debootstrap dpkg-buildpackage openssl timeout; do
        if ! command -v "$tool" >/dev/null; then
                echo "FAIL: $tool is missing (tools/install-deps.sh installs it)"
                echo "0 passed, 1 failed"
                exit 1
        fi
done

work=$(mktemp -d "${TMPDIR:-/var/tmp}/konn-selinux.XXXXXX")
vm=$work/root
passed=0
failed=0
t_all=$(date +%s)
cleanup() {
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

# ---- 1. packages
phase_start
if sh "$here/build-debs.sh" "$src" "$work/debs" >"$work/build-debs.out" 2>&1; then
        pass "build-debs"
else
        cat "$work/build-debs.out"
        fail "build-debs"
        finish
fi
phase_time build-debs

# ---- 2. root with the packages
phase_start
if ! base=$(sh "$here/mkroot.sh" --selinux); then
        fail "mkroot --selinux"
        finish
fi
phase_time mkroot
phase_start
cp -a "$base" "$vm"
mkdir -p "$vm/root/konn-e2e/debs"
cp "$work"/debs/konn-common_*.deb "$work"/debs/konn-server_*.deb "$work"/debs/konn-agent_*.deb \
        "$work"/debs/konn-selinux_*.deb "$vm/root/konn-e2e/debs/"
if chroot "$vm" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/konn-e2e/debs/*.deb' \
        >"$work/install.log" 2>&1 && chroot "$vm" semodule -l | grep -qx konn; then
        pass "apt-install into the image (konn policy module loaded: $(chroot "$vm" semodule -l | grep '^konn' | tr '\n' ' '))"
else
        cat "$work/install.log"
        fail "apt-install into the image"
        finish
fi

# ---- 3. SELinux permissive, labels, the test unit
cat >"$vm/etc/selinux/config" <<'EOF'
SELINUX=permissive
SELINUXTYPE=default
EOF
sh "$src/tests/gen-certs.sh" "$vm/root/konn-e2e/pki"
cp "$here/scenario.py" "$vm/root/konn-e2e/"
cat >"$vm/etc/systemd/system/konn-e2e.service" <<'EOF'
[Unit]
Description=konn end-to-end scenario (run-qemu-selinux.sh)
After=basic.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "KONN-E2E: SELinux $(cat /sys/fs/selinux/enforce 2>/dev/null || echo off), $(cat /proc/cmdline)"; python3 /root/konn-e2e/scenario.py /root/konn-e2e/pki; echo "KONN-E2E-EXIT=$?"'
# The image is thrown away: power off at once (reboot(2)), without stopping anything.
ExecStopPost=/bin/systemctl poweroff --force --force
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=600

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/konn-e2e.service "$vm/etc/systemd/system/multi-user.target.wants/konn-e2e.service"
ln -sf /dev/null "$vm/etc/systemd/system/serial-getty@ttyS0.service"
echo konn-selinux-test >"$vm/etc/hostname"
# The host's setfiles with the image's file contexts (a chroot has no /proc, which setfiles needs).
if ! setfiles -F -r "$vm" -e "$vm/proc" -e "$vm/sys" -e "$vm/dev" -e "$vm/run" \
        "$vm/etc/selinux/default/contexts/files/file_contexts" "$vm" >"$work/setfiles.log" 2>&1; then
        tail -n 20 "$work/setfiles.log"
        fail "setfiles"
        finish
fi
size=$(($(du -sm "$vm" | cut -f1) + 1024))
if ! mke2fs -q -t ext4 -L konn-root -d "$vm" "$work/disk.img" "${size}M" >"$work/mke2fs.log" 2>&1; then
        cat "$work/mke2fs.log"
        fail "mke2fs"
        finish
fi
kernel=$(ls "$vm"/boot/vmlinuz-* | tail -n 1)
initrd=$(ls "$vm"/boot/initrd.img-* | tail -n 1)
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
rm -rf "$vm"
phase_time image

# ---- 4. boot
phase_start
accel="-accel tcg"
if [ -w /dev/kvm ] && grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
        accel="-accel kvm -accel tcg"
fi
# shellcheck disable=SC2086
timeout -k 10 "${KONN_QEMU_TIMEOUT:-900}" qemu-system-x86_64 $accel -m 2048 -smp 2 -no-reboot \
        -display none -monitor none -serial "file:$work/console.log" -nic none \
        -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 selinux=1 security=selinux enforcing=0 panic=-1 quiet systemd.show_status=0" \
        -drive "file=$work/disk.img,format=raw,if=virtio" >"$work/qemu.log" 2>&1 || echo "qemu exited $? ($accel)"
phase_time "boot+scenario ($accel)"

# ---- 5. results
tr -d '\r' <"$work/console.log" | grep -E '^(KONN-E2E|PASS|FAIL|SCORE|scenario took|[0-9]+ passed)' || true
last=$(tr -d '\r' <"$work/console.log" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' | tail -n 1)
if [ -z "$last" ]; then
        tail -n 40 "$work/console.log"
        fail "scenario.py did not report (see the console above)"
        finish
fi
passed=$((passed + ${last% *}))
failed=$((failed + ${last#* }))
for s in selinux-contexts selinux-no-avc-denials; do
        if ! tr -d '\r' <"$work/console.log" | grep -q "^PASS: $s "; then
                fail "$s did not pass (is SELinux enabled in the VM?)"
        fi
done
finish
