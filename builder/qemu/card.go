// Package qemu boots a built nixpi card the way a Raspberry Pi 4 would, but
// in qemu-system-aarch64: the card as a virtio disk, a blank USB mass-storage
// disk as the SSD, and on every power-on the Pi's boot chain played on the
// host (firmware.go, uboot.go): the EEPROM's BOOT_ORDER and staged update,
// the card's config.txt or, once after a reboot with '0 tryboot', its
// tryboot.txt, and for U-Boot the extlinux.conf the install left on the
// SSD. It also builds the Raspberry Pi OS-shaped arm64 base image the
// end-to-end test starts from.
package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/disk"
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

// BootFiles are what the Pi 4 firmware loads from a FAT partition, as its
// config.txt (or tryboot.txt) says.
type BootFiles struct {
	Kernel  string
	Initrd  string // empty: boot without an initramfs
	Armstub string // empty: the firmware's built-in one
	Cmdline string // the file with the kernel command line
}

// ParseConfigTxt finds what a Pi 4 running a 64-bit kernel loads from the
// config file name (config.txt, or tryboot.txt when the firmware reads it
// because of the tryboot flag, which makes [tryboot] hold): kernel=,
// initramfs FILE followkernel, auto_initramfs=1 (kernel8.img ->
// initramfs8), armstub=, cmdline=. Which lines a Pi 4 applies, includes
// followed, is bootfiles' to say; the last setting wins, as in the
// firmware.
func ParseConfigTxt(read bootfiles.ReadFile, name string, tryboot bool) BootFiles {
	files := BootFiles{Cmdline: "cmdline.txt"}
	auto := false
	for _, s := range (bootfiles.Pi4{Tryboot: tryboot}).Settings(read, name) {
		switch s.Key {
		case "initramfs":
			if f := strings.Fields(s.Value); len(f) > 0 {
				files.Initrd = f[0]
			}
		case "kernel":
			files.Kernel = s.Value
		case "armstub":
			files.Armstub = s.Value
		case "cmdline":
			files.Cmdline = s.Value
		case "auto_initramfs":
			auto = s.Value == "1"
		}
	}
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

// Card reads files from the FAT partition of a disk image (a card's boot
// partition, or partition 1 of the SSD) with mtools, without mounting (this
// host's kernel may have no vfat driver).
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

// GPT partition types a Pi 4's bootloader reads a FAT from (besides
// typeESP, which the SSD's boot partition has).
const typeBasicData = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"

// OpenSSDBoot finds partition 1 of a USB disk image, in a GPT or an MBR,
// when it has a FAT type: where a Pi 4's bootloader looks for the firmware
// and U-Boot for extlinux.conf. A disk without one (blank, another table)
// is an error wrapping fs.ErrNotExist: nothing on it boots.
func OpenSSDBoot(path string, r system.Runner, t Tools) (*Card, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	defer f.Close()
	table, err := baseimage.ReadTable(f)
	if err != nil {
		return nil, fmt.Errorf("%q: %w: %w", path, err, fs.ErrNotExist)
	}
	if table.GPT {
		p, err := gptPartition1(f)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", path, err)
		}
		return &Card{Path: path, Boot: p, run: r, t: t}, nil
	}
	p, ok := table.Partition(1)
	if !ok || !baseimage.IsFAT(p.Type) {
		return nil, fmt.Errorf("%q: the MBR has no FAT partition 1: %w", path, fs.ErrNotExist)
	}
	return &Card{Path: path, Boot: Partition{Type: p.Type, Offset: p.Start, Size: p.Size}, run: r, t: t}, nil
}

// gptPartition1 reads partition 1 of the GPT whose header is at LBA 1 (a USB
// disk with 512-byte sectors, as the Pi 4 bootloader needs).
func gptPartition1(r io.ReaderAt) (Partition, error) {
	header := make([]byte, 92)
	if _, err := r.ReadAt(header, 512); err != nil {
		return Partition{}, fmt.Errorf("read the GPT header: %w", err)
	}
	if string(header[:8]) != "EFI PART" {
		return Partition{}, fmt.Errorf("a protective MBR but no GPT header at LBA 1: %w", fs.ErrNotExist)
	}
	entries := int64(binary.LittleEndian.Uint64(header[72:80]))
	entry := make([]byte, 128)
	if _, err := r.ReadAt(entry, entries*512); err != nil {
		return Partition{}, fmt.Errorf("read GPT partition 1: %w", err)
	}
	typ := guidString(entry[:16])
	if typ != disk.GPTTypeESP && typ != typeBasicData {
		return Partition{}, fmt.Errorf("GPT partition 1 has type %s, not a FAT one (EFI system or basic data): %w", typ, fs.ErrNotExist)
	}
	first := int64(binary.LittleEndian.Uint64(entry[32:40]))
	last := int64(binary.LittleEndian.Uint64(entry[40:48]))
	return Partition{Type: 0xef, Offset: first * 512, Size: (last - first + 1) * 512}, nil
}

// guidString formats a GUID stored as GPT stores it (the first three fields
// little-endian) the way sgdisk prints it.
func guidString(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
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

// CopyIn copies src on the host to name on the FAT partition, replacing
// what is there (a person editing the card's files on a computer).
func (c *Card) CopyIn(ctx context.Context, src, name string) error {
	if _, err := c.run.Output(ctx, c.t.Mcopy, "-n", "-o", "-i", c.image(), src, "::"+name); err != nil {
		return fmt.Errorf("copy %s onto the FAT partition of %q: %w", name, c.Path, err)
	}
	return nil
}

// Rename renames a file of the FAT partition (what recovery.bin does to
// itself once it has flashed the EEPROM).
func (c *Card) Rename(ctx context.Context, from, to string) error {
	if _, err := c.run.Output(ctx, c.t.Mren, "-i", c.image(), "::"+from, "::"+to); err != nil {
		return c.fileError(from, err)
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
