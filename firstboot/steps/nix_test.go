package steps

// The nix step against a temp root and a recording runner (a test double
// for apt, tar, the installer and systemctl: OnRun creates the files the
// real ones would); an httptest server stands in for releases.nixos.org.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/network"
)

const debianNixConf = "# Debian's nix.conf\nbuild-users-group = nixbld\nsandbox = false\nexperimental-features = ca-derivations\nauto-optimise-store = true\nsandbox = relaxed\n"

func newNixUnit(t *testing.T) (*piEnv, nixStep) {
	p := newPiEnv(t)
	p.State.RAMBytes = 1 << 30 // a 1 GB Pi: max-jobs and cores 1
	p.run.On("arm64\n", p.Tools.Dpkg, "--print-architecture")
	for _, nix := range []string{p.Tools.Nix, p.Tools.NixProfileBin + "/nix"} {
		p.run.On(knownNixSettings, nix, "--extra-experimental-features", "nix-command", "config", "show")
	}
	return p, nixStep{client: http.DefaultClient, tarball: OfficialNix, retry: network.Retry{Attempts: 1}}
}

// knownNixSettings is what `nix config show` lists of a current Nix (the
// keys the install writes among others; Debian trixie's 2.26.3 has them).
const knownNixSettings = "cores = 0\nexperimental-features = \nfsync-metadata = true\nfsync-store-paths = false\nmax-jobs = 1\n" +
	"max-substitution-jobs = 16\nsandbox = true\nsubstituters = https://cache.nixos.org/\ntrusted-public-keys = cache.nixos.org-1:x\n"

// A Nix that does not know a setting the install writes (fsync-store-paths
// before 2.25) is refused: it would only warn and run without it.
func TestNixRefusesANixWithoutASetting(t *testing.T) {
	t.Parallel()
	p, step := newNixUnit(t)
	p.put(t, p.Tools.Nix, "")
	p.put(t, "/etc/group", "root:x:0:\nnixbld:x:30000:nixbld1\n")
	p.run.On("nix (Nix) 2.24.9\n", p.Tools.Nix, "--version")
	p.run.Set(strings.ReplaceAll(knownNixSettings, "fsync-store-paths = false\n", ""), p.Tools.Nix, "--extra-experimental-features", "nix-command", "config", "show")
	err := step.Run(context.Background(), p.Env)
	if err == nil || !strings.Contains(err.Error(), "does not know the setting(s) fsync-store-paths") || !strings.Contains(engine.HintOf(err), `nix.installer = "official"`) {
		t.Fatalf("Run = %v (hint %q)", err, engine.HintOf(err))
	}
	if _, err := os.Stat(p.Path("/etc/nix/nix.conf")); err == nil {
		t.Error("nix.conf was written for a Nix that ignores part of it")
	}
}

// On a 32-bit Raspberry Pi OS, Debian's (armhf) Nix cannot build the
// aarch64 system: auto installs the official aarch64 Nix, and "debian" is
// refused with the reason.
func TestNixOn32BitRaspberryPiOS(t *testing.T) {
	t.Parallel()
	p, step := newNixUnit(t)
	p.run.Set("armhf\n", p.Tools.Dpkg, "--print-architecture")
	p.Config.Nix.Installer = config.InstallerDebian
	err := step.Run(context.Background(), p.Env)
	if err == nil || !strings.Contains(err.Error(), "armhf (32-bit): its Nix cannot build the aarch64 NixOS") {
		t.Fatalf("debian on armhf: %v", err)
	}
	for _, c := range p.run.Calls() {
		if c[0] == p.Tools.AptCache || c[0] == p.Tools.Env {
			t.Errorf("ran %v on armhf", c)
		}
	}
	p, step = newNixUnit(t)
	p.run.Set("armhf\n", p.Tools.Dpkg, "--print-architecture")
	err = step.Run(context.Background(), p.Env)
	// The official tarball is not reachable from a test: the step got as
	// far as downloading it, never asking apt for Debian's Nix.
	if err == nil || !strings.Contains(err.Error(), "official Nix "+OfficialNix.Version) {
		t.Fatalf("auto on armhf: %v", err)
	}
	if !strings.Contains(p.log(), "installing the official aarch64 Nix") {
		t.Errorf("log: %s", p.log())
	}
}

func TestMergeNixConfKeepsTheAdminsLines(t *testing.T) {
	t.Parallel()
	settings := [][2]string{{"experimental-features", "nix-command flakes"}, {"sandbox", "true"}, {"substituters", "https://cache.nixos.org"}}
	got := mergeNixConf(debianNixConf, settings)
	want := "# Debian's nix.conf\nbuild-users-group = nixbld\nsandbox = true\nexperimental-features = ca-derivations nix-command flakes\nauto-optimise-store = true\n" +
		"# set by nixpi for the install\nsubstituters = https://cache.nixos.org\n"
	if got != want {
		t.Errorf("merged:\n%s\nwant:\n%s", got, want)
	}
	if again := mergeNixConf(got, settings); again != got {
		t.Errorf("merge is not idempotent:\n%s", again)
	}
	if got := mergeNixConf("", settings[:1]); got != "# set by nixpi for the install\nexperimental-features = nix-command flakes\n" {
		t.Errorf("from nothing: %q", got)
	}
}

func TestNixDebianInstaller(t *testing.T) {
	t.Parallel()
	p, step := newNixUnit(t)
	p.run.On("nix-bin:\n  Installed: (none)\n  Candidate: 2.26.3+dfsg-2\n  Version table:\n", p.Tools.AptCache, "policy", "nix-bin")
	p.run.On("", p.Tools.Env)
	p.run.On("nix (Nix) 2.26.3\n", p.Tools.Nix, "--version")
	p.run.On("", p.Tools.Systemctl, "restart", "nix-daemon.service")
	p.run.OnRun = func(argv []string) {
		if argv[len(argv)-1] == "nix-setup-systemd" {
			p.put(t, p.Tools.Nix, "")
			p.put(t, "/etc/group", "root:x:0:\nnixbld:x:30000:nixbld1,nixbld2\n")
			p.put(t, "/etc/nix/nix.conf", debianNixConf)
		}
	}
	if done, why, _ := step.Probe(context.Background(), p.Env); done || why != "no Nix installed" {
		t.Fatalf("Probe = %v, %q", done, why)
	}
	if err := step.Run(context.Background(), p.Env); err != nil {
		t.Fatal(err)
	}
	want := "/usr/bin/dpkg --print-architecture\n" +
		"/usr/bin/apt-cache policy nix-bin\n" +
		"/usr/bin/env DEBIAN_FRONTEND=noninteractive /usr/bin/apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 nix-setup-systemd\n" +
		"/usr/bin/nix --version\n" +
		"/usr/bin/nix --extra-experimental-features nix-command config show\n" +
		"/usr/bin/systemctl restart nix-daemon.service\n"
	if got := p.run.Transcript(); got != want {
		t.Errorf("ran:\n%s\nwant:\n%s", got, want)
	}
	conf, _ := os.ReadFile(p.Path("/etc/nix/nix.conf"))
	for _, line := range []string{"build-users-group = nixbld", "auto-optimise-store = true", "sandbox = true", "experimental-features = ca-derivations nix-command flakes",
		"max-jobs = 1", "cores = 1", "substituters = https://cache.nixos.org", "trusted-public-keys = " + config.CacheNixOSKey} {
		if !strings.Contains(string(conf), line+"\n") {
			t.Errorf("nix.conf lacks %q:\n%s", line, conf)
		}
	}
	if strings.Contains(string(conf), "sandbox = relaxed") {
		t.Errorf("a second sandbox line stayed:\n%s", conf)
	}
	if n := p.State.Nix; n == nil || n.Installer != "debian" || n.Version != "2.26.3" || n.TarballSHA256 != "" {
		t.Errorf("state = %+v", n)
	}
	// Done now: the probe skips, and a rerun changes nothing and restarts nothing.
	if done, why, _ := step.Probe(context.Background(), p.Env); !done || why != "Nix 2.26.3 installed and set up" {
		t.Errorf("Probe after = %v, %q", done, why)
	}
	before := len(p.run.Calls())
	if err := step.Run(context.Background(), p.Env); err != nil {
		t.Fatal(err)
	}
	if got := p.run.Calls()[before:]; len(got) != 1 || got[0][1] != "--version" {
		t.Errorf("rerun ran %q", got)
	}
}

// Debian's nix-bin alone (no daemon, no build users): nix-setup-systemd
// is installed over it.
func TestNixDebianNixBinWithoutMultiUser(t *testing.T) {
	t.Parallel()
	p, step := newNixUnit(t)
	p.put(t, p.Tools.Nix, "")
	p.run.On("nix (Nix) 2.26.3\n", p.Tools.Nix, "--version")
	p.run.On("nix-bin:\n  Installed: 2.26.3+dfsg-2\n  Candidate: 2.26.3+dfsg-2\n", p.Tools.AptCache, "policy", "nix-bin")
	p.run.On("", p.Tools.Env)
	p.run.On("", p.Tools.Systemctl, "restart", "nix-daemon.service")
	p.run.OnRun = func(argv []string) {
		if argv[len(argv)-1] == "nix-setup-systemd" {
			p.put(t, "/etc/group", "nixbld:x:30000:nixbld1\n")
		}
	}
	if done, why, _ := step.Probe(context.Background(), p.Env); done || why != "Nix 2.26.3 is installed without the multi-user setup (no group nixbld)" {
		t.Fatalf("Probe = %v, %q", done, why)
	}
	if err := step.Run(context.Background(), p.Env); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.run.Transcript(), "apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 nix-setup-systemd\n") {
		t.Errorf("ran:\n%s", p.run.Transcript())
	}
	if done, _, _ := step.Probe(context.Background(), p.Env); !done {
		t.Error("not done after")
	}
}

func TestNixDebianForcedButTooOld(t *testing.T) {
	t.Parallel()
	p, step := newNixUnit(t)
	p.Config.Nix.Installer = config.InstallerDebian
	p.run.On("nix-bin:\n  Installed: (none)\n  Candidate: 2.8.0-1\n", p.Tools.AptCache, "policy", "nix-bin")
	err := step.Run(context.Background(), p.Env)
	if err == nil || !strings.Contains(err.Error(), `nix.installer = "debian", but this OS has nix-bin 2.8.0-1, older than 2.18`) {
		t.Fatalf("error = %v", err)
	}
	if got := p.run.Transcript(); got != "/usr/bin/dpkg --print-architecture\n/usr/bin/apt-cache policy nix-bin\n" {
		t.Errorf("ran %q", got)
	}
}

func TestNixOfficialInstaller(t *testing.T) {
	t.Parallel()
	p, step := newNixUnit(t)
	tarball := []byte("stand-in for nix-2.24.9-aarch64-linux.tar.xz")
	sum := sha256.Sum256(tarball)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(tarball) }))
	defer srv.Close()
	step.tarball = NixTarball{Version: "2.24.9", URL: srv.URL + "/nix-2.24.9-aarch64-linux.tar.xz", SHA256: hex.EncodeToString(sum[:])}
	// Bookworm: apt knows only nix-bin 2.8 once the lists are updated.
	p.run.On("nix-bin:\n  Installed: (none)\n  Candidate: (none)\n", p.Tools.AptCache, "policy", "nix-bin").Times = 1
	p.run.On("nix-bin:\n  Installed: (none)\n  Candidate: 2.8.0-1\n", p.Tools.AptCache, "policy", "nix-bin")
	p.run.On("", p.Tools.Env)
	p.run.On("", p.Tools.Tar)
	installer := p.Path("/var/cache/nixpi/nix-unpack/nix-2.24.9-aarch64-linux/install")
	p.run.On("", installer)
	p.run.On("nix (Nix) 2.24.9\n", "/nix/var/nix/profiles/default/bin/nix", "--version")
	p.run.On("", p.Tools.Systemctl, "restart", "nix-daemon.service")
	p.run.OnRun = func(argv []string) {
		if argv[0] == installer {
			p.put(t, "/nix/var/nix/profiles/default/bin/nix", "")
			p.put(t, "/etc/nix/nix.conf", "build-users-group = nixbld\n")
			p.put(t, "/etc/group", "root:x:0:\nnixbld:x:30000:nixbld1\n")
		}
	}
	// An earlier install was cut short after it backed up and edited
	// bash.bashrc: the installer would refuse to run again.
	p.put(t, "/etc/bash.bashrc", "# Nix\nif [ -e nix-daemon.sh ]; then . nix-daemon.sh; fi\n# End Nix\n# the original\n")
	p.put(t, "/etc/bash.bashrc.backup-before-nix", "# the original\n")
	if err := step.Run(context.Background(), p.Env); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p.Path("/etc/bash.bashrc")); string(got) != "# the original\n" {
		t.Errorf("bash.bashrc = %q", got)
	}
	if _, err := os.Stat(p.Path("/etc/bash.bashrc.backup-before-nix")); !os.IsNotExist(err) {
		t.Errorf("backup left: %v", err)
	}
	want := "/usr/bin/dpkg --print-architecture\n" +
		"/usr/bin/apt-cache policy nix-bin\n" +
		"/usr/bin/env DEBIAN_FRONTEND=noninteractive /usr/bin/apt-get update -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false\n" +
		"/usr/bin/apt-cache policy nix-bin\n" +
		"/usr/bin/tar -xJf $ROOT/var/cache/nixpi/nix-2.24.9-aarch64-linux.tar.xz -C $ROOT/var/cache/nixpi/nix-unpack\n" +
		"$ROOT/var/cache/nixpi/nix-unpack/nix-2.24.9-aarch64-linux/install --daemon --yes --no-channel-add\n" +
		"/nix/var/nix/profiles/default/bin/nix --version\n" +
		"/nix/var/nix/profiles/default/bin/nix --extra-experimental-features nix-command config show\n" +
		"/usr/bin/systemctl restart nix-daemon.service\n"
	if got := strings.ReplaceAll(p.run.Transcript(), p.Root, "$ROOT"); got != want {
		t.Errorf("ran:\n%s\nwant:\n%s", got, want)
	}
	if n := p.State.Nix; n == nil || n.Installer != "official" || n.Version != "2.24.9" || n.TarballSHA256 != step.tarball.SHA256 {
		t.Errorf("state = %+v", n)
	}
	if !strings.Contains(p.log(), "sha256 "+step.tarball.SHA256+" verified") {
		t.Errorf("log:\n%s", p.log())
	}
}

func TestNixOfficialTarballWithTheWrongHashNeverRuns(t *testing.T) {
	t.Parallel()
	p, step := newNixUnit(t)
	p.Config.Nix.Installer = config.InstallerOfficial
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("tampered")) }))
	defer srv.Close()
	step.tarball = NixTarball{Version: "2.24.9", URL: srv.URL + "/nix-2.24.9-aarch64-linux.tar.xz", SHA256: OfficialNix.SHA256}
	p.Sleep = func(context.Context, time.Duration) error { return nil }
	err := step.Run(context.Background(), p.Env)
	if err == nil || !strings.Contains(err.Error(), "want "+OfficialNix.SHA256) {
		t.Fatalf("error = %v", err)
	}
	if got := p.run.Transcript(); got != "/usr/bin/dpkg --print-architecture\n" {
		t.Errorf("ran %q", got)
	}
	if _, err := os.Stat(p.Path("/var/cache/nixpi/nix-2.24.9-aarch64-linux.tar.xz")); !os.IsNotExist(err) {
		t.Errorf("the tampered tarball was kept: %v", err)
	}
}

func TestParseVersion(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"nix (Nix) 2.26.3\n": "2.26.3", "2.26.3+dfsg-2": "2.26.3", "1:2.8.0-1": "2.8.0", "2.18": "2.18"} {
		if got, _, ok := parseVersion(in); !ok || got != want {
			t.Errorf("parseVersion(%q) = %q, %v", in, got, ok)
		}
	}
	if _, mm, _ := parseVersion("2.17.1"); newEnough(mm) {
		t.Error("2.17 counted as new enough")
	}
	if _, mm, _ := parseVersion("3.0.0"); !newEnough(mm) {
		t.Error("3.0 counted as too old")
	}
}

// nix.installer = "official" on a Pi whose OS Nix is good: the official
// one is installed all the same, and the later steps use it.
func TestNixOfficialForcedOverDebian(t *testing.T) {
	t.Parallel()
	p, step := newNixUnit(t)
	p.Config.Nix.Installer = config.InstallerOfficial
	p.put(t, p.Tools.Nix, "")
	p.put(t, "/etc/group", "nixbld:x:30000:\n")
	p.run.On("nix (Nix) 2.26.3\n", p.Tools.Nix, "--version")
	tarball := []byte("stand-in tarball")
	sum := sha256.Sum256(tarball)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(tarball) }))
	defer srv.Close()
	step.tarball = NixTarball{Version: "2.24.9", URL: srv.URL + "/nix-2.24.9-aarch64-linux.tar.xz", SHA256: hex.EncodeToString(sum[:])}
	p.run.On("", p.Tools.Tar)
	installer := p.Path("/var/cache/nixpi/nix-unpack/nix-2.24.9-aarch64-linux/install")
	p.run.On("", installer)
	p.run.On("nix (Nix) 2.24.9\n", "/nix/var/nix/profiles/default/bin/nix", "--version")
	p.run.On("", p.Tools.Systemctl, "restart", "nix-daemon.service")
	p.run.OnRun = func(argv []string) {
		if argv[0] == installer {
			p.put(t, "/nix/var/nix/profiles/default/bin/nix", "")
			p.put(t, "/nix/var/nix/profiles/default/bin/nix-instantiate", "")
		}
	}
	if done, why, _ := step.Probe(context.Background(), p.Env); done || why != "no Nix installed" {
		t.Fatalf("Probe = %v, %q", done, why)
	}
	if err := step.Run(context.Background(), p.Env); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p.run.Transcript(), "apt-") {
		t.Errorf("asked apt:\n%s", p.run.Transcript())
	}
	if n := p.State.Nix; n == nil || n.Installer != "official" || n.TarballSHA256 != step.tarball.SHA256 {
		t.Errorf("state = %+v", n)
	}
	if got := nixBin(p.Env, "nix-instantiate"); got != "/nix/var/nix/profiles/default/bin/nix-instantiate" {
		t.Errorf("later steps run %s", got)
	}
	// A redo after a power cut past the install records the same sha256.
	p.State.Nix = nil
	if err := step.Run(context.Background(), p.Env); err != nil {
		t.Fatal(err)
	}
	if n := p.State.Nix; n == nil || n.TarballSHA256 != step.tarball.SHA256 {
		t.Errorf("state after the redo = %+v", n)
	}
}
