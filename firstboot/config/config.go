// Package config is the install config (nixpi.toml): the contract between the
// workstation that writes a card and the device service that reads it. Later
// releases must keep reading cards written by earlier ones: bump SchemaVersion
// and keep a reader for each older version.
package config

// SchemaVersion is written as `schema = N` at the top of every nixpi.toml.
const SchemaVersion = 1

// Config is the whole install config. Field order follows the file.
type Config struct {
	Schema int          `toml:"schema"`
	Target Target       `toml:"target"`
	Layout Layout       `toml:"layout"`
	NixOS  NixOS        `toml:"nixos"`
	Nix    Nix          `toml:"nix"`
	System System       `toml:"system"`
	Users  []User       `toml:"users,omitempty"`
	WLAN   *WLAN        `toml:"wlan"`
	Boot   Boot         `toml:"boot"`
	Status StatusServer `toml:"status"`
}

// Target selects the USB disk to install onto.
type Target struct {
	// Disk is "auto" (exactly one USB disk), a /dev/disk/by-id/ path, or
	// empty when Serial is set.
	Disk    string `toml:"disk"`
	Serial  string `toml:"serial,omitempty"`
	Wipe    bool   `toml:"wipe"`
	MinSize Size   `toml:"min_size"`
}

// Layout is how the target disk is partitioned and formatted.
type Layout struct {
	Table      string   `toml:"table"`     // "gpt" (default) or "mbr"
	BootSize   Size     `toml:"boot_size"` // default 500MiB
	SwapSize   SwapSize `toml:"swap_size"` // "ram" (default), "0" for none, or a size
	RootFS     string   `toml:"root_fs"`   // "btrfs" (default) or "ext4"
	Subvolumes []string `toml:"subvolumes,omitempty"`
	BootLabel  string   `toml:"boot_label"`
	SwapLabel  string   `toml:"swap_label"`
	RootLabel  string   `toml:"root_label"`
}

// NixOS is what gets installed (used by the later install steps).
type NixOS struct {
	Release       string `toml:"release"`                  // e.g. "26.05"
	NixpkgsRev    string `toml:"nixpkgs_rev,omitempty"`    // 40 hex digits
	NixpkgsSHA256 string `toml:"nixpkgs_sha256,omitempty"` // sha256 of the nixpkgs tarball
	// NixpkgsURL is the nixpkgs source tarball; "" is GitHub's archive of
	// the revision (NixpkgsTarball).
	NixpkgsURL  string `toml:"nixpkgs_url,omitempty"`
	ExtraModule string `toml:"extra_module,omitempty"` // Nix expression appended to imports
	// Flake is "URI#name": the user's own flake's nixosConfigurations.name
	// instead of the generated configuration.nix.
	Flake             string   `toml:"flake,omitempty"`
	Substituters      []string `toml:"substituters"`
	TrustedPublicKeys []string `toml:"trusted_public_keys"`
}

// Nix is how the Pi gets the Nix that builds the system.
type Nix struct {
	// Installer is "auto" (the OS's own package when new enough, else the
	// official release), "debian" or "official".
	Installer string `toml:"installer"`
}

// System is host-wide settings of the installed NixOS.
type System struct {
	Hostname string `toml:"hostname"`
	Timezone string `toml:"timezone"`
	Keymap   string `toml:"keymap"`
	Locale   string `toml:"locale"`
}

// User is one login on the installed system.
type User struct {
	Name         string   `toml:"name"`
	PasswordHash Secret   `toml:"password_hash,omitempty"`
	SSHKeys      []string `toml:"ssh_keys,omitempty"`
}

// WLAN is the wireless network, used on the Pi when there is no wired link.
type WLAN struct {
	SSID    string `toml:"ssid"`
	PSK     Secret `toml:"psk"`
	Country string `toml:"country"`
	Hidden  bool   `toml:"hidden"`
}

// Boot is the bootloader (EEPROM) setting.
type Boot struct {
	BootOrder string `toml:"boot_order"` // default "0xf41"
}

// StatusServer is the optional read-only HTTP status page on the LAN.
type StatusServer struct {
	Enable bool   `toml:"enable"`
	Listen string `toml:"listen"`
}

// NixpkgsTarball is the URL nixpkgs revision rev is fetched from:
// nixos.nixpkgs_url when set, else GitHub's archive of the commit.
func (n NixOS) NixpkgsTarball(rev string) string {
	if n.NixpkgsURL != "" {
		return n.NixpkgsURL
	}
	return "https://github.com/NixOS/nixpkgs/archive/" + rev + ".tar.gz"
}
