package buildertest

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/config"
)

// Card is what CheckCard found on a built card.
type Card struct {
	Base     *baseimage.Base // the card itself, identified like a base
	Manifest map[string]any
	Payload  map[string]*cpio.Header // by entry name
	Config   *config.Config
}

// CheckCard checks a card built from base with real tools and byte
// comparisons: everything outside partition 1 is byte-identical to the base
// (so partition 2 is), fsck.fat -n passes, mtools reads cmdline.txt as the
// base's plus exactly the hook, config.txt unchanged, the nixpi/ files match
// the manifest's sha256s, the device binary is for the image's arch, the
// payload has the expected entries and modes, and OUT.sha256 is right.
func CheckCard(t testing.TB, basePath, outPath string) *Card {
	t.Helper()
	base := identify(t, basePath)
	card := identify(t, outPath)
	if card.Boot != base.Boot || card.Root != base.Root || card.DiskID != base.DiskID {
		t.Fatalf("card partitions %+v %+v id %08x differ from the base's %+v %+v id %08x", card.Boot, card.Root, card.DiskID, base.Boot, base.Root, base.DiskID)
	}
	assertSameOutside(t, basePath, outPath, base.Boot.Start, base.Boot.End())
	FsckFAT(t, outPath, base.Boot.Start, base.Boot.Size)

	at := base.Boot.Start
	wantCmdline, err := bootfiles.AddHook(base.Cmdline, bootfiles.HookWords(base.FATMount))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(Mtype(t, outPath, at, "cmdline.txt")); got != wantCmdline {
		t.Errorf("cmdline.txt on the card:\n%q\nwant the base's plus the hook:\n%q", got, wantCmdline)
	}
	if got := string(Mtype(t, outPath, at, "config.txt")); got != base.ConfigTxt {
		t.Errorf("config.txt changed:\n%q\nwant:\n%q", got, base.ConfigTxt)
	}

	c := &Card{Base: card, Payload: map[string]*cpio.Header{}}
	manifestJSON := Mtype(t, outPath, at, "nixpi/manifest.json")
	if err := json.Unmarshal(manifestJSON, &c.Manifest); err != nil {
		t.Fatalf("nixpi/manifest.json: %v\n%s", err, manifestJSON)
	}
	files, _ := c.Manifest["files"].([]any)
	seen := map[string]bool{}
	for _, f := range files {
		entry, _ := f.(map[string]any)
		p, _ := entry["path"].(string)
		seen[p] = true
		data := Mtype(t, outPath, at, p)
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != entry["sha256"] {
			t.Errorf("manifest sha256 of %s is %v, file's is %x", p, entry["sha256"], sum)
		}
	}
	for _, p := range []string{"cmdline.txt", "nixpi/nixpi-firstboot", "nixpi/payload.cpio", "nixpi/nixpi.toml"} {
		if !seen[p] {
			t.Errorf("manifest does not list %s: %s", p, manifestJSON)
		}
	}
	if base, _ := c.Manifest["base"].(map[string]any); base["arch"] != card.Arch || base["boot_dir"] != card.FATMount {
		t.Errorf("manifest base %v, want arch %s boot_dir %s", base, card.Arch, card.FATMount)
	}

	binary := Mtype(t, outPath, at, "nixpi/nixpi-firstboot")
	checkELF(t, binary, card.Arch)
	c.Config, err = config.Parse("nixpi/nixpi.toml", Mtype(t, outPath, at, "nixpi/nixpi.toml"))
	if err != nil {
		t.Errorf("nixpi/nixpi.toml on the card does not parse: %v", err)
	}
	checkPayload(t, c, Mtype(t, outPath, at, "nixpi/payload.cpio"), binary, card.FATMount)
	checkSidecar(t, outPath)
	return c
}

func identify(t testing.TB, path string) *baseimage.Base {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b, err := baseimage.Inspect(f, st.Size())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// assertSameOutside compares two images byte for byte except [from, to).
func assertSameOutside(t testing.TB, a, b string, from, to int64) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	sa, _ := fa.Stat()
	sb, _ := fb.Stat()
	if sa.Size() != sb.Size() {
		t.Fatalf("%s is %d bytes, %s is %d", a, sa.Size(), b, sb.Size())
	}
	for _, r := range [][2]int64{{0, from}, {to, sa.Size()}} {
		if !SameRange(t, fa, fb, r[0], r[1]) {
			t.Errorf("%s and %s differ in bytes [%d, %d), outside partition 1", a, b, r[0], r[1])
		}
	}
}

func checkELF(t testing.TB, binary []byte, arch string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		t.Errorf("nixpi/nixpi-firstboot is not ELF: %v", err)
		return
	}
	want := map[string]elf.Machine{"arm64": elf.EM_AARCH64, "armhf": elf.EM_ARM}[arch]
	if f.Machine != want {
		t.Errorf("nixpi/nixpi-firstboot is for %v, the image's %s userland needs %v", f.Machine, arch, want)
	}
}

func checkPayload(t testing.TB, c *Card, archive, binary []byte, bootDir string) {
	t.Helper()
	r := cpio.NewReader(bytes.NewReader(archive))
	var unit []byte
	for {
		hdr, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("payload.cpio: %v", err)
		}
		c.Payload[hdr.Name] = hdr
		data, _ := io.ReadAll(r)
		switch hdr.Name {
		case "usr/local/sbin/nixpi-firstboot":
			if !bytes.Equal(data, binary) {
				t.Error("payload's nixpi-firstboot differs from nixpi/nixpi-firstboot")
			}
		case "etc/systemd/system/nixpi-firstboot.service":
			unit = data
		}
	}
	want := map[string]cpio.FileMode{
		"usr/local/sbin/nixpi-firstboot":                                     cpio.TypeReg | 0o755,
		"etc/systemd/system/nixpi-firstboot.service":                         cpio.TypeReg | 0o644,
		"etc/systemd/system/multi-user.target.wants/nixpi-firstboot.service": cpio.TypeSymlink | 0o777,
	}
	for name, mode := range want {
		if h := c.Payload[name]; h == nil || h.Mode != mode {
			t.Errorf("payload entry %s: %+v, want mode %o", name, h, mode)
		}
	}
	if !strings.Contains(string(unit), "--boot-dir "+bootDir+"\n") {
		t.Errorf("payload unit does not point at %s:\n%s", bootDir, unit)
	}
}

func checkSidecar(t testing.TB, out string) {
	t.Helper()
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	side, err := os.ReadFile(out + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	if want := hex.EncodeToString(h.Sum(nil)) + "  " + filepath.Base(out) + "\n"; string(side) != want {
		t.Errorf("%s.sha256 = %q, want %q", out, side, want)
	}
}
