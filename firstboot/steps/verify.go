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
// boot, on what the Pi itself reads: the FAT mounted at /mnt/boot is the
// recorded disk's boot partition; on it, the firmware, config.txt and the
// files it names, the board's dtb, and extlinux.conf's DEFAULT entry with
// every file it names, each non-empty and equal to its store source; that
// entry boots the installed system's init; the system profile, /etc/NIXOS,
// and filesystem names that match the disk.
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
	d, plan, err := diskAndPlan(ctx, env)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	var missing []string
	mounted, err := checkBootMount(env, d, plan)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if mounted != "" {
		// What /mnt/boot holds then is not what the Pi reads: nothing on it
		// is worth checking.
		missing = append(missing, mounted)
	} else {
		missing = append(missing, checkFirmwareFAT(env)...)
		missing = append(missing, checkExtlinux(env)...)
	}
	if got, err := profileTarget(env); err != nil {
		missing = append(missing, err.Error())
	} else if got != env.State.SystemPath {
		missing = append(missing, fmt.Sprintf("the system profile points at %s, not the built %s", got, env.State.SystemPath))
	}
	if !env.Exists(filepath.Join(installRoot, nixosMarker)) {
		missing = append(missing, nixosMarker+" is missing")
	}
	missing = append(missing, checkLabels(env, d)...)
	slices.Sort(missing)
	if len(missing) > 0 {
		return engine.WithHint(fmt.Errorf("verify: the SSD is not a complete NixOS install: %s", strings.Join(missing, "; ")),
			"delete nixpi/FAILED on the card to rerun; the step that makes the missing piece (mount, install, firmware) is redone when its check fails")
	}
	env.Logf("the SSD holds NixOS %s with its boot files; extlinux.conf and labels check out", env.State.SystemPath)
	return nil
}

// checkBootMount says what is wrong with the mount at /mnt/boot, "" when it
// is the recorded disk's boot partition as vfat. Without it the install
// writes the boot files into the root filesystem, and the FAT the Pi reads
// stays empty.
func checkBootMount(env *engine.Env, d *disk.Device, plan *disk.Plan) (string, error) {
	node := disk.PartitionNode(d.DevPath(), plan.Part(disk.RoleBoot).Number)
	mounts, err := disk.ReadMountInfo(env.Root)
	if err != nil {
		return "", err
	}
	m := disk.MountAt(mounts, env.Path(bootMount))
	if m == nil {
		return fmt.Sprintf("nothing is mounted at %s, so the boot files went into the root filesystem and the SSD's boot partition %s, which the Pi reads, lacks them", bootMount, node), nil
	}
	if m.Source != node || m.FSType != "vfat" {
		return fmt.Sprintf("%s is mounted from %s (%s), not from the SSD's boot partition %s (vfat)", bootMount, m.Source, m.FSType, node), nil
	}
	// The device number too: a name in mountinfo is only what mount was given.
	if part := disk.Find([]disk.Device{*d}, node); part != nil && part.MajMin != "" && part.MajMin != m.MajMin {
		return fmt.Sprintf("%s is mounted from device %s, but the SSD's boot partition %s is device %s", bootMount, m.MajMin, node, part.MajMin), nil
	}
	return "", nil
}

// boardDTB is the device tree the firmware loads for the running board, by
// /proc/device-tree/model; off a Pi (the QEMU run), the Pi 4 B's.
func boardDTB(env *engine.Env) string {
	data, _ := os.ReadFile(env.Path("/proc/device-tree/model"))
	switch model := string(data); {
	case strings.HasPrefix(model, "Raspberry Pi 400"):
		return "bcm2711-rpi-400.dtb"
	case strings.HasPrefix(model, "Raspberry Pi Compute Module 4S"):
		return "bcm2711-rpi-cm4s.dtb"
	case strings.HasPrefix(model, "Raspberry Pi Compute Module 4"):
		return "bcm2711-rpi-cm4.dtb"
	}
	return "bcm2711-rpi-4-b.dtb"
}

// fileProblem says what is wrong with the file at full (what names it in
// messages): missing, not a file, empty, or not equal to src (a path under
// Root; "" when the store has no source to compare with). "" when nothing.
func fileProblem(env *engine.Env, what, full, src string) string {
	fi, err := os.Stat(full)
	switch {
	case err != nil:
		return what + " is missing"
	case !fi.Mode().IsRegular():
		return what + " is not a file"
	case fi.Size() == 0:
		return what + " is empty"
	case src != "" && !sameFile(full, src):
		return fmt.Sprintf("%s differs from %s", what, strings.TrimPrefix(src, strings.TrimSuffix(env.Root, "/")))
	}
	return ""
}

// checkFirmwareFAT checks what the Pi 4 firmware reads from the FAT:
// start4.elf, fixup4.dat, config.txt, the kernel= and armstub= files it
// names, the board's dtb, and every other file the firmware step recorded.
func checkFirmwareFAT(env *engine.Env) []string {
	var missing []string
	for _, n := range bootfiles.SSDBootFiles {
		if env.State.Firmware[n] == "" {
			missing = append(missing, "no "+n+" recorded by the firmware step")
		}
	}
	conf, err := os.ReadFile(env.Path(filepath.Join(bootMount, "config.txt")))
	switch {
	case err != nil:
		missing = append(missing, "/boot/config.txt is missing")
	case string(conf) != bootfiles.SSDConfigTxt:
		missing = append(missing, "/boot/config.txt is not the one nixpi writes")
	}
	names := []string{start4, "fixup4.dat", boardDTB(env)}
	for _, key := range []string{"kernel", "armstub"} {
		if v, ok := bootfiles.Pi4Value(string(conf), key); ok {
			names = append(names, v)
		} else if err == nil {
			missing = append(missing, fmt.Sprintf("/boot/config.txt names no %s= for a Pi 4", key))
		}
	}
	for n := range env.State.Firmware {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range slices.Compact(names) {
		src := ""
		if s := env.State.Firmware[n]; s != "" {
			src = env.Path(s)
		}
		if p := fileProblem(env, "/boot/"+n, env.Path(filepath.Join(bootMount, n)), src); p != "" {
			missing = append(missing, p)
		}
	}
	return missing
}

// extlinuxEntry is one LABEL of extlinux.conf, with the keys U-Boot reads.
type extlinuxEntry struct {
	label                               string
	kernel, initrd, fdt, fdtdir, append string
}

// parseExtlinux reads extlinux.conf as U-Boot does: keywords in any case,
// the last DEFAULT, and the first LABEL of a name.
func parseExtlinux(text string) (def string, entries []*extlinuxEntry) {
	var cur *extlinuxEntry
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		key, value := line, ""
		if i := strings.IndexAny(line, " \t"); i >= 0 {
			key, value = line[:i], strings.TrimSpace(line[i:])
		}
		switch strings.ToLower(key) {
		case "default":
			def = value
		case "label":
			cur = &extlinuxEntry{label: value}
			entries = append(entries, cur)
		}
		if cur == nil {
			continue
		}
		switch strings.ToLower(key) {
		case "kernel", "linux":
			cur.kernel = value
		case "initrd":
			cur.initrd = value
		case "fdt", "devicetree":
			cur.fdt = value
		case "fdtdir", "devicetreedir":
			cur.fdtdir = value
		case "append":
			cur.append = value
		}
	}
	return def, entries
}

// checkExtlinux checks extlinux.conf's DEFAULT entry, the one U-Boot boots:
// every file it names is on the FAT, non-empty and equal to the installed
// system's (kernel, initrd, dtbs under the SSD's root), FDTDIR holds the
// board's dtb, and APPEND's init= is the installed system's.
func checkExtlinux(env *engine.Env) []string {
	data, err := os.ReadFile(env.Path(filepath.Join(installRoot, extlinuxConf)))
	if err != nil {
		return []string{extlinuxConf + " is missing"}
	}
	def, entries := parseExtlinux(string(data))
	if def == "" {
		return []string{"extlinux.conf has no DEFAULT line, so U-Boot boots no entry of its own accord"}
	}
	i := slices.IndexFunc(entries, func(e *extlinuxEntry) bool { return e.label == def })
	if i < 0 {
		return []string{fmt.Sprintf("extlinux.conf's DEFAULT is %q, which no LABEL has", def)}
	}
	e := entries[i]
	sys := env.State.SystemPath
	var missing []string
	// file checks one file the entry names against src, a path on the
	// installed system ("" for none).
	file := func(key, p, src string) {
		full, err := bootPath(env, p)
		if err != nil {
			missing = append(missing, fmt.Sprintf("extlinux.conf's %q names %s %s, outside the boot partition", def, key, p))
			return
		}
		what := fmt.Sprintf("%s (%s of extlinux.conf's %q)", onBoot(env, full), key, def)
		if problem := fileProblem(env, what, full, ssdSource(env, src)); problem != "" {
			missing = append(missing, problem)
		}
	}
	if e.kernel == "" {
		missing = append(missing, fmt.Sprintf("extlinux.conf's %q names no kernel (LINUX)", def))
	} else {
		file("LINUX", e.kernel, sys+"/kernel")
	}
	initrds := strings.Split(e.initrd, ",")
	switch {
	case e.initrd == "":
		missing = append(missing, fmt.Sprintf("extlinux.conf's %q names no INITRD, and NixOS finds its root filesystem only from its initrd", def))
	case len(initrds) == 1:
		file("INITRD", e.initrd, sys+"/initrd")
	default:
		for _, p := range initrds {
			file("INITRD", p, "")
		}
	}
	if e.fdt != "" {
		file("FDT", e.fdt, dtbSource(env, sys, e.fdt))
	}
	if e.fdtdir != "" {
		missing = append(missing, checkFDTDir(env, def, e.fdtdir)...)
	}
	init, ok := bootfiles.Param(e.append, "init")
	switch want := sys + "/init"; {
	case !ok:
		missing = append(missing, fmt.Sprintf("extlinux.conf's %q has no init= in its APPEND, so the kernel would not start the installed system", def))
	case init != want:
		missing = append(missing, fmt.Sprintf("extlinux.conf's %q boots init=%s, not the installed system's %s", def, init, want))
	}
	return missing
}

// checkFDTDir checks that FDTDIR holds the board's dtb where U-Boot looks
// for it (broadcom/, as its fdtfile names it on arm64). A kernel without
// that dtb (mainline has none for the CM4) needs none there: U-Boot then
// falls back to the firmware's, which checkFirmwareFAT covers.
func checkFDTDir(env *engine.Env, def, dir string) []string {
	full, err := bootPath(env, dir)
	if err != nil {
		return []string{fmt.Sprintf("extlinux.conf's %q names FDTDIR %s, outside the boot partition", def, dir)}
	}
	if fi, err := os.Stat(full); err != nil || !fi.IsDir() {
		return []string{fmt.Sprintf("%s (FDTDIR of extlinux.conf's %q) is not a directory on the boot partition", onBoot(env, full), def)}
	}
	dtb := "broadcom/" + boardDTB(env)
	src := ssdSource(env, env.State.SystemPath+"/dtbs/"+dtb)
	if src == "" {
		return nil
	}
	what := fmt.Sprintf("%s (the board's dtb in FDTDIR of extlinux.conf's %q)", onBoot(env, filepath.Join(full, dtb)), def)
	if p := fileProblem(env, what, filepath.Join(full, dtb), src); p != "" {
		return []string{p}
	}
	return nil
}

// dtbSource is the installed system's dtb an FDT path copies: NixOS writes
// FDT <its copy of the dtbs>/<name>, so the longest tail of the path that
// <system>/dtbs has. "" when none.
func dtbSource(env *engine.Env, sys, fdt string) string {
	parts := strings.Split(filepath.Clean(fdt), "/")
	for i := range parts {
		if src := sys + "/dtbs/" + strings.Join(parts[i:], "/"); ssdSource(env, src) != "" {
			return src
		}
	}
	return ""
}

// onBoot names a path under Root/mnt/boot as the installed system does.
func onBoot(env *engine.Env, full string) string {
	return "/boot/" + strings.TrimPrefix(full, env.Path(bootMount)+"/")
}

// bootPath is where a path in extlinux.conf is under Root: U-Boot resolves
// relative paths against the file's directory, absolute ones against the
// partition. An error when it leaves the partition.
func bootPath(env *engine.Env, p string) (string, error) {
	boot := env.Path(bootMount)
	full := filepath.Join(boot, p)
	if !filepath.IsAbs(p) {
		full = filepath.Join(boot, "extlinux", p)
	}
	if rel, err := filepath.Rel(boot, full); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s is outside the boot partition", p)
	}
	return full, nil
}

// ssdSource resolves a path on the installed system (<system>/kernel, a
// link into /nix/store) as that system would, with the SSD's root as /, and
// gives the regular file it reaches under Root: "" when p is "" or reaches
// none, since then the store has no source to compare with.
func ssdSource(env *engine.Env, p string) string {
	if p == "" {
		return ""
	}
	root := env.Path(installRoot)
	done, todo := "/", strings.Split(strings.TrimPrefix(filepath.Clean(p), "/"), "/")
	for links := 0; len(todo) > 0; {
		next := filepath.Join(done, todo[0])
		todo = todo[1:]
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			// Not a link, or absent: the Stat at the end tells.
			done = next
			continue
		}
		if links++; links > 40 {
			return ""
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(done, target)
		}
		done, todo = "/", append(strings.Split(strings.TrimPrefix(filepath.Clean(target), "/"), "/"), todo...)
	}
	full := filepath.Join(root, done)
	if fi, err := os.Stat(full); err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	return full
}

var devRefRE = regexp.MustCompile(`/dev/disk/by-(label|uuid|partuuid)/([^"\s]+)`)

// checkLabels compares the filesystems hardware-configuration.nix names
// (by label, UUID or PARTUUID) with what the target disk's partitions carry.
func checkLabels(env *engine.Env, d *disk.Device) []string {
	data, err := os.ReadFile(env.Path(filepath.Join(installRoot, nixos.HardwareFile)))
	if err != nil {
		return []string{nixos.HardwareFile + " is missing"}
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
	return missing
}
