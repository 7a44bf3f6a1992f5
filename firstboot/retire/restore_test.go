package retire

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/cardpath"
)

// retired is the test card retired with the three staged EEPROM files.
func retired(t *testing.T) (DirCard, map[string]string) {
	t.Helper()
	c, orig := card(t)
	staged := []string{cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery}
	for _, s := range staged {
		if err := c.WriteFile(s, []byte("staged "+s)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Retire(c, "0xf41", staged, nil); err != nil {
		t.Fatal(err)
	}
	return c, orig
}

// editManifest rewrites the card's manifest through edit.
func editManifest(t *testing.T, c DirCard, edit func(m *Manifest)) {
	t.Helper()
	m, err := ReadManifest(c)
	if err != nil {
		t.Fatal(err)
	}
	edit(m)
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFile(cardpath.RetiredManifest, data); err != nil {
		t.Fatal(err)
	}
}

// refused runs Restore, wants an error saying each of want and that
// nothing was changed, and checks that nothing was.
func refused(t *testing.T, c DirCard, want ...string) {
	t.Helper()
	before := contents(t, c)
	_, err := Restore(c)
	if err == nil {
		t.Fatal("Restore accepted it")
	}
	for _, w := range append(want, "nothing was changed") {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Restore: %v\nwant it to say %q", err, w)
		}
	}
	if after := contents(t, c); !reflect.DeepEqual(after, before) {
		t.Errorf("the refused restore changed the card:\nbefore %v\nafter  %v", keys(before), keys(after))
	}
}

// A staged name is data from the card: only the EEPROM files nixpi stages
// are ever deleted, never the journal or cmdline.txt.
func TestRestoreRefusesStagedNameNixpiDoesNotStage(t *testing.T) {
	t.Parallel()
	for _, name := range []string{cardpath.Journal, cardpath.Cmdline, "../pieeprom.upd", "issue.txt", ""} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, _ := retired(t)
			editManifest(t, c, func(m *Manifest) { m.Staged = append(m.Staged, name) })
			refused(t, c, fmt.Sprintf("lists %q as a staged EEPROM update file, and nixpi stages only pieeprom.upd, pieeprom.sig and recovery.bin", name))
		})
	}
}

// Only the boot files Retire moves come back, once each.
func TestRestoreRefusesMovedEntryRetireNeverMoves(t *testing.T) {
	t.Parallel()
	c, _ := retired(t)
	if err := c.WriteFile(cardpath.Retired+"/issue.txt", []byte("issue")); err != nil {
		t.Fatal(err)
	}
	editManifest(t, c, func(m *Manifest) { m.Moved = append(m.Moved, File{Name: "issue.txt", Size: 5}) })
	refused(t, c, `lists "issue.txt" among the moved boot files, and retire never moves it`)

	c, _ = retired(t)
	editManifest(t, c, func(m *Manifest) { m.Moved = append(m.Moved, m.Moved[len(m.Moved)-1]) })
	refused(t, c, "twice")
}

// Every file put back must be the one Retire moved: each that is not is
// named with both sha256s, and nothing is restored.
func TestRestoreRefusesFileThatDiffersFromTheManifest(t *testing.T) {
	t.Parallel()
	c, _ := retired(t)
	if err := c.WriteFile(cardpath.Retired+"/kernel8.img", []byte("a kernel from elsewhere")); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFile(cardpath.Retired+"/config.txt", []byte("[all]\nkernel=evil.img\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFile(cardpath.Retired+"/overlays/extra.dtbo", []byte("more")); err != nil {
		t.Fatal(err)
	}
	refused(t, c, "/nixpi/retired/kernel8.img has sha256 ", "/nixpi/retired/config.txt has sha256 ", "retired.json says ",
		"/nixpi/retired/overlays holds 3 files (6 bytes), nixpi/retired.json says 2 (2 bytes)")

	// A manifest entry without its sha256 proves nothing.
	c, _ = retired(t)
	editManifest(t, c, func(m *Manifest) { m.Moved[len(m.Moved)-1].SHA256 = "" })
	refused(t, c, "without its sha256")
}

// The restored card must boot: a manifest that does not bring start4.elf
// back, on a root without one, is refused.
func TestRestoreRefusesResultThatDoesNotBoot(t *testing.T) {
	t.Parallel()
	c, _ := retired(t)
	editManifest(t, c, func(m *Manifest) {
		for i, f := range m.Moved {
			if f.Name == "start4.elf" {
				m.Moved = append(m.Moved[:i], m.Moved[i+1:]...)
				break
			}
		}
	})
	refused(t, c, "restoring would leave no /start4.elf")
}

// copyCard moves files as restore-card's FAT does, a copy and a remove,
// and has a power cut after the cut-th copy.
type copyCard struct {
	DirCard
	cut, copies int
}

type powerCut struct{}

func (c *copyCard) Rename(from, to string) error {
	e, err := c.Stat(from)
	if err != nil {
		return err
	}
	if !e.Dir {
		data, err := c.ReadFile(from)
		if err != nil {
			return err
		}
		if err := c.WriteFile(to, data); err != nil {
			return err
		}
		if c.copies++; c.copies == c.cut {
			panic(powerCut{})
		}
		return c.Remove(from)
	}
	if err := c.MkdirAll(to); err != nil {
		return err
	}
	entries, err := c.List(from)
	if err != nil {
		return err
	}
	for _, sub := range entries {
		if err := c.Rename(path.Join(from, sub.Name), path.Join(to, sub.Name)); err != nil {
			return err
		}
	}
	return c.Remove(from)
}

// restoreUntilCut runs Restore on c until its power cut; it says whether
// the cut came.
func restoreUntilCut(t *testing.T, c *copyCard) (cut bool) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(powerCut); !ok {
				panic(r)
			}
			cut = true
		}
	}()
	if _, err := Restore(c); err != nil {
		t.Fatalf("Restore before the cut: %v", err)
	}
	return false
}

// A restore cut after any copy (a file at the root and under
// nixpi/retired/ with the same sha256, a directory half moved) is finished
// by running it again, and the card is the one retired.
func TestRestoreInterruptedIsFinishedByRunningItAgain(t *testing.T) {
	t.Parallel()
	for cut := 1; ; cut++ {
		dc, orig := retired(t)
		c := &copyCard{DirCard: dc, cut: cut}
		if !restoreUntilCut(t, c) {
			if cut < 10 {
				t.Fatalf("a restore made only %d copies", cut-1)
			}
			break
		}
		if _, err := Restore(dc); err != nil {
			t.Fatalf("cut after copy %d: the rerun: %v", cut, err)
		}
		if got := contents(t, dc); !reflect.DeepEqual(got, orig) {
			t.Errorf("cut after copy %d: the card after the rerun holds %v, want %v", cut, keys(got), keys(orig))
		}
		if _, err := os.Stat(filepath.Join(string(dc), cardpath.Retired)); !os.IsNotExist(err) {
			t.Errorf("cut after copy %d: %s left: %v", cut, cardpath.Retired, err)
		}
	}
}

// A copy at the root that is not the retired file (torn by the cut, or put
// there since) is named, with the way on.
func TestRestoreInterruptedWithATornCopy(t *testing.T) {
	t.Parallel()
	c, orig := retired(t)
	if err := c.WriteFile("kernel8.img", []byte("k")); err != nil {
		t.Fatal(err)
	}
	refused(t, c, "/kernel8.img has sha256 ", "and /nixpi/retired/kernel8.img matches: delete /kernel8.img")
	if err := c.Remove("kernel8.img"); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(c); err != nil {
		t.Fatal(err)
	}
	if got := contents(t, c); !reflect.DeepEqual(got, orig) {
		t.Errorf("restored %v, want %v", keys(got), keys(orig))
	}
}
