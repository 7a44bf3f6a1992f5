// Package system is the device service's one door to the outside: external
// commands (through Runner, which logs the quoted argv and puts stdout and
// stderr into the error), tool paths (Tools, in one place), and machine
// actions that a test must never perform for real (Machine: reboot).
package system

import "context"

// Runner runs external commands. Implementations log the quoted argv before
// running and return an error that carries the exit status and stderr.
type Runner interface {
	// Output runs argv[0] with argv[1:] and returns its stdout.
	Output(ctx context.Context, argv ...string) ([]byte, error)
}

// Streamer is a Runner that also hands a long command's stderr to the caller
// line by line while it runs (Nix's --log-format internal-json progress).
type Streamer interface {
	Runner
	// Stream runs argv like Output and calls stderrLine with each line of
	// its stderr (without the newline) as it arrives.
	Stream(ctx context.Context, stderrLine func(line string), argv ...string) ([]byte, error)
}

// Machine is what happens to the whole machine. On the device it reboots for
// real; in tests it records.
type Machine interface {
	// Reboot asks the init system to reboot. It returns once the request is
	// made; the caller should then exit.
	Reboot(ctx context.Context) error
	// TryReboot reboots once into the Pi 4 bootloader's TRYBOOT mode: the
	// next boot reads tryboot.txt instead of config.txt; the flag is gone
	// after that one boot, so a crash, reset or power cycle comes back to
	// config.txt.
	TryReboot(ctx context.Context) error
	// Sync writes every filesystem's cached data to its disk, so what a
	// step wrote survives a power cut once the journal says it is done.
	Sync(ctx context.Context) error
}

// Tools holds the path of every external tool the service runs, so a missing
// tool is named in one place and tests can point at their own.
type Tools struct {
	AptGet    string
	Dpkg      string
	Blkid     string
	BtrfsTool string
	Lsblk     string
	MkfsBtrfs string
	MkfsExt4  string
	MkfsFAT   string
	FsckFAT   string
	Mkswap    string
	Mount     string
	// Partx tells the kernel about a new partition table (works on loop
	// devices too, where BLKRRPART may not).
	Partx     string
	Sgdisk    string
	Sfdisk    string
	Swapon    string
	Umount    string
	Vcgencmd  string
	Wipefs    string
	Systemctl string
	Uname     string
	// IP reads the addresses for the hand-over's last message.
	IP string
	// Network: Wi-Fi through the image's own stack (NetworkManager on
	// Bookworm+, wpa_supplicant with dhcpcd before).
	Nmcli         string
	WpaSupplicant string
	Dhcpcd        string
	Iw            string
	Rfkill        string
	// Env runs a command with extra environment (DEBIAN_FRONTEND for apt-get).
	Env string

	AptCache    string
	Tar         string
	Timedatectl string
	// Nix is Debian's nix (nix-bin), its other tools beside it; the
	// official installer's multi-user Nix has them all in NixProfileBin.
	Nix           string
	NixProfileBin string
}

// DefaultTools are the paths on Raspberry Pi OS / Debian.
func DefaultTools() Tools {
	return Tools{
		AptGet:    "/usr/bin/apt-get",
		Dpkg:      "/usr/bin/dpkg",
		Blkid:     "/usr/sbin/blkid",
		BtrfsTool: "/usr/bin/btrfs",
		Lsblk:     "/usr/bin/lsblk",
		MkfsBtrfs: "/usr/sbin/mkfs.btrfs",
		MkfsExt4:  "/usr/sbin/mkfs.ext4",
		MkfsFAT:   "/usr/sbin/mkfs.fat",
		FsckFAT:   "/usr/sbin/fsck.fat",
		Mkswap:    "/usr/sbin/mkswap",
		Mount:     "/usr/bin/mount",
		Partx:     "/usr/bin/partx",
		Sgdisk:    "/usr/sbin/sgdisk",
		Sfdisk:    "/usr/sbin/sfdisk",
		Swapon:    "/usr/sbin/swapon",
		Umount:    "/usr/bin/umount",
		Vcgencmd:  "/usr/bin/vcgencmd",
		Wipefs:    "/usr/sbin/wipefs",
		Systemctl: "/usr/bin/systemctl",
		Uname:     "/usr/bin/uname",
		IP:        "/usr/bin/ip",

		Nmcli:         "/usr/bin/nmcli",
		WpaSupplicant: "/usr/sbin/wpa_supplicant",
		Dhcpcd:        "/usr/sbin/dhcpcd",
		Iw:            "/usr/sbin/iw",
		Rfkill:        "/usr/sbin/rfkill",
		Env:           "/usr/bin/env",

		AptCache:      "/usr/bin/apt-cache",
		Tar:           "/usr/bin/tar",
		Timedatectl:   "/usr/bin/timedatectl",
		Nix:           "/usr/bin/nix",
		NixProfileBin: "/nix/var/nix/profiles/default/bin",
	}
}
