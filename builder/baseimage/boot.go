package baseimage

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/cardpath"
)

// inspectBoot checks partition 1 is FAT32 and holds what a Pi 4 boots:
// config.txt, cmdline.txt, start4.elf and the kernel config.txt selects.
func inspectBoot(r io.ReaderAt, b *Base) error {
	p := b.Boot
	bs := make([]byte, sectorSize)
	if _, err := r.ReadAt(bs, p.Start); err != nil {
		return fmt.Errorf("read boot sector: %w", err)
	}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return fmt.Errorf("%w: partition 1 (type 0x%02x) holds no filesystem boot sector", ErrNoFAT, p.Type)
	}
	switch {
	case bytes.HasPrefix(bs[3:], []byte("EXFAT   ")):
		return fmt.Errorf("%w: partition 1 is exFAT; nixpi edits FAT32 boot partitions only (the Pi's firmware boots from FAT32)", ErrNoFAT)
	case bytes.HasPrefix(bs[0x52:], []byte("FAT32")):
	case bytes.HasPrefix(bs[0x36:], []byte("FAT1")):
		return fmt.Errorf("%w: partition 1 is %s; nixpi edits FAT32 boot partitions only", ErrNoFAT, strings.TrimSpace(string(bs[0x36:0x3e])))
	default:
		return fmt.Errorf("%w: partition 1 (type 0x%02x) holds no FAT filesystem", ErrNoFAT, p.Type)
	}
	fs, err := fatfs.OpenReadOnly(r, p.Start, p.Size)
	if err != nil {
		return fmt.Errorf("%w: partition 1: %v", ErrNoFAT, err)
	}
	b.FATLabel = fs.Label()

	read := func(name string) ([]byte, bool, error) {
		if !fs.Exists(name) {
			return nil, false, nil
		}
		data, err := fs.ReadFile(name)
		if err != nil {
			return nil, true, err
		}
		return data, true, nil
	}
	exists := func(name string) bool {
		e, err := fs.Stat(name)
		return err == nil && !e.IsDir
	}

	if !exists("start4.elf") {
		entries, _ := fs.List("/")
		for _, e := range entries {
			if n := strings.ToLower(e.Name); strings.HasPrefix(n, "bcm2712") || n == "kernel_2712.img" {
				return fmt.Errorf("%w: the boot partition has %s but no start4.elf, which a Pi 4 needs; "+
					"use a Raspberry Pi OS image made for all models (Pi 4 and 5)", ErrPi5Only, e.Name)
			}
		}
		return fmt.Errorf("%w: start4.elf is not on the boot partition; a Pi 4 cannot boot without it", ErrMissingBootFile)
	}
	config, ok, err := read("config.txt")
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: config.txt is not on the boot partition", ErrMissingBootFile)
	}
	b.ConfigTxt = string(config)
	cmdline, ok, err := read("cmdline.txt")
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: cmdline.txt is not on the boot partition", ErrMissingBootFile)
	}
	b.Cmdline = string(cmdline)

	readText := func(name string) (string, error) {
		data, _, err := read(name)
		return string(data), err
	}
	kernel, fromConfig := pi4Kernel(readText, exists)
	if !exists(kernel) {
		if fromConfig {
			return fmt.Errorf("%w: config.txt says kernel=%s but that file is not on the boot partition", ErrNoKernel, kernel)
		}
		return fmt.Errorf("%w: found none of kernel8.img, kernel7l.img", ErrNoKernel)
	}
	b.Kernel = kernel
	return nil
}

// pi4Kernel says which kernel file a Pi 4 boots with the config.txt read
// reads: the last kernel= a Pi 4 applies (bootfiles decides which),
// else kernel8.img (what current firmware prefers on a Pi 4, and what
// arm_64bit=1 selects), else kernel7l.img.
func pi4Kernel(read bootfiles.ReadFile, exists func(string) bool) (name string, fromConfig bool) {
	if name, ok := (bootfiles.Pi4{}).Value(read, cardpath.ConfigTxt, "kernel"); ok {
		return strings.TrimLeft(name, "/"), true
	}
	if !exists("kernel8.img") && exists("kernel7l.img") {
		return "kernel7l.img", false
	}
	return "kernel8.img", false
}
