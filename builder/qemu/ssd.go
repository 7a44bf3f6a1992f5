package qemu

import (
	"bufio"
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

	"github.com/nixpi/nixpi/firstboot/system"
)

// DiskSpec is what the SSD looks like from the host after the guest is off:
// what the end-state assertions and the interrupted-versus-uninterrupted
// comparison look at.
type DiskSpec struct {
	DiskGUID   string
	Partitions []PartSpec
	// Subvolumes are the btrfs subvolume paths on the root partition.
	Subvolumes []string
	// FATCheck is fsck.fat -n's verdict on the first partition when it is
	// FAT ("clean", or what it printed).
	FATCheck string
}

// withoutIDs is the spec with the disk's, partitions' and filesystems'
// unique IDs blanked: every install draws its own (the Pi's serial and a
// seed kept in its journal), so two installs agree on everything else.
func (s *DiskSpec) withoutIDs() *DiskSpec {
	c := *s
	c.DiskGUID = ""
	c.Partitions = make([]PartSpec, len(s.Partitions))
	for i, p := range s.Partitions {
		p.UniqueGUID, p.UUID = "", ""
		c.Partitions[i] = p
	}
	return &c
}

// PartSpec is one GPT partition and the filesystem on it.
type PartSpec struct {
	Number     int
	FirstLBA   int64
	LastLBA    int64
	TypeGUID   string
	UniqueGUID string
	Name       string
	FSType     string // blkid TYPE
	Label      string // blkid LABEL
	UUID       string // blkid UUID
}

// Bytes is the partition's size.
func (p PartSpec) Bytes() int64 { return (p.LastLBA - p.FirstLBA + 1) * 512 }

// String renders the spec for diffs in test failures.
func (d *DiskSpec) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "disk guid %s\n", d.DiskGUID)
	for _, p := range d.Partitions {
		fmt.Fprintf(&b, "  p%d %d-%d type %s guid %s name %q fs %s label %q uuid %s\n",
			p.Number, p.FirstLBA, p.LastLBA, p.TypeGUID, p.UniqueGUID, p.Name, p.FSType, p.Label, p.UUID)
	}
	fmt.Fprintf(&b, "  subvolumes %v\n  fsck.fat: %s\n", d.Subvolumes, d.FATCheck)
	return b.String()
}

// Inspector reads disk images through loop devices (read-only) with the
// real tools: sgdisk, blkid, btrfs, fsck.fat.
type Inspector struct {
	Run   system.Runner
	Tools Tools
	// TempDir holds mount points.
	TempDir string
}

// Inspect attaches img read-only and describes it. It needs root.
func (in *Inspector) Inspect(ctx context.Context, img string) (*DiskSpec, error) {
	t := in.Tools
	out, err := run(ctx, in.Run, t.Losetup, "--find", "--show", "--read-only", "--partscan", img)
	if err != nil {
		return nil, err
	}
	loop := strings.TrimSpace(out)
	defer run(context.WithoutCancel(ctx), in.Run, t.Losetup, "--detach", loop)

	if _, err := run(ctx, in.Run, t.Sgdisk, "--verify", loop); err != nil {
		return nil, fmt.Errorf("partition table of %q: %w", img, err)
	}
	table, err := run(ctx, in.Run, t.Sgdisk, "--print", loop)
	if err != nil {
		return nil, err
	}
	spec := &DiskSpec{}
	numbers, guid, err := parseSgdiskPrint(table)
	if err != nil {
		return nil, fmt.Errorf("sgdisk --print %s: %w", loop, err)
	}
	spec.DiskGUID = guid
	for _, n := range numbers {
		info, err := run(ctx, in.Run, t.Sgdisk, "--info="+strconv.Itoa(n), loop)
		if err != nil {
			return nil, err
		}
		p, err := parseSgdiskInfo(info)
		if err != nil {
			return nil, fmt.Errorf("sgdisk --info=%d %s: %w", n, loop, err)
		}
		p.Number = n
		dev := fmt.Sprintf("%sp%d", loop, n)
		if err := waitForNode(ctx, in, loop, dev); err != nil {
			return nil, err
		}
		// blkid exits 2 when it finds no filesystem: that is a result.
		probe, err := in.Run.Output(ctx, t.Blkid, "--probe", "--output", "export", dev)
		if err == nil {
			kv := parseExport(string(probe))
			p.FSType, p.Label, p.UUID = kv["TYPE"], kv["LABEL"], kv["UUID"]
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

// parseSgdiskPrint returns the partition numbers and the disk GUID.
func parseSgdiskPrint(out string) ([]int, string, error) {
	// On a disk without a GPT, sgdisk makes one up in memory and prints
	// that ("Creating new GPT entries in memory.", "converting MBR to GPT
	// format in memory").
	if strings.Contains(out, "in memory") {
		return nil, "", fmt.Errorf("no GPT on the disk")
	}
	var numbers []int
	guid := ""
	inTable := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Disk identifier (GUID): "); ok {
			guid = strings.TrimSpace(v)
			continue
		}
		if strings.HasPrefix(line, "Number") {
			inTable = true
			continue
		}
		if !inTable {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, "", fmt.Errorf("unexpected table line %q", line)
		}
		numbers = append(numbers, n)
	}
	if guid == "" {
		return nil, "", fmt.Errorf("no GPT disk identifier (is there a GPT at all?)")
	}
	return numbers, guid, nil
}

// parseSgdiskInfo reads `sgdisk --info=N`.
func parseSgdiskInfo(out string) (PartSpec, error) {
	var p PartSpec
	var err error
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		switch key {
		case "Partition GUID code":
			p.TypeGUID, _, _ = strings.Cut(value, " ")
		case "Partition unique GUID":
			p.UniqueGUID = strings.TrimSpace(value)
		case "First sector":
			first, _, _ := strings.Cut(value, " ")
			if p.FirstLBA, err = strconv.ParseInt(first, 10, 64); err != nil {
				return p, fmt.Errorf("first sector %q: %w", value, err)
			}
		case "Last sector":
			last, _, _ := strings.Cut(value, " ")
			if p.LastLBA, err = strconv.ParseInt(last, 10, 64); err != nil {
				return p, fmt.Errorf("last sector %q: %w", value, err)
			}
		case "Partition name":
			p.Name = strings.Trim(value, "'")
		}
	}
	if p.TypeGUID == "" || p.LastLBA == 0 {
		return p, fmt.Errorf("no partition type or extent in %q", out)
	}
	return p, nil
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
