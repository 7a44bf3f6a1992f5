package steps

// The configure step against a temp root (the SSD's root mounted at
// Root/mnt, as mountinfo says) and a recording runner that must see no
// command at all: configure only writes files.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/nixos"
	"github.com/nixpi/nixpi/firstboot/system"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

const (
	configureHash = "$6$saltsalt$5mR43xQaRO8UqNJiGE2zcmprBTlO9lTdMHosy2oRT70EPekI6VsnFfjuo.EkgAwlkxAXJglqAax0P4w5f3EVa."
	configureKey  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINs/P2AHuutJrx8BjqQ9lRPc2W6FzD+noshMtddXmn3s pi@laptop"
	configurePSK  = "correct horse battery"
)

type configureUnit struct {
	env  *engine.Env
	run  *systemtest.Runner
	logs []string
}

func newConfigureUnit(t *testing.T, toml string, mounted bool) *configureUnit {
	t.Helper()
	cfg, err := config.Parse("nixpi.toml", []byte("schema = 1\n"+toml))
	if err != nil {
		t.Fatal(err)
	}
	u := &configureUnit{run: &systemtest.Runner{}}
	u.env = &engine.Env{
		Config: cfg, Root: t.TempDir(), BootDir: "/boot/firmware", Run: u.run, Tools: system.DefaultTools(),
		State:    &journal.State{RAMBytes: 1 << 30, Target: &journal.Disk{Dev: "/dev/sda", Serial: "S4EVNF0M123456", Size: 500107862016, IDSeed: "00112233445566778899aabbccddeeff"}},
		Progress: func(f string, a ...any) { u.logs = append(u.logs, fmt.Sprintf(f, a...)) },
	}
	mountinfo := "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw\n"
	if mounted {
		mountinfo += fmt.Sprintf("40 22 8:3 /@ %s rw,relatime shared:40 - btrfs /dev/sda3 rw,subvol=/@\n", u.env.Path(installRoot))
		if err := os.MkdirAll(u.env.Path(installRoot), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	u.write(t, "/proc/self/mountinfo", mountinfo, 0o644)
	return u
}

func (u *configureUnit) write(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	full := u.env.Path(path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

func (u *configureUnit) read(t *testing.T, path string) (string, os.FileMode) {
	t.Helper()
	full := u.env.Path(filepath.Join(installRoot, path))
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(full)
	return string(data), fi.Mode().Perm()
}

func (u *configureUnit) probe(t *testing.T) (bool, string) {
	t.Helper()
	done, why, err := NewConfigure().Probe(context.Background(), u.env)
	if err != nil {
		t.Fatal(err)
	}
	return done, why
}

func (u *configureUnit) runStep(t *testing.T) {
	t.Helper()
	if err := NewConfigure().Run(context.Background(), u.env); err != nil {
		t.Fatalf("Run: %v\n%s", err, strings.Join(u.logs, "\n"))
	}
}

// want is what the generator makes for the unit's config and memory.
func (u *configureUnit) want(t *testing.T) *nixos.Files {
	t.Helper()
	d, err := configureDisk(u.env, u.env.Config.Layout)
	if err != nil {
		t.Fatal(err)
	}
	f, err := nixos.Generate(u.env.Config, d, nixos.Machine{RAMBytes: u.env.State.RAMBytes})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The file names the recorded disk's partitions by the PARTUUIDs the disk
// steps derive for it, never by label or placeholder; without a recorded
// disk there is nothing to name.
func TestConfigureNamesThePartitionsByPARTUUID(t *testing.T) {
	t.Parallel()
	u := newConfigureUnit(t, configureTOML, true)
	u.runStep(t)
	hw, _ := u.read(t, nixos.HardwareFile)
	rec := u.env.State.Target
	ids, err := disk.PartUUIDs(u.env.Config.Layout, u.env.State.RAMBytes, disk.Identity{Serial: rec.Serial, Size: rec.Size, Seed: rec.IDSeed})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`device = "/dev/disk/by-partuuid/` + ids[disk.RoleRoot] + `";`,
		`fileSystems."/boot" = {` + "\n" + `    device = "/dev/disk/by-partuuid/` + ids[disk.RoleBoot] + `";`,
		`swapDevices = [ { device = "/dev/disk/by-partuuid/` + ids[disk.RoleSwap] + `"; } ];`,
	} {
		if !strings.Contains(hw, want) {
			t.Errorf("hardware-configuration.nix lacks %q:\n%s", want, hw)
		}
	}
	for _, not := range []string{"by-label", "PARTUUID stand", "BOOT-PARTUUID"} {
		if strings.Contains(hw, not) {
			t.Errorf("hardware-configuration.nix has %q:\n%s", not, hw)
		}
	}

	u = newConfigureUnit(t, configureTOML, true)
	u.env.State.Target = nil
	err = NewConfigure().Run(context.Background(), u.env)
	if err == nil || !strings.Contains(err.Error(), "no target disk is recorded") || !strings.Contains(engine.HintOf(err), "run the disk steps first") {
		t.Errorf("without a recorded disk: %v (hint %q)", err, engine.HintOf(err))
	}
}

const configureTOML = `[[users]]
name = "pi"
password_hash = "` + configureHash + `"
ssh_keys = ["` + configureKey + `"]

[wlan]
ssid = "home"
psk = "` + configurePSK + `"
country = "DE"
`

func TestConfigureWritesAndSkips(t *testing.T) {
	t.Parallel()
	u := newConfigureUnit(t, configureTOML, true)
	if done, why := u.probe(t); done || why != "/etc/nixos/configuration.nix is not written yet" {
		t.Fatalf("probe on an empty SSD: %v %q", done, why)
	}
	u.runStep(t)
	want := u.want(t)
	for _, f := range append(want.Configs, want.Secrets...) {
		got, mode := u.read(t, f.Path)
		if got != string(f.Data) || mode != os.FileMode(f.Mode) {
			t.Errorf("%s: mode %04o, content as generated: %v", f.Path, mode, got == string(f.Data))
		}
	}
	if c, _ := u.read(t, nixos.ConfigurationFile); !strings.Contains(c, "max-jobs = 1;") {
		t.Error("a 1 GiB Pi did not get max-jobs = 1")
	}
	if pw, _ := u.read(t, "/etc/nixos/secrets/pi.hashedPassword"); pw != configureHash+"\n" {
		t.Errorf("password file: %q", pw)
	}
	if wifi, _ := u.read(t, nixos.WirelessFile); wifi != "psk_nixpi="+configurePSK+"\n" {
		t.Errorf("wireless secrets: %q", wifi)
	}
	for path, want := range map[string]os.FileMode{nixos.SecretsDir: 0o700, filepath.Dir(configureStateFile): 0o700, configureStateFile: 0o600} {
		fi, err := os.Stat(u.env.Path(filepath.Join(installRoot, path)))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, mode %v, want %04o", path, err, fi.Mode().Perm(), want)
		}
	}
	logs := strings.Join(u.logs, "\n")
	for _, secret := range []string{configurePSK, configureHash} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log shows a secret:\n%s", logs)
		}
	}
	if !strings.Contains(logs, "wrote "+nixos.WirelessFile+" (root-only, 0600)") {
		t.Errorf("log:\n%s", logs)
	}

	if done, why := u.probe(t); !done || why != "/etc/nixos already written" {
		t.Errorf("probe after Run: %v %q", done, why)
	}
	u.logs = nil
	u.runStep(t) // a redo changes nothing
	if strings.Count(strings.Join(u.logs, "\n"), "already written, skipping") != 4 {
		t.Errorf("redo log:\n%s", strings.Join(u.logs, "\n"))
	}
	if calls := u.run.Calls(); len(calls) != 0 {
		t.Errorf("configure ran commands: %q", calls)
	}
}

// A file edited on the SSD stays; a file nixpi wrote follows the config.
func TestConfigureKeepsEditedFiles(t *testing.T) {
	t.Parallel()
	u := newConfigureUnit(t, configureTOML, true)
	u.runStep(t)
	edited := "# mine now\n{ ... }: { }\n"
	u.write(t, filepath.Join(installRoot, nixos.ConfigurationFile), edited, 0o644)
	u.env.Config.System.Hostname = "renamed"
	u.env.Config.Layout.RootLabel = "newroot"
	done, why := u.probe(t)
	if done {
		t.Fatalf("probe with a changed layout: done (%q)", why)
	}
	u.runStep(t)
	if c, _ := u.read(t, nixos.ConfigurationFile); c != edited {
		t.Errorf("the edited configuration.nix was overwritten:\n%s", c)
	}
	if hw, _ := u.read(t, nixos.HardwareFile); !strings.Contains(hw, `3 btrfs "newroot".`) {
		t.Errorf("hardware-configuration.nix (nixpi's own) did not follow the config:\n%s", hw)
	}
	if !strings.Contains(strings.Join(u.logs, "\n"), "/etc/nixos/configuration.nix was edited on the SSD since nixpi wrote it: kept as it is") {
		t.Errorf("log:\n%s", strings.Join(u.logs, "\n"))
	}
	if done, why := u.probe(t); !done || why != "/etc/nixos already written (1 file(s) edited on the SSD, kept)" {
		t.Errorf("probe: %v %q", done, why)
	}

	// A file that was there before nixpi ever wrote one is the user's too.
	v := newConfigureUnit(t, "", true)
	v.write(t, filepath.Join(installRoot, nixos.HardwareFile), "# from an earlier install\n", 0o644)
	v.runStep(t)
	if hw, _ := v.read(t, nixos.HardwareFile); hw != "# from an earlier install\n" {
		t.Errorf("a foreign hardware-configuration.nix was overwritten")
	}
}

// A power cut after the state is saved and before the file is renamed into
// place: the redo writes the file.
func TestConfigureResumesAfterPowerCut(t *testing.T) {
	t.Parallel()
	u := newConfigureUnit(t, configureTOML, true)
	type crash struct{}
	u.env.CrashPoint = func(point string) {
		if point == "configure:hardware-configuration.nix" {
			panic(crash{})
		}
	}
	func() {
		defer func() {
			if recover() != (crash{}) {
				t.Fatal("no crash")
			}
		}()
		_ = NewConfigure().Run(context.Background(), u.env)
	}()
	if _, err := os.Stat(u.env.Path(filepath.Join(installRoot, nixos.HardwareFile))); err == nil {
		t.Fatal("hardware-configuration.nix written before the crash point")
	}
	u.env.CrashPoint = nil
	u.env.Redo = true
	if done, _ := u.probe(t); done {
		t.Fatal("probe after the power cut says done")
	}
	u.runStep(t)
	want := u.want(t)
	for _, f := range append(want.Configs, want.Secrets...) {
		if got, _ := u.read(t, f.Path); got != string(f.Data) {
			t.Errorf("%s after the resume differs from the generated file", f.Path)
		}
	}
}

func TestConfigureFixesSecretModeAndRefusesUnmounted(t *testing.T) {
	t.Parallel()
	u := newConfigureUnit(t, configureTOML, true)
	u.runStep(t)
	if err := os.Chmod(u.env.Path(filepath.Join(installRoot, nixos.WirelessFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	if done, _ := u.probe(t); done {
		t.Error("probe ignores a world-readable secret")
	}
	u.runStep(t)
	if _, mode := u.read(t, nixos.WirelessFile); mode != 0o600 {
		t.Errorf("wireless.conf mode %04o after Run", mode)
	}

	n := newConfigureUnit(t, configureTOML, false)
	if done, why := n.probe(t); done || !strings.Contains(why, "nothing is mounted at /mnt") {
		t.Errorf("probe without /mnt: %v %q", done, why)
	}
	err := NewConfigure().Run(context.Background(), n.env)
	if err == nil || !strings.Contains(err.Error(), "nothing is mounted at /mnt, so /etc/nixos would land on the SD card") {
		t.Errorf("Run without /mnt: %v", err)
	}
	if _, err := os.Stat(n.env.Path("/mnt/etc")); err == nil {
		t.Error("Run without /mnt wrote into the card's /mnt")
	}
}

func TestConfigureFlake(t *testing.T) {
	t.Parallel()
	u := newConfigureUnit(t, "[nixos]\nflake = \"github:me/cfg#pi\"\n"+configureTOML, true)
	u.runStep(t)
	if _, err := os.Stat(u.env.Path(filepath.Join(installRoot, nixos.ConfigurationFile))); err == nil {
		t.Error("configuration.nix written although nixos.flake is set")
	}
	if hw, _ := u.read(t, nixos.HardwareFile); !strings.Contains(hw, "import it from\n# nixosConfigurations.pi in github:me/cfg") {
		t.Errorf("hardware-configuration.nix:\n%s", hw)
	}
	if pw, _ := u.read(t, "/etc/nixos/secrets/pi.hashedPassword"); pw != configureHash+"\n" {
		t.Error("the password hash is not there for the flake to use")
	}
	if !strings.Contains(strings.Join(u.logs, "\n"), `nixos.flake = "github:me/cfg#pi": wrote only /etc/nixos/hardware-configuration.nix`) {
		t.Errorf("log:\n%s", strings.Join(u.logs, "\n"))
	}
}

// A link anywhere on the way into /mnt/etc/nixos (an SSD from an earlier
// install, or one a person prepared) is refused, not followed: configure
// writes nothing through it, nor anything at all, and names the link.
func TestConfigureRefusesSymlinksUnderMnt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, link string
		relative   bool // a relative target, ../ out of the SSD
	}{
		{"etc/nixos links to the card's FAT", nixos.ConfigDir, false},
		{"etc/nixos/secrets links outside", nixos.SecretsDir, false},
		{"etc/nixos/secrets links outside by ../", nixos.SecretsDir, true},
		{"the state file's directory links outside", filepath.Dir(configureStateFile), false},
		{"etc links outside", "/etc", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u := newConfigureUnit(t, configureTOML, true)
			outside := u.env.Path("/boot/firmware")
			if err := os.MkdirAll(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.link != nixos.ConfigDir && tc.link != "/etc" {
				if err := os.MkdirAll(u.env.Path(filepath.Join(installRoot, filepath.Dir(tc.link))), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			link := u.env.Path(filepath.Join(installRoot, tc.link))
			target := outside
			if tc.relative {
				target, _ = filepath.Rel(filepath.Dir(link), outside)
			}
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("%q on the SSD is a symbolic link to %q: nixpi follows no link under /mnt", filepath.Join(installRoot, tc.link), target)
			_, _, perr := NewConfigure().Probe(context.Background(), u.env)
			err := NewConfigure().Run(context.Background(), u.env)
			for _, e := range []error{perr, err} {
				if e == nil || !strings.Contains(e.Error(), want) {
					t.Errorf("error = %v\nwant it to contain %s", e, want)
				}
				if h := engine.HintOf(e); !strings.Contains(h, "rm "+filepath.Join(installRoot, tc.link)) {
					t.Errorf("hint = %q", h)
				}
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("configure wrote outside the SSD: %v", entries)
			}
			if _, err := os.Lstat(u.env.Path(filepath.Join(installRoot, nixos.ConfigurationFile))); err == nil && tc.link != nixos.ConfigDir && tc.link != "/etc" {
				t.Error("configuration.nix was written before the refusal")
			}
		})
	}
}
