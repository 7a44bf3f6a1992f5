package steps

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/engine"
)

// 64-bit is what Nix needs: it ships no armv7 binaries.
const arm64Arch = "aarch64"

type arm64Step struct{}

// NewArm64 switches the Pi to the 64-bit kernel: arm_64bit=1 in the [all]
// section of the card's config.txt, then a reboot.
func NewArm64() engine.Step { return arm64Step{} }

func (arm64Step) Name() string    { return "arm64" }
func (arm64Step) Needs() []string { return nil }
func (arm64Step) Describe() string {
	return "switching to the 64-bit kernel, which Nix needs (one reboot if the Pi runs a 32-bit kernel)"
}

func (arm64Step) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	arch, err := kernelArch(ctx, env)
	if err != nil {
		return false, "", err
	}
	if arch == arm64Arch {
		return true, "the kernel is 64-bit (aarch64)", nil
	}
	return false, fmt.Sprintf("the kernel is %s, not aarch64", arch), nil
}

func (arm64Step) Run(ctx context.Context, env *engine.Env) error {
	// Redone after a power cut that came after the write but before the
	// reboot was recorded, this boot may already be the 64-bit one.
	arch, err := kernelArch(ctx, env)
	if err != nil {
		return fmt.Errorf("arm64: %w", err)
	}
	if arch == arm64Arch {
		env.Logf("the kernel is already 64-bit (aarch64): nothing to change")
		return nil
	}
	path := env.Path(filepath.Join(env.BootDir, "config.txt"))
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("arm64: %w", err)
	}
	if on, line := bootfiles.Arm64Effective(string(data)); on {
		// Already set, yet this boot is 32-bit: another reboot cannot help.
		return engine.WithHint(
			fmt.Errorf("arm64: config.txt line %d already sets arm_64bit, but the running kernel is %s", line, arch),
			"check that kernel8.img is on the card's FAT partition and that no later config.txt section sets kernel= for this Pi")
	}
	text, changed := bootfiles.SetArm64(string(data))
	if changed {
		env.Crash("arm64-before-write")
		// On FAT a rename is atomic enough for one small file: the old or
		// the new config.txt, never half of one.
		if err := renameio.WriteFile(path, []byte(text), 0o644); err != nil {
			return fmt.Errorf("arm64: write %q: %w", path, err)
		}
		// The rename is only durable once the directory is flushed too.
		if err := syncDir(filepath.Dir(path)); err != nil {
			return fmt.Errorf("arm64: %w", err)
		}
		env.Logf("set arm_64bit=1 in %s", filepath.Join(env.BootDir, "config.txt"))
		env.Crash("arm64-after-write")
	}
	env.RequestReboot("start the 64-bit kernel")
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
