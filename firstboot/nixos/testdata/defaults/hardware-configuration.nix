# /etc/nixos/hardware-configuration.nix, written by nixpi: how a Raspberry Pi 4
# boots NixOS from its USB disk (Pi firmware -> U-Boot -> extlinux -> kernel).
#
# Filesystems are named by label. The disk steps give the partitions exactly
# these labels ([layout] in nixpi.toml), so this file is the same on your
# computer and on the Pi. UUIDs are not used: the disk steps derive them from
# the disk's serial number and size, which only the Pi sees.
{ config, lib, pkgs, modulesPath, ... }:

{
  nixpkgs.hostPlatform = "aarch64-linux";

  # U-Boot reads extlinux/extlinux.conf from the FAT partition (/boot).
  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;
  # Each generation puts its kernel, initrd and device trees on the 500MiB FAT.
  boot.loader.generic-extlinux-compatible.configurationLimit = 3;

  # The mainline kernel, which the binary cache has (the vendor kernel is
  # compiled on the Pi for hours).
  boot.kernelPackages = pkgs.linuxPackages;
  # Stage 1 sees the USB disk only with these: the VL805 USB controller sits on
  # the Pi's PCIe bus and gets its firmware through reset-raspberrypi.
  boot.initrd.availableKernelModules = [ "xhci_pci" "usbhid" "usb_storage" "uas" "pcie_brcmstb" "reset-raspberrypi" "vc4" ];
  # The Pi has no TPM: stage 1 (systemd's, the default) must not need TPM
  # kernel modules. nixos-hardware's raspberry-pi/4 sets the same.
  boot.initrd.systemd.tpm2.enable = false;
  # Firmware for the Pi's Wi-Fi and Bluetooth.
  hardware.enableRedistributableFirmware = true;

  # GPT: partition 1 FAT32 "boot", 2 swap "swap", 3 btrfs "root".
  fileSystems."/" = {
    device = "/dev/disk/by-label/root";
    fsType = "btrfs";
    options = [ "subvol=@" "compress=zstd" ];
  };
  fileSystems."/nix" = {
    device = "/dev/disk/by-label/root";
    fsType = "btrfs";
    options = [ "subvol=@nix" "compress=zstd" ];
  };
  fileSystems."/home" = {
    device = "/dev/disk/by-label/root";
    fsType = "btrfs";
    options = [ "subvol=@home" "compress=zstd" ];
  };
  fileSystems."/boot" = {
    device = "/dev/disk/by-label/boot";
    fsType = "vfat";
    options = [ "fmask=0022" "dmask=0022" ];
  };
  # Swap: the size of the Pi's memory (layout.swap_size = "ram").
  swapDevices = [ { device = "/dev/disk/by-label/swap"; } ];

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
