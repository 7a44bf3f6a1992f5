package qemu

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/nixos"
	"github.com/nixpi/nixpi/firstboot/system"
)

const standInSrc = "../../testdata/e2e/standin-nixpkgs"

// hostStandIn stages the stand-in with the host's static busybox, which the
// host's Nix runs in its sandbox as the guest's runs the arm64 one. It
// skips without root (the host's Nix has no daemon: building needs the
// store) or without the tools, unless NIXPI_REQUIRE_NIX=1.
func hostStandIn(t *testing.T) (*StandIn, Tools) {
	t.Helper()
	return hostStandInWith(t, "")
}

// hostStandInWith stages it with a kernel directory (StandInKernel's
// layout) too: a bootable stand-in.
func hostStandInWith(t *testing.T, kernel string) (*StandIn, Tools) {
	t.Helper()
	tools := DefaultTools()
	var missing []string
	for _, p := range []string{tools.NixHash, tools.NixInstantiate, "/usr/bin/nix-build", "/usr/bin/nix", tools.Busybox} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	switch {
	case len(missing) > 0 && os.Getenv("NIXPI_REQUIRE_NIX") == "1":
		t.Fatalf("NIXPI_REQUIRE_NIX=1 but %v missing: apt-get install nix-bin busybox-static", missing)
	case len(missing) > 0:
		t.Skipf("stand-in nixpkgs tests need %v (apt-get install nix-bin busybox-static)", missing)
	case os.Geteuid() != 0:
		t.Skip("stand-in nixpkgs builds need root (the host's Nix writes its store directly)")
	}
	s, err := StageStandIn(context.Background(), system.ExecRunner{}, tools.NixHash, standInSrc, Bootstrap{Busybox: tools.Busybox, Kernel: kernel}, filepath.Join(t.TempDir(), "standin"))
	if err != nil {
		t.Fatal(err)
	}
	return s, tools
}

func nixOut(t *testing.T, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", system.QuoteArgv(argv), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// nixErr runs argv, which must fail, and returns its stderr.
func nixErr(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err == nil {
		t.Fatalf("%s succeeded, want a failure:\n%s", system.QuoteArgv(argv), out)
	}
	return string(out)
}

// Offline, sandboxed builds on the host.
var hostNixOpts = []string{"--option", "sandbox", "true", "--option", "substituters", ""}

func TestTarballIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "b", "c"), 0o700)
	os.WriteFile(filepath.Join(dir, "b", "c", "run"), []byte("#!/bin/sh\n"), 0o700)
	os.WriteFile(filepath.Join(dir, "a.nix"), []byte("{ }\n"), 0o600)
	one, err := Tarball(dir, "top")
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(dir, "a.nix"), later, later)
	two, _ := Tarball(dir, "top")
	if !bytes.Equal(one, two) {
		t.Fatal("the same tree packs to different tarballs after a change of mtime")
	}
	gz, err := gzip.NewReader(bytes.NewReader(one))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var got []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.ModTime.Unix() != 0 || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: mtime %v uid %d gid %d, want all zero", h.Name, h.ModTime, h.Uid, h.Gid)
		}
		got = append(got, fmt.Sprintf("%s %o", h.Name, h.Mode))
	}
	want := "top/ 755,top/a.nix 644,top/b/ 755,top/b/c/ 755,top/b/c/run 755"
	if strings.Join(got, ",") != want {
		t.Errorf("entries %q, want %q", strings.Join(got, ","), want)
	}
}

// TestStandInServedAndPinned serves the staged stand-in and fetches it with
// the host's real fetchTarball and the NAR hash the harness computed: the
// pin the e2e config carries verifies what the server sends.
func TestStandInServedAndPinned(t *testing.T) {
	s, tools := hostStandIn(t)
	srv, err := ServeStandIn(s)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	base := fmt.Sprintf("http://127.0.0.1:%d", srv.Port())
	tarballPath := strings.TrimPrefix(srv.TarballURL(), "http://"+GuestServerAddr)
	for path, want := range map[string]int{
		StandInCachePath + "/nix-cache-info":                           200,
		StandInCachePath + "/0123456789abcdfghijklmnpqrsvwxyz.narinfo": 404,
		tarballPath:                     200,
		"/nixpkgs/archive/other.tar.gz": 404,
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
		if strings.HasSuffix(path, "nix-cache-info") && !strings.Contains(string(body), "StoreDir: /nix/store\n") {
			t.Errorf("nix-cache-info has no StoreDir line: %q", body)
		}
	}
	if n := len(srv.Requests()); n != 4 {
		t.Errorf("the server recorded %d requests, want 4: %v", n, srv.Requests())
	}
	expr := fmt.Sprintf(`builtins.fetchTarball { url = %q; sha256 = %q; }`, base+tarballPath, s.NARHash)
	fetched := strings.Trim(nixOut(t, tools.NixInstantiate, "--eval", "--read-write-mode", "--json", "-E", expr), `"`)
	if got := nixOut(t, tools.NixHash, "--type", "sha256", "--base32", fetched); got != s.NARHash {
		t.Errorf("fetched tree %s hashes to %s, the pin is %s", fetched, got, s.NARHash)
	}
	// A different tree does not pass the pin.
	wrong := strings.Replace(s.NARHash, s.NARHash[:1], map[bool]string{true: "1", false: "0"}[s.NARHash[0] == '0'], 1)
	expr = fmt.Sprintf(`builtins.fetchTarball { url = %q; sha256 = %q; name = "stand-in-wrong-pin"; }`, base+tarballPath, wrong)
	if out := nixErr(t, tools.NixInstantiate, "--eval", "--read-write-mode", "-E", expr); !strings.Contains(out, "hash mismatch") {
		t.Errorf("fetchTarball with a wrong pin: %s", out)
	}
}

// standInConfig copies a golden configuration of firstboot/nixos and wraps
// it for the host: the same modules, with the host's platform forced
// (mkForce beats the configuration's "aarch64-linux").
func standInConfig(t *testing.T, golden string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"configuration.nix", "hardware-configuration.nix"} {
		data, err := os.ReadFile(filepath.Join("../../firstboot/nixos/testdata", golden, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), data, 0o644)
	}
	wrap := filepath.Join(dir, "host.nix")
	os.WriteFile(wrap, []byte(`{ lib, ... }: {
  imports = [ ./configuration.nix ];
  nixpkgs.hostPlatform = lib.mkForce builtins.currentSystem;
}
`), 0o644)
	return wrap
}

func TestStandInEvaluatesOurConfigurations(t *testing.T) {
	s, tools := hostStandIn(t)
	for _, golden := range []string{"defaults", "ext4", "mbr", "noswap", "users-keys-wlan", "wlan-open", "extra-module"} {
		conf := standInConfig(t, golden)
		expr := fmt.Sprintf(`let n = import %s/nixos { configuration = %s; }; in
		  [ n.config.networking.hostName n.config.fileSystems."/".device n.config.boot.loader.generic-extlinux-compatible.configurationLimit n.system.drvPath
		    n.config.hardware.deviceTree.filter n.config.boot.kernelParams ]`, s.Dir, conf)
		out := nixOut(t, tools.NixInstantiate, "--eval", "--read-write-mode", "--strict", "--json", "-E", expr)
		if !strings.Contains(out, "/dev/disk/by-partuuid/") || !strings.Contains(out, "-nixos-system-") {
			t.Errorf("%s: evaluation gave %s", golden, out)
		}
	}
	// The module system's rules hold: priorities, mkIf, an unknown option,
	// a wrong type.
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(text), 0o644)
		return p
	}
	prio := write("prio.nix", `{ lib, config, ... }: {
  imports = [ { networking.hostName = lib.mkDefault "low"; } { networking.hostName = lib.mkForce "forced"; } ];
  networking.hostName = "plain";
  services.openssh.enable = lib.mkIf (config.networking.hostName == "forced") true;
  boot.kernelParams = lib.mkMerge [ [ "a" ] [ "b" ] ];
}`)
	expr := fmt.Sprintf(`let c = (import %s/nixos { configuration = %s; }).config; in [ c.networking.hostName c.services.openssh.enable c.boot.kernelParams c.boot.loader.grub.enable ]`, s.Dir, prio)
	if got := nixOut(t, tools.NixInstantiate, "--eval", "--strict", "--json", "-E", expr); got != `["forced",true,["a","b"],true]` {
		t.Errorf("priorities: %s", got)
	}
	for name, c := range map[string]struct{ module, want string }{
		"unknown":  {`{ boot.loader.raspberryPi.enable = true; }`, "The option `boot.loader.raspberryPi' does not exist"},
		"type":     {`{ boot.loader.grub.enable = "no"; }`, "A definition for option `boot.loader.grub.enable' is not of type `boolean'"},
		"conflict": {`{ imports = [ { networking.hostName = "a"; } ]; networking.hostName = "b"; }`, "`networking.hostName' has conflicting definition values"},
	} {
		f := write(name+".nix", c.module)
		expr := fmt.Sprintf(`(import %s/nixos { configuration = %s; }).config.boot.loader.grub.enable == (import %s/nixos { configuration = %s; }).config.networking.hostName`, s.Dir, f, s.Dir, f)
		if out := nixErr(t, tools.NixInstantiate, "--eval", "--strict", "-E", expr); !strings.Contains(out, c.want) {
			t.Errorf("%s: want %q in:\n%s", name, c.want, out)
		}
	}
	// What nixpi sets as lib.mkDefault gives way to the user's own setting
	// (an extra_module, a flake) without a conflict: the manual a 1 GiB Pi
	// leaves out, the kernel, the device trees, the boot loader's limit.
	own := write("own.nix", `{ pkgs, ... }: { imports = [ `+standInConfig(t, "users-keys-wlan")+` ];
  documentation.nixos.enable = true; hardware.deviceTree.filter = "bcm2711-rpi-4-b.dtb";
  boot.kernelPackages = pkgs.linuxPackages // { own = true; }; boot.loader.generic-extlinux-compatible.configurationLimit = 2;
  nix.nixPath = [ "nixpkgs=/mine" ]; }`)
	expr = fmt.Sprintf(`let c = (import %s/nixos { configuration = %s; }).config; in [ c.documentation.nixos.enable c.hardware.deviceTree.filter (c.boot.kernelPackages.own or false) c.boot.loader.generic-extlinux-compatible.configurationLimit c.nix.nixPath ]`, s.Dir, own)
	if got := nixOut(t, tools.NixInstantiate, "--eval", "--strict", "--json", "-E", expr); got != `[true,"bcm2711-rpi-4-b.dtb",true,2,["nixpkgs=/mine"]]` {
		t.Errorf("the user's own settings: %s", got)
	}
	// Our configuration without its boot loader lines fails the toplevel's
	// assertion, as it would fail to boot.
	noLoader := write("noloader.nix", `{ lib, ... }: { imports = [ `+standInConfig(t, "defaults")+` ]; boot.loader.grub.enable = lib.mkForce true; }`)
	expr = fmt.Sprintf(`(import %s/nixos { configuration = %s; }).system.drvPath`, s.Dir, noLoader)
	if out := nixErr(t, tools.NixInstantiate, "--eval", "--read-write-mode", "-E", expr); !strings.Contains(out, "boot.loader.grub.enable = false") {
		t.Errorf("grub left on: %s", out)
	}
}

// TestStandInInstallsAndChecks builds a toplevel of a golden configuration
// in the host's sandbox, installs it into a directory the way the install
// step does (nix copy, then the stand-in's nixos-install), puts the
// firmware and config.txt where the firmware step does, and runs the
// harness's SSD checks on it; then breaks it in the ways they must catch.
func TestStandInInstallsAndChecks(t *testing.T) {
	s, tools := hostStandIn(t)
	conf := standInConfig(t, "users-keys-wlan")
	// Built from the stand-in in the store, as the Pi builds from the
	// fetched nixpkgs: pkgs.path is a store path, which the configuration's
	// nix.nixPath keeps in the system's closure for nixos-rebuild.
	src := nixOut(t, "nix-store", "--add", s.Dir)
	toplevel := nixOut(t, append([]string{"nix-build", "--no-out-link", src + "/nixos", "--arg", "configuration", conf, "-A", "system"}, hostNixOpts...)...)
	root := filepath.Join(t.TempDir(), "mnt")
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	nixOut(t, "nix", "--extra-experimental-features", "nix-command", "copy", "--no-check-sigs", "--to", "local?root="+root, toplevel)
	installTools := nixOut(t, append([]string{"nix-build", "--no-out-link", s.Dir, "-A", "nixos-install-tools"}, hostNixOpts...)...)
	nixOut(t, installTools+"/bin/nixos-install", "--root", root, "--system", toplevel, "--no-root-passwd", "--no-channel-copy")
	fw := strings.Fields(nixOut(t, append([]string{"nix-build", "--no-out-link", s.Dir, "-A", "raspberrypifw", "-A", "ubootRaspberryPi4_64bit", "-A", "raspberrypi-armstubs"}, hostNixOpts...)...))
	if len(fw) != 3 {
		t.Fatalf("firmware packages: %v", fw)
	}
	for src, dst := range map[string]string{
		fw[0] + "/share/raspberrypi/boot/start4.elf":          "start4.elf",
		fw[0] + "/share/raspberrypi/boot/fixup4.dat":          "fixup4.dat",
		fw[0] + "/share/raspberrypi/boot/bcm2711-rpi-4-b.dtb": "bcm2711-rpi-4-b.dtb",
		fw[1] + "/u-boot.bin":                                 "u-boot-rpi4.bin",
		fw[2] + "/armstub8-gic.bin":                           "armstub8-gic.bin",
	} {
		if err := copyFile(src, filepath.Join(root, "boot", dst)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "boot/config.txt"), []byte("[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\narmstub=armstub8-gic.bin\n\n[all]\narm_64bit=1\nenable_uart=1\navoid_warnings=1\n"), 0o644)
	// What the configure and nixpkgs steps leave in /etc/nixos.
	etc := filepath.Join(root, "etc/nixos")
	os.MkdirAll(etc, 0o755)
	os.MkdirAll(filepath.Join(etc, "secrets"), 0o700)
	for _, f := range []string{"configuration.nix", "hardware-configuration.nix"} {
		copyFile(filepath.Join("../../firstboot/nixos/testdata/users-keys-wlan", f), filepath.Join(etc, f))
	}
	secret := "$6$nixpihosttest$notarealhashbutsecretenough"
	os.WriteFile(filepath.Join(etc, "secrets/alice.hashedPassword"), []byte(secret+"\n"), 0o400)
	wifiKey := "correct horse battery staple"
	os.WriteFile(filepath.Join(root, nixos.WirelessFile), []byte("psk_nixpi="+wifiKey+"\n"), 0o600)
	os.WriteFile(filepath.Join(etc, "nixpi-pins.json"), []byte(`{"rev":"`+s.Rev+`","sha256":"`+s.NARHash+`"}`), 0o644)

	want := NixOSWant{Hostname: "garden-pi", SystemPath: toplevel, NixpkgsRev: s.Rev, Channel: "https://nixos.org/channels/nixos-26.05", Firmware: StandInFirmware,
		Secrets: []string{secret, wifiKey}, NixInstantiate: tools.NixInstantiate, Run: system.ExecRunner{}}
	ctx := context.Background()
	if p := CheckNixOSRoot(ctx, root, filepath.Join(root, "boot"), want); len(p) > 0 {
		t.Fatalf("a good install fails the checks:\n%s", strings.Join(p, "\n"))
	}
	conf2, err := os.ReadFile(filepath.Join(root, "boot/extlinux/extlinux.conf"))
	if err != nil || !strings.Contains(string(conf2), "APPEND init="+toplevel+"/init") {
		t.Fatalf("extlinux.conf: %v\n%s", err, conf2)
	}
	before, err := DescribeInstalled(root, filepath.Join(root, "boot"))
	if err != nil {
		t.Fatal(err)
	}
	// The same install on an SSD image, seen the way the e2e sees it.
	viaSSD := installedSSDView(t, root, want)
	if p := CompareInstalled("ssd image", viaSSD, before); len(p) > 0 {
		t.Errorf("the SSD image shows another install than the directory: %s", p)
	}
	// Running nixos-install again (a resumed install step) changes nothing.
	nixOut(t, installTools+"/bin/nixos-install", "--root", root, "--system", toplevel, "--no-root-passwd", "--no-channel-copy")
	after, _ := DescribeInstalled(root, filepath.Join(root, "boot"))
	if p := CompareInstalled("rerun", after, before); len(p) > 0 {
		t.Errorf("nixos-install run twice: %s", p)
	}

	// Each breakage is caught.
	kernels, _ := filepath.Glob(filepath.Join(root, "boot/nixos/*-Image"))
	if len(kernels) != 1 {
		t.Fatalf("kernels on the FAT: %v", kernels)
	}
	breakages := []struct {
		name  string
		do    func()
		undo  func()
		wants string
	}{
		{"kernel gone", func() { os.Rename(kernels[0], kernels[0]+".x") }, func() { os.Rename(kernels[0]+".x", kernels[0]) }, "not on the boot partition"},
		{"no /etc/NIXOS", func() { os.Remove(filepath.Join(root, "etc/NIXOS")) }, func() { os.WriteFile(filepath.Join(root, "etc/NIXOS"), nil, 0o644) }, "/etc/NIXOS"},
		{"secret in the store", func() {
			os.MkdirAll(filepath.Join(root, "nix/store/00000000000000000000000000000000-leak"), 0o755)
			os.WriteFile(filepath.Join(root, "nix/store/00000000000000000000000000000000-leak/passwd"), []byte("alice:"+secret+":"), 0o444)
		}, func() { os.RemoveAll(filepath.Join(root, "nix/store/00000000000000000000000000000000-leak")) }, "in the world-readable store"},
		{"secret readable", func() { os.Chmod(filepath.Join(etc, "secrets/alice.hashedPassword"), 0o644) },
			func() { os.Chmod(filepath.Join(etc, "secrets/alice.hashedPassword"), 0o400) }, "not root-only"},
		{"no U-Boot", func() { os.Rename(filepath.Join(root, "boot/u-boot-rpi4.bin"), filepath.Join(root, "u")) },
			func() { os.Rename(filepath.Join(root, "u"), filepath.Join(root, "boot/u-boot-rpi4.bin")) }, "u-boot-rpi4.bin"},
		{"config.txt without U-Boot", func() {
			os.WriteFile(filepath.Join(root, "boot/config.txt"), []byte("[all]\narm_64bit=1\nenable_uart=1\n"), 0o644)
		},
			func() {}, `"kernel=u-boot-rpi4.bin" in [pi4]`},
		{"broken configuration.nix", func() { os.WriteFile(filepath.Join(etc, "configuration.nix"), []byte("{ a = ; }"), 0o644) },
			func() {}, "configuration.nix does not parse"},
		{"Wi-Fi key behind a root-only directory", func() { os.Chmod(etc, 0o700) }, func() { os.Chmod(etc, 0o755) }, "wpa_supplicant cannot pass /etc/nixos"},
		{"Wi-Fi key readable by all", func() { os.Chmod(filepath.Join(root, nixos.WirelessFile), 0o644) },
			func() { os.Chmod(filepath.Join(root, nixos.WirelessFile), 0o600) }, "others cannot read"},
		{"no nixpkgs for nixos-rebuild", func() { os.Rename(filepath.Join(root, src), filepath.Join(root, src+".x")) },
			func() { os.Rename(filepath.Join(root, src+".x"), filepath.Join(root, src)) }, "finds no nixpkgs on the installed root"},
		{"upgrade follows another channel", func() { want.Channel = "https://nixos.org/channels/nixos-25.11" },
			func() { want.Channel = "https://nixos.org/channels/nixos-26.05" }, "do not subscribe root to https://nixos.org/channels/nixos-25.11"},
		{"other system", func() { want.SystemPath = "/nix/store/00000000000000000000000000000000-nixos-system-garden-pi-x" }, func() { want.SystemPath = toplevel }, "the journal recorded"},
	}
	for _, b := range breakages {
		b.do()
		p := CheckNixOSRoot(ctx, root, filepath.Join(root, "boot"), want)
		b.undo()
		if !strings.Contains(strings.Join(p, "\n"), b.wants) {
			t.Errorf("%s: the checks say %q, want %q", b.name, p, b.wants)
		}
		for _, line := range p {
			if strings.Contains(line, secret) {
				t.Errorf("%s: a problem quotes the secret: %s", b.name, line)
			}
		}
	}
	if p := CheckNoSecrets(map[string]string{"journal": "ok", "install.log": "x " + secret}, []string{secret}); len(p) != 1 || !strings.Contains(p[0], "install.log") {
		t.Errorf("CheckNoSecrets: %v", p)
	}
}

// TestE2EConfigWithStandInPins: the e2e config with the pins the harness
// adds is a valid config that fetches the stand-in from the guest's view of
// the server and uses its cache only.
func TestE2EConfigWithStandInPins(t *testing.T) {
	s := &StandIn{Rev: strings.Repeat("ab", 20), NARHash: strings.Repeat("0", 52), Tarball: []byte("x")}
	srv, err := ServeStandIn(s)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tmpl, err := os.ReadFile("../../testdata/e2e/nixpi.toml")
	if err != nil {
		t.Fatal(err)
	}
	// nixpi test --qemu's default: the example config, which names
	// cache.nixos.org; a multi-line array is replaced whole.
	example := strings.Replace(string(config.Example()), "substituters = [\"https://cache.nixos.org\"]",
		"substituters = [\n  \"https://cache.nixos.org\",\n]", 1)
	if !strings.Contains(example, "substituters = [\n") {
		t.Fatal("the example config no longer sets substituters as this test expects")
	}
	exampleText, err := WithStandInPins(example, srv, s)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := config.Parse("example.toml", []byte(exampleText))
	if err != nil {
		t.Fatalf("the example config with the stand-in's pins: %v\n%s", err, exampleText)
	}
	if ex.NixOS.NixpkgsRev != s.Rev || !slices.Equal(ex.NixOS.Substituters, []string{srv.CacheURL()}) || len(ex.NixOS.TrustedPublicKeys) != 1 {
		t.Errorf("the example config's pins: %+v", ex.NixOS)
	}
	text, err := WithStandInPins(string(tmpl), srv, s)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nixpi.toml")
	os.WriteFile(path, []byte(text), 0o644)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n := cfg.NixOS
	if n.NixpkgsURL != "http://10.0.2.100/stand-in-nixpkgs/"+s.Rev+".tar.gz" || n.NixpkgsRev != s.Rev || n.NixpkgsSHA256 != s.NARHash ||
		len(n.Substituters) != 1 || n.Substituters[0] != "http://10.0.2.100/stand-in-cache" || len(n.TrustedPublicKeys) != 1 {
		t.Errorf("pins in the run's config: %+v", n)
	}
	if len(cfg.Users) != 1 || cfg.Users[0].PasswordHash.Reveal() == "" {
		t.Errorf("the e2e config has no user with a password hash for the secret checks: %+v", cfg.Users)
	}
	// A minimal config has no [nixos] table: it gets one. A header with
	// spaces and a comment is the same table; [[users]] after it ends it.
	for _, tc := range []struct{ name, toml string }{
		{"minimal", "schema = 1"},
		{"no [nixos], other tables", "schema = 1\n[layout]\ntable = \"mbr\"\n[[users]]\nname = \"pi\"\nssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPi8Cfb9gHxNv7hFLbK40R+hjPROPOPZel90DcLcndG0 e2e@host\"]\n"},
		{"a spaced header with a comment", "schema = 1\n[ nixos ]  # the release\nrelease = \"26.05\"\nsubstituters = [\"https://cache.nixos.org\"]\n[[users]]\nname = \"pi\"\nssh_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPi8Cfb9gHxNv7hFLbK40R+hjPROPOPZel90DcLcndG0 e2e@host\"]\n"},
	} {
		text, err := WithStandInPins(tc.toml, srv, s)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		cfg, err := config.Parse("nixpi.toml", []byte(text))
		if err != nil {
			t.Errorf("%s: the config with the pins does not parse: %v\n%s", tc.name, err, text)
			continue
		}
		if cfg.NixOS.NixpkgsRev != s.Rev || !slices.Equal(cfg.NixOS.Substituters, []string{srv.CacheURL()}) || cfg.NixOS.Release != "26.05" {
			t.Errorf("%s: pins %+v\n%s", tc.name, cfg.NixOS, text)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := WithStandInPins("[nixos]\n[nixos]\n", srv, s); err == nil {
		t.Error("a config with two [nixos] tables got pins")
	}
}

// installedSSDView puts an installed root onto an SSD image laid out as the
// e2e config asks (GPT: FAT "boot", swap, btrfs "root" with @, @nix,
// @home), then checks and describes it through Inspector.WithInstalledSSD.
func installedSSDView(t *testing.T, root string, want NixOSWant) *InstalledSpec {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "ssd.img")
	if err := NewBlankDisk(img, 1<<30); err != nil {
		t.Fatal(err)
	}
	sh := func(argv ...string) string { return nixOut(t, argv...) }
	sh("sgdisk", "-n1:2048:+128M", "-t1:EF00", "-n2:0:+64M", "-t2:8200", "-n3:0:0", "-t3:8300", img)
	loop := sh("losetup", "--find", "--show", "--partscan", img)
	t.Cleanup(func() { exec.Command("losetup", "--detach", loop).Run() })
	in := &Inspector{Run: system.ExecRunner{Log: func(l string) { t.Log(l) }}, Tools: DefaultTools(), TempDir: dir}
	for _, n := range []string{"p1", "p2", "p3"} {
		if err := waitForNode(ctx, in, loop, loop+n); err != nil {
			t.Fatal(err)
		}
	}
	sh("mkfs.fat", "-F", "32", "-n", "boot", loop+"p1")
	sh("mkswap", "-L", "swap", loop+"p2")
	sh("mkfs.btrfs", "-q", "-L", "root", loop+"p3")
	mnt := filepath.Join(dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	sh("mount", "-t", "btrfs", loop+"p3", mnt)
	for _, sub := range []string{"@", "@nix", "@home"} {
		sh("btrfs", "-q", "subvolume", "create", filepath.Join(mnt, sub))
	}
	sh("cp", "-a", root+"/nix/.", filepath.Join(mnt, "@nix"))
	for _, d := range []string{"etc", "boot", "nix", "home"} {
		if d == "etc" {
			sh("cp", "-a", filepath.Join(root, "etc"), filepath.Join(mnt, "@"))
		} else {
			os.MkdirAll(filepath.Join(mnt, "@", d), 0o755)
		}
	}
	sh("umount", mnt)
	entries, _ := os.ReadDir(filepath.Join(root, "boot"))
	argv := []string{"mcopy", "-s", "-i", loop + "p1"}
	for _, e := range entries {
		argv = append(argv, filepath.Join(root, "boot", e.Name()))
	}
	sh(append(argv, "::/")...)
	exec.Command("losetup", "--detach", loop).Run()

	spec, err := in.Inspect(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	// The partitions as the plan names them, by number.
	plan := &disk.Plan{Table: config.TableGPT, Subvolumes: []string{"@", "@nix", "@home"}, Parts: []disk.Part{
		{Number: 1, Role: disk.RoleBoot, FSType: "vfat"}, {Number: 2, Role: disk.RoleSwap, FSType: "swap"}, {Number: 3, Role: disk.RoleRoot, FSType: config.FSBtrfs}}}
	var got *InstalledSpec
	err = in.WithInstalledSSD(ctx, img, spec, plan, func(r, boot string) error {
		if p := CheckNixOSRoot(ctx, r, boot, want); len(p) > 0 {
			t.Errorf("the install on an SSD image fails the checks:\n%s", strings.Join(p, "\n"))
		}
		var err error
		got, err = DescribeInstalled(r, boot)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("losetup", "--associated", img).Output(); len(out) > 0 {
		t.Errorf("WithInstalledSSD left a loop device: %s", out)
	}
	return got
}

// TestStandInFirmwareCoversBootFiles: the firmware the checks expect on the
// SSD includes every file the device must put there.
func TestStandInFirmwareCoversBootFiles(t *testing.T) {
	for _, f := range bootfiles.SSDBootFiles {
		if _, ok := StandInFirmware[f]; !ok {
			t.Errorf("StandInFirmware has no %s, which bootfiles.SSDBootFiles requires on the SSD", f)
		}
	}
}

// confirmUnit is the unit the generated configuration declares to confirm
// a trial boot of the SSD, and one more with a script and an environment.
const confirmUnit = `
  systemd.services.nixpi-confirm = {
    description = "nixpi: confirm that NixOS booted from the SSD, then retire the SD card";
    wantedBy = [ "multi-user.target" ];
    wants = [ "network-online.target" ];
    after = [ "network-online.target" "local-fs.target" ];
    unitConfig.ConditionPathExists = "/var/lib/nixpi/trial.json";
    serviceConfig = { Type = "oneshot"; ExecStart = "/var/lib/nixpi/nixpi-firstboot confirm"; };
  };
  systemd.services.greeter = {
    wantedBy = [ "multi-user.target" ];
    environment.GREETING = "it's me";
    script = ''echo "greeter: $GREETING"'';
    serviceConfig.Type = "oneshot";
    unitConfig.ConditionPathExists = [ "/" "!/nonexistent" ];
  };
  systemd.services.not-wanted = { wantedBy = [ "sleep.target" ]; script = "exit 3"; };
`

// TestStandInBootable builds, with a kernel in bootstrap/ (a fake one: the
// host's Nix builds for the host), the bootable stand-in's toplevel: the
// kernel and modules are the bootstrap's, the initrd a newc archive with
// busybox, the modules and stage 1 that two builds make byte for byte, the
// init stage 2 with the units, and extlinux.conf boots it.
func TestStandInBootable(t *testing.T) {
	kernel := t.TempDir()
	for name, text := range map[string]string{
		"Image": "fake kernel Image\n", "version": "6.12.0-test\n", "modules.load": "kernel/fs/btrfs/btrfs.ko\nkernel/fs/fat/vfat.ko\n",
		"modules/kernel/fs/btrfs/btrfs.ko": "fake btrfs.ko\n", "modules/kernel/fs/fat/vfat.ko": "fake vfat.ko\n",
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(kernel, name)), 0o755)
		os.WriteFile(filepath.Join(kernel, name), []byte(text), 0o644)
	}
	s, tools := hostStandInWith(t, kernel)
	if !s.Bootable {
		t.Fatal("a stand-in staged with a kernel is not bootable")
	}
	dir := t.TempDir()
	conf := standInConfig(t, "defaults")
	os.WriteFile(filepath.Join(dir, "units.nix"), []byte("{ ... }: { imports = [ "+conf+" ];\n"+confirmUnit+"}\n"), 0o644)
	toplevel := nixOut(t, append([]string{"nix-build", "--no-out-link", s.Dir + "/nixos", "--arg", "configuration", filepath.Join(dir, "units.nix"), "-A", "system"}, hostNixOpts...)...)

	if got, _ := os.ReadFile(toplevel + "/kernel"); string(got) != "fake kernel Image\n" {
		t.Errorf("the toplevel's kernel is %q, not the bootstrap's Image", got)
	}
	if got, _ := os.ReadFile(toplevel + "/kernel-modules/6.12.0-test/kernel/fs/fat/vfat.ko"); string(got) != "fake vfat.ko\n" {
		t.Errorf("the kernel's modules: %q", got)
	}

	// The initrd: what is in it, and the same bytes from a second build.
	initrd, err := os.ReadFile(toplevel + "/initrd")
	if err != nil {
		t.Fatal(err)
	}
	unpacked := t.TempDir()
	cmd := exec.Command("sh", "-c", "gzip -dc | "+tools.Busybox+" cpio -id")
	cmd.Dir, cmd.Stdin = unpacked, bytes.NewReader(initrd)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unpack the initrd: %v: %s", err, out)
	}
	for name, want := range map[string]string{
		"init":                                 "stand-in NixOS stage 1",
		"bin/busybox":                          "",
		"etc/stand-in-fs.sh":                   "by_partuuid",
		"etc/stand-in-early-mounts":            "/dev/disk/by-partuuid/ROOT-PARTUUID / btrfs subvol=@,compress=zstd\n/dev/disk/by-partuuid/ROOT-PARTUUID /nix btrfs subvol=@nix,compress=zstd\n",
		"etc/stand-in-initrd-modules":          "xhci_pci usbhid usb_storage uas pcie_brcmstb reset-raspberrypi vc4",
		"lib/modules/stand-in-modules.load":    "kernel/fs/btrfs/btrfs.ko\nkernel/fs/fat/vfat.ko\n",
		"lib/modules/kernel/fs/btrfs/btrfs.ko": "fake btrfs.ko\n",
	} {
		got, err := os.ReadFile(filepath.Join(unpacked, name))
		if err != nil || !strings.Contains(string(got), want) {
			t.Errorf("the initrd's %s: %.200q (%v), want %q in it", name, got, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(unpacked, "init")); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("the initrd's init is not executable (%v)", err)
	}
	drv := nixOut(t, "nix-store", "--query", "--deriver", filepath.Dir(mustReadlink(t, toplevel+"/initrd")))
	nixOut(t, append([]string{"nix-build", "--no-out-link", "--check", drv}, hostNixOpts...)...)

	// Stage 2: its units, run here by its own start_unit (no mounts).
	init := mustReadlink(t, toplevel+"/init")
	text, err := os.ReadFile(init)
	if err != nil || !strings.HasPrefix(string(text), "#!/nix/store/") || regexp.MustCompile(`@[a-zA-Z]+@`).Match(text) {
		t.Fatalf("stage 2 %s: %v\n%s", init, err, text)
	}
	if out, err := exec.Command(tools.Busybox, "sh", "-n", init).CombinedOutput(); err != nil {
		t.Errorf("stage 2 does not parse: %v: %s", err, out)
	}
	units := regexp.MustCompile(`(?m)^\. (/nix/store/\S+-stand-in-units)$`).FindStringSubmatch(string(text))
	startUnit := regexp.MustCompile(`(?ms)^start_unit\(\) \{.*?^\}`).FindString(string(text))
	if units == nil || startUnit == "" {
		t.Fatalf("stage 2 has no units file or no start_unit:\n%s", text)
	}
	run := `say() { echo "stand-in NixOS: $*"; }` + "\n" + startUnit + "\n. " + units[1] + "\n"
	out, err := exec.Command(tools.Busybox, "sh", "-c", run).CombinedOutput()
	want := "stand-in NixOS: started greeter\ngreeter: it's me\nstand-in NixOS: greeter exited with 0\n" +
		"stand-in NixOS: skipped nixpi-confirm: ConditionPathExists=/var/lib/nixpi/trial.json, and /var/lib/nixpi/trial.json does not exist\n"
	if err != nil || string(out) != want {
		t.Errorf("the units in stage 2's order:\n%s(%v)\nwant\n%s", out, err, want)
	}
	unitsText, _ := os.ReadFile(units[1])
	if !strings.Contains(string(unitsText), "start_unit 'nixpi-confirm' 'oneshot' /nix/store/") || strings.Contains(string(unitsText), "not-wanted") {
		t.Errorf("the units file:\n%s", unitsText)
	}

	// Installed as the install step does it: extlinux.conf boots this init
	// with the toplevel's kernel and initrd.
	root := filepath.Join(t.TempDir(), "mnt")
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	nixOut(t, "nix", "--extra-experimental-features", "nix-command", "copy", "--no-check-sigs", "--to", "local?root="+root, toplevel)
	installTools := nixOut(t, append([]string{"nix-build", "--no-out-link", s.Dir, "-A", "nixos-install-tools"}, hostNixOpts...)...)
	nixOut(t, installTools+"/bin/nixos-install", "--root", root, "--system", toplevel, "--no-root-passwd", "--no-channel-copy")
	extlinux, err := os.ReadFile(filepath.Join(root, "boot/extlinux/extlinux.conf"))
	if err != nil {
		t.Fatal(err)
	}
	labels, _ := ParseExtlinux(string(extlinux)).BootOrder()
	if len(labels) == 0 || !strings.HasPrefix(labels[0].Append, "init="+toplevel+"/init loglevel=4") {
		t.Fatalf("extlinux.conf does not boot the toplevel's init:\n%s", extlinux)
	}
	for what, p := range map[string]string{"kernel": labels[0].Kernel, "initrd": labels[0].Initrd} {
		got, err := os.ReadFile(filepath.Join(root, "boot/extlinux", p))
		want, _ := os.ReadFile(filepath.Join(toplevel, what))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("extlinux.conf's %s %s is not the toplevel's (%v)", what, p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "boot/extlinux", labels[0].FDTDir, rpi4FDTFile)); err != nil {
		t.Errorf("FDTDIR %s has no %s: %v", labels[0].FDTDir, rpi4FDTFile, err)
	}
}

func mustReadlink(t *testing.T, p string) string {
	t.Helper()
	target, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// TestStandInPartUUID: stage 1's PARTUUID of a partition, from the table
// itself (there is no udev), is what sgdisk and the MBR say.
func TestStandInPartUUID(t *testing.T) {
	t.Parallel()
	tools := DefaultTools()
	if _, err := exec.LookPath(tools.Busybox); err != nil {
		t.Skip("busybox-static not installed")
	}
	if _, err := exec.LookPath(tools.Sgdisk); err != nil {
		t.Skip("gdisk not installed")
	}
	lib := filepath.Join(standInSrc, "nixos/stand-in-fs.sh")
	partuuid := func(img string, n int) string {
		out, err := exec.Command(tools.Busybox, "sh", "-c", `. "$0"; partuuid "$1" "$2"`, lib, img, fmt.Sprint(n)).CombinedOutput()
		if err != nil {
			t.Fatalf("partuuid %s %d: %v: %s", img, n, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	gpt := filepath.Join(t.TempDir(), "gpt.img")
	NewBlankDisk(gpt, 64<<20)
	if out, err := exec.Command(tools.Sgdisk, "-n1:2048:+8M", "-t1:EF00", "-n2:0:+8M", "-n3:0:0", gpt).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v: %s", err, out)
	}
	dump, err := exec.Command(tools.Sfdisk, "--json", gpt).Output()
	if err != nil {
		t.Fatal(err)
	}
	table, err := disk.ParseSfdisk(dump)
	if err != nil || len(table.Partitions) != 3 {
		t.Fatalf("sfdisk --json: %v, %s", err, dump)
	}
	for i, p := range table.Partitions {
		if got := partuuid(gpt, i+1); got != strings.ToLower(p.UUID) {
			t.Errorf("GPT partition %d: %s, sfdisk says %s", i+1, got, p.UUID)
		}
	}
	mbr := filepath.Join(t.TempDir(), "mbr.img")
	os.WriteFile(mbr, EncodeMBR(0x0badcafe, []Partition{{Type: 0x0c, Offset: 1 << 20, Size: 1 << 20}, {Type: 0x83, Offset: 2 << 20, Size: 1 << 20}}), 0o644)
	os.Truncate(mbr, 4<<20)
	if got := partuuid(mbr, 2); got != "0badcafe-02" {
		t.Errorf("MBR partition 2: %s, want 0badcafe-02", got)
	}
}
