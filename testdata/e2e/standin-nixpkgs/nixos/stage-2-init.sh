# stand-in NixOS stage 2 (test data for nixpi's QEMU run, not NixOS's
# stage-2-init.sh or systemd): the system's init. It mounts what stage 1
# left (the mounts file: DEVICE MOUNTPOINT FSTYPE OPTIONS), links the system
# to /run/current-system and /bin/sh to busybox's, turns the swap on, runs
# every systemd.services unit wanted by multi-user.target in name order (the
# units file: start_unit lines), says it reached multi-user.target, and
# stays up until the power button, which shuts it down cleanly. The network
# is DHCP on eth0 (NixOS's default networking.useDHCP; busybox's udhcpc
# stands in for dhcpcd). No systemd or udev: a toy that shows the installed
# system boots, from a real kernel and a real initrd.
export PATH=@busybox@/bin
. @fsLib@

# init= names $system/init: the system is its directory, as NixOS's stage 2
# finds systemConfig.
system=$(dirname "$0")

say() { echo "stand-in NixOS: $*"; }
fail() {
  echo "stand-in NixOS: boot failed: $*"
  sync
  poweroff -f
}
uptime_s() { cut -d ' ' -f 1 /proc/uptime; }

mkdir -p /proc /sys /dev /run /tmp
mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run || fail "mount /run"
say "stage 2 of @nixosVersion@ (uptime $(uptime_s) s): $system"

while read -r device where fstype options; do
  mounted "$where" && continue
  dev=$(wait_for "$device" 10) || fail "$device (for $where) is not there"
  mkdir -p "$where"
  mount -t "$fstype" -o "$options" "$dev" "$where" || fail "mount -t $fstype -o $options $dev $where"
  say "mounted $device ($dev) on $where: $fstype, $options"
done < @mounts@
mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp || fail "mount /tmp"

ln -sfn "$system" /run/current-system
# What NixOS's activation puts there, for programs that run sh or env.
mkdir -p /bin /usr/bin
ln -sfn @busybox@/bin/sh /bin/sh
ln -sfn @busybox@/bin/env /usr/bin/env
hostname -F "$system/etc/hostname"
swaps=
while read -r device; do
  if dev=$(wait_for "$device" 10) && swapon "$dev"; then
    swaps="$swaps $dev"
    say "swap on $device ($dev)"
  else
    say "swap $device not turned on"
  fi
done < @swaps@

# The virt machine's virtio NIC is eth0: no udev renames it. udhcpc runs
# its script on a lease; the script sets what dhcpcd would.
ifconfig lo 127.0.0.1 up
if [ -e /sys/class/net/eth0 ]; then
  cat > /run/udhcpc.script <<'END'
#!@busybox@/bin/sh
case "$1" in
bound|renew)
  ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
  for r in $router; do route add default gw "$r" dev "$interface"; done ;;
deconfig) ifconfig "$interface" 0.0.0.0 up ;;
esac
END
  chmod 0755 /run/udhcpc.script
  if udhcpc -i eth0 -n -q -t 5 -T 2 -s /run/udhcpc.script >/dev/null 2>&1; then
    say "eth0: DHCP address $(ifconfig eth0 | sed -n 's/.*inet addr:\([0-9.]*\).*/\1/p')"
  else
    say "eth0: no DHCP lease"
  fi
else
  say "no network interface (eth0)"
fi

# start_unit NAME TYPE RUN [CONDITION...]: a unit whose every
# ConditionPathExists= holds ("!PATH": PATH must not exist) starts RUN; a
# oneshot is waited for, as systemd orders multi-user.target after it.
start_unit() {
  name=$1 type=$2 run=$3
  shift 3
  for cond in "$@"; do
    path=${cond#!}
    if [ "$path" != "$cond" ] && [ -e "$path" ]; then
      say "skipped $name: ConditionPathExists=$cond, and $path exists"
      return
    fi
    if [ "$path" = "$cond" ] && [ ! -e "$path" ]; then
      say "skipped $name: ConditionPathExists=$cond, and $path does not exist"
      return
    fi
  done
  say "started $name"
  if [ "$type" = oneshot ]; then
    "$run"
    say "$name exited with $?"
  else
    ("$run"; say "$name exited with $?") &
  fi
}
. @units@
say "reached multi-user.target"
say "up $(uptime_s) s after the kernel started"

# The virt machine's power button is a gpio-keys input device: an event on
# it is the press (systemd-logind powers off then).
powerkey=
for event in /sys/class/input/event*; do
  [ "$(cat "$event/device/name" 2>/dev/null)" = gpio-keys ] && powerkey=/dev/${event##*/}
done
if [ -z "$powerkey" ]; then
  say "no power button (gpio-keys): staying up until the power is cut"
  while :; do sleep 3600; done
fi
dd if="$powerkey" of=/dev/null bs=4096 count=1 2>/dev/null
say "the power button: shutting down"
kill -TERM -1
sleep 1
for dev in $swaps; do swapoff "$dev"; done
sync
umount -a -r 2>/dev/null
mount -o remount,ro / 2>/dev/null
sync
poweroff -f
