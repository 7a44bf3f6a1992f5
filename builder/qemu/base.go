package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/system"
)

// BaseRecipe is everything that decides the e2e base image's content. Its
// hash names the cached image, so changing any field (or the scripts below,
// or baseRecipeVersion) builds a new one.
type BaseRecipe struct {
	Suite      string   `json:"suite"`
	Mirror     string   `json:"mirror"`
	Components []string `json:"components"`
	Packages   []string `json:"packages"`
	// InitramfsModules are listed in /etc/initramfs-tools/modules so the
	// guest finds its root on the virtio card and the SSD on xhci.
	// InitramfsMode is initramfs-tools' MODULES: "list" takes only those
	// (and their dependencies), which makes the one mkinitramfs run under
	// emulation minutes shorter than "most"; the root filesystem's udev
	// loads everything else after switch_root.
	InitramfsModules []string `json:"initramfs_modules"`
	InitramfsMode    string   `json:"initramfs_mode"`
	Hostname         string   `json:"hostname"`
	FATStart         int64    `json:"fat_start"` // bytes
	FATSize          int64    `json:"fat_size"`  // bytes
	// Bootloader is what Raspberry Pi OS's rpi-eeprom package puts in
	// /lib/firmware/raspberrypi/bootloader-2711/default, which the eeprom
	// step reads (Debian has no rpi-eeprom package): a Pi 4 bootloader image
	// and recovery.bin. Empty leaves the directory out.
	Bootloader []BaseFile `json:"bootloader"`
}

// BaseFile is a file the base image gets from the host. Its content, not
// where it came from, is part of the recipe.
type BaseFile struct {
	Name   string `json:"name"` // the file's name in the image's directory
	SHA256 string `json:"sha256"`
	Src    string `json:"-"`
}

// BootloaderDir is where the base image keeps Recipe.Bootloader.
const BootloaderDir = "/lib/firmware/raspberrypi/bootloader-2711/default"

// WithBootloader adds the newest pieeprom-*.bin and the recovery.bin found
// in dir to the recipe: a raspberrypi/rpi-eeprom checkout's
// firmware-2711/default, or ../shared/testdata/rpi-eeprom (images/ holds
// the images there).
func (r BaseRecipe) WithBootloader(dir string) (BaseRecipe, error) {
	// Release images only: the test data also has a modified one.
	releases := func(pattern string) []string {
		m, _ := filepath.Glob(pattern)
		return slices.DeleteFunc(m, func(p string) bool { return strings.Contains(filepath.Base(p), "-freeze") })
	}
	images := releases(filepath.Join(dir, "pieeprom-*.bin"))
	if len(images) == 0 {
		images = releases(filepath.Join(dir, "images", "pieeprom-*.bin"))
	}
	// The names carry the release date, so the last in order is the newest.
	if len(images) == 0 {
		return r, fmt.Errorf("no Pi 4 bootloader image (pieeprom-DATE.bin) in %q or its images/: pass a raspberrypi/rpi-eeprom checkout's firmware-2711/default", dir)
	}
	slices.Sort(images)
	files := []BaseFile{}
	for _, src := range []string{images[len(images)-1], filepath.Join(dir, "recovery.bin")} {
		data, err := os.ReadFile(src)
		if err != nil {
			return r, fmt.Errorf("bootloader files for the base image: %w", err)
		}
		sum := sha256.Sum256(data)
		files = append(files, BaseFile{Name: filepath.Base(src), SHA256: hex.EncodeToString(sum[:]), Src: src})
	}
	r.Bootloader = files
	return r, nil
}

// baseRecipeVersion changes when the code that turns a recipe into an image
// changes in a way that alters the image.
const baseRecipeVersion = 3

// DefaultBaseRecipe is a Raspberry Pi OS Trixie arm64 Lite lookalike made
// of Debian packages, plus what the device service would install from the
// network, preinstalled because the guest reaches nothing but the host: the
// disk tools, Debian's Nix (nix-setup-systemd pulls nix-bin 2.26, the
// daemon and the nixbld users) and busybox-static, whose /bin/busybox the
// harness ships inside the stand-in nixpkgs as the builder of every
// stand-in derivation (Debian's Nix has no sandbox coreutils).
func DefaultBaseRecipe() BaseRecipe {
	return BaseRecipe{
		Suite:      "trixie",
		Mirror:     "http://deb.debian.org/debian",
		Components: []string{"main", "non-free-firmware"},
		Packages: []string{
			"systemd", "systemd-sysv", "udev", "dbus", "kmod",
			"linux-image-arm64", "raspi-firmware", "initramfs-tools", "zstd",
			"util-linux", "mount", "e2fsprogs", "btrfs-progs", "dosfstools", "gdisk", "fdisk", "parted", "iproute2",
			"nix-setup-systemd", "busybox-static",
		},
		InitramfsModules: []string{"virtio_pci", "virtio_blk", "xhci_pci", "xhci_hcd", "usb_storage", "uas", "sd_mod", "ext4"},
		InitramfsMode:    "list",
		Hostname:         "raspberrypi",
		FATStart:         8 << 20,
		FATSize:          512 << 20,
	}
}

// Key is the sha256 of the recipe's inputs.
func (r BaseRecipe) Key() string {
	h := sha256.New()
	enc, _ := json.Marshal(r) // a struct of strings and ints always encodes
	fmt.Fprintf(h, "nixpi e2e base v%d\n%s\n%s\n%s\n%s\n%s\n", baseRecipeVersion, enc, deferInitramfsHook, configTxt, wiredNetwork, resolvConf)
	return hex.EncodeToString(h.Sum(nil))
}

// CachePath is where the image for this recipe is kept in cacheDir.
func (r BaseRecipe) CachePath(cacheDir string) string {
	return filepath.Join(cacheDir, "e2e-base-"+r.Key()[:16]+".img")
}

// deferInitramfsHook keeps every package trigger from running mkinitramfs
// (minutes each under emulation): update-initramfs is diverted to a no-op
// while packages install, and run once at the end.
const deferInitramfsHook = `chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.nixpi --add /usr/sbin/update-initramfs && printf '#!/bin/sh\necho "update-initramfs: deferred until all packages are installed" >&2\n' > "$1/usr/sbin/update-initramfs" && chmod 0755 "$1/usr/sbin/update-initramfs"`

const restoreInitramfsHook = `rm -f "$1/usr/sbin/update-initramfs" && chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.nixpi --remove /usr/sbin/update-initramfs`

// wiredNetwork makes systemd-networkd take an address by DHCP on the wired
// link, as Raspberry Pi OS's NetworkManager does on eth0; QEMU's user
// network answers it.
const wiredNetwork = `[Match]
Name=en* eth*

[Network]
DHCP=yes
`

// resolvConf names QEMU's user-network name server, so the service's
// network check sees one (the guest resolves no names: every URL the e2e
// uses is an address on the host).
const resolvConf = "nameserver 10.0.2.3\n"

// configTxt is Raspberry Pi OS's stock config.txt (Bookworm's, unchanged
// in Trixie).
const configTxt = `# For more options and information see
# http://rptl.io/configtxt
# Some settings may impact device functionality. See link above for details

# Uncomment some or all of these to enable the optional hardware interfaces
#dtparam=i2c_arm=on
#dtparam=i2s=on
#dtparam=spi=on

# Enable audio (loads snd_bcm2835)
dtparam=audio=on

# Additional overlays and parameters are documented
# /boot/firmware/overlays/README

# Automatically load overlays for detected cameras
camera_auto_detect=1

# Automatically load overlays for detected DSI displays
display_auto_detect=1

# Automatically load initramfs files, if found
auto_initramfs=1

# Enable DRM VC4 V3D driver
dtoverlay=vc4-kms-v3d
max_framebuffers=2

# Don't have the firmware create an initial video= setting in cmdline.txt.
# Use the kernel's default instead.
disable_fw_kms_setup=1

# Run in 64-bit mode
arm_64bit=1

# Disable compensation for displays with overscan
disable_overscan=1

# Run as fast as firmware / board allows
arm_boost=1

[cm4]
# Enable host mode on the 2711 built-in XHCI USB controller.
# This line should be removed if the legacy DWC2 controller is required
# (e.g. for USB device mode) or if USB OTG is not required.
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host

[all]
`

// BaseBuilder builds the base image. Log receives phase lines with
// durations; Run runs every host command.
type BaseBuilder struct {
	Recipe   BaseRecipe
	CacheDir string
	Run      system.Runner
	Tools    Tools
	Log      func(format string, args ...any)
}

func (b *BaseBuilder) logf(format string, args ...any) {
	if b.Log != nil {
		b.Log(format, args...)
	}
}

// phase runs fn and logs how long it took.
func phase(logf func(string, ...any), name string, fn func() error) error {
	start := time.Now()
	logf("%s: started", name)
	err := fn()
	d := time.Since(start).Round(100 * time.Millisecond)
	if err != nil {
		logf("%s: failed after %s", name, d)
		return fmt.Errorf("%s: %w", name, err)
	}
	logf("%s: done in %s", name, d)
	return nil
}

// Ensure returns the cached base image for the recipe, building it first
// when it is not there. cached says which.
func (b *BaseBuilder) Ensure(ctx context.Context) (path string, cached bool, err error) {
	path = b.Recipe.CachePath(b.CacheDir)
	if _, err := os.Stat(path); err == nil {
		b.logf("base image: cached %s (recipe %s)", path, b.Recipe.Key()[:16])
		return path, true, nil
	}
	t := b.Tools
	if err := Check(t.Mmdebstrap, t.Chroot, t.Mount, t.Umount, t.MkfsFAT, t.Mcopy, t.MkfsExt4); err != nil {
		return "", false, err
	}
	if err := b.ensureBinfmt(ctx); err != nil {
		return "", false, err
	}
	if err := os.MkdirAll(b.CacheDir, 0o755); err != nil {
		return "", false, fmt.Errorf("base image: %w", err)
	}
	work, err := os.MkdirTemp(b.CacheDir, "build-")
	if err != nil {
		return "", false, fmt.Errorf("base image: %w", err)
	}
	defer b.removeWork(work)
	start := time.Now()
	if err := b.build(ctx, work, path); err != nil {
		return "", false, fmt.Errorf("base image: %w", err)
	}
	b.logf("base image: built %s in %s", path, time.Since(start).Round(time.Second))
	return path, false, nil
}

const binfmtDir = "/proc/sys/fs/binfmt_misc"

func binfmtEnabled() bool {
	data, err := os.ReadFile(binfmtDir + "/qemu-aarch64")
	return err == nil && bytes.HasPrefix(data, []byte("enabled"))
}

// ensureBinfmt makes sure arm64 binaries run on this host, which mmdebstrap
// needs to configure an arm64 root. Without systemd (CI containers) nobody
// registers qemu-user-static's handler at boot, so it does that itself.
func (b *BaseBuilder) ensureBinfmt(ctx context.Context) error {
	if binfmtEnabled() {
		return nil
	}
	const fix = "apt-get install -y qemu-user-static binfmt-support; mount binfmt_misc -t binfmt_misc " + binfmtDir + "; update-binfmts --enable qemu-aarch64"
	if err := Check(b.Tools.UpdateBinfmts); err != nil {
		return fmt.Errorf("arm64 binaries cannot run on this host: %w; then: %s", err, fix)
	}
	if _, err := os.Stat(binfmtDir + "/register"); err != nil {
		if _, err := run(ctx, b.Run, b.Tools.Mount, "-t", "binfmt_misc", "binfmt_misc", binfmtDir); err != nil {
			return fmt.Errorf("arm64 binaries cannot run on this host: %w (fix: %s)", err, fix)
		}
	}
	if _, err := run(ctx, b.Run, b.Tools.UpdateBinfmts, "--enable", "qemu-aarch64"); err != nil {
		return fmt.Errorf("arm64 binaries cannot run on this host: %w (fix: %s)", err, fix)
	}
	if !binfmtEnabled() {
		return fmt.Errorf("arm64 binaries cannot run on this host: %s/qemu-aarch64 is not enabled after update-binfmts (fix: %s)", binfmtDir, fix)
	}
	b.logf("base image: registered qemu-user-static for arm64 binaries (binfmt_misc)")
	return nil
}

// removeWork deletes the build directory, but never while anything is still
// mounted below it (a bound /proc or /dev must not be emptied).
func (b *BaseBuilder) removeWork(work string) {
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		b.logf("base image: left %s behind: cannot check for mounts: %v", work, err)
		return
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], work+"/") {
			b.logf("base image: left %s behind: %s is still mounted", work, f[1])
			return
		}
	}
	if err := os.RemoveAll(work); err != nil {
		b.logf("base image: cleaning up %s: %v", work, err)
	}
}

func (b *BaseBuilder) build(ctx context.Context, work, dest string) error {
	root := filepath.Join(work, "rootfs")
	fatTree := filepath.Join(work, "bootfs")
	r := b.Recipe
	key := r.Key()
	diskID := key[:8]
	if err := phase(b.logf, "base image: install packages (mmdebstrap)", func() error {
		return b.mmdebstrap(ctx, root)
	}); err != nil {
		return err
	}
	if err := phase(b.logf, "base image: initramfs (mkinitramfs, once)", func() error {
		return b.initramfs(ctx, root)
	}); err != nil {
		return err
	}
	if err := phase(b.logf, "base image: Raspberry Pi OS layout", func() error {
		return b.layout(root, fatTree, diskID)
	}); err != nil {
		return err
	}
	fatImg := filepath.Join(work, "bootfs.img")
	rootImg := filepath.Join(work, "rootfs.img")
	if err := phase(b.logf, "base image: filesystems (mkfs.fat + mcopy, mkfs.ext4 -d)", func() error {
		return b.filesystems(ctx, root, fatTree, fatImg, rootImg, key)
	}); err != nil {
		return err
	}
	return phase(b.logf, "base image: assemble disk", func() error {
		return b.assemble(work, fatImg, rootImg, diskID, dest)
	})
}

func (b *BaseBuilder) mmdebstrap(ctx context.Context, root string) error {
	r := b.Recipe
	modules := strings.Join(r.InitramfsModules, "\n") + "\n"
	argv := []string{b.Tools.Mmdebstrap,
		"--arch=arm64", "--variant=minbase",
		"--components=" + strings.Join(r.Components, ","),
		"--include=" + strings.Join(r.Packages, ","),
		// Raspberry Pi OS Lite ships without manuals; leaving them out
		// saves minutes of emulated dpkg work.
		"--dpkgopt=path-exclude=/usr/share/man/*",
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-include=/usr/share/doc/*/copyright",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		"--essential-hook=" + deferInitramfsHook,
		"--customize-hook=" + restoreInitramfsHook,
		"--customize-hook=printf '%s' " + shellQuote(modules) + ` >> "$1/etc/initramfs-tools/modules"`,
		"--customize-hook=printf 'MODULES=%s\n' " + shellQuote(r.InitramfsMode) + ` > "$1/etc/initramfs-tools/conf.d/nixpi-e2e.conf"`,
		`--customize-hook=chroot "$1" systemctl enable systemd-networkd.service`,
		r.Suite, root, r.Mirror,
	}
	_, err := run(ctx, b.Run, argv...)
	return err
}

// initramfs runs mkinitramfs once for the installed kernel, with /proc
// mounted as it expects.
func (b *BaseBuilder) initramfs(ctx context.Context, root string) error {
	proc := filepath.Join(root, "proc")
	if _, err := run(ctx, b.Run, b.Tools.Mount, "-t", "proc", "proc", proc); err != nil {
		return err
	}
	_, err := run(ctx, b.Run, b.Tools.Chroot, root, "/usr/sbin/update-initramfs", "-c", "-k", "all")
	if _, uerr := run(context.WithoutCancel(ctx), b.Run, b.Tools.Umount, proc); uerr != nil && err == nil {
		err = uerr
	}
	return err
}

// layout gives the root the Raspberry Pi OS shape: fstab by PARTUUID, the
// FAT mounted at /boot/firmware, and builds the FAT's tree: Debian's
// raspi-firmware files, the kernel as kernel8.img, the initrd as
// initramfs8 (auto_initramfs=1), the Pi 4 device trees, config.txt and
// cmdline.txt.
func (b *BaseBuilder) layout(root, fatTree, diskID string) error {
	if err := os.MkdirAll(fatTree, 0o755); err != nil {
		return err
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	initrds, _ := filepath.Glob(filepath.Join(root, "boot", "initrd.img-*"))
	if len(kernels) != 1 || len(initrds) != 1 {
		return fmt.Errorf("want one kernel and one initrd in %s/boot, found %d and %d", root, len(kernels), len(initrds))
	}
	copies := map[string]string{
		kernels[0]: "kernel8.img",
		initrds[0]: "initramfs8",
	}
	firmware, _ := filepath.Glob(filepath.Join(root, "usr", "lib", "raspi-firmware", "*"))
	dtbs, _ := filepath.Glob(filepath.Join(root, "usr", "lib", "linux-image-*", "broadcom", "bcm2711-*.dtb"))
	if len(firmware) == 0 || len(dtbs) == 0 {
		return fmt.Errorf("raspi-firmware files (%d) or Pi 4 device trees (%d) missing from the root", len(firmware), len(dtbs))
	}
	for _, f := range append(firmware, dtbs...) {
		copies[f] = filepath.Base(f)
	}
	for src, name := range copies {
		// trixie's raspi-firmware has overlays/ beside the files.
		if err := copyTree(src, filepath.Join(fatTree, name)); err != nil {
			return err
		}
	}
	cmdline := fmt.Sprintf("console=serial0,115200 console=tty1 root=PARTUUID=%s-02 rootfstype=ext4 fsck.repair=yes rootwait\n", diskID)
	fstab := fmt.Sprintf("proc            /proc           proc    defaults          0       0\n"+
		"PARTUUID=%[1]s-01  /boot/firmware  vfat    defaults          0       2\n"+
		"PARTUUID=%[1]s-02  /               ext4    defaults,noatime  0       1\n", diskID)
	files := []struct {
		path string
		data string
	}{
		{filepath.Join(fatTree, "cmdline.txt"), cmdline},
		{filepath.Join(fatTree, "config.txt"), configTxt},
		{filepath.Join(root, "etc", "fstab"), fstab},
		{filepath.Join(root, "etc", "hostname"), b.Recipe.Hostname + "\n"},
		{filepath.Join(root, "etc", "hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\t" + b.Recipe.Hostname + "\n"},
		{filepath.Join(root, "etc", "systemd", "network", "50-wired.network"), wiredNetwork},
		{filepath.Join(root, "etc", "resolv.conf"), resolvConf},
	}
	for _, bf := range b.Recipe.Bootloader {
		data, err := os.ReadFile(bf.Src)
		if err != nil {
			return err
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != bf.SHA256 {
			return fmt.Errorf("%s changed since the recipe was made (sha256 %x, want %s)", bf.Src, sum, bf.SHA256)
		}
		files = append(files, struct {
			path string
			data string
		}{filepath.Join(root, BootloaderDir, bf.Name), string(data)})
	}
	for _, f := range files {
		// resolv.conf may be a link into /run; replace it by the file.
		os.Remove(f.path)
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(f.path, []byte(f.data), 0o644); err != nil {
			return err
		}
	}
	// /boot/firmware is the FAT's mount point: empty in the root, as on a
	// real image. raspi-firmware's hooks filled it during the build.
	mnt := filepath.Join(root, "boot", "firmware")
	if err := os.RemoveAll(mnt); err != nil {
		return err
	}
	return os.Mkdir(mnt, 0o755)
}

func (b *BaseBuilder) filesystems(ctx context.Context, root, fatTree, fatImg, rootImg, key string) error {
	r := b.Recipe
	t := b.Tools
	if _, err := run(ctx, b.Run, t.MkfsFAT, "-F", "32", "-n", "bootfs", "-i", key[8:16], "-C", fatImg, strconv.FormatInt(r.FATSize>>10, 10)); err != nil {
		return err
	}
	entries, err := os.ReadDir(fatTree)
	if err != nil {
		return err
	}
	argv := []string{t.Mcopy, "-s", "-p", "-m", "-i", fatImg}
	for _, e := range entries {
		argv = append(argv, filepath.Join(fatTree, e.Name()))
	}
	if _, err := run(ctx, b.Run, append(argv, "::")...); err != nil {
		return err
	}
	used, err := treeSize(root)
	if err != nil {
		return err
	}
	// Room for the journal, the payload and what the device adds, rounded
	// to MiB so the partition table stays aligned.
	size := (used*13/10 + 256<<20 + 1<<20 - 1) &^ (1<<20 - 1)
	uuid := fmt.Sprintf("%s-%s-%s-%s-%s", key[16:24], key[24:28], key[28:32], key[32:36], key[36:48])
	_, err = run(ctx, b.Run, t.MkfsExt4, "-q", "-F", "-O", "^64bit,^huge_file", "-L", "rootfs", "-U", uuid,
		"-E", "root_owner=0:0", "-d", root, rootImg, strconv.FormatInt(size>>10, 10)+"k")
	return err
}

// assemble writes the MBR with the two partitions and copies both
// filesystems in, leaving holes where they are zero.
func (b *BaseBuilder) assemble(work, fatImg, rootImg, diskID, dest string) error {
	r := b.Recipe
	rootInfo, err := os.Stat(rootImg)
	if err != nil {
		return err
	}
	rootStart := r.FATStart + r.FATSize
	total := rootStart + rootInfo.Size()
	tmp := filepath.Join(work, "disk.img")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(total); err != nil {
		return err
	}
	id, err := strconv.ParseUint(diskID, 16, 32)
	if err != nil {
		return err
	}
	mbr := EncodeMBR(uint32(id), []Partition{
		{Type: 0x0c, Offset: r.FATStart, Size: r.FATSize},
		{Type: 0x83, Offset: rootStart, Size: rootInfo.Size()},
	})
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return err
	}
	for _, part := range []struct {
		src string
		off int64
	}{{fatImg, r.FATStart}, {rootImg, rootStart}} {
		if err := copySparse(f, part.off, part.src); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dest)
}

// copySparse copies src into dst at off, skipping all-zero blocks so they
// stay holes in the (pre-truncated) dst.
func copySparse(dst *os.File, off int64, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	buf := make([]byte, 1<<20)
	for pos := int64(0); ; {
		n, err := io.ReadFull(in, buf)
		if n > 0 {
			if !allZero(buf[:n]) {
				if _, werr := dst.WriteAt(buf[:n], off+pos); werr != nil {
					return werr
				}
			}
			pos += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// copyTree copies a file, or a directory with everything in it.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		return copyFile(p, target)
	})
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

// treeSize sums the sizes of the regular files under dir (what mkfs.ext4 -d
// will copy), skipping the virtual filesystems' mount points.
func treeSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (p == filepath.Join(dir, "proc") || p == filepath.Join(dir, "sys")) {
			return fs.SkipDir
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += (info.Size() + 4095) &^ 4095
		} else {
			total += 4096
		}
		return nil
	})
	return total, err
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
