package steps

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nixpi/nixpi/firstboot/engine"
)

// installStep puts the built system onto the SSD as nixos-anywhere does
// (src/nixos-anywhere.sh): copy the closure into the SSD's store, then
// nixos-install --system from the SAME nixpkgs, which sets the system
// profile, touches /etc/NIXOS and installs the boot loader (extlinux.conf).
type installStep struct{}

// NewInstall returns the step that installs the built system onto the SSD.
func NewInstall() engine.Step { return installStep{} }

func (installStep) Name() string    { return "install" }
func (installStep) Needs() []string { return []string{"system"} }
func (installStep) Describe() string {
	return "installing NixOS onto the SSD (nix copy, nixos-install)"
}

// On the installed system.
const (
	systemProfile = "/nix/var/nix/profiles/system"
	nixosMarker   = "/etc/NIXOS"
	extlinuxConf  = "/boot/extlinux/extlinux.conf"
)

// profileTarget follows the SSD's system profile (system → system-N-link
// → /nix/store/...) inside the SSD and returns the store path it names.
func profileTarget(env *engine.Env) (string, error) {
	p := systemProfile
	for range 8 {
		target, err := os.Readlink(env.Path(filepath.Join(installRoot, p)))
		if err != nil {
			return "", fmt.Errorf("%s on the SSD: %w", p, err)
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		if filepath.Dir(target) == "/nix/store" {
			return target, nil
		}
		p = target
	}
	return "", fmt.Errorf("%s on the SSD: too many links", systemProfile)
}

// installedSystem says what is missing for the SSD to hold SystemPath as
// installed: "" when nothing.
func installedSystem(env *engine.Env) string {
	want := env.State.SystemPath
	got, err := profileTarget(env)
	switch {
	case err != nil:
		return err.Error()
	case got != want:
		return fmt.Sprintf("the SSD's system profile is %s, not %s", got, want)
	case !env.Exists(filepath.Join(installRoot, got)):
		return fmt.Sprintf("%s is not in the SSD's store", got)
	case !env.Exists(filepath.Join(installRoot, nixosMarker)):
		return nixosMarker + " is missing on the SSD"
	case !env.Exists(filepath.Join(installRoot, extlinuxConf)):
		return extlinuxConf + " is missing on the SSD"
	}
	return ""
}

func (installStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	if env.State.SystemPath == "" {
		return false, "no system built yet", nil
	}
	if why := installedSystem(env); why != "" {
		return false, why, nil
	}
	return true, "NixOS already installed on the SSD: " + env.State.SystemPath, nil
}

func (installStep) Run(ctx context.Context, env *engine.Env) error {
	if err := requireNewSystemMounted(env); err != nil {
		return err
	}
	sys, nixpkgs := env.State.SystemPath, env.State.NixpkgsPath
	if sys == "" || nixpkgs == "" {
		return errors.New("install: no system built: the system step has not run")
	}
	root := env.Path(installRoot)
	nix := nixBin(env, "nix")
	env.Logf("copying the system's closure into the SSD's store")
	if _, _, err := runNix(ctx, env, "install: copy", []string{nix, "copy", "--no-check-sigs", "--to", "local?root=" + root, sys,
		"--log-format", "internal-json"}); err != nil {
		return engine.WithHint(err, "check that the SSD has space (df -h /mnt) and read nixpi/install.log on the card")
	}
	env.Crash("install:copied")
	out, _, err := runNix(ctx, env, "install: nixos-install-tools", []string{nix, "build", "--file", nixpkgs, "nixos-install-tools",
		"--no-link", "--print-out-paths", "--log-format", "internal-json"})
	if err != nil {
		return err
	}
	tools := lastStorePath(out)
	if tools == "" {
		return fmt.Errorf("install: nix build nixos-install-tools printed no store path (stdout %q)", strings.TrimSpace(out))
	}
	// nixos-install runs the host's nix and nix-env: put this Nix first.
	path := "PATH=" + filepath.Dir(nix) + ":/usr/sbin:/usr/bin:/sbin:/bin"
	env.Logf("running nixos-install for %s", sys)
	if _, err := env.Run.Output(ctx, env.Tools.Env, path, filepath.Join(tools, "bin", "nixos-install"),
		"--root", root, "--system", sys, "--no-root-passwd", "--no-channel-copy"); err != nil {
		return engine.WithHint(fmt.Errorf("install: nixos-install: %w", err), "read nixpi/install.log on the card for its output")
	}
	env.Crash("install:installed")
	if why := installedSystem(env); why != "" {
		return fmt.Errorf("install: nixos-install finished, but %s", why)
	}
	env.Logf("NixOS installed on the SSD: profile system → %s", sys)
	return nil
}
