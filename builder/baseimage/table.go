package baseimage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const sectorSize = 512

// MBR partition types the Pi's boot ROM and bootloader read as FAT.
const (
	typeFAT32CHS = 0x0b
	typeFAT32LBA = 0x0c
	typeEFI      = 0xef
	typeLinux    = 0x83
	typeGPT      = 0xee
)

// IsFAT says whether an MBR partition type is one the Pi boots from.
func IsFAT(partitionType byte) bool {
	return partitionType == typeFAT32CHS || partitionType == typeFAT32LBA || partitionType == typeEFI
}

// Table is an MBR partition table as it is, not judged: what inspect and
// report show of any image. Inspect validates it (readTable).
type Table struct {
	DiskID uint32
	// GPT is a protective MBR (an entry of type 0xee): the partitions are
	// in a GPT, which nixpi does not read.
	GPT        bool
	Partitions []Partition // the primary entries in use, by index
}

// ReadTable reads the MBR in the first sector of r. It fails only when
// there is no MBR: the sector is unreadable or lacks the boot signature.
func ReadTable(r io.ReaderAt) (*Table, error) {
	const hint = "is this a disk image? If it is compressed, decompress it first"
	sector := make([]byte, sectorSize)
	n, err := r.ReadAt(sector, 0)
	if n < sectorSize && (err == nil || errors.Is(err, io.EOF)) {
		return nil, fmt.Errorf("%w: the image is %d bytes, smaller than one sector; %s", ErrNoPartitionTable, n, hint)
	}
	if err != nil && n < sectorSize {
		return nil, fmt.Errorf("read the first sector: %w", err)
	}
	if sector[510] != 0x55 || sector[511] != 0xaa {
		return nil, fmt.Errorf("%w: no boot signature 55 aa in the first sector (found %02x %02x); %s", ErrNoPartitionTable, sector[510], sector[511], hint)
	}
	t := &Table{DiskID: binary.LittleEndian.Uint32(sector[440:444])}
	for i := range 4 {
		e := sector[446+16*i : 446+16*(i+1)]
		if e[4] == 0 {
			continue
		}
		t.GPT = t.GPT || e[4] == typeGPT
		t.Partitions = append(t.Partitions, Partition{
			Index:    i + 1,
			Type:     e[4],
			Bootable: e[0] == 0x80,
			Start:    int64(binary.LittleEndian.Uint32(e[8:12])) * sectorSize,
			Size:     int64(binary.LittleEndian.Uint32(e[12:16])) * sectorSize,
		})
	}
	return t, nil
}

// Partition returns the partition with 1-based index, if it is in use.
func (t *Table) Partition(index int) (Partition, bool) {
	for _, p := range t.Partitions {
		if p.Index == index {
			return p, true
		}
	}
	return Partition{}, false
}

// CardFAT is a card's boot partition as the Pi's boot ROM finds it:
// partition 1 of an MBR table, of a FAT type.
func (t *Table) CardFAT() (Partition, error) {
	if t.GPT {
		return Partition{}, errors.New("the partition table is a GPT: a Raspberry Pi OS card has an MBR one")
	}
	p, ok := t.Partition(1)
	if !ok {
		return Partition{}, errors.New("the MBR has no partition 1: a Raspberry Pi OS card boots from a FAT partition 1")
	}
	if !IsFAT(p.Type) {
		return Partition{}, fmt.Errorf("partition 1 has type 0x%02x, not FAT (0x0b, 0x0c, 0xef): the Pi could not boot it", p.Type)
	}
	return p, nil
}

// readTable reads the MBR strictly, for a base image of the given size:
// partition 1 a FAT, partition 2 Linux, both inside the image, apart.
func readTable(r io.ReaderAt, size int64) (boot, root Partition, diskID uint32, err error) {
	if size < sectorSize {
		return boot, root, 0, fmt.Errorf("%w: the image is %d bytes, smaller than one sector", ErrNoPartitionTable, size)
	}
	t, err := ReadTable(r)
	if err != nil {
		return boot, root, 0, err
	}
	if t.GPT {
		return boot, root, 0, ErrGPT
	}
	boot, hasBoot := t.Partition(1)
	root, hasRoot := t.Partition(2)
	switch {
	case !hasBoot && !hasRoot:
		return boot, root, 0, fmt.Errorf("%w: the MBR lists no partitions", ErrNoPartitionTable)
	case !hasBoot:
		return boot, root, 0, fmt.Errorf("%w: partition 1 does not exist", ErrNoFAT)
	case !IsFAT(boot.Type):
		return boot, root, 0, fmt.Errorf("%w: partition 1 has type 0x%02x; the Pi boots from FAT type 0x0b, 0x0c or 0xef", ErrNoFAT, boot.Type)
	case !hasRoot:
		return boot, root, 0, fmt.Errorf("%w: partition 2 does not exist", ErrNotLinuxRoot)
	case root.Type != typeLinux:
		return boot, root, 0, fmt.Errorf("%w: partition 2 has type 0x%02x, not 0x83 (Linux)", ErrNotLinuxRoot, root.Type)
	}
	for _, p := range []Partition{boot, root} {
		if p.Size == 0 {
			return boot, root, 0, fmt.Errorf("partition %d is empty", p.Index)
		}
		if p.End() > size {
			return boot, root, 0, fmt.Errorf("%w: partition %d ends at byte %d but the image has only %d bytes; "+
				"download or decompress it again", ErrTruncated, p.Index, p.End(), size)
		}
	}
	if boot.End() > root.Start && root.End() > boot.Start {
		return boot, root, 0, fmt.Errorf("partitions 1 and 2 overlap")
	}
	return boot, root, t.DiskID, nil
}
