package builder

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

// xzWithSidecar compresses the raw image at path next to itself, keeping
// it, and writes PATH.xz.sha256: a base whose sha256 is known before it is
// decoded, so Build takes the early path.
func xzWithSidecar(t *testing.T, path string) string {
	t.Helper()
	if out, err := exec.Command("xz", "-T2", "-0", "--block-size=8MiB", "-k", path).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v\n%s", err, out)
	}
	xzPath := path + ".xz"
	cmd := exec.Command("sha256sum", filepath.Base(xzPath))
	cmd.Dir = filepath.Dir(xzPath)
	sum, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(xzPath+".sha256", sum, 0o644); err != nil {
		t.Fatal(err)
	}
	return xzPath
}

// logLines collects Options.Log lines; Log may be called from more than
// one goroutine.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) log(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, msg)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// assertNoSnapshots fails when a build left one of its temporary files
// (the pending output or the boot partition's snapshot) in dir.
func assertNoSnapshots(t *testing.T, dir string) {
	t.Helper()
	left, err := filepath.Glob(filepath.Join(dir, ".nixpi-build-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("temporary files left in %s: %v", dir, left)
	}
}

// TestEarlyCardMatchesOrdinaryBuild builds the same xz base twice: once
// with the boot partition written while the base is decoded, once with a
// wrong prediction, so that the early edit is undone from its snapshot and
// the card written the ordinary way. Both cards must be the same bytes.
func TestEarlyCardMatchesOrdinaryBuild(t *testing.T) {
	t.Parallel()
	flipArch := func(arch string) string {
		if arch == "arm64" {
			return "armhf"
		}
		return "arm64"
	}
	flipMount := func(mount string) string {
		if mount == "/boot" {
			return "/boot/firmware"
		}
		return "/boot"
	}
	for _, tc := range []struct {
		layout fixture.Layout
		arch   fixture.Arch
	}{
		{fixture.LayoutTrixie, fixture.ArchArm64},
		{fixture.LayoutBullseye, fixture.ArchArmhf},
		{fixture.LayoutBookworm, fixture.ArchArmhf},
	} {
		t.Run(string(tc.layout)+"-"+string(tc.arch), func(t *testing.T) {
			t.Parallel()
			img := buildertest.WriteFixture(t, fixture.Options{Layout: tc.layout, Arch: tc.arch, FATSize: fixture.MinFATSize})
			xzPath := xzWithSidecar(t, img.Path)
			dir := t.TempDir()

			build := func(name string, predict func(*baseimage.Base) rootGuess) (*Result, *logLines) {
				t.Helper()
				logs := &logLines{}
				opts := testOptions(t, xzPath, filepath.Join(dir, name))
				opts.Log = logs.log
				opts.predictRoot = predict
				res, err := Build(context.Background(), opts)
				if err != nil {
					t.Fatalf("build %s: %v\nlog:\n%s", name, err, logs)
				}
				assertNoSnapshots(t, dir)
				out := filepath.Join(dir, name)
				if got := buildertest.FileSHA256(t, out); res.SHA256 != got {
					t.Errorf("%s: Result.SHA256 %s, but the file's sha256 is %s", name, res.SHA256, got)
				}
				sidecar, err := os.ReadFile(out + ".sha256")
				if err != nil {
					t.Fatal(err)
				}
				if want := res.SHA256 + "  " + name + "\n"; string(sidecar) != want {
					t.Errorf("%s.sha256 is %q, want %q", name, sidecar, want)
				}
				buildertest.CheckCard(t, img.Path, out)
				return res, logs
			}

			early, logs := build("early.img", nil)
			if early.Early != EarlyUsed {
				t.Fatalf("early card %q, want %q for an xz base with a sidecar checksum; log:\n%s", early.Early, EarlyUsed, logs)
			}
			if early.Manifest.Base.Arch != string(tc.arch) || early.Manifest.Base.Format != "xz" {
				t.Errorf("manifest base %+v, want %s from xz", early.Manifest.Base, tc.arch)
			}

			for _, wrong := range []struct {
				name  string
				guess func(rootGuess) rootGuess
			}{
				{"arch", func(g rootGuess) rootGuess { g.Arch = flipArch(g.Arch); return g }},
				{"mount", func(g rootGuess) rootGuess { g.FATMount = flipMount(g.FATMount); return g }},
				{"both", func(g rootGuess) rootGuess {
					g.Arch, g.FATMount = flipArch(g.Arch), flipMount(g.FATMount)
					return g
				}},
			} {
				var calls int
				name := "wrong-" + wrong.name + ".img"
				res, logs := build(name, func(b *baseimage.Base) rootGuess {
					calls++
					return wrong.guess(predictRoot(b))
				})
				if calls != 1 {
					t.Errorf("%s: predictRoot hook called %d times, want once", name, calls)
				}
				if res.Early != EarlyWrong {
					t.Fatalf("%s: early card %q, want %q: a wrong prediction must make Build write the boot partition again; log:\n%s", name, res.Early, EarlyWrong, logs)
				}
				assertSameFile(t, filepath.Join(dir, "early.img"), filepath.Join(dir, name))
				if res.SHA256 != early.SHA256 {
					t.Errorf("%s: sha256 %s, the early card's %s", name, res.SHA256, early.SHA256)
				}
				if !reflect.DeepEqual(res.Manifest, early.Manifest) {
					t.Errorf("%s: manifest\n%+v\ndiffers from the early card's\n%+v", name, res.Manifest, early.Manifest)
				}
			}
			assertOnly(t, dir, "early.img", "early.img.bmap", "early.img.sha256", "nixpi.toml",
				"wrong-arch.img", "wrong-arch.img.bmap", "wrong-arch.img.sha256", "wrong-both.img", "wrong-both.img.bmap", "wrong-both.img.sha256",
				"wrong-mount.img", "wrong-mount.img.bmap", "wrong-mount.img.sha256")
			assertSameFile(t, filepath.Join(dir, "early.img.bmap"), filepath.Join(dir, "wrong-arch.img.bmap"))
			// The snapshot goes next to OUT, never next to the base.
			assertNoSnapshots(t, filepath.Dir(xzPath))
		})
	}
}

// TestEarlyCardFailureFallsBack makes the early edit fail after the boot
// partition was snapshotted (the first device binary asked for, the early
// one, does not fit on the FAT): Build must put the partition back and
// write the card the ordinary way, the same bytes as an early card.
func TestEarlyCardFailureFallsBack(t *testing.T) {
	t.Parallel()
	img := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, Arch: fixture.ArchArm64, FATSize: fixture.MinFATSize})
	xzPath := xzWithSidecar(t, img.Path)
	dir := t.TempDir()

	early := testOptions(t, xzPath, filepath.Join(dir, "early.img"))
	logs := &logLines{}
	early.Log = logs.log
	want, err := Build(context.Background(), early)
	if err != nil {
		t.Fatal(err)
	}
	if want.Early != EarlyUsed {
		t.Fatalf("early card %q, want %q; log:\n%s", want.Early, EarlyUsed, logs)
	}

	opts := testOptions(t, xzPath, filepath.Join(dir, "fallback.img"))
	logs = &logLines{}
	opts.Log = logs.log
	get := opts.DeviceBinary
	var calls atomic.Int32
	opts.DeviceBinary = func(goarch string) ([]byte, error) {
		bin, err := get(goarch)
		if err != nil || calls.Add(1) > 1 {
			return bin, err
		}
		// Still an ELF executable, but more than the FAT holds.
		return append(bytes.Clone(bin), make([]byte, fixture.MinFATSize)...), nil
	}
	res, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatalf("Build after a failed early edit: %v\nlog:\n%s", err, logs)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("DeviceBinary called %d times, want 2 (early, then the ordinary way)", n)
	}
	if res.Early != EarlyAbandoned {
		t.Errorf("early card %q after a failed early edit, want %q; log:\n%s", res.Early, EarlyAbandoned, logs)
	}
	assertNoSnapshots(t, dir)
	buildertest.CheckCard(t, img.Path, opts.Out)
	assertSameFile(t, early.Out, opts.Out)
	if res.SHA256 != want.SHA256 || res.SHA256 != buildertest.FileSHA256(t, opts.Out) {
		t.Errorf("sha256 %s, early card %s, file %s", res.SHA256, want.SHA256, buildertest.FileSHA256(t, opts.Out))
	}
	if !reflect.DeepEqual(res.Manifest, want.Manifest) {
		t.Errorf("manifest\n%+v\ndiffers from the early card's\n%+v", res.Manifest, want.Manifest)
	}
}

// TestPredictRoot checks that what predictRoot reads off the boot partition
// is what identifying the whole image finds, for every fixture layout and
// architecture: a wrong prediction costs writing the boot partition twice.
func TestPredictRoot(t *testing.T) {
	t.Parallel()
	for _, layout := range fixture.Layouts {
		for _, arch := range []fixture.Arch{fixture.ArchArm64, fixture.ArchArmhf} {
			t.Run(string(layout)+"-"+string(arch), func(t *testing.T) {
				t.Parallel()
				img := buildertest.WriteFixture(t, fixture.Options{Layout: layout, Arch: arch, FATSize: fixture.MinFATSize})
				f, err := os.Open(img.Path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					t.Fatal(err)
				}
				boot, err := baseimage.InspectBoot(f)
				if err != nil {
					t.Fatal(err)
				}
				whole, err := baseimage.Inspect(f, st.Size())
				if err != nil {
					t.Fatal(err)
				}
				g := predictRoot(boot)
				if g.Arch != whole.Arch || g.FATMount != whole.FATMount || g.Boot != whole.Boot {
					t.Errorf("predicted %s mounted at %s, boot %+v; the image is %s mounted at %s, boot %+v",
						g.Arch, g.FATMount, g.Boot, whole.Arch, whole.FATMount, whole.Boot)
				}
				if whole.Arch != string(arch) {
					t.Errorf("the %s fixture identifies as %s", arch, whole.Arch)
				}
				if g.BaseSHA256 != "" {
					t.Errorf("predictRoot guessed the base's sha256 %q: it comes from the input", g.BaseSHA256)
				}
			})
		}
	}
}

// TestCopyDataRestoreRegion round-trips a region of a sparse file, with
// data and holes inside it and on both sides of its unaligned bounds,
// through snapshotRegion and restoreRegion.
func TestCopyDataRestoreRegion(t *testing.T) {
	t.Parallel()
	const (
		kib  = int64(1) << 10
		mib  = int64(1) << 20
		size = 8 * mib
	)
	dir := t.TempDir()
	out, err := createPending(filepath.Join(dir, "card.img"), modeShared)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Discard()
	f := out.file
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int64) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(255)) + 1 // never zero: data is told from holes
		}
		return b
	}
	// Region [1 MiB + 1000, 5 MiB + 512): neither end on a block boundary.
	p := baseimage.Partition{Index: 1, Start: mib + 1000, Size: 4*mib - 488}
	for _, d := range []struct{ off, n int64 }{
		{0, 64 * kib},                   // before the region, a hole follows
		{mib - 8*kib, 16 * kib},         // across the region's start
		{2 * mib, 4 * kib},              // inside, between holes
		{3 * mib, 100 * kib},            // inside
		{5*mib - 4*kib, 8 * kib},        // across the region's end
		{7 * mib, mib - 3},              // after the region, after a hole
		{mib + 1000 + 3*mib/2, 5 * kib}, // inside, unaligned
	} {
		if _, err := f.WriteAt(random(d.n), d.off); err != nil {
			t.Fatal(err)
		}
	}
	orig, err := os.ReadFile(out.Path())
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(orig)) != size {
		t.Fatalf("file is %d bytes, want %d", len(orig), size)
	}

	// copyData of arbitrary ranges gives exactly those bytes.
	for _, r := range []struct{ off, n int64 }{
		{0, size}, {p.Start, p.Size}, {mib - 1, 2}, {2*mib + 4*kib, 100 * kib}, {size - 10, 10}, {64 * kib, mib},
	} {
		dst, err := os.Create(filepath.Join(t.TempDir(), "copy"))
		if err != nil {
			t.Fatal(err)
		}
		if err := copyData(dst, 7, f, r.off, r.n); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, r.n)
		if _, err := dst.ReadAt(got, 7); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		dst.Close()
		if !bytes.Equal(got, orig[r.off:r.off+r.n]) {
			t.Errorf("copyData of [%d, %d) gives other bytes", r.off, r.off+r.n)
		}
	}

	snap, err := snapshotRegion(out, p)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		snap.Close()
		os.Remove(snap.Name())
	}()
	if filepath.Dir(snap.Name()) != dir || !strings.HasPrefix(filepath.Base(snap.Name()), ".nixpi-build-") {
		t.Errorf("snapshot %s is not a .nixpi-build- file next to the output", snap.Name())
	}
	got := make([]byte, p.Size)
	if _, err := snap.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, orig[p.Start:p.End()]) {
		t.Fatal("the snapshot differs from the region")
	}

	// Edit the region: data into its holes and over its data, its first
	// and last byte included.
	for _, e := range []struct{ off, n int64 }{
		{p.Start, 1}, {p.End() - 1, 1}, {p.Start, 10 * kib}, {2*mib + kib, 20 * kib},
		{3*mib + 50*kib, 200 * kib}, {4 * mib, 512 * kib}, {p.End() - 3*kib, 3 * kib},
	} {
		if _, err := f.WriteAt(random(e.n), e.off); err != nil {
			t.Fatal(err)
		}
	}
	if edited, err := os.ReadFile(out.Path()); err != nil {
		t.Fatal(err)
	} else if bytes.Equal(edited, orig) {
		t.Fatal("the edits changed nothing")
	}

	if err := restoreRegion(out, snap, p); err != nil {
		t.Fatal(err)
	}
	restored, err := os.ReadFile(out.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(restored) != len(orig) {
		t.Fatalf("restoring changed the size from %d to %d", len(orig), len(restored))
	}
	if !bytes.Equal(restored[:p.Start], orig[:p.Start]) {
		t.Error("restoring changed bytes before the region")
	}
	if !bytes.Equal(restored[p.End():], orig[p.End():]) {
		t.Error("restoring changed bytes after the region")
	}
	if i := firstDiff(restored[p.Start:p.End()], orig[p.Start:p.End()]); i >= 0 {
		t.Errorf("the region differs from the original at byte %d", p.Start+int64(i))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestNoEarlyCardFinish: without an early card (a decoder that does not
// write in order), finish only identifies, and after a failed decoding it
// does nothing.
func TestNoEarlyCardFinish(t *testing.T) {
	t.Parallel()
	var e *earlyCard
	if facts, early, err := e.finish(nil, ""); facts != nil || early != EarlyNone || err != nil {
		t.Errorf("finish after a failed decoding = %v, %q, %v; want nothing", facts, early, err)
	}
	want := &baseimage.Base{Arch: "arm64"}
	facts, early, err := e.finish(func() (*baseimage.Base, error) { return want, nil }, "")
	if facts != want || early != EarlyNone || err != nil {
		t.Errorf("finish = %v, %q, %v; want the identified base, %q", facts, early, err, EarlyNone)
	}
}
