package baseimage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzReadTable feeds first sectors to both readings of the MBR: the
// lenient one never fails on a sector with the boot signature, and what the
// strict one accepts is what the lenient one read. The sector is built from
// its parts (the four entries, the disk ID, the signature, how much of it
// there is), so that inputs stay small and quick to minimise.
func FuzzReadTable(f *testing.F) {
	f.Fuzz(func(t *testing.T, entries []byte, diskID uint32, signed bool, length uint16) {
		sector := make([]byte, sectorSize)
		binary.LittleEndian.PutUint32(sector[440:], diskID)
		copy(sector[446:510], entries)
		if signed {
			sector[510], sector[511] = 0x55, 0xaa
		}
		sector = sector[:min(int(length), sectorSize)]
		table, err := ReadTable(bytes.NewReader(sector))
		if err != nil {
			if len(sector) >= sectorSize && sector[510] == 0x55 && sector[511] == 0xaa {
				t.Fatalf("a sector with the boot signature: %v", err)
			}
			if !errors.Is(err, ErrNoPartitionTable) {
				t.Fatalf("no table, but not ErrNoPartitionTable: %v", err)
			}
			return
		}
		for i, p := range table.Partitions {
			if p.Index < 1 || p.Index > 4 || (i > 0 && p.Index <= table.Partitions[i-1].Index) || p.Type == 0 {
				t.Fatalf("partition %+v out of order or not in use", p)
			}
			if p.Start%sectorSize != 0 || p.Size%sectorSize != 0 || p.Start < 0 || p.Size < 0 {
				t.Fatalf("partition %+v not in whole sectors", p)
			}
		}
		size := int64(len(sector)) + 1<<30
		boot, root, id, err := readTable(bytes.NewReader(sector), size)
		if err != nil {
			return
		}
		p1, _ := table.Partition(1)
		p2, _ := table.Partition(2)
		if table.GPT || boot != p1 || root != p2 || id != diskID || table.DiskID != diskID || !IsFAT(boot.Type) || root.Type != typeLinux {
			t.Fatalf("strict reading %+v %+v %08x differs from the table %+v", boot, root, id, table)
		}
		if boot.End() > size || root.End() > size || (boot.End() > root.Start && root.End() > boot.Start) {
			t.Fatalf("strict reading accepted partitions outside the image or overlapping: %+v %+v", boot, root)
		}
	})
}
