package disk

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/journal"
)

// Partition roles, in disk order.
const (
	RoleBoot = "boot"
	RoleSwap = "swap"
	RoleRoot = "root"
)

// GPT partition type GUIDs (sgdisk codes EF00, 8200, 8300).
const (
	GPTTypeESP   = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	GPTTypeSwap  = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
	GPTTypeLinux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
)

const (
	alignBytes = 1 << 20 // partitions start and end on MiB boundaries
	// gptEntriesBytes is the size of the GPT partition entry array (128
	// entries of 128 bytes); the backup copy and header sit at the disk's end.
	gptEntriesBytes = 128 * 128
	// MinRootBytes is the smallest root partition the plan accepts; btrfs
	// needs about 110 MiB and NixOS far more, so a smaller one is a mistake.
	MinRootBytes = 1 << 30
)

// ErrTooSmall is a disk on which the layout does not fit.
var ErrTooSmall = errors.New("too small for the layout")

// Identity is what identifies a disk across boots (its /dev name does not).
type Identity struct {
	ByID   string
	Serial string
	Size   int64
	// Seed is the installation's own part of every derived ID (see
	// journal.Disk.IDSeed); "" derives the IDs as installs before it did.
	Seed string
}

// RecordedIdentity is the identity of the disk the journal recorded as the
// target: what every step after target plans the layout with, and what a
// reader of the journal (the QEMU harness) plans it with to check the disk.
func RecordedIdentity(r *journal.Disk) Identity {
	return Identity{ByID: r.ByID, Serial: r.Serial, Size: r.Size, Seed: r.IDSeed}
}

// Part is one planned partition and the filesystem that goes on it.
type Part struct {
	Number     int
	Role       string
	Start      int64 // first sector (logical sectors)
	Sectors    int64
	GPTType    string // type GUID (GPT)
	SgdiskType string // sgdisk type code for the same type
	MBRType    string // sfdisk type (MBR): "c", "82", "83"
	GUID       string // partition GUID (GPT), lowercase
	Name       string // GPT partition name (the label)
	FSType     string // "vfat", "swap", "btrfs", "ext4" as wipefs/blkid name them
	Label      string
	FSUUID     string // as wipefs shows it: "abcd-1234" for FAT, a UUID otherwise
	// PartUUID is the kernel's PARTUUID of the partition, the name under
	// /dev/disk/by-partuuid: the partition GUID (GPT), or the MBR disk id
	// and the partition number, "1a2b3c4d-02".
	PartUUID string
}

// Plan is the whole layout of the target disk: table, geometry, every ID.
type Plan struct {
	Table      string // config.TableGPT or config.TableMBR
	SectorSize int64
	// DiskID is the GPT disk GUID (lowercase) or, for MBR, "0x" and the
	// 8-digit disk identifier; the journal records it as the disk's GPT GUID.
	DiskID string
	// GPTGUID is the disk GUID of the GPT written first; for MBR it only
	// lives until the conversion, but a power cut can leave it on the disk.
	GPTGUID    string
	Parts      []Part
	Subvolumes []string // btrfs subvolumes, in creation order
	// FATVolumeID is the FAT volume id for `mkfs.fat -i` (8 hex digits).
	FATVolumeID string
}

// Part returns the planned partition with the given role, or nil.
func (p *Plan) Part(role string) *Part {
	for i := range p.Parts {
		if p.Parts[i].Role == role {
			return &p.Parts[i]
		}
	}
	return nil
}

// EffectiveLayout fills the layout's unset fields with the recipe defaults.
func EffectiveLayout(l config.Layout) config.Layout {
	def := config.Default().Layout
	if l.Table == "" {
		l.Table = def.Table
	}
	if l.BootSize == 0 {
		l.BootSize = def.BootSize
	}
	if l.RootFS == "" {
		l.RootFS = def.RootFS
	}
	if l.Subvolumes == nil && l.RootFS == config.FSBtrfs {
		l.Subvolumes = def.Subvolumes
	}
	if l.RootFS != config.FSBtrfs {
		l.Subvolumes = nil
	}
	if l.BootLabel == "" {
		l.BootLabel = def.BootLabel
	}
	if l.SwapLabel == "" {
		l.SwapLabel = def.SwapLabel
	}
	if l.RootLabel == "" {
		l.RootLabel = def.RootLabel
	}
	return l
}

// SwapBytes resolves the configured swap size; "ram" needs the memory size
// preflight recorded.
func SwapBytes(l config.Layout, ramBytes int64) (int64, error) {
	if l.SwapSize.RAM && ramBytes <= 0 {
		return 0, fmt.Errorf(`swap_size = "ram" but the memory size is unknown (preflight records it); set layout.swap_size to a size such as "1GiB"`)
	}
	return int64(l.SwapSize.Resolve(ramBytes)), nil
}

// MinDiskBytes is the smallest disk the layout fits on.
func MinDiskBytes(l config.Layout, ramBytes int64) (int64, error) {
	l = EffectiveLayout(l)
	swap, err := SwapBytes(l, ramBytes)
	if err != nil {
		return 0, err
	}
	return alignBytes + roundUp(int64(l.BootSize), alignBytes) + roundUp(swap, alignBytes) + MinRootBytes + alignBytes, nil
}

// NewPlan lays the configured layout out on a disk of id.Size bytes with the
// given logical sector size. The same inputs always give the same plan.
func NewPlan(layout config.Layout, ramBytes int64, id Identity, sectorSize int64) (*Plan, error) {
	l := EffectiveLayout(layout)
	if sectorSize <= 0 || alignBytes%sectorSize != 0 {
		return nil, fmt.Errorf("unsupported logical sector size %d", sectorSize)
	}
	if l.Table != config.TableGPT && l.Table != config.TableMBR {
		return nil, fmt.Errorf("layout.table = %q: use %q or %q", l.Table, config.TableGPT, config.TableMBR)
	}
	swap, err := SwapBytes(l, ramBytes)
	if err != nil {
		return nil, err
	}
	ids := newIDSource(l, swap, id)
	plan := &Plan{Table: l.Table, SectorSize: sectorSize, Subvolumes: l.Subvolumes}
	plan.GPTGUID = ids.uuid("disk")
	if l.Table == config.TableGPT {
		plan.DiskID = plan.GPTGUID
	} else {
		plan.DiskID = "0x" + ids.hex32("mbr-disk-id")
	}
	plan.FATVolumeID = strings.ToUpper(ids.hex32("fat-volume-id"))

	align := alignBytes / sectorSize
	total := id.Size / sectorSize
	// Both tables are written as GPT first (see the partition step), so the
	// last usable sector is GPT's: before the backup entries and header.
	lastUsable := total - 2 - (gptEntriesBytes+sectorSize-1)/sectorSize
	end := (lastUsable+1)/align*align - 1

	next := align
	add := func(role string, bytes int64) {
		n := len(plan.Parts) + 1
		p := Part{Number: n, Role: role, Start: next}
		if bytes > 0 {
			p.Sectors = roundUp(bytes, alignBytes) / sectorSize
		} else {
			p.Sectors = end - next + 1
		}
		next += p.Sectors
		switch role {
		case RoleBoot:
			p.GPTType, p.SgdiskType, p.MBRType = GPTTypeESP, "EF00", "c"
			p.FSType, p.Label = "vfat", l.BootLabel
			p.FSUUID = strings.ToLower(plan.FATVolumeID[:4] + "-" + plan.FATVolumeID[4:])
		case RoleSwap:
			p.GPTType, p.SgdiskType, p.MBRType = GPTTypeSwap, "8200", "82"
			p.FSType, p.Label, p.FSUUID = "swap", l.SwapLabel, ids.uuid("swap-fs")
		case RoleRoot:
			p.GPTType, p.SgdiskType, p.MBRType = GPTTypeLinux, "8300", "83"
			p.FSType, p.Label, p.FSUUID = l.RootFS, l.RootLabel, ids.uuid("root-fs")
		}
		p.Name = p.Label
		if l.Table == config.TableGPT {
			p.GUID = ids.uuid("part-" + role)
		}
		p.PartUUID = partUUID(l, ids, role, n)
		plan.Parts = append(plan.Parts, p)
	}
	add(RoleBoot, int64(l.BootSize))
	if swap > 0 {
		add(RoleSwap, swap)
	}
	if rest := (end - next + 1) * sectorSize; rest < MinRootBytes {
		min, _ := MinDiskBytes(l, ramBytes)
		return nil, fmt.Errorf("disk of %s is %w: it needs at least %s (boot %s, swap %s, root at least %s)",
			humanSize(id.Size), ErrTooSmall, humanSize(min), l.BootSize, humanSize(swap), config.Size(MinRootBytes))
	}
	add(RoleRoot, 0)
	if l.Table == config.TableMBR && end >= 1<<32 {
		// GPT is no way out: the Pi's U-Boot cannot boot a GPT on a disk
		// this large either (see MaxBootableSectors).
		return nil, fmt.Errorf("an MBR partition table cannot address a disk of %s (%d-byte sectors; the limit is 2^32 sectors), and the Pi's U-Boot cannot boot a GPT on it either: use a disk smaller than 2 TiB",
			humanSize(id.Size), sectorSize)
	}
	return plan, nil
}

// partUUID is the PARTUUID of partition n (role) in layout l.
func partUUID(l config.Layout, ids idSource, role string, n int) string {
	if l.Table == config.TableGPT {
		return ids.uuid("part-" + role)
	}
	return fmt.Sprintf("%s-%02d", ids.hex32("mbr-disk-id"), n)
}

// PartUUIDs are the PARTUUIDs of the partitions NewPlan lays out for
// layout on the disk id, by role (RoleBoot, RoleSwap when there is swap,
// RoleRoot). They come from the layout, the swap size and the identity
// alone, not from the disk's geometry, so the journal's record of the disk
// gives them without reading the disk.
func PartUUIDs(layout config.Layout, ramBytes int64, id Identity) (map[string]string, error) {
	l := EffectiveLayout(layout)
	swap, err := SwapBytes(l, ramBytes)
	if err != nil {
		return nil, err
	}
	ids := newIDSource(l, swap, id)
	roles := []string{RoleBoot}
	if swap > 0 {
		roles = append(roles, RoleSwap)
	}
	roles = append(roles, RoleRoot)
	out := map[string]string{}
	for i, role := range roles {
		out[role] = partUUID(l, ids, role, i+1)
	}
	return out, nil
}

// Compare says how the table read back from the disk differs from the plan,
// or "" when it matches.
func (p *Plan) Compare(t *Table) string {
	if t == nil {
		return "no partition table"
	}
	wantLabel := "gpt"
	if p.Table == config.TableMBR {
		wantLabel = "dos"
	}
	if t.Label != wantLabel {
		return fmt.Sprintf("partition table is %s, want %s", t.Label, wantLabel)
	}
	if !strings.EqualFold(t.ID, p.DiskID) {
		return fmt.Sprintf("disk identifier is %s, want %s", t.ID, p.DiskID)
	}
	if t.SectorSize != 0 && t.SectorSize != p.SectorSize {
		return fmt.Sprintf("sector size is %d, want %d", t.SectorSize, p.SectorSize)
	}
	if len(t.Partitions) != len(p.Parts) {
		return fmt.Sprintf("%d partitions, want %d", len(t.Partitions), len(p.Parts))
	}
	for i, want := range p.Parts {
		got := t.Partitions[i]
		var diffs []string
		if got.Start != want.Start || got.Size != want.Sectors {
			diffs = append(diffs, fmt.Sprintf("sectors %d+%d, want %d+%d", got.Start, got.Size, want.Start, want.Sectors))
		}
		if p.Table == config.TableGPT {
			if !strings.EqualFold(got.Type, want.GPTType) {
				diffs = append(diffs, fmt.Sprintf("type %s, want %s", got.Type, want.GPTType))
			}
			if !strings.EqualFold(got.UUID, want.GUID) {
				diffs = append(diffs, fmt.Sprintf("GUID %s, want %s", got.UUID, want.GUID))
			}
			if got.Name != want.Name {
				diffs = append(diffs, fmt.Sprintf("name %q, want %q", got.Name, want.Name))
			}
		} else if !strings.EqualFold(got.Type, want.MBRType) {
			diffs = append(diffs, fmt.Sprintf("type %s, want %s", got.Type, want.MBRType))
		}
		if len(diffs) > 0 {
			return fmt.Sprintf("partition %d: %s", want.Number, strings.Join(diffs, ", "))
		}
	}
	return ""
}

// IsOurs says whether a table on the disk is this plan's work, complete or
// cut short by a power cut: it carries the recorded disk id, the plan's, or
// the GPT GUID written before an MBR conversion; or it is the MBR that
// conversion makes (disk id still zero) with exactly the planned geometry.
func (p *Plan) IsOurs(t *Table, recordedID string) bool {
	if t == nil {
		return false
	}
	for _, id := range []string{recordedID, p.DiskID, p.GPTGUID} {
		if id != "" && strings.EqualFold(t.ID, id) {
			return true
		}
	}
	if p.Table != config.TableMBR || t.Label != "dos" || t.ID != "0x00000000" || len(t.Partitions) != len(p.Parts) {
		return false
	}
	for i, part := range p.Parts {
		if t.Partitions[i].Start != part.Start || t.Partitions[i].Size != part.Sectors {
			return false
		}
	}
	return true
}

// idSource derives every GUID/UUID of one installation from the layout, the
// disk's identity and the installation's seed: a resume after a power cut
// computes the same IDs, and another disk, layout, Pi or install gets others.
type idSource struct{ seed [32]byte }

func newIDSource(l config.Layout, swapBytes int64, id Identity) idSource {
	var b strings.Builder
	fmt.Fprintf(&b, "nixpi disk ids v1\n")
	fmt.Fprintf(&b, "table=%s\nboot=%d\nswap=%d\nrootfs=%s\n", l.Table, l.BootSize, swapBytes, l.RootFS)
	fmt.Fprintf(&b, "labels=%q,%q,%q\nsubvolumes=%q\n", l.BootLabel, l.SwapLabel, l.RootLabel, l.Subvolumes)
	fmt.Fprintf(&b, "serial=%q\nby-id=%q\nsize=%d\n", id.Serial, id.ByID, id.Size)
	if id.Seed != "" {
		fmt.Fprintf(&b, "seed=%s\n", id.Seed)
	}
	return idSource{seed: sha256.Sum256([]byte(b.String()))}
}

func (s idSource) sum(name string) [32]byte {
	return sha256.Sum256(append(s.seed[:], name...))
}

// uuid is a name-based UUID (RFC 9562 version 8, SHA-256 of seed and name).
func (s idSource) uuid(name string) string {
	h := s.sum(name)
	b := h[:16]
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b)
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// hex32 is 8 hex digits, never all zero (a zero id means "none" to tools).
func (s idSource) hex32(name string) string {
	h := s.sum(name)
	if h[0]|h[1]|h[2]|h[3] == 0 {
		h[3] = 1
	}
	return hex.EncodeToString(h[:4])
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// humanSize prints a size in whole MiB when it is not an exact IEC unit.
func humanSize(n int64) string {
	if n%int64(config.MiB) != 0 {
		return fmt.Sprintf("%dMiB", roundUp(n, int64(config.MiB))>>20)
	}
	return config.Size(n).String()
}

// NewIDSeed is the seed of a new installation's IDs: the Pi's serial number
// (so two Pis of a fleet differ even with identical disks and configs) and a
// random part (so do two identical disks prepared on one Pi).
func NewIDSeed(machineSerial string, random io.Reader) (string, error) {
	nonce := make([]byte, 16)
	if _, err := io.ReadFull(random, nonce); err != nil {
		return "", fmt.Errorf("read random bytes for the disk IDs: %w", err)
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "nixpi id seed v1\nmachine-serial=%q\nnonce=%x\n", machineSerial, nonce))
	return hex.EncodeToString(sum[:16]), nil
}
