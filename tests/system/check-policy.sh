#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# check-policy.sh [SRCDIR] — the SELinux module builds with the reference policy's devel Makefile
# (selinux-policy-dev) and links into Debian's selinux-policy-default: it is installed with `semodule -n`
# into a scratch copy of the policy store (the system's store is never touched), and the linked policy is
# checked for konn's file contexts and port labels. Needs root (semodule), about 10 s. Exit 77 (skip) when
# selinux-policy-default or semodule is missing.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "${1:-$here/../..}" && pwd)

if [ "$(id -u)" != 0 ] || ! command -v semodule >/dev/null || [ ! -d /var/lib/selinux/default ] ||
        [ ! -f /usr/share/selinux/devel/Makefile ]; then
        echo "SKIP: needs root, semodule, selinux-policy-default and selinux-policy-dev"
        exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/konn-policy.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM
passed=0
failed=0
check() {
        if [ "$2" = ok ]; then
                echo "PASS: $1"
                passed=$((passed + 1))
        else
                echo "FAIL: $1"
                failed=$((failed + 1))
        fi
}

cp "$src"/selinux/konn.te "$src"/selinux/konn.fc "$src"/selinux/konn.if "$src"/selinux/konn_ports.cil "$work/"
if make -C "$work" -f /usr/share/selinux/devel/Makefile konn.pp >"$work/build.log" 2>&1; then
        check "konn.pp builds with /usr/share/selinux/devel/Makefile" ok
else
        cat "$work/build.log"
        check "konn.pp builds with /usr/share/selinux/devel/Makefile" no
        echo "$passed passed, $failed failed"
        exit 1
fi

mkdir -p "$work/store/var/lib" "$work/store/etc"
cp -a /var/lib/selinux "$work/store/var/lib/"
cp -a /etc/selinux "$work/store/etc/"
if semodule -p "$work/store" -s default -n -X 200 -i "$work/konn.pp" "$work/konn_ports.cil" \
        >"$work/semodule.log" 2>&1; then
        check "semodule -n installs konn and konn_ports into selinux-policy-default" ok
else
        cat "$work/semodule.log"
        check "semodule -n installs konn and konn_ports into selinux-policy-default" no
fi
modules=$(semodule -p "$work/store" -s default -l 2>/dev/null | grep '^konn' | tr '\n' ' ')
[ "$modules" = "konn konn_ports " ] && r=ok || r=no
check "both modules listed ($modules)" $r

fc=$work/store/etc/selinux/default/contexts/files/file_contexts
missing=""
for want in '/usr/sbin/konn-server	--	system_u:object_r:konn_server_exec_t:s0' \
        '/usr/sbin/konn-agent	--	system_u:object_r:konn_agent_exec_t:s0' \
        '/etc/konn(/.*)?	system_u:object_r:konn_conf_t:s0' \
        '/run/konn(/.*)?	system_u:object_r:konn_runtime_t:s0' \
        '/run/konn/konn-server\.sock	-s	system_u:object_r:konn_frontend_sock_t:s0' \
        '/var/lib/konn(/.*)?	system_u:object_r:konn_var_lib_t:s0'; do
        grep -qxF "$want" "$fc" || missing="$missing '$want'"
done
[ -z "$missing" ] && r=ok || r=no
check "file contexts of the binaries, /etc/konn, /run/konn, the frontend socket, /var/lib/konn$missing" $r

if command -v seinfo >/dev/null; then
        ports=$(seinfo --portcon 8091 "$work"/store/etc/selinux/default/policy/policy.* 2>/dev/null | grep konn_port_t || true)
        case "$ports" in
        *"portcon tcp 8090-8095 system_u:object_r:konn_port_t:s0"*) r=ok ;;
        *) r=no ;;
        esac
        check "TCP 8090-8095 labelled konn_port_t" $r
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
