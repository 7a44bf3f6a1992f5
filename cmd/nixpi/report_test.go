package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/nixpi/nixpi/firstboot/journal"
)

// cardImage writes a card-shaped image: MBR, FAT32 at 4 MiB, and the given
// files on it (written by a real journal.Writer first, so the bytes are
// what a Pi writes).
func cardImage(t *testing.T, files map[string][]byte) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "card.img")
	const size = 64 << 20
	d, err := diskfs.Create(img, size, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	table := &mbr.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, Partitions: []*mbr.Partition{
		{Index: 1, Type: mbr.Fat32LBA, Start: 8192, Size: size/512 - 8192},
	}}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "bootfs"})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) > 0 {
		if err := fs.Mkdir("/nixpi"); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range files {
		f, err := fs.OpenFile("/nixpi/"+name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	d.Close()
	return img
}

func piJournal(t *testing.T) (jsonl, log []byte) {
	t.Helper()
	dir := t.TempDir()
	w, err := journal.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	for _, e := range []journal.Entry{
		{Step: "preflight", Event: journal.Start, Time: at, Boot: 1, BootID: "a"},
		{Step: "preflight", Event: journal.Done, Time: at, Boot: 1, BootID: "a"},
		{Step: "arm64", Event: journal.Skip, Time: at, Boot: 1, BootID: "a", Msg: "the kernel is 64-bit (aarch64)"},
		{Step: "target", Event: journal.Fail, Time: at, Boot: 1, BootID: "a", Msg: `two USB disks: "/dev/sda", "/dev/sdb"`, Hint: "unplug all but the SSD"},
	} {
		if err := w.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	w.Log("run: /usr/bin/lsblk --json")
	w.Close()
	jsonl, _ = os.ReadFile(filepath.Join(dir, "nixpi/journal.jsonl"))
	log, _ = os.ReadFile(filepath.Join(dir, "nixpi/install.log"))
	// A power cut tore the last write.
	jsonl = append(jsonl, []byte(`{"v":1,"step":"tar`)...)
	return jsonl, log
}

func runCLI(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr, func(string) string { return "" })
	return code, stdout.String(), stderr.String()
}

func fileSum(t *testing.T, path string) [32]byte {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

func TestReportPrintsCardJournal(t *testing.T) {
	jsonl, log := piJournal(t)
	img := cardImage(t, map[string][]byte{"journal.jsonl": jsonl, "install.log": log, "FAILED": []byte("INSTALL STOPPED: step target failed\n")})
	before := fileSum(t, img)

	code, stdout, stderr := runCLI("report", img, "--log")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"card: " + img + ", partition 1, nixpi/journal.jsonl",
		"2026-11-25 03:00:00Z boot 1  preflight  done",
		"arm64      skip   the kernel is 64-bit (aarch64)",
		`FAILED: two USB disks: "/dev/sda", "/dev/sdb"`,
		"fix: unplug all but the SSD",
		"1 unreadable line(s) skipped",
		"nixpi/FAILED:\nINSTALL STOPPED: step target failed",
		"nixpi/install.log:",
		"run: /usr/bin/lsblk --json",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, stdout)
		}
	}
	if fileSum(t, img) != before {
		t.Error("report changed the image")
	}

	code, stdout, _ = runCLI("report", "--json", img)
	if code != exitOK || stdout != string(jsonl) {
		t.Errorf("--json: exit %d, output differs from the card's journal:\n%s", code, stdout)
	}
}

func TestReportErrors(t *testing.T) {
	noJournal := cardImage(t, nil)
	notADisk := filepath.Join(t.TempDir(), "zeros.img")
	if err := os.WriteFile(notADisk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty.img")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	noise := make([]byte, 8192)
	for i := range noise {
		noise[i] = byte(i*131) ^ byte(i>>5)
	}
	randomJournal := cardImage(t, map[string][]byte{"journal.jsonl": noise})
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"report"}, exitUsage, "want exactly one IMAGE or DEVICE"},
		{[]string{"report", "a", "b"}, exitUsage, "got 2 arguments"},
		{[]string{"report", "--bogus", "a"}, exitUsage, "unknown flag"},
		{[]string{"report", filepath.Join(t.TempDir(), "missing.img")}, exitFailure, "no such file"},
		{[]string{"report", noJournal}, exitFailure, "has no nixpi/journal.jsonl on its FAT partition: the Pi has not started the install"},
		{[]string{"report", notADisk}, exitFailure, "report:"},
		{[]string{"report", empty}, exitFailure, "is empty: not a card image"},
		{[]string{"report", "/dev/null"}, exitFailure, `"/dev/null" is a character device: pass a card image file or the card's device`},
		{[]string{"report", randomJournal}, exitFailure, "no line of nixpi/journal.jsonl is a journal entry: the file is damaged or not a nixpi journal"},
	} {
		code, _, stderr := runCLI(c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", c.args, code, stderr, c.code, c.want)
		}
	}
}

// The same from a card whose FAT the real tools made (sfdisk, mkfs.fat,
// mtools), as a Pi's kernel would have written it.
func TestReportReadsToolMadeFAT(t *testing.T) {
	for _, tool := range []string{"sfdisk", "mkfs.fat", "mmd", "mcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install fdisk dosfstools mtools)", tool)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "card.img")
	jsonl, _ := piJournal(t)
	if err := os.WriteFile(filepath.Join(dir, "journal.jsonl"), jsonl, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	for _, argv := range [][]string{
		{"sh", "-c", "echo 'start=8192, type=c' | sfdisk -q " + img},
		{"mkfs.fat", "-F", "32", "--offset", "8192", "-n", "BOOTFS", img},
		{"mmd", "-i", img + "@@4M", "::nixpi"},
		{"mcopy", "-i", img + "@@4M", filepath.Join(dir, "journal.jsonl"), "::nixpi/journal.jsonl"},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	code, stdout, stderr := runCLI("report", img)
	if code != exitOK || !strings.Contains(stdout, `FAILED: two USB disks: "/dev/sda", "/dev/sdb"`) {
		t.Errorf("exit %d\n%s\n%s", code, stdout, stderr)
	}
}

// A 20 MB journal line (damage, or a card made to stop report) is named
// and skipped; report and inspect still show every other entry.
func TestReportAndInspectSkipATooLongLine(t *testing.T) {
	t.Parallel()
	jsonl, _ := piJournal(t)
	lines := strings.SplitAfter(string(jsonl), "\n")
	long := append([]byte(lines[0]), strings.Repeat("x", 20<<20)+"\n"...)
	long = append(long, strings.Join(lines[1:], "")...)
	img := cardImage(t, map[string][]byte{"journal.jsonl": long})
	code, stdout, stderr := runCLI("report", img)
	if code != exitOK {
		t.Fatalf("report: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"journal line 2 is longer than 1048576 bytes (1 MiB), skipped", "preflight  done", "arm64      skip"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = runCLI("inspect", img)
	if !strings.Contains(stdout, "journal line 2 is longer than") || !strings.Contains(stdout, "install journal:") {
		t.Errorf("inspect: exit %d, lacks the long line or the journal:\n%s", code, stdout)
	}
}
