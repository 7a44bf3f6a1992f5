package baseimage

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/diskfs/go-diskfs/partition/mbr"
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

// readTable reads the MBR and returns partitions 1 and 2.
func readTable(r io.ReaderAt, size int64) (boot, root Partition, diskID uint32, err error) {
	if size < sectorSize {
		return boot, root, 0, fmt.Errorf("%w: the image is %d bytes, smaller than one sector", ErrNoPartitionTable, size)
	}
	sector := make([]byte, sectorSize)
	if _, err := r.ReadAt(sector, 0); err != nil {
		return boot, root, 0, fmt.Errorf("read the first sector: %w", err)
	}
	if sector[510] != 0x55 || sector[511] != 0xaa {
		return boot, root, 0, fmt.Errorf("%w: no boot signature 55 aa in the first sector (found %02x %02x); "+
			"is this a disk image? A compressed file must be decompressed first", ErrNoPartitionTable, sector[510], sector[511])
	}
	table, err := mbr.Read(storage(r, size), sectorSize, sectorSize)
	if err != nil {
		return boot, root, 0, fmt.Errorf("%w: unreadable MBR: %v", ErrNoPartitionTable, err)
	}
	parts := make([]Partition, 0, 4)
	for i, p := range table.Partitions {
		if p.Type == typeGPT {
			return boot, root, 0, ErrGPT
		}
		parts = append(parts, Partition{Index: i + 1, Start: int64(p.Start) * sectorSize, Size: int64(p.Size) * sectorSize, Type: byte(p.Type)})
	}
	if parts[0].Type == 0 && parts[1].Type == 0 {
		return boot, root, 0, fmt.Errorf("%w: the MBR lists no partitions", ErrNoPartitionTable)
	}
	boot, root = parts[0], parts[1]
	switch boot.Type {
	case typeFAT32CHS, typeFAT32LBA, typeEFI:
	case 0:
		return boot, root, 0, fmt.Errorf("%w: partition 1 does not exist", ErrNoFAT)
	default:
		return boot, root, 0, fmt.Errorf("%w: partition 1 has type 0x%02x; the Pi boots from FAT type 0x0b, 0x0c or 0xef", ErrNoFAT, boot.Type)
	}
	switch root.Type {
	case typeLinux:
	case 0:
		return boot, root, 0, fmt.Errorf("%w: partition 2 does not exist", ErrNotLinuxRoot)
	default:
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
	return boot, root, binary.LittleEndian.Uint32(sector[440:444]), nil
}
