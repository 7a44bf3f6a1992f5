package steps_test

import (
	"os"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/steps"
)

// The bootloader boots a FAT only once it has start4.elf: a power cut at
// any of the firmware step's crash points leaves either no start4.elf or a
// complete FAT, config.txt included.
func TestFirmwareStart4ElfLastAtEveryCrashPoint(t *testing.T) {
	t.Parallel()
	u := installed(t)
	var points []string
	u.env.CrashPoint = func(p string) { points = append(points, p) }
	u.run1(t, steps.NewFirmware())
	if n := len(points); n < 3 || points[n-2] != "firmware:config.txt" || points[n-1] != "firmware:start4.elf" {
		t.Fatalf("crash points %q: want config.txt, then start4.elf last", points)
	}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			u := installed(t)
			runUntil(t, u, steps.NewFirmware(), point)
			assertBootableOnlyWhole(t, u, point == "firmware:start4.elf")
		})
	}
}

// A rerun that changes anything on a FAT that already has start4.elf (the
// pin moved to another U-Boot, config.txt edited) removes start4.elf first:
// a cut half-way leaves a FAT the bootloader passes over, and the redo
// completes it.
func TestFirmwareRerunRemovesStart4ElfBeforeChanging(t *testing.T) {
	t.Parallel()
	for file, cut := range map[string]string{
		"u-boot-rpi4.bin": "firmware:u-boot-rpi4.bin",
		"config.txt":      "firmware:config.txt",
		"fixup4.dat":      "firmware:fixup4.dat",
	} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			u := installed(t)
			u.run1(t, steps.NewFirmware())
			u.put(t, "/mnt/boot/"+file, "an older "+file)
			runUntil(t, u, steps.NewFirmware(), cut)
			assertBootableOnlyWhole(t, u, false)
			u.env.Redo = true
			u.run1(t, steps.NewFirmware())
			assertBootableOnlyWhole(t, u, true)
		})
	}
}

// assertBootableOnlyWhole: start4.elf is on the FAT exactly when bootable
// says, and then every other boot file and config.txt are as planned.
func assertBootableOnlyWhole(t *testing.T, u *nixUnit, bootable bool) {
	t.Helper()
	_, err := os.Stat(u.env.Path("/mnt/boot/start4.elf"))
	switch {
	case bootable && err != nil:
		t.Fatalf("no start4.elf on a complete FAT: %v", err)
	case !bootable && err == nil:
		t.Fatal("start4.elf is on the FAT before everything else is")
	case !bootable:
		return
	}
	if done, why := probe(t, u, steps.NewFirmware()); !done {
		t.Errorf("start4.elf is there but the FAT is not complete: %s", why)
	}
	if got, _ := os.ReadFile(u.env.Path("/mnt/boot/config.txt")); !strings.Contains(string(got), "kernel=u-boot-rpi4.bin") {
		t.Errorf("config.txt = %q", got)
	}
}
