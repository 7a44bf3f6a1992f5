package flash

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

// testOptions builds out from base with buildertest's config and device
// binaries.
func testOptions(t *testing.T, base, out string) builder.Options {
	return builder.Options{
		Base:         base,
		Config:       buildertest.WriteConfig(t, filepath.Dir(out)),
		Out:          out,
		DeviceBinary: buildertest.DeviceBinaries(t),
	}
}

// buildBmapCard builds a card (and its .bmap) from base, or from a new
// fixture when base is empty, into a new directory.
func buildBmapCard(t *testing.T, base string) string {
	t.Helper()
	if base == "" {
		base = buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, FATSize: fixture.MinFATSize}).Path
	}
	out := filepath.Join(t.TempDir(), "card.img")
	if _, err := builder.Build(context.Background(), testOptions(t, base, out)); err != nil {
		t.Fatal(err)
	}
	return out
}
