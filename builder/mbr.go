package builder

import (
	"encoding/binary"
	"fmt"
	"io"
)

// mbrPartition is one primary entry of an MBR partition table.
type mbrPartition struct {
	Index    int // 1-based
	Type     byte
	Bootable bool
	Start    int64 // bytes
	Size     int64 // bytes
}

// mbrTable is a partition table as inspect reads it: leniently, so that a
// damaged image still shows what it has (baseimage validates strictly).
type mbrTable struct {
	Kind       string // "mbr", or "gpt" for a protective MBR
	DiskID     string
	Partitions []mbrPartition
}

const sectorSize = 512

// readMBR reads the MBR of a disk image; a GPT image is reported as such.
func readMBR(r io.ReaderAt) (*mbrTable, error) {
	var sector [sectorSize]byte
	if _, err := r.ReadAt(sector[:], 0); err != nil {
		return nil, fmt.Errorf("read the first sector: %w", err)
	}
	if sector[510] != 0x55 || sector[511] != 0xaa {
		return nil, fmt.Errorf("no partition table: the first sector lacks the 0x55AA boot signature")
	}
	t := &mbrTable{Kind: "mbr", DiskID: fmt.Sprintf("%08x", binary.LittleEndian.Uint32(sector[440:444]))}
	for i := 0; i < 4; i++ {
		e := sector[446+16*i : 446+16*(i+1)]
		if e[4] == 0 {
			continue
		}
		if e[4] == 0xee {
			t.Kind = "gpt"
		}
		t.Partitions = append(t.Partitions, mbrPartition{
			Index:    i + 1,
			Type:     e[4],
			Bootable: e[0] == 0x80,
			Start:    int64(binary.LittleEndian.Uint32(e[8:12])) * sectorSize,
			Size:     int64(binary.LittleEndian.Uint32(e[12:16])) * sectorSize,
		})
	}
	if t.Kind == "gpt" {
		t.DiskID = "" // the GPT header holds the disk GUID; bytes 440-443 mean nothing
	}
	return t, nil
}

// partition returns the partition with 1-based index, if present.
func (t *mbrTable) partition(index int) (mbrPartition, bool) {
	for _, p := range t.Partitions {
		if p.Index == index {
			return p, true
		}
	}
	return mbrPartition{}, false
}

// partitionTypeName names the MBR partition types nixpi meets.
func partitionTypeName(t byte) string {
	switch t {
	case 0x0b:
		return "FAT32 (CHS)"
	case 0x0c:
		return "FAT32 (LBA)"
	case 0x0e:
		return "FAT16 (LBA)"
	case 0x06:
		return "FAT16"
	case 0xef:
		return "EFI System"
	case 0x83:
		return "Linux"
	case 0x82:
		return "Linux swap"
	case 0xee:
		return "GPT protective"
	case 0x05, 0x0f:
		return "extended"
	}
	return "unknown"
}
