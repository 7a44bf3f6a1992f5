package builder

import (
	"os"
	"testing"
	"time"

	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/builder/fixture"
)

func TestBuildEpoch(t *testing.T) {
	t.Parallel()
	// A base whose newest boot file is from the fixture's epoch, with one
	// file made newer in a subdirectory: the walk must find it.
	img := buildertest.WriteFixture(t, fixture.Options{FATSize: fixture.MinFATSize})
	f, err := os.OpenFile(img.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys, err := fatfs.Open(f, img.BootPart.Start, img.BootPart.Size)
	if err != nil {
		t.Fatal(err)
	}
	newer := fixture.DefaultEpoch.Add(48 * time.Hour)
	if err := fsys.WriteFile("overlays/README", []byte("newer\n"), newer); err != nil {
		t.Fatal(err)
	}

	got, from, err := buildEpoch(nil, fsys)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(newer) || from != epochFromBase {
		t.Errorf("derived epoch %s from %q, want %s from the base", got, from, newer)
	}

	given := time.Unix(1234567890, 0)
	if got, from, _ := buildEpoch(&given, fsys); !got.Equal(given) || from != epochFromEnv {
		t.Errorf("epoch with SOURCE_DATE_EPOCH: %s from %q", got, from)
	}
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFATClamp(t *testing.T) {
	t.Parallel()
	if got := fatClamp(time.Unix(0, 0)); got.Unix() != fatEpochUnix {
		t.Errorf("fatClamp(1970) = %s, want 1980-01-01", got)
	}
	later := time.Unix(1700000000, 0)
	if got := fatClamp(later); !got.Equal(later) {
		t.Errorf("fatClamp(%s) = %s", later, got)
	}
}
