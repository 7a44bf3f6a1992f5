package qemu

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/nixpi/nixpi/firstboot/system"
)

// Tools holds the path of every host tool the harness runs, so a missing one
// is named in one place.
type Tools struct {
	QemuSystem string // qemu-system-aarch64 (qemu-system-arm)
	Mmdebstrap string // mmdebstrap
	// UpdateBinfmts registers qemu-user-static (binfmt-support).
	UpdateBinfmts string
	Chroot        string // coreutils
	Mount         string // mount
	Umount        string // mount
	Mcopy         string // mtools
	Mtype         string // mtools
	Mren          string // mtools
	MkfsFAT       string // dosfstools
	FsckFAT       string // dosfstools
	MkfsExt4      string // e2fsprogs
	Debugfs       string // e2fsprogs
	Sgdisk        string // gdisk
	Sfdisk        string // fdisk (util-linux)
	Blkid         string // util-linux
	Losetup       string // util-linux
	Partx         string // util-linux
	Btrfs         string // btrfs-progs
	// NixHash pins the stand-in nixpkgs by its NAR hash; NixInstantiate
	// parses the configuration files found on the SSD (nix-bin).
	NixHash        string
	NixInstantiate string
	// Busybox is the host's static busybox: its nc carries each of the
	// guest's connections to the stand-in server (busybox-static).
	Busybox string
}

// DefaultTools are the paths on Debian.
func DefaultTools() Tools {
	return Tools{
		QemuSystem:     "/usr/bin/qemu-system-aarch64",
		Mmdebstrap:     "/usr/bin/mmdebstrap",
		UpdateBinfmts:  "/usr/sbin/update-binfmts",
		Chroot:         "/usr/sbin/chroot",
		Mount:          "/usr/bin/mount",
		Umount:         "/usr/bin/umount",
		Mcopy:          "/usr/bin/mcopy",
		Mtype:          "/usr/bin/mtype",
		Mren:           "/usr/bin/mren",
		MkfsFAT:        "/usr/sbin/mkfs.fat",
		FsckFAT:        "/usr/sbin/fsck.fat",
		MkfsExt4:       "/usr/sbin/mkfs.ext4",
		Debugfs:        "/usr/sbin/debugfs",
		Sgdisk:         "/usr/sbin/sgdisk",
		Sfdisk:         "/usr/sbin/sfdisk",
		Blkid:          "/usr/sbin/blkid",
		Losetup:        "/usr/sbin/losetup",
		Partx:          "/usr/bin/partx",
		Btrfs:          "/usr/bin/btrfs",
		NixHash:        "/usr/bin/nix-hash",
		NixInstantiate: "/usr/bin/nix-instantiate",
		Busybox:        "/bin/busybox",
	}
}

// debianPackage names the package that provides each tool, for the error
// that tells a user what to install.
var debianPackage = map[string]string{
	"qemu-system-aarch64": "qemu-system-arm",
	"mmdebstrap":          "mmdebstrap qemu-user-static binfmt-support",
	"update-binfmts":      "binfmt-support qemu-user-static",
	"mcopy":               "mtools",
	"mtype":               "mtools",
	"mren":                "mtools",
	"debugfs":             "e2fsprogs",
	"mkfs.fat":            "dosfstools",
	"fsck.fat":            "dosfstools",
	"mkfs.ext4":           "e2fsprogs",

	"sgdisk":          "gdisk",
	"sfdisk":          "fdisk",
	"btrfs":           "btrfs-progs",
	"nix-hash":        "nix-bin",
	"nix-instantiate": "nix-bin",
	"busybox":         "busybox-static",
}

// Check reports every tool in paths that is missing, with the apt-get line
// that installs them.
func Check(paths ...string) error {
	var missing, pkgs []string
	seen := map[string]bool{}
	for _, p := range paths {
		if _, err := exec.LookPath(p); err == nil {
			continue
		}
		missing = append(missing, p)
		name := p[strings.LastIndexByte(p, '/')+1:]
		if pkg, ok := debianPackage[name]; ok && !seen[pkg] {
			seen[pkg] = true
			pkgs = append(pkgs, pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	msg := fmt.Sprintf("missing host tools: %s", strings.Join(missing, ", "))
	if len(pkgs) > 0 {
		msg += fmt.Sprintf(" (install them with: apt-get install -y %s)", strings.Join(pkgs, " "))
	}
	return fmt.Errorf("%s", msg)
}

// run is the harness's one way to run a host command: through the injected
// runner, which logs the quoted argv and puts stderr into the error.
func run(ctx context.Context, r system.Runner, argv ...string) (string, error) {
	out, err := r.Output(ctx, argv...)
	return string(out), err
}
