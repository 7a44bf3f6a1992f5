package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/system"
)

// TestInspectBothTables: the Inspector reads a GPT and an MBR SSD the way
// the disk steps read theirs back (sfdisk --json), with the filesystems on
// them, through a real loop device. It needs root.
func TestInspectBothTables(t *testing.T) {
	t.Parallel()
	tools := DefaultTools()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices)")
	}
	if err := Check(tools.Sgdisk, tools.Sfdisk, tools.MkfsFAT, tools.MkfsExt4, tools.FsckFAT, tools.Blkid, tools.Losetup); err != nil {
		t.Skip(err)
	}
	cmd := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
	}
	for _, table := range []string{"gpt", "dos"} {
		img := filepath.Join(t.TempDir(), table+".img")
		if err := NewBlankDisk(img, 256<<20); err != nil {
			t.Fatal(err)
		}
		if table == "gpt" {
			cmd(tools.Sgdisk, "--disk-guid=11111111-2222-3333-4444-555555555555",
				"--new=1:2048:+64M", "--typecode=1:EF00", "--change-name=1:boot", "--partition-guid=1:AAAAAAAA-0000-0000-0000-000000000001",
				"--new=2:0:0", "--typecode=2:8300", "--change-name=2:root", img)
		} else {
			script := "label: dos\nlabel-id: 0x0badcafe\nstart=2048, size=131072, type=c\nstart=133120, type=83\n"
			c := exec.Command(tools.Sfdisk, img)
			c.Stdin = strings.NewReader(script)
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("sfdisk: %v: %s", err, out)
			}
		}
		cmd(tools.MkfsFAT, "-F", "32", "-n", "boot", "-i", "DE54988E", "--offset=2048", img, "65536")
		cmd(tools.MkfsExt4, "-q", "-F", "-L", "root", "-U", "53fb4001-0000-4000-8000-000000000001", "-E", fmt.Sprintf("offset=%d", 133120*512), img, "64M")
		in := &Inspector{Run: system.ExecRunner{}, Tools: tools, TempDir: t.TempDir()}
		spec, err := in.Inspect(context.Background(), img)
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if spec.Label != table || spec.SectorSize != 512 || len(spec.Partitions) != 2 || spec.FATCheck != "clean" {
			t.Fatalf("%s: spec:\n%s", table, spec)
		}
		boot, root := spec.Partitions[0], spec.Partitions[1]
		if boot.Number != 1 || boot.Start != 2048 || boot.Size != 131072 || boot.FSType != "vfat" || boot.Label != "boot" || boot.FSUUID != "DE54-988E" {
			t.Errorf("%s: boot partition %+v", table, boot)
		}
		if root.Number != 2 || root.Start != 133120 || root.FSType != "ext4" || root.Label != "root" || root.FSUUID != "53fb4001-0000-4000-8000-000000000001" {
			t.Errorf("%s: root partition %+v", table, root)
		}
		want := map[string][4]string{
			"gpt": {"11111111-2222-3333-4444-555555555555", disk.GPTTypeESP, "AAAAAAAA-0000-0000-0000-000000000001", "boot"},
			"dos": {"0x0badcafe", "c", "", ""},
		}[table]
		if got := [4]string{spec.ID, boot.Type, boot.UUID, boot.Name}; !strings.EqualFold(fmt.Sprint(got), fmt.Sprint(want)) {
			t.Errorf("%s: disk id, boot type, GUID, name %q, want %q", table, got, want)
		}
	}
}

func TestPartitionNumber(t *testing.T) {
	t.Parallel()
	if n, err := partitionNumber("/dev/loop3", "/dev/loop3p12"); n != 12 || err != nil {
		t.Errorf("got %d, %v", n, err)
	}
	for _, node := range []string{"/dev/loop30p1", "/dev/loop4p1", "/dev/loop3", "/dev/loop3px"} {
		if n, err := partitionNumber("/dev/loop3", node); err == nil {
			t.Errorf("%s: got %d, want an error", node, n)
		}
	}
}

func TestParseSubvolumeList(t *testing.T) {
	t.Parallel()
	out := "ID 256 gen 9 top level 5 path @\nID 257 gen 9 top level 5 path @nix\nID 258 gen 10 top level 5 path @home\n"
	if got, want := parseSubvolumeList(out), []string{"@", "@home", "@nix"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := parseSubvolumeList(""); got != nil {
		t.Errorf("empty list: got %v", got)
	}
}

func TestSHA256FileSparse(t *testing.T) {
	t.Parallel()
	img := filepath.Join(t.TempDir(), "d.img")
	if err := NewBlankDisk(img, 1<<20); err != nil {
		t.Fatal(err)
	}
	sum, err := SHA256File(img)
	if err != nil {
		t.Fatal(err)
	}
	// sha256 of 1 MiB of zeros.
	if sum != "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58" {
		t.Errorf("sha256 = %s", sum)
	}
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{1}, 4096)
	f.Close()
	if sum2, _ := SHA256File(img); sum2 == sum {
		t.Error("a changed byte did not change the hash")
	}
}
