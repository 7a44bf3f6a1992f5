package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/nixos"
)

// systemStep builds the NixOS toplevel in the host store from the pinned
// nixpkgs and /mnt/etc/nixos (or the user's flake), with the SSD's swap on
// first: evaluating NixOS takes 1-2 GiB.
type systemStep struct{}

// NewSystem returns the step that builds the NixOS system.
func NewSystem() engine.Step { return systemStep{} }

func (systemStep) Name() string    { return "system" }
func (systemStep) Needs() []string { return []string{"nixpkgs", "configure"} }
func (systemStep) Describe() string {
	return "building NixOS (downloads most of it from the binary cache)"
}

// systemBuild is what the build is made from: the argv and a digest of its
// inputs, so a changed configuration is built again.
func systemBuild(env *engine.Env) (argv []string, inputs string, err error) {
	nixpkgs := env.State.NixpkgsPath
	if nixpkgs == "" {
		return nil, "", errors.New("system: no nixpkgs recorded: the nixpkgs step has not run")
	}
	h := sha256.New()
	fmt.Fprintf(h, "nixpkgs %s\nflake %s\n", nixpkgs, env.Config.NixOS.Flake)
	files := []string{nixos.HardwareFile}
	if env.Config.NixOS.Flake == "" {
		files = append(files, nixos.ConfigurationFile)
	}
	for _, f := range files {
		data, err := os.ReadFile(env.Path(filepath.Join(installRoot, f)))
		if err != nil {
			return nil, "", engine.WithHint(fmt.Errorf("system: %w", err), "run the configure step first")
		}
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	logArgs := []string{"--no-link", "--print-out-paths", "--log-format", "internal-json", "-L"}
	if ref, name, ok := strings.Cut(env.Config.NixOS.Flake, "#"); ok {
		argv = append([]string{nixBin(env, "nix"), "build", ref + "#nixosConfigurations." + name + ".config.system.build.toplevel"}, logArgs...)
	} else {
		argv = append([]string{nixBin(env, "nix"), "build", "--file", filepath.Join(nixpkgs, "nixos"),
			"--arg", "configuration", env.Path(filepath.Join(installRoot, nixos.ConfigurationFile)), "system"}, logArgs...)
	}
	return argv, hex.EncodeToString(h.Sum(nil)), nil
}

func (systemStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	_, inputs, err := systemBuild(env)
	if err != nil {
		return false, err.Error(), nil
	}
	path := env.State.SystemPath
	switch {
	case path == "" || !env.Exists(path):
		return false, "the system is not built yet", nil
	case env.State.SystemInputs != inputs:
		return false, "the configuration changed since the system was built", nil
	}
	return true, "system already built: " + path, nil
}

func (systemStep) Run(ctx context.Context, env *engine.Env) error {
	argv, inputs, err := systemBuild(env)
	if err != nil {
		return err
	}
	if err := systemSwapOn(ctx, env); err != nil {
		return err
	}
	env.Logf("building the NixOS system (progress every %s)", nixProgressEvery)
	out, p, err := runNix(ctx, env, "system", argv)
	if peaks := memoryPeaks(env); peaks != "" {
		env.Logf("%s", peaks)
	}
	if errors.Is(err, errOutOfMemory) {
		return outOfMemoryError(env, err)
	}
	if err != nil {
		return engine.WithHint(err, "read nixpi/install.log on the card; an evaluation error names the file and line in /etc/nixos on the SSD")
	}
	path := lastStorePath(out)
	if path == "" {
		return fmt.Errorf("system: nix build printed no store path (stdout %q)", strings.TrimSpace(out))
	}
	env.Crash("system:built")
	env.State.SystemPath, env.State.SystemInputs = path, inputs
	env.Logf("NixOS system built: %s (%s)", path, p.summary())
	return nil
}

// systemSwapOn turns the SSD's swap on (the mount step did, but a person
// may have turned it off since): a 1 GB Pi cannot evaluate NixOS without.
func systemSwapOn(ctx context.Context, env *engine.Env) error {
	if disk.EffectiveLayout(env.Config.Layout).SwapSize.Resolve(env.State.RAMBytes) == 0 {
		return nil
	}
	d, plan, err := diskAndPlan(ctx, env)
	if err != nil {
		return fmt.Errorf("system: find the swap partition: %w", err)
	}
	s := plan.Part(disk.RoleSwap)
	if s == nil {
		return nil
	}
	return swapOn(ctx, env, disk.PartitionNode(d.DevPath(), s.Number))
}

// outOfMemoryError says what happened and what swap to try: RAM and swap
// together of at least 4 GiB, and at least double the swap there was.
func outOfMemoryError(env *engine.Env, err error) error {
	ram := config.Size(env.State.RAMBytes)
	swap := disk.EffectiveLayout(env.Config.Layout).SwapSize.Resolve(env.State.RAMBytes)
	try := max(config.MinMemoryAndSwap-ram, 2*swap, 2*config.GiB)
	try = (try + config.GiB - 1) / config.GiB * config.GiB
	hint := fmt.Sprintf("Nix ran out of memory building NixOS: give it more swap, layout.swap_size = %q in nixpi/nixpi.toml (the SSD is partitioned again, so set target.wipe = true), then delete nixpi/FAILED", try.String())
	// The NixOS manual's options reference evaluates every option: the
	// generated configuration leaves it out on Pis of nixos.SmallPiRAM or
	// less (hardware-configuration.nix), so only a bigger Pi still has it.
	if ram > nixos.SmallPiRAM {
		hint += "; or leave the NixOS manual out, which costs evaluation memory: documentation.nixos.enable = false in nixos.extra_module (or your flake), as nixpi does on Pis with " + nixos.SmallPiRAM.String() + " or less"
	} else {
		hint += " (the NixOS manual is already left out on a Pi with " + nixos.SmallPiRAM.String() + " or less)"
	}
	return engine.WithHint(fmt.Errorf("%w; the Pi has %s of memory and %s of swap", err, ram.Approx(), swap.Approx()), hint)
}
