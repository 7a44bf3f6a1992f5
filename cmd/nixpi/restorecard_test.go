package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/retire"
)

// retiredCard is a card image with boot files, retired by the hand-over's
// own code; it returns the image and the FAT's offset and size.
func retiredCard(t *testing.T) (string, int64, int64) {
	t.Helper()
	img := cardImage(t, map[string][]byte{"journal.jsonl": []byte(`{"v":1,"step":"done","event":"done","time":"2026-11-25T03:00:00Z","boot":2}` + "\n")})
	// A real bootloader image: inspect checks what is staged.
	update, err := os.ReadFile(filepath.Join(eepromData(t), "pieeprom-2019-07-15-freeze.bin"))
	if err != nil {
		t.Fatal(err)
	}
	const start, size = 8192 * 512, 64<<20 - 8192*512
	withCardFAT(t, img, start, size, func(c *builder.FATCard) {
		for name, data := range map[string]string{"start4.elf": "s4", "fixup4.dat": "f4", "config.txt": "[all]\n", "cmdline.txt": "root=PARTUUID=x-02\n", "issue.txt": "i"} {
			if err := c.WriteFile(name, []byte(data)); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.WriteFile(cardpath.EEPROMUpdate, update); err != nil {
			t.Fatal(err)
		}
		if _, err := retire.Retire(c, "0xf41", []string{cardpath.EEPROMUpdate}, nil); err != nil {
			t.Fatal(err)
		}
	})
	return img, start, size
}

func withCardFAT(t *testing.T, img string, start, size int64, f func(c *builder.FATCard)) {
	t.Helper()
	fh, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	fsys, err := fatfs.Open(fh, start, size)
	if err != nil {
		t.Fatal(err)
	}
	f(builder.NewFATCard(fsys, time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)))
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreCardCommand(t *testing.T) {
	t.Parallel()
	img, start, size := retiredCard(t)
	code, stdout, stderr := runNixpi(t, "", "restore-card", img)
	if code != 0 || !strings.Contains(stdout, "4 boot files back at the root") || !strings.Contains(stdout, "removed the staged EEPROM update (pieeprom.upd)") ||
		!strings.Contains(stdout, "BOOT_ORDER 0xf41") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	withCardFAT(t, img, start, size, func(c *builder.FATCard) {
		for name, want := range map[string]string{"start4.elf": "s4", "config.txt": "[all]\n", "issue.txt": "i"} {
			if got, err := c.ReadFile(name); err != nil || string(got) != want {
				t.Errorf("%s after restore: %q, %v", name, got, err)
			}
		}
		for _, gone := range []string{cardpath.EEPROMUpdate, cardpath.RetiredManifest, cardpath.Retired} {
			if _, err := c.Stat(gone); err == nil {
				t.Errorf("%s left after restore", gone)
			}
		}
		if _, err := c.Stat(cardpath.Journal); err != nil {
			t.Errorf("journal: %v", err)
		}
	})

	// Restored already: nixpi did not retire it (any more); exit 1.
	code, _, stderr = runNixpi(t, "", "restore-card", img)
	if code != 1 || !strings.Contains(stderr, "nixpi did not retire this card") {
		t.Errorf("second restore: exit %d, stderr %s", code, stderr)
	}
}

func TestRestoreCardUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"restore-card"}, {"restore-card", "a", "b"}, {"restore-card", "--bogus", "x"}} {
		if code, _, stderr := runNixpi(t, "", args...); code != 2 || !strings.Contains(stderr, "restore-card") {
			t.Errorf("%v: exit %d, stderr %s", args, code, stderr)
		}
	}
	if code, _, stderr := runNixpi(t, "", "restore-card", "/nonexistent.img"); code != 1 || !strings.Contains(stderr, "nonexistent") {
		t.Errorf("missing image: exit %d, stderr %s", code, stderr)
	}
}

// report shows the hand-over from the journal's state; inspect shows that
// the card is retired and what is staged.
func TestRetiredCardInReportAndInspect(t *testing.T) {
	t.Parallel()
	img, _, _ := retiredCard(t)
	code, stdout, stderr := runNixpi(t, "", "inspect", img)
	if code != 0 || !strings.Contains(stdout, "retired by the hand-over: 4 root entries") || !strings.Contains(stdout, "staged EEPROM update: pieeprom.upd") {
		t.Errorf("inspect: exit %d\n%s\n%s", code, stdout, stderr)
	}

	state := `{"steps":["eeprom","scrub","retire","done","reboot"],"hand_over":{"boot_order":"0xf41","eeprom":"staged BOOT_ORDER=0xf41 from pieeprom-2023-01-11.bin","retired":"12 root entries moved","address":"192.168.1.23","logins":["alice (ssh key)"],"finished":true,"rebooted":true}}`
	img = cardImage(t, map[string][]byte{"journal.jsonl": []byte(`{"v":1,"step":"reboot","event":"reboot","time":"2026-11-25T03:00:00Z","boot":2,"state":` + state + "}\n")})
	code, stdout, stderr = runNixpi(t, "", "report", img)
	for _, want := range []string{"hand-over:", "boot order 0xf41", "staged BOOT_ORDER=0xf41 from pieeprom-2023-01-11.bin", "192.168.1.23", "alice (ssh key)", "rebooted into the SSD"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q: exit %d\n%s\n%s", want, code, stdout, stderr)
		}
	}
}
