package qemu

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// fakeModules writes a depmod index like Debian's for a few modules.
func fakeModules(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"modules.dep": "kernel/fs/btrfs/btrfs.ko.xz: kernel/lib/libcrc32c.ko.xz kernel/crypto/xor.ko.xz kernel/lib/raid6/raid6_pq.ko.xz\n" +
			"kernel/lib/libcrc32c.ko.xz:\n" +
			"kernel/crypto/xor.ko.xz: kernel/arch/arm64/lib/xor-neon.ko.xz\n" +
			"kernel/arch/arm64/lib/xor-neon.ko.xz:\n" +
			"kernel/lib/raid6/raid6_pq.ko.xz:\n" +
			"kernel/crypto/crc32c_generic.ko.xz:\n" +
			"kernel/drivers/usb/host/xhci-pci.ko.xz: kernel/drivers/usb/host/xhci-hcd.ko.xz kernel/drivers/usb/core/usbcore.ko.xz\n" +
			"kernel/drivers/usb/host/xhci-hcd.ko.xz: kernel/drivers/usb/core/usbcore.ko.xz\n" +
			"kernel/drivers/usb/core/usbcore.ko.xz:\n" +
			"kernel/fs/nls/nls_iso8859-1.ko.zst:\n",
		"modules.softdep": "# Soft dependencies extracted from modules themselves.\nsoftdep libcrc32c pre: crc32c\nsoftdep btrfs pre: crc32c blake2b-256 post: nothing\n",
		"modules.alias":   "# Aliases extracted from modules themselves.\nalias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\nalias pci:v*d*sv*sd*bc0Csc03i30* xhci_pci\n",
		"modules.builtin": "kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/fat/fat.ko\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestModuleLoadOrder(t *testing.T) {
	t.Parallel()
	x, err := readModuleIndex(fakeModules(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := x.loadOrder([]string{"xhci_pci", "btrfs", "virtio_pci", "fat", "nls_iso8859_1", "crc32c"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/drivers/usb/core/usbcore.ko.xz", "kernel/drivers/usb/host/xhci-hcd.ko.xz", "kernel/drivers/usb/host/xhci-pci.ko.xz",
		// btrfs: its soft dependency crc32c (an alias; blake2b-256 is not
		// in this kernel), then what it links against, each after its own.
		"kernel/crypto/crc32c_generic.ko.xz", "kernel/lib/libcrc32c.ko.xz", "kernel/arch/arm64/lib/xor-neon.ko.xz",
		"kernel/crypto/xor.ko.xz", "kernel/lib/raid6/raid6_pq.ko.xz", "kernel/fs/btrfs/btrfs.ko.xz",
		"kernel/fs/nls/nls_iso8859-1.ko.zst",
	}
	if !slices.Equal(got, want) {
		t.Errorf("load order\n got %q\nwant %q", got, want)
	}
	for _, name := range []string{"vc4", "blake2b-256"} {
		if _, err := x.loadOrder([]string{name}); err == nil || !strings.Contains(err.Error(), "no module "+name) {
			t.Errorf("%s: err = %v, want no such module", name, err)
		}
	}
	if _, err := readModuleIndex(t.TempDir()); err == nil || !strings.Contains(err.Error(), "modules.dep") {
		t.Errorf("no modules.dep: err = %v", err)
	}
}

func TestDecompressModule(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	module := bytes.Repeat([]byte("\x7fELF module "), 1000)
	var xzData, zstData bytes.Buffer
	w, err := xz.NewWriter(&xzData)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(module)
	w.Close()
	z, _ := zstd.NewWriter(&zstData)
	z.Write(module)
	z.Close()
	for rel, data := range map[string][]byte{"kernel/a/x.ko.xz": xzData.Bytes(), "kernel/b/y.ko.zst": zstData.Bytes(), "kernel/c/z.ko": module} {
		p := filepath.Join(src, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := decompressModule(p, dst, rel)
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if !strings.HasSuffix(out, ".ko") || !strings.HasPrefix(rel, out) {
			t.Errorf("%s became %s", rel, out)
		}
		if got, err := os.ReadFile(filepath.Join(dst, out)); err != nil || !bytes.Equal(got, module) {
			t.Errorf("%s: decompressed to %d bytes (%v), want the module", rel, len(got), err)
		}
	}
}

func TestModuleName(t *testing.T) {
	t.Parallel()
	for file, want := range map[string]string{
		"kernel/drivers/usb/host/xhci-pci.ko.xz": "xhci_pci", "kernel/fs/nls/nls_iso8859-1.ko": "nls_iso8859_1", "kernel/fs/fat/vfat.ko.zst": "vfat",
	} {
		if got := moduleName(file); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", file, got, want)
		}
	}
}
