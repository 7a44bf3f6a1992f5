// Package hook is the device side of nixpi's first-boot hook: what
// `nixpi-firstboot hook` does when systemd runs it from the kernel command
// line (systemd.run=) on the Pi's first boot. It installs the payload the
// builder put on the card into the root filesystem, checks that the
// nixpi-firstboot service is enabled, and takes the hook words out of
// cmdline.txt so the next boot is a normal one that starts the service.
//
// It runs before the network, with a clock that may be wrong and no TTY, and
// it may be interrupted at any point by a power cut: every step is safe to
// run again, and running the whole hook twice is harmless.
package hook

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/cardpath"
)

// Env is what the hook may touch.
type Env struct {
	// Root is the root filesystem the payload is installed into: "/" on the
	// device, a mount point or t.TempDir() in tests.
	Root string
	// BootDir is the FAT partition's mount point as the device sees it
	// ("/boot/firmware" on Bookworm and later, "/boot" before). The hook
	// words name it; its files are read under Root.
	BootDir string
	// Logf receives one line per action for the console and log; nil is
	// quiet.
	Logf func(format string, args ...any)
}

// HookEnv is the name the package map uses for Env.
type HookEnv = Env

func (e Env) logf(format string, args ...any) {
	if e.Logf != nil {
		e.Logf(format, args...)
	}
}

// Run installs the payload, checks the unit is enabled and removes the hook
// words from cmdline.txt, in that order, so a power cut at any point leaves
// either the hook in place (it runs again on the next boot) or a complete
// installation.
func Run(ctx context.Context, env Env) error {
	if env.Root == "" || !path.IsAbs(env.BootDir) {
		return fmt.Errorf("hook: root %q and boot dir %q: both must be set, the boot dir absolute (e.g. /boot/firmware)", env.Root, env.BootDir)
	}
	fat := filepath.Join(env.Root, env.BootDir)
	payload := filepath.Join(fat, cardpath.Payload)
	env.logf("installing %s into %s", payload, env.Root)
	if err := ExtractFile(ctx, payload, env.Root, env.logf); err != nil {
		return err
	}
	if err := checkEnabled(env.Root); err != nil {
		return err
	}
	env.logf("%s is enabled", cardpath.UnitName)
	if err := ctx.Err(); err != nil {
		return err
	}
	cmdline := filepath.Join(fat, cardpath.Cmdline)
	removed, err := RemoveHookWords(cmdline, bootfiles.HookWords(env.BootDir))
	if err != nil {
		return err
	}
	if removed {
		env.logf("removed the first-boot hook from %s", cmdline)
	} else {
		env.logf("%s has no first-boot hook words (already removed), leaving it as it is", cmdline)
	}
	return nil
}

// checkEnabled verifies what enabling means here: the multi-user.target.wants
// link exists and leads to the unit file, a regular file.
func checkEnabled(rootDir string) error {
	root, err := openRoot(rootDir)
	if err != nil {
		return err
	}
	defer root.Close()
	target, err := root.Readlink(cardpath.UnitWantedBy)
	if err != nil {
		return fmt.Errorf("%s is not enabled: %w; the payload must carry the /%s symlink (rebuild the card with nixpi build)", cardpath.UnitName, err, cardpath.UnitWantedBy)
	}
	// Resolve the link within the root filesystem: relative to its
	// directory, or from Root when absolute.
	resolved := path.Join(path.Dir(cardpath.UnitWantedBy), target)
	if path.IsAbs(target) {
		resolved = path.Clean(target)[1:]
	}
	fi, err := root.Stat(resolved)
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		return fmt.Errorf("%s is not enabled: /%s points at %q: %w; rebuild the card with nixpi build", cardpath.UnitName, cardpath.UnitWantedBy, target, err)
	}
	return nil
}
