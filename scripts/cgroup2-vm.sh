#!/usr/bin/env bash
# A small Linux VM whose only cgroup hierarchy is cgroup v2 with the memory
# controller enabled, for testing Mayfly's cgroup v2 memory-limit path on a
# machine whose own memory controller is bound to cgroup v1 (a controller is
# per kernel: no namespace on such a host can offer it to cgroup v2). Used by
# crates/runtime/tests/cgroup_v2_vm.rs; the one home of the VM recipe.
#
#   scripts/cgroup2-vm.sh fetch-kernel
#       Downloads Debian's current kernel (the one linux-image-amd64 depends
#       on) into the cache and unpacks its vmlinuz there; does nothing when a
#       kernel is cached already. scripts/test.sh runs it.
#   scripts/cgroup2-vm.sh run [--env NAME=VALUE]... [--file PATH]... -- COMMAND [ARG]...
#       Builds an initramfs holding a static busybox, COMMAND and every --file
#       at their own absolute paths (with the shared libraries ldd lists for
#       them and the dynamic loader), boots it under qemu, and runs COMMAND
#       there with the environment given. The console log goes to stdout; it
#       ends with `mayfly-vm: command exited with status N`. Exits 0 when the
#       command did, 1 when it failed or the VM did not finish, 2 when
#       something needed is missing (saying what to install).
#
# Inside the VM /init mounts proc, sysfs, devtmpfs and cgroup2 on
# /sys/fs/cgroup (/tmp is the initramfs root's own, not a tmpfs over it, so
# files under the host's /tmp stay visible), brings up loopback (no other network), writes +memory
# into the root's cgroup.subtree_control (as systemd does on cgroup v2
# distributions), runs the command with kernel messages kept off the
# console, then prints the kernel's OOM-kill lines (`mayfly-vm: kernel: ...`)
# and the marker, and powers off (sysrq o).
#
# Acceleration: KVM when it works, else TCG (emulation). A KVM guest that has
# not printed the kernel banner within MAYFLY_VM_KVM_PROBE_SECONDS (5) is
# taken as not working (this machine's /dev/kvm is a nested PVM host that
# hangs a stock kernel after the BIOS) and the boot is redone under TCG.
# MAYFLY_VM_ACCEL=kvm|tcg skips the probe. MAYFLY_VM_TIMEOUT (240 s) bounds
# the boot and the command together.
#
# Environment: MAYFLY_VM_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/mayfly/cgroup2-vm).
set -euo pipefail

cache="${MAYFLY_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mayfly/cgroup2-vm}"

die() {
    local status=$1
    shift
    echo "cgroup2-vm: error: $*" >&2
    exit "$status"
}

cached_kernel() {
    find "$cache" -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null | sort -V | tail -1
}

fetch_kernel() {
    if [ -n "$(cached_kernel)" ]; then
        return 0
    fi
    command -v apt-get >/dev/null || die 2 "fetching the VM's kernel needs apt-get (a Debian-based machine)"
    local package
    package="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
    if [ -z "$package" ]; then
        apt-get update -qq
        package="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
    fi
    [ -n "$package" ] || die 2 "cannot tell which kernel linux-image-amd64 depends on (apt-cache depends linux-image-amd64)"
    mkdir -p "$cache"
    local work
    work="$(mktemp -d "$cache/fetch.XXXXXX")"
    # Not installed into /boot: only its vmlinuz is needed, and every driver
    # the VM uses (the 8250 serial console, initramfs, devtmpfs, tmpfs, memcg)
    # is built into Debian's kernel, so no modules either.
    (cd "$work" && { apt-get download -q "$package" 2>/dev/null || { apt-get update -qq && apt-get download -q "$package"; }; }) >&2
    dpkg-deb -x "$work"/"$package"_*.deb "$work/root"
    cp "$work"/root/boot/config-* "$cache/"
    # The vmlinuz last, so a fetch cut short leaves no kernel to find.
    cp "$work"/root/boot/vmlinuz-* "$cache/.vmlinuz.partial"
    mv "$cache/.vmlinuz.partial" "$cache/$(basename "$work"/root/boot/vmlinuz-*)"
    rm -rf "$work"
    echo "cgroup2-vm: cached $(cached_kernel)" >&2
}

# Copies PATH into the tree at its own absolute path, with its libraries.
copy_with_libraries() {
    local root=$1 path=$2
    [ -e "$path" ] || die 1 "no such file: $path"
    mkdir -p "$root/$(dirname "$path")"
    cp -L "$path" "$root/$path"
    # Debug information only makes the initramfs (held in the VM's memory) large.
    if [ -x "$path" ] && [ -f "$path" ]; then
        strip --strip-debug "$root/$path" 2>/dev/null || true
    fi
    local library
    # ldd prints `name => /path (addr)` and the loader as `/path (addr)`.
    for library in $(ldd "$path" 2>/dev/null | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
        if [ ! -e "$root/$library" ]; then
            mkdir -p "$root/$(dirname "$library")"
            cp -L "$library" "$root/$library"
        fi
    done
}

# A word quoted for the shell.
quote() {
    local word=$1
    printf "'%s'" "${word//\'/\'\\\'\'}"
}

run() {
    local env=() files=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --env) env+=("$2"); shift 2 ;;
            --file) files+=("$2"); shift 2 ;;
            --) shift; break ;;
            *) die 1 "unknown option $1 (usage: run [--env NAME=VALUE]... [--file PATH]... -- COMMAND [ARG]...)" ;;
        esac
    done
    [ $# -gt 0 ] || die 1 "no command to run in the VM"

    command -v qemu-system-x86_64 >/dev/null ||
        die 2 "qemu-system-x86_64 is missing: apt-get install qemu-system-x86 (scripts/test.sh installs it)"
    command -v cpio >/dev/null || die 2 "cpio is missing: apt-get install cpio (scripts/test.sh installs it)"
    [ -x /bin/busybox ] || die 2 "busybox is missing: apt-get install busybox-static (scripts/test.sh installs it)"
    local kernel
    kernel="$(cached_kernel)"
    [ -n "$kernel" ] ||
        die 2 "no kernel for the VM in $cache: run scripts/cgroup2-vm.sh fetch-kernel (scripts/test.sh does)"

    # Globals: the EXIT trap reads them after run returns.
    work="$(mktemp -d "${TMPDIR:-/tmp}/mayfly-cgroup2-vm.XXXXXX")"
    qemu_pid=""
    trap 'if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

    local root="$work/root"
    mkdir -p "$root"/{bin,dev,proc,sys,tmp}
    copy_with_libraries "$root" /bin/busybox
    local file
    for file in "$1" "${files[@]}"; do
        copy_with_libraries "$root" "$file"
    done

    {
        echo '#!/bin/busybox sh'
        echo '/bin/busybox --install -s /bin'
        echo 'export PATH=/bin HOME=/tmp TMPDIR=/tmp'
        echo 'mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev'
        # The initramfs root is itself writable memory: no tmpfs over /tmp, which
        # would hide a command or file that lives under /tmp on the host.
        echo 'chmod 1777 /tmp && mount -t cgroup2 cgroup2 /sys/fs/cgroup'
        # Loopback only (the lambda runtime serves its Runtime API there); no network.
        echo 'ip link set lo up'
        echo 'echo "mayfly-vm: kernel $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"'
        echo 'echo +memory > /sys/fs/cgroup/cgroup.subtree_control'
        local variable
        for variable in "${env[@]}"; do
            echo "export $(quote "$variable")"
        done
        # Kernel messages (an OOM kill's report) would otherwise cut into the
        # command's lines on the one console; its OOM kills are listed after.
        echo 'dmesg -n 1'
        printf 'cd /tmp && '
        local word
        for word in "$@"; do
            printf '%s ' "$(quote "$word")"
        done
        echo '</dev/null'
        echo 'status=$?'
        echo 'dmesg | grep -E "oom-kill:|Killed process" | sed "s/^/mayfly-vm: kernel: /"'
        echo 'echo "mayfly-vm: command exited with status $status"'
        echo 'echo o > /proc/sysrq-trigger'
        echo 'sleep 10'
    } >"$root/init"
    chmod +x "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet) >"$work/initramfs.cpio"

    local log="$work/console.log"
    local timeout="${MAYFLY_VM_TIMEOUT:-240}"
    boot() {
        local accel=$1
        : >"$log"
        # panic=-1 and -no-reboot: a panic (say /init dying) ends qemu at once.
        timeout "$timeout" qemu-system-x86_64 -accel "$accel" -m 768 -smp 1 \
            -nodefaults -no-user-config -display none -no-reboot -net none \
            -serial "file:$log" -kernel "$kernel" -initrd "$work/initramfs.cpio" \
            -append "console=ttyS0 panic=-1 rdinit=/init" >"$work/qemu.out" 2>&1 &
        qemu_pid=$!
    }

    local accel="${MAYFLY_VM_ACCEL:-}" started=$SECONDS
    if [ -n "$accel" ]; then
        boot "$accel"
    elif [ -w /dev/kvm ]; then
        accel=kvm
        boot kvm
        local probe="${MAYFLY_VM_KVM_PROBE_SECONDS:-5}" waited=0
        while kill -0 "$qemu_pid" 2>/dev/null && ! grep -q 'Linux version' "$log" && [ "$waited" -lt $((probe * 10)) ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        if ! grep -q 'Linux version' "$log"; then
            kill "$qemu_pid" 2>/dev/null || true
            wait "$qemu_pid" 2>/dev/null || true
            echo "mayfly-vm: KVM did not boot the kernel within ${probe} s ($(tr '\n' ' ' <"$work/qemu.out" | cut -c1-200)); using TCG"
            accel=tcg
            started=$SECONDS
            boot tcg
        fi
    else
        accel=tcg
        boot tcg
    fi
    local qemu_status=0
    wait "$qemu_pid" || qemu_status=$?
    qemu_pid=""
    cat "$log"
    cat "$work/qemu.out"
    echo "mayfly-vm: qemu (-accel $accel) ended with status $qemu_status after $((SECONDS - started)) s"
    [ "$qemu_status" != 124 ] || { echo "mayfly-vm: the VM did not finish within ${timeout} s" >&2; exit 1; }
    grep -q '^mayfly-vm: command exited with status 0' "$log"
}

case "${1:-}" in
    fetch-kernel) fetch_kernel ;;
    kernel)
        kernel="$(cached_kernel)"
        [ -n "$kernel" ] || die 2 "no kernel cached in $cache: run scripts/cgroup2-vm.sh fetch-kernel"
        echo "$kernel"
        ;;
    run) shift; run "$@" ;;
    *) die 1 "usage: $0 fetch-kernel | kernel | run [--env NAME=VALUE]... [--file PATH]... -- COMMAND [ARG]..." ;;
esac
