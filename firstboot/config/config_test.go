package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// Real hashes and keys (made with openssl passwd, python crypt and ssh-keygen
// for these tests; the passwords are throwaway).
const (
	sha512Hash   = "$6$saltsalt$5mR43xQaRO8UqNJiGE2zcmprBTlO9lTdMHosy2oRT70EPekI6VsnFfjuo.EkgAwlkxAXJglqAax0P4w5f3EVa."
	sha256Hash   = "$5$saltsalt$L.JQzIaW.1ihQsg0PkX0QHWbo330iXQVSS37QeaNikA"
	bcryptHash   = "$2b$12$67qbpE.KstAdmYoCUt3Evuy4opIm2G8JuUwVQu9D5UAbjH8z.1U8K"
	yescryptHash = "$y$j9T$F5Jx5fExrKuJdvbbNLQo9/$rRp6RdUwGiP5W1wGm3ohP1d1VRXgsvQjexSGMCjtUx5"
	ed25519Key   = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINs/P2AHuutJrx8BjqQ9lRPc2W6FzD+noshMtddXmn3s pi@laptop"
	ecdsaKey     = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBO3urM/MHBKzqHXdF7d9mlXPmu0rbqVP6//bNg1jwkt8bXADqlzuTWfNFhrCzMevr/b/tt0D5AAH/8fa3gncV18="
	wifiPSK      = "correct horse battery"
)

// full sets every key, with secrets, so round trips and redaction are
// tested on everything.
var full = `schema = 1

[target]
disk = "/dev/disk/by-id/usb-Samsung_SSD_T7_S5ABC123-0:0"
wipe = true
min_size = "100GiB"

[layout]
table = "mbr"
boot_size = "1GiB"
swap_size = "4GiB"
root_fs = "btrfs"
subvolumes = ["@", "@nix", "@home", "@var"]
boot_label = "NIXBOOT"
swap_label = "nixswap"
root_label = "nixroot"

[nixos]
release = "26.11"
nixpkgs_rev = "0123456789abcdef0123456789abcdef01234567"
nixpkgs_sha256 = "1a0lr2ydjz4gfvz7y4w8q3x2xk8r5m4a0abr8q9d3gdpr5d0sxi4"
nixpkgs_url = "https://mirror.example.org/nixpkgs/0123456789abcdef0123456789abcdef01234567.tar.gz"
extra_module = '''
{ pkgs, ... }: { services.openssh.enable = true; }
'''
substituters = ["https://cache.nixos.org", "https://nix-community.cachix.org"]
trusted_public_keys = ["cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=", "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs="]

[nix]
installer = "official"

[system]
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
password_hash = '` + yescryptHash + `'

[wlan]
ssid = "Garden Wi-Fi"
psk = "` + wifiPSK + `"
country = "DE"
hidden = true

[boot]
boot_order = "0xf14"

[status]
enable = true
listen = "0.0.0.0:8080"
`

func TestExampleParses(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("nixpi.example.toml", Example())
	if err != nil {
		t.Fatalf("the example does not parse:\n%v", err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("the example's values differ from Default():\n%+v\n%+v", cfg, Default())
	}
	// Every key of the schema appears in the example, set or commented out.
	for _, key := range allKeys(reflect.TypeOf(Config{}), "") {
		name := key[strings.LastIndexByte(key, '.')+1:]
		if !bytes.Contains(Example(), []byte(name+" = ")) {
			t.Errorf("the example does not document %s", key)
		}
	}
}

func allKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name := prefix + tagName(f)
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.NumField() > 0 && ft != reflect.TypeOf(SwapSize{}) {
			keys = append(keys, allKeys(ft, name+".")...)
			continue
		}
		keys = append(keys, name)
	}
	return keys
}

func TestDefaultIsValidAndTheRecipe(t *testing.T) {
	t.Parallel()
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.Target.Disk != "auto" || d.Target.Wipe || d.Layout.Table != "gpt" || d.Layout.BootSize != 500*MiB ||
		!d.Layout.SwapSize.RAM || d.Layout.RootFS != "btrfs" || d.NixOS.Release != "26.05" ||
		d.Boot.BootOrder != "0xf41" || d.System.Hostname != "nixpi" || d.System.Timezone != "UTC" ||
		d.System.Keymap != "us" || d.System.Locale != "en_US.UTF-8" ||
		d.Layout.BootLabel != "boot" || d.Layout.SwapLabel != "swap" || d.Layout.RootLabel != "root" {
		t.Errorf("Default() is not the recipe: %+v", d)
	}
	want := []Mount{{"@", "/"}, {"@nix", "/nix"}, {"@home", "/home"}}
	if got := d.Layout.SubvolumeMounts(); !reflect.DeepEqual(got, want) {
		t.Errorf("SubvolumeMounts = %v, want %v", got, want)
	}
}

func TestParseFull(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("full.toml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Users[0].PasswordHash.Reveal() != sha512Hash || cfg.WLAN.PSK.Reveal() != wifiPSK {
		t.Error("secrets not read")
	}
	if cfg.Layout.SwapSize.Resolve(3_900_000_000) != 4*GiB || cfg.Target.MinSize != 100*GiB {
		t.Errorf("sizes: %v %v", cfg.Layout.SwapSize, cfg.Target.MinSize)
	}
	if len(cfg.Users[0].SSHKeys) != 2 || cfg.Users[1].Name != "bob" || !cfg.WLAN.Hidden || !strings.Contains(cfg.NixOS.ExtraModule, "openssh") {
		t.Errorf("parsed %+v", cfg)
	}
}

func TestImpliedDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("x.toml", []byte("schema = 1\n[target]\nserial = \"S5ABC123\"\n[layout]\nroot_fs = \"ext4\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Target.Disk != "" || cfg.Target.Serial != "S5ABC123" {
		t.Errorf("serial without disk: target = %+v", cfg.Target)
	}
	if cfg.Layout.Subvolumes != nil {
		t.Errorf("ext4 kept the btrfs subvolumes: %q", cfg.Layout.Subvolumes)
	}
	if cfg.WLAN != nil || cfg.Users != nil {
		t.Errorf("absent tables became non-nil: %+v %+v", cfg.WLAN, cfg.Users)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	const head = "schema = 1\n"
	user := func(lines string) string { return head + "[[users]]\nname = \"pi\"\n" + lines }
	tests := []struct {
		name string
		in   string
		want []string // each "LINE: substring", in order; LINE 0 means no line
	}{
		{"no schema", "[target]\ndisk = \"auto\"\n", []string{"0: no schema version; add `schema = 1`"}},
		{"future schema", "schema = 2\n[newthing]\n", []string{"1: schema = 2 is not supported: this nixpi reads schema 1"}},
		{"schema as string", "schema = \"1\"\n", []string{"1: schema must be a whole number: write `schema = 1`"}},
		{"syntax error", head + "[target\ndisk = 1\n", []string{"2: not valid TOML: expected '.' or ']' to end table name"}},
		{"duplicate key", head + "[target]\nwipe = true\nwipe = false\n", []string{"4: not valid TOML: Key 'target.wipe' has already been defined"}},
		{"unknown key", head + "[target]\ndisk = \"auto\"\ndisks = \"auto\"\n", []string{`4: unknown key "disks" in [target]; check the spelling, allowed here: disk, serial, wipe, min_size`}},
		{"unknown table", head + "\n[network]\nssid = \"x\"\nmore = 1\n", []string{`3: unknown key "network" at the top level; check the spelling, allowed here: schema, target, layout`}},
		{"unknown key in two users", user("shell = \"zsh\"\npassword_hash = \"" + sha256Hash + "\"\n[[users]]\nname = \"x\"\nshell = \"bash\"\npassword_hash = \"" + bcryptHash + "\"\n"),
			[]string{`4: unknown key "shell" in [users]`, `8: unknown key "shell" in [users]`}},
		{"dotted unknown key", head + "target.disk = \"auto\"\ntarget.size = 1\n", []string{`3: unknown key "size" in [target]`}},
		{"wrong type bool", head + "[target]\nwipe = \"yes\"\n", []string{`3: target.wipe has the wrong type: found a string, want true or false`}},
		{"wrong type string", head + "[system]\nhostname = 42\n", []string{`3: system.hostname has the wrong type: found a whole number, want a string in quotes`}},
		{"wrong type list", head + "[layout]\nsubvolumes = \"@\"\n", []string{`3: layout.subvolumes has the wrong type: found a string, want a list [...]`}},
		{"array of tables for a table", head + "[[target]]\n", []string{`2: target has the wrong type: found an array of tables [[...]], want a table [target]`}},
		{"table for users", head + "[users]\nname = \"x\"\n", []string{`2: users has the wrong type: found a table, want an array of tables [[users]]`}},
		{"table for a size", head + "[layout]\nswap_size = { a = 1 }\n", []string{`3: layout.swap_size has the wrong type: found a table, want a string in quotes`}},
		{"size without unit", head + "[layout]\nboot_size = \"500M\"\n", []string{`3: layout.boot_size: size "500M": write a whole number with an IEC unit, e.g. "500MiB"`}},
		{"size as number", head + "[layout]\n\nboot_size = 500\n", []string{`4: layout.boot_size: size "500": write a whole number with an IEC unit`}},
		{"swap size", head + "[layout]\nswap_size = \"lots\"\n", []string{`3: layout.swap_size: size "lots": write a whole number with an IEC unit, e.g. "500MiB" or "1GiB" (units: B, KiB, MiB, GiB, TiB), or "ram"`}},
		{"boot too small", head + "[layout]\nboot_size = \"32MiB\"\n", []string{`3: layout.boot_size = "32MiB" is too small: the boot partition needs at least 64MiB`}},
		{"boot not MiB aligned", head + "[layout]\nboot_size = \"70000KiB\"\n", []string{`3: layout.boot_size = "70000KiB" is not a whole number of MiB`}},
		{"swap too small", head + "[layout]\nswap_size = \"1MiB\"\n", []string{`3: layout.swap_size = "1MiB" is too small to help; use "ram" (default), at least 16MiB, or "0" for no swap`}},
		{"table", head + "[layout]\ntable = \"dos\"\n", []string{`3: layout.table = "dos": use "gpt" (default) or "mbr"`}},
		{"root fs", head + "[layout]\nroot_fs = \"zfs\"\n", []string{`3: layout.root_fs = "zfs": use "btrfs" (default) or "ext4"`}},
		{"subvolumes with ext4", head + "[layout]\nroot_fs = \"ext4\"\nsubvolumes = [\"@\"]\n", []string{`4: layout.subvolumes are btrfs subvolumes but layout.root_fs = "ext4"`}},
		{"btrfs without @", head + "[layout]\nsubvolumes = [\"@nix\", \"@nix\", \"home\"]\n", []string{
			`3: layout.subvolumes must include "@"`, `3: subvolume "@nix" is listed twice`, `3: subvolume "home": names are "@" followed by`}},
		{"labels", head + "[layout]\nboot_label = \"MY BOOT DISK\"\nswap_label = \"\"\nroot_label = \"rootfs\"\n", []string{
			`3: layout.boot_label = "MY BOOT DISK": a FAT label is 1 to 11 letters`, `4: layout.swap_label is empty`, `5: layout.root_label = "rootfs" is the SD card's own label`}},
		{"same labels", head + "[layout]\nswap_label = \"Boot\"\n", []string{`3: layout.swap_label = "Boot" is the same as layout.boot_label`}},
		{"disk by name", head + "[target]\ndisk = \"/dev/sda\"\n", []string{`3: target.disk = "/dev/sda": use "auto" (exactly one USB disk) or a stable /dev/disk/by-id/ path, since names like /dev/sda change between boots`}},
		{"disk and serial", head + "[target]\ndisk = \"auto\"\nserial = \"X1\"\n", []string{`4: target.disk and target.serial are both set; keep one`}},
		{"no disk", head + "[target]\ndisk = \"\"\n", []string{`2: no target disk: set target.disk = "auto"`}},
		{"serial with space", head + "[target]\nserial = \"A B\"\n", []string{`3: target.serial = "A B" has spaces`}},
		{"by-id dir only", head + "[target]\ndisk = \"/dev/disk/by-id/\"\n", []string{`3: target.disk = "/dev/disk/by-id/" is not a disk in /dev/disk/by-id/`}},
		{"release", head + "[nixos]\nrelease = \"26.04\"\n", []string{`3: nixos.release = "26.04": use a NixOS release like "26.05"`}},
		{"rev and hash", head + "[nixos]\nnixpkgs_rev = \"main\"\nnixpkgs_sha256 = \"abc\"\n", []string{
			`3: nixos.nixpkgs_rev = "main": use a full nixpkgs commit, 40 lowercase hex digits`, `4: nixos.nixpkgs_sha256 = "abc": use the hash`}},
		{"rev without hash", head + "[nixos]\nnixpkgs_rev = \"0123456789abcdef0123456789abcdef01234567\"\n", []string{
			`3: nixos.nixpkgs_rev is set without nixos.nixpkgs_sha256, so the download cannot be verified; add the hash ` + "`nix-prefetch-url --unpack https://github.com/NixOS/nixpkgs/archive/0123456789abcdef0123456789abcdef01234567.tar.gz`"}},
		{"nixpkgs url", head + "[nixos]\nnixpkgs_url = \"github.com/NixOS/nixpkgs\"\n", []string{`3: nixos.nixpkgs_url = "github.com/NixOS/nixpkgs" is not a tarball URL`}},
		{"nixpkgs url with quote", head + "[nixos]\nnixpkgs_url = 'https://x.org/a\".tar.gz'\n", []string{`3: nixos.nixpkgs_url = "https://x.org/a\".tar.gz" is not a tarball URL`}},
		{"nixpkgs url with password", head + "[nixos]\nnixpkgs_url = \"https://me:secret@x.org/n.tar.gz\"\n", []string{`3: nixos.nixpkgs_url carries a user name or password`}},
		{"flake without name", head + "[nixos]\nflake = \"github:you/cfg\"\n", []string{`3: nixos.flake = "github:you/cfg" has no #name; write "URI#name"`}},
		{"flake local path", head + "[nixos]\nflake = \"/home/me/cfg#pi\"\n", []string{`3: nixos.flake = "/home/me/cfg#pi" is a local path, which the Pi cannot see`}},
		{"flake not a URL", head + "[nixos]\nflake = \"my cfg#pi\"\n", []string{`3: nixos.flake = "my cfg#pi": the part before # is not a flake URL`}},
		{"flake bad name", head + "[nixos]\nflake = \"github:you/cfg#pi.x\"\n", []string{`3: nixos.flake = "github:you/cfg#pi.x": "pi.x" is not a nixosConfigurations name`}},
		{"flake and extra module", head + "[nixos]\nflake = \"github:you/cfg#pi\"\nextra_module = \"{ }\"\n", []string{`4: nixos.extra_module is set together with nixos.flake`}},
		{"no substituters", head + "[nixos]\nsubstituters = []\n", []string{`3: nixos.substituters is empty: without a binary cache the Pi would compile all of NixOS itself`}},
		{"bad substituter and key", head + "[nixos]\nsubstituters = [\"cache.nixos.org\"]\ntrusted_public_keys = [\"cache.nixos.org-1:abc\", \"6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\"]\n", []string{
			`3: substituter "cache.nixos.org" is not a binary cache URL`, `4: trusted public key "cache.nixos.org-1:abc" is not NAME:KEY`, `4: trusted public key "6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" is not NAME:KEY`}},
		{"nix installer", head + "[nix]\ninstaller = \"apt\"\n", []string{`3: nix.installer = "apt": use "auto"`}},
		{"hostname", head + "[system]\nhostname = \"my.pi\"\ntimezone = \"Europe/../etc\"\nlocale = \"English\"\nkeymap = \"-x\"\n", []string{
			`3: system.hostname = "my.pi": a host name is 1 to 63 letters`, `4: system.timezone = "Europe/../etc"`, `5: system.locale = "English"`, `6: system.keymap = "-x"`}},
		{"plaintext password", user("password_hash = \"hunter22\"\n"), []string{
			`4: password_hash of user "pi" is not a crypt hash (it looks like a plain password, which must never be in this file); put the output of ` + "`mkpasswd -m yescrypt`"}},
		{"truncated hash", user("password_hash = \"" + sha512Hash[:40] + "\"\n"), []string{`4: password_hash of user "pi" is cut short or damaged`}},
		{"md5 hash", user("password_hash = \"$1$saltsalt$qjXMvbEw8oaL.CzflDugX/\"\n"), []string{`4: password_hash of user "pi" uses a weak hash scheme`}},
		{"unknown hash", user("password_hash = \"$9$abc$def\"\n"), []string{`4: password_hash of user "pi" is not a crypt hash of a known kind`}},
		{"ssh keys", user("ssh_keys = [\n  \"" + ed25519Key + "\",\n  \"ssh-ed25519 AAAAB3NzaC1yc2E=\",\n  \"ssh-dss AAAA\",\n  \"-----BEGIN OPENSSH PRIVATE KEY-----\",\n  \"AAAAC3NzaC1lZDI1NTE5\",\n]\n"), []string{
			`4: ssh_keys entry 2 of user "pi" has a damaged key (its data is not a ssh-ed25519 key)`,
			`4: ssh_keys entry 3 of user "pi" has unknown key type "ssh-dss"`,
			`4: ssh_keys entry 4 of user "pi" is a PRIVATE key: never put it in this file`,
			`4: ssh_keys entry 5 of user "pi" is not an ssh public key`}},
		{"user problems", head + "[[users]]\nname = \"Pi\"\n\n[[users]]\npassword_hash = \"" + bcryptHash + "\"\n[[users]]\nname = \"root\"\nssh_keys = [\"" + ed25519Key + "\"]\n[[users]]\nname = \"Pi\"\n", []string{
			`2: user "Pi" has neither password_hash nor ssh_keys`, `3: user name "Pi": use 1 to 32 lowercase letters`,
			`5: a [[users]] entry has no name`, `8: user "root" cannot be declared here`,
			`10: user "Pi" has neither`, `11: user name "Pi"`}},
		{"wlan", head + "[wlan]\nssid = \"\"\npsk = \"short\"\ncountry = \"de\"\n", []string{
			`3: wlan.ssid is 0 bytes; a Wi-Fi network name is 1 to 32 bytes`, `4: wlan.psk is 5 characters; a WPA passphrase is 8 to 63 characters`, `5: wlan.country = "de": the Wi-Fi regulatory country is two capital letters`}},
		{"wlan long ssid, bad hex psk", head + "[wlan]\nssid = \"" + strings.Repeat("x", 33) + "\"\npsk = \"" + strings.Repeat("g", 64) + "\"\ncountry = \"GB\"\n", []string{
			`3: wlan.ssid is 33 bytes`, `4: wlan.psk is 64 characters but not hex`}},
		{"wlan non-ascii psk", head + "[wlan]\nssid = \"x\"\npsk = \"pässwörter\"\ncountry = \"GB\"\n", []string{`4: wlan.psk has characters outside printable ASCII`}},
		{"boot order not hex", head + "[boot]\nboot_order = \"f41\"\n", []string{`3: boot.boot_order = "f41": write hex like "0xf41"`}},
		{"boot order bad nibble", head + "[boot]\nboot_order = \"0xf91\"\n", []string{`3: boot.boot_order = "0xf91": digit 9 is not a Pi 4 boot mode`}},
		{"boot order no usb", head + "[boot]\nboot_order = \"0xf21\"\n", []string{`3: boot.boot_order = "0xf21": BOOT_ORDER 0xf21 has no USB mode (4), so the Pi would never boot the SSD`}},
		// The bootloader tries nothing after a stop (e) or restart (f).
		{"boot order stop before usb", head + "[boot]\nboot_order = \"0x4e1\"\n", []string{`3: boot.boot_order = "0x4e1": BOOT_ORDER 0x4e1 never reaches USB: read from the right, mode 2 is e (stop)`}},
		{"boot order stop first", head + "[boot]\nboot_order = \"0x41e\"\n", []string{`3: boot.boot_order = "0x41e": BOOT_ORDER 0x41e never reaches USB: read from the right, mode 1 is e (stop)`}},
		{"boot order restart before usb", head + "[boot]\nboot_order = \"0x4f1\"\n", []string{`3: boot.boot_order = "0x4f1": BOOT_ORDER 0x4f1 never reaches USB: read from the right, mode 2 is f (restart)`}},
		{"boot order too long", head + "[boot]\nboot_order = \"0x1111111f4\"\n", []string{`3: boot.boot_order = "0x1111111f4": write hex like "0xf41" (at most 8 digits`}},
		{"status listen", head + "[status]\nenable = true\nlisten = \"80\"\n", []string{`4: status.listen = "80": use HOST:PORT or :PORT`}},
		{"not utf-8", head + "[system]\nhostname = \"\xff\"\n", []string{`0: the file is not UTF-8 text`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse("bad.toml", []byte(tt.in))
			if err == nil {
				t.Fatalf("Parse accepted:\n%s\nas %+v", tt.in, cfg)
			}
			if cfg != nil {
				t.Error("Parse returned a config with an error")
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, not Errors: %v", err, err)
			}
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(tt.want), err)
			}
			for i, e := range errs {
				line, msg, _ := strings.Cut(tt.want[i], ": ")
				prefix := "bad.toml:" + line + ": "
				if line == "0" {
					prefix = "bad.toml: "
				}
				if got := e.Error(); !strings.HasPrefix(got, prefix) || !strings.Contains(got, msg) {
					t.Errorf("error %d:\n got %s\nwant %s...%s", i, got, prefix, msg)
				}
			}
		})
	}
}

func TestValidateWithoutFile(t *testing.T) {
	t.Parallel()
	cfg := Default()
	cfg.System.Hostname = "-bad"
	err := cfg.Validate()
	want := `system.hostname = "-bad": a host name is 1 to 63 letters`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Validate = %v, want %s...", err, want)
	}
}

func TestGoodValues(t *testing.T) {
	t.Parallel()
	good := []string{
		"[target]\nserial = \"S5ABC123\"\nmin_size = \"1TiB\"\n",
		"[layout]\nswap_size = \"0\"\nroot_fs = \"ext4\"\n",
		"[layout]\nswap_size = \"1536MiB\"\nboot_size = \"64MiB\"\n",
		"[[users]]\nname = \"a\"\npassword_hash = \"" + sha256Hash + "\"\n",
		"[[users]]\nname = \"_svc-1\"\npassword_hash = \"" + bcryptHash + "\"\n",
		"[[users]]\nname = \"b\"\nssh_keys = [\"" + ecdsaKey + "\"]\n",
		"[wlan]\nssid = \"" + strings.Repeat("x", 32) + "\"\npsk = \"" + strings.Repeat("a0", 32) + "\"\ncountry = \"US\"\n",
		"[wlan]\nssid = \"open\"\ncountry = \"FR\"\n",
		"[nixos]\nnixpkgs_rev = \"0123456789abcdef0123456789abcdef01234567\"\nnixpkgs_sha256 = \"sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"\n",
		"[nixos]\nnixpkgs_rev = \"0123456789abcdef0123456789abcdef01234567\"\nnixpkgs_sha256 = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"\n",
		"[nixos]\nnixpkgs_url = \"http://10.0.2.2:8080/nixpkgs-standin.tar.gz\"\n",
		"[boot]\nboot_order = \"0xf14\"\n",
		"[boot]\nboot_order = \"0xF461\"\n",
		"[system]\nhostname = \"Pi-4\"\ntimezone = \"America/Argentina/Buenos_Aires\"\nlocale = \"C.UTF-8\"\n",
	}
	for _, g := range good {
		if _, err := Parse("good.toml", []byte("schema = 1\n"+g)); err != nil {
			t.Errorf("rejected:\n%s\n%v", g, err)
		}
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	t.Parallel()
	for name, src := range map[string][]byte{"full": []byte(full), "example": Example(),
		"ext4-serial": []byte("schema = 1\n[target]\nserial = \"S5\"\n[layout]\nroot_fs = \"ext4\"\nswap_size = \"0\"\n")} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse(name, src)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := Encode(cfg)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse("encoded", enc)
			if err != nil {
				t.Fatalf("Parse(Encode(cfg)): %v\n%s", err, enc)
			}
			if !reflect.DeepEqual(back, cfg) {
				t.Fatalf("round trip differs:\n%#v\n%#v", back, cfg)
			}
			again, err := Encode(back)
			if err != nil || !bytes.Equal(again, enc) {
				t.Fatalf("Encode is not canonical:\n%s\n---\n%s", enc, again)
			}
		})
	}
}

func TestEncodeKeepsSecrets(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("full.toml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	enc, err := Encode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{sha512Hash, yescryptHash, wifiPSK} {
		if !bytes.Contains(enc, []byte(s)) {
			t.Errorf("Encode dropped a secret the device needs: %q", s)
		}
	}
}

func TestSecretsNeverShown(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("full.toml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	var viaEncoder bytes.Buffer
	if err := toml.NewEncoder(&viaEncoder).Encode(cfg); err != nil {
		t.Fatal(err)
	}
	jsonOut, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	redactedTOML, err := cfg.MarshalTOML()
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"String":               cfg.String(),
		"%v":                   fmt.Sprintf("%v", cfg),
		"%+v":                  fmt.Sprintf("%+v", *cfg),
		"%#v":                  fmt.Sprintf("%#v", *cfg),
		"%v users":             fmt.Sprintf("%v", cfg.Users),
		"%+v wlan":             fmt.Sprintf("%+v", *cfg.WLAN),
		"%s psk":               fmt.Sprintf("%s %q %x", cfg.WLAN.PSK, cfg.WLAN.PSK, cfg.WLAN.PSK),
		"JSON":                 string(jsonOut),
		"MarshalTOML":          string(redactedTOML),
		"toml encoder":         viaEncoder.String(),
		"Redacted %#v":         fmt.Sprintf("%#v %#v %#v", *cfg.Redacted(), cfg.Redacted().Users, *cfg.Redacted().WLAN),
		"Redacted Reveal":      cfg.Redacted().Users[0].PasswordHash.Reveal() + cfg.Redacted().WLAN.PSK.Reveal(),
		"Errors of bad config": errorsOf(t, strings.Replace(full, `country = "DE"`, `country = "Germany"`, 1)),
	}
	for what, out := range outputs {
		for _, secret := range []string{sha512Hash, yescryptHash, wifiPSK, "5mR43xQaRO8", "horse", fmt.Sprintf("%x", wifiPSK)} {
			if strings.Contains(out, secret) {
				t.Errorf("%s shows a secret (%q):\n%s", what, secret, out)
			}
		}
	}
	if !strings.Contains(outputs["MarshalTOML"], `password_hash = "(redacted)"`) || !strings.Contains(outputs["JSON"], `"PSK":"(redacted)"`) {
		t.Errorf("redacted output does not say a secret is set:\n%s\n%s", outputs["MarshalTOML"], outputs["JSON"])
	}
	// Redacting is a copy: the config itself keeps its secrets.
	if cfg.Users[0].PasswordHash.Reveal() != sha512Hash || cfg.WLAN.PSK.Reveal() != wifiPSK {
		t.Error("Redacted changed the original")
	}
	// A plaintext password by mistake is refused without echoing it.
	msg := errorsOf(t, strings.Replace(full, sha512Hash, "MySecretPassword1", 1))
	if strings.Contains(msg, "MySecretPassword1") || !strings.Contains(msg, "plain password") {
		t.Errorf("plaintext password error: %s", msg)
	}
	shortPSK := errorsOf(t, strings.Replace(full, wifiPSK, "tiny", 1))
	if strings.Contains(shortPSK, "tiny") {
		t.Errorf("psk error shows the psk: %s", shortPSK)
	}
}

func errorsOf(t *testing.T, src string) string {
	t.Helper()
	_, err := Parse("x.toml", []byte(src))
	if err == nil {
		t.Fatal("expected an error")
	}
	return err.Error()
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "nixpi.toml")
	if err := os.WriteFile(path, []byte("schema = 1\n[layout]\ntable = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":3: layout.table") {
		t.Errorf("Load error = %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file = %v, want ErrNotExist", err)
	}
}

func TestLocateKeys(t *testing.T) {
	t.Parallel()
	doc := `# comment [not a table]
schema = 1
"quoted key" = 'x'
multi = """
[fake]
fake = 1
"""
arr = [
  "a = b",
  { c = 1 },
]
[ target ] # header comment
disk = "auto" # trailing [x]
[[users]]
name = "a"
[[users]]
name = "b"
ssh_keys = ['k1',
  'k2']
[layout]
table.x = 1
`
	kl := locateKeys([]byte(doc))
	for key, want := range map[string]int{
		"schema": 2, "quoted key": 3, "multi": 4, "arr": 8, "target": 12, "target.disk": 13,
		"users[0]": 14, "users[0].name": 15, "users[1].name": 17, "users[1].ssh_keys": 18,
		"layout.table.x": 21, "users[1].password_hash": 16, "fake": 0, "fake.fake": 0, "c": 0,
	} {
		if got := kl.find(key); got != want {
			t.Errorf("line of %q = %d, want %d", key, got, want)
		}
	}
}

// FuzzParse: Parse never panics, and whatever it accepts survives
// Encode/Parse unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add(Example())
	f.Add([]byte("schema = 1\n[layout]\nroot_fs = \"ext4\"\n[target]\nserial = \"x\"\n"))
	f.Add([]byte("schema = 1\n[[users]]\nname = \"a\"\nssh_keys = ['" + ed25519Key + "']\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := Parse("fuzz.toml", src)
		if err != nil {
			if cfg != nil {
				t.Fatal("config and error")
			}
			return
		}
		enc, err := Encode(cfg)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		back, err := Parse("encoded", enc)
		if err != nil {
			t.Fatalf("Parse(Encode(cfg)): %v\n%s", err, enc)
		}
		if !reflect.DeepEqual(back, cfg) {
			t.Fatalf("round trip differs:\n%#v\n%#v", back, cfg)
		}
	})
}

func TestAtLinesAndValueStart(t *testing.T) {
	t.Parallel()
	data := []byte("schema = 1\n[nixos]\nrelease = \"26.05\"\nextra_module = '''\n{ }\n'''\n[wlan]\nssid = \"x\"\n")
	errs := AtLines("f.toml", data, Errors{{Key: "wlan.ssid", Msg: "b"}, {Key: "nixos.release", Msg: "a"}, {Key: "nixos.flake", Msg: "c"}})
	if got := errs.Error(); got != "f.toml:2: c\nf.toml:3: a\nf.toml:8: b" {
		t.Errorf("AtLines:\n%s", got)
	}
	for key, want := range map[string]int{"nixos.extra_module": 5, "nixos.release": 3, "nixos.flake": 0} {
		if got, _ := locateKeys(data).valueStart(data, key); got != want {
			t.Errorf("valueStart(%s) = %d, want %d", key, got, want)
		}
	}
	one := []byte("schema = 1\n[nixos]\nextra_module = \"{ }\"\n")
	if got, multiLine := locateKeys(one).valueStart(one, "nixos.extra_module"); got != 3 || multiLine {
		t.Errorf("one-line extra_module starts on line %d (multi-line %v), want 3, false", got, multiLine)
	}
	// A problem on the module's second line is on the file's, when the
	// module is written over lines; else on the key's.
	errs = AtLines("f.toml", data, Errors{{Key: "nixos.extra_module", ValueLine: 2, Msg: "m"}})
	if got := errs.Error(); got != "f.toml:6: m" {
		t.Errorf("multi-line module, its line 2: %s", got)
	}
	errs = AtLines("f.toml", one, Errors{{Key: "nixos.extra_module", ValueLine: 2, Msg: "m"}})
	if got := errs.Error(); got != "f.toml:3: m" {
		t.Errorf("one-line module, its line 2: %s", got)
	}
}

func TestNixpkgsTarball(t *testing.T) {
	t.Parallel()
	rev := "21a67dc470149f337cecafbe965d8d252a390518"
	if got := (NixOS{}).NixpkgsTarball(rev); got != "https://github.com/NixOS/nixpkgs/archive/"+rev+".tar.gz" {
		t.Errorf("default = %q", got)
	}
	if got := (NixOS{NixpkgsURL: "http://10.0.2.2/n.tar.gz"}).NixpkgsTarball(rev); got != "http://10.0.2.2/n.tar.gz" {
		t.Errorf("nixpkgs_url = %q", got)
	}
}
