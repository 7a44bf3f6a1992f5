# The stand-in nixpkgs: test data for nixpi's QEMU run, NOT nixpkgs. The
# guest cannot reach a real nixpkgs or binary cache, so the harness serves
# this tree as the nixpkgs tarball, and the device steps use it exactly as
# they use nixpkgs on a Pi: `nix build --file <this> raspberrypifw ...`,
# `nix build --file <this>/nixos --arg configuration ... system`. Every
# package is a toy with the real file layout, built from nothing but the Nix
# sandbox: the builder is the static busybox the harness puts in bootstrap/.
{ system ? builtins.currentSystem, ... }:
let
  lib = import ./lib.nix;

  # busybox-static from the e2e base image (arm64), or the host's in the
  # host-side tests. builtins.path keeps its executable bit; the directory
  # keeps the file's name "busybox", which busybox needs as argv[0].
  bootstrap = builtins.path { path = ./bootstrap; name = "stand-in-bootstrap"; };

  # busybox with a link per applet: the stand-in's stdenv.
  busybox = derivation {
    name = "stand-in-busybox";
    inherit system;
    builder = "${bootstrap}/busybox";
    args = [ "sh" "-ec" ''
      bb=${bootstrap}/busybox
      $bb mkdir -p $out/bin
      $bb cp $bb $out/bin/busybox
      cd $out/bin
      for applet in $(./busybox --list); do
        [ "$applet" = busybox ] || ./busybox ln -s busybox "$applet"
      done
    '' ];
  };

  # A derivation built by a busybox shell script.
  runCommand = name: attrs: script: derivation ({
    inherit name system;
    builder = "${busybox}/bin/sh";
    args = [ "-ec" script ];
    PATH = "${busybox}/bin";
  } // attrs);

  writeText = name: text: runCommand name { inherit text; passAsFile = [ "text" ]; } ''cp "$textPath" "$out"'';
  writeScript = name: text: runCommand name { inherit text; passAsFile = [ "text" ]; } ''
    cp "$textPath" "$out"
    chmod 0755 "$out"
  '';

  # One stand-in file per line of "path text", each saying what it is.
  files = name: paths: runCommand name { inherit paths; } ''
    for p in $paths; do
      mkdir -p "$out/$(dirname "$p")"
      echo "stand-in $p from $name (test data for nixpi's QEMU run, not the real file)" > "$out/$p"
    done
  '';

  # A bootable stand-in: the harness puts the e2e base image's Debian arm64
  # kernel and the modules the stand-in's stage 1 loads in bootstrap/kernel
  # (Image, version, modules/, modules.load). The host-side tests have none:
  # then the kernel is a text file, and the system does not boot.
  bootable = builtins.pathExists ./bootstrap/kernel/Image;
  kernelVersion = if bootable
    then builtins.replaceStrings [ "\n" ] [ "" ] (builtins.readFile ./bootstrap/kernel/version)
    else "6.12.0-stand-in";

  # Device trees: stand-ins either way (QEMU's virt machine makes its own).
  standInDtbs = ''
    mkdir -p $out/dtbs/broadcom
    echo "stand-in device tree for the Raspberry Pi 4 B" > $out/dtbs/broadcom/bcm2711-rpi-4-b.dtb
    for board in 400 cm4 cm4s; do
      echo "stand-in device tree for the Raspberry Pi $board" > $out/dtbs/broadcom/bcm2711-rpi-$board.dtb
    done
  '';
in
{
  inherit lib busybox runCommand writeText writeScript system;

  # The stand-in's own source, as nixpkgs' pkgs.path is its own (a path
  # value: in the store when fetched with fetchTarball, as on the Pi).
  path = ./.;

  # The mainline kernel's layout: Image, dtbs/, lib/modules/VERSION.
  # standInBootable says whether Image is a real kernel (Debian's, copied by
  # the harness: not built here, and not the mainline nixpkgs one) with the
  # modules stage 1 loads and their load order, stand-in-modules.load.
  linuxPackages = {
    kernel = if bootable then runCommand "linux-${kernelVersion}-stand-in" {
      version = kernelVersion;
      standInBootable = true;
    } ''
      ${standInDtbs}
      mkdir -p $out/lib/modules/${kernelVersion}
      cp ${bootstrap}/kernel/Image $out/Image
      cp -r ${bootstrap}/kernel/modules/. $out/lib/modules/${kernelVersion}/
      cp ${bootstrap}/kernel/modules.load $out/lib/modules/${kernelVersion}/stand-in-modules.load
      echo "stand-in: Debian's kernel ${kernelVersion} and the modules the stand-in NixOS loads (test data for nixpi's QEMU run, not nixpkgs' kernel)" > $out/lib/modules/${kernelVersion}/stand-in-README
    '' else runCommand "linux-${kernelVersion}" {
      version = kernelVersion;
      standInBootable = false;
    } ''
      ${standInDtbs}
      mkdir -p $out/lib/modules/${kernelVersion}
      echo "stand-in kernel Image ${kernelVersion} (test data, not a kernel)" > $out/Image
      echo "stand-in modules of ${kernelVersion}" > $out/lib/modules/${kernelVersion}/modules.dep
    '';
  };

  # The Pi firmware where pkgs/os-specific/linux/firmware/raspberrypi puts it.
  raspberrypifw = files "raspberrypi-firmware-stand-in" (map (f: "share/raspberrypi/boot/${f}") [
    "bootcode.bin"
    "start.elf" "start4.elf" "start4cd.elf" "start4db.elf" "start4x.elf"
    "fixup.dat" "fixup4.dat" "fixup4cd.dat" "fixup4db.dat" "fixup4x.dat"
    "bcm2711-rpi-4-b.dtb" "bcm2711-rpi-400.dtb" "bcm2711-rpi-cm4.dtb" "bcm2711-rpi-cm4s.dtb"
    "overlays/vc4-kms-v3d.dtbo" "overlays/disable-bt.dtbo"
  ]);
  ubootRaspberryPi4_64bit = files "uboot-rpi_4_defconfig-stand-in" [ "u-boot.bin" ];
  raspberrypi-armstubs = files "raspberrypi-armstubs-stand-in" [ "armstub8.bin" "armstub8-gic.bin" ];

  # nixos-install --root R --system S [--no-root-passwd] [--no-channel-copy],
  # as nixos-install does it with --system: the system profile in R's
  # store (the caller's nix-env), /etc/NIXOS, and the boot loader from
  # switch-to-configuration boot run inside R.
  nixos-install-tools = runCommand "nixos-install-tools-stand-in" {
    script = ''
      #!${busybox}/bin/sh
      # stand-in nixos-install (test data for nixpi's QEMU run)
      set -e
      PATH=${busybox}/bin:$PATH
      root=/mnt
      system=
      while [ $# -gt 0 ]; do
        case "$1" in
          --root) root="$2"; shift 2 ;;
          --system) system="$2"; shift 2 ;;
          --no-root-passwd|--no-channel-copy) shift ;;
          *) echo "stand-in nixos-install: unknown option $1 (it knows --root, --system, --no-root-passwd, --no-channel-copy)" >&2; exit 2 ;;
        esac
      done
      if [ -z "$system" ]; then
        echo "stand-in nixos-install: --system is required: the stand-in builds nothing" >&2
        exit 1
      fi
      if [ ! -x "$root$system/bin/switch-to-configuration" ]; then
        echo "stand-in nixos-install: $system is not in the store under $root; copy it there first (nix copy --to 'local?root=$root')" >&2
        exit 1
      fi
      echo "stand-in nixos-install: setting up the system profile in $root"
      nix-env --store "$root" -p "$root/nix/var/nix/profiles/system" --set "$system"
      mkdir -m 0755 -p "$root/etc"
      touch "$root/etc/NIXOS"
      ln -sfn /proc/mounts "$root/etc/mtab"
      echo "stand-in nixos-install: installing the boot loader"
      NIXOS_INSTALL_BOOTLOADER=1 chroot "$root" "$system/bin/switch-to-configuration" boot
      echo "installation finished!"
    '';
    passAsFile = [ "script" ];
  } ''
    mkdir -p $out/bin
    cp "$scriptPath" $out/bin/nixos-install
    chmod 0755 $out/bin/nixos-install
  '';
}
