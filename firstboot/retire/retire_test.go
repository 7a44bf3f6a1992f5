package retire

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/cardpath"
)

func card(t *testing.T) (DirCard, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"start4.elf": "s4", "start4x.elf": "s4x", "fixup4.dat": "f4", "config.txt": "[all]\narm_64bit=1\n",
		"cmdline.txt": "console=tty1 root=PARTUUID=abcd-02\n", "kernel8.img": "k8", "bcm2711-rpi-4-b.dtb": "dtb",
		"overlays/README": "r", "overlays/sub/x.dtbo": "x", "vmlinuz-6.12.0-rpi": "vm", "initrd.img-6.12.0-rpi": "ird",
		"issue.txt": "issue", "user-data": "#cloud-config\n", "nixpi/journal.jsonl": "{}\n",
	}
	for p, data := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return DirCard(dir), files
}

func contents(t *testing.T, c DirCard) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(string(c), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(string(c), p)
		out[filepath.ToSlash(rel)] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRetireAndRestore(t *testing.T) {
	t.Parallel()
	c, orig := card(t)
	staged := []string{cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery}
	for _, s := range staged {
		if err := c.WriteFile(s, []byte("staged "+s)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := Retire(c, "0xf41", staged, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := Bootable(c); ok {
		t.Error("retired card is still bootable")
	}
	got := contents(t, c)
	for _, stays := range []string{"issue.txt", "user-data", "nixpi/journal.jsonl", "pieeprom.upd", "recovery.bin"} {
		if _, ok := got[stays]; !ok {
			t.Errorf("%s moved", stays)
		}
	}
	if got["nixpi/retired/overlays/sub/x.dtbo"] != "x" || got["nixpi/retired/vmlinuz-6.12.0-rpi"] != "vm" {
		t.Errorf("retired tree %v", got)
	}
	var names []string
	for _, f := range m.Moved {
		names = append(names, f.Name)
		if f.Name == "overlays" && (f.Files != 2 || f.Size != 2 || !f.Dir) {
			t.Errorf("overlays entry %+v", f)
		}
		if sum := sha256.Sum256([]byte("k8")); f.Name == "kernel8.img" && (f.SHA256 != hex.EncodeToString(sum[:]) || f.Size != 2) {
			t.Errorf("kernel8.img entry %+v", f)
		}
	}
	if strings.Join(names[:3], " ") != "start4.elf start4x.elf config.txt" {
		t.Errorf("move order %v", names)
	}

	// The boot ROM flashed the update: recovery.bin renamed itself.
	if err := c.Rename(cardpath.Recovery, cardpath.RecoveryDone); err != nil {
		t.Fatal(err)
	}
	r, err := Restore(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Moved) != len(m.Moved) || strings.Join(r.Removed, " ") != "pieeprom.upd pieeprom.sig RECOVERY.000" {
		t.Errorf("Restore = %+v", r)
	}
	after := contents(t, c)
	if len(after) != len(orig) {
		t.Errorf("restored card has %d files, the original %d: %v", len(after), len(orig), keys(after))
	}
	for p, data := range orig {
		if after[p] != data {
			t.Errorf("restored %s = %q, want %q", p, after[p], data)
		}
	}
	if _, err := os.Stat(filepath.Join(string(c), cardpath.Retired)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind: %v", cardpath.Retired, err)
	}
	// Again: the card is no longer retired.
	if _, err := Restore(c); !errors.Is(err, ErrNotRetired) {
		t.Errorf("second Restore: %v", err)
	}
}

func TestRestoreRefusesConflictUntouched(t *testing.T) {
	t.Parallel()
	c, _ := card(t)
	if _, err := Retire(c, "0xf41", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFile("kernel8.img", []byte("a new kernel")); err != nil {
		t.Fatal(err)
	}
	before := contents(t, c)
	_, err := Restore(c)
	if err == nil || !strings.Contains(err.Error(), "kernel8.img") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("err = %v", err)
	}
	after := contents(t, c)
	if len(after) != len(before) {
		t.Error("the refused restore changed the card")
	}
	for p, d := range before {
		if after[p] != d {
			t.Errorf("the refused restore changed %s", p)
		}
	}
}

func TestReadManifestRefusesBadNames(t *testing.T) {
	t.Parallel()
	c := DirCard(t.TempDir())
	if err := c.MkdirAll(cardpath.Dir); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"v":1,"moved":[{"name":"../x"}]}`, `{"v":1,"moved":[{"name":"nixpi/journal.jsonl"}]}`, `{"v":9,"moved":[]}`, `{`} {
		if err := c.WriteFile(cardpath.RetiredManifest, []byte(body)); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadManifest(c); err == nil {
			t.Errorf("ReadManifest(%s) accepted it", body)
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// A name already under nixpi/retired/ that sorts late (vmlinuz moves after
// start4.elf and config.txt) is found before the first move: the card is
// left as it was, still bootable, and the message names the collision.
func TestRetireLateCollisionMovesNothing(t *testing.T) {
	t.Parallel()
	c, _ := card(t)
	if err := c.MkdirAll(cardpath.Retired); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFile(cardpath.Retired+"/vmlinuz-6.12.0-rpi", []byte("an older copy")); err != nil {
		t.Fatal(err)
	}
	before := contents(t, c)
	_, err := Retire(c, "0xf41", nil, nil)
	want := "both /vmlinuz-6.12.0-rpi and /nixpi/retired/vmlinuz-6.12.0-rpi exist"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.HasSuffix(err.Error(), "nothing was moved") {
		t.Fatalf("err = %v, want it to name %q and say nothing was moved", err, want)
	}
	after := contents(t, c)
	if strings.Join(keys(after), " ") != strings.Join(keys(before), " ") {
		t.Errorf("the refused retire changed the card:\nbefore %v\nafter  %v", keys(before), keys(after))
	}
	if ok, _ := Bootable(c); !ok {
		t.Error("the refused retire left the card unbootable")
	}
	// Once the person removes the old copy, the same call retires the card.
	if err := c.Remove(cardpath.Retired + "/vmlinuz-6.12.0-rpi"); err != nil {
		t.Fatal(err)
	}
	if _, err := Retire(c, "0xf41", nil, nil); err != nil {
		t.Fatal(err)
	}
	if ok, _ := Bootable(c); ok {
		t.Error("still bootable after the retry")
	}
}

// A rerun after a power cut whose manifest lists an entry the card lost
// (at neither place) refuses before moving the rest.
func TestRetireResumeWithALostEntryMovesNothing(t *testing.T) {
	t.Parallel()
	c, _ := card(t)
	cut := errors.New("power cut")
	func() {
		defer func() {
			if r := recover(); r != cut {
				t.Fatalf("recover() = %v", r)
			}
		}()
		Retire(c, "0xf41", nil, func(p string) {
			if p == "retire: manifest written" {
				panic(cut)
			}
		})
	}()
	if err := os.Remove(filepath.Join(string(c), "kernel8.img")); err != nil {
		t.Fatal(err)
	}
	_, err := Retire(c, "0xf41", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "neither /kernel8.img nor /nixpi/retired/kernel8.img exists") || !strings.HasSuffix(err.Error(), "nothing was moved") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(string(c), "start4.elf")); err != nil {
		t.Errorf("start4.elf moved: %v", err)
	}
}
