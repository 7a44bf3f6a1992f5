package steps_test

// verify against what the Pi reads: the FAT mounted from the SSD's boot
// partition, config.txt and what it names, the board's dtb, extlinux.conf's
// DEFAULT entry and every file it names, compared with the installed
// system's own (its kernel, initrd and dtbs links under /mnt).

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/steps"
)

// verified is an SSD after install and firmware, which verify passes.
func verified(t *testing.T, before func(u *nixUnit)) *nixUnit {
	t.Helper()
	u := installed(t)
	if before != nil {
		before(u)
	}
	u.run1(t, steps.NewFirmware())
	return u
}

const (
	// The mountinfo lines of the unit's SD card and the SSD's root; the
	// boot partition's line follows per case.
	mountinfoBase = "22 1 179:2 / / rw - ext4 /dev/root rw\n" +
		"30 22 179:1 / /boot/firmware rw - vfat /dev/mmcblk0p1 rw\n"
	defaultLabel = `extlinux.conf's "nixos-default"`
)

func (u *nixUnit) mountinfo(t *testing.T, boot string) {
	t.Helper()
	u.put(t, "/proc/self/mountinfo", mountinfoBase+"40 22 0:40 /@ "+u.env.Root+"/mnt rw - btrfs /dev/sda3 rw,subvol=/@\n"+boot)
}

// extlinux writes extlinux.conf from the entry NixOS generates, with
// replacements applied to it.
func (u *nixUnit) extlinux(t *testing.T, oldnew ...string) {
	t.Helper()
	data, err := os.ReadFile(u.env.Path("/mnt/boot/extlinux/extlinux.conf"))
	if err != nil {
		t.Fatal(err)
	}
	u.put(t, "/mnt/boot/extlinux/extlinux.conf", strings.NewReplacer(oldnew...).Replace(string(data)))
}

const otherEntry = "LABEL nixos-old\n  LINUX ../nixos/old-Image\n  INITRD ../nixos/old-initrd\n  APPEND init=/nix/store/zzzz-nixos-system-old/init\n\n"

func TestVerifyChecksWhatThePiReads(t *testing.T) {
	t.Parallel()
	fat := func(name string) string { return "/mnt/boot/" + name }
	ext := func(name string) string { return "/mnt/boot/extlinux/" + name }
	for _, tc := range []struct {
		name   string
		before func(u *nixUnit) // before the firmware step
		break_ func(u *nixUnit)
		want   string // "" when verify passes
	}{
		{name: "a complete install passes"},

		// The FAT mounted at /mnt/boot.
		{name: "nothing mounted at /mnt/boot",
			break_: func(u *nixUnit) { u.mountinfo(t, "") },
			want:   "nothing is mounted at /mnt/boot, so the boot files went into the root filesystem and the SSD's boot partition /dev/sda1, which the Pi reads, lacks them"},
		{name: "/mnt/boot mounted from another disk",
			break_: func(u *nixUnit) { u.mountinfo(t, "43 40 8:17 / "+u.env.Root+"/mnt/boot rw - vfat /dev/sdb1 rw\n") },
			want:   "/mnt/boot is mounted from /dev/sdb1 (vfat), not from the SSD's boot partition /dev/sda1 (vfat)"},
		{name: "/mnt/boot not a FAT",
			break_: func(u *nixUnit) { u.mountinfo(t, "43 40 8:1 / "+u.env.Root+"/mnt/boot rw - ext4 /dev/sda1 rw\n") },
			want:   "/mnt/boot is mounted from /dev/sda1 (ext4)"},
		{name: "/mnt/boot's device number is not the boot partition's",
			break_: func(u *nixUnit) { u.mountinfo(t, "43 40 8:17 / "+u.env.Root+"/mnt/boot rw - vfat /dev/sda1 rw\n") },
			want:   "/mnt/boot is mounted from device 8:17, but the SSD's boot partition /dev/sda1 is device 8:1"},

		// The firmware, config.txt and what it names.
		{name: "empty start4.elf", break_: func(u *nixUnit) { u.put(t, fat("start4.elf"), "") }, want: "/boot/start4.elf is empty"},
		{name: "missing fixup4.dat", break_: func(u *nixUnit) { os.Remove(u.env.Path(fat("fixup4.dat"))) }, want: "/boot/fixup4.dat is missing"},
		{name: "missing config.txt", break_: func(u *nixUnit) { os.Remove(u.env.Path(fat("config.txt"))) }, want: "/boot/config.txt is missing"},
		{name: "config.txt's kernel= file missing", break_: func(u *nixUnit) { os.Remove(u.env.Path(fat("u-boot-rpi4.bin"))) }, want: "/boot/u-boot-rpi4.bin is missing"},
		{name: "config.txt's kernel= names another file",
			break_: func(u *nixUnit) {
				u.put(t, fat("config.txt"), strings.Replace(string(mustRead(t, u, fat("config.txt"))), "kernel=u-boot-rpi4.bin", "kernel=kernel8.img", 1))
			},
			want: "/boot/kernel8.img is missing"},
		{name: "config.txt names no kernel= for a Pi 4",
			break_: func(u *nixUnit) {
				u.put(t, fat("config.txt"), "[pi3]\nkernel=u-boot.bin\n[all]\narmstub=armstub8-gic.bin\n")
			},
			want: "/boot/config.txt names no kernel= for a Pi 4"},
		{name: "empty armstub", break_: func(u *nixUnit) { u.put(t, fat("armstub8-gic.bin"), "") }, want: "/boot/armstub8-gic.bin is empty"},
		{name: "a Pi 4 B's dtb differs from the firmware's", break_: func(u *nixUnit) { u.put(t, fat("bcm2711-rpi-4-b.dtb"), "other") },
			want: "/boot/bcm2711-rpi-4-b.dtb differs from " + firmwarePkg + "/share/raspberrypi/boot/bcm2711-rpi-4-b.dtb"},
		{name: "a Pi 400 finds its dtb",
			break_: func(u *nixUnit) { u.put(t, "/proc/device-tree/model", "Raspberry Pi 400 Rev 1.0\x00") }},
		{name: "a CM4 whose firmware has no cm4 dtb",
			break_: func(u *nixUnit) { u.put(t, "/proc/device-tree/model", "Raspberry Pi Compute Module 4 Rev 1.1\x00") },
			want:   "/boot/bcm2711-rpi-cm4.dtb is missing"},
		{name: "a CM4 boots the firmware's dtb when the kernel has none",
			before: func(u *nixUnit) {
				u.put(t, firmwarePkg+"/share/raspberrypi/boot/bcm2711-rpi-cm4.dtb", "firmware cm4")
			},
			break_: func(u *nixUnit) { u.put(t, "/proc/device-tree/model", "Raspberry Pi Compute Module 4 Rev 1.1\x00") }},

		// extlinux.conf's DEFAULT entry.
		{name: "empty kernel", break_: func(u *nixUnit) { u.put(t, ext(kernelFile), "") },
			want: "/boot/nixos/4v7k2b0cd1l5rxmhg8f7h3rq2ypwaxcn-linux-6.12.30-Image (LINUX of " + defaultLabel + ") is empty"},
		{name: "empty initrd", break_: func(u *nixUnit) { u.put(t, ext(initrdFile), "") },
			want: "/boot/nixos/xq0xhx5jlbqp2vc8mi9r93zj3r0lc9cs-initrd-linux-6.12.30-initrd (INITRD of " + defaultLabel + ") is empty"},
		{name: "kernel not the installed system's", break_: func(u *nixUnit) { u.put(t, ext(kernelFile), "another kernel") },
			want: "(LINUX of " + defaultLabel + ") differs from /mnt" + kernelPkg + "/Image"},
		{name: "initrd not the installed system's", break_: func(u *nixUnit) { u.put(t, ext(initrdFile), "another initrd") },
			want: "(INITRD of " + defaultLabel + ") differs from /mnt" + initrdPkg + "/initrd"},
		{name: "init= of another system",
			break_: func(u *nixUnit) { u.extlinux(t, "init="+toplevel, "init=/nix/store/zzzz-nixos-system-other") },
			want:   defaultLabel + " boots init=/nix/store/zzzz-nixos-system-other/init, not the installed system's " + toplevel + "/init"},
		{name: "no init=",
			break_: func(u *nixUnit) { u.extlinux(t, "init="+toplevel+"/init ", "") },
			want:   defaultLabel + " has no init= in its APPEND"},
		{name: "no INITRD",
			break_: func(u *nixUnit) { u.extlinux(t, "  INITRD "+initrdFile+"\n", "") },
			want:   defaultLabel + " names no INITRD"},
		{name: "no kernel",
			break_: func(u *nixUnit) { u.extlinux(t, "  LINUX "+kernelFile+"\n", "") },
			want:   defaultLabel + " names no kernel (LINUX)"},
		{name: "no DEFAULT",
			break_: func(u *nixUnit) { u.extlinux(t, "DEFAULT nixos-default\n", "") },
			want:   "extlinux.conf has no DEFAULT line"},
		{name: "DEFAULT names no LABEL",
			break_: func(u *nixUnit) { u.extlinux(t, "DEFAULT nixos-default", "DEFAULT nixos-42") },
			want:   `extlinux.conf's DEFAULT is "nixos-42", which no LABEL has`},
		{name: "a broken entry that is not the DEFAULT does not matter",
			break_: func(u *nixUnit) { u.extlinux(t, "LABEL nixos-default", otherEntry+"LABEL nixos-default") }},
		{name: "a good entry that is not the DEFAULT does not help",
			break_: func(u *nixUnit) {
				u.extlinux(t, "DEFAULT nixos-default", "DEFAULT nixos-old", "LABEL nixos-default", otherEntry+"LABEL nixos-default")
			},
			want: `/boot/nixos/old-Image (LINUX of extlinux.conf's "nixos-old") is missing`},
		{name: "lowercase keywords, as U-Boot reads them",
			break_: func(u *nixUnit) {
				u.extlinux(t, "DEFAULT", "default", "LINUX", "linux", "APPEND", "append", "FDTDIR", "fdtdir")
			}},
		{name: "an entry that leaves the partition",
			break_: func(u *nixUnit) { u.extlinux(t, "LINUX "+kernelFile, "LINUX ../../../nix/store/x-Image") },
			want:   defaultLabel + " names LINUX ../../../nix/store/x-Image, outside the boot partition"},

		// Its device trees.
		{name: "FDTDIR lacks the board's dtb",
			break_: func(u *nixUnit) { os.Remove(u.env.Path(ext(dtbsDir + "/broadcom/bcm2711-rpi-4-b.dtb"))) },
			want:   "/boot/nixos/4v7k2b0cd1l5rxmhg8f7h3rq2ypwaxcn-linux-6.12.30-dtbs/broadcom/bcm2711-rpi-4-b.dtb (the board's dtb in FDTDIR of " + defaultLabel + ") is missing"},
		{name: "FDTDIR holds another Pi 400 dtb",
			break_: func(u *nixUnit) {
				u.put(t, "/proc/device-tree/model", "Raspberry Pi 400 Rev 1.0\x00")
				u.put(t, ext(dtbsDir+"/broadcom/bcm2711-rpi-400.dtb"), "other")
			},
			want: "bcm2711-rpi-400.dtb (the board's dtb in FDTDIR of " + defaultLabel + ") differs from /mnt" + kernelPkg + "/dtbs/broadcom/bcm2711-rpi-400.dtb"},
		{name: "FDTDIR not a directory",
			break_: func(u *nixUnit) { u.extlinux(t, "FDTDIR "+dtbsDir, "FDTDIR "+kernelFile) },
			want:   "(FDTDIR of " + defaultLabel + ") is not a directory on the boot partition"},
		{name: "FDT the installed system's",
			break_: func(u *nixUnit) { u.extlinux(t, "FDTDIR "+dtbsDir, "FDT "+dtbsDir+"/broadcom/bcm2711-rpi-4-b.dtb") }},
		{name: "FDT not the installed system's",
			break_: func(u *nixUnit) {
				u.extlinux(t, "FDTDIR "+dtbsDir, "FDT "+dtbsDir+"/broadcom/bcm2711-rpi-4-b.dtb")
				u.put(t, ext(dtbsDir+"/broadcom/bcm2711-rpi-4-b.dtb"), "other")
			},
			want: "(FDT of " + defaultLabel + ") differs from /mnt" + kernelPkg + "/dtbs/broadcom/bcm2711-rpi-4-b.dtb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u := verified(t, tc.before)
			if tc.break_ != nil {
				tc.break_(u)
			}
			err := steps.NewVerify().Run(context.Background(), u.env)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), "verify: the SSD is not a complete NixOS install: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant it to name %q", err, tc.want)
			}
			if strings.Contains(err.Error(), u.env.Root) {
				t.Errorf("the message names the test's root: %v", err)
			}
		})
	}
}

func mustRead(t *testing.T, u *nixUnit, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(u.env.Path(path))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
