package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

// buildBmapCard builds a card (and its .bmap) from base, or from a new
// fixture when base is empty, into a new directory.
func buildBmapCard(t *testing.T, base string) string {
	t.Helper()
	if base == "" {
		base = buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, FATSize: fixture.MinFATSize}).Path
	}
	out := filepath.Join(t.TempDir(), "card.img")
	if _, err := Build(context.Background(), testOptions(t, base, out)); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBmapReproducibleAndReadable(t *testing.T) {
	t.Parallel()
	base := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, FATSize: fixture.MinFATSize}).Path
	a := buildBmapCard(t, base)
	b := buildBmapCard(t, base)
	bmapA, err := os.ReadFile(a + ".bmap")
	if err != nil {
		t.Fatal(err)
	}
	bmapB, _ := os.ReadFile(b + ".bmap")
	if !bytes.Equal(bmapA, bmapB) {
		t.Errorf("two builds of the same inputs wrote different bmaps")
	}
	st, _ := os.Stat(a)
	ranges, err := ReadBmap(a+".bmap", st.Size())
	if err != nil {
		t.Fatal(err)
	}
	var mapped int64
	for _, r := range ranges {
		mapped += r.End - r.Start
	}
	if len(ranges) == 0 || ranges[0].Start != 0 || mapped >= st.Size() || mapped < 1<<20 {
		t.Errorf("bmap maps %d of %d bytes in %d ranges, from %d: want the MBR and the data, not all", mapped, st.Size(), len(ranges), ranges[0].Start)
	}
	// A damaged bmap is refused, not trusted.
	damaged := bytes.Replace(bmapA, []byte("<Range chksum=\""), []byte("<Range chksum=\"f"), 1)
	path := filepath.Join(t.TempDir(), "bad.bmap")
	if err := os.WriteFile(path, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadBmap(path, st.Size()); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged bmap: %v, want it refused as damaged", err)
	}
}

// TestBmapToolCopiesCard checks the .bmap with bmaptool itself: bmaptool
// copy (which checks the bmap's and every range's checksum) onto a zeroed
// loop device gives the image byte for byte.
func TestBmapToolCopiesCard(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bmaptool"); err != nil {
		t.Skip("bmaptool not installed (Debian: bmap-tools)")
	}
	out := buildBmapCard(t, "")
	st, _ := os.Stat(out)
	dev := buildertest.LoopDevice(t, st.Size(), false)
	buildertest.Sh(t, "bmaptool", "copy", "--bmap", out+".bmap", out, dev)
	if buildertest.FileSum(t, dev, st.Size()) != buildertest.FileSum(t, out, st.Size()) {
		t.Errorf("bmaptool copy onto zeroed %s does not equal the image", dev)
	}

	// The other way: nixpi reads bmaptool's bmap, and ours maps every
	// block bmaptool's does (and the zero metadata it leaves out).
	theirs := filepath.Join(t.TempDir(), "theirs.bmap")
	buildertest.Sh(t, "bmaptool", "create", "--output", theirs, out)
	their, err := ReadBmap(theirs, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	our, err := ReadBmap(out+".bmap", st.Size())
	if err != nil {
		t.Fatal(err)
	}
	var theirBytes, ourBytes int64
	for _, r := range their {
		theirBytes += r.End - r.Start
		i := 0
		for i < len(our) && our[i].End <= r.Start {
			i++
		}
		if i == len(our) || our[i].Start > r.Start || our[i].End < r.End {
			t.Errorf("bmaptool maps bytes %d-%d, ours does not map all of them", r.Start, r.End)
		}
	}
	for _, r := range our {
		ourBytes += r.End - r.Start
	}
	t.Logf("bmaptool maps %d bytes, nixpi %d of %d", theirBytes, ourBytes, st.Size())
}

// reseal recomputes a bmap's own checksum after an edit.
func reseal(t *testing.T, b []byte) []byte {
	t.Helper()
	i := bytes.Index(b, []byte("<BmapFileChecksum> "))
	if i < 0 {
		t.Fatal("no BmapFileChecksum")
	}
	i += len("<BmapFileChecksum> ")
	zeroed := append([]byte(nil), b...)
	copy(zeroed[i:i+64], zeroSum)
	sum := sha256.Sum256(zeroed)
	copy(zeroed[i:i+64], fmt.Sprintf("%x", sum))
	return zeroed
}

func TestBmapRefusals(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 5*BmapBlockSize), 0); err != nil {
		t.Fatal(err)
	}
	const size = 8 * BmapBlockSize
	f.Truncate(size)
	good, err := EncodeBmap(f, size, []Range{{0, BmapBlockSize}, {2 * BmapBlockSize, 4 * BmapBlockSize}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, old, new, want string
		size                 int64
	}{
		{"good", "", "", "", size},
		{"other image", "", "", "it is for a 32768-byte image, this image is 4096 bytes", BmapBlockSize},
		{"version 1.4", `version="2.0"`, `version="1.4"`, `nixpi reads bmap 2.x`, size},
		{"overlap", "> 2-3 <", "> 0-3 <", "overlaps or precedes", size},
		{"outside", "> 2-3 <", "> 2-9 <", "is not inside the image", size},
		{"sha1", "<ChecksumType> sha256 </ChecksumType>", "<ChecksumType> sha1 </ChecksumType>", `with checksum "sha1"`, size},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := reseal(t, bytes.Replace(good, []byte(tc.old), []byte(tc.new), 1))
			path := filepath.Join(t.TempDir(), "x.bmap")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			ranges, err := ReadBmap(path, tc.size)
			if tc.want == "" {
				if err != nil || len(ranges) != 2 || ranges[1].Start != 2*BmapBlockSize || ranges[1].End != 4*BmapBlockSize || len(ranges[1].SHA256) != 64 {
					t.Errorf("ReadBmap: %+v, %v", ranges, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "remove it") {
				t.Errorf("ReadBmap: %v, want %q and how to go on", err, tc.want)
			}
		})
	}
}
