package nixos

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// Real hashes and keys (openssl passwd, mkpasswd and ssh-keygen; the
// passwords are throwaway).
const (
	sha512Hash   = "$6$saltsalt$5mR43xQaRO8UqNJiGE2zcmprBTlO9lTdMHosy2oRT70EPekI6VsnFfjuo.EkgAwlkxAXJglqAax0P4w5f3EVa."
	yescryptHash = "$y$j9T$F5Jx5fExrKuJdvbbNLQo9/$rRp6RdUwGiP5W1wGm3ohP1d1VRXgsvQjexSGMCjtUx5"
	ed25519Key   = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINs/P2AHuutJrx8BjqQ9lRPc2W6FzD+noshMtddXmn3s pi@laptop"
	ecdsaKey     = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBO3urM/MHBKzqHXdF7d9mlXPmu0rbqVP6//bNg1jwkt8bXADqlzuTWfNFhrCzMevr/b/tt0D5AAH/8fa3gncV18="
	wifiPSK      = "correct horse battery"
)

// goldenCases are the configs whose rendering is kept in testdata/NAME/.
// A zero Machine is the workstation (`nixpi config nixos`); the others are
// what the Pi writes with its memory known.
var goldenCases = []struct {
	name    string
	toml    string
	machine Machine
}{
	{"defaults", "", Machine{}},
	{"ext4", "[layout]\nroot_fs = \"ext4\"\n", Machine{}},
	{"mbr", "[layout]\ntable = \"mbr\"\nboot_size = \"256MiB\"\nswap_size = \"2GiB\"\nboot_label = \"PIBOOT\"\nswap_label = \"piswap\"\nroot_label = \"piroot\"\nsubvolumes = [\"@\", \"@nix\", \"@home\", \"@var\"]\n", Machine{}},
	{"noswap", "[layout]\nswap_size = \"0\"\n", Machine{RAMBytes: 8 << 30}},
	{"users-keys-wlan", `[system]
hostname = "garden-pi"
timezone = "Europe/Berlin"
keymap = "de-latin1"
locale = "de_DE.UTF-8"

[[users]]
name = "alice"
password_hash = "` + sha512Hash + `"
ssh_keys = ["` + ed25519Key + `", "` + ecdsaKey + `"]

[[users]]
name = "bob"
ssh_keys = ["` + ed25519Key + `"]

[wlan]
ssid = "Garden Wi-Fi ${x}"
psk = "` + wifiPSK + `"
country = "DE"
hidden = true
`, Machine{RAMBytes: 1 << 30}},
	{"extra-module", `[nixos]
substituters = ["https://cache.nixos.org", "https://nix-community.cachix.org"]
trusted_public_keys = ["cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=", "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs="]
extra_module = '''
{ pkgs, ... }:
{
  # a comment with a ) in it
  environment.systemPackages = [ pkgs.git pkgs.htop ];
  environment.etc."motd".text = ''
    Welcome to ${"the"} Pi.
  '';
}
'''

[[users]]
name = "pi"
password_hash = "` + yescryptHash + `"
`, Machine{RAMBytes: 4 << 30}},
	{"flake", `[nixos]
flake = "github:alice/nixos-config#garden"

[[users]]
name = "alice"
password_hash = "` + sha512Hash + `"

[wlan]
ssid = "Garden"
psk = "` + wifiPSK + `"
country = "DE"
`, Machine{RAMBytes: 2 << 30}},
	{"wlan-open", "[wlan]\nssid = \"Cafe\"\ncountry = \"FR\"\n\n[[users]]\nname = \"pi\"\nssh_keys = [\"" + ed25519Key + "\"]\n", Machine{RAMBytes: 2 << 30}},
}

func generateCase(t *testing.T, toml string, m Machine) (*config.Config, *Files) {
	t.Helper()
	cfg, err := config.Parse("nixpi.toml", []byte("schema = 1\n"+toml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	files, err := Generate(cfg, DiskFromLayout(cfg.Layout), m)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, files
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, files := generateCase(t, tc.toml, tc.machine)
			dir := filepath.Join("testdata", tc.name)
			wantNames := []string{"configuration.nix", "hardware-configuration.nix"}
			if cfg.NixOS.Flake != "" {
				wantNames = []string{"hardware-configuration.nix"}
			}
			var names []string
			for _, f := range files.Configs {
				names = append(names, filepath.Base(f.Path))
				if filepath.Dir(f.Path) != ConfigDir || f.Mode != 0o644 {
					t.Errorf("%s: mode %o, want 0644 in %s", f.Path, f.Mode, ConfigDir)
				}
				golden := filepath.Join(dir, filepath.Base(f.Path))
				if *update {
					if err := os.MkdirAll(dir, 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, f.Data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./firstboot/nixos -run TestGolden -update)", err)
				}
				if !bytes.Equal(f.Data, want) {
					t.Errorf("%s differs from %s (rerun with -update and review the diff):\n%s", f.Path, golden, f.Data)
				}
			}
			if strings.Join(names, " ") != strings.Join(wantNames, " ") {
				t.Errorf("files %q, want %q", names, wantNames)
			}
			for _, f := range files.Configs {
				for _, s := range files.Secrets {
					secret := strings.TrimSpace(string(s.Data))
					if _, value, ok := strings.Cut(secret, "="); ok && s.Path == WirelessFile {
						secret = value
					}
					if bytes.Contains(f.Data, []byte(secret)) {
						t.Errorf("%s contains the secret of %s", f.Path, s.Path)
					}
				}
			}
		})
	}
}

// Every golden file parses with the real Nix parser, evaluates as a module
// to plain data (no store paths), and sets only options that nixpkgs
// declares and has not removed.
func TestGoldenNix(t *testing.T) {
	bin := nixInstantiate(t)
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, files := generateCase(t, tc.toml, tc.machine)
			for _, f := range files.Configs {
				path := writeTemp(t, filepath.Base(f.Path), f.Data)
				nixParse(t, bin, path)
				v := nixEvalModule(t, bin, path)
				for _, p := range checkOptions(optionPaths(v)) {
					t.Errorf("%s: %s", f.Path, p)
				}
			}
		})
	}
}

// What the evaluated modules say, checked against the config rather than
// the golden text: labels, subvolumes, secrets by path, memory settings.
func TestGeneratedValues(t *testing.T) {
	bin := nixInstantiate(t)
	eval := func(t *testing.T, f File) map[string]any {
		return nixEvalModule(t, bin, writeTemp(t, filepath.Base(f.Path), f.Data))
	}
	get := func(v map[string]any, path ...string) any {
		var cur any = v
		for _, p := range path {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[p]
		}
		return cur
	}
	asJSON := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	// mkDefault: the value of a lib.mkDefault definition, "not mkDefault"
	// for any other.
	mkDefault := func(v any) any {
		if m, ok := v.(map[string]any); ok && m["_type"] == "override" && m["priority"] == float64(1000) {
			return m["content"]
		}
		return "not mkDefault"
	}

	cfg, _ := generateCase(t, goldenCases[2].toml, Machine{}) // mbr, custom labels
	// On the Pi: the PARTUUIDs the disk steps derived, never the labels.
	d := DiskFromLayout(cfg.Layout)
	d.BootPartUUID, d.SwapPartUUID, d.RootPartUUID = "1a2b3c4d-01", "1a2b3c4d-02", "1a2b3c4d-03"
	files, err := Generate(cfg, d, Machine{})
	if err != nil {
		t.Fatal(err)
	}
	if text := string(files.Configs[1].Data); strings.Contains(text, "by-label") || strings.Contains(text, "PARTUUID stand") {
		t.Errorf("the Pi's hardware-configuration.nix names a label or a placeholder:\n%s", text)
	}
	hw := eval(t, files.Configs[1])
	if got := asJSON(get(hw, "fileSystems", "/var")); got != `{"device":"/dev/disk/by-partuuid/1a2b3c4d-03","fsType":"btrfs","options":["subvol=@var","compress=zstd"]}` {
		t.Errorf("/var: %s", got)
	}
	if got := asJSON(get(hw, "fileSystems", "/boot", "device")); got != `"/dev/disk/by-partuuid/1a2b3c4d-01"` {
		t.Errorf("/boot device: %s", got)
	}
	if got := asJSON(get(hw, "swapDevices")); got != `[{"device":"/dev/disk/by-partuuid/1a2b3c4d-02"}]` {
		t.Errorf("swap: %s", got)
	}
	if got := mkDefault(get(hw, "boot", "loader", "generic-extlinux-compatible", "configurationLimit")); got != float64(ConfigurationLimit(cfg.Layout.BootSize)) || got != float64(1) {
		t.Errorf("configurationLimit for a 256MiB FAT: %v", got)
	}
	// Only the Pi 4's device trees on the FAT with each generation, and the
	// consoles sd-image-aarch64.nix sets, HDMI (tty0) last: /dev/console.
	if got := asJSON(mkDefault(get(hw, "hardware", "deviceTree", "filter"))); got != `"bcm2711-rpi-*.dtb"` {
		t.Errorf("hardware.deviceTree.filter = %s", got)
	}
	if got := asJSON(get(hw, "boot", "kernelParams")); got != `["console=ttyS0,115200n8","console=ttyAMA0,115200n8","console=tty0","panic=10"]` {
		t.Errorf("boot.kernelParams = %s", got)
	}
	// What a user's configuration or flake may set otherwise is mkDefault;
	// lists, which merge with the user's, are not (a user's list would
	// replace a mkDefault one, and stage 1 would lose the USB modules).
	for _, p := range [][]string{{"nixpkgs", "hostPlatform"}, {"boot", "loader", "grub", "enable"}, {"boot", "loader", "generic-extlinux-compatible", "enable"},
		{"boot", "kernelPackages"}, {"boot", "initrd", "systemd", "tpm2", "enable"}, {"hardware", "enableRedistributableFirmware"}} {
		if mkDefault(get(hw, p...)) == "not mkDefault" {
			t.Errorf("%s = %s, want lib.mkDefault", strings.Join(p, "."), asJSON(get(hw, p...)))
		}
	}
	if mkDefault(get(hw, "boot", "kernelParams")) != "not mkDefault" || mkDefault(get(hw, "boot", "initrd", "availableKernelModules")) != "not mkDefault" {
		t.Error("a list nixpi needs is lib.mkDefault: the user's own list would replace it")
	}
	// The workstation does not know the memory: the manual stays as NixOS
	// has it, the file says what a small Pi gets.
	if get(hw, "documentation") != nil {
		t.Errorf("documentation set without the memory known: %s", asJSON(get(hw, "documentation")))
	}

	_, files = generateCase(t, goldenCases[3].toml, Machine{RAMBytes: 8 << 30}) // no swap, big Pi
	if got := asJSON(get(eval(t, files.Configs[1]), "swapDevices")); got != `[]` {
		t.Errorf("no swap: swapDevices = %s", got)
	}
	if got := asJSON(get(eval(t, files.Configs[0]), "nix", "settings", "max-jobs")); got != "null" {
		t.Errorf("an 8 GiB Pi got max-jobs = %s", got)
	}

	if hw := eval(t, files.Configs[1]); get(hw, "documentation") != nil {
		t.Errorf("an 8 GiB Pi: documentation = %s", asJSON(get(hw, "documentation")))
	}

	cfg, files = generateCase(t, goldenCases[4].toml, Machine{RAMBytes: 1 << 30}) // users, keys, wlan, 1 GiB Pi
	c := eval(t, files.Configs[0])
	// A 1 GiB Pi: no NixOS manual (its options reference evaluates every
	// option), by default only, so nixos.extra_module can turn it on.
	if got := mkDefault(get(eval(t, files.Configs[1]), "documentation", "nixos", "enable")); got != false {
		t.Errorf("a 1 GiB Pi: documentation.nixos.enable = %v, want lib.mkDefault false", got)
	}
	if got := asJSON(get(c, "users", "users", "alice", "hashedPasswordFile")); got != `"/etc/nixos/secrets/alice.hashedPassword"` {
		t.Errorf("alice's password file: %s", got)
	}
	if get(c, "users", "users", "bob", "hashedPasswordFile") != nil || get(c, "security", "sudo", "wheelNeedsPassword") != false {
		t.Errorf("bob has only keys: he needs sudo without a password: %s", asJSON(get(c, "security")))
	}
	if got := asJSON(get(c, "users", "users", "alice", "openssh", "authorizedKeys", "keys")); got != asJSON(cfg.Users[0].SSHKeys) {
		t.Errorf("alice's keys: %s", got)
	}
	if get(c, "services", "openssh", "enable") != true {
		t.Error("ssh keys given but openssh is off")
	}
	wifi := get(c, "networking", "wireless", "networks", cfg.WLAN.SSID)
	if asJSON(wifi) != `{"hidden":true,"pskRaw":"ext:psk_nixpi"}` || get(c, "networking", "wireless", "secretsFile") != WirelessFile {
		t.Errorf("wireless: %s", asJSON(get(c, "networking", "wireless")))
	}
	if get(c, "nix", "settings", "max-jobs") != float64(1) || get(c, "nix", "settings", "cores") != float64(1) {
		t.Errorf("a 1 GiB Pi: nix.settings = %s", asJSON(get(c, "nix", "settings")))
	}
	// wpa_supplicant (its own user since 26.05) can read the key: not under
	// the root-only secrets/, and made root:wpa_supplicant 0640 at boot.
	if strings.HasPrefix(WirelessFile, SecretsDir+"/") || path.Dir(WirelessFile) != ConfigDir {
		t.Errorf("WirelessFile %s: wpa_supplicant cannot pass %s", WirelessFile, SecretsDir)
	}
	if got := asJSON(get(c, "systemd", "tmpfiles", "rules")); got != `["z /etc/nixos/wpa_supplicant-secrets.conf 0640 root wpa_supplicant -"]` {
		t.Errorf("tmpfiles rules for the Wi-Fi key: %s", got)
	}
	wantSecrets := map[string]string{
		"/etc/nixos/secrets/alice.hashedPassword": sha512Hash + "\n",
		WirelessFile: "psk_nixpi=" + wifiPSK + "\n",
	}
	if len(files.Secrets) != len(wantSecrets) {
		t.Errorf("secrets: %d files, want %d", len(files.Secrets), len(wantSecrets))
	}
	for _, s := range files.Secrets {
		if wantSecrets[s.Path] != string(s.Data) || s.Mode != 0o600 {
			t.Errorf("secret %s: mode %o, content wrong: %v", s.Path, s.Mode, wantSecrets[s.Path] == string(s.Data))
		}
	}

	_, files = generateCase(t, goldenCases[7].toml, Machine{RAMBytes: 2 << 30}) // open Wi-Fi
	c = eval(t, files.Configs[0])
	if got := asJSON(get(c, "networking", "wireless")); got != `{"enable":true,"extraConfig":"country=FR","networks":{"Cafe":{}}}` || len(files.Secrets) != 0 {
		t.Errorf("open network: %s, %d secrets", got, len(files.Secrets))
	}
	if get(c, "nix", "settings", "max-jobs") != float64(1) {
		t.Errorf("a 2 GiB Pi is small: %s", asJSON(get(c, "nix", "settings")))
	}
}

// NixString's output means, to Nix, exactly the Go string it was given.
func TestNixStringRoundTrip(t *testing.T) {
	bin := nixInstantiate(t)
	in := []string{"", "plain", `quote " and \ backslash`, "${interpolation}", "$ {not}", "$${x}", "a\nb\tc\rd", "''", "'''", "ünïcödé ✓", `\${`, "#not a comment", "/* nor this */"}
	var expr strings.Builder
	expr.WriteString("[")
	for _, s := range in {
		expr.WriteString(" " + NixString(s))
	}
	expr.WriteString(" ]")
	out, err := runNix(t, bin, "--eval", "--strict", "--json", "-E", expr.String())
	if err != nil {
		t.Fatalf("%s: %v", expr.String(), err)
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	for i := range in {
		if i >= len(got) || got[i] != in[i] {
			t.Errorf("NixString(%q) reads back as %q", in[i], got)
			break
		}
	}
}

func TestGenerateRefusesUnwritableSSID(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("nixpi.toml", []byte("schema = 1\n[wlan]\nssid = 'my \"net\"'\npsk = \"password1\"\ncountry = \"DE\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Generate(cfg, DiskFromLayout(cfg.Layout), Machine{})
	var cerr *config.Error
	if !errors.As(err, &cerr) || cerr.Key != "wlan.ssid" || !strings.Contains(cerr.Msg, `wlan.ssid = "my \"net\"" has a '"' or a line break`) {
		t.Errorf("Generate: %v", err)
	}
}

func TestConfigurationLimit(t *testing.T) {
	t.Parallel()
	for size, want := range map[config.Size]int{64 * config.MiB: 1, 256 * config.MiB: 1, 500 * config.MiB: 3, 1 * config.GiB: 8, 4 * config.GiB: 10} {
		if got := ConfigurationLimit(size); got != want {
			t.Errorf("ConfigurationLimit(%s) = %d, want %d", size, got, want)
		}
	}
}

func TestNixpkgs(t *testing.T) {
	t.Parallel()
	p, err := Nixpkgs(config.Default().NixOS)
	if err != nil || !p.Pinned || p.Release != "26.05" || len(p.Rev) != 40 {
		t.Fatalf("default release: %+v, %v", p, err)
	}
	// Every pin is a value the config itself would accept as nixpkgs_rev + nixpkgs_sha256.
	for _, pin := range pins() {
		cfg := config.Default()
		cfg.NixOS.Release, cfg.NixOS.NixpkgsRev, cfg.NixOS.NixpkgsSHA256 = pin.Release, pin.Rev, pin.SHA256
		if err := cfg.Validate(); err != nil {
			t.Errorf("pin %+v is not a valid config: %v", pin, err)
		}
	}
	own := config.NixOS{Release: "26.11", NixpkgsRev: strings.Repeat("a", 40), NixpkgsSHA256: "sha256-x"}
	if p, err := Nixpkgs(own); err != nil || p.Pinned || p.Rev != own.NixpkgsRev {
		t.Errorf("own nixpkgs: %+v, %v", p, err)
	}
	if _, err := Nixpkgs(config.NixOS{Release: "25.11"}); err == nil || !strings.Contains(err.Error(), `nixos.release = "25.11" has no nixpkgs pin in this nixpi (pinned: [26.05])`) {
		t.Errorf("unpinned release: %v", err)
	}
}

// Before the disk exists (the workstation) the file names placeholders and
// says so; a Disk with only some ids is a bug, not a configuration.
func TestPartUUIDPlaceholders(t *testing.T) {
	for _, tc := range []struct {
		name, toml, says string
	}{
		{"swap", "", "when the ids are not known yet:\n# BOOT-PARTUUID, SWAP-PARTUUID, ROOT-PARTUUID stand for them.\n"},
		{"no swap", "[layout]\nswap_size = \"0\"\n", "when the ids are not known yet:\n# BOOT-PARTUUID, ROOT-PARTUUID stand for them.\n"},
	} {
		cfg, files := generateCase(t, tc.toml, Machine{})
		hw := string(files.Configs[len(files.Configs)-1].Data)
		if !strings.Contains(hw, tc.says) || strings.Contains(hw, "by-label") {
			t.Errorf("%s: hardware-configuration.nix does not say what the placeholders stand for, or names a label:\n%s", tc.name, hw)
		}
		d := DiskFromLayout(cfg.Layout)
		d.BootPartUUID = "1a2b3c4d-01"
		if _, err := Generate(cfg, d, Machine{}); err == nil || !strings.Contains(err.Error(), "the disk's partition ids are incomplete") {
			t.Errorf("%s: only a boot id: %v", tc.name, err)
		}
	}
}

// After the install, nixos-rebuild finds nixpkgs: the release channel once
// fetched, else the store path the system was built from (kept in its
// closure by builtins.storePath); --upgrade follows the release's channel.
// Both are lib.mkDefault, so the user's own win without a conflict.
func TestNixPathAfterInstall(t *testing.T) {
	bin := nixInstantiate(t)
	_, files := generateCase(t, "", Machine{RAMBytes: 4 << 30})
	path := writeTemp(t, "configuration.nix", files.Configs[0].Data)
	c := nixEvalModule(t, bin, path)
	nix, _ := c["nix"].(map[string]any)
	np, _ := nix["nixPath"].(map[string]any)
	want := []any{
		"nixpkgs=/nix/var/nix/profiles/per-user/root/channels/nixos",
		"nixpkgs=" + testNixpkgsPath,
		"nixos-config=" + ConfigurationFile,
		"/nix/var/nix/profiles/per-user/root/channels",
	}
	if got, _ := json.Marshal(np["content"]); np["priority"] != float64(1000) || string(got) != mustJSON(want) {
		t.Errorf("nix.nixPath = %s, want lib.mkDefault %s", mustJSON(np), mustJSON(want))
	}
	sys, _ := c["system"].(map[string]any)
	dc, _ := sys["defaultChannel"].(map[string]any)
	if dc["priority"] != float64(1000) || dc["content"] != "https://nixos.org/channels/nixos-26.05" || ChannelURL("26.05") != dc["content"] {
		t.Errorf("system.defaultChannel = %s", mustJSON(dc))
	}
	// The store path is named without a copy: builtins.storePath gives the
	// same path (a "${pkgs.path}" would copy it to /nix/store/HASH-HASH-source),
	// and a nixpkgs outside the store (-I nixpkgs=~/nixpkgs) is taken as it is.
	for _, tc := range []struct{ pkgsPath, want string }{
		{testNixpkgsPath, testNixpkgsPath},
		{"/home/pi/nixpkgs", "/home/pi/nixpkgs"},
	} {
		expr := `let m = import ` + path + ` { config = { }; modulesPath = "/m";
		  lib = { mkDefault = x: x; hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p; };
		  pkgs = { linuxPackages = null; path = ` + NixString(tc.pkgsPath) + `; }; };
		in builtins.elemAt m.nix.nixPath 1`
		out, err := runNix(t, bin, "--eval", "--strict", "--json", "-E", expr)
		if err != nil || string(bytes.TrimSpace(out)) != mustJSON("nixpkgs="+tc.want) {
			t.Errorf("pkgs.path %s: nixPath entry %s, %v; want nixpkgs=%s", tc.pkgsPath, out, err, tc.want)
		}
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
