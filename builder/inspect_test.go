package builder

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
	"github.com/nixpi/nixpi/firstboot/bootfiles"
)

func TestInspectStockImage(t *testing.T) {
	t.Parallel()
	img := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, Arch: fixture.ArchArmhf})
	in, err := Inspect(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	if in.Table != "mbr" || in.DiskID != fmt.Sprintf("%08x", img.DiskID) {
		t.Errorf("table %s disk id %s, want mbr %08x", in.Table, in.DiskID, img.DiskID)
	}
	if len(in.Partitions) != 2 || in.Partitions[0].Start != img.BootPart.Start || in.Partitions[0].Size != img.BootPart.Size ||
		in.Partitions[1].Start != img.RootPart.Start || in.Partitions[1].Type != "0x83" {
		t.Errorf("partitions %+v, want boot %+v root %+v", in.Partitions, img.BootPart, img.RootPart)
	}
	f := in.FAT
	if f == nil {
		t.Fatalf("no FAT report; problems: %v", in.Problems)
	}
	if f.Label != img.FATLabel || f.Cmdline != img.Cmdline || f.HookPresent {
		t.Errorf("label %q cmdline %q hook %v, want %q %q false", f.Label, f.Cmdline, f.HookPresent, img.FATLabel, img.Cmdline)
	}
	for _, want := range []string{"cmdline.txt", "config.txt", "start4.elf", "overlays/"} {
		if !slices.Contains(f.BootFiles, want) {
			t.Errorf("boot files %v lack %s", f.BootFiles, want)
		}
	}
	if f.Config != "" || f.Manifest != nil || f.Journal != nil || len(f.NixpiFiles) != 0 {
		t.Errorf("a stock image shows nixpi content: %+v", f)
	}
	assertFATUsageMatchesFsck(t, img.Path, img.BootPart, f)
}

var (
	fsckClusters    = regexp.MustCompile(`(\d+)/(\d+) clusters`)
	fsckClusterSize = regexp.MustCompile(`(\d+) bytes per cluster`)
)

// assertFATUsageMatchesFsck compares inspect's free space with what
// fsck.fat counts on a copy of the FAT partition.
func assertFATUsageMatchesFsck(t *testing.T, image string, p fixture.Partition, f *FATReport) {
	t.Helper()
	out := buildertest.FsckFAT(t, image, p.Start, p.Size)
	m := fsckClusters.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no cluster count in fsck.fat output:\n%s", out)
	}
	used, _ := strconv.ParseInt(m[1], 10, 64)
	total, _ := strconv.ParseInt(m[2], 10, 64)
	cm := fsckClusterSize.FindStringSubmatch(out)
	if cm == nil {
		t.Fatalf("no cluster size in fsck.fat output:\n%s", out)
	}
	clusterSize, _ := strconv.ParseInt(cm[1], 10, 64)
	if f.Size != p.Size || f.Free != (total-used)*clusterSize {
		t.Errorf("inspect: size %d free %d; fsck.fat: %d/%d clusters of %d bytes", f.Size, f.Free, used, total, clusterSize)
	}
}

// A card whose nixpi.toml does not parse (hand-edited, or from a newer
// nixpi) shows the problem, never the file: it may hold secrets in a shape
// the redaction does not know.
func TestInspectUnparsableConfigIsNotShown(t *testing.T) {
	t.Parallel()
	img := buildertest.WriteFixture(t, fixture.Options{FATSize: fixture.MinFATSize})
	local := filepath.Join(t.TempDir(), "nixpi.toml")
	secret := "hunter2-wifi-secret"
	if err := os.WriteFile(local, []byte("schema = 1\n[wlan]\nssid = \"x\"\npassphrase = \""+secret+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	at := img.Path + "@@" + strconv.FormatInt(img.BootPart.Start, 10)
	for _, argv := range [][]string{{"mmd", "-i", at, "::/nixpi"}, {"mcopy", "-i", at, local, "::/nixpi/nixpi.toml"}} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	in, err := Inspect(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if in.FAT.Config != "" || !strings.Contains(in.FAT.ConfigError, `unknown key "passphrase"`) || strings.Contains(string(js), secret) {
		t.Errorf("config %q, error %q; JSON:\n%s", in.FAT.Config, in.FAT.ConfigError, js)
	}
}

// TestHookForTheManifestsFATMount: with a manifest, the hook counts only
// for the FAT mount it records; without one, for either place Raspberry Pi
// OS mounts the FAT.
func TestHookForTheManifestsFATMount(t *testing.T) {
	t.Parallel()
	cmdline, err := bootfiles.AddHook("console=tty1 root=PARTUUID=1-02 rootwait", bootfiles.HookWords("/boot"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bootDir string
		m       *Manifest
		want    bool
	}{
		{"/boot", &Manifest{Base: ManifestBase{BootDir: "/boot"}}, true},
		{"/boot/firmware", &Manifest{Base: ManifestBase{BootDir: "/boot/firmware"}}, false},
		{"no manifest", nil, true},
	} {
		if got := cmdlineHasHook(cmdline, tc.m); got != tc.want {
			t.Errorf("%s: hook present %v, want %v (cmdline %q)", tc.bootDir, got, tc.want, cmdline)
		}
	}
}
