#!/bin/busybox sh
# stand-in NixOS stage 1 (test data for nixpi's QEMU run, not NixOS's
# stage-1-init.sh): the initrd's /init. It loads the kernel modules in
# /lib/modules/stand-in-modules.load's order (there is no udev or modprobe),
# waits for the root filesystem the configuration's fileSystems."/" names,
# mounts it and the other filesystems stage 2 needs early
# (/etc/stand-in-early-mounts: DEVICE MOUNTPOINT FSTYPE OPTIONS), and
# switches to the system's init (init= on the kernel command line), as
# NixOS's stage 1 does.
/bin/busybox --install -s /bin
export PATH=/bin
. /etc/stand-in-fs.sh

say() { echo "stand-in NixOS stage 1: $*"; }
fail() {
  echo "stand-in NixOS: boot failed in stage 1: $*"
  sync
  poweroff -f
}
uptime_s() { cut -d ' ' -f 1 /proc/uptime; }

mkdir -p /proc /sys /dev /run /mnt-root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say "$(cat /etc/stand-in-initrd-modules)"
say "loading $(wc -l < /lib/modules/stand-in-modules.load) kernel modules for QEMU's virt machine (uptime $(uptime_s) s)"
while read -r module; do
  insmod "/lib/modules/$module" || fail "insmod /lib/modules/$module"
done < /lib/modules/stand-in-modules.load

init=
for word in $(cat /proc/cmdline); do
  case "$word" in init=*) init=${word#init=} ;; esac
done
[ -n "$init" ] || fail "no init= on the kernel command line ($(cat /proc/cmdline))"

while read -r device where fstype options; do
  dev=$(wait_for "$device" 30) || fail "$device (for $where) did not appear within 30 s; block devices: $(cd /sys/class/block && echo *)"
  mkdir -p "/mnt-root$where"
  mount -t "$fstype" -o "$options" "$dev" "/mnt-root$where" || fail "mount -t $fstype -o $options $dev /mnt-root$where"
  say "mounted $device ($dev) on $where: $fstype, $options (uptime $(uptime_s) s)"
done < /etc/stand-in-early-mounts
mounted /mnt-root || fail "no root filesystem in /etc/stand-in-early-mounts"

for fs in proc sys dev; do
  mkdir -p "/mnt-root/$fs"
  mount --move "/$fs" "/mnt-root/$fs"
done
say "switching to $init"
exec switch_root /mnt-root "$init"
