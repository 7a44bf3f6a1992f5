package qemu

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/system"
)

// DiskSpec is what the SSD looks like from the host after the guest is off:
// what the end-state assertions and the interrupted-versus-uninterrupted
// comparison look at.
type DiskSpec struct {
	// Label is the table's kind as sfdisk names it ("gpt" or "dos"), ID the
	// GPT disk GUID or "0x" and the MBR disk identifier.
	Label      string
	ID         string
	SectorSize int64
	Partitions []PartSpec
	// Subvolumes are the btrfs subvolume paths on the root partition.
	Subvolumes []string
	// FATCheck is fsck.fat -n's verdict on the first FAT partition
	// ("clean", or what it printed).
	FATCheck string
}

// Table is the partition table as the disk steps read it back (sfdisk
// --json), for disk.Plan.Compare.
func (s *DiskSpec) Table() *disk.Table {
	t := &disk.Table{Label: s.Label, ID: s.ID, SectorSize: s.SectorSize}
	for _, p := range s.Partitions {
		t.Partitions = append(t.Partitions, p.TablePart)
	}
	return t
}

// withoutIDs is the spec with the disk's, partitions' and filesystems'
// unique IDs blanked: every install draws its own (the Pi's serial and a
// seed kept in its journal), so two installs agree on everything else.
func (s *DiskSpec) withoutIDs() *DiskSpec {
	c := *s
	c.ID = ""
	c.Partitions = make([]PartSpec, len(s.Partitions))
	for i, p := range s.Partitions {
		p.UUID, p.FSUUID = "", ""
		c.Partitions[i] = p
	}
	return &c
}

// PartSpec is one partition as sfdisk reads it and the filesystem on it as
// blkid probes it.
type PartSpec struct {
	Number int
	disk.TablePart
	FSType string // blkid TYPE
	Label  string // blkid LABEL
	FSUUID string // blkid UUID
}

// Bytes is the partition's size.
func (p PartSpec) Bytes(sectorSize int64) int64 { return p.Size * sectorSize }

// String renders the spec for diffs in test failures.
func (d *DiskSpec) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s disk id %s, %d-byte sectors\n", d.Label, d.ID, d.SectorSize)
	for _, p := range d.Partitions {
		boot := ""
		if p.Bootable {
			boot = " bootable"
		}
		fmt.Fprintf(&b, "  p%d %d+%d type %s%s uuid %s name %q fs %s label %q fs uuid %s\n",
			p.Number, p.Start, p.Size, p.Type, boot, p.UUID, p.Name, p.FSType, p.Label, p.FSUUID)
	}
	fmt.Fprintf(&b, "  subvolumes %v\n  fsck.fat: %s\n", d.Subvolumes, d.FATCheck)
	return b.String()
}

// Inspector reads disk images through loop devices (read-only) with the
// real tools: sfdisk, sgdisk, blkid, btrfs, fsck.fat.
type Inspector struct {
	Run   system.Runner
	Tools Tools
	// TempDir holds mount points.
	TempDir string
}

// Inspect attaches img read-only and describes it: the table as the disk
// steps read it (sfdisk --json, either kind), verified by the table's own
// tool, and what is on each partition. It needs root.
func (in *Inspector) Inspect(ctx context.Context, img string) (*DiskSpec, error) {
	t := in.Tools
	out, err := run(ctx, in.Run, t.Losetup, "--find", "--show", "--read-only", "--partscan", img)
	if err != nil {
		return nil, err
	}
	loop := strings.TrimSpace(out)
	defer run(context.WithoutCancel(ctx), in.Run, t.Losetup, "--detach", loop)

	dump, err := in.Run.Output(ctx, t.Sfdisk, "--json", loop)
	if err != nil {
		return nil, fmt.Errorf("partition table of %q: %w", img, err)
	}
	table, err := disk.ParseSfdisk(dump)
	if err != nil {
		return nil, fmt.Errorf("partition table of %q: %w", img, err)
	}
	// sgdisk checks a GPT's CRCs and backup; sfdisk an MBR's overlaps.
	verify := []string{t.Sfdisk, "--verify", loop}
	if table.Label == "gpt" {
		verify = []string{t.Sgdisk, "--verify", loop}
	}
	if _, err := run(ctx, in.Run, verify...); err != nil {
		return nil, fmt.Errorf("partition table of %q: %w", img, err)
	}
	spec := &DiskSpec{Label: table.Label, ID: table.ID, SectorSize: cmp.Or(table.SectorSize, 512)}
	for _, tp := range table.Partitions {
		n, err := partitionNumber(loop, tp.Node)
		if err != nil {
			return nil, err
		}
		p := PartSpec{Number: n, TablePart: tp}
		dev := fmt.Sprintf("%sp%d", loop, n)
		if err := waitForNode(ctx, in, loop, dev); err != nil {
			return nil, err
		}
		// blkid exits 2 when it finds no filesystem: that is a result.
		probe, err := in.Run.Output(ctx, t.Blkid, "--probe", "--output", "export", dev)
		if err == nil {
			kv := parseExport(string(probe))
			p.FSType, p.Label, p.FSUUID = kv["TYPE"], kv["LABEL"], kv["UUID"]
		}
		spec.Partitions = append(spec.Partitions, p)
	}
	for _, p := range spec.Partitions {
		dev := fmt.Sprintf("%sp%d", loop, p.Number)
		switch p.FSType {
		case "vfat":
			if spec.FATCheck != "" {
				continue
			}
			if _, err := run(ctx, in.Run, t.FsckFAT, "-n", dev); err != nil {
				spec.FATCheck = err.Error()
			} else {
				spec.FATCheck = "clean"
			}
		case "btrfs":
			subs, err := in.subvolumes(ctx, dev)
			if err != nil {
				return nil, err
			}
			spec.Subvolumes = subs
		}
	}
	return spec, nil
}

// partitionNumber is the number in a partition node sfdisk names
// ("/dev/loop3p2" of "/dev/loop3" is 2).
func partitionNumber(disk, node string) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimPrefix(node, disk), "p"))
	if err != nil || n < 1 || !strings.HasPrefix(node, disk) {
		return 0, fmt.Errorf("sfdisk names partition %q, not a partition of %q", node, disk)
	}
	return n, nil
}

// waitForNode waits for the kernel to create a partition's device node,
// nudging it with partx.
func waitForNode(ctx context.Context, in *Inspector, loop, dev string) error {
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(dev); err == nil {
			return nil
		}
		if i == 5 {
			run(ctx, in.Run, in.Tools.Partx, "--update", loop)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("partition device %q did not appear (try: partx -u %s)", dev, loop)
}

func (in *Inspector) subvolumes(ctx context.Context, dev string) ([]string, error) {
	mnt, err := os.MkdirTemp(in.TempDir, "btrfs-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(mnt)
	if _, err := run(ctx, in.Run, in.Tools.Mount, "-t", "btrfs", "-o", "ro", dev, mnt); err != nil {
		return nil, err
	}
	defer run(context.WithoutCancel(ctx), in.Run, in.Tools.Umount, mnt)
	out, err := run(ctx, in.Run, in.Tools.Btrfs, "subvolume", "list", mnt)
	if err != nil {
		return nil, err
	}
	return parseSubvolumeList(out), nil
}

// parseSubvolumeList takes the paths from `btrfs subvolume list`
// ("ID 256 gen 9 top level 5 path @nix"), sorted.
func parseSubvolumeList(out string) []string {
	var subs []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if _, path, ok := strings.Cut(sc.Text(), " path "); ok {
			subs = append(subs, strings.TrimSpace(path))
		}
	}
	sort.Strings(subs)
	return subs
}

// parseExport reads blkid's KEY=value lines.
func parseExport(out string) map[string]string {
	kv := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// SHA256File hashes a (sparse) disk image.
func SHA256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 4<<20)); err != nil {
		return "", fmt.Errorf("hash %q: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// NewBlankDisk creates a sparse raw disk of size bytes (a new, empty SSD).
func NewBlankDisk(path string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
