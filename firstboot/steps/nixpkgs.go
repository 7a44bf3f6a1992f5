package steps

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/nixos"
)

// nixpkgsStep fetches the pinned nixpkgs into the host store, verified by
// its NAR hash (fetchTarball checks sha256 before the path exists).
type nixpkgsStep struct{}

// NewNixpkgs returns the step that fetches and verifies the pinned nixpkgs.
func NewNixpkgs() engine.Step { return nixpkgsStep{} }

func (nixpkgsStep) Name() string    { return "nixpkgs" }
func (nixpkgsStep) Needs() []string { return []string{"nix", "mount"} }
func (nixpkgsStep) Describe() string {
	return "fetching the pinned nixpkgs into the Pi's Nix store"
}

// pinsRecord is nixos.PinsFile.
type pinsRecord struct {
	Nixpkgs struct {
		Release string `json:"release,omitempty"`
		Rev     string `json:"rev"`
		SHA256  string `json:"sha256"`
		URL     string `json:"url"`
		Path    string `json:"path"`
		// Pinned says the revision is nixpi's own pin for the release (not
		// the config's nixpkgs_rev).
		Pinned bool `json:"pinned"`
	} `json:"nixpkgs"`
	Nix struct {
		Version       string `json:"version"`
		Installer     string `json:"installer"`
		TarballSHA256 string `json:"tarball_sha256,omitempty"`
	} `json:"nix"`
}

func nixpkgsSource(env *engine.Env) (nixos.Pin, string, error) {
	pin, err := nixos.Nixpkgs(env.Config.NixOS)
	if err != nil {
		return nixos.Pin{}, "", engine.WithHint(fmt.Errorf("nixpkgs: %w", err), "change nixos.release or set nixos.nixpkgs_rev and nixos.nixpkgs_sha256 in nixpi/nixpi.toml on the card")
	}
	return pin, env.Config.NixOS.NixpkgsTarball(pin.Rev), nil
}

func wantPins(env *engine.Env, pin nixos.Pin, url, path string) []byte {
	var r pinsRecord
	r.Nixpkgs.Release, r.Nixpkgs.Rev, r.Nixpkgs.SHA256, r.Nixpkgs.URL, r.Nixpkgs.Path, r.Nixpkgs.Pinned =
		pin.Release, pin.Rev, pin.SHA256, url, path, pin.Pinned
	if n := env.State.Nix; n != nil {
		r.Nix.Version, r.Nix.Installer, r.Nix.TarballSHA256 = n.Version, n.Installer, n.TarballSHA256
	}
	data, _ := json.MarshalIndent(r, "", "  ")
	return append(data, '\n')
}

func (nixpkgsStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	pin, url, err := nixpkgsSource(env)
	if err != nil {
		return false, "", err
	}
	path := env.State.NixpkgsPath
	if path == "" || !env.Exists(path) {
		return false, fmt.Sprintf("nixpkgs %s is not fetched yet", shortRev(pin.Rev)), nil
	}
	have, _ := os.ReadFile(env.Path(filepath.Join(installRoot, nixos.PinsFile)))
	if !bytes.Equal(have, wantPins(env, pin, url, path)) {
		return false, fmt.Sprintf("%s does not record nixpkgs %s yet", nixos.PinsFile, shortRev(pin.Rev)), nil
	}
	return true, fmt.Sprintf("nixpkgs %s already fetched and verified (%s)", shortRev(pin.Rev), path), nil
}

func shortRev(rev string) string { return rev[:min(12, len(rev))] }

func (nixpkgsStep) Run(ctx context.Context, env *engine.Env) error {
	if err := requireNewSystemMounted(env); err != nil {
		return err
	}
	pin, url, err := nixpkgsSource(env)
	if err != nil {
		return err
	}
	env.Logf("fetching nixpkgs %s from %s (sha256 %s)", shortRev(pin.Rev), url, pin.SHA256)
	expr := fmt.Sprintf("builtins.fetchTarball { url = %s; sha256 = %s; }", nixos.NixString(url), nixos.NixString(pin.SHA256))
	out, err := env.Run.Output(ctx, nixBin(env, "nix-instantiate"), "--eval", "--read-write-mode", "--json", "-E", expr)
	if err != nil {
		err = fmt.Errorf("nixpkgs: fetch %s: %w", url, err)
		if strings.Contains(err.Error(), "hash mismatch") {
			return engine.WithHint(err, "the tarball is not the pinned nixpkgs: check nixos.nixpkgs_url, nixos.nixpkgs_rev and nixos.nixpkgs_sha256 in nixpi/nixpi.toml")
		}
		return engine.WithHint(err, "check that the Pi can reach "+url)
	}
	var path string
	if err := json.Unmarshal(bytes.TrimSpace(out), &path); err != nil || !strings.HasPrefix(path, "/nix/store/") {
		return fmt.Errorf("nixpkgs: nix-instantiate printed %q, not a store path", strings.TrimSpace(string(out)))
	}
	env.State.NixpkgsPath = path
	// Beneath /mnt without links, as configure writes the rest of /etc/nixos.
	ssd, err := openSSD(env)
	if err != nil {
		return fmt.Errorf("nixpkgs: %w", err)
	}
	defer ssd.Close()
	if err := ssd.MkdirAll(nixos.ConfigDir, 0o755); err != nil {
		return fmt.Errorf("nixpkgs: %w", err)
	}
	if err := ssd.WriteFile(nixos.PinsFile, wantPins(env, pin, url, path), 0o644); err != nil {
		return fmt.Errorf("nixpkgs: %w", err)
	}
	env.Logf("nixpkgs %s is %s; recorded in %s", shortRev(pin.Rev), path, nixos.PinsFile)
	return nil
}
