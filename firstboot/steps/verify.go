package steps

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/nixos"
)

// verifyStep checks, reading only, that the SSD holds a NixOS a Pi 4 can
// boot: extlinux.conf and everything it names, the boot files as built,
// the system profile, /etc/NIXOS, and filesystem names that match the disk.
type verifyStep struct{}

// NewVerify returns the read-only check of the installed SSD.
func NewVerify() engine.Step { return verifyStep{} }

func (verifyStep) Name() string    { return "verify" }
func (verifyStep) Needs() []string { return []string{"firmware"} }
func (verifyStep) Describe() string {
	return "checking the SSD: boot files, extlinux.conf, system profile, labels"
}

// Probe always says to run: the check is cheap and reads only.
func (verifyStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	return false, "checking the installed SSD", nil
}

func (verifyStep) Run(ctx context.Context, env *engine.Env) error {
	var missing []string
	missing = append(missing, checkExtlinux(env)...)
	for _, n := range bootfiles.SSDBootFiles {
		if env.State.Firmware[n] == "" {
			missing = append(missing, "no "+n+" recorded by the firmware step")
		}
	}
	for n, src := range env.State.Firmware {
		if !sameFile(env.Path(filepath.Join(bootMount, n)), env.Path(src)) {
			missing = append(missing, fmt.Sprintf("/boot/%s is missing or differs from %s", n, src))
		}
	}
	if have, _ := os.ReadFile(env.Path(filepath.Join(bootMount, "config.txt"))); string(have) != bootfiles.SSDConfigTxt {
		missing = append(missing, "/boot/config.txt is missing or not the one nixpi writes")
	}
	if got, err := profileTarget(env); err != nil {
		missing = append(missing, err.Error())
	} else if got != env.State.SystemPath {
		missing = append(missing, fmt.Sprintf("the system profile points at %s, not the built %s", got, env.State.SystemPath))
	}
	if !env.Exists(filepath.Join(installRoot, nixosMarker)) {
		missing = append(missing, nixosMarker+" is missing")
	}
	labels, err := checkLabels(ctx, env)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	missing = append(missing, labels...)
	slices.Sort(missing)
	if len(missing) > 0 {
		return engine.WithHint(fmt.Errorf("verify: the SSD is not a complete NixOS install: %s", strings.Join(missing, "; ")),
			"delete nixpi/FAILED on the card to rerun; the step that makes the missing piece (install, firmware) is redone when its check fails")
	}
	env.Logf("the SSD holds NixOS %s with its boot files; extlinux.conf and labels check out", env.State.SystemPath)
	return nil
}

// checkExtlinux reads extlinux.conf and checks that every file it names
// exists on the FAT. U-Boot resolves relative paths against the file's
// directory, absolute ones against the partition.
func checkExtlinux(env *engine.Env) []string {
	conf := env.Path(filepath.Join(installRoot, extlinuxConf))
	data, err := os.ReadFile(conf)
	if err != nil {
		return []string{extlinuxConf + " is missing"}
	}
	boot := env.Path(bootMount)
	var missing []string
	kernels := 0
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		key := strings.ToUpper(f[0])
		switch key {
		case "KERNEL", "LINUX", "INITRD", "FDT", "FDTDIR":
		default:
			continue
		}
		if key == "KERNEL" || key == "LINUX" {
			kernels++
		}
		for _, p := range strings.Split(f[1], ",") {
			full := filepath.Join(boot, p)
			if !filepath.IsAbs(p) {
				full = filepath.Join(boot, "extlinux", p)
			}
			rel, err := filepath.Rel(boot, full)
			if err != nil || strings.HasPrefix(rel, "..") {
				missing = append(missing, fmt.Sprintf("extlinux.conf names %s %s, outside the boot partition", key, p))
				continue
			}
			fi, err := os.Stat(full)
			switch {
			case err != nil:
				missing = append(missing, fmt.Sprintf("extlinux.conf names %s %s, which is not on the boot partition", key, p))
			case key == "FDTDIR" && !fi.IsDir():
				missing = append(missing, fmt.Sprintf("extlinux.conf's FDTDIR %s is not a directory", p))
			}
		}
	}
	if kernels == 0 {
		missing = append(missing, "extlinux.conf names no kernel")
	}
	return missing
}

var devRefRE = regexp.MustCompile(`/dev/disk/by-(label|uuid|partuuid)/([^"\s]+)`)

// checkLabels compares the filesystems hardware-configuration.nix names
// (by label, UUID or PARTUUID) with what the target disk's partitions carry.
func checkLabels(ctx context.Context, env *engine.Env) ([]string, error) {
	data, err := os.ReadFile(env.Path(filepath.Join(installRoot, nixos.HardwareFile)))
	if err != nil {
		return []string{nixos.HardwareFile + " is missing"}, nil
	}
	d, err := recordedDisk(ctx, env)
	if err != nil {
		return nil, err
	}
	var labels, uuids, partuuids []string
	d.Walk(func(p *disk.Device) {
		if p != d {
			labels, uuids = append(labels, p.Label), append(uuids, strings.ToLower(p.UUID))
			partuuids = append(partuuids, strings.ToLower(p.PartUUID))
		}
	})
	var missing []string
	for _, m := range devRefRE.FindAllStringSubmatch(string(data), -1) {
		kind, name := m[1], m[2]
		ok := kind == "label" && slices.Contains(labels, name) || kind == "uuid" && slices.Contains(uuids, strings.ToLower(name)) ||
			kind == "partuuid" && slices.Contains(partuuids, strings.ToLower(name))
		if !ok {
			missing = append(missing, fmt.Sprintf("%s names /dev/disk/by-%s/%s, which no partition of %s has", nixos.HardwareFile, kind, name, d.DevPath()))
		}
	}
	return missing, nil
}
