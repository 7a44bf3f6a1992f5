package builder

import (
	"errors"
	iofs "io/fs"
	"os"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

// zeroAt overwrites n bytes of path at off.
func zeroAt(t *testing.T, path string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
}

// OpenCard reads a sound card's table and FAT; a card without a journal
// says so with fs.ErrNotExist; a stock image boots.
func TestOpenCard(t *testing.T) {
	t.Parallel()
	img := buildertest.WriteFixture(t, fixture.Options{})
	card, err := OpenCard(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer card.Close()
	if card.FAT == nil || card.Boot.Start != img.BootPart.Start || card.Size == 0 {
		t.Fatalf("FAT %v (%v), boot %+v", card.FAT, card.FATErr, card.Boot)
	}
	if _, err := card.Journal(); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("journal of a card the Pi never ran: %v, want fs.ErrNotExist", err)
	}
	if p := card.BootProblems(false); len(p) != 0 {
		t.Errorf("a stock image cannot boot: %v", p)
	}
	if _, err := OpenCard(t.TempDir()); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("OpenCard of a directory: %v", err)
	}
}

// inspect says when a card cannot boot, what is missing and to reflash it:
// a flash cut short before the root filesystem, a FAT without start4.elf,
// a zeroed FAT, an image cut short.
func TestInspectSaysWhyACardCannotBoot(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		opts  fixture.Options
		spoil func(t *testing.T, img *fixture.Image)
		want  []string
	}{
		{"no root filesystem", fixture.Options{}, func(t *testing.T, img *fixture.Image) {
			zeroAt(t, img.Path, img.RootPart.Start, 4096)
		}, []string{"the card cannot boot: partition 2 holds no ext4 root filesystem", "reflash it: nixpi flash IMAGE DEVICE"}},
		{"no start4.elf", fixture.Options{OmitBootFiles: []string{"start4.elf"}}, nil,
			[]string{"the card cannot boot: start4.elf missing from the FAT partition; reflash it"}},
		{"zeroed FAT", fixture.Options{}, func(t *testing.T, img *fixture.Image) {
			zeroAt(t, img.Path, img.BootPart.Start, 4096)
		}, []string{"the card cannot boot: no readable FAT boot partition (partition 1:", "reflash it"}},
		{"truncated", fixture.Options{}, func(t *testing.T, img *fixture.Image) {
			if err := os.Truncate(img.Path, img.RootPart.Start+1<<20); err != nil {
				t.Fatal(err)
			}
		}, []string{"the card cannot boot: partition 2 ends at byte", "the image is truncated; reflash it"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			img := buildertest.WriteFixture(t, c.opts)
			if c.spoil != nil {
				c.spoil(t, img)
			}
			in, err := Inspect(img.Path)
			if err != nil {
				t.Fatal(err)
			}
			all := strings.Join(in.Problems, "\n")
			for _, w := range c.want {
				if !strings.Contains(all, w) {
					t.Errorf("problems lack %q:\n%s", w, all)
				}
			}
		})
	}
}
