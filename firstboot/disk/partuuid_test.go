package disk

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fakeBlock lays out sysfs and /dev under root as the kernel does: each
// partition a directory below its disk, /sys/class/block links to both.
func fakeBlock(t *testing.T, root, disk string, sig uint32, mbr bool, parts ...int) {
	t.Helper()
	devDir := filepath.Join(root, "sys", "devices", "virtual", "block", disk)
	if err := os.MkdirAll(devDir, 0o755); err != nil {
		t.Fatal(err)
	}
	class := filepath.Join(root, "sys", "class", "block")
	os.MkdirAll(class, 0o755)
	if err := os.Symlink(devDir, filepath.Join(class, disk)); err != nil {
		t.Fatal(err)
	}
	for _, n := range parts {
		name := PartitionNode(disk, n)
		pdir := filepath.Join(devDir, name)
		os.MkdirAll(pdir, 0o755)
		os.WriteFile(filepath.Join(pdir, "partition"), []byte{byte('0' + n), '\n'}, 0o644)
		if err := os.Symlink(pdir, filepath.Join(class, name)); err != nil {
			t.Fatal(err)
		}
	}
	sector := make([]byte, 4096)
	binary.LittleEndian.PutUint32(sector[440:], sig)
	if mbr {
		sector[510], sector[511] = 0x55, 0xaa
	}
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "dev", disk), sector, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFindMBRPartition(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	fakeBlock(t, root, "sda", 0x5eed0001, true, 1, 2, 3)  // the SSD (its protective MBR)
	fakeBlock(t, root, "mmcblk0", 0x1234abcd, true, 1, 2) // the card
	fakeBlock(t, root, "sdb", 0x1234abcd, false, 1)       // no boot signature: not an MBR
	for partuuid, want := range map[string]string{
		"1234abcd-01": "/dev/mmcblk0p1",
		"1234ABCD-02": "/dev/mmcblk0p2",
		"5eed0001-03": "/dev/sda3",
	} {
		got, err := FindMBRPartition(root, partuuid)
		if err != nil || got != want {
			t.Errorf("FindMBRPartition(%s) = %q, %v; want %q", partuuid, got, err, want)
		}
	}
	if _, err := FindMBRPartition(root, "1234abcd-03"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a partition number the card lacks: %v", err)
	}
	if _, err := FindMBRPartition(root, "0fb1c3a4-5e6f-4a1b-8c2d-3e4f5a6b7c8d"); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("a GPT PARTUUID: %v, want a refusal", err)
	}
}
