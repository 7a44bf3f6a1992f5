package qemu

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/system"
)

func TestBaseRecipeKey(t *testing.T) {
	t.Parallel()
	r := DefaultBaseRecipe()
	if r.Key() != DefaultBaseRecipe().Key() {
		t.Fatal("the key of the same recipe differs between calls")
	}
	for name, change := range map[string]func(*BaseRecipe){
		"packages": func(r *BaseRecipe) { r.Packages = append(r.Packages, "vim") },
		"mirror":   func(r *BaseRecipe) { r.Mirror = "http://mirror.example/debian" },
		"modules":  func(r *BaseRecipe) { r.InitramfsMode = "most" },
		"fat size": func(r *BaseRecipe) { r.FATSize = 256 << 20 },
	} {
		changed := DefaultBaseRecipe()
		change(&changed)
		if changed.Key() == r.Key() {
			t.Errorf("changing the %s does not change the cache key", name)
		}
	}
	if got := r.CachePath("/var/cache/nixpi"); got != "/var/cache/nixpi/e2e-base-"+r.Key()[:16]+".img" {
		t.Errorf("CachePath = %q", got)
	}
}

// TestBaseRecipeHasDiskTools: the disk steps must find their tools in the
// base image, so the e2e run needs no network.
func TestBaseRecipeHasDiskTools(t *testing.T) {
	t.Parallel()
	have := map[string]bool{}
	for _, p := range DefaultBaseRecipe().Packages {
		have[p] = true
	}
	for _, p := range []string{"btrfs-progs", "dosfstools", "gdisk", "fdisk", "util-linux", "mount", "e2fsprogs", "udev", "systemd-sysv", "dbus"} {
		if !have[p] {
			t.Errorf("the base recipe lacks %s", p)
		}
	}
}

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBaseLayoutAssemble runs the base build's last three phases on a small
// stand-in for the mmdebstrap root with the real mkfs.fat, mcopy and
// mkfs.ext4, and checks the result the way nixpi build does (baseimage),
// with fsck.fat, and the way the harness boots it (config.txt names a
// kernel and initramfs that are on the FAT).
func TestBaseLayoutAssemble(t *testing.T) {
	t.Parallel()
	tools := DefaultTools()
	if err := Check(tools.MkfsFAT, tools.Mcopy, tools.Mtype, tools.MkfsExt4, tools.FsckFAT); err != nil {
		t.Skip(err)
	}
	work := t.TempDir()
	root := filepath.Join(work, "rootfs")
	writeTree(t, root, map[string]string{
		"etc/os-release":                                                  "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n",
		"var/lib/dpkg/status":                                             "Package: dpkg\nStatus: install ok installed\nArchitecture: arm64\n\n",
		"usr/lib/systemd/systemd":                                         "not really systemd",
		"boot/vmlinuz-6.1.0-50-arm64":                                     "kernel image",
		"boot/initrd.img-6.1.0-50-arm64":                                  "initramfs image",
		"boot/firmware/leftover-from-raspi-firmware":                      "x",
		"usr/lib/raspi-firmware/start4.elf":                               "start4",
		"usr/lib/raspi-firmware/fixup4.dat":                               "fixup4",
		"usr/lib/raspi-firmware/bootcode.bin":                             "bootcode",
		"usr/lib/linux-image-6.1.0-50-arm64/broadcom/bcm2711-rpi-4-b.dtb": "dtb",
	})
	var log strings.Builder
	b := &BaseBuilder{Recipe: DefaultBaseRecipe(), Run: system.ExecRunner{Log: func(l string) { log.WriteString(l + "\n") }}, Tools: tools}
	b.Recipe.FATSize = 64 << 20
	key := b.Recipe.Key()
	fatTree, fatImg, rootImg := filepath.Join(work, "bootfs"), filepath.Join(work, "bootfs.img"), filepath.Join(work, "rootfs.img")
	img := filepath.Join(work, "base.img")
	if err := b.layout(root, fatTree, key[:8]); err != nil {
		t.Fatal(err)
	}
	if err := b.filesystems(context.Background(), root, fatTree, fatImg, rootImg, key); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if out, err := exec.Command(tools.FsckFAT, "-n", fatImg).CombinedOutput(); err != nil {
		t.Errorf("fsck.fat -n: %v\n%s", err, out)
	}
	if err := b.assemble(work, fatImg, rootImg, key[:8], img); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	base, err := baseimage.Inspect(f, st.Size())
	if err != nil {
		t.Fatalf("nixpi build would reject the base image: %v", err)
	}
	if base.FATLabel != "bootfs" || base.FATMount != "/boot/firmware" || base.Arch != "arm64" || base.Kernel != "kernel8.img" {
		t.Errorf("base = label %q mount %q arch %q kernel %q", base.FATLabel, base.FATMount, base.Arch, base.Kernel)
	}
	wantCmdline := "console=serial0,115200 console=tty1 root=PARTUUID=" + key[:8] + "-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
	if base.Cmdline != wantCmdline || base.PartUUID(2) != key[:8]+"-02" {
		t.Errorf("cmdline.txt %q (PARTUUID %s), want %q", base.Cmdline, base.PartUUID(2), wantCmdline)
	}

	card, err := OpenCard(img, system.ExecRunner{}, tools)
	if err != nil {
		t.Fatal(err)
	}
	if card.Boot.Offset != 8<<20 {
		t.Errorf("FAT at %d, want 8 MiB", card.Boot.Offset)
	}
	files := ParseConfigTxt(bootfiles.Files{"config.txt": base.ConfigTxt}.Read, "config.txt", false)
	for name, want := range map[string]string{files.Kernel: "kernel image", files.Initrd: "initramfs image", "start4.elf": "start4", "bcm2711-rpi-4-b.dtb": "dtb"} {
		got, err := card.ReadFile(context.Background(), name)
		if err != nil || string(got) != want {
			t.Errorf("%s on the FAT: %q, %v; want %q", name, got, err, want)
		}
	}
	if _, err := card.ReadFile(context.Background(), "leftover-from-raspi-firmware"); err == nil {
		t.Error("files raspi-firmware's hooks left in /boot/firmware ended up on the FAT")
	}
	if _, err := card.ReadFile(context.Background(), "nixpi/journal.jsonl"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file: err = %v, want fs.ErrNotExist", err)
	}
	fstab, err := os.ReadFile(filepath.Join(root, "etc", "fstab"))
	if err != nil || !strings.Contains(string(fstab), "PARTUUID="+key[:8]+"-01  /boot/firmware  vfat") {
		t.Errorf("fstab %q, %v", fstab, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "boot", "firmware")); len(entries) != 0 {
		t.Errorf("/boot/firmware in the root is not an empty mount point: %v", entries)
	}
}
