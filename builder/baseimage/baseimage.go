// Package baseimage validates and identifies a base image before nixpi
// writes anything: an MBR table, partition 1 FAT32 with the Pi 4 boot files,
// partition 2 a Linux ext4 root (read, never written) with systemd, and the
// userland architecture. It identifies images by structure, not branding, so
// Raspberry Pi OS and other Debian-family Raspberry Pi images pass.
package baseimage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/nixpi/nixpi/firstboot/system"
)

// Errors a caller can test with errors.Is. The wrapped message always says
// what was found.
var (
	ErrNoPartitionTable = errors.New("no partition table")
	ErrGPT              = errors.New("GPT partition table: nixpi expects a Raspberry Pi OS image with an MBR table")
	ErrTruncated        = errors.New("image is truncated")
	ErrNoFAT            = errors.New("partition 1 is not a FAT32 boot partition")
	ErrMissingBootFile  = errors.New("boot file missing")
	ErrPi5Only          = errors.New("only Pi 5 boot files (a Pi 5-only image?)")
	ErrNoKernel         = errors.New("no kernel on the boot partition")
	ErrNotLinuxRoot     = errors.New("partition 2 is not a Linux root filesystem")
	ErrNoSystemd        = errors.New("no systemd in the root filesystem")
	ErrUnsupportedArch  = errors.New("unsupported userland architecture")
	ErrNotDebian        = errors.New("not a Debian-family root filesystem")
)

// Partition is one MBR partition, in bytes from the start of the image.
type Partition struct {
	Index    int   // 1-based
	Start    int64 // bytes
	Size     int64 // bytes
	Type     byte  // MBR partition type
	Bootable bool  // the MBR's active flag
}

// End is the first byte after the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// Base is what nixpi knows about a validated base image.
type Base struct {
	DiskID uint32 // MBR disk signature; PARTUUIDs are <%08x>-01, -02
	Boot   Partition
	Root   Partition

	FATLabel  string // volume label of partition 1, e.g. "bootfs"
	FATMount  string // where /etc/fstab mounts it: "/boot/firmware" or "/boot"
	Kernel    string // the kernel file a Pi 4 boots, e.g. "kernel8.img"
	Cmdline   string // cmdline.txt as found
	ConfigTxt string // config.txt as found

	OSRelease  map[string]string // /etc/os-release
	PrettyName string            // PRETTY_NAME, or NAME VERSION
	Arch       string            // userland architecture: "arm64" or "armhf"
	ArchSource string            // where Arch came from, e.g. "/var/lib/dpkg/status"
	Systemd    string            // path of the systemd binary found
	RootReader string            // what read the root filesystem: "go-diskfs" or "debugfs"
}

// PartUUID is the PARTUUID Linux gives partition n of the image.
func (b *Base) PartUUID(n int) string { return fmt.Sprintf("%08x-%02d", b.DiskID, n) }

// Reader selects how the ext4 root filesystem is read.
type Reader string

const (
	// ReaderAuto reads with go-diskfs and, when that fails, with debugfs.
	ReaderAuto Reader = ""
	// ReaderGoDiskfs reads with go-diskfs only.
	ReaderGoDiskfs Reader = "go-diskfs"
	// ReaderDebugfs reads with debugfs only.
	ReaderDebugfs Reader = "debugfs"
)

// Options are InspectContext's knobs; the zero value is the default.
type Options struct {
	// Runner runs debugfs. Default system.ExecRunner{}.
	Runner system.Runner
	// Debugfs is debugfs's path (e2fsprogs). Default /usr/sbin/debugfs.
	Debugfs string
	// ImagePath is the image's file name for debugfs. Default: the Name()
	// of r when r is an *os.File; without one, only go-diskfs reads.
	ImagePath string
	// Reader picks the ext4 reader; default ReaderAuto.
	Reader Reader
}

// debugfsDevice is what debugfs opens to read partition p, or "" when
// debugfs cannot be used.
func (o *Options) debugfsDevice(r io.ReaderAt, p Partition) string {
	image := o.ImagePath
	if image == "" {
		if named, ok := r.(interface{ Name() string }); ok {
			image = named.Name()
		}
	}
	if image == "" {
		return ""
	}
	if _, err := os.Stat(o.Debugfs); err != nil {
		return ""
	}
	return fmt.Sprintf("%s?offset=%d", image, p.Start)
}

// Inspect validates the image of the given size read through r and says what
// it is. It only reads. Every failure wraps one of the Err values and says
// what was found and, where there is one, how to fix it.
func Inspect(r io.ReaderAt, size int64) (*Base, error) {
	return InspectContext(context.Background(), r, size, Options{})
}

// BootPartition reads the partition table from the image's first sector
// and returns partition 1, the FAT, checked as Inspect checks it, except
// that the image's size is not known yet, so nothing is found truncated.
// It is for a caller that has the image's first bytes before the rest.
func BootPartition(r io.ReaderAt) (Partition, error) {
	boot, _, _, err := readTable(r, math.MaxInt64)
	if err != nil {
		return Partition{}, fmt.Errorf("base image: %w", err)
	}
	return boot, nil
}

// InspectBoot is Inspect without the root partition, for a caller that has
// the image up to the end of its boot partition: it fills in the partitions
// (not checked against the image size), the FAT label, kernel, cmdline.txt
// and config.txt.
func InspectBoot(r io.ReaderAt) (*Base, error) {
	boot, root, diskID, err := readTable(r, math.MaxInt64)
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	b := &Base{DiskID: diskID, Boot: boot, Root: root}
	if err := inspectBoot(r, b); err != nil {
		return nil, fmt.Errorf("base image: boot partition: %w", err)
	}
	return b, nil
}

// InspectContext is Inspect with a context (for the debugfs runs) and options.
func InspectContext(ctx context.Context, r io.ReaderAt, size int64, opts Options) (*Base, error) {
	o := opts
	if o.Runner == nil {
		o.Runner = system.ExecRunner{}
	}
	if o.Debugfs == "" {
		o.Debugfs = "/usr/sbin/debugfs"
	}
	switch o.Reader {
	case ReaderAuto, ReaderGoDiskfs, ReaderDebugfs:
	default:
		return nil, fmt.Errorf("base image: unknown ext4 reader %q", o.Reader)
	}
	boot, root, diskID, err := readTable(r, size)
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	b := &Base{DiskID: diskID, Boot: boot, Root: root}
	if err := inspectBoot(r, b); err != nil {
		return nil, fmt.Errorf("base image: boot partition: %w", err)
	}
	if err := inspectRoot(ctx, r, b, &o); err != nil {
		return nil, fmt.Errorf("base image: root partition: %w", err)
	}
	return b, nil
}
