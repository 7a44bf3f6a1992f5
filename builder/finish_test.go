package builder

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

// assertOnce fails t unless each of want starts exactly one message and
// no other message came.
func assertOnce(t *testing.T, w *buildertest.Warnings, path string, want ...string) {
	t.Helper()
	msgs := w.Msgs()
	for _, p := range want {
		n := 0
		for _, m := range msgs {
			if strings.HasPrefix(m, p) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d warnings start %q, want one; all of them:\n%s", path, n, p, strings.Join(msgs, "\n"))
		}
	}
	if len(msgs) != len(want) {
		t.Errorf("%s: %d warnings, want %d:\n%s", path, len(msgs), len(want), strings.Join(msgs, "\n"))
	}
}

// TestCardFinishWarnsOncePerPath builds one unverified xz base with a
// config whose extra_module only nixpi's bracket check reads, every way
// Build can finish the card: early, early with a wrong guess (written
// again), early failed (written the ordinary way), and from the raw base.
// Each way warns about the base and the module once, and every card from the xz base is the same bytes: the
// early card and the ordinary one are the same sequence (CardFinish.Finish).
func TestCardFinishWarnsOncePerPath(t *testing.T) {
	t.Parallel()
	img := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, Arch: fixture.ArchArm64, FATSize: fixture.MinFATSize})
	buildertest.Sh(t, "xz", "-T2", "-0", "--block-size=8MiB", "-k", img.Path)
	xzPath := img.Path + ".xz"
	dir := t.TempDir()
	config := filepath.Join(dir, "module.toml")
	if err := os.WriteFile(config, []byte(testConfig+"\n[nixos]\nextra_module = \"{ ... }: { }\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wrongArch := func(b *baseimage.Base) rootGuess {
		g := predictRoot(b)
		g.Arch = map[string]string{"arm64": "armhf", "armhf": "arm64"}[g.Arch]
		return g
	}
	for _, tc := range []struct {
		name, base string
		early      Early
		tweak      func(*Options)
	}{
		{"early", xzPath, EarlyUsed, nil},
		{"wrong guess", xzPath, EarlyWrong, func(o *Options) { o.predictRoot = wrongArch }},
		{"early failed", xzPath, EarlyAbandoned, func(o *Options) {
			get := o.DeviceBinary
			var calls atomic.Int32
			o.DeviceBinary = func(goarch string) ([]byte, error) {
				bin, err := get(goarch)
				if err != nil || calls.Add(1) > 1 {
					return bin, err
				}
				return append(bytes.Clone(bin), make([]byte, fixture.MinFATSize)...), nil // more than the FAT holds
			}
		}},
		{"raw", img.Path, EarlyUsed, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions(t, tc.base, filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".img"))
			opts.Config = config
			w := &buildertest.Warnings{}
			opts.Warn = w.Warn
			if tc.tweak != nil {
				tc.tweak(&opts)
			}
			res, err := Build(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.Early != tc.early {
				t.Errorf("early card %q, want %q", res.Early, tc.early)
			}
			assertOnce(t, w, tc.name,
				"nixos.extra_module was checked by nixpi's own bracket check only",
				"nothing verifies the base image "+tc.base+" (no --sha256, no "+tc.base+".sha256 beside it)",
				"the unverified base's sha256 is "+buildertest.FileSHA256(t, tc.base)+":")
			buildertest.CheckCard(t, img.Path, opts.Out)
			if tc.base != xzPath {
				return
			}
			if want := (ManifestBase{SHA256: buildertest.FileSHA256(t, xzPath), Format: "xz", Arch: "arm64", BootDir: "/boot/firmware"}); !reflect.DeepEqual(res.Manifest.Base, want) {
				t.Errorf("manifest base %+v, want %+v", res.Manifest.Base, want)
			}
			if tc.name != "early" {
				assertSameFile(t, filepath.Join(dir, "early.img"), opts.Out)
			}
		})
	}
}
