#!/usr/bin/env bash
# Init of one hermetic libvirtd test host. hermetic.py runs it as PID 1 of fresh
# mount, network and PID namespaces:
#   unshare --mount --net --pid --fork --mount-proc --propagation private
# Usage: hermetic_host.sh ROOT [--listen]
# ROOT holds run/ lib/ log/ cache/ etc/ swtpm-log/ swtpm-localca/, prepared by hermetic.py.
# Needs $HERMETIC_PYTHON: the interpreter that becomes the reaper below.
set -euo pipefail
root=$1
listen=${2:-}

# Private state over the paths libvirt hard-codes. /var/run -> /run, so bind over /run/libvirt.
mount --bind "$root/run" /run/libvirt
mount --bind "$root/lib" /var/lib/libvirt
mount --bind "$root/log" /var/log/libvirt
mount --bind "$root/cache" /var/cache/libvirt
mount --bind "$root/etc" /etc/libvirt
# vTPM: swtpm's logs and swtpm_setup's local CA (see MOUNTS in hermetic.py).
mount --bind "$root/swtpm-log" /var/log/swtpm
mount --bind "$root/swtpm-localca" /var/lib/swtpm-localca
# A sysfs of this network namespace, as `ip netns exec` does: libvirt tunes bridges through
# /sys/class/net, which would otherwise show (and let it change) the root namespace's devices.
# Detaching the old /sys also drops the cgroup mounts below it: cgroups are shared by all
# hosts, whose guests would collide there (two "qemu-1-NAME"), so libvirt runs without.
umount -l /sys
mount -t sysfs sysfs /sys
ip link set lo up

virtlogd -d -p /run/libvirt/virtlogd.pid
# -d returns only once the daemon has initialised, or fails with its error.
libvirtd -d -p /run/libvirt/libvirtd.pid $listen

# PID 1 must reap: QEMU, dnsmasq and the daemons are re-parented here, and libvirt waits
# for a destroyed guest's PID to vanish, which a zombie never does.
exec "$HERMETIC_PYTHON" -c '
import os, time
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.5)
'
