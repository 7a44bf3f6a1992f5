package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

// TestParseSgdiskOutput parses what the real sgdisk prints for a table it
// wrote into a plain file (no root needed).
func TestParseSgdiskOutput(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("sgdisk"); err != nil {
		t.Skip("sgdisk not installed (apt-get install -y gdisk)")
	}
	img := filepath.Join(t.TempDir(), "ssd.img")
	if err := NewBlankDisk(img, 2<<30); err != nil {
		t.Fatal(err)
	}
	sgdisk := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("sgdisk", append(args, img)...).CombinedOutput()
		if err != nil {
			t.Fatalf("sgdisk %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	sgdisk("--disk-guid=11111111-2222-3333-4444-555555555555",
		"--new=1:2048:+500M", "--typecode=1:EF00", "--change-name=1:boot", "--partition-guid=1:AAAAAAAA-0000-0000-0000-000000000001",
		"--new=2:0:+256M", "--typecode=2:8200", "--change-name=2:swap",
		"--new=3:0:0", "--typecode=3:8300", "--change-name=3:root")

	numbers, guid, err := parseSgdiskPrint(sgdisk("--print"))
	if err != nil {
		t.Fatal(err)
	}
	if guid != "11111111-2222-3333-4444-555555555555" || !reflect.DeepEqual(numbers, []int{1, 2, 3}) {
		t.Errorf("parseSgdiskPrint = %v, %q", numbers, guid)
	}
	p, err := parseSgdiskInfo(sgdisk("--info=1"))
	if err != nil {
		t.Fatal(err)
	}
	want := PartSpec{FirstLBA: 2048, LastLBA: 2048 + 500*2048 - 1, TypeGUID: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
		UniqueGUID: "AAAAAAAA-0000-0000-0000-000000000001", Name: "boot"}
	if p != want {
		t.Errorf("parseSgdiskInfo = %+v, want %+v", p, want)
	}
	if p.Bytes() != 500<<20 {
		t.Errorf("Bytes() = %d, want 500 MiB", p.Bytes())
	}
	p, err = parseSgdiskInfo(sgdisk("--info=2"))
	if err != nil {
		t.Fatal(err)
	}
	if p.TypeGUID != "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" || p.Name != "swap" || p.Bytes() != 256<<20 {
		t.Errorf("swap partition = %+v", p)
	}

	blank := filepath.Join(t.TempDir(), "blank.img")
	if err := NewBlankDisk(blank, 1<<20); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("sgdisk", "--print", blank).CombinedOutput()
	if _, _, err := parseSgdiskPrint(string(out)); err == nil {
		t.Errorf("a blank disk parsed as GPT: %s", out)
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
