package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/nixos"
)

// runNixpiPath runs the CLI with PATH set, so it can find nix-instantiate.
func runNixpiPath(t *testing.T, path, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		if k == "PATH" {
			return path
		}
		return ""
	}
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errOut, getenv)
	return code, out.String(), errOut.String()
}

func writeConfig(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nixpi.toml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const nixosTestConfig = `schema = 1
[layout]
root_fs = "ext4"
root_label = "piroot"

[[users]]
name = "pi"
password_hash = "$5$saltsalt$L.JQzIaW.1ihQsg0PkX0QHWbo330iXQVSS37QeaNikA"

[wlan]
ssid = "home"
psk = "s3cretwifi"
country = "DE"
`

// The printed files are the generator's, byte for byte, and no secret shows.
func TestConfigNixosPrints(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, nixosTestConfig)
	code, stdout, stderr := runNixpi(t, "", "config", "nixos", path)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	cfg, err := config.Parse(path, []byte(nixosTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	files, err := nixos.Generate(cfg, nixos.DiskFromLayout(cfg.Layout), nixos.Machine{})
	if err != nil {
		t.Fatal(err)
	}
	want := "# ---- /etc/nixos/configuration.nix ----\n" + string(files.Configs[0].Data) + "\n# ---- /etc/nixos/hardware-configuration.nix ----\n" + string(files.Configs[1].Data)
	if stdout != want {
		t.Errorf("stdout is not the two generated files:\n%s", stdout)
	}
	// The disk does not exist yet: placeholders, said so in the file and on
	// stderr; never a label, which could name the SD card's partition.
	for _, w := range []string{`device = "/dev/disk/by-partuuid/ROOT-PARTUUID"`, "# BOOT-PARTUUID, SWAP-PARTUUID, ROOT-PARTUUID stand for them.", "On a Pi with 2 GiB of memory or less"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	if strings.Contains(stdout, "by-label") {
		t.Error("the printed hardware-configuration.nix names a filesystem by label")
	}
	for _, w := range []string{
		"nixpi: BOOT-PARTUUID, SWAP-PARTUUID, ROOT-PARTUUID in hardware-configuration.nix stand for the PARTUUIDs the Pi derives when it partitions the SSD",
		"the Pi also writes /etc/nixos/secrets/pi.hashedPassword (root-only, not shown)", "/etc/nixos/wpa_supplicant-secrets.conf"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q: %s", w, stderr)
		}
	}
	for _, secret := range []string{"s3cretwifi", "L.JQzIaW"} {
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("output shows the secret %q", secret)
		}
	}
}

func TestConfigNixosOut(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, nixosTestConfig)
	dir := filepath.Join(t.TempDir(), "etc-nixos")
	code, stdout, stderr := runNixpi(t, "", "config", "nixos", path, "--out", dir)
	if code != exitOK || !strings.Contains(stdout, "wrote "+filepath.Join(dir, "configuration.nix")) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	first, err := os.ReadFile(filepath.Join(dir, "hardware-configuration.nix"))
	if err != nil || !bytes.Contains(first, []byte(`fsType = "ext4"`)) {
		t.Fatalf("hardware-configuration.nix: %v\n%s", err, first)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("DIR holds %d entries, want the 2 files (no temporaries, no secrets)", len(entries))
	}

	// A second run refuses, changing nothing; --force replaces.
	edited := []byte("# my edit\n")
	if err := os.WriteFile(filepath.Join(dir, "configuration.nix"), edited, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "hardware-configuration.nix"))
	code, _, stderr = runNixpi(t, "", "config", "nixos", path, "--out", dir)
	if code != exitFailure || !strings.Contains(stderr, "configuration.nix\" already exists; pass --force to replace it") {
		t.Errorf("overwrite without --force: exit %d, %q", code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "configuration.nix")); !bytes.Equal(got, edited) {
		t.Error("the refused run changed configuration.nix")
	}
	if _, err := os.Stat(filepath.Join(dir, "hardware-configuration.nix")); err == nil {
		t.Error("the refused run wrote hardware-configuration.nix: half-written output")
	}
	if code, _, stderr := runNixpi(t, "", "config", "nixos", path, "--out", dir, "--force"); code != exitOK {
		t.Fatalf("--force: exit %d, %s", code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "hardware-configuration.nix")); !bytes.Equal(got, first) {
		t.Error("--force did not write the same hardware-configuration.nix")
	}
}

func TestConfigNixosFlakeAndUsage(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "schema = 1\n[nixos]\nflake = \"github:me/cfg#pi\"\n")
	code, stdout, stderr := runNixpi(t, "", "config", "nixos", path)
	if code != exitOK || !strings.Contains(stdout, "# ---- /etc/nixos/hardware-configuration.nix ----") || strings.Contains(stdout, "/etc/nixos/configuration.nix ----") {
		t.Errorf("flake: exit %d, stdout:\n%s", code, stdout)
	}
	if !strings.Contains(stderr, "the Pi writes only /etc/nixos/hardware-configuration.nix; import it from github:me/cfg#pi") {
		t.Errorf("flake: stderr %q", stderr)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"config", "nixos"}, "config nixos needs exactly one FILE"},
		{[]string{"config", "nixos", path, "--force"}, "--force only makes sense with --out DIR"},
		{[]string{"config", "nixos", path, "--bogus"}, "unknown flag: --bogus"},
	} {
		if code, _, stderr := runNixpi(t, "", tt.args...); code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("nixpi %s: exit %d, %q", strings.Join(tt.args, " "), code, stderr)
		}
	}
	if code, stdout, _ := runNixpi(t, "", "config", "nixos", "--help"); code != exitOK || !strings.Contains(stdout, "--out DIR") {
		t.Errorf("--help: %d %q", code, stdout)
	}
}

// A broken extra_module is reported at its line in the TOML file, by
// nix-instantiate when on PATH and by the fallback check otherwise.
func TestConfigCheckExtraModule(t *testing.T) {
	t.Parallel()
	src := "schema = 1\n[nixos]\nextra_module = '''\n{ pkgs, ... }:\n{\n  environment.systemPackages = [ pkgs.git ;\n}\n'''\n"
	path := writeConfig(t, src)
	// Without Nix: the bracket check finds the "}" that meets the open "[".
	code, _, stderr := runNixpiPath(t, "", "", "config", "check", path)
	if code != exitFailure || !strings.Contains(stderr, path+`:7: nixos.extra_module does not parse as Nix (line 4, column 1 of the module): unexpected '}': the "[" opened at line 3, column 32 needs "]" first`) {
		t.Errorf("fallback: exit %d, %s", code, stderr)
	}
	// Same for `config nixos`, which then prints nothing.
	if code, stdout, _ := runNixpiPath(t, "", "", "config", "nixos", path); code != exitFailure || stdout != "" {
		t.Errorf("config nixos with a broken module: exit %d, stdout %q", code, stdout)
	}
	nix, err := exec.LookPath("nix-instantiate")
	if err != nil {
		if os.Getenv("NIXPI_REQUIRE_NIX") == "1" {
			t.Fatal("NIXPI_REQUIRE_NIX=1 but nix-instantiate is not on PATH")
		}
		t.Skip("nix-instantiate not on PATH")
	}
	code, _, stderr = runNixpiPath(t, filepath.Dir(nix), "", "config", "check", path)
	if code != exitFailure || !strings.Contains(stderr, path+":6: nixos.extra_module does not parse as Nix (line 3, column 43 of the module): syntax error, unexpected ';'") {
		t.Errorf("nix-instantiate: exit %d, %s", code, stderr)
	}
	good := writeConfig(t, strings.Replace(src, "pkgs.git ;", "pkgs.git ];", 1))
	code, stdout, stderr := runNixpiPath(t, filepath.Dir(nix), "", "config", "check", good)
	if code != exitOK || !strings.Contains(stdout, "extra_module parses (nix-instantiate --parse)") {
		t.Errorf("good module: exit %d, %s%s", code, stdout, stderr)
	}
}

func TestConfigCheckNixOSProblems(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "schema = 1\n[nixos]\nrelease = \"25.11\"\n\n[wlan]\nssid = 'say \"hi\"'\ncountry = \"DE\"\n")
	code, _, stderr := runNixpi(t, "", "config", "check", path)
	for _, want := range []string{
		path + `:3: nixos.release = "25.11" has no nixpkgs pin in this nixpi (pinned: [26.05]); use one of those, or set nixos.nixpkgs_rev`,
		path + `:6: wlan.ssid = "say \"hi\"" has a '"' or a line break`,
		"2 problem(s)",
	} {
		if code != exitFailure || !strings.Contains(stderr, want) {
			t.Errorf("exit %d, stderr lacks %q:\n%s", code, want, stderr)
		}
	}
}
