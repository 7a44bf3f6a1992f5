package builder

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
	"github.com/nixpi/nixpi/firstboot/config"
)

// testConfig is buildertest.Config: a config with secrets, so tests can
// check they stay on the card only.
const testConfig = buildertest.Config

func writeConfig(t *testing.T, dir string) string { return buildertest.WriteConfig(t, dir) }

func testOptions(t *testing.T, base, out string) Options {
	return Options{
		Base:         base,
		Config:       writeConfig(t, filepath.Dir(out)),
		Out:          out,
		DeviceBinary: buildertest.DeviceBinaries(t),
	}
}

func TestBuildLayouts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		layout  fixture.Layout
		arch    fixture.Arch
		bootDir string
	}{
		{fixture.LayoutTrixie, fixture.ArchArm64, "/boot/firmware"},
		{fixture.LayoutBookworm, fixture.ArchArmhf, "/boot/firmware"},
		{fixture.LayoutBullseye, fixture.ArchArm64, "/boot"},
	} {
		t.Run(string(tc.layout)+"-"+string(tc.arch), func(t *testing.T) {
			t.Parallel()
			img := buildertest.WriteFixture(t, fixture.Options{Layout: tc.layout, Arch: tc.arch})
			out := filepath.Join(t.TempDir(), "card.img")
			res, err := Build(context.Background(), testOptions(t, img.Path, out))
			if err != nil {
				t.Fatal(err)
			}
			card := buildertest.CheckCard(t, img.Path, out)
			if card.Base.FATMount != tc.bootDir || res.Manifest.Base.BootDir != tc.bootDir {
				t.Errorf("boot dir %s (manifest %s), want %s", card.Base.FATMount, res.Manifest.Base.BootDir, tc.bootDir)
			}
			// The epoch comes from the base's boot files, not the clock.
			if res.Manifest.SourceDateEpoch != fixture.DefaultEpoch.Unix() || res.Manifest.EpochFrom != epochFromBase {
				t.Errorf("epoch %d from %q, want the fixture's file time %d", res.Manifest.SourceDateEpoch, res.Manifest.EpochFrom, fixture.DefaultEpoch.Unix())
			}
			cfg, err := config.Parse("test", []byte(testConfig))
			if err != nil {
				t.Fatal(err)
			}
			if card.Config.WLAN == nil || card.Config.WLAN.PSK != cfg.WLAN.PSK || card.Config.Users[0].PasswordHash != cfg.Users[0].PasswordHash {
				t.Errorf("the card's config lost its secrets (the device needs them)")
			}
			assertOnly(t, filepath.Dir(out), "card.img", "card.img.bmap", "card.img.sha256", "nixpi.toml")
		})
	}
}

func TestBuildReproducible(t *testing.T) {
	t.Parallel()
	img := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutTrixie, Arch: fixture.ArchArmhf, FATSize: fixture.MinFATSize})
	dir := t.TempDir()
	// build returns OUT's sha256 as Build computed it; CheckCard checks
	// that digest against the file on the first build.
	build := func(name string, epoch *time.Time) string {
		t.Helper()
		opts := testOptions(t, img.Path, filepath.Join(dir, name))
		opts.Epoch = epoch
		res, err := Build(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		return res.SHA256
	}
	first := build("a.img", nil)
	buildertest.CheckCard(t, img.Path, filepath.Join(dir, "a.img"))
	// The second build reads a renamed copy of the base and of the config
	// from another directory: inputs count by content, not by name.
	other := t.TempDir()
	renamed := filepath.Join(other, "renamed-base.img")
	copyFile(t, img.Path, renamed)
	opts := testOptions(t, renamed, filepath.Join(dir, "b.img"))
	copyFile(t, opts.Config, filepath.Join(other, "renamed.toml"))
	opts.Config = filepath.Join(other, "renamed.toml")
	res, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if second := res.SHA256; first != second {
		t.Fatalf("two builds from the same inputs differ: %s vs %s", first, second)
	}
	assertSameFile(t, filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img"))
	epoch := time.Unix(1760000000, 0)
	withEpoch := build("c.img", &epoch)
	if first == withEpoch {
		t.Fatal("SOURCE_DATE_EPOCH did not change the output")
	}
	buildertest.CheckCard(t, img.Path, filepath.Join(dir, "c.img"))
	if again := build("d.img", &epoch); withEpoch != again {
		t.Fatal("two builds with the same SOURCE_DATE_EPOCH differ")
	}
	in, err := Inspect(filepath.Join(dir, "c.img"))
	if err != nil {
		t.Fatal(err)
	}
	if m := in.FAT.Manifest; m == nil || m.SourceDateEpoch != epoch.Unix() || m.EpochFrom != epochFromEnv {
		t.Errorf("manifest %+v does not record SOURCE_DATE_EPOCH %d", m, epoch.Unix())
	}
}

func TestBuildCompressedBaseWithSidecar(t *testing.T) {
	t.Parallel()
	img := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, Arch: fixture.ArchArm64, FATSize: fixture.MinFATSize})
	xzPath := xzWithSidecar(t, img.Path)
	sum, err := os.ReadFile(xzPath + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "card.img")
	res, err := Build(context.Background(), testOptions(t, xzPath, out))
	if err != nil {
		t.Fatal(err)
	}
	buildertest.CheckCard(t, img.Path, out)
	if res.Manifest.Base.Format != "xz" || res.Manifest.Base.SHA256 != strings.Fields(string(sum))[0] {
		t.Errorf("manifest base %+v, want xz with sha256 %s", res.Manifest.Base, sum)
	}
}

func TestBuildCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	img := buildertest.WriteFixture(t, fixture.Options{FATSize: fixture.MinFATSize})
	out := filepath.Join(t.TempDir(), "card.img")
	ctx, cancel := context.WithCancel(context.Background())
	opts := testOptions(t, img.Path, out)
	get := opts.DeviceBinary
	// Cancel in the middle of the pipeline, as Ctrl-C would: after the
	// base is copied, when the device binary is fetched.
	opts.DeviceBinary = func(goarch string) ([]byte, error) {
		cancel()
		return get(goarch)
	}
	_, err := Build(ctx, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Build after cancel: %v, want context.Canceled", err)
	}
	assertOnly(t, filepath.Dir(out), "nixpi.toml")
}

// assertSameFile compares two files byte for byte, a block at a time.
func assertSameFile(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	bufA, bufB := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(bufA)) {
		na, errA := io.ReadFull(fa, bufA)
		nb, errB := io.ReadFull(fb, bufB)
		if !bytes.Equal(bufA[:na], bufB[:nb]) {
			t.Fatalf("%s and %s differ in the MiB at byte %d", a, b, off)
		}
		if errA != nil || errB != nil {
			if (errA == nil) != (errB == nil) {
				t.Fatalf("%s and %s differ in length", a, b)
			}
			return
		}
	}
}

func TestBuildFullBootPartition(t *testing.T) {
	t.Parallel()
	img := buildertest.WriteFixture(t, fixture.Options{FATSize: fixture.MinFATSize})
	// Fill the boot partition with mtools until 6 MiB are left: less than
	// the device binary twice.
	filler := filepath.Join(t.TempDir(), "filler")
	in, err := Inspect(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filler, bytes.Repeat([]byte{1}, int(in.FAT.Free-6<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	at := img.Path + "@@" + strconv.FormatInt(img.BootPart.Start, 10)
	if out, err := exec.Command("mcopy", "-i", at, filler, "::/filler").CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v\n%s", err, out)
	}
	out := filepath.Join(t.TempDir(), "card.img")
	_, err = Build(context.Background(), testOptions(t, img.Path, out))
	if err == nil || !strings.Contains(err.Error(), "boot partition has 6 MiB free, nixpi needs") {
		t.Fatalf("Build onto a full boot partition: %v", err)
	}
	assertOnly(t, filepath.Dir(out), "nixpi.toml")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
