package qemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"

	"github.com/nixpi/nixpi/firstboot/nixos"
	"github.com/nixpi/nixpi/firstboot/system"
)

// NixOSWant is what an installed SSD must show, seen from the host: its root
// at a directory (the store at nix/), the FAT's files at another.
type NixOSWant struct {
	Hostname string
	// SystemPath is the toplevel the journal recorded; "" skips that
	// comparison.
	SystemPath string
	// NixpkgsRev is the pinned revision /etc/nixos/nixpi-pins.json must name.
	NixpkgsRev string
	// Firmware maps each file the firmware step puts on the FAT to the
	// start of its content (the stand-in's files say what they are).
	Firmware map[string]string
	// Secrets must appear nowhere in the store (world-readable), and each
	// must be in a root-only file under /etc/nixos/secrets.
	Secrets []string
	// Channel is the channel `nixos-rebuild switch --upgrade` must follow
	// (the tmpfiles rule that seeds /root/.nix-channels); "" skips that.
	Channel string
	// NixInstantiate parses the configuration files (nix-bin).
	NixInstantiate string
	Run            system.Runner
}

// StandInFirmware is what the stand-in's firmware packages put on the FAT,
// under the names the firmware step gives them.
var StandInFirmware = map[string]string{
	"start4.elf":          "stand-in share/raspberrypi/boot/start4.elf ",
	"fixup4.dat":          "stand-in share/raspberrypi/boot/fixup4.dat ",
	"bcm2711-rpi-4-b.dtb": "stand-in share/raspberrypi/boot/bcm2711-rpi-4-b.dtb ",
	"u-boot-rpi4.bin":     "stand-in u-boot.bin ",
	"armstub8-gic.bin":    "stand-in armstub8-gic.bin ",
}

// wantConfigTxt is what the SSD's config.txt must set, by section (DESIGN.md
// §4): U-Boot as the kernel, the GIC armstub, 64-bit, the UART U-Boot needs.
var wantConfigTxt = map[string][]string{
	"pi4": {"kernel=u-boot-rpi4.bin", "enable_gic=1", "armstub=armstub8-gic.bin"},
	"all": {"arm_64bit=1", "enable_uart=1"},
}

// InstalledSpec is what decides an installed SSD's content, to compare an
// interrupted run with the uninterrupted one.
type InstalledSpec struct {
	System      string
	Generations []string
	StorePaths  []string
	BootFiles   []InstalledFile // under boot/
}

// InstalledFile is a file on the SSD's FAT: its path and the sha256 of its
// content with every store path's hash blanked (storeHash), so a text that
// names the system is the same for two systems that differ only in hashes.
type InstalledFile struct {
	Path, Sum string
}

func (s *InstalledSpec) String() string {
	files := make([]string, len(s.BootFiles))
	for i, f := range s.BootFiles {
		files[i] = f.Path + " " + f.Sum
	}
	return fmt.Sprintf("system %s\ngenerations %v\nstore %d paths: %v\nboot files:\n  %s", s.System, s.Generations,
		len(s.StorePaths), s.StorePaths, strings.Join(files, "\n  "))
}

// storeHash is a store path's hash, as it starts a store object's name.
var storeHash = regexp.MustCompile(`\b[0-9a-df-np-sv-z]{32}-`)

// blankHashes replaces every store path hash in b.
func blankHashes(b []byte) []byte { return storeHash.ReplaceAll(b, []byte("HASH-")) }

// Shape is the spec with every store hash blanked: what two installs of
// one configuration share when their disks' IDs differ. The disk steps
// draw the PARTUUIDs afresh for each disk and the configuration names
// them, so fstab, the initrd, etc and the system itself get other hashes;
// everything else must be the same. A boot file that carries a store hash
// in its name is compared by content only where both runs have that very
// path (the same store path must hold the same bytes); otherwise its
// content is a build of other inputs (the initrd holds the mounts).
func (s *InstalledSpec) Shape(other *InstalledSpec) string {
	blank := func(xs []string) []string {
		out := make([]string, len(xs))
		for i, x := range xs {
			out[i] = string(blankHashes([]byte(x)))
		}
		slices.Sort(out)
		return out
	}
	same := map[string]bool{}
	for _, f := range other.BootFiles {
		same[f.Path] = true
	}
	files := make([]string, 0, len(s.BootFiles))
	for _, f := range s.BootFiles {
		name := string(blankHashes([]byte(f.Path)))
		if name != f.Path && !same[f.Path] {
			files = append(files, name+" (a build of this disk's IDs)")
		} else {
			files = append(files, name+" "+f.Sum)
		}
	}
	slices.Sort(files)
	return fmt.Sprintf("system %s\ngenerations %v\nstore %d paths: %v\nboot files:\n  %s", blankHashes([]byte(s.System)),
		blank(s.Generations), len(s.StorePaths), blank(s.StorePaths), strings.Join(files, "\n  "))
}

// resolveIn follows p's symbolic links inside root, as the installed
// system would see them (absolute targets are in root, not on the host).
func resolveIn(root, p string) (string, error) {
	for hops := 0; hops < 40; hops++ {
		parts := strings.Split(strings.Trim(filepath.Clean(p), "/"), "/")
		cur, relinked := "/", false
		for i, part := range parts {
			if part == "" {
				continue
			}
			next := filepath.Join(cur, part)
			info, err := os.Lstat(filepath.Join(root, next))
			if err != nil {
				return "", err
			}
			if info.Mode()&fs.ModeSymlink != 0 {
				target, err := os.Readlink(filepath.Join(root, next))
				if err != nil {
					return "", err
				}
				if !filepath.IsAbs(target) {
					target = filepath.Join(cur, target)
				}
				p, relinked = filepath.Join(append([]string{target}, parts[i+1:]...)...), true
				break
			}
			cur = next
		}
		if !relinked {
			return cur, nil
		}
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", p)
}

// CheckNixOSRoot checks an installed SSD mounted at root: the system
// profile and the toplevel it points at (built from the configuration),
// /etc/NIXOS, extlinux.conf and every file it names, the firmware and
// config.txt on the FAT, the configuration files (parsed by a real Nix),
// the pins, and that no secret entered the store.
func CheckNixOSRoot(ctx context.Context, root, boot string, w NixOSWant) Problems {
	var p Problems
	system, err := resolveIn(root, "/nix/var/nix/profiles/system")
	switch {
	case err != nil:
		p.addf("the system profile /nix/var/nix/profiles/system: %v", err)
	case !strings.HasPrefix(system, "/nix/store/") || !strings.Contains(filepath.Base(system), "-nixos-system-"+w.Hostname+"-"):
		p.addf("the system profile points at %s, not a toplevel of host %s", system, w.Hostname)
	case w.SystemPath != "" && system != w.SystemPath:
		p.addf("the system profile points at %s, the journal recorded %s", system, w.SystemPath)
	}
	if err == nil {
		for _, f := range []string{"init", "kernel", "initrd", "dtbs", "bin/switch-to-configuration", "etc/hostname"} {
			if _, err := resolveIn(root, filepath.Join(system, f)); err != nil {
				p.addf("the toplevel %s has no %s: %v", system, f, err)
			}
		}
		if host, err := resolveIn(root, filepath.Join(system, "etc/hostname")); err == nil {
			if data, _ := os.ReadFile(filepath.Join(root, host)); string(data) != w.Hostname+"\n" {
				p.addf("the toplevel's etc/hostname says %q, the configuration %q", data, w.Hostname)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc/NIXOS")); err != nil {
		p.addf("/etc/NIXOS: %v", err)
	}
	if err == nil {
		p = append(p, checkRebuild(root, system, w)...)
	}
	p = append(p, checkExtlinux(root, boot, system)...)
	p = append(p, checkFirmware(boot, w.Firmware)...)
	p = append(p, checkNixOSConfig(ctx, root, w)...)
	p = append(p, checkSecrets(root, w.Secrets)...)
	p = append(p, checkWirelessKey(root, system)...)
	return p
}

// checkWirelessKey: the Wi-Fi key, when there is one, is where
// wpa_supplicant (its own user since NixOS 26.05) can open it: every
// directory above it passable by others, the file root's and readable by
// no one else, and the system's tmpfiles rule giving its group read access.
func checkWirelessKey(root, system string) Problems {
	var p Problems
	file := filepath.Join(root, nixos.WirelessFile)
	info, err := os.Lstat(file)
	if errors.Is(err, fs.ErrNotExist) {
		return p
	}
	st, _ := info.Sys().(*syscall.Stat_t)
	if err != nil || !info.Mode().IsRegular() || st == nil || st.Uid != 0 || info.Mode().Perm()&0o007 != 0 {
		p.addf("%s is not a root-owned file that others cannot read: %v %v", nixos.WirelessFile, info.Mode(), err)
	}
	for dir := filepath.Dir(nixos.WirelessFile); dir != "/"; dir = filepath.Dir(dir) {
		if d, err := os.Stat(filepath.Join(root, dir)); err != nil || d.Mode().Perm()&0o001 == 0 {
			p.addf("wpa_supplicant cannot pass %s to the Wi-Fi key (mode %v, %v)", dir, d.Mode().Perm(), err)
		}
	}
	if system == "" {
		return p
	}
	rules, err := resolveIn(root, filepath.Join(system, "etc/tmpfiles.d/00-nixos.conf"))
	var data []byte
	if err == nil {
		data, err = os.ReadFile(filepath.Join(root, rules))
	}
	if err != nil || !slices.Contains(strings.Split(string(data), "\n"), nixos.WirelessTmpfilesRule) {
		p.addf("the system's tmpfiles rules do not give wpa_supplicant the Wi-Fi key (%q): %v", nixos.WirelessTmpfilesRule, err)
	}
	return p
}

// checkRebuild checks that `nixos-rebuild switch` on the installed system
// would find nixpkgs: the system's NIX_PATH (etc/set-environment, which
// shells and sudo read) resolves <nixpkgs>, as Nix does (the first
// nixpkgs=PATH entry whose PATH exists; a bare entry with a nixpkgs in it),
// on the installed root, to a nixpkgs with nixos/default.nix and the pinned
// revision; nixos-config= names the configuration on the root; and the
// channel --upgrade follows is the release's.
func checkRebuild(root, system string, w NixOSWant) Problems {
	var p Problems
	env, err := resolveIn(root, filepath.Join(system, "etc/set-environment"))
	var data []byte
	if err == nil {
		data, err = os.ReadFile(filepath.Join(root, env))
	}
	if err != nil {
		p.addf("the system has no etc/set-environment for NIX_PATH (nixos-rebuild would find no nixpkgs): %v", err)
		return p
	}
	var nixPath []string
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "export NIX_PATH="); ok {
			nixPath = strings.Split(strings.Trim(v, `"`), ":")
		}
	}
	find := func(name string) (string, bool) {
		for _, e := range nixPath {
			prefix, dir, ok := strings.Cut(e, "=")
			if !ok {
				dir, prefix = filepath.Join(e, name), name
			}
			if prefix != name {
				continue
			}
			if r, err := resolveIn(root, dir); err == nil {
				return r, true
			}
		}
		return "", false
	}
	nixpkgs, ok := find("nixpkgs")
	switch {
	case !ok:
		p.addf("NIX_PATH %q finds no nixpkgs on the installed root: nixos-rebuild switch would fail", nixPath)
	default:
		if _, err := os.Stat(filepath.Join(root, nixpkgs, "nixos/default.nix")); err != nil {
			p.addf("<nixpkgs> on the installed root is %s, which has no nixos/default.nix: %v", nixpkgs, err)
		}
		if rev, _ := os.ReadFile(filepath.Join(root, nixpkgs, ".git-revision")); w.NixpkgsRev != "" && strings.TrimSpace(string(rev)) != w.NixpkgsRev {
			p.addf("<nixpkgs> on the installed root is %s at revision %q, not the pinned %s", nixpkgs, rev, w.NixpkgsRev)
		}
	}
	if conf, ok := find("nixos-config"); !ok {
		p.addf("NIX_PATH %q names no nixos-config on the installed root", nixPath)
	} else if conf != "/etc/nixos/configuration.nix" {
		p.addf("NIX_PATH's nixos-config is %s, not /etc/nixos/configuration.nix", conf)
	}
	if w.Channel != "" {
		rules, err := resolveIn(root, filepath.Join(system, "etc/tmpfiles.d/00-nixos.conf"))
		if err == nil {
			data, err = os.ReadFile(filepath.Join(root, rules))
		}
		want := "f /root/.nix-channels - - - - " + w.Channel + " nixos\\n"
		if err != nil || !slices.Contains(strings.Split(string(data), "\n"), want) {
			p.addf("the system's tmpfiles rules do not subscribe root to %s (nixos-rebuild switch --upgrade would follow another channel): want %q (%v)", w.Channel, want, err)
		}
	}
	return p
}

// checkExtlinux checks that extlinux.conf boots the profile's system and
// that every file it names is on the FAT, the kernel and initrd equal to
// the toplevel's.
func checkExtlinux(root, boot, system string) Problems {
	var p Problems
	conf := filepath.Join(boot, "extlinux", "extlinux.conf")
	data, err := os.ReadFile(conf)
	if err != nil {
		p.addf("extlinux.conf on the boot partition: %v", err)
		return p
	}
	named := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		key := strings.ToUpper(f[0])
		switch key {
		case "LINUX", "KERNEL", "INITRD", "FDT", "FDTDIR":
			path := f[1]
			if filepath.IsAbs(path) {
				path = filepath.Join(boot, path)
			} else {
				path = filepath.Join(boot, "extlinux", path)
			}
			if _, err := os.Stat(path); err != nil {
				p.addf("extlinux.conf names %s %s, which is not on the boot partition: %v", key, f[1], err)
			}
			named[key] = append(named[key], path)
		case "APPEND":
			named[key] = append(named[key], strings.Join(f[1:], " "))
		}
	}
	kernels := append(named["LINUX"], named["KERNEL"]...)
	if len(kernels) == 0 || len(named["INITRD"]) == 0 {
		p.addf("extlinux.conf names no kernel or no initrd:\n%s", data)
		return p
	}
	if system == "" {
		return p
	}
	if len(named["APPEND"]) == 0 || !strings.Contains(named["APPEND"][0], "init="+system+"/init") {
		p.addf("the first extlinux.conf entry does not boot %s (APPEND %v)", system, named["APPEND"])
	}
	for _, pair := range [][2]string{{kernels[0], "kernel"}, {named["INITRD"][0], "initrd"}} {
		src, err := resolveIn(root, filepath.Join(system, pair[1]))
		if err != nil {
			continue // reported above
		}
		a, _ := SHA256File(pair[0])
		b, _ := SHA256File(filepath.Join(root, src))
		if a == "" || a != b {
			p.addf("the %s extlinux.conf boots (%s) differs from the system's %s", pair[1], pair[0], src)
		}
	}
	return p
}

func checkFirmware(boot string, firmware map[string]string) Problems {
	var p Problems
	names := make([]string, 0, len(firmware))
	for n := range firmware {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(boot, name))
		if err != nil {
			p.addf("firmware %s on the boot partition: %v", name, err)
			continue
		}
		if !bytes.HasPrefix(data, []byte(firmware[name])) {
			p.addf("firmware %s on the boot partition is not the package's file (starts %q, want %q)", name, firstLine(data), firmware[name])
		}
	}
	data, err := os.ReadFile(filepath.Join(boot, "config.txt"))
	if err != nil {
		p.addf("config.txt on the boot partition: %v", err)
		return p
	}
	sections := map[string][]string{}
	section := "all"
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.Trim(line, "[]")
		} else if line != "" && !strings.HasPrefix(line, "#") {
			sections[section] = append(sections[section], line)
		}
	}
	for _, s := range []string{"pi4", "all"} {
		for _, want := range wantConfigTxt[s] {
			if !slices.Contains(sections[s], want) {
				p.addf("config.txt on the boot partition has no %q in [%s]:\n%s", want, s, data)
			}
		}
	}
	return p
}

func firstLine(data []byte) string {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	if len(line) > 60 {
		line = line[:60]
	}
	return string(line)
}

func checkNixOSConfig(ctx context.Context, root string, w NixOSWant) Problems {
	var p Problems
	for _, f := range []string{"configuration.nix", "hardware-configuration.nix"} {
		path := filepath.Join(root, "etc/nixos", f)
		if _, err := os.Stat(path); err != nil {
			p.addf("/etc/nixos/%s: %v", f, err)
			continue
		}
		if w.Run != nil && w.NixInstantiate != "" {
			if _, err := w.Run.Output(ctx, w.NixInstantiate, "--parse", path); err != nil {
				p.addf("/etc/nixos/%s does not parse: %v", f, err)
			}
		}
	}
	data, err := os.ReadFile(filepath.Join(root, "etc/nixos/nixpi-pins.json"))
	if err != nil {
		p.addf("/etc/nixos/nixpi-pins.json: %v", err)
		return p
	}
	var pins map[string]any
	if err := json.Unmarshal(data, &pins); err != nil {
		p.addf("/etc/nixos/nixpi-pins.json: %v", err)
	} else if w.NixpkgsRev != "" && !strings.Contains(string(data), w.NixpkgsRev) {
		p.addf("/etc/nixos/nixpi-pins.json does not name the pinned revision %s: %s", w.NixpkgsRev, data)
	}
	return p
}

// checkSecrets: no secret in any file of the (world-readable) store, and
// each in a root-only file under /etc/nixos/secrets, so the scan looked for
// something that is really on the SSD.
func checkSecrets(root string, secrets []string) Problems {
	var p Problems
	if len(secrets) == 0 {
		return p
	}
	found := make([]bool, len(secrets))
	secretDir := filepath.Join(root, "etc/nixos/secrets")
	entries, err := os.ReadDir(secretDir)
	if err != nil {
		p.addf("/etc/nixos/secrets: %v", err)
	}
	// The Wi-Fi key's own file (checkWirelessKey checks its mode).
	if data, err := os.ReadFile(filepath.Join(root, nixos.WirelessFile)); err == nil {
		for i, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				found[i] = true
			}
		}
	}
	for _, e := range entries {
		path := filepath.Join(secretDir, e.Name())
		info, err := os.Lstat(path)
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		st, _ := info.Sys().(*syscall.Stat_t)
		if info.Mode().Perm()&0o077 != 0 || st == nil || st.Uid != 0 {
			p.addf("/etc/nixos/secrets/%s is mode %v, not root-only", e.Name(), info.Mode().Perm())
		}
		data, _ := os.ReadFile(path)
		for i, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				found[i] = true
			}
		}
	}
	for i, ok := range found {
		if !ok {
			p.addf("secret %d of the config is in no file under /etc/nixos/secrets or %s", i+1, nixos.WirelessFile)
		}
	}
	filepath.WalkDir(filepath.Join(root, "nix/store"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for i, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				// Never print the secret itself.
				p.addf("secret %d of the config is in the world-readable store: %s", i+1, strings.TrimPrefix(path, root))
			}
		}
		return nil
	})
	return p
}

// CheckNoSecrets reports each text (journal, install.log, consoles: name →
// content) that contains a secret.
func CheckNoSecrets(texts map[string]string, secrets []string) Problems {
	var p Problems
	names := make([]string, 0, len(texts))
	for n := range texts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		for i, s := range secrets {
			if strings.Contains(texts[n], s) {
				p.addf("secret %d of the config is in %s", i+1, n)
			}
		}
	}
	return p
}

// DescribeInstalled summarises what an installed SSD holds: the system,
// the profile's generations, the store's paths and every file on the FAT
// with its sha256.
func DescribeInstalled(root, boot string) (*InstalledSpec, error) {
	s := &InstalledSpec{}
	var err error
	if s.System, err = resolveIn(root, "/nix/var/nix/profiles/system"); err != nil {
		s.System = "none (" + err.Error() + ")"
	}
	profiles, _ := filepath.Glob(filepath.Join(root, "nix/var/nix/profiles/system-*-link"))
	for _, g := range profiles {
		target, _ := os.Readlink(g)
		s.Generations = append(s.Generations, filepath.Base(g)+" -> "+target)
	}
	entries, err := os.ReadDir(filepath.Join(root, "nix/store"))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			s.StorePaths = append(s.StorePaths, e.Name())
		}
	}
	err = filepath.WalkDir(boot, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(blankHashes(data))
		rel, _ := filepath.Rel(boot, path)
		s.BootFiles = append(s.BootFiles, InstalledFile{Path: rel, Sum: hex.EncodeToString(sum[:8])})
		return nil
	})
	return s, err
}

// CompareInstalled reports how got differs from want (the uninterrupted
// run's), but for the store hashes its disk's own IDs change (Shape).
func CompareInstalled(name string, got, want *InstalledSpec) Problems {
	var p Problems
	if g, w := got.Shape(want), want.Shape(got); g != w {
		p.addf("%s: the installed system differs from the uninterrupted run's (store hashes blanked):\n got: %s\nwant: %s", name, g, w)
	}
	return p
}
