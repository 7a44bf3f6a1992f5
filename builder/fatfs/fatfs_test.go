package fatfs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/builder/fixture"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian packages dosfstools, mtools, e2fsprogs, fdisk): %v", tool, err)
		}
	}
}

// newFixture writes a fixture image and returns its path and FAT partition.
func newFixture(t *testing.T, opts fixture.Options) (string, fixture.Partition) {
	t.Helper()
	needTools(t, "mkfs.fat", "mcopy", "mkfs.ext4", "sfdisk", "debugfs", "fsck.fat", "mtype")
	img := filepath.Join(t.TempDir(), "base.img")
	if opts.FATSize == 0 {
		opts.FATSize = 128 << 20
	}
	got, err := fixture.WriteContext(context.Background(), img, opts)
	if err != nil {
		t.Fatal(err)
	}
	return img, got.BootPart
}

func openFAT(t *testing.T, img string, p fixture.Partition) (*os.File, *fatfs.FS) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fs, err := fatfs.Open(f, p.Start, p.Size)
	if err != nil {
		t.Fatal(err)
	}
	return f, fs
}

// fsckFAT runs `fsck.fat -n` on a copy of the partition (fsck.fat 4.2 has no
// offset option) and fails the test unless it exits 0.
func fsckFAT(t *testing.T, img string, p fixture.Partition) {
	t.Helper()
	part := filepath.Join(t.TempDir(), "part.fat")
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(part)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, io.NewSectionReader(src, p.Start, p.Size)); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	out, err := exec.Command("fsck.fat", "-n", "-V", part).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.fat -n: %v\n%s", err, out)
	}
}

// mtools runs an mtools command against the image's FAT and returns stdout.
func mtools(t *testing.T, img string, p fixture.Partition, args ...string) string {
	t.Helper()
	drive := fmt.Sprintf("%s@@%d", img, p.Start)
	cmd := exec.Command(args[0], append([]string{"-i", drive}, args[1:]...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func TestWriteFilesAndDirs(t *testing.T) {
	t.Parallel()
	img, part := newFixture(t, fixture.Options{})
	_, fs := openFAT(t, img, part)

	big := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640000 bytes, many clusters
	if err := fs.MkdirAll("nixpi", epoch); err != nil {
		t.Fatal(err)
	}
	if err := fs.MkdirAll("/nixpi/deep/er", epoch); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"nixpi/nixpi-firstboot":  big,
		"nixpi/payload.cpio":     []byte("070701 payload"),
		"nixpi/nixpi.toml":       []byte("schema = 1\n"),
		"nixpi/manifest.json":    []byte("{}\n"),
		"nixpi/deep/er/leaf.txt": []byte("leaf\n"),
		"nixpi/empty":            nil,
		"ssh":                    nil,
	}
	for name, data := range files {
		if err := fs.WriteFile(name, data, epoch); err != nil {
			t.Fatalf("WriteFile %s: %v", name, err)
		}
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	fsckFAT(t, img, part)

	for name, data := range files {
		got := mtools(t, img, part, "mtype", "::"+name)
		if got != string(data) {
			t.Errorf("mtype %s: got %d bytes, want %d", name, len(got), len(data))
		}
	}
	listing := mtools(t, img, part, "mdir", "-a", "::nixpi")
	for _, want := range []string{"nixpi-firstboot", "payload.cpio", "manifest.json", "2026-01-02"} {
		if !strings.Contains(listing, want) {
			t.Errorf("mdir ::nixpi lacks %q:\n%s", want, listing)
		}
	}

	// Reading back through fatfs itself, on a fresh read-only open.
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ro, err := fatfs.OpenReadOnly(f, part.Start, part.Size)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		got, err := ro.ReadFile(name)
		if err != nil {
			t.Fatalf("ReadFile %s: %v", name, err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("ReadFile %s: got %d bytes, want %d", name, len(got), len(data))
		}
	}
	st, err := ro.Stat("nixpi/nixpi-firstboot")
	if err != nil {
		t.Fatal(err)
	}
	if !st.ModTime.Equal(epoch) {
		t.Errorf("mtime %s, want %s", st.ModTime, epoch)
	}
	if err := ro.WriteFile("x", []byte("x"), epoch); err == nil {
		t.Error("WriteFile on a read-only FS succeeded")
	}
}

func TestRewriteExistingFile(t *testing.T) {
	t.Parallel()
	img, part := newFixture(t, fixture.Options{Layout: fixture.LayoutBookworm})
	outsideBefore := hashOutside(t, img, part)
	_, fs := openFAT(t, img, part)
	before, err := fs.FreeBytes()
	if err != nil {
		t.Fatal(err)
	}
	old, err := fs.ReadFile("cmdline.txt")
	if err != nil {
		t.Fatal(err)
	}
	longer := strings.TrimSpace(string(old)) + " systemd.run=/boot/firmware/nixpi/nixpi-firstboot systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n"
	if err := fs.WriteFile("cmdline.txt", []byte(longer), epoch); err != nil {
		t.Fatal(err)
	}
	// Shrink a multi-cluster file to a few bytes: the tail clusters must be freed.
	if err := fs.WriteFile("kernel8.img", []byte("short"), epoch); err != nil {
		t.Fatal(err)
	}
	// Remove a file: go-diskfs leaks its clusters; Close frees them.
	if err := fs.Remove("bcm2712-rpi-5-b.dtb"); err != nil {
		t.Fatal(err)
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	fsckFAT(t, img, part)
	if hashOutside(t, img, part) != outsideBefore {
		t.Error("bytes outside the FAT partition changed")
	}
	if got := mtools(t, img, part, "mtype", "::cmdline.txt"); got != longer {
		t.Errorf("cmdline.txt = %q, want %q", got, longer)
	}
	if got := mtools(t, img, part, "mtype", "::kernel8.img"); got != "short" {
		t.Errorf("kernel8.img = %q", got)
	}
	if strings.Contains(mtools(t, img, part, "mdir", "-b", "::"), "bcm2712") {
		t.Error("removed file still listed")
	}
	f, _ := os.Open(img)
	defer f.Close()
	ro, err := fatfs.OpenReadOnly(f, part.Start, part.Size)
	if err != nil {
		t.Fatal(err)
	}
	after, err := ro.FreeBytes()
	if err != nil {
		t.Fatal(err)
	}
	// kernel8.img went from 16384 bytes (8 clusters of 2 KiB... or more
	// clusters on smaller cluster sizes) to one cluster, the dtb freed its
	// clusters: free space must have grown.
	if after <= before {
		t.Errorf("free bytes %d after, %d before: clusters leaked", after, before)
	}
}

func TestReproducible(t *testing.T) {
	t.Parallel()
	img, part := newFixture(t, fixture.Options{Arch: fixture.ArchArmhf})
	base, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(name string) [32]byte {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, base, 0o644); err != nil {
			t.Fatal(err)
		}
		_, fs := openFAT(t, p, part)
		if err := fs.MkdirAll("nixpi", epoch); err != nil {
			t.Fatal(err)
		}
		if err := fs.WriteFile("nixpi/nixpi.toml", []byte("x = 1\n"), epoch); err != nil {
			t.Fatal(err)
		}
		if err := fs.WriteFile("cmdline.txt", []byte("console=tty1 root=PARTUUID=01234567-02\n"), epoch); err != nil {
			t.Fatal(err)
		}
		if err := fs.Close(); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(data)
	}
	a := edit("a.img")
	time.Sleep(2100 * time.Millisecond) // a different clock second pair, which FAT times would show
	b := edit("b.img")
	if a != b {
		t.Fatalf("same edits gave different images: %x vs %x", a, b)
	}
}

// TestShortNameClashes writes names go-diskfs maps to the same 8.3 name;
// Close gives the later one a numeric tail, so fsck.fat finds no duplicate.
func TestShortNameClashes(t *testing.T) {
	t.Parallel()
	img, part := newFixture(t, fixture.Options{FATSize: 512 << 20})
	_, fs := openFAT(t, img, part)
	if err := fs.MkdirAll("nixpi", epoch); err != nil {
		t.Fatal(err)
	}
	names := []string{"nixpi/manifest.json", "nixpi/manifest.jsonl", "nixpi/manifest.jsonx", "nixpi/a b.txt", "nixpi/über.txt"}
	for _, n := range names {
		if err := fs.WriteFile(n, []byte("content of "+n), epoch); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	fsckFAT(t, img, part)
	for _, n := range names {
		if got := mtools(t, img, part, "mtype", "::"+n); got != "content of "+n {
			t.Errorf("mtype %s = %q", n, got)
		}
	}
	if listing := mtools(t, img, part, "mdir", "::nixpi"); !strings.Contains(listing, "MANIFE~1 JSO") || !strings.Contains(listing, "MANIFE~2 JSO") {
		t.Errorf("no numeric tails in:\n%s", listing)
	}

	// "ab.txt" is the 8.3 alias of "a b.txt": FAT lookups (Linux's too)
	// match it, so writing it replaces that file, whole.
	_, fs = openFAT(t, img, part)
	if err := fs.WriteFile("nixpi/ab.txt", []byte("short"), epoch); err != nil {
		t.Fatal(err)
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	fsckFAT(t, img, part)
	if got := mtools(t, img, part, "mtype", "::nixpi/a b.txt"); got != "short" {
		t.Errorf("a b.txt after writing its alias = %q, want \"short\"", got)
	}
}

// TestReplaceEmptyFile writes into a file that exists with no data and no
// cluster (what mtools and Linux make for an empty file): go-diskfs alone
// would lose the data.
func TestReplaceEmptyFile(t *testing.T) {
	t.Parallel()
	img, part := newFixture(t, fixture.Options{})
	empty := filepath.Join(t.TempDir(), "ssh")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mtools(t, img, part, "mcopy", empty, "::ssh")
	_, fs := openFAT(t, img, part)
	if e, err := fs.Stat("ssh"); err != nil || e.Size != 0 {
		t.Fatalf("mcopy'd empty file: %+v %v", e, err)
	}
	if err := fs.WriteFile("ssh", []byte("now with data\n"), epoch); err != nil {
		t.Fatal(err)
	}
	// And the other way: a file with data becomes empty.
	if err := fs.WriteFile("issue.txt", nil, epoch); err != nil {
		t.Fatal(err)
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	fsckFAT(t, img, part)
	if got := mtools(t, img, part, "mtype", "::ssh"); got != "now with data\n" {
		t.Errorf("ssh = %q", got)
	}
	if got := mtools(t, img, part, "mtype", "::issue.txt"); got != "" {
		t.Errorf("issue.txt = %q, want empty", got)
	}
}

// TestLargeDirectory grows a directory over many clusters and removes
// entries from it, which makes go-diskfs shrink and regrow its chain.
func TestLargeDirectory(t *testing.T) {
	t.Parallel()
	img, part := newFixture(t, fixture.Options{})
	_, fs := openFAT(t, img, part)
	if err := fs.MkdirAll("many", epoch); err != nil {
		t.Fatal(err)
	}
	const n = 150
	name := func(i int) string { return fmt.Sprintf("many/a-long-file-name-number-%03d.data", i) }
	for i := 0; i < n; i++ {
		if err := fs.WriteFile(name(i), bytes.Repeat([]byte{byte(i)}, 100*i), epoch); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 3 {
		if err := fs.Remove(name(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	fsckFAT(t, img, part)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ro, err := fatfs.OpenReadOnly(f, part.Start, part.Size)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ro.List("many")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n-n/3 {
		t.Errorf("%d entries, want %d", len(entries), n-n/3)
	}
	for i := 1; i < n; i += 3 {
		got, err := ro.ReadFile(name(i))
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 100*i)) {
			t.Errorf("%s: %d bytes, %v", name(i), len(got), err)
		}
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	img, part := newFixture(t, fixture.Options{})
	_, fs := openFAT(t, img, part)
	if fs.Label() != "bootfs" {
		t.Errorf("label %q", fs.Label())
	}
	check := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", what, err, want)
		}
	}
	check("write into a missing directory", fs.WriteFile("nope/x", []byte("x"), epoch), "parent directory")
	if err := fs.WriteFile("nope/x", []byte("x"), epoch); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("missing parent error %v is not ErrNotExist", err)
	}
	check("mkdir over a file", fs.MkdirAll("config.txt/sub", epoch), "is a file")
	check("write over a directory", fs.WriteFile("overlays", []byte("x"), epoch), "is a directory")
	check("escape", fs.WriteFile("../x", []byte("x"), epoch), "leaves the filesystem")
	check("old time", fs.WriteFile("x", []byte("x"), time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)), "1980-2107")
	check("remove missing", fs.Remove("nope"), "does not exist")
	_, err := fs.ReadFile("overlays")
	check("read a directory", err, "is a directory")
	_, err = fs.List("config.txt")
	check("list a file", err, "not a directory")
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	check("write after close", fs.WriteFile("x", []byte("x"), epoch), "closed")

	// Not a FAT32 partition: the ext4 root.
	f, _ := os.Open(img)
	defer f.Close()
	if _, err := fatfs.OpenReadOnly(f, part.Start+part.Size, 64<<20); err == nil {
		t.Error("opened the ext4 partition as FAT")
	}
	fsckFAT(t, img, part)
}

// TestOnLoopDevice edits the FAT through the partition node of a loop
// device, a real block device, and checks it with fsck.fat on that device.
func TestOnLoopDevice(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices (CI runs as root)")
	}
	needTools(t, "losetup", "partx")
	img, part := newFixture(t, fixture.Options{Layout: fixture.LayoutBookworm})
	out, err := exec.Command("losetup", "-f", "--show", "-P", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	p1 := loop + "p1"
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(p1); err == nil {
			break
		}
		_ = exec.Command("partx", "-a", loop).Run()
		time.Sleep(100 * time.Millisecond)
	}
	dev, err := os.OpenFile(p1, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	fs, err := fatfs.Open(dev, 0, part.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.MkdirAll("nixpi", epoch); err != nil {
		t.Fatal(err)
	}
	if err := fs.WriteFile("nixpi/nixpi.toml", []byte("[target]\ndisk = \"auto\"\n"), epoch); err != nil {
		t.Fatal(err)
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dev.Sync(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("fsck.fat", "-n", p1).CombinedOutput(); err != nil {
		t.Fatalf("fsck.fat -n %s: %v\n%s", p1, err, out)
	}
	if got := mtools(t, img, part, "mtype", "::nixpi/nixpi.toml"); got != "[target]\ndisk = \"auto\"\n" {
		t.Errorf("through the image file: %q", got)
	}
}

// hashOutside hashes everything in the image but the FAT partition: the
// partition table and the root filesystem, which edits must not touch.
func hashOutside(t *testing.T, img string, p fixture.Partition) [32]byte {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, p.Start)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(h, io.NewSectionReader(f, p.Start+p.Size, st.Size()-p.Start-p.Size)); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// TestReadFileAtMost refuses a file larger than the bound before reading it,
// and reads one within it.
func TestReadFileAtMost(t *testing.T) {
	t.Parallel()
	img, part := newFixture(t, fixture.Options{})
	big := filepath.Join(t.TempDir(), "journal.jsonl")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 4097), 0o644); err != nil {
		t.Fatal(err)
	}
	mtools(t, img, part, "mcopy", big, "::journal.jsonl")
	_, fs := openFAT(t, img, part)
	if _, err := fs.ReadFileAtMost("journal.jsonl", 4096); err == nil || !strings.Contains(err.Error(), "is 4097 bytes, more than the 4096") {
		t.Errorf("a file over the bound: %v", err)
	}
	if b, err := fs.ReadFileAtMost("journal.jsonl", 4097); err != nil || len(b) != 4097 {
		t.Errorf("a file at the bound: %d bytes, %v", len(b), err)
	}
	if _, err := fs.ReadFileAtMost("missing", 1); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("a missing file: %v, want ErrNotExist", err)
	}
}
