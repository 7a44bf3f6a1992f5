// Package nixos renders the NixOS configuration that the device writes onto
// the SSD (/etc/nixos/configuration.nix and hardware-configuration.nix) and
// `nixpi config nixos` shows on the workstation, from the install config and
// a description of the disk; and it holds the nixpkgs pins (pins.go). It is
// pure: no files, no commands; callers write what it returns.
package nixos

import (
	"bytes"
	"fmt"
	"path"
	"strings"
	"text/template"

	"github.com/nixpi/nixpi/assets"
	"github.com/nixpi/nixpi/firstboot/config"
)

// Paths on the installed system (under the install root on the device).
const (
	ConfigDir         = "/etc/nixos"
	ConfigurationFile = ConfigDir + "/configuration.nix"
	HardwareFile      = ConfigDir + "/hardware-configuration.nix"
	// SecretsDir holds the password hashes, root-only (0700). The
	// configuration names these files and WirelessFile by string, so they
	// never enter the world-readable Nix store.
	SecretsDir = ConfigDir + "/secrets"
	// WirelessFile holds the Wi-Fi key, outside SecretsDir: since 26.05
	// wpa_supplicant runs as its own user, which can open only a file whose
	// directories it may pass and that its group may read. nixpi writes it
	// root-only (the group does not exist before NixOS's first boot), and
	// the configuration's tmpfiles rule (WirelessTmpfilesRule) makes it
	// root:wpa_supplicant 0640 at every boot.
	WirelessFile = ConfigDir + "/wpa_supplicant-secrets.conf"
	// PinsFile records what the system was built from (nixpkgs rev,
	// sha256, URL, store path; the Nix version and installer), so every
	// install can be reproduced after the fact. The nixpkgs step writes it.
	PinsFile = ConfigDir + "/nixpi-pins.json"
	// wirelessPSKVar is the secret's name inside WirelessFile.
	wirelessPSKVar = "psk_nixpi"
)

// SmallPiRAM is the memory at or under which Nix builds one job on one core
// and the NixOS manual is off by default (documentation.nixos.enable, whose
// options reference evaluates every option). The preflight step measures
// the Pi's memory (engine state RAMBytes), as swap_size = "ram" uses it.
const SmallPiRAM = 2 * config.GiB

// Disk is what the disk steps make, as far as the configuration names it.
// Filesystems are named by their partitions' PARTUUIDs, which the disk
// steps derive on the Pi: labels such as "boot" and "root" are generic (an
// older Raspberry Pi OS card's FAT is "boot" too) and could name a partition
// of the SD card or of another disk. On the workstation the ids are not
// known yet: a Disk without them names placeholders (PartUUIDPlaceholders).
type Disk struct {
	Table      string // config.TableGPT or config.TableMBR
	BootLabel  string
	BootSize   config.Size
	SwapLabel  string // "" when there is no swap partition
	SwapSize   string // for people: "4GiB", "the size of the Pi's memory"
	RootLabel  string
	RootFS     string         // config.FSBtrfs or config.FSExt4
	Subvolumes []config.Mount // btrfs only, root first
	// The partitions' PARTUUIDs, as /dev/disk/by-partuuid names them (GPT:
	// the partition GUID; MBR: "<disk id>-NN"); all "" before the disk
	// exists (`nixpi config nixos`), SwapPartUUID "" without swap.
	BootPartUUID, SwapPartUUID, RootPartUUID string
}

// PartUUIDPlaceholders stand for the boot, swap and root partitions'
// PARTUUIDs in a configuration printed before the disk exists.
var PartUUIDPlaceholders = [3]string{"BOOT-PARTUUID", "SWAP-PARTUUID", "ROOT-PARTUUID"}

// DiskFromLayout is the disk the disk steps make for a layout. A layout from
// config.Parse has every field set.
func DiskFromLayout(l config.Layout) Disk {
	d := Disk{Table: l.Table, BootLabel: l.BootLabel, BootSize: l.BootSize, RootLabel: l.RootLabel, RootFS: l.RootFS}
	switch {
	case l.SwapSize.RAM:
		d.SwapLabel, d.SwapSize = l.SwapLabel, "the size of the Pi's memory (layout.swap_size = \"ram\")"
	case l.SwapSize.Bytes > 0:
		d.SwapLabel, d.SwapSize = l.SwapLabel, l.SwapSize.Bytes.String()
	}
	if l.RootFS == config.FSBtrfs {
		d.Subvolumes = l.SubvolumeMounts()
	}
	return d
}

// Machine is what is known about the Pi. The zero value (the workstation)
// knows nothing: what depends on it is written as a comment.
type Machine struct {
	RAMBytes int64
}

// File is one file to write on the installed system.
type File struct {
	Path string // on the installed system, e.g. ConfigurationFile
	Data []byte
	Mode uint32
}

// Files are what the device writes: Configs (hardware-configuration.nix,
// and configuration.nix unless nixos.flake is set) and Secrets (root-only,
// 0600: the password hashes in SecretsDir, the Wi-Fi key in WirelessFile).
// Never print Secrets.
type Files struct {
	Configs []File
	Secrets []File
}

// Generate renders the configuration for cfg on disk d and machine m.
// A problem the config has only as a NixOS configuration is a
// *config.Error naming its key, so callers can point at its line.
func Generate(cfg *config.Config, d Disk, m Machine) (*Files, error) {
	if w := cfg.WLAN; w != nil && strings.ContainsAny(w.SSID, "\"\n\r") {
		// nixpkgs' wpa_supplicant module writes ssid="NAME" unescaped.
		return nil, &config.Error{Key: "wlan.ssid", Msg: fmt.Sprintf("wlan.ssid = %q has a '\"' or a line break, which NixOS's networking.wireless cannot write into wpa_supplicant.conf; rename the network, or drop [wlan] and set up Wi-Fi in nixos.extra_module", w.SSID)}
	}
	tmpl, err := template.New("nixos").Option("missingkey=error").
		Funcs(template.FuncMap{"nix": NixString}).
		ParseFS(assets.NixOS, "nixos/*.nix.tmpl")
	if err != nil {
		return nil, fmt.Errorf("nixos: templates: %w", err)
	}
	hw, err := newHardwareView(cfg, d, m)
	if err != nil {
		return nil, err
	}
	files := &Files{Secrets: secrets(cfg)}
	for _, s := range files.Secrets {
		hw.SecretPaths = append(hw.SecretPaths, s.Path)
		if s.Path == WirelessFile {
			hw.WirelessRule = WirelessTmpfilesRule
		}
	}
	render := func(name string, data any) ([]byte, error) {
		var buf bytes.Buffer
		if err := tmpl.ExecuteTemplate(&buf, name, data); err != nil {
			return nil, fmt.Errorf("nixos: render %s: %w", name, err)
		}
		return buf.Bytes(), nil
	}
	b, err := render("hardware-configuration.nix.tmpl", hw)
	if err != nil {
		return nil, err
	}
	files.Configs = append(files.Configs, File{Path: HardwareFile, Data: b, Mode: 0o644})
	if cfg.NixOS.Flake != "" {
		return files, nil
	}
	b, err = render("configuration.nix.tmpl", newConfigurationView(cfg, m))
	if err != nil {
		return nil, err
	}
	files.Configs = append([]File{{Path: ConfigurationFile, Data: b, Mode: 0o644}}, files.Configs...)
	return files, nil
}

type mountView struct {
	Path    string
	Options []string
}

type hardwareView struct {
	Flake, FlakeRef, FlakeName string
	SecretPaths                []string
	WirelessRule               string   // with a Wi-Fi key: the tmpfiles rule a flake must set
	Placeholders               []string // the PARTUUIDs that are placeholders, when they are
	Table                      string
	BootSize                   config.Size
	ConfigurationLimit         int
	DeviceTreeFilter           string
	KernelParams               []string
	InitrdModules              []string
	BootLabel, BootDevice      string
	SwapLabel, SwapDevice      string
	SwapSize                   string
	RootLabel, RootDevice      string
	RootFS                     string
	Mounts                     []mountView
	Memory, RAM                string // as configurationView's
}

// InitrdModules are the modules stage 1 needs to find the root on a Pi 4's
// USB disk, besides NixOS's defaults (xhci_hcd, sd_mod, mmc_block, ...):
// nixos-hardware's raspberry-pi/4 list, as DESIGN.md §4 gives it.
func InitrdModules() []string {
	return []string{"xhci_pci", "usbhid", "usb_storage", "uas", "pcie_brcmstb", "reset-raspberrypi", "vc4"}
}

// DeviceTreeFilter limits the device trees each generation copies onto the
// FAT to the Pi 4's (hardware.deviceTree.filter, nixos-hardware's value).
const DeviceTreeFilter = "bcm2711-rpi-*.dtb"

// KernelParams are the consoles nixpkgs' sd-image-aarch64.nix gives the
// kernel: serial (ttyS0, ttyAMA0) and, last so it is /dev/console, HDMI;
// and panic=10: a kernel that panics resets the Pi after 10 s instead of
// hanging, so a trial boot that fails comes back to the card by itself.
func KernelParams() []string {
	return []string{"console=ttyS0,115200n8", "console=ttyAMA0,115200n8", "console=tty0", "panic=10"}
}

// bootReserve is the FAT space the Pi firmware, U-Boot and the armstubs
// take; generationSize is what one generation's kernel, initrd and device
// trees take on it, with room to spare.
const (
	bootReserve    = 64 * config.MiB
	generationSize = 120 * config.MiB
)

// ConfigurationLimit is how many generations fit the boot partition.
func ConfigurationLimit(bootSize config.Size) int {
	return min(max(int((bootSize-bootReserve)/generationSize), 1), 10)
}

func byPartUUID(id string) string { return "/dev/disk/by-partuuid/" + id }

func newHardwareView(cfg *config.Config, d Disk, m Machine) (*hardwareView, error) {
	if d.BootLabel == "" || d.RootLabel == "" {
		return nil, fmt.Errorf("nixos: the disk has no boot or root label (boot %q, root %q)", d.BootLabel, d.RootLabel)
	}
	boot, swap, root := d.BootPartUUID, d.SwapPartUUID, d.RootPartUUID
	var placeholders []string
	switch {
	case boot == "" && swap == "" && root == "":
		boot, swap, root = PartUUIDPlaceholders[0], PartUUIDPlaceholders[1], PartUUIDPlaceholders[2]
		placeholders = []string{boot, root}
		if d.SwapLabel != "" {
			placeholders = []string{boot, swap, root}
		}
	case boot == "" || root == "" || (d.SwapLabel != "") != (swap != ""):
		return nil, fmt.Errorf("nixos: the disk's partition ids are incomplete (boot %q, swap %q, root %q)", boot, swap, root)
	}
	v := &hardwareView{
		Placeholders: placeholders,
		Table:        strings.ToUpper(d.Table), BootSize: d.BootSize,
		ConfigurationLimit: ConfigurationLimit(d.BootSize), InitrdModules: InitrdModules(),
		DeviceTreeFilter: DeviceTreeFilter, KernelParams: KernelParams(),
		BootLabel: d.BootLabel, BootDevice: byPartUUID(boot),
		RootLabel: d.RootLabel, RootDevice: byPartUUID(root), RootFS: d.RootFS,
		SwapSize: d.SwapSize,
	}
	v.Memory, v.RAM = memoryClass(m)
	if d.SwapLabel != "" {
		v.SwapLabel, v.SwapDevice = d.SwapLabel, byPartUUID(swap)
	}
	if ref, name, ok := strings.Cut(cfg.NixOS.Flake, "#"); ok {
		v.Flake, v.FlakeRef, v.FlakeName = cfg.NixOS.Flake, ref, name
	}
	switch d.RootFS {
	case config.FSBtrfs:
		if len(d.Subvolumes) == 0 || d.Subvolumes[0].Path != "/" {
			return nil, fmt.Errorf("nixos: btrfs root without a subvolume mounted at /")
		}
		for _, m := range d.Subvolumes {
			v.Mounts = append(v.Mounts, mountView{Path: m.Path, Options: []string{"subvol=" + m.Subvolume, "compress=zstd"}})
		}
	case config.FSExt4:
		v.Mounts = []mountView{{Path: "/"}}
	default:
		return nil, fmt.Errorf("nixos: root filesystem %q is neither %s nor %s", d.RootFS, config.FSBtrfs, config.FSExt4)
	}
	return v, nil
}

type userView struct {
	Name, PasswordFile string
	Keys               []string
}

type wlanView struct {
	SSID, CountryLine   string
	Hidden              bool
	SecretsFile, PSKRef string
	TmpfilesRule        string
}

type configurationView struct {
	ExtraModule                        string
	Hostname, Timezone, Locale, Keymap string
	Users                              []userView
	NoSudoPassword, SSH                bool
	WLAN                               *wlanView
	Substituters, TrustedPublicKeys    []string
	Memory                             string // "small", "large" or "unknown"
	RAM                                string
	Release                            string
	Channel                            string
}

// ChannelURL is the NixOS channel of a release, which `nixos-rebuild switch
// --upgrade` follows on the installed system (system.defaultChannel).
func ChannelURL(release string) string { return "https://nixos.org/channels/nixos-" + release }

// WirelessTmpfilesRule gives wpa_supplicant (user and group wpa_supplicant,
// made by NixOS) read access to WirelessFile, root keeping it: systemd-tmpfiles
// "z" adjusts mode and owner of an existing file, at boot and on each switch.
const WirelessTmpfilesRule = "z " + WirelessFile + " 0640 root wpa_supplicant -"

// PasswordFile is where a user's password hash lives on the installed system.
func PasswordFile(user string) string { return path.Join(SecretsDir, user+".hashedPassword") }

func newConfigurationView(cfg *config.Config, m Machine) *configurationView {
	v := &configurationView{
		ExtraModule: strings.TrimRight(cfg.NixOS.ExtraModule, "\n"),
		Hostname:    cfg.System.Hostname, Timezone: cfg.System.Timezone, Locale: cfg.System.Locale, Keymap: cfg.System.Keymap,
		Substituters: cfg.NixOS.Substituters, TrustedPublicKeys: cfg.NixOS.TrustedPublicKeys,
		Release: cfg.NixOS.Release, Channel: ChannelURL(cfg.NixOS.Release),
	}
	for _, u := range cfg.Users {
		uv := userView{Name: u.Name, Keys: u.SSHKeys}
		if u.PasswordHash != "" {
			uv.PasswordFile = PasswordFile(u.Name)
		} else {
			v.NoSudoPassword = true
		}
		v.SSH = v.SSH || len(u.SSHKeys) > 0
		v.Users = append(v.Users, uv)
	}
	if w := cfg.WLAN; w != nil {
		wv := &wlanView{SSID: w.SSID, CountryLine: "country=" + w.Country, Hidden: w.Hidden}
		if w.PSK != "" {
			wv.SecretsFile, wv.PSKRef = WirelessFile, "ext:"+wirelessPSKVar
			wv.TmpfilesRule = WirelessTmpfilesRule
		}
		v.WLAN = wv
	}
	v.Memory, v.RAM = memoryClass(m)
	return v
}

// memoryClass is "unknown" (the workstation), "small" (SmallPiRAM or less:
// one build job, no NixOS manual; with the RAM for people) or "large".
func memoryClass(m Machine) (class, ram string) {
	switch {
	case m.RAMBytes <= 0:
		return "unknown", ""
	case config.Size(m.RAMBytes) <= SmallPiRAM:
		return "small", config.Size(m.RAMBytes).Approx()
	default:
		return "large", ""
	}
}

// secrets are the root-only files the configuration refers to.
func secrets(cfg *config.Config) []File {
	var fs []File
	for _, u := range cfg.Users {
		if u.PasswordHash != "" {
			fs = append(fs, File{Path: PasswordFile(u.Name), Data: []byte(u.PasswordHash.Reveal() + "\n"), Mode: 0o600})
		}
	}
	if w := cfg.WLAN; w != nil && w.PSK != "" {
		// wpa_supplicant's ext_password_backend=file reads NAME=VALUE lines
		// literally: a passphrase or 64 hex digits.
		fs = append(fs, File{Path: WirelessFile, Data: []byte(wirelessPSKVar + "=" + w.PSK.Reveal() + "\n"), Mode: 0o600})
	}
	return fs
}
