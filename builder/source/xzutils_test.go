package source

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nixpi/nixpi/builder/source/xzpar"
)

// zeroStretches is an image with stretches of zero blocks amid data, as
// the free space of a disk image: 1 MiB blocks, '0' zeros, 'd' data.
func zeroStretches(layout string) []byte {
	img := diskImage(len(layout)<<20, 5)
	for i, k := range layout {
		if k == '0' {
			clear(img[i<<20 : (i+1)<<20])
		} else if img[i<<20+4096] == 0 {
			img[i<<20+4096] = 'x' // no all-zero data block
		}
	}
	img[510], img[511] = 0x55, 0xaa
	return img
}

// A local xz base with repeated zero blocks is decoded run by run, the
// repeats left undecoded as holes, and comes out exactly as xz makes it.
func TestXZUtilsLeavesRepeatedZeroBlocksUndecoded(t *testing.T) {
	t.Parallel()
	need(t, "xz", "xz-utils")
	img := zeroStretches("dd000d0000dd0d000")
	src := compressed(t, t.TempDir(), img, XZ) // 1 MiB blocks
	var logged []string
	var last, total int64
	out, st, err := decode(t, src, Options{
		Log:      func(line string) { logged = append(logged, line) },
		Progress: func(done, size int64) { last, total = done, size },
	})
	if err != nil {
		t.Fatal(err)
	}
	mustEqualFile(t, out, img)
	// Zero blocks 3 (the first, decoded), 4-5, 7-10, 13, 15-17: the ten
	// repeats are not decoded.
	if want := "xz-utils (10 of 17 blocks repeat a block of zeros: not decoded)"; st.Decoder != want {
		t.Errorf("decoder %q, want %q", st.Decoder, want)
	}
	runs := strings.Join(logged, "\n")
	for _, want := range []string{"# blocks 1-3", "# blocks 6-6", "# blocks 11-12", "# blocks 14-14"} {
		if !strings.Contains(runs, want) {
			t.Errorf("no xz run for %s in the log:\n%s", want, runs)
		}
	}
	if strings.Contains(runs, "# blocks 15") {
		t.Errorf("the trailing zero blocks were decoded:\n%s", runs)
	}
	var sys syscall.Stat_t
	if err := syscall.Stat(out, &sys); err != nil {
		t.Fatal(err)
	}
	if allocated := sys.Blocks * 512; allocated > 10<<20 {
		t.Errorf("%d bytes allocated for 7 MiB of data blocks: the zero blocks are not holes", allocated)
	}
	if last != total || total <= 0 {
		t.Errorf("progress ended at %d of %d", last, total)
	}
}

// Equal bytes with a check value of zeros are trusted only once the first
// copy has decoded to zeros: a block said to repeat one that did not is
// decoded after all.
func TestXZUtilsDecodesARepeatWhoseFirstCopyIsNotZero(t *testing.T) {
	t.Parallel()
	xzPath := need(t, "xz", "xz-utils")
	img := zeroStretches("dd0d0d")
	src := compressed(t, t.TempDir(), img, XZ)
	s, idx, dst := openWithIndex(t, src, Options{})
	out := dst.Name()
	// Block 5 (zeros) truly repeats block 3; block 4 is said to repeat
	// block 2, which holds data.
	skipped, err := s.xzUtilsRuns(context.Background(), xzPath, dst, idx, map[int]int{4: 2, 3: 1}, &progress{})
	if err != nil {
		t.Fatal(err)
	}
	mustEqualFile(t, out, img)
	if skipped != 1 {
		t.Errorf("%d blocks left undecoded, want 1 (block 5)", skipped)
	}
}

// The Go decoder leaves the same blocks undecoded.
func TestParallelGoDecoderLeavesRepeatedZeroBlocksUndecoded(t *testing.T) {
	t.Parallel()
	img := zeroStretches("dd000d0000dd0d000")
	src := compressed(t, t.TempDir(), img, XZ)
	out, st, err := decode(t, src, Options{DisableExternalXZ: true, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	mustEqualFile(t, out, img)
	if want := "parallel xz (17 blocks, 10 of them repeat a block of zeros: not decoded; 2 workers)"; st.Decoder != want {
		t.Errorf("decoder %q, want %q", st.Decoder, want)
	}
}

// As with xz-utils, a block said to repeat one that did not decode to
// zeros is decoded after all.
func TestParallelGoDecoderDecodesARepeatWhoseFirstCopyIsNotZero(t *testing.T) {
	t.Parallel()
	img := zeroStretches("dd0d0d")
	src := compressed(t, t.TempDir(), img, XZ)
	s, idx, dst := openWithIndex(t, src, Options{Workers: 2})
	out := dst.Name()
	write := func(off int64, p []byte) error { return writeSparse(dst, off, p) }
	skipped, err := s.decodeSkipping(context.Background(), idx, map[int]int{4: 2, 3: 1}, dst, write, func(xzpar.Block) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Truncate(idx.ImageSize); err != nil {
		t.Fatal(err)
	}
	mustEqualFile(t, out, img)
	if skipped != 1 {
		t.Errorf("%d blocks left undecoded, want 1 (block 5)", skipped)
	}
}

// openWithIndex opens a local xz base and reads its index, and creates the
// output file, for tests that drive a decoder with their own repeats.
func openWithIndex(t *testing.T, src string, opts Options) (*Source, *xzpar.Index, *os.File) {
	t.Helper()
	s, err := Open(context.Background(), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	idx, err := xzpar.ReadIndex(s.file, s.Size)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.Create(filepath.Join(t.TempDir(), "out.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	return s, idx, dst
}
