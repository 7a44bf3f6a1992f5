package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/renameio/v2"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/network"
	"github.com/nixpi/nixpi/firstboot/nixos"
)

// NixTarball is one official Nix release for aarch64-linux.
type NixTarball struct {
	Version string
	URL     string
	SHA256  string // hex, of the .tar.xz
}

// OfficialNix is the one pin of the official Nix release nixpi installs
// when the OS's own Nix is too old, or is not aarch64 (32-bit Raspberry Pi
// OS). The sha256 is the one the release's own installer script
// (https://releases.nixos.org/nix/nix-2.34.1/install) embeds for
// Linux.aarch64, read from a public copy of that script through the code
// index. 2.34 has fsync-store-paths (added in 2.25), which the power-cut
// safety relies on, and the fixes for CVE-2025-46415/46416 (2.24.15).
// Update version, URL and sha256 together, from the new release's install
// script.
var OfficialNix = NixTarball{
	Version: "2.34.1",
	URL:     "https://releases.nixos.org/nix/nix-2.34.1/nix-2.34.1-aarch64-linux.tar.xz",
	SHA256:  "81aed0600605ee0494d2cd82c441b1ff6ecad7d3efcc6d4505a70aefc67b865c",
}

// minNix is the oldest Nix nixpkgs evaluates with (lib/minver.nix).
var minNix = [2]int{2, 18}

const (
	nixConf = "/etc/nix/nix.conf"
	// nixCache holds the downloaded tarball and its unpacked installer on
	// the SD card's root filesystem.
	nixCache = "/var/cache/nixpi"
	// debianNixPackage is Debian's multi-user Nix: nix-bin with the daemon
	// units, the nixbld group and build users.
	debianNixPackage = "nix-setup-systemd"
	nixDaemonUnit    = "nix-daemon.service"
)

type nixStep struct {
	client  *http.Client
	tarball NixTarball
	retry   network.Retry
}

// NewNix returns the step that installs a multi-user Nix >= 2.18 and sets
// nix.conf for the install.
func NewNix() engine.Step {
	return nixStep{client: &http.Client{Timeout: 30 * time.Minute}, tarball: OfficialNix, retry: network.DefaultRetry}
}

func (nixStep) Name() string    { return "nix" }
func (nixStep) Needs() []string { return []string{"network"} }
func (nixStep) Describe() string {
	return "installing Nix (multi-user, >= 2.18) and setting nix.conf"
}

// nixBin is a Nix tool of the Nix the nix step set up (the journal's
// state says which).
func nixBin(env *engine.Env, name string) string {
	installer := ""
	if env.State.Nix != nil {
		installer = env.State.Nix.Installer
	}
	return nixTool(env, installer, name)
}

// nixTool is a tool of the given installer's Nix; for "" (auto) the
// official installer's profile when it is there (it is newer than any OS
// Nix it was installed over), else the OS's.
func nixTool(env *engine.Env, installer, name string) string {
	official := filepath.Join(env.Tools.NixProfileBin, name)
	switch {
	case installer == config.InstallerOfficial:
		return official
	case installer == config.InstallerDebian:
		return filepath.Join(filepath.Dir(env.Tools.Nix), name)
	case env.Exists(official):
		return official
	}
	return filepath.Join(filepath.Dir(env.Tools.Nix), name)
}

// wantedInstaller is nix.installer as nixTool takes it.
func wantedInstaller(env *engine.Env) string {
	if c := env.Config.Nix.Installer; c != config.InstallerAuto {
		return c
	}
	return ""
}

// installerOf says which installer a Nix tool's path belongs to.
func installerOf(env *engine.Env, bin string) string {
	if strings.HasPrefix(bin, env.Tools.NixProfileBin+"/") {
		return config.InstallerOfficial
	}
	return config.InstallerDebian
}

var versionRE = regexp.MustCompile(`(\d+)\.(\d+)(\.\d+)?`)

// parseVersion finds "2.26.3" in "nix (Nix) 2.26.3" or "2.26.3+dfsg1-1"
// (an epoch "1:" before it is skipped).
func parseVersion(s string) (string, [2]int, bool) {
	if _, after, ok := strings.Cut(s, ":"); ok && !strings.Contains(s, "(") {
		s = after
	}
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return "", [2]int{}, false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return m[0], [2]int{major, minor}, true
}

// multiUser reports whether the build users' group exists, which every
// multi-user install (nix-setup-systemd, the official --daemon) creates.
func multiUser(env *engine.Env) bool {
	data, err := os.ReadFile(env.Path("/etc/group"))
	return err == nil && slices.ContainsFunc(strings.Split(string(data), "\n"), func(l string) bool { return strings.HasPrefix(l, "nixbld:") })
}

func newEnough(v [2]int) bool { return v[0] > minNix[0] || (v[0] == minNix[0] && v[1] >= minNix[1]) }

// installedNix runs `nix --version` of the Nix nix.installer asks for; ""
// when there is none.
func installedNix(ctx context.Context, env *engine.Env) (string, [2]int, error) {
	return nixVersion(ctx, env, nixTool(env, wantedInstaller(env), "nix"))
}

func nixVersion(ctx context.Context, env *engine.Env, bin string) (string, [2]int, error) {
	if !env.Exists(bin) {
		return "", [2]int{}, nil
	}
	out, err := env.Run.Output(ctx, bin, "--version")
	if err != nil {
		return "", [2]int{}, fmt.Errorf("nix: %w", err)
	}
	v, mm, ok := parseVersion(string(out))
	if !ok {
		return "", [2]int{}, fmt.Errorf("nix: %s --version printed %q, no version", bin, strings.TrimSpace(string(out)))
	}
	return v, mm, nil
}

// nixSettings are the nix.conf keys the install needs, in file order.
func nixSettings(env *engine.Env) [][2]string {
	n := env.Config.NixOS
	s := [][2]string{
		{"experimental-features", "nix-command flakes"},
		{"sandbox", "true"},
		// A store path Nix registers as valid must have its data on disk:
		// without it a power cut can leave valid-but-empty files (ext4's
		// delayed allocation) that every later build and copy trusts.
		{"fsync-store-paths", "true"},
	}
	if env.State.RAMBytes > 0 && env.State.RAMBytes <= int64(nixos.SmallPiRAM) {
		// max-jobs does not bound downloads: 16 at once by default, each
		// with its own buffers, on a Pi whose evaluation already swaps.
		s = append(s, [2]string{"max-jobs", "1"}, [2]string{"cores", "1"}, [2]string{"max-substitution-jobs", "2"})
	}
	return append(s, [2]string{"substituters", strings.Join(n.Substituters, " ")},
		[2]string{"trusted-public-keys", strings.Join(n.TrustedPublicKeys, " ")})
}

// mergeNixConf sets each key in old to its value: the first line with the
// key is replaced in place, later ones dropped, missing keys appended. Every
// other line (the admin's, comments, includes) stays. experimental-features
// keeps the features already enabled.
func mergeNixConf(old string, settings [][2]string) string {
	want := map[string]string{}
	for _, kv := range settings {
		want[kv[0]] = kv[1]
	}
	done := map[string]bool{}
	var out []string
	lines := strings.Split(strings.TrimSuffix(old, "\n"), "\n")
	if old == "" {
		lines = nil
	}
	for _, line := range lines {
		key, val, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		value, ours := want[key]
		if !ok || !ours || strings.HasPrefix(strings.TrimSpace(line), "#") {
			out = append(out, line)
			continue
		}
		if done[key] {
			continue
		}
		done[key] = true
		if key == "experimental-features" {
			value = unionFields(val, value)
		}
		out = append(out, key+" = "+value)
	}
	added := false
	for _, kv := range settings {
		if done[kv[0]] {
			continue
		}
		if !added {
			out = append(out, "# set by nixpi for the install")
			added = true
		}
		out = append(out, kv[0]+" = "+kv[1])
	}
	return strings.Join(out, "\n") + "\n"
}

func unionFields(have, want string) string {
	fields := strings.Fields(have)
	for _, f := range strings.Fields(want) {
		if !slices.Contains(fields, f) {
			fields = append(fields, f)
		}
	}
	return strings.Join(fields, " ")
}

// nixConfChange is nix.conf as it is and as it should be.
func nixConfChange(env *engine.Env) (have, want string, err error) {
	data, err := os.ReadFile(env.Path(nixConf))
	if err != nil && !os.IsNotExist(err) {
		return "", "", fmt.Errorf("nix: %w", err)
	}
	return string(data), mergeNixConf(string(data), nixSettings(env)), nil
}

func (s nixStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	v, mm, err := installedNix(ctx, env)
	switch {
	case err != nil:
		return false, err.Error(), nil
	case v == "":
		return false, "no Nix installed", nil
	case !newEnough(mm):
		return false, fmt.Sprintf("Nix %s is older than %d.%d", v, minNix[0], minNix[1]), nil
	case !multiUser(env):
		return false, fmt.Sprintf("Nix %s is installed without the multi-user setup (no group nixbld)", v), nil
	}
	have, want, err := nixConfChange(env)
	if err != nil {
		return false, "", err
	}
	if have != want {
		return false, fmt.Sprintf("Nix %s installed, %s needs the install's settings", v, nixConf), nil
	}
	return true, fmt.Sprintf("Nix %s installed and set up", v), nil
}

func (s nixStep) Run(ctx context.Context, env *engine.Env) error {
	v, mm, err := installedNix(ctx, env)
	if err != nil {
		return err
	}
	record := &journal.Nix{Installer: installerOf(env, nixTool(env, wantedInstaller(env), "nix")), Version: v}
	if record.Installer == config.InstallerOfficial {
		record.TarballSHA256 = s.cachedTarballSHA256(env)
	}
	installed := false
	if v == "" || !newEnough(mm) || !multiUser(env) {
		switch {
		case v != "" && !newEnough(mm):
			env.Logf("Nix %s is older than %d.%d, which nixpkgs needs", v, minNix[0], minNix[1])
		case v != "":
			env.Logf("Nix %s has no multi-user setup (daemon, group nixbld, build users)", v)
		}
		if record, err = s.install(ctx, env); err != nil {
			return err
		}
		installed = true
	} else {
		env.Logf("Nix %s is installed (%s), keeping it", v, record.Installer)
	}
	env.State.Nix = record

	have, want, err := nixConfChange(env)
	if err != nil {
		return err
	}
	if have != want {
		// A Nix that does not know a setting only warns and goes on without
		// it: fsync-store-paths unknown is a store a power cut can corrupt.
		if err := knowsSettings(ctx, env, nixBin(env, "nix"), nixSettings(env)); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(env.Path(nixConf)), 0o755); err != nil {
			return fmt.Errorf("nix: %w", err)
		}
		if err := renameio.WriteFile(env.Path(nixConf), []byte(want), 0o644); err != nil {
			return fmt.Errorf("nix: write %s: %w", nixConf, err)
		}
		env.Logf("%s: set %s", nixConf, describeSettings(nixSettings(env)))
	}
	if have != want || installed {
		if _, err := env.Run.Output(ctx, env.Tools.Systemctl, "restart", nixDaemonUnit); err != nil {
			return engine.WithHint(fmt.Errorf("nix: start the Nix daemon: %w", err),
				"read `journalctl -u nix-daemon` on the Pi")
		}
	}
	return nil
}

// knowsSettings refuses a Nix that lacks a setting nix.conf is to get, by
// what `nix config show` lists.
func knowsSettings(ctx context.Context, env *engine.Env, nix string, settings [][2]string) error {
	out, err := env.Run.Output(ctx, nix, "--extra-experimental-features", "nix-command", "config", "show")
	if err != nil {
		return fmt.Errorf("nix: list the settings this Nix knows: %w", err)
	}
	known := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok {
			known[strings.TrimSpace(k)] = true
		}
	}
	var missing []string
	for _, kv := range settings {
		if !known[kv[0]] {
			missing = append(missing, kv[0])
		}
	}
	if len(missing) > 0 {
		return engine.WithHint(fmt.Errorf("nix: %s does not know the setting(s) %s that the install needs", nix, strings.Join(missing, ", ")),
			fmt.Sprintf("set nix.installer = %q in nixpi/nixpi.toml on the card (Nix %s), or use an OS whose Nix is newer", config.InstallerOfficial, OfficialNix.Version))
	}
	return nil
}

func describeSettings(s [][2]string) string {
	var keys []string
	for _, kv := range s {
		keys = append(keys, kv[0])
	}
	return strings.Join(keys, ", ")
}

// cachedTarballSHA256 is the pinned sha256 when the tarball this step
// verified is still in its cache (a redo after a power cut that came after
// the install), else "".
func (s nixStep) cachedTarballSHA256(env *engine.Env) string {
	data, err := os.ReadFile(env.Path(filepath.Join(nixCache, filepath.Base(s.tarball.URL))))
	if err != nil {
		return ""
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) == s.tarball.SHA256 {
		return s.tarball.SHA256
	}
	return ""
}

// install picks and runs the installer nix.installer asks for, and returns
// what it installed.
func (s nixStep) install(ctx context.Context, env *engine.Env) (*journal.Nix, error) {
	choice := env.Config.Nix.Installer
	if arch, err := userlandArch(ctx, env); err != nil {
		return nil, err
	} else if arch != "arm64" {
		// Debian's armhf nix-bin builds armv7l, never the aarch64 system;
		// the official aarch64 Nix runs here since the arm64 step made the
		// kernel 64-bit.
		if choice == config.InstallerDebian {
			return nil, engine.WithHint(fmt.Errorf("nix: nix.installer = %q, but this Raspberry Pi OS is %s (32-bit): its Nix cannot build the aarch64 NixOS", choice, arch),
				fmt.Sprintf("set nix.installer = %q (or %q) in nixpi/nixpi.toml on the card, or use the 64-bit Raspberry Pi OS", config.InstallerAuto, config.InstallerOfficial))
		}
		env.Logf("this Raspberry Pi OS is %s (32-bit): installing the official aarch64 Nix %s, not the OS's", arch, s.tarball.Version)
		return s.installOfficial(ctx, env)
	}
	if choice != config.InstallerOfficial {
		cand, err := debianCandidate(ctx, env)
		if err != nil {
			return nil, err
		}
		_, mm, ok := parseVersion(cand)
		switch {
		case ok && newEnough(mm):
			env.Logf("installing the OS's Nix: %s %s", debianNixPackage, cand)
			return s.installDebian(ctx, env)
		case choice == config.InstallerDebian:
			what := "no nix-bin package"
			if cand != "" {
				what = "nix-bin " + cand
			}
			return nil, engine.WithHint(fmt.Errorf("nix: nix.installer = %q, but this OS has %s, older than %d.%d", choice, what, minNix[0], minNix[1]),
				fmt.Sprintf("set nix.installer = %q (or %q) in nixpi/nixpi.toml on the card, or use Raspberry Pi OS trixie (Nix 2.26)", config.InstallerAuto, config.InstallerOfficial))
		}
		env.Logf("the OS's Nix (%q) is older than %d.%d: installing the official Nix %s", cand, minNix[0], minNix[1], s.tarball.Version)
	}
	return s.installOfficial(ctx, env)
}

// userlandArch is the OS's Debian architecture (arm64, armhf).
func userlandArch(ctx context.Context, env *engine.Env) (string, error) {
	out, err := env.Run.Output(ctx, env.Tools.Dpkg, "--print-architecture")
	if err != nil {
		return "", fmt.Errorf("nix: the OS's architecture: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// debianCandidate is the nix-bin version apt would install, "" for none;
// the lists are updated first when apt knows no candidate.
func debianCandidate(ctx context.Context, env *engine.Env) (string, error) {
	policy := func() (string, error) {
		out, err := env.Run.Output(ctx, env.Tools.AptCache, "policy", "nix-bin")
		if err != nil {
			return "", fmt.Errorf("nix: %w", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate:"); ok {
				if v = strings.TrimSpace(v); v != "(none)" {
					return v, nil
				}
			}
		}
		return "", nil
	}
	cand, err := policy()
	if err != nil || cand != "" {
		return cand, err
	}
	if err := aptGet(ctx, env, []string{"update", "-o", "Acquire::Check-Valid-Until=false", "-o", "Acquire::Check-Date=false"}); err != nil {
		return "", engine.WithHint(fmt.Errorf("nix: %w", err), "check that the image's apt sources work (sudo apt-get update on the Pi)")
	}
	return policy()
}

func (s nixStep) installDebian(ctx context.Context, env *engine.Env) (*journal.Nix, error) {
	if err := finishInterruptedDpkg(ctx, env); err != nil {
		return nil, err
	}
	if err := aptGet(ctx, env, []string{"install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", debianNixPackage}); err != nil {
		return nil, engine.WithHint(fmt.Errorf("nix: %w", err), "check the image's apt sources (sudo apt-get install nix-setup-systemd on the Pi)")
	}
	return s.installedRecord(ctx, env, config.InstallerDebian, "")
}

// installOfficial downloads the pinned tarball, verifies its sha256 before
// anything in it runs, and runs its multi-user installer.
func (s nixStep) installOfficial(ctx context.Context, env *engine.Env) (*journal.Nix, error) {
	t := s.tarball
	name := filepath.Base(t.URL)
	tarball := filepath.Join(nixCache, name)
	if err := network.Download(ctx, env, s.client, t.URL, tarball, t.SHA256, s.retry); err != nil {
		return nil, fmt.Errorf("nix: official Nix %s: %w", t.Version, err)
	}
	env.Logf("%s: sha256 %s verified", name, t.SHA256)
	unpack := filepath.Join(nixCache, "nix-unpack")
	if err := os.RemoveAll(env.Path(unpack)); err != nil {
		return nil, fmt.Errorf("nix: %w", err)
	}
	if err := os.MkdirAll(env.Path(unpack), 0o755); err != nil {
		return nil, fmt.Errorf("nix: %w", err)
	}
	if _, err := env.Run.Output(ctx, env.Tools.Tar, "-xJf", env.Path(tarball), "-C", env.Path(unpack)); err != nil {
		return nil, fmt.Errorf("nix: unpack %s: %w", name, err)
	}
	installer := filepath.Join(env.Path(unpack), strings.TrimSuffix(name, ".tar.xz"), "install")
	if err := restoreProfileBackups(env); err != nil {
		return nil, err
	}
	env.Crash("nix:installer")
	if _, err := env.Run.Output(ctx, installer, "--daemon", "--yes", "--no-channel-add"); err != nil {
		return nil, engine.WithHint(fmt.Errorf("nix: the official installer failed: %w", err),
			"read its output in nixpi/install.log on the card; a half-done install is undone with the steps in the Nix manual (Uninstalling Nix, multi-user)")
	}
	return s.installedRecord(ctx, env, config.InstallerOfficial, t.SHA256)
}

// nixProfileTargets are the shell files the official multi-user installer
// backs up (with nixBackupSuffix) before adding Nix to them
// (scripts/install-multi-user.sh, PROFILE_TARGETS).
var nixProfileTargets = []string{"/etc/bashrc", "/etc/profile.d/nix.sh", "/etc/zshrc", "/etc/bash.bashrc", "/etc/zsh/zshrc"}

const nixBackupSuffix = ".backup-before-nix"

// restoreProfileBackups undoes what an interrupted official install left:
// it refuses to run while a backup differs from its file, and its own
// advice is to move the backup back. There is no working Nix at this point,
// so the backup is the file as it was before any Nix.
func restoreProfileBackups(env *engine.Env) error {
	for _, target := range nixProfileTargets {
		backup := env.Path(target + nixBackupSuffix)
		if _, err := os.Stat(backup); err != nil {
			continue
		}
		if err := os.Rename(backup, env.Path(target)); err != nil {
			return fmt.Errorf("nix: restore %s from an interrupted install: %w", target, err)
		}
		env.Logf("restored %s from %s (left by an interrupted Nix install)", target, target+nixBackupSuffix)
	}
	return nil
}

func (s nixStep) installedRecord(ctx context.Context, env *engine.Env, installer, sha string) (*journal.Nix, error) {
	v, mm, err := nixVersion(ctx, env, nixTool(env, installer, "nix"))
	if err != nil {
		return nil, err
	}
	if v == "" || !newEnough(mm) {
		return nil, fmt.Errorf("nix: after the %s install, %s reports version %q, want >= %d.%d", installer, nixTool(env, installer, "nix"), v, minNix[0], minNix[1])
	}
	if !multiUser(env) {
		return nil, fmt.Errorf("nix: after the %s install there is no group nixbld, so Nix cannot build in its sandbox", installer)
	}
	env.Logf("Nix %s installed (%s)", v, installer)
	return &journal.Nix{Installer: installer, Version: v, TarballSHA256: sha}, nil
}
