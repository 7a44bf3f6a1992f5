package config

// Default is the original recipe's install: any single USB disk (never wiped
// unless allowed), GPT with a 500 MiB FAT32 boot partition, swap the size of
// RAM, and a btrfs root with @, @nix and @home subvolumes.
func Default() *Config {
	return &Config{
		Schema: SchemaVersion,
		Target: Target{Disk: DiskAuto},
		Layout: Layout{
			Table:      TableGPT,
			BootSize:   500 * MiB,
			SwapSize:   SwapSize{RAM: true},
			RootFS:     FSBtrfs,
			Subvolumes: []string{"@", "@nix", "@home"},
			BootLabel:  "boot",
			SwapLabel:  "swap",
			RootLabel:  "root",
		},
		NixOS: NixOS{
			Release:           "26.05",
			Substituters:      []string{CacheNixOS},
			TrustedPublicKeys: []string{CacheNixOSKey},
		},
		Nix: Nix{Installer: InstallerAuto},
		System: System{
			Hostname: "nixpi",
			Timezone: "UTC",
			Keymap:   "us",
			Locale:   "en_US.UTF-8",
		},
		Boot:   Boot{BootOrder: "0xf41"},
		Status: StatusServer{Listen: ":80"},
	}
}

// Values with a meaning in the file.
const (
	DiskAuto   = "auto"
	DiskByID   = "/dev/disk/by-id/"
	TableGPT   = "gpt"
	TableMBR   = "mbr"
	FSBtrfs    = "btrfs"
	FSExt4     = "ext4"
	RootSubvol = "@"

	InstallerAuto     = "auto"
	InstallerDebian   = "debian"
	InstallerOfficial = "official"

	// CacheNixOS and CacheNixOSKey are the official binary cache and its
	// signing key, as nixpkgs' nixos/modules/config/nix.nix sets them.
	CacheNixOS    = "https://cache.nixos.org"
	CacheNixOSKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
)

// Mount is where a btrfs subvolume is mounted on the installed system.
type Mount struct {
	Subvolume string // "@nix"
	Path      string // "/nix"
}

// SubvolumeMounts maps each subvolume to its mount point: "@" is "/", "@name"
// is "/name". Root comes first so callers can mount in order.
func (l Layout) SubvolumeMounts() []Mount {
	var mounts []Mount
	for _, s := range l.Subvolumes {
		m := Mount{Subvolume: s, Path: "/" + s[len(RootSubvol):]}
		if s == RootSubvol {
			mounts = append([]Mount{m}, mounts...)
			continue
		}
		mounts = append(mounts, m)
	}
	return mounts
}
