package disk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/system"
)

// The blank rule. With target.wipe = false a disk is used only when it is
// blank, which is three checks, each of which alone refuses:
//
//  1. no signature at the disk's start or end that wipefs knows: a partition
//     table (GPT, including a backup GPT alone at the last sector, MBR,
//     protective MBR), a filesystem, RAID (md, also the 0.90/1.0 superblocks
//     at the end), LVM or LUKS header;
//  2. no signature blkid -p finds at the usual partition starts (BlankStarts
//     and the planned layout's own starts), where a filesystem survives the
//     loss of its partition table;
//  3. all zeros in the first and the last BlankEdgeBytes, and in a window of
//     BlankWindowBytes at every multiple of BlankStrideBytes in between.
//
// What 3 guarantees: any extent of non-zero bytes longer than BlankStrideBytes
// - BlankWindowBytes (16 MiB - 8 KiB), wherever it lies and however it is
// aligned, is found; so is any filesystem, RAID, LVM or LUKS header that
// starts at a multiple of 16 MiB (its superblock lies in the window's 8 KiB;
// btrfs's at +64 KiB is missed, its first mirror at +64 MiB is not). A disk
// that ever held data has it in far longer runs than 16 MiB; what the rule
// can miss is a freshly made, empty filesystem at an unusual offset with no
// table, which holds nothing to lose.
//
// Cost: 2 MiB plus one 8 KiB read per 16 MiB, read with O_DIRECT (neither the
// page cache nor readahead stands between the check and the disk), four at a
// time. A 2 TB disk is 119 211 reads, 0.9 GiB in all; on a sparse 2 TiB loop
// device (131 073 reads) the whole rule took 5 to 8 s on two busy shared cores
// (`make bench` prints it). A USB 3 SSD serves 8 KiB reads at a few thousand
// a second or more: under a minute for 2 TB, whatever the disk holds.
const (
	BlankEdgeBytes   = 1 << 20
	BlankStrideBytes = 16 << 20
	BlankWindowBytes = 8 << 10
	// blankMaxData is how many non-zero regions a refusal names.
	blankMaxData = 3
	// blankReaders is how many windows are read at once.
	blankReaders = 4
	nonZero      = "non-zero data"
)

// BlankStarts are the offsets where partitions usually begin: the legacy DOS
// cylinder (63 sectors), the 1 MiB alignment of every modern tool, 2, 4 (Raspberry
// Pi OS) and 8 MiB, and the root partitions of Raspberry Pi OS images (after a
// 256 MiB or a 512 MiB boot partition at 4 MiB).
func BlankStarts() []int64 {
	return []int64{63 * 512, 1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20, 260 << 20, 516 << 20}
}

// Finding is one thing that makes a disk not blank, and where it is.
type Finding struct {
	Offset int64
	What   string
}

func (f Finding) String() string { return f.What + " at " + DescribeOffset(f.Offset) }

// DescribeOffset is a byte offset for people and for dd: "1.0 MiB (0x100000)".
func DescribeOffset(off int64) string {
	return fmt.Sprintf("%s (0x%x)", config.Size(off).Approx(), off)
}

// BlankProbe is a disk to check against the blank rule.
type BlankProbe struct {
	Run   system.Runner
	Tools system.Tools
	// Dev is the device as the tools see it ("/dev/sda"); File the path this
	// process reads it through (the same, under the caller's root).
	Dev, File        string
	Size, SectorSize int64
	// Starts are more offsets to probe, besides BlankStarts (the planned
	// layout's partition starts: an earlier install's filesystems).
	Starts []int64
}

// CheckBlank applies the blank rule and returns what makes the disk not
// blank, nil when it is blank. It only reads.
func CheckBlank(ctx context.Context, p BlankProbe) ([]Finding, error) {
	sigs, err := Signatures(ctx, p.Run, p.Tools.Wipefs, p.Dev)
	if err != nil {
		return nil, err
	}
	primaryGPT := slices.ContainsFunc(sigs, func(s Signature) bool { return s.Type == "gpt" && !s.IsBackupGPT() })
	var found []Finding
	for _, s := range sigs {
		what := s.Describe()
		switch {
		case primaryGPT && s.Type == "PMBR":
			continue // part of the GPT named at 0x200
		case primaryGPT && s.IsBackupGPT():
			what = "its backup GPT"
		}
		found = append(found, Finding{Offset: s.ByteOffset(), What: what})
	}
	starts := slices.Concat(BlankStarts(), p.Starts)
	slices.Sort(starts)
	for _, off := range slices.Compact(starts) {
		if off <= 0 || off >= p.Size {
			continue
		}
		what, err := probeAt(ctx, p.Run, p.Tools.Blkid, p.Dev, off)
		if err != nil {
			return nil, err
		}
		if what != "" {
			found = append(found, Finding{Offset: off, What: what})
		}
	}
	data, err := nonZeroRegions(p.File, p.Size, p.SectorSize, blankMaxData)
	if err != nil {
		return nil, fmt.Errorf("read %q to see whether it is blank: %w", p.Dev, err)
	}
	for _, off := range data {
		found = append(found, Finding{Offset: off, What: nonZero})
	}
	return dedupe(found), nil
}

// dedupe drops the repeats of one filesystem that wipefs reports at several
// offsets of one boot sector (FAT at 0x0, 0x52, 0x1fe), and data found within
// a MiB of a signature already named (it is that signature).
func dedupe(found []Finding) []Finding {
	var out []Finding
	for _, f := range found {
		if slices.ContainsFunc(out, func(o Finding) bool {
			near := o.Offset-f.Offset < BlankEdgeBytes && f.Offset-o.Offset < BlankEdgeBytes
			return near && (o.What == f.What || f.What == nonZero)
		}) {
			continue
		}
		out = append(out, f)
	}
	return out
}

// probeAt asks blkid what starts at off on dev: "" for nothing.
func probeAt(ctx context.Context, run system.Runner, blkid, dev string, off int64) (string, error) {
	out, err := run.Output(ctx, blkid, "-p", "-o", "export", "-O", strconv.FormatInt(off, 10), dev)
	var coded interface{ ExitCode() int }
	if err != nil && errors.As(err, &coded) {
		switch coded.ExitCode() {
		case 2: // nothing found
			return "", nil
		case 8: // several signatures, each a reason to refuse
			return "several filesystem signatures (blkid: ambivalent)", nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("look for signatures at byte %d of %q: %w", off, dev, err)
	}
	v := ParseExport(out)
	switch {
	case v["TYPE"] != "":
		return describeSignature(v["TYPE"], v["LABEL"], v["UUID"]), nil
	case v["PTTYPE"] != "":
		return fmt.Sprintf("a partition table (%s)", v["PTTYPE"]), nil
	}
	return "", nil
}

// ParseExport parses `blkid -o export` (KEY=value lines).
func ParseExport(data []byte) map[string]string {
	v := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if k, val, ok := strings.Cut(sc.Text(), "="); ok {
			v[k] = val
		}
	}
	return v
}

// describeSignature names a signature by what it is for.
func describeSignature(typ, label, uuid string) string {
	kind := "a filesystem signature"
	switch typ {
	case "linux_raid_member", "isw_raid_member", "ddf_raid_member":
		kind = "a RAID member signature"
	case "LVM2_member", "LVM1_member":
		kind = "an LVM physical volume signature"
	case "crypto_LUKS", "BitLocker":
		kind = "an encrypted volume header"
	case "swap":
		kind = "a swap signature"
	}
	return kind + " (" + Signature{Type: typ, Label: label, UUID: uuid}.name() + ")"
}

// ByteOffset is the signature's offset as a number (wipefs prints hex).
func (s Signature) ByteOffset() int64 {
	n, _ := strconv.ParseInt(strings.TrimPrefix(s.Offset, "0x"), 16, 64)
	return n
}

// IsBackupGPT is a GPT header found anywhere but at LBA 1: the backup at the
// disk's last sector (wipefs lists it besides the primary, and alone when the
// primary is damaged).
func (s Signature) IsBackupGPT() bool {
	off := s.ByteOffset()
	return s.Type == "gpt" && off != 512 && off != 4096
}

// Describe names the signature for a refusal (a backup GPT as found alone).
func (s Signature) Describe() string {
	switch {
	case s.IsBackupGPT():
		return "a GPT backup table (the primary is damaged)"
	case s.Type == "gpt":
		return "a partition table (gpt)"
	case s.Type == "PMBR":
		return "a protective MBR"
	case s.IsPartitionTable():
		return "a partition table (" + s.Type + ")"
	}
	return describeSignature(s.Type, s.Label, s.UUID)
}

// nonZeroRegions reads the sample regions of the blank rule and returns the
// offsets of up to max of them that are not all zeros, lowest first. The
// windows are read by blankReaders at once: a USB disk with a command queue
// (UAS) serves them in parallel, and one without loses nothing.
func nonZeroRegions(path string, size, sectorSize int64, max int) ([]int64, error) {
	if sectorSize <= 0 {
		sectorSize = 512
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		// A filesystem without O_DIRECT (tmpfs in tests) is read through the
		// page cache; a block device always takes it.
		if f, err = os.Open(path); err != nil {
			return nil, err
		}
	}
	defer f.Close()
	// O_DIRECT needs buffers aligned to the logical sector: an anonymous
	// mapping is page aligned, and so is every window's slice of it.
	mem, err := unix.Mmap(-1, 0, BlankEdgeBytes+blankReaders*BlankWindowBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("allocate read buffers: %w", err)
	}
	defer unix.Munmap(mem)

	// check returns the offset of the first non-zero sector in [off, off+n),
	// or -1.
	check := func(buf []byte, off, n int64) (int64, error) {
		off = off / sectorSize * sectorSize
		n = min(n, size-off)
		if n <= 0 {
			return -1, nil
		}
		b := buf[:n]
		if _, err := f.ReadAt(b, off); err != nil {
			return -1, fmt.Errorf("read %d bytes at byte %d: %w", n, off, err)
		}
		if i := slices.IndexFunc(b, func(c byte) bool { return c != 0 }); i >= 0 {
			return off + int64(i)/sectorSize*sectorSize, nil
		}
		return -1, nil
	}

	var (
		mu    sync.Mutex
		found []int64
		first error
	)
	note := func(off int64, err error) bool {
		mu.Lock()
		defer mu.Unlock()
		if err != nil && first == nil {
			first = err
		}
		if off >= 0 {
			found = append(found, off)
		}
		return first == nil && len(found) < max
	}
	if !note(check(mem[:BlankEdgeBytes], 0, BlankEdgeBytes)) {
		return found, first
	}
	windows := (size - BlankEdgeBytes - 1) / BlankStrideBytes // the last one starts before the last MiB
	var next atomic.Int64
	var wg sync.WaitGroup
	for r := range blankReaders {
		buf := mem[BlankEdgeBytes+r*BlankWindowBytes:][:BlankWindowBytes]
		wg.Go(func() {
			for i := next.Add(1); i <= windows; i = next.Add(1) {
				if !note(check(buf, i*BlankStrideBytes, BlankWindowBytes)) {
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil && len(found) < max {
		note(check(mem[:BlankEdgeBytes], size-BlankEdgeBytes, BlankEdgeBytes))
	}
	slices.Sort(found)
	if len(found) > max {
		found = found[:max]
	}
	return found, first
}

// DescribeRange says what the partition at [off, off+size) of dev holds, for
// people: `ext4 label "data", 12.0 MiB used`, "no filesystem signature". file
// is dev as this process reads it, for the used space that ext2/3/4 and btrfs
// superblocks record.
func DescribeRange(ctx context.Context, run system.Runner, blkid, file, dev string, off, size int64) string {
	out, err := run.Output(ctx, blkid, "-p", "-o", "export", "-O", strconv.FormatInt(off, 10), "-S", strconv.FormatInt(size, 10), dev)
	if err != nil {
		var coded interface{ ExitCode() int }
		if errors.As(err, &coded) && coded.ExitCode() == 2 {
			return "no filesystem signature"
		}
		return "unreadable"
	}
	v := ParseExport(out)
	if v["TYPE"] == "" {
		return "no filesystem signature"
	}
	desc := v["TYPE"]
	if v["LABEL"] != "" {
		desc += fmt.Sprintf(" label %q", v["LABEL"])
	}
	if used, ok := usedBytes(file, off, v["TYPE"]); ok {
		desc += ", " + config.Size(used).Approx() + " used"
	}
	return desc
}

// usedBytes reads the used space from the superblock of the filesystem of
// type typ at off, for the types whose superblock records it.
func usedBytes(file string, off int64, typ string) (int64, bool) {
	f, err := os.Open(file)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	le := func(b []byte) int64 {
		var n int64
		for i := len(b) - 1; i >= 0; i-- {
			n = n<<8 | int64(b[i])
		}
		return n
	}
	switch typ {
	case "ext2", "ext3", "ext4":
		sb := make([]byte, 1024)
		if _, err := f.ReadAt(sb, off+1024); err != nil {
			return 0, false
		}
		blocks, free := le(sb[0x04:0x08]), le(sb[0x0c:0x10])
		if le(sb[0x60:0x64])&0x80 != 0 { // INCOMPAT_64BIT: the high halves count
			blocks |= le(sb[0x150:0x154]) << 32
			free |= le(sb[0x158:0x15c]) << 32
		}
		return (blocks - free) << (10 + le(sb[0x18:0x1c])), blocks >= free
	case "btrfs":
		sb := make([]byte, 4096)
		if _, err := f.ReadAt(sb, off+64<<10); err != nil {
			return 0, false
		}
		return le(sb[0x78:0x80]), true
	}
	return 0, false
}
