package hook

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/system"
)

// TestRunOnExt4 runs the hook against a real ext4 root filesystem made like
// Raspberry Pi OS's (-O ^64bit,^huge_file) on a loop device, then checks the
// result on the unmounted image with debugfs and e2fsck, runs the hook a
// second time and checks again.
func TestRunOnExt4(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root for losetup and mount (CI runs as root)")
	}
	for _, tool := range []string{"mkfs.ext4", "losetup", "mount", "umount", "debugfs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed (apt-get install e2fsprogs mount)", tool)
		}
	}
	ctx := context.Background()
	runner := system.ExecRunner{Log: func(line string) { t.Log(line) }}
	sh := func(argv ...string) string {
		t.Helper()
		out, err := runner.Output(ctx, argv...)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	sh("mkfs.ext4", "-q", "-F", "-O", "^64bit,^huge_file", "-L", "rootfs", img)
	loop := strings.TrimSpace(sh("losetup", "-f", "--show", img))
	t.Cleanup(func() { runner.Output(ctx, "losetup", "-d", loop) })
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mount := func() {
		sh("mount", "-t", "ext4", loop, mnt)
	}
	mounted := true
	mount()
	t.Cleanup(func() {
		if mounted {
			runner.Output(ctx, "umount", mnt)
		}
	})
	unmount := func() { sh("umount", mnt); mounted = false }

	// What Raspberry Pi OS already has; the FAT mount point is a plain
	// directory here (this kernel cannot mount FAT).
	if err := os.MkdirAll(filepath.Join(mnt, "etc/systemd/system/multi-user.target.wants"), 0o755); err != nil {
		t.Fatal(err)
	}
	card(t, mnt, archive(t, payload()...))

	if _, err := run(t, mnt); err != nil {
		t.Fatal(err)
	}
	checkInstalled(t, mnt)
	unmount()

	checkImage := func() {
		t.Helper()
		sh("e2fsck", "-f", "-n", img)
		for path, want := range map[string][]string{
			"/usr/local/sbin/nixpi-firstboot":             {"Type: regular", "Mode:  0755", "User:     0", "Size: " + strconv.Itoa(len(binary))},
			"/etc/systemd/system/nixpi-firstboot.service": {"Type: regular", "Mode:  0644", "Size: " + strconv.Itoa(len(unit))},
			"/" + cardpath.UnitWantedBy:                   {"Type: symlink", `Fast link dest: "../nixpi-firstboot.service"`},
			"/usr/local/sbin":                             {"Type: directory", "Mode:  0755"},
		} {
			stat := sh("debugfs", "-R", "stat "+path, img)
			for _, w := range want {
				if !strings.Contains(stat, w) {
					t.Errorf("debugfs stat %s lacks %q:\n%s", path, w, stat)
				}
			}
		}
		if got := sh("debugfs", "-R", "cat /usr/local/sbin/nixpi-firstboot", img); got != binary {
			t.Errorf("binary on disk: %q", got)
		}
		if got := sh("debugfs", "-R", "cat /boot/firmware/cmdline.txt", img); got != stockCmdline {
			t.Errorf("cmdline.txt on disk: %q", got)
		}
	}
	checkImage()

	// The second run (a reboot before the first one's reboot, say) is harmless.
	mount()
	mounted = true
	before := snapshot(t, mnt)
	if _, err := run(t, mnt); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if after := snapshot(t, mnt); after != before {
		t.Errorf("second run changed the root:\n%s\n---\n%s", before, after)
	}
	unmount()
	checkImage()
}
