# stand-in of nixpkgs' generic-extlinux-compatible extlinux-conf-builder.sh,
# for busybox sh (test data for nixpi's QEMU run): the same options, the
# same files under the target (nixos/<store name>-<file>, extlinux/
# extlinux.conf written atomically), the same menu entries (LINUX, INITRD,
# APPEND init=..., FDTDIR).
set -e
timeout= default= target=/boot numGenerations=0
while getopts "t:c:d:g:" opt; do
  case "$opt" in
    t) if [ "$OPTARG" -lt 0 ]; then timeout=0; elif [ "$OPTARG" = 0 ]; then timeout=-10; else timeout=$((OPTARG * 10)); fi ;;
    c) default="$OPTARG" ;;
    d) target="$OPTARG" ;;
    g) numGenerations="$OPTARG" ;;
    *) echo "usage: $0 -t <timeout> -c <default system> [-d <boot dir>] [-g <generations>]" >&2; exit 1 ;;
  esac
done
if [ -z "$timeout" ] || [ -z "$default" ]; then
  echo "usage: $0 -t <timeout> -c <default system> [-d <boot dir>] [-g <generations>]" >&2
  exit 1
fi
mkdir -p "$target/nixos" "$target/extlinux"
copied="$target/extlinux/.copied.$$"
: > "$copied"

# /nix/store/<hash>-<name>/file -> nixos/<hash>-<name>-file, copied once
# (atomically) and named relative to extlinux.conf.
copyToKernelsDir() {
  src=$(readlink -f "$1")
  rel="nixos/$(echo "$src" | sed 's|^/nix/store/||; s|/|-|g')"
  if [ ! -e "$target/$rel" ]; then
    cp -r "$src" "$target/$rel.tmp.$$"
    mv "$target/$rel.tmp.$$" "$target/$rel"
  fi
  echo "$target/$rel" >> "$copied"
  echo "../$rel"
}

addEntry() {
  path=$(readlink -f "$1")
  tag="$2"
  [ -e "$path/kernel" ] && [ -e "$path/initrd" ] || return 0
  kernel=$(copyToKernelsDir "$path/kernel")
  initrd=$(copyToKernelsDir "$path/initrd")
  echo
  echo "LABEL nixos-$tag"
  if [ "$tag" = default ]; then
    echo "  MENU LABEL NixOS - Default"
  else
    echo "  MENU LABEL NixOS - Configuration $tag ($(cat "$path/nixos-version"))"
  fi
  echo "  LINUX $kernel"
  echo "  INITRD $initrd"
  echo "  APPEND init=$path/init $(cat "$path/kernel-params")"
  if [ -d "$path/dtbs" ]; then
    echo "  FDTDIR $(copyToKernelsDir "$path/dtbs")"
  fi
}

tmp="$target/extlinux/extlinux.conf.tmp.$$"
{
  echo "# Generated file, all changes will be lost on nixos-rebuild!"
  echo
  echo "# Change this to e.g. nixos-42 to temporarily boot to an older configuration."
  echo "DEFAULT nixos-default"
  echo
  echo "MENU TITLE ------------------------------------------------------------"
  echo "TIMEOUT $timeout"
  addEntry "$default" default
  if [ "$numGenerations" -gt 0 ] && [ -d /nix/var/nix/profiles ]; then
    for generation in $(for link in /nix/var/nix/profiles/system-*-link; do [ -e "$link" ] && echo "${link##*/}"; done |
        sed 's/system-\([0-9]*\)-link/\1/' | sort -n -r | head -n "$numGenerations"); do
      addEntry "/nix/var/nix/profiles/system-$generation-link" "$generation"
    done
  fi
} > "$tmp"
mv -f "$tmp" "$target/extlinux/extlinux.conf"

# Remove boot files no entry names any more.
for fn in "$target"/nixos/*; do
  [ -e "$fn" ] || continue
  if ! grep -qxF "$fn" "$copied"; then
    echo "Removing no longer needed boot file: $fn"
    rm -rf -- "$fn"
  fi
done
rm -f "$copied"
