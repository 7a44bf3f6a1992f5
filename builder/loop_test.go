package builder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
	"github.com/nixpi/nixpi/firstboot/system"
)

// TestBuiltCardOnLoopDevice attaches a built card to a loop device, as a
// card reader would present it, and checks it with the kernel and the real
// tools: the partitions appear, fsck.fat passes on the FAT partition's
// device node, blkid sees the base's label and PARTUUIDs, and the root
// partition mounts as ext4 with the base's os-release.
func TestBuiltCardOnLoopDevice(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup and mount (CI runs as root)")
	}
	img := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, FATSize: fixture.MinFATSize})
	out := filepath.Join(t.TempDir(), "card.img")
	if _, err := Build(context.Background(), testOptions(t, img.Path, out)); err != nil {
		t.Fatal(err)
	}
	buildertest.CheckCard(t, img.Path, out)
	ctx := context.Background()
	run := func(argv ...string) string {
		t.Helper()
		b, err := system.ExecRunner{Log: func(line string) { t.Log(line) }}.Output(ctx, argv...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	dev := run("losetup", "--find", "--show", "--partscan", "--read-only", out)
	t.Cleanup(func() { run("losetup", "--detach", dev) })
	p1, p2 := dev+"p1", dev+"p2"
	for i := 0; ; i++ {
		_, err1 := os.Stat(p1)
		_, err2 := os.Stat(p2)
		if err1 == nil && err2 == nil {
			break
		}
		if i == 50 {
			t.Fatalf("partition nodes %s, %s did not appear", p1, p2)
		}
		if i == 5 {
			run("partx", "--update", dev)
		}
		time.Sleep(100 * time.Millisecond)
	}
	run("fsck.fat", "-n", p1)
	// inspect reads a card's device as well as an image file.
	in, err := Inspect(dev)
	if err != nil {
		t.Fatal(err)
	}
	if in.Size != img.Size || in.FAT == nil || !in.FAT.HookPresent || in.FAT.Manifest == nil {
		t.Errorf("inspect %s: size %d (want %d), FAT %+v, problems %v", dev, in.Size, img.Size, in.FAT, in.Problems)
	}
	diskID := strings.ToLower(run("blkid", "--probe", "--output", "value", "--match-tag", "PTUUID", dev))
	if got := run("blkid", "--probe", "--output", "value", "--match-tag", "LABEL", p1); got != img.FATLabel {
		t.Errorf("FAT label %q, want %q", got, img.FATLabel)
	}
	if got := run("blkid", "--probe", "--output", "value", "--match-tag", "PART_ENTRY_UUID", p2); got != diskID+"-02" {
		t.Errorf("partition 2 PARTUUID %q, want %s-02 (what cmdline.txt's root= names)", got, diskID)
	}
	var osRelease []byte
	mnt := t.TempDir()
	run("mount", "-t", "ext4", "-o", "ro,noload", p2, mnt)
	defer run("umount", mnt)
	osRelease, err = os.ReadFile(filepath.Join(mnt, "etc/os-release"))
	if err != nil || !strings.Contains(string(osRelease), "bookworm") {
		t.Errorf("root partition's os-release: %q, %v", osRelease, err)
	}
}
