// Package qemu boots a built nixpi card the way a Raspberry Pi 4 would, but
// in qemu-system-aarch64: the card as a virtio disk, a blank USB mass-storage
// disk as the SSD, the kernel, initrd and command line taken freshly from the
// card's FAT partition on every boot. It also builds the Raspberry Pi
// OS-shaped arm64 base image the end-to-end test starts from.
package qemu

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/firstboot/system"
)

// Partition is one MBR partition the harness writes into a base image, in
// bytes (reading tables is baseimage.ReadTable's, as everywhere on the host).
type Partition struct {
	Type   byte
	Offset int64
	Size   int64
}

// EncodeMBR writes a first sector with the disk signature and up to four
// primary partitions (LBA only; the CHS fields say "use LBA").
func EncodeMBR(diskID uint32, parts []Partition) []byte {
	s := make([]byte, 512)
	binary.LittleEndian.PutUint32(s[440:], diskID)
	for i, p := range parts {
		e := s[446+16*i : 446+16*(i+1)]
		copy(e[1:4], []byte{0xfe, 0xff, 0xff})
		e[4] = p.Type
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], uint32(p.Offset/512))
		binary.LittleEndian.PutUint32(e[12:], uint32(p.Size/512))
	}
	s[510], s[511] = 0x55, 0xaa
	return s
}

// BootFiles are the kernel and initramfs file names on the FAT partition that
// the Pi 4 firmware would load, as its config.txt says.
type BootFiles struct {
	Kernel string
	Initrd string // empty: boot without an initramfs
}

// ParseConfigTxt finds what a Pi 4 running a 64-bit kernel loads: kernel=,
// initramfs FILE followkernel, auto_initramfs=1 (kernel8.img ->
// initramfs8). Only the sections a Pi 4 applies ([all], [pi4], and lines
// before any section) count; the last setting wins, as in the firmware.
func ParseConfigTxt(configTxt string) BootFiles {
	kernel, initrd, auto := "", "", false
	applies := true
	sc := bufio.NewScanner(strings.NewReader(configTxt))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section := strings.ToLower(line[1 : len(line)-1])
			applies = section == "all" || section == "pi4"
			continue
		}
		if !applies {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "initramfs "); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				initrd = f[0]
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "kernel":
			kernel = strings.TrimSpace(value)
		case "auto_initramfs":
			auto = strings.TrimSpace(value) == "1"
		}
	}
	files := BootFiles{Kernel: kernel, Initrd: initrd}
	if files.Kernel == "" {
		files.Kernel = "kernel8.img"
	}
	if files.Initrd == "" && auto {
		// The firmware derives the name: kernel8.img -> initramfs8,
		// kernel_2712.img -> initramfs_2712.
		name := strings.TrimSuffix(files.Kernel, ".img")
		if suffix, ok := strings.CutPrefix(name, "kernel"); ok {
			files.Initrd = "initramfs" + suffix
		}
	}
	return files
}

// GuestCmdline turns the card's cmdline.txt into the kernel command line for
// the virt machine: the Pi's consoles (console=serial0,115200, console=tty1)
// become the one serial console QEMU has (the first console= keeps its place),
// everything else stays as written.
func GuestCmdline(cmdlineTxt string) (string, error) {
	fields := strings.Fields(cmdlineTxt)
	if len(fields) == 0 {
		return "", fmt.Errorf("cmdline.txt is empty: the Pi would not know its root filesystem")
	}
	out := make([]string, 0, len(fields)+1)
	serial := false
	for _, f := range fields {
		if strings.HasPrefix(f, "console=") {
			if !serial {
				out = append(out, "console=ttyAMA0")
				serial = true
			}
			continue
		}
		out = append(out, f)
	}
	if !serial {
		out = append([]string{"console=ttyAMA0"}, out...)
	}
	return strings.Join(out, " "), nil
}

// Card reads files from a card image's FAT partition with mtools, without
// mounting (this host's kernel may have no vfat driver).
type Card struct {
	Path string
	Boot Partition
	run  system.Runner
	t    Tools
}

// OpenCard finds the FAT partition of the card image at path.
func OpenCard(path string, r system.Runner, t Tools) (*Card, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	defer f.Close()
	table, err := baseimage.ReadTable(f)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	boot, err := table.CardFAT()
	if err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	return &Card{Path: path, Boot: Partition{Type: boot.Type, Offset: boot.Start, Size: boot.Size}, run: r, t: t}, nil
}

func (c *Card) image() string { return fmt.Sprintf("%s@@%d", c.Path, c.Boot.Offset) }

// ReadFile returns a file of the FAT partition; name is relative to its
// root ("nixpi/journal.jsonl"). A missing file wraps fs.ErrNotExist.
func (c *Card) ReadFile(ctx context.Context, name string) ([]byte, error) {
	out, err := c.run.Output(ctx, c.t.Mtype, "-i", c.image(), "::"+name)
	if err != nil {
		return nil, c.fileError(name, err)
	}
	return out, nil
}

// CopyOut copies a file of the FAT partition to dest on the host.
func (c *Card) CopyOut(ctx context.Context, name, dest string) error {
	if _, err := c.run.Output(ctx, c.t.Mcopy, "-n", "-o", "-i", c.image(), "::"+name, dest); err != nil {
		return c.fileError(name, err)
	}
	return nil
}

func (c *Card) fileError(name string, err error) error {
	var ce *system.CommandError
	if errors.As(err, &ce) && strings.Contains(ce.Stderr, "not found") {
		return fmt.Errorf("%s on the FAT partition of %q: %w", name, c.Path, fs.ErrNotExist)
	}
	return fmt.Errorf("read %s from the FAT partition of %q: %w", name, c.Path, err)
}
