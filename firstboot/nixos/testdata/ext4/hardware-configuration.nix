# /etc/nixos/hardware-configuration.nix, written by nixpi: how a Raspberry Pi 4
# boots NixOS from its USB disk (Pi firmware -> U-Boot -> extlinux -> kernel).
#
# Filesystems are named by their partitions' PARTUUIDs, which the disk steps
# derived for this installation when they partitioned the SSD (GPT: the
# partition GUIDs; MBR: the disk id and the partition number). Labels are not
# used: "boot" or "root" could just as well name a partition of the SD card
# (older Raspberry Pi OS cards label their FAT "boot") or of another disk.
# Printed before the disk exists, when the ids are not known yet:
# BOOT-PARTUUID, SWAP-PARTUUID, ROOT-PARTUUID stand for them.
# The file the Pi writes names the real ones.
{ config, lib, pkgs, modulesPath, ... }:

{
  # What nixpi sets here that a configuration may choose otherwise is
  # lib.mkDefault, so your own setting (configuration.nix, a flake) wins
  # without a conflict; lists (kernel parameters, modules) add to yours.
  nixpkgs.hostPlatform = lib.mkDefault "aarch64-linux";

  # U-Boot reads extlinux/extlinux.conf from the FAT partition (/boot).
  boot.loader.grub.enable = lib.mkDefault false;
  boot.loader.generic-extlinux-compatible.enable = lib.mkDefault true;
  # Each generation puts its kernel, initrd and device trees on the 500MiB FAT.
  boot.loader.generic-extlinux-compatible.configurationLimit = lib.mkDefault 3;
  # Only the Pi 4's device trees (4, 400, CM4), as nixos-hardware's
  # raspberry-pi/4 does: all of arm64's would take about 55 MB more each.
  hardware.deviceTree.filter = lib.mkDefault "bcm2711-rpi-*.dtb";
  # Early boot messages on the serial console and on HDMI (tty0, the last
  # console=, is /dev/console), as nixpkgs' sd-image-aarch64.nix sets them.
  boot.kernelParams = [ "console=ttyS0,115200n8" "console=ttyAMA0,115200n8" "console=tty0" "panic=10" ];

  # The mainline kernel, which the binary cache has (the vendor kernel is
  # compiled on the Pi for hours).
  # nixos-hardware's raspberry-pi-4 module sets its own (mkDefault too): with
  # it, choose one with lib.mkForce.
  boot.kernelPackages = lib.mkDefault pkgs.linuxPackages;
  # Stage 1 sees the USB disk only with these: the VL805 USB controller sits on
  # the Pi's PCIe bus and gets its firmware through reset-raspberrypi.
  boot.initrd.availableKernelModules = [ "xhci_pci" "usbhid" "usb_storage" "uas" "pcie_brcmstb" "reset-raspberrypi" "vc4" ];
  # The Pi has no TPM: stage 1 (systemd's, the default) must not need TPM
  # kernel modules. nixos-hardware's raspberry-pi/4 sets the same.
  boot.initrd.systemd.tpm2.enable = lib.mkDefault false;
  # Firmware for the Pi's Wi-Fi and Bluetooth.
  hardware.enableRedistributableFirmware = lib.mkDefault true;
  # On a Pi with 2 GiB of memory or less, nixpi adds here (the manual's
  # options reference costs evaluation memory):
  #   documentation.nixos.enable = lib.mkDefault false;

  # GPT: partition 1 FAT32 "boot", 2 swap "swap", 3 ext4 "root".
  fileSystems."/" = {
    device = "/dev/disk/by-partuuid/ROOT-PARTUUID";
    fsType = "ext4";
  };
  fileSystems."/boot" = {
    device = "/dev/disk/by-partuuid/BOOT-PARTUUID";
    fsType = "vfat";
    options = [ "fmask=0022" "dmask=0022" ];
  };
  # Swap: the size of the Pi's memory (layout.swap_size = "ram").
  swapDevices = [ { device = "/dev/disk/by-partuuid/SWAP-PARTUUID"; } ];

  # nixpi's hand-over: the first boot of this system from the SSD tells the
  # SD card's journal that NixOS booted, then retires the card, with the
  # card's own nixpi-firstboot (copied to /var/lib/nixpi). It runs only
  # while /var/lib/nixpi/trial.json exists, which it removes once done.
  systemd.services.nixpi-confirm = {
    description = "nixpi: confirm that NixOS booted from the SSD, then retire the SD card";
    wantedBy = [ "multi-user.target" ];
    wants = [ "network-online.target" ];
    after = [ "network-online.target" "local-fs.target" ];
    unitConfig.ConditionPathExists = "/var/lib/nixpi/trial.json";
    serviceConfig = { Type = "oneshot"; ExecStart = "/var/lib/nixpi/nixpi-firstboot confirm"; };
  };
}
