package steps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/engine"
)

// firmwareStep puts the Pi 4's boot chain onto the SSD's FAT (/mnt/boot)
// from the same nixpkgs, as nixpkgs' sd-image-aarch64.nix does: U-Boot, the
// GIC armstub, the dtbs and fixup4.dat, then config.txt, then start4.elf.
// The bootloader passes over a FAT without start4.elf, so a power cut at
// any point leaves an SSD that is either complete or not tried at all.
type firmwareStep struct{}

// NewFirmware returns the step that writes the Pi's boot files to the SSD.
func NewFirmware() engine.Step { return firmwareStep{} }

func (firmwareStep) Name() string    { return "firmware" }
func (firmwareStep) Needs() []string { return []string{"install"} }
func (firmwareStep) Describe() string {
	return "writing the Pi 4 firmware, U-Boot and config.txt onto the SSD"
}

// The nixpkgs attributes the boot files come from.
var firmwarePackages = []string{"raspberrypifw", "ubootRaspberryPi4_64bit", "raspberrypi-armstubs"}

const firmwareBoot = "share/raspberrypi/boot"

// bootFile is one file on the FAT: its name there, the package and path
// inside it it comes from, and whether a package may lack it.
type bootFile struct {
	Name, Pkg, Src string
	Optional       bool
}

var bootFiles = []bootFile{
	{"start4.elf", "raspberrypifw", firmwareBoot + "/start4.elf", false},
	{"fixup4.dat", "raspberrypifw", firmwareBoot + "/fixup4.dat", false},
	{"bcm2711-rpi-4-b.dtb", "raspberrypifw", firmwareBoot + "/bcm2711-rpi-4-b.dtb", false},
	{"bcm2711-rpi-400.dtb", "raspberrypifw", firmwareBoot + "/bcm2711-rpi-400.dtb", true},
	{"bcm2711-rpi-cm4.dtb", "raspberrypifw", firmwareBoot + "/bcm2711-rpi-cm4.dtb", true},
	{"bcm2711-rpi-cm4s.dtb", "raspberrypifw", firmwareBoot + "/bcm2711-rpi-cm4s.dtb", true},
	{"u-boot-rpi4.bin", "ubootRaspberryPi4_64bit", "u-boot.bin", false},
	{"armstub8-gic.bin", "raspberrypi-armstubs", "armstub8-gic.bin", false},
}

const (
	bootMount  = installRoot + "/boot"
	overlaysOn = "overlays"
	// start4 is the file whose presence makes the bootloader boot a FAT.
	start4 = "start4.elf"
)

// firmwarePlan maps each FAT file (overlays/x.dtbo included) to its store
// source, from the recorded package paths.
func firmwarePlan(env *engine.Env, pkgs map[string]string) (map[string]string, error) {
	plan := map[string]string{}
	for _, f := range bootFiles {
		src := filepath.Join(pkgs[f.Pkg], f.Src)
		if _, err := os.Stat(env.Path(src)); err != nil {
			if f.Optional && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("firmware: %s has no %s: %w", f.Pkg, f.Src, err)
		}
		plan[f.Name] = src
	}
	overlays := filepath.Join(pkgs["raspberrypifw"], firmwareBoot, overlaysOn)
	entries, err := os.ReadDir(env.Path(overlays))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("firmware: %w", err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			plan[overlaysOn+"/"+e.Name()] = filepath.Join(overlays, e.Name())
		}
	}
	return plan, nil
}

// firmwareOrder is the plan's files in the order they are written, sorted
// but for start4.elf, which comes after them and config.txt.
func firmwareOrder(plan map[string]string) (before []string) {
	for n := range plan {
		if n != start4 {
			before = append(before, n)
		}
	}
	sort.Strings(before)
	return before
}

// firmwareMissing is the first FAT file, in the order they are written,
// that differs from its source, or "".
func firmwareMissing(env *engine.Env, plan map[string]string) string {
	for _, n := range firmwareOrder(plan) {
		if !sameFile(env.Path(filepath.Join(bootMount, n)), env.Path(plan[n])) {
			return n
		}
	}
	if !configTxtWritten(env) {
		return "config.txt"
	}
	if !sameFile(env.Path(filepath.Join(bootMount, start4)), env.Path(plan[start4])) {
		return start4
	}
	return ""
}

func configTxtWritten(env *engine.Env) bool {
	have, _ := os.ReadFile(env.Path(filepath.Join(bootMount, "config.txt")))
	return string(have) == bootfiles.SSDConfigTxt
}

func sameFile(a, b string) bool {
	x, err := os.ReadFile(a)
	if err != nil {
		return false
	}
	y, err := os.ReadFile(b)
	return err == nil && bytes.Equal(x, y)
}

func (firmwareStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	if len(env.State.Firmware) == 0 {
		return false, "no boot files on the SSD yet", nil
	}
	if n := firmwareMissing(env, env.State.Firmware); n != "" {
		return false, fmt.Sprintf("%s on the SSD's boot partition is missing or differs", n), nil
	}
	return true, fmt.Sprintf("boot files and config.txt already on the SSD (%d files)", len(env.State.Firmware)), nil
}

func (firmwareStep) Run(ctx context.Context, env *engine.Env) error {
	if err := requireNewSystemMounted(env); err != nil {
		return err
	}
	nixpkgs := env.State.NixpkgsPath
	if nixpkgs == "" {
		return errors.New("firmware: no nixpkgs recorded: the nixpkgs step has not run")
	}
	argv := append([]string{nixBin(env, "nix"), "build", "--file", nixpkgs}, firmwarePackages...)
	out, _, err := runNix(ctx, env, "firmware", append(argv, "--no-link", "--print-out-paths", "--log-format", "internal-json"))
	if err != nil {
		return err
	}
	pkgs, err := firmwarePaths(env, strings.Fields(out))
	if err != nil {
		return err
	}
	plan, err := firmwarePlan(env, pkgs)
	if err != nil {
		return err
	}
	// Recorded first: a rerun after a power cut compares with these.
	env.State.Firmware = plan
	if n := firmwareMissing(env, plan); n != "" && n != start4 {
		// A start4.elf from an earlier run goes first when anything else
		// changes, so no cut leaves it beside a half-updated FAT.
		if err := removeBootFile(env.Path(filepath.Join(bootMount, start4))); err != nil {
			return err
		}
	}
	written := 0
	for _, n := range append(firmwareOrder(plan), "config.txt", start4) {
		dst := env.Path(filepath.Join(bootMount, n))
		var data []byte
		switch {
		case n == "config.txt":
			data = []byte(bootfiles.SSDConfigTxt)
		case sameFile(dst, env.Path(plan[n])):
			continue
		default:
			if data, err = os.ReadFile(env.Path(plan[n])); err != nil {
				return fmt.Errorf("firmware: %w", err)
			}
			written++
		}
		if err := writeBootFile(dst, data); err != nil {
			return err
		}
		env.Crash("firmware:" + n)
	}
	env.Logf("wrote %d boot files and config.txt to the SSD's boot partition (%d already there)", written, len(plan)-written)
	return nil
}

// removeBootFile deletes a file on the FAT, if there, and syncs its directory.
func removeBootFile(path string) error {
	if err := os.Remove(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// firmwarePaths tells the built packages apart by what they contain, since
// --print-out-paths does not promise the order of its arguments.
func firmwarePaths(env *engine.Env, paths []string) (map[string]string, error) {
	marker := map[string]string{
		"raspberrypifw":           firmwareBoot + "/start4.elf",
		"ubootRaspberryPi4_64bit": "u-boot.bin",
		"raspberrypi-armstubs":    "armstub8-gic.bin",
	}
	pkgs := map[string]string{}
	for _, p := range paths {
		for pkg, m := range marker {
			if _, done := pkgs[pkg]; !done && env.Exists(filepath.Join(p, m)) {
				pkgs[pkg] = p
			}
		}
	}
	for _, pkg := range firmwarePackages {
		if pkgs[pkg] == "" {
			return nil, fmt.Errorf("firmware: none of the built paths %q holds %s from %s", paths, marker[pkg], pkg)
		}
	}
	return pkgs, nil
}

// writeBootFile replaces a file on the FAT through a temporary file and a
// rename, so a power cut leaves the old file or the new, never half of one.
// No chmod: vfat refuses mode changes it cannot store.
func writeBootFile(dst string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(dst), ".nixpi-"+filepath.Base(dst))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("firmware: write %q: %w", tmp, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	return syncDir(filepath.Dir(dst))
}
