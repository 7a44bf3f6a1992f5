package qemu

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// StandInModules are the kernel modules the stand-in NixOS's stage 1 loads
// so that it boots from the SSD on QEMU's virt machine and its units can
// use the card: nothing runs modprobe for the kernel's requests there, so
// whatever a mount or a device needs must be loaded up front. Names may be
// aliases (modules.alias); each comes with its dependencies and soft
// dependencies, and one built into the kernel needs nothing.
var StandInModules = []string{
	"virtio_blk",                               // the SD card (a virtio disk here)
	"sd_mod", "usb_storage", "uas", "xhci_pci", // the SSD on qemu-xhci
	"crc32c",        // btrfs's and ext4's checksums, asked for at mount
	"btrfs", "ext4", // the root, as the layout makes it
	"vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8", // /boot and the card's FAT (default codepage and iocharsets)
	"qemu_fw_cfg",        // the bootloader's state the harness passes (vcgencmd)
	"evdev", "gpio_keys", // the virt machine's power button, for a clean shutdown
	"virtio_net", // the network NixOS's DHCP brings up (stage 2's udhcpc)
}

// StandInKernel is a kernel and modules copied out of a base image for the
// stand-in nixpkgs' bootstrap/kernel: Image, version, modules/ (decompressed,
// at their paths under /lib/modules/VERSION) and modules.load, their paths
// in the order stage 1 loads them.
type StandInKernel struct {
	Dir     string
	Version string
	Modules []string
}

// CopyKernel copies the base image's Debian kernel (/boot/vmlinuz-VERSION)
// and the modules StandInModules need into dst. It needs root.
func (in *Inspector) CopyKernel(ctx context.Context, base, dst string) (*StandInKernel, error) {
	var k *StandInKernel
	err := in.withCardRoot(ctx, base, func(mnt string) error {
		images, _ := filepath.Glob(filepath.Join(mnt, "boot", "vmlinuz-*"))
		if len(images) != 1 {
			return fmt.Errorf("want one /boot/vmlinuz-* in the base image's root, found %d", len(images))
		}
		version := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
		modDir, err := resolveIn(mnt, "/lib/modules/"+version)
		if err != nil {
			return fmt.Errorf("the modules of kernel %s: %w", version, err)
		}
		src := filepath.Join(mnt, modDir)
		index, err := readModuleIndex(src)
		if err != nil {
			return fmt.Errorf("kernel %s: %w", version, err)
		}
		order, err := index.loadOrder(StandInModules)
		if err != nil {
			return fmt.Errorf("kernel %s: %w", version, err)
		}
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dst, "modules"), 0o755); err != nil {
			return err
		}
		if err := copyFile(images[0], filepath.Join(dst, "Image")); err != nil {
			return err
		}
		k = &StandInKernel{Dir: dst, Version: version}
		for _, m := range order {
			name, err := decompressModule(filepath.Join(src, m), filepath.Join(dst, "modules"), m)
			if err != nil {
				return fmt.Errorf("kernel %s: module %s: %w", version, m, err)
			}
			k.Modules = append(k.Modules, name)
		}
		if err := os.WriteFile(filepath.Join(dst, "version"), []byte(version+"\n"), 0o644); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, "modules.load"), []byte(strings.Join(k.Modules, "\n")+"\n"), 0o644)
	})
	return k, err
}

// moduleIndex is what depmod wrote for a kernel: each module's file and
// dependencies, the soft dependencies, the aliases, the built-in modules.
type moduleIndex struct {
	files   map[string]string   // name -> path under /lib/modules/VERSION
	deps    map[string][]string // path -> the paths it needs (modules.dep lists them all)
	softPre map[string][]string // name -> names to load first
	aliases map[string][]string // alias -> names
	builtin map[string]bool
}

// moduleName is a module's name from its file: xhci-pci.ko.xz -> xhci_pci.
func moduleName(file string) string {
	base := path.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

func readModuleIndex(dir string) (*moduleIndex, error) {
	x := &moduleIndex{files: map[string]string{}, deps: map[string][]string{}, softPre: map[string][]string{},
		aliases: map[string][]string{}, builtin: map[string]bool{}}
	lines := func(name string, required bool, fn func(fields []string)) error {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if os.IsNotExist(err) && !required {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s (depmod's index): %w", name, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
				fn(f)
			}
		}
		return sc.Err()
	}
	err := lines("modules.dep", true, func(f []string) {
		file := strings.TrimSuffix(f[0], ":")
		x.files[moduleName(file)] = file
		x.deps[file] = f[1:]
	})
	if err != nil {
		return nil, err
	}
	if err := lines("modules.builtin", false, func(f []string) { x.builtin[moduleName(f[0])] = true }); err != nil {
		return nil, err
	}
	if err := lines("modules.alias", false, func(f []string) {
		if len(f) == 3 && f[0] == "alias" {
			x.aliases[f[1]] = append(x.aliases[f[1]], strings.ReplaceAll(f[2], "-", "_"))
		}
	}); err != nil {
		return nil, err
	}
	err = lines("modules.softdep", false, func(f []string) {
		// softdep NAME pre: A B post: C
		if len(f) < 2 || f[0] != "softdep" {
			return
		}
		pre := false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					x.softPre[moduleName(f[1])] = append(x.softPre[moduleName(f[1])], w)
				}
			}
		}
	})
	return x, err
}

var errNoModule = errors.New("no module")

// loadOrder is every module file the named modules need, each after what it
// depends on: an order insmod can follow.
func (x *moduleIndex) loadOrder(names []string) ([]string, error) {
	var order []string
	done := map[string]bool{}
	var visitFile func(file string)
	visitFile = func(file string) {
		if done[file] {
			return
		}
		done[file] = true
		// Each dependency comes with its own first, so the order holds
		// whatever order modules.dep lists them in.
		for _, dep := range x.deps[file] {
			visitFile(dep)
		}
		order = append(order, file)
	}
	var visit func(name string, stack []string) error
	visit = func(name string, stack []string) error {
		module := strings.ReplaceAll(name, "-", "_")
		if slices.Contains(stack, module) {
			return nil // a soft dependency loop: loaded once is enough
		}
		stack = append(stack, module)
		file, ok := x.files[module]
		switch {
		case ok:
			// Soft dependencies are what modprobe loads first when it can;
			// one this kernel lacks is not an error.
			for _, pre := range x.softPre[module] {
				if err := visit(pre, stack); err != nil && !errors.Is(err, errNoModule) {
					return err
				}
			}
			visitFile(file)
			return nil
		case x.builtin[module]:
			return nil
		}
		// Aliases keep their dashes (blake2b-256, crypto-crc32c).
		targets := x.aliases[name]
		if len(targets) == 0 {
			targets = x.aliases[module]
		}
		for _, m := range targets {
			if err := visit(m, stack); err != nil {
				return err
			}
		}
		if len(targets) == 0 {
			return fmt.Errorf("%w %s (neither in modules.dep, built in, nor an alias)", errNoModule, name)
		}
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// decompressModule writes the module at src (.ko, .ko.xz, .ko.zst, .ko.gz)
// uncompressed under dstDir at rel without the compression suffix, which
// busybox insmod loads as it is, and returns that relative path.
func decompressModule(src, dstDir, rel string) (string, error) {
	f, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var r io.Reader = f
	out := rel
	switch {
	case strings.HasSuffix(rel, ".xz"):
		if r, err = xz.NewReader(f); err != nil {
			return "", err
		}
		out = strings.TrimSuffix(rel, ".xz")
	case strings.HasSuffix(rel, ".zst"):
		d, err := zstd.NewReader(f)
		if err != nil {
			return "", err
		}
		defer d.Close()
		r, out = d, strings.TrimSuffix(rel, ".zst")
	case strings.HasSuffix(rel, ".gz"):
		if r, err = gzip.NewReader(f); err != nil {
			return "", err
		}
		out = strings.TrimSuffix(rel, ".gz")
	}
	dst := filepath.Join(dstDir, filepath.FromSlash(out))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	w, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return "", err
	}
	return out, w.Close()
}
