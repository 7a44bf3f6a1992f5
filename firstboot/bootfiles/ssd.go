package bootfiles

// SSDConfigTxt is the config.txt nixpi writes on the SSD's FAT (DESIGN.md
// §4, as nixpkgs' sd-image-aarch64.nix has it): the firmware starts U-Boot
// with the GIC armstub, U-Boot needs the UART on, and U-Boot boots NixOS
// from extlinux/extlinux.conf on the same partition.
const SSDConfigTxt = `# Written by nixpi: the Pi 4 firmware starts U-Boot, which boots NixOS
# from extlinux/extlinux.conf on this partition.
[pi4]
kernel=u-boot-rpi4.bin
enable_gic=1
armstub=armstub8-gic.bin
disable_overscan=1
arm_boost=1

[all]
arm_64bit=1
enable_uart=1
avoid_warnings=1
`

// SSDBootFiles must be on the SSD's FAT for a Pi 4 to boot NixOS from it:
// firmware, its fixup table, the board's device tree, U-Boot and the armstub.
var SSDBootFiles = []string{"start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "u-boot-rpi4.bin", "armstub8-gic.bin"}
