package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/builder/fixture"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/retire"
)

// buildCard builds a card from a generated Raspberry Pi OS-shaped base.
func buildCard(t *testing.T) (string, fixture.Partition) {
	t.Helper()
	base := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, Arch: fixture.ArchArm64, FATSize: fixture.MinFATSize})
	out := filepath.Join(t.TempDir(), "card.img")
	if _, err := Build(context.Background(), testOptions(t, base.Path, out)); err != nil {
		t.Fatal(err)
	}
	return out, base.BootPart
}

// withFAT opens the card's FAT read-write, runs f, and closes it (the
// fixups fsck.fat wants).
func withFAT(t *testing.T, img string, p fixture.Partition, f func(c *FATCard)) {
	t.Helper()
	fh, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	fsys, err := fatfs.Open(fh, p.Start, p.Size)
	if err != nil {
		t.Fatal(err)
	}
	f(NewFATCard(fsys, time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)))
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
}

// fatTree is every file on the FAT as path → size and sha256, read with
// fatfs, plus mtools' recursive listing of the same (an independent reader).
func fatTree(t *testing.T, img string, p fixture.Partition) (map[string]string, string) {
	t.Helper()
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	fsys, err := fatfs.OpenReadOnly(fh, p.Start, p.Size)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(dir string)
	walk = func(dir string) {
		entries, err := fsys.List(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			p := path.Join(dir, e.Name)
			if e.IsDir {
				out[p+"/"] = "dir"
				walk(p)
				continue
			}
			data, err := fsys.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			out[p] = strconv.Itoa(len(data)) + " " + hex.EncodeToString(sum[:])
		}
	}
	walk(".")
	cmd := exec.Command("mdir", "-i", img+"@@"+strconv.FormatInt(p.Start, 10), "-/", "-b", "::/")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	listing, err := cmd.Output()
	if err != nil {
		t.Fatalf("mdir: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(listing)), "\n")
	sort.Strings(lines)
	return out, strings.Join(lines, "\n")
}

func sameTree(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	for p, v := range want {
		if got[p] != v {
			t.Errorf("%s: %s is %q, want %q", what, p, got[p], v)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %s is new", what, p)
		}
	}
}

// A card built from a fixture, retired as the hand-over does it (the
// retire step's own code, on the image's FAT), with a staged EEPROM update
// and a journal; restore-card gives back the built card's files exactly,
// and the journal.
func TestRestoreCardUndoesRetire(t *testing.T) {
	t.Parallel()
	img, p := buildCard(t)
	built, builtListing := fatTree(t, img, p)
	if !strings.Contains(builtListing, "::/overlays/README") || !strings.Contains(builtListing, "::/start4.elf") {
		t.Fatalf("mdir listing of the built card:\n%s", builtListing)
	}

	journalLine := []byte(`{"v":1,"step":"done","event":"done","time":"2026-11-25T03:00:00Z","boot":3}` + "\n")
	staged := []string{cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery}
	upd := stagedUpdate(t)
	withFAT(t, img, p, func(c *FATCard) {
		for _, s := range staged {
			data := []byte("staged " + s + "\n")
			if s == cardpath.EEPROMUpdate {
				data = upd
			}
			if err := c.WriteFile(s, data); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.WriteFile(cardpath.Journal, journalLine); err != nil {
			t.Fatal(err)
		}
		m, err := retire.Retire(c, "0xf41", staged, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Moved) < 8 {
			t.Errorf("retired only %+v", m.Moved)
		}
	})
	buildertest.FsckFAT(t, img, p.Start, p.Size)
	retired, _ := fatTree(t, img, p)
	for _, gone := range []string{"start4.elf", "config.txt", "cmdline.txt", "kernel8.img", "overlays/"} {
		if _, ok := retired[gone]; ok {
			t.Errorf("%s still at the root after retire", gone)
		}
	}
	if retired[cardpath.Retired+"/start4.elf"] != built["start4.elf"] || retired[cardpath.Retired+"/overlays/README"] != built["overlays/README"] {
		t.Error("retired files differ from the built card's")
	}

	in, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	if f := in.FAT; f == nil || f.Retired == nil || f.Retired.BootOrder != "0xf41" ||
		len(f.Staged) != 3 || !strings.Contains(f.StagedConfig, "BOOT_ORDER=0xf41") || !strings.Contains(f.Cmdline, "root=PARTUUID=") || len(in.Problems) > 0 {
		t.Errorf("inspect of the retired card: %+v, problems %v", in.FAT, in.Problems)
	}

	r, err := RestoreCard(img)
	if err != nil {
		t.Fatal(err)
	}
	if in, err := Inspect(img); err != nil || in.FAT.Retired != nil || len(in.FAT.Staged) != 0 {
		t.Errorf("inspect after restore: %+v, %v", in.FAT, err)
	}
	if strings.Join(r.Removed, " ") != "pieeprom.upd pieeprom.sig recovery.bin" || len(r.Moved) != len(r.Manifest.Moved) {
		t.Errorf("RestoreCard = %+v", r)
	}
	buildertest.FsckFAT(t, img, p.Start, p.Size)
	restored, restoredListing := fatTree(t, img, p)
	if got := restored[cardpath.Journal]; got == "" {
		t.Error("restore removed the journal")
	}
	delete(restored, cardpath.Journal)
	sameTree(t, "restored card", built, restored)
	wantLines := append(strings.Split(builtListing, "\n"), "::/"+cardpath.Journal)
	sort.Strings(wantLines)
	if want := strings.Join(wantLines, "\n"); restoredListing != want {
		t.Errorf("mdir listing after restore:\n%s\nwant the built card's plus the journal:\n%s", restoredListing, want)
	}
	if got := string(buildertest.Mtype(t, img, p.Start, "cmdline.txt")); !strings.Contains(got, "root=PARTUUID=") {
		t.Errorf("cmdline.txt after restore: %q", got)
	}
}

// retiredCard is a built card retired as the hand-over does it, with the
// built card's files.
func retiredCard(t *testing.T) (string, fixture.Partition, map[string]string) {
	t.Helper()
	img, p := buildCard(t)
	built, _ := fatTree(t, img, p)
	withFAT(t, img, p, func(c *FATCard) {
		if _, err := retire.Retire(c, "0xf41", nil, nil); err != nil {
			t.Fatal(err)
		}
	})
	return img, p, built
}

// A restore cut off after FATCard's copy of a file and before its remove
// left the file at the root and under nixpi/retired/: restore-card again
// finishes it.
func TestRestoreCardFinishesAnInterruptedRestore(t *testing.T) {
	t.Parallel()
	img, p, built := retiredCard(t)
	withFAT(t, img, p, func(c *FATCard) {
		for _, name := range []string{"kernel8.img", "overlays/README"} {
			data, err := c.ReadFile(cardpath.Retired + "/" + name)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.MkdirAll(path.Dir(name)); err != nil {
				t.Fatal(err)
			}
			if err := c.WriteFile(name, data); err != nil {
				t.Fatal(err)
			}
		}
	})
	if _, err := RestoreCard(img); err != nil {
		t.Fatal(err)
	}
	restored, _ := fatTree(t, img, p)
	sameTree(t, "card restored after an interrupted restore", built, restored)
	buildertest.FsckFAT(t, img, p.Start, p.Size)
}

// retired.json is data from the card: a staged name nixpi does not stage
// (the journal) is refused, the card byte for byte untouched.
func TestRestoreCardRefusesAStagedNameNixpiDoesNotStage(t *testing.T) {
	t.Parallel()
	img, p, _ := retiredCard(t)
	withFAT(t, img, p, func(c *FATCard) {
		m, err := retire.ReadManifest(c)
		if err != nil {
			t.Fatal(err)
		}
		m.Staged = []string{cardpath.EEPROMUpdate, cardpath.Journal}
		data, _ := json.Marshal(m)
		if err := c.WriteFile(cardpath.RetiredManifest, data); err != nil {
			t.Fatal(err)
		}
	})
	before := buildertest.FileSHA256(t, img)
	_, err := RestoreCard(img)
	if err == nil || !strings.Contains(err.Error(), `lists "nixpi/journal.jsonl" as a staged EEPROM update file`) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("restore with the journal listed as staged: %v", err)
	}
	if buildertest.FileSHA256(t, img) != before {
		t.Error("the refused restore changed the image")
	}
}

// A card nixpi never retired is refused, byte for byte untouched.
func TestRestoreCardRefusesUnretired(t *testing.T) {
	t.Parallel()
	img, _ := buildCard(t)
	before := buildertest.FileSHA256(t, img)
	_, err := RestoreCard(img)
	if !errors.Is(err, retire.ErrNotRetired) || !strings.Contains(err.Error(), "nixpi did not retire this card") {
		t.Fatalf("err = %v", err)
	}
	if buildertest.FileSHA256(t, img) != before {
		t.Error("the refused restore changed the image")
	}
	if _, err := RestoreCard(filepath.Join(t.TempDir(), "missing.img")); err == nil {
		t.Error("a missing image was accepted")
	}
}

// stagedUpdate is a real Pi 4 bootloader image with BOOT_ORDER=0xf41, as
// the eeprom step stages it.
func stagedUpdate(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "shared", "testdata", "rpi-eeprom", "images", "pieeprom-2023-01-11.bin"))
	if err != nil {
		t.Skipf("real bootloader images not found (see DESIGN.md §3): %v", err)
	}
	im, err := eeprom.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := eeprom.SetKeys(im.Config(), eeprom.Setting{Key: "BOOT_ORDER", Value: "0xf41"})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return im.Bytes()
}

// restore-card on the card's device (a loop device, as a card reader shows
// it): refused while a partition is mounted, whatever name the device is
// given (its node, a symbolic link, a /dev/disk/by-id path) and on the
// image a loop device reads, each time with the card unchanged; done once
// nothing is mounted.
func TestRestoreCardOnLoopDevice(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup and mount (CI runs as root)")
	}
	img, p, built := retiredCard(t)
	run := func(argv ...string) string {
		t.Helper()
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	dev := run("losetup", "--find", "--show", "--partscan", img)
	t.Cleanup(func() { run("losetup", "--detach", dev) })
	p2 := dev + "p2"
	for i := 0; ; i++ {
		if _, err := os.Stat(p2); err == nil {
			break
		}
		if i == 50 {
			t.Fatalf("%s did not appear", p2)
		}
		if i == 5 {
			run("partx", "--update", dev)
		}
		time.Sleep(100 * time.Millisecond)
	}
	link := filepath.Join(t.TempDir(), "card")
	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
	byID := byIDLink(t, dev)
	mnt := t.TempDir()
	run("mount", "-t", "ext4", "-o", "ro,noload", p2, mnt)
	mounted := fmt.Sprintf("%q is mounted at %q", p2, mnt)
	for _, tc := range []struct{ name, path, want string }{
		{"device", dev, mounted},
		{"symbolic link", link, mounted},
		{"by-id path", byID, mounted},
		{"partition", p2, fmt.Sprintf("is partition 2 of %q: restore-card takes the whole card, pass %s", dev, dev)},
		{"image a loop device reads", img, fmt.Sprintf("loop device %q reads it", dev)},
	} {
		before := buildertest.FileSHA256(t, img)
		_, err := RestoreCard(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("restore of a mounted card through its %s %s: %v, want it to say %s", tc.name, tc.path, err, tc.want)
		}
		if buildertest.FileSHA256(t, img) != before {
			t.Errorf("the refused restore through the %s changed the card", tc.name)
		}
	}
	run("umount", mnt)
	if _, err := RestoreCard(byID); err != nil {
		t.Fatal(err)
	}
	restored, _ := fatTree(t, img, p)
	sameTree(t, "card restored on its device", built, restored)
	buildertest.FsckFAT(t, img, p.Start, p.Size)
}

// byIDLink is a /dev/disk/by-id name for dev, as udev would make one,
// removed at cleanup (with the directories it made).
func byIDLink(t *testing.T, dev string) string {
	t.Helper()
	var made []string
	for _, d := range []string{"/dev/disk", "/dev/disk/by-id"} {
		if err := os.Mkdir(d, 0o755); err == nil {
			made = append(made, d)
		} else if !errors.Is(err, os.ErrExist) {
			t.Fatal(err)
		}
	}
	link := fmt.Sprintf("/dev/disk/by-id/usb-nixpi_test_card_%d-%s-0:0", os.Getpid(), filepath.Base(dev))
	if err := os.Symlink("../../"+filepath.Base(dev), link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(link)
		for i := len(made) - 1; i >= 0; i-- {
			os.Remove(made[i]) // only when empty: another test's link stays
		}
	})
	return link
}
