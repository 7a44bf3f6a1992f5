package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/nixos"
)

// configureStep writes the NixOS configuration onto the mounted SSD:
// /mnt/etc/nixos/configuration.nix (unless nixos.flake is set),
// hardware-configuration.nix, and the root-only secret files they name. A
// file the user edited on the SSD is never overwritten: the step keeps the
// sha256 of every version it wrote, and replaces only those.
type configureStep struct{}

// NewConfigure returns the step that writes /etc/nixos on the SSD.
func NewConfigure() engine.Step { return configureStep{} }

// configureStateFile records the sha256 of each file version configure
// wrote (under installRoot). Root-only: hashes of secret files would let
// anyone guess a Wi-Fi passphrase offline.
const configureStateFile = "/var/lib/nixpi/configure.json"

// keptVersions bounds the hashes kept per file.
const keptVersions = 16

func (configureStep) Name() string    { return "configure" }
func (configureStep) Needs() []string { return []string{"mount"} }
func (configureStep) Describe() string {
	return "write /etc/nixos (configuration.nix, hardware-configuration.nix, root-only secrets) onto the SSD"
}

// writtenState is configureStateFile: path on the installed system →
// sha256 (hex) of the versions configure wrote, oldest first.
type writtenState struct {
	Written map[string][]string `json:"written"`
}

// fileAction is what configure does with one file.
type fileAction int

const (
	actionNone  fileAction = iota // already as wanted
	actionWrite                   // absent, or a version configure wrote
	actionChmod                   // the wanted content, the wrong mode
	actionKeep                    // edited on the SSD since configure wrote it
)

type plannedFile struct {
	nixos.File
	secret bool
	action fileAction
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// configurePlan renders the files and decides, for each, what to do.
func configurePlan(env *engine.Env, ssd *beneath) ([]plannedFile, *writtenState, error) {
	layout := disk.EffectiveLayout(env.Config.Layout)
	// The disk steps size swap = "ram" from the memory preflight read; the
	// labels, which is what the configuration names, come from the layout.
	if _, err := disk.SwapBytes(layout, env.State.RAMBytes); err != nil {
		return nil, nil, err
	}
	d, err := configureDisk(env, layout)
	if err != nil {
		return nil, nil, err
	}
	files, err := nixos.Generate(env.Config, d, nixos.Machine{RAMBytes: env.State.RAMBytes})
	if err != nil {
		return nil, nil, err
	}
	state, err := readWrittenState(ssd)
	if err != nil {
		return nil, nil, err
	}
	var planned []plannedFile
	add := func(f nixos.File, secret bool) error {
		p := plannedFile{File: f, secret: secret}
		mode, err := ssd.Lstat(f.Path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			p.action = actionWrite
		case err != nil:
			return fmt.Errorf("configure: %w", err)
		case !mode.IsRegular():
			p.action = actionKeep
		default:
			have, err := ssd.ReadFile(f.Path)
			if err != nil {
				return fmt.Errorf("configure: %w", err)
			}
			switch {
			case string(have) == string(f.Data) && mode.Perm() == os.FileMode(f.Mode):
				p.action = actionNone
			case string(have) == string(f.Data):
				p.action = actionChmod
			case slices.Contains(state.Written[f.Path], sha256Hex(have)):
				p.action = actionWrite
			default:
				p.action = actionKeep
			}
		}
		planned = append(planned, p)
		return nil
	}
	for _, f := range files.Configs {
		if err := add(f, false); err != nil {
			return nil, nil, err
		}
	}
	for _, f := range files.Secrets {
		if err := add(f, true); err != nil {
			return nil, nil, err
		}
	}
	return planned, state, nil
}

// configureDisk is the SSD as the configuration names it: the layout's
// labels and the PARTUUIDs the disk steps derived for the recorded disk
// (known from the journal's record alone, so configure reads no disk).
func configureDisk(env *engine.Env, layout config.Layout) (nixos.Disk, error) {
	d := nixos.DiskFromLayout(layout)
	if env.State.Target == nil {
		return d, engine.WithHint(errors.New("configure: no target disk is recorded, and the configuration names its partitions by their PARTUUIDs"),
			"run the disk steps first (target, partition, format, mount), or the whole install")
	}
	ids, err := disk.PartUUIDs(layout, env.State.RAMBytes, disk.RecordedIdentity(env.State.Target))
	if err != nil {
		return d, fmt.Errorf("configure: %w", err)
	}
	d.BootPartUUID, d.SwapPartUUID, d.RootPartUUID = ids[disk.RoleBoot], ids[disk.RoleSwap], ids[disk.RoleRoot]
	return d, nil
}

func readWrittenState(ssd *beneath) (*writtenState, error) {
	state := &writtenState{Written: map[string][]string{}}
	data, err := ssd.ReadFile(configureStateFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return state, nil
	case err != nil:
		return nil, fmt.Errorf("configure: %w", err)
	}
	if err := json.Unmarshal(data, state); err != nil {
		return nil, engine.WithHint(fmt.Errorf("configure: read %s: %w", configureStateFile, err),
			fmt.Sprintf("remove %s on the SSD; nixpi then keeps every file in /etc/nixos that it did not write itself", configureStateFile))
	}
	if state.Written == nil {
		state.Written = map[string][]string{}
	}
	return state, nil
}

func writeWrittenState(ssd *beneath, state *writtenState) error {
	data, err := json.MarshalIndent(state, "", "  ")
	if err != nil {
		return err
	}
	if err := ssd.MkdirAll(filepath.Dir(configureStateFile), 0o700); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	if err := ssd.WriteFile(configureStateFile, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	return nil
}

// requireNewSystemMounted refuses to write into the card's own /mnt.
func requireNewSystemMounted(env *engine.Env) error {
	mounts, err := disk.ReadMountInfo(env.Root)
	if err != nil {
		return err
	}
	if disk.MountAt(mounts, env.Path(installRoot)) == nil {
		return engine.WithHint(fmt.Errorf("configure: nothing is mounted at %s, so /etc/nixos would land on the SD card", installRoot),
			"run the mount step first (nixpi-firstboot --only mount)")
	}
	return nil
}

func (configureStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	if err := requireNewSystemMounted(env); err != nil {
		return false, err.Error(), nil
	}
	ssd, err := openSSD(env)
	if err != nil {
		return false, "", err
	}
	defer ssd.Close()
	planned, _, err := configurePlan(env, ssd)
	if err != nil {
		return false, "", err
	}
	kept := 0
	for _, p := range planned {
		switch p.action {
		case actionWrite, actionChmod:
			return false, fmt.Sprintf("%s is not written yet", p.Path), nil
		case actionKeep:
			kept++
		}
	}
	if kept > 0 {
		return true, fmt.Sprintf("/etc/nixos already written (%d file(s) edited on the SSD, kept)", kept), nil
	}
	return true, "/etc/nixos already written", nil
}

func (configureStep) Run(ctx context.Context, env *engine.Env) error {
	if err := requireNewSystemMounted(env); err != nil {
		return err
	}
	ssd, err := openSSD(env)
	if err != nil {
		return err
	}
	defer ssd.Close()
	planned, state, err := configurePlan(env, ssd)
	if err != nil {
		return err
	}
	if err := ssd.MkdirAll(nixos.ConfigDir, 0o755); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	if err := ssd.MkdirAll(nixos.SecretsDir, 0o700); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	if err := ssd.Chmod(nixos.SecretsDir, 0o700); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	for _, p := range planned {
		switch p.action {
		case actionNone:
			env.Logf("%s already written, skipping", p.Path)
		case actionKeep:
			env.Logf("%s was edited on the SSD since nixpi wrote it: kept as it is (delete it to have nixpi write it again)", p.Path)
		case actionChmod:
			if err := ssd.Chmod(p.Path, p.Mode); err != nil {
				return fmt.Errorf("configure: %w", err)
			}
			env.Logf("%s: mode set to %04o", p.Path, p.Mode)
		case actionWrite:
			// Record the version before writing it, so a power cut between
			// the two leaves a file configure knows as its own.
			sum := sha256Hex(p.Data)
			if w := state.Written[p.Path]; !slices.Contains(w, sum) {
				state.Written[p.Path] = append(w, sum)[max(0, len(w)+1-keptVersions):]
				if err := writeWrittenState(ssd, state); err != nil {
					return err
				}
			}
			env.Crash("configure:" + filepath.Base(p.Path))
			if err := ssd.WriteFile(p.Path, p.Data, p.Mode); err != nil {
				return fmt.Errorf("configure: %w", err)
			}
			if p.secret {
				env.Logf("wrote %s (root-only, %04o)", p.Path, p.Mode)
			} else {
				env.Logf("wrote %s (sha256 %s)", p.Path, sum[:16])
			}
		}
	}
	if flake := env.Config.NixOS.Flake; flake != "" {
		env.Logf("nixos.flake = %q: wrote only %s, for nixosConfigurations in your flake to import", flake, nixos.HardwareFile)
	}
	return nil
}
