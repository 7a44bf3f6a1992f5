# stand-in NixOS's device names, for busybox sh (test data for nixpi's QEMU
# run, not NixOS): there is no udev, so the /dev/disk/by-label, by-uuid and
# by-partuuid names that fileSystems and swapDevices use are resolved here,
# with busybox findfs and the partition tables themselves. Sourced by the
# stand-in's stage 1 and stage 2.

# le FILE OFFSET BYTES: the little-endian number of BYTES (2 or 4) bytes at
# OFFSET, in hex (od -t x reads the machine's order; arm64 and the test
# host are little-endian).
le() { od -A n -t "x$3" -j "$2" -N "$3" "$1" | tr -d ' \n'; }

# bytes FILE OFFSET COUNT: COUNT bytes at OFFSET, in hex, in file order.
bytes() { od -A n -t x1 -v -j "$2" -N "$3" "$1" | tr -d ' \n'; }

# partuuid DISK N: partition N's PARTUUID as the kernel and udev give it:
# the unique GUID of GPT entry N, else the MBR's disk signature and N.
partuuid() {
  if [ "$(dd if="$1" bs=8 skip=64 count=1 2>/dev/null)" = "EFI PART" ]; then
    entries=$((0x$(le "$1" 584 4)))
    size=$((0x$(le "$1" 596 4)))
    off=$((entries * 512 + ($2 - 1) * size + 16))
    echo "$(le "$1" $off 4)-$(le "$1" $((off + 4)) 2)-$(le "$1" $((off + 6)) 2)-$(bytes "$1" $((off + 8)) 2)-$(bytes "$1" $((off + 10)) 6)"
  else
    printf '%s-%02x\n' "$(le "$1" 440 4)" "$2"
  fi
}

# by_partuuid UUID: the partition whose PARTUUID is UUID.
by_partuuid() {
  want=$(echo "$1" | tr A-F a-f)
  for part in /sys/class/block/*; do
    [ -e "$part/partition" ] || continue
    disk=$(basename "$(dirname "$(readlink -f "$part")")")
    if [ "$(partuuid "/dev/$disk" "$(cat "$part/partition")")" = "$want" ]; then
      echo "/dev/${part##*/}"
      return 0
    fi
  done
  return 1
}

# resolve NAME: the device node a fileSystems or swapDevices device names
# (/dev/disk/by-label/X, by-uuid/X, by-partuuid/X, LABEL=, UUID=,
# PARTUUID=, or a node); fails while it is not there.
resolve() {
  case "$1" in
    /dev/disk/by-label/*) findfs "LABEL=${1#/dev/disk/by-label/}" 2>/dev/null ;;
    /dev/disk/by-uuid/*) findfs "UUID=${1#/dev/disk/by-uuid/}" 2>/dev/null ;;
    /dev/disk/by-partuuid/*) by_partuuid "${1#/dev/disk/by-partuuid/}" ;;
    LABEL=* | UUID=*) findfs "$1" 2>/dev/null ;;
    PARTUUID=*) by_partuuid "${1#PARTUUID=}" ;;
    *) [ -b "$1" ] && echo "$1" ;;
  esac
}

# mounted DIR: something is mounted on DIR (busybox may lack mountpoint).
mounted() { grep -q "^[^ ]* $1 " /proc/mounts; }

# wait_for NAME SECONDS: resolve NAME, trying once a second (USB disks
# appear a few seconds after their controller's module is loaded).
wait_for() {
  tries=0
  while ! resolve "$1"; do
    tries=$((tries + 1))
    [ "$tries" -lt "$2" ] || return 1
    sleep 1
  done
}
